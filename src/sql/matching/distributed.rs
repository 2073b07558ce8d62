//! unify.score_pairs on a Citus cluster (issue 27): the candidate blocks are scored on the
//! workers. The coordinator (which keeps every unify table) computes the household values, the
//! blocking keys (unify.block_keys) and the figures per rule as the streamed path does, then
//! writes each member of a valid block into the distributed table unify._score_members
//! (distributed by its block key, made by the run and dropped at its end; citus.sql), with everything the scorer reads about it
//! (`crate::model::distributed::MemberContext`). One distributed query groups that table by
//! block key, which Citus pushes down to the shards (the distribution column), and calls the
//! kernel unify._score_block per block on the workers; the coordinator writes what comes back
//! into unify.pairs. The kernel gets the model (as its JSON text) and the source ids as
//! arguments and reads no table: a worker's own unify tables stay empty.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::PgSqlErrorCode;

use super::super::errors::raise;
use super::super::spi::{
    drop_indexes, drop_temp_tables, free_last_result, in_own_context, rebuild_indexes, spi_failed,
    update_with, Cursor,
};
use super::model::parse_model;
use super::records::{record_from_row, RECORD_COLUMNS};
use super::run::Phases;
use super::score::{pair_rows, write_blocking_stats};
use super::stream::{rule_figures, scoring_context, write_block_keys, Figures, Stream, BLOCK_KEYS};
use crate::model::blocking::RuleStats;
use crate::model::comparison::Context;
use crate::model::distributed::{block_candidates, block_context, tally_block, MemberContext};
use crate::model::params::Model;
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;
use crate::model::train::{Chances, PairCounts, PairKey, Sample};
use crate::normalize::date::iso_date_from_pg_days;

const F: &str = "score_pairs";
/// The member tables of a distributed scoring and training (unify._citus_member_table).
const SCORE_MEMBERS: &str = "unify._score_members";
pub(super) const TRAIN_MEMBERS: &str = "unify._train_members";
/// Records per statement that fills unify._score_members.
const BATCH: usize = 10_000;
/// Joins a pair's blocking rule names, as `score::write_pairs` does (`Model::validate` keeps
/// control characters out of rule names).
const RULE_SEPARATOR: &str = "\u{1f}";

/// Whether this run scores on Citus workers: `customer_unify.citus_scoring` on, and the citus
/// extension with at least one active worker node (`unify._citus_workers()`).
pub(super) fn on_workers() -> bool {
    crate::budget::CITUS_SCORING.get()
        && Spi::get_one::<bool>("SELECT unify._citus_workers() > 0")
            .unwrap_or_else(|e| spi_failed(e, F))
            .unwrap_or(false)
}

fn run(client: &mut SpiClient<'_>, statement: &str) {
    client
        .update(statement, None, &[])
        .unwrap_or_else(|e| spi_failed(e, F));
}

/// Scores all records with `model`, the blocks on the workers; the figures of
/// unify.score_pairs().
pub(super) fn score_on_workers(
    model: &Model,
    version: Option<i32>,
    phases: &mut Phases,
) -> Figures {
    // The coordinator's reading, as the streamed path's (`super::stream`).
    let stream = Stream {
        function: F,
        prefix: "unify_score",
        buffer: BATCH,
        batch: BATCH,
    };
    Spi::connect_mut(|client| {
        let (ids, ctx) = scoring_context(client, &stream);
        phases.mark("households");
        write_block_keys(client, &stream, model);
        phases.mark("block_keys");
        let (mut stats, _) = rule_figures(client, &stream, model, BLOCK_KEYS);
        phases.mark("block sizes");
        run(client, "SELECT unify._citus_score_table()");
        run(client, "TRUNCATE unify._score_members");
        write_members(client, model, &ctx, BLOCK_KEYS, SCORE_MEMBERS, F);
        phases.mark("members");
        score_blocks(client, &ids);
        phases.mark("score on the workers");
        // The candidates per rule (the kernel counts every candidate, stored or not).
        let counts = client
            .select(
                "SELECT (key_hash & 255)::int, sum(candidates)::bigint FROM pg_temp.unify_score_results GROUP BY 1",
                None,
                &[],
            )
            .unwrap_or_else(|e| spi_failed(e, F));
        for row in counts {
            let rule = row.get::<i32>(1).ok().flatten().unwrap_or_default() as usize;
            let n = row.get::<i64>(2).ok().flatten().unwrap_or_default();
            if let Some(s) = stats.get_mut(rule) {
                s.new_pairs += n as u64;
            }
        }
        let (stored, matches, forced) = write_results(client, version);
        phases.mark("write pairs");
        // Dropped with its shards: nothing of the run stays on the workers, and no table outside
        // the extension stays in its schema (DROP EXTENSION, pg_dump).
        run(client, "DROP TABLE unify._score_members");
        run(client, "DROP TABLE pg_temp.unify_score_results");
        run(
            client,
            "UPDATE unify.matching_state SET scored_on = 'workers'",
        );
        let candidate_pairs =
            (!stats.is_empty()).then(|| stats.iter().map(|s| s.new_pairs as i64).sum());
        write_blocking_stats(client, &stats);
        (candidate_pairs, stored, matches, forced)
    })
}

