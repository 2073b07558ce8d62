//! Gamma-Gamma spend model (Fader, Hardie & Lee 2005, "RFM and CLV"): the mean spend of a
//! customer's repeat purchases, shrunk towards the population mean the fewer purchases they made.

use super::optimize::{minimize, Options};
use super::special::ln_gamma;
use super::Fit;

/// A repeat buyer (or several identical ones): repeat purchases and their mean spend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spend {
    pub frequency: f64,
    pub mean_spend: f64,
    pub weight: f64,
}

/// ln L of one repeat buyer under parameters p, q, gamma.
pub fn log_likelihood(params: &[f64], c: &Spend) -> f64 {
    ll_given_head(params, head(params, c.frequency), c)
}

/// The frequency-only terms (gamma functions), computed once per distinct frequency in a fit.
fn head(params: &[f64], x: f64) -> f64 {
    let (p, q, g) = (params[0], params[1], params[2]);
    ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q) + q * g.ln() + p * x * x.ln()
}

fn ll_given_head(params: &[f64], head: f64, c: &Spend) -> f64 {
    let (p, q, g) = (params[0], params[1], params[2]);
    let (x, m) = (c.frequency, c.mean_spend);
    head + (p * x - 1.0) * m.ln() - (p * x + q) * (g + m * x).ln()
}

/// Expected mean spend per purchase; for a customer without repeat purchases the population
/// mean. None where the population mean is infinite (q ≤ 1).
pub fn expected_spend(params: &[f64], frequency: f64, mean_spend: f64) -> Option<f64> {
    let (p, q, g) = (params[0], params[1], params[2]);
    if q <= 1.0 {
        return None;
    }
    if frequency <= 0.0 || mean_spend.is_nan() {
        return Some(p * g / (q - 1.0));
    }
    Some(p * (g + frequency * mean_spend) / (p * frequency + q - 1.0))
}

/// Maximum-likelihood fit over repeat buyers; customers with no repeat purchase or a mean spend
/// that is not positive carry no information about spend and are left out.
pub fn fit(customers: &[Spend]) -> Fit {
    let used: Vec<Spend> = customers
        .iter()
        .copied()
        .filter(|c| {
            c.frequency >= 1.0 && c.mean_spend > 0.0 && c.mean_spend.is_finite() && c.weight > 0.0
        })
        .collect();
    if used.len() < 2 {
        return Fit {
            params: vec![],
            log_likelihood: f64::NAN,
            converged: false,
            iterations: 0,
            status: "fewer than two distinct repeat buyers with a positive spend: spend cannot be estimated".into(),
        };
    }
    let total: f64 = used.iter().map(|c| c.weight).sum();
    let mut used = used;
    used.sort_by(|a, b| a.frequency.total_cmp(&b.frequency));
    let objective = |log_p: &[f64]| {
        let p: Vec<f64> = log_p.iter().map(|v| v.exp()).collect();
        let mut sum = 0.0;
        let mut cached = (f64::NAN, 0.0);
        for c in &used {
            if cached.0 != c.frequency {
                cached = (c.frequency, head(&p, c.frequency));
            }
            sum += c.weight * ll_given_head(&p, cached.1, c);
        }
        -sum / total
    };
    let m = minimize(objective, &[0.0; 3], &Options::default());
    super::fit_from_minimum(m, total)
}

#[cfg(test)]
mod tests {
    use super::super::cdnow;
    use super::*;

    #[test]
    fn reproduces_the_published_cdnow_estimates() {
        let buyers: Vec<Spend> = cdnow::summaries()
            .into_iter()
            .map(|(s, m)| Spend {
                frequency: s.frequency,
                mean_spend: m,
                weight: 1.0,
            })
            .collect();
        assert_eq!(buyers.iter().filter(|b| b.frequency > 0.0).count(), 946);
        let f = fit(&buyers);
        assert!(f.converged, "{f:?}");
        for (v, published) in f.params.iter().zip([6.25, 3.74, 15.44]) {
            assert!((v / published - 1.0).abs() < 0.005, "{f:?}");
        }
        assert!((f.log_likelihood - -4055.9).abs() < 1.0, "{f:?}");
    }

    #[test]
    fn expected_spend_shrinks_towards_the_mean() {
        let p = [6.25, 3.74, 15.44];
        let population = expected_spend(&p, 0.0, f64::NAN).unwrap();
        assert!((population - 6.25 * 15.44 / 2.74).abs() < 1e-9);
        let one = expected_spend(&p, 1.0, 100.0).unwrap();
        let many = expected_spend(&p, 50.0, 100.0).unwrap();
        assert!(population < one && one < many && many < 100.0);
        assert_eq!(expected_spend(&[1.0, 0.5, 1.0], 1.0, 10.0), None);
        // lifetimes 0.11.3 GammaGammaFitter.conditional_expected_average_profit, same parameters.
        assert!((expected_spend(&p, 1.0, 100.0).unwrap() / 80.25583982202447 - 1.0).abs() < 1e-9);
        assert!((expected_spend(&p, 5.0, 20.0).unwrap() / 21.22683142100618 - 1.0).abs() < 1e-9);
        assert!(!fit(&[]).converged);
    }
}
