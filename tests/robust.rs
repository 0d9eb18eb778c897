//! Robustness (issue "Robustness and security under load, faults and
//! hostile input"): limits, timeouts, hostile clients and misbehaving
//! backends. Every case must end with a clean close, an ERR where the client
//! can read one, and exactly one outcome label — and must not disturb a
//! healthy session running beside it.
//!
//! Misbehaving backends are tiny tokio servers on Unix sockets in this file
//! (a real mariadbd cannot be made to send garbage); the healthy path uses a
//! real mariadbd.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::client::server_error_code;
use common::mariadb::{short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{tls_section, TestProxy};
use common::raw::{fixed_prefix, frame, response_payload, RawClient};
use mysql_async::prelude::*;
use mysql_async::Conn;
use portcullis::protocol::{ErrPacket, Greeting, HandshakeResponse};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;

// ---------------------------------------------------------------------------
// A backend that misbehaves on purpose
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Sends bytes that are not a greeting.
    GarbageGreeting,
    /// Accepts and closes at once.
    CloseAtOnce,
    /// Accepts and never says a word.
    Silent,
    /// Greets, reads the handshake response, closes.
    CloseDuringAuth,
    /// Greets, reads the handshake response, answers with garbage that is
    /// not framed at all (a huge length), then closes.
    GarbageDuringAuth,
    /// Greets, accepts any login, then answers the first query with a
    /// column count and dies.
    DieMidResultSet,
    /// Greets, accepts any login, then stays silent (for the idle timeout).
    AcceptAndIdle,
    /// Greets, answers the response with an auth switch, accepts any
    /// answer, then reads commands until the peer closes, or accepts a
    /// COM_CHANGE_USER and closes.
    SwitchThenCommands,
}

/// A fake backend on a Unix socket in a temp dir; runs until the test ends.
struct FakeBackend {
    _dir: TempDir,
    address: String,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// HandshakeResponses relayed to it for a client (user `app`; the
    /// start-up probe logs in as portcullis's OS user).
    relayed: AtomicUsize,
    /// COM_CHANGE_USER packets it received.
    change_users: AtomicUsize,
}

async fn read_packet(s: &mut UnixStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.ok()?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.ok()?;
    Some(p)
}

const OK_PAYLOAD: &[u8] = &[0x00, 0, 0, 2, 0, 0, 0];

async fn misbehave(mut s: UnixStream, how: Misbehaviour, counts: Arc<Counts>) {
    let greeting = portcullis::protocol::greeting::build_own(&[b'k'; 20], 7, false);
    match how {
        Misbehaviour::GarbageGreeting => {
            let _ = s.write_all(&frame(0, b"\x0bthis is not a greeting")).await;
            return;
        }
        Misbehaviour::CloseAtOnce => return,
        Misbehaviour::Silent => {
            // Hold the socket until the peer goes away.
            let _ = s.read(&mut [0u8; 1]).await;
            return;
        }
        _ => {}
    }
    if s.write_all(&frame(0, &greeting)).await.is_err() {
        return;
    }
    let Some(response) = read_packet(&mut s).await else {
        return;
    };
    if HandshakeResponse::parse(&response).is_ok_and(|r| r.user == "app") {
        counts.relayed.fetch_add(1, Ordering::SeqCst);
    }
    match how {
        Misbehaviour::CloseDuringAuth => {}
        Misbehaviour::GarbageDuringAuth => {
            let _ = s.write_all(b"\xff\xff\xff\x02garbage").await;
        }
        Misbehaviour::DieMidResultSet => {
            let _ = s.write_all(&frame(2, OK_PAYLOAD)).await;
            if read_packet(&mut s).await.is_some() {
                // Column count 1, then nothing: the column definition, rows
                // and EOF never come.
                let _ = s.write_all(&frame(1, &[1])).await;
            }
        }
        Misbehaviour::AcceptAndIdle => {
            let _ = s.write_all(&frame(2, OK_PAYLOAD)).await;
            let _ = s.read(&mut [0u8; 1]).await;
        }
        Misbehaviour::SwitchThenCommands => {
            let switch = b"\xfemysql_native_password\x000123456789abcdefghij\x00";
            if s.write_all(&frame(2, switch)).await.is_err() || read_packet(&mut s).await.is_none()
            {
                return;
            }
            let _ = s.write_all(&frame(4, OK_PAYLOAD)).await;
            while let Some(command) = read_packet(&mut s).await {
                if <[u8]>::first(&command) == Some(&0x11) {
                    // Taken: the new user is in.
                    counts.change_users.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(&frame(1, OK_PAYLOAD)).await;
                    return;
                }
            }
        }
        _ => unreachable!(),
    }
}

