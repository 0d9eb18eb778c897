//! portcullis: a MySQL/MariaDB-protocol TLS-terminating proxy.
//!
//! # Layout
//!
//! The modules follow one connection through the proxy:
//!
//! - [`config`] — the TOML file as data: parsing, validation (every problem
//!   with its line, warnings returned), typed settings. Imports nothing of
//!   the runtime.
//! - [`preflight`] — the check before serving, shared by `check` and `run`:
//!   the config validated, every TLS material loaded once, warnings logged
//!   (once per file and state); for `check`, every listen address tried.
//! - [`listener`] — binding TCP (IPv6 with `IPV6_V6ONLY`, IPv4) and Unix
//!   sockets; the per-listener runtime state sessions read.
//! - [`server`] — the accept loops, one task per session, shutdown (drain
//!   with a deadline, or now) driven by a value passed in.
//! - [`workers`] — the session worker threads, each with its own event
//!   loop, that accepted connections are handed to.
//! - [`session`] — one client from accept to close: the connection phase
//!   (the client's side — SSLRequest, TLS, HandshakeResponse, refusals — in
//!   `session::door`; the backend's — greeting, outbound TLS,
//!   authentication relay with the sequence-id shift — in `session::auth`;
//!   the route in `session::route`; the failover redirect's two forms in
//!   `session::redirect`), then the relay.
//! - [`failover`] — the instant-failover redirect: who is redirected, in
//!   which form (the ERR packet, or MariaDB's `redirect_url` tracker in the
//!   OK that ends authentication), and the ERR packet that sends a client
//!   to another server (the settings are [`config::failover`]).
//! - [`protocol`] — the wire format as pure functions over bytes (no I/O).
//! - [`packet_io`] — reading/writing whole packets on async streams during
//!   the connection phase.
//! - [`tls`] — certificates, keys, CA bundles, CRLs → rustls configs; peer
//!   identity; TLS failure reasons.
//! - [`reload`] — reloading at run time: TLS material per listener and
//!   backend (poll, SIGHUP, admin), expiry warnings, re-checking live
//!   sessions; `reload::reloadable` is the material in service that
//!   listeners and backends hold.
//! - [`live`] — the live sessions that authenticated with a client
//!   certificate, so that revocation reaches them.
//! - [`sessions`] — every open session per listener (id, client, who,
//!   bytes each way), for `GET /sessions` and killing one.
//! - [`perm`] — the mode checks for secret files (keys, admin token,
//!   monitor password) that other local users can read, and for trust
//!   files (CA bundles, CRLs, the config) they can write; the warning about
//!   running as root.
//! - [`proxy_protocol`] — the PROXY v2 header that carries the client's
//!   address to the backend, and parsing the v1 and v2 headers a trusted
//!   load balancer sends (pure); [`proxy_header`] reads those off the
//!   socket before the greeting (`accept_proxy_protocol`).
//! - [`backend`] — connecting to the database over TCP or a Unix socket.
//! - [`monitor`] — the topology: which backend is the primary, for the
//!   `primary`/`replica`/`any` routes.
//! - [`prefixed`] — a stream that replays bytes read ahead at the end of
//!   the connection phase before its own, so no byte is lost at the switch.
//! - [`relay`] — the command phase: bytes copied both ways, unparsed.
//! - [`outcome`] — how a connection ended, the one table: stable label,
//!   whose fault and log level, the one log event, what it counts, and the
//!   ERR packet a waiting client gets.
//! - [`metrics`] — what the proxy counts about itself: per-listener
//!   counters and gauges, atomics only.
//! - [`state`] — the running proxy as admin, reloads and metrics read it:
//!   lifecycle, listeners, backends, topology.
//! - [`exposition`] — the Prometheus text of the counters and the state.
//! - [`handover`] — hand-over of the listening sockets to a new process
//!   (`run --take-over`): the control socket, `SCM_RIGHTS`, the drain of
//!   the old process, systemd's `MAINPID=`.
//! - [`admin`] — the admin HTTP API (health, status, metrics, reload) on
//!   its own thread and runtime, apart from the data path.
//!
//! Helpers: [`sync`] (the one poison-tolerant mutex lock) and [`time`]
//! (Unix seconds and their RFC 3339 form, for what the proxy reports).
//!
//! Imports flow one way: the connection path ([`listener`], [`session`],
//! [`relay`], [`backend`], [`outcome`]) writes [`metrics`] counters and
//! imports neither [`state`] nor [`admin`]; [`metrics`] imports nothing of
//! the runtime; [`state`] holds the runtime parts; [`reload`],
//! [`exposition`] and [`admin`] read it; [`server`] builds it and starts
//! [`admin`].

#![forbid(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod backend;
pub mod config;
pub mod exposition;
pub mod failover;
pub mod handover;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod monitor;
pub mod os_user;
pub mod outcome;
pub mod packet_io;
pub mod perm;
pub mod prefixed;
pub mod preflight;
pub mod probe;
pub mod protocol;
pub mod proxy_header;
pub mod proxy_protocol;
pub mod relay;
pub mod reload;
pub mod server;
pub mod session;
pub mod sessions;
pub mod state;
pub mod sync;
pub mod time;
pub mod tls;
pub mod workers;

pub use config::Config;
pub use server::{Proxy, Shutdown};
