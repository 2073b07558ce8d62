//! Scoring: blocking all records, the blocking keys the change queue looks candidates up in,
//! and the scored pairs at or above the review threshold.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{json, Map, Value};

use super::super::errors::raise;
use super::super::spi::{
    drop_indexes, in_own_context, insert_arrays, rebuild_indexes, spi_failed, update_kept,
};
use super::frequencies::load_frequencies;
use super::model::current_model;
use super::records::load_all;
use super::run::{workers, Phases};
use crate::model::blocking::{candidates_of_keyed, keyed_records, Candidate, RuleStats};
use crate::model::comparison::{Context, COMPARISONS};
use crate::model::params::{log2_odds, Model};
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;
use crate::model::stream::fits_in_memory;

/// Candidate pairs of all records under the model's blocking rules, with the figures per rule,
/// and the records' key hashes they were blocked by (see `keyed_records`); raises 54000 when
/// the rules would produce more than `max_candidate_pairs`.
pub(super) fn blocked(
    records: &[MatchRecord],
    model: &Model,
    function: &'static str,
) -> (Vec<Candidate>, Vec<RuleStats>, Vec<(i64, u32)>) {
    let rules = &model.blocking_rules;
    let limit = |e: String| -> ! {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            e,
            None,
            "Lower that rule's max_block_size or make its key more specific (SELECT unify.get_model() -> 'blocking_rules'), or raise max_candidate_pairs.",
            function,
        )
    };
    if rules.len() > 32 {
        limit("at most 32 blocking rules".into());
    }
    // Each record's keys once, on all threads: the blocks and unify.block_keys come from them.
    let keyed = keyed_records(records, rules, workers());
    let (cands, stats) =
        candidates_of_keyed(records, rules, &keyed, model.max_candidate_pairs, workers())
            .unwrap_or_else(|e| limit(e));
    (cands, stats, keyed)
}

/// Blocks and scores all records with the current model: writes the pairs at or above the
/// review threshold to unify.pairs (emptied first), the per-rule blocking figures to
/// unify.blocking_stats and the blocking keys to unify.block_keys; returns the figures
/// unify.score_pairs() reports.
// pgrx reads the column names from the signature itself: no type alias for the rows.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn _score_pairs() -> TableIterator<
    'static,
    (
        name!(candidate_pairs, Option<i64>),
        name!(stored_pairs, i64),
        name!(matches, i64),
        name!(forced, i64),
        name!(model_version, Option<i32>),
    ),
