#!/usr/bin/env bash
# File transfer bench on loopback with release binaries: a real qvoice-registry and real `qvoice send` /
# `qvoice receive` processes. For each size: wall time (MB/s), client CPU (user+sys) per MB, the client's
# peak RSS (/usr/bin/time), and the registry's disk use while the file waits (overhead over the plaintext).
#
#   bash scripts/measure_files.sh            # 10 MiB and 100 MiB
#   SIZES_MIB="100 400" bash scripts/measure_files.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES_MIB=${SIZES_MIB:-"10 100"}
cargo build --release --locked -q -p qvoice -p qvoice-registry
BIN=target/release/qvoice
REG=target/release/qvoice-registry
WORK=$(mktemp -d /tmp/files-bench.XXXXXX)
REG_PID=
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$REG" --bind 127.0.0.1:0 --db "$WORK/reg/registry.sqlite3" --rate-per-minute 100000 --max-file-mib 4096 \
    > "$WORK/reg.out" 2> "$WORK/reg.err" &
REG_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/reg.out" 2>/dev/null && break; sleep 0.1; done
URL="http://$(sed -n 's/^listening on //p' "$WORK/reg.out")"
"$BIN" --home "$WORK/alice" init --username alice --registry "$URL" > /dev/null
"$BIN" --home "$WORK/bob" init --username bob --registry "$URL" > /dev/null

# Seconds, user+sys seconds and max RSS KiB of one command, from GNU time.
timed() {
    /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" > "$WORK/cmd.out" 2> "$WORK/cmd.err" \
        || { cat "$WORK/cmd.err" >&2; exit 1; }
    read -r WALL USR SYS RSS < "$WORK/time"
    CPU=$(echo "$USR + $SYS" | bc -l)
}

printf "%-8s %-8s %10s %10s %12s %12s\n" size dir "MB/s" "wall s" "CPU ms/MB" "peak RSS MiB"
for mib in $SIZES_MIB; do
    head -c "$((mib * 1048576))" /dev/urandom > "$WORK/file-$mib.bin"
    mb=$(echo "$mib * 1.048576" | bc -l)
    timed "$BIN" --home "$WORK/alice" send bob "$WORK/file-$mib.bin" --json
    id=$(grep '"event":"sent"' "$WORK/cmd.out" | sed 's/.*"file_id":"\([0-9a-f]*\)".*/\1/')
    printf "%-8s %-8s %10.1f %10.2f %12.2f %12.1f\n" "${mib}MiB" upload "$(echo "$mb / $WALL" | bc -l)" "$WALL" \
        "$(echo "$CPU * 1000 / $mb" | bc -l)" "$(echo "$RSS / 1024" | bc -l)"
    disk=$(du -sb "$WORK/reg/registry.files" | cut -f1)
    timed "$BIN" --home "$WORK/bob" receive "$id" --out "$WORK/out" --json
    printf "%-8s %-8s %10.1f %10.2f %12.2f %12.1f\n" "${mib}MiB" download "$(echo "$mb / $WALL" | bc -l)" "$WALL" \
        "$(echo "$CPU * 1000 / $mb" | bc -l)" "$(echo "$RSS / 1024" | bc -l)"
    cmp "$WORK/file-$mib.bin" "$WORK/out/file-$mib.bin"
    bytes=$((mib * 1048576))
    printf "         registry disk while waiting: %d bytes for %d (overhead %.3f %%, incl. index.sqlite3 and WAL)\n" \
        "$disk" "$bytes" "$(echo "($disk - $bytes) * 100 / $bytes" | bc -l)"
    rm -f "$WORK/out/file-$mib.bin" "$WORK/file-$mib.bin"
done
