//! One client connection, from accept to close.
//!
//! The connection phase runs as named steps, each a function below:
//!
//! ```text
//! Greeting ─► SslRequested ─► TlsEstablished ─► ResponseRead ─► Authenticating ─► Relaying ─► Closed
//!     └─ (no backend: own greeting) ─► ... ─► ResponseRead ─► Refused (ERR) ─► Closed
//! ```
//!
//! Sequence ids: the client leg counts the SSLRequest and the backend leg
//! does not (or the other way round with outbound TLS), so until the
//! backend's OK/ERR ends authentication every packet's id is shifted by
//! `backend_tls - client_tls` going client → backend, and back going
//! backend → client.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use rustls_pki_types::UnixTime;

use std::sync::Arc;

use crate::backend::{self, BackendRuntime, BackendStream};
use crate::config::{OnPrimaryChange, TopologyRoute};
use crate::failover::FailoverTarget;
use crate::listener::{ListenerRuntime, RouteRuntime};
use crate::live::Registration;
use crate::metrics::{ByteCounts, Transferred};
use crate::outcome::{Finished, SessionError};
use crate::packet_io::{read_packet_exact, write_own_packet, Packet, PacketReader, ReadError};
use crate::protocol::err::OK_HEADER;
use crate::protocol::greeting::{self, Greeting};
use crate::protocol::response::{self, HandshakeResponse};
use crate::protocol::{Capabilities, ErrPacket, ERR_HEADER};
use crate::relay;
use crate::reload::reloadable;
use crate::tls::{self, CertInfo};

/// Any byte stream a client can arrive on (TCP, Unix socket, in-memory).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// The client stream after the optional TLS upgrade.
type ClientStream<S> = Either<S, Box<tokio_rustls::server::TlsStream<S>>>;

/// Error code sent when the backend cannot be reached. ER_UNKNOWN_ERROR
/// (1105, SQLSTATE HY000): a server-side error clients display as is.
/// Codes 2000–2999 and 5000–5999 are client-side codes that connectors treat
/// as a malformed server answer, so they must not be used.
pub const ERR_BACKEND_UNAVAILABLE: u16 = 1105;
/// ER_ACCESS_DENIED_ERROR, for a client that skips TLS on a TLS listener.
pub const ERR_TLS_REQUIRED: u16 = 1045;
/// ER_CON_COUNT_ERROR, "Too many connections".
pub const ERR_TOO_MANY_CONNECTIONS: u16 = 1040;
/// ER_HANDSHAKE_ERROR, "Bad handshake".
pub const ERR_BAD_HANDSHAKE: u16 = 1043;

/// How long a session closed for revocation may take to send its TLS
/// close_notify before the socket is dropped anyway.
const REVOKE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Everything known about a session, for its log line and metrics.
#[derive(Debug, Default)]
pub struct SessionInfo {
    pub tls_version: Option<&'static str>,
    pub client_cert: Option<CertInfo>,
    pub user: Option<String>,
    pub database: Option<String>,
    pub backend: Option<String>,
    pub transferred: Transferred,
    /// When the connection phase ended (relay started), for the handshake
    /// latency metric.
    pub handshake_done: Option<Duration>,
    /// When the client certificate was verified, and the generation of the
    /// TLS material that verified it.
    pub verified: Option<(UnixTime, u64)>,
    /// The client's and the listener's addresses (TCP), for the PROXY
    /// protocol header.
    pub origin: backend::Origin,
}

