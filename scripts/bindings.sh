#!/usr/bin/env bash
# Generates the Swift, Kotlin and Python bindings of mpc-client-ffi from the
# built shared library (UniFFI library mode: the interface is read from the
# library itself, so the bindings always match it). Nothing generated is
# committed. Run from anywhere.
#
#   scripts/bindings.sh [--profile PROFILE] [--all-features] [LANGUAGE...]
#
#   LANGUAGE        swift, kotlin, python (default: all three)
#   --profile       the cargo profile to build with (default: release)
#   --all-features  build as the test command does (`--workspace
#                   --all-features`, and its targets: with dev-dependencies,
#                   whose features change the resolution), so that after
#                   `scripts/test.sh`'s build nothing is rebuilt
#
# Output: target/bindings/<language>/; the shared library is copied next to
# the Python module, which loads it from its own directory. The Swift output
# is a .swift file, a C header and a modulemap for an Xcode target; the
# Kotlin output is the package uniffi/mpc_client_ffi/ for JNA.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=release
features=(-p mpc-client-ffi --features bindgen)
# --lib: a build of the binary alone compiles the cdylib but does not copy
# it out of deps/.
targets=(--lib --bin uniffi-bindgen)
languages=()
while [ $# -gt 0 ]; do
    case "$1" in
        --profile) profile="$2"; shift 2 ;;
        --all-features)
            features=(--workspace --all-features)
            # The test build's exact selection (scripts/test.sh): with only
            # --lib and --bin, cargo resolves features without the
            # dev-dependencies and builds a second variant of many crates.
            targets=(--lib --bins --examples --tests)
            shift ;;
        swift | kotlin | python) languages+=("$1"); shift ;;
        *) echo "usage: $0 [--profile PROFILE] [--all-features] [swift|kotlin|python]..." >&2; exit 2 ;;
    esac
done
[ ${#languages[@]} -gt 0 ] || languages=(swift kotlin python)

target_dir="${CARGO_TARGET_DIR:-target}"
case "$profile" in
    dev | test) out_dir="$target_dir/debug" ;;
    release | bench) out_dir="$target_dir/release" ;;
    *) out_dir="$target_dir/$profile" ;;
esac

# One generation at a time (scripts/test.sh runs one in the background while
# the Python suite's own may start).
mkdir -p "$target_dir"
exec 8>"$target_dir/bindings.lock"
flock 8

cargo build --quiet --profile "$profile" "${features[@]}" "${targets[@]}"

case "$(uname -s)" in
    Darwin) library="$out_dir/libmpc_client_ffi.dylib" ;;
    *) library="$out_dir/libmpc_client_ffi.so" ;;
esac
for language in "${languages[@]}"; do
    dest="$target_dir/bindings/$language"
    rm -rf "$dest"
    mkdir -p "$dest"
    "$out_dir/uniffi-bindgen" generate --library "$library" \
        --language "$language" --out-dir "$dest" >/dev/null
    if [ "$language" = python ]; then
        cp "$library" "$dest/"
    fi
    echo "$language bindings: $dest"
done