impl FakeBackend {
    fn start(how: Misbehaviour) -> FakeBackend {
        let dir = short_tempdir("fb");
        let path = dir.path().join("fake.sock");
        let l = UnixListener::bind(&path).expect("bind fake backend");
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(misbehave(s, how, c.clone()));
            }
        });
        FakeBackend {
            _dir: dir,
            address: format!("unix:{}", path.display()),
            counts,
        }
    }
}

// ---------------------------------------------------------------------------
// Config and observation helpers
// ---------------------------------------------------------------------------

/// One backend `db` at `backend` and one mTLS listener `public` on
/// `[::1]:0`, with extra lines for each section.
fn config(pki: &Pki, backend: &str, backend_extra: &str, listener_extra: &str) -> String {
    format!(
        r#"[[backend]]
name = "db"
address = {backend:?}
{backend_extra}

[[listener]]
name = "public"
address = "[::1]:0"
route = "db"
{listener_extra}
{}"#,
        tls_section(pki, "required")
    )
}

/// A proxy in front of a fake backend that behaves as `how`; the returned
/// values must live as long as the test uses the proxy.
async fn with_fake(
    pki: &Pki,
    how: Misbehaviour,
    backend_extra: &str,
    listener_extra: &str,
) -> (FakeBackend, TestProxy) {
    let fake = FakeBackend::start(how);
    let proxy = TestProxy::start(&config(pki, &fake.address, backend_extra, listener_extra)).await;
    (fake, proxy)
}

fn outcomes(proxy: &TestProxy) -> BTreeMap<String, u64> {
    let state = proxy.state();
    let l = &state.listeners[0];
    l.metrics
        .outcomes()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Waits until every accepted connection has ended with an outcome
/// ([`TestProxy::settle`]), then returns the outcomes.
async fn settled(proxy: &TestProxy) -> BTreeMap<String, u64> {
    proxy.settle().await;
    outcomes(proxy)
}

fn only(label: &str, n: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(label.to_string(), n)])
}

fn err_of(packet: &[u8]) -> ErrPacket {
    ErrPacket::parse(&packet[4..]).unwrap_or_else(|e| panic!("not an ERR ({e}): {packet:?}"))
}

/// Reads until EOF (or a reset: closing with a client's bytes unread is a
/// reset) and returns what came (plaintext side only).
async fn read_to_end(tcp: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    match tcp.read_to_end(&mut v).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read to EOF: {e}"),
    }
    v
}

/// Connects, reads the greeting, does mTLS as `app`, sends a handshake
/// response for `user` at seq 2, and returns the client for the next packet.
async fn tls_login(proxy: &TestProxy, pki: &Pki, payload: &[u8]) -> RawClient {
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    let greeting = c.read_packet().await;
    Greeting::parse(&greeting[4..]).expect("a greeting");
    c.start_tls(pki, Some(&pki.app)).await.expect("TLS");
    c.write_packet(2, payload).await;
    c
}

// ---------------------------------------------------------------------------
// Misbehaving backends
// ---------------------------------------------------------------------------

