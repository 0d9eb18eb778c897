//! The front door (issue "The front door"): nothing unauthenticated reaches
//! mariadbd; portcullis greets as the backend would; a backend's refusal is
//! told after TLS; and the MariaDB user named like portcullis's own OS user
//! — which mariadbd's `unix_socket` plugin would accept on portcullis's
//! identity — is refused behind a Unix-socket backend.

mod common;

use common::client::{cli_socket_args, cli_tcp_args, cli_tls_args, mariadb_cli, server_error_code};
use common::flood;
use common::mariadb::{MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{mtls_config, tls_section, TestProxy};
use common::raw::{fixed_prefix, frame, RawClient};
use mysql_async::prelude::*;
use mysql_async::{ChangeUserOpts, Conn};
use portcullis::protocol::{Capabilities, Greeting};
use tokio::io::AsyncWriteExt;

async fn current_user(conn: &mut Conn) -> String {
    conn.query_first::<String, _>("SELECT CURRENT_USER()")
        .await
        .expect("query")
        .expect("one row")
}

/// Waits until the start-up probe has learned the backend's greeting, so
/// that it no longer connects (its connection is counted before this).
async fn probed(proxy: &TestProxy) {
    let state = proxy.state();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !state.backends.iter().all(|b| b.greeting_learned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the probe never learned a greeting"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// mariadbd's count of connection attempts so far, and of open connections
/// (each read over its own root connection on the socket, which counts
/// itself).
async fn backend_counts(db: &MariaDb) -> (u64, u64) {
    let mut conn = db.root_conn().await;
    let rows: Vec<(String, String)> = conn
        .query("SHOW GLOBAL STATUS WHERE Variable_name IN ('Connections', 'Threads_connected')")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
    let get = |n: &str| {
        rows.iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .unwrap()
    };
    (get("Connections"), get("Threads_connected"))
}

/// Clients that stop at every step before the door — silent, half a
/// header, an SSLRequest without a ClientHello, TLS done without a
/// HandshakeResponse — cost mariadbd nothing: not one connection attempt.
/// A client that shows its certificate and its response is relayed at once.
#[tokio::test]
async fn nothing_unauthenticated_reaches_the_backend() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let proxy = TestProxy::start(&mtls_config(&pki, &db.unix_address())).await;
    probed(&proxy).await;
    let addr = proxy.tcp_addr("public");
    let (before, open_before) = backend_counts(&db).await;

    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = RawClient::connect(addr).await;
        c.read_packet().await;
        idle.push(c);
    }
    for _ in 0..5 {
        let mut c = RawClient::connect(addr).await;
        c.read_packet().await;
        c.tcp.write_all(&[0x20, 0x00]).await.unwrap();
        idle.push(c);
    }
    for _ in 0..5 {
        let mut c = RawClient::connect(addr).await;
        c.read_packet().await;
        c.tcp
            .write_all(&frame(1, &fixed_prefix(true)))
            .await
            .unwrap();
        idle.push(c);
    }
    let mut tls_only = Vec::new();
    for _ in 0..5 {
        let mut c = RawClient::connect(addr).await;
        c.read_packet().await;
        c.start_tls(&pki, Some(&pki.app)).await.expect("TLS");
        tls_only.push(c);
    }
    let (during, open_during) = backend_counts(&db).await;
    assert_eq!(during, before + 1, "only the status query itself connected");
    assert_eq!(
        open_during, open_before,
        "no backend connection is open for them"
    );

    let mut conn = Conn::new(proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS))
        .await
        .expect("a client with a certificate and a password is relayed");
    assert_eq!(current_user(&mut conn).await, format!("{NATIVE_USER}@%"));
    let (after, _) = backend_counts(&db).await;
    assert_eq!(after, during + 2, "the relayed client and the status query");
    conn.disconnect().await.unwrap();
    drop(idle);
    drop(tls_only);
}

/// portcullis's own greeting says what the backend's says — its version,
/// capabilities (without compression, which it never offers), character set
/// — with a scramble of its own and a connection id no MariaDB thread has.
#[tokio::test]
async fn portcullis_greets_as_the_backend_would() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let proxy = TestProxy::start(&mtls_config(&pki, &db.unix_address())).await;
    probed(&proxy).await;
    let version: String = db.query_first("SELECT VERSION()").await.unwrap();

    let mut scrambles = Vec::new();
    for _ in 0..2 {
        let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
        let p = c.read_packet().await;
        let g = Greeting::parse(&p[4..]).unwrap();
        assert!(
            g.server_version.ends_with(&version),
            "{} is the backend's {version}",
            g.server_version
        );
        assert!(g.connection_id >= 0x8000_0000, "{:#x}", g.connection_id);
        assert!(g.capabilities.has(Capabilities::SSL));
        assert!(!g.capabilities.has(Capabilities::COMPRESS));
        assert!(g.capabilities.has(Capabilities::PLUGIN_AUTH));
        scrambles.push(g.scramble(&p[4..]).unwrap().0);
    }
    assert_ne!(
        scrambles[0], scrambles[1],
        "a new scramble for every client"
    );
}

