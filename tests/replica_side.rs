//! The replica-side mode: a replica mariadbd without any TLS configuration
//! replicates through a local portcullis (plaintext on loopback), which
//! reaches the primary's sidecar with outbound TLS and a client
//! certificate. Renewing that certificate needs no mariadbd restart and no
//! CHANGE MASTER: the local portcullis reloads it, the next connection of
//! the IO thread uses it.

mod common;

use std::time::Duration;

use common::mariadb::{free_port, short_tempdir, MariaDb};
use common::pki::Pki;
use common::proxy::{copy_in, mtls_config, TestProxy};

async fn caught_up(replica: &MariaDb, primary: &MariaDb) {
    let waited = replica
        .wait_caught_up(primary, Duration::from_secs(60))
        .await;
    assert!(
        waited.is_some_and(|w| w >= 0),
        "replica caught up: {waited:?}"
    );
}

#[tokio::test]
async fn a_replica_without_tls_replicates_through_its_local_portcullis() {
    let pki = Pki::new();
    let primary = MariaDb::builder().log_bin(1).start().await;
    let replica = MariaDb::builder().log_bin(2).start().await;
    primary
        .exec("CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-pass'")
        .await;
    primary
        .exec("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'")
        .await;
    primary.exec("CREATE DATABASE rs").await;
    primary
        .exec("CREATE TABLE rs.t (id INT PRIMARY KEY, v VARCHAR(64))")
        .await;

    // The primary's sidecar: mTLS required, the PKI's CA and CRL.
    let sidecar = TestProxy::start(&mtls_config(&pki, &primary.unix_address())).await;
    // The replica's local portcullis: plaintext on 127.0.0.1, outbound mTLS
    // with a client certificate it reloads from these files.
    let files = short_tempdir("rsc");
    let (cert, key) = (files.path().join("c.pem"), files.path().join("k.pem"));
    std::fs::copy(&pki.repl.cert, &cert).unwrap();
    std::fs::copy(&pki.repl.key, &key).unwrap();
    let local_port = free_port();
    let local = TestProxy::start(&format!(
        r#"[tls_reload]
poll_interval = "50ms"

[[backend]]
name = "upstream"
address = "[::1]:{}"
[backend.tls]
ca = {:?}
cert = {cert:?}
key = {key:?}

[[listener]]
name = "repl"
address = "127.0.0.1:{local_port}"
route = "upstream"
"#,
        sidecar.port("public"),
        pki.ca
    ))
    .await;

    // Nothing TLS on the replica: it talks to 127.0.0.1.
    replica
        .exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={local_port}, MASTER_USER='repl', MASTER_PASSWORD='repl-pass', MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=no, MASTER_LOG_FILE='mariadb-bin.000001', MASTER_LOG_POS=4"
        ))
        .await;
    replica.exec("START SLAVE").await;
    primary
        .exec("INSERT INTO rs.t SELECT seq, MD5(seq) FROM rs.seq_1_to_1000")
        .await;
    caught_up(&replica, &primary).await;
    let n: Option<i64> = replica.query_first("SELECT COUNT(*) FROM rs.t").await;
    assert_eq!(n, Some(1000));
    let sidecar_state = sidecar.state();
    let live = &sidecar_state.listeners[0]
        .runtime
        .tls
        .as_ref()
        .unwrap()
        .live;
    let subjects: Vec<String> = live
        .snapshot()
        .iter()
        .map(|s| s.cert.subject.clone())
        .collect();
    assert_eq!(
        subjects,
        vec!["CN=repl".to_string()],
        "the sidecar sees the replica's link with its certificate"
    );

    // Renewal on the replica side: new files for the local portcullis only.
    let renewed = pki.issue_client("repl-renewed", "repl-renewed", 0x777);
    copy_in(&renewed.key, &key);
    copy_in(&renewed.cert, &cert);
    local.backend_client_serial_becomes(0, "0777").await;
    // The IO thread reconnects (no restart, no CHANGE MASTER) with it.
    replica.exec("STOP SLAVE IO_THREAD").await;
    replica.exec("START SLAVE IO_THREAD").await;
    primary
        .exec("INSERT INTO rs.t SELECT seq, MD5(seq) FROM rs.seq_1001_to_2000")
        .await;
    caught_up(&replica, &primary).await;
    let n: Option<i64> = replica.query_first("SELECT COUNT(*) FROM rs.t").await;
    assert_eq!(n, Some(2000));
    let subjects: Vec<String> = live
        .snapshot()
        .iter()
        .map(|s| s.cert.subject.clone())
        .collect();
    assert_eq!(
        subjects,
        vec!["CN=repl-renewed".to_string()],
        "the new link uses the renewed certificate"
    );
}
