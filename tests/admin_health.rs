//! Health a VIP can follow (issue 22), with real servers: `/health` fails
//! while a `primary`-routed listener has had no primary for longer than
//! its `primary_wait` (two writable servers, or none) and recovers after
//! the switchover; `/health/primary` moves from the old primary's sidecar
//! to the new one's with a real switchover between two replicating
//! mariadbd; `/health/listener/NAME` says whether that listener has
//! somewhere to send a new connection.
//!
//! Role changes are waited for on the topology's own channels (primary
//! changes, monitor rounds). Only the `primary_wait` grace is waited out by
//! polling `/health`, since it is time itself.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{http, Reply};
use common::mariadb::MariaDb;
use common::proxy::TestProxy;
use portcullis::monitor::Topology;
use portcullis::Shutdown;
use serde_json::json;

/// Accounts on a server others replicate from: replication and the
/// monitor.
async fn create_accounts(db: &MariaDb) {
    for sql in [
        "CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-pass'",
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'",
        "CREATE USER 'mon'@'%' IDENTIFIED BY 'mon-pass'",
        "GRANT SLAVE MONITOR, REPLICATION CLIENT ON *.* TO 'mon'@'%'",
    ] {
        db.exec(sql).await;
    }
}

/// Makes `replica` replicate from `primary` (from `primary`'s position now,
/// or from its first binlog), read-only, and waits until it caught up.
async fn replicate(replica: &MariaDb, primary: &MariaDb, from_start: bool) {
    let (file, pos) = if from_start {
        ("mariadb-bin.000001".to_string(), 4)
    } else {
        primary.binlog_position().await
    };
    replica
        .exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', MASTER_PASSWORD='repl-pass', MASTER_USE_GTID=no, MASTER_LOG_FILE='{file}', MASTER_LOG_POS={pos}",
            primary.port()
        ))
        .await;
    replica.exec("START SLAVE").await;
    replica.exec("SET GLOBAL read_only = 1").await;
    let waited = replica
        .wait_caught_up(primary, Duration::from_secs(60))
        .await;
    assert!(
        waited.is_some_and(|w| w >= 0),
        "replica caught up: {waited:?}"
    );
}

/// The switchover an orchestrator does: the old primary read-only, the
/// replica stops replicating and becomes writable, the old primary
/// replicates from it.
async fn switchover(old: &MariaDb, new: &MariaDb) {
    old.exec("SET GLOBAL read_only = 1").await;
    new.exec("STOP SLAVE").await;
    new.exec("SET GLOBAL read_only = 0").await;
    replicate(old, new, false).await;
}

fn topology(proxy: &TestProxy) -> Arc<Topology> {
    proxy
        .state()
        .topology
        .clone()
        .expect("[monitor] configured")
}

async fn primary_becomes(proxy: &TestProxy, want: Option<&str>) {
    let t = topology(proxy);
    let mut rx = t.watch_primary();
    tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|p| p.as_deref() == want),
    )
    .await
    .unwrap_or_else(|_| panic!("primary never became {want:?}: {:?}", t.status()))
    .unwrap();
}

/// Waits until the monitor has finished `round`.
async fn round_done(proxy: &TestProxy, round: u64) {
    let mut rx = topology(proxy).watch_rounds();
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|r| *r >= round))
        .await
        .expect("monitor rounds")
        .unwrap();
}

fn rounds_now(proxy: &TestProxy) -> u64 {
    *topology(proxy).watch_rounds().borrow()
}

async fn get(proxy: &TestProxy, path: &str) -> Reply {
    http(&proxy.admin_addr(), "GET", path, None).await
}

