//! `customer_unify.batch_memory`: the memory a whole-table batch command (unify.score_pairs,
//! unify.train, unify.resolve) may hold, set like `maintenance_work_mem`. Within it the command
//! holds all records at once (fastest); above it, score_pairs streams them in blocking-key order
//! and scores block by block, train samples its candidates block by block (`crate::model::stream`,
//! `crate::sql::matching::stream`), holding a bounded buffer whatever the number of records, and
//! resolve makes golden records and households a batch of whole persons at a time
//! (`sql::persons::golden`). Resolve's clustering holds its state for all records at once while
//! that fits half of it (44 bytes a record, 40 more a record that had a person); above it, it clusters a batch of whole components at a
//! time (`sql::persons::cluster::in_batches`, `crate::cluster::batches`), holding about the
//! budget whatever the number of records, with PostgreSQL's own sorts of it bounded too.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `customer_unify.citus_scoring`: with Citus and worker nodes, unify.score_pairs scores the
/// blocks on the workers (on by default); off scores them on the coordinator as without Citus.
pub static CITUS_SCORING: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Kilobytes (1GB by default).
pub static BATCH_MEMORY_KB: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);

pub fn init() {
    GucRegistry::define_int_guc(
        c"customer_unify.batch_memory",
        c"Memory a whole-table batch command (unify.score_pairs, unify.train, unify.resolve) may use in its backend.",
        c"When all records fit (score_pairs and train: about 4 kB each; resolve's golden records: about 2 kB each), they are held at once; otherwise score_pairs streams them in blocking-key order and scores block by block, train samples the candidates block by block, and resolve makes golden records and households a batch of whole persons at a time and (above about 44 bytes a record in half of it) clusters a batch of whole components at a time, within this budget. PostgreSQL's own sorts and hashes in these steps (and in refresh_segments and fit_predictions) use work_mem, lowered to an eighth of this budget where that is smaller.",
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
