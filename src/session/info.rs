//! What is known about one session, for its log line and metrics.

use std::time::Duration;

use rustls_pki_types::UnixTime;

use std::sync::Arc;

use crate::backend::Origin;
use crate::config::identity::CertNames;
use crate::metrics::Transferred;
use crate::tls::CertInfo;

/// Everything known about a session, for its log line and metrics.
#[derive(Debug, Default)]
pub struct SessionInfo {
    /// The connection id: in the greeting, the log line and `/sessions`.
    pub id: u32,
    pub tls_version: Option<&'static str>,
    pub client_cert: Option<CertInfo>,
    /// What identity rules match of the client certificate, read in the
    /// same parse as `client_cert` (`[listener.identity]`).
    pub cert_names: Option<Arc<CertNames>>,
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
    pub origin: Origin,
    /// The load balancer the connection came through, when a PROXY
    /// protocol header was read from it (`origin.client` is then the
    /// client it named).
    pub proxied_by: Option<std::net::SocketAddr>,
    /// The `redirect_url` added to the OK that ended authentication (the
    /// `redirect_url` form of the failover redirect), when one was.
    pub redirect_url: Option<String>,
    /// The users a COM_CHANGE_USER forwarded in the command phase switched
    /// to, in order (the log's `identity_changed`); `user` stays the login
    /// user.
    pub identity_changed: Vec<String>,
}