> {
    const F: &str = "score_pairs";
    let mut phases = Phases::new(F);
    let version = model_version(F);
    let model = current_model(F);
    if super::distributed::on_workers() {
        // Citus with worker nodes: the blocks are scored on the workers.
        let (candidate_pairs, stored_pairs, matches, forced) =
            super::distributed::score_on_workers(&model, version, &mut phases);
        return TableIterator::once((candidate_pairs, stored_pairs, matches, forced, version));
    }
    let budget = crate::budget::kb();
    let count = Spi::get_one::<i64>("SELECT count(*) FROM unify.records")
        .unwrap_or_else(|e| spi_failed(e, F))
        .unwrap_or_default();
    if !fits_in_memory(count.max(0) as u64, budget) {
        // More records than customer_unify.batch_memory holds: block by block, their keys
        // held when they fit half of it.
        let (candidate_pairs, stored_pairs, matches, forced) =
            if super::score_held::keys_fit(&model, count.max(0) as u64, budget) {
                super::score_held::score_held_keys(
                    &model,
                    version,
                    count.max(0) as usize,
                    budget,
                    &mut phases,
                )
            } else {
                super::stream::score_streamed(&model, version, budget, &mut phases)
            };
        return TableIterator::once((candidate_pairs, stored_pairs, matches, forced, version));
    }
    let (records, ids) = load_all(F);
    let mut ctx = Context::build(&records);
    (ctx.first_name_tf, ctx.last_name_tf) =
        Spi::connect(|client| load_frequencies(client, None, F));
    phases.mark("load");
    let (cands, stats, keyed) = blocked(&records, &model, F);
    phases.mark("block");
    // NULL without blocking rules, as sum() over no rows.
    let candidate_pairs =
        (!stats.is_empty()).then(|| stats.iter().map(|s| s.new_pairs as i64).sum());
    let scorer = Scorer::new(&model, &ctx, &ids);
    let (mut stored_pairs, mut matches, mut forced) = (0i64, 0i64, 0i64);
    let mut count = |rows: &[PairRow]| {
        stored_pairs += rows.len() as i64;
        matches += rows.iter().filter(|r| r.is_match).count() as i64;
        forced += rows.iter().filter(|r| r.forced_by.is_some()).count() as i64;
    };
    Spi::connect_mut(|client| {
        // The candidates are scored a chunk at a time on the other threads, while this one
        // writes: the blocking figures and keys beside the first chunk, then each chunk's pairs
        // beside the next (on one thread, one after the other).
        let mut chunks = cands.chunks(SCORE_CHUNK);
        let (mut rows, rebuild) = pair_rows_beside(
            &model,
            &scorer,
            &records,
            chunks.next().unwrap_or_default(),
            || {
                write_blocking_stats(client, &stats);
                write_block_keys(client, &records, &model, keyed);
                // Every pair is written anew: emptied and filled without its indexes, built
                // once after (see unify._drop_indexes; readers of unify.pairs wait for the new
                // pairs meanwhile).
                client
                    .update("TRUNCATE unify.pairs", None, &[])
                    .unwrap_or_else(|e| spi_failed(e, F));
                drop_indexes(client, "unify.pairs", true, F)
            },
        );
        for chunk in chunks {
            count(&rows);
            let (next, ()) = pair_rows_beside(&model, &scorer, &records, chunk, || {
                write_pairs(client, rows, version, F)
            });
            rows = next;
        }
        count(&rows);
        write_pairs(client, rows, version, F);
        phases.mark("block_keys, score, write pairs");
        rebuild_indexes(client, rebuild, F);
    });
    phases.mark("pair indexes");
    TableIterator::once((candidate_pairs, stored_pairs, matches, forced, version))
}

/// Candidates scored at a time while the previous ones' pairs are written (16 blocks of
/// `crate::parallel`).
const SCORE_CHUNK: usize = 1 << 20;

/// The version of the model in use (NULL: the shipped default, no version stored).
pub(super) fn model_version(function: &'static str) -> Option<i32> {
    Spi::get_one::<i32>("SELECT max(m.version) FROM unify.model m")
        .unwrap_or_else(|e| spi_failed(e, function))
}

/// Stores every record's hashed blocking keys (`keyed`, see `blocked`) in unify.block_keys and
/// the rules in unify.matching_state: the change queue then finds and scores a record's
/// candidates through an index instead of reading every record.
fn write_block_keys(
    client: &mut SpiClient<'_>,
    records: &[MatchRecord],
    model: &Model,
    keyed: Vec<(i64, u32)>,
) {
    const F: &str = "score_pairs";
    // The table is emptied under an exclusive lock anyway: filling it without its indexes and
    // building them after is about three times faster than millions of index inserts (22.6 s
    // against 6.6 s for 6M keys). That takes the table's owner (the extension's, usually a
    // superuser); for another unify_admin nothing is dropped and the indexed table is filled.
    client
        .update("TRUNCATE unify.block_keys", None, &[])
        .unwrap_or_else(|e| spi_failed(e, F));
    let rebuild = drop_indexes(client, "unify.block_keys", true, F);
    // In key order (as `keyed` is sorted) the index is written page by page.
    for chunk in keyed.chunks(1_000_000) {
        let rows = chunk
            .iter()
            .map(|&(h, i)| (h, records[i as usize].id))
            .collect();
        write_block_key_rows(client, "unify.block_keys", rows);
    }
    drop(keyed);
    rebuild_indexes(client, rebuild, F);
    write_matching_state(client, model);
}

