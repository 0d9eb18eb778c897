//! Reading the PROXY protocol header a trusted load balancer sends before
//! the MySQL connection (`accept_proxy_protocol = true`): exactly the
//! header's bytes, never one more, so what follows is the client's. The
//! parsing is [`crate::proxy_protocol`]'s.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::admission::Evicted;
use crate::config::IpPrefix;
use crate::outcome::SessionError;
use crate::proxy_protocol::{self, HeaderError, Inbound, Version, PEEK, V1_MAX, V2_FIXED};

/// Why no header could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadHeaderError {
    /// Closed before sending a byte (a load balancer's TCP health check).
    #[error("connection closed before a PROXY protocol header")]
    ClosedEarly,
    #[error("connection closed in the middle of the PROXY protocol header")]
    Truncated,
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("reading the PROXY protocol header: {0}")]
    Io(io::Error),
}

/// Whether a peer at `ip` is one whose PROXY header is read.
pub fn trusted(prefixes: &[IpPrefix], ip: IpAddr) -> bool {
    prefixes.iter().any(|p| p.contains(ip))
}

/// Reads the header trusted proxy `proxy` must send first, within `limit`
/// (the listener's tls_handshake_timeout), unless portcullis shuts down
/// (`cancel`) or the connection is closed to make room (`evicted`)
/// meanwhile. Every failure is a [`SessionError`] to report.
pub async fn take<R: AsyncRead + Unpin>(
    r: &mut R,
    proxy: SocketAddr,
    limit: Duration,
    cancel: &CancellationToken,
    evicted: &Evicted,
) -> Result<Inbound, SessionError> {
    let refused = |reason: String| SessionError::ProxyHeader { proxy, reason };
    tokio::select! {
        r = tokio::time::timeout(limit, read(r)) => match r {
            Err(_) => Err(refused(format!("none within {limit:?} (tls_handshake_timeout)"))),
            Ok(Ok(h)) => Ok(h),
            Ok(Err(ReadHeaderError::ClosedEarly)) => Err(SessionError::ClientClosed),
            Ok(Err(ReadHeaderError::Io(e))) => Err(SessionError::ClientIo(e)),
            Ok(Err(e)) => Err(refused(e.to_string())),
        },
        _ = cancel.cancelled() => Err(SessionError::Shutdown),
        why = evicted.wait() => Err(SessionError::Evicted(why)),
    }
}

/// Reads one v1 or v2 header from `r`.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Inbound, ReadHeaderError> {
    let mut first = [0u8; PEEK];
    let n = read_some(r, &mut first).await?;
    if n == 0 {
        return Err(ReadHeaderError::ClosedEarly);
    }
    if n < PEEK {
        // What was sent may still be recognizably not a header.
        if !first.starts_with(&b"PROXY "[..n.min(6)])
            && first[..n] != proxy_protocol::SIGNATURE[..n]
        {
            return Err(HeaderError::Missing(first[..n].to_vec()).into());
        }
        return Err(ReadHeaderError::Truncated);
    }
    match proxy_protocol::version(&first)? {
        Version::V2 => {
            let mut fixed = [0u8; V2_FIXED];
            fixed[..PEEK].copy_from_slice(&first);
            exact(r, &mut fixed[PEEK..]).await?;
            let len = proxy_protocol::v2_len(&fixed)?;
            let mut body = vec![0u8; len];
            exact(r, &mut body).await?;
            Ok(proxy_protocol::parse_v2(&fixed, &body)?)
        }
        Version::V1 => {
            let mut line = first.to_vec();
            while !line.ends_with(b"\r\n") {
                if line.len() == V1_MAX {
                    return Err(HeaderError::V1(format!("no CRLF within {V1_MAX} bytes")).into());
                }
                let mut b = [0u8; 1];
                exact(r, &mut b).await?;
                line.push(b[0]);
            }
            Ok(proxy_protocol::parse_v1(&line)?)
        }
    }
}

/// Fills `buf` unless the peer closes first; how much was read.
async fn read_some<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> Result<usize, ReadHeaderError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await.map_err(ReadHeaderError::Io)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

async fn exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), ReadHeaderError> {
    if read_some(r, buf).await? < buf.len() {
        return Err(ReadHeaderError::Truncated);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> (Result<Inbound, ReadHeaderError>, Vec<u8>) {
        let mut r = bytes;
        let h = read(&mut r).await;
        (h, r.to_vec())
    }

    #[tokio::test]
    async fn reads_exactly_the_header() {
        let mut bytes = b"PROXY TCP4 192.0.2.7 192.0.2.1 5000 3307\r\n".to_vec();
        bytes.extend_from_slice(b"\x05\x00\x00\x01rest");
        let (h, rest) = read_all(&bytes).await;
        assert!(matches!(h, Ok(Inbound::Proxied { .. })), "{h:?}");
        assert_eq!(rest, b"\x05\x00\x00\x01rest");
        let mut bytes = proxy_protocol::v2_header(None, None);
        bytes.extend_from_slice(b"next");
        let (h, rest) = read_all(&bytes).await;
        assert!(matches!(h, Ok(Inbound::Local)), "{h:?}");
        assert_eq!(rest, b"next");
    }

    #[tokio::test]
    async fn what_is_not_a_whole_header_is_refused() {
        assert!(matches!(
            read_all(b"").await.0,
            Err(ReadHeaderError::ClosedEarly)
        ));
        assert!(matches!(
            read_all(b"PROX").await.0,
            Err(ReadHeaderError::Truncated)
        ));
        assert!(matches!(
            read_all(b"GET").await.0,
            Err(ReadHeaderError::Header(HeaderError::Missing(_)))
        ));
        assert!(matches!(
            read_all(b"PROXY TCP4 192.0.2.7").await.0,
            Err(ReadHeaderError::Truncated)
        ));
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        let e = read_all(&long).await.0.unwrap_err();
        assert!(e.to_string().contains("no CRLF within 107 bytes"), "{e}");
        let h = proxy_protocol::v2_header(
            Some("192.0.2.7:1".parse().unwrap()),
            Some("192.0.2.1:2".parse().unwrap()),
        );
        assert!(matches!(
            read_all(&h[..20]).await.0,
            Err(ReadHeaderError::Truncated)
        ));
    }
}
