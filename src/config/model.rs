//! The validated configuration: typed settings with their defaults, as the
//! rest of portcullis reads them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::failover::FailoverSettings;
use super::identity::IdentityRules;
use super::prefix::IpPrefix;

/// Default SIGTERM drain deadline.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default deadline for the whole connection phase (accept → backend auth
/// done). Long enough for a slow WAN TLS handshake, short enough that
/// silent clients cannot pin slots for long.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default backend connect timeout: the backend is normally local, so a
/// connect that takes seconds means it is gone.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most session worker threads a config may ask for.
pub const MAX_WORKERS: usize = 1024;

/// One session worker for every two CPUs this process may run on (its
/// affinity mask and cgroup quota, as `std` counts them), at least one.
/// portcullis usually shares its machine with the mariadbd behind it, and
/// on two cores one worker beat two in every workload measured
/// (docs/performance.md, "Runtime").
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().div_ceil(2))
}

/// Default per-listener cap on sessions past the door (each holds a backend
/// connection): below MariaDB's own default `max_connections` (151), so a
/// sidecar in front of a default server is refused by portcullis, with its
/// own message, before the server runs out, and local admin sessions, the
/// monitor and replicas keep room there. Raise it with the server's.
pub const DEFAULT_MAX_CONNECTIONS: usize = 128;
/// Default cap on a listener's connections that have not yet passed the
/// door (TLS with a verified certificate, and the HandshakeResponse). They
/// cost no backend connection; this bounds what a flood costs portcullis
/// (a socket and a TLS handshake each). Real clients pass in milliseconds,
/// and when it is reached the oldest waiting connection is closed, not the
/// new one ([`crate`]'s admission module): 128 is far more than legitimate
/// clients ever have in flight at once, and few enough that a flood's
/// handshakes cannot exhaust memory or file descriptors.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 128;
/// Default cap on one source's (IPv4 address, IPv6 /64) waiting connections:
/// a reconnect storm from one application host stays well under it, while
/// one attacking host cannot fill the listener's whole waiting room.
pub const DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE: usize = 16;
/// Default deadline from accept to a verified client certificate (to the
/// first packet on a plaintext listener): a TLS handshake takes a few
/// round trips, so 5 s covers a slow WAN with a wide margin, while a client
/// that stalls is closed long before the whole `handshake_timeout`.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on one connection-phase packet. The server accepts up to 64 KiB
/// of connect attributes; user, schema and auth data add a little to that.
pub const DEFAULT_MAX_HANDSHAKE_PACKET: usize = 96 * 1024;
/// Default admin address when `[admin]` is present without one: loopback
/// only, the port MaxScale-style keepalived checks are usually pointed at.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9306";
/// Shortest admin token accepted: 16 characters of a random token are
/// beyond online guessing; anything shorter is probably a placeholder.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// How often TLS files are checked for new content.
pub const DEFAULT_TLS_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How long before a certificate or CRL expires the log starts warning.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for reloads and messages).
    pub path: PathBuf,
    pub shutdown_timeout: Duration,
    /// Session worker threads (see [`crate::workers`]); default:
    /// [`default_workers`].
    pub workers: usize,
    /// The control socket (`control_socket`): where a new process asks
    /// this one for its listeners ([`crate::handover`]); `None`: no
    /// hand-over.
    pub control_socket: Option<PathBuf>,
    pub backends: Vec<BackendConfig>,
    pub listeners: Vec<ListenerConfig>,
    /// The admin HTTP endpoint; `None` (no `[admin]` section) serves none.
    pub admin: Option<AdminConfig>,
    /// The `[tls_reload]` section.
    pub tls_reload: TlsReloadConfig,
    /// The `[monitor]` section: the topology monitor's account.
    pub monitor: Option<MonitorConfig>,
}

/// The `[monitor]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct MonitorConfig {
    pub user: String,
    pub password: String,
    pub interval: Duration,
}

impl fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("MonitorConfig")
            .field("user", &self.user)
            .field("interval", &self.interval)
            .finish()
    }
}

/// The default `[monitor] interval`.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// The default `primary_wait`.
pub const DEFAULT_PRIMARY_WAIT: Duration = Duration::from_secs(5);

impl Config {
    /// The backend named `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// Where a listener sends new connections: `route` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One named backend.
    Backend(String),
    /// Decided per connection from the topology the monitor keeps.
    Topology(TopologyRoute),
}