/// The records of the valid blocks of the keys in `keys` (at least two records, within their
/// rule's limit), each with its valid keys and its context, into `table` (made by
/// unify._citus_member_table): one row per record and valid key, shipped to the key's shard.
fn write_members(
    client: &mut SpiClient<'_>,
    model: &Model,
    ctx: &Context,
    keys: &str,
    table_name: &str,
    f: &'static str,
) {
    let run = |client: &mut SpiClient<'_>, statement: &str| {
        client
            .update(statement, None, &[])
            .unwrap_or_else(|e| spi_failed(e, f));
    };
    let limits = model
        .blocking_rules
        .iter()
        .map(|r| r.max_block_size.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let cols = RECORD_COLUMNS
        .split(',')
        .map(|c| format!("r.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    run(
        client,
        &format!(
            "DECLARE unify_score_members NO SCROLL CURSOR FOR
             SELECT {cols}, rv.hashes::text FROM (
                 SELECT bk.record_id, array_agg(bk.key_hash ORDER BY bk.key_hash) AS hashes
                 FROM {keys} bk
                 JOIN (SELECT key_hash FROM {keys} GROUP BY key_hash
                       HAVING count(*) >= 2 AND count(*) <= ('{{{limits}}}'::bigint[])[(key_hash & 255) + 1]) v
                   USING (key_hash)
                 GROUP BY bk.record_id) rv
             JOIN unify.records r ON r.record_id = rv.record_id"
        ),
    );
    loop {
        let table = client
            .update(
                &format!("FETCH FORWARD {BATCH} FROM unify_score_members"),
                None,
                &[],
            )
            .unwrap_or_else(|e| spi_failed(e, f));
        let rows = in_own_context(|| {
            table
                .map(|row| Member::of(&row, ctx, f))
                .collect::<Vec<_>>()
        });
        free_last_result();
        if rows.is_empty() {
            break;
        }
        insert_members(client, rows, table_name, f);
    }
    // Not analyzed: the shards' GROUP BY plans well enough without statistics, and ANALYZE of
    // the 32 shards cost a third of a second at 100,000 member rows.
    run(client, "CLOSE unify_score_members");
}

/// A record as unify._score_members holds it: the values of [`RECORD_COLUMNS`] as read (the
/// worker prepares them as `record_from_row` does), its valid keys and its context.
struct Member {
    id: i64,
    source_id: i32,
    text: [Option<String>; 12],
    birth_date: Option<pgrx::datum::Date>,
    valid_keys: String,
    ctx: MemberContext,
}

/// The text columns of [`RECORD_COLUMNS`] by position (1-based), as the kernel takes them.
const TEXT_COLUMNS: [usize; 12] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15];

impl Member {
    fn of(row: &pgrx::spi::SpiHeapTupleData, ctx: &Context, f: &'static str) -> Self {
        let record = record_from_row(row, f);
        let text = TEXT_COLUMNS.map(|i| row.get::<String>(i).unwrap_or_else(|e| spi_failed(e, f)));
        Member {
            id: record.id,
            source_id: record.source_id,
            birth_date: row
                .get::<pgrx::datum::Date>(13)
                .unwrap_or_else(|e| spi_failed(e, f)),
            valid_keys: row.get::<String>(16).ok().flatten().unwrap_or_default(),
            ctx: MemberContext::of(&record, ctx),
            text,
        }
    }
}