/// Serves one client connection until it closes. Relayed bytes are added
/// to `totals` (the listener's `portcullis_bytes_total`) as they flow, and
/// to `info.transferred` when the session ends.
pub async fn serve<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    cancel: &CancellationToken,
    totals: &ByteCounts,
) -> Result<Finished, SessionError> {
    let started = tokio::time::Instant::now();
    let deadline = listener.config.handshake_timeout;

    // Redirect: decided at accept time from one snapshot of the settings,
    // answered after TLS and the HandshakeResponse, without a backend.
    let failover = listener.failover.load();
    if failover.applies(listener.is_unix(), listener.config.admin) {
        if let Some(target) = failover.target.clone() {
            let (target, packet) = match redirect_target(listener, target) {
                Ok(t) => {
                    let packet = failover.packet_to(&t);
                    (t, packet)
                }
                Err(why) => return Box::pin(refuse_no_backend(client, listener, info, why)).await,
            };
            let answer = Box::pin(refuse(client, listener, info, &packet));
            return match tokio::select! {
                r = tokio::time::timeout(deadline, answer) => r,
                _ = cancel.cancelled() => return Err(SessionError::Shutdown),
            } {
                Ok(Ok(())) => Ok(Finished::Redirected { target }),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(SessionError::HandshakeTimeout(deadline)),
            };
        }
    }

    // Route: the backend for this connection, from the topology snapshot
    // now (a `primary` route may wait up to primary_wait for one).
    let route = tokio::select! {
        r = resolve_route(listener) => r,
        _ = cancel.cancelled() => return Err(SessionError::Shutdown),
    };
    let (target, tenure) = match route {
        Ok(r) => r,
        Err(why) => return Box::pin(refuse_no_backend(client, listener, info, why)).await,
    };
    let _routed = target.route_session();
    // Boxed: the connection phase's state (TLS accept, packet readers) is
    // several KiB and would otherwise stay in every idle session's task.
    let phase = tokio::time::timeout(
        deadline,
        Box::pin(connection_phase(client, listener, &target, info)),
    );
    let (mut client, mut backend) = tokio::select! {
        r = phase => match r {
            Ok(Ok(Phase::Ready { client, backend })) => (client, backend),
            Ok(Ok(Phase::AuthRejected { code })) => return Ok(Finished::AuthRejected { code }),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(SessionError::HandshakeTimeout(deadline)),
        },
        _ = cancel.cancelled() => return Err(SessionError::Shutdown),
    };
    info.handshake_done = Some(started.elapsed());
    let live = register_live(listener, &client, info);
    let revoked = async {
        match &live {
            Some(r) => r.session.revoked().await,
            None => std::future::pending().await,
        }
    };
    let demoted = async {
        match &tenure {
            Some(t) => t.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let bytes = ByteCounts::default();
    let meters = [&bytes, totals];
    let finished = tokio::select! {
        r = relay::relay(&mut client, &mut backend, listener.config.idle_timeout, &meters) => r,
        _ = cancel.cancelled() => Finished::Closed,
        reason = revoked => Finished::Revoked { reason },
        _ = demoted => Finished::PrimaryChanged,
    };
    if let Finished::Revoked { .. } | Finished::PrimaryChanged = finished {
        // A clean TLS close, so the client reports a lost connection rather
        // than a TLS error; an ERR packet cannot be injected mid-command.
        let _ = tokio::time::timeout(REVOKE_CLOSE_GRACE, client.shutdown()).await;
    }
    info.transferred = bytes.snapshot();
    Ok(finished)
}

/// Answers a client the route found no backend for: ERR 1105 with `why`,
/// after TLS and its handshake response.
async fn refuse_no_backend<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    why: String,
) -> Result<Finished, SessionError> {
    let err = ErrPacket::new(
        ERR_BACKEND_UNAVAILABLE,
        b"HY000",
        format!("portcullis: listener '{}': {why}", listener.config.name),
    );
    let answer = refuse(client, listener, info, &err);
    match tokio::time::timeout(listener.config.handshake_timeout, answer).await {
        Ok(Err(e)) => Err(e),
        _ => Err(SessionError::NoBackend(why)),
    }
}

/// The `host:port` a redirected client is sent to: the configured target,
/// or for `"primary"` the current primary's `advertise` address.
fn redirect_target(listener: &ListenerRuntime, target: FailoverTarget) -> Result<String, String> {
    if let FailoverTarget::Address(target) = target {
        return Ok(target);
    }
    let topology = listener
        .topology
        .as_ref()
        .ok_or("failover_target = \"primary\" without a [monitor]")?;
    let name = topology
        .primary()
        .ok_or("no primary is known to redirect to; try again later")?;
    topology
        .backend(&name)
        .and_then(|m| m.backend.config.advertise.clone())
        .ok_or_else(|| format!("the primary {name:?} has no advertise address to redirect to"))
}

/// Picks the backend for a new connection; with `on_primary_change =
/// "close"`, a `primary` route also returns the tenure token that ends the
/// session when the primary changes. `Err` says why no backend is
/// available, for the client.
async fn resolve_route(
    listener: &ListenerRuntime,
) -> Result<(Arc<BackendRuntime>, Option<CancellationToken>), String> {
    let (kind, topology) = match &listener.route {
        RouteRuntime::Fixed(b) => return Ok((b.clone(), None)),
        RouteRuntime::Topology { kind, topology } => (kind, topology),
    };
    let cfg = &listener.config;
    match kind {
        TopologyRoute::Primary => {
            // The token first: a change after this closes the session
            // (too early at worst, never too late).
            let tenure = topology.tenure();
            let mut primary = topology.watch_primary();
            let name =
                match tokio::time::timeout(cfg.primary_wait, primary.wait_for(|p| p.is_some()))
                    .await
                {
                    Ok(Ok(p)) => p.clone().unwrap_or_default(),
                    _ => {
                        return Err(format!(
                            "no primary is available (waited {:?}); try again later",
                            cfg.primary_wait
                        ))
                    }
                };
            let backend = topology
                .backend(&name)
                .map(|m| m.backend.clone())
                .ok_or_else(|| format!("primary {name:?} is not a configured backend"))?;
            let tenure = (cfg.on_primary_change == OnPrimaryChange::Close).then_some(tenure);
            Ok((backend, tenure))
        }
        TopologyRoute::Replica => topology
            .pick("replica", cfg.max_replica_lag)
            .map(|b| (b, None))
            .ok_or_else(|| "no healthy replica is available; try again later".to_string()),
        TopologyRoute::Any => topology
            .pick("any", None)
            .map(|b| (b, None))
            .ok_or_else(|| "no healthy backend is available; try again later".to_string()),
    }
}

/// Registers a session that presented a client certificate, so reloads of
/// trust material reach it. Material swapped in since its handshake may
/// have been swept before it registered: it then checks itself against the
/// material in service.
fn register_live<'a, S: ClientIo>(
    listener: &'a ListenerRuntime,
    client: &ClientStream<S>,
    info: &SessionInfo,
) -> Option<Registration<'a>> {
    let rt = listener.tls.as_ref()?;
    let Either::Right(tls) = client else {
        return None;
    };
    let chain = tls.get_ref().1.peer_certificates()?.to_vec();
    let (verified_at, generation) = info.verified?;
    let cert = info.client_cert.as_ref();
    let reg = rt.live.register(
        chain,
        verified_at,
        generation,
        cert.map(|c| c.subject.clone()).unwrap_or_default(),
        cert.map(|c| c.serial.clone()).unwrap_or_default(),
    );
    let current = rt.material.load();
    if current.generation != generation {
        if let Err(reason) = current.recheck(&reg.session.chain, verified_at) {
            reloadable::refuse_live(
                &listener.config.name,
                rt,
                current.source.on_revoke,
                &reg.session,
                reason,
            );
        }
    }
    Some(reg)
}

