//! TLS material: loading certificates, keys, CA bundles and CRLs from PEM
//! files, building the rustls server config, and reading the peer identity.
//!
//! One crypto provider (ring) is used for the whole process; it is passed
//! explicitly so nothing depends on a process-wide default.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::{ClientAuth, TlsConfig};

/// The crypto provider for every TLS config portcullis builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

fn read(path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    std::fs::read(path).map_err(|source| TlsLoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate in a PEM file; at least one must be present.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let data = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "contains no CERTIFICATE block"));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| invalid(path, format!("certificate does not parse: {e}")))?;
    }
    Ok(certs)
}

/// Reads one private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
    let data = read(path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            invalid(path, "contains no PRIVATE KEY block")
        }
        e => invalid(path, format!("bad private key PEM: {e}")),
    })
}

/// Reads CRLs from files and from directories of `*.pem` / `*.crl` files
/// (sorted by name, so loading order is stable).
pub fn load_crls(
    paths: &[PathBuf],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsLoadError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| TlsLoadError::Read {
            path: path.clone(),
            source,
        })?;
        let files = if meta.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| TlsLoadError::Read {
                    path: path.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "pem" || e == "crl") && p.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![path.clone()]
        };
        for f in files {
            let data = read(&f)?;
            let crls = CertificateRevocationListDer::pem_slice_iter(&data)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(&f, format!("bad CRL PEM: {e}")))?;
            if crls.is_empty() {
                return Err(invalid(&f, "contains no X509 CRL block"));
            }
            for c in &crls {
                x509_parser::parse_x509_crl(c)
                    .map_err(|e| invalid(&f, format!("CRL does not parse: {e}")))?;
            }
            out.extend(crls);
        }
    }
    Ok(out)
}

/// A listener's loaded TLS state: the rustls config plus what was loaded,
/// for status and logs.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The certificate in service (leaf).
    pub leaf: CertInfo,
    /// The CRLs client certificates are checked against, in load order.
    pub crls: Vec<CrlInfo>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("leaf", &self.leaf)
            .field("crls", &self.crls)
            .finish()
    }
}

impl ServerTls {
    /// Reads, parses and validates everything, then builds one whole config.
    pub fn load(cfg: &TlsConfig) -> Result<ServerTls, TlsLoadError> {
        let provider = provider();
        let chain = load_certs(&cfg.cert)?;
        let key = load_key(&cfg.key)?;
        let leaf = CertInfo::from_der(&chain[0]).map_err(|e| invalid(&cfg.cert, e))?;

        let mut crl_info = Vec::new();
        let verifier = match cfg.client_auth {
            ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
            auth => {
                let ca_path = cfg
                    .ca
                    .as_ref()
                    .ok_or_else(|| invalid(&cfg.cert, "client_auth needs a `ca`"))?;
                let mut roots = RootCertStore::empty();
                for c in load_certs(ca_path)? {
                    roots.add(c).map_err(|e| {
                        invalid(ca_path, format!("not a usable CA certificate: {e}"))
                    })?;
                }
                let crls = load_crls(&cfg.crl)?;
                crl_info = crls
                    .iter()
                    .map(|c| CrlInfo::from_der(c))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(ca_path, e))?;
                let mut b =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .with_crls(crls)
                        // rustls accepts CRLs past their next-update by default; a
                        // stale CRL may miss recent revocations, so refuse it.
                        .enforce_revocation_expiration();
                if auth == ClientAuth::Optional {
                    b = b.allow_unauthenticated();
                }
                b.build().map_err(|source| TlsLoadError::Verifier {
                    ca: ca_path.clone(),
                    source,
                })?
            }
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| invalid(&cfg.cert, e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|source| TlsLoadError::KeyMismatch {
                cert: cfg.cert.clone(),
                key: cfg.key.clone(),
                source,
            })?;
        // Clients never send ALPN for the MySQL protocol; nothing to set.
        config.max_early_data_size = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            leaf,
            crls: crl_info,
        })
    }
}

/// Identity fields of a certificate, for logs, status and identity rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Serial number as lowercase hex without separators.
    pub serial: String,
    /// Not-after as seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let (_, c) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate does not parse: {e}"))?;
        Ok(CertInfo {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            serial: c.raw_serial_as_string().replace(':', ""),
            not_after: c.validity().not_after.timestamp(),
        })
    }
}

/// What status and metrics show of a loaded CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    pub issuer: String,
    /// thisUpdate as seconds since the Unix epoch.
    pub this_update: i64,
    /// nextUpdate as seconds since the Unix epoch (optional in X.509).
    pub next_update: Option<i64>,
    /// How many certificates it revokes.
    pub revoked: usize,
}

impl CrlInfo {
    pub fn from_der(der: &[u8]) -> Result<CrlInfo, String> {
        let (_, crl) =
            x509_parser::parse_x509_crl(der).map_err(|e| format!("CRL does not parse: {e}"))?;
        Ok(CrlInfo {
            issuer: crl.issuer().to_string(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked: crl.iter_revoked_certificates().count(),
        })
    }
}

/// A stable label for why a TLS handshake failed, as used in logs and the
/// `reason` label of the TLS failure metric.
pub fn failure_reason(err: &io::Error) -> &'static str {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            io::ErrorKind::UnexpectedEof => "client_closed",
            io::ErrorKind::TimedOut => "timeout",
            _ => "io",
        };
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_cert",
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Revoked => "revoked",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::UnknownRevocationStatus => "unknown_revocation_status",
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => "crl_expired",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "wrong_key_usage"
            }
            _ => "bad_certificate",
        },
        rustls::Error::AlertReceived(_) => "alert_from_client",
        _ => "protocol",
    }
}
