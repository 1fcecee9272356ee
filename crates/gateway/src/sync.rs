//! Locking a `std::sync::Mutex` the one way this crate does: a poisoned lock (a
//! thread panicked while holding it) is taken over as is, never a second panic.
//!
//! Every mutex here guards bookkeeping that stays consistent between statements
//! (maps, counters, token buckets), so the data a panicking holder left is still
//! usable; refusing it would turn one failed task into a node that refuses everyone.
//! Never hold the guard across an `.await`.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the guard of a poisoned lock.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
