//! Blocking within a memory budget: the candidate pairs of [`super::blocking::candidates`],
//! produced block by block from a stream of (block, member) rows ordered by block, so that only
//! one block and a buffer of pairs to score are held at a time, whatever the number of records.
//!
//! A block is a key hash ([`super::blocking::key_hash`], the rule in its low byte), as in
//! `unify.block_keys`. Each member comes with its *valid* keys: the hashes of its blocks that are
//! within their rule's size limit and hold at least two records (`unify.score_pairs` reads them
//! from `unify.block_keys`). Two members of a block then share exactly the valid keys both hold;
//! the rules of those keys are the pair's rules, and the pair is produced only in the block of
//! its lowest rule, so each candidate comes once with all its rules, as in a run over all
//! records held at once (which blocks the same way: [`super::blocking::candidates_of_keyed`]).
//! (Blocks are told apart by hash: two different keys with one 56-bit hash would form one
//! block, as they do for the change queue and the held run.)

use std::collections::HashSet;

use super::blocking::{key_hashes, rule_of, BlockingRule, Candidate, RuleStats};
use super::comparison::{held_by_different_people, JUNK_VALUE_RECORDS};

/// Which values [`HolderGroups`] judges: e-mails (`email_key`) or phones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldValue {
    Email,
    Phone,
}
use super::record::MatchRecord;
use super::train::value_hash;

/// Bytes one prepared record takes while a whole-table command holds all of them (the record,
/// its derived keys, its share of blocking and scoring): score_pairs holding 1M generated
/// records peaked at 2.4 GB of private backend memory, 4.8 GB at 2M (docs/BENCHMARKS.md); 4 kB
/// leaves room for records wider than the generator's.
pub const RECORD_BYTES: u64 = 4096;

/// Whether `records` records fit a budget of `budget_kb` kilobytes held all at once.
pub fn fits_in_memory(records: u64, budget_kb: u64) -> bool {
    records.saturating_mul(RECORD_BYTES) <= budget_kb.saturating_mul(1024)
}

/// How many records a streaming step may buffer within `budget_kb`: a `share` of the budget (a
/// half for score_pairs, whose rest is frequencies, the block at hand and what is read; a quarter
/// for train, which keeps its EM sample beside it), at least one block's worth.
pub fn buffer_records(budget_kb: u64, max_block_size: usize, share: u64) -> usize {
    let n = (budget_kb.saturating_mul(1024) / share.max(1) / RECORD_BYTES) as usize;
    n.max(max_block_size.max(2))
}

/// How many candidate pairs a streamed training asks for EM within `budget_kb`: the most its
/// sample holds with the raised shares of small rule combinations and while it streams
/// (`train::most_kept`, 27/16 as many) fills an eighth of the budget; at least 20,000 (a bounded
/// 1 MB, for the smallest budgets). At 1GB about 2.0 million pairs (the held path takes 4
/// million): PostgreSQL's reading of the block stream (its hash joins and sort, up to `work_mem`
/// each) and the buffer of records take the rest.
pub fn em_pairs_within(budget_kb: u64, pair_bytes: usize) -> usize {
    let eighth = budget_kb.saturating_mul(1024) / 8;
    super::train::asked_within((eighth / (pair_bytes.max(1) as u64)) as usize).max(20_000)
}

/// How many records a streamed training draws its random pairs for u from: a quarter of the
/// budget at [`RECORD_BYTES`] each, between 5,000 and 100,000 (u of a level seen in one random
/// pair in a thousand is then estimated from a million pairs as well as from all records).
pub fn u_sample_records(budget_kb: u64) -> usize {
    let quarter = budget_kb.saturating_mul(1024) / 4;
    ((quarter / RECORD_BYTES) as usize).clamp(5_000, 100_000)
}

