//! What an operator sees from the real binary: `portcullis check` finding
//! what `run` would hit, error lines printed once, permission warnings once
//! per file and state, reloads that name every change they cannot apply,
//! one log event per line, and messages that say what to write instead.
//!
//! No database is needed: nothing here connects through the proxy (the
//! backend address is never dialled).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary::RunningBinary;
use common::http::http;
use common::mariadb::{free_port, short_tempdir};
use common::pki::Pki;
use portcullis::config::ListenAddr;
use serde_json::{json, Value};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `portcullis [ARGS] --config CONFIG`: (exit code, stdout, stderr).
fn portcullis(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("PORTCULLIS_LOG", "info")
        .output()
        .expect("run portcullis");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config with an admin API and one mTLS listener `public` over the PKI's
/// files (the key copied to `dir` with mode 0600), plus `extra`; written to
/// `dir/portcullis.toml`.
struct Setup {
    pki: Pki,
    dir: tempfile::TempDir,
    port: u16,
    admin_port: u16,
}

impl Setup {
    fn new() -> Setup {
        let pki = Pki::new();
        let dir = short_tempdir("op");
        std::fs::copy(&pki.server.key, dir.path().join("key.pem")).unwrap();
        chmod(&dir.path().join("key.pem"), 0o600);
        std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
        chmod(&dir.path().join("admin.token"), 0o600);
        Setup {
            pki,
            dir,
            port: free_port(),
            admin_port: free_port(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("portcullis.toml")
    }

    /// Writes the config with `port` for the listener, and `extra` at the
    /// end.
    fn write(&self, port: u16, extra: &str) -> PathBuf {
        let text = format!(
            r#"admin = {{ address = "127.0.0.1:{admin}", token_file = "admin.token" }}


[[backend]]
name = "db"
address = "127.0.0.1:9"

[[listener]]
name = "public"
address = "127.0.0.1:{port}"
route = "db"

[listener.tls]
cert = {cert:?}
key = "key.pem"
ca = {ca:?}
{extra}"#,
            admin = self.admin_port,
            cert = self.pki.server.cert,
            ca = self.pki.ca,
        );
        std::fs::write(self.config(), text).unwrap();
        chmod(&self.config(), 0o600);
        self.config()
    }

    fn admin(&self) -> ListenAddr {
        ListenAddr::Tcp(([127, 0, 0, 1], self.admin_port).into())
    }
}

/// The admin bearer token: a TCP admin API without one serves GET only.
const TOKEN: &str = "operator-test-token-0123456789";

/// Messages of `events` at level `level` whose message contains `text`.
fn messages<'a>(events: &'a [Value], level: &str, text: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["level"] == level)
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains(text))
        .collect()
}