/// Adds (key hash, record id) rows to `table` (unify.block_keys, or a streamed training's temp
/// table): straight into the table when it may be (see [`insert_key_rows`]), else a million per
/// statement.
pub(super) fn write_block_key_rows(client: &mut SpiClient<'_>, table: &str, keys: Vec<(i64, i64)>) {
    if insert_key_rows(client, table, &keys) {
        return;
    }
    for chunk in keys.chunks(1_000_000) {
        let (hashes, ids): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
        insert_arrays(
            client,
            &format!("{table} (key_hash, record_id)"),
            &["bigint[]", "bigint[]"],
            || vec![hashes.into(), ids.into()],
            "score_pairs",
        );
    }
}

/// Rows per call of the table's multi-insert (COPY's batch).
const MULTI_INSERT_ROWS: usize = 1000;

/// Adds the (key hash, record id) rows to `table` through its access method's multi-insert, as
/// COPY does: a WAL record per page instead of per row, no executor per row (7.9M keys of 1M
/// records: about half the time of INSERT ... SELECT unnest). Only for a plain table of two
/// bigint columns that the caller may insert into, without indexes (dropped for the load, see
/// unify._drop_indexes), triggers, rules, row security or check constraints: nothing of the
/// executor's is skipped then but the not-null checks, which the values pass. Returns false,
/// writing nothing, for any other table (the caller inserts through SQL).
fn insert_key_rows(client: &mut SpiClient<'_>, table: &str, rows: &[(i64, i64)]) -> bool {
    let relid = client
        .select(
            "SELECT pg_catalog.to_regclass($1)::oid",
            None,
            &[table.into()],
        )
        .and_then(|t| t.first().get_one::<pg_sys::Oid>())
        .unwrap_or_else(|e| spi_failed(e, "score_pairs"));
    let Some(relid) = relid else { return false };
    // SAFETY: the relation is opened and closed here under the lock an INSERT takes; the slots
    // are made for its descriptor and dropped before it closes; the checks below keep to tables
    // where the multi-insert is all an INSERT of these rows does. PostgreSQL errors raised inside
    // come back as Rust panics through pgrx's guards, and the transaction's abort closes the
    // relation then.
    unsafe {
        if pg_sys::pg_class_aclcheck(relid, pg_sys::GetUserId(), pg_sys::ACL_INSERT as _)
            != pg_sys::AclResult::ACLCHECK_OK
        {
            return false;
        }
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        let rel = pg_sys::table_open(relid, lock);
        let form = &*(*rel).rd_rel;
        let desc = (*rel).rd_att;
        let int8 = |i: usize| {
            let att = &*(*desc).attrs.as_ptr().add(i);
            att.atttypid == pg_sys::INT8OID && !att.attisdropped && !att.atthasdef
        };
        let indexes = pg_sys::RelationGetIndexList(rel);
        let plain = form.relkind as u8 == pg_sys::RELKIND_RELATION
            && !form.relrowsecurity
            && (*rel).trigdesc.is_null()
            && (*rel).rd_rules.is_null()
            && ((*desc).constr.is_null() || (*(*desc).constr).num_check == 0)
            && (*desc).natts == 2
            && int8(0)
            && int8(1)
            && indexes.is_null()
            && (*rel)
                .rd_tableam
                .as_ref()
                .is_some_and(|am| am.multi_insert.is_some());
        pg_sys::list_free(indexes);
        if !plain {
            pg_sys::table_close(rel, lock);
            return false;
        }
        let multi_insert = (*(*rel).rd_tableam).multi_insert.expect("checked");
        let slots: Vec<*mut pg_sys::TupleTableSlot> = (0..MULTI_INSERT_ROWS.min(rows.len()))
            .map(|_| pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsVirtual))
            .collect();
        let cid = pg_sys::GetCurrentCommandId(true);
        for chunk in rows.chunks(MULTI_INSERT_ROWS) {
            for (&slot, &(hash, id)) in slots.iter().zip(chunk) {
                if let Some(clear) = (*(*slot).tts_ops).clear {
                    clear(slot);
                }
                *(*slot).tts_values = pg_sys::Datum::from(hash);
                *(*slot).tts_values.add(1) = pg_sys::Datum::from(id);
                *(*slot).tts_isnull = false;
                *(*slot).tts_isnull.add(1) = false;
                pg_sys::ExecStoreVirtualTuple(slot);
            }
            // The heap tuples it forms are freed with the context after each call.
            let mut batch = slots[..chunk.len()].to_vec();
            in_own_context(|| {
                multi_insert(
                    rel,
                    batch.as_mut_ptr(),
                    chunk.len() as i32,
                    cid,
                    0,
                    std::ptr::null_mut(),
                )
            });
        }
        for slot in slots {
            pg_sys::ExecDropSingleTupleTableSlot(slot);
        }
        pg_sys::table_close(rel, lock);
    }
    true
}

