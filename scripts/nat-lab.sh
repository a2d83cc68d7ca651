#!/usr/bin/env bash
# NAT lab: real qvoice calls between network namespaces behind nftables NAT routers, with the registry
# and coturn on an "internet" namespace. Needs root, iproute2, nftables, conntrack, coturn, python3.
#
#   bash scripts/nat-lab.sh [CASE...]      # all cases by default; QVNAT_KEEP=1 keeps the work dir
#
# Topology (documentation ranges on the public side, RFC 2544 benchmark ranges behind the NATs):
#
#   qvn-inet  br0: 198.51.100.1 (registry :5001, coturn :3478 STUN+TURN), gateway 203.0.113.254, 192.0.2.254
#   qvn-ra    router A: wan 203.0.113.10 (+ .11 for the rebinding case), lan 198.18.1.1/24
#   qvn-rb    router B: wan 203.0.113.20, lan 198.18.2.1/24
#   qvn-a     client A 198.18.1.2 behind A        qvn-a2  client A2 198.18.1.3 behind A (same NAT)
#   qvn-b     client B 198.18.2.2 behind B        qvn-p   client P 192.0.2.10 (public address)
#
# NAT kinds: "pp" = port-preserving masquerade (endpoint-independent mapping), "ad" = masquerade random
# (address- and port-dependent mapping, as on mobile/CGNAT). Both routers drop unsolicited inbound
# packets in the forward AND input hooks: if the input hook accepted a peer's early probe, conntrack would
# confirm an entry for it and the client's own later mapping would get another port, so a
# port-preserving NAT would behave like an address-dependent one.
#
# Each case builds its namespaces afresh (so conntrack starts empty), runs a real headless call with the
# speech WAV in both directions, and asserts: both exit codes, the same SAS on both sides, the reported
# path kind on both sides, and the speech envelope correlation both ways. Everything this script starts
# (namespaces named qvn-*, processes) is torn down on exit, also when a case fails.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN_DIR="${QVNAT_BIN_DIR:-$ROOT/target/debug}"
QVOICE="$BIN_DIR/qvoice"
REGISTRY="$BIN_DIR/qvoice-registry"
SPEECH="$ROOT/tests/assets/speech16k.wav"
CHECK="python3 $ROOT/scripts/speech_match.py"
NSS=(qvn-inet qvn-ra qvn-rb qvn-a qvn-a2 qvn-b qvn-p)
SECRET="qvnat-lab-secret-$$"
CALL_SECS="${QVNAT_CALL_SECS:-8}"

[ "$(id -u)" -eq 0 ] || { echo "nat-lab: needs root (ip netns, nft)" >&2; exit 1; }
for t in ip nft conntrack turnserver python3 ss; do
    command -v "$t" >/dev/null || { echo "nat-lab: missing $t (bash scripts/install-deps.sh)" >&2; exit 1; }
done
[ -x "$QVOICE" ] && [ -x "$REGISTRY" ] || { echo "nat-lab: build first: cargo build --workspace" >&2; exit 1; }

WORK="$(mktemp -d /tmp/qvnat.XXXXXX)"
PASSED=0
FAILED=0
RESULTS=()

log() { printf '[nat-lab %s] %s\n' "$(date +%H:%M:%S.%N | cut -c1-12)" "$*"; }

# Processes we started, one pid a line (case bodies run in subshells, so not a shell array).
PIDFILE="$WORK/pids"
: >"$PIDFILE"
track() { echo "$1" >>"$PIDFILE"; }

kill_ours() {
    local p
    while read -r p; do kill "$p" 2>/dev/null || true; done <"$PIDFILE"
    while read -r p; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done <"$PIDFILE"
    : >"$PIDFILE"
}

