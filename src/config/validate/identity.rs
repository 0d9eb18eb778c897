//! `[listener.identity]`: the shortcut or the rules, each rule with at
//! least one key and at least one user; a rule that an earlier one with
//! the same keys shadows is a warning. Whether it sits on a listener that
//! requires client certificates is checked by the TLS section
//! ([`super::tls::validate_tls`]).

use toml::Spanned;

use crate::config::identity::{CertField, IdentityRule, IdentityRules, Matcher, Pattern, Users};
use crate::config::problems::{Problems, Warning};
use crate::config::raw::{RawIdentity, RawIdentityRule};

/// The rules of listener `listener`, or `None` after a problem (reported).
pub(super) fn validate_identity(
    listener: &str,
    i: &Spanned<RawIdentity>,
    p: &mut Problems<'_>,
) -> Option<IdentityRules> {
    let raw = i.get_ref();
    match (&raw.users, raw.rule.is_empty()) {
        (Some(u), true) if u.get_ref() == "cn" => Some(IdentityRules::Cn),
        (Some(u), true) => {
            p.at(
                u.span(),
                format!(
                    "[listener.identity] users = {:?}: the only shortcut is users = \"cn\" (the login user must equal the certificate's CN); list users per [[listener.identity.rule]] instead",
                    u.get_ref()
                ),
            );
            None
        }
        (Some(u), false) => {
            p.at(
                u.span(),
                "[listener.identity] has both users = \"cn\" and [[listener.identity.rule]]: use one or the other",
            );
            None
        }
        (None, true) => {
            p.at(
                i.span(),
                "[listener.identity] needs users = \"cn\" or at least one [[listener.identity.rule]]",
            );
            None
        }
        (None, false) => {
            let before = p.count();
            let rules: Vec<IdentityRule> = raw.rule.iter().filter_map(|r| rule(r, p)).collect();
            if p.count() != before {
                return None;
            }
            warn_shadowed(listener, &rules, p);
            Some(IdentityRules::Rules(rules))
        }
    }
}

/// One rule, or `None` after a problem (reported).
fn rule(r: &Spanned<RawIdentityRule>, p: &mut Problems<'_>) -> Option<IdentityRule> {
    let raw = r.get_ref();
    let keys = [
        (CertField::Cn, &raw.cn),
        (CertField::SanUri, &raw.san_uri),
        (CertField::SanDns, &raw.san_dns),
        (CertField::Subject, &raw.subject),
        (CertField::IssuerCn, &raw.issuer_cn),
    ];
    let mut ok = true;
    let mut matchers = Vec::new();
    for (field, value) in keys {
        let Some(v) = value else { continue };
        if v.get_ref().is_empty() {
            p.at(
                v.span(),
                format!(
                    "identity rule: {} is empty; give a value or a glob such as \"*\"",
                    field.key()
                ),
            );
            ok = false;
        }
        matchers.push(Matcher {
            field,
            pattern: Pattern::new(v.get_ref().clone()),
        });
    }
    if matchers.is_empty() {
        p.at(
            r.span(),
            "identity rule has no key to match a certificate on: give at least one of cn, san_uri, san_dns, subject, issuer_cn",
        );
        ok = false;
    }
    let users = raw.users.get_ref();
    if users.is_empty() {
        p.at(
            raw.users.span(),
            "identity rule: users is empty, so the certificates it matches could log in as nobody; list the users (\"*\" for any)",
        );
        ok = false;
    }
    for u in users {
        if u.get_ref().is_empty() {
            p.at(u.span(), "identity rule: a user name is empty");
            ok = false;
        }
    }
    let users = if users.iter().any(|u| u.get_ref() == "*") {
        Users::Any
    } else {
        Users::Only(users.iter().map(|u| u.get_ref().clone()).collect())
    };
    ok.then_some(IdentityRule { matchers, users })
}

/// A rule whose keys and patterns an earlier rule has exactly: the earlier
/// one always matches first, so this one never decides.
fn warn_shadowed(listener: &str, rules: &[IdentityRule], p: &mut Problems<'_>) {
    for (i, r) in rules.iter().enumerate() {
        if let Some(earlier) = rules[..i]
            .iter()
            .position(|e| e.matchers.iter().all(|m| r.matchers.contains(m)))
        {
            p.warn(Warning::IdentityRuleUnmatchable {
                listener: listener.to_string(),
                rule: i + 1,
                why: format!(
                    "rule {} matches every certificate this one does, and comes first",
                    earlier + 1
                ),
            });
        }
    }
}
