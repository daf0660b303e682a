//! [`PerProcess`]: one value per process, re-made in a forked child.

use std::sync::{Arc, Mutex, PoisonError};

/// A value made lazily, once per process: a child made by `fork()` makes its own on first
/// use. For values that own threads (a thread pool, an async runtime), which do not
/// survive a fork: the child's copy of the parent's value is leaked there, never dropped,
/// since dropping it would wait for threads that do not exist in the child.
pub struct PerProcess<T> {
    slot: Mutex<Option<(u32, Arc<T>)>>,
}

impl<T> PerProcess<T> {
    /// Empty; the value is made by the first `get_or_try_init` of each process.
    pub const fn new() -> Self {
        PerProcess {
            slot: Mutex::new(None),
        }
    }

    /// This process's value, made with `init` if there is none yet.
    ///
    /// # Errors
    ///
    /// `init`'s error; the next call tries again.
    pub fn get_or_try_init<E>(&self, init: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E> {
        let pid = std::process::id();
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((owner, value)) = &*slot
            && *owner == pid
        {
            return Ok(value.clone());
        }
        if let Some((_, inherited)) = slot.take() {
            std::mem::forget(inherited);
        }
        let value = Arc::new(init()?);
        *slot = Some((pid, value.clone()));
        Ok(value)
    }
}

impl<T> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}
