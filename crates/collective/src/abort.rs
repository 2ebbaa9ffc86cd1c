//! Aborting a communicator from another thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What aborting does to a backend (close sockets, `ncclCommAbort`).
type AbortAction = Box<dyn Fn() + Send + Sync>;

struct AbortState {
    aborted: AtomicBool,
    action: AbortAction,
}

/// Aborts a communicator from any thread: its pending call and every later
/// one fail fast with [`crate::Error::Aborted`]. Cheap to clone.
#[derive(Clone)]
pub struct Aborter {
    state: Arc<AbortState>,
}

impl Aborter {
    /// An aborter that runs `action` once, on the first [`Aborter::abort`].
    pub(crate) fn new(action: impl Fn() + Send + Sync + 'static) -> Self {
        Aborter {
            state: Arc::new(AbortState {
                aborted: AtomicBool::new(false),
                action: Box::new(action),
            }),
        }
    }

    /// Aborts the communicator. Idempotent.
    pub fn abort(&self) {
        if !self.state.aborted.swap(true, Ordering::SeqCst) {
            (self.state.action)();
        }
    }

    /// Whether [`Aborter::abort`] has been called.
    pub fn is_aborted(&self) -> bool {
        self.state.aborted.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for Aborter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aborter")
            .field("aborted", &self.is_aborted())
            .finish()
    }
}