/// A full backend refuses in two places, and the client is told the same
/// way in both, after TLS, over TLS, with the backend's own code and message
/// — never an ERR before TLS, which Connector/C 3.3.9+ turns into "ERROR
/// 2002 … before completion of TLS handshake". At `max_connections` it
/// still greets but refuses the login of a user without SUPER; one
/// connection later (kept for SUPER) it answers with ERR 1040 instead of a
/// greeting.
#[tokio::test]
async fn a_backend_refusal_is_told_after_tls() {
    backend_refusal_is_told_after_tls(false).await;
}

/// The same with a PROXY protocol header to the backend: a full mariadbd
/// closes without reading it, and its ERR 1040 must still reach the client
/// (not "backend cannot be reached").
#[tokio::test]
async fn a_backend_refusal_is_told_after_tls_behind_a_proxy_header() {
    backend_refusal_is_told_after_tls(true).await;
}

async fn backend_refusal_is_told_after_tls(proxy_protocol: bool) {
    let pki = Pki::new();
    let db = MariaDb::builder()
        .arg("--max-connections=10")
        .arg("--proxy-protocol-networks=::1/128,127.0.0.1/32,localhost")
        .start()
        .await;
    db.exec("CREATE USER plain@'%' IDENTIFIED BY 'plain-pass'; CREATE USER boss@'%' IDENTIFIED BY 'boss-pass'; GRANT SUPER ON *.* TO boss@'%'")
        .await;
    let mut config = mtls_config(&pki, &db.unix_address());
    if proxy_protocol {
        config = config.replace(
            "[[listener]]",
            r#"proxy_protocol = true

[[listener]]"#,
        );
    }
    let proxy = TestProxy::start(&config).await;
    probed(&proxy).await;
    let cli = |user: &str, pass: &str| {
        let mut args = cli_tcp_args("::1", proxy.port("public"), user, pass);
        args.extend(cli_tls_args(&pki.ca, Some(&pki.app)));
        args.extend(["-e".into(), "SELECT 1".into()]);
        args
    };
    let too_many = |out: &common::client::CliOutput| {
        out.status == Some(1)
            && out.stderr.contains("ERROR 1040")
            && out.stderr.contains("Too many connections")
    };
    let mut holders = Vec::new();
    for _ in 0..10 {
        let c = Conn::new(proxy.app_opts(&pki, "public", "plain", "plain-pass"))
            .await
            .expect("under max_connections");
        holders.push(c);
    }
    // Refused at login (the backend's ERR ends authentication).
    let out = mariadb_cli(&cli("plain", "plain-pass")).await;
    assert!(too_many(&out), "{out:?}");
    // The connection kept for SUPER, then refused before any greeting.
    holders.push(
        Conn::new(proxy.app_opts(&pki, "public", "boss", "boss-pass"))
            .await
            .expect("the connection kept for SUPER"),
    );
    let out = mariadb_cli(&cli("plain", "plain-pass")).await;
    assert!(too_many(&out), "{out:?}");
    let err = Conn::new(proxy.app_opts(&pki, "public", "boss", "boss-pass"))
        .await
        .expect_err("the backend is full");
    assert_eq!(server_error_code(&err), Some(1040), "{err}");
    for mut holder in holders {
        holder.query_drop("SELECT 1").await.unwrap();
        holder.disconnect().await.unwrap();
    }
    proxy.settle().await;
    let outcomes = proxy.state().listeners[0].metrics.outcomes();
    let count = |label: &str| {
        outcomes
            .iter()
            .find(|(l, _)| &**l == label)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(
        (count("auth_rejected"), count("backend_refused")),
        (1, 2),
        "{outcomes:?}"
    );
}

/// Makes the MariaDB account named like this process's OS user (`me`, the
/// user portcullis runs as) authenticate `via` (e.g. Debian's default for
/// root: `mysql_native_password USING 'invalid' OR unix_socket`).
async fn trusting_account(db: &MariaDb, me: &str, via: &str) {
    if me == common::mariadb::ROOT_USER {
        db.exec(&format!(
            "ALTER USER '{me}'@'localhost' IDENTIFIED VIA {via}"
        ))
        .await;
    } else {
        db.exec(&format!(
            "CREATE OR REPLACE USER '{me}'@'localhost' IDENTIFIED VIA {via}; GRANT ALL ON *.* TO '{me}'@'localhost'"
        ))
        .await;
    }
}

/// The user portcullis runs as (root here), with a config of a mutual-TLS
/// listener and a plaintext Unix-socket listener in front of `db`'s socket,
/// and a third that allows logging in as that user.
fn proxy_user_config(pki: &Pki, db: &MariaDb) -> String {
    format!(
        r#"[[backend]]
name = "db"
address = {addr:?}

[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{tls}
[[listener]]
name = "local"
address = "unix:local.sock"
route = "db"

[[listener]]
name = "trusting"
address = "unix:trusting.sock"
route = "db"
allow_proxy_user = true
"#,
        addr = db.unix_address(),
        tls = tls_section(pki, "required"),
    )
}

/// Behind a Unix-socket backend, the MariaDB account named like
/// portcullis's own OS user is reachable on portcullis's identity alone
/// (unix_socket): Debian's default root, which asks for a password and
/// takes any, and a pure unix_socket account. portcullis refuses that user
/// name at login, with or without a password, over mutual TLS and over a
/// plaintext Unix listener; the account still works on the database's own
/// socket. `allow_proxy_user = true` shows why: then any password gets in.
#[tokio::test]
async fn the_proxy_os_user_is_refused_behind_a_unix_socket() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let me = portcullis::os_user::effective_name().expect("the test user has a name");
    let proxy = TestProxy::start(&proxy_user_config(&pki, &db)).await;
    probed(&proxy).await;
    let want = format!(
        "portcullis: listener 'public': access denied for user '{me}': it is the OS user portcullis runs as, which the database would trust by its Unix socket (unix_socket authentication); log in as another user"
    );

    for via in [
        // Debian's default root.
        "mysql_native_password USING 'invalid' OR unix_socket",
        "unix_socket",
    ] {
        trusting_account(&db, me, via).await;
        for pass in ["wrong", ""] {
            let err = Conn::new(proxy.app_opts(&pki, "public", me, pass))
                .await
                .expect_err("refused at the door");
            assert_eq!(server_error_code(&err), Some(1045), "{err}");
            assert!(err.to_string().contains(&want), "{err}");
            let mut args = cli_socket_args(&proxy.socket_path("local"), me, pass);
            args.extend(["-e".into(), "SELECT CURRENT_USER()".into()]);
            let out = mariadb_cli(&args).await;
            assert_eq!(out.status, Some(1), "{out:?}");
            assert!(out.stderr.contains("ERROR 1045"), "{out:?}");
            assert!(
                out.stderr.contains("it is the OS user portcullis runs as"),
                "{out:?}"
            );
        }
        // Nor by COM_CHANGE_USER later in a session: refused before it
        // reaches the backend, and the session is closed.
        let mut conn = Conn::new(proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS))
            .await
            .unwrap();
        let opts = ChangeUserOpts::default()
            .with_user(Some(me.to_string()))
            .with_pass(Some("wrong".to_string()));
        let err = conn.change_user(opts).await.expect_err("refused");
        assert_eq!(server_error_code(&err), Some(1045), "{err}");
        assert!(err.to_string().contains(&want), "{err}");
        assert!(
            conn.query_drop("SELECT 1").await.is_err(),
            "the session is closed"
        );
        // The account itself is fine on the database's own socket.
        let mut conn = Conn::new(db.socket_opts(me, "")).await.unwrap();
        assert_eq!(current_user(&mut conn).await, format!("{me}@localhost"));
        conn.disconnect().await.unwrap();
        // What the door prevents: with the listener allowing it, a wrong
        // password is enough.
        let mut args = cli_socket_args(&proxy.socket_path("trusting"), me, "wrong");
        args.extend(["-e".into(), "SELECT CURRENT_USER() AS u".into()]);
        let out = mariadb_cli(&args).await;
        assert_eq!(out.status, Some(0), "{out:?}");
        assert_eq!(out.stdout.trim(), format!("u\n{me}@localhost"), "{out:?}");
    }
    proxy.settle().await;
    let state = proxy.state();
    for (listener, refused) in [("public", 6), ("local", 4)] {
        let l = state
            .listeners
            .iter()
            .find(|l| l.name() == listener)
            .unwrap();
        let outcomes = l.metrics.outcomes();
        assert!(
            outcomes
                .iter()
                .any(|(o, n)| &**o == "proxy_user_refused" && *n == refused),
            "{listener}: {outcomes:?}"
        );
    }
}

