//! How a connection ended: one table from an outcome to everything that
//! reports it.
//!
//! This is the one place that decides, for every way a connection can end,
//! its stable label (logs and the `outcome` metric label), whose fault it
//! was and so the log level, which counters it moves, and the MySQL ERR
//! packet a waiting client gets (code, SQLSTATE, message). The session code
//! only says what happened and where; it never words an ERR itself. Labels
//! are part of the public interface (logs, metrics): never change one once
//! released.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::backend::ConnectError;
use crate::config::failover::RedirectForm;
use crate::config::{ClientAuth, ListenerConfig};
use crate::metrics::ListenerMetrics;
use crate::packet_io::ReadError;
use crate::protocol::ErrPacket;
use crate::session::info::SessionInfo;
use crate::tls::TlsFailure;

/// ER_UNKNOWN_ERROR (1105, SQLSTATE HY000): the backend cannot be reached
/// or failed; a server-side error clients display as is. Codes 2000–2999
/// and 5000–5999 are client-side codes that connectors treat as a malformed
/// server answer, so they are never sent (docs/design.md §3.6).
pub const ERR_BACKEND_UNAVAILABLE: u16 = 1105;
/// ER_ACCESS_DENIED_ERROR (1045, SQLSTATE 28000): a client that skips TLS
/// on a TLS listener, or whose certificate is refused after the handshake.
pub const ERR_ACCESS_DENIED: u16 = 1045;
/// ER_NOT_SUPPORTED_AUTH_MODE (1251, SQLSTATE 08004): what a server
/// answers a client too old for its authentication.
pub const ERR_NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
/// ER_CON_COUNT_ERROR, "Too many connections".
pub const ERR_TOO_MANY_CONNECTIONS: u16 = 1040;
/// ER_HANDSHAKE_ERROR, "Bad handshake", as mariadbd answers a malformed
/// connection-phase packet.
pub const ERR_BAD_HANDSHAKE: u16 = 1043;

/// Whose fault a failed connection was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client did something wrong or went away.
    Client,
    /// The backend is down or misbehaved.
    Backend,
    /// portcullis itself (shutdown, limits).
    Proxy,
}