/// Maps a backend read failure; a TLS error (an alert from the backend,
/// e.g. refusing our client certificate) becomes [`SessionError::BackendTls`].
fn backend_read_error(e: ReadError) -> SessionError {
    match e {
        ReadError::Io(source)
            if source
                .get_ref()
                .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some()) =>
        {
            SessionError::BackendTls {
                reason: match tls::failure_reason(&source) {
                    "alert_from_client" => "alert_from_backend",
                    r => r,
                },
                source,
            }
        }
        e => SessionError::from_backend_read(e),
    }
}

/// The backend stream after the optional outbound TLS upgrade.
type BackendConn = Either<BackendStream, Box<tokio_rustls::client::TlsStream<BackendStream>>>;

/// Sends the SSLRequest (sequence id 1, right after the greeting) built
/// from the client's response, and runs TLS with the backend.
async fn backend_upgrade(
    mut backend: BackendStream,
    response: &[u8],
    tls: &tls::ClientTls,
) -> Result<tokio_rustls::client::TlsStream<BackendStream>, SessionError> {
    let mut request = response
        .get(..response::SSL_REQUEST_LEN)
        .ok_or_else(|| SessionError::ClientProtocol("handshake response too short".into()))?
        .to_vec();
    response::set_ssl(&mut request, true);
    write_own_packet(&mut backend, 1, &request)
        .await
        .map_err(SessionError::BackendIo)?;
    tokio_rustls::TlsConnector::from(tls.config.clone())
        .connect(tls.server_name.clone(), backend)
        .await
        .map_err(|source| backend_read_error(ReadError::Io(source)))
}

