#!/usr/bin/env bash
# The whole check, as CI runs it (.ci/run execs this):
#   dependencies, format, lints, build, every test (unit, property and the
#   netns integration tests with real routers), then each fuzz target briefly.
#
# Needs root (network namespaces): as root, run it as written,
# `scripts/test.sh`; from another account, `sudo scripts/test.sh`. It never
# calls sudo itself. Environment knobs:
#   NETNS_TEST_THREADS  how many netns tests run at once (default: the
#                       group limit in scripts/nextest.toml)
#   FUZZ_SECONDS        time per fuzz target (default 10)
#   SKIP_FUZZ=1         skip the fuzz step
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# Namespaces left by netns tests whose process is gone (a test killed by a
# timeout cannot run its guards). Live test processes are left alone.
cleanup_stale_netns() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        [[ $ns =~ ^wrt([0-9]+)x ]] || continue
        pid=${BASH_REMATCH[1]}
        [[ -d /proc/$pid ]] && continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    done
}
tmp_config=
cleanup() {
    cleanup_stale_netns
    [[ -z $tmp_config ]] || rm -f "$tmp_config"
}
trap cleanup EXIT

[[ $(id -u) -eq 0 ]] || die "run as root (from another account: sudo $0): the netns tests make network namespaces"

step "dependencies (scripts/install-deps.sh)"
bash scripts/install-deps.sh

step "docker engine (scripts/docker-up.sh)"
bash scripts/docker-up.sh

step "test images (scripts/build-images.sh)"
bash scripts/build-images.sh

step "cargo fmt --check"
cargo fmt --all -- --check || die "formatting differs: run 'cargo fmt --all'"

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build (target/debug/weave-rs, used by the netns tests)"
cargo build
[[ -x target/debug/weave-rs ]] || die "cargo build did not produce target/debug/weave-rs"

step "cargo nextest run --workspace"
cleanup_stale_netns
nextest_config=$ROOT/scripts/nextest.toml
if [[ -n ${NETNS_TEST_THREADS:-} ]]; then
    [[ $NETNS_TEST_THREADS =~ ^[1-9][0-9]*$ ]] || die "NETNS_TEST_THREADS must be a positive number"
    tmp_config=$(mktemp --suffix=.toml)
    nextest_config=$tmp_config
    sed "s/^max-threads = .*/max-threads = $NETNS_TEST_THREADS/" \
        "$ROOT/scripts/nextest.toml" >"$nextest_config"
fi
cargo nextest run --workspace --no-fail-fast \
    --tool-config-file "weave-rs-tests:$nextest_config"

if [[ ${SKIP_FUZZ:-0} == 1 ]]; then
    step "fuzz: skipped (SKIP_FUZZ=1)"
elif [[ ! -f fuzz/Cargo.toml ]]; then
    step "fuzz: no fuzz/Cargo.toml, nothing to run"
else
    # Targets = the [[bin]] names of fuzz/Cargo.toml.
    if command -v python3 >/dev/null 2>&1; then
        list=$(python3 -c '
import tomllib
with open("fuzz/Cargo.toml", "rb") as f:
    doc = tomllib.load(f)
for b in doc.get("bin", []):
    print(b["name"])
')
    else
        list=$(cargo +nightly fuzz list)
    fi
    targets=()
    [[ -z $list ]] || mapfile -t targets <<<"$list"
    if ((${#targets[@]} == 0)); then
        step "fuzz: fuzz/Cargo.toml lists no targets"
    fi
    for t in "${targets[@]}"; do
        step "fuzz: $t for ${FUZZ_SECONDS:-10} s"
        cargo +nightly fuzz run "$t" -- -max_total_time="${FUZZ_SECONDS:-10}"
    done
fi

step "all checks passed"
