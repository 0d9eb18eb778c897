//! Checking a CRL before it is put in service: it parses, a CA of the
//! bundle signed it, and (unless the policy accepts stale CRLs) it is not
//! past its nextUpdate. The signature is checked with the TLS provider's
//! own algorithms over the DER, split by a small walker.

use std::path::Path;

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

use super::identity::CrlInfo;
use super::{invalid, provider, TlsLoadError};
use crate::config::{CrlExpired, TlsConfig};

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
pub(super) fn check_crl(
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
