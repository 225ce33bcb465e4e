#!/usr/bin/env bash
# A three-host weave-rs demo in network namespaces. Needs root: as root,
# run it as written, `scripts/demo.sh`; from another account,
# `sudo scripts/demo.sh`. It never calls sudo itself.
#
#   h1 ---- h2 ---- h3        underlay: two point-to-point links, h2 does
#   |       |       |         not forward IP, so h1 and h3 cannot reach
#   c1      c2      c3        each other on the underlay
#
# h2 is launched with h1's address, h3 with h2's, all with one password (so
# everything between them is encrypted), h1 and h2 trusting their own link:
# between them the kernel's VXLAN fast path carries the frames, unencrypted,
# and the encrypted sleeve everything to and through h3. c1 (10.2.1.1) then
# pings c3 (10.2.1.3): the overlay relays through h2; iperf3 shows the
# throughput of each path.
# Everything is removed at the end, also on failure or Ctrl-C.
#
# Uses $WEAVE_RS_BIN if set, else builds target/debug/weave-rs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
P=wrd$$ # prefix of every namespace this run makes
HOSTS=(h1 h2 h3)
CONTAINERS=(c1 c2 c3)
STATE=$(mktemp -d /tmp/weave-rs-demo.XXXXXX)

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local rc=$?
    say "cleaning up (namespaces ${P}*)"
    local n p
    for n in "${HOSTS[@]}" "${CONTAINERS[@]}"; do
        [[ -e /run/netns/$P$n ]] || continue
        for p in $(ip netns pids "$P$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$P$n" 2>/dev/null || true
    done
    for c in $(docker ps -aq --filter "label=weave-rs-demo=$P" 2>/dev/null); do
        docker rm -f "$c" >/dev/null 2>&1 || true
    done
    rm -rf "$STATE"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $(id -u) -eq 0 ]] || die "run as root (from another account: sudo $0): it makes network namespaces"

say "setting up: packages, Docker engine, local images (scripts/)"
INSTALL_DEPS_TEST_TOOLS=0 bash "$ROOT/scripts/install-deps.sh"
bash "$ROOT/scripts/docker-up.sh"
bash "$ROOT/scripts/build-images.sh"

if [[ -n ${WEAVE_RS_BIN:-} ]]; then
    BIN=$WEAVE_RS_BIN
else
    say "building weave-rs (cargo build)"
    (cd "$ROOT" && cargo build --quiet)
    BIN=$ROOT/target/debug/weave-rs
fi
[[ -x $BIN ]] || die "no weave-rs binary at $BIN"

# inns NS CMD...: run CMD inside namespace $P$NS, showing it.
inns() {
    local ns=$1
    shift
    printf '[%s] $ %s\n' "$ns" "$*"
    ip netns exec "$P$ns" "$@"
}
# weave HOST ARGS...: weave-rs on HOST (its own state directory).
weave() {
    local h=$1
    shift
    printf '[%s] $ weave-rs %s\n' "$h" "$*"
    WEAVE_RS_PLUGIN_SOCKET=off WEAVE_RS_STATE_DIR=$STATE/$h ip netns exec "$P$h" "$BIN" "$@"
}

say "making hosts h1 h2 h3 and containers c1 c2 c3 (namespaces ${P}*)"
for n in "${HOSTS[@]}" "${CONTAINERS[@]}"; do
    ip netns add "$P$n"
    ip -n "$P$n" link set lo up
done
for h in "${HOSTS[@]}"; do
    mkdir -p "$STATE/$h"
    ip netns exec "$P$h" sysctl -q -w net.ipv4.ip_forward=0
done

# link A B IF_A IF_B NET: a veth between two hosts, NET.1 on A and NET.2 on B
link() {
    ip -n "$P$1" link add "$3" type veth peer name "$4" netns "$P$2"
    ip -n "$P$1" addr add "$5.1/24" dev "$3"
    ip -n "$P$2" addr add "$5.2/24" dev "$4"
    ip -n "$P$1" link set "$3" up
    ip -n "$P$2" link set "$4" up
}
say "underlay: h1 (10.77.1.1) -- (10.77.1.2) h2 (10.77.2.1) -- (10.77.2.2) h3"
link h1 h2 ul0 ul0 10.77.1
link h2 h3 ul1 ul0 10.77.2
if ip netns exec "${P}h1" ping -c 1 -W 1 10.77.2.2 >/dev/null 2>&1; then
    die "h1 reaches h3 on the underlay: the chain is broken"
fi
echo "h1 cannot reach h3 (10.77.2.2) on the underlay, as intended"

