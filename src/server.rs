//! The running proxy: binds every listener, accepts, spawns one task per
//! session, and shuts down when told to through a value passed in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{AdminError, AdminServer};
use crate::admission::Ticket;
use crate::backend::{self, BackendRuntime};
use crate::config::Route;
use crate::config::{Config, ListenAddr};
use crate::handover::take::Taking;
use crate::handover::{DrainRequest, Entry, Kind, Offer, Port};
use crate::listener::{Accepted, BindError, Bound, ListenerRuntime, RouteRuntime};
use crate::metrics::ListenerMetrics;
use crate::monitor::Topology;
use crate::outcome::{self, Finished, SessionError};
use crate::preflight::Preflight;
use crate::proxy_header;
use crate::proxy_protocol::Inbound;
use crate::session::{self, SessionInfo};
use crate::state::{Lifecycle, ListenerState, ProxyState};
use crate::workers::Workers;

/// What the proxy should be doing; sent through a `watch` channel so a
/// signal handler and a test drive it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Serve.
    Run,
    /// Stop accepting; let sessions finish up to `shutdown_timeout`, then
    /// close what is left.
    Drain,
    /// Close everything now.
    Now,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("listener {listener:?} cannot route to {route:?} (no such backend, or no [monitor])")]
    Route { listener: String, route: String },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cannot start the session worker threads: {0}")]
    Workers(std::io::Error),
}

/// A proxy whose sockets are bound, ready to [`run`](Proxy::run).
pub struct Proxy {
    config: Config,
    listeners: Vec<(Arc<ListenerState>, Bound)>,
    state: Arc<ProxyState>,
    /// Stops (and removes its socket) when dropped, after `run` ends.
    admin: Option<AdminServer>,
    /// Where sessions run; stopped when the last reference goes.
    workers: Arc<Workers>,
    /// What a successor may take over, until [`handover_port`] hands it
    /// to the control socket.
    ///
    /// [`handover_port`]: Proxy::handover_port
    port: Option<Port>,
    /// A successor serves: stop accepting and drain.
    handovers: mpsc::Receiver<DrainRequest>,
}

impl Proxy {
    /// Binds every listener with the config and TLS material of
    /// `preflight` (nothing is loaded again) and starts the admin API (when
    /// configured; it answers 503 on `/health` until [`run`](Proxy::run)).
    /// Must be called inside a tokio runtime.
    pub fn bind(preflight: Preflight) -> Result<Proxy, StartError> {
        Proxy::bind_taking(preflight, None)
    }

    /// Like [`bind`](Proxy::bind), serving on the sockets of `taking` (a
    /// running predecessor's) whose address the config names, and
    /// binding the rest.
    pub fn bind_taking(
        preflight: Preflight,
        mut taking: Option<&mut Taking>,
    ) -> Result<Proxy, StartError> {
        let (config, material) = preflight.into_parts();
        let backends: Vec<_> = config
            .backends
            .iter()
            .zip(material.backends)
            .map(|(b, tls)| Arc::new(BackendRuntime::new(b.clone(), tls)))
            .collect();
        let topology = config
            .monitor
            .as_ref()
            .map(|_| Arc::new(Topology::new(&backends)));
        let mut listeners = Vec::new();
        for (l, tls) in config.listeners.iter().zip(material.listeners) {
            let unroutable = || StartError::Route {
                listener: l.name.clone(),
                route: l.route.to_string(),
            };
            let route = match &l.route {
                Route::Backend(name) => RouteRuntime::Fixed(
                    backends
                        .iter()
                        .find(|b| &b.config.name == name)
                        .ok_or_else(unroutable)?
                        .clone(),
                ),
                Route::Topology(kind) => RouteRuntime::Topology {
                    kind: *kind,
                    topology: topology.clone().ok_or_else(unroutable)?,
                },
            };
            let rt = ListenerRuntime::new(l.clone(), route, topology.clone(), tls);
            let inherited = taking
                .as_deref_mut()
                .and_then(|t| t.take(Kind::Listener, &l.address));
            let bound = match inherited {
                Some(fd) => {
                    tracing::info!(listener = %l.name, address = %l.address, "taken over");
                    Bound::adopt(l, fd)?
                }
                None => Bound::bind(l)?,
            };
            let address = bound.local_addr().unwrap_or_else(|_| l.address.clone());
            listeners.push((Arc::new(ListenerState::new(Arc::new(rt), address)), bound));
        }
        let state = Arc::new(ProxyState::new(
            listeners.iter().map(|(l, _)| l.clone()).collect(),
            backends,
            config.path.clone(),
            config.tls_reload.clone(),
            topology,
        ));
        let _ = state.started_with.set(config.clone());
        let admin = config
            .admin
            .as_ref()
            .map(|a| {
                let inherited = taking.and_then(|t| t.take(Kind::Admin, &a.address));
                AdminServer::start(a, state.clone(), inherited)
            })
            .transpose()?;
        let workers = Workers::start(config.workers).map_err(StartError::Workers)?;
        let (requests, handovers) = mpsc::channel(1);
        let port = Port {
            offer: offer(&listeners, admin.as_ref()),
            requests,
        };
        Ok(Proxy {
            config,
            listeners,
            state,
            admin,
            workers: Arc::new(workers),
            port: Some(port),
            handovers,
        })
    }

