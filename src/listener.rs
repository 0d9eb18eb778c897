//! Listening sockets and the per-listener runtime state sessions read.
//!
//! Sockets are bound with socket2 before anything else starts, so a port
//! conflict is reported at startup, not on the first connection.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::backend::BackendRuntime;
use crate::config::{ListenAddr, ListenerConfig, TopologyRoute};
use crate::failover::FailoverSettings;
use crate::monitor::Topology;
use crate::reload::reloadable::TlsRuntime;
use crate::tls::ServerTls;

/// Backlog for listening sockets: enough to absorb a reconnect storm after
/// a failover while the accept loop catches up.
const BACKLOG: i32 = 1024;

/// What sessions of one listener read: its config, its backend, its live
/// TLS material (swapped atomically on reload; readers take one snapshot
/// per connection and never lock), and its connection slots.
pub struct ListenerRuntime {
    pub config: ListenerConfig,
    pub route: RouteRuntime,
    /// The topology (with `[monitor]`), for `failover_target = "primary"`.
    pub topology: Option<Arc<Topology>>,
    pub tls: Option<TlsRuntime>,
    pub slots: Arc<Semaphore>,
    /// Connections not yet past the door ([`crate::admission`]).
    pub door: Arc<crate::admission::Door>,
    /// Failover redirect settings, switchable at runtime; read once per
    /// connection at accept time.
    pub failover: ArcSwap<FailoverSettings>,
    /// Its open sessions (`GET /sessions`).
    pub sessions: crate::sessions::SessionTable,
}

/// Where a listener's connections go.
pub enum RouteRuntime {
    /// Always this backend.
    Fixed(Arc<BackendRuntime>),
    /// Decided per connection from the topology (`primary`, `replica`,
    /// `any`).
    Topology {
        kind: TopologyRoute,
        topology: Arc<Topology>,
    },
}

impl RouteRuntime {
    /// The fixed backend's name, or the route kind, for logs.
    pub fn name(&self) -> &str {
        match self {
            RouteRuntime::Fixed(b) => &b.config.name,
            RouteRuntime::Topology { kind, .. } => kind.name(),
        }
    }
}

impl ListenerRuntime {
    /// Sets up the listener's state around `tls`, its material as loaded
    /// from `config.tls` (by [`crate::preflight`]).
    pub fn new(
        config: ListenerConfig,
        route: RouteRuntime,
        topology: Option<Arc<Topology>>,
        tls: Option<ServerTls>,
    ) -> Self {
        ListenerRuntime {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            door: Arc::new(crate::admission::Door::new(
                config.max_unauthenticated,
                config.max_unauthenticated_per_source,
            )),
            failover: ArcSwap::from_pointee(config.failover.clone()),
            config,
            route,
            topology,
            tls: tls.map(TlsRuntime::new),
            sessions: Default::default(),
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self.config.address, ListenAddr::Unix(_))
    }
}

/// A bound socket of either family.
pub enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// An accepted connection.
pub enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

/// An accepted connection taken off the accepting runtime's I/O driver, to
/// be registered on a session worker's ([`crate::workers`]).
pub enum Detached {
    Tcp(std::net::TcpStream, SocketAddr),
    Unix(std::os::unix::net::UnixStream),
}

impl Accepted {
    pub fn detach(self) -> io::Result<Detached> {
        Ok(match self {
            Accepted::Tcp(s, peer) => Detached::Tcp(s.into_std()?, peer),
            Accepted::Unix(s) => Detached::Unix(s.into_std()?),
        })
    }
}

