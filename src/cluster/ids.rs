//! Stable person ids across runs, and ids given back when a merge is undone.
//!
//! **Former ids.** Each record keeps the person ids it carried before its current one, oldest
//! first, each once, never its current id (`unify.record_persons.former_person_ids`). When its id
//! changes it adds the one it leaves; when it gets one of them back (an undo, below) it drops
//! that one and every later one, so it stands where it stood before the merge that took it
//! away ([`former_ids_after`]). A record that never carried another id has none: the id is its
//! own ("born" there).
//!
//! **Previous ids.** Each previous id goes to one new cluster: the one holding most of the
//! records born in it, then most of its records, then the one with the smallest record. So a
//! split keeps the id on the larger part, except that records which came in by a merge never
//! take the id from its own records: they have their former id to go back to. A cluster that
//! receives several previous ids keeps the smallest (a merge). Unchanged clusters keep their id
//! and produce no event, so resolving twice is a no-op.
//!
//! **Undo.** A cluster that receives no previous id gets back a former id of its records where
//! that id is free: carried by no record and no person elsewhere, never erased (the caller
//! names those, [`IdPlan::restore`]), and not a previous id of this run (those are in use or
//! just merged). Of its records' former ids it gets the one most of them carried (the largest
//! former person among them), then the one most of them were born with, then the smallest;
//! where clusters want the same id, the one with the better claim gets it (same order, then
//! the cluster with the smallest record). A cluster left without an id draws a new one. So
//! unmerge, unlink, or a source change that splits a merged person give the separated records
//! back the id they had before the merge, and a new id means a new customer.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// A record's id before a run: `Option<i64>`, or a [`PackedId`] where a whole run's records are
/// held.
pub trait PreviousId: Copy {
    fn id(self) -> Option<i64>;
}

impl PreviousId for Option<i64> {
    fn id(self) -> Option<i64> {
        self
    }
}

/// An id or none in 8 bytes (`Option<i64>` takes 16): none is `i64::MIN`, never an id (person
/// and household ids come from sequences that start at 1; every other value, 0 and negative
/// ones included, stays itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedId(i64);

impl PackedId {
    pub const NONE: Self = Self(i64::MIN);

    pub fn new(id: Option<i64>) -> Self {
        debug_assert_ne!(id, Some(i64::MIN), "i64::MIN is no id");
        Self(id.unwrap_or(i64::MIN))
    }

    pub fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }

    pub fn is_none(self) -> bool {
        self.0 == i64::MIN
    }
}

impl PreviousId for PackedId {
    fn id(self) -> Option<i64> {
        self.get()
    }
}

/// A change of identity for `unify.identity_events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdEvent {
    /// `absorbed` persons joined `person_id`.
    Merge { person_id: i64, absorbed: Vec<i64> },
    /// The records of `person_id` now belong to the persons `into` (it may be among them);
    /// `restored`: those of `into` that came back (an undo), not drawn new.
    Split {
        person_id: i64,
        into: Vec<i64>,
        restored: Vec<i64>,
    },
}

/// A cluster's claim on a former id of its records.
#[derive(Clone, Copy, Debug)]
struct Claim {
    cluster: u32,
    id: i64,
    /// Records of the cluster that carried the id.
    carried: u64,
    /// Records of the cluster born with it (their first id).
    born: u64,
}

/// The former ids of the records that have any (most have none), by record index: 8 bytes and
/// the ids for each such record, nothing for the others.
#[derive(Debug, Default)]
pub struct FormerIds {
    at: Vec<u32>,
    ids: Vec<Vec<i64>>,
}

impl FormerIds {
    /// Record `i`'s former ids; `i` grows from call to call. Empty lists are not kept.
    pub fn push(&mut self, i: u32, ids: Vec<i64>) {
        debug_assert!(self.at.last().is_none_or(|&last| last < i));
        if !ids.is_empty() {
            self.at.push(i);
            self.ids.push(ids);
        }
    }

