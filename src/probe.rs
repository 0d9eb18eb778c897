//! The start-up probe of each backend: learn its greeting, and find out
//! whether the database trusts portcullis's own identity.
//!
//! Behind a Unix-socket backend, mariadbd's `unix_socket` plugin logs in
//! the account named like the socket peer's OS user — portcullis's — with
//! nothing from the client (docs/security.md, "Who the backend thinks you
//! are"). portcullis refuses that user name at its door, but an operator
//! should know the account exists and fix it. So at start (and in
//! `portcullis check`) each plaintext Unix-socket backend is asked to log in
//! that user the way a client through portcullis would be relayed: the
//! plugin renamed, then a random answer to whatever the server asks. If the
//! server says OK, the account trusts portcullis's identity and the log says
//! so loudly. The same connection teaches portcullis the backend's greeting
//! before the first client arrives.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::backend::{self, BackendRuntime};
use crate::config::BackendAddr;
use crate::packet_io::{write_own_packet, PacketReader};
use crate::protocol::err::OK_HEADER;
use crate::protocol::{Capabilities, ErrPacket, Greeting, GreetingTemplate, ERR_HEADER};

/// What the probe of one backend found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The backend let `user` — portcullis's own OS user — in with a random
    /// password: an account that trusts the socket peer's identity.
    TrustsProxyIdentity { user: String },
    /// It refused that login: nothing to report.
    Refused,
    /// Not probed for the identity (a TCP or TLS backend, or portcullis's
    /// OS user has no name); the greeting may still have been learned.
    NotApplicable,
    /// The backend could not be asked (down, not MySQL, timed out).
    Unreachable(String),
}

/// The largest packet the probe reads: a greeting or a short answer.
const MAX_PACKET: usize = 64 * 1024;

/// Probes `backend` within its connect timeout (twice: connect, then the
/// login), learning its greeting on the way.
pub async fn probe(backend: &BackendRuntime) -> Finding {
    let timeout = backend.config.connect_timeout * 2;
    match tokio::time::timeout(timeout, run(backend)).await {
        Ok(Ok(finding)) => finding,
        Ok(Err(why)) => Finding::Unreachable(why),
        Err(_) => Finding::Unreachable(format!("no answer within {timeout:?}")),
    }
}

async fn run(backend: &BackendRuntime) -> Result<Finding, String> {
    let mut s = backend::connect(&backend.config, backend::Origin::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = PacketReader::new();
    let greeting = reader
        .read(&mut s, MAX_PACKET)
        .await
        .map_err(|e| format!("reading its greeting: {e}"))?;
    let payload = greeting.payload();
    if payload.first() == Some(&ERR_HEADER) {
        let e = ErrPacket::parse(payload).map_err(|e| e.to_string())?;
        return Err(format!("it answered error {}: {}", e.code, e.message));
    }
    let g = Greeting::parse(payload).map_err(|e| format!("bad greeting: {e}"))?;
    if let Ok(t) = GreetingTemplate::learn(&g, payload) {
        backend.learn_greeting(t);
    }
    let user = match crate::os_user::effective_name() {
        Some(u) if applies(backend) => u,
        _ => return Ok(Finding::NotApplicable),
    };
    // The login a client of portcullis would be relayed with: the user,
    // no auth data, a plugin no account uses.
    let caps = Capabilities::PROTOCOL_41
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA;
    let mut response = caps.to_le_bytes().to_vec();
    response.extend_from_slice(&(1u32 << 24).to_le_bytes());
    response.push(45);
    response.extend_from_slice(&[0; 23]);
    response.extend_from_slice(user.as_bytes());
    response.push(0);
    response.push(0);
    response.extend_from_slice(crate::session::SWITCH_PLUGIN.as_bytes());
    response.push(0);
    let io = |e: std::io::Error| e.to_string();
    write_own_packet(&mut s, 1, &response).await.map_err(io)?;
    // Whatever the server asks (an auth switch, more data), it gets a
    // random answer: no password can match it.
    for _ in 0..4 {
        let p = reader
            .read(&mut s, MAX_PACKET)
            .await
            .map_err(|e| format!("reading its answer: {e}"))?;
        match p.payload().first() {
            Some(&OK_HEADER) => {
                let _ = write_own_packet(&mut s, 0, &[0x01]).await; // COM_QUIT
                let _ = s.shutdown().await;
                return Ok(Finding::TrustsProxyIdentity {
                    user: user.to_string(),
                });
            }
            Some(&ERR_HEADER) => return Ok(Finding::Refused),
            _ => {
                let mut answer = [0u8; 64];
                rand::fill(&mut answer);
                let len = if p.payload().first() == Some(&0xfe) && contains_ed25519(p.payload()) {
                    64
                } else {
                    20
                };
                let seq = p.header.seq.wrapping_add(1);
                write_own_packet(&mut s, seq, &answer[..len])
                    .await
                    .map_err(io)?;
            }
        }
    }
    Ok(Finding::Refused)
}

/// The identity question concerns plaintext Unix-socket backends: over TCP
/// `unix_socket` refuses everyone, and portcullis's outbound TLS goes to
/// another server's sidecar.
fn applies(backend: &BackendRuntime) -> bool {
    matches!(backend.config.address, BackendAddr::Unix(_)) && backend.tls.is_none()
}

fn contains_ed25519(payload: &[u8]) -> bool {
    payload.windows(14).any(|w| w == b"client_ed25519")
}

/// Probes every backend and logs what an operator must know: an account
/// that trusts portcullis's OS user (an ERROR naming it and the fix), and
/// running as root or as mariadbd's OS user in front of a Unix-socket
/// backend (a WARN). Returns the findings by backend name.
pub async fn report(backends: &[std::sync::Arc<BackendRuntime>]) -> Vec<(String, Finding)> {
    let mut found = Vec::new();
    let user = crate::os_user::effective_name();
    let unix_backend = backends.iter().any(|b| applies(b));
    if unix_backend {
        if let Some(u @ ("root" | "mysql")) = user {
            tracing::warn!(
                user = u,
                "portcullis runs as the OS user {u:?} in front of a Unix-socket backend: mariadbd's unix_socket authentication trusts the socket peer's OS user, here portcullis's; portcullis refuses logins as {u:?} (unless a listener sets allow_proxy_user = true), but run it as its own OS user (e.g. \"portcullis\") with no MariaDB account of that name"
            );
        }
    }
    for b in backends {
        let finding = probe(b).await;
        let name = &b.config.name;
        match &finding {
            Finding::TrustsProxyIdentity { user } => tracing::error!(
                backend = %name,
                account = %format!("'{user}'@'localhost'"),
                "the MariaDB account '{user}'@'localhost' logs in portcullis's own OS user {user:?} without a password (unix_socket authentication): anyone who reached it through portcullis would be let in on portcullis's identity. portcullis refuses logins as {user:?} (unless a listener sets allow_proxy_user = true), but fix the cause: run portcullis as an OS user with no MariaDB account of that name, or drop unix_socket from the account (ALTER USER '{user}'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('…'))"
            ),
            Finding::Unreachable(why) => tracing::warn!(
                backend = %name,
                error = %why,
                "start-up probe: the backend could not be asked (clients get portcullis's default greeting until it answers)"
            ),
            Finding::Refused | Finding::NotApplicable => {
                tracing::debug!(backend = %name, ?finding, "start-up probe")
            }
        }
        found.push((name.clone(), finding));
    }
    found
}

/// How long `portcullis check` waits for all probes together.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
