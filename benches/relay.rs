//! The relay with and without command inspection, over in-memory pipes.
//!
//! Run with `cargo bench --bench relay`. Each benchmark runs `relay::relay`
//! between two `tokio::io::duplex` pipes on a current-thread runtime, once
//! without inspection (`none`, bytes copied unparsed) and once with a
//! policy that forwards every COM_CHANGE_USER (`inspect`): the difference is
//! what finding command boundaries costs the relay.
//! - `round_trips`: 1000 × a COM_STMT_EXECUTE up and a 60-byte answer down,
//!   one at a time, as a point-select client does (one packet per read);
//! - `bulk_up`: a 16 MiB + 1 byte COM_QUERY (two chunks) up, 16 KiB reads;
//! - `change_user_round_trips`: 100 × a COM_CHANGE_USER (libmariadb's) and a 7-byte OK
//!   back: the held path, parsed and handed to the policy each time.

use divan::{black_box, Bencher};
use portcullis::metrics::ByteCounts;
use portcullis::protocol::command::frame;
use portcullis::protocol::{Capabilities, ChangeUser};
use portcullis::relay::{relay, CommandPolicy, Inspect, Verdict};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

fn main() {
    divan::main();
}

const MODES: [&str; 2] = ["none", "inspect"];

struct ForwardAll;

impl CommandPolicy for ForwardAll {
    fn change_user(&self, cu: &ChangeUser<'_>) -> Verdict {
        black_box(cu.user);
        Verdict::Forward
    }
}

/// libmariadb's COM_CHANGE_USER and its client's capabilities (the fuzz
/// seed: 4 bytes of capabilities, then the payload).
fn change_user() -> (Capabilities, Vec<u8>) {
    let seed = include_bytes!("../fuzz/corpus/change_user/libmariadb-db-attrs");
    let caps = Capabilities(u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]));
    (caps, seed[4..].to_vec())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `client` and `backend` (the far ends of the two pipes) against a
/// relay between them, inspecting or not; returns when both are done.
async fn with_relay<C, B>(
    mode: &str,
    client: impl FnOnce(DuplexStream) -> C,
    backend: impl FnOnce(DuplexStream) -> B,
) where
    C: std::future::Future<Output = ()>,
    B: std::future::Future<Output = ()>,
{
    let (client_far, mut client_near) = duplex(64 * 1024);
    let (mut backend_near, backend_far) = duplex(64 * 1024);
    let (caps, _) = change_user();
    let inspect = (mode == "inspect").then_some(Inspect {
        policy: &ForwardAll,
        capabilities: caps,
        max_packet: 16 * 1024 * 1024,
    });
    let bytes = ByteCounts::default();
    let meters = [&bytes];
    let r = relay(&mut client_near, &mut backend_near, None, &meters, inspect);
    let ((), (), finished) = tokio::join!(client(client_far), backend(backend_far), r);
    assert_eq!(finished.label(), "relayed");
}

#[divan::bench(args = MODES)]
fn round_trips(bencher: Bencher, mode: &str) {
    let rt = runtime();
    let mut exec = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x08, 0x00];
    exec.extend_from_slice(&4242u64.to_le_bytes());
    let exec = frame(&exec, 0);
    let answer = frame(&[0x42; 60], 1);
    let (exec, answer) = (&exec, &answer);
    bencher.bench_local(|| {
        rt.block_on(with_relay(
            mode,
            |mut c| async move {
                let mut buf = vec![0u8; answer.len()];
                for _ in 0..1000 {
                    c.write_all(exec).await.unwrap();
                    c.read_exact(&mut buf).await.unwrap();
                }
                c.shutdown().await.unwrap();
            },
            |mut b| async move {
                let mut buf = vec![0u8; exec.len()];
                for _ in 0..1000 {
                    b.read_exact(&mut buf).await.unwrap();
                    b.write_all(answer).await.unwrap();
                }
                let mut rest = Vec::new();
                b.read_to_end(&mut rest).await.unwrap();
            },
        ))
    });
}

#[divan::bench(args = MODES)]
fn bulk_up(bencher: Bencher, mode: &str) {
    let rt = runtime();
    let mut q = b"\x03INSERT INTO t VALUES ('".to_vec();
    q.resize(16 * 1024 * 1024 + 1, b'x');
    let stream = frame(&q, 0);
    let stream = &stream;
    bencher
        .counter(divan::counter::BytesCount::new(stream.len()))
        .bench_local(|| {
            rt.block_on(with_relay(
                mode,
                |mut c| async move {
                    c.write_all(stream).await.unwrap();
                    c.shutdown().await.unwrap();
                },
                |mut b| async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut n = 0;
                    loop {
                        let k = b.read(&mut buf).await.unwrap();
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    assert_eq!(n, stream.len());
                },
            ))
        });
}

#[divan::bench(args = MODES)]
fn change_user_round_trips(bencher: Bencher, mode: &str) {
    let rt = runtime();
    let (_, cu) = change_user();
    let cu = frame(&cu, 0);
    let ok = frame(&[0, 0, 0, 2, 0, 0, 0], 1);
    let (cu, ok) = (&cu, &ok);
    bencher.bench_local(|| {
        rt.block_on(with_relay(
            mode,
            |mut c| async move {
                let mut buf = vec![0u8; ok.len()];
                for _ in 0..100 {
                    c.write_all(cu).await.unwrap();
                    c.read_exact(&mut buf).await.unwrap();
                }
                c.shutdown().await.unwrap();
            },
            |mut b| async move {
                let mut buf = vec![0u8; cu.len()];
                for _ in 0..100 {
                    b.read_exact(&mut buf).await.unwrap();
                    b.write_all(ok).await.unwrap();
                }
                let mut rest = Vec::new();
                b.read_to_end(&mut rest).await.unwrap();
            },
        ))
    });
}
