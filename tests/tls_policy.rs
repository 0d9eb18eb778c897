//! `[listener.tls] min_version` and `cipher_suites`: what a client may
//! negotiate, proven with rustls clients that offer one version or one
//! suite (the backend leg is plaintext, so the backend cannot tell what the
//! client negotiated) and with the `mariadb` CLI; `/status` shows the
//! policy, and a reload applies a changed one to new handshakes.

mod common;

use std::sync::Arc;

use common::client::{cli_tcp_args, cli_tls_args, mariadb_cli};
use common::http::http;
use common::mariadb::{MariaDb, NATIVE_PASS, NATIVE_USER};
use common::pki::Pki;
use common::proxy::{absent_backend, tls_section, TestProxy};
use common::raw::RawClient;
use portcullis::reload::{reload_config, MaterialReload, Trigger};
use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
use rustls::{ProtocolVersion, SupportedCipherSuite, SupportedProtocolVersion};
use serde_json::Value;

/// A config with one TLS listener `public` (client certificates optional)
/// whose `[listener.tls]` ends with `policy`.
fn config(pki: &Pki, backend: &str, policy: &str) -> String {
    format!(
        "[admin]\naddress = \"127.0.0.1:0\"\n\n[[backend]]\nname = \"db\"\naddress = {backend:?}\n\n[[listener]]\nname = \"public\"\naddress = \"[::1]:0\"\nroute = \"db\"\n{}{policy}",
        tls_section(pki, "optional")
    )
}

