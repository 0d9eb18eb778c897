//! What a reload cannot apply: the differences between the config the
//! proxy runs with and the file, outside what a reload changes (each
//! listener's failover settings and the content of its TLS section).
//!
//! Each of them applies at the next hand-over (`portcullis run --take-over`,
//! docs/design.md "Hand-over") or restart; the report names them so that an
//! operator never takes "reload done" for "the file is in force".

use std::fmt::Display;
use std::time::Duration;

use serde::Serialize;

use crate::config::{BackendConfig, Config, ListenerConfig, OnPrimaryChange};

/// One change in the file that the running proxy did not take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotApplied {
    /// The setting: `listener "public" address`, `workers`, `[monitor] user`.
    pub what: String,
    /// What changed and why it is not in force: `changed from
    /// 127.0.0.1:3307 to 127.0.0.1:3308; applies at the next hand-over`.
    pub why: String,
}

impl NotApplied {
    pub(super) fn new(what: impl Into<String>, why: impl Into<String>) -> NotApplied {
        NotApplied {
            what: what.into(),
            why: why.into(),
        }
    }
}

/// The sentence every changed value gets.
fn changed(from: impl Display, to: impl Display) -> String {
    format!("changed from {from} to {to}; applies at the next hand-over")
}

/// Every difference between `running` and `new` that a reload does not
/// apply, in the file's order: top-level settings, backends, listeners,
/// `[admin]`, `[monitor]`, `[tls_reload]`. Whether TLS is on or off for a
/// running listener or backend is reported by the TLS part of the reload.
pub fn not_applied(running: &Config, new: &Config) -> Vec<NotApplied> {
    let mut out = Vec::new();
    top_level(running, new, &mut out);
    backends(running, new, &mut out);
    listeners(running, new, &mut out);
    admin_section(running, new, &mut out);
    monitor_section(running, new, &mut out);
    tls_reload_section(running, new, &mut out);
    out
}

/// Top-level keys: `shutdown_timeout`, `workers`, `control_socket`.
fn top_level(running: &Config, new: &Config, out: &mut Vec<NotApplied>) {
    let mut value = |what: &str, from: String, to: String| {
        if from != to {
            out.push(NotApplied::new(what, changed(from, to)));
        }
    };
    value(
        "shutdown_timeout",
        duration_text(running.shutdown_timeout),
        duration_text(new.shutdown_timeout),
    );
    value(
        "workers",
        running.workers.to_string(),
        new.workers.to_string(),
    );
    if running.control_socket != new.control_socket {
        out.push(NotApplied::new(
            "control_socket",
            format!(
                "changed from {} to {}; a take-over would look for this process there, where it does not listen: moving it needs a restart",
                path_text(&running.control_socket),
                path_text(&new.control_socket)
            ),
        ));
    }
}

/// Backends added to or removed from the file, and changed ones.
fn backends(running: &Config, new: &Config, out: &mut Vec<NotApplied>) {
    for b in &new.backends {
        match running.backend(&b.name) {
            Some(old) => backend(old, b, out),
            None => out.push(NotApplied::new(
                format!("backend {:?}", b.name),
                "new in the file; applies at the next hand-over (until then no listener can route to it)",
            )),
        }
    }
    for b in &running.backends {
        if new.backend(&b.name).is_none() {
            out.push(NotApplied::new(
                format!("backend {:?}", b.name),
                "no longer in the file; the running listeners keep using it until the next hand-over",
            ));
        }
    }
}

/// Listeners added to or removed from the file, and changed ones.
fn listeners(running: &Config, new: &Config, out: &mut Vec<NotApplied>) {
    for l in &new.listeners {
        match running.listeners.iter().find(|r| r.name == l.name) {
            Some(old) => listener(old, l, out),
            None => out.push(NotApplied::new(
                format!("listener {:?}", l.name),
                format!(
                    "new in the file ({}); it is bound at the next hand-over",
                    l.address
                ),
            )),
        }
    }
    for l in &running.listeners {
        if !new.listeners.iter().any(|n| n.name == l.name) {
            out.push(NotApplied::new(
                format!("listener {:?}", l.name),
                format!(
                    "no longer in the file; it keeps serving on {} until the next hand-over",
                    l.address
                ),
            ));
        }
    }
}

fn admin_section(running: &Config, new: &Config, out: &mut Vec<NotApplied>) {
    match (&running.admin, &new.admin) {
        (Some(old), Some(a)) => {
            if old.address != a.address {
                out.push(NotApplied::new(
                    "[admin] address",
                    changed(&old.address, &a.address),
                ));
            }
            if old.token_file != a.token_file {
                out.push(NotApplied::new(
                    "[admin] token_file",
                    changed(path_text(&old.token_file), path_text(&a.token_file)),
                ));
            }
        }
        (None, Some(_)) => out.push(NotApplied::new(
            "[admin]",
            "added; the admin API starts at the next hand-over",
        )),
        (Some(_), None) => out.push(NotApplied::new(
            "[admin]",
            "removed; the admin API keeps serving until the next hand-over",
        )),
        (None, None) => {}
    }
}

