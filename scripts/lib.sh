# Shared helpers for scripts/test and scripts/quickstart. Sourced, not run.
# shellcheck shell=bash

# Prints a short step banner.
banner() {
    printf '\n==> %s\n' "$*"
}

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "need root to run: $*  (no sudo found; run this script as root or install sudo)" >&2
        return 1
    fi
}

# Installs Debian packages with apt-get, once per script run for the update.
#
# Packages such as mariadb-server try to start their system service from the maintainer
# scripts. Nothing in this project needs that service (tests and the quickstart start their own
# mariadbd in a temporary directory), and in containers starting it fails or hangs. When the
# machine has no /usr/sbin/policy-rc.d, one that denies service starts (exit 101, the Debian
# convention used by container images) is put in place for the duration of the install only.
_apt_updated=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "apt-get not found: install these packages with your system's package manager: $*" >&2
        return 1
    fi
    local added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d'
        added_policy=1
    fi
    local rc=0
    {
        if [ "$_apt_updated" -eq 0 ]; then
            as_root env DEBIAN_FRONTEND=noninteractive apt-get update && _apt_updated=1
        fi &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
    } || rc=$?
    if [ "$added_policy" -eq 1 ]; then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    return "$rc"
}

# Makes sure mariadbd, mariadb, mariadb-admin and mariadb-install-db exist.
# mariadbd lives in /usr/sbin, which a non-root PATH may lack.
ensure_mariadb() {
    case ":$PATH:" in
        *:/usr/sbin:*) ;;
        *) PATH="$PATH:/usr/sbin" ;;
    esac
    if ! command -v mariadbd >/dev/null 2>&1 || ! command -v mariadb >/dev/null 2>&1 ||
        ! command -v mariadb-install-db >/dev/null 2>&1; then
        banner "installing mariadb-server and mariadb-client (apt-get)"
        apt_install mariadb-server mariadb-client
    fi
}

# Makes sure each named command exists, installing the Debian package of the same name if not.
ensure_commands() {
    local missing=()
    local cmd
    for cmd in "$@"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        banner "installing ${missing[*]} (apt-get)"
        apt_install "${missing[@]}"
    fi
}

# Exits with install instructions when cargo is missing.
ensure_cargo() {
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        case ":$PATH:" in
            *":$HOME/.cargo/bin:"*) ;;
            *) PATH="$HOME/.cargo/bin:$PATH" ;;
        esac
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        cat >&2 <<'EOF'
cargo not found. Install the Rust toolchain with rustup:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "$HOME/.cargo/env"

(or see https://rustup.rs), then run this script again.
EOF
        exit 1
    fi
}