/// A connection that did not reach (or did not finish) the relay phase.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("client did not ask for TLS on a listener that requires it")]
    TlsRequired,
    #[error("client started TLS without the MySQL SSLRequest (a raw TLS client?)")]
    TlsWithoutSslRequest,
    #[error("client asked for TLS on a listener that offers none")]
    TlsNotOffered,
    #[error("TLS handshake failed ({reason}): {source}")]
    TlsHandshake {
        reason: TlsFailure,
        source: io::Error,
    },
    /// `cert_refusal = "mysql_error"`: the TLS handshake finished, then the
    /// client certificate was refused with ERR 1045 over TLS. Counted and
    /// logged like a failed handshake.
    #[error("TLS handshake failed ({reason}): client certificate refused after the TLS handshake (cert_refusal = \"mysql_error\"), answered with ERR 1045")]
    CertificateRefused { reason: TlsFailure },
    /// `accept_proxy_protocol`: a peer in `trusted_proxies` sent no
    /// PROXY header, or a malformed one, or none in time.
    #[error("PROXY protocol header from trusted proxy {proxy} refused: {reason}")]
    ProxyHeader { proxy: SocketAddr, reason: String },
    #[error("client protocol error: {0}")]
    ClientProtocol(String),
    /// A client without CLIENT_PLUGIN_AUTH cannot answer the backend's
    /// authentication switch, which relaying authentication needs.
    #[error("client does not support authentication plugins (CLIENT_PLUGIN_AUTH)")]
    ClientWithoutPluginAuth,
    /// A login or change of user as the MariaDB user named like
    /// portcullis's own OS user behind a Unix-socket backend.
    #[error("refused to log in as {user:?}, portcullis's own OS user, on a Unix-socket backend (unix_socket authentication would accept it on portcullis's identity; allow_proxy_user = true allows it)")]
    ProxyUserRefused { user: String },
    /// The listener's identity rules (`[listener.identity]`) do not let
    /// this client certificate (`identity`, as [`CertNames::label`] names
    /// it) log in, or change user, as `user`.
    ///
    /// [`CertNames::label`]: crate::config::identity::CertNames::label
    #[error("certificate {identity} may not log in as {user:?} ([listener.identity])")]
    IdentityRefused { identity: String, user: String },
    #[error("client sent a packet too large for the connection phase: {0}")]
    ClientPacketTooLarge(ReadError),
    #[error("client closed the connection during the connection phase")]
    ClientClosed,
    #[error("client I/O error: {0}")]
    ClientIo(io::Error),
    #[error("connection phase not finished within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// No verified certificate (on a plaintext listener, no first packet)
    /// within `tls_handshake_timeout` of accept.
    #[error("no verified client certificate (on a plaintext listener: no first packet) within {0:?} of accept (tls_handshake_timeout)")]
    TlsHandshakeTimeout(std::time::Duration),
    /// Closed before it passed the door, to admit a newer connection
    /// (docs/security.md, "What an unauthenticated peer can cost").
    #[error("closed before it showed a certificate and a handshake response, to admit a newer connection ({} reached)", .0.as_str())]
    Evicted(crate::admission::Eviction),
    #[error("backend unavailable: {0}")]
    BackendUnavailable(#[from] ConnectError),
    /// The backend answered the connect with an ERR instead of a greeting
    /// ("Too many connections", "Host is blocked"): passed on, after TLS.
    #[error("backend refused the connection with error {code}: {message}")]
    BackendRefused {
        code: u16,
        sql_state: [u8; 5],
        message: String,
    },
    /// The client set a capability that changes the command phase's bytes
    /// and that the backend it reached does not have (the greeting
    /// portcullis learned from it is out of date).
    #[error("the backend no longer offers capabilities the client was greeted with ({missing:#010x}); the next connection is greeted as the backend is now")]
    BackendCapabilities { missing: u32 },
    #[error("backend protocol error: {0}")]
    BackendProtocol(String),
    #[error("backend closed the connection during the connection phase")]
    BackendClosed,
    #[error("backend I/O error: {0}")]
    BackendIo(io::Error),
    #[error("TLS handshake with the backend failed ({reason}): {source}")]
    BackendTls {
        reason: TlsFailure,
        source: io::Error,
    },
    #[error("backend does not offer TLS, which [backend.tls] requires")]
    BackendTlsRefused,
    #[error("no backend to route to: {0}")]
    NoBackend(String),
    #[error("listener is at max_connections ({0})")]
    TooManyConnections(usize),
    #[error("closed by portcullis shutdown")]
    Shutdown,
    /// `DELETE /sessions/ID` (`portcullis kill`) before it was relayed.
    #[error("closed by an operator (DELETE /sessions/ID)")]
    KilledByAdmin,
    #[error("cannot hand the connection to a session worker: {0}")]
    Worker(io::Error),
}

