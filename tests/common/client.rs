//! Client helpers: mysql_async options (rustls TLS with client identity, plain TCP, Unix
//! socket) and the `mariadb` command-line client (libmariadb / Connector/C).

use std::ffi::OsStr;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};

use super::mariadb::find_program;
use super::pki::ClientCert;

/// Upper bound for one `mariadb` CLI run; it is killed after that.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// TLS options trusting only `ca`, with an optional client certificate and key.
pub fn ssl_opts(ca: &Path, client: Option<&ClientCert>) -> SslOpts {
    SslOpts::default()
        .with_root_certs(vec![ca.to_path_buf().into()])
        .with_disable_built_in_roots(true)
        .with_client_identity(
            client.map(|c| ClientIdentity::new(c.cert.clone().into(), c.key.clone().into())),
        )
}

/// mysql_async options over TCP to `host:port` (host may be `localhost`, `127.0.0.1`, `::1`),
/// rustls TLS trusting only `ca`, verifying the server name, presenting `client` if given;
/// `prefer_socket(false)` so the driver never switches to a local Unix socket.
pub fn tls_opts(
    host: &str,
    port: u16,
    user: &str,
    pass: &str,
    ca: &Path,
    client: Option<&ClientCert>,
) -> Opts {
    OptsBuilder::from_opts(plain_opts(host, port, user, pass))
        .ssl_opts(ssl_opts(ca, client))
        .into()
}

/// mysql_async options over TCP to `host:port` without TLS, `prefer_socket(false)`.
pub fn plain_opts(host: &str, port: u16, user: &str, pass: &str) -> Opts {
    OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(pass))
        .prefer_socket(false)
        .into()
}

/// mysql_async options over a Unix socket without TLS.
pub fn socket_opts(socket: &Path, user: &str, pass: &str) -> Opts {
    OptsBuilder::default()
        .socket(Some(socket.to_str().expect("socket path is UTF-8")))
        .user(Some(user))
        .pass(Some(pass))
        .into()
}

/// The server error code of a mysql_async error (e.g. 1045 for access denied), if it is one.
pub fn server_error_code(err: &mysql_async::Error) -> Option<u16> {
    match err {
        mysql_async::Error::Server(e) => Some(e.code),
        _ => None,
    }
}

/// Result of one `mariadb` CLI run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliOutput {
    /// Exit code; `None` if killed by a signal or by the [`CLI_TIMEOUT`].
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Path of the `mariadb` CLI; panics with the install command if missing.
pub fn mariadb_cli_path() -> PathBuf {
    find_program("mariadb", "/usr/bin/mariadb")
}

/// Runs the `mariadb` CLI as `mariadb --no-defaults --batch <args>` on a blocking thread,
/// killing it after [`CLI_TIMEOUT`]. Use `-N` for no column names, `-e SQL` for the statement.
pub async fn mariadb_cli<I, S>(args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    tokio::task::spawn_blocking(move || mariadb_cli_blocking(&args))
        .await
        .expect("the mariadb CLI thread panicked")
}

/// Blocking variant of [`mariadb_cli`].
pub fn mariadb_cli_blocking<I, S>(args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let cli = mariadb_cli_path();
    let mut child = Command::new(&cli)
        .arg("--no-defaults")
        .arg("--batch")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", cli.display()));
    // Drain both pipes on threads so a chatty client cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait().expect("try_wait on the mariadb CLI") {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait for the killed mariadb CLI");
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let stdout = out_reader.join().expect("stdout reader thread");
    let mut stderr = err_reader.join().expect("stderr reader thread");
    if timed_out {
        stderr.push_str(&format!(
            "\n[harness] mariadb CLI killed after {CLI_TIMEOUT:?}\n"
        ));
    }
    CliOutput {
        status: status.code(),
        stdout,
        stderr,
    }
}

/// CLI connection arguments over TCP: `--protocol=TCP --host= --port= --user= --password=`.
pub fn cli_tcp_args(host: &str, port: u16, user: &str, pass: &str) -> Vec<String> {
    vec![
        "--protocol=TCP".into(),
        format!("--host={host}"),
        format!("--port={port}"),
        format!("--user={user}"),
        format!("--password={pass}"),
    ]
}

/// CLI connection arguments over a Unix socket.
pub fn cli_socket_args(socket: &Path, user: &str, pass: &str) -> Vec<String> {
    vec![
        "--protocol=SOCKET".into(),
        format!("--socket={}", socket.display()),
        format!("--user={user}"),
        format!("--password={pass}"),
    ]
}

/// CLI TLS arguments: `--ssl --ssl-ca=<ca> --ssl-verify-server-cert` and, with a client,
/// `--ssl-cert --ssl-key`.
pub fn cli_tls_args(ca: &Path, client: Option<&ClientCert>) -> Vec<String> {
    let mut args = vec![
        "--ssl".to_string(),
        format!("--ssl-ca={}", ca.display()),
        "--ssl-verify-server-cert".into(),
    ];
    if let Some(c) = client {
        args.push(format!("--ssl-cert={}", c.cert.display()));
        args.push(format!("--ssl-key={}", c.key.display()));
    }
    args
}

/// Value of a two-column batch output row `name<TAB>value` (as printed for `SHOW STATUS LIKE`),
/// e.g. `cli_value(&out.stdout, "Ssl_version")`.
pub fn cli_value<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| {
        let (key, value) = line.split_once('\t')?;
        (key == name).then_some(value)
    })
}
