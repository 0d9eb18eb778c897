//! Microbenchmarks of the pure connection-phase codec (no I/O).
//!
//! Run with `cargo bench --bench codec`. The inputs are the packets a real
//! MariaDB 10.11 server and a Connector/C (`mariadb` CLI) client exchange,
//! with scrambles and auth data replaced by fixed bytes.

use divan::{black_box, Bencher};
use portcullis::failover::{FailoverMode, FailoverSettings, DEFAULT_ERROR_CODE};
use portcullis::protocol::packet::split_packet;
use portcullis::protocol::response::{self, is_ssl_request};
use portcullis::protocol::{Capabilities, ErrPacket, Greeting, HandshakeResponse};

fn main() {
    divan::main();
}

/// A MariaDB 10.11 greeting payload (as in the greeting unit tests).
fn mariadb_greeting() -> Vec<u8> {
    let mut p = vec![0x0a];
    p.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
    p.extend_from_slice(&[0x2a, 0, 0, 0]);
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&[0xfe, 0xff, 0x2d, 0x02, 0x00, 0xff, 0x81, 0x15]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&[0x1d, 0, 0, 0]);
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    p
}

/// Capabilities Connector/C 3.3 sends (lower 32 bits), with CLIENT_SSL.
const CLIENT_CAPS: u32 = 0x81be_aa05 | Capabilities::SSL;

/// An SSLRequest payload: the fixed 32-byte prefix of a HandshakeResponse.
fn ssl_request() -> Vec<u8> {
    let mut p = CLIENT_CAPS.to_le_bytes().to_vec();
    p.extend_from_slice(&0x0100_0000u32.to_le_bytes()); // max packet 16 MiB
    p.push(45); // utf8mb4_general_ci
    p.extend_from_slice(&[0; 19]);
    p.extend_from_slice(&[0x1d, 0, 0, 0]); // MariaDB extended capabilities
    p
}

fn lenenc_str(p: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 251);
    p.push(s.len() as u8);
    p.extend_from_slice(s);
}

/// A HandshakeResponse41 as the `mariadb` CLI sends it: user, 20-byte
/// native-password auth data, schema, plugin name and connect attributes.
fn handshake_response() -> Vec<u8> {
    let mut p = ssl_request();
    p.extend_from_slice(b"app\0");
    lenenc_str(&mut p, &[0x5a; 20]);
    p.extend_from_slice(b"shop\0");
    p.extend_from_slice(b"mysql_native_password\0");
    let mut attrs = Vec::new();
    for (k, v) in [
        (&b"_client_name"[..], &b"libmariadb"[..]),
        (b"_client_version", b"3.3.8"),
        (b"_os", b"Linux"),
        (b"_pid", b"123456"),
        (b"_platform", b"x86_64"),
        (b"_server_host", b"db1.example.net"),
        (b"program_name", b"mariadb"),
    ] {
        lenenc_str(&mut attrs, k);
        lenenc_str(&mut attrs, v);
    }
    lenenc_str(&mut p, &attrs);
    p
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
        message: None,
        error_code: DEFAULT_ERROR_CODE,
    };
    bencher.bench_local(|| black_box(&s).packet().unwrap().encode());
}