impl SessionError {
    /// Stable outcome label for logs and the `outcome` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            SessionError::TlsRequired => "tls_required",
            SessionError::TlsWithoutSslRequest => "tls_without_sslrequest",
            SessionError::TlsNotOffered => "tls_not_offered",
            SessionError::TlsHandshake { .. } | SessionError::CertificateRefused { .. } => {
                "tls_handshake_failed"
            }
            SessionError::ProxyHeader { .. } => "proxy_header_refused",
            SessionError::ClientProtocol(_) => "client_protocol_error",
            SessionError::ClientWithoutPluginAuth => "client_unsupported",
            SessionError::ProxyUserRefused { .. } => "proxy_user_refused",
            SessionError::IdentityRefused { .. } => "identity_refused",
            SessionError::ClientPacketTooLarge(_) => "client_packet_too_large",
            SessionError::ClientClosed => "client_closed",
            SessionError::ClientIo(_) => "client_io_error",
            SessionError::HandshakeTimeout(_) => "handshake_timeout",
            SessionError::TlsHandshakeTimeout(_) => "tls_handshake_timeout",
            SessionError::Evicted(_) => "unauthenticated_evicted",
            SessionError::BackendUnavailable(_) => "backend_unavailable",
            SessionError::BackendRefused { .. } => "backend_refused",
            SessionError::BackendCapabilities { .. } => "backend_capabilities_changed",
            SessionError::BackendProtocol(_) => "backend_protocol_error",
            SessionError::BackendClosed => "backend_closed",
            SessionError::BackendIo(_) => "backend_io_error",
            SessionError::BackendTls { .. } => "backend_tls_failed",
            SessionError::BackendTlsRefused => "backend_tls_not_offered",
            SessionError::TooManyConnections(_) => "too_many_connections",
            SessionError::NoBackend(_) => "no_backend",
            SessionError::Shutdown => "shutdown",
            SessionError::KilledByAdmin => "killed_by_admin",
            SessionError::Worker(_) => "worker_error",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            SessionError::BackendUnavailable(_)
            | SessionError::BackendRefused { .. }
            | SessionError::BackendCapabilities { .. }
            | SessionError::BackendProtocol(_)
            | SessionError::BackendClosed
            | SessionError::BackendIo(_)
            | SessionError::BackendTls { .. }
            | SessionError::BackendTlsRefused
            | SessionError::NoBackend(_) => Fault::Backend,
            SessionError::TooManyConnections(_)
            | SessionError::Evicted(_)
            | SessionError::Shutdown
            | SessionError::KilledByAdmin
            | SessionError::Worker(_) => Fault::Proxy,
            _ => Fault::Client,
        }
    }

    /// The TLS failure reason, when this was a TLS handshake failure (with
    /// the client or the backend).
    pub fn tls_reason(&self) -> Option<&'static str> {
        match self {
            SessionError::TlsHandshake { reason, .. }
            | SessionError::CertificateRefused { reason }
            | SessionError::BackendTls { reason, .. } => Some(reason.label()),
            _ => None,
        }
    }

    /// The ERR packet a client that is still waiting gets for this error,
    /// reached at `stage`; `None` when it gets none (it left, the TLS alert
    /// already said why, or the backend's own answer is passed on).
    pub fn client_err(&self, listener: &ListenerConfig, stage: &Stage<'_>) -> Option<ErrPacket> {
        let name = &listener.name;
        let unavailable = |why: String| {
            ErrPacket::new(
                ERR_BACKEND_UNAVAILABLE,
                b"HY000",
                format!("portcullis: listener '{name}': {why}"),
            )
        };
        Some(match (self, stage) {
            (SessionError::TlsRequired, _) => tls_required(listener),
            (SessionError::CertificateRefused { reason }, _) => ErrPacket::new(
                ERR_ACCESS_DENIED,
                b"28000",
                format!(
                    "portcullis: listener '{name}': TLS client certificate refused ({}): {}",
                    reason.label(),
                    certificate_problem(*reason)
                ),
            ),
            (SessionError::ClientProtocol(_) | SessionError::ClientPacketTooLarge(_), _) => {
                bad_handshake()
            }
            (SessionError::TooManyConnections(_), _) => {
                ErrPacket::new(ERR_TOO_MANY_CONNECTIONS, b"08004", "Too many connections")
            }
            (SessionError::NoBackend(why), _) => unavailable(why.clone()),
            (
                SessionError::BackendTls { source, .. },
                Stage::BackendTls(b) | Stage::Authentication(b),
            ) => unavailable(format!(
                "database unavailable (TLS to backend '{b}' failed: {source}; try again later)"
            )),
            (e, Stage::BackendTls(b)) if e.fault() == Fault::Backend => unavailable(format!(
                "database unavailable (TLS to backend '{b}' failed: {e}; try again later)"
            )),
            (
                SessionError::BackendRefused {
                    code,
                    sql_state,
                    message,
                },
                _,
            ) => ErrPacket::new(*code, sql_state, message.clone()),
            (SessionError::ClientWithoutPluginAuth, _) => ErrPacket::new(
                ERR_NOT_SUPPORTED_AUTH_MODE,
                b"08004",
                format!("portcullis: listener '{name}': this client does not support authentication plugins (CLIENT_PLUGIN_AUTH), which portcullis needs to relay authentication; upgrade the client"),
            ),
            (SessionError::ProxyUserRefused { user }, _) => ErrPacket::new(
                ERR_ACCESS_DENIED,
                b"28000",
                format!("portcullis: listener '{name}': access denied for user '{user}': it is the OS user portcullis runs as, which the database would trust by its Unix socket (unix_socket authentication); log in as another user"),
            ),
            (SessionError::IdentityRefused { identity, user }, _) => ErrPacket::new(
                ERR_ACCESS_DENIED,
                b"28000",
                format!("portcullis: certificate {identity} may not log in as '{user}' on listener '{name}'"),
            ),
            (SessionError::BackendCapabilities { .. }, Stage::Connect(b)) => unavailable(format!(
                "backend '{b}' changed since this connection was greeted (a restart or an upgrade); reconnect"
            )),
            (e, Stage::Connect(b)) if e.fault() == Fault::Backend => unavailable(format!(
                "database unavailable (backend '{b}' cannot be reached; try again later)"
            )),
            (e, Stage::Authentication(b)) if e.fault() == Fault::Backend => unavailable(format!(
                "backend '{b}' failed during authentication; try again"
            )),
            _ => return None,
        })
    }

    /// Maps a client-side read failure.
    pub fn from_client_read(e: ReadError) -> SessionError {
        match e {
            ReadError::Closed => SessionError::ClientClosed,
            ReadError::Truncated => {
                SessionError::ClientProtocol("connection closed in the middle of a packet".into())
            }
            e @ ReadError::TooLarge { .. } => SessionError::ClientPacketTooLarge(e),
            ReadError::LooksLikeTls => SessionError::TlsWithoutSslRequest,
            ReadError::Io(e) => SessionError::ClientIo(e),
        }
    }

    /// Maps a backend-side read failure.
    pub fn from_backend_read(e: ReadError) -> SessionError {
        match e {
            ReadError::Closed => SessionError::BackendClosed,
            ReadError::Truncated => {
                SessionError::BackendProtocol("connection closed in the middle of a packet".into())
            }
            e @ (ReadError::TooLarge { .. } | ReadError::LooksLikeTls) => {
                SessionError::BackendProtocol(e.to_string())
            }
            ReadError::Io(e) => SessionError::BackendIo(e),
        }
    }
}

