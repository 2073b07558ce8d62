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
