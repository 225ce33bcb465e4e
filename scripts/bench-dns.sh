#!/usr/bin/env bash
# scripts/bench-dns.sh: how many queries per second the weave-rs router's DNS
# server answers, and how fast, against dnsmasq measured in the same run on
# the same testbed (issue 12).
#
#   sudo bash scripts/bench-dns.sh      (root: namespaces, apt-get; ~1 min)
#
# Testbed: two network namespaces, $P-r (the router's host) and $P-c (the
# client), P=wrdns<pid>, joined by a veth:
#
#   $P-c  dnsperf, dig                       $P-r  the DNS server under test
#         veth0 192.168.210.2/24 <--- veth ---> veth0 192.168.210.1/24
#         route 169.254.53.53/32 via 192.168.210.1
#
# The client runs in its own namespace (not in the server's): queries cross
# the veth and reach 169.254.53.53 as a local address of $P-r. Targets
# (BENCH_DNS_TARGETS), one after the other:
#   dnsmasq    the baseline: dnsmasq (Debian's, one process) listening on
#              169.254.53.53 (on lo of $P-r), serving api.weave.local ->
#              10.32.0.5 as a --host-record, NXDOMAIN for anything else
#   weave-rs   `weave-rs launch` in $P-r (no peers), then
#              `weave-rs dns-add 10.32.0.5 api.weave.local`; the router
#              serves DNS on 169.254.53.53 port 53 (UDP/TCP) on its bridge
# Per target, after dig from the client gets the right answer:
#   throughput  dnsperf -l BENCH_DNS_SECONDS -c BENCH_DNS_CLIENTS
#               -q BENCH_DNS_OUTSTANDING [-Q BENCH_DNS_QPS] with a file of
#               `api.weave.local A` lines: queries/s, lost, average / min /
#               max latency (dnsperf's own figures)
#   latency     dnsperf -v at a fixed BENCH_DNS_LAT_QPS for
#               BENCH_DNS_LAT_SECONDS: dnsperf 2.10 prints no percentiles
#               (no histogram option), but -v prints each response's latency;
#               p50 / p99 / p99.9 are nearest-rank percentiles of those lines,
#               a timed-out query ("T") counting as lost. Measured at a fixed
#               rate, below saturation, because at full speed latency is just
#               queueing in dnsperf's own window (-q).
# The weave-rs target fails loudly when this weave-rs has no `dns-add`
# command (run with BENCH_DNS_TARGETS=dnsmasq to measure the baseline alone).
# Every namespace and process the run makes is removed on exit, on failure
# and on Ctrl-C. Prints a Markdown table; logs are kept.
#
# Environment (defaults in brackets):
#   BENCH_DNS_TARGETS [dnsmasq weave-rs]
#   BENCH_DNS_SECONDS [10]      length of the throughput test
#   BENCH_DNS_CLIENTS [4]       dnsperf -c (sockets)
#   BENCH_DNS_OUTSTANDING [100] dnsperf -q (queries in flight)
#   BENCH_DNS_QPS []            dnsperf -Q for the throughput test (empty:
#                               unlimited)
#   BENCH_DNS_LAT_QPS [50000], BENCH_DNS_LAT_SECONDS [5]  the latency test
#                               (the issue's goal: 50,000 q/s, p99 < 1 ms)
#   BENCH_DNS_PIN [1]           the server (all its threads) on CPU 0 and
#                               dnsperf on CPU 1, so the server has one core
#                               (0: no pinning; needs 2 CPUs)
#   BENCH_DNS_LOGS [<target dir>/bench-dns-logs/<UTC time>]
#   CARGO_TARGET_DIR [<repo>/target/bench]  where the release build goes
#   WEAVE_RS_BIN                benchmark this binary, skip the build
#   BENCH_NO_APT=1              do not install anything
set -Eeuo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

