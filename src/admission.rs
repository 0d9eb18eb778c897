//! The door's waiting room: limits on connections that have not yet shown
//! who they are.
//!
//! A connection is *unauthenticated* from accept until it has passed the
//! door — TLS done with its certificate verified, and its HandshakeResponse
//! read (docs/design.md §3.9). Such connections cost the backend nothing,
//! but they cost portcullis a socket, a task and a TLS handshake each, and a
//! slowloris would hold them open as long as it is allowed to. So each
//! listener admits at most `max_unauthenticated` of them, and at most
//! `max_unauthenticated_per_source` from one source (an IPv4 address, or an
//! IPv6 /64: one host's whole prefix). When a limit is reached the **oldest**
//! waiting connection (of that source, or overall) is closed to make room,
//! rather than the new one refused: a real client passes the door in
//! milliseconds, so only connections that stall long enough to be the
//! oldest are ever closed, and a flood cannot hold the door shut.
//!
//! A connection is admitted by the accept loop, as it is accepted, before
//! its task is spawned on a session worker: arrival order is accept order,
//! and a connection whose task has not started yet already counts (and can
//! already be closed to make room). A closed connection's socket is only
//! released when its task next runs; while more than `max_unauthenticated`
//! such connections are still closing, the accept loop waits for them
//! ([`Door::room`]) and new connections wait in the kernel's backlog. So a
//! listener holds at most twice `max_unauthenticated` sockets of clients
//! that have not shown who they are, however fast they arrive and however
//! busy the workers are.
//!
//! Admitting and passing take one short mutex hold each; nothing else on
//! the connection path touches this module.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// Where an unauthenticated connection comes from, for the per-source
/// limit: an IPv4 address, or the /64 prefix of an IPv6 one (an IPv6 host
/// usually has a whole /64 to pick addresses from).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4([u8; 4]),
    V6([u8; 8]),
}

impl Source {
    /// The source of a peer; IPv4-mapped IPv6 counts as IPv4.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Source::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Why a waiting connection was closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Its source had `max_unauthenticated_per_source` waiting.
    Source,
    /// The listener had `max_unauthenticated` waiting.
    Total,
}

impl Eviction {
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Source => "max_unauthenticated_per_source",
            Eviction::Total => "max_unauthenticated",
        }
    }
}

/// One listener's waiting room.
pub struct Door {
    max: usize,
    per_source: usize,
    state: Mutex<Waiting>,
    /// Evictions since start, for the rate-limited log line.
    evicted: AtomicU64,
    /// When the eviction log line was last written, and how many evictions
    /// it had reported by then.
    logged: Mutex<(Option<Instant>, u64)>,
    /// Woken whenever a connection closed to make room has ended.
    closed: Notify,
}

#[derive(Default)]
struct Waiting {
    next: u64,
    /// Every waiting connection by arrival: the first is the oldest.
    by_age: BTreeMap<u64, Entry>,
    /// The waiting connections of each source, oldest first.
    by_source: HashMap<Source, VecDeque<u64>>,
    /// Connections closed to make room whose task has not ended yet: each
    /// still holds its socket.
    closing: usize,
}

struct Entry {
    source: Option<Source>,
    evict: Arc<Evict>,
}

/// The signal that closes an evicted connection, with the reason.
#[derive(Default)]
struct Evict {
    token: CancellationToken,
    why: std::sync::OnceLock<Eviction>,
}

/// A connection's place in the waiting room. Dropping it (the connection
/// ended) or [`pass`](Ticket::pass)ing it (the connection showed who it
/// is) gives the place back.
pub struct Ticket {
    door: Arc<Door>,
    id: u64,
    evict: Arc<Evict>,
    waiting: bool,
}

impl Door {
    pub fn new(max: usize, per_source: usize) -> Door {
        Door {
            max: max.max(1),
            per_source: per_source.max(1),
            state: Mutex::default(),
            evicted: AtomicU64::new(0),
            logged: Mutex::new((None, 0)),
            closed: Notify::new(),
        }
    }

