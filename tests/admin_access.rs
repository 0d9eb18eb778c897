//! Admin API safe by default (issue 22): slow clients without a token
//! cannot starve `/health`, changes need the token on TCP (or a Unix
//! socket whose mode is the control), and `Host` must name this server.
//!
//! HTTP is spoken by hand over real sockets, against an in-process
//! portcullis and the real binary.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{http, http_body, raw, request_to, Reply};
use common::mariadb::short_tempdir;
use common::proxy::{absent_backend, TestProxy};
use portcullis::config::ListenAddr;
use portcullis::Shutdown;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "test-admin-token-0123456789";
/// Attackers of each kind: more than the API's 64 connection slots.
const ATTACKERS: usize = 80;
/// `/health` probes made while the attack runs.
const PROBES: usize = 60;

const READ_ONLY: &str = "the admin API listens on TCP without [admin] token_file, so it serves GET only; set token_file, or listen on a unix: socket, to allow PUT, POST and DELETE";

/// One listener routed to a backend nobody listens on (health only needs
/// the listener to accept), plus `admin`.
fn config(backend: &str, admin: &str) -> String {
    format!(
        "[[backend]]\nname = \"db\"\naddress = {backend:?}\n\n[[listener]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\nroute = \"db\"\n\n[admin]\n{admin}"
    )
}

async fn start(admin: &str) -> (TestProxy, tempfile::TempDir) {
    let (dir, backend) = absent_backend();
    let proxy = TestProxy::start_with_files(
        &config(&backend, admin),
        &[("admin.token", &format!("{TOKEN}\n"))],
    )
    .await;
    (proxy, dir)
}

fn tcp(proxy: &TestProxy) -> std::net::SocketAddr {
    match proxy.admin_addr() {
        ListenAddr::Tcp(a) => a,
        other => panic!("TCP admin expected, got {other}"),
    }
}

/// Counts what the attackers saw, and when all of them are in.
#[derive(Default)]
struct Attack {
    stop: AtomicBool,
    /// Attackers that have connected and sent their first bytes.
    started: AtomicU64,
    /// Slow-header connections the server closed (evicted or timed out).
    headers_closed: AtomicU64,
    /// Slow-body requests answered 401 before their body was read.
    bodies_refused: AtomicU64,
    /// Slow-body connections closed without an answer: evicted to make
    /// room before their head was read.
    bodies_evicted: AtomicU64,
    /// Anything else a slow-body attacker got (must stay empty).
    unexpected: std::sync::Mutex<Vec<String>>,
    ready: tokio::sync::Notify,
}

impl Attack {
    fn started_one(&self, first: &mut bool) {
        if std::mem::take(first)
            && self.started.fetch_add(1, Ordering::SeqCst) + 1 == 2 * ATTACKERS as u64
        {
            self.ready.notify_one();
        }
    }
}

/// Slowloris on the headers: a request line and one header, then one more
/// header byte every 100 ms, never the blank line. Reconnects whenever the
/// server closes the connection.
async fn slow_headers(addr: std::net::SocketAddr, attack: Arc<Attack>) {
    let mut first = true;
    while !attack.stop.load(Ordering::SeqCst) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        if s.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .is_err()
        {
            continue;
        }
        attack.started_one(&mut first);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if attack.stop.load(Ordering::SeqCst) || s.write_all(b"X").await.is_err() {
                        break;
                    }
                }
                n = s.read(&mut buf) => {
                    // Closed by the server (or an error answer, then closed).
                    if matches!(n, Ok(0) | Err(_)) {
                        break;
                    }
                }
            }
        }
        if !attack.stop.load(Ordering::SeqCst) {
            attack.headers_closed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Slowloris on the body: a whole head announcing 100 000 bytes, without a
/// token, then only the first few bytes. Reconnects after each answer.
async fn slow_body(addr: std::net::SocketAddr, attack: Arc<Attack>) {
    let mut first = true;
    while !attack.stop.load(Ordering::SeqCst) {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            continue;
        };
        let head = "PUT /listeners/public/failover HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"mode\": ";
        if s.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        attack.started_one(&mut first);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        if attack.stop.load(Ordering::SeqCst) && answer.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(&answer);
        if answer.is_empty() {
            attack.bodies_evicted.fetch_add(1, Ordering::SeqCst);
        } else if text.starts_with("HTTP/1.1 401 ")
            && text.contains("missing or invalid bearer token")
        {
            attack.bodies_refused.fetch_add(1, Ordering::SeqCst);
        } else {
            attack.unexpected.lock().unwrap().push(text.into_owned());
        }
    }
}

