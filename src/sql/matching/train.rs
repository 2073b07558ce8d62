//! Training: u from random pairs, m by EM per blocking rule, over all records.

use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

use std::collections::{BinaryHeap, HashMap};

use pgrx::spi::SpiClient;

use super::super::errors::raise;
use super::super::spi::{drop_temp_tables, fetch_all, insert_arrays, spi_failed};
use super::distributed::tally_on_workers;
use super::model::current_model;
use super::records::{
    load_all, prepare_all, raw_record_from_row, record_from_row, source_ids, RECORD_COLUMNS,
    RECORD_COLUMN_COUNT,
};
use super::run::{workers, Phases};
use super::score::blocked;
use super::stream::{
    block_figures, for_each_record, limit_exceeded, rule_figures, stream_blocks, KeyWriter, Stream,
};
use crate::model::blocking::{key_hash, key_hashes, Candidate, RuleStats};
use crate::model::comparison::{compare, Comparison, Context, COMPARISONS};
use crate::model::held_keys::{KeyIndex, ValueHolders, VALUE_HOLDER_BYTES};
use crate::model::packed_records::{PackedRecords, Unpacked};
use crate::model::params::Model;
use crate::model::record::MatchRecord;
use crate::model::scorer::NameFrequencies;
use crate::model::stream::{em_pairs_within, fits_in_memory, u_sample_records};
use crate::model::train::{
    estimate_u, estimate_u_with, exact_u_of_counts, exact_value, fit, train, train_streamed,
    value_hash, Chances, Counts, PairCounts, Sample, StreamedSample, TrainOptions, TrainReport,
    Training, ValueCounts,
};

const F: &str = "train";
/// A streamed training's temp tables (dropped at its end, and at commit in any case): the
/// blocking keys (unify.block_keys stays score_pairs' and the change queue's), and the hashed
/// values whose counts give the exact-agreement u of the comparisons other than the names.
const KEYS: &str = "pg_temp.unify_train_block_keys";
const VALUES: &str = "pg_temp.unify_train_values";
/// The columns of VALUES holding the hashed exact values of the comparisons counted in SQL (in
/// `COMPARISONS` order; the names are counted as they stream past, `ValueCounts`: their
/// frequencies are stored with the model).
const VALUE_COLUMNS: [Option<&str>; COMPARISONS.len()] = [
    None,
    None,
    Some("birth_date"),
    Some("email"),
    Some("phone"),
    Some("address"),
    Some("external_id"),
];

/// Trains the current model on unify.records: u from random pairs, m by EM per blocking rule,
/// the prior from the expected matches. One row: the model and its report (stored by
/// unify.train as documents), the figures train() reports, and the name frequencies as three
/// parallel arrays (field, value, frequency).
#[pg_extern(volatile, strict)]
#[allow(clippy::type_complexity)] // the column names must be spelled out for pgrx
fn _train(
    sample_pairs: i32,
    max_iterations: i32,
) -> TableIterator<
    'static,
    (
        name!(model, JsonB),
        name!(report, JsonB),
        name!(candidate_pairs, i64),
        name!(prior, f64),
        name!(expected_matches, f64),
        name!(converged, bool),
        name!(household_share, Option<f64>),
        name!(namesake_share, Option<f64>),
        name!(similar_name_share, Option<f64>),
        name!(frequency_field, Vec<String>),
        name!(frequency_value, Vec<String>),
        name!(frequency, Vec<f64>),
    ),
