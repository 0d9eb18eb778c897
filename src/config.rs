//! The TOML configuration: parsing, validation and the typed result.
//!
//! Parsing is strict (unknown keys are errors, with their line). Validation
//! collects *every* problem it finds, each with the file and line it comes
//! from, so `portcullis check` can print them all at once. TLS material is
//! loaded and checked here too (via [`crate::tls`]), so a config that passes
//! validation can be served.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::failover::{FailoverMode, FailoverSettings};

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

/// Default per-listener cap on concurrent sessions.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
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

// ---------------------------------------------------------------------------
// Raw (as written) structures
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    shutdown_timeout: Option<Spanned<String>>,
    workers: Option<Spanned<i64>>,
    #[serde(default, rename = "backend")]
    backends: Vec<Spanned<RawBackend>>,
    #[serde(default, rename = "listener")]
    listeners: Vec<Spanned<RawListener>>,
    admin: Option<Spanned<RawAdmin>>,
    tls_reload: Option<Spanned<RawTlsReload>>,
    monitor: Option<Spanned<RawMonitor>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    user: Spanned<String>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsReload {
    poll_interval: Option<Spanned<String>>,
    expiry_warning: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Spanned<String>,
    address: Spanned<String>,
    connect_timeout: Option<Spanned<String>>,
    advertise: Option<Spanned<String>>,
    #[serde(default)]
    proxy_protocol: bool,
    tls: Option<Spanned<RawBackendTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendTls {
    ca: Spanned<String>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    server_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Spanned<String>,
    address: Spanned<String>,
    route: Spanned<String>,
    #[serde(default)]
    allow_plaintext: bool,
    handshake_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    max_handshake_packet: Option<Spanned<usize>>,
    idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    admin: bool,
    failover: Option<Spanned<FailoverMode>>,
    failover_target: Option<Spanned<String>>,
    failover_message: Option<Spanned<String>>,
    failover_error_code: Option<Spanned<u16>>,
    on_primary_change: Option<Spanned<OnPrimaryChange>>,
    primary_wait: Option<Spanned<String>>,
    max_replica_lag: Option<Spanned<String>>,
    tls: Option<Spanned<RawTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
    ca: Option<Spanned<String>>,
    #[serde(default)]
    crl: Vec<Spanned<String>>,
    #[serde(default)]
    client_auth: Option<Spanned<ClientAuth>>,
    on_revoke: Option<Spanned<OnRevoke>>,
    crl_scope: Option<Spanned<CrlScope>>,
    crl_expired: Option<Spanned<CrlExpired>>,
    unknown_revocation: Option<Spanned<UnknownRevocation>>,
    cert_refusal: Option<Spanned<CertRefusal>>,
}

// ---------------------------------------------------------------------------
// Validated structures
// ---------------------------------------------------------------------------

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for reloads and messages).
    pub path: PathBuf,
    pub shutdown_timeout: Duration,
    /// Session worker threads (see [`crate::workers`]); default:
    /// [`default_workers`].
    pub workers: usize,
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

/// Where a listener sends new connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One named backend.
    Backend(String),
    /// The current primary.
    Primary,
    /// The least-loaded healthy replica.
    Replica,
    /// The least-loaded primary or replica.
    Any,
}

impl Route {
    fn parse(s: &str) -> Route {
        match s {
            "primary" => Route::Primary,
            "replica" => Route::Replica,
            "any" => Route::Any,
            name => Route::Backend(name.to_string()),
        }
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
    /// File holding the bearer token every request except `GET /health`
    /// must carry.
    pub token_file: Option<PathBuf>,
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
    /// As written: a backend name, `primary`, `replica` or `any`.
    pub route: String,
    pub route_kind: Route,
    pub on_primary_change: OnPrimaryChange,
    /// How long a `primary` connection waits for a primary to be known.
    pub primary_wait: Duration,
    /// `replica` routing skips replicas further behind than this.
    pub max_replica_lag: Option<Duration>,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
    pub max_handshake_packet: usize,
    /// Close a relayed session after this long without a byte either way;
    /// `None` (the default, or `"0s"`) never does: replication links and
    /// pooled connections are idle for long stretches by design.
    pub idle_timeout: Option<Duration>,
    /// An operators' listener: exempt from `failover = "on"`.
    pub admin: bool,
    /// Initial failover settings (changeable at runtime).
    pub failover: FailoverSettings,
    pub tls: Option<TlsConfig>,
}

/// Paths of a listener's TLS material, resolved against the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub crl: Vec<PathBuf>,
    pub client_auth: ClientAuth,
    /// What happens to live sessions whose certificate new trust material
    /// (a CRL or CA bundle reload) would refuse.
    pub on_revoke: OnRevoke,
    /// How CRLs are applied to client certificates.
    pub crl_policy: CrlPolicy,
    /// How a refused client certificate is reported to the client.
    pub cert_refusal: CertRefusal,
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

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, p.message)?,
                None => write!(f, "{}: {}", self.path.display(), p.message)?,
            }
        }
        Ok(())
    }
}

