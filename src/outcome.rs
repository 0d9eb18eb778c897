//! How a connection ended: one enum, stable labels, and whose fault it was.
//!
//! This is the one place that maps an outcome to a log level and a metric
//! label. Labels are part of the public interface (logs, metrics): never
//! change one once released.

use std::io;
use std::time::Duration;

use crate::backend::ConnectError;
use crate::metrics::ListenerMetrics;
use crate::packet_io::ReadError;

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
        reason: &'static str,
        source: io::Error,
    },
    #[error("client protocol error: {0}")]
    ClientProtocol(String),
    #[error("client sent a packet too large for the connection phase: {0}")]
    ClientPacketTooLarge(ReadError),
    #[error("client closed the connection during the connection phase")]
    ClientClosed,
    #[error("client I/O error: {0}")]
    ClientIo(io::Error),
    #[error("connection phase not finished within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error("backend unavailable: {0}")]
    BackendUnavailable(#[from] ConnectError),
    #[error("backend refused the connection with error {code}: {message}")]
    BackendRefused { code: u16, message: String },
    #[error("backend protocol error: {0}")]
    BackendProtocol(String),
    #[error("backend closed the connection during the connection phase")]
    BackendClosed,
    #[error("backend I/O error: {0}")]
    BackendIo(io::Error),
    #[error("TLS handshake with the backend failed ({reason}): {source}")]
    BackendTls {
        reason: &'static str,
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
            SessionError::TlsHandshake { .. } => "tls_handshake_failed",
            SessionError::ClientProtocol(_) => "client_protocol_error",
            SessionError::ClientPacketTooLarge(_) => "client_packet_too_large",
            SessionError::ClientClosed => "client_closed",
            SessionError::ClientIo(_) => "client_io_error",
            SessionError::HandshakeTimeout(_) => "handshake_timeout",
            SessionError::BackendUnavailable(_) => "backend_unavailable",
            SessionError::BackendRefused { .. } => "backend_refused",
            SessionError::BackendProtocol(_) => "backend_protocol_error",
            SessionError::BackendClosed => "backend_closed",
            SessionError::BackendIo(_) => "backend_io_error",
            SessionError::BackendTls { .. } => "backend_tls_failed",
            SessionError::BackendTlsRefused => "backend_tls_not_offered",
            SessionError::TooManyConnections(_) => "too_many_connections",
            SessionError::NoBackend(_) => "no_backend",
            SessionError::Shutdown => "shutdown",
            SessionError::Worker(_) => "worker_error",
        }
    }

    pub fn fault(&self) -> Fault {
        match self {
            SessionError::BackendUnavailable(_)
            | SessionError::BackendRefused { .. }
            | SessionError::BackendProtocol(_)
            | SessionError::BackendClosed
            | SessionError::BackendIo(_)
            | SessionError::BackendTls { .. }
            | SessionError::BackendTlsRefused
            | SessionError::NoBackend(_) => Fault::Backend,
            SessionError::TooManyConnections(_)
            | SessionError::Shutdown
            | SessionError::Worker(_) => Fault::Proxy,
            _ => Fault::Client,
        }
    }

    /// The TLS failure reason, when this was a TLS handshake failure (with
    /// the client or the backend).
    pub fn tls_reason(&self) -> Option<&'static str> {
        match self {
            SessionError::TlsHandshake { reason, .. } | SessionError::BackendTls { reason, .. } => {
                Some(reason)
            }
            _ => None,
        }
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
    /// Sent elsewhere with the instant-failover ERR packet.
    Redirected { target: String },
    /// Closed because newly loaded trust material (CRL, CA bundle) refuses
    /// the client certificate; `reason` is the TLS failure label.
    Revoked { reason: &'static str },
    /// Routed as `primary` to a server that is no longer the primary, and
    /// closed (`on_primary_change = "close"`).
    PrimaryChanged,
    /// Closed by portcullis: no byte either way for the listener's
    /// `idle_timeout`.
    IdleTimeout { after: std::time::Duration },
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
            Finished::RelayError { .. } => "relay_client_error",
            Finished::Closed => "closed_by_proxy",
            Finished::Redirected { .. } => "redirected",
            Finished::Revoked { .. } => "closed_revoked",
            Finished::PrimaryChanged => "closed_primary_changed",
            Finished::IdleTimeout { .. } => "idle_timeout",
        }
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
                metrics.redirected();
            }
        }
        Err(e) => {
            metrics.outcome(e.label());
            if let SessionError::TlsHandshake { reason, .. } = e {
                metrics.tls_failure(reason);
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
            reason: "unknown_ca",
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
        assert_eq!(m.redirects(), 1);
        assert_eq!(counts(m.tls_failures()), [("unknown_ca".to_string(), 1)]);
        assert_eq!(counts(m.backend_connect_errors()), [("db2".to_string(), 1)]);
        let (_, count, _) = m.handshake();
        assert_eq!(count, 1);
    }
}