> {
    if sample_pairs < 1000 || max_iterations < 1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("sample_pairs must be at least 1000 and max_iterations at least 1, not {sample_pairs} and {max_iterations}"),
            None,
            "The defaults (1000000 pairs, 100 iterations) suit up to a few million records.",
            "train",
        );
    }
    let mut phases = Phases::new(F);
    let mut model = current_model(F);
    let count = Spi::get_one::<i64>("SELECT count(*) FROM unify.records")
        .unwrap_or_else(|e| spi_failed(e, F))
        .unwrap_or_default();
    if count < 2 {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("unify.train needs records to learn from; unify.records holds {count}"),
            None,
            "Register sources with unify.add_source() and load them with SELECT * FROM unify.sync().",
            F,
        );
    }
    let opts = TrainOptions {
        sample_pairs: sample_pairs as usize,
        max_iterations: max_iterations as usize,
        workers: workers(),
        ..Default::default()
    };
    let budget = crate::budget::kb();
    // On Citus with workers (as score_pairs): the candidates compared and counted there.
    let on_workers = super::distributed::on_workers();
    let (report, stats, ctx) = if fits_in_memory(count as u64, budget) {
        let (records, ids) = load_all(F);
        phases.mark("load");
        let ctx = Context::build(&records);
        if on_workers {
            let (report, stats) =
                train_held_on_workers(&records, &ids, &ctx, &mut model, &opts, budget, &mut phases);
            (report, stats, ctx)
        } else {
            let (cands, stats, _) = blocked(&records, &model, F);
            phases.mark("block");
            let report = train(&records, &ctx, &cands, &mut model, &ids, &opts);
            phases.mark("estimate");
            (report, stats, ctx)
        }
    } else {
        // More records than customer_unify.batch_memory holds: streamed, block by block.
        train_streamed_sql(
            &mut model,
            count as usize,
            &opts,
            budget,
            &mut phases,
            on_workers,
        )
    };
    // The name frequencies become part of the model version: scoring then gives a pair the same
    // weight whether it is scored in a full run or as a change (and later sign-ups of other
    // Müllers do not move it).
    let (mut fields, mut values, mut frequencies) = (Vec::new(), Vec::new(), Vec::new());
    for (field, table) in [
        ("first_name", &ctx.first_name_tf),
        ("last_name", &ctx.last_name_tf),
    ] {
        for (value, frequency) in table.iter() {
            fields.push(field.to_string());
            values.push(value.to_string());
            frequencies.push(*frequency);
        }
    }
    let mut stored_report = json!(report);
    stored_report["blocking"] = json!(stats);
    stored_report["trained_on"] = json!(if on_workers { "workers" } else { "coordinator" });
    TableIterator::once((
        JsonB(json!(model)),
        JsonB(stored_report),
        report.candidate_pairs as i64,
        report.prior,
        report.expected_matches,
        report.converged,
        report.household_share,
        report.namesake_share,
        report.similar_name_share,
        fields,
        values,
        frequencies,
    ))
}

