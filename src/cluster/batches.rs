//! Resolve's clustering a batch of whole components at a time (issue 27), for when the records
//! taking part do not fit `customer_unify.batch_memory` at once.
//!
//! The records are split into components of the graph that joins two records when a match pair
//! or a must-link names them, when they had the same person before, or when they carried the
//! same former person id (found set-based in SQL, `sql::persons::cluster`). Every decision of the
//! clustering and of the stable-id plan ([`super::ids`]) is then taken inside one component:
//! clusters form from its links only; a previous id's records, and so every cluster that could
//! keep it, lie in one component; and so do the clusters that could get one former id back. A
//! batch of whole components therefore decides what the whole run would, with three things left
//! to the caller, which only the whole run can order:
//!
//! - **New ids** are drawn in the order of each cluster's smallest record. A batch names a cluster
//!   that needs one by a placeholder, minus its smallest record id (record ids are positive),
//!   and lists those keys ([`BatchOutcome::fresh_keys`]); the caller draws the ids in key order
//!   and puts them in for the placeholders ([`resolve_placeholder`]).
//! - **Events** are written merges first, in the order of their cluster's smallest record, then
//!   splits by previous id: each comes with that sort key ([`KeyedEvent`]).
//! - **Former ids** after a change do not depend on the new id's value when it is a new one (it
//!   is no former id and not given back), so a placeholder gives the same list.

use std::collections::{HashMap, HashSet};

use super::components::Clusterer;
use super::ids::{former_ids_after, FormerIds, IdEvent, IdPlan};

/// A record of the batch: its id, its person before this run, its former person ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: i64,
    pub previous: Option<i64>,
    pub former: Vec<i64>,
}

/// What a link between two records of a batch does, in the order they must be given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LinkKind {
    Cannot = 0,
    Must = 1,
    Match = 2,
}

impl LinkKind {
    /// As the SQL layer numbers them (its sort key).
    pub fn from_number(n: i32) -> Option<Self> {
        match n {
            0 => Some(Self::Cannot),
            1 => Some(Self::Must),
            2 => Some(Self::Match),
            _ => None,
        }
    }
}

/// A record whose person changes: `person` is the new id, or a placeholder (negative, see the
/// module) for a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchChange {
    pub record: i64,
    pub person: i64,
    pub former: Vec<i64>,
}

/// An identity event with the key it is written in: `(0, smallest record of the cluster)` for a
/// merge, `(1, previous id)` for a split. Ids in it may be placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedEvent {
    pub order: (u8, i64),
    pub event: IdEvent,
}

#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub clusters: u64,
    pub held_apart: u64,
    pub contradictions: u64,
    pub changes: Vec<BatchChange>,
    /// The smallest record of each cluster that needs a new id, ascending.
    pub fresh_keys: Vec<i64>,
    pub events: Vec<KeyedEvent>,
}

/// The real id for `id` where it is a placeholder (`fresh(key)`: the new id drawn for the
/// cluster whose smallest record is `key`).
pub fn resolve_placeholder(id: i64, fresh: impl Fn(i64) -> i64) -> i64 {
    if id < 0 {
        fresh(-id)
    } else {
        id
    }
}

/// One batch of whole components: fed its records, then its links, then the ids that may not
/// be given back.
pub struct Batch {
    ids: Vec<i64>,
    previous: Vec<Option<i64>>,
    former: FormerIds,
    clusterer: Clusterer,
}

