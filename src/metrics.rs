//! What the running proxy counts about itself: per-listener counters and
//! gauges, as atomics. [`crate::exposition`] encodes them for Prometheus;
//! [`crate::state`] holds one [`ListenerMetrics`] per listener.
//!
//! Sessions only ever touch atomics here: counters are `AtomicU64`s, and
//! the few label sets that grow at run time (outcome, TLS failure reason,
//! backend) live in copy-on-write lists behind an [`ArcSwap`], so adding a
//! label is a compare-and-swap and reading one is a lock-free load. The
//! scrape reads the same atomics; nothing a session does can wait on it.
//!
//! Metric names and label values are part of the public interface
//! (dashboards and alerts depend on them): never change one once released.
//! docs/operations.md lists them all.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::failover::RedirectForm;

/// The version in `portcullis_build_info` and `/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Content type of [`crate::exposition::encode`]: OpenMetrics text, which
/// Prometheus negotiates by default (counters are typed without their
/// `_total` suffix, and the body ends with `# EOF`).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the handshake latency buckets. The connection
/// phase spans a backend connect, a TLS handshake and an authentication
/// round trip: a local sidecar finishes in about a millisecond, a WAN
/// client in tens of milliseconds, and the default handshake timeout (10 s)
/// caps the rest.
pub const HANDSHAKE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts by label value, sorted by label (a snapshot of a labeled
/// counter).
pub type LabelCounts = Vec<(Arc<str>, u64)>;

// ---------------------------------------------------------------------------
// Per-listener metrics
// ---------------------------------------------------------------------------

/// Counters of one listener. Every method is lock-free.
#[derive(Default)]
pub struct ListenerMetrics {
    /// Connections accepted (including refused ones), for `/status`.
    accepted: AtomicU64,
    /// Sessions in progress (holding a connection slot).
    active: AtomicI64,
    /// Finished connections by outcome label.
    outcomes: LabeledCounters,
    /// Clients sent elsewhere with the failover redirect, by form
    /// (indexed as [`RedirectForm::ALL`]).
    redirects: [AtomicU64; 2],
    /// Failed TLS handshakes by reason.
    tls_failures: LabeledCounters,
    /// Failed backend connects by backend name.
    backend_connect_errors: LabeledCounters,
    /// Relayed bytes, added by each session's relay as they flow.
    bytes: ByteCounts,
    handshake: AtomicHistogram,
}

/// Holds one active session; the gauge goes down when it is dropped, so a
/// cancelled or panicking session task still counts right.
pub struct ActiveSession<'a>(&'a ListenerMetrics);

impl Drop for ActiveSession<'_> {
    fn drop(&mut self) {
        // Release: whoever sees the gauge drop also sees what the session
        // recorded before ending (tests wait on exactly that).
        self.0.active.fetch_sub(1, Ordering::Release);
    }
}

impl ListenerMetrics {
    /// Counts an accepted connection.
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a session as active until the returned guard is dropped.
    pub fn session_started(&self) -> ActiveSession<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveSession(self)
    }

    /// The listener's relayed-byte totals, for its sessions' relays.
    pub fn bytes(&self) -> &ByteCounts {
        &self.bytes
    }

    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub fn active(&self) -> i64 {
        self.active.load(Ordering::Acquire)
    }

    /// Counts a finished connection under its outcome label.
    pub fn outcome(&self, label: &str) {
        self.outcomes.inc(label);
    }

    /// Counts a client sent elsewhere with the failover redirect in `form`.
    pub fn redirected(&self, form: RedirectForm) {
        self.redirects[form as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed TLS handshake with a client.
    pub fn tls_failure(&self, reason: &str) {
        self.tls_failures.inc(reason);
    }

    /// Counts a failed connect to `backend`.
    pub fn backend_connect_error(&self, backend: &str) {
        self.backend_connect_errors.inc(backend);
    }

    /// Observes how long a session's connection phase took.
    pub fn observe_handshake(&self, d: Duration) {
        self.handshake.observe(d);
    }

    /// Finished connections by outcome label, sorted by label.
    pub fn outcomes(&self) -> LabelCounts {
        self.outcomes.snapshot()
    }

    /// Clients sent elsewhere with the failover redirect in `form`.
    pub fn redirects(&self, form: RedirectForm) -> u64 {
        self.redirects[form as usize].load(Ordering::Relaxed)
    }

    /// Failed TLS handshakes by reason, sorted by reason.
    pub fn tls_failures(&self) -> LabelCounts {
        self.tls_failures.snapshot()
    }

    /// Failed backend connects by backend name, sorted by name.
    pub fn backend_connect_errors(&self) -> LabelCounts {
        self.backend_connect_errors.snapshot()
    }

    /// The handshake latency histogram: (sum in seconds, count, per-bucket
    /// counts with their upper bounds, the last one `+Inf`).
    pub fn handshake(&self) -> (f64, u64, Vec<(f64, u64)>) {
        self.handshake.snapshot()
    }
}

/// Byte counts of a relay, taken from [`ByteCounts`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Transferred {
    /// Client → backend.
    pub up: u64,
    /// Backend → client.
    pub down: u64,
}

