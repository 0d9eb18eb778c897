//! Checking a CRL before it is put in service: it parses, a CA of the
//! bundle (or a configured intermediate) signed it, it is not dated in the
//! future, and (unless the policy accepts stale CRLs) it is not past its
//! nextUpdate. Signatures are checked with the TLS provider's own
//! algorithms over the DER, split by a small walker. [`CrlMark`] orders the
//! CRLs of one [`CrlIssuer`], so that a reload never goes backwards.

use std::path::Path;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use super::identity::CrlInfo;
use super::{invalid, provider, TlsLoadError};
use crate::config::{CrlExpired, TlsConfig};

/// Whether the signed DER object `signed` (a CRL or a certificate:
/// `SEQUENCE { tbs,
/// signatureAlgorithm, signatureValue }`) carries a valid signature by the
/// key in `spki` (a DER SubjectPublicKeyInfo). The algorithms are the TLS
/// provider's own, matched on their exact AlgorithmIdentifier encodings as
/// webpki matches them for certificate chains, so one crypto library checks
/// every signature portcullis relies on.
pub(super) fn signed_by(
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

/// Which CRLs succeed each other: one issuer (by name) signing with one
/// key. Two CAs of the same name (a renewal with a new key) number their
/// CRLs apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct CrlIssuer {
    name: Vec<u8>,
    key: Vec<u8>,
}

/// How recent a CRL is: its CRL number (big-endian, without leading zero
/// bytes) when it has one, and its thisUpdate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CrlMark {
    number: Option<Vec<u8>>,
    this_update: i64,
}

impl CrlMark {
    /// Whether a CRL of this mark was issued before one of `other`: by CRL
    /// number when both have one (and by thisUpdate for equal numbers),
    /// else by thisUpdate.
    pub(super) fn older_than(&self, other: &CrlMark) -> bool {
        match (&self.number, &other.number) {
            (Some(a), Some(b)) if a != b => (a.len(), a) < (b.len(), b),
            _ => self.this_update < other.this_update,
        }
    }

    fn describe(&self) -> String {
        let when = crate::time::rfc3339(self.this_update);
        match &self.number {
            Some(n) => format!("CRL number {}, thisUpdate {when}", number_text(n)),
            None => format!("no CRL number, thisUpdate {when}"),
        }
    }
}

fn number_text(n: &[u8]) -> String {
    if n.is_empty() {
        "0".into()
    } else if n.len() <= 8 {
        n.iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b))
            .to_string()
    } else {
        format!("0x{}", super::digest::hex(n))
    }
}

/// A CRL checked and ready to be put in service.
pub(super) struct CheckedCrl {
    pub(super) path: std::path::PathBuf,
    pub(super) info: CrlInfo,
    pub(super) issuer: CrlIssuer,
    pub(super) mark: CrlMark,
    pub(super) crl: webpki::CertRevocationList<'static>,
}

impl CheckedCrl {
    /// Whether it lists the certificate `cert` (issued by its issuer).
    pub(super) fn revokes(&self, cert: &x509_parser::certificate::X509Certificate<'_>) -> bool {
        cert.issuer().as_raw() == self.issuer.name.as_slice()
            && matches!(self.crl.find_serial(cert.raw_serial()), Ok(Some(_)))
    }

    /// The error for this CRL when it is older than `in_service`.
    pub(super) fn rollback(&self, in_service: &CrlMark) -> TlsLoadError {
        invalid(
            &self.path,
            format!(
                "CRL for {} ({}) is older than the one in service ({}): refused, the newer CRL stays in service (CRLs never go backwards; to load an older one, restart portcullis)",
                self.info.issuer,
                self.mark.describe(),
                in_service.describe()
            ),
        )
    }
}

