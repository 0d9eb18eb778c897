"""Compatibility checks for PyMySQL and mysqlclient (MySQLdb) through portcullis.

Usage: check.py pymysql|mysqlclient. Connection details come from the COMPAT_* environment
variables that scripts/compat sets; every check prints one line
`CHECK <name> <PASS|FAIL|NA> <detail>` (the format shared by all connectors' checks).
"""

import os
import sys

ENV = os.environ
PATTERN = "0123456789abcdef"
BIG = PATTERN * (int(ENV["COMPAT_BIG_BYTES"]) // len(PATTERN))


def driver(name):
    """Returns (module, connect(user, password, port, cert, key), error_code(exc), version)."""
    if name == "pymysql":
        import pymysql

        def connect(user, password, port, cert, key):
            return pymysql.connect(
                host=ENV["COMPAT_HOST"], port=port, user=user, password=password,
                database=ENV["COMPAT_DB"],
                ssl_ca=ENV["COMPAT_CA"], ssl_cert=cert, ssl_key=key,
                ssl_verify_cert=True, ssl_verify_identity=True,
                connect_timeout=30,
            )

        from importlib.metadata import version

        return pymysql, connect, "PyMySQL " + version("PyMySQL")
    if name == "mysqlclient":
        import MySQLdb

        def connect(user, password, port, cert, key):
            return MySQLdb.connect(
                host=ENV["COMPAT_HOST"], port=port, user=user, password=password,
                database=ENV["COMPAT_DB"],
                ssl={"ca": ENV["COMPAT_CA"], "cert": cert, "key": key},
                ssl_mode="VERIFY_IDENTITY",
                connect_timeout=30,
            )

        return MySQLdb, connect, "mysqlclient %s (libmariadb %s)" % (
            ".".join(map(str, MySQLdb.version_info[:3])), MySQLdb._mysql.get_client_info())
    raise SystemExit("usage: check.py pymysql|mysqlclient (got %r)" % name)


def one_line(s):
    return " ".join(str(s).split())


def err(e):
    """`<code> <message>` for a driver error with a code, else the exception text."""
    args = getattr(e, "args", ())
    if len(args) >= 2 and isinstance(args[0], int):
        return "%d %s" % (args[0], args[1])
    return "client error: %s: %s" % (type(e).__name__, e)


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    mod, connect, version = driver(name)
    print("VERSION", version)
    port = int(ENV["COMPAT_PORT"])
    cert, key = ENV["COMPAT_CERT"], ENV["COMPAT_KEY"]
    user, password = ENV["COMPAT_USER"], ENV["COMPAT_PASSWORD"]
    table = "compat_" + name
    ok = True

    def check(check_name, fn, na_reason=None, na_if=None):
        nonlocal ok
        try:
            print("CHECK", check_name, "PASS", one_line(fn()))
        except Exception as e:  # every failure is a result to report
            if na_if is not None and isinstance(e, na_if):
                print("CHECK", check_name, "NA", one_line(e))
            elif na_reason:
                print("CHECK", check_name, "NA", one_line("%s (%s)" % (err(e), na_reason)))
            else:
                ok = False
                print("CHECK", check_name, "FAIL", one_line(err(e)))

    def app():
        return connect(user, password, port, cert, key)

    def query():
        with app() as c, c.cursor() as cur:
            cur.execute("SELECT 1 + 1, CURRENT_USER()")
            n, u = cur.fetchone()
            assert n == 2, "SELECT 1 + 1 gave %r" % (n,)
            return "SELECT 1 + 1 = 2 as %s" % u

    def ed25519():
        c = connect(ENV["COMPAT_ED_USER"], ENV["COMPAT_ED_PASSWORD"], port, cert, key)
        with c, c.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            return "logged in as %s" % cur.fetchone()[0]

    def prepared():
        # Both drivers interpolate parameters on the client (escaped literals, text protocol);
        # the server-side prepare is exercised with SQL PREPARE/EXECUTE.
        with app() as c, c.cursor() as cur:
            cur.execute("SELECT %s + %s, CONCAT(%s, '!')", (40, 2, "hé"))
            row = cur.fetchone()
            assert tuple(row) == (42, "hé!"), "parameterised query gave %r" % (row,)
            cur.execute("PREPARE s FROM 'SELECT ? + ?'")
            cur.execute("SET @a = 40, @b = 2")
            cur.execute("EXECUTE s USING @a, @b")
            row = cur.fetchone()
            assert row[0] == 42, "EXECUTE gave %r" % (row,)
            return "client-side parameters (driver) + SQL PREPARE/EXECUTE"

    def transaction():
        with app() as c, c.cursor() as cur:
            cur.execute("CREATE OR REPLACE TABLE %s (id INT PRIMARY KEY) ENGINE=InnoDB" % table)
            c.autocommit(False)
            cur.execute("INSERT INTO %s VALUES (1)" % table)
            c.rollback()
            cur.execute("INSERT INTO %s VALUES (2)" % table)
            c.commit()
            cur.execute("SELECT id FROM %s ORDER BY id" % table)
            ids = [r[0] for r in cur.fetchall()]
            assert ids == [2], "rows after rollback+commit: %r, expected [2]" % (ids,)
            return "rolled-back row absent, committed row present"

    def big():
        with app() as c, c.cursor() as cur:
            cur.execute("SELECT REPEAT('%s', %d)" % (PATTERN, len(BIG) // len(PATTERN)))
            v = cur.fetchone()[0]
            if isinstance(v, bytes):
                v = v.decode()
            assert v == BIG, "got %d bytes, expected %d" % (len(v), len(BIG))
            return "%d bytes in one row, content as expected" % len(v)

    def refused(fn, code=None):
        def run():
            try:
                c = fn()
            except mod.Error as e:
                text = err(e)
                if code is not None and not text.startswith("%d " % code):
                    raise AssertionError("expected error %d, got: %s" % (code, text))
                return text
            c.close()
            raise AssertionError("connected, but the connection must be refused")

        return run

    check("query", query)
    check("ed25519", ed25519)
    check("prepared", prepared)
    check("transaction", transaction)
    check("big_result", big)
    check("revoked", refused(lambda: connect(
        user, password, port, ENV["COMPAT_REVOKED_CERT"], ENV["COMPAT_REVOKED_KEY"])))
    check("wrong_password", refused(lambda: connect(
        user, "not-the-password", port, cert, key), 1045))
    check("redirect", refused(lambda: connect(
        user, password, int(ENV["COMPAT_REDIRECT_PORT"]), cert, key), 4196))

    def change_user():
        # COM_CHANGE_USER on one connection: app_native -> app_ed (ed25519) -> app_native, each
        # checked with CURRENT_USER(), then a wrong password, which must give the server's 1045.
        c = app()
        if not callable(getattr(c, "change_user", None)):
            c.close()
            raise NotImplementedError(
                "%s has no change-user API: its Connection has no change_user method and "
                "never sends COM_CHANGE_USER" % version)
        steps = []
        try:
            for u, p in ((ENV["COMPAT_ED_USER"], ENV["COMPAT_ED_PASSWORD"]), (user, password)):
                c.change_user(u, p, ENV["COMPAT_DB"])
                cur = c.cursor()
                cur.execute("SELECT CURRENT_USER()")
                got = cur.fetchone()[0]
                cur.close()
                assert got == u + "@%", "after change_user to %s, CURRENT_USER() is %s" % (u, got)
                steps.append(got)
            try:
                c.change_user(user, "not-the-password", ENV["COMPAT_DB"])
            except mod.Error as e:
                text = err(e)
                if not text.startswith("1045 "):
                    raise AssertionError("wrong password: expected error 1045, got: %s" % text)
                return "change_user: %s, then %s; wrong password: %s" % (
                    steps[0], steps[1], text)
            raise AssertionError("change_user with a wrong password succeeded")
        finally:
            c.close()

    check("change_user", change_user, na_if=NotImplementedError)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
