//! Connecting to a backend database over TCP or a Unix socket.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

use crate::config::{BackendAddr, BackendConfig};
use crate::reload::reloadable::Reloadable;
use crate::tls::ClientTls;

/// A backend as the running proxy sees it: its settings and its outbound
/// TLS material (reloadable; shared by every listener routing to it).
pub struct BackendRuntime {
    pub config: BackendConfig,
    pub tls: Option<Reloadable<ClientTls>>,
    /// Sessions routed to it now (least-connections routing).
    active: AtomicI64,
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
            s.write_all(&header).await?;
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