/// Collects problems while validating.
struct Problems<'a> {
    src: &'a str,
    list: Vec<ConfigProblem>,
}

impl Problems<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.src[..span.start.min(self.src.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1;
        self.list.push(ConfigProblem {
            line: Some(line),
            message: message.into(),
        });
    }

    fn global(&mut self, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            line: None,
            message: message.into(),
        });
    }
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

impl Config {
    /// Reads, parses and validates the file at `path`, including loading its
    /// TLS material.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = read_config(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&src, path, base)
    }

    /// Like [`load`](Config::load), but TLS sections are only checked for
    /// the existence of their files, not loaded: a reload loads and applies
    /// each listener's material on its own, so that one listener's broken
    /// certificate neither blocks the others nor the rest of the file.
    pub fn load_deferring_tls(path: &Path) -> Result<Config, ConfigError> {
        let src = read_config(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        parse(&src, path, base, TlsCheck::FilesExist)
    }

    /// Parses and validates `src` as if read from `path`; relative paths in
    /// it resolve against `base_dir`.
    pub fn from_toml(src: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        parse(src, path, base_dir, TlsCheck::Load)
    }

    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|b| b.name == name)
    }
}

/// How deeply TLS sections are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsCheck {
    /// Load and build the whole TLS config (start, `portcullis check`).
    Load,
    /// Only check that the files exist (reload applies TLS per listener).
    FilesExist,
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        problems: vec![ConfigProblem {
            line: None,
            message: format!("cannot read config file: {e}"),
        }],
    })
}

fn parse(src: &str, path: &Path, base_dir: &Path, tls: TlsCheck) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        path: path.to_path_buf(),
        problems,
    };
    let raw: RawConfig = toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| {
            src[..s.start.min(src.len())]
                .bytes()
                .filter(|&b| b == b'\n')
                .count()
                + 1
        });
        fail(vec![ConfigProblem {
            line,
            message: e.message().to_string(),
        }])
    })?;
    let mut p = Problems {
        src,
        list: Vec::new(),
    };
    let config = validate(raw, path, base_dir, tls, &mut p);
    if p.list.is_empty() {
        Ok(config)
    } else {
        Err(fail(p.list))
    }
}

