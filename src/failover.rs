//! Instant-failover redirect (DESIGN.md §5): settings, validation, and the
//! ERR packet that sends a client elsewhere.
//!
//! The packet is the one the MariaDB instant-failover design specified (it
//! never shipped in a server): ERR `ff`, the error code, `#HY000`, message
//! `|<human text>|<host>:<port>`. Redirect-aware clients follow the target;
//! others show the human text, which therefore names the target too.

use serde::{Deserialize, Serialize};

use crate::protocol::ErrPacket;

/// ER_INSTANT_FAILOVER in the server-side design; the published connector
/// patch listens for 4200 instead, so the code is configurable.
pub const DEFAULT_ERROR_CODE: u16 = 4196;
/// The design caps the whole message (both `|`s, text and target) below 512
/// bytes, the size of the server's error message buffer.
pub const MAX_MESSAGE_LEN: usize = 511;

/// Which clients of a listener are redirected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMode {
    /// Relay as usual.
    #[default]
    Off,
    /// Redirect network clients; Unix-socket listeners and listeners marked
    /// `admin = true` are exempt (the server design's `extra_port`
    /// exemption), so operators keep a way in.
    On,
    /// Redirect everyone.
    All,
}

impl FailoverMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverMode::Off => "off",
            FailoverMode::On => "on",
            FailoverMode::All => "all",
        }
    }
}

/// A listener's failover settings; swapped atomically at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct FailoverSettings {
    pub mode: FailoverMode,
    /// `host:port` clients are sent to.
    pub target: Option<String>,
    /// Human text; defaults to a sentence naming the target.
    pub message: Option<String>,
    pub error_code: u16,
}

impl FailoverSettings {
    /// Checks the settings; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = &self.target {
            validate_target(t)?;
        } else if self.mode != FailoverMode::Off {
            return Err(format!(
                "failover = \"{}\" needs failover_target = \"host:port\"",
                self.mode.as_str()
            ));
        }
        if let Some(m) = &self.message {
            if m.contains('|') {
                return Err("failover_message must not contain '|': clients split the redirect message at '|'".into());
            }
            if m.contains('\0') {
                return Err("failover_message must not contain NUL bytes".into());
            }
        }
        if (2000..3000).contains(&self.error_code) || (5000..6000).contains(&self.error_code) {
            return Err(format!(
                "failover_error_code {} is in a client-side range (2000-2999, 5000-5999) that connectors treat as a malformed server answer; use 4196 or 4200",
                self.error_code
            ));
        }
        if self.error_code < 1000 {
            return Err(format!(
                "failover_error_code {} is not a server error code (use 4196 or 4200)",
                self.error_code
            ));
        }
        if let Some(t) = &self.target {
            let len = self.message_for(t).len();
            if len > MAX_MESSAGE_LEN {
                return Err(format!(
                    "redirect message would be {len} bytes; the limit is {MAX_MESSAGE_LEN} (shorten failover_message)"
                ));
            }
        }
        Ok(())
    }

    /// Whether a client of a listener of this kind is redirected now.
    pub fn applies(&self, unix_listener: bool, admin_listener: bool) -> bool {
        match self.mode {
            FailoverMode::Off => false,
            FailoverMode::On => !unix_listener && !admin_listener,
            FailoverMode::All => true,
        }
    }

    fn message_for(&self, target: &str) -> String {
        let text = match &self.message {
            Some(m) => m.clone(),
            None => format!("This database is being taken over; connect to {target} instead"),
        };
        format!("|{text}|{target}")
    }

    /// The redirect ERR packet, or `None` when no target is set.
    pub fn packet(&self) -> Option<ErrPacket> {
        Some(self.packet_to(self.target.as_deref()?))
    }

    /// The redirect ERR packet sending clients to `target` (`host:port`).
    pub fn packet_to(&self, target: &str) -> ErrPacket {
        ErrPacket::new(self.error_code, b"HY000", self.message_for(target))
    }
}

/// `failover_target = "primary"`: the current primary's `advertise`
/// address, looked up when each client is redirected.
pub const PRIMARY_TARGET: &str = "primary";

/// A target is `host:port` (or [`PRIMARY_TARGET`]). The published client parser splits host and
/// port at the first `:`, so an IPv6 literal cannot be carried.
pub fn validate_target(t: &str) -> Result<(), String> {
    if t == PRIMARY_TARGET {
        return Ok(());
    }
    if t.starts_with('[') || t.matches(':').count() > 1 {
        return Err(format!(
            "failover_target {t:?} is an IPv6 literal: redirect-aware clients split the target at the first ':' and cannot parse it; give a host name that resolves to the IPv6 address instead"
        ));
    }
    let Some((host, port)) = t.split_once(':') else {
        return Err(format!("failover_target {t:?} must be \"host:port\""));
    };
    if host.is_empty() || host.contains('|') || host.chars().any(char::is_whitespace) {
        return Err(format!("failover_target {t:?} has an invalid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(format!("failover_target {t:?} has an invalid port")),
    }
}

/// Whether `target` (`host:port`) names the listener at `addr` itself: a
/// loopback name or the machine's host name with the same port.
pub fn points_at(target: &str, addr: &crate::config::ListenAddr) -> bool {
    let crate::config::ListenAddr::Tcp(sa) = addr else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn on(target: &str) -> FailoverSettings {
        FailoverSettings {
            mode: FailoverMode::On,
            target: Some(target.into()),
            message: None,
            error_code: DEFAULT_ERROR_CODE,
        }
    }

    #[test]
    fn packet_is_byte_exact() {
        let mut s = on("db2.example.net:3307");
        s.message = Some("moved".into());
        let p = s.packet().unwrap().encode();
        let mut want = vec![0xff, 0x64, 0x10, b'#'];
        want.extend_from_slice(b"HY000|moved|db2.example.net:3307");
        assert_eq!(p, want);
        s.error_code = 4200;
        assert_eq!(&s.packet().unwrap().encode()[1..3], &[0x68, 0x10]);
    }

    #[test]
    fn default_text_names_the_target() {
        let p = on("db2:3307").packet().unwrap();
        assert_eq!(
            p.message,
            "|This database is being taken over; connect to db2:3307 instead|db2:3307"
        );
    }

    #[test]
    fn validation() {
        assert!(on("db2.example.net:3307").validate().is_ok());
        assert!(on("[2001:db8::1]:3307")
            .validate()
            .unwrap_err()
            .contains("IPv6 literal"));
        assert!(on("2001:db8::1:3307")
            .validate()
            .unwrap_err()
            .contains("IPv6 literal"));
        assert!(on("db2").validate().is_err());
        assert!(on("db2:0").validate().is_err());
        assert!(on("primary").validate().is_ok());
        let mut s = on("db2:1");
        s.message = Some("a|b".into());
        assert!(s.validate().unwrap_err().contains("'|'"));
        s.message = Some("x".repeat(600));
        assert!(s.validate().unwrap_err().contains("limit is 511"));
        let mut s = on("db2:1");
        s.error_code = 2013;
        assert!(s.validate().is_err());
        let s = FailoverSettings {
            mode: FailoverMode::On,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("needs failover_target"));
    }

    #[test]
    fn exemptions() {
        let s = on("db2:1");
        assert!(s.applies(false, false));
        assert!(!s.applies(true, false));
        assert!(!s.applies(false, true));
        let all = FailoverSettings {
            mode: FailoverMode::All,
            ..s.clone()
        };
        assert!(all.applies(true, true));
        let off = FailoverSettings {
            mode: FailoverMode::Off,
            ..s
        };
        assert!(!off.applies(false, false));
    }
}
