//! What a listener judges client certificates by ([`Trust`]): the roots of
//! `ca` (the only trust anchors), the configured intermediates, and the
//! CRLs, checked together before they go into service.
//!
//! - An intermediate must be a CA certificate issued under the roots
//!   (directly or through another intermediate of the file); it completes
//!   client chains and verifies the CRLs it issues, but is never an anchor,
//!   so the root's CRL can revoke it.
//! - A CRL that revokes a certificate of the `ca` bundle itself is refused:
//!   a revoked CA cannot stay a trust anchor, and CRLs do not apply to
//!   anchors, so honouring it would mean dropping the CA silently.
//! - Per issuer, CRLs never go backwards: the newest CRL of each issuer in
//!   the files must not be older than the newest one loaded since start
//!   ([`CrlMarks`]); older ones of the same issuer next to it are shadowed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use super::anchors::Anchors;
use super::crl::{check_crl, signed_by, CheckedCrl, CrlIssuer, CrlMark};
use super::identity::{CertInfo, CrlInfo};
use super::material::{parse_certs, parse_crls, Material, Part};
use super::verifier::ClientVerifier;
use super::{invalid, TlsLoadError};
use crate::config::{CrlScope, TlsConfig};

/// The newest CRL of each issuer loaded since start.
pub(super) type CrlMarks = BTreeMap<CrlIssuer, CrlMark>;

/// A listener's client certificate trust, checked and built.
pub(super) struct Trust {
    pub(super) anchors: Arc<Anchors>,
    pub(super) intermediates: Vec<CertInfo>,
    /// In load order.
    pub(super) crls: Vec<CrlInfo>,
    pub(super) marks: CrlMarks,
    /// What an operator should know about how the material is applied.
    pub(super) notes: Vec<String>,
    pub(super) verifier: Arc<ClientVerifier>,
}

impl Trust {
    /// Loads `cfg`'s trust from `m`, with `ca_path` the CA bundle, after
    /// material whose CRL marks were `previous`.
    pub(super) fn load(
        cfg: &TlsConfig,
        ca_path: &Path,
        m: &Material,
        previous: &CrlMarks,
        now: i64,
        provider: &CryptoProvider,
    ) -> Result<Trust, TlsLoadError> {
        let anchors = Arc::new(Anchors::parse(ca_path, m.bytes(Part::Ca))?);
        let intermediates = match &cfg.intermediates {
            Some(path) => chain_intermediates(path, m.bytes(Part::Intermediates), &anchors)?,
            None => Vec::new(),
        };
        let issuers: Vec<CertificateDer<'static>> = anchors
            .certs
            .iter()
            .chain(&intermediates)
            .cloned()
            .collect();
        let mut checked = Vec::new();
        for (path, data) in m.crls() {
            for der in parse_crls(path, data)? {
                checked.push(check_crl(path, &der, &issuers, cfg, now)?);
            }
        }
        let effective = newest_per_issuer(&checked);
        for c in effective.iter().map(|&i| &checked[i]) {
            if let Some(old) = previous.get(&c.issuer) {
                if c.mark.older_than(old) {
                    return Err(c.rollback(old));
                }
            }
        }
        let mut notes = anchors
            .outside_validity(now)
            .into_iter()
            .filter(|a| !a.expired)
            .map(|a| {
                format!(
                    "CA certificate {} (serial {}) is not valid yet: it is no trust anchor until then",
                    a.subject, a.serial
                )
            })
            .collect::<Vec<_>>();
        {
            let in_effect: Vec<&CheckedCrl> = effective.iter().map(|&i| &checked[i]).collect();
            refuse_revoked_anchors(ca_path, &anchors.certs, &in_effect)?;
            notes.extend(revoked_intermediates(&intermediates, &in_effect, cfg));
        }
        let mut marks = previous.clone();
        for &i in &effective {
            marks.insert(checked[i].issuer.clone(), checked[i].mark.clone());
        }
        let crls = checked.iter().map(|c| c.info.clone()).collect();
        let intermediate_infos = intermediates
            .iter()
            .map(|c| CertInfo::from_der(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(ca_path, e))?;
        // WebPKI takes the first CRL of an issuer: the newest ones go first.
        let mut order = effective.clone();
        order.extend((0..checked.len()).filter(|i| !effective.contains(i)));
        let mut slots: Vec<Option<CheckedCrl>> = checked.into_iter().map(Some).collect();
        let in_order = order
            .into_iter()
            .filter_map(|i| slots[i].take())
            .map(|c| c.crl)
            .collect();
        let verifier = Arc::new(ClientVerifier::new(
            anchors.clone(),
            intermediates,
            in_order,
            cfg.crl_policy,
            cfg.client_auth,
            provider.signature_verification_algorithms,
        ));
        Ok(Trust {
            anchors,
            intermediates: intermediate_infos,
            crls,
            marks,
            notes,
            verifier,
        })
    }
}

/// The index of the newest CRL of each issuer, in load order.
fn newest_per_issuer(crls: &[CheckedCrl]) -> Vec<usize> {
    let mut newest: BTreeMap<&CrlIssuer, usize> = BTreeMap::new();
    for (i, c) in crls.iter().enumerate() {
        let best = newest.entry(&c.issuer).or_insert(i);
        if crls[*best].mark.older_than(&c.mark) {
            *best = i;
        }
    }
    let mut v: Vec<usize> = newest.into_values().collect();
    v.sort_unstable();
    v
}

/// The intermediates file `data` (read from `path`): CA certificates, each
/// issued by a root of `anchors` or by another intermediate that is.
fn chain_intermediates(
    path: &Path,
    data: &[u8],
    anchors: &Anchors,
) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let certs = parse_certs(path, data)?;
    let parsed = parse_all(path, &certs)?;
    let roots = parse_all(path, &anchors.certs)?;
    for c in &parsed {
        if !c
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca)
        {
            return Err(invalid(
                path,
                format!(
                    "{} (serial {}) is not a CA certificate (no basicConstraints CA:TRUE): intermediates holds CA certificates only",
                    c.subject(),
                    serial(c)
                ),
            ));
        }
    }
    let algorithms = super::provider().signature_verification_algorithms.all;
    let mut known: Vec<&X509Certificate<'_>> = roots.iter().collect();
    let mut chained = vec![false; parsed.len()];
    let mut progress = true;
    while progress {
        progress = false;
        for (i, c) in parsed.iter().enumerate() {
            let issued = |k: &&X509Certificate<'_>| {
                k.subject().as_raw() == c.issuer().as_raw()
                    && signed_by(&certs[i], k.public_key().raw, algorithms)
            };
            if !chained[i] && known.iter().any(issued) {
                chained[i] = true;
                known.push(c);
                progress = true;
            }
        }
    }
    if let Some(i) = chained.iter().position(|c| !c) {
        return Err(invalid(
            path,
            format!(
                "intermediate CA certificate {} (serial {}) is not issued by a CA of the `ca` bundle, nor by another intermediate that is",
                parsed[i].subject(),
                serial(&parsed[i])
            ),
        ));
    }
    Ok(certs)
}