/// The rules unify.block_keys now holds the keys of (unify.matching_state).
pub(super) fn write_matching_state(client: &mut SpiClient<'_>, model: &Model) {
    let rules = serde_json::to_value(&model.blocking_rules).expect("rules serialize");
    client
        .update(
            "INSERT INTO unify.matching_state AS s (singleton, blocking_rules, keys_built_at)
             VALUES (true, $1, now())
             ON CONFLICT (singleton) DO UPDATE SET blocking_rules = excluded.blocking_rules,
                 keys_built_at = excluded.keys_built_at, scored_on = excluded.scored_on",
            None,
            &[JsonB(rules).into()],
        )
        .unwrap_or_else(|e| spi_failed(e, "score_pairs"));
}

/// unify.blocking_stats anew: the figures per rule of the last full scoring.
pub(super) fn write_blocking_stats(client: &mut SpiClient<'_>, stats: &[RuleStats]) {
    let stats_json = serde_json::to_value(stats).expect("stats serialize");
    client
        .update("DELETE FROM unify.blocking_stats", None, &[])
        .and_then(|_| {
            client.update(
                "INSERT INTO unify.blocking_stats (rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block, largest_skipped_key)
                 SELECT rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block, largest_skipped_key
                 FROM jsonb_to_recordset($1) AS s(rule text, pairs bigint, new_pairs bigint, blocks bigint,
                      skipped_blocks bigint, largest_skipped_block bigint, largest_skipped_key text)",
                None,
                &[JsonB(stats_json).into()],
            )
        })
        .unwrap_or_else(|e| spi_failed(e, "score_pairs"));
}

/// Adds scored pairs to unify.pairs as those of model `version`, in statements of up to
/// 100,000 pairs. The only writer of pairs besides the deletes of their records
/// (`_rescore`, `_forget_records`): unify.score_pairs() emptied the table, `_rescore` deleted
/// every stored pair it scores again, both under the lock every writer of pairs holds, so
/// nothing conflicts: the insert skips the unique check of ON CONFLICT (3,000 pairs: 24–30 →
/// 16–18 ms). Each pair must come once.
pub(super) fn write_pairs(
    client: &mut SpiClient<'_>,
    rows: Vec<PairRow>,
    version: Option<i32>,
    function: &'static str,
) {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<PairRow> = rows.by_ref().take(100_000).collect();
        let n = chunk.len();
        let (mut a, mut b, mut weight, mut probability, mut is_match, mut forced) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut rules, mut weights) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for row in chunk {
            a.push(row.record_a);
            b.push(row.record_b);
            weight.push(row.match_weight);
            probability.push(row.match_probability);
            is_match.push(row.is_match);
            forced.push(row.forced_by);
            // Text, split and cast by the statement: cheaper per row than jsonb datums built
            // here and an array subquery per row.
            rules.push(row.blocking_rules.join(RULE_SEPARATOR));
            weights.push(row.weights);
        }
        // The arrays' datums are freed after each statement.
        in_own_context(|| {
            update_kept(
            client,
            "INSERT INTO unify.pairs (record_a, record_b, match_weight, match_probability, is_match, forced_by,
                                      blocking_rules, weights, model_version)
             SELECT u.a, u.b, u.w, u.p, u.m, u.f, string_to_array(u.r, E'\\x1f'), u.j::jsonb, $9
             FROM unnest($1::bigint[], $2::bigint[], $3::float8[], $4::float8[], $5::boolean[], $6::text[],
                         $7::text[], $8::text[]) AS u (a, b, w, p, m, f, r, j)",
            &vec![
                a.into(),
                b.into(),
                weight.into(),
                probability.into(),
                is_match.into(),
                forced.into(),
                rules.into(),
                weights.into(),
                version.into(),
            ],
        )
        .map(|_| ())
        .unwrap_or_else(|e| spi_failed(e, function))
        });
    }
}

