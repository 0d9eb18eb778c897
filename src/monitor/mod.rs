//! The topology monitor: which backend is the primary right now.
//!
//! Every `[monitor] interval` the monitor logs in to each backend (its own
//! account, mysql_native_password, through the backend's outbound TLS when
//! it has one), reads `@@read_only` and the replica status, and classifies
//! the backend:
//!
//! - `primary`: reachable, `read_only = 0`, not replicating;
//! - `replica`: replicating (its lag is `Seconds_Behind_Master`), or
//!   read-only and not replicating (a standby; lag unknown);
//! - `down`: unreachable, login refused, or a query failed.
//!
//! Exactly one `primary` candidate makes it the primary; none — or two,
//! which is logged loudly — means no primary: portcullis follows the
//! topology, it never elects. An operator or orchestrator may pin the
//! primary (`POST /primary`), which overrides the monitor until unpinned.
//! Each primary change ends a "tenure": sessions routed as `primary` hold
//! the tenure's token and are closed when it ends (`on_primary_change`).

pub mod client;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend::BackendRuntime;
use crate::config::MonitorConfig;
use crate::sync::lock;
use crate::time::{rfc3339, unix_seconds};
use client::{MonitorConn, MonitorError};

/// A backend's role as the monitor classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Reachable, `read_only = 0`, not replicating.
    Primary,
    /// Replicating, or read-only and not replicating (a standby).
    Replica,
    /// Unreachable, login refused, or a query failed.
    Down,
    /// Not checked yet.
    #[default]
    Unknown,
}

impl Role {
    /// Every role, in the order metrics list them.
    pub const ALL: [Role; 4] = [Role::Primary, Role::Replica, Role::Down, Role::Unknown];

    /// Stable name, as metrics, logs and `/topology` show it.
    pub fn label(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Down => "down",
            Role::Unknown => "unknown",
        }
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.label())
    }
}

/// Which backends a topology route may pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Healthy replicas only.
    Replica,
    /// The primary or a healthy replica.
    Any,
}

/// What the monitor last saw of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    /// `unknown` (not checked yet), `primary`, `replica` or `down`.
    pub role: Role,
    pub read_only: Option<bool>,
    pub replicating: bool,
    /// Seconds behind its primary, when replicating and known.
    pub lag_seconds: Option<u64>,
    pub server_id: Option<u64>,
    /// Why it is down.
    pub error: Option<String>,
    /// When it was last checked, Unix seconds (0: never).
    pub checked_at: i64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            role: Role::Unknown,
            read_only: None,
            replicating: false,
            lag_seconds: None,
            server_id: None,
            error: None,
            checked_at: 0,
        }
    }
}

/// One monitored backend.
pub struct Monitored {
    pub backend: Arc<BackendRuntime>,
    pub health: ArcSwap<Health>,
}

/// The topology as the proxy knows it. Lock-free reads for sessions
/// (`watch` and `ArcSwap`); the monitor and the admin API write.
pub struct Topology {
    pub backends: Vec<Monitored>,
    /// The effective primary: pinned, else the monitor's.
    primary: watch::Sender<Option<String>>,
    pinned: Mutex<Option<String>>,
    monitored: Mutex<Option<String>>,
    tenure: Mutex<CancellationToken>,
    /// When the effective primary last changed (or the topology was
    /// built): how long a missing primary has been missing.
    since: Mutex<Instant>,
    pub changes: AtomicU64,
    /// Finished monitor rounds (every backend checked once more).
    rounds: watch::Sender<u64>,
}

/// `GET /topology`.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyStatus {
    pub primary: Option<String>,
    /// Set while an operator's pin overrides the monitor.
    pub pinned: Option<String>,
    /// The monitor's own conclusion.
    pub monitored_primary: Option<String>,
    pub primary_changes: u64,
    pub backends: Vec<BackendHealthStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendHealthStatus {
    pub name: String,
    pub address: String,
    #[serde(flatten)]
    pub health: Health,
    pub checked_at_utc: Option<String>,
    /// Sessions routed to it now.
    pub active_sessions: i64,
}

