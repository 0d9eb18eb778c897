//! The one poison-tolerant mutex lock.
//!
//! Every `std::sync::Mutex` here guards a small value that is replaced or
//! updated in one step (a map insert or remove, an `Option` set, a token
//! swapped), never left half-changed: a thread that panicked while holding
//! one cannot have broken it. So a poisoned lock is used as is instead of
//! spreading the panic to every later caller (the admin API, a reload, a
//! session ending).

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning (see the module docs).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
