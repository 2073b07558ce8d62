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
    /// Match pairs left apart because of a cannot-link.
    pub held_apart: u64,
    /// Must-links that joined components holding a cannot-link (a steward's contradiction).
    pub contradictions: u64,
    /// Pairs naming a record not in `records` (ignored).
    pub unknown_records: u64,
}

/// Union-find over dense record indices: 8 bytes a record (parent and size), plus the
/// cannot-links of the few records that have any.
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
    /// Per root: the records its members must never be joined with.
    cannot: HashMap<u32, HashSet<u32>>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
            cannot: HashMap::new(),
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

    fn union(&mut self, ra: u32, rb: u32) -> u32 {
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
        big
    }
}

/// The order match pairs join in: strongest first, ties by (smaller, larger) record id. Weights
/// compare as PostgreSQL orders float8 (-0 equals 0, every NaN above everything), so a stream
/// read `ORDER BY match_weight DESC, least(a, b), greatest(a, b)` arrives in this order.
pub fn pair_order(p: &MatchPair, q: &MatchPair) -> std::cmp::Ordering {
    let key = |w: f64| (w.is_nan(), if w.is_nan() { 0.0 } else { w + 0.0 });
    let (kp, kq) = (key(p.weight), key(q.weight));
    kq.0.cmp(&kp.0)
        .then(kq.1.total_cmp(&kp.1))
        .then((p.a.min(p.b), p.a.max(p.b)).cmp(&(q.a.min(q.b), q.a.max(q.b))))
}

/// Clustering fed one link at a time, over records given as dense indices 0..n in record id
/// order: the cannot-links first, then the must-links, then the match pairs in [`pair_order`].
/// Holds 8 bytes a record (the union-find) and the cannot-links; the pairs may stream through.
pub struct Clusterer {
    uf: UnionFind,
    out: Clustering,
    /// Links given so far (a cancel is checked every 65,536).
    seen: usize,
}

impl Clusterer {
    pub fn new(n: usize) -> Self {
        Self {
            uf: UnionFind::new(n),
            out: Clustering::default(),
            seen: 0,
        }
    }

    fn tick(&mut self) {
        // Millions of pairs at a million records: a cancel must not wait for all of them.
        crate::interrupt::check_every(self.seen, 1 << 16);
        self.seen += 1;
    }

    /// A pair naming a record outside the records (counted, ignored).
    pub fn unknown(&mut self) {
        self.out.unknown_records += 1;
    }

    pub fn cannot_link(&mut self, x: u32, y: u32) {
        if x != y {
            self.uf.cannot.entry(x).or_default().insert(y);
            self.uf.cannot.entry(y).or_default().insert(x);
        }
    }

    pub fn must_link(&mut self, x: u32, y: u32) {
        self.tick();
        let (rx, ry) = (self.uf.find(x), self.uf.find(y));
        if rx != ry {
            if self.uf.forbidden(rx, ry) {
                self.out.contradictions += 1;
            }
            self.uf.union(rx, ry);
        }
    }

    pub fn matched(&mut self, x: u32, y: u32) {
        self.tick();
        let (rx, ry) = (self.uf.find(x), self.uf.find(y));
        if rx == ry {
            return;
        }
        if self.uf.forbidden(rx, ry) {
            self.out.held_apart += 1;
        } else {
            self.uf.union(rx, ry);
        }
    }

    /// The clusters, numbered in the order of their first record (index order).
    pub fn finish(mut self) -> Clustering {
        let n = self.uf.parent.len();
        // The sizes are no longer needed: their room numbers the roots.
        let mut number = std::mem::take(&mut self.uf.size);
        number.fill(u32::MAX);
        let mut cluster_of = vec![0u32; n];
        let mut clusters = 0u32;
        for (i, slot) in cluster_of.iter_mut().enumerate() {
            crate::interrupt::check_every(i, 1 << 16);
            let root = self.uf.find(i as u32) as usize;
            if number[root] == u32::MAX {
                number[root] = clusters;
                clusters += 1;
            }
            *slot = number[root];
        }
        self.out.cluster_of = cluster_of;
        self.out.clusters = clusters;
        self.out
    }
}

