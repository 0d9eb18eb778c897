//! Throwaway `mariadbd` instances for integration tests.
//!
//! The slow `mariadb-install-db` step runs once into a template data directory that is cached
//! under cargo's per-target test scratch directory (`CARGO_TARGET_TMPDIR`), keyed by the
//! `mariadbd` version and the install options; each [`MariaDb`] copies it (`cp -a`) into its own
//! temporary directory and only pays for the server start. Readiness is a bounded poll of a
//! real connection over the Unix socket. The server is stopped (SIGTERM, then SIGKILL) on drop.
//!
//! A missing `mariadbd` fails the test with the command that installs it (docs/design.md §9).

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, Opts};
use tempfile::TempDir;

/// User created by [`MariaDb::create_users`] with `mysql_native_password`.
pub const NATIVE_USER: &str = "app_native";
/// Password of [`NATIVE_USER`].
pub const NATIVE_PASS: &str = "native-pass";
/// User created by [`MariaDb::create_users`] with the `ed25519` plugin.
pub const ED_USER: &str = "app_ed";
/// Password of [`ED_USER`].
pub const ED_PASS: &str = "ed-pass";
/// Database created by [`MariaDb::create_users`].
pub const TEST_DB: &str = "portcullis_test";
/// The server's superuser (no password, reachable over the Unix socket).
pub const ROOT_USER: &str = "root";

/// Upper bound for a server to become ready (or to stop gracefully).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval of the readiness poll.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Attempts to start when the chosen port was taken in between (bind race).
const START_ATTEMPTS: u32 = 5;
/// Smaller than the default redo log so the template (and each copy) stays ~20 MB.
const INNODB_LOG_FILE_SIZE: &str = "--innodb-log-file-size=4M";
/// Bump when the template layout or install options change.
const TEMPLATE_REV: &str = "1";

const INSTALL_HINT: &str = "run `apt-get install -y mariadb-server mariadb-client`";

/// Locates a MariaDB program: `preferred` if it exists, else `name` on `PATH`.
/// Panics with the install command when it is missing.
pub fn find_program(name: &str, preferred: &str) -> PathBuf {
    let preferred = Path::new(preferred);
    if preferred.is_file() {
        return preferred.to_path_buf();
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`{name}` not found (looked at {} and on PATH); the integration tests need a real \
         MariaDB server and client: {INSTALL_HINT}",
        preferred.display()
    );
}

/// Path of `mariadbd` (`/usr/sbin/mariadbd` or on `PATH`); panics with the install command.
pub fn mariadbd_path() -> PathBuf {
    find_program("mariadbd", "/usr/sbin/mariadbd")
}

/// Path of `mariadb-install-db`; panics with the install command.
pub fn install_db_path() -> PathBuf {
    find_program("mariadb-install-db", "/usr/bin/mariadb-install-db")
}

/// Name of the current OS user (mariadbd refuses to run as root without `--user=root`).
pub fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        if let Ok(out) = Command::new("id").arg("-un").output() {
            let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !name.is_empty() {
                return name;
            }
        }
        std::env::var("USER")
            .expect("cannot determine the current user: `id -un` failed and USER is unset")
    })
    .clone()
}

/// A free TCP port on 127.0.0.1 (bound to port 0, read, released). The port can be taken by
/// someone else before it is used again; callers retry on bind failure.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of the port-0 listener")
        .port()
}

/// A fresh temporary directory with a short path (Unix socket paths are limited to 108 bytes).
pub fn short_tempdir(prefix: &str) -> TempDir {
    let tmp = std::env::temp_dir();
    let base = if tmp.as_os_str().len() <= 60 {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("create a temporary directory in {}: {e}", base.display()))
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn install_args(datadir: &Path) -> Vec<String> {
    vec![
        "--no-defaults".into(),
        "--auth-root-authentication-method=normal".into(),
        "--skip-test-db".into(),
        format!("--datadir={}", datadir.display()),
        format!("--user={}", current_user()),
        INNODB_LOG_FILE_SIZE.into(),
    ]
}

/// The initialised template data directory, created at most once per test binary (and reused
/// across test binaries and runs through the cache directory). Instances copy it.
pub fn template_data_dir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(create_template)
}

