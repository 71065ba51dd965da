#!/usr/bin/env bash
# nginx for the mpc-server replica test (mpc-server/tests/integration/replicas.rs).
#
#   scripts/nginx.sh install   # installs Debian's nginx-light (or nginx) with
#                              # apt-get when no nginx binary is found
#   scripts/nginx.sh path      # prints the nginx binary's path (exit 1 if none)
#
# Nothing is started here: the test writes its own configuration into a
# temporary directory and runs `nginx -p <prefix> -c <conf> -g 'daemon off;'`
# as its child process on loopback addresses, killed when the test ends.
# The package's own service is not used (and is stopped if apt-get started
# it, so that nothing listens on port 80 afterwards).
#
# The binary is looked up as $MPC_NGINX, then `nginx` on PATH, then
# /usr/sbin/nginx. Progress and errors go to stderr.
set -euo pipefail

say() { printf 'nginx.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

find_nginx() {
    if [ -n "${MPC_NGINX:-}" ] && [ -x "$MPC_NGINX" ]; then
        printf '%s' "$MPC_NGINX"
        return 0
    fi
    if command -v nginx >/dev/null 2>&1; then
        command -v nginx
        return 0
    fi
    if [ -x /usr/sbin/nginx ]; then
        printf '%s' /usr/sbin/nginx
        return 0
    fi
    return 1
}

install_nginx() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 ||
            die "nginx is not installed and this user cannot install it (no sudo)"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "nginx is not installed and apt-get is not available: install nginx first"
    say "installing nginx with apt-get"
    # Waits for dpkg's lock rather than failing if another apt-get runs
    # (scripts/test.sh installs this in the background).
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300)
    # Debian 12 has nginx-light; later releases fold it into nginx.
    if ! "${apt[@]}" install -y --no-install-recommends nginx-light >&2 &&
        ! "${apt[@]}" install -y --no-install-recommends nginx >&2; then
        "${apt[@]}" update >&2
        "${apt[@]}" install -y --no-install-recommends nginx-light >&2 ||
            "${apt[@]}" install -y --no-install-recommends nginx >&2
    fi
    # The package may start its service on port 80; the tests do not use it.
    if command -v service >/dev/null 2>&1; then
        "${sudo[@]}" service nginx stop >/dev/null 2>&1 || true
    fi
}

case "${1:-}" in
install)
    if path="$(find_nginx)"; then
        say "found $path"
    else
        install_nginx
        path="$(find_nginx)" || die "nginx was installed but its binary is not found"
        say "installed $path"
    fi
    ;;
path)
    find_nginx || exit 1
    ;;
*)
    echo "usage: $0 install|path" >&2
    exit 2
    ;;
esac
