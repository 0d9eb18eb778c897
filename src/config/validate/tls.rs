//! `[listener.tls]` and `[backend.tls]`: the files exist, the settings fit
//! together, and (through the caller's [`MaterialCheck`]) the material
//! loads.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::{duration_or, identity, value, warn_if_exposed, warn_if_writable};
use crate::config::model::{
    BackendAddr, BackendTlsConfig, CertRefusal, ClientAuth, CrlPolicy, TlsConfig,
    DEFAULT_CLOCK_SKEW,
};
use crate::config::problems::Problems;
use crate::config::raw::{RawBackendTls, RawIdentity, RawTls};
use crate::config::suites;
use crate::config::values::{host_of, resolve};
use crate::config::MaterialCheck;

/// The path of a file key, resolved against `base`; a problem when the file
/// cannot be examined.
fn existing(s: &Spanned<String>, what: &str, base: &Path, p: &mut Problems<'_>) -> PathBuf {
    let path = resolve(s.get_ref(), base);
    if let Err(e) = std::fs::metadata(&path) {
        p.at(s.span(), format!("{what} {}: {e}", path.display()));
    }
    path
}

/// A CRL file, or a CRL directory and the CRL files in it (`*.pem`,
/// `*.crl`), that others can change: whoever can write them decides which
/// certificates are revoked (and can remove a revocation).
fn warn_if_crl_writable(path: &Path, p: &mut Problems<'_>) {
    const CONTROLS: &str = "which certificates are revoked";
    if !path.is_dir() {
        warn_if_writable(path, "CRL file", CONTROLS, p);
        return;
    }
    warn_if_writable(path, "CRL directory", CONTROLS, p);
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "pem" || e == "crl") && f.is_file())
        .collect();
    files.sort();
    for f in files {
        warn_if_writable(&f, "CRL file", CONTROLS, p);
    }
}

/// The `[listener.tls]` of listener number `index`. Its material is loaded
/// only when the file has no problem so far: one broken file then yields
/// one message, not a cascade.
pub(super) fn validate_tls(
    index: usize,
    t: Spanned<RawTls>,
    identity: Option<(&str, Spanned<RawIdentity>)>,
    base: &Path,
    material: &mut dyn MaterialCheck,
    p: &mut Problems<'_>,
) -> TlsConfig {
    let span = t.span();
    let t = t.into_inner();
    let client_auth = value(&t.client_auth).unwrap_or(ClientAuth::Required);
    let cert = existing(&t.cert, "certificate", base, p);
    let key = existing(&t.key, "private key", base, p);
    warn_if_exposed(&key, "TLS private key", p);
    let ca = t.ca.as_ref().map(|c| existing(c, "CA bundle", base, p));
    if let Some(ca) = &ca {
        warn_if_writable(ca, "CA bundle", "which client certificates are trusted", p);
    }
    let intermediates = t
        .intermediates
        .as_ref()
        .map(|c| existing(c, "intermediate CA bundle", base, p));
    if let Some(i) = &intermediates {
        warn_if_writable(
            i,
            "intermediate CA bundle",
            "which client certificates are trusted",
            p,
        );
    }
    let crl: Vec<PathBuf> = t.crl.iter().map(|c| existing(c, "CRL", base, p)).collect();
    for c in &crl {
        warn_if_crl_writable(c, p);
    }
    if ca.is_none() && client_auth != ClientAuth::None {
        p.at(
            span.clone(),
            format!(
                "client_auth = \"{}\" needs `ca` (the trust anchors client certificates are checked against)",
                client_auth.as_str()
            ),
        );
    }
    if !crl.is_empty() && client_auth == ClientAuth::None {
        p.at(span.clone(), "crl is set but client_auth = \"none\": no client certificate would be checked against it");
    }
    if let (Some(i), ClientAuth::None) = (&t.intermediates, client_auth) {
        p.at(i.span(), "intermediates is set but client_auth = \"none\": no client certificate or CRL would be checked against them");
    }
    let cert_refusal = value(&t.cert_refusal).unwrap_or_default();
    if cert_refusal != CertRefusal::TlsAlert && client_auth == ClientAuth::None {
        p.at(
            span.clone(),
            format!(
                "cert_refusal = \"{}\" but client_auth = \"none\": no client certificate is checked, so none is refused",
                cert_refusal.as_str()
            ),
        );
    }
    let min_version = value(&t.min_version).unwrap_or_default();
    let cipher_suites = t.cipher_suites.as_ref().map(|l| {
        l.get_ref()
            .iter()
            .map(|n| n.get_ref().clone())
            .collect::<Vec<_>>()
    });
    if let Err(e) = suites::resolve(min_version, cipher_suites.as_deref()) {
        let at = match (&t.cipher_suites, &t.min_version) {
            (Some(l), _) => l.span(),
            (None, Some(m)) => m.span(),
            (None, None) => span.clone(),
        };
        p.at(at, e);
    }
    let identity = identity.and_then(|(listener, i)| {
        if client_auth != ClientAuth::Required {
            p.at(
                i.span(),
                format!(
                    "[listener.identity] needs client_auth = \"required\" (it is \"{}\"): a client without a certificate would have no identity to check",
                    client_auth.as_str()
                ),
            );
        }
        identity::validate_identity(listener, &i, p)
    });
    let cfg = TlsConfig {
        min_version,
        cipher_suites,
        cert,
        key,
        ca,
        intermediates,
        crl,
        clock_skew: duration_or(&t.clock_skew, DEFAULT_CLOCK_SKEW, p),
        client_auth,
        on_revoke: value(&t.on_revoke).unwrap_or_default(),
        crl_policy: CrlPolicy {
            scope: value(&t.crl_scope).unwrap_or_default(),
            expired: value(&t.crl_expired).unwrap_or_default(),
            unknown: value(&t.unknown_revocation).unwrap_or_default(),
        },
        cert_refusal,
        identity,
    };
    if p.count() == 0 {
        // Files exist: the caller loads and builds the whole TLS config now,
        // so a config that validates can be served.
        if let Err(e) = material.listener_tls(index, &cfg) {
            p.at(span, e);
        }
    }
    cfg
}