# Deletes our namespaces, first ending every process still inside them (all started by this script).
del_netns() {
    local ns p
    for ns in "${NSS[@]}"; do
        [ -e "/run/netns/$ns" ] || continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
        for _ in $(seq 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}

cleanup() {
    kill_ours
    del_netns
    if [ "${QVNAT_KEEP:-0}" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# wait_for TIMEOUT_S DESCRIPTION COMMAND...: polls COMMAND (every 50 ms) until it succeeds.
wait_for() {
    local timeout=$1 what=$2; shift 2
    local deadline=$(( $(date +%s%N) + timeout * 1000000000 ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s%N)" -ge "$deadline" ]; then log "timed out after ${timeout}s waiting for $what"; return 1; fi
        sleep 0.05
    done
}

# wait_exit PID TIMEOUT_S: waits for a background process; prints its exit code (124 on timeout).
wait_exit() {
    local pid=$1 timeout=$2
    local deadline=$(( $(date +%s%N) + timeout * 1000000000 ))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(date +%s%N)" -ge "$deadline" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null; echo 124; return; fi
        sleep 0.05
    done
    local rc=0
    wait "$pid" || rc=$?
    echo "$rc"
}

veth() { # veth NS1 IF1 NS2 IF2
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
}

nat_rules() { # nat_rules NS KIND [SNAT_IP]
    local ns=$1 kind=$2 mapping
    case "$kind" in
        pp) mapping="masquerade" ;;
        ad) mapping="masquerade random" ;;
        snat) mapping="snat to $3" ;;
    esac
    in_ns "$ns" nft -f - <<EOF
table ip qvnat
delete table ip qvnat
table ip qvnat {
    chain qv_post { type nat hook postrouting priority srcnat; policy accept; oifname "wan" $mapping; }
    chain qv_forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname { "wan", "lan" } accept
    }
    chain qv_input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname { "lo", "lan" } accept
    }
}
EOF
}

client() { # client NS IP GATEWAY BRIDGE_NS BRIDGE
    local ns=$1 ip=$2 gw=$3 bns=$4 br=$5
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
    veth "$ns" eth0 "$bns" "v-${ns#qvn-}"
    in_ns "$bns" ip link set "v-${ns#qvn-}" master "$br" up
    in_ns "$ns" ip addr add "$ip" dev eth0
    in_ns "$ns" ip link set eth0 up
    in_ns "$ns" ip route add default via "$gw"
}

router() { # router NS WAN_IP LAN_PREFIX KIND
    local ns=$1 wan=$2 lan=$3 kind=$4
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
    in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1
    veth "$ns" wan qvn-inet "v-${ns#qvn-}"
    in_ns qvn-inet ip link set "v-${ns#qvn-}" master br0 up
    in_ns "$ns" ip addr add "$wan/24" dev wan
    in_ns "$ns" ip link set wan up
    in_ns "$ns" ip route add default via 203.0.113.254
    in_ns "$ns" ip link add lan type bridge
    in_ns "$ns" ip addr add "$lan.1/24" dev lan
    in_ns "$ns" ip link set lan up
    nat_rules "$ns" "$kind"
}

topology() { # topology KIND_A KIND_B
    del_netns
    ip netns add qvn-inet
    in_ns qvn-inet ip link set lo up
    in_ns qvn-inet sysctl -qw net.ipv4.ip_forward=1
    in_ns qvn-inet ip link add br0 type bridge
    for a in 198.51.100.1/24 203.0.113.254/24 192.0.2.254/24; do in_ns qvn-inet ip addr add "$a" dev br0; done
    in_ns qvn-inet ip link set br0 up
    # The rest of the internet: a default route into a link that leads nowhere, so traffic to addresses
    # nobody here owns (the clients' private host candidates) vanishes silently, as upstream of a real
    # server, instead of failing the sender with "network unreachable" (coturn stops relaying for an
    # allocation after such a send error).
    in_ns qvn-inet ip link add upstream type veth peer name upstream-end
    in_ns qvn-inet ip link set upstream up
    in_ns qvn-inet ip link set upstream-end up
    in_ns qvn-inet ip route add default dev upstream
    router qvn-ra 203.0.113.10 198.18.1 "$1"
    router qvn-rb 203.0.113.20 198.18.2 "$2"
    client qvn-a 198.18.1.2/24 198.18.1.1 qvn-ra lan
    client qvn-a2 198.18.1.3/24 198.18.1.1 qvn-ra lan
    client qvn-b 198.18.2.2/24 198.18.2.1 qvn-rb lan
    client qvn-p 192.0.2.10/24 192.0.2.254 qvn-inet br0
}

