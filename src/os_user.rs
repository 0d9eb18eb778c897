//! The OS user portcullis runs as, by name.
//!
//! Behind a Unix-socket backend, mariadbd's `unix_socket` authentication
//! plugin logs in the MariaDB account named like the OS user of the
//! socket's peer — and that peer is portcullis, not the client. So the
//! MariaDB user named like portcullis's own OS user must not be reachable
//! through it (docs/security.md, "Who the backend thinks you are").
//!
//! Read without `unsafe`: the effective uid from `/proc/self/status`, its
//! name from `/etc/passwd`. Users known only to NSS (LDAP, sssd) are not in
//! that file; such a process is treated as having no name, which the start
//! log says.

use std::sync::OnceLock;

/// The effective uid and its user name, read once.
pub fn effective() -> &'static Option<(u32, String)> {
    static USER: OnceLock<Option<(u32, String)>> = OnceLock::new();
    USER.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let uid = effective_uid(&status)?;
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        Some((uid, name_of(&passwd, uid)?.to_string()))
    })
}

/// The effective user's name, when known.
pub fn effective_name() -> Option<&'static str> {
    effective().as_ref().map(|(_, n)| n.as_str())
}

/// The effective user id from a `/proc/<pid>/status` text (its `Uid:`
/// line: real, effective, saved, filesystem).
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The name of `uid` in an `/etc/passwd` text (`name:x:uid:gid:…`).
fn name_of(passwd: &str, uid: u32) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then_some(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_effective_uid() {
        let status = "Name:\tportcullis\nUid:\t0\t998\t998\t998\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(998));
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      mysql:x:101:102:MariaDB Server:/nonexistent:/bin/false\n\
                      portcullis:x:998:998::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(name_of(passwd, 998), Some("portcullis"));
        assert_eq!(name_of(passwd, 0), Some("root"));
        assert_eq!(name_of(passwd, 5), None);
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    /// This process has a name (the tests run as a user in /etc/passwd).
    #[test]
    fn this_process_is_someone() {
        let (_, name) = effective()
            .as_ref()
            .expect("the test user is in /etc/passwd");
        assert!(!name.is_empty());
    }
}