    /// What the control socket serves to a successor (once: the first
    /// call takes it).
    pub fn handover_port(&mut self) -> Option<Port> {
        self.port.take()
    }

    /// The admin API's address (port 0 resolved), when `[admin]` is set.
    pub fn admin_addr(&self) -> Option<ListenAddr> {
        self.admin.as_ref().map(|a| a.local_addr().clone())
    }

    /// What the admin API reports: lifecycle, listeners, counters.
    pub fn state(&self) -> Arc<ProxyState> {
        self.state.clone()
    }

    /// The addresses actually bound, by listener name (port 0 resolved).
    pub fn local_addrs(&self) -> Vec<(String, ListenAddr)> {
        self.listeners
            .iter()
            .map(|(l, _)| (l.name().to_string(), l.address.clone()))
            .collect()
    }

    /// Serves until `shutdown` leaves [`Shutdown::Run`].
    pub async fn run(mut self, mut shutdown: watch::Receiver<Shutdown>) {
        let sessions = TaskTracker::new();
        let workers = self.workers.clone();
        let stop_accepting = CancellationToken::new();
        let close_sessions = CancellationToken::new();
        let mut accept_loops = tokio::task::JoinSet::new();
        for (ls, bound) in std::mem::take(&mut self.listeners) {
            let rt = &ls.runtime;
            tracing::info!(listener = %rt.config.name, address = %ls.address,
                tls = rt.tls.is_some(), route = %rt.route.name(), "listening");
            let accepting = ls.accepting();
            let accept = accept_loop(
                ls.clone(),
                bound,
                workers.clone(),
                sessions.clone(),
                stop_accepting.clone(),
                close_sessions.clone(),
            );
            accept_loops.spawn(async move {
                accept.await;
                drop(accepting);
            });
        }
        let stop_watching = CancellationToken::new();
        let watcher = tokio::spawn(crate::reload::watch(
            self.state.clone(),
            stop_watching.clone(),
        ));
        let monitor = match (&self.state.topology, &self.config.monitor) {
            (Some(t), Some(m)) => Some(tokio::spawn(crate::monitor::run(
                t.clone(),
                m.clone(),
                stop_watching.clone(),
            ))),
            _ => None,
        };
        self.state.set_lifecycle(Lifecycle::Serving);
        // After this line /health answers 200: scripts may wait for it.
        tracing::info!(
            listeners = self.state.listeners.len(),
            workers = workers.len(),
            "serving"
        );
        // What each backend says (its greeting, for the clients' greetings)
        // and whether it trusts portcullis's own OS user: in the
        // background, so a backend that is down does not delay serving.
        let probed = self.state.backends.clone();
        let probe = tokio::spawn(async move {
            crate::probe::report(&probed).await;
        });
        crate::reload::expiry::warn_at_start(&self.state);

        let (mode, handover) = stop_requested(&mut shutdown, &mut self.handovers).await;
        if let Some(request) = &handover {
            // Before this process reports draining: the successor answers
            // on the admin address from now on, and never a 503 from here.
            let admin_taken = request.taken.iter().any(|e| e.kind == Kind::Admin);
            if let Some(admin) = self.admin.take() {
                match admin_taken {
                    true => admin.hand_over(),
                    // Stops, and removes its socket file.
                    false => drop(admin),
                }
            }
        }
        self.state.set_lifecycle(match mode {
            Shutdown::Drain => Lifecycle::Draining,
            _ => Lifecycle::Stopping,
        });
        stop_accepting.cancel();
        while accept_loops.join_next().await.is_some() {}
        let taken = match handover {
            Some(request) => self.handed_over(request),
            None => Vec::new(),
        };
        sessions.close();
        drain(mode, &sessions, &mut shutdown, self.config.shutdown_timeout).await;
        self.state.set_lifecycle(Lifecycle::Stopping);
        close_sessions.cancel();
        sessions.wait().await;
        stop_watching.cancel();
        probe.abort();
        let _ = watcher.await;
        if let Some(m) = monitor {
            let _ = m.await;
        }
        for (name, addr) in self.config.listeners.iter().map(|l| (&l.name, &l.address)) {
            // A socket a successor serves on keeps its file.
            if taken.contains(addr) {
                continue;
            }
            if let ListenAddr::Unix(p) = addr {
                if let Err(e) = std::fs::remove_file(p) {
                    tracing::debug!(listener = %name, error = %e, "could not remove socket file");
                }
            }
        }
        self.state.set_lifecycle(Lifecycle::Stopped);
        tracing::info!("stopped");
    }
}

