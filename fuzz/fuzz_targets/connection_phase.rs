//! The connection phase (`portcullis::session::serve`) driven from arbitrary
//! bytes on both legs, in the order portcullis meets them: its own greeting,
//! the client's SSLRequest, TLS and HandshakeResponse — the door — and only
//! then the fake backend, whose greeting is read and whose authentication
//! switch (the answer to the renamed plugin) is relayed to the client.
//!
//! Input layout:
//!
//! ```text
//! byte 0        mode (bits below)
//! byte 1        crowd: bit 7 set = a second connection arrives at the
//!               listener's waiting room (max_unauthenticated = 1) after
//!               (bits 0..=6) scheduler yields, closing this one if it has
//!               not passed the door yet
//! bytes 2..4    n = length of the client script (u16 LE, clamped)
//! next n bytes  what the client sends (first: its HandshakeResponse, or
//!               its SSLRequest when it is a raw client on a TLS listener)
//! the rest      what the fake backend sends once dialled (first: its
//!               greeting or an ERR; then e.g. an AuthSwitchRequest, OK)
//! ```
//!
//! Mode bits:
//! - 0..=1 listener kind: 0 relay to the fake backend; 1 failover redirect
//!   (`failover = "all"`: the error form, no backend); 2 backend unreachable
//!   (ERR 1105 after the door); 3 relay with `allow_proxy_user = true`;
//! - 2 the listener has TLS (demo PKI from `certs-test/`, client
//!   certificates required);
//! - 3..=4 the client: 0/3 raw bytes; 1 a scripted TLS client that reads the
//!   greeting, sends an SSLRequest, completes TLS with a client certificate
//!   and then sends the client script inside TLS; 2 the same without a
//!   client certificate;
//! - 5 the backend stalls: it sends its script and then keeps its side open
//!   until portcullis closes. Those inputs go to listeners with a 20 ms
//!   `handshake_timeout`. Otherwise the backend half-closes once portcullis
//!   has had its script;
//! - 6 unused;
//! - 7 the backend's greeting was learned before (from the backend script's
//!   first packet, when it parses as one): portcullis greets the client
//!   with it. Otherwise with its fallback greeting.
//!
//! The client always half-closes once portcullis has had its bytes, then
//! reads until portcullis closes. So a session must end: at once when both
//! peers closed, within the handshake timeout when the backend stalls. One
//! that has not ended after 100 ms is a hang and fails the target. Time is
//! the runtime's paused clock, which only moves when everything waits: a
//! timeout costs no wall time and does not depend on the machine's speed.
//!
//! Invariants (each a panic when it does not hold):
//! 1. every client is greeted first, with portcullis's own greeting: seq 0,
//!    the learned (or fallback) template's version and capabilities,
//!    CLIENT_SSL exactly when the listener has TLS, never compression; when
//!    it is relayed, the session's connection id (from the top half of the
//!    range);
//! 2. the backend is dialled only after the door: never for the failover
//!    and unreachable listeners, never for a connection closed to make room,
//!    on a TLS listener only after the client's TLS handshake completed, and
//!    only when the client's first packet (inside TLS on a TLS listener) is
//!    a whole HandshakeResponse with CLIENT_PLUGIN_AUTH at the right
//!    sequence id (1 in plaintext, 2 inside TLS), within
//!    `max_handshake_packet`, whose user is not portcullis's own OS user
//!    (unless `allow_proxy_user`);
//! 3. what the backend receives first is that response for the auth switch:
//!    seq 1, plugin `portcullis_auth_switch`, no auth data, the client's user
//!    and database, no CLIENT_SSL, no compression;
//! 4. on a TLS listener, once the client's first packet was an SSLRequest,
//!    every byte portcullis writes to it after the greeting is a TLS record:
//!    no plaintext, in particular no ERR or OK of the backend's, ever;
//! 5. during authentication the client receives exactly the packets the
//!    backend sent after its greeting, in order, with the sequence-id shift
//!    (+1 inside TLS), only the OK that ends it possibly edited — or, at the
//!    end, one ERR of portcullis's own, after which nothing follows;
//! 6. no panic anywhere (libFuzzer);
//! 7. a COM_CHANGE_USER to portcullis's own OS user never reaches the
//!    (Unix-socket) backend as a command unless `allow_proxy_user`, however
//!    it is sent (pipelined behind the auth answer, say).
//!
//! `PORTCULLIS_FUZZ_DEBUG=1` prints how each session ended.
#![no_main]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis::backend::BackendRuntime;
use portcullis::config::Route;
use portcullis::listener::{ListenerRuntime, RouteRuntime};
use portcullis::metrics::ByteCounts;
use portcullis::packet_io::read_packet_exact;
use portcullis::preflight::Preflight;
use portcullis::protocol::greeting::GreetingTemplate;
use portcullis::protocol::packet::{split_packet, write_packet};
use portcullis::protocol::response::is_ssl_request;
use portcullis::protocol::{Capabilities, Greeting, HandshakeResponse, HEADER_LEN};
use portcullis::session::{serve, SessionInfo, SWITCH_PLUGIN};
use portcullis::tls::{load_certs, load_key};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// How long a session may take, on the runtime's paused clock (see
/// `Harness::new`): far past anything that is not a hang.
const LIMIT: Duration = Duration::from_millis(100);
/// handshake_timeout of the listeners used when the backend stalls.
const STALL_TIMEOUT: &str = "20ms";
/// max_handshake_packet of every listener.
const MAX_PACKET: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientKind {
    Raw,
    Tls { with_cert: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Relay,
    Failover,
    Gone,
    RelayProxyUser,
}

const KINDS: [(Kind, &str); 4] = [
    (Kind::Relay, "relay"),
    (Kind::Failover, "failover"),
    (Kind::Gone, "gone"),
    (Kind::RelayProxyUser, "proxy-user"),
];

struct Harness {
    rt: Runtime,
    backend: UnixListener,
    /// The fake backend's runtime (shared by every relay listener): its
    /// learned greeting is set before each input.
    fake: Arc<BackendRuntime>,
    /// Indexed by `(stall * 4 + kind) * 2 + tls`.
    listeners: Vec<ListenerRuntime>,
    client_with_cert: Arc<rustls::ClientConfig>,
    client_without_cert: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-test")
}

/// The config: the fake backend, one that nobody listens on, and a listener
/// for every kind × TLS × stall.
fn config_toml(d: &str, c: &str) -> String {
    let mut toml = format!(
        r#"
[[backend]]
name = "fake"
address = "unix:{d}/backend.sock"
connect_timeout = "1s"

[[backend]]
name = "gone"
address = "unix:{d}/nobody-listens-here.sock"
connect_timeout = "1s"
"#
    );
    for (stall, timeout) in [("", "10s"), ("-stall", STALL_TIMEOUT)] {
        for (kind, name) in KINDS {
            for tls in [false, true] {
                toml += &format!(
                    r#"
[[listener]]
name = "{name}-{tls}{stall}"
address = "unix:{d}/{name}-{tls}{stall}.sock"
route = "{route}"
handshake_timeout = "{timeout}"
max_handshake_packet = {MAX_PACKET}
max_unauthenticated = 1
"#,
                    route = if kind == Kind::Gone { "gone" } else { "fake" },
                );
                match kind {
                    Kind::Failover => {
                        toml += "failover = \"all\"\nfailover_target = \"db2.example.net:3307\"\n"
                    }
                    Kind::RelayProxyUser => toml += "allow_proxy_user = true\n",
                    _ => {}
                }
                if tls {
                    toml += &format!(
                        r#"
[listener.tls]
cert = "{c}/server.pem"
key = "{c}/server-key.pem"
ca = "{c}/ca.pem"
crl = ["{c}/crl.pem"]
client_auth = "required"
"#
                    );
                }
            }
        }
    }
    toml
}

fn client_config(certs: &Path, with_cert: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(&certs.join("ca.pem")).expect("ca.pem") {
        roots.add(cert).expect("CA certificate");
    }
    let b = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut cfg = if with_cert {
        b.with_client_auth_cert(
            load_certs(&certs.join("app.pem")).expect("app.pem"),
            load_key(&certs.join("app-key.pem")).expect("app-key.pem"),
        )
        .expect("client certificate")
    } else {
        b.with_no_client_auth()
    };
    // No state carried from one input to the next.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        let certs = certs_dir().canonicalize().expect("certs-test/ exists");
        let toml = config_toml(&d, &certs.display().to_string());
        // The demo PKI is loaded here, once, as `portcullis run` does.
        let preflight = Preflight::from_toml(&toml, &dir.path().join("fuzz.toml"), dir.path())
            .unwrap_or_else(|e| panic!("fuzz config does not validate:\n{e}\n{toml}"));
        let (config, material) = preflight.into_parts();
        let backends: Vec<_> = config
            .backends
            .iter()
            .zip(material.backends)
            .map(|(b, tls)| Arc::new(BackendRuntime::new(b.clone(), tls)))
            .collect();
        let listeners = config
            .listeners
            .iter()
            .zip(material.listeners)
            .map(|(l, tls)| {
                let Route::Backend(name) = &l.route else {
                    panic!("fuzz listeners route to a named backend");
                };
                let backend = backends
                    .iter()
                    .find(|b| &b.config.name == name)
                    .expect("route")
                    .clone();
                ListenerRuntime::new(l.clone(), RouteRuntime::Fixed(backend), None, tls)
            })
            .collect();
        let fake = backends
            .iter()
            .find(|b| b.config.name == "fake")
            .expect("fake backend")
            .clone();

        // The clock is paused and only moves when every task waits and no
        // I/O is ready (all I/O here is in-process, so nothing is in flight
        // then): timeouts cost no wall time and do not depend on how fast
        // the machine is, so the same input always times out the same way.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("tokio runtime");
        let backend = {
            let _guard = rt.enter();
            UnixListener::bind(dir.path().join("backend.sock")).expect("bind fake backend")
        };
        Harness {
            rt,
            backend,
            fake,
            listeners,
            client_with_cert: client_config(&certs, true),
            client_without_cert: client_config(&certs, false),
            _dir: dir,
        }
    }
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(Harness::new)
}

