//! The client's side of the connection phase: the SSLRequest and the TLS
//! handshake on the same socket, the HandshakeResponse, and every way a
//! client is answered without a backend (refusals, redirects, "Bad
//! handshake"), with the lingering closes that keep those answers from
//! being overtaken by a TCP reset.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::UnixTime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use super::info::SessionInfo;
use super::{ClientIo, ClientStream};
use crate::backend::BackendRuntime;
use crate::config::identity::CertNames;
use crate::config::BackendAddr;
use crate::listener::ListenerRuntime;
use crate::live::LiveSession;
use crate::outcome::{SessionError, Stage};
use crate::packet_io::{read_packet_exact, write_own_packet, Packet, PacketReader, ReadError};
use crate::protocol::command::ChangeUser;
use crate::protocol::greeting;
use crate::protocol::response::{self, HandshakeResponse};
use crate::protocol::{Capabilities, ErrPacket};
use crate::relay::{CommandPolicy, Verdict};
use crate::tls::{self, CertInfo, Peer, TlsFailure};

/// Upper bounds for [`linger_close`]: how long, and how many bytes, to keep
/// reading from a client whose TLS handshake failed.
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
const LINGER_MAX_BYTES: usize = 256 * 1024;

/// How long a lingering close after "Bad handshake" waits for the client
/// to close, and how much it reads meanwhile.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

/// Reads the client's first packet with exact reads and, on a TLS listener,
/// runs the TLS handshake on the same socket, both before `deadline`
/// (accept + `tls_handshake_timeout`). Returns the (possibly upgraded)
/// stream and, on a plaintext listener, the HandshakeResponse already read.
pub(super) async fn upgrade<S: ClientIo>(
    mut client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    tls: Option<&tls::ServerTls>,
    greeting_seq: u8,
    deadline: Instant,
) -> Result<(ClientStream<S>, Option<Packet>), SessionError> {
    let limit = listener.config.max_handshake_packet;
    let expected = greeting_seq.wrapping_add(1);
    let late = || SessionError::TlsHandshakeTimeout(listener.config.tls_handshake_timeout);
    let read = tokio::time::timeout_at(deadline, read_packet_exact(&mut client, limit, true));
    let first = match read.await.map_err(|_| late())? {
        Ok(p) => p,
        // A raw TLS client cannot read a plaintext ERR: just close.
        Err(ReadError::LooksLikeTls) => return Err(SessionError::TlsWithoutSslRequest),
        Err(e) => return Err(client_failed(&mut client, listener, expected, e).await),
    };
    if let Err(e) = in_order(&first, expected) {
        return Err(
            bad_handshake(&mut client, listener, first.header.seq.wrapping_add(1), e).await,
        );
    }
    let wants_tls = response::is_ssl_request(first.payload());
    match (tls, wants_tls) {
        (Some(tls), true) => {
            let stream = accept_tls(client, listener, info, tls, deadline).await?;
            Ok((Either::Right(Box::new(stream)), None))
        }
        (Some(_), false) => {
            if let Ok(r) = HandshakeResponse::parse(first.payload()) {
                info.user = Some(r.user);
            }
            let e = SessionError::TlsRequired;
            send_err(&mut client, listener, first.header.seq.wrapping_add(1), &e).await;
            Err(e)
        }
        (None, true) => Err(SessionError::TlsNotOffered),
        (None, false) => Ok((Either::Left(client), Some(first))),
    }
}

/// Runs the TLS handshake after the SSLRequest and records what it showed
/// (version, client certificate); a certificate that `cert_refusal =
/// "mysql_error"` defers is judged here, right after the handshake.
async fn accept_tls<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    tls: &tls::ServerTls,
    deadline: Instant,
) -> Result<tokio_rustls::server::TlsStream<S>, SessionError> {
    let acceptor = TlsAcceptor::from(tls.config.clone());
    let accept = tokio::time::timeout_at(deadline, acceptor.accept(client).into_fallible());
    let late = SessionError::TlsHandshakeTimeout(listener.config.tls_handshake_timeout);
    let stream = match accept.await.map_err(|_| late)? {
        Ok(stream) => stream,
        Err((source, client)) => {
            // At most half the handshake timeout, so that a client that
            // stays is still logged as a TLS failure, not a timeout.
            linger_close(
                client,
                LINGER_TIMEOUT.min(listener.config.handshake_timeout / 2),
            )
            .await;
            return Err(SessionError::TlsHandshake {
                reason: TlsFailure::from_io(&source, Peer::Client),
                source,
            });
        }
    };
    let conn = stream.get_ref().1;
    info.tls_version = conn.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    });
    if let Some(Ok((cert, names))) = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| CertInfo::client(c))
    {
        info.client_cert = Some(cert);
        info.cert_names = Some(Arc::new(names));
    }
    if let Err(reason) = tls.deferred_verdict(conn.peer_certificates()) {
        return Err(refuse_certificate(stream, listener, info, reason).await);
    }
    if info.client_cert.is_some() {
        info.verified = Some((UnixTime::now(), tls.generation));
    }
    Ok(stream)
}

