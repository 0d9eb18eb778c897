//! PROXY protocol v2 towards the backend: mariadbd, with portcullis's
//! addresses in `proxy_protocol_networks`, applies grants to the real
//! client address and shows it in the processlist — over a Unix socket
//! (`localhost` in the networks) and over TCP, for IPv6 and IPv4 clients.
//!
//! And inbound (`accept_proxy_protocol`): behind a stand-in L4 load
//! balancer that sends a v1 or v2 header, the backend, the log line and
//! `/sessions` see the client the header names; a trusted peer without a
//! header, or with a malformed one, is refused; an untrusted peer's header
//! is refused as a bad handshake, as without the key.

mod common;

use common::client::{cli_socket_args, mariadb_cli, server_error_code, tls_opts};
use common::http::http;
use common::mariadb::{short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::absent_backend;
use common::proxy::{tls_section, TestProxy};
use common::raw::RawClient;
use mysql_async::prelude::*;
use mysql_async::Conn;
use portcullis::proxy_protocol::v2_header;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PP_USER: &str = "pp";
const PP_PASS: &str = "pp-pass";

/// A server that trusts PROXY headers from loopback and its socket, with
/// `pp` allowed only from the loopback addresses (never from `localhost`,
/// which is what a socket connection without a header is).
async fn server() -> MariaDb {
    let db = MariaDb::builder()
        .arg("--proxy-protocol-networks=::1/128,127.0.0.1/32,localhost")
        .start()
        .await;
    db.create_users().await;
    for host in ["::1", "127.0.0.1"] {
        db.exec(&format!(
            "CREATE USER '{PP_USER}'@'{host}' IDENTIFIED BY '{PP_PASS}'"
        ))
        .await;
        db.exec(&format!("GRANT PROCESS ON *.* TO '{PP_USER}'@'{host}'"))
            .await;
    }
    db
}

/// (USER(), the processlist host of this very connection).
async fn who(
    proxy: &TestProxy,
    pki: &Pki,
    listener: &str,
    ip: &str,
) -> Result<(String, String), mysql_async::Error> {
    who_at(pki, ip, proxy.port(listener)).await
}

/// The same, connecting to `ip`:`port` (a listener, or a load balancer).
async fn who_at(pki: &Pki, ip: &str, port: u16) -> Result<(String, String), mysql_async::Error> {
    let opts = tls_opts(ip, port, PP_USER, PP_PASS, &pki.ca, Some(&pki.app));
    let mut c = Conn::new(opts).await?;
    let user: String = c.query_first("SELECT USER()").await?.unwrap();
    Ok((user, processlist_host(&mut c).await?))
}

async fn processlist_host(c: &mut Conn) -> Result<String, mysql_async::Error> {
    Ok(
        c.query_first("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
            .await?
            .unwrap(),
    )
}

fn config(pki: &Pki, db: &MariaDb, sock_dir: &std::path::Path) -> String {
    let tls = tls_section(pki, "required");
    format!(
        "[[backend]]\nname = \"pp-socket\"\naddress = {:?}\nproxy_protocol = true\n\n\
         [[backend]]\nname = \"pp-tcp\"\naddress = \"127.0.0.1:{}\"\nproxy_protocol = true\n\n\
         [[backend]]\nname = \"plain\"\naddress = {:?}\n\n\
         [[listener]]\nname = \"v6\"\naddress = \"[::1]:0\"\nroute = \"pp-socket\"\n{tls}\n\
         [[listener]]\nname = \"v4\"\naddress = \"127.0.0.1:0\"\nroute = \"pp-socket\"\n{tls}\n\
         [[listener]]\nname = \"v6-tcp\"\naddress = \"[::1]:0\"\nroute = \"pp-tcp\"\n{tls}\n\
         [[listener]]\nname = \"no-pp\"\naddress = \"[::1]:0\"\nroute = \"plain\"\n{tls}\n\
         [[listener]]\nname = \"local\"\naddress = \"unix:{}/pp.sock\"\nroute = \"pp-socket\"\n",
        db.unix_address(),
        db.port(),
        db.unix_address(),
        sock_dir.display(),
    )
}

#[tokio::test]
async fn the_backend_sees_and_authorizes_the_real_client_address() {
    let pki = Pki::new();
    let db = server().await;
    let socks = short_tempdir("ppx");
    let proxy = TestProxy::start(&config(&pki, &db, socks.path())).await;

    // IPv6 client, header over the backend's Unix socket.
    let (user, host) = who(&proxy, &pki, "v6", "::1").await.expect("pp from ::1");
    assert_eq!(user, "pp@::1");
    assert!(
        host.starts_with("::1:"),
        "processlist shows the client, not the proxy: {host}"
    );
    // IPv4 client.
    let (user, host) = who(&proxy, &pki, "v4", "127.0.0.1")
        .await
        .expect("pp from 127.0.0.1");
    assert_eq!(user, "pp@127.0.0.1");
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    // Header over TCP: the client's address, not the 127.0.0.1 of
    // portcullis's own connection.
    let (user, host) = who(&proxy, &pki, "v6-tcp", "::1")
        .await
        .expect("pp over tcp");
    assert_eq!(user, "pp@::1");
    assert!(host.starts_with("::1:"), "{host}");

    // Without the header the server sees portcullis's socket connection
    // (localhost), where `pp` has no grant.
    let err = who(&proxy, &pki, "no-pp", "::1")
        .await
        .expect_err("no grant for localhost");
    assert_eq!(server_error_code(&err), Some(1045), "{err}");

    // A Unix-socket client has no address: a LOCAL header, and the server
    // uses the real endpoints (a socket connection from localhost).
    let mut args = cli_socket_args(&proxy.socket_path("local"), NATIVE_USER, NATIVE_PASS);
    args.extend([
        "-N".into(),
        "-e".into(),
        "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()".into(),
    ]);
    let out = mariadb_cli(&args).await;
    assert_eq!(out.stdout.trim(), "localhost", "{out:?}");
}

/// A stand-in L4 load balancer on `[::1]`: each connection it accepts is
/// relayed to `to` after `header`, byte for byte both ways.
async fn load_balancer(to: SocketAddr, header: Vec<u8>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            let header = header.clone();
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(to).await.unwrap();
                up.write_all(&header).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    addr
}

fn lb_config(pki: &Pki, backend: &str, trusted: &str) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n\
         [[backend]]\nname = \"pp\"\naddress = {backend:?}\nproxy_protocol = true\n\n\
         [[listener]]\nname = \"lb\"\naddress = \"[::1]:0\"\nroute = \"pp\"\n\
         tls_handshake_timeout = \"1s\"\naccept_proxy_protocol = true\ntrusted_proxies = [{trusted:?}]\n{}",
        tls_section(pki, "required")
    )
}