impl Topology {
    pub fn new(backends: &[Arc<BackendRuntime>]) -> Topology {
        Topology {
            backends: backends
                .iter()
                .map(|b| Monitored {
                    backend: b.clone(),
                    health: ArcSwap::from_pointee(Health::default()),
                })
                .collect(),
            primary: watch::Sender::new(None),
            pinned: Mutex::new(None),
            monitored: Mutex::new(None),
            tenure: Mutex::new(CancellationToken::new()),
            since: Mutex::new(Instant::now()),
            changes: AtomicU64::new(0),
            rounds: watch::Sender::new(0),
        }
    }

    /// Follows the number of finished monitor rounds.
    pub fn watch_rounds(&self) -> watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    /// The primary now.
    pub fn primary(&self) -> Option<String> {
        self.primary.borrow().clone()
    }

    pub fn watch_primary(&self) -> watch::Receiver<Option<String>> {
        self.primary.subscribe()
    }

    /// How long there has been no primary (since start, or since the last
    /// one was lost); `None` while there is one.
    pub fn primary_absent_for(&self) -> Option<Duration> {
        // Read under the channel's lock: `recompute` moves `since` while it
        // holds it, so the two always belong together.
        let primary = self.primary.borrow();
        primary.is_none().then(|| lock(&self.since).elapsed())
    }

    /// The token of the current primary tenure: cancelled when the primary
    /// changes. Take it *before* reading the primary, so a change in
    /// between can only close a session too early, never too late.
    pub fn tenure(&self) -> CancellationToken {
        lock(&self.tenure).clone()
    }

    pub fn backend(&self, name: &str) -> Option<&Monitored> {
        self.backends.iter().find(|m| m.backend.config.name == name)
    }

    /// Pins the primary (`Some`) or returns to the monitor's view (`None`).
    pub fn pin(&self, name: Option<String>) -> Result<(), String> {
        if let Some(n) = &name {
            if self.backend(n).is_none() {
                return Err(format!("no backend named {n:?}"));
            }
        }
        tracing::warn!(
            pinned = name.as_deref().unwrap_or("none"),
            "primary pin changed by the admin API"
        );
        *lock(&self.pinned) = name;
        self.recompute();
        Ok(())
    }

    fn set_monitored(&self, name: Option<String>) {
        *lock(&self.monitored) = name;
        self.recompute();
    }

    fn recompute(&self) {
        let effective = lock(&self.pinned)
            .clone()
            .or_else(|| lock(&self.monitored).clone());
        let changed = self.primary.send_if_modified(|cur| {
            if *cur == effective {
                return false;
            }
            *cur = effective.clone();
            *lock(&self.since) = Instant::now();
            true
        });
        if changed {
            let old = std::mem::take(&mut *lock(&self.tenure));
            old.cancel();
            self.changes.fetch_add(1, Ordering::Relaxed);
            match &effective {
                Some(p) => tracing::warn!(primary = %p, "primary changed"),
                None => tracing::error!(
                    "no primary: connections routed as primary wait, then get an error"
                ),
            }
        }
    }

    /// The least-loaded backend `pick` allows (optionally no further behind
    /// than `max_lag`).
    pub fn pick(&self, pick: Pick, max_lag: Option<Duration>) -> Option<Arc<BackendRuntime>> {
        self.backends
            .iter()
            .filter(|m| {
                let h = m.health.load();
                let role_ok = match pick {
                    Pick::Any => matches!(h.role, Role::Primary | Role::Replica),
                    Pick::Replica => h.role == Role::Replica,
                };
                let lag_ok = match max_lag {
                    None => true,
                    Some(max) => h.lag_seconds.is_some_and(|l| l <= max.as_secs()),
                };
                role_ok && lag_ok
            })
            .min_by_key(|m| m.backend.active())
            .map(|m| m.backend.clone())
    }

    pub fn status(&self) -> TopologyStatus {
        TopologyStatus {
            primary: self.primary(),
            pinned: lock(&self.pinned).clone(),
            monitored_primary: lock(&self.monitored).clone(),
            primary_changes: self.changes.load(Ordering::Relaxed),
            backends: self
                .backends
                .iter()
                .map(|m| {
                    let h = (**m.health.load()).clone();
                    BackendHealthStatus {
                        name: m.backend.config.name.clone(),
                        address: m.backend.config.address.to_string(),
                        checked_at_utc: (h.checked_at > 0).then(|| rfc3339(h.checked_at)),
                        health: h,
                        active_sessions: m.backend.active(),
                    }
                })
                .collect(),
        }
    }
}

