#!/usr/bin/env bash
# scripts/bench.sh: how fast weave-rs carries traffic between two containers
# on two hosts, on its own UDP sleeve and on the kernel's VXLAN fast path,
# against no tunnel, kernel VXLAN and tinc, all measured in one run on the
# same testbed. Writes BENCHMARKS.md at the repository root.
#
#   sudo bash scripts/bench.sh          (root: namespaces, apt-get; ~8 min)
#
# The testbed (adapted from the team's perfbed.sh) is four network
# namespaces, named $P-h1 $P-h2 $P-c1 $P-c2 with P=wrb<pid>:
#
#   c1 eth0 10.99.0.1/24                                 c2 eth0 10.99.0.2/24
#     | veth                                               | veth
#   h1 ctr0 -- bridge wrbbr0 ==(PATH)== bridge wrbbr0 -- ctr0   h2
#      ul0 192.168.200.1/24  <----- veth underlay ----->  ul0 192.168.200.2/24
#
# Paths (BENCH_PATHS), each on a freshly built testbed:
#   direct             underlay veth ends on the bridges: no tunnel, the ceiling
#   vxlan              kernel VXLAN (VNI 42, UDP 4789)
#   tinc / tinc-none   tinc 1.0 Mode=switch, default crypto / Cipher=Digest=none
#   weave-rs           weave-rs launch --no-fastdp, no encryption: the sleeve
#                      (the router's own UDP, port 6783) carries everything
#   weave-rs-fastpath  weave-rs launch with its fast path (kernel VXLAN device
#                      weave-vxlan, UDP 6784) at the VXLAN path's MTU; measured
#                      once h1's report shows the connection with fast_path
#                      true (else the path fails) and the underlay sample must
#                      be mostly udp:6784; "not available" when `launch --help`
#                      lacks --no-fastdp (a build without the fast path)
#   weave-rs-password  weave-rs launch --password-file (or --password), on the
#                      sleeve whatever the fast path (its report is checked for
#                      fast_path false); recorded as "not available" when
#                      `launch --help` lacks the flag
# Per path, c1 -> c2: a 2 s TCP warm-up while tcpdump samples what the
# underlay carries, ping (BENCH_PINGS at BENCH_PING_INTERVAL), iperf3 -J TCP
# 1 stream and TCP -P 4, then UDP (-u -b 0, unlimited rate) with 1400-byte
# datagrams (container MTU - 28 where that is smaller: 1380 with --password)
# and with 64-byte ones, BENCH_SECONDS each; UDP figures are the receiver's
# (rate, loss %, packets per second received). During the 1-stream test the
# CPU time (utime+stime) of the tunnel daemons in both hosts is counted; for
# weave-rs these are the routers (`weave-rs report` .router.pid). After the
# tests each weave-rs path's note records h1's data path (report
# .connections[].data_path) and flags (!) a carrier other than expected.
#
# Steps: install missing tools (apt-get, quiet, idempotent), build weave-rs
# (cargo build --release), measure every path, write BENCHMARKS.md. In
# BENCHMARKS.md, everything from the line `<!-- notes -->` on is hand-written
# and kept; the rest is overwritten by each run. Every namespace and process
# the run makes is removed on exit, on failure and on Ctrl-C.
#
# Environment (defaults in brackets):
#   BENCH_SECONDS [10]        length of each iperf3 test
#   BENCH_PINGS [20], BENCH_PING_INTERVAL [0.2]
#   BENCH_RUNS [1]            rounds over all paths; the table shows means,
#                             and with more than one run min-max columns
#   BENCH_PATHS [direct vxlan tinc tinc-none weave-rs weave-rs-fastpath
#                weave-rs-password]
#   BENCH_OUT [<repo>/BENCHMARKS.md]
#   BENCH_LOGS [<target dir>/bench-logs/<UTC time>]  iperf3 JSON, ping, logs
#   CARGO_TARGET_DIR [<repo>/target/bench]  where the release build goes
#   WEAVE_RS_BIN              benchmark this binary, skip the build
#   WEAVE_RS_MTU [1430]       overlay MTU on the sleeve (underlay 1500 - 70, as
#                             tinc)
#   WEAVE_RS_FAST_MTU [1450]  overlay MTU with the fast path (1500 - 50, as
#                             the vxlan path)
#   WEAVE_RS_PW_MTU [1408]    overlay MTU with --password (1500 - 92: IP, UDP,
#                             sleeve header, Ethernet, sealed header and tag)
#   WEAVE_RS_ARGS             more `launch` arguments for every weave-rs path
#   BENCH_PASSWORD [benchpass]
#   BENCH_QUIET_PCT [10], BENCH_QUIET_WAIT [120]  before each measurement,
#                             wait (at most WAIT s) for the machine to be at
#                             most PCT % busy: it is shared with builds
#   BENCH_OTHER_MAX [1.0], BENCH_ATTEMPTS [2]  CPU s other processes may use
#                             during a measurement before it is measured again
#   BENCH_NO_APT=1            do not install anything
#   BENCH_HOST_SETUP          a shell command run in each host namespace once
#                             the path is up, before measuring (experiments,
#                             e.g. an `ip rule`); noted in the run's note
set -Eeuo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# ---------------------------------------------------------------- settings

P=${BENCH_PREFIX:-wrb$$} # prefix of every namespace this run makes
SECS=${BENCH_SECONDS:-10}
PINGS=${BENCH_PINGS:-20}
PING_INTERVAL=${BENCH_PING_INTERVAL:-0.2}
RUNS=${BENCH_RUNS:-1}
PATHS=${BENCH_PATHS:-"direct vxlan tinc tinc-none weave-rs weave-rs-fastpath weave-rs-password"}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
PASSWORD=${BENCH_PASSWORD:-benchpass}
QUIET_PCT=${BENCH_QUIET_PCT:-10}
QUIET_WAIT=${BENCH_QUIET_WAIT:-120}
OTHER_MAX=${BENCH_OTHER_MAX:-1.0}
ATTEMPTS=${BENCH_ATTEMPTS:-2}
UL_MTU=1500                  # underlay MTU
VX_MTU=$((UL_MTU - 50))      # container MTU over VXLAN (kernel or fast path)
WR_MTU=${WEAVE_RS_MTU:-$((UL_MTU - 70))}
WR_FAST_MTU=${WEAVE_RS_FAST_MTU:-$VX_MTU}
WR_PW_MTU=${WEAVE_RS_PW_MTU:-$((UL_MTU - 92))}
UDP_LEN=1400                 # UDP datagram payload (less where the MTU is smaller)
UDP_SMALL=64                 # the small-datagram (packets per second) test
FAST_WAIT=15                 # s the fast path may take to engage
NOTES_MARK='<!-- notes -->'

BR=wrbbr0   # the bridge in each host
ULDEV=ul0   # the underlay veth end in each host
CTRDEV=ctr0 # host end of the container veth
HOST_IP=("" 192.168.200.1 192.168.200.2)
CTR_IP=("" 10.99.0.1 10.99.0.2)
PREFIXLEN=24

# Set by main and passed to the per-path child processes.
STATE=${BENCH_STATE:-}  # scratch dir of this run (configs, daemon logs)
LOGS=${BENCH_LOGS:-}    # kept: iperf3 JSON, ping output, router logs
RAW=${BENCH_RAW:-}      # one TSV row per path and run
BIN=${WEAVE_RS_BIN:-}   # the weave-rs binary

say() { printf '[bench] %s\n' "$*" >&2; }
die() {
	printf '[bench] error: %s\n' "$*" >&2
	[[ -z ${FAIL_FILE:-} ]] || printf '%s\n' "$*" >"$FAIL_FILE"
	exit 1
}

