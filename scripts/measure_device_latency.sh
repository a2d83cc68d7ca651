#!/usr/bin/env bash
# Mouth-to-ear through the sound-device path on the JACK dummy driver (the harness baresip 1.0 measures
# 126.5 ms on): `jackd -d dummy -r 48000 -p 960`, speech into the caller's capture port, the callee's
# playback port recorded in the same JACK cycle (jack_rec records both through `jack_thru`), and CPU and
# peak RSS per client. Two ways to reach JACK, one call each (JACK_PATHS, default both):
#   plugin: ALSA's jack plugin through cpal's ALSA host (`.asoundrc` PCMs qva / qvb);
#   native: qvoice's native JACK clients (`--input jack:jack_thru:output_1 --output jack` for the caller,
#           `--input jack --output jack:jack_thru:input_2` for the callee).
#
#   bash scripts/measure_device_latency.sh                 # release binaries, 60 s call per path
#   SECS=20 PROFILE=debug JACK_PATHS=native bash scripts/measure_device_latency.sh
# CARGO_TARGET_DIR is honoured (binaries are taken from it).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-60}
PROFILE=${PROFILE:-release}
JACK_PATHS=${JACK_PATHS:-plugin native}
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
if [ "$PROFILE" = release ]; then
    cargo build --release --locked -q -p qvoice -p qvoice-registry
else
    cargo build --locked -q -p qvoice -p qvoice-registry
fi
BIN=$TARGET/$PROFILE/qvoice
REG=$TARGET/$PROFILE/qvoice-registry
WORK=$(mktemp -d /tmp/device-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/run" "$WORK/home"
chmod 700 "$WORK/run"
export XDG_RUNTIME_DIR=$WORK/run HOME=$WORK/home JACK_DEFAULT_SERVER=qvbench$$ JACK_NO_AUDIO_RESERVATION=1

"$REG" --bind 127.0.0.1:0 --db "$WORK/reg.sqlite3" > "$WORK/reg.out" 2> "$WORK/reg.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$WORK/reg.out" 2>/dev/null && break; sleep 0.1; done
URL="http://$(sed -n 's/^listening on //p' "$WORK/reg.out")"
"$BIN" --home "$WORK/alice" init --username alice --registry "$URL" > /dev/null
"$BIN" --home "$WORK/bob" init --username bob --registry "$URL" > /dev/null

# ~SECS of speech: the test asset looped with short pauses.
sox tests/assets/speech16k.wav "$WORK/one.wav" pad 0 0.3
n=$(( SECS / 7 + 1 ))
sox $(for _ in $(seq $n); do echo "$WORK/one.wav"; done) "$WORK/speech.wav"

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

call_pair() {  # label a_in a_out b_in b_out env...
    local label=$1; shift
    local a_in=$1 a_out=$2 b_in=$3 b_out=$4; shift 4
    env "$@" "$BIN" --home "$WORK/bob" listen --auto-answer --once --input "$b_in" --output "$b_out" --json \
        > "$WORK/$label-bob.json" 2> "$WORK/$label-bob.err" &
    local bpid=$!; PIDS+=($bpid)
    sleep 1
    env "$@" "$BIN" --home "$WORK/alice" call bob --duration $((SECS + 4)) --input "$a_in" --output "$a_out" --json \
        > "$WORK/$label-alice.json" 2> "$WORK/$label-alice.err" &
    local apid=$!; PIDS+=($apid)
    for _ in $(seq 100); do grep -q '"audio_flowing"' "$WORK/$label-alice.json" && break; sleep 0.1; done
    sleep 1
    watch_proc "$apid" "$WORK/$label-alice.cpu" & PIDS+=($!)
    watch_proc "$bpid" "$WORK/$label-bob.cpu" & PIDS+=($!)
    APID=$apid; BPID=$bpid
}

report_clients() {  # label
    for who in alice bob; do
        read -r cpu rss < "$WORK/$1-$who.cpu"
        printf "  %-6s CPU %.1f %% of a core, peak RSS %.1f MiB\n" "$who" "$cpu" "$(echo "$rss / 1024" | bc -l)"
        grep '"event":"metrics"' "$WORK/$1-$who.json" | tail -1 | python3 -c 'import json,sys
m=json.loads(sys.stdin.read())["metrics"]
print("         xruns %d errors %d underruns %d overruns %d periods in/out %d/%d drift %d ppm jb %.0f ms" % (m["device_xruns"], m["device_errors"], m["device_underruns"], m["device_overruns"], m["device_in_period"], m["device_out_period"], m["drift_ppm"], m["jb_depth_ms"]))' || true
    done
}

echo "== JACK dummy 48 kHz / 960-frame periods, ${SECS} s call ($PROFILE) =="
jackd --no-realtime -n "$JACK_DEFAULT_SERVER" -d dummy -r 48000 -p 960 > "$WORK/jackd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do jack_lsp 2>/dev/null | grep -q system:playback_1 && break; sleep 0.1; done
jack_thru > "$WORK/thru.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do jack_lsp 2>/dev/null | grep -q jack_thru:output_2 && break; sleep 0.1; done
cat > "$HOME/.asoundrc" <<'ASOUND'
pcm.qva { type jack capture_ports { 0 jack_thru:output_1 } playback_ports { 0 system:playback_1 }
  hint { show on description "caller (JACK)" } }
pcm.qvb { type jack capture_ports { 0 system:capture_1 } playback_ports { 0 jack_thru:input_2 }
  hint { show on description "callee (JACK)" } }
pcm.feedraw { type jack playback_ports { 0 jack_thru:input_1 } }
pcm.feed { type plug slave.pcm "feedraw" }
ASOUND
for path in $JACK_PATHS; do
    case $path in
        plugin) call_pair "$path" qva qva qvb qvb ;;
        native) call_pair "$path" jack:jack_thru:output_1 jack jack jack:jack_thru:input_2 ;;
        *) echo "unknown JACK path $path (plugin or native)" >&2; exit 2 ;;
    esac
    jack_rec -f "$WORK/$path.wav" -d "$SECS" -b 16 jack_thru:output_1 jack_thru:output_2 > /dev/null &
    REC=$!; PIDS+=($REC)
    sox -q "$WORK/speech.wav" -t alsa feed || true
    wait "$REC" || true
    wait "$APID" || true; wait "$BPID" || true
    echo "-- $path --"
    python3 scripts/device_latency.py "$WORK/$path.wav" | tail -1
    report_clients "$path"
    sleep 2
done
echo "jackd xruns: $(grep -c 'XRun' "$WORK/jackd.log" || true)"
