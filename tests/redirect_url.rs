//! The `redirect_url` form of the failover redirect (issue "Redirects that
//! real clients follow"): the OK that ends authentication, byte for byte,
//! from a scripted backend (Debian's MariaDB 10.11 has no `redirect_url` of
//! its own) with and without a session-state block and with
//! CLIENT_DEPRECATE_EOF on and off; a backend's own tracker renamed or
//! kept; the choice of form per client; the fallbacks to the error form;
//! what MariaDB Connector/J 3.5 and the Node.js connector parse out of the
//! bytes, transcribed from their sources; the real server's OK; runtime
//! control and the metric. The Node.js connector following a redirect for
//! real is in `scripts/compat` and `tests/takeover.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::client::{cli_tcp_args, cli_tls_args, mariadb_cli, server_error_code};
use common::mariadb::{short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{absent_backend, tls_section, TestProxy};
use common::raw::{frame, RawClient};
use mysql_async::Conn;
use portcullis::protocol::ok::{put_lenenc_str, OkPacket};
use portcullis::protocol::{Capabilities, HandshakeResponse};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

const TARGET: &str = "db2.example.net:3307";
const URL: &str = "mariadb://db2.example.net:3307";
/// The user the scripted backend lets in; anyone else (the start-up probe)
/// is refused.
const USER: &str = "app";

const NODE: &[(&str, &str)] = &[
    ("_client_name", "MariaDB connector/Node"),
    ("_client_version", "3.5.4"),
    ("_server_host", "localhost"),
    ("_os", "linux"),
];
const OLD_NODE: &[(&str, &str)] = &[
    ("_client_name", "MariaDB connector/Node"),
    ("_client_version", "3.2.2"),
];
const CONNECTOR_J: &[(&str, &str)] = &[
    ("_client_name", "MariaDB Connector/J"),
    ("_client_version", "3.5.3"),
];
const LIBMARIADB: &[(&str, &str)] = &[
    ("_client_name", "libmariadb"),
    ("_client_version", "3.3.20"),
];

/// Capabilities of the scripted backend's greeting: a MariaDB 10.11 (bit 0,
/// CLIENT_MYSQL, clear).
const BACKEND_CAPS: u32 = Capabilities::LONG_FLAG
    | Capabilities::CONNECT_WITH_DB
    | Capabilities::PROTOCOL_41
    | Capabilities::TRANSACTIONS
    | Capabilities::SECURE_CONNECTION
    | Capabilities::MULTI_STATEMENTS
    | Capabilities::MULTI_RESULTS
    | Capabilities::PS_MULTI_RESULTS
    | Capabilities::PLUGIN_AUTH
    | Capabilities::CONNECT_ATTRS
    | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | Capabilities::SESSION_TRACK
    | Capabilities::DEPRECATE_EOF
    | Capabilities::SSL;

// --- the bytes ---------------------------------------------------------------------------

/// The plain authentication OK: no info, no session state, AUTOCOMMIT.
const PLAIN_OK: [u8; 7] = [0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];

/// One system-variables entry, written out byte by byte.
fn sysvar(name: &str, value: &str) -> Vec<u8> {
    let mut data = Vec::new();
    put_lenenc_str(&mut data, name.as_bytes());
    put_lenenc_str(&mut data, value.as_bytes());
    let mut e = vec![0x00];
    put_lenenc_str(&mut e, &data);
    e
}

/// An OK with SERVER_SESSION_STATE_CHANGED, an empty info and `block`.
fn ok_with_block(block: &[u8]) -> Vec<u8> {
    let mut ok = vec![0x00, 0x00, 0x00, 0x02, 0x40, 0x00, 0x00, 0x00];
    put_lenenc_str(&mut ok, block);
    ok
}

/// A server's session-state block: `autocommit=ON`, then the schema `shop`.
fn server_block() -> Vec<u8> {
    let mut b = sysvar("autocommit", "ON");
    b.extend_from_slice(&[0x01, 0x05, 0x04]);
    b.extend_from_slice(b"shop");
    b
}

/// The added entry as the tests expect it, spelled out: type 0, data
/// length 44, `0c redirect_url`, `1e mariadb://db2.example.net:3307`.
fn our_entry() -> Vec<u8> {
    let mut e = vec![0x00, 0x2c, 0x0c];
    e.extend_from_slice(b"redirect_url");
    e.push(0x1e);
    e.extend_from_slice(URL.as_bytes());
    assert_eq!(e.len(), 46);
    e
}

/// A HandshakeResponse41 from `user` with an empty password, the
/// connection attributes `attrs`, and `caps` on top of what every modern
/// client sends.
fn response(caps: u32, tls: bool, attrs: &[(&str, &str)]) -> Vec<u8> {
    let mut caps = caps
        | Capabilities::PROTOCOL_41
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | Capabilities::TRANSACTIONS;
    if tls {
        caps |= Capabilities::SSL;
    }
    if !attrs.is_empty() {
        caps |= Capabilities::CONNECT_ATTRS;
    }
    let mut r = caps.to_le_bytes().to_vec();
    r.extend_from_slice(&(16u32 << 20).to_le_bytes());
    r.push(45);
    r.extend_from_slice(&[0; 23]);
    r.extend_from_slice(USER.as_bytes());
    r.push(0);
    r.push(0);
    r.extend_from_slice(b"mysql_native_password\0");
    if !attrs.is_empty() {
        let mut block = Vec::new();
        for (k, v) in attrs {
            put_lenenc_str(&mut block, k.as_bytes());
            put_lenenc_str(&mut block, v.as_bytes());
        }
        put_lenenc_str(&mut r, &block);
    }
    r
}

/// The redirect ERR with the default text.
fn redirect_err() -> Vec<u8> {
    let mut p = vec![0xff, 0x64, 0x10];
    p.extend_from_slice(b"#HY000");
    p.extend_from_slice(
        format!("|This database is being taken over; connect to {TARGET} instead|{TARGET}")
            .as_bytes(),
    );
    p
}

// --- a scripted MariaDB ------------------------------------------------------------------

/// A backend on a Unix socket that greets as a MariaDB 10.11 would, and
/// answers the HandshakeResponse of [`USER`] with one scripted OK (anyone
/// else, i.e. portcullis's start-up probe, with ERR 1045). Each response
/// it got from [`USER`] is sent on `responses`.
struct Scripted {
    _dir: TempDir,
    address: String,
    responses: mpsc::UnboundedReceiver<Vec<u8>>,
}

impl Scripted {
    fn start(ok: Vec<u8>) -> Scripted {
        let dir = short_tempdir("sb");
        let path = dir.path().join("scripted.sock");
        let listener = UnixListener::bind(&path).expect("bind the scripted backend");
        let (tx, responses) = mpsc::unbounded_channel();
        let ok = Arc::new(ok);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, ok.clone(), tx.clone()));
            }
        });
        Scripted {
            address: format!("unix:{}", path.display()),
            _dir: dir,
            responses,
        }
    }

    /// The response of the next client that reached the backend.
    async fn next_response(&mut self) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(30), self.responses.recv())
            .await
            .expect("a client reached the backend")
            .expect("backend running")
    }

    /// Whether no client has reached the backend since the last look.
    fn untouched(&mut self) -> bool {
        self.responses.try_recv().is_err()
    }
}