fn validate(
    raw: RawConfig,
    path: &Path,
    base: &Path,
    tls_check: TlsCheck,
    p: &mut Problems<'_>,
) -> Config {
    let shutdown_timeout = duration_or(&raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT, p);
    let workers = match &raw.workers {
        None => default_workers(),
        Some(w) => match usize::try_from(*w.get_ref()) {
            Ok(n @ 1..=MAX_WORKERS) => n,
            _ => {
                p.at(
                    w.span(),
                    format!(
                        "workers = {} is out of range: give 1 to {MAX_WORKERS} session worker threads, or leave it out for one per two CPUs",
                        w.get_ref()
                    ),
                );
                1
            }
        },
    };

    let mut backend_names = HashSet::new();
    let mut backends = Vec::new();
    for b in raw.backends {
        let b = b.into_inner();
        if !valid_name(b.name.get_ref()) {
            p.at(
                b.name.span(),
                format!(
                    "backend name {:?} must be 1-64 characters of letters, digits, '-', '_' or '.'",
                    b.name.get_ref()
                ),
            );
        } else if !backend_names.insert(b.name.get_ref().clone()) {
            p.at(
                b.name.span(),
                format!("duplicate backend name {:?}", b.name.get_ref()),
            );
        } else if ["primary", "replica", "any"].contains(&b.name.get_ref().as_str()) {
            p.at(
                b.name.span(),
                format!(
                    "backend name {:?} is reserved (it is a route)",
                    b.name.get_ref()
                ),
            );
        }
        let address = match parse_backend_addr(b.address.get_ref(), base) {
            Ok(a) => a,
            Err(e) => {
                p.at(b.address.span(), e);
                BackendAddr::Tcp(String::new())
            }
        };
        let tls = b
            .tls
            .map(|t| validate_backend_tls(t, &address, base, tls_check, p));
        let advertise = b.advertise.map(|a| {
            let text = a.get_ref().clone();
            match crate::failover::validate_target(&text) {
                Ok(()) if text != crate::failover::PRIMARY_TARGET => {}
                Ok(()) => p.at(a.span(), "advertise must be \"host:port\""),
                Err(e) => p.at(a.span(), e.replace("failover_target", "advertise")),
            }
            text
        });
        backends.push(BackendConfig {
            name: b.name.into_inner(),
            address,
            connect_timeout: duration_or(&b.connect_timeout, DEFAULT_CONNECT_TIMEOUT, p),
            tls,
            advertise,
            proxy_protocol: b.proxy_protocol,
        });
    }

    let mut listener_names = HashSet::new();
    let mut listen_addrs = HashSet::new();
    let mut listeners = Vec::new();
    if raw.listeners.is_empty() {
        p.global("no [[listener]] is configured: portcullis would accept nothing");
    }
    for l in raw.listeners {
        let l_span = l.span();
        let l = l.into_inner();
        if !valid_name(l.name.get_ref()) {
            p.at(l.name.span(), format!("listener name {:?} must be 1-64 characters of letters, digits, '-', '_' or '.'", l.name.get_ref()));
        } else if !listener_names.insert(l.name.get_ref().clone()) {
            p.at(
                l.name.span(),
                format!("duplicate listener name {:?}", l.name.get_ref()),
            );
        }
        let address = match parse_listen_addr(l.address.get_ref(), base) {
            Ok(a) => {
                // Port 0 (any free port, used by tests) never collides.
                let any_port = matches!(&a, ListenAddr::Tcp(sa) if sa.port() == 0);
                if !any_port && !listen_addrs.insert(a.clone()) {
                    p.at(
                        l.address.span(),
                        format!("address {a} is used by two listeners"),
                    );
                }
                Some(a)
            }
            Err(e) => {
                p.at(l.address.span(), e);
                None
            }
        };
        let route_kind = Route::parse(l.route.get_ref());
        if route_kind != Route::Backend(l.route.get_ref().clone()) {
            if raw.monitor.is_none() {
                p.at(
                    l.route.span(),
                    format!(
                        "route = {:?} follows the topology: it needs a [monitor] section",
                        l.route.get_ref()
                    ),
                );
            }
        } else if !backend_names.contains(l.route.get_ref()) {
            p.at(
                l.route.span(),
                format!(
                    "route {:?} names no [[backend]] (known: {})",
                    l.route.get_ref(),
                    if backend_names.is_empty() {
                        "none".to_string()
                    } else {
                        let mut v: Vec<_> = backend_names.iter().cloned().collect();
                        v.sort();
                        v.join(", ")
                    }
                ),
            );
        }
        let tls = l.tls.map(|t| validate_tls(t, base, tls_check, p));
        if let (Some(ListenAddr::Tcp(sa)), None) = (&address, &tls) {
            if !sa.ip().is_loopback() && !l.allow_plaintext {
                p.at(
                    l_span.clone(),
                    format!(
                        "listener {:?} on non-loopback address {sa} has no [listener.tls]: clients would send passwords and data in clear; add TLS or set allow_plaintext = true",
                        l.name.get_ref()
                    ),
                );
            }
        }
        let max_connections = match &l.max_connections {
            Some(m) if *m.get_ref() == 0 => {
                p.at(m.span(), "max_connections must be at least 1");
                1
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_MAX_CONNECTIONS,
        };
        let max_handshake_packet = match &l.max_handshake_packet {
            Some(m) if *m.get_ref() < 1024 || *m.get_ref() > 16 * 1024 * 1024 => {
                p.at(
                    m.span(),
                    "max_handshake_packet must be between 1024 and 16777216 bytes",
                );
                DEFAULT_MAX_HANDSHAKE_PACKET
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_MAX_HANDSHAKE_PACKET,
        };
        let failover = FailoverSettings {
            mode: l
                .failover
                .as_ref()
                .map(|m| *m.get_ref())
                .unwrap_or_default(),
            target: l.failover_target.as_ref().map(|t| t.get_ref().clone()),
            message: l.failover_message.as_ref().map(|t| t.get_ref().clone()),
            error_code: l
                .failover_error_code
                .as_ref()
                .map(|c| *c.get_ref())
                .unwrap_or(crate::failover::DEFAULT_ERROR_CODE),
        };
        if failover.target.as_deref() == Some(crate::failover::PRIMARY_TARGET)
            && raw.monitor.is_none()
        {
            if let Some(t) = &l.failover_target {
                p.at(
                    t.span(),
                    "failover_target = \"primary\" follows the topology: it needs a [monitor] section",
                );
            }
        }
        if let Err(e) = failover.validate() {
            // Point at the most specific key present.
            let span = [
                l.failover_target.as_ref().map(|t| t.span()),
                l.failover_message.as_ref().map(|t| t.span()),
                l.failover_error_code.as_ref().map(|t| t.span()),
                l.failover.as_ref().map(|t| t.span()),
            ]
            .into_iter()
            .flatten()
            .next()
            .unwrap_or(l_span.clone());
            p.at(span, e);
        } else if let (Some(t), Some(a)) = (&failover.target, &address) {
            if crate::failover::points_at(t, a) {
                tracing::warn!(
                    listener = %l.name.get_ref(),
                    target = %t,
                    "failover_target looks like this listener's own address: redirected clients would come back here (redirect loop)"
                );
            }
        }
        listeners.push(ListenerConfig {
            name: l.name.into_inner(),
            address: address.unwrap_or(ListenAddr::Unix(PathBuf::new())),
            route: l.route.into_inner(),
            handshake_timeout: duration_or(&l.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT, p),
            max_connections,
            max_handshake_packet,
            idle_timeout: Some(duration_or(&l.idle_timeout, Duration::ZERO, p))
                .filter(|d| !d.is_zero()),
            admin: l.admin,
            failover,
            tls,
            route_kind,
            on_primary_change: value(&l.on_primary_change).unwrap_or_default(),
            primary_wait: duration_or(&l.primary_wait, DEFAULT_PRIMARY_WAIT, p),
            max_replica_lag: l
                .max_replica_lag
                .as_ref()
                .map(|_| duration_or(&l.max_replica_lag, Duration::ZERO, p)),
        });
    }
    let admin = raw.admin.map(|a| validate_admin(a, &listen_addrs, base, p));
    let monitor = raw.monitor.map(|m| validate_monitor(m, base, p));
    let tls_reload = raw
        .tls_reload
        .map(|r| {
            let r = r.into_inner();
            TlsReloadConfig {
                poll_interval: duration_or(&r.poll_interval, DEFAULT_TLS_POLL_INTERVAL, p),
                expiry_warning: duration_or(&r.expiry_warning, DEFAULT_EXPIRY_WARNING, p),
            }
        })
        .unwrap_or_default();
    Config {
        path: path.to_path_buf(),
        shutdown_timeout,
        workers,
        backends,
        listeners,
        admin,
        tls_reload,
        monitor,
    }
}

fn validate_admin(
    a: Spanned<RawAdmin>,
    listen_addrs: &HashSet<ListenAddr>,
    base: &Path,
    p: &mut Problems<'_>,
) -> AdminConfig {
    let span = a.span();
    let a = a.into_inner();
    let token_file = a.token_file.as_ref().map(|t| {
        let path = resolve(t.get_ref(), base);
        match read_admin_token(&path) {
            Ok(_) => crate::perm::warn_if_exposed(&path, "admin token file"),
            Err(e) => p.at(t.span(), e.to_string()),
        }
        path
    });
    let (text, at) = match &a.address {
        Some(s) => (s.get_ref().as_str(), s.span()),
        None => (DEFAULT_ADMIN_ADDRESS, span),
    };
    let address = match parse_listen_addr(text, base) {
        Ok(addr) => addr,
        Err(_) => {
            p.at(
                at,
                format!("invalid admin address {text:?}: expected \"127.0.0.1:9306\", \"[::1]:9306\" or \"unix:/run/portcullis/admin.sock\""),
            );
            return AdminConfig {
                address: ListenAddr::Unix(PathBuf::new()),
                token_file,
            };
        }
    };
    match &address {
        ListenAddr::Tcp(sa) if !sa.ip().is_loopback() && token_file.is_none() => p.at(
            at.clone(),
            format!("admin address {sa} is not loopback: anyone who reaches it could read the status and change the proxy at runtime; set token_file, or listen on 127.0.0.1, [::1] or a unix: socket"),
        ),
        ListenAddr::Tcp(sa) if sa.port() == 0 => {}
        _ if listen_addrs.contains(&address) => p.at(
            at.clone(),
            format!("admin address {address} is also a [[listener]] address"),
        ),
        _ => {}
    }
    AdminConfig {
        address,
        token_file,
    }
}

/// Why the admin token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin token in {path} must be at least {MIN_ADMIN_TOKEN_LEN} printable ASCII characters without spaces (found {len})")]
    Weak { path: PathBuf, len: usize },
}

/// Reads the admin bearer token: the file's content without surrounding
/// whitespace (so a trailing newline does not count).
pub fn read_admin_token(path: &Path) -> Result<String, TokenError> {
    let data = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = data.trim();
    if token.len() < MIN_ADMIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Weak {
            path: path.to_path_buf(),
            len: token.chars().count(),
        });
    }
    Ok(token.to_string())
}