    /// Admits a new connection from `peer` (`None`: a Unix-socket client,
    /// which only the total limit applies to), closing the oldest waiting
    /// one of its source, or overall, when a limit is reached.
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>, listener: &str) -> Ticket {
        let source = peer.map(Source::of);
        let evict = Arc::new(Evict::default());
        let mut evicted = Vec::new();
        let id = {
            let mut w = lock(&self.state);
            if let Some(s) = source {
                let full = w
                    .by_source
                    .get(&s)
                    .is_some_and(|q| q.len() >= self.per_source);
                if full {
                    if let Some(oldest) = w.by_source.get(&s).and_then(|q| q.front().copied()) {
                        evicted.extend(w.remove(oldest).map(|e| (e, Eviction::Source)));
                    }
                }
            }
            if w.by_age.len() >= self.max {
                if let Some(oldest) = w.by_age.keys().next().copied() {
                    evicted.extend(w.remove(oldest).map(|e| (e, Eviction::Total)));
                }
            }
            // Under the lock, so that a ticket passing at the same moment
            // knows it was closed, and why.
            for (entry, why) in &evicted {
                let _ = entry.evict.why.set(*why);
            }
            w.closing += evicted.len();
            let id = w.next;
            w.next += 1;
            w.by_age.insert(
                id,
                Entry {
                    source,
                    evict: evict.clone(),
                },
            );
            if let Some(s) = source {
                w.by_source.entry(s).or_default().push_back(id);
            }
            id
        };
        for (entry, why) in evicted {
            entry.evict.token.cancel();
            self.evicted.fetch_add(1, Ordering::Relaxed);
            self.log_evictions(listener, why);
        }
        Ticket {
            door: self.clone(),
            id,
            evict,
            waiting: true,
        }
    }

    /// Connections waiting now.
    pub fn waiting(&self) -> usize {
        lock(&self.state).by_age.len()
    }

    /// Connections closed to make room whose task has not ended yet.
    pub fn closing(&self) -> usize {
        lock(&self.state).closing
    }

    /// Completes once fewer than `max_unauthenticated` connections closed
    /// to make room are still ending: the accept loop waits for it before
    /// each accept, so that sessions workers that fall behind (each closed
    /// connection is released when its task next runs) cannot make a flood
    /// cost more sockets than twice the limit.
    pub async fn room(&self) {
        loop {
            // Registered before the check, so no wake-up is missed.
            let closed = self.closed.notified();
            if self.closing() < self.max {
                return;
            }
            closed.await;
        }
    }

    /// Connections closed to make room since start.
    pub fn evicted_total(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// One WARN line a second at most, with how many were closed since the
    /// last one: a flood must not flood the log too.
    fn log_evictions(&self, listener: &str, why: Eviction) {
        let mut logged = lock(&self.logged);
        let now = Instant::now();
        if logged
            .0
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            return;
        }
        let total = self.evicted.load(Ordering::Relaxed);
        let since = total - logged.1;
        *logged = (Some(now), total);
        drop(logged);
        tracing::warn!(
            listener,
            closed = since,
            limit = why.as_str(),
            max_unauthenticated = self.max,
            max_unauthenticated_per_source = self.per_source,
            "closing the oldest unauthenticated connections to admit new ones (a flood, or clients that stall before TLS and their handshake response)"
        );
    }
}

/// At most one eviction log line per this long.
const LOG_EVERY: Duration = Duration::from_secs(1);

impl Waiting {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.by_age.remove(&id)?;
        if let Some(s) = entry.source {
            if let Some(q) = self.by_source.get_mut(&s) {
                q.retain(|&x| x != id);
                if q.is_empty() {
                    self.by_source.remove(&s);
                }
            }
        }
        Some(entry)
    }
}

/// What wakes a connection that is closed to make room; held apart from
/// its [`Ticket`], which the connection phase passes.
pub struct Evicted(Arc<Evict>);

impl Evicted {
    /// Completes when the connection is closed to make room, with why.
    pub async fn wait(&self) -> Eviction {
        self.0.token.cancelled().await;
        self.0.why.get().copied().unwrap_or(Eviction::Total)
    }
}

impl Ticket {
    /// Completes when this connection is closed to make room, with why.
    pub async fn evicted(&self) -> Eviction {
        self.signal().wait().await
    }

