#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the mpc-server storage tests.
#
#   eval "$(scripts/postgres.sh start)"   # starts it (or finds it running) and
#                                         # prints `export MPC_TEST_POSTGRES_URL=...`
#   scripts/postgres.sh stop              # stops it and deletes its files
#   scripts/postgres.sh status            # says whether it runs (exit 0 if so)
#
# The cluster listens on a free loopback port, without TLS, with trust
# authentication for the superuser `mpc` and a database `mpc_test`. It is for
# tests only: fsync is off, so a crash of the machine loses its data.
# MPC_PGTEST_FSYNC=on starts it durable instead (fsync, synchronous_commit
# and full_page_writes on), as a production server runs: for measurements
# (scripts/load.sh).
#
# Its files live in target/pgtest (override with MPC_PGTEST_DIR). The
# PostgreSQL binaries are taken from /usr/lib/postgresql/*/bin (newest
# version), else from `pg_config --bindir`, else PostgreSQL is installed with
# apt-get. When run as root, the cluster runs as the `postgres` system user
# (initdb refuses to run as root).
#
# Only the export line goes to stdout; progress and errors go to stderr and
# the server log to <dir>/postgres.log.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base="${MPC_PGTEST_DIR:-$root/target/pgtest}"
state="$base/state"
user="mpc"
database="mpc_test"

say() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# Runs a command as the cluster's owner: ourselves, or `postgres` when root.
as_owner() {
    if [ "$(id -u)" -ne 0 ]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u postgres -- "$@"
    else
        local quoted
        printf -v quoted '%q ' "$@"
        su postgres -s /bin/sh -c "$quoted"
    fi
}

find_bindir() {
    local dir best
    # The glob sorts lexically (10 < 9); pick the highest version number.
    best="$(
        for dir in /usr/lib/postgresql/*/bin; do
            [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && echo "$dir"
        done | sort -t/ -k5,5n | tail -n 1
    )" || true
    if [ -z "$best" ] && command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            best="$dir"
        fi
    fi
    printf '%s' "$best"
}

install_postgres() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "PostgreSQL is not installed and this user cannot install it (no sudo)"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "PostgreSQL is not installed and apt-get is not available: install PostgreSQL (initdb, pg_ctl) first"
    say "installing PostgreSQL with apt-get"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends postgresql >&2; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends postgresql >&2
    fi
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    local port tries=0
    while [ "$tries" -lt 200 ]; do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        tries=$((tries + 1))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s' "$port"
            return 0
        fi
    done
    die "found no free port on 127.0.0.1"
}

load_state() {
    port=""
    data=""
    bindir=""
    [ -f "$state" ] || return 1
    # The state file is ours: three KEY=value lines written by `start`.
    while IFS='=' read -r key value; do
        case "$key" in
        PORT) port="$value" ;;
        DATA) data="$value" ;;
        BINDIR) bindir="$value" ;;
        esac
    done <"$state"
    [ -n "$port" ] && [ -n "$data" ] && [ -n "$bindir" ]
}

running() {
    [ -n "${data:-}" ] && [ -d "$data" ] && [ -x "$bindir/pg_ctl" ] &&
        as_owner "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1
}

print_export() {
    printf 'export MPC_TEST_POSTGRES_URL=postgres://%s@127.0.0.1:%s/%s\n' \
        "$user" "$port" "$database"
}

remove_files() {
    if [ -n "${data:-}" ] && [ -d "$data" ]; then
        rm -rf -- "$data"
    fi
    rm -rf -- "$base"
}

cmd_stop() {
    if load_state; then
        if running; then
            say "stopping the cluster on port $port"
            as_owner "$bindir/pg_ctl" stop -D "$data" -m fast -w >&2 ||
                say "pg_ctl stop failed; removing the files anyway"
        fi
    fi
    remove_files
    say "stopped (nothing left in $base)"
}

cmd_status() {
    if load_state && running; then
        say "running on port $port (data in $data)"
        print_export
        return 0
    fi
    say "not running"
    return 1
}

cmd_start() {
    if load_state && running; then
        say "already running on port $port"
        print_export
        return 0
    fi
    # A stale state (machine rebooted, files half removed): start over.
    remove_files

    bindir="$(find_bindir)"
    if [ -z "$bindir" ]; then
        install_postgres
        bindir="$(find_bindir)"
        [ -n "$bindir" ] || die "PostgreSQL was installed but initdb/pg_ctl are not found"
    fi

    mkdir -p "$base"
    if [ "$(id -u)" -eq 0 ]; then
        id postgres >/dev/null 2>&1 ||
            die "running as root needs the 'postgres' system user (it comes with the postgresql package)"
        # The cluster runs as `postgres`, which must reach its directory.
        if runuser -u postgres -- test -x "$base" 2>/dev/null ||
            su postgres -s /bin/sh -c "test -x '$base'" 2>/dev/null; then
            data="$base/cluster"
            mkdir -p "$data"
        else
            data="$(mktemp -d "${TMPDIR:-/tmp}/mpc-pgtest.XXXXXX")"
        fi
        chown postgres: "$data"
    else
        data="$base/cluster"
        mkdir -p "$data"
    fi
    chmod 700 "$data"

    say "initdb in $data (binaries: $bindir)"
    if ! as_owner "$bindir/initdb" -D "$data" -U "$user" -A trust \
        -E UTF8 --locale=C >"$base/initdb.log" 2>&1; then
        cat "$base/initdb.log" >&2
        remove_files
        die "initdb failed"
    fi

    local log="$base/postgres.log"
    touch "$log"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$log"; fi

    local attempt
    for attempt in 1 2 3 4 5; do
        port="$(free_port)"
        # Appended on each attempt: the last value of a setting wins.
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "port = $port"
            # TCP only: a socket path under a deep checkout can exceed the
            # 107-byte limit, and pg_ctl -w needs no socket (PostgreSQL 10+).
            echo "unix_socket_directories = ''"
            echo "ssl = off"
            echo "max_connections = 200"
            if [ "${MPC_PGTEST_FSYNC:-off}" = on ]; then
                echo "fsync = on"
                echo "synchronous_commit = on"
                echo "full_page_writes = on"
            else
                echo "fsync = off"
                echo "synchronous_commit = off"
                echo "full_page_writes = off"
            fi
        } | as_owner sh -c "cat >> '$data/postgresql.conf'"
        if as_owner "$bindir/pg_ctl" start -D "$data" -l "$log" -w -t 60 >&2; then
            break
        fi
        say "start on port $port failed (attempt $attempt); see $log"
        port=""
    done
    [ -n "$port" ] || {
        tail -n 20 "$log" >&2 || true
        die "PostgreSQL did not start"
    }

    printf 'PORT=%s\nDATA=%s\nBINDIR=%s\n' "$port" "$data" "$bindir" >"$state"

    if ! as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$database" >&2; then
        die "createdb $database failed"
    fi
    say "running on port $port"
    print_export
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
