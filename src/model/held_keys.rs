//! A streamed training's blocking keys held in memory (16 bytes a key, about 130 MB at a million
//! records) instead of a temp table sorted by PostgreSQL: the blocks, their figures and every
//! record's valid keys come from one sort here, and the candidates are counted before any is
//! compared. Their EM sample is then drawn at the final chances (`train::Chances`), so only the
//! sampled candidates are compared, and only their records read: the same sample, to the last
//! bit, as `train::StreamedSample` draws while the blocks stream past (a candidate is in it when
//! its draw is below its final chance, whatever the order), from the same candidates as
//! `super::stream::BlockBatch` makes (a pair comes from the block of its first shared valid key,
//! `super::stream::block_pairs`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;

use super::blocking::{rule_of, Candidate, RuleStats};
use super::record::MatchRecord;
use super::stream::{first_shared_here, held_values, HeldValue, RuleFigures};
use super::train::{pair_draw, value_hash, Chances};
use crate::parallel::{self, Workers};

/// The keys of the records as they pass by: (key hash, the record's place in `ids`).
#[derive(Default)]
pub struct KeyIndex {
    ids: Vec<i64>,
    keys: Vec<(i64, u32)>,
}

impl KeyIndex {
    /// Room for `records` records of at most `keys` keys each (reserved, not touched: only the
    /// keys pushed take memory).
    pub fn with_capacity(records: usize, keys: usize) -> Self {
        Self {
            ids: Vec::with_capacity(records),
            keys: Vec::with_capacity(records.saturating_mul(keys)),
        }
    }

    /// Bytes a record with `keys` keys takes here and in [`Blocked`] at most: 16 a key here,
    /// while its block's members (4) and valid keys (8) are made, and its id and places.
    pub fn bytes_per_record(keys: usize) -> u64 {
        (keys as u64) * 28 + 24
    }

    /// A record's id and its key hashes.
    pub fn push(&mut self, id: i64, hashes: impl IntoIterator<Item = i64>) {
        let i = self.ids.len() as u32;
        self.ids.push(id);
        self.keys.extend(hashes.into_iter().map(|h| (h, i)));
    }

    pub fn records(&self) -> usize {
        self.ids.len()
    }

    /// The blocks of the keys: the figures per rule (as `super::stream::rule_stats`, erring past
    /// `max_pairs` candidate pairs), the valid blocks (two or more records, within their rule's
    /// `limits`) and each record's valid keys.
    pub fn block(
        self,
        names: &[String],
        limits: &[usize],
        max_pairs: u64,
    ) -> Result<Blocked, String> {
        self.block_with(names, limits, max_pairs, |_, _| {})
    }

    /// [`Self::block`], `sorted` handed all keys sorted by (hash, place) and the ids first (a
    /// scoring writes them to unify.block_keys in its primary key's order from there).
    pub fn block_with(
        self,
        names: &[String],
        limits: &[usize],
        max_pairs: u64,
        sorted: impl FnOnce(&[(i64, u32)], &[i64]),
    ) -> Result<Blocked, String> {
        let KeyIndex { ids, keys } = self;
        let mut figures = RuleFigures::new(names, limits)?;
        // In place: a parallel sort would copy them twice.
        let mut keys = keys;
        keys.sort_unstable();
        sorted(&keys, &ids);
        let mut members: Vec<u32> = Vec::new();
        let mut blocks: Vec<(i64, u32, u32)> = Vec::new();
        let mut skipped_first: HashMap<i64, i64> = HashMap::new();
        let mut count = vec![0u32; ids.len()];
        let mut start = 0;
        while start < keys.len() {
            let hash = keys[start].0;
            let mut end = start + 1;
            while end < keys.len() && keys[end].0 == hash {
                end += 1;
            }
            let n = end - start;
            figures.add(hash, n as u64);
            if n >= 2 {
                match limits.get(rule_of(hash)) {
                    Some(&limit) if n <= limit => {
                        blocks.push((hash, members.len() as u32, n as u32));
                        for &(_, i) in &keys[start..end] {
                            members.push(i);
                            count[i as usize] += 1;
                        }
                    }
                    Some(_) => {
                        skipped_first.insert(hash, ids[keys[start].1 as usize]);
                    }
                    None => {}
                }
            }
            start = end;
        }
        drop(keys);
        let (stats, largest) = figures.finish(max_pairs)?;
        let largest = largest
            .into_iter()
            .map(|h| h.and_then(|h| skipped_first.get(&h).map(|&id| (h, id))))
            .collect();
        // Each record's valid keys, ascending (the blocks are in hash order).
        let mut offsets = Vec::with_capacity(ids.len() + 1);
        let mut total = 0u32;
        offsets.push(0);
        for c in &count {
            total += c;
            offsets.push(total);
        }
        let mut fill = offsets.clone();
        let mut hashes = vec![0i64; total as usize];
        for &(hash, s, n) in &blocks {
            for &i in &members[s as usize..(s + n) as usize] {
                hashes[fill[i as usize] as usize] = hash;
                fill[i as usize] += 1;
            }
        }
        // In the order of their first member as read: one person's blocks mostly together.
        blocks.sort_unstable_by_key(|&(h, s, _)| (members[s as usize], h));
        Ok(Blocked {
            ids,
            members,
            blocks,
            offsets,
            hashes,
            stats,
            largest,
        })
    }
}

