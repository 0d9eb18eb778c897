//! The certificate verifiers portcullis installs in rustls: client
//! certificates on listeners ([`ClientVerifier`], and [`Deferred`] for
//! `cert_refusal = "mysql_error"`), backend certificates on outbound TLS
//! ([`BackendVerifier`]). Both build paths with WebPKI to the [`Anchors`]
//! inside their validity; the client verifier adds the configured
//! intermediates to those the client sent and checks the CRLs.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{
    CertRevocationList, ExpirationPolicy, KeyUsage, RevocationCheckDepth, RevocationOptionsBuilder,
    UnknownStatusPolicy,
};

use super::anchors::{to_rustls, Anchors};
use crate::config::{ClientAuth, CrlExpired, CrlPolicy, CrlScope, UnknownRevocation};

/// Verifies client certificates: a path to an anchor inside its validity,
/// through the intermediates the client sent and the configured ones,
/// with the CRLs per the policy.
pub(super) struct ClientVerifier {
    anchors: Arc<Anchors>,
    /// Configured intermediates (not trust anchors).
    intermediates: Vec<CertificateDer<'static>>,
    /// Newest first per issuer, so WebPKI, which takes the first CRL of an
    /// issuer, takes the newest.
    crls: Vec<CertRevocationList<'static>>,
    policy: CrlPolicy,
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier")
            .field("anchors", &self.anchors)
            .field("intermediates", &self.intermediates.len())
            .field("crls", &self.crls.len())
            .field("policy", &self.policy)
            .finish()
    }
}

impl ClientVerifier {
    pub(super) fn new(
        anchors: Arc<Anchors>,
        intermediates: Vec<CertificateDer<'static>>,
        crls: Vec<CertRevocationList<'static>>,
        policy: CrlPolicy,
        client_auth: ClientAuth,
        algorithms: WebPkiSupportedAlgorithms,
    ) -> ClientVerifier {
        ClientVerifier {
            hints: anchors.hints(),
            anchors,
            intermediates,
            crls,
            policy,
            mandatory: client_auth == ClientAuth::Required,
            algorithms,
        }
    }

    /// Whether `end_entity` (with the `intermediates` the client sent) is
    /// accepted at `now`.
    pub(super) fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let mut chain: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_ref()))
            .collect();
        chain.extend(
            self.intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_ref())),
        );
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(match self.policy.scope {
                CrlScope::Chain => RevocationCheckDepth::Chain,
                CrlScope::Leaf => RevocationCheckDepth::EndEntity,
            })
            .with_status_policy(match self.policy.unknown {
                UnknownRevocation::Reject => UnknownStatusPolicy::Deny,
                UnknownRevocation::Allow => UnknownStatusPolicy::Allow,
            })
            .with_expiration_policy(match self.policy.expired {
                // rustls accepts CRLs past their next-update by default; a
                // stale CRL may miss recent revocations, so refuse it.
                CrlExpired::Reject => ExpirationPolicy::Enforce,
                CrlExpired::Accept => ExpirationPolicy::Ignore,
            })
            .build()
        });
        self.anchors.verify(
            self.algorithms.all,
            end_entity,
            &chain,
            now,
            KeyUsage::client_auth(),
            revocation,
        )
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verify(end_entity, intermediates, now)
            .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The handshake-time verifier of `cert_refusal = "mysql_error"`: it asks
/// for a certificate like `inner` and checks the client's signature with
/// it (possession of the key), but lets the handshake finish whatever the
/// certificate, so that the refusal can be a MySQL ERR packet the client
/// reads over TLS. The verdict is
/// [`ServerTls::deferred_verdict`](super::ServerTls::deferred_verdict),
/// which `session::upgrade` takes right after the handshake, before the
/// client's first packet is even read.
#[derive(Debug)]
pub(super) struct Deferred(pub(super) Arc<ClientVerifier>);

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

/// Verifies a backend's certificate on outbound TLS: a path to an anchor
/// of the backend's `ca` inside its validity, valid for the server name.
pub(super) struct BackendVerifier {
    anchors: Arc<Anchors>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for BackendVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendVerifier")
            .field("anchors", &self.anchors)
            .finish()
    }
}

impl BackendVerifier {
    pub(super) fn new(anchors: Arc<Anchors>, algorithms: WebPkiSupportedAlgorithms) -> Self {
        BackendVerifier {
            anchors,
            algorithms,
        }
    }
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.anchors.verify(
            self.algorithms.all,
            end_entity,
            intermediates,
            now,
            KeyUsage::server_auth(),
            None,
        )?;
        webpki::EndEntityCert::try_from(end_entity)
            .and_then(|c| c.verify_is_valid_for_subject_name(server_name))
            .map_err(to_rustls)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
