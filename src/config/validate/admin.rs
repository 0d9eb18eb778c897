//! `[admin]`: where the admin API listens, its token, the `Host` names it
//! answers to and, on a Unix socket, who may open it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::warn_if_exposed;
use crate::config::model::{
    AdminConfig, AdminSocket, ListenAddr, SocketGroup, SocketMode, DEFAULT_ADMIN_ADDRESS,
};
use crate::config::problems::Problems;
use crate::config::raw::RawAdmin;
use crate::config::values::{parse_listen_addr, read_admin_token, resolve};

/// Where group names are looked up for `socket_group`.
const GROUP_FILE: &str = "/etc/group";

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
    let allowed_hosts = allowed_hosts(a.allowed_hosts.as_ref(), p);
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
                allowed_hosts,
                socket: AdminSocket::default(),
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
    let unix = matches!(address, ListenAddr::Unix(_));
    if let (false, Some(s)) = (unix, &a.socket_mode) {
        p.at(
            s.span(),
            format!("socket_mode applies to a unix: admin address only, not {address}"),
        );
    }
    if let (false, Some(s)) = (unix, &a.socket_group) {
        p.at(
            s.span(),
            format!("socket_group applies to a unix: admin address only, not {address}"),
        );
    }
    if let (true, Some(h)) = (unix, &a.allowed_hosts) {
        p.at(
            h.span(),
            "allowed_hosts applies to a TCP admin address only: on a unix: socket the Host header is not checked (browsers cannot reach a socket file; its mode is the control)",
        );
    }
    let socket = socket(&a, p);
    AdminConfig {
        address,
        token_file,
        allowed_hosts,
        socket,
    }
}

/// `allowed_hosts`: host names, lowercased.
fn allowed_hosts(v: Option<&Spanned<Vec<Spanned<String>>>>, p: &mut Problems<'_>) -> Vec<String> {
    let Some(v) = v else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for h in v.get_ref() {
        match host_name(h.get_ref()) {
            Ok(name) => names.push(name),
            Err(e) => p.at(h.span(), e),
        }
    }
    names
}

/// A DNS host name as `Host` carries it: letters, digits and `-` in dot
/// separated labels, lowercased. IP literals and `localhost` are always
/// accepted, so listing them is refused as a likely mistake (a port or a
/// URL) only when they do not parse as names.
pub(super) fn host_name(s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "allowed_hosts: {s:?} is not a host name ({why}); list names like \"db1-admin.example.net\", without scheme, port or path (IP literals and localhost are always allowed)"
        ))
    };
    let name = s.strip_suffix('.').unwrap_or(s);
    if name.is_empty() || name.len() > 253 {
        return bad("empty or longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated label has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("letters, digits, '-' and '.' only");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with '-'");
        }
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("an IP literal: those are always allowed");
    }
    Ok(name.to_ascii_lowercase())
}

/// `socket_mode` and `socket_group`.
fn socket(a: &RawAdmin, p: &mut Problems<'_>) -> AdminSocket {
    let mode = match &a.socket_mode {
        None => SocketMode::default(),
        Some(m) => match m.get_ref().as_str() {
            "0600" | "600" => SocketMode::Owner,
            "0660" | "660" => SocketMode::OwnerAndGroup,
            other => {
                p.at(
                    m.span(),
                    format!("socket_mode {other:?} is not supported: \"0600\" (the user portcullis runs as) or \"0660\" (that user and the socket's group); whoever can open the socket may change the proxy"),
                );
                SocketMode::default()
            }
        },
    };
    let group = a.socket_group.as_ref().and_then(|g| {
        if mode != SocketMode::OwnerAndGroup {
            p.at(
                g.span(),
                "socket_group needs socket_mode = \"0660\": with 0600 the group has no access",
            );
            return None;
        }
        let groups = std::fs::read_to_string(GROUP_FILE).unwrap_or_default();
        match resolve_group(g.get_ref(), &groups) {
            Ok(gid) => Some(SocketGroup {
                name: g.get_ref().clone(),
                gid,
            }),
            Err(e) => {
                p.at(g.span(), e);
                None
            }
        }
    });
    AdminSocket { mode, group }
}