/// Trains `model` on unify.records streamed within `budget_kb` (see `super::stream`): the
/// households from the ordered passes, the name frequencies and their exact-agreement u counted
/// as the records stream past, the other exact-agreement u from value counts grouped in SQL, u's
/// random pairs from a random sample of records, and EM and the prior on a weighted sample of
/// the candidates drawn as they stream past a batch of blocks at a time (see
/// `crate::model::train::StreamedSample`, whose sample does not depend on the order). Holds the
/// context, a batch of records and the sample, whatever the number of records.
fn train_streamed_sql(
    model: &mut Model,
    records: usize,
    opts: &TrainOptions,
    budget_kb: u64,
    phases: &mut Phases,
    on_workers: bool,
) -> (TrainReport, Vec<RuleStats>, Context) {
    // A key per rule on average (a record has no key where a field is missing, two for two
    // phones): about 8 of 12 at a million generated records.
    if !on_workers
        && (records as u64).saturating_mul(
            KeyIndex::bytes_per_record(model.blocking_rules.len()) + VALUE_HOLDER_BYTES,
        ) <= budget_kb.saturating_mul(1024) / 2
    {
        return train_held_keys(model, records, opts, budget_kb, phases);
    }
    // Records buffered in a quarter of the budget, the EM sample in an eighth (`em_pairs_within`), u's
    // sample of records in a quarter (freed before the candidates stream), the rest for the
    // context and PostgreSQL's reading.
    let stream = Stream::new(F, "unify_train", model, budget_kb, 4);
    let mut training = Training::start(model);
    Spi::connect_mut(|client| {
        stream.with_full_cursors(client, |client| {
            let ids = source_ids(client);
            let (shared_emails, shared_phones) = super::stream::household_values(client, &stream);
            let mut ctx = Context {
                first_name_tf: HashMap::new(),
                last_name_tf: HashMap::new(),
                shared_emails,
                shared_phones,
            };
            phases.mark("households");
            drop_temp_tables(client, &[KEYS, VALUES], stream.function);
            stream.run(
                client,
                &format!(
                    "CREATE TEMP TABLE {} (key_hash bigint, record_id bigint) ON COMMIT DROP",
                    KEYS.trim_start_matches("pg_temp.")
                ),
            );
            stream.run(
                client,
                &format!(
                    "CREATE TEMP TABLE {} (birth_date bigint, email bigint, phone bigint,
                     address bigint, external_id bigint) ON COMMIT DROP",
                    VALUES.trim_start_matches("pg_temp.")
                ),
            );
            let mut keys = KeyWriter::new(KEYS);
            let (mut first, mut last) = (ValueCounts::default(), ValueCounts::default());
            for_each_record(client, &stream, |client, records| {
                keys.add(client, model, records);
                write_values(client, records);
                for r in records {
                    if let Some(v) = &r.first_name {
                        first.add(v);
                    }
                    if let Some(v) = &r.last_name {
                        last.add(v);
                    }
                }
            });
            keys.finish(client);
            phases.mark("keys and values");
            let exact = COMPARISONS.map(|c| match c {
                Comparison::FirstName => first.exact_u(),
                Comparison::LastName => last.exact_u(),
                _ => exact_u_sql(client, c),
            });
            (ctx.first_name_tf, ctx.last_name_tf) = (first.frequencies(), last.frequencies());
            let sample = u_sample(client, records, opts.seed, budget_kb);
            let u_sample_pairs = estimate_u_with(&sample, &ctx, model, opts, &exact);
            drop(sample);
            training.mark("u");
            phases.mark("u");
            // The blocks kept for `stream_blocks` only when they are streamed here.
            let (mut stats, skipped) = if on_workers {
                rule_figures(client, &stream, model, KEYS)
            } else {
                block_figures(client, &stream, model, KEYS)
            };
            phases.mark("figures");
            // Within an eighth of the budget (see `em_pairs_within`).
            let within = em_pairs_within(budget_kb, StreamedSample::PAIR_BYTES);
            let em_pairs = match opts.em_pairs {
                0 => within,
                n => n.min(within),
            };
            if on_workers {
                let (sample, candidates) =
                    tally_on_workers(client, model, KEYS, &ctx, em_pairs, opts.seed, &mut stats);
                drop_temp_tables(client, &[KEYS, VALUES], stream.function);
                training.mark("compare");
                phases.mark("compare on the workers");
                let report = fit(
                    training,
                    model,
                    &ctx,
                    &ids,
                    sample,
                    Counts {
                        records,
                        candidate_pairs: candidates,
                        u_sample_pairs,
                        streamed: true,
                    },
                    opts,
                );
                phases.mark("estimate");
                return (report, stats, ctx);
            }
            let mut sample = StreamedSample::new(em_pairs, opts.seed);
            stream_blocks(
                client,
                &stream,
                model,
                &skipped,
                &mut stats,
                |_, records, cands| {
                    sample.add(records, cands, &ctx, opts.workers);
                },
            );
            drop_temp_tables(client, &[KEYS, VALUES], stream.function);
            training.mark("compare");
            phases.mark("block and sample");
            let report = train_streamed(
                training,
                model,
                &ctx,
                &ids,
                sample,
                records,
                u_sample_pairs,
                opts,
            );
            phases.mark("estimate");
            (report, stats, ctx)
        })
    })
}

/// The comparisons whose exact-agreement u is counted from value hashes (the names are counted
/// by value, `ValueCounts`), and their place in [`train_held_keys`]'s hash lists.
const HASHED: [Comparison; 5] = [
    Comparison::BirthDate,
    Comparison::Email,
    Comparison::Phone,
    Comparison::Address,
    Comparison::ExternalId,
];

