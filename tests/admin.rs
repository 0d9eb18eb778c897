//! Operations surface (issue "Operations surface"): the admin HTTP API,
//! Prometheus metrics and health, against an in-process portcullis and the
//! real binary, with real mariadbd backends and real clients.
//!
//! HTTP is spoken by hand (HTTP/1.1, `Connection: close`) so these tests do
//! not share a client with the code under test.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::binary::RunningBinary;
use common::client::{plain_opts, server_error_code, socket_opts, tls_opts};
use common::http::{http, request, Reply};
use common::mariadb::{short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::{Pki, CA_CN, SERVER_CN};
use common::proxy::{tls_section, TestProxy};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use portcullis::config::ListenAddr;
use portcullis::state::Lifecycle;
use portcullis::time::rfc3339;
use portcullis::Shutdown;
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token-0123456789";
/// The test CA's distinguished name as x509-parser prints it.
const CA_DN: &str = "CN=Portcullis Test CA, O=portcullis tests";

/// The admin token the tests write next to the config.
fn token_file() -> (&'static str, String) {
    ("admin.token", format!("{TOKEN}\n"))
}

async fn start(toml: &str) -> TestProxy {
    let (name, contents) = token_file();
    TestProxy::start_with_files(toml, &[(name, &contents)]).await
}

async fn get(proxy: &TestProxy, path: &str) -> Reply {
    http(&proxy.admin_addr(), "GET", path, Some(TOKEN)).await
}

async fn metrics(proxy: &TestProxy) -> Metrics {
    let r = get(proxy, "/metrics").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    Metrics::parse(&r.body)
}

/// Polls `/metrics` until `done` holds (sessions are recorded when they
/// end, just after the client sees its last byte).
async fn metrics_when(proxy: &TestProxy, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics(proxy).await;
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------

/// Every sample of one scrape: `name{labels}` → value.
#[derive(Debug)]
struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(|l| {
                    let (series, value) = l.rsplit_once(' ').unwrap();
                    (series.to_string(), value.parse().unwrap())
                })
                .collect(),
        )
    }

    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// Sums every sample of a metric name.
    fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(s, _)| s.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }

    /// Series that changed since `before`, with their change.
    fn delta(&self, before: &Metrics) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(s, v)| (s.clone(), v - before.get(s)))
            .filter(|(_, d)| *d != 0.0)
            .collect()
    }
}

