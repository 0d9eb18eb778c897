//! The real `portcullis` binary as a child process: JSON logs read line by
//! line, signals sent with `kill`, killed on drop if a test fails half-way.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

pub struct RunningBinary {
    child: Option<Child>,
    log: UnboundedReceiver<String>,
    pid: String,
    /// The log events up to and including "serving".
    pub startup: Vec<Value>,
}

impl RunningBinary {
    /// Starts `portcullis --log-format json run --config CONFIG` and waits
    /// for its "serving" log line (every accept loop runs); the events up
    /// to it are kept in `startup`.
    pub async fn start(config: &Path) -> RunningBinary {
        RunningBinary::spawn(config, &[]).await
    }

    /// Starts `portcullis --log-format json run --take-over --config
    /// CONFIG` beside a running one and waits for its "serving" log line
    /// (it serves on the sockets taken over; the old one is told to drain
    /// right after).
    pub async fn take_over(config: &Path) -> RunningBinary {
        RunningBinary::spawn(config, &["--take-over"]).await
    }

    async fn spawn(config: &Path, extra: &[&str]) -> RunningBinary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["--log-format", "json", "run"])
            .args(extra)
            .arg("--config")
            .arg(config)
            .env("PORTCULLIS_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start portcullis");
        let stderr = child.stderr.take().unwrap();
        let pid = child.id().to_string();
        let (tx, log) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let mut b = RunningBinary {
            child: Some(child),
            log,
            pid,
            startup: Vec::new(),
        };
        b.startup = b.events_until("serving").await;
        b
    }

    /// The process id.
    pub fn pid(&self) -> &str {
        &self.pid
    }

    /// How many file descriptors the process has open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, …).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{sig} {}", self.pid);
    }

    /// Waits (up to 20 s) for a log event whose message starts with
    /// `message`; returns it.
    pub async fn wait_for_log(&mut self, message: &str) -> Value {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = self.log.recv().await {
                let v: Value = serde_json::from_str(&line).unwrap();
                if v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
                {
                    return Some(v);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(v)) => v,
            _ => panic!("no {message:?} log line before exit or timeout"),
        }
    }

    /// Every log event up to and including the first whose message starts
    /// with `message` (waits up to 20 s for it).
    pub async fn events_until(&mut self, message: &str) -> Vec<Value> {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            let mut events = Vec::new();
            while let Some(line) = self.log.recv().await {
                let v: Value = serde_json::from_str(&line).unwrap();
                let last = v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message));
                events.push(v);
                if last {
                    return Some(events);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(events)) => events,
            _ => panic!("no {message:?} log line before exit or timeout"),
        }
    }

    /// Waits (up to 20 s) for the process to exit and returns its code.
    pub async fn wait_exit(mut self) -> Option<i32> {
        let mut c = self.child.take().unwrap();
        let waited = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || c.wait()),
        )
        .await;
        let Ok(status) = waited else {
            let _ = Command::new("kill").args(["-KILL", &self.pid]).status();
            panic!("portcullis did not exit in time");
        };
        status.unwrap().unwrap().code()
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