impl Route {
    /// The route as written in the config, for logs and `/status`.
    pub fn name(&self) -> &str {
        match self {
            Route::Backend(name) => name,
            Route::Topology(t) => t.name(),
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The routes that follow the topology; their names are reserved (no
/// backend may be called so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyRoute {
    /// The current primary.
    Primary,
    /// The least-loaded healthy replica.
    Replica,
    /// The least-loaded primary or replica.
    Any,
}

impl TopologyRoute {
    /// The keyword, as written in `route`.
    pub fn name(self) -> &'static str {
        match self {
            TopologyRoute::Primary => "primary",
            TopologyRoute::Replica => "replica",
            TopologyRoute::Any => "any",
        }
    }

    /// The topology route named `s`, if `s` is one of the keywords.
    pub fn parse(s: &str) -> Option<TopologyRoute> {
        [
            TopologyRoute::Primary,
            TopologyRoute::Replica,
            TopologyRoute::Any,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

/// What happens to sessions routed as `primary` when the primary changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPrimaryChange {
    /// Close them, so applications reconnect to the new primary.
    #[default]
    Close,
    /// Leave them on the demoted server.
    Keep,
}

/// The `[tls_reload]` section: how TLS material is watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsReloadConfig {
    /// How often every TLS file and CRL directory is read and compared by
    /// content; zero disables polling (SIGHUP and `POST /reload` remain).
    pub poll_interval: Duration,
    /// Warn in the log this long before a certificate or CRL in service
    /// expires.
    pub expiry_warning: Duration,
}

impl Default for TlsReloadConfig {
    fn default() -> Self {
        TlsReloadConfig {
            poll_interval: DEFAULT_TLS_POLL_INTERVAL,
            expiry_warning: DEFAULT_EXPIRY_WARNING,
        }
    }
}

/// The `[admin]` section: where the admin HTTP API listens and who may use
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Loopback TCP or a Unix socket, unless a token is configured.
    pub address: ListenAddr,
    /// File holding the bearer token every request except the `/health`
    /// paths must carry.
    pub token_file: Option<PathBuf>,
    /// Host names a request's `Host` may carry besides IP literals and
    /// `localhost` (TCP only; lowercase, without a port).
    pub allowed_hosts: Vec<String>,
    /// Who may connect to a Unix-socket admin API (ignored on TCP).
    pub socket: AdminSocket,
}

/// The file mode and group of a Unix-socket admin API: whoever can open
/// the socket may change the proxy, so these are its access control.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminSocket {
    /// `0o600` (the default: the user portcullis runs as) or `0o660`.
    pub mode: SocketMode,
    /// The group the socket is given (with `0o660`); `None` keeps the
    /// group it is created with.
    pub group: Option<SocketGroup>,
}

/// The permission bits of the admin socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketMode {
    /// `0600`: the owner only.
    #[default]
    Owner,
    /// `0660`: the owner and the socket's group.
    OwnerAndGroup,
}

impl SocketMode {
    /// The permission bits.
    pub fn bits(self) -> u32 {
        match self {
            SocketMode::Owner => 0o600,
            SocketMode::OwnerAndGroup => 0o660,
        }
    }

    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketMode::Owner => "0600",
            SocketMode::OwnerAndGroup => "0660",
        }
    }
}

/// A group as configured (`socket_group`) and the id it was resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub address: BackendAddr,
    pub connect_timeout: Duration,
    /// Outbound TLS: portcullis sends the SSLRequest to the backend.
    pub tls: Option<BackendTlsConfig>,
    /// `host:port` clients are redirected to when this backend is the
    /// primary (`failover_target = "primary"`).
    pub advertise: Option<String>,
    /// Send a PROXY protocol v2 header with the client's address first.
    pub proxy_protocol: bool,
}

/// A backend's `[backend.tls]`: how portcullis verifies the backend and
/// which client certificate it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTlsConfig {
    /// CA bundle the backend's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate chain and key presented to the backend.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Name (or IP address) the backend's certificate must be valid for.
    pub server_name: String,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub address: ListenAddr,
    /// A backend name, or `primary`, `replica` or `any`.
    pub route: Route,
    pub on_primary_change: OnPrimaryChange,
    /// How long a `primary` connection waits for a primary to be known.
    pub primary_wait: Duration,
    /// `replica` routing skips replicas further behind than this.
    pub max_replica_lag: Option<Duration>,
    pub handshake_timeout: Duration,
    /// From accept to a verified certificate (TLS listeners) or the first
    /// packet (plaintext ones).
    pub tls_handshake_timeout: Duration,
    pub max_connections: usize,
    /// Connections not yet past the door, in all and per source.
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_source: usize,
    pub max_handshake_packet: usize,
    /// Close a relayed session after this long without a byte either way;
    /// `None` (the default, or `"0s"`) never does: replication links and
    /// pooled connections are idle for long stretches by design.
    pub idle_timeout: Option<Duration>,
    /// An operators' listener: exempt from `failover = "on"`.
    pub admin: bool,
    /// Let clients log in (and change user) as the MariaDB user named like
    /// portcullis's own OS user behind a Unix-socket backend, where
    /// `unix_socket` authentication would accept them on portcullis's
    /// identity. Off by default (docs/security.md).
    pub allow_proxy_user: bool,
    /// Connections from these addresses (`accept_proxy_protocol = true`
    /// with `trusted_proxies`) must start with a PROXY protocol header
    /// (v1 or v2) naming the real client; empty: no header is read from
    /// anyone, as without a load balancer.
    pub trusted_proxies: Vec<IpPrefix>,
    /// Initial failover settings (changeable at runtime).
    pub failover: FailoverSettings,
    pub tls: Option<TlsConfig>,
}

