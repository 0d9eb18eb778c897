//! The `GET /status` document: what it contains, how it is built from the
//! running proxy, and the human table `portcullis status` prints from it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::access::MutationPolicy;
use crate::config::identity::{CertField, IdentityRules};
use crate::reload::reloadable::ReloadRecord;
use crate::state::ProxyState;
use crate::time::{rfc3339, unix_seconds};
use crate::tls::CertInfo;

/// The whole `/status` answer. Field names are part of the API: add, never
/// rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// `starting`, `serving`, `draining`, `stopping` or `stopped`.
    pub state: String,
    /// Start time, seconds since the Unix epoch.
    pub started_at: i64,
    pub uptime_seconds: u64,
    /// The proxy's clock when it answered, seconds since the Unix epoch.
    pub now: i64,
    pub listeners: Vec<ListenerStatus>,
    pub backends: Vec<BackendStatus>,
    /// The admin API itself: whether it serves changes, and why.
    #[serde(default)]
    pub admin: Option<AdminStatus>,
}

/// The admin API as `/status` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminStatus {
    /// The address it listens on (port 0 resolved), `unix:/path` for a
    /// Unix socket.
    pub address: String,
    /// Whether `PUT`, `POST` and `DELETE` are served, and why.
    pub mutation: MutationPolicy,
    /// Names `Host` may carry besides IP literals and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// The backend `GET /health/primary` asks about without `?backend=`;
    /// absent when that has to be named (or without a `[monitor]`).
    pub health_primary_backend: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    /// The address actually bound (port 0 resolved), `unix:/path` for Unix
    /// sockets.
    pub address: String,
    /// The backend it routes to.
    pub route: String,
    pub tls: bool,
    /// `required`, `optional` or `none`; absent without TLS.
    pub client_auth: Option<String>,
    /// The oldest TLS version accepted (`1.2` or `1.3`); absent without
    /// TLS.
    #[serde(default)]
    pub tls_min_version: Option<String>,
    /// The cipher suites offered, in the server's order of preference (rustls
    /// names); empty without TLS.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// Whether its accept loop runs.
    pub accepting: bool,
    pub active_connections: i64,
    /// Connections accepted since start.
    pub total_connections: u64,
    pub max_connections: usize,
    /// Instant-failover redirect mode: `off`, `on` or `all`.
    pub failover_mode: String,
    /// Finished connections by outcome label (as in
    /// `portcullis_connections_total`).
    pub outcomes: BTreeMap<String, u64>,
    /// The certificate in service; absent without TLS.
    pub certificate: Option<CertificateStatus>,
    /// The CA certificates client certificates are checked against.
    #[serde(default)]
    pub cas: Vec<CertificateStatus>,
    /// The CRLs client certificates are checked against.
    pub crls: Vec<CrlStatus>,
    /// When the TLS material in service was loaded (seconds since the Unix
    /// epoch, and RFC 3339); absent without TLS.
    #[serde(default)]
    pub tls_loaded_at: Option<i64>,
    #[serde(default)]
    pub tls_loaded_at_utc: Option<String>,
    /// The most recent reload that built new material or failed.
    #[serde(default)]
    pub last_reload: Option<ReloadRecord>,
    /// The most recent failed reload, kept after later successes (compare
    /// its time with `last_reload`).
    #[serde(default)]
    pub last_reload_error: Option<ReloadRecord>,
    /// Established sessions that authenticated with a client certificate
    /// (re-checked when CAs or CRLs change).
    #[serde(default)]
    pub certificate_sessions: usize,
    /// The identity rules in service (`[listener.identity]`, reloaded with
    /// the TLS material); `null`: any user.
    #[serde(default)]
    pub identity: Option<IdentityStatus>,
}

/// A listener's identity rules as `/status` shows them: `{"users": "cn"}`,
/// or `{"rules": [...]}` in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<IdentityRuleStatus>,
}

/// One rule: the keys it has, and its users (`["*"]`: any).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IdentityRuleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub san_dns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_cn: Option<String>,
    pub users: Vec<String>,
}

