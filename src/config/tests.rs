//! Validation as `portcullis check` reports it: values, defaults, and every
//! problem with its line. Configs are written as raw TOML strings, first
//! line first, so the line numbers asserted can be counted in the source.

use std::path::Path;
use std::time::Duration;

use super::values::host_of;
use super::*;

fn check(src: &str) -> Checked {
    Config::check_toml(
        src,
        Path::new("test.toml"),
        Path::new("/nonexistent"),
        &mut DeferMaterial,
    )
}

fn parse(src: &str) -> Result<Config, ConfigError> {
    check(src).result
}

#[test]
fn minimal_plaintext_unix_listener() {
    let c = parse(
        r#"
[[backend]]
name = "local"
address = "unix:/run/mysqld/mysqld.sock"

[[listener]]
name = "sock"
address = "unix:/tmp/p.sock"
route = "local"
"#,
    )
    .unwrap();
    assert_eq!(
        c.listeners[0].address,
        ListenAddr::Unix("/tmp/p.sock".into())
    );
    assert_eq!(
        c.backends[0].address,
        BackendAddr::Unix("/run/mysqld/mysqld.sock".into())
    );
    assert_eq!(c.listeners[0].handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT);
    assert_eq!(c.listeners[0].idle_timeout, None, "off by default");
    assert!(c.listeners[0].tls.is_none());
    assert_eq!(c.listeners[0].route, Route::Backend("local".into()));
    assert_eq!(c.listeners[0].route.to_string(), "local");
}

#[test]
fn idle_timeout_zero_means_off_and_bad_values_have_lines() {
    let with = |v: &str| {
        parse(&format!(
            r#"[[backend]]
name = "b"
address = "unix:/x"
[[listener]]
name = "l"
address = "unix:/tmp/l.sock"
route = "b"
idle_timeout = {v:?}
"#
        ))
    };
    assert_eq!(
        with("30m").unwrap().listeners[0].idle_timeout,
        Some(Duration::from_secs(1800))
    );
    assert_eq!(with("0s").unwrap().listeners[0].idle_timeout, None);
    let e = with("forever").unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].line, Some(8));
    assert!(e.problems[0].message.contains("invalid duration"), "{e}");
}

/// A minimal valid config with `line` at its top, on line 1.
fn with_top_level(line: &str) -> Result<Config, ConfigError> {
    parse(&format!(
        r#"{line}
[[backend]]
name = "b"
address = "unix:/x"
[[listener]]
name = "l"
address = "unix:/tmp/l.sock"
route = "b"
"#
    ))
}

