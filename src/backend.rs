//! Connecting to a backend database over TCP or a Unix socket.

use std::io;
use std::time::Duration;

use tokio::net::{TcpStream, UnixStream};
use tokio_util::either::Either;

use crate::config::{BackendAddr, BackendConfig};

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

/// Connects to `backend` within its connect timeout.
pub async fn connect(backend: &BackendConfig) -> Result<BackendStream, ConnectError> {
    let addr = backend.address.to_string();
    let fut = async {
        match &backend.address {
            BackendAddr::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                // Small request/response packets: never wait to coalesce.
                s.set_nodelay(true)?;
                Ok(Either::Left(s))
            }
            BackendAddr::Unix(p) => Ok(Either::Right(UnixStream::connect(p).await?)),
        }
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