/// A CRL must parse, be signed by a CA of `issuers` (the bundle's roots
/// and the configured intermediates), not be dated further ahead than
/// `clock_skew` and, unless the policy accepts stale CRLs, not be past its
/// nextUpdate.
pub(super) fn check_crl(
    path: &Path,
    der: &CertificateRevocationListDer<'_>,
    issuers: &[CertificateDer<'static>],
    cfg: &TlsConfig,
    now: i64,
) -> Result<CheckedCrl, TlsLoadError> {
    let (_, crl) = x509_parser::parse_x509_crl(der)
        .map_err(|e| invalid(path, format!("CRL does not parse: {e}")))?;
    let info = CrlInfo::from_parsed(&crl);
    let key = signer(path, der, &crl, &info, issuers, cfg.intermediates.is_some())?;
    let ahead = cfg.clock_skew.as_secs() as i64;
    if info.this_update > now.saturating_add(ahead) {
        return Err(invalid(
            path,
            format!(
                "CRL for {} is dated {} (its thisUpdate), more than clock_skew ({}s) ahead of this host's clock: refused; check the clocks of the CA and of this host",
                info.issuer,
                crate::time::rfc3339(info.this_update),
                ahead
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
    let owned = webpki::OwnedCertRevocationList::from_der(der)
        .map_err(|e| invalid(path, format!("provided CRL could not be parsed: {e:?}")))?;
    let number = crl.crl_number().map(|n| n.to_bytes_be()).map(|mut n| {
        let zeros = n.iter().take_while(|&&b| b == 0).count();
        n.drain(..zeros);
        n
    });
    Ok(CheckedCrl {
        path: path.to_path_buf(),
        mark: CrlMark {
            number,
            this_update: info.this_update,
        },
        issuer: CrlIssuer {
            name: crl.issuer().as_raw().to_vec(),
            key,
        },
        info,
        crl: owned.into(),
    })
}

/// The key (DER SubjectPublicKeyInfo) of the CA of `issuers` that signed
/// `der`; an error when none of that name did.
fn signer(
    path: &Path,
    der: &CertificateRevocationListDer<'_>,
    crl: &x509_parser::revocation_list::CertificateRevocationList<'_>,
    info: &CrlInfo,
    issuers: &[CertificateDer<'static>],
    with_intermediates: bool,
) -> Result<Vec<u8>, TlsLoadError> {
    let algorithms = provider().signature_verification_algorithms;
    let mut issuer_known = false;
    for ca in issuers {
        let Ok((_, ca)) = x509_parser::parse_x509_certificate(ca) else {
            continue;
        };
        if ca.subject().as_raw() != crl.issuer().as_raw() {
            continue;
        }
        issuer_known = true;
        if signed_by(der, ca.public_key().raw, algorithms.all) {
            return Ok(ca.public_key().raw.to_vec());
        }
    }
    let bundles = if with_intermediates {
        "the CA bundle or the intermediates"
    } else {
        "the CA bundle"
    };
    let what = if issuer_known {
        format!(
            "CRL for {} has a signature that no CA of that name in {bundles} made",
            info.issuer
        )
    } else {
        format!(
            "CRL issued by {} but no CA with that name is in {bundles}",
            info.issuer
        )
    };
    Err(invalid(path, what))
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

    #[test]
    fn crl_marks_order_by_number_then_by_this_update() {
        let mark = |number: Option<&[u8]>, this_update| CrlMark {
            number: number.map(<[u8]>::to_vec),
            this_update,
        };
        // By number, whatever the dates (a CA whose clock was wrong).
        assert!(mark(Some(&[5]), 100).older_than(&mark(Some(&[10]), 50)));
        assert!(!mark(Some(&[10]), 50).older_than(&mark(Some(&[5]), 100)));
        // Longer numbers are larger (big-endian, no leading zeros).
        assert!(mark(Some(&[0xff]), 0).older_than(&mark(Some(&[1, 0]), 0)));
        // Equal numbers, or a number missing on either side: by thisUpdate.
        assert!(mark(Some(&[7]), 1).older_than(&mark(Some(&[7]), 2)));
        assert!(mark(None, 1).older_than(&mark(Some(&[1]), 2)));
        assert!(mark(None, 1).older_than(&mark(None, 2)));
        // The same CRL again is not older.
        assert!(!mark(Some(&[7]), 2).older_than(&mark(Some(&[7]), 2)));
        assert!(!mark(None, 2).older_than(&mark(None, 2)));
        assert_eq!(number_text(&[1, 0]), "256");
        assert_eq!(number_text(&[]), "0");
        assert_eq!(number_text(&[1; 9]), "0x010101010101010101");
    }
}
