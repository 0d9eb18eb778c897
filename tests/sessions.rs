//! `GET /sessions`, `DELETE /sessions/ID`, `portcullis sessions` and
//! `portcullis kill`, against a real mariadbd: who each open session is,
//! how many bytes it moved, filters, and killing one (a TLS close_notify,
//! outcome `killed_by_admin`), which needs the right to change the proxy.

mod common;

use common::http::http;
use common::mariadb::{MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{absent_backend, mtls_config, TestProxy};
use common::raw::{response_payload, RawClient};
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";

async fn start(db: &MariaDb, pki: &Pki) -> TestProxy {
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n\n{}",
        mtls_config(pki, &db.unix_address())
    );
    TestProxy::start_with_files(&config, &[("admin.token", &format!("{TOKEN}\n"))]).await
}

async fn sessions(proxy: &TestProxy, query: &str) -> Vec<Value> {
    let r = http(
        &proxy.admin_addr(),
        "GET",
        &format!("/sessions{query}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["sessions"].as_array().unwrap().clone()
}

/// The open sessions once `n` of them are relaying.
async fn relaying(proxy: &TestProxy, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let all = sessions(proxy, "").await;
        if all.iter().filter(|s| s["state"] == "relaying").count() == n {
            return all;
        }
        assert!(std::time::Instant::now() < deadline, "{all:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A raw client past authentication as `nopass` (no password), relaying.
async fn raw_session(proxy: &TestProxy, pki: &Pki) -> RawClient {
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    c.read_packet().await;
    c.start_tls(pki, Some(&pki.repl)).await.expect("TLS");
    c.write_packet(2, &response_payload("nopass", true)).await;
    let switch = c.read_packet().await;
    assert_eq!(switch[4], 0xfe, "the backend's auth switch");
    c.write_packet(4, b"").await;
    assert_eq!(c.read_packet().await[4], 0x00, "OK");
    c
}

fn cli(proxy: &TestProxy, args: &[&str]) -> std::process::Output {
    let admin = proxy.admin_addr().to_string();
    std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .args(["--admin", &admin, "--token-file"])
        .arg(proxy.dir().join("admin.token"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn sessions_are_listed_filtered_and_killed() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    db.exec("CREATE USER nopass@'%'").await;
    let proxy = start(&db, &pki).await;

    let mut app = Conn::new(proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS))
        .await
        .expect("app session");
    let long: String = app
        .query_first("SELECT REPEAT('x', 5000)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(long.len(), 5000);
    let mut repl = raw_session(&proxy, &pki).await;

    // The clients saw their OK a moment before their sessions start
    // relaying (and say who they are).
    let all = relaying(&proxy, 2).await;
    let by_user = |u: &str| {
        all.iter()
            .find(|s| s["user"] == u)
            .unwrap_or_else(|| panic!("{all:#?}"))
            .clone()
    };
    let a = by_user(NATIVE_USER);
    assert_eq!(a["listener"], "public");
    assert_eq!(a["backend"], "db");
    assert_eq!(a["route"], "db");
    assert_eq!(a["state"], "relaying");
    assert_eq!(a["serial"], format!("{:02x}", pki.app.serial));
    assert!(a["client"].as_str().unwrap().starts_with("[::1]:"), "{a}");
    assert!(a["id"].as_u64().unwrap() >= 0x8000_0000, "{a}");
    assert!(
        a["bytes_down"].as_u64().unwrap() > 5000,
        "the 5000-byte row: {a}"
    );
    assert!(a["bytes_up"].as_u64().unwrap() > 0, "{a}");
    let app_subject = a["subject"].as_str().unwrap().to_string();
    assert!(app_subject.contains("CN=app"), "{app_subject}");
    let r = by_user("nopass");
    assert!(r["subject"].as_str().unwrap().contains("CN=repl"), "{r}");

    // Filters: each given one must match.
    let ids = |v: Vec<Value>| -> Vec<u64> { v.iter().map(|s| s["id"].as_u64().unwrap()).collect() };
    let enc = portcullis::admin::sessions::percent_encode;
    assert_eq!(
        ids(sessions(&proxy, &format!("?subject={}", enc(&app_subject))).await),
        vec![a["id"].as_u64().unwrap()]
    );
    assert_eq!(
        ids(sessions(&proxy, "?user=nopass&listener=public").await),
        ids(vec![r.clone()])
    );
    assert!(sessions(&proxy, "?listener=other").await.is_empty());
    let bad = http(&proxy.admin_addr(), "GET", "/sessions?host=x", Some(TOKEN)).await;
    assert_eq!(bad.status, 400, "{bad:?}");

    // Killing needs the token.
    let path = format!("/sessions/{}", r["id"]);
    let refused = http(&proxy.admin_addr(), "DELETE", &path, None).await;
    assert_eq!(refused.status, 401, "{refused:?}");
    let killed = http(&proxy.admin_addr(), "DELETE", &path, Some(TOKEN)).await;
    assert_eq!(killed.status, 200, "{killed:?}");
    assert_eq!(killed.json()["killed"]["user"], "nopass");
    assert!(repl.closed_with_close_notify().await, "TLS closed cleanly");
    let again = http(&proxy.admin_addr(), "DELETE", &path, Some(TOKEN)).await;
    assert_eq!(again.status, 404, "{again:?}");

    // The CLI: the table, and kill by id.
    let out = cli(&proxy, &["sessions", "--user", NATIVE_USER]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].ends_with("STATE"),
        "{stdout}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[0], a["id"].to_string());
    assert_eq!(row[1], "public");
    assert_eq!(row.last(), Some(&"relaying"));
    let out = cli(&proxy, &["kill", &a["id"].to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("session {} killed\n", a["id"])
    );
    assert!(
        app.query_drop("SELECT 1").await.is_err(),
        "the killed session is gone"
    );
    let out = cli(&proxy, &["kill", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("answered 404 Not Found: no open session with id 7"),
        "{out:?}"
    );

    proxy.settle().await;
    assert!(sessions(&proxy, "").await.is_empty());
    let status = http(&proxy.admin_addr(), "GET", "/status", Some(TOKEN))
        .await
        .json();
    assert_eq!(
        status["listeners"][0]["outcomes"]["killed_by_admin"], 2,
        "{status}"
    );
}

/// A session still in the connection phase is listed (`handshake`) and
/// killed at once; a TCP admin API without a token refuses the kill.
#[tokio::test]
async fn a_session_in_handshake_is_killed_and_read_only_admin_refuses() {
    let pki = Pki::new();
    let (_d, backend) = absent_backend();
    let config = format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n{}",
        mtls_config(&pki, &backend)
    );
    let proxy = TestProxy::start(&config).await;
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    c.read_packet().await;
    let list = http(&proxy.admin_addr(), "GET", "/sessions", None)
        .await
        .json();
    let s = &list["sessions"][0];
    assert_eq!(s["state"], "handshake", "{list}");
    assert_eq!(s["user"], Value::Null);
    let path = format!("/sessions/{}", s["id"]);
    let r = http(&proxy.admin_addr(), "DELETE", &path, None).await;
    assert_eq!(r.status, 403, "read-only: {r:?}");
    proxy.state().listeners[0]
        .runtime
        .sessions
        .get(s["id"].as_u64().unwrap() as u32)
        .expect("still open")
        .kill();
    assert!(c.at_eof().await, "closed");
    proxy.settle().await;
    let status = http(&proxy.admin_addr(), "GET", "/status", None)
        .await
        .json();
    assert_eq!(
        status["listeners"][0]["outcomes"]["killed_by_admin"], 1,
        "{status}"
    );
}