/// Where in the connection phase an error reached a waiting client, which
/// decides how its ERR is worded ([`SessionError::client_err`]).
#[derive(Debug, Clone, Copy)]
pub enum Stage<'a> {
    /// At the door: TLS, the handshake response, routing, limits; no
    /// backend involved.
    Door,
    /// Connecting to backend `.0` and reading its greeting.
    Connect(&'a str),
    /// The TLS handshake with backend `.0` (`[backend.tls]`).
    BackendTls(&'a str),
    /// Relaying authentication to backend `.0`.
    Authentication(&'a str),
}

/// ERR 1045 for a client that did not ask for TLS on a TLS listener,
/// naming what it must do.
fn tls_required(l: &ListenerConfig) -> ErrPacket {
    let needs_cert = l
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth == ClientAuth::Required);
    let message = if needs_cert {
        format!(
            "portcullis: listener '{}' requires TLS with a client certificate; connect with --ssl and --ssl-cert/--ssl-key",
            l.name
        )
    } else {
        format!(
            "portcullis: listener '{}' requires TLS; connect with --ssl",
            l.name
        )
    };
    ErrPacket::new(ERR_ACCESS_DENIED, b"28000", message)
}

/// ER_HANDSHAKE_ERROR "Bad handshake", as mariadbd words it.
pub fn bad_handshake() -> ErrPacket {
    ErrPacket::new(ERR_BAD_HANDSHAKE, b"08S01", "Bad handshake")
}

/// What a refused client certificate's TLS failure means, for the person
/// reading the ERR (`cert_refusal = "mysql_error"`).
fn certificate_problem(reason: TlsFailure) -> &'static str {
    match reason {
        TlsFailure::NoClientCert => {
            "no client certificate was presented (connect with --ssl-cert/--ssl-key)"
        }
        TlsFailure::Revoked => "the client certificate is revoked",
        TlsFailure::Expired => "the client certificate has expired",
        TlsFailure::NotYetValid => "the client certificate is not valid yet",
        TlsFailure::UnknownCa => "the client certificate is not issued by a trusted CA",
        TlsFailure::CaExpired => "the CA that issued the client certificate has expired",
        TlsFailure::CaNotYetValid => "the CA that issued the client certificate is not valid yet",
        TlsFailure::UnknownRevocationStatus => "no CRL covers the client certificate's issuer",
        TlsFailure::CrlExpired => "the CRL for the client certificate is past its next update",
        TlsFailure::WrongKeyUsage => "the client certificate is not for TLS client authentication",
        _ => "the client certificate is not acceptable",
    }
}

