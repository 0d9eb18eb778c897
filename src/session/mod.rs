//! One client connection, from accept to close.
//!
//! The connection phase runs as named steps; the client's side is in
//! [`door`], the backend's in [`auth`], routing in [`route`], the failover
//! redirect's two forms in [`redirect`]:
//!
//! ```text
//! Greeting (own) ─► SslRequested ─► TlsEstablished ─► ResponseRead ─► the door ─┐
//!   ┌──────────────────────────────────────────────────────────────────────────┘
//!   └─► Connecting ─► Authenticating (the backend's auth switch) ─► Relaying ─► Closed
//!        (refused at the door, redirected with the error form, or no
//!         backend: ERR after TLS ─► Closed; redirected with `redirect_url`:
//!         the tracker in the OK that ends Authenticating)
//! ```
//!
//! Nothing reaches the backend before the door (docs/design.md §3.9).
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
mod redirect;
mod route;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::admission::{Evicted, Ticket};
use crate::backend::BackendRuntime;
use crate::listener::ListenerRuntime;
use crate::live::{Registration, Revocation, SessionCert};
use crate::metrics::ByteCounts;
use crate::outcome::{Finished, SessionError, Stage};
use crate::packet_io::{write_own_packet, Packet, PacketReader};
use crate::prefixed::PrefixedIo;
use crate::protocol::Capabilities;
use crate::relay;
use crate::reload::reloadable;
use crate::sessions::{Identity, SessionRecord};
use auth::{AuthEnd, AuthRelay, BackendConn};
pub use door::{connection_id, refuse};
pub use info::SessionInfo;
use redirect::Plan;
use route::resolve_route;

/// Any byte stream a client can arrive on (TCP, Unix socket, in-memory).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for T {}

/// The client stream after the optional TLS upgrade.
type ClientStream<S> = Either<S, Box<tokio_rustls::server::TlsStream<S>>>;

/// How long a session closed by portcullis (revocation, primary change,
/// the drain deadline, a refused change of user) may take to send its TLS
/// close_notify before the socket is dropped anyway.
const REVOKE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one client connection until it closes. Until it passes the door
/// it holds `ticket`, its place in the listener's waiting room
/// (max_unauthenticated; taken by the accept loop), and must show its
/// certificate within tls_handshake_timeout. Relayed bytes are added
/// to `totals` (the listener's `portcullis_bytes_total`) and to its
/// `record` (`/sessions`) as they flow, and to `info.transferred` when the
/// session ends.
pub async fn serve<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    mut ticket: Ticket,
    cancel: &CancellationToken,
    totals: &ByteCounts,
    record: &SessionRecord,
) -> Result<Finished, SessionError> {
    let started = tokio::time::Instant::now();
    let limit = listener.config.handshake_timeout;
    let evicted = ticket.signal();
    let door = started + listener.config.tls_handshake_timeout;

    // Redirect: decided at accept time from one snapshot of the settings.
    // The error form for everyone is answered after TLS and the
    // HandshakeResponse, without a backend; the others are decided per
    // client in the connection phase.
    let plan = match Plan::new(listener, listener.failover.load_full()) {
        Ok(plan) => plan,
        Err(why) => {
            let refusal = Box::pin(refuse_no_backend(client, listener, info, why, door));
            return until_done(refusal, None, cancel, &evicted).await;
        }
    };
    if let Some(r) = plan.error_for_everyone() {
        let answer = Box::pin(redirect::answer(client, listener, info, r, door));
        return until_done(answer, Some(limit), cancel, &evicted).await;
    }

    // Route: the backend for this connection, from the topology snapshot
    // now (a `primary` route may wait up to primary_wait for one).
    let route = until_done(
        async { Ok(resolve_route(listener).await) },
        None,
        cancel,
        &evicted,
    )
    .await?;
    let (target, tenure) = match route {
        Ok(r) => r,
        Err(why) => {
            // No backend to authenticate at: a redirect falls back to the
            // error form.
            if let Some(r) = plan.redirect() {
                let answer = Box::pin(redirect::answer(client, listener, info, r, door));
                return until_done(answer, Some(limit), cancel, &evicted).await;
            }
            let refusal = Box::pin(refuse_no_backend(client, listener, info, why, door));
            return until_done(refusal, None, cancel, &evicted).await;
        }
    };
    let _routed = target.route_session();
    // Boxed: the connection phase's state (TLS accept, packet readers) is
    // several KiB and would otherwise stay in every idle session's task.
    let phase = Box::pin(connection_phase(
        client,
        listener,
        &target,
        info,
        &mut ticket,
        door,
        &plan,
    ));
    let (mut client, mut backend, _slot, capabilities) =
        match until_done(phase, Some(limit), cancel, &evicted).await? {
            Phase::Ready {
                client,
                backend,
                _slot,
                capabilities,
            } => (client, backend, _slot, capabilities),
            Phase::AuthRejected { code } => return Ok(Finished::AuthRejected { code }),
            Phase::Redirected(finished) => return Ok(finished),
        };
    info.handshake_done = Some(started.elapsed());
    record.relaying(identity_of(info));
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
    let bytes = &record.bytes;
    let meters = [bytes, totals];
    let rules = door::ChangeUserRules {
        listener,
        target: &target,
        live: live.as_ref().map(|r| &*r.session),
    };
    let inspect = relay::Inspect {
        policy: &rules,
        capabilities,
        max_packet: listener.config.max_handshake_packet,
    };
    let relayed = relay::relay(
        &mut client,
        &mut backend,
        listener.config.idle_timeout,
        &meters,
        Some(inspect),
    );
    let finished = tokio::select! {
        r = relayed => r,
        _ = cancel.cancelled() => Finished::Closed,
        why = revoked => match why {
            Revocation::Tls(reason) => Finished::Revoked { reason },
            Revocation::Identity { identity, user } => Finished::IdentityRevoked { identity, user },
        },
        _ = demoted => Finished::PrimaryChanged,
    };
    close_after_relay(&mut client, &finished, listener).await;
    info.transferred = bytes.snapshot();
    if let (Some(r), Some(_)) = (&live, &info.user) {
        info.identity_changed = r.session.users().into_iter().skip(1).collect();
    }
    Ok(finished)
}

