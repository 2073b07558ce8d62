//! The SQL layer over `crate::model`, by stage: reading records, the model functions, training,
//! scoring all records, the incremental rescoring of a queue batch, forgetting records,
//! explanation, and the name frequencies they share. Records are read through SPI once per
//! call; the work over pairs happens in Rust, never one SQL call per pair. Rust owns the
//! matching tables: unify.pairs, unify.block_keys, unify.matching_state and
//! unify.blocking_stats are written only here.

mod distributed;
pub(super) mod explain;
pub(super) mod forget;
mod frequencies;
pub(super) mod identify;
pub(super) mod model;
mod records;
pub(super) mod rescore;
pub(super) mod run;
pub(super) mod score;
mod score_held;
mod stream;
pub(super) mod train;