/// Before the client has seen anything, a broken backend is an unavailable
/// backend: the client still gets TLS, then ERR 1105.
#[tokio::test]
async fn backend_broken_before_its_greeting_gives_1105_after_tls() {
    let pki = Pki::new();
    for (how, label) in [
        (Misbehaviour::GarbageGreeting, "backend_protocol_error"),
        (Misbehaviour::CloseAtOnce, "backend_closed"),
        (Misbehaviour::Silent, "backend_unavailable"),
    ] {
        // A short connect timeout so the silent backend is given up on well
        // before the connection-phase deadline.
        let (_fake, proxy) = with_fake(
            &pki,
            how,
            "connect_timeout = \"200ms\"",
            "handshake_timeout = \"30s\"",
        )
        .await;
        let err = Conn::new(proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS))
            .await
            .expect_err("broken backend");
        assert_eq!(server_error_code(&err), Some(1105), "{how:?}: {err}");
        assert!(
            err.to_string()
                .contains("portcullis: listener 'public': database unavailable"),
            "{how:?}: {err}"
        );
        assert_eq!(settled(&proxy).await, only(label, 1), "{how:?}");
    }
}

/// Once the client has the backend's greeting, a backend failure during
/// authentication is answered at the right sequence id over TLS.
#[tokio::test]
async fn backend_failing_during_auth_gives_1105_at_the_right_seq() {
    let pki = Pki::new();
    for (how, label) in [
        (Misbehaviour::CloseDuringAuth, "backend_closed"),
        (Misbehaviour::GarbageDuringAuth, "backend_protocol_error"),
    ] {
        let (_fake, proxy) = with_fake(&pki, how, "", "").await;
        let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
        let p = c.read_packet().await;
        assert_eq!(
            p[3], 3,
            "{how:?}: ERR follows the response (seq 2 over TLS)"
        );
        let e = err_of(&p);
        assert_eq!(e.code, 1105, "{how:?}");
        assert_eq!(
            e.message,
            "portcullis: listener 'public': backend 'db' failed during authentication; try again"
        );
        assert!(c.at_eof().await, "{how:?}: closed after the ERR");
        assert_eq!(settled(&proxy).await, only(label, 1), "{how:?}");
    }
}

#[tokio::test]
async fn backend_dying_mid_result_set_closes_the_client() {
    let pki = Pki::new();
    let (_fake, proxy) = with_fake(&pki, Misbehaviour::DieMidResultSet, "", "").await;
    let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
    let ok = c.read_packet().await;
    assert_eq!((ok[3], ok[4]), (3, 0x00), "OK at seq 3: {ok:?}");
    c.write_packet(0, b"\x03SELECT 1").await;
    assert_eq!(c.read_packet().await, frame(1, &[1]), "column count");
    assert!(
        c.at_eof().await,
        "the client is closed when the backend dies"
    );
    assert_eq!(settled(&proxy).await, only("relayed", 1));
}

// ---------------------------------------------------------------------------
// Limits and timeouts
// ---------------------------------------------------------------------------

/// Silent and slow clients are cut off at the connection-phase deadline:
/// one that never answers the greeting, one that sends half a header, one
/// that stops in the middle of the TLS handshake.
#[tokio::test]
async fn slow_clients_are_cut_off_at_handshake_timeout() {
    let pki = Pki::new();
    let (_fake, proxy) = with_fake(
        &pki,
        Misbehaviour::AcceptAndIdle,
        "",
        "handshake_timeout = \"300ms\"",
    )
    .await;
    let addr = proxy.tcp_addr("public");

    let mut silent = RawClient::connect(addr).await;
    silent.read_packet().await;
    let mut half_header = RawClient::connect(addr).await;
    half_header.read_packet().await;
    half_header.tcp.write_all(&[0x20, 0x00]).await.unwrap();
    let mut mid_tls = RawClient::connect(addr).await;
    mid_tls.read_packet().await;
    // The SSLRequest alone: the ClientHello never follows.
    mid_tls
        .tcp
        .write_all(&frame(1, &fixed_prefix(true)))
        .await
        .unwrap();

    for (name, c) in [
        ("silent", &mut silent),
        ("half header", &mut half_header),
        ("mid TLS", &mut mid_tls),
    ] {
        let rest = read_to_end(&mut c.tcp).await;
        assert!(rest.is_empty(), "{name}: closed without a word: {rest:?}");
    }
    assert_eq!(settled(&proxy).await, only("handshake_timeout", 3));
}

