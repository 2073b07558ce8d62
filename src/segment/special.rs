//! Special functions in log space: the models multiply gamma functions and hypergeometric series
//! whose terms overflow f64 for heavy buyers long before the results do.

/// ln Γ(x) for x > 0.
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// ln(e^a + e^b) without overflow; -inf on either side is the other side.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// ln(e^a - e^b) for a ≥ b; -inf when they are equal.
pub fn log_sub_exp(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    let d = b - a;
    if d >= 0.0 {
        return f64::NEG_INFINITY;
    }
    a + (-d.exp()).ln_1p()
}

/// Most terms a hypergeometric series may take before it counts as not converging.
const SERIES_TERMS: usize = 100_000;

/// ln ₂F₁(a, b; c; z) for 0 ≤ z < 1 and c > 0, by the power series summed with running
/// rescaling, so huge intermediate terms never overflow. Returns None when the series does not
/// converge in `SERIES_TERMS` terms or goes non-positive (the callers' arguments keep it positive).
pub fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(0.0..1.0).contains(&z) || c <= 0.0 || !a.is_finite() || !b.is_finite() {
        return None;
    }
    if z == 0.0 {
        return Some(0.0);
    }
    // sum = exp(scale) * acc, term = exp(scale) * t
    let mut scale = 0.0f64;
    let mut acc = 1.0f64;
    let mut t = 1.0f64;
    for n in 0..SERIES_TERMS {
        let nf = n as f64;
        t *= (a + nf) * (b + nf) / ((c + nf) * (nf + 1.0)) * z;
        acc += t;
        if acc.abs() > 1e200 {
            scale += acc.abs().ln();
            t /= acc.abs();
            acc = acc.signum();
        }
        if t == 0.0 || (t.abs() < 1e-16 * acc.abs() && nf > (a * b / c).abs() * z) {
            return if acc > 0.0 {
                Some(scale + acc.ln())
            } else {
                None
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn log_sums() {
        assert!(close(
            log_add_exp(1000.0, 1000.0),
            1000.0 + 2f64.ln(),
            1e-15
        ));
        assert_eq!(log_add_exp(f64::NEG_INFINITY, 3.0), 3.0);
        assert!(close(log_sub_exp(2f64.ln(), 0.0), 0.0f64.max(1e-300), 1.0));
        assert!(close(log_sub_exp(3f64.ln(), 1f64.ln()), 2f64.ln(), 1e-15));
        assert_eq!(log_sub_exp(5.0, 5.0), f64::NEG_INFINITY);
    }

    #[test]
    fn hypergeometric_closed_forms() {
        // ₂F₁(1, 1; 2; z) = -ln(1-z)/z
        let z = 0.9;
        assert!(close(
            ln_hyp2f1(1.0, 1.0, 2.0, z).unwrap(),
            (-(1.0f64 - z).ln() / z).ln(),
            1e-12
        ));
        // ₂F₁(a, b; b; z) = (1-z)^-a
        assert!(close(
            ln_hyp2f1(2.5, 3.0, 3.0, 0.5).unwrap(),
            -2.5 * 0.5f64.ln(),
            1e-12
        ));
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, 0.0), Some(0.0));
        assert_eq!(ln_hyp2f1(1.0, 1.0, 2.0, 1.0), None);
    }

    #[test]
    fn hypergeometric_does_not_overflow_for_heavy_buyers() {
        // (1-z)^-a with a = 2000: exp(1386), far beyond f64, fine in log space.
        let v = ln_hyp2f1(2000.0, 7.0, 7.0, 0.5).unwrap();
        assert!(close(v, -2000.0 * 0.5f64.ln(), 1e-10), "{v}");
    }
}
