//! Stable person ids across runs.
//!
//! Each previous id goes to the new cluster holding most of its records (ties: the cluster with
//! the smallest record id), so a split keeps the id on the larger part. A cluster that receives
//! several previous ids keeps the smallest (a merge); a cluster that receives none draws a new
//! id. Unchanged clusters keep their id and produce no event, so resolving twice is a no-op.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A change of identity for `unify.identity_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdEvent {
    /// `absorbed` persons joined `person_id`.
    Merge { person_id: i64, absorbed: Vec<i64> },
    /// The records of `person_id` now belong to the persons `into` (it may be among them).
    Split { person_id: i64, into: Vec<i64> },
}

#[derive(Debug)]
pub struct IdPlan {
    /// Per cluster the previous id it keeps; None: it needs a new one.
    pub kept: Vec<Option<i64>>,
    /// Per cluster the previous ids of its records.
    previous_of_cluster: Vec<BTreeSet<i64>>,
    /// Per previous id the clusters holding its records.
    clusters_of_previous: BTreeMap<i64, BTreeSet<u32>>,
}

impl IdPlan {
    /// `previous[i]`: the person id record i had before (None: a new record).
    pub fn new(cluster_of: &[u32], clusters: u32, previous: &[Option<i64>]) -> Self {
        assert_eq!(cluster_of.len(), previous.len());
        let mut counts: HashMap<i64, BTreeMap<u32, u64>> = HashMap::new();
        let mut previous_of_cluster = vec![BTreeSet::new(); clusters as usize];
        let mut clusters_of_previous: BTreeMap<i64, BTreeSet<u32>> = BTreeMap::new();
        for (n, (&c, p)) in cluster_of.iter().zip(previous).enumerate() {
            crate::interrupt::check_every(n, 1 << 16);
            if let Some(p) = *p {
                *counts.entry(p).or_default().entry(c).or_default() += 1;
                previous_of_cluster[c as usize].insert(p);
                clusters_of_previous.entry(p).or_default().insert(c);
            }
        }
        let mut kept: Vec<Option<i64>> = vec![None; clusters as usize];
        for (id, per_cluster) in counts {
            // Most records; on a tie the lowest cluster number (the one with the smallest record).
            let owner = per_cluster
                .iter()
                .max_by(|(ca, na), (cb, nb)| na.cmp(nb).then(cb.cmp(ca)))
                .map(|(&c, _)| c)
                .expect("at least one cluster");
            let slot = &mut kept[owner as usize];
            *slot = Some(slot.map_or(id, |k| k.min(id)));
        }
        Self {
            kept,
            previous_of_cluster,
            clusters_of_previous,
        }
    }

    pub fn new_ids_needed(&self) -> usize {
        self.kept.iter().filter(|k| k.is_none()).count()
    }

    /// The id of every cluster, drawing new ones from `fresh` in cluster order.
    pub fn ids(&self, fresh: &[i64]) -> Vec<i64> {
        assert_eq!(
            fresh.len(),
            self.new_ids_needed(),
            "one fresh id per new cluster"
        );
        let mut fresh = fresh.iter();
        self.kept
            .iter()
            .map(|k| k.unwrap_or_else(|| *fresh.next().expect("counted")))
            .collect()
    }

    /// Merges and splits, given the final ids from `ids`.
    pub fn events(&self, ids: &[i64]) -> Vec<IdEvent> {
        let mut events = Vec::new();
        for (c, previous) in self.previous_of_cluster.iter().enumerate() {
            let absorbed: Vec<i64> = previous
                .iter()
                .copied()
                .filter(|&p| p != ids[c] && self.clusters_of_previous[&p].len() == 1)
                .collect();
            if !absorbed.is_empty() {
                events.push(IdEvent::Merge {
                    person_id: ids[c],
                    absorbed,
                });
            }
        }
        for (&p, clusters) in &self.clusters_of_previous {
            if clusters.len() > 1 {
                let into: BTreeSet<i64> = clusters.iter().map(|&c| ids[c as usize]).collect();
                events.push(IdEvent::Split {
                    person_id: p,
                    into: into.into_iter().collect(),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        cluster_of: &[u32],
        previous: &[Option<i64>],
        fresh: &[i64],
    ) -> (Vec<i64>, Vec<IdEvent>) {
        let clusters = cluster_of.iter().max().map_or(0, |m| m + 1);
        let p = IdPlan::new(cluster_of, clusters, previous);
        let ids = p.ids(fresh);
        let events = p.events(&ids);
        (ids, events)
    }

    #[test]
    fn unchanged_clusters_keep_ids_and_write_nothing() {
        let (ids, events) = plan(&[0, 0, 1], &[Some(7), Some(7), Some(3)], &[]);
        assert_eq!(ids, vec![7, 3]);
        assert!(events.is_empty());
    }

    #[test]
    fn new_records_join_or_get_new_ids() {
        let (ids, events) = plan(&[0, 0, 1], &[Some(7), None, None], &[100]);
        assert_eq!(ids, vec![7, 100]);
        assert!(events.is_empty());
    }

    #[test]
    fn a_merge_keeps_the_smallest_id() {
        let (ids, events) = plan(&[0, 0, 0], &[Some(9), Some(4), None], &[]);
        assert_eq!(ids, vec![4]);
        assert_eq!(
            events,
            vec![IdEvent::Merge {
                person_id: 4,
                absorbed: vec![9]
            }]
        );
    }

    #[test]
    fn a_split_keeps_the_id_on_the_larger_part() {
        // Person 5 had four records; three stay together, one leaves.
        let (ids, events) = plan(&[0, 1, 1, 1], &[Some(5); 4], &[200]);
        assert_eq!(ids, vec![200, 5]);
        assert_eq!(
            events,
            vec![IdEvent::Split {
                person_id: 5,
                into: vec![5, 200]
            }]
        );
        // An even split: the part with the smallest record keeps it.
        let (ids, _) = plan(&[0, 1], &[Some(5), Some(5)], &[201]);
        assert_eq!(ids, vec![5, 201]);
    }

    #[test]
    fn split_and_merge_at_once() {
        // 1's records: one stays alone, one joins 2; 2 keeps its id (smaller than nothing else
        // owned there), so the move is a split of 1, not a merge.
        let (ids, events) = plan(&[0, 1, 1], &[Some(1), Some(1), Some(2)], &[]);
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            events,
            vec![IdEvent::Split {
                person_id: 1,
                into: vec![1, 2]
            }]
        );
    }
}
