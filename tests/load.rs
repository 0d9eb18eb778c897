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

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::server_error_code;
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
        "[admin]\naddress = \"unix:admin.sock\"\n\
         [[backend]]\nname = \"db\"\naddress = {:?}\nconnect_timeout = \"30s\"\n\
         [[listener]]\nname = \"public\"\naddress = \"[::1]:0\"\nroute = \"db\"\n\
         max_connections = {max_connections}\nhandshake_timeout = \"60s\"\n{}\n\
         [[listener]]\nname = \"stable\"\naddress = \"[::1]:0\"\nroute = \"db\"\n\
         max_connections = {max_connections}\nhandshake_timeout = \"60s\"\n{}",
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
        "name = \"public\"\nfailover = \"on\"\nfailover_target = \"db2.example.net:3307\"\n",
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