fn parse_all<'a>(
    path: &Path,
    certs: &'a [CertificateDer<'static>],
) -> Result<Vec<X509Certificate<'a>>, TlsLoadError> {
    certs
        .iter()
        .map(|c| {
            x509_parser::parse_x509_certificate(c)
                .map(|(_, c)| c)
                .map_err(|e| invalid(path, format!("certificate does not parse: {e}")))
        })
        .collect()
}

fn serial(c: &X509Certificate<'_>) -> String {
    c.raw_serial_as_string().replace(':', "")
}

/// Refuses CRLs that revoke a CA certificate of the `ca` bundle.
fn refuse_revoked_anchors(
    ca_path: &Path,
    anchors: &[CertificateDer<'static>],
    crls: &[&CheckedCrl],
) -> Result<(), TlsLoadError> {
    for ca in parse_all(ca_path, anchors)? {
        if let Some(crl) = crls.iter().find(|crl| crl.revokes(&ca)) {
            return Err(invalid(
                &crl.path,
                format!(
                    "CRL for {} revokes CA certificate {} (serial {}) of the CA bundle {}: a revoked CA cannot be a trust anchor; remove it from the bundle",
                    crl.info.issuer,
                    ca.subject(),
                    serial(&ca),
                    ca_path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Notes on configured intermediates that a CRL in effect revokes.
fn revoked_intermediates(
    intermediates: &[CertificateDer<'static>],
    crls: &[&CheckedCrl],
    cfg: &TlsConfig,
) -> Vec<String> {
    let mut notes = Vec::new();
    for der in intermediates {
        let Ok((_, c)) = x509_parser::parse_x509_certificate(der) else {
            continue;
        };
        let Some(crl) = crls.iter().find(|crl| crl.revokes(&c)) else {
            continue;
        };
        let effect = match cfg.crl_policy.scope {
            CrlScope::Chain => ": every client certificate under it is refused",
            CrlScope::Leaf => {
                ", but crl_scope = \"leaf\" checks client certificates only: certificates under it are still accepted"
            }
        };
        notes.push(format!(
            "intermediate CA certificate {} (serial {}) is revoked by the CRL for {}{effect}",
            c.subject(),
            serial(&c),
            crl.info.issuer
        ));
    }
    notes
}
