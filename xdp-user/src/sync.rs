//! Locks that outlive a panic. A thread that panics while holding one of the controller's
//! mutexes leaves it poisoned; the state behind each of them (map handles, counters, the
//! sysctl ledger) is valid after any partial update, so the next holder takes it as it is
//! rather than letting one panic take the whole controller down.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