/// One statement: every member row of `members` into `table`.
fn insert_members(client: &mut SpiClient<'_>, members: Vec<Member>, table: &str, f: &'static str) {
    let n = members.len();
    let mut ids = Vec::with_capacity(n);
    let mut sources = Vec::with_capacity(n);
    let mut text: Vec<Vec<Option<String>>> = (0..12).map(|_| Vec::with_capacity(n)).collect();
    let mut births = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut tf: Vec<Vec<Option<f64>>> = (0..4).map(|_| Vec::with_capacity(n)).collect();
    let mut household: Vec<Vec<bool>> = (0..3).map(|_| Vec::with_capacity(n)).collect();
    for m in members {
        // A phone or mobile that is a household value (the prepared phones are the values
        // read, blanks dropped).
        let is_household = |v: &Option<String>| {
            v.as_ref()
                .is_some_and(|p| m.ctx.household_phones.contains(p))
        };
        household[0].push(m.ctx.email_household);
        household[1].push(is_household(&m.text[4]));
        household[2].push(is_household(&m.text[5]));
        tf[0].push(m.ctx.first_name_tf);
        tf[1].push(m.ctx.first_name_as_last_tf);
        tf[2].push(m.ctx.last_name_tf);
        tf[3].push(m.ctx.last_name_as_first_tf);
        ids.push(m.id);
        sources.push(m.source_id);
        births.push(m.birth_date);
        keys.push(m.valid_keys);
        for (column, value) in text.iter_mut().zip(m.text) {
            column.push(value);
        }
    }
    update_with(
        client,
        &format!("INSERT INTO {table} (key_hash, record_id, source_id, first_name, last_name, email,
                     email_key, phone, mobile, street, house_number, postcode, city, external_id, customer_number,
                     birth_date, valid_keys, first_name_tf, first_name_as_last_tf, last_name_tf,
                     last_name_as_first_tf, email_household, phone_household, mobile_household)
                 SELECT k.k, u.record_id, u.source_id, u.first_name, u.last_name, u.email, u.email_key, u.phone,
                     u.mobile, u.street, u.house_number, u.postcode, u.city, u.external_id, u.customer_number,
                     u.birth_date, u.valid_keys::bigint[], u.f1, u.f2, u.f3, u.f4, u.h1, u.h2, u.h3
                 FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                     $15::date[], $16::text[], $17::float8[], $18::float8[], $19::float8[], $20::float8[],
                     $21::boolean[], $22::boolean[], $23::boolean[])
                     AS u (record_id, source_id, first_name, last_name, email, email_key, phone, mobile, street,
                           house_number, postcode, city, external_id, customer_number, birth_date, valid_keys,
                           f1, f2, f3, f4, h1, h2, h3),
                 LATERAL unnest(u.valid_keys::bigint[]) AS k (k)"),
        || {
            let mut args: Vec<pgrx::datum::DatumWithOid> = vec![ids.into(), sources.into()];
            args.extend(text.into_iter().map(Into::into));
            args.push(births.into());
            args.push(keys.into());
            args.extend(tf.into_iter().map(Into::into));
            args.extend(household.into_iter().map(Into::into));
            args
        },
        f,
    );
}

/// The distributed query: every block of unify._score_members scored by the kernel on the
/// worker holding its shard, the results into the temporary unify_score_results.
fn score_blocks(client: &mut SpiClient<'_>, ids: &HashMap<String, i32>) {
    drop_temp_tables(client, &["pg_temp.unify_score_results"], F);
    run(
        client,
        "CREATE TEMP TABLE unify_score_results (key_hash bigint, candidates int, record_a bigint[],
             record_b bigint[], match_weight float8[], match_probability float8[], is_match boolean[],
             forced_by text[], blocking_rules text[], weights text[]) ON COMMIT DROP",
    );
    // The model's text as unify.get_model() gives it, the text `current_model` parsed: the
    // workers parse the same text the same way, so every number of the model is the same bits
    // (serde_json's float parsing is exact for a text only up to a last-place rounding, so a
    // re-serialized model could differ).
    let model_json = client
        .select("SELECT unify.get_model()::text", None, &[])
        .unwrap_or_else(|e| spi_failed(e, F))
        .first()
        .get::<String>(1)
        .unwrap_or_else(|e| spi_failed(e, F))
        .unwrap_or_default();
    let (names, source_ids): (Vec<String>, Vec<i32>) =
        ids.iter().map(|(n, i)| (n.clone(), *i)).unzip();
    // The members of a block in any order: a block's candidates and their scores do not
    // depend on it (each pair is oriented by record id), and unify.pairs is written in
    // (record_a, record_b) order. (An ORDER BY in each of the 23 aggregates would sort every
    // block 23 times.)
    client
        .update(
            "INSERT INTO pg_temp.unify_score_results
             SELECT g.key_hash, (g.b).* FROM (
                 SELECT m.key_hash,
                        unify._score_block($1, $2, $3, m.key_hash,
                            array_agg(m.record_id), array_agg(m.source_id),
                            array_agg(m.first_name), array_agg(m.last_name),
                            array_agg(m.email), array_agg(m.email_key),
                            array_agg(m.phone), array_agg(m.mobile),
                            array_agg(m.street), array_agg(m.house_number),
                            array_agg(m.postcode), array_agg(m.city),
                            array_agg(m.birth_date), array_agg(m.external_id),
                            array_agg(m.customer_number),
                            array_agg(m.valid_keys::text),
                            array_agg(m.first_name_tf), array_agg(m.first_name_as_last_tf),
                            array_agg(m.last_name_tf), array_agg(m.last_name_as_first_tf),
                            array_agg(m.email_household), array_agg(m.phone_household),
                            array_agg(m.mobile_household)) AS b
                 FROM unify._score_members m
                 GROUP BY m.key_hash) g",
            None,
            &[model_json.into(), names.into(), source_ids.into()],
        )
        .unwrap_or_else(|e| spi_failed(e, F));
}