start_servers() { # start_servers DIR WITH_COTURN(0|1)
    local dir=$1 coturn=$2
    printf '%s' "$SECRET" >"$dir/turn-secret"
    ip netns exec qvn-inet "$REGISTRY" --bind 198.51.100.1:5001 --db "$dir/registry.sqlite3" \
        --stun-server 198.51.100.1:3478 --turn-server 198.51.100.1:3478 --turn-secret-file "$dir/turn-secret" \
        --rate-per-minute 1000 >"$dir/registry.out" 2>"$dir/registry.log" &
    track $!
    if [ "$coturn" = 1 ]; then
        ip netns exec qvn-inet turnserver -n --listening-ip=198.51.100.1 --relay-ip=198.51.100.1 --listening-port=3478 \
            --use-auth-secret --static-auth-secret="$SECRET" --realm=qvoice.lab --fingerprint \
            --no-tls --no-dtls --no-tcp --no-tcp-relay --no-cli --no-rfc5780 --min-port=49152 --max-port=49407 \
            --pidfile="$dir/turnserver.pid" --userdb="$dir/turndb" --log-file=stdout --simple-log ${QVNAT_COTURN_VERBOSE:+--verbose} >"$dir/coturn.log" 2>&1 &
        track $!
        wait_for 10 "coturn on 198.51.100.1:3478" sh -c "ip netns exec qvn-inet ss -Huln | grep -q '198.51.100.1:3478'"
    fi
    wait_for 15 "the registry" grep -q "listening on" "$dir/registry.out"
}

init_user() { # init_user NS NAME DIR
    in_ns "$1" "$QVOICE" --home "$3/home-$2" init --username "$2" --registry http://198.51.100.1:5001 \
        >"$3/init-$2.log" 2>&1
}

# stamp OUT STAMPED: copies stdin lines to OUT, and to STAMPED prefixed with the wall clock (for the bench).
stamp() {
    local line
    while IFS= read -r line; do
        printf '%s\n' "$line" >>"$1"
        printf '%s %s\n' "$(date +%s.%N)" "$line" >>"$2"
    done
}

json_field() { # json_field FILE EVENT FIELD: the field of the last EVENT line
    python3 - "$@" <<'EOF'
import json, sys
path, event, field = sys.argv[1:4]
val = ""
for line in open(path):
    try:
        ev = json.loads(line)
    except ValueError:
        continue
    if ev.get("event") == event:
        v = ev
        for part in field.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        val = "" if v is None else v
print(val)
EOF
}