/// How a session that got through the connection phase ended.
#[derive(Debug)]
pub enum Finished {
    /// Authenticated and relayed until one side closed.
    Relayed,
    /// The backend rejected authentication (its ERR was relayed).
    AuthRejected { code: u16 },
    /// Relay ended by an I/O error on one side.
    RelayError { fault: Fault, error: io::Error },
    /// Closed by portcullis (shutdown deadline).
    Closed,
    /// Closed by an operator (`DELETE /sessions/ID`), with a TLS
    /// close_notify like [`Finished::Closed`].
    KilledByAdmin,
    /// Sent elsewhere with the instant-failover ERR packet.
    Redirected { target: String },
    /// Closed because newly loaded trust material (CRL, CA bundle) refuses
    /// the client certificate; `reason` is the TLS failure label.
    Revoked { reason: TlsFailure },
    /// Closed because reloaded identity rules no longer let the client
    /// certificate (`identity`) use `user`, the login user or one it
    /// changed to (`on_revoke = "close"`).
    IdentityRevoked { identity: String, user: String },
    /// Routed as `primary` to a server that is no longer the primary, and
    /// closed (`on_primary_change = "close"`).
    PrimaryChanged,
    /// Closed by portcullis: no byte either way for the listener's
    /// `idle_timeout`.
    IdleTimeout { after: std::time::Duration },
    /// A COM_CHANGE_USER the command policy refused (`refusal` says why,
    /// and is reported as it: label, log, the client's ERR), or that did
    /// not parse: not sent to the backend; the relay ended once what the
    /// backend had sent was delivered (`relay` module docs).
    ChangeUserRefused {
        user: String,
        refusal: Box<SessionError>,
    },
    /// A COM_CHANGE_USER larger than `max_handshake_packet`: not sent.
    ChangeUserTooLarge { limit: usize },
}

impl Finished {
    pub fn label(&self) -> &'static str {
        match self {
            Finished::Relayed => "relayed",
            Finished::AuthRejected { .. } => "auth_rejected",
            Finished::RelayError {
                fault: Fault::Backend,
                ..
            } => "relay_backend_error",
            Finished::RelayError {
                fault: Fault::Proxy,
                ..
            } => "relay_proxy_error",
            Finished::RelayError { .. } => "relay_client_error",
            Finished::Closed => "closed_by_proxy",
            Finished::KilledByAdmin => "killed_by_admin",
            Finished::Redirected { .. } => "redirected",
            Finished::Revoked { .. } => "closed_revoked",
            Finished::IdentityRevoked { .. } => "closed_identity_refused",
            Finished::PrimaryChanged => "closed_primary_changed",
            Finished::IdleTimeout { .. } => "idle_timeout",
            Finished::ChangeUserRefused { refusal, .. } => refusal.label(),
            Finished::ChangeUserTooLarge { .. } => "client_packet_too_large",
        }
    }
}

impl Finished {
    /// What the log line says about this ending, beyond its label.
    fn detail(&self) -> Option<String> {
        match self {
            Finished::RelayError { error, .. } => Some(error.to_string()),
            Finished::AuthRejected { code } => {
                Some(format!("backend rejected authentication with error {code}"))
            }
            Finished::Redirected { target } => Some(format!("redirected to {target}")),
            Finished::KilledByAdmin => {
                Some("closed by an operator (DELETE /sessions/ID)".into())
            }
            Finished::Revoked { reason } => Some(format!(
                "closed: the client certificate is refused by newly loaded trust material ({reason})"
            )),
            Finished::IdentityRevoked { identity, user } => Some(format!(
                "closed: reloaded identity rules no longer let certificate {identity} use '{user}'"
            )),
            Finished::IdleTimeout { after } => Some(format!(
                "no traffic either way for {after:?} (idle_timeout)"
            )),
            Finished::ChangeUserRefused { user, refusal } => {
                Some(format!("COM_CHANGE_USER to '{user}' refused: {refusal}"))
            }
            Finished::ChangeUserTooLarge { limit } => Some(format!(
                "COM_CHANGE_USER larger than max_handshake_packet ({limit} bytes)"
            )),
            _ => None,
        }
    }
}

/// How a connection ended, as logged: label, level, error text, TLS reason.
struct Logged {
    label: &'static str,
    level: Level,
    error: Option<String>,
    tls_reason: Option<&'static str>,
}

/// How loud a connection's log event is: WARN for what an operator should
/// look at (the backend's or the proxy's fault), INFO for the clients' own
/// doing, DEBUG for what is summarized elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Debug,
    Info,
    Warn,
}

