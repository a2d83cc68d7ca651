# Shared by scripts/measure_device_latency.sh (JACK) and scripts/measure_pulse_latency.sh (PulseAudio):
# builds the binaries, makes a work dir torn down on exit, starts a registry with alice and bob, makes
# ~SECS of speech, runs a call between two qvoice processes and reports CPU, peak RSS and device metrics.
# Source it after `cd` to the repository; SECS, PROFILE and CARGO_TARGET_DIR are read.
SECS=${SECS:-60}
PROFILE=${PROFILE:-release}
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
export XDG_RUNTIME_DIR=$WORK/run HOME=$WORK/home

"$REG" --bind 127.0.0.1:0 --db "$WORK/reg.sqlite3" > "$WORK/reg.out" 2> "$WORK/reg.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "listening on" "$WORK/reg.out" 2>/dev/null && break; sleep 0.1; done
URL="http://$(sed -n 's/^listening on //p' "$WORK/reg.out")"
"$BIN" --home "$WORK/alice" init --username alice --registry "$URL" > /dev/null
"$BIN" --home "$WORK/bob" init --username bob --registry "$URL" > /dev/null

make_speech() {  # rate: writes ~SECS of speech to $WORK/speech.wav (the test asset looped, short pauses)
    sox tests/assets/speech16k.wav "$WORK/one.wav" pad 0 0.3
    local n=$(( SECS / 7 + 1 ))
    sox $(for _ in $(seq $n); do echo "$WORK/one.wav"; done) -r "$1" "$WORK/speech.wav"
}

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

# Bob listens, alice calls him for SECS + 4 s; returns once audio flows, with APID / BPID set and both
# processes watched. Extra arguments are `env` assignments for both (PULSE_SOURCE=..., say) — or use
# call_pair_env to give each its own.
call_pair() {  # label a_in a_out b_in b_out [VAR=value...]
    local label=$1 a_in=$2 a_out=$3 b_in=$4 b_out=$5; shift 5
    call_pair_env "$label" "$a_in" "$a_out" "$b_in" "$b_out" "$*" "$*"
}

call_pair_env() {  # label a_in a_out b_in b_out "alice VAR=value..." "bob VAR=value..."
    local label=$1 a_in=$2 a_out=$3 b_in=$4 b_out=$5 a_env=$6 b_env=$7
    # shellcheck disable=SC2086 # the env lists are split on purpose
    env $b_env "$BIN" --home "$WORK/bob" listen --auto-answer --once --input "$b_in" --output "$b_out" --json \
        > "$WORK/$label-bob.json" 2> "$WORK/$label-bob.err" &
    BPID=$!; PIDS+=($BPID)
    # Bob must be online (connected to the registry) before alice dials.
    for _ in $(seq 100); do grep -q '"connected":true' "$WORK/$label-bob.json" && break; sleep 0.1; done
    # shellcheck disable=SC2086
    env $a_env "$BIN" --home "$WORK/alice" call bob --duration $((SECS + 4)) --input "$a_in" --output "$a_out" \
        --json > "$WORK/$label-alice.json" 2> "$WORK/$label-alice.err" &
    APID=$!; PIDS+=($APID)
    for _ in $(seq 100); do grep -q '"audio_flowing"' "$WORK/$label-alice.json" && break; sleep 0.1; done
    if ! grep -q '"audio_flowing"' "$WORK/$label-alice.json"; then
        echo "the $label call did not start:" >&2
        cat "$WORK/$label-alice.err" "$WORK/$label-bob.err" >&2
        exit 1
    fi
    sleep 1  # CPU is measured from 1 s after audio flows: the call's set-up is not per-call steady state
    watch_proc "$APID" "$WORK/$label-alice.cpu" & PIDS+=($!)
    watch_proc "$BPID" "$WORK/$label-bob.cpu" & PIDS+=($!)
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
