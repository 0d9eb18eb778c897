//! Instant-failover redirect (issue "Instant-failover redirect").

mod common;

#[path = "../examples/follow_redirect.rs"]
mod follow_redirect;

use common::client::{
    cli_socket_args, cli_tcp_args, cli_tls_args, mariadb_cli, server_error_code, tls_opts,
};
use common::mariadb::{free_port, short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{absent_backend, tls_section, TestProxy};
use common::raw::{frame, response_payload, RawClient};
use mysql_async::prelude::*;
use mysql_async::Conn;
use portcullis::reload::{reload_config, MaterialReload, Trigger};

const TARGET: &str = "db2.example.net:3307";

fn redirect_err(code: u16, text: &str, target: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#HY000");
    p.extend_from_slice(format!("|{text}|{target}").as_bytes());
    p
}

#[tokio::test]
async fn redirect_packet_is_byte_exact_over_tls_without_a_backend() {
    let pki = Pki::new();
    let (_d, backend) = absent_backend();
    let cfg = format!(
        r#"[[backend]]
name = "db"
address = {backend:?}
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
failover = "on"
failover_target = {TARGET:?}
failover_message = "moving to db2"
{}"#,
        tls_section(&pki, "required")
    );
    let proxy = TestProxy::start(&cfg).await;
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    let greeting = c.read_packet().await;
    assert_eq!(greeting[3], 0);
    let g = portcullis::protocol::Greeting::parse(&greeting[4..]).expect("own greeting parses");
    assert!(
        g.capabilities.has(portcullis::protocol::Capabilities::SSL),
        "TLS offered"
    );
    c.start_tls(&pki, Some(&pki.app)).await.expect("TLS first");
    c.write_packet(2, &response_payload("anyone", true)).await;
    let err = c.read_packet().await;
    assert_eq!(err, frame(3, &redirect_err(4196, "moving to db2", TARGET)));
    assert!(c.at_eof().await, "connection closed after the redirect");

    // The TLS rules still apply before anything is said: a revoked
    // certificate never sees the redirect.
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    c.read_packet().await;
    // (With TLS 1.3 the client finishes its side before the server has
    // checked its certificate; the refusal arrives as an alert.)
    if c.start_tls(&pki, Some(&pki.revoked)).await.is_ok() {
        c.write_packet(2, &response_payload("anyone", true)).await;
        assert!(
            c.at_eof().await,
            "revoked client gets an alert, not the redirect"
        );
    }
}

#[tokio::test]
async fn redirect_packet_in_plaintext_uses_seq_2_and_custom_code() {
    let (_d, backend) = absent_backend();
    let cfg = format!(
        r#"[[backend]]
name = "db"
address = {backend:?}
[[listener]]
name = "lo"
address = "127.0.0.1:0"
route = "db"
failover = "on"
failover_target = {TARGET:?}
failover_error_code = 4200
"#
    );
    let proxy = TestProxy::start(&cfg).await;
    let mut c = RawClient::connect(proxy.tcp_addr("lo")).await;
    let greeting = c.read_packet().await;
    let g = portcullis::protocol::Greeting::parse(&greeting[4..]).unwrap();
    assert!(
        !g.capabilities.has(portcullis::protocol::Capabilities::SSL),
        "no TLS offered"
    );
    c.write_packet(1, &response_payload("anyone", false)).await;
    let err = c.read_packet().await;
    assert_eq!(
        err,
        frame(
            2,
            &redirect_err(
                4200,
                &format!("This database is being taken over; connect to {TARGET} instead"),
                TARGET
            )
        )
    );
    assert!(c.at_eof().await);
}

#[tokio::test]
async fn mariadb_cli_shows_the_code_and_message() {
    let pki = Pki::new();
    let (_d, backend) = absent_backend();
    let cfg = format!(
        r#"[[backend]]
name = "db"
address = {backend:?}
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
failover = "all"
failover_target = {TARGET:?}
failover_message = "This server is being replaced; use db2.example.net port 3307"
{}"#,
        tls_section(&pki, "required")
    );
    let proxy = TestProxy::start(&cfg).await;
    let mut args = cli_tcp_args("::1", proxy.port("public"), "app", "x");
    args.extend(cli_tls_args(&pki.ca, Some(&pki.app)));
    args.extend(["-e".into(), "SELECT 1".into()]);
    let out = mariadb_cli(&args).await;
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("ERROR 4196 (HY000): |This server is being replaced; use db2.example.net port 3307|db2.example.net:3307"),
        "{out:?}"
    );
}

