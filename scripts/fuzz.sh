#!/usr/bin/env bash
# The fuzz smoke run of the test suite, in two steps that CI overlaps with
# other work:
#
#   scripts/fuzz.sh build        installs cargo-fuzz when missing, then builds
#                                every target once (`cargo fuzz build -O`)
#   scripts/fuzz.sh run [SCALE]  builds if needed, then runs every target from
#                                its committed seeds, two at a time
#
# Each target runs for its own time (the table below) times SCALE (default 1;
# FUZZ_SECONDS=N in scripts/test.sh sets SCALE = N / 20): the cheap decoders
# get less than the targets that do curve arithmetic on every input. Long
# campaigns are in fuzz/HOWTO.md.
#
# `build` holds a lock (target/fuzz-build.lock), so a second `build` or a
# `run` started while a background build is going waits for it instead of
# building the same thing twice. Non-interactive; run from anywhere.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

# Seconds per target at SCALE 1, from the executions per second in
# fuzz/HOWTO.md: a few seconds replay a decoder's seeds and explore
# thousands of inputs; the curve-heavy targets (tens of inputs per second
# under AddressSanitizer) need longer for the same coverage of their seeds.
declare -A base_seconds=(
    [envelope_decode]=8
    [keyshare_decode]=8
    [ws_opening]=8
    [rest_bodies]=8
    [ot_extension]=10
    [rvole]=15
    [base_ot]=20
    [ot_setup]=20
    [backup_verify]=20
    [protocol_rounds]=30
)

say() { printf '==> %s\n' "$*"; }

build() {
    mkdir -p "$root/target"
    exec 9>"$root/target/fuzz-build.lock"
    flock 9
    if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        say "cargo install cargo-fuzz --locked"
        cargo install cargo-fuzz --locked
    fi
    say "cargo +nightly fuzz build -O (every target)"
    (cd "$root/fuzz" && cargo +nightly fuzz build -O)
    flock -u 9
}

# Runs one target; its output goes to a log that is printed when it ends.
run_target() {
    local target="$1" seconds="$2" scratch="$3"
    local binary="$root/fuzz/target/x86_64-unknown-linux-gnu/release/$target"
    local corpora=("$scratch/$target")
    mkdir -p "$scratch/$target"
    if [ -d "$root/fuzz/corpus/$target" ]; then
        corpora+=("$root/fuzz/corpus/$target")
    fi
    # Crash inputs go to fuzz/artifacts/<target>/, as with `cargo fuzz run`.
    mkdir -p "$root/fuzz/artifacts/$target"
    "$binary" -artifact_prefix="$root/fuzz/artifacts/$target/" \
        -max_total_time="$seconds" "${corpora[@]}" >"$scratch/$target.log" 2>&1
}

run() {
    local scale="${1:-1}"
    build
    local scratch
    scratch="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$scratch'" EXIT
    shopt -s nullglob
    local files=("$root"/fuzz/fuzz_targets/*.rs)
    if [ "${#files[@]}" -eq 0 ]; then
        echo "no fuzz targets found in fuzz/fuzz_targets/" >&2
        exit 1
    fi
    local failed=0 running=() names=()
    for file in "${files[@]}"; do
        local target seconds
        target="$(basename "$file" .rs)"
        if [ -z "${base_seconds[$target]:-}" ]; then
            echo "fuzz target $target has no time in scripts/fuzz.sh" >&2
            exit 1
        fi
        seconds="$(awk -v s="${base_seconds[$target]}" -v k="$scale" \
            'BEGIN { t = int(s * k + 0.5); print (t < 1 ? 1 : t) }')"
        say "fuzz $target for ${seconds}s"
        run_target "$target" "$seconds" "$scratch" &
        running+=("$!")
        names+=("$target")
        # Two at a time: one per core.
        if [ "${#running[@]}" -ge 2 ]; then
            wait_first || failed=1
        fi
    done
    while [ "${#running[@]}" -gt 0 ]; do
        wait_first || failed=1
    done
    if [ "$failed" -ne 0 ]; then
        echo "a fuzz target failed: see its log above and fuzz/artifacts/" >&2
        exit 1
    fi
    say "fuzz smoke run passed"
}

# Waits for the oldest running target, prints its log's summary; fails if
# the target did.
wait_first() {
    local pid="${running[0]}" target="${names[0]}" status=0
    running=("${running[@]:1}")
    names=("${names[@]:1}")
    wait "$pid" || status=$?
    local log="$scratch/$target.log"
    if [ "$status" -ne 0 ]; then
        echo "---- $target failed (exit $status) ----" >&2
        cat "$log" >&2
        return 1
    fi
    # The last status line: runs, coverage, executions per second.
    printf '%s: %s\n' "$target" "$(grep -E '^#[0-9]+' "$log" | tail -n 1)"
}

case "${1:-}" in
build) build ;;
run) run "${2:-1}" ;;
*)
    echo "usage: scripts/fuzz.sh build | run [SCALE]" >&2
    exit 2
    ;;
esac