impl Detached {
    /// Registers the socket with the current runtime (the worker's). The
    /// socket is still non-blocking: `into_std` leaves it so.
    pub fn attach(self) -> io::Result<Accepted> {
        Ok(match self {
            Detached::Tcp(s, peer) => Accepted::Tcp(TcpStream::from_std(s)?, peer),
            Detached::Unix(s) => Accepted::Unix(UnixStream::from_std(s)?),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("listener {name:?}: cannot listen on {addr}: {source}")]
pub struct BindError {
    pub name: String,
    pub addr: String,
    pub source: io::Error,
}

impl Bound {
    /// Binds `cfg`'s address. TCP on IPv6 sets `IPV6_V6ONLY`, so `[::]` and
    /// `0.0.0.0` listeners can coexist and mean exactly what they say.
    pub fn bind(cfg: &ListenerConfig) -> Result<Bound, BindError> {
        let err = |source| BindError {
            name: cfg.name.clone(),
            addr: cfg.address.to_string(),
            source,
        };
        match &cfg.address {
            ListenAddr::Tcp(addr) => bind_tcp(*addr).map(Bound::Tcp).map_err(err),
            ListenAddr::Unix(path) => bind_unix(path).map(Bound::Unix).map_err(err),
        }
    }

    /// Serves `cfg` on `fd`, a listening socket a predecessor bound
    /// ([`crate::handover`]), after checking that it is one, bound to
    /// `cfg`'s address.
    pub fn adopt(cfg: &ListenerConfig, fd: std::os::fd::OwnedFd) -> Result<Bound, BindError> {
        let err = |source| BindError {
            name: cfg.name.clone(),
            addr: cfg.address.to_string(),
            source,
        };
        let socket = Socket::from(fd);
        let listening = socket.is_listener().map_err(err)?;
        let local = socket.local_addr().map_err(err)?;
        let matches = match &cfg.address {
            ListenAddr::Tcp(a) => local.as_socket() == Some(*a),
            ListenAddr::Unix(p) => local.as_pathname() == Some(p.as_path()),
        };
        if !listening || !matches {
            return Err(err(io::Error::other(
                "the socket handed over is not listening on this address",
            )));
        }
        socket.set_nonblocking(true).map_err(err)?;
        let fd = std::os::fd::OwnedFd::from(socket);
        match &cfg.address {
            ListenAddr::Tcp(_) => TcpListener::from_std(fd.into()).map(Bound::Tcp),
            ListenAddr::Unix(_) => UnixListener::from_std(fd.into()).map(Bound::Unix),
        }
        .map_err(err)
    }

    /// A duplicate of the listening socket, to hand over.
    pub fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        match self {
            Bound::Tcp(l) => l.as_fd().try_clone_to_owned(),
            Bound::Unix(l) => l.as_fd().try_clone_to_owned(),
        }
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Bound::Unix(l) => {
                let a = l.local_addr()?;
                Ok(ListenAddr::Unix(
                    a.as_pathname().map(Path::to_path_buf).unwrap_or_default(),
                ))
            }
        }
    }

    pub async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Bound::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                // Request/response traffic: never delay small writes.
                s.set_nodelay(true)?;
                // Notice dead peers on idle links (replication, pools)
                // without any application-level timeout.
                let ka = TcpKeepalive::new()
                    .with_time(std::time::Duration::from_secs(60))
                    .with_interval(std::time::Duration::from_secs(10));
                let _ = socket2::SockRef::from(&s).set_tcp_keepalive(&ka);
                Ok(Accepted::Tcp(s, peer))
            }
            Bound::Unix(l) => Ok(Accepted::Unix(l.accept().await?.0)),
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = listening_tcp(addr)?;
    s.set_nonblocking(true)?;
    TcpListener::from_std(s.into())
}

/// A TCP socket listening on `addr`, with the options every listener has.
fn listening_tcp(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s)
}

/// Whether `addr` could be bound now, as [`Bound::bind`] would bind it,
/// keeping nothing (for `portcullis check`). TCP is bound with the same
/// options and released (port 0 always can be). A Unix path that does not
/// exist is bound and removed again; a stale socket file (which `bind`
/// would remove) is left alone, and its directory is tried with a socket
/// of another name instead; a live socket is
/// [`io::ErrorKind::AddrInUse`]. The error is the one `bind` would get.
pub fn probe(addr: &ListenAddr) -> io::Result<()> {
    match addr {
        ListenAddr::Tcp(a) if a.port() == 0 => Ok(()),
        ListenAddr::Tcp(a) => listening_tcp(*a).map(drop),
        ListenAddr::Unix(path) => probe_unix(path),
    }
}

fn probe_unix(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    let try_bind = |p: &Path| {
        let l = UnixListener::bind(p)?;
        drop(l);
        std::fs::remove_file(p)
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => try_bind(path),
        Err(e) => Err(e),
        Ok(meta) if !meta.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket",
        )),
        Ok(_) if UnixStream::connect(path).is_ok() => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
        Ok(_) => {
            // Stale: `bind` removes it and binds, which needs the right to
            // write its directory.
            // A short name, so the path stays within the length limit.
            try_bind(&path.with_file_name(format!(".pc{}", std::process::id())))
        }
    }
}

/// Binds a Unix socket. A socket file left by a previous run would make
/// bind fail, so it is removed — but only if it is a socket nobody answers
/// on; anything else at the path is an error.
pub(crate) fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    remove_stale_socket(path)?;
    UnixListener::bind(path)
}

/// Removes a socket file nobody answers on (left by a previous run); an
/// error for anything else at `path`. Shared with the admin API.
pub(crate) fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_address_in_use_is_found_and_a_free_one_is_left_free() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = probe(&ListenAddr::Tcp(addr)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(held);
        probe(&ListenAddr::Tcp(addr)).unwrap();
        // Released: the real bind still gets it.
        std::net::TcpListener::bind(addr).unwrap();
        probe(&ListenAddr::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
    }

    #[test]
    fn unix_paths_are_tried_as_bind_would_and_left_as_they_were() {
        use std::os::unix::net::UnixListener as StdUnixListener;
        let dir = tempfile::tempdir().unwrap();
        let unix = |name: &str| ListenAddr::Unix(dir.path().join(name));

        let e = probe(&unix("missing/p.sock")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");

        probe(&unix("free.sock")).unwrap();
        assert!(
            !dir.path().join("free.sock").exists(),
            "nothing left behind"
        );

        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = probe(&unix("file")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");

        let live = StdUnixListener::bind(dir.path().join("live.sock")).unwrap();
        let e = probe(&unix("live.sock")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(live);
        // Now stale: bind would replace it; the probe leaves it alone and
        // leaves nothing else behind.
        probe(&unix("live.sock")).unwrap();
        assert!(dir.path().join("live.sock").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
