//! PROXY protocol v2 towards the backend: mariadbd, with portcullis's
//! addresses in `proxy_protocol_networks`, applies grants to the real
//! client address and shows it in the processlist — over a Unix socket
//! (`localhost` in the networks) and over TCP, for IPv6 and IPv4 clients.

mod common;

use common::client::{cli_socket_args, mariadb_cli, server_error_code, tls_opts};
use common::mariadb::{short_tempdir, MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{tls_section, TestProxy};
use mysql_async::prelude::*;
use mysql_async::Conn;

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
    let opts = tls_opts(
        ip,
        proxy.port(listener),
        PP_USER,
        PP_PASS,
        &pki.ca,
        Some(&pki.app),
    );
    let mut c = Conn::new(opts).await?;
    let user: String = c.query_first("SELECT USER()").await?.unwrap();
    let host: String = c
        .query_first("SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
        .await?
        .unwrap();
    Ok((user, host))
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
