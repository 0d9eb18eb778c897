//! The files of a TLS section: read once, parsed from PEM, and compared
//! by digest.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::identity::CertInfo;
use super::{invalid, TlsLoadError};
use crate::config::{BackendTlsConfig, TlsConfig};

fn read(path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    std::fs::read(path).map_err(|source| TlsLoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every certificate in a PEM file; at least one must be present.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    parse_certs(path, &read(path)?)
}

pub(super) fn parse_certs(
    path: &Path,
    data: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let certs = CertificateDer::pem_slice_iter(data)
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
    parse_key(path, &read(path)?)
}

pub(super) fn parse_key(path: &Path, data: &[u8]) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
    PrivateKeyDer::from_pem_slice(data).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            invalid(path, "contains no PRIVATE KEY block")
        }
        e => invalid(path, format!("bad private key PEM: {e}")),
    })
}

pub(super) fn parse_crls(
    path: &Path,
    data: &[u8],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsLoadError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("bad CRL PEM: {e}")))?;
    if crls.is_empty() {
        return Err(invalid(path, "contains no X509 CRL block"));
    }
    for c in &crls {
        x509_parser::parse_x509_crl(c)
            .map_err(|e| invalid(path, format!("CRL does not parse: {e}")))?;
    }
    Ok(crls)
}

/// The files of a CRL setting: the file itself, or a directory's `*.pem` /
/// `*.crl` files sorted by name (so loading order is stable).
fn crl_files(path: &Path) -> Result<Vec<PathBuf>, TlsLoadError> {
    let read_err = |source| TlsLoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    // metadata follows symlinks: a symlinked directory is a directory.
    if !std::fs::metadata(path).map_err(read_err)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pem" || e == "crl") && p.is_file())
        .collect();
    v.sort();
    Ok(v)
}

/// The bytes of every file a TLS section names, read once, so that what is
/// compared (the digest) is exactly what is parsed. Paths are followed
/// through symlinks, so a renamed-over file or a switched symlink (the way
/// Kubernetes secrets and caucase publish) shows up as new content.
#[derive(Clone)]
pub struct Material {
    pub(super) cert: Vec<u8>,
    pub(super) key: Vec<u8>,
    pub(super) ca: Option<Vec<u8>>,
    pub(super) crls: Vec<(PathBuf, Vec<u8>)>,
}

impl Material {
    /// The files of a listener's `[listener.tls]`.
    pub fn read(cfg: &TlsConfig) -> Result<Material, TlsLoadError> {
        Material::read_files(Some(&cfg.cert), Some(&cfg.key), cfg.ca.as_deref(), &cfg.crl)
    }

    /// The files of a backend's `[backend.tls]`.
    pub fn read_outbound(cfg: &BackendTlsConfig) -> Result<Material, TlsLoadError> {
        let (cert, key) = match &cfg.client_cert {
            Some((c, k)) => (Some(c.as_path()), Some(k.as_path())),
            None => (None, None),
        };
        Material::read_files(cert, key, Some(&cfg.ca), &[])
    }

    fn read_files(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        crl: &[PathBuf],
    ) -> Result<Material, TlsLoadError> {
        let mut crls = Vec::new();
        for path in crl {
            for f in crl_files(path)? {
                let data = read(&f)?;
                crls.push((f, data));
            }
        }
        Ok(Material {
            cert: cert.map(read).transpose()?.unwrap_or_default(),
            key: key.map(read).transpose()?.unwrap_or_default(),
            ca: ca.map(read).transpose()?,
            crls,
        })
    }

    /// SHA-256 over everything: any change of any byte, and any CRL file
    /// added to or removed from a directory, changes it.
    pub fn digest(&self) -> Digest {
        let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        self.hash_trust(&mut d);
        hash_part(&mut d, b"cert", &self.cert);
        hash_part(&mut d, b"key", &self.key);
        Digest::from(d.finish())
    }

    /// SHA-256 over what client certificates are judged by: the CA bundle,
    /// the CRLs and the policy. When it changes, live sessions are checked
    /// again.
    pub(super) fn trust_digest(&self, cfg: &TlsConfig) -> Digest {
        let mut d = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        self.hash_trust(&mut d);
        let policy = format!("{:?}{:?}", cfg.client_auth, cfg.crl_policy);
        hash_part(&mut d, b"policy", policy.as_bytes());
        Digest::from(d.finish())
    }

    fn hash_trust(&self, d: &mut aws_lc_rs::digest::Context) {
        hash_part(d, b"ca", self.ca.as_deref().unwrap_or_default());
        for (path, data) in &self.crls {
            hash_part(d, path.as_os_str().as_encoded_bytes(), data);
        }
    }
}

fn hash_part(d: &mut aws_lc_rs::digest::Context, label: &[u8], data: &[u8]) {
    for part in [label, data] {
        d.update(&(part.len() as u64).to_be_bytes());
        d.update(part);
    }
}

/// A SHA-256 value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest([u8; 32]);

impl From<aws_lc_rs::digest::Digest> for Digest {
    fn from(d: aws_lc_rs::digest::Digest) -> Self {
        let mut v = [0u8; 32];
        v.copy_from_slice(d.as_ref());
        Digest(v)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The leaf of `chain`, which must be inside its validity dates at `now`.
pub(super) fn valid_leaf(
    path: &Path,
    chain: &[CertificateDer<'static>],
    now: i64,
) -> Result<CertInfo, TlsLoadError> {
    let leaf = CertInfo::from_der(&chain[0]).map_err(|e| invalid(path, e))?;
    let (when, at) = if leaf.not_after < now {
        ("expired at", leaf.not_after)
    } else if leaf.not_before > now {
        ("is not valid before", leaf.not_before)
    } else {
        return Ok(leaf);
    };
    Err(invalid(
        path,
        format!(
            "certificate {} (serial {}) {when} {}",
            leaf.subject,
            leaf.serial,
            crate::time::rfc3339(at)
        ),
    ))
}

/// The CA bundle of `m` as trust anchors, certificates and their info.
pub(super) fn load_roots(
    path: &Path,
    m: &Material,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>, Vec<CertInfo>), TlsLoadError> {
    let certs = parse_certs(path, m.ca.as_deref().unwrap_or_default())?;
    let mut roots = RootCertStore::empty();
    let mut infos = Vec::new();
    for c in &certs {
        roots
            .add(c.clone())
            .map_err(|e| invalid(path, format!("not a usable CA certificate: {e}")))?;
        infos.push(CertInfo::from_der(c).map_err(|e| invalid(path, e))?);
    }
    Ok((roots, certs, infos))
}
