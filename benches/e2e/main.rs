//! End-to-end load benchmark: the same workload, with a real client library
//! (mysql_async), directly against mariadbd's own mutual TLS, through the
//! real portcullis binary (mTLS on [::1] → mariadbd's Unix socket), through
//! HAProxy in plain `mode tcp` (if installed) and directly in plain TCP,
//! interleaved A/B/A/B in one run. Prints rates, latency percentiles, CPU
//! per operation of every process involved (from /proc/PID/stat), RSS per
//! idle session, and the ratios the performance issue sets as targets.
//!
//! `cargo bench --bench e2e` (full, ~5 minutes) or
//! `cargo bench --bench e2e -- --smoke` (a few seconds; CI runs it through
//! `cargo test --bench e2e -- --smoke`). Parameters come from the
//! environment; see `Params::from_env` and the README's "Benchmarks".

#[path = "../../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
mod load;
mod pki;
mod procs;

use std::fmt::Write as _;
use std::time::Duration;

use common::client::{plain_opts, tls_opts};
use common::mariadb::MariaDb;
use common::pki::ClientCert;
use load::Run;
use mysql_async::{Opts, OptsBuilder};
use pki::{BenchPki, KeyKind};
use procs::Server;

struct Params {
    smoke: bool,
    secs: u64,
    rounds: usize,
    threads: Vec<usize>,
    sessions: Vec<usize>,
    bulk_mib: u64,
    churn_concurrency: usize,
    keys: Vec<KeyKind>,
    only: Vec<String>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Params {
    fn from_env(smoke: bool) -> Params {
        let (secs, rounds, sessions, bulk) = if smoke {
            (1, 1, "10,100", 16)
        } else {
            (10, 3, "10,100,1000,10000", 300)
        };
        Params {
            smoke,
            secs: env_or("PC_BENCH_SECS", secs),
            rounds: env_or("PC_BENCH_ROUNDS", rounds),
            threads: env_list("PC_BENCH_THREADS", "1,8")
                .iter()
                .map(|t| t.parse().expect("PC_BENCH_THREADS: numbers"))
                .collect(),
            sessions: env_list("PC_BENCH_SESSIONS", sessions)
                .iter()
                .map(|t| t.parse().expect("PC_BENCH_SESSIONS: numbers"))
                .collect(),
            bulk_mib: env_or("PC_BENCH_BULK_MIB", bulk),
            churn_concurrency: env_or("PC_BENCH_CHURN_CONCURRENCY", 2),
            keys: env_list("PC_BENCH_KEYS", if smoke { "rsa" } else { "rsa,ecdsa" })
                .iter()
                .map(|k| match k.as_str() {
                    "rsa" => KeyKind::Rsa2048,
                    "ecdsa" => KeyKind::EcdsaP256,
                    o => panic!("PC_BENCH_KEYS: {o:?} is not rsa or ecdsa"),
                })
                .collect(),
            only: env_list("PC_BENCH_ONLY", "select,churn,bulk,payload,sessions"),
        }
    }
    fn wants(&self, section: &str) -> bool {
        self.only.iter().any(|s| s == section)
    }
    fn dur(&self) -> Duration {
        Duration::from_secs(self.secs)
    }
}

/// Where a workload connects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// mariadbd's own mutual TLS (REQUIRE X509 user), TCP [::1].
    DirectTls,
    /// portcullis mTLS on [::1] → mariadbd's Unix socket.
    Portcullis,
    /// The same with a second binary (`PC_BENCH_PORTCULLIS_B`), to measure
    /// a change A/B in one run.
    PortcullisB,
    /// HAProxy `mode tcp`, no TLS, → mariadbd's TCP port.
    Haproxy,
    /// mariadbd plain TCP [::1], no TLS.
    DirectPlain,
}

