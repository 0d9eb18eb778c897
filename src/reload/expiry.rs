//! Expiry warnings for the TLS material in service: certificates (leaf
//! and CAs) and CRLs that expire within `[tls_reload] expiry_warning`, or
//! already did, are logged at every load and then every `WARN_REPEAT` (6 h).

use std::time::{Duration, Instant, SystemTime};

use super::reloadable::{owner_event, Owner, Reloadable};
use crate::state::ProxyState;
use crate::sync::lock;
use crate::time::{rfc3339, unix_seconds};
use crate::tls::{ClientTls, ServerTls};

/// Expiry warnings repeat this often while something stays inside the
/// warning window (and at every load).
const WARN_REPEAT: Duration = Duration::from_secs(6 * 3600);

/// Expiry items of a listener's material: (description, Unix time).
pub(super) fn expiry_items(tls: &ServerTls) -> Vec<(String, i64)> {
    let mut items = vec![(
        format!(
            "certificate {} (serial {})",
            tls.leaf.subject, tls.leaf.serial
        ),
        tls.leaf.not_after,
    )];
    items.extend(tls.cas.iter().map(|ca| {
        (
            format!("CA certificate {} (serial {})", ca.subject, ca.serial),
            ca.not_after,
        )
    }));
    items.extend(tls.intermediates.iter().map(|ca| {
        (
            format!(
                "intermediate CA certificate {} (serial {})",
                ca.subject, ca.serial
            ),
            ca.not_after,
        )
    }));
    items.extend(
        tls.crls
            .iter()
            .filter_map(|crl| Some((format!("CRL for {}", crl.issuer), crl.next_update?))),
    );
    items
}

/// Expiry items of a backend's outbound material.
pub(super) fn client_expiry_items(tls: &ClientTls) -> Vec<(String, i64)> {
    tls.leaf
        .iter()
        .map(|c| {
            (
                format!("client certificate {} (serial {})", c.subject, c.serial),
                c.not_after,
            )
        })
        .chain(tls.cas.iter().map(|ca| {
            (
                format!("CA certificate {} (serial {})", ca.subject, ca.serial),
                ca.not_after,
            )
        }))
        .collect()
}

/// Logs the `items` that expire within `window` (or already did), at most
/// every [`WARN_REPEAT`] per item unless `fresh` (just loaded). Returns how
/// many items are inside the window.
pub(super) fn warn_expiry<T>(
    owner: Owner<'_>,
    rt: &Reloadable<T>,
    items: &[(String, i64)],
    window: Duration,
    fresh: bool,
) -> usize {
    let now = unix_seconds(SystemTime::now());
    let horizon = now.saturating_add(window.as_secs() as i64);
    let mut warned = lock(&rt.warned);
    let mut inside = 0;
    for (what, at) in items.iter().filter(|(_, at)| *at <= horizon) {
        inside += 1;
        let due = fresh || warned.get(what).is_none_or(|t| t.elapsed() >= WARN_REPEAT);
        if !due {
            continue;
        }
        warned.insert(what.clone(), Instant::now());
        if *at <= now {
            owner_event!(tracing::Level::ERROR, owner, expired_at = %rfc3339(*at),
                "{what} has expired: connections it concerns are refused until new material is published");
        } else {
            let days = (at - now) as f64 / 86_400.0;
            owner_event!(tracing::Level::WARN, owner, expires_at = %rfc3339(*at),
                "{what} expires in {days:.1} days: publish a renewal");
        }
    }
    inside
}

/// Logs what an operator should know about how a listener's trust
/// material applies ([`ServerTls::notes`]), at each load.
pub(super) fn log_notes(owner: Owner<'_>, tls: &ServerTls) {
    for note in &tls.notes {
        owner_event!(tracing::Level::WARN, owner, "{note}");
    }
}

/// Periodic expiry check of every listener's and backend's material in
/// service.
pub fn check_expiry(state: &ProxyState) {
    expiry_pass(state, false);
}

/// Logs expiry warnings for the material loaded at start.
pub fn warn_at_start(state: &ProxyState) {
    expiry_pass(state, true);
}

fn expiry_pass(state: &ProxyState, fresh: bool) {
    let window = state.tls_reload.expiry_warning;
    for l in &state.listeners {
        if let Some(rt) = &l.runtime.tls {
            let tls = rt.material.load();
            let owner = Owner::Listener(l.name());
            if fresh {
                log_notes(owner, &tls);
            }
            warn_expiry(owner, &rt.material, &expiry_items(&tls), window, fresh);
        }
    }
    for b in &state.backends {
        if let Some(rt) = &b.tls {
            let items = client_expiry_items(&rt.load());
            warn_expiry(Owner::Backend(&b.config.name), rt, &items, window, fresh);
        }
    }
}
