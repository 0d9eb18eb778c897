//! A listener's TLS ([`ServerTls`]): the rustls server config, the client
//! certificate verifier, and what was loaded, for status, reloads and
//! re-checking live sessions.

use std::fmt;
use std::path::Path;
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
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::crl::check_crl;
use super::failure::error_reason;
use super::identity::{CertInfo, CrlInfo};
use super::material::{
    load_roots, parse_certs, parse_crls, parse_key, valid_leaf, Digest, Material,
};
use super::{invalid, provider, TlsLoadError};
use crate::config::{CertRefusal, ClientAuth, CrlExpired, CrlScope, TlsConfig, UnknownRevocation};

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
