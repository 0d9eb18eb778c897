//! A listener's TLS ([`ServerTls`]): the rustls server config, the client
//! certificate verifier, and what was loaded, for status, reloads and
//! re-checking live sessions.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{CertificateError, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::anchors::Anchors;
use super::failure::{Peer, TlsFailure};
use super::identity::{CertInfo, CrlInfo};
use super::material::{parse_certs, parse_key, valid_leaf, Digest, Material, Part};
use super::trust::{CrlMarks, Trust};
use super::verifier::{ClientVerifier, Deferred};
use super::{invalid, provider, TlsLoadError};
use crate::config::suites::name as suite_name;
use crate::config::{CertRefusal, ClientAuth, TlsConfig};

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
    /// The CA certificates client certificates are checked against (the
    /// trust anchors, as loaded: one outside its validity dates is listed
    /// but vouches for nobody).
    pub cas: Vec<CertInfo>,
    /// The configured intermediate CA certificates (not trust anchors).
    pub intermediates: Vec<CertInfo>,
    /// The CRLs client certificates are checked against, in load order.
    pub crls: Vec<CrlInfo>,
    /// The settings it was built from.
    pub source: TlsConfig,
    /// Digest of every file's content ([`Material::digest`]).
    pub digest: Digest,
    /// Digest of the CA bundle, intermediates, CRLs and policy.
    pub trust_digest: Digest,
    /// What an operator should know about how the trust material applies
    /// (a CA not valid yet, a revoked intermediate); logged at each load.
    pub notes: Vec<String>,
    /// When it was built, seconds since the Unix epoch.
    pub loaded_at: i64,
    /// Unique per build; higher is newer.
    pub generation: u64,
    /// The client certificate verifier inside `config`, to re-check live
    /// sessions; `None` without client authentication.
    verifier: Option<Arc<ClientVerifier>>,
    /// The newest CRL of each issuer loaded since start: a reload never
    /// goes back to an older one.
    crl_marks: CrlMarks,
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

    /// [`build_after`](ServerTls::build_after) with nothing in service.
    pub fn build(cfg: &TlsConfig, m: &Material) -> Result<ServerTls, TlsLoadError> {
        ServerTls::build_after(cfg, m, None)
    }

    /// Parses and validates `m` (key matches the certificate, the served
    /// chain verifies to the CA bundle when it is issued there, the
    /// intermediates chain to it, every CRL is signed by one of them, dated
    /// no further ahead than `clock_skew`, not older than what `previous`
    /// had in service and, unless allowed, not expired), then builds one
    /// whole config. Nothing but the CRL marks is taken from `previous`.
    pub fn build_after(
        cfg: &TlsConfig,
        m: &Material,
        previous: Option<&ServerTls>,
    ) -> Result<ServerTls, TlsLoadError> {
        let policy = crate::config::suites::resolve(cfg.min_version, cfg.cipher_suites.as_deref())
            .map_err(|e| invalid(&cfg.cert, e))?;
        let provider = Arc::new(rustls::crypto::CryptoProvider {
            cipher_suites: policy.suites,
            ..(*provider()).clone()
        });
        let now = UnixTime::now();
        let chain = parse_certs(&cfg.cert, m.bytes(Part::Cert))?;
        let key = parse_key(&cfg.key, m.bytes(Part::Key))?;
        check_suites_fit_key(cfg, &provider, &key)?;
        let unix_now = now.as_secs() as i64;
        let leaf = valid_leaf(&cfg.cert, &chain, unix_now)?;
        let previous_marks = previous.map(|p| p.crl_marks.clone()).unwrap_or_default();

        let trust = match (&cfg.ca, cfg.client_auth) {
            (_, ClientAuth::None) => None,
            (None, _) => return Err(invalid(&cfg.cert, "client_auth needs a `ca`")),
            (Some(ca_path), _) => {
                let t = Trust::load(cfg, ca_path, m, &previous_marks, unix_now, &provider)?;
                check_served_chain(cfg, ca_path, &chain, &t.anchors, &provider, now)?;
                Some(t)
            }
        };
        let verifier = trust.as_ref().map(|t| t.verifier.clone());
        let in_handshake: Arc<dyn ClientCertVerifier> = match (&verifier, cfg.cert_refusal) {
            (None, _) => WebPkiClientVerifier::no_client_auth(),
            (Some(v), CertRefusal::TlsAlert) => v.clone(),
            (Some(v), CertRefusal::MysqlError) => Arc::new(Deferred(v.clone())),
        };
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&policy.versions)
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
        let (cas, intermediates, crls, notes, crl_marks) = match trust {
            Some(t) => (
                t.anchors.infos.clone(),
                t.intermediates,
                t.crls,
                t.notes,
                t.marks,
            ),
            None => (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                previous_marks,
            ),
        };
        Ok(ServerTls {
            config: Arc::new(config),
            leaf,
            cas,
            intermediates,
            crls,
            source: cfg.clone(),
            digest: m.digest(),
            trust_digest: m.trust_digest(cfg),
            notes,
            loaded_at: unix_now,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            verifier,
            crl_marks,
        })
    }

    /// The verdict on a finished handshake's client certificate chain when
    /// `cert_refusal = "mysql_error"` deferred it ([`Deferred`]): `Err(reason)`
    /// when the client must be refused. Always `Ok` when the handshake itself verified the
    /// certificate. Checked on every connection, resumed ones included,
    /// before anything reaches a backend.
    pub fn deferred_verdict(
        &self,
        chain: Option<&[CertificateDer<'static>]>,
    ) -> Result<(), TlsFailure> {
        if self.source.cert_refusal != CertRefusal::MysqlError || self.verifier.is_none() {
            return Ok(());
        }
        match chain {
            Some(chain) if !chain.is_empty() => self.recheck(chain, UnixTime::now()),
            _ if self.source.client_auth == ClientAuth::Required => Err(TlsFailure::NoClientCert),
            _ => Ok(()),
        }
    }

    /// Whether a client certificate chain accepted at `verified_at` would
    /// be accepted by this material at that same instant: `Err(reason)`
    /// when it would now be refused. Used to re-check live sessions after new CAs, intermediates
    /// or CRLs are loaded; expiry since the handshake is not held against a
    /// session.
    pub fn recheck(
        &self,
        chain: &[CertificateDer<'static>],
        verified_at: UnixTime,
    ) -> Result<(), TlsFailure> {
        let (Some(verifier), Some((leaf, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return Ok(());
        };
        verifier
            .verify(leaf, intermediates, verified_at)
            .map_err(|e| TlsFailure::from_rustls(&e, Peer::Client))
    }
}

/// The served chain must verify to the CA bundle when its issuer is there
/// (the usual single-PKI setup): a wrong intermediate, a CA outside its
/// validity or a certificate the bundle does not vouch for is caught at
/// load, not by every client. A certificate from another PKI (a public
/// ACME CA, say) is served as is.
fn check_served_chain(
    cfg: &TlsConfig,
    ca_path: &Path,
    chain: &[CertificateDer<'static>],
    anchors: &Anchors,
    provider: &rustls::crypto::CryptoProvider,
    now: UnixTime,
) -> Result<(), TlsLoadError> {
    let verified = anchors.verify(
        provider.signature_verification_algorithms.all,
        &chain[0],
        &chain[1..],
        now,
        webpki::KeyUsage::server_auth(),
        None,
    );
    match verified {
        Ok(()) => Ok(()),
        Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            tracing::debug!(cert = %cfg.cert.display(), ca = %ca_path.display(),
                "server certificate is not issued under the client CA bundle; serving it as is");
            Ok(())
        }
        Err(e) => Err(invalid(
            &cfg.cert,
            format!(
                "certificate chain does not verify against {}: {}",
                ca_path.display(),
                chain_error(&e)
            ),
        )),
    }
}

/// A `cipher_suites` allow-list that offers TLS 1.2 must have a TLS 1.2
/// suite for the key's algorithm (`TLS_ECDHE_ECDSA_…` for an ECDSA key,
/// `TLS_ECDHE_RSA_…` for RSA): otherwise every TLS 1.2 client would fail
/// with no cipher in common and nothing would say why.
fn check_suites_fit_key(
    cfg: &TlsConfig,
    provider: &rustls::crypto::CryptoProvider,
    key: &PrivateKeyDer<'static>,
) -> Result<(), TlsLoadError> {
    let tls12: Vec<_> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.tls13().is_none())
        .collect();
    if cfg.cipher_suites.is_none() || tls12.is_empty() {
        return Ok(());
    }
    let alg = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| invalid(&cfg.key, e))?
        .algorithm();
    if tls12.iter().any(|s| s.usable_for_signature_algorithm(alg)) {
        return Ok(());
    }
    let listed: Vec<String> = tls12.iter().map(|s| suite_name(s)).collect();
    Err(invalid(
        &cfg.key,
        format!(
            "cipher_suites offers TLS 1.2 only with {} (for another kind of key): no TLS 1.2 client could connect with this {alg:?} key; add a TLS 1.2 suite for {alg:?} keys, or list TLS 1.3 suites only",
            listed.join(", ")
        ),
    ))
}

/// A verification error as the load error names it.
fn chain_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(o)) => o.0.to_string(),
        e => e.to_string(),
    }
}