/// What the harness saw of one session.
#[derive(Default, Debug)]
struct Seen {
    /// Every byte the client read from portcullis, TLS records undecoded.
    client_raw: Vec<u8>,
    /// What the scripted TLS client read inside TLS.
    client_tls: Vec<u8>,
    /// The scripted TLS client sent its SSLRequest.
    sent_ssl_request: bool,
    /// The scripted TLS client completed its TLS handshake.
    tls_done: bool,
    /// portcullis connected to the fake backend.
    dialled: bool,
    /// ... and that happened after the client's TLS handshake completed.
    dialled_after_tls: bool,
    /// The fake backend accepted and sent its script.
    accepted: bool,
    /// What the fake backend received.
    backend_got: Vec<u8>,
    /// The session's connection id, as the accept loop assigns it.
    id: u32,
}

type Shared = Rc<RefCell<Seen>>;

/// The client's end of the stream, recording every byte it reads.
struct Tap {
    inner: DuplexStream,
    seen: Shared,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            self.seen.borrow_mut().client_raw.extend_from_slice(new);
        }
        r
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads until EOF or an error; returns what was read.
async fn read_to_close<R: AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Lets portcullis and the other peer act on everything already sent
/// before this peer closes. Without it the outcome would hang on which of
/// two ready streams portcullis happens to read first, and libFuzzer would
/// see the same input behave differently. Each yield lets the runtime poll
/// the I/O driver once.
async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// Writes `bytes`, waits for things to settle, half-closes, and reads until
/// the peer closes.
async fn send_and_drain<S: AsyncRead + AsyncWrite + Unpin>(s: S, bytes: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let write = async {
        let _ = w.write_all(bytes).await;
        settle().await;
        let _ = w.shutdown().await;
    };
    let (_, got) = tokio::join!(write, read_to_close(&mut r));
    got
}

