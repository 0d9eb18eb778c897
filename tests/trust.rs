//! Trust done right: a CA outside its validity is no trust anchor;
//! intermediates complete chains and issue CRLs without being anchors, so
//! the root's CRL revokes them (live sessions included); CRLs never go
//! backwards nor come from the future; a FIFO, a device or a huge file at a
//! watched path is refused without blocking the poll, `POST /reload` or
//! other listeners' revocations.
//!
//! TLS files live in per-listener directories the test rewrites the way
//! certificate tools do; the poll runs every 50 ms and tests wait for a
//! listener's reload-attempt counter, never for time.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::binary::RunningBinary;
use common::client::{cli_tcp_args, cli_tls_args, mariadb_cli, tls_opts};
use common::http::http;
use common::mariadb::{free_port, short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::metrics::sample;
use common::pki::{ClientCert, Pki, CA_SERIAL};
use common::proxy::{copy_in, publish, TestProxy};
use mysql_async::prelude::*;
use mysql_async::Conn;
use portcullis::config::ListenAddr;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::watch;

const DAY: Duration = Duration::from_secs(86_400);
const MINUTE: Duration = Duration::from_secs(60);

/// A listener's TLS directory: `server.pem`, `server-key.pem`, `ca.pem`,
/// `crl.d/ca.pem` (the CA's CRL, revoking the PKI's `revoked`).
struct TlsDir {
    dir: TempDir,
}

impl TlsDir {
    fn new(pki: &Pki) -> TlsDir {
        let t = TlsDir {
            dir: short_tempdir("tls"),
        };
        std::fs::create_dir(t.path("crl.d")).unwrap();
        copy_in(&pki.server.cert, &t.path("server.pem"));
        copy_in(&pki.server.key, &t.path("server-key.pem"));
        copy_in(&pki.ca, &t.path("ca.pem"));
        copy_in(&pki.crl, &t.path("crl.d/ca.pem"));
        t
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A `[listener.tls]` over these files, plus `extra` lines.
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

/// One backend and a listener per `(name, [listener.tls] section)`, on
/// `[::1]:0`, polling every 50 ms.
fn config(db: &MariaDb, listeners: &[(&str, String)]) -> String {
    let mut s = format!(
        r#"[tls_reload]
poll_interval = "50ms"

[admin]
address = "unix:admin.sock"

[[backend]]
name = "db"
address = {:?}
"#,
        db.unix_address()
    );
    for (name, section) in listeners {
        s.push_str(&format!(
            r#"
[[listener]]
name = {name:?}
address = "[::1]:0"
route = "db"
{section}"#
        ));
    }
    s
}

/// Listener number `index`'s finished reload attempts.
fn attempts(proxy: &TestProxy, index: usize) -> watch::Receiver<u64> {
    proxy.state().listeners[index]
        .runtime
        .tls
        .as_ref()
        .expect("TLS listener")
        .material
        .watch_attempts()
}

/// Runs `publish`, then waits for the listener's next finished reload
/// attempt (counted from before `publish`, so a poll that was quicker than
/// the wait is not missed).
async fn reload_after(rx: &mut watch::Receiver<u64>, publish: impl FnOnce()) {
    let n = *rx.borrow_and_update() + 1;
    publish();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|v| *v >= n))
        .await
        .unwrap_or_else(|_| panic!("no reload attempt #{n} within 30 s"))
        .expect("proxy alive");
}

async fn connect(
    proxy: &TestProxy,
    listener: &str,
    pki: &Pki,
    client: &ClientCert,
) -> Result<Conn, mysql_async::Error> {
    let opts = tls_opts(
        "::1",
        proxy.port(listener),
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

/// The `mariadb` CLI with `client` on `port`: (exit ok, stderr).
async fn cli(port: u16, pki: &Pki, client: &ClientCert) -> (bool, String) {
    let mut args = cli_tcp_args("::1", port, NATIVE_USER, NATIVE_PASS);
    args.extend(cli_tls_args(&pki.ca, Some(client)));
    args.extend(["-e".into(), "SELECT 1".into()]);
    let out = mariadb_cli(&args).await;
    (out.success(), out.stderr)
}

/// Asserts that `client` is refused on `listener` with a revocation alert.
async fn refused_as_revoked(proxy: &TestProxy, listener: &str, pki: &Pki, client: &ClientCert) {
    let (ok, stderr) = cli(proxy.port(listener), pki, client).await;
    assert!(
        !ok && stderr.contains("alert certificate revoked"),
        "{} on {listener}: {stderr}",
        client.name
    );
}

async fn served(proxy: &TestProxy, listener: &str, pki: &Pki, client: &ClientCert) -> bool {
    cli(proxy.port(listener), pki, client).await.0
}

fn listener_status(status: &Value, name: &str) -> Value {
    status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no listener {name} in {status}"))
        .clone()
}

async fn status_of(proxy: &TestProxy, name: &str) -> Value {
    let r = http(&proxy.admin_addr(), "GET", "/status", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    listener_status(&r.json(), name)
}

/// The value of metric `name` (0 when absent), read from `admin`.
async fn metric_at(admin: &ListenAddr, name: &str) -> f64 {
    let body = http(admin, "GET", "/metrics", None).await.body;
    sample(&body, name).unwrap_or(0.0)
}

/// Polls metric `name` until it reads at least `floor` (sessions are
/// counted when they end, just after the client saw its last byte).
async fn metric_reaches(admin: &ListenAddr, name: &str, floor: f64) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = metric_at(admin, name).await;
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

fn pem_bundle(files: &[&Path]) -> Vec<u8> {
    files
        .iter()
        .flat_map(|f| std::fs::read(f).unwrap())
        .collect()
}

/// An expired CA and a CA not valid yet stay in the bundle (status shows
/// them) but vouch for nobody: their clients are refused with
/// `ca_expired` / `ca_not_yet_valid`, which is what the log says at start.
#[tokio::test]
async fn a_ca_outside_its_validity_is_no_trust_anchor_and_the_log_says_so() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let now = SystemTime::now();
    let old = pki.root_ca("old-ca", "Old CA", 0x30, now - 400 * DAY, now - DAY);
    let early = pki.root_ca("early-ca", "Early CA", 0x31, now + DAY, now + 400 * DAY);
    let legacy = old.issue_client("legacy", "legacy", 0x600);
    let premature = early.issue_client("premature", "premature", 0x601);
    let tls = TlsDir::new(&pki);
    publish(
        &tls.path("ca.pem"),
        &pem_bundle(&[&pki.ca, &old.cert, &early.cert]),
    );
    // No CRLs: only the anchors decide.
    let section = |extra: &str| {
        format!(
            r#"[listener.tls]
cert = {:?}
key = {:?}
ca = {:?}
{extra}"#,
            tls.path("server.pem"),
            tls.path("server-key.pem"),
            tls.path("ca.pem"),
        )
    };
    let (port, deferred_port, admin_port) = (free_port(), free_port(), free_port());
    let toml = format!(
        r#"[admin]
address = "127.0.0.1:{admin_port}"
[[backend]]
name = "db"
address = {:?}
[[listener]]
name = "public"
address = "[::1]:{port}"
route = "db"
{}[[listener]]
name = "deferred"
address = "[::1]:{deferred_port}"
route = "db"
{}"#,
        db.unix_address(),
        section(""),
        section("cert_refusal = \"mysql_error\"\n"),
    );
    let dir = short_tempdir("cfg");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let mut bin = RunningBinary::start(&path).await;
    let admin = ListenAddr::Tcp(format!("127.0.0.1:{admin_port}").parse().unwrap());

    // The log, at start.
    let note = bin
        .wait_for_log("CA certificate CN=Early CA, O=portcullis tests (serial 31) is not valid yet")
        .await;
    assert_eq!(note["level"], "WARN", "{note}");
    let expired = bin
        .wait_for_log("CA certificate CN=Old CA, O=portcullis tests (serial 30) has expired")
        .await;
    assert_eq!(expired["level"], "ERROR", "{expired}");
    assert!(
        expired["message"]
            .as_str()
            .unwrap()
            .contains("connections it concerns are refused"),
        "{expired}"
    );
    let status = http(&admin, "GET", "/status", None).await.json();
    assert_eq!(
        listener_status(&status, "public")["cas"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "all three CAs are loaded and shown: {status}"
    );

    // The behaviour.
    let mut args = cli_tcp_args("::1", port, NATIVE_USER, NATIVE_PASS);
    args.extend(cli_tls_args(&pki.ca, Some(&pki.app)));
    args.extend(["-N".into(), "-e".into(), "SELECT 'up'".into()]);
    let out = mariadb_cli(&args).await;
    assert_eq!(out.stdout.trim(), "up", "the valid CA's client: {out:?}");
    for (client, reason) in [(&legacy, "ca_expired"), (&premature, "ca_not_yet_valid")] {
        let mut args = cli_tcp_args("::1", port, NATIVE_USER, NATIVE_PASS);
        args.extend(cli_tls_args(&pki.ca, Some(client)));
        args.extend(["-e".into(), "SELECT 1".into()]);
        let out = mariadb_cli(&args).await;
        assert!(!out.success(), "{} must be refused: {out:?}", client.name);
        let failures =
            format!(r#"portcullis_tls_failures_total{{listener="public",reason="{reason}"}}"#);
        assert_eq!(metric_reaches(&admin, &failures, 1.0).await, 1.0);

        // With cert_refusal = "mysql_error" the client reads the reason.
        let mut args = cli_tcp_args("::1", deferred_port, NATIVE_USER, NATIVE_PASS);
        args.extend(cli_tls_args(&pki.ca, Some(client)));
        args.extend(["-e".into(), "SELECT 1".into()]);
        let out = mariadb_cli(&args).await;
        assert!(
            !out.success()
                && out.stderr.contains("ERROR 1045")
                && out.stderr.contains(&format!("({reason})")),
            "{}: {out:?}",
            client.name
        );
    }
}

/// `intermediates`: a leaf of an intermediate CA (sending only its own
/// certificate) is accepted, the intermediate's CRL revokes it, and the
/// root's CRL revoking the intermediate refuses every leaf under it — the
/// live sessions too — while the root's own clients carry on.
#[tokio::test]
async fn the_roots_crl_revokes_an_intermediate_and_every_leaf_under_it() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let int = pki.intermediate("int-ca", "Intermediate CA", 0x20);
    let leaf1 = int.issue_client("leaf1", "leaf1", 0x700);
    let leaf2 = int.issue_client("leaf2", "leaf2", 0x701);
    let victim = int.issue_client("victim", "victim", 0x702);
    let tls = TlsDir::new(&pki);
    copy_in(&int.cert, &tls.path("intermediates.pem"));
    let int_crl = int.write_crl("int-crl-1.pem", &[], SystemTime::now() - DAY, 1);
    copy_in(&int_crl, &tls.path("crl.d/int.pem"));
    let extra = format!("intermediates = {:?}\n", tls.path("intermediates.pem"));
    let proxy = TestProxy::start(&config(&db, &[("public", tls.section(&extra))])).await;
    let mut rx = attempts(&proxy, 0);
    let admin = proxy.admin_addr();

    let mut a = connect(&proxy, "public", &pki, &leaf1)
        .await
        .expect("leaf1");
    let mut b = connect(&proxy, "public", &pki, &leaf2)
        .await
        .expect("leaf2");
    let mut c = connect(&proxy, "public", &pki, &victim)
        .await
        .expect("victim");
    let mut root_client = connect(&proxy, "public", &pki, &pki.app)
        .await
        .expect("app");
    for s in [&mut a, &mut b, &mut c, &mut root_client] {
        assert!(answers(s).await);
    }
    assert!(
        served(&proxy, "public", &pki, &leaf1).await,
        "libmariadb too"
    );

    // The intermediate's own CRL revokes one of its leaves.
    let int_crl = int.write_crl("int-crl-2.pem", &[0x702], SystemTime::now() - MINUTE, 2);
    reload_after(&mut rx, || copy_in(&int_crl, &tls.path("crl.d/int.pem"))).await;
    let s = status_of(&proxy, "public").await;
    assert_eq!(s["last_reload"]["result"], "success", "{s}");
    assert!(
        !answers(&mut c).await,
        "the revoked leaf's session is closed"
    );
    assert!(answers(&mut a).await && answers(&mut b).await);
    refused_as_revoked(&proxy, "public", &pki, &victim).await;

    // The root's CRL revokes the intermediate: everything under it goes.
    let root_crl = pki.write_crl("root-crl.pem", &[0x102, 0x20], SystemTime::now() + 30 * DAY);
    reload_after(&mut rx, || copy_in(&root_crl, &tls.path("crl.d/ca.pem"))).await;
    let s = status_of(&proxy, "public").await;
    assert_eq!(s["last_reload"]["result"], "success", "{s}");
    assert!(!answers(&mut a).await, "leaf1's live session is closed");
    assert!(!answers(&mut b).await, "leaf2's live session is closed");
    assert!(
        answers(&mut root_client).await,
        "the root's own client stays"
    );
    refused_as_revoked(&proxy, "public", &pki, &leaf1).await;
    refused_as_revoked(&proxy, "public", &pki, &leaf2).await;
    assert!(served(&proxy, "public", &pki, &pki.app).await);
    let closed = r#"portcullis_revoked_sessions_total{listener="public",action="closed"}"#;
    assert_eq!(metric_at(&admin, closed).await, 3.0);
    let tls_state = proxy.state().listeners[0]
        .runtime
        .tls
        .as_ref()
        .unwrap()
        .material
        .load();
    assert_eq!(tls_state.cas.len(), 1, "ca stays the root alone");
    assert_eq!(tls_state.intermediates.len(), 1);
    assert!(
        tls_state.notes.iter().any(|n| n.starts_with(
            "intermediate CA certificate CN=Intermediate CA, O=portcullis tests (serial 20) is revoked by the CRL for CN=Portcullis Test CA"
        ) && n.ends_with("every client certificate under it is refused")),
        "{:?}",
        tls_state.notes
    );
}

/// A genuine but older CRL, a CRL dated ahead of `clock_skew` and a CRL
/// revoking the CA bundle's own CA are each refused, by the poll and by
/// `POST /reload`, with the CRL in service still in force; a CRL a minute
/// ahead is fine. A fresh start (the documented way back) loads the older
/// CRL.
#[tokio::test]
async fn crls_never_go_backwards_nor_come_from_the_future() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let victim = pki.issue_client("victim", "victim", 0x900);
    let tls = TlsDir::new(&pki);
    let now = SystemTime::now();
    let current = pki.write_crl_at("crl-10.pem", &[0x900], now - MINUTE, 10);
    copy_in(&current, &tls.path("crl.d/ca.pem"));
    let proxy = TestProxy::start(&config(&db, &[("public", tls.section(""))])).await;
    let mut rx = attempts(&proxy, 0);
    let admin = proxy.admin_addr();
    refused_as_revoked(&proxy, "public", &pki, &victim).await;

    let older = pki.write_crl_at("crl-5.pem", &[], now - 60 * MINUTE, 5);
    let future = pki.write_crl_at("crl-11.pem", &[], now + 10 * DAY, 11);
    let self_revoking = pki.write_crl_at("crl-12.pem", &[0x900, CA_SERIAL], now, 12);
    let failures = r#"portcullis_tls_reloads_total{listener="public",result="failure"}"#;
    let cases = [
        (
            &older,
            "(CRL number 5, thisUpdate",
            "is older than the one in service (CRL number 10,",
        ),
        (
            &future,
            "CRL for CN=Portcullis Test CA",
            "more than clock_skew (300s) ahead",
        ),
        (
            &self_revoking,
            "revokes CA certificate CN=Portcullis Test CA, O=portcullis tests (serial 01)",
            "a revoked CA cannot be a trust anchor",
        ),
    ];
    for (i, (crl, says, and_says)) in cases.into_iter().enumerate() {
        reload_after(&mut rx, || copy_in(crl, &tls.path("crl.d/ca.pem"))).await;
        let s = status_of(&proxy, "public").await;
        let error = s["last_reload_error"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says) && error.contains(and_says),
            "case {i}: {error:?}"
        );
        assert_eq!(metric_at(&admin, failures).await, (i + 1) as f64);
        refused_as_revoked(&proxy, "public", &pki, &victim).await;
        assert!(served(&proxy, "public", &pki, &pki.app).await);
    }

    // The admin API refuses it the same way (and does not hang).
    copy_in(&older, &tls.path("crl.d/ca.pem"));
    let r = proxy.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 422, "{r:?}");
    let error = r.json()["tls"]["public"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("restart portcullis"), "{error}");
    refused_as_revoked(&proxy, "public", &pki, &victim).await;

    // A minute ahead is within clock_skew; CRL number 13 moves forward.
    let ahead = pki.write_crl_at("crl-13.pem", &[], now + MINUTE, 13);
    copy_in(&ahead, &tls.path("crl.d/ca.pem"));
    let r = proxy.admin("POST", "/reload", "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(served(&proxy, "public", &pki, &victim).await, "unrevoked");

    // A restart forgets what was in service: the older CRL loads.
    copy_in(&older, &tls.path("crl.d/ca.pem"));
    let fresh = portcullis::preflight::Preflight::load(&proxy.dir().join("portcullis.toml"))
        .expect("a fresh start loads the older CRL");
    let (_, material) = fresh.into_parts();
    let loaded = material.listeners[0].as_ref().unwrap();
    assert_eq!(loaded.crls[0].number.as_deref(), Some("5"));
}

/// A FIFO, a symlink to /dev/zero and a 1 GiB (sparse) file in a CRL
/// directory are each refused at once: the poll reports them, `POST
/// /reload` answers, and another listener's new revocation is applied
/// meanwhile; once the file is gone, revocations reach this listener too.
#[tokio::test]
async fn unsafe_files_are_refused_without_blocking_the_poll_or_the_admin_api() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let (a, b) = (TlsDir::new(&pki), TlsDir::new(&pki));
    let proxy = TestProxy::start(&config(
        &db,
        &[("public", a.section("")), ("other", b.section(""))],
    ))
    .await;
    let (mut rx_a, mut rx_b) = (attempts(&proxy, 0), attempts(&proxy, 1));

    type Make = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "fifo.pem",
            Box::new(|p: &Path| {
                let ok = std::process::Command::new("mkfifo")
                    .arg(p)
                    .status()
                    .unwrap();
                assert!(ok.success());
            }),
            "is a FIFO, not a regular file",
        ),
        (
            "zero.crl",
            Box::new(|p: &Path| std::os::unix::fs::symlink("/dev/zero", p).unwrap()),
            "is a character device, not a regular file",
        ),
        (
            "big.pem",
            Box::new(|p: &Path| {
                let f = std::fs::File::create(p).unwrap();
                f.set_len(1 << 30).unwrap();
            }),
            "is 1073741824 bytes, more than the 268435456 bytes",
        ),
    ];
    let mut revoked_on_b = vec![0x102];
    for (i, (name, make, expected)) in cases.iter().enumerate() {
        let bad = a.path("crl.d").join(name);
        reload_after(&mut rx_a, || make(&bad)).await;
        let s = status_of(&proxy, "public").await;
        let error = s["last_reload_error"]["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(expected) && error.contains(name),
            "{name}: {error:?}"
        );

        let r = tokio::time::timeout(Duration::from_secs(30), proxy.admin("POST", "/reload", ""))
            .await
            .unwrap_or_else(|_| panic!("{name}: POST /reload hangs"));
        assert_eq!(r.status, 422, "{name}: {r:?}");
        let report = r.json();
        let error = report["tls"]["public"]["error"].as_str().unwrap();
        assert!(error.contains(expected), "{name}: {report}");
        assert_eq!(report["tls"]["other"]["result"], "unchanged", "{report}");

        // Meanwhile, a revocation on the other listener is applied by the
        // next poll.
        let victim = pki.issue_client(&format!("b{i}"), &format!("b{i}"), 0xb00 + i as u64);
        assert!(served(&proxy, "other", &pki, &victim).await);
        revoked_on_b.push(0xb00 + i as u64);
        let crl = pki.write_crl(
            &format!("b-{i}.pem"),
            &revoked_on_b,
            SystemTime::now() + DAY,
        );
        reload_after(&mut rx_b, || copy_in(&crl, &b.path("crl.d/ca.pem"))).await;
        refused_as_revoked(&proxy, "other", &pki, &victim).await;

        std::fs::remove_file(&bad).unwrap();
    }

    // The bad files are gone: the public listener's revocations work.
    let victim = pki.issue_client("a", "a", 0xa00);
    assert!(served(&proxy, "public", &pki, &victim).await);
    let crl = pki.write_crl("a.pem", &[0x102, 0xa00], SystemTime::now() + DAY);
    reload_after(&mut rx_a, || copy_in(&crl, &a.path("crl.d/ca.pem"))).await;
    let s = status_of(&proxy, "public").await;
    assert_eq!(s["last_reload"]["result"], "success", "{s}");
    refused_as_revoked(&proxy, "public", &pki, &victim).await;
}

