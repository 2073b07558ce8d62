//! Cancellation of long loops in the pure modules (fits, training, blocking, scoring,
//! clustering) without tying them to PostgreSQL: they call [`check`] now and then, and the SQL
//! layer installs what that does. Without a hook (unit tests, tools) nothing happens.
//!
//! PostgreSQL is single-threaded: only the thread that runs the statement may act on a cancel
//! (`check_for_interrupts!` raises the error). The threads of `crate::parallel` only read
//! whether a cancel is pending and stop; the statement's thread raises the error once they are
//! joined.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, Ordering};

/// What the SQL layer installs.
#[derive(Clone, Copy, Debug)]
pub struct Hook {
    /// On the statement's thread: raises (unwinds) when the statement was cancelled or timed out.
    pub check: fn(),
    /// On any thread: whether a cancel is pending, without acting on it.
    pub pending: fn() -> bool,
}

/// The panic payload of a loop stopped on a thread other than the statement's; the statement's
/// thread then raises the real error (see `crate::parallel`).
#[derive(Debug)]
pub struct Interrupted;

static CHECK: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static PENDING: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// Set on the thread that installed the hook: the backend's own thread.
    static STATEMENT_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Installs `hook` for the process; the calling thread is the one that may raise.
pub fn install(hook: Hook) {
    CHECK.store(hook.check as *mut (), Ordering::Release);
    PENDING.store(hook.pending as *mut (), Ordering::Release);
    STATEMENT_THREAD.with(|t| t.set(true));
}

fn installed() -> Option<Hook> {
    let (check, pending) = (
        CHECK.load(Ordering::Acquire),
        PENDING.load(Ordering::Acquire),
    );
    if check.is_null() || pending.is_null() {
        return None;
    }
    // SAFETY: both were stored by `install` from function pointers of exactly these types.
    unsafe {
        Some(Hook {
            check: std::mem::transmute::<*mut (), fn()>(check),
            pending: std::mem::transmute::<*mut (), fn() -> bool>(pending),
        })
    }
}

/// Stops the caller when its statement was cancelled: on the statement's thread the installed
/// check raises PostgreSQL's error; on any other thread a pending cancel unwinds with
/// [`Interrupted`]. Cheap enough for every iteration of a loop whose iterations take
/// microseconds or more; tighter loops call it every few thousand items.
pub fn check() {
    let Some(hook) = installed() else { return };
    if STATEMENT_THREAD.with(Cell::get) {
        (hook.check)();
    } else if (hook.pending)() {
        std::panic::panic_any(Interrupted);
    }
}

/// Whether a cancel is pending (never acts on it; safe on any thread).
pub fn pending() -> bool {
    installed().is_some_and(|hook| (hook.pending)())
}

/// Calls [`check`] on every `every`-th value of a counter (`every` a power of two), for loops
/// too tight to check on each item.
#[inline]
pub fn check_every(i: usize, every: usize) {
    debug_assert!(every.is_power_of_two());
    if i & (every - 1) == 0 {
        check();
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A hook for unit tests: it acts only on threads that armed it, so tests running beside
    //! each other in one process are not cancelled by one another.

    use super::*;

    thread_local! {
        static ARMED_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    }

    fn check() {
        ARMED_AFTER.with(|a| match a.get() {
            Some(0) => std::panic::panic_any(Interrupted),
            Some(n) => a.set(Some(n - 1)),
            None => {}
        });
    }

    fn pending() -> bool {
        false
    }

    /// Cancels the calling thread's work at its `after`-th check from now (0: the next).
    pub fn cancel_after(after: usize) {
        install(Hook { check, pending });
        ARMED_AFTER.with(|a| a.set(Some(after)));
    }

    pub fn disarm() {
        ARMED_AFTER.with(|a| a.set(None));
    }

    /// How many times `f` checks (it is not cancelled).
    pub fn checks_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
        cancel_after(usize::MAX);
        let r = f();
        let left = ARMED_AFTER.with(Cell::get).expect("armed");
        disarm();
        (r, usize::MAX - left)
    }

    /// Runs `f` with a cancel at its `after`-th check; true when it stopped with
    /// [`Interrupted`] (not with another panic, which is re-raised).
    pub fn cancelled<R>(after: usize, f: impl FnOnce() -> R) -> bool {
        cancel_after(after);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        disarm();
        match result {
            Ok(_) => false,
            Err(payload) if payload.is::<Interrupted>() => true,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::cancelled;
    use super::*;

    #[test]
    fn without_a_hook_or_unarmed_nothing_stops() {
        assert!(!cancelled(usize::MAX, || (0..1000).for_each(|_| check())));
    }

    #[test]
    fn an_armed_check_unwinds_with_interrupted() {
        let seen = Cell::new(0);
        assert!(cancelled(3, || loop {
            check();
            seen.set(seen.get() + 1);
        }));
        assert_eq!(seen.get(), 3);
        assert!(!pending());
    }

    #[test]
    fn check_every_checks_on_multiples_only() {
        let mut seen = 0;
        assert!(cancelled(2, || {
            for i in 0..1_000_000 {
                check_every(i, 1024);
                seen = i;
            }
        }));
        // Checks at 0, 1024 and 2048: the third one stops it.
        assert_eq!(seen, 2047);
    }
}
