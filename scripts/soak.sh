#!/usr/bin/env bash
# scripts/soak.sh: a long run of three encrypted routers under traffic and
# churn, with faults injected on a schedule; writes the "Soak" section of
# RELIABILITY.md with the figures per minute and a verdict.
#
#   scripts/soak.sh [MINUTES]        as root (default 20; or SOAK_MINUTES)
#
# Testbed (network namespaces named $P-* with P=wrs<pid>): three hosts on one
# switch (a bridge in $P-sw), h1 10.77.0.1, h2 .2, h3 .3, so the underlay is
# a full mesh; a router per host, all with one password (--password-file),
# each launched with the other two addresses. Containers (bare netns):
# c1 10.2.1.1 on h1, c2 .2 on h2, c3 .3 on h3, never detached.
#
# Load, for the whole run:
#   ping      c1->c2, c1->c3, c2->c3, every SOAK_PING_INTERVAL s (0.2 = 5/s)
#   iperf3    c1 -> c2, TCP, SOAK_IPERF_SECS s per run, restarted whenever a
#             run ends or fails (SOAK_IPERF_RATE caps it; default unlimited)
#   churn     every SOAK_CHURN_SECS s (3), on h1, h2, h3 in turn, a new
#             container is attached (10.2.1.20-219) and, beyond 2 per host,
#             the host's oldest one is detached and deleted; each new one
#             pings a pinger container on another host
# Faults:
#   kill      the router on h3: kill -9 at second 15 of every minute from the
#             second on, then `launch` again with the same arguments; its
#             containers must come back by themselves (attached.json)
#   cut       the underlay between h1 and h2 (iptables DROP in h1, both
#             ways) at second 30 of minute 2 and every SOAK_CUT_EVERY (4)
#             minutes after, for 20, 40, 60, 30, 50 s in turn (c1-c2 traffic
#             goes around through h3 meanwhile); always healed before the end
#
# Recorded at the end of every minute, per router: pid, RSS (VmRSS), open
# fds, threads, connections by state and the `report` stats (deltas); per
# pair, pings sent and lost, split into lost inside a fault window and lost
# outside any. A fault window runs from 1 s before a fault to its end plus
# SOAK_GRACE s, for the pairs it touches: a kill touches the pairs of the
# killed host and ends when the router is back with its containers and both
# connections; a cut touches the pair across it and ends when it heals.
# After the last minute: churn stops, and within SOAK_SETTLE s every
# connection must be established.
#
# Verdict (non-zero exit when it fails):
#   - h1 and h2 (never killed) keep their pid and answer every report;
#   - no growth trend in RSS or fds of h1 and h2: after SOAK_WARMUP minutes
#     (5: the MAC table's 300 s expiry, so the churned containers' entries
#     have reached their steady number), the mean of the last third of the
#     samples exceeds that of the first third by at most SOAK_RSS_TOL_PCT %
#     (5) or SOAK_RSS_TOL_MIB (0.5), whichever is larger, and by at most
#     SOAK_FD_TOL (2) fds (needs 3 samples after the warm-up, so a run of
#     8 minutes or more; a shorter one says "not judged");
#   - every relaunched router is back, containers re-attached and both
#     connections established, within SOAK_RECOVER_MAX s (30);
#   - no connection left pending: all established within SOAK_SETTLE s (60)
#     of the end, with no fault active, and still so 5 s later;
#   - loss only during faults: in every minute, each pair loses at most
#     max(1, SOAK_LOSS_PCT % (1)) of the pings it sent outside fault windows;
#   - every attach and detach of the churn succeeds, and every new container
#     reaches another host within 8 s unless a fault window touches the two.
#
# Steps: tools (scripts/install-deps.sh, python3 from apt if missing), the
# release build (cargo build --release, unless WEAVE_RS_BIN is set), the
# run, RELIABILITY.md (only between its soak markers; the fuzz section,
# written by scripts/fuzz.sh, is kept). Logs (pings, iperf3, reports, router
# logs) are kept in target/soak-logs/<UTC time>/. Every namespace and
# process the run makes is removed on exit, on failure and on Ctrl-C.
#
# Environment (defaults in brackets): SOAK_MINUTES [20], SOAK_PING_INTERVAL
# [0.2], SOAK_CHURN_SECS [3], SOAK_CUT_EVERY [4], SOAK_IPERF_SECS [30],
# SOAK_IPERF_RATE [unlimited; e.g. 500M], SOAK_GRACE [5], SOAK_SETTLE [60],
# SOAK_WARMUP [5], SOAK_RSS_TOL_PCT [5], SOAK_RSS_TOL_MIB [0.5],
# SOAK_FD_TOL [2], SOAK_RECOVER_MAX [30], SOAK_LOSS_PCT [1], SOAK_OUT
# [<repo>/RELIABILITY.md], SOAK_LOGS [<repo>/target/soak-logs/<UTC time>],
# WEAVE_RS_BIN (use this binary, no build), WEAVE_RS_ARGS (more `launch`
# arguments for every router).
set -Eeuo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# ---------------------------------------------------------------- settings