#[test]
fn workers_default_to_the_cpus_and_out_of_range_values_have_lines() {
    let with = with_top_level;
    assert_eq!(with("").unwrap().workers, default_workers());
    assert!(default_workers() >= 1);
    assert_eq!(with("workers = 3").unwrap().workers, 3);
    for bad in ["workers = 0", "workers = -2", "workers = 1025"] {
        let e = with(bad).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{bad}: {e}");
        assert_eq!(e.problems[0].line, Some(1), "{bad}");
        assert!(e.problems[0].message.contains("out of range"), "{bad}: {e}");
    }
    let e = with(r#"workers = "2""#).unwrap_err();
    assert_eq!(e.problems[0].line, Some(1), "{e}");
}

#[test]
fn the_control_socket_is_off_by_default_and_a_path_relative_to_the_file() {
    let with = with_top_level;
    assert_eq!(with("").unwrap().control_socket, None);
    assert_eq!(
        with(r#"control_socket = "/run/p/control.sock""#)
            .unwrap()
            .control_socket,
        Some("/run/p/control.sock".into())
    );
    assert_eq!(
        with(r#"control_socket = "unix:c.sock""#)
            .unwrap()
            .control_socket,
        Some("/nonexistent/c.sock".into())
    );
    let long = format!(r#"control_socket = "/{}""#, "x".repeat(120));
    for bad in [r#"control_socket = """#, long.as_str()] {
        let e = with(bad).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{bad}: {e}");
        assert_eq!(e.problems[0].line, Some(1), "{bad}");
        assert!(
            e.problems[0].message.starts_with("control_socket: "),
            "{bad}: {e}"
        );
    }
}

#[test]
fn accept_proxy_protocol_needs_trusted_proxies_on_tcp() {
    let with = |address: &str, keys: &str| {
        check(&format!(
            "[[backend]]\nname = \"b\"\naddress = \"unix:/x\"\n[[listener]]\nname = \"l\"\naddress = {address:?}\nroute = \"b\"\n{keys}"
        ))
        .result
    };
    let ok = with(
        "127.0.0.1:0",
        "accept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
    )
    .unwrap();
    assert_eq!(
        ok.listeners[0].trusted_proxies,
        vec![
            IpPrefix::parse("10.0.0.0/8").unwrap(),
            IpPrefix::parse("::1").unwrap()
        ]
    );
    assert!(with("127.0.0.1:0", "").unwrap().listeners[0]
        .trusted_proxies
        .is_empty());
    for (address, keys, want, line) in [
        (
            "127.0.0.1:0",
            "accept_proxy_protocol = true\n",
            "needs trusted_proxies",
            Some(4),
        ),
        (
            "127.0.0.1:0",
            "trusted_proxies = [\"::1\"]\n",
            "accept_proxy_protocol is not true",
            Some(8),
        ),
        (
            "unix:/tmp/l.sock",
            "accept_proxy_protocol = true\ntrusted_proxies = [\"::1\"]\n",
            "needs a TCP listener",
            Some(9),
        ),
        (
            "127.0.0.1:0",
            "accept_proxy_protocol = true\ntrusted_proxies = []\n",
            "is empty",
            Some(9),
        ),
        (
            "127.0.0.1:0",
            "accept_proxy_protocol = true\ntrusted_proxies = [\"10.1.2.3/8\"]\n",
            "write 10.0.0.0/8",
            Some(9),
        ),
    ] {
        let e = with(address, keys).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{keys}: {e}");
        assert!(e.problems[0].message.contains(want), "{keys}: {e}");
        assert_eq!(e.problems[0].line, line, "{keys}: {e}");
    }
}

/// The problems of a TLS listener whose `[listener.tls]` (from line 9:
/// cert, key) ends with `tls` (from line 11). The files do not exist, so
/// every such config errs; tests look at which problems are reported.
fn tls_listener_problems(tls: &str) -> ConfigError {
    parse(&format!(
        r#"[[backend]]
name = "b"
address = "unix:/x"
[[listener]]
name = "l"
address = "[::1]:0"
route = "b"
[listener.tls]
cert = "c.pem"
key = "k.pem"
{tls}"#
    ))
    .unwrap_err()
}

#[test]
fn tls_policy_problems_name_their_line() {
    let with = |tls: &str| tls_listener_problems(&format!("client_auth = \"none\"\n{tls}"));
    let about = |e: &ConfigError, what: &str| {
        e.problems
            .iter()
            .find(|p| p.message.contains(what))
            .map(|p| (p.line, p.message.clone()))
    };
    let e = with("min_version = \"1.3\"\ncipher_suites = [\"TLS13_AES_128_GCM_SHA256\"]\n");
    assert_eq!(about(&e, "cipher"), None, "a valid policy: {e}");
    let e = with("cipher_suites = [\"TLS13_AES_128_GCM_SHA256\", \"AES128-SHA\"]\n");
    let (line, msg) = about(&e, "unknown cipher suite").expect("unknown name refused");
    assert_eq!(line, Some(12));
    assert!(
        msg.contains("valid names: TLS13_AES_256_GCM_SHA384"),
        "{msg}"
    );
    let e = with(
        "min_version = \"1.3\"\ncipher_suites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]\n",
    );
    let (line, _) = about(&e, "lists only TLS 1.2 suites").expect("nothing left at 1.3");
    assert_eq!(line, Some(13));
    let e = with("min_version = \"1.1\"\n");
    let (line, msg) = about(&e, "1.2").expect("unknown version refused");
    assert_eq!(line, Some(12));
    assert!(msg.contains("1.3"), "the accepted values are named: {msg}");
}

#[test]
fn cert_refusal_values_and_needs_client_auth() {
    let with = tls_listener_problems;
    // The files do not exist, so every config errs; what matters is
    // which problems are reported.
    let e = with(
        r#"client_auth = "none"
cert_refusal = "mysql_error"
"#,
    );
    assert!(
        e.problems.iter().any(|p| p
            .message
            .contains("cert_refusal = \"mysql_error\" but client_auth = \"none\"")),
        "{e}"
    );
    let e = with(
        r#"ca = "ca.pem"
cert_refusal = "mysql_error"
"#,
    );
    assert!(
        !e.problems
            .iter()
            .any(|p| p.message.contains("cert_refusal")),
        "{e}"
    );
    let e = with(
        r#"ca = "ca.pem"
cert_refusal = "err"
"#,
    );
    assert!(
        e.problems
            .iter()
            .any(|p| p.message.contains("tls_alert") && p.message.contains("mysql_error")),
        "the accepted values are named: {e}"
    );
}

#[test]
fn unknown_key_has_line() {
    let e = parse(
        r#"[[backend]]
name = "a"
address = "unix:/x"
adress = 1
"#,
    )
    .unwrap_err();
    assert_eq!(e.problems[0].line, Some(4));
    assert_eq!(
        e.problems[0].message,
        "unknown field `adress`, expected one of `name`, `address`, `connect_timeout`, `advertise`, `proxy_protocol`, `tls`"
    );
    // The typo does not hide the rest of the file's problems.
    assert_eq!(e.problems.len(), 2, "{e}");
    assert!(e.problems[1].message.starts_with("no [[listener]]"), "{e}");
}

#[test]
fn every_problem_is_reported_with_its_line() {
    let e = parse(
        r#"shutdown_timeout = "forever"
[[backend]]
name = "local"
address = "db:notaport"

[[listener]]
name = "public"
address = "[::]:3307"
route = "nowhere"
"#,
    )
    .unwrap_err();
    let lines: Vec<_> = e.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(1), Some(4), Some(9), Some(6)], "{e}");
    assert!(
        e.to_string()
            .contains("test.toml:9: route \"nowhere\" names no [[backend]]"),
        "{e}"
    );
    assert!(e.problems[3].message.contains("allow_plaintext"), "{e}");
}

#[test]
fn plaintext_on_public_address_needs_opt_in() {
    let src = |extra: &str| {
        format!(
            r#"[[backend]]
name = "b"
address = "127.0.0.1:3306"
[[listener]]
name = "l"
address = "0.0.0.0:3307"
route = "b"
{extra}"#
        )
    };
    assert!(parse(&src("")).is_err());
    assert!(parse(&src("allow_plaintext = true")).is_ok());
}

#[test]
fn missing_tls_files_are_named() {
    let e = parse(
        r#"[[backend]]
name = "b"
address = "[::1]:3306"
[[listener]]
name = "l"
address = "[::1]:3307"
route = "b"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
ca = "ca.pem"
"#,
    )
    .unwrap_err();
    assert_eq!(e.problems.len(), 3, "{e}");
    assert!(
        e.problems[0].message.contains("/nonexistent/server.pem"),
        "{e}"
    );
}

/// A backend and a listener on lines 1-7, then `admin`.
fn with_admin(admin: &str) -> String {
    format!(
        r#"[[backend]]
name = "b"
address = "127.0.0.1:3306"
[[listener]]
name = "l"
address = "127.0.0.1:3307"
route = "b"
{admin}"#
    )
}

#[test]
fn admin_is_off_without_a_section() {
    assert_eq!(parse(&with_admin("")).unwrap().admin, None);
}

#[test]
fn admin_defaults_to_loopback_9306() {
    let c = parse(&with_admin("[admin]\n")).unwrap();
    assert_eq!(
        c.admin,
        Some(AdminConfig {
            address: ListenAddr::Tcp("127.0.0.1:9306".parse().unwrap()),
            token_file: None,
            allowed_hosts: Vec::new(),
            socket: Default::default(),
        })
    );
}

#[test]
fn admin_accepts_loopback_and_unix_without_token() {
    for (text, want) in [
        ("[::1]:9306", ListenAddr::Tcp("[::1]:9306".parse().unwrap())),
        (
            "127.0.0.1:0",
            ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        ),
        (
            "unix:/run/portcullis/admin.sock",
            ListenAddr::Unix("/run/portcullis/admin.sock".into()),
        ),
    ] {
        let c = parse(&with_admin(&format!(
            r#"[admin]
address = "{text}"
"#
        )))
        .unwrap();
        assert_eq!(c.admin.unwrap().address, want, "{text}");
    }
}

#[test]
fn non_loopback_admin_needs_a_token() {
    // Lines: 1-7 backend and listener, 8 [admin], 9 address.
    let e = parse(&with_admin(
        r#"[admin]
address = "0.0.0.0:9306"
"#,
    ))
    .unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].line, Some(9), "{e}");
    assert!(
        e.to_string().starts_with(
            "test.toml:9: admin address 0.0.0.0:9306 is not loopback: anyone who reaches it"
        ),
        "{e}"
    );
    let e = parse(&with_admin(
        r#"[admin]
address = "[::]:9306"
"#,
    ))
    .unwrap_err();
    assert_eq!(e.problems[0].line, Some(9), "{e}");
}

