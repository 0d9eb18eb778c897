//! An in-process portcullis for tests: built from a TOML string, bound on
//! port 0 / temp Unix sockets, serving once [`TestProxy::start`] returns,
//! shut down on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::config::ListenAddr;
use portcullis::preflight::Preflight;
use portcullis::state::{Lifecycle, ProxyState};
use portcullis::{Config, Proxy, Shutdown};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client::tls_opts;
use super::http::{http_body, Reply};
use super::mariadb::short_tempdir;
use super::pki::Pki;

pub struct TestProxy {
    addrs: Vec<(String, ListenAddr)>,
    admin: Option<ListenAddr>,
    state: Arc<ProxyState>,
    tx: watch::Sender<Shutdown>,
    handle: Option<JoinHandle<()>>,
    dir: TempDir,
    pub config: Config,
}

impl TestProxy {
    /// Writes `toml` to `portcullis.toml` in a temp dir (relative paths in
    /// it resolve there), loads, binds, and returns once every listener
    /// accepts.
    pub async fn start(toml: &str) -> TestProxy {
        TestProxy::start_with_files(toml, &[]).await
    }

    /// Like [`start`](TestProxy::start), first writing `files` (name,
    /// contents) next to the config, e.g. an admin token file.
    pub async fn start_with_files(toml: &str, files: &[(&str, &str)]) -> TestProxy {
        let dir = short_tempdir("px");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write test file");
        }
        let path = dir.path().join("portcullis.toml");
        // Three session workers unless the test says otherwise: more than
        // this machine's default, so every test's sessions are spread over
        // threads that each have their own event loop, and a session that
        // is revoked, demoted or shut down from another thread is.
        let toml = if toml.lines().any(|l| l.trim_start().starts_with("workers")) {
            toml.to_string()
        } else {
            format!("workers = 3\n{toml}")
        };
        let toml = toml.as_str();
        std::fs::write(&path, toml).expect("write config");
        let preflight = Preflight::load(&path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{toml}"));
        let config = preflight.config().clone();
        let proxy = Proxy::bind(preflight).expect("bind proxy");
        let addrs = proxy.local_addrs();
        let admin = proxy.admin_addr();
        let state = proxy.state();
        let mut lifecycle = state.watch_lifecycle();
        let (tx, rx) = watch::channel(Shutdown::Run);
        let handle = tokio::spawn(proxy.run(rx));
        lifecycle
            .wait_for(|l| *l == Lifecycle::Serving)
            .await
            .expect("proxy serves");
        TestProxy {
            addrs,
            admin,
            state,
            tx,
            handle: Some(handle),
            dir,
            config,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn state(&self) -> Arc<ProxyState> {
        self.state.clone()
    }

    fn addr(&self, listener: &str) -> &ListenAddr {
        &self
            .addrs
            .iter()
            .find(|(n, _)| n == listener)
            .unwrap_or_else(|| panic!("no listener {listener:?}"))
            .1
    }

    /// The bound TCP address of `listener`.
    pub fn tcp_addr(&self, listener: &str) -> SocketAddr {
        match self.addr(listener) {
            ListenAddr::Tcp(a) => *a,
            other => panic!("listener {listener:?} is not TCP: {other}"),
        }
    }

    pub fn port(&self, listener: &str) -> u16 {
        self.tcp_addr(listener).port()
    }

    /// The Unix socket path of `listener`.
    pub fn socket_path(&self, listener: &str) -> PathBuf {
        match self.addr(listener) {
            ListenAddr::Unix(p) => p.clone(),
            other => panic!("listener {listener:?} is not a Unix socket: {other}"),
        }
    }

    /// mysql_async options to `listener` on `::1` with mutual TLS as the
    /// `app` client of `pki`.
    pub fn app_opts(&self, pki: &Pki, listener: &str, user: &str, pass: &str) -> mysql_async::Opts {
        tls_opts(
            "::1",
            self.port(listener),
            user,
            pass,
            &pki.ca,
            Some(&pki.app),
        )
    }

    /// The bound admin address (needs `[admin]` in the config).
    pub fn admin_addr(&self) -> ListenAddr {
        self.admin.clone().expect("[admin] is configured")
    }

    /// One request to the admin API without a token.
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        http_body(&self.admin_addr(), method, path, None, body).await
    }

    /// Asks the proxy to drain or stop.
    pub fn signal(&self, mode: Shutdown) {
        self.tx.send(mode).expect("proxy still running");
    }

    /// Waits until no listener has an active session and every accepted
    /// connection has been recorded with an outcome. Sessions run on the
    /// proxy's worker threads, so a client can see its answer before the
    /// session that sent it has logged and counted itself. A session that
    /// panicked or leaked would never be recorded, so this doubles as a
    /// no-leak check.
    pub async fn settle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let pending: Vec<String> = self
                .state
                .listeners
                .iter()
                .filter_map(|l| {
                    let m = &l.metrics;
                    let recorded: u64 = m.outcomes().iter().map(|(_, n)| n).sum();
                    (m.active() != 0 || recorded != m.accepted_total()).then(|| {
                        format!(
                            "{}: active {}, accepted {}, outcomes {:?}",
                            l.name(),
                            m.active(),
                            m.accepted_total(),
                            m.outcomes()
                        )
                    })
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "sessions never settled: {pending:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Sends `mode` and waits until `run` has returned.
    pub async fn stop(mut self, mode: Shutdown) {
        self.signal(mode);
        if let Some(h) = self.handle.take() {
            h.await.expect("proxy task panicked");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.tx.send(Shutdown::Now);
    }
}

/// A backend address nothing listens on (the temp dir must outlive its use).
pub fn absent_backend() -> (TempDir, String) {
    let d = short_tempdir("nb");
    let a = format!("unix:{}/absent.sock", d.path().display());
    (d, a)
}

/// `[listener.tls]` lines for the test PKI (mutual TLS with the CRL).
pub fn tls_section(pki: &Pki, client_auth: &str) -> String {
    format!(
        "[listener.tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\ncrl = [{:?}]\nclient_auth = {:?}\n",
        pki.server.cert, pki.server.key, pki.ca, pki.crl, client_auth
    )
}

/// A config with one backend and one mTLS listener `public` on `[::1]:0`.
pub fn mtls_config(pki: &Pki, backend_address: &str) -> String {
    format!(
        "[[backend]]\nname = \"db\"\naddress = {backend_address:?}\n\n[[listener]]\nname = \"public\"\naddress = \"[::1]:0\"\nroute = \"db\"\n{}",
        tls_section(pki, "required")
    )
}

/// Writes `contents` to `path` the way certificate tools publish: a
/// temporary file in the same directory, renamed over the old one.
pub fn publish(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// [`publish`]es a copy of `from` at `to`.
pub fn copy_in(from: &Path, to: &Path) {
    publish(to, &std::fs::read(from).unwrap());
}

impl TestProxy {
    /// Waits (up to 30 s) until backend number `index` presents a client
    /// certificate with `serial` (lowercase hex), i.e. its outbound TLS
    /// material was reloaded.
    pub async fn backend_client_serial_becomes(&self, index: usize, serial: &str) {
        let state = self.state();
        let tls = state.backends[index].tls.as_ref().expect("[backend.tls]");
        let mut attempts = tls.watch_attempts();
        let serial_now = || tls.load().leaf.as_ref().map(|l| l.serial.clone());
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            attempts.wait_for(|_| serial_now().as_deref() == Some(serial)),
        )
        .await
        .unwrap_or_else(|_| panic!("client certificate {serial} not loaded within 30 s"))
        .expect("proxy alive");
    }
}
