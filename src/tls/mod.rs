//! TLS material: loading certificates, keys, CA bundles and CRLs from PEM
//! files, building the rustls server and client configs, and reading the
//! peer identity.
//!
//! One crypto provider (aws-lc-rs, [`provider`]) is used for the whole
//! process; it is passed explicitly so nothing depends on a process-wide
//! default.
//!
//! - [`files`] — reading watched files safely, and the poll's memo of them;
//! - [`material`] — the files of a TLS section, read once, and their digest;
//! - [`server`] — a listener's [`ServerTls`] (inbound, client certificates);
//! - [`client`] — a backend's [`ClientTls`] (outbound);
//! - `anchors` — the `ca` bundle as trust anchors, never outside their
//!   validity; `trust` — a listener's roots, intermediates and CRLs, checked
//!   together; `verifier` — the verifiers installed in rustls;
//! - `crl` — checking one CRL, and the order of an issuer's CRLs;
//! - [`identity`] — what status, metrics and logs show of a certificate or CRL;
//! - [`failure`] — why a handshake failed, as a [`TlsFailure`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod anchors;
pub mod client;
mod crl;
pub mod digest;
pub mod failure;
pub mod files;
pub mod identity;
pub mod material;
pub mod server;
mod trust;
mod verifier;

pub use anchors::AnchorOutsideValidity;
pub use client::ClientTls;
pub use failure::{error_reason, failure_reason, Peer, TlsFailure};
pub use files::FileMemo;
pub use identity::{CertInfo, CrlInfo};
pub use material::{load_certs, load_key, Digest, Material, Sources};
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
}

fn invalid(path: &Path, what: impl fmt::Display) -> TlsLoadError {
    TlsLoadError::Invalid {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}
