//! Independent work over many items (comparing candidate pairs, scoring them) split across a
//! few threads of the calling backend. The threads run plain Rust only: they never call into
//! PostgreSQL, which is single-threaded; the caller decides how many may run.
//!
//! Work is cut into blocks of a fixed size whatever the thread count, and results come back per
//! block in order: a sum over blocks is the same number on one thread or eight.

use std::ops::Range;

/// Items per block: large enough that a block costs far more than handing it out.
pub const BLOCK: usize = 1 << 16;

/// `f` of every block of `0..len` (in order), the blocks shared out over up to `threads`
/// threads as contiguous runs; the calling thread takes the last run. A panic in any thread is
/// re-raised in the caller.
pub fn map_blocks<R, F>(len: usize, threads: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync,
{
    let blocks: Vec<Range<usize>> = (0..len)
        .step_by(BLOCK)
        .map(|start| start..(start + BLOCK).min(len))
        .collect();
    let threads = threads.clamp(1, blocks.len().max(1));
    if threads == 1 {
        return blocks.into_iter().map(f).collect();
    }
    let per_thread = blocks.len().div_ceil(threads);
    let mut runs: Vec<&[Range<usize>]> = blocks.chunks(per_thread).collect();
    let own = runs.pop().unwrap_or(&[]);
    let run = |r: &[Range<usize>]| r.iter().cloned().map(&f).collect::<Vec<R>>();
    std::thread::scope(|s| {
        let handles: Vec<_> = runs.into_iter().map(|r| s.spawn(move || run(r))).collect();
        let last = run(own);
        let mut out = Vec::with_capacity(blocks.len());
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out.extend(last);
        out
    })
}

/// `f` of every item, in item order.
pub fn map<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    flat_map(items.len(), threads, |range| {
        items[range].iter().map(&f).collect()
    })
}

/// The concatenation, in order, of `f` over the blocks of `0..len`.
pub fn flat_map<R, F>(len: usize, threads: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(Range<usize>) -> Vec<R> + Sync,
{
    let parts = map_blocks(len, threads, f);
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend(part);
    }
    out
}

/// `f` of every item, in item order, for a few large items of uneven cost (one blocking rule
/// each): threads take the next item as they finish one.
pub fn map_tasks<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in handles {
            match h.join() {
                Ok(part) => all.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
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