/// Bytes a relay has delivered, counted as each write completes, so a
/// session that streams for hours (a replication link) shows in them while
/// it runs, and a session ended from outside (revoked, shut down) keeps
/// what it moved. A session has its own; a listener's totals are another.
#[derive(Debug, Default)]
pub struct ByteCounts {
    /// Written to the backend.
    up: AtomicU64,
    /// Written to the client.
    down: AtomicU64,
}

impl ByteCounts {
    pub fn snapshot(&self) -> Transferred {
        Transferred {
            up: self.up.load(Ordering::Relaxed),
            down: self.down.load(Ordering::Relaxed),
        }
    }

    /// Adds `n` bytes written in direction `dir`.
    pub fn add(&self, dir: Direction, n: u64) {
        let counter = match dir {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Which way relayed bytes flow.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client → backend.
    Up,
    /// Backend → client.
    Down,
}

/// Counters keyed by a label value, without locks: the list is replaced
/// whole (copy-on-write, compare-and-swap) when a label first appears;
/// afterwards incrementing is a lock-free load and an atomic add.
#[derive(Default)]
struct LabeledCounters {
    list: ArcSwap<Vec<(Arc<str>, Arc<AtomicU64>)>>,
}

impl LabeledCounters {
    fn inc(&self, label: &str) {
        if let Some(c) = self.find(label) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let fresh = Arc::new(AtomicU64::new(0));
        self.list.rcu(|cur| {
            if cur.iter().any(|(l, _)| &**l == label) {
                // Someone added it meanwhile: keep theirs.
                Arc::clone(cur)
            } else {
                let mut v = Vec::with_capacity(cur.len() + 1);
                v.extend(cur.iter().cloned());
                v.push((Arc::from(label), fresh.clone()));
                Arc::new(v)
            }
        });
        if let Some(c) = self.find(label) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn find(&self, label: &str) -> Option<Arc<AtomicU64>> {
        self.list
            .load()
            .iter()
            .find(|(l, _)| &**l == label)
            .map(|(_, c)| c.clone())
    }

    fn snapshot(&self) -> LabelCounts {
        let mut v: Vec<_> = self
            .list
            .load()
            .iter()
            .map(|(l, c)| (l.clone(), c.load(Ordering::Relaxed)))
            .collect();
        v.sort();
        v
    }
}

/// A fixed-bucket histogram of atomics.
struct AtomicHistogram {
    /// Per-bucket (not cumulative) counts; the last one is `+Inf`.
    buckets: [AtomicU64; HANDSHAKE_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = HANDSHAKE_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(HANDSHAKE_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// (sum in seconds, count, per-bucket counts with upper bounds).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = HANDSHAKE_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // Count from the buckets just read, so count and the +Inf bucket
        // agree even while sessions are being recorded.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_counters_add_labels_once() {
        let c = LabeledCounters::default();
        c.inc("relayed");
        c.inc("tls_required");
        c.inc("relayed");
        let snap: Vec<(String, u64)> = c
            .snapshot()
            .into_iter()
            .map(|(l, n)| (l.to_string(), n))
            .collect();
        assert_eq!(
            snap,
            vec![("relayed".to_string(), 2), ("tls_required".to_string(), 1)]
        );
    }

    #[test]
    fn labeled_counters_from_many_threads() {
        let c = Arc::new(LabeledCounters::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.inc(["a", "b", "c", "d"][(i + t) % 4]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap: Vec<u64> = c.snapshot().into_iter().map(|(_, n)| n).collect();
        assert_eq!(snap, vec![2000, 2000, 2000, 2000]);
    }

    #[test]
    fn histogram_buckets() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4);
        assert!((sum - 60.0313).abs() < 1e-9, "{sum}");
        let nonzero: Vec<(f64, u64)> = buckets.into_iter().filter(|(_, n)| *n > 0).collect();
        assert_eq!(
            nonzero,
            vec![(0.0005, 1), (0.001, 1), (0.05, 1), (f64::INFINITY, 1)]
        );
    }
}