/// unify.pairs anew from the workers' results (emptied, filled without its indexes, built
/// after, as the single-node path does); the stored, matching and forced pairs.
fn write_results(client: &mut SpiClient<'_>, version: Option<i32>) -> (i64, i64, i64) {
    run(client, "TRUNCATE unify.pairs");
    let rebuild = drop_indexes(client, "unify.pairs", true, F);
    client
        .update(
            "INSERT INTO unify.pairs (record_a, record_b, match_weight, match_probability, is_match, forced_by,
                                      blocking_rules, weights, model_version)
             SELECT u.a, u.b, u.w, u.p, u.m, u.f, string_to_array(u.r, E'\\x1f'), u.j::jsonb, $1
             FROM pg_temp.unify_score_results s,
                  unnest(s.record_a, s.record_b, s.match_weight, s.match_probability, s.is_match, s.forced_by,
                         s.blocking_rules, s.weights) AS u (a, b, w, p, m, f, r, j)
             ORDER BY u.a, u.b",
            None,
            &[version.into()],
        )
        .unwrap_or_else(|e| spi_failed(e, F));
    rebuild_indexes(client, rebuild, F);
    let row = client
        .select(
            "SELECT count(*), count(*) FILTER (WHERE is_match), count(forced_by) FROM unify.pairs",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e, F));
    let row = row.first();
    let get = |i: usize| row.get::<i64>(i).ok().flatten().unwrap_or_default();
    (get(1), get(2), get(3))
}

/// One block's members as the kernels receive them: one array per column of the member table
/// (`unify._citus_member_table`), the members in any order.
struct MemberArrays {
    record_id: Vec<Option<i64>>,
    source_id: Vec<Option<i32>>,
    /// first_name, last_name, email, email_key, phone, mobile, street, house_number, postcode,
    /// city, external_id, customer_number.
    text: [Vec<Option<String>>; 12],
    birth_date: Vec<Option<pgrx::datum::Date>>,
    valid_keys: Vec<Option<String>>,
    /// first_name_tf, first_name_as_last_tf, last_name_tf, last_name_as_first_tf.
    tf: [Vec<Option<f64>>; 4],
    /// email_household, phone_household, mobile_household.
    household: [Vec<Option<bool>>; 3],
}

