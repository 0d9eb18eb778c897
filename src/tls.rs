//! TLS material: loading certificates, keys, CA bundles and CRLs from PEM
//! files, building the rustls server config, and reading the peer identity.
//!
//! One crypto provider (ring) is used for the whole process; it is passed
//! explicitly so nothing depends on a process-wide default.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};

use crate::config::{
    BackendTlsConfig, CertRefusal, ClientAuth, CrlExpired, CrlScope, TlsConfig, UnknownRevocation,
};

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

fn parse_certs(path: &Path, data: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
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

fn parse_key(path: &Path, data: &[u8]) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
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

fn parse_crls(
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
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
    crls: Vec<(PathBuf, Vec<u8>)>,
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
    fn trust_digest(&self, cfg: &TlsConfig) -> Digest {
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Each built [`ServerTls`] gets the next number, so a session can tell
/// whether the material it was verified with is still in service.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Sessions resumed from a cache skip client certificate verification, so
/// every built config gets its own, new cache: after a reload nothing that
/// was verified under older material can resume. TLS 1.3 tickets are
/// stateful (kept in this cache); no stateless ticket key is ever set.
const SESSION_CACHE_ENTRIES: usize = 1024;

/// A listener's loaded TLS state: the rustls config plus what was loaded,
/// for status, metrics, reloads and re-checking live sessions.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The certificate in service (leaf).
    pub leaf: CertInfo,
    /// The CA certificates client certificates are checked against.
    pub cas: Vec<CertInfo>,
    /// The CRLs client certificates are checked against, in load order.
    pub crls: Vec<CrlInfo>,
    /// The settings it was built from.
    pub source: TlsConfig,
    /// Digest of every file's content ([`Material::digest`]).
    pub digest: Digest,
    /// Digest of the CA bundle, CRLs and policy.
    pub trust_digest: Digest,
    /// When it was built, seconds since the Unix epoch.
    pub loaded_at: i64,
    /// Unique per build; higher is newer.
    pub generation: u64,
    /// The client certificate verifier inside `config`, to re-check live
    /// sessions; `None` without client authentication.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("leaf", &self.leaf)
            .field("crls", &self.crls)
            .field("generation", &self.generation)
            .finish()
    }
}

impl ServerTls {
    /// Reads, parses and validates everything, then builds one whole config.
    pub fn load(cfg: &TlsConfig) -> Result<ServerTls, TlsLoadError> {
        ServerTls::build(cfg, &Material::read(cfg)?)
    }

    /// Parses and validates `m` (key matches the certificate, the served
    /// chain verifies to the CA bundle when it is issued there, every CRL is
    /// signed by a CA in the bundle and, unless allowed, not expired), then
    /// builds one whole config. Nothing is shared with an earlier build.
    pub fn build(cfg: &TlsConfig, m: &Material) -> Result<ServerTls, TlsLoadError> {
        let provider = provider();
        let now = UnixTime::now();
        let chain = parse_certs(&cfg.cert, &m.cert)?;
        let key = parse_key(&cfg.key, &m.key)?;
        let unix_now = now.as_secs() as i64;
        let leaf = valid_leaf(&cfg.cert, &chain, unix_now)?;

        let mut cas = Vec::new();
        let mut crl_info = Vec::new();
        let mut verifier = None;
        if cfg.client_auth != ClientAuth::None {
            let ca_path = cfg
                .ca
                .as_ref()
                .ok_or_else(|| invalid(&cfg.cert, "client_auth needs a `ca`"))?;
            let (roots, ca_certs, infos) = load_roots(ca_path, m)?;
            cas = infos;
            let roots = Arc::new(roots);
            check_served_chain(cfg, ca_path, &chain, roots.clone(), &provider, now)?;

            let mut crls = Vec::new();
            for (path, data) in &m.crls {
                for crl in parse_crls(path, data)? {
                    let info = check_crl(path, &crl, &ca_certs, cfg, unix_now)?;
                    crl_info.push(info);
                    crls.push(crl);
                }
            }
            let mut b = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .with_crls(crls);
            let policy = cfg.crl_policy;
            if policy.scope == CrlScope::Leaf {
                b = b.only_check_end_entity_revocation();
            }
            if policy.unknown == UnknownRevocation::Allow {
                b = b.allow_unknown_revocation_status();
            }
            if policy.expired == CrlExpired::Reject {
                // rustls accepts CRLs past their next-update by default; a
                // stale CRL may miss recent revocations, so refuse it.
                b = b.enforce_revocation_expiration();
            }
            if cfg.client_auth == ClientAuth::Optional {
                b = b.allow_unauthenticated();
            }
            verifier = Some(b.build().map_err(|source| TlsLoadError::Verifier {
                ca: ca_path.clone(),
                source,
            })?);
        }
        let in_handshake = match (&verifier, cfg.cert_refusal) {
            (None, _) => WebPkiClientVerifier::no_client_auth(),
            (Some(v), CertRefusal::TlsAlert) => v.clone(),
            (Some(v), CertRefusal::MysqlError) => Arc::new(Deferred(v.clone())),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| invalid(&cfg.cert, e))?
            .with_client_cert_verifier(in_handshake)
            .with_single_cert(chain, key)
            .map_err(|source| TlsLoadError::KeyMismatch {
                cert: cfg.cert.clone(),
                key: cfg.key.clone(),
                source,
            })?;
        // Clients never send ALPN for the MySQL protocol; nothing to set.
        config.max_early_data_size = 0;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
        Ok(ServerTls {
            config: Arc::new(config),
            leaf,
            cas,
            crls: crl_info,
            source: cfg.clone(),
            digest: m.digest(),
            trust_digest: m.trust_digest(cfg),
            loaded_at: unix_now,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            verifier,
        })
    }

    /// The verdict on a finished handshake's client certificate chain when
    /// `cert_refusal = "mysql_error"` deferred it ([`Deferred`]): `Err(reason)`
    /// (a [`failure_reason`] label) when the client must be refused. Always
    /// `Ok` when the handshake itself verified the certificate. Checked on
    /// every connection, resumed ones included, before anything reaches a
    /// backend.
    pub fn deferred_verdict(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> Result<(), &'static str> {
        if self.source.cert_refusal != CertRefusal::MysqlError || self.verifier.is_none() {
            return Ok(());
        }
        match chain {
            Some(chain) if !chain.is_empty() => self.recheck(chain, UnixTime::now()),
            _ if self.source.client_auth == ClientAuth::Required => Err("no_client_cert"),
            _ => Ok(()),
        }
    }

    /// Whether a client certificate chain accepted at `verified_at` would
    /// be accepted by this material at that same instant: `Err(reason)`
    /// (a [`failure_reason`] label) when it would now be refused. Used to
    /// re-check live sessions after new CAs or CRLs are loaded; expiry
    /// since the handshake is not held against a session.
    pub fn recheck(
        &self,
        chain: &[CertificateDer<'static>],
        verified_at: UnixTime,
    ) -> Result<(), &'static str> {
        let (Some(verifier), Some((leaf, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return Ok(());
        };
        verifier
            .verify_client_cert(leaf, intermediates, verified_at)
            .map(|_| ())
            .map_err(|e| error_reason(&e))
    }
}

/// The handshake-time verifier of `cert_refusal = "mysql_error"`: it asks
/// for a certificate like `inner` and checks the client's signature with
/// it (possession of the key), but lets the handshake finish whatever the
/// certificate, so that the refusal can be a MySQL ERR packet the client
/// reads over TLS. The verdict is [`ServerTls::deferred_verdict`], which
/// `session::upgrade` takes right after the handshake, before the client's
/// first packet is even read.
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A client without a certificate is refused after the handshake.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The leaf of `chain`, which must be inside its validity dates at `now`.
fn valid_leaf(
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
fn load_roots(
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

/// The served chain must verify to the CA bundle when its issuer is there
/// (the usual single-PKI setup): a wrong intermediate or a certificate the
/// bundle does not vouch for is caught at load, not by every client. A
/// certificate from another PKI (a public ACME CA, say) is served as is.
fn check_served_chain(
    cfg: &TlsConfig,
    ca_path: &Path,
    chain: &[CertificateDer<'static>],
    roots: Arc<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    now: UnixTime,
) -> Result<(), TlsLoadError> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| invalid(ca_path, e))?;
    // The names clients use are not known here: any name error means the
    // chain itself verified.
    let name = ServerName::try_from("portcullis.invalid").expect("valid DNS name");
    match verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], now) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => Ok(()),
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            tracing::debug!(cert = %cfg.cert.display(), ca = %ca_path.display(),
                "server certificate is not issued under the client CA bundle; serving it as is");
            Ok(())
        }
        Err(e) => Err(invalid(
            &cfg.cert,
            format!(
                "certificate chain does not verify against {}: {e}",
                ca_path.display()
            ),
        )),
    }
}