fn pem_der(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap();
    x509_parser::pem::parse_x509_pem(&data).unwrap().1.contents
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn ca_dn_names_the_test_ca() {
    assert!(CA_DN.starts_with(&format!("CN={CA_CN},")));
}

#[tokio::test]
async fn status_lists_the_listeners_and_errors_have_exact_codes() {
    let pki = Pki::new();
    let dir = short_tempdir("st");
    let sock = dir.path().join("local.sock");
    let toml = format!(
        r#"
[[backend]]
name = "db"
address = "unix:{gone}/absent.sock"

[[backend]]
name = "spare"
address = "db2.example.net:3306"

[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{tls}
[[listener]]
name = "local"
address = "unix:{sock}"
route = "spare"
max_connections = 12

[admin]
address = "127.0.0.1:0"
token_file = "admin.token"
"#,
        gone = dir.path().display(),
        tls = tls_section(&pki, "required"),
        sock = sock.display(),
    );
    let proxy = start(&toml).await;

    // Health needs no token.
    let r = http(&proxy.admin_addr(), "GET", "/health", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    // Everything else does.
    for (method, path, token) in [
        ("GET", "/status", None),
        ("GET", "/metrics", Some("test-admin-token-012345678X")),
        ("POST", "/reload", Some("")),
        ("GET", "/nowhere", None),
    ] {
        let r = http(&proxy.admin_addr(), method, path, token).await;
        assert_eq!(r.status, 401, "{method} {path}: {r:?}");
        assert_eq!(
            r.json(),
            json!({"error": "missing or invalid bearer token"})
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"portcullis\"")
        );
    }

    let r = get(&proxy, "/nowhere").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"error": "no such endpoint: /nowhere (endpoints: /health, /health/primary, /health/listener/NAME, /status, /metrics, /reload, /topology, /primary, /listeners/NAME/failover, /sessions, /sessions/ID)"})
    );
    let r = http(&proxy.admin_addr(), "POST", "/status", Some(TOKEN)).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")), "{r:?}");
    assert_eq!(r.json(), json!({"error": "/status accepts GET only"}));
    let r = http(&proxy.admin_addr(), "DELETE", "/reload", Some(TOKEN)).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "{r:?}");
    // Nothing changed on disk: the reload reports exactly that.
    let r = http(&proxy.admin_addr(), "POST", "/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"tls": {"public": {"result": "unchanged"}}, "failover_changed": [], "not_running": []})
    );

    // Status: exactly the listeners and backends of the config.
    let r = get(&proxy, "/status").await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut status = r.json();
    let obj = status.as_object_mut().unwrap();
    let started_at = obj.remove("started_at").unwrap().as_i64().unwrap();
    let now = obj.remove("now").unwrap().as_i64().unwrap();
    let uptime = obj.remove("uptime_seconds").unwrap().as_i64().unwrap();
    assert!(
        started_at <= now && uptime <= now - started_at + 1,
        "{started_at} {now} {uptime}"
    );
    let public_status = obj["listeners"][0].as_object_mut().unwrap();
    let loaded_at = public_status
        .remove("tls_loaded_at")
        .unwrap()
        .as_i64()
        .unwrap();
    let loaded_at_utc = public_status.remove("tls_loaded_at_utc").unwrap();
    assert!(
        loaded_at <= now && loaded_at >= started_at - 5,
        "{loaded_at} {started_at} {now}"
    );
    assert_eq!(loaded_at_utc, json!(rfc3339(loaded_at)));

    let cert_der = pem_der(&pki.server.cert);
    let (_, cert) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
    let not_after = cert.validity().not_after.timestamp();
    let ca_der = pem_der(&pki.ca);
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    let ca_not_after = ca.validity().not_after.timestamp();
    let crl_der = pem_der(&pki.crl);
    let (_, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
    let this_update = crl.last_update().timestamp();
    let next_update = crl.next_update().unwrap().timestamp();
    let public = proxy.tcp_addr("public").to_string();
    assert!(
        public.starts_with("[::1]:") && !public.ends_with(":0"),
        "{public}"
    );
    assert_eq!(
        status,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "state": "serving",
            "listeners": [
                {
                    "name": "public",
                    "address": public,
                    "route": "db",
                    "tls": true,
                    "client_auth": "required",
                    // The provider's defaults: no [listener.tls] policy.
                    "tls_min_version": "1.2",
                    "cipher_suites": portcullis::tls::provider()
                        .cipher_suites
                        .iter()
                        .map(portcullis::config::suites::name)
                        .collect::<Vec<_>>(),
                    "accepting": true,
                    "active_connections": 0,
                    "total_connections": 0,
                    "max_connections": 128,
                    "failover_mode": "off",
                    "outcomes": {},
                    "certificate": {
                        "subject": format!("CN={SERVER_CN}"),
                        "issuer": CA_DN,
                        "serial": "0a",
                        "fingerprint_sha256": sha256_hex(&cert_der),
                        "not_after": not_after,
                        "not_after_utc": rfc3339(not_after),
                    },
                    "cas": [{
                        "subject": CA_DN,
                        "issuer": CA_DN,
                        "serial": "01",
                        "fingerprint_sha256": sha256_hex(&ca_der),
                        "not_after": ca_not_after,
                        "not_after_utc": rfc3339(ca_not_after),
                    }],
                    "last_reload": null,
                    "last_reload_error": null,
                    "certificate_sessions": 0,
                    "identity": null,
                    "crls": [{
                        "issuer": CA_DN,
                        "this_update": this_update,
                        "next_update": next_update,
                        "next_update_utc": rfc3339(next_update),
                        "revoked": 1,
                    }],
                },
                {
                    "name": "local",
                    "address": format!("unix:{}", sock.display()),
                    "route": "spare",
                    "tls": false,
                    "client_auth": null,
                    "tls_min_version": null,
                    "cipher_suites": [],
                    "accepting": true,
                    "active_connections": 0,
                    "total_connections": 0,
                    "max_connections": 12,
                    "failover_mode": "off",
                    "outcomes": {},
                    "certificate": null,
                    "cas": [],
                    "crls": [],
                    "tls_loaded_at": null,
                    "tls_loaded_at_utc": null,
                    "last_reload": null,
                    "last_reload_error": null,
                    "certificate_sessions": 0,
                    "identity": null,
                },
            ],
            "backends": [
                {"name": "db", "address": format!("unix:{}/absent.sock", dir.path().display()), "state": "unmonitored", "tls": false, "server_name": null, "client_certificate": null, "last_reload": null, "last_reload_error": null},
                {"name": "spare", "address": "db2.example.net:3306", "state": "unmonitored", "tls": false, "server_name": null, "client_certificate": null, "last_reload": null, "last_reload_error": null},
            ],
            "admin": {
                "address": proxy.admin_addr().to_string(),
                "mutation": {
                    "enabled": true,
                    "reason": "every request but the /health paths needs the bearer token from [admin] token_file",
                },
                "allowed_hosts": [],
                "health_primary_backend": null,
            },
        })
    );

    // Expiry gauges carry the same instants.
    let m = metrics(&proxy).await;
    assert_eq!(
        m.get(&format!(
            r#"portcullis_certificate_not_after_seconds{{listener="public",role="server",subject="CN={SERVER_CN}",serial="0a"}}"#
        )),
        not_after as f64
    );
    assert_eq!(
        m.get(&format!(
            r#"portcullis_certificate_not_after_seconds{{listener="public",role="ca",subject="{CA_DN}",serial="01"}}"#
        )),
        ca_not_after as f64
    );
    assert_eq!(
        m.get(&format!(
            r#"portcullis_crl_next_update_seconds{{listener="public",issuer="{CA_DN}"}}"#
        )),
        next_update as f64
    );
    assert_eq!(
        m.get(r#"portcullis_tls_loaded_timestamp_seconds{listener="public"}"#),
        loaded_at as f64
    );
    assert_eq!(
        m.get(&format!(
            r#"portcullis_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );

    // `portcullis status` prints the same as tables.
    let admin = proxy.admin_addr().to_string();
    let token_file = proxy.dir().join("admin.token");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["status", "--admin", &admin, "--token-file"])
        .arg(&token_file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = |first: &str, second: &str| {
        rows.iter()
            .find(|r| r.len() > 1 && r[0] == first && r[1] == second)
            .unwrap_or_else(|| panic!("no row {first} {second} in\n{stdout}"))
            .clone()
    };
    assert!(
        stdout.starts_with(&format!(
            "portcullis {}: serving, up ",
            env!("CARGO_PKG_VERSION")
        )),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().nth(1),
        Some(format!("admin API {admin}: changes allowed: every request but the /health paths needs the bearer token from [admin] token_file").as_str()),
        "{stdout}"
    );
    assert_eq!(
        row("LISTENER", "ADDRESS"),
        [
            "LISTENER",
            "ADDRESS",
            "TLS",
            "CLIENT",
            "AUTH",
            "ROUTE",
            "ACTIVE",
            "TOTAL",
            "FAILOVER",
            "ACCEPTING"
        ]
    );
    assert_eq!(
        row("public", &public),
        [
            "public",
            public.as_str(),
            "on",
            "required",
            "db",
            "0",
            "0",
            "off",
            "yes"
        ]
    );
    let local = format!("unix:{}", sock.display());
    assert_eq!(
        row("local", &local),
        [
            "local",
            local.as_str(),
            "off",
            "-",
            "spare",
            "0",
            "0",
            "off",
            "yes"
        ]
    );
    assert_eq!(
        row("spare", "db2.example.net:3306"),
        ["spare", "db2.example.net:3306", "unmonitored"]
    );
    assert_eq!(
        row("public", &format!("CN={SERVER_CN}"))[..3],
        ["public", "CN=localhost", "0a"]
    );

    // A wrong token makes the command fail with the server's reason.
    let bad = proxy.dir().join("bad.token");
    std::fs::write(&bad, "not-the-right-token-at-all\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["status", "--admin", &admin, "--token-file"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("portcullis status: {admin} answered 401 Unauthorized: missing or invalid bearer token\n")
    );
    proxy.stop(Shutdown::Now).await;
}

#[tokio::test]
async fn metrics_move_by_exact_deltas_per_outcome() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("mx");
    let toml = format!(
        r#"
[[backend]]
name = "db"
address = "{db}"

[[backend]]
name = "gone"
address = "unix:{gone}/absent.sock"

[[listener]]
name = "plain"
address = "127.0.0.1:0"
route = "db"

[[listener]]
name = "dead"
address = "127.0.0.1:0"
route = "gone"

[[listener]]
name = "mtls"
address = "[::1]:0"
route = "db"
{tls}
[admin]
address = "127.0.0.1:0"
token_file = "admin.token"
"#,
        db = db.unix_address(),
        gone = dir.path().display(),
        tls = tls_section(&pki, "required"),
    );
    let proxy = start(&toml).await;
    let before = metrics(&proxy).await;
    assert_eq!(before.sum("portcullis_connections_total"), 0.0);

    // relayed
    let mut conn = Conn::new(plain_opts(
        "127.0.0.1",
        proxy.port("plain"),
        NATIVE_USER,
        NATIVE_PASS,
    ))
    .await
    .expect("relay");
    assert_eq!(
        conn.query_first::<i64, _>("SELECT 6*7").await.unwrap(),
        Some(42)
    );
    // While it is open it is an active session.
    let during = metrics(&proxy).await;
    assert_eq!(
        during.get(r#"portcullis_active_sessions{listener="plain"}"#),
        1.0
    );
    // Its bytes count while it is open (a replication stream lasts hours):
    // a 100 000-byte row shows in backend_to_client before the session ends.
    let row: String = conn
        .query_first("SELECT REPEAT('x', 100000)")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.len(), 100_000);
    let down = r#"portcullis_bytes_total{listener="plain",direction="backend_to_client"}"#;
    let up = r#"portcullis_bytes_total{listener="plain",direction="client_to_backend"}"#;
    let live = metrics_when(&proxy, "the open session's bytes", |m| {
        m.get(down) - before.get(down) >= 100_000.0
    })
    .await;
    assert!(live.get(up) > before.get(up), "{live:#?}");
    assert_eq!(
        live.get(r#"portcullis_active_sessions{listener="plain"}"#),
        1.0,
        "still open"
    );
    conn.disconnect().await.unwrap();

    // auth_rejected: the backend says no.
    let err = Conn::new(plain_opts(
        "127.0.0.1",
        proxy.port("plain"),
        NATIVE_USER,
        "wrong",
    ))
    .await
    .expect_err("wrong password");
    assert_eq!(server_error_code(&err), Some(1045), "{err}");

    // tls_required: plaintext client on the mTLS listener.
    let err = Conn::new(plain_opts(
        "::1",
        proxy.port("mtls"),
        NATIVE_USER,
        NATIVE_PASS,
    ))
    .await
    .expect_err("plaintext refused");
    assert_eq!(server_error_code(&err), Some(1045), "{err}");

    // tls_handshake_failed twice: no client certificate, a revoked one.
    let port = proxy.port("mtls");
    for cert in [None, Some(&pki.revoked)] {
        let err = Conn::new(tls_opts(
            "::1",
            port,
            NATIVE_USER,
            NATIVE_PASS,
            &pki.ca,
            cert,
        ))
        .await
        .expect_err("bad client certificate");
        assert_eq!(server_error_code(&err), None, "{err}");
    }

    // backend_unavailable: the backend's socket does not exist.
    let err = Conn::new(plain_opts(
        "127.0.0.1",
        proxy.port("dead"),
        NATIVE_USER,
        NATIVE_PASS,
    ))
    .await
    .expect_err("no backend");
    assert_eq!(server_error_code(&err), Some(1105), "{err}");

    let after = metrics_when(&proxy, "six finished connections", |m| {
        m.sum("portcullis_connections_total") == 6.0 && m.sum("portcullis_active_sessions") == 0.0
    })
    .await;
    let mut delta = after.delta(&before);
    // Byte counts depend on the client's queries; they must move for the
    // relayed session only.
    for dir in ["client_to_backend", "backend_to_client"] {
        let up = delta
            .remove(&format!(
                r#"portcullis_bytes_total{{listener="plain",direction="{dir}"}}"#
            ))
            .unwrap_or(0.0);
        assert!(up > 0.0, "{dir}: {up}");
    }
    // One handshake observed, on "plain": count, sum and every bucket from
    // the one it fell in up to +Inf moved.
    let sum = delta
        .remove(r#"portcullis_handshake_duration_seconds_sum{listener="plain"}"#)
        .unwrap_or(0.0);
    assert!(sum > 0.0 && sum < 20.0, "{sum}");
    let buckets: Vec<(String, f64)> = delta
        .iter()
        .filter(|(s, _)| s.starts_with("portcullis_handshake_duration_seconds_bucket"))
        .map(|(s, v)| (s.clone(), *v))
        .collect();
    assert!(!buckets.is_empty());
    for (s, v) in buckets {
        assert!(s.ends_with(r#",listener="plain"}"#), "{s}");
        assert_eq!(v, 1.0, "{s}");
        delta.remove(&s);
    }
    assert_eq!(
        delta,
        BTreeMap::from(
            [
                (r#"portcullis_connections_total{listener="plain",outcome="relayed"}"#, 1.0),
                (r#"portcullis_connections_total{listener="plain",outcome="auth_rejected"}"#, 1.0),
                (r#"portcullis_connections_total{listener="mtls",outcome="tls_required"}"#, 1.0),
                (r#"portcullis_connections_total{listener="mtls",outcome="tls_handshake_failed"}"#, 2.0),
                (r#"portcullis_connections_total{listener="dead",outcome="backend_unavailable"}"#, 1.0),
                (r#"portcullis_tls_failures_total{listener="mtls",reason="no_client_cert"}"#, 1.0),
                (r#"portcullis_tls_failures_total{listener="mtls",reason="revoked"}"#, 1.0),
                (r#"portcullis_backend_connect_errors_total{listener="dead",backend="gone"}"#, 1.0),
                (r#"portcullis_handshake_duration_seconds_count{listener="plain"}"#, 1.0),
            ]
            .map(|(k, v)| (k.to_string(), v))
        )
    );
    assert_eq!(
        after.get(r#"portcullis_handshake_duration_seconds_bucket{le="+Inf",listener="plain"}"#),
        1.0
    );

    // /status counts the same connections.
    let status = get(&proxy, "/status").await.json();
    let totals: Vec<(&str, u64, &Value)> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap(),
                l["total_connections"].as_u64().unwrap(),
                &l["outcomes"],
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("plain", 2, &json!({"auth_rejected": 1, "relayed": 1})),
            ("dead", 1, &json!({"backend_unavailable": 1})),
            (
                "mtls",
                3,
                &json!({"tls_handshake_failed": 2, "tls_required": 1})
            ),
        ]
    );
    proxy.stop(Shutdown::Now).await;
}

#[tokio::test]
async fn health_flips_to_503_while_draining() {
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("dr");
    let toml = format!(
        r#"
[[backend]]
name = "db"
address = "{db}"

[[listener]]
name = "local"
address = "unix:{dir}/p.sock"
route = "db"

[admin]
address = "unix:{dir}/admin.sock"
"#,
        db = db.unix_address(),
        dir = dir.path().display(),
    );
    let proxy = start(&toml).await;
    let admin_sock = dir.path().join("admin.sock");
    assert_eq!(proxy.admin_addr(), ListenAddr::Unix(admin_sock.clone()));
    // The admin socket is for its owner only.
    let mode = std::fs::metadata(&admin_sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Without a token_file, no token is needed.
    let r = http(&proxy.admin_addr(), "GET", "/health", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");

    let mut conn = Conn::new(socket_opts(
        &dir.path().join("p.sock"),
        NATIVE_USER,
        NATIVE_PASS,
    ))
    .await
    .expect("session through the proxy");
    assert_eq!(
        conn.query_first::<i64, _>("SELECT 1").await.unwrap(),
        Some(1)
    );

    // Exactly what SIGTERM sends.
    let state = proxy.state();
    let mut lifecycle = state.watch_lifecycle();
    proxy.signal(Shutdown::Drain);
    lifecycle
        .wait_for(|l| *l == Lifecycle::Draining)
        .await
        .unwrap();

    let r = http(&proxy.admin_addr(), "GET", "/health", None).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"error": "draining: not accepting new connections, waiting for sessions to finish"})
    );
    let status = http(&proxy.admin_addr(), "GET", "/status", None)
        .await
        .json();
    assert_eq!(status["state"], "draining");
    assert_eq!(status["listeners"][0]["active_connections"], 1);

    // The open session still works, then ends; the proxy stops and takes
    // its admin socket with it.
    assert_eq!(
        conn.query_first::<i64, _>("SELECT 2").await.unwrap(),
        Some(2)
    );
    conn.disconnect().await.unwrap();
    proxy.stop(Shutdown::Drain).await;
    assert_eq!(state.lifecycle(), Lifecycle::Stopped);
    assert!(!admin_sock.exists(), "admin socket left behind");
}

/// The admin API has its own thread and runtime: with the proxy's runtime
/// blocked solid, `/health` still answers.
#[tokio::test(flavor = "current_thread")]
async fn admin_answers_while_the_proxy_runtime_is_blocked() {
    let dir = short_tempdir("bl");
    let toml = format!(
        r#"
[[backend]]
name = "db"
address = "unix:{dir}/absent.sock"

[[listener]]
name = "plain"
address = "127.0.0.1:0"
route = "db"

[admin]
address = "127.0.0.1:0"
"#,
        dir = dir.path().display(),
    );
    let proxy = start(&toml).await;
    let ListenAddr::Tcp(admin) = proxy.admin_addr() else {
        panic!("TCP admin expected")
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(admin).unwrap();
        s.write_all(request("GET", "/health", None, "").as_bytes())
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let _ = tx.send(raw);
    });
    // Blocks this test's only runtime thread, which also runs every proxy
    // task, until the admin answers.
    let raw = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("admin answered while the proxy runtime was blocked");
    let r = Reply::parse(&raw);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    proxy.stop(Shutdown::Now).await;
}

/// Reads JSON log lines until one whose message starts with `message`.
/// SIGTERM to the real binary: health turns 503 while a session drains,
/// and the process exits 0 once it ends.
#[tokio::test]
async fn sigterm_drain_seen_by_keepalived_style_health_check() {
    let db = MariaDb::start_with_users().await;
    let dir = short_tempdir("sg");
    let d = dir.path().display();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[[backend]]\nname = \"db\"\naddress = \"{}\"\n\n[[listener]]\nname = \"local\"\naddress = \"unix:{d}/p.sock\"\nroute = \"db\"\n\n[admin]\naddress = \"unix:{d}/admin.sock\"\n",
            db.unix_address()
        ),
    )
    .unwrap();
    let mut bin = RunningBinary::start(&config).await;
    let admin = ListenAddr::Unix(dir.path().join("admin.sock"));
    let r = http(&admin, "GET", "/health", None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");

    let mut conn = Conn::new(socket_opts(
        &dir.path().join("p.sock"),
        NATIVE_USER,
        NATIVE_PASS,
    ))
    .await
    .expect("session through the proxy");
    bin.signal("TERM");
    // Logged after the proxy has marked itself draining.
    bin.wait_for_log("draining").await;
    let r = http(&admin, "GET", "/health", None).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"error": "draining: not accepting new connections, waiting for sessions to finish"})
    );

    assert_eq!(
        conn.query_first::<i64, _>("SELECT 3").await.unwrap(),
        Some(3)
    );
    conn.disconnect().await.unwrap();
    assert_eq!(bin.wait_exit().await, Some(0));
    assert!(!dir.path().join("admin.sock").exists());
}

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