/// What `/sessions` shows of a session once it relays.
fn identity_of(info: &SessionInfo) -> Identity {
    Identity {
        subject: info.client_cert.as_ref().map(|c| c.subject.clone()),
        serial: info.client_cert.as_ref().map(|c| c.serial.clone()),
        user: info.user.clone(),
        backend: info.backend.clone(),
    }
}

/// Ends the client's side of a session portcullis closed: with a TLS
/// close_notify, after the refusal of a COM_CHANGE_USER when that was why.
async fn close_after_relay<S: ClientIo>(
    client: &mut PrefixedIo<ClientStream<S>>,
    finished: &Finished,
    listener: &ListenerRuntime,
) {
    match finished {
        Finished::Revoked { .. }
        | Finished::IdentityRevoked { .. }
        | Finished::PrimaryChanged
        | Finished::Closed => {
            // A clean TLS close (close_notify), so the client reports a
            // lost connection rather than a TLS error ("unexpected eof");
            // an ERR packet cannot be injected mid-command.
            let _ = tokio::time::timeout(REVOKE_CLOSE_GRACE, client.shutdown()).await;
        }
        Finished::ChangeUserRefused { refusal, .. } => {
            // The client waits for the answer to its COM_CHANGE_USER (seq
            // 0): the refusal at seq 1, then the close.
            if let Some(err) = refusal.client_err(&listener.config, &Stage::Door) {
                let _ = write_own_packet(client, 1, &err.encode()).await;
            }
            let _ = tokio::time::timeout(REVOKE_CLOSE_GRACE, client.shutdown()).await;
        }
        _ => {}
    }
}

/// Runs one step of the connection phase until it is done, or `limit`
/// (the handshake timeout) passes, or portcullis shuts down, or the
/// connection — still waiting at the door — is closed to make room.
async fn until_done<T>(
    work: impl std::future::Future<Output = Result<T, SessionError>>,
    limit: Option<Duration>,
    cancel: &CancellationToken,
    evicted: &Evicted,
) -> Result<T, SessionError> {
    let timed = async {
        match limit {
            Some(d) => tokio::time::timeout(d, work)
                .await
                .map_err(|_| SessionError::HandshakeTimeout(d))?,
            None => work.await,
        }
    };
    tokio::select! {
        r = timed => r,
        _ = cancel.cancelled() => Err(SessionError::Shutdown),
        why = evicted.wait() => Err(SessionError::Evicted(why)),
    }
}

