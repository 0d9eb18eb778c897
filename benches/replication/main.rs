//! Binlog streaming through a portcullis sidecar versus a direct TLS
//! replication link, in one run: the replication benchmark of issue 7.
//!
//! One primary mariadbd (binary log, its own TLS) with a table of
//! `PC_BENCH_REPL_MIB` MiB of rows, portcullis in front of its Unix socket
//! (mTLS on `[::1]`), and one replica that streams the whole binary log
//! either directly (MASTER_SSL to the primary's TCP port) or through
//! portcullis (MASTER_SSL with a client certificate), alternately
//! (A/B/A/B) for `PC_BENCH_ROUNDS` rounds. Only the IO thread runs: what is
//! measured is the binlog stream, not the replica applying it. Prints MiB/s
//! per path, the ratio, and portcullis's CPU per GiB streamed.
//!
//! `cargo bench --bench replication` (about a minute);
//! `cargo bench --bench replication -- --smoke` (a few seconds).

#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "../e2e/pki.rs"]
#[allow(dead_code)]
mod pki;
#[path = "../e2e/procs.rs"]
#[allow(dead_code)]
mod procs;

use std::time::{Duration, Instant};

use common::mariadb::{short_tempdir, MariaDb};
use pki::{BenchPki, KeyKind};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Streams the primary's whole binary log into `replica`'s relay log
/// through `host:port` and returns the elapsed time.
async fn stream_once(
    replica: &MariaDb,
    port: u16,
    pki: &BenchPki,
    end: &(String, u64),
) -> Duration {
    replica.exec("STOP SLAVE").await;
    replica.exec("RESET SLAVE ALL").await;
    replica
        .exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='::1', MASTER_PORT={port}, MASTER_USER='repl', MASTER_PASSWORD='repl-pass', MASTER_SSL=1, MASTER_SSL_CA='{}', MASTER_SSL_CERT='{}', MASTER_SSL_KEY='{}', MASTER_USE_GTID=no, MASTER_LOG_FILE='mariadb-bin.000001', MASTER_LOG_POS=4",
            pki.path("ca.pem").display(),
            pki.path("client.pem").display(),
            pki.path("client-key.pem").display(),
        ))
        .await;
    let started = Instant::now();
    replica.exec("START SLAVE IO_THREAD").await;
    // Polling the replica's status is how a benchmark learns where an
    // external server's IO thread is; 5 ms granularity.
    loop {
        let mut c = replica.root_conn().await;
        use mysql_async::prelude::*;
        let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await.unwrap();
        let row = row.expect("replica configured");
        let file: String = row.get("Master_Log_File").unwrap_or_default();
        let pos: u64 = row.get("Read_Master_Log_Pos").unwrap_or(0);
        if file == end.0 && pos >= end.1 {
            return started.elapsed();
        }
        let err: String = row.get("Last_IO_Error").unwrap_or_default();
        assert!(err.is_empty(), "replication IO error: {err}");
        drop(c);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main]
async fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let mib = env_u64("PC_BENCH_REPL_MIB", if smoke { 4 } else { 256 });
    let rounds = env_u64("PC_BENCH_ROUNDS", if smoke { 1 } else { 3 });
    let pki = BenchPki::new(KeyKind::EcdsaP256);
    let work = short_tempdir("brepl");
    let primary = MariaDb::builder()
        .log_bin(1)
        .server_tls(
            &pki.path("server.pem"),
            &pki.path("server-key.pem"),
            &pki.path("ca.pem"),
        )
        .arg("--bind-address=::1")
        .start()
        .await;
    let replica = MariaDb::builder().log_bin(2).start().await;
    primary
        .exec("CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-pass'")
        .await;
    primary
        .exec("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'")
        .await;
    primary.exec("CREATE DATABASE b").await;
    primary
        .exec("CREATE TABLE b.t (id INT PRIMARY KEY, v VARBINARY(1024))")
        .await;
    // ~1 KiB rows, inserted in 8 MiB statements.
    let rows = mib * 1024;
    let mut id = 0;
    while id < rows {
        let n = (rows - id).min(8192);
        primary
            .exec(&format!(
                "INSERT INTO b.t SELECT seq, REPEAT(MD5(seq), 32) FROM b.seq_{}_to_{}",
                id + 1,
                id + n
            ))
            .await;
        id += n;
    }
    let end = primary.binlog_position().await;
    let binlog_bytes = end.1 as f64;
    let proxy = procs::start_portcullis(
        &procs::Variant::plain(procs::portcullis_bin()),
        &pki,
        primary.socket_path(),
        work.path(),
    );
    let paths = [
        ("direct TLS", primary.port()),
        ("through portcullis", proxy.addr.port()),
    ];
    let mut secs = [0.0f64; 2];
    let mut proxy_cpu = 0.0;
    for _ in 0..rounds {
        for (i, (_, port)) in paths.iter().enumerate() {
            let cpu0 = procs::cpu_secs(proxy.pid());
            let d = stream_once(&replica, *port, &pki, &end).await;
            if i == 1 {
                proxy_cpu += procs::cpu_secs(proxy.pid()) - cpu0;
            }
            secs[i] += d.as_secs_f64();
        }
    }
    println!(
        "binlog streaming, {:.0} MiB of binary log x {rounds} rounds (A/B), ECDSA P-256 certificates:",
        binlog_bytes / 1048576.0
    );
    let rate = |s: f64| binlog_bytes * rounds as f64 / s / 1048576.0;
    for (i, (name, _)) in paths.iter().enumerate() {
        println!("| {name} | {:.1} MiB/s |", rate(secs[i]));
    }
    println!(
        "ratio through/direct: {:.2}; portcullis CPU {:.2} s per GiB streamed",
        rate(secs[1]) / rate(secs[0]),
        proxy_cpu / (binlog_bytes * rounds as f64 / 1073741824.0)
    );
    if smoke {
        println!("(smoke run: numbers are too short to mean anything)");
    }
}
