#!/usr/bin/env bash
# The whole test suite, as the README's quick start runs it and CI runs it:
# the no_std link check, every test of the workspace (unit, integration,
# property, doc, and benches in test mode), and a short fuzz smoke run.
# Non-interactive; run from anywhere.
#   FUZZ_SECONDS  seconds per fuzz target (default 20; 0 skips fuzzing)
set -euo pipefail

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
fuzz_seconds="${FUZZ_SECONDS:-20}"

step() { printf '\n==> %s\n' "$*"; }
run() {
    step "$*"
    "$@"
}

# mpc-core without default features inside a #![no_std] staticlib with its own
# panic handler: if anything links std, this fails with a duplicate lang item.
step "no_std check: CARGO_TARGET_DIR=target/nostd-check cargo build --release --manifest-path ci/nostd-check/Cargo.toml"
CARGO_TARGET_DIR="$root/target/nostd-check" \
    cargo build --release --manifest-path ci/nostd-check/Cargo.toml

# A throwaway PostgreSQL for the server's PostgreSQL tests (installed with
# apt-get when missing), stopped again however this script ends.
step "scripts/postgres.sh start"
eval "$(bash scripts/postgres.sh start)"
cleanup() {
    bash "$root/scripts/postgres.sh" stop >/dev/null 2>&1 || true
    if [ -n "${scratch:-}" ]; then rm -rf "$scratch"; fi
}
trap cleanup EXIT

run cargo test --workspace --all-targets --all-features
run cargo test --workspace --doc --all-features

bash scripts/postgres.sh stop

if [ "$fuzz_seconds" = "0" ]; then
    step "FUZZ_SECONDS=0: fuzz smoke run skipped"
    exit 0
fi
step "fuzz smoke run (${fuzz_seconds}s per target)"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    run cargo install cargo-fuzz --locked
fi
run cargo +nightly fuzz --version

# New inputs go to a scratch corpus; the committed seeds are read-only input.
scratch="$(mktemp -d)"

shopt -s nullglob
targets=(fuzz/fuzz_targets/*.rs)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "no fuzz targets found in fuzz/fuzz_targets/" >&2
    exit 1
fi
for file in "${targets[@]}"; do
    target="$(basename "$file" .rs)"
    corpora=("$scratch/$target")
    mkdir -p "$scratch/$target"
    if [ -d "fuzz/corpus/$target" ]; then
        corpora+=("$root/fuzz/corpus/$target")
    fi
    # -O: optimised build (k256's debug assertions make the curve
    # arithmetic ~8x slower, and the setup targets do a lot of it).
    step "cargo +nightly fuzz run -O $target -- -max_total_time=$fuzz_seconds"
    cargo +nightly fuzz run -O "$target" "${corpora[@]}" -- \
        -max_total_time="$fuzz_seconds"
done

step "all tests passed"
