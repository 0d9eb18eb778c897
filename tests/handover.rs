//! Hand-over of the listeners (issue 24): `portcullis run --take-over`
//! beside a running portcullis takes its listening sockets over the
//! control socket, serves on them at once, and the old process stops
//! accepting, drains and exits. The real binary, a real mariadbd, mutual
//! TLS clients through mysql_async.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::binary::RunningBinary;
use common::client::{socket_opts, tls_opts};
use common::mariadb::{free_port, short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::tls_section;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use tokio::task::JoinSet;

/// Where one generation of the proxy listens: `public` always on the
/// same port, plus `extra` listeners (one more per hand-over).
struct Layout {
    dir: PathBuf,
    public: u16,
    extra: Vec<u16>,
    backend: String,
    /// The `[listener.tls]` lines (mutual TLS).
    tls: String,
}

impl Layout {
    /// Free ports for `public` and `extras` extra listeners, in `dir`.
    fn new(dir: &Path, pki: &Pki, backend: String, extras: usize) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            public: free_port(),
            extra: (0..extras).map(|_| free_port()).collect(),
            backend,
            tls: tls_section(pki, "required"),
        }
    }

    /// The config of generation `round`: `round` extra listeners, and
    /// `workers` alternating between 1 and 2.
    fn config(&self, round: usize) -> String {
        let tls = &self.tls;
        let mut c = format!(
            r#"control_socket = "{dir}/control.sock"
shutdown_timeout = "60s"
workers = {workers}

[[backend]]
name = "db"
address = "{backend}"

[[listener]]
name = "public"
address = "[::1]:{public}"
route = "db"
{DOOR}{tls}"#,
            dir = self.dir.display(),
            workers = 1 + round % 2,
            backend = self.backend,
            public = self.public,
        );
        for (i, port) in self.extra.iter().take(round).enumerate() {
            c.push_str(&format!(
                r#"
[[listener]]
name = "extra{i}"
address = "[::1]:{port}"
route = "db"
{DOOR}{tls}"#
            ));
        }
        c.push_str(&format!(
            r#"
[admin]
address = "unix:{}/admin.sock"
"#,
            self.dir.display()
        ));
        c
    }

    fn write(&self, round: usize) -> PathBuf {
        let path = self.dir.join(format!("gen{round}.toml"));
        std::fs::write(&path, self.config(round)).unwrap();
        path
    }
}

/// Every client comes from ::1: room at the door for all of them at once
/// (the default per-source cap, 16, would close the oldest waiting ones).
const DOOR: &str = r#"max_unauthenticated = 512
max_unauthenticated_per_source = 512
"#;

/// What the clients saw.
#[derive(Default)]
struct Counts {
    connections: AtomicU64,
    short_queries: AtomicU64,
    sessions: AtomicU64,
    session_queries: AtomicU64,
    failures: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counts {
    fn failed(&self, what: &str, e: &mysql_async::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(format!("{what}: {e}"));
        }
    }
}

/// One short client: connect with mutual TLS, one query, disconnect.
async fn short_client(opts: Opts, counts: Arc<Counts>) {
    let mut conn = match Conn::new(opts).await {
        Ok(c) => c,
        Err(e) => return counts.failed("connect", &e),
    };
    counts.connections.fetch_add(1, Ordering::Relaxed);
    match conn.query_first::<u64, _>("SELECT 1").await {
        Ok(Some(1)) => {
            counts.short_queries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(other) => counts.failed(
            "query",
            &mysql_async::Error::Other(format!("{other:?}").into()),
        ),
        Err(e) => counts.failed("query", &e),
    }
    if let Err(e) = conn.disconnect().await {
        counts.failed("disconnect", &e);
    }
}

/// One long session after another until `stop`: each runs 200 queries on
/// one connection (a few seconds, far within the 60 s drain deadline).
async fn long_sessions(opts: Opts, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut conn = match Conn::new(opts.clone()).await {
            Ok(c) => c,
            Err(e) => {
                counts.failed("session connect", &e);
                continue;
            }
        };
        counts.sessions.fetch_add(1, Ordering::Relaxed);
        for i in 0..200u64 {
            match conn.query_first::<u64, _>(format!("SELECT {i}")).await {
                Ok(Some(v)) if v == i => {
                    counts.session_queries.fetch_add(1, Ordering::Relaxed);
                }
                Ok(other) => counts.failed(
                    "session query",
                    &mysql_async::Error::Other(format!("{other:?} for {i}").into()),
                ),
                Err(e) => {
                    counts.failed("session query", &e);
                    break;
                }
            }
        }
        if let Err(e) = conn.disconnect().await {
            counts.failed("session disconnect", &e);
        }
    }
}