P=wrdns$$ # prefix of every namespace this run makes
TARGETS=${BENCH_DNS_TARGETS:-"dnsmasq weave-rs"}
SECS=${BENCH_DNS_SECONDS:-10}
CLIENTS=${BENCH_DNS_CLIENTS:-4}
OUTSTANDING=${BENCH_DNS_OUTSTANDING:-100}
QPS=${BENCH_DNS_QPS:-}
LAT_QPS=${BENCH_DNS_LAT_QPS:-50000}
PIN=${BENCH_DNS_PIN:-1}
if ((PIN)) && (($(nproc) < 2)); then PIN=0; fi
LAT_SECS=${BENCH_DNS_LAT_SECONDS:-5}
DNS_IP=169.254.53.53
NAME=api.weave.local
NAME_IP=10.32.0.5
R_IP=192.168.210.1
C_IP=192.168.210.2

BIN=${WEAVE_RS_BIN:-}
STATE="" LOGS="" BUILT=""

say() { printf '[bench-dns] %s\n' "$*" >&2; }
die() {
	printf '[bench-dns] error: %s\n' "$*" >&2
	exit 1
}
rx() { ip netns exec "$P-r" "$@"; }
cx() { ip netns exec "$P-c" "$@"; }
# perf ARGS...: dnsperf in the client namespace, on CPU 1 when pinning.
perf() {
	if ((PIN)); then cx taskset -c 1 dnsperf "$@"; else cx dnsperf "$@"; fi
}
ns_exists() { [[ -e /run/netns/$1 ]]; }

# wait_for SECS WHAT CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${secs}s waiting for: $what"
		sleep 0.1
	done
}

install_deps() {
	local -A provides=([iproute2]=ip [bind9-dnsutils]=dig [dnsperf]=dnsperf
		[dnsmasq-base]=dnsmasq [util-linux]=setsid)
	local pkg missing=()
	for pkg in "${!provides[@]}"; do
		command -v "${provides[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	[[ -z ${BENCH_NO_APT:-} ]] || die "missing packages: ${missing[*]} (BENCH_NO_APT is set; scripts/install-deps.sh installs them)"
	say "installing ${missing[*]} (apt-get)"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}"; } >"$LOGS/apt.log" 2>&1 ||
		die "apt-get install ${missing[*]} failed: $(tail -3 "$LOGS/apt.log")"
}