impl Proxy {
    /// A successor serves on the sockets it took, and this process no
    /// longer accepts (its admin API stopped before): the successor is
    /// told. The addresses of the listeners taken.
    fn handed_over(&mut self, request: DrainRequest) -> Vec<ListenAddr> {
        // The duplicates kept for a hand-over, when no control socket took
        // them: closed, so that a listener the successor did not take is
        // closed now.
        self.port = None;
        let taken: Vec<ListenAddr> = request
            .taken
            .into_iter()
            .filter(|e| e.kind == Kind::Listener)
            .map(|e| e.address)
            .collect();
        tracing::info!(
            successor = request.successor,
            taken = taken.len(),
            "handed over: the new process serves; no longer accepting, draining"
        );
        let _ = request.done.send(());
        taken
    }
}

/// Waits, on [`Shutdown::Drain`], until the sessions end, `deadline`
/// passes or [`Shutdown::Now`] is asked for; at once otherwise.
async fn drain(
    mode: Shutdown,
    sessions: &TaskTracker,
    shutdown: &mut watch::Receiver<Shutdown>,
    deadline: Duration,
) {
    let active = sessions.len();
    if mode != Shutdown::Drain {
        tracing::info!(active, "shutting down now");
        return;
    }
    tracing::info!(
        active,
        deadline = ?deadline,
        "draining: no longer accepting; waiting for sessions to finish"
    );
    let now_requested = async {
        while *shutdown.borrow_and_update() != Shutdown::Now {
            if shutdown.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(deadline, sessions.wait()) => {}
        _ = now_requested => {}
    }
    if !sessions.is_empty() {
        tracing::warn!(
            remaining = sessions.len(),
            "shutdown: closing sessions that are still open"
        );
    }
}

/// Waits until `shutdown` leaves [`Shutdown::Run`] or a successor asks to
/// take over (which drains).
async fn stop_requested(
    shutdown: &mut watch::Receiver<Shutdown>,
    handovers: &mut mpsc::Receiver<DrainRequest>,
) -> (Shutdown, Option<DrainRequest>) {
    let mut handovers_open = true;
    loop {
        let m = *shutdown.borrow_and_update();
        if m != Shutdown::Run {
            return (m, None);
        }
        tokio::select! {
            changed = shutdown.changed() => if changed.is_err() {
                // Sender gone: nobody can ever ask us to stop by signal.
                if !handovers_open {
                    std::future::pending::<()>().await;
                }
                match handovers.recv().await {
                    Some(r) => return (Shutdown::Drain, Some(r)),
                    None => std::future::pending::<()>().await,
                }
            },
            r = handovers.recv(), if handovers_open => match r {
                Some(r) => return (Shutdown::Drain, Some(r)),
                None => handovers_open = false,
            },
        }
    }
}

/// A duplicate of every listening socket, with what it is.
fn offer(listeners: &[(Arc<ListenerState>, Bound)], admin: Option<&AdminServer>) -> Offer {
    let mut entries = Vec::new();
    for (ls, bound) in listeners {
        match bound.try_clone_fd() {
            Ok(fd) => entries.push((
                Entry {
                    kind: Kind::Listener,
                    name: ls.name().to_string(),
                    address: ls.address.clone(),
                },
                fd,
            )),
            Err(e) => {
                tracing::warn!(listener = %ls.name(), error = %e, "cannot keep the socket for a hand-over")
            }
        }
    }
    if let Some((a, fd)) = admin.and_then(|a| Some((a, a.try_clone_fd()?))) {
        let entry = Entry {
            kind: Kind::Admin,
            name: "-".into(),
            address: a.local_addr().clone(),
        };
        entries.push((entry, fd));
    }
    Offer { entries }
}

async fn accept_loop(
    ls: Arc<ListenerState>,
    bound: Bound,
    workers: Arc<Workers>,
    sessions: TaskTracker,
    stop: CancellationToken,
    close: CancellationToken,
) {
    let rt = ls.runtime.clone();
    loop {
        // While the workers are still ending max_unauthenticated or more
        // connections closed to make room (each holds a socket until its
        // task runs), new ones wait in the kernel's backlog.
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = async {
                rt.door.room().await;
                bound.accept().await
            } => a,
        };
        let accepted = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning,
                // and say why.
                tracing::warn!(listener = %rt.config.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ls.metrics.accepted();
        // Into the listener's waiting room now, in the order of accept,
        // before the task exists: the oldest is the one accepted first, and
        // a connection whose task has not started yet counts too.
        let peer = match &accepted {
            Accepted::Tcp(_, peer) => Some(peer.ip()),
            Accepted::Unix(_) => None,
        };
        let ticket = rt.door.admit(peer, &rt.config.name);
        let rt = rt.clone();
        let ls = ls.clone();
        let token = close.child_token();
        // The socket moves to the worker's own I/O driver: taken off this
        // runtime's here, registered on the worker's there. Connection slots
        // are taken by the session once the client has passed the door
        // (docs/design.md §3.9), not here.
        let detached = match accepted.detach() {
            Ok(d) => d,
            Err(e) => {
                not_handed_over(&rt, &ls.metrics, e);
                continue;
            }
        };
        workers.spawn(&sessions, async move {
            match detached.attach() {
                Ok(Accepted::Tcp(s, peer)) => {
                    let local = s.local_addr().ok();
                    run_session(s, Some(peer), local, &rt, &ls.metrics, ticket, &token).await
                }
                Ok(Accepted::Unix(s)) => {
                    run_session(s, None, None, &rt, &ls.metrics, ticket, &token).await
                }
                Err(e) => not_handed_over(&rt, &ls.metrics, e),
            }
        });
    }
}

async fn run_session<S: session::ClientIo>(
    mut stream: S,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    rt: &ListenerRuntime,
    metrics: &ListenerMetrics,
    mut ticket: Ticket,
    token: &CancellationToken,
) {
    let started = Instant::now();
    let _active = metrics.session_started();
    let mut info = SessionInfo {
        id: session::connection_id(),
        origin: backend::Origin {
            client: peer,
            local,
        },
        ..SessionInfo::default()
    };
    let mut peer = peer;
    let trusted = peer.filter(|p| proxy_header::trusted(&rt.config.trusted_proxies, p.ip()));
    if let Some(proxy) = trusted {
        // Behind a load balancer: its header says who the client is, for
        // the door's per-source limit, the logs and the backend.
        let limit = rt.config.tls_handshake_timeout;
        match proxy_header::take(&mut stream, proxy, limit, token, &ticket.signal()).await {
            Ok(Inbound::Proxied {
                source,
                destination,
            }) => {
                ticket.move_to(source.ip(), &rt.config.name);
                info.origin = backend::Origin {
                    client: Some(source),
                    local: Some(destination),
                };
                peer = Some(source);
            }
            Ok(Inbound::Local) => {}
            Err(e) => {
                info.proxied_by = Some(proxy);
                finish(rt, metrics, peer, &info, &Err(e), started.elapsed());
                return;
            }
        }
        info.proxied_by = Some(proxy);
    }
    let entry = rt
        .sessions
        .register(info.id, peer, info.proxied_by, token.clone());
    let result = session::serve(
        stream,
        rt,
        &mut info,
        ticket,
        token,
        metrics.bytes(),
        &entry.record,
    )
    .await;
    // Its close token was cancelled by an operator, not by the drain.
    let result = match result {
        Ok(Finished::Closed) if entry.record.was_killed() => Ok(Finished::KilledByAdmin),
        Err(SessionError::Shutdown) if entry.record.was_killed() => {
            Err(SessionError::KilledByAdmin)
        }
        r => r,
    };
    drop(entry);
    finish(rt, metrics, peer, &info, &result, started.elapsed());
}

/// A connection that could not be moved to a session worker (taking the
/// socket off this thread's event loop or registering it with the
/// worker's failed): closed without an answer, logged and counted.
fn not_handed_over(rt: &ListenerRuntime, metrics: &ListenerMetrics, e: std::io::Error) {
    tracing::warn!(listener = %rt.config.name, error = %e, "cannot hand the connection to a worker");
    let result = Err(SessionError::Worker(e));
    finish_quietly(rt, metrics, &result);
}

/// Reports a finished connection (log and counters) per the outcome table.
fn finish(
    rt: &ListenerRuntime,
    metrics: &ListenerMetrics,
    peer: Option<SocketAddr>,
    info: &SessionInfo,
    result: &Result<Finished, SessionError>,
    duration: Duration,
) {
    outcome::finish(
        &rt.config.name,
        rt.route.name(),
        metrics,
        peer,
        info,
        result,
        duration,
    );
}

/// Counts a connection that was closed before it had a session (its own
/// log line was written where it failed).
fn finish_quietly(
    rt: &ListenerRuntime,
    metrics: &ListenerMetrics,
    result: &Result<Finished, SessionError>,
) {
    outcome::record(metrics, result, rt.route.name(), None);
}