#[tokio::test]
async fn over_max_connections_gets_1040_after_tls() {
    let pki = Pki::new();
    let (_fake, proxy) =
        with_fake(&pki, Misbehaviour::AcceptAndIdle, "", "max_connections = 2").await;
    // Two sessions hold both slots (authenticated, idle).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
        assert_eq!(c.read_packet().await[4], 0x00, "OK");
        held.push(c);
    }
    // The third completes TLS and is then told.
    let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
    let p = c.read_packet().await;
    assert_eq!(p[3], 3);
    let e = err_of(&p);
    assert_eq!(
        (e.code, &e.sql_state, e.message.as_str()),
        (1040, b"08004", "Too many connections")
    );
    assert!(c.at_eof().await);
    // A real client reads the same.
    let err = Conn::new(proxy.app_opts(&pki, "public", "app", ""))
        .await
        .expect_err("over the limit");
    assert_eq!(server_error_code(&err), Some(1040), "{err}");

    // Freeing a slot lets the next one in.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
        let p = c.read_packet().await;
        if p[4] == 0x00 {
            break;
        }
        assert_eq!(err_of(&p).code, 1040);
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
}

/// A handshake response over `max_handshake_packet` is refused from its
/// header: ERR 1043, nothing more is read.
#[tokio::test]
async fn oversized_handshake_packets_get_bad_handshake() {
    let pki = Pki::new();
    let (_fake, proxy) = with_fake(
        &pki,
        Misbehaviour::AcceptAndIdle,
        "",
        "max_handshake_packet = 4096",
    )
    .await;

    // Over TLS: a response with 8 KiB of "connect attributes".
    let mut big = response_payload("app", true);
    big.resize(8192, b'a');
    let mut c = tls_login(&proxy, &pki, &big).await;
    let p = c.read_packet().await;
    assert_eq!(p[3], 3, "ERR at seq 3 over TLS");
    let e = err_of(&p);
    assert_eq!(
        (e.code, &e.sql_state, e.message.as_str()),
        (1043, b"08S01", "Bad handshake")
    );
    assert!(c.at_eof().await);

    // Before TLS: a header announcing 16 MiB - 1, with no payload behind it.
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    c.read_packet().await;
    c.tcp.write_all(&[0xff, 0xff, 0xff, 0x01]).await.unwrap();
    let p = c.read_packet().await;
    assert_eq!((p[3], err_of(&p).code), (2, 1043));
    assert!(read_to_end(&mut c.tcp).await.is_empty());

    assert_eq!(settled(&proxy).await, only("client_packet_too_large", 2));
}

/// Inside TLS, the HandshakeResponse must come at seq 2, right after the
/// SSLRequest. One out of order — a second SSLRequest's seq 1, a replay at
/// seq 0, a jump ahead — is a bad handshake: ERR 1043 at the next seq, the
/// close, and no backend dialled. (A fuzz run found it relayed, its
/// shifted seq reaching the backend out of order.)
#[tokio::test]
async fn handshake_response_out_of_order_inside_tls_is_a_bad_handshake() {
    let pki = Pki::new();
    let (fake, proxy) = with_fake(&pki, Misbehaviour::AcceptAndIdle, "", "").await;
    let cases: [(u8, &[u8]); 4] = [
        (1, &response_payload("app", true)),
        (0, &response_payload("app", true)),
        (5, &response_payload("app", true)),
        // A second SSLRequest, in order or as the first one was.
        (1, &fixed_prefix(true)),
    ];
    for (seq, payload) in cases {
        let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
        c.read_packet().await;
        c.start_tls(&pki, Some(&pki.app)).await.expect("TLS");
        c.write_packet(seq, payload).await;
        let p = c.read_packet().await;
        let e = err_of(&p);
        assert_eq!(
            (p[3], e.code, &e.sql_state, e.message.as_str()),
            (seq.wrapping_add(1), 1043, b"08S01", "Bad handshake"),
            "response at seq {seq} ({} bytes)",
            payload.len()
        );
        assert!(c.at_eof().await, "closed after the ERR (seq {seq})");
    }
    assert_eq!(settled(&proxy).await, only("client_protocol_error", 4));
    assert_eq!(
        fake.counts.relayed.load(Ordering::SeqCst),
        0,
        "nothing relayed"
    );

    // The same response at seq 2 is relayed.
    let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
    assert_eq!(c.read_packet().await[4], 0x00, "OK");
    assert_eq!(fake.counts.relayed.load(Ordering::SeqCst), 1);
}

