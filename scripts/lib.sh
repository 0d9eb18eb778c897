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

# --- throwaway servers (scripts/quickstart, scripts/compat) ---------------------------------
# Bounded waits, in tenths of a second (the poll interval).
MARIADB_START_POLLS=600    # 60 s: first start of InnoDB on a slow disk
PORTCULLIS_START_POLLS=300 # 30 s
STOP_POLLS=300             # 30 s for each server to stop after SIGTERM

# show_log FILE: the end of a log, for a failure message.
show_log() {
    echo "---- last lines of $1 ----" >&2
    tail -n 30 "$1" >&2 || true
    echo "----" >&2
}

# stop_process PID NAME: SIGTERM, wait (bounded), then SIGKILL.
stop_process() {
    local pid="$1" name="$2" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < STOP_POLLS; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name (pid $pid) did not stop after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# port_listening HOST PORT: true when something listens on TCP port PORT. Reads /proc (no
# connection, so nothing shows up in portcullis' connection log); falls back to a connect probe
# to HOST elsewhere.
port_listening() {
    local host="$1" hex
    hex="$(printf '%04X' "$2")"
    if [ -r /proc/net/tcp6 ] && [ -r /proc/net/tcp ]; then
        # Columns: sl local_address rem_address st ...; st 0A = LISTEN.
        awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
            /proc/net/tcp6 /proc/net/tcp
    else
        (exec 3<>"/dev/tcp/$host/$2") 2>/dev/null
    fi
}

# start_mariadbd DIR [MARIADBD_ARGS...]: initialises a data directory in DIR and starts a
# mariadbd on the Unix socket DIR/mysqld.sock only (no networking), as the current OS user, who
# can log in as root-equivalent by socket authentication (no password anywhere). Waits until it
# answers; sets MARIADBD_PID. On failure prints the logs and returns 1.
start_mariadbd() {
    local dir="$1" os_user i
    shift
    os_user="$(id -un)"
    MARIADBD_PID=""
    if ! mariadb-install-db --no-defaults --datadir="$dir/data" --user="$os_user" \
        --auth-root-authentication-method=socket --auth-root-socket-user="$os_user" \
        --skip-test-db >"$dir/install-db.log" 2>&1; then
        echo "mariadb-install-db failed" >&2
        show_log "$dir/install-db.log"
        return 1
    fi
    mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" --skip-networking \
        --user="$os_user" --pid-file="$dir/mysqld.pid" --log-error="$dir/mysqld.err" \
        --tmpdir="$dir" --innodb-buffer-pool-size=64M --skip-log-bin "$@" \
        >>"$dir/mysqld.out" 2>&1 &
    MARIADBD_PID=$!
    for ((i = 0; i < MARIADB_START_POLLS; i++)); do
        # ping exits 0 once the server answers, even when it refuses the login.
        if mariadb-admin --no-defaults --socket="$dir/mysqld.sock" --connect-timeout=2 ping \
            >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$MARIADBD_PID" 2>/dev/null; then
            echo "mariadbd exited during startup" >&2
            MARIADBD_PID=""
            show_log "$dir/mysqld.err"
            show_log "$dir/mysqld.out"
            return 1
        fi
        sleep 0.1
    done
    echo "mariadbd did not answer on $dir/mysqld.sock within $((MARIADB_START_POLLS / 10)) s" >&2
    show_log "$dir/mysqld.err"
    return 1
}

# start_portcullis BIN CONFIG LOG HOST PORT: runs `BIN run --config CONFIG` with its log in LOG
# and waits until HOST:PORT listens; sets PORTCULLIS_PID. On failure prints the log, returns 1.
# PORTCULLIS_RUN_AS, when set, is a command prefix that runs it as another OS user (e.g.
# `runuser -u portcullis --`).
PORTCULLIS_RUN_AS=()

# run_as_own_user DIR BIN: portcullis runs as its own OS user, with no MariaDB account of that
# name, as it is deployed: behind a Unix-socket backend, mariadbd's unix_socket plugin trusts
# the socket peer's OS user, which is portcullis's (docs/security.md, "Who the backend thinks
# you are"). As root: creates the system user `portcullis` once, lets it traverse DIR, copies
# BIN into DIR/bin (so that it can run it wherever the build is) and sets PORTCULLIS_RUN_AS; the
# caller gives it the files it must read. Otherwise portcullis runs as you (and warns if your
# user has a MariaDB account that trusts it). Sets PORTCULLIS_BIN to the binary to run.
run_as_own_user() {
    local dir="$1" bin="$2"
    PORTCULLIS_BIN="$bin"
    [ "$(id -u)" = 0 ] || return 0
    if ! id -u portcullis >/dev/null 2>&1; then
        banner "creating the system user portcullis (it runs the proxy; no MariaDB account has its name)"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
            portcullis
    fi
    chmod 711 "$dir"
    install -d -m 0755 "$dir/bin"
    cp "$bin" "$dir/bin/portcullis"
    PORTCULLIS_BIN="$dir/bin/portcullis"
    PORTCULLIS_RUN_AS=(runuser -u portcullis --)
}

start_portcullis() {
    local bin="$1" config="$2" log="$3" host="$4" port="$5" i
    PORTCULLIS_LOG="${PORTCULLIS_LOG:-info}" "${PORTCULLIS_RUN_AS[@]}" "$bin" run \
        --config "$config" --log-format text >"$log" 2>&1 &
    PORTCULLIS_PID=$!
    for ((i = 0; i < PORTCULLIS_START_POLLS; i++)); do
        if ! kill -0 "$PORTCULLIS_PID" 2>/dev/null; then
            echo "portcullis exited during startup" >&2
            PORTCULLIS_PID=""
            show_log "$log"
            return 1
        fi
        if port_listening "$host" "$port"; then
            return 0
        fi
        sleep 0.1
    done
    echo "portcullis did not listen on [$host]:$port within $((PORTCULLIS_START_POLLS / 10)) s" >&2
    show_log "$log"
    return 1
}

# --- MariaDB's own test suite (scripts/mtr) -------------------------------------------------
# Where Debian's mariadb-test package puts mysql-test-run and the suites.
MTR_DIR="${MTR_DIR:-/usr/share/mysql/mysql-test}"

# Makes sure MariaDB's mysql-test-run (Debian package mariadb-test, with mysqltest and the
# test files of the main suite; it pulls in mariadb-server and mariadb-client) and perl exist,
# installing them with apt-get if not. Sets MTR_SCRIPT to the mysql-test-run script.
ensure_mtr() {
    ensure_mariadb
    if ! command -v perl >/dev/null 2>&1 || ! command -v mariadb-test >/dev/null 2>&1 ||
        [ ! -f "$MTR_DIR/mysql-test-run.pl" ]; then
        banner "installing mariadb-test (apt-get)"
        apt_install mariadb-test perl
    fi
    MTR_SCRIPT="$MTR_DIR/mariadb-test-run.pl"
    [ -f "$MTR_SCRIPT" ] || MTR_SCRIPT="$MTR_DIR/mysql-test-run.pl"
    if [ ! -f "$MTR_SCRIPT" ]; then
        echo "mysql-test-run not found in $MTR_DIR after installing mariadb-test" >&2
        return 1
    fi
}

# free_tcp_port HOST: a TCP port on HOST (an IP literal) that nobody listens on right now.
free_tcp_port() {
    python3 - "$1" <<'PY'
import socket, sys
host = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.bind((host, 0))
print(s.getsockname()[1])
PY
}
