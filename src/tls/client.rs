//! A backend's outbound TLS ([`ClientTls`]).

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::{ServerName, UnixTime};

use super::anchors::Anchors;
use super::identity::CertInfo;
use super::material::{parse_certs, parse_key, valid_leaf, Digest, Material, Part};
use super::verifier::BackendVerifier;
use super::{invalid, provider, TlsLoadError};
use crate::config::BackendTlsConfig;

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
        let anchors = Arc::new(Anchors::parse(&cfg.ca, m.bytes(Part::Ca))?);
        let cas = anchors.infos.clone();
        let verifier = BackendVerifier::new(anchors, provider.signature_verification_algorithms);
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
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let (config, leaf) = match &cfg.client_cert {
            None => (builder.with_no_client_auth(), None),
            Some((cert_path, key_path)) => {
                let chain = parse_certs(cert_path, m.bytes(Part::Cert))?;
                let key = parse_key(key_path, m.bytes(Part::Key))?;
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