/// Whether the signed DER object `signed` (a CRL: `SEQUENCE { tbs,
/// signatureAlgorithm, signatureValue }`) carries a valid signature by the
/// key in `spki` (a DER SubjectPublicKeyInfo). The algorithms are the TLS
/// provider's own, matched on their exact AlgorithmIdentifier encodings as
/// webpki matches them for certificate chains, so one crypto library checks
/// every signature portcullis relies on.
fn signed_by(
    signed: &[u8],
    spki: &[u8],
    algorithms: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm],
) -> bool {
    let (Some((tbs, sig_alg, signature)), Some((key_alg, key))) =
        (signed_parts(signed), spki_parts(spki))
    else {
        return false;
    };
    algorithms.iter().any(|a| {
        a.signature_alg_id().as_ref() == sig_alg
            && a.public_key_alg_id().as_ref() == key_alg
            && a.verify_signature(key, tbs, signature).is_ok()
    })
}

/// A signed object's to-be-signed bytes (whole element), the contents of
/// its signatureAlgorithm and its signature bits.
fn signed_parts(signed: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (0x30, outer, _) = der_tlv(signed)? else {
        return None;
    };
    let (0x30, _, after_tbs) = der_tlv(outer)? else {
        return None;
    };
    let tbs = &outer[..outer.len() - after_tbs.len()];
    let (0x30, sig_alg, after_alg) = der_tlv(after_tbs)? else {
        return None;
    };
    let (0x03, [0, signature @ ..], _) = der_tlv(after_alg)? else {
        return None;
    };
    Some((tbs, sig_alg, signature))
}

