#!/usr/bin/env bash
# Mutation testing of mpc-core's security-critical code with cargo-mutants
# (docs/mutants.md has the method, the last counts and every survivor).
#
#   scripts/mutants.sh [--iterate] [FILE ...]   # files relative to mpc-core/src
#   scripts/mutants.sh --smoke                  # one small file (refresh.rs)
#   scripts/mutants.sh --summary                # counts of the last run
#
# With no FILE, every security-critical file is examined (1,323 mutants,
# 85 minutes on 2 idle cores with MUTANTS_JOBS=2; --iterate then runs only
# the mutants earlier runs missed or timed out on, and new ones). Results go to
# target/mutants-out/mutants.out/ (outcomes.json, caught.txt, missed.txt,
# ...). The tree is mutated in a copy under $TMPDIR, never in place, so the
# checkout stays untouched even if the run is killed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=target/mutants-out
# The files whose checks protect keys, nonces and signatures (issue 17).
critical=(
    hazmat/vole.rs hazmat/gf128.rs hazmat/prg.rs hazmat/ot/*.rs
    sign.rs sign/*.rs keygen.rs refresh.rs backup.rs export.rs keyshare.rs
    derive.rs transcript.rs proof.rs wire.rs wire/*.rs
    schnorr.rs schnorr/*.rs ct.rs
)

summary() {
    local file="$out/mutants.out/outcomes.json"
    [[ -f "$file" ]] || { echo "no results in $out yet" >&2; return 1; }
    python3 - "$file" <<'PY'
import json, sys, collections
outcomes = json.load(open(sys.argv[1]))["outcomes"]
counts = collections.Counter(o["summary"] for o in outcomes if o["scenario"] != "Baseline")
print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
PY
}

command -v cargo-mutants >/dev/null || {
    echo "cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2
    exit 2
}

iterate=()
files=()
case "${1:-}" in
--summary) summary; exit ;;
--smoke) files=(refresh.rs) ;;
--iterate) iterate=(--iterate); shift; files=("$@") ;;
*) files=("$@") ;;
esac
[[ ${#files[@]} -gt 0 ]] || files=("${critical[@]}")

args=()
for f in "${files[@]}"; do
    f="${f#mpc-core/src/}"
    args+=(--file "mpc-core/src/$f")
done

mkdir -p "$out"
started=$(date +%s)
status=0
# MUTANTS_JOBS=2 runs two mutants at once, each in its own copy of the tree
# (on 2 cores it keeps both busy through link steps and test runs).
jobs=(--jobs "${MUTANTS_JOBS:-1}")
cargo mutants --package mpc-core --output "$out" "${jobs[@]}" "${iterate[@]}" "${args[@]}" || status=$?
echo "mutants: $(summary) in $(($(date +%s) - started)) s"
# cargo-mutants exits 2 when a mutant survived, 3 on a timeout, 4 when the
# unmutated tree fails its tests: all are failures of this script.
exit "$status"