/// A client that answers the auth switch and pipelines a command behind
/// its answer, before the backend's OK: the command is not taken for auth
/// data (which would pass it to the backend unchecked) but waits for the
/// command phase, where the door's checks apply. Here a COM_CHANGE_USER to
/// portcullis's own OS user: refused, never reaching the backend.
#[tokio::test]
async fn a_command_pipelined_during_authentication_is_inspected() {
    let pki = Pki::new();
    let (fake, proxy) = with_fake(&pki, Misbehaviour::SwitchThenCommands, "", "").await;
    let me = portcullis::os_user::effective_name().expect("the test user has a name");
    let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
    let switch = c.read_packet().await;
    assert_eq!(
        (switch[3], switch[4]),
        (3, 0xfe),
        "the auth switch at seq 3"
    );
    let mut change_user = vec![0x11];
    change_user.extend_from_slice(me.as_bytes());
    change_user.extend_from_slice(b"\0\0\0\x2d\x00mysql_native_password\0");
    let mut both = frame(4, &[0x5a; 20]);
    both.extend(frame(0, &change_user));
    c.write_raw(&both).await;
    assert_eq!(c.read_packet().await[4], 0x00, "the backend's OK");
    let p = c.read_packet().await;
    let e = err_of(&p);
    assert_eq!((p[3], e.code), (1, 1045), "{e:?}");
    assert!(
        e.message.contains("it is the OS user portcullis runs as"),
        "{e:?}"
    );
    assert!(c.at_eof().await);
    assert_eq!(settled(&proxy).await, only("proxy_user_refused", 1));
    assert_eq!(fake.counts.change_users.load(Ordering::SeqCst), 0);

    // An answer out of order is no answer: Bad handshake.
    let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
    assert_eq!(c.read_packet().await[3], 3);
    c.write_packet(0, &change_user).await;
    let p = c.read_packet().await;
    assert_eq!((p[3], err_of(&p).code), (1, 1043));
    assert!(c.at_eof().await);
    assert_eq!(fake.counts.change_users.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn idle_timeout_closes_quiet_relayed_sessions() {
    let pki = Pki::new();
    let (_fake, proxy) = with_fake(
        &pki,
        Misbehaviour::AcceptAndIdle,
        "",
        "idle_timeout = \"200ms\"",
    )
    .await;
    let mut c = tls_login(&proxy, &pki, &response_payload("app", true)).await;
    assert_eq!(c.read_packet().await[4], 0x00, "OK");
    assert!(c.at_eof().await, "closed once idle");
    assert_eq!(settled(&proxy).await, only("idle_timeout", 1));
}

// ---------------------------------------------------------------------------
// Hostile clients
// ---------------------------------------------------------------------------

/// What one hostile client does after connecting, and what it must see.
struct Hostile {
    name: &'static str,
    /// Bytes sent right after the greeting.
    send: Vec<u8>,
    /// Half-close after sending.
    half_close: bool,
    /// The ERR code expected before the close, if any (read in plaintext).
    err: Option<(u8, u16)>,
    label: &'static str,
}

fn hostile_clients() -> Vec<Hostile> {
    let raw_client_hello = {
        let mut v = vec![
            0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
        ];
        v.extend([0x42; 32]);
        v
    };
    // A response whose auth data length (200) points past the packet's end.
    let mut impossible = fixed_prefix(false);
    impossible.extend_from_slice(b"app\0");
    impossible.push(200);
    impossible.extend_from_slice(b"short");
    vec![
        Hostile {
            name: "HTTP request",
            send: b"GET / HTTP/1.1\r\nHost: db\r\n\r\n".to_vec(),
            half_close: false,
            err: Some((2, 1043)),
            label: "client_packet_too_large",
        },
        Hostile {
            name: "raw TLS ClientHello",
            send: raw_client_hello,
            half_close: false,
            err: None,
            label: "tls_without_sslrequest",
        },
        Hostile {
            name: "wrong sequence id",
            send: frame(7, &fixed_prefix(true)),
            half_close: false,
            err: Some((8, 1043)),
            label: "client_protocol_error",
        },
        Hostile {
            name: "length past the data, then half-close",
            send: vec![0x40, 0x00, 0x00, 0x01, 1, 2, 3],
            half_close: true,
            err: None,
            label: "client_protocol_error",
        },
        Hostile {
            name: "half-close at once",
            send: Vec::new(),
            half_close: true,
            err: None,
            label: "client_closed",
        },
        Hostile {
            name: "impossible field lengths, in clear on a TLS listener",
            send: frame(1, &impossible),
            half_close: false,
            err: Some((2, 1045)),
            label: "tls_required",
        },
        Hostile {
            name: "empty packet",
            send: frame(1, &[]),
            half_close: false,
            err: Some((2, 1045)),
            label: "tls_required",
        },
    ]
}

/// Every hostile client ends with a clean close, the ERR it can read and
/// its outcome label; a session open beside them keeps working, and every
/// connection is accounted for.
#[tokio::test]
async fn hostile_clients_are_answered_and_closed_without_disturbing_others() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let proxy = TestProxy::start(&config(&pki, &db.unix_address(), "", "")).await;
    let addr = proxy.tcp_addr("public");
    let mut healthy = Conn::new(proxy.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS))
        .await
        .expect("healthy session");

    let cases = hostile_clients();
    for h in &cases {
        let mut c = RawClient::connect(addr).await;
        c.read_packet().await;
        c.tcp.write_all(&h.send).await.unwrap();
        if h.half_close {
            c.tcp.shutdown().await.unwrap();
        }
        if let Some((seq, code)) = h.err {
            let p = c.read_packet().await;
            assert_eq!((p[3], err_of(&p).code), (seq, code), "{}", h.name);
        }
        let rest = read_to_end(&mut c.tcp).await;
        assert!(rest.is_empty(), "{}: closed after that: {rest:?}", h.name);
        let v: i64 = healthy
            .query_first(format!("SELECT {}", h.name.len()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, h.name.len() as i64, "healthy session after {}", h.name);
    }

    // Over TLS, a response with impossible field lengths: Bad handshake.
    let mut impossible = fixed_prefix(true);
    impossible.extend_from_slice(b"app\0");
    impossible.push(200);
    let mut c = tls_login(&proxy, &pki, &impossible).await;
    let p = c.read_packet().await;
    assert_eq!((p[3], err_of(&p).code), (3, 1043));
    assert!(c.at_eof().await);

    healthy.disconnect().await.unwrap();
    let mut expected = BTreeMap::new();
    for h in &cases {
        *expected.entry(h.label.to_string()).or_insert(0) += 1;
    }
    *expected
        .entry("client_protocol_error".to_string())
        .or_insert(0) += 1;
    *expected.entry("relayed".to_string()).or_insert(0) += 1;
    assert_eq!(settled(&proxy).await, expected);
}

// ---------------------------------------------------------------------------
// TLS surface (docs/security.md lists it; this keeps the page true)
// ---------------------------------------------------------------------------

#[test]
fn tls_offers_exactly_the_documented_suites() {
    let p = portcullis::tls::provider();
    let suites: Vec<String> = p
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    assert_eq!(
        suites,
        [
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_AES_128_GCM_SHA256",
            "TLS13_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        ]
    );
    let groups: Vec<String> = p
        .kx_groups
        .iter()
        .map(|g| format!("{:?}", g.name()))
        .collect();
    assert_eq!(
        groups,
        ["X25519", "secp256r1", "secp384r1", "X25519MLKEM768"]
    );
}

/// OpenSSL's own MySQL STARTTLS client: TLS 1.2 and 1.3 are accepted, 1.1
/// and 1.0 (allowed on the client side with `@SECLEVEL=0`) refused with an
/// alert and no cipher negotiated.
#[tokio::test]
async fn only_tls_1_2_and_1_3_are_accepted() {
    let pki = Pki::new();
    let (_fake, proxy) = with_fake(&pki, Misbehaviour::AcceptAndIdle, "", "").await;
    let port = proxy.port("public").to_string();
    let s_client = |version: &'static str| {
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(["s_client", "-connect", &format!("[::1]:{port}")])
            .args(["-starttls", "mysql", version])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .arg("-CAfile")
            .arg(&pki.ca)
            .arg("-cert")
            .arg(&pki.app.cert)
            .arg("-key")
            .arg(&pki.app.key)
            .stdin(std::process::Stdio::null());
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().expect("run openssl"))
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    for (version, protocol) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (ok, out) = s_client(version).await;
        assert!(ok, "{version}: {out}");
        assert!(
            out.contains(&format!("Protocol  : {protocol}"))
                || out.contains(&format!("New, {protocol}")),
            "{version}: {out}"
        );
    }
    for version in ["-tls1_1", "-tls1"] {
        let (ok, out) = s_client(version).await;
        assert!(!ok, "{version} must be refused: {out}");
        assert!(
            out.contains("Cipher is (NONE)") && out.contains("alert"),
            "{version}: {out}"
        );
    }
}