/// The client loop: a new short client every 5 ms (200 per second, at
/// most 64 at once), until `stop`.
async fn client_loop(opts: Opts, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clients = JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (opts, counts) = (opts.clone(), counts.clone());
        clients.spawn(async move {
            short_client(opts, counts).await;
            drop(permit);
        });
        while clients.try_join_next().is_some() {}
    }
    while clients.join_next().await.is_some() {}
}

/// Waits until `counts` has `more` further short connections than `from`.
async fn until_more_connections(counts: &Counts, more: u64) {
    let target = counts.connections.load(Ordering::Relaxed) + more;
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while counts.connections.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "the client loop stalled: {:?}",
        counts.errors.lock().unwrap()
    );
}

fn opts(pki: &Pki, port: u16) -> Opts {
    tls_opts(
        "::1",
        port,
        NATIVE_USER,
        NATIVE_PASS,
        &pki.ca,
        Some(&pki.app),
    )
}

/// Done-when test of issue 24: 200 mutual-TLS connections per second,
/// each running a query, and 20 long sessions running queries in a loop,
/// while the running portcullis is replaced five times in a row by a new
/// process with a changed config (one more listener, `workers` changed):
/// no connection refused or reset, no query failed, each old process
/// exits, and the last one's descriptors come back to what the same
/// config holds when started afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hand_overs_under_load_lose_nothing() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("ho");
    let layout = Layout::new(dir.path(), &pki, db.tcp_addr().to_string(), 5);
    let mut running = RunningBinary::start(&layout.write(0)).await;
    let first_fds = running.open_fds();

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = JoinSet::new();
    load.spawn(client_loop(
        opts(&pki, layout.public),
        counts.clone(),
        stop.clone(),
    ));
    for _ in 0..20 {
        load.spawn(long_sessions(
            opts(&pki, layout.public),
            counts.clone(),
            stop.clone(),
        ));
    }
    until_more_connections(&counts, 100).await;

    for round in 1..=5 {
        let config = layout.write(round);
        let next = RunningBinary::take_over(&config).await;
        let serving = next
            .startup
            .iter()
            .find(|e| e["message"] == "serving")
            .unwrap();
        assert_eq!(serving["listeners"], 1 + round as u64, "{serving}");
        assert_eq!(serving["workers"], 1 + (round % 2) as u64, "{serving}");
        let old = std::mem::replace(&mut running, next);
        running.wait_for_log("took over").await;
        assert_eq!(
            old.wait_exit().await,
            Some(0),
            "round {round}: the old process exits"
        );
        // The listener added in this generation serves.
        let mut c = Conn::new(opts(&pki, layout.extra[round - 1]))
            .await
            .unwrap();
        assert_eq!(c.query_first::<u64, _>("SELECT 7").await.unwrap(), Some(7));
        c.disconnect().await.unwrap();
        until_more_connections(&counts, 100).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = load.join_next().await {
        r.unwrap();
    }

    let (connections, short_queries, sessions, session_queries, failures) = (
        counts.connections.load(Ordering::Relaxed),
        counts.short_queries.load(Ordering::Relaxed),
        counts.sessions.load(Ordering::Relaxed),
        counts.session_queries.load(Ordering::Relaxed),
        counts.failures.load(Ordering::Relaxed),
    );
    // A fresh process on the same config (its own ports and sockets).
    let fresh_dir = short_tempdir("hf");
    let fresh_layout = Layout::new(fresh_dir.path(), &pki, layout.backend.clone(), 5);
    let fresh = RunningBinary::start(&fresh_layout.write(5)).await;
    // Both settle (the last sessions end, the start-up probe of the
    // backend closes its connection).
    let (mut last_fds, mut fresh_fds) = (running.open_fds(), fresh.open_fds());
    for _ in 0..200 {
        if last_fds == fresh_fds {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        (last_fds, fresh_fds) = (running.open_fds(), fresh.open_fds());
    }
    eprintln!(
        "hand-over load: {connections} short connections ({short_queries} queries), {sessions} long sessions ({session_queries} queries), {failures} failures; fds: first process {first_fds}, last after load {last_fds}, fresh on the same config {fresh_fds}"
    );
    assert_eq!(failures, 0, "{:?}", counts.errors.lock().unwrap());
    assert_eq!(short_queries, connections);
    assert!(
        sessions >= 20 && session_queries >= 20 * 200,
        "{sessions} {session_queries}"
    );
    assert_eq!(
        last_fds, fresh_fds,
        "descriptors of the last process after the load"
    );
    running.signal("TERM");
    assert_eq!(running.wait_exit().await, Some(0));
    drop(fresh);
}

/// A new config that fails `check` changes nothing: the take-over exits 1
/// naming the problem at its line, and the running process keeps serving
/// (it was never asked for its sockets). A config without
/// `control_socket` cannot take over, and says why.
#[tokio::test]
async fn a_config_that_fails_check_changes_nothing() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("hc");
    let layout = Layout::new(dir.path(), &pki, db.tcp_addr().to_string(), 1);
    let mut running = RunningBinary::start(&layout.write(0)).await;
    let control = dir.path().join("control.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&control).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the control socket is the owner's only"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, layout.config(1).replace("workers = 2", "workers = 0")).unwrap();
    let (code, stderr) = take_over(&bad);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3: workers = 0 is out of range", bad.display()))
            && stderr.contains("cannot take over (nothing changed): 1 problem(s)"),
        "{stderr}"
    );

    let plain = dir.path().join("plain.toml");
    std::fs::write(
        &plain,
        layout
            .config(1)
            .replace("control_socket", "#control_socket"),
    )
    .unwrap();
    let (code, stderr) = take_over(&plain);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("has no control_socket"), "{stderr}");

    // Still serving, and never offered anything.
    let mut c = Conn::new(opts(&pki, layout.public)).await.unwrap();
    assert_eq!(c.query_first::<u64, _>("SELECT 1").await.unwrap(), Some(1));
    c.disconnect().await.unwrap();
    running.signal("TERM");
    let events = running.events_until("stopped").await;
    assert!(
        !events.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("hand-over"))),
        "{events:?}"
    );
}

