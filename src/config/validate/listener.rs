//! `[[listener]]`: names, addresses, routes, limits; its TLS and failover
//! keys are checked by their own files.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::{duration_or, failover, tls, value};
use crate::config::model::{
    ListenAddr, ListenerConfig, Route, TlsConfig, TopologyRoute, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKE_PACKET, DEFAULT_MAX_UNAUTHENTICATED,
    DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE, DEFAULT_PRIMARY_WAIT, DEFAULT_TLS_HANDSHAKE_TIMEOUT,
};
use crate::config::prefix::IpPrefix;
use crate::config::problems::Problems;
use crate::config::raw::RawListener;
use crate::config::values::{parse_listen_addr, valid_name};
use crate::config::MaterialCheck;

/// What the rest of the file says that a listener's checks depend on.
pub(super) struct Known<'a> {
    /// The (valid) backend names.
    pub(super) backend_names: &'a HashSet<String>,
    /// Whether there is a `[monitor]` (topology routes need one).
    pub(super) monitor: bool,
}

/// Names and addresses already taken by earlier listeners.
#[derive(Default)]
struct Taken {
    names: HashSet<String>,
    addrs: HashSet<ListenAddr>,
    /// Every valid address, whose and where, to be tried at the end.
    to_bind: Vec<ToBind>,
}

/// A listen address to be tried: whose (`listener "public"`), the address
/// and the span of its value.
pub(super) type ToBind = (String, ListenAddr, Range<usize>);

/// Every listener, in file order, the set of their addresses, and each
/// valid address to be tried.
pub(super) fn validate_listeners(
    raw: Vec<Spanned<RawListener>>,
    known: &Known<'_>,
    base: &Path,
    material: &mut dyn MaterialCheck,
    p: &mut Problems<'_>,
) -> (Vec<ListenerConfig>, HashSet<ListenAddr>, Vec<ToBind>) {
    if raw.is_empty() {
        p.global("no [[listener]] is configured: portcullis would accept nothing");
    }
    let mut taken = Taken::default();
    let mut listeners = Vec::new();
    for (index, l) in raw.into_iter().enumerate() {
        listeners.push(validate_listener(
            index, l, known, &mut taken, base, material, p,
        ));
    }
    (listeners, taken.addrs, taken.to_bind)
}

fn validate_listener(
    index: usize,
    l: Spanned<RawListener>,
    known: &Known<'_>,
    taken: &mut Taken,
    base: &Path,
    material: &mut dyn MaterialCheck,
    p: &mut Problems<'_>,
) -> ListenerConfig {
    let l_span = l.span();
    let mut l = l.into_inner();
    check_name(&l.name, &mut taken.names, p);
    let address = address(&l.address, &mut taken.addrs, base, p);
    let route = route(&l.route, known, p);
    let identity = l.identity.take();
    if let (Some(i), None) = (&identity, &l.tls) {
        p.at(
            i.span(),
            "[listener.identity] needs [listener.tls] with client_auth = \"required\": only a verified client certificate has an identity to check",
        );
    }
    let identity = identity.map(|i| (l.name.get_ref().as_str(), i));
    let tls = l
        .tls
        .take()
        .map(|t| tls::validate_tls(index, t, identity, base, material, p));
    if let Some(a) = &address {
        let what = format!("listener {:?}", l.name.get_ref());
        taken.to_bind.push((what, a.clone(), l.address.span()));
    }
    check_plaintext(&l, l_span.clone(), address.as_ref(), tls.as_ref(), p);
    let max_connections = at_least_one(
        &l.max_connections,
        "max_connections",
        DEFAULT_MAX_CONNECTIONS,
        p,
    );
    let max_unauthenticated = at_least_one(
        &l.max_unauthenticated,
        "max_unauthenticated",
        DEFAULT_MAX_UNAUTHENTICATED,
        p,
    );
    let max_unauthenticated_per_source = at_least_one(
        &l.max_unauthenticated_per_source,
        "max_unauthenticated_per_source",
        DEFAULT_MAX_UNAUTHENTICATED_PER_SOURCE,
        p,
    );
    let max_handshake_packet = match &l.max_handshake_packet {
        Some(m) if *m.get_ref() < 1024 || *m.get_ref() > 16 * 1024 * 1024 => {
            p.at(
                m.span(),
                "max_handshake_packet must be between 1024 and 16777216 bytes",
            );
            DEFAULT_MAX_HANDSHAKE_PACKET
        }
        Some(m) => *m.get_ref(),
        None => DEFAULT_MAX_HANDSHAKE_PACKET,
    };
    let trusted_proxies = trusted_proxies(&l, l_span.clone(), address.as_ref(), p);
    let failover = failover::validate_failover(&l, l_span, address.as_ref(), known.monitor, p);
    let handshake_timeout = duration_or(&l.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT, p);
    let tls_handshake_timeout =
        duration_or(&l.tls_handshake_timeout, DEFAULT_TLS_HANDSHAKE_TIMEOUT, p);
    if tls_handshake_timeout.is_zero() {
        if let Some(t) = &l.tls_handshake_timeout {
            p.at(t.span(), "tls_handshake_timeout must be more than zero");
        }
    }
    let idle_timeout =
        Some(duration_or(&l.idle_timeout, Duration::ZERO, p)).filter(|d| !d.is_zero());
    let primary_wait = duration_or(&l.primary_wait, DEFAULT_PRIMARY_WAIT, p);
    let max_replica_lag = l
        .max_replica_lag
        .as_ref()
        .map(|_| duration_or(&l.max_replica_lag, Duration::ZERO, p));
    ListenerConfig {
        name: l.name.into_inner(),
        address: address.unwrap_or(ListenAddr::Unix(PathBuf::new())),
        route,
        handshake_timeout,
        tls_handshake_timeout,
        max_connections,
        max_unauthenticated,
        max_unauthenticated_per_source,
        max_handshake_packet,
        idle_timeout,
        admin: l.admin,
        allow_proxy_user: l.allow_proxy_user,
        trusted_proxies,
        failover,
        tls,
        on_primary_change: value(&l.on_primary_change).unwrap_or_default(),
        primary_wait,
        max_replica_lag,
    }
}

