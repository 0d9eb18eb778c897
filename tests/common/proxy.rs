//! An in-process portcullis for tests: built from a TOML string, bound on
//! port 0 / temp Unix sockets, shut down on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use portcullis::config::ListenAddr;
use portcullis::{Config, Proxy, Shutdown};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::mariadb::short_tempdir;
use super::pki::Pki;

pub struct TestProxy {
    addrs: Vec<(String, ListenAddr)>,
    admin: Option<ListenAddr>,
    tx: watch::Sender<Shutdown>,
    handle: Option<JoinHandle<()>>,
    dir: TempDir,
    pub config: Config,
}

impl TestProxy {
    /// Writes `toml` to `portcullis.toml` in a temp dir (relative paths in
    /// it resolve there), loads, binds and starts serving.
    pub async fn start(toml: &str) -> TestProxy {
        let dir = short_tempdir("px");
        let path = dir.path().join("portcullis.toml");
        std::fs::write(&path, toml).expect("write config");
        let config = Config::load(&path)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{toml}"));
        let proxy = Proxy::bind(config.clone()).expect("bind proxy");
        let addrs = proxy.local_addrs();
        let admin = proxy.admin_addr();
        let (tx, rx) = watch::channel(Shutdown::Run);
        let handle = tokio::spawn(proxy.run(rx));
        TestProxy {
            addrs,
            admin,
            tx,
            handle: Some(handle),
            dir,
            config,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
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

    /// The bound admin TCP address (needs `[admin]` in the config).
    pub fn admin_tcp(&self) -> SocketAddr {
        match &self.admin {
            Some(ListenAddr::Tcp(a)) => *a,
            other => panic!("no TCP admin address: {other:?}"),
        }
    }

    /// One HTTP/1.1 request to the admin API; returns (status, body).
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.admin_tcp())
            .await
            .expect("admin connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: portcullis\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().expect("status code");
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Asks the proxy to drain or stop.
    pub fn signal(&self, mode: Shutdown) {
        self.tx.send(mode).expect("proxy still running");
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
