//! File-permission checks for secrets (TLS private keys, the admin token,
//! the monitor's password, inline in the config or in its file), for the
//! files that decide what is trusted (CA bundles, CRLs, the config file:
//! nobody but the owner may write them), and the warning about running as
//! root.
//!
//! A secret that other local users can read is a leak waiting to happen,
//! but refusing to start over it would break deployments that share a key
//! through a group on purpose (e.g. `root:portcullis 0640`, or Kubernetes
//! secrets mounted 0644). So it is a warning at config load, naming the
//! file, its mode and the fix — never an error: [`loose_mode`] is the check
//! (it logs nothing), validation turns it into a
//! [`Warning`](crate::config::Warning), and [`crate::preflight`] logs it.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Permission bits that give anyone but the owner access.
const GROUP_OTHER: u32 = 0o077;

/// Permission bits that let the group or others change a file (or, for a
/// directory, add and remove its entries).
const GROUP_OTHER_WRITE: u32 = 0o022;

/// Permission bits that let the group or others read a file.
const GROUP_OTHER_READ: u32 = 0o044;

/// The file's permission bits (`0o7777` part of the mode) when the group
/// or others have any access to it; `None` when only the owner does.
/// Follows symlinks: what matters is the file that is read.
pub fn loose_mode(path: &Path) -> io::Result<Option<u32>> {
    mode_with(path, GROUP_OTHER)
}

/// The permission bits when the group or others can write the file or
/// directory; `None` when they cannot. Follows symlinks.
pub fn writable_mode(path: &Path) -> io::Result<Option<u32>> {
    mode_with(path, GROUP_OTHER_WRITE)
}

/// The permission bits when the group or others can read the file; `None`
/// when they cannot. Follows symlinks.
pub fn readable_mode(path: &Path) -> io::Result<Option<u32>> {
    mode_with(path, GROUP_OTHER_READ)
}

fn mode_with(path: &Path, bits: u32) -> io::Result<Option<u32>> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    Ok((mode & bits != 0).then_some(mode))
}

/// The effective user id from a `/proc/<pid>/status` text (its `Uid:`
/// line: real, effective, saved, filesystem).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Logs a warning when the process runs as root: portcullis needs no
/// privilege (its default ports are above 1024; it reads its keys and
/// connects to the database socket), so root only widens what a bug could
/// reach. Reads `/proc/self/status`, so no unsafe code is needed; silent
/// where that file does not exist.
pub fn warn_if_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| effective_uid(&s));
    if uid == Some(0) {
        tracing::warn!(
            "running as root: portcullis needs no privileges; run it as its own unprivileged user (ports below 1024 need only CAP_NET_BIND_SERVICE)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;

    #[test]
    fn effective_uid_is_the_second_uid_field() {
        let status =
            "Name:\tportcullis\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1001\t1000\t1000\n"), Some(1001));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(effective_uid(&own).is_some(), "{own}");
    }

    fn file_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
        let p = dir.join(format!("key-{mode:o}.pem"));
        std::fs::write(&p, "secret").unwrap();
        std::fs::set_permissions(&p, Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn owner_only_modes_are_fine_anything_else_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400, 0o700] {
            assert_eq!(loose_mode(&file_with_mode(dir.path(), mode)).unwrap(), None);
        }
        for mode in [0o640, 0o644, 0o604, 0o660, 0o602, 0o610] {
            assert_eq!(
                loose_mode(&file_with_mode(dir.path(), mode)).unwrap(),
                Some(mode),
                "{mode:o}"
            );
        }
    }

    #[test]
    fn write_and_read_bits_are_judged_apart() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o644, 0o640, 0o755, 0o444] {
            assert_eq!(
                writable_mode(&file_with_mode(dir.path(), mode)).unwrap(),
                None,
                "{mode:o}"
            );
        }
        for mode in [0o664, 0o646, 0o666, 0o620, 0o1777] {
            assert_eq!(
                writable_mode(&file_with_mode(dir.path(), mode)).unwrap(),
                Some(mode),
                "{mode:o}"
            );
        }
        assert_eq!(
            readable_mode(&file_with_mode(dir.path(), 0o620)).unwrap(),
            None
        );
        assert_eq!(
            readable_mode(&file_with_mode(dir.path(), 0o604)).unwrap(),
            Some(0o604)
        );
    }

    #[test]
    fn symlinks_are_judged_by_their_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = file_with_mode(dir.path(), 0o644);
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(loose_mode(&link).unwrap(), Some(0o644));
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_verdict() {
        let dir = tempfile::tempdir().unwrap();
        assert!(loose_mode(&dir.path().join("absent.pem")).is_err());
    }
}