/// Default `[listener.tls] clock_skew`: how far ahead of this host's clock a
/// CRL's thisUpdate may be. CA hosts and proxies run NTP; minutes cover a
/// clock that drifted, while a CRL dated hours or days ahead is not one
/// this host should believe yet (OpenSSL: "CRL is not yet valid").
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// Paths of a listener's TLS material, resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The trust anchors (root CAs) client certificates must chain to.
    pub ca: Option<PathBuf>,
    /// Intermediate CA certificates that are not trust anchors: they
    /// complete client chains and verify the CRLs they issue.
    pub intermediates: Option<PathBuf>,
    pub crl: Vec<PathBuf>,
    /// How far a CRL's thisUpdate may be ahead of this host's clock.
    pub clock_skew: Duration,
    pub client_auth: ClientAuth,
    /// What happens to live sessions whose certificate new trust material
    /// (a CRL or CA bundle reload) would refuse.
    pub on_revoke: OnRevoke,
    /// How CRLs are applied to client certificates.
    pub crl_policy: CrlPolicy,
    /// How a refused client certificate is reported to the client.
    pub cert_refusal: CertRefusal,
    /// The oldest TLS version a client may negotiate.
    pub min_version: TlsVersion,
    /// The cipher suites offered, by their rustls names, in the server's
    /// order of preference; `None`: the provider's defaults.
    pub cipher_suites: Option<Vec<String>>,
    /// `[listener.identity]`: the MySQL users a client certificate may log
    /// in as; `None`: any. Kept with the TLS material, so that a reload
    /// applies it (only with `client_auth = "required"`).
    pub identity: Option<IdentityRules>,
}

/// `[listener.tls] min_version`: the oldest TLS version accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// How a client whose certificate is refused learns why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertRefusal {
    /// A TLS alert during the handshake (certificate_revoked, unknown_ca,
    /// ...), as any TLS server does.
    #[default]
    TlsAlert,
    /// Finish the TLS handshake, then answer the HandshakeResponse with a
    /// MySQL ERR packet (1045) naming the reason, over TLS. For clients that
    /// do not report a TLS 1.3 alert that arrives after their side of the
    /// handshake completed: mariadbd's own replica IO thread shows only
    /// "Lost connection ... reading authorization packet" (errno 2013).
    /// Nothing is forwarded to a backend either way.
    MysqlError,
}

impl CertRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            CertRefusal::TlsAlert => "tls_alert",
            CertRefusal::MysqlError => "mysql_error",
        }
    }
}

/// What to do with an established session whose client certificate is
/// revoked (or no longer trusted) by newly loaded material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRevoke {
    /// Close it (log and count).
    #[default]
    Close,
    /// Keep it (log and count); only new handshakes are refused.
    Keep,
}

/// Which certificates of a client's chain are checked against the CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlScope {
    /// Every certificate in the chain except the trust anchor.
    #[default]
    Chain,
    /// Only the client's own certificate.
    Leaf,
}

/// What a CRL past its nextUpdate means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrlExpired {
    /// A stale CRL may miss recent revocations: refuse to load it, and
    /// refuse clients it should cover once it goes stale in service.
    #[default]
    Reject,
    /// Use it anyway (rustls's default).
    Accept,
}

/// What to do with a certificate no loaded CRL covers (its issuer
/// published none), when CRLs are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownRevocation {
    /// Refuse it.
    #[default]
    Reject,
    /// Accept it.
    Allow,
}

/// The CRL settings of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrlPolicy {
    pub scope: CrlScope,
    pub expired: CrlExpired,
    pub unknown: UnknownRevocation,
}

/// Whether a TLS listener asks for client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A certificate that verifies against the CA and CRLs is mandatory.
    Required,
    /// A certificate is asked for; if one is sent it must verify.
    Optional,
    /// No certificate is asked for.
    None,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
            ClientAuth::None => "none",
        }
    }
}

/// Where a listener accepts connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Where a backend is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// `host:port`, an IPv4 literal, or a bracketed IPv6 literal; resolved
    /// at connect time so DNS changes are followed.
    Tcp(String),
    Unix(PathBuf),
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp(a) => f.write_str(a),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}
