//! Compatibility checks for mysql_async and sqlx through portcullis (see scripts/compat).
//!
//! Usage: `portcullis-compat-rust mysql_async|sqlx`. Connection details come from the
//! `COMPAT_*` environment variables that scripts/compat sets; every check prints one line
//! `CHECK <name> <PASS|FAIL|NA> <detail>` (the format shared by all connectors' checks).

use std::env;
use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

/// One connection's settings, from the environment.
struct Target {
    host: String,
    port: u16,
    redirect_port: u16,
    ca: String,
    cert: String,
    key: String,
    revoked_cert: String,
    revoked_key: String,
    user: String,
    password: String,
    ed_user: String,
    ed_password: String,
    db: String,
    big_bytes: usize,
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| panic!("environment variable {name} is not set"))
}

impl Target {
    fn from_env() -> Self {
        Self {
            host: var("COMPAT_HOST"),
            port: var("COMPAT_PORT").parse().expect("COMPAT_PORT is a port"),
            redirect_port: var("COMPAT_REDIRECT_PORT")
                .parse()
                .expect("COMPAT_REDIRECT_PORT is a port"),
            ca: var("COMPAT_CA"),
            cert: var("COMPAT_CERT"),
            key: var("COMPAT_KEY"),
            revoked_cert: var("COMPAT_REVOKED_CERT"),
            revoked_key: var("COMPAT_REVOKED_KEY"),
            user: var("COMPAT_USER"),
            password: var("COMPAT_PASSWORD"),
            ed_user: var("COMPAT_ED_USER"),
            ed_password: var("COMPAT_ED_PASSWORD"),
            db: var("COMPAT_DB"),
            big_bytes: var("COMPAT_BIG_BYTES")
                .parse()
                .expect("COMPAT_BIG_BYTES is a number"),
        }
    }
}

/// Which client certificate, user and port a connection uses.
#[derive(Clone, Copy)]
enum Who {
    App,
    Ed,
    WrongPassword,
    Revoked,
    Redirect,
}

/// What one connection presents: client certificate and key, user, password, port.
struct Creds<'a> {
    cert: &'a str,
    key: &'a str,
    user: &'a str,
    pass: &'a str,
    port: u16,
}

impl Target {
    fn creds(&self, who: Who) -> Creds<'_> {
        let (cert, key) = match who {
            Who::Revoked => (&self.revoked_cert, &self.revoked_key),
            _ => (&self.cert, &self.key),
        };
        let (user, pass) = match who {
            Who::Ed => (&self.ed_user, self.ed_password.as_str()),
            Who::WrongPassword => (&self.user, "not-the-password"),
            _ => (&self.user, self.password.as_str()),
        };
        let port = match who {
            Who::Redirect => self.redirect_port,
            _ => self.port,
        };
        Creds {
            cert,
            key,
            user,
            pass,
            port,
        }
    }
}

fn one_line(s: impl Display) -> String {
    s.to_string().replace(['\n', '\r'], " ")
}

fn report(name: &str, result: Result<String, String>) -> bool {
    match result {
        Ok(detail) => {
            println!("CHECK {name} PASS {}", one_line(detail));
            true
        }
        Err(detail) => {
            println!("CHECK {name} FAIL {}", one_line(detail));
            false
        }
    }
}

/// The 16-byte pattern the big value repeats (the server builds it with REPEAT()).
const PATTERN: &str = "0123456789abcdef";

fn big_sql(t: &Target) -> String {
    format!(
        "SELECT REPEAT('{PATTERN}', {})",
        t.big_bytes / PATTERN.len()
    )
}

fn check_big(t: &Target, v: &str) -> Result<String, String> {
    let expected = PATTERN.repeat(t.big_bytes / PATTERN.len());
    if v == expected {
        Ok(format!("{} bytes in one row, content as expected", v.len()))
    } else {
        Err(format!(
            "got {} bytes, expected {} (content differs)",
            v.len(),
            expected.len()
        ))
    }
}

/// The expected failure of a connection: `Ok(message)` when it failed, `Err` when it worked.
fn expect_refused<T>(r: Result<T, String>) -> Result<String, String> {
    match r {
        Ok(_) => Err("connected, but the connection must be refused".into()),
        Err(e) => Ok(e),
    }
}

fn expect_code(r: Result<String, String>, code: u16) -> Result<String, String> {
    match r {
        Ok(m) if m.starts_with(&format!("{code} ")) => Ok(m),
        Ok(m) => Err(format!("expected error {code}, got: {m}")),
        Err(e) => Err(e),
    }
}

