//! Tests of the integration-test harness itself (tests/common): throwaway mariadbd, users,
//! per-test PKI, mysql_async and `mariadb` CLI helpers.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::client::{
    cli_socket_args, cli_tcp_args, cli_tls_args, cli_value, mariadb_cli, plain_opts,
    server_error_code, tls_opts,
};
use common::mariadb::{MariaDb, ED_PASS, ED_USER, NATIVE_PASS, NATIVE_USER, TEST_DB};
use common::pki::{self, serial_from_der, Pki};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// Connects, runs `sql`, returns the first column of the first row, disconnects.
async fn scalar<T: mysql_async::prelude::FromValue + Send + 'static>(opts: Opts, sql: &str) -> T {
    let mut conn = Conn::new(opts.clone())
        .await
        .unwrap_or_else(|e| panic!("connect with {opts:?}: {e}"));
    let value: Option<T> = conn
        .query_first(sql)
        .await
        .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    conn.disconnect().await.expect("disconnect");
    value.unwrap_or_else(|| panic!("`{sql}` returned no row"))
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&data)
        .unwrap_or_else(|e| panic!("PEM {}: {e}", path.display()));
    pem.contents
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

#[tokio::test]
async fn mariadbd_answers_over_unix_socket_and_tcp() {
    let db = MariaDb::start().await;
    assert!(
        db.socket_path().as_os_str().len() < 108,
        "socket path too long: {}",
        db.socket_path().display()
    );
    assert_eq!(
        db.tcp_addr().to_string(),
        format!("127.0.0.1:{}", db.port())
    );

    // Root over the Unix socket, via the options and via the URL.
    assert_eq!(scalar::<i64>(db.root_opts(), "SELECT 1+1").await, 2);
    let url_opts = Opts::from_url(&db.root_url()).expect("root_url parses");
    assert_eq!(
        scalar::<String>(url_opts, "SELECT CURRENT_USER()").await,
        "root@localhost"
    );
    assert_eq!(
        scalar::<String>(db.root_opts(), "SELECT @@socket").await,
        db.socket_path().to_str().expect("utf-8")
    );
    assert_eq!(
        scalar::<u16>(db.root_opts(), "SELECT @@port").await,
        db.port()
    );
    assert_eq!(
        scalar::<u64>(db.root_opts(), "SELECT @@max_allowed_packet").await,
        64 * 1024 * 1024
    );

    // An application user over 127.0.0.1 TCP.
    db.create_users().await;
    let tcp = plain_opts("127.0.0.1", db.port(), NATIVE_USER, NATIVE_PASS);
    assert_eq!(scalar::<i64>(tcp.clone(), "SELECT 1+1").await, 2);
    assert_eq!(
        scalar::<String>(tcp.clone(), "SELECT CURRENT_USER()").await,
        format!("{NATIVE_USER}@%")
    );
    // The connection really is TCP (a socket connection would report 'localhost').
    assert_eq!(
        scalar::<String>(
            tcp,
            "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"
        )
        .await
        .split(':')
        .next()
        .expect("host part"),
        "127.0.0.1"
    );

    // The CLI over the socket as root.
    let out = mariadb_cli(
        cli_socket_args(db.socket_path(), "root", "")
            .into_iter()
            .chain(["-N".into(), "-e".into(), "SELECT 40+2".into()]),
    )
    .await;
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "42\n");
}

#[tokio::test]
async fn two_instances_are_isolated() {
    let (a, b) = tokio::join!(MariaDb::start(), MariaDb::start());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.socket_path(), b.socket_path());
    a.exec("CREATE DATABASE only_in_a").await;
    let in_a: Option<i64> = a
        .query_first(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'only_in_a'",
        )
        .await;
    let in_b: Option<i64> = b
        .query_first(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'only_in_a'",
        )
        .await;
    assert_eq!((in_a, in_b), (Some(1), Some(0)));

    // Stopping ends the process and is idempotent.
    let mut a = a;
    assert!(a.is_running());
    a.stop();
    assert!(!a.is_running());
    assert_eq!(a.pid(), None);
    a.stop();
    assert_eq!(scalar::<i64>(b.root_opts(), "SELECT 1+1").await, 2);
}

