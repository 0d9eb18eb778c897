//! Certificate lifecycle: TLS material reloaded by the file poll, SIGHUP and
//! `POST /reload` while sessions stay open; revocation reaching live
//! sessions; broken material keeping the old config in service; TLS
//! session resumption never outliving a trust reload.
//!
//! The TLS files live in a directory the test rewrites the way certificate
//! tools do (write a temporary file, rename it over the old one; switch a
//! symlink). The poll runs every 50 ms; tests wait for the listener's
//! reload-attempt counter, never for time.

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::binary::RunningBinary;
use common::client::{cli_tcp_args, cli_tls_args, mariadb_cli, tls_opts};
use common::http::http;
use common::mariadb::{short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::metrics::{metric, metric_or_zero};
use common::pki::{ClientCert, Pki, Signer, SERVER_SERIAL};
use common::proxy::{copy_in, publish, TestProxy};
use common::raw::{response_payload, RawClient};
use mysql_async::prelude::*;
use mysql_async::Conn;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::watch;

const DAY: Duration = Duration::from_secs(86_400);

/// The directory portcullis reads its TLS files from, filled from the PKI:
/// `server.pem`, `server-key.pem`, `ca.pem` and `crl.d/ca.pem` (the CA's
/// CRL, revoking the PKI's `revoked` certificate).
struct TlsDir {
    dir: TempDir,
}

impl TlsDir {
    fn new(pki: &Pki) -> TlsDir {
        let dir = short_tempdir("tls");
        std::fs::create_dir(dir.path().join("crl.d")).unwrap();
        let t = TlsDir { dir };
        copy_in(&pki.server.cert, &t.path("server.pem"));
        copy_in(&pki.server.key, &t.path("server-key.pem"));
        copy_in(&pki.ca, &t.path("ca.pem"));
        copy_in(&pki.crl, &t.path("crl.d/ca.pem"));
        t
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `[listener.tls]` section over these files, plus `extra` lines.
    fn section(&self, extra: &str) -> String {
        format!(
            r#"[listener.tls]
cert = {:?}
key = {:?}
ca = {:?}
crl = [{:?}]
{extra}"#,
            self.path("server.pem"),
            self.path("server-key.pem"),
            self.path("ca.pem"),
            self.path("crl.d"),
        )
    }
}

/// One backend and one mTLS listener `public` on `[::1]:0`, polling every
/// 50 ms.
fn config(db: &MariaDb, tls_section: &str) -> String {
    format!(
        r#"[tls_reload]
poll_interval = "50ms"

[admin]
address = "127.0.0.1:0"

[[backend]]
name = "db"
address = {:?}

[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{tls_section}"#,
        db.unix_address()
    )
}

/// A database, TLS files, and a proxy over them polling every 50 ms.
struct Fixture {
    pki: Pki,
    tls: TlsDir,
    proxy: TestProxy,
    /// The listener's reload attempts.
    rx: watch::Receiver<u64>,
    _db: MariaDb,
}

impl Fixture {
    /// `extra`: more `[listener.tls]` lines.
    async fn start(extra: &str) -> Fixture {
        let pki = Pki::new();
        let db = MariaDb::start_with_users().await;
        let tls = TlsDir::new(&pki);
        let proxy = TestProxy::start(&config(&db, &tls.section(extra))).await;
        let rx = attempts(&proxy);
        Fixture {
            pki,
            tls,
            proxy,
            rx,
            _db: db,
        }
    }

    /// Publishes a CRL of the CA revoking `serials` and waits for the poll
    /// to have loaded it (the listener's first reload).
    async fn revoke(&mut self, serials: &[u64]) {
        let crl = self
            .pki
            .write_crl("crl-new.pem", serials, SystemTime::now() + 30 * DAY);
        copy_in(&crl, &self.tls.path("crl.d/ca.pem"));
        reloads_reach(&mut self.rx, 1).await;
    }
}

fn attempts(proxy: &TestProxy) -> watch::Receiver<u64> {
    proxy.state().listeners[0]
        .runtime
        .tls
        .as_ref()
        .expect("TLS listener")
        .material
        .watch_attempts()
}

/// Waits until the listener has finished `n` reload attempts in all.
async fn reloads_reach(rx: &mut watch::Receiver<u64>, n: u64) {
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|v| *v >= n))
        .await
        .unwrap_or_else(|_| panic!("no reload attempt #{n} within 30 s"))
        .expect("proxy alive");
}

async fn connect(
    proxy: &TestProxy,
    pki: &Pki,
    client: &ClientCert,
) -> Result<Conn, mysql_async::Error> {
    let opts = tls_opts(
        "::1",
        proxy.port("public"),
        NATIVE_USER,
        NATIVE_PASS,
        &pki.ca,
        Some(client),
    );
    Conn::new(opts).await
}

async fn answers(conn: &mut Conn) -> bool {
    matches!(conn.query_first::<i64, _>("SELECT 6*7").await, Ok(Some(42)))
}

/// The serial (lowercase hex) of the certificate a new connection is
/// served, as `openssl s_client -starttls mysql` sees it.
async fn served_serial(port: u16, pki: &Pki) -> String {
    let (ca, cert, key) = (pki.ca.clone(), pki.app.cert.clone(), pki.app.key.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("openssl")
            .args(["s_client", "-starttls", "mysql", "-connect"])
            .arg(format!("[::1]:{port}"))
            .arg("-CAfile")
            .arg(ca)
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl s_client")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no server certificate in s_client output: {text}"));
    let end = text[begin..].find("-----END CERTIFICATE-----").unwrap() + begin + 25;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(text[begin..end].as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    c.raw_serial_as_string().replace(':', "")
}

/// `mariadb` CLI through the listener with `client`; (exit ok, stderr).
async fn cli(proxy: &TestProxy, pki: &Pki, client: &ClientCert) -> (bool, String) {
    let mut args = cli_tcp_args("::1", proxy.port("public"), NATIVE_USER, NATIVE_PASS);
    args.extend(cli_tls_args(&pki.ca, Some(client)));
    args.extend(["-e".into(), "SELECT 1".into()]);
    let out = mariadb_cli(&args).await;
    (out.success(), out.stderr)
}

/// Polls `name` until it reads at least `floor` (sessions are recorded when
/// they end, just after the client sees its last byte) and returns it.
async fn metric_at_least(proxy: &TestProxy, name: &str, floor: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric_or_zero(proxy, name).await;
        if v >= floor {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {v}, below {floor}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status_of_public(proxy: &TestProxy) -> Value {
    let r = http(&proxy.admin_addr(), "GET", "/status", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["listeners"][0].clone()
}

fn hex_serial(serial: u64) -> String {
    let s = format!("{serial:x}");
    if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s
    }
}

#[tokio::test]
async fn rotated_server_certificate_serves_new_connections_and_open_sessions_continue() {
    let Fixture {
        pki,
        tls,
        proxy,
        mut rx,
        _db,
    } = Fixture::start("").await;
    let mut open = connect(&proxy, &pki, &pki.app).await.expect("connects");
    assert!(answers(&mut open).await);
    assert_eq!(
        served_serial(proxy.port("public"), &pki).await,
        hex_serial(SERVER_SERIAL)
    );

    // Renewal: a new key and certificate, published file by file.
    let renewed = pki.issue_server("renewed", 0x4242, Signer::Ca);
    copy_in(&renewed.key, &tls.path("server-key.pem"));
    copy_in(&renewed.cert, &tls.path("server.pem"));
    // Between the two renames the poll may see the new key with the old
    // certificate (a failed attempt); the pair is then loaded.
    let mut seen = 0;
    loop {
        seen += 1;
        reloads_reach(&mut rx, seen).await;
        if status_of_public(&proxy).await["certificate"]["serial"] == "4242" {
            break;
        }
    }

    assert_eq!(served_serial(proxy.port("public"), &pki).await, "4242");
    assert!(
        answers(&mut open).await,
        "the session opened before the rotation continues"
    );
    let mut fresh = connect(&proxy, &pki, &pki.app)
        .await
        .expect("connects after rotation");
    assert!(answers(&mut fresh).await);
    let s = status_of_public(&proxy).await;
    assert_eq!(s["last_reload"]["result"], "success", "{s}");
    assert_eq!(s["last_reload"]["trigger"], "poll", "{s}");
    assert_eq!(s["certificate_sessions"], 2, "{s}");
    assert!(
        metric(
            &proxy,
            r#"portcullis_tls_reloads_total{listener="public",result="success"}"#
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(
            &proxy,
            r#"portcullis_revoked_sessions_total{listener="public",action="closed"}"#
        )
        .await,
        0.0,
        "a server certificate rotation re-checks nobody"
    );
}

#[tokio::test]
async fn a_published_crl_closes_the_revoked_live_session_and_refuses_it_afterwards() {
    let mut f = Fixture::start("").await;
    let victim = f.pki.issue_client("victim", "victim", 0x500);
    let (pki, proxy) = (&f.pki, &f.proxy);
    let mut doomed = connect(proxy, pki, &victim).await.expect("victim connects");
    let mut bystander = connect(proxy, pki, &pki.app).await.expect("app connects");
    assert!(answers(&mut doomed).await && answers(&mut bystander).await);

    f.revoke(&[0x102, 0x500]).await;
    let (pki, proxy) = (&f.pki, &f.proxy);

    assert!(!answers(&mut doomed).await, "the revoked session is closed");
    assert!(
        answers(&mut bystander).await,
        "other sessions are untouched"
    );
    let (ok, stderr) = cli(proxy, pki, &victim).await;
    assert!(
        !ok && stderr.contains("alert certificate revoked"),
        "{stderr}"
    );
    assert_eq!(
        metric(
            proxy,
            r#"portcullis_revoked_sessions_total{listener="public",action="closed"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            proxy,
            r#"portcullis_connections_total{listener="public",outcome="closed_revoked"}"#
        )
        .await,
        1.0
    );
    let s = status_of_public(proxy).await;
    assert_eq!(s["crls"][0]["revoked"], 2, "{s}");
}

#[tokio::test]
async fn on_revoke_keep_leaves_the_live_session_but_refuses_new_ones() {
    let mut f = Fixture::start("on_revoke = \"keep\"\n").await;
    let victim = f.pki.issue_client("victim", "victim", 0x501);
    let mut kept = connect(&f.proxy, &f.pki, &victim)
        .await
        .expect("victim connects");

    f.revoke(&[0x501]).await;
    let (pki, proxy) = (&f.pki, &f.proxy);

    assert!(answers(&mut kept).await, "on_revoke = keep");
    let (ok, stderr) = cli(proxy, pki, &victim).await;
    assert!(
        !ok && stderr.contains("alert certificate revoked"),
        "{stderr}"
    );
    assert_eq!(
        metric(
            proxy,
            r#"portcullis_revoked_sessions_total{listener="public",action="kept"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn a_symlink_switched_to_a_new_certificate_directory_is_picked_up() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let tls = TlsDir::new(&pki);
    // Kubernetes-style: live -> v1/, then live -> v2/ by renaming a new link
    // over it.
    for (v, cert) in [
        ("v1", &pki.server),
        ("v2", &pki.issue_server("v2", 0x77, Signer::Ca)),
    ] {
        std::fs::create_dir(tls.path(v)).unwrap();
        copy_in(&cert.cert, &tls.path(&format!("{v}/tls.crt")));
        copy_in(&cert.key, &tls.path(&format!("{v}/tls.key")));
    }
    std::os::unix::fs::symlink("v1", tls.path("live")).unwrap();
    let section = format!(
        r#"[listener.tls]
cert = {:?}
key = {:?}
ca = {:?}
crl = [{:?}]
"#,
        tls.path("live/tls.crt"),
        tls.path("live/tls.key"),
        tls.path("ca.pem"),
        tls.path("crl.d"),
    );
    let proxy = TestProxy::start(&config(&db, &section)).await;
    let mut rx = attempts(&proxy);
    assert_eq!(
        served_serial(proxy.port("public"), &pki).await,
        hex_serial(SERVER_SERIAL)
    );

    std::os::unix::fs::symlink("v2", tls.path("live.new")).unwrap();
    std::fs::rename(tls.path("live.new"), tls.path("live")).unwrap();
    reloads_reach(&mut rx, 1).await;

    assert_eq!(served_serial(proxy.port("public"), &pki).await, "77");
    let s = status_of_public(&proxy).await;
    assert_eq!(s["certificate"]["serial"], "77", "{s}");
    assert_eq!(s["last_reload"]["result"], "success", "{s}");
}

#[tokio::test]
async fn ca_rotation_with_overlap_accepts_both_then_drops_the_old_ca() {
    let Fixture {
        pki,
        tls,
        proxy,
        mut rx,
        _db,
    } = Fixture::start("").await;
    let mut old_client = connect(&proxy, &pki, &pki.app)
        .await
        .expect("old CA client");
    let (ok, stderr) = cli(&proxy, &pki, &pki.other).await;
    assert!(!ok && stderr.contains("alert unknown ca"), "{stderr}");

    // Overlap: the bundle holds both CAs, each with its CRL.
    let other_crl = pki.write_crl_by(
        Signer::OtherCa,
        "other-crl.pem",
        &[],
        SystemTime::now() + 30 * DAY,
    );
    copy_in(&other_crl, &tls.path("crl.d/other.pem"));
    let both = [
        std::fs::read(&pki.ca).unwrap(),
        std::fs::read(&pki.other_ca).unwrap(),
    ]
    .concat();
    publish(&tls.path("ca.pem"), &both);
    let mut n = 0;
    loop {
        n += 1;
        reloads_reach(&mut rx, n).await;
        if status_of_public(&proxy).await["cas"]
            .as_array()
            .unwrap()
            .len()
            == 2
        {
            break;
        }
    }
    assert_eq!(
        status_of_public(&proxy).await["last_reload"]["result"],
        "success"
    );
    let mut new_client = connect(&proxy, &pki, &pki.other)
        .await
        .expect("new CA client accepted");
    assert!(answers(&mut new_client).await);
    assert!(
        cli(&proxy, &pki, &pki.app).await.0,
        "old CA client still accepted"
    );
    assert!(answers(&mut old_client).await, "re-checked and kept");

    // End of the overlap: the old CA leaves the bundle; its live session
    // is no longer trusted and closed, its new connections refused.
    std::fs::remove_file(tls.path("crl.d/ca.pem")).unwrap();
    copy_in(&pki.other_ca, &tls.path("ca.pem"));
    loop {
        n += 1;
        reloads_reach(&mut rx, n).await;
        let s = status_of_public(&proxy).await;
        if s["cas"].as_array().unwrap().len() == 1 && s["last_reload"]["result"] == "success" {
            break;
        }
    }
    assert!(!answers(&mut old_client).await, "old-CA session closed");
    assert!(answers(&mut new_client).await, "new-CA session untouched");
    let (ok, stderr) = cli(&proxy, &pki, &pki.app).await;
    assert!(!ok && stderr.contains("alert unknown ca"), "{stderr}");
}

#[tokio::test]
async fn tls_resumption_works_but_never_outlives_a_trust_reload() {
    let mut f = Fixture::start("").await;
    let addr = f.proxy.tcp_addr("public");
    // One client config for all connections: it keeps the tickets.
    let config = common::raw::client_config(&f.pki, Some(&f.pki.app));

    let kind = |c: &RawClient| c.tls.as_ref().unwrap().handshake_kind();
    let mut first = RawClient::connect(addr).await;
    first.read_packet().await;
    first
        .start_tls_with(config.clone())
        .await
        .expect("full handshake");
    assert_eq!(kind(&first), Some(rustls::HandshakeKind::Full));
    // The tickets arrive after the handshake; reading the auth answer
    // takes them in.
    authenticate(&mut first).await;
    let mut second = RawClient::connect(addr).await;
    second.read_packet().await;
    second
        .start_tls_with(config.clone())
        .await
        .expect("resumed handshake");
    assert_eq!(
        kind(&second),
        Some(rustls::HandshakeKind::Resumed),
        "resumption is on"
    );
    authenticate(&mut second).await;

    // The app certificate gets revoked: the reload builds a new config with
    // a new session cache, so the client's tickets are worthless.
    let app = f.pki.app.serial;
    f.revoke(&[0x102, app]).await;
    let mut third = RawClient::connect(addr).await;
    third.read_packet().await;
    let refused = match third.start_tls_with(config.clone()).await {
        Err(e) => e.to_string(),
        Ok(()) => {
            assert_eq!(
                kind(&third),
                Some(rustls::HandshakeKind::Full),
                "no resumption after a trust reload"
            );
            // TLS 1.3: the server's verdict on the certificate arrives as an
            // alert after the client's Finished.
            third
                .write_packet(2, &response_payload(NATIVE_USER, true))
                .await;
            third.try_read_packet().await.expect_err("refused")
        }
    };
    assert!(refused.contains("CertificateRevoked"), "{refused}");
}

/// `cert_refusal = "mysql_error"`: a refused certificate gets a TLS session
/// and then ERR 1045 naming the reason (what mariadbd's replica IO thread
/// can show, unlike a TLS 1.3 alert), for every kind of refusal, for a
/// session resumed from a ticket the refused client was issued, and for a
/// live session cut by a reload. Good certificates are served as usual.
#[tokio::test]
async fn cert_refusal_mysql_error_answers_err_1045_with_the_reason_even_when_resumed() {
    let mut f = Fixture::start("cert_refusal = \"mysql_error\"\n").await;
    let victim = f.pki.issue_client("victim", "victim", 0x500);
    let (pki, proxy) = (&f.pki, &f.proxy);
    let mut app = connect(proxy, pki, &pki.app).await.expect("app connects");
    let mut doomed = connect(proxy, pki, &victim).await.expect("victim connects");
    assert!(answers(&mut app).await && answers(&mut doomed).await);

    for (who, reason) in [
        (&pki.revoked, "(revoked): the client certificate is revoked"),
        (
            &pki.expired,
            "(expired): the client certificate has expired",
        ),
        (
            &pki.other,
            "(unknown_ca): the client certificate is not issued by a trusted CA",
        ),
    ] {
        let (ok, stderr) = cli(proxy, pki, who).await;
        assert!(!ok, "{stderr}");
        assert!(
            stderr.contains("ERROR 1045 (28000)")
                && stderr.contains("listener 'public': TLS client certificate refused ")
                && stderr.contains(reason),
            "{}: {stderr}",
            who.name
        );
    }
    // No certificate at all.
    let mut args = cli_tcp_args("::1", proxy.port("public"), NATIVE_USER, NATIVE_PASS);
    args.extend(cli_tls_args(&pki.ca, None));
    args.extend(["-e".into(), "SELECT 1".into()]);
    let out = mariadb_cli(&args).await;
    assert!(
        !out.success()
            && out.stderr.contains("ERROR 1045")
            && out.stderr.contains("(no_client_cert)"),
        "{}",
        out.stderr
    );
    // mysql_async sees the server's error code too.
    let e = connect(proxy, pki, &pki.revoked)
        .await
        .expect_err("refused");
    assert_eq!(common::client::server_error_code(&e), Some(1045), "{e}");
    // Sessions are counted when they end, just after the client read its
    // ERR: wait for the second one, then check there is no third.
    let revoked = r#"portcullis_tls_failures_total{listener="public",reason="revoked"}"#;
    assert_eq!(metric_at_least(proxy, revoked, 2.0).await, 2.0);

    // A refused client still finished a TLS handshake and holds a ticket:
    // resuming with it is refused all the same.
    let addr = proxy.tcp_addr("public");
    let config = common::raw::client_config(pki, Some(&pki.revoked));
    for expected in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
        let mut c = RawClient::connect(addr).await;
        c.read_packet().await;
        c.start_tls_with(config.clone()).await.expect("TLS session");
        assert_eq!(c.tls.as_ref().unwrap().handshake_kind(), Some(expected));
        c.write_packet(2, &response_payload(NATIVE_USER, true))
            .await;
        let err = c.read_packet().await;
        assert_eq!(
            &err[4..7],
            &[0xff, 0x15, 0x04],
            "ERR 1045 at seq 3: {err:?}"
        );
        assert_eq!(err[3], 3, "sequence id");
        let text = String::from_utf8_lossy(&err[13..]).into_owned();
        assert!(text.contains("(revoked)"), "{text}");
        assert!(c.at_eof().await, "closed after the ERR");
    }

    // Revoked while connected: closed like with alerts, then refused by ERR.
    f.revoke(&[0x102, 0x500]).await;
    let (pki, proxy) = (&f.pki, &f.proxy);
    assert!(!answers(&mut doomed).await, "the revoked session is closed");
    assert!(answers(&mut app).await, "other sessions are untouched");
    let (ok, stderr) = cli(proxy, pki, &victim).await;
    assert!(
        !ok && stderr.contains("ERROR 1045") && stderr.contains("(revoked)"),
        "{stderr}"
    );
}

/// Sends a HandshakeResponse (empty password, so the server says 1045) and
/// reads the answer: enough to complete a round trip over TLS.
async fn authenticate(c: &mut RawClient) {
    c.write_packet(2, &response_payload("nobody", true)).await;
    let answer = c.read_packet().await;
    // ERR (1045) or an auth switch: either way the server answered.
    assert!(matches!(answer.get(4), Some(0xff | 0xfe)), "{answer:?}");
}

#[tokio::test]
async fn broken_material_keeps_the_old_config_and_says_why_in_log_metric_and_status() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let tls = TlsDir::new(&pki);
    let dir = short_tempdir("cfg");
    let admin_port = common::mariadb::free_port();
    let port = common::mariadb::free_port();
    let cfg = config(&db, &tls.section(""))
        .replace("127.0.0.1:0", &format!("127.0.0.1:{admin_port}"))
        .replace("[::1]:0", &format!("[::1]:{port}"));
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut bin = RunningBinary::start(&path).await;
    let admin =
        portcullis::config::ListenAddr::Tcp(format!("127.0.0.1:{admin_port}").parse().unwrap());
    let status =
        || async { http(&admin, "GET", "/status", None).await.json()["listeners"][0].clone() };
    let failures = || async {
        let body = http(&admin, "GET", "/metrics", None).await.body;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(
                    r#"portcullis_tls_reloads_total{listener="public",result="failure"} "#,
                )
            })
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let still_served = || async {
        let mut args = cli_tcp_args("::1", port, NATIVE_USER, NATIVE_PASS);
        args.extend(cli_tls_args(&pki.ca, Some(&pki.app)));
        args.extend(["-N".into(), "-e".into(), "SELECT 'up'".into()]);
        let out = mariadb_cli(&args).await;
        assert_eq!(out.stdout.trim(), "up", "{out:?}");
        assert_eq!(served_serial(port, &pki).await, hex_serial(SERVER_SERIAL));
    };

    type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: Vec<Breakage> = vec![
        (
            "corrupt PEM",
            Box::new(|| {
                publish(
                    &tls.path("server.pem"),
                    b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                )
            }),
            "server.pem",
        ),
        (
            "a key for another certificate",
            Box::new(|| {
                copy_in(&pki.server.cert, &tls.path("server.pem"));
                let other = pki.issue_server("other-server", 0x99, Signer::Ca);
                copy_in(&other.key, &tls.path("server-key.pem"));
            }),
            "do not belong together",
        ),
        (
            "an expired CRL",
            Box::new(|| {
                copy_in(&pki.server.key, &tls.path("server-key.pem"));
                copy_in(&pki.crl_expired, &tls.path("crl.d/ca.pem"));
            }),
            "expired at",
        ),
        (
            "a CRL signed by a CA outside the bundle",
            Box::new(|| {
                let foreign =
                    pki.write_crl_by(Signer::OtherCa, "foreign.pem", &[], SystemTime::now() + DAY);
                copy_in(&foreign, &tls.path("crl.d/ca.pem"));
            }),
            "no CA with that name is in the CA bundle",
        ),
        (
            "a CRL in the CA's name signed by another key",
            Box::new(|| {
                let forged =
                    pki.write_crl_by(Signer::Impostor, "forged.pem", &[], SystemTime::now() + DAY);
                copy_in(&forged, &tls.path("crl.d/ca.pem"));
            }),
            "has a signature that no CA of that name in the CA bundle made",
        ),
    ];
    for (i, (what, break_it, expected)) in cases.into_iter().enumerate() {
        break_it();
        let event = bin.wait_for_log("TLS reload failed").await;
        let error = event["error"].as_str().unwrap_or_default().to_string();
        assert!(
            error.contains(expected),
            "{what}: log error {error:?} lacks {expected:?}"
        );
        let s = status().await;
        assert_eq!(s["last_reload_error"]["result"], "failure", "{what}: {s}");
        let shown = s["last_reload_error"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(shown.contains(expected), "{what}: status {shown:?}");
        assert_eq!(
            s["certificate"]["serial"],
            hex_serial(SERVER_SERIAL),
            "{what}"
        );
        assert!(failures().await > i as u64, "{what}: failure counted");
        still_served().await;
    }

    // A fresh CRL and a SIGHUP: new material in service again (by the
    // signal or the poll, whichever reads it first).
    let fresh = pki.write_crl("fresh.pem", &[0x102], SystemTime::now() + 30 * DAY);
    copy_in(&fresh, &tls.path("crl.d/ca.pem"));
    bin.signal("HUP");
    bin.wait_for_log("TLS material reloaded").await;
    let s = status().await;
    assert_eq!(s["last_reload"]["result"], "success", "{s}");
    still_served().await;
}

#[tokio::test]
async fn post_reload_reports_per_listener_and_an_invalid_file_changes_nothing() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let tls = TlsDir::new(&pki);
    // Polling off: only the explicit trigger reloads. The admin API on a
    // Unix socket: on TCP without a token it would serve GET only.
    let toml = config(&db, &tls.section(""))
        .replace("\"50ms\"", "\"0s\"")
        .replace("\"127.0.0.1:0\"", "\"unix:admin.sock\"");
    let proxy = TestProxy::start(&toml).await;

    let renewed = pki.issue_server("renewed", 0x4343, Signer::Ca);
    copy_in(&renewed.key, &tls.path("server-key.pem"));
    copy_in(&renewed.cert, &tls.path("server.pem"));
    assert_eq!(
        served_serial(proxy.port("public"), &pki).await,
        hex_serial(SERVER_SERIAL),
        "no poll: nothing reloaded by itself"
    );
    let r = proxy.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    let report = r.json();
    assert_eq!(report["tls"]["public"]["result"], "reloaded", "{report}");
    assert_eq!(report["tls"]["public"]["serial"], "4343", "{report}");
    assert_eq!(served_serial(proxy.port("public"), &pki).await, "4343");
    assert_eq!(
        status_of_public(&proxy).await["last_reload"]["trigger"],
        "admin"
    );

    // A broken key: 422, the report names the file, the new cert stays.
    publish(&tls.path("server-key.pem"), b"garbage");
    let r = proxy.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 422, "{r:?}");
    let error = r.json()["tls"]["public"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("server-key.pem") && error.contains("PRIVATE KEY"),
        "{error}"
    );
    assert_eq!(served_serial(proxy.port("public"), &pki).await, "4343");

    // An invalid config file: 422, nothing changes.
    let cfg_path = proxy.dir().join("portcullis.toml");
    std::fs::write(&cfg_path, "this is = not [valid").unwrap();
    let r = proxy.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 422, "{r:?}");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("config invalid, nothing changed"),
        "{r:?}"
    );
    assert_eq!(served_serial(proxy.port("public"), &pki).await, "4343");
}

