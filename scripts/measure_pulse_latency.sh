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
RATE=${RATE:-48000}
. scripts/device_bench_lib.sh
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

make_speech "$RATE"

echo "== PulseAudio null sinks at $RATE Hz, ${SECS} s call ($PROFILE) =="
# The recorder attaches first, like a listener; the speech starts once audio flows.
parec -d rec.monitor --rate="$RATE" --channels=2 --format=s16le --latency-msec=10 --file-format=wav \
    "$WORK/rec.wav" &
REC=$!; PIDS+=($REC)
call_pair_env pulse default default default default "PULSE_SOURCE=a_mic PULSE_SINK=a_spk" \
    "PULSE_SOURCE=b_mic.monitor PULSE_SINK=b_spk"
paplay -d ref "$WORK/speech.wav"
wait "$APID" || true; wait "$BPID" || true
kill "$REC" 2>/dev/null || true; wait "$REC" 2>/dev/null || true
python3 scripts/device_latency.py "$WORK/rec.wav"
report_clients pulse
