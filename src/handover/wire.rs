//! The control socket's line protocol, blocking, over a connected Unix
//! stream socket (both ends run it on a blocking thread, with timeouts):
//!
//! ```text
//! new → old   HANDOVER
//! old → new   OFFER <n>            (the descriptors ride on this message)
//!             <kind> <name> <address>   n lines; kind: listener | admin
//!             END
//!         or  REFUSED <reason>
//! new → old   DRAIN <i,j,…|->      (the offered entries it took), once serving
//! old → new   DRAINING <pid>       (it no longer accepts)
//! ```
//!
//! The descriptors of the offer travel with `SCM_RIGHTS` on its first
//! byte, in the order of its lines. A new process that closes the
//! connection instead of sending `DRAIN` leaves the old one as it was.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::config::ListenAddr;

/// Most descriptors one offer carries (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 250;
/// Longest line either side accepts.
const MAX_LINE: usize = 8 * 1024;

/// What an offered descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listener,
    Admin,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::Admin => "admin",
        }
    }
}

/// One line of an offer: what the descriptor at the same position is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// The listener's name (`-` for the admin API).
    pub name: String,
    /// The address it is bound to (port 0 resolved).
    pub address: ListenAddr,
}

impl Entry {
    /// The line, or `None` when the address cannot be written on one (a
    /// Unix path with a tab or a line break: such a socket is not offered).
    pub fn line(&self) -> Option<String> {
        let address = self.address.to_string();
        if address.contains(['\t', '\n']) || self.name.contains(['\t', '\n']) {
            return None;
        }
        Some(format!("{}\t{}\t{address}", self.kind.as_str(), self.name))
    }

    fn parse(line: &str) -> Option<Entry> {
        let mut f = line.splitn(3, '\t');
        let kind = match f.next()? {
            "listener" => Kind::Listener,
            "admin" => Kind::Admin,
            _ => return None,
        };
        let name = f.next()?.to_string();
        let address = parse_addr(f.next()?)?;
        Some(Entry {
            kind,
            name,
            address,
        })
    }
}

/// The inverse of `ListenAddr`'s `Display`.
pub fn parse_addr(s: &str) -> Option<ListenAddr> {
    match s.strip_prefix("unix:") {
        Some(p) => Some(ListenAddr::Unix(PathBuf::from(p))),
        None => s.parse().ok().map(ListenAddr::Tcp),
    }
}

/// Why the protocol failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the other side closed the connection")]
    Closed,
    #[error("unexpected message {0:?}")]
    Unexpected(String),
    #[error("the running portcullis refused: {0}")]
    Refused(String),
}

/// One end of a control connection: lines in and out, and the
/// descriptors that came with the data read so far.
pub struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Conn {
    pub fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one line.
    pub fn send(&mut self, line: &str) -> io::Result<()> {
        self.stream.write_all(format!("{line}\n").as_bytes())
    }

    /// Sends `text` with `fds` on its first byte.
    pub fn send_with_fds(&mut self, text: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many descriptors for one message"));
        }
        let bytes = text.as_bytes();
        let sent = rustix::net::sendmsg(
            &self.stream,
            &[io::IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )?;
        self.stream.write_all(&bytes[sent..])
    }

    /// Reads one line (without its `\n`); the descriptors that arrive with
    /// it are kept for [`take_fds`](Conn::take_fds).
    pub fn line(&mut self) -> Result<String, WireError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).take(end).collect();
                return String::from_utf8(line).map_err(|e| {
                    WireError::Unexpected(String::from_utf8_lossy(e.as_bytes()).into())
                });
            }
            if self.buf.len() > MAX_LINE {
                return Err(WireError::Unexpected("a line too long".into()));
            }
            let n = self.fill()?;
            if n == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// The descriptors received so far.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match rustix::net::recvmsg(
                &self.stream,
                &mut [io::IoSliceMut::new(&mut chunk)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                r => break r?,
            }
        };
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = msg {
                self.fds.extend(fds);
            }
        }
        self.buf.extend_from_slice(&chunk[..got.bytes]);
        Ok(got.bytes)
    }
}