fn validate_tls(
    t: Spanned<RawTls>,
    base: &Path,
    check: TlsCheck,
    p: &mut Problems<'_>,
) -> TlsConfig {
    let span = t.span();
    let t = t.into_inner();
    let client_auth = t
        .client_auth
        .as_ref()
        .map(|c| *c.get_ref())
        .unwrap_or(ClientAuth::Required);
    let mut file = |s: &Spanned<String>, what: &str| -> PathBuf {
        let path = resolve(s.get_ref(), base);
        if let Err(e) = std::fs::metadata(&path) {
            p.at(s.span(), format!("{what} {}: {e}", path.display()));
        }
        path
    };
    let cert = file(&t.cert, "certificate");
    let key = file(&t.key, "private key");
    crate::perm::warn_if_exposed(&key, "TLS private key");
    let ca = t.ca.as_ref().map(|c| file(c, "CA bundle"));
    let crl: Vec<PathBuf> = t.crl.iter().map(|c| file(c, "CRL")).collect();
    if ca.is_none() && client_auth != ClientAuth::None {
        p.at(
            span.clone(),
            format!(
                "client_auth = \"{}\" needs `ca` (the trust anchors client certificates are checked against)",
                client_auth.as_str()
            ),
        );
    }
    if !crl.is_empty() && client_auth == ClientAuth::None {
        p.at(span.clone(), "crl is set but client_auth = \"none\": no client certificate would be checked against it");
    }
    let cert_refusal = value(&t.cert_refusal).unwrap_or_default();
    if cert_refusal != CertRefusal::TlsAlert && client_auth == ClientAuth::None {
        p.at(
            span.clone(),
            format!(
                "cert_refusal = \"{}\" but client_auth = \"none\": no client certificate is checked, so none is refused",
                cert_refusal.as_str()
            ),
        );
    }
    let crl_policy = CrlPolicy {
        scope: value(&t.crl_scope).unwrap_or_default(),
        expired: value(&t.crl_expired).unwrap_or_default(),
        unknown: value(&t.unknown_revocation).unwrap_or_default(),
    };
    let cfg = TlsConfig {
        cert,
        key,
        ca,
        crl,
        client_auth,
        on_revoke: value(&t.on_revoke).unwrap_or_default(),
        crl_policy,
        cert_refusal,
    };
    if p.list.is_empty() && check == TlsCheck::Load {
        // Files exist: load and build the whole TLS config now, so a config
        // that validates can be served.
        if let Err(e) = crate::tls::ServerTls::load(&cfg) {
            p.at(span, e.to_string());
        }
    }
    cfg
}