/// `GET path` with a blocking socket (10 s read deadline).
fn blocking_get(addr: std::net::SocketAddr, path: &str) -> Reply {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request_to("localhost", "GET", path, None, "").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
    assert!(!raw.is_empty(), "{path}: closed without an answer");
    Reply::parse(&raw)
}

/// 80 slow-header and 80 slow-body attackers, none with a token, keep
/// every connection slot busy; meanwhile `/health` (and a listener's health)
/// is answered every time, within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_without_a_token_cannot_starve_health() {
    let (proxy, _dir) = start("address = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n").await;
    let addr = tcp(&proxy);
    let attack = Arc::new(Attack::default());
    let mut tasks = Vec::new();
    for _ in 0..ATTACKERS {
        tasks.push(tokio::spawn(slow_headers(addr, attack.clone())));
        tasks.push(tokio::spawn(slow_body(addr, attack.clone())));
    }
    tokio::time::timeout(Duration::from_secs(30), attack.ready.notified())
        .await
        .expect("every attacker connected");

    // The probes run on their own thread with blocking sockets, as
    // keepalived's curl runs in its own process: not queued behind the
    // attackers' tasks.
    let probes = std::thread::spawn(move || {
        let mut times = Vec::new();
        for i in 0..PROBES {
            let path = if i % 2 == 0 {
                "/health"
            } else {
                "/health/listener/public"
            };
            let t = Instant::now();
            let r = blocking_get(addr, path);
            let took = t.elapsed();
            assert_eq!(r.status, 200, "probe {i} {path}: {r:?}");
            assert!(r.body.starts_with("ok"), "probe {i} {path}: {r:?}");
            times.push(took);
        }
        times
    });
    let times = tokio::task::spawn_blocking(move || probes.join())
        .await
        .unwrap()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    let slowest = times.iter().max().copied().unwrap_or_default();
    let total: Duration = times.iter().sum();
    // The issue's bound, with the attack running.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest probe {slowest:?}: {times:?}"
    );
    eprintln!(
        "{PROBES} health probes under attack: slowest {slowest:?}, mean {:?}; slow-header connections closed by the server: {}; slow bodies refused: {}, closed unanswered: {}",
        total / PROBES as u32,
        attack.headers_closed.load(Ordering::SeqCst),
        attack.bodies_refused.load(Ordering::SeqCst),
        attack.bodies_evicted.load(Ordering::SeqCst),
    );
    attack.stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    // The slots really were contested: the server closed slow-header
    // connections to answer the probes (with 160 attackers on 64 slots).
    assert!(attack.headers_closed.load(Ordering::SeqCst) > 0);
    // A body without a token is never waited for: 401 from the head (or
    // closed unanswered to make room), never anything else.
    assert!(attack.bodies_refused.load(Ordering::SeqCst) >= ATTACKERS as u64);
    assert_eq!(*attack.unexpected.lock().unwrap(), Vec::<String>::new());
    // Nothing changed.
    let r = http(
        &proxy.admin_addr(),
        "GET",
        "/listeners/public/failover",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.json()["mode"], "off", "{r:?}");
    proxy.stop(Shutdown::Now).await;
}

