//! Outbound TLS: portcullis as the client of another portcullis sidecar
//! (or of a mariadbd with its own TLS), sending the SSLRequest itself,
//! verifying the backend's certificate and presenting a client
//! certificate — the hop between an application's portcullis and a remote
//! database's sidecar.
//!
//! The chain in every test: client → portcullis A (`[backend.tls]`) →
//! portcullis B (mTLS sidecar, the PKI's CA and CRL) → mariadbd (Unix
//! socket).

mod common;

use common::client::{cli_socket_args, mariadb_cli, server_error_code};
use common::mariadb::{short_tempdir, MariaDb, ED_PASS, ED_USER, NATIVE_PASS, NATIVE_USER};
use common::pki::{ClientCert, Pki};
use common::proxy::{copy_in, mtls_config, tls_section, TestProxy};
use mysql_async::prelude::*;
use mysql_async::Conn;
use tempfile::TempDir;

/// The far end of the chain: a PKI, mariadbd, and portcullis B (its
/// sidecar, requiring a client certificate), plus a directory for A's
/// Unix socket.
struct Far {
    pki: Pki,
    db: MariaDb,
    b: TestProxy,
    socks: TempDir,
}

impl Far {
    async fn start() -> Far {
        let pki = Pki::new();
        let db = MariaDb::start_with_users().await;
        let b = TestProxy::start(&mtls_config(&pki, &db.unix_address())).await;
        Far {
            pki,
            db,
            b,
            socks: short_tempdir("out"),
        }
    }

    /// Portcullis A routing to B with `[backend.tls]` lines `tls_extra`.
    async fn front(&self, tls_extra: &str) -> TestProxy {
        self.front_to(&format!("[::1]:{}", self.b.port("public")), tls_extra)
            .await
    }

    async fn front_to(&self, backend_addr: &str, tls_extra: &str) -> TestProxy {
        TestProxy::start(&front_config(
            &self.pki,
            backend_addr,
            tls_extra,
            &self.socks,
        ))
        .await
    }
}

/// Portcullis A's config: backend `remote` at `backend_addr` with
/// `[backend.tls]` (`tls_extra` lines added), a mTLS listener `public` on
/// `[::1]:0` and a plaintext Unix-socket listener `local` in `sock_dir`.
fn front_config(pki: &Pki, backend_addr: &str, tls_extra: &str, sock_dir: &TempDir) -> String {
    format!(
        r#"[tls_reload]
poll_interval = "50ms"

[[backend]]
name = "remote"
address = {backend_addr:?}
[backend.tls]
ca = {:?}
{tls_extra}
[[listener]]
name = "public"
address = "[::1]:0"
route = "remote"
{}
[[listener]]
name = "local"
address = "unix:{}/a.sock"
route = "remote"
"#,
        pki.ca,
        tls_section(pki, "required"),
        sock_dir.path().display(),
    )
}

fn client_cert_lines(c: &ClientCert) -> String {
    format!(
        r#"cert = {:?}
key = {:?}
"#,
        c.cert, c.key
    )
}

async fn through_front(front: &TestProxy, pki: &Pki) -> Result<Conn, mysql_async::Error> {
    Conn::new(front.app_opts(pki, "public", NATIVE_USER, NATIVE_PASS)).await
}

#[tokio::test]
async fn a_chain_of_two_sidecars_relays_native_and_ed25519_logins_both_ways_round() {
    let far = Far::start().await;
    let (pki, b) = (&far.pki, &far.b);
    // No server_name: the backend address's host ([::1]) is checked against
    // the sidecar certificate's IP SAN.
    let a = far.front(&client_cert_lines(&pki.repl)).await;

    // TLS on both legs: no sequence-id shift.
    let mut conn = through_front(&a, pki)
        .await
        .expect("connects through A and B");
    let user: String = conn
        .query_first("SELECT CURRENT_USER()")
        .await
        .unwrap()
        .unwrap();
    assert!(user.starts_with(NATIVE_USER), "{user}");
    // B saw one live session authenticated with A's client certificate.
    let b_tls = b.state().listeners[0]
        .runtime
        .tls
        .as_ref()
        .unwrap()
        .live
        .len();
    assert_eq!(b_tls, 1, "the session reached B with a client certificate");
    let ed = Conn::new(a.app_opts(pki, "public", ED_USER, ED_PASS))
        .await
        .expect("ed25519 through both");
    ed.disconnect().await.unwrap();
    let big: usize = conn
        .query_first("SELECT LENGTH(REPEAT('x', 20000000))")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(big, 20_000_000);

    // Plaintext client on A's Unix socket, TLS on the backend leg: the
    // shift goes the other way.
    let mut args = cli_socket_args(&a.socket_path("local"), NATIVE_USER, NATIVE_PASS);
    args.extend(["-N".into(), "-e".into(), "SELECT 'socket-to-tls'".into()]);
    let out = mariadb_cli(&args).await;
    assert_eq!(out.stdout.trim(), "socket-to-tls", "{out:?}");
    let mut args = cli_socket_args(&a.socket_path("local"), NATIVE_USER, "wrong");
    args.extend(["-e".into(), "SELECT 1".into()]);
    let out = mariadb_cli(&args).await;
    assert!(
        out.stderr.contains("ERROR 1045"),
        "the server's own error: {out:?}"
    );
}

