//! The check before serving, shared by `portcullis check`, `portcullis run`
//! and the tests' in-process proxy: read and validate the config, load every
//! listener's and backend's TLS material **once**, and log the warnings.
//!
//! A TLS load error is a config problem like any other: [`crate::config`]
//! asks for each section's material at the place in its checks where the
//! error belongs (so `check` prints it in file order among the others), and
//! the material built here is what [`Proxy::bind`](crate::Proxy::bind)
//! serves.
//! A reload validates with [`load_deferring_tls`] instead and loads each
//! listener's material on its own.
//!
//! `portcullis check` ([`Preflight::check`]) also tries to bind every
//! listen address and releases it at once, so that it finds what `run`
//! would hit before serving; an address in use is a warning when the
//! holder may be this proxy, already running (`holder` finds who it is).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{
    BackendTlsConfig, Checked, Config, ConfigError, ConfigProblem, DeferMaterial, ListenAddr,
    MaterialCheck, TlsConfig, Unbindable, Warning,
};
use crate::tls::{ClientTls, ServerTls};

mod holder;

/// A valid config and its TLS material, loaded and built.
pub struct Preflight {
    config: Config,
    material: Material,
}

/// The TLS material of a config, loaded and built.
pub struct Material {
    /// By position in the config's `listeners`: `Some` exactly where a
    /// `[listener.tls]` is configured.
    pub listeners: Vec<Option<ServerTls>>,
    /// By position in the config's `backends`: `Some` exactly where a
    /// `[backend.tls]` is configured.
    pub backends: Vec<Option<ClientTls>>,
}

impl Preflight {
    /// Reads and validates the file at `path`, loading its TLS material;
    /// logs the warnings (whether or not it is valid).
    pub fn load(path: &Path) -> Result<Preflight, ConfigError> {
        let mut loader = Loader::default();
        let checked = Config::read(path, &mut loader);
        loader.finish(checked)
    }

    /// `portcullis check`: like [`load`](Preflight::load), and also tries
    /// to bind every listen address (and releases it), so that what `run`
    /// would hit before serving is found: a missing socket directory, no
    /// permission, an address in use (a warning when the holder may be
    /// this proxy, already running).
    pub fn check(path: &Path) -> Result<Preflight, ConfigError> {
        let mut loader = Loader {
            probe: true,
            ..Loader::default()
        };
        let checked = Config::read(path, &mut loader);
        loader.finish(checked)
    }

