#!/usr/bin/env bash
# Compatibility checks for the `mariadb` command-line client (libmariadb) through portcullis.
# Connection details come from the COMPAT_* environment variables that scripts/compat sets;
# every check prints `CHECK <name> <PASS|FAIL|NA> <detail>`.
set -uo pipefail

readonly PATTERN="0123456789abcdef"
ok=0

echo "VERSION $(mariadb --version | sed 's/, for .*//')"

# cli PORT USER PASSWORD CERT KEY ARGS...: one client run; output on stdout, errors on stderr.
cli() {
    local port="$1" user="$2" pass="$3" cert="$4" key="$5"
    shift 5
    mariadb --no-defaults --batch -N --connect-timeout=30 --max-allowed-packet=1G \
        -h "$COMPAT_HOST" -P "$port" --protocol=TCP \
        --ssl --ssl-verify-server-cert --ssl-ca="$COMPAT_CA" --ssl-cert="$cert" --ssl-key="$key" \
        -u "$user" -p"$pass" "$COMPAT_DB" "$@"
}
app() {
    cli "$COMPAT_PORT" "$COMPAT_USER" "$COMPAT_PASSWORD" "$COMPAT_CERT" "$COMPAT_KEY" "$@"
}

# report NAME EXPECTED ACTUAL DETAIL: PASS when ACTUAL equals EXPECTED.
report() {
    if [ "$2" = "$3" ]; then
        echo "CHECK $1 PASS $4"
    else
        echo "CHECK $1 FAIL expected [$2], got [$(echo "$3" | tr '\n' ' ' | cut -c1-300)]"
        ok=1
    fi
}

# refused NAME CODE_PREFIX ARGS...: the connection must fail; its message must start with
# CODE_PREFIX (empty: any message).
refused() {
    local name="$1" prefix="$2" out
    shift 2
    if out="$(cli "$@" -e "SELECT 'connected'" 2>&1)"; then
        echo "CHECK $name FAIL connected, but the connection must be refused: $out"
        ok=1
    elif [ -n "$prefix" ] && [[ "$out" != "$prefix"* ]]; then
        echo "CHECK $name FAIL expected [$prefix...], got: $(echo "$out" | tr '\n' ' ')"
        ok=1
    else
        echo "CHECK $name PASS $(echo "$out" | tr '\n' ' ')"
    fi
}

report query "2	app_native@%" "$(app -e 'SELECT 1 + 1, CURRENT_USER()' 2>&1)" \
    "SELECT 1 + 1 = 2 as app_native@%"
report ed25519 "app_ed@%" "$(cli "$COMPAT_PORT" "$COMPAT_ED_USER" "$COMPAT_ED_PASSWORD" \
    "$COMPAT_CERT" "$COMPAT_KEY" -e 'SELECT CURRENT_USER()' 2>&1)" "logged in as app_ed@%"
# The CLI has no client-side prepared statement API: SQL PREPARE/EXECUTE (server-side).
report prepared "42	hé!" "$(app -e "PREPARE s FROM 'SELECT ? + ?, CONCAT(?, ''!'')';
    SET @a = 40, @b = 2, @c = 'hé'; EXECUTE s USING @a, @b, @c" 2>&1)" \
    "SQL PREPARE/EXECUTE with parameters (server-side)"
report transaction "2" "$(app -e "CREATE OR REPLACE TABLE compat_cli (id INT PRIMARY KEY) ENGINE=InnoDB;
    START TRANSACTION; INSERT INTO compat_cli VALUES (1); ROLLBACK;
    START TRANSACTION; INSERT INTO compat_cli VALUES (2); COMMIT;
    SELECT GROUP_CONCAT(id) FROM compat_cli" 2>&1)" \
    "rolled-back row absent, committed row present"
reps=$((COMPAT_BIG_BYTES / ${#PATTERN}))
expected="$(printf "%${reps}s" | sed "s/ /$PATTERN/g" | sha256sum)"
actual="$(app -e "SELECT REPEAT('$PATTERN', $reps)" 2>&1 | tr -d '\n' | sha256sum)"
report big_result "$expected" "$actual" "$COMPAT_BIG_BYTES bytes in one row, content as expected (--max-allowed-packet=1G)"
refused revoked "" "$COMPAT_PORT" "$COMPAT_USER" "$COMPAT_PASSWORD" \
    "$COMPAT_REVOKED_CERT" "$COMPAT_REVOKED_KEY"
refused wrong_password "ERROR 1045 " "$COMPAT_PORT" "$COMPAT_USER" "not-the-password" \
    "$COMPAT_CERT" "$COMPAT_KEY"
refused redirect "ERROR 4196 " "$COMPAT_REDIRECT_PORT" "$COMPAT_USER" "$COMPAT_PASSWORD" \
    "$COMPAT_CERT" "$COMPAT_KEY"
# The CLI has no command that sends COM_CHANGE_USER (`connect` opens a new connection): NA,
# with the commands its `help` lists, as observed through portcullis.
if out="$(app -e help 2>&1)"; then
    commands="$(echo "$out" | awk '$2 ~ /^\(\\.\)$/ { print $1 }' | tr '\n' ' ')"
    if [ -z "$commands" ]; then
        echo "CHECK change_user FAIL no command list in the output of help: $(echo "$out" | tr '\n' ' ' | cut -c1-300)"
        ok=1
    elif echo "$out" | grep -qi 'change.\{0,1\}user'; then
        echo "CHECK change_user FAIL the client now lists a change-user command: extend this check: $commands"
        ok=1
    else
        echo "CHECK change_user NA the mariadb CLI has no change-user command (help lists: ${commands% }; connect opens a new connection)"
    fi
else
    echo "CHECK change_user FAIL help: $(echo "$out" | tr '\n' ' ')"
    ok=1
fi
exit "$ok"