fn monitor_section(running: &Config, new: &Config, out: &mut Vec<NotApplied>) {
    match (&running.monitor, &new.monitor) {
        (Some(old), Some(m)) => {
            if old.user != m.user {
                out.push(NotApplied::new(
                    "[monitor] user",
                    changed(format!("{:?}", old.user), format!("{:?}", m.user)),
                ));
            }
            if old.password != m.password {
                // Never the values.
                out.push(NotApplied::new(
                    "[monitor] password",
                    "changed; applies at the next hand-over",
                ));
            }
            if old.interval != m.interval {
                out.push(NotApplied::new(
                    "[monitor] interval",
                    changed(duration_text(old.interval), duration_text(m.interval)),
                ));
            }
        }
        (None, Some(_)) => out.push(NotApplied::new(
            "[monitor]",
            "added; the topology monitor starts at the next hand-over",
        )),
        (Some(_), None) => out.push(NotApplied::new(
            "[monitor]",
            "removed; the topology monitor keeps running until the next hand-over",
        )),
        (None, None) => {}
    }
}

fn tls_reload_section(running: &Config, new: &Config, out: &mut Vec<NotApplied>) {
    let (old, r) = (&running.tls_reload, &new.tls_reload);
    if old.poll_interval != r.poll_interval {
        out.push(NotApplied::new(
            "[tls_reload] poll_interval",
            changed(
                duration_text(old.poll_interval),
                duration_text(r.poll_interval),
            ),
        ));
    }
    if old.expiry_warning != r.expiry_warning {
        out.push(NotApplied::new(
            "[tls_reload] expiry_warning",
            changed(
                duration_text(old.expiry_warning),
                duration_text(r.expiry_warning),
            ),
        ));
    }
}

fn backend(old: &BackendConfig, b: &BackendConfig, out: &mut Vec<NotApplied>) {
    let what = |key: &str| format!("backend {:?} {key}", b.name);
    let mut value = |key: &str, from: String, to: String| {
        if from != to {
            out.push(NotApplied::new(what(key), changed(from, to)));
        }
    };
    value("address", old.address.to_string(), b.address.to_string());
    value(
        "connect_timeout",
        duration_text(old.connect_timeout),
        duration_text(b.connect_timeout),
    );
    value(
        "advertise",
        option_text(&old.advertise),
        option_text(&b.advertise),
    );
    value(
        "proxy_protocol",
        old.proxy_protocol.to_string(),
        b.proxy_protocol.to_string(),
    );
}

fn listener(old: &ListenerConfig, l: &ListenerConfig, out: &mut Vec<NotApplied>) {
    let what = |key: &str| format!("listener {:?} {key}", l.name);
    let mut value = |key: &str, from: String, to: String| {
        if from != to {
            out.push(NotApplied::new(what(key), changed(from, to)));
        }
    };
    value("address", old.address.to_string(), l.address.to_string());
    value("route", old.route.to_string(), l.route.to_string());
    value(
        "handshake_timeout",
        duration_text(old.handshake_timeout),
        duration_text(l.handshake_timeout),
    );
    value(
        "max_connections",
        old.max_connections.to_string(),
        l.max_connections.to_string(),
    );
    value(
        "max_handshake_packet",
        old.max_handshake_packet.to_string(),
        l.max_handshake_packet.to_string(),
    );
    value(
        "idle_timeout",
        duration_text(old.idle_timeout.unwrap_or_default()),
        duration_text(l.idle_timeout.unwrap_or_default()),
    );
    value("admin", old.admin.to_string(), l.admin.to_string());
    let prefixes = |v: &[crate::config::IpPrefix]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    value(
        "trusted_proxies",
        prefixes(&old.trusted_proxies),
        prefixes(&l.trusted_proxies),
    );
    value(
        "on_primary_change",
        primary_change_text(old.on_primary_change).into(),
        primary_change_text(l.on_primary_change).into(),
    );
    value(
        "primary_wait",
        duration_text(old.primary_wait),
        duration_text(l.primary_wait),
    );
    value(
        "max_replica_lag",
        old.max_replica_lag
            .map_or_else(|| "none".into(), duration_text),
        l.max_replica_lag
            .map_or_else(|| "none".into(), duration_text),
    );
}

fn primary_change_text(p: OnPrimaryChange) -> &'static str {
    match p {
        OnPrimaryChange::Close => "close",
        OnPrimaryChange::Keep => "keep",
    }
}

fn option_text(o: &Option<String>) -> String {
    o.as_deref()
        .map_or_else(|| "none".into(), |s| format!("{s:?}"))
}

fn path_text(p: &Option<std::path::PathBuf>) -> String {
    p.as_deref()
        .map_or_else(|| "none".into(), |p| p.display().to_string())
}