/// Answers a client the route found no backend for: ERR 1105 with `why`,
/// after TLS and its handshake response.
async fn refuse_no_backend<S: ClientIo>(
    client: S,
    listener: &ListenerRuntime,
    info: &mut SessionInfo,
    why: String,
    door: Instant,
) -> Result<Finished, SessionError> {
    let e = SessionError::NoBackend(why);
    let err = e
        .client_err(&listener.config, &Stage::Door)
        .expect("the outcome table answers no_backend");
    let answer = refuse(client, listener, info, &err, door);
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
    let session_cert = SessionCert {
        chain,
        verified_at,
        generation,
        subject: cert.map(|c| c.subject.clone()).unwrap_or_default(),
        serial: cert.map(|c| c.serial.clone()).unwrap_or_default(),
        names: info.cert_names.clone(),
    };
    let reg = rt.live.register(session_cert, info.user.clone());
    let current = rt.material.load();
    if current.generation != generation {
        let why = current
            .recheck(&reg.session.cert.chain, verified_at)
            .err()
            .map(Revocation::Tls)
            .or_else(|| reloadable::identity_refusal(&current, &reg.session));
        if let Some(why) = why {
            reloadable::refuse_live(
                &listener.config.name,
                rt,
                current.source.on_revoke,
                &reg.session,
                why,
            );
        }
    }
    Some(reg)
}

/// A finished connection phase: both legs, each with what was read past
/// the end of authentication replayed first ([`PrefixedIo`]), and the
/// listener's connection slot the session holds; or the backend's refusal
/// of the credentials, passed on.
enum Phase<S: ClientIo> {
    Ready {
        client: PrefixedIo<ClientStream<S>>,
        backend: PrefixedIo<BackendConn>,
        _slot: OwnedSemaphorePermit,
        /// The capabilities the backend agreed on with the client, for
        /// reading commands in the relay.
        capabilities: Capabilities,
    },
    AuthRejected {
        code: u16,
    },
    /// Told the error form of the failover redirect (its form for this
    /// client, or no backend to authenticate at).
    Redirected(Finished),
}

/// The plugin name portcullis puts in the HandshakeResponse it relays, in
/// place of the client's: no account uses it, so MariaDB answers with an
/// AuthSwitchRequest for the account's own plugin and its own scramble
/// (docs/design.md §3.9). Named so that a packet capture says whose it is.
pub const SWITCH_PLUGIN: &str = "portcullis_auth_switch";