impl MemberArrays {
    /// The members prepared as `record_from_row` prepares a row of [`RECORD_COLUMNS`], with
    /// their contexts and valid keys. Raises 22023 (naming `kernel` and its `caller`) when the
    /// arrays differ in length or a key list is no bigint[] literal.
    fn members(
        self,
        key_hash: i64,
        kernel: &'static str,
        caller: &str,
    ) -> (Vec<MatchRecord>, Vec<MemberContext>, Vec<Vec<i64>>) {
        let n = self.record_id.len();
        let lengths = [
            self.source_id.len(),
            self.birth_date.len(),
            self.valid_keys.len(),
        ]
        .into_iter()
        .chain(self.text.iter().map(Vec::len))
        .chain(self.tf.iter().map(Vec::len))
        .chain(self.household.iter().map(Vec::len));
        if lengths.into_iter().any(|l| l != n) {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("the member arrays of block {key_hash} differ in length"),
                None,
                &format!("{caller} calls this with one array per column of its member table."),
                kernel,
            );
        }
        let MemberArrays {
            record_id,
            source_id,
            text,
            birth_date,
            valid_keys,
            tf,
            household,
        } = self;
        let mut records = Vec::with_capacity(n);
        let mut contexts = Vec::with_capacity(n);
        let mut valid = Vec::with_capacity(n);
        let mut text = text.map(Vec::into_iter);
        for i in 0..n {
            let mut next = |c: usize| text[c].next().flatten();
            let (first, last, mail, mail_key, ph, mob) =
                (next(0), next(1), next(2), next(3), next(4), next(5));
            let (st, house, post, town, ext, cust) =
                (next(6), next(7), next(8), next(9), next(10), next(11));
            let flag = |v: &[Option<bool>]| v[i].unwrap_or(false);
            // The household phones among the values read (the prepared phones are those, blanks
            // dropped).
            let household_phones = [(&ph, flag(&household[1])), (&mob, flag(&household[2]))]
                .into_iter()
                .filter_map(|(p, h)| p.clone().filter(|_| h))
                .collect();
            contexts.push(MemberContext {
                first_name_tf: tf[0][i],
                first_name_as_last_tf: tf[1][i],
                last_name_tf: tf[2][i],
                last_name_as_first_tf: tf[3][i],
                email_household: flag(&household[0]),
                household_phones,
            });
            // As record_from_row reads a row of RECORD_COLUMNS.
            records.push(
                MatchRecord {
                    id: record_id[i].unwrap_or_default(),
                    source_id: source_id[i].unwrap_or_default(),
                    first_name: first,
                    last_name: last,
                    email: mail,
                    email_key: mail_key,
                    phones: [ph, mob].into_iter().flatten().collect(),
                    street: st,
                    house_number: house,
                    postcode: post,
                    city: town,
                    birth_date: birth_date[i]
                        .filter(pgrx::datum::Date::is_finite)
                        .and_then(|d| iso_date_from_pg_days(d.to_pg_epoch_days())),
                    external_id: ext,
                    customer_number: cust,
                    ..Default::default()
                }
                .prepare(),
            );
            let keys = valid_keys[i].as_deref().unwrap_or("{}");
            valid.push(
                keys.trim_matches(|c| c == '{' || c == '}')
                    .split(',')
                    .filter(|k| !k.is_empty())
                    .map(|k| k.trim().parse::<i64>())
                    .collect::<Result<Vec<i64>, _>>()
                    .unwrap_or_else(|e| {
                        raise(
                            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                            format!("invalid valid keys {keys:?} of block {key_hash}: {e}"),
                            None,
                            &format!("{caller} passes each member's valid block keys as a bigint[] literal."),
                            kernel,
                        )
                    }),
            );
        }
        (records, contexts, valid)
    }
}

thread_local! {
    /// The model of the last call, by its JSON text: the kernel runs once per block with the
    /// same model, parsed once per backend (a comparison of the text instead of a parse).
    static MODEL: RefCell<Option<(String, Rc<Model>)>> = const { RefCell::new(None) };
}

fn model_of(json: &str) -> Rc<Model> {
    if let Some(m) = MODEL.with(|m| {
        m.borrow()
            .as_ref()
            .filter(|(text, _)| text == json)
            .map(|(_, model)| model.clone())
    }) {
        return m;
    }
    let value = serde_json::from_str(json).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid model: {e}"),
            None,
            "unify.score_pairs passes unify.get_model()::text; call it, not this function.",
            "_score_block",
        )
    });
    let model = Rc::new(parse_model(value, "_score_block"));
    MODEL.with(|m| *m.borrow_mut() = Some((json.to_string(), model.clone())));
    model
}

/// The kernel of the distributed scoring: one block's members (arrays in one order, any
/// order of the members, the values of unify._score_members) scored with `model` (its JSON text) and the source ids by
/// name; the block's candidate count and its pairs at or above the review threshold (or
/// forced), as unify.pairs holds them (rule names joined by U+001F, weights as JSON text).
/// Reads no table: runs on a Citus worker.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(immutable, strict, parallel_safe)]
fn _score_block(
    model: &str,
    source_names: Vec<Option<String>>,
    source_ids: Vec<Option<i32>>,
    key_hash: i64,
    record_id: Vec<Option<i64>>,
    source_id: Vec<Option<i32>>,
    first_name: Vec<Option<String>>,
    last_name: Vec<Option<String>>,
    email: Vec<Option<String>>,
    email_key: Vec<Option<String>>,
    phone: Vec<Option<String>>,
    mobile: Vec<Option<String>>,
    street: Vec<Option<String>>,
    house_number: Vec<Option<String>>,
    postcode: Vec<Option<String>>,
    city: Vec<Option<String>>,
    birth_date: Vec<Option<pgrx::datum::Date>>,
    external_id: Vec<Option<String>>,
    customer_number: Vec<Option<String>>,
    valid_keys: Vec<Option<String>>,
    first_name_tf: Vec<Option<f64>>,
    first_name_as_last_tf: Vec<Option<f64>>,
    last_name_tf: Vec<Option<f64>>,
    last_name_as_first_tf: Vec<Option<f64>>,
    email_household: Vec<Option<bool>>,
    phone_household: Vec<Option<bool>>,
    mobile_household: Vec<Option<bool>>,
) -> TableIterator<
    'static,
    (
        name!(candidates, i32),
        name!(record_a, Vec<i64>),
        name!(record_b, Vec<i64>),
        name!(match_weight, Vec<f64>),
        name!(match_probability, Vec<f64>),
        name!(is_match, Vec<bool>),
        name!(forced_by, Vec<Option<String>>),
        name!(blocking_rules, Vec<String>),
        name!(weights, Vec<String>),
    ),