    /// From one list per record.
    pub fn from_dense(former: &[Vec<i64>]) -> Self {
        let mut out = Self::default();
        for (i, ids) in former.iter().enumerate() {
            out.push(i as u32, ids.clone());
        }
        out
    }

    /// Record `i`'s former ids, oldest first (empty: none).
    pub fn get(&self, i: usize) -> &[i64] {
        match self.at.binary_search(&(i as u32)) {
            Ok(k) => &self.ids[k],
            Err(_) => &[],
        }
    }
}

/// The records of one previous id in one cluster.
#[derive(Clone, Copy, Debug)]
struct Spread {
    previous: i64,
    cluster: u32,
    /// Records born in the previous id (no former ids).
    born: u32,
    records: u32,
}

#[derive(Debug)]
pub struct IdPlan {
    /// Per cluster the previous id it keeps; None: it needs another one (8 bytes a cluster).
    kept: Vec<PackedId>,
    /// Per cluster the former id it gets back (only where `kept` is None).
    restored: Vec<PackedId>,
    /// Per previous id and cluster holding its records, in that order: what each previous id
    /// became (about one entry a person, 24 bytes; no map or set per person).
    spread: Vec<Spread>,
    /// Claims of the clusters without a previous id on their records' former ids.
    claims: Vec<Claim>,
}

impl IdPlan {
    /// `previous[i]`: the person id record i had before (None: a new record). No former ids:
    /// nothing is given back (households).
    pub fn new(cluster_of: &[u32], clusters: u32, previous: &[impl PreviousId]) -> Self {
        Self::with_history(cluster_of, clusters, previous, &FormerIds::default())
    }