# run_call DIR CALLER_NS CALLEE_NS [MIDCALL_FN]: alice (caller) calls bob (callee, auto-answer).
# Leaves exit codes in $DIR/rc-alice, $DIR/rc-bob and timing in $DIR/timing.
run_call() {
    local dir=$1 cns=$2 ens=$3 midcall=${4:-}
    init_user "$cns" alice "$dir"
    init_user "$ens" bob "$dir"
    ip netns exec "$ens" "$QVOICE" --home "$dir/home-bob" listen --auto-answer --once --input "$SPEECH" \
        --output "$dir/heard-bob.wav" --json >"$dir/bob.jsonl" 2>"$dir/bob.log" &
    local bob=$!
    track "$bob"
    wait_for 15 "bob's push stream" grep -q '"event":"connection","connected":true' "$dir/bob.jsonl"
    local t0
    t0=$(date +%s%N)
    ip netns exec "$cns" "$QVOICE" --home "$dir/home-alice" call bob --duration "$CALL_SECS" --input "$SPEECH" \
        --output "$dir/heard-alice.wav" --json 2>"$dir/alice.log" > >(stamp "$dir/alice.jsonl" "$dir/alice.stamped") &
    local alice=$!
    track "$alice"
    if [ -n "$midcall" ]; then
        if wait_for 20 "audio on both sides" sh -c "grep -q '\"event\":\"active\"' '$dir/alice.jsonl' && grep -q '\"event\":\"active\"' '$dir/bob.jsonl'"; then
            "$midcall" "$dir"
        fi
    fi
    local limit=$(( CALL_SECS + 30 ))
    wait_exit "$alice" "$limit" >"$dir/rc-alice"
    # Alice's lines pass through the stamper: let it write the last one.
    wait_for 5 "alice's last event" grep -q '"event":"ended"' "$dir/alice.jsonl" || true
    local t1
    t1=$(date +%s%N)
    wait_exit "$bob" 20 >"$dir/rc-bob"
    local t2
    t2=$(date +%s%N)
    echo "$(( (t1 - t0) / 1000000 )) $(( (t2 - t0) / 1000000 ))" >"$dir/timing"
}

fail() { log "FAIL: $*"; echo "$*" >>"$CASE_DIR/FAILED"; }

check_call() { # check_call DIR EXPECT_KIND [REMOTE_PREFIX]
    local dir=$1 want=$2 prefix=${3:-}
    local rc_a rc_b sas_a sas_b kind_a kind_b path_a path_b
    rc_a=$(cat "$dir/rc-alice"); rc_b=$(cat "$dir/rc-bob")
    [ "$rc_a" = 0 ] || fail "alice exited $rc_a ($(json_field "$dir/alice.jsonl" ended reason.detail))"
    [ "$rc_b" = 0 ] || fail "bob exited $rc_b ($(json_field "$dir/bob.jsonl" ended reason.detail))"
    sas_a=$(json_field "$dir/alice.jsonl" sas_ready sas); sas_b=$(json_field "$dir/bob.jsonl" sas_ready sas)
    [ -n "$sas_a" ] && [ "$sas_a" = "$sas_b" ] || fail "SAS differ: '$sas_a' vs '$sas_b'"
    kind_a=$(json_field "$dir/alice.jsonl" path kind); kind_b=$(json_field "$dir/bob.jsonl" path kind)
    path_a=$(json_field "$dir/alice.jsonl" path path); path_b=$(json_field "$dir/bob.jsonl" path path)
    log "alice: $path_a | bob: $path_b"
    [ "$kind_a" = "$want" ] || fail "alice's path is '$kind_a', expected $want"
    [ "$kind_b" = "$want" ] || fail "bob's path is '$kind_b', expected $want"
    if [ -n "$prefix" ]; then
        case "$path_a" in *" $prefix"*) ;; *) fail "alice's path '$path_a' is not to $prefix*" ;; esac
    fi
    local r
    # The speech file starts over when the media path comes up (the first frame carries the first audio,
    # issue 13): 0.5-3.5 s of it must be in what the peer heard, up to 4 s later (a relayed path comes up
    # after about 2.5 s).
    if r=$($CHECK "$SPEECH" "$dir/heard-bob.wav" --from 0.5 --len 3 --max-lag 4); then log "alice -> bob speech: $r"; else fail "alice -> bob speech: $r"; fi
    if r=$($CHECK "$SPEECH" "$dir/heard-alice.wav" --from 0.5 --len 3 --max-lag 4); then log "bob -> alice speech: $r"; else fail "bob -> alice speech: $r"; fi
    local ms_a ms_b
    ms_a=$(grep -m1 -n '"event":"active"' "$dir/alice.jsonl" >/dev/null && echo yes || echo no)
    [ "$ms_a" = yes ] || fail "alice never reported active"
    ms_b=$(grep -c '"event":"metrics"' "$dir/bob.jsonl" || true)
    [ "${ms_b:-0}" -gt 0 ] || fail "bob reported no metrics"
}

