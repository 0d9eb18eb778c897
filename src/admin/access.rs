//! Who may do what through the admin API: the `Host` check against DNS
//! rebinding, the bearer token, and whether changes are served at all.
//! Everything here decides from the request's head, before any body is
//! read.
//!
//! | admin address | `token_file` | `GET` (but `/health*`) | `PUT`/`POST`/`DELETE` |
//! |---|---|---|---|
//! | TCP or Unix | set | token | token |
//! | Unix socket | none | anyone who can open the socket | the same |
//! | TCP | none | anyone who can connect | refused: 403 |
//!
//! The `/health` paths never need a token.

use std::net::{Ipv4Addr, Ipv6Addr};

use hyper::header::{self, HeaderMap};
use hyper::{Method, Uri};
use serde::{Deserialize, Serialize};

/// How requests are authorized, fixed at start from `[admin]`.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Access {
    /// Every request but the `/health` paths needs this bearer token.
    Token(String),
    /// A Unix socket without a token: its file mode decides who connects,
    /// and whoever does may do everything.
    Socket,
    /// TCP without a token: `GET` only.
    ReadOnly,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.write_str(match self {
            Access::Token(_) => "Token",
            Access::Socket => "Socket",
            Access::ReadOnly => "ReadOnly",
        })
    }
}

/// Whether the admin API serves changes, and why: `/status` and
/// `portcullis status` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutationPolicy {
    /// `PUT`, `POST` and `DELETE` are served.
    pub enabled: bool,
    /// Why (or why not), and what would change it.
    pub reason: String,
}

/// Why changes are refused on a TCP admin API without a token (the 403
/// body, the start-up log line and `/status` say it the same way).
pub(super) const READ_ONLY_REASON: &str = "the admin API listens on TCP without [admin] token_file, so it serves GET only; set token_file, or listen on a unix: socket, to allow PUT, POST and DELETE";

impl Access {
    pub(super) fn policy(&self) -> MutationPolicy {
        let (enabled, reason) = match self {
            Access::Token(_) => (
                true,
                "every request but the /health paths needs the bearer token from [admin] token_file",
            ),
            Access::Socket => (
                true,
                "the admin API is a Unix socket without token_file: whoever may open the socket (its file mode and group) may change the proxy",
            ),
            Access::ReadOnly => (false, READ_ONLY_REASON),
        };
        MutationPolicy {
            enabled,
            reason: reason.into(),
        }
    }

    /// Decides a request that is not a `/health` probe from its method and
    /// headers.
    pub(super) fn check(&self, method: &Method, headers: &HeaderMap) -> Verdict {
        match self {
            Access::Token(token) if bearer_matches(headers, token) => {
                Verdict::Allowed { credentials: true }
            }
            Access::Token(_) => Verdict::NoToken,
            Access::Socket => Verdict::Allowed { credentials: true },
            Access::ReadOnly if *method == Method::GET => Verdict::Allowed { credentials: false },
            Access::ReadOnly => Verdict::ReadOnly,
        }
    }
}

/// What [`Access::check`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Go on. `credentials`: the client proved it may use the API (a valid
    /// token, or it could open the socket), so its connection is not among
    /// the first closed when connections run out.
    Allowed { credentials: bool },
    /// 401: a token is configured and this request has none or a wrong one.
    NoToken,
    /// 403: TCP without a token serves `GET` only.
    ReadOnly,
}

/// Compares the bearer token in constant time (no early exit on the first
/// differing byte).
pub(super) fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// Checks the authority a TCP request names (its `Host` header, and the
/// authority of an absolute-form target): an IP literal, `localhost`, or a
/// name in `allowed` (lowercase). A page a browser loaded from
/// `evil.example` whose name was re-pointed at 127.0.0.1 (DNS rebinding)
/// still sends `Host: evil.example`, so it is refused here. A request
/// without `Host` (HTTP/1.0 scripts) names no host and cannot come from a
/// browser: it passes. `Err` is the reason, for the 421 answer.
pub(super) fn check_host(uri: &Uri, headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header".into());
    }
    let from_header = match first {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| "the Host header is not ASCII text".to_string())?,
        ),
    };
    for authority in uri
        .authority()
        .map(|a| a.as_str())
        .into_iter()
        .chain(from_header)
    {
        host_allowed(authority, allowed)?;
    }
    Ok(())
}

