//! Parsers for single values: durations, listen and backend addresses,
//! names, paths (resolved against the config file's directory), and the
//! admin token file. Each error says what was expected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::{BackendAddr, ListenAddr, MIN_ADMIN_TOKEN_LEN};

/// Parses durations written as `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"14d"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let digits = s.bytes().take_while(|b| b.is_ascii_digit()).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "invalid duration {s:?}: expected a number and a unit, like \"500ms\", \"10s\", \"5m\""
        )
    })?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m, h or d"
            ))
        }
    };
    Ok(d)
}

pub(super) fn parse_listen_addr(s: &str, base: &Path) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return unix_path(path, base).map(ListenAddr::Unix);
    }
    s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
        format!("invalid listen address {s:?}: expected \"[::]:3307\", \"0.0.0.0:3307\" or \"unix:/path.sock\" (listen addresses must be IP literals)")
    })
}

pub(super) fn parse_backend_addr(s: &str, base: &Path) -> Result<BackendAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return unix_path(path, base).map(BackendAddr::Unix);
    }
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(BackendAddr::Tcp(s.to_string()));
    }
    match s.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains(':')
                && port.parse::<u16>().is_ok_and(|p| p != 0) =>
        {
            Ok(BackendAddr::Tcp(s.to_string()))
        }
        _ => Err(format!("invalid backend address {s:?}: expected \"unix:/path\", \"127.0.0.1:3306\", \"[::1]:3306\" or \"host:port\" (IPv6 literals need brackets)")),
    }
}

/// Unix socket paths are limited to 108 bytes including the NUL by
/// `sockaddr_un`; refuse longer ones here rather than at bind time.
const MAX_UNIX_PATH: usize = 107;

fn unix_path(path: &str, base: &Path) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty Unix socket path after \"unix:\"".into());
    }
    let p = resolve(path, base);
    if p.as_os_str().len() > MAX_UNIX_PATH {
        return Err(format!(
            "Unix socket path {} is {} bytes long; the limit is {MAX_UNIX_PATH}",
            p.display(),
            p.as_os_str().len()
        ));
    }
    Ok(p)
}

/// The `control_socket` path: a Unix socket path (a `unix:` prefix is
/// allowed, as in listen addresses), relative to the config's directory.
pub(super) fn control_socket_path(s: &str, base: &Path) -> Result<PathBuf, String> {
    unix_path(s.strip_prefix("unix:").unwrap_or(s), base)
}

/// The host part of `host:port`, `1.2.3.4:port` or `[v6]:port`.
pub(super) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub(super) fn resolve(p: &str, base: &Path) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Why the admin token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read admin token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin token in {path} must be at least {MIN_ADMIN_TOKEN_LEN} printable ASCII characters without spaces (found {len})")]
    Weak { path: PathBuf, len: usize },
}

/// Reads the admin bearer token: the file's content without surrounding
/// whitespace (so a trailing newline does not count).
pub fn read_admin_token(path: &Path) -> Result<String, TokenError> {
    let data = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = data.trim();
    if token.len() < MIN_ADMIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Weak {
            path: path.to_path_buf(),
            len: token.chars().count(),
        });
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert!(parse_duration("1w").is_err());
    }

    #[test]
    fn backend_addresses() {
        let b = Path::new("/");
        assert!(parse_backend_addr("db2.example.net:3307", b).is_ok());
        assert!(parse_backend_addr("[::1]:3306", b).is_ok());
        assert!(parse_backend_addr("::1:3306", b).is_err());
        assert!(parse_backend_addr("host", b).is_err());
        assert!(parse_backend_addr("unix:", b).is_err());
        assert_eq!(
            parse_backend_addr("unix:rel.sock", Path::new("/etc/p")).unwrap(),
            BackendAddr::Unix("/etc/p/rel.sock".into())
        );
    }
}