/// A row of unify.pairs as scoring makes it.
pub(super) struct PairRow {
    /// The smaller record id of the two.
    pub record_a: i64,
    pub record_b: i64,
    pub match_weight: f64,
    pub match_probability: f64,
    pub is_match: bool,
    /// The deterministic rule that forces the match.
    pub forced_by: Option<String>,
    /// The blocking rules that made the pair a candidate.
    pub blocking_rules: Vec<String>,
    /// log2(m/u) per comparison with evidence, and the adjustment's weight: a JSON object's
    /// text (what the insert takes; a tenth of the memory of its `Value` while the rows of a
    /// chunk wait to be written).
    pub weights: String,
}

/// Joins a pair's blocking rule names for `write_pairs` (its statement splits on E'\\x1f');
/// `Model::validate` keeps control characters out of rule names.
const RULE_SEPARATOR: &str = "\u{1f}";

/// The scored candidates at or above the review threshold (or forced), as rows of unify.pairs.
pub(super) fn pair_rows(
    model: &Model,
    scorer: &Scorer<'_>,
    records: &[MatchRecord],
    cands: &[Candidate],
) -> Vec<PairRow> {
    pair_rows_beside(model, scorer, records, cands, || ()).0
}

/// [`pair_rows`], this thread running `beside` (writing what is scored already) while the
/// other threads start scoring.
pub(super) fn pair_rows_beside<T>(
    model: &Model,
    scorer: &Scorer<'_>,
    records: &[MatchRecord],
    cands: &[Candidate],
    beside: impl FnOnce() -> T,
) -> (Vec<PairRow>, T) {
    let review_weight = log2_odds(model.review_threshold);
    // Most candidates score below the review threshold: compare and score on all threads, keep
    // the few that stay, and build their rows here.
    let (kept, t) = crate::parallel::flat_map_beside(
        cands.len(),
        workers(),
        |range| {
            cands[range]
                .iter()
                .filter_map(|c| {
                    let score = scorer.score_pair(&records[c.a as usize], &records[c.b as usize]);
                    (score.weight >= review_weight || score.forced_by.is_some())
                        .then_some((*c, score))
                })
                .collect()
        },
        beside,
    );
    let mut rows = Vec::with_capacity(kept.len());
    for (c, score) in kept {
        let (a, b) = (&records[c.a as usize], &records[c.b as usize]);
        let mut weights = Map::new();
        for comparison in COMPARISONS {
            if let Some(w) = score.weights[comparison.index()] {
                weights.insert(comparison.name().to_string(), json!(w));
            }
        }
        if let Some(adj) = score.adjustment {
            weights.insert(adj.term().into(), json!(adj.weight()));
        }
        let rules = model
            .blocking_rules
            .iter()
            .enumerate()
            .filter(|(i, _)| c.rules & (1 << i) != 0)
            .map(|(_, r)| r.name.clone())
            .collect();
        let (x, y) = if a.id < b.id { (a, b) } else { (b, a) };
        rows.push(PairRow {
            record_a: x.id,
            record_b: y.id,
            match_weight: score.weight,
            match_probability: score.probability,
            is_match: score.is_match(model),
            forced_by: score.forced_by.map(|i| model.rules[i].name.clone()),
            blocking_rules: rules,
            weights: Value::Object(weights).to_string(),
        });
    }
    (rows, t)
}
