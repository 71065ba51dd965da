#!/usr/bin/env bash
# Throughput of the release mpc-server under examples/loadgen.rs, as a
# fraction of the compute bound measured in the same run (README, "The
# server under load"; PROTOCOL.md §18.5). Loopback only, bounded in time.
#
#   scripts/load.sh                       # everything, 15 s per point
#   scripts/load.sh --seconds 10 --clients "8 64" --backends sqlite
#   MPC_COMPUTE_THREADS=2 scripts/load.sh --no-build   # steps in a pool (A/B)
#
# Options:
#   --seconds N      signing window of each point (default 15)
#   --clients LIST   client counts (default "1 8 64 512")
#   --backends LIST  of sqlite, postgres (fsync=off, the test cluster's
#                    setting), postgres-fsync (fsync=on, synchronous_commit=on)
#                    (default: all three)
#   --loadgen-threads N
#                    the load generator's async workers (default: one per
#                    core); the server's are always one per core
#   --no-build       use the binaries already in target/release
#   --out DIR        keep the raw results (JSON lines) and logs there
#
# 1. Builds mpc-server and loadgen (release profile) unless --no-build.
# 2. Measures the compute bound: `loadgen --compute-bound`, both parties'
#    signing in-process on one thread per core, before and after the load
#    points (the table uses their mean).
# 3. For each backend, starts a fresh server on free loopback ports (SQLite
#    in a temporary directory; PostgreSQL through scripts/postgres.sh in its
#    own temporary cluster, stopped afterwards), then runs loadgen at each
#    client count: every client is its own user, does one keygen, then all
#    sign for the window. The server's CPU (user/system, in cores) is
#    sampled over the signing window.
# 4. Prints one table: backend, clients, signatures/s, fraction of the
#    bound, p50, p99, p99/p50, server CPU, errors, and the 1-minute load
#    average when the point started (the machine's other work shows there).
#
# The server runs with its defaults except MPC_MAX_SESSIONS,
# MPC_MAX_CONNECTIONS_PER_IP, MPC_MAX_UPGRADES_PER_IP and
# MPC_MAX_HALF_OPEN_PER_IP (raised to fit the
# clients, who all connect from 127.0.0.1), MPC_SIGN_RATE_PER_MINUTE (off
# unless set) and logging (warnings only); any other MPC_* variable in the
# environment is passed on (e.g. MPC_COMPUTE_THREADS, or rate limits that
# would otherwise throttle the run).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds=15
clients="1 8 64 512"
backends="sqlite postgres postgres-fsync"
build=1
out=""
loadgen_threads=()

while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --backends) backends="$2"; shift 2 ;;
    --loadgen-threads) loadgen_threads=(--threads "$2"); shift 2 ;;
    --no-build) build=0; shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--seconds N] [--clients LIST] [--backends LIST] [--loadgen-threads N] [--no-build] [--out DIR]" >&2; exit 2 ;;
    esac
done

say() { printf 'load.sh: %s\n' "$*" >&2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/mpc-load.XXXXXX")"
out="${out:-$work}"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
server_pid=""
pg_dir=""

cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -n "$pg_dir" ]; then
        MPC_PGTEST_DIR="$pg_dir" bash "$root/scripts/postgres.sh" stop >/dev/null 2>&1 || true
        rm -rf -- "$pg_dir"
    fi
    if [ "$out" != "$work" ]; then rm -rf -- "$work"; fi
}
trap cleanup EXIT

if [ "$build" = 1 ]; then
    say "building (release)"
    (cd "$root" && cargo build --release --all-features -p mpc-server -p mpc-examples \
        --bin mpc-server --example loadgen >&2)
fi
server_bin="$root/target/release/mpc-server"
loadgen="$root/target/release/examples/loadgen"
[ -x "$server_bin" ] && [ -x "$loadgen" ] || { say "build first (no --no-build)"; exit 1; }

free_port() {
    local port
    while :; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s' "$port"
            return 0
        fi
    done
}

loadavg() { cut -d' ' -f1 /proc/loadavg; }

compute_bound() {
    local label="$1" load
    load="$(loadavg)"
    say "compute bound ($label), load average $load"
    "$loadgen" --compute-bound --seconds "$seconds" 2>/dev/null |
        python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["label"]=sys.argv[1]; d["load"]=float(sys.argv[2]); print(json.dumps(d))' \
            "$label" "$load" >>"$results"
}

most_clients=1
for n in $clients; do [ "$n" -gt "$most_clients" ] && most_clients="$n"; done
jwt_secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
master_key="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s' "$jwt_secret" >"$work/jwt-secret"