/// A SubjectPublicKeyInfo's algorithm (contents) and key bits.
fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, spki, _) = der_tlv(spki)? else {
        return None;
    };
    let (0x30, key_alg, after_key_alg) = der_tlv(spki)? else {
        return None;
    };
    let (0x03, [0, key @ ..], _) = der_tlv(after_key_alg)? else {
        return None;
    };
    Some((key_alg, key))
}

/// Splits one DER element off the front of `input`: its tag, its contents
/// and what follows it. `None` for a truncated element or a length form DER
/// does not allow here (indefinite, or more than four length bytes).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// A CRL must parse, be signed by a CA of the bundle and, unless the
/// policy accepts stale CRLs, not be past its nextUpdate.
fn check_crl(
    path: &Path,
    der: &CertificateRevocationListDer<'_>,
    cas: &[CertificateDer<'static>],
    cfg: &TlsConfig,
    now: i64,
) -> Result<CrlInfo, TlsLoadError> {
    let (_, crl) = x509_parser::parse_x509_crl(der)
        .map_err(|e| invalid(path, format!("CRL does not parse: {e}")))?;
    let info = CrlInfo::from_parsed(&crl);
    let algorithms = provider().signature_verification_algorithms;
    let mut issuer_known = false;
    let mut signed = false;
    for ca in cas {
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca) else {
            continue;
        };
        if ca.subject().as_raw() != crl.issuer().as_raw() {
            continue;
        }
        issuer_known = true;
        if signed_by(der, ca.public_key().raw, algorithms.all) {
            signed = true;
            break;
        }
    }
    if !issuer_known {
        return Err(invalid(
            path,
            format!(
                "CRL issued by {} but no CA with that name is in the CA bundle",
                info.issuer
            ),
        ));
    }
    if !signed {
        return Err(invalid(
            path,
            format!(
                "CRL for {} has a signature that no CA of that name in the CA bundle made",
                info.issuer
            ),
        ));
    }
    if cfg.crl_policy.expired == CrlExpired::Reject {
        if let Some(next) = info.next_update.filter(|&n| n < now) {
            return Err(invalid(
                path,
                format!(
                    "CRL for {} expired at {} (its nextUpdate); publish a fresh CRL, or set crl_expired = \"accept\"",
                    info.issuer,
                    crate::time::rfc3339(next)
                ),
            ));
        }
    }
    Ok(info)
}

/// A backend's outbound TLS: portcullis sends the SSLRequest, verifies the
/// backend's certificate against `ca` and `server_name`, and presents its
/// client certificate (e.g. to the backend's own portcullis sidecar).
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
    /// The client certificate presented, if any.
    pub leaf: Option<CertInfo>,
    /// The CAs the backend's certificate must chain to.
    pub cas: Vec<CertInfo>,
    pub source: BackendTlsConfig,
    pub digest: Digest,
    pub loaded_at: i64,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("leaf", &self.leaf)
            .finish()
    }
}

impl ClientTls {
    pub fn load(cfg: &BackendTlsConfig) -> Result<ClientTls, TlsLoadError> {
        ClientTls::build(cfg, &Material::read_outbound(cfg)?)
    }

