//! Explanation: why two records score as they do.

use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::super::errors::raise;
use super::frequencies::load_frequencies;
use super::model::current_model;
use super::records::{load_records, source_ids};
use crate::model::comparison::Context;
use crate::model::scorer::Scorer;

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
        // Scored as unify.pairs holds the pair, the lower id first (see Scorer::score_pair):
        // the comparison of crosswise names depends on the order.
        let (a, b) = if b.id < a.id { (b, a) } else { (a, b) };
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
    // The values as the caller named the records.
    let flipped = a.id != record_a;
    TableIterator::new(terms.into_iter().map(move |t| {
        let (value_a, value_b) = if flipped {
            (t.value_b, t.value_a)
        } else {
            (t.value_a, t.value_b)
        };
        (
            t.term.to_string(),
            t.level.map(str::to_string),
            value_a,
            value_b,
            t.m,
            t.u,
            t.weight,
            t.note,
        )
    }))
}