impl Batch {
    /// The batch's records, any order; record ids positive and distinct.
    pub fn new(mut records: Vec<BatchRecord>) -> Self {
        records.sort_unstable_by_key(|r| r.id);
        let mut ids = Vec::with_capacity(records.len());
        let mut previous = Vec::with_capacity(records.len());
        let mut former = FormerIds::default();
        for (i, r) in records.into_iter().enumerate() {
            ids.push(r.id);
            previous.push(r.previous);
            former.push(i as u32, r.former);
        }
        let clusterer = Clusterer::new(ids.len());
        Self {
            ids,
            previous,
            former,
            clusterer,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// A link: all cannot-links first, then the must-links, then the match pairs in
    /// `components::pair_order` (per component; components do not interleave). A link naming a
    /// record outside the batch is counted as unknown and ignored, as one naming one record.
    pub fn link(&mut self, kind: LinkKind, a: i64, b: i64) {
        let index = |id: i64| self.ids.binary_search(&id).ok().map(|i| i as u32);
        let (x, y) = match (index(a), index(b)) {
            (Some(x), Some(y)) if x != y => (x, y),
            (Some(_), Some(_)) => return,
            _ => {
                self.clusterer.unknown();
                return;
            }
        };
        match kind {
            LinkKind::Cannot => self.clusterer.cannot_link(x, y),
            LinkKind::Must => self.clusterer.must_link(x, y),
            LinkKind::Match => self.clusterer.matched(x, y),
        }
    }

    /// The clusters and their ids. `unavailable(candidates)`: of the former ids the batch could
    /// give back (ascending), those in use outside it or ever erased.
    pub fn finish(self, unavailable: impl FnOnce(Vec<i64>) -> HashSet<i64>) -> BatchOutcome {
        let Batch {
            ids,
            previous,
            former,
            clusterer,
        } = self;
        let clustering = clusterer.finish();
        let mut plan = IdPlan::with_history(
            &clustering.cluster_of,
            clustering.clusters,
            &previous,
            &former,
        );
        let candidates = plan.restore_candidates();
        let taken = if candidates.is_empty() {
            HashSet::new()
        } else {
            unavailable(candidates)
        };
        plan.restore(&taken);
        // Each cluster's smallest record: clusters are numbered in record order.
        let mut first = Vec::with_capacity(clustering.clusters as usize);
        for (i, &c) in clustering.cluster_of.iter().enumerate() {
            if c as usize == first.len() {
                first.push(ids[i]);
            }
        }
        let needed: Vec<i64> = (0..first.len())
            .filter(|&c| plan.needs_new_id(c as u32))
            .map(|c| first[c])
            .collect();
        // Placeholders in cluster order, as `IdPlan::ids` takes them.
        let placeholders: Vec<i64> = needed.iter().map(|&k| -k).collect();
        let person_of_cluster = plan.ids(&placeholders);
        let mut changes = Vec::new();
        for (i, &c) in clustering.cluster_of.iter().enumerate() {
            let person = person_of_cluster[c as usize];
            if previous[i] != Some(person) {
                let restored = plan.restored(c) == Some(person);
                changes.push(BatchChange {
                    record: ids[i],
                    person,
                    former: former_ids_after(previous[i], former.get(i), person, restored),
                });
            }
        }
        // A merge's cluster keeps a previous id (one wholly in it): its id names it.
        let cluster_of_id: HashMap<i64, usize> = person_of_cluster
            .iter()
            .enumerate()
            .map(|(c, &id)| (id, c))
            .collect();
        let events = plan
            .events(&person_of_cluster)
            .into_iter()
            .map(|event| KeyedEvent {
                order: match &event {
                    IdEvent::Merge { person_id, .. } => (0, first[cluster_of_id[person_id]]),
                    IdEvent::Split { person_id, .. } => (1, *person_id),
                },
                event,
            })
            .collect();
        BatchOutcome {
            clusters: u64::from(clustering.clusters),
            held_apart: clustering.held_apart,
            contradictions: clustering.contradictions,
            changes,
            fresh_keys: needed,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::components::{cluster, MatchPair};

    /// Per record: its id, its person after the run, its former ids after.
    type Rows = Vec<(i64, i64, Vec<i64>)>;

    /// A whole run at once, as `unify._cluster` holds it: the record ids, their new person ids,
    /// former ids after, and the events; fresh ids drawn from `next`.
    fn whole(
        records: &[BatchRecord],
        must: &[(i64, i64)],
        cannot: &[(i64, i64)],
        matches: &[MatchPair],
        unavailable: &HashSet<i64>,
        next: i64,
    ) -> (Rows, Vec<IdEvent>) {
        let mut records = records.to_vec();
        records.sort_by_key(|r| r.id);
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        let previous: Vec<Option<i64>> = records.iter().map(|r| r.previous).collect();
        let former =
            FormerIds::from_dense(&records.iter().map(|r| r.former.clone()).collect::<Vec<_>>());
        let c = cluster(&ids, must, cannot, matches);
        let mut plan = IdPlan::with_history(&c.cluster_of, c.clusters, &previous, &former);
        // In a full run every previous id is in use by a record: unavailable too.
        let mut taken = unavailable.clone();
        taken.extend(previous.iter().flatten());
        plan.restore(&taken);
        let fresh: Vec<i64> = (next..next + plan.new_ids_needed() as i64).collect();
        let person = plan.ids(&fresh);
        let rows = (0..ids.len())
            .map(|i| {
                let cl = c.cluster_of[i];
                let p = person[cl as usize];
                let restored = plan.restored(cl) == Some(p);
                (
                    ids[i],
                    p,
                    former_ids_after(previous[i], former.get(i), p, restored),
                )
            })
            .collect();
        (rows, plan.events(&person))
    }

    /// The same run a batch of whole components at a time, the placeholders resolved as the
    /// SQL layer does.
    fn batched(
        records: &[BatchRecord],
        must: &[(i64, i64)],
        cannot: &[(i64, i64)],
        matches: &[MatchPair],
        unavailable: &HashSet<i64>,
        next: i64,
        per_batch: usize,
    ) -> (Rows, Vec<IdEvent>, usize) {
        // Components of the links that decide (as SQL's label propagation finds them).
        let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
        let mut edges: Vec<(i64, i64)> = must.to_vec();
        edges.extend(matches.iter().map(|p| (p.a, p.b)));
        let mut by_previous: HashMap<i64, i64> = HashMap::new();
        let mut by_former: HashMap<i64, i64> = HashMap::new();
        for r in records {
            if let Some(p) = r.previous {
                edges.push((*by_previous.entry(p).or_insert(r.id), r.id));
            }
            for &f in &r.former {
                edges.push((*by_former.entry(f).or_insert(r.id), r.id));
            }
        }
        let comp = cluster(&ids, &edges, &[], &[]);
        let mut label: HashMap<u32, i64> = HashMap::new();
        for (i, &c) in comp.cluster_of.iter().enumerate() {
            let l = label.entry(c).or_insert(ids[i]);
            *l = (*l).min(ids[i]);
        }
        let label_of: HashMap<i64, i64> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, label[&comp.cluster_of[i]]))
            .collect();
        let mut stream: Vec<&BatchRecord> = records.iter().collect();
        stream.sort_by_key(|r| (label_of[&r.id], r.id));
        let mut links: Vec<(i64, LinkKind, MatchPair)> = Vec::new();
        for &(a, b) in cannot {
            if label_of[&a] == label_of[&b] {
                links.push((
                    label_of[&a],
                    LinkKind::Cannot,
                    MatchPair { a, b, weight: 0.0 },
                ));
            }
        }
        for &(a, b) in must {
            links.push((
                label_of[&a],
                LinkKind::Must,
                MatchPair { a, b, weight: 0.0 },
            ));
        }
        for p in matches {
            links.push((label_of[&p.a], LinkKind::Match, *p));
        }
        links.sort_by(|x, y| {
            (x.0, x.1)
                .cmp(&(y.0, y.1))
                .then(crate::cluster::components::pair_order(&x.2, &y.2))
        });
        let mut links = links.into_iter().peekable();
        let mut stream = stream.into_iter().peekable();
        let (mut changes, mut fresh_keys, mut events) = (Vec::new(), Vec::new(), Vec::new());
        let mut batches = 0;
        loop {
            let mut rows: Vec<BatchRecord> = Vec::new();
            let mut last = None;
            while let Some(r) = stream.peek() {
                if rows.len() >= per_batch && Some(label_of[&r.id]) != last {
                    break;
                }
                last = Some(label_of[&r.id]);
                rows.push((*stream.next().unwrap()).clone());
            }
            let Some(hi) = last else { break };
            batches += 1;
            let mut batch = Batch::new(rows);
            while links.peek().is_some_and(|l| l.0 <= hi) {
                let (_, kind, p) = links.next().unwrap();
                batch.link(kind, p.a, p.b);
            }
            let out = batch.finish(|candidates| {
                let in_use: HashSet<i64> = records.iter().filter_map(|r| r.previous).collect();
                candidates
                    .into_iter()
                    .filter(|c| unavailable.contains(c) || in_use.contains(c))
                    .collect()
            });
            changes.extend(out.changes);
            fresh_keys.extend(out.fresh_keys);
            events.extend(out.events);
        }
        fresh_keys.sort_unstable();
        let fresh = |key: i64| next + fresh_keys.binary_search(&key).unwrap() as i64;
        let changed: HashMap<i64, BatchChange> =
            changes.into_iter().map(|c| (c.record, c)).collect();
        let mut rows: Rows = records
            .iter()
            .map(|r| match changed.get(&r.id) {
                Some(c) => (r.id, resolve_placeholder(c.person, fresh), c.former.clone()),
                None => (r.id, r.previous.unwrap(), r.former.clone()),
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        events.sort_by_key(|e| e.order);
        let events = events
            .into_iter()
            .map(|e| match e.event {
                IdEvent::Merge {
                    person_id,
                    absorbed,
                } => IdEvent::Merge {
                    person_id: resolve_placeholder(person_id, fresh),
                    absorbed,
                },
                IdEvent::Split {
                    person_id,
                    into,
                    restored,
                } => {
                    let mut into: Vec<i64> = into
                        .into_iter()
                        .map(|x| resolve_placeholder(x, fresh))
                        .collect();
                    into.sort_unstable();
                    IdEvent::Split {
                        person_id,
                        into,
                        restored,
                    }
                }
            })
            .collect();
        (rows, events, batches)
    }

    fn rec(id: i64, previous: Option<i64>, former: &[i64]) -> BatchRecord {
        BatchRecord {
            id,
            previous,
            former: former.to_vec(),
        }
    }

    /// A pseudo-random number in 0..n from a seed (no dependency for tests).
    fn mix(seed: u64, n: u64) -> u64 {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (seed >> 7);
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        x % n
    }

    #[test]
    fn a_first_run_in_batches_gives_the_ids_of_a_whole_run() {
        // New records only: every cluster draws an id, in the order of its smallest record,
        // however the batches cut the components.
        let records: Vec<BatchRecord> = (1..=60).map(|i| rec(i * 2, None, &[])).collect();
        let matches: Vec<MatchPair> = (0..45u64)
            .map(|k| MatchPair {
                a: (mix(k, 60) as i64 + 1) * 2,
                b: (mix(k + 1000, 60) as i64 + 1) * 2,
                weight: mix(k + 77, 9) as f64,
            })
            .filter(|p| p.a != p.b)
            .collect();
        let cannot = [(matches[0].a, matches[0].b), (matches[4].a, matches[4].b)];
        let must = [(2, 120), (40, 42)];
        let expected = whole(&records, &must, &cannot, &matches, &HashSet::new(), 500);
        for per_batch in [1, 3, 7, 1000] {
            let (rows, events, batches) = batched(
                &records,
                &must,
                &cannot,
                &matches,
                &HashSet::new(),
                500,
                per_batch,
            );
            assert_eq!((&rows, &events), (&expected.0, &expected.1), "{per_batch}");
            assert!(per_batch > 100 || batches > 1);
        }
        assert!(expected.0.iter().any(|r| r.1 == 500));
    }

    #[test]
    fn merges_splits_and_ids_given_back_in_batches_as_in_a_whole_run() {
        // Persons 10 (records 1-4; 3 and 4 came from 30 by a merge), 20 (5, 6), 40 (7),
        // 50 (8, 9), new records 11 and 12, 60 (13; carried 70 before). Now: 3-4 apart from
        // 10 (30 comes back), 5 leaves 20 and joins 7 (a split and a merge), 8 and 9 apart
        // (a split, a new id), 11 joins 13, 12 alone (a new id); 70 is taken elsewhere.
        let records = vec![
            rec(1, Some(10), &[]),
            rec(2, Some(10), &[]),
            rec(3, Some(10), &[30]),
            rec(4, Some(10), &[30]),
            rec(5, Some(20), &[]),
            rec(6, Some(20), &[]),
            rec(7, Some(40), &[]),
            rec(8, Some(50), &[]),
            rec(9, Some(50), &[]),
            rec(11, None, &[]),
            rec(12, None, &[]),
            rec(13, Some(60), &[70]),
            rec(14, Some(80), &[]),
        ];
        let p = |a, b, weight| MatchPair { a, b, weight };
        let matches = [
            p(1, 2, 5.0),
            p(3, 4, 4.0),
            p(2, 3, 1.0),
            p(5, 7, 3.0),
            p(11, 13, 2.0),
            p(14, 7, 0.5),
        ];
        let cannot = [(1, 4), (7, 14)];
        let must = [(6, 9)];
        let unavailable: HashSet<i64> = [70].into();
        let expected = whole(&records, &must, &cannot, &matches, &unavailable, 900);
        // What the whole run does, so the batches are held to something.
        let person = |id: i64| expected.0.iter().find(|r| r.0 == id).unwrap().1;
        assert_eq!(person(3), 30);
        assert_eq!(person(1), 10);
        assert_eq!(person(5), person(7));
        assert_ne!(person(8), person(9));
        assert!(expected
            .1
            .iter()
            .any(|e| matches!(e, IdEvent::Merge { .. })));
        assert!(expected
            .1
            .iter()
            .any(|e| matches!(e, IdEvent::Split { restored, .. } if restored == &[30])));
        for per_batch in [1, 2, 5, 100] {
            let got = batched(
                &records,
                &must,
                &cannot,
                &matches,
                &unavailable,
                900,
                per_batch,
            );
            assert_eq!((&got.0, &got.1), (&expected.0, &expected.1), "{per_batch}");
        }
    }

    #[test]
    fn random_histories_in_batches_as_in_a_whole_run() {
        let (mut merges, mut splits, mut given_back) = (0, 0, 0);
        for seed in 0..40u64 {
            let n = 30 + mix(seed, 50) as i64;
            let records: Vec<BatchRecord> = (1..=n)
                .map(|i| {
                    let s = seed * 1000 + i as u64;
                    let previous = (mix(s, 5) > 0).then(|| 1000 + mix(s + 1, n as u64 / 2) as i64);
                    let former: Vec<i64> = match mix(s + 2, 6) {
                        0 => vec![2000 + mix(s + 3, 8) as i64],
                        1 => vec![2000 + mix(s + 3, 8) as i64, 3000 + mix(s + 4, 4) as i64],
                        _ => vec![],
                    };
                    rec(i, previous, &former)
                })
                .collect();
            let matches: Vec<MatchPair> = (0..n as u64)
                .map(|k| MatchPair {
                    a: 1 + mix(seed + k * 31, n as u64) as i64,
                    b: 1 + mix(seed + k * 57 + 5, n as u64) as i64,
                    weight: mix(seed + k, 7) as f64 - 2.0,
                })
                .filter(|p| p.a != p.b)
                .collect();
            let cannot: Vec<(i64, i64)> = matches.iter().step_by(5).map(|p| (p.a, p.b)).collect();
            let must: Vec<(i64, i64)> = matches
                .iter()
                .skip(3)
                .step_by(11)
                .map(|p| (p.b, p.a))
                .collect();
            let unavailable: HashSet<i64> = [2001, 3002].into();
            let expected = whole(&records, &must, &cannot, &matches, &unavailable, 10_000);
            for e in &expected.1 {
                match e {
                    IdEvent::Merge { .. } => merges += 1,
                    IdEvent::Split { restored, .. } => {
                        splits += 1;
                        given_back += restored.len();
                    }
                }
            }
            for per_batch in [1, 4, 1000] {
                let got = batched(
                    &records,
                    &must,
                    &cannot,
                    &matches,
                    &unavailable,
                    10_000,
                    per_batch,
                );
                assert_eq!(
                    (&got.0, &got.1),
                    (&expected.0, &expected.1),
                    "seed {seed}, {per_batch}"
                );
            }
        }
        // The histories hold what the batches must get right.
        assert!(
            merges > 20 && splits > 20 && given_back > 5,
            "{merges} {splits} {given_back}"
        );
    }

    #[test]
    fn placeholders_resolve_to_the_drawn_ids() {
        assert_eq!(resolve_placeholder(42, |_| unreachable!()), 42);
        assert_eq!(resolve_placeholder(-7, |k| k * 100), 700);
        assert_eq!(LinkKind::from_number(2), Some(LinkKind::Match));
        assert_eq!(LinkKind::from_number(3), None);
    }
}