/// One connector's side of the checks: each method talks to the server and returns what it
/// got; [`check`] decides PASS or FAIL the same way for every connector.
trait Connector {
    /// Name and version for the matrix.
    const VERSION: &'static str;
    /// Checks the connector does not implement: their failure is reported as NA.
    const NOT_IMPLEMENTED: &'static [&'static str];
    /// Connects as `who` and closes again.
    async fn connect_only(t: &Target, who: Who) -> Result<(), String>;
    /// `SELECT 1 + 1, CURRENT_USER()` (text protocol) as `who`.
    async fn query(t: &Target, who: Who) -> Result<(i64, String), String>;
    /// `SELECT ? + ?, CONCAT(?, '!')` with 40, 2, "hé", prepared on the server.
    async fn prepared(t: &Target) -> Result<(i64, String), String>;
    /// Creates `table`, inserts 1 and rolls back, inserts 2 and commits; returns the ids.
    async fn transaction(t: &Target, table: &str) -> Result<Vec<i32>, String>;
    /// The value of [`big_sql`].
    async fn big(t: &Target) -> Result<String, String>;
    /// COM_CHANGE_USER on one connection logged in as the app user: to the ed25519 user, then
    /// to the app user, with `CURRENT_USER()` after each; then to the app user with a wrong
    /// password, whose outcome is the second value.
    async fn change_user(t: &Target) -> Result<(Vec<String>, Result<(), String>), String>;
}

/// Runs one check through connector `C`: `Ok(detail)` for PASS, `Err(detail)` otherwise.
async fn check<C: Connector>(t: &Target, name: &str, table: &str) -> Result<String, String> {
    match name {
        "query" => match C::query(t, Who::App).await? {
            (2, u) => Ok(format!("SELECT 1 + 1 = 2 as {u}")),
            other => Err(format!("unexpected row {other:?}")),
        },
        "ed25519" => Ok(format!("logged in as {}", C::query(t, Who::Ed).await?.1)),
        "prepared" => match C::prepared(t).await? {
            (42, s) if s == "hé!" => Ok("server-side prepared (COM_STMT_PREPARE/EXECUTE)".into()),
            other => Err(format!("unexpected row {other:?}")),
        },
        "transaction" => match C::transaction(t, table).await? {
            ids if ids == [2] => Ok("rolled-back row absent, committed row present".into()),
            ids => Err(format!("rows after rollback+commit: {ids:?}, expected [2]")),
        },
        "big_result" => check_big(t, &C::big(t).await?),
        "revoked" => expect_refused(C::connect_only(t, Who::Revoked).await),
        "wrong_password" => expect_code(
            expect_refused(C::connect_only(t, Who::WrongPassword).await),
            1045,
        ),
        "redirect" => expect_code(
            expect_refused(C::connect_only(t, Who::Redirect).await),
            4196,
        ),
        "change_user" => {
            let (users, wrong) = C::change_user(t).await?;
            let want = [format!("{}@%", t.ed_user), format!("{}@%", t.user)];
            if users != want {
                return Err(format!(
                    "CURRENT_USER() after each change: {users:?}, expected {want:?}"
                ));
            }
            match wrong {
                Ok(()) => Err("change_user with a wrong password succeeded".into()),
                Err(m) if m.starts_with("1045 ") => Ok(format!(
                    "change_user: {}, then {}; wrong password: {m}",
                    users[0], users[1]
                )),
                Err(m) => Err(format!("wrong password: expected error 1045, got: {m}")),
            }
        }
        other => Err(format!("unknown check {other}")),
    }
}

/// Every check, in the order of the matrix.
const CHECKS: [&str; 9] = [
    "query",
    "ed25519",
    "prepared",
    "transaction",
    "big_result",
    "revoked",
    "wrong_password",
    "redirect",
    "change_user",
];

/// Runs every check with connector `C` and prints its line. True when nothing failed.
async fn run_all<C: Connector>(t: &Target, table: &str) -> bool {
    println!("VERSION {}", C::VERSION);
    let mut ok = true;
    for name in CHECKS {
        match check::<C>(t, name, table).await {
            Err(e) if C::NOT_IMPLEMENTED.contains(&name) => {
                println!("CHECK {name} NA {}", one_line(e));
            }
            r => ok &= report(name, r),
        }
    }
    ok
}

mod with_mysql_async {
    use super::*;
    use mysql_async::prelude::Queryable;
    use mysql_async::{ChangeUserOpts, ClientIdentity, Conn, OptsBuilder, SslOpts, TxOpts};

