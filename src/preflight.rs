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
use std::path::Path;

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
pub fn log_warnings(warnings: &[Warning]) {
    for w in warnings {
        match w {
            Warning::ExposedSecret { path, mode, .. } => tracing::warn!(
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
