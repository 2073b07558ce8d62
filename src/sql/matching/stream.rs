//! unify.score_pairs over more records than `customer_unify.batch_memory` holds: the records
//! are read in streams ordered by what groups them (e-mail, phone, blocking key) and never held
//! all at once. `crate::model::stream` has the logic and the proof that the result equals the
//! run over all records held at once; this is its reading and writing.
//!
//! 1. The household e-mails and phones: two passes over the records ordered by value.
//! 2. unify.block_keys: one pass over the records, keys written in chunks.
//! 3. The figures per rule from the block sizes (and the max_candidate_pairs check), read from
//!    unify.block_keys grouped by key; the blocks within their size limit go to a temp table,
//!    each record's keys among them to another.
//! 4. The members of those blocks in key order, each record with its valid keys: pairs block
//!    by block, scored a buffer at a time on all threads, written as they come.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use super::super::errors::raise;
use super::super::spi::{drop_indexes, rebuild_indexes, spi_failed, Cursor};
use super::frequencies::load_frequencies;
use super::records::{record_from_row, source_ids, RECORD_COLUMNS};
use super::run::Phases;
use super::score::{pair_rows, write_block_key_rows, write_blocking_stats, write_pairs};
use crate::model::blocking::{key_hash, key_hashes, rule_of, Candidate};
use crate::model::comparison::Context;
use crate::model::params::Model;
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;
use crate::model::stream::{block_pairs, buffer_records, RuleFigures, ValueGroups};

const F: &str = "score_pairs";
/// The temp tables of one run (dropped at its end, and at commit in any case).
const VALID: &str = "pg_temp.unify_score_valid_blocks";
const RECORD_VALID: &str = "pg_temp.unify_score_record_keys";

/// What unify.score_pairs returns: candidate pairs (NULL without rules), stored, matches, forced.
pub(super) type Figures = (Option<i64>, i64, i64, i64);

fn run(client: &mut SpiClient<'_>, statement: &str) {
    client
        .update(statement, None, &[])
        .unwrap_or_else(|e| spi_failed(e, F));
}

