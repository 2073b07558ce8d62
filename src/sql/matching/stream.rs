//! The whole-table commands over more records than `customer_unify.batch_memory` holds
//! (unify.score_pairs, unify.train): the records are read in streams ordered by what groups them
//! (e-mail, phone, blocking key) and never held all at once. `crate::model::stream` has the logic
//! and the proof that the candidates equal those of the run over all records held at once; this
//! is its reading and writing, shared by both commands.
//!
//! 1. The household e-mails and phones: the values of two or more records grouped with their
//!    holders' ids, judged on the holders read by id a buffer at a time.
//! 2. The blocking keys: one pass over the records, keys written in chunks (score_pairs to
//!    unify.block_keys, which the change queue reads; train to a temp table of its own, leaving
//!    unify.block_keys and unify.matching_state to score_pairs).
//! 3. The keys grouped once by key into a temp table of the blocks of two or more records
//!    (size, members' ids); the figures per rule (and the max_candidate_pairs check) summed from
//!    it in SQL, the skipped blocks' keys read.
//! 4. The blocks within their limits in the order of their smallest member, gathered into
//!    batches of a buffer's worth of distinct members; each batch's members read once by id,
//!    each record's valid keys made from it and the skipped keys, and the batch's pairs handed
//!    to the command (score_pairs scores and writes them on all threads, train draws its EM
//!    sample from them).

use std::collections::HashSet;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use super::super::errors::raise;
use super::super::spi::{
    drop_indexes, drop_temp_tables, fetch_all, in_own_context, rebuild_indexes, set_back,
    spi_failed, swap_setting, Cursor,
};
use super::frequencies::load_frequencies;
use super::records::{
    prepare_all, raw_record_from_row, record_from_row, source_ids, RECORD_COLUMNS,
};
use super::run::Phases;
use super::score::{pair_rows_beside, write_block_key_rows, write_blocking_stats, write_pairs};
use crate::model::blocking::{key_hash, key_hashes, Candidate, RuleStats};
use crate::model::comparison::{Context, JUNK_VALUE_RECORDS};
use crate::model::held_keys::ValueHolders;
use crate::model::packed_records::PackedRecords;
use crate::model::params::Model;
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;
use crate::model::stream::{buffer_records, BlockBatch, HeldValue, HolderGroups, RuleFigures};

const F: &str = "score_pairs";
/// The blocking keys score_pairs writes (and the change queue reads).
pub(super) const BLOCK_KEYS: &str = "unify.block_keys";

/// What unify.score_pairs returns: candidate pairs (NULL without rules), stored, matches, forced.
pub(super) type Figures = (Option<i64>, i64, i64, i64);

/// One streamed run: the command (for its errors), the prefix of its cursors' and temp tables'
/// names, and how much it reads and holds at a time.
#[derive(Clone, Copy)]
pub(super) struct Stream {
    pub function: &'static str,
    /// `unify_score` or `unify_train`: the blocks are grouped into the temp table
    /// `<prefix>_blocks` (dropped at the run's end, and at commit in any case).
    pub prefix: &'static str,
    /// Records buffered for the command at a time (see `buffer_records`).
    pub buffer: usize,
    /// Rows per fetch.
    pub batch: usize,
}

impl Stream {
    /// A run within `budget_kb`, buffering records in `1 / share` of it (see `buffer_records`).
    pub fn new(
        function: &'static str,
        prefix: &'static str,
        model: &Model,
        budget_kb: u64,
        share: u64,
    ) -> Self {
        let max_block = model
            .blocking_rules
            .iter()
            .map(|r| r.max_block_size)
            .max()
            .unwrap_or(2);
        let buffer = buffer_records(budget_kb, max_block, share);
        // Rows per fetch: a few MB of tuples at most, at least a hundred.
        let batch = (buffer / 4).clamp(100, 20_000);
        Self {
            function,
            prefix,
            buffer,
            batch,
        }
    }

    /// The name of this run's temp table or cursor `what`.
    pub fn name(&self, what: &str) -> String {
        format!("{}_{what}", self.prefix)
    }

    pub fn run(&self, client: &mut SpiClient<'_>, statement: &str) {
        client
            .update(statement, None, &[])
            .unwrap_or_else(|e| spi_failed(e, self.function));
    }

    pub fn cursor(&self, client: &mut SpiClient<'_>, what: &str, query: &str) -> Cursor {
        Cursor::open(client, self.name(what), query, self.batch, self.function)
    }

