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

use crate::backend::BackendRuntime;
use crate::config::{BackendTlsConfig, Config, ConfigError, OnRevoke, TlsConfig};
use crate::metrics::{rfc3339, unix_seconds, ListenerState, ProxyState};
use crate::tls::{ClientTls, Digest, Material, ServerTls, TlsLoadError};

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

/// Whose TLS material: a listener's (inbound) or a backend's (outbound).
#[derive(Debug, Clone, Copy)]
pub enum Owner<'a> {
    Listener(&'a str),
    Backend(&'a str),
}

/// Logs one event with a `listener` or `backend` field, per `owner`.
macro_rules! owner_event {
    ($level:expr, $owner:expr, $($rest:tt)+) => {
        match $owner {
            Owner::Listener(name) => tracing::event!($level, listener = %name, $($rest)+),
            Owner::Backend(name) => tracing::event!($level, backend = %name, $($rest)+),
        }
    };
}

/// Expiry warnings repeat this often while something stays inside the
/// warning window (and at every load).
const WARN_REPEAT: Duration = Duration::from_secs(6 * 3600);

/// Material that can be reloaded: read from files, built whole, compared by
/// content digest.
pub trait Loadable: Sized + Send + Sync + 'static {
    /// The settings it is built from.
    type Source: Clone + PartialEq + Send + Sync;
    fn read(src: &Self::Source) -> Result<Material, TlsLoadError>;
    fn build(src: &Self::Source, m: &Material) -> Result<Self, TlsLoadError>;
    fn digest(&self) -> Digest;
    fn source(&self) -> &Self::Source;
}

impl Loadable for ServerTls {
    type Source = TlsConfig;
    fn read(src: &TlsConfig) -> Result<Material, TlsLoadError> {
        Material::read(src)
    }
    fn build(src: &TlsConfig, m: &Material) -> Result<Self, TlsLoadError> {
        ServerTls::build(src, m)
    }
    fn digest(&self) -> Digest {
        self.digest
    }
    fn source(&self) -> &TlsConfig {
        &self.source
    }
}

impl Loadable for ClientTls {
    type Source = BackendTlsConfig;
    fn read(src: &BackendTlsConfig) -> Result<Material, TlsLoadError> {
        Material::read_outbound(src)
    }
    fn build(src: &BackendTlsConfig, m: &Material) -> Result<Self, TlsLoadError> {
        ClientTls::build(src, m)
    }
    fn digest(&self) -> Digest {
        self.digest
    }
    fn source(&self) -> &BackendTlsConfig {
        &self.source
    }
}

/// TLS material in service (swapped whole) and what reloads did to it.
pub struct Reloadable<T> {
    current: ArcSwap<T>,
    /// The most recent reload attempt that built or failed (not the ones
    /// that found nothing new).
    last_reload: ArcSwapOption<ReloadRecord>,
    /// The most recent failed attempt, kept after later successes.
    last_error: ArcSwapOption<ReloadRecord>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// What the poll last tried and failed with, so the same broken
    /// content is reported once, not every interval.
    failed: Mutex<Option<FailedContent>>,
    /// When each expiry warning was last logged.
    warned: Mutex<HashMap<String, Instant>>,
    /// Counts finished reload attempts (success or failure), after their
    /// effects (swap, live-session checks) are done; tests wait on it.
    attempts: watch::Sender<u64>,
}

impl<T> Reloadable<T> {
    pub fn new(material: T) -> Reloadable<T> {
        Reloadable {
            current: ArcSwap::from_pointee(material),
            last_reload: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            failed: Mutex::new(None),
            warned: Mutex::new(HashMap::new()),
            attempts: watch::Sender::new(0),
        }
    }

