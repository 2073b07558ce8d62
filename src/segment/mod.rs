//! Segments and predictions, pure Rust: the buy-till-you-die models (BG/NBD, Pareto/NBD) for
//! purchase counts, Gamma-Gamma for spend, their maximum-likelihood fits and the per-customer
//! predictions. RFM scoring is set-based SQL (window functions) and lives in `src/sql/segments.sql`.
//!
//! Time is in weeks, as in the papers, so fitted parameters compare with published estimates.

pub mod beta_binomial;
pub mod gamma_gamma;
pub mod models;
pub mod optimize;
pub mod special;

pub use models::{fit, Model};

/// One customer's purchase history, summarised as the models need it, or several identical
/// customers at once (`weight` = how many): grouping identical summaries makes a fit on millions
/// of customers cost what the distinct summaries cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Repeat purchases: purchase days after the first.
    pub frequency: f64,
    /// Weeks from the first to the last purchase.
    pub recency: f64,
    /// Weeks from the first purchase to the end of the calibration period.
    pub age: f64,
    pub weight: f64,
}

/// The outcome of a maximum-likelihood fit. A fit that fails says so here; it never panics.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub params: Vec<f64>,
    /// Total log-likelihood over all customers (weights applied).
    pub log_likelihood: f64,
    pub converged: bool,
    pub iterations: usize,
    pub status: String,
}

/// The Fit of a minimisation of the mean negative log-likelihood in log-parameters over
/// `total_weight` customers, with a status saying whether (and why not) it can be used.
pub(crate) fn fit_from_minimum(m: optimize::Minimum, total_weight: f64) -> Fit {
    let params: Vec<f64> = m.x.iter().map(|v| v.exp()).collect();
    let (converged, status) = if !m.value.is_finite() {
        (
            false,
            "the likelihood could not be evaluated at any point tried".to_string(),
        )
    } else if !m.converged {
        (
            false,
            format!("did not converge within {} evaluations", m.evaluations),
        )
    } else if params.iter().any(|v| !(1e-8..1e8).contains(v)) {
        (false, format!("parameters at the edge of the search space ({params:?}): the data do not identify the model"))
    } else if m.flat {
        (true, "converged on a flat likelihood: some parameters could grow without changing it (BG/NBD: a and b so large that every customer drops out with the same probability, a / (a + b))".to_string())
    } else {
        (true, "converged".to_string())
    };
    Fit {
        converged,
        params,
        log_likelihood: -m.value * total_weight,
        iterations: m.evaluations,
        status,
    }
}

/// Checks a summary: finite, non-negative, recency ≤ age, frequency a whole number.
pub fn check_summary(s: &Summary) -> Result<(), String> {
    let finite = s.frequency.is_finite()
        && s.recency.is_finite()
        && s.age.is_finite()
        && s.weight.is_finite();
    if !finite || s.frequency < 0.0 || s.recency < 0.0 || s.age < 0.0 || s.weight <= 0.0 {
        return Err(format!(
            "invalid customer summary {s:?}: frequency, recency, age ≥ 0 and weight > 0 expected"
        ));
    }
    if s.frequency.fract() != 0.0 {
        return Err(format!("frequency {} is not a whole number", s.frequency));
    }
    if s.recency > s.age + 1e-9 {
        return Err(format!("recency {} exceeds age {}", s.recency, s.age));
    }
    if s.frequency == 0.0 && s.recency != 0.0 {
        return Err("a customer without repeat purchases has recency 0".into());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod cdnow {
    use super::Summary;

    /// The CDNOW sample as summarised in the papers (tests/data/cdnow_summary.csv):
    /// id, x, t_x, T (weeks), mean repeat spend.
    pub fn summaries() -> Vec<(Summary, f64)> {
        let text = include_str!("../../tests/data/cdnow_summary.csv");
        text.lines()
            .skip(1)
            .map(|line| {
                let v: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
                (
                    Summary {
                        frequency: v[1],
                        recency: v[2],
                        age: v[3],
                        weight: 1.0,
                    },
                    v[4],
                )
            })
            .collect()
    }
}
