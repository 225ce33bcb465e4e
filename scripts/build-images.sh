#!/usr/bin/env bash
# Builds the container images the tests use, locally and FROM scratch (these
# machines reach no image registry, so `docker pull` fails):
#
#   weave-rs-test/busybox:latest  Debian's busybox-static, applets in /bin
#                                 (ip, ping, nc, wget, sh, ...)
#   weave-rs-test/redis:latest    Debian's redis-server and redis-cli with the
#                                 shared libraries ldd lists and the dynamic
#                                 loader; runs `redis-server --protected-mode
#                                 no` so other containers can connect
#
# Idempotent: an image whose tag exists is left alone unless FORCE=1. Each
# image built here is then checked (busybox: `ip addr` runs; redis: a second
# container gets PONG from the first over Docker's default bridge); VERIFY=1
# checks existing images too.
#
# Needs a running engine (scripts/docker-up.sh) and the busybox-static,
# redis-server and redis-tools packages (scripts/install-deps.sh).
set -euo pipefail

BUSYBOX_IMAGE=weave-rs-test/busybox:latest
REDIS_IMAGE=weave-rs-test/redis:latest
FORCE=${FORCE:-0}
VERIFY=${VERIFY:-0}

log() { printf 'build-images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Everything this run makes outside the image store: removed on any exit.
ctx_root=
containers=()
cleanup() {
    local c
    for c in "${containers[@]}"; do
        docker rm -f "$c" >/dev/null 2>&1 || true
    done
    [[ -z $ctx_root ]] || rm -rf "$ctx_root"
}
trap cleanup EXIT

docker info >/dev/null 2>&1 || die "no Docker engine answers: run scripts/docker-up.sh"

ctx_root=$(mktemp -d /tmp/weave-rs-images.XXXXXX)

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# want IMAGE: whether to build it (absent, or FORCE=1).
want() {
    if [[ $FORCE == 1 ]]; then
        log "$1: FORCE=1, rebuilding"
        return 0
    fi
    if image_exists "$1"; then
        log "$1: present, skipping (FORCE=1 rebuilds)"
        return 1
    fi
    return 0
}

# The legacy builder (no buildx plugin here) runs RUN steps in a container;
# DOCKER_BUILDKIT=0 says so and keeps the CLI from looking for buildx.
build() {
    local tag=$1 dir=$2 old new
    old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    log "$tag: building"
    DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$dir" >/dev/null 2>"$dir.err" \
        || { cat "$dir.err" >&2; die "$tag: docker build failed"; }
    # A rebuild (FORCE=1) leaves the old image untagged: drop it if unused.
    new=$(docker image inspect -f '{{.Id}}' "$tag")
    if [[ -n $old && $old != "$new" ]]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

# A unique container name (tests running at the same time may call this).
cname() { printf 'weave-rs-imgcheck-%s-%s-%s' "$$" "$1" "$RANDOM"; }

# --- busybox ---------------------------------------------------------------

build_busybox() {
    local dir=$ctx_root/busybox bb
    bb=$(command -v busybox) || die "busybox not found: install busybox-static (scripts/install-deps.sh)"
    # A FROM-scratch image has no libraries: the binary must be static.
    if ldd "$bb" >/dev/null 2>&1; then
        die "$bb is dynamically linked: install busybox-static, not busybox"
    fi
    mkdir -p "$dir"
    cp -L "$bb" "$dir/busybox"
    cat >"$dir/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
CMD ["/bin/sh"]
EOF
    build "$BUSYBOX_IMAGE" "$dir"
}

verify_busybox() {
    local out
    out=$(docker run --rm "$BUSYBOX_IMAGE" ip addr 2>&1) \
        || die "$BUSYBOX_IMAGE: 'ip addr' failed: $out"
    grep -q 'inet 127.0.0.1' <<<"$out" \
        || die "$BUSYBOX_IMAGE: 'ip addr' shows no loopback address: $out"
    log "$BUSYBOX_IMAGE: ok (ip addr runs)"
}

# --- redis -----------------------------------------------------------------

build_redis() {
    local dir=$ctx_root/redis rootfs server cli lib loader
    server=$(command -v redis-server) || die "redis-server not found: install redis-server (scripts/install-deps.sh)"
    cli=$(command -v redis-cli) || die "redis-cli not found: install redis-tools (scripts/install-deps.sh)"
    rootfs=$dir/rootfs
    mkdir -p "$rootfs/usr/bin" "$rootfs/etc" "$rootfs/data" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    # Regular files, not Debian's symlink: redis-server -> redis-check-rdb
    # would start the RDB checker (the program picks its mode by argv[0]).
    cp -L "$server" "$rootfs/usr/bin/redis-server"
    cp -L "$cli" "$rootfs/usr/bin/redis-cli"

    # Every absolute path ldd prints: the libraries and the loader
    # (PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2), each at its own path.
    local -A libs=()
    for bin in "$server" "$cli"; do
        while read -r lib; do
            libs[$lib]=1
        done < <(ldd "$bin" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
    done
    loader=
    for lib in "${!libs[@]}"; do
        [[ -e $lib ]] || die "ldd lists $lib, which does not exist"
        mkdir -p "$rootfs$(dirname "$lib")"
        cp -L "$lib" "$rootfs$lib"
        [[ $lib == */ld-linux* ]] && loader=$lib
    done
    [[ -n $loader ]] || die "ldd listed no dynamic loader for $server"

    # Redis runs as root in the container; getpwuid(0) should still answer.
    printf 'root:x:0:0:root:/data:/usr/bin/redis-server\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' \
        >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

    cat >"$dir/Dockerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
WORKDIR /data
EXPOSE 6379
CMD ["redis-server","--protected-mode","no"]
EOF
    build "$REDIS_IMAGE" "$dir"
}

verify_redis() {
    local server ip out i
    server=$(cname redis)
    containers+=("$server")
    docker run -d --name "$server" "$REDIS_IMAGE" >/dev/null \
        || die "$REDIS_IMAGE: the server container did not start"
    ip=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$server")
    [[ -n $ip ]] || die "$REDIS_IMAGE: server container has no address on the default bridge"
    # The server needs a moment to listen; ask again for up to ~10 s.
    out=
    for ((i = 0; i < 20; i++)); do
        out=$(docker run --rm "$REDIS_IMAGE" redis-cli -h "$ip" ping 2>&1) || true
        [[ $out == PONG ]] && break
        sleep 0.5
    done
    if [[ $out != PONG ]]; then
        log "server log:"
        docker logs "$server" >&2 2>&1 || true
        die "$REDIS_IMAGE: 'redis-cli -h $ip ping' from a second container said: $out"
    fi
    docker rm -f "$server" >/dev/null 2>&1 || true
    log "$REDIS_IMAGE: ok (PONG from $ip across the default bridge)"
}

# --- main ------------------------------------------------------------------

if want "$BUSYBOX_IMAGE"; then
    build_busybox
    verify_busybox
elif [[ $VERIFY == 1 ]]; then
    verify_busybox
fi

if want "$REDIS_IMAGE"; then
    build_redis
    verify_redis
elif [[ $VERIFY == 1 ]]; then
    verify_redis
fi

log "done"