fn backend_tls_failed(l: &ListenerRuntime, b: &BackendRuntime, e: &SessionError) -> ErrPacket {
    ErrPacket::new(
        ERR_BACKEND_UNAVAILABLE,
        b"HY000",
        format!(
            "portcullis: listener '{}': database unavailable (TLS to backend '{}' failed: {}; try again later)",
            l.config.name,
            b.config.name,
            match e {
                SessionError::BackendTls { source, .. } => source.to_string(),
                e => e.to_string(),
            }
        ),
    )
}

enum Phase<S: ClientIo> {
    Ready {
        client: ClientStream<S>,
        backend: BackendConn,
    },
    AuthRejected {
        code: u16,
    },
}

async fn connection_phase<S: ClientIo>(
    mut client: S,
    listener: &ListenerRuntime,
    target: &BackendRuntime,
    info: &mut SessionInfo,
) -> Result<Phase<S>, SessionError> {
    let limit = listener.config.max_handshake_packet;
    info.backend = Some(target.config.name.clone());

    // Greeting: connect and read the backend's greeting, both within the
    // backend's connect timeout. Without one, the client still gets TLS and
    // then a readable ERR (never an ERR before TLS: Connector/C 3.3.9+ turns
    // that into error 2002).
    let (backend, mut backend_reader, mut greeting_pkt) =
        match backend_greeting(target, info.origin, limit).await {
            Ok(g) => g,
            Err(e) => {
                let err = backend_unavailable(listener, target);
                refuse(client, listener, info, &err).await?;
                return Err(e);
            }
        };
    if greeting_pkt.payload().first() == Some(&ERR_HEADER) {
        // e.g. "Host is blocked" or "Too many connections": relay as is.
        let e = ErrPacket::parse(greeting_pkt.payload())
            .map_err(|e| SessionError::BackendProtocol(e.to_string()))?;
        client
            .write_all(&greeting_pkt.bytes)
            .await
            .map_err(SessionError::ClientIo)?;
        let _ = client.flush().await;
        return Err(SessionError::BackendRefused {
            code: e.code,
            message: e.message,
        });
    }
    let mut greeting = match Greeting::parse(greeting_pkt.payload()) {
        Ok(g) => g,
        Err(e) => {
            refuse(
                client,
                listener,
                info,
                &backend_unavailable(listener, target),
            )
            .await?;
            return Err(SessionError::BackendProtocol(format!("bad greeting: {e}")));
        }
    };
    let tls = listener.tls.as_ref().map(|t| t.material.load());
    let backend_offers_tls = greeting.capabilities.has(Capabilities::SSL);
    greeting.set_ssl(greeting_pkt.payload_mut(), tls.is_some());
    client
        .write_all(&greeting_pkt.bytes)
        .await
        .map_err(SessionError::ClientIo)?;

    // SslRequested / TlsEstablished.
    let (mut client, first) = upgrade(
        client,
        listener,
        info,
        tls.as_deref(),
        greeting_pkt.header.seq,
    )
    .await?;
    let client_tls = matches!(client, Either::Right(_));

    // ResponseRead: the HandshakeResponse, over TLS or (plaintext listener)
    // the first packet already read.
    let mut client_reader = PacketReader::new();
    // Over TLS the response follows the SSLRequest (greeting seq + 2).
    let expected_seq = greeting_pkt
        .header
        .seq
        .wrapping_add(1 + u8::from(client_tls));
    let mut resp = match first {
        Some(p) => p,
        None => match client_reader.read(&mut client, limit).await {
            Ok(p) => p,
            Err(e) => return Err(client_failed(&mut client, expected_seq, e).await),
        },
    };
    let parsed = match HandshakeResponse::parse(resp.payload()) {
        Ok(r) => r,
        Err(e) => {
            bad_handshake(&mut client, resp.header.seq.wrapping_add(1)).await;
            return Err(SessionError::ClientProtocol(format!(
                "handshake response: {e}"
            )));
        }
    };
    info.user = Some(parsed.user);
    info.database = parsed.database;

    // Outbound TLS: the SSLRequest (the response's fixed prefix with
    // CLIENT_SSL) and a TLS handshake with the backend, which must offer TLS:
    // there is no plaintext fallback.
    let mut backend = match target.tls.as_ref().map(|t| t.load()) {
        None => Either::Left(backend),
        Some(tls) => {
            let upgraded = if !backend_offers_tls {
                Err(SessionError::BackendTlsRefused)
            } else if !backend_reader.take_leftover().is_empty() {
                Err(SessionError::BackendProtocol(
                    "backend sent data before the SSLRequest".into(),
                ))
            } else {
                backend_upgrade(backend, resp.payload(), &tls).await
            };
            match upgraded {
                Ok(b) => Either::Right(Box::new(b)),
                Err(e) => {
                    let err = backend_tls_failed(listener, target, &e);
                    let _ = write_own_packet(
                        &mut client,
                        resp.header.seq.wrapping_add(1),
                        &err.encode(),
                    )
                    .await;
                    let _ = client.shutdown().await;
                    return Err(e);
                }
            }
        }
    };
    let backend_tls = matches!(backend, Either::Right(_));

    // Authenticating: relay the response with CLIENT_SSL as the backend leg
    // is (a set bit on a plaintext leg would make the server start a TLS
    // accept), then every auth round trip until the backend's OK or ERR.
    response::set_ssl(resp.payload_mut(), backend_tls);
    let to_backend = |seq: u8| {
        seq.wrapping_add(u8::from(backend_tls))
            .wrapping_sub(u8::from(client_tls))
    };
    let to_client = |seq: u8| {
        seq.wrapping_add(u8::from(client_tls))
            .wrapping_sub(u8::from(backend_tls))
    };
    // The sequence id the client expects next from us, for an ERR of our
    // own if the backend fails half-way through authentication.
    let mut next_to_client = resp.header.seq.wrapping_add(1);
    resp.set_seq(to_backend(resp.header.seq));
    if let Err(e) = backend.write_all(&resp.bytes).await {
        let e = SessionError::BackendIo(e);
        return Err(backend_failed(&mut client, next_to_client, listener, target, e).await);
    }

    let mut backend_continues = false;
    loop {
        enum Ev {
            Client(Result<Packet, ReadError>),
            Backend(Result<Packet, ReadError>),
        }
        let ev = tokio::select! {
            r = client_reader.read(&mut client, limit) => Ev::Client(r),
            r = backend_reader.read(&mut backend, limit) => Ev::Backend(r),
        };
        match ev {
            Ev::Client(r) => {
                let mut p = match r {
                    Ok(p) => p,
                    Err(e) => return Err(client_failed(&mut client, next_to_client, e).await),
                };
                next_to_client = p.header.seq.wrapping_add(1);
                p.set_seq(to_backend(p.header.seq));
                if let Err(e) = backend.write_all(&p.bytes).await {
                    let e = SessionError::BackendIo(e);
                    return Err(
                        backend_failed(&mut client, next_to_client, listener, target, e).await,
                    );
                }
            }
            Ev::Backend(r) => {
                let mut p = match r {
                    Ok(p) => p,
                    Err(e) => {
                        let e = backend_read_error(e);
                        if matches!(e, SessionError::BackendTls { .. }) {
                            // TLS 1.3: the backend judges our certificate
                            // after our handshake is done; its alert comes
                            // with the first read. Tell the client why.
                            let err = backend_tls_failed(listener, target, &e);
                            let _ =
                                write_own_packet(&mut client, next_to_client, &err.encode()).await;
                            let _ = client.shutdown().await;
                            return Err(e);
                        }
                        return Err(backend_failed(
                            &mut client,
                            next_to_client,
                            listener,
                            target,
                            e,
                        )
                        .await);
                    }
                };
                // During authentication the server sends OK (00), ERR (ff),
                // auth switch (fe) or more data (01); a packet that continues
                // a 16 MiB chunk starts with payload bytes, not a type.
                let kind = if backend_continues {
                    None
                } else {
                    p.payload().first().copied()
                };
                backend_continues = p.header.continues();
                p.set_seq(to_client(p.header.seq));
                next_to_client = p.header.seq.wrapping_add(1);
                client
                    .write_all(&p.bytes)
                    .await
                    .map_err(SessionError::ClientIo)?;
                client.flush().await.map_err(SessionError::ClientIo)?;
                match kind {
                    Some(OK_HEADER) => break,
                    Some(ERR_HEADER) => {
                        let code = ErrPacket::parse(p.payload()).map(|e| e.code).unwrap_or(0);
                        return Ok(Phase::AuthRejected { code });
                    }
                    _ => {}
                }
            }
        }
    }
    // Anything read past the OK belongs to the command phase: pass it on.
    let rest = client_reader.take_leftover();
    if !rest.is_empty() {
        backend
            .write_all(&rest)
            .await
            .map_err(SessionError::BackendIo)?;
    }
    let rest = backend_reader.take_leftover();
    if !rest.is_empty() {
        client
            .write_all(&rest)
            .await
            .map_err(SessionError::ClientIo)?;
        client.flush().await.map_err(SessionError::ClientIo)?;
    }
    Ok(Phase::Ready { client, backend })
}