/// The offer's text for `entries` (each with a line).
pub fn offer_text(lines: &[String]) -> String {
    let mut text = format!("OFFER {}\n", lines.len());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("END\n");
    text
}

/// Reads an offer (after `HANDOVER` was sent): its entries, each with its
/// descriptor.
pub fn read_offer(conn: &mut Conn) -> Result<Vec<(Entry, OwnedFd)>, WireError> {
    let head = conn.line()?;
    if let Some(reason) = head.strip_prefix("REFUSED ") {
        return Err(WireError::Refused(reason.to_string()));
    }
    let n: usize = head
        .strip_prefix("OFFER ")
        .and_then(|n| n.parse().ok())
        .filter(|&n| n <= MAX_FDS)
        .ok_or_else(|| WireError::Unexpected(head.clone()))?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let line = conn.line()?;
        entries.push(Entry::parse(&line).ok_or(WireError::Unexpected(line))?);
    }
    let end = conn.line()?;
    if end != "END" {
        return Err(WireError::Unexpected(end));
    }
    let fds = conn.take_fds();
    if fds.len() != entries.len() {
        return Err(WireError::Unexpected(format!(
            "{} descriptor(s) for {} entries",
            fds.len(),
            entries.len()
        )));
    }
    Ok(entries.into_iter().zip(fds).collect())
}

/// The `DRAIN` line for the offered entries taken, by position.
pub fn drain_line(taken: &[usize]) -> String {
    if taken.is_empty() {
        return "DRAIN -".into();
    }
    let list: Vec<String> = taken.iter().map(usize::to_string).collect();
    format!("DRAIN {}", list.join(","))
}

/// The positions in a `DRAIN` line.
pub fn parse_drain(line: &str) -> Option<Vec<usize>> {
    match line.strip_prefix("DRAIN ")? {
        "-" => Some(Vec::new()),
        list => list.split(',').map(|i| i.parse().ok()).collect(),
    }
}

/// A descriptor's borrowed form, for [`Conn::send_with_fds`].
pub fn borrow_all(fds: &[OwnedFd]) -> Vec<BorrowedFd<'_>> {
    fds.iter().map(AsFd::as_fd).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_drain_lines_read_back_as_written() {
        for e in [
            Entry {
                kind: Kind::Listener,
                name: "public".into(),
                address: ListenAddr::Tcp("[::1]:3307".parse().unwrap()),
            },
            Entry {
                kind: Kind::Admin,
                name: "-".into(),
                address: ListenAddr::Unix("/run/p c/admin.sock".into()),
            },
        ] {
            assert_eq!(Entry::parse(&e.line().unwrap()), Some(e));
        }
        let odd = Entry {
            kind: Kind::Listener,
            name: "x".into(),
            address: ListenAddr::Unix("/tmp/a\nb".into()),
        };
        assert_eq!(odd.line(), None);
        assert_eq!(parse_drain(&drain_line(&[0, 2])), Some(vec![0, 2]));
        assert_eq!(parse_drain(&drain_line(&[])), Some(vec![]));
        assert_eq!(parse_drain("DRAIN 1,x"), None);
        assert_eq!(parse_drain("STOP"), None);
    }

    #[test]
    fn descriptors_travel_with_the_offer() {
        let (a, b) = UnixStream::pair().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let entry = Entry {
            kind: Kind::Listener,
            name: "public".into(),
            address: ListenAddr::Tcp(addr),
        };
        let mut old = Conn::new(a);
        let fd: OwnedFd = l.into();
        old.send_with_fds(&offer_text(&[entry.line().unwrap()]), &[fd.as_fd()])
            .unwrap();
        drop(fd);
        let mut new = Conn::new(b);
        let mut offer = read_offer(&mut new).unwrap();
        assert_eq!(offer.len(), 1);
        let (got, fd) = offer.pop().unwrap();
        assert_eq!(got, entry);
        let l = std::net::TcpListener::from(fd);
        assert_eq!(l.local_addr().unwrap(), addr);
        // Still listening: a connection is queued on it.
        let _c = std::net::TcpStream::connect(addr).unwrap();
        l.accept().unwrap();
    }
}