    /// Like [`load`](Preflight::load), for `src` as if read from `path`;
    /// relative paths in it resolve against `base_dir`.
    pub fn from_toml(src: &str, path: &Path, base_dir: &Path) -> Result<Preflight, ConfigError> {
        let mut loader = Loader::default();
        let checked = Config::check_toml(src, path, base_dir, &mut loader);
        loader.finish(checked)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The config and its material, to serve them.
    pub fn into_parts(self) -> (Config, Material) {
        (self.config, self.material)
    }
}

/// Reads and validates the file at `path` without loading TLS material (a
/// reload loads and applies each listener's on its own, so that one broken
/// certificate neither blocks the others nor the rest of the file); logs
/// the warnings.
pub fn load_deferring_tls(path: &Path) -> Result<Config, ConfigError> {
    let checked = Config::read(path, &mut DeferMaterial);
    log_warnings(&checked.warnings);
    checked.result
}

/// Logs each warning as portcullis always has: the same text, fields and
/// log target (the module that used to log it), which log filters and
/// alerts may select on.
///
/// A warning about a file's mode is logged once per file and state: a
/// reload that finds the same file unchanged (mode, inode, size, times)
/// does not repeat it; a file that is fixed is forgotten, so that loosening
/// it again, or replacing it, is warned about again.
pub fn log_warnings(warnings: &[Warning]) {
    let fresh = {
        let mut logged = crate::sync::lock(&LOGGED);
        first_seen(&mut logged, warnings)
    };
    for w in fresh {
        match w {
            Warning::ExposedSecret { path, mode, .. }
            | Warning::Writable { path, mode, .. }
            | Warning::InlinePassword { path, mode } => tracing::warn!(
                target: "portcullis::perm",
                path = %path.display(),
                mode = %format!("{mode:04o}"),
                "{w}"
            ),
            Warning::AddressInUse { what, address, .. } => tracing::warn!(
                target: "portcullis::config",
                what = %what,
                address = %address,
                "{w}"
            ),
            Warning::RedirectLoop { listener, target } => tracing::warn!(
                target: "portcullis::config",
                listener = %listener,
                target = %target,
                "{w}"
            ),
            Warning::IdentityRuleUnmatchable { listener, rule, .. } => tracing::warn!(
                target: "portcullis::config",
                listener = %listener,
                rule,
                "{w}"
            ),
        }
    }
}

/// The file warnings logged in this process, by kind and file, with the
/// file's state when they were.
static LOGGED: std::sync::LazyLock<std::sync::Mutex<HashMap<(&'static str, PathBuf), FileState>>> =
    std::sync::LazyLock::new(Default::default);

/// What tells one version of a file from another: its mode, which file it
/// is, its size and its modification and change times (a chmod, a rewrite
/// and a replacement by rename each change one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    mode: u32,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileState {
    fn of(path: &Path) -> Option<FileState> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileState {
            mode: m.mode(),
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// The warnings of one config load that are to be logged: every warning not
/// about a file, and each file warning whose file changed since it was last
/// logged (or that was not logged before). File warnings this load did not
/// find are forgotten.
fn first_seen<'a>(
    logged: &mut HashMap<(&'static str, PathBuf), FileState>,
    warnings: &'a [Warning],
) -> Vec<&'a Warning> {
    let found: Vec<_> = warnings
        .iter()
        .map(|w| (w, w.file().map(|f| (w.label(), f.to_path_buf()))))
        .collect();
    logged.retain(|key, _| found.iter().any(|(_, k)| k.as_ref() == Some(key)));
    found
        .into_iter()
        .filter(|(_, key)| {
            let Some(key) = key else {
                return true;
            };
            let Some(state) = FileState::of(&key.1) else {
                return true;
            };
            logged.insert(key.clone(), state) != Some(state)
        })
        .map(|(w, _)| w)
        .collect()
}

/// The [`MaterialCheck`] that loads and keeps what it loaded, and, for
/// `check`, tries the listen addresses.
#[derive(Default)]
struct Loader {
    listeners: HashMap<usize, ServerTls>,
    backends: HashMap<usize, ClientTls>,
    /// Whether to try binding each listen address (`check`; `run` binds).
    probe: bool,
}

impl MaterialCheck for Loader {
    fn listener_tls(&mut self, index: usize, tls: &TlsConfig) -> Result<(), String> {
        let loaded = ServerTls::load(tls).map_err(|e| e.to_string())?;
        self.listeners.insert(index, loaded);
        Ok(())
    }

    fn backend_tls(&mut self, index: usize, tls: &BackendTlsConfig) -> Result<(), String> {
        let loaded = ClientTls::load(tls).map_err(|e| e.to_string())?;
        self.backends.insert(index, loaded);
        Ok(())
    }

    fn listen_address(&mut self, addr: &ListenAddr) -> Result<(), Unbindable> {
        if !self.probe {
            return Ok(());
        }
        crate::listener::probe(addr).map_err(|e| unbindable(addr, &e))
    }
}

/// Why binding `addr` failed with `e`, as `check` reports it.
fn unbindable(addr: &ListenAddr, e: &std::io::Error) -> Unbindable {
    use std::io::ErrorKind;
    if e.kind() == ErrorKind::AddrInUse {
        let holder = holder::holder(addr);
        return Unbindable::InUse {
            maybe_this_proxy: holder.as_ref().is_none_or(holder::Holder::is_portcullis),
            holder: holder.map(|h| h.to_string()),
        };
    }
    let why = match (addr, e.kind()) {
        (ListenAddr::Unix(path), ErrorKind::NotFound) => match path.parent() {
            Some(dir) => format!("directory {} does not exist", dir.display()),
            None => e.to_string(),
        },
        (ListenAddr::Unix(path), ErrorKind::PermissionDenied) => match path.parent() {
            Some(dir) => format!(
                "this user may not create a socket in {} ({e})",
                dir.display()
            ),
            None => e.to_string(),
        },
        (ListenAddr::Tcp(a), ErrorKind::PermissionDenied) if a.port() < 1024 => {
            format!("{e}: ports below 1024 need CAP_NET_BIND_SERVICE")
        }
        (ListenAddr::Tcp(a), ErrorKind::AddrNotAvailable) => {
            format!("{} is not an address of this machine ({e})", a.ip())
        }
        _ => e.to_string(),
    };
    Unbindable::Refused(why)
}

impl Loader {
    /// Identity rules whose `issuer_cn` names no CA of their listener's CA
    /// bundle or intermediates: no certificate the listener accepts could
    /// match them.
    fn identity_warnings(&self, config: &Config) -> Vec<Warning> {
        let mut found = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let (Some(rules), Some(tls)) = (
                l.tls.as_ref().and_then(|t| t.identity.as_ref()),
                self.listeners.get(&i),
            ) else {
                continue;
            };
            let cns: Vec<String> = tls
                .cas
                .iter()
                .chain(&tls.intermediates)
                .flat_map(|c| c.cn.iter().cloned())
                .collect();
            for (rule, pattern) in rules.unmatchable_issuers(&cns) {
                found.push(Warning::IdentityRuleUnmatchable {
                    listener: l.name.clone(),
                    rule,
                    why: format!(
                        "issuer_cn = {:?} is the CN of no CA in its CA bundle or intermediates ({})",
                        pattern.as_str(),
                        cns.join(", ")
                    ),
                });
            }
        }
        found
    }

    /// Logs the warnings (with the ones only the loaded material shows)
    /// and, for a valid config, hands over the material.
    fn finish(mut self, mut checked: Checked) -> Result<Preflight, ConfigError> {
        if let Ok(config) = &checked.result {
            checked.warnings.extend(self.identity_warnings(config));
        }
        log_warnings(&checked.warnings);
        let config = checked.result?;
        // Validation asks for every TLS section of a config it passes; a
        // section without material would be served without TLS, so its
        // absence is refused rather than trusted.
        let mut missing = Vec::new();
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let loaded = l.tls.as_ref().and_then(|_| self.listeners.remove(&i));
                if l.tls.is_some() && loaded.is_none() {
                    missing.push(format!("listener {:?}", l.name));
                }
                loaded
            })
            .collect();
        let backends = config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let loaded = b.tls.as_ref().and_then(|_| self.backends.remove(&i));
                if b.tls.is_some() && loaded.is_none() {
                    missing.push(format!("backend {:?}", b.name));
                }
                loaded
            })
            .collect();
        if !missing.is_empty() {
            return Err(ConfigError {
                path: config.path.clone(),
                problems: missing
                    .into_iter()
                    .map(|what| ConfigProblem {
                        line: None,
                        message: format!("{what}: TLS material was not loaded"),
                    })
                    .collect(),
            });
        }
        Ok(Preflight {
            config,
            material: Material {
                listeners,
                backends,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_file_warning_is_logged_once_per_file_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "one").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let exposed = Warning::ExposedSecret {
            what: "TLS private key",
            path: key.clone(),
            mode: 0o644,
        };
        let lp = Warning::RedirectLoop {
            listener: "l".into(),
            target: "localhost:3307".into(),
        };
        let mut logged = HashMap::new();
        // The same key named twice in one load: once.
        let w = [exposed.clone(), exposed.clone(), lp.clone()];
        assert_eq!(first_seen(&mut logged, &w), vec![&exposed, &lp]);
        // The next load (a reload) finds the file as it was: not again.
        assert_eq!(first_seen(&mut logged, &w), vec![&lp]);
        // Fixed: that load finds nothing to warn about, and forgets it...
        assert!(first_seen(&mut logged, &[]).is_empty());
        // ...so loosening it again is warned about again.
        assert_eq!(first_seen(&mut logged, &w[..1]), vec![&exposed]);
        assert!(first_seen(&mut logged, &w[..1]).is_empty());
        // Replaced by another file at the same path: warned about again.
        let new = dir.path().join("new.pem");
        std::fs::write(&new, "two, longer").unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&new, &key).unwrap();
        assert_eq!(first_seen(&mut logged, &w[..1]), vec![&exposed]);
        // The same file under another kind of warning is its own warning.
        let writable = Warning::Writable {
            what: "CA bundle",
            controls: "which client certificates are trusted",
            path: key,
            mode: 0o666,
        };
        assert_eq!(
            first_seen(&mut logged, &[exposed.clone(), writable.clone()]),
            vec![&writable]
        );
    }

    /// `check` finds what `run` would hit before serving: a socket
    /// directory that does not exist, an address another program holds.
    /// `load` (what `run` and reloads use) does not try.
    #[test]
    fn check_tries_the_listen_addresses_and_load_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let path = dir.path().join("p.toml");
        std::fs::write(
            &path,
            format!(
                r#"[[backend]]
name = "b"
address = "127.0.0.1:3306"
[[listener]]
name = "sock"
address = "unix:no-such-dir/p.sock"
route = "b"
[[listener]]
name = "tcp"
address = "127.0.0.1:{port}"
route = "b"
[[listener]]
name = "free"
address = "unix:free.sock"
route = "b"
"#
            ),
        )
        .unwrap();
        let Err(e) = Preflight::check(&path) else {
            panic!("check passed");
        };
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let found: Vec<_> = e.lines().collect();
        assert_eq!(
            found,
            vec![
                format!(
                    "{}:6: cannot listen on unix:{}: directory {} does not exist",
                    path.display(),
                    dir.path().join("no-such-dir/p.sock").display(),
                    dir.path().join("no-such-dir").display()
                ),
                format!(
                    "{}:10: cannot listen on 127.0.0.1:{port}: it is in use by {} (pid {})",
                    path.display(),
                    me.trim_end(),
                    std::process::id()
                ),
            ]
        );
        assert!(!dir.path().join("free.sock").exists());
        assert!(Preflight::load(&path).is_ok());
    }
}