/// The ERR a client of A gets, as (code, message).
async fn refused(a: &TestProxy, pki: &Pki) -> (Option<u16>, String) {
    let err = through_front(a, pki).await.expect_err("refused");
    (server_error_code(&err), err.to_string())
}

#[tokio::test]
async fn backend_tls_failures_give_the_client_a_readable_1105() {
    let far = Far::start().await;
    let pki = &far.pki;

    // A revoked client certificate: B's CRL refuses it.
    let a = far.front(&client_cert_lines(&pki.revoked)).await;
    let (code, msg) = refused(&a, pki).await;
    assert_eq!(code, Some(1105), "{msg}");
    assert!(
        msg.contains("TLS to backend 'remote' failed") && msg.contains("CertificateRevoked"),
        "{msg}"
    );
    a.stop(portcullis::Shutdown::Now).await;

    // A name the sidecar's certificate is not valid for.
    let a = far
        .front(&format!(
            "{}server_name = \"db9.example.net\"\n",
            client_cert_lines(&pki.app)
        ))
        .await;
    let (code, msg) = refused(&a, pki).await;
    assert_eq!(code, Some(1105), "{msg}");
    assert!(msg.contains("not valid for name"), "{msg}");
    a.settle().await;
    let m = a.state().listeners[0].metrics.outcomes();
    assert!(
        m.iter()
            .any(|(l, n)| &**l == "backend_tls_failed" && *n == 1),
        "{m:?}"
    );
    a.stop(portcullis::Shutdown::Now).await;

    // A backend without TLS: never a plaintext fallback.
    let plain = format!("127.0.0.1:{}", far.db.port());
    let a = far
        .front_to(
            &plain,
            &format!(
                "{}server_name = \"localhost\"\n",
                client_cert_lines(&pki.app)
            ),
        )
        .await;
    let (code, msg) = refused(&a, pki).await;
    assert_eq!(code, Some(1105), "{msg}");
    assert!(msg.contains("does not offer TLS"), "{msg}");
}

#[tokio::test]
async fn outbound_client_certificate_is_reloaded_by_the_poll() {
    let far = Far::start().await;
    let pki = &far.pki;
    let files = short_tempdir("crt");
    let (cert, key) = (
        files.path().join("client.pem"),
        files.path().join("client-key.pem"),
    );
    // Starts with a certificate of the other CA, which B does not trust.
    std::fs::copy(&pki.other.cert, &cert).unwrap();
    std::fs::copy(&pki.other.key, &key).unwrap();
    let a = far
        .front(&format!(
            r#"cert = {cert:?}
key = {key:?}
"#
        ))
        .await;
    let (code, msg) = refused(&a, pki).await;
    assert_eq!(code, Some(1105), "{msg}");
    assert!(msg.contains("UnknownCA"), "{msg}");

    // Publish a certificate B trusts, key first then certificate, each by
    // rename; a poll between the two fails once and the next one loads.
    copy_in(&pki.app.key, &key);
    copy_in(&pki.app.cert, &cert);
    a.backend_client_serial_becomes(0, "64").await;
    let mut conn = through_front(&a, pki)
        .await
        .expect("accepted with the new certificate");
    assert_eq!(
        conn.query_first::<i64, _>("SELECT 6*7").await.unwrap(),
        Some(42)
    );
}
