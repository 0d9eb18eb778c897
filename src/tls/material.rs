//! The files of a TLS section: read once, parsed from PEM, and compared
//! by digest.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

pub use super::digest::Digest;
use super::files::{self, FileMemo, Stamp, MAX_CRL_FILE, MAX_PEM_FILE};
use super::identity::CertInfo;
use super::{invalid, TlsLoadError};
use crate::config::{BackendTlsConfig, TlsConfig};

/// Reads a certificate or key file, safely ([`files::read`]).
fn read(path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    files::read(path, MAX_PEM_FILE).map(|(data, _)| data)
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
    PrivateKeyDer::from_pem_slice(data).map_err(|e| key_pem_error(path, data, e))
}

/// What a key file that does not parse gets told. An encrypted key (PKCS#8
/// `ENCRYPTED PRIVATE KEY`, or a traditional PEM key with `Proc-Type:
/// 4,ENCRYPTED`) is named as such, with the command that decrypts it:
/// portcullis has no passphrase to unlock it with at start or reload.
fn key_pem_error(path: &Path, data: &[u8], e: rustls_pki_types::pem::Error) -> TlsLoadError {
    let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    if has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED") {
        return invalid(
            path,
            format!(
                "the private key is encrypted, which portcullis does not support (it has no passphrase to unlock it with at start or reload); decrypt it once with `openssl pkey -in {} -out key.pem` and point `key` at key.pem (mode 0600)",
                path.display()
            ),
        );
    }
    match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            invalid(path, "contains no PRIVATE KEY block")
        }
        e => invalid(path, format!("bad private key PEM: {e}")),
    }
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

/// Which setting of a TLS section a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Cert,
    Key,
    Ca,
    Intermediates,
    Crl,
}

impl Part {
    fn label(self) -> &'static [u8] {
        match self {
            Part::Cert => b"cert",
            Part::Key => b"key",
            Part::Ca => b"ca",
            Part::Intermediates => b"intermediates",
            Part::Crl => b"crl",
        }
    }

    /// The most bytes read from such a file.
    fn cap(self) -> u64 {
        match self {
            Part::Crl => MAX_CRL_FILE,
            _ => MAX_PEM_FILE,
        }
    }

    /// Whether client certificates are judged by it.
    fn is_trust(self) -> bool {
        matches!(self, Part::Ca | Part::Intermediates | Part::Crl)
    }
}

/// The settings whose files are read: a listener's or a backend's.
#[derive(Clone, Copy)]
pub enum Sources<'a> {
    Listener(&'a TlsConfig),
    Backend(&'a BackendTlsConfig),
}

impl Sources<'_> {
    /// Every file, in a fixed order; a CRL directory's files as it lists
    /// them now.
    fn list(self) -> Result<Vec<(Part, PathBuf)>, TlsLoadError> {
        let mut v = Vec::new();
        match self {
            Sources::Listener(cfg) => {
                v.push((Part::Cert, cfg.cert.clone()));
                v.push((Part::Key, cfg.key.clone()));
                v.extend(cfg.ca.iter().map(|p| (Part::Ca, p.clone())));
                v.extend(
                    cfg.intermediates
                        .iter()
                        .map(|p| (Part::Intermediates, p.clone())),
                );
                for path in &cfg.crl {
                    v.extend(files::crl_files(path)?.into_iter().map(|f| (Part::Crl, f)));
                }
            }
            Sources::Backend(cfg) => {
                if let Some((c, k)) = &cfg.client_cert {
                    v.push((Part::Cert, c.clone()));
                    v.push((Part::Key, k.clone()));
                }
                v.push((Part::Ca, cfg.ca.clone()));
            }
        }
        Ok(v)
    }

    /// The digest [`Material::digest`] would give for the files as they
    /// are now, reading only those whose stamp is not the one `memo`
    /// remembers; returns what to remember next. Never blocks on a file.
    pub fn fingerprint(self, memo: &FileMemo) -> Result<(Digest, FileMemo), TlsLoadError> {
        let mut next = FileMemo::default();
        let mut d = Hasher::new();
        for (part, path) in self.list()? {
            let digest = memo.digest(&path, part.cap(), &mut next)?;
            d.file(part, &path, &digest);
        }
        Ok((d.finish(), next))
    }
}