/// What `intermediates` accepts, checked at load (start, `check`, reload):
/// CA certificates issued under the `ca` roots. Without it, an
/// intermediate's CRL has no issuer to be checked against.
#[test]
fn intermediates_are_ca_certificates_under_the_roots() {
    let pki = Pki::new();
    let tls = TlsDir::new(&pki);
    let int = pki.intermediate("int-ca", "Intermediate CA", 0x20);
    let load = |extra: &str| {
        let dir = short_tempdir("chk");
        let path = dir.path().join("p.toml");
        let toml = format!(
            r#"[[backend]]
name = "db"
address = "unix:/nonexistent.sock"
[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{}"#,
            tls.section(extra)
        );
        std::fs::write(&path, toml).unwrap();
        portcullis::preflight::Preflight::load(&path)
            .map(|p| p.into_parts().1.listeners[0].take().unwrap())
            .map_err(|e| e.to_string())
    };
    let with_intermediates = format!("intermediates = {:?}\n", tls.path("intermediates.pem"));

    copy_in(&int.cert, &tls.path("intermediates.pem"));
    let int_crl = int.write_crl("int-crl.pem", &[], SystemTime::now() - MINUTE, 1);
    copy_in(&int_crl, &tls.path("crl.d/int.pem"));
    let loaded = load(&with_intermediates).expect("an intermediate of the CA");
    assert_eq!(
        (
            loaded.cas.len(),
            loaded.intermediates.len(),
            loaded.crls.len()
        ),
        (1, 1, 2)
    );
    assert_eq!(loaded.source.clock_skew, Duration::from_secs(300));

    // Without `intermediates`, its CRL has no known issuer.
    let e = load("").unwrap_err();
    assert!(
        e.contains("CRL issued by CN=Intermediate CA") && e.contains("no CA with that name"),
        "{e}"
    );
    std::fs::remove_file(tls.path("crl.d/int.pem")).unwrap();

    copy_in(&pki.app.cert, &tls.path("intermediates.pem"));
    let e = load(&with_intermediates).unwrap_err();
    assert!(
        e.contains("CN=app (serial 64) is not a CA certificate"),
        "{e}"
    );

    copy_in(&pki.other_ca, &tls.path("intermediates.pem"));
    let e = load(&with_intermediates).unwrap_err();
    assert!(
        e.contains("intermediate CA certificate CN=Portcullis Other CA")
            && e.contains("is not issued by a CA of the `ca` bundle"),
        "{e}"
    );

    let e = load(&format!("{with_intermediates}client_auth = \"none\"\n")).unwrap_err();
    assert!(
        e.contains("intermediates is set but client_auth = \"none\""),
        "{e}"
    );
    let e = load("clock_skew = \"soon\"\n").unwrap_err();
    assert!(e.contains("invalid duration \"soon\""), "{e}");
    let loaded = load("clock_skew = \"1m\"\n").unwrap();
    assert_eq!(loaded.source.clock_skew, Duration::from_secs(60));
}
