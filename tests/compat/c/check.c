/*
 * Compatibility checks for libmariadb (MariaDB Connector/C) through portcullis.
 *
 * Connection details come from the COMPAT_* environment variables that scripts/compat sets;
 * every check prints `CHECK <name> <PASS|FAIL|NA> <detail>`.
 * Build: gcc -o check check.c $(mariadb_config --cflags --libs)
 */
#include <mysql.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char PATTERN[] = "0123456789abcdef";
static int failed = 0;

static const char *env(const char *name) {
    const char *v = getenv(name);
    if (!v) {
        fprintf(stderr, "environment variable %s is not set\n", name);
        exit(2);
    }
    return v;
}

static void pass(const char *check, const char *fmt, ...) {
    va_list ap;
    printf("CHECK %s PASS ", check);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static void fail(const char *check, const char *fmt, ...) {
    va_list ap;
    printf("CHECK %s FAIL ", check);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    failed = 1;
}

/* Connects with the client certificate CERT/KEY; NULL on failure, with the error in ERR. */
static MYSQL *connect_as(const char *user, const char *pass, int port, const char *cert,
                         const char *key, char *err, size_t err_len) {
    MYSQL *m = mysql_init(NULL);
    my_bool yes = 1;
    unsigned int timeout = 30;
    mysql_optionsv(m, MYSQL_OPT_SSL_CA, env("COMPAT_CA"));
    mysql_optionsv(m, MYSQL_OPT_SSL_CERT, cert);
    mysql_optionsv(m, MYSQL_OPT_SSL_KEY, key);
    mysql_optionsv(m, MYSQL_OPT_SSL_ENFORCE, &yes);
    mysql_optionsv(m, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &yes);
    mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(m, env("COMPAT_HOST"), user, pass, env("COMPAT_DB"), port, NULL, 0)) {
        snprintf(err, err_len, "%u %s", mysql_errno(m), mysql_error(m));
        mysql_close(m);
        return NULL;
    }
    return m;
}

static MYSQL *app(const char *check) {
    char err[512];
    MYSQL *m = connect_as(env("COMPAT_USER"), env("COMPAT_PASSWORD"), atoi(env("COMPAT_PORT")),
                          env("COMPAT_CERT"), env("COMPAT_KEY"), err, sizeof err);
    if (!m) fail(check, "%s", err);
    return m;
}

/* First column of the first row of SQL as a string (malloc'd), or NULL with a failure. */
static char *query_one(MYSQL *m, const char *check, const char *sql, unsigned long *len) {
    MYSQL_RES *res;
    MYSQL_ROW row;
    char *v;
    if (mysql_query(m, sql) || !(res = mysql_store_result(m))) {
        fail(check, "%u %s", mysql_errno(m), mysql_error(m));
        return NULL;
    }
    row = mysql_fetch_row(res);
    if (!row || !row[0]) {
        fail(check, "no row");
        mysql_free_result(res);
        return NULL;
    }
    *len = mysql_fetch_lengths(res)[0];
    v = malloc(*len + 1);
    memcpy(v, row[0], *len + 1);
    mysql_free_result(res);
    return v;
}

static void check_query(void) {
    unsigned long len;
    MYSQL *m = app("query");
    char *v;
    if (!m) return;
    if ((v = query_one(m, "query", "SELECT CONCAT(1 + 1, ' as ', CURRENT_USER())", &len))) {
        if (strncmp(v, "2 as ", 5) == 0)
            pass("query", "SELECT 1 + 1 = 2 as %s", v + 5);
        else
            fail("query", "unexpected result %s", v);
        free(v);
    }
    mysql_close(m);
}

static void check_ed25519(void) {
    char err[512];
    unsigned long len;
    char *v;
    MYSQL *m = connect_as(env("COMPAT_ED_USER"), env("COMPAT_ED_PASSWORD"),
                          atoi(env("COMPAT_PORT")), env("COMPAT_CERT"), env("COMPAT_KEY"), err,
                          sizeof err);
    if (!m) {
        fail("ed25519", "%s", err);
        return;
    }
    if ((v = query_one(m, "ed25519", "SELECT CURRENT_USER()", &len))) {
        pass("ed25519", "logged in as %s", v);
        free(v);
    }
    mysql_close(m);
}

static void check_prepared(void) {
    static const char sql[] = "SELECT ? + ?, CONCAT(?, '!')";
    MYSQL *m = app("prepared");
    MYSQL_STMT *st;
    MYSQL_BIND in[3], out[2];
    long long a = 40, b = 2, sum = 0;
    char s[] = "h\xc3\xa9", got[64] = {0};
    unsigned long s_len = strlen(s), got_len = 0;
    if (!m) return;
    st = mysql_stmt_init(m);
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    in[0].buffer_type = MYSQL_TYPE_LONGLONG;
    in[0].buffer = &a;
    in[1].buffer_type = MYSQL_TYPE_LONGLONG;
    in[1].buffer = &b;
    in[2].buffer_type = MYSQL_TYPE_STRING;
    in[2].buffer = s;
    in[2].buffer_length = s_len;
    in[2].length = &s_len;
    out[0].buffer_type = MYSQL_TYPE_LONGLONG;
    out[0].buffer = &sum;
    out[1].buffer_type = MYSQL_TYPE_STRING;
    out[1].buffer = got;
    out[1].buffer_length = sizeof got - 1;
    out[1].length = &got_len;
    if (mysql_stmt_prepare(st, sql, strlen(sql)) || mysql_stmt_bind_param(st, in) ||
        mysql_stmt_execute(st) || mysql_stmt_bind_result(st, out) || mysql_stmt_fetch(st)) {
        fail("prepared", "%u %s", mysql_stmt_errno(st), mysql_stmt_error(st));
    } else if (sum == 42 && strcmp(got, "h\xc3\xa9!") == 0) {
        pass("prepared", "mysql_stmt_prepare/execute (binary protocol)");
    } else {
        fail("prepared", "unexpected row (%lld, %s)", sum, got);
    }
    mysql_stmt_close(st);
    mysql_close(m);
}

