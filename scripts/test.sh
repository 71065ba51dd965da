#!/usr/bin/env bash
# The whole test suite, as the README's quick start runs it and CI runs it:
# the no_std link check, every test of the workspace (unit, integration,
# property, doc, and benches in test mode), the ctgrind constant-time harness
# under valgrind, the Python suite of the UniFFI bindings, and a short fuzz
# smoke run.
# Non-interactive; run from anywhere.
#   FUZZ_SECONDS  scales the fuzz smoke run: 20 (the default) runs each target
#                 for its time in scripts/fuzz.sh, 40 twice as long; 0 skips it
#
# The no_std check, the ctgrind harness's build, the Python virtualenv, the
# binding generation and the fuzz build run in the background at the lowest
# CPU priority while the tests build and run, so they use only what the tests
# leave idle; the steps that need them wait for them (locks). Every step prints its wall time; the summary at the end lists
# them all.
set -euo pipefail

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-always}"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
fuzz_seconds="${FUZZ_SECONDS:-20}"
ctgrind_target="$root/target/ctgrind-build"

started_all=$(date +%s)
summary=()
step() { printf '\n==> %s\n' "$*"; }
# Runs a command as a timed step.
run() {
    step "$*"
    local started=$(date +%s)
    "$@"
    local took=$(($(date +%s) - started))
    printf '==> %ss: %s\n' "$took" "$*"
    summary+=("$(printf '%5ss  %s' "$took" "$*")")
}

if [ "${1:-}" = "--background" ]; then
    # Started with setsid, so in its own scheduling autogroup where the
    # kernel has them: nice alone would not yield to the foreground's group.
    echo 19 >/proc/self/autogroup 2>/dev/null || true
    started=$(date +%s)
    echo "no_std check: cargo build --manifest-path ci/nostd-check/Cargo.toml"
    CARGO_TARGET_DIR="$root/target/nostd-check" \
        cargo build --manifest-path ci/nostd-check/Cargo.toml
    echo "no_std check: $(($(date +%s) - started))s"
    # The ctgrind harness's build (release code generation, its own target
    # dir so that it does not wait for the tests' build lock) and the Python
    # suite's virtualenv, so that their steps below only run.
    started=$(date +%s)
    CARGO_TARGET_DIR="$ctgrind_target" \
        cargo test -p mpc-audit --profile ctgrind --test ctgrind --no-run
    echo "ctgrind build: $(($(date +%s) - started))s"
    started=$(date +%s)
    bash mpc-client-ffi/tests/python/run.sh --prepare-venv
    echo "python virtualenv: $(($(date +%s) - started))s"
    # The binding generator and the Python module: this waits for the tests'
    # build (cargo's lock on target/) and then builds while the tests run.
    started=$(date +%s)
    bash scripts/bindings.sh --profile test --all-features python swift kotlin
    echo "bindings: $(($(date +%s) - started))s"
    if [ "$fuzz_seconds" != "0" ]; then
        started=$(date +%s)
        bash scripts/fuzz.sh build
        echo "fuzz build: $(($(date +%s) - started))s"
    fi
    exit 0