impl Target {
    fn has_hop(self) -> bool {
        !matches!(self, Target::DirectTls | Target::DirectPlain)
    }
    fn label(self) -> &'static str {
        match self {
            Target::DirectTls => "direct mTLS",
            Target::Portcullis => "portcullis mTLS",
            Target::PortcullisB => "portcullis B mTLS",
            Target::Haproxy => "haproxy plain",
            Target::DirectPlain => "direct plain",
        }
    }
}

/// One mariadbd with its own TLS, one portcullis, maybe one HAProxy.
struct Env {
    pki: BenchPki,
    db: MariaDb,
    portcullis: Server,
    portcullis_b: Option<Server>,
    haproxy: Option<Server>,
    work: tempfile::TempDir,
}

const USER: &str = "bench";
const PASS: &str = "bench-pass";
const PLAIN_USER: &str = "plain";
const PLAIN_PASS: &str = "plain-pass";

impl Env {
    async fn start(kind: KeyKind, max_sessions: usize, nofile: u64) -> Env {
        let pki = BenchPki::new(kind);
        let db = MariaDb::builder()
            .server_tls(
                &pki.path("server.pem"),
                &pki.path("server-key.pem"),
                &pki.path("ca.pem"),
            )
            .args([
                "--bind-address=::1".to_string(),
                format!("--max-connections={}", max_sessions + 200),
            ])
            .start()
            .await;
        db.exec(&format!(
            "CREATE DATABASE sbtest;
             CREATE TABLE sbtest.sbtest1 (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
               k INT NOT NULL DEFAULT 0, c CHAR(120) NOT NULL DEFAULT '',
               pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB;
             INSERT INTO sbtest.sbtest1 (k, c, pad)
               SELECT seq % 10007, REPEAT(CHAR(48 + seq % 10), 119), REPEAT('p', 59)
               FROM sbtest.seq_1_to_{rows};
             CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASS}' REQUIRE X509;
             CREATE USER '{USER}'@'localhost' IDENTIFIED BY '{PASS}';
             CREATE USER '{PLAIN_USER}'@'%' IDENTIFIED BY '{PLAIN_PASS}';
             GRANT ALL ON sbtest.* TO '{USER}'@'%', '{USER}'@'localhost', '{PLAIN_USER}'@'%';",
            rows = load::TABLE_ROWS
        ))
        .await;
        let work = common::mariadb::short_tempdir("pcbench-");
        let portcullis =
            procs::start_portcullis(&own_binary(), &pki, db.socket_path(), work.path());
        let portcullis_b =
            alt_binary().map(|b| procs::start_portcullis(&b, &pki, db.socket_path(), work.path()));
        let haproxy = procs::haproxy_available().then(|| {
            procs::start_haproxy(
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, db.port())),
                work.path(),
                nofile,
            )
        });
        Env {
            pki,
            db,
            portcullis,
            portcullis_b,
            haproxy,
            work,
        }
    }

    fn client(&self) -> ClientCert {
        ClientCert {
            name: "bench".into(),
            cn: "bench".into(),
            cert: self.pki.path("client.pem"),
            key: self.pki.path("client-key.pem"),
            serial: 100,
        }
    }

    fn opts(&self, target: Target) -> Opts {
        let ca = self.pki.path("ca.pem");
        let base = match target {
            Target::DirectTls => {
                tls_opts("::1", self.db.port(), USER, PASS, &ca, Some(&self.client()))
            }
            Target::Portcullis | Target::PortcullisB => tls_opts(
                "::1",
                self.portcullis_server(target).addr.port(),
                USER,
                PASS,
                &ca,
                Some(&self.client()),
            ),
            Target::Haproxy => plain_opts(
                "::1",
                self.haproxy.as_ref().expect("haproxy").addr.port(),
                PLAIN_USER,
                PLAIN_PASS,
            ),
            Target::DirectPlain => plain_opts("::1", self.db.port(), PLAIN_USER, PLAIN_PASS),
        };
        // Known settings: no extra `SELECT @@max_allowed_packet` per connect.
        OptsBuilder::from_opts(base)
            .db_name(Some("sbtest"))
            .max_allowed_packet(Some(64 << 20))
            .wait_timeout(Some(28800))
            .into()
    }

    fn portcullis_server(&self, target: Target) -> &Server {
        match target {
            Target::PortcullisB => self.portcullis_b.as_ref().expect("PC_BENCH_PORTCULLIS_B"),
            _ => &self.portcullis,
        }
    }

    /// The relay process of a target (portcullis or HAProxy), if any.
    fn hop_pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Portcullis | Target::PortcullisB => Some(self.portcullis_server(target).pid()),
            Target::Haproxy => self.haproxy.as_ref().map(Server::pid),
            _ => None,
        }
    }

    fn portcullis_targets(&self) -> Vec<Target> {
        let mut t = vec![Target::Portcullis];
        if self.portcullis_b.is_some() {
            t.push(Target::PortcullisB);
        }
        t
    }

    fn targets(&self, with_plain: bool) -> Vec<Target> {
        let mut t = vec![Target::DirectTls];
        t.extend(self.portcullis_targets());
        if with_plain {
            if self.haproxy.is_some() {
                t.push(Target::Haproxy);
            }
            t.push(Target::DirectPlain);
        }
        t
    }

    /// PIDs watched in every run: [hop or 0, mariadbd, this client].
    fn pids(&self, target: Target) -> [u32; 3] {
        [
            self.hop_pid(target).unwrap_or(0),
            self.db.pid().expect("mariadbd running"),
            std::process::id(),
        ]
    }
}

