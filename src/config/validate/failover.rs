//! A listener's `failover*` keys.

use std::ops::Range;

use crate::config::failover::{FailoverSettings, FailoverTarget, Follower, DEFAULT_ERROR_CODE};
use crate::config::model::ListenAddr;
use crate::config::problems::{Problems, Warning};
use crate::config::raw::RawListener;

/// The listener's initial failover settings. `l_span` is the listener's
/// table, `address` its address when valid, `monitor` whether the file has
/// a `[monitor]` (which `failover_target = "primary"` needs).
pub(super) fn validate_failover(
    l: &RawListener,
    l_span: Range<usize>,
    address: Option<&ListenAddr>,
    monitor: bool,
    p: &mut Problems<'_>,
) -> FailoverSettings {
    let failover = FailoverSettings {
        mode: l
            .failover
            .as_ref()
            .map(|m| *m.get_ref())
            .unwrap_or_default(),
        target: l
            .failover_target
            .as_ref()
            .map(|t| FailoverTarget::from(t.get_ref().as_str())),
        message: l.failover_message.as_ref().map(|t| t.get_ref().clone()),
        error_code: l
            .failover_error_code
            .as_ref()
            .map(|c| *c.get_ref())
            .unwrap_or(DEFAULT_ERROR_CODE),
        style: l
            .failover_style
            .as_ref()
            .map(|s| *s.get_ref())
            .unwrap_or_default(),
        followers: followers(l, p),
        pass_backend_redirect: l.pass_backend_redirect,
    };
    if failover.target == Some(FailoverTarget::Primary) && !monitor {
        if let Some(t) = &l.failover_target {
            p.at(
                t.span(),
                "failover_target = \"primary\" follows the topology: it needs a [monitor] section",
            );
        }
    }
    if let Err(e) = failover.validate() {
        // Point at the most specific key present.
        let span = [
            l.failover_target.as_ref().map(|t| t.span()),
            l.failover_message.as_ref().map(|t| t.span()),
            l.failover_error_code.as_ref().map(|t| t.span()),
            l.failover_style.as_ref().map(|t| t.span()),
            l.failover.as_ref().map(|t| t.span()),
        ]
        .into_iter()
        .flatten()
        .next()
        .unwrap_or(l_span);
        p.at(span, e);
    } else if let (Some(FailoverTarget::Address(t)), Some(a)) = (&failover.target, address) {
        if points_at(t, a) {
            p.warn(Warning::RedirectLoop {
                listener: l.name.get_ref().clone(),
                target: t.clone(),
            });
        }
    }
    failover
}

/// The listener's `failover_followers`, each problem reported at its entry.
fn followers(l: &RawListener, p: &mut Problems<'_>) -> Vec<Follower> {
    let Some(list) = &l.failover_followers else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in list.get_ref() {
        match entry.get_ref().parse::<Follower>() {
            Ok(f) => out.push(f),
            Err(e) => p.at(entry.span(), e),
        }
    }
    out
}

/// Whether `target` (`host:port`) names the listener at `addr` itself: a
/// loopback name or the machine's host name with the same port.
fn points_at(target: &str, addr: &ListenAddr) -> bool {
    let ListenAddr::Tcp(sa) = addr else {
        return false;
    };
    let Some((host, port)) = target.split_once(':') else {
        return false;
    };
    if port.parse::<u16>().ok() != Some(sa.port()) {
        return false;
    }
    let own_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host == "localhost"
        || host == own_name.trim()
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip == sa.ip())
}