#[test]
fn non_loopback_admin_with_a_token_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "0123456789abcdef0123\n").unwrap();
    let c = Config::check_toml(
        &with_admin(
            r#"[admin]
address = "0.0.0.0:9306"
token_file = "admin.token"
"#,
        ),
        Path::new("test.toml"),
        dir.path(),
        &mut DeferMaterial,
    )
    .result
    .unwrap();
    let admin = c.admin.unwrap();
    assert_eq!(admin.token_file, Some(dir.path().join("admin.token")));
    assert_eq!(
        read_admin_token(admin.token_file.as_ref().unwrap()).unwrap(),
        "0123456789abcdef0123"
    );
}

#[test]
fn admin_token_problems_have_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("short.token"), "secret\n").unwrap();
    let in_dir = |src: &str| {
        Config::check_toml(src, Path::new("test.toml"), dir.path(), &mut DeferMaterial)
            .result
            .unwrap_err()
    };
    // Unknown keys are refused first, with their line.
    let e = in_dir(&with_admin(
        r#"[admin]
token_file = "short.token"
[admin.extra]
"#,
    ));
    assert_eq!(e.problems[0].line, Some(10), "{e}");
    let e = in_dir(&with_admin(
        r#"[admin]
token_file = "short.token"
"#,
    ));
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].line, Some(9), "{e}");
    assert!(
        e.problems[0]
            .message
            .contains("at least 16 printable ASCII characters")
            && e.problems[0].message.contains("(found 6)"),
        "{e}"
    );
    let e = in_dir(&with_admin(
        r#"[admin]
token_file = "missing.token"
"#,
    ));
    assert_eq!(e.problems[0].line, Some(9), "{e}");
    assert!(
        e.problems[0]
            .message
            .starts_with("cannot read admin token file"),
        "{e}"
    );
}