fn greeting() -> Vec<u8> {
    let mut g = vec![0x0a];
    g.extend_from_slice(b"5.5.5-10.11.99-MariaDB-scripted\0");
    g.extend_from_slice(&7u32.to_le_bytes());
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&(BACKEND_CAPS as u16).to_le_bytes());
    g.push(45);
    g.extend_from_slice(&2u16.to_le_bytes());
    g.extend_from_slice(&((BACKEND_CAPS >> 16) as u16).to_le_bytes());
    g.push(21);
    g.extend_from_slice(&[0; 6]);
    g.extend_from_slice(&0u32.to_le_bytes());
    g.extend_from_slice(b"ijklmnopqrst\0");
    g.extend_from_slice(b"mysql_native_password\0");
    g
}

async fn read_frame(s: &mut UnixStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.ok()?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.ok()?;
    Some((h[3], p))
}

async fn serve(mut s: UnixStream, ok: Arc<Vec<u8>>, tx: mpsc::UnboundedSender<Vec<u8>>) {
    if s.write_all(&frame(0, &greeting())).await.is_err() {
        return;
    }
    let Some((seq, resp)) = read_frame(&mut s).await else {
        return;
    };
    assert_eq!(seq, 1, "the response reaches the backend at seq 1");
    let user = HandshakeResponse::parse(&resp)
        .map(|r| r.user)
        .unwrap_or_default();
    if user != USER {
        let mut err = vec![0xff, 0x15, 0x04];
        err.extend_from_slice(b"#28000Access denied");
        let _ = s.write_all(&frame(2, &err)).await;
        return;
    }
    let _ = tx.send(resp);
    let _ = s.write_all(&frame(2, &ok)).await;
    // Like mariadbd: the session ends at the client's COM_QUIT (or close).
    let _ = read_frame(&mut s).await;
}

