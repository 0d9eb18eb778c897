//! Microbenchmarks of the pure protocol codec (no I/O): the connection
//! phase, and the command phase's framing tracker and COM_CHANGE_USER.
//!
//! Run with `cargo bench --bench codec`. The inputs are the packets a real
//! MariaDB 10.11 server and a Connector/C (`mariadb` CLI) client exchange,
//! with scrambles and auth data replaced by fixed bytes.

use divan::{black_box, Bencher};
use portcullis::failover::{FailoverMode, FailoverSettings, DEFAULT_ERROR_CODE};
use portcullis::protocol::packet::split_packet;
use portcullis::protocol::response::{self, is_ssl_request};
use portcullis::protocol::{ErrPacket, Greeting, HandshakeResponse};

fn main() {
    divan::main();
}

// Inputs are the fuzz seed corpus (fuzz/make_corpus.py writes them from
// MariaDB 10.11 / Connector/C captures), so benches and fuzzing share one
// set of realistic packets.

/// A MariaDB 10.11 greeting payload.
fn mariadb_greeting() -> Vec<u8> {
    include_bytes!("../fuzz/corpus/greeting/mariadb-10.11").to_vec()
}

/// An SSLRequest payload as Connector/C 3.3 sends it.
fn ssl_request() -> Vec<u8> {
    include_bytes!("../fuzz/corpus/handshake_response/ssl-request").to_vec()
}

/// A HandshakeResponse41 as the `mariadb` CLI sends it: user, 20-byte
/// native-password auth data, schema, plugin name and connect attributes.
fn handshake_response() -> Vec<u8> {
    include_bytes!("../fuzz/corpus/handshake_response/mariadb-cli").to_vec()
}

/// A framed packet (header + payload) followed by the start of the next.
fn framed(payload: &[u8], seq: u8) -> Vec<u8> {
    let mut v = Vec::new();
    portcullis::protocol::packet::write_packet(&mut v, seq, payload);
    v.extend_from_slice(&[0x10, 0, 0]);
    v
}

#[divan::bench]
fn greeting_parse(bencher: Bencher) {
    let p = mariadb_greeting();
    bencher.bench_local(|| Greeting::parse(black_box(&p)).unwrap());
}

#[divan::bench]
fn greeting_parse_set_ssl(bencher: Bencher) {
    bencher.with_inputs(mariadb_greeting).bench_local_refs(|p| {
        let mut g = Greeting::parse(p).unwrap();
        g.set_ssl(p, true);
        g
    });
}

#[divan::bench]
fn handshake_response_parse(bencher: Bencher) {
    let p = handshake_response();
    assert_eq!(HandshakeResponse::parse(&p).unwrap().user, "app");
    bencher.bench_local(|| HandshakeResponse::parse(black_box(&p)).unwrap());
}

#[divan::bench]
fn handshake_response_clear_ssl(bencher: Bencher) {
    bencher
        .with_inputs(handshake_response)
        .bench_local_refs(|p| response::set_ssl(p, false));
}

#[divan::bench(args = ["ssl_request", "handshake_response"])]
fn ssl_request_check(bencher: Bencher, which: &str) {
    let p = match which {
        "ssl_request" => ssl_request(),
        _ => handshake_response(),
    };
    assert_eq!(is_ssl_request(&p), which == "ssl_request");
    bencher.bench_local(|| is_ssl_request(black_box(&p)));
}

#[divan::bench]
fn split_packet_complete(bencher: Bencher) {
    let buf = framed(&handshake_response(), 1);
    bencher.bench_local(|| split_packet(black_box(&buf)).unwrap());
}

#[divan::bench]
fn split_packet_incomplete(bencher: Bencher) {
    let buf = framed(&handshake_response(), 1);
    let partial = &buf[..40];
    bencher.bench_local(|| split_packet(black_box(partial)).unwrap_err());
}

#[divan::bench]
fn err_packet_encode(bencher: Bencher) {
    let e = ErrPacket::new(
        1045,
        b"28000",
        "portcullis: listener 'mysql-tls' requires TLS with a client certificate; connect with --ssl and --ssl-cert/--ssl-key",
    );
    bencher.bench_local(|| black_box(&e).encode());
}