fn three_listeners(pki: &Pki, db: &MariaDb, sock: &std::path::Path, mode: &str) -> String {
    let fo = format!(
        r#"failover = {mode:?}
failover_target = {TARGET:?}
"#
    );
    format!(
        r#"[[backend]]
name = "db"
address = "unix:{}"
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{fo}{tls}[[listener]]
name = "ops"
address = "[::1]:0"
route = "db"
admin = true
{fo}{tls}[[listener]]
name = "sock"
address = "unix:{}"
route = "db"
{fo}"#,
        db.socket_path().display(),
        sock.display(),
        tls = tls_section(pki, "required"),
    )
}

async fn outcome(opts: mysql_async::Opts) -> Result<i64, u16> {
    match Conn::new(opts).await {
        Ok(mut c) => Ok(c
            .query_first::<i64, _>("SELECT 40+2")
            .await
            .unwrap()
            .unwrap()),
        Err(e) => Err(server_error_code(&e).unwrap_or_else(|| panic!("not a server error: {e}"))),
    }
}

#[tokio::test]
async fn on_exempts_unix_and_admin_listeners_all_does_not() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("fo");
    for (mode, redirected_exempt) in [("on", false), ("all", true)] {
        let sock = dir.path().join(format!("{mode}.sock"));
        let proxy = TestProxy::start(&three_listeners(&pki, &db, &sock, mode)).await;
        let public = proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS);
        let ops = proxy.app_opts(&pki, "ops", NATIVE_USER, NATIVE_PASS);
        let sock_opts =
            common::client::socket_opts(&proxy.socket_path("sock"), NATIVE_USER, NATIVE_PASS);
        assert_eq!(
            outcome(public).await,
            Err(4196),
            "mode {mode}: public is redirected"
        );
        let exempt = if redirected_exempt { Err(4196) } else { Ok(42) };
        assert_eq!(outcome(ops).await, exempt, "mode {mode}: admin listener");
        assert_eq!(
            outcome(sock_opts).await,
            exempt,
            "mode {mode}: unix listener"
        );
        // And with the CLI over the socket.
        let mut args = cli_socket_args(&proxy.socket_path("sock"), NATIVE_USER, NATIVE_PASS);
        args.extend(["-e".into(), "SELECT 'in'".into()]);
        let out = mariadb_cli(&args).await;
        assert_eq!(
            out.status,
            Some(if redirected_exempt { 1 } else { 0 }),
            "mode {mode}: {out:?}"
        );
    }
}

#[tokio::test]
async fn example_client_follows_a_redirect_and_gives_up_on_a_loop() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let backend = format!("unix:{}", db.socket_path().display());
    // B serves; A redirects to B by host name.
    let b = TestProxy::start(&format!(
        r#"[[backend]]
name = "db"
address = {backend:?}
[[listener]]
name = "b"
address = "127.0.0.1:0"
route = "db"
{}"#,
        tls_section(&pki, "required")
    ))
    .await;
    let target = format!("localhost:{}", b.port("b"));
    let a = TestProxy::start(&format!(
        r#"[[backend]]
name = "db"
address = {backend:?}
[[listener]]
name = "a"
address = "127.0.0.1:0"
route = "db"
failover = "on"
failover_target = {target:?}
{}"#,
        tls_section(&pki, "required")
    ))
    .await;
    let opts = tls_opts(
        "localhost",
        a.port("a"),
        NATIVE_USER,
        NATIVE_PASS,
        &pki.ca,
        Some(&pki.app),
    );
    let (mut conn, hops) = follow_redirect::connect_following_redirects(opts, 4196)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hops, vec![target.clone()]);
    let v: i64 = conn.query_first("SELECT 40+2").await.unwrap().unwrap();
    assert_eq!(v, 42);
    conn.disconnect().await.unwrap();

    // A listener that redirects to itself: the client stops after 8 hops.
    let port = free_port();
    let self_target = format!("localhost:{port}");
    let l = TestProxy::start(&format!(
        r#"[[backend]]
name = "db"
address = {backend:?}
[[listener]]
name = "loop"
address = "127.0.0.1:{port}"
route = "db"
failover = "all"
failover_target = {self_target:?}
{}"#,
        tls_section(&pki, "required")
    ))
    .await;
    let opts = tls_opts(
        "localhost",
        l.port("loop"),
        NATIVE_USER,
        NATIVE_PASS,
        &pki.ca,
        Some(&pki.app),
    );
    match follow_redirect::connect_following_redirects(opts, 4196).await {
        Err(e @ follow_redirect::FollowError::TooManyRedirects(_)) => {
            let msg = e.to_string();
            assert!(msg.starts_with("gave up after 8 redirects"), "{msg}");
            if let follow_redirect::FollowError::TooManyRedirects(h) = e {
                assert_eq!(h.len(), 9);
            }
        }
        Err(e) => panic!("expected TooManyRedirects, got {e}"),
        Ok(_) => panic!("a redirect loop must not connect"),
    }
}