/// [`train_streamed_sql`] with the blocking keys of all records held in memory, when they fit
/// in half of `budget_kb` (`KeyIndex::bytes_per_record`) and no Citus workers compare:
/// one pass over the records collects the keys, the names' counts, the other exact values'
/// hashes, the e-mails and phones the households are judged on and u's sample of records (no
/// temp tables, no grouping or sorting of whole records in SQL); the blocks, their figures and the candidates' count come from the
/// keys (`crate::model::held_keys`), the EM sample is drawn at the final chances and only its
/// pairs are compared, their records read by id a buffer at a time. The same model, to the last
/// bit, as the streamed path with its temp tables.
fn train_held_keys(
    model: &mut Model,
    records: usize,
    opts: &TrainOptions,
    budget_kb: u64,
    phases: &mut Phases,
) -> (TrainReport, Vec<RuleStats>, Context) {
    let stream = Stream::new(F, "unify_train", model, budget_kb, 4);
    let mut training = Training::start(model);
    let workers = workers();
    Spi::connect_mut(|client| {
        stream.with_full_cursors(client, |client| {
            let ids = source_ids(client);
            let rules = &model.blocking_rules;
            // Reserved, not touched: a record has at most a few keys more than there are rules.
            let mut index = KeyIndex::with_capacity(records, 2 * rules.len() + 2);
            let mut hashes: [Vec<i64>; HASHED.len()] = Default::default();
            let (mut first, mut last) = (ValueCounts::default(), ValueCounts::default());
            let mut held = ValueHolders::default();
            // u's sample of records drawn as they pass by: the `u_sample_records` smallest by
            // (hashint8extended(id, seed), id), as `u_sample` selects them.
            let k = u_sample_records(budget_kb);
            // By their places while the records are packed (unpacked once the pass is done),
            // as records once the packed ones are dropped.
            let mut u_sample = USample::Places(BinaryHeap::with_capacity(k.min(records) + 1));
            let cursor = stream.cursor(
                client,
                "records",
                &format!(
                    "SELECT {RECORD_COLUMNS}, hashint8extended(r.record_id, {}::int8)
                     FROM unify.records r",
                    opts.seed as i64
                ),
            );
            // The records packed as they pass by while they fit a quarter of the budget: the
            // households' holders and the EM sample's records are then taken from them instead
            // of read again by id (a sampled record once per batch that needs it).
            let pack_limit = budget_kb.saturating_mul(1024) / 4;
            let mut packed = Some(PackedRecords::default());
            loop {
                let (raw, draws): (Vec<MatchRecord>, Vec<i64>) = cursor
                    .next(client, |row| {
                        let draw = row
                            .get::<i64>(RECORD_COLUMN_COUNT + 1)
                            .ok()
                            .flatten()
                            .unwrap_or_default();
                        (raw_record_from_row(row, F), draw)
                    })
                    .into_iter()
                    .unzip();
                if raw.is_empty() {
                    break;
                }
                let batch = prepare_all(raw);
                let keys = crate::parallel::map(&batch, workers, |r| key_hashes(rules, r));
                for ((r, draw), ks) in batch.into_iter().zip(draws).zip(keys) {
                    index.push(r.id, ks.into_iter().map(|(_, h)| h));
                    held.push(&r);
                    if let Some(p) = &mut packed {
                        p.push(&r);
                        if p.bytes() > pack_limit {
                            pgrx::debug1!(
                                "train: the records passed {pack_limit} bytes packed, read again by id"
                            );
                            u_sample = u_sample.unpacked(p);
                            packed = None;
                        }
                    }
                    for (list, c) in hashes.iter_mut().zip(HASHED) {
                        if let Some(v) = exact_value(c, &r) {
                            list.push(value_hash(&v));
                        }
                    }
                    if let Some(v) = &r.first_name {
                        first.add(v);
                    }
                    if let Some(v) = &r.last_name {
                        last.add(v);
                    }
                    let place = (index.records() - 1) as u32;
                    u_sample.offer(k, draw, r, place);
                }
            }
            cursor.close(client);
            if let Some(p) = &packed {
                pgrx::debug1!("train: {} records packed in {} bytes", p.len(), p.bytes());
            }
            phases.mark("keys and values");
            let by_id = packed.as_ref().map(PackedRecords::by_id);
            let (shared_emails, shared_phones) = super::stream::household_values_of(
                client,
                &stream,
                held,
                packed.as_ref().zip(by_id.as_deref()),
            );
            drop(by_id);
            let mut ctx = Context {
                first_name_tf: HashMap::new(),
                last_name_tf: HashMap::new(),
                shared_emails,
                shared_phones,
            };
            phases.mark("households");
            let exact = COMPARISONS.map(|c| match c {
                Comparison::FirstName => first.exact_u(),
                Comparison::LastName => last.exact_u(),
                _ => HASHED
                    .iter()
                    .position(|h| *h == c)
                    .and_then(|i| exact_u_of_hashes(std::mem::take(&mut hashes[i]))),
            });
            (ctx.first_name_tf, ctx.last_name_tf) = (first.frequencies(), last.frequencies());
            let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
            let limits: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
            let mut blocked = index
                .block(&names, &limits, model.max_candidate_pairs)
                .unwrap_or_else(|e| limit_exceeded(e, F));
            for (i, largest) in blocked.largest.clone().into_iter().enumerate() {
                if let Some((hash, id)) = largest {
                    blocked.stats[i].largest_skipped_key =
                        skipped_key_of(client, model, i, hash, id);
                }
            }
            phases.mark("figures");
            let sample = u_sample.records(packed.as_ref());
            let u_sample_pairs = estimate_u_with(&sample, &ctx, model, opts, &exact);
            drop(sample);
            training.mark("u");
            phases.mark("u");
            // Within an eighth of the budget, as `StreamedSample` (see `em_pairs_within`).
            let within = em_pairs_within(budget_kb, StreamedSample::PAIR_BYTES);
            let em_pairs = match opts.em_pairs {
                0 => within,
                n => n.min(within),
            };
            let mut chances = Chances::new(em_pairs);
            let candidates = blocked.count(&mut chances, workers) as usize;
            let drawn = blocked.drawn(&chances, opts.seed, workers);
            // Only the ids and the figures are needed from here on.
            let ids_of = std::mem::take(&mut blocked.ids);
            let stats = std::mem::take(&mut blocked.stats);
            drop(blocked);
            let pairs = compare_drawn(client, &stream, &ids_of, &drawn, &ctx, packed.as_ref());
            drop((drawn, ids_of, packed));
            training.mark("compare");
            phases.mark("block and sample");
            let report = fit(
                training,
                model,
                &ctx,
                &ids,
                Sample { pairs, chances },
                Counts {
                    records,
                    candidate_pairs: candidates,
                    u_sample_pairs,
                    streamed: true,
                },
                opts,
            );
            phases.mark("estimate");
            (report, stats, ctx)
        })
    })
}

