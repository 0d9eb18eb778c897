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
//!   the config validated, every TLS material loaded once, warnings logged.
//! - [`listener`] — binding TCP (IPv6 with `IPV6_V6ONLY`, IPv4) and Unix
//!   sockets; the per-listener runtime state sessions read.
//! - [`server`] — the accept loops, one task per session, shutdown (drain
//!   with a deadline, or now) driven by a value passed in.
//! - [`session`] — the connection phase of one client: backend greeting,
//!   SSLRequest, TLS, HandshakeResponse, authentication relay with the
//!   sequence-id shift.
//! - [`failover`] — the instant-failover redirect: who is redirected, and
//!   the ERR packet that sends a client to another server (the settings
//!   are [`config::failover`]).
//! - [`protocol`] — the wire format as pure functions over bytes (no I/O).
//! - [`packet_io`] — reading/writing whole packets on async streams during
//!   the connection phase.
//! - [`tls`] — certificates, keys, CA bundles, CRLs → rustls configs; peer
//!   identity; TLS failure reasons.
//! - [`reload`] — reloading at run time: TLS material per listener
//!   (poll, SIGHUP, admin), expiry warnings, re-checking live sessions.
//! - [`live`] — the live sessions that authenticated with a client
//!   certificate, so that revocation reaches them.
//! - [`perm`] — the mode check for secret files (keys, admin token) that
//!   other local users can read; the warning about running as root.
//! - [`proxy_protocol`] — the PROXY v2 header that carries the client's
//!   address to the backend.
//! - [`backend`] — connecting to the database over TCP or a Unix socket.
//! - [`relay`] — the command phase: bytes copied both ways, unparsed.
//! - [`outcome`] — how a connection ended: stable labels, whose fault.
//! - [`metrics`] — what the proxy counts and reports about itself:
//!   lifecycle, per-listener counters (atomics only), Prometheus encoding.
//! - [`admin`] — the admin HTTP API (health, status, metrics, reload) on
//!   its own thread and runtime, apart from the data path.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod failover;
pub mod listener;
pub mod live;
pub mod metrics;
pub mod monitor;
pub mod outcome;
pub mod packet_io;
pub mod perm;
pub mod preflight;
pub mod protocol;
pub mod proxy_protocol;
pub mod relay;
pub mod reload;
pub mod server;
pub mod session;
pub mod tls;
pub mod workers;

pub use config::Config;
pub use server::{Proxy, Shutdown};
