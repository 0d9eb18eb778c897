//! The connection-phase state machine (`portcullis::session::serve`) driven
//! from arbitrary bytes on both legs.
//!
//! Input layout:
//!
//! ```text
//! byte 0        mode (bits below)
//! bytes 1..3    n = length of the backend script (u16 LE, clamped)
//! next n bytes  what the fake backend sends
//! the rest      what the client sends
//! ```
//!
//! Mode bits:
//! - 0..=1 listener kind: 0/3 relay to the fake backend, 1 failover redirect
//!   (`failover = "all"`), 2 backend unreachable (refused with portcullis's
//!   own greeting and an ERR);
//! - 2 the listener has TLS (demo PKI from `certs-test/`, client
//!   certificates required);
//! - 3..=4 the client: 0/3 raw bytes; 1 a scripted TLS client that reads the
//!   greeting, sends an SSLRequest, completes TLS with a client certificate
//!   and then sends the client bytes inside TLS; 2 the same without a
//!   client certificate;
//! - 5 the backend stalls: it sends its script and then keeps its side
//!   open until portcullis closes (a hung or half-written server). Those
//!   inputs go to listeners with a 20 ms `handshake_timeout`. Otherwise the
//!   backend half-closes once portcullis has had its script.
//!
//! The client always half-closes once portcullis has had its bytes, then
//! reads until portcullis closes. So a session must end: at once when both
//! peers closed, within the handshake timeout when the backend stalls. One
//! that has not ended after 100 ms is a hang and fails the target. Time is
//! the runtime's paused clock, which only moves when everything waits: a
//! timeout costs no wall time and does not depend on the machine's speed.
//!
//! Invariant checked: the first packet the client receives, when it is a
//! greeting, advertises CLIENT_SSL exactly when the listener has TLS.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis::backend::BackendRuntime;
use portcullis::listener::{ListenerRuntime, RouteRuntime};
use portcullis::packet_io::read_packet_exact;
use portcullis::protocol::packet::{split_packet, write_packet};
use portcullis::protocol::{Capabilities, Greeting, HEADER_LEN};
use portcullis::metrics::ByteCounts;
use portcullis::session::{serve, SessionInfo};
use portcullis::tls::{load_certs, load_key};
use portcullis::config::Route;
use portcullis::preflight::Preflight;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::UnixListener;
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

/// How long a session may take, on the runtime's paused clock (see
/// `Harness::new`): far past anything that is not a hang.
const LIMIT: Duration = Duration::from_millis(100);
/// handshake_timeout of the listeners used when the backend stalls.
const STALL_TIMEOUT: &str = "20ms";

#[derive(Clone, Copy, Debug)]
enum ClientKind {
    Raw,
    Tls { with_cert: bool },
}