#[test]
fn admin_address_problems_have_lines() {
    let e = parse(&with_admin(
        r#"[admin]
address = "localhost:9306"
"#,
    ))
    .unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].line, Some(9), "{e}");
    assert!(
        e.problems[0]
            .message
            .starts_with("invalid admin address \"localhost:9306\""),
        "{e}"
    );
    let e = parse(&with_admin(
        r#"[admin]
address = "127.0.0.1:3307"
"#,
    ))
    .unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(
        e.problems[0].message,
        "admin address 127.0.0.1:3307 is also a [[listener]] address"
    );
}

#[test]
fn backend_tls_needs_a_cert_key_pair_and_a_name_for_sockets() {
    let e = parse(
        r#"
[[backend]]
name = "a"
address = "db2.example.net:3307"
[backend.tls]
ca = "/nonexistent/ca.pem"
cert = "/nonexistent/client.pem"

[[backend]]
name = "b"
address = "unix:/run/b.sock"
[backend.tls]
ca = "/nonexistent/ca.pem"

[[listener]]
name = "l"
address = "unix:/tmp/l.sock"
route = "a"
"#,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains(":7: [backend.tls] cert needs key"), "{text}");
    assert!(
        text.contains("on a unix: backend needs server_name"),
        "{text}"
    );
    assert!(text.contains(":6: CA bundle /nonexistent/ca.pem"), "{text}");
    assert_eq!(host_of("db2.example.net:3307"), "db2.example.net");
    assert_eq!(host_of("[::1]:3307"), "::1");
    assert_eq!(host_of("10.0.0.1:3306"), "10.0.0.1");
}

#[test]
fn topology_routes_need_a_monitor_and_reserve_their_names() {
    let e = parse(
        r#"
[[backend]]
name = "primary"
address = "unix:/run/a.sock"
advertise = "[2001:db8::1]:3307"

[[listener]]
name = "rw"
address = "unix:/tmp/rw.sock"
route = "primary"
failover = "on"
failover_target = "primary"
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(":3: backend name \"primary\" is reserved"),
        "{e}"
    );
    assert!(
        e.contains(":5: advertise \"[2001:db8::1]:3307\" is an IPv6 literal"),
        "{e}"
    );
    assert!(
        e.contains(":10: route = \"primary\" follows the topology: it needs a [monitor] section"),
        "{e}"
    );
    assert!(
        e.contains(":12: failover_target = \"primary\" follows the topology"),
        "{e}"
    );

    let e = parse(
        r#"[monitor]
user = "mon"
interval = "0s"
[[backend]]
name = "a"
address = "unix:/x"
[[listener]]
name = "l"
address = "unix:/tmp/l.sock"
route = "replica"
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(":1: [monitor] needs password or password_file"),
        "{e}"
    );
    assert!(
        e.contains(":3: [monitor] interval must be more than zero"),
        "{e}"
    );

    let c = parse(
        r#"[monitor]
user = "mon"
password = "pw"
[[backend]]
name = "a"
address = "unix:/x"
[[listener]]
name = "l"
address = "unix:/tmp/l.sock"
route = "replica"
max_replica_lag = "30s"
on_primary_change = "keep"
"#,
    )
    .unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.route, Route::Topology(TopologyRoute::Replica));
    assert_eq!(l.route.name(), "replica");
    assert_eq!(l.max_replica_lag, Some(Duration::from_secs(30)));
    assert_eq!(l.on_primary_change, OnPrimaryChange::Keep);
    assert_eq!(l.primary_wait, DEFAULT_PRIMARY_WAIT);
    let m = c.monitor.as_ref().unwrap();
    assert_eq!(
        (m.user.as_str(), m.interval),
        ("mon", DEFAULT_MONITOR_INTERVAL)
    );
    assert!(!format!("{m:?}").contains("pw"), "no password in Debug");
}

