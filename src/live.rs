//! Live sessions that authenticated with a client certificate, so that new
//! trust material (a CRL that revokes, a CA that is dropped) reaches them
//! and not only new handshakes.
//!
//! A session registers after its TLS handshake and deregisters when its
//! [`Registration`] is dropped, however it ends. After a reload changes a
//! listener's CAs, CRLs or policy, the reloader re-checks every registered
//! chain against the new material at the instant the session was verified
//! (so expiry since the handshake is not held against it) and revokes the
//! ones the new material refuses. After a reload changes a listener's
//! identity rules, every registered session's certificate is checked
//! against them again, for the login user and every user a COM_CHANGE_USER
//! switched to ([`LiveSession::users`]): losing the right to any of them
//! closes it like a revocation does. Registering takes one short mutex
//! hold; afterwards only a COM_CHANGE_USER touches this module (to record
//! its user), never the bytes relayed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;

use crate::config::identity::CertNames;
use crate::tls::TlsFailure;

/// Why a live session is closed (or would be, with `on_revoke = "keep"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// New trust material refuses its certificate.
    Tls(TlsFailure),
    /// Reloaded identity rules no longer let its certificate (`identity`)
    /// use `user`.
    Identity { identity: String, user: String },
}

impl Revocation {
    /// The log's `reason`: the TLS failure label, or `identity_refused`.
    pub fn label(&self) -> &'static str {
        match self {
            Revocation::Tls(r) => r.label(),
            Revocation::Identity { .. } => "identity_refused",
        }
    }
}

/// The registered sessions of one listener.
#[derive(Default)]
pub struct LiveSessions {
    next_id: AtomicU64,
    map: Mutex<HashMap<u64, Arc<LiveSession>>>,
}

/// One registered session.
pub struct LiveSession {
    /// Its certificate, as verified.
    pub cert: SessionCert,
    /// The login user, then every user a forwarded COM_CHANGE_USER
    /// switched to.
    users: Mutex<Vec<String>>,
    revoked: CancellationToken,
    reason: OnceLock<Revocation>,
}

impl LiveSession {
    /// Marks the session revoked for `reason` and
    /// wakes it; true the first time only.
    pub fn revoke(&self, reason: Revocation) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        self.revoked.cancel();
        true
    }

    /// Resolves with the reason once the session is revoked.
    pub async fn revoked(&self) -> Revocation {
        self.revoked.cancelled().await;
        self.reason
            .get()
            .cloned()
            .unwrap_or(Revocation::Tls(TlsFailure::Revoked))
    }

    /// Records a user a COM_CHANGE_USER is about to switch to (before its
    /// check, so that a reload between the check and the switch still
    /// sees it); false when it is recorded already (a pool that changes
    /// user at every checkout records each user once).
    pub fn add_user(&self, user: &str) -> bool {
        let mut users = crate::sync::lock(&self.users);
        if users.iter().any(|u| u == user) {
            return false;
        }
        users.push(user.to_string());
        true
    }

    /// Forgets the user [`add_user`](LiveSession::add_user) recorded last
    /// (its COM_CHANGE_USER was refused).
    pub fn drop_last_user(&self) {
        crate::sync::lock(&self.users).pop();
    }

    /// The login user, then every other user it changed to.
    pub fn users(&self) -> Vec<String> {
        crate::sync::lock(&self.users).clone()
    }
}

/// A live session's client certificate, as verified.
pub struct SessionCert {
    /// The client's chain as it presented it (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// When its chain was verified.
    pub verified_at: UnixTime,
    /// The generation of the TLS material that verified it.
    pub generation: u64,
    pub subject: String,
    pub serial: String,
    /// What identity rules match of it.
    pub names: Option<Arc<CertNames>>,
}

/// Keeps a session registered; dropping it deregisters.
pub struct Registration<'a> {
    set: &'a LiveSessions,
    id: u64,
    pub session: Arc<LiveSession>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

impl LiveSessions {
    /// Registers a session with `cert` that logged in as `user`.
    pub fn register(&self, cert: SessionCert, user: Option<String>) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(LiveSession {
            cert,
            users: Mutex::new(user.into_iter().collect()),
            revoked: CancellationToken::new(),
            reason: OnceLock::new(),
        });
        self.lock().insert(id, session.clone());
        Registration {
            set: self,
            id,
            session,
        }
    }

    /// Every registered session at this instant.
    pub fn snapshot(&self) -> Vec<Arc<LiveSession>> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<LiveSession>>> {
        crate::sync::lock(&self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(set: &LiveSessions) -> Registration<'_> {
        let cert = SessionCert {
            chain: Vec::new(),
            verified_at: UnixTime::now(),
            generation: 1,
            subject: "CN=a".into(),
            serial: "01".into(),
            names: None,
        };
        set.register(cert, Some("app".into()))
    }

    #[test]
    fn registration_lives_as_long_as_its_guard() {
        let set = LiveSessions::default();
        let a = register(&set);
        let b = register(&set);
        assert_eq!(set.len(), 2);
        drop(a);
        assert_eq!(set.len(), 1);
        assert!(Arc::ptr_eq(&set.snapshot()[0], &b.session));
        drop(b);
        assert!(set.is_empty());
    }

    #[tokio::test]
    async fn revoke_wakes_once_with_the_first_reason() {
        let set = LiveSessions::default();
        let r = register(&set);
        assert!(r.session.revoke(Revocation::Tls(TlsFailure::Revoked)));
        assert!(!r.session.revoke(Revocation::Tls(TlsFailure::UnknownCa)));
        assert_eq!(
            r.session.revoked().await,
            Revocation::Tls(TlsFailure::Revoked)
        );
    }

    #[test]
    fn users_are_the_login_user_then_each_change() {
        let set = LiveSessions::default();
        let r = register(&set);
        assert!(r.session.add_user("billing"));
        assert!(!r.session.add_user("app"), "recorded once");
        assert!(r.session.add_user("root"));
        r.session.drop_last_user();
        assert_eq!(r.session.users(), ["app", "billing"]);
    }
}