    /// As `new`, with `former.get(i)`: the ids record i carried before `previous[i]`, oldest
    /// first.
    pub fn with_history(
        cluster_of: &[u32],
        clusters: u32,
        previous: &[impl PreviousId],
        former: &FormerIds,
    ) -> Self {
        assert_eq!(cluster_of.len(), previous.len());
        let former_of = |i: usize| former.get(i);
        // Per record with a previous id: (previous id, cluster, born in it), sorted, then
        // summed per previous id and cluster in place.
        // Made at their size (a whole run at 10M records: grown by doubling they held up to
        // twice as much).
        let mut each: Vec<(i64, u32, bool)> =
            Vec::with_capacity(previous.iter().filter(|p| p.id().is_some()).count());
        for (n, (&c, p)) in cluster_of.iter().zip(previous).enumerate() {
            crate::interrupt::check_every(n, 1 << 16);
            if let Some(p) = p.id() {
                each.push((p, c, former_of(n).is_empty()));
            }
        }
        each.sort_unstable();
        let mut spread: Vec<Spread> =
            Vec::with_capacity(each.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)).count());
        for (p, c, born) in each {
            match spread.last_mut() {
                Some(s) if s.previous == p && s.cluster == c => {
                    s.born += u32::from(born);
                    s.records += 1;
                }
                _ => spread.push(Spread {
                    previous: p,
                    cluster: c,
                    born: u32::from(born),
                    records: 1,
                }),
            }
        }
        let mut kept: Vec<PackedId> = vec![PackedId::NONE; clusters as usize];
        for per_cluster in spread.chunk_by(|a, b| a.previous == b.previous) {
            // Most records born in it, then most records; on a tie the lowest cluster number
            // (the one with the smallest record).
            let owner = per_cluster
                .iter()
                .max_by(|a, b| {
                    (a.born, a.records)
                        .cmp(&(b.born, b.records))
                        .then(b.cluster.cmp(&a.cluster))
                })
                .map(|s| s.cluster)
                .expect("at least one cluster");
            // Previous ids come in ascending order: the first a cluster gets is its smallest.
            let slot = &mut kept[owner as usize];
            if slot.is_none() {
                *slot = PackedId::new(Some(per_cluster[0].previous));
            }
        }
        let is_previous = |id: i64| spread.binary_search_by(|s| s.previous.cmp(&id)).is_ok();
        // What the clusters left without an id could get back.
        let mut claims: BTreeMap<(u32, i64), (u64, u64)> = BTreeMap::new();
        for (n, &c) in cluster_of.iter().enumerate() {
            if !kept[c as usize].is_none() {
                continue;
            }
            for (position, &id) in former_of(n).iter().enumerate() {
                if !is_previous(id) {
                    let claim = claims.entry((c, id)).or_default();
                    claim.0 += 1;
                    claim.1 += u64::from(position == 0);
                }
            }
        }
        Self {
            restored: vec![PackedId::NONE; kept.len()],
            kept,
            spread,
            claims: claims
                .into_iter()
                .map(|((cluster, id), (carried, born))| Claim {
                    cluster,
                    id,
                    carried,
                    born,
                })
                .collect(),
        }
    }

    /// The former ids this plan could give back, ascending: the caller finds those not free.
    pub fn restore_candidates(&self) -> Vec<i64> {
        let ids: BTreeSet<i64> = self.claims.iter().map(|c| c.id).collect();
        ids.into_iter().collect()
    }

    /// Gives the clusters without an id back a former id of their records, none of
    /// `unavailable` (in use outside this run, or erased).
    pub fn restore(&mut self, unavailable: &HashSet<i64>) {
        let mut claims = self.claims.clone();
        // The best claims first: most records that carried the id, then most born with it,
        // then the cluster with the smallest record, then the smallest id.
        claims.sort_by(|a, b| {
            (b.carried, b.born)
                .cmp(&(a.carried, a.born))
                .then(a.cluster.cmp(&b.cluster))
                .then(a.id.cmp(&b.id))
        });
        let mut given: HashSet<i64> = HashSet::new();
        for claim in claims {
            let slot = &mut self.restored[claim.cluster as usize];
            if slot.is_none() && !unavailable.contains(&claim.id) && given.insert(claim.id) {
                *slot = PackedId::new(Some(claim.id));
            }
        }
    }

    /// The id cluster `c` gets back, if any (after `restore`).
    pub fn restored(&self, c: u32) -> Option<i64> {
        self.restored[c as usize].get()
    }

    /// Whether cluster `c` keeps no previous id and gets none back (after `restore`).
    pub fn needs_new_id(&self, c: u32) -> bool {
        self.kept[c as usize].is_none() && self.restored[c as usize].is_none()
    }

    pub fn new_ids_needed(&self) -> usize {
        self.kept
            .iter()
            .zip(&self.restored)
            .filter(|(k, r)| k.is_none() && r.is_none())
            .count()
    }

    /// The id of every cluster, drawing new ones from `fresh` in cluster order.
    pub fn ids(&self, fresh: &[i64]) -> Vec<i64> {
        assert_eq!(
            fresh.len(),
            self.new_ids_needed(),
            "one fresh id per new cluster"
        );
        let mut fresh = fresh.iter();
        self.ids_drawn(|| *fresh.next().expect("counted"))
    }

    /// The id of every cluster, a new one drawn from `next` (called `new_ids_needed` times) for
    /// each cluster that needs one, in cluster order: no list of the new ids held beside.
    pub fn ids_drawn(&self, mut next: impl FnMut() -> i64) -> Vec<i64> {
        let mut ids = Vec::with_capacity(self.kept.len());
        for (k, r) in self.kept.iter().zip(&self.restored) {
            ids.push(k.get().or(r.get()).unwrap_or_else(&mut next));
        }
        ids
    }

    /// Merges and splits, given the final ids from `ids`.
    pub fn events(&self, ids: &[i64]) -> Vec<IdEvent> {
        let mut events = Vec::new();
        // Merges: per cluster (ascending) the previous ids wholly in it that it does not keep.
        let mut absorbed: Vec<(u32, i64)> = self
            .spread
            .chunk_by(|a, b| a.previous == b.previous)
            .filter(|g| g.len() == 1 && g[0].previous != ids[g[0].cluster as usize])
            .map(|g| (g[0].cluster, g[0].previous))
            .collect();
        absorbed.sort_unstable();
        for group in absorbed.chunk_by(|a, b| a.0 == b.0) {
            events.push(IdEvent::Merge {
                person_id: ids[group[0].0 as usize],
                absorbed: group.iter().map(|&(_, p)| p).collect(),
            });
        }
        // Splits: per previous id (ascending) spread over several clusters.
        for group in self
            .spread
            .chunk_by(|a, b| a.previous == b.previous)
            .filter(|g| g.len() > 1)
        {
            let into: BTreeSet<i64> = group.iter().map(|s| ids[s.cluster as usize]).collect();
            let restored: BTreeSet<i64> = group
                .iter()
                .filter_map(|s| self.restored[s.cluster as usize].get())
                .collect();
            events.push(IdEvent::Split {
                person_id: group[0].previous,
                into: into.into_iter().collect(),
                restored: restored.into_iter().collect(),
            });
        }
        events
    }
}

