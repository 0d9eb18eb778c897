//! The admin HTTP API: health for keepalived, status, Prometheus metrics,
//! reload, runtime failover and primary pinning.
//!
//! It runs on its own single-threaded tokio runtime in a dedicated OS
//! thread, so a data path that saturates the main runtime cannot starve it,
//! and it reads the proxy only through [`ProxyState`] (atomics and
//! `ArcSwap` loads): nothing here can make a session wait.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 `ok`, or 503 `{"error": reasons}` |
//! | `GET /health/primary[?backend=NAME]` | 200 while that backend (default: the one this proxy fronts) is the primary, else 503 |
//! | `GET /health/listener/NAME` | 200 while the listener accepts and has a backend for new connections, else 503 |
//! | `GET /status` | 200 JSON [`status::Status`] |
//! | `GET /metrics` | 200 OpenMetrics text |
//! | `GET /topology` | 200 JSON [`crate::monitor::TopologyStatus`] (404 without `[monitor]`) |
//! | `POST /primary`, `DELETE /primary` | pin the primary / return to the monitor |
//! | `GET`/`PUT /listeners/NAME/failover` | read / switch a listener's redirect |
//! | `GET /sessions[?listener=&user=&subject=]` | 200 JSON [`sessions::SessionList`]: every open session |
//! | `DELETE /sessions/ID` | close that session (outcome `killed_by_admin`): 200 with what it was, 404 if none |
//! | `POST /reload` | re-read the config and TLS material (as SIGHUP): 200 with a report, 422 if anything was not applied |
//!
//! Who may do what (`access`): the `/health` paths never need a token;
//! with `token_file` everything else needs `Authorization: Bearer <token>`
//! (401); without one, a Unix socket serves everything (its file mode is
//! the control) and TCP serves `GET` only (403 for changes). On TCP, `Host`
//! must be an IP literal, `localhost` or in `allowed_hosts` (421). All of
//! that is decided from the request head; a body is read only afterwards
//! (`api`). Slow clients: headers within [`HEADER_TIMEOUT`], a body
//! within `api::BODY_TIMEOUT`, and when all connection slots are taken
//! the oldest connection without credentials makes room (`slots`).
//! Unknown paths get 404, known paths with the wrong method 405; every
//! error body is `{"error": "..."}`.

mod access;
mod api;
pub mod client;
pub mod sessions;
mod slots;
pub mod status;

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::config::{AdminConfig, ListenAddr, TokenError};
use crate::state::ProxyState;
use access::Access;
use api::{Ctx, Peer};
use slots::Slots;

pub use access::MutationPolicy;
pub use client::AdminTarget;
pub use sessions::SessionList;
pub use status::{AdminStatus, Status};

/// Concurrent admin connections. Scrapers, keepalived and an operator need
/// a handful; the cap keeps a misbehaving client from piling up tasks (and
/// when it is reached, the oldest connection without credentials is closed
/// to make room: see `slots`).
const MAX_CONNECTIONS: usize = 64;
/// A client must send a request's headers within this time from the
/// moment the server waits for them (a new connection, or an idle
/// keep-alive one). Every honest client sends its request in one write;
/// a few seconds also covers a slow SSH tunnel, and bounds how long a
/// silent or trickling connection holds a slot.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on one admin connection, keep-alive included.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Read buffer of one connection, and so the largest request head: admin
/// requests have a handful of short headers (hyper's smallest allowed).
const MAX_HEAD: usize = 8 * 1024;

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("admin: cannot listen on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("admin: cannot set mode {mode} and group {group} on the socket {path}: {source}")]
    SocketAccess {
        path: PathBuf,
        mode: &'static str,
        group: String,
        source: io::Error,
    },
    #[error("admin: cannot start its runtime: {0}")]
    Runtime(io::Error),
}

