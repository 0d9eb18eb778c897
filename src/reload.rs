//! Reloading at run time: TLS material (certificates, keys, CA bundles,
//! CRLs) and the config's runtime settings, triggered by SIGHUP,
//! `POST /reload` or the file poll.
//!
//! Per listener, a reload is read → parse → validate → build a whole new
//! rustls config → swap ([`ServerTls::build`]); any failure keeps the
//! material in service, is logged with the file and reason, counted, and
//! shown in `/status`. There is no path from a failed reload to a listener
//! without TLS. New handshakes use the new material at once; established
//! sessions continue, except that when the CAs, CRLs or CRL policy changed,
//! every live session's certificate is checked again ([`crate::live`]) and
//! the ones the new material refuses are closed (`on_revoke = "close"`).
//!
//! Reloads are serialized by one lock per proxy, so the poll, a signal and
//! the admin API never build over each other.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, ConfigError, OnRevoke, TlsConfig};
use crate::metrics::{rfc3339, unix_seconds, ListenerState, ProxyState};
use crate::tls::{Digest, Material, ServerTls, TlsLoadError};

/// What started a reload, as logs, metrics and `/status` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The file poll saw new content.
    Poll,
    /// SIGHUP.
    Signal,
    /// `POST /reload`.
    Admin,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Poll => "poll",
            Trigger::Signal => "sighup",
            Trigger::Admin => "admin",
        }
    }
}

/// Expiry warnings repeat this often while something stays inside the
/// warning window (and at every load).
const WARN_REPEAT: Duration = Duration::from_secs(6 * 3600);

/// A listener's TLS at run time: the material in service (swapped whole),
/// its live certificate sessions, and what reloads did.
pub struct TlsRuntime {
    current: ArcSwap<ServerTls>,
    /// Sessions authenticated with a client certificate.
    pub live: crate::live::LiveSessions,
    /// The most recent reload attempt that built or failed (not the ones
    /// that found nothing new).
    last_reload: ArcSwapOption<ReloadRecord>,
    /// The most recent failed attempt, kept after later successes.
    last_error: ArcSwapOption<ReloadRecord>,
    pub stats: TlsStats,
    /// What the poll last tried and failed with, so the same broken
    /// content is reported once, not every interval.
    failed: Mutex<Option<FailedContent>>,
    /// When each expiry warning was last logged.
    warned: Mutex<HashMap<String, Instant>>,
    /// Counts finished reload attempts (success or failure), after their
    /// effects (swap, live-session checks) are done; tests wait on it.
    attempts: watch::Sender<u64>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct TlsStats {
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Live sessions closed because new material refuses their certificate.
    pub revoked_closed: AtomicU64,
    /// Same, kept because `on_revoke = "keep"`.
    pub revoked_kept: AtomicU64,
}

#[derive(Clone, PartialEq, Eq)]
enum FailedContent {
    Digest(Digest),
    Unreadable(String),
}

/// One reload attempt, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ReloadRecord {
    /// Seconds since the Unix epoch.
    pub at: i64,
    pub at_utc: String,
    /// `poll`, `sighup` or `admin`.
    pub trigger: String,
    /// `success` or `failure`.
    pub result: String,
    /// Why it failed (names the file).
    pub error: Option<String>,
}

impl TlsRuntime {
    pub fn new(tls: ServerTls) -> TlsRuntime {
        TlsRuntime {
            current: ArcSwap::from_pointee(tls),
            live: Default::default(),
            last_reload: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            stats: TlsStats::default(),
            failed: Mutex::new(None),
            warned: Mutex::new(HashMap::new()),
            attempts: watch::Sender::new(0),
        }
    }

