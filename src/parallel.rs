//! Independent work over many items (comparing candidate pairs, scoring them) split across a
//! few threads of the calling backend. The threads run plain Rust only: they never call into
//! PostgreSQL, which is single-threaded; the caller decides how many may run.
//!
//! Work is cut into blocks of a fixed size whatever the thread count, and results come back per
//! block in order: a sum over blocks is the same number on one thread or eight.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Items per block: large enough that a block costs far more than handing it out.
pub const BLOCK: usize = 1 << 16;

/// How many threads may work, what the calling thread checks between its blocks and what the
/// other threads ask before each of theirs. By default `crate::interrupt`'s hook: PostgreSQL's
/// interrupt check on the statement's thread, and whether a cancel is pending on the others, so a
/// cancelled query stops within a block on every thread.
#[derive(Clone, Copy, Debug)]
pub struct Workers {
    pub threads: usize,
    pub check: fn(),
    pub pending: fn() -> bool,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            threads: 1,
            check: crate::interrupt::check,
            pending: crate::interrupt::pending,
        }
    }
}

impl From<usize> for Workers {
    fn from(threads: usize) -> Self {
        Self {
            threads,
            ..Self::default()
        }
    }
}

/// `f` of every block of `0..len` (in order). Threads take the next block as they finish one;
/// the calling thread takes part and runs `workers.check` before each of its blocks: a check
/// that panics (a cancelled query raising its error) stops the other threads after their
/// current block, and the panic reaches the caller. The other threads stop when
/// `workers.pending` says a cancel is pending (or their work unwinds with
/// `interrupt::Interrupted`); the calling thread then runs `workers.check` to raise it. A panic
/// in any thread is re-raised in the caller.
pub fn map_blocks<R, F>(len: usize, workers: impl Into<Workers>, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync,
{
    let workers = workers.into();
    let block = |i: usize| i * BLOCK..((i + 1) * BLOCK).min(len);
    share(len.div_ceil(BLOCK), workers, |i| f(block(i)))
}

/// `run(i)` for every `i` in `0..units`, in order: threads take the next unit as they finish one,
/// the calling thread among them, running `workers.check` before each of its units (the others
/// ask `workers.pending`).
fn share<R, F>(units: usize, workers: Workers, run: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    share_beside(units, workers, run, || ()).0
}

/// [`share`], the calling thread running `beside` (its own work, which may call into PostgreSQL)
/// before it takes units: the other threads start on the units meanwhile.
fn share_beside<R, F, T>(
    units: usize,
    workers: Workers,
    run: F,
    beside: impl FnOnce() -> T,
) -> (Vec<R>, T)
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    let Workers {
        threads,
        check,
        pending,
    } = workers;
    let threads = threads.clamp(1, units.max(1));
    if threads == 1 {
        let t = beside();
        let out = (0..units)
            .map(|i| {
                check();
                run(i)
            })
            .collect();
        return (out, t);
    }
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // Set by a thread that stopped for a pending cancel: its units are not done.
    let interrupted = AtomicBool::new(false);
    // The next unit to take, or None when all are taken or a thread failed.
    let take = || {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        (i < units).then_some(i)
    };
    // A unit's work; a panic in it tells the other threads to stop.
    let unit = |i: usize| {
        let guard = StopOnUnwind(&stop);
        let r = run(i);
        std::mem::forget(guard);
        (i, r)
    };
    // Threads other than the caller's must not call into PostgreSQL: they only read whether a
    // cancel is pending and leave raising it to the caller.
    let helper = || {
        let mut done = Vec::new();
        loop {
            if pending() {
                interrupted.store(true, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
                break;
            }
            let Some(i) = take() else { break };
            done.push(unit(i));
        }
        done
    };
    let (mut results, t): (Vec<(usize, R)>, T) = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(helper)).collect();
        // An error raised in `beside` stops the other threads after their unit.
        let guard = StopOnUnwind(&stop);
        let t = beside();
        std::mem::forget(guard);
        let mut all = Vec::new();
        loop {
            let guard = StopOnUnwind(&stop);
            check();
            std::mem::forget(guard);
            let Some(i) = take() else { break };
            all.push(unit(i));
        }
        let mut failed = None;
        for h in handles {
            match h.join() {
                Ok(part) => all.extend(part),
                Err(panic) if panic.is::<crate::interrupt::Interrupted>() => {
                    interrupted.store(true, Ordering::Relaxed);
                    failed.get_or_insert(panic);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if interrupted.load(Ordering::Relaxed) {
            // Raise the cancel here, where it may be raised; the results are incomplete, so
            // never return them even if the check lets the statement go on.
            check();
            std::panic::resume_unwind(
                failed.unwrap_or_else(|| Box::new(crate::interrupt::Interrupted)),
            );
        }
        (all, t)
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    (results.into_iter().map(|(_, r)| r).collect(), t)
}

/// Sets the flag when dropped, which only happens while unwinding (it is forgotten otherwise).
struct StopOnUnwind<'a>(&'a AtomicBool);

impl Drop for StopOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `f` of every item, in item order.
pub fn map<T, R, F>(items: &[T], workers: impl Into<Workers>, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    flat_map(items.len(), workers, |range| {
        items[range].iter().map(&f).collect()
    })
}

/// `f` of every item, moved into it, in order; in units of [`SMALL_UNIT`] items, so that a few
/// thousand items (the records of one fetch) are shared too.
pub fn map_owned<T, R, F>(items: Vec<T>, workers: impl Into<Workers>, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn(T) -> R + Sync,
{
    let len = items.len();
    let mut units: Vec<std::sync::Mutex<Vec<T>>> = Vec::with_capacity(len.div_ceil(SMALL_UNIT));
    let mut items = items.into_iter();
    while units.len() * SMALL_UNIT < len {
        units.push(std::sync::Mutex::new(
            items.by_ref().take(SMALL_UNIT).collect(),
        ));
    }
    drop(items);
    let parts = share(units.len(), workers.into(), |i| {
        let unit = std::mem::take(&mut *units[i].lock().unwrap_or_else(|e| e.into_inner()));
        unit.into_iter().map(&f).collect::<Vec<R>>()
    });
    let mut out = Vec::with_capacity(len);
    for part in parts {
        out.extend(part);
    }
    out
}

/// `f` on every item in place, in units of [`SMALL_UNIT`] items: no second copy of the items
/// (a batch of records prepared where they were read).
pub fn each_mut<T, F>(items: &mut [T], workers: impl Into<Workers>, f: F)
where
    T: Send,
    F: Fn(&mut T) + Sync,
{
    let units: Vec<std::sync::Mutex<&mut [T]>> = items
        .chunks_mut(SMALL_UNIT)
        .map(std::sync::Mutex::new)
        .collect();
    share(units.len(), workers.into(), |i| {
        let mut unit = units[i].lock().unwrap_or_else(|e| e.into_inner());
        unit.iter_mut().for_each(&f);
    });
}

/// Items per unit of [`map_owned`] and [`each_mut`].
const SMALL_UNIT: usize = 1024;

/// The concatenation, in order, of `f` over the blocks of `0..len`.
pub fn flat_map<R, F>(len: usize, workers: impl Into<Workers>, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> Vec<R> + Sync,
{
    flat_map_beside(len, workers, f, || ()).0
}

/// [`flat_map`], the calling thread running `beside` first (writing what is done while the
/// other threads compute the next part): on one thread, `beside` and then `f`.
pub fn flat_map_beside<R, F, T>(
    len: usize,
    workers: impl Into<Workers>,
    f: F,
    beside: impl FnOnce() -> T,
) -> (Vec<R>, T)
where
    R: Send,
    F: Fn(Range<usize>) -> Vec<R> + Sync,
{
    let block = |i: usize| i * BLOCK..((i + 1) * BLOCK).min(len);
    let (parts, t) = share_beside(len.div_ceil(BLOCK), workers.into(), |i| f(block(i)), beside);
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend(part);
    }
    (out, t)
}

/// `f` of every item, in item order, for a few large items of uneven cost (one blocking rule
/// each): threads take the next item as they finish one.
pub fn map_tasks<T, R, F>(items: &[T], workers: impl Into<Workers>, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    share(items.len(), workers.into(), |i| f(&items[i]))
}

/// `items` sorted by `key` (unstable), the buckets sorted on the threads: `bucket` cuts them
/// into `buckets` (its values beyond the last go to the last), and must follow the order (an
/// item of a lower bucket sorts before any of a higher one).
pub fn sort_unstable_by_key<T, K, B, F>(
    items: Vec<T>,
    buckets: usize,
    bucket: B,
    key: F,
    workers: impl Into<Workers>,
) -> Vec<T>
where
    T: Send,
    K: Ord,
    B: Fn(&T) -> usize,
    F: Fn(&T) -> K + Sync,
{
    let workers = workers.into();
    let n = items.len();
    if workers.threads <= 1 || n < BLOCK {
        let mut items = items;
        items.sort_unstable_by_key(key);
        return items;
    }
    let buckets = buckets.max(1);
    let mut parts: Vec<Vec<T>> = (0..buckets).map(|_| Vec::new()).collect();
    for item in items {
        parts[bucket(&item).min(buckets - 1)].push(item);
    }
    let parts: Vec<std::sync::Mutex<Vec<T>>> =
        parts.into_iter().map(std::sync::Mutex::new).collect();
    let sorted = share(parts.len(), workers, |i| {
        let mut part = std::mem::take(&mut *parts[i].lock().unwrap_or_else(|e| e.into_inner()));
        part.sort_unstable_by_key(&key);
        part
    });
    let mut out = Vec::with_capacity(n);
    for part in sorted {
        out.extend(part);
    }
    out
}

/// How many threads a backend may use: the one it runs on plus as many as a parallel query may
/// add (`max_parallel_workers_per_gather`, which DBAs already size to the machine), never more
/// than the machine's cores.
pub fn threads_for(parallel_workers_per_gather: i32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (1 + parallel_workers_per_gather.max(0) as usize).min(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_items_keep_their_order_whatever_the_thread_count() {
        let items: Vec<String> = (0..5_003).map(|i| i.to_string()).collect();
        let serial: Vec<usize> = items.iter().map(|s| s.len() * 3 + 1).collect();
        for threads in [1, 2, 3] {
            let got = map_owned(
                items.clone(),
                Workers {
                    threads,
                    check: || (),
                    pending: || false,
                },
                |s: String| s.len() * 3 + 1,
            );
            assert_eq!(got, serial, "{threads} threads");
        }
        assert!(map_owned(Vec::<u8>::new(), 2, |x| x).is_empty());
        for threads in [1, 2, 3] {
            let mut got = items.clone();
            each_mut(
                &mut got,
                Workers {
                    threads,
                    check: || (),
                    pending: || false,
                },
                |s: &mut String| s.push('x'),
            );
            assert!(got.iter().zip(&items).all(|(g, i)| *g == format!("{i}x")));
        }
    }

    #[test]
    fn results_keep_item_order_whatever_the_thread_count() {
        let items: Vec<u64> = (0..300_003).collect();
        let serial: Vec<u64> = items.iter().map(|x| x * x % 7919).collect();
        for threads in [1, 2, 3, 8] {
            assert_eq!(
                map(&items, threads, |x| x * x % 7919),
                serial,
                "{threads} threads"
            );
        }
        let kept = flat_map(items.len(), 4, |r| r.filter(|x| x % 3 == 0).collect());
        assert_eq!(
            kept,
            (0..300_003).filter(|x| x % 3 == 0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn beside_runs_on_the_calling_thread_while_the_others_work() {
        let caller = std::thread::current().id();
        for threads in [1, 2, 3] {
            let (out, ran_on) = flat_map_beside(
                300_003,
                threads,
                |r| r.filter(|x| x % 5 == 0).collect(),
                || std::thread::current().id(),
            );
            assert_eq!(ran_on, caller);
            assert_eq!(out, (0..300_003).filter(|x| x % 5 == 0).collect::<Vec<_>>());
        }
        // Nothing to compute: `beside` still runs.
        let (out, t) = flat_map_beside(0, 2, |r| r.collect::<Vec<usize>>(), || 7);
        assert!(out.is_empty() && t == 7);
        // A failure beside stops the other threads and reaches the caller.
        let done = AtomicUsize::new(0);
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            flat_map_beside(
                BLOCK * 200,
                2,
                |r| {
                    done.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    r.take(1).collect::<Vec<usize>>()
                },
                || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    panic!("beside failed")
                },
            )
        }));
        assert!(failed.is_err());
        assert!(done.load(Ordering::Relaxed) < 200);
    }

    #[test]
    fn sorting_in_buckets_equals_one_sort() {
        // A skewed spread (most items in a few buckets) and duplicates.
        let items: Vec<(u64, u32)> = (0..200_003u64)
            .map(|i| ((i * 7919 % 100_003).pow(2) % 1_000_003, (i % 13) as u32))
            .collect();
        let mut want = items.clone();
        want.sort_unstable();
        for threads in [1, 2, 3] {
            for buckets in [1, 7, 64] {
                let got = sort_unstable_by_key(
                    items.clone(),
                    buckets,
                    |&(k, _)| (k * buckets as u64 / 1_000_003) as usize,
                    |&x| x,
                    threads,
                );
                assert_eq!(got, want, "{threads} threads, {buckets} buckets");
            }
        }
        // A bucket past the last counts as the last.
        let got = sort_unstable_by_key(items.clone(), 4, |&(k, _)| k as usize, |&x| x, 2);
        assert_eq!(got, want);
    }

    #[test]
    fn sums_over_blocks_do_not_depend_on_the_thread_count() {
        let values: Vec<f64> = (0..500_000).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let sum = |threads| -> f64 {
            map_blocks(values.len(), threads, |r| values[r].iter().sum::<f64>())
                .iter()
                .sum()
        };
        let one = sum(1);
        for threads in [2, 3, 7] {
            assert_eq!(sum(threads).to_bits(), one.to_bits());
        }
    }

    #[test]
    fn small_inputs_stay_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let ids = map(&[1, 2, 3], 8, |_| std::thread::current().id());
        assert!(ids.iter().all(|id| *id == caller));
        assert!(map(&[] as &[u8], 4, |x| *x).is_empty());
    }

    #[test]
    fn a_panic_in_a_worker_thread_reaches_the_caller() {
        let items: Vec<u32> = (0..300_000).collect();
        let result = std::panic::catch_unwind(|| {
            map(&items, 2, |&x| {
                assert!(x != 10, "boom");
                x
            })
        });
        assert!(result.is_err());
    }

    #[test]
    fn a_failing_check_stops_every_thread_soon() {
        static DONE: AtomicUsize = AtomicUsize::new(0);
        static CHECKS: AtomicUsize = AtomicUsize::new(0);
        fn cancel_at_the_fourth_check() {
            if CHECKS.fetch_add(1, Ordering::Relaxed) == 3 {
                panic!("canceling statement due to user request");
            }
        }
        let workers = Workers {
            threads: 2,
            check: cancel_at_the_fourth_check,
            ..Workers::default()
        };
        let result = std::panic::catch_unwind(|| {
            map_blocks(1000 * BLOCK, workers, |r| {
                // Work that takes a while, as comparing 65,536 pairs does.
                std::thread::sleep(std::time::Duration::from_millis(2));
                DONE.fetch_add(1, Ordering::Relaxed);
                r.len()
            })
        });
        assert!(result.is_err());
        // The helper stops after the block it holds once the panic unwinds (printing the panic
        // takes a while), long before the thousand.
        assert!(
            DONE.load(Ordering::Relaxed) < 500,
            "{}",
            DONE.load(Ordering::Relaxed)
        );
        // Without a failing check every block is done, each once, in order.
        let starts = map_blocks(1000 * BLOCK + 5, 3, |r| r.start);
        assert!(starts.iter().copied().eq((0..1001).map(|i| i * BLOCK)));
    }

    #[test]
    fn a_pending_cancel_stops_the_other_threads_and_the_caller_raises_it() {
        // A cancel arrives while the blocks run: the helper threads see it pending, stop, and
        // the calling thread raises it after joining them (as check_for_interrupts! would).
        static CANCEL: AtomicBool = AtomicBool::new(false);
        static RAISED: AtomicUsize = AtomicUsize::new(0);
        static DONE: AtomicUsize = AtomicUsize::new(0);
        fn pending() -> bool {
            CANCEL.load(Ordering::Relaxed)
        }
        fn raise_if_cancelled() {
            if CANCEL.load(Ordering::Relaxed) {
                RAISED.fetch_add(1, Ordering::Relaxed);
                panic!("canceling statement due to statement timeout");
            }
        }
        let workers = Workers {
            threads: 3,
            check: raise_if_cancelled,
            pending,
        };
        let result = std::panic::catch_unwind(|| {
            map_blocks(1000 * BLOCK, workers, |r| {
                if DONE.fetch_add(1, Ordering::Relaxed) == 20 {
                    CANCEL.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
                r.len()
            })
        });
        let message = *result.unwrap_err().downcast::<&str>().unwrap();
        assert_eq!(message, "canceling statement due to statement timeout");
        assert_eq!(RAISED.load(Ordering::Relaxed), 1);
        assert!(DONE.load(Ordering::Relaxed) < 100, "{DONE:?}");
    }

    #[test]
    fn work_unwinding_with_interrupted_on_a_helper_is_raised_by_the_caller() {
        // A pure loop on a helper thread calls interrupt::check(), which unwinds there with
        // Interrupted; after joining, the caller's check raises the statement's own error.
        static HELPER_STOPPED: AtomicBool = AtomicBool::new(false);
        fn raise_once_a_helper_stopped() {
            if HELPER_STOPPED.load(Ordering::Relaxed) {
                panic!("raised by the caller");
            }
        }
        let caller = std::thread::current().id();
        let items: Vec<u32> = (0..64).collect();
        let workers = Workers {
            threads: 2,
            check: raise_once_a_helper_stopped,
            pending: || false,
        };
        let result = std::panic::catch_unwind(|| {
            map_tasks(&items, workers, |&x| {
                if std::thread::current().id() != caller {
                    HELPER_STOPPED.store(true, Ordering::Relaxed);
                    std::panic::panic_any(crate::interrupt::Interrupted);
                }
                // Slow on the caller's thread, so that the helper takes tasks.
                std::thread::sleep(std::time::Duration::from_millis(5));
                x
            })
        });
        let message = *result.unwrap_err().downcast::<&str>().unwrap();
        assert_eq!(message, "raised by the caller");
    }

    #[test]
    fn tasks_come_back_in_item_order() {
        let items: Vec<u64> = (0..37).collect();
        let out = map_tasks(&items, 3, |&x| {
            // Uneven work, so threads finish out of order.
            (0..(37 - x) * 10_000).fold(x, |acc, k| acc ^ k)
                ^ (0..(37 - x) * 10_000).fold(0, |acc, k| acc ^ k)
        });
        assert_eq!(out, items);
    }

    #[test]
    fn threads_never_exceed_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads_for(0), 1);
        assert_eq!(threads_for(-1), 1);
        assert_eq!(threads_for(1000), cores);
    }
}