    /// The material in service: one lock-free snapshot.
    pub fn load(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Follows the number of finished reload attempts that built new
    /// material or failed.
    pub fn watch_attempts(&self) -> watch::Receiver<u64> {
        self.attempts.subscribe()
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
            self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            self.last_error.store(Some(r.clone()));
        } else {
            self.reloads_ok.fetch_add(1, Ordering::Relaxed);
        }
        self.last_reload.store(Some(r));
        self.attempts.send_modify(|n| *n += 1);
    }
}

/// What one attempt found.
enum Attempt<T> {
    Unchanged,
    /// Content that already failed, not retried by the poll.
    KnownBad,
    Failed(String),
    /// Built and swapped in; not yet recorded.
    Swapped {
        old: Arc<T>,
        new: Arc<T>,
    },
}

impl<T: Loadable> Reloadable<T> {
    /// Re-reads the material per `src`; builds and swaps it when it differs
    /// from what is in service. A failure is logged (naming `what`),
    /// recorded and counted here; a success is recorded by the caller once
    /// its effects are done ([`Reloadable::done`]).
    fn attempt(
        &self,
        owner: Owner<'_>,
        src: &T::Source,
        trigger: Trigger,
        forced: bool,
    ) -> Attempt<T> {
        let current = self.load();
        let material = T::read(src);
        let seen = match &material {
            Ok(m) => FailedContent::Digest(m.digest()),
            Err(e) => FailedContent::Unreadable(e.to_string()),
        };
        if let Ok(m) = &material {
            if m.digest() == current.digest() && src == current.source() {
                *lock(&self.failed) = None;
                return Attempt::Unchanged;
            }
        }
        if !forced && lock(&self.failed).as_ref() == Some(&seen) {
            return Attempt::KnownBad;
        }
        match material.and_then(|m| T::build(src, &m)) {
            Err(e) => {
                let error = e.to_string();
                *lock(&self.failed) = Some(seen);
                self.record(trigger, Some(error.clone()));
                owner_event!(
                    tracing::Level::ERROR,
                    owner,
                    trigger = trigger.as_str(),
                    error = %error,
                    "TLS reload failed: the previous certificate, key, CAs and CRLs stay in service"
                );
                Attempt::Failed(error)
            }
            Ok(new) => {
                *lock(&self.failed) = None;
                let new = Arc::new(new);
                self.current.store(new.clone());
                Attempt::Swapped { old: current, new }
            }
        }
    }

    /// Records a successful swap, once its effects are done.
    fn done(&self, trigger: Trigger) {
        self.record(trigger, None);
    }
}

/// A listener's TLS at run time: the material in service, its live
/// certificate sessions, and what reloads did.
pub struct TlsRuntime {
    pub material: Reloadable<ServerTls>,
    /// Sessions authenticated with a client certificate.
    pub live: crate::live::LiveSessions,
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
            material: Reloadable::new(tls),
            live: Default::default(),
            revoked_closed: AtomicU64::new(0),
            revoked_kept: AtomicU64::new(0),
        }
    }

    /// The material in service: one lock-free snapshot.
    pub fn load(&self) -> Arc<ServerTls> {
        self.material.load()
    }

    /// See [`Reloadable::watch_attempts`].
    pub fn watch_attempts(&self) -> watch::Receiver<u64> {
        self.material.watch_attempts()
    }

    pub fn last_reload(&self) -> Option<ReloadRecord> {
        self.material.last_reload()
    }

    pub fn last_error(&self) -> Option<ReloadRecord> {
        self.material.last_error()
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
    /// Per backend with outbound TLS, by name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub backend_tls: std::collections::BTreeMap<String, ListenerReload>,
    /// Listeners whose failover settings changed.
    pub failover_changed: Vec<String>,
    /// Listeners in the new file that are not running (need a restart).
    pub not_running: Vec<String>,
}

