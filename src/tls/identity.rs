//! What logs, status, metrics and identity rules show of a certificate or
//! a CRL.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

use super::digest::hex;
use crate::config::identity::CertNames;

/// Identity fields of a certificate, for logs, status and identity rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    /// The subject's commonNames (for identity rules' `issuer_cn` checks).
    pub cn: Vec<String>,
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
        Ok(CertInfo::of(&c))
    }

    /// A client's certificate, parsed once: what its log line shows, and
    /// the names identity rules match (`[listener.identity]`).
    pub fn client(der: &[u8]) -> Result<(CertInfo, CertNames), String> {
        let (_, c) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate does not parse: {e}"))?;
        let info = CertInfo::of(&c);
        let (mut san_uri, mut san_dns) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => san_uri.push(u.to_string()),
                    GeneralName::DNSName(d) => san_dns.push(d.to_string()),
                    _ => {}
                }
            }
        }
        let names = CertNames {
            cn: info.cn.clone(),
            san_uri,
            san_dns,
            subject: info.subject.clone(),
            issuer_cn: common_names(c.issuer()),
        };
        Ok((info, names))
    }

    fn of(c: &X509Certificate<'_>) -> CertInfo {
        CertInfo {
            subject: c.subject().to_string(),
            cn: common_names(c.subject()),
            issuer: c.issuer().to_string(),
            serial: c.raw_serial_as_string().replace(':', ""),
            fingerprint: String::new(),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
        }
    }
}

/// The commonName values of `name` that are text.
fn common_names(name: &X509Name<'_>) -> Vec<String> {
    name.iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect()
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
    /// Its CRL number (decimal), when it has one.
    pub number: Option<String>,
}

impl CrlInfo {
    pub fn from_der(der: &[u8]) -> Result<CrlInfo, String> {
        let (_, crl) =
            x509_parser::parse_x509_crl(der).map_err(|e| format!("CRL does not parse: {e}"))?;
        Ok(CrlInfo::from_parsed(&crl))
    }

    pub(super) fn from_parsed(
        crl: &x509_parser::revocation_list::CertificateRevocationList<'_>,
    ) -> CrlInfo {
        CrlInfo {
            issuer: crl.issuer().to_string(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked: crl.iter_revoked_certificates().count(),
            number: crl.crl_number().map(|n| n.to_string()),
        }
    }
}
