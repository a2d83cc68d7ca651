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
JACK_PATHS=${JACK_PATHS:-plugin native}
. scripts/device_bench_lib.sh
export JACK_DEFAULT_SERVER=qvbench$$ JACK_NO_AUDIO_RESERVATION=1
make_speech 16000

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