/// One file as read.
#[derive(Clone)]
struct FileData {
    part: Part,
    path: PathBuf,
    data: Vec<u8>,
    digest: Digest,
    stamp: Stamp,
}

/// The bytes of every file a TLS section names, read once, so that what is
/// compared (the digest) is exactly what is parsed. Paths are followed
/// through symlinks, so a renamed-over file or a switched symlink (the way
/// Kubernetes secrets and caucase publish) shows up as new content. Only
/// regular files within the size caps are read ([`files`]).
#[derive(Clone)]
pub struct Material {
    files: Vec<FileData>,
}

impl Material {
    /// The files of a listener's `[listener.tls]`.
    pub fn read(cfg: &TlsConfig) -> Result<Material, TlsLoadError> {
        Material::read_sources(Sources::Listener(cfg))
    }

    /// The files of a backend's `[backend.tls]`.
    pub fn read_outbound(cfg: &BackendTlsConfig) -> Result<Material, TlsLoadError> {
        Material::read_sources(Sources::Backend(cfg))
    }

    /// Every file of `src`, read now.
    pub fn read_sources(src: Sources<'_>) -> Result<Material, TlsLoadError> {
        let mut v = Vec::new();
        for (part, path) in src.list()? {
            let (data, stamp) = files::read(&path, part.cap())?;
            v.push(FileData {
                part,
                digest: Digest::of(&data),
                path,
                data,
                stamp,
            });
        }
        Ok(Material { files: v })
    }

    /// The content of the (first) file of `part`; empty when there is none.
    pub(super) fn bytes(&self, part: Part) -> &[u8] {
        self.files
            .iter()
            .find(|f| f.part == part)
            .map_or(&[][..], |f| &f.data[..])
    }

    /// Every CRL file with its content, in load order.
    pub(super) fn crls(&self) -> impl Iterator<Item = (&Path, &[u8])> {
        self.files
            .iter()
            .filter(|f| f.part == Part::Crl)
            .map(|f| (f.path.as_path(), &f.data[..]))
    }

    /// SHA-256 over every file's path and content digest: any change of any
    /// byte, and any CRL file added to or removed from a directory,
    /// changes it.
    pub fn digest(&self) -> Digest {
        let mut d = Hasher::new();
        for f in &self.files {
            d.file(f.part, &f.path, &f.digest);
        }
        d.finish()
    }

    /// SHA-256 over what client certificates are judged by: the CA bundle,
    /// the intermediates, the CRLs and the policy. When it changes, live
    /// sessions are checked again.
    pub(super) fn trust_digest(&self, cfg: &TlsConfig) -> Digest {
        let mut d = Hasher::new();
        for f in self.files.iter().filter(|f| f.part.is_trust()) {
            d.file(f.part, &f.path, &f.digest);
        }
        let policy = format!("{:?}{:?}", cfg.client_auth, cfg.crl_policy);
        d.part(b"policy", policy.as_bytes());
        d.finish()
    }

    /// What the poll may remember of these files, so that it reads them
    /// again only once they change.
    pub fn remember(&self) -> FileMemo {
        let now = std::time::SystemTime::now();
        let mut memo = FileMemo::default();
        for f in &self.files {
            memo.remember(&f.path, f.stamp, f.digest, now);
        }
        memo
    }
}

/// SHA-256 over length-prefixed parts.
struct Hasher(aws_lc_rs::digest::Context);

impl Hasher {
    fn new() -> Hasher {
        Hasher(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
    }

    fn part(&mut self, label: &[u8], data: &[u8]) {
        for part in [label, data] {
            self.0.update(&(part.len() as u64).to_be_bytes());
            self.0.update(part);
        }
    }

    fn file(&mut self, part: Part, path: &Path, digest: &Digest) {
        self.part(part.label(), path.as_os_str().as_encoded_bytes());
        self.part(b"sha256", digest.bytes());
    }

    fn finish(self) -> Digest {
        Digest::from(self.0.finish())
    }
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
