//! TLS material: loading certificates, keys, CA bundles and CRLs from PEM
//! files, building the rustls server and client configs, and reading the
//! peer identity.
//!
//! One crypto provider (aws-lc-rs, [`provider`]) is used for the whole
//! process; it is passed explicitly so nothing depends on a process-wide
//! default.
//!
//! - [`material`] — the files of a TLS section, read once, and their digest;
//! - [`server`] — a listener's [`ServerTls`] (inbound, client certificates);
//! - [`client`] — a backend's [`ClientTls`] (outbound);
//! - [`crl`] — checking a CRL against the CA bundle;
//! - [`identity`] — what status, metrics and logs show of a certificate or CRL;
//! - [`failure`] — why a handshake failed, as a [`TlsFailure`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod client;
mod crl;
pub mod failure;
pub mod identity;
pub mod material;
pub mod server;

pub use client::ClientTls;
pub use failure::{error_reason, failure_reason, Peer, TlsFailure};
pub use identity::{CertInfo, CrlInfo};
pub use material::{load_certs, load_key, Digest, Material};
pub use server::ServerTls;

/// The crypto provider for every TLS config portcullis builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Why TLS material could not be loaded. Always names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("certificate {cert} and key {key} do not belong together: {source}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the client certificate verifier from {ca}: {source}")]
    Verifier {
        ca: PathBuf,
        source: rustls::server::VerifierBuilderError,
    },
}

fn invalid(path: &Path, what: impl fmt::Display) -> TlsLoadError {
    TlsLoadError::Invalid {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}
