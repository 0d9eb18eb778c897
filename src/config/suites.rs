//! A listener's TLS policy: the oldest version it accepts and the cipher
//! suites it offers (`[listener.tls] min_version`, `cipher_suites`), by the
//! names rustls gives them, resolved against the aws-lc-rs provider.
//! Config validation and the build of a listener's rustls config both use
//! [`resolve`], so a file that validates is one that builds.

use rustls::crypto::aws_lc_rs::{ALL_CIPHER_SUITES, DEFAULT_CIPHER_SUITES};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use super::model::TlsVersion;

/// What a listener offers: suites in the server's order of preference and
/// the protocol versions they allow.
#[derive(Debug, Clone)]
pub struct Policy {
    pub suites: Vec<SupportedCipherSuite>,
    pub versions: Vec<&'static SupportedProtocolVersion>,
}

/// The name of a suite as rustls spells it (`TLS13_AES_128_GCM_SHA256`).
pub fn name(s: &SupportedCipherSuite) -> String {
    let suite = s.suite();
    suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_string)
}

/// Every suite name a listener may list, comma-separated.
pub fn valid_names() -> String {
    ALL_CIPHER_SUITES
        .iter()
        .map(name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_tls13(s: &SupportedCipherSuite) -> bool {
    s.tls13().is_some()
}

/// The suites and versions of `min_version` and `cipher_suites` (`None`:
/// the provider's defaults), or why they cannot be served: an unknown or
/// repeated name, an empty list, or nothing left at `min_version`. TLS 1.2
/// suites listed with `min_version = "1.3"` are not offered.
pub fn resolve(min_version: TlsVersion, names: Option<&[String]>) -> Result<Policy, String> {
    let listed: Vec<SupportedCipherSuite> = match names {
        None => DEFAULT_CIPHER_SUITES.to_vec(),
        Some([]) => {
            return Err(format!(
                "cipher_suites is empty: no client could connect; valid names: {}",
                valid_names()
            ))
        }
        Some(names) => {
            let mut out: Vec<SupportedCipherSuite> = Vec::new();
            for n in names {
                let Some(s) = ALL_CIPHER_SUITES.iter().find(|s| name(s) == *n) else {
                    return Err(format!(
                        "unknown cipher suite {n:?}; valid names: {}",
                        valid_names()
                    ));
                };
                if out.iter().any(|o| o.suite() == s.suite()) {
                    return Err(format!("cipher suite {n:?} is listed twice"));
                }
                out.push(*s);
            }
            out
        }
    };
    let suites: Vec<SupportedCipherSuite> = listed
        .into_iter()
        .filter(|s| min_version == TlsVersion::Tls12 || is_tls13(s))
        .collect();
    if suites.is_empty() {
        return Err(format!(
            "min_version = \"1.3\" but cipher_suites lists only TLS 1.2 suites: no client could connect; add one of {}",
            ALL_CIPHER_SUITES
                .iter()
                .filter(|s| is_tls13(s))
                .map(name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut versions = Vec::new();
    if suites.iter().any(is_tls13) {
        versions.push(&rustls::version::TLS13);
    }
    if suites.iter().any(|s| !is_tls13(s)) {
        versions.push(&rustls::version::TLS12);
    }
    Ok(Policy { suites, versions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_offer_both_versions() {
        let p = resolve(TlsVersion::Tls12, None).unwrap();
        assert_eq!(p.versions.len(), 2);
        assert_eq!(p.suites.len(), DEFAULT_CIPHER_SUITES.len());
        let p = resolve(TlsVersion::Tls13, None).unwrap();
        assert_eq!(p.versions, vec![&rustls::version::TLS13]);
        assert!(p.suites.iter().all(is_tls13));
    }

    #[test]
    fn allow_list_in_its_order() {
        let list = names(&[
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS13_AES_128_GCM_SHA256",
        ]);
        let p = resolve(TlsVersion::Tls12, Some(&list)).unwrap();
        assert_eq!(p.suites.iter().map(name).collect::<Vec<_>>(), list);
        assert_eq!(p.versions.len(), 2);
        // Only TLS 1.2 suites: TLS 1.3 is not offered at all.
        let p = resolve(TlsVersion::Tls12, Some(&list[..1])).unwrap();
        assert_eq!(p.versions, vec![&rustls::version::TLS12]);
        // min_version 1.3 drops the TLS 1.2 suite.
        let p = resolve(TlsVersion::Tls13, Some(&list)).unwrap();
        assert_eq!(
            p.suites.iter().map(name).collect::<Vec<_>>(),
            ["TLS13_AES_128_GCM_SHA256"]
        );
    }

    #[test]
    fn refusals_say_why() {
        let e = resolve(TlsVersion::Tls12, Some(&names(&["TLS_RSA_WITH_RC4"]))).unwrap_err();
        assert!(
            e.starts_with(
                "unknown cipher suite \"TLS_RSA_WITH_RC4\"; valid names: TLS13_AES_256_GCM_SHA384,"
            ),
            "{e}"
        );
        assert!(
            e.contains("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
            "{e}"
        );
        let e = resolve(
            TlsVersion::Tls13,
            Some(&names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"])),
        )
        .unwrap_err();
        assert!(e.contains("lists only TLS 1.2 suites"), "{e}");
        let e = resolve(TlsVersion::Tls12, Some(&[])).unwrap_err();
        assert!(e.starts_with("cipher_suites is empty"), "{e}");
        let twice = names(&["TLS13_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"]);
        let e = resolve(TlsVersion::Tls12, Some(&twice)).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }
}
