//! What the running proxy counts and reports about itself: its lifecycle,
//! per-listener counters and gauges, and their Prometheus encoding.
//!
//! Sessions only ever touch atomics here: counters are `AtomicU64`s, and
//! the few label sets that grow at run time (outcome, TLS failure reason,
//! backend) live in copy-on-write lists behind an [`ArcSwap`], so adding a
//! label is a compare-and-swap and reading one is a lock-free load. The
//! scrape reads the same atomics; nothing a session does can wait on it.
//!
//! Metric names and label values are part of the public interface
//! (dashboards and alerts depend on them): never change one once released.
//! docs/operations.md lists them all.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use std::path::PathBuf;

use crate::backend::BackendRuntime;
use crate::config::{ListenAddr, TlsReloadConfig};
use crate::listener::ListenerRuntime;
use crate::monitor::Topology;
use crate::outcome::{Finished, SessionError};
use crate::relay::ByteCounts;
use crate::reload::ReloadLock;
use crate::session::SessionInfo;
use crate::time::unix_seconds;

/// The version in `portcullis_build_info` and `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Content type of [`ProxyState::encode_metrics`]: OpenMetrics text, which
/// Prometheus negotiates by default (counters are typed without their
/// `_total` suffix, and the body ends with `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the handshake latency buckets. The connection
/// phase spans a backend connect, a TLS handshake and an authentication
/// round trip: a local sidecar finishes in about a millisecond, a WAN
/// client in tens of milliseconds, and the default handshake timeout (10 s)
/// caps the rest.
pub const HANDSHAKE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

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
    /// accepting. Otherwise every reason it does not.
    pub fn health(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        match self.lifecycle() {
            Lifecycle::Serving => {}
            Lifecycle::Bound => {
                reasons.push("starting: listeners bound but not accepting yet".into())
            }
            Lifecycle::Draining => reasons.push(
                "draining: not accepting new connections, waiting for sessions to finish".into(),
            ),
            Lifecycle::Stopping => reasons.push("stopping: closing every session".into()),
            Lifecycle::Stopped => reasons.push("stopped".into()),
        }
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
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode_metrics(self: &Arc<Self>) -> String {
        let mut registry = Registry::with_prefix("portcullis");
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl std::fmt::Debug for ProxyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyState")
            .field("lifecycle", &self.lifecycle())
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Per-listener metrics
// ---------------------------------------------------------------------------

/// Counters of one listener. Every method is lock-free.
#[derive(Default)]
pub struct ListenerMetrics {
    /// Connections accepted (including refused ones), for `/status`.
    accepted: AtomicU64,
    /// Sessions in progress (holding a connection slot).
    active: AtomicI64,
    /// Finished connections by outcome label.
    outcomes: LabeledCounters,
    /// Clients sent elsewhere with the instant-failover redirect.
    redirects: AtomicU64,
    /// Failed TLS handshakes by reason.
    tls_failures: LabeledCounters,
    /// Failed backend connects by backend name.
    backend_connect_errors: LabeledCounters,
    /// Relayed bytes, added by each session's relay as they flow.
    bytes: ByteCounts,
    handshake: AtomicHistogram,
}

/// Holds one active session; the gauge goes down when it is dropped, so a
/// cancelled or panicking session task still counts right.
pub struct ActiveSession<'a>(&'a ListenerMetrics);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        // Release: whoever sees the gauge drop also sees what the session
        // recorded before ending (tests wait on exactly that).
        self.0.active.fetch_sub(1, Ordering::Release);
    }
}

impl ListenerMetrics {
    /// Counts an accepted connection.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session as active until the returned guard is dropped.
    pub fn session_started(&self) -> ActiveSession<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveSession(self)
    }

    /// The listener's relayed-byte totals, for its sessions' relays.
    pub fn bytes(&self) -> &ByteCounts {
        &self.bytes
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Acquire)
    }

    /// Records how one connection ended (called once, where it is logged).
    pub fn record(
        &self,
        info: &SessionInfo,
        result: &Result<Finished, SessionError>,
        backend: &str,
    ) {
        match result {
            Ok(f) => {
                self.outcomes.inc(f.label());
                if let Finished::Redirected { .. } = f {
                    self.redirects.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                self.outcomes.inc(e.label());
                if let SessionError::TlsHandshake { reason, .. } = e {
                    self.tls_failures.inc(reason);
                }
                if let SessionError::BackendUnavailable(_)
                | SessionError::BackendTls { .. }
                | SessionError::BackendTlsRefused = e
                {
                    self.backend_connect_errors
                        .inc(info.backend.as_deref().unwrap_or(backend));
                }
            }
        }
        if let Some(d) = info.handshake_done {
            self.handshake.observe(d);
        }
    }

    /// Finished connections by outcome label, sorted by label.
    pub fn outcomes(&self) -> Vec<(Arc<str>, u64)> {
        self.outcomes.snapshot()
    }
}