/// Reads the HandshakeResponse (unless the plaintext listener's upgrade
/// already did: `first`), records its user and database, and answers one
/// that is out of order or does not parse with "Bad handshake".
/// `expected_seq` is the sequence id it must carry (2 inside TLS, after the
/// SSLRequest), also for an ERR when it cannot be read.
pub(super) async fn read_response<S: ClientIo>(
    client: &mut ClientStream<S>,
    reader: &mut PacketReader,
    first: Option<Packet>,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    expected_seq: u8,
) -> Result<(Packet, HandshakeResponse), SessionError> {
    let resp = match first {
        Some(p) => p,
        None => match reader
            .read(client, listener.config.max_handshake_packet)
            .await
        {
            Ok(p) => p,
            Err(e) => return Err(client_failed(client, listener, expected_seq, e).await),
        },
    };
    // Inside TLS nothing has checked its sequence id yet: a response out of
    // order (a second SSLRequest's seq 1, a replayed packet) must not be
    // relayed, where the shifted id would reach the backend out of order too.
    if let Err(e) = in_order(&resp, expected_seq) {
        return Err(bad_handshake(client, listener, resp.header.seq.wrapping_add(1), e).await);
    }
    match HandshakeResponse::parse(resp.payload()) {
        Ok(parsed) => {
            info.user = Some(parsed.user.clone());
            info.database = parsed.database.clone();
            Ok((resp, parsed))
        }
        Err(e) => {
            let e = SessionError::ClientProtocol(format!("handshake response: {e}"));
            Err(bad_handshake(client, listener, resp.header.seq.wrapping_add(1), e).await)
        }
    }
}

/// A connection-phase packet from the client must carry `expected`.
fn in_order(p: &Packet, expected: u8) -> Result<(), SessionError> {
    if p.header.seq == expected {
        return Ok(());
    }
    Err(SessionError::ClientProtocol(format!(
        "handshake packet has sequence id {}, expected {expected}",
        p.header.seq,
    )))
}

/// `cert_refusal = "mysql_error"`: the TLS handshake finished but the
/// client's certificate is refused for `reason`. Answers the HandshakeResponse with ERR 1045 naming the reason,
/// over TLS, and closes; nothing reaches a backend.
async fn refuse_certificate<S: ClientIo>(
    mut stream: tokio_rustls::server::TlsStream<S>,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    reason: TlsFailure,
) -> SessionError {
    let e = SessionError::CertificateRefused { reason };
    let linger_for = LINGER_TIMEOUT.min(listener.config.handshake_timeout / 2);
    let mut reader = PacketReader::new();
    let read = reader.read(&mut stream, listener.config.max_handshake_packet);
    if let Ok(Ok(resp)) = tokio::time::timeout(linger_for, read).await {
        if let Ok(r) = HandshakeResponse::parse(resp.payload()) {
            info.user = Some(r.user);
        }
        send_err(&mut stream, listener, resp.header.seq.wrapping_add(1), &e).await;
    }
    linger_close(stream, linger_for).await;
    e
}