impl ReloadReport {
    /// True when every listener's TLS is what the file says.
    pub fn all_applied(&self) -> bool {
        self.tls.values().chain(self.backend_tls.values()).all(|r| {
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
    let new = crate::preflight::load_deferring_tls(&state.config_path)?;
    let mut report = ReloadReport {
        failover_changed: apply_failover(state, &new),
        ..ReloadReport::default()
    };
    let window = state.tls_reload.expiry_warning;
    for b in &new.backends {
        let Some(running) = state.backends.iter().find(|r| r.config.name == b.name) else {
            continue;
        };
        let result = match (&running.tls, &b.tls) {
            (Some(rt), Some(cfg)) => reload_backend(running, rt, cfg, trigger, true, window),
            (None, None) => continue,
            (Some(_), None) => ListenerReload::NeedsRestart {
                reason:
                    "the new config has no [backend.tls]; outbound TLS stays on until a restart"
                        .into(),
            },
            (None, Some(_)) => ListenerReload::NeedsRestart {
                reason: "the new config adds [backend.tls]; restart to turn outbound TLS on".into(),
            },
        };
        report.backend_tls.insert(b.name.clone(), result);
    }
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
                target = l.failover.target_str(),
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
    let window = state.tls_reload.expiry_warning;
    for b in &state.backends {
        if let Some(rt) = &b.tls {
            let cfg = rt.load().source.clone();
            reload_backend(b, rt, &cfg, Trigger::Poll, false, window);
        }
    }
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
/// differs from what is in service, then re-checks live sessions if trust
/// material changed. `forced` (signal, admin) retries content that failed
/// before.
fn reload_listener(
    l: &ListenerState,
    rt: &TlsRuntime,
    cfg: &TlsConfig,
    trigger: Trigger,
    forced: bool,
    window: Duration,
) -> ListenerReload {
    let owner = Owner::Listener(l.name());
    match rt.material.attempt(owner, cfg, trigger, forced) {
        Attempt::Unchanged => ListenerReload::Unchanged,
        Attempt::KnownBad => ListenerReload::Failed {
            error: "unchanged since the last failed attempt".into(),
        },
        Attempt::Failed(error) => ListenerReload::Failed { error },
        Attempt::Swapped { old, new } => {
            let trust_changed = new.trust_digest != old.trust_digest;
            let (checked, refused) = if trust_changed {
                recheck_live(l, rt, &new)
            } else {
                (0, 0)
            };
            rt.material.done(trigger);
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
            warn_expiry(owner, &rt.material, &expiry_items(&new), window, true);
            ListenerReload::Reloaded {
                serial: new.leaf.serial.clone(),
                fingerprint: new.leaf.fingerprint.clone(),
                sessions_checked: checked,
                sessions_refused: refused,
            }
        }
    }
}

/// Re-reads one backend's outbound TLS material per `cfg`.
fn reload_backend(
    b: &BackendRuntime,
    rt: &Reloadable<ClientTls>,
    cfg: &BackendTlsConfig,
    trigger: Trigger,
    forced: bool,
    window: Duration,
) -> ListenerReload {
    let owner = Owner::Backend(&b.config.name);
    match rt.attempt(owner, cfg, trigger, forced) {
        Attempt::Unchanged => ListenerReload::Unchanged,
        Attempt::KnownBad => ListenerReload::Failed {
            error: "unchanged since the last failed attempt".into(),
        },
        Attempt::Failed(error) => ListenerReload::Failed { error },
        Attempt::Swapped { new, .. } => {
            rt.done(trigger);
            let serial = new
                .leaf
                .as_ref()
                .map(|c| c.serial.clone())
                .unwrap_or_default();
            let fingerprint = new
                .leaf
                .as_ref()
                .map(|c| c.fingerprint.clone())
                .unwrap_or_default();
            tracing::info!(
                backend = %b.config.name,
                trigger = trigger.as_str(),
                client_serial = %serial,
                cas = new.cas.len(),
                "outbound TLS material reloaded: new backend connections use it now"
            );
            warn_expiry(owner, rt, &client_expiry_items(&new), window, true);
            ListenerReload::Reloaded {
                serial,
                fingerprint,
                sessions_checked: 0,
                sessions_refused: 0,
            }
        }
    }
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
                rt.revoked_closed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(listener, subject = %s.subject, serial = %s.serial, reason,
                    "closing a live session: its client certificate is refused by the new trust material");
            }
        }
        OnRevoke::Keep => {
            rt.revoked_kept.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(listener, subject = %s.subject, serial = %s.serial, reason,
                "live session's client certificate is refused by the new trust material; kept open (on_revoke = \"keep\")");
        }
    }
}

/// Expiry items of a listener's material: (description, Unix time).
fn expiry_items(tls: &ServerTls) -> Vec<(String, i64)> {
    let mut items = vec![(
        format!(
            "certificate {} (serial {})",
            tls.leaf.subject, tls.leaf.serial
        ),
        tls.leaf.not_after,
    )];
    items.extend(tls.cas.iter().map(|ca| {
        (
            format!("CA certificate {} (serial {})", ca.subject, ca.serial),
            ca.not_after,
        )
    }));
    items.extend(
        tls.crls
            .iter()
            .filter_map(|crl| Some((format!("CRL for {}", crl.issuer), crl.next_update?))),
    );
    items
}

/// Expiry items of a backend's outbound material.
fn client_expiry_items(tls: &ClientTls) -> Vec<(String, i64)> {
    tls.leaf
        .iter()
        .map(|c| {
            (
                format!("client certificate {} (serial {})", c.subject, c.serial),
                c.not_after,
            )
        })
        .chain(tls.cas.iter().map(|ca| {
            (
                format!("CA certificate {} (serial {})", ca.subject, ca.serial),
                ca.not_after,
            )
        }))
        .collect()
}

/// Logs the `items` that expire within `window` (or already did), at most
/// every [`WARN_REPEAT`] per item unless `fresh` (just loaded). Returns how
/// many items are inside the window.
fn warn_expiry<T>(
    owner: Owner<'_>,
    rt: &Reloadable<T>,
    items: &[(String, i64)],
    window: Duration,
    fresh: bool,
) -> usize {
    let now = unix_seconds(SystemTime::now());
    let horizon = now.saturating_add(window.as_secs() as i64);
    let mut warned = lock(&rt.warned);
    let mut inside = 0;
    for (what, at) in items.iter().filter(|(_, at)| *at <= horizon) {
        inside += 1;
        let due = fresh || warned.get(what).is_none_or(|t| t.elapsed() >= WARN_REPEAT);
        if !due {
            continue;
        }
        warned.insert(what.clone(), Instant::now());
        if *at <= now {
            owner_event!(tracing::Level::ERROR, owner, expired_at = %rfc3339(*at),
                "{what} has expired: connections it concerns are refused until new material is published");
        } else {
            let days = (at - now) as f64 / 86_400.0;
            owner_event!(tracing::Level::WARN, owner, expires_at = %rfc3339(*at),
                "{what} expires in {days:.1} days: publish a renewal");
        }
    }
    inside
}

/// Periodic expiry check of every listener's and backend's material in
/// service.
pub fn check_expiry(state: &ProxyState) {
    expiry_pass(state, false);
}

/// Logs expiry warnings for the material loaded at start.
pub fn warn_at_start(state: &ProxyState) {
    expiry_pass(state, true);
}

fn expiry_pass(state: &ProxyState, fresh: bool) {
    let window = state.tls_reload.expiry_warning;
    for l in &state.listeners {
        if let Some(rt) = &l.runtime.tls {
            let items = expiry_items(&rt.load());
            warn_expiry(
                Owner::Listener(l.name()),
                &rt.material,
                &items,
                window,
                fresh,
            );
        }
    }
    for b in &state.backends {
        if let Some(rt) = &b.tls {
            let items = client_expiry_items(&rt.load());
            warn_expiry(Owner::Backend(&b.config.name), rt, &items, window, fresh);
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