/// The fake backend: accepts portcullis's connection, sends the script,
/// and records whatever portcullis sends until portcullis closes. Unless it
/// stalls, it half-closes like the client once portcullis has its script.
async fn fake_backend(listener: &UnixListener, script: &[u8], stall: bool, seen: &Shared) {
    if let Ok((mut s, _)) = listener.accept().await {
        {
            let mut o = seen.borrow_mut();
            o.dialled = true;
            o.dialled_after_tls = o.tls_done;
            o.accepted = true;
        }
        let (mut r, mut w) = s.split();
        let write = async {
            let _ = w.write_all(script).await;
            if !stall {
                settle().await;
                let _ = w.shutdown().await;
            }
        };
        let read = async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                seen.borrow_mut().backend_got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::join!(write, read);
        // portcullis closed its side: close ours.
        let _ = w.shutdown().await;
    }
}

/// The client: raw bytes, or an SSLRequest and TLS first.
async fn client(h: &Harness, io: DuplexStream, kind: ClientKind, bytes: &[u8], seen: &Shared) {
    let mut io = Tap {
        inner: io,
        seen: seen.clone(),
    };
    let ClientKind::Tls { with_cert } = kind else {
        send_and_drain(io, bytes).await;
        return;
    };
    let Ok(first) = read_packet_exact(&mut io, 1 << 24, false).await else {
        send_and_drain(io, bytes).await;
        return;
    };
    let offers_tls =
        Greeting::parse(first.payload()).is_ok_and(|g| g.capabilities.has(Capabilities::SSL));
    if !offers_tls {
        send_and_drain(io, bytes).await;
        return;
    }
    let caps = Capabilities::PROTOCOL_41
        | Capabilities::SSL
        | Capabilities::SECURE_CONNECTION
        | Capabilities::PLUGIN_AUTH
        | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
        | Capabilities::CONNECT_ATTRS;
    let mut req = caps.to_le_bytes().to_vec();
    req.extend_from_slice(&0x0100_0000u32.to_le_bytes());
    req.push(45);
    req.extend_from_slice(&[0; 23]);
    let mut pkt = Vec::new();
    write_packet(&mut pkt, first.header.seq.wrapping_add(1), &req);
    if io.write_all(&pkt).await.is_err() {
        return;
    }
    seen.borrow_mut().sent_ssl_request = true;
    let cfg = if with_cert {
        h.client_with_cert.clone()
    } else {
        h.client_without_cert.clone()
    };
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    // A failed handshake (e.g. no certificate) drops the stream with the
    // connector: portcullis ends.
    if let Ok(tls) = TlsConnector::from(cfg).connect(name, io).await {
        seen.borrow_mut().tls_done = true;
        let got = send_and_drain(tls, bytes).await;
        seen.borrow_mut().client_tls = got;
    }
}