struct Harness {
    rt: Runtime,
    backend: UnixListener,
    /// Indexed by `kind * 2 + tls`.
    listeners: Vec<ListenerRuntime>,
    client_with_cert: Arc<rustls::ClientConfig>,
    client_without_cert: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-test")
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        let certs = certs_dir().canonicalize().expect("certs-test/ exists");
        let c = certs.display().to_string();
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
        // Order: index = (stall * 3 + kind) * 2 + tls.
        for (stall, timeout) in [("", "10s"), ("-stall", STALL_TIMEOUT)] {
            for kind in ["relay", "failover", "gone"] {
                for tls in [false, true] {
                    toml += &format!(
                        r#"
[[listener]]
name = "{kind}-{tls}{stall}"
address = "unix:{d}/{kind}-{tls}{stall}.sock"
route = "{route}"
handshake_timeout = "{timeout}"
max_handshake_packet = 4096
"#,
                        route = if kind == "gone" { "gone" } else { "fake" },
                    );
                    if kind == "failover" {
                        toml += "failover = \"all\"\nfailover_target = \"db2.example.net:3307\"\n";
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

        let mut roots = rustls::RootCertStore::empty();
        for cert in load_certs(&certs.join("ca.pem")).expect("ca.pem") {
            roots.add(cert).expect("CA certificate");
        }
        let client_config = |with_cert: bool| {
            let b = rustls::ClientConfig::builder_with_provider(portcullis::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots.clone());
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
        };

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
            listeners,
            client_with_cert: client_config(true),
            client_without_cert: client_config(false),
            _dir: dir,
        }
    }
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(Harness::new)
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
/// two ready streams portcullis happens to read first (a client that sends
/// its auth data and closes at once loses the race against the backend's
/// OK half the time), and libFuzzer would see the same input behave
/// differently. Each yield lets the runtime poll the I/O driver once.
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
/// and reads whatever portcullis relays. Unless it stalls, it then
/// half-closes like the client. Never completes: it is dropped when the
/// session ends.
async fn fake_backend(listener: &UnixListener, script: &[u8], stall: bool) {
    if let Ok((mut s, _)) = listener.accept().await {
        let (mut r, mut w) = s.split();
        let write = async {
            let _ = w.write_all(script).await;
            if !stall {
                settle().await;
                let _ = w.shutdown().await;
            }
        };
        tokio::join!(write, read_to_close(&mut r));
        // portcullis closed its side: close ours.
        let _ = w.shutdown().await;
    }
    std::future::pending::<()>().await
}

/// Returns the greeting the client saw (payload), if the first packet was one.
async fn client(
    h: &Harness,
    mut io: DuplexStream,
    kind: ClientKind,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    match kind {
        ClientKind::Raw => {
            let got = send_and_drain(io, bytes).await;
            let (_, n) = split_packet(&got).ok()?;
            Some(got[HEADER_LEN..n].to_vec())
        }
        ClientKind::Tls { with_cert } => {
            let Ok(first) = read_packet_exact(&mut io, 1 << 24, false).await else {
                send_and_drain(io, bytes).await;
                return None;
            };
            let greeting = first.payload().to_vec();
            let offers_tls =
                Greeting::parse(&greeting).is_ok_and(|g| g.capabilities.has(Capabilities::SSL));
            if !offers_tls {
                send_and_drain(io, bytes).await;
                return Some(greeting);
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
                return Some(greeting);
            }
            let cfg = if with_cert {
                h.client_with_cert.clone()
            } else {
                h.client_without_cert.clone()
            };
            let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
            match TlsConnector::from(cfg).connect(name, io).await {
                Ok(tls) => {
                    send_and_drain(tls, bytes).await;
                }
                Err(_) => {
                    // The handshake failed (e.g. no certificate): the
                    // stream is gone with the connector; portcullis ends.
                }
            }
            Some(greeting)
        }
    }
}

/// One session over fresh streams; `None` when it did not end within `limit`.
async fn run_once(
    h: &Harness,
    listener: &ListenerRuntime,
    kind: ClientKind,
    backend_script: &[u8],
    stall: bool,
    client_bytes: &[u8],
) -> Option<Option<Vec<u8>>> {
    let (proxy_side, client_side) = tokio::io::duplex(64 * 1024);
    let cancel = CancellationToken::new();
    let session = async {
        let mut info = SessionInfo::default();
        let totals = ByteCounts::default();
        let ended = tokio::select! {
            r = serve(proxy_side, listener, &mut info, &cancel, &totals) => r,
            _ = fake_backend(&h.backend, backend_script, stall) => unreachable!(),
        };
        (ended, info)
    };
    let both = async {
        let ((ended, info), seen) =
            tokio::join!(session, client(h, client_side, kind, client_bytes));
        if debug() {
            eprintln!(
                "listener {} client {kind:?} backend stalls {stall}: {} ({ended:?}); user {:?}, tls {:?}, cert {:?}",
                listener.config.name,
                match &ended {
                    Ok(f) => f.label(),
                    Err(e) => e.label(),
                },
                info.user,
                info.tls_version,
                info.client_cert.as_ref().map(|c| &c.subject),
            );
        }
        seen
    };
    let out = tokio::time::timeout(LIMIT, both).await.ok();
    // A connection portcullis made but the fake backend never accepted
    // would be picked up by the next input: drop any such.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, h.backend.accept()).await {}
    out
}

/// `PORTCULLIS_FUZZ_DEBUG=1` prints how each session ended (for checking
/// what an input reaches: `cargo fuzz run connection_phase <file>`).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("PORTCULLIS_FUZZ_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (n, rest) = match rest {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, rest),
    };
    let (backend_script, client_bytes) = rest.split_at(n.min(rest.len()));
    let listener_kind = match mode & 3 {
        3 => 0,
        k => usize::from(k),
    };
    let tls = mode & 4 != 0;
    let kind = match (mode >> 3) & 3 {
        1 => ClientKind::Tls { with_cert: true },
        2 => ClientKind::Tls { with_cert: false },
        _ => ClientKind::Raw,
    };
    let stall = mode & 0x20 != 0;
    let stall_index = usize::from(stall);

    let h = harness();
    let listener = &h.listeners[(stall_index * 3 + listener_kind) * 2 + usize::from(tls)];
    let seen =
        h.rt.block_on(run_once(
            h,
            listener,
            kind,
            backend_script,
            stall,
            client_bytes,
        ))
        .unwrap_or_else(|| {
            panic!(
                "session did not end within {LIMIT:?} (listener {}, client {kind:?}, \
                 backend stalls: {stall}): with both peers closed, or past the \
                 {STALL_TIMEOUT} handshake timeout, it must",
                listener.config.name
            )
        });
    if let Some(g) = seen.as_deref().and_then(|p| Greeting::parse(p).ok()) {
        assert_eq!(
            g.capabilities.has(Capabilities::SSL),
            tls,
            "greeting on listener {} must advertise CLIENT_SSL exactly when it has TLS",
            listener.config.name
        );
    }
});