fn create_template() -> PathBuf {
    let mariadbd = mariadbd_path();
    let install_db = install_db_path();
    let version = Command::new(&mariadbd)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("run `{} --version`: {e}", mariadbd.display()));
    assert!(
        version.status.success(),
        "`{} --version` failed: {}",
        mariadbd.display(),
        String::from_utf8_lossy(&version.stderr)
    );
    let key_material = format!(
        "{}\n{TEMPLATE_REV}\n{}\n{}",
        String::from_utf8_lossy(&version.stdout),
        install_args(Path::new("DATADIR")).join(" "),
        install_db.display()
    );
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("create {}: {e}", base.display()));
    let final_dir = base.join(format!(
        "mariadb-template-{:016x}",
        fnv1a(key_material.as_bytes())
    ));
    let final_data = final_dir.join("data");
    if final_dir.join("complete").is_file() {
        return final_data;
    }

    let staging = tempfile::Builder::new()
        .prefix("mariadb-template-staging-")
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("create a staging directory in {}: {e}", base.display()));
    let staging_data = staging.path().join("data");
    let out = Command::new(&install_db)
        .args(install_args(&staging_data))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", install_db.display()));
    assert!(
        out.status.success(),
        "{} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        install_db.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(staging.path().join("complete"), key_material).expect("write the template marker");
    // Publish atomically; if another process won the race, use its (complete) template.
    let staging_path = staging.keep();
    if fs::rename(&staging_path, &final_dir).is_err() {
        let _ = fs::remove_dir_all(&staging_path);
        assert!(
            final_dir.join("complete").is_file(),
            "could not publish the MariaDB template to {}",
            final_dir.display()
        );
    }
    final_data
}

/// Options for a [`MariaDb`] instance; `MariaDb::builder()` returns one.
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    max_allowed_packet: String,
    extra_args: Vec<String>,
}

impl Default for MariaDbBuilder {
    fn default() -> Self {
        Self {
            max_allowed_packet: "64M".into(),
            extra_args: Vec::new(),
        }
    }
}

impl MariaDbBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one extra `mariadbd` argument (after the harness' own, so it overrides them).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds extra `mariadbd` arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--max-allowed-packet` (default `64M`).
    pub fn max_allowed_packet(mut self, value: impl Into<String>) -> Self {
        self.max_allowed_packet = value.into();
        self
    }

    /// The server's own TLS: `--ssl-cert`, `--ssl-key`, `--ssl-ca`.
    pub fn server_tls(self, cert: &Path, key: &Path, ca: &Path) -> Self {
        self.args([
            format!("--ssl-cert={}", cert.display()),
            format!("--ssl-key={}", key.display()),
            format!("--ssl-ca={}", ca.display()),
        ])
    }

    /// `--require-secure-transport=ON` (the Unix socket still counts as secure).
    pub fn require_secure_transport(self) -> Self {
        self.arg("--require-secure-transport=ON")
    }

    /// Binary log (in the data directory) with `--server-id` and row format.
    pub fn log_bin(self, server_id: u32) -> Self {
        self.args([
            "--log-bin=mariadb-bin".to_string(),
            format!("--server-id={server_id}"),
            "--binlog-format=ROW".into(),
        ])
    }

    /// Starts the server and waits until it accepts a connection over its Unix socket.
    pub async fn start(self) -> MariaDb {
        MariaDb::start_with(self).await
    }
}

/// A running throwaway `mariadbd`, stopped on drop.
#[derive(Debug)]
pub struct MariaDb {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    socket: PathBuf,
    args: Vec<String>,
}

enum StartFailure {
    /// mariadbd exited; `bind` says whether it was the TCP port being taken.
    Exited {
        status: String,
        bind: bool,
    },
    TimedOut,
}

