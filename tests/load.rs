//! Load and soak (issue "Robustness and security under load, faults and
//! hostile input"). Long-running, so `#[ignore]`d: `scripts/soak` runs them
//! one at a time (see the README). Everything stays on loopback and every
//! loop is bounded in count and time.
//!
//! Each test measures this process (proxy and clients run in it) before,
//! at peak and after: open file descriptors, live tokio tasks, resident
//! memory. After the load, descriptors and tasks must come back to exactly
//! where they started, and every query must have got its own answer.
//!
//! Knobs (environment):
//! - `PORTCULLIS_LOAD_SESSIONS` / `PORTCULLIS_LOAD_ROUNDS` — idle sessions
//!   held open (default 5000), how many times (default 4: resident memory
//!   must have levelled off by the last round)
//!
//! `scripts/soak` sets `MALLOC_ARENA_MAX=2`: with glibc's default of up to
//! eight arenas per core, every thread that ever allocated (tokio workers,
//! the blocking pool) keeps its own fragmented heap, and RSS then measures
//! the allocator's spread more than what the process holds.
//! - `PORTCULLIS_STORM_CONNECTIONS` / `PORTCULLIS_STORM_TASKS` — connection
//!   storm size (default 3000 from 100 tasks)
//! - `PORTCULLIS_SOAK_SECS` — soak duration (default 600)
//! - `PORTCULLIS_FLOOD_SILENT` / `PORTCULLIS_FLOOD_STALLED` /
//!   `PORTCULLIS_FLOOD_SECS` — the front-door flood: silent TCP connections
//!   (default 2000) and connections stalled mid-TLS-handshake (default 500),
//!   held for (default) 20 s; `PORTCULLIS_FLOOD_RECONNECT=0` opens each
//!   once instead of reopening it whenever portcullis closes it

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::server_error_code;
use common::flood;
use common::mariadb::{MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{tls_section, TestProxy};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: not a number"))
        })
        .unwrap_or(default)
}

/// Raises this process's soft RLIMIT_NOFILE to `want` (or the hard limit,
/// if lower) with util-linux's `prlimit`, which keeps unsafe code out of the
/// tests. Returns the soft limit in force afterwards.
fn raise_nofile(want: u64) -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files line");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (soft, hard) = (nums[0], nums[1]);
    let target = want.min(hard);
    if soft < target {
        let out = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={target}:{hard}"),
            ])
            .output()
            .expect("run prlimit (util-linux)");
        assert!(
            out.status.success(),
            "prlimit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        target >= want,
        "need {want} file descriptors; the hard limit is {hard} (raise it: ulimit -Hn)"
    );
    target
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    fds: usize,
    tasks: usize,
    rss_kib: u64,
}

fn usage() -> Usage {
    let fds = std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count();
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    Usage {
        fds,
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        rss_kib,
    }
}

/// Waits until descriptors and tasks are back at `base` (closing is
/// asynchronous on both sides of a socket), then returns the final usage.
async fn back_to(base: Usage) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = usage();
        if now.fds == base.fds && now.tasks == base.tasks {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "not back to the starting level: before {base:?}, now {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn outcome_counts(proxy: &TestProxy) -> Vec<(String, String, u64)> {
    let mut v = Vec::new();
    for l in &proxy.state().listeners {
        for (label, n) in l.metrics.outcomes() {
            v.push((l.name().to_string(), label.to_string(), n));
        }
    }
    v
}

fn report(what: &str, before: Usage, peak: Usage, after: Usage) {
    println!(
        "{what}: fds {} -> {} -> {}, tasks {} -> {} -> {}, RSS {} -> {} -> {} KiB",
        before.fds,
        peak.fds,
        after.fds,
        before.tasks,
        peak.tasks,
        after.tasks,
        before.rss_kib,
        peak.rss_kib,
        after.rss_kib
    );
}

/// A server sized for many connections: a thread pool instead of a thread
/// per connection.
async fn big_mariadb(max_connections: u64) -> MariaDb {
    let db = MariaDb::builder()
        .args([
            format!("--max-connections={max_connections}"),
            "--thread-handling=pool-of-threads".to_string(),
        ])
        .start()
        .await;
    db.create_users().await;
    db
}