/// A proxy with one listener `public` (mTLS on `[::1]`, or plaintext on
/// 127.0.0.1) in front of `backend`, with `failover` lines.
async fn proxy(pki: &Pki, backend: &str, tls: bool, failover: &str) -> TestProxy {
    let listener = if tls {
        format!(
            "address = \"[::1]:0\"\n{failover}{}",
            tls_section(pki, "required")
        )
    } else {
        format!("address = \"127.0.0.1:0\"\n{failover}")
    };
    TestProxy::start(&format!(
        r#"[admin]
address = "unix:admin.sock"
[[backend]]
name = "db"
address = {backend:?}
[[listener]]
name = "public"
route = "db"
{listener}"#
    ))
    .await
}

fn redirect_url_style(style: &str) -> String {
    format!(
        r#"failover = "on"
failover_target = {TARGET:?}
failover_style = {style:?}
"#
    )
}

/// Connects to `public`, TLS or not, sends `resp`, and returns the packet
/// that answers it (header included) and the client, still open.
async fn login(proxy: &TestProxy, pki: &Pki, tls: bool, resp: &[u8]) -> (Vec<u8>, RawClient) {
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    c.read_packet().await;
    if tls {
        c.start_tls(pki, Some(&pki.app)).await.expect("TLS");
    }
    c.write_packet(1 + u8::from(tls), resp).await;
    let answer = c.read_packet().await;
    (answer, c)
}

// --- the OK, byte for byte ---------------------------------------------------------------