    fn opts(t: &Target, who: Who) -> OptsBuilder {
        let c = t.creds(who);
        let ssl = SslOpts::default()
            .with_root_certs(vec![PathBuf::from(&t.ca).into()])
            .with_disable_built_in_roots(true)
            .with_client_identity(Some(ClientIdentity::new(
                PathBuf::from(c.cert).into(),
                PathBuf::from(c.key).into(),
            )));
        OptsBuilder::default()
            .ip_or_hostname(t.host.clone())
            .tcp_port(c.port)
            .user(Some(c.user))
            .pass(Some(c.pass))
            .db_name(Some(t.db.clone()))
            .prefer_socket(false)
            .ssl_opts(ssl)
    }

    fn msg(e: mysql_async::Error) -> String {
        match e {
            mysql_async::Error::Server(s) => format!("{} {}", s.code, s.message),
            e => format!("client error: {e}"),
        }
    }

    async fn connect(t: &Target, who: Who) -> Result<Conn, String> {
        Conn::new(opts(t, who)).await.map_err(msg)
    }

    pub struct MysqlAsync;

    impl Connector for MysqlAsync {
        const VERSION: &'static str = "mysql_async 0.37.1 (rustls, ring)";
        const NOT_IMPLEMENTED: &'static [&'static str] = &[];

        async fn connect_only(t: &Target, who: Who) -> Result<(), String> {
            connect(t, who).await?.disconnect().await.map_err(msg)
        }

        async fn query(t: &Target, who: Who) -> Result<(i64, String), String> {
            let mut c = connect(t, who).await?;
            c.query_first("SELECT 1 + 1, CURRENT_USER()")
                .await
                .map_err(msg)?
                .ok_or_else(|| "no row".to_string())
        }

        async fn prepared(t: &Target) -> Result<(i64, String), String> {
            let mut c = connect(t, Who::App).await?;
            c.exec_first("SELECT ? + ?, CONCAT(?, '!')", (40, 2, "hé"))
                .await
                .map_err(msg)?
                .ok_or_else(|| "no row".to_string())
        }

        async fn transaction(t: &Target, table: &str) -> Result<Vec<i32>, String> {
            let mut c = connect(t, Who::App).await?;
            c.query_drop(format!(
                "CREATE OR REPLACE TABLE {table} (id INT PRIMARY KEY) ENGINE=InnoDB"
            ))
            .await
            .map_err(msg)?;
            for (id, commit) in [(1, false), (2, true)] {
                let mut tx = c.start_transaction(TxOpts::default()).await.map_err(msg)?;
                tx.query_drop(format!("INSERT INTO {table} VALUES ({id})"))
                    .await
                    .map_err(msg)?;
                if commit {
                    tx.commit().await.map_err(msg)?;
                } else {
                    tx.rollback().await.map_err(msg)?;
                }
            }
            c.query(format!("SELECT id FROM {table} ORDER BY id"))
                .await
                .map_err(msg)
        }

        async fn big(t: &Target) -> Result<String, String> {
            let mut c = connect(t, Who::App).await?;
            c.query_first(big_sql(t))
                .await
                .map_err(msg)?
                .ok_or_else(|| "no row".to_string())
        }

        async fn change_user(t: &Target) -> Result<(Vec<String>, Result<(), String>), String> {
            let to = |user: &str, pass: &str| {
                ChangeUserOpts::default()
                    .with_user(Some(user.to_string()))
                    .with_pass(Some(pass.to_string()))
                    .with_db_name(Some(t.db.clone()))
            };
            let mut c = connect(t, Who::App).await?;
            let mut users = Vec::new();
            for (user, pass) in [(&t.ed_user, &t.ed_password), (&t.user, &t.password)] {
                c.change_user(to(user, pass))
                    .await
                    .map_err(|e| format!("change_user to {user}: {}", msg(e)))?;
                let u: String = c
                    .query_first("SELECT CURRENT_USER()")
                    .await
                    .map_err(msg)?
                    .ok_or_else(|| "no row".to_string())?;
                users.push(u);
            }
            let wrong = c.change_user(to(&t.user, "not-the-password")).await;
            Ok((users, wrong.map_err(msg)))
        }
    }
}

