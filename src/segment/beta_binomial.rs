//! Return probability: a person's share of returned orders, shrunk toward the population rate by
//! a beta-binomial fitted by maximum likelihood over persons' (returns, orders). A person with
//! n orders and k returns gets the posterior mean (k + α) / (n + α + β): two orders with one
//! return read close to the population rate, not as 50 %.

use super::optimize::{minimize, Options};
use super::special::ln_gamma;
use super::Fit;

/// One person's orders and returns, or several identical persons (`weight` = how many).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Returns {
    pub returns: f64,
    pub orders: f64,
    pub weight: f64,
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// ln P(k returns of n orders) under Beta(α, β) return rates, without the binomial coefficient
/// (constant in the parameters).
pub fn log_likelihood(alpha: f64, beta: f64, c: &Returns) -> f64 {
    ln_beta(c.returns + alpha, c.orders - c.returns + beta) - ln_beta(alpha, beta)
}

/// The posterior mean return rate of a person with `orders` orders of which `returns` returned.
pub fn posterior_mean(alpha: f64, beta: f64, returns: f64, orders: f64) -> f64 {
    (returns + alpha) / (orders + alpha + beta)
}

/// Maximum-likelihood fit of (α, β) over persons with at least one order. Invalid input, nobody
/// returning anything (α → 0) or everybody returning everything come back as a Fit with
/// converged = false and a status. Where the persons' return rates do not vary more than
/// chance explains, α and β grow together without bound: the fit stops there, keeps the
/// population rate α / (α + β) and says so (every person then gets about that rate).
pub fn fit(persons: &[Returns]) -> Fit {
    let failed = |status: &str| Fit {
        params: vec![],
        log_likelihood: f64::NAN,
        converged: false,
        iterations: 0,
        status: status.to_string(),
    };
    let persons: Vec<Returns> = persons.iter().copied().filter(|c| c.orders > 0.0).collect();
    if persons.is_empty() {
        return failed("no person with an order");
    }
    if persons.iter().any(|c| {
        !(c.returns.is_finite() && c.orders.is_finite() && c.weight.is_finite())
            || c.returns < 0.0
            || c.returns > c.orders
            || c.weight <= 0.0
            || c.returns.fract() != 0.0
            || c.orders.fract() != 0.0
    }) {
        return failed(
            "invalid returns: whole numbers 0 ≤ returns ≤ orders and weight > 0 expected",
        );
    }
    let total_weight: f64 = persons.iter().map(|c| c.weight).sum();
    let returned: f64 = persons.iter().map(|c| c.weight * c.returns).sum();
    let ordered: f64 = persons.iter().map(|c| c.weight * c.orders).sum();
    if returned == 0.0 {
        return failed("no order was returned: the return rate cannot be estimated");
    }
    if returned == ordered {
        return failed("every order was returned: the return rate cannot be estimated");
    }
    let objective = |log_p: &[f64]| {
        let (a, b) = (log_p[0].exp(), log_p[1].exp());
        -persons
            .iter()
            .map(|c| c.weight * log_likelihood(a, b, c))
            .sum::<f64>()
            / total_weight
    };
    // Start at the population rate with a moderate concentration.
    let rate = returned / ordered;
    let start = [(rate * 2.0).ln(), ((1.0 - rate) * 2.0).ln()];
    let m = minimize(objective, &start, &Options::default());
    let (a, b) = (m.x[0].exp(), m.x[1].exp());
    let ll = -m.value * total_weight;
    if !(m.value.is_finite() && a.is_finite() && b.is_finite()) {
        return failed("the likelihood could not be evaluated");
    }
    let homogeneous = a + b > 1e6;
    let (params, status) = if homogeneous {
        // The population rate, held with a concentration that lets no person's few orders move it.
        let k = 1e6;
        let p = a / (a + b);
        (
            vec![p * k, (1.0 - p) * k],
            "converged: the return rates do not vary between persons more than chance explains (α + β unbounded), every person gets the population rate".to_string(),
        )
    } else if !m.converged && !m.flat {
        return Fit {
            params: vec![a, b],
            log_likelihood: ll,
            converged: false,
            iterations: m.evaluations,
            status: format!("did not converge within {} evaluations", m.evaluations),
        };
    } else {
        (vec![a, b], "converged".to_string())
    };
    Fit {
        params,
        log_likelihood: ll,
        converged: true,
        iterations: m.evaluations,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Persons as (returns, orders, how many).
    fn persons(rows: &[(f64, f64, f64)]) -> Vec<Returns> {
        rows.iter()
            .map(|&(returns, orders, weight)| Returns {
                returns,
                orders,
                weight,
            })
            .collect()
    }

    /// The reference fit: scipy 1.11 maximising the beta-binomial log-likelihood over the same
    /// data (recorded with
    /// `python3 -c "import numpy as np; from scipy.stats import betabinom; from scipy.optimize
    ///  import minimize; k=np.repeat([0,1,0,1,2,0,1,2,3,0,1,2,3,4,5],[300,40,120,50,10,60,30,20,10,
    ///  40,20,15,10,10,5]); n=np.repeat([1,1,2,2,2,3,3,3,3,5,5,5,5,5,5],[300,40,120,50,10,60,30,
    ///  20,10,40,20,15,10,10,5]); f=lambda p: -betabinom.logpmf(k,n,*np.exp(p)).sum();
    ///  r=minimize(f,[0,0],method='Nelder-Mead',options=dict(xatol=1e-10,fatol=1e-12,
    ///  maxiter=20000)); print(np.exp(r.x), -r.fun)"` in benches/segments.sh's lifetimes venv).
    const REFERENCE: [(f64, f64, f64); 15] = [
        (0.0, 1.0, 300.0),
        (1.0, 1.0, 40.0),
        (0.0, 2.0, 120.0),
        (1.0, 2.0, 50.0),
        (2.0, 2.0, 10.0),
        (0.0, 3.0, 60.0),
        (1.0, 3.0, 30.0),
        (2.0, 3.0, 20.0),
        (3.0, 3.0, 10.0),
        (0.0, 5.0, 40.0),
        (1.0, 5.0, 20.0),
        (2.0, 5.0, 15.0),
        (3.0, 5.0, 10.0),
        (4.0, 5.0, 10.0),
        (5.0, 5.0, 5.0),
    ];
    /// The command prints [0.53360792 2.02193344] and ln L = -586.3205644215884.
    const REFERENCE_ALPHA: f64 = 0.53360792;
    const REFERENCE_BETA: f64 = 2.02193344;

    #[test]
    fn fit_matches_the_reference_maximum() {
        let f = fit(&persons(&REFERENCE));
        assert!(f.converged, "{f:?}");
        let (a, b) = (f.params[0], f.params[1]);
        assert!(
            (a / REFERENCE_ALPHA - 1.0).abs() < 1e-3 && (b / REFERENCE_BETA - 1.0).abs() < 1e-3,
            "{f:?}"
        );
        // With the binomial coefficients, the total is scipy's log-likelihood.
        let ll: f64 = persons(&REFERENCE)
            .iter()
            .map(|c| {
                let ln_choose = ln_gamma(c.orders + 1.0)
                    - ln_gamma(c.returns + 1.0)
                    - ln_gamma(c.orders - c.returns + 1.0);
                c.weight * (ln_choose + log_likelihood(a, b, c))
            })
            .sum();
        assert!((ll - -586.3205644215884).abs() < 1e-4, "{ll}");
    }

    #[test]
    fn recovers_known_parameters_from_their_expected_counts() {
        // Persons with 4 orders each, returns distributed exactly as Beta-binomial(4, 1, 9)
        // (population rate 10 %): the maximum is at α = 1, β = 9.
        let (alpha, beta, n) = (1.0, 9.0, 4.0);
        let rows: Vec<(f64, f64, f64)> = (0..=4)
            .map(|k| {
                let k = k as f64;
                let ln_choose = ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0);
                let p = (ln_choose
                    + log_likelihood(
                        alpha,
                        beta,
                        &Returns {
                            returns: k,
                            orders: n,
                            weight: 1.0,
                        },
                    ))
                .exp();
                (k, n, 1e5 * p)
            })
            .collect();
        let f = fit(&persons(&rows));
        assert!(f.converged, "{f:?}");
        assert!(
            (f.params[0] - alpha).abs() < 1e-3 * alpha && (f.params[1] - beta).abs() < 1e-3 * beta,
            "{f:?}"
        );
    }

    #[test]
    fn two_orders_one_return_is_not_fifty_percent() {
        let f = fit(&persons(&REFERENCE));
        let (a, b) = (f.params[0], f.params[1]);
        let rate = a / (a + b);
        let one_of_two = posterior_mean(a, b, 1.0, 2.0);
        assert!(one_of_two > rate && one_of_two < 0.5, "{one_of_two} {rate}");
        // Many orders: the person's own share dominates.
        let many = posterior_mean(a, b, 50.0, 100.0);
        assert!((many - 0.5).abs() < 0.05, "{many}");
        assert!((posterior_mean(a, b, 0.0, 0.0) - rate).abs() < 1e-12);
    }

    #[test]
    fn homogeneous_rates_give_the_population_rate() {
        // Expected counts of Binomial(3, 0.2) for everyone: no over-dispersion.
        let rows = [
            (0.0, 3.0, 512.0),
            (1.0, 3.0, 384.0),
            (2.0, 3.0, 96.0),
            (3.0, 3.0, 8.0),
        ];
        let f = fit(&persons(&rows));
        assert!(f.converged && f.status.contains("population rate"), "{f:?}");
        let (a, b) = (f.params[0], f.params[1]);
        assert!((a / (a + b) - 0.2).abs() < 1e-3, "{f:?}");
        assert!((posterior_mean(a, b, 1.0, 2.0) - 0.2).abs() < 1e-3);
    }

    #[test]
    fn degenerate_data_is_a_failed_fit_not_a_panic() {
        assert!(!fit(&[]).converged);
        assert!(!fit(&persons(&[(0.0, 3.0, 5.0)])).status.is_empty());
        let f = fit(&persons(&[(0.0, 3.0, 5.0), (0.0, 1.0, 2.0)]));
        assert!(
            !f.converged && f.status.contains("no order was returned"),
            "{f:?}"
        );
        let f = fit(&persons(&[(2.0, 2.0, 5.0)]));
        assert!(!f.converged && f.status.contains("every order"), "{f:?}");
        let f = fit(&persons(&[(3.0, 2.0, 1.0)]));
        assert!(!f.converged && f.status.contains("invalid"), "{f:?}");
        // Persons without orders are left out, not an error.
        let f = fit(&persons(&[
            (0.0, 0.0, 3.0),
            (1.0, 2.0, 1.0),
            (0.0, 2.0, 1.0),
        ]));
        assert!(!f.status.contains("invalid"), "{f:?}");
    }
}