/// One `host[:port]` against the rule of [`check_host`].
pub(super) fn host_allowed(authority: &str, allowed: &[String]) -> Result<(), String> {
    let host =
        host_part(authority).ok_or_else(|| format!("Host {authority:?} is not host[:port]"))?;
    if host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<Ipv6Addr>().is_ok())
    {
        return Ok(());
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if allowed.contains(&name) {
        return Ok(());
    }
    Err(format!(
        "Host {host:?} is not an IP address, localhost or a name in [admin] allowed_hosts; this admin API does not answer for it (a browser page from another site may be trying to reach it through DNS rebinding)"
    ))
}

/// The host of `host[:port]` (`[v6]:port` keeps its brackets); `None` when
/// the port is not a number.
fn host_part(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (h, rest) = authority.split_at(end + 1);
        (h, rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) || host.is_empty() {
        return None;
    }
    Some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens() {
        let t = "0123456789abcdef";
        let auth = |v: &str| headers(&[(header::AUTHORIZATION, v)]);
        assert!(bearer_matches(&auth("Bearer 0123456789abcdef"), t));
        assert!(bearer_matches(&auth("bearer 0123456789abcdef"), t));
        assert!(!bearer_matches(&HeaderMap::new(), t));
        assert!(!bearer_matches(&auth("Bearer 0123456789abcde"), t));
        assert!(!bearer_matches(&auth("Bearer 0123456789abcdefX"), t));
        assert!(!bearer_matches(&auth("Bearer "), t));
        assert!(!bearer_matches(&auth("Basic 0123456789abcdef"), t));
        assert!(!bearer_matches(&auth("0123456789abcdef"), t));
    }

    #[test]
    fn verdicts() {
        let none = HeaderMap::new();
        let good = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef")]);
        let token = Access::Token("0123456789abcdef".into());
        for m in [Method::GET, Method::PUT, Method::POST, Method::DELETE] {
            assert_eq!(token.check(&m, &none), Verdict::NoToken, "{m}");
            assert_eq!(
                token.check(&m, &good),
                Verdict::Allowed { credentials: true },
                "{m}"
            );
            assert_eq!(
                Access::Socket.check(&m, &none),
                Verdict::Allowed { credentials: true },
                "{m}"
            );
        }
        assert_eq!(
            Access::ReadOnly.check(&Method::GET, &good),
            Verdict::Allowed { credentials: false }
        );
        for m in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
            assert_eq!(Access::ReadOnly.check(&m, &good), Verdict::ReadOnly, "{m}");
        }
        assert!(!Access::ReadOnly.policy().enabled);
        assert!(Access::Socket.policy().enabled && token.policy().enabled);
        assert_eq!(format!("{token:?}"), "Token");
    }

    #[test]
    fn hosts() {
        let allowed = vec!["admin.example.net".to_string()];
        for ok in [
            "localhost",
            "LOCALHOST:9306",
            "127.0.0.1",
            "127.0.0.1:9306",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:9306",
            "[2001:db8::1]:9306",
            "admin.example.net",
            "Admin.Example.NET.:9306",
        ] {
            assert_eq!(host_allowed(ok, &allowed), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9306",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "::1",
            "[::1",
            "[not-v6]:9306",
            "localhost:http",
            ":9306",
            "",
        ] {
            assert!(host_allowed(bad, &allowed).is_err(), "{bad}");
        }
        assert_eq!(
            host_allowed("evil.example:9306", &[]),
            Err("Host \"evil.example\" is not an IP address, localhost or a name in [admin] allowed_hosts; this admin API does not answer for it (a browser page from another site may be trying to reach it through DNS rebinding)".into())
        );
    }

    #[test]
    fn host_header_and_absolute_targets() {
        let uri: Uri = "/status".parse().unwrap();
        assert_eq!(check_host(&uri, &HeaderMap::new(), &[]), Ok(()));
        assert_eq!(
            check_host(&uri, &headers(&[(header::HOST, "127.0.0.1:9306")]), &[]),
            Ok(())
        );
        assert_eq!(
            check_host(
                &uri,
                &headers(&[(header::HOST, "127.0.0.1"), (header::HOST, "evil.example")]),
                &[]
            ),
            Err("more than one Host header".into())
        );
        // An absolute-form target names its own authority: both must pass.
        let abs: Uri = "http://evil.example/status".parse().unwrap();
        assert!(check_host(&abs, &headers(&[(header::HOST, "localhost")]), &[]).is_err());
        let abs: Uri = "http://localhost:9306/status".parse().unwrap();
        assert_eq!(
            check_host(&abs, &headers(&[(header::HOST, "localhost:9306")]), &[]),
            Ok(())
        );
    }
}
