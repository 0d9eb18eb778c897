//! Who listens on an address: the process holding a listening TCP socket
//! or a Unix socket, found through `/proc` (the socket's inode in
//! `/proc/net/{tcp,tcp6,unix}`, then the process with a descriptor on it).
//!
//! Only what this user may see: other users' descriptors are unreadable
//! without privileges, and then the holder is unknown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::config::ListenAddr;

/// A process listening on an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub(super) name: String,
}

impl Holder {
    /// Whether it is a portcullis (which may be this proxy, running).
    pub(super) fn is_portcullis(&self) -> bool {
        self.name == "portcullis"
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid)
    }
}

/// The process listening on `addr`, when this user can see it.
pub(super) fn holder(addr: &ListenAddr) -> Option<Holder> {
    let inodes: Vec<u64> = match addr {
        ListenAddr::Tcp(a) => ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|table| tcp_listeners(&table, *a))
            .collect(),
        ListenAddr::Unix(path) => std::fs::read_to_string("/proc/net/unix")
            .map(|table| unix_listeners(&table, path))
            .unwrap_or_default(),
    };
    if inodes.is_empty() {
        return None;
    }
    process_with_socket(&inodes)
}

/// The inodes of the listening sockets in a `/proc/net/tcp{,6}` table that
/// `addr` would collide with: the same port, and the same address or a
/// wildcard on either side.
fn tcp_listeners(table: &str, addr: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != LISTEN {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = proc_ip(ip)?;
            let overlaps = ip == addr.ip()
                || ip.is_unspecified()
                || addr.ip().is_unspecified()
                || ip.to_canonical() == addr.ip();
            if port != addr.port() || !overlaps {
                return None;
            }
            inode.parse().ok()
        })
        .collect()
}

/// An address as `/proc/net/tcp{,6}` prints it: the raw bytes, as 32-bit
/// words in the machine's byte order, in hex.
fn proc_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The inodes of the sockets bound to `path` in a `/proc/net/unix` table.
fn unix_listeners(table: &str, path: &Path) -> Vec<u64> {
    let path = path.to_string_lossy();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.get(7) == Some(&path.as_ref()))
                .then(|| f.get(6)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The first process (by pid) with a descriptor on one of `inodes`.
fn process_with_socket(inodes: &[u64]) -> Option<Holder> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find_map(|pid| {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        let holds = fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        holds.then(|| Holder {
            pid,
            name: name.trim_end().to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_addresses_are_read_in_the_machines_byte_order() {
        let v4 = u32::from_ne_bytes([127, 0, 0, 1]);
        assert_eq!(
            proc_ip(&format!("{v4:08X}")),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        let words: String = Ipv6Addr::LOCALHOST
            .octets()
            .chunks(4)
            .map(|c| format!("{:08X}", u32::from_ne_bytes(c.try_into().unwrap())))
            .collect();
        assert_eq!(proc_ip(&words), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(proc_ip("zz"), None);
    }

    #[test]
    fn the_holder_of_a_listening_socket_is_this_process() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        let me = holder(&ListenAddr::Tcp(addr)).expect("our own socket is visible");
        assert_eq!(me.pid, std::process::id());
        assert!(!me.is_portcullis(), "{me}");
        // A wildcard bind on the same port collides with it too.
        let any = SocketAddr::from(([0, 0, 0, 0], addr.port()));
        assert_eq!(holder(&ListenAddr::Tcp(any)), Some(me.clone()));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let _unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(holder(&ListenAddr::Unix(path)), Some(me));
        assert_eq!(holder(&ListenAddr::Unix(dir.path().join("none"))), None);
    }
}