/// One input, decoded.
struct Case<'a> {
    kind: Kind,
    tls: bool,
    client: ClientKind,
    stall: bool,
    /// Yields before a second connection arrives at the waiting room.
    crowd: Option<u8>,
    /// The greeting portcullis should greet with.
    template: GreetingTemplate,
    client_bytes: &'a [u8],
    backend_script: &'a [u8],
}

/// How a session ended: its outcome label, and whether it was closed to
/// make room.
struct Ended {
    label: &'static str,
    evicted: bool,
}

/// One session over fresh streams; `None` when it did not end within `LIMIT`.
async fn run_once(
    h: &Harness,
    listener: &ListenerRuntime,
    case: &Case<'_>,
) -> Option<(Seen, Ended)> {
    let seen: Shared = Rc::default();
    let (proxy_side, client_side) = tokio::io::duplex(64 * 1024);
    let cancel = CancellationToken::new();
    let name = &listener.config.name;
    // Admitted as the accept loop admits it.
    let ticket = listener.door.admit(None, name);
    let (served_tx, mut served) = tokio::sync::watch::channel(false);
    // Numbered and registered as the accept loop does it (`GET /sessions`).
    let id = portcullis::session::connection_id();
    seen.borrow_mut().id = id;
    let entry = listener.sessions.register(id, None, None, cancel.clone());
    let session = async {
        let mut info = SessionInfo {
            id,
            ..SessionInfo::default()
        };
        let totals = ByteCounts::default();
        let ended = serve(
            proxy_side,
            listener,
            &mut info,
            ticket,
            &cancel,
            &totals,
            &entry.record,
        )
        .await;
        let _ = served_tx.send(true);
        (ended, info)
    };
    // The fake backend reads all portcullis sent it, to the close; when
    // portcullis never dialled, it stops waiting once the session is over.
    let backend = async {
        tokio::select! {
            biased;
            () = fake_backend(&h.backend, case.backend_script, case.stall, &seen) => {}
            _ = async {
                let _ = served.wait_for(|done| *done).await;
                if seen.borrow().accepted {
                    std::future::pending::<()>().await;
                }
            } => {}
        }
    };
    let crowd = async {
        let yields = case.crowd?;
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        Some(listener.door.admit(None, name))
    };
    let all = async {
        let ((ended, info), (), (), _crowd) = tokio::join!(
            session,
            client(h, client_side, case.client, case.client_bytes, &seen),
            backend,
            crowd
        );
        let label = match &ended {
            Ok(f) => f.label(),
            Err(e) => e.label(),
        };
        if debug() {
            eprintln!(
                "listener {name} client {:?} backend stalls {} crowd {:?}: {label} ({ended:?}); user {:?}, tls {:?}, cert {:?}",
                case.client,
                case.stall,
                case.crowd,
                info.user,
                info.tls_version,
                info.client_cert.as_ref().map(|c| &c.subject),
            );
        }
        Ended {
            label,
            evicted: matches!(ended, Err(portcullis::outcome::SessionError::Evicted(_))),
        }
    };
    let ended = tokio::time::timeout(LIMIT, all).await.ok();
    // A connection portcullis made but the fake backend never accepted
    // would be picked up by the next input: drop any such.
    // Such a connection was made after the client's HandshakeResponse was
    // sent, so after its TLS handshake if that ever completed.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, h.backend.accept()).await {
        let mut o = seen.borrow_mut();
        o.dialled = true;
        o.dialled_after_tls |= o.tls_done;
    }
    let seen = Rc::try_unwrap(seen)
        .expect("the session's futures are gone")
        .into_inner();
    Some((seen, ended?))
}

