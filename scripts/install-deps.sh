#!/usr/bin/env bash
# Installs what the test bed needs on a fresh Debian 12 machine.
# Idempotent: a second run installs nothing and exits 0.
set -euo pipefail

log() { printf 'install-deps: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (apt-get install, network namespaces)"
    exit 1
fi

# Debian package -> one command it provides (to tell whether it is present).
declare -A PROVIDES=(
    [iperf3]=iperf3
    [iputils-ping]=ping
    [iputils-arping]=arping
    [tcpdump]=tcpdump
    # iptables also gives ebtables (ebtables-nft), which the Docker
    # plugin uses to keep networks apart.
    [iptables]=iptables
    [netcat-openbsd]=nc.openbsd
    [ethtool]=ethtool
    [busybox-static]=busybox
    [docker.io]=dockerd
    [redis-server]=redis-server
    [redis-tools]=redis-cli
    # DNS tests and scripts/bench-dns.sh: a client, a load generator and a
    # reference server. dnsmasq-base is the binary alone: the dnsmasq
    # package would add a system service answering on port 53.
    [bind9-dnsutils]=dig
    [dnsperf]=dnsperf
    [dnsmasq-base]=dnsmasq
    # The Docker plugin's compose test.
    [docker-compose]=docker-compose
    # The CNI plugin's tests: a real CNI runtime (podman, switched to the
    # CNI backend by the tests' own containers.conf) and the standard
    # plugins (bridge, host-local, ...) in /usr/lib/cni (not in PATH: the
    # check takes a path).
    [podman]=podman
    [containernetworking-plugins]=/usr/lib/cni/bridge
)

missing=()
for pkg in "${!PROVIDES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || ! command -v "${PROVIDES[$pkg]}" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Packages with services (docker.io, redis-server) must not start them:
    # scripts/docker-up.sh starts dockerd, and the tests start their own
    # redis in containers. Docker-built machines already ship a policy-rc.d
    # that refuses; elsewhere, put one in place for the install only.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "system packages already present"
fi

# The demo needs only the packages above (INSTALL_DEPS_TEST_TOOLS=0).
if [[ ${INSTALL_DEPS_TEST_TOOLS:-1} == 0 ]]; then
    log "done (test tools skipped)"
    exit 0
fi

# cargo-fuzz (for scripts/test.sh's fuzz step), built from crates.io.
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
else
    log "cargo-fuzz already present ($(cargo fuzz --version 2>/dev/null))"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest (cargo install cargo-nextest --locked)"
    cargo install cargo-nextest --locked
fi

log "done"
