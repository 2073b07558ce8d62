//! `customer_unify.batch_memory`: the memory a whole-table batch command (unify.score_pairs)
//! may hold, set like `maintenance_work_mem`. Within it the command holds all records at once
//! (fastest); above it, it streams them in blocking-key order and scores block by block
//! (`crate::model::stream`), holding a bounded buffer whatever the number of records.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `customer_unify.citus_scoring`: with Citus and worker nodes, unify.score_pairs scores the
/// blocks on the workers (on by default); off scores them on the coordinator as without Citus.
pub static CITUS_SCORING: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Kilobytes (1GB by default).
pub static BATCH_MEMORY_KB: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);

pub fn init() {
    GucRegistry::define_int_guc(
        c"customer_unify.batch_memory",
        c"Memory a whole-table batch command (unify.score_pairs) may use in its backend.",
        c"When all records fit (about 4 kB each), they are held at once; otherwise the command streams them in blocking-key order and scores block by block within this budget. PostgreSQL's own sorts of that stream use work_mem.",
        &BATCH_MEMORY_KB,
        64,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_bool_guc(
        c"customer_unify.citus_scoring",
        c"Whether unify.score_pairs scores the candidate blocks on the Citus workers.",
        c"With the citus extension and worker nodes the blocks are scored on the workers; off scores them on the coordinator, as without Citus (the same pairs).",
        &CITUS_SCORING,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// The budget in kilobytes.
pub fn kb() -> u64 {
    BATCH_MEMORY_KB.get().max(64) as u64
}