    /// `f` with the cursors planned for all their rows: they are read to their end (hash joins
    /// and one sort, not nested loops through indexes for the first tenth).
    pub fn with_full_cursors<T>(
        &self,
        client: &mut SpiClient<'_>,
        f: impl FnOnce(&mut SpiClient<'_>) -> T,
    ) -> T {
        let fraction = swap_setting(client, "cursor_tuple_fraction", "1", self.function);
        let out = f(client);
        set_back(client, "cursor_tuple_fraction", &fraction, self.function);
        out
    }
}

/// What scoring all records needs besides them: the source ids the model's rules name, the
/// name frequencies of the current model, and the household e-mails and phones from the
/// ordered passes over the records.
pub(super) fn scoring_context(
    client: &mut SpiClient<'_>,
    stream: &Stream,
) -> (std::collections::HashMap<String, i32>, Context) {
    let ids = source_ids(client);
    let (first_name_tf, last_name_tf) = load_frequencies(client, None, stream.function);
    let (shared_emails, shared_phones) = household_values(client, stream);
    let ctx = Context {
        first_name_tf,
        last_name_tf,
        shared_emails,
        shared_phones,
    };
    (ids, ctx)
}

/// Scores all records with `model` within `budget_kb`, as `_score_pairs` does with all of them
/// held at once.
pub(super) fn score_streamed(
    model: &Model,
    version: Option<i32>,
    budget_kb: u64,
    phases: &mut Phases,
) -> Figures {
    let stream = Stream::new(F, "unify_score", model, budget_kb, 2);
    Spi::connect_mut(|client| {
        stream.with_full_cursors(client, |client| {
            let (ids, ctx) = scoring_context(client, &stream);
            phases.mark("households");
            write_block_keys(client, &stream, model);
            phases.mark("block_keys");
            score_blocks(client, &stream, model, &ctx, &ids, version, phases)
        })
    })
}

/// unify.block_keys and unify.matching_state anew, from one pass over the records.
pub(super) fn write_block_keys(client: &mut SpiClient<'_>, stream: &Stream, model: &Model) {
    stream.run(client, "TRUNCATE unify.block_keys");
    let rebuild = drop_indexes(client, BLOCK_KEYS, true, stream.function);
    let mut keys = KeyWriter::new(BLOCK_KEYS);
    for_each_record(client, stream, |client, records| {
        keys.add(client, model, records)
    });
    keys.finish(client);
    rebuild_indexes(client, rebuild, stream.function);
    super::score::write_matching_state(client, model);
}

/// The e-mails and phones held by clearly different people (`comparison::Context`): the values
/// of two or more records grouped in SQL with their holders' ids (narrow rows, no sort of whole
/// records), judged a buffer of holders at a time on the holders read by id (see
/// `crate::model::stream::HolderGroups`; values of more than `JUNK_VALUE_RECORDS` holders
/// without reading them).
pub(super) fn household_values(
    client: &mut SpiClient<'_>,
    stream: &Stream,
) -> (HashSet<String>, HashSet<String>) {
    let f = stream.function;
    // Byte equality ("C"), whatever the database's collation; a record's phone and mobile
    // once when they are equal.
    let cursor = stream.cursor(
        client,
        "values",
        "SELECT kind, value, array_agg(record_id) FROM (
           SELECT 0 AS kind, email_key COLLATE \"C\" AS value, record_id FROM unify.records
           WHERE email_key IS NOT NULL
           UNION ALL
           SELECT 1, phone COLLATE \"C\", record_id FROM unify.records WHERE phone IS NOT NULL
           UNION ALL
           SELECT 1, mobile COLLATE \"C\", record_id FROM unify.records
           WHERE mobile IS NOT NULL AND mobile IS DISTINCT FROM phone) v
         GROUP BY kind, value HAVING count(*) >= 2",
    );
    let mut groups = HolderGroups::default();
    let judge =
        |client: &mut SpiClient<'_>, groups: &mut HolderGroups| judge_holders(client, f, groups);
    loop {
        let rows = cursor.next(client, |row| {
            (
                row.get::<i32>(1).ok().flatten().unwrap_or_default(),
                row.get::<String>(2).ok().flatten().unwrap_or_default(),
                row.get::<Vec<i64>>(3).ok().flatten().unwrap_or_default(),
            )
        });
        if rows.is_empty() {
            break;
        }
        for (kind, value, ids) in rows {
            let kind = if kind == 0 {
                HeldValue::Email
            } else {
                HeldValue::Phone
            };
            groups.push(kind, value, ids);
            if groups.members() >= stream.buffer {
                judge(client, &mut groups);
            }
        }
    }
    judge(client, &mut groups);
    cursor.close(client);
    groups.finish()
}

