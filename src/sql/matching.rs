//! The SQL layer over `crate::model`: training, scoring and explanation. Records are read
//! through SPI once per call; the work over pairs happens in Rust, never one SQL call per pair.

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::{json, Map, Value};

use super::errors::raise;
use super::spi::{fetch_all, spi_failed, Args};
use crate::model::blocking::{candidates, Candidate, RuleStats};
use crate::model::comparison::{Context, COMPARISONS};
use crate::model::params::{log2_odds, Model, Scorer};
use crate::model::record::MatchRecord;
use crate::model::train::{train, TrainOptions};

const RECORD_COLUMNS: &str = "record_id, source_id, first_name, last_name, email, email_key, phone, mobile, \
     street, house_number, postcode, city, to_char(birth_date, 'YYYY-MM-DD'), external_id, customer_number";

/// Records matching `filter` (a WHERE clause over unify.records r), read in batches.
fn load_records(
    client: &SpiClient<'_>,
    filter: &str,
    args: Args<'_>,
    function: &'static str,
) -> Vec<MatchRecord> {
    let query = format!("SELECT {RECORD_COLUMNS} FROM unify.records r {filter} ORDER BY record_id");
    fetch_all(client, &query, args, function, |row| {
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
            birth_date: text(13),
            external_id: text(14),
            customer_number: text(15),
            ..Default::default()
        }
        .prepare()
    })
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
    candidates(records, &model.blocking_rules, model.max_candidate_pairs).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            e,
            None,
            "Lower that rule's max_block_size or make its key more specific (SELECT unify.get_model() -> 'blocking_rules'), or raise max_candidate_pairs.",
            function,
        )
    })
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
    let mut model = current_model("train");
    let (records, ids) = load_all("train");
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
    let opts = TrainOptions {
        sample_pairs: sample_pairs as usize,
        max_iterations: max_iterations as usize,
        ..Default::default()
    };
    let report = train(&records, &ctx, &cands, &mut model, &ids, &opts);
    JsonB(json!({"model": model, "report": report, "blocking": stats}))
}

/// Blocks and scores all records with the current model; returns the pairs at or above the
/// review threshold and writes the per-rule blocking figures to unify.blocking_stats.
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
    let model = current_model("score_pairs");
    let (records, ids) = load_all("score_pairs");
    let ctx = Context::build(&records);
    let (cands, stats) = blocked(&records, &model, "score_pairs");
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
    let scorer = Scorer::new(&model, &ctx, &ids);
    let review_weight = log2_odds(model.review_threshold);
    let mut rows = Vec::new();
    for c in &cands {
        let (a, b) = (&records[c.a as usize], &records[c.b as usize]);
        let score = scorer.score(a, b);
        if score.weight < review_weight && score.forced_by.is_none() {
            continue;
        }
        let mut weights = Map::new();
        for comparison in COMPARISONS {
            if let Some(w) = score.weights[comparison.index()] {
                weights.insert(comparison.name().to_string(), json!(w));
            }
        }
        if score.conflict.is_some() {
            weights.insert(
                "identity_conflict".into(),
                json!(scorer.conflict_adjustment(&score.weights)),
            );
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
            score.is_match(&model),
            score.forced_by.map(|i| model.rules[i].name.clone()),
            rules,
            JsonB(Value::Object(weights)),
        ));
    }
    TableIterator::new(rows)
}

/// Why two records score as they do: the prior, then per comparison the level hit, the values
/// compared, m, u and the weight. The weights sum to the pair's match weight.
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
    let (pair, context_records, ids, counts) =
        Spi::connect(|client| {
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
            let counts = client
            .select(
                "SELECT count(*) FILTER (WHERE first_name = $1)::float8, count(first_name)::float8,
                        count(*) FILTER (WHERE last_name = $2)::float8, count(last_name)::float8
                 FROM unify.records",
                None,
                &[a.first_name.clone().into(), a.last_name.clone().into()],
            )
            .and_then(|t| {
                let t = t.first();
                Ok((t.get::<f64>(1)?, t.get::<f64>(2)?, t.get::<f64>(3)?, t.get::<f64>(4)?))
            })
            .unwrap_or_else(|e| spi_failed(e, "explain_match"));
            ((a, b), sharing, source_ids(client), counts)
        });
    let (a, b) = pair;
    let mut ctx = Context::build(&context_records);
    ctx.first_name_tf.clear();
    ctx.last_name_tf.clear();
    if let (Some(name), (Some(n), Some(total), _, _)) = (&a.first_name, counts) {
        if total > 0.0 {
            ctx.first_name_tf.insert(name.clone(), n / total);
        }
    }
    if let (Some(name), (_, _, Some(n), Some(total))) = (&a.last_name, counts) {
        if total > 0.0 {
            ctx.last_name_tf.insert(name.clone(), n / total);
        }
    }
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