/// Clusters `records` (record ids, any order, no duplicates).
pub fn cluster(
    records: &[i64],
    must_link: &[(i64, i64)],
    cannot_link: &[(i64, i64)],
    matches: &[MatchPair],
) -> Clustering {
    // Dense indices in record id order: clusters are then numbered by their smallest record.
    let mut sorted: Vec<u32> = (0..records.len() as u32).collect();
    sorted.sort_by_key(|&i| records[i as usize]);
    let index: HashMap<i64, u32> = sorted
        .iter()
        .enumerate()
        .map(|(rank, &i)| (records[i as usize], rank as u32))
        .collect();
    let mut c = Clusterer::new(records.len());
    let lookup = |a: i64, b: i64, c: &mut Clusterer| match (index.get(&a), index.get(&b)) {
        (Some(&x), Some(&y)) if x != y => Some((x, y)),
        (Some(_), Some(_)) => None,
        _ => {
            c.unknown();
            None
        }
    };
    for &(a, b) in cannot_link {
        if let Some((x, y)) = lookup(a, b, &mut c) {
            c.cannot_link(x, y);
        }
    }
    for &(a, b) in must_link {
        if let Some((x, y)) = lookup(a, b, &mut c) {
            c.must_link(x, y);
        }
    }
    let mut order: Vec<&MatchPair> = matches.iter().collect();
    // Strongest first; ties in record order, so the result never depends on the input order.
    order.sort_by(|p, q| pair_order(p, q));
    for p in order {
        if let Some((x, y)) = lookup(p.a, p.b, &mut c) {
            c.matched(x, y);
        }
    }
    let mut out = c.finish();
    // Back to the input order.
    let by_rank = std::mem::take(&mut out.cluster_of);
    out.cluster_of = vec![0; records.len()];
    for (rank, &i) in sorted.iter().enumerate() {
        out.cluster_of[i as usize] = by_rank[rank];
    }
    out
}

/// The connected components of a graph whose nodes are ids given in ascending order, each
/// node labelled with the smallest id of its component: what a label propagation over the
/// edges in SQL ends with, in one pass over the edges. Holds 12 bytes a node (its id and the
/// index of its parent); the edges stream through.
#[derive(Debug, Default)]
pub struct ComponentLabels {
    nodes: Vec<i64>,
    /// Each node's parent index; a root is always the smallest index of its component, so
    /// its id is the component's smallest.
    parent: Vec<u32>,
    /// Edges naming an id that is not a node (ignored).
    pub unknown: u64,
    links: usize,
}

impl ComponentLabels {
    /// Bytes a node holds.
    pub const NODE_BYTES: u64 = 12;

