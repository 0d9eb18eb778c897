//! The running proxy as the admin API, the reloads and the metrics
//! exposition read it: its lifecycle, its listeners (runtime, bound
//! address, counters, whether they accept) and backends, the topology, and
//! the lock that serializes reloads.
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
use crate::config::{Config, ListenAddr, TlsReloadConfig};
use crate::listener::ListenerRuntime;
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