/// The start-up probe, in `run` and in `check`, names the account that
/// trusts portcullis's OS user and says how to fix it.
#[tokio::test]
async fn the_probe_names_the_account_that_trusts_portcullis() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let me = portcullis::os_user::effective_name().expect("the test user has a name");
    trusting_account(
        &db,
        me,
        "mysql_native_password USING 'invalid' OR unix_socket",
    )
    .await;
    let dir = common::mariadb::short_tempdir("probe");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, mtls_config(&pki, &db.unix_address())).unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["--log-format", "json", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("\"account\""))
        .unwrap_or_else(|| panic!("no probe finding in: {stderr}"));
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["level"], "ERROR", "{event}");
    assert_eq!(event["account"], format!("'{me}'@'localhost'"), "{event}");
    assert_eq!(event["backend"], "db", "{event}");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("run portcullis as an OS user with no MariaDB account of that name"),
        "{event}"
    );

    let mut bin = common::binary::RunningBinary::start(&config).await;
    let event = bin.wait_for_log("the MariaDB account").await;
    assert_eq!(event["account"], format!("'{me}'@'localhost'"), "{event}");

    // Once the account no longer trusts the socket peer, the probe is quiet.
    trusting_account(&db, me, "mysql_native_password USING PASSWORD('x')").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["--log-format", "json", "check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("\"account\""), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

