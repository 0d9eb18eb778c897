//! Attackers on the front door: TCP connections from chosen loopback
//! source addresses that stop before the door — silent, or stalled in the
//! middle of the TLS handshake — and ways to see them closed.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use portcullis::state::ListenerState;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::pki::Pki;
use super::proxy::TestProxy;
use super::raw::{client_config, fixed_prefix, frame};

/// A TCP connection to `to` from `source`. On Linux, loopback accepts any
/// source in 127.0.0.0/8, so one host can be many attackers.
pub async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(source.into(), 0))?;
    s.connect(to).await
}

/// The first bytes a client stalled mid-TLS-handshake sends: the
/// SSLRequest, then the first half of a real ClientHello.
pub fn stalled_tls_prefix(pki: &Pki) -> Vec<u8> {
    let mut tls = rustls::ClientConnection::new(
        client_config(pki, Some(&pki.app)),
        "localhost".try_into().unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    let mut bytes = frame(1, &fixed_prefix(true));
    bytes.extend_from_slice(&hello[..hello.len() / 2]);
    bytes
}

/// The SSLRequest alone: a client that asks for TLS and then sends nothing.
pub fn ssl_request() -> Vec<u8> {
    frame(1, &fixed_prefix(true))
}

/// Sends `bytes` (nothing, for a silent client) and then nothing more.
pub async fn stall(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    if !bytes.is_empty() {
        stream.write_all(bytes).await?;
    }
    Ok(())
}

/// Reads and discards (the greeting) until the peer closes: completes when
/// portcullis has closed the connection.
pub async fn closed(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn listener_state(proxy: &TestProxy, name: &str) -> Arc<ListenerState> {
    proxy
        .state()
        .listeners
        .iter()
        .find(|l| l.name() == name)
        .unwrap_or_else(|| panic!("no listener {name:?}"))
        .clone()
}

/// How many connections of listener `listener` ended with `label`.
pub fn outcome_count(proxy: &TestProxy, listener: &str, label: &str) -> u64 {
    let l = listener_state(proxy, listener);
    l.metrics
        .outcomes()
        .iter()
        .find(|(o, _)| &**o == label)
        .map_or(0, |(_, n)| *n)
}

/// The connections of `listener` waiting at its door now (accepted, not
/// yet past TLS with a verified certificate and the handshake response).
pub fn waiting(proxy: &TestProxy, listener: &str) -> usize {
    let l = listener_state(proxy, listener);
    l.runtime.door.waiting()
}

/// How many connections `listener` closed to make room since start.
pub fn evicted(proxy: &TestProxy, listener: &str) -> u64 {
    let l = listener_state(proxy, listener);
    l.runtime.door.evicted_total()
}

/// Waits (up to a minute) until `cond` holds; panics with `what` if not.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
