//! Predictions: the model fits and per-person predictions over the pure `segment` module.
//! unify.fit_predictions (segments.sql) aggregates transactions to customer summaries in SQL,
//! groups identical summaries, and calls these.

use crate::segment::beta_binomial::{self, Returns};
use crate::segment::gamma_gamma::{self, Spend};
use crate::segment::{models, Fit, Model, Summary};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::json;

use super::errors::raise;

fn checked_model(name: &str, function: &'static str) -> Model {
    Model::parse(name).unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown purchase model \"{name}\""),
            None,
            "Use 'bgnbd' (BG/NBD, the default) or 'pareto_nbd' (Pareto/NBD).",
            function,
        )
    })
}

/// The parallel arrays of a fit must have one element per customer summary each.
fn check_lengths(others: &[usize], n: usize, names: &str, function: &'static str) {
    if others.iter().any(|&len| len != n) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{names} must have the same length"),
            None,
            "Pass one element per customer summary.",
            function,
        );
    }
}

/// A fit as one row: the parameters by name (stored in unify.prediction_fits) and in the
/// model's order (passed on to `_predict`), the log-likelihood (NULL if not finite),
/// convergence, evaluations and status. Named columns, so PL/pgSQL reads no JSON by key. (The
/// #[pg_extern]s spell the type out: pgrx reads the column names from the signature.)
type FitRow = TableIterator<
    'static,
    (
        name!(params, JsonB),
        name!(param_values, Vec<f64>),
        name!(log_likelihood, Option<f64>),
        name!(converged, bool),
        name!(evaluations, i32),
        name!(status, String),
    ),
>;

fn fit_row(fit: &Fit, names: &[&str]) -> FitRow {
    let params: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .zip(&fit.params)
        .map(|(n, v)| (n.to_string(), json!(v)))
        .collect();
    TableIterator::once((
        JsonB(serde_json::Value::Object(params)),
        fit.params.clone(),
        fit.log_likelihood.is_finite().then_some(fit.log_likelihood),
        fit.converged,
        i32::try_from(fit.iterations).unwrap_or(i32::MAX),
        fit.status.to_string(),
    ))
}

/// Fits BG/NBD or Pareto/NBD to customer summaries (one array element per distinct summary,
/// `weight` customers each). A failed fit comes back with converged = false and a status.
#[pg_extern(immutable, strict, parallel_safe)]
#[allow(clippy::type_complexity)] // the column names must be spelled out for pgrx
fn _fit_purchases(
    model: &str,
    frequency: Vec<f64>,
    recency: Vec<f64>,
    age: Vec<f64>,
    weight: Vec<f64>,
) -> TableIterator<
    'static,
    (
        name!(params, JsonB),
        name!(param_values, Vec<f64>),
        name!(log_likelihood, Option<f64>),
        name!(converged, bool),
        name!(evaluations, i32),
        name!(status, String),
    ),
> {
    let model = checked_model(model, "_fit_purchases");
    let n = frequency.len();
    check_lengths(
        &[recency.len(), age.len(), weight.len()],
        n,
        "frequency, recency, age and weight",
        "_fit_purchases",
    );
    let customers: Vec<Summary> = (0..n)
        .map(|i| Summary {
            frequency: frequency[i],
            recency: recency[i],
            age: age[i],
            weight: weight[i],
        })
        .collect();
    let fit = models::fit(model, &customers);
    fit_row(&fit, &model.param_names())
}

/// Fits Gamma-Gamma to repeat buyers' mean spend (non-repeat buyers are ignored).
#[pg_extern(immutable, strict, parallel_safe)]
#[allow(clippy::type_complexity)] // the column names must be spelled out for pgrx
fn _fit_spend(
    frequency: Vec<f64>,
    mean_spend: Vec<f64>,
    weight: Vec<f64>,
) -> TableIterator<
    'static,
    (
        name!(params, JsonB),
        name!(param_values, Vec<f64>),
        name!(log_likelihood, Option<f64>),
        name!(converged, bool),
        name!(evaluations, i32),
        name!(status, String),
    ),
> {
    let n = frequency.len();
    check_lengths(
        &[mean_spend.len(), weight.len()],
        n,
        "frequency, mean_spend and weight",
        "_fit_spend",
    );
    let buyers: Vec<Spend> = (0..n)
        .map(|i| Spend {
            frequency: frequency[i],
            mean_spend: mean_spend[i],
            weight: weight[i],
        })
        .collect();
    fit_row(&gamma_gamma::fit(&buyers), &["p", "q", "gamma"])
}