/// Judges the values `groups` holds on their holders, read by id (nothing when none wait).
fn judge_holders(client: &mut SpiClient<'_>, f: &'static str, groups: &mut HolderGroups) {
    if groups.members() == 0 {
        return;
    }
    // The ids' array freed after the statement (see `in_own_context`).
    let mut holders = in_own_context(|| {
        fetch_all(
            client,
            &format!("SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id = ANY($1)"),
            vec![groups.ids().into()],
            f,
            |row| record_from_row(row, f),
        )
    });
    holders.sort_unstable_by_key(|r| r.id);
    groups.judge(&holders);
}

/// [`household_values`] from the values the records held as they passed by (a streamed
/// training or scoring collects them in its one pass): the values of two or more holders grouped
/// by hash here instead of in SQL, judged a buffer of holders at a time on the holders read by
/// id; a hash of more than `JUNK_VALUE_RECORDS` holders is told apart on its holders' values
/// alone. With `packed` (all records, with their places by id) nothing is read again.
pub(super) fn household_values_of(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    held: ValueHolders,
    packed: Option<(&PackedRecords, &[(i64, u32)])>,
) -> (HashSet<String>, HashSet<String>) {
    let f = stream.function;
    if let Some((packed, by_id)) = packed {
        let unpack = packed_holders(packed, by_id, Some(super::run::workers()));
        return household_values_read(stream.buffer, held, unpack);
    }
    // The ids' arrays freed after each statement (see `in_own_context`): they would stay in the
    // connection's context to the end of the command otherwise.
    household_values_read(stream.buffer, held, |ids, values_only| {
        in_own_context(|| {
            if !values_only {
                return fetch_all(
                    client,
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id = ANY($1)"
                    ),
                    vec![ids.into()],
                    f,
                    |row| record_from_row(row, f),
                );
            }
            fetch_all(
                client,
                "SELECT record_id, email_key, phone, mobile FROM unify.records
             WHERE record_id = ANY($1)",
                vec![ids.into()],
                f,
                |row| {
                    let text = |i: usize| row.get::<String>(i).unwrap_or_else(|e| spi_failed(e, f));
                    MatchRecord {
                        id: row.get::<i64>(1).ok().flatten().unwrap_or_default(),
                        email_key: text(2),
                        phones: [text(3), text(4)].into_iter().flatten().collect(),
                        ..Default::default()
                    }
                    .prepare()
                },
            )
        })
    })
}

/// A reader for [`household_values_read`] over records all packed (`by_id`: their places by
/// id): the holders of the ids found, unpacked (on `workers`, or on the calling thread), whole
/// also where their values alone are asked for (the same values).
pub(super) fn packed_holders<'a>(
    packed: &'a PackedRecords,
    by_id: &'a [(i64, u32)],
    workers: Option<crate::parallel::Workers>,
) -> impl FnMut(Vec<i64>, bool) -> Vec<MatchRecord> + 'a {
    move |ids, _| {
        let places = PackedRecords::places_of(by_id, &ids);
        match workers {
            Some(w) => {
                let places: Vec<u32> = places.collect();
                crate::parallel::map(&places, w, |&p| packed.get(p as usize))
            }
            None => places.map(|p| packed.get(p as usize)).collect(),
        }
    }
}

/// [`household_values_of`] with the holders from `read` (ids; whether only their id, e-mail
/// key and phones are needed): prepared records, in any order, those found of the ids; judged
/// `buffer` holders at a time. Calls nothing of PostgreSQL's itself.
pub(super) fn household_values_read(
    buffer: usize,
    held: ValueHolders,
    mut read: impl FnMut(Vec<i64>, bool) -> Vec<MatchRecord>,
) -> (HashSet<String>, HashSet<String>) {
    let mut groups = HolderGroups::default();
    let judge = |groups: &mut HolderGroups,
                 read: &mut dyn FnMut(Vec<i64>, bool) -> Vec<MatchRecord>| {
        if groups.members() == 0 {
            return;
        }
        let mut holders = read(groups.ids(), false);
        holders.sort_unstable_by_key(|r| r.id);
        groups.judge(&holders);
    };
    for (kind, hash, ids) in held.groups() {
        if ids.len() > JUNK_VALUE_RECORDS {
            let values = read(ids, true);
            groups.push_hash_many(kind, hash, &values);
        } else {
            groups.push_hash(kind, hash, ids);
        }
        if groups.members() >= buffer {
            judge(&mut groups, &mut read);
        }
    }
    judge(&mut groups, &mut read);
    groups.finish()
}