impl Logged {
    fn of(result: &Result<Finished, SessionError>) -> Logged {
        match result {
            Ok(f) => Logged {
                label: f.label(),
                level: match f {
                    Finished::RelayError {
                        fault: Fault::Backend | Fault::Proxy,
                        ..
                    } => Level::Warn,
                    _ => Level::Info,
                },
                error: f.detail(),
                tls_reason: None,
            },
            Err(e) => Logged {
                label: e.label(),
                level: match e {
                    // One a second is logged by the door for all of them:
                    // a flood must not flood the log.
                    SessionError::Evicted(_) => Level::Debug,
                    // An operator's own doing, logged by the admin API too.
                    SessionError::KilledByAdmin => Level::Info,
                    e if e.fault() == Fault::Client => Level::Info,
                    _ => Level::Warn,
                },
                error: Some(e.to_string()),
                tls_reason: e.tls_reason(),
            },
        }
    }
}

/// Reports how one connection ended: its one log event and its counters.
/// `route` names the listener's route, counted for backend errors when the
/// session never chose a backend.
pub fn finish(
    listener: &str,
    route: &str,
    metrics: &ListenerMetrics,
    peer: Option<SocketAddr>,
    info: &SessionInfo,
    result: &Result<Finished, SessionError>,
    duration: Duration,
) {
    log(listener, peer, info, result, duration);
    record_session(metrics, info, result, route);
}

/// Counts how a session ended ([`record`]), and a `redirect_url` it was
/// told. Both are counted when the connection ends, as every connection
/// counter is: a follower quits its session at once to move, one that
/// ignores the tracker when it is done.
pub fn record_session(
    metrics: &ListenerMetrics,
    info: &SessionInfo,
    result: &Result<Finished, SessionError>,
    route: &str,
) {
    let backend = info.backend.as_deref().unwrap_or(route);
    record(metrics, result, backend, info.handshake_done);
    if info.redirect_url.is_some() {
        metrics.redirected(RedirectForm::RedirectUrl);
    }
}

/// The one log event per connection.
fn log(
    listener: &str,
    peer: Option<SocketAddr>,
    info: &SessionInfo,
    result: &Result<Finished, SessionError>,
    duration: Duration,
) {
    let peer = peer.map_or_else(|| "unix".to_string(), |p| p.to_string());
    let subject = info.client_cert.as_ref().map(|c| c.subject.as_str());
    let serial = info.client_cert.as_ref().map(|c| c.serial.as_str());
    let identity_changed =
        (!info.identity_changed.is_empty()).then(|| info.identity_changed.join(","));
    let logged = Logged::of(result);
    // tracing needs the level as a constant at each call site.
    macro_rules! event {
        ($level:expr) => {
            tracing::event!(
                target: "portcullis::session",
                $level,
                outcome = logged.label,
                id = info.id,
                peer = %peer,
                proxied_by = info.proxied_by.map(tracing::field::display),
                listener = %listener,
                tls = info.tls_version.unwrap_or("none"),
                tls_failure = logged.tls_reason,
                subject,
                serial,
                user = info.user.as_deref(),
                identity_changed = identity_changed.as_deref(),
                database = info.database.as_deref(),
                backend = info.backend.as_deref(),
                redirect_url = info.redirect_url.as_deref(),
                bytes_up = info.transferred.up,
                bytes_down = info.transferred.down,
                duration_ms = duration.as_millis() as u64,
                error = logged.error.as_deref(),
                "connection closed"
            )
        };
    }
    match logged.level {
        Level::Warn => event!(tracing::Level::WARN),
        Level::Info => event!(tracing::Level::INFO),
        Level::Debug => event!(tracing::Level::DEBUG),
    }
}

