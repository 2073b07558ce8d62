//! The background workers: `customer_unify.workers` per database in `customer_unify.databases`,
//! registered when the library is in `shared_preload_libraries`. They drain
//! `unify.change_queue` in small transactions, one stage of a batch each (`unify._queue_step`:
//! take, rescore, cluster), so that one worker rescores a batch while another clusters the one
//! before; the first also refreshes segments on an interval if asked. Each step is one SQL
//! call, and `unify.process_queue()` runs all three in one, so a database without workers gets
//! the same result from a scheduled job (pg_cron).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;

pub static DATABASES: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(Some(c"postgres"));
pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1000);
pub static NAPTIME_MS: GucSetting<i32> = GucSetting::<i32>::new(10);
pub static SEGMENT_REFRESH_S: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);
pub static SYNCHRONOUS_COMMIT: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Seconds the postmaster waits before starting a worker that exited with an error again: an
/// error that repeats (a broken source) then costs one log line per interval, not a hot loop.
const RESTART_SECONDS: u64 = 10;
/// How often a worker whose database lacks the extension looks again.
const NO_EXTENSION_RETRY: Duration = Duration::from_secs(10);

pub fn init() {
    GucRegistry::define_bool_guc(
        c"customer_unify.worker_enabled",
        c"Whether the background workers process the change queue.",
        c"Off: the workers idle (unify.process_queue() from a scheduled job still works). Reloaded on SIGHUP.",
        &ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_unify.batch_size",
        c"Queued changes per worker transaction.",
        c"Smaller batches keep locks and memory short; larger ones raise throughput under a backlog.",
        &BATCH_SIZE,
        1,
        1_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_unify.naptime",
        c"How long an idle worker waits before looking at the queue again.",
        c"The latency from a commit to its person is at most this plus one batch.",
        &NAPTIME_MS,
        1,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"customer_unify.worker_synchronous_commit",
        c"Whether the background workers wait for their commits to reach disk.",
        c"Off (default): a worker's own transactions commit with synchronous_commit = off. A crash loses at most its last moments of work, and since a change leaves the queue in the transaction that applies it, that work is queued again and redone. On: the workers follow the server's synchronous_commit. Reloaded on SIGHUP.",
        &SYNCHRONOUS_COMMIT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_unify.segment_refresh_interval",
        c"How often the worker runs unify.refresh_segments() (0: never).",
        c"The interval counts from the last run in unify.segment_runs, whoever started it.",
        &SEGMENT_REFRESH_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );

    // A server-start setting can only be defined while the server starts: without preloading
    // there are no workers and nothing to configure.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    GucRegistry::define_string_guc(
        c"customer_unify.databases",
        c"Databases whose change queue a background worker serves (comma-separated).",
        c"One worker per database; needs the library in shared_preload_libraries and a restart to change.",
        &DATABASES,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"customer_unify.workers",
        c"Background workers per database.",
        c"Two let one rescore a batch while the other takes the next and clusters the one before (nearly twice the rows/s on two cores); one runs the stages in turn. Each counts against max_worker_processes; needs a restart to change.",
        &WORKERS,
        1,
        8,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    for database in databases() {
        for index in 0..WORKERS.get() {
            BackgroundWorkerBuilder::new(&format!(
                "customer_unify worker {database} {}",
                index + 1
            ))
            .set_type("customer_unify worker")
            .set_library("customer_unify")
            .set_function("customer_unify_worker_main")
            .set_argument(Some(pg_sys::Datum::from(index)))
            .set_extra(&database)
            .enable_spi_access()
            .set_restart_time(Some(Duration::from_secs(RESTART_SECONDS)))
            .load();
        }
    }
}

/// How often the first worker of a database processes captured events and abandoned carts.
const EVENTS_INTERVAL_S: u64 = 60;

fn databases() -> Vec<String> {
    DATABASES
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .split(',')
        .map(|d| d.trim().to_string())
        // bgw_extra holds 128 bytes; a longer name could not be passed (and Postgres allows 63).
        .filter(|d| !d.is_empty() && d.len() < 128)
        .collect()
}

fn report_activity(query: Option<&std::ffi::CStr>) {
    unsafe {
        match query {
            Some(q) => {
                pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, q.as_ptr())
            }
            None => {
                pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null())
            }
        }
    }
}