fi
background_pid=""
cleanup() {
    if [ -n "$background_pid" ]; then
        kill -- "-$background_pid" 2>/dev/null || true
        wait "$background_pid" 2>/dev/null || true
    fi
    bash "$root/scripts/postgres.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# mpc-core without default features inside a #![no_std] staticlib with its own
# panic handler: if anything links std, this fails with a duplicate lang item.
# Then the fuzz build (cargo-fuzz installed first when missing).
mkdir -p target
background_log="$root/target/test-background.log"
# Its own process group (setsid), so that cleanup stops cargo and rustc too.
setsid nice -n 19 bash "$root/scripts/test.sh" --background >"$background_log" 2>&1 </dev/null &
background_pid=$!
step "background (nice 19): no_std check, ctgrind build, virtualenv, bindings, fuzz build; log in target/test-background.log"

# A throwaway PostgreSQL for the server's PostgreSQL tests (installed with
# apt-get when missing), stopped again however this script ends.
step "scripts/postgres.sh start"
eval "$(bash scripts/postgres.sh start)"

# nginx for the replica test (mpc-server/tests/integration/replicas.rs), passed as
# MPC_NGINX. When it is missing, scripts/nginx.sh installs it with apt-get in
# the background while the tests build: after the PostgreSQL start, since two
# apt-get runs at once fight over dpkg's lock. The install holds a lock
# (flock) on target/nginx-install.lock until it ends; the test waits on it
# (MPC_NGINX_LOCK), then finds the binary. Log in target/nginx-install.log.
nginx_lock="$root/target/nginx-install.lock"
if MPC_NGINX="$(bash scripts/nginx.sh path)"; then
    export MPC_NGINX
else
    unset MPC_NGINX
    step "background: scripts/nginx.sh install; log in target/nginx-install.log"
    exec 8>"$nginx_lock"
    flock 8
    # The subshell keeps descriptor 8, so the lock, until the install ends;
    # the install itself does not get it (a service it starts would keep it).
    (bash scripts/nginx.sh install 8>&- >"$root/target/nginx-install.log" 2>&1 </dev/null || true) &
    exec 8>&-
    export MPC_NGINX_LOCK="$nginx_lock"
fi

# Every binary and example of the workspace, built together with the tests
# (so with the features the tests resolve; `cargo test --all-targets` builds
# examples only as test harnesses): tests that start one take it as built
# (examples/tests/shared/example_binary.rs) instead of building it again
# under another feature set while the tests run. The test run below then
# builds only the benches and examples in test mode. --lib copies
# mpc-client-ffi's cdylib out of deps/ for the binding generation
# (scripts/bindings.sh builds with this selection, so it has nothing left to
# build).
run cargo build --workspace --all-features --profile test --lib --bins --examples --tests
export MPC_TEST_PREBUILT=1

# nextest runs the test binaries side by side (cargo test runs them one after
# another); plain cargo test where nextest is not installed.
if cargo nextest --version >/dev/null 2>&1; then
    run cargo nextest run --workspace --all-targets --all-features \
        --no-fail-fast --failure-output final
else
    run cargo test --workspace --all-targets --all-features
fi
run cargo test --workspace --doc --all-features
# The Python bindings of mpc-client-ffi against the real server (pytest in a
# virtualenv under target/pyenv); built with the profile and features above,
# so that only the binding generation is new work.
run bash mpc-client-ffi/tests/python/run.sh

# The ctgrind harness (audit/tests/ctgrind.rs, PROTOCOL.md §10): mpc-core's
# secret-dependent code under valgrind, in the `ctgrind` profile (release
# code generation; the test profile runs these tests as ignored). valgrind is
# installed when missing; without it the harness fails, it never skips.
if ! command -v valgrind >/dev/null 2>&1; then
    step "apt-get install valgrind (for the ctgrind harness)"
    # Not while the nginx install above may still hold dpkg's lock.
    if [ -n "${MPC_NGINX_LOCK:-}" ]; then flock "$MPC_NGINX_LOCK" true; fi
    apt-get update -qq && apt-get install -y -qq valgrind
fi
run env CARGO_TARGET_DIR="$ctgrind_target" cargo test -p mpc-audit --profile ctgrind --test ctgrind

bash scripts/postgres.sh stop

step "waiting for the background steps"
started=$(date +%s)
status=0
wait "$background_pid" || status=$?
background_pid=""
cat "$background_log"
summary+=("$(printf '%5ss  %s' "$(($(date +%s) - started))" "waiting for the no_std check and fuzz build")")
if [ "$status" -ne 0 ]; then
    echo "the no_std check or the fuzz build failed (log above)" >&2
    exit 1
fi

if [ "$fuzz_seconds" = "0" ]; then
    step "FUZZ_SECONDS=0: fuzz smoke run skipped"
else
    scale="$(awk -v s="$fuzz_seconds" 'BEGIN { print s / 20 }')"
    run bash scripts/fuzz.sh run "$scale"
fi

step "step times"
printf '%s\n' "${summary[@]}"
printf '%5ss  total\n' "$(($(date +%s) - started_all))"
step "all tests passed"
