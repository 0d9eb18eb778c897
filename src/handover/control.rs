//! The running process's side: the control socket, and one hand-over at a
//! time on it ([`super::wire`] has the protocol).

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Conn, WireError};
use super::{DrainRequest, Port};

/// How long a peer has to send `HANDOVER`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the new process has from the offer to `DRAIN`: it binds its
/// new listeners, starts its admin API and workers, and accepts.
const SERVING_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the control socket could not be served.
#[derive(Debug, thiserror::Error)]
#[error("control socket {}: {source}", path.display())]
pub struct ControlError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The control socket being served. Dropping it stops serving and removes
/// the socket file, unless the file is no longer this process's (a
/// successor's, bound in its place).
pub struct ControlServer {
    path: PathBuf,
    /// (device, inode) of the socket file this process bound.
    file: (u64, u64),
    /// Set once a successor took over: the file is (or is about to be)
    /// its own.
    handed: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl ControlServer {
    /// Like [`start`](ControlServer::start), for a process that takes
    /// over from none: a socket another process answers on is an error
    /// (that process should be taken over instead), a stale one is
    /// replaced.
    pub fn start_first(path: &Path, port: Port) -> Result<ControlServer, ControlError> {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ControlError {
                path: path.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process answers on it; take it over with `portcullis run --take-over`",
                ),
            });
        }
        ControlServer::start(path, port)
    }

    /// Binds `path` (0600; a file already there is replaced: a successor
    /// binds over its predecessor's) and serves hand-overs from `port`.
    /// Must be called inside a tokio runtime.
    pub fn start(path: &Path, port: Port) -> Result<ControlServer, ControlError> {
        let err = |source| ControlError {
            path: path.to_path_buf(),
            source,
        };
        let listener = bind(path).map_err(err)?;
        let file = file_id(path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        let listener = UnixListener::from_std(listener).map_err(err)?;
        let stop = CancellationToken::new();
        let handed = Arc::new(AtomicBool::new(false));
        let port = Arc::new(port);
        tokio::spawn(serve(listener, port, handed.clone(), stop.clone()));
        tracing::info!(path = %path.display(), "control socket listening (hand-over)");
        Ok(ControlServer {
            path: path.to_path_buf(),
            file,
            handed,
            stop,
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.cancel();
        let ours = file_id(&self.path).is_ok_and(|f| f == self.file);
        if ours && !self.handed.load(Ordering::SeqCst) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "could not remove the control socket file");
            }
        }
    }
}

fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Binds the socket inside a fresh directory only the owner can enter,
/// makes it 0600 there and renames it into place, so that nobody connects
/// before its mode is set, and a predecessor's file is replaced in one
/// step (the path never goes missing).
fn bind(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = parent.join(format!(".c{:06x}", rand::random::<u32>() & 0xff_ffff));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let tmp = private.join("s");
    let result = (|| {
        let l = std::os::unix::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

async fn serve(
    listener: UnixListener,
    port: Arc<Port>,
    handed: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let me = rustix::process::geteuid().as_raw();
    let mut port = Some(port);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = match stream.peer_cred() {
            Ok(c) if c.uid() == me => c.pid(),
            Ok(c) => {
                tracing::warn!(
                    uid = c.uid(),
                    pid = c.pid(),
                    "control socket: refused a peer of another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket: cannot tell who the peer is; refused");
                continue;
            }
        };
        let stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket: cannot serve the connection");
                continue;
            }
        };
        let Some(offer) = port.clone() else {
            // Until this process exits, a peer that reaches it (before the
            // successor's socket replaces the file) is told why.
            tokio::task::spawn_blocking(move || {
                let mut conn = Conn::new(stream);
                let _ = conn.send("REFUSED this process has handed over; try again");
            });
            continue;
        };
        // One at a time: a second successor waits in the backlog.
        let flag = handed.clone();
        let done =
            tokio::task::spawn_blocking(move || hand_over(stream, &offer, &flag, peer)).await;
        if matches!(done, Ok(true)) {
            // The duplicates closed: a listener the successor did not
            // take is closed now. The successor serves the control socket
            // from now on.
            port = None;
        }
    }
}

/// One hand-over on `stream`; whether the successor took over.
fn hand_over(
    stream: std::os::unix::net::UnixStream,
    port: &Port,
    handed: &AtomicBool,
    peer: Option<i32>,
) -> bool {
    match offer_and_wait(stream, port, handed, peer) {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(pid = peer, error = %e, "hand-over abandoned; still serving");
            false
        }
    }
}

fn offer_and_wait(
    stream: std::os::unix::net::UnixStream,
    port: &Port,
    handed: &AtomicBool,
    peer: Option<i32>,
) -> Result<bool, WireError> {
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    stream.set_write_timeout(Some(HELLO_TIMEOUT))?;
    let mut conn = Conn::new(stream);
    let hello = conn.line()?;
    if hello != "HANDOVER" {
        return Err(WireError::Unexpected(hello));
    }
    let (mut lines, mut fds, mut entries) = (Vec::new(), Vec::new(), Vec::new());
    for (entry, fd) in port.offer.entries.iter().take(wire::MAX_FDS) {
        match entry.line() {
            Some(l) => {
                lines.push(l);
                fds.push(fd.as_fd());
                entries.push(entry.clone());
            }
            None => {
                tracing::warn!(address = %entry.address, "hand-over: cannot offer a socket whose address has a tab or a line break")
            }
        }
    }
    conn.send_with_fds(&wire::offer_text(&lines), &fds)?;
    tracing::info!(
        pid = peer,
        sockets = lines.len(),
        "hand-over: offered the listening sockets to a new process"
    );
    conn.stream().set_read_timeout(Some(SERVING_TIMEOUT))?;
    let line = conn.line()?;
    let positions = wire::parse_drain(&line).ok_or(WireError::Unexpected(line))?;
    let taken = positions
        .iter()
        .map(|&i| entries.get(i).cloned())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| WireError::Unexpected("DRAIN names an entry never offered".into()))?;
    let (done, stopped) = oneshot::channel();
    let request = DrainRequest {
        successor: peer,
        taken,
        done,
    };
    if port.requests.blocking_send(request).is_err() || stopped.blocking_recv().is_err() {
        conn.send("REFUSED this process is already stopping")?;
        return Ok(false);
    }
    handed.store(true, Ordering::SeqCst);
    conn.send(&format!("DRAINING {}", std::process::id()))?;
    Ok(true)
}