/// One person's predictions: {p_alive, expected purchases within horizon_weeks, expected spend
/// per purchase, CLV}. CLV sums, per month, the expected purchases of that month times the
/// expected spend, discounted: `month_weeks` holds the weeks from the end of the calibration
/// period to the end of each month, `monthly_discount` the rate per month. A value the model
/// cannot give (no spend fit, infinite expectation) is NULL.
#[pg_extern(immutable, parallel_safe)]
#[allow(clippy::too_many_arguments)]
fn _predict(
    model: &str,
    params: Vec<f64>,
    spend_params: Option<Vec<f64>>,
    frequency: f64,
    recency: f64,
    age: f64,
    mean_spend: Option<f64>,
    horizon_weeks: f64,
    month_weeks: Vec<f64>,
    monthly_discount: f64,
) -> Vec<Option<f64>> {
    let model = checked_model(model, "_predict");
    if params.len() != 4 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{} takes 4 parameters, not {}", model.name(), params.len()),
            None,
            "Pass the params of a fit in unify.prediction_fits.",
            "_predict",
        );
    }
    let c = Summary {
        frequency,
        recency,
        age,
        weight: 1.0,
    };
    if crate::segment::check_summary(&c).is_err() {
        return vec![None, None, None, None];
    }
    let alive = model.p_alive(&params, &c);
    let expected = model.expected_purchases(&params, &c, horizon_weeks);
    let spend = spend_params
        .filter(|p| p.len() == 3)
        .and_then(|p| gamma_gamma::expected_spend(&p, frequency, mean_spend.unwrap_or(f64::NAN)));
    let clv = spend.and_then(|spend| {
        let mut total = 0.0;
        let mut before = 0.0;
        for (month, weeks) in month_weeks.iter().enumerate() {
            let upto = model.expected_purchases(&params, &c, *weeks)?;
            total += (upto - before) * spend / (1.0 + monthly_discount).powi(month as i32 + 1);
            before = upto;
        }
        Some(total)
    });
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    vec![
        finite(Some(alive)),
        finite(expected),
        finite(spend),
        finite(clv),
    ]
}

/// P(at least one purchase in the next `weeks` weeks after the calibration period) of one
/// person under a fit's parameters; NULL where the summary is invalid or a series does not
/// converge.
#[pg_extern(immutable, strict, parallel_safe)]
fn _p_purchase(
    model: &str,
    params: Vec<f64>,
    frequency: f64,
    recency: f64,
    age: f64,
    weeks: f64,
) -> Option<f64> {
    let model = checked_model(model, "_p_purchase");
    if params.len() != 4 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{} takes 4 parameters, not {}", model.name(), params.len()),
            None,
            "Pass the params of a fit in unify.prediction_fits.",
            "_p_purchase",
        );
    }
    let c = Summary {
        frequency,
        recency,
        age,
        weight: 1.0,
    };
    if crate::segment::check_summary(&c).is_err() || !weeks.is_finite() {
        return None;
    }
    model.p_purchase(&params, &c, weeks)
}

/// Fits the beta-binomial of return rates over persons' (returns, orders), one array element
/// per distinct pair, `weight` persons each; parameters alpha, beta.
#[pg_extern(immutable, strict, parallel_safe)]
#[allow(clippy::type_complexity)] // the column names must be spelled out for pgrx
fn _fit_returns(
    returns: Vec<f64>,
    orders: Vec<f64>,
    weight: Vec<f64>,
) -> TableIterator<
    'static,
    (
        name!(params, JsonB),
        name!(param_values, Vec<f64>),
        name!(log_likelihood, Option<f64>),
        name!(converged, bool),
        name!(evaluations, i32),
        name!(status, String),
    ),
> {
    let n = returns.len();
    check_lengths(
        &[orders.len(), weight.len()],
        n,
        "returns, orders and weight",
        "_fit_returns",
    );
    let persons: Vec<Returns> = (0..n)
        .map(|i| Returns {
            returns: returns[i],
            orders: orders[i],
            weight: weight[i],
        })
        .collect();
    fit_row(&beta_binomial::fit(&persons), &["alpha", "beta"])
}