start_server() {
    local backend="$1" data="$work/data-$1"
    mkdir -p "$data"
    ws_port="$(free_port)"
    rest_port="$(free_port)"
    local env=(
        MPC_JWT_SECRET="$jwt_secret" MPC_MASTER_KEY="$master_key"
        MPC_DATA_DIR="$data" MPC_WS_ADDR="127.0.0.1:$ws_port" MPC_REST_ADDR="127.0.0.1:$rest_port"
        MPC_MAX_SESSIONS=$((most_clients * 2 + 16)) MPC_LOG=warn
        # Every simulated user signs from 127.0.0.1 as fast as it can: the
        # per-address limits are raised to fit them, and the per-user
        # signing rate limit is off (a real user signs far less often).
        MPC_MAX_UPGRADES_PER_IP=$((most_clients * 2 + 16))
        MPC_MAX_CONNECTIONS_PER_IP=$((most_clients * 2 + 16))
        MPC_MAX_HALF_OPEN_PER_IP=$((most_clients + 16))
        MPC_SIGN_RATE_PER_MINUTE="${MPC_SIGN_RATE_PER_MINUTE:-0}"
    )
    case "$backend" in
    sqlite) ;;
    postgres | postgres-fsync)
        # Outside $work (private to this user): the cluster runs as
        # PostgreSQL's own user when this script runs as root.
        pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/mpc-load-pg.XXXXXX")"
        chmod 0755 "$pg_dir"
        local fsync=off
        [ "$backend" = postgres-fsync ] && fsync=on
        local export_line
        export_line="$(MPC_PGTEST_DIR="$pg_dir" MPC_PGTEST_FSYNC="$fsync" bash "$root/scripts/postgres.sh" start)"
        env+=(MPC_DATABASE_URL="${export_line#export MPC_TEST_POSTGRES_URL=}")
        ;;
    *) say "unknown backend $backend"; exit 2 ;;
    esac
    env "${env[@]}" "$server_bin" >"$out/server-$backend.log" 2>&1 &
    server_pid=$!
    local tries=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$ws_port") 2>/dev/null; do
        tries=$((tries + 1))
        if [ "$tries" -gt 600 ] || ! kill -0 "$server_pid" 2>/dev/null; then
            cat "$out/server-$backend.log" >&2
            say "the server did not start"
            exit 1
        fi
        sleep 0.1
    done
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
    rm -rf -- "$work/data-$1"
    if [ -n "$pg_dir" ]; then
        MPC_PGTEST_DIR="$pg_dir" bash "$root/scripts/postgres.sh" stop >/dev/null 2>&1 || true
        rm -rf -- "$pg_dir"
        pg_dir=""
    fi
}

compute_bound before
for backend in $backends; do
    start_server "$backend"
    for n in $clients; do
        load="$(loadavg)"
        say "$backend, $n clients, ${seconds}s (load average $load)"
        timeout $((seconds + 600)) "$loadgen" --server "ws://127.0.0.1:$ws_port" \
            --clients "$n" --seconds "$seconds" --jwt-secret-file "$work/jwt-secret" \
            --server-pid "$server_pid" "${loadgen_threads[@]}" 2>"$out/loadgen-$backend-$n.log" |
            python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["backend"]=sys.argv[1]; d["load"]=float(sys.argv[2]); print(json.dumps(d))' \
                "$backend" "$load" >>"$results" ||
            say "loadgen failed: $out/loadgen-$backend-$n.log"
    done
    stop_server "$backend"
done
compute_bound after

python3 - "$results" <<'EOF'
import json, os, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
bounds = [r for r in rows if r.get("mode") == "compute_bound"]
bound = sum(b["signatures_per_second"] for b in bounds) / max(len(bounds), 1)
for b in bounds:
    print(f"compute bound ({b['label']}): {b['signatures_per_second']:.0f} signatures/s "
          f"on {b['threads']} threads, load average {b['load']:.2f}")
print(f"compute bound used: {bound:.0f} signatures/s (mean); "
      f"MPC_COMPUTE_THREADS={os.environ.get('MPC_COMPUTE_THREADS', 'default (0, inline)')}")
print()
print("| backend | clients | sig/s | of bound | p50 ms | p99 ms | p99/p50 | server CPU user / sys (cores) | errors | load avg |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    if "backend" not in r:
        continue
    p50, p99 = r["p50_ms"], r["p99_ms"]
    ratio = p99 / p50 if p50 else 0.0
    user, sys_ = r.get("server_cpu_user_cores"), r.get("server_cpu_sys_cores")
    cpu = f"{user:.2f} / {sys_:.2f}" if user is not None else "-"
    print(f"| {r['backend']} | {r['clients']} | {r['signatures_per_second']:.0f} | "
          f"{r['signatures_per_second'] / bound:.0%} | {p50:.1f} | {p99:.1f} | {ratio:.1f} | "
          f"{cpu} | {r['errors']} | {r['load']:.2f} |")
EOF
say "raw results: $results"