usage() { sed -n '2,/^set -Eeuo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; }
die() { printf '[soak] error: %s\n' "$*" >&2; exit 1; }
say() { printf '[soak] %s\n' "$*" >&2; }

case ${1:-} in
-h | --help) usage; exit 0 ;;
esac
MINUTES=${1:-${SOAK_MINUTES:-20}}
[[ $MINUTES =~ ^[1-9][0-9]*$ ]] || die "MINUTES must be a positive whole number, got '$MINUTES' (try --help)"
(($# <= 1)) || die "one argument at most, MINUTES (try --help)"

P=wrs$$ # prefix of every namespace this run makes
PING_INTERVAL=${SOAK_PING_INTERVAL:-0.2}
CHURN_SECS=${SOAK_CHURN_SECS:-3}
CUT_EVERY=${SOAK_CUT_EVERY:-4}
CUT_LENGTHS=(20 40 60 30 50)
IPERF_SECS=${SOAK_IPERF_SECS:-30}
IPERF_RATE=${SOAK_IPERF_RATE:-}
GRACE=${SOAK_GRACE:-5}
SETTLE=${SOAK_SETTLE:-60}
WARMUP=${SOAK_WARMUP:-5}
RSS_TOL_PCT=${SOAK_RSS_TOL_PCT:-5}
RSS_TOL_MIB=${SOAK_RSS_TOL_MIB:-0.5}
FD_TOL=${SOAK_FD_TOL:-2}
RECOVER_MAX=${SOAK_RECOVER_MAX:-30}
LOSS_PCT=${SOAK_LOSS_PCT:-1}
OUT=${SOAK_OUT:-$ROOT/RELIABILITY.md}
for v in CHURN_SECS CUT_EVERY IPERF_SECS GRACE SETTLE WARMUP FD_TOL RECOVER_MAX; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "SOAK_$v must be a whole number, got '${!v}'"
done
for v in PING_INTERVAL RSS_TOL_PCT RSS_TOL_MIB LOSS_PCT; do
    [[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SOAK_$v must be a number, got '${!v}'"
done
((CHURN_SECS > 0 && CUT_EVERY > 0 && IPERF_SECS > 0)) ||
    die "SOAK_CHURN_SECS, SOAK_CUT_EVERY and SOAK_IPERF_SECS must be above 0"
awk "BEGIN { exit !($PING_INTERVAL >= 0.01) }" || die "SOAK_PING_INTERVAL must be 0.01 or more, got '$PING_INTERVAL'"

HOSTS=(1 2 3)
KILLED=3                # the host whose router is killed every minute
CUT_A=1 CUT_B=2         # the underlay cut is between these two hosts
PAIRS=("1 2" "1 3" "2 3") # ping from container a to container b
ul_ip() { echo "10.77.0.$1"; }
ctr_ip() { echo "10.2.1.$1"; }
CHURN_PER_HOST=2   # churn containers kept per host
CHURN_SLOTS=200    # churn addresses 10.2.1.20 .. 10.2.1.219, reused in turn
CHURN_REACH=8      # seconds a new container has to reach another host

STATE=""   # scratch: state dirs, password, helper (removed at exit)
LOGS=""    # kept: everything the analysis reads, router logs
BIN=${WEAVE_RS_BIN:-}

# ---------------------------------------------------------------- helpers

hx() { local h=$1; shift; ip netns exec "$P-h$h" "$@"; }
cx() { local c=$1; shift; ip netns exec "$P-c$c" "$@"; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { local t=${EPOCHREALTIME%.*}; echo $((t - T0S)); }

# wr N ARGS...: weave-rs ARGS in host N, with its own state directory.
wr() {
    local h=$1
    shift
    WEAVE_RS_PLUGIN_SOCKET=off WEAVE_RS_STATE_DIR=$STATE/h$h timeout 60 ip netns exec "$P-h$h" "$BIN" "$@"
}

# q QUERY ARGS... < report: ask the helper about a `report` JSON.
q() { python3 "$STATE/soak.py" q "$@"; }

# event KIND ARGS...: one line of the run's timeline (events.tsv).
event() {
    local IFS=$'\t'
    printf '%s\t%s\n' "$(now)" "$*" >>"$LOGS/events.tsv"
}

# wait_for SECS WHAT CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for: $what"
        sleep 0.2
    done
}

# settled N: router N has exactly 2 connections, both established.
settled() { wr "$1" report | q settled 2; }

# ---------------------------------------------------------------- setup

install_deps() {
    say "tools: scripts/install-deps.sh (iperf3, ping, iptables...)"
    INSTALL_DEPS_TEST_TOOLS=0 bash "$ROOT/scripts/install-deps.sh"
    if ! command -v python3 >/dev/null 2>&1; then
        say "installing python3 (apt-get): the analysis is in Python"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends python3; } >"$LOGS/apt.log" 2>&1 ||
            die "apt-get install python3 failed: $(tail -3 "$LOGS/apt.log")"
    fi
    local t
    for t in ip iperf3 ping iptables python3 timeout setsid flock; do
        command -v "$t" >/dev/null 2>&1 || die "$t is missing (scripts/install-deps.sh should have installed it)"
    done
}

build() {
    # The commit, "-dirty" when files other than the figures differ from it.
    local git=(git -c safe.directory="$ROOT" -C "$ROOT")
    COMMIT=$("${git[@]}" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -z $("${git[@]}" status --porcelain -- . ':!RELIABILITY.md' ':!BENCHMARKS.md' 2>/dev/null) ]] ||
        COMMIT+=-dirty
    if [[ -n $BIN ]]; then
        [[ -x $BIN ]] || die "WEAVE_RS_BIN=$BIN is not an executable"
        BUILT="binary $BIN (WEAVE_RS_BIN), repository at $COMMIT"
        say "using $BIN (WEAVE_RS_BIN; no build)"
        return
    fi
    command -v cargo >/dev/null || die "no cargo on PATH (sudo may reset PATH: try sudo env PATH=\$PATH ...), or set WEAVE_RS_BIN"
    say "building weave-rs (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/weave-rs
    [[ -x $BIN ]] || die "no binary at $BIN after the build"
    BUILT="release build of commit $COMMIT"
    [[ $COMMIT != *-dirty ]] || BUILT+=" (working tree with uncommitted changes)"
}

testbed_up() {
    local n h
    for n in sw h1 h2 h3 c1 c2 c3; do
        [[ ! -e /run/netns/$P-$n ]] || die "namespace $P-$n already exists"
        ip netns add "$P-$n"
        ip -n "$P-$n" link set lo up
    done
    ip -n "$P-sw" link add br0 type bridge forward_delay 0
    ip -n "$P-sw" link set br0 up
    for h in "${HOSTS[@]}"; do
        ip link add "p$h" netns "$P-sw" type veth peer name ul0 netns "$P-h$h"
        ip -n "$P-sw" link set "p$h" master br0 up
        ip -n "$P-h$h" addr add "$(ul_ip "$h")/24" dev ul0
        ip -n "$P-h$h" link set ul0 up
        mkdir -m 700 "$STATE/h$h"
    done
}

# Every namespace of this run: processes killed, namespace deleted.
testbed_down() {
    local ns pid
    for ns in /run/netns/"$P"-*; do
        [[ -e $ns ]] || continue
        ns=${ns#/run/netns/}
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}

launch() {
    local h=$1 peers=() o extra=()
    for o in "${HOSTS[@]}"; do ((o == h)) || peers+=("$(ul_ip "$o")"); done
    # shellcheck disable=SC2206 # WEAVE_RS_ARGS is split on purpose
    [[ -z ${WEAVE_RS_ARGS:-} ]] || extra=($WEAVE_RS_ARGS)
    wr "$h" launch --password-file "$STATE/password" --nickname "h$h" "${extra[@]}" "${peers[@]}" \
        >>"$LOGS/launch-h$h.log" 2>&1
}

# ---------------------------------------------------------------- load

# A steady ping from container a to b, timestamped, with a line for every
# unanswered request (-O); stopped with SIGINT at the end.
PINGS=() # pids of the steady pings (ip netns exec execs ping itself)
LOOPS=() # pids of the iperf3 loops (subshells)
start_pings() {
    local pair a b
    for pair in "${PAIRS[@]}"; do
        read -r a b <<<"$pair"
        ip netns exec "$P-c$a" ping -D -O -n -i "$PING_INTERVAL" "$(ctr_ip "$b")" \
            </dev/null >"$LOGS/ping-c$a-c$b.log" 2>&1 &
        PINGS+=($!)
    done
}

# iperf3 c1 -> c2 for the whole run: a server and a client, each restarted
# whenever it ends or fails (a server stuck on a vanished client restarts
# itself: --idle-timeout); one line per client run in iperf.tsv.
iperf_server_loop() {
    while :; do
        ip netns exec "$P-c2" iperf3 -s -B "$(ctr_ip 2)" --idle-timeout 30 --rcv-timeout 10000 \
            >>"$LOGS/iperf-server.log" 2>&1 || true
        sleep 0.5
    done
}
iperf_client_loop() {
    local start rc why rate=() run=$LOGS/iperf-run.log
    [[ -z $IPERF_RATE ]] || rate=(-b "$IPERF_RATE")
    while :; do
        start=$(now)
        rc=0
        timeout $((IPERF_SECS + 30)) ip netns exec "$P-c1" iperf3 -c "$(ctr_ip 2)" -t "$IPERF_SECS" \
            --connect-timeout 3000 --snd-timeout 10000 "${rate[@]}" >"$run" 2>&1 || rc=$?
        why=""
        ((rc == 0)) || why=$(grep -m1 'iperf3: ' "$run" || echo "exit $rc")
        cat "$run" >>"$LOGS/iperf.log"
        printf '%s\t%s\t%s\t%s\n' "$start" "$(now)" "$rc" "$why" >>"$LOGS/iperf.tsv"
        sleep 0.5
    done
}
start_iperf() {
    iperf_server_loop </dev/null &
    LOOPS+=($!)
    wait_for 10 "the iperf3 server in c2" cx 2 sh -c 'ss -ltn | grep -q ":5201 "'
    iperf_client_loop </dev/null &
    LOOPS+=($!)
}

# Churn: attach a new container on the next host; beyond CHURN_PER_HOST,
# detach and delete that host's oldest one. Each new container pings a
# pinger container on another host (background); its result is collected
# when it is detached.
declare -A CHURN_ON=()   # host -> names of its churn containers, oldest first
declare -A CHURN_PING=() # name -> pid of its reachability ping
CHURN_N=0
churn_step() {
    local h=$((CHURN_N % 3 + 1)) k=$((CHURN_N % CHURN_SLOTS)) name addr rc out
    CHURN_N=$((CHURN_N + 1))
    name=$P-x$k
    addr=$(ctr_ip $((20 + k)))
    # A slot still in use (only with far more containers per host than slots).
    [[ ! -e /run/netns/$name ]] || return 0
    ip netns add "$name"
    ip -n "$name" link set lo up
    rc=0
    out=$(wr "$h" attach "$addr/24" "/var/run/netns/$name" 2>&1) || rc=$?
    churn_log "$h" attach "$name" "$rc" "$out"
    if ((rc != 0)); then
        ip netns del "$name" 2>/dev/null || true
    else
        CHURN_ON[$h]+="$name "
        local other=$((h % 3 + 1))
        setsid ip netns exec "$name" ping -n -c 1 -w "$CHURN_REACH" "$(ctr_ip "$other")" </dev/null >/dev/null 2>&1 &
        CHURN_PING[$name]=$!
    fi
    # shellcheck disable=SC2206 # the list is space-separated names
    local on=(${CHURN_ON[$h]:-})
    ((${#on[@]} > CHURN_PER_HOST)) || return 0
    churn_remove "$h" "${on[0]}"
}

# churn_remove H NAME: collect NAME's ping, detach it from host H, delete it.
churn_remove() {
    local h=$1 name=$2 rc=0 out pid=${CHURN_PING[$2]:-}
    if [[ -n $pid ]]; then
        wait "$pid" 2>/dev/null || rc=$?
        churn_log "$h" reach "$name" "$rc" ""
        unset "CHURN_PING[$name]"
    fi
    rc=0
    out=$(wr "$h" detach "/var/run/netns/$name" 2>&1) || rc=$?
    churn_log "$h" detach "$name" "$rc" "$out"
    ip netns del "$name" 2>/dev/null || true
    CHURN_ON[$h]=${CHURN_ON[$h]/"$name "/}
}

churn_log() {
    local detail=${5//[$'\t\n']/ }
    printf '%s\th%s\t%s\t%s\t%s\t%s\n' "$(now)" "$1" "$2" "$3" "$4" "$detail" >>"$LOGS/churn.tsv"
}

# ---------------------------------------------------------------- faults

# kill -9 the router of host H, launch it again, wait until it is back:
# every container it had attached re-attached, both connections established.
kill_relaunch() {
    local h=$1 pid targets=() name deadline t_kill
    pid=$(wr "$h" report | q pid) || { event kill-skipped "h$h" "no report"; return 0; }
    targets=("/var/run/netns/$P-c$h")
    # shellcheck disable=SC2206 # the list is space-separated names
    local on=(${CHURN_ON[$h]:-})
    for name in "${on[@]}"; do targets+=("/var/run/netns/$name"); done
    cat "$STATE/h$h/router.log" >>"$LOGS/router-h$h.log" 2>/dev/null || true
    t_kill=$SECONDS
    kill -9 "$pid"
    event kill "h$h" "$pid"
    until gone "$pid"; do
        ((SECONDS - t_kill < 10)) || { event relaunch-failed "h$h" "pid $pid survived kill -9"; return 0; }
        sleep 0.05
    done
    if ! launch "$h"; then
        event relaunch-failed "h$h" "launch failed: $(tail -1 "$LOGS/launch-h$h.log")"
        return 0
    fi
    deadline=$((SECONDS + RECOVER_MAX + 30))
    until wr "$h" report 2>/dev/null | q ready 2 "${targets[@]}" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            event ready "h$h" "timeout" "$(wr "$h" report 2>/dev/null | q states || true)"
            return 0
        fi
        sleep 0.1
    done
    event ready "h$h" "ok"
}

# gone PID: the process has exited, all its threads too (its lock and
# sockets are closed), though it may not be reaped yet.
gone() {
    [[ ! -e /proc/$1 ]] && return 0
    local tasks=(/proc/"$1"/task/*)
    grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null && ((${#tasks[@]} <= 1))
}

underlay_cut() {
    local op=$1 b
    b=$(ul_ip "$CUT_B")
    hx "$CUT_A" iptables -w "$op" INPUT -s "$b" -j DROP
    hx "$CUT_A" iptables -w "$op" OUTPUT -d "$b" -j DROP
}

# ---------------------------------------------------------------- sampling

# sample LABEL: per router pid, RSS, fds, threads and its report; the bytes
# c2 has received (iperf3 throughput).
sample() {
    local m=$1 h pid rss anon thr fds rep t
    for h in "${HOSTS[@]}"; do
        t=$(now)
        rep=$LOGS/reports/$m-h$h.json
        pid=- rss=- anon=- thr=- fds=-
        if wr "$h" report >"$rep" 2>"$rep.err" && pid=$(q pid <"$rep"); then
            rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo -)
            anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo -)
            thr=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo -)
            fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        else
            rep=-
        fi
        [[ -s $LOGS/reports/$m-h$h.json.err ]] || rm -f "$LOGS/reports/$m-h$h.json.err"
        printf '%s\t%s\th%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$m" "$t" "$h" "$pid" "${rss:--}" "${anon:--}" "${thr:--}" "$fds" "$rep" \
            >>"$LOGS/samples.tsv"
    done
    printf '%s\t%s\t%s\n' "$m" "$(now)" "$(cx 2 cat /sys/class/net/ethwe/statistics/rx_bytes 2>/dev/null || echo -)" \
        >>"$LOGS/rx.tsv"
}

# ---------------------------------------------------------------- the run

run() {
    local h a b pair
    head -c 24 /dev/urandom | base64 >"$STATE/password"
    chmod 600 "$STATE/password"
    say "testbed: hosts $P-h1..3 on switch $P-sw, containers $P-c1..3"
    testbed_up
    say "launching three routers with one password"
    for h in "${HOSTS[@]}"; do launch "$h" || die "launch on h$h failed: $(tail -3 "$LOGS/launch-h$h.log")"; done
    for h in "${HOSTS[@]}"; do wait_for 60 "h$h connected to both others" settled "$h"; done
    for h in "${HOSTS[@]}"; do
        wr "$h" attach "$(ctr_ip "$h")/24" "/var/run/netns/$P-c$h" >/dev/null ||
            die "attach c$h on h$h failed"
    done
    for pair in "${PAIRS[@]}"; do
        read -r a b <<<"$pair"
        wait_for 30 "c$a reaches c$b" cx "$a" ping -n -c 1 -W 1 "$(ctr_ip "$b")"
    done

    # The schedule, in seconds from the start.
    local end=$((MINUTES * 60)) m kills=() cuts=() i=0 s len
    for ((m = 2; m <= MINUTES; m++)); do kills+=($(((m - 1) * 60 + 15))); done
    for ((m = 2; m <= MINUTES; m += CUT_EVERY)); do
        s=$(((m - 1) * 60 + 30))
        len=${CUT_LENGTHS[i++ % ${#CUT_LENGTHS[@]}]}
        ((s + len <= end - 10)) || len=$((end - 10 - s)) # heal before the end
        if ((len >= 20)); then cuts+=("$s $len"); fi
    done
    {
        echo "minutes=$MINUTES"
        echo "ping_interval=$PING_INTERVAL"
        echo "churn_secs=$CHURN_SECS"
        echo "churn_reach=$CHURN_REACH"
        echo "grace=$GRACE"
        echo "settle=$SETTLE"
        echo "warmup=$WARMUP"
        echo "rss_tol_pct=$RSS_TOL_PCT"
        echo "rss_tol_mib=$RSS_TOL_MIB"
        echo "fd_tol=$FD_TOL"
        echo "recover_max=$RECOVER_MAX"
        echo "loss_pct=$LOSS_PCT"
        echo "iperf_secs=$IPERF_SECS"
        echo "iperf_rate=${IPERF_RATE:-unlimited}"
        echo "killed=h$KILLED"
        echo "cut=h$CUT_A h$CUT_B"
        echo "cut_every=$CUT_EVERY"
        echo "cuts=${cuts[*]/ /+}"
        echo "pairs=${PAIRS[*]/ /-}"
        echo "extra_args=${WEAVE_RS_ARGS:-}"
    } >>"$LOGS/settings.txt"

    say "soaking for $MINUTES min: pings, iperf3, churn every ${CHURN_SECS}s, kill -9 h$KILLED every minute, ${#cuts[@]} underlay cut(s) h$CUT_A-h$CUT_B"
    start_pings
    start_iperf
    T0S=${EPOCHREALTIME%.*}
    echo "t0=$T0S" >>"$LOGS/settings.txt"
    event start
    sample 0
    local next_sample=60 next_churn=$CHURN_SECS ki=0 ci=0 heal_at=-1 el
    while ((next_sample <= end)); do
        el=$(elapsed)
        if ((el >= next_sample)); then
            sample $((next_sample / 60))
            say "minute $((next_sample / 60)) of $MINUTES done"
            next_sample=$((next_sample + 60))
        elif ((heal_at >= 0 && el >= heal_at)); then
            underlay_cut -D
            event heal "h$CUT_A" "h$CUT_B"
            heal_at=-1
        elif ((ci < ${#cuts[@]})) && ((el >= ${cuts[ci]% *})); then
            underlay_cut -A
            event cut "h$CUT_A" "h$CUT_B"
            heal_at=$((el + ${cuts[ci]#* }))
            ci=$((ci + 1))
        elif ((ki < ${#kills[@]})) && ((el >= kills[ki])); then
            kill_relaunch "$KILLED"
            ki=$((ki + 1))
        elif ((el >= next_churn)); then
            churn_step
            next_churn=$((el + CHURN_SECS))
        else
            sleep 0.2
        fi
    done
    if ((heal_at >= 0)); then # only if the loop ran late
        underlay_cut -D
        event heal "h$CUT_A" "h$CUT_B"
    fi

    say "end of the schedule: churn containers detached, then up to ${SETTLE}s for every connection to be established"
    for h in "${HOSTS[@]}"; do
        # shellcheck disable=SC2206 # the list is space-separated names
        local on=(${CHURN_ON[$h]:-})
        for a in "${on[@]}"; do churn_remove "$h" "$a"; done
    done
    event settle-start
    local t_settle=$SECONDS took outcome=timeout
    while ((SECONDS - t_settle < SETTLE)); do
        if settled 1 && settled 2 && settled 3; then outcome=ok; break; fi
        sleep 0.5
    done
    took=$((SECONDS - t_settle))
    if [[ $outcome == ok ]]; then # and still so a little later: not a flap
        sleep 5
        settled 1 && settled 2 && settled 3 || outcome=unstable
    fi
    event settled "$outcome" "$took"
    sample end
    for h in "${HOSTS[@]}"; do
        printf 'h%s\t%s\n' "$h" "$(wr "$h" report 2>/dev/null | q states || echo 'no report')" >>"$LOGS/final.tsv"
    done
    stop_load
    event stop
}

# Stops the load: the iperf3 loops and their iperf3, then the pings with
# SIGINT (they print their last lines).
stop_load() {
    local pid c
    for pid in "${LOOPS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    LOOPS=()
    for c in 1 2; do
        [[ -e /run/netns/$P-c$c ]] || continue
        for pid in $(ip netns pids "$P-c$c" 2>/dev/null); do
            [[ " ${PINGS[*]} " == *" $pid "* ]] || kill -TERM "$pid" 2>/dev/null || true
        done
    done
    for pid in "${PINGS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for pid in "${PINGS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PINGS=()
}

# ---------------------------------------------------------------- RELIABILITY.md

# replace_section NAME FILE BODY (RELIABILITY.md's sections).
# shellcheck source=scripts/reliability-section.sh
source "$ROOT/scripts/reliability-section.sh"

machine() {
    local cpu mem
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    {
        echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
        echo "machine=$(nproc) cores (${cpu:-unknown CPU}), $mem, kernel $(uname -r)"
        echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo "built=$BUILT"
        echo "version=$("$BIN" --version 2>/dev/null | head -1)"
        echo "logs=${LOGS#"$ROOT"/}"
    } >>"$LOGS/settings.txt"
}

# ---------------------------------------------------------------- main

# shellcheck disable=SC2317 # run by the traps
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_load
    testbed_down
    [[ -z $STATE ]] || rm -rf "$STATE"
    ((rc == 0)) || say "stopped (exit $rc); namespaces $P-* removed${LOGS:+; logs in $LOGS}"
    exit "$rc"
}

main() {
    ((EUID == 0)) || die "run as root (from another account: sudo $0): it makes network namespaces"
    mkdir -p /run/lock
    exec 9>/run/lock/weave-rs-soak.lock
    flock -n 9 || die "another scripts/soak.sh run is in progress (one at a time: they would disturb each other's figures)"
    local stamp
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    STATE=$(mktemp -d /tmp/weave-rs-soak.XXXXXX)
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    LOGS=${SOAK_LOGS:-$ROOT/target/soak-logs/$stamp}
    mkdir -p "$LOGS/reports"
    write_helper
    install_deps
    build
    machine
    run
    for h in "${HOSTS[@]}"; do cat "$STATE/h$h/router.log" >>"$LOGS/router-h$h.log" 2>/dev/null || true; done
    testbed_down

    say "analysing"
    local rc=0
    python3 "$STATE/soak.py" analyse "$LOGS" >"$LOGS/section.md" || rc=$?
    ((rc == 0 || rc == 3)) || die "the analysis failed (exit $rc); logs in $LOGS"
    replace_section soak "$OUT" "$LOGS/section.md"
    say "wrote the Soak section of $OUT; logs in $LOGS"
    sed -n '/^### Verdict/,/^### /p' "$LOGS/section.md" | sed '1d;$d' >&2
    ((rc == 0)) || die "the verdict is FAIL (see $OUT)"
}

# The Python half (exit 3: the verdict is FAIL; others: it broke): queries on `report` JSON during the run, and the analysis
# of the logs at the end (per-minute tables, fault attribution, verdict).
write_helper() {
    cat >"$STATE/soak.py" <<'PYTHON'
import json
import math
import os
import re
import sys
from collections import defaultdict


def q(args):
    try:
        r = json.load(sys.stdin)
    except ValueError:
        sys.exit(1)  # no report (the router did not answer): a failed query
    conns = r.get("connections") or []
    what = args[0]
    if what == "pid":
        print(r["router"]["pid"])
    elif what == "states":
        print(" ".join(f"{c.get('addr')}={c.get('state')}" for c in conns) or "no connections")
    elif what == "settled":  # exactly N connections, all established
        n = int(args[1])
        ok = len(conns) == n and all(c.get("state") == "established" for c in conns)
        sys.exit(0 if ok else 1)
    elif what == "ready":  # N established, and every target given attached
        n = int(args[1])
        est = sum(c.get("state") == "established" for c in conns)
        have = {a.get("target") for a in r.get("attached") or []}
        missing = [t for t in args[2:] if t not in have]
        sys.exit(0 if est >= n and not missing else 1)
    else:
        sys.exit(f"unknown query {what}")


# ---------------------------------------------------------------- analysis

# A ping sent this long before a fault may lose its reply to it.
SLACK = 1.0
VOLUME = ["frames_from_tap", "frames_to_tap", "datagrams_received", "datagrams_relayed"]


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def ping_log(path, interval):
    """Per ping request: (send time, answered). Send times of answered
    requests are reply time - rtt; the others are interpolated between
    them (ping sends at a steady interval)."""
    seen = {}
    maxu = 0
    pat = re.compile(r"^\[(\d+\.\d+)\] (.*icmp_seq=(\d+).*)$")
    with open(path, errors="replace") as f:
        for line in f:
            m = pat.match(line.strip())
            if not m:
                continue
            ts, text, s = float(m.group(1)), m.group(2), int(m.group(3))
            # 16-bit sequence numbers: take the value nearest the largest seen
            u = s + 65536 * round((maxu - s) / 65536)
            maxu = max(maxu, u)
            e = seen.setdefault(u, [None, False])
            if " bytes from " in text and "DUP!" not in text:
                rtt = re.search(r"time=([\d.]+) ms", text)
                e[1] = True
                e[0] = ts - (float(rtt.group(1)) / 1000 if rtt else 0)
    if not seen:
        return []
    last = max(seen)
    known = sorted((u, e[0]) for u, e in seen.items() if e[1])
    if not known:
        return []
    out = []
    j = 0
    for u in range(1, last + 1):
        while j + 1 < len(known) and known[j + 1][0] <= u:
            j += 1
        (u0, t0) = known[j]
        if j + 1 < len(known) and u > u0:
            (u1, t1) = known[j + 1]
            t = t0 + (t1 - t0) * (u - u0) / (u1 - u0)
        else:
            t = t0 + (u - u0) * interval
        out.append((t, u in seen and seen[u][1]))
    # The last requests had no time to be answered before ping stopped.
    cut = max(3, int(2 / interval))
    return out[:-cut] if len(out) > cut else []


def mean(xs):
    return sum(xs) / len(xs)


def slope(points):
    n = len(points)
    if n < 2:
        return 0.0
    mx = mean([x for x, _ in points])
    my = mean([y for _, y in points])
    d = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / d if d else 0.0


def mmss(secs):
    secs = max(0, int(round(secs)))
    return f"{secs // 60}:{secs % 60:02d}"


def analyse(logs):
    cfg = {}
    with open(os.path.join(logs, "settings.txt")) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            cfg[k] = v
    minutes = int(cfg["minutes"])
    t0 = float(cfg["t0"])
    interval = float(cfg["ping_interval"])
    grace = float(cfg["grace"])
    warmup = int(cfg["warmup"])
    killed = cfg["killed"]
    cut_hosts = set(cfg["cut"].split())
    pairs = [tuple(f"c{x}" for x in p.split("-")) for p in cfg["pairs"].split()]

    def host_of(c):
        return "h" + c[1:]

    def minute_of(t):
        return int((t - t0) // 60) + 1

    events = read_tsv(os.path.join(logs, "events.tsv"))
    # Fault windows: (start, end, hosts it touches, kind, text for the table)
    windows = []
    kills = []  # (t_kill, t_ready or None, host, outcome)
    pending_kill = None
    cut_start = None
    settle = None
    problems = []
    for ev in events:
        t, kind, args = float(ev[0]), ev[1], ev[2:]
        if kind == "kill":
            pending_kill = (t, args[0])
        elif kind == "ready" and pending_kill:
            tk, h = pending_kill
            kills.append((tk, t if args[1] == "ok" else None, h, args[1]))
            if args[1] != "ok":
                problems.append(f"{h} not back {t - tk:.0f} s after kill -9 at {mmss(tk - t0)}: {' '.join(args[2:])}")
            pending_kill = None
        elif kind == "relaunch-failed":
            h = args[0]
            tk = pending_kill[0] if pending_kill else t
            kills.append((tk, None, h, "failed"))
            problems.append(f"{h}: relaunch at {mmss(t - t0)} failed: {' '.join(args[1:])}")
            pending_kill = None
        elif kind == "kill-skipped":
            problems.append(f"{args[0]}: no report at {mmss(t - t0)}, so no kill")
        elif kind == "cut":
            cut_start = t
        elif kind == "heal" and cut_start is not None:
            windows.append((cut_start - SLACK, t + grace, set(args[:2]), "cut",
                            f"cut {args[0]}-{args[1]} {mmss(cut_start - t0)}-{mmss(t - t0)}"))
            cut_start = None
        elif kind == "settled":
            settle = (args[0], float(args[1]))
    run_end = t0 + minutes * 60
    for tk, tr, h, outcome in kills:
        end = (tr if tr else run_end) + grace
        back = f"back in {tr - tk:.1f} s" if tr else f"NOT BACK ({outcome})"
        windows.append((tk - SLACK, end, {h}, "kill", f"kill -9 {h} at {mmss(tk - t0)}, {back}"))

    def touches(w, ha, hb):
        """Whether fault window w disturbs traffic between hosts ha and hb."""
        if w[3] == "cut":
            return w[2] == {ha, hb}
        return bool(w[2] & {ha, hb})

    # ---- pings
    loss = {}  # (pair, minute) -> [sent, lost, sent outside, lost outside]
    settle_loss = {}
    for a, b in pairs:
        path = os.path.join(logs, f"ping-{a}-{b}.log")
        mine = [w for w in windows if touches(w, host_of(a), host_of(b))]
        for t, ok in ping_log(path, interval) if os.path.exists(path) else []:
            inside = any(w[0] <= t <= w[1] for w in mine)
            m = minute_of(t)
            if m > minutes:
                cell = settle_loss.setdefault((a, b), [0, 0, 0, 0])
            elif m >= 1:
                cell = loss.setdefault(((a, b), m), [0, 0, 0, 0])
            else:
                continue
            cell[0] += 1
            cell[1] += not ok
            if not inside:
                cell[2] += 1
                cell[3] += not ok

    # ---- samples
    samples = defaultdict(dict)  # label -> host -> dict
    hosts = []
    for row in read_tsv(os.path.join(logs, "samples.tsv")):
        label, t, h, pid, rss, anon, thr, fds, rep = row
        if h not in hosts:
            hosts.append(h)
        report = None
        if rep != "-" and os.path.exists(rep):
            try:
                with open(rep) as f:
                    report = json.load(f)
            except ValueError:
                report = None
        samples[label][h] = {
            "t": float(t),
            "pid": pid,
            "rss": int(rss) if rss.isdigit() else None,
            "anon": int(anon) if anon.isdigit() else None,
            "thr": int(thr) if thr.isdigit() else None,
            "fds": int(fds) if fds.isdigit() else None,
            "report": report,
        }
    labels = ["0"] + [str(m) for m in range(1, minutes + 1)] + ["end"]

    def stats(s):
        return ((s or {}).get("report") or {}).get("stats") or {}

    def conns(s):
        cs = ((s or {}).get("report") or {}).get("connections") or []
        est = sum(c.get("state") == "established" for c in cs)
        pend = sum(c.get("state") == "pending" for c in cs)
        return est, pend, len(cs) - est - pend

    # ---- traffic and churn per minute
    rx = {r[0]: (float(r[1]), int(r[2])) for r in read_tsv(os.path.join(logs, "rx.tsv")) if r[2].isdigit()}
    iperf_runs = read_tsv(os.path.join(logs, "iperf.tsv"))
    churn = read_tsv(os.path.join(logs, "churn.tsv"))
    churn_min = defaultdict(lambda: [0, 0, 0, 0, 0])  # attach, detach, errors, reached, pinged
    churn_errors = []
    unreached = []  # new containers that did not reach another host, outside faults
    attached_at = {}
    reach = float(cfg["churn_reach"])
    for t, h, op, name, rc, detail in (r + [""] * (6 - len(r)) for r in churn):
        t = float(t)
        if op == "reach":  # logged at the detach; counted at the attach
            t = attached_at.get(name, t)
        m = min(max(minute_of(t), 1), minutes + 1)
        c = churn_min[m]
        if op in ("attach", "detach"):
            c[0 if op == "attach" else 1] += 1
            if rc != "0":
                c[2] += 1
                churn_errors.append(f"{op} {name} on {h} at {mmss(t - t0)}: {detail or 'exit ' + rc}")
            elif op == "attach":
                attached_at[name] = t
        elif op == "reach":
            c[4] += 1
            c[3] += rc == "0"
            other = f"h{int(h[1:]) % 3 + 1}"
            if rc != "0" and not any(x[0] <= t + reach and x[1] >= t and touches(x, h, other)
                                     for x in windows):
                unreached.append(f"{name} on {h} at {mmss(t - t0)}")

    out = []
    w = out.append

    # ---- verdict
    checks = []  # (ok or None for not judged, text)
    long_lived = [h for h in hosts if h != killed]
    for h in long_lived:
        pids = {samples[l][h]["pid"] for l in labels if h in samples.get(l, {})}
        missing = [l for l in labels if samples.get(l, {}).get(h, {}).get("report") is None]
        ok = len(pids) == 1 and "-" not in pids and not missing
        checks.append((ok, f"{h} ran the whole time (pid {', '.join(sorted(pids))})"
                       + (f"; no report at sample(s) {', '.join(missing)}" if missing else "")))
    judged = [str(m) for m in range(warmup + 1, minutes + 1)]
    for h in long_lived:
        for key, name in (("rss", "RSS"), ("fds", "fds")):
            pts = [(int(l), samples[l][h][key]) for l in judged
                   if h in samples.get(l, {}) and samples[l][h][key] is not None]
            if len(pts) < 3:
                checks.append((None, f"{h} {name} trend not judged: {len(pts)} sample(s) after the "
                               f"{warmup}-minute warm-up, 3 needed (run at least {warmup + 3} minutes)"))
                continue
            third = max(1, len(pts) // 3)
            first = mean([y for _, y in pts[:third]])
            last = mean([y for _, y in pts[-third:]])
            sl = slope(pts)
            if key == "rss":
                tol = max(first * float(cfg["rss_tol_pct"]) / 100, float(cfg["rss_tol_mib"]) * 1024)
                ok = last - first <= tol
                checks.append((ok, f"{h} RSS: first third {first / 1024:.1f} MiB, last third "
                               f"{last / 1024:.1f} MiB ({(last - first) / 1024:+.1f}, tolerance "
                               f"+{tol / 1024:.1f}); slope {sl:+.0f} KiB/min"))
            else:
                tol = float(cfg["fd_tol"])
                ok = last - first <= tol
                checks.append((ok, f"{h} fds: first third {first:.1f}, last third {last:.1f} "
                               f"({last - first:+.1f}, tolerance +{tol:g}); slope {sl:+.2f}/min"))
    rmax = float(cfg["recover_max"])
    slow = [k for k in kills if k[1] is None or k[1] - k[0] > rmax]
    times = [k[1] - k[0] for k in kills if k[1] is not None]
    checks.append((not slow and not problems,
                   f"{len(kills)} kill -9 of {killed}, back (containers re-attached, both connections "
                   f"established) in {min(times):.1f}-{max(times):.1f} s, limit {rmax:g} s" if times and not slow
                   else f"{len(kills)} kill -9 of {killed}: {len(slow)} not back within {rmax:g} s"
                   + (f" ({'; '.join(problems)})" if problems else "")))
    if settle is None:
        checks.append((False, "the end of the run was not reached (no settle check)"))
    else:
        final = {r[0]: r[1] for r in read_tsv(os.path.join(logs, "final.tsv"))}
        states = "; ".join(f"{h}: {s}" for h, s in sorted(final.items()))
        if settle[0] == "ok":
            text = (f"no connection left pending: every router had its 2 connections established "
                    f"{settle[1]:.0f} s after the end (limit {cfg['settle']} s), and 5 s later")
        elif settle[0] == "unstable":
            text = (f"connections all established {settle[1]:.0f} s after the end, but not 5 s "
                    f"later: {states}")
        else:
            text = f"connections NOT all established {settle[1]:.0f} s after the end: {states}"
        checks.append((settle[0] == "ok", text))
    pct = float(cfg["loss_pct"])
    bad = []
    lost_out = sent_out = lost_in = sent_in = 0
    for (pair, m), (s, l, so, lo) in sorted(loss.items()):
        lost_out += lo
        sent_out += so
        lost_in += l - lo
        sent_in += s - so
        if lo > max(1, math.floor(so * pct / 100)):
            bad.append(f"{pair[0]}->{pair[1]} minute {m}: {lo} of {so}")
    checks.append((not bad and sent_out > 0,
                   f"loss outside fault windows: {lost_out} of {sent_out} pings "
                   f"(limit per pair and minute: max(1, {pct:g} %)); inside: {lost_in} of {sent_in}"
                   + (f"; over the limit: {', '.join(bad)}" if bad else "")))
    nch = sum(c[0] + c[1] for c in churn_min.values())
    checks.append((not churn_errors and nch > 0,
                   f"churn: {sum(c[0] for c in churn_min.values())} attach and "
                   f"{sum(c[1] for c in churn_min.values())} detach, {len(churn_errors)} failed"
                   + (f" ({'; '.join(churn_errors[:5])})" if churn_errors else "")))
    checks.append((not unreached,
                   f"new containers reaching another host within {reach:g} s: "
                   f"{sum(c[3] for c in churn_min.values())} of {sum(c[4] for c in churn_min.values())}, "
                   f"{len(unreached)} failed outside fault windows"
                   + (f" ({', '.join(unreached[:5])})" if unreached else "")))
    failed = [c for c in checks if c[0] is False]
    verdict = "FAIL" if failed else ("PASS" if all(c[0] for c in checks) else "PASS (trend not judged)")

    w(f"Run of {cfg['date']}: {minutes} minutes, {cfg['built']} ({cfg['version']}).")
    if minutes < 20:
        w("")
        w(f"**A {minutes}-minute run, shorter than the 20 minutes the figures are meant for.**")
    w("")
    w(f"Machine: {cfg['machine']}; load average at the start {cfg['load']} (shared machine).")
    w("")
    w("### Verdict")
    w("")
    w(f"**{verdict}**")
    w("")
    for ok, text in checks:
        w(f"- {'pass' if ok else ('FAIL' if ok is False else 'not judged')}: {text}")
    w("")

    # ---- setup text
    cuts = [x for x in windows if x[3] == "cut"]
    w("### How")
    w("")
    w("Three hosts (network namespaces) on one switch, a router each, launched with "
      "`--password-file` and the other two addresses"
      + (f" and `{cfg['extra_args']}`" if cfg.get("extra_args") else "")
      + f"; a container (bare netns) on each: c1, c2, c3. For the whole run: ping "
      f"{', '.join(a + '->' + b for a, b in pairs)} every {interval:g} s; iperf3 c1 -> c2 "
      f"({cfg['iperf_secs']} s runs, restarted when they end or fail; rate {cfg['iperf_rate']}); "
      f"churn: every {cfg['churn_secs']} s a container attached on h1, h2, h3 in turn and the "
      f"host's oldest beyond 2 detached, each new one pinging another host's container. Faults: "
      f"`kill -9` of {killed}'s router at second 15 of every minute from the second, launched again "
      f"with the same arguments; the underlay between {' and '.join(sorted(cut_hosts))} cut "
      f"(iptables DROP) {len(cuts)} time(s), at second 30 of every {cfg['cut_every']}th minute from the second.")
    w("")
    w(f"A lost ping is charged to a fault when it was sent inside a fault window that touches "
      f"its pair: a kill touches the pairs of the killed host from {SLACK:g} s before the kill "
      f"until the router is back, plus {grace:g} s; a cut touches the pair across it from "
      f"{SLACK:g} s before the cut until it healed, plus {grace:g} s. Samples are taken at the "
      f"end of each minute; RSS and fds trends are judged on the routers never killed, after a "
      f"{warmup}-minute warm-up (the MAC table forgets a MAC after 300 s, so the churned "
      f"containers' entries reach their steady number only then). Logs: `{cfg['logs']}`.")
    w("")

    # ---- per-minute table: faults, loss, traffic
    w("### Per minute: faults, ping loss, traffic")
    w("")
    w("Loss: lost/sent, and (n) lost outside any fault window. iperf3: Mbit/s received by c2 "
      "in the minute, and client runs that ended (failed). Churn: attached/detached (failed), "
      "new containers that reached another host by ping.")
    w("")
    head = ["min", "faults"] + [f"{a}->{b}" for a, b in pairs] + ["iperf3 Mbit/s (runs)", "churn", "reached"]
    w("| " + " | ".join(head) + " |")
    w("|" + "|".join([" ---: ", " --- "] + [" ---: "] * (len(head) - 2)) + "|")

    def loss_cell(c):
        if not c:
            return "-"
        s, l, so, lo = c
        return f"{l}/{s}" + (f" ({lo})" if lo else "")

    for m in range(1, minutes + 1):
        lo, hi = t0 + (m - 1) * 60, t0 + m * 60
        faults = [x[4] for x in windows if x[0] + SLACK < hi and x[1] - grace >= lo]
        prev, cur = rx.get(str(m - 1)), rx.get(str(m))
        mbit = "-"
        if prev and cur and cur[1] >= prev[1] and cur[0] > prev[0]:
            mbit = f"{(cur[1] - prev[1]) * 8 / (cur[0] - prev[0]) / 1e6:.0f}"
        runs = [r for r in iperf_runs if lo <= float(r[1]) < hi]
        fails = sum(r[2] != "0" for r in runs)
        c = churn_min[m]
        w(f"| {m} | {'; '.join(faults) or '-'} | "
          + " | ".join(loss_cell(loss.get((p, m))) for p in pairs)
          + f" | {mbit} ({len(runs)}{f', {fails} failed' if fails else ''}) | {c[0]}/{c[1]}"
          + (f" ({c[2]})" if c[2] else "") + f" | {c[3]}/{c[4]} |")
    c = churn_min[minutes + 1]
    w(f"| end | settle, churn containers detached | "
      + " | ".join(loss_cell(settle_loss.get(p)) for p in pairs) + f" | - | {c[0]}/{c[1]}"
      + (f" ({c[2]})" if c[2] else "") + f" | {c[3]}/{c[4]} |")
    w("")

    # ---- per-minute table: routers
    w("### Per minute, per router: resources, connections, counters")
    w("")
    w("Sampled at the end of each minute (0 = the start). RSS: VmRSS, and in brackets its "
      "anonymous part (heap; the rest is mostly the binary's pages). MACs: MAC table entries. "
      "Connections: established/pending/other "
      "(connecting, retrying). Counters: deltas of `report` stats since the previous sample "
      "(since the start of the router when it was relaunched in between, marked *); "
      "only non-zero ones besides the four traffic counters.")
    w("")
    w("| min | router | pid | RSS MiB (anon) | fds | threads | conns | MACs | from TAP | to TAP | datagrams in | relayed | other counters |")
    w("| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    totals = defaultdict(lambda: defaultdict(int))
    for i, l in enumerate(labels):
        for h in hosts:
            s = samples.get(l, {}).get(h)
            if not s:
                continue
            prev = samples.get(labels[i - 1], {}).get(h) if i > 0 else None
            cur = stats(s)
            restarted = prev is not None and prev["pid"] != s["pid"]
            base = {} if restarted or prev is None else stats(prev)
            d = {k: v - base.get(k, 0) for k, v in cur.items() if isinstance(v, int)}
            if i > 0 and s.get("report"):
                for k, v in d.items():
                    totals[h][k] += v
            est, pend, other = conns(s)
            mark = "*" if restarted else ""
            vol = [f"{d.get(k, 0)}{mark}" if i > 0 and s.get("report") else "-" for k in VOLUME]
            rest = ", ".join(f"{k} +{v}" for k, v in sorted(d.items()) if v and k not in VOLUME) if i > 0 else ""
            rss = f"{s['rss'] / 1024:.1f}" if s["rss"] is not None else "-"
            if s["anon"] is not None:
                rss += f" ({s['anon'] / 1024:.1f})"
            macs = (s.get("report") or {}).get("mac_table_entries", "-")
            w(f"| {l} | {h} | {s['pid']} | {rss} | {s['fds'] if s['fds'] is not None else '-'} | "
              f"{s['thr'] if s['thr'] is not None else '-'} | "
              + (f"{est}/{pend}/{other}" if s.get("report") else "no report")
              + f" | {macs} | {' | '.join(vol)} | {rest or '-'} |")
    w("")
    w("### Counters over the whole run")
    w("")
    keys = sorted({k for h in hosts for k, v in totals[h].items() if v})
    w("| counter | " + " | ".join(hosts) + " |")
    w("| --- |" + " ---: |" * len(hosts))
    for k in keys:
        w(f"| {k} | " + " | ".join(str(totals[h].get(k, 0)) for h in hosts) + " |")
    w("")
    fails = defaultdict(int)
    for r in iperf_runs:
        if r[2] != "0":
            fails[r[3] if len(r) > 3 and r[3] else "exit " + r[2]] += 1
    w(f"iperf3: {len(iperf_runs)} client runs ended, {sum(fails.values())} of them failed"
      + (": " + "; ".join(f"{n} x {why}" for why, n in sorted(fails.items())) if fails else "")
      + ".")
    print("\n".join(out))
    return 3 if failed else 0


if __name__ == "__main__":
    if sys.argv[1] == "q":
        q(sys.argv[2:])
    elif sys.argv[1] == "analyse":
        sys.exit(analyse(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} q QUERY... | analyse LOGDIR")
PYTHON
}

main "$@"; exit # (on one line: bash reads a running script as it goes)