// ---------------------------------------------------------------------------
// Pre-authentication limits, attacked: the waiting room holds at most
// `max_unauthenticated` connections, `max_unauthenticated_per_source` from
// one source, each for at most `tls_handshake_timeout` before it shows a
// verified certificate; the oldest makes room for the newest.

/// One mutual-TLS listener `public` on 127.0.0.1 (IPv4, so that clients can
/// come from any 127.0.0.0/8 source) in front of `db`'s socket, with
/// `limits` (listener lines) added.
fn door_config(pki: &Pki, db: &MariaDb, limits: &str) -> String {
    format!(
        r#"[[backend]]
name = "db"
address = {:?}

[[listener]]
name = "public"
address = "127.0.0.1:0"
route = "db"
{limits}
{}"#,
        db.unix_address(),
        tls_section(pki, "required"),
    )
}

/// A legitimate mTLS client from 127.0.0.1: logs in and queries.
async fn legitimate_login(proxy: &TestProxy, pki: &Pki) {
    let opts = common::client::tls_opts(
        "127.0.0.1",
        proxy.port("public"),
        NATIVE_USER,
        NATIVE_PASS,
        &pki.ca,
        Some(&pki.app),
    );
    let mut conn = Conn::new(opts).await.expect("a legitimate client logs in");
    assert_eq!(current_user(&mut conn).await, format!("{NATIVE_USER}@%"));
    conn.disconnect().await.unwrap();
}

/// Opens one attacker connection per entry of `from` (its source and what
/// it sends before it stalls), each waiting in a task until portcullis
/// closes it.
async fn attack(
    addr: std::net::SocketAddr,
    from: impl IntoIterator<Item = (std::net::Ipv4Addr, Vec<u8>)>,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for (source, bytes) in from {
        let mut s = flood::connect_from(source, addr).await.expect("connect");
        flood::stall(&mut s, &bytes).await.expect("send");
        set.spawn(flood::closed(s));
    }
    set
}

/// After an attack: the waiting room empties once the attackers are gone,
/// every connection is counted, and mariadbd saw exactly `logins`
/// connections besides the status queries since `before` (its Connections
/// counter) — the legitimate ones.
async fn after_the_attack(proxy: &TestProxy, db: &MariaDb, before: u64, logins: u64) {
    flood::wait_until("the waiting room is empty", || {
        flood::waiting(proxy, "public") == 0
    })
    .await;
    proxy.settle().await;
    let (after, _) = backend_counts(db).await;
    assert_eq!(
        after,
        before + logins + 1,
        "mariadbd saw only the legitimate logins (and this status query)"
    );
}

