//! The SQL layer over `crate::model`: training, scoring and explanation. Records are read
//! through SPI once per call; the work over pairs happens in Rust, never one SQL call per pair.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{json, Map, Value};

use super::errors::raise;
use super::spi::{drop_indexes, fetch_all, rebuild_indexes, spi_failed, update_kept, Args};
use crate::model::blocking::{
    block_change, candidates, candidates_among, candidates_of, key_hashes, pairs_within, read_cap,
    rule_of, shared_hashes, BlockingRule, Candidate, RuleStats,
};
use crate::model::comparison::{household_flips, Context, COMPARISONS, JUNK_VALUE_RECORDS};
use crate::model::params::{log2_odds, Model};
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;
use crate::model::train::{train, TrainOptions};
use crate::normalize::date::iso_date_from_pg_days;
use crate::stopwatch::Stopwatch;

const RECORD_COLUMNS: &str =
    "record_id, source_id, first_name, last_name, email, email_key, phone, mobile, \
     street, house_number, postcode, city, birth_date, external_id, customer_number";

/// Records matching `filter` (a WHERE clause over unify.records r), read in batches.
fn load_records(
    client: &SpiClient<'_>,
    filter: &str,
    args: Args<'_>,
    function: &'static str,
) -> Vec<MatchRecord> {
    let query = format!("SELECT {RECORD_COLUMNS} FROM unify.records r {filter} ORDER BY record_id");
    fetch_all(client, &query, args, function, |row| {
        record_from_row(row, function)
    })
}

/// A row of [`RECORD_COLUMNS`] as a prepared record.
fn record_from_row(row: &pgrx::spi::SpiHeapTupleData, function: &'static str) -> MatchRecord {
    let text = |i: usize| {
        row.get::<String>(i)
            .unwrap_or_else(|e| spi_failed(e, function))
    };
    let phones = [text(7), text(8)].into_iter().flatten().collect();
    MatchRecord {
        id: row.get::<i64>(1).ok().flatten().unwrap_or_default(),
        source_id: row.get::<i32>(2).ok().flatten().unwrap_or_default(),
        first_name: text(3),
        last_name: text(4),
        email: text(5),
        email_key: text(6),
        phones,
        street: text(9),
        house_number: text(10),
        postcode: text(11),
        city: text(12),
        birth_date: row
            .get::<pgrx::datum::Date>(13)
            .unwrap_or_else(|e| spi_failed(e, function))
            .filter(pgrx::datum::Date::is_finite)
            .and_then(|d| iso_date_from_pg_days(d.to_pg_epoch_days())),
        external_id: text(14),
        customer_number: text(15),
        ..Default::default()
    }
    .prepare()
}

/// The records holding the e-mails and phones given as (value, cap), each read up to its cap
/// per column, each record once (ordered by id). Read straight through the value indexes.
fn load_value_holders(
    client: &SpiClient<'_>,
    emails: Vec<(String, i32)>,
    phones: Vec<(String, i32)>,
    function: &'static str,
) -> Vec<MatchRecord> {
    let (email_values, email_caps): (Vec<String>, Vec<i32>) = emails.into_iter().unzip();
    let (phone_values, phone_caps): (Vec<String>, Vec<i32>) = phones.into_iter().unzip();
    let arm = |column: &str, values: &str, caps: &str| {
        format!(
            "SELECT x.* FROM unnest({values}::text[], {caps}::int[]) AS v (value, cap),
               LATERAL (SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.{column} = v.value LIMIT v.cap) x"
        )
    };
    let query = format!(
        "{} UNION ALL {} UNION ALL {}",
        arm("email_key", "$1", "$2"),
        arm("phone", "$3", "$4"),
        arm("mobile", "$3", "$4")
    );
    let mut records = fetch_all(
        client,
        &query,
        vec![
            email_values.into(),
            email_caps.into(),
            phone_values.into(),
            phone_caps.into(),
        ],
        function,
        |row| record_from_row(row, function),
    );
    records.sort_unstable_by_key(|r| r.id);
    records.dedup_by_key(|r| r.id);
    records
}

/// A changed record as it was before its batch: the fields that decide whether its e-mail and
/// phones are a household's (`unify.process_queue` passes them as jsonb).
#[derive(serde::Deserialize)]
struct RecordBefore {
    record_id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    birth_date: Option<String>,
    email_key: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
}

impl From<RecordBefore> for MatchRecord {
    fn from(r: RecordBefore) -> Self {
        MatchRecord {
            id: r.record_id,
            first_name: r.first_name,
            last_name: r.last_name,
            birth_date: r.birth_date,
            email_key: r.email_key,
            phones: [r.phone, r.mobile].into_iter().flatten().collect(),
            ..Default::default()
        }
        .prepare()
    }
}

/// All records and the source ids by name, for the whole-table commands.
fn load_all(function: &'static str) -> (Vec<MatchRecord>, HashMap<String, i32>) {
    Spi::connect(|client| {
        (
            load_records(client, "", vec![], function),
            source_ids(client),
        )
    })
}

