#!/usr/bin/env bash
# Runs every fuzz target (the [[bin]] names of fuzz/Cargo.toml, as
# scripts/test.sh lists them) for SECONDS each, and prints a markdown table:
# target, seconds, executions (libFuzzer's stat::number_of_executed_units)
# and crashes (new files in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [SECONDS]      # default 600 per target
#
# Environment knobs:
#   FUZZ_RUNS=N        also stop a target after N executions (libFuzzer's
#                      -runs), e.g. 10000000: fast targets end early
#   FUZZ_JOBS=N        targets fuzzed at once (default: the number of cores)
#   FUZZ_SANITIZER=S   cargo fuzz's --sanitizer (default address; none runs
#                      several times faster, with Rust's own checks and
#                      debug assertions still on)
#
# Needs the nightly toolchain and cargo-fuzz. Exits non-zero when a target
# crashed or did not run; each target's full output is kept in a log
# directory named at the end. The table, with the machine, date and commit,
# also replaces the "Fuzz" section of RELIABILITY.md (between its
# <!-- fuzz:begin --> and <!-- fuzz:end --> markers; the "Soak" section,
# written by scripts/soak.sh, is kept). FUZZ_OUT=path writes another file,
# FUZZ_OUT=- none.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

die() { printf 'fuzz.sh: %s\n' "$*" >&2; exit 1; }

# replace_section NAME FILE BODY (RELIABILITY.md's sections).
# shellcheck source=scripts/reliability-section.sh
source "$ROOT/scripts/reliability-section.sh"

