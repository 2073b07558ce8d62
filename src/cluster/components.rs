//! Records into clusters: union-find over match pairs with must-link and cannot-link.
//!
//! Must-links join first, whatever else holds. Match pairs follow strongest first, and a pair
//! whose two components hold a cannot-link between them is not joined: so a cannot-link splits a
//! chain at its weakest point, and the same input always gives the same clusters.

use std::collections::{HashMap, HashSet};

/// A scored pair at or above the match threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatchPair {
    pub a: i64,
    pub b: i64,
    pub weight: f64,
}

/// The clusters over `records` (indices into it), numbered in the order of their first record.
#[derive(Debug, Default)]
pub struct Clustering {
    /// Cluster number of each record, same order as the input.
    pub cluster_of: Vec<u32>,
    pub clusters: u32,
    /// Per cluster the weakest match pair that joined it (None: joined by must-links only or a
    /// single record): a chain held by one weak link shows up here.
    pub weakest_link: Vec<Option<f64>>,
    /// Match pairs left apart because of a cannot-link.
    pub held_apart: u64,
    /// Must-links that joined components holding a cannot-link (a steward's contradiction).
    pub contradictions: u64,
    /// Pairs naming a record not in `records` (ignored).
    pub unknown_records: u64,
}

struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
    /// Per root: the records its members must never be joined with.
    cannot: HashMap<u32, HashSet<u32>>,
    weakest: HashMap<u32, f64>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
            cannot: HashMap::new(),
            weakest: HashMap::new(),
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Whether the components of roots `ra` and `rb` hold a cannot-link between them.
    fn forbidden(&mut self, ra: u32, rb: u32) -> bool {
        let (small, other) = match (self.cannot.get(&ra), self.cannot.get(&rb)) {
            (None, _) | (_, None) => return false,
            (Some(x), Some(y)) if x.len() <= y.len() => (ra, rb),
            _ => (rb, ra),
        };
        let partners: Vec<u32> = self.cannot[&small].iter().copied().collect();
        partners.into_iter().any(|p| self.find(p) == other)
    }

    fn union(&mut self, ra: u32, rb: u32, weight: Option<f64>) -> u32 {
        let (big, small) = if self.size[ra as usize] >= self.size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        if let Some(set) = self.cannot.remove(&small) {
            let target = self.cannot.entry(big).or_default();
            if target.len() < set.len() {
                let mut set = set;
                set.extend(target.drain());
                *target = set;
            } else {
                target.extend(set);
            }
        }
        let weakest = [
            self.weakest.remove(&small),
            self.weakest.get(&big).copied(),
            weight,
        ]
        .into_iter()
        .flatten()
        .reduce(f64::min);
        if let Some(w) = weakest {
            self.weakest.insert(big, w);
        }
        big
    }
}