/// Reads the client's first packet with exact reads and, on a TLS listener,
/// runs the TLS handshake on the same socket. Returns the (possibly
/// upgraded) stream and, on a plaintext listener, the HandshakeResponse
/// already read.
async fn upgrade<S: ClientIo>(
    mut client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    tls: Option<&tls::ServerTls>,
    greeting_seq: u8,
) -> Result<(ClientStream<S>, Option<Packet>), SessionError> {
    let limit = listener.config.max_handshake_packet;
    let expected = greeting_seq.wrapping_add(1);
    let first = match read_packet_exact(&mut client, limit, true).await {
        Ok(p) => p,
        // A raw TLS client cannot read a plaintext ERR: just close.
        Err(ReadError::LooksLikeTls) => return Err(SessionError::TlsWithoutSslRequest),
        Err(e) => return Err(client_failed(&mut client, expected, e).await),
    };
    if first.header.seq != expected {
        bad_handshake(&mut client, first.header.seq.wrapping_add(1)).await;
        return Err(SessionError::ClientProtocol(format!(
            "first packet has sequence id {}, expected {expected}",
            first.header.seq,
        )));
    }
    let wants_tls = response::is_ssl_request(first.payload());
    match (tls, wants_tls) {
        (Some(tls), true) => {
            let acceptor = TlsAcceptor::from(tls.config.clone());
            let stream = match acceptor.accept(client).into_fallible().await {
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
                        reason: tls::failure_reason(&source),
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
            info.client_cert = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| CertInfo::identity(c).ok());
            if let Err(reason) = tls.deferred_verdict(conn.peer_certificates()) {
                return Err(refuse_certificate(stream, listener, info, reason).await);
            }
            if info.client_cert.is_some() {
                info.verified = Some((UnixTime::now(), tls.generation));
            }
            Ok((Either::Right(Box::new(stream)), None))
        }
        (Some(_), false) => {
            if let Ok(r) = HandshakeResponse::parse(first.payload()) {
                info.user = Some(r.user);
            }
            let err = tls_required(listener);
            let _ = write_own_packet(&mut client, first.header.seq.wrapping_add(1), &err.encode())
                .await;
            Err(SessionError::TlsRequired)
        }
        (None, true) => Err(SessionError::TlsNotOffered),
        (None, false) => Ok((Either::Left(client), Some(first))),
    }
}