/// Item 2: `check` reports a Unix socket directory that does not exist (a
/// config `run` refuses) at its line; beside a running portcullis on the
/// same config it passes and warns that the addresses are in use by it.
#[tokio::test]
async fn check_finds_what_run_would_hit_and_knows_a_running_portcullis() {
    let s = Setup::new();
    let config = s.write(s.port, "");
    let socket_dir = s.path("no-such-dir");
    std::fs::write(
        s.path("socket.toml"),
        format!(
            r#"[[backend]]
name = "db"
address = "127.0.0.1:9"
[[listener]]
name = "local"
address = "unix:{}/p.sock"
route = "db"
"#,
            socket_dir.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = portcullis(&["check"], &s.path("socket.toml"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "socket.toml:6: cannot listen on unix:{}/p.sock: directory {} does not exist\n1 problem(s) found",
            socket_dir.display(),
            socket_dir.display()
        )),
        "{stderr}"
    );

    let (code, stdout, stderr) = portcullis(&["check"], &config);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(!stderr.contains("in use"), "{stderr}");

    let bin = RunningBinary::start(&config).await;
    let (code, stdout, stderr) = portcullis(&["check"], &config);
    assert_eq!(
        code,
        Some(0),
        "in use by this proxy is no problem: {stderr}"
    );
    assert!(
        stdout.contains("OK (1 listener(s), 1 backend(s))"),
        "{stdout}"
    );
    for (what, port) in [("listener \"public\"", s.port), ("[admin]", s.admin_port)] {
        assert!(
            stderr.contains(&format!(
                "{what}: 127.0.0.1:{port} is in use by portcullis (pid {}): if that is this portcullis, already running, this is expected; otherwise `run` will fail to bind it",
                bin.pid()
            )),
            "{stderr}"
        );
    }
}

/// Item 3: a second `run` on a taken address fails with one error event,
/// in which the OS error text appears once, and nothing else on stderr.
#[tokio::test]
async fn a_fatal_error_is_one_line_with_each_cause_once() {
    let s = Setup::new();
    let config = s.write(s.port, "");
    let _first = RunningBinary::start(&config).await;
    let (code, _, stderr) = portcullis(&["--log-format", "json", "run"], &config);
    assert_eq!(code, Some(1), "{stderr}");
    let events: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a log event ({e}): {l}")))
        .collect();
    let errors = messages(&events, "ERROR", "");
    let in_use = std::io::Error::from_raw_os_error(98).to_string();
    assert_eq!(
        errors,
        vec![format!(
            "cannot start: listener \"public\": cannot listen on 127.0.0.1:{}: {in_use}",
            s.port
        )],
        "{stderr}"
    );
}

/// Items 4 and 6: `POST /reload` after changing what a reload cannot apply
/// answers 422 naming each change (and logs each, one event per change,
/// then a summary in stable text); back to the running file, 200 without
/// `not_applied`. An invalid file logs one single-line event per problem.
#[tokio::test]
async fn a_reload_names_every_change_it_cannot_apply() {
    let s = Setup::new();
    let config = s.write(s.port, "");
    let mut bin = RunningBinary::start(&config).await;
    let moved = free_port();
    s.write(
        moved,
        r#"
[[listener]]
name = "extra"
address = "127.0.0.1:0"
route = "db"
allow_plaintext = true
"#,
    );
    let r = http(&s.admin(), "POST", "/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(
        r.json(),
        json!({
            "tls": {"public": {"result": "unchanged"}},
            "failover_changed": [],
            "not_running": ["extra"],
            "not_applied": [
                {"what": "listener \"public\" address",
                 "why": format!("changed from 127.0.0.1:{} to 127.0.0.1:{moved}; applies at the next hand-over", s.port)},
                {"what": "listener \"extra\"",
                 "why": "new in the file (127.0.0.1:0); it is bound at the next hand-over"},
            ]
        })
    );
    let events = bin.events_until("reload done").await;
    assert_eq!(
        messages(&events, "WARN", "reload: not applied"),
        vec![
            format!("reload: not applied: listener \"public\" address: changed from 127.0.0.1:{} to 127.0.0.1:{moved}; applies at the next hand-over", s.port),
            "reload: not applied: listener \"extra\": new in the file (127.0.0.1:0); it is bound at the next hand-over".to_string(),
        ]
    );
    let done = events.last().unwrap();
    assert_eq!(
        (
            &done["trigger"],
            &done["tls"],
            &done["failover_changed"],
            &done["not_applied"]
        ),
        (
            &json!("admin"),
            &json!("public=unchanged"),
            &json!(""),
            &json!(2)
        ),
        "{done}"
    );

    // Back to the file it runs: everything applied.
    s.write(s.port, "");
    let r = http(&s.admin(), "POST", "/reload", Some(TOKEN)).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"tls": {"public": {"result": "unchanged"}}, "failover_changed": [], "not_running": []})
    );

    // Invalid: one event per problem, each one line, by SIGHUP too.
    s.write(
        s.port,
        r#"[tls_reload]
poll_interval = 5
bogus = 1
"#,
    );
    bin.signal("HUP");
    let events = bin.events_until("reload: config invalid").await;
    let first = events.last().unwrap().clone();
    let second = bin.wait_for_log("reload: config invalid").await;
    let config = config.display();
    assert_eq!(
        [&first["message"], &second["message"]],
        [
            &json!(format!("reload: config invalid, nothing changed: {config}:18: invalid type: integer `5`, expected a duration as a string: a number and a unit (ms, s, m, h, d), like \"5s\"")),
            &json!(format!("reload: config invalid, nothing changed: {config}:19: unknown field `bogus`, expected `poll_interval` or `expiry_warning`")),
        ]
    );
    assert_eq!(first["trigger"], "sighup");
}

/// Item 1: a key others can read is warned about once at start, not again
/// by reloads that find it unchanged; fixed, the warning stops; loosened
/// again, it is back.
#[tokio::test]
async fn a_loose_key_is_warned_about_once_per_file_and_state() {
    let s = Setup::new();
    let config = s.write(s.port, "");
    let key = s.path("key.pem");
    chmod(&key, 0o644);
    let warning = format!("TLS private key {} can be read", key.display());
    let mut bin = RunningBinary::start(&config).await;
    assert_eq!(messages(&bin.startup, "WARN", &warning).len(), 1);
    let none = Vec::<&str>::new();
    let events = after_hup(&mut bin).await;
    assert_eq!(messages(&events, "WARN", &warning), none);
    chmod(&key, 0o600);
    let events = after_hup(&mut bin).await;
    assert_eq!(messages(&events, "WARN", &warning), none);
    chmod(&key, 0o640);
    let events = after_hup(&mut bin).await;
    assert_eq!(messages(&events, "WARN", &warning).len(), 1, "{events:?}");
    let events = after_hup(&mut bin).await;
    assert_eq!(messages(&events, "WARN", &warning), none);
}