secs=${1:-600}
[[ $secs =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive whole number, got '$secs'"
runs=${FUZZ_RUNS:-}
[[ -z $runs || $runs =~ ^[1-9][0-9]*$ ]] || die "FUZZ_RUNS must be a positive whole number, got '$runs'"
parallel=${FUZZ_JOBS:-$(nproc)}
[[ $parallel =~ ^[1-9][0-9]*$ ]] || die "FUZZ_JOBS must be a positive whole number, got '$parallel'"
sanitizer=${FUZZ_SANITIZER:-address}
[[ $sanitizer =~ ^[a-z]+$ ]] || die "FUZZ_SANITIZER must be a cargo fuzz sanitizer name, got '$sanitizer'"
fuzz_opts=(--sanitizer "$sanitizer")
limits=(-max_total_time="$secs")
[[ -z $runs ]] || limits+=(-runs="$runs")
[[ -f fuzz/Cargo.toml ]] || die "no fuzz/Cargo.toml"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    die "cargo +nightly fuzz is not available (install the nightly toolchain and cargo-fuzz)"

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
((${#targets[@]} > 0)) || die "fuzz/Cargo.toml lists no targets"

logs=$(mktemp -d "${TMPDIR:-/tmp}/weave-rs-fuzz.XXXXXX")
printf 'fuzz.sh: building %d targets (sanitizer %s)\n' "${#targets[@]}" "$sanitizer" >&2
cargo +nightly fuzz build "${fuzz_opts[@]}" >"$logs/build.log" 2>&1 ||
    die "cargo +nightly fuzz build failed: see $logs/build.log"

# The artifact files (crashes, OOMs, timeouts, leaks) of target $1.
artifacts() {
    local dir=fuzz/artifacts/$1
    [[ -d $dir ]] || return 0
    find "$dir" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'oom-*' \
        -o -name 'timeout-*' -o -name 'leak-*' \) | sort
}

# fuzz_one TARGET: fuzzes it, then writes its table row to $logs/TARGET.row
# and, when it crashed or did not run, the reason to $logs/TARGET.failed.
fuzz_one() {
    local t=$1 before log start rc ran execs new crashes wall
    before=$(artifacts "$t")
    log=$logs/$t.log
    start=$SECONDS
    rc=0
    cargo +nightly fuzz run "${fuzz_opts[@]}" "$t" -- "${limits[@]}" -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    wall=$((SECONDS - start))
    # libFuzzer's own count of the time it fuzzed ("Done N runs in S
    # second(s)"), else the wall clock.
    ran=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    new=$(comm -13 <(printf '%s\n' "$before") <(artifacts "$t") | sed '/^$/d')
    crashes=0
    [[ -z $new ]] || crashes=$(printf '%s\n' "$new" | wc -l)
    if ((rc != 0 || crashes > 0)) || [[ -z $execs ]]; then
        printf '%s\n' "$t (exit $rc; log $log${new:+; artifacts: ${new//$'\n'/ }})" >"$logs/$t.failed"
        ((crashes > 0)) || crashes="? (exit $rc)"
    fi
    printf '| %s | %s | %s | %s |\n' "$t" "${ran:-$wall}" "${execs:-?}" "$crashes" >"$logs/$t.row"
    printf 'fuzz.sh: %s done: %s executions in %s s\n' "$t" "${execs:-?}" "${ran:-$wall}" >&2
}

for t in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= parallel)); do
        wait -n || true
    done
    printf 'fuzz.sh: %s for up to %s s%s\n' "$t" "$secs" "${runs:+ or $runs executions}" >&2
    fuzz_one "$t" &
done
wait

rows=()
failed=()
for t in "${targets[@]}"; do
    rows+=("$(cat "$logs/$t.row" 2>/dev/null || printf '| %s | ? | ? | ? (no result) |' "$t")")
    if [[ -f $logs/$t.failed ]]; then
        failed+=("$(cat "$logs/$t.failed")")
    elif [[ ! -f $logs/$t.row ]]; then
        failed+=("$t (no result)")
    fi
done

table=$logs/table.md
{
    printf '| target | seconds | executions | crashes |\n'
    printf '| --- | ---: | ---: | ---: |\n'
    printf '%s\n' "${rows[@]}"
} >"$table"
printf '\n'
cat "$table"

out=${FUZZ_OUT:-$ROOT/RELIABILITY.md}
if [[ $out != - ]]; then
    # The commit, "-dirty" when files other than the figures differ from it.
    git=(git -c safe.directory="$ROOT" -C "$ROOT")
    commit=$("${git[@]}" rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -z $("${git[@]}" status --porcelain -- . ':!RELIABILITY.md' ':!BENCHMARKS.md' 2>/dev/null) ]] ||
        commit+=-dirty
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    {
        # shellcheck disable=SC2016 # the backquotes are markdown
        printf 'Run of %s: every target of `fuzz/` for up to %s s%s, %s at once, sanitizer %s (`%sscripts/fuzz.sh %s`), commit %s, %s.\n\n' \
            "$(date -u '+%Y-%m-%d %H:%M UTC')" "$secs" "${runs:+ or $runs executions}" "$parallel" "$sanitizer" \
            "${runs:+FUZZ_RUNS=$runs }FUZZ_JOBS=$parallel FUZZ_SANITIZER=$sanitizer " "$secs" "$commit" \
            "$(cargo +nightly --version 2>/dev/null || echo 'cargo +nightly')"
        printf 'Machine: %s cores (%s), %s, kernel %s.\n\n' "$(nproc)" "${cpu:-unknown CPU}" "$mem" "$(uname -r)"
        if ((${#failed[@]} > 0)); then
            printf '**%d target(s) crashed or did not run**: %s.\n\n' "${#failed[@]}" "${failed[*]}"
        else
            printf 'No crashes.\n\n'
        fi
        cat "$table"
    } >"$logs/section.md"
    replace_section fuzz "$out" "$logs/section.md"
    printf 'fuzz.sh: wrote the Fuzz section of %s\n' "$out" >&2
fi
printf '\nfuzz.sh: logs in %s\n' "$logs" >&2
if ((${#failed[@]} > 0)); then
    printf 'fuzz.sh: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
