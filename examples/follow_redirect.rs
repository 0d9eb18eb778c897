//! A client that follows portcullis's instant-failover redirect: the
//! reference behaviour for client authors.
//!
//! It connects; if the server answers with the redirect error (code 4196 by
//! default, message `|<text>|<host>:<port>`), it connects to `host:port`
//! with the same credentials and TLS settings, up to 8 times, then runs the
//! query.
//!
//! ```text
//! cargo run --example follow_redirect -- --host localhost --port 3307 \
//!     --user app --password app-pass --ssl-ca certs-test/ca.pem \
//!     --ssl-cert certs-test/app.pem --ssl-key certs-test/app-key.pem \
//!     --query 'SELECT @@hostname'
//! ```

use std::path::PathBuf;

use mysql_async::prelude::Queryable;
use mysql_async::{ClientIdentity, Conn, Opts, OptsBuilder, SslOpts};

/// How many redirects are followed before giving up: enough for any real
/// chain of takeovers, small enough to end a loop quickly.
pub const MAX_REDIRECTS: usize = 8;

/// Parses a redirect message `|<text>|<host>:<port>` into (text, host, port).
/// The host and port are split at the first ':' after the second '|', as
/// the published connector patch does (so IPv6 literals cannot be carried).
pub fn parse_redirect(message: &str) -> Option<(&str, &str, u16)> {
    let rest = message.strip_prefix('|')?;
    let (text, target) = rest.split_once('|')?;
    let (host, port) = target.split_once(':')?;
    Some((text, host, port.trim().parse().ok()?))
}

/// Why following redirects failed.
#[derive(Debug)]
pub enum FollowError {
    /// More than [`MAX_REDIRECTS`] redirects: a loop, or a runaway chain.
    TooManyRedirects(Vec<String>),
    /// A redirect error whose message is not `|text|host:port`.
    BadRedirect(String),
    Connect(mysql_async::Error),
}

impl std::fmt::Display for FollowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FollowError::TooManyRedirects(path) => write!(
                f,
                "gave up after {MAX_REDIRECTS} redirects (loop?): {}",
                path.join(" -> ")
            ),
            FollowError::BadRedirect(m) => {
                write!(f, "redirect error with unparsable message {m:?}")
            }
            FollowError::Connect(e) => write!(f, "{e}"),
        }
    }
}

/// Connects with `opts`, following redirect errors with `code`. Returns the
/// connection and the `host:port` hops taken.
pub async fn connect_following_redirects(
    opts: Opts,
    code: u16,
) -> Result<(Conn, Vec<String>), FollowError> {
    let mut opts = opts;
    let mut hops = Vec::new();
    loop {
        match Conn::new(opts.clone()).await {
            Ok(conn) => return Ok((conn, hops)),
            Err(mysql_async::Error::Server(e)) if e.code == code => {
                let (text, host, port) = parse_redirect(&e.message)
                    .ok_or_else(|| FollowError::BadRedirect(e.message.clone()))?;
                hops.push(format!("{host}:{port}"));
                eprintln!("redirected ({text}) to {host}:{port}");
                if hops.len() > MAX_REDIRECTS {
                    return Err(FollowError::TooManyRedirects(hops));
                }
                // Same user, password, schema and TLS settings; new address.
                opts = OptsBuilder::from_opts(opts)
                    .ip_or_hostname(host)
                    .tcp_port(port)
                    .into();
            }
            Err(e) => return Err(FollowError::Connect(e)),
        }
    }
}

#[allow(dead_code)] // used when built as the example binary
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut host = "localhost".to_string();
    let mut port = 3307u16;
    let (mut user, mut password) = (String::new(), String::new());
    let (mut ca, mut cert, mut key) = (None::<PathBuf>, None::<PathBuf>, None::<PathBuf>);
    let mut query = "SELECT @@hostname, @@port".to_string();
    let mut code = 4196u16;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_default();
        match a.as_str() {
            "--host" => host = v(),
            "--port" => port = v().parse().unwrap_or(3307),
            "--user" => user = v(),
            "--password" => password = v(),
            "--ssl-ca" => ca = Some(v().into()),
            "--ssl-cert" => cert = Some(v().into()),
            "--ssl-key" => key = Some(v().into()),
            "--query" => query = v(),
            "--redirect-code" => code = v().parse().unwrap_or(4196),
            other => {
                eprintln!("unknown argument {other}; see the top of examples/follow_redirect.rs");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let mut b = OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    if let Some(ca) = ca {
        let mut ssl = SslOpts::default()
            .with_root_certs(vec![ca.into()])
            .with_disable_built_in_roots(true);
        if let (Some(c), Some(k)) = (cert, key) {
            ssl = ssl.with_client_identity(Some(ClientIdentity::new(c.into(), k.into())));
        }
        b = b.ssl_opts(ssl);
    }
    match connect_following_redirects(b.into(), code).await {
        Ok((mut conn, hops)) => {
            if !hops.is_empty() {
                eprintln!(
                    "connected after {} redirect(s): {}",
                    hops.len(),
                    hops.join(" -> ")
                );
            }
            match conn.query::<mysql_async::Row, _>(query).await {
                Ok(rows) => {
                    for r in rows {
                        let cols: Vec<String> = (0..r.len())
                            .map(|i| r.as_ref(i).map(|v| v.as_sql(true)).unwrap_or_default())
                            .collect();
                        println!("{}", cols.join("\t"));
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("query failed: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
