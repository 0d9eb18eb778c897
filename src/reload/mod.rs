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
//! Reloads are serialized by one lock per proxy
//! ([`crate::state::ReloadLock`]), so the poll, a signal and the admin API
//! never build over each other.
//!
//! This module reads the running proxy ([`ProxyState`]) and decides when to
//! reload and what follows; [`reloadable`] is the material in service that
//! listeners and backends hold (the data path imports only that), and
//! [`expiry`] warns about certificates and CRLs about to expire.

pub mod diff;
pub mod expiry;
pub mod reloadable;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::backend::BackendRuntime;
use crate::config::{BackendTlsConfig, Config, ConfigError, TlsConfig};
use crate::live::Revocation;
use crate::state::{ListenerState, ProxyState};
use crate::time::rfc3339;
use crate::tls::{ClientTls, ServerTls};
use expiry::{client_expiry_items, expiry_items, log_notes, warn_expiry};
use reloadable::{identity_refusal, refuse_live, Attempt, Owner, Reloadable, TlsRuntime};

pub use diff::NotApplied;

/// What started a reload (re-exported: callers of [`reload_config`] name
/// it).
pub use reloadable::Trigger;

/// What a reload did to the TLS material of one listener or backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum MaterialReload {
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
    /// only a hand-over (or a restart) may do.
    NeedsRestart { reason: String },
}

/// What a whole reload (signal or admin) did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    /// Per TLS listener, by name.
    pub tls: std::collections::BTreeMap<String, MaterialReload>,
    /// Per backend with outbound TLS, by name.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub backend_tls: std::collections::BTreeMap<String, MaterialReload>,
    /// Listeners whose failover settings changed.
    pub failover_changed: Vec<String>,
    /// Listeners in the new file that are not running (bound at the next
    /// hand-over).
    pub not_running: Vec<String>,
    /// Every change in the file the running proxy did not take, and why
    /// (each applies at the next hand-over). Absent when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<NotApplied>,
}

impl ReloadReport {
    /// True when the running proxy is what the file says: every TLS
    /// section loaded, nothing left for the next hand-over.
    pub fn all_applied(&self) -> bool {
        self.not_applied.is_empty()
            && self.tls.values().chain(self.backend_tls.values()).all(|r| {
                matches!(
                    r,
                    MaterialReload::Unchanged | MaterialReload::Reloaded { .. }
                )
            })
    }
}

impl MaterialReload {
    /// Stable name of the result, as the JSON `result` and the log say it.
    pub fn label(&self) -> &'static str {
        match self {
            MaterialReload::Unchanged => "unchanged",
            MaterialReload::Reloaded { .. } => "reloaded",
            MaterialReload::Failed { .. } => "failed",
            MaterialReload::NeedsRestart { .. } => "needs_restart",
        }
    }
}

/// SIGHUP and `POST /reload`: re-reads and validates the config file; if it
/// is valid, applies each running listener's failover settings and TLS
/// section (material re-read, rebuilt when anything changed), and names
/// every other change as not applied. An invalid file changes nothing.
/// Logs what it did, one event per problem or change not applied, then one
/// summary. Blocking (file I/O, certificate checks): call it from a
/// blocking context.
pub fn reload_config(state: &ProxyState, trigger: Trigger) -> Result<ReloadReport, ConfigError> {
    let _held = state.reload_lock.hold();
    let new = match crate::preflight::load_deferring_tls(&state.config_path) {
        Ok(new) => new,
        Err(e) => {
            for line in e.lines() {
                tracing::error!(
                    trigger = trigger.as_str(),
                    "reload: config invalid, nothing changed: {line}"
                );
            }
            return Err(e);
        }
    };
    let report = apply(state, &new, trigger);
    log_report(&report, trigger);
    Ok(report)
}

/// Applies what a reload applies from the valid config `new`, and lists the
/// rest.
fn apply(state: &ProxyState, new: &Config, trigger: Trigger) -> ReloadReport {
    let mut report = ReloadReport {
        failover_changed: apply_failover(state, new),
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
            (Some(_), None) => MaterialReload::NeedsRestart {
                reason:
                    "the new config has no [backend.tls]; outbound TLS stays on until the next hand-over"
                        .into(),
            },
            (None, Some(_)) => MaterialReload::NeedsRestart {
                reason: "the new config adds [backend.tls]; outbound TLS turns on at the next hand-over".into(),
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
            (Some(_), None) => needs_restart("the new config has no [listener.tls]; TLS stays on until the next hand-over"),
            (None, Some(_)) => needs_restart("the new config adds [listener.tls] to a plaintext listener; TLS turns on at the next hand-over"),
        };
        report.tls.insert(l.name.clone(), result);
    }
    if let Some(running) = state.started_with.get() {
        report.not_applied = diff::not_applied(running, new);
    }
    let tls_sections = (report
        .backend_tls
        .iter()
        .map(|(n, r)| (format!("backend {n:?} [backend.tls]"), r)))
    .chain(
        report
            .tls
            .iter()
            .map(|(n, r)| (format!("listener {n:?} [listener.tls]"), r)),
    );
    for (what, r) in tls_sections {
        if let MaterialReload::NeedsRestart { reason } = r {
            report
                .not_applied
                .push(NotApplied::new(what, reason.clone()));
        }
    }
    report
}

