//! Training: u from random pairs, m by EM per blocking rule, over all records.

use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;

use super::super::errors::raise;
use super::model::current_model;
use super::records::load_all;
use super::run::{workers, Phases};
use super::score::blocked;
use crate::model::comparison::Context;
use crate::model::train::{train, TrainOptions};

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
