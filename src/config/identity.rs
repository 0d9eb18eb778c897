//! `[listener.identity]`: which MySQL users a verified client certificate
//! may log in (and change user) as, and the matching itself.
//!
//! A certificate's names ([`CertNames`], read once per connection by
//! [`crate::tls`]) are matched against the rules: with `users = "cn"` the
//! login user must equal the certificate's CN; with rules, the first rule
//! whose every key matches decides, and a certificate no rule matches may
//! log in as nobody. Patterns are exact, or globs where `*` matches any
//! run of characters (none included); a key matches when any of the
//! certificate's values of that kind does (docs/certificates.md).

use std::fmt;

/// A listener's identity rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityRules {
    /// `users = "cn"`: the login user must equal the certificate's CN.
    Cn,
    /// `[[listener.identity.rule]]`, in file order; the first that matches
    /// decides.
    Rules(Vec<IdentityRule>),
}

/// One `[[listener.identity.rule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRule {
    /// Every key given (at least one); all must match.
    pub matchers: Vec<Matcher>,
    /// The users a certificate this rule matches may use.
    pub users: Users,
}

/// One key of a rule: which of the certificate's names, and the pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub field: CertField,
    pub pattern: Pattern,
}

/// The certificate names a rule can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    /// The subject's commonName.
    Cn,
    /// A URI in the SubjectAltName (SPIFFE IDs).
    SanUri,
    /// A DNS name in the SubjectAltName.
    SanDns,
    /// The whole subject, as logs and `/status` show it (`CN=app, O=Example`).
    Subject,
    /// The issuer's commonName.
    IssuerCn,
}

impl CertField {
    /// Every field, in the order the config's keys are checked and shown.
    pub const ALL: [CertField; 5] = [
        CertField::Cn,
        CertField::SanUri,
        CertField::SanDns,
        CertField::Subject,
        CertField::IssuerCn,
    ];

    /// The config key.
    pub fn key(self) -> &'static str {
        match self {
            CertField::Cn => "cn",
            CertField::SanUri => "san_uri",
            CertField::SanDns => "san_dns",
            CertField::Subject => "subject",
            CertField::IssuerCn => "issuer_cn",
        }
    }
}

/// Who a rule lets in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// `"*"` among the users: any user.
    Any,
    /// Exactly these MySQL user names.
    Only(Vec<String>),
}

impl Users {
    pub fn allows(&self, user: &str) -> bool {
        match self {
            Users::Any => true,
            Users::Only(names) => names.iter().any(|n| n == user),
        }
    }

    /// As written: `["*"]` or the names.
    pub fn names(&self) -> Vec<String> {
        match self {
            Users::Any => vec!["*".into()],
            Users::Only(names) => names.clone(),
        }
    }
}