fn validate_monitor(m: Spanned<RawMonitor>, base: &Path, p: &mut Problems<'_>) -> MonitorConfig {
    let span = m.span();
    let m = m.into_inner();
    let password = match (&m.password, &m.password_file) {
        (Some(pw), None) => pw.get_ref().clone(),
        (None, Some(f)) => {
            let path = resolve(f.get_ref(), base);
            match std::fs::read_to_string(&path) {
                Ok(s) => {
                    crate::perm::warn_if_exposed(&path, "monitor password file");
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
                Err(e) => {
                    p.at(
                        f.span(),
                        format!("cannot read password_file {}: {e}", path.display()),
                    );
                    String::new()
                }
            }
        }
        (Some(_), Some(f)) => {
            p.at(
                f.span(),
                "[monitor] takes password or password_file, not both",
            );
            String::new()
        }
        (None, None) => {
            p.at(span, "[monitor] needs password or password_file");
            String::new()
        }
    };
    let interval = duration_or(&m.interval, DEFAULT_MONITOR_INTERVAL, p);
    if interval.is_zero() {
        if let Some(i) = &m.interval {
            p.at(i.span(), "[monitor] interval must be more than zero");
        }
    }
    MonitorConfig {
        user: m.user.into_inner(),
        password,
        interval,
    }
}

fn validate_backend_tls(
    t: Spanned<RawBackendTls>,
    address: &BackendAddr,
    base: &Path,
    check: TlsCheck,
    p: &mut Problems<'_>,
) -> BackendTlsConfig {
    let span = t.span();
    let t = t.into_inner();
    let problems_before = p.list.len();
    let mut file = |s: &Spanned<String>, what: &str| -> PathBuf {
        let path = resolve(s.get_ref(), base);
        if let Err(e) = std::fs::metadata(&path) {
            p.at(s.span(), format!("{what} {}: {e}", path.display()));
        }
        path
    };
    let ca = file(&t.ca, "CA bundle");
    let client_cert = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let key = file(k, "private key");
            crate::perm::warn_if_exposed(&key, "outbound TLS private key");
            Some((file(c, "client certificate"), key))
        }
        (None, None) => None,
        (Some(c), None) => {
            p.at(c.span(), "[backend.tls] cert needs key (or neither)");
            None
        }
        (None, Some(k)) => {
            p.at(k.span(), "[backend.tls] key needs cert (or neither)");
            None
        }
    };
    let server_name = match (&t.server_name, address) {
        (Some(n), _) => n.get_ref().clone(),
        (None, BackendAddr::Tcp(a)) => host_of(a).to_string(),
        (None, BackendAddr::Unix(_)) => {
            p.at(
                span.clone(),
                "[backend.tls] on a unix: backend needs server_name (the name its certificate is valid for)",
            );
            String::new()
        }
    };
    let cfg = BackendTlsConfig {
        ca,
        client_cert,
        server_name,
    };
    if p.list.len() == problems_before && check == TlsCheck::Load {
        if let Err(e) = crate::tls::ClientTls::load(&cfg) {
            p.at(span, e.to_string());
        }
    }
    cfg
}

/// The host part of `host:port`, `1.2.3.4:port` or `[v6]:port`.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The value of an optional key, without its position.
fn value<T: Copy>(o: &Option<Spanned<T>>) -> Option<T> {
    o.as_ref().map(|v| *v.get_ref())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn resolve(p: &str, base: &Path) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn duration_or(v: &Option<Spanned<String>>, default: Duration, p: &mut Problems<'_>) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                p.at(s.span(), e);
                default
            }
        },
    }
}

/// Parses durations written as `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"14d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "invalid duration {s:?}: expected a number and a unit, like \"500ms\", \"10s\", \"5m\""
        )
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m, h or d"
            ))
        }
    };
    Ok(d)
}

fn parse_listen_addr(s: &str, base: &Path) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return unix_path(path, base).map(ListenAddr::Unix);
    }
    s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
        format!("invalid listen address {s:?}: expected \"[::]:3307\", \"0.0.0.0:3307\" or \"unix:/path.sock\" (listen addresses must be IP literals)")
    })
}

