//! Nelder-Mead minimisation, as lifetimes fits these models: derivative-free, robust on the
//! likelihood surfaces here (four parameters, searched in log space so they stay positive), and
//! restarted from its best point until a restart no longer improves, which removes the method's
//! habit of stalling on a collapsed simplex. Where the minimum lies at infinity along a valley
//! whose floor is flat (BG/NBD's a and b growing together: every customer drops out with the
//! same probability), the search would walk on until the budget ends; it stops instead once a
//! long stretch of evaluations gains next to nothing, twice in a row, and says so (`flat`).

/// The minimum found, and whether the method met its tolerance within the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub converged: bool,
    /// Converged in value on a flat valley floor rather than in position.
    pub flat: bool,
    pub evaluations: usize,
}

pub struct Options {
    /// Stop when the simplex's values differ by less than this (absolute) …
    pub f_tolerance: f64,
    /// … and its points by less than this.
    pub x_tolerance: f64,
    pub max_evaluations: usize,
    pub initial_step: f64,
    /// A search that improves the best value by less than `stall_tolerance` over
    /// `stall_evaluations` evaluations has stalled: a restart decides whether it is flat.
    pub stall_evaluations: usize,
    pub stall_tolerance: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            f_tolerance: 1e-10,
            x_tolerance: 1e-9,
            max_evaluations: 40_000,
            initial_step: 0.5,
            stall_evaluations: 2_000,
            stall_tolerance: 1e-8,
        }
    }
}

