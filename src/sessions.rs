//! The sessions open now, per listener, for `GET /sessions` and
//! `DELETE /sessions/ID` (`portcullis sessions`, `portcullis kill`).
//!
//! A session registers when its task starts (after a PROXY header, if one
//! is read) and deregisters when its [`Entry`] is dropped, however it
//! ends: one short mutex hold each. Its id is the connection id of the
//! greeting portcullis sends (0x8000_0000 and up) and of its log line. What
//! the relay counts goes to the record's own [`ByteCounts`] — the atomics
//! the relay already adds to — so reading a session costs the data path
//! nothing. Who the client is (certificate, user, backend) is published
//! once, when the session starts relaying. Killing a session cancels its
//! close token, the one the drain deadline cancels: it closes the same way
//! (TLS close_notify), and its outcome is `killed_by_admin`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::metrics::ByteCounts;
use crate::time::unix_seconds;

/// The open sessions of one listener.
#[derive(Default)]
pub struct SessionTable {
    map: Mutex<HashMap<u32, Arc<SessionRecord>>>,
}

/// Who a session turned out to be, known once it relays.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub subject: Option<String>,
    pub serial: Option<String>,
    pub user: Option<String>,
    pub backend: Option<String>,
}

/// One open session.
pub struct SessionRecord {
    pub id: u32,
    /// The client (behind a load balancer: the one its PROXY header named).
    pub client: Option<SocketAddr>,
    /// The load balancer it came through, when a PROXY header was read.
    pub proxied_by: Option<SocketAddr>,
    started: Instant,
    started_at: i64,
    /// Relayed bytes, as the relay counts them.
    pub bytes: ByteCounts,
    identity: OnceLock<Identity>,
    close: CancellationToken,
    killed: AtomicBool,
}

impl SessionRecord {
    /// Publishes who the session is; it is relaying from now on.
    pub fn relaying(&self, identity: Identity) {
        let _ = self.identity.set(identity);
    }

    /// Closes the session for an operator: true the first time only.
    pub fn kill(&self) -> bool {
        if self.killed.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.close.cancel();
        true
    }

    pub fn was_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// The session as `GET /sessions` shows it.
    pub fn view(&self, listener: &str, route: &str) -> SessionView {
        let id = self.identity.get();
        let t = self.bytes.snapshot();
        let state = match (self.was_killed(), id) {
            (true, _) => "closing",
            (false, Some(_)) => "relaying",
            (false, None) => "handshake",
        };
        SessionView {
            id: self.id,
            listener: listener.to_string(),
            client: self
                .client
                .map_or_else(|| "unix".to_string(), |c| c.to_string()),
            proxied_by: self.proxied_by.map(|p| p.to_string()),
            subject: id.and_then(|i| i.subject.clone()),
            serial: id.and_then(|i| i.serial.clone()),
            user: id.and_then(|i| i.user.clone()),
            backend: id.and_then(|i| i.backend.clone()),
            route: route.to_string(),
            started_at: self.started_at,
            age_seconds: self.started.elapsed().as_secs(),
            bytes_up: t.up,
            bytes_down: t.down,
            state: state.to_string(),
        }
    }
}

/// Keeps a session registered; dropping it deregisters.
pub struct Entry<'a> {
    table: &'a SessionTable,
    pub record: Arc<SessionRecord>,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.table.lock().remove(&self.record.id);
    }
}

impl SessionTable {
    /// Registers session `id` from `client`; `close` is its close token.
    pub fn register(
        &self,
        id: u32,
        client: Option<SocketAddr>,
        proxied_by: Option<SocketAddr>,
        close: CancellationToken,
    ) -> Entry<'_> {
        let record = Arc::new(SessionRecord {
            id,
            client,
            proxied_by,
            started: Instant::now(),
            started_at: unix_seconds(SystemTime::now()),
            bytes: ByteCounts::default(),
            identity: OnceLock::new(),
            close,
            killed: AtomicBool::new(false),
        });
        self.lock().insert(id, record.clone());
        Entry {
            table: self,
            record,
        }
    }

    /// Every open session at this instant, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<SessionRecord>> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|r| (r.started, r.id));
        v
    }

    /// The open session `id`, if it is one of this listener's.
    pub fn get(&self, id: u32) -> Option<Arc<SessionRecord>> {
        self.lock().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<SessionRecord>>> {
        crate::sync::lock(&self.map)
    }
}

/// One session in `GET /sessions`. Field names are part of the API: add,
/// never rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The connection id (as in the greeting and the log line).
    pub id: u32,
    pub listener: String,
    /// `ip:port` of the client, `unix` for a Unix-socket client.
    pub client: String,
    /// The load balancer whose PROXY header named the client.
    #[serde(default)]
    pub proxied_by: Option<String>,
    /// The client certificate's subject and serial (lowercase hex).
    pub subject: Option<String>,
    pub serial: Option<String>,
    /// The MySQL user it logged in as.
    pub user: Option<String>,
    /// The backend it is relayed to.
    pub backend: Option<String>,
    /// The listener's route.
    pub route: String,
    /// Seconds since the Unix epoch.
    pub started_at: i64,
    pub age_seconds: u64,
    /// Client → backend.
    pub bytes_up: u64,
    /// Backend → client.
    pub bytes_down: u64,
    /// `handshake` (not relaying yet), `relaying`, or `closing` (killed).
    pub state: String,
}

/// What `GET /sessions` may filter on: every given one must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub listener: Option<String>,
    pub user: Option<String>,
    pub subject: Option<String>,
}

impl Filter {
    pub fn matches(&self, s: &SessionView) -> bool {
        let is = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| Some(w) == have)
        };
        is(&self.listener, Some(&s.listener))
            && is(&self.user, s.user.as_deref())
            && is(&self.subject, s.subject.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_guard_and_kill_cancels_once() {
        let table = SessionTable::default();
        let token = CancellationToken::new();
        let a = table.register(
            0x8000_0001,
            "192.0.2.7:5000".parse().ok(),
            None,
            token.clone(),
        );
        let b = table.register(0x8000_0002, None, None, CancellationToken::new());
        assert_eq!(table.len(), 2);
        let v = a.record.view("public", "db");
        assert_eq!(
            (v.state.as_str(), v.client.as_str()),
            ("handshake", "192.0.2.7:5000")
        );
        a.record.relaying(Identity {
            user: Some("app".into()),
            subject: Some("CN=app".into()),
            ..Identity::default()
        });
        let v = a.record.view("public", "db");
        assert_eq!(
            (v.state.as_str(), v.user.as_deref()),
            ("relaying", Some("app"))
        );
        assert!(Filter {
            user: Some("app".into()),
            ..Filter::default()
        }
        .matches(&v));
        assert!(!Filter {
            subject: Some("CN=other".into()),
            ..Filter::default()
        }
        .matches(&v));
        assert!(table.get(0x8000_0001).unwrap().kill());
        assert!(!a.record.kill(), "once");
        assert!(token.is_cancelled());
        assert_eq!(a.record.view("public", "db").state, "closing");
        drop(a);
        assert!(table.get(0x8000_0001).is_none());
        assert_eq!(b.record.view("l", "r").client, "unix");
        drop(b);
        assert!(table.is_empty());
    }
}