run_case() { # run_case NAME BODY_FN
    local name=$1 body=$2
    local dir="$WORK/$name"
    mkdir -p "$dir"
    CASE_DIR=$dir
    log "=== $name"
    local start rc
    start=$(date +%s%N)
    # A subshell with errexit on (a function in a condition would run with errexit off): any failing
    # setup step fails the case; assertions record failures in $dir/FAILED and go on.
    set +e
    ( set -e; "$body" "$dir" )
    rc=$?
    set -e
    [ "$rc" -eq 0 ] || echo "case body exited $rc" >>"$dir/FAILED"
    kill_ours
    del_netns
    local ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ ! -e "$dir/FAILED" ]; then
        PASSED=$((PASSED + 1)); RESULTS+=("ok    $name (${ms} ms)")
    else
        FAILED=$((FAILED + 1)); RESULTS+=("FAIL  $name (${ms} ms; logs in $dir)")
        for f in alice.log bob.log registry.log coturn.log; do
            [ -s "$dir/$f" ] && { echo "--- $f (tail)"; tail -n 15 "$dir/$f"; }
        done
        QVNAT_KEEP=1
    fi
}

# --- cases ---------------------------------------------------------------------------------------

case_pp_pp() { topology pp pp; start_servers "$1" 1; run_call "$1" qvn-a qvn-b; check_call "$1" direct; }
case_pp_ad() { topology pp ad; start_servers "$1" 1; run_call "$1" qvn-a qvn-b; check_call "$1" relayed; }
case_ad_ad() { topology ad ad; start_servers "$1" 1; run_call "$1" qvn-a qvn-b; check_call "$1" relayed; }
case_same_nat() { topology ad ad; start_servers "$1" 1; run_call "$1" qvn-a qvn-a2; check_call "$1" direct 198.18.1.; }
case_public() { topology pp pp; start_servers "$1" 1; run_call "$1" qvn-a qvn-p; check_call "$1" direct; }

rebind() { # mid-call: router A maps to a new public address and forgets every binding
    log "rebinding router A's NAT to 203.0.113.11 and flushing its conntrack"
    in_ns qvn-ra ip addr add 203.0.113.11/24 dev wan
    nat_rules qvn-ra snat 203.0.113.11
    in_ns qvn-ra conntrack -F >/dev/null 2>&1 || true
}
case_rebinding() {
    topology pp pp; start_servers "$1" 1
    run_call "$1" qvn-a qvn-p rebind
    check_call "$1" direct
    local moved
    moved=$(grep -c '"event":"path".*203.0.113.11' "$1/bob.jsonl" || true)
    [ "${moved:-0}" -ge 1 ] || fail "bob did not follow alice to her new mapping 203.0.113.11"
}

case_no_path() {
    topology ad ad; start_servers "$1" 0
    run_call "$1" qvn-a qvn-b
    local rc_a rc_b why_a why_b
    rc_a=$(cat "$1/rc-alice"); rc_b=$(cat "$1/rc-bob")
    why_a=$(json_field "$1/alice.jsonl" ended reason.kind); why_b=$(json_field "$1/bob.jsonl" ended reason.kind)
    log "alice: exit $rc_a, $(json_field "$1/alice.jsonl" ended reason.detail)"
    log "bob:   exit $rc_b, $(json_field "$1/bob.jsonl" ended reason.detail)"
    [ "$rc_a" = 7 ] || fail "alice exited $rc_a, expected 7"
    [ "$rc_b" = 7 ] || fail "bob exited $rc_b, expected 7"
    [ "$why_a" = no_media_path ] || fail "alice's end reason is '$why_a'"
    [ "$why_b" = no_media_path ] || fail "bob's end reason is '$why_b'"
    local sas_a
    sas_a=$(json_field "$1/alice.jsonl" sas_ready sas)
    [ -n "$sas_a" ] || fail "keys were never agreed (the case must fail after the handshake)"
    read -r ms_a ms_b <"$1/timing"
    log "dial -> exit: alice ${ms_a} ms, bob ${ms_b} ms"
    [ "$ms_a" -le 15000 ] && [ "$ms_b" -le 15000 ] || fail "took longer than 15 s to give up"
    if grep -q '"event":"active"' "$1/alice.jsonl"; then fail "alice claimed an active call"; fi
}

