//! Topology and routing with real servers: the monitor classifies backends,
//! `route = "primary"` follows the primary through a switchover (closing
//! sessions on the demoted server), `replica` routing, no primary with two
//! writable servers, the admin pin, a killed backend marked down, and the
//! monitor and sessions going through outbound mTLS to another sidecar.
//!
//! Tests wait on the topology's own channels (monitor rounds, primary
//! changes), never on time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::client::server_error_code;
use common::mariadb::MariaDb;
use common::pki::Pki;
use common::proxy::{mtls_config, tls_section, TestProxy};
use mysql_async::prelude::*;
use mysql_async::Conn;
use portcullis::monitor::Topology;
use serde_json::json;

const APP: &str = "app";
const APP_PASS: &str = "app-pass";

/// Accounts on a server that others replicate from (binlogged, so its
/// replicas get them): the application, replication and the monitor.
async fn create_accounts(db: &MariaDb) {
    for sql in [
        format!("CREATE USER '{APP}'@'%' IDENTIFIED BY '{APP_PASS}'"),
        format!("GRANT ALL ON *.* TO '{APP}'@'%'"),
        "CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-pass'".into(),
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'".into(),
        "CREATE USER 'mon'@'%' IDENTIFIED BY 'mon-pass'".into(),
        "GRANT SLAVE MONITOR, REPLICATION CLIENT ON *.* TO 'mon'@'%'".into(),
    ] {
        db.exec(&sql).await;
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

fn config(db1: &str, db2: &str, listeners: &str, pki: &Pki) -> String {
    format!(
        r#"[monitor]
user = "mon"
password = "mon-pass"
interval = "100ms"

[admin]
address = "unix:admin.sock"

[[backend]]
name = "db1"
address = {db1:?}

[[backend]]
name = "db2"
address = {db2:?}

{}"#,
        listeners.replace("TLS", &tls_section(pki, "required"))
    )
}

const RW_RO: &str = r#"[[listener]]
name = "rw"
address = "[::1]:0"
route = "primary"
primary_wait = "300ms"
TLS
[[listener]]
name = "ro"
address = "[::1]:0"
route = "replica"
TLS
"#;

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

/// Waits for `n` more monitor rounds.
async fn rounds(proxy: &TestProxy, n: u64) {
    let t = topology(proxy);
    let mut rx = t.watch_rounds();
    let target = *rx.borrow() + n;
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|r| *r >= target))
        .await
        .expect("monitor rounds")
        .unwrap();
}

async fn server_id(
    proxy: &TestProxy,
    pki: &Pki,
    listener: &str,
) -> Result<u64, mysql_async::Error> {
    let mut c = Conn::new(proxy.app_opts(pki, listener, APP, APP_PASS)).await?;
    Ok(c.query_first("SELECT @@server_id").await?.unwrap())
}

