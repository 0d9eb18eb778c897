//! Trust anchors: the CA certificates of a `ca` bundle, and the path
//! building that verifies a chain to them.
//!
//! A CA certificate outside its validity dates is never a trust anchor:
//! WebPKI itself takes anchors as names and keys without dates, so every
//! path it finds is handed to [`Anchors::in_validity`] first, which refuses
//! a path that ends at a CA certificate that has expired or is not valid
//! yet at the time of verification (path building then tries the others,
//! e.g. the renewed certificate of the same CA). Such a CA stays in the
//! bundle as loaded (status, metrics and expiry warnings show it); it just
//! vouches for nobody. The check is made at every verification, not at
//! load, because a CA expires in service without any file changing.

use std::cell::Cell;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::{CertRevocationListError, CertificateError, DistinguishedName, OtherError};
use rustls_pki_types::TrustAnchor;
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use webpki::{EndEntityCert, KeyUsage, RevocationOptions, VerifiedPath};

use super::identity::CertInfo;
use super::material::parse_certs;
use super::{invalid, TlsLoadError};

/// The CA certificates of a bundle, as trust anchors.
pub(super) struct Anchors {
    /// In bundle order, parallel to `infos` and `certs`.
    anchors: Vec<TrustAnchor<'static>>,
    pub(super) infos: Vec<CertInfo>,
    pub(super) certs: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Anchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.infos).finish()
    }
}

/// A chain refused because the CA certificate it ends at is outside its
/// validity dates (carried inside [`CertificateError::Other`], so the
/// failure label can tell it from the client's own certificate expiring).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the chain ends at CA certificate {subject} (serial {serial}), which {state}")]
pub struct AnchorOutsideValidity {
    pub subject: String,
    pub serial: String,
    /// `true`: past its not-after; `false`: before its not-before.
    pub expired: bool,
    state: String,
}

impl AnchorOutsideValidity {
    fn new(ca: &CertInfo, now: i64) -> Option<AnchorOutsideValidity> {
        let (expired, state) = if ca.not_after < now {
            (
                true,
                format!("expired at {}", crate::time::rfc3339(ca.not_after)),
            )
        } else if ca.not_before > now {
            (
                false,
                format!(
                    "is not valid before {}",
                    crate::time::rfc3339(ca.not_before)
                ),
            )
        } else {
            return None;
        };
        Some(AnchorOutsideValidity {
            subject: ca.subject.clone(),
            serial: ca.serial.clone(),
            expired,
            state,
        })
    }
}

impl Anchors {
    /// The CA certificates of the PEM bundle `data` read from `path`.
    pub(super) fn parse(path: &Path, data: &[u8]) -> Result<Anchors, TlsLoadError> {
        let certs = parse_certs(path, data)?;
        let mut anchors = Vec::new();
        let mut infos = Vec::new();
        for c in &certs {
            let anchor = webpki::anchor_from_trusted_cert(c).map_err(|e| {
                invalid(
                    path,
                    format!("not a usable CA certificate: {}", to_rustls(e)),
                )
            })?;
            anchors.push(anchor.to_owned());
            infos.push(CertInfo::from_der(c).map_err(|e| invalid(path, e))?);
        }
        Ok(Anchors {
            anchors,
            infos,
            certs,
        })
    }

    /// The subjects a server names when it asks for a client certificate.
    pub(super) fn hints(&self) -> Vec<DistinguishedName> {
        self.anchors
            .iter()
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect()
    }

    /// The CA certificates that are outside their validity at `now`.
    pub(super) fn outside_validity(&self, now: i64) -> Vec<AnchorOutsideValidity> {
        self.infos
            .iter()
            .filter_map(|ca| AnchorOutsideValidity::new(ca, now))
            .collect()
    }

    /// Verifies `end_entity` for `usage` through `intermediates` to an
    /// anchor inside its validity at `now`, with `revocation` if given.
    pub(super) fn verify(
        &self,
        algorithms: &[&dyn SignatureVerificationAlgorithm],
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
        revocation: Option<RevocationOptions<'_>>,
    ) -> Result<(), rustls::Error> {
        let cert = EndEntityCert::try_from(end_entity).map_err(to_rustls)?;
        let refused = Cell::new(None);
        let in_validity = |path: &VerifiedPath<'_>| self.in_validity(path, now, &refused);
        let result = cert.verify_for_usage(
            algorithms,
            &self.anchors,
            intermediates,
            now,
            usage,
            revocation,
            Some(&in_validity),
        );
        match (result, refused.take()) {
            (Ok(_), _) => Ok(()),
            // Path building returns the most specific error it met; when
            // that is the one this check gave, name the CA.
            (Err(webpki::Error::CertExpired { not_after: t, .. }), Some((r, date)))
            | (Err(webpki::Error::CertNotValidYet { not_before: t, .. }), Some((r, date)))
                if t == date =>
            {
                Err(anchor_error(r))
            }
            (Err(e), _) => Err(to_rustls(e)),
        }
    }

