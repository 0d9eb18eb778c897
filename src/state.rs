//! The running proxy as the admin API, the reloads and the metrics
//! exposition read it: its lifecycle, its listeners (runtime, bound
//! address, counters, whether they accept) and backends, the topology, and
//! the lock that serializes reloads; and what health means for it (the
//! `/health` paths keepalived and load balancers probe).
//!
//! Built once by [`crate::Proxy::bind`]; the data path writes it through
//! atomics only (its listener's [`ListenerMetrics`] and accepting flag),
//! and never reads anything here that could make it wait.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::backend::BackendRuntime;
use crate::config::{
    BackendAddr, BackendConfig, Config, ListenAddr, TlsReloadConfig, TopologyRoute,
};
use crate::listener::{ListenerRuntime, RouteRuntime};
use crate::metrics::ListenerMetrics;
use crate::monitor::Topology;
use crate::time::unix_seconds;

/// Where the proxy is in its life, for `GET /health` and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Sockets bound, accept loops not started yet.
    Bound,
    /// Accepting and serving.
    Serving,
    /// Told to drain: no longer accepting, sessions finishing.
    Draining,
    /// Closing every session now.
    Stopping,
    /// Everything closed.
    Stopped,
}

impl Lifecycle {
    /// Stable name, as `/status` reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Bound => "starting",
            Lifecycle::Serving => "serving",
            Lifecycle::Draining => "draining",
            Lifecycle::Stopping => "stopping",
            Lifecycle::Stopped => "stopped",
        }
    }
}

/// Everything the admin API reads about the running proxy. Built by
/// [`crate::Proxy::bind`]; the data path writes it through atomics only.
pub struct ProxyState {
    started: Instant,
    started_at: SystemTime,
    lifecycle: watch::Sender<Lifecycle>,
    pub listeners: Vec<Arc<ListenerState>>,
    pub backends: Vec<Arc<BackendRuntime>>,
    /// The config file reloads re-read.
    pub config_path: PathBuf,
    /// How TLS material is watched (from the config at start).
    pub tls_reload: TlsReloadConfig,
    /// Serializes reloads (poll, SIGHUP, admin).
    pub reload_lock: ReloadLock,
    /// The topology, with a `[monitor]`.
    pub topology: Option<Arc<Topology>>,
    /// The config the proxy started with, which a reload compares the file
    /// with to name what it cannot apply; set once by
    /// [`crate::Proxy::bind`].
    pub started_with: OnceLock<Config>,
}

/// One listener as the admin API sees it.
pub struct ListenerState {
    pub runtime: Arc<ListenerRuntime>,
    /// The address actually bound (port 0 resolved).
    pub address: ListenAddr,
    pub metrics: ListenerMetrics,
    accepting: AtomicBool,
}

impl ListenerState {
    pub fn new(runtime: Arc<ListenerRuntime>, address: ListenAddr) -> ListenerState {
        ListenerState {
            runtime,
            address,
            metrics: ListenerMetrics::default(),
            accepting: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.runtime.config.name
    }

    /// Whether its accept loop is running.
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// Marks the accept loop as running until the guard is dropped.
    pub fn accepting(self: &Arc<Self>) -> AcceptingGuard {
        self.accepting.store(true, Ordering::Relaxed);
        AcceptingGuard(self.clone())
    }
}

/// Clears a listener's accepting flag when its accept loop ends, however
/// it ends.
pub struct AcceptingGuard(Arc<ListenerState>);

impl Drop for AcceptingGuard {
    fn drop(&mut self) {
        self.0.accepting.store(false, Ordering::Relaxed);
    }
}

impl ProxyState {
    pub fn new(
        listeners: Vec<Arc<ListenerState>>,
        backends: Vec<Arc<BackendRuntime>>,
        config_path: PathBuf,
        tls_reload: TlsReloadConfig,
        topology: Option<Arc<Topology>>,
    ) -> ProxyState {
        ProxyState {
            started: Instant::now(),
            started_at: SystemTime::now(),
            lifecycle: watch::Sender::new(Lifecycle::Bound),
            listeners,
            backends,
            config_path,
            tls_reload,
            reload_lock: ReloadLock::default(),
            topology,
            started_with: OnceLock::new(),
        }
    }

    pub fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.borrow()
    }

    pub fn set_lifecycle(&self, l: Lifecycle) {
        self.lifecycle.send_replace(l);
    }