/// A group name (looked up in `etc_group`, the text of `/etc/group`) or a
/// numeric id. Groups known only to NSS (LDAP, sssd) are not in that file:
/// give their id.
pub(super) fn resolve_group(name: &str, etc_group: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    etc_group
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(':');
            let n = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| {
            format!("socket_group {name:?} is not in {GROUP_FILE}; give an existing group's name or its numeric id")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, DeferMaterial};

    #[test]
    fn host_names() {
        assert_eq!(
            host_name("DB1-Admin.Example.NET.").as_deref(),
            Ok("db1-admin.example.net")
        );
        assert_eq!(host_name("admin").as_deref(), Ok("admin"));
        for bad in [
            "",
            "db1.example.net:9306",
            "http://db1",
            "*.example.net",
            "a..b",
            "-a.b",
            "a_b",
            "127.0.0.1",
            "[::1]",
        ] {
            let e = host_name(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("allowed_hosts: {bad:?} is not a host name")),
                "{e}"
            );
        }
    }

    #[test]
    fn groups() {
        let etc = "root:x:0:\nportcullis:x:998:alice,bob\nbroken\nkeepalived:x:notanumber:\n";
        assert_eq!(resolve_group("portcullis", etc), Ok(998));
        assert_eq!(resolve_group("root", etc), Ok(0));
        assert_eq!(resolve_group("1234", etc), Ok(1234));
        assert_eq!(
            resolve_group("keepalived", etc),
            Err("socket_group \"keepalived\" is not in /etc/group; give an existing group's name or its numeric id".into())
        );
    }

    fn check(admin: &str) -> Result<AdminConfig, Vec<(Option<usize>, String)>> {
        let src = format!(
            "[[backend]]\nname = \"b\"\naddress = \"127.0.0.1:3306\"\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:3307\"\nroute = \"b\"\n{admin}"
        );
        Config::check_toml(
            &src,
            Path::new("test.toml"),
            Path::new("/base"),
            &mut DeferMaterial,
        )
        .result
        .map(|c| c.admin.expect("[admin] given"))
        .map_err(|e| {
            e.problems
                .into_iter()
                .map(|p| (p.line, p.message))
                .collect()
        })
    }

    #[test]
    fn socket_mode_and_group() {
        let c = check("[admin]\naddress = \"unix:admin.sock\"\n").unwrap();
        assert_eq!(c.address, ListenAddr::Unix("/base/admin.sock".into()));
        assert_eq!(c.socket, AdminSocket::default());
        assert_eq!(c.socket.mode.bits(), 0o600);
        let c = check("[admin]\naddress = \"unix:admin.sock\"\nsocket_mode = \"0660\"\nsocket_group = \"0\"\n")
            .unwrap();
        assert_eq!(
            c.socket,
            AdminSocket {
                mode: SocketMode::OwnerAndGroup,
                group: Some(SocketGroup {
                    name: "0".into(),
                    gid: 0
                })
            }
        );
        // Lines: 1-7 backend and listener, 8 [admin], 9 address, 10.. keys.
        assert_eq!(
            check("[admin]\naddress = \"unix:admin.sock\"\nsocket_mode = \"0666\"\n").unwrap_err(),
            [(Some(10), "socket_mode \"0666\" is not supported: \"0600\" (the user portcullis runs as) or \"0660\" (that user and the socket's group); whoever can open the socket may change the proxy".to_string())]
        );
        assert_eq!(
            check("[admin]\naddress = \"unix:admin.sock\"\nsocket_group = \"0\"\n").unwrap_err(),
            [(
                Some(10),
                "socket_group needs socket_mode = \"0660\": with 0600 the group has no access"
                    .to_string()
            )]
        );
        assert_eq!(
            check("[admin]\naddress = \"127.0.0.1:9306\"\nsocket_mode = \"0660\"\nsocket_group = \"0\"\n")
                .unwrap_err(),
            [
                (Some(10), "socket_mode applies to a unix: admin address only, not 127.0.0.1:9306".to_string()),
                (Some(11), "socket_group applies to a unix: admin address only, not 127.0.0.1:9306".to_string()),
            ]
        );
    }

    #[test]
    fn allowed_hosts_are_names_on_tcp() {
        let c = check("[admin]\nallowed_hosts = [\"Admin.Example.net\", \"db1\"]\n").unwrap();
        assert_eq!(c.allowed_hosts, ["admin.example.net", "db1"]);
        let e = check("[admin]\nallowed_hosts = [\"ok.example\",\n  \"bad:9306\"]\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, Some(10), "{e:?}");
        assert!(
            e[0].1
                .starts_with("allowed_hosts: \"bad:9306\" is not a host name"),
            "{e:?}"
        );
        let e = check("[admin]\naddress = \"unix:admin.sock\"\nallowed_hosts = [\"a.example\"]\n")
            .unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].0, Some(10), "{e:?}");
        assert!(
            e[0].1
                .starts_with("allowed_hosts applies to a TCP admin address only"),
            "{e:?}"
        );
    }
}