    /// Follows the number of finished reload attempts that built new
    /// material or failed.
    pub fn watch_attempts(&self) -> watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// The material in service: one lock-free snapshot.
    pub fn load(&self) -> Arc<ServerTls> {
        self.current.load_full()
    }

    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.last_reload.load_full().map(|r| (*r).clone())
    }

    pub fn last_error(&self) -> Option<ReloadRecord> {
        self.last_error.load_full().map(|r| (*r).clone())
    }

    fn record(&self, trigger: Trigger, error: Option<String>) {
        let at = unix_seconds(SystemTime::now());
        let r = Arc::new(ReloadRecord {
            at,
            at_utc: rfc3339(at),
            trigger: trigger.as_str().into(),
            result: if error.is_some() {
                "failure"
            } else {
                "success"
            }
            .into(),
            error,
        });
        if r.error.is_some() {
            self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
            self.last_error.store(Some(r.clone()));
        } else {
            self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
        }
        self.last_reload.store(Some(r));
        self.attempts.send_modify(|n| *n += 1);
    }
}

/// What a reload did to one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ListenerReload {
    /// Every file has the content in service.
    Unchanged,
    /// New material is in service.
    Reloaded {
        serial: String,
        fingerprint: String,
        /// Live sessions re-checked because trust material changed.
        sessions_checked: usize,
        /// Of those, how many the new material refuses (closed or kept,
        /// per `on_revoke`).
        sessions_refused: usize,
    },
    /// The old material stays in service.
    Failed { error: String },
    /// The new config turns TLS on or off for a running listener, which
    /// only a restart may do.
    NeedsRestart { reason: String },
}

/// What a whole reload (signal or admin) did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Per TLS listener, by name.
    pub tls: std::collections::BTreeMap<String, ListenerReload>,
    /// Listeners whose failover settings changed.
    pub failover_changed: Vec<String>,
    /// Listeners in the new file that are not running (need a restart).
    pub not_running: Vec<String>,
}

impl ReloadReport {
    /// True when every listener's TLS is what the file says.
    pub fn all_applied(&self) -> bool {
        self.tls.values().all(|r| {
            matches!(
                r,
                ListenerReload::Unchanged | ListenerReload::Reloaded { .. }
            )
        })
    }
}

/// Serializes reloads across triggers.
#[derive(Default)]
pub struct ReloadLock(Mutex<()>);