fn source_ids(client: &SpiClient<'_>) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    let table = client
        .select("SELECT name, source_id FROM unify.sources", None, &[])
        .unwrap_or_else(|e| spi_failed(e, "source_ids"));
    for row in table {
        if let (Ok(Some(name)), Ok(Some(id))) = (row.get::<String>(1), row.get::<i32>(2)) {
            out.insert(name, id);
        }
    }
    out
}

/// Parses and validates a model; raises 22023 naming the problem otherwise.
fn parse_model(value: Value, function: &'static str) -> Model {
    serde_json::from_value::<Model>(value)
        .map_err(|e| e.to_string())
        .and_then(|model| model.validate().map(|()| model))
        .unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid model: {e}"),
                None,
                "Start from SELECT unify.get_model() (or unify.default_model()) and change values in it.",
                function,
            )
        })
}

fn current_model(function: &'static str) -> Model {
    let json = Spi::get_one::<JsonB>("SELECT unify.get_model()")
        .unwrap_or_else(|e| spi_failed(e, function))
        .map_or(Value::Null, |j| j.0);
    parse_model(json, function)
}

fn blocked(
    records: &[MatchRecord],
    model: &Model,
    function: &'static str,
) -> (Vec<Candidate>, Vec<RuleStats>) {
    candidates(
        records,
        &model.blocking_rules,
        model.max_candidate_pairs,
        threads(),
    )
    .unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            e,
            None,
            "Lower that rule's max_block_size or make its key more specific (SELECT unify.get_model() -> 'blocking_rules'), or raise max_candidate_pairs.",
            function,
        )
    })
}

/// Threads this backend may compare and score on (see `crate::parallel::threads_for`).
fn threads() -> usize {
    crate::parallel::threads_for(unsafe { pg_sys::max_parallel_workers_per_gather })
}

/// Those threads, with the backend's thread checking for a cancel (statement_timeout,
/// pg_cancel_backend) between its blocks and the others stopping when one is pending (the hook
/// of `crate::interrupt`, installed by `_PG_init`).
fn workers() -> crate::parallel::Workers {
    crate::parallel::Workers::from(threads())
}

/// Seconds per phase of a long command, logged at DEBUG1 when it ends
/// (`SET client_min_messages = debug1` shows where a slow run spends its time).
struct Phases {
    command: &'static str,
    watch: Stopwatch,
}

impl Phases {
    fn new(command: &'static str) -> Self {
        Self {
            command,
            watch: Stopwatch::default(),
        }
    }

    fn mark(&mut self, phase: &'static str) {
        self.watch.mark(phase);
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        pgrx::debug1!("{}: {}", self.command, self.watch.summary());
    }
}

/// The shipped model for German customer data (untrained u values).
#[pg_extern(immutable, parallel_safe)]
fn default_model() -> JsonB {
    JsonB(serde_json::to_value(Model::default_german()).expect("model serializes"))
}

/// The model with defaults filled in, or an error 22023 saying what is wrong.
#[pg_extern(immutable, strict, parallel_safe)]
fn validate_model(model: JsonB) -> JsonB {
    let model = parse_model(model.0, "validate_model");
    JsonB(serde_json::to_value(model).expect("model serializes"))
}

/// Trains the current model on unify.records: u from random pairs, m by EM per blocking rule,
/// the prior from the expected matches. Returns {"model": …, "report": …, "blocking": […]}.
#[pg_extern(volatile, strict)]
fn _train(sample_pairs: i32, max_iterations: i32) -> JsonB {
    if sample_pairs < 1000 || max_iterations < 1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("sample_pairs must be at least 1000 and max_iterations at least 1, not {sample_pairs} and {max_iterations}"),
            None,
            "The defaults (1000000 pairs, 100 iterations) suit up to a few million records.",
            "train",
        );
    }
    let mut phases = Phases::new("train");
    let mut model = current_model("train");
    let (records, ids) = load_all("train");
    phases.mark("load");
    if records.len() < 2 {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("unify.train needs records to learn from; unify.records holds {}", records.len()),
            None,
            "Register sources with unify.add_source() and load them with SELECT * FROM unify.sync().",
            "train",
        );
    }
    let ctx = Context::build(&records);
    let (cands, stats) = blocked(&records, &model, "train");
    phases.mark("block");
    let opts = TrainOptions {
        sample_pairs: sample_pairs as usize,
        max_iterations: max_iterations as usize,
        workers: workers(),
        ..Default::default()
    };
    let report = train(&records, &ctx, &cands, &mut model, &ids, &opts);
    phases.mark("estimate");
    // The name frequencies become part of the model version: scoring then gives a pair the same
    // weight whether it is scored in a full run or as a change (and later sign-ups of other
    // Müllers do not move it).
    let frequencies = json!({"first_name": ctx.first_name_tf, "last_name": ctx.last_name_tf});
    JsonB(json!({"model": model, "report": report, "blocking": stats, "frequencies": frequencies}))
}

/// Blocks and scores all records with the current model; returns the pairs at or above the
/// review threshold and writes the per-rule blocking figures to unify.blocking_stats.
// pgrx reads the column names from the signature itself: no type alias for the rows.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn _score_pairs() -> TableIterator<
    'static,
    (
        name!(record_a, i64),
        name!(record_b, i64),
        name!(match_weight, f64),
        name!(match_probability, f64),
        name!(is_match, bool),
        name!(forced_by, Option<String>),
        name!(blocking_rules, Vec<String>),
        name!(weights, JsonB),
    ),
