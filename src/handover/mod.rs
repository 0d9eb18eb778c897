//! Hand-over of the listening sockets to a new process: `portcullis run
//! --take-over` started beside a running portcullis takes its listeners
//! and serves on them at once, and the old process stops accepting and
//! drains (docs/design.md, "Hand-over").
//!
//! The two meet on the control socket that both configs name
//! (`control_socket`): the running process serves it ([`control`]), 0600
//! and only to a peer of its own uid (`SO_PEERCRED`), since whoever gets
//! the descriptors can serve in its place. The new process ([`take`])
//! runs the whole check first, then asks for the sockets; each arrives
//! with its listener's name and address ([`wire`]), and the new process
//! takes those whose address its own config names, binds the others it
//! has, and, once it accepts, tells the old one to drain. Both accept on
//! the shared sockets for that moment, so the kernel's queue refuses no
//! connection in between. [`notify`] tells systemd which process is now
//! the service's main one.

pub mod control;
pub mod notify;
pub mod take;
pub mod wire;

use std::os::fd::OwnedFd;

use tokio::sync::{mpsc, oneshot};

pub use wire::{Entry, Kind};

/// What a running process offers a successor: a duplicate of each of its
/// listening sockets (listeners and the admin API), with what it is.
pub struct Offer {
    pub entries: Vec<(Entry, OwnedFd)>,
}

/// A successor is serving on the sockets it `taken`: stop accepting, say
/// so through `done`, and drain.
pub struct DrainRequest {
    /// The successor's process id, for the log.
    pub successor: Option<i32>,
    /// The offered entries it took (their sockets are its now: a Unix
    /// socket's file is left in place).
    pub taken: Vec<Entry>,
    pub done: oneshot::Sender<()>,
}

/// What the control socket serves from: the offer, and where to ask the
/// proxy to drain.
pub struct Port {
    pub offer: Offer,
    pub requests: mpsc::Sender<DrainRequest>,
}