fn config(pki: &Pki, db: &MariaDb, max_connections: u64) -> String {
    format!(
        r#"[admin]
address = "unix:admin.sock"
[[backend]]
name = "db"
address = {:?}
connect_timeout = "30s"
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
max_connections = {max_connections}
handshake_timeout = "60s"
{}
[[listener]]
name = "stable"
address = "[::1]:0"
route = "db"
max_connections = {max_connections}
handshake_timeout = "60s"
{}"#,
        db.unix_address(),
        tls_section(pki, "required"),
        tls_section(pki, "required"),
    )
}

/// One query whose answer is unique to the caller: `SELECT n, REPEAT('x', n % 997)`.
async fn check_answer(conn: &mut Conn, n: u64) -> Result<(), String> {
    let row: Option<(u64, String)> = conn
        .query_first(format!("SELECT {n}, REPEAT('x', {})", n % 997))
        .await
        .map_err(|e| format!("query {n}: {e}"))?;
    match row {
        Some((m, s)) if m == n && s.len() as u64 == n % 997 => Ok(()),
        other => Err(format!("query {n}: wrong answer {other:?}")),
    }
}

/// A warm-up session, so lazily built state (TLS configs, client caches)
/// is counted in the baseline, not as a leak.
async fn warm_up(opts: &Opts) {
    let mut c = Conn::new(opts.clone()).await.expect("warm-up connection");
    check_answer(&mut c, 1).await.unwrap();
    c.disconnect().await.unwrap();
}

/// A mariadbd and a proxy sized for `sessions` concurrent sessions, warmed
/// up on both listeners and settled.
struct Rig {
    pki: Pki,
    db: MariaDb,
    proxy: TestProxy,
    cfg: String,
}

impl Rig {
    async fn start(sessions: u64) -> Rig {
        let pki = Pki::new();
        let db = big_mariadb(sessions + 100).await;
        let cfg = config(&pki, &db, sessions + 10);
        let proxy = TestProxy::start(&cfg).await;
        let rig = Rig {
            pki,
            db,
            proxy,
            cfg,
        };
        warm_up(&rig.opts("public")).await;
        warm_up(&rig.opts("stable")).await;
        rig.proxy.settle().await;
        rig
    }

