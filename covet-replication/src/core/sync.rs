//! Locking that survives a panic elsewhere: the data behind our mutexes (counters, histories,
//! callback lists) stays usable after a panicking holder, so poisoning is ignored.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