    /// Refuses a path whose anchor is outside its validity at `now`; the
    /// refusal and the date it gave are kept in `refused`.
    fn in_validity(
        &self,
        path: &VerifiedPath<'_>,
        now: UnixTime,
        refused: &Cell<Option<(AnchorOutsideValidity, UnixTime)>>,
    ) -> Result<(), webpki::Error> {
        let Some(i) = self
            .anchors
            .iter()
            .position(|a| std::ptr::eq(a, path.anchor()))
        else {
            return Ok(());
        };
        let secs = now.as_secs() as i64;
        let ca = &self.infos[i];
        let Some(r) = AnchorOutsideValidity::new(ca, secs) else {
            return Ok(());
        };
        let at =
            |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.max(0) as u64));
        let (error, date) = if r.expired {
            let not_after = at(ca.not_after);
            (
                webpki::Error::CertExpired {
                    time: now,
                    not_after,
                },
                not_after,
            )
        } else {
            let not_before = at(ca.not_before);
            (
                webpki::Error::CertNotValidYet {
                    time: now,
                    not_before,
                },
                not_before,
            )
        };
        refused.set(Some((r, date)));
        Err(error)
    }
}

fn anchor_error(r: AnchorOutsideValidity) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(r))))
}

/// The rustls error for a WebPKI one, as rustls's own verifiers map them
/// (so handshakes send the same alerts and failures get the same labels).
pub(super) fn to_rustls(error: webpki::Error) -> rustls::Error {
    use webpki::Error::*;
    #[allow(deprecated)]
    match error {
        BadDer | BadDerTime | TrailingData(_) => CertificateError::BadEncoding.into(),
        CertNotValidYet { time, not_before } => {
            CertificateError::NotValidYetContext { time, not_before }.into()
        }
        CertExpired { time, not_after } => {
            CertificateError::ExpiredContext { time, not_after }.into()
        }
        InvalidCertValidity => CertificateError::Expired.into(),
        UnknownIssuer => CertificateError::UnknownIssuer.into(),
        CertNotValidForName(webpki::InvalidNameContext {
            expected,
            presented,
        }) => CertificateError::NotValidForNameContext {
            expected,
            presented,
        }
        .into(),
        CertRevoked => CertificateError::Revoked.into(),
        UnknownRevocationStatus => CertificateError::UnknownRevocationStatus.into(),
        CrlExpired { time, next_update } => {
            CertificateError::ExpiredRevocationListContext { time, next_update }.into()
        }
        IssuerNotCrlSigner => CertRevocationListError::IssuerInvalidForCrl.into(),
        InvalidSignatureForPublicKey => CertificateError::BadSignature.into(),
        UnsupportedSignatureAlgorithm | UnsupportedSignatureAlgorithmForPublicKey => {
            CertificateError::UnsupportedSignatureAlgorithm.into()
        }
        UnsupportedSignatureAlgorithmContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                supported_algorithms: cx.supported_algorithms,
            }
            .into()
        }
        UnsupportedSignatureAlgorithmForPublicKeyContext(cx) => {
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: cx.signature_algorithm_id,
                public_key_algorithm_id: cx.public_key_algorithm_id,
            }
            .into()
        }
        InvalidCrlSignatureForPublicKey => CertRevocationListError::BadSignature.into(),
        UnsupportedCrlSignatureAlgorithm
        | UnsupportedCrlSignatureAlgorithmForPublicKey
        | UnsupportedCrlSignatureAlgorithmContext(_)
        | UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => {
            CertRevocationListError::UnsupportedSignatureAlgorithm.into()
        }
        RequiredEkuNotFound | RequiredEkuNotFoundContext(_) => {
            CertificateError::InvalidPurpose.into()
        }
        e => CertificateError::Other(OtherError(Arc::new(e))).into(),
    }
}
