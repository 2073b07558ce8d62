//! Next best product: an item-to-item co-purchase model over persons' purchase histories.
//!
//! Two products are neighbours when the same persons bought both. Each purchase (person u,
//! product i) has a weight w(u, i) in (0, 1] (the caller's: 1, or lower the longer ago it was, so
//! the model follows the season). Each buyer of both adds `w(u, i) · w(u, j) / d(u)^damping` to
//! the pair's count, where `d(u)` is the sum of the person's weights, how many products they
//! bought (a wholesaler buying 2,000 products says less about any one pair than a person buying
//! three). The count is normalised by the products' weighted buyer counts `B`, asymmetric cosine
//! (Aiolli 2013):
//!
//! ```text
//! score(i → j) = C(i, j) / (B(i)^alpha · B(j)^(1 − alpha) + shrink)
//! ```
//!
//! `alpha = 0.5` is the cosine; a larger `alpha` favours popular neighbours `j`. Each product
//! keeps its `k` best neighbours, ties broken by the smaller product index, so the model is the
//! same on any number of threads. A person's recommendations are then the sum, over the products
//! they bought (each weighted by how recently), of those products' neighbour scores: that sum is
//! the thin SQL of `unify.recommendations`.

use crate::parallel::{self, Workers};

/// The model's parameters (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Neighbours kept per product.
    pub k: usize,
    /// Asymmetric cosine exponent, 0..=1 (0.5 = cosine).
    pub alpha: f64,
    /// Exponent of the per-person damping `1 / d^damping` (0 = every buyer counts 1).
    pub damping: f64,
    /// Added to the denominator: pairs with few common buyers score lower.
    pub shrink: f64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            k: 50,
            alpha: 0.5,
            damping: 0.5,
            shrink: 0.0,
        }
    }
}

/// Why a model cannot be computed.
#[derive(Debug, PartialEq)]
pub enum Error {
    /// The person and product arrays differ in length.
    Lengths,
    /// A product index is negative or a person index is negative.
    NegativeIndex,
    /// A weight is not in (0, 1].
    Weight,
    /// A parameter is out of its range (the message names it).
    Param(&'static str),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Lengths => write!(f, "persons and products must be arrays of the same length"),
            Error::NegativeIndex => write!(f, "person and product indexes must not be negative"),
            Error::Weight => write!(f, "purchase weights must be greater than 0 and at most 1"),
            Error::Param(m) => write!(f, "{m}"),
        }
    }
}

/// One neighbour: `product → neighbour` with its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbour {
    pub product: u32,
    pub neighbour: u32,
    pub score: f64,
}