/// `accept_proxy_protocol` and `trusted_proxies`: the prefixes PROXY
/// headers are read from, empty when off. Both keys or neither; a TCP
/// listener only (a Unix-socket peer has no address to trust).
fn trusted_proxies(
    l: &RawListener,
    l_span: Range<usize>,
    address: Option<&ListenAddr>,
    p: &mut Problems<'_>,
) -> Vec<IpPrefix> {
    let list = match (&l.trusted_proxies, l.accept_proxy_protocol) {
        (None, false) => return Vec::new(),
        (None, true) => {
            p.at(l_span, "accept_proxy_protocol = true needs trusted_proxies: the addresses or prefixes of the load balancers whose PROXY headers are believed");
            return Vec::new();
        }
        (Some(t), false) => {
            p.at(t.span(), "trusted_proxies is set but accept_proxy_protocol is not true: no PROXY header would be read");
            return Vec::new();
        }
        (Some(t), true) => t,
    };
    if let Some(ListenAddr::Unix(_)) = address {
        p.at(list.span(), "accept_proxy_protocol needs a TCP listener: a Unix-socket peer has no address to match trusted_proxies");
    }
    if list.get_ref().is_empty() {
        p.at(
            list.span(),
            "trusted_proxies is empty: no PROXY header would be believed",
        );
    }
    list.get_ref()
        .iter()
        .filter_map(|s| match IpPrefix::parse(s.get_ref()) {
            Ok(prefix) => Some(prefix),
            Err(e) => {
                p.at(s.span(), e);
                None
            }
        })
        .collect()
}

/// A count that must be at least 1, or `default` when not given.
fn at_least_one(
    v: &Option<Spanned<usize>>,
    key: &str,
    default: usize,
    p: &mut Problems<'_>,
) -> usize {
    match v {
        Some(m) if *m.get_ref() == 0 => {
            p.at(m.span(), format!("{key} must be at least 1"));
            1
        }
        Some(m) => *m.get_ref(),
        None => default,
    }
}

/// A listener name is valid and unique; valid unique names are added to
/// `names`.
fn check_name(name: &Spanned<String>, names: &mut HashSet<String>, p: &mut Problems<'_>) {
    let text = name.get_ref();
    if !valid_name(text) {
        p.at(
            name.span(),
            format!(
                "listener name {text:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
            ),
        );
    } else if !names.insert(text.clone()) {
        p.at(name.span(), format!("duplicate listener name {text:?}"));
    }
}

/// The listen address, unless invalid; it must not be another listener's.
fn address(
    a: &Spanned<String>,
    addrs: &mut HashSet<ListenAddr>,
    base: &Path,
    p: &mut Problems<'_>,
) -> Option<ListenAddr> {
    match parse_listen_addr(a.get_ref(), base) {
        Ok(addr) => {
            // Port 0 (any free port, used by tests) never collides.
            let any_port = matches!(&addr, ListenAddr::Tcp(sa) if sa.port() == 0);
            if !any_port && !addrs.insert(addr.clone()) {
                p.at(a.span(), format!("address {addr} is used by two listeners"));
            }
            Some(addr)
        }
        Err(e) => {
            p.at(a.span(), e);
            None
        }
    }
}

/// The route: a topology keyword (which needs `[monitor]`) or a backend
/// name (which must exist).
fn route(r: &Spanned<String>, known: &Known<'_>, p: &mut Problems<'_>) -> Route {
    let text = r.get_ref();
    if let Some(t) = TopologyRoute::parse(text) {
        if !known.monitor {
            p.at(
                r.span(),
                format!("route = {text:?} follows the topology: it needs a [monitor] section"),
            );
        }
        return Route::Topology(t);
    }
    if !known.backend_names.contains(text) {
        let names = if known.backend_names.is_empty() {
            "none".to_string()
        } else {
            let mut v: Vec<_> = known.backend_names.iter().cloned().collect();
            v.sort();
            v.join(", ")
        };
        p.at(
            r.span(),
            format!("route {text:?} names no [[backend]] (known: {names})"),
        );
    }
    Route::Backend(text.clone())
}

/// A non-loopback TCP listener without TLS needs `allow_plaintext = true`.
fn check_plaintext(
    l: &RawListener,
    l_span: Range<usize>,
    address: Option<&ListenAddr>,
    tls: Option<&TlsConfig>,
    p: &mut Problems<'_>,
) {
    if let (Some(ListenAddr::Tcp(sa)), None) = (address, tls) {
        if !sa.ip().is_loopback() && !l.allow_plaintext {
            p.at(
                l_span,
                format!(
                    "listener {:?} on non-loopback address {sa} has no [listener.tls]: clients would send passwords and data in clear; add TLS or set allow_plaintext = true",
                    l.name.get_ref()
                ),
            );
        }
    }
}