> {
    const K: &str = "_score_block";
    let arrays = MemberArrays {
        record_id,
        source_id,
        text: [
            first_name,
            last_name,
            email,
            email_key,
            phone,
            mobile,
            street,
            house_number,
            postcode,
            city,
            external_id,
            customer_number,
        ],
        birth_date,
        valid_keys,
        tf: [
            first_name_tf,
            first_name_as_last_tf,
            last_name_tf,
            last_name_as_first_tf,
        ],
        household: [email_household, phone_household, mobile_household],
    };
    if source_names.len() != source_ids.len() {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("the source arrays of block {key_hash} differ in length"),
            None,
            "unify.score_pairs calls this with the source names and their ids.",
            K,
        );
    }
    let model = model_of(model);
    let ids: HashMap<String, i32> = source_names
        .into_iter()
        .zip(source_ids)
        .filter_map(|(n, i)| Some((n?, i?)))
        .collect();
    let (records, contexts, valid) = arrays.members(key_hash, K, "unify.score_pairs");
    let cands = block_candidates(key_hash, &records, &valid).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("block {key_hash}: {e}"),
            None,
            "unify.score_pairs passes each member with the valid keys of its record, this block's among them.",
            K,
        )
    });
    let ctx = block_context(records.iter().zip(&contexts));
    let scorer = Scorer::new(&model, &ctx, &ids);
    let rows = pair_rows(&model, &scorer, &records, &cands);
    let mut out = (
        cands.len() as i32,
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
        Vec::with_capacity(rows.len()),
    );
    for r in rows {
        out.1.push(r.record_a);
        out.2.push(r.record_b);
        out.3.push(r.match_weight);
        out.4.push(r.match_probability);
        out.5.push(r.is_match);
        out.6.push(r.forced_by);
        out.7.push(r.blocking_rules.join(RULE_SEPARATOR));
        out.8.push(r.weights);
    }
    TableIterator::once(out)
}

/// unify.train on a Citus cluster (issue 27): the candidates of the valid blocks of the keys in
/// `keys` (the training's, made from the same records as on a single node) compared on the
/// workers and counted per pair key there, block by block by the kernel unify._tally_block;
/// the counts summed on the coordinator (whole numbers: exact in any order). When the rules
/// may yield more candidates than `em_pairs`, a first pass counts the candidates per rule
/// combination (the chances of the EM sample, as a single node draws it), a second draws and
/// compares. The sample (EM, u and the prior are then estimated on the coordinator from it) and
/// the candidates; the new pairs per rule into `stats`.
pub(super) fn tally_on_workers(
    client: &mut SpiClient<'_>,
    model: &Model,
    keys: &str,
    ctx: &Context,
    em_pairs: usize,
    seed: u64,
    stats: &mut [RuleStats],
) -> (Sample, usize) {
    const T: &str = "train";
    let run = |client: &mut SpiClient<'_>, statement: &str| {
        client
            .update(statement, None, &[])
            .unwrap_or_else(|e| spi_failed(e, T));
    };
    run(client, "SELECT unify._citus_member_table('_train_members')");
    run(client, &format!("TRUNCATE {TRAIN_MEMBERS}"));
    write_members(client, model, ctx, keys, TRAIN_MEMBERS, T);
    drop_temp_tables(client, &["pg_temp.unify_train_tallies"], T);
    run(
        client,
        "CREATE TEMP TABLE unify_train_tallies (key_hash bigint, candidates bigint, rule_sets int[],
             rule_counts bigint[], outcomes bigint[], rules int[], first_name_tf bigint[],
             last_name_tf bigint[], pairs bigint[]) ON COMMIT DROP",
    );
    // The rules' pairs bound the candidates (a pair of several rules is one candidate): within
    // em_pairs, every candidate is in the sample and one pass does.
    let bound: u64 = stats.iter().map(|s| s.pairs).sum();
    let chances = if em_pairs > 0 && bound > em_pairs as u64 {
        tally_blocks(client, &Chances::new(0), seed, false);
        let counted = counted_chances(client, em_pairs);
        run(client, "TRUNCATE pg_temp.unify_train_tallies");
        counted
    } else {
        Chances::new(0)
    };
    tally_blocks(client, &chances, seed, true);
    // The candidates per rule (the kernel counts every candidate, drawn or not), as
    // score_pairs counts them.
    let mut candidates = 0usize;
    for row in client
        .select(
            "SELECT (key_hash & 255)::int, sum(candidates)::bigint FROM pg_temp.unify_train_tallies GROUP BY 1",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e, T))
    {
        let rule = row.get::<i32>(1).ok().flatten().unwrap_or_default() as usize;
        let n = row.get::<i64>(2).ok().flatten().unwrap_or_default();
        candidates += n as usize;
        if let Some(s) = stats.get_mut(rule) {
            s.new_pairs += n as u64;
        }
    }
    // All drawn in one pass: the chances (all 1, as the weights) from the candidates it counted.
    let chances = if chances.takes_all() {
        counted_chances(client, em_pairs)
    } else {
        chances
    };
    // The counts per key summed over the blocks (numeric sums of bigints: exact).
    let mut pairs = PairCounts::default();
    let cursor = Cursor::open(
        client,
        "unify_train_counts",
        "SELECT u.o, u.r, u.f, u.l, sum(u.n)::bigint FROM pg_temp.unify_train_tallies t,
             unnest(t.outcomes, t.rules, t.first_name_tf, t.last_name_tf, t.pairs) AS u (o, r, f, l, n)
         GROUP BY 1, 2, 3, 4",
        20_000,
        T,
    );
    loop {
        let rows = cursor.next(client, |row| {
            let get = |i: usize| row.get::<i64>(i).ok().flatten().unwrap_or_default();
            (
                PairKey {
                    outcome: get(1) as u64,
                    rules: row.get::<i32>(2).ok().flatten().unwrap_or_default() as u32,
                    names: [get(3) as u64, get(4) as u64],
                },
                get(5) as u64,
            )
        });
        if rows.is_empty() {
            break;
        }
        for (key, n) in rows {
            pairs.add_key(key, n);
        }
    }
    cursor.close(client);
    // Dropped with its shards: nothing of the run stays on the workers.
    run(client, &format!("DROP TABLE {TRAIN_MEMBERS}"));
    run(client, "DROP TABLE pg_temp.unify_train_tallies");
    (Sample { pairs, chances }, candidates)
}