/// `cert_refusal = "mysql_error"`: the TLS handshake finished but the
/// client's certificate is refused (`reason`, a [`tls::failure_reason`]
/// label). Answers the HandshakeResponse with ERR 1045 naming the reason,
/// over TLS, and closes; nothing reaches a backend.
async fn refuse_certificate<S: ClientIo>(
    mut stream: tokio_rustls::server::TlsStream<S>,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    reason: &'static str,
) -> SessionError {
    let linger_for = LINGER_TIMEOUT.min(listener.config.handshake_timeout / 2);
    let mut reader = PacketReader::new();
    let read = reader.read(&mut stream, listener.config.max_handshake_packet);
    if let Ok(Ok(resp)) = tokio::time::timeout(linger_for, read).await {
        if let Ok(r) = HandshakeResponse::parse(resp.payload()) {
            info.user = Some(r.user);
        }
        let err = certificate_refused(listener, reason);
        let _ = write_own_packet(&mut stream, resp.header.seq.wrapping_add(1), &err.encode()).await;
    }
    linger_close(stream, linger_for).await;
    SessionError::TlsHandshake {
        reason,
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "client certificate refused after the TLS handshake (cert_refusal = \"mysql_error\"), answered with ERR 1045",
        ),
    }
}

/// Upper bounds for [`linger_close`]: how long, and how many bytes, to keep
/// reading from a client whose TLS handshake failed.
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
const LINGER_MAX_BYTES: usize = 256 * 1024;

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