build() {
	local commit
	commit=$(git -c safe.directory="$ROOT" -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
	if [[ -n $BIN ]]; then
		[[ -x $BIN ]] || die "WEAVE_RS_BIN=$BIN is not an executable"
		BUILT="binary $BIN given by WEAVE_RS_BIN (repository at $commit)"
		say "using $BIN (WEAVE_RS_BIN; no build)"
		return
	fi
	command -v cargo >/dev/null || die "no cargo on PATH (sudo may reset PATH: try sudo env PATH=\$PATH ...), or set WEAVE_RS_BIN"
	local td=${CARGO_TARGET_DIR:-$ROOT/target/bench}
	say "building weave-rs (cargo build --release, target dir $td)"
	(cd "$ROOT" && CARGO_TARGET_DIR=$td cargo build --release --quiet) ||
		die "cargo build --release failed (set WEAVE_RS_BIN to benchmark an existing binary)"
	BIN=$td/release/weave-rs
	BUILT="release build of commit $commit"
}

# The router's DNS is issue 12's work: say so clearly when it is not there.
require_dns_add() {
	if ! "$BIN" dns-add --help >"$LOGS/dns-add-help.txt" 2>&1; then
		die "this weave-rs ($BIN) has no \`dns-add\` command (\`weave-rs dns-add --help\`: $(head -1 "$LOGS/dns-add-help.txt")): the router's DNS server (issue 12) is not in this build. Measure the dnsmasq baseline alone with BENCH_DNS_TARGETS=dnsmasq"
	fi
}

tb_up() {
	local ns
	for ns in r c; do
		ns_exists "$P-$ns" && die "namespace $P-$ns already exists"
		ip netns add "$P-$ns"
		ip -n "$P-$ns" link set lo up
		ip netns exec "$P-$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6'
	done
	ip link add veth0 netns "$P-r" type veth peer name veth0 netns "$P-c"
	ip -n "$P-r" addr add "$R_IP/24" dev veth0
	ip -n "$P-c" addr add "$C_IP/24" dev veth0
	ip -n "$P-r" link set veth0 up
	ip -n "$P-c" link set veth0 up
	ip -n "$P-c" route add "$DNS_IP/32" via "$R_IP"
	wait_for 10 "the client pinging the server's host over the veth" cx ping -c1 -W1 "$R_IP"
}

# tb_down: kill every process in our namespaces, delete them. Idempotent.
tb_down() {
	local ns pid pids=() alive=()
	for ns in "$P-r" "$P-c"; do
		ns_exists "$ns" && mapfile -t -O "${#pids[@]}" pids < <(ip netns pids "$ns" 2>/dev/null)
	done
	if ((${#pids[@]})); then
		kill -TERM "${pids[@]}" 2>/dev/null || true
		for _ in $(seq 50); do
			alive=()
			for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive+=("$pid"); done
			((${#alive[@]})) || break
			sleep 0.1
		done
		((${#alive[@]} == 0)) || kill -KILL "${alive[@]}" 2>/dev/null || true
	fi
	for ns in "$P-r" "$P-c"; do
		! ns_exists "$ns" || ip netns del "$ns" 2>/dev/null || true
	done
}

# stop_pids PID...: end these processes (TERM, then KILL after 5 s).
stop_pids() {
	local pid
	kill -TERM "$@" 2>/dev/null || true
	for _ in $(seq 50); do
		for pid in "$@"; do kill -0 "$pid" 2>/dev/null && continue 2; done
		return 0
	done
	kill -KILL "$@" 2>/dev/null || true
}

# answers_right: dig from the client gets NAME -> NAME_IP from DNS_IP.
answers_right() {
	local got
	got=$(cx dig @"$DNS_IP" +tries=1 +time=1 +short "$NAME" A 2>&1) || return 1
	[[ $got == "$NAME_IP" ]]
}

# ---------------------------------------------------------------- targets
# target_NAME: start the server in $P-r so that it answers on DNS_IP; set
# SERVER_PIDS (stopped after the measurement) and NOTE.

target_dnsmasq() {
	rx ip addr add "$DNS_IP/32" dev lo
	setsid ip netns exec "$P-r" dnsmasq --keep-in-foreground --conf-file=/dev/null \
		--no-resolv --no-hosts --no-poll --bind-interfaces --listen-address="$DNS_IP" \
		--user=root --pid-file="$STATE/dnsmasq.pid" --host-record="$NAME,$NAME_IP" \
		--address=/#/ </dev/null >"$LOGS/dnsmasq.log" 2>&1 &
	SERVER_PIDS=$!
	NOTE="$(dnsmasq --version | head -1 | awk '{print $1, $2, $3}'), one process, cache size 150 (default)"
	CLEANUP_TARGET="rx ip addr del $DNS_IP/32 dev lo"
}

target_weave_rs() {
	local pid
	mkdir -p "$STATE/wr"
	wr launch >"$LOGS/weave-rs-launch.log" 2>&1 ||
		die "weave-rs launch failed: $(tail -3 "$LOGS/weave-rs-launch.log")"
	pid=$(wr report | jq -r '.router.pid' 2>/dev/null) || pid=""
	[[ $pid =~ ^[0-9]+$ ]] || die "weave-rs report: no router.pid"
	SERVER_PIDS=$pid
	wr dns-add "$NAME_IP" "$NAME" >"$LOGS/weave-rs-dns-add.log" 2>&1 ||
		die "weave-rs dns-add $NAME_IP $NAME failed: $(tail -3 "$LOGS/weave-rs-dns-add.log")"
	NOTE="$("$BIN" --version 2>/dev/null | head -1), $BUILT"
	CLEANUP_TARGET="wr stop"
}

# wr ARGS...: weave-rs ARGS in $P-r, with its own state directory.
wr() { WEAVE_RS_PLUGIN_SOCKET=off WEAVE_RS_STATE_DIR=$STATE/wr timeout 60 ip netns exec "$P-r" "$BIN" "$@"; }

# ---------------------------------------------------------------- measuring

# bench_target NAME: start it, check it answers, measure, stop it; appends
# a row to $ROWS.
bench_target() {
	local t=$1 log=$LOGS/$1
	mkdir -p "$log"
	SERVER_PIDS="" NOTE="" CLEANUP_TARGET=""
	say "---- $t"
	"target_${t//-/_}"
	if ! wait_for_answer 15; then
		local last
		last=$({ cx dig @"$DNS_IP" +tries=1 +time=1 "$NAME" A 2>&1 || true; } |
			{ grep -E 'status|error|timed out|refused|^[^;]' || true; } | head -3 | tr '\n' ' ')
		die "$t: dig @$DNS_IP $NAME A from $P-c did not answer $NAME_IP within 15 s (last dig: ${last:-nothing}). Is the server on $DNS_IP in $P-r, reachable from another namespace (route $DNS_IP via $R_IP)?"
	fi
	cx dig @"$DNS_IP" +tries=1 +time=2 "$NAME" A >"$log/dig.txt" 2>&1 || true
	if ((PIN)); then
		local p
		for p in $SERVER_PIDS; do
			taskset -a -p -c 0 "$p" >/dev/null || die "$t: taskset -a -p -c 0 $p failed"
		done
		say "$t: server pinned to CPU 0 (all threads), dnsperf to CPU 1"
	fi

	local q=() rate="unlimited"
	if [[ -n $QPS ]]; then q=(-Q "$QPS"); rate=$QPS; fi
	say "$t: throughput, dnsperf -l $SECS -c $CLIENTS -q $OUTSTANDING, rate $rate"
	perf -s "$DNS_IP" -d "$STATE/queries" -l "$SECS" -c "$CLIENTS" -q "$OUTSTANDING" "${q[@]}" \
		>"$log/throughput.txt" 2>&1 || die "$t: dnsperf failed: $(tail -3 "$log/throughput.txt")"
	local qps lost avg min max codes
	qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' "$log/throughput.txt")
	lost=$(awk '/Queries lost:/ {print $3, $4}' "$log/throughput.txt")
	read -r avg min max < <(awk '/Average Latency \(s\):/ {
		gsub(/[(),]/, ""); printf "%.3f %.3f %.3f\n", $4 * 1000, $6 * 1000, $8 * 1000 }' "$log/throughput.txt")
	codes=$(awk '/Response codes:/ {sub(/.*Response codes: */, ""); print}' "$log/throughput.txt")
	[[ -n $qps ]] || die "$t: no 'Queries per second' in dnsperf's output ($log/throughput.txt)"

	say "$t: latency, dnsperf -v -Q $LAT_QPS -l $LAT_SECS"
	perf -s "$DNS_IP" -d "$STATE/queries" -l "$LAT_SECS" -c 1 -Q "$LAT_QPS" -v \
		>"$log/latency.txt" 2>&1 || die "$t: dnsperf -v failed: $(tail -3 "$log/latency.txt")"
	local p50 p99 p999 lat_n lat_lost
	read -r lat_n lat_lost p50 p99 p999 < <(percentiles "$log/latency.txt")
	((lat_n > 0)) || die "$t: dnsperf -v printed no response latencies ($log/latency.txt)"

	printf '| %s | %s | %s | %s / %s / %s | %s | %s / %s / %s (%s answers, %s lost) | %s |\n' \
		"$t" "$qps" "$lost" "$avg" "$min" "$max" "$codes" "$p50" "$p99" "$p999" "$lat_n" "$lat_lost" "$NOTE" >>"$ROWS"
	say "$t: $qps queries/s (lost $lost; latency avg $avg, min $min, max $max ms); at $LAT_QPS q/s: p50 $p50, p99 $p99, p99.9 $p999 ms"

	[[ -z $CLEANUP_TARGET ]] || $CLEANUP_TARGET >/dev/null 2>&1 || true
	[[ -z $SERVER_PIDS ]] || stop_pids "$SERVER_PIDS"
	if [[ $t == weave-rs ]]; then cp -r "$STATE/wr" "$log/state" 2>/dev/null || true; fi
}

wait_for_answer() {
	local deadline=$((SECONDS + $1))
	until answers_right; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# percentiles FILE: "answers lost p50 p99 p99.9" (ms) from dnsperf -v lines
# "> NOERROR api.weave.local A 0.000074" (timeouts: "> T ...", no latency).
percentiles() {
	awk '$1 == ">" && NF >= 5 && $NF ~ /^[0-9.]+$/ { print $NF * 1000; next }
		$1 == ">" && $2 == "T" { lost++ }
		END { if (lost) print "lost", lost > "/dev/stderr" }' "$1" 2>"$STATE/lost" |
		sort -n >"$STATE/lat.sorted"
	local lost
	lost=$(awk '{print $2}' "$STATE/lost" 2>/dev/null)
	awk -v lost="${lost:-0}" '{ v[NR] = $1 }
		function pct(p,   i) { i = int(NR * p + 0.999999); if (i < 1) i = 1; return v[i] }
		END {
			if (NR == 0) { print 0, lost, "-", "-", "-"; exit }
			printf "%d %d %.3f %.3f %.3f\n", NR, lost, pct(0.5), pct(0.99), pct(0.999)
		}' "$STATE/lat.sorted"
}

# ---------------------------------------------------------------- main

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	tb_down
	[[ -z $STATE ]] || rm -rf "$STATE"
	((rc == 0)) || say "stopped (exit $rc); namespaces ${P}-* removed; logs in ${LOGS:-(none)}"
	exit "$rc"
}

main() {
	case ${1:-} in
	"") ;;
	-h | --help) sed -n '2,/^set -Eeuo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; return ;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
	((EUID == 0)) || die "run as root (sudo bash scripts/bench-dns.sh): it makes network namespaces"
	local t
	for t in $TARGETS; do
		declare -F "target_${t//-/_}" >/dev/null || die "unknown target '$t' in BENCH_DNS_TARGETS (dnsmasq, weave-rs)"
	done
	mkdir -p /run/lock
	exec 9>/run/lock/weave-rs-bench.lock
	flock -n 9 || die "another benchmark (scripts/bench.sh or bench-dns.sh) is running (one at a time: they would disturb each other's numbers)"

	local stamp td T0=$SECONDS
	stamp=$(date -u +%Y%m%dT%H%M%SZ)
	td=${CARGO_TARGET_DIR:-$ROOT/target/bench}
	LOGS=${BENCH_DNS_LOGS:-$td/bench-dns-logs/$stamp}
	STATE=$(mktemp -d /tmp/weave-rs-bench-dns.XXXXXX)
	ROWS=$STATE/rows
	mkdir -p "$LOGS"
	: >"$ROWS"
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'printf "[bench-dns] error: line %s: %s failed\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

	install_deps
	if [[ " $TARGETS " == *" weave-rs "* ]]; then
		build
		require_dns_add
		command -v jq >/dev/null || die "jq is missing (apt-get install jq; scripts/bench.sh installs it)"
	fi
	for _ in $(seq 1000); do echo "$NAME A"; done >"$STATE/queries"

	tb_up
	say "testbed: client $P-c ($C_IP) -> veth -> $P-r ($R_IP), server address $DNS_IP (route via $R_IP); dnsperf runs in the client namespace"
	for t in $TARGETS; do bench_target "$t"; done

	local cpu
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	echo
	echo "## DNS: $NAME A, $(date -u '+%Y-%m-%d %H:%M UTC'), $cpu, $(nproc) cores"
	echo
	echo "dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}') in namespace $P-c, server $DNS_IP in $P-r across a veth; $(if ((PIN)); then echo "the server pinned to CPU 0 (one core), dnsperf to CPU 1"; else echo "client and server share the machine's $(nproc) cores"; fi)."
	echo "Throughput: -l $SECS -c $CLIENTS -q $OUTSTANDING, rate ${QPS:-unlimited}. Percentiles: dnsperf -v at $LAT_QPS q/s for $LAT_SECS s, nearest rank over each response's latency."
	echo
	echo "| server | queries/s | lost | latency avg / min / max ms | response codes | at $LAT_QPS q/s: p50 / p99 / p99.9 ms | version |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
	cat "$ROWS"
	echo
	say "done in $((SECONDS - T0)) s; logs in $LOGS"
}

main "$@"