    /// Parses and validates `m` (the client key matches its certificate,
    /// which is inside its validity dates), then builds one whole config.
    pub fn build(cfg: &BackendTlsConfig, m: &Material) -> Result<ClientTls, TlsLoadError> {
        let provider = provider();
        let unix_now = UnixTime::now().as_secs() as i64;
        let (roots, _, cas) = load_roots(&cfg.ca, m)?;
        let server_name = ServerName::try_from(cfg.server_name.clone()).map_err(|e| {
            invalid(
                &cfg.ca,
                format!(
                    "server_name {:?} is not a DNS name or IP address: {e}",
                    cfg.server_name
                ),
            )
        })?;
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| invalid(&cfg.ca, e))?
            .with_root_certificates(roots);
        let (config, leaf) = match &cfg.client_cert {
            None => (builder.with_no_client_auth(), None),
            Some((cert_path, key_path)) => {
                let chain = parse_certs(cert_path, &m.cert)?;
                let key = parse_key(key_path, &m.key)?;
                let leaf = valid_leaf(cert_path, &chain, unix_now)?;
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|source| TlsLoadError::KeyMismatch {
                        cert: cert_path.clone(),
                        key: key_path.clone(),
                        source,
                    })?;
                (config, Some(leaf))
            }
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: server_name.to_owned(),
            leaf,
            cas,
            source: cfg.clone(),
            digest: m.digest(),
            loaded_at: unix_now,
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
    /// SHA-256 of the DER encoding, lowercase hex; empty when built with
    /// [`CertInfo::identity`].
    pub fingerprint: String,
    /// Not-before as seconds since the Unix epoch.
    pub not_before: i64,
    /// Not-after as seconds since the Unix epoch.
    pub not_after: i64,
}

impl CertInfo {
    /// Everything, including the fingerprint: for material loaded from
    /// files, shown in `/status` and metrics.
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let mut info = CertInfo::identity(der)?;
        info.fingerprint = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref());
        Ok(info)
    }

    /// Without the fingerprint (left empty): for a client's certificate,
    /// read on every connection for its log line, which does not show it.
    pub fn identity(der: &[u8]) -> Result<CertInfo, String> {
        let (_, c) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate does not parse: {e}"))?;
        Ok(CertInfo {
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
            serial: c.raw_serial_as_string().replace(':', ""),
            fingerprint: String::new(),
            not_before: c.validity().not_before.timestamp(),
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
        Ok(CrlInfo::from_parsed(&crl))
    }

    fn from_parsed(crl: &x509_parser::revocation_list::CertificateRevocationList<'_>) -> CrlInfo {
        CrlInfo {
            issuer: crl.issuer().to_string(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked: crl.iter_revoked_certificates().count(),
        }
    }
}

/// A stable label for why a TLS handshake failed, as used in logs and the
/// `reason` label of the TLS failure metric.
pub fn failure_reason(err: &io::Error) -> &'static str {
    match err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(tls) => error_reason(tls),
        None => match err.kind() {
            io::ErrorKind::UnexpectedEof => "client_closed",
            io::ErrorKind::TimedOut => "timeout",
            _ => "io",
        },
    }
}

/// The stable label for a rustls error (see [`failure_reason`]).
pub fn error_reason(err: &rustls::Error) -> &'static str {
    match err {
        rustls::Error::NoCertificatesPresented => "no_client_cert",
        rustls::Error::InvalidCertificate(c) => {
            match c {
                CertificateError::UnknownIssuer => "unknown_ca",
                CertificateError::Revoked => "revoked",
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "not_yet_valid"
                }
                CertificateError::UnknownRevocationStatus => "unknown_revocation_status",
                CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. } => "crl_expired",
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => "wrong_key_usage",
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => "wrong_name",
                _ => "bad_certificate",
            }
        }
        rustls::Error::AlertReceived(_) => "alert_from_client",
        _ => "protocol",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_tlv_reads_short_and_long_lengths_and_refuses_truncation() {
        assert_eq!(
            der_tlv(&[0x30, 0x02, 0xaa, 0xbb, 0xcc]),
            Some((0x30, &[0xaa, 0xbb][..], &[0xcc][..]))
        );
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7u8, 256));
        let (tag, contents, rest) = der_tlv(&long).unwrap();
        assert_eq!((tag, contents.len(), rest.len()), (0x04, 256, 0));
        // Truncated contents, truncated length, indefinite length, no input.
        assert_eq!(der_tlv(&[0x30, 0x03, 0xaa]), None);
        assert_eq!(der_tlv(&[0x30, 0x82, 0x01]), None);
        assert_eq!(der_tlv(&[0x30, 0x80, 0x00, 0x00]), None);
        assert_eq!(der_tlv(&[]), None);
    }

    #[test]
    fn signed_by_refuses_garbage_without_panicking() {
        let algorithms = provider().signature_verification_algorithms.all;
        for junk in [
            &[][..],
            &[0x30, 0x00],
            &[0x30, 0x03, 0x30, 0x01, 0x00],
            &[0xff; 40],
        ] {
            assert!(!signed_by(junk, junk, algorithms));
        }
    }
}