#[tokio::test]
async fn the_ok_gains_redirect_url_byte_for_byte() {
    let pki = Pki::new();
    for (name, backend_ok, want) in [
        (
            "no session state",
            PLAIN_OK.to_vec(),
            ok_with_block(&our_entry()),
        ),
        ("the server's own block", ok_with_block(&server_block()), {
            let mut b = our_entry();
            b.extend_from_slice(&server_block());
            ok_with_block(&b)
        }),
    ] {
        let mut backend = Scripted::start(backend_ok);
        let p = proxy(
            &pki,
            &backend.address,
            true,
            &redirect_url_style("redirect_url"),
        )
        .await;
        for deprecate_eof in [false, true] {
            let caps = Capabilities::SESSION_TRACK
                | if deprecate_eof {
                    Capabilities::DEPRECATE_EOF
                } else {
                    0
                };
            let (ok, mut c) = login(&p, &pki, true, &response(caps, true, &[])).await;
            // TLS client, plaintext backend: the backend's seq 2 is the client's 3.
            assert_eq!(ok, frame(3, &want), "{name}, DEPRECATE_EOF {deprecate_eof}");
            let relayed = backend.next_response().await;
            let r = HandshakeResponse::parse(&relayed).unwrap();
            assert_eq!(
                r.capabilities.has(Capabilities::DEPRECATE_EOF),
                deprecate_eof,
                "the client's capabilities reach the backend"
            );
            // The session goes on: the client quits it.
            c.write_packet(0, &[0x01]).await;
            assert!(c.at_eof().await);
        }
        p.settle().await;
        let text = portcullis::exposition::encode(&p.state());
        assert!(
            text.contains(
                "portcullis_redirects_total{listener=\"public\",style=\"redirect_url\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portcullis_connections_total{listener=\"public\",outcome=\"relayed\"} 2\n"
            ),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_backends_own_redirect_url_is_renamed_unless_kept() {
    let pki = Pki::new();
    let mut theirs = sysvar("redirect_url", "mariadb://elsewhere.example.net:1");
    theirs.extend_from_slice(&sysvar("autocommit", "ON"));
    let renamed = {
        let mut b = sysvar("backend_redirect_url", "mariadb://elsewhere.example.net:1");
        b.extend_from_slice(&sysvar("autocommit", "ON"));
        ok_with_block(&b)
    };
    let mut backend = Scripted::start(ok_with_block(&theirs));
    let caps = Capabilities::SESSION_TRACK | Capabilities::DEPRECATE_EOF;
    for (failover, want) in [
        // No redirect of our own: renamed.
        ("", renamed.clone()),
        // Kept.
        ("pass_backend_redirect = true\n", ok_with_block(&theirs)),
        // With ours: ours first, theirs renamed even when kept otherwise.
        (
            &*format!(
                "{}pass_backend_redirect = true\n",
                redirect_url_style("redirect_url")
            ),
            {
                let mut b = our_entry();
                b.extend_from_slice(&sysvar(
                    "backend_redirect_url",
                    "mariadb://elsewhere.example.net:1",
                ));
                b.extend_from_slice(&sysvar("autocommit", "ON"));
                ok_with_block(&b)
            },
        ),
    ] {
        let p = proxy(&pki, &backend.address, true, failover).await;
        let (ok, _c) = login(&p, &pki, true, &response(caps, true, &[])).await;
        assert_eq!(ok, frame(3, &want), "{failover:?}");
        backend.next_response().await;
    }
    // Without session tracking the server sends no block: nothing to do.
    let p = proxy(&pki, &backend.address, false, "").await;
    let (ok, _c) = login(&p, &pki, false, &response(0, false, &[])).await;
    assert_eq!(ok, frame(2, &ok_with_block(&theirs)));
}

// --- which form, and the fallbacks -------------------------------------------------------

#[tokio::test]
async fn both_sends_followers_the_tracker_and_everyone_else_the_error() {
    let pki = Pki::new();
    let mut backend = Scripted::start(PLAIN_OK.to_vec());
    let failover = format!(
        "{}failover_followers = [\"MariaDB Connector/R2DBC >= 1.2\"]\n",
        redirect_url_style("both")
    );
    let node_added = format!(
        "{}failover_followers = [\"MariaDB connector/Node >= 3.2.3\"]\n",
        redirect_url_style("both")
    );
    let tls = proxy(&pki, &backend.address, true, &failover).await;
    let with_tracker = frame(3, &ok_with_block(&our_entry()));
    let track = Capabilities::SESSION_TRACK;
    let r2dbc = &[
        ("_client_name", "MariaDB Connector/R2DBC"),
        ("_client_version", "1.2.1"),
    ][..];
    for (who, caps, attrs, tracker) in [
        ("Connector/J 3.5.3", track, CONNECTOR_J, true),
        ("R2DBC, from failover_followers", track, r2dbc, true),
        (
            "Node.js mariadb 3.5.4, not in the table",
            track,
            NODE,
            false,
        ),
        ("libmariadb", track, LIBMARIADB, false),
        ("no attributes", track, &[][..], false),
        ("a follower without session tracking", 0, CONNECTOR_J, false),
    ] {
        let (answer, mut c) = login(&tls, &pki, true, &response(caps, true, attrs)).await;
        if tracker {
            assert_eq!(answer, with_tracker, "{who}");
            backend.next_response().await;
        } else {
            assert_eq!(answer, frame(3, &redirect_err()), "{who}");
            assert!(c.at_eof().await, "{who}: closed after the error");
            assert!(
                backend.untouched(),
                "{who}: the error form needs no backend"
            );
        }
    }
    // A follower over plaintext: its connector follows only over verified
    // TLS, so it gets the error (at seq 2).
    let plain = proxy(&pki, &backend.address, false, &failover).await;
    let (answer, _c) = login(&plain, &pki, false, &response(track, false, CONNECTOR_J)).await;
    assert_eq!(answer, frame(2, &redirect_err()));
    assert!(backend.untouched());
    // The Node.js connector, added by the operator, from the version given.
    let added = proxy(&pki, &backend.address, true, &node_added).await;
    let (answer, _c) = login(&added, &pki, true, &response(track, true, NODE)).await;
    assert_eq!(answer, with_tracker, "Node.js 3.5.4, added");
    backend.next_response().await;
    let (answer, _c) = login(&added, &pki, true, &response(track, true, OLD_NODE)).await;
    assert_eq!(
        answer,
        frame(3, &redirect_err()),
        "Node.js 3.2.2, below the version added"
    );
    tls.settle().await;
    let text = portcullis::exposition::encode(&tls.state());
    for (style, n) in [("error", 4), ("redirect_url", 2)] {
        let line =
            format!("portcullis_redirects_total{{listener=\"public\",style=\"{style}\"}} {n}\n");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn redirect_url_without_session_tracking_or_a_backend_is_the_error_form() {
    let pki = Pki::new();
    let mut backend = Scripted::start(PLAIN_OK.to_vec());
    let p = proxy(
        &pki,
        &backend.address,
        true,
        &redirect_url_style("redirect_url"),
    )
    .await;
    let (answer, mut c) = login(&p, &pki, true, &response(0, true, NODE)).await;
    assert_eq!(answer, frame(3, &redirect_err()), "no CLIENT_SESSION_TRACK");
    assert!(c.at_eof().await);
    assert!(backend.untouched());

    // A full listener has no session to give: the error form, not 1040.
    let full = proxy(
        &pki,
        &backend.address,
        true,
        &format!(
            "max_connections = 1\n{}",
            redirect_url_style("redirect_url")
        ),
    )
    .await;
    let resp = response(Capabilities::SESSION_TRACK, true, NODE);
    let (first, _held) = login(&full, &pki, true, &resp).await;
    assert_eq!(first, frame(3, &ok_with_block(&our_entry())));
    backend.next_response().await;
    let (answer, _c) = login(&full, &pki, true, &resp).await;
    assert_eq!(answer, frame(3, &redirect_err()), "listener full");

    // No backend to authenticate at: the error form, after TLS.
    let (_d, absent) = absent_backend();
    let p = proxy(&pki, &absent, true, &redirect_url_style("redirect_url")).await;
    let resp = response(Capabilities::SESSION_TRACK, true, NODE);
    let (answer, mut c) = login(&p, &pki, true, &resp).await;
    assert_eq!(answer, frame(3, &redirect_err()), "backend unreachable");
    assert!(c.at_eof().await);
    p.settle().await;
    let text = portcullis::exposition::encode(&p.state());
    assert!(
        text.contains(
            "portcullis_connections_total{listener=\"public\",outcome=\"redirected\"} 1\n"
        ),
        "{text}"
    );

    // A topology route with no primary: the error form too.
    let p = TestProxy::start(&format!(
        r#"[monitor]
user = "mon"
password = "x"
interval = "1h"
[[backend]]
name = "db"
address = {absent:?}
[[listener]]
name = "public"
address = "[::1]:0"
route = "primary"
primary_wait = "1ms"
{}{}"#,
        redirect_url_style("both"),
        tls_section(&pki, "required")
    ))
    .await;
    let (answer, _c) = login(&p, &pki, true, &resp).await;
    assert_eq!(answer, frame(3, &redirect_err()), "no primary");
}

// --- what the connectors parse -----------------------------------------------------------

/// MariaDB Connector/J 3.5, transcribed: `OkPacket.parseWithInfo` (the OK
/// that ends authentication, `StandardClient.authenticationHandler`) and
/// `StandardClient.redirect`'s `REDIRECT_PATTERN`
/// (github.com/mariadb-corporation/mariadb-connector-j,
/// `message/server/OkPacket.java`, `client/impl/StandardClient.java`).
/// Returns the redirect it would store (`context.setRedirectUrl`), and the
/// host and port its pattern reads from it (`None` when it does not match:
/// it logs "error parsing redirection string" and stays).
mod connector_j {
    /// `ReadableByteBuf` over a slice.
    pub struct Buf<'a> {
        b: &'a [u8],
        pos: usize,
    }

    impl<'a> Buf<'a> {
        pub fn new(b: &'a [u8]) -> Self {
            Buf { b, pos: 0 }
        }
        fn readable_bytes(&self) -> usize {
            self.b.len() - self.pos
        }
        fn read_byte(&mut self) -> u8 {
            self.pos += 1;
            self.b[self.pos - 1]
        }
        fn read_unsigned_short(&mut self) -> u16 {
            self.pos += 2;
            u16::from_le_bytes([self.b[self.pos - 2], self.b[self.pos - 1]])
        }
        /// `readLength`: a length-encoded integer, `None` for 0xfb.
        fn read_length(&mut self) -> Option<u64> {
            let t = self.read_byte();
            let n = match t {
                0xfb => return None,
                0xfc => 2,
                0xfd => 3,
                0xfe => 8,
                _ => return Some(u64::from(t)),
            };
            let mut v = 0u64;
            for i in 0..n {
                v |= u64::from(self.read_byte()) << (8 * i);
            }
            Some(v)
        }
        fn read_length_not_null(&mut self) -> usize {
            self.read_length().expect("not NULL") as usize
        }
        fn read_bytes(&mut self, n: usize) -> &'a [u8] {
            self.pos += n;
            &self.b[self.pos - n..self.pos]
        }
        /// `readLengthBuffer`: a length, then a buffer over that many bytes.
        fn read_length_buffer(&mut self) -> Buf<'a> {
            let n = self.read_length_not_null();
            Buf::new(self.read_bytes(n))
        }
        fn read_string(&mut self, n: usize) -> String {
            String::from_utf8(self.read_bytes(n).to_vec()).unwrap()
        }
    }

    /// `OkPacket.parseWithInfo` with CLIENT_SESSION_TRACK: the
    /// `redirect_url` it stores, if any.
    pub fn parse_with_info(payload: &[u8]) -> Option<String> {
        let mut buf = Buf::new(payload);
        buf.read_byte(); // ok header
        buf.read_length_not_null(); // affected rows
        buf.read_length_not_null(); // last insert id
        buf.read_unsigned_short(); // server status
        buf.read_unsigned_short(); // warnings
        let mut redirect = None;
        if buf.readable_bytes() > 0 {
            let n = buf.read_length_not_null();
            buf.read_bytes(n); // info
            while buf.readable_bytes() > 0 {
                let mut state = buf.read_length_buffer();
                while state.readable_bytes() > 0 {
                    match state.read_byte() {
                        0 => loop {
                            // do { ... } while (tmpBufsv.readableBytes() > 0)
                            let mut tmp = state.read_length_buffer();
                            let n = tmp.read_length_not_null();
                            let variable = tmp.read_string(n);
                            let value = tmp.read_length().map(|n| tmp.read_string(n as usize));
                            if variable == "redirect_url" {
                                redirect = value;
                            }
                            if tmp.readable_bytes() == 0 {
                                break;
                            }
                        },
                        1 => {
                            state.read_length_not_null();
                            if let Some(n) = state.read_length() {
                                state.read_string(n as usize);
                            }
                        }
                        t => panic!("entry type {t}: not in these tests"),
                    }
                }
            }
        }
        redirect
    }

    /// `REDIRECT_PATTERN` (matched whole, case-insensitive): host (group 7,
    /// URL-decoded, else group 6) and port (group 9, else 3306).
    pub fn redirect_target(url: &str) -> Option<(String, u16)> {
        let pattern = regex::RegexBuilder::new(
            r"^(mariadb|mysql):\/\/(([^/@:]+)?(:([^/]+))?@)?(([^/:]+)(:([0-9]+))?)(\/([^?]+)(\?(.*))?)?$",
        )
        .case_insensitive(true)
        .dot_matches_new_line(true)
        .build()
        .unwrap();
        let m = pattern.captures(url)?;
        let host = m
            .get(7)
            .or_else(|| m.get(6))
            .map(|h| h.as_str().to_string())?;
        let port = m.get(9).map_or(3306, |p| p.as_str().parse().unwrap());
        Some((host, port))
    }
}

/// The Node.js `mariadb` connector 3.5.4, transcribed: the OK branch of
/// `Authentication.handshakeResult` (`lib/cmd/handshake/authentication.js`)
/// with `Packet.skipLengthCodedNumber`, which skips a length and as many
/// bytes, and `subPacketLengthEncoded` (`lib/io/packet.js`); then
/// `Connection.redirect`'s `new URL()` (`lib/connection.js`), as far as the
/// host and port.
mod node {
    pub fn auth_ok_redirect(p: &[u8]) -> Option<String> {
        let mut pos = 1; // header
        let skip_lcn = |pos: &mut usize| {
            let t = p[*pos];
            *pos += 1;
            *pos += match t {
                251 => 0,
                252 => 2 + usize::from(u16::from_le_bytes([p[*pos], p[*pos + 1]])),
                253 | 254 => panic!("not in these tests"),
                n => usize::from(n),
            };
        };
        let read_len = |pos: &mut usize| -> usize {
            let t = p[*pos];
            *pos += 1;
            match t {
                0..=250 => usize::from(t),
                0xfc => {
                    *pos += 2;
                    usize::from(u16::from_le_bytes([p[*pos - 2], p[*pos - 1]]))
                }
                _ => panic!("not in these tests"),
            }
        };
        skip_lcn(&mut pos); // affected rows
        skip_lcn(&mut pos); // last insert id
        let status = u16::from_le_bytes([p[pos], p[pos + 1]]);
        pos += 2;
        let mut redirect = None;
        if status & 0x4000 != 0 {
            pos += 2; // warnings
            skip_lcn(&mut pos); // info
            while pos < p.len() {
                let len = read_len(&mut pos);
                let sub = &p[pos..pos + len];
                pos += len;
                let mut s = 0;
                while s < sub.len() {
                    let kind = sub[s];
                    s += 1;
                    let n = read_len_at(sub, &mut s);
                    let entry = &sub[s..s + n];
                    s += n;
                    if kind == 0 {
                        let mut e = 0;
                        let k = read_len_at(entry, &mut e);
                        let name = &entry[e..e + k];
                        e += k;
                        let v = read_len_at(entry, &mut e);
                        let value = &entry[e..e + v];
                        if name == b"redirect_url" && !value.is_empty() {
                            redirect = Some(String::from_utf8(value.to_vec()).unwrap());
                        }
                    }
                }
            }
        }
        redirect
    }

    fn read_len_at(b: &[u8], pos: &mut usize) -> usize {
        let t = b[*pos];
        *pos += 1;
        assert!(t < 0xfb, "not in these tests");
        usize::from(t)
    }
}

#[tokio::test]
async fn what_connector_j_and_node_read_from_the_bytes_portcullis_sends() {
    let pki = Pki::new();
    let mut backend = Scripted::start(ok_with_block(&server_block()));
    let p = proxy(
        &pki,
        &backend.address,
        true,
        &redirect_url_style("redirect_url"),
    )
    .await;
    for attrs in [CONNECTOR_J, NODE] {
        let caps = Capabilities::SESSION_TRACK | Capabilities::DEPRECATE_EOF;
        let (ok, _c) = login(&p, &pki, true, &response(caps, true, attrs)).await;
        backend.next_response().await;
        let payload = &ok[4..];
        assert_eq!(connector_j::parse_with_info(payload).as_deref(), Some(URL));
        assert_eq!(node::auth_ok_redirect(payload).as_deref(), Some(URL));
    }
    assert_eq!(
        connector_j::redirect_target(URL),
        Some(("db2.example.net".into(), 3307))
    );
    assert_eq!(
        connector_j::redirect_target("mariadb://192.0.2.7:3307"),
        Some(("192.0.2.7".into(), 3307))
    );
    // Why IPv6 literals are refused: Connector/J cannot read one at all.
    assert_eq!(
        connector_j::redirect_target("mariadb://[2001:db8::1]:3307"),
        None
    );
    assert_eq!(
        connector_j::redirect_target("mariadb://2001:db8::1:3307"),
        None
    );
    // A backend's renamed tracker is invisible to both.
    let theirs = ok_with_block(&sysvar(
        "backend_redirect_url",
        "mariadb://elsewhere.example.net:1",
    ));
    assert_eq!(connector_j::parse_with_info(&theirs), None);
    assert_eq!(node::auth_ok_redirect(&theirs), None);
}

// --- real clients and a real server ------------------------------------------------------

#[tokio::test]
async fn clients_that_ignore_the_tracker_keep_a_working_session() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let p = proxy(
        &pki,
        &db.unix_address(),
        true,
        &redirect_url_style("redirect_url"),
    )
    .await;
    // The mariadb CLI (libmariadb announces CLIENT_SESSION_TRACK, ignores
    // redirect_url): its session works here.
    let mut args = cli_tcp_args("::1", p.port("public"), NATIVE_USER, NATIVE_PASS);
    args.extend(cli_tls_args(&pki.ca, Some(&pki.app)));
    args.extend(["-N".into(), "-e".into(), "SELECT 40 + 2".into()]);
    let out = mariadb_cli(&args).await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "42");
    // mysql_async does not announce CLIENT_SESSION_TRACK: the error form.
    let err = Conn::new(p.app_opts(&pki, "public", NATIVE_USER, NATIVE_PASS))
        .await
        .expect_err("mysql_async gets the error form");
    assert_eq!(server_error_code(&err), Some(4196));
    p.settle().await;
    let text = portcullis::exposition::encode(&p.state());
    for (style, n) in [("error", 1), ("redirect_url", 1)] {
        let line =
            format!("portcullis_redirects_total{{listener=\"public\",style=\"{style}\"}} {n}\n");
        assert!(text.contains(&line), "{line} in\n{text}");
    }

    // `both`: the CLI is no follower, so it gets the error form.
    let both = proxy(&pki, &db.unix_address(), true, &redirect_url_style("both")).await;
    let mut args = cli_tcp_args("::1", both.port("public"), NATIVE_USER, NATIVE_PASS);
    args.extend(cli_tls_args(&pki.ca, Some(&pki.app)));
    args.extend(["-e".into(), "SELECT 1".into()]);
    let out = mariadb_cli(&args).await;
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("ERROR 4196 (HY000): |This database is being taken over; connect to {TARGET} instead|{TARGET}")),
        "{out:?}"
    );
}