/// "Every problem at once" holds for keys serde refuses too: a typo, a
/// bare number for a duration and a wrong enum value are each reported
/// with their line and serde's message, in line order, and the rest of the
/// file is still validated (here: a missing certificate file, a route to
/// nowhere).
#[test]
fn refused_keys_do_not_hide_the_other_problems() {
    let e = parse(
        r#"shutdown_timeout = 5
[[backend]]
name = "local"
adress = "unix:/x"
address = "unix:/run/mysqld/mysqld.sock"
[[listener]]
name = "public"
address = "[::1]:3307"
route = "nowhere"
failover = "sometimes"
[listener.tls]
cert = "server.pem"
key = "server-key.pem"
ca = "ca.pem"
crl_scope = "leaf"
[tls_reload]
poll_intervall = "5s"
"#,
    )
    .unwrap_err();
    let found: Vec<_> = e
        .problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some(1), "invalid type: integer `5`, expected a duration as a string: a number and a unit (ms, s, m, h, d), like \"5s\""),
            (Some(4), "unknown field `adress`, expected one of `name`, `address`, `connect_timeout`, `advertise`, `proxy_protocol`, `tls`"),
            (Some(10), "unknown variant `sometimes`, expected one of `off`, `on`, `all`"),
            (Some(17), "unknown field `poll_intervall`, expected `poll_interval` or `expiry_warning`"),
            (Some(9), "route \"nowhere\" names no [[backend]] (known: local)"),
            (Some(12), "certificate /nonexistent/server.pem: No such file or directory (os error 2)"),
            (Some(13), "private key /nonexistent/server-key.pem: No such file or directory (os error 2)"),
            (Some(14), "CA bundle /nonexistent/ca.pem: No such file or directory (os error 2)"),
        ],
        "{e}"
    );
}