/// The workers' own commits do not wait for the WAL flush unless
/// `customer_unify.worker_synchronous_commit` asks them to. Safe for the queue: a change leaves
/// `unify.change_queue` (and a batch `unify.queue_work`) in the transaction that applies it, and
/// commits reach disk in order, so a crash loses whole steps, which are done again. It keeps
/// the writers' commits short too: a flush waits for all WAL before it, and most WAL here is
/// the workers'. (At 1M records and 200 inserts/s, back to back: the workers waited on WAL
/// flushes in 8% of the samples before, none after; p99 from commit to person 82 → 72 ms.)
fn apply_commit_mode() {
    let query = if SYNCHRONOUS_COMMIT.get() {
        "SET synchronous_commit TO DEFAULT"
    } else {
        "SET synchronous_commit = off"
    };
    BackgroundWorker::transaction(|| Spi::run(query).ok());
}

fn shutdown_requested() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

/// True while the worker runs SQL. A SIGTERM then cancels that SQL at its next interrupt check
/// (Postgres' own `die`: the transaction rolls back, the queued changes stay queued) instead of
/// waiting for a long batch, which a fast shutdown or `DROP DATABASE … WITH (FORCE)` would not
/// wait for; between batches it only asks the loop to stop.
static BUSY: AtomicBool = AtomicBool::new(false);

unsafe extern "C-unwind" fn on_sigterm(signal: std::ffi::c_int) {
    unsafe {
        (&raw mut pg_sys::ShutdownRequestPending).write_volatile(1);
        if BUSY.load(Ordering::SeqCst) {
            pg_sys::die(signal);
        }
        pg_sys::SetLatch(pg_sys::MyLatch);
    }
}

/// Runs `work` in its own transaction with SIGTERM cancelling it; None when a stop was already
/// asked for (checked after BUSY is set, so a signal cannot slip in between unseen). Then
/// reports the transaction's table statistics as a client backend does when it goes idle: a
/// background worker otherwise keeps them until it exits, and autovacuum would never learn of
/// the rows the queue stages delete.
fn busy_transaction<R: std::panic::UnwindSafe>(
    work: impl FnOnce() -> R + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
) -> Option<R> {
    BUSY.store(true, Ordering::SeqCst);
    let result = if shutdown_requested() {
        None
    } else {
        Some(BackgroundWorker::transaction(work))
    };
    BUSY.store(false, Ordering::SeqCst);
    // Not forced: PostgreSQL sends at most once a second.
    unsafe { pg_sys::pgstat_report_stat(false) };
    result
}

/// The two statements of a poll, planned once and kept across transactions: an idle worker
/// asks many times a second, and planning them each time was most of its cost.
struct Poll {
    installed: pgrx::spi::OwnedPreparedStatement,
    /// Prepared once the extension is found (before, its function does not exist).
    process: std::cell::RefCell<Option<pgrx::spi::OwnedPreparedStatement>>,
}

