//! From the file as written to the typed config, one section at a time.
//!
//! The order of the checks is the order of `portcullis check`'s output:
//! top-level settings, then every `[[backend]]`, every `[[listener]]`,
//! `[admin]`, `[monitor]` and `[tls_reload]`, each in file order, and last
//! (when the caller tries them) whether each listen address can be bound
//! now. A value that fails gets its default (or a placeholder), so the
//! checks after it still run and every problem is reported at once.

mod admin;
mod backend;
mod failover;
mod identity;
mod listener;
mod monitor;
mod tls;

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::model::{
    default_workers, Config, ListenAddr, TlsReloadConfig, DEFAULT_EXPIRY_WARNING,
    DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TLS_POLL_INTERVAL, MAX_WORKERS,
};
use super::problems::{Problems, Warning};
use super::raw::{DurationText, RawConfig, RawTlsReload};
use super::values::parse_duration;
use super::{MaterialCheck, Unbindable};

/// Validates `raw`, read from `path`; relative paths resolve against `base`.
/// Problems and warnings go to `p`; the config returned is only meaningful
/// when there are no problems.
pub(super) fn validate(
    raw: RawConfig,
    path: &Path,
    base: &Path,
    material: &mut dyn MaterialCheck,
    p: &mut Problems<'_>,
) -> Config {
    warn_about_config_file(path, &raw, p);
    let shutdown_timeout = duration_or(&raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT, p);
    let workers = workers(&raw.workers, p);
    let control_socket = raw.control_socket.as_ref().and_then(|c| {
        super::values::control_socket_path(c.get_ref(), base)
            .map_err(|e| p.at(c.span(), format!("control_socket: {e}")))
            .ok()
    });
    let (backends, backend_names) = backend::validate_backends(raw.backends, base, material, p);
    let known = listener::Known {
        backend_names: &backend_names,
        monitor: raw.monitor.is_some(),
    };
    let (listeners, listen_addrs, mut to_bind) =
        listener::validate_listeners(raw.listeners, &known, base, material, p);
    let admin_span = raw.admin.as_ref().map(|a| {
        a.get_ref()
            .address
            .as_ref()
            .map_or_else(|| a.span(), |s| s.span())
    });
    let before = p.count();
    let admin = raw
        .admin
        .map(|a| admin::validate_admin(a, &listen_addrs, base, p));
    if let (Some(a), Some(span), true) = (&admin, admin_span, p.count() == before) {
        to_bind.push(("[admin]".into(), a.address.clone(), span));
    }
    let monitor = raw.monitor.map(|m| monitor::validate_monitor(m, base, p));
    let tls_reload = raw.tls_reload.map(|r| tls_reload(r, p)).unwrap_or_default();
    // Last: whether the addresses can be bound now is not a matter of the
    // file, and must not keep any TLS material above from being loaded.
    for (what, addr, span) in to_bind {
        check_bindable(what, &addr, span, material, p);
    }
    Config {
        path: path.to_path_buf(),
        shutdown_timeout,
        workers,
        control_socket,
        backends,
        listeners,
        admin,
        tls_reload,
        monitor,
    }
}

fn workers(w: &Option<Spanned<i64>>, p: &mut Problems<'_>) -> usize {
    let Some(w) = w else {
        return default_workers();
    };
    match usize::try_from(*w.get_ref()) {
        Ok(n @ 1..=MAX_WORKERS) => n,
        _ => {
            p.at(
                w.span(),
                format!(
                    "workers = {} is out of range: give 1 to {MAX_WORKERS} session worker threads, or leave it out for one per two CPUs",
                    w.get_ref()
                ),
            );
            1
        }
    }
}

fn tls_reload(r: Spanned<RawTlsReload>, p: &mut Problems<'_>) -> TlsReloadConfig {
    let r = r.into_inner();
    TlsReloadConfig {
        poll_interval: duration_or(&r.poll_interval, DEFAULT_TLS_POLL_INTERVAL, p),
        expiry_warning: duration_or(&r.expiry_warning, DEFAULT_EXPIRY_WARNING, p),
    }
}