impl From<&IdentityRules> for IdentityStatus {
    fn from(r: &IdentityRules) -> Self {
        match r {
            IdentityRules::Cn => IdentityStatus {
                users: Some("cn".into()),
                rules: Vec::new(),
            },
            IdentityRules::Rules(rules) => IdentityStatus {
                users: None,
                rules: rules
                    .iter()
                    .map(|rule| {
                        let key = |f| rule.pattern(f).map(|p| p.as_str().to_string());
                        IdentityRuleStatus {
                            cn: key(CertField::Cn),
                            san_uri: key(CertField::SanUri),
                            san_dns: key(CertField::SanDns),
                            subject: key(CertField::Subject),
                            issuer_cn: key(CertField::IssuerCn),
                            users: rule.users.names(),
                        }
                    })
                    .collect(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    pub subject: String,
    pub issuer: String,
    /// Lowercase hex without separators.
    pub serial: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    #[serde(default)]
    pub fingerprint_sha256: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// The same instant as RFC 3339 UTC.
    pub not_after_utc: String,
}

impl From<&CertInfo> for CertificateStatus {
    fn from(c: &CertInfo) -> Self {
        CertificateStatus {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            serial: c.serial.clone(),
            fingerprint_sha256: c.fingerprint.clone(),
            not_after: c.not_after,
            not_after_utc: rfc3339(c.not_after),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlStatus {
    pub issuer: String,
    /// Seconds since the Unix epoch.
    pub this_update: i64,
    /// Seconds since the Unix epoch; absent when the CRL has none.
    pub next_update: Option<i64>,
    pub next_update_utc: Option<String>,
    /// Number of revoked certificates it lists.
    pub revoked: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    /// `unmonitored` until the topology monitor exists.
    pub state: String,
    /// Whether portcullis speaks TLS to it (`[backend.tls]`).
    #[serde(default)]
    pub tls: bool,
    /// The name its certificate is checked against.
    #[serde(default)]
    pub server_name: Option<String>,
    /// The client certificate portcullis presents to it.
    #[serde(default)]
    pub client_certificate: Option<CertificateStatus>,
    #[serde(default)]
    pub last_reload: Option<ReloadRecord>,
    #[serde(default)]
    pub last_reload_error: Option<ReloadRecord>,
}

impl Status {
    /// Reads the running proxy (lock-free loads only).
    pub fn collect(state: &ProxyState) -> Status {
        let listeners = state
            .listeners
            .iter()
            .map(|l| {
                let cfg = &l.runtime.config;
                let rt = l.runtime.tls.as_ref();
                let tls = rt.map(|t| t.material.load());
                ListenerStatus {
                    name: cfg.name.clone(),
                    address: l.address.to_string(),
                    route: l.runtime.route.name().to_string(),
                    tls: tls.is_some(),
                    client_auth: cfg.tls.as_ref().map(|t| t.client_auth.as_str().to_string()),
                    tls_min_version: tls
                        .as_ref()
                        .map(|t| t.source.min_version.as_str().to_string()),
                    cipher_suites: tls
                        .as_ref()
                        .map(|t| {
                            t.config
                                .crypto_provider()
                                .cipher_suites
                                .iter()
                                .map(crate::config::suites::name)
                                .collect()
                        })
                        .unwrap_or_default(),
                    accepting: l.is_accepting(),
                    active_connections: l.metrics.active(),
                    total_connections: l.metrics.accepted_total(),
                    max_connections: cfg.max_connections,
                    failover_mode: l.runtime.failover.load().mode.as_str().to_string(),
                    outcomes: l
                        .metrics
                        .outcomes()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    certificate: tls.as_ref().map(|t| CertificateStatus::from(&t.leaf)),
                    cas: tls
                        .as_ref()
                        .map(|t| t.cas.iter().map(CertificateStatus::from).collect())
                        .unwrap_or_default(),
                    tls_loaded_at: tls.as_ref().map(|t| t.loaded_at),
                    tls_loaded_at_utc: tls.as_ref().map(|t| rfc3339(t.loaded_at)),
                    last_reload: rt.and_then(|r| r.material.last_reload()),
                    last_reload_error: rt.and_then(|r| r.material.last_error()),
                    certificate_sessions: rt.map_or(0, |r| r.live.len()),
                    identity: tls
                        .as_ref()
                        .and_then(|t| t.source.identity.as_ref())
                        .map(IdentityStatus::from),
                    crls: tls
                        .as_ref()
                        .map(|t| {
                            t.crls
                                .iter()
                                .map(|c| CrlStatus {
                                    issuer: c.issuer.clone(),
                                    this_update: c.this_update,
                                    next_update: c.next_update,
                                    next_update_utc: c.next_update.map(rfc3339),
                                    revoked: c.revoked,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect();
        Status {
            version: crate::metrics::VERSION.to_string(),
            state: state.lifecycle().as_str().to_string(),
            started_at: state.started_at(),
            uptime_seconds: state.uptime().as_secs(),
            now: unix_seconds(std::time::SystemTime::now()),
            listeners,
            backends: state
                .backends
                .iter()
                .map(|b| {
                    let tls = b.tls.as_ref().map(|t| t.load());
                    BackendStatus {
                        name: b.config.name.clone(),
                        address: b.config.address.to_string(),
                        state: state
                            .topology
                            .as_ref()
                            .and_then(|t| t.backend(&b.config.name))
                            .map_or("unmonitored", |m| m.health.load().role.label())
                            .into(),
                        tls: tls.is_some(),
                        server_name: tls.as_ref().map(|t| t.source.server_name.clone()),
                        client_certificate: tls
                            .as_ref()
                            .and_then(|t| t.leaf.as_ref().map(CertificateStatus::from)),
                        last_reload: b.tls.as_ref().and_then(|t| t.last_reload()),
                        last_reload_error: b.tls.as_ref().and_then(|t| t.last_error()),
                    }
                })
                .collect(),
            admin: None,
        }
    }

    /// The human-readable tables `portcullis status` prints.
    pub fn render(&self) -> String {
        let mut out = self.headline();
        section(&mut out, &LISTENER_COLUMNS, self.listener_rows(), true);
        section(
            &mut out,
            &["BACKEND", "ADDRESS", "STATE"],
            self.backends
                .iter()
                .map(|b| vec![b.name.clone(), b.address.clone(), b.state.clone()])
                .collect(),
            true,
        );
        section(
            &mut out,
            &CERTIFICATE_COLUMNS,
            self.certificate_rows(),
            false,
        );
        section(
            &mut out,
            &["TLS POLICY OF", "MIN VERSION", "CIPHER SUITES"],
            self.listeners
                .iter()
                .filter_map(|l| {
                    l.tls_min_version
                        .as_ref()
                        .map(|v| vec![l.name.clone(), v.clone(), l.cipher_suites.join(",")])
                })
                .collect(),
            false,
        );
        section(
            &mut out,
            &["IDENTITY OF", "CERTIFICATE", "USERS"],
            self.identity_rows(),
            false,
        );
        section(
            &mut out,
            &["CRL OF", "ISSUER", "NEXT UPDATE", "REVOKED"],
            self.crl_rows(),
            false,
        );
        out
    }

    /// The version, state and uptime, and who may change things.
    fn headline(&self) -> String {
        let mut out = format!(
            "portcullis {}: {}, up {}\n",
            self.version,
            self.state,
            human_duration(self.uptime_seconds)
        );
        if let Some(a) = &self.admin {
            let _ = writeln!(
                out,
                "admin API {}: changes {}: {}",
                a.address,
                if a.mutation.enabled {
                    "allowed"
                } else {
                    "REFUSED"
                },
                a.mutation.reason
            );
        }
        out
    }

    fn listener_rows(&self) -> Vec<Vec<String>> {
        self.listeners
            .iter()
            .map(|l| {
                vec![
                    l.name.clone(),
                    l.address.clone(),
                    on_off(l.tls).into(),
                    l.client_auth.clone().unwrap_or_else(|| "-".into()),
                    l.route.clone(),
                    l.active_connections.to_string(),
                    l.total_connections.to_string(),
                    l.failover_mode.clone(),
                    if l.accepting { "yes" } else { "no" }.into(),
                ]
            })
            .collect()
    }

    fn certificate_rows(&self) -> Vec<Vec<String>> {
        self.listeners
            .iter()
            .filter_map(|l| {
                l.certificate.as_ref().map(|c| {
                    let last_reload = match (&l.last_reload, &l.last_reload_error) {
                        (_, Some(e)) if l.last_reload.as_ref() == Some(e) => format!(
                            "FAILED {} ({}): {}",
                            e.at_utc,
                            e.trigger,
                            e.error.as_deref().unwrap_or("")
                        ),
                        (Some(r), _) => format!("ok {} ({})", r.at_utc, r.trigger),
                        (None, _) => "-".into(),
                    };
                    vec![
                        l.name.clone(),
                        c.subject.clone(),
                        c.serial.clone(),
                        format!("{} ({})", c.not_after_utc, relative(c.not_after - self.now)),
                        l.tls_loaded_at_utc.clone().unwrap_or_default(),
                        last_reload,
                    ]
                })
            })
            .collect()
    }

    /// One row per identity rule, in the order they are tried.
    fn identity_rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for l in &self.listeners {
            let Some(id) = &l.identity else { continue };
            if let Some(users) = &id.users {
                rows.push(vec![l.name.clone(), "any".into(), format!("= {users}")]);
            }
            for r in &id.rules {
                rows.push(vec![l.name.clone(), r.keys(), r.users.join(",")]);
            }
        }
        rows
    }

    fn crl_rows(&self) -> Vec<Vec<String>> {
        self.listeners
            .iter()
            .flat_map(|l| {
                l.crls.iter().map(|c| {
                    vec![
                        l.name.clone(),
                        c.issuer.clone(),
                        match (&c.next_update_utc, c.next_update) {
                            (Some(s), Some(t)) => format!("{s} ({})", relative(t - self.now)),
                            _ => "-".into(),
                        },
                        c.revoked.to_string(),
                    ]
                })
            })
            .collect()
    }
}

const LISTENER_COLUMNS: [&str; 9] = [
    "LISTENER",
    "ADDRESS",
    "TLS",
    "CLIENT AUTH",
    "ROUTE",
    "ACTIVE",
    "TOTAL",
    "FAILOVER",
    "ACCEPTING",
];

const CERTIFICATE_COLUMNS: [&str; 6] = [
    "CERTIFICATE OF",
    "SUBJECT",
    "SERIAL",
    "NOT AFTER",
    "LOADED",
    "LAST RELOAD",
];

/// Appends a blank line and a table; an empty table only when `always`.
fn section(out: &mut String, headers: &[&str], rows: Vec<Vec<String>>, always: bool) {
    if always || !rows.is_empty() {
        out.push('\n');
        out.push_str(&table(headers, rows));
    }
}

impl IdentityRuleStatus {
    /// The rule's keys as `key=pattern` joined by spaces.
    fn keys(&self) -> String {
        [
            ("cn", &self.cn),
            ("san_uri", &self.san_uri),
            ("san_dns", &self.san_dns),
            ("subject", &self.subject),
            ("issuer_cn", &self.issuer_cn),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// `3d 04h05m06s`, `05m06s`.
pub(super) fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h:02}h{m:02}m{s:02}s")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

/// `in 29d`, `in 5h`, `EXPIRED 2d ago`.
fn relative(delta: i64) -> String {
    let abs = delta.unsigned_abs();
    let amount = if abs >= 86_400 {
        format!("{}d", abs / 86_400)
    } else if abs >= 3600 {
        format!("{}h", abs / 3600)
    } else {
        format!("{}m", abs / 60)
    };
    if delta >= 0 {
        format!("in {amount}")
    } else {
        format!("EXPIRED {amount} ago")
    }
}

/// Left-aligned columns separated by two spaces, no trailing spaces.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for r in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let _ = write!(line, "{c:<w$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        let failed = ReloadRecord {
            at: 1_700_093_000,
            at_utc: rfc3339(1_700_093_000),
            trigger: "poll".into(),
            result: "failure".into(),
            error: Some("/etc/portcullis/server.pem: bad PEM".into()),
        };
        Status {
            version: "0.1.0".into(),
            state: "serving".into(),
            started_at: 1_700_000_000,
            uptime_seconds: 93_906,
            now: 1_700_093_906,
            listeners: vec![
                ListenerStatus {
                    name: "sidecar".into(),
                    address: "[::]:3307".into(),
                    route: "local".into(),
                    tls: true,
                    client_auth: Some("required".into()),
                    tls_min_version: Some("1.3".into()),
                    cipher_suites: vec![
                        "TLS13_AES_256_GCM_SHA384".into(),
                        "TLS13_AES_128_GCM_SHA256".into(),
                    ],
                    accepting: true,
                    active_connections: 3,
                    total_connections: 1204,
                    max_connections: 4096,
                    failover_mode: "off".into(),
                    outcomes: BTreeMap::from([("relayed".into(), 1201)]),
                    certificate: Some(CertificateStatus {
                        subject: "CN=db1.example.net".into(),
                        issuer: "CN=Fleet CA".into(),
                        serial: "0a".into(),
                        fingerprint_sha256: "ab".repeat(32),
                        not_after: 1_700_093_906 + 29 * 86_400 + 100,
                        not_after_utc: rfc3339(1_700_093_906 + 29 * 86_400 + 100),
                    }),
                    cas: vec![],
                    tls_loaded_at: Some(1_700_090_000),
                    tls_loaded_at_utc: Some(rfc3339(1_700_090_000)),
                    last_reload: Some(failed.clone()),
                    last_reload_error: Some(failed),
                    certificate_sessions: 2,
                    identity: Some(IdentityStatus {
                        users: None,
                        rules: vec![IdentityRuleStatus {
                            cn: Some("replica-*".into()),
                            users: vec!["repl".into()],
                            ..IdentityRuleStatus::default()
                        }],
                    }),
                    crls: vec![CrlStatus {
                        issuer: "CN=Fleet CA".into(),
                        this_update: 1_700_000_000,
                        next_update: Some(1_700_093_906 - 2 * 86_400),
                        next_update_utc: Some(rfc3339(1_700_093_906 - 2 * 86_400)),
                        revoked: 1,
                    }],
                },
                ListenerStatus {
                    name: "local".into(),
                    address: "unix:/run/portcullis/mysqld.sock".into(),
                    route: "local".into(),
                    tls: false,
                    client_auth: None,
                    tls_min_version: None,
                    cipher_suites: vec![],
                    accepting: true,
                    active_connections: 0,
                    total_connections: 7,
                    max_connections: 4096,
                    failover_mode: "off".into(),
                    outcomes: BTreeMap::new(),
                    certificate: None,
                    cas: vec![],
                    crls: vec![],
                    tls_loaded_at: None,
                    tls_loaded_at_utc: None,
                    last_reload: None,
                    last_reload_error: None,
                    certificate_sessions: 0,
                    identity: None,
                },
            ],
            backends: vec![BackendStatus {
                name: "local".into(),
                address: "unix:/run/mysqld/mysqld.sock".into(),
                state: "unmonitored".into(),
                tls: false,
                server_name: None,
                client_certificate: None,
                last_reload: None,
                last_reload_error: None,
            }],
            admin: Some(AdminStatus {
                address: "127.0.0.1:9306".into(),
                mutation: MutationPolicy {
                    enabled: false,
                    reason: "read-only, for the test".into(),
                },
                allowed_hosts: vec![],
                health_primary_backend: Some("local".into()),
            }),
        }
    }

    #[test]
    fn renders_tables() {
        assert_eq!(
            sample().render(),
            "\
portcullis 0.1.0: serving, up 1d 02h05m06s
admin API 127.0.0.1:9306: changes REFUSED: read-only, for the test

LISTENER  ADDRESS                           TLS  CLIENT AUTH  ROUTE  ACTIVE  TOTAL  FAILOVER  ACCEPTING
sidecar   [::]:3307                         on   required     local  3       1204   off       yes
local     unix:/run/portcullis/mysqld.sock  off  -            local  0       7      off       yes

BACKEND  ADDRESS                       STATE
local    unix:/run/mysqld/mysqld.sock  unmonitored

CERTIFICATE OF  SUBJECT             SERIAL  NOT AFTER                      LOADED                LAST RELOAD
sidecar         CN=db1.example.net  0a      2023-12-15T00:20:06Z (in 29d)  2023-11-15T23:13:20Z  FAILED 2023-11-16T00:03:20Z (poll): /etc/portcullis/server.pem: bad PEM

TLS POLICY OF  MIN VERSION  CIPHER SUITES
sidecar        1.3          TLS13_AES_256_GCM_SHA384,TLS13_AES_128_GCM_SHA256

IDENTITY OF  CERTIFICATE   USERS
sidecar      cn=replica-*  repl

CRL OF   ISSUER       NEXT UPDATE                            REVOKED
sidecar  CN=Fleet CA  2023-11-14T00:18:26Z (EXPIRED 2d ago)  1
"
        );
    }

    #[test]
    fn json_round_trip() {
        let s = sample();
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&text).unwrap(), s);
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(59), "0m59s");
        assert_eq!(human_duration(3600), "1h00m00s");
        assert_eq!(relative(-30), "EXPIRED 0m ago");
        assert_eq!(relative(7200), "in 2h");
    }
}