/// A record's former ids once its id goes from `previous` to `new_id`; `restored`: its
/// cluster got `new_id` back (an undo). Unchanged for a new record or an unchanged id.
pub fn former_ids_after(
    previous: Option<i64>,
    former: &[i64],
    new_id: i64,
    restored: bool,
) -> Vec<i64> {
    let old = match previous {
        Some(old) if old != new_id => old,
        _ => return former.to_vec(),
    };
    if restored {
        // Back where it was before the merge that took it away: what came after goes too.
        if let Some(at) = former.iter().position(|&x| x == new_id) {
            return former[..at].to_vec();
        }
    }
    let mut after: Vec<i64> = former
        .iter()
        .copied()
        .filter(|&x| x != old && x != new_id)
        .collect();
    after.push(old);
    after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        cluster_of: &[u32],
        previous: &[Option<i64>],
        fresh: &[i64],
    ) -> (Vec<i64>, Vec<IdEvent>) {
        undo(cluster_of, previous, &[], &[], fresh)
    }

    /// With former ids, `unavailable` not to be given back.
    fn undo(
        cluster_of: &[u32],
        previous: &[Option<i64>],
        former: &[Vec<i64>],
        unavailable: &[i64],
        fresh: &[i64],
    ) -> (Vec<i64>, Vec<IdEvent>) {
        let clusters = cluster_of.iter().max().map_or(0, |m| m + 1);
        let mut p = IdPlan::with_history(
            cluster_of,
            clusters,
            previous,
            &FormerIds::from_dense(former),
        );
        p.restore(&unavailable.iter().copied().collect());
        let ids = p.ids(fresh);
        let events = p.events(&ids);
        // As a whole run holds them: previous ids in 8 bytes, the new ids drawn one by one.
        let compact: Vec<PackedId> = previous.iter().map(|&p| PackedId::new(p)).collect();
        let mut q = IdPlan::with_history(
            cluster_of,
            clusters,
            &compact,
            &FormerIds::from_dense(former),
        );
        q.restore(&unavailable.iter().copied().collect());
        let mut drawn = fresh.iter();
        assert_eq!(q.ids_drawn(|| *drawn.next().expect("enough")), ids);
        assert!(drawn.next().is_none(), "every fresh id drawn");
        assert_eq!(q.events(&ids), events);
        for c in 0..clusters {
            assert_eq!(q.restored(c), p.restored(c));
        }
        (ids, events)
    }

    /// Only `i64::MIN` is none in a `PackedId`: an id of 0 (never drawn from a sequence) is
    /// kept like any other, with no event, held compactly or not.
    #[test]
    fn an_id_of_zero_is_kept_like_any_other() {
        assert_eq!(plan(&[0, 0], &[Some(0), Some(0)], &[]), (vec![0], vec![]));
        assert_eq!(PackedId::new(Some(0)).get(), Some(0));
        assert_eq!(PackedId::new(Some(-5)).get(), Some(-5));
        assert_eq!(PackedId::new(None).get(), None);
        assert!(PackedId::NONE.is_none());
    }

    fn split(person_id: i64, into: &[i64], restored: &[i64]) -> IdEvent {
        IdEvent::Split {
            person_id,
            into: into.to_vec(),
            restored: restored.to_vec(),
        }
    }

    /// The former ids of every record after a plan, as `unify._cluster` writes them.
    fn formers_after(
        cluster_of: &[u32],
        previous: &[Option<i64>],
        former: &[Vec<i64>],
        unavailable: &[i64],
        fresh: &[i64],
    ) -> (Vec<i64>, Vec<Vec<i64>>) {
        let clusters = cluster_of.iter().max().map_or(0, |m| m + 1);
        let mut p = IdPlan::with_history(
            cluster_of,
            clusters,
            previous,
            &FormerIds::from_dense(former),
        );
        p.restore(&unavailable.iter().copied().collect());
        let ids = p.ids(fresh);
        let after = cluster_of
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let id = ids[c as usize];
                former_ids_after(previous[i], &former[i], id, p.restored(c) == Some(id))
            })
            .collect();
        (ids, after)
    }

    #[test]
    fn unchanged_clusters_keep_ids_and_write_nothing() {
        let (ids, events) = plan(&[0, 0, 1], &[Some(7), Some(7), Some(3)], &[]);
        assert_eq!(ids, vec![7, 3]);
        assert!(events.is_empty());
        // With former ids too: nothing is given back to a cluster that keeps its id.
        let (ids, events) = undo(
            &[0, 0, 1],
            &[Some(7), Some(7), Some(3)],
            &[vec![], vec![9], vec![4, 5]],
            &[],
            &[],
        );
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
        assert_eq!(events, vec![split(5, &[5, 200], &[])]);
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
        assert_eq!(events, vec![split(1, &[1, 2], &[])]);
    }

    #[test]
    fn undoing_a_merge_gives_the_absorbed_id_back() {
        // 4 absorbed 9 (its record carries 9 as a former id); unmerged, both come back. The
        // absorbed record is the smaller one: the id 4 stays with the record born in it all
        // the same.
        let former = [vec![9], vec![]];
        let (ids, events) = undo(&[0, 1], &[Some(4), Some(4)], &former, &[], &[]);
        assert_eq!(ids, vec![9, 4]);
        assert_eq!(events, vec![split(4, &[4, 9], &[9])]);
        // And its former ids are as before the merge.
        let (_, after) = formers_after(&[0, 1], &[Some(4), Some(4)], &former, &[], &[]);
        assert_eq!(after, vec![Vec::<i64>::new(), vec![]]);
    }

    #[test]
    fn the_id_stays_with_its_own_records_not_the_larger_absorbed_part() {
        // 4 (one record) absorbed 9 (three records); unlinked: 4 is not given to the three.
        let previous = [Some(4); 4];
        let former = [vec![], vec![9], vec![9], vec![9]];
        let (ids, events) = undo(&[0, 1, 1, 1], &previous, &former, &[], &[]);
        assert_eq!(ids, vec![4, 9]);
        assert_eq!(events, vec![split(4, &[4, 9], &[9])]);
        // With 9 in use elsewhere (given back earlier to another of its records), the three
        // draw a new id: the id of 4's own record stays 4.
        let (ids, events) = undo(&[0, 1, 1, 1], &previous, &former, &[9], &[300]);
        assert_eq!(ids, vec![4, 300]);
        assert_eq!(events, vec![split(4, &[4, 300], &[])]);
    }

    #[test]
    fn a_chain_of_merges_undone_step_by_step() {
        // B (20) absorbed D (30), then A (10) absorbed B: a1, b1, d1 all carry 10.
        let previous = [Some(10); 3];
        let former = [vec![], vec![20], vec![30, 20]];
        // Unmerged into single records: each gets its own id back.
        let (ids, events) = undo(&[0, 1, 2], &previous, &former, &[], &[]);
        assert_eq!(ids, vec![10, 20, 30]);
        assert_eq!(events, vec![split(10, &[10, 20, 30], &[20, 30])]);
        // Only the last merge undone: B's two records come back as B, and d1 is back where it
        // was before that merge (carrying B, having been D).
        let (ids, after) = formers_after(&[0, 1, 1], &previous, &former, &[], &[]);
        assert_eq!(ids, vec![10, 20]);
        assert_eq!(after, vec![vec![], vec![], vec![30]]);
        // Then the first one: d1 leaves B and is D again.
        let (ids, after) = formers_after(
            &[0, 1],
            &[Some(20), Some(20)],
            &[vec![], vec![30]],
            &[],
            &[],
        );
        assert_eq!(ids, vec![20, 30]);
        assert_eq!(after, vec![Vec::<i64>::new(), vec![]]);
    }

    #[test]
    fn a_group_of_two_former_persons_gets_the_larger_ones_id() {
        // A (10) absorbed B (20: b1, b2) and C (30: c1). Split into {a1} and {b1, b2, c1}:
        // B, carried by two of the three, comes back; C stays merged in it.
        let previous = [Some(10); 4];
        let former = [vec![], vec![20], vec![20], vec![30]];
        let (ids, events) = undo(&[0, 1, 1, 1], &previous, &former, &[], &[]);
        assert_eq!(ids, vec![10, 20]);
        assert_eq!(events, vec![split(10, &[10, 20], &[20])]);
        // An even group: as many carried each; the smaller id wins.
        let (ids, _) = undo(
            &[0, 1, 1],
            &previous[..3],
            &[vec![], vec![30], vec![20]],
            &[],
            &[],
        );
        assert_eq!(ids, vec![10, 20]);
        // A group that was all of B (B having absorbed D before): B, not D, although more of
        // its records were born D.
        let former = [vec![], vec![20], vec![40, 20], vec![40, 20]];
        let (ids, _) = undo(&[0, 1, 1, 1], &previous, &former, &[], &[]);
        assert_eq!(ids, vec![10, 20]);
        // Part of B, all born D: D.
        let (ids, _) = undo(&[0, 0, 1, 1], &previous, &former, &[], &[]);
        assert_eq!(ids, vec![10, 40]);
    }

    #[test]
    fn clusters_wanting_the_same_id_the_better_claim_wins() {
        // 4 absorbed 9 (b1, b2, b3); b1 and {b2, b3} leave apart: 9 goes to the pair.
        let previous = [Some(4); 4];
        let former = [vec![], vec![9], vec![9], vec![9]];
        let (ids, events) = undo(&[0, 1, 2, 2], &previous, &former, &[], &[500]);
        assert_eq!(ids, vec![4, 500, 9]);
        assert_eq!(events, vec![split(4, &[4, 9, 500], &[9])]);
        // Equal claims: the cluster with the smaller record.
        let (ids, _) = undo(&[0, 1, 2], &previous[..3], &former[..3], &[], &[501]);
        assert_eq!(ids, vec![4, 9, 501]);
    }

    #[test]
    fn unavailable_and_current_ids_never_come_back() {
        // d1 carried D (30) then B (20); D is erased: it gets B back, never D.
        let (ids, _) = undo(&[0, 1], &[Some(10); 2], &[vec![], vec![30, 20]], &[30], &[]);
        assert_eq!(ids, vec![10, 20]);
        // Both unavailable: a new id.
        let (ids, _) = undo(
            &[0, 1],
            &[Some(10); 2],
            &[vec![], vec![30, 20]],
            &[20, 30],
            &[99],
        );
        assert_eq!(ids, vec![10, 99]);
        // A former id that is a previous id of this run (in use, or merged right now) is not
        // a candidate: 7 is held by the third record.
        let clusters_of = [0, 1, 2];
        let previous = [Some(10), Some(10), Some(7)];
        let former = [vec![], vec![7], vec![]];
        let p = IdPlan::with_history(&clusters_of, 3, &previous, &FormerIds::from_dense(&former));
        assert!(p.restore_candidates().is_empty());
        let (ids, _) = undo(&clusters_of, &previous, &former, &[], &[98]);
        assert_eq!(ids, vec![10, 98, 7]);
    }

    #[test]
    fn households_and_plans_without_history_give_nothing_back() {
        let mut p = IdPlan::new(&[0, 1], 2, &[Some(4), Some(4)]);
        assert!(p.restore_candidates().is_empty());
        p.restore(&HashSet::new());
        assert_eq!(p.ids(&[77]), vec![4, 77]);
    }

    #[test]
    fn former_ids_follow_each_change() {
        // New record, unchanged id: as they were.
        assert_eq!(former_ids_after(None, &[], 5, false), Vec::<i64>::new());
        assert_eq!(former_ids_after(Some(5), &[3], 5, false), vec![3]);
        // Merged or moved: the id left is added, each id once, never the current one.
        assert_eq!(former_ids_after(Some(9), &[], 4, false), vec![9]);
        assert_eq!(former_ids_after(Some(9), &[3, 4], 4, false), vec![3, 9]);
        assert_eq!(former_ids_after(Some(8), &[8, 3], 4, false), vec![3, 8]);
        // Given back: the id and everything after it go.
        assert_eq!(former_ids_after(Some(4), &[30, 20], 20, true), vec![30]);
        assert_eq!(
            former_ids_after(Some(4), &[30, 20], 30, true),
            Vec::<i64>::new()
        );
        // In a restored cluster, a record that never carried the id moves as any other.
        assert_eq!(former_ids_after(Some(4), &[], 20, true), vec![4]);
    }

    #[test]
    fn a_split_to_a_new_id_and_back_and_apart_again_keeps_that_id() {
        // a1 and a2 (born 4) split: a2 draws 575. They join again (4 is kept, 575 absorbed),
        // and split again: a2 is 575 again, not a third id.
        let (ids, after) =
            formers_after(&[0, 1], &[Some(4), Some(4)], &[vec![], vec![]], &[], &[575]);
        assert_eq!((ids, after.clone()), (vec![4, 575], vec![vec![], vec![4]]));
        let (ids, after) = formers_after(&[0, 0], &[Some(4), Some(575)], &after, &[], &[]);
        assert_eq!((ids, after.clone()), (vec![4], vec![vec![], vec![575]]));
        let (ids, after) = formers_after(&[0, 1], &[Some(4), Some(4)], &after, &[], &[]);
        assert_eq!((ids, after), (vec![4, 575], vec![vec![], vec![]]));
    }

    #[test]
    fn a_scope_gives_the_ids_of_a_full_run() {
        // Full run: an untouched person 2 beside the split of 4 (which absorbed 9).
        let previous = [Some(2), Some(4), Some(2), Some(4)];
        let former = [vec![], vec![], vec![], vec![9]];
        let (full, _) = undo(&[0, 1, 0, 2], &previous, &former, &[], &[]);
        assert_eq!(full, vec![2, 4, 9]);
        // The queue's scope holds only 4's records; 2 is in use outside it.
        let (scoped, _) = undo(&[0, 1], &[Some(4), Some(4)], &[vec![], vec![9]], &[2], &[]);
        assert_eq!(scoped, vec![4, 9]);
    }
}