/// Answers a client that is not relayed (no backend, too many connections,
/// a redirect) with portcullis's own greeting, TLS as the listener
/// requires, then `err` after the HandshakeResponse, and closes.
pub async fn refuse<S: ClientIo>(
    mut client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    err: &ErrPacket,
    deadline: Instant,
) -> Result<(), SessionError> {
    let tls = listener.tls.as_ref().map(|t| t.material.load());
    let scramble = own_scramble();
    let g = greeting::build_own(&scramble, 0, tls.is_some());
    write_own_packet(&mut client, 0, &g)
        .await
        .map_err(SessionError::ClientIo)?;
    let (mut client, first) = upgrade(client, listener, info, tls.as_deref(), 0, deadline).await?;
    let resp = match first {
        Some(p) => p,
        None => {
            let resp = PacketReader::new()
                .read(&mut client, listener.config.max_handshake_packet)
                .await
                .map_err(SessionError::from_client_read)?;
            // After the SSLRequest (seq 1), as in `read_response`.
            if let Err(e) = in_order(&resp, 2) {
                let seq = resp.header.seq.wrapping_add(1);
                return Err(bad_handshake(&mut client, listener, seq, e).await);
            }
            resp
        }
    };
    if let Ok(r) = HandshakeResponse::parse(resp.payload()) {
        info.user = Some(r.user);
        info.database = r.database;
    }
    write_own_packet(&mut client, resp.header.seq.wrapping_add(1), &err.encode())
        .await
        .map_err(SessionError::ClientIo)?;
    let _ = client.shutdown().await;
    Ok(())
}

/// Writes the ERR the outcome table gives `e` at the door, at `seq`; best
/// effort (the client may be gone).
pub(super) async fn send_err<C: AsyncWrite + Unpin>(
    client: &mut C,
    listener: &ListenerRuntime,
    seq: u8,
    e: &SessionError,
) {
    if let Some(err) = e.client_err(&listener.config, &Stage::Door) {
        let _ = write_own_packet(client, seq, &err.encode()).await;
    }
}

/// Maps a failed client read; a packet over the connection-phase limit
/// also gets "Bad handshake" at `seq` (as mariadbd answers one), since the
/// client is still there to read it.
pub(super) async fn client_failed<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    listener: &ListenerRuntime,
    seq: u8,
    e: ReadError,
) -> SessionError {
    let too_large = matches!(e, ReadError::TooLarge { .. });
    let e = SessionError::from_client_read(e);
    if too_large {
        return bad_handshake(client, listener, seq.wrapping_add(1), e).await;
    }
    e
}

/// Answers `e` (a malformed connection-phase packet) with its ERR ("Bad
/// handshake") at `seq`, then closes lingering; best effort. Hands `e`
/// back for the log.
pub(super) async fn bad_handshake<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    listener: &ListenerRuntime,
    seq: u8,
    e: SessionError,
) -> SessionError {
    send_err(client, listener, seq, &e).await;
    let _ = client.shutdown().await;
    linger(client, LINGER_TIME, LINGER_BYTES).await;
    e
}

/// Closes a connection whose TLS handshake failed without losing the alert
/// (rustls has already written it). With TLS 1.3 the client's handshake is
/// complete before the server has checked its certificate, so the client may
/// already be sending its HandshakeResponse. Closing a socket with unread
/// data makes the kernel answer with a TCP reset, and a client that writes
/// after the reset fails with "broken pipe" or "connection reset" before it
/// reads the alert (Connector/J reported `Broken pipe` instead of
/// `certificate_revoked`). So: send FIN after the alert, then read and
/// discard until the client closes, for at most `limit` and
/// [`LINGER_MAX_BYTES`].
async fn linger_close<S: ClientIo>(mut client: S, limit: Duration) {
    let _ = client.shutdown().await;
    linger(&mut client, limit, LINGER_MAX_BYTES).await;
}