relay_counters() { # counts UDP bytes between each router and the relay host, both ways
    in_ns qvn-inet nft -f - <<'EOF'
table ip qvbench {
    chain qv_in { type filter hook input priority 0; policy accept;
        ip saddr 203.0.113.10 udp dport 3478-65535 counter
        ip saddr 203.0.113.20 udp dport 3478-65535 counter
    }
    chain qv_out { type filter hook output priority 0; policy accept;
        ip daddr 203.0.113.10 udp sport 3478-65535 counter
        ip daddr 203.0.113.20 udp sport 3478-65535 counter
    }
}
EOF
}

bench_case() { # bench_case DIR KIND(pp|ad): one call, its timings and relay byte counts
    local dir=$1 k=$2 want=direct
    [ "$k" = pp ] || want=relayed
    topology "$k" "$k"; start_servers "$dir" 1; relay_counters
    run_call "$dir" qvn-a qvn-b
    check_call "$dir" "$want"
    in_ns qvn-inet nft list table ip qvbench | grep -o 'bytes [0-9]*' | awk '{print $2}' | tr '\n' ' ' >"$dir/relay-bytes"
    python3 - "$dir" "$want" <<'EOF' >>"$WORK/bench.txt"
import json, sys
d, kind = sys.argv[1:3]
def stamped(event):
    for line in open(f"{d}/alice.stamped"):
        ts, _, rest = line.partition(" ")
        try:
            ev = json.loads(rest)
        except ValueError:
            continue
        if ev.get("event") == event:
            return float(ts), ev
    return None, None
dial, _ = stamped("dialing")
sas, _ = stamped("sas_ready")
active, _ = stamped("active")
_, ended = stamped("ended")
secs = ended["duration_s"] if ended else 0
a_in, b_in, a_out, b_out = (int(x) for x in open(f"{d}/relay-bytes").read().split())
print(f"{kind:8} dial->keys {1000 * (sas - dial):5.0f} ms  keys->first audio {1000 * (active - sas):5.0f} ms  "
      f"dial->first audio {1000 * (active - dial):5.0f} ms | relay host UDP over {secs:.1f} s: "
      f"A->relay {a_in} B, relay->B {b_out} B, B->relay {b_in} B, relay->A {a_out} B "
      f"(A->B {8 * (a_in + b_out) / 2 / secs / 1000:.1f} kbit/s per leg, B->A {8 * (b_in + a_out) / 2 / secs / 1000:.1f})")
EOF
}
bench_direct() { bench_case "$1" pp; }
bench_relayed() { bench_case "$1" ad; }

if [ "${1:-}" = bench ]; then
    # bash scripts/nat-lab.sh bench [RUNS]: dial -> first audio, direct vs relayed; relay traffic.
    runs=${2:-3}
    : >"$WORK/bench.txt"
    for i in $(seq "$runs"); do
        run_case "bench-direct-$i" bench_direct
        run_case "bench-relayed-$i" bench_relayed
    done
    cat "$WORK/bench.txt"
    [ "$FAILED" -eq 0 ]
    exit
fi

ALL=(pp_pp pp_ad ad_ad same_nat public rebinding no_path)
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=("${ALL[@]}")
LAB_START=$(date +%s%N)
for c in "${CASES[@]}"; do
    run_case "$c" "case_$c"
done
log "--- results ($(( ($(date +%s%N) - LAB_START) / 1000000 )) ms)"
printf '%s\n' "${RESULTS[@]}"
echo "nat-lab: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