/// `PORTCULLIS_FUZZ_DEBUG=1` prints how each session ended (for checking
/// what an input reaches: `cargo fuzz run connection_phase <file>`).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("PORTCULLIS_FUZZ_DEBUG").is_some())
}

/// The whole packets at the start of `bytes`, with where each ends.
fn packets(bytes: &[u8]) -> Vec<(u8, &[u8], usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok((h, n)) = split_packet(&bytes[at..]) {
        out.push((h.seq, &bytes[at + HEADER_LEN..at + n], at + n));
        at += n;
    }
    out
}

/// Whether `bytes` is a run of TLS records (the last one may be cut short:
/// the client read what was written before the close).
fn only_tls_records(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while !rest.is_empty() {
        let head_ok = match rest {
            [t, v, ..] => (20..=24).contains(t) && *v == 3,
            [t] => (20..=24).contains(t),
            [] => true,
        };
        if !head_ok {
            return false;
        }
        let Some(len) = rest
            .get(3..5)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return true;
        };
        rest = rest.get(5 + len..).unwrap_or(&[]);
    }
    true
}

/// Invariant 1: the first packet the client gets is portcullis's own
/// greeting. Returns where it ends in `client_raw`.
fn check_greeting(case: &Case<'_>, seen: &Seen, listener: &str) -> usize {
    let Some(&(seq, payload, end)) = packets(&seen.client_raw).first() else {
        panic!(
            "listener {listener}: the client was not greeted: {:?}",
            seen.client_raw
        );
    };
    assert_eq!(seq, 0, "listener {listener}: the greeting has seq 0");
    let g = Greeting::parse(payload)
        .unwrap_or_else(|e| panic!("listener {listener}: the greeting does not parse: {e}"));
    let relayed = matches!(case.kind, Kind::Relay | Kind::RelayProxyUser);
    let template = if relayed {
        case.template.clone()
    } else {
        GreetingTemplate::fallback()
    };
    assert_eq!(
        g.capabilities,
        template.offered(case.tls),
        "listener {listener}: the greeting offers what the template says, CLIENT_SSL exactly with TLS"
    );
    assert!(!g.capabilities.has(Capabilities::SSL) || case.tls);
    assert!(
        !g.capabilities.has(Capabilities::COMPRESS),
        "compression is never offered"
    );
    assert_eq!(
        g.server_version, template.server_version,
        "listener {listener}"
    );
    if relayed {
        assert_eq!(
            g.connection_id, seen.id,
            "listener {listener}: the session's id"
        );
        assert!(
            g.connection_id & 0x8000_0000 != 0,
            "listener {listener}: connection id {:#x} not in the top half",
            g.connection_id
        );
    }
    end
}