/// u's sample of records as they pass by: the `k` smallest by (draw, id), by their places in
/// the packed records while those are kept, else the records themselves.
enum USample {
    /// (draw, id, place).
    Places(BinaryHeap<(i64, i64, u32)>),
    Records(BinaryHeap<Drawn>),
}

impl USample {
    /// Offers record `r` (at `place` of the packed records) drawn `draw`.
    fn offer(&mut self, k: usize, draw: i64, r: MatchRecord, place: u32) {
        match self {
            USample::Places(heap) => {
                if heap.len() < k {
                    heap.push((draw, r.id, place));
                } else if heap.peek().is_some_and(|top| (draw, r.id) < (top.0, top.1)) {
                    heap.pop();
                    heap.push((draw, r.id, place));
                }
            }
            USample::Records(heap) => {
                if heap.len() < k {
                    heap.push(Drawn(draw, Box::new(r)));
                } else if heap.peek().is_some_and(|top| (draw, r.id) < top.key()) {
                    heap.pop();
                    heap.push(Drawn(draw, Box::new(r)));
                }
            }
        }
    }

    /// The sample as records, taken from `packed` before it is dropped.
    fn unpacked(self, packed: &PackedRecords) -> Self {
        match self {
            USample::Places(heap) => USample::Records(
                heap.into_iter()
                    .map(|(draw, _, place)| Drawn(draw, Box::new(packed.get(place as usize))))
                    .collect(),
            ),
            records => records,
        }
    }