impl MariaDb {
    /// Builder for a server with extra arguments.
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder::default()
    }

    /// Starts a server with the default options.
    pub async fn start() -> MariaDb {
        MariaDbBuilder::default().start().await
    }

    async fn start_with(builder: MariaDbBuilder) -> MariaDb {
        let mariadbd = mariadbd_path();
        let template = template_data_dir();
        let dir = short_tempdir("pcdb-");
        let socket = dir.path().join("my.sock");
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
        let mut db = MariaDb {
            dir,
            child: None,
            port: 0,
            socket,
            args: Vec::new(),
        };

        for attempt in 1..=START_ATTEMPTS {
            let data = db.data_dir();
            if data.exists() {
                fs::remove_dir_all(&data)
                    .unwrap_or_else(|e| panic!("remove {}: {e}", data.display()));
            }
            let cp = Command::new("cp")
                .arg("-a")
                .arg(template)
                .arg(&data)
                .output()
                .expect("run `cp -a` to copy the MariaDB template");
            assert!(
                cp.status.success(),
                "cp -a {} {} failed: {}",
                template.display(),
                data.display(),
                String::from_utf8_lossy(&cp.stderr)
            );

            db.port = free_port();
            db.args = db.server_args(&builder);
            let stderr =
                File::create(db.stderr_log_path()).expect("create the mariadbd stderr log");
            let stdout = stderr
                .try_clone()
                .expect("clone the mariadbd stderr log handle");
            let child = Command::new(&mariadbd)
                .args(&db.args)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", mariadbd.display()));
            db.child = Some(child);

            match db.wait_ready().await {
                Ok(()) => return db,
                Err(StartFailure::Exited { bind: true, .. }) if attempt < START_ATTEMPTS => {
                    db.stop();
                    continue;
                }
                Err(StartFailure::Exited { status, .. }) => {
                    db.stop();
                    panic!(
                        "mariadbd exited during startup ({status}):\n{}",
                        db.diagnostics()
                    );
                }
                Err(StartFailure::TimedOut) => {
                    db.stop();
                    panic!(
                        "mariadbd did not accept a connection on {} within {READY_TIMEOUT:?}:\n{}",
                        db.socket.display(),
                        db.diagnostics()
                    );
                }
            }
        }
        unreachable!("the start loop returns or panics")
    }

    fn server_args(&self, builder: &MariaDbBuilder) -> Vec<String> {
        let dir = self.dir.path();
        let mut args = vec![
            "--no-defaults".to_string(),
            format!("--datadir={}", self.data_dir().display()),
            format!("--socket={}", self.socket.display()),
            format!("--port={}", self.port),
            "--bind-address=127.0.0.1".into(),
            format!("--user={}", current_user()),
            "--skip-name-resolve".into(),
            format!("--max-allowed-packet={}", builder.max_allowed_packet),
            format!("--log-error={}", self.error_log_path().display()),
            format!("--pid-file={}", dir.join("mariadbd.pid").display()),
            format!("--tmpdir={}", dir.join("tmp").display()),
            INNODB_LOG_FILE_SIZE.into(),
            "--innodb-buffer-pool-size=32M".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
        ];
        args.extend(builder.extra_args.iter().cloned());
        args
    }

    async fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("mariadbd child is running");
            if let Some(status) = child.try_wait().expect("try_wait on mariadbd") {
                let log = self.error_log();
                let bind =
                    log.contains("Bind on TCP/IP port") || log.contains("Address already in use");
                return Err(StartFailure::Exited {
                    status: status.to_string(),
                    bind,
                });
            }
            if self.socket.exists() {
                let attempt = tokio::time::timeout(Duration::from_secs(5), async {
                    let mut conn = Conn::new(self.root_opts()).await?;
                    let one: Option<i64> = conn.query_first("SELECT 1").await?;
                    conn.disconnect().await?;
                    Ok::<_, mysql_async::Error>(one)
                })
                .await;
                if let Ok(Ok(Some(1))) = attempt {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::TimedOut);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops the server: SIGTERM, wait (bounded), then SIGKILL. Idempotent; also run on drop.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + READY_TIMEOUT;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    _ => return,
                }
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The instance's temporary directory (data dir, socket, logs live inside).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The arguments `mariadbd` was started with.
    pub fn server_args_used(&self) -> &[String] {
        &self.args
    }

    /// Process id of `mariadbd` (None after [`MariaDb::stop`]).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    fn stderr_log_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// Current content of mariadbd's error log (empty if not yet written).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    fn diagnostics(&self) -> String {
        let stderr = fs::read_to_string(self.stderr_log_path()).unwrap_or_default();
        format!(
            "command: mariadbd {}\n--- error log ({}) ---\n{}\n--- stdout/stderr ---\n{}",
            self.args.join(" "),
            self.error_log_path().display(),
            self.error_log(),
            stderr
        )
    }

    /// mysql_async URL for root over the Unix socket.
    pub fn root_url(&self) -> String {
        format!(
            "mysql://{ROOT_USER}@localhost/?socket={}",
            self.socket.display()
        )
    }

    /// mysql_async options for root over the Unix socket.
    pub fn root_opts(&self) -> Opts {
        self.socket_opts(ROOT_USER, "")
    }

    /// mysql_async options for `user` over the Unix socket (no TLS).
    pub fn socket_opts(&self, user: &str, pass: &str) -> Opts {
        super::client::socket_opts(&self.socket, user, pass)
    }

    /// mysql_async options for `user` directly to 127.0.0.1:port over TCP, no TLS.
    pub fn tcp_opts(&self, user: &str, pass: &str) -> Opts {
        super::client::plain_opts("127.0.0.1", self.port, user, pass)
    }

    /// A root connection over the Unix socket.
    pub async fn root_conn(&self) -> Conn {
        Conn::new(self.root_opts())
            .await
            .unwrap_or_else(|e| panic!("root connection over {}: {e}", self.socket.display()))
    }

    /// Runs `sql` (may hold several statements) as root; returns the error instead of panicking.
    pub async fn try_exec(&self, sql: &str) -> mysql_async::Result<()> {
        let mut conn = Conn::new(self.root_opts()).await?;
        let result = conn.query_drop(sql).await;
        conn.disconnect().await?;
        result
    }

    /// Runs `sql` as root over the Unix socket; panics with the statement and error on failure.
    pub async fn exec(&self, sql: &str) {
        if let Err(e) = self.try_exec(sql).await {
            panic!("root exec of `{sql}` failed: {e}");
        }
    }

    /// First row of `sql` run as root; panics with the statement and error on failure.
    pub async fn query_first<T: FromRow + Send + 'static>(&self, sql: &str) -> Option<T> {
        let mut conn = self.root_conn().await;
        let row = conn
            .query_first(sql)
            .await
            .unwrap_or_else(|e| panic!("root query `{sql}` failed: {e}"));
        conn.disconnect().await.expect("disconnect root connection");
        row
    }

    /// Starts a default server and runs [`MariaDb::create_users`].
    pub async fn start_with_users() -> MariaDb {
        let db = MariaDb::start().await;
        db.create_users().await;
        db
    }

    /// The server's Unix socket as a portcullis backend address.
    /// (file, position) of this server's binary log now (needs `log_bin`).
    pub async fn binlog_position(&self) -> (String, u64) {
        let (file, pos, _, _): (String, u64, String, String) = self
            .query_first("SHOW MASTER STATUS")
            .await
            .expect("binary log on");
        (file, pos)
    }

    /// Waits, at most `timeout`, until this replica has applied `primary`'s
    /// binary log up to its position now; the `MASTER_POS_WAIT` result
    /// (`>= 0` when caught up).
    pub async fn wait_caught_up(&self, primary: &MariaDb, timeout: Duration) -> Option<i64> {
        let (file, pos) = primary.binlog_position().await;
        self.query_first(&format!(
            "SELECT MASTER_POS_WAIT('{file}', {pos}, {})",
            timeout.as_secs()
        ))
        .await
    }

    pub fn unix_address(&self) -> String {
        format!("unix:{}", self.socket_path().display())
    }

    /// Creates [`NATIVE_USER`] (mysql_native_password) and [`ED_USER`] (ed25519) at `'%'` with
    /// ALL on `*.*`, and the database [`TEST_DB`].
    pub async fn create_users(&self) {
        let ed_installed: Option<i64> = self
            .query_first(
                "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'",
            )
            .await;
        if ed_installed != Some(1) {
            self.exec("INSTALL SONAME 'auth_ed25519'").await;
        }
        self.exec(&format!(
            "CREATE USER '{NATIVE_USER}'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('{NATIVE_PASS}')"
        ))
        .await;
        self.exec(&format!(
            "CREATE USER '{ED_USER}'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('{ED_PASS}')"
        ))
        .await;
        self.exec(&format!("GRANT ALL ON *.* TO '{NATIVE_USER}'@'%'"))
            .await;
        self.exec(&format!("GRANT ALL ON *.* TO '{ED_USER}'@'%'"))
            .await;
        self.exec(&format!("CREATE DATABASE {TEST_DB}")).await;
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