/// A value validation needs cannot be set aside: a required key of the
/// wrong type is reported once (not again as "missing"), and validation,
/// which would only report its consequences, is skipped.
#[test]
fn a_refused_required_key_is_reported_once_and_nothing_follows_from_it() {
    let e = parse(
        r#"[[backend]]
name = 5
address = "unix:/x"
bogus = true
[[listener]]
name = "l"
address = "unix:/l.sock"
route = "b"
"#,
    )
    .unwrap_err();
    let found: Vec<_> = e
        .problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some(2), "invalid type: integer `5`, expected a string"),
            (Some(4), "unknown field `bogus`, expected one of `name`, `address`, `connect_timeout`, `advertise`, `proxy_protocol`, `tls`"),
        ],
        "{e}"
    );
    // A missing required key: reported at its table, nothing else.
    let e = parse(
        r#"[[backend]]
name = "b"
address = "unix:/x"
[[listener]]
name = "l"
address = "unix:/l.sock"
route = "b"
[listener.tls]
cert = "c.pem"
crl = ["a.pem", 3]
"#,
    )
    .unwrap_err();
    let found: Vec<_> = e
        .problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some(8), "missing field `key`"),
            (Some(10), "invalid type: integer `3`, expected a string"),
        ],
        "{e}"
    );
}

#[test]
fn a_syntax_error_is_one_problem_with_its_line() {
    let e = parse("[[backend]]\nname = \"b\"\naddress = \n").unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].line, Some(3), "{e}");
}

/// The issue's case: a typo in a required key (`adress`) and a missing
/// certificate file. The typo is reported once (serde's message, listing
/// the keys expected); its value stands in for `address`, so the file is
/// still validated as a whole.
#[test]
fn a_typo_of_a_required_key_stands_in_for_it() {
    let e = parse(
        r#"[[backend]]
name = "local"
adress = "unix:/run/mysqld/mysqld.sock"
[[listener]]
name = "public"
address = "[::1]:3307"
route = "local"
[listener.tls]
cert = "server.pem"
key = "/dev/null"
ca = "/dev/null"
"#,
    )
    .unwrap_err();
    let found: Vec<_> = e
        .problems
        .iter()
        .map(|p| (p.line, p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (Some(3), "unknown field `adress`, expected one of `name`, `address`, `connect_timeout`, `advertise`, `proxy_protocol`, `tls`"),
            (Some(9), "certificate /nonexistent/server.pem: No such file or directory (os error 2)"),
        ],
        "{e}"
    );
    // Too far from any missing key: the table cannot be validated.
    let e = parse(
        r#"[[backend]]
name = "local"
where = "unix:/run/mysqld/mysqld.sock"
[[listener]]
name = "public"
address = "[::1]:3307"
route = "local"
"#,
    )
    .unwrap_err();
    let lines: Vec<_> = e.problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(1), Some(3)], "{e}");
    assert_eq!(e.problems[0].message, "missing field `address`");
}

/// A listener `l` with `[listener.tls]` over existing (empty) files, then
/// `rest` (its identity section); checked without loading the material.
fn with_identity(tls_extra: &str, rest: &str) -> Checked {
    let dir = tempfile::tempdir().unwrap();
    for f in ["c.pem", "k.pem", "ca.pem"] {
        std::fs::write(dir.path().join(f), "").unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("k.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let src = format!(
        r#"[[backend]]
name = "b"
address = "unix:/x"
[[listener]]
name = "l"
address = "[::1]:0"
route = "b"
[listener.tls]
cert = "c.pem"
key = "k.pem"
ca = "ca.pem"
{tls_extra}{rest}"#
    );
    Config::check_toml(&src, Path::new("test.toml"), dir.path(), &mut DeferMaterial)
}

/// (line, message) of every problem.
fn problems(c: Checked) -> Vec<(Option<usize>, String)> {
    c.result
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| (p.line, p.message))
        .collect()
}

#[test]
fn identity_rules_are_read_in_order_with_their_keys() {
    use super::identity::{CertField, IdentityRules, Users};
    let c = with_identity(
        "",
        r#"[listener.identity]
[[listener.identity.rule]]
san_uri = "spiffe://example.org/ns/prod/sa/billing"
users = ["billing", "billing_ro"]
[[listener.identity.rule]]
cn = "replica-*"
issuer_cn = "Portcullis Test CA"
users = ["repl"]
[[listener.identity.rule]]
subject = "*"
users = ["*", "ignored"]
"#,
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let config = c.result.unwrap();
    let Some(IdentityRules::Rules(rules)) = &config.listeners[0].tls.as_ref().unwrap().identity
    else {
        panic!("rules expected");
    };
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules[0].pattern(CertField::SanUri).unwrap().as_str(),
        "spiffe://example.org/ns/prod/sa/billing"
    );
    assert_eq!(
        rules[0].users,
        Users::Only(vec!["billing".into(), "billing_ro".into()])
    );
    assert_eq!(rules[1].matchers.len(), 2);
    assert_eq!(rules[2].users, Users::Any);

    let c = with_identity("", "[listener.identity]\nusers = \"cn\"\n");
    let config = c.result.unwrap();
    assert_eq!(
        config.listeners[0].tls.as_ref().unwrap().identity,
        Some(IdentityRules::Cn)
    );
    // Without the section: no rules.
    let config = with_identity("", "").result.unwrap();
    assert_eq!(config.listeners[0].tls.as_ref().unwrap().identity, None);
}