#[tokio::test]
async fn primary_route_follows_a_switchover_and_closes_sessions_on_the_old_primary() {
    let pki = Pki::new();
    let db1 = MariaDb::builder().log_bin(1).start().await;
    let db2 = MariaDb::builder().log_bin(2).start().await;
    create_accounts(&db1).await;
    replicate(&db2, &db1, true).await;
    let proxy = TestProxy::start(&config(
        &db1.unix_address(),
        &db2.unix_address(),
        RW_RO,
        &pki,
    ))
    .await;

    primary_becomes(&proxy, Some("db1")).await;
    assert_eq!(server_id(&proxy, &pki, "rw").await.unwrap(), 1);
    assert_eq!(server_id(&proxy, &pki, "ro").await.unwrap(), 2);
    let mut on_old = Conn::new(proxy.app_opts(&pki, "rw", APP, APP_PASS))
        .await
        .unwrap();
    let topo = proxy.admin("GET", "/topology", "").await.json();
    assert_eq!(topo["primary"], "db1", "{topo}");
    assert_eq!(topo["backends"][1]["role"], "replica", "{topo}");
    assert_eq!(topo["backends"][1]["replicating"], true, "{topo}");

    // Switchover by hand: the old primary goes read-only, the replica stops
    // replicating and becomes writable, the old primary replicates from it.
    db1.exec("SET GLOBAL read_only = 1").await;
    db2.exec("STOP SLAVE").await;
    db2.exec("SET GLOBAL read_only = 0").await;
    replicate(&db1, &db2, false).await;
    primary_becomes(&proxy, Some("db2")).await;

    let closed = on_old.query_first::<u64, _>("SELECT @@server_id").await;
    assert!(
        closed.is_err(),
        "the session on the demoted primary is closed: {closed:?}"
    );
    assert_eq!(
        server_id(&proxy, &pki, "rw").await.unwrap(),
        2,
        "new connections reach the new primary"
    );
    rounds(&proxy, 1).await;
    assert_eq!(
        server_id(&proxy, &pki, "ro").await.unwrap(),
        1,
        "the old primary is the replica now"
    );
    let m = proxy.admin("GET", "/metrics", "").await.body;
    assert!(
        m.contains("portcullis_backend_role{backend=\"db2\",role=\"primary\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_backend_role{backend=\"db1\",role=\"replica\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "portcullis_connections_total{listener=\"rw\",outcome=\"closed_primary_changed\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn two_writable_servers_mean_no_primary_until_pinned_and_a_killed_one_is_down() {
    let pki = Pki::new();
    let db1 = MariaDb::builder().arg("--server-id=1").start().await;
    let db2 = MariaDb::builder().arg("--server-id=2").start().await;
    for db in [&db1, &db2] {
        create_accounts(db).await;
    }
    let mut db1 = db1;
    let redirect = r#"[[listener]]
name = "old"
address = "[::1]:0"
route = "db1"
failover = "all"
failover_target = "primary"
TLS
"#;
    let toml = config(
        &db1.unix_address(),
        &db2.unix_address(),
        &format!("{RW_RO}{redirect}"),
        &pki,
    )
    .replace(
        "name = \"db2\"\n",
        r#"name = "db2"
advertise = "db2.example.net:3307"
"#,
    );
    let proxy = TestProxy::start(&toml).await;
    rounds(&proxy, 2).await;
    let t = topology(&proxy);
    assert_eq!(t.primary(), None, "{:?}", t.status());

    let err = server_id(&proxy, &pki, "rw").await.expect_err("no primary");
    assert_eq!(server_error_code(&err), Some(1105), "{err}");
    assert!(
        err.to_string()
            .contains("no primary is available (waited 300ms)"),
        "{err}"
    );
    let err = server_id(&proxy, &pki, "ro").await.expect_err("no replica");
    assert!(err.to_string().contains("no healthy replica"), "{err}");
    let err = server_id(&proxy, &pki, "old")
        .await
        .expect_err("nowhere to redirect");
    assert_eq!(server_error_code(&err), Some(1105), "{err}");
    assert!(
        err.to_string()
            .contains("no primary is known to redirect to"),
        "{err}"
    );

    // The operator pins db2: it is the primary whatever the monitor sees.
    let r = proxy
        .admin("POST", "/primary", r#"{"backend": "db2"}"#)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["pinned"], "db2");
    assert_eq!(server_id(&proxy, &pki, "rw").await.unwrap(), 2);
    // failover_target = "primary": sent to the pinned primary's advertise.
    let err = server_id(&proxy, &pki, "old")
        .await
        .expect_err("redirected");
    assert_eq!(server_error_code(&err), Some(4196), "{err}");
    assert!(err.to_string().contains("|db2.example.net:3307"), "{err}");
    let r = proxy
        .admin("POST", "/primary", r#"{"backend": "db9"}"#)
        .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "no backend named \"db9\""}))
    );
    let r = proxy.admin("DELETE", "/primary", "").await;
    assert_eq!(r.json()["pinned"], serde_json::Value::Null, "{r:?}");
    assert_eq!(t.primary(), None);

    // A backend killed: down, with the reason; the other one is then the
    // only writable server and so the primary.
    db1.stop();
    primary_becomes(&proxy, Some("db2")).await;
    let s = t.status();
    assert_eq!(s.backends[0].health.role.label(), "down", "{s:?}");
    assert!(s.backends[0].health.error.is_some(), "{s:?}");
    assert_eq!(server_id(&proxy, &pki, "rw").await.unwrap(), 2);
}

#[tokio::test]
async fn monitor_and_sessions_reach_a_remote_primary_through_its_sidecar() {
    let pki = Pki::new();
    let db = MariaDb::builder().arg("--server-id=7").start().await;
    create_accounts(&db).await;
    let sidecar = TestProxy::start(&mtls_config(&pki, &db.unix_address())).await;
    let remote = format!("[::1]:{}", sidecar.port("public"));
    let toml = format!(
        r#"[monitor]
user = "mon"
password = "mon-pass"
interval = "100ms"

[[backend]]
name = "far"
address = {remote:?}
[backend.tls]
ca = {:?}
cert = {:?}
key = {:?}

[[listener]]
name = "rw"
address = "[::1]:0"
route = "primary"
{}"#,
        pki.ca,
        pki.repl.cert,
        pki.repl.key,
        tls_section(&pki, "required")
    );
    let proxy = TestProxy::start(&toml).await;
    primary_becomes(&proxy, Some("far")).await;
    assert_eq!(server_id(&proxy, &pki, "rw").await.unwrap(), 7);
}