impl Poll {
    fn prepare() -> Self {
        Spi::connect(|client| {
            Poll {
            installed: client
                .prepare(
                    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'customer_unify')",
                    &[],
                )
                .expect("the extension check prepares")
                .keep(),
            process: std::cell::RefCell::new(None),
        }
        })
    }

    /// One step (a stage of a batch of up to `batch` changes) in the current transaction:
    /// Some(changes moved on, 0 when there was nothing to do), or None when the extension is
    /// not installed in this database.
    fn run(&self, batch: i32) -> Option<i32> {
        Spi::connect_mut(|client| {
            let installed = client
                .select(&self.installed, None, &[])
                .and_then(|t| t.first().get_one::<bool>())
                .ok()
                .flatten()
                .unwrap_or(false);
            if !installed {
                return None;
            }
            let mut process = self.process.borrow_mut();
            let process = process.get_or_insert_with(|| {
                client
                    .prepare_mut(
                        "SELECT unify._queue_step($1)",
                        &[PgBuiltInOids::INT4OID.oid()],
                    )
                    .expect("unify._queue_step(int) prepares")
                    .keep()
            });
            Some(
                client
                    .update(&*process, None, &[batch.into()])
                    .and_then(|t| t.first().get_one::<i32>())
                    .ok()
                    .flatten()
                    .unwrap_or(0),
            )
        })
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn customer_unify_worker_main(arg: pg_sys::Datum) {
    let database = BackgroundWorker::get_extra().to_string();
    // The first worker of a database also refreshes segments.
    let first = arg.value() == 0;
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    unsafe { pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(on_sigterm)) };
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    BackgroundWorker::transaction(|| {
        Spi::run(
            // The workers run as the bootstrap superuser: nothing a user creates in a schema may
            // stand in for a built-in in what they run.
            "SELECT pg_catalog.set_config('application_name', 'customer_unify worker', false),
                    pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)",
        )
        .ok();
    });
    apply_commit_mode();
    let poll = std::panic::AssertUnwindSafe(BackgroundWorker::transaction(Poll::prepare));
    log!("customer_unify worker started for database \"{database}\"");
    let mut next_segment_check = Instant::now();
    let mut next_events_check = Instant::now();
    let mut nap = Duration::ZERO;
    loop {
        BackgroundWorker::wait_latch(Some(nap));
        if shutdown_requested() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            apply_commit_mode();
        }
        nap = Duration::from_millis(NAPTIME_MS.get().max(1) as u64);
        if !ENABLED.get() {
            continue;
        }
        // Drain: step after step while they find work, each its own transaction (its memory
        // freed at commit), stopping between steps when asked to.
        let mut installed = true;
        loop {
            let batch = BATCH_SIZE.get();
            // Shown in pg_stat_activity (state, query) while the batch runs.
            report_activity(Some(c"SELECT unify.process_queue()"));
            let poll = &poll;
            let taken = busy_transaction(move || poll.run(batch));
            report_activity(None);
            match taken {
                Some(None) => {
                    installed = false;
                    nap = NO_EXTENSION_RETRY;
                    break;
                }
                Some(Some(moved)) if moved > 0 => continue,
                _ => break,
            }
        }
        // Nothing else to do where the extension is not installed (yet).
        if !installed {
            continue;
        }
        let interval = SEGMENT_REFRESH_S.get();
        if first && interval > 0 && Instant::now() >= next_segment_check && !shutdown_requested() {
            next_segment_check = Instant::now() + Duration::from_secs(interval.min(60) as u64);
            busy_transaction(|| {
                let due = Spi::get_one_with_args::<bool>(
                    "SELECT coalesce(max(r.ran_at), '-infinity') < now() - make_interval(secs => $1)
                            AND EXISTS (SELECT 1 FROM unify.transaction_sources)
                       FROM unify.segment_runs r",
                    &[f64::from(interval).into()],
                )
                .ok()
                .flatten()
                .unwrap_or(false);
                if due {
                    report_activity(Some(c"SELECT unify.refresh_segments()"));
                    Spi::run("SELECT unify.refresh_segments()").ok();
                    report_activity(None);
                }
            });
        }
        // Behavioural events (issue 26): once a minute, where event tables are registered, the
        // captured changes and the carts abandoned since. Errors are warnings (never a restart).
        if first && Instant::now() >= next_events_check && !shutdown_requested() {
            next_events_check = Instant::now() + Duration::from_secs(EVENTS_INTERVAL_S);
            busy_transaction(|| {
                report_activity(Some(
                    c"SELECT unify.process_events(), unify.detect_abandoned_carts()",
                ));
                // Checked inside: an installation older than 0.3.0 has no event tables.
                Spi::run(
                    "DO $w$ BEGIN
                         IF pg_catalog.to_regclass('unify.event_sources') IS NULL THEN
                             RETURN;
                         END IF;
                         IF EXISTS (SELECT 1 FROM unify.event_sources) THEN
                             PERFORM unify.process_events();
                             PERFORM unify.detect_abandoned_carts();
                         END IF;
                     EXCEPTION WHEN others THEN
                         RAISE WARNING 'customer_unify worker: events not processed: %', SQLERRM;
                     END $w$",
                )
                .ok();
                report_activity(None);
            });
        }
    }
    log!("customer_unify worker for database \"{database}\" stopped");
    // Exit status 1: the postmaster starts the worker again after the restart time unless the
    // server is shutting down. With 0 it would forget it, and a pg_terminate_backend() or a
    // DROP DATABASE … WITH (FORCE) on another database would stop the service until a restart.
    unsafe { pg_sys::proc_exit(1) };
}