#[tokio::test]
async fn the_real_servers_ok_gains_the_tracker_first() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    db.exec("CREATE USER 'app'@'%'").await;
    db.exec("GRANT USAGE ON *.* TO 'app'@'%'").await;
    let p = proxy(
        &pki,
        &db.unix_address(),
        true,
        &redirect_url_style("redirect_url"),
    )
    .await;
    for caps in [
        Capabilities::SESSION_TRACK,
        Capabilities::SESSION_TRACK | Capabilities::DEPRECATE_EOF,
    ] {
        let mut c = RawClient::connect(p.tcp_addr("public")).await;
        c.read_packet().await;
        c.start_tls(&pki, Some(&pki.app)).await.expect("TLS");
        c.write_packet(2, &response(caps, true, NODE)).await;
        // mariadbd asks again with its own scramble; an empty password
        // answers with nothing.
        let switch = c.read_packet().await;
        assert_eq!((switch[3], switch[4]), (3, 0xfe), "auth switch");
        c.write_packet(4, &[]).await;
        let ok = c.read_packet().await;
        assert_eq!(ok[3], 5);
        let parsed = OkPacket::parse(&ok[4..], true).expect("the OK parses");
        assert_eq!(parsed.status & 0x4000, 0x4000);
        let vars = parsed.system_variables();
        assert_eq!(
            vars[0],
            (&b"redirect_url"[..], URL.as_bytes()),
            "ours first"
        );
        // Whatever mariadbd itself put in the OK follows, unchanged
        // (10.11 puts nothing there at login: measured).
        let mut rest = parsed.session_state.unwrap().to_vec();
        rest.drain(..our_entry().len());
        let theirs = ok_with_block(&rest);
        let server_part = OkPacket::parse(&theirs, true).unwrap();
        assert_eq!(
            server_part.session_state.map(<[u8]>::len),
            Some(rest.len()),
            "the server's entries parse on their own: {rest:?}"
        );
        assert_eq!(connector_j::parse_with_info(&ok[4..]).as_deref(), Some(URL));
    }
}

