//! `[admin]`: where the admin API listens and its token.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::warn_if_exposed;
use crate::config::model::{AdminConfig, ListenAddr, DEFAULT_ADMIN_ADDRESS};
use crate::config::problems::Problems;
use crate::config::raw::RawAdmin;
use crate::config::values::{parse_listen_addr, read_admin_token, resolve};

/// The `[admin]` section; `listen_addrs` are the listeners' addresses, which
/// the admin address must not repeat.
pub(super) fn validate_admin(
    a: Spanned<RawAdmin>,
    listen_addrs: &HashSet<ListenAddr>,
    base: &Path,
    p: &mut Problems<'_>,
) -> AdminConfig {
    let span = a.span();
    let a = a.into_inner();
    let token_file = a.token_file.as_ref().map(|t| {
        let path = resolve(t.get_ref(), base);
        match read_admin_token(&path) {
            Ok(_) => warn_if_exposed(&path, "admin token file", p),
            Err(e) => p.at(t.span(), e.to_string()),
        }
        path
    });
    let (text, at) = match &a.address {
        Some(s) => (s.get_ref().as_str(), s.span()),
        None => (DEFAULT_ADMIN_ADDRESS, span),
    };
    let address = match parse_listen_addr(text, base) {
        Ok(addr) => addr,
        Err(_) => {
            p.at(
                at,
                format!("invalid admin address {text:?}: expected \"127.0.0.1:9306\", \"[::1]:9306\" or \"unix:/run/portcullis/admin.sock\""),
            );
            return AdminConfig {
                address: ListenAddr::Unix(PathBuf::new()),
                token_file,
            };
        }
    };
    match &address {
        ListenAddr::Tcp(sa) if !sa.ip().is_loopback() && token_file.is_none() => p.at(
            at.clone(),
            format!("admin address {sa} is not loopback: anyone who reaches it could read the status and change the proxy at runtime; set token_file, or listen on 127.0.0.1, [::1] or a unix: socket"),
        ),
        ListenAddr::Tcp(sa) if sa.port() == 0 => {}
        _ if listen_addrs.contains(&address) => p.at(
            at.clone(),
            format!("admin address {address} is also a [[listener]] address"),
        ),
        _ => {}
    }
    AdminConfig {
        address,
        token_file,
    }
}