#[tokio::test]
async fn behind_a_load_balancer_the_real_client_is_seen_and_forwarded() {
    let pki = Pki::new();
    let db = server().await;
    for host in ["192.0.2.7", "2001:db8::7"] {
        db.exec(&format!(
            "CREATE USER '{PP_USER}'@'{host}' IDENTIFIED BY '{PP_PASS}'"
        ))
        .await;
        db.exec(&format!("GRANT PROCESS ON *.* TO '{PP_USER}'@'{host}'"))
            .await;
    }
    let proxy = TestProxy::start(&lb_config(&pki, &db.unix_address(), "::1/128")).await;
    let to = proxy.tcp_addr("lb");

    // v1, IPv4 client: the backend authorizes and lists 192.0.2.7.
    let v1 = load_balancer(
        to,
        b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 3307\r\n".to_vec(),
    )
    .await;
    let (user, host) = who_at(&pki, "::1", v1.port())
        .await
        .expect("pp@192.0.2.7 via v1");
    assert_eq!(user, "pp@192.0.2.7");
    assert_eq!(host, "192.0.2.7:50000");
    // v2, IPv6 client.
    let v2 = load_balancer(
        to,
        v2_header(
            Some("[2001:db8::7]:40000".parse().unwrap()),
            Some("[2001:db8::1]:3307".parse().unwrap()),
        ),
    )
    .await;
    let opts = tls_opts("::1", v2.port(), PP_USER, PP_PASS, &pki.ca, Some(&pki.app));
    let mut held = Conn::new(opts).await.expect("pp@2001:db8::7 via v2");
    let host = processlist_host(&mut held).await.unwrap();
    assert_eq!(host, "2001:db8::7:40000");
    // `/sessions` shows the client and the load balancer it came through.
    let list = http(&proxy.admin_addr(), "GET", "/sessions", None)
        .await
        .json();
    let s = &list["sessions"][0];
    assert_eq!(s["client"], "[2001:db8::7]:40000", "{list}");
    assert!(
        s["proxied_by"].as_str().unwrap().starts_with("[::1]:"),
        "{list}"
    );
    drop(held);

    // A v2 LOCAL header (a health check): the load balancer's own address
    // stands, so `pp` (granted on ::1) gets in as ::1.
    let local = load_balancer(to, v2_header(None, None)).await;
    let (user, _) = who_at(&pki, "::1", local.port())
        .await
        .expect("pp@::1 via LOCAL");
    assert_eq!(user, "pp@::1");

    // The trusted peer connecting without a header: refused once
    // tls_handshake_timeout passes, without a greeting.
    let mut direct = tokio::net::TcpStream::connect(to).await.unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        direct.read(&mut buf).await.unwrap_or(0),
        0,
        "closed, nothing sent"
    );
    // A malformed header: refused at once.
    for bad in [
        &b"PROXY TCP4 192.0.2.7 nonsense 1 2\r\n"[..],
        &b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c"[..],
    ] {
        let mut c = tokio::net::TcpStream::connect(to).await.unwrap();
        c.write_all(bad).await.unwrap();
        assert_eq!(
            c.read(&mut buf).await.unwrap_or(0),
            0,
            "closed, nothing sent"
        );
    }
    proxy.settle().await;
    let status = http(&proxy.admin_addr(), "GET", "/status", None)
        .await
        .json();
    assert_eq!(
        status["listeners"][0]["outcomes"]["proxy_header_refused"], 3,
        "{status}"
    );
}

/// A peer outside `trusted_proxies` is served as without the key: its
/// PROXY header is no MySQL packet, refused as a bad handshake.
#[tokio::test]
async fn an_untrusted_peers_header_is_refused_as_a_bad_handshake() {
    let pki = Pki::new();
    let (_d, backend) = absent_backend();
    let proxy = TestProxy::start(&lb_config(&pki, &backend, "192.0.2.10")).await;
    let mut c = RawClient::connect(proxy.tcp_addr("lb")).await;
    c.tcp
        .write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 50000 3307\r\n")
        .await
        .unwrap();
    let greeting = c.read_packet().await;
    assert_eq!(greeting[4], 10, "portcullis greets it as any client");
    let err = c.read_packet().await;
    assert_eq!(err[4], 0xff);
    assert_eq!(u16::from_le_bytes([err[5], err[6]]), 1043, "Bad handshake");
    proxy.settle().await;
    let status = http(&proxy.admin_addr(), "GET", "/status", None)
        .await
        .json();
    let outcomes = &status["listeners"][0]["outcomes"];
    assert_eq!(outcomes["client_packet_too_large"], 1, "{status}");
    assert_eq!(outcomes["proxy_header_refused"], Value::Null, "{status}");
}