#[test]
fn identity_rule_problems_have_lines() {
    // Unknown keys, in the section and in a rule.
    assert_eq!(
        problems(with_identity(
            "",
            "[listener.identity]\nusers = \"cn\"\nuser = \"x\"\n"
        )),
        [(
            Some(14),
            "unknown field `user`, expected `users` or `rule`".to_string()
        )]
    );
    let found = problems(with_identity(
        "",
        "[[listener.identity.rule]]\ncn = \"y\"\ncommon_name = \"x\"\nusers = [\"a\"]\n",
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, Some(14));
    assert!(
        found[0].1.starts_with("unknown field `common_name`"),
        "{found:?}"
    );
    // An empty user list, a rule with no key, an empty pattern.
    assert_eq!(
        problems(with_identity(
            "",
            r#"[[listener.identity.rule]]
cn = "app"
users = []
[[listener.identity.rule]]
users = ["app"]
[[listener.identity.rule]]
san_dns = ""
users = ["app"]
"#
        )),
        [
            (Some(14), "identity rule: users is empty, so the certificates it matches could log in as nobody; list the users (\"*\" for any)".to_string()),
            (Some(15), "identity rule has no key to match a certificate on: give at least one of cn, san_uri, san_dns, subject, issuer_cn".to_string()),
            (Some(18), "identity rule: san_dns is empty; give a value or a glob such as \"*\"".to_string()),
        ]
    );
    // The shortcut and rules together; another shortcut; nothing at all.
    assert_eq!(
        problems(with_identity(
            "",
            "[listener.identity]\nusers = \"cn\"\n[[listener.identity.rule]]\ncn = \"a\"\nusers = [\"a\"]\n"
        )),
        [(Some(13), "[listener.identity] has both users = \"cn\" and [[listener.identity.rule]]: use one or the other".to_string())]
    );
    let found = problems(with_identity(
        "",
        "[listener.identity]\nusers = \"san_uri\"\n",
    ));
    assert_eq!(found[0].0, Some(13));
    assert!(
        found[0].1.contains("the only shortcut is users = \"cn\""),
        "{found:?}"
    );
    assert_eq!(
        problems(with_identity("", "[listener.identity]\n")),
        [(
            Some(12),
            "[listener.identity] needs users = \"cn\" or at least one [[listener.identity.rule]]"
                .to_string()
        )]
    );
}

#[test]
fn identity_rules_need_required_client_certificates() {
    assert_eq!(
        problems(with_identity(
            "client_auth = \"optional\"\n",
            "[listener.identity]\nusers = \"cn\"\n"
        )),
        [(Some(13), "[listener.identity] needs client_auth = \"required\" (it is \"optional\"): a client without a certificate would have no identity to check".to_string())]
    );
    let e = parse(
        r#"[[backend]]
name = "b"
address = "unix:/x"
[[listener]]
name = "l"
address = "unix:/tmp/l.sock"
route = "b"
[listener.identity]
users = "cn"
"#,
    )
    .unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].line, Some(8));
    assert!(
        e.problems[0].message.starts_with(
            "[listener.identity] needs [listener.tls] with client_auth = \"required\""
        ),
        "{e}"
    );
}

#[test]
fn an_identity_rule_an_earlier_one_always_decides_is_a_warning() {
    let c = with_identity(
        "",
        r#"[[listener.identity.rule]]
cn = "replica-*"
users = ["repl"]
[[listener.identity.rule]]
cn = "replica-*"
issuer_cn = "Other CA"
users = ["root"]
"#,
    );
    assert_eq!(
        c.warnings,
        [Warning::IdentityRuleUnmatchable {
            listener: "l".into(),
            rule: 2,
            why: "rule 1 matches every certificate this one does, and comes first".into(),
        }]
    );
    assert!(c.result.is_ok(), "only a warning");
}
