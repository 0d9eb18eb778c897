//! Live sessions that authenticated with a client certificate, so that new
//! trust material (a CRL that revokes, a CA that is dropped) reaches them
//! and not only new handshakes.
//!
//! A session registers after its TLS handshake and deregisters when its
//! [`Registration`] is dropped, however it ends. After a reload changes a
//! listener's CAs, CRLs or policy, the reloader re-checks every registered
//! chain against the new material at the instant the session was verified
//! (so expiry since the handshake is not held against it) and revokes the
//! ones the new material refuses. Registering takes one short mutex hold;
//! nothing on the relay path touches this module afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;

use crate::tls::TlsFailure;

/// The registered sessions of one listener.
#[derive(Default)]
pub struct LiveSessions {
    next_id: AtomicU64,
    map: Mutex<HashMap<u64, Arc<LiveSession>>>,
}

/// One registered session.
pub struct LiveSession {
    /// The client's chain as it presented it (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// When its chain was verified.
    pub verified_at: UnixTime,
    /// The generation of the TLS material that verified it.
    pub generation: u64,
    pub subject: String,
    pub serial: String,
    revoked: CancellationToken,
    reason: OnceLock<TlsFailure>,
}

impl LiveSession {
    /// Marks the session revoked for `reason` and
    /// wakes it; true the first time only.
    pub fn revoke(&self, reason: TlsFailure) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        self.revoked.cancel();
        true
    }

    /// Resolves with the reason once the session is revoked.
    pub async fn revoked(&self) -> TlsFailure {
        self.revoked.cancelled().await;
        self.reason.get().copied().unwrap_or(TlsFailure::Revoked)
    }
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
    pub fn register(
        &self,
        chain: Vec<CertificateDer<'static>>,
        verified_at: UnixTime,
        generation: u64,
        subject: String,
        serial: String,
    ) -> Registration<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(LiveSession {
            chain,
            verified_at,
            generation,
            subject,
            serial,
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
        set.register(Vec::new(), UnixTime::now(), 1, "CN=a".into(), "01".into())
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
        assert!(r.session.revoke(TlsFailure::Revoked));
        assert!(!r.session.revoke(TlsFailure::UnknownCa));
        assert_eq!(r.session.revoked().await, TlsFailure::Revoked);
    }
}