/// The running admin endpoint. Dropping it stops the server thread and
/// removes its Unix socket file.
pub struct AdminServer {
    addr: ListenAddr,
    /// A duplicate of the listening socket, to hand over.
    fd: Option<std::os::fd::OwnedFd>,
    /// Whether dropping it removes the Unix socket file (not once a
    /// successor serves on it).
    remove_file: bool,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

enum AdminListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl AdminServer {
    /// Reads the token, binds the address (or serves on `inherited`, the
    /// listening socket a predecessor handed over) and starts the server
    /// thread. Bind errors surface here, before the proxy serves.
    pub fn start(
        cfg: &AdminConfig,
        state: Arc<ProxyState>,
        inherited: Option<std::os::fd::OwnedFd>,
    ) -> Result<AdminServer, AdminError> {
        let token = cfg
            .token_file
            .as_deref()
            .map(crate::config::read_admin_token)
            .transpose()?;
        let bind_err = |source| AdminError::Bind {
            addr: cfg.address.to_string(),
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AdminError::Runtime)?;
        // Sockets register with the admin runtime's reactor, not the
        // caller's.
        let bound = {
            let _enter = runtime.enter();
            match (&cfg.address, inherited) {
                (_, Some(fd)) => adopt(cfg, fd),
                (ListenAddr::Tcp(a), None) => bind_tcp(*a)
                    .and_then(|l| Ok((ListenAddr::Tcp(l.local_addr()?), l)))
                    .map(|(local, l)| (AdminListener::Tcp(l), local))
                    .map_err(bind_err),
                (ListenAddr::Unix(p), None) => {
                    bind_unix(p, cfg).map(|l| (AdminListener::Unix(l), ListenAddr::Unix(p.clone())))
                }
            }
        };
        let (listener, addr) = match bound {
            Ok(b) => b,
            Err(e) => {
                // Called from async code: dropping a runtime there panics.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let access = match (token, &addr) {
            (Some(t), _) => Access::Token(t),
            (None, ListenAddr::Unix(_)) => Access::Socket,
            (None, ListenAddr::Tcp(_)) => Access::ReadOnly,
        };
        let admin = AdminStatus {
            address: addr.to_string(),
            mutation: access.policy(),
            allowed_hosts: cfg.allowed_hosts.clone(),
            health_primary_backend: state
                .topology
                .as_ref()
                .and_then(|_| state.local_backend().ok()),
        };
        if admin.mutation.enabled {
            tracing::info!(address = %addr, mutation = "enabled", "admin API listening; changes allowed: {}", admin.mutation.reason);
        } else {
            tracing::warn!(address = %addr, mutation = "disabled", "admin API listening, read-only: {}", admin.mutation.reason);
        }
        let ctx = Arc::new(Ctx {
            state,
            access,
            allowed_hosts: cfg.allowed_hosts.clone(),
            admin,
        });
        let fd = listener.try_clone_fd().ok();
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("portcullis-admin".into())
            .spawn(move || runtime.block_on(serve(listener, ctx, stopped)))
            .map_err(AdminError::Runtime)?;
        Ok(AdminServer {
            addr,
            fd,
            remove_file: true,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.addr
    }

    /// A duplicate of its listening socket, to hand over.
    pub fn try_clone_fd(&self) -> Option<std::os::fd::OwnedFd> {
        self.fd.as_ref()?.try_clone().ok()
    }

    /// Stops serving (dropping it does), leaving the socket file to the
    /// successor that serves on the socket now.
    pub fn hand_over(mut self) {
        self.remove_file = false;
        self.fd = None;
    }
}

/// Serves on a listening socket handed over by a predecessor: checked to
/// be one, on the configured address; a Unix socket's file gets the
/// configured mode and group (they may have changed).
fn adopt(
    cfg: &AdminConfig,
    fd: std::os::fd::OwnedFd,
) -> Result<(AdminListener, ListenAddr), AdminError> {
    let bind_err = |source| AdminError::Bind {
        addr: cfg.address.to_string(),
        source,
    };
    let socket = socket2::Socket::from(fd);
    let local = socket.local_addr().map_err(bind_err)?;
    // A Unix socket's name is the temporary path it was bound at before
    // being renamed into place (`bind_unix`): only its family is checked.
    let ok = socket.is_listener().map_err(bind_err)?
        && match &cfg.address {
            ListenAddr::Tcp(a) => local.as_socket() == Some(*a),
            ListenAddr::Unix(_) => local.is_unix(),
        };
    if !ok {
        return Err(bind_err(io::Error::other(
            "the socket handed over is not listening on this address",
        )));
    }
    socket.set_nonblocking(true).map_err(bind_err)?;
    let fd = std::os::fd::OwnedFd::from(socket);
    match &cfg.address {
        ListenAddr::Tcp(a) => {
            let l = tokio::net::TcpListener::from_std(fd.into()).map_err(bind_err)?;
            Ok((AdminListener::Tcp(l), ListenAddr::Tcp(*a)))
        }
        ListenAddr::Unix(p) => {
            set_socket_access(p, p, cfg)?;
            let l = tokio::net::UnixListener::from_std(fd.into()).map_err(bind_err)?;
            Ok((AdminListener::Unix(l), ListenAddr::Unix(p.clone())))
        }
    }
}

impl AdminListener {
    fn try_clone_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        match self {
            AdminListener::Tcp(l) => l.as_fd().try_clone_to_owned(),
            AdminListener::Unix(l) => l.as_fd().try_clone_to_owned(),
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            // The loop exits at once on the signal; open connections are
            // dropped with the runtime.
            let _ = t.join();
        }
        if let (ListenAddr::Unix(p), true) = (&self.addr, self.remove_file) {
            if let Err(e) = std::fs::remove_file(p) {
                tracing::debug!(path = %p.display(), error = %e, "could not remove admin socket file");
            }
        }
    }
}

/// Pending connections the kernel queues for the admin API: far more than
/// its slots, so a burst of connections (an attack, or many scrapers at
/// once) does not make the kernel drop a probe's SYN, which the client
/// would only retry a second later.
const BACKLOG: i32 = 1024;

fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    tokio::net::TcpListener::from_std(s.into())
}

/// Binds the admin socket with the configured mode (`0600` unless
/// `socket_mode = "0660"`) and group: whoever can open it may change the
/// proxy. It is bound inside a fresh directory only the owner can enter,
/// given its mode and group there, and then renamed into place, so nobody
/// can connect between bind and chmod (a connection made in that window
/// would wait in the backlog and be served later). A stale socket file
/// nobody answers on is replaced; anything else at the path is an error.
fn bind_unix(path: &Path, cfg: &AdminConfig) -> Result<tokio::net::UnixListener, AdminError> {
    use std::os::unix::fs::DirBuilderExt;
    let bind_err = |source| AdminError::Bind {
        addr: format!("unix:{}", path.display()),
        source,
    };
    crate::listener::remove_stale_socket(path).map_err(bind_err)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Short, so the temporary path stays within the 107 bytes of a socket
    // address whenever the final one does.
    let private = parent.join(format!(".a{:06x}", rand::random::<u32>() & 0xff_ffff));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(bind_err)?;
    let tmp = private.join("s");
    let result = (|| {
        let l = tokio::net::UnixListener::bind(&tmp).map_err(bind_err)?;
        set_socket_access(&tmp, path, cfg)?;
        std::fs::rename(&tmp, path).map_err(bind_err)?;
        Ok(l)
    })();
    if let Err(e) = std::fs::remove_dir_all(&private) {
        tracing::debug!(path = %private.display(), error = %e, "could not remove the admin socket's temporary directory");
    }
    result
}

/// Gives the socket file at `file` the configured group and mode
/// (`socket_group`, `socket_mode`); errors name `path`, where it is served.
fn set_socket_access(file: &Path, path: &Path, cfg: &AdminConfig) -> Result<(), AdminError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = cfg.socket.mode;
    let access_err = |source| AdminError::SocketAccess {
        path: path.to_path_buf(),
        mode: mode.as_str(),
        group: cfg
            .socket
            .group
            .as_ref()
            .map_or_else(|| "(unchanged)".into(), |g| g.name.clone()),
        source,
    };
    if let Some(g) = &cfg.socket.group {
        std::os::unix::fs::chown(file, None, Some(g.gid)).map_err(access_err)?;
    }
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode.bits())).map_err(access_err)
}