/// The connection phase with a backend (docs/design.md §3.9): portcullis's
/// own greeting, the client's SSLRequest and TLS, its HandshakeResponse —
/// the door — and only then the backend: its greeting, outbound TLS, the
/// client's response with the plugin renamed, and authentication relayed
/// until the backend's OK or ERR. A redirected client (`plan`) gets the
/// error form right after the door, or the `redirect_url` tracker in that
/// OK (docs/failover.md).
async fn connection_phase<S: ClientIo>(
    mut client: S,
    listener: &ListenerRuntime,
    target: &BackendRuntime,
    info: &mut SessionInfo,
    ticket: &mut Ticket,
    door: Instant,
    plan: &Plan,
) -> Result<Phase<S>, SessionError> {
    let name = target.config.name.as_str();
    info.backend = Some(target.config.name.clone());

    // Greeting: our own, saying what the backend said last time; nothing
    // reaches the backend before the client has passed the door.
    let tls = listener.tls.as_ref().map(|t| t.material.load());
    let template = target.greeting();
    let greeting = template.build(&door::own_scramble(), info.id, tls.is_some());
    write_own_packet(&mut client, 0, &greeting)
        .await
        .map_err(SessionError::ClientIo)?;

    // SslRequested / TlsEstablished / ResponseRead: the door.
    let (mut client, first) =
        door::upgrade(client, listener, info, tls.as_deref(), 0, door).await?;
    let client_tls = matches!(client, Either::Right(_));
    let mut client_reader = PacketReader::new();
    let (resp, parsed) = door::read_response(
        &mut client,
        &mut client_reader,
        first,
        listener,
        info,
        1 + u8::from(client_tls),
    )
    .await?;
    // Past the door: no longer waiting (nor evicted to make room), unless
    // it was closed to make room just before; the client's own answers are
    // told at the next seq.
    ticket.pass().map_err(SessionError::Evicted)?;
    let seq = resp.header.seq.wrapping_add(1);
    if let Some(r) = plan.error_for(&parsed, resp.payload(), client_tls) {
        return redirect::tell(&mut client, seq, r)
            .await
            .map(Phase::Redirected);
    }
    let names = info.cert_names.as_deref();
    let slot = match door::admit(listener, target, &parsed, tls.as_deref(), names) {
        Ok(slot) => slot,
        // A full listener has no session to give a redirect_url client: it
        // gets the error form, like one with no backend.
        Err(e @ SessionError::TooManyConnections(_)) => {
            return unusable(&mut client, listener, plan, seq, e, Stage::Door).await
        }
        Err(e) => return Err(tell(&mut client, listener, seq, e, Stage::Door).await),
    };

    // Connecting: dial the backend and read its greeting.
    let (backend, mut backend_reader, greeting, learned) =
        match auth::greet(target, info.origin, listener.config.max_handshake_packet).await {
            Ok(g) => g,
            Err(e) => {
                return unusable(&mut client, listener, plan, seq, e, Stage::Connect(name)).await
            }
        };
    if let Err(e) = auth::compatible(&parsed, &template, &learned) {
        return unusable(&mut client, listener, plan, seq, e, Stage::Connect(name)).await;
    }

    // Outbound TLS, then Authenticating: the client's response with the
    // plugin renamed, so the backend asks the client with its own scramble.
    let relayed = Packet::new(
        resp.header.seq,
        &parsed.for_auth_switch(resp.payload(), SWITCH_PLUGIN),
    );
    let offers_tls = greeting.capabilities.has(Capabilities::SSL);
    let mut backend = match auth::outbound_tls(
        backend,
        &mut backend_reader,
        target,
        offers_tls,
        relayed.payload(),
    )
    .await
    {
        Ok(b) => b,
        Err(e) => {
            return unusable(&mut client, listener, plan, seq, e, Stage::BackendTls(name)).await
        }
    };
    let end = AuthRelay {
        client: &mut client,
        client_reader: &mut client_reader,
        backend: &mut backend,
        backend_reader: &mut backend_reader,
        listener,
        target,
        ok_edit: plan.ok_edit(
            parsed
                .relayed_capabilities()
                .has(Capabilities::SESSION_TRACK)
                && greeting.capabilities.has(Capabilities::SESSION_TRACK),
        ),
    }
    .run(relayed)
    .await?;
    if let AuthEnd::Ok { redirected: true } = end {
        info.redirect_url = plan
            .redirect()
            .map(|r| crate::failover::redirect_url(&r.target));
    }
    match end {
        AuthEnd::Rejected { code } => Ok(Phase::AuthRejected { code }),
        // Anything read past the OK belongs to the command phase.
        AuthEnd::Ok { .. } => Ok(Phase::Ready {
            client: PrefixedIo::new(client_reader.take_leftover(), client),
            backend: PrefixedIo::new(backend_reader.take_leftover(), backend),
            _slot: slot,
            capabilities: parsed.relayed_capabilities(),
        }),
    }
}

/// The backend cannot take a client past the door (`e` at `stage`): one
/// that is redirected gets the error form instead (its `redirect_url`
/// needs a session here), any other is told `e` ([`tell`]).
async fn unusable<S: ClientIo>(
    client: &mut ClientStream<S>,
    listener: &ListenerRuntime,
    plan: &Plan,
    seq: u8,
    e: SessionError,
    stage: Stage<'_>,
) -> Result<Phase<S>, SessionError> {
    let Some(r) = plan.redirect() else {
        return Err(tell(client, listener, seq, e, stage).await);
    };
    tracing::info!(listener = %listener.config.name, error = %e, "no session here for redirect_url: the error form instead");
    redirect::tell(client, seq, r).await.map(Phase::Redirected)
}

/// Tells a client that passed the door why it is not relayed (`e` at
/// `stage`: the ERR the outcome table gives, at `seq`, over its TLS),
/// closes, and hands `e` back for the log.
async fn tell<S: ClientIo>(
    client: &mut ClientStream<S>,
    listener: &ListenerRuntime,
    seq: u8,
    e: SessionError,
    stage: Stage<'_>,
) -> SessionError {
    auth::tell_client(client, listener, seq, &e, &stage).await;
    e
}