> {
    let mut phases = Phases::new("score_pairs");
    let model = current_model("score_pairs");
    let (records, ids) = load_all("score_pairs");
    let mut ctx = Context::build(&records);
    (ctx.first_name_tf, ctx.last_name_tf) =
        Spi::connect(|client| load_frequencies(client, None, "score_pairs"));
    phases.mark("load");
    let (cands, stats) = blocked(&records, &model, "score_pairs");
    phases.mark("block");
    let stats_json = serde_json::to_value(&stats).expect("stats serialize");
    Spi::connect_mut(|client| {
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
    });
    write_block_keys(&records, &model);
    phases.mark("block_keys");
    let scorer = Scorer::new(&model, &ctx, &ids);
    let rows = pair_rows(&model, &scorer, &records, &cands);
    phases.mark("score");
    TableIterator::new(rows)
}

/// Stores every record's hashed blocking keys in unify.block_keys and the rules in
/// unify.matching_state: the change queue then finds and scores a record's candidates through
/// an index instead of reading every record.
fn write_block_keys(records: &[MatchRecord], model: &Model) {
    const F: &str = "score_pairs";
    let mut keys: Vec<(i64, i64)> = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            // Phonetic keys of a million records take seconds: stop on a cancel.
            crate::interrupt::check_every(i, 1 << 14);
            key_hashes(&model.blocking_rules, r)
                .into_iter()
                .map(move |(_, h)| (h, r.id))
        })
        .collect();
    // In key order the index is written page by page.
    keys.sort_unstable();
    let rules = serde_json::to_value(&model.blocking_rules).expect("rules serialize");
    Spi::connect_mut(|client| {
        // The table is emptied under an exclusive lock anyway: filling it without its indexes
        // and building them after is about three times faster than millions of index inserts
        // (22.6 s against 6.6 s for 6M keys). That takes the table's owner (the extension's,
        // usually a superuser); for another unify_admin nothing is dropped and the indexed
        // table is filled.
        client
            .update("TRUNCATE unify.block_keys", None, &[])
            .unwrap_or_else(|e| spi_failed(e, F));
        let rebuild = drop_indexes(client, "unify.block_keys", true, F);
        for chunk in keys.chunks(1_000_000) {
            let (hashes, ids): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
            client
                .update(
                    "INSERT INTO unify.block_keys (key_hash, record_id)
                     SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                    None,
                    &[hashes.into(), ids.into()],
                )
                .unwrap_or_else(|e| spi_failed(e, F));
        }
        rebuild_indexes(client, rebuild, F);
        client
            .update(
                "INSERT INTO unify.matching_state AS s (singleton, blocking_rules, keys_built_at)
                 VALUES (true, $1, now())
                 ON CONFLICT (singleton) DO UPDATE SET blocking_rules = excluded.blocking_rules,
                     keys_built_at = excluded.keys_built_at",
                None,
                &[JsonB(rules).into()],
            )
            .unwrap_or_else(|e| spi_failed(e, F));
    });
}

type Frequencies = (HashMap<String, f64>, HashMap<String, f64>);
/// A model version: its number and the xmin of its unify.model row.
type ModelVersionKey = (i32, String);

thread_local! {
    /// The name frequencies of the model in use, by (version, xmin of its unify.model row).
    /// A queue batch asks for those of some 10,000 names, most of the table, every time; a
    /// version's frequencies are written with its row and never change, and a version number
    /// is not reused (identity), so the ones read once stay right for the life of the backend.
    static FREQUENCY_MEMO: RefCell<Option<(ModelVersionKey, Rc<Frequencies>)>> =
        const { RefCell::new(None) };
}

/// [`load_frequencies`] of all names, read once per model version and backend.
fn model_frequencies(client: &SpiClient<'_>, function: &'static str) -> Rc<Frequencies> {
    let newest = client
        .select(
            "SELECT m.version, m.xmin::text FROM unify.model m ORDER BY m.version DESC LIMIT 1",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e, function));
    let key = if newest.is_empty() {
        None
    } else {
        let row = newest.first();
        Some((
            row.get::<i32>(1)
                .unwrap_or_else(|e| spi_failed(e, function))
                .unwrap_or_default(),
            row.get::<String>(2)
                .unwrap_or_else(|e| spi_failed(e, function))
                .unwrap_or_default(),
        ))
    };
    // The shipped default model (no version stored) adjusts nothing for frequency.
    let Some(key) = key else {
        return Rc::new((HashMap::new(), HashMap::new()));
    };
    if let Some(kept) = FREQUENCY_MEMO.with(|m| {
        m.borrow()
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, f)| f.clone())
    }) {
        return kept;
    }
    let loaded = Rc::new(load_frequencies(client, None, function));
    FREQUENCY_MEMO.with(|m| *m.borrow_mut() = Some((key, loaded.clone())));
    loaded
}