async fn serve(listener: AdminListener, ctx: Arc<Ctx>, mut stop: oneshot::Receiver<()>) {
    let slots = Slots::new(MAX_CONNECTIONS);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(conn) => {
                let Some(slot) = slots.admit() else {
                    // Every slot is held by a client with credentials.
                    continue;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    match conn {
                        Conn::Tcp(s) => serve_connection(s, ctx, Peer { unix: false, slot }).await,
                        Conn::Unix(s) => serve_connection(s, ctx, Peer { unix: true, slot }).await,
                    }
                });
                // Let the new connection read its request before the next
                // accept: a burst of connections must not evict it before
                // it had a chance to show what it is.
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin: accept failed");
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &AdminListener) -> io::Result<Conn> {
    match l {
        AdminListener::Tcp(l) => Ok(Conn::Tcp(l.accept().await?.0)),
        AdminListener::Unix(l) => Ok(Conn::Unix(l.accept().await?.0)),
    }
}

async fn serve_connection<S>(stream: S, ctx: Arc<Ctx>, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let evicted = peer.slot.evicted().clone();
    let peer = Arc::new(peer);
    let service = hyper::service::service_fn(move |req| {
        let (ctx, peer) = (ctx.clone(), peer.clone());
        async move { Ok::<_, Infallible>(api::handle(req, &ctx, &peer).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        r = tokio::time::timeout(CONNECTION_LIFETIME, conn) => match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "admin: connection error"),
            Err(_) => tracing::debug!("admin: connection closed after {CONNECTION_LIFETIME:?}"),
        },
        _ = evicted.cancelled() => {
            tracing::debug!("admin: connection closed to make room for a new one");
        }
    }
}