/// Polls `/health` until it answers `status` (the `primary_wait` grace
/// passes with time, which offers nothing to wait on).
async fn health_becomes(proxy: &TestProxy, status: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(proxy, "/health").await;
        if r.status == status {
            return r;
        }
        assert!(Instant::now() < deadline, "/health never {status}: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn error(r: &Reply) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

const NEVER_ELECTS: &str = "two or more writable backends that do not replicate (db1, db2); portcullis never elects: make all but one read-only, or pin one with POST /primary";

#[tokio::test]
async fn health_fails_without_a_primary_and_recovers_after_the_switchover() {
    let db1 = MariaDb::builder().log_bin(1).start().await;
    let db2 = MariaDb::builder().log_bin(2).start().await;
    for db in [&db1, &db2] {
        create_accounts(db).await;
    }
    let toml = format!(
        r#"[monitor]
user = "mon"
password = "mon-pass"
interval = "100ms"

[admin]
address = "unix:admin.sock"

[[backend]]
name = "db1"
address = {:?}

[[backend]]
name = "db2"
address = {:?}

[[listener]]
name = "rw"
address = "127.0.0.1:0"
route = "primary"
primary_wait = "300ms"

[[listener]]
name = "local"
address = "127.0.0.1:0"
route = "db1"
"#,
        db1.unix_address(),
        db2.unix_address()
    );
    let proxy = TestProxy::start(&toml).await;
    let rw_overdue = |why: &str| {
        format!("listener \"rw\" routes to the primary and none has been known for longer than its primary_wait (300ms): {why}")
    };

    // Two writable servers: no primary, and once primary_wait has passed,
    // /health says so.
    round_done(&proxy, 2).await;
    assert_eq!(topology(&proxy).primary(), None);
    let r = health_becomes(&proxy, 503).await;
    assert_eq!(r.json(), json!({ "error": rw_overdue(NEVER_ELECTS) }));
    let r = get(&proxy, "/health/listener/rw").await;
    assert_eq!(
        (r.status, error(&r)),
        (503, format!("no primary: {NEVER_ELECTS}"))
    );
    let r = get(&proxy, "/health/listener/local").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok: new connections go to db1"),
        "{r:?}"
    );
    // Both backends are on Unix sockets: which one this proxy fronts must
    // be named.
    let r = get(&proxy, "/health/primary").await;
    assert_eq!(
        (r.status, error(&r)),
        (
            400,
            "several backends are on Unix sockets (db1, db2): name one with ?backend=NAME".into()
        )
    );
    let r = get(&proxy, "/health/primary?backend=db1").await;
    assert_eq!(
        (r.status, error(&r)),
        (
            503,
            format!("db1 is not the primary (primary); there is none: {NEVER_ELECTS}")
        )
    );
    let r = get(&proxy, "/health/primary?backend=db9").await;
    assert_eq!(
        (r.status, error(&r)),
        (404, "no backend named \"db9\"".into())
    );

    // db2 replicates from db1: db1 is the primary, health is back at once.
    replicate(&db2, &db1, false).await;
    primary_becomes(&proxy, Some("db1")).await;
    let r = get(&proxy, "/health").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    let r = get(&proxy, "/health/listener/rw").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok: new connections go to the primary, db1"),
        "{r:?}"
    );

    // The primary goes read-only too: none writable.
    db1.exec("SET GLOBAL read_only = 1").await;
    primary_becomes(&proxy, None).await;
    let r = health_becomes(&proxy, 503).await;
    assert_eq!(
        r.json(),
        json!({ "error": rw_overdue("no writable backend (db1 replica, db2 replica)") })
    );

    // The switchover completes: db2 is the primary, health is 200 again.
    db2.exec("STOP SLAVE").await;
    db2.exec("SET GLOBAL read_only = 0").await;
    primary_becomes(&proxy, Some("db2")).await;
    let r = get(&proxy, "/health").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    let r = get(&proxy, "/health/primary?backend=db2").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok: db2 is the primary"),
        "{r:?}"
    );
    proxy.stop(Shutdown::Now).await;
}

/// A sidecar in front of each server: its own server on a Unix socket,
/// the other one over TCP; both watched by the monitor.
fn sidecar(local: (&str, &MariaDb), remote: (&str, &MariaDb)) -> String {
    let mut backends = [
        (local.0, local.1.unix_address()),
        (remote.0, format!("127.0.0.1:{}", remote.1.port())),
    ];
    backends.sort();
    let backends: String = backends
        .iter()
        .map(|(n, a)| {
            format!(
                r#"[[backend]]
name = "{n}"
address = {a:?}

"#
            )
        })
        .collect();
    format!(
        r#"[monitor]
user = "mon"
password = "mon-pass"
interval = "100ms"

[admin]
address = "127.0.0.1:0"

{backends}[[listener]]
name = "public"
address = "127.0.0.1:0"
route = "{}"
"#,
        local.0
    )
}

#[tokio::test]
async fn health_primary_follows_a_switchover_from_one_sidecar_to_the_other() {
    let db1 = MariaDb::builder().log_bin(1).start().await;
    let db2 = MariaDb::builder().log_bin(2).start().await;
    create_accounts(&db1).await;
    replicate(&db2, &db1, true).await;
    let on1 = TestProxy::start(&sidecar(("db1", &db1), ("db2", &db2))).await;
    let on2 = TestProxy::start(&sidecar(("db2", &db2), ("db1", &db1))).await;
    for p in [&on1, &on2] {
        primary_becomes(p, Some("db1")).await;
    }
    // Each sidecar fronts the backend on its Unix socket.
    for (p, fronted) in [(&on1, "db1"), (&on2, "db2")] {
        let status = get(p, "/status").await.json();
        assert_eq!(
            status["admin"]["health_primary_backend"], fronted,
            "{status}"
        );
    }
    let r = get(&on1, "/health/primary").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok: db1 is the primary"),
        "{r:?}"
    );
    let r = get(&on2, "/health/primary").await;
    assert_eq!(
        (r.status, error(&r)),
        (
            503,
            "db2 is not the primary (replica); the primary is db1".into()
        )
    );
    let r = get(&on1, "/health/primary?backend=db2").await;
    assert_eq!(r.status, 503, "{r:?}");

    switchover(&db1, &db2).await;
    // The first monitor round that starts after the switchover is done
    // (the round in progress may have read the old state) moves the answer
    // on both sidecars: nothing between the monitor and the answer lags.
    let after = [rounds_now(&on1) + 2, rounds_now(&on2) + 2];
    round_done(&on1, after[0]).await;
    round_done(&on2, after[1]).await;
    let r = get(&on2, "/health/primary").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "ok: db2 is the primary"),
        "{r:?}"
    );
    let r = get(&on1, "/health/primary").await;
    assert_eq!(
        (r.status, error(&r)),
        (
            503,
            "db1 is not the primary (replica); the primary is db2".into()
        )
    );
    let r = get(&on1, "/health/primary?backend=db2").await;
    assert_eq!(r.status, 200, "{r:?}");
    // Plain /health does not depend on which node is primary.
    for p in [&on1, &on2] {
        let r = get(p, "/health").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    }
    on1.stop(Shutdown::Now).await;
    on2.stop(Shutdown::Now).await;
}
