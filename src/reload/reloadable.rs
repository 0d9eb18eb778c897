//! TLS material in service, as listeners and backends hold it: swapped
//! whole ([`Reloadable`]), with the record of what reloads did to it, and a
//! listener's live certificate sessions ([`TlsRuntime`]).
//!
//! One reload attempt of one listener's or backend's material is read →
//! build → compare by digest → swap (`Reloadable::attempt`); any failure
//! keeps the material in service, is logged with the file and reason,
//! counted and recorded. [`crate::reload`] decides when to attempt and what
//! follows a swap; sessions only ever take one lock-free snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::{BackendTlsConfig, OnRevoke, TlsConfig};
use crate::live::Revocation;
use crate::sync::lock;
use crate::time::{rfc3339, unix_seconds};
use crate::tls::{ClientTls, Digest, FileMemo, Material, ServerTls, Sources, TlsLoadError};

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
pub(super) use owner_event;

/// Material that can be reloaded: read from files, built whole, compared by
/// content digest.
pub trait Loadable: Sized + Send + Sync + 'static {
    /// The settings it is built from.
    type Source: Clone + PartialEq + Send + Sync;
    /// The files `src` names.
    fn sources(src: &Self::Source) -> Sources<'_>;
    /// Builds from `m`, after `previous` (what is in service).
    fn build(src: &Self::Source, m: &Material, previous: &Self) -> Result<Self, TlsLoadError>;
    fn digest(&self) -> Digest;
    fn source(&self) -> &Self::Source;
}

impl Loadable for ServerTls {
    type Source = TlsConfig;
    fn sources(src: &TlsConfig) -> Sources<'_> {
        Sources::Listener(src)
    }
    fn build(src: &TlsConfig, m: &Material, previous: &Self) -> Result<Self, TlsLoadError> {
        // The CRL marks of the material in service: CRLs never go back.
        ServerTls::build_after(src, m, Some(previous))
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
    fn sources(src: &BackendTlsConfig) -> Sources<'_> {
        Sources::Backend(src)
    }
    fn build(src: &BackendTlsConfig, m: &Material, _previous: &Self) -> Result<Self, TlsLoadError> {
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
    /// The stamps and digests of the files last read, so the poll reads
    /// only files that changed.
    memo: Mutex<FileMemo>,
    /// When each expiry warning was last logged.
    pub(super) warned: Mutex<HashMap<String, Instant>>,
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
            memo: Mutex::new(FileMemo::default()),
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
pub(super) enum Attempt<T> {
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
    ///
    /// The poll (not `forced`) first compares the files' stamps with what
    /// it read before ([`Sources::fingerprint`]): unchanged files are not
    /// read, and content that is in service or already failed is not read
    /// whole again. A forced reload (signal, admin) reads every file.
    pub(super) fn attempt(
        &self,
        owner: Owner<'_>,
        src: &T::Source,
        trigger: Trigger,
        forced: bool,
    ) -> Attempt<T> {
        let current = self.load();
        if !forced {
            let probe = {
                let mut memo = lock(&self.memo);
                T::sources(src).fingerprint(&memo).map(|(digest, next)| {
                    *memo = next;
                    digest
                })
            };
            match probe {
                Ok(d) if d == current.digest() && src == current.source() => {
                    *lock(&self.failed) = None;
                    return Attempt::Unchanged;
                }
                Ok(d) if lock(&self.failed).as_ref() == Some(&FailedContent::Digest(d)) => {
                    return Attempt::KnownBad;
                }
                Ok(_) => {}
                // What cannot be looked at cannot be read either.
                Err(e) => {
                    let seen = FailedContent::Unreadable(e.to_string());
                    if lock(&self.failed).as_ref() == Some(&seen) {
                        return Attempt::KnownBad;
                    }
                    return self.failed(owner, trigger, seen, e);
                }
            }
        }
        let material = Material::read_sources(T::sources(src));
        let seen = match &material {
            Ok(m) => {
                *lock(&self.memo) = m.remember();
                FailedContent::Digest(m.digest())
            }
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
        match material.and_then(|m| T::build(src, &m, &current)) {
            Err(e) => self.failed(owner, trigger, seen, e),
            Ok(new) => {
                *lock(&self.failed) = None;
                let new = Arc::new(new);
                self.current.store(new.clone());
                Attempt::Swapped { old: current, new }
            }
        }
    }

    /// Logs, records and counts a failed attempt on `seen` content; the
    /// poll does not report that content again.
    fn failed(
        &self,
        owner: Owner<'_>,
        trigger: Trigger,
        seen: FailedContent,
        e: TlsLoadError,
    ) -> Attempt<T> {
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

    /// Records a successful swap, once its effects are done.
    pub(super) fn done(&self, trigger: Trigger) {
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
}

/// Acts on one live session the material in service refuses (its trust
/// material or its identity rules).
pub fn refuse_live(
    listener: &str,
    rt: &TlsRuntime,
    on_revoke: OnRevoke,
    s: &crate::live::LiveSession,
    why: Revocation,
) {
    let reason = why.label();
    let user = match &why {
        Revocation::Identity { user, .. } => Some(user.clone()),
        Revocation::Tls(_) => None,
    };
    let what = match why {
        Revocation::Tls(_) => "its client certificate is refused by the new trust material",
        Revocation::Identity { .. } => {
            "the reloaded identity rules no longer let its client certificate use this user"
        }
    };
    match on_revoke {
        OnRevoke::Close => {
            if s.revoke(why) {
                rt.revoked_closed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(listener, subject = %s.cert.subject, serial = %s.cert.serial, user, reason,
                    "closing a live session: {what}");
            }
        }
        OnRevoke::Keep => {
            rt.revoked_kept.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(listener, subject = %s.cert.subject, serial = %s.cert.serial, user, reason,
                "live session kept open (on_revoke = \"keep\") although {what}");
        }
    }
}

/// Whether `tls`'s identity rules still let live session `s` use every
/// user it logged in or changed to; the first it may not use, otherwise.
pub fn identity_refusal(tls: &ServerTls, s: &crate::live::LiveSession) -> Option<Revocation> {
    let rules = tls.source.identity.as_ref()?;
    let users = s.users();
    let Some(names) = &s.cert.names else {
        // Rules without a certificate to check: nobody may stay.
        return users.first().map(|u| Revocation::Identity {
            identity: "(none)".into(),
            user: u.clone(),
        });
    };
    rules
        .first_refused(names, &users)
        .map(|u| Revocation::Identity {
            identity: names.label(),
            user: u.clone(),
        })
}