#[tokio::test]
async fn config_checks_crl_policy_and_material_at_load() {
    let pki = Pki::new();
    let tls = TlsDir::new(&pki);
    let load = |extra: &str| {
        let dir = short_tempdir("chk");
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            format!(
                r#"[[backend]]
name = "db"
address = "unix:/nonexistent.sock"
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{}"#,
                tls.section(extra)
            ),
        )
        .unwrap();
        portcullis::preflight::Preflight::load(&path)
            .map(|p| p.config().listeners[0].tls.clone().unwrap())
    };
    let t = load(
        r#"crl_scope = "leaf"
crl_expired = "accept"
unknown_revocation = "allow"
on_revoke = "keep"
"#,
    )
    .unwrap();
    assert_eq!(t.crl_policy.scope, portcullis::config::CrlScope::Leaf);
    assert_eq!(t.crl_policy.expired, portcullis::config::CrlExpired::Accept);
    assert_eq!(
        t.crl_policy.unknown,
        portcullis::config::UnknownRevocation::Allow
    );
    assert_eq!(t.on_revoke, portcullis::config::OnRevoke::Keep);
    let e = load("on_revoke = \"ignore\"\n").unwrap_err().to_string();
    assert!(
        e.contains("unknown variant `ignore`") && e.contains(":13:"),
        "{e}"
    );

    // An expired CRL: refused at load unless the policy accepts it.
    copy_in(&pki.crl_expired, &tls.path("crl.d/ca.pem"));
    let e = load("").unwrap_err().to_string();
    assert!(e.contains("expired at") && e.contains("crl_expired"), "{e}");
    assert!(load("crl_expired = \"accept\"\n").is_ok());
}