fn parse_backend_addr(s: &str, base: &Path) -> Result<BackendAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return unix_path(path, base).map(BackendAddr::Unix);
    }
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(BackendAddr::Tcp(s.to_string()));
    }
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(':')
                && port.parse::<u16>().is_ok_and(|p| p != 0) =>
        {
            Ok(BackendAddr::Tcp(s.to_string()))
        }
        _ => Err(format!("invalid backend address {s:?}: expected \"unix:/path\", \"127.0.0.1:3306\", \"[::1]:3306\" or \"host:port\" (IPv6 literals need brackets)")),
    }
}

/// Unix socket paths are limited to 108 bytes including the NUL by
/// `sockaddr_un`; refuse longer ones here rather than at bind time.
const MAX_UNIX_PATH: usize = 107;

fn unix_path(path: &str, base: &Path) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty Unix socket path after \"unix:\"".into());
    }
    let p = resolve(path, base);
    if p.as_os_str().len() > MAX_UNIX_PATH {
        return Err(format!(
            "Unix socket path {} is {} bytes long; the limit is {MAX_UNIX_PATH}",
            p.display(),
            p.as_os_str().len()
        ));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::from_toml(src, Path::new("test.toml"), Path::new("/nonexistent"))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert!(parse_duration("1w").is_err());
    }

    #[test]
    fn minimal_plaintext_unix_listener() {
        let c = parse(
            r#"
[[backend]]
name = "local"
address = "unix:/run/mysqld/mysqld.sock"

[[listener]]
name = "sock"
address = "unix:/tmp/p.sock"
route = "local"
"#,
        )
        .unwrap();
        assert_eq!(
            c.listeners[0].address,
            ListenAddr::Unix("/tmp/p.sock".into())
        );
        assert_eq!(
            c.backends[0].address,
            BackendAddr::Unix("/run/mysqld/mysqld.sock".into())
        );
        assert_eq!(c.listeners[0].handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
        assert_eq!(c.listeners[0].idle_timeout, None, "off by default");
        assert!(c.listeners[0].tls.is_none());
    }

    #[test]
    fn idle_timeout_zero_means_off_and_bad_values_have_lines() {
        let with = |v: &str| {
            parse(&format!(
                "[[backend]]\nname = \"b\"\naddress = \"unix:/x\"\n[[listener]]\nname = \"l\"\naddress = \"unix:/tmp/l.sock\"\nroute = \"b\"\nidle_timeout = {v:?}\n"
            ))
        };
        assert_eq!(
            with("30m").unwrap().listeners[0].idle_timeout,
            Some(Duration::from_secs(1800))
        );
        assert_eq!(with("0s").unwrap().listeners[0].idle_timeout, None);
        let e = with("forever").unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].line, Some(8));
        assert!(e.problems[0].message.contains("invalid duration"), "{e}");
    }

    #[test]
    fn workers_default_to_the_cpus_and_out_of_range_values_have_lines() {
        let with = |w: &str| {
            parse(&format!(
                "{w}\n[[backend]]\nname = \"b\"\naddress = \"unix:/x\"\n[[listener]]\nname = \"l\"\naddress = \"unix:/tmp/l.sock\"\nroute = \"b\"\n"
            ))
        };
        assert_eq!(with("").unwrap().workers, default_workers());
        assert!(default_workers() >= 1);
        assert_eq!(with("workers = 3").unwrap().workers, 3);
        for bad in ["workers = 0", "workers = -2", "workers = 1025"] {
            let e = with(bad).unwrap_err();
            assert_eq!(e.problems.len(), 1, "{bad}: {e}");
            assert_eq!(e.problems[0].line, Some(1), "{bad}");
            assert!(e.problems[0].message.contains("out of range"), "{bad}: {e}");
        }
        let e = with("workers = \"2\"").unwrap_err();
        assert_eq!(e.problems[0].line, Some(1), "{e}");
    }

    #[test]
    fn cert_refusal_values_and_needs_client_auth() {
        let with = |tls: &str| {
            parse(&format!(
                "[[backend]]\nname = \"b\"\naddress = \"unix:/x\"\n[[listener]]\nname = \"l\"\naddress = \"[::1]:0\"\nroute = \"b\"\n[listener.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n{tls}"
            ))
            .unwrap_err()
        };
        // The files do not exist, so every config errs; what matters is
        // which problems are reported.
        let e = with("client_auth = \"none\"\ncert_refusal = \"mysql_error\"\n");
        assert!(
            e.problems.iter().any(|p| p
                .message
                .contains("cert_refusal = \"mysql_error\" but client_auth = \"none\"")),
            "{e}"
        );
        let e = with("ca = \"ca.pem\"\ncert_refusal = \"mysql_error\"\n");
        assert!(
            !e.problems
                .iter()
                .any(|p| p.message.contains("cert_refusal")),
            "{e}"
        );
        let e = with("ca = \"ca.pem\"\ncert_refusal = \"err\"\n");
        assert!(
            e.problems
                .iter()
                .any(|p| p.message.contains("tls_alert") && p.message.contains("mysql_error")),
            "the accepted values are named: {e}"
        );
    }

    #[test]
    fn unknown_key_has_line() {
        let e =
            parse("[[backend]]\nname = \"a\"\naddress = \"unix:/x\"\nadress = 1\n").unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert_eq!(e.problems[0].line, Some(4));
        assert!(
            e.problems[0].message.contains("adress"),
            "{}",
            e.problems[0].message
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let e = parse(
            r#"shutdown_timeout = "forever"
[[backend]]
name = "local"
address = "db:notaport"

[[listener]]
name = "public"
address = "[::]:3307"
route = "nowhere"
"#,
        )
        .unwrap_err();
        let lines: Vec<_> = e.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(1), Some(4), Some(9), Some(6)], "{e}");
        assert!(
            e.to_string()
                .contains("test.toml:9: route \"nowhere\" names no [[backend]]"),
            "{e}"
        );
        assert!(e.problems[3].message.contains("allow_plaintext"), "{e}");
    }

    #[test]
    fn plaintext_on_public_address_needs_opt_in() {
        let src = |extra: &str| {
            format!("[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:3306\"\n[[listener]]\nname = \"l\"\naddress = \"0.0.0.0:3307\"\nroute = \"b\"\n{extra}")
        };
        assert!(parse(&src("")).is_err());
        assert!(parse(&src("allow_plaintext = true")).is_ok());
    }

    #[test]
    fn missing_tls_files_are_named() {
        let e = parse(
            r#"[[backend]]
name = "b"
address = "[::1]:3306"
[[listener]]
name = "l"
address = "[::1]:3307"
route = "b"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
ca = "ca.pem"
"#,
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
        assert!(
            e.problems[0].message.contains("/nonexistent/server.pem"),
            "{e}"
        );
    }

    fn with_admin(admin: &str) -> String {
        format!("[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:3306\"\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:3307\"\nroute = \"b\"\n{admin}")
    }

    #[test]
    fn admin_is_off_without_a_section() {
        assert_eq!(parse(&with_admin("")).unwrap().admin, None);
    }

    #[test]
    fn admin_defaults_to_loopback_9306() {
        let c = parse(&with_admin("[admin]\n")).unwrap();
        assert_eq!(
            c.admin,
            Some(AdminConfig {
                address: ListenAddr::Tcp("127.0.0.1:9306".parse().unwrap()),
                token_file: None,
            })
        );
    }

    #[test]
    fn admin_accepts_loopback_and_unix_without_token() {
        for (text, want) in [
            ("[::1]:9306", ListenAddr::Tcp("[::1]:9306".parse().unwrap())),
            (
                "127.0.0.1:0",
                ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
            ),
            (
                "unix:/run/portcullis/admin.sock",
                ListenAddr::Unix("/run/portcullis/admin.sock".into()),
            ),
        ] {
            let c = parse(&with_admin(&format!("[admin]\naddress = \"{text}\"\n"))).unwrap();
            assert_eq!(c.admin.unwrap().address, want, "{text}");
        }
    }

    #[test]
    fn non_loopback_admin_needs_a_token() {
        // Lines: 1-7 backend and listener, 8 [admin], 9 address.
        let e = parse(&with_admin("[admin]\naddress = \"0.0.0.0:9306\"\n")).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].line, Some(9), "{e}");
        assert!(
            e.to_string().starts_with(
                "test.toml:9: admin address 0.0.0.0:9306 is not loopback: anyone who reaches it"
            ),
            "{e}"
        );
        let e = parse(&with_admin("[admin]\naddress = \"[::]:9306\"\n")).unwrap_err();
        assert_eq!(e.problems[0].line, Some(9), "{e}");
    }

    #[test]
    fn non_loopback_admin_with_a_token_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "0123456789abcdef0123\n").unwrap();
        let c = Config::from_toml(
            &with_admin("[admin]\naddress = \"0.0.0.0:9306\"\ntoken_file = \"admin.token\"\n"),
            Path::new("test.toml"),
            dir.path(),
        )
        .unwrap();
        let admin = c.admin.unwrap();
        assert_eq!(admin.token_file, Some(dir.path().join("admin.token")));
        assert_eq!(
            read_admin_token(admin.token_file.as_ref().unwrap()).unwrap(),
            "0123456789abcdef0123"
        );
    }

    #[test]
    fn admin_token_problems_have_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short.token"), "secret\n").unwrap();
        let src = with_admin("[admin]\ntoken_file = \"short.token\"\n[admin.extra]\n");
        // Unknown keys are refused first, with their line.
        let e = Config::from_toml(&src, Path::new("test.toml"), dir.path()).unwrap_err();
        assert_eq!(e.problems[0].line, Some(10), "{e}");
        let src = with_admin("[admin]\ntoken_file = \"short.token\"\n");
        let e = Config::from_toml(&src, Path::new("test.toml"), dir.path()).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].line, Some(9), "{e}");
        assert!(
            e.problems[0]
                .message
                .contains("at least 16 printable ASCII characters")
                && e.problems[0].message.contains("(found 6)"),
            "{e}"
        );
        let src = with_admin("[admin]\ntoken_file = \"missing.token\"\n");
        let e = Config::from_toml(&src, Path::new("test.toml"), dir.path()).unwrap_err();
        assert_eq!(e.problems[0].line, Some(9), "{e}");
        assert!(
            e.problems[0]
                .message
                .starts_with("cannot read admin token file"),
            "{e}"
        );
    }

    #[test]
    fn admin_address_problems_have_lines() {
        let e = parse(&with_admin("[admin]\naddress = \"localhost:9306\"\n")).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].line, Some(9), "{e}");
        assert!(
            e.problems[0]
                .message
                .starts_with("invalid admin address \"localhost:9306\""),
            "{e}"
        );
        let e = parse(&with_admin("[admin]\naddress = \"127.0.0.1:3307\"\n")).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(
            e.problems[0].message,
            "admin address 127.0.0.1:3307 is also a [[listener]] address"
        );
    }

    #[test]
    fn backend_tls_needs_a_cert_key_pair_and_a_name_for_sockets() {
        let e = parse(
            r#"
[[backend]]
name = "a"
address = "db2.example.net:3307"
[backend.tls]
ca = "/nonexistent/ca.pem"
cert = "/nonexistent/client.pem"

[[backend]]
name = "b"
address = "unix:/run/b.sock"
[backend.tls]
ca = "/nonexistent/ca.pem"

[[listener]]
name = "l"
address = "unix:/tmp/l.sock"
route = "a"
"#,
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains(":7: [backend.tls] cert needs key"), "{text}");
        assert!(
            text.contains("on a unix: backend needs server_name"),
            "{text}"
        );
        assert!(text.contains(":6: CA bundle /nonexistent/ca.pem"), "{text}");
        assert_eq!(host_of("db2.example.net:3307"), "db2.example.net");
        assert_eq!(host_of("[::1]:3307"), "::1");
        assert_eq!(host_of("10.0.0.1:3306"), "10.0.0.1");
    }

    #[test]
    fn topology_routes_need_a_monitor_and_reserve_their_names() {
        let e = parse(
            r#"
[[backend]]
name = "primary"
address = "unix:/run/a.sock"
advertise = "[2001:db8::1]:3307"

[[listener]]
name = "rw"
address = "unix:/tmp/rw.sock"
route = "primary"
failover = "on"
failover_target = "primary"
"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(":3: backend name \"primary\" is reserved"),
            "{e}"
        );
        assert!(
            e.contains(":5: advertise \"[2001:db8::1]:3307\" is an IPv6 literal"),
            "{e}"
        );
        assert!(
            e.contains(
                ":10: route = \"primary\" follows the topology: it needs a [monitor] section"
            ),
            "{e}"
        );
        assert!(
            e.contains(":12: failover_target = \"primary\" follows the topology"),
            "{e}"
        );

        let e = parse("[monitor]\nuser = \"mon\"\ninterval = \"0s\"\n[[backend]]\nname = \"a\"\naddress = \"unix:/x\"\n[[listener]]\nname = \"l\"\naddress = \"unix:/tmp/l.sock\"\nroute = \"replica\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":1: [monitor] needs password or password_file"),
            "{e}"
        );
        assert!(
            e.contains(":3: [monitor] interval must be more than zero"),
            "{e}"
        );

        let c = parse("[monitor]\nuser = \"mon\"\npassword = \"pw\"\n[[backend]]\nname = \"a\"\naddress = \"unix:/x\"\n[[listener]]\nname = \"l\"\naddress = \"unix:/tmp/l.sock\"\nroute = \"replica\"\nmax_replica_lag = \"30s\"\non_primary_change = \"keep\"\n").unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.route_kind, Route::Replica);
        assert_eq!(l.max_replica_lag, Some(Duration::from_secs(30)));
        assert_eq!(l.on_primary_change, OnPrimaryChange::Keep);
        assert_eq!(l.primary_wait, DEFAULT_PRIMARY_WAIT);
        let m = c.monitor.as_ref().unwrap();
        assert_eq!(
            (m.user.as_str(), m.interval),
            ("mon", DEFAULT_MONITOR_INTERVAL)
        );
        assert!(!format!("{m:?}").contains("pw"), "no password in Debug");
    }

    #[test]
    fn backend_addresses() {
        let b = Path::new("/");
        assert!(parse_backend_addr("db2.example.net:3307", b).is_ok());
        assert!(parse_backend_addr("[::1]:3306", b).is_ok());
        assert!(parse_backend_addr("::1:3306", b).is_err());
        assert!(parse_backend_addr("host", b).is_err());
        assert!(parse_backend_addr("unix:", b).is_err());
        assert_eq!(
            parse_backend_addr("unix:rel.sock", Path::new("/etc/p")).unwrap(),
            BackendAddr::Unix("/etc/p/rel.sock".into())
        );
    }
}
