//! The SQL layer over `crate::cluster`, by stage: clustering records into persons with stable
//! ids, golden records by survivorship, households. Reads records, pairs and overrides through
//! SPI, works in Rust, and writes back with a few set-based statements.

use pgrx::spi::SpiClient;

use super::spi::{select_kept, spi_failed};

pub(super) mod cluster;
pub(super) mod golden;
pub(super) mod households;

/// `n` new ids from `sequence`.
pub(super) fn fresh_ids(
    client: &mut SpiClient<'_>,
    sequence: &str,
    n: usize,
    function: &'static str,
) -> Vec<i64> {
    if n == 0 {
        return Vec::new();
    }
    // Kept plans (see spi::select_kept): these few texts run in every queue batch.
    select_kept(
        client,
        &format!("SELECT array_agg(nextval('{sequence}')) FROM generate_series(1, $1)"),
        &vec![(n as i64).into()],
    )
    .and_then(|t| t.first().get_one::<Vec<i64>>())
    .unwrap_or_else(|e| spi_failed(e, function))
    .unwrap_or_default()
}