/// Results of one workload per target, merged over the rounds.
struct Table {
    title: String,
    unit: &'static str,
    rows: Vec<(Target, Run)>,
}

impl Table {
    fn new(title: impl Into<String>, unit: &'static str) -> Table {
        Table {
            title: title.into(),
            unit,
            rows: Vec::new(),
        }
    }
    fn add(&mut self, target: Target, run: Run) {
        match self.rows.iter_mut().find(|(t, _)| *t == target) {
            Some((_, r)) => r.merge(run),
            None => self.rows.push((target, run)),
        }
    }
    fn get(&self, target: Target) -> Option<&Run> {
        self.rows.iter().find(|(t, _)| *t == target).map(|(_, r)| r)
    }
    fn rate(&self, target: Target) -> f64 {
        self.get(target).map_or(f64::NAN, Run::rate)
    }
    fn cpu_per_op_us(&self, target: Target, process: usize) -> f64 {
        self.get(target)
            .map_or(f64::NAN, |r| r.cpu_per_op_us(process))
    }
    fn print(&mut self) {
        println!("\n### {}\n", self.title);
        println!(
            "| target | {}/s | MiB/s | p50 µs | p99 µs | hop CPU µs/op | mariadbd CPU µs/op | client CPU µs/op | hop cores |",
            self.unit
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (t, r) in &mut self.rows {
            let hop = if !t.has_hop() {
                "-".to_string()
            } else {
                format!("{:.1}", r.cpu_per_op_us(0))
            };
            println!(
                "| {} | {:.0} | {:.1} | {:.0} | {:.0} | {} | {:.1} | {:.1} | {:.2} |",
                t.label(),
                r.rate(),
                r.bytes as f64 / r.secs / (1 << 20) as f64,
                r.pct(50.0),
                r.pct(99.0),
                hop,
                r.cpu_per_op_us(1),
                r.cpu_per_op_us(2),
                r.cpu[0] / r.secs,
            );
        }
    }
}

/// Runs `f` for every target, `rounds` times, rotating the order each
/// round (A/B/A/B) so drifting background load hits every target alike;
/// prints and returns the merged table.
async fn section<F, Fut>(
    env: &Env,
    targets: &[Target],
    rounds: usize,
    title: String,
    unit: &'static str,
    f: F,
) -> Table
where
    F: Fn(Opts, [u32; 3]) -> Fut,
    Fut: std::future::Future<Output = Run>,
{
    let mut table = Table::new(title, unit);
    for round in 0..rounds {
        for i in 0..targets.len() {
            let t = targets[(i + round) % targets.len()];
            let run = f(env.opts(t), env.pids(t)).await;
            table.add(t, run);
        }
    }
    table.print();
    table
}

fn ratio_line(out: &mut String, what: &str, value: f64, target: &str) {
    let _ = writeln!(out, "- {what}: **{value:.2}** (target {target})");
}

async fn bench(mut p: Params) {
    let want = p.sessions.iter().copied().max().unwrap_or(0);
    let limit = procs::raise_nofile((4 * want as u64 + 4096).max(131_072));
    // portcullis holds two descriptors per session (client and backend).
    let cap = (limit.saturating_sub(256) / 2) as usize;
    if want > cap {
        println!(
            "note: open-file limit {limit} (raising it needs CAP_SYS_RESOURCE): idle sessions capped at {cap}"
        );
        for n in &mut p.sessions {
            *n = (*n).min(cap);
        }
        p.sessions.dedup();
    }
    let max_sessions = p.sessions.iter().copied().max().unwrap_or(0);
    let mut summary = String::new();
    let mut first = true;
    for &kind in &p.keys {
        let env = Env::start(kind, if first { max_sessions } else { 0 }, limit).await;
        println!(
            "\n## {} certificates (mariadbd {}, portcullis pid {}, haproxy: {})",
            kind.label(),
            env.db.pid().unwrap_or(0),
            env.portcullis.pid(),
            if env.haproxy.is_some() {
                "yes"
            } else {
                "not installed, column skipped"
            }
        );
        let _ = writeln!(summary, "\n**{}**\n", kind.label());
        // Full workload set with the first key kind; churn only with the others.
        if first {
            if p.wants("select") {
                select_section(&env, &p, &mut summary).await;
            }
            if p.wants("bulk") {
                bulk_section(&env, &p, &mut summary).await;
            }
            if p.wants("payload") {
                payload_section(&env, &p).await;
            }
        }
        if p.wants("churn") {
            churn_section(&env, &p, &mut summary).await;
        }
        if first && p.wants("sessions") && max_sessions > 0 {
            sessions_section(&env, &p, &mut summary).await;
        }
        drop(env);
        first = false;
    }
    println!("\n## Ratios against the issue's targets\n{summary}");
    if p.smoke {
        println!("(smoke run: numbers are too short to mean anything)");
    }
}

async fn select_section(env: &Env, p: &Params, summary: &mut String) {
    for &threads in &p.threads {
        let dur = p.dur();
        let title = format!(
            "point select, {threads} connection(s), {} s × {} rounds",
            p.secs, p.rounds
        );
        let table = section(
            env,
            &env.targets(true),
            p.rounds,
            title,
            "queries",
            |o, pids| async move { load::point_select(&o, threads, dur, &pids).await },
        )
        .await;
        let want = if threads == 1 { "≥ 0.85" } else { "≥ 0.95" };
        for pc in env.portcullis_targets() {
            let name = pc.label();
            let rate = table.rate(pc);
            ratio_line(
                summary,
                &format!("{threads}-thread QPS {name} / direct mTLS"),
                rate / table.rate(Target::DirectTls),
                want,
            );
            if env.haproxy.is_some() {
                ratio_line(
                    summary,
                    &format!("{threads}-thread QPS {name} / haproxy plain"),
                    rate / table.rate(Target::Haproxy),
                    "≥ 1.0 at 8 threads",
                );
            }
            let _ = writeln!(
                summary,
                "- {threads}-thread {name} CPU per query: **{:.1} µs** (target ≤ 25; haproxy plain here: {:.1} µs)",
                table.cpu_per_op_us(pc, 0),
                table.cpu_per_op_us(Target::Haproxy, 0),
            );
        }
        if env.haproxy.is_some() {
            ratio_line(
                summary,
                &format!("{threads}-thread QPS haproxy plain / direct plain"),
                table.rate(Target::Haproxy) / table.rate(Target::DirectPlain),
                "the issue measured 0.70 single-thread",
            );
        }
    }
}

async fn churn_section(env: &Env, p: &Params, summary: &mut String) {
    let c = p.churn_concurrency;
    let dur = p.dur();
    let ssl = common::client::ssl_opts(&env.pki.path("ca.pem"), Some(&env.client()));
    for resumed in [false, true] {
        let kind = if resumed {
            "TLS session resumed (client keeps its session cache)"
        } else {
            "full handshakes (new client TLS config per connection)"
        };
        let title = format!(
            "connection churn ({}, {kind}): connect + mTLS + auth + SELECT 1 + close, {c} at a time, {} s × {} rounds",
            env.pki.kind.label(),
            p.secs,
            p.rounds
        );
        let fresh = (!resumed).then_some(&ssl);
        let table = section(
            env,
            &env.targets(false),
            p.rounds,
            title,
            "conns",
            |o, pids| async move { load::churn(&o, fresh, c, dur, &pids).await },
        )
        .await;
        let what = if resumed { "resumed" } else { "full" };
        for pc in env.portcullis_targets() {
            let _ = writeln!(
                summary,
                "- churn ({what}): {} CPU per connection **{:.2} ms** (target ≤ 1.0 with RSA 2048, full handshakes); mariadbd's own TLS: {:.2} ms",
                pc.label(),
                table.cpu_per_op_us(pc, 0) / 1000.0,
                table.cpu_per_op_us(Target::DirectTls, 1) / 1000.0
            );
            ratio_line(
                summary,
                &format!("churn ({what}) rate {} / direct mTLS", pc.label()),
                table.rate(pc) / table.rate(Target::DirectTls),
                "≥ 1.2",
            );
        }
    }
}

async fn bulk_section(env: &Env, p: &Params, summary: &mut String) {
    let total = p.bulk_mib << 20;
    let row = 64 * 1024;
    let title = format!(
        "bulk: one {} MiB result set in 64 KiB rows × {} rounds",
        p.bulk_mib, p.rounds
    );
    let targets: Vec<Target> = env
        .targets(true)
        .into_iter()
        .filter(|t| *t != Target::DirectPlain)
        .collect();
    let table = section(
        env,
        &targets,
        p.rounds,
        title,
        "sets",
        |o, pids| async move { load::bulk(&o, total, row, &pids).await },
    )
    .await;
    let tp = |t| table.get(t).map_or(f64::NAN, |r| r.bytes as f64 / r.secs);
    for pc in env.portcullis_targets() {
        ratio_line(
            summary,
            &format!("bulk throughput {} / direct mTLS", pc.label()),
            tp(pc) / tp(Target::DirectTls),
            "≥ 0.95",
        );
        let _ = writeln!(
            summary,
            "- bulk: {} used **{:.2}** cores while streaming (target < 1)",
            pc.label(),
            table.get(pc).map_or(f64::NAN, |r| r.cpu[0] / r.secs)
        );
    }
}

async fn payload_section(env: &Env, p: &Params) {
    for size in [100usize, 16 * 1024, 1 << 20] {
        let dur = p.dur();
        let title = format!(
            "one {size}-byte row per query, 1 connection, {} s × {} rounds",
            p.secs, p.rounds
        );
        section(
            env,
            &env.targets(false),
            p.rounds,
            title,
            "queries",
            |o, pids| async move { load::payload(&o, size, dur, &pids).await },
        )
        .await;
    }
}

async fn sessions_section(env: &Env, p: &Params, summary: &mut String) {
    let mut bins = vec![("portcullis", own_binary())];
    if let Some(b) = alt_binary() {
        bins.push(("portcullis B", b));
    }
    for (name, b) in bins {
        let last = idle_sessions(env, p, name, &b).await;
        let _ = writeln!(
            summary,
            "- idle sessions: {name} **{last:.1} KiB** RSS per session at {} sessions (target ≤ 48)",
            p.sessions.iter().max().unwrap_or(&0)
        );
    }
}

/// Opens idle sessions through a fresh portcullis (so earlier workloads'
/// allocator state does not count) and prints its RSS at each level;
/// returns KiB per session at the last level.
async fn idle_sessions(env: &Env, p: &Params, name: &str, b: &procs::Variant) -> f64 {
    let fresh = procs::start_portcullis(b, &env.pki, env.db.socket_path(), env.work.path());
    let pid = fresh.pid();
    let opts: Opts = OptsBuilder::from_opts(env.opts(Target::Portcullis))
        .tcp_port(fresh.addr.port())
        .into();
    let db_pid = env.db.pid().unwrap_or(0);
    let base = procs::rss_bytes(pid);
    let db_base = procs::rss_bytes(db_pid);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "\n### idle mTLS sessions through {name} (RSS baseline {:.1} MiB)\n",
        mib(base)
    );
    println!(
        "| sessions | {name} RSS MiB | KiB per session | mariadbd KiB per session | opened per s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut held = Vec::new();
    let mut last = f64::NAN;
    for &n in &p.sessions {
        let more = n.saturating_sub(held.len());
        let t = std::time::Instant::now();
        held.extend(load::open_sessions(&opts, more, 8).await);
        let rate = more as f64 / t.elapsed().as_secs_f64();
        let rss = procs::rss_bytes(pid);
        let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / n as f64 / 1024.0;
        last = per(rss, base);
        println!(
            "| {n} | {:.1} | {last:.1} | {:.1} | {rate:.0} |",
            mib(rss),
            per(procs::rss_bytes(db_pid), db_base)
        );
    }
    for c in held {
        let _ = c.disconnect().await;
    }
    last
}

/// The binary cargo built for this bench (or `PC_BENCH_PORTCULLIS`), with
/// the bench listener's extra lines in `PC_BENCH_LISTENER_TOML`.
fn own_binary() -> procs::Variant {
    procs::Variant {
        listener_toml: std::env::var("PC_BENCH_LISTENER_TOML").unwrap_or_default(),
        ..procs::Variant::plain(procs::portcullis_bin())
    }
}

/// `PC_BENCH_PORTCULLIS_B`: a second portcullis binary to compare (it may
/// be the same file), run with the extra environment in
/// `PC_BENCH_PORTCULLIS_B_ENV` ("K=V K=V", e.g. "PORTCULLIS_LOG=warn"), the
/// extra top-level config lines in `PC_BENCH_PORTCULLIS_B_TOML` (e.g.
/// "workers = 1") and the bench listener's extra lines in
/// `PC_BENCH_PORTCULLIS_B_LISTENER_TOML`.
fn alt_binary() -> Option<procs::Variant> {
    let bin = std::env::var_os("PC_BENCH_PORTCULLIS_B")?;
    let env = std::env::var("PC_BENCH_PORTCULLIS_B_ENV")
        .unwrap_or_default()
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .expect("PC_BENCH_PORTCULLIS_B_ENV: K=V pairs");
            (k.to_string(), v.to_string())
        })
        .collect();
    Some(procs::Variant {
        bin: bin.into(),
        env,
        toml: std::env::var("PC_BENCH_PORTCULLIS_B_TOML").unwrap_or_default(),
        listener_toml: std::env::var("PC_BENCH_PORTCULLIS_B_LISTENER_TOML").unwrap_or_default(),
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test` passes nothing special.
    let smoke = args.iter().any(|a| a == "--smoke");
    let p = Params::from_env(smoke);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(p));
}