/// The valid blocks of [`KeyIndex::block`] and what their candidates need.
pub struct Blocked {
    /// The records' ids, by their place (what `Candidate::a` and `b` index).
    pub ids: Vec<i64>,
    members: Vec<u32>,
    /// (key hash, start in `members`, size).
    blocks: Vec<(i64, u32, u32)>,
    offsets: Vec<u32>,
    hashes: Vec<i64>,
    /// The figures per rule, `new_pairs` counted by [`Self::count`].
    pub stats: Vec<RuleStats>,
    /// Per rule, its largest skipped block's key hash and one of its records' id.
    pub largest: Vec<Option<(i64, i64)>>,
}

impl Blocked {
    fn valid(&self, i: u32) -> &[i64] {
        &self.hashes[self.offsets[i as usize] as usize..self.offsets[i as usize + 1] as usize]
    }

    /// How many valid blocks there are.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The places of valid block `b`'s members (blocks in the order of their first member).
    pub fn members_of(&self, b: usize) -> &[u32] {
        let (_, s, n) = self.blocks[b];
        &self.members[s as usize..(s + n) as usize]
    }

    /// `f` on every candidate of the blocks in `range` (places; `a` the record with the
    /// smaller id), with the block's rule, as `block_pairs` makes them (without a list per block).
    pub fn each_pair(&self, range: Range<usize>, mut f: impl FnMut(usize, Candidate)) {
        for b in range {
            let (hash, s, n) = self.blocks[b];
            let rule = rule_of(hash);
            let members = &self.members[s as usize..(s + n) as usize];
            for (x, &i) in members.iter().enumerate() {
                let (vi, idi) = (self.valid(i), self.ids[i as usize]);
                for &j in &members[x + 1..] {
                    let Some(rules) = first_shared_here(hash, rule, vi, self.valid(j)) else {
                        continue;
                    };
                    let (a, b) = if idi < self.ids[j as usize] {
                        (i, j)
                    } else {
                        (j, i)
                    };
                    f(rule, Candidate { a, b, rules });
                }
            }
        }
    }

    /// Counts every candidate into `chances` (per rule combination) and `stats` (`new_pairs`
    /// per rule); returns how many there are.
    pub fn count(&mut self, chances: &mut Chances, workers: Workers) -> u64 {
        let rules = self.stats.len();
        let parts = parallel::map_blocks(self.blocks.len(), workers, |range| {
            let mut per_rules: MaskMap<u64> = MaskMap::default();
            let mut per_rule = vec![0u64; rules];
            self.each_pair(range, |rule, c| {
                if let Some(n) = per_rule.get_mut(rule) {
                    *n += 1;
                }
                *per_rules.entry(c.rules).or_default() += 1;
            });
            (per_rules, per_rule)
        });
        let mut per_rules: MaskMap<u64> = MaskMap::default();
        for (rules, per_rule) in parts {
            for (r, n) in rules {
                *per_rules.entry(r).or_default() += n;
            }
            for (s, n) in self.stats.iter_mut().zip(per_rule) {
                s.new_pairs += n;
            }
        }
        // Whole numbers, so the sums are the same in any order; added by combination anyway.
        let mut per_rules: Vec<(u32, u64)> = per_rules.into_iter().collect();
        per_rules.sort_unstable();
        let mut total = 0;
        for (r, n) in per_rules {
            chances.count(r, n);
            total += n;
        }
        total
    }

    /// The candidates drawn at `chances` (counted by [`Self::count`]) with `seed`, in the order
    /// of the blocks: those `chances.drawn` draws.
    pub fn drawn(&self, chances: &Chances, seed: u64, workers: Workers) -> Vec<Candidate> {
        let all = chances.takes_all();
        // The chance of each combination, looked up once.
        let table: MaskMap<f64> = chances
            .per_rules()
            .into_iter()
            .map(|(r, _)| (r, chances.chance(r)))
            .collect();
        parallel::flat_map(self.blocks.len(), workers, |range| {
            let mut out = Vec::new();
            self.each_pair(range, |_, c| {
                let (a, b) = (self.ids[c.a as usize], self.ids[c.b as usize]);
                if all || pair_draw(a, b, seed) < table.get(&c.rules).copied().unwrap_or(1.0) {
                    out.push(c);
                }
            });
            out
        })
    }
}

