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
//! - 5 the backend half-closes right after its script (otherwise it keeps
//!   reading until portcullis closes its side, like a real server).
//!
//! The client always half-closes after its bytes and then reads until
//! portcullis closes, so every session must end. A session that takes over
//! 100 ms is re-run with a 2 s limit; one that still has not ended is a hang
//! and fails the target.
//!
//! Invariant checked: the first packet the client receives, when it is a
//! greeting, advertises CLIENT_SSL exactly when the listener has TLS.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use libfuzzer_sys::fuzz_target;
use portcullis::listener::ListenerRuntime;
use portcullis::packet_io::read_packet_exact;
use portcullis::protocol::packet::{split_packet, write_packet};
use portcullis::protocol::{Capabilities, Greeting, HEADER_LEN};
use portcullis::session::{serve, SessionInfo};
use portcullis::tls::{load_certs, load_key, ServerTls};
use portcullis::Config;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::UnixListener;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const FIRST_TRY: Duration = Duration::from_millis(100);
const HANG: Duration = Duration::from_secs(2);

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
        for kind in ["relay", "failover", "gone"] {
            for tls in [false, true] {
                toml += &format!(
                    r#"
[[listener]]
name = "{kind}-{tls}"
address = "unix:{d}/{kind}-{tls}.sock"
route = "{route}"
handshake_timeout = "10s"
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
        let config = Config::from_toml(&toml, &dir.path().join("fuzz.toml"), dir.path())
            .unwrap_or_else(|e| panic!("fuzz config does not validate:\n{e}\n{toml}"));
        let listeners = config
            .listeners
            .iter()
            .map(|l| ListenerRuntime {
                config: l.clone(),
                backend: config.backend(&l.route).expect("route").clone(),
                tls: l.tls.as_ref().map(|t| {
                    ArcSwap::from_pointee(ServerTls::load(t).expect("demo PKI loads"))
                }),
                slots: Arc::new(Semaphore::new(l.max_connections)),
                failover: ArcSwap::from_pointee(l.failover.clone()),
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

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
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

/// Writes `bytes`, half-closes, and reads until the peer closes.
async fn send_and_drain<S: AsyncRead + AsyncWrite + Unpin>(s: S, bytes: &[u8]) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let write = async {
        let _ = w.write_all(bytes).await;
        let _ = w.shutdown().await;
    };
    let (_, got) = tokio::join!(write, read_to_close(&mut r));
    got
}

/// The fake backend: accepts portcullis's connection, sends the script,
/// and reads whatever portcullis relays. Never completes: it is dropped
/// when the session ends.
async fn fake_backend(listener: &UnixListener, script: &[u8], close_early: bool) {
    if let Ok((mut s, _)) = listener.accept().await {
        let (mut r, mut w) = s.split();
        let write = async {
            let _ = w.write_all(script).await;
            if close_early {
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
            let offers_tls = Greeting::parse(&greeting)
                .is_ok_and(|g| g.capabilities.has(Capabilities::SSL));
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
    close_early: bool,
    client_bytes: &[u8],
    limit: Duration,
) -> Option<Option<Vec<u8>>> {
    let (proxy_side, client_side) = tokio::io::duplex(64 * 1024);
    let cancel = CancellationToken::new();
    let mut info = SessionInfo::default();
    let session = async {
        tokio::select! {
            r = serve(proxy_side, listener, &mut info, &cancel) => r,
            _ = fake_backend(&h.backend, backend_script, close_early) => unreachable!(),
        }
    };
    let both = async { tokio::join!(session, client(h, client_side, kind, client_bytes)).1 };
    let out = tokio::time::timeout(limit, both).await.ok();
    // A connection portcullis made but the fake backend never accepted
    // would be picked up by the next input: drop any such.
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::ZERO, h.backend.accept()).await {}
    out
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
    let close_early = mode & 0x20 != 0;

    let h = harness();
    let listener = &h.listeners[listener_kind * 2 + usize::from(tls)];
    let run = |limit| {
        h.rt.block_on(run_once(
            h,
            listener,
            kind,
            backend_script,
            close_early,
            client_bytes,
            limit,
        ))
    };
    let seen = match run(FIRST_TRY) {
        Some(seen) => seen,
        None => run(HANG).unwrap_or_else(|| {
            panic!(
                "session did not end within {HANG:?} although both peers closed \
                 (listener {}, client {kind:?}, backend closes early: {close_early})",
                listener.config.name
            )
        }),
    };
    if let Some(g) = seen.as_deref().and_then(|p| Greeting::parse(p).ok()) {
        assert_eq!(
            g.capabilities.has(Capabilities::SSL),
            tls,
            "greeting on listener {} must advertise CLIENT_SSL exactly when it has TLS",
            listener.config.name
        );
    }
});
