//! One client connection, from accept to close.
//!
//! The connection phase runs as named steps; the client's side is in
//! [`door`], the backend's in [`auth`], routing in [`route`]:
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
//! backend → client (docs/design.md §3.4). How every ending is reported —
//! label, log, counters, the ERR a client gets — is [`crate::outcome`]'s.

mod auth;
mod door;
pub mod info;
mod route;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::backend::BackendRuntime;
use crate::listener::ListenerRuntime;
use crate::live::Registration;
use crate::metrics::ByteCounts;
use crate::outcome::{Finished, SessionError, Stage};
use crate::packet_io::PacketReader;
use crate::prefixed::PrefixedIo;
use crate::protocol::{Capabilities, ErrPacket, Greeting, ERR_HEADER};
use crate::relay;
use crate::reload::reloadable;
use auth::{AuthEnd, AuthRelay, BackendConn};
pub use door::refuse;
pub use info::SessionInfo;
use route::{redirect_target, resolve_route};

/// Any byte stream a client can arrive on (TCP, Unix socket, in-memory).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// The client stream after the optional TLS upgrade.
type ClientStream<S> = Either<S, Box<tokio_rustls::server::TlsStream<S>>>;

/// How long a session closed for revocation may take to send its TLS
/// close_notify before the socket is dropped anyway.
const REVOKE_CLOSE_GRACE: Duration = Duration::from_secs(1);

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
        r = relay::relay(&mut client, &mut backend, listener.config.idle_timeout, &meters, None) => r,
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
    let e = SessionError::NoBackend(why);
    let err = e
        .client_err(&listener.config, &Stage::Door)
        .expect("the outcome table answers no_backend");
    let answer = refuse(client, listener, info, &err);
    match tokio::time::timeout(listener.config.handshake_timeout, answer).await {
        Ok(Err(e)) => Err(e),
        _ => Err(e),
    }
}

/// Registers a session that presented a client certificate, so reloads of
/// trust material reach it. Material swapped in since its handshake may
/// have been swept before it registered: it then checks itself against the
/// material in service.
fn register_live<'a, S: ClientIo>(
    listener: &'a ListenerRuntime,
    client: &PrefixedIo<ClientStream<S>>,
    info: &SessionInfo,
) -> Option<Registration<'a>> {
    let rt = listener.tls.as_ref()?;
    let Either::Right(tls) = client.get_ref() else {
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

/// A finished connection phase: both legs, each with what was read past
/// the end of authentication replayed first ([`PrefixedIo`]); or the
/// backend's refusal of the credentials, passed on.
enum Phase<S: ClientIo> {
    Ready {
        client: PrefixedIo<ClientStream<S>>,
        backend: PrefixedIo<BackendConn>,
    },
    AuthRejected {
        code: u16,
    },
}

/// The connection phase with a backend: its greeting (relayed with
/// CLIENT_SSL as the listener offers TLS), the client's SSLRequest and TLS,
/// its HandshakeResponse, outbound TLS, and authentication relayed until
/// the backend's OK or ERR.
async fn connection_phase<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    target: &BackendRuntime,
    info: &mut SessionInfo,
) -> Result<Phase<S>, SessionError> {
    let limit = listener.config.max_handshake_packet;
    let name = target.config.name.as_str();
    info.backend = Some(target.config.name.clone());

    // Greeting: connect and read the backend's greeting, both within the
    // backend's connect timeout. Without one, the client still gets TLS and
    // then a readable ERR (never an ERR before TLS: docs/design.md §3.6).
    let (backend, mut backend_reader, mut greeting_pkt) =
        match auth::backend_greeting(target, info.origin, limit).await {
            Ok(g) => g,
            Err(e) => return Err(refuse_at(client, listener, info, e, Stage::Connect(name)).await?),
        };
    if greeting_pkt.payload().first() == Some(&ERR_HEADER) {
        // e.g. "Host is blocked" or "Too many connections": relay as is.
        let mut client = client;
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
            let e = SessionError::BackendProtocol(format!("bad greeting: {e}"));
            return Err(refuse_at(client, listener, info, e, Stage::Connect(name)).await?);
        }
    };
    let tls = listener.tls.as_ref().map(|t| t.material.load());
    let backend_offers_tls = greeting.capabilities.has(Capabilities::SSL);
    greeting.set_ssl(greeting_pkt.payload_mut(), tls.is_some());
    let mut client = client;
    client
        .write_all(&greeting_pkt.bytes)
        .await
        .map_err(SessionError::ClientIo)?;

    // SslRequested / TlsEstablished.
    let greeting_seq = greeting_pkt.header.seq;
    let (mut client, first) =
        door::upgrade(client, listener, info, tls.as_deref(), greeting_seq).await?;
    let client_tls = matches!(client, Either::Right(_));

    // ResponseRead: the HandshakeResponse, over TLS or (plaintext listener)
    // the first packet already read. Over TLS it follows the SSLRequest
    // (greeting seq + 2).
    let mut client_reader = PacketReader::new();
    let expected_seq = greeting_seq.wrapping_add(1 + u8::from(client_tls));
    let resp = door::read_response(
        &mut client,
        &mut client_reader,
        first,
        listener,
        info,
        expected_seq,
    )
    .await?;

    // Outbound TLS, then Authenticating.
    let mut backend = match auth::outbound_tls(
        backend,
        &mut backend_reader,
        target,
        backend_offers_tls,
        resp.payload(),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            let seq = resp.header.seq.wrapping_add(1);
            auth::tell_client(&mut client, listener, seq, &e, &Stage::BackendTls(name)).await;
            return Err(e);
        }
    };
    let end = AuthRelay {
        client: &mut client,
        client_reader: &mut client_reader,
        backend: &mut backend,
        backend_reader: &mut backend_reader,
        listener,
        target,
    }
    .run(resp)
    .await?;
    match end {
        AuthEnd::Rejected { code } => Ok(Phase::AuthRejected { code }),
        // Anything read past the OK belongs to the command phase.
        AuthEnd::Ok => Ok(Phase::Ready {
            client: PrefixedIo::new(client_reader.take_leftover(), client),
            backend: PrefixedIo::new(backend_reader.take_leftover(), backend),
        }),
    }
}

/// Answers a client whose backend failed before anything was relayed to
/// it (`e` at `stage`) with portcullis's own greeting, TLS and the ERR the
/// outcome table gives; `Ok(e)` hands the error back for the log, `Err`
/// is what went wrong with the client meanwhile.
async fn refuse_at<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    e: SessionError,
    stage: Stage<'_>,
) -> Result<SessionError, SessionError> {
    let err = e
        .client_err(&listener.config, &stage)
        .expect("the outcome table answers backend failures");
    refuse(client, listener, info, &err).await?;
    Ok(e)
}