#[tokio::test]
async fn switching_modes_at_runtime_keeps_open_sessions() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let cfg = format!(
        r#"[admin]
address = "unix:admin.sock"
[[backend]]
name = "db"
address = "unix:{}"
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{}"#,
        db.socket_path().display(),
        tls_section(&pki, "required")
    );
    let proxy = TestProxy::start(&cfg).await;
    let opts = proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS);
    let mut old = Conn::new(opts.clone()).await.expect("mode off: relayed");

    let r = proxy.admin("GET", "/listeners/public/failover", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["mode"], "off");

    let r = proxy
        .admin(
            "PUT",
            "/listeners/public/failover",
            &format!(r#"{{"mode": "on", "target": "{TARGET}", "message": "moved"}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (
            v["mode"].as_str(),
            v["target"].as_str(),
            v["error_code"].as_u64()
        ),
        (Some("on"), Some(TARGET), Some(4196))
    );

    let err = Conn::new(opts.clone()).await.expect_err("redirected");
    assert_eq!(server_error_code(&err), Some(4196));
    assert!(
        err.to_string().contains(&format!("|moved|{TARGET}")),
        "{err}"
    );
    // The session opened before the switch keeps running queries.
    let n: i64 = old.query_first("SELECT 6*7").await.unwrap().unwrap();
    assert_eq!(n, 42);

    // Bad input is refused and changes nothing.
    let r = proxy
        .admin(
            "PUT",
            "/listeners/public/failover",
            r#"{"mode": "on", "target": "[::1]:3307"}"#,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("IPv6 literal"), "{}", r.body);
    let r = proxy
        .admin(
            "PUT",
            "/listeners/public/failover",
            r#"{"mode": "sideways"}"#,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = proxy
        .admin("PUT", "/listeners/nope/failover", r#"{"mode": "off"}"#)
        .await;
    assert_eq!(r.status, 404);
    let r = proxy.admin("GET", "/listeners/public/failover", "").await;
    assert!(
        r.body.contains(&format!("\"target\": \"{TARGET}\"")),
        "{}",
        r.body
    );

    let r = proxy
        .admin("PUT", "/listeners/public/failover", r#"{"mode": "off"}"#)
        .await;
    assert_eq!(r.status, 200);
    let mut new = Conn::new(opts).await.expect("mode off again: relayed");
    let n: i64 = new.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(n, 1);
    let n: i64 = old.query_first("SELECT 2").await.unwrap().unwrap();
    assert_eq!(n, 2);
}

#[test]
fn redirect_message_parsing() {
    assert_eq!(
        follow_redirect::parse_redirect("|moving|db2.example.net:3307"),
        Some(("moving", "db2.example.net", 3307))
    );
    assert_eq!(follow_redirect::parse_redirect("no pipes"), None);
    assert_eq!(follow_redirect::parse_redirect("|x|host"), None);
}

#[test]
fn check_rejects_bad_failover_settings_with_lines() {
    let dir = short_tempdir("ck");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"[[backend]]
name = "db"
address = "127.0.0.1:3306"
[[listener]]
name = "a"
address = "127.0.0.1:3307"
route = "db"
failover = "on"
failover_target = "[2001:db8::1]:3307"
[[listener]]
name = "b"
address = "127.0.0.1:3308"
route = "db"
failover_target = "db2:3307"
failover_message = "a|b"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.toml:9: failover_target \"[2001:db8::1]:3307\" is an IPv6 literal"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:14: failover_message must not contain '|'"),
        "{stderr}"
    );
    assert!(stderr.contains("2 problem(s) found"), "{stderr}");
}

/// Polls the scrape until `series` reads `value` (metrics are recorded just
/// after the client has seen its last byte).
async fn metric_reaches(proxy: &TestProxy, series: &str, value: &str) {
    let want = format!("{series} {value}\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = portcullis::exposition::encode(&proxy.state());
        if text.contains(&want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} not in:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn reload_applies_failover_settings_and_counts_redirects() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let base = format!(
        r#"[[backend]]
name = "db"
address = "{}"
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
"#,
        db.unix_address()
    );
    let tls = tls_section(&pki, "required");
    let proxy = TestProxy::start(&format!("{base}{tls}")).await;
    let opts = proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS);
    let mut old = Conn::new(opts.clone())
        .await
        .expect("relayed before the reload");
    metric_reaches(
        &proxy,
        r#"portcullis_redirects_total{listener="public",style="error"}"#,
        "0",
    )
    .await;

    // The same file with failover switched on, as SIGHUP would re-read it.
    let path = proxy.dir().join("portcullis.toml");
    std::fs::write(
        &path,
        format!(
            r#"{base}failover = "on"
failover_target = {TARGET:?}
{tls}"#
        ),
    )
    .unwrap();
    let reload = || reload_config(&proxy.state(), Trigger::Admin).expect("valid config");
    let report = reload();
    assert_eq!(report.failover_changed, vec!["public".to_string()]);
    assert!(report.not_running.is_empty());
    assert_eq!(report.tls["public"], MaterialReload::Unchanged);
    // Applying the same file again changes nothing.
    let again = reload();
    assert!(again.failover_changed.is_empty());

    let err = Conn::new(opts.clone())
        .await
        .expect_err("redirected after the reload");
    assert_eq!(server_error_code(&err), Some(4196));
    metric_reaches(
        &proxy,
        r#"portcullis_redirects_total{listener="public",style="error"}"#,
        "1",
    )
    .await;
    let n: i64 = old.query_first("SELECT 6*7").await.unwrap().unwrap();
    assert_eq!(n, 42, "the session from before the reload keeps running");
}

#[tokio::test]
async fn sighup_reloads_failover_and_ignores_an_invalid_file() {
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("hup");
    let port = free_port();
    let config = dir.path().join("portcullis.toml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                r#"[[backend]]
name = "db"
address = "{}"
[[listener]]
name = "lo"
address = "127.0.0.1:{port}"
route = "db"
{extra}"#,
                db.unix_address()
            ),
        )
        .unwrap()
    };
    write("");
    let mut bin = common::binary::RunningBinary::start(&config).await;
    let opts = common::client::plain_opts("127.0.0.1", port, NATIVE_USER, NATIVE_PASS);
    let mut old = Conn::new(opts.clone()).await.expect("relayed");

    // An invalid file: logged, nothing changes.
    write(
        r#"failover = "on"
failover_target = "[2001:db8::1]:3307"
"#,
    );
    bin.signal("HUP");
    let e = bin
        .wait_for_log("reload: config invalid, nothing changed")
        .await;
    assert!(
        e["message"].as_str().unwrap().contains("IPv6 literal"),
        "{e}"
    );
    let mut c = Conn::new(opts.clone())
        .await
        .expect("still relayed after a bad reload");
    assert_eq!(c.query_first::<i64, _>("SELECT 1").await.unwrap(), Some(1));
    c.disconnect().await.unwrap();

    // A valid one: applied to new connections only.
    write(&format!(
        r#"failover = "on"
failover_target = {TARGET:?}
"#
    ));
    bin.signal("HUP");
    let done = bin.wait_for_log("reload done").await;
    assert_eq!(done["failover_changed"], "lo", "{done}");
    let err = Conn::new(opts).await.expect_err("redirected after SIGHUP");
    assert_eq!(server_error_code(&err), Some(4196));
    assert_eq!(
        old.query_first::<i64, _>("SELECT 2").await.unwrap(),
        Some(2)
    );
    old.disconnect().await.unwrap();
    bin.signal("TERM");
    assert_eq!(bin.wait_exit().await, Some(0));
}