/// The name frequencies of the model in use (unify.name_frequencies, written by train() from
/// the records it learned on): all of them, or those of `names` (first names, last names). A
/// model without them (the shipped default) adjusts nothing for frequency.
fn load_frequencies(
    client: &SpiClient<'_>,
    names: Option<Vec<String>>,
    function: &'static str,
) -> Frequencies {
    let base = "SELECT f.field = 'first_name', f.value, f.frequency FROM unify.name_frequencies f
                WHERE f.model_version = (SELECT max(m.version) FROM unify.model m)";
    // A name's frequency in both fields: the scorer weighs a surname held as a first name
    // ("Schneider Johanna") by the larger of the two.
    let rows: Vec<(bool, String, f64)> = match names {
        None => fetch_all(client, base, vec![], function, frequency_row),
        Some(names) => fetch_all(
            client,
            // Both fields named so that the primary key's (field, value) columns are probed.
            &format!(
                "{base} AND f.field = ANY ('{{first_name,last_name}}') AND f.value = ANY ($1)"
            ),
            vec![names.into()],
            function,
            frequency_row,
        ),
    };
    let (mut first, mut last) = (HashMap::new(), HashMap::new());
    for (is_first, value, frequency) in rows {
        if is_first {
            first.insert(value, frequency);
        } else {
            last.insert(value, frequency);
        }
    }
    (first, last)
}

fn frequency_row(r: &pgrx::spi::SpiHeapTupleData) -> (bool, String, f64) {
    (
        r.get::<bool>(1).ok().flatten().unwrap_or_default(),
        r.get::<String>(2).ok().flatten().unwrap_or_default(),
        r.get::<f64>(3).ok().flatten().unwrap_or_default(),
    )
}

/// A row of unify.block_keys: (record id, key hash).
type KeyRow = (i64, i64);

/// How the blocking keys of `records` (their current values; the ids in `record_ids` that are
/// gone have none) differ from the stored ones: the (record, hash) pairs to delete and to
/// insert.
fn key_changes(
    client: &SpiClient<'_>,
    record_ids: &[i64],
    records: &[MatchRecord],
    keys: &[Vec<(usize, i64)>],
) -> (Vec<KeyRow>, Vec<KeyRow>) {
    let stored: HashSet<(i64, i64)> = fetch_all(
        client,
        "SELECT record_id, key_hash FROM unify.block_keys WHERE record_id = ANY ($1)",
        vec![record_ids.to_vec().into()],
        "process_queue",
        |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<i64>(2).ok().flatten().unwrap_or_default(),
            )
        },
    )
    .into_iter()
    .collect();
    let wanted: HashSet<(i64, i64)> = records
        .iter()
        .zip(keys)
        .flat_map(|(r, k)| k.iter().map(move |&(_, h)| (r.id, h)))
        .collect();
    (
        stored.difference(&wanted).copied().collect(),
        wanted.difference(&stored).copied().collect(),
    )
}

/// The stored members of the blocks `caps` names, each read up to its cap (hash, cap): a block
/// with as many members as its cap may have more.
fn block_members(client: &SpiClient<'_>, caps: &HashMap<i64, usize>) -> HashMap<i64, Vec<i64>> {
    let (hashes, caps): (Vec<i64>, Vec<i32>) = caps
        .iter()
        .map(|(&h, &cap)| (h, cap.min(i32::MAX as usize) as i32))
        .unzip();
    fetch_all(
        client,
        "SELECT k.h, ARRAY(SELECT b.record_id FROM unify.block_keys b WHERE b.key_hash = k.h LIMIT k.cap)
         FROM unnest($1::bigint[], $2::int[]) AS k (h, cap)",
        vec![hashes.into(), caps.into()],
        "process_queue",
        |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<Vec<i64>>(2).ok().flatten().unwrap_or_default(),
            )
        },
    )
    .into_iter()
    .collect()
}

/// A batch's blocks, read once before its key changes are written, and what the changes make
/// of them.
struct ChangedBlocks {
    /// Members after the changes, of the blocks known to be within their rule's size limit.
    within: HashMap<i64, Vec<i64>>,
    /// Members before and after (each once) of the blocks the changes take across their size
    /// limit: their pairs appear or vanish, also between records that did not change, as in a
    /// full scoring.
    crossing: Vec<Vec<i64>>,
}

/// Reads the blocks of `hashes` as they are before the key changes `gone` / `new` (record,
/// hash) are written, each up to one past its size limit plus the keys leaving it: enough to
/// tell whether it is over the limit before and after.
fn changed_blocks(
    client: &SpiClient<'_>,
    rules: &[BlockingRule],
    hashes: &HashSet<i64>,
    gone: &[(i64, i64)],
    new: &[(i64, i64)],
) -> ChangedBlocks {
    let mut leaving: HashMap<i64, Vec<i64>> = HashMap::new();
    for &(id, h) in gone {
        leaving.entry(h).or_default().push(id);
    }
    let mut joining: HashMap<i64, Vec<i64>> = HashMap::new();
    for &(id, h) in new {
        joining.entry(h).or_default().push(id);
    }
    let none = Vec::new();
    let caps: HashMap<i64, usize> = hashes
        .iter()
        .filter(|&&h| rule_of(h) < rules.len())
        .map(|&h| {
            let leavers = leaving.get(&h).map_or(0, Vec::len);
            (h, read_cap(rules[rule_of(h)].max_block_size, leavers))
        })
        .collect();
    let mut out = ChangedBlocks {
        within: HashMap::new(),
        crossing: Vec::new(),
    };
    for (h, before) in block_members(client, &caps) {
        let change = block_change(
            rules[rule_of(h)].max_block_size,
            &before,
            leaving.get(&h).unwrap_or(&none),
            joining.get(&h).unwrap_or(&none),
        );
        out.crossing.extend(change.crossing);
        if let Some(after) = change.within {
            out.within.insert(h, after);
        }
    }
    out
}