#[tokio::test]
async fn users_log_in_over_tcp_and_wrong_password_is_1045() {
    let db = MariaDb::start().await;
    db.create_users().await;

    let plugin: Option<String> = db
        .query_first(&format!(
            "SELECT plugin FROM mysql.user WHERE user = '{ED_USER}' AND host = '%'"
        ))
        .await;
    assert_eq!(plugin.as_deref(), Some("ed25519"));
    let plugin: Option<String> = db
        .query_first(&format!(
            "SELECT plugin FROM mysql.user WHERE user = '{NATIVE_USER}' AND host = '%'"
        ))
        .await;
    assert_eq!(plugin.as_deref(), Some("mysql_native_password"));
    let dbs: Option<i64> = db
        .query_first(&format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{TEST_DB}'"
        ))
        .await;
    assert_eq!(dbs, Some(1));

    for (user, pass) in [(NATIVE_USER, NATIVE_PASS), (ED_USER, ED_PASS)] {
        let opts = plain_opts("127.0.0.1", db.port(), user, pass);
        assert_eq!(
            scalar::<String>(opts, "SELECT CURRENT_USER()").await,
            format!("{user}@%")
        );

        let wrong = plain_opts("127.0.0.1", db.port(), user, "wrong-password");
        let err = Conn::new(wrong)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in with a wrong password"));
        assert_eq!(server_error_code(&err), Some(1045), "{user}: {err}");

        // The CLI (libmariadb) authenticates with both plugins too.
        let out = mariadb_cli(
            cli_tcp_args("127.0.0.1", db.port(), user, pass)
                .into_iter()
                .chain(["-N".into(), "-e".into(), "SELECT CURRENT_USER()".into()]),
        )
        .await;
        assert!(out.success(), "{user}: {out}");
        assert_eq!(out.stdout, format!("{user}@%\n"));
        let out = mariadb_cli(
            cli_tcp_args("127.0.0.1", db.port(), user, "wrong-password")
                .into_iter()
                .chain(["-e".into(), "SELECT 1".into()]),
        )
        .await;
        assert_eq!(out.status, Some(1), "{user}: {out}");
        assert!(out.stderr.contains("ERROR 1045"), "{user}: {out}");
    }
}

#[tokio::test]
async fn mariadbd_with_own_tls_accepts_client_certificate() {
    let pki = Pki::new();
    let db = MariaDb::builder()
        .server_tls(&pki.server.cert, &pki.server.key, &pki.ca)
        .require_secure_transport()
        .start()
        .await;
    db.create_users().await;
    db.exec("CREATE USER 'x509_app'@'%' IDENTIFIED BY 'x509-pass' REQUIRE SUBJECT '/CN=app'")
        .await;
    db.exec("GRANT ALL ON *.* TO 'x509_app'@'%'").await;

    // mysql_async + rustls, verifying the server certificate for 127.0.0.1 and presenting `app`.
    let opts = tls_opts(
        "127.0.0.1",
        db.port(),
        "x509_app",
        "x509-pass",
        &pki.ca,
        Some(&pki.app),
    );
    let mut conn = Conn::new(opts)
        .await
        .expect("TLS connection with the app certificate");
    let row: Option<(String, String)> = conn
        .query_first("SHOW STATUS LIKE 'Ssl_version'")
        .await
        .expect("SHOW STATUS");
    let (name, version) = row.expect("Ssl_version row");
    assert_eq!(name, "Ssl_version");
    assert!(version.starts_with("TLSv1."), "Ssl_version = {version:?}");
    assert_eq!(
        conn.query_first::<String, _>("SELECT CURRENT_USER()")
            .await
            .expect("CURRENT_USER"),
        Some("x509_app@%".to_string())
    );
    conn.disconnect().await.expect("disconnect");

    // Same user without a client certificate: refused (REQUIRE SUBJECT).
    let no_cert = tls_opts(
        "127.0.0.1",
        db.port(),
        "x509_app",
        "x509-pass",
        &pki.ca,
        None,
    );
    let err = Conn::new(no_cert)
        .await
        .expect_err("login without the required certificate must fail");
    assert_eq!(server_error_code(&err), Some(1045), "{err}");

    // Without TLS at all: refused by --require-secure-transport (MariaDB 10.11 reports it as
    // 1045), while the same credentials over TLS (no client certificate needed) work.
    let plain = plain_opts("127.0.0.1", db.port(), NATIVE_USER, NATIVE_PASS);
    let err = Conn::new(plain)
        .await
        .expect_err("plain TCP must be refused");
    assert_eq!(server_error_code(&err), Some(1045), "{err}");
    let tls = tls_opts(
        "127.0.0.1",
        db.port(),
        NATIVE_USER,
        NATIVE_PASS,
        &pki.ca,
        None,
    );
    assert_eq!(
        scalar::<String>(tls, "SELECT CURRENT_USER()").await,
        format!("{NATIVE_USER}@%")
    );

    // The mariadb CLI (libmariadb + OpenSSL) with full verification and the client certificate.
    let args: Vec<String> = cli_tcp_args("127.0.0.1", db.port(), "x509_app", "x509-pass")
        .into_iter()
        .chain(cli_tls_args(&pki.ca, Some(&pki.app)))
        .chain(["-e".into(), "SHOW STATUS LIKE 'Ssl_version'".into()])
        .collect();
    let out = mariadb_cli(&args).await;
    assert!(out.success(), "{out}");
    let version = cli_value(&out.stdout, "Ssl_version").expect("Ssl_version row in CLI output");
    assert!(version.starts_with("TLSv1."), "Ssl_version = {version:?}");

    // The CLI rejects a server whose certificate does not chain to the CA it trusts.
    let args: Vec<String> = cli_tcp_args("127.0.0.1", db.port(), "x509_app", "x509-pass")
        .into_iter()
        .chain(cli_tls_args(&pki.other_ca, Some(&pki.app)))
        .chain(["-e".into(), "SELECT 1".into()])
        .collect();
    let out = mariadb_cli(&args).await;
    assert_eq!(out.status, Some(1), "{out}");
    assert!(out.stderr.contains("ERROR 2026"), "{out}");
}