/// Answers a client that cannot be served (no backend, too many
/// connections) with portcullis's own greeting, TLS as the listener
/// requires, then `err` after the HandshakeResponse.
pub async fn refuse<S: ClientIo>(
    mut client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    err: &ErrPacket,
) -> Result<(), SessionError> {
    let tls = listener.tls.as_ref().map(|t| t.material.load());
    let scramble = own_scramble();
    let g = greeting::build_own(&scramble, 0, tls.is_some());
    write_own_packet(&mut client, 0, &g)
        .await
        .map_err(SessionError::ClientIo)?;
    let (mut client, first) = upgrade(client, listener, info, tls.as_deref(), 0).await?;
    let resp = match first {
        Some(p) => p,
        None => PacketReader::new()
            .read(&mut client, listener.config.max_handshake_packet)
            .await
            .map_err(SessionError::from_client_read)?,
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

/// Connects to the listener's backend and reads its first packet (the
/// greeting, or an ERR such as "Too many connections"), all within the
/// backend's connect timeout: a server that accepts but never greets is as
/// unavailable as one that refuses.
async fn backend_greeting(
    target: &BackendRuntime,
    origin: backend::Origin,
    limit: usize,
) -> Result<(BackendStream, PacketReader, Packet), SessionError> {
    let cfg = &target.config;
    let greet = async {
        let mut backend = backend::connect(cfg, origin).await?;
        let mut reader = PacketReader::new();
        let greeting = reader
            .read(&mut backend, limit)
            .await
            .map_err(SessionError::from_backend_read)?;
        Ok((backend, reader, greeting))
    };
    match tokio::time::timeout(cfg.connect_timeout, greet).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::BackendUnavailable(
            backend::ConnectError::NoGreeting {
                addr: cfg.address.to_string(),
                timeout: cfg.connect_timeout,
            },
        )),
    }
}

/// Tells the client, at sequence id `seq`, that the backend failed during
/// authentication, closes, and hands back `e` for the log.
async fn backend_failed<C: AsyncWrite + Unpin>(
    client: &mut C,
    seq: u8,
    listener: &ListenerRuntime,
    target: &BackendRuntime,
    e: SessionError,
) -> SessionError {
    let err = ErrPacket::new(
        ERR_BACKEND_UNAVAILABLE,
        b"HY000",
        format!(
            "portcullis: listener '{}': backend '{}' failed during authentication; try again",
            listener.config.name, target.config.name
        ),
    );
    let _ = write_own_packet(client, seq, &err.encode()).await;
    let _ = client.shutdown().await;
    e
}