static void check_transaction(void) {
    unsigned long len;
    char *v;
    MYSQL *m = app("transaction");
    if (!m) return;
    if (mysql_query(m, "CREATE OR REPLACE TABLE compat_c (id INT PRIMARY KEY) ENGINE=InnoDB") ||
        mysql_autocommit(m, 0) || mysql_query(m, "INSERT INTO compat_c VALUES (1)") ||
        mysql_rollback(m) || mysql_query(m, "INSERT INTO compat_c VALUES (2)") ||
        mysql_commit(m)) {
        fail("transaction", "%u %s", mysql_errno(m), mysql_error(m));
    } else if ((v = query_one(m, "transaction", "SELECT GROUP_CONCAT(id) FROM compat_c", &len))) {
        if (strcmp(v, "2") == 0)
            pass("transaction", "rolled-back row absent, committed row present");
        else
            fail("transaction", "rows after rollback+commit: %s, expected 2", v);
        free(v);
    }
    mysql_close(m);
}

static void check_big(void) {
    unsigned long want = strtoul(env("COMPAT_BIG_BYTES"), NULL, 10), len = 0, i;
    char sql[128];
    char *v;
    MYSQL *m = app("big_result");
    if (!m) return;
    snprintf(sql, sizeof sql, "SELECT REPEAT('%s', %lu)", PATTERN, want / 16);
    if ((v = query_one(m, "big_result", sql, &len))) {
        for (i = 0; i < len && v[i] == PATTERN[i % 16]; i++)
            ;
        if (len == want && i == len)
            pass("big_result", "%lu bytes in one row, content as expected", len);
        else
            fail("big_result", "got %lu bytes (first difference at %lu), expected %lu", len, i,
                 want);
        free(v);
    }
    mysql_close(m);
}

/* The connection must fail; with CODE > 0, with that error code. */
static void refused(const char *check, unsigned code, const char *user, const char *pass_,
                    const char *port, const char *cert, const char *key) {
    char err[512];
    MYSQL *m = connect_as(user, pass_, atoi(port), cert, key, err, sizeof err);
    if (m) {
        fail(check, "connected, but the connection must be refused");
        mysql_close(m);
    } else if (code && strtoul(err, NULL, 10) != code) {
        fail(check, "expected error %u, got: %s", code, err);
    } else {
        pass(check, "%s", err);
    }
}

/* COM_CHANGE_USER on one connection: app_native -> app_ed (ed25519) -> app_native, each checked
 * with CURRENT_USER(), then app_native with a wrong password, which must give the server's 1045. */
static int change_to(MYSQL *m, const char *user, const char *pass_, char *got, size_t got_len) {
    unsigned long len;
    char *v;
    if (mysql_change_user(m, user, pass_, env("COMPAT_DB"))) {
        fail("change_user", "mysql_change_user to %s: %u %s", user, mysql_errno(m), mysql_error(m));
        return 0;
    }
    if (!(v = query_one(m, "change_user", "SELECT CURRENT_USER()", &len))) return 0;
    snprintf(got, got_len, "%s", v);
    free(v);
    if (strncmp(got, user, strlen(user)) != 0 || strcmp(got + strlen(user), "@%") != 0) {
        fail("change_user", "after mysql_change_user to %s, CURRENT_USER() is %s", user, got);
        return 0;
    }
    return 1;
}

static void check_change_user(void) {
    char ed[128], native[128];
    MYSQL *m = app("change_user");
    if (!m) return;
    if (change_to(m, env("COMPAT_ED_USER"), env("COMPAT_ED_PASSWORD"), ed, sizeof ed) &&
        change_to(m, env("COMPAT_USER"), env("COMPAT_PASSWORD"), native, sizeof native)) {
        if (!mysql_change_user(m, env("COMPAT_USER"), "not-the-password", env("COMPAT_DB")))
            fail("change_user", "mysql_change_user with a wrong password succeeded");
        else if (mysql_errno(m) != 1045)
            fail("change_user", "wrong password: expected error 1045, got: %u %s", mysql_errno(m),
                 mysql_error(m));
        else
            pass("change_user", "mysql_change_user: %s, then %s; wrong password: %u %s", ed,
                 native, mysql_errno(m), mysql_error(m));
    }
    mysql_close(m);
}

int main(void) {
    printf("VERSION libmariadb (Connector/C) %s (client info %s)\n", MARIADB_PACKAGE_VERSION,
           mysql_get_client_info());
    check_query();
    check_ed25519();
    check_prepared();
    check_transaction();
    check_big();
    refused("revoked", 0, env("COMPAT_USER"), env("COMPAT_PASSWORD"), env("COMPAT_PORT"),
            env("COMPAT_REVOKED_CERT"), env("COMPAT_REVOKED_KEY"));
    refused("wrong_password", 1045, env("COMPAT_USER"), "not-the-password", env("COMPAT_PORT"),
            env("COMPAT_CERT"), env("COMPAT_KEY"));
    refused("redirect", 4196, env("COMPAT_USER"), env("COMPAT_PASSWORD"),
            env("COMPAT_REDIRECT_PORT"), env("COMPAT_CERT"), env("COMPAT_KEY"));
    check_change_user();
    mysql_library_end();
    return failed;
}