    /// The sampled records, ascending by id (`packed`: the records the places are of).
    fn records(self, packed: Option<&PackedRecords>) -> Vec<MatchRecord> {
        let mut sample: Vec<MatchRecord> = match self {
            USample::Places(heap) => {
                let packed = packed.expect("the packed records of u's sample");
                heap.into_iter()
                    .map(|(_, _, place)| packed.get(place as usize))
                    .collect()
            }
            USample::Records(heap) => heap.into_iter().map(|d| *d.1).collect(),
        };
        sample.sort_unstable_by_key(|r| r.id);
        sample
    }
}

/// A record of u's sample with its draw, ordered by (draw, id). Boxed: the heap moves its
/// entries some 16 times each when one is replaced (a record is some 600 bytes).
struct Drawn(i64, Box<MatchRecord>);

impl Drawn {
    fn key(&self) -> (i64, i64) {
        (self.0, self.1.id)
    }
}

impl PartialEq for Drawn {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Drawn {}

impl PartialOrd for Drawn {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Drawn {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// The exact-agreement u of values counted by their hashes (as `exact_u_sql` groups them).
fn exact_u_of_hashes(mut hashes: Vec<i64>) -> Option<f64> {
    hashes.sort_unstable();
    let mut agree: u128 = 0;
    for run in hashes.chunk_by(|a, b| a == b) {
        let n = run.len() as u128;
        agree += n * (n - 1);
    }
    exact_u_of_counts(agree as f64, hashes.len() as f64)
}

/// The drawn candidates (`a` and `b` places in `ids`) compared and counted per key, their
/// records read by id (or taken from `packed`, whose places are those of `ids`) a buffer's
/// worth at a time in the candidates' order.
fn compare_drawn(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    ids: &[i64],
    drawn: &[Candidate],
    ctx: &Context,
    packed: Option<&PackedRecords>,
) -> PairCounts {
    let mut pairs = PairCounts::default();
    let mut unpacked = Unpacked::default();
    // The batch each record was last counted in.
    let mut seen = vec![u32::MAX; ids.len()];
    let (mut batch, mut members, mut start, mut read) = (0u32, 0usize, 0usize, 0usize);
    for (k, c) in drawn.iter().enumerate() {
        for i in [c.a, c.b] {
            if seen[i as usize] != batch {
                seen[i as usize] = batch;
                members += 1;
            }
        }
        if members >= stream.buffer || k + 1 == drawn.len() {
            let packed = packed.map(|p| (p, &mut unpacked));
            compare_batch(client, ids, &drawn[start..=k], ctx, packed, &mut pairs);
            read += members;
            (batch, members, start) = (batch + 1, 0, k + 1);
        }
    }
    pgrx::debug1!(
        "train: {} sampled pairs compared, {read} records {} in {batch} batches",
        drawn.len(),
        if packed.is_some() { "unpacked" } else { "read" }
    );
    pairs
}

fn compare_batch(
    client: &mut SpiClient<'_>,
    ids: &[i64],
    batch: &[Candidate],
    ctx: &Context,
    packed: Option<(&PackedRecords, &mut Unpacked)>,
    pairs: &mut PairCounts,
) {
    if let Some((packed, unpacked)) = packed {
        let mut wanted: Vec<u32> = batch.iter().flat_map(|c| [c.a, c.b]).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let records = unpacked.fill(packed, wanted.iter().copied(), workers());
        let at = |i: u32| wanted.binary_search(&i).expect("a wanted place");
        let outcomes = crate::parallel::map(batch, workers(), |c| {
            let (a, b) = (&records[at(c.a)], &records[at(c.b)]);
            (compare(a, b, ctx), NameFrequencies::of(ctx, a))
        });
        for (c, (o, names)) in batch.iter().zip(outcomes) {
            pairs.add(&o, c.rules, &names);
        }
        return;
    }
    let mut wanted: Vec<i64> = batch
        .iter()
        .flat_map(|c| [ids[c.a as usize], ids[c.b as usize]])
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut records = fetch_all(
        client,
        &format!("SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id = ANY($1)"),
        vec![wanted.into()],
        F,
        |row| record_from_row(row, F),
    );
    records.sort_unstable_by_key(|r| r.id);
    let at = |i: u32| {
        records
            .binary_search_by_key(&ids[i as usize], |r| r.id)
            .ok()
    };
    let outcomes = crate::parallel::map(batch, workers(), |c| {
        let (a, b) = (&records[at(c.a)?], &records[at(c.b)?]);
        Some((compare(a, b, ctx), NameFrequencies::of(ctx, a)))
    });
    for (c, o) in batch.iter().zip(outcomes) {
        if let Some((o, names)) = o {
            pairs.add(&o, c.rules, &names);
        }
    }
}

/// The text of a skipped block's key (`hash`, of rule `rule`) from its record `id`.
fn skipped_key_of(
    client: &mut SpiClient<'_>,
    model: &Model,
    rule: usize,
    hash: i64,
    id: i64,
) -> Option<String> {
    let record = fetch_all(
        client,
        &format!("SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id = $1"),
        vec![id.into()],
        F,
        |row| record_from_row(row, F),
    )
    .into_iter()
    .next()?;
    let r = &model.blocking_rules[rule];
    r.keys(&record)
        .into_iter()
        .find(|k| key_hash(rule, &r.name, k) == hash)
        .map(|k| k.replace('\u{1f}', " | "))
}

/// The held training (all records in memory) on a Citus cluster: u from random pairs of
/// `records` as on a single node, the blocking keys of `records` into a temp table of the
/// training and the figures per rule from them, the candidates compared and counted on the
/// workers (`super::distributed::tally_on_workers`), EM and the prior here. The same model as
/// `train` on the same records, to the last bit (both sample by the pair's ids and sum the
/// counted keys in one order).
fn train_held_on_workers(
    records: &[MatchRecord],
    ids: &HashMap<String, i32>,
    ctx: &Context,
    model: &mut Model,
    opts: &TrainOptions,
    budget_kb: u64,
    phases: &mut Phases,
) -> (TrainReport, Vec<RuleStats>) {
    let stream = Stream::new(F, "unify_train", model, budget_kb, 4);
    let mut training = Training::start(model);
    let u_sample_pairs = estimate_u(records, ctx, model, opts);
    training.mark("u");
    phases.mark("u");
    let (sample, candidates, stats) = Spi::connect_mut(|client| {
        stream.with_full_cursors(client, |client| {
            drop_temp_tables(client, &[KEYS], stream.function);
            stream.run(
                client,
                &format!(
                    "CREATE TEMP TABLE {} (key_hash bigint, record_id bigint) ON COMMIT DROP",
                    KEYS.trim_start_matches("pg_temp.")
                ),
            );
            let mut keys = KeyWriter::new(KEYS);
            for chunk in records.chunks(10_000) {
                keys.add(client, model, chunk);
            }
            keys.finish(client);
            let (mut stats, _) = rule_figures(client, &stream, model, KEYS);
            let (sample, candidates) = tally_on_workers(
                client,
                model,
                KEYS,
                ctx,
                opts.em_pairs,
                opts.seed,
                &mut stats,
            );
            drop_temp_tables(client, &[KEYS], stream.function);
            (sample, candidates, stats)
        })
    });
    training.mark("compare");
    phases.mark("compare on the workers");
    let report = fit(
        training,
        model,
        ctx,
        ids,
        sample,
        Counts {
            records: records.len(),
            candidate_pairs: candidates,
            u_sample_pairs,
            streamed: false,
        },
        opts,
    );
    phases.mark("estimate");
    (report, stats)
}

/// Adds the hashed exact values of `records` to the VALUES temp table.
fn write_values(client: &mut SpiClient<'_>, records: &[MatchRecord]) {
    let hashes = |c: Comparison| -> Vec<Option<i64>> {
        records
            .iter()
            .map(|r| exact_value(c, r).map(|v| value_hash(&v)))
            .collect()
    };
    insert_arrays(
        client,
        VALUES,
        &["bigint[]"; 5],
        || {
            vec![
                hashes(Comparison::BirthDate).into(),
                hashes(Comparison::Email).into(),
                hashes(Comparison::Phone).into(),
                hashes(Comparison::Address).into(),
                hashes(Comparison::ExternalId).into(),
            ]
        },
        F,
    );
}

/// The exact-agreement u of comparison `c` (see `crate::model::train::exact_u_of_counts`) from
/// the counts of its values in VALUES (None for the names, which are not there).
fn exact_u_sql(client: &mut SpiClient<'_>, c: Comparison) -> Option<f64> {
    let column = VALUE_COLUMNS[c.index()]?;
    let table = client
        .select(
            &format!(
                "SELECT coalesce(sum(n * (n - 1)), 0)::float8, coalesce(sum(n), 0)::float8
                 FROM (SELECT count(*)::numeric AS n FROM {VALUES} WHERE {column} IS NOT NULL
                       GROUP BY {column}) g"
            ),
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e, F));
    let row = table.first();
    let agree = row.get::<f64>(1).ok().flatten().unwrap_or_default();
    let n = row.get::<f64>(2).ok().flatten().unwrap_or_default();
    exact_u_of_counts(agree, n)
}

/// The records u's random pairs are drawn from: all of them in id order (as the held path
/// has them) when they are at most `u_sample_records(budget_kb)`, else that many chosen by a
/// hash of their id and `seed`.
fn u_sample(
    client: &mut SpiClient<'_>,
    records: usize,
    seed: u64,
    budget_kb: u64,
) -> Vec<MatchRecord> {
    let k = u_sample_records(budget_kb);
    let mut sample = if records <= k {
        fetch_all(
            client,
            &format!("SELECT {RECORD_COLUMNS} FROM unify.records r ORDER BY r.record_id"),
            vec![],
            F,
            |row| record_from_row(row, F),
        )
    } else {
        fetch_all(
            client,
            &format!(
                "SELECT {RECORD_COLUMNS} FROM unify.records r
                 ORDER BY hashint8extended(r.record_id, $1), r.record_id LIMIT $2"
            ),
            vec![(seed as i64).into(), (k as i64).into()],
            F,
            |row| record_from_row(row, F),
        )
    };
    sample.sort_unstable_by_key(|r| r.id);
    sample
}

/// One EM session as a stored training report holds it (`report -> 'sessions'`). Read typed, so
/// a report missing a field is an error naming it, not a NULL.
#[derive(serde::Deserialize)]
struct StoredSession {
    rule: String,
    pairs: i64,
    estimated: Vec<String>,
    iterations: i32,
    converged: bool,
    match_share: f64,
    log_likelihood: Option<f64>,
}

/// The EM sessions of a training report, one row each (what unify.train returns).
#[pg_extern(immutable, strict, parallel_safe)]
#[allow(clippy::type_complexity)] // the column names must be spelled out for pgrx
fn _train_sessions(
    report: JsonB,
) -> TableIterator<
    'static,
    (
        name!(session, String),
        name!(pairs, i64),
        name!(estimated, Vec<String>),
        name!(iterations, i32),
        name!(converged, bool),
        name!(match_share, f64),
        name!(log_likelihood, Option<f64>),
    ),
> {
    let sessions = report
        .0
        .get("sessions")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let sessions: Vec<StoredSession> = serde_json::from_value(sessions).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("the training report's sessions cannot be read: {e}"),
            None,
            "Pass the report unify._train returned (unify.model.report of a trained version).",
            "_train_sessions",
        )
    });
    TableIterator::new(sessions.into_iter().map(|s| {
        (
            s.rule,
            s.pairs,
            s.estimated,
            s.iterations,
            s.converged,
            s.match_share,
            s.log_likelihood,
        )
    }))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_sessions_of_a_report_come_back_as_rows() {
        let row = Spi::get_two::<String, i64>(
            r#"SELECT session, pairs FROM unify._train_sessions('{"sessions": [{"rule": "email", "pairs": 12,
                 "estimated": ["first_name"], "iterations": 7, "converged": true, "match_share": 0.5,
                 "log_likelihood": null}]}')"#,
        )
        .unwrap();
        assert_eq!(row, (Some("email".to_string()), Some(12)));
    }

    #[pg_test(error = "the training report's sessions cannot be read: missing field `iterations`")]
    fn a_report_missing_a_field_is_an_error_not_a_null() {
        Spi::run(
            r#"SELECT * FROM unify._train_sessions('{"sessions": [{"rule": "email", "pairs": 12,
                 "estimated": [], "converged": true, "match_share": 0.5}]}')"#,
        )
        .unwrap();
    }
}