/// Reads and discards what the client still sends, until it closes, for at
/// most `time` and `bytes`. Closing a socket with unread input makes the
/// kernel send a reset, which can destroy what was just written (an ERR, a
/// TLS alert) before the client reads it (the rest of an HTTP request, an
/// oversized packet's payload, a TLS 1.3 client's HandshakeResponse).
async fn linger<C: AsyncRead + Unpin>(client: &mut C, time: Duration, bytes: usize) {
    let drain = async {
        let mut scratch = [0u8; 4096];
        let mut left = bytes;
        while left > 0 {
            match client.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(time, drain).await;
}

/// The door's own checks on a client that showed its certificate and its
/// HandshakeResponse, before any backend is dialled: it can answer an
/// authentication switch, it does not log in as portcullis's own OS user
/// behind a Unix-socket backend, and the listener has a connection slot
/// for it (held until the session ends).
pub(super) fn admit(
    listener: &ListenerRuntime,
    target: &BackendRuntime,
    response: &HandshakeResponse,
    tls: Option<&tls::ServerTls>,
    names: Option<&CertNames>,
) -> Result<OwnedSemaphorePermit, SessionError> {
    if !response.capabilities.has(Capabilities::PLUGIN_AUTH) {
        return Err(SessionError::ClientWithoutPluginAuth);
    }
    refuse_proxy_user(listener, target, &response.user)?;
    check_identity(tls, names, &response.user)?;
    listener
        .slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| SessionError::TooManyConnections(listener.config.max_connections))
}

/// Behind a Unix-socket backend, mariadbd's `unix_socket` plugin logs in
/// the account named like the socket peer's OS user — portcullis's — with
/// nothing from the client. So that user name is refused, at login and at
/// COM_CHANGE_USER, unless the listener allows it (`allow_proxy_user`).
pub(super) fn refuse_proxy_user(
    listener: &ListenerRuntime,
    target: &BackendRuntime,
    user: &str,
) -> Result<(), SessionError> {
    let unix_backend = matches!(target.config.address, BackendAddr::Unix(_));
    if unix_backend
        && !listener.config.allow_proxy_user
        && crate::os_user::effective_name() == Some(user)
    {
        return Err(SessionError::ProxyUserRefused {
            user: user.to_string(),
        });
    }
    Ok(())
}

/// The listener's identity rules in `tls` (`[listener.identity]`, none:
/// anyone): whether the client certificate (`names`) may log in as `user`.
/// Rules and no certificate: nobody (they need `client_auth =
/// "required"`, so this does not happen).
pub(super) fn check_identity(
    tls: Option<&tls::ServerTls>,
    names: Option<&CertNames>,
    user: &str,
) -> Result<(), SessionError> {
    let Some(rules) = tls.and_then(|t| t.source.identity.as_ref()) else {
        return Ok(());
    };
    match names {
        Some(n) if rules.allows(n, user) => Ok(()),
        _ => Err(SessionError::IdentityRefused {
            identity: names.map_or_else(|| "(none)".to_string(), CertNames::label),
            user: user.to_string(),
        }),
    }
}

/// The door's checks again at every COM_CHANGE_USER in the command phase
/// ([`crate::relay`] holds the packet until this says): the new user must
/// not be portcullis's own OS user behind a Unix-socket backend, and the
/// listener's identity rules in service now must let the client
/// certificate use it. The user is recorded in the live session first
/// (`live`), so that a reload that narrows the rules re-checks it too.
pub(super) struct ChangeUserRules<'a> {
    pub listener: &'a ListenerRuntime,
    pub target: &'a BackendRuntime,
    pub live: Option<&'a LiveSession>,
}

impl CommandPolicy for ChangeUserRules<'_> {
    fn change_user(&self, cu: &ChangeUser<'_>) -> Verdict {
        let user = cu.user_lossy();
        if let Err(refusal) = refuse_proxy_user(self.listener, self.target, &user) {
            return Verdict::Refuse(refusal);
        }
        let Some(rt) = &self.listener.tls else {
            return Verdict::Forward;
        };
        let added = self.live.is_some_and(|l| l.add_user(&user));
        let names = self.live.and_then(|l| l.cert.names.as_deref());
        match check_identity(Some(&*rt.material.load()), names, &user) {
            Ok(()) => Verdict::Forward,
            Err(refusal) => {
                if let (true, Some(l)) = (added, self.live) {
                    l.drop_last_user();
                }
                Verdict::Refuse(refusal)
            }
        }
    }
}

/// The connection id portcullis's own greeting carries. It cannot be the
/// backend's thread id, which is only known once the backend is dialled
/// after the door: ids are taken from the top half of the 32-bit range,
/// which no MariaDB thread id reaches in practice, so a client's `KILL
/// QUERY <id>` (the mariadb CLI's Ctrl-C, Connector/J's cancel) is refused
/// as an unknown thread instead of hitting another session
/// (docs/design.md §3.9).
pub fn connection_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    0x8000_0000 | (NEXT.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff)
}

/// A random 20-byte scramble without NUL bytes (the greeting carries it as
/// a NUL-terminated field).
pub(super) fn own_scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    rand::fill(&mut s);
    for b in &mut s {
        *b = 1 + (*b % 126);
    }
    s
}