/// SIGHUP, and the log events up to the reload's summary.
async fn after_hup(bin: &mut RunningBinary) -> Vec<Value> {
    bin.signal("HUP");
    bin.events_until("reload done").await
}

/// Items 7, 8, 9 and issue 21's item 5: messages that say what to do.
#[test]
fn messages_say_what_to_write_instead() {
    let s = Setup::new();
    let config = s.write(s.port, "");

    // Encrypted keys: PKCS#8 and the traditional PEM form.
    let encrypted = s.path("enc.pem");
    let rsa = s.path("rsa-enc.pem");
    for args in [
        vec!["pkey", "-in"],
        vec![
            "genrsa",
            "-traditional",
            "-aes128",
            "-passout",
            "pass:x",
            "-out",
        ],
    ] {
        let mut cmd = Command::new("openssl");
        cmd.args(&args);
        if args[0] == "pkey" {
            cmd.arg(&s.pki.server.key)
                .args(["-aes256", "-passout", "pass:x", "-out"])
                .arg(&encrypted);
        } else {
            cmd.arg(&rsa).arg("2048");
        }
        let out = cmd.output().expect("run openssl");
        assert!(out.status.success(), "{out:?}");
    }
    assert!(std::fs::read_to_string(&rsa)
        .unwrap()
        .contains("Proc-Type: 4,ENCRYPTED"));
    for key in [&encrypted, &rsa] {
        chmod(key, 0o600);
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("key = \"key.pem\"", &format!("key = {key:?}"));
        std::fs::write(s.path("enc.toml"), text).unwrap();
        let (code, _, stderr) = portcullis(&["check"], &s.path("enc.toml"));
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "enc.toml:13: {}: the private key is encrypted, which portcullis does not support (it has no passphrase to unlock it with at start or reload); decrypt it once with `openssl pkey -in {} -out key.pem` and point `key` at key.pem (mode 0600)",
                key.display(),
                key.display()
            )),
            "{stderr}"
        );
    }

    // A duration as a number, beside a key typo and a missing file.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("address = \"127.0.0.1:9\"", "adress = \"127.0.0.1:9\"")
        .replace("ca = ", "ca = \"missing-ca.pem\"\n#");
    std::fs::write(s.path("bad.toml"), format!("shutdown_timeout = 5\n{text}")).unwrap();
    let (code, _, stderr) = portcullis(&["check"], &s.path("bad.toml"));
    assert_eq!(code, Some(1), "{stderr}");
    let bad = s.path("bad.toml");
    let bad = bad.display();
    assert!(
        stderr.ends_with(&format!(
            "{bad}:1: invalid type: integer `5`, expected a duration as a string: a number and a unit (ms, s, m, h, d), like \"5s\"\n\
             {bad}:7: unknown field `adress`, expected one of `name`, `address`, `connect_timeout`, `advertise`, `proxy_protocol`, `tls`\n\
             {bad}:17: CA bundle {}: No such file or directory (os error 2)\n\
             3 problem(s) found\n",
            s.path("missing-ca.pem").display()
        )),
        "{stderr}"
    );

    // An inline monitor password in a file others can read; a CA bundle
    // and the config file others can write.
    let with_monitor = s.path("monitor.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &with_monitor,
        format!(
            r#"{text}
[monitor]
user = "mon"
password = "inline"
"#
        ),
    )
    .unwrap();
    chmod(&with_monitor, 0o644);
    let (code, _, stderr) = portcullis(&["check"], &with_monitor);
    assert_eq!(code, Some(0), "{stderr}");
    let shown = with_monitor.display();
    assert!(
        stderr.contains(&format!("config file {shown} holds the [monitor] password and can be read by every local user (mode 0644); run `chmod 600 {shown}`, or move the password to a password_file of mode 0600")),
        "{stderr}"
    );
    chmod(&with_monitor, 0o620);
    chmod(&s.pki.ca, 0o664);
    let (code, _, stderr) = portcullis(&["check"], &with_monitor);
    assert_eq!(code, Some(0), "{stderr}");
    let ca = s.pki.ca.display();
    assert!(!stderr.contains("holds the [monitor] password"), "{stderr}");
    assert!(
        stderr.contains(&format!("config file {shown} can be changed by its group (mode 0620), and whoever can change it decides what portcullis does; run `chmod go-w {shown}`")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("CA bundle {ca} can be changed by its group (mode 0664), and whoever can change it decides which client certificates are trusted; run `chmod go-w {ca}`")),
        "{stderr}"
    );

    // `run --help` says what SIGHUP reloads.
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("SIGHUP re-reads the config and the TLS material, applies each listener's failover settings and TLS section (certificates, keys, CAs, CRLs and their settings), and logs every other change as applying at the next hand-over"),
        "{help}"
    );
}