/// The client's HandshakeResponse, when its first packet (the client
/// script's first, inside TLS on a TLS listener) is one portcullis may take
/// past the door: whole, at the expected seq, within the limit, parsing,
/// with CLIENT_PLUGIN_AUTH.
fn door_response(case: &Case<'_>) -> Option<HandshakeResponse> {
    let &(seq, payload, _) = packets(case.client_bytes).first()?;
    let expected = 1 + u8::from(case.tls);
    if seq != expected || payload.len() > MAX_PACKET {
        return None;
    }
    let r = HandshakeResponse::parse(payload).ok()?;
    r.capabilities.has(Capabilities::PLUGIN_AUTH).then_some(r)
}

/// Invariants 2 and 3: nothing reaches the backend before the door, and
/// what reaches it first is the response renamed for the auth switch.
fn check_door(case: &Case<'_>, seen: &Seen, ended: &Ended, listener: &str) {
    if !seen.dialled {
        return;
    }
    let why = |what: &str| {
        format!(
            "listener {listener}, client {:?}: backend dialled {what}",
            case.client
        )
    };
    assert!(
        matches!(case.kind, Kind::Relay | Kind::RelayProxyUser),
        "{}",
        why("by a listener that does not relay")
    );
    assert!(
        !ended.evicted,
        "{}",
        why("for a connection closed to make room")
    );
    if case.tls {
        assert!(
            seen.dialled_after_tls,
            "{}",
            why("before the client's TLS handshake completed")
        );
    }
    let Some(resp) = door_response(case) else {
        panic!(
            "{}",
            why("without a whole, in-order HandshakeResponse with CLIENT_PLUGIN_AUTH")
        );
    };
    if case.kind == Kind::Relay {
        assert_ne!(
            Some(resp.user.as_str()),
            portcullis::os_user::effective_name(),
            "{}",
            why("for portcullis's own OS user on a Unix-socket backend")
        );
    }
    let Some(&(seq, payload, _)) = packets(&seen.backend_got).first() else {
        return;
    };
    assert_eq!(
        seq,
        1,
        "{}",
        why("and sent the response at a seq other than 1")
    );
    let relayed = HandshakeResponse::parse(payload)
        .unwrap_or_else(|e| panic!("{}: {e}", why("and sent a response that does not parse")));
    assert_eq!(
        relayed.auth_plugin.as_deref(),
        Some(SWITCH_PLUGIN),
        "{}",
        why("plugin")
    );
    assert_eq!(relayed.user, resp.user, "{}", why("user"));
    assert_eq!(relayed.database, resp.database, "{}", why("database"));
    let never = Capabilities::SSL | Capabilities::COMPRESS | Capabilities::ZSTD_COMPRESSION;
    assert_eq!(relayed.capabilities.0 & never, 0, "{}", why("capabilities"));
    let user_end = payload[32..].iter().position(|&b| b == 0).map(|n| 32 + n);
    let auth = user_end.and_then(|n| payload.get(n + 1));
    assert_eq!(auth, Some(&0), "{}", why("with auth data"));
}