/// Maps a failed client read; a packet over the connection-phase limit
/// also gets "Bad handshake" at `seq` (as mariadbd answers one), since the
/// client is still there to read it.
async fn client_failed<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut C,
    seq: u8,
    e: ReadError,
) -> SessionError {
    if let ReadError::TooLarge { .. } = e {
        bad_handshake(client, seq.wrapping_add(1)).await;
    }
    SessionError::from_client_read(e)
}

/// ER_HANDSHAKE_ERROR "Bad handshake" at `seq`, then a lingering close;
/// best effort.
async fn bad_handshake<C: AsyncRead + AsyncWrite + Unpin>(client: &mut C, seq: u8) {
    let err = ErrPacket::new(ERR_BAD_HANDSHAKE, b"08S01", "Bad handshake");
    let _ = write_own_packet(client, seq, &err.encode()).await;
    let _ = client.shutdown().await;
    linger(client, LINGER_TIME, LINGER_BYTES).await;
}

/// How long a lingering close after "Bad handshake" waits for the client
/// to close, and how much it reads meanwhile.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

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

/// A random 20-byte scramble without NUL bytes (the greeting carries it as
/// a NUL-terminated field).
fn own_scramble() -> [u8; 20] {
    let mut s = [0u8; 20];
    rand::fill(&mut s);
    for b in &mut s {
        *b = 1 + (*b % 126);
    }
    s
}

fn backend_unavailable(l: &ListenerRuntime, b: &BackendRuntime) -> ErrPacket {
    ErrPacket::new(
        ERR_BACKEND_UNAVAILABLE,
        b"HY000",
        format!(
            "portcullis: listener '{}': database unavailable (backend '{}' cannot be reached; try again later)",
            l.config.name, b.config.name
        ),
    )
}

fn tls_required(l: &ListenerRuntime) -> ErrPacket {
    let needs_cert = l
        .config
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth == crate::config::ClientAuth::Required);
    let message = if needs_cert {
        format!(
            "portcullis: listener '{}' requires TLS with a client certificate; connect with --ssl and --ssl-cert/--ssl-key",
            l.config.name
        )
    } else {
        format!(
            "portcullis: listener '{}' requires TLS; connect with --ssl",
            l.config.name
        )
    };
    ErrPacket::new(ERR_TLS_REQUIRED, b"28000", message)
}

/// The ERR for a client whose certificate `cert_refusal = "mysql_error"`
/// refuses: ER_ACCESS_DENIED_ERROR, like mariadbd's own answer to a
/// `REQUIRE X509` user without a good certificate, with the reason.
fn certificate_refused(l: &ListenerRuntime, reason: &str) -> ErrPacket {
    let why = match reason {
        "no_client_cert" => {
            "no client certificate was presented (connect with --ssl-cert/--ssl-key)"
        }
        "revoked" => "the client certificate is revoked",
        "expired" => "the client certificate has expired",
        "not_yet_valid" => "the client certificate is not valid yet",
        "unknown_ca" => "the client certificate is not issued by a trusted CA",
        "unknown_revocation_status" => "no CRL covers the client certificate's issuer",
        "crl_expired" => "the CRL for the client certificate is past its next update",
        "wrong_key_usage" => "the client certificate is not for TLS client authentication",
        _ => "the client certificate is not acceptable",
    };
    ErrPacket::new(
        ERR_TLS_REQUIRED,
        b"28000",
        format!(
            "portcullis: listener '{}': TLS client certificate refused ({reason}): {why}",
            l.config.name
        ),
    )
}

/// The ERR for a client over a listener's connection limit.
pub fn too_many_connections() -> ErrPacket {
    ErrPacket::new(ERR_TOO_MANY_CONNECTIONS, b"08004", "Too many connections")
}
