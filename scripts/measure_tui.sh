#!/usr/bin/env bash
# Measures the qvoice TUI client as a user runs it: CPU and RSS of one client process idle and during a
# call, with a real registry and two TUIs in tmux (no sound card: silence in, null out; the whole media
# path still runs: Opus encode/decode, encryption, UDP, jitter buffer, gauges).
# Usage: bash scripts/measure_tui.sh [seconds per phase, default 20]
set -euo pipefail
secs=${1:-20}
cd "$(dirname "$0")/.."
tdir=${CARGO_TARGET_DIR:-target}
cargo build --release -p qvoice -p qvoice-registry >/dev/null 2>&1
bin=$tdir/release/qvoice
work=$(mktemp -d)
trap 'tmux kill-session -t qvm-a 2>/dev/null; tmux kill-session -t qvm-b 2>/dev/null; kill $reg 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$tdir/release/qvoice-registry --bind 127.0.0.1:$port --db "$work/reg.sqlite3" >/dev/null 2>&1 &
reg=$!
sleep 0.5
for u in alice bob; do
  $bin --home "$work/$u" init --username $u --registry http://127.0.0.1:$port >/dev/null
  sed -i 's/input = "default"/input = "silence"/; s/output = "default"/output = "null"/' "$work/$u/config.toml"
done
tmux new-session -d -s qvm-b -x 80 -y 24 "$bin --home $work/bob tui"
tmux new-session -d -s qvm-a -x 80 -y 24 "$bin --home $work/alice tui"
sleep 2
pid=$(pgrep -f -- "--home $work/alice tui")
ticks() { awk '{print $14+$15}' /proc/$pid/stat; }
hz=$(getconf CLK_TCK)
measure() {
  local t0 w0 t1 w1
  t0=$(ticks); w0=$(date +%s.%N); sleep "$secs"; t1=$(ticks); w1=$(date +%s.%N)
  python3 -c "print('%.2f' % (100.0*($t1-$t0)/$hz/($w1-$w0)))"
}
idle=$(measure)
rss_idle=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
tmux send-keys -t qvm-a d; sleep 1; tmux send-keys -t qvm-b a; sleep 2
tmux capture-pane -p -t qvm-a | grep -q ACTIVE || { echo "call did not become active"; tmux capture-pane -p -t qvm-a; exit 1; }
call=$(measure)
rss_call=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
hwm=$(awk '/VmHWM/{print $2}' /proc/$pid/status)
echo "TUI client (alice), ${secs} s per phase:"
echo "  idle:    CPU ${idle} % of one core, RSS $((rss_idle/1024)) MiB"
echo "  in call: CPU ${call} % of one core, RSS $((rss_call/1024)) MiB, peak RSS $((hwm/1024)) MiB"
tmux capture-pane -p -t qvm-a > "${CAPTURE:-/dev/null}"