/// One pass over all records, `batch` prepared records at a time through `each`.
pub(super) fn for_each_record(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    mut each: impl FnMut(&mut SpiClient<'_>, &[MatchRecord]),
) {
    let f = stream.function;
    let cursor = stream.cursor(
        client,
        "records",
        &format!("SELECT {RECORD_COLUMNS} FROM unify.records r"),
    );
    loop {
        let raw = cursor.next(client, |row| raw_record_from_row(row, f));
        if raw.is_empty() {
            break;
        }
        each(client, &prepare_all(raw));
    }
    cursor.close(client);
}

/// The blocking keys of records passing by, written to `table` in sorted chunks of 200,000.
pub(super) struct KeyWriter<'a> {
    table: &'a str,
    keys: Vec<(i64, i64)>,
}

impl<'a> KeyWriter<'a> {
    pub fn new(table: &'a str) -> Self {
        Self {
            table,
            keys: Vec::new(),
        }
    }

    pub fn add(&mut self, client: &mut SpiClient<'_>, model: &Model, records: &[MatchRecord]) {
        // On all threads: making the keys is most of a pass that only reads and writes.
        let keys = crate::parallel::map_owned(
            records.iter().collect(),
            super::run::workers(),
            |r: &MatchRecord| key_hashes(&model.blocking_rules, r),
        );
        for (r, ks) in records.iter().zip(keys) {
            self.keys.extend(ks.into_iter().map(|(_, h)| (h, r.id)));
        }
        if self.keys.len() >= 200_000 {
            self.flush(client);
        }
    }

    fn flush(&mut self, client: &mut SpiClient<'_>) {
        self.keys.sort_unstable();
        write_block_key_rows(client, self.table, std::mem::take(&mut self.keys));
    }

    /// Writes the keys left.
    pub fn finish(mut self, client: &mut SpiClient<'_>) {
        self.flush(client);
    }
}