    /// The eviction signal, to wait on while the ticket is lent out.
    pub fn signal(&self) -> Evicted {
        Evicted(self.evict.clone())
    }

    /// The connection turned out to come from `peer` (a PROXY protocol
    /// header named the real client behind a load balancer): it counts
    /// towards that source's limit from now on, keeping its age, and the
    /// oldest waiting connection of that source is closed when the source
    /// is full. Nothing when it has passed or was already closed.
    pub fn move_to(&mut self, peer: IpAddr, listener: &str) {
        if !self.waiting {
            return;
        }
        let source = Source::of(peer);
        let door = self.door.clone();
        let evicted = {
            let mut w = lock(&door.state);
            let Some(old) = w.by_age.get(&self.id).map(|e| e.source) else {
                return;
            };
            if old == Some(source) {
                return;
            }
            let entry = w.remove(self.id).expect("present");
            let full = w
                .by_source
                .get(&source)
                .is_some_and(|q| q.len() >= door.per_source);
            let oldest = w.by_source.get(&source).and_then(|q| q.front().copied());
            let evicted = match oldest.filter(|_| full) {
                Some(o) => w.remove(o),
                None => None,
            };
            if let Some(e) = &evicted {
                let _ = e.evict.why.set(Eviction::Source);
                w.closing += 1;
            }
            w.by_age.insert(
                self.id,
                Entry {
                    source: Some(source),
                    evict: entry.evict,
                },
            );
            // Oldest first: ids grow with arrival.
            let q = w.by_source.entry(source).or_default();
            let at = q.partition_point(|&x| x < self.id);
            q.insert(at, self.id);
            evicted
        };
        if let Some(e) = evicted {
            e.evict.token.cancel();
            door.evicted.fetch_add(1, Ordering::Relaxed);
            door.log_evictions(listener, Eviction::Source);
        }
    }

