//! Locking policy for the few `std` mutexes on the request path.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking a poisoned lock as usable: every guarded state here is written in single
/// assignments, so a panic elsewhere cannot leave it half-updated, and one panic must not turn
/// into a panic on every later request.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