/// Counters keyed by a label value, without locks: the list is replaced
/// whole (copy-on-write, compare-and-swap) when a label first appears;
/// afterwards incrementing is a lock-free load and an atomic add.
#[derive(Default)]
struct LabeledCounters {
    list: ArcSwap<Vec<(Arc<str>, Arc<AtomicU64>)>>,
}

impl LabeledCounters {
    fn inc(&self, label: &str) {
        if let Some(c) = self.find(label) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let fresh = Arc::new(AtomicU64::new(0));
        self.list.rcu(|cur| {
            if cur.iter().any(|(l, _)| &**l == label) {
                // Someone added it meanwhile: keep theirs.
                Arc::clone(cur)
            } else {
                let mut v = Vec::with_capacity(cur.len() + 1);
                v.extend(cur.iter().cloned());
                v.push((Arc::from(label), fresh.clone()));
                Arc::new(v)
            }
        });
        if let Some(c) = self.find(label) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn find(&self, label: &str) -> Option<Arc<AtomicU64>> {
        self.list
            .load()
            .iter()
            .find(|(l, _)| &**l == label)
            .map(|(_, c)| c.clone())
    }

    fn snapshot(&self) -> Vec<(Arc<str>, u64)> {
        let mut v: Vec<_> = self
            .list
            .load()
            .iter()
            .map(|(l, c)| (l.clone(), c.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }
}

/// A fixed-bucket histogram of atomics.
struct AtomicHistogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; HANDSHAKE_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = HANDSHAKE_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(HANDSHAKE_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (sum in seconds, count, per-bucket counts with upper bounds).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = HANDSHAKE_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // Count from the buckets just read, so count and the +Inf bucket
        // agree even while sessions are being recorded.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

// ---------------------------------------------------------------------------
// Prometheus encoding
// ---------------------------------------------------------------------------

/// Reads every metric at scrape time.
#[derive(Debug)]
struct Scrape(Arc<ProxyState>);

type L1<'a> = [(&'static str, &'a str); 1];
type L2<'a> = [(&'static str, &'a str); 2];

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let listeners = &self.0.listeners;

        let mut m = enc.encode_descriptor(
            "build",
            "Build information: the running version.",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[("version", VERSION)])?;

        let mut m = enc.encode_descriptor(
            "connections",
            "Connections finished, by listener and outcome label.",
            None,
            MetricType::Counter,
        )?;
        for l in listeners {
            for (outcome, n) in l.metrics.outcomes.snapshot() {
                let labels: L2 = [("listener", l.name()), ("outcome", &outcome)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }

        let mut m = enc.encode_descriptor(
            "redirects",
            "Clients answered with the instant-failover redirect, by listener.",
            None,
            MetricType::Counter,
        )?;
        for l in listeners {
            let labels: L1 = [("listener", l.name())];
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, u64, u64>(
                    &l.metrics.redirects.load(Ordering::Relaxed),
                    None,
                )?;
        }

        let mut m = enc.encode_descriptor(
            "active_sessions",
            "Sessions in progress, by listener.",
            None,
            MetricType::Gauge,
        )?;
        for l in listeners {
            let labels: L1 = [("listener", l.name())];
            m.encode_family(&labels)?
                .encode_gauge(&l.metrics.active())?;
        }

        let mut m = enc.encode_descriptor(
            "handshake_duration_seconds",
            "Time from accept to the backend's authentication OK, for sessions that reached the relay phase.",
            None,
            MetricType::Histogram,
        )?;
        for l in listeners {
            let (sum, count, buckets) = l.metrics.handshake.snapshot();
            let labels: L1 = [("listener", l.name())];
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let mut m = enc.encode_descriptor(
            "tls_failures",
            "Failed TLS handshakes, by listener and reason.",
            None,
            MetricType::Counter,
        )?;
        for l in listeners {
            for (reason, n) in l.metrics.tls_failures.snapshot() {
                let labels: L2 = [("listener", l.name()), ("reason", &reason)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }

        let mut m = enc.encode_descriptor(
            "backend_connect_errors",
            "Failed connects to a backend, by listener and backend.",
            None,
            MetricType::Counter,
        )?;
        for l in listeners {
            for (backend, n) in l.metrics.backend_connect_errors.snapshot() {
                let labels: L2 = [("listener", l.name()), ("backend", &backend)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }

        let mut m = enc.encode_descriptor(
            "bytes",
            "Bytes relayed after authentication, by listener and direction, counted as they are written.",
            None,
            MetricType::Counter,
        )?;
        for l in listeners {
            let t = l.metrics.bytes.snapshot();
            for (direction, n) in [("client_to_backend", t.up), ("backend_to_client", t.down)] {
                let labels: L2 = [("listener", l.name()), ("direction", direction)];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, u64, u64>(&n, None)?;
            }
        }

        // Expiry of the TLS material in service: alert well before these.
        let mut m = enc.encode_descriptor(
            "certificate_not_after_seconds",
            "Not-after of the certificates each listener has in service (role server: the one it presents; role ca: the CAs client certificates are checked against), as a Unix timestamp.",
            None,
            MetricType::Gauge,
        )?;
        for l in listeners {
            if let Some(tls) = &l.runtime.tls {
                let tls = tls.load();
                let certs =
                    std::iter::once(("server", &tls.leaf)).chain(tls.cas.iter().map(|c| ("ca", c)));
                for (role, c) in certs {
                    let labels = [
                        ("listener", l.name()),
                        ("role", role),
                        ("subject", c.subject.as_str()),
                        ("serial", c.serial.as_str()),
                    ];
                    m.encode_family(&labels)?.encode_gauge(&c.not_after)?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "crl_next_update_seconds",
            "Next-update of each CRL a listener checks client certificates against, as a Unix timestamp.",
            None,
            MetricType::Gauge,
        )?;
        for l in listeners {
            if let Some(tls) = &l.runtime.tls {
                for crl in tls.load().crls.iter() {
                    if let Some(next) = crl.next_update {
                        let labels: L2 = [("listener", l.name()), ("issuer", &crl.issuer)];
                        m.encode_family(&labels)?.encode_gauge(&next)?;
                    }
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "tls_reloads",
            "TLS material reloads that built new material (success) or kept the old in service (failure), by listener.",
            None,
            MetricType::Counter,
        )?;
        for l in listeners {
            if let Some(tls) = &l.runtime.tls {
                for (result, n) in [
                    ("success", &tls.material.reloads_ok),
                    ("failure", &tls.material.reloads_failed),
                ] {
                    let labels: L2 = [("listener", l.name()), ("result", result)];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, u64, u64>(&n.load(Ordering::Relaxed), None)?;
                }
            }
        }
        let backends = &self.0.backends;
        let mut m = enc.encode_descriptor(
            "backend_certificate_not_after_seconds",
            "Not-after of the outbound TLS certificates of each backend (role client: the certificate portcullis presents; role ca: the CAs the backend's certificate is checked against), as a Unix timestamp.",
            None,
            MetricType::Gauge,
        )?;
        for b in backends {
            if let Some(tls) = &b.tls {
                let tls = tls.load();
                let certs = tls
                    .leaf
                    .iter()
                    .map(|c| ("client", c))
                    .chain(tls.cas.iter().map(|c| ("ca", c)));
                for (role, c) in certs {
                    let labels = [
                        ("backend", b.config.name.as_str()),
                        ("role", role),
                        ("subject", c.subject.as_str()),
                        ("serial", c.serial.as_str()),
                    ];
                    m.encode_family(&labels)?.encode_gauge(&c.not_after)?;
                }
            }
        }
        let mut m = enc.encode_descriptor(
            "backend_tls_reloads",
            "Reloads of a backend's outbound TLS material that put new material in service (success) or kept the old (failure).",
            None,
            MetricType::Counter,
        )?;
        for b in backends {
            if let Some(tls) = &b.tls {
                for (result, n) in [
                    ("success", &tls.reloads_ok),
                    ("failure", &tls.reloads_failed),
                ] {
                    let labels: L2 = [("backend", b.config.name.as_str()), ("result", result)];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, u64, u64>(&n.load(Ordering::Relaxed), None)?;
                }
            }
        }
        if let Some(topology) = &self.0.topology {
            let mut m = enc.encode_descriptor(
                "backend_role",
                "The monitor's classification of each backend: 1 for its current role, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for b in &topology.backends {
                let role = b.health.load().role;
                for r in crate::monitor::ROLES {
                    let labels: L2 = [("backend", b.backend.config.name.as_str()), ("role", r)];
                    m.encode_family(&labels)?
                        .encode_gauge(&i64::from(r == role))?;
                }
            }
            let mut m = enc.encode_descriptor(
                "backend_replication_lag_seconds",
                "Seconds_Behind_Master of each replicating backend, as the monitor last read it.",
                None,
                MetricType::Gauge,
            )?;
            for b in &topology.backends {
                if let Some(lag) = b.health.load().lag_seconds {
                    let labels: L1 = [("backend", b.backend.config.name.as_str())];
                    m.encode_family(&labels)?.encode_gauge(&(lag as i64))?;
                }
            }
            let mut m = enc.encode_descriptor(
                "primary_changes",
                "Times the primary changed (to another backend, or to none), monitor or pin.",
                None,
                MetricType::Counter,
            )?;
            m.encode_counter::<NoLabelSet, u64, u64>(
                &topology.changes.load(Ordering::Relaxed),
                None,
            )?;
        }
        let mut m = enc.encode_descriptor(
            "tls_loaded_timestamp_seconds",
            "When the TLS material in service was loaded, by listener, as a Unix timestamp.",
            None,
            MetricType::Gauge,
        )?;
        for l in listeners {
            if let Some(tls) = &l.runtime.tls {
                let labels: L1 = [("listener", l.name())];
                m.encode_family(&labels)?
                    .encode_gauge(&tls.load().loaded_at)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "revoked_sessions",
            "Live sessions whose client certificate newly loaded CAs or CRLs refuse, by listener and action (closed, or kept with on_revoke = keep).",
            None,
            MetricType::Counter,
        )?;
        for l in listeners {
            if let Some(tls) = &l.runtime.tls {
                for (action, n) in [("closed", &tls.revoked_closed), ("kept", &tls.revoked_kept)] {
                    let labels: L2 = [("listener", l.name()), ("action", action)];
                    m.encode_family(&labels)?
                        .encode_counter::<NoLabelSet, u64, u64>(&n.load(Ordering::Relaxed), None)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_counters_add_labels_once() {
        let c = LabeledCounters::default();
        c.inc("relayed");
        c.inc("tls_required");
        c.inc("relayed");
        let snap: Vec<(String, u64)> = c
            .snapshot()
            .into_iter()
            .map(|(l, n)| (l.to_string(), n))
            .collect();
        assert_eq!(
            snap,
            vec![("relayed".to_string(), 2), ("tls_required".to_string(), 1)]
        );
    }

    #[test]
    fn labeled_counters_from_many_threads() {
        let c = Arc::new(LabeledCounters::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.inc(["a", "b", "c", "d"][(i + t) % 4]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap: Vec<u64> = c.snapshot().into_iter().map(|(_, n)| n).collect();
        assert_eq!(snap, vec![2000, 2000, 2000, 2000]);
    }

    #[test]
    fn histogram_buckets() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 60.0313).abs() < 1e-9, "{sum}");
        let nonzero: Vec<(f64, u64)> = buckets.into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            nonzero,
            vec![(0.0005, 1), (0.001, 1), (0.05, 1), (f64::INFINITY, 1)]
        );
    }
}

/// Pins the whole OpenMetrics text of a small proxy: two listeners (one
/// with TLS and a CRL), a backend with outbound TLS, a topology, and some
/// recorded outcomes. Certificates have fixed dates and serials, so the
/// only value that depends on the run is when the material was loaded.
#[cfg(test)]
mod exposition_pin {
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
        DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
        RevocationReason, RevokedCertParams, SerialNumber,
    };

    use crate::outcome::{Finished, SessionError};
    use crate::session::SessionInfo;
    use crate::{Config, Proxy};

    fn record(
        l: &crate::metrics::ListenerState,
        info: &SessionInfo,
        result: Result<Finished, SessionError>,
    ) {
        l.metrics.record(info, &result, "db1");
    }

    fn encode(state: &Arc<crate::metrics::ProxyState>) -> String {
        state.encode_metrics()
    }

    fn write(dir: &Path, name: &str, content: &str) -> String {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_string()
    }

    fn leaf(
        cn: &str,
        serial: u64,
        eku: ExtendedKeyUsagePurpose,
        issuer: &CertifiedIssuer<'static, KeyPair>,
    ) -> (String, String) {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![eku];
        p.use_authority_key_identifier_extension = true;
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2099, 6, 1);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the PKI and returns the config.
    fn config(dir: &Path) -> Config {
        let mut ca = CertificateParams::default();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "Pin CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.serial_number = Some(SerialNumber::from(1));
        ca.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let (server, server_key) = leaf("localhost", 10, ExtendedKeyUsagePurpose::ServerAuth, &ca);
        let (client, client_key) = leaf("proxy", 11, ExtendedKeyUsagePurpose::ClientAuth, &ca);
        let crl = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 2),
            next_update: rcgen::date_time_ymd(2098, 1, 1),
            crl_number: SerialNumber::from(1),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(99),
                revocation_time: rcgen::date_time_ymd(2020, 1, 2),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca)
        .unwrap();
        let toml = format!(
            "[monitor]\nuser = \"mon\"\npassword = \"mon-pass\"\n\n\
             [[backend]]\nname = \"db1\"\naddress = \"127.0.0.1:1\"\n\
             [backend.tls]\nca = {ca:?}\ncert = {client:?}\nkey = {client_key:?}\nserver_name = \"localhost\"\n\n\
             [[backend]]\nname = \"db2\"\naddress = \"127.0.0.1:2\"\n\n\
             [[listener]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\nroute = \"db1\"\n\
             [listener.tls]\ncert = {server:?}\nkey = {server_key:?}\nca = {ca:?}\ncrl = [{crl:?}]\n\n\
             [[listener]]\nname = \"plain\"\naddress = \"127.0.0.1:0\"\nroute = \"primary\"\n",
            ca = write(dir, "ca.pem", &ca.pem()),
            client = write(dir, "client.pem", &client),
            client_key = write(dir, "client-key.pem", &client_key),
            server = write(dir, "server.pem", &server),
            server_key = write(dir, "server-key.pem", &server_key),
            crl = write(dir, "crl.pem", &crl.pem().unwrap()),
        );
        Config::from_toml(&toml, &dir.join("portcullis.toml"), dir)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"))
    }

    fn handshake(ms: u64) -> SessionInfo {
        SessionInfo {
            handshake_done: Some(Duration::from_millis(ms)),
            ..SessionInfo::default()
        }
    }

    #[tokio::test]
    async fn exposition_text_is_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::bind(config(dir.path())).unwrap();
        let state = proxy.state();
        let (public, plain) = (&state.listeners[0], &state.listeners[1]);
        assert_eq!((public.name(), plain.name()), ("public", "plain"));

        record(public, &handshake(3), Ok(Finished::Relayed));
        record(public, &handshake(700), Ok(Finished::Relayed));
        record(
            public,
            &SessionInfo::default(),
            Ok(Finished::Redirected {
                target: "db2:3306".into(),
            }),
        );
        record(
            public,
            &SessionInfo::default(),
            Err(SessionError::TlsHandshake {
                reason: "unknown_ca",
                source: std::io::Error::other("bad certificate"),
            }),
        );
        let on_db2 = SessionInfo {
            backend: Some("db2".into()),
            ..SessionInfo::default()
        };
        record(public, &on_db2, Err(SessionError::BackendTlsRefused));
        record(
            public,
            &SessionInfo::default(),
            Err(SessionError::BackendTlsRefused),
        );
        record(
            plain,
            &handshake(20),
            Ok(Finished::AuthRejected { code: 1045 }),
        );
        record(
            plain,
            &SessionInfo::default(),
            Err(SessionError::NoBackend("no primary".into())),
        );
        let _active = plain.metrics.session_started();

        let tls = public.runtime.tls.as_ref().unwrap();
        tls.material.reloads_failed.fetch_add(1, Ordering::Relaxed);
        tls.revoked_closed.fetch_add(2, Ordering::Relaxed);
        tls.revoked_kept.fetch_add(1, Ordering::Relaxed);
        let backend_tls = state.backends[0].tls.as_ref().unwrap();
        backend_tls.reloads_ok.fetch_add(3, Ordering::Relaxed);
        let topology = state.topology.as_ref().unwrap();
        topology.backends[1]
            .health
            .store(Arc::new(crate::monitor::Health {
                role: "replica",
                lag_seconds: Some(7),
                ..Default::default()
            }));
        topology.pin(Some("db1".into())).unwrap();

        let loaded_at = tls.material.load().loaded_at;
        assert_eq!(
            encode(&state),
            EXPECTED.replace("LOADED_AT", &loaded_at.to_string())
        );
    }

    const EXPECTED: &str = r#"# HELP portcullis_build Build information: the running version.
# TYPE portcullis_build info
portcullis_build_info{version="0.1.0"} 1
# HELP portcullis_connections Connections finished, by listener and outcome label.
# TYPE portcullis_connections counter
portcullis_connections_total{listener="public",outcome="backend_tls_not_offered"} 2
portcullis_connections_total{listener="public",outcome="redirected"} 1
portcullis_connections_total{listener="public",outcome="relayed"} 2
portcullis_connections_total{listener="public",outcome="tls_handshake_failed"} 1
portcullis_connections_total{listener="plain",outcome="auth_rejected"} 1
portcullis_connections_total{listener="plain",outcome="no_backend"} 1
# HELP portcullis_redirects Clients answered with the instant-failover redirect, by listener.
# TYPE portcullis_redirects counter
portcullis_redirects_total{listener="public"} 1
portcullis_redirects_total{listener="plain"} 0
# HELP portcullis_active_sessions Sessions in progress, by listener.
# TYPE portcullis_active_sessions gauge
portcullis_active_sessions{listener="public"} 0
portcullis_active_sessions{listener="plain"} 1
# HELP portcullis_handshake_duration_seconds Time from accept to the backend's authentication OK, for sessions that reached the relay phase.
# TYPE portcullis_handshake_duration_seconds histogram
portcullis_handshake_duration_seconds_sum{listener="public"} 0.703
portcullis_handshake_duration_seconds_count{listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="0.0005",listener="public"} 0
portcullis_handshake_duration_seconds_bucket{le="0.001",listener="public"} 0
portcullis_handshake_duration_seconds_bucket{le="0.0025",listener="public"} 0
portcullis_handshake_duration_seconds_bucket{le="0.005",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.01",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.025",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.05",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.1",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.25",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="0.5",listener="public"} 1
portcullis_handshake_duration_seconds_bucket{le="1.0",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="2.5",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="5.0",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="10.0",listener="public"} 2
portcullis_handshake_duration_seconds_bucket{le="+Inf",listener="public"} 2
portcullis_handshake_duration_seconds_sum{listener="plain"} 0.02
portcullis_handshake_duration_seconds_count{listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.0005",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.001",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.0025",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.005",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.01",listener="plain"} 0
portcullis_handshake_duration_seconds_bucket{le="0.025",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.05",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.1",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.25",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="0.5",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="1.0",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="2.5",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="5.0",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="10.0",listener="plain"} 1
portcullis_handshake_duration_seconds_bucket{le="+Inf",listener="plain"} 1
# HELP portcullis_tls_failures Failed TLS handshakes, by listener and reason.
# TYPE portcullis_tls_failures counter
portcullis_tls_failures_total{listener="public",reason="unknown_ca"} 1
# HELP portcullis_backend_connect_errors Failed connects to a backend, by listener and backend.
# TYPE portcullis_backend_connect_errors counter
portcullis_backend_connect_errors_total{listener="public",backend="db1"} 1
portcullis_backend_connect_errors_total{listener="public",backend="db2"} 1
# HELP portcullis_bytes Bytes relayed after authentication, by listener and direction, counted as they are written.
# TYPE portcullis_bytes counter
portcullis_bytes_total{listener="public",direction="client_to_backend"} 0
portcullis_bytes_total{listener="public",direction="backend_to_client"} 0
portcullis_bytes_total{listener="plain",direction="client_to_backend"} 0
portcullis_bytes_total{listener="plain",direction="backend_to_client"} 0
# HELP portcullis_certificate_not_after_seconds Not-after of the certificates each listener has in service (role server: the one it presents; role ca: the CAs client certificates are checked against), as a Unix timestamp.
# TYPE portcullis_certificate_not_after_seconds gauge
portcullis_certificate_not_after_seconds{listener="public",role="server",subject="CN=localhost",serial="0a"} 4083955200
portcullis_certificate_not_after_seconds{listener="public",role="ca",subject="CN=Pin CA",serial="01"} 4102358400
# HELP portcullis_crl_next_update_seconds Next-update of each CRL a listener checks client certificates against, as a Unix timestamp.
# TYPE portcullis_crl_next_update_seconds gauge
portcullis_crl_next_update_seconds{listener="public",issuer="CN=Pin CA"} 4039372800
# HELP portcullis_tls_reloads TLS material reloads that built new material (success) or kept the old in service (failure), by listener.
# TYPE portcullis_tls_reloads counter
portcullis_tls_reloads_total{listener="public",result="success"} 0
portcullis_tls_reloads_total{listener="public",result="failure"} 1
# HELP portcullis_backend_certificate_not_after_seconds Not-after of the outbound TLS certificates of each backend (role client: the certificate portcullis presents; role ca: the CAs the backend's certificate is checked against), as a Unix timestamp.
# TYPE portcullis_backend_certificate_not_after_seconds gauge
portcullis_backend_certificate_not_after_seconds{backend="db1",role="client",subject="CN=proxy",serial="0b"} 4083955200
portcullis_backend_certificate_not_after_seconds{backend="db1",role="ca",subject="CN=Pin CA",serial="01"} 4102358400
# HELP portcullis_backend_tls_reloads Reloads of a backend's outbound TLS material that put new material in service (success) or kept the old (failure).
# TYPE portcullis_backend_tls_reloads counter
portcullis_backend_tls_reloads_total{backend="db1",result="success"} 3
portcullis_backend_tls_reloads_total{backend="db1",result="failure"} 0
# HELP portcullis_backend_role The monitor's classification of each backend: 1 for its current role, 0 for the others.
# TYPE portcullis_backend_role gauge
portcullis_backend_role{backend="db1",role="primary"} 0
portcullis_backend_role{backend="db1",role="replica"} 0
portcullis_backend_role{backend="db1",role="down"} 0
portcullis_backend_role{backend="db1",role="unknown"} 1
portcullis_backend_role{backend="db2",role="primary"} 0
portcullis_backend_role{backend="db2",role="replica"} 1
portcullis_backend_role{backend="db2",role="down"} 0
portcullis_backend_role{backend="db2",role="unknown"} 0
# HELP portcullis_backend_replication_lag_seconds Seconds_Behind_Master of each replicating backend, as the monitor last read it.
# TYPE portcullis_backend_replication_lag_seconds gauge
portcullis_backend_replication_lag_seconds{backend="db2"} 7
# HELP portcullis_primary_changes Times the primary changed (to another backend, or to none), monitor or pin.
# TYPE portcullis_primary_changes counter
portcullis_primary_changes_total 1
# HELP portcullis_tls_loaded_timestamp_seconds When the TLS material in service was loaded, by listener, as a Unix timestamp.
# TYPE portcullis_tls_loaded_timestamp_seconds gauge
portcullis_tls_loaded_timestamp_seconds{listener="public"} LOADED_AT
# HELP portcullis_revoked_sessions Live sessions whose client certificate newly loaded CAs or CRLs refuse, by listener and action (closed, or kept with on_revoke = keep).
# TYPE portcullis_revoked_sessions counter
portcullis_revoked_sessions_total{listener="public",action="closed"} 2
portcullis_revoked_sessions_total{listener="public",action="kept"} 1
# EOF
"#;
}