/// The candidates one valid block (key `hash`) contributes: every pair of its members (indexes
/// into the caller's buffer, each with its valid hashes sorted) whose first shared key is this
/// block's, with all the rules of its shared keys. A pair's first shared key is the smallest
/// hash of its lowest rule's shared keys: the pair comes from that block only, whichever other
/// blocks (of its rules, or of one rule through two phones) hold it too. `a` is the member with
/// the smaller record id (`ids`).
pub fn block_pairs(hash: i64, members: &[u32], valid: &[&[i64]], ids: &[i64]) -> Vec<Candidate> {
    let rule = rule_of(hash);
    let mut out = Vec::new();
    for x in 0..members.len() {
        for y in x + 1..members.len() {
            let Some(mask) = first_shared_here(hash, rule, valid[x], valid[y]) else {
                continue;
            };
            let (a, b) = if ids[x] < ids[y] { (x, y) } else { (y, x) };
            out.push(Candidate {
                a: members[a],
                b: members[b],
                rules: mask,
            });
        }
    }
    out
}

/// The rules of the keys both hash lists hold, when `hash` (of `rule`) is the first of them;
/// None when another shared key comes first.
pub fn first_shared_here(hash: i64, rule: usize, x: &[i64], y: &[i64]) -> Option<u32> {
    let (mut i, mut j, mut mask) = (0, 0, 1u32 << rule);
    while i < x.len() && j < y.len() {
        match x[i].cmp(&y[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                let r = rule_of(x[i]);
                if r < rule || (r == rule && x[i] < hash) {
                    return None;
                }
                mask |= 1 << r;
                i += 1;
                j += 1;
            }
        }
    }
    Some(mask)
}