/// `f` with PostgreSQL's generic plan for the statements with parameters it runs: a lookup of
/// many ids (`record_id = ANY($1)`, a batch's members) planned for its array picks a sequential
/// scan of all records, 1.4 s against 0.3 s through the primary key for 131,000 of 1M records,
/// and planning the array takes a tenth of a second on top (the plan cache keeps to such custom
/// plans for a statement's first five runs).
pub(super) fn with_generic_plan<T>(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    f: impl FnOnce(&mut SpiClient<'_>) -> T,
) -> T {
    // Both results freed and the caller's memory context current again: this runs once per
    // batch, inside the batch's own context (see `in_same_context`).
    let mode = swap_setting(
        client,
        "plan_cache_mode",
        "force_generic_plan",
        stream.function,
    );
    let out = f(client);
    set_back(client, "plan_cache_mode", &mode, stream.function);
    out
}

/// The keys of the blocks over their rule's size limit (see `crate::model::stream::usable_keys`).
pub(super) type Skipped = HashSet<i64>;

/// The rules' size limits as an SQL array, indexed by a key hash's rule + 1.
fn limits_sql(model: &Model) -> String {
    format!(
        "'{{{}}}'::bigint[]",
        model
            .blocking_rules
            .iter()
            .map(|r| r.max_block_size.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Step 3: the figures per rule from the sizes of the blocks of the keys in `keys` (raising
/// 54000 past max_candidate_pairs, as the held path does), the largest skipped keys named, and
/// the skipped keys (see [`block_figures`]; this one keeps nothing for [`stream_blocks`]).
pub(super) fn rule_figures(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    model: &Model,
    keys: &str,
) -> (Vec<RuleStats>, Skipped) {
    let out = block_figures(client, stream, model, keys);
    drop_temp_tables(
        client,
        &[&format!("pg_temp.{}", stream.name("blocks"))],
        stream.function,
    );
    out
}

/// [`rule_figures`], the blocks of at least two records kept for [`stream_blocks`] in a temp
/// table `<prefix>_blocks` (key hash, size, members' ids): the keys are grouped once, sorted by
/// key (no hash table of every key), for the figures and the blocks both. The valid blocks are
/// summed per rule in SQL: one row per rule and per skipped block comes back, not one per
/// block.
pub(super) fn block_figures(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    model: &Model,
    keys: &str,
) -> (Vec<RuleStats>, Skipped) {
    let rules = &model.blocking_rules;
    let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    let limits: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
    let f = stream.function;
    let mut figures = RuleFigures::new(&names, &limits).unwrap_or_else(|e| limit_exceeded(e, f));
    let blocks = stream.name("blocks");
    drop_temp_tables(client, &[&format!("pg_temp.{blocks}")], stream.function);
    // PostgreSQL sorts the keys within work_mem, spilling to disk beyond it.
    stream.run(
        client,
        &format!(
            "CREATE TEMP TABLE {blocks} ON COMMIT DROP AS
             SELECT key_hash, count(*) AS n, array_agg(record_id) AS members
             FROM (SELECT key_hash, record_id FROM {keys} ORDER BY key_hash, record_id) k
             GROUP BY key_hash HAVING count(*) >= 2"
        ),
    );
    let limits_sql = limits_sql(model);
    let rows = fetch_all(
        client,
        &format!(
            "WITH s AS (SELECT key_hash, n, ({limits_sql})[(key_hash & 255) + 1] AS lim
                        FROM pg_temp.{blocks})
             SELECT (key_hash & 255)::int, NULL::bigint, count(*), sum(n * (n - 1) / 2)::bigint
             FROM s WHERE n <= lim GROUP BY 1
             UNION ALL
             SELECT (key_hash & 255)::int, key_hash, n, NULL FROM s WHERE n > lim"
        ),
        vec![],
        f,
        |row| {
            (
                row.get::<i32>(1).ok().flatten().unwrap_or_default() as usize,
                row.get::<i64>(2).ok().flatten(),
                row.get::<i64>(3).ok().flatten().unwrap_or_default() as u64,
                row.get::<i64>(4).ok().flatten().unwrap_or_default() as u64,
            )
        },
    );
    let mut skipped = Skipped::new();
    for (rule, hash, n, pairs) in rows {
        match hash {
            Some(h) => {
                skipped.insert(h);
                figures.add(h, n);
            }
            None => figures.add_valid(rule, n, pairs),
        }
    }
    let (mut stats, largest) = figures
        .finish(model.max_candidate_pairs)
        .unwrap_or_else(|e| limit_exceeded(e, f));
    for (i, hash) in largest.into_iter().enumerate() {
        if let Some(h) = hash {
            stats[i].largest_skipped_key = skipped_key(client, model, keys, i, h, f);
        }
    }
    (stats, skipped)
}

/// Step 4: the candidates of the valid blocks of the keys in `keys` (grouped by
/// [`block_figures`], whose table this drops), handed to `each` with their records (the
/// candidates index them), a batch of blocks at a time: blocks are gathered until their
/// distinct members fill `stream.buffer` or they may hold a million pairs, then the members are
/// read once by id and the batch's pairs made (`crate::model::stream::BlockBatch`), each
/// record's valid keys from the record and the skipped keys. The pairs per rule are counted
/// into `stats`.
pub(super) fn stream_blocks(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    model: &Model,
    skipped: &Skipped,
    stats: &mut [RuleStats],
    mut each: impl FnMut(&mut SpiClient<'_>, &[MatchRecord], &[Candidate]),
) {
    let limits_sql = limits_sql(model);
    let f = stream.function;
    let blocks = stream.name("blocks");
    // In the order of their smallest member, so that the several blocks of one person's records
    // (an e-mail, a phone, a name at an address) mostly fall into one batch and their records
    // are read once, not once per block.
    let cursor = stream.cursor(
        client,
        "block_members",
        &format!(
            "SELECT key_hash, members FROM pg_temp.{blocks}
             WHERE n <= ({limits_sql})[(key_hash & 255) + 1]
             ORDER BY members[1], key_hash"
        ),
    );
    let workers = super::run::workers();
    let mut batch = BlockBatch::default();
    let mut flush = |client: &mut SpiClient<'_>, batch: BlockBatch, stats: &mut [RuleStats]| {
        if batch.is_empty() {
            return;
        }
        // By primary key: a few thousand of many records. The ids' array freed after the
        // statement (see `in_own_context`): kept in the connection's context, a batch's array
        // each stayed to the end (52 MB at 1M records within 64MB, twice that at 2M).
        let raw = in_own_context(|| {
            with_generic_plan(client, stream, |client| {
                fetch_all(
                    client,
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id = ANY($1)"
                    ),
                    vec![batch.ids().into()],
                    f,
                    |row| raw_record_from_row(row, f),
                )
            })
        });
        let mut records = prepare_all(raw);
        records.sort_unstable_by_key(|r| r.id);
        let cands = batch.pairs(&records, &model.blocking_rules, skipped, stats, workers);
        for chunk in cands.chunks(1_000_000) {
            each(client, &records, chunk);
        }
    };
    loop {
        let rows = cursor.next(client, |row| {
            (
                row.get::<i64>(1).ok().flatten().unwrap_or_default(),
                row.get::<Vec<i64>>(2).ok().flatten().unwrap_or_default(),
            )
        });
        if rows.is_empty() {
            break;
        }
        for (hash, members) in rows {
            batch.push(hash, members);
            if batch.members() >= stream.buffer || batch.pairs_bound >= 1_000_000 {
                flush(client, std::mem::take(&mut batch), stats);
            }
        }
    }
    flush(client, batch, stats);
    cursor.close(client);
    drop_temp_tables(client, &[&format!("pg_temp.{blocks}")], stream.function);
}

/// Steps 3 and 4 of score_pairs: the figures, the blocks within their limits, and the scored
/// pairs.
#[allow(clippy::too_many_arguments)]
fn score_blocks(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    model: &Model,
    ctx: &Context,
    ids: &std::collections::HashMap<String, i32>,
    version: Option<i32>,
    phases: &mut Phases,
) -> Figures {
    let (mut stats, skipped) = block_figures(client, stream, model, BLOCK_KEYS);
    phases.mark("block sizes");
    // Every pair is written anew: emptied and filled without its indexes, built once after.
    stream.run(client, "TRUNCATE unify.pairs");
    let rebuild = drop_indexes(client, "unify.pairs", true, F);
    let scorer = Scorer::new(model, ctx, ids);
    let (mut stored, mut matches, mut forced) = (0i64, 0i64, 0i64);
    let mut scored: Vec<super::score::PairRow> = Vec::new();
    stream_blocks(
        client,
        stream,
        model,
        &skipped,
        &mut stats,
        |client, records, cands| {
            // This chunk is scored on the other threads while this one writes the last one's
            // pairs (as the held path does).
            let (rows, ()) = pair_rows_beside(model, &scorer, records, cands, || {
                write_pairs(client, std::mem::take(&mut scored), version, F)
            });
            stored += rows.len() as i64;
            matches += rows.iter().filter(|r| r.is_match).count() as i64;
            forced += rows.iter().filter(|r| r.forced_by.is_some()).count() as i64;
            scored = rows;
        },
    );
    write_pairs(client, scored, version, F);
    phases.mark("score");
    rebuild_indexes(client, rebuild, F);
    phases.mark("pair indexes");
    let candidate_pairs =
        (!stats.is_empty()).then(|| stats.iter().map(|s| s.new_pairs as i64).sum());
    write_blocking_stats(client, &stats);
    (candidate_pairs, stored, matches, forced)
}

/// The text of a skipped block's key (the figure names the junk value), from one of its records.
pub(super) fn skipped_key(
    client: &mut SpiClient<'_>,
    model: &Model,
    keys: &str,
    rule: usize,
    hash: i64,
    function: &'static str,
) -> Option<String> {
    let table = client
        .select(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id =
                   (SELECT bk.record_id FROM {keys} bk WHERE bk.key_hash = $1 LIMIT 1)"
            ),
            None,
            &[hash.into()],
        )
        .unwrap_or_else(|e| spi_failed(e, function));
    let record = table
        .into_iter()
        .next()
        .map(|row| record_from_row(&row, function))?;
    let r = &model.blocking_rules[rule];
    r.keys(&record)
        .into_iter()
        .find(|k| key_hash(rule, &r.name, k) == hash)
        .map(|k| k.replace('\u{1f}', " | "))
}

pub(super) fn limit_exceeded(e: String, function: &'static str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        e,
        None,
        "Lower that rule's max_block_size or make its key more specific (SELECT unify.get_model() -> 'blocking_rules'), or raise max_candidate_pairs.",
        function,
    )
}