/// The TLS material is read once, before serving: what the preflight
/// loaded is what `Proxy::bind` serves, even when the files are gone by
/// then.
#[tokio::test]
async fn bind_serves_the_material_the_preflight_loaded() {
    let pki = Pki::new();
    let tls = TlsDir::new(&pki);
    let dir = short_tempdir("pre");
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        format!(
            r#"[[backend]]
name = "db"
address = "[::1]:1"
[backend.tls]
ca = {:?}
server_name = "localhost"
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{}"#,
            tls.path("ca.pem"),
            tls.section("")
        ),
    )
    .unwrap();
    let preflight = portcullis::preflight::Preflight::load(&path).expect("valid config");
    for f in ["server.pem", "server-key.pem", "ca.pem", "crl.d/ca.pem"] {
        std::fs::remove_file(tls.path(f)).unwrap();
    }
    let proxy = portcullis::Proxy::bind(preflight).expect("bind reads no file again");
    let state = proxy.state();
    let served = state.listeners[0]
        .runtime
        .tls
        .as_ref()
        .expect("TLS")
        .material
        .load();
    assert_eq!(served.leaf.serial, hex_serial(SERVER_SERIAL));
    assert_eq!(served.crls.len(), 1);
    let outbound = state.backends[0].tls.as_ref().expect("backend TLS").load();
    assert_eq!(outbound.cas.len(), 1);
    assert_eq!(outbound.server_name.to_str(), "localhost");
}

#[tokio::test]
async fn expiry_inside_the_warning_window_is_logged_at_start() {
    let pki = Pki::new();
    let tls = TlsDir::new(&pki);
    let dir = short_tempdir("exp");
    let path = dir.path().join("portcullis.toml");
    // The server certificate has a year left and the CRL 30 days: a
    // 400-day window covers both, the default 14 days neither.
    std::fs::write(
        &path,
        format!(
            r#"[tls_reload]
expiry_warning = "400d"
[[backend]]
name = "db"
address = "unix:/nonexistent.sock"
[[listener]]
name = "public"
address = "[::1]:{}"
route = "db"
{}"#,
            common::mariadb::free_port(),
            tls.section("")
        ),
    )
    .unwrap();
    let mut bin = RunningBinary::start(&path).await;
    let w = bin
        .wait_for_log("certificate CN=localhost (serial 0a) expires in")
        .await;
    assert_eq!(w["level"], "WARN", "{w}");
    assert_eq!(w["listener"], "public", "{w}");
    let w = bin.wait_for_log("CRL for CN=Portcullis Test CA").await;
    let message = w["message"].as_str().unwrap();
    assert!(
        message.contains("expires in 30.0 days") || message.contains("expires in 29.9 days"),
        "{w}"
    );
}