/// `RECORD_COLUMNS` of unify.records r, qualified.
fn record_columns() -> String {
    RECORD_COLUMNS
        .split(',')
        .map(|c| format!("r.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Scores all records with `model` within `budget_kb`, as `_score_pairs` does with all of them
/// held at once.
pub(super) fn score_streamed(
    model: &Model,
    version: Option<i32>,
    budget_kb: u64,
    phases: &mut Phases,
) -> Figures {
    let max_block = model
        .blocking_rules
        .iter()
        .map(|r| r.max_block_size)
        .max()
        .unwrap_or(2);
    let buffer = buffer_records(budget_kb, max_block);
    // Rows per fetch: a few MB of tuples at most, at least a hundred.
    let batch = (buffer / 4).clamp(100, 20_000);
    Spi::connect_mut(|client| {
        // The cursors are read to their end: plan them for all their rows (hash joins and one
        // sort), not for the first tenth (nested loops through indexes).
        let fraction = client
            .select("SELECT current_setting('cursor_tuple_fraction')", None, &[])
            .unwrap_or_else(|e| spi_failed(e, F))
            .first()
            .get::<String>(1)
            .ok()
            .flatten()
            .unwrap_or_else(|| "0.1".into());
        run(
            client,
            "SELECT set_config('cursor_tuple_fraction', '1', true)",
        );
        let ids = source_ids(client);
        let (first_name_tf, last_name_tf) = load_frequencies(client, None, F);
        let ctx = Context {
            first_name_tf,
            last_name_tf,
            shared_emails: household_values(client, "email", batch),
            shared_phones: household_values(client, "phone", batch),
        };
        phases.mark("households");
        write_keys(client, model, batch);
        phases.mark("block_keys");
        let figures = score_blocks(client, model, &ctx, &ids, version, buffer, batch, phases);
        client
            .update(
                "SELECT set_config('cursor_tuple_fraction', $1, true)",
                None,
                &[fraction.into()],
            )
            .unwrap_or_else(|e| spi_failed(e, F));
        figures
    })
}

/// The e-mails or phones held by clearly different people (`comparison::Context`), from the
/// records ordered by value.
pub(super) fn household_values(
    client: &mut SpiClient<'_>,
    of: &str,
    batch: usize,
) -> std::collections::HashSet<String> {
    let cols = record_columns();
    // Byte order ("C"): equal values next to each other, whatever the database's collation.
    let query = if of == "email" {
        format!(
            "SELECT {cols}, r.email_key FROM unify.records r WHERE r.email_key IS NOT NULL
             ORDER BY r.email_key COLLATE \"C\", r.record_id"
        )
    } else {
        format!(
            "SELECT {cols}, v.p FROM unify.records r
             CROSS JOIN LATERAL (SELECT DISTINCT x.p FROM (VALUES (r.phone), (r.mobile)) AS x (p)
                                 WHERE x.p IS NOT NULL) AS v
             ORDER BY v.p COLLATE \"C\", r.record_id"
        )
    };
    let cursor = Cursor::open(client, "unify_score_values", &query, batch, F);
    let mut groups = ValueGroups::default();
    loop {
        let rows = cursor.next(client, |row| {
            let record = record_from_row(row, F);
            let value = row.get::<String>(16).ok().flatten().unwrap_or_default();
            (value, record)
        });
        if rows.is_empty() {
            break;
        }
        for (value, record) in rows {
            // The prepared record's value (an e-mail trimmed, a blank phone dropped).
            let value = if of == "email" {
                record.email_key.clone()
            } else {
                record.phones.iter().find(|p| **p == value).cloned()
            };
            if let Some(value) = value {
                groups.push(&value, record);
            }
        }
    }
    cursor.close(client);
    groups.finish()
}

/// unify.block_keys and unify.matching_state anew, from one pass over the records.
pub(super) fn write_keys(client: &mut SpiClient<'_>, model: &Model, batch: usize) {
    run(client, "TRUNCATE unify.block_keys");
    let rebuild = drop_indexes(client, "unify.block_keys", true, F);
    let cursor = Cursor::open(
        client,
        "unify_score_records",
        &format!("SELECT {RECORD_COLUMNS} FROM unify.records r"),
        batch,
        F,
    );
    let mut keys: Vec<(i64, i64)> = Vec::new();
    loop {
        let records = cursor.next(client, |row| record_from_row(row, F));
        if records.is_empty() {
            break;
        }
        for r in &records {
            keys.extend(
                key_hashes(&model.blocking_rules, r)
                    .into_iter()
                    .map(|(_, h)| (h, r.id)),
            );
        }
        if keys.len() >= 200_000 {
            keys.sort_unstable();
            write_block_key_rows(client, std::mem::take(&mut keys));
        }
    }
    cursor.close(client);
    keys.sort_unstable();
    write_block_key_rows(client, keys);
    rebuild_indexes(client, rebuild, F);
    super::score::write_matching_state(client, model);
}

/// Steps 3 and 4: the figures, the blocks within their limits, and the scored pairs.
#[allow(clippy::too_many_arguments)]
fn score_blocks(
    client: &mut SpiClient<'_>,
    model: &Model,
    ctx: &Context,
    ids: &std::collections::HashMap<String, i32>,
    version: Option<i32>,
    buffer: usize,
    batch: usize,
    phases: &mut Phases,
) -> Figures {
    let rules = &model.blocking_rules;
    let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    let limits: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
    let limits_sql = format!(
        "'{{{}}}'::bigint[]",
        limits
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    // Block sizes (PostgreSQL groups them within work_mem, spilling to disk beyond it).
    let mut figures = RuleFigures::new(&names, &limits).unwrap_or_else(|e| limit_exceeded(e));
    let sizes = Cursor::open(
        client,
        "unify_score_sizes",
        "SELECT key_hash, count(*) FROM unify.block_keys GROUP BY key_hash",
        20_000,
        F,
    );
    loop {
        let rows = sizes.next(client, |row| {
            (
                row.get::<i64>(1).ok().flatten().unwrap_or_default(),
                row.get::<i64>(2).ok().flatten().unwrap_or_default() as u64,
            )
        });
        if rows.is_empty() {
            break;
        }
        for (hash, n) in rows {
            figures.add(hash, n);
        }
    }
    sizes.close(client);
    let (mut stats, largest) = figures
        .finish(model.max_candidate_pairs)
        .unwrap_or_else(|e| limit_exceeded(e));
    for (i, hash) in largest.into_iter().enumerate() {
        if let Some(h) = hash {
            stats[i].largest_skipped_key = skipped_key(client, model, i, h);
        }
    }
    phases.mark("block sizes");
    run(
        client,
        &format!("DROP TABLE IF EXISTS {VALID}, {RECORD_VALID}"),
    );
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS
             SELECT key_hash FROM unify.block_keys GROUP BY key_hash
             HAVING count(*) >= 2 AND count(*) <= ({limits_sql})[(key_hash & 255) + 1]",
            VALID.trim_start_matches("pg_temp.")
        ),
    );
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {} ON COMMIT DROP AS
             SELECT bk.record_id, array_agg(bk.key_hash ORDER BY bk.key_hash) AS hashes
             FROM unify.block_keys bk JOIN {VALID} v USING (key_hash) GROUP BY bk.record_id",
            RECORD_VALID.trim_start_matches("pg_temp.")
        ),
    );
    run(client, &format!("ANALYZE {VALID}"));
    run(client, &format!("ANALYZE {RECORD_VALID}"));
    phases.mark("valid blocks");

    // Every pair is written anew: emptied and filled without its indexes, built once after.
    run(client, "TRUNCATE unify.pairs");
    let rebuild = drop_indexes(client, "unify.pairs", true, F);
    let scorer = Scorer::new(model, ctx, ids);
    let cols = record_columns();
    let cursor = Cursor::open(
        client,
        "unify_score_blocks",
        &format!(
            "SELECT {cols}, v.key_hash, rv.hashes
             FROM {VALID} v JOIN unify.block_keys bk ON bk.key_hash = v.key_hash
             JOIN {RECORD_VALID} rv ON rv.record_id = bk.record_id
             JOIN unify.records r ON r.record_id = bk.record_id
             ORDER BY v.key_hash, bk.record_id"
        ),
        batch,
        F,
    );
    let mut pending = Pending::default();
    let mut block: Vec<(MatchRecord, Vec<i64>)> = Vec::new();
    let mut block_hash: Option<i64> = None;
    let (mut stored, mut matches, mut forced) = (0i64, 0i64, 0i64);
    loop {
        let rows = cursor.next(client, |row| {
            let record = record_from_row(row, F);
            let hash = row.get::<i64>(16).ok().flatten().unwrap_or_default();
            let hashes = row.get::<Vec<i64>>(17).ok().flatten().unwrap_or_default();
            (hash, record, hashes)
        });
        let end = rows.is_empty();
        for (hash, record, hashes) in rows {
            if block_hash != Some(hash) {
                if let Some(h) = block_hash {
                    pending.add_block(h, std::mem::take(&mut block), &mut stats);
                }
                block_hash = Some(hash);
            }
            block.push((record, hashes));
        }
        if end {
            if let Some(h) = block_hash.take() {
                pending.add_block(h, std::mem::take(&mut block), &mut stats);
            }
        }
        if end || pending.records.len() >= buffer || pending.cands.len() >= 1_000_000 {
            let rows = pair_rows(model, &scorer, &pending.records, &pending.cands);
            stored += rows.len() as i64;
            matches += rows.iter().filter(|r| r.is_match).count() as i64;
            forced += rows.iter().filter(|r| r.forced_by.is_some()).count() as i64;
            write_pairs(client, rows, version, F);
            pending = Pending::default();
        }
        if end {
            break;
        }
    }
    cursor.close(client);
    rebuild_indexes(client, rebuild, F);
    run(
        client,
        &format!("DROP TABLE IF EXISTS {VALID}, {RECORD_VALID}"),
    );
    phases.mark("score");
    let candidate_pairs =
        (!stats.is_empty()).then(|| stats.iter().map(|s| s.new_pairs as i64).sum());
    write_blocking_stats(client, &stats);
    (candidate_pairs, stored, matches, forced)
}

