#!/usr/bin/env bash
# The Python test suite of the bindings, as scripts/test.sh runs it: builds
# the cdylib, the binding generator and mpc-server with the test command's
# profile and features (so that after the Rust tests nothing is rebuilt),
# generates the Python module, installs pytest and coincurve into a
# virtualenv under target/pyenv (once per requirements.txt), and runs the
# suite, which starts the real server on loopback. Extra arguments go to
# pytest; `--prepare-venv` alone only prepares the virtualenv. Needs python3 (with venv) and pip access to PyPI.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../../.."
target_dir="${CARGO_TARGET_DIR:-target}"

venv="$target_dir/pyenv"
requirements=mpc-client-ffi/tests/python/requirements.txt
# Creates the virtualenv and installs the pins, under a lock: scripts/test.sh
# prepares it in the background (--prepare-venv) while the Rust tests run.
prepare_venv() {
    mkdir -p "$target_dir"
    exec 9>"$target_dir/pyenv.lock"
    flock 9
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    # Reinstalled only when the pins change: a warm run needs no network.
    if ! cmp -s "$requirements" "$venv/requirements.installed"; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
        cp "$requirements" "$venv/requirements.installed"
    fi
    exec 9>&-
}
if [ "${1:-}" = "--prepare-venv" ]; then
    prepare_venv
    exit 0
fi

# Under the test command (MPC_TEST_PREBUILT), its build made the server with
# the tests' features; building it here would resolve them anew and rebuild.
if [ -z "${MPC_TEST_PREBUILT:-}" ] || [ ! -x "$target_dir/debug/mpc-server" ]; then
    cargo build --quiet --profile test --workspace --all-features --bin mpc-server
fi
# All three languages: Swift and Kotlin cannot be compiled here, but their
# generation is checked, and test_generated.py inspects them.
bash scripts/bindings.sh --profile test --all-features
prepare_venv

export MPC_SERVER_BIN="$target_dir/debug/mpc-server"
export MPC_BINDINGS_DIR="$target_dir/bindings"
export PYTHONPATH="$target_dir/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
# Bounded: the suite's own waits are bounded too; this catches a hang in
# the bindings themselves.
exec timeout 600 "$venv/bin/python" -m pytest -p no:cacheprovider -q \
    mpc-client-ffi/tests/python "$@"