/// A rule combination's hash: one multiplication (the default hasher was a tenth of the
/// counting and drawing of millions of candidates).
#[derive(Default)]
struct MaskHasher(u64);

impl Hasher for MaskHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, x: u32) {
        self.0 = u64::from(x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type MaskMap<V> = HashMap<u32, V, BuildHasherDefault<MaskHasher>>;

/// The e-mails and phones of the records as they pass by, as (kind, hash, record id): the
/// household values (`comparison::Context::shared_emails` / `shared_phones`) are judged on the
/// values of two or more holders (`super::stream::HolderGroups::push_hash`), as it judges
/// the values grouped in SQL, without a second pass over the records to group them.
#[derive(Default)]
pub struct ValueHolders {
    entries: Vec<(u8, i64, i64)>,
}

/// Bytes [`ValueHolders`] takes a record: an e-mail and two phones at most.
pub const VALUE_HOLDER_BYTES: u64 = 3 * 24;

fn kind_of(k: u8) -> HeldValue {
    if k == 0 {
        HeldValue::Email
    } else {
        HeldValue::Phone
    }
}

impl ValueHolders {
    pub fn push(&mut self, r: &MatchRecord) {
        for (k, kind) in [(0u8, HeldValue::Email), (1, HeldValue::Phone)] {
            for v in held_values(kind, r) {
                self.entries.push((k, value_hash(v), r.id));
            }
        }
    }

    /// The values (by hash) of two or more records: kind, hash, holders' ids ascending.
    pub fn groups(self) -> Vec<(HeldValue, i64, Vec<i64>)> {
        let mut entries = self.entries;
        entries.sort_unstable();
        entries
            .chunk_by(|x, y| (x.0, x.1) == (y.0, y.1))
            .filter(|run| run.len() >= 2)
            .map(|run| {
                let mut ids: Vec<i64> = run.iter().map(|e| e.2).collect();
                ids.dedup();
                (kind_of(run[0].0), run[0].1, ids)
            })
            .filter(|(_, _, ids)| ids.len() >= 2)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::super::blocking::{candidates, default_rules, key_hashes};
    use super::super::comparison::JUNK_VALUE_RECORDS;
    use super::super::record::MatchRecord;
    use super::super::stream::HolderGroups;
    use super::super::train::StreamedSample;
    use super::*;

    fn records(n: usize) -> Vec<MatchRecord> {
        let firsts = ["Anna", "Hans", "Johannes", "Maria", "Jörg", "Eva"];
        let lasts = ["Müller", "Mueller", "Schmidt", "Schmitt", "Meier", "Mayer"];
        let mut seed: u64 = 11;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % m
        };
        (0..n)
            .map(|i| {
                MatchRecord {
                    // Not in id order, as a table scan may read them.
                    id: ((i * 7919) % n) as i64 + 1,
                    first_name: Some(firsts[next(firsts.len())].into()),
                    last_name: Some(lasts[next(lasts.len())].into()),
                    email_key: (next(3) == 0).then(|| format!("{}@x.de", next(40))),
                    phones: (0..next(3)).map(|_| format!("0301{}", next(150))).collect(),
                    postcode: Some(format!("1011{}", next(4))),
                    house_number: Some(format!("{}", next(6))),
                    birth_date: (next(2) == 0)
                        .then(|| format!("19{:02}-0{}-1{}", 50 + next(3), 1 + next(2), next(3))),
                    ..Default::default()
                }
                .prepare()
            })
            .collect()
    }

    /// The household values from the held hashes, judged a few hundred holders at a time, the
    /// hashes of many holders told apart on their values alone: those of all records at once.
    #[test]
    fn household_values_from_held_hashes_are_those_of_all_records() {
        let mut records = records(3000);
        // A junk e-mail of many records, and one of few.
        for (i, r) in records.iter_mut().enumerate() {
            if i % 50 == 0 {
                r.email_key = Some("info@x.de".into());
            }
        }
        let all = super::super::comparison::Context::build(&records);
        let mut held = ValueHolders::default();
        for r in &records {
            held.push(r);
        }
        let by_id = |id: i64| records.iter().find(|r| r.id == id).unwrap().clone();
        let mut groups = HolderGroups::default();
        let judge = |groups: &mut HolderGroups| {
            let holders: Vec<MatchRecord> = groups.ids().into_iter().map(by_id).collect();
            groups.judge(&holders);
        };
        let mut many = 0;
        for (kind, hash, ids) in held.groups().into_iter().rev() {
            if ids.len() > JUNK_VALUE_RECORDS {
                many += 1;
                // Their values alone.
                let values: Vec<MatchRecord> = ids
                    .iter()
                    .map(|&id| {
                        let r = by_id(id);
                        MatchRecord {
                            id,
                            email_key: r.email_key,
                            phones: r.phones,
                            ..Default::default()
                        }
                        .prepare()
                    })
                    .collect();
                groups.push_hash_many(kind, hash, &values);
            } else {
                groups.push_hash(kind, hash, ids);
            }
            if groups.members() >= 200 {
                judge(&mut groups);
            }
        }
        judge(&mut groups);
        assert!(many >= 1);
        let (emails, phones) = groups.finish();
        assert!(emails.contains("info@x.de"));
        assert!(emails.len() > 1 && !phones.is_empty());
        assert_eq!(emails, all.shared_emails);
        assert_eq!(phones, all.shared_phones);
    }

    /// The candidates, figures and (drawn at the final chances) sample of the held keys are
    /// those of all records at once and of `StreamedSample`.
    #[test]
    fn held_keys_give_the_candidates_figures_and_sample_of_all_records() {
        let records = records(3000);
        let mut rules = default_rules();
        for r in &mut rules {
            r.max_block_size = r.max_block_size.min(40);
        }
        let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
        let limits: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
        let (cands, stats) = candidates(&records, &rules, u64::MAX, 1).unwrap();
        let expected: BTreeSet<(i64, i64, u32)> = cands
            .iter()
            .map(|c| {
                let (a, b) = (records[c.a as usize].id, records[c.b as usize].id);
                (a.min(b), a.max(b), c.rules)
            })
            .collect();
        assert!(expected.len() > 10_000, "{}", expected.len());
        let mut index = KeyIndex::default();
        for r in &records {
            index.push(r.id, key_hashes(&rules, r).into_iter().map(|(_, h)| h));
        }
        let workers = Workers {
            threads: 2,
            ..Default::default()
        };
        let mut blocked = index.block(&names, &limits, u64::MAX).unwrap();
        let mut chances = Chances::new(0);
        let total = blocked.count(&mut chances, workers);
        assert_eq!(total as usize, expected.len());
        let all: BTreeSet<(i64, i64, u32)> = blocked
            .drawn(&chances, 5, workers)
            .iter()
            .map(|c| {
                let (a, b) = (blocked.ids[c.a as usize], blocked.ids[c.b as usize]);
                assert!(a < b);
                (a, b, c.rules)
            })
            .collect();
        assert_eq!(all, expected);
        let mut got_stats = blocked.stats.clone();
        for s in &mut got_stats {
            s.largest_skipped_key = None;
        }
        let mut want_stats = stats.clone();
        for s in &mut want_stats {
            s.largest_skipped_key = None;
        }
        assert!(want_stats.iter().any(|s| s.skipped_blocks > 0));
        assert_eq!(got_stats, want_stats);
        // The largest skipped block's record holds its key.
        for (i, l) in blocked.largest.iter().enumerate() {
            assert_eq!(l.is_some(), stats[i].largest_skipped_key.is_some());
            if let Some((h, id)) = l {
                let r = records.iter().find(|r| r.id == *id).unwrap();
                assert!(key_hashes(&rules, r).contains(&(i, *h)));
            }
        }
        // A sample of about a tenth: the candidates StreamedSample keeps, whatever the order.
        let em_pairs = expected.len() / 10;
        let mut chances = Chances::new(em_pairs);
        let mut again = KeyIndex::default();
        for r in records.iter().rev() {
            again.push(r.id, key_hashes(&rules, r).into_iter().map(|(_, h)| h));
        }
        let mut blocked = again.block(&names, &limits, u64::MAX).unwrap();
        blocked.count(&mut chances, workers);
        let drawn: HashSet<(i64, i64)> = blocked
            .drawn(&chances, 5, workers)
            .iter()
            .map(|c| (blocked.ids[c.a as usize], blocked.ids[c.b as usize]))
            .collect();
        assert!(drawn.len() > em_pairs / 2 && drawn.len() < expected.len() / 2);
        let mut streamed = StreamedSample::new(em_pairs, 5);
        let ctx = super::super::comparison::Context::build(&records);
        streamed.add(&records, &cands, &ctx, workers);
        let sample = streamed.finish();
        assert_eq!(sample.chances, chances);
        let kept: HashSet<(i64, i64)> = expected
            .iter()
            .filter(|(a, b, rules)| pair_draw(*a, *b, 5) < chances.chance(*rules))
            .map(|(a, b, _)| (*a, *b))
            .collect();
        assert_eq!(drawn, kept);
        assert_eq!(sample.pairs.pairs() as usize, drawn.len());
    }
}
