#!/usr/bin/env bash
# Mouth-to-ear through the sound-device path on PulseAudio null sinks, measured on one sink clock: a stereo
# null sink `rec` whose left channel is both where the speech is played (`ref`, a remap sink) and the
# caller's microphone (`a_mic`, a remap source on rec.monitor's left channel), and whose right channel is
# the callee's speaker (`b_spk`, a remap sink). One `parec` of rec.monitor then holds the speech as the
# caller's microphone got it and what the callee played, sample-aligned; `scripts/device_latency.py` finds
# the delay per 2 s window. qvoice reaches PulseAudio natively (`--input default`, sinks chosen with
# PULSE_SOURCE / PULSE_SINK). Also prints CPU and peak RSS per client.
#
#   bash scripts/measure_pulse_latency.sh                 # release binaries, 60 s call, 48 kHz
#   SECS=20 PROFILE=debug RATE=44100 bash scripts/measure_pulse_latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-60}
PROFILE=${PROFILE:-release}
RATE=${RATE:-48000}
if [ "$PROFILE" = release ]; then
    cargo build --release --locked -q -p qvoice -p qvoice-registry
else
    cargo build --locked -q -p qvoice -p qvoice-registry
fi
BIN=$PWD/target/$PROFILE/qvoice
REG=$PWD/target/$PROFILE/qvoice-registry
WORK=$(mktemp -d /tmp/pulse-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/run" "$WORK/home"
chmod 700 "$WORK/run"
export XDG_RUNTIME_DIR=$WORK/run HOME=$WORK/home
unset PULSE_SERVER PULSE_SOURCE PULSE_SINK

remap() {  # kind name master channel
    echo "module-remap-$1 $1_name=$2 master=$3 channels=1 master_channel_map=$4 channel_map=mono remix=no"
}
pulseaudio -n --daemonize=no --exit-idle-time=-1 --disallow-exit --log-target=stderr \
    -L module-native-protocol-unix \
    -L "module-null-sink sink_name=rec channels=2 rate=$RATE" \
    -L "$(remap sink ref rec front-left)" \
    -L "$(remap source a_mic rec.monitor front-left)" \
    -L "$(remap sink b_spk rec front-right)" \
    -L "module-null-sink sink_name=a_spk rate=$RATE" \
    -L "module-null-sink sink_name=b_mic rate=$RATE" \
    > "$WORK/pulse.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do pactl info > /dev/null 2>&1 && break; sleep 0.1; done
pactl info > /dev/null

"$REG" --bind 127.0.0.1:0 --db "$WORK/reg.sqlite3" > "$WORK/reg.out" 2> "$WORK/reg.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$WORK/reg.out" 2>/dev/null && break; sleep 0.1; done
URL="http://$(sed -n 's/^listening on //p' "$WORK/reg.out")"
"$BIN" --home "$WORK/alice" init --username alice --registry "$URL" > /dev/null
"$BIN" --home "$WORK/bob" init --username bob --registry "$URL" > /dev/null

# ~SECS of speech: the test asset looped with short pauses.
sox tests/assets/speech16k.wav "$WORK/one.wav" pad 0 0.3
n=$(( SECS / 7 + 1 ))
sox $(for _ in $(seq $n); do echo "$WORK/one.wav"; done) -r "$RATE" "$WORK/speech.wav"

# CPU% of a core (user+sys over the call) and peak RSS of a client, from /proc before it exits.
watch_proc() {  # pid outfile
    local pid=$1 out=$2 t0 c0 hz
    hz=$(getconf CLK_TCK)
    t0=$(date +%s.%N); c0=$(awk '{print $14+$15}' "/proc/$pid/stat")
    local peak=0 cpu=0
    while [ -e "/proc/$pid/stat" ]; do
        c=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null) || break
        t=$(date +%s.%N)
        peak=$(awk '/VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null || echo "$peak")
        cpu=$(echo "($c - $c0) / $hz / ($t - $t0) * 100" | bc -l 2>/dev/null || echo "$cpu")
        echo "$cpu $peak" > "$out"
        sleep 1
    done
}

echo "== PulseAudio null sinks at $RATE Hz, ${SECS} s call ($PROFILE) =="
# The recorder attaches first, like a listener; the speech starts once audio flows.
parec -d rec.monitor --rate="$RATE" --channels=2 --format=s16le --latency-msec=10 --file-format=wav \
    "$WORK/rec.wav" &
REC=$!; PIDS+=($REC)
env PULSE_SOURCE=b_mic.monitor PULSE_SINK=b_spk "$BIN" --home "$WORK/bob" listen --auto-answer --once \
    --input default --output default --json > "$WORK/bob.json" 2> "$WORK/bob.err" &
BPID=$!; PIDS+=($BPID)
sleep 1
env PULSE_SOURCE=a_mic PULSE_SINK=a_spk "$BIN" --home "$WORK/alice" call bob --duration $((SECS + 4)) \
    --input default --output default --json > "$WORK/alice.json" 2> "$WORK/alice.err" &
APID=$!; PIDS+=($APID)
for _ in $(seq 100); do grep -q '"audio_flowing"' "$WORK/alice.json" && break; sleep 0.1; done
grep -q '"audio_flowing"' "$WORK/alice.json" || { echo "the call did not start:" >&2; cat "$WORK"/*.err >&2; exit 1; }
sleep 1
watch_proc "$APID" "$WORK/alice.cpu" & PIDS+=($!)
watch_proc "$BPID" "$WORK/bob.cpu" & PIDS+=($!)
paplay -d ref "$WORK/speech.wav"
wait "$APID" || true; wait "$BPID" || true
kill "$REC" 2>/dev/null || true; wait "$REC" 2>/dev/null || true
python3 scripts/device_latency.py "$WORK/rec.wav"
for who in alice bob; do
    read -r cpu rss < "$WORK/$who.cpu"
    printf "  %-6s CPU %.1f %% of a core, peak RSS %.1f MiB\n" "$who" "$cpu" "$(echo "$rss / 1024" | bc -l)"
    grep '"event":"metrics"' "$WORK/$who.json" | tail -1 | python3 -c 'import json,sys
m=json.loads(sys.stdin.read())["metrics"]
print("         xruns %d errors %d underruns %d overruns %d periods in/out %d/%d drift %d ppm jb %.0f ms" % (m["device_xruns"], m["device_errors"], m["device_underruns"], m["device_overruns"], m["device_in_period"], m["device_out_period"], m["drift_ppm"], m["jb_depth_ms"]))' || true
done