/// Twenty silent connections from one source, with
/// `max_unauthenticated_per_source = 4`: the sixteen oldest are closed to
/// make room (`unauthenticated_evicted`), four stay, mariadbd sees none of
/// them; a legitimate client from the same source still logs in, making
/// room for itself the same way.
#[tokio::test]
async fn a_flood_from_one_source_evicts_its_own_oldest() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let limits = r#"max_unauthenticated_per_source = 4
tls_handshake_timeout = "60s"
handshake_timeout = "60s""#;
    let proxy = TestProxy::start(&door_config(&pki, &db, limits)).await;
    probed(&proxy).await;
    let (before, _) = backend_counts(&db).await;

    let me = std::net::Ipv4Addr::LOCALHOST;
    let mut flood = attack(proxy.tcp_addr("public"), (0..20).map(|_| (me, Vec::new()))).await;
    for _ in 0..16 {
        flood.join_next().await.expect("an attacker").unwrap();
    }
    assert_eq!(flood.len(), 4, "four are still open");
    assert_eq!(flood::waiting(&proxy, "public"), 4);
    assert_eq!(flood::evicted(&proxy, "public"), 16);
    // Connections counts every attempt: none for the flood, only the
    // status query itself.
    let (during, _) = backend_counts(&db).await;
    assert_eq!(during, before + 1, "no backend connection for the flood");

    legitimate_login(&proxy, &pki).await;
    assert_eq!(
        flood::evicted(&proxy, "public"),
        17,
        "the oldest made room for it"
    );
    assert_eq!(flood::waiting(&proxy, "public"), 3);
    flood.shutdown().await;
    after_the_attack(&proxy, &db, during, 1).await;
    assert_eq!(
        flood::outcome_count(&proxy, "public", "unauthenticated_evicted"),
        17
    );
    assert_eq!(flood::outcome_count(&proxy, "public", "relayed"), 1);
}

/// Forty connections from forty sources, silent or stalled after the
/// SSLRequest, with `max_unauthenticated = 16`: the per-source limit never
/// applies, the listener's does — the 24 oldest are closed to make room,
/// and a legitimate client from yet another source still logs in.
#[tokio::test]
async fn a_flood_from_many_sources_evicts_the_oldest_overall() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let limits = r#"max_unauthenticated = 16
tls_handshake_timeout = "60s"
handshake_timeout = "60s""#;
    let proxy = TestProxy::start(&door_config(&pki, &db, limits)).await;
    probed(&proxy).await;
    let (before, _) = backend_counts(&db).await;

    let from = (2..42u8).map(|i| {
        let bytes = if i % 2 == 0 {
            Vec::new()
        } else {
            flood::ssl_request()
        };
        (std::net::Ipv4Addr::new(127, 0, 0, i), bytes)
    });
    let mut flood = attack(proxy.tcp_addr("public"), from).await;
    for _ in 0..24 {
        flood.join_next().await.expect("an attacker").unwrap();
    }
    assert_eq!(flood.len(), 16);
    assert_eq!(flood::waiting(&proxy, "public"), 16);
    assert_eq!(flood::evicted(&proxy, "public"), 24);
    let (during, _) = backend_counts(&db).await;
    assert_eq!(during, before + 1, "no backend connection for the flood");

    legitimate_login(&proxy, &pki).await;
    assert_eq!(flood::evicted(&proxy, "public"), 25);
    flood.shutdown().await;
    after_the_attack(&proxy, &db, during, 1).await;
    assert_eq!(
        flood::outcome_count(&proxy, "public", "unauthenticated_evicted"),
        25
    );
    assert_eq!(flood::outcome_count(&proxy, "public", "relayed"), 1);
}

/// A client that sends nothing, one that sends the SSLRequest and stalls,
/// and one that stalls halfway through its ClientHello are closed once
/// `tls_handshake_timeout` has passed since accept
/// (`tls_handshake_timeout`), long before `handshake_timeout`; none of them
/// costs mariadbd a connection.
#[tokio::test]
async fn clients_that_show_no_certificate_in_time_are_closed() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let limits = "tls_handshake_timeout = \"300ms\"\nhandshake_timeout = \"600s\"";
    let proxy = TestProxy::start(&door_config(&pki, &db, limits)).await;
    probed(&proxy).await;
    let (before, _) = backend_counts(&db).await;

    let me = std::net::Ipv4Addr::LOCALHOST;
    let stalls = [
        Vec::new(),
        flood::ssl_request(),
        flood::stalled_tls_prefix(&pki),
    ];
    let mut flood = attack(proxy.tcp_addr("public"), stalls.map(|b| (me, b))).await;
    while let Some(closed) = flood.join_next().await {
        closed.unwrap();
    }
    after_the_attack(&proxy, &db, before, 0).await;
    assert_eq!(
        flood::outcome_count(&proxy, "public", "tls_handshake_timeout"),
        3
    );
    assert_eq!(
        flood::outcome_count(&proxy, "public", "handshake_timeout"),
        0
    );
    assert_eq!(flood::evicted(&proxy, "public"), 0);
}
