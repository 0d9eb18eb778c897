//! Instant-failover settings as data (docs/failover.md): which clients of a
//! listener are redirected, where to, in which form (the ERR packet, or
//! MariaDB's `redirect_url` session tracker), with what message and error
//! code, which connectors follow `redirect_url`, and the checks a setting
//! must pass, from the config file or the admin API. [`crate::failover`]
//! decides per client and builds the ERR packet from them.

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

/// How a listener redirects: the form every client gets, or a choice per
/// client (docs/failover.md, "The two forms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailoverStyle {
    /// ERR 4196 after the HandshakeResponse, without a backend.
    #[default]
    Error,
    /// The client authenticates at the backend as usual, and the OK that
    /// ends authentication carries `redirect_url=mariadb://TARGET`; clients
    /// without CLIENT_SESSION_TRACK get the error form.
    RedirectUrl,
    /// `redirect_url` for clients known to follow it (the follower table,
    /// over TLS), the error form for everyone else.
    Both,
}

impl FailoverStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverStyle::Error => "error",
            FailoverStyle::RedirectUrl => "redirect_url",
            FailoverStyle::Both => "both",
        }
    }
}

/// The form one client is redirected in; the `style` label of
/// `portcullis_redirects_total`. The discriminants index per-form counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectForm {
    /// The ERR packet naming the target; no backend.
    Error = 0,
    /// The `redirect_url` session tracker in the backend's OK.
    RedirectUrl = 1,
}

impl RedirectForm {
    /// Both forms, in the order the metrics print them.
    pub const ALL: [RedirectForm; 2] = [RedirectForm::Error, RedirectForm::RedirectUrl];

    /// The stable label (metrics).
    pub fn label(self) -> &'static str {
        match self {
            RedirectForm::Error => "error",
            RedirectForm::RedirectUrl => "redirect_url",
        }
    }
}

/// A connector that follows `redirect_url`: the `_client_name` connection
/// attribute it sends (compared without regard to ASCII case) and the
/// first `_client_version` that follows. Written `"NAME >= VERSION"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    pub client_name: String,
    /// Numeric version components; missing ones count as 0.
    pub min_version: Vec<u32>,
}

/// The connectors known to follow `redirect_url` and work on afterwards
/// (docs/failover.md, "Which clients follow"), by the attributes they send:
/// MariaDB Connector/J from 3.4. Not the Node.js `mariadb` connector
/// (`MariaDB connector/Node`): 3.2.3 to 3.5.4, the newest, reconnect to
/// the target but hand back a connection that cannot run a command
/// (docs/compatibility.md); `failover_followers` adds it once a version
/// works.
pub const BUILTIN_FOLLOWERS: &[(&str, &[u32])] = &[("MariaDB Connector/J", &[3, 4, 0])];

impl Follower {
    /// Whether a client that sent these `_client_name` and
    /// `_client_version` attributes is this follower.
    pub fn matches(&self, name: &[u8], version: &[u8]) -> bool {
        name.eq_ignore_ascii_case(self.client_name.as_bytes())
            && version_at_least(version, &self.min_version)
    }
}

impl std::str::FromStr for Follower {
    type Err = String;

    fn from_str(s: &str) -> Result<Follower, String> {
        let bad = || {
            format!(
                "failover_followers entry {s:?} must be \"<_client_name> >= <version>\", e.g. \"MariaDB Connector/R2DBC >= 1.2.0\""
            )
        };
        let (name, version) = s.rsplit_once(">=").ok_or_else(bad)?;
        let (name, version) = (name.trim(), version.trim());
        if name.is_empty() || version.is_empty() {
            return Err(bad());
        }
        let min_version = version
            .split('.')
            .map(|c| c.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<Vec<u32>, String>>()?;
        Ok(Follower {
            client_name: name.to_string(),
            min_version,
        })
    }
}

impl fmt::Display for Follower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v: Vec<String> = self.min_version.iter().map(u32::to_string).collect();
        write!(f, "{} >= {}", self.client_name, v.join("."))
    }
}