/// Invariant 4: after an SSLRequest on a TLS listener, only TLS records.
fn check_no_plaintext(case: &Case<'_>, seen: &Seen, greeting_end: usize, listener: &str) {
    if !case.tls {
        return;
    }
    let asked = match case.client {
        ClientKind::Tls { .. } => seen.sent_ssl_request,
        ClientKind::Raw => packets(case.client_bytes)
            .first()
            .is_some_and(|&(seq, p, _)| seq == 1 && is_ssl_request(p)),
    };
    if asked {
        let after = &seen.client_raw[greeting_end..];
        assert!(
            only_tls_records(after),
            "listener {listener}: plaintext written after the SSLRequest: {after:?}"
        );
    }
}

/// Invariant 5: during authentication the client sees the backend's
/// packets, shifted, then at most one ERR of portcullis's own, last.
fn check_relay(case: &Case<'_>, seen: &Seen, greeting_end: usize, listener: &str) {
    let (stream, shift): (&[u8], u8) = match (case.tls, seen.tls_done) {
        (true, true) => (&seen.client_tls, 1),
        (false, _) => (&seen.client_raw[greeting_end..], 0),
        // An SSLRequest without a completed TLS handshake: TLS records
        // (invariant 4), or the plaintext ERR of a client that did not ask.
        (true, false) => match check_is_plain(case, seen) {
            true => (&seen.client_raw[greeting_end..], 0),
            false => return,
        },
    };
    let backend: Vec<_> = if seen.accepted {
        packets(case.backend_script).into_iter().skip(1).collect()
    } else {
        Vec::new()
    };
    let got = packets(stream);
    for (i, &(seq, payload, end)) in got.iter().enumerate() {
        if let Some(&(bseq, bpayload, _)) = backend.get(i) {
            let same = payload == bpayload
                || (payload.first() == Some(&0) && bpayload.first() == Some(&0));
            if same && seq == bseq.wrapping_add(shift) {
                if matches!(bpayload.first(), Some(0x00 | 0xff)) {
                    return; // authentication ended; the command phase follows
                }
                continue;
            }
        }
        assert_eq!(
            payload.first(),
            Some(&0xff),
            "listener {listener}, client {:?}: packet {i} (seq {seq}) to the client is neither \
             the backend's (shifted by {shift}) nor an ERR: {payload:?}; backend sent {backend:?}",
            case.client
        );
        assert_eq!(
            end,
            stream.len(),
            "listener {listener}: bytes after portcullis's own ERR: {:?}",
            &stream[end..]
        );
        return;
    }
}

/// On a TLS listener without a completed TLS handshake: whether the client
/// stream after the greeting is MySQL packets (no SSLRequest was sent).
fn check_is_plain(case: &Case<'_>, seen: &Seen) -> bool {
    match case.client {
        ClientKind::Tls { .. } => !seen.sent_ssl_request,
        ClientKind::Raw => !packets(case.client_bytes)
            .first()
            .is_some_and(|&(seq, p, _)| seq == 1 && is_ssl_request(p)),
    }
}

