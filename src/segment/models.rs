//! The buy-till-you-die models for purchase counts: BG/NBD (Fader, Hardie & Lee 2005) and
//! Pareto/NBD (Schmittlein, Morrison & Colombo 1987, in the form of Fader & Hardie's 2005 note).
//! Each gives the log-likelihood of a customer summary, and per customer P(alive) and the
//! expected purchases in the next `t` weeks.

use super::optimize::{minimize, Options};
use super::special::{ln_gamma, ln_hyp2f1, log_add_exp, log_sub_exp};
use super::{check_summary, Fit, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Parameters r, alpha, a, b.
    BgNbd,
    /// Parameters r, alpha, s, beta.
    ParetoNbd,
}

impl Model {
    pub fn parse(name: &str) -> Option<Model> {
        match name {
            "bgnbd" => Some(Model::BgNbd),
            "pareto_nbd" => Some(Model::ParetoNbd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::BgNbd => "bgnbd",
            Model::ParetoNbd => "pareto_nbd",
        }
    }

    pub fn param_names(self) -> [&'static str; 4] {
        match self {
            Model::BgNbd => ["r", "alpha", "a", "b"],
            Model::ParetoNbd => ["r", "alpha", "s", "beta"],
        }
    }

    /// ln L of one customer summary (weight not applied).
    pub fn log_likelihood(self, p: &[f64], c: &Summary) -> f64 {
        self.ll_given_head(p, &self.head(p, c.frequency), c)
    }

    /// The terms of ln L that depend on the frequency only (gamma functions): a fit computes
    /// them once per distinct frequency and evaluation instead of once per customer.
    fn head(self, p: &[f64], x: f64) -> Head {
        match self {
            Model::BgNbd => {
                let (r, alpha, a, b) = (p[0], p[1], p[2], p[3]);
                Head {
                    common: ln_gamma(r + x) - ln_gamma(r)
                        + r * alpha.ln()
                        + ln_gamma(a + b)
                        + ln_gamma(b + x)
                        - ln_gamma(b)
                        - ln_gamma(a + b + x),
                    dropout: if x > 0.0 {
                        a.ln() - (b + x - 1.0).ln()
                    } else {
                        f64::NEG_INFINITY
                    },
                }
            }
            Model::ParetoNbd => {
                let (r, alpha, s, beta) = (p[0], p[1], p[2], p[3]);
                Head {
                    common: ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln(),
                    dropout: s.ln() - (r + s + x).ln(),
                }
            }
        }
    }

    fn ll_given_head(self, p: &[f64], h: &Head, c: &Summary) -> f64 {
        match self {
            Model::BgNbd => bgnbd_ll(p, h, c),
            Model::ParetoNbd => pareto_ll(p, h, c),
        }
    }

    /// Σ weight · ln L over customers (in any order).
    pub fn total_log_likelihood(self, p: &[f64], customers: &[Summary]) -> f64 {
        Prepared::new(customers).total_log_likelihood(self, p)
    }

    /// P(the customer is still active at the end of the calibration period).
    pub fn p_alive(self, p: &[f64], c: &Summary) -> f64 {
        match self {
            Model::BgNbd => {
                if c.frequency == 0.0 {
                    return 1.0; // BG/NBD lets a customer drop out only right after a purchase
                }
                let (r, alpha, a, b) = (p[0], p[1], p[2], p[3]);
                let x = c.frequency;
                let log_odds = a.ln() - (b + x - 1.0).ln()
                    + (r + x) * ((alpha + c.age).ln() - (alpha + c.recency).ln());
                1.0 / (1.0 + log_odds.exp())
            }
            Model::ParetoNbd => pareto_alive_ll(p, c) - self.log_likelihood(p, c),
        }
        .pipe(|v| {
            if self == Model::ParetoNbd {
                v.exp().min(1.0)
            } else {
                v
            }
        })
    }

    /// P(at least one purchase in the next `t` weeks after the calibration period), in closed
    /// form; None where a series does not converge.
    ///
    /// Given the history, a customer alive at T buys at rate λ ~ Gamma(r + x, α + T).
    /// BG/NBD: a customer drops out only right after a purchase, so an alive customer without
    /// a purchase in (T, T + t] is still alive: P = P(alive) · (1 − ((α+T)/(α+T+t))^(r+x)).
    /// Pareto/NBD: the remaining lifetime is exponential with rate μ ~ Gamma(s, β + T),
    /// independent of λ; P(a purchase before t and before dropping out | λ, μ) =
    /// ∫₀ᵗ λ e^{−(λ+μ)u} du, whose expectation is
    /// (r+x)(α+T)^(r+x)(β+T)^s ∫₀ᵗ (α+T+u)^{−(r+x+1)} (β+T+u)^{−s} du, and the integral is
    /// [G(1/m) − G(1/(m+t))] with m = max(α+T, β+T), k = r+x+s,
    /// G(v) = v^k/k · ₂F₁(c, k; k+1; |α−β| v), c = s if α ≥ β else r+x+1 (as in the likelihood).
    pub fn p_purchase(self, p: &[f64], c: &Summary, t: f64) -> Option<f64> {
        if t <= 0.0 {
            return Some(0.0);
        }
        let alive = self.p_alive(p, c);
        let x = c.frequency;
        let value = match self {
            Model::BgNbd => {
                let (r, alpha) = (p[0], p[1]);
                let ln_none = (r + x) * ((alpha + c.age) / (alpha + c.age + t)).ln();
                alive * -ln_none.exp_m1()
            }
            Model::ParetoNbd => {
                let (r, alpha, s, beta) = (p[0], p[1], p[2], p[3]);
                let (a1, b1, r1) = (alpha + c.age, beta + c.age, r + x);
                let k = r1 + s;
                let (m, u) = if a1 >= b1 { (a1, s) } else { (b1, r1 + 1.0) };
                let d = (a1 - b1).abs();
                // ln G(v) without the constant 1/k
                let ln_g =
                    |v: f64| -> Option<f64> { Some(k * v.ln() + ln_hyp2f1(u, k, k + 1.0, d * v)?) };
                let ln_integral = log_sub_exp(ln_g(1.0 / m)?, ln_g(1.0 / (m + t))?) - k.ln();
                let ln_buy = r1.ln() + r1 * a1.ln() + s * b1.ln() + ln_integral;
                alive * ln_buy.exp().min(1.0)
            }
        };
        value.is_finite().then_some(value.clamp(0.0, 1.0))
    }

    /// Expected purchases in the next `t` weeks after the calibration period; None where the
    /// series does not converge.
    pub fn expected_purchases(self, p: &[f64], c: &Summary, t: f64) -> Option<f64> {
        if t <= 0.0 {
            return Some(0.0);
        }
        let alive = self.p_alive(p, c);
        let x = c.frequency;
        match self {
            Model::BgNbd => {
                let (r, alpha, b) = (p[0], p[1], p[3]);
                // The formula is continuous in a but 0/0 at a = 1: step just beside it.
                let a = if (p[2] - 1.0).abs() < 1e-7 {
                    1.0 + 1e-7
                } else {
                    p[2]
                };
                // E = (a+b+x-1)/(a-1) · [1 - ((α+T)/(α+T+t))^(r+x) ₂F₁(r+x, b+x; a+b+x-1; z)] · P(alive),
                // z = t/(α+T+t). Euler's transformation turns the bracket into
                // 1 - (1-z)^(a-1) ₂F₁(a+b-1-r, a-1; a+b+x-1; z): the factors that grow with x cancel
                // exactly, so heavy buyers need no huge intermediate values.
                // That form needs many terms when a itself is huge (a fit where the dropout
                // probability hardly varies between customers pushes a and b towards infinity);
                // there the direct series converges fast instead.
                let z = t / (alpha + c.age + t);
                let ln_term = match ln_hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z) {
                    Some(ln_f) => (a - 1.0) * (1.0 - z).ln() + ln_f,
                    None => ln_hyp2f1(r + x, b + x, a + b + x - 1.0, z)? + (r + x) * (1.0 - z).ln(),
                };
                let bracket = -ln_term.exp_m1();
                Some((a + b + x - 1.0) / (a - 1.0) * bracket * alive)
            }
            Model::ParetoNbd => {
                let (r, alpha, s, beta) = (p[0], p[1], p[2], p[3]);
                let ln_q = ((beta + c.age) / (beta + c.age + t)).ln();
                // (1 - q^(s-1)) / (s-1), and its limit -ln q at s = 1
                let decay = if (s - 1.0).abs() < 1e-9 {
                    -ln_q
                } else {
                    -((s - 1.0) * ln_q).exp_m1() / (s - 1.0)
                };
                Some(alive * (r + x) * (beta + c.age) / (alpha + c.age) * decay)
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Head {
    common: f64,
    dropout: f64,
}

trait Pipe: Sized {
    fn pipe<R>(self, f: impl FnOnce(Self) -> R) -> R {
        f(self)
    }
}
impl Pipe for f64 {}

fn bgnbd_ll(p: &[f64], h: &Head, c: &Summary) -> f64 {
    let (r, alpha) = (p[0], p[1]);
    let x = c.frequency;
    let alive = -(r + x) * (alpha + c.age).ln();
    let dropped = if x > 0.0 {
        h.dropout - (r + x) * (alpha + c.recency).ln()
    } else {
        f64::NEG_INFINITY
    };
    h.common + log_add_exp(alive, dropped)
}

/// ln of the Pareto/NBD likelihood's "still alive at T" part.
fn pareto_alive_ll(p: &[f64], c: &Summary) -> f64 {
    let (r, alpha, s, beta) = (p[0], p[1], p[2], p[3]);
    let x = c.frequency;
    ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln()
        - (r + x) * (alpha + c.age).ln()
        - s * (beta + c.age).ln()
}

fn pareto_ll(p: &[f64], h: &Head, c: &Summary) -> f64 {
    let (r, alpha, s, beta) = (p[0], p[1], p[2], p[3]);
    let x = c.frequency;
    let rsx = r + s + x;
    // A0 = F(t_x)/(m+t_x)^rsx - F(T)/(m+T)^rsx with m = max(α, β), F = ₂F₁(rsx, u; rsx+1; |α-β|/(m+·))
    let (m, u) = if alpha >= beta {
        (alpha, s + 1.0)
    } else {
        (beta, r + x)
    };
    let d = (alpha - beta).abs();
    let term = |t: f64| -> Option<f64> {
        Some(ln_hyp2f1(rsx, u, rsx + 1.0, d / (m + t))? - rsx * (m + t).ln())
    };
    let (Some(at_recency), Some(at_age)) = (term(c.recency), term(c.age)) else {
        return f64::NAN;
    };
    let ln_a0 = log_sub_exp(at_recency, at_age);
    let alive = -(r + x) * (alpha + c.age).ln() - s * (beta + c.age).ln();
    h.common + log_add_exp(alive, h.dropout + ln_a0)
}

/// Customer summaries prepared for the many evaluations of a fit. Identical summaries are
/// merged (their weights added), and every term of ln L that depends on fewer than all three of
/// (frequency, recency, age) is computed once per evaluation and distinct value instead of once
/// per customer: the gamma functions per distinct frequency, ln(α + t) and ln(β + t) per distinct
/// time, and Pareto/NBD's hypergeometric series per distinct (frequency, time) pair. What is
/// left per distinct summary is a few additions and one or two `log_add_exp`s. The terms are the
/// same expressions `log_likelihood` evaluates, so the total is the per-customer sum up to the
/// order of summation.
pub struct Prepared {
    frequencies: Vec<f64>,
    times: Vec<f64>,
    /// Distinct (frequency index, time index) pairs that occur as (x, t_x) or (x, T).
    pairs: Vec<(u32, u32)>,
    rows: Vec<Row>,
}

#[derive(Debug, Clone, Copy)]
struct Row {
    frequency: u32,
    recency: u32,
    age: u32,
    recency_pair: u32,
    age_pair: u32,
    weight: f64,
}

/// The per-evaluation tables of `Prepared::total_with`, kept between evaluations.
#[derive(Default)]
struct Scratch {
    heads: Vec<Head>,
    ln_alpha_t: Vec<f64>,
    ln_beta_t: Vec<f64>,
    terms: Vec<f64>,
}

fn index_of(sorted: &[f64], v: f64) -> u32 {
    sorted
        .binary_search_by(|probe| probe.total_cmp(&v))
        .expect("value taken from the same summaries") as u32
}

impl Prepared {
    pub fn new(customers: &[Summary]) -> Prepared {
        let distinct = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.dedup_by(|a, b| a.total_cmp(b).is_eq());
            v
        };
        let frequencies = distinct(customers.iter().map(|c| c.frequency).collect());
        let times = distinct(customers.iter().flat_map(|c| [c.recency, c.age]).collect());
        // Merge identical summaries, sorted by frequency, recency and age (the input order does not matter).
        let mut keyed: Vec<(u32, u32, u32, f64)> = customers
            .iter()
            .map(|c| {
                (
                    index_of(&frequencies, c.frequency),
                    index_of(&times, c.recency),
                    index_of(&times, c.age),
                    c.weight,
                )
            })
            .collect();
        keyed.sort_by_key(|k| (k.0, k.1, k.2));
        let mut merged: Vec<(u32, u32, u32, f64)> = Vec::with_capacity(keyed.len());
        for k in keyed {
            match merged.last_mut() {
                Some(last) if (last.0, last.1, last.2) == (k.0, k.1, k.2) => last.3 += k.3,
                _ => merged.push(k),
            }
        }
        let mut pairs: Vec<(u32, u32)> = merged
            .iter()
            .flat_map(|k| [(k.0, k.1), (k.0, k.2)])
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let pair_of = |f: u32, t: u32| pairs.binary_search(&(f, t)).expect("pair listed") as u32;
        let rows = merged
            .iter()
            .map(|&(f, r, a, weight)| Row {
                frequency: f,
                recency: r,
                age: a,
                recency_pair: pair_of(f, r),
                age_pair: pair_of(f, a),
                weight,
            })
            .collect();
        Prepared {
            frequencies,
            times,
            pairs,
            rows,
        }
    }

    /// Distinct summaries after merging identical ones.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn total_weight(&self) -> f64 {
        self.rows.iter().map(|r| r.weight).sum()
    }

    /// Σ weight · ln L.
    pub fn total_log_likelihood(&self, model: Model, p: &[f64]) -> f64 {
        self.total_with(model, p, &mut Scratch::default())
    }

    fn total_with(&self, model: Model, p: &[f64], s: &mut Scratch) -> f64 {
        let (r, alpha, s_or_a, beta_or_b) = (p[0], p[1], p[2], p[3]);
        s.heads.clear();
        s.heads
            .extend(self.frequencies.iter().map(|&x| model.head(p, x)));
        s.ln_alpha_t.clear();
        s.ln_alpha_t
            .extend(self.times.iter().map(|&t| (alpha + t).ln()));
        let mut total = 0.0;
        match model {
            Model::BgNbd => {
                for row in &self.rows {
                    let h = &s.heads[row.frequency as usize];
                    let x = self.frequencies[row.frequency as usize];
                    let alive = -(r + x) * s.ln_alpha_t[row.age as usize];
                    let dropped = if x > 0.0 {
                        h.dropout - (r + x) * s.ln_alpha_t[row.recency as usize]
                    } else {
                        f64::NEG_INFINITY
                    };
                    total += row.weight * (h.common + log_add_exp(alive, dropped));
                }
            }
            Model::ParetoNbd => {
                let (ps, beta) = (s_or_a, beta_or_b);
                s.ln_beta_t.clear();
                s.ln_beta_t
                    .extend(self.times.iter().map(|&t| (beta + t).ln()));
                let (m, alpha_larger) = if alpha >= beta {
                    (alpha, true)
                } else {
                    (beta, false)
                };
                let d = (alpha - beta).abs();
                s.terms.clear();
                for &(f, t) in &self.pairs {
                    let x = self.frequencies[f as usize];
                    let t = self.times[t as usize];
                    let rsx = r + ps + x;
                    let u = if alpha_larger { ps + 1.0 } else { r + x };
                    match ln_hyp2f1(rsx, u, rsx + 1.0, d / (m + t)) {
                        Some(v) => s.terms.push(v - rsx * (m + t).ln()),
                        None => return f64::NAN,
                    }
                }
                for row in &self.rows {
                    let h = &s.heads[row.frequency as usize];
                    let x = self.frequencies[row.frequency as usize];
                    let ln_a0 = log_sub_exp(
                        s.terms[row.recency_pair as usize],
                        s.terms[row.age_pair as usize],
                    );
                    let alive = -(r + x) * s.ln_alpha_t[row.age as usize]
                        - ps * s.ln_beta_t[row.age as usize];
                    total += row.weight * (h.common + log_add_exp(alive, h.dropout + ln_a0));
                }
            }
        }
        total
    }
}

/// Maximum-likelihood fit of `model` over `customers` (searching log-parameters from 1, 1, 1, 1
/// as lifetimes does). Invalid input or a search that does not converge comes back as a Fit
/// with `converged = false` and a status saying why.
pub fn fit(model: Model, customers: &[Summary]) -> Fit {
    let failed = |status: String| Fit {
        params: vec![],
        log_likelihood: f64::NAN,
        converged: false,
        iterations: 0,
        status,
    };
    if customers.is_empty() {
        return failed("no customers to fit".into());
    }
    if let Some(e) = customers.iter().find_map(|c| check_summary(c).err()) {
        return failed(e);
    }
    if customers.iter().all(|c| c.frequency == 0.0) {
        return failed(
            "no customer has a repeat purchase: the purchase rate cannot be estimated".into(),
        );
    }
    let prepared = Prepared::new(customers);
    let total_weight = prepared.total_weight();
    // Minimise the mean negative log-likelihood so tolerances mean the same at any size.
    let mut scratch = Scratch::default();
    let objective = |log_p: &[f64]| {
        let p: Vec<f64> = log_p.iter().map(|v| v.exp()).collect();
        -prepared.total_with(model, &p, &mut scratch) / total_weight
    };
    let m = minimize(objective, &[0.0; 4], &Options::default());
    super::fit_from_minimum(m, total_weight)
}

#[cfg(test)]
mod tests {
    use super::super::cdnow;
    use super::*;

    fn within(value: f64, published: f64, rel: f64) -> bool {
        (value / published - 1.0).abs() <= rel
    }

    fn cdnow_customers() -> Vec<Summary> {
        cdnow::summaries().into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn bgnbd_reproduces_the_published_cdnow_estimates() {
        let f = fit(Model::BgNbd, &cdnow_customers());
        assert!(f.converged, "{f:?}");
        for (v, published) in f.params.iter().zip([0.243, 4.414, 0.793, 2.426]) {
            assert!(within(*v, published, 0.005), "{f:?}");
        }
        // The summary file rounds weeks to two decimals; the log-likelihood moves a little.
        assert!((f.log_likelihood - -9582.4).abs() < 1.0, "{f:?}");
    }

    #[test]
    fn pareto_nbd_reproduces_the_published_cdnow_estimates() {
        let f = fit(Model::ParetoNbd, &cdnow_customers());
        assert!(f.converged, "{f:?}");
        for (v, published) in f.params.iter().zip([0.553, 10.578, 0.606, 11.669]) {
            assert!(within(*v, published, 0.005), "{f:?}");
        }
        assert!((f.log_likelihood - -9595.0).abs() < 1.0, "{f:?}");
    }

    /// The demo CRM's 400 customers (`tests/data/demo_summary_flat_dropout.csv`): the
    /// likelihood rises ever more slowly as a and b grow together, so the fit stops on the flat
    /// floor and says so instead of running out of evaluations.
    #[test]
    fn bgnbd_on_a_flat_dropout_likelihood_converges_and_says_so() {
        let text = include_str!("../../tests/data/demo_summary_flat_dropout.csv");
        let customers: Vec<Summary> = text
            .lines()
            .skip(1)
            .map(|line| {
                let v: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
                Summary {
                    frequency: v[0],
                    recency: v[1],
                    age: v[2],
                    weight: v[3],
                }
            })
            .collect();
        let f = fit(Model::BgNbd, &customers);
        assert!(f.converged, "{f:?}");
        assert!(
            f.status.starts_with("converged on a flat likelihood"),
            "{f:?}"
        );
        assert!(f.iterations < 10_000, "{f:?}");
        let (r, alpha, a, b) = (f.params[0], f.params[1], f.params[2], f.params[3]);
        assert!(a > 1e4 && b > 1e4, "{f:?}");
        // Further along the valley the likelihood gains less than a thousandth.
        let p = a / (a + b);
        let further =
            Model::BgNbd.total_log_likelihood(&[r, alpha, p * 1e7, (1.0 - p) * 1e7], &customers);
        assert!(further - f.log_likelihood < 1e-3, "{further} vs {f:?}");
    }

    /// The prepared evaluation (terms cached per distinct frequency, time and pair) gives the
    /// per-customer sum of `log_likelihood`, for both models, at the published estimates and
    /// away from them (α < β takes Pareto/NBD's other series).
    #[test]
    fn prepared_likelihood_equals_the_per_customer_sum() {
        let c = cdnow_customers();
        let prepared = Prepared::new(&c);
        assert!(prepared.len() < c.len(), "CDNOW has identical summaries");
        assert_prepared_sums_each(
            &c,
            &prepared,
            &[
                (Model::BgNbd, [0.243, 4.414, 0.793, 2.426]),
                (Model::BgNbd, [1.5, 20.0, 0.2, 7.0]),
                (Model::ParetoNbd, [0.553, 10.578, 0.606, 11.669]),
                (Model::ParetoNbd, [0.553, 12.0, 0.606, 3.0]),
            ],
        );
    }

    /// The prepared total log-likelihood equals the weighted sum over the summaries, to 1e-12.
    fn assert_prepared_sums_each(c: &[Summary], prepared: &Prepared, cases: &[(Model, [f64; 4])]) {
        for (model, p) in cases {
            let each: f64 = c
                .iter()
                .map(|s| s.weight * model.log_likelihood(p, s))
                .sum();
            let total = prepared.total_log_likelihood(*model, p);
            assert!(
                ((total - each) / each).abs() < 1e-12,
                "{model:?} {p:?}: {total} vs {each}"
            );
        }
    }

    /// Identical summaries given once each or merged into one with their count as weight: the
    /// same prepared rows, so the same fit to the last bit; and the same as one weighted
    /// summary given by the caller.
    #[test]
    fn deduplicated_fit_equals_the_per_person_fit() {
        let once = cdnow_customers();
        let mut per_person = once.clone();
        per_person.extend(once.iter().rev().copied());
        let weighted: Vec<Summary> = once.iter().map(|s| Summary { weight: 2.0, ..*s }).collect();
        for model in [Model::BgNbd, Model::ParetoNbd] {
            let a = fit(model, &per_person);
            let b = fit(model, &weighted);
            assert!(a.converged, "{a:?}");
            assert_eq!(a, b);
            // Doubling every customer doubles ln L and leaves the estimates where they were.
            let single = fit(model, &once);
            assert!((a.log_likelihood / single.log_likelihood - 2.0).abs() < 1e-9);
            for (x, y) in a.params.iter().zip(&single.params) {
                assert!(within(*x, *y, 1e-4), "{a:?} {single:?}");
            }
        }
    }

    /// Times off the shared grid and frequencies with a single customer each still index right.
    #[test]
    fn prepared_indexes_sparse_summaries() {
        let c = [
            Summary {
                frequency: 0.0,
                recency: 0.0,
                age: 3.5,
                weight: 1.0,
            },
            Summary {
                frequency: 7.0,
                recency: 1.25,
                age: 3.5,
                weight: 2.0,
            },
            Summary {
                frequency: 2.0,
                recency: 9.0,
                age: 40.0,
                weight: 1.0,
            },
            Summary {
                frequency: 0.0,
                recency: 0.0,
                age: 3.5,
                weight: 4.0,
            },
        ];
        let prepared = Prepared::new(&c);
        assert_eq!(prepared.len(), 3);
        assert_eq!(prepared.total_weight(), 8.0);
        assert_prepared_sums_each(
            &c,
            &prepared,
            &[
                (Model::BgNbd, [0.243, 4.414, 0.793, 2.426]),
                (Model::ParetoNbd, [0.553, 10.578, 0.606, 11.669]),
            ],
        );
    }

    /// Timing on a summary file (frequency,recency,age,weight lines, no header), for the
    /// benchmark in docs/BENCHMARKS.md:
    /// FIT_SUMMARIES=/tmp/fit-summaries-1m.csv cargo test --release --no-default-features
    ///   --features pg15 --lib segment::models -- --ignored --nocapture --skip sql::
    #[test]
    #[ignore]
    fn fit_timing_on_a_summary_file() {
        let Ok(path) = std::env::var("FIT_SUMMARIES") else {
            return;
        };
        let text = std::fs::read_to_string(path).unwrap();
        let c: Vec<Summary> = text
            .lines()
            .map(|line| {
                let v: Vec<f64> = line.split(',').map(|f| f.parse().unwrap()).collect();
                Summary {
                    frequency: v[0],
                    recency: v[1],
                    age: v[2],
                    weight: v[3],
                }
            })
            .collect();
        for model in [Model::BgNbd, Model::ParetoNbd] {
            let started = std::time::Instant::now();
            let f = fit(model, &c);
            println!(
                "{model:?}: {} summaries, {:.1} s, {} evaluations, params {:?}, ln L {}, {}",
                c.len(),
                started.elapsed().as_secs_f64(),
                f.iterations,
                f.params,
                f.log_likelihood,
                f.status
            );
        }
    }

    #[test]
    fn weights_equal_repeated_customers() {
        let c = cdnow_customers();
        let p = [0.243, 4.414, 0.793, 2.426];
        let once: f64 = c.iter().map(|s| Model::BgNbd.log_likelihood(&p, s)).sum();
        let doubled = Summary {
            weight: 2.0,
            ..c[0]
        };
        let ll = 2.0 * Model::BgNbd.log_likelihood(&p, &c[0]);
        assert!((doubled.weight * Model::BgNbd.log_likelihood(&p, &doubled) - ll).abs() < 1e-12);
        assert!(once.is_finite());
    }

    /// (frequency, recency, age) → P(alive), E[purchases in 10 weeks], E[… in 39 weeks], as
    /// lifetimes 0.11.3 computes them with the published parameters (BetaGeoFitter,
    /// ParetoNBDFitter; benches/lifetimes_compare.py prints the same on every run).
    const LIFETIMES_BGNBD: [(f64, f64, f64, f64, f64, f64); 3] = [
        (
            2.0,
            30.43,
            38.86,
            0.726578570080673,
            0.3569733602656501,
            1.2260281747671318,
        ),
        (
            0.0,
            0.0,
            38.86,
            1.0,
            0.05429984838044943,
            0.19509805201125396,
        ),
        (
            10.0,
            38.0,
            38.86,
            0.9214498221607308,
            2.0288619090857463,
            6.705874952827432,
        ),
    ];
    const LIFETIMES_PARETO: [(f64, f64, f64, f64, f64, f64); 3] = [
        (
            2.0,
            30.43,
            38.86,
            0.8691675591530114,
            0.4244563410142196,
            1.4551231932576048,
        ),
        (
            0.0,
            0.0,
            38.86,
            0.29528660461689443,
            0.031235436559393866,
            0.10708146821530898,
        ),
        (
            10.0,
            38.0,
            38.86,
            0.9886406575529902,
            1.9956901218675784,
            6.841634114702312,
        ),
    ];

    #[test]
    fn predictions_match_lifetimes() {
        for (model, params, cases) in [
            (Model::BgNbd, [0.243, 4.414, 0.793, 2.426], LIFETIMES_BGNBD),
            (
                Model::ParetoNbd,
                [0.553, 10.578, 0.606, 11.669],
                LIFETIMES_PARETO,
            ),
        ] {
            for (x, t_x, age, alive, e10, e39) in cases {
                let c = Summary {
                    frequency: x,
                    recency: t_x,
                    age,
                    weight: 1.0,
                };
                let got = (
                    model.p_alive(&params, &c),
                    model.expected_purchases(&params, &c, 10.0).unwrap(),
                    model.expected_purchases(&params, &c, 39.0).unwrap(),
                );
                assert!(
                    within(got.0, alive, 1e-9)
                        && within(got.1, e10, 1e-9)
                        && within(got.2, e39, 1e-9),
                    "{model:?} {c:?}: {got:?}"
                );
            }
        }
        let c = Summary {
            frequency: 2.0,
            recency: 30.43,
            age: 38.86,
            weight: 1.0,
        };
        assert_eq!(
            Model::BgNbd.expected_purchases(&[0.243, 4.414, 0.793, 2.426], &c, 0.0),
            Some(0.0)
        );
        // a = 1 exactly is a removable singularity.
        let at_one = Model::BgNbd
            .expected_purchases(&[0.243, 4.414, 1.0, 2.426], &c, 39.0)
            .unwrap();
        let near = Model::BgNbd
            .expected_purchases(&[0.243, 4.414, 1.001, 2.426], &c, 39.0)
            .unwrap();
        assert!(
            at_one.is_finite() && within(at_one, near, 1e-3),
            "{at_one} {near}"
        );
    }

    /// P(at least one purchase in t weeks): lifetimes 0.11.3's
    /// 1 − conditional_probability_of_n_purchases_up_to_time(0, t, x, t_x, T) for Pareto/NBD and
    /// 1 − probability_of_n_purchases_up_to_time(t, 0) for a new BG/NBD customer (lifetimes has
    /// no conditional form for BG/NBD), published CDNOW parameters. Recorded with
    /// `python tests/data/p_purchase_vectors.py` in benches/segments.sh's lifetimes venv.
    const LIFETIMES_P_PURCHASE_PARETO: [(f64, f64, f64, f64, f64); 12] = [
        (2.0, 30.43, 38.86, 4.0, 0.1531364050515852),
        (2.0, 30.43, 38.86, 13.0, 0.3669064818970649),
        (2.0, 30.43, 38.86, 39.0, 0.5919372763935357),
        (0.0, 0.0, 38.86, 4.0, 0.012154648154865777),
        (0.0, 0.0, 38.86, 13.0, 0.03344490906376518),
        (0.0, 0.0, 38.86, 39.0, 0.06928518405431983),
        (10.0, 38.0, 38.86, 4.0, 0.5427781156170928),
        (10.0, 38.0, 38.86, 13.0, 0.8666245669305912),
        (10.0, 38.0, 38.86, 39.0, 0.9345313051568722),
        (1.0, 5.0, 60.0, 4.0, 0.010644852698260987),
        (1.0, 5.0, 60.0, 13.0, 0.029023684742906286),
        (1.0, 5.0, 60.0, 39.0, 0.05824296319133282),
    ];
    const LIFETIMES_P_PURCHASE_BGNBD_NEW: [(f64, f64); 3] = [
        (4.0, 0.1450934460055605),
        (13.0, 0.2835994499044452),
        (39.0, 0.42621364790399063),
    ];

    #[test]
    fn p_purchase_matches_lifetimes() {
        let pareto = [0.553, 10.578, 0.606, 11.669];
        for (x, t_x, age, t, expected) in LIFETIMES_P_PURCHASE_PARETO {
            let c = Summary {
                frequency: x,
                recency: t_x,
                age,
                weight: 1.0,
            };
            let got = Model::ParetoNbd.p_purchase(&pareto, &c, t).unwrap();
            assert!(
                within(got, expected, 1e-6),
                "{c:?} t={t}: {got} vs {expected}"
            );
        }
        let bgnbd = [0.243, 4.414, 0.793, 2.426];
        let new = Summary {
            frequency: 0.0,
            recency: 0.0,
            age: 0.0,
            weight: 1.0,
        };
        for (t, expected) in LIFETIMES_P_PURCHASE_BGNBD_NEW {
            let got = Model::BgNbd.p_purchase(&bgnbd, &new, t).unwrap();
            assert!(within(got, expected, 1e-9), "t={t}: {got} vs {expected}");
        }
    }

    /// BG/NBD after some history (lifetimes has no conditional P(X = 0) for it): the closed form
    /// rises with t, stays below P(alive) and the expected purchases, and tends to P(alive).
    #[test]
    fn p_purchase_bgnbd_is_consistent() {
        let p = [0.243, 4.414, 0.793, 2.426];
        for (x, t_x, age) in [
            (2.0, 30.43, 38.86),
            (0.0, 0.0, 38.86),
            (10.0, 38.0, 38.86),
            (1.0, 5.0, 60.0),
        ] {
            let c = Summary {
                frequency: x,
                recency: t_x,
                age,
                weight: 1.0,
            };
            let alive = Model::BgNbd.p_alive(&p, &c);
            let mut before = 0.0;
            for t in [1.0, 4.0, 13.0, 39.0, 520.0] {
                let got = Model::BgNbd.p_purchase(&p, &c, t).unwrap();
                let expected = Model::BgNbd.expected_purchases(&p, &c, t).unwrap();
                assert!(
                    got > before && got < alive && got <= expected,
                    "{c:?} {t}: {got}"
                );
                before = got;
            }
            // In the long run every alive customer buys again.
            let far = Model::BgNbd.p_purchase(&p, &c, 1e40).unwrap();
            assert!(within(far, alive, 1e-3), "{far} {alive}");
            assert_eq!(Model::BgNbd.p_purchase(&p, &c, 0.0), Some(0.0));
        }
        // Pareto/NBD: also below P(alive) and E[N], rising in t.
        let pareto = [0.553, 10.578, 0.606, 11.669];
        let c = Summary {
            frequency: 3.0,
            recency: 20.0,
            age: 40.0,
            weight: 1.0,
        };
        let got = Model::ParetoNbd.p_purchase(&pareto, &c, 13.0).unwrap();
        assert!(
            got < Model::ParetoNbd.p_alive(&pareto, &c)
                && got
                    <= Model::ParetoNbd
                        .expected_purchases(&pareto, &c, 13.0)
                        .unwrap()
        );
    }

    #[test]
    fn heavy_buyers_stay_finite() {
        let p = [0.243, 4.414, 0.793 + 1.0, 2.426];
        // Bought the day the period ended: alive, by any model.
        let heavy = Summary {
            frequency: 5000.0,
            recency: 78.0,
            age: 78.0,
            weight: 1.0,
        };
        for m in [Model::BgNbd, Model::ParetoNbd] {
            let pp = if m == Model::BgNbd {
                p.to_vec()
            } else {
                vec![0.553, 10.578, 0.606, 11.669]
            };
            let alive = m.p_alive(&pp, &heavy);
            let e = m.expected_purchases(&pp, &heavy, 52.0).unwrap();
            assert!(
                alive.is_finite() && (0.0..=1.0).contains(&alive),
                "{m:?} {alive}"
            );
            // About 64 purchases a week: a year should bring thousands, not inf or NaN.
            assert!(
                alive > 0.99 && e.is_finite() && e > 1000.0 && e < 5000.0,
                "{m:?} {alive} {e}"
            );
            assert!(m.log_likelihood(&pp, &heavy).is_finite());
        }
    }

    #[test]
    fn huge_a_and_b_stay_finite() {
        // A fit on data whose dropout probability hardly varies drives a and b up together.
        let c = Summary {
            frequency: 3.0,
            recency: 40.0,
            age: 100.0,
            weight: 1.0,
        };
        let huge = Model::BgNbd
            .expected_purchases(&[0.14, 3.4, 4.6e6, 1.03e7], &c, 52.0)
            .unwrap();
        let large = Model::BgNbd
            .expected_purchases(&[0.14, 3.4, 4.6e4, 1.03e5], &c, 52.0)
            .unwrap();
        assert!(
            huge.is_finite() && huge > 0.0 && within(huge, large, 1e-3),
            "{huge} {large}"
        );
    }

    #[test]
    fn pareto_one_time_buyers_can_be_gone() {
        let p = [0.553, 10.578, 0.606, 11.669];
        let early = Summary {
            frequency: 0.0,
            recency: 0.0,
            age: 78.0,
            weight: 1.0,
        };
        let alive = Model::ParetoNbd.p_alive(&p, &early);
        assert!(alive > 0.0 && alive < 0.6, "{alive}");
    }

    #[test]
    fn bad_input_is_a_failed_fit_not_a_panic() {
        let f = fit(Model::BgNbd, &[]);
        assert!(!f.converged && f.status.contains("no customers"));
        let bad = Summary {
            frequency: 1.0,
            recency: 5.0,
            age: 2.0,
            weight: 1.0,
        };
        assert!(!fit(Model::BgNbd, &[bad]).converged);
        let nobody_returns = vec![Summary {
            frequency: 0.0,
            recency: 0.0,
            age: 10.0,
            weight: 5.0,
        }];
        let f = fit(Model::ParetoNbd, &nobody_returns);
        assert!(!f.converged && f.status.contains("repeat"), "{f:?}");
        assert_eq!(Model::parse("bgnbd"), Some(Model::BgNbd));
        assert_eq!(Model::parse("BG/NBD"), None);
    }
}