/// The chances of a sample of about `em_pairs` from the candidates per rule combination the
/// blocks of unify_train_tallies counted.
fn counted_chances(client: &mut SpiClient<'_>, em_pairs: usize) -> Chances {
    let mut chances = Chances::new(em_pairs);
    for row in client
        .select(
            "SELECT u.r, sum(u.n)::bigint FROM pg_temp.unify_train_tallies t,
                 unnest(t.rule_sets, t.rule_counts) AS u (r, n) GROUP BY u.r ORDER BY u.r",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e, "train"))
    {
        let rules = row.get::<i32>(1).ok().flatten().unwrap_or_default() as u32;
        let n = row.get::<i64>(2).ok().flatten().unwrap_or_default() as u64;
        chances.count(rules, n);
    }
    chances
}

/// The distributed query of a training: every block of unify._train_members tallied by the
/// kernel on the worker holding its shard (`draw`: the sample drawn at `chances` and compared;
/// else only counted), the results into the temporary unify_train_tallies.
fn tally_blocks(client: &mut SpiClient<'_>, chances: &Chances, seed: u64, draw: bool) {
    let sample = serde_json::to_string(&SampleArgs {
        em_pairs: if chances.takes_all() {
            0
        } else {
            chances.em_pairs() as u64
        },
        seed,
        draw,
        per_rules: chances.per_rules(),
    })
    .unwrap_or_default();
    // The members of a block in any order (see score_blocks).
    client
        .update(
            "INSERT INTO pg_temp.unify_train_tallies
             SELECT g.key_hash, (g.b).* FROM (
                 SELECT m.key_hash,
                        unify._tally_block($1, m.key_hash,
                            array_agg(m.record_id), array_agg(m.source_id),
                            array_agg(m.first_name), array_agg(m.last_name),
                            array_agg(m.email), array_agg(m.email_key),
                            array_agg(m.phone), array_agg(m.mobile),
                            array_agg(m.street), array_agg(m.house_number),
                            array_agg(m.postcode), array_agg(m.city),
                            array_agg(m.birth_date), array_agg(m.external_id),
                            array_agg(m.customer_number),
                            array_agg(m.valid_keys::text),
                            array_agg(m.first_name_tf), array_agg(m.first_name_as_last_tf),
                            array_agg(m.last_name_tf), array_agg(m.last_name_as_first_tf),
                            array_agg(m.email_household), array_agg(m.phone_household),
                            array_agg(m.mobile_household)) AS b
                 FROM unify._train_members m
                 GROUP BY m.key_hash) g",
            None,
            &[sample.into()],
        )
        .unwrap_or_else(|e| spi_failed(e, "train"));
}

/// The EM sample a training's kernel draws (its first argument, as JSON text, as scoring's
/// kernel gets the model).
#[derive(serde::Serialize, serde::Deserialize)]
struct SampleArgs {
    /// About how many candidates (0: all of them).
    em_pairs: u64,
    seed: u64,
    /// Whether to draw and compare (else only count the candidates per rule combination).
    draw: bool,
    /// The candidates per rule combination over all blocks (the chances).
    per_rules: Vec<(u32, u64)>,
}

/// The kernel of the distributed training: one block's members (as `_score_block` takes them,
/// from unify._train_members) counted, and (`sample` says whether and how, see [`SampleArgs`])
/// the candidates of the EM sample, drawn by the pair's ids, compared and counted per key
/// (`crate::model::train::PairKey`: outcome, rules, the bits of the two name frequencies).
/// Reads no table: runs on a Citus worker.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(immutable, strict, parallel_safe)]
fn _tally_block(
    sample: &str,
    key_hash: i64,
    record_id: Vec<Option<i64>>,
    source_id: Vec<Option<i32>>,
    first_name: Vec<Option<String>>,
    last_name: Vec<Option<String>>,
    email: Vec<Option<String>>,
    email_key: Vec<Option<String>>,
    phone: Vec<Option<String>>,
    mobile: Vec<Option<String>>,
    street: Vec<Option<String>>,
    house_number: Vec<Option<String>>,
    postcode: Vec<Option<String>>,
    city: Vec<Option<String>>,
    birth_date: Vec<Option<pgrx::datum::Date>>,
    external_id: Vec<Option<String>>,
    customer_number: Vec<Option<String>>,
    valid_keys: Vec<Option<String>>,
    first_name_tf: Vec<Option<f64>>,
    first_name_as_last_tf: Vec<Option<f64>>,
    last_name_tf: Vec<Option<f64>>,
    last_name_as_first_tf: Vec<Option<f64>>,
    email_household: Vec<Option<bool>>,
    phone_household: Vec<Option<bool>>,
    mobile_household: Vec<Option<bool>>,
) -> TableIterator<
    'static,
    (
        name!(candidates, i64),
        name!(block_rule_sets, Vec<i32>),
        name!(block_rule_counts, Vec<i64>),
        name!(key_outcomes, Vec<i64>),
        name!(key_rules, Vec<i32>),
        name!(key_first_name_tf, Vec<i64>),
        name!(key_last_name_tf, Vec<i64>),
        name!(key_pairs, Vec<i64>),
    ),
> {
    const K: &str = "_tally_block";
    const CALLER: &str = "unify.train";
    let sample: SampleArgs = serde_json::from_str(sample).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid sample of block {key_hash}: {e}"),
            None,
            "unify.train passes the EM sample's size, seed and candidates per rule combination.",
            K,
        )
    });
    let arrays = MemberArrays {
        record_id,
        source_id,
        text: [
            first_name,
            last_name,
            email,
            email_key,
            phone,
            mobile,
            street,
            house_number,
            postcode,
            city,
            external_id,
            customer_number,
        ],
        birth_date,
        valid_keys,
        tf: [
            first_name_tf,
            first_name_as_last_tf,
            last_name_tf,
            last_name_as_first_tf,
        ],
        household: [email_household, phone_household, mobile_household],
    };
    let (records, contexts, valid) = arrays.members(key_hash, K, CALLER);
    let mut chances = Chances::new(sample.em_pairs as usize);
    for (r, n) in sample.per_rules {
        chances.count(r, n);
    }
    let tally = tally_block(
        key_hash,
        &records,
        &contexts,
        &valid,
        sample.draw.then_some(&chances),
        sample.seed,
    )
    .unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("block {key_hash}: {e}"),
            None,
            "unify.train passes each member with the valid keys of its record, this block's among them.",
            K,
        )
    });
    let (sets, counts): (Vec<i32>, Vec<i64>) = tally
        .per_rules
        .iter()
        .map(|(r, n)| (*r as i32, *n as i64))
        .unzip();
    let keyed = tally.pairs.sorted();
    TableIterator::once((
        tally.candidates as i64,
        sets,
        counts,
        keyed.iter().map(|(k, _)| k.outcome as i64).collect(),
        keyed.iter().map(|(k, _)| k.rules as i32).collect(),
        keyed.iter().map(|(k, _)| k.names[0] as i64).collect(),
        keyed.iter().map(|(k, _)| k.names[1] as i64).collect(),
        keyed.iter().map(|(_, n)| *n as i64).collect(),
    ))
}
