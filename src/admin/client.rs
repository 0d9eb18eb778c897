//! A minimal HTTP/1.1 client for the admin API, used by `portcullis status`.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::ListenAddr;

/// Upper bound on one admin request, connect included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin request failed before an HTTP answer arrived.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the admin API at {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("admin API at {target}: {source}")]
    Http {
        target: String,
        source: hyper::Error,
    },
    #[error("invalid request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("admin API at {target} did not answer within {REQUEST_TIMEOUT:?}")]
    Timeout { target: String },
}

/// Sends one request and returns the status and the whole body.
pub async fn request(
    target: &AdminTarget,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let t = target.to_string();
    let fut = async {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let connect_err = |source| ClientError::Connect {
            target: t.clone(),
            source,
        };
        match target {
            AdminTarget::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a.as_str())
                    .await
                    .map_err(connect_err)?;
                send(s, req, &t).await
            }
            AdminTarget::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(connect_err)?;
                send(s, req, &t).await
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(ClientError::Timeout { target: t.clone() }))
}

async fn send<S>(
    stream: S,
    req: Request<Empty<Bytes>>,
    target: &str,
) -> Result<(StatusCode, Bytes), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| ClientError::Http {
        target: target.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(http)?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    driver.abort();
    Ok((status, body))
}

/// Where `portcullis status` finds the admin API: `host:port` or
/// `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTarget {
    Tcp(String),
    Unix(PathBuf),
}

impl std::str::FromStr for AdminTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("empty path after \"unix:\"".into());
            }
            return Ok(AdminTarget::Unix(PathBuf::from(p)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(AdminTarget::Tcp(s.to_string()))
            }
            _ => Err(format!(
                "invalid admin address {s:?}: expected \"127.0.0.1:9306\", \"[::1]:9306\" or \"unix:/path\""
            )),
        }
    }
}

impl std::fmt::Display for AdminTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminTarget::Tcp(a) => f.write_str(a),
            AdminTarget::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<&ListenAddr> for AdminTarget {
    fn from(a: &ListenAddr) -> Self {
        match a {
            ListenAddr::Tcp(a) => AdminTarget::Tcp(a.to_string()),
            ListenAddr::Unix(p) => AdminTarget::Unix(p.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            "127.0.0.1:9306".parse::<AdminTarget>(),
            Ok(AdminTarget::Tcp("127.0.0.1:9306".into()))
        );
        assert_eq!(
            "[::1]:9306".parse::<AdminTarget>(),
            Ok(AdminTarget::Tcp("[::1]:9306".into()))
        );
        assert_eq!(
            "unix:/run/p.sock".parse::<AdminTarget>(),
            Ok(AdminTarget::Unix("/run/p.sock".into()))
        );
        assert!("9306".parse::<AdminTarget>().is_err());
        assert!("unix:".parse::<AdminTarget>().is_err());
    }
}