/// An exact value, or a glob where `*` matches any run of characters
/// (none included). Nothing else is special.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(text: impl Into<String>) -> Pattern {
        Pattern(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `value` matches: the parts between `*`s in order, the first
    /// at the start and the last at the end.
    pub fn matches(&self, value: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or("");
        let Some(mut rest) = value.strip_prefix(first) else {
            return false;
        };
        let mut parts: Vec<&str> = parts.collect();
        let Some(last) = parts.pop() else {
            // No `*`: exact.
            return rest.is_empty();
        };
        for part in parts {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What identity rules read of a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// The subject's commonNames (normally one).
    pub cn: Vec<String>,
    pub san_uri: Vec<String>,
    pub san_dns: Vec<String>,
    /// The subject as logs and `/status` show it.
    pub subject: String,
    /// The issuer's commonNames.
    pub issuer_cn: Vec<String>,
}

impl CertNames {
    /// The values of `field`.
    fn values(&self, field: CertField) -> &[String] {
        match field {
            CertField::Cn => &self.cn,
            CertField::SanUri => &self.san_uri,
            CertField::SanDns => &self.san_dns,
            CertField::Subject => std::slice::from_ref(&self.subject),
            CertField::IssuerCn => &self.issuer_cn,
        }
    }

    /// How refusals name the certificate: its SPIFFE ID (the first
    /// `spiffe://` URI SAN), else `CN=<cn>`, else the subject.
    pub fn label(&self) -> String {
        if let Some(uri) = self.san_uri.iter().find(|u| u.starts_with("spiffe://")) {
            return uri.clone();
        }
        match self.cn.first() {
            Some(cn) => format!("CN={cn}"),
            None => self.subject.clone(),
        }
    }
}

impl Matcher {
    fn matches(&self, names: &CertNames) -> bool {
        names
            .values(self.field)
            .iter()
            .any(|v| self.pattern.matches(v))
    }
}

impl IdentityRule {
    /// Whether every key matches `names`.
    pub fn matches(&self, names: &CertNames) -> bool {
        self.matchers.iter().all(|m| m.matches(names))
    }

    /// The pattern of `field`, if the rule has that key.
    pub fn pattern(&self, field: CertField) -> Option<&Pattern> {
        self.matchers
            .iter()
            .find(|m| m.field == field)
            .map(|m| &m.pattern)
    }
}

impl IdentityRules {
    /// Whether the certificate named `names` may log in as `user`.
    pub fn allows(&self, names: &CertNames, user: &str) -> bool {
        match self {
            IdentityRules::Cn => names.cn.iter().any(|cn| cn == user),
            IdentityRules::Rules(rules) => rules
                .iter()
                .find(|r| r.matches(names))
                .is_some_and(|r| r.users.allows(user)),
        }
    }

    /// The rules (numbered from 1) whose `issuer_cn` no CA can satisfy:
    /// it matches none of `issuer_cns`, the CNs of the CAs (and
    /// intermediates) that can issue a certificate the listener accepts.
    pub fn unmatchable_issuers(&self, issuer_cns: &[String]) -> Vec<(usize, &Pattern)> {
        let IdentityRules::Rules(rules) = self else {
            return Vec::new();
        };
        rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let p = r.pattern(CertField::IssuerCn)?;
                (!issuer_cns.iter().any(|cn| p.matches(cn))).then_some((i + 1, p))
            })
            .collect()
    }

    /// The first of `users` the certificate may not use, if any.
    pub fn first_refused<'u>(
        &self,
        names: &CertNames,
        users: impl IntoIterator<Item = &'u String>,
    ) -> Option<&'u String> {
        users.into_iter().find(|u| !self.allows(names, u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> CertNames {
        CertNames {
            cn: vec!["replica-1".into()],
            san_uri: vec!["spiffe://example.org/ns/prod/sa/billing".into()],
            san_dns: vec!["db1.example.org".into(), "db1".into()],
            subject: "CN=replica-1, O=Example".into(),
            issuer_cn: vec!["Example CA".into()],
        }
    }

    fn rule(keys: &[(CertField, &str)], users: &[&str]) -> IdentityRule {
        IdentityRule {
            matchers: keys
                .iter()
                .map(|(f, p)| Matcher {
                    field: *f,
                    pattern: Pattern::new(*p),
                })
                .collect(),
            users: if users.contains(&"*") {
                Users::Any
            } else {
                Users::Only(users.iter().map(|u| u.to_string()).collect())
            },
        }
    }

    #[test]
    fn globs_match_runs_of_any_characters() {
        let cases = [
            ("replica-*", "replica-1", true),
            ("replica-*", "replica-", true),
            ("replica-*", "replica", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("*.example.org", "db1.example.org", true),
            ("*.example.org", "example.org", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("exact", "Exact", false),
            ("**", "x", true),
            (
                "spiffe://example.org/ns/*/sa/billing",
                "spiffe://example.org/ns/prod/sa/billing",
                true,
            ),
            (
                "spiffe://example.org/ns/*/sa/billing",
                "spiffe://example.org/ns/prod/sa/billing2",
                false,
            ),
        ];
        for (pattern, value, want) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(value),
                want,
                "{pattern:?} ~ {value:?}"
            );
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let rules = IdentityRules::Rules(vec![
            rule(
                &[(CertField::SanUri, "spiffe://example.org/ns/prod/sa/billing")],
                &["billing", "billing_ro"],
            ),
            rule(&[(CertField::Cn, "replica-*")], &["repl"]),
        ]);
        let n = names();
        assert!(rules.allows(&n, "billing"));
        assert!(rules.allows(&n, "billing_ro"));
        // The second rule matches too, but the first decided.
        assert!(!rules.allows(&n, "repl"));
        let mut replica = n.clone();
        replica.san_uri.clear();
        assert!(rules.allows(&replica, "repl"));
        assert!(!rules.allows(&replica, "root"));
        // No rule matches: nobody.
        let stranger = CertNames {
            cn: vec!["app".into()],
            subject: "CN=app".into(),
            ..CertNames::default()
        };
        assert!(!rules.allows(&stranger, "app"));
    }

    #[test]
    fn every_key_of_a_rule_must_match_and_any_value_of_a_key_does() {
        let n = names();
        let both = rule(
            &[
                (CertField::Cn, "replica-*"),
                (CertField::IssuerCn, "Example CA"),
            ],
            &["*"],
        );
        assert!(both.matches(&n));
        let wrong_issuer = rule(
            &[
                (CertField::Cn, "replica-*"),
                (CertField::IssuerCn, "Other CA"),
            ],
            &["*"],
        );
        assert!(!wrong_issuer.matches(&n));
        // The second DNS name matches.
        assert!(rule(&[(CertField::SanDns, "db1")], &["*"]).matches(&n));
        assert!(rule(&[(CertField::Subject, "CN=replica-1, O=*")], &["*"]).matches(&n));
        // A key the certificate has no value of never matches, not even `*`.
        let bare = CertNames {
            subject: "O=Example".into(),
            ..CertNames::default()
        };
        assert!(!rule(&[(CertField::Cn, "*")], &["*"]).matches(&bare));
        let any = IdentityRules::Rules(vec![rule(&[(CertField::Subject, "*")], &["*"])]);
        assert!(any.allows(&bare, "whoever"));
    }

    #[test]
    fn an_issuer_no_ca_has_is_found() {
        let rules = IdentityRules::Rules(vec![
            rule(&[(CertField::IssuerCn, "Example CA")], &["*"]),
            rule(&[(CertField::Cn, "x")], &["*"]),
            rule(&[(CertField::IssuerCn, "Other*")], &["*"]),
            rule(&[(CertField::IssuerCn, "Example *")], &["*"]),
        ]);
        let cas = ["Example CA".to_string(), "Example Intermediate".to_string()];
        let found: Vec<_> = rules
            .unmatchable_issuers(&cas)
            .into_iter()
            .map(|(i, p)| (i, p.as_str().to_string()))
            .collect();
        assert_eq!(found, [(3, "Other*".to_string())]);
        assert!(IdentityRules::Cn.unmatchable_issuers(&[]).is_empty());
    }

    #[test]
    fn the_cn_shortcut_wants_the_login_user_to_be_the_cn() {
        let n = names();
        assert!(IdentityRules::Cn.allows(&n, "replica-1"));
        assert!(!IdentityRules::Cn.allows(&n, "replica-2"));
        assert!(!IdentityRules::Cn.allows(&CertNames::default(), ""));
        let users = ["replica-1".to_string(), "root".to_string()];
        assert_eq!(IdentityRules::Cn.first_refused(&n, &users), Some(&users[1]));
    }

    #[test]
    fn a_certificate_is_named_by_its_spiffe_id_else_its_cn_else_its_subject() {
        let mut n = names();
        assert_eq!(n.label(), "spiffe://example.org/ns/prod/sa/billing");
        n.san_uri = vec!["https://example.org/not-spiffe".into()];
        assert_eq!(n.label(), "CN=replica-1");
        n.cn.clear();
        assert_eq!(n.label(), "CN=replica-1, O=Example");
    }
}
