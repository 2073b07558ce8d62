//! Matching: blocking, comparisons, the Fellegi-Sunter model with its training, scoring and
//! explanation. Pure Rust, no pgrx types; `crate::sql::matching` is the SQL layer over it.

pub mod blocking;
#[cfg(test)]
pub mod compare_bench;
pub mod comparison;
pub mod distributed;
pub mod held_keys;
pub mod identify;
pub mod packed;
pub mod params;
pub mod record;
pub mod scorer;
pub mod stream;
pub mod train;
