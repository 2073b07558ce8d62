//! Next best product: the co-purchase model of the pure `recommend` module for
//! unify.refresh_recommendations (recommendations.sql), which passes the purchase pairs as arrays.

use crate::recommend::{self, Params};
use pgrx::prelude::*;

use super::errors::raise;

/// The `neighbours` best neighbours of every product bought, from parallel arrays of
/// (person, product index, weight) purchases.
#[pg_extern(immutable, strict, parallel_safe)]
#[allow(clippy::type_complexity)] // the column names must be spelled out for pgrx
fn _product_neighbours(
    persons: Vec<i64>,
    products: Vec<i32>,
    weights: Vec<f64>,
    neighbours: i32,
    alpha: f64,
    damping: f64,
    shrink: f64,
) -> TableIterator<
    'static,
    (
        name!(product, i32),
        name!(neighbour, i32),
        name!(score, f64),
    ),
> {
    const F: &str = "refresh_recommendations";
    if neighbours < 1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("neighbours must be at least 1, not {neighbours}"),
            None,
            "For example 100 neighbours per product.",
            F,
        );
    }
    let params = Params {
        k: neighbours as usize,
        alpha,
        damping,
        shrink,
    };
    let threads = crate::parallel::threads_for(unsafe { pg_sys::max_parallel_workers_per_gather });
    let model = recommend::neighbours(&persons, &products, &weights, params, threads).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            e.to_string(),
            None,
            "Weights are in (0, 1]; alpha is between 0 and 1 (0.5 = cosine); damping and shrink are 0 or more.",
            F,
        )
    });
    TableIterator::new(
        model
            .into_iter()
            .map(|n| (n.product as i32, n.neighbour as i32, n.score)),
    )
}
