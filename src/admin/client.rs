//! A minimal HTTP/1.1 client for the admin API, used by `portcullis status`.

use std::io;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::AdminTarget;

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