/// Minimises `f` from `start`. Non-finite values count as +inf, so the search backs away from
/// regions where a likelihood cannot be evaluated.
pub fn minimize<F: FnMut(&[f64]) -> f64>(mut f: F, start: &[f64], options: &Options) -> Minimum {
    let mut eval = |x: &[f64], count: &mut usize| {
        *count += 1;
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut evaluations = 0;
    let mut best_x = start.to_vec();
    let mut best = eval(&best_x, &mut evaluations);
    let (mut converged, mut flat) = (false, false);
    for _restart in 0..20 {
        let (x, value, end) = simplex_search(&mut eval, &best_x, best, options, &mut evaluations);
        let gain = best - value;
        if value <= best {
            best_x = x;
            best = value;
        }
        // A restart that gains no more than the run's own tolerance confirms the run's end.
        let confirmed = match end {
            End::Converged => gain <= options.f_tolerance,
            End::Stalled => gain <= options.stall_tolerance,
            End::Budget => true,
        };
        converged = end != End::Budget;
        flat = end == End::Stalled;
        if confirmed || evaluations >= options.max_evaluations {
            break;
        }
    }
    Minimum {
        x: best_x,
        value: best,
        converged: converged && best.is_finite(),
        flat,
        evaluations,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The simplex met both tolerances.
    Converged,
    /// The best value stopped improving (see `Options::stall_evaluations`).
    Stalled,
    Budget,
}

fn simplex_search<E: FnMut(&[f64], &mut usize) -> f64>(
    eval: &mut E,
    start: &[f64],
    start_value: f64,
    options: &Options,
    evaluations: &mut usize,
) -> (Vec<f64>, f64, End) {
    let (mut window_start, mut window_best) = (*evaluations, start_value);
    let n = start.len();
    let mut points: Vec<Vec<f64>> = vec![start.to_vec()];
    let mut values = vec![start_value];
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += options.initial_step;
        values.push(eval(&p, evaluations));
        points.push(p);
    }
    loop {
        // A fit over 100k customers takes seconds: stop on a cancel or statement_timeout.
        crate::interrupt::check();
        // Order best to worst.
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        points = order.iter().map(|&i| points[i].clone()).collect();
        values = order.iter().map(|&i| values[i]).collect();

        let f_spread = (values[n] - values[0]).abs();
        let x_spread = points[1..]
            .iter()
            .flat_map(|p| p.iter().zip(&points[0]).map(|(a, b)| (a - b).abs()))
            .fold(0.0, f64::max);
        if values[0].is_finite()
            && f_spread <= options.f_tolerance
            && x_spread <= options.x_tolerance
        {
            return (points.swap_remove(0), values[0], End::Converged);
        }
        if *evaluations >= options.max_evaluations {
            return (points.swap_remove(0), values[0], End::Budget);
        }
        if *evaluations - window_start >= options.stall_evaluations {
            if values[0].is_finite() && window_best - values[0] < options.stall_tolerance {
                return (points.swap_remove(0), values[0], End::Stalled);
            }
            (window_start, window_best) = (*evaluations, values[0]);
        }

        let centroid: Vec<f64> = (0..n)
            .map(|j| points[..n].iter().map(|p| p[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (points[n][j] - centroid[j]))
                .collect()
        };

        let reflected = along(-1.0);
        let fr = eval(&reflected, evaluations);
        if fr < values[0] {
            let expanded = along(-2.0);
            let fe = eval(&expanded, evaluations);
            if fe < fr {
                points[n] = expanded;
                values[n] = fe;
            } else {
                points[n] = reflected;
                values[n] = fr;
            }
            continue;
        }
        if fr < values[n - 1] {
            points[n] = reflected;
            values[n] = fr;
            continue;
        }
        // Contract, outside if the reflection beat the worst point, else inside.
        let (contracted, bound) = if fr < values[n] {
            (along(-0.5), fr)
        } else {
            (along(0.5), values[n])
        };
        let fc = eval(&contracted, evaluations);
        if fc < bound {
            points[n] = contracted;
            values[n] = fc;
            continue;
        }
        // Shrink towards the best point.
        for i in 1..=n {
            let p: Vec<f64> = (0..n)
                .map(|j| points[0][j] + 0.5 * (points[i][j] - points[0][j]))
                .collect();
            values[i] = eval(&p, evaluations);
            points[i] = p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rosenbrock_minimum() {
        let rosenbrock = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let m = minimize(rosenbrock, &[-1.2, 1.0], &Options::default());
        assert!(m.converged);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-4 && (m.x[1] - 1.0).abs() < 1e-4,
            "{m:?}"
        );
    }

    #[test]
    fn backs_away_from_undefined_regions_and_reports_a_budget_overrun() {
        // ln is undefined below 0: the search must stay where the function is finite.
        let f = |x: &[f64]| (x[0] - 2.0).powi(2) - x[1].ln() + x[1];
        let m = minimize(f, &[5.0, 3.0], &Options::default());
        assert!(
            m.converged && (m.x[0] - 2.0).abs() < 1e-4 && (m.x[1] - 1.0).abs() < 1e-4,
            "{m:?}"
        );
        let tight = Options {
            max_evaluations: 10,
            ..Options::default()
        };
        assert!(!minimize(f, &[5.0, 3.0], &tight).converged);
    }

    #[test]
    fn an_interior_minimum_converges_in_position_not_on_a_flat_floor() {
        // The flat case is the BG/NBD fit on the demo's customers (segment::models tests):
        // a synthetic valley falling forever either underflows to an exact floor or runs
        // the expansions off to overflow.
        let bowl = |x: &[f64]| (x[0] - 1.0).powi(2) + (x[1] + 2.0).powi(2);
        let m = minimize(bowl, &[0.0, 0.0], &Options::default());
        assert!(m.converged && !m.flat, "{m:?}");
    }

    #[test]
    fn a_cancel_stops_the_search() {
        let rosenbrock = |x: &[f64]| (1.0 - x[0]).powi(2) + 100.0 * (x[1] - x[0] * x[0]).powi(2);
        let mut evaluations = 0;
        let counting = |x: &[f64]| {
            evaluations += 1;
            rosenbrock(x)
        };
        assert!(crate::interrupt::testing::cancelled(10, || minimize(
            counting,
            &[-1.2, 1.0],
            &Options::default()
        )));
        // Stopped at its eleventh step, long before converging (which takes hundreds).
        assert!(evaluations < 40, "{evaluations}");
    }

    #[test]
    fn reports_a_function_that_is_nowhere_finite() {
        let m = minimize(|_: &[f64]| f64::NAN, &[0.0], &Options::default());
        assert!(!m.converged);
    }
}