/// The `[backend.tls]` of backend number `index`, reached at `address`. Its
/// material is loaded when this section has no problem of its own.
pub(super) fn validate_backend_tls(
    index: usize,
    t: Spanned<RawBackendTls>,
    address: &BackendAddr,
    base: &Path,
    material: &mut dyn MaterialCheck,
    p: &mut Problems<'_>,
) -> BackendTlsConfig {
    let span = t.span();
    let t = t.into_inner();
    let problems_before = p.count();
    let ca = existing(&t.ca, "CA bundle", base, p);
    warn_if_writable(
        &ca,
        "CA bundle",
        "which backend certificates are trusted",
        p,
    );
    let client_cert = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            let key = existing(k, "private key", base, p);
            warn_if_exposed(&key, "outbound TLS private key", p);
            Some((existing(c, "client certificate", base, p), key))
        }
        (None, None) => None,
        (Some(c), None) => {
            p.at(c.span(), "[backend.tls] cert needs key (or neither)");
            None
        }
        (None, Some(k)) => {
            p.at(k.span(), "[backend.tls] key needs cert (or neither)");
            None
        }
    };
    let server_name = match (&t.server_name, address) {
        (Some(n), _) => n.get_ref().clone(),
        (None, BackendAddr::Tcp(a)) => host_of(a).to_string(),
        (None, BackendAddr::Unix(_)) => {
            p.at(
                span.clone(),
                "[backend.tls] on a unix: backend needs server_name (the name its certificate is valid for)",
            );
            String::new()
        }
    };
    let cfg = BackendTlsConfig {
        ca,
        client_cert,
        server_name,
    };
    if p.count() == problems_before {
        if let Err(e) = material.backend_tls(index, &cfg) {
            p.at(span, e);
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::*;

    /// Records which TLS sections validation asked for, and fails those it is
    /// told to.
    #[derive(Default)]
    struct Recorder {
        asked: Vec<String>,
        fail_listener: Option<usize>,
    }

    impl MaterialCheck for Recorder {
        fn listener_tls(&mut self, index: usize, tls: &TlsConfig) -> Result<(), String> {
            self.asked
                .push(format!("listener {index} {}", tls.cert.display()));
            match self.fail_listener {
                Some(i) if i == index => Err(format!("cannot load {}", tls.cert.display())),
                _ => Ok(()),
            }
        }

        fn backend_tls(&mut self, index: usize, tls: &BackendTlsConfig) -> Result<(), String> {
            self.asked
                .push(format!("backend {index} {}", tls.ca.display()));
            Err(format!("bad CA {}", tls.ca.display()))
        }
    }

    #[test]
    fn material_is_asked_for_where_its_error_belongs() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let src = r#"[[backend]]
name = "b"
address = "127.0.0.1:3306"
[backend.tls]
ca = "ca.pem"
[[backend]]
name = "c"
address = "unix:/c.sock"
[backend.tls]
ca = "ca.pem"
[[listener]]
name = "one"
address = "127.0.0.1:3307"
route = "b"
[listener.tls]
cert = "c.pem"
key = "k.pem"
ca = "ca.pem"
[[listener]]
name = "two"
address = "127.0.0.1:3308"
route = "b"
idle_timeout = "x"
"#;
        let run = |recorder: &mut Recorder| {
            Config::check_toml(src, Path::new("test.toml"), dir.path(), recorder)
                .result
                .unwrap_err()
        };
        // Backend "b" is loaded (its section is fine) and fails at its line;
        // backend "c" has a problem of its own, so it is not loaded; after a
        // problem, no listener's material is loaded either.
        let mut r = Recorder::default();
        let e = run(&mut r);
        let ca = dir.path().join("ca.pem");
        assert_eq!(r.asked, vec![format!("backend 0 {}", ca.display())]);
        let lines: Vec<_> = e.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(4), Some(9), Some(23)], "{e}");
        assert_eq!(e.problems[0].message, format!("bad CA {}", ca.display()));

        // Without the backends' TLS, the listener's load error stands between
        // the problems found before and after it.
        let src = src.replacen("[backend.tls]\nca = \"ca.pem\"\n", "", 2);
        let mut r = Recorder {
            fail_listener: Some(0),
            ..Recorder::default()
        };
        let e = Config::check_toml(&src, Path::new("test.toml"), dir.path(), &mut r)
            .result
            .unwrap_err();
        let cert = dir.path().join("c.pem");
        assert_eq!(r.asked, vec![format!("listener 0 {}", cert.display())]);
        let found: Vec<_> = e
            .problems
            .iter()
            .map(|p| (p.line, p.message.clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (Some(11), format!("cannot load {}", cert.display())),
                (
                    Some(19),
                    "invalid duration \"x\": expected a number and a unit, like \"500ms\", \"10s\", \"5m\"".into()
                ),
            ]
        );
    }
}