    /// Room for up to `capacity` nodes (pages not written take no memory).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            nodes: Vec::with_capacity(capacity),
            parent: Vec::with_capacity(capacity),
            ..Self::default()
        }
    }

    /// The next node: ids must come in ascending order (a repeated id is taken once).
    pub fn push_node(&mut self, id: i64) {
        match self.nodes.last() {
            Some(&last) if last == id => return,
            Some(&last) => assert!(last < id, "node ids must be given in ascending order"),
            None => {}
        }
        self.parent.push(self.nodes.len() as u32);
        self.nodes.push(id);
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn index(&self, id: i64) -> Option<u32> {
        self.nodes.binary_search(&id).ok().map(|i| i as u32)
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Joins the components of `a` and `b` (after the last node is pushed).
    pub fn link(&mut self, a: i64, b: i64) {
        // Millions of edges: a cancel must not wait for all of them.
        crate::interrupt::check_every(self.links, 1 << 16);
        self.links += 1;
        let (Some(x), Some(y)) = (self.index(a), self.index(b)) else {
            self.unknown += 1;
            return;
        };
        let (rx, ry) = (self.find(x), self.find(y));
        if rx != ry {
            // The larger root under the smaller: roots stay their component's smallest index.
            self.parent[rx.max(ry) as usize] = rx.min(ry);
        }
    }

    /// Every node with its label (the smallest id of its component), in node order.
    pub fn labels(mut self) -> impl Iterator<Item = (i64, i64)> {
        // Parents always point to smaller indices: in index order each parent's root is
        // known before its children, so one pass settles every node.
        for i in 0..self.parent.len() {
            let p = self.parent[i] as usize;
            self.parent[i] = self.parent[p];
        }
        let Self { nodes, parent, .. } = self;
        (0..nodes.len()).map(move |i| (nodes[i], nodes[parent[i] as usize]))
    }
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
        let d = cluster(&records, &[(1, 2), (2, 3)], &[(1, 3)], &[]);
        assert!(same(&d, &records, 1, 3));
        assert_eq!(d.contradictions, 1);
    }

    #[test]
    fn pairs_order_as_postgresql_sorts_float8() {
        use std::cmp::Ordering::*;
        // -0 equals 0 (then record order decides), every NaN above infinity, strongest first.
        assert_eq!(pair_order(&pair(1, 2, 0.0), &pair(3, 4, -0.0)), Less);
        assert_eq!(pair_order(&pair(3, 4, 0.0), &pair(1, 2, -0.0)), Greater);
        assert_eq!(
            pair_order(&pair(5, 6, f64::NAN), &pair(1, 2, f64::INFINITY)),
            Less
        );
        assert_eq!(
            pair_order(&pair(5, 6, -f64::NAN), &pair(1, 2, f64::NAN)),
            Greater
        );
        assert_eq!(pair_order(&pair(9, 1, 2.0), &pair(1, 8, 2.0)), Greater);
        assert_eq!(pair_order(&pair(1, 2, 1.0), &pair(1, 2, 3.0)), Greater);
    }

    #[test]
    fn links_fed_one_at_a_time_cluster_as_all_at_once() {
        // Records in id order as dense indices, pairs already in join order: what a streamed
        // resolve feeds the clusterer.
        let records: Vec<i64> = (0..400).map(|i| i * 3 + 7).collect();
        let mut matches: Vec<MatchPair> = (0..250)
            .map(|k: i64| {
                let a = records[(k * 37 % 400) as usize];
                let b = records[(k * 91 % 400) as usize];
                pair(a, b, ((k * 13) % 17) as f64 - 4.0)
            })
            .collect();
        let must = [(records[1], records[300]), (records[5], records[6])];
        // Cannot-links across pairs that would join: those pairs are held apart.
        let cannot = [(matches[3].a, matches[3].b), (matches[10].a, matches[10].b)];
        let held = cluster(&records, &must, &cannot, &matches);
        matches.sort_by(pair_order);
        let index = |id: i64| records.binary_search(&id).unwrap() as u32;
        let mut c = Clusterer::new(records.len());
        for &(a, b) in &cannot {
            c.cannot_link(index(a), index(b));
        }
        for &(a, b) in &must {
            c.must_link(index(a), index(b));
        }
        for p in &matches {
            if p.a != p.b {
                c.matched(index(p.a), index(p.b));
            }
        }
        let streamed = c.finish();
        assert_eq!(streamed.cluster_of, held.cluster_of);
        assert_eq!(streamed.clusters, held.clusters);
        assert_eq!(streamed.held_apart, held.held_apart);
        assert!(
            held.held_apart > 0 && held.clusters > 1 && held.clusters < 400,
            "{held:?}"
        );
    }

    #[test]
    fn unknown_and_self_pairs_are_ignored() {
        let records = [1, 2];
        let c = cluster(&records, &[(1, 1)], &[(2, 99)], &[pair(1, 77, 3.0)]);
        assert_eq!(c.clusters, 2);
        assert_eq!(c.unknown_records, 2);
    }

    /// Label propagation as the SQL fallback does it: every node takes the smallest label of
    /// its neighbours until none changes.
    fn propagated(nodes: &[i64], edges: &[(i64, i64)]) -> Vec<(i64, i64)> {
        let mut label: HashMap<i64, i64> = nodes.iter().map(|&n| (n, n)).collect();
        loop {
            let mut changed = false;
            for &(a, b) in edges {
                let (Some(&la), Some(&lb)) = (label.get(&a), label.get(&b)) else {
                    continue;
                };
                let l = la.min(lb);
                for n in [a, b] {
                    if label[&n] > l {
                        label.insert(n, l);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut out: Vec<(i64, i64)> = label.into_iter().collect();
        out.sort();
        out
    }

    #[test]
    fn component_labels_are_the_smallest_id_as_label_propagation_finds_them() {
        let mut next = crate::test_draws(0x9E37_79B9_7F4A_7C15);
        for round in 0..20 {
            // Sparse ids with gaps, chains and stars, edges in any direction, some naming ids
            // that are not nodes.
            let mut nodes: Vec<i64> = (0..300).map(|_| next(5_000) as i64 * 3 - 2_000).collect();
            nodes.sort();
            nodes.dedup();
            let mut edges: Vec<(i64, i64)> = (0..(round * 20 + 50))
                .map(|_| {
                    let a = nodes[next(nodes.len() as u64) as usize];
                    let b = nodes[next(nodes.len() as u64) as usize];
                    (a, b)
                })
                .collect();
            edges.push((nodes[0], 1_000_000));
            let mut c = ComponentLabels::with_capacity(nodes.len() * 2);
            for &n in &nodes {
                c.push_node(n);
                c.push_node(n);
            }
            assert_eq!(c.len(), nodes.len());
            for &(a, b) in &edges {
                c.link(a, b);
            }
            assert_eq!(c.unknown, 1);
            let labels: Vec<(i64, i64)> = c.labels().collect();
            assert_eq!(labels, propagated(&nodes, &edges), "round {round}");
            let distinct: HashSet<i64> = labels.iter().map(|l| l.1).collect();
            assert!(
                distinct.len() > 1 && distinct.len() < nodes.len(),
                "round {round}"
            );
        }
    }

    #[test]
    fn a_long_chain_given_from_its_end_is_one_component() {
        let mut c = ComponentLabels::with_capacity(0);
        for n in 0..100_000 {
            c.push_node(n);
        }
        for n in (1..100_000).rev() {
            c.link(n, n - 1);
        }
        assert!(c.labels().all(|(_, label)| label == 0));
        let empty = ComponentLabels::default();
        assert!(empty.is_empty());
        assert_eq!(empty.labels().count(), 0);
    }

    #[test]
    #[should_panic(expected = "ascending")]
    fn node_ids_out_of_order_are_refused() {
        let mut c = ComponentLabels::default();
        c.push_node(5);
        c.push_node(4);
    }
}