/// Re-blocks and re-scores the records `record_ids` (changed, new or deleted) against all
/// records, as unify.score_pairs() would, and re-scores the pairs among the records sharing an
/// e-mail or phone whose household status the change turns (`before` holds the changed
/// records as they were: see [`RecordBefore`]), and among the members of the blocks the change
/// takes across their size limit. Their blocking keys in unify.block_keys are brought up to
/// date, candidates found through that index, the stored pairs looked at replaced by those at
/// or above the review threshold. Returns every record whose pairs were looked at: the changed
/// ones, those holders and those blocks' members.
#[pg_extern(volatile, strict)]
fn _rescore(record_ids: Vec<i64>, before: JsonB) -> Vec<i64> {
    const F: &str = "process_queue";
    let mut phases = Phases::new("_rescore");
    let model = current_model(F);
    phases.mark("model");
    let rules = &model.blocking_rules;
    let (records, n_changed, keys, blocks, ctx, ids, extra, rescored) = Spi::connect_mut(
        |client| {
            let phases = &mut phases;
            let built = client
                .select("SELECT count(*) FROM unify.matching_state", None, &[])
                .and_then(|t| t.first().get_one::<i64>())
                .unwrap_or_else(|e| spi_failed(e, F));
            if built != Some(1) {
                raise(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "records are scored one by one only after a first full scoring".into(),
                    None,
                    "Run SELECT * FROM unify.score_pairs(); once.",
                    F,
                )
            }
            let by_id = |ids: Vec<i64>| -> Args { vec![ids.into()] };
            let changed = load_records(
                client,
                "WHERE r.record_id = ANY ($1)",
                by_id(record_ids.clone()),
                F,
            );
            phases.mark("load changed");
            let before: Vec<MatchRecord> = serde_json::from_value::<Vec<RecordBefore>>(before.0)
                .unwrap_or_else(|e| spi_failed(format!("the records before: {e}"), F))
                .into_iter()
                .map(MatchRecord::from)
                .collect();
            let changed_ids: HashSet<i64> = record_ids.iter().copied().collect();
            // Everyone holding the changed records' e-mails and phones, before or now: each
            // value read up to one past the junk limit besides the changed records, enough to
            // judge it as a household's or not, before and now.
            let (value_emails, value_phones) = {
                let mut emails: HashMap<String, i32> = HashMap::new();
                let mut phones: HashMap<String, i32> = HashMap::new();
                let base = JUNK_VALUE_RECORDS as i32 + 1;
                for r in &before {
                    emails.extend(r.email_key.iter().map(|e| (e.clone(), base)));
                    phones.extend(r.phones.iter().map(|p| (p.clone(), base)));
                }
                for r in &changed {
                    if let Some(e) = &r.email_key {
                        *emails.entry(e.clone()).or_insert(base) += 1;
                    }
                    for p in &r.phones {
                        *phones.entry(p.clone()).or_insert(base) += 1;
                    }
                }
                (emails, phones)
            };
            let value_holders = load_value_holders(
                client,
                value_emails.iter().map(|(v, &c)| (v.clone(), c)).collect(),
                value_phones.iter().map(|(v, &c)| (v.clone(), c)).collect(),
                F,
            );
            let (flipped_emails, flipped_phones) =
                household_flips(&value_holders, &changed_ids, &before);
            phases.mark("value holders");
            let keys: Vec<Vec<(usize, i64)>> =
                changed.iter().map(|r| key_hashes(rules, r)).collect();
            // Only the keys that differ are written: an update that leaves them alone costs nothing.
            let (gone, new) = key_changes(client, &record_ids, &changed, &keys);
            phases.mark("key changes");
            // The blocks of the changed records' keys, old and new, read once before the writes.
            let changed_hashes: HashSet<i64> = keys.iter().flatten().map(|&(_, h)| h).collect();
            let touched: HashSet<i64> = changed_hashes
                .iter()
                .copied()
                .chain(gone.iter().map(|&(_, h)| h))
                .collect();
            let blocks_now = changed_blocks(client, rules, &touched, &gone, &new);
            phases.mark("blocks");
            let (gone_ids, gone_hashes): (Vec<i64>, Vec<i64>) = gone.iter().copied().unzip();
            let (new_ids, new_hashes): (Vec<i64>, Vec<i64>) = new.iter().copied().unzip();
            update_kept(
                client,
                "DELETE FROM unify.block_keys k USING unnest($1::bigint[], $2::bigint[]) AS g (id, h)
                  WHERE k.record_id = g.id AND k.key_hash = g.h",
                &vec![gone_ids.into(), gone_hashes.into()],
            )
            .and_then(|_| {
                // Only keys not stored, read under the lock every writer of keys holds: no
                // conflict to check for (ON CONFLICT made this write half again as slow).
                update_kept(
                    client,
                    "INSERT INTO unify.block_keys (key_hash, record_id)
                     SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                    &vec![new_hashes.into(), new_ids.into()],
                )
            })
            .unwrap_or_else(|e| spi_failed(e, F));
            phases.mark("write keys");
            let crossing = &blocks_now.crossing;
            // Holders of a value whose status turned, and the crossing blocks' members: their
            // pairs among each other are looked at again.
            let turned = |r: &MatchRecord| {
                r.email_key
                    .as_ref()
                    .is_some_and(|e| flipped_emails.contains(e))
                    || r.phones.iter().any(|p| flipped_phones.contains(p))
            };
            let mut holder_ids: Vec<i64> = value_holders
                .iter()
                .filter(|r| turned(r))
                .map(|r| r.id)
                .chain(crossing.iter().flatten().copied())
                .filter(|id| !changed_ids.contains(id))
                .collect();
            holder_ids.sort_unstable();
            holder_ids.dedup();
            let mut rescored: Vec<i64> = record_ids.iter().chain(&holder_ids).copied().collect();
            rescored.sort_unstable();
            rescored.dedup();
            let read: HashMap<i64, &MatchRecord> =
                value_holders.iter().map(|r| (r.id, r)).collect();
            let unread: Vec<i64> = holder_ids
                .iter()
                .filter(|id| !read.contains_key(id))
                .copied()
                .collect();
            let mut holders: Vec<MatchRecord> = holder_ids
                .iter()
                .filter_map(|id| read.get(id).map(|&r| r.clone()))
                .collect();
            holders.extend(load_records(
                client,
                "WHERE r.record_id = ANY ($1)",
                by_id(unread),
                F,
            ));
            holders.sort_unstable_by_key(|r| r.id);
            phases.mark("load holders");
            let holder_keys: Vec<Vec<(usize, i64)>> =
                holders.iter().map(|r| key_hashes(rules, r)).collect();
            let n_changed = changed.len();
            let n_holders = holders.len();
            // Groups of changed records and holders by shared e-mail and phone: the pairs whose
            // household evidence may have flipped. Crossing blocks' members are holders.
            let scope_index: HashMap<i64, u32> = changed
                .iter()
                .chain(&holders)
                .enumerate()
                .map(|(i, r)| (r.id, i as u32))
                .collect();
            let mut by_value: HashMap<&str, Vec<u32>> = HashMap::new();
            for (i, r) in changed.iter().chain(&holders).enumerate() {
                for v in r.email_key.iter().chain(r.phones.iter()) {
                    by_value.entry(v.as_str()).or_default().push(i as u32);
                }
            }
            let mut groups: Vec<Vec<u32>> =
                by_value.into_values().filter(|g| g.len() > 1).collect();
            groups.extend(
                crossing
                    .iter()
                    .map(|m| {
                        m.iter()
                            .filter_map(|id| scope_index.get(id).copied())
                            .collect::<Vec<u32>>()
                    })
                    .filter(|g| g.len() > 1),
            );
            let group_keys: HashMap<u32, Vec<(usize, i64)>> = keys
                .iter()
                .chain(&holder_keys)
                .enumerate()
                .map(|(i, k)| (i as u32, k.clone()))
                .collect();
            let looked = pairs_within(&groups);
            // The changed records' blocks hold their candidates; of the other blocks only those
            // shared by a looked-at pair matter, and only whether they are within their limit.
            // Each block is read up to one past its rule's size limit: enough to know it is over.
            let shared = shared_hashes(&looked, &group_keys);
            // Blocks shared within a group that the change did not touch: only their size matters.
            let limit: HashMap<i64, usize> = holder_keys
                .iter()
                .flatten()
                .filter(|(_, h)| shared.contains(h) && !touched.contains(h))
                .map(|&(rule, h)| (h, rules[rule].max_block_size))
                .collect();
            let caps: HashMap<i64, usize> = limit.iter().map(|(&h, &max)| (h, max + 1)).collect();
            let mut members: HashMap<i64, Vec<i64>> = block_members(client, &caps)
                .into_iter()
                .filter(|(h, m)| m.len() <= limit[h])
                .collect();
            members.extend(blocks_now.within);
            phases.mark("block members");
            // The other members of the changed records' blocks are their candidates.
            let holder_set: HashSet<i64> = holders.iter().map(|r| r.id).collect();
            let mut other_ids: Vec<i64> = members
                .iter()
                .filter(|(h, _)| changed_hashes.contains(h))
                .flat_map(|(_, m)| m.iter().copied())
                .filter(|id| !changed_ids.contains(id) && !holder_set.contains(id))
                .collect();
            other_ids.sort_unstable();
            other_ids.dedup();
            // Those holding a changed record's e-mail or phone were read already.
            let (known, unread): (Vec<i64>, Vec<i64>) =
                other_ids.into_iter().partition(|id| read.contains_key(id));
            let mut others: Vec<MatchRecord> = known.iter().map(|id| read[id].clone()).collect();
            others.extend(load_records(
                client,
                "WHERE r.record_id = ANY ($1)",
                by_id(unread),
                F,
            ));
            phases.mark("load others");
            let mut records = changed;
            records.extend(holders);
            records.extend(others);
            let index: HashMap<i64, u32> = records
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id, i as u32))
                .collect();
            let blocks: HashMap<i64, Vec<u32>> = members
                .iter()
                .filter(|(h, _)| changed_hashes.contains(h))
                .map(|(&h, m)| {
                    (
                        h,
                        m.iter().filter_map(|id| index.get(id).copied()).collect(),
                    )
                })
                .collect();
            let within_limit: HashSet<i64> = members.keys().copied().collect();
            let within = candidates_among(&looked, &group_keys, &within_limit);
            phases.mark("groups");
            // The stored pairs now looked at again go; what scores is inserted below.
            let (looked_a, looked_b): (Vec<i64>, Vec<i64>) = looked
                .iter()
                .map(|&(a, b)| {
                    let (x, y) = (records[a as usize].id, records[b as usize].id);
                    (x.min(y), x.max(y))
                })
                .unzip();
            update_kept(
                client,
                "DELETE FROM unify.pairs p WHERE p.record_a = ANY ($1) OR p.record_b = ANY ($1)",
                &vec![record_ids.clone().into()],
            )
            .and_then(|_| {
                // One index probe per looked-at pair: as a join, the planner hashes all of
                // unify.pairs once there are a few thousand of them (0.4 s at 1M pairs).
                update_kept(
                    client,
                    "DELETE FROM unify.pairs p WHERE p.ctid = ANY (ARRAY(
                       SELECT (SELECT q.ctid FROM unify.pairs q WHERE q.record_a = l.a AND q.record_b = l.b)
                       FROM unnest($1::bigint[], $2::bigint[]) AS l (a, b)))",
                    &vec![looked_a.into(), looked_b.into()],
                )
            })
            .unwrap_or_else(|e| spi_failed(e, F));
            phases.mark("delete pairs");

            let names: HashSet<&str> = records
                .iter()
                .flat_map(|r| r.first_name.iter().chain(r.last_name.iter()))
                .map(String::as_str)
                .collect();
            let all_frequencies = model_frequencies(client, F);
            let of_names = |all: &HashMap<String, f64>| -> HashMap<String, f64> {
                names
                    .iter()
                    .filter_map(|&n| all.get_key_value(n).map(|(k, &f)| (k.clone(), f)))
                    .collect()
            };
            let frequencies = (of_names(&all_frequencies.0), of_names(&all_frequencies.1));
            phases.mark("frequencies");
            let in_groups = &records[..n_changed + n_holders];
            let emails: HashSet<String> = in_groups
                .iter()
                .filter_map(|r| r.email_key.clone())
                .collect();
            let phones: HashSet<String> = in_groups
                .iter()
                .flat_map(|r| r.phones.iter().cloned())
                .collect();
            // The holders of the values not read above (a holder's other e-mail or phone), up
            // to one past the junk limit per value and column.
            let cap = JUNK_VALUE_RECORDS as i32 + 1;
            let mut context_records = value_holders;
            context_records.extend(load_value_holders(
                client,
                emails
                    .iter()
                    .filter(|e| !value_emails.contains_key(*e))
                    .map(|e| (e.clone(), cap))
                    .collect(),
                phones
                    .iter()
                    .filter(|p| !value_phones.contains_key(*p))
                    .map(|p| (p.clone(), cap))
                    .collect(),
                F,
            ));
            context_records.sort_unstable_by_key(|r| r.id);
            context_records.dedup_by_key(|r| r.id);
            phases.mark("other value holders");
            let ctx = Context::with_frequencies(frequencies, &context_records, &emails, &phones);
            phases.mark("context");
            (
                records,
                n_changed,
                keys,
                blocks,
                ctx,
                source_ids(client),
                within,
                rescored,
            )
        },
    );
    let changed: Vec<u32> = (0..n_changed as u32).collect();
    let mut cands = candidates_of(&changed, &keys, &blocks, rules);
    // Pairs within groups that involve a changed record are in `cands` already.
    cands.extend(
        extra
            .into_iter()
            .filter(|c| c.a as usize >= n_changed && c.b as usize >= n_changed),
    );
    let scorer = Scorer::new(&model, &ctx, &ids);
    let rows = pair_rows(&model, &scorer, &records, &cands);
    phases.mark("score");
    pgrx::debug1!(
        "_rescore: {n_changed} changed, {} records loaded, {} candidates, {} pairs kept",
        records.len(),
        cands.len(),
        rows.len()
    );
    insert_pairs(rows);
    phases.mark("insert pairs");
    rescored
}

