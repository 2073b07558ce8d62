//! How a long command runs: the threads it may use and the seconds of its phases.

use pgrx::prelude::*;

use crate::stopwatch::Stopwatch;

/// Threads this backend may compare and score on (see `crate::parallel::threads_for`).
pub(super) fn threads() -> usize {
    crate::parallel::threads_for(unsafe { pg_sys::max_parallel_workers_per_gather })
}

/// Those threads, with the backend's thread checking for a cancel (statement_timeout,
/// pg_cancel_backend) between its blocks and the others stopping when one is pending (the hook
/// of `crate::interrupt`, installed by `_PG_init`).
pub(super) fn workers() -> crate::parallel::Workers {
    crate::parallel::Workers::from(threads())
}

/// Seconds per phase of a long command, logged at DEBUG1 when it ends
/// (`SET client_min_messages = debug1` shows where a slow run spends its time).
pub(super) struct Phases {
    command: &'static str,
    watch: Stopwatch,
}

impl Phases {
    pub(super) fn new(command: &'static str) -> Self {
        Self {
            command,
            watch: Stopwatch::default(),
        }
    }

    pub(super) fn mark(&mut self, phase: &'static str) {
        self.watch.mark(phase);
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        pgrx::debug1!("{}: {}", self.command, self.watch.summary());
    }
}
