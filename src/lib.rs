//! portcullis: a MySQL/MariaDB-protocol TLS-terminating proxy.
//!
//! # Layout
//!
//! The modules follow one connection through the proxy:
//!
//! - [`config`] — the TOML file: parsing, validation (every problem with its
//!   line), typed settings.
//! - [`listener`] — binding TCP (IPv6 with `IPV6_V6ONLY`, IPv4) and Unix
//!   sockets; the per-listener runtime state sessions read.
//! - [`server`] — the accept loops, one task per session, shutdown (drain
//!   with a deadline, or now) driven by a value passed in.
//! - [`session`] — the connection phase of one client: backend greeting,
//!   SSLRequest, TLS, HandshakeResponse, authentication relay with the
//!   sequence-id shift.
//! - [`protocol`] — the wire format as pure functions over bytes (no I/O).
//! - [`packet_io`] — reading/writing whole packets on async streams during
//!   the connection phase.
//! - [`tls`] — certificates, keys, CA bundles, CRLs → rustls configs; peer
//!   identity; TLS failure reasons.
//! - [`backend`] — connecting to the database over TCP or a Unix socket.
//! - [`relay`] — the command phase: bytes copied both ways, unparsed.
//! - [`outcome`] — how a connection ended: stable labels, whose fault.

#![forbid(unsafe_code)]

pub mod backend;
pub mod config;
pub mod listener;
pub mod outcome;
pub mod packet_io;
pub mod protocol;
pub mod relay;
pub mod server;
pub mod session;
pub mod tls;

pub use config::Config;
pub use server::{Proxy, Shutdown};