/// A client config trusting the test CA that offers only `versions` and,
/// when given, only `suites`.
fn offering(
    pki: &Pki,
    versions: &[&'static SupportedProtocolVersion],
    suites: Option<Vec<SupportedCipherSuite>>,
) -> Arc<rustls::ClientConfig> {
    let mut provider = default_provider();
    if let Some(s) = suites {
        provider.cipher_suites = s;
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in portcullis::tls::load_certs(&pki.ca).unwrap() {
        roots.add(c).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS handshake with the listener: the negotiated version and suite, or
/// the error the client saw.
async fn handshake(
    proxy: &TestProxy,
    config: Arc<rustls::ClientConfig>,
) -> Result<(ProtocolVersion, String), String> {
    let mut c = RawClient::connect(proxy.tcp_addr("public")).await;
    c.read_packet().await;
    c.start_tls_with(config).await.map_err(|e| e.to_string())?;
    let tls = c.tls.as_ref().unwrap();
    Ok((
        tls.protocol_version().unwrap(),
        portcullis::config::suites::name(&tls.negotiated_cipher_suite().unwrap()),
    ))
}

async fn policy_in_status(proxy: &TestProxy) -> (Value, Value) {
    let r = http(&proxy.admin_addr(), "GET", "/status", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let l = r.json()["listeners"][0].clone();
    (l["tls_min_version"].clone(), l["cipher_suites"].clone())
}

/// Rewrites the proxy's config file to `config` and reloads it, as SIGHUP
/// or `POST /reload` would.
async fn reload_with(
    proxy: &TestProxy,
    config: String,
) -> Result<portcullis::reload::ReloadReport, portcullis::config::ConfigError> {
    std::fs::write(
        proxy.dir().join("portcullis.toml"),
        format!("workers = 3\n{config}"),
    )
    .unwrap();
    let state = proxy.state();
    tokio::task::spawn_blocking(move || reload_config(&state, Trigger::Admin))
        .await
        .unwrap()
}

const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

#[tokio::test]
async fn min_version_and_allow_list_bind_every_handshake_and_reload_changes_them() {
    let pki = Pki::new();
    let (_d, backend) = absent_backend();
    let strict = "min_version = \"1.3\"\ncipher_suites = [\"TLS13_AES_128_GCM_SHA256\"]\n";
    let proxy = TestProxy::start(&config(&pki, &backend, strict)).await;

    let e = handshake(&proxy, offering(&pki, TLS12, None))
        .await
        .expect_err("a TLS 1.2 client is refused");
    assert!(e.contains("ProtocolVersion"), "{e}");
    let e = handshake(
        &proxy,
        offering(
            &pki,
            TLS13,
            Some(vec![cipher_suite::TLS13_AES_256_GCM_SHA384]),
        ),
    )
    .await
    .expect_err("a suite outside the allow-list is refused");
    assert!(e.contains("HandshakeFailure"), "{e}");
    assert_eq!(
        handshake(&proxy, offering(&pki, TLS13, None)).await,
        Ok((
            ProtocolVersion::TLSv1_3,
            "TLS13_AES_128_GCM_SHA256".to_string()
        )),
        "the one allowed suite, though the client prefers AES-256"
    );
    assert_eq!(
        policy_in_status(&proxy).await,
        (
            Value::from("1.3"),
            serde_json::json!(["TLS13_AES_128_GCM_SHA256"])
        )
    );

    // Back to the defaults (TLS 1.2 allowed) with a reload: new handshakes
    // follow the file at once.
    let relaxed = "cipher_suites = [\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\", \"TLS13_AES_256_GCM_SHA384\"]\n";
    let report = reload_with(&proxy, config(&pki, &backend, relaxed))
        .await
        .expect("valid config");
    assert!(
        matches!(report.tls["public"], MaterialReload::Reloaded { .. }),
        "{report:?}"
    );
    assert!(report.all_applied(), "{report:?}");
    assert_eq!(
        handshake(&proxy, offering(&pki, TLS12, None)).await,
        Ok((
            ProtocolVersion::TLSv1_2,
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string()
        ))
    );
    assert_eq!(
        handshake(&proxy, offering(&pki, TLS13, None)).await,
        Ok((
            ProtocolVersion::TLSv1_3,
            "TLS13_AES_256_GCM_SHA384".to_string()
        ))
    );
    assert_eq!(
        policy_in_status(&proxy).await,
        (
            Value::from("1.2"),
            serde_json::json!([
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS13_AES_256_GCM_SHA384"
            ])
        )
    );
}

#[tokio::test]
async fn defaults_show_in_status_and_an_invalid_policy_keeps_the_running_one() {
    let pki = Pki::new();
    let (_d, backend) = absent_backend();
    let proxy = TestProxy::start(&config(&pki, &backend, "")).await;
    let (min, suites) = policy_in_status(&proxy).await;
    assert_eq!(min, "1.2");
    let suites: Vec<&str> = suites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        suites.contains(&"TLS13_AES_256_GCM_SHA384")
            && suites.contains(&"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        "{suites:?}"
    );

    let bad =
        "min_version = \"1.3\"\ncipher_suites = [\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\"]\n";
    let e = reload_with(&proxy, config(&pki, &backend, bad))
        .await
        .expect_err("the file is refused whole");
    assert!(e.to_string().contains("lists only TLS 1.2 suites"), "{e}");
    assert!(handshake(&proxy, offering(&pki, TLS12, None)).await.is_ok());

    // TLS 1.2 suites for RSA keys only, with the test PKI's ECDSA key: no
    // TLS 1.2 client could connect. The listener keeps its material and
    // the reload says why.
    let rsa_only = "cipher_suites = [\"TLS13_AES_128_GCM_SHA256\", \"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]\n";
    let report = reload_with(&proxy, config(&pki, &backend, rsa_only))
        .await
        .expect("a valid file");
    let MaterialReload::Failed { error } = &report.tls["public"] else {
        panic!("{report:?}");
    };
    assert!(
        error.contains("no TLS 1.2 client could connect with this ECDSA key"),
        "{error}"
    );
    assert!(handshake(&proxy, offering(&pki, TLS12, None)).await.is_ok());
}

/// The `mariadb` CLI (Connector/C with OpenSSL) held to TLS 1.2 is refused
/// by a `min_version = "1.3"` listener; allowed TLS 1.3 it gets in.
#[tokio::test]
async fn mariadb_cli_limited_to_tls12_is_refused_by_a_tls13_listener() {
    let pki = Pki::new();
    let db = MariaDb::start_with_users().await;
    let proxy =
        TestProxy::start(&config(&pki, &db.unix_address(), "min_version = \"1.3\"\n")).await;
    let cli = |version: &str| {
        let mut args = cli_tcp_args("::1", proxy.port("public"), NATIVE_USER, NATIVE_PASS);
        args.extend(cli_tls_args(&pki.ca, Some(&pki.app)));
        args.push(format!("--tls-version={version}"));
        args.extend(["-N".into(), "-e".into(), "SELECT 1".into()]);
        args
    };
    let out = mariadb_cli(cli("TLSv1.2")).await;
    assert_eq!(out.status, Some(1), "{out:?}");
    assert!(out.stderr.contains("ERROR 2026"), "a TLS error: {out:?}");
    let out = mariadb_cli(cli("TLSv1.3")).await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "1");
    proxy.settle().await;
}