/// Adds scored pairs to unify.pairs, as the current model's. `_rescore` deleted every stored
/// pair it scores again, under the lock every writer of pairs holds, so nothing conflicts: the
/// insert skips the unique check of ON CONFLICT (3,000 pairs: 24–30 → 16–18 ms). Each pair
/// goes once.
fn insert_pairs(mut rows: Vec<PairRow>) {
    rows.sort_unstable_by_key(|r| (r.0, r.1));
    rows.dedup_by_key(|r| (r.0, r.1));
    let n = rows.len();
    let (mut a, mut b, mut weight, mut probability, mut is_match, mut forced) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut rules, mut weights) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for row in rows {
        a.push(row.0);
        b.push(row.1);
        weight.push(row.2);
        probability.push(row.3);
        is_match.push(row.4);
        forced.push(row.5);
        // Text, split and cast by the statement: cheaper per row than jsonb datums built here
        // and an array subquery per row.
        rules.push(row.6.join(RULE_SEPARATOR));
        weights.push(row.7 .0.to_string());
    }
    Spi::connect_mut(|client| {
        update_kept(
                client,
                "INSERT INTO unify.pairs (record_a, record_b, match_weight, match_probability, is_match, forced_by,
                                          blocking_rules, weights, model_version)
                 SELECT u.a, u.b, u.w, u.p, u.m, u.f, string_to_array(u.r, E'\\x1f'), u.j::jsonb,
                        (SELECT max(m.version) FROM unify.model m)
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
                ],
            )
            .unwrap_or_else(|e| spi_failed(e, "process_queue"));
    });
}

