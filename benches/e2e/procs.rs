//! The processes under test (portcullis, HAProxy) and their CPU time and
//! RSS, read from /proc.

use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Seconds of CPU (user + system, all threads) a process has used.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name: state is [0],
    // utime [11], stime [12], in clock ticks.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / clk_tck()
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Resident set size in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// A free TCP port on ::1.
pub fn free_port_v6() -> u16 {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind [::1]:0")
        .port()
}

/// Raises this process's open-file limit (children inherit it) so that
/// 10 000 sessions fit: the bench holds one socket per session, portcullis
/// two. Returns the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={want}:{want}")])
        .stderr(Stdio::null())
        .status();
    let out = Command::new("prlimit")
        .args(["--pid", &pid, "--nofile", "--output=SOFT", "--noheadings"])
        .output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1024)
}

/// A child process killed on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `cmd`, then waits (bounded) until `addr` accepts a TCP
    /// connection.
    fn start(name: &'static str, mut cmd: Command, addr: SocketAddr, log: &Path) -> Server {
        let log = std::fs::File::create(log).expect("create log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut s = Server { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("{name} exited during startup: {status}");
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return s;
            }
            assert!(Instant::now() < deadline, "{name} did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The portcullis binary: `PC_BENCH_PORTCULLIS` or the one cargo built
/// for this bench.
pub fn portcullis_bin() -> PathBuf {
    std::env::var_os("PC_BENCH_PORTCULLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_portcullis")))
}

/// A portcullis binary with the settings a run gives it.
pub struct Variant {
    pub bin: std::path::PathBuf,
    /// Extra environment ("K=V K=V").
    pub env: Vec<(String, String)>,
    /// Extra top-level config lines.
    pub toml: String,
    /// Extra lines at the end of the bench listener's section (e.g. a
    /// `[listener.identity]` table).
    pub listener_toml: String,
}

impl Variant {
    /// A binary with no extra settings.
    pub fn plain(bin: PathBuf) -> Variant {
        Variant {
            bin,
            env: Vec::new(),
            toml: String::new(),
            listener_toml: String::new(),
        }
    }
}

/// Starts a portcullis binary: mTLS on `[::1]:port` in front of mariadbd's
/// Unix socket, with the PKI's CA and CRL, and the variant's extra lines at
/// the config's top level (e.g. `workers = 1`) and at the end of the
/// listener's section.
pub fn start_portcullis(
    v: &Variant,
    pki: &super::pki::BenchPki,
    socket: &Path,
    workdir: &Path,
) -> Server {
    let port = free_port_v6();
    let p = |n: &str| pki.path(n).display().to_string();
    let toml = format!(
        r#"shutdown_timeout = "1s"
{extra}

[[backend]]
name = "db"
address = "unix:{socket}"

[[listener]]
name = "bench"
address = "[::1]:{port}"
route = "db"
max_connections = 60000

[listener.tls]
cert = "{cert}"
key = "{key}"
ca = "{ca}"
crl = ["{crl}"]
client_auth = "required"
{listener_extra}
"#,
        extra = v.toml,
        listener_extra = v.listener_toml,
        socket = socket.display(),
        cert = p("server.pem"),
        key = p("server-key.pem"),
        ca = p("ca.pem"),
        crl = p("crl.pem"),
    );
    let config = workdir.join(format!("portcullis-{port}.toml"));
    std::fs::write(&config, toml).expect("write portcullis.toml");
    let mut cmd = Command::new(&v.bin);
    cmd.args(["run", "--config"])
        .arg(&config)
        // The default level: one log line per session is part of the cost.
        .env("PORTCULLIS_LOG", "info")
        .envs(v.env.iter().cloned());
    let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    Server::start(
        "portcullis",
        cmd,
        addr,
        &workdir.join(format!("portcullis-{port}.log")),
    )
}

/// Whether Debian's haproxy is installed.
pub fn haproxy_available() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// HAProxy in plain `mode tcp` on `[::1]:port` in front of mariadbd's TCP
/// port (no TLS on either side: the issue's "plain relay" baseline).
pub fn start_haproxy(backend: SocketAddr, workdir: &Path, nofile: u64) -> Server {
    let port = free_port_v6();
    // HAProxy wants two descriptors per connection plus a few.
    let maxconn = (nofile.saturating_sub(100) / 2).min(60_000);
    let cfg = format!(
        "global\n  maxconn {maxconn}\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\nlisten db\n  bind [::1]:{port}\n  server db {backend}\n",
        backend = format_haproxy_addr(backend),
    );
    let path = workdir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("write haproxy.cfg");
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    let addr = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    Server::start("haproxy", cmd, addr, &workdir.join("haproxy.log"))
}

fn format_haproxy_addr(a: SocketAddr) -> String {
    match a {
        SocketAddr::V6(v6) => format!("ipv6@{}:{}", v6.ip(), v6.port()),
        SocketAddr::V4(v4) => v4.to_string(),
    }
}
