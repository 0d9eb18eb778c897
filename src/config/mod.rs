//! The TOML configuration, as data: parsing, validation and the typed
//! result.
//!
//! Parsing is strict (unknown keys are errors, with their line). Parsing and
//! validation collect *every* problem they find, each with the file and
//! line it comes from, so `portcullis check` can print them all at once,
//! and return the warnings found (secret files others can read, a redirect
//! loop) for the caller to log: nothing here logs.
//!
//! This module imports nothing of the running proxy. TLS material is loaded
//! by the caller, through a [`MaterialCheck`] that validation asks at the
//! place where a load error belongs among the problems:
//! [`crate::preflight`] loads and keeps the material at start and for
//! `portcullis check`; a reload passes [`DeferMaterial`] and loads each
//! listener's material on its own.
//!
//! - `parse` — TOML text to `raw`, every refused key reported at once;
//! - `raw` — the file as written (serde structures with spans);
//! - `model` — the validated settings and their defaults;
//! - `values` — parsers for single values (durations, addresses, names);
//! - [`failover`] — the failover settings and their checks;
//! - [`identity`] — `[listener.identity]` rules and how a certificate matches them;
//! - `validate` — raw to model, one file per section;
//! - `problems` — problems with their line, and warnings.

use std::path::Path;

pub mod failover;
pub mod identity;
mod model;
mod parse;
mod prefix;
mod problems;
mod raw;
pub mod suites;
mod validate;
mod values;

pub use model::{
    default_workers, AdminConfig, BackendAddr, BackendConfig, BackendTlsConfig, CertRefusal,
    ClientAuth, Config, CrlExpired, CrlPolicy, CrlScope, ListenAddr, ListenerConfig, MonitorConfig,
    OnPrimaryChange, OnRevoke, Route, TlsConfig, TlsReloadConfig, TlsVersion, TopologyRoute,
    UnknownRevocation, DEFAULT_ADMIN_ADDRESS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EXPIRY_WARNING,
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKE_PACKET,
    DEFAULT_MAX_UNAUTHENTICATED, DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE, DEFAULT_MONITOR_INTERVAL,
    DEFAULT_PRIMARY_WAIT, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    DEFAULT_TLS_POLL_INTERVAL, MAX_WORKERS, MIN_ADMIN_TOKEN_LEN,
};
pub use prefix::IpPrefix;
pub use problems::{ConfigError, ConfigProblem, Warning};

pub use values::{parse_duration, read_admin_token, TokenError};

use problems::Problems;

/// Loads a TLS section's material for validation. Called once per section,
/// only where no problem was found before it (a listener: none in the whole
/// file so far; a backend: none in its own `[backend.tls]`), so that the
/// load error, if any, stands in the problem list exactly where it is read.
/// `index` is the section's listener or backend position in the file (and
/// in [`Config::listeners`] / [`Config::backends`]).
pub trait MaterialCheck {
    /// A listener's `[listener.tls]`; `Err` is the problem's message.
    fn listener_tls(&mut self, index: usize, tls: &TlsConfig) -> Result<(), String>;
    /// A backend's `[backend.tls]`; `Err` is the problem's message.
    fn backend_tls(&mut self, index: usize, tls: &BackendTlsConfig) -> Result<(), String>;
    /// Whether `run` could bind `addr` (a listener's or the admin API's)
    /// now. Not checked by default: a reload binds nothing, and `run`
    /// finds out by binding; `portcullis check` asks.
    fn listen_address(&mut self, _addr: &ListenAddr) -> Result<(), Unbindable> {
        Ok(())
    }
}

/// Why `run` could not bind a listen address now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbindable {
    /// Something listens there already. `holder` names it when it can be
    /// seen (`portcullis (pid 4242)`); `maybe_this_proxy` when it is a
    /// portcullis, or could not be seen: then it may be this proxy,
    /// already running, and that is no problem of the file.
    InUse {
        holder: Option<String>,
        maybe_this_proxy: bool,
    },
    /// Any other reason, as a phrase (`directory /run/portcullis does not
    /// exist`).
    Refused(String),
}

/// Loads nothing: TLS sections are only checked for the existence of their
/// files (which validation does anyway). For a reload, which loads and
/// applies each listener's material on its own, so that one listener's
/// broken certificate neither blocks the others nor the rest of the file.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeferMaterial;

impl MaterialCheck for DeferMaterial {
    fn listener_tls(&mut self, _: usize, _: &TlsConfig) -> Result<(), String> {
        Ok(())
    }

    fn backend_tls(&mut self, _: usize, _: &BackendTlsConfig) -> Result<(), String> {
        Ok(())
    }
}

/// What checking a config file found.
#[derive(Debug)]
#[must_use]
pub struct Checked {
    /// The validated config, or every problem found.
    pub result: Result<Config, ConfigError>,
    /// Found whether or not the config is valid, in the order found; for
    /// the caller to log.
    pub warnings: Vec<Warning>,
}

impl Config {
    /// Reads, parses and validates the file at `path`; relative paths in it
    /// resolve against its directory.
    pub fn read(path: &Path, material: &mut dyn MaterialCheck) -> Checked {
        match std::fs::read_to_string(path) {
            Ok(src) => {
                let base = path.parent().unwrap_or(Path::new("."));
                Config::check_toml(&src, path, base, material)
            }
            Err(e) => Checked {
                result: Err(ConfigError {
                    path: path.to_path_buf(),
                    problems: vec![ConfigProblem {
                        line: None,
                        message: format!("cannot read config file: {e}"),
                    }],
                }),
                warnings: Vec::new(),
            },
        }
    }

    /// Parses and validates `src` as if read from `path`; relative paths in
    /// it resolve against `base_dir`.
    pub fn check_toml(
        src: &str,
        path: &Path,
        base_dir: &Path,
        material: &mut dyn MaterialCheck,
    ) -> Checked {
        let fail = |problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        };
        let mut p = Problems::new(src);
        let config = parse::parse(src, &mut p).map(|raw| {
            p.parsing_done();
            validate::validate(raw, path, base_dir, material, &mut p)
        });
        Checked {
            result: match config {
                Some(config) if p.list.is_empty() => Ok(config),
                _ => Err(fail(p.list)),
            },
            warnings: p.warnings,
        }
    }
}

#[cfg(test)]
mod tests;