type PairRow = (i64, i64, f64, f64, bool, Option<String>, Vec<String>, JsonB);

/// Joins a pair's blocking rule names for `insert_pairs` (its statement splits on E'\\x1f');
/// `Model::validate` keeps control characters out of rule names.
const RULE_SEPARATOR: &str = "\u{1f}";

/// The scored candidates at or above the review threshold (or forced), as rows of unify.pairs.
fn pair_rows(
    model: &Model,
    scorer: &Scorer<'_>,
    records: &[MatchRecord],
    cands: &[Candidate],
) -> Vec<PairRow> {
    let review_weight = log2_odds(model.review_threshold);
    // Most candidates score below the review threshold: compare and score on all threads, keep
    // the few that stay, and build their rows here.
    let kept = crate::parallel::flat_map(cands.len(), workers(), |range| {
        cands[range]
            .iter()
            .filter_map(|c| {
                let score = scorer.score(&records[c.a as usize], &records[c.b as usize]);
                (score.weight >= review_weight || score.forced_by.is_some()).then_some((*c, score))
            })
            .collect()
    });
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
        rows.push((
            x.id,
            y.id,
            score.weight,
            score.probability,
            score.is_match(model),
            score.forced_by.map(|i| model.rules[i].name.clone()),
            rules,
            JsonB(Value::Object(weights)),
        ));
    }
    rows
}