/// Checks every backend each interval until `stop`.
pub async fn run(topology: Arc<Topology>, cfg: MonitorConfig, stop: CancellationToken) {
    let mut conns: Vec<Option<MonitorConn>> = topology.backends.iter().map(|_| None).collect();
    let mut interval = tokio::time::interval(cfg.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        // Check all backends at once: one slow backend must not delay the
        // others' verdicts.
        let checks = topology
            .backends
            .iter()
            .zip(conns.iter_mut())
            .map(|(m, conn)| check(m, conn, &cfg));
        let healths = futures_join_all(checks).await;
        for (m, h) in topology.backends.iter().zip(healths) {
            let old = m.health.load();
            if old.role != h.role {
                let name = &m.backend.config.name;
                match &h.error {
                    Some(e) => {
                        tracing::warn!(backend = %name, from = old.role.label(), to = h.role.label(), error = %e, "backend role changed")
                    }
                    None => {
                        tracing::info!(backend = %name, from = old.role.label(), to = h.role.label(), "backend role changed")
                    }
                }
            }
            m.health.store(Arc::new(h));
        }
        let candidates: Vec<String> = topology
            .backends
            .iter()
            .filter(|m| m.health.load().role == Role::Primary)
            .map(|m| m.backend.config.name.clone())
            .collect();
        let monitored = match candidates.len() {
            1 => Some(candidates[0].clone()),
            0 => None,
            _ => {
                tracing::error!(
                    candidates = %candidates.join(","),
                    "two or more writable backends that do not replicate: no primary until exactly one remains (portcullis follows the topology, it never elects)"
                );
                None
            }
        };
        topology.set_monitored(monitored);
        topology.rounds.send_modify(|n| *n += 1);
    }
}

/// Runs futures concurrently and returns their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in pinned.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

/// One check of one backend, reusing its monitor connection.
async fn check(m: &Monitored, conn: &mut Option<MonitorConn>, cfg: &MonitorConfig) -> Health {
    let checked_at = unix_seconds(SystemTime::now());
    let timeout = cfg.interval.max(m.backend.config.connect_timeout);
    let result = tokio::time::timeout(timeout, probe(m, conn, cfg)).await;
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(MonitorError::Timeout(timeout)),
    };
    match result {
        Ok(mut h) => {
            h.checked_at = checked_at;
            h
        }
        Err(e) => {
            *conn = None;
            Health {
                role: Role::Down,
                error: Some(e.to_string()),
                checked_at,
                ..Health::default()
            }
        }
    }
}

async fn probe(
    m: &Monitored,
    conn: &mut Option<MonitorConn>,
    cfg: &MonitorConfig,
) -> Result<Health, MonitorError> {
    if conn.is_none() {
        *conn = Some(
            MonitorConn::connect(
                &m.backend,
                &cfg.user,
                &cfg.password,
                m.backend.config.connect_timeout,
            )
            .await?,
        );
    }
    let c = conn.as_mut().expect("connected above");
    let vars = c
        .query("SELECT @@read_only AS read_only, @@server_id AS server_id")
        .await?;
    let read_only = vars.get(0, "read_only").map(|v| v != "0");
    let server_id = vars.get(0, "server_id").and_then(|v| v.parse().ok());
    let status = c.query("SHOW SLAVE STATUS").await?;
    let mut replicating = false;
    let mut lag = None;
    for row in 0..status.rows.len() {
        let running = |col: &str| status.get(row, col) == Some("Yes");
        if running("Slave_IO_Running") || running("Slave_SQL_Running") {
            replicating = true;
            lag = status
                .get(row, "Seconds_Behind_Master")
                .and_then(|v| v.parse::<u64>().ok());
        }
    }
    let role = if replicating || read_only != Some(false) {
        Role::Replica
    } else {
        Role::Primary
    };
    Ok(Health {
        role,
        read_only,
        replicating,
        lag_seconds: lag,
        server_id,
        error: None,
        checked_at: 0,
    })
}
