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
pub(in crate::sql) struct Phases {
    command: &'static str,
    watch: Stopwatch,
    /// The backend's private memory at each mark and its peak so far, in MB (see
    /// `private_memory_mb`): where a run within `customer_unify.batch_memory` grows.
    memory: Vec<(&'static str, u64, u64)>,
}

/// The backend's private resident memory now and at its peak in MB (VmRSS and VmHWM less the
/// shared buffers it touched, RssShmem), from /proc/self/status; `None` where there is none.
fn private_memory_mb() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line[field.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let shared = kb("RssShmem:")?;
    Some((
        kb("VmRSS:")?.saturating_sub(shared) / 1024,
        kb("VmHWM:")?.saturating_sub(shared) / 1024,
    ))
}

impl Phases {
    pub(in crate::sql) fn new(command: &'static str) -> Self {
        Self {
            command,
            watch: Stopwatch::default(),
            memory: Vec::new(),
        }
    }

    pub(in crate::sql) fn mark(&mut self, phase: &'static str) {
        self.watch.mark(phase);
        if let Some((now, peak)) = private_memory_mb() {
            self.memory.push((phase, now, peak));
        }
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        pgrx::debug1!("{}: {}", self.command, self.watch.summary());
        if !self.memory.is_empty() {
            let memory = self
                .memory
                .iter()
                .map(|(phase, now, peak)| format!("{phase} {now} MB (peak {peak} MB)"))
                .collect::<Vec<_>>()
                .join(", ");
            pgrx::debug1!("{}: private memory after {memory}", self.command);
        }
    }
}