fn take_over(config: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--take-over", "--config"])
        .arg(config)
        .output()
        .expect("run portcullis");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Item 3: what a reload cannot apply — a route, `idle_timeout`,
/// `max_connections`, `workers`, `[monitor]`, a listener added — the
/// reload names as applying at the next hand-over; after one, the new
/// process runs the file: `POST /reload` finds nothing left, `/status`
/// shows the new route and limit, `/topology` answers (the monitor runs),
/// the new listener routes to `any`, a Unix-socket listener keeps its
/// socket file, a removed listener is closed, and a session open across
/// the hand-over still runs its queries.
#[tokio::test]
async fn a_hand_over_applies_what_a_reload_cannot() {
    use common::http::http;
    use portcullis::config::ListenAddr;
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("hr");
    let (public, extra, gone) = (free_port(), free_port(), free_port());
    let admin = ListenAddr::Unix(dir.path().join("admin.sock"));
    let local = dir.path().join("local.sock");
    let config = |changed: bool| {
        let mut c = format!(
            r#"control_socket = "{dir}/control.sock"
workers = {workers}

[[backend]]
name = "db"
address = "{backend}"

[[backend]]
name = "db2"
address = "{backend}"

[[listener]]
name = "public"
address = "[::1]:{public}"
route = "{route}"
idle_timeout = "{idle}"
max_connections = {max}
{tls}
[[listener]]
name = "local"
address = "unix:{dir}/local.sock"
route = "db"

[admin]
address = "unix:{dir}/admin.sock"
"#,
            dir = dir.path().display(),
            workers = if changed { 2 } else { 1 },
            backend = db.tcp_addr(),
            route = if changed { "db2" } else { "db" },
            idle = if changed { "1h" } else { "0s" },
            max = if changed { 100 } else { 128 },
            tls = tls_section(&pki, "required"),
        );
        if changed {
            c.push_str(&format!(
                r#"
[monitor]
user = "{NATIVE_USER}"
password = "{NATIVE_PASS}"

[[listener]]
name = "extra"
address = "[::1]:{extra}"
route = "any"
{}"#,
                tls_section(&pki, "required")
            ));
        } else {
            c.push_str(&format!(
                r#"
[[listener]]
name = "gone"
address = "[::1]:{gone}"
route = "db"
{}"#,
                tls_section(&pki, "required")
            ));
        }
        c
    };
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config(false)).unwrap();
    let running = RunningBinary::start(&path).await;
    let mut open = Conn::new(opts(&pki, public)).await.unwrap();
    assert_eq!(http(&admin, "GET", "/topology", None).await.status, 404);
    let local_inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&local).unwrap().ino()
    };

    std::fs::write(&path, config(true)).unwrap();
    let r = http(&admin, "POST", "/reload", None).await;
    assert_eq!(r.status, 422, "{r:?}");
    let whats: Vec<String> = r.json()["not_applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert!(
                n["why"].as_str().unwrap().contains("the next hand-over"),
                "{n}"
            );
            n["what"].as_str().unwrap().to_string()
        })
        .collect();
    for what in [
        "workers",
        "listener \"public\" route",
        "listener \"public\" idle_timeout",
        "listener \"public\" max_connections",
        "listener \"extra\"",
        "[monitor]",
    ] {
        assert!(whats.iter().any(|w| w == what), "{what} not in {whats:?}");
    }

    let next = RunningBinary::take_over(&path).await;
    // A session open across the hand-over goes on on the draining process
    // until it ends; then that process exits.
    for i in 0..10u64 {
        let v = open.query_first::<u64, _>(format!("SELECT {i}")).await;
        assert_eq!(v.unwrap(), Some(i));
    }
    open.disconnect().await.unwrap();
    assert_eq!(running.wait_exit().await, Some(0));
    let r = http(&admin, "POST", "/reload", None).await;
    assert_eq!(r.status, 200, "the file is in force: {r:?}");
    assert!(r.json().get("not_applied").is_none(), "{r:?}");
    let status = http(&admin, "GET", "/status", None).await.json();
    let public_status = &status["listeners"][0];
    assert_eq!(
        (&public_status["route"], &public_status["max_connections"]),
        (&serde_json::json!("db2"), &serde_json::json!(100)),
        "{status}"
    );
    assert_eq!(status["listeners"].as_array().unwrap().len(), 3, "{status}");
    // The Unix-socket listener was handed over, not unlinked and bound
    // again: its file is the one the first process bound, and serves.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&local).unwrap().ino(), local_inode);
    let mut c = Conn::new(socket_opts(&local, NATIVE_USER, NATIVE_PASS))
        .await
        .unwrap();
    assert_eq!(c.query_first::<u64, _>("SELECT 4").await.unwrap(), Some(4));
    c.disconnect().await.unwrap();
    // The listener the new config removed was closed with the old process.
    let refused = tokio::net::TcpStream::connect(("::1", gone)).await;
    assert_eq!(
        refused.map(drop).unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert_eq!(http(&admin, "GET", "/topology", None).await.status, 200);
    // The monitor runs: once it has checked every backend, the new
    // listener's `any` route has one.
    let checked = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let topology = http(&admin, "GET", "/topology", None).await.json();
            let backends = topology["backends"].as_array().unwrap().clone();
            if backends.iter().all(|b| !b["checked_at_utc"].is_null()) {
                return backends;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(checked.is_ok(), "the monitor never checked the backends");
    let mut c = Conn::new(opts(&pki, extra)).await.unwrap();
    assert_eq!(c.query_first::<u64, _>("SELECT 2").await.unwrap(), Some(2));
    c.disconnect().await.unwrap();
    drop(next);
}

/// The upgrade path of docs/deployment.md: SIGUSR2 makes the running
/// process start `run --take-over` on its own config file (changed since:
/// one more listener) with the binary at its path; the successor takes
/// over, the old process exits, and both listeners serve.
#[tokio::test]
async fn sigusr2_starts_a_successor_that_takes_over() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("hu");
    let layout = Layout::new(dir.path(), &pki, db.tcp_addr().to_string(), 1);
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, layout.config(0)).unwrap();
    let mut running = RunningBinary::start(&path).await;
    std::fs::write(&path, layout.config(1)).unwrap();
    running.signal("USR2");
    let started = running.wait_for_log("SIGUSR2: started a successor").await;
    let successor = started["pid"].as_u64().unwrap().to_string();
    // Not this test's child: killed by pid if the test fails half-way.
    let _guard = KillOnDrop(successor.clone());
    // The successor logs to the same stderr.
    running.wait_for_log("took over").await;
    assert_eq!(running.wait_exit().await, Some(0));
    for port in [layout.public, layout.extra[0]] {
        let mut c = Conn::new(opts(&pki, port)).await.unwrap();
        assert_eq!(c.query_first::<u64, _>("SELECT 3").await.unwrap(), Some(3));
        c.disconnect().await.unwrap();
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &successor])
        .status()
        .unwrap();
    assert!(killed.success());
    let gone = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            // Gone, or a zombie nobody reaped yet.
            match std::fs::read_to_string(format!("/proc/{successor}/status")) {
                Ok(s) if !s.contains("State:\tZ") => {}
                _ => return,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the successor did not exit on SIGINT");
}

struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The control socket is a door: a peer of another uid is refused before
/// anything is read, even when the file's mode would let it connect (it is
/// 0600). Needs root, to connect as `nobody`; skipped otherwise.
#[tokio::test]
async fn a_peer_of_another_user_gets_nothing_from_the_control_socket() {
    if portcullis::os_user::effective().as_ref().map(|u| u.0) != Some(0) {
        eprintln!("skipped: needs root to connect as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let dir = short_tempdir("hp");
    let layout = Layout::new(dir.path(), &pki, "127.0.0.1:9".into(), 0);
    let mut running = RunningBinary::start(&layout.write(0)).await;
    let control = dir.path().join("control.sock");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .args(["status", "--admin"])
        .arg(format!("unix:{}", control.display()))
        .output()
        .expect("run setpriv");
    assert!(!out.status.success(), "{out:?}");
    let refused = running
        .wait_for_log("control socket: refused a peer of another user")
        .await;
    assert_eq!(refused["uid"], 65534, "{refused}");
    running.signal("TERM");
    let events = running.events_until("stopped").await;
    assert!(
        !events
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("offered"))),
        "{events:?}"
    );
}