#[test]
fn pki_files_and_crls_are_as_specified() {
    let pki = Pki::new();
    let now = unix_now();

    // CRL: signed by the CA, lists exactly the revoked serial, next update in the future.
    let ca_der = pem_der(&pki.ca);
    let (_, ca) = X509Certificate::from_der(&ca_der).expect("parse ca.pem");
    assert!(ca.is_ca());
    let crl_der = pem_der(&pki.crl);
    let (_, crl) = CertificateRevocationList::from_der(&crl_der).expect("parse crl.pem");
    crl.verify_signature(ca.public_key())
        .expect("crl.pem is signed by the CA");
    assert_eq!(crl.issuer(), ca.subject());
    let revoked: Vec<u64> = crl
        .iter_revoked_certificates()
        .map(|r| serial_from_der(r.raw_serial()))
        .collect();
    assert_eq!(revoked, vec![pki.revoked.serial]);
    assert_eq!(pki.revoked.serial, pki::REVOKED_SERIAL);
    assert!(crl.next_update().expect("next_update").timestamp() > now);

    let expired_der = pem_der(&pki.crl_expired);
    let (_, crl) =
        CertificateRevocationList::from_der(&expired_der).expect("parse crl-expired.pem");
    crl.verify_signature(ca.public_key())
        .expect("crl-expired.pem is signed by the CA");
    assert!(crl.next_update().expect("next_update").timestamp() < now);
    assert!(crl.last_update().timestamp() < crl.next_update().expect("next_update").timestamp());
    assert_eq!(crl.iter_revoked_certificates().count(), 1);

    let empty_der = pem_der(&pki.crl_empty);
    let (_, crl) = CertificateRevocationList::from_der(&empty_der).expect("parse crl-empty.pem");
    crl.verify_signature(ca.public_key())
        .expect("crl-empty.pem is signed by the CA");
    assert_eq!(crl.iter_revoked_certificates().count(), 0);
    assert!(crl.next_update().expect("next_update").timestamp() > now);

    // Server certificate: SANs, issuer, serial.
    let der = pem_der(&pki.server.cert);
    let (_, server) = X509Certificate::from_der(&der).expect("parse server.pem");
    server
        .verify_signature(Some(ca.public_key()))
        .expect("server.pem is signed by the CA");
    assert_eq!(serial_from_der(server.raw_serial()), pki::SERVER_SERIAL);
    let mut sans = Vec::new();
    for ext in server.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                sans.push(match name {
                    GeneralName::DNSName(d) => d.to_string(),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes"))
                            .to_string(),
                        16 => {
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes"))
                                .to_string()
                        }
                        n => panic!("IP SAN of {n} bytes"),
                    },
                    other => panic!("unexpected SAN {other:?}"),
                });
            }
        }
    }
    assert_eq!(sans, ["localhost", "127.0.0.1", "::1"]);

    // Clients: CN, serial, issuer, validity.
    let other_der = pem_der(&pki.other_ca);
    let (_, other_ca) = X509Certificate::from_der(&other_der).expect("parse other-ca.pem");
    let expected = [
        ("app", pki::APP_SERIAL, true, true),
        ("repl", pki::REPL_SERIAL, true, true),
        ("revoked", pki::REVOKED_SERIAL, true, true),
        ("expired", pki::EXPIRED_SERIAL, true, false),
        ("other", pki::OTHER_SERIAL, false, true),
    ];
    let mut serials = vec![pki::CA_SERIAL, pki::OTHER_CA_SERIAL, pki::SERVER_SERIAL];
    for (client, (cn, serial, by_ca, valid_now)) in pki.clients().into_iter().zip(expected) {
        assert_eq!((client.cn.as_str(), client.serial), (cn, serial));
        assert!(client.key.is_file(), "{}", client.key.display());
        let der = pem_der(&client.cert);
        let (_, cert) = X509Certificate::from_der(&der).expect("parse client certificate");
        let subject_cn = cert
            .subject()
            .iter_common_name()
            .next()
            .expect("CN")
            .as_str()
            .expect("CN string");
        assert_eq!(subject_cn, cn);
        assert_eq!(serial_from_der(cert.raw_serial()), serial);
        let issuer = if by_ca { &ca } else { &other_ca };
        assert_eq!(cert.issuer(), issuer.subject(), "{cn}");
        cert.verify_signature(Some(issuer.public_key()))
            .unwrap_or_else(|e| panic!("{cn} signature: {e}"));
        assert_eq!(cert.validity().is_valid(), valid_now, "{cn} validity");
        serials.push(serial);
    }
    let mut unique = serials.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        serials.len(),
        "serials must be distinct: {serials:?}"
    );

    // Extra CRLs and certificates on demand.
    let extra = pki.issue_client("extra", "extra-cn", 500);
    assert_eq!(extra.cert, pki.dir().join("client-extra.pem"));
    let path = pki.write_crl(
        "crl-two.pem",
        &[pki::APP_SERIAL, 500],
        SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let der = pem_der(&path);
    let (_, crl) = CertificateRevocationList::from_der(&der).expect("parse crl-two.pem");
    let revoked: Vec<u64> = crl
        .iter_revoked_certificates()
        .map(|r| serial_from_der(r.raw_serial()))
        .collect();
    assert_eq!(revoked, vec![pki::APP_SERIAL, 500]);
    assert_eq!(
        crl.crl_number().map(|n| n.to_string()),
        Some("4".to_string())
    );
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast::<&'static str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|_| "<non-string panic payload>".to_string()),
    }
}

#[test]
fn missing_program_panics_with_install_command() {
    let payload = std::panic::catch_unwind(|| {
        common::mariadb::find_program("no-such-mariadbd-for-tests", "/nonexistent/mariadbd")
    })
    .expect_err("a missing program must panic");
    let message = panic_message(payload);
    assert!(
        message.contains("apt-get install -y mariadb-server mariadb-client"),
        "{message}"
    );
    assert!(message.contains("no-such-mariadbd-for-tests"), "{message}");
}

#[tokio::test]
async fn failed_start_reports_the_server_error_log() {
    let join = tokio::spawn(async {
        MariaDb::builder()
            .arg("--no-such-server-option=1")
            .start()
            .await
    })
    .await;
    let message = panic_message(join.expect_err("start must fail").into_panic());
    assert!(
        message.contains("mariadbd exited during startup"),
        "{message}"
    );
    // The server's own complaint, taken from its error log.
    assert!(
        message.contains("mariadbd: unknown variable 'no-such-server-option=1'")
            && message.contains("[ERROR]"),
        "{message}"
    );
}
