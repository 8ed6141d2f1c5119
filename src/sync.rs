//! Locks that outlive a panic. A thread that panics while holding a lock poisons it; every
//! lock here guards state that stays consistent between statements (counters, queues, the
//! first error), so the others go on with it rather than panic in turn, which in /init would
//! end the install without a word.

use std::sync::{Condvar, Mutex, MutexGuard, WaitTimeoutResult};
use std::time::Duration;

/// `mutex.lock_unpoisoned()`: the guard, poisoned or not.
pub trait Unpoisoned<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T> Unpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `condvar.wait_timeout_unpoisoned(guard, timeout)`: the wait, poisoned or not.
pub trait UnpoisonedWait {
    fn wait_timeout_unpoisoned<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult);
}

impl UnpoisonedWait for Condvar {
    fn wait_timeout_unpoisoned<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_timeout(guard, timeout)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