// --- runtime control ---------------------------------------------------------------------

#[tokio::test]
async fn the_admin_api_and_reload_switch_the_style() {
    let pki = Pki::new();
    let (_d, absent) = absent_backend();
    let p = proxy(&pki, &absent, true, "").await;
    let r = p.admin("GET", "/listeners/public/failover", "").await;
    let v = r.json();
    assert_eq!(
        (&v["style"], &v["followers"], &v["pass_backend_redirect"]),
        (&"error".into(), &serde_json::json!([]), &false.into()),
        "{v}"
    );
    let r = p
        .admin(
            "PUT",
            "/listeners/public/failover",
            &format!(r#"{{"mode": "on", "target": "{TARGET}", "style": "both", "followers": ["MariaDB Connector/R2DBC >= 1.2"]}}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["style"], "both", "{v}");
    assert_eq!(
        v["followers"],
        serde_json::json!(["MariaDB Connector/R2DBC >= 1.2"])
    );
    // A PUT without the new keys keeps them.
    let r = p
        .admin("PUT", "/listeners/public/failover", r#"{"mode": "all"}"#)
        .await;
    assert_eq!(r.json()["style"], "both");
    for (body, says) in [
        (r#"{"mode": "on", "style": "sideways"}"#, "unknown variant"),
        (
            r#"{"mode": "on", "followers": ["R2DBC"]}"#,
            "<_client_name> >= <version>",
        ),
        (
            r#"{"mode": "on", "target": "db2/x:3307", "style": "redirect_url"}"#,
            "invalid host",
        ),
    ] {
        let r = p.admin("PUT", "/listeners/public/failover", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    assert_eq!(
        p.admin("GET", "/listeners/public/failover", "")
            .await
            .json()["mode"],
        "all",
        "bad input changed nothing"
    );

    // A reload sets the style from the file.
    let path = p.dir().join("portcullis.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "route = \"db\"\n",
        &format!(
            r#"route = "db"
{}pass_backend_redirect = true
"#,
            redirect_url_style("redirect_url")
        ),
    );
    std::fs::write(&path, text).unwrap();
    let report = portcullis::reload::reload_config(&p.state(), portcullis::reload::Trigger::Admin)
        .expect("valid config");
    assert_eq!(report.failover_changed, vec!["public".to_string()]);
    assert!(report.not_applied.is_empty(), "{:?}", report.not_applied);
    let v = p
        .admin("GET", "/listeners/public/failover", "")
        .await
        .json();
    assert_eq!(
        (
            &v["mode"],
            &v["style"],
            &v["followers"],
            &v["pass_backend_redirect"]
        ),
        (
            &"on".into(),
            &"redirect_url".into(),
            &serde_json::json!([]),
            &true.into()
        ),
        "{v}"
    );
}

/// `portcullis check` on `config`: its stderr, after asserting it failed.
fn check_fails(config: &str) -> String {
    let dir = short_tempdir("ck");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn check_explains_what_a_redirect_url_target_must_be() {
    let stderr = check_fails(
        r#"[[backend]]
name = "db"
address = "127.0.0.1:3306"
[[listener]]
name = "a"
address = "127.0.0.1:3307"
route = "db"
failover = "on"
failover_style = "redirect_url"
failover_target = "[2001:db8::1]:3307"
[[listener]]
name = "c"
address = "127.0.0.1:3309"
route = "db"
failover_followers = ["MariaDB Connector/J 3.4"]
"#,
    );
    for want in [
        "bad.toml:10: failover_target \"[2001:db8::1]:3307\" is an IPv6 literal",
        "Connector/J's redirect_url parser reads the host only up to one",
        "bad.toml:15: failover_followers entry \"MariaDB Connector/J 3.4\" must be \"<_client_name> >= <version>\"",
        "2 problem(s) found",
    ] {
        assert!(stderr.contains(want), "{want:?} in\n{stderr}");
    }
    let stderr = check_fails(
        r#"[[backend]]
name = "db"
address = "127.0.0.1:3306"
[[listener]]
name = "b"
address = "127.0.0.1:3308"
route = "db"
failover_style = "sometimes"
"#,
    );
    assert!(
        stderr.contains("bad.toml:8: unknown variant `sometimes`, expected one of `error`, `redirect_url`, `both`"),
        "{stderr}"
    );
}
