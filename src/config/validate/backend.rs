//! `[[backend]]`: names, addresses, `advertise`, outbound TLS.

use std::collections::HashSet;
use std::path::Path;

use toml::Spanned;

use super::{duration_or, tls};
use crate::config::failover::{validate_target, FailoverTarget};
use crate::config::model::{BackendAddr, BackendConfig, TopologyRoute, DEFAULT_CONNECT_TIMEOUT};
use crate::config::problems::Problems;
use crate::config::raw::RawBackend;
use crate::config::values::{parse_backend_addr, valid_name};
use crate::config::MaterialCheck;

/// Every backend, in file order, and the set of their (valid) names.
pub(super) fn validate_backends(
    raw: Vec<Spanned<RawBackend>>,
    base: &Path,
    material: &mut dyn MaterialCheck,
    p: &mut Problems<'_>,
) -> (Vec<BackendConfig>, HashSet<String>) {
    let mut names = HashSet::new();
    let mut backends = Vec::new();
    for (index, b) in raw.into_iter().enumerate() {
        let b = b.into_inner();
        check_name(&b.name, &mut names, p);
        let address = match parse_backend_addr(b.address.get_ref(), base) {
            Ok(a) => a,
            Err(e) => {
                p.at(b.address.span(), e);
                BackendAddr::Tcp(String::new())
            }
        };
        let tls = b
            .tls
            .map(|t| tls::validate_backend_tls(index, t, &address, base, material, p));
        let advertise = b.advertise.map(|a| advertise(a, p));
        backends.push(BackendConfig {
            name: b.name.into_inner(),
            address,
            connect_timeout: duration_or(&b.connect_timeout, DEFAULT_CONNECT_TIMEOUT, p),
            tls,
            advertise,
            proxy_protocol: b.proxy_protocol,
        });
    }
    (backends, names)
}

/// A backend name is valid, unique and not a route keyword; valid unique
/// names are added to `names`.
fn check_name(name: &Spanned<String>, names: &mut HashSet<String>, p: &mut Problems<'_>) {
    let text = name.get_ref();
    if !valid_name(text) {
        p.at(
            name.span(),
            format!(
                "backend name {text:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
            ),
        );
    } else if !names.insert(text.clone()) {
        p.at(name.span(), format!("duplicate backend name {text:?}"));
    } else if TopologyRoute::parse(text).is_some() {
        p.at(
            name.span(),
            format!("backend name {text:?} is reserved (it is a route)"),
        );
    }
}

/// `advertise`: the `host:port` clients are redirected to when this backend
/// is the primary, held to the same rules as a `failover_target` address.
fn advertise(a: Spanned<String>, p: &mut Problems<'_>) -> String {
    let span = a.span();
    let text = a.into_inner();
    match FailoverTarget::from(text.as_str()) {
        FailoverTarget::Primary => p.at(span, "advertise must be \"host:port\""),
        FailoverTarget::Address(addr) => {
            if let Err(e) = validate_target(&addr) {
                p.at(span, e.replace("failover_target", "advertise"));
            }
        }
    }
    text
}