// ---------------------------------------------------------------------------
// Key file permissions
// ---------------------------------------------------------------------------

/// `portcullis check` (like every config load) warns about a private key
/// others can read, naming file, mode and fix; a 0600 key gets no warning.
#[test]
fn a_private_key_readable_by_others_is_warned_about_at_load() {
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new();
    let dir = short_tempdir("perm");
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(&cfg, config(&pki, "unix:/nonexistent.sock", "", "")).unwrap();
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["check", "--config"])
            .arg(&cfg)
            .env("PORTCULLIS_LOG", "warn")
            .output()
            .expect("run portcullis check");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let key = &pki.server.key;
    for (mode, who) in [(0o644, "every local user"), (0o640, "its group")] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(mode)).unwrap();
        let stderr = check();
        assert!(
            stderr.contains(&format!(
                "TLS private key {} can be read or changed by {who} (mode {mode:04o}); run `chmod 600 {}`",
                key.display(),
                key.display()
            )),
            "{stderr}"
        );
    }
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = check();
    assert!(!stderr.contains("private key"), "{stderr}");
}

// ---------------------------------------------------------------------------
// What is logged
// ---------------------------------------------------------------------------

/// The per-connection log event names the user and database, and carries
/// neither the auth data nor the connect attributes of the handshake
/// response (docs/security.md, "What is logged").
#[tokio::test]
async fn auth_data_and_connect_attributes_never_reach_the_log() {
    use portcullis::protocol::Capabilities as C;
    let pki = Pki::new();
    let fake = FakeBackend::start(Misbehaviour::AcceptAndIdle);
    let dir = short_tempdir("lg");
    let port = common::mariadb::free_port();
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(
        &cfg,
        config(&pki, &fake.address, "", "").replace("[::1]:0", &format!("[::1]:{port}")),
    )
    .unwrap();
    let mut bin = common::binary::RunningBinary::start(&cfg).await;

    let caps = common::raw::CAPS | C::SSL | C::CONNECT_WITH_DB | C::CONNECT_ATTRS;
    let mut r = fixed_prefix(true);
    r[..4].copy_from_slice(&caps.to_le_bytes());
    r.extend_from_slice(b"alice\0");
    r.push(20);
    r.extend_from_slice(b"AUTHDATA-SECRET-1234");
    r.extend_from_slice(b"shop\0mysql_native_password\0");
    let attrs = b"\x07_secret\x10ATTR-SECRET-5678";
    r.push(attrs.len() as u8);
    r.extend_from_slice(attrs);
    let addr = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let mut c = RawClient::connect(addr).await;
    c.read_packet().await;
    c.start_tls(&pki, Some(&pki.app)).await.expect("TLS");
    c.write_packet(2, &r).await;
    assert_eq!(c.read_packet().await[4], 0x00, "OK");
    drop(c);

    let event = bin.wait_for_log("connection closed").await;
    assert_eq!(event["outcome"], "relayed", "{event}");
    assert_eq!(event["user"], "alice", "{event}");
    assert_eq!(event["database"], "shop", "{event}");
    let text = event.to_string();
    for secret in ["AUTHDATA", "SECRET", "ATTR"] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }
}