#[divan::bench]
fn err_packet_parse(bencher: Bencher) {
    let p = ErrPacket::new(1045, b"28000", "Access denied for user 'app'@'localhost'").encode();
    bencher.bench_local(|| ErrPacket::parse(black_box(&p)).unwrap());
}

#[divan::bench]
fn failover_packet(bencher: Bencher) {
    let s = FailoverSettings {
        mode: FailoverMode::On,
        target: Some("db2.example.net:3306".into()),
        error_code: DEFAULT_ERROR_CODE,
        ..Default::default()
    };
    bencher.bench_local(|| black_box(&s).packet().unwrap().encode());
}

// --- the command phase: framing and COM_CHANGE_USER -------------------------

use portcullis::protocol::command::{frame, CommandFraming, Scan};
use portcullis::protocol::{Capabilities, ChangeUser, COM_CHANGE_USER};

/// The relay's read size.
const READ: usize = portcullis::relay::RELAY_BUF;

/// A COM_STMT_EXECUTE as mysql_async sends it for the e2e bench's point
/// select (`SELECT c FROM sbtest1 WHERE id=?`, one BIGINT parameter).
fn stmt_execute() -> Vec<u8> {
    let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0x08, 0x00];
    p.extend_from_slice(&4242u64.to_le_bytes());
    frame(&p, 0)
}

/// libmariadb's COM_CHANGE_USER and its client's capabilities (the fuzz
/// seed: 4 bytes of capabilities, then the payload).
fn change_user() -> (Capabilities, Vec<u8>) {
    let seed = include_bytes!("../fuzz/corpus/change_user/libmariadb-db-attrs");
    let caps = Capabilities(u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]));
    (caps, seed[4..].to_vec())
}

/// The usual read in the command phase: one small command.
#[divan::bench]
fn framing_one_command_per_read(bencher: Bencher) {
    let p = stmt_execute();
    let mut f = CommandFraming::new();
    bencher
        .counter(divan::counter::BytesCount::new(p.len()))
        .bench_local(|| f.scan(black_box(&p), COM_CHANGE_USER));
}

/// A full read of back-to-back small commands (pipelining clients): the
/// worst case per byte, one header decode per 26 bytes.
#[divan::bench]
fn framing_16k_read_of_small_commands(bencher: Bencher) {
    let one = stmt_execute();
    let mut buf = Vec::with_capacity(READ);
    while buf.len() + one.len() <= READ {
        buf.extend_from_slice(&one);
    }
    let mut f = CommandFraming::new();
    assert_eq!(f.scan(&buf, COM_CHANGE_USER), Scan::Done);
    bencher
        .counter(divan::counter::BytesCount::new(buf.len()))
        .bench_local(|| f.scan(black_box(&buf), COM_CHANGE_USER));
}

/// A 16 MiB INSERT (a chunk of 0xFFFFFF bytes, then its continuation) as
/// the relay reads it, 16 KiB at a time: payload bytes are skipped.
#[divan::bench]
fn framing_16mib_packet_in_16k_reads(bencher: Bencher) {
    let mut p = b"\x03INSERT INTO t VALUES ('".to_vec();
    p.resize(16 * 1024 * 1024, b'x');
    let stream = frame(&p, 0);
    bencher
        .counter(divan::counter::BytesCount::new(stream.len()))
        .bench_local(|| {
            let mut f = CommandFraming::new();
            for read in black_box(&stream).chunks(READ) {
                assert_eq!(f.scan(read, COM_CHANGE_USER), Scan::Done);
            }
        });
}

#[divan::bench]
fn change_user_parse(bencher: Bencher) {
    let (caps, p) = change_user();
    assert_eq!(ChangeUser::parse(&p, caps).unwrap().user, b"u2");
    bencher.bench_local(|| ChangeUser::parse(black_box(&p), caps).unwrap());
}

#[divan::bench]
fn change_user_rebuild(bencher: Bencher) {
    let (caps, p) = change_user();
    let cu = ChangeUser::parse(&p, caps).unwrap();
    bencher.bench_local(|| {
        black_box(&cu)
            .rebuild(b"client_ed25519", &[0xab; 64], caps)
            .unwrap()
    });
}