    /// The connection has shown who it is: it leaves the waiting room.
    /// (Dropped, it leaves too.) `Err` with the reason if it had already
    /// been closed to make room, by another thread a moment before: it must
    /// then go no further (no backend is dialled for it), and has ended.
    pub fn pass(&mut self) -> Result<(), Eviction> {
        if !std::mem::take(&mut self.waiting) {
            return Ok(());
        }
        let mut w = lock(&self.door.state);
        if w.remove(self.id).is_some() {
            return Ok(());
        }
        w.closing -= 1;
        let why = self.evict.why.get().copied().unwrap_or(Eviction::Total);
        drop(w);
        self.door.closed.notify_waiters();
        Err(why)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = self.pass();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn is_evicted(t: &Ticket) -> Option<Eviction> {
        t.evict
            .token
            .is_cancelled()
            .then(|| *t.evict.why.get().unwrap())
    }

    /// Past the per-source limit, the oldest of that source goes; other
    /// sources are untouched; IPv6 counts by /64, IPv4-mapped as IPv4.
    #[test]
    fn the_oldest_of_a_full_source_makes_room() {
        let door = Arc::new(Door::new(100, 2));
        let a1 = door.admit(ip("2001:db8::1"), "l");
        let b = door.admit(ip("192.0.2.1"), "l");
        let a2 = door.admit(ip("2001:db8::ffff:2"), "l");
        assert_eq!(door.waiting(), 3);
        let a3 = door.admit(ip("2001:db8:0:0:1::3"), "l");
        assert_eq!(is_evicted(&a1), Some(Eviction::Source));
        assert_eq!(
            (is_evicted(&a2), is_evicted(&a3), is_evicted(&b)),
            (None, None, None)
        );
        assert_eq!(door.waiting(), 3);
        // Another /64 is another source.
        let _c = door.admit(ip("2001:db8:0:1::1"), "l");
        assert_eq!(is_evicted(&a2), None);
        // ::ffff:192.0.2.1 is 192.0.2.1.
        let _b2 = door.admit(ip("::ffff:192.0.2.1"), "l");
        let _b3 = door.admit(ip("192.0.2.1"), "l");
        assert_eq!(is_evicted(&b), Some(Eviction::Source));
        assert_eq!(door.evicted_total(), 2);
    }

    /// Past the total, the oldest overall goes; passing or dropping a
    /// ticket gives its place back, and a passed ticket is never evicted.
    #[test]
    fn the_oldest_overall_makes_room_and_passing_leaves() {
        let door = Arc::new(Door::new(3, 3));
        let mut first = door.admit(ip("192.0.2.1"), "l");
        let second = door.admit(ip("192.0.2.2"), "l");
        let third = door.admit(None, "l");
        assert_eq!(first.pass(), Ok(()));
        assert_eq!(door.waiting(), 2);
        let fourth = door.admit(ip("192.0.2.4"), "l");
        assert_eq!(is_evicted(&first), None, "passed: not waiting");
        let _fifth = door.admit(ip("192.0.2.5"), "l");
        assert_eq!(is_evicted(&second), Some(Eviction::Total));
        assert_eq!((is_evicted(&third), is_evicted(&fourth)), (None, None));
        drop(third);
        drop(fourth);
        assert_eq!(door.waiting(), 1);
    }

    /// A connection closed to make room still holds its socket until its
    /// task ends (drops or passes its ticket): it counts as closing, and
    /// the accept loop's `room` waits while `max` of them are. One that
    /// passes after it was closed learns so, and why.
    #[tokio::test]
    async fn closed_connections_count_until_their_tasks_end() {
        let door = Arc::new(Door::new(2, 2));
        let mut a = door.admit(ip("192.0.2.1"), "l");
        let b = door.admit(ip("192.0.2.2"), "l");
        let c = door.admit(ip("192.0.2.3"), "l");
        assert_eq!((door.closing(), door.waiting()), (1, 2));
        door.room().await;
        let d = door.admit(ip("192.0.2.4"), "l");
        assert_eq!((door.closing(), door.waiting()), (2, 2));
        let mut room = Box::pin(door.room());
        // Polled once, and pending: two are still closing.
        assert!(tokio::time::timeout(Duration::ZERO, &mut room)
            .await
            .is_err());
        assert_eq!(a.pass(), Err(Eviction::Total));
        assert_eq!(a.pass(), Ok(()), "once");
        room.await;
        assert_eq!(door.closing(), 1);
        drop(b);
        assert_eq!(door.closing(), 0);
        drop((c, d));
        assert_eq!((door.closing(), door.waiting()), (0, 0));
    }

    /// Behind a load balancer every connection arrives from its address;
    /// the PROXY header moves each to its real client's source, where the
    /// per-source limit applies by age.
    #[test]
    fn moved_tickets_count_for_the_real_client() {
        let door = Arc::new(Door::new(100, 2));
        let lb = ip("10.0.0.1");
        let mut a1 = door.admit(lb, "l");
        let mut b = door.admit(lb, "l");
        let mut a2 = door.admit(lb, "l");
        assert_eq!(
            is_evicted(&a1),
            Some(Eviction::Source),
            "all from the LB so far"
        );
        a2.move_to("192.0.2.1".parse().unwrap(), "l");
        b.move_to("192.0.2.2".parse().unwrap(), "l");
        let mut a3 = door.admit(lb, "l");
        a3.move_to("192.0.2.1".parse().unwrap(), "l");
        assert_eq!(
            (is_evicted(&a2), is_evicted(&a3), is_evicted(&b)),
            (None, None, None)
        );
        let mut a4 = door.admit(lb, "l");
        a4.move_to("192.0.2.1".parse().unwrap(), "l");
        assert_eq!(
            is_evicted(&a2),
            Some(Eviction::Source),
            "the oldest of 192.0.2.1"
        );
        assert_eq!(
            (is_evicted(&a3), is_evicted(&a4), is_evicted(&b)),
            (None, None, None)
        );
        // Passed or closed: nothing moves.
        assert_eq!(a1.pass(), Err(Eviction::Source));
        a1.move_to("192.0.2.9".parse().unwrap(), "l");
        assert_eq!(door.waiting(), 3);
    }

    #[tokio::test]
    async fn an_evicted_ticket_wakes_with_the_reason() {
        let door = Arc::new(Door::new(1, 1));
        let old = door.admit(ip("192.0.2.1"), "l");
        let _new = door.admit(ip("192.0.2.2"), "l");
        assert_eq!(old.evicted().await, Eviction::Total);
    }
}