hx() { local h=$1; shift; ip netns exec "$P-h$h" "$@"; }
cx() { local c=$1; shift; ip netns exec "$P-c$c" "$@"; }
ns_exists() { [[ -e /run/netns/$1 ]]; }

# hx_bg N LOG CMD...: start daemon CMD (staying in the foreground) in host N.
hx_bg() {
	local h=$1 log=$2
	shift 2
	setsid ip netns exec "$P-h$h" "$@" </dev/null >"$STATE/$log.log" 2>&1 &
}

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

# calc EXPR [FORMAT]: floating-point arithmetic through awk.
# (parenthesised: a bare ">" in awk's printf would redirect to a file)
calc() { awk "BEGIN { printf \"${2:-%.2f}\", ($1) }"; }

# ---------------------------------------------------------------- setup

install_deps() {
	# Debian package -> a command it provides
	local -A provides=([iproute2]=ip [iperf3]=iperf3 [iputils-ping]=ping [tcpdump]=tcpdump
		[jq]=jq [tinc]=tincd [iptables]=iptables [util-linux]=setsid)
	local pkg missing=()
	for pkg in "${!provides[@]}"; do
		command -v "${provides[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
	done
	((${#missing[@]})) || return 0
	[[ -z ${BENCH_NO_APT:-} ]] || die "missing packages: ${missing[*]} (BENCH_NO_APT is set)"
	say "installing ${missing[*]} (apt-get)"
	local policy=""
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then # do not start tinc's service
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		policy=1
	fi
	local ok=1
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}"; } >"$LOGS/apt.log" 2>&1 || ok=""
	[[ -z $policy ]] || rm -f /usr/sbin/policy-rc.d
	[[ -n $ok ]] || die "apt-get install ${missing[*]} failed: $(tail -3 "$LOGS/apt.log")"
}

build() {
	local commit
	commit=$(git -c safe.directory="$ROOT" -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
	if [[ -n $BIN ]]; then
		BUILT="binary $BIN given by WEAVE_RS_BIN (repository at $commit)"
		[[ -x $BIN ]] || die "WEAVE_RS_BIN=$BIN is not an executable"
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
	[[ $commit != *-dirty ]] || BUILT+=" (working tree with uncommitted changes)"
}

# ---------------------------------------------------------------- testbed

tb_up() {
	local ns h
	for ns in h1 h2 c1 c2; do
		ns_exists "$P-$ns" && die "namespace $P-$ns already exists"
		ip netns add "$P-$ns"
		ip -n "$P-$ns" link set lo up
		# No IPv6: no router solicitations, MLD or DAD chatter in the numbers.
		ip netns exec "$P-$ns" sh -c 'echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6'
	done
	ip link add "$ULDEV" netns "$P-h1" mtu "$UL_MTU" type veth peer name "$ULDEV" netns "$P-h2" mtu "$UL_MTU"
	for h in 1 2; do
		ip -n "$P-h$h" addr add "${HOST_IP[h]}/$PREFIXLEN" dev "$ULDEV"
		ip -n "$P-h$h" link set "$ULDEV" up
		ip -n "$P-h$h" link add "$BR" type bridge stp_state 0 forward_delay 0
		ip -n "$P-h$h" link set "$BR" up
		ip link add "$CTRDEV" netns "$P-h$h" type veth peer name eth0 netns "$P-c$h"
		ip -n "$P-h$h" link set "$CTRDEV" master "$BR" up
		ip -n "$P-c$h" addr add "${CTR_IP[h]}/$PREFIXLEN" dev eth0
		ip -n "$P-c$h" link set eth0 up
	done
}

# tb_down: kill every process in our namespaces, delete them. Idempotent.
tb_down() {
	local ns pid pids=() alive=()
	for ns in "$P-c1" "$P-c2" "$P-h1" "$P-h2"; do
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
	for ns in "$P-c1" "$P-c2" "$P-h1" "$P-h2"; do
		! ns_exists "$ns" || ip netns del "$ns" 2>/dev/null || true
	done
}

# move_port N BR: put host N's container port on bridge BR.
move_port() {
	hx "$1" ip link set "$CTRDEV" nomaster
	hx "$1" ip link set "$CTRDEV" master "$2" up
}

set_ctr_mtu() {
	local h
	for h in 1 2; do
		hx "$h" ip link set "$CTRDEV" mtu "$1"
		cx "$h" ip link set eth0 mtu "$1"
	done
}

# ---------------------------------------------------------------- paths
# Each path_NAME runs on the bare testbed and leaves c1 able to reach c2. It
# sets MODE_MTU (container MTU), may set MODE_NOTE (one line for the report),
# DAEMON_PIDS (h1:pid h2:pid ... for the CPU column), WIRE_EXPECT (what the
# underlay sample must mostly carry, e.g. udp:6784) and WR_FAST (weave-rs:
# true/false, the carrier its report must show after the tests), or calls
# `unavailable REASON`.

# no encapsulation: the underlay veth ends are bridge ports themselves
path_direct() {
	MODE_MTU=$UL_MTU
	local h
	for h in 1 2; do
		hx "$h" ip addr flush dev "$ULDEV"
		hx "$h" ip link set "$ULDEV" master "$BR"
		hx "$h" ip addr add "${HOST_IP[h]}/$PREFIXLEN" dev "$BR"
	done
}

# kernel VXLAN (Weave's fast datapath, flannel): 50 bytes of overhead
path_vxlan() {
	MODE_MTU=$VX_MTU
	local h
	for h in 1 2; do
		hx "$h" ip link add vx0 type vxlan id 42 dstport 4789 dev "$ULDEV" \
			local "${HOST_IP[h]}" remote "${HOST_IP[3 - h]}"
		hx "$h" ip link set vx0 mtu "$MODE_MTU" master "$BR" up
	done
}

# tinc 1.0, Mode=switch, one tincd per host with its TAP on the bridge.
# Debian's 1.0.36 defaults to AES-256-CBC + HMAC-SHA256 cut to 4 bytes.
path_tinc() { tinc_path ""; }
path_tinc_none() { tinc_path $'Cipher = none\nDigest = none\n'; }

tinc_path() {
	local crypto=$1 h dir
	MODE_MTU=$((UL_MTU - 70))
	for h in 1 2; do
		dir=$STATE/tinc-h$h
		mkdir -p "$dir/hosts"
		printf 'Name = h%s\nMode = switch\nDeviceType = tap\nInterface = tinc0\nAddressFamily = ipv4\nConnectTo = h%s\n' \
			"$h" "$((3 - h))" >"$dir/tinc.conf"
		# shellcheck disable=SC2016 # $INTERFACE is for the tinc-up script
		printf '#!/bin/sh\nip link set "$INTERFACE" mtu %s master %s up\n' "$MODE_MTU" "$BR" >"$dir/tinc-up"
		chmod +x "$dir/tinc-up"
		printf 'Address = %s\nPort = 655\n%s' "${HOST_IP[h]}" "$crypto" >"$dir/hosts/h$h"
		tincd -c "$dir" -K2048 </dev/null >/dev/null 2>&1
	done
	for h in 1 2; do # each side needs the other's host file (address + key)
		cp "$STATE/tinc-h$((3 - h))/hosts/h$((3 - h))" "$STATE/tinc-h$h/hosts/"
	done
	for h in 1 2; do
		dir=$STATE/tinc-h$h
		hx_bg "$h" "tincd-h$h" tincd -D -c "$dir" --logfile="$dir/log" --pidfile="$dir/pid"
	done
	wait_for 20 "tinc0 on the bridge in both hosts" \
		sh -c "ip -n $P-h1 link show tinc0 | grep -q 'master $BR' && ip -n $P-h2 link show tinc0 | grep -q 'master $BR'"
	# Until path-MTU discovery is done, tinc sends big frames over TCP.
	wait_for 60 "tinc path-MTU discovery (SIGUSR2 dumps in $STATE/tinc-h*/log)" tinc_pmtu_fixed
	MODE_NOTE="tinc h1->h2: $(tinc_pmtu_line 1 | sed -E 's/ compression.*(pmtu [0-9]+).*/ \1/')"
}

# tinc_pmtu_line N: host N's view of its peer, from a SIGUSR2 node dump.
tinc_pmtu_line() {
	local h=$1 dir=$STATE/tinc-h$1
	kill -USR2 "$(cat "$dir/pid" 2>/dev/null)" 2>/dev/null || return 1
	sleep 0.1
	grep -E ": +h$((3 - h)) at " "$dir/log" | tail -1 | sed -E 's/.* (cipher .*)/\1/'
}

tinc_pmtu_fixed() {
	local h line
	for h in 1 2; do
		line=$(tinc_pmtu_line "$h") || return 1
		[[ $line =~ pmtu\ ([0-9]+)\ \(min\ ([0-9]+)\ max\ ([0-9]+)\) ]] || return 1
		((BASH_REMATCH[2] > 0 && BASH_REMATCH[2] == BASH_REMATCH[3])) || return 1
	done
}

# wr N ARGS...: weave-rs ARGS in host N, with its own state directory.
wr() {
	local h=$1
	shift
	WEAVE_RS_PLUGIN_SOCKET=off WEAVE_RS_STATE_DIR=$STATE/wr-h$h timeout 60 ip netns exec "$P-h$h" "$BIN" "$@"
}

# wr_has FLAG: `weave-rs launch --help` lists FLAG.
wr_has() {
	local help
	help=$("$BIN" launch --help 2>&1) || true
	grep -qE -- "$1([^-a-z]|\$)" <<<"$help"
}

# The sleeve: the router's own UDP carries everything (a build without the
# fast path has no --no-fastdp and is on the sleeve anyway).
path_weave_rs() {
	WR_FAST=false
	if wr_has --no-fastdp; then
		WIRE_EXPECT=udp:6783
		weave_rs_path "$WR_MTU" --no-fastdp
	else
		weave_rs_path "$WR_MTU"
	fi
}

# The fast path: measured only once h1's report shows it carrying the data.
path_weave_rs_fastpath() {
	wr_has --no-fastdp || unavailable "this weave-rs build has no fast path (no --no-fastdp in weave-rs launch --help)"
	WR_FAST=true WIRE_EXPECT=udp:6784
	weave_rs_path "$WR_FAST_MTU"
	local t0 deadline=$((SECONDS + FAST_WAIT))
	t0=$(date +%s.%N)
	until wr 1 report | jq -e '[.connections[] | select(.state == "established" and .fast_path == true)] | length > 0' >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "weave-rs fast path not engaged within ${FAST_WAIT}s: h1's connections: $(wr_data_path 1); router fast_path: $(wr 1 report | jq -r '.router.fast_path // "none"')"
		sleep 0.2
	done
	MODE_NOTE+="; fast path engaged $(calc "$(date +%s.%N) - $t0" %.1f) s after the connection, device $(wr 1 report | jq -r '.router.fast_path // "none"')"
}

path_weave_rs_password() {
	WR_FAST=false
	if wr_has --password-file; then
		printf '%s\n' "$PASSWORD" >"$STATE/password"
		chmod 600 "$STATE/password"
		weave_rs_path "$WR_PW_MTU" --password-file "$STATE/password"
	elif wr_has --password; then
		weave_rs_path "$WR_PW_MTU" --password "$PASSWORD"
	else
		unavailable "this weave-rs build has no --password (weave-rs launch --help)"
	fi
	[[ $MODE_NOTE == *"encrypted true"* ]] || MODE_NOTE+="; (!) the report does not say encrypted"
}

# wr_data_path N: host N's connections as "state: data_path (fast_path x)".
wr_data_path() {
	wr "$1" report | jq -r '[.connections[] | "\(.state): \(.data_path // "no data_path") (fast_path \(if has("fast_path") then .fast_path else "absent" end))"] | join("; ")' 2>/dev/null ||
		echo "(no report)"
}

# wr_after: after the tests, h1's data path into the note, with (!) when
# the carrier is not the one the path is about (WR_FAST) or the fast path
# fell back to the sleeve at some point.
wr_after() {
	local rep fast back
	rep=$(wr 1 report) || { MODE_NOTE+="; (!) no report after the tests"; return 0; }
	fast=$(jq -r '[.connections[] | select(.state == "established") | .fast_path == true] | any' <<<"$rep")
	back=$(jq -r '.stats.fastpath_switches_to_sleeve // 0' <<<"$rep")
	MODE_NOTE+="; after the tests: $(wr_data_path 1)"
	[[ -z $WR_FAST || $fast == "$WR_FAST" ]] || MODE_NOTE+="; (!) the report says fast_path $fast"
	[[ $back == 0 ]] || MODE_NOTE+="; (!) fell back to the sleeve $back time(s)"
}

# weave_rs_path MTU ARGS...: a router per host (h2 joins h1), the container
# ports moved onto the router's bridge `weave`.
weave_rs_path() {
	local mtu=$1 h pid extra=()
	shift
	MODE_MTU=$mtu
	# shellcheck disable=SC2206 # WEAVE_RS_ARGS is split on purpose
	[[ -z ${WEAVE_RS_ARGS:-} ]] || extra=($WEAVE_RS_ARGS)
	for h in 1 2; do
		mkdir -p "$STATE/wr-h$h"
		local peers=()
		((h == 1)) || peers=("${HOST_IP[1]}")
		wr "$h" launch --mtu "$mtu" "$@" "${extra[@]}" "${peers[@]}" >"$STATE/wr-launch-h$h.log" 2>&1 ||
			die "weave-rs launch in h$h failed: $(tail -3 "$STATE/wr-launch-h$h.log")"
		wait_for 30 "bridge weave in host $h" hx "$h" ip link show weave
		move_port "$h" weave
	done
	wait_for 30 "weave-rs connection established (h1)" \
		sh -c "WEAVE_RS_STATE_DIR=$STATE/wr-h1 ip netns exec $P-h1 $BIN report | jq -e '[.connections[] | select(.state == \"established\")] | length > 0'"
	DAEMON_PIDS=""
	for h in 1 2; do
		pid=$(wr "$h" report | jq -r '.router.pid') || die "weave-rs report in h$h failed"
		[[ $pid =~ ^[0-9]+$ ]] || die "weave-rs report in h$h: no router.pid"
		DAEMON_PIDS+=" $h:$pid"
	done
	MODE_NOTE="$("$BIN" --version 2>/dev/null | head -1); encryption $(wr 1 report | jq -c '.router.encryption'), encrypted $(wr 1 report | jq -r '[.connections[].encrypted | tostring] | unique | join(",")')"
}

# unavailable REASON: record the path as not measurable and stop this child.
unavailable() {
	say "$MODE: not available: $1"
	raw_status "n/a" "$1"
	exit 0
}

# ---------------------------------------------------------------- measuring

# ticks PID...: utime+stime (all threads) of these processes, in ticks.
ticks() {
	local pid t=0 f
	for pid in "$@"; do
		f=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		f=${f##*) }
		read -r -a f <<<"$f"
		t=$((t + f[11] + f[12]))
	done
	echo "$t"
}

# other_ticks: "pid ticks comm" of every userspace process outside our
# namespaces and our process group (other builds, benchmarks), counting
# waited-for children (cutime+cstime) so short-lived ones are seen too.
other_ticks() {
	local ours="" ns
	for ns in h1 h2 c1 c2; do ours+=" $(stat -L -c %i "/run/netns/$P-$ns" 2>/dev/null)"; done
	{ stat -L -c '%i %n' /proc/[0-9]*/ns/net 2>/dev/null || true; } |
		awk -v ours="$ours " -v pgrp="$MY_PGRP" '
		index(ours, " " $1 " ") { next }
		{
			split($2, p, "/"); f = "/proc/" p[3] "/stat"
			if ((getline line < f) <= 0) next
			close(f)
			comm = line; sub(/^[^(]*\(/, "", comm); sub(/\) [^)]*$/, "", comm); gsub(/ /, "_", comm)
			sub(/^.*\) /, "", line); split(line, s, " ")
			# s[3] pgrp, s[7] flags (0x200000 = kernel thread), s[12..15] times
			if (s[3] == pgrp || int(s[7] / 2097152) % 2) next
			print p[3], s[12] + s[13] + s[14] + s[15], comm
		}'
}

# ticks_delta BEFORE AFTER: CPU seconds used between two other_ticks files
ticks_delta() {
	awk -v hz="$HZ" 'NR == FNR { b[$1] = $2; next }
		{ d = $2 - (($1 in b) ? b[$1] : 0); if (d > 0) t += d }
		END { printf "%.2f", t / hz }' "$1" "$2"
}

# wait_quiet: wait (at most QUIET_WAIT s) until the machine is at most
# QUIET_PCT % busy over 2 s. Prints the last busy %.
wait_quiet() {
	local deadline=$((SECONDS + QUIET_WAIT)) t0 i0 t1 i1 pct warned=""
	while :; do
		read -r t0 i0 < <(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
		sleep 2
		read -r t1 i1 < <(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat)
		pct=$(calc "$((t1 - t0)) ? 100 * ($((t1 - t0)) - $((i1 - i0))) / $((t1 - t0)) : 0" %.0f)
		((pct <= QUIET_PCT)) && break
		if ((SECONDS >= deadline)); then
			say "machine still ${pct}% busy after ${QUIET_WAIT}s; measuring anyway"
			break
		fi
		[[ -n $warned ]] || say "machine ${pct}% busy; waiting for it to go quiet"
		warned=1
		sleep 3
	done
	echo "$pct"
}

# wire_probe: a 2 s TCP warm-up while tcpdump samples h1's underlay; prints
# what it carried, e.g. "udp:6783 100%", "unencapsulated 100%".
wire_probe() {
	local pcap=$STATE/wire.pcap tp
	hx 1 timeout 10 tcpdump -i "$ULDEV" -nn -s 96 -c 400 -w "$pcap" 'ip and not igmp' >"$STATE/tcpdump.log" 2>&1 &
	tp=$!
	wait_for 5 "tcpdump listening" grep -q 'listening on' "$STATE/tcpdump.log"
	cx 1 iperf3 -c "${CTR_IP[2]}" -t 2 >/dev/null
	wait "$tp" || true
	tcpdump -nn -q -t -r "$pcap" 2>/dev/null | awk '
		$1 == "IP" {
			n = split($2, s, "."); m = split($4, d, ".")
			sub(/:$/, "", d[m])
			if ($2 ~ /^10\.99\./) key = "unencapsulated"
			else if ($5 ~ /^UDP/ || $5 == "tcp") { # service port = the lower one
				port = (s[n] + 0 < d[m] + 0) ? s[n] : d[m]
				key = ($5 == "tcp" ? "tcp:" : "udp:") port
			} else { key = tolower($5); sub(/[,:]$/, "", key) }
			c[key]++; total++
		}
		END {
			if (!total) { print "none"; exit }
			for (k in c) {
				pct = 100 * c[k] / total
				out = out (out ? " " : "") k " " (pct < 0.5 ? sprintf("%d pkt", c[k]) : sprintf("%.0f%%", pct))
			}
			print out
		}'
}

# iperf NAME ARGS...: a client test c1 -> c2, JSON kept in $RUNLOG/NAME.json
iperf() {
	local name=$1
	shift
	cx 1 timeout $((SECS + 60)) iperf3 -c "${CTR_IP[2]}" -t "$SECS" -J "$@" >"$RUNLOG/$name.json" 2>"$RUNLOG/$name.err" ||
		die "iperf3 $* failed: $(jq -r '.error // empty' "$RUNLOG/$name.json" 2>/dev/null)"
}

# udp_figures NAME DROPS: "Gbit/s loss% pps rcvbuf%" received in the UDP
# test NAME, rcvbuf% being DROPS (c2's socket buffer overflows) in % of the
# datagrams sent. iperf3 3.12's .end.sum_received has the receiver's count
# (packets sent, of which lost_packets never arrived, over the receiver's
# seconds); .end.sum and .end.sum_sent have the sender's bytes and rate.
udp_figures() {
	jq -r --argjson drops "$2" '.start.test_start.blksize as $len | (.end.sum_received // .end.sum) |
		((.packets - .lost_packets) / .seconds) as $pps |
		"\($pps * $len * 8 / 1e9 * 1000 | round / 1000) \(.lost_percent * 100 | round / 100) \($pps | round) \(if .packets > 0 then $drops / .packets * 10000 | round / 100 else 0 end)"' \
		"$RUNLOG/$1.json"
}

# rcvbuf_errors: c2's UDP RcvbufErrors (datagrams no socket buffer had room for)
rcvbuf_errors() {
	cx 2 cat /proc/net/snmp |
		awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1 } else print $col["RcvbufErrors"] + 0 }'
}

# daemon_pids: "host:pid" of the tunnel daemons: DAEMON_PIDS when the path
# named them (weave-rs), else every process in the host namespaces.
daemon_pids() {
	if [[ -n $DAEMON_PIDS ]]; then echo "$DAEMON_PIDS"; return; fi
	local h pid
	for h in 1 2; do
		for pid in $(ip netns pids "$P-h$h"); do printf ' %s:%s' "$h" "$pid"; done
	done
}

# measure: ping, TCP 1 stream (with daemon CPU), TCP -P 4, UDP at UDP_LEN
# (or MTU - 28) and at UDP_SMALL bytes; sets the figures.
measure() {
	cx 1 ping -q -c "$PINGS" -i "$PING_INTERVAL" -W 1 "${CTR_IP[2]}" >"$RUNLOG/ping.txt" || true
	ping_avg=$(awk -F/ '/^rtt/ {print $5}' "$RUNLOG/ping.txt")
	ping_loss=$(grep -oE '[0-9.]+% packet loss' "$RUNLOG/ping.txt" | grep -oE '^[0-9.]+')

	local hp p1=() p2=() b1 b2 a1 a2
	for hp in $(daemon_pids); do
		if [[ ${hp%%:*} == 1 ]]; then p1+=("${hp#*:}"); else p2+=("${hp#*:}"); fi
	done
	b1=$(ticks "${p1[@]}") b2=$(ticks "${p2[@]}")
	iperf tcp1
	a1=$(ticks "${p1[@]}") a2=$(ticks "${p2[@]}")
	sleep 1
	iperf tcp4 -P 4
	udp_len=$((MODE_MTU - 28 < UDP_LEN ? MODE_MTU - 28 : UDP_LEN))
	local r0 r1 r2 r3
	sleep 1
	r0=$(rcvbuf_errors)
	iperf udp -u -b 0 -l "$udp_len"
	r1=$(rcvbuf_errors)
	sleep 1
	r2=$(rcvbuf_errors)
	iperf udp64 -u -b 0 -l "$UDP_SMALL"
	r3=$(rcvbuf_errors)
	read -r udp_gbps udp_loss udp_pps udp_rcvbuf < <(udp_figures udp $((r1 - r0)))
	read -r udp64_gbps udp64_loss udp64_pps udp64_rcvbuf < <(udp_figures udp64 $((r3 - r2)))
	[[ -n $udp_pps && -n $udp64_pps ]] || die "no UDP figures in $RUNLOG/udp.json or udp64.json"

	tcp1=$(jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' "$RUNLOG/tcp1.json")
	tcp1_retr=$(jq '.end.sum_sent.retransmits // 0' "$RUNLOG/tcp1.json")
	tcp1_gb=$(jq '.end.sum_received.bytes / 1e9' "$RUNLOG/tcp1.json")
	tcp4=$(jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000' "$RUNLOG/tcp4.json")
	tcp4_retr=$(jq '.end.sum_sent.retransmits // 0' "$RUNLOG/tcp4.json")
	if ((${#p1[@]} + ${#p2[@]})); then
		cpu=$(calc "($a1 - $b1 + $a2 - $b2) / $HZ")
		cpu_split="$(calc "($a1 - $b1) / $HZ")+$(calc "($a2 - $b2) / $HZ")"
		cpu_gb=$(calc "$cpu / $tcp1_gb" %.2f)
	else
		cpu="" cpu_split="" cpu_gb=""
	fi
}

RAW_HEADER="when	path	run	status	mtu	tcp1_gbps	tcp1_retr	tcp4_gbps	tcp4_retr	ping_avg_ms	ping_loss_pct	daemon_cpu_s	daemon_cpu_h1_h2	cpu_s_per_gb	wire	other_cpu_s	note	udp_len	udp_gbps	udp_loss_pct	udp_pps	udp64_gbps	udp64_loss_pct	udp64_pps	udp_rcvbuf_pct	udp64_rcvbuf_pct"

# raw_row STATUS FIELDS...: append a row for $MODE run $RUN to $RAW.
raw_row() {
	local f row
	row="$(date -u +%H:%M:%S)	$MODE	$RUN"
	for f in "$@"; do
		f=${f//$'\n'/ } # one line per row, whatever a message holds,
		f=${f//|//}     # and no "|" to break a Markdown table
		row+=$'\t'${f//$'\t'/ }
	done
	printf '%s\n' "$row" >>"$RAW"
}

# raw_status STATUS NOTE: a row with no figures (n/a, FAILED).
raw_status() { raw_row "$1" "" "" "" "" "" "" "" "" "" "" "" "" "$2" "" "" "" "" "" "" "" "" ""; }

# bench_path MODE RUN: one path measured on a fresh testbed (a child process).
bench_path() {
	MODE=$1 RUN=$2
	FAIL_FILE=$STATE/fail-$MODE-$RUN
	RUNLOG=$LOGS/$MODE-$RUN
	STATE=$STATE/$MODE-$RUN # this path's configs and daemon logs
	mkdir -p "$STATE"
	HZ=$(getconf CLK_TCK)
	MY_PGRP=$(($(ps -o pgid= -p $$)))
	mkdir -p "$RUNLOG"
	trap 'printf "[bench] error: line %s: %s failed\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
	trap 'exit 143' TERM
	trap 'collect_logs; tb_down' EXIT

	tb_up
	MODE_MTU=$UL_MTU MODE_NOTE="" DAEMON_PIDS="" WIRE_EXPECT="" WR_FAST=""
	"path_${MODE//-/_}"
	set_ctr_mtu "$MODE_MTU"
	if [[ -n ${BENCH_HOST_SETUP:-} ]]; then
		local h
		for h in 1 2; do
			hx "$h" sh -c "$BENCH_HOST_SETUP" || die "BENCH_HOST_SETUP failed in h$h: $BENCH_HOST_SETUP"
		done
		MODE_NOTE+="${MODE_NOTE:+; }host setup: $BENCH_HOST_SETUP"
	fi
	wait_for 30 "c1 reaching ${CTR_IP[2]} over $MODE" cx 1 ping -c1 -W1 "${CTR_IP[2]}"
	say "$MODE up, container MTU $MODE_MTU${MODE_NOTE:+; $MODE_NOTE}"

	cx 2 iperf3 -s -D -B "${CTR_IP[2]}"
	wait_for 10 "iperf3 server" sh -c "ip netns exec $P-c2 ss -Hltn 'sport = :5201' | grep -q ."
	local wire attempt busy other flag=""
	wire=$(wire_probe)
	if [[ -n $WIRE_EXPECT ]]; then
		local share=0
		[[ ! $wire =~ (^| )$WIRE_EXPECT\ ([0-9]+)% ]] || share=${BASH_REMATCH[2]}
		((share >= 50)) ||
			die "$MODE: the underlay sample is not mostly $WIRE_EXPECT but: $wire${WR_FAST:+ (h1 connections: $(wr_data_path 1))}"
	fi
	for ((attempt = 1; ; attempt++)); do
		busy=$(wait_quiet)
		other_ticks >"$RUNLOG/other.before"
		measure
		other_ticks >"$RUNLOG/other.after"
		other=$(ticks_delta "$RUNLOG/other.before" "$RUNLOG/other.after")
		(($(calc "$other > $OTHER_MAX" %d))) || break
		if ((attempt >= ATTEMPTS)); then
			say "$MODE: other processes used ${other} CPU s during the measurement; kept, flagged"
			flag=" (!)"
			break
		fi
		say "$MODE: other processes used ${other} CPU s during the measurement (max $OTHER_MAX); measuring again"
	done
	other+=$flag
	((attempt == 1)) || other+=", try $attempt"
	[[ $MODE != weave-rs* ]] || wr_after
	raw_row ok "$MODE_MTU" "$tcp1" "$tcp1_retr" "$tcp4" "$tcp4_retr" "$ping_avg" "$ping_loss" \
		"$cpu" "$cpu_split" "$cpu_gb" "$wire" "$other" "$MODE_NOTE" \
		"$udp_len" "$udp_gbps" "$udp_loss" "$udp_pps" "$udp64_gbps" "$udp64_loss" "$udp64_pps" "$udp_rcvbuf" "$udp64_rcvbuf"
	say "$MODE: tcp1 $tcp1 Gbit/s (retr $tcp1_retr), tcp-P4 $tcp4, ping $ping_avg ms, daemon cpu ${cpu:-n/a} s (${cpu_gb:-n/a} s/GB), udp -l $udp_len $udp_gbps Gbit/s (loss $udp_loss% of which c2 socket $udp_rcvbuf%, $udp_pps pps), udp -l $UDP_SMALL $udp64_gbps Gbit/s (loss $udp64_loss% of which c2 socket $udp64_rcvbuf%, $udp64_pps pps), wire $wire, busy before ${busy}%, other procs' CPU s $other"
}

# collect_logs: keep the daemons' logs and weave-rs reports with the run.
collect_logs() {
	[[ -n ${RUNLOG:-} && -d $STATE ]] || return 0
	local h
	if [[ $MODE == weave-rs* ]]; then
		for h in 1 2; do
			wr "$h" report >"$RUNLOG/report-h$h.json" 2>/dev/null || true
			cp -r "$STATE/wr-h$h" "$RUNLOG/state-h$h" 2>/dev/null || true
		done
	fi
	cp "$STATE"/*.log "$RUNLOG/" 2>/dev/null || true
}

# ---------------------------------------------------------------- report

label() {
	case $1 in
	direct) echo "no tunnel (bridged veth, the ceiling)" ;;
	vxlan) echo "kernel VXLAN" ;;
	tinc) echo "tinc 1.0 switch, default crypto" ;;
	tinc-none) echo "tinc 1.0 switch, no crypto" ;;
	weave-rs) echo "**weave-rs sleeve**" ;;
	weave-rs-fastpath) echo "**weave-rs fast path**" ;;
	weave-rs-password) echo "**weave-rs --password**" ;;
	*) echo "$1" ;;
	esac
}

# load_means: per path, over its measured runs, into assoc arrays: the means
# T1 T4 RTT CPUGB CPU (daemon CPU s in the 1-stream test), UDP (Gbit/s
# received with UDPLEN-byte datagrams), UDPLOSS (%), PPS and PPS64 (packets
# per second received at UDPLEN and UDP_SMALL bytes); the ranges T1MM T4MM
# UDPMM ("min–max"); MTU; STATUS (ok / n/a: reason / FAILED: reason).
load_means() {
	local path status mtu t1 t4 rtt cpugb cpu t1mm t4mm ulen udp uloss umm pps pps64 _n
	# (fields split on \x1f: read would merge runs of tabs, empty fields lost)
	while IFS=$'\x1f' read -r path status mtu t1 t4 rtt cpugb cpu t1mm t4mm ulen udp uloss umm pps pps64 _n; do
		STATUS[$path]=$status MTU[$path]=$mtu T1[$path]=$t1 T4[$path]=$t4
		RTT[$path]=$rtt CPUGB[$path]=$cpugb CPU[$path]=$cpu T1MM[$path]=$t1mm T4MM[$path]=$t4mm
		UDPLEN[$path]=$ulen UDP[$path]=$udp UDPLOSS[$path]=$uloss UDPMM[$path]=$umm
		PPS[$path]=$pps PPS64[$path]=$pps64
	done < <(awk -F'\t' '
		function mm(key, v) {
			v += 0
			if (!(key in lo) || v < lo[key]) lo[key] = v
			if (!(key in hi) || v > hi[key]) hi[key] = v
		}
		function range(key) { return (key in lo) ? sprintf("%.2f–%.2f", lo[key], hi[key]) : "" }
		function mean(sum, cnt, fmt) { return cnt ? sprintf(fmt, sum / cnt) : "" }
		NR == 1 { next }
		!($2 in seen) { seen[$2]; order[++k] = $2 }
		$4 == "ok" {
			p = $2; n[p]++; mtu[p] = $5; t1[p] += $6; t4[p] += $8; rtt[p] += $10
			mm(p SUBSEP 1, $6); mm(p SUBSEP 4, $8)
			if ($14 != "") { cpu[p] += $12; cg[p] += $14; cn[p]++ }
			if ($19 != "") {
				un[p]++; ulen[p] = $18; ug[p] += $19; ul[p] += $20; up[p] += $21; up64[p] += $24
				mm(p SUBSEP "u", $19)
			}
			next
		}
		{ other[$2] = $4 ": " $17 }
		END {
			for (i = 1; i <= k; i++) {
				p = order[i]
				if (!n[p]) {
					out = p "\037" other[p]
					for (j = 0; j < 14; j++) out = out "\037"
					print out "\0370"
					continue
				}
				cgm = cn[p] ? cg[p] / cn[p] : 0
				printf "%s\037ok\037%s\037%.3f\037%.3f\037%.3f\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%s\037%d\n",
					p, mtu[p], t1[p] / n[p], t4[p] / n[p], rtt[p] / n[p],
					mean(cg[p], cn[p], cgm < 1 ? "%.2f" : "%.1f"), mean(cpu[p], cn[p], "%.2f"),
					range(p SUBSEP 1), range(p SUBSEP 4), ulen[p], mean(ug[p], un[p], "%.3f"),
					mean(ul[p], un[p], "%.2f"), range(p SUBSEP "u"), mean(up[p], un[p], "%.0f"),
					mean(up64[p], un[p], "%.0f"), n[p]
			}
		}' "$RAW")
}

ok() { [[ ${STATUS[$1]:-} == ok ]]; }

# ratio A B: A/B as "0.04×", or "-" when either is missing
ratio() { if [[ -n $1 && -n $2 ]]; then calc "$1 / $2" '%.2f×'; else echo "-"; fi; }

# kpps N: packets per second as "123k", or "-" when missing
kpps() { if [[ -n $1 ]]; then calc "$1 / 1000" '%.0fk'; else echo "-"; fi; }

# md_row CELL...: one line of a Markdown table.
md_row() {
	printf '| %s ' "$@"
	echo '|'
}

# target TEXT VALUE OP LIMIT UNIT: one line of the targets table.
target() {
	local text=$1 value=$2 op=$3 limit=$4 unit=${5:-×} verdict
	if [[ -z $value ]]; then
		echo "| $text | n/a | not measured |"
		return
	fi
	if (($(calc "$value $op $limit" %d))); then verdict="met"; else verdict="**not met**"; fi
	echo "| $text | $value$unit | $verdict |"
}

# udp_targets PATH TEXT: received rate against kernel VXLAN's, and loss.
udp_targets() {
	local p=$1 text=$2 r="" loss="" len=${UDPLEN[$1]:-$UDP_LEN}
	if ok "$p"; then
		loss=${UDPLOSS[$p]}
		[[ -z $vxu || -z ${UDP[$p]} ]] || r=$(calc "${UDP[$p]} / $vxu")
	fi
	target "$text UDP $len B received ≥ 0.8× kernel VXLAN's (UDP $UDP_LEN B)" "$r" '>=' 0.8
	target "$text UDP $len B loss < 5%" "$loss" '<' 5 "%"
}

write_report() {
	local -A STATUS=() MTU=() T1=() T4=() RTT=() CPUGB=() CPU=() T1MM=() T4MM=() UDPLEN=() UDP=() UDPLOSS=() UDPMM=() PPS=() PPS64=()
	load_means
	local notes="" p st vx1="" vx4="" vxu="" vx_rtt="" sl1="" sl4="" base_rtt="" tinc_v mm=""
	if [[ -f $OUT ]] && grep -qxF "$NOTES_MARK" "$OUT"; then
		notes=$(sed -n "/^${NOTES_MARK}\$/,\$p" "$OUT")
	else
		notes="$NOTES_MARK"$'\n## Notes\n\n(Hand-written; scripts/bench.sh keeps everything from the marker above on.)'
	fi
	if ok vxlan; then vx1=${T1[vxlan]} vx4=${T4[vxlan]} vxu=${UDP[vxlan]} vx_rtt=${RTT[vxlan]}; fi
	if ok weave-rs; then sl1=${T1[weave-rs]} sl4=${T4[weave-rs]}; fi
	if ok direct; then base_rtt=${RTT[direct]}; fi
	((RUNS < 2)) || mm=1 # min–max columns
	tinc_v=$(tincd --version 2>/dev/null | awk 'NR == 1 {print $3}')
	{
		echo "# Benchmarks"
		echo
		echo "weave-rs, on its own UDP sleeve and on the kernel's VXLAN fast path, against"
		echo "no tunnel, kernel VXLAN and tinc, measured in one run of \`scripts/bench.sh\` on"
		echo "one testbed: two \"hosts\" (network namespaces) joined by a veth underlay (MTU"
		echo "$UL_MTU), one \"container\" namespace on each host's bridge; iperf3 and ping from"
		echo "c1 to c2. The file is rewritten by each run (except the notes at the end)."
		echo
		echo "## Reproduce"
		echo
		echo "    sudo bash scripts/bench.sh      # installs iperf3, tinc... with apt if missing, builds, ~8 min"
		echo
		echo "Knobs (environment): BENCH_SECONDS, BENCH_PINGS, BENCH_RUNS, BENCH_PATHS,"
		echo "WEAVE_RS_BIN, WEAVE_RS_MTU, WEAVE_RS_FAST_MTU, WEAVE_RS_PW_MTU, WEAVE_RS_ARGS;"
		echo "see the script's header."
		echo
		echo "## Machine"
		echo
		echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "- CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB"
		# shellcheck disable=SC1091
		echo "- kernel: $(uname -r); $(. /etc/os-release && echo "$PRETTY_NAME")"
		echo "- weave-rs: $BUILT ($("$BIN" --version 2>/dev/null | head -1))"
		echo "- tools: $(iperf3 --version | head -1 | awk '{print $1, $2}'), tinc $tinc_v, $(ping -V | head -1)"
		echo "- settings: iperf3 ${SECS} s per test, $PINGS pings ${PING_INTERVAL} s apart, $RUNS run(s) per path (means); the run took $((SECONDS - T0)) s"
		echo
		echo "## Results"
		echo
		local hdr=("path" "MTU in container" "TCP 1 stream Gbit/s") seps=() cells=() h
		[[ -z $mm ]] || hdr+=("TCP 1 min–max")
		hdr+=("TCP 4 streams Gbit/s")
		[[ -z $mm ]] || hdr+=("TCP 4 min–max")
		hdr+=("× VXLAN (1 / 4 streams)" "× weave-rs sleeve (1 / 4)" "ping RTT ms" "added RTT ms"
			"daemon CPU s per GB" "UDP $UDP_LEN Gbit/s (loss %)")
		[[ -z $mm ]] || hdr+=("UDP $UDP_LEN min–max")
		hdr+=("× VXLAN UDP" "pps at $UDP_SMALL B" "pps at $UDP_LEN B")
		for h in "${hdr[@]}"; do seps+=("---"); done
		md_row "${hdr[@]}"
		md_row "${seps[@]}"
		for p in $PATHS; do
			if ! ok "$p"; then
				st=${STATUS[$p]:-not run}
				cells=("$(label "$p")" "${st/#n\/a:/not available:}")
				while ((${#cells[@]} < ${#hdr[@]})); do cells+=(""); done
				md_row "${cells[@]}"
				continue
			fi
			local vssleeve="-" added="-" cpugb="n/a (kernel)" udp="-" at=""
			[[ $p != weave-rs-password && $p != weave-rs-fastpath ]] ||
				vssleeve="$(ratio "${T1[$p]}" "$sl1") / $(ratio "${T4[$p]}" "$sl4")"
			[[ -z $base_rtt ]] || added=$(calc "${RTT[$p]} - $base_rtt" %.3f)
			[[ -z ${CPUGB[$p]} ]] || cpugb=${CPUGB[$p]}
			[[ -z ${UDPLEN[$p]} || ${UDPLEN[$p]} == "$UDP_LEN" ]] || at=" at ${UDPLEN[$p]} B"
			[[ -z ${UDP[$p]} ]] || udp="$(calc "${UDP[$p]}") ($(calc "${UDPLOSS[$p]}" %.1f)%)$at"
			cells=("$(label "$p")" "${MTU[$p]}" "$(calc "${T1[$p]}")")
			[[ -z $mm ]] || cells+=("${T1MM[$p]}")
			cells+=("$(calc "${T4[$p]}")")
			[[ -z $mm ]] || cells+=("${T4MM[$p]}")
			cells+=("$(ratio "${T1[$p]}" "$vx1") / $(ratio "${T4[$p]}" "$vx4")" "$vssleeve"
				"$(calc "${RTT[$p]}" %.3f)" "$added" "$cpugb" "$udp")
			[[ -z $mm ]] || cells+=("${UDPMM[$p]:--}")
			cells+=("$(ratio "${UDP[$p]}" "$vxu")" "$(kpps "${PPS64[$p]}")" "$(kpps "${PPS[$p]}")${at}")
			md_row "${cells[@]}"
		done
		echo
		echo "Added RTT: ping RTT minus no tunnel's. Daemon CPU s per GB: user+sys CPU"
		echo "seconds (utime+stime in /proc/PID/stat) of the tunnel daemons of both hosts"
		echo "during the 1-stream test, divided by the GB iperf3 delivered; for weave-rs the"
		echo "two routers (\`weave-rs report\` .router.pid), for tinc the tincd processes."
		echo "UDP: \`iperf3 -u -b 0\` (as fast as the sender can) with $UDP_LEN-byte datagrams"
		echo "(container MTU - 28 where that is smaller, e.g. $((WR_PW_MTU - 28)) with --password) and"
		echo "with $UDP_SMALL-byte ones; Gbit/s, loss and packets per second (pps) as the receiver"
		echo "counted them (iperf3's .end.sum_received). Loss counts the datagrams c2's"
		echo "socket buffer had no room for too (UdpRcvbufErrors, in the run details as"
		echo "\"of it c2's socket\"): at -b 0 the sender outruns the receiver on every path."
		[[ -z $mm ]] || echo "Figures are means over the runs; min–max: the lowest and highest run."
		echo
		echo "## Targets"
		echo
		echo "| target | measured | |"
		echo "| --- | --- | --- |"
		local r="" pw1="" pw4="" tn="" td="" pwok="" fp=""
		ok weave-rs-password && pwok=1
		ok weave-rs-fastpath && fp=1
		[[ -z $sl1 || -z $vx1 ]] || r=$(calc "$sl1 / $vx1")
		target "weave-rs sleeve ≥ 0.4× kernel VXLAN, TCP 1 stream" "$r" '>=' 0.4
		r=""
		[[ -z $sl4 || -z $vx4 ]] || r=$(calc "$sl4 / $vx4")
		target "weave-rs sleeve ≥ 0.4× kernel VXLAN, TCP 4 streams" "$r" '>=' 0.4
		[[ -z $pwok || -z $sl1 ]] || pw1=$(calc "${T1[weave-rs-password]} / $sl1")
		[[ -z $pwok || -z $sl4 ]] || pw4=$(calc "${T4[weave-rs-password]} / $sl4")
		target "weave-rs --password ≥ 0.7× weave-rs sleeve, TCP 1 stream" "$pw1" '>=' 0.7
		target "weave-rs --password ≥ 0.7× weave-rs sleeve, TCP 4 streams" "$pw4" '>=' 0.7
		r=""
		[[ -z $base_rtt || -z $sl1 ]] || r=$(calc "${RTT[weave-rs]} - $base_rtt" %.3f)
		target "weave-rs sleeve adds < 0.1 ms RTT over no tunnel" "$r" '<' 0.1 " ms"
		r=""
		[[ -z $base_rtt || -z $pwok ]] || r=$(calc "${RTT[weave-rs-password]} - $base_rtt" %.3f)
		target "weave-rs --password adds < 0.1 ms RTT over no tunnel" "$r" '<' 0.1 " ms"
		ok tinc-none && tn=${T1[tinc-none]}
		ok tinc && td=${T1[tinc]}
		r=""
		[[ -z $sl1 || -z $tn ]] || r=$(calc "$sl1 / $tn")
		target "weave-rs sleeve ≥ 5× tinc without crypto, TCP 1 stream" "$r" '>=' 5
		r=""
		[[ -z $pwok || -z $td ]] || r=$(calc "${T1[weave-rs-password]} / $td")
		target "weave-rs --password ≥ 5× tinc with its default crypto, TCP 1 stream" "$r" '>=' 5
		udp_targets weave-rs "weave-rs sleeve"
		udp_targets weave-rs-password "weave-rs --password"
		r=""
		[[ -z $fp || -z $vx1 ]] || r=$(calc "${T1[weave-rs-fastpath]} / $vx1")
		target "weave-rs fast path ≥ 0.95× kernel VXLAN, TCP 1 stream" "$r" '>=' 0.95
		r=""
		[[ -z $fp || -z $vx4 ]] || r=$(calc "${T4[weave-rs-fastpath]} / $vx4")
		target "weave-rs fast path ≥ 0.95× kernel VXLAN, TCP 4 streams" "$r" '>=' 0.95
		r=""
		[[ -z $fp || -z $vx_rtt ]] || r=$(calc "${RTT[weave-rs-fastpath]} - $vx_rtt" %.3f)
		target "weave-rs fast path adds RTT within 0.02 ms of kernel VXLAN's (RTT minus VXLAN's)" "$r" '<=' 0.02 " ms"
		r=""
		[[ -z $fp ]] || r=${CPU[weave-rs-fastpath]}
		target "weave-rs fast path: routers' CPU (h1+h2) during the 1-stream test (${SECS} s) < 0.5 s" "$r" '<' 0.5 " s"
		echo
		echo "## Run details"
		echo
		echo "| path | run | TCP 1 stream Gbit/s (retransmits) | TCP 4 streams (retransmits) | UDP Gbit/s (loss, of it c2's socket; pps; -l) | UDP $UDP_SMALL B Gbit/s (loss, of it c2's socket; pps) | ping loss | daemon CPU s h1+h2 | underlay carried | other processes' CPU s | note |"
		echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
		awk -F'\t' 'NR > 1 {
			if ($4 != "ok") { printf "| %s | %s | %s | | | | | | | | %s |\n", $2, $3, $4, $17; next }
			udp = ($19 == "") ? "-" : sprintf("%.2f (%s%%, %s%%; %.0fk; %s)", $19, $20, $25, $21 / 1000, $18)
			udp64 = ($22 == "") ? "-" : sprintf("%.3f (%s%%, %s%%; %.0fk)", $22, $23, $26, $24 / 1000)
			printf "| %s | %s | %.2f (%s) | %.2f (%s) | %s | %s | %s%% | %s | %s | %s | %s |\n", $2, $3, $6, $7, $8, $9,
				udp, udp64, $11, ($13 == "" ? "n/a (kernel)" : $12 " (" $13 ")"), $15, $16, $17
		}' "$RAW"
		echo
		echo "How it was measured: each path on a freshly built testbed; once c1 pings c2,"
		echo "a 2 s iperf3 warm-up while tcpdump samples 400 packets on h1's underlay"
		echo "(\"underlay carried\": e.g. udp:6783 is weave-rs's sleeve, udp:6784 its fast"
		echo "path, udp:655 tinc's, udp:4789 VXLAN), then ping -c $PINGS -i $PING_INTERVAL, iperf3 -J"
		echo "TCP 1 stream and -P 4, UDP -b 0 -l $UDP_LEN (MTU - 28 where smaller) and -l $UDP_SMALL,"
		echo "${SECS} s each (figures as received). weave-rs sleeve is \`launch --no-fastdp\`;"
		echo "weave-rs fast path is \`launch\` with the fast path, measured once h1's"
		echo "\`weave-rs report\` shows the connection with fast_path true (the path fails"
		echo "if that takes over ${FAST_WAIT} s, or if the underlay sample is not mostly"
		echo "udp:6784); the note records the data path after the tests. Container MTU:"
		echo "the largest that fits the encapsulation in the underlay without fragmenting"
		echo "(direct $UL_MTU, VXLAN $VX_MTU and weave-rs fast path $WR_FAST_MTU, tinc and weave-rs"
		echo "sleeve $((UL_MTU - 70)) like every userspace tunnel in perfbed; weave-rs --password"
		echo "$WR_PW_MTU, its sealed header and tag add 32 bytes). tinc is Debian's 1.0 in"
		echo "Mode=switch (default crypto: AES-256-CBC, HMAC-SHA256 truncated to 4 bytes)."
		echo "Before each measurement the script waits until the machine is at most"
		echo "${QUIET_PCT}% busy and counts the CPU time of processes outside the testbed"
		echo "(\"other processes' CPU s\"; above ${OTHER_MAX} s it measures again, (!) marks a"
		echo "run that stayed above). Caveat: the $(nproc) cores are shared by the iperf3"
		echo "client and server and both daemons, and veth has GSO/TSO, so over TCP the"
		echo "kernel paths move 64 KiB super-packets; UDP has no such help (a system call"
		echo "per datagram). Raw data: \`$(basename "$LOGS")\` logs"
		echo "(iperf3 JSON, ping, router logs and reports) under the cargo target dir."
		echo
		echo "$notes"
	} >"$OUT.tmp"
	mv "$OUT.tmp" "$OUT"
	say "wrote $OUT"
}

# ---------------------------------------------------------------- main

CHILD="" T0=$SECONDS BUILT=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $CHILD ]] && kill -0 "$CHILD" 2>/dev/null; then
		kill -TERM "$CHILD" 2>/dev/null || true
		tb_down # ends its iperf3 or daemon wait at once
		for _ in $(seq 100); do kill -0 "$CHILD" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$CHILD" 2>/dev/null || true
	fi
	tb_down
	[[ -z $STATE ]] || rm -rf "$STATE"
	((rc == 0)) || say "stopped (exit $rc); namespaces ${P}-* removed"
	exit "$rc"
}

main() {
	if [[ ${1:-} == __path ]]; then # a child: one path, one run
		bench_path "$2" "$3"
		return
	fi
	case ${1:-} in
	"") ;;
	-h | --help) sed -n '2,/^set -Eeuo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; return ;;
	*) die "unknown argument '$1' (try --help)" ;;
	esac
	((EUID == 0)) || die "run as root (sudo bash scripts/bench.sh): it makes network namespaces"
	mkdir -p /run/lock
	exec 9>/run/lock/weave-rs-bench.lock
	flock -n 9 || die "another scripts/bench.sh run is in progress (one at a time: they would disturb each other's numbers)"

	local stamp td
	stamp=$(date -u +%Y%m%dT%H%M%SZ)
	td=${CARGO_TARGET_DIR:-$ROOT/target/bench}
	LOGS=${LOGS:-$td/bench-logs/$stamp}
	STATE=$(mktemp -d /tmp/weave-rs-bench.XXXXXX)
	RAW=$LOGS/raw.tsv
	mkdir -p "$LOGS"
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM

	install_deps
	build
	echo "$RAW_HEADER" >"$RAW"
	export BENCH_PREFIX=$P BENCH_STATE=$STATE BENCH_LOGS=$LOGS BENCH_RAW=$RAW WEAVE_RS_BIN=$BIN

	local run path rc failed=0
	for path in $PATHS; do
		declare -F "path_${path//-/_}" >/dev/null || die "unknown path '$path' in BENCH_PATHS"
	done
	for run in $(seq "$RUNS"); do
		for path in $PATHS; do
			say "---- $path (run $run of $RUNS)"
			bash "$SELF" __path "$path" "$run" </dev/null 9>&- &
			CHILD=$!
			rc=0
			wait "$CHILD" || rc=$?
			CHILD=""
			if ((rc != 0)); then
				failed=$((failed + 1))
				local why
				why=$(cat "$STATE/fail-$path-$run" 2>/dev/null || echo "exit $rc, see above")
				say "$path run $run FAILED: $why"
				MODE=$path RUN=$run raw_status FAILED "$why"
			fi
		done
	done
	write_report
	say "done in $((SECONDS - T0)) s; logs in $LOGS"
	((failed == 0)) || die "$failed path(s) failed (see BENCHMARKS.md)"
}

main "$@"