/// Why two records score as they do: the prior, then per comparison the level hit, the values
/// compared, m, u and the weight. The weights sum to the pair's match weight.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, strict)]
fn explain_match(
    record_a: i64,
    record_b: i64,
) -> TableIterator<
    'static,
    (
        name!(term, String),
        name!(level, Option<String>),
        name!(value_a, Option<String>),
        name!(value_b, Option<String>),
        name!(m, Option<f64>),
        name!(u, Option<f64>),
        name!(weight, f64),
        name!(note, Option<String>),
    ),
> {
    let model = current_model("explain_match");
    let (pair, context_records, ids, frequencies) = Spi::connect(|client| {
        let pair = load_records(
            client,
            "WHERE record_id = ANY ($1)",
            vec![vec![record_a, record_b].into()],
            "explain_match",
        );
        let find = |id: i64| {
            pair.iter()
                .find(|r| r.id == id)
                .cloned()
                .unwrap_or_else(|| {
                    raise(
                        PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
                        format!("record {id} does not exist"),
                        None,
                        "record ids are unify.records.record_id, as in unify.pairs.",
                        "explain_match",
                    )
                })
        };
        let (a, b) = (find(record_a), find(record_b));
        // The records sharing an e-mail or phone with the pair: whether those are household
        // values is decided as in batch scoring.
        let emails: Vec<String> = [&a.email_key, &b.email_key]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let phones: Vec<String> = a.phones.iter().chain(b.phones.iter()).cloned().collect();
        let sharing = load_records(
            client,
            "WHERE email_key = ANY ($1) OR phone = ANY ($2) OR mobile = ANY ($2)",
            vec![emails.into(), phones.into()],
            "explain_match",
        );
        let frequencies = load_frequencies(
            client,
            Some(
                a.first_name
                    .iter()
                    .chain(a.last_name.iter())
                    .cloned()
                    .collect(),
            ),
            "explain_match",
        );
        ((a, b), sharing, source_ids(client), frequencies)
    });
    let (a, b) = pair;
    let mut ctx = Context::build(&context_records);
    (ctx.first_name_tf, ctx.last_name_tf) = frequencies;
    let scorer = Scorer::new(&model, &ctx, &ids);
    let (_, terms) = scorer.explain(&a, &b);
    TableIterator::new(terms.into_iter().map(|t| {
        (
            t.term.to_string(),
            t.level.map(str::to_string),
            t.value_a,
            t.value_b,
            t.m,
            t.u,
            t.weight,
            t.note,
        )
    }))
}