/// Records and candidates waiting to be scored.
#[derive(Default)]
struct Pending {
    records: Vec<MatchRecord>,
    cands: Vec<Candidate>,
}

impl Pending {
    /// One block's members (in record id order, each with its valid keys): its pairs.
    fn add_block(
        &mut self,
        hash: i64,
        members: Vec<(MatchRecord, Vec<i64>)>,
        stats: &mut [crate::model::blocking::RuleStats],
    ) {
        let rule = rule_of(hash);
        let base = self.records.len() as u32;
        let idx: Vec<u32> = (0..members.len() as u32).map(|i| base + i).collect();
        let valid: Vec<&[i64]> = members.iter().map(|(_, v)| v.as_slice()).collect();
        let ids: Vec<i64> = members.iter().map(|(r, _)| r.id).collect();
        let pairs = block_pairs(hash, &idx, &valid, &ids);
        if pairs.is_empty() {
            return;
        }
        if let Some(s) = stats.get_mut(rule) {
            s.new_pairs += pairs.len() as u64;
        }
        self.cands.extend(pairs);
        self.records.extend(members.into_iter().map(|(r, _)| r));
    }
}

/// The text of a skipped block's key (the figure names the junk value), from one of its records.
pub(super) fn skipped_key(
    client: &mut SpiClient<'_>,
    model: &Model,
    rule: usize,
    hash: i64,
) -> Option<String> {
    let table = client
        .select(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id =
                   (SELECT bk.record_id FROM unify.block_keys bk WHERE bk.key_hash = $1 LIMIT 1)"
            ),
            None,
            &[hash.into()],
        )
        .unwrap_or_else(|e| spi_failed(e, F));
    let record = table
        .into_iter()
        .next()
        .map(|row| record_from_row(&row, F))?;
    let r = &model.blocking_rules[rule];
    r.keys(&record)
        .into_iter()
        .find(|k| key_hash(rule, &r.name, k) == hash)
        .map(|k| k.replace('\u{1f}', " | "))
}

pub(super) fn limit_exceeded(e: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        e,
        None,
        "Lower that rule's max_block_size or make its key more specific (SELECT unify.get_model() -> 'blocking_rules'), or raise max_candidate_pairs.",
        F,
    )
}