/// Clusters `records` (record ids, any order, no duplicates).
pub fn cluster(
    records: &[i64],
    must_link: &[(i64, i64)],
    cannot_link: &[(i64, i64)],
    matches: &[MatchPair],
) -> Clustering {
    let index: HashMap<i64, u32> = records
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();
    let mut uf = UnionFind::new(records.len());
    let mut out = Clustering::default();
    let lookup = |a: i64, b: i64, out: &mut Clustering| match (index.get(&a), index.get(&b)) {
        (Some(&x), Some(&y)) if x != y => Some((x, y)),
        (Some(_), Some(_)) => None,
        _ => {
            out.unknown_records += 1;
            None
        }
    };
    for &(a, b) in cannot_link {
        if let Some((x, y)) = lookup(a, b, &mut out) {
            uf.cannot.entry(x).or_default().insert(y);
            uf.cannot.entry(y).or_default().insert(x);
        }
    }
    for (n, &(a, b)) in must_link.iter().enumerate() {
        // Millions of pairs at a million records: a cancel must not wait for all of them.
        crate::interrupt::check_every(n, 1 << 16);
        if let Some((x, y)) = lookup(a, b, &mut out) {
            let (rx, ry) = (uf.find(x), uf.find(y));
            if rx != ry {
                if uf.forbidden(rx, ry) {
                    out.contradictions += 1;
                }
                uf.union(rx, ry, None);
            }
        }
    }
    let mut order: Vec<&MatchPair> = matches.iter().collect();
    // Strongest first; ties in record order, so the result never depends on the input order.
    order.sort_by(|p, q| {
        q.weight
            .total_cmp(&p.weight)
            .then((p.a.min(p.b), p.a.max(p.b)).cmp(&(q.a.min(q.b), q.a.max(q.b))))
    });
    for (n, p) in order.into_iter().enumerate() {
        crate::interrupt::check_every(n, 1 << 16);
        if let Some((x, y)) = lookup(p.a, p.b, &mut out) {
            let (rx, ry) = (uf.find(x), uf.find(y));
            if rx == ry {
                continue;
            }
            if uf.forbidden(rx, ry) {
                out.held_apart += 1;
            } else {
                uf.union(rx, ry, Some(p.weight));
            }
        }
    }
    // Number clusters in the order of their smallest record id.
    let mut by_id: Vec<u32> = (0..records.len() as u32).collect();
    by_id.sort_by_key(|&i| records[i as usize]);
    let mut number: HashMap<u32, u32> = HashMap::new();
    out.cluster_of = vec![0; records.len()];
    for (n, i) in by_id.into_iter().enumerate() {
        crate::interrupt::check_every(n, 1 << 16);
        let root = uf.find(i);
        let next = number.len() as u32;
        let c = *number.entry(root).or_insert_with(|| {
            out.weakest_link.push(uf.weakest.get(&root).copied());
            next
        });
        out.cluster_of[i as usize] = c;
    }
    out.clusters = number.len() as u32;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: i64, b: i64, weight: f64) -> MatchPair {
        MatchPair { a, b, weight }
    }

    fn same(c: &Clustering, records: &[i64], a: i64, b: i64) -> bool {
        let pos = |x: i64| records.iter().position(|&r| r == x).unwrap();
        c.cluster_of[pos(a)] == c.cluster_of[pos(b)]
    }

    #[test]
    fn a_cancel_stops_clustering_many_pairs() {
        use crate::interrupt::testing::{cancelled, checks_in};
        let records: Vec<i64> = (0..300_000).collect();
        let matches: Vec<MatchPair> = (1..300_000).map(|i| pair(i - 1, i, 1.0)).collect();
        let (c, checks) = checks_in(|| cluster(&records, &[], &[], &matches));
        assert_eq!(c.clusters, 1);
        // Every 65,536 pairs and records.
        assert!(checks >= 8, "{checks}");
        assert!(cancelled(checks - 1, || cluster(
            &records,
            &[],
            &[],
            &matches
        )));
    }

    #[test]
    fn matches_join_transitively_and_clusters_are_numbered_by_first_record() {
        let records = [30, 10, 20, 40];
        let c = cluster(&records, &[], &[], &[pair(30, 20, 5.0), pair(20, 10, 3.0)]);
        assert_eq!(c.clusters, 2);
        assert!(same(&c, &records, 10, 30));
        assert!(!same(&c, &records, 10, 40));
        assert_eq!(c.cluster_of, vec![0, 0, 0, 1]);
        assert_eq!(c.weakest_link, vec![Some(3.0), None]);
    }

    #[test]
    fn cannot_link_breaks_the_chain_at_its_weakest_pair() {
        // 1-2 strong, 2-3 strong, 3-4 weak; 1 and 4 must stay apart: the weak pair gives way.
        let records = [1, 2, 3, 4];
        let matches = [pair(1, 2, 9.0), pair(2, 3, 8.0), pair(3, 4, 1.0)];
        let c = cluster(&records, &[], &[(1, 4)], &matches);
        assert!(same(&c, &records, 1, 3));
        assert!(!same(&c, &records, 3, 4));
        assert_eq!(c.held_apart, 1);
        // Input order does not matter.
        let reversed: Vec<MatchPair> = matches.iter().rev().copied().collect();
        let d = cluster(&records, &[], &[(4, 1)], &reversed);
        assert_eq!(c.cluster_of, d.cluster_of);
    }

    #[test]
    fn cannot_link_holds_across_merged_components() {
        // 1-2 and 3-4 joined; 2 cannot be with 3: the pair 1-4 must not bridge them.
        let records = [1, 2, 3, 4];
        let matches = [pair(1, 2, 9.0), pair(3, 4, 9.0), pair(1, 4, 5.0)];
        let c = cluster(&records, &[], &[(2, 3)], &matches);
        assert!(!same(&c, &records, 1, 4));
        assert_eq!(c.clusters, 2);
    }

    #[test]
    fn must_link_joins_without_a_pair_and_counts_contradictions() {
        let records = [1, 2, 3];
        let c = cluster(&records, &[(1, 3)], &[], &[]);
        assert!(same(&c, &records, 1, 3));
        assert_eq!(c.weakest_link[0], None);
        let d = cluster(&records, &[(1, 2), (2, 3)], &[(1, 3)], &[]);
        assert!(same(&d, &records, 1, 3));
        assert_eq!(d.contradictions, 1);
    }

    #[test]
    fn unknown_and_self_pairs_are_ignored() {
        let records = [1, 2];
        let c = cluster(&records, &[(1, 1)], &[(2, 99)], &[pair(1, 77, 3.0)]);
        assert_eq!(c.clusters, 2);
        assert_eq!(c.unknown_records, 2);
    }
}