/// A duration as the config writes it: `"500ms"`, `"30s"`, `"5m"`, `"1h"`,
/// `"14d"` (the largest unit that divides it).
pub(super) fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("\"{ms}ms\"");
    }
    let s = ms / 1000;
    let (n, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(u, _)| s != 0 && s % u == 0)
        .map_or((s, "s"), |(u, unit)| (s / u, unit));
    format!("\"{n}{unit}\"")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::DeferMaterial;

    fn config(src: &str) -> Config {
        Config::check_toml(src, Path::new("p.toml"), Path::new("/"), &mut DeferMaterial)
            .result
            .unwrap()
    }

    const BASE: &str = r#"shutdown_timeout = "30s"
workers = 2
[[backend]]
name = "db"
address = "127.0.0.1:3306"
[[listener]]
name = "public"
address = "127.0.0.1:3307"
route = "db"
"#;

    #[test]
    fn the_same_file_and_what_a_reload_applies_are_no_difference() {
        let running = config(BASE);
        assert_eq!(not_applied(&running, &config(BASE)), vec![]);
        // Failover settings are applied by a reload.
        let failover = format!("{BASE}failover = \"on\"\nfailover_target = \"db2:3307\"\n");
        assert_eq!(not_applied(&running, &config(&failover)), vec![]);
    }

    #[test]
    fn every_change_a_reload_cannot_apply_is_named_with_its_values() {
        let running = config(BASE);
        let new = config(
            r#"shutdown_timeout = "5s"
workers = 2
[[backend]]
name = "db"
address = "127.0.0.1:3316"
connect_timeout = "500ms"
[[backend]]
name = "db2"
address = "127.0.0.1:3326"
[[listener]]
name = "public"
address = "127.0.0.1:3308"
route = "db2"
idle_timeout = "1h"
[[listener]]
name = "extra"
address = "127.0.0.1:3309"
route = "db"
[monitor]
user = "mon"
password = "pw"
[tls_reload]
poll_interval = "1m"
"#,
        );
        let found: Vec<_> = not_applied(&running, &new)
            .into_iter()
            .map(|n| format!("{}: {}", n.what, n.why))
            .collect();
        assert_eq!(
            found,
            vec![
                "shutdown_timeout: changed from \"30s\" to \"5s\"; applies at the next hand-over",
                "backend \"db\" address: changed from 127.0.0.1:3306 to 127.0.0.1:3316; applies at the next hand-over",
                "backend \"db\" connect_timeout: changed from \"5s\" to \"500ms\"; applies at the next hand-over",
                "backend \"db2\": new in the file; applies at the next hand-over (until then no listener can route to it)",
                "listener \"public\" address: changed from 127.0.0.1:3307 to 127.0.0.1:3308; applies at the next hand-over",
                "listener \"public\" route: changed from db to db2; applies at the next hand-over",
                "listener \"public\" idle_timeout: changed from \"0s\" to \"1h\"; applies at the next hand-over",
                "listener \"extra\": new in the file (127.0.0.1:3309); it is bound at the next hand-over",
                "[monitor]: added; the topology monitor starts at the next hand-over",
                "[tls_reload] poll_interval: changed from \"5s\" to \"1m\"; applies at the next hand-over",
            ]
        );
        // And back: what is gone is named too.
        let found: Vec<_> = not_applied(&new, &running)
            .into_iter()
            .map(|n| format!("{}: {}", n.what, n.why))
            .filter(|s| s.contains("no longer") || s.contains("removed"))
            .collect();
        assert_eq!(
            found,
            vec![
                "backend \"db2\": no longer in the file; the running listeners keep using it until the next hand-over",
                "listener \"extra\": no longer in the file; it keeps serving on 127.0.0.1:3309 until the next hand-over",
                "[monitor]: removed; the topology monitor keeps running until the next hand-over",
            ]
        );
    }

    #[test]
    fn a_changed_monitor_password_is_named_without_its_value() {
        let with = |pw: &str| {
            config(&format!(
                "{BASE}[monitor]\nuser = \"mon\"\npassword = \"{pw}\"\n"
            ))
        };
        let found = not_applied(&with("old-secret"), &with("new-secret"));
        assert_eq!(
            found,
            vec![NotApplied::new(
                "[monitor] password",
                "changed; applies at the next hand-over"
            )]
        );
    }

    #[test]
    fn trusted_proxies_apply_at_the_next_hand_over() {
        let lb = format!(
            "{BASE}accept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n"
        );
        let found: Vec<_> = not_applied(&config(BASE), &config(&lb))
            .into_iter()
            .map(|n| format!("{}: {}", n.what, n.why))
            .collect();
        assert_eq!(
            found,
            vec!["listener \"public\" trusted_proxies: changed from none to 10.0.0.0/8,::1/128; applies at the next hand-over"]
        );
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(duration_text(Duration::from_millis(500)), "\"500ms\"");
        assert_eq!(duration_text(Duration::ZERO), "\"0s\"");
        assert_eq!(duration_text(Duration::from_secs(90)), "\"90s\"");
        assert_eq!(duration_text(Duration::from_secs(300)), "\"5m\"");
        assert_eq!(duration_text(Duration::from_secs(14 * 86_400)), "\"14d\"");
    }
}
