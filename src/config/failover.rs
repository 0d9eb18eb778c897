//! Instant-failover settings as data (docs/failover.md): which clients of a
//! listener are redirected, where to, with what message and error code, and
//! the checks a setting must pass, from the config file or the admin API.
//! [`crate::failover`] builds the ERR packet from them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// Where redirected clients are sent. Written (in the config file and the
/// admin API's JSON) as the string `"primary"` or `"host:port"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverTarget {
    /// `"primary"`: the current primary's `advertise` address, looked up
    /// when each client is redirected (needs `[monitor]`).
    Primary,
    /// `host:port` as written; [`validate_target`] says whether clients can
    /// follow it.
    Address(String),
}

/// The word that names [`FailoverTarget::Primary`].
const PRIMARY: &str = "primary";

impl FailoverTarget {
    /// As written: `"primary"` or the `host:port`.
    pub fn as_str(&self) -> &str {
        match self {
            FailoverTarget::Primary => PRIMARY,
            FailoverTarget::Address(a) => a,
        }
    }
}

impl From<&str> for FailoverTarget {
    fn from(s: &str) -> Self {
        if s == PRIMARY {
            FailoverTarget::Primary
        } else {
            FailoverTarget::Address(s.to_string())
        }
    }
}

impl From<String> for FailoverTarget {
    fn from(s: String) -> Self {
        if s == PRIMARY {
            FailoverTarget::Primary
        } else {
            FailoverTarget::Address(s)
        }
    }
}

impl fmt::Display for FailoverTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailoverTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Any string is read; what is wrong with it is [`FailoverSettings::validate`]'s
/// to say, so the admin API answers with the same words as `check`.
impl<'de> Deserialize<'de> for FailoverTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(FailoverTarget::from)
    }
}

/// A listener's failover settings; swapped atomically at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct FailoverSettings {
    pub mode: FailoverMode,
    /// Where clients are sent.
    pub target: Option<FailoverTarget>,
    /// Human text; defaults to a sentence naming the target.
    pub message: Option<String>,
    pub error_code: u16,
}

impl FailoverSettings {
    /// Checks the settings; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        match &self.target {
            Some(FailoverTarget::Address(t)) => validate_target(t)?,
            Some(FailoverTarget::Primary) => {}
            None if self.mode != FailoverMode::Off => {
                return Err(format!(
                    "failover = \"{}\" needs failover_target = \"host:port\"",
                    self.mode.as_str()
                ));
            }
            None => {}
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
            let len = self.message_for(t.as_str()).len();
            if len > MAX_MESSAGE_LEN {
                return Err(format!(
                    "redirect message would be {len} bytes; the limit is {MAX_MESSAGE_LEN} (shorten failover_message)"
                ));
            }
        }
        Ok(())
    }

    /// The redirect message sending clients to `target` (`host:port`):
    /// `|<human text>|<target>`. Defined here because its length is part
    /// of what [`validate`](FailoverSettings::validate) checks.
    pub fn message_for(&self, target: &str) -> String {
        let text = match &self.message {
            Some(m) => m.clone(),
            None => format!("This database is being taken over; connect to {target} instead"),
        };
        format!("|{text}|{target}")
    }

    /// The target as written, or `""` without one (for log fields).
    pub fn target_str(&self) -> &str {
        self.target.as_ref().map_or("", FailoverTarget::as_str)
    }
}

/// A target address is `host:port`. The published client parser splits
/// host and port at the first `:`, so an IPv6 literal cannot be carried.
pub fn validate_target(t: &str) -> Result<(), String> {
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
    fn targets_are_read_and_written_as_the_same_strings() {
        assert_eq!(FailoverTarget::from("primary"), FailoverTarget::Primary);
        assert_eq!(
            FailoverTarget::from("db2:3307"),
            FailoverTarget::Address("db2:3307".into())
        );
        let json = serde_json::to_string(&on("primary")).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"on","target":"primary","message":null,"error_code":4196}"#
        );
        for text in [r#""primary""#, r#""db2:3307""#, r#""[::1]:1""#] {
            let t: FailoverTarget = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&t).unwrap(), text);
        }
        let none: Option<FailoverTarget> = serde_json::from_str("null").unwrap();
        assert_eq!(none, None);
        assert_eq!(on("db2:1").target_str(), "db2:1");
        assert_eq!(FailoverSettings::default().target_str(), "");
    }
}
