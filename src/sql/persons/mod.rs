//! The SQL layer over `crate::cluster`, by stage: clustering records into persons with stable
//! ids, golden records by survivorship, households. Reads records, pairs and overrides through
//! SPI, works in Rust, and writes back with a few set-based statements.

use pgrx::spi::SpiClient;

use super::spi::{select_kept, spi_failed, update_kept};

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

/// One statement for many rows: `unify.<table>.<column> = values[i]` where `<key> = keys[i]`.
pub(super) fn set_ids(
    client: &mut SpiClient<'_>,
    table: &str,
    key: &str,
    column: &str,
    keys: &[i64],
    values: Vec<Option<i64>>,
) {
    if keys.is_empty() {
        return;
    }
    update_kept(
        client,
        &format!(
            "UPDATE unify.{table} t SET {column} = u.value
               FROM unnest($1::bigint[], $2::bigint[]) AS u (key, value)
              WHERE t.{key} = u.key"
        ),
        &vec![keys.to_vec().into(), values.into()],
    )
    .unwrap_or_else(|e| spi_failed(e, "resolve"));
}