/// TLS turned on or off for a running listener: logged with the other
/// changes not applied.
fn needs_restart(reason: &str) -> MaterialReload {
    MaterialReload::NeedsRestart {
        reason: reason.to_string(),
    }
}

/// Logs a reload's report: one warning per change not applied, then one
/// summary whose fields are stable text (`public=unchanged`, comma-joined
/// names), never Rust debug formatting.
fn log_report(report: &ReloadReport, trigger: Trigger) {
    for n in &report.not_applied {
        tracing::warn!(
            trigger = trigger.as_str(),
            what = %n.what,
            why = %n.why,
            "reload: not applied: {}: {}",
            n.what,
            n.why
        );
    }
    let results = |m: &std::collections::BTreeMap<String, MaterialReload>| {
        m.iter()
            .map(|(name, r)| format!("{name}={}", r.label()))
            .collect::<Vec<_>>()
            .join(",")
    };
    tracing::info!(
        trigger = trigger.as_str(),
        tls = %results(&report.tls),
        backend_tls = %results(&report.backend_tls),
        failover_changed = %report.failover_changed.join(","),
        not_applied = report.not_applied.len(),
        "reload done"
    );
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
                style = l.failover.style.as_str(),
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
            let cfg = rt.material.load().source.clone();
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
) -> MaterialReload {
    let owner = Owner::Listener(l.name());
    match rt.material.attempt(owner, cfg, trigger, forced) {
        Attempt::Unchanged => MaterialReload::Unchanged,
        Attempt::KnownBad => MaterialReload::Failed {
            error: "unchanged since the last failed attempt".into(),
        },
        Attempt::Failed(error) => MaterialReload::Failed { error },
        Attempt::Swapped { old, new } => {
            let trust_changed = new.trust_digest != old.trust_digest;
            let rules_changed = new.source.identity != old.source.identity;
            let (checked, refused) = if trust_changed || rules_changed {
                recheck_live(l, rt, &new, trust_changed)
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
                identity_rules_changed = rules_changed,
                "TLS material reloaded: new handshakes use it now"
            );
            log_notes(owner, &new);
            warn_expiry(owner, &rt.material, &expiry_items(&new), window, true);
            MaterialReload::Reloaded {
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
) -> MaterialReload {
    let owner = Owner::Backend(&b.config.name);
    match rt.attempt(owner, cfg, trigger, forced) {
        Attempt::Unchanged => MaterialReload::Unchanged,
        Attempt::KnownBad => MaterialReload::Failed {
            error: "unchanged since the last failed attempt".into(),
        },
        Attempt::Failed(error) => MaterialReload::Failed { error },
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
            MaterialReload::Reloaded {
                serial,
                fingerprint,
                sessions_checked: 0,
                sessions_refused: 0,
            }
        }
    }
}

/// Checks every live certificate session against `new`: its chain (as of
/// when it was verified) when `trust_changed`, and its users against the
/// identity rules; closes or keeps the refused ones per `on_revoke`.
/// Returns (checked, refused).
fn recheck_live(
    l: &ListenerState,
    rt: &TlsRuntime,
    new: &ServerTls,
    trust_changed: bool,
) -> (usize, usize) {
    let sessions = rt.live.snapshot();
    let mut refused = 0;
    for s in &sessions {
        let chain = || {
            new.recheck(&s.cert.chain, s.cert.verified_at)
                .err()
                .map(Revocation::Tls)
        };
        let why = trust_changed
            .then(chain)
            .flatten()
            .or_else(|| identity_refusal(new, s));
        if let Some(why) = why {
            refused += 1;
            refuse_live(l.name(), rt, new.source.on_revoke, s, why);
        }
    }
    if !sessions.is_empty() {
        tracing::info!(
            listener = %l.name(),
            checked = sessions.len(),
            refused,
            "live sessions re-checked against the new CAs, CRLs and identity rules"
        );
    }
    (sessions.len(), refused)
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
            expiry::check_expiry(&s);
        });
        if let Err(e) = work.await {
            tracing::error!(error = %e, "TLS file poll failed");
        }
    }
}
