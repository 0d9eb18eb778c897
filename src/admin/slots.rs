//! The admin API's connection slots, and who loses one when they run out.
//!
//! At most [`MAX_CONNECTIONS`](super::MAX_CONNECTIONS) admin connections are
//! open at once. When a new connection finds them all taken, the *oldest
//! connection that has not shown credentials* is closed to make room. A
//! connection shows credentials by sending a request that passes the
//! token check (or any request on a Unix socket without a token, whose file
//! mode is the check); `/health` probes and `GET`s on a token-less TCP API
//! never do, since anyone can send those.
//!
//! Why this, and not a slot reserved for `/health`: which path a
//! connection asks for is only known once its headers are in, and the
//! attack is precisely never finishing them. A reserved slot would be taken
//! by the first attacker like any other. Eviction needs no such knowledge:
//! a probe (keepalived, a load balancer) sends its whole request at once and
//! is answered within microseconds, long before the N connections opened
//! after it have made it the oldest one; attackers holding slots are, by
//! construction, the oldest. So a slowloris can make the API close its own
//! connections sooner, but cannot keep `/health` from being answered.
//! Connections with credentials are never evicted: only token holders can
//! open those.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// How often the "connections full" warning may be logged: an attack
/// would otherwise write one line per connection.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open admin connections.
pub(super) struct Slots {
    max: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    /// Open connections by id; ids grow, so the first is the oldest.
    open: BTreeMap<u64, Entry>,
    /// Connections closed or refused since the last warning.
    evicted: u64,
    refused: u64,
    last_warning: Option<Instant>,
}

struct Entry {
    credentials: Arc<AtomicBool>,
    evict: CancellationToken,
}

/// One admitted connection. Dropping it frees the slot.
pub(super) struct Slot {
    id: u64,
    slots: Arc<Slots>,
    credentials: Arc<AtomicBool>,
    evict: CancellationToken,
}

impl Slot {
    /// Cancelled when the connection is evicted to make room.
    pub(super) fn evicted(&self) -> &CancellationToken {
        &self.evict
    }

    /// The connection has shown credentials: it keeps its slot.
    pub(super) fn mark_credentials(&self) {
        self.credentials.store(true, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.slots.table).open.remove(&self.id);
    }
}

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            table: Mutex::new(Table::default()),
        })
    }

    /// A slot for a new connection: a free one, or the one of the oldest
    /// connection without credentials, which is closed. `None` when every
    /// open connection has credentials.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut t = lock(&self.table);
        if t.open.len() >= self.max {
            let oldest = t
                .open
                .iter()
                .find(|(_, e)| !e.credentials.load(Ordering::Relaxed))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    if let Some(e) = t.open.remove(&id) {
                        e.evict.cancel();
                    }
                    t.evicted += 1;
                }
                None => {
                    t.refused += 1;
                    self.warn(&mut t);
                    return None;
                }
            }
            self.warn(&mut t);
        }
        let id = t.next_id;
        t.next_id += 1;
        let credentials = Arc::new(AtomicBool::new(false));
        let evict = CancellationToken::new();
        t.open.insert(
            id,
            Entry {
                credentials: credentials.clone(),
                evict: evict.clone(),
            },
        );
        Some(Slot {
            id,
            slots: self.clone(),
            credentials,
            evict,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.table).open.len()
    }

    fn warn(&self, t: &mut Table) {
        let now = Instant::now();
        if t.last_warning.is_some_and(|at| now - at < WARN_EVERY) {
            return;
        }
        tracing::warn!(
            max = self.max,
            closed = t.evicted,
            refused = t.refused,
            "admin: all connection slots taken; closing the oldest connections that showed no credentials (refusing new ones only when every open connection has)"
        );
        t.last_warning = Some(now);
        t.evicted = 0;
        t.refused = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_without_credentials_makes_room() {
        let slots = Slots::new(3);
        let a = slots.admit().unwrap();
        let b = slots.admit().unwrap();
        let c = slots.admit().unwrap();
        a.mark_credentials();
        // Full: b is the oldest without credentials.
        let d = slots.admit().unwrap();
        assert!(!a.evicted().is_cancelled());
        assert!(b.evicted().is_cancelled());
        assert!(!c.evicted().is_cancelled());
        assert_eq!(slots.open(), 3);
        // The evicted connection's task ends later; its slot is already free
        // and dropping it frees nothing else.
        drop(b);
        assert_eq!(slots.open(), 3);
        let e = slots.admit().unwrap();
        assert!(c.evicted().is_cancelled());
        assert!(!d.evicted().is_cancelled());
        // Every open connection with credentials: the new one is refused.
        d.mark_credentials();
        e.mark_credentials();
        assert!(slots.admit().is_none());
        assert_eq!(slots.open(), 3);
        drop(a);
        assert_eq!(slots.open(), 2);
        assert!(slots.admit().is_some());
    }
}
