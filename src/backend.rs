//! Connecting to a backend database over TCP or a Unix socket.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

use crate::config::{BackendAddr, BackendConfig};
use crate::protocol::GreetingTemplate;
use crate::reload::reloadable::Reloadable;
use crate::tls::ClientTls;

/// A backend as the running proxy sees it: its settings and its outbound
/// TLS material (reloadable; shared by every listener routing to it).
pub struct BackendRuntime {
    pub config: BackendConfig,
    pub tls: Option<Reloadable<ClientTls>>,
    /// Sessions routed to it now (least-connections routing).
    active: AtomicI64,
    /// What its last greeting said (version, capabilities, character set,
    /// status): portcullis greets clients with it before any backend is
    /// dialled (docs/design.md §3.9). `None` until one was seen.
    greeting: ArcSwapOption<GreetingTemplate>,
}

/// Counts a session on a backend until dropped.
pub struct Routed<'a>(&'a BackendRuntime);

impl Drop for Routed<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl BackendRuntime {
    /// The backend around `tls`, its outbound material as loaded from
    /// `config.tls` (by [`crate::preflight`]).
    pub fn new(config: BackendConfig, tls: Option<ClientTls>) -> BackendRuntime {
        BackendRuntime {
            config,
            tls: tls.map(Reloadable::new),
            active: AtomicI64::new(0),
            greeting: ArcSwapOption::empty(),
        }
    }

    /// What to greet a client with that will be relayed here: the template
    /// learned from this backend's last greeting, or the fallback before
    /// one was seen.
    pub fn greeting(&self) -> std::sync::Arc<GreetingTemplate> {
        self.greeting
            .load_full()
            .unwrap_or_else(|| std::sync::Arc::new(GreetingTemplate::fallback()))
    }

    /// Whether a greeting was ever learned from this backend.
    pub fn greeting_learned(&self) -> bool {
        self.greeting.load().is_some()
    }

    /// Keeps `t`, learned from a greeting of this backend, when it differs
    /// from the one kept (a restart or an upgrade of the server).
    pub fn learn_greeting(&self, t: GreetingTemplate) {
        if self.greeting.load().as_deref() != Some(&t) {
            tracing::debug!(backend = %self.config.name, version = %t.server_version,
                capabilities = %format!("{:#010x}", t.capabilities.0), "learned the backend's greeting");
            self.greeting.store(Some(std::sync::Arc::new(t)));
        }
    }

    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Counts a session routed here while the guard lives.
    pub fn route_session(&self) -> Routed<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Routed(self)
    }
}

/// A connected backend stream.
pub type BackendStream = Either<TcpStream, UnixStream>;

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr} timed out after {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("connecting to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    /// The connect succeeded but no greeting came within the connect
    /// timeout (a hung or overloaded server, or not a database at all).
    #[error("{addr} accepted the connection but sent no greeting within {timeout:?}")]
    NoGreeting { addr: String, timeout: Duration },
}

/// Whose connection a backend connection carries, for the PROXY protocol
/// header: the client's address and the listener address it reached
/// (both `None` for a Unix-socket client or portcullis's own connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Origin {
    pub client: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
}

/// Connects to `backend` within its connect timeout and, with
/// `proxy_protocol`, sends the PROXY v2 header for `origin` first.
pub async fn connect(
    backend: &BackendConfig,
    origin: Origin,
) -> Result<BackendStream, ConnectError> {
    let addr = backend.address.to_string();
    let fut = async {
        let mut s = match &backend.address {
            BackendAddr::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                // Small request/response packets: never wait to coalesce.
                s.set_nodelay(true)?;
                Either::Left(s)
            }
            BackendAddr::Unix(p) => Either::Right(UnixStream::connect(p).await?),
        };
        if backend.proxy_protocol {
            let header = crate::proxy_protocol::v2_header(origin.client, origin.local);
            if let Err(e) = s.write_all(&header).await {
                // A server at max_connections writes its ERR 1040 and
                // closes without reading: the header write then fails, but
                // the ERR is waiting in the socket. Let the greeting read
                // find it (or the close) rather than call the backend
                // unreachable.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) {
                    return Err(e);
                }
                tracing::debug!(backend = %backend.name, error = %e,
                    "the backend closed before reading the PROXY header; reading its answer");
            }
        }
        Ok(s)
    };
    match tokio::time::timeout(backend.connect_timeout, fut).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(source)) => Err(ConnectError::Io { addr, source }),
        Err(_) => Err(ConnectError::Timeout {
            addr,
            timeout: backend.connect_timeout,
        }),
    }
}