/// A record's key hashes that can make it a candidate, sorted: all of its keys but those of
/// skipped blocks (over their rule's size limit). Two records share exactly their common valid
/// keys in these lists (a key both hold is a block of at least two), which is what
/// [`block_pairs`] needs: the lists can be made from the record and the skipped keys alone.
pub fn usable_keys(rules: &[BlockingRule], r: &MatchRecord, skipped: &HashSet<i64>) -> Vec<i64> {
    let mut keys: Vec<i64> = key_hashes(rules, r)
        .into_iter()
        .map(|(_, h)| h)
        .filter(|h| !skipped.contains(h))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Valid blocks (key hash, member ids) gathered until their distinct members fill a buffer:
/// the members are then read once for all of the batch's blocks, whichever order the blocks
/// come in (a candidate comes from one block only, see [`block_pairs`]).
#[derive(Default)]
pub struct BlockBatch {
    blocks: Vec<(i64, Vec<i64>)>,
    members: HashSet<i64>,
    /// The pairs of the blocks, at most (all pairs of every block).
    pub pairs_bound: u64,
}

impl BlockBatch {
    /// A valid block: its key hash and its members' ids.
    pub fn push(&mut self, hash: i64, mut members: Vec<i64>) {
        members.sort_unstable();
        members.dedup();
        let n = members.len() as u64;
        self.pairs_bound += n * n.saturating_sub(1) / 2;
        self.members.extend(members.iter().copied());
        self.blocks.push((hash, members));
    }

    /// The distinct members of the batch's blocks.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The ids of the members, ascending.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.members.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The candidates of the batch's blocks (`records`: its members, ascending by id, which
    /// the candidates index), the pairs per rule counted into `stats` (`new_pairs`). Members
    /// missing from `records` are left out.
    pub fn pairs(
        self,
        records: &[MatchRecord],
        rules: &[BlockingRule],
        skipped: &HashSet<i64>,
        stats: &mut [RuleStats],
        workers: crate::parallel::Workers,
    ) -> Vec<Candidate> {
        let valid: Vec<Vec<i64>> =
            crate::parallel::map(records, workers, |r| usable_keys(rules, r, skipped));
        let mut out = Vec::new();
        for (hash, members) in self.blocks {
            let idx: Vec<u32> = members
                .iter()
                .filter_map(|id| records.binary_search_by_key(id, |r| r.id).ok())
                .map(|i| i as u32)
                .collect();
            if idx.len() < 2 {
                continue;
            }
            let lists: Vec<&[i64]> = idx.iter().map(|&i| valid[i as usize].as_slice()).collect();
            let ids: Vec<i64> = idx.iter().map(|&i| records[i as usize].id).collect();
            let pairs = block_pairs(hash, &idx, &lists, &ids);
            if let Some(s) = stats.get_mut(rule_of(hash)) {
                s.new_pairs += pairs.len() as u64;
            }
            out.extend(pairs);
        }
        out
    }
}

/// The figures per rule from the sizes of all blocks (key hash, records), as
/// [`super::blocking::candidates`] reports them, with `new_pairs` still to count (what the
/// streamed blocks produce) and the largest skipped key as its hash (the caller reads the key's
/// text from one of its records). Errors like `candidates` when the rules together would produce
/// more than `max_pairs` pairs.
pub fn rule_stats(
    names: &[String],
    max_block_sizes: &[usize],
    sizes: impl IntoIterator<Item = (i64, u64)>,
    max_pairs: u64,
) -> Result<(Vec<RuleStats>, Vec<Option<i64>>), String> {
    let mut figures = RuleFigures::new(names, max_block_sizes)?;
    for (hash, n) in sizes {
        figures.add(hash, n);
    }
    figures.finish(max_pairs)
}

/// [`rule_stats`] fed one block size at a time.
pub struct RuleFigures {
    stats: Vec<RuleStats>,
    limits: Vec<usize>,
    largest: Vec<Option<i64>>,
}

impl RuleFigures {
    pub fn new(names: &[String], max_block_sizes: &[usize]) -> Result<Self, String> {
        if names.len() > 32 {
            return Err("at most 32 blocking rules".into());
        }
        Ok(Self {
            stats: names
                .iter()
                .map(|n| RuleStats {
                    rule: n.clone(),
                    ..Default::default()
                })
                .collect(),
            limits: max_block_sizes.to_vec(),
            largest: vec![None; names.len()],
        })
    }

    /// A block of `n` records under key `hash`.
    pub fn add(&mut self, hash: i64, n: u64) {
        let rule = rule_of(hash);
        let Some(s) = self.stats.get_mut(rule) else {
            return;
        };
        if n < 2 {
            return;
        }
        if n as usize > self.limits[rule] {
            s.skipped_blocks += 1;
            // Ties by the smaller hash, so that the figure does not depend on reading order.
            if n > s.largest_skipped_block
                || (n == s.largest_skipped_block && self.largest[rule].is_some_and(|h| hash < h))
            {
                s.largest_skipped_block = n;
                self.largest[rule] = Some(hash);
            }
            return;
        }
        s.blocks += 1;
        s.pairs += n * (n - 1) / 2;
    }

    /// `blocks` valid blocks of `rule` with `pairs` pairs in all (the sums of [`Self::add`]
    /// over blocks within the size limit, added up where the sizes are).
    pub fn add_valid(&mut self, rule: usize, blocks: u64, pairs: u64) {
        if let Some(s) = self.stats.get_mut(rule) {
            s.blocks += blocks;
            s.pairs += pairs;
        }
    }

    pub fn finish(self, max_pairs: u64) -> Result<(Vec<RuleStats>, Vec<Option<i64>>), String> {
        let mut total = 0u64;
        for s in &self.stats {
            total += s.pairs;
            if total > max_pairs {
                return Err(format!(
                    "blocking rule \"{}\" would produce more than {max_pairs} candidate pairs",
                    s.rule
                ));
            }
        }
        Ok((self.stats, self.largest))
    }
}

/// Whether a block of `n` records of a rule with `max_block_size` produces pairs.
pub fn valid_block(n: u64, max_block_size: usize) -> bool {
    n >= 2 && n as usize <= max_block_size
}

/// The household values (`comparison::Context::shared_emails` / `shared_phones`) from the
/// values held by two or more records, each with its holders' ids, gathered until the holders
/// fill a buffer and then judged on the holders read by id: a value of more than
/// [`JUNK_VALUE_RECORDS`] holders is a household's without reading them (as
/// `held_by_different_people` judges it), and most values have one holder and never come here.
/// The same values as `Context::build` over all records, whatever order the values come in.
/// A group is keyed by its value (grouped in SQL) or by the value's hash (grouped as the
/// records passed by, `held_keys::ValueHolders`): the holders of a hash are told apart by
/// their values when judged, so two values of one hash are judged each on its own.
#[derive(Default)]
pub struct HolderGroups {
    groups: Vec<(HeldValue, HolderKey, Vec<i64>)>,
    members: HashSet<i64>,
    emails: HashSet<String>,
    phones: HashSet<String>,
}

/// What a group of [`HolderGroups`] was gathered by.
enum HolderKey {
    Value(String),
    Hash(i64),
}

impl HolderKey {
    fn matches(&self, value: &str) -> bool {
        match self {
            HolderKey::Value(v) => v == value,
            HolderKey::Hash(h) => value_hash(value) == *h,
        }
    }
}

/// The prepared values of `kind` a record holds: its e-mail key, or its phones.
pub fn held_values(kind: HeldValue, r: &MatchRecord) -> impl Iterator<Item = &String> {
    let (email, phones): (Option<&String>, &[String]) = match kind {
        HeldValue::Email => (r.email_key.as_ref(), &[]),
        HeldValue::Phone => (None, &r.phones),
    };
    email.into_iter().chain(phones)
}

impl HolderGroups {
    /// A value and its holders' ids.
    pub fn push(&mut self, kind: HeldValue, value: String, mut ids: Vec<i64>) {
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > JUNK_VALUE_RECORDS {
            self.shared(kind).insert(value);
        } else if ids.len() >= 2 {
            self.members.extend(ids.iter().copied());
            self.groups.push((kind, HolderKey::Value(value), ids));
        }
    }

    /// A value's hash and the ids of two to `JUNK_VALUE_RECORDS` holders of it.
    pub fn push_hash(&mut self, kind: HeldValue, hash: i64, ids: Vec<i64>) {
        self.members.extend(ids.iter().copied());
        self.groups.push((kind, HolderKey::Hash(hash), ids));
    }

    /// A hash of more holders (`holders`, their values prepared): a value of more than
    /// `JUNK_VALUE_RECORDS` is a household's without reading them, fewer are judged.
    pub fn push_hash_many(&mut self, kind: HeldValue, hash: i64, holders: &[MatchRecord]) {
        let mut by_value: Vec<(&String, i64)> = holders
            .iter()
            .flat_map(|r| held_values(kind, r).map(move |v| (v, r.id)))
            .filter(|(v, _)| value_hash(v) == hash)
            .collect();
        by_value.sort_unstable();
        by_value.dedup();
        for run in by_value.chunk_by(|x, y| x.0 == y.0) {
            if run.len() > JUNK_VALUE_RECORDS {
                self.shared(kind).insert(run[0].0.clone());
            } else if run.len() >= 2 {
                self.push_hash(kind, hash, run.iter().map(|x| x.1).collect());
            }
        }
    }

    fn shared(&mut self, kind: HeldValue) -> &mut HashSet<String> {
        match kind {
            HeldValue::Email => &mut self.emails,
            HeldValue::Phone => &mut self.phones,
        }
    }

    /// The distinct holders of the values waiting to be judged.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Their ids, ascending.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.members.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Judges the values waiting on their holders (`records`, ascending by id; a record counts
    /// as a holder when its prepared value is the group's value, or hashes to its hash).
    pub fn judge(&mut self, records: &[MatchRecord]) {
        for (kind, key, ids) in std::mem::take(&mut self.groups) {
            let mut holders: Vec<(&String, &MatchRecord)> = ids
                .iter()
                .filter_map(|id| records.binary_search_by_key(id, |r| r.id).ok())
                .map(|i| &records[i])
                .flat_map(|r| held_values(kind, r).map(move |v| (v, r)))
                .filter(|(v, _)| key.matches(v))
                .collect();
            // By value, each holder in id order (as they were read).
            holders.sort_by(|x, y| x.0.cmp(y.0).then(x.1.id.cmp(&y.1.id)));
            for run in holders.chunk_by(|x, y| x.0 == y.0) {
                let of_value: Vec<&MatchRecord> = run.iter().map(|x| x.1).collect();
                if held_by_different_people(&of_value) {
                    self.shared(kind).insert(run[0].0.clone());
                }
            }
        }
        self.members.clear();
    }

    /// The household e-mails and phones (judge the values waiting first).
    pub fn finish(self) -> (HashSet<String>, HashSet<String>) {
        (self.emails, self.phones)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::blocking::{candidates, default_rules, key_hashes};
    use super::super::record::MatchRecord;
    use super::*;

    /// The EM sample asked for within a budget: the most it holds fits an eighth of it (at
    /// least 20,000 asked), the 27/16 of `train::most_kept` as whole numbers.
    #[test]
    fn em_sample_asked_for_fits_an_eighth_of_the_budget() {
        let pair_bytes = super::super::train::StreamedSample::PAIR_BYTES;
        let mut budget_kb = 64;
        while budget_kb <= 1 << 32 {
            let eighth = budget_kb * 1024 / 8;
            let asked = em_pairs_within(budget_kb, pair_bytes);
            let room = (eighth / pair_bytes as u64) as usize;
            assert_eq!(asked, (room * 16 / 27).max(20_000), "{budget_kb} kB");
            if asked > 20_000 {
                let held = super::super::train::most_kept(asked) * pair_bytes;
                assert!(held as u64 <= eighth, "{budget_kb} kB: {held} bytes");
            }
            budget_kb = budget_kb * 3 / 2 + 7;
        }
    }

    /// Records with many shared values: several rules find most pairs.
    fn records(n: usize) -> Vec<MatchRecord> {
        let firsts = ["Anna", "Hans", "Johannes", "Maria", "Jörg", "Eva"];
        let lasts = [
            "Müller", "Mueller", "Schmidt", "Schmitt", "Meier", "Mayer", "Weber",
        ];
        let mut seed: u64 = 7;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % m
        };
        (0..n)
            .map(|i| {
                let f = firsts[next(firsts.len())];
                let l = lasts[next(lasts.len())];
                MatchRecord {
                    id: (i as i64) * 7 % 1000 + 1000 * (i as i64 / 1000),
                    first_name: Some(f.into()),
                    last_name: Some(l.into()),
                    email_key: (next(3) == 0).then(|| format!("{}@x.de", next(40))),
                    // A family's landline and mobile together, or single phones.
                    phones: if next(2) == 0 {
                        let k = next(200);
                        vec![format!("0301{k}"), format!("0171{k}")]
                    } else {
                        (0..next(3)).map(|_| format!("0301{}", next(200))).collect()
                    },
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

    /// The streaming path over `records`: blocks in hash order, members in id order, each with
    /// its valid keys; returns (id a, id b, rules) and the figures.
    fn streamed(
        records: &[MatchRecord],
        rules: &[super::super::blocking::BlockingRule],
    ) -> (Vec<(i64, i64, u32)>, Vec<RuleStats>) {
        let keys: Vec<Vec<(usize, i64)>> = records.iter().map(|r| key_hashes(rules, r)).collect();
        let mut blocks: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, ks) in keys.iter().enumerate() {
            for &(_, h) in ks {
                blocks.entry(h).or_default().push(i);
            }
        }
        let max: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
        let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
        let (mut stats, largest) = rule_stats(
            &names,
            &max,
            blocks.iter().map(|(h, m)| (*h, m.len() as u64)),
            u64::MAX,
        )
        .unwrap();
        let valid: Vec<Vec<i64>> = keys
            .iter()
            .map(|ks| {
                ks.iter()
                    .map(|&(_, h)| h)
                    .filter(|h| valid_block(blocks[h].len() as u64, max[rule_of(*h)]))
                    .collect::<std::collections::BTreeSet<i64>>()
                    .into_iter()
                    .collect()
            })
            .collect();
        // The largest skipped key's text, as `unify.score_pairs` reads it from one of its records.
        for (i, hash) in largest.iter().enumerate() {
            if let Some(h) = hash {
                let r = &rules[i];
                stats[i].largest_skipped_key = r
                    .keys(&records[blocks[h][0]])
                    .into_iter()
                    .find(|k| super::super::blocking::key_hash(i, &r.name, k) == *h)
                    .map(|k| k.replace('\u{1f}', " | "));
            }
        }
        let mut out = Vec::new();
        for (h, members) in &blocks {
            if !valid_block(members.len() as u64, max[rule_of(*h)]) {
                continue;
            }
            let mut members = members.clone();
            members.sort_by_key(|&i| records[i].id);
            let idx: Vec<u32> = members.iter().map(|&i| i as u32).collect();
            let v: Vec<&[i64]> = members.iter().map(|&i| valid[i].as_slice()).collect();
            let ids: Vec<i64> = members.iter().map(|&i| records[i].id).collect();
            for c in block_pairs(*h, &idx, &v, &ids) {
                stats[rule_of(*h)].new_pairs += 1;
                out.push((records[c.a as usize].id, records[c.b as usize].id, c.rules));
            }
        }
        out.sort_unstable();
        (out, stats)
    }

    #[test]
    fn streamed_blocks_give_the_candidates_of_all_records_at_once() {
        let records = records(3000);
        let mut rules = default_rules();
        // Small limits, so that skipped blocks matter too.
        for r in &mut rules {
            r.max_block_size = r.max_block_size.min(40);
        }
        let (cands, stats) = candidates(&records, &rules, u64::MAX, 1).unwrap();
        let mut expected: Vec<(i64, i64, u32)> = cands
            .iter()
            .map(|c| {
                let (a, b) = (records[c.a as usize].id, records[c.b as usize].id);
                (a.min(b), a.max(b), c.rules)
            })
            .collect();
        expected.sort_unstable();
        let (got, got_stats) = streamed(&records, &rules);
        assert!(expected.len() > 10_000, "{} candidates", expected.len());
        assert!(
            expected.iter().filter(|c| c.2.count_ones() > 1).count() > 1000,
            "pairs of several rules"
        );
        assert!(stats.iter().any(|s| s.skipped_blocks > 0));
        // Pairs sharing two keys of one rule (a family's two phones).
        let two_phones = records
            .iter()
            .filter(|r| r.phones.len() == 2 && r.phones[0].starts_with("0171"))
            .count();
        assert!(two_phones > 500, "{two_phones}");
        assert_eq!(got, expected);
        assert_eq!(got_stats, stats);
    }

    /// The blocks in batches of a few hundred members, in an order other than by key, each
    /// record's keys made from the record and the skipped keys alone (`BlockBatch`): the
    /// candidates and figures of all records at once.
    #[test]
    fn batched_blocks_give_the_candidates_of_all_records_at_once() {
        let mut records = records(3000);
        records.sort_by_key(|r| r.id);
        let mut rules = default_rules();
        for r in &mut rules {
            r.max_block_size = r.max_block_size.min(40);
        }
        let (cands, mut stats) = candidates(&records, &rules, u64::MAX, 1).unwrap();
        let mut expected: Vec<(i64, i64, u32)> = cands
            .iter()
            .map(|c| {
                let (a, b) = (records[c.a as usize].id, records[c.b as usize].id);
                (a.min(b), a.max(b), c.rules)
            })
            .collect();
        expected.sort_unstable();
        let mut blocks: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in &records {
            for (_, h) in key_hashes(&rules, r) {
                blocks.entry(h).or_default().push(r.id);
            }
        }
        let max: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
        let skipped: HashSet<i64> = blocks
            .iter()
            .filter(|(h, m)| m.len() > max[rule_of(**h)])
            .map(|(h, _)| *h)
            .collect();
        assert!(!skipped.is_empty());
        // Blocks by the hash's high bits reversed, members reversed: no order is relied on.
        let mut valid: Vec<(i64, Vec<i64>)> = blocks
            .into_iter()
            .filter(|(h, m)| valid_block(m.len() as u64, max[rule_of(*h)]))
            .map(|(h, mut m)| {
                m.reverse();
                (h, m)
            })
            .collect();
        valid.sort_by_key(|(h, _)| std::cmp::Reverse(h.rotate_left(17)));
        let mut got_stats: Vec<RuleStats> = stats
            .iter()
            .map(|s| RuleStats {
                new_pairs: 0,
                ..s.clone()
            })
            .collect();
        let mut got = Vec::new();
        let mut batch = BlockBatch::default();
        let mut batches = 0;
        let by_id = |id: i64| records.binary_search_by_key(&id, |r| r.id).unwrap();
        let mut flush = |batch: BlockBatch, got_stats: &mut Vec<RuleStats>| {
            let members: Vec<MatchRecord> = batch
                .ids()
                .into_iter()
                .map(|id| records[by_id(id)].clone())
                .collect();
            let workers = crate::parallel::Workers {
                threads: 2,
                ..Default::default()
            };
            for c in batch.pairs(&members, &rules, &skipped, got_stats, workers) {
                let (a, b) = (members[c.a as usize].id, members[c.b as usize].id);
                assert!(a < b);
                got.push((a, b, c.rules));
            }
        };
        for (h, m) in valid {
            batch.push(h, m);
            if batch.members() >= 300 {
                flush(std::mem::take(&mut batch), &mut got_stats);
                batches += 1;
            }
        }
        flush(batch, &mut got_stats);
        got.sort_unstable();
        assert!(batches > 10, "{batches} batches");
        assert!(expected.len() > 10_000, "{} candidates", expected.len());
        assert_eq!(got, expected);
        for s in &mut stats {
            s.largest_skipped_key = None;
        }
        for s in &mut got_stats {
            s.largest_skipped_key = None;
        }
        assert_eq!(got_stats, stats);
    }

    /// The values of two or more holders in any order, judged a few hundred holders at a time
    /// on the holders read by id: the household values of all records at once.
    #[test]
    fn household_values_from_holder_groups_are_those_of_all_records() {
        let mut records = records(3000);
        records.sort_by_key(|r| r.id);
        let all = super::super::comparison::Context::build(&records);
        let mut by_value: BTreeMap<(u8, String), Vec<i64>> = BTreeMap::new();
        for r in &records {
            if let Some(e) = &r.email_key {
                by_value.entry((0, e.clone())).or_default().push(r.id);
            }
            for p in &r.phones {
                by_value.entry((1, p.clone())).or_default().push(r.id);
            }
        }
        assert!(by_value.values().any(|ids| ids.len() > JUNK_VALUE_RECORDS));
        let mut groups = HolderGroups::default();
        let judge = |groups: &mut HolderGroups| {
            let holders: Vec<MatchRecord> = groups
                .ids()
                .into_iter()
                .map(|id| records[records.binary_search_by_key(&id, |r| r.id).unwrap()].clone())
                .collect();
            groups.judge(&holders);
        };
        // Reversed, holders reversed: no order is relied on.
        for ((kind, value), mut ids) in by_value.into_iter().rev() {
            ids.reverse();
            let kind = if kind == 0 {
                HeldValue::Email
            } else {
                HeldValue::Phone
            };
            groups.push(kind, value, ids);
            if groups.members() >= 200 {
                judge(&mut groups);
            }
        }
        judge(&mut groups);
        let (emails, phones) = groups.finish();
        assert!(!emails.is_empty() && !phones.is_empty());
        assert_eq!(emails, all.shared_emails);
        assert_eq!(phones, all.shared_phones);
    }

    #[test]
    fn too_many_pairs_name_the_rule_where_the_total_passes() {
        let names = vec!["a".to_string(), "b".to_string()];
        let sizes = vec![
            (0i64 << 8, 10u64),
            (1i64 << 8 | 1, 10),
            (2i64 << 8 | 1, 100),
        ];
        let err = rule_stats(&names, &[50, 50], sizes.clone(), 60).unwrap_err();
        assert!(err.contains("\"b\""), "{err}");
        let (stats, largest) = rule_stats(&names, &[50, 50], sizes, 1000).unwrap();
        assert_eq!((stats[0].pairs, stats[1].pairs), (45, 45));
        assert_eq!(stats[1].skipped_blocks, 1);
        assert_eq!(largest, vec![None, Some(2 << 8 | 1)]);
    }

    #[test]
    fn a_pair_comes_from_its_first_shared_key_only() {
        let ids = [1, 2];
        let x = [0x100_i64, 0x201, 0x302];
        let y = [0x100_i64, 0x302];
        assert!(block_pairs(0x302, &[0, 1], &[&x, &y], &ids).is_empty());
        let got = block_pairs(0x100, &[5, 6], &[&x, &y], &ids);
        assert_eq!(
            got,
            vec![Candidate {
                a: 5,
                b: 6,
                rules: 0b101
            }]
        );
        // Two keys of one rule (two shared phones): from the smaller one.
        let x = [0x100_i64, 0x200, 0x301];
        let y = [0x100_i64, 0x200];
        assert_eq!(block_pairs(0x100, &[0, 1], &[&x, &y], &ids).len(), 1);
        assert!(block_pairs(0x200, &[0, 1], &[&x, &y], &ids).is_empty());
        // The smaller id first, whatever the order in the block.
        let got = block_pairs(0x100, &[5, 6], &[&x, &y], &[9, 3]);
        assert_eq!((got[0].a, got[0].b), (6, 5));
        assert!(fits_in_memory(1000, 4096) && !fits_in_memory(1025, 4096));
        assert_eq!(buffer_records(64, 300, 2), 300);
        assert_eq!(buffer_records(1024 * 1024, 300, 4), 65_536);
    }
}
