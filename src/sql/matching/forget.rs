//! Forgetting records' matching state: their pairs and blocking keys, when records are erased,
//! their source removed or unify.records truncated. With `score` and `rescore` the only writers
//! of unify.pairs, unify.block_keys, unify.matching_state and unify.blocking_stats.

use pgrx::prelude::*;

use super::super::spi::{spi_failed, update_kept};

/// Deletes the pairs and blocking keys of `record_ids` and clears the blocked junk values that
/// quote one of `needles` (the erased values) from unify.blocking_stats; NULL record ids: every
/// pair and key, and the blocking index is marked unbuilt (the next unify.score_pairs() builds
/// it). The caller holds the 'pairs' lock (or, for a truncate of unify.records, the table).
#[pg_extern(volatile)]
fn _forget_records(record_ids: Option<Vec<i64>>, needles: default!(Option<Vec<String>>, "NULL")) {
    const F: &str = "_forget_records";
    Spi::connect_mut(|client| {
        match record_ids {
            None => {
                client
                    .update("TRUNCATE unify.pairs, unify.block_keys", None, &[])
                    .and_then(|_| client.update("DELETE FROM unify.matching_state", None, &[]))
                    .unwrap_or_else(|e| spi_failed(e, F));
            }
            Some(ids) => {
                update_kept(
                    client,
                    "DELETE FROM unify.pairs p WHERE p.record_a = ANY ($1) OR p.record_b = ANY ($1)",
                    &vec![ids.clone().into()],
                )
                .and_then(|_| {
                    update_kept(
                        client,
                        "DELETE FROM unify.block_keys k WHERE k.record_id = ANY ($1)",
                        &vec![ids.into()],
                    )
                })
                .unwrap_or_else(|e| spi_failed(e, F));
            }
        }
        if let Some(needles) = needles {
            // A blocked junk value may name an erased person.
            client
                .update(
                    "UPDATE unify.blocking_stats b SET largest_skipped_key = NULL
                      WHERE unify._quotes_any(b.largest_skipped_key, $1)",
                    None,
                    &[needles.into()],
                )
                .unwrap_or_else(|e| spi_failed(e, F));
        }
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(table: &str) -> i64 {
        Spi::get_one::<i64>(&format!("SELECT count(*) FROM {table}"))
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn forgetting_records_removes_their_pairs_and_keys_only() {
        Spi::run(
            "INSERT INTO unify.pairs (record_a, record_b, match_weight, match_probability, is_match,
                                      blocking_rules, weights)
             VALUES (1, 2, 10, 0.99, true, '{}', '{}'), (3, 4, 10, 0.99, true, '{}', '{}');
             INSERT INTO unify.block_keys (key_hash, record_id) VALUES (7, 1), (7, 3);",
        )
        .unwrap();
        Spi::run("SELECT unify._forget_records(ARRAY[2::bigint, 1])").unwrap();
        assert_eq!(count("unify.pairs"), 1);
        assert_eq!(count("unify.block_keys"), 1);
        Spi::run("SELECT unify._forget_records(NULL)").unwrap();
        assert_eq!(count("unify.pairs"), 0);
        assert_eq!(count("unify.block_keys"), 0);
        assert_eq!(count("unify.matching_state"), 0);
    }
}