/// Invariant 7: behind the (Unix-socket) fake backend, a COM_CHANGE_USER to
/// portcullis's own OS user never reaches it as a command, unless the
/// listener allows it. Commands on the backend leg: after the relayed
/// response, a packet at seq 0 that neither continues a 16 MiB one nor
/// follows a non-empty seq-255 one (a LOAD DATA LOCAL file wrapping).
fn check_change_user(case: &Case<'_>, seen: &Seen, listener: &str) {
    let Some(me) = portcullis::os_user::effective_name() else {
        return;
    };
    if case.kind != Kind::Relay {
        return;
    }
    let (mut continued, mut after_255) = (false, false);
    for (i, &(seq, payload, _)) in packets(&seen.backend_got).iter().enumerate() {
        let command = i > 0 && !continued && !after_255 && seq == 0;
        if command && payload.first() == Some(&0x11) {
            let user = payload[1..].split(|&b| b == 0).next();
            assert_ne!(
                user,
                Some(me.as_bytes()),
                "listener {listener}: a COM_CHANGE_USER to portcullis's OS user reached the backend"
            );
        }
        continued = payload.len() == 0xFF_FFFF;
        after_255 = seq == 255 && !payload.is_empty();
    }
}

/// The greeting template portcullis greets with for this input.
fn template(learned: bool, backend_script: &[u8]) -> GreetingTemplate {
    let first = packets(backend_script).first().map(|&(_, p, _)| p);
    learned
        .then_some(first)
        .flatten()
        .and_then(|p| GreetingTemplate::learn(&Greeting::parse(p).ok()?, p).ok())
        .unwrap_or_else(GreetingTemplate::fallback)
}

fuzz_target!(|data: &[u8]| {
    let (mode, crowd, rest) = match data {
        [m, c, rest @ ..] => (*m, *c, rest),
        _ => return,
    };
    let (n, rest) = match rest {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, rest),
    };
    let (client_bytes, backend_script) = rest.split_at(n.min(rest.len()));
    let kind = KINDS[usize::from(mode & 3)].0;
    let case = Case {
        kind,
        tls: mode & 4 != 0,
        client: match (mode >> 3) & 3 {
            1 => ClientKind::Tls { with_cert: true },
            2 => ClientKind::Tls { with_cert: false },
            _ => ClientKind::Raw,
        },
        stall: mode & 0x20 != 0,
        crowd: (crowd & 0x80 != 0).then_some(crowd & 0x7f),
        template: template(mode & 0x80 != 0, backend_script),
        client_bytes,
        backend_script,
    };

    let h = harness();
    let index = (usize::from(case.stall) * 4 + usize::from(mode & 3)) * 2 + usize::from(case.tls);
    let listener = &h.listeners[index];
    let name = &listener.config.name;
    h.fake.learn_greeting(case.template.clone());
    let (seen, ended) =
        h.rt.block_on(run_once(h, listener, &case))
            .unwrap_or_else(|| {
                panic!(
                    "session did not end within {LIMIT:?} (listener {name}, client {:?}, backend \
             stalls: {}): with both peers closed, or past the {STALL_TIMEOUT} handshake \
             timeout, it must",
                    case.client, case.stall
                )
            });
    if debug() {
        eprintln!(
            "  {}: client read {} bytes ({} inside TLS), ssl request {}, tls {}; backend \
             dialled {} (after TLS {}), accepted {}, got {:?}",
            ended.label,
            seen.client_raw.len(),
            seen.client_tls.len(),
            seen.sent_ssl_request,
            seen.tls_done,
            seen.dialled,
            seen.dialled_after_tls,
            seen.accepted,
            packets(&seen.backend_got)
                .iter()
                .map(|&(seq, p, _)| (seq, p.len()))
                .collect::<Vec<_>>(),
        );
    }
    let greeting_end = check_greeting(&case, &seen, name);
    check_door(&case, &seen, &ended, name);
    check_no_plaintext(&case, &seen, greeting_end, name);
    check_relay(&case, &seen, greeting_end, name);
    check_change_user(&case, &seen, name);
});