impl ReloadLock {
    fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// SIGHUP and `POST /reload`: re-reads and validates the config file; if it
/// is valid, applies each running listener's failover settings and TLS
/// section (material re-read, rebuilt when anything changed). An invalid
/// file changes nothing. Blocking (file I/O, certificate checks): call it
/// from a blocking context.
pub fn reload_config(state: &ProxyState, trigger: Trigger) -> Result<ReloadReport, ConfigError> {
    let _held = state.reload_lock.hold();
    let new = Config::load_deferring_tls(&state.config_path)?;
    let mut report = ReloadReport {
        failover_changed: apply_failover(state, &new),
        ..ReloadReport::default()
    };
    for l in &new.listeners {
        let Some(running) = state.listeners.iter().find(|r| r.name() == l.name) else {
            report.not_running.push(l.name.clone());
            continue;
        };
        let result = match (&running.runtime.tls, &l.tls) {
            (Some(rt), Some(cfg)) => {
                reload_listener(running, rt, cfg, trigger, true, state.tls_reload.expiry_warning)
            },
            (None, None) => continue,
            (Some(_), None) => needs_restart(running, "the new config has no [listener.tls]; TLS stays on until a restart"),
            (None, Some(_)) => needs_restart(running, "the new config adds [listener.tls] to a plaintext listener; restart to turn TLS on"),
        };
        report.tls.insert(l.name.clone(), result);
    }
    Ok(report)
}

fn needs_restart(l: &ListenerState, reason: &str) -> ListenerReload {
    tracing::error!(listener = %l.name(), "reload: {reason}");
    ListenerReload::NeedsRestart {
        reason: reason.to_string(),
    }
}

/// Applies each running listener's failover settings from `new` (the
/// file's value replaces a runtime change made through the admin API).
fn apply_failover(state: &ProxyState, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    for l in &new.listeners {
        let Some(running) = state.listeners.iter().find(|r| r.name() == l.name) else {
            continue;
        };
        let rt = &running.runtime;
        if **rt.failover.load() != l.failover {
            tracing::info!(
                listener = %l.name,
                from = rt.failover.load().mode.as_str(),
                to = l.failover.mode.as_str(),
                target = l.failover.target.as_deref().unwrap_or(""),
                "reload: failover settings applied"
            );
            rt.failover.store(Arc::new(l.failover.clone()));
            changed.push(l.name.clone());
        }
    }
    changed
}

/// The file poll: reads every TLS listener's files and reloads the ones
/// whose content changed. Content that failed before is not retried (nor
/// reported again) until it changes. Blocking.
pub fn poll(state: &ProxyState) {
    let _held = state.reload_lock.hold();
    for l in &state.listeners {
        if let Some(rt) = &l.runtime.tls {
            let cfg = rt.load().source.clone();
            reload_listener(
                l,
                rt,
                &cfg,
                Trigger::Poll,
                false,
                state.tls_reload.expiry_warning,
            );
        }
    }
}

/// Re-reads one listener's material per `cfg`; builds and swaps it when it
/// differs from what is in service. `forced` (signal, admin) retries
/// content that failed before.
fn reload_listener(
    l: &ListenerState,
    rt: &TlsRuntime,
    cfg: &TlsConfig,
    trigger: Trigger,
    forced: bool,
    window: Duration,
) -> ListenerReload {
    let current = rt.load();
    let material = Material::read(cfg);
    let seen = match &material {
        Ok(m) => FailedContent::Digest(m.digest()),
        Err(e) => FailedContent::Unreadable(e.to_string()),
    };
    if let Ok(m) = &material {
        if m.digest() == current.digest && *cfg == current.source {
            *lock(&rt.failed) = None;
            return ListenerReload::Unchanged;
        }
    }
    if !forced && lock(&rt.failed).as_ref() == Some(&seen) {
        return ListenerReload::Failed {
            error: "unchanged since the last failed attempt".into(),
        };
    }
    let built = material.and_then(|m| ServerTls::build(cfg, &m));
    match built {
        Err(e) => fail(l, rt, trigger, seen, e),
        Ok(new) => {
            *lock(&rt.failed) = None;
            let new = Arc::new(new);
            let trust_changed = new.trust_digest != current.trust_digest;
            rt.current.store(new.clone());
            let (checked, refused) = if trust_changed {
                recheck_live(l, rt, &new)
            } else {
                (0, 0)
            };
            rt.record(trigger, None);
            tracing::info!(
                listener = %l.name(),
                trigger = trigger.as_str(),
                subject = %new.leaf.subject,
                serial = %new.leaf.serial,
                fingerprint = %new.leaf.fingerprint,
                not_after = %rfc3339(new.leaf.not_after),
                cas = new.cas.len(),
                crls = new.crls.len(),
                trust_changed,
                "TLS material reloaded: new handshakes use it now"
            );
            warn_expiry(l, rt, &new, window, true);
            ListenerReload::Reloaded {
                serial: new.leaf.serial.clone(),
                fingerprint: new.leaf.fingerprint.clone(),
                sessions_checked: checked,
                sessions_refused: refused,
            }
        }
    }
}

fn fail(
    l: &ListenerState,
    rt: &TlsRuntime,
    trigger: Trigger,
    seen: FailedContent,
    e: TlsLoadError,
) -> ListenerReload {
    let error = e.to_string();
    *lock(&rt.failed) = Some(seen);
    rt.record(trigger, Some(error.clone()));
    tracing::error!(
        listener = %l.name(),
        trigger = trigger.as_str(),
        error = %error,
        serial_in_service = %rt.load().leaf.serial,
        "TLS reload failed: the previous certificate, key, CAs and CRLs stay in service"
    );
    ListenerReload::Failed { error }
}

/// Checks every live certificate session against `new` (as of when each
/// was verified) and closes or keeps the refused ones per `on_revoke`.
/// Returns (checked, refused).
fn recheck_live(l: &ListenerState, rt: &TlsRuntime, new: &ServerTls) -> (usize, usize) {
    let sessions = rt.live.snapshot();
    let mut refused = 0;
    for s in &sessions {
        if let Err(reason) = new.recheck(&s.chain, s.verified_at) {
            refused += 1;
            refuse_live(l.name(), rt, new.source.on_revoke, s, reason);
        }
    }
    if !sessions.is_empty() {
        tracing::info!(
            listener = %l.name(),
            checked = sessions.len(),
            refused,
            "live sessions re-checked against the new CAs and CRLs"
        );
    }
    (sessions.len(), refused)
}

/// Acts on one live session the material in service refuses.
pub fn refuse_live(
    listener: &str,
    rt: &TlsRuntime,
    on_revoke: OnRevoke,
    s: &crate::live::LiveSession,
    reason: &'static str,
) {
    match on_revoke {
        OnRevoke::Close => {
            if s.revoke(reason) {
                rt.stats.revoked_closed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(listener, subject = %s.subject, serial = %s.serial, reason,
                    "closing a live session: its client certificate is refused by the new trust material");
            }
        }
        OnRevoke::Keep => {
            rt.stats.revoked_kept.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(listener, subject = %s.subject, serial = %s.serial, reason,
                "live session's client certificate is refused by the new trust material; kept open (on_revoke = \"keep\")");
        }
    }
}

/// Logs certificates and CRLs in service that expire within `window` (or
/// already did), at most every [`WARN_REPEAT`] per item unless `fresh`
/// (just loaded). Returns how many items are inside the window.
fn warn_expiry(
    l: &ListenerState,
    rt: &TlsRuntime,
    tls: &ServerTls,
    window: Duration,
    fresh: bool,
) -> usize {
    let now = unix_seconds(SystemTime::now());
    let horizon = now.saturating_add(window.as_secs() as i64);
    let mut items: Vec<(String, i64)> = Vec::new();
    items.push((
        format!(
            "certificate {} (serial {})",
            tls.leaf.subject, tls.leaf.serial
        ),
        tls.leaf.not_after,
    ));
    for ca in &tls.cas {
        items.push((
            format!("CA certificate {} (serial {})", ca.subject, ca.serial),
            ca.not_after,
        ));
    }
    for crl in &tls.crls {
        if let Some(next) = crl.next_update {
            items.push((format!("CRL for {}", crl.issuer), next));
        }
    }
    let mut warned = lock(&rt.warned);
    let mut inside = 0;
    for (what, at) in items.into_iter().filter(|(_, at)| *at <= horizon) {
        inside += 1;
        let due = fresh || warned.get(&what).is_none_or(|t| t.elapsed() >= WARN_REPEAT);
        if !due {
            continue;
        }
        warned.insert(what.clone(), Instant::now());
        if at <= now {
            tracing::error!(listener = %l.name(), expired_at = %rfc3339(at),
                "{what} has expired: clients it concerns are refused until new material is published");
        } else {
            let days = (at - now) as f64 / 86_400.0;
            tracing::warn!(listener = %l.name(), expires_at = %rfc3339(at),
                "{what} expires in {days:.1} days: publish a renewal");
        }
    }
    inside
}

/// Periodic expiry check of every listener's material in service.
pub fn check_expiry(state: &ProxyState) {
    for l in &state.listeners {
        if let Some(rt) = &l.runtime.tls {
            warn_expiry(l, rt, &rt.load(), state.tls_reload.expiry_warning, false);
        }
    }
}

/// Logs expiry warnings for the material loaded at start.
pub fn warn_at_start(state: &ProxyState) {
    for l in &state.listeners {
        if let Some(rt) = &l.runtime.tls {
            warn_expiry(l, rt, &rt.load(), state.tls_reload.expiry_warning, true);
        }
    }
}

/// Runs the file poll and the expiry check until `stop` is cancelled. With
/// polling disabled, expiry is still checked every minute.
pub async fn watch(state: Arc<ProxyState>, stop: tokio_util::sync::CancellationToken) {
    let poll_interval = state.tls_reload.poll_interval;
    let tick = if poll_interval.is_zero() {
        Duration::from_secs(60)
    } else {
        poll_interval
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick completes at once; material was just loaded.
    interval.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let s = state.clone();
        let polling = !poll_interval.is_zero();
        let work = tokio::task::spawn_blocking(move || {
            if polling {
                poll(&s);
            }
            check_expiry(&s);
        });
        if let Err(e) = work.await {
            tracing::error!(error = %e, "TLS file poll failed");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