/// Asks the caller whether `addr` (`what`'s: a listener's, the admin API's)
/// could be bound now: a problem at `span` if not, a warning when it is in
/// use maybe by this proxy itself.
fn check_bindable(
    what: String,
    addr: &ListenAddr,
    span: Range<usize>,
    material: &mut dyn MaterialCheck,
    p: &mut Problems<'_>,
) {
    match material.listen_address(addr) {
        Ok(()) => {}
        Err(Unbindable::InUse {
            holder,
            maybe_this_proxy: true,
        }) => p.warn(Warning::AddressInUse {
            what,
            address: addr.to_string(),
            holder,
        }),
        Err(Unbindable::InUse { holder, .. }) => p.at(
            span,
            format!(
                "cannot listen on {addr}: it is in use by {}",
                holder.as_deref().unwrap_or("another process")
            ),
        ),
        Err(Unbindable::Refused(why)) => p.at(span, format!("cannot listen on {addr}: {why}")),
    }
}

/// The value of an optional key, without its position.
fn value<T: Copy>(o: &Option<Spanned<T>>) -> Option<T> {
    o.as_ref().map(|v| *v.get_ref())
}

/// An optional duration key: its value, or `default` when absent (and, with
/// a problem, when invalid).
fn duration_or(
    v: &Option<Spanned<DurationText>>,
    default: Duration,
    p: &mut Problems<'_>,
) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(&s.get_ref().0) {
            Ok(d) => d,
            Err(e) => {
                p.at(s.span(), e);
                default
            }
        },
    }
}

/// Warns when the file at `path` (a `what`, which decides `controls`) can
/// be changed by its group or others. Silent when it cannot be examined
/// (the load that needs it reports that).
fn warn_if_writable(path: &Path, what: &'static str, controls: &'static str, p: &mut Problems<'_>) {
    if let Ok(Some(mode)) = crate::perm::writable_mode(path) {
        p.warn(Warning::Writable {
            what,
            controls,
            path: path.to_path_buf(),
            mode,
        });
    }
}