/// A silent connection is closed after the header deadline; a client with
/// the token that stops sending its body gets 408 after the body deadline.
#[tokio::test]
async fn header_and_body_deadlines_close_stuck_clients() {
    let (proxy, _dir) = start("address = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n").await;
    let addr = tcp(&proxy);
    let silent = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        // EOF: closed by the server without an answer (hyper answers a
        // header timeout by closing).
        s.read_to_end(&mut buf).await.unwrap();
        buf
    };
    let stuck_body = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("PUT /listeners/public/failover HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{\"mode\"").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        Reply::parse(&buf)
    };
    let (silent, stuck) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(silent, stuck_body)
    })
    .await
    .expect("both closed by the server");
    assert_eq!(silent, b"", "no answer to a request never sent");
    assert_eq!(stuck.status, 408, "{stuck:?}");
    assert_eq!(
        stuck.json(),
        json!({"error": "the request body did not arrive within 5s"})
    );
    let r = http(
        &proxy.admin_addr(),
        "GET",
        "/listeners/public/failover",
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.json()["mode"], "off", "{r:?}");
    proxy.stop(Shutdown::Now).await;
}

const SWITCH: &str = r#"{"mode": "on", "target": "db2.example.net:3307"}"#;

#[tokio::test]
async fn on_tcp_without_a_token_changes_are_refused_with_the_reason() {
    let (proxy, _dir) = start("address = \"127.0.0.1:0\"\n").await;
    let admin = proxy.admin_addr();
    for (method, path, body) in [
        ("PUT", "/listeners/public/failover", SWITCH),
        ("POST", "/reload", ""),
        ("POST", "/primary", r#"{"backend": "db"}"#),
        ("DELETE", "/primary", ""),
    ] {
        let r = http_body(&admin, method, path, None, body).await;
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
        assert_eq!(r.json(), json!({ "error": READ_ONLY }), "{method} {path}");
    }
    // Reading works, and says why changes do not.
    let r = http(&admin, "GET", "/listeners/public/failover", None).await;
    assert_eq!((r.status, &r.json()["mode"]), (200, &json!("off")), "{r:?}");
    let status = http(&admin, "GET", "/status", None).await.json();
    assert_eq!(
        status["admin"],
        json!({
            "address": admin.to_string(),
            "mutation": {"enabled": false, "reason": READ_ONLY},
            "allowed_hosts": [],
            "health_primary_backend": null,
        })
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().nth(1),
        Some(format!("admin API {admin}: changes REFUSED: {READ_ONLY}").as_str()),
        "{stdout}"
    );
    proxy.stop(Shutdown::Now).await;
}

#[tokio::test]
async fn on_tcp_with_a_token_changes_need_it() {
    let (proxy, _dir) = start("address = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n").await;
    let admin = proxy.admin_addr();
    let r = http_body(&admin, "PUT", "/listeners/public/failover", None, SWITCH).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"error": "missing or invalid bearer token"})
    );
    let r = http_body(
        &admin,
        "PUT",
        "/listeners/public/failover",
        Some(TOKEN),
        SWITCH,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["mode"], "on");
    proxy.stop(Shutdown::Now).await;
}

