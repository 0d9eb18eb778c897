//! The workloads, driven with mysql_async: point selects with N
//! connections, connection churn, one bulk result set, fixed-size rows,
//! and idle sessions held open.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, SslOpts, Value};

use super::procs::cpu_secs;

/// What one measured run did: operations, wall time, per-operation
/// latencies (µs), CPU seconds each watched process spent, bytes received.
#[derive(Debug, Default, Clone)]
pub struct Run {
    pub ops: u64,
    pub secs: f64,
    pub lat_us: Vec<u32>,
    pub cpu: Vec<f64>,
    pub bytes: u64,
}

impl Run {
    /// A run of operations with these latencies.
    fn timed(lat_us: Vec<u32>, secs: f64, cpu: Vec<f64>, bytes: u64) -> Run {
        Run {
            ops: lat_us.len() as u64,
            secs,
            lat_us,
            cpu,
            bytes,
        }
    }

    /// Adds another run of the same workload and target (A/B/A/B rounds).
    pub fn merge(&mut self, other: Run) {
        self.ops += other.ops;
        self.secs += other.secs;
        self.lat_us.extend(other.lat_us);
        if self.cpu.is_empty() {
            self.cpu = vec![0.0; other.cpu.len()];
        }
        for (a, b) in self.cpu.iter_mut().zip(other.cpu) {
            *a += b;
        }
        self.bytes += other.bytes;
    }

    pub fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    /// Percentile `p` (0–100) of the latencies, in µs.
    pub fn pct(&mut self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        self.lat_us.sort_unstable();
        let i = ((p / 100.0) * (self.lat_us.len() - 1) as f64).round() as usize;
        f64::from(self.lat_us[i])
    }

    /// CPU µs per operation of watched process `i`.
    pub fn cpu_per_op_us(&self, i: usize) -> f64 {
        self.cpu.get(i).copied().unwrap_or(f64::NAN) * 1e6 / self.ops.max(1) as f64
    }
}

/// Runs `work`, measuring wall time and the CPU of `pids` around it.
async fn measured<F, T>(pids: &[u32], work: F) -> (T, f64, Vec<f64>)
where
    F: std::future::Future<Output = T>,
{
    let before: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let t = Instant::now();
    let out = work.await;
    let secs = t.elapsed().as_secs_f64();
    let cpu = pids
        .iter()
        .zip(before)
        .map(|(p, b)| cpu_secs(*p) - b)
        .collect();
    (out, secs, cpu)
}

/// Small xorshift; ids only need to spread over the table.
struct Ids(u64);
impl Ids {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + self.0 % n
    }
}

pub const TABLE_ROWS: u64 = 10_000;

async fn connect_all(opts: &Opts, n: usize) -> Vec<Conn> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(
            Conn::new(opts.clone())
                .await
                .unwrap_or_else(|e| panic!("connect: {e}")),
        );
    }
    conns
}