mod with_sqlx {
    use super::*;
    use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlSslMode};
    use sqlx::{Connection, Executor, Row};

    fn opts(t: &Target, who: Who) -> MySqlConnectOptions {
        let c = t.creds(who);
        MySqlConnectOptions::new()
            .host(&t.host)
            .port(c.port)
            .username(c.user)
            .password(c.pass)
            .database(&t.db)
            .ssl_mode(MySqlSslMode::VerifyIdentity)
            .ssl_ca(&t.ca)
            .ssl_client_cert(c.cert)
            .ssl_client_key(c.key)
    }

    fn msg(e: sqlx::Error) -> String {
        match &e {
            sqlx::Error::Database(d) => match d.try_downcast_ref::<MySqlDatabaseError>() {
                Some(m) => format!("{} {}", m.number(), m.message()),
                None => format!("database error: {d}"),
            },
            e => format!("client error: {e}"),
        }
    }

    async fn connect(t: &Target, who: Who) -> Result<MySqlConnection, String> {
        MySqlConnection::connect_with(&opts(t, who))
            .await
            .map_err(msg)
    }

    pub struct Sqlx;

    impl Connector for Sqlx {
        const VERSION: &'static str = "sqlx 0.8.6 (mysql, runtime-tokio, tls-rustls-ring-webpki)";
        // sqlx-mysql implements mysql_native_password, caching_sha2_password,
        // sha256_password and mysql_clear_password only, and has no change-user API.
        const NOT_IMPLEMENTED: &'static [&'static str] = &["ed25519", "change_user"];

        async fn connect_only(t: &Target, who: Who) -> Result<(), String> {
            connect(t, who).await?.close().await.map_err(msg)
        }

        async fn query(t: &Target, who: Who) -> Result<(i64, String), String> {
            let mut c = connect(t, who).await?;
            // raw_sql: the text protocol (sqlx::query always prepares).
            let row = sqlx::raw_sql("SELECT 1 + 1, CURRENT_USER()")
                .fetch_one(&mut c)
                .await
                .map_err(msg)?;
            Ok((row.try_get(0).map_err(msg)?, row.try_get(1).map_err(msg)?))
        }

        async fn prepared(t: &Target) -> Result<(i64, String), String> {
            let mut c = connect(t, Who::App).await?;
            let row = sqlx::query("SELECT ? + ?, CONCAT(?, '!')")
                .bind(40_i64)
                .bind(2_i64)
                .bind("hé")
                .fetch_one(&mut c)
                .await
                .map_err(msg)?;
            Ok((row.try_get(0).map_err(msg)?, row.try_get(1).map_err(msg)?))
        }

        async fn transaction(t: &Target, table: &str) -> Result<Vec<i32>, String> {
            let mut c = connect(t, Who::App).await?;
            c.execute(
                format!("CREATE OR REPLACE TABLE {table} (id INT PRIMARY KEY) ENGINE=InnoDB")
                    .as_str(),
            )
            .await
            .map_err(msg)?;
            for (id, commit) in [(1, false), (2, true)] {
                let mut tx = c.begin().await.map_err(msg)?;
                tx.execute(format!("INSERT INTO {table} VALUES ({id})").as_str())
                    .await
                    .map_err(msg)?;
                if commit {
                    tx.commit().await.map_err(msg)?;
                } else {
                    tx.rollback().await.map_err(msg)?;
                }
            }
            sqlx::query_scalar(&format!("SELECT id FROM {table} ORDER BY id"))
                .fetch_all(&mut c)
                .await
                .map_err(msg)
        }

        async fn big(t: &Target) -> Result<String, String> {
            let mut c = connect(t, Who::App).await?;
            let row = sqlx::raw_sql(&big_sql(t))
                .fetch_one(&mut c)
                .await
                .map_err(msg)?;
            row.try_get(0).map_err(msg)
        }

        async fn change_user(_: &Target) -> Result<(Vec<String>, Result<(), String>), String> {
            Err(
                "sqlx 0.8.6 has no change-user API: neither MySqlConnection nor the Connection \
                 trait has a method that sends COM_CHANGE_USER (sqlx-mysql never sends it)"
                    .into(),
            )
        }
    }
}

/// Runs `f` to completion on a single-threaded tokio runtime.
fn block_on<F: Future<Output = bool>>(f: F) -> bool {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

fn main() -> ExitCode {
    let which = env::args().nth(1).unwrap_or_default();
    let t = Target::from_env();
    let ok = match which.as_str() {
        "mysql_async" => block_on(run_all::<with_mysql_async::MysqlAsync>(
            &t,
            "compat_mysql_async",
        )),
        "sqlx" => block_on(run_all::<with_sqlx::Sqlx>(&t, "compat_sqlx")),
        other => {
            eprintln!("usage: portcullis-compat-rust mysql_async|sqlx (got {other:?})");
            return ExitCode::from(2);
        }
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