/// On a Unix socket without a token, the socket's mode is the control:
/// `0600` by default, anyone who can open it may change the proxy.
#[tokio::test]
async fn on_a_0600_unix_socket_changes_need_no_token() {
    let (proxy, _dir) = start("address = \"unix:admin.sock\"\n").await;
    let ListenAddr::Unix(path) = proxy.admin_addr() else {
        panic!("unix admin expected")
    };
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Bound in a private directory, then renamed: nothing left over.
    let leftovers: Vec<_> = std::fs::read_dir(proxy.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".a"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    let r = http_body(
        &proxy.admin_addr(),
        "PUT",
        "/listeners/public/failover",
        None,
        SWITCH,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["target"], "db2.example.net:3307");
    // Any Host is fine on a socket (a browser cannot open one).
    let r = raw(
        &proxy.admin_addr(),
        &request_to(
            "evil.example",
            "GET",
            "/listeners/public/failover",
            None,
            "",
        ),
    )
    .await;
    assert_eq!((r.status, &r.json()["mode"]), (200, &json!("on")), "{r:?}");
    let status = http(&proxy.admin_addr(), "GET", "/status", None)
        .await
        .json();
    assert_eq!(status["admin"]["mutation"]["enabled"], true, "{status}");
    proxy.stop(Shutdown::Now).await;
}

/// `socket_mode = "0660"` with `socket_group`: the socket belongs to that
/// group, which may open it.
#[tokio::test]
async fn socket_mode_0660_gives_the_socket_to_its_group() {
    // A group this process may give files to: its own (the group new files
    // get).
    let probe = short_tempdir("gid");
    std::fs::write(probe.path().join("f"), "").unwrap();
    let gid = std::fs::metadata(probe.path().join("f")).unwrap().gid();
    let (proxy, _dir) = start(&format!(
        "address = \"unix:admin.sock\"\nsocket_mode = \"0660\"\nsocket_group = \"{gid}\"\n"
    ))
    .await;
    let ListenAddr::Unix(path) = proxy.admin_addr() else {
        panic!("unix admin expected")
    };
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    let r = http_body(
        &proxy.admin_addr(),
        "PUT",
        "/listeners/public/failover",
        None,
        SWITCH,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    proxy.stop(Shutdown::Now).await;
}

#[tokio::test]
async fn host_must_be_an_ip_localhost_or_an_allowed_name() {
    let (proxy, _dir) = start(
        "address = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\nallowed_hosts = [\"admin.example.net\"]\n",
    )
    .await;
    let admin = proxy.admin_addr();
    let port = tcp(&proxy).port();
    let refused = |host: &str| {
        format!("Host {host:?} is not an IP address, localhost or a name in [admin] allowed_hosts; this admin API does not answer for it (a browser page from another site may be trying to reach it through DNS rebinding)")
    };
    // DNS rebinding: a name pointed at 127.0.0.1 by someone else. Refused
    // for every path, health included, token or not.
    for (path, token) in [("/health", None), ("/status", Some(TOKEN))] {
        let r = raw(
            &admin,
            &request_to(&format!("evil.example:{port}"), "GET", path, token, ""),
        )
        .await;
        assert_eq!(r.status, 421, "{path}: {r:?}");
        assert_eq!(r.json(), json!({ "error": refused("evil.example") }));
    }
    let r = raw(
        &admin,
        &request_to(
            "admin.example.net.attacker.example",
            "PUT",
            "/listeners/public/failover",
            Some(TOKEN),
            SWITCH,
        ),
    )
    .await;
    assert_eq!(r.status, 421, "{r:?}");
    // An absolute-form target names its own host, which is checked too.
    let r = raw(
        &admin,
        &request_to("localhost", "GET", "http://evil.example/health", None, ""),
    )
    .await;
    assert_eq!(r.status, 421, "{r:?}");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
        format!("LOCALHOST:{port}"),
        format!("admin.example.net:{port}"),
        "Admin.Example.Net".to_string(),
        // No Host at all (an HTTP/1.0 script): no browser sends that.
        String::new(),
    ] {
        let r = raw(&admin, &request_to(&host, "GET", "/health", None, "")).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "ok"),
            "Host {host:?}: {r:?}"
        );
    }
    let r = raw(
        &admin,
        &request_to(
            "admin.example.net",
            "PUT",
            "/listeners/public/failover",
            Some(TOKEN),
            SWITCH,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    proxy.stop(Shutdown::Now).await;
}

/// The real binary says at start that its TCP admin API is read-only, and
/// why.
#[test]
fn the_start_log_says_a_tcp_admin_without_a_token_is_read_only() {
    use std::io::BufRead;
    let (_absent, backend) = absent_backend();
    let dir = short_tempdir("ro");
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, config(&backend, "address = \"127.0.0.1:0\"\n")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("PORTCULLIS_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut admin_line = None;
    // Until "serving", the process' end, or 20 s without a line.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let message = v["message"].as_str().unwrap_or_default().to_string();
        if message.starts_with("admin API listening") {
            admin_line = Some(v);
        } else if message.starts_with("serving") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let v = admin_line.expect("an admin API log line before \"serving\"");
    assert_eq!(v["level"], "WARN", "{v}");
    assert_eq!(v["mutation"], "disabled", "{v}");
    assert_eq!(
        v["message"],
        format!("admin API listening, read-only: {READ_ONLY}"),
        "{v}"
    );
}