impl Serialize for Follower {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Whether `version` (a `_client_version` such as `3.5.4` or
/// `3.5.4-SNAPSHOT`: the leading digits of each dot-separated part) is at
/// least `min`. A version without a number is never at least anything.
pub fn version_at_least(version: &[u8], min: &[u32]) -> bool {
    let text = String::from_utf8_lossy(version);
    let mut parts = Vec::new();
    for part in text.trim().split('.') {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u32>() {
            Ok(n) => parts.push(n),
            Err(_) => break,
        }
        if digits.len() != part.len() {
            // "4-SNAPSHOT": the number is the last part that counts.
            break;
        }
    }
    if parts.is_empty() {
        return false;
    }
    let len = parts.len().max(min.len());
    let at = |v: &[u32], i: usize| v.get(i).copied().unwrap_or(0);
    (0..len)
        .map(|i| at(&parts, i).cmp(&at(min, i)))
        .find(|o| o.is_ne())
        .is_none_or(|o| o.is_gt())
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
    /// The form of the redirect (`failover_style`).
    pub style: FailoverStyle,
    /// More connectors that follow `redirect_url` (`failover_followers`),
    /// on top of [`BUILTIN_FOLLOWERS`].
    pub followers: Vec<Follower>,
    /// Keep a backend's own `redirect_url` tracker in the OK that ends
    /// authentication (`pass_backend_redirect`); by default it is renamed
    /// so that a backend set to redirect cannot lead clients past the
    /// sidecar. Applies whatever the mode.
    pub pass_backend_redirect: bool,
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

/// A target address is `host:port`, the host a DNS name or an IPv4
/// address, in both forms. An IPv6 literal cannot be carried: the error
/// form's published client parser splits host and port at the first `:`;
/// MariaDB defines `redirect_url`'s host as containing no `:`, and
/// Connector/J's parser (host `[^/:]+`) cannot read one, bracketed or not.
/// (The Node.js connector's, WHATWG `URL` with the brackets stripped,
/// could.) The host is also written into `mariadb://host:port`, so it
/// keeps to the characters of a host name.
pub fn validate_target(t: &str) -> Result<(), String> {
    if t.starts_with('[') || t.matches(':').count() > 1 {
        return Err(format!(
            "failover_target {t:?} is an IPv6 literal, which no redirect can carry: the error form's client parser splits the target at the first ':', MariaDB's redirect_url allows no ':' in the host and Connector/J's redirect_url parser reads the host only up to one (bracketed or not); give a host name that resolves to the IPv6 address instead"
        ));
    }
    let Some((host, port)) = t.split_once(':') else {
        return Err(format!("failover_target {t:?} must be \"host:port\""));
    };
    let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if host.is_empty() || !host.chars().all(host_char) {
        return Err(format!(
            "failover_target {t:?} has an invalid host: a DNS name or an IPv4 address (letters, digits, '.', '-', '_'), as it is written into mariadb://host:port"
        ));
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
            error_code: DEFAULT_ERROR_CODE,
            ..Default::default()
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
        for host in ["db/2", "app@db2", "db2?x", "db 2", "db|2", "%64b2", ""] {
            assert!(
                on(&format!("{host}:3307"))
                    .validate()
                    .unwrap_err()
                    .contains("invalid host"),
                "{host}"
            );
        }
        assert!(on("192.0.2.7:3307").validate().is_ok());
        assert!(on("db_2.internal-net:3307").validate().is_ok());
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
            r#"{"mode":"on","target":"primary","message":null,"error_code":4196,"style":"error","followers":[],"pass_backend_redirect":false}"#
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

    #[test]
    fn followers_are_read_and_matched() {
        let f: Follower = "MariaDB Connector/R2DBC >= 1.2".parse().unwrap();
        assert_eq!(f.client_name, "MariaDB Connector/R2DBC");
        assert_eq!(f.min_version, vec![1, 2]);
        assert_eq!(f.to_string(), "MariaDB Connector/R2DBC >= 1.2");
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#""MariaDB Connector/R2DBC >= 1.2""#
        );
        assert!(f.matches(b"mariadb connector/r2dbc", b"1.2.0"));
        assert!(f.matches(b"MariaDB Connector/R2DBC", b"1.3"));
        assert!(!f.matches(b"MariaDB Connector/R2DBC", b"1.1.9"));
        assert!(!f.matches(b"MariaDB Connector/J", b"9"));
        for bad in ["x", "x >=", ">= 1", "x >= 1.y", "x >= -1"] {
            let e = bad.parse::<Follower>().unwrap_err();
            assert!(e.contains("<_client_name> >= <version>"), "{bad}: {e}");
        }
    }

    #[test]
    fn versions_compare_by_their_numbers() {
        let at_least = |v: &str, min: &[u32]| version_at_least(v.as_bytes(), min);
        assert!(at_least("3.4.0", &[3, 4, 0]));
        assert!(at_least("3.4", &[3, 4, 0]));
        assert!(at_least("3.5.4-SNAPSHOT", &[3, 4, 0]));
        assert!(at_least("10", &[3, 4]));
        assert!(at_least("3.2.3", &[3, 2, 3]));
        assert!(!at_least("3.2.2", &[3, 2, 3]));
        assert!(!at_least("3.3.9", &[3, 4]));
        assert!(!at_least("2.7.6", &[3, 4, 0]));
        assert!(!at_least("", &[0]));
        assert!(!at_least("beta", &[0]));
        assert!(at_least(" 3.4.1 ", &[3, 4, 1]));
    }

    #[test]
    fn styles_have_stable_names() {
        for (style, text) in [
            (FailoverStyle::Error, "\"error\""),
            (FailoverStyle::RedirectUrl, "\"redirect_url\""),
            (FailoverStyle::Both, "\"both\""),
        ] {
            assert_eq!(serde_json::to_string(&style).unwrap(), text);
            assert_eq!(serde_json::from_str::<FailoverStyle>(text).unwrap(), style);
            assert_eq!(format!("\"{}\"", style.as_str()), text);
        }
        assert_eq!(
            RedirectForm::ALL.map(RedirectForm::label),
            ["error", "redirect_url"]
        );
    }
}
