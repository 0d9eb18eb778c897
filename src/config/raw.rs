//! The file as written: serde structures with the span of every value, so
//! each problem found later can name its line. Unknown keys are refused
//! here, with their line.

use std::fmt;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::failover::{FailoverMode, FailoverStyle};
use super::model::{
    CertRefusal, ClientAuth, CrlExpired, CrlScope, OnPrimaryChange, OnRevoke, TlsVersion,
    UnknownRevocation,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) shutdown_timeout: Option<Spanned<DurationText>>,
    pub(super) workers: Option<Spanned<i64>>,
    pub(super) control_socket: Option<Spanned<String>>,
    #[serde(default, rename = "backend")]
    pub(super) backends: Vec<Spanned<RawBackend>>,
    #[serde(default, rename = "listener")]
    pub(super) listeners: Vec<Spanned<RawListener>>,
    pub(super) admin: Option<Spanned<RawAdmin>>,
    pub(super) tls_reload: Option<Spanned<RawTlsReload>>,
    pub(super) monitor: Option<Spanned<RawMonitor>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitor {
    pub(super) user: Spanned<String>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
    pub(super) interval: Option<Spanned<DurationText>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTlsReload {
    pub(super) poll_interval: Option<Spanned<DurationText>>,
    pub(super) expiry_warning: Option<Spanned<DurationText>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) address: Option<Spanned<String>>,
    pub(super) token_file: Option<Spanned<String>>,
    pub(super) allowed_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) socket_mode: Option<Spanned<String>>,
    pub(super) socket_group: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    pub(super) connect_timeout: Option<Spanned<DurationText>>,
    pub(super) advertise: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) proxy_protocol: bool,
    pub(super) tls: Option<Spanned<RawBackendTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackendTls {
    pub(super) ca: Spanned<String>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) server_name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    pub(super) route: Spanned<String>,
    #[serde(default)]
    pub(super) allow_plaintext: bool,
    pub(super) handshake_timeout: Option<Spanned<DurationText>>,
    pub(super) tls_handshake_timeout: Option<Spanned<DurationText>>,
    pub(super) max_connections: Option<Spanned<usize>>,
    pub(super) max_unauthenticated: Option<Spanned<usize>>,
    pub(super) max_unauthenticated_per_source: Option<Spanned<usize>>,
    pub(super) max_handshake_packet: Option<Spanned<usize>>,
    pub(super) idle_timeout: Option<Spanned<DurationText>>,
    #[serde(default)]
    pub(super) admin: bool,
    #[serde(default)]
    pub(super) allow_proxy_user: bool,
    #[serde(default)]
    pub(super) accept_proxy_protocol: bool,
    pub(super) trusted_proxies: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) failover: Option<Spanned<FailoverMode>>,
    pub(super) failover_target: Option<Spanned<String>>,
    pub(super) failover_message: Option<Spanned<String>>,
    pub(super) failover_error_code: Option<Spanned<u16>>,
    pub(super) failover_style: Option<Spanned<FailoverStyle>>,
    pub(super) failover_followers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(super) pass_backend_redirect: bool,
    pub(super) on_primary_change: Option<Spanned<OnPrimaryChange>>,
    pub(super) primary_wait: Option<Spanned<DurationText>>,
    pub(super) max_replica_lag: Option<Spanned<DurationText>>,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) identity: Option<Spanned<RawIdentity>>,
}

/// `[listener.identity]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    /// Only `"cn"`: the login user must equal the certificate's CN.
    pub(super) users: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) rule: Vec<Spanned<RawIdentityRule>>,
}

/// One `[[listener.identity.rule]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityRule {
    pub(super) cn: Option<Spanned<String>>,
    pub(super) san_uri: Option<Spanned<String>>,
    pub(super) san_dns: Option<Spanned<String>>,
    pub(super) subject: Option<Spanned<String>>,
    pub(super) issuer_cn: Option<Spanned<String>>,
    pub(super) users: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
    pub(super) ca: Option<Spanned<String>>,
    pub(super) intermediates: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) crl: Vec<Spanned<String>>,
    pub(super) clock_skew: Option<Spanned<DurationText>>,
    #[serde(default)]
    pub(super) client_auth: Option<Spanned<ClientAuth>>,
    pub(super) on_revoke: Option<Spanned<OnRevoke>>,
    pub(super) crl_scope: Option<Spanned<CrlScope>>,
    pub(super) crl_expired: Option<Spanned<CrlExpired>>,
    pub(super) unknown_revocation: Option<Spanned<UnknownRevocation>>,
    pub(super) cert_refusal: Option<Spanned<CertRefusal>>,
    pub(super) min_version: Option<Spanned<TlsVersion>>,
    pub(super) cipher_suites: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A duration as written: a string like `"5s"`, parsed by validation. A
/// type of its own so that a bare number is refused with what to write
/// instead of serde's "expected a string".
#[derive(Debug)]
pub(super) struct DurationText(pub(super) String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration as a string: a number and a unit (ms, s, m, h, d), like \"5s\"",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<DurationText, E> {
                Ok(DurationText(s.to_string()))
            }
        }
        d.deserialize_str(Visitor)
    }
}