    /// Follows lifecycle changes (tests wait on it instead of sleeping).
    pub fn watch_lifecycle(&self) -> watch::Receiver<Lifecycle> {
        self.lifecycle.subscribe()
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Start time as seconds since the Unix epoch.
    pub fn started_at(&self) -> i64 {
        unix_seconds(self.started_at)
    }

    /// `Ok` while the proxy serves: running, not draining, every listener
    /// accepting, and no `primary`-routed listener has been without a
    /// primary for longer than its `primary_wait`. Otherwise every reason
    /// it does not (`GET /health`).
    pub fn health(&self) -> Result<(), Vec<String>> {
        let mut reasons: Vec<String> = self.lifecycle_reason().into_iter().collect();
        if self.listeners.is_empty() {
            reasons.push("no listener is bound".into());
        }
        if self.lifecycle() == Lifecycle::Serving {
            for l in self.listeners.iter().filter(|l| !l.is_accepting()) {
                reasons.push(format!(
                    "listener {:?} is not accepting connections",
                    l.name()
                ));
            }
        }
        reasons.extend(self.listeners.iter().filter_map(|l| l.primary_overdue()));
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// Why the proxy is not serving, if it is not.
    fn lifecycle_reason(&self) -> Option<String> {
        match self.lifecycle() {
            Lifecycle::Serving => None,
            Lifecycle::Bound => Some("starting: listeners bound but not accepting yet".into()),
            Lifecycle::Draining => Some(
                "draining: not accepting new connections, waiting for sessions to finish".into(),
            ),
            Lifecycle::Stopping => Some("stopping: closing every session".into()),
            Lifecycle::Stopped => Some("stopped".into()),
        }
    }

    /// `GET /health/listener/NAME`: `None` without such a listener; `Ok`
    /// (where new connections go) while it accepts and has a backend for
    /// a new connection now; otherwise every reason it does not.
    pub fn listener_health(&self, name: &str) -> Option<Result<String, Vec<String>>> {
        let l = self.listeners.iter().find(|l| l.name() == name)?;
        let mut reasons: Vec<String> = self.lifecycle_reason().into_iter().collect();
        if self.lifecycle() == Lifecycle::Serving && !l.is_accepting() {
            reasons.push(format!("listener {name:?} is not accepting connections"));
        }
        let destination = l.destination();
        match destination {
            Ok(to) if reasons.is_empty() => Some(Ok(to)),
            Ok(_) => Some(Err(reasons)),
            Err(why) => {
                reasons.push(why);
                Some(Err(reasons))
            }
        }
    }

    /// `GET /health/primary`: `Ok` while the proxy serves and `backend`
    /// is the primary the topology names (a pin counts: it is what
    /// `primary` routes follow); otherwise why not. `None` without a
    /// `[monitor]` or without such a backend.
    pub fn primary_health(&self, backend: &str) -> Option<Result<String, String>> {
        let t = self.topology.as_ref()?;
        let m = t.backend(backend)?;
        if let Some(why) = self.lifecycle_reason() {
            return Some(Err(why));
        }
        Some(match t.primary() {
            Some(p) if p == backend => Ok(format!("{backend} is the primary")),
            Some(p) => Err(format!(
                "{backend} is not the primary ({}); the primary is {p}",
                role_text(&m.health.load())
            )),
            None => Err(format!(
                "{backend} is not the primary ({}); there is none: {}",
                role_text(&m.health.load()),
                no_primary_reason(&roles(t))
            )),
        })
    }

    /// The backend `GET /health/primary` asks about when the request names
    /// none: the one this proxy fronts, see [`local_backend`].
    pub fn local_backend(&self) -> Result<String, String> {
        local_backend(self.backends.iter().map(|b| &b.config))
    }
}

/// The backend a sidecar fronts, from the configured backends: the only
/// one; else the only one on a Unix socket; else the only one on a
/// loopback address (`127.0.0.0/8`, `[::1]`, `localhost`). Anything else
/// is ambiguous, and `Err` says which candidates there are.
pub fn local_backend<'a>(
    backends: impl IntoIterator<Item = &'a BackendConfig>,
) -> Result<String, String> {
    let all: Vec<&BackendConfig> = backends.into_iter().collect();
    let names = |v: &[&BackendConfig]| {
        v.iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let [only] = all.as_slice() {
        return Ok(only.name.clone());
    }
    let unix: Vec<&BackendConfig> = all
        .iter()
        .copied()
        .filter(|b| matches!(b.address, BackendAddr::Unix(_)))
        .collect();
    match unix.as_slice() {
        [one] => return Ok(one.name.clone()),
        [] => {}
        many => {
            return Err(format!(
                "several backends are on Unix sockets ({}): name one with ?backend=NAME",
                names(many)
            ))
        }
    }
    let loopback: Vec<&BackendConfig> = all
        .iter()
        .copied()
        .filter(|b| match &b.address {
            BackendAddr::Tcp(a) => is_loopback(a),
            BackendAddr::Unix(_) => false,
        })
        .collect();
    match loopback.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(format!(
            "no backend is on a Unix socket or a loopback address, so which one this proxy fronts is not known (backends: {}): name one with ?backend=NAME",
            names(&all)
        )),
        many => Err(format!(
            "several backends are on loopback addresses ({}): name one with ?backend=NAME",
            names(many)
        )),
    }
}

/// `host:port` with a loopback IP literal or `localhost` as host.
fn is_loopback(addr: &str) -> bool {
    if let Ok(sa) = addr.parse::<std::net::SocketAddr>() {
        return sa.ip().is_loopback();
    }
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// Every monitored backend's name and role.
fn roles(t: &Topology) -> Vec<(String, &'static str)> {
    t.backends
        .iter()
        .map(|m| (m.backend.config.name.clone(), m.health.load().role.label()))
        .collect()
}

/// A backend's role as the monitor last saw it, for messages.
fn role_text(h: &crate::monitor::Health) -> String {
    match &h.error {
        Some(e) if h.role == crate::monitor::Role::Down => format!("down: {e}"),
        _ => h.role.label().to_string(),
    }
}

/// Why the topology has no primary, from the roles the monitor last saw
/// (name, role).
pub fn no_primary_reason(roles: &[(String, &str)]) -> String {
    let writable: Vec<&str> = roles
        .iter()
        .filter(|(_, r)| *r == "primary")
        .map(|(n, _)| n.as_str())
        .collect();
    if writable.len() >= 2 {
        format!(
            "two or more writable backends that do not replicate ({}); portcullis never elects: make all but one read-only, or pin one with POST /primary",
            writable.join(", ")
        )
    } else if !writable.is_empty() {
        format!(
            "the monitor has not concluded its round yet ({})",
            roles_text(roles)
        )
    } else if roles.iter().all(|(_, r)| *r == "unknown") {
        "the monitor has not checked the backends yet".into()
    } else {
        format!("no writable backend ({})", roles_text(roles))
    }
}

/// The `/health` reason for a `primary`-routed listener that has had no
/// primary for `absent`, longer than its `primary_wait`; `None` while
/// within it.
pub fn primary_overdue_reason(
    listener: &str,
    absent: Duration,
    primary_wait: Duration,
    why: impl FnOnce() -> String,
) -> Option<String> {
    (absent > primary_wait).then(|| {
        format!(
            "listener {listener:?} routes to the primary and none has been known for longer than its primary_wait ({primary_wait:?}): {}",
            why()
        )
    })
}

impl ListenerState {
    /// For a `primary`-routed listener without a primary for longer than
    /// its `primary_wait`: the `/health` reason.
    fn primary_overdue(&self) -> Option<String> {
        let RouteRuntime::Topology {
            kind: TopologyRoute::Primary,
            topology,
        } = &self.runtime.route
        else {
            return None;
        };
        primary_overdue_reason(
            self.name(),
            topology.primary_absent_for()?,
            self.runtime.config.primary_wait,
            || no_primary_reason(&roles(topology)),
        )
    }

    /// Where a new connection would go now, or why it has nowhere to go.
    /// The same choices as the session's routing, without waiting.
    fn destination(&self) -> Result<String, String> {
        let cfg = &self.runtime.config;
        match &self.runtime.route {
            RouteRuntime::Fixed(b) => {
                let name = &b.config.name;
                let health = self
                    .runtime
                    .topology
                    .as_ref()
                    .and_then(|t| t.backend(name))
                    .map(|m| m.health.load_full());
                match health {
                    Some(h) if h.role == crate::monitor::Role::Down => {
                        Err(format!("its backend {name} is {}", role_text(&h)))
                    }
                    _ => Ok(format!("new connections go to {name}")),
                }
            }
            RouteRuntime::Topology { kind, topology } => {
                let picked = match kind {
                    TopologyRoute::Primary => topology.primary(),
                    TopologyRoute::Replica => topology
                        .pick(crate::monitor::Pick::Replica, cfg.max_replica_lag)
                        .map(|b| b.config.name.clone()),
                    TopologyRoute::Any => topology
                        .pick(crate::monitor::Pick::Any, None)
                        .map(|b| b.config.name.clone()),
                };
                match (picked, kind) {
                    (Some(b), TopologyRoute::Primary) => {
                        Ok(format!("new connections go to the primary, {b}"))
                    }
                    (Some(b), _) => Ok(format!(
                        "new connections go to {} backends, now {b}",
                        kind.name()
                    )),
                    (None, TopologyRoute::Primary) => Err(format!(
                        "no primary: {}",
                        no_primary_reason(&roles(topology))
                    )),
                    (None, TopologyRoute::Replica) => Err(format!(
                        "no healthy replica{} ({})",
                        cfg.max_replica_lag
                            .map(|l| format!(" within max_replica_lag {l:?}"))
                            .unwrap_or_default(),
                        roles_text(&roles(topology))
                    )),
                    (None, TopologyRoute::Any) => Err(format!(
                        "no healthy backend ({})",
                        roles_text(&roles(topology))
                    )),
                }
            }
        }
    }
}

/// `db1 primary, db2 down`.
fn roles_text(roles: &[(String, &str)]) -> String {
    roles
        .iter()
        .map(|(n, r)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("lifecycle", &self.lifecycle())
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

/// Serializes reloads across triggers (poll, SIGHUP, admin), so they never
/// build over each other.
#[derive(Default)]
pub struct ReloadLock(Mutex<()>);

impl ReloadLock {
    /// Holds the lock until the guard is dropped.
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        crate::sync::lock(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, address: BackendAddr) -> BackendConfig {
        BackendConfig {
            name: name.into(),
            address,
            connect_timeout: Duration::from_secs(1),
            tls: None,
            advertise: None,
            proxy_protocol: false,
        }
    }

    fn tcp(a: &str) -> BackendAddr {
        BackendAddr::Tcp(a.into())
    }

    fn unix(p: &str) -> BackendAddr {
        BackendAddr::Unix(p.into())
    }

    #[test]
    fn the_backend_a_sidecar_fronts() {
        let pick = |v: &[BackendConfig]| local_backend(v.iter());
        assert_eq!(
            pick(&[backend("db", tcp("db1.example.net:3306"))]),
            Ok("db".into())
        );
        assert_eq!(
            pick(&[
                backend("far", tcp("127.0.0.1:3306")),
                backend("local", unix("/run/mysqld/mysqld.sock")),
            ]),
            Ok("local".into())
        );
        assert_eq!(
            pick(&[
                backend("far", tcp("db2.example.net:3307")),
                backend("here", tcp("[::1]:3306")),
            ]),
            Ok("here".into())
        );
        assert_eq!(
            pick(&[
                backend("far", tcp("db2.example.net:3307")),
                backend("here", tcp("localhost:3306")),
            ]),
            Ok("here".into())
        );
        assert_eq!(
            pick(&[backend("a", unix("/a.sock")), backend("b", unix("/b.sock"))]),
            Err("several backends are on Unix sockets (a, b): name one with ?backend=NAME".into())
        );
        assert_eq!(
            pick(&[
                backend("a", tcp("127.0.0.1:1")),
                backend("b", tcp("127.0.0.2:2"))
            ]),
            Err(
                "several backends are on loopback addresses (a, b): name one with ?backend=NAME"
                    .into()
            )
        );
        assert_eq!(
            pick(&[
                backend("a", tcp("db1.example.net:3306")),
                backend("b", tcp("10.0.0.2:3306")),
            ]),
            Err("no backend is on a Unix socket or a loopback address, so which one this proxy fronts is not known (backends: a, b): name one with ?backend=NAME".into())
        );
    }

    fn roles(v: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
        v.iter().map(|(n, r)| (n.to_string(), *r)).collect()
    }

    #[test]
    fn why_there_is_no_primary() {
        assert_eq!(
            no_primary_reason(&roles(&[("db1", "primary"), ("db2", "primary"), ("db3", "replica")])),
            "two or more writable backends that do not replicate (db1, db2); portcullis never elects: make all but one read-only, or pin one with POST /primary"
        );
        assert_eq!(
            no_primary_reason(&roles(&[("db1", "replica"), ("db2", "down")])),
            "no writable backend (db1 replica, db2 down)"
        );
        assert_eq!(
            no_primary_reason(&roles(&[("db1", "unknown"), ("db2", "unknown")])),
            "the monitor has not checked the backends yet"
        );
        assert_eq!(
            no_primary_reason(&roles(&[("db1", "primary"), ("db2", "unknown")])),
            "the monitor has not concluded its round yet (db1 primary, db2 unknown)"
        );
    }

    #[test]
    fn a_missing_primary_counts_only_after_primary_wait() {
        let wait = Duration::from_millis(300);
        let why = || "no writable backend (db1 replica)".to_string();
        assert_eq!(
            primary_overdue_reason("rw", Duration::ZERO, wait, why),
            None
        );
        assert_eq!(primary_overdue_reason("rw", wait, wait, why), None);
        assert_eq!(
            primary_overdue_reason("rw", wait + Duration::from_millis(1), wait, why).as_deref(),
            Some("listener \"rw\" routes to the primary and none has been known for longer than its primary_wait (300ms): no writable backend (db1 replica)")
        );
        // primary_wait = "0s": as soon as there is none.
        assert!(
            primary_overdue_reason("rw", Duration::from_nanos(1), Duration::ZERO, why).is_some()
        );
    }
}