/// sysbench `oltp_point_select`: `SELECT c FROM sbtest1 WHERE id=?` as a
/// prepared statement, `threads` connections, for `dur`.
pub async fn point_select(opts: &Opts, threads: usize, dur: Duration, pids: &[u32]) -> Run {
    let conns = connect_all(opts, threads).await;
    let work = async {
        let deadline = Instant::now() + dur;
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, mut conn)| {
                tokio::spawn(async move {
                    let stmt = conn
                        .prep("SELECT c FROM sbtest1 WHERE id=?")
                        .await
                        .expect("prepare");
                    let mut ids = Ids(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
                    let mut lat = Vec::with_capacity(1 << 16);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let c: Option<String> = conn
                            .exec_first(&stmt, (ids.next(TABLE_ROWS),))
                            .await
                            .expect("point select");
                        assert!(c.is_some(), "row missing");
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    (lat, conn)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut conns = Vec::new();
        for t in tasks {
            let (lat, conn) = t.await.expect("select task");
            all.extend(lat);
            conns.push(conn);
        }
        (all, conns)
    };
    let ((lat_us, conns), secs, cpu) = measured(pids, work).await;
    for c in conns {
        let _ = c.disconnect().await;
    }
    Run::timed(lat_us, secs, cpu, 0)
}

/// Connection churn: `concurrency` tasks each connect (TLS handshake,
/// authentication), run `SELECT 1` and close, for `dur`.
///
/// mysql_async keeps one rustls client config, with its session cache, per
/// `Opts`: connections made from clones of one `Opts` resume TLS sessions.
/// With `fresh_tls` every connection gets new TLS options, hence a new
/// client config and a full handshake (certificate signature and chain
/// verification on both sides).
pub async fn churn(
    opts: &Opts,
    fresh_tls: Option<&SslOpts>,
    concurrency: usize,
    dur: Duration,
    pids: &[u32],
) -> Run {
    let work = async {
        let deadline = Instant::now() + dur;
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let opts = opts.clone();
                let fresh = fresh_tls.cloned();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let opts = match &fresh {
                            Some(ssl) => OptsBuilder::from_opts(opts.clone())
                                .ssl_opts(Some(ssl.clone()))
                                .into(),
                            None => opts.clone(),
                        };
                        let mut conn = Conn::new(opts)
                            .await
                            .unwrap_or_else(|e| panic!("churn connect: {e}"));
                        let one: Option<i64> =
                            conn.query_first("SELECT 1").await.expect("SELECT 1");
                        assert_eq!(one, Some(1));
                        conn.disconnect().await.expect("disconnect");
                        lat.push(t.elapsed().as_micros() as u32);
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("churn task"));
        }
        all
    };
    let (lat_us, secs, cpu) = measured(pids, work).await;
    Run::timed(lat_us, secs, cpu, 0)
}

/// One result set of `total` bytes in rows of `row` bytes, streamed (never
/// held in memory) over one connection.
pub async fn bulk(opts: &Opts, total: u64, row: u64, pids: &[u32]) -> Run {
    let mut conn = Conn::new(opts.clone()).await.expect("connect");
    let rows = total.div_ceil(row);
    let sql = format!("SELECT REPEAT('x', {row}) FROM seq_1_to_{rows}");
    let work = async {
        let mut got = 0u64;
        let mut result = conn.query_iter(sql).await.expect("bulk query");
        result
            .for_each(|r| {
                if let Some(Value::Bytes(b)) = r.as_ref(0) {
                    got += b.len() as u64;
                }
            })
            .await
            .expect("bulk rows");
        got
    };
    let (bytes, secs, cpu) = measured(pids, work).await;
    assert_eq!(bytes, rows * row, "bulk result set came back short");
    let _ = conn.disconnect().await;
    Run::timed(vec![(secs * 1e6) as u32], secs, cpu, bytes)
}

/// One connection fetching a single `size`-byte row per query
/// (`SELECT REPEAT('x', ?)`, prepared), for `dur`.
pub async fn payload(opts: &Opts, size: usize, dur: Duration, pids: &[u32]) -> Run {
    let mut conn = Conn::new(opts.clone()).await.expect("connect");
    let stmt = conn.prep("SELECT REPEAT('x', ?)").await.expect("prepare");
    let work = async {
        let deadline = Instant::now() + dur;
        let mut lat = Vec::new();
        while Instant::now() < deadline {
            let t = Instant::now();
            let v: Option<Vec<u8>> = conn.exec_first(&stmt, (size,)).await.expect("select");
            assert_eq!(v.map(|v| v.len()), Some(size));
            lat.push(t.elapsed().as_micros() as u32);
        }
        lat
    };
    let (lat_us, secs, cpu) = measured(pids, work).await;
    let _ = conn.disconnect().await;
    let bytes = lat_us.len() as u64 * size as u64;
    Run::timed(lat_us, secs, cpu, bytes)
}

/// Opens `n` more sessions (authenticated, idle), `concurrency` at a time.
pub async fn open_sessions(opts: &Opts, n: usize, concurrency: usize) -> Vec<Conn> {
    let per = n.div_ceil(concurrency.max(1));
    let tasks: Vec<_> = (0..concurrency)
        .map(|i| {
            let opts = opts.clone();
            let count = per.min(n.saturating_sub(i * per));
            tokio::spawn(async move { connect_all(&opts, count).await })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.expect("open sessions"));
    }
    all
}