/// Counts how one connection ended in its listener's metrics (called once,
/// where it is logged). `backend` is the backend it went to, or else its
/// listener's route; `handshake` how long its connection phase took, when
/// it reached the relay.
pub fn record(
    metrics: &ListenerMetrics,
    result: &Result<Finished, SessionError>,
    backend: &str,
    handshake: Option<Duration>,
) {
    match result {
        Ok(f) => {
            metrics.outcome(f.label());
            if let Finished::Redirected { .. } = f {
                metrics.redirected(RedirectForm::Error);
            }
        }
        Err(e) => {
            metrics.outcome(e.label());
            if let SessionError::TlsHandshake { reason, .. }
            | SessionError::CertificateRefused { reason } = e
            {
                metrics.tls_failure(reason.label());
            }
            if let SessionError::BackendUnavailable(_)
            | SessionError::BackendTls { .. }
            | SessionError::BackendTlsRefused = e
            {
                metrics.backend_connect_error(backend);
            }
        }
    }
    if let Some(d) = handshake {
        metrics.observe_handshake(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plaintext listener `public` routed to backend `db`.
    fn listener() -> ListenerConfig {
        let src = r#"
[[backend]]
name = "db"
address = "unix:/x"

[[listener]]
name = "public"
address = "unix:/tmp/p.sock"
route = "db"
"#;
        let checked = crate::config::Config::check_toml(
            src,
            std::path::Path::new("t.toml"),
            std::path::Path::new("/"),
            &mut crate::config::DeferMaterial,
        );
        let config = checked.result.unwrap_or_else(|e| panic!("{e}"));
        config.listeners.into_iter().next().unwrap()
    }

    /// (code, SQLSTATE, message) of the ERR the table gives, or None.
    fn err(
        e: &SessionError,
        l: &ListenerConfig,
        stage: Stage<'_>,
    ) -> Option<(u16, String, String)> {
        e.client_err(l, &stage).map(|p| {
            (
                p.code,
                String::from_utf8_lossy(&p.sql_state).into_owned(),
                p.message,
            )
        })
    }

    /// Every ERR a client can get from portcullis itself, pinned word for
    /// word: clients and scripts match on these.
    #[test]
    fn the_table_words_every_err_exactly() {
        let plain = listener();
        let io = || io::Error::other("boom");
        let row =
            |code: u16, state: &str, msg: &str| Some((code, state.to_string(), msg.to_string()));
        assert_eq!(
            err(&SessionError::TlsRequired, &plain, Stage::Door),
            row(
                1045,
                "28000",
                "portcullis: listener 'public' requires TLS; connect with --ssl"
            )
        );
        assert_eq!(
            err(&SessionError::CertificateRefused { reason: TlsFailure::Revoked }, &plain, Stage::Door),
            row(1045, "28000", "portcullis: listener 'public': TLS client certificate refused (revoked): the client certificate is revoked")
        );
        let bad = row(1043, "08S01", "Bad handshake");
        assert_eq!(
            err(
                &SessionError::ClientProtocol("x".into()),
                &plain,
                Stage::Door
            ),
            bad
        );
        assert_eq!(
            err(&SessionError::TooManyConnections(5), &plain, Stage::Door),
            row(1040, "08004", "Too many connections")
        );
        assert_eq!(
            err(
                &SessionError::NoBackend("no primary".into()),
                &plain,
                Stage::Door
            ),
            row(1105, "HY000", "portcullis: listener 'public': no primary")
        );
        let unreachable = row(1105, "HY000", "portcullis: listener 'public': database unavailable (backend 'db' cannot be reached; try again later)");
        assert_eq!(
            err(&SessionError::BackendClosed, &plain, Stage::Connect("db")),
            unreachable
        );
        assert_eq!(
            err(
                &SessionError::BackendProtocol("bad greeting: x".into()),
                &plain,
                Stage::Connect("db")
            ),
            unreachable
        );
        assert_eq!(
            err(&SessionError::BackendTls { reason: TlsFailure::UnknownCa, source: io() }, &plain, Stage::BackendTls("db")),
            row(1105, "HY000", "portcullis: listener 'public': database unavailable (TLS to backend 'db' failed: boom; try again later)")
        );
        assert_eq!(
            err(&SessionError::BackendTlsRefused, &plain, Stage::BackendTls("db")),
            row(1105, "HY000", "portcullis: listener 'public': database unavailable (TLS to backend 'db' failed: backend does not offer TLS, which [backend.tls] requires; try again later)")
        );
        assert_eq!(
            err(&SessionError::BackendTls { reason: TlsFailure::Alert { from: crate::tls::Peer::Backend }, source: io() }, &plain, Stage::Authentication("db")),
            row(1105, "HY000", "portcullis: listener 'public': database unavailable (TLS to backend 'db' failed: boom; try again later)")
        );
        assert_eq!(
            err(&SessionError::BackendIo(io()), &plain, Stage::Authentication("db")),
            row(1105, "HY000", "portcullis: listener 'public': backend 'db' failed during authentication; try again")
        );
        // The backend's own refusal, passed on with its code and message.
        assert_eq!(
            err(
                &SessionError::BackendRefused {
                    code: 1040,
                    sql_state: *b"08004",
                    message: "Too many connections".into()
                },
                &plain,
                Stage::Connect("db")
            ),
            row(1040, "08004", "Too many connections")
        );
        assert_eq!(
            err(&SessionError::ProxyUserRefused { user: "root".into() }, &plain, Stage::Door),
            row(1045, "28000", "portcullis: listener 'public': access denied for user 'root': it is the OS user portcullis runs as, which the database would trust by its Unix socket (unix_socket authentication); log in as another user")
        );
        let refused = SessionError::IdentityRefused {
            identity: "spiffe://example.org/ns/prod/sa/billing".into(),
            user: "root".into(),
        };
        assert_eq!(refused.label(), "identity_refused");
        assert_eq!(
            err(&refused, &plain, Stage::Door),
            row(1045, "28000", "portcullis: certificate spiffe://example.org/ns/prod/sa/billing may not log in as 'root' on listener 'public'")
        );
        assert_eq!(
            err(&SessionError::ClientWithoutPluginAuth, &plain, Stage::Door),
            row(1251, "08004", "portcullis: listener 'public': this client does not support authentication plugins (CLIENT_PLUGIN_AUTH), which portcullis needs to relay authentication; upgrade the client")
        );
        // No ERR: the client left, or the alert said it.
        for e in [
            SessionError::ClientClosed,
            SessionError::Shutdown,
            SessionError::TlsNotOffered,
            SessionError::HandshakeTimeout(Duration::from_secs(1)),
        ] {
            assert_eq!(err(&e, &plain, Stage::Connect("db")), None, "{e}");
        }
    }

    #[test]
    fn tls_required_names_the_certificate_when_one_is_required() {
        // TLS files are not read by the table: patch the section in.
        let mut l = listener();
        l.tls = Some(crate::config::TlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            ca: Some("ca.pem".into()),
            intermediates: None,
            crl: Vec::new(),
            clock_skew: std::time::Duration::from_secs(300),
            client_auth: ClientAuth::Required,
            on_revoke: Default::default(),
            crl_policy: Default::default(),
            cert_refusal: Default::default(),
            min_version: Default::default(),
            cipher_suites: None,
            identity: None,
        });
        assert_eq!(
            err(&SessionError::TlsRequired, &l, Stage::Door).unwrap().2,
            "portcullis: listener 'public' requires TLS with a client certificate; connect with --ssl and --ssl-cert/--ssl-key"
        );
    }

    fn counts(v: Vec<(std::sync::Arc<str>, u64)>) -> Vec<(String, u64)> {
        v.into_iter().map(|(l, n)| (l.to_string(), n)).collect()
    }

    #[test]
    fn record_counts_each_outcome_where_it_belongs() {
        let m = ListenerMetrics::default();
        let redirected = Finished::Redirected {
            target: "db2:3306".into(),
        };
        record(&m, &Ok(redirected), "db1", Some(Duration::from_millis(2)));
        let tls = SessionError::TlsHandshake {
            reason: TlsFailure::UnknownCa,
            source: io::Error::other("bad certificate"),
        };
        record(&m, &Err(tls), "db1", None);
        record(&m, &Err(SessionError::BackendTlsRefused), "db2", None);
        record(
            &m,
            &Err(SessionError::NoBackend("none".into())),
            "db1",
            None,
        );
        assert_eq!(
            counts(m.outcomes()),
            [
                ("backend_tls_not_offered".to_string(), 1),
                ("no_backend".to_string(), 1),
                ("redirected".to_string(), 1),
                ("tls_handshake_failed".to_string(), 1),
            ]
        );
        assert_eq!(m.redirects(RedirectForm::Error), 1);
        assert_eq!(m.redirects(RedirectForm::RedirectUrl), 0);
        assert_eq!(counts(m.tls_failures()), [("unknown_ca".to_string(), 1)]);
        assert_eq!(counts(m.backend_connect_errors()), [("db2".to_string(), 1)]);
        let (_, count, _) = m.handshake();
        assert_eq!(count, 1);
    }
}
