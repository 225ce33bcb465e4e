#!/usr/bin/env bash
# Makes sure a Docker engine answers on this machine.
# Idempotent: when `docker info` already works it does nothing. Otherwise it
# starts dockerd detached from this shell (setsid; log in /var/log/dockerd.log)
# and waits until `docker info` answers, up to DOCKER_UP_TIMEOUT seconds
# (default 60). On failure it prints the end of the log and exits 1.
#
# Needs docker.io installed (scripts/install-deps.sh) and root.
set -euo pipefail

LOG=/var/log/dockerd.log
TIMEOUT=${DOCKER_UP_TIMEOUT:-60}

log() { printf 'docker-up: %s\n' "$*" >&2; }
fail() {
    log "$*"
    if [[ -f $LOG ]]; then
        log "last lines of $LOG:"
        tail -n 40 "$LOG" >&2 || true
    fi
    exit 1
}

if docker info >/dev/null 2>&1; then
    log "engine already running"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || fail "must run as root to start dockerd"
command -v dockerd >/dev/null 2>&1 || fail "dockerd not found: run scripts/install-deps.sh (docker.io)"

# Two callers at once (parallel CI steps) must not both start an engine.
exec 9>/var/run/docker-up.lock
flock 9

# A dockerd may be running but not answering yet (another caller started it a
# moment ago): start a second one only when none is alive.
if pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd already started, waiting for it"
else
    # A socket left by a dead engine would make `docker info` fail forever
    # and dockerd refuse to start: remove it (nothing listens on it).
    rm -f /var/run/docker.sock /var/run/docker.pid
    log "starting dockerd (log: $LOG)"
    (setsid dockerd >"$LOG" 2>&1 </dev/null 9>&- &)  # 9>&-: the engine must not hold the lock
fi

started=$SECONDS
deadline=$((SECONDS + TIMEOUT))
until docker info >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
        fail "engine did not answer within ${TIMEOUT} s"
    fi
    # (after a grace period: setsid may not have exec'd dockerd yet)
    if ((SECONDS - started >= 2)) && ! pgrep -x dockerd >/dev/null 2>&1; then
        fail "dockerd exited"
    fi
    sleep 0.5
done
log "engine ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
