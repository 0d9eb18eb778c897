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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{
    BackendTlsConfig, Checked, Config, ConfigError, ConfigProblem, DeferMaterial, MaterialCheck,
    TlsConfig, Warning,
};
use crate::tls::{ClientTls, ServerTls};

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
            Warning::RedirectLoop { listener, target } => tracing::warn!(
                target: "portcullis::config",
                listener = %listener,
                target = %target,
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

/// The [`MaterialCheck`] that loads and keeps what it loaded.
#[derive(Default)]
struct Loader {
    listeners: HashMap<usize, ServerTls>,
    backends: HashMap<usize, ClientTls>,
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
}

impl Loader {
    /// Logs the warnings and, for a valid config, hands over the material.
    fn finish(mut self, checked: Checked) -> Result<Preflight, ConfigError> {
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
}