    fn opts(&self, listener: &str) -> Opts {
        self.proxy
            .app_opts(&self.pki, listener, NATIVE_USER, NATIVE_PASS)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test (minutes, thousands of fds): scripts/soak"]
async fn thousands_of_idle_mtls_sessions_then_all_used() {
    let n = env_or("PORTCULLIS_LOAD_SESSIONS", 5000);
    let rounds = env_or("PORTCULLIS_LOAD_ROUNDS", 4).max(2);
    // Per session: the client's socket and the proxy's two.
    raise_nofile(3 * n + 1024);
    let rig = Rig::start(n).await;
    let before = usage();
    let mut after_rounds = Vec::new();
    for round in 0..rounds {
        let (peak, after) = idle_sessions_round(&rig, n, round).await;
        report(
            &format!("idle sessions, round {}", round + 1),
            before,
            peak,
            after,
        );
        after_rounds.push(after.rss_kib);
    }
    println!("outcomes: {:?}", outcome_counts(&rig.proxy));
    // The allocator keeps freed memory for reuse (and fragments it over
    // the first rounds), so RSS does not drop back to the start; but it
    // levels off: the last round must fit in what the one before left
    // (5% slack), where a leak would add the same amount every round.
    println!("RSS after each round (KiB): {after_rounds:?}");
    let [.., previous, last] = after_rounds[..] else {
        unreachable!("at least two rounds")
    };
    assert!(
        last <= previous + previous / 20,
        "RSS still growing: {after_rounds:?} KiB"
    );
}

/// Opens `n` sessions (64 handshakes at a time), holds them all, then uses
/// and closes each; returns usage at the peak and once everything closed
/// (descriptors and tasks checked against the start).
async fn idle_sessions_round(rig: &Rig, n: u64, round: u64) -> (Usage, Usage) {
    let (proxy, opts) = (&rig.proxy, rig.opts("public"));
    let before = usage();
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let mut opening = JoinSet::new();
    for i in 0..n {
        let (opts, gate) = (opts.clone(), gate.clone());
        opening.spawn(async move {
            let _p = gate.acquire_owned().await.unwrap();
            let c = Conn::new(opts)
                .await
                .unwrap_or_else(|e| panic!("session {i}: {e}"));
            (i, c)
        });
    }
    let mut conns = Vec::with_capacity(n as usize);
    while let Some(r) = opening.join_next().await {
        conns.push(r.expect("opening task"));
    }
    let opened = started.elapsed();
    let peak = usage();
    let active = proxy.state().listeners[0].metrics.active();
    assert_eq!(active, n as i64, "every session is active in the proxy");
    let threads: (String, u64) = rig
        .db
        .query_first("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
        .await
        .expect("status row");
    assert!(threads.1 > n, "mariadbd sees them all: {threads:?}");

    // Now use every one of them, and close it.
    let mut using = JoinSet::new();
    for (i, mut c) in conns {
        let gate = gate.clone();
        using.spawn(async move {
            let _p = gate.acquire_owned().await.unwrap();
            let r = check_answer(&mut c, (round + 1) * 1_000_000 + i).await;
            c.disconnect()
                .await
                .map_err(|e| format!("disconnect {i}: {e}"))?;
            r
        });
    }
    let mut wrong = Vec::new();
    while let Some(r) = using.join_next().await {
        if let Err(e) = r.expect("using task") {
            wrong.push(e);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} failures, first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    proxy.settle().await;
    let after = back_to(before).await;
    println!(
        "round {}: {n} idle mTLS sessions opened in {opened:?}, all used and closed in {:?}",
        round + 1,
        started.elapsed()
    );
    (peak, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test (minutes): scripts/soak"]
async fn connection_storm_of_new_tls_sessions() {
    let total = env_or("PORTCULLIS_STORM_CONNECTIONS", 3000);
    let tasks = env_or("PORTCULLIS_STORM_TASKS", 100);
    raise_nofile(3 * tasks + 4096);
    // Room for sessions still closing (a client's disconnect returns before
    // the proxy and the server have torn the session down) while the same
    // task already opens its next one.
    let rig = Rig::start(tasks * 4).await;
    let (proxy, opts) = (&rig.proxy, rig.opts("public"));
    let before = usage();
    let started = Instant::now();

    let next = Arc::new(AtomicU64::new(0));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let peak_fds = Arc::new(AtomicU64::new(0));
    let mut storm = JoinSet::new();
    for _ in 0..tasks {
        let (opts, next) = (opts.clone(), next.clone());
        let (peak_rss, peak_fds) = (peak_rss.clone(), peak_fds.clone());
        storm.spawn(async move {
            let mut done = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<u64, String>(done);
                }
                let mut c = Conn::new(opts.clone())
                    .await
                    .map_err(|e| format!("connection {i}: {e}"))?;
                check_answer(&mut c, i).await?;
                c.disconnect()
                    .await
                    .map_err(|e| format!("disconnect {i}: {e}"))?;
                let u = usage();
                peak_rss.fetch_max(u.rss_kib, Ordering::Relaxed);
                peak_fds.fetch_max(u.fds as u64, Ordering::Relaxed);
                done += 1;
            }
        });
    }
    let mut done = 0;
    while let Some(r) = storm.join_next().await {
        done += r.expect("storm task").unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(done, total);
    let took = started.elapsed();
    proxy.settle().await;
    let after = back_to(before).await;
    let relayed: u64 = outcome_counts(proxy)
        .iter()
        .filter(|(_, l, _)| l == "relayed")
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(
        relayed,
        total + 2,
        "every connection relayed (plus the two warm-ups)"
    );
    println!(
        "storm: {total} TLS connections from {tasks} tasks in {took:?} ({:.0}/s)",
        total as f64 / took.as_secs_f64()
    );
    let peak = Usage {
        rss_kib: peak_rss.load(Ordering::Relaxed),
        fds: peak_fds.load(Ordering::Relaxed) as usize,
        ..after
    };
    report("storm (peak tasks not sampled)", before, peak, after);
}

/// Mixed traffic for `PORTCULLIS_SOAK_SECS`: long sessions querying
/// non-stop, short sessions churning on both listeners, the `public`
/// listener's redirect mode switched through the admin API and through
/// config reloads all the while. Short sessions on `public` may be
/// redirected (ERR 4196) while its mode is on; anything else is a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test (10 minutes by default): scripts/soak"]
async fn soak_queries_reloads_and_redirect_switches() {
    let secs = env_or("PORTCULLIS_SOAK_SECS", 600);
    const LONG: u64 = 16;
    const CHURN: u64 = 16;
    raise_nofile(4096);
    let rig = Rig::start(100).await;
    let (proxy, cfg) = (&rig.proxy, rig.cfg.clone());
    let (public, stable) = (rig.opts("public"), rig.opts("stable"));
    let before = usage();
    let end = Instant::now() + Duration::from_secs(secs);
    let queries = Arc::new(AtomicU64::new(0));
    let redirects = Arc::new(AtomicU64::new(0));
    let sessions = Arc::new(AtomicU64::new(0));

    let mut work = JoinSet::new();
    for w in 0..LONG {
        // Opened before any switch: established sessions are never
        // redirected, whatever the mode does later.
        let opts = if w % 2 == 0 { &public } else { &stable };
        let mut c = Conn::new(opts.clone()).await.expect("long session");
        let queries = queries.clone();
        work.spawn(async move {
            let mut k = 0u64;
            while Instant::now() < end {
                check_answer(&mut c, w * 1_000_000_000 + k).await?;
                queries.fetch_add(1, Ordering::Relaxed);
                k += 1;
            }
            c.disconnect().await.map_err(|e| format!("long {w}: {e}"))
        });
    }
    for w in 0..CHURN {
        let opts = if w % 2 == 0 { &public } else { &stable }.clone();
        let (queries, redirects, sessions) = (queries.clone(), redirects.clone(), sessions.clone());
        work.spawn(async move {
            let mut k = 0u64;
            while Instant::now() < end {
                let n = (LONG + w) * 1_000_000_000 + k;
                k += 1;
                match Conn::new(opts.clone()).await {
                    Ok(mut c) => {
                        for j in 0..(k % 5) {
                            check_answer(&mut c, n + j * 1_000_000).await?;
                            queries.fetch_add(1, Ordering::Relaxed);
                        }
                        c.disconnect()
                            .await
                            .map_err(|e| format!("churn {w}: {e}"))?;
                        sessions.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) if w % 2 == 0 && server_error_code(&e) == Some(4196) => {
                        redirects.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(format!("churn {w}: {e}")),
                }
            }
            Ok(())
        });
    }

    // The switcher: alternately the admin API and a config reload (what
    // SIGHUP does), on and off, every 250 ms.
    let path = proxy.dir().join("portcullis.toml");
    let on_cfg = cfg.replacen(
        "name = \"public\"\n",
        r#"name = "public"
failover = "on"
failover_target = "db2.example.net:3307"
"#,
        1,
    );
    assert_ne!(on_cfg, cfg);
    let mut switches = 0u64;
    // Resident memory once warmed up: after the first tenth of the run.
    let warm_at = Instant::now() + Duration::from_secs(secs) / 10;
    let mut rss_warm = None;
    let mut rss_peak = 0;
    let mut fds_peak = 0;
    while Instant::now() < end {
        let on = switches % 2 == 0;
        if switches % 4 < 2 {
            let body = if on {
                r#"{"mode": "on", "target": "db2.example.net:3307"}"#
            } else {
                r#"{"mode": "off"}"#
            };
            let r = proxy.admin("PUT", "/listeners/public/failover", body).await;
            assert_eq!(r.status, 200, "{}", r.body);
        } else {
            std::fs::write(&path, if on { &on_cfg } else { &cfg }).unwrap();
            // What SIGHUP does: re-read the file, apply failover and TLS.
            let report = portcullis::reload::reload_config(
                &proxy.state(),
                portcullis::reload::Trigger::Signal,
            )
            .expect("reload config");
            assert!(report.all_applied(), "{report:?}");
        }
        switches += 1;
        let u = usage();
        rss_peak = rss_peak.max(u.rss_kib);
        fds_peak = fds_peak.max(u.fds);
        if rss_warm.is_none() && Instant::now() >= warm_at {
            rss_warm = Some(u.rss_kib);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut failures = Vec::new();
    while let Some(r) = work.join_next().await {
        if let Err(e) = r.expect("worker task") {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    // Leave the listener as the file says, then let everything close.
    std::fs::write(&path, &cfg).unwrap();
    proxy.settle().await;
    let after = back_to(before).await;
    let q = queries.load(Ordering::Relaxed);
    println!(
        "soak {secs}s: {q} queries checked, {} short sessions, {} redirects, {switches} mode switches, 0 wrong answers",
        sessions.load(Ordering::Relaxed),
        redirects.load(Ordering::Relaxed)
    );
    let peak = Usage {
        rss_kib: rss_peak,
        fds: fds_peak,
        ..after
    };
    report("soak (peak tasks not sampled)", before, peak, after);
    println!("outcomes: {:?}", outcome_counts(proxy));
    assert!(q > 0 && switches > 1);
    // Memory: after the load, resident memory must not have kept growing
    // past what the warmed-up process used (a leak per session or query
    // would show as growth proportional to the run).
    if let Some(warm) = rss_warm {
        println!(
            "soak: RSS after the first tenth {warm} KiB, at the end {} KiB",
            after.rss_kib
        );
        assert!(
            after.rss_kib <= warm + warm / 2,
            "RSS grew from {warm} KiB (warmed up) to {} KiB",
            after.rss_kib
        );
    }
}

// ---------------------------------------------------------------------------
// The front-door flood (issue "The front door", first "Done when"):
// unauthenticated connections cost mariadbd nothing and cannot keep a
// legitimate client out.

/// What the attackers did, counted as they go.
#[derive(Default)]
struct FloodStats {
    /// Attackers that have connected at least once.
    connected: AtomicU64,
    opened: AtomicU64,
    closed_by_proxy: AtomicU64,
    connect_failed: AtomicU64,
}

/// One attacker: connects from `source`, sends `bytes` (nothing: a silent
/// client) and stalls until portcullis closes the connection; then, with
/// `reconnect`, opens the next one, until `end`.
async fn attacker(
    source: std::net::Ipv4Addr,
    addr: std::net::SocketAddr,
    bytes: Arc<Vec<u8>>,
    end: Instant,
    reconnect: bool,
    stats: Arc<FloodStats>,
) {
    let mut first = true;
    loop {
        let mut s = match tokio::time::timeout_at(end, flood::connect_from(source, addr)).await {
            Err(_) => return,
            Ok(Ok(s)) => s,
            Ok(Err(_)) => {
                // Out of ports, or the backlog refused it: try again soon.
                stats.connect_failed.fetch_add(1, Ordering::Relaxed);
                let pause = tokio::time::sleep(Duration::from_millis(10));
                let _ = tokio::time::timeout_at(end, pause).await;
                continue;
            }
        };
        stats.opened.fetch_add(1, Ordering::Relaxed);
        if std::mem::take(&mut first) {
            stats.connected.fetch_add(1, Ordering::Relaxed);
        }
        let _ = flood::stall(&mut s, &bytes).await;
        let closed = tokio::time::timeout_at(end, flood::closed(s)).await.is_ok();
        if closed {
            stats.closed_by_proxy.fetch_add(1, Ordering::Relaxed);
        }
        if !reconnect || !closed {
            tokio::time::sleep_until(end).await;
            return;
        }
    }
}

/// mariadbd's `Threads_connected`, and its `Connections` (every attempt so
/// far), read over `conn`.
async fn threads_and_connections(conn: &mut Conn) -> (u64, u64) {
    let rows: Vec<(String, u64)> = conn
        .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Threads_connected', 'Connections')")
        .await
        .expect("status");
    let get = |n: &str| rows.iter().find(|(k, _)| k == n).expect(n).1;
    (get("Threads_connected"), get("Connections"))
}

/// Waits until mariadbd's `Threads_connected` is back at `base`: a
/// disconnected client's thread ends a moment after its client returns.
async fn threads_back_to(conn: &mut Conn, base: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (threads, _) = threads_and_connections(conn).await;
        if threads <= base {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Threads_connected stays at {threads}, above {base}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

/// What the legitimate clients saw.
#[derive(Default)]
struct Legit {
    /// Connect latencies of the mTLS logins made while the flood was held
    /// (every attacker connected), and of root's on mariadbd's socket.
    mtls: Vec<Duration>,
    root: Vec<Duration>,
    /// mTLS logins while the attackers were still opening their first
    /// connections: (succeeded, failed).
    opening: (u64, u64),
    /// mTLS logins that failed while the flood was held.
    failed: Vec<String>,
}

/// Floods a mutual-TLS listener on 127.0.0.1 with every limit at its
/// default, in front of a mariadbd as installed (max_connections 151, a
/// thread per connection), with `PORTCULLIS_FLOOD_SILENT` silent
/// connections and `PORTCULLIS_FLOOD_STALLED` connections stalled in the
/// middle of the TLS handshake (the SSLRequest, then half a ClientHello),
/// from `sources` (round robin), held for `PORTCULLIS_FLOOD_SECS` (with
/// `PORTCULLIS_FLOOD_RECONNECT=1`, each reopened as soon as it is closed).
///
/// Meanwhile, one connection at a time: a legitimate mTLS client from
/// 127.0.0.1 logs in and queries, then root logs in on mariadbd's own Unix
/// socket. Asserted: every root login succeeds, and every mTLS login made
/// while the flood is held (not while the attackers are still opening
/// their 2 500 connections: then "the oldest" is only milliseconds old) in
/// the issue's flood (not the reconnecting one: docs/security.md);
/// mariadbd's `Threads_connected`, polled throughout, never exceeds its
/// value before the flood plus the one legitimate session; its
/// `Connections` counted exactly the legitimate logins; the proxy never
/// held more than twice `max_unauthenticated` connections besides the
/// legitimate one; afterwards descriptors and tasks are back where they
/// started.
async fn door_flood(what: &str, sources: &[std::net::Ipv4Addr]) {
    let silent = env_or("PORTCULLIS_FLOOD_SILENT", 2000);
    let stalled = env_or("PORTCULLIS_FLOOD_STALLED", 500);
    let secs = env_or("PORTCULLIS_FLOOD_SECS", 20);
    let reconnect = env_or("PORTCULLIS_FLOOD_RECONNECT", 0) != 0;
    let limit = std::env::var("PORTCULLIS_FLOOD_MAX_UNAUTHENTICATED")
        .map(|n| format!("max_unauthenticated = {n}\n"))
        .unwrap_or_default();
    let total = silent + stalled;
    raise_nofile(2 * total + 4096);
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let cfg = format!(
        r#"[[backend]]
name = "db"
address = {:?}
[[listener]]
name = "public"
address = "127.0.0.1:0"
route = "db"
{limit}{}"#,
        db.unix_address(),
        tls_section(&pki, "required"),
    );
    let proxy = TestProxy::start(&cfg).await;
    let max_unauthenticated = proxy.config.listeners[0].max_unauthenticated;
    let addr = proxy.tcp_addr("public");
    let legit = common::client::tls_opts(
        "127.0.0.1",
        addr.port(),
        NATIVE_USER,
        NATIVE_PASS,
        &pki.ca,
        Some(&pki.app),
    );
    let state = proxy.state();
    flood::wait_until("the probe learned the backend's greeting", || {
        state.backends.iter().all(|b| b.greeting_learned())
    })
    .await;
    warm_up(&legit).await;
    proxy.settle().await;
    // The watchers' own two connections are the baseline: wait until the
    // warm-up's and the probe's threads have ended.
    let mut poll_conn = db.root_conn().await;
    let mut legit_conn = db.root_conn().await;
    threads_back_to(&mut legit_conn, 2).await;
    let (base_threads, base_connections) = threads_and_connections(&mut legit_conn).await;
    let relayed_before = flood::outcome_count(&proxy, "public", "relayed");
    let before = usage();

    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let stats = Arc::new(FloodStats::default());
    let silent_bytes = Arc::new(Vec::new());
    let stalled_bytes = Arc::new(flood::stalled_tls_prefix(&pki));
    // The attackers run on a thread of their own, as another machine
    // would (sharing this one's two cores, though); their tasks are not
    // this runtime's, whose tasks (the accept loop's among them) are
    // measured.
    let attackers = {
        let (stats, sources) = (stats.clone(), sources.to_vec());
        std::thread::Builder::new()
            .name("attackers".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("attackers' runtime");
                rt.block_on(async move {
                    let mut set = JoinSet::new();
                    for i in 0..total {
                        let bytes = if i < silent {
                            silent_bytes.clone()
                        } else {
                            stalled_bytes.clone()
                        };
                        let source = sources[i as usize % sources.len()];
                        set.spawn(attacker(source, addr, bytes, end, reconnect, stats.clone()));
                    }
                    while set.join_next().await.is_some() {}
                })
            })
            .expect("attackers' thread")
    };

    // The legitimate clients, one connection open at a time, each waited
    // for until mariadbd has ended its thread.
    let legit_task = tokio::spawn({
        let (legit, root, stats) = (legit.clone(), db.root_opts(), stats.clone());
        async move {
            let mut seen = Legit::default();
            let mut n = 0u64;
            while Instant::now() < end {
                let held = stats.connected.load(Ordering::Relaxed) == total;
                let t = Instant::now();
                match (Conn::new(legit.clone()).await, held) {
                    (Ok(mut c), _) => {
                        if held {
                            seen.mtls.push(t.elapsed());
                        } else {
                            seen.opening.0 += 1;
                        }
                        check_answer(&mut c, n).await.unwrap();
                        c.disconnect().await.unwrap();
                    }
                    (Err(_), false) => seen.opening.1 += 1,
                    (Err(e), true) => seen.failed.push(format!(
                        "mTLS login {n} at {:?} of the flood, after {:?}: {e}",
                        t - started,
                        t.elapsed()
                    )),
                }
                threads_back_to(&mut legit_conn, base_threads).await;
                let t = Instant::now();
                let mut c = Conn::new(root.clone())
                    .await
                    .unwrap_or_else(|e| panic!("root on the socket during the flood: {e}"));
                seen.root.push(t.elapsed());
                check_answer(&mut c, n).await.unwrap();
                c.disconnect().await.unwrap();
                threads_back_to(&mut legit_conn, base_threads).await;
                n += 1;
                // Paced, not back to back: a client among the flood.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (seen, legit_conn)
        }
    });

    // The poller: mariadbd's threads, the door, this process.
    let door = &state.listeners[0].runtime.door;
    let metrics = &state.listeners[0].metrics;
    let mut threads_peak = base_threads;
    let (mut waiting_peak, mut closing_peak, mut held_peak) = (0, 0, 0);
    let mut peak = before;
    while Instant::now() < end {
        let (threads, _) = threads_and_connections(&mut poll_conn).await;
        threads_peak = threads_peak.max(threads);
        waiting_peak = waiting_peak.max(door.waiting());
        closing_peak = closing_peak.max(door.closing());
        // Connections the proxy holds: accepted and not yet finished, each
        // a socket and a task (started or not).
        let recorded: u64 = metrics.outcomes().iter().map(|(_, n)| n).sum();
        held_peak = held_peak.max(metrics.accepted_total().saturating_sub(recorded));
        let u = usage();
        peak = Usage {
            fds: peak.fds.max(u.fds),
            tasks: peak.tasks.max(u.tasks),
            rss_kib: peak.rss_kib.max(u.rss_kib),
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut seen, mut legit_conn) = legit_task.await.expect("legitimate clients");
    tokio::task::spawn_blocking(move || attackers.join())
        .await
        .unwrap()
        .expect("the attackers' thread");
    let evicted = door.evicted_total();
    flood::wait_until("the waiting room is empty", || door.waiting() == 0).await;
    proxy.settle().await;
    let (_, connections) = threads_and_connections(&mut legit_conn).await;
    let after = back_to(before).await;
    poll_conn.disconnect().await.unwrap();
    legit_conn.disconnect().await.unwrap();

    seen.mtls.sort();
    seen.root.sort();
    let logins = seen.mtls.len() as u64 + seen.opening.0;
    let opened = stats.opened.load(Ordering::Relaxed);
    println!(
        "door flood {what}: {silent} silent + {stalled} stalled-TLS for {secs}s (reconnect: {reconnect}): \
         {opened} connections opened ({} connects failed), {} closed by portcullis",
        stats.connect_failed.load(Ordering::Relaxed),
        stats.closed_by_proxy.load(Ordering::Relaxed),
    );
    println!(
        "door flood {what}: evicted {evicted}, tls_handshake_timeout {}; at most {waiting_peak} waiting \
         (max_unauthenticated {max_unauthenticated}), {closing_peak} closed and not yet ended, \
         {held_peak} connections held by the proxy",
        flood::outcome_count(&proxy, "public", "tls_handshake_timeout"),
    );
    println!(
        "door flood {what}: legitimate mTLS logins while held: {} ok, {} failed, connect p50 {:?}, \
         p90 {:?}, max {:?}; while the attackers were opening: {} ok, {} failed; \
         root on the socket: {} ok, p50 {:?}, max {:?}",
        seen.mtls.len(),
        seen.failed.len(),
        percentile(&seen.mtls, 50),
        percentile(&seen.mtls, 90),
        percentile(&seen.mtls, 100),
        seen.opening.0,
        seen.opening.1,
        seen.root.len(),
        percentile(&seen.root, 50),
        percentile(&seen.root, 100),
    );
    println!(
        "door flood {what}: mariadbd Threads_connected before {base_threads} (the two watchers), at most {threads_peak} during"
    );
    println!("door flood {what}: outcomes {:?}", outcome_counts(&proxy));
    for f in seen.failed.iter().take(5) {
        println!("door flood {what}: failed: {f}");
    }
    report(&format!("door flood {what}"), before, peak, after);

    assert_eq!(
        stats.connected.load(Ordering::Relaxed),
        total,
        "every attacker connected"
    );
    assert!(
        !seen.mtls.is_empty() || reconnect,
        "mTLS logins while the flood was held"
    );
    if !reconnect {
        assert!(
            seen.failed.is_empty(),
            "{} legitimate logins failed: {:#?}",
            seen.failed.len(),
            seen.failed
        );
    }
    assert!(
        threads_peak <= base_threads + 1,
        "mariadbd's Threads_connected rose from {base_threads} to {threads_peak}: the flood reached it"
    );
    assert_eq!(
        connections - base_connections,
        logins + seen.root.len() as u64,
        "mariadbd saw only the legitimate logins"
    );
    assert_eq!(
        flood::outcome_count(&proxy, "public", "relayed"),
        relayed_before + logins
    );
    // Waiting at most max_unauthenticated, closing at most one admission's
    // two evictions past it, the legitimate session, and sessions between
    // their ticket's end and their outcome's count (one per worker).
    let bound = (2 * max_unauthenticated + 2 + 1 + proxy.config.workers) as u64;
    assert!(
        held_peak <= bound,
        "the proxy held {held_peak} connections (more than {bound})"
    );
}

/// The flood from 253 loopback addresses (127.0.0.2 … 127.0.0.254): about
/// ten connections each, so the listener's `max_unauthenticated` is the
/// limit that bites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test (20 s, thousands of fds): scripts/soak"]
async fn a_door_flood_from_many_sources() {
    let sources: Vec<_> = (2..=254)
        .map(|i| std::net::Ipv4Addr::new(127, 0, 0, i))
        .collect();
    door_flood("from 253 sources", &sources).await;
}

/// The flood from one address (127.0.0.2): `max_unauthenticated_per_source`
/// bites, and the legitimate client from 127.0.0.1 is another source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test (20 s, thousands of fds): scripts/soak"]
async fn a_door_flood_from_one_source() {
    door_flood("from one source", &[std::net::Ipv4Addr::new(127, 0, 0, 2)]).await;
}