say "launching routers with a shared password: h1 alone, h2 with h1, h3 with h2; h1 and h2 trust their link (10.77.1.0/24)"
head -c 24 /dev/urandom | base64 > "$STATE/password"
weave h1 launch --password-file "$STATE/password" --trusted-subnets 10.77.1.0/24
weave h2 launch --password-file "$STATE/password" --trusted-subnets 10.77.1.0/24 10.77.1.1
weave h3 launch --password-file "$STATE/password" 10.77.2.1

say "attaching containers"
weave h1 attach 10.2.1.1/24 "/var/run/netns/${P}c1"
weave h2 attach 10.2.1.2/24 "/var/run/netns/${P}c2"
weave h3 attach 10.2.1.3/24 "/var/run/netns/${P}c3"

say "waiting for c1 to reach c3 through h2 (up to 60 s)"
deadline=$((SECONDS + 60))
until ip netns exec "${P}c1" ping -c 1 -W 1 10.2.1.3 >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "c1 never reached c3 within 60 s"
done
echo "reachable after $((SECONDS - deadline + 60)) s"

say "c1 -> c2 (h1 -> h2, direct)"
inns c1 ping -c 3 -i 0.3 10.2.1.2
say "c2 -> c3 (h2 -> h3, direct)"
inns c2 ping -c 3 -i 0.3 10.2.1.3
say "c1 -> c3 (h1 -> h3, relayed by h2)"
inns c1 ping -c 3 -i 0.3 10.2.1.3
say "c3 -> c1 (h3 -> h1, relayed by h2)"
inns c3 ping -c 3 -i 0.3 10.2.1.1

say "waiting for the fast path between h1 and h2 (heartbeats confirmed at the full MTU)"
deadline=$((SECONDS + 30))
until weave h1 status connections | grep -q 'fast path'; do
    ((SECONDS < deadline)) || die "h1-h2 never took the fast path within 30 s"
    sleep 0.5
done
weave h1 status connections

# iperf3 -s serving one test, on the container's address.
serve() {
    inns "$1" iperf3 -s -1 -D -B "$2" >/dev/null
    for _ in $(seq 50); do
        ip netns exec "$P$1" ss -ltn | grep -q ':5201' && return
        sleep 0.1
    done
    die "iperf3 did not start in $1"
}
say "throughput (iperf3, 3 s each; the sleeve runs a debug build unless WEAVE_RS_BIN says otherwise: release figures are in BENCHMARKS.md)"
serve c2 10.2.1.2
echo "c1 -> c2, kernel fast path (h1 and h2 trust their link; the routers only steer):"
inns c1 iperf3 -c 10.2.1.2 -t 3 -f g | grep -E 'sender|receiver'
serve c3 10.2.1.3
echo "c2 -> c3, the encrypted sleeve:"
inns c2 iperf3 -c 10.2.1.3 -t 3 -f g | grep -E 'sender|receiver'

for h in "${HOSTS[@]}"; do
    say "status on $h"
    weave "$h" status
done
say "connections on h2: the fast path to h1, the encrypted sleeve to h3 (and why)"
weave h2 status connections
say "peers on h1: h3 is known by gossip, reached through h2 on the sleeve"
weave h1 status peers

say "redis with Docker: a server on h1, a client on h3 (relayed by h2)"
REDIS=weave-rs-test/redis:latest
weave h1 run 10.2.1.11/24 -d --name "${P}-redis" --label "weave-rs-demo=$P" "$REDIS"
weave h3 run 10.2.1.13/24 --rm --label "weave-rs-demo=$P" "$REDIS" redis-cli -h 10.2.1.11 ping
say "attached containers on h1"
weave h1 ps

say "automatic addresses (IPAM): redis on h1 and a client on h3, no address given"
weave h1 run -d --name "${P}-redis2" --label "weave-rs-demo=$P" "$REDIS"
addr=$(weave h1 ps | awk -v n="${P}-redis2" '$1 == n || $1 == "/" n { sub("/.*", "", $3); print $3 }')
[[ -n $addr ]] || die "redis2 has no address in ps"
echo "redis2 was given $addr"
weave h3 run --rm --label "weave-rs-demo=$P" "$REDIS" redis-cli -h "$addr" ping
say "who owns which part of the range (status ipam on h2)"
weave h2 status ipam

say "names (DNS): the client on h3 finds redis2 by its name, no address given"
for _ in $(seq 50); do
    weave h3 dns-lookup "${P}-redis2" >/dev/null 2>&1 && break
    sleep 0.2
done
weave h3 dns-lookup "${P}-redis2" || die "h3 does not know the name ${P}-redis2"
weave h3 run --rm --label "weave-rs-demo=$P" "$REDIS" redis-cli -h "${P}-redis2" ping
say "every name the mesh knows, and whose it is (status dns on h2)"
weave h2 status dns

say "demo done"
