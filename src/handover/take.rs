//! The new process's side: ask the running one for its sockets, take
//! those the new config names, and, once serving, tell it to drain.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::wire::{self, Conn, Entry, Kind, WireError};
use crate::config::ListenAddr;

/// How long the running process has to answer each step.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the sockets could not be taken over; the running process is left
/// as it was.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    #[error("no portcullis answers on the control socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("the process on the control socket {} runs as uid {uid}, not this user's ({me}): refused", path.display())]
    OtherUser { path: PathBuf, uid: u32, me: u32 },
    #[error("hand-over on the control socket {}: {source}", path.display())]
    Wire { path: PathBuf, source: WireError },
}

/// An offer received, being taken from.
pub struct Taking {
    path: PathBuf,
    conn: Conn,
    /// The offered sockets; `None` once taken.
    offered: Vec<(Entry, Option<OwnedFd>)>,
    taken: Vec<usize>,
}

impl Taking {
    /// Connects to the control socket at `path`, checks that the process
    /// there runs as this user, and receives its offer.
    pub fn ask(path: &Path) -> Result<Taking, TakeOverError> {
        let wire_err = |source| TakeOverError::Wire {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(|source| TakeOverError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let me = rustix::process::geteuid().as_raw();
        let uid = rustix::net::sockopt::socket_peercred(&stream)
            .map_err(|e| wire_err(WireError::Io(e.into())))?
            .uid
            .as_raw();
        if uid != me {
            return Err(TakeOverError::OtherUser {
                path: path.to_path_buf(),
                uid,
                me,
            });
        }
        let timeouts = stream
            .set_read_timeout(Some(ANSWER_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(ANSWER_TIMEOUT)));
        timeouts.map_err(|e| wire_err(e.into()))?;
        let mut conn = Conn::new(stream);
        conn.send("HANDOVER").map_err(|e| wire_err(e.into()))?;
        let offered = wire::read_offer(&mut conn).map_err(wire_err)?;
        Ok(Taking {
            path: path.to_path_buf(),
            conn,
            offered: offered.into_iter().map(|(e, fd)| (e, Some(fd))).collect(),
            taken: Vec::new(),
        })
    }

    /// The offered socket of `kind` bound to `address`, if there is one
    /// not taken yet; it is this process's from now on.
    pub fn take(&mut self, kind: Kind, address: &ListenAddr) -> Option<OwnedFd> {
        let (i, fd) = self
            .offered
            .iter_mut()
            .enumerate()
            .find(|(_, (e, fd))| fd.is_some() && e.kind == kind && &e.address == address)
            .map(|(i, (_, fd))| (i, fd.take()))?;
        self.taken.push(i);
        fd
    }

    /// What was offered and not taken (the old process closes those).
    pub fn left(&self) -> impl Iterator<Item = &Entry> {
        self.offered
            .iter()
            .filter(|(_, fd)| fd.is_some())
            .map(|(e, _)| e)
    }

    /// Closes the sockets not taken, tells the old process to drain, and
    /// waits until it no longer accepts; its process id.
    pub fn finish(mut self) -> Result<u32, TakeOverError> {
        for (_, fd) in &mut self.offered {
            drop(fd.take());
        }
        let wire_err = |source| TakeOverError::Wire {
            path: self.path.clone(),
            source,
        };
        self.conn
            .send(&wire::drain_line(&self.taken))
            .map_err(|e| wire_err(e.into()))?;
        let answer = self.conn.line().map_err(wire_err)?;
        answer
            .strip_prefix("DRAINING ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| match answer.strip_prefix("REFUSED ") {
                Some(r) => wire_err(WireError::Refused(r.to_string())),
                None => wire_err(WireError::Unexpected(answer.clone())),
            })
    }
}