/// The config file's own warnings: others can change it, or read the
/// `[monitor]` password written in it.
fn warn_about_config_file(path: &Path, raw: &RawConfig, p: &mut Problems<'_>) {
    warn_if_writable(path, "config file", "what portcullis does", p);
    let inline_password = raw
        .monitor
        .as_ref()
        .is_some_and(|m| m.get_ref().password.is_some());
    if inline_password {
        if let Ok(Some(mode)) = crate::perm::readable_mode(path) {
            p.warn(Warning::InlinePassword {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
}

/// Warns when the secret file at `path` (a `what`) can be read or changed
/// by its group or others. A file that cannot be examined is reported
/// elsewhere (the load that needs it fails), so that is silent here.
fn warn_if_exposed(path: &Path, what: &'static str, p: &mut Problems<'_>) {
    if let Ok(Some(mode)) = crate::perm::loose_mode(path) {
        p.warn(Warning::ExposedSecret {
            what,
            path: path.to_path_buf(),
            mode,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::*;

    #[test]
    fn warnings_are_returned_in_the_order_found_valid_or_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let loose = |name: &str, content: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let key = loose("k.pem", "", 0o644);
        let token = loose("admin.token", "0123456789abcdef0123\n", 0o640);
        let pw = loose("mon.pw", "pw\n", 0o604);
        for f in ["c.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let src = |extra: &str| {
            format!(
                r#"[monitor]
user = "mon"
password_file = "mon.pw"
[[backend]]
name = "b"
address = "127.0.0.1:3306"
[[listener]]
name = "l"
address = "127.0.0.1:3307"
route = "b"
failover = "on"
failover_target = "localhost:3307"
[listener.tls]
cert = "c.pem"
key = "k.pem"
ca = "ca.pem"
[admin]
token_file = "admin.token"
{extra}"#
            )
        };
        let checked = |extra: &str| {
            Config::check_toml(
                &src(extra),
                Path::new("test.toml"),
                dir.path(),
                &mut DeferMaterial,
            )
        };
        let want = vec![
            Warning::ExposedSecret {
                what: "TLS private key",
                path: key,
                mode: 0o644,
            },
            Warning::RedirectLoop {
                listener: "l".into(),
                target: "localhost:3307".into(),
            },
            Warning::ExposedSecret {
                what: "admin token file",
                path: token,
                mode: 0o640,
            },
            Warning::ExposedSecret {
                what: "monitor password file",
                path: pw,
                mode: 0o604,
            },
        ];
        let ok = checked("");
        assert!(ok.result.is_ok(), "{:?}", ok.result);
        assert_eq!(ok.warnings, want);
        let bad = checked("address = \"nowhere\"\n");
        assert!(bad.result.is_err());
        assert_eq!(bad.warnings, want, "warnings come with problems too");
    }

    /// Files that decide what is trusted (CA bundles, CRL files and
    /// directories, the config file) are warned about when others can
    /// write them; the config file also when others can read the
    /// `[monitor]` password written in it. Read bits alone are fine there.
    #[test]
    fn writable_trust_files_and_a_readable_inline_password_are_warned_about() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        file("c.pem", 0o666); // a certificate: not a trust decision
        file("k.pem", 0o600);
        let ca = file("ca.pem", 0o664);
        file("crl.pem", 0o644); // readable by all: fine for a CRL
        let backend_ca = file("db-ca.pem", 0o646);
        let crl_dir = dir.path().join("crl.d");
        std::fs::create_dir(&crl_dir).unwrap();
        std::fs::set_permissions(&crl_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let in_dir = crl_dir.join("a.crl");
        std::fs::write(&in_dir, "").unwrap();
        std::fs::set_permissions(&in_dir, std::fs::Permissions::from_mode(0o620)).unwrap();
        std::fs::write(crl_dir.join("README"), "").unwrap();
        std::fs::set_permissions(
            crl_dir.join("README"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let config = dir.path().join("p.toml");
        std::fs::write(
            &config,
            r#"[monitor]
user = "mon"
password = "inline"
[[backend]]
name = "b"
address = "127.0.0.1:3306"
[backend.tls]
ca = "db-ca.pem"
[[listener]]
name = "l"
address = "127.0.0.1:3307"
route = "b"
[listener.tls]
cert = "c.pem"
key = "k.pem"
ca = "ca.pem"
crl = ["crl.pem", "crl.d"]
"#,
        )
        .unwrap();
        let warnings = |mode: u32| {
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
            let checked = Config::read(&config, &mut DeferMaterial);
            assert!(checked.result.is_ok(), "{:?}", checked.result);
            checked.warnings
        };
        let trust = vec![
            Warning::Writable {
                what: "CA bundle",
                controls: "which backend certificates are trusted",
                path: backend_ca,
                mode: 0o646,
            },
            Warning::Writable {
                what: "CA bundle",
                controls: "which client certificates are trusted",
                path: ca,
                mode: 0o664,
            },
            Warning::Writable {
                what: "CRL directory",
                controls: "which certificates are revoked",
                path: crl_dir,
                mode: 0o777,
            },
            Warning::Writable {
                what: "CRL file",
                controls: "which certificates are revoked",
                path: in_dir,
                mode: 0o620,
            },
        ];
        assert_eq!(warnings(0o600), trust, "crl.pem (0644) is fine");
        let mut want = vec![Warning::InlinePassword {
            path: config.clone(),
            mode: 0o640,
        }];
        want.extend(trust.iter().cloned());
        assert_eq!(warnings(0o640), want);
        let mut want = vec![
            Warning::Writable {
                what: "config file",
                controls: "what portcullis does",
                path: config.clone(),
                mode: 0o666,
            },
            Warning::InlinePassword {
                path: config.clone(),
                mode: 0o666,
            },
        ];
        want.extend(trust.iter().cloned());
        assert_eq!(warnings(0o666), want);
    }
}
