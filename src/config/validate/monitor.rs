//! `[monitor]`: the topology monitor's account and interval.

use std::path::Path;

use toml::Spanned;

use super::{duration_or, warn_if_exposed};
use crate::config::model::{MonitorConfig, DEFAULT_MONITOR_INTERVAL};
use crate::config::problems::Problems;
use crate::config::raw::RawMonitor;
use crate::config::values::resolve;

pub(super) fn validate_monitor(
    m: Spanned<RawMonitor>,
    base: &Path,
    p: &mut Problems<'_>,
) -> MonitorConfig {
    let span = m.span();
    let m = m.into_inner();
    let password = match (&m.password, &m.password_file) {
        (Some(pw), None) => pw.get_ref().clone(),
        (None, Some(f)) => {
            let path = resolve(f.get_ref(), base);
            match std::fs::read_to_string(&path) {
                Ok(s) => {
                    warn_if_exposed(&path, "monitor password file", p);
                    s.trim_end_matches(['\n', '\r']).to_string()
                }
                Err(e) => {
                    p.at(
                        f.span(),
                        format!("cannot read password_file {}: {e}", path.display()),
                    );
                    String::new()
                }
            }
        }
        (Some(_), Some(f)) => {
            p.at(
                f.span(),
                "[monitor] takes password or password_file, not both",
            );
            String::new()
        }
        (None, None) => {
            p.at(span, "[monitor] needs password or password_file");
            String::new()
        }
    };
    let interval = duration_or(&m.interval, DEFAULT_MONITOR_INTERVAL, p);
    if interval.is_zero() {
        if let Some(i) = &m.interval {
            p.at(i.span(), "[monitor] interval must be more than zero");
        }
    }
    MonitorConfig {
        user: m.user.into_inner(),
        password,
        interval,
    }
}