/// The `k` best neighbours of every product bought by anyone, from (person, product, weight)
/// purchases (a repeated pair counts once, with its largest weight; any order). Products by
/// index, persons by any number.
pub fn neighbours(
    persons: &[i64],
    products: &[i32],
    weights: &[f64],
    params: Params,
    workers: impl Into<Workers>,
) -> Result<Vec<Neighbour>, Error> {
    if persons.len() != products.len() || persons.len() != weights.len() {
        return Err(Error::Lengths);
    }
    if weights.iter().any(|&w| !(w > 0.0 && w <= 1.0)) {
        return Err(Error::Weight);
    }
    if !(0.0..=1.0).contains(&params.alpha) {
        return Err(Error::Param("alpha must be between 0 and 1"));
    }
    if !(params.damping >= 0.0 && params.damping.is_finite()) {
        return Err(Error::Param("damping must be 0 or more"));
    }
    if !(params.shrink >= 0.0 && params.shrink.is_finite()) {
        return Err(Error::Param("shrink must be 0 or more"));
    }
    if params.k == 0 {
        return Err(Error::Param("k must be at least 1"));
    }
    if persons.iter().any(|&p| p < 0) || products.iter().any(|&p| p < 0) {
        return Err(Error::NegativeIndex);
    }
    // Distinct (person, product) pairs, grouped by person, each with its largest weight.
    let mut pairs: Vec<(i64, u32, f64)> = persons
        .iter()
        .zip(products)
        .zip(weights)
        .map(|((&p, &i), &w)| (p, i as u32, w))
        .collect();
    pairs.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then(b.2.total_cmp(&a.2)));
    pairs.dedup_by(|next, kept| (next.0, next.1) == (kept.0, kept.1));
    let n_products = pairs
        .iter()
        .map(|&(_, i, _)| i as usize + 1)
        .max()
        .unwrap_or(0);

    // Baskets: each person's products and weights (CSR), with the person's damping factor.
    let mut basket_start = Vec::new();
    let mut basket_items = Vec::with_capacity(pairs.len());
    let mut item_weight = Vec::with_capacity(pairs.len());
    let mut basket_damping = Vec::new();
    let mut start = 0;
    while start < pairs.len() {
        let person = pairs[start].0;
        let mut end = start;
        let mut size = 0.0;
        while end < pairs.len() && pairs[end].0 == person {
            basket_items.push(pairs[end].1);
            item_weight.push(pairs[end].2);
            size += pairs[end].2;
            end += 1;
        }
        basket_start.push(start);
        basket_damping.push(size.powf(-params.damping));
        start = end;
    }
    basket_start.push(pairs.len());
    drop(pairs);

    // Per product: its purchases (positions in the baskets) and its weighted buyer count.
    let mut buyers_of: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n_products];
    let mut buyers = vec![0.0f64; n_products];
    for b in 0..basket_damping.len() {
        for at in basket_start[b]..basket_start[b + 1] {
            let i = basket_items[at] as usize;
            buyers_of[i].push((b as u32, at as u32));
            buyers[i] += item_weight[at];
        }
    }

    // One row of the co-occurrence matrix at a time, products in chunks over the threads.
    let chunks: Vec<std::ops::Range<usize>> = (0..n_products)
        .step_by(64)
        .map(|s| s..(s + 64).min(n_products))
        .collect();
    let rows = parallel::map_tasks(&chunks, workers, |range| {
        let mut counts = vec![0.0f64; n_products];
        let mut touched: Vec<u32> = Vec::new();
        let mut out = Vec::new();
        for i in range.clone() {
            crate::interrupt::check();
            if buyers_of[i].is_empty() {
                continue;
            }
            for &(b, at) in &buyers_of[i] {
                let b = b as usize;
                let w = basket_damping[b] * item_weight[at as usize];
                for other in basket_start[b]..basket_start[b + 1] {
                    let j = basket_items[other];
                    if j as usize == i {
                        continue;
                    }
                    if counts[j as usize] == 0.0 {
                        touched.push(j);
                    }
                    counts[j as usize] += w * item_weight[other];
                }
            }
            let mut row: Vec<(f64, u32)> = touched
                .iter()
                .map(|&j| {
                    let denom = buyers[i].powf(params.alpha)
                        * buyers[j as usize].powf(1.0 - params.alpha)
                        + params.shrink;
                    (counts[j as usize] / denom, j)
                })
                .collect();
            for &j in &touched {
                counts[j as usize] = 0.0;
            }
            touched.clear();
            // Best first; equal scores by the smaller index.
            let order = |a: &(f64, u32), b: &(f64, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            if row.len() > params.k {
                row.select_nth_unstable_by(params.k - 1, order);
                row.truncate(params.k);
            }
            row.sort_unstable_by(order);
            out.extend(row.into_iter().map(|(score, j)| Neighbour {
                product: i as u32,
                neighbour: j,
                score,
            }));
        }
        out
    });
    Ok(rows.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(persons: &[i64], products: &[i32], params: Params) -> Vec<Neighbour> {
        neighbours(persons, products, &vec![1.0; persons.len()], params, 1).unwrap()
    }

    fn score(n: &[Neighbour], i: u32, j: u32) -> Option<f64> {
        n.iter()
            .find(|x| x.product == i && x.neighbour == j)
            .map(|x| x.score)
    }

    const PLAIN: Params = Params {
        k: 10,
        alpha: 0.5,
        damping: 0.0,
        shrink: 0.0,
    };

    #[test]
    fn cosine_of_co_purchases() {
        // Persons 1 and 2 bought 0 and 1; person 3 bought 0 and 2.
        let n = model(&[1, 1, 2, 2, 3, 3], &[0, 1, 0, 1, 0, 2], PLAIN);
        // 0 has 3 buyers, 1 has 2, 2 has 1. C(0,1) = 2, C(0,2) = 1, C(1,2) = 0.
        assert!((score(&n, 0, 1).unwrap() - 2.0 / (3f64 * 2.0).sqrt()).abs() < 1e-12);
        assert!((score(&n, 1, 0).unwrap() - 2.0 / (3f64 * 2.0).sqrt()).abs() < 1e-12);
        assert!((score(&n, 0, 2).unwrap() - 1.0 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(score(&n, 1, 2), None);
        assert_eq!(score(&n, 0, 0), None, "a product is not its own neighbour");
        // Best first per product.
        let of0: Vec<u32> = n
            .iter()
            .filter(|x| x.product == 0)
            .map(|x| x.neighbour)
            .collect();
        assert_eq!(of0, vec![1, 2]);
    }

    #[test]
    fn duplicates_count_once() {
        let once = model(&[1, 1, 2, 2], &[0, 1, 0, 1], PLAIN);
        let twice = model(&[1, 1, 1, 2, 2, 1], &[0, 1, 0, 1, 0, 1], PLAIN);
        assert_eq!(once, twice);
    }

    #[test]
    fn asymmetric_alpha_and_damping_and_shrink() {
        let persons = [1, 1, 2, 2, 3, 3, 3];
        let products = [0, 1, 0, 1, 0, 2, 3];
        let a = model(
            &persons,
            &products,
            Params {
                alpha: 1.0,
                ..PLAIN
            },
        );
        // alpha 1: C(i,j) / B(i): the share of i's buyers who also bought j.
        assert!((score(&a, 0, 1).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((score(&a, 1, 0).unwrap() - 1.0).abs() < 1e-12);
        let d = model(
            &persons,
            &products,
            Params {
                damping: 1.0,
                alpha: 1.0,
                ..PLAIN
            },
        );
        // Person 3 bought 3 products: weight 1/3 for (0,2).
        assert!((score(&d, 0, 2).unwrap() - (1.0 / 3.0) / 3.0).abs() < 1e-12);
        let s = model(
            &persons,
            &products,
            Params {
                shrink: 1.0,
                alpha: 1.0,
                ..PLAIN
            },
        );
        assert!((score(&s, 1, 0).unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn keeps_k_best_with_deterministic_ties() {
        // Product 0 co-bought once with each of 1..=5: equal scores, smaller indexes win.
        let persons = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5];
        let products = [0, 3, 0, 5, 0, 1, 0, 4, 0, 2];
        let n = model(&persons, &products, Params { k: 3, ..PLAIN });
        let of0: Vec<u32> = n
            .iter()
            .filter(|x| x.product == 0)
            .map(|x| x.neighbour)
            .collect();
        assert_eq!(of0, vec![1, 2, 3]);
    }

    #[test]
    fn same_model_on_any_number_of_threads() {
        let mut persons = Vec::new();
        let mut products = Vec::new();
        let mut x: u64 = 7;
        for p in 0..300i64 {
            for _ in 0..(p % 17 + 1) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                persons.push(p);
                products.push(((x >> 33) % 400) as i32);
            }
        }
        let weights: Vec<f64> = (0..persons.len())
            .map(|i| 1.0 / (1 + i % 5) as f64)
            .collect();
        let one = neighbours(&persons, &products, &weights, Params::default(), 1).unwrap();
        let four = neighbours(&persons, &products, &weights, Params::default(), 4).unwrap();
        assert_eq!(one, four);
        assert!(!one.is_empty());
    }

    #[test]
    fn weighted_purchases() {
        // Person 1 bought 0 and 1 long ago (weights 0.5), person 2 recently (1), person 3
        // bought 0 and 2 recently. Repeated pairs keep their largest weight.
        let persons = [1, 1, 2, 2, 3, 3, 3];
        let products = [0, 1, 0, 1, 0, 2, 2];
        let weights = [0.5, 0.5, 1.0, 1.0, 1.0, 0.25, 1.0];
        let n = neighbours(&persons, &products, &weights, PLAIN, 1).unwrap();
        // C(0,1) = 0.25 + 1 = 1.25; B(0) = 2.5, B(1) = 1.5, B(2) = 1; C(0,2) = 1.
        assert!((score(&n, 0, 1).unwrap() - 1.25 / (2.5f64 * 1.5).sqrt()).abs() < 1e-12);
        assert!((score(&n, 0, 2).unwrap() - 1.0 / 2.5f64.sqrt()).abs() < 1e-12);
        // Damping 1 divides by the sum of the person's weights: person 1's 1.0, person 2's 2.
        let d = neighbours(
            &persons,
            &products,
            &weights,
            Params {
                damping: 1.0,
                ..PLAIN
            },
            1,
        )
        .unwrap();
        assert!(
            (score(&d, 0, 1).unwrap() - (0.25 / 1.0 + 1.0 / 2.0) / (2.5f64 * 1.5).sqrt()).abs()
                < 1e-12
        );
    }

    #[test]
    fn errors() {
        let one = [1.0];
        assert_eq!(neighbours(&[1], &[], &one, PLAIN, 1), Err(Error::Lengths));
        assert_eq!(neighbours(&[1], &[1], &[], PLAIN, 1), Err(Error::Lengths));
        assert_eq!(
            neighbours(&[1], &[-1], &one, PLAIN, 1),
            Err(Error::NegativeIndex)
        );
        assert_eq!(neighbours(&[1], &[1], &[0.0], PLAIN, 1), Err(Error::Weight));
        assert_eq!(
            neighbours(&[1], &[1], &[f64::NAN], PLAIN, 1),
            Err(Error::Weight)
        );
        assert!(matches!(
            neighbours(
                &[1],
                &[1],
                &one,
                Params {
                    alpha: 2.0,
                    ..PLAIN
                },
                1
            ),
            Err(Error::Param(_))
        ));
        assert!(matches!(
            neighbours(&[1], &[1], &one, Params { k: 0, ..PLAIN }, 1),
            Err(Error::Param(_))
        ));
        assert!(matches!(
            neighbours(
                &[1],
                &[1],
                &one,
                Params {
                    damping: f64::NAN,
                    ..PLAIN
                },
                1
            ),
            Err(Error::Param(_))
        ));
        assert_eq!(neighbours(&[], &[], &[], PLAIN, 1), Ok(vec![]));
    }
}
