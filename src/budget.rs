//! `customer_unify.batch_memory`: the memory a whole-table batch command (unify.score_pairs,
//! unify.train) may hold, set like `maintenance_work_mem`. Within it the command holds all
//! records at once (fastest); above it, it streams them in blocking-key order and scores (or, for
//! train, samples) block by block (`crate::model::stream`, `crate::sql::matching::stream`),
//! holding a bounded buffer whatever the number of records.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Kilobytes (1GB by default).
pub static BATCH_MEMORY_KB: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);

pub fn init() {
    GucRegistry::define_int_guc(
        c"customer_unify.batch_memory",
        c"Memory a whole-table batch command (unify.score_pairs, unify.train) may use in its backend.",
        c"When all records fit (about 4 kB each), they are held at once; otherwise the command streams them in blocking-key order and scores (train: samples) block by block within this budget. PostgreSQL's own sorts of that stream use work_mem.",
        &BATCH_MEMORY_KB,
        64,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
}

/// The budget in kilobytes.
pub fn kb() -> u64 {
    BATCH_MEMORY_KB.get().max(64) as u64
}
