//! Training without labels, as Splink does it: u from random record pairs (exact levels from
//! value frequencies), m by expectation-maximisation over the blocked pairs, one session per
//! blocking rule that leaves out the comparisons the rule fixes, and the prior from the expected
//! number of matches among the candidates.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::blocking::{BlockingRule, Candidate};
use super::comparison::{compare, Comparison, Context, Namesakes, Outcome, COMPARISONS};
use super::params::{log2_odds, Model};
use super::record::MatchRecord;
use super::scorer::{NameFrequencies, Scorer};
use crate::parallel;
use crate::stopwatch::Stopwatch;

#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Random pairs drawn to estimate u.
    pub sample_pairs: usize,
    pub max_iterations: usize,
    /// EM stops when no m moves by more than this.
    pub tolerance: f64,
    pub seed: u64,
    /// Candidate pairs the EM sessions and the prior look at: above it, a weighted random
    /// sample (see `em_sample`); 0 takes them all.
    pub em_pairs: usize,
    /// Threads comparing pairs, and the interrupt check between blocks (see `crate::parallel`);
    /// the results do not depend on them.
    pub workers: parallel::Workers,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            sample_pairs: 1_000_000,
            max_iterations: 100,
            tolerance: 1e-5,
            seed: 42,
            em_pairs: 4_000_000,
            workers: parallel::Workers::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SessionReport {
    pub rule: String,
    pub pairs: u64,
    pub estimated: Vec<&'static str>,
    pub iterations: usize,
    pub converged: bool,
    pub match_share: f64,
    pub log_likelihood: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub records: usize,
    pub candidate_pairs: usize,
    /// Candidates the EM sessions and the prior were estimated on (all, or the sample).
    pub em_sample_pairs: usize,
    pub u_sample_pairs: usize,
    pub sessions: Vec<SessionReport>,
    pub converged: bool,
    pub expected_matches: f64,
    pub prior: f64,
    /// See `Model::household_share`.
    pub household_share: Option<f64>,
    /// See `Model::namesake_share`.
    pub namesake_share: Option<f64>,
    pub similar_name_share: Option<f64>,
    /// Comparisons left at the values they had before training, and why (see
    /// `keep_untrainable`); empty when every comparison was trained.
    pub kept_untrained: Vec<String>,
    /// Whether the records were streamed (more than `customer_unify.batch_memory` holds): u
    /// from a random sample of records, EM and the prior on a weighted sample of candidates
    /// drawn as they stream past (see `StreamedSample`).
    pub streamed: bool,
    /// Wall time of each step, for finding where a slow training goes.
    pub seconds: Vec<(&'static str, f64)>,
}

/// Each rule combination keeps at least this share of the sample (all its pairs, if fewer; a
/// smaller share past 25 combinations, see [`sample_chance`]): a rule that yields few pairs
/// still has its own EM session to learn from.
const MIN_SHARE_PER_RULES: f64 = 1.0 / 50.0;

/// The raised shares of small rule combinations together add at most this share of the sample
/// asked for (see [`sample_chance`]).
const MOST_RAISED: f64 = 0.5;

/// A streamed sample is thinned once it holds this many times what it should at the chances
/// then (see [`StreamedSample`]).
const THINNED_PAST: f64 = 1.125;

/// The most pairs a streamed sample of `em_pairs` holds (besides the chunk being drawn): the
/// raised shares, and the share it grows past before it is thinned.
pub fn most_kept(em_pairs: usize) -> usize {
    (em_pairs as f64 * (1.0 + MOST_RAISED) * THINNED_PAST) as usize
}

/// The sample to ask for so that [`most_kept`] is at most `room` pairs.
pub fn asked_within(room: usize) -> usize {
    (room as f64 / ((1.0 + MOST_RAISED) * THINNED_PAST)) as usize
}

/// The candidates EM and the prior look at: all of them when there are at most `em_pairs`,
/// else each with a chance of `em_pairs / n`, raised for rule combinations with few pairs (see
/// [`Chances`]), drawn by a hash of the pair's record ids and `seed` ([`pair_draw`]), as the
/// streamed training and the workers of a Citus cluster draw it: the same sample, whatever the
/// order of the candidates or the node that compares them. The weighted counts estimate the
/// counts of all candidates without bias; the matches among 30M candidates are estimated from 4M
/// to within a fraction of a percent at a seventh of the comparisons. The indexes of the drawn
/// candidates, and the chances.
fn em_sample(
    records: &[MatchRecord],
    candidates: &[Candidate],
    em_pairs: usize,
    seed: u64,
) -> (Vec<u32>, Chances) {
    let mut chances = Chances::new(em_pairs);
    for c in candidates {
        chances.count(c.rules, 1);
    }
    if chances.takes_all() {
        return ((0..candidates.len() as u32).collect(), chances);
    }
    let mut picked = Vec::with_capacity(em_pairs + (em_pairs as f64 * MOST_RAISED) as usize);
    for (i, c) in candidates.iter().enumerate() {
        crate::interrupt::check_every(i, 1 << 16);
        let (a, b) = (records[c.a as usize].id, records[c.b as usize].id);
        if chances.drawn(a, b, c.rules, seed) {
            picked.push(i as u32);
        }
    }
    (picked, chances)
}

/// The chance of each candidate to be in the EM sample (see [`em_sample`]), from the number of
/// candidates per rule combination: the same bits on every node that counts the same
/// candidates (whole numbers, summed exactly as floats).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chances {
    em_pairs: usize,
    candidates: f64,
    per_rules: HashMap<u32, f64>,
}

impl Chances {
    /// For a sample of about `em_pairs` candidates (0: all of them).
    pub fn new(em_pairs: usize) -> Self {
        Self {
            em_pairs,
            ..Default::default()
        }
    }

    /// Counts `n` candidates of the rule combination `rules`.
    pub fn count(&mut self, rules: u32, n: u64) {
        self.candidates += n as f64;
        *self.per_rules.entry(rules).or_default() += n as f64;
    }

    /// The candidates counted per rule combination, by combination.
    pub fn per_rules(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self
            .per_rules
            .iter()
            .map(|(r, n)| (*r, *n as u64))
            .collect();
        v.sort_unstable();
        v
    }

    /// The sample's size asked for (0: all).
    pub fn em_pairs(&self) -> usize {
        self.em_pairs
    }

    /// Whether every candidate is in the sample (at most `em_pairs` of them, or no limit).
    pub fn takes_all(&self) -> bool {
        self.em_pairs == 0 || self.candidates <= self.em_pairs as f64
    }

    /// The chance of a candidate of `rules`.
    pub fn chance(&self, rules: u32) -> f64 {
        sample_chance(
            self.em_pairs,
            self.candidates,
            self.per_rules.get(&rules).copied().unwrap_or(1.0),
            self.per_rules.len(),
        )
    }

    /// Whether the candidate of records `a` and `b` (ids, either order) of `rules` is drawn.
    pub fn drawn(&self, a: i64, b: i64, rules: u32, seed: u64) -> bool {
        self.takes_all() || pair_draw(a, b, seed) < self.chance(rules)
    }

    /// About how many candidates the sample keeps (`em_pairs`, and more for the raised shares
    /// of small rule combinations).
    fn expected(&self) -> f64 {
        self.per_rules
            .iter()
            .map(|(rules, count)| count * self.chance(*rules))
            .sum()
    }
}

/// What training keeps of a compared candidate: its outcome (see [`encode_outcome`]), its rules,
/// and side a's name frequencies where the weight reads them (an exact, not crosswise, first or
/// last name match: `Scorer::term_weight`), else NaN. Candidates with one key weigh the same and
/// count the same in every tally, so training needs only how many there are of each key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    pub outcome: u64,
    pub rules: u32,
    /// The bits of the first and last name frequency.
    pub names: [u64; 2],
}

impl PairKey {
    pub fn of(o: &Outcome, rules: u32, names: &NameFrequencies) -> Self {
        let values = names.values();
        let read = |c: Comparison, i: usize| {
            if !o.swapped && o.level(c) == Some(0) {
                values[i].to_bits()
            } else {
                f64::NAN.to_bits()
            }
        };
        Self {
            outcome: encode_outcome(o),
            rules,
            names: [
                read(Comparison::FirstName, 0),
                read(Comparison::LastName, 1),
            ],
        }
    }

    pub fn outcome_of(&self) -> Outcome {
        decode_outcome(self.outcome)
    }

    pub fn names_of(&self) -> NameFrequencies {
        NameFrequencies::from_values(self.names.map(f64::from_bits))
    }
}

/// An outcome as a number: each comparison's level in 4 bits (0: none, else level + 1), then
/// the flags. [`decode_outcome`] gives it back.
pub fn encode_outcome(o: &Outcome) -> u64 {
    let mut x = 0u64;
    for (i, l) in o.levels.iter().enumerate() {
        let v = l.map_or(0, |l| u64::from(l.min(14)) + 1);
        x |= v << (4 * i);
    }
    let flags = [
        o.swapped,
        o.shared_email,
        o.shared_phone,
        o.shared_landline,
        o.shared_family_mailbox,
        o.street_missing,
        o.generation_conflict,
        o.other_sex_forms,
    ];
    for (i, f) in flags.into_iter().enumerate() {
        x |= u64::from(f) << (4 * COMPARISONS.len() + i);
    }
    x
}

/// The outcome [`encode_outcome`] made `x` of.
pub fn decode_outcome(x: u64) -> Outcome {
    let mut levels = [None; COMPARISONS.len()];
    for (i, l) in levels.iter_mut().enumerate() {
        let v = (x >> (4 * i)) & 15;
        *l = (v > 0).then(|| (v - 1) as u8);
    }
    let flag = |i: usize| (x >> (4 * COMPARISONS.len() + i)) & 1 == 1;
    Outcome {
        levels,
        swapped: flag(0),
        shared_email: flag(1),
        shared_phone: flag(2),
        shared_landline: flag(3),
        shared_family_mailbox: flag(4),
        street_missing: flag(5),
        generation_conflict: flag(6),
        other_sex_forms: flag(7),
    }
}

/// The compared candidates of a training (all, or the sample), counted per [`PairKey`]: whole
/// numbers, so parts counted anywhere (threads, blocks, Citus workers) add up exactly. A list of
/// (key, count), sorted and summed per key when it fills and at the end: 40 bytes a distinct key
/// (a hash map took about 80, and its sorted copy for the fit 40 more beside it; at 10M records
/// a sample of 4.7M keys).
#[derive(Clone, Debug, Default)]
pub struct PairCounts {
    /// Sorted by key, one entry per key, up to `summed`; after it, entries as they were added.
    entries: Vec<(PairKey, u64)>,
    summed: usize,
}

impl PairCounts {
    pub fn add(&mut self, o: &Outcome, rules: u32, names: &NameFrequencies) {
        self.add_key(PairKey::of(o, rules, names), 1);
    }

    pub fn add_key(&mut self, key: PairKey, n: u64) {
        if self.entries.len() == self.entries.capacity() && self.entries.len() > self.summed {
            self.sum_up();
            // Grown when summing freed less than a quarter: each entry is sorted a bounded
            // number of times.
            let free = self.entries.capacity() - self.entries.len();
            if free < self.entries.capacity() / 4 {
                self.entries.reserve(self.entries.capacity().max(1024));
            }
        }
        self.entries.push((key, n));
    }

    /// Counts given as (key, count) entries in any order, keys repeated or not.
    pub fn from_entries(entries: Vec<(PairKey, u64)>) -> Self {
        let mut counts = Self { entries, summed: 0 };
        counts.sum_up();
        counts
    }

    /// Sorts the entries by key and sums each key's into one, in place.
    fn sum_up(&mut self) {
        if self.summed == self.entries.len() {
            return;
        }
        let e = &mut self.entries;
        e.sort_unstable_by_key(|(k, _)| *k);
        let mut kept = 0;
        for i in 1..e.len() {
            if e[i].0 == e[kept].0 {
                e[kept].1 += e[i].1;
            } else {
                kept += 1;
                e[kept] = e[i];
            }
        }
        e.truncate(kept + 1);
        self.summed = e.len();
    }

    pub fn merge(&mut self, other: PairCounts) {
        for (k, n) in other.entries {
            self.add_key(k, n);
        }
    }

    /// The compared candidates.
    pub fn pairs(&self) -> u64 {
        self.entries.iter().map(|(_, n)| n).sum()
    }

    /// The keys and their counts, by key.
    pub fn sorted(&self) -> Vec<(PairKey, u64)> {
        self.clone().into_sorted()
    }

    /// [`Self::sorted`], the counts given up: no copy.
    pub fn into_sorted(mut self) -> Vec<(PairKey, u64)> {
        self.sum_up();
        self.entries.shrink_to_fit();
        self.entries
    }
}

/// Equal when they count the same keys the same number of times, in whatever order added.
impl PartialEq for PairCounts {
    fn eq(&self, other: &Self) -> bool {
        self.sorted() == other.sorted()
    }
}

/// The compared candidates training learns from, and the chances they were drawn at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub pairs: PairCounts,
    pub chances: Chances,
}

/// The candidates of one key, as the estimates read them.
struct Weighted {
    outcome: Outcome,
    rules: u32,
    names: NameFrequencies,
    /// Their count over the chance of their rules (1 / chance each).
    weight: f64,
}

/// The keys of a sample (sorted, as [`PairCounts::into_sorted`] gives them) with their weights,
/// by key: the estimates sum over them in this order, so that the model does not depend on
/// where or in what order the candidates were compared. Read from the keys as they are needed
/// (a few million sampled pairs at 10M records: the keys alone are held).
fn weighted<'a>(
    keys: &'a [(PairKey, u64)],
    chances: &'a Chances,
) -> impl Iterator<Item = Weighted> + 'a {
    keys.iter().map(|(k, n)| Weighted {
        outcome: k.outcome_of(),
        rules: k.rules,
        names: k.names_of(),
        weight: *n as f64 * (1.0 / chances.chance(k.rules)),
    })
}

/// The EM sample of the candidates of a streamed training (more records than
/// `customer_unify.batch_memory` holds), which pass by block by block, never all known at once.
/// The sample is the one `em_sample` draws from all candidates held at once: each candidate of
/// a rule combination with `count` of `n` candidates is in it with the chance
/// `sample_chance(em_pairs, n, count)` and weighs 1 / that chance; only the draw differs: a hash
/// of the pair's record ids and the seed (`pair_draw`), so it does not depend on the order of
/// the blocks or on which block produced the pair.
///
/// The final counts are known only at the end, but a chance never grows as candidates come: a
/// candidate is kept when its draw is below the chance of its combination among the candidates
/// seen so far, and whenever the sample grows past an eighth more than it should hold at the
/// chances then (`em_pairs`, raised for small rule combinations), the kept ones are
/// thinned to the chances at that point (those are at most the ones they were drawn at). At the
/// end they are thinned to the final chances: the sample is exactly the candidates whose draw is
/// below their final chance, at most an eighth more (plus one chunk) held at any time.
/// With at most `em_pairs` candidates every candidate is kept with weight 1, as held.
#[derive(Clone, Default)]
pub struct StreamedSample {
    em_pairs: usize,
    seed: u64,
    /// The chances from the candidates seen so far.
    chances: Chances,
    /// The kept pairs: each one's key and draw.
    pub kept: Vec<(PairKey, f64)>,
    /// Every candidate that streamed past.
    pub candidates: usize,
    /// Candidates compared (the kept ones, and those thinned out later).
    pub compared: usize,
}

/// The draw of the pair of records `a` and `b` (ids, either order): uniform in [0, 1).
pub fn pair_draw(a: i64, b: i64, seed: u64) -> f64 {
    let (x, y) = (a.min(b) as u64, a.max(b) as u64);
    let first = Rng(seed ^ x.wrapping_mul(0x2545_F491_4F6C_DD1D)).next();
    let draw = Rng(first ^ y.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next();
    (draw >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

impl StreamedSample {
    /// Bytes one kept pair takes.
    pub const PAIR_BYTES: usize = std::mem::size_of::<(PairKey, f64)>();

    /// Candidates drawn and compared at a time: the most the sample grows past its limit.
    const CHUNK: usize = 1 << 16;

    /// A sample of about `em_pairs` candidates (0: all of them), drawn with `seed`.
    pub fn new(em_pairs: usize, seed: u64) -> Self {
        // Room for the most it holds and a chunk: not grown again while it streams.
        let limit = if em_pairs == 0 {
            0
        } else {
            most_kept(em_pairs) + Self::CHUNK
        };
        Self {
            em_pairs,
            seed,
            chances: Chances::new(em_pairs),
            kept: Vec::with_capacity(limit),
            ..Default::default()
        }
    }

    fn chance(&self, rules: u32) -> f64 {
        self.chances.chance(rules)
    }

    /// The candidates of some blocks (`cands` index `records`): each counted, drawn, the drawn
    /// ones compared (on `workers`) and kept.
    pub fn add(
        &mut self,
        records: &[MatchRecord],
        cands: &[Candidate],
        ctx: &Context,
        workers: parallel::Workers,
    ) {
        for chunk in cands.chunks(Self::CHUNK) {
            crate::interrupt::check();
            let mut drawn: Vec<(Candidate, f64)> = Vec::new();
            for c in chunk {
                self.candidates += 1;
                self.chances.count(c.rules, 1);
                let (a, b) = (&records[c.a as usize], &records[c.b as usize]);
                let draw = pair_draw(a.id, b.id, self.seed);
                if draw < self.chance(c.rules) {
                    drawn.push((*c, draw));
                }
            }
            let keys = parallel::map(&drawn, workers, |(c, _)| {
                let a = &records[c.a as usize];
                let o = compare(a, &records[c.b as usize], ctx);
                PairKey::of(&o, c.rules, &NameFrequencies::of(ctx, a))
            });
            self.compared += drawn.len();
            self.kept
                .extend(keys.into_iter().zip(drawn).map(|(k, (_, draw))| (k, draw)));
            if self.em_pairs > 0 && self.kept.len() as f64 > self.chances.expected() * THINNED_PAST
            {
                self.thin();
            }
        }
    }

    /// Keeps the pairs whose draw is below their combination's chance now.
    fn thin(&mut self) {
        let chances = &self.chances;
        self.kept
            .retain(|(key, draw)| *draw < chances.chance(key.rules));
    }

    /// The sample at the final chances, each pair weighing 1 / its chance, counted per key
    /// (what training reads): the kept pairs become the counts in place.
    pub fn finish(mut self) -> Sample {
        self.thin();
        // (key, draw) and (key, count) have one layout: std collects them in the same allocation.
        let entries: Vec<(PairKey, u64)> = self.kept.into_iter().map(|(k, _)| (k, 1)).collect();
        Sample {
            pairs: PairCounts::from_entries(entries),
            chances: self.chances,
        }
    }
}

/// The end of a streamed training (begun with `Training::start` and u set by `estimate_u_with`
/// on a random sample of records): EM and the prior on the candidates' sample.
#[allow(clippy::too_many_arguments)]
pub fn train_streamed(
    training: Training,
    model: &mut Model,
    ctx: &Context,
    source_ids: &HashMap<String, i32>,
    sample: StreamedSample,
    records: usize,
    u_sample_pairs: usize,
    opts: &TrainOptions,
) -> TrainReport {
    let candidate_pairs = sample.candidates;
    fit(
        training,
        model,
        ctx,
        source_ids,
        sample.finish(),
        Counts {
            records,
            candidate_pairs,
            u_sample_pairs,
            streamed: true,
        },
        opts,
    )
}

/// The chance of a candidate of a rule combination with `count` candidates, among `n` of
/// `combinations` rule combinations, to be in a sample of about `em_pairs` (see `em_sample`):
/// `em_pairs / n`, raised so that a small combination keeps a fiftieth of the sample, or a
/// `2 * combinations`th where there are more than 25 of them: the raised shares together never
/// add more than half of `em_pairs` (at 10M records some 80 combinations raised a 1.8M sample
/// to 4.7M, past the memory it was sized for). Never grows with `n`, `count` or
/// `combinations`: a streamed sample drawn at the chances of the candidates seen so far can be
/// thinned to the final ones.
fn sample_chance(em_pairs: usize, n: f64, count: f64, combinations: usize) -> f64 {
    if em_pairs == 0 || n <= em_pairs as f64 {
        return 1.0;
    }
    let base = em_pairs as f64 / n;
    let share = MIN_SHARE_PER_RULES.min(MOST_RAISED / combinations.max(1) as f64);
    let least = em_pairs as f64 * share;
    base.max(least / count).min(1.0)
}

/// splitmix64: a small, well-mixed deterministic generator (the sample must be reproducible).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Probability that two random records (both with the value) agree exactly: sum of c(c-1)
/// over values, divided by n(n-1). Exact agreement is rare, so a random sample would see too
/// few to estimate it; the value counts give it exactly.
fn exact_u<'a>(values: impl Iterator<Item = &'a str>) -> Option<f64> {
    let mut counts: HashMap<&str, f64> = HashMap::new();
    let mut n = 0.0;
    for (i, v) in values.enumerate() {
        crate::interrupt::check_every(i, 1 << 16);
        *counts.entry(v).or_default() += 1.0;
        n += 1.0;
    }
    let agree: f64 = counts.values().map(|c| c * (c - 1.0)).sum();
    exact_u_of_counts(agree, n)
}

/// [`exact_u`] from its sums: `agree` the sum of c(c-1) over the values' counts, `n` the
/// records with a value (as the SQL layer counts them with GROUP BY when records are streamed).
pub fn exact_u_of_counts(agree: f64, n: f64) -> Option<f64> {
    if n < 2.0 {
        return None;
    }
    Some((agree / (n * (n - 1.0))).max(1.0 / (n * (n - 1.0))))
}

/// The values of a name field counted as records stream past: their frequencies (as
/// `Context::build` has them) and their exact-agreement u (as [`exact_u`]), the same bits as
/// either over all records held at once (whole-number counts, divided once).
#[derive(Debug, Default)]
pub struct ValueCounts {
    counts: HashMap<String, u64>,
    n: u64,
}

impl ValueCounts {
    pub fn add(&mut self, value: &str) {
        self.n += 1;
        match self.counts.get_mut(value) {
            Some(c) => *c += 1,
            None => {
                self.counts.insert(value.to_string(), 1);
            }
        }
    }

    /// The exact-agreement u of the values counted.
    pub fn exact_u(&self) -> Option<f64> {
        let agree: u128 = self
            .counts
            .values()
            .map(|&c| u128::from(c) * u128::from(c - 1))
            .sum();
        exact_u_of_counts(agree as f64, self.n as f64)
    }

    /// Each value's share of the records with one.
    pub fn frequencies(self) -> HashMap<String, f64> {
        let n = self.n as f64;
        self.counts
            .into_iter()
            .map(|(v, c)| (v, c as f64 / n))
            .collect()
    }
}

/// The value of `r` whose exact agreement [`exact_u`] counts for comparison `c`: the phone is
/// the first of the prepared phones, the address street|house number|postcode.
pub fn exact_value(c: Comparison, r: &MatchRecord) -> Option<Cow<'_, str>> {
    fn borrowed(v: &Option<String>) -> Option<Cow<'_, str>> {
        v.as_deref().map(Cow::Borrowed)
    }
    match c {
        Comparison::FirstName => borrowed(&r.first_name),
        Comparison::LastName => borrowed(&r.last_name),
        Comparison::BirthDate => borrowed(&r.birth_date),
        Comparison::Email => borrowed(&r.email),
        Comparison::Phone => r.phones.first().map(|p| Cow::Borrowed(p.as_str())),
        Comparison::Address => match (&r.street, &r.house_number, &r.postcode) {
            (Some(s), Some(n), Some(p)) => Some(Cow::Owned(format!("{s}|{n}|{p}"))),
            _ => None,
        },
        Comparison::ExternalId => borrowed(&r.external_id),
    }
}

/// A stable 64-bit hash (FNV-1a) of an exact value: the streamed training counts values by it
/// in SQL (a collision among a million values has a chance of about 3e-8, and would count two
/// values as one).
pub fn value_hash(value: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The exact-agreement u of every comparison (in `COMPARISONS` order) over `records`.
pub fn exact_us(records: &[MatchRecord]) -> [Option<f64>; COMPARISONS.len()] {
    COMPARISONS.map(|c| {
        if c == Comparison::Address {
            // Made up of three fields: built once each.
            let values: Vec<Cow<str>> = records.iter().filter_map(|r| exact_value(c, r)).collect();
            exact_u(values.iter().map(|v| v.as_ref()))
        } else {
            // The record's own field, borrowed.
            exact_u(records.iter().filter_map(|r| match exact_value(c, r)? {
                Cow::Borrowed(v) => Some(v),
                Cow::Owned(_) => None,
            }))
        }
    })
}

/// Sets u of every comparison in `model` from random pairs of `records`.
pub fn estimate_u(
    records: &[MatchRecord],
    ctx: &Context,
    model: &mut Model,
    opts: &TrainOptions,
) -> usize {
    estimate_u_with(records, ctx, model, opts, &exact_us(records))
}

/// u of every comparison in `model` from random pairs of `records` (all records, or a random
/// sample of them), the exact level's from `exact` (per comparison, see [`exact_us`]) where
/// given.
pub fn estimate_u_with(
    records: &[MatchRecord],
    ctx: &Context,
    model: &mut Model,
    opts: &TrainOptions,
    exact: &[Option<f64>; COMPARISONS.len()],
) -> usize {
    if records.len() < 2 {
        return 0;
    }
    let mut rng = Rng(opts.seed);
    let total_pairs = records.len() as u128 * (records.len() as u128 - 1) / 2;
    let samples = (opts.sample_pairs as u128).min(total_pairs) as usize;
    // The sample is drawn first, in one sequence, so it is the same on any number of threads.
    let pairs: Vec<(u32, u32)> = (0..samples)
        .map(|k| {
            crate::interrupt::check_every(k, 1 << 16);
            let i = rng.below(records.len());
            let mut j = rng.below(records.len() - 1);
            if j >= i {
                j += 1;
            }
            (i as u32, j as u32)
        })
        .collect();
    let mut counts = [[0.0f64; 8]; COMPARISONS.len()];
    for part in parallel::map_blocks(pairs.len(), opts.workers, |range| {
        let mut part = [[0.0f64; 8]; COMPARISONS.len()];
        for &(i, j) in &pairs[range] {
            let o = compare(&records[i as usize], &records[j as usize], ctx);
            for c in COMPARISONS {
                if let Some(l) = o.level(c) {
                    part[c.index()][l as usize] += 1.0;
                }
            }
        }
        part
    }) {
        for (row, part_row) in counts.iter_mut().zip(part) {
            row.iter_mut().zip(part_row).for_each(|(n, x)| *n += x);
        }
    }
    for p in &mut model.comparisons {
        let c = p.comparison;
        let analytic = exact[c.index()];
        let levels = p.levels.len();
        let row = &counts[c.index()];
        let n: f64 = row[..levels].iter().sum();
        // Half a pair for a level never seen: rare is not impossible.
        let smoothed: Vec<f64> = (0..levels)
            .map(|l| (row[l] + 0.5) / (n + 0.5 * levels as f64))
            .collect();
        let exact = analytic.unwrap_or(smoothed[0]);
        let rest: f64 = smoothed[1..].iter().sum();
        p.levels[0].u = exact;
        for (level, s) in p.levels.iter_mut().zip(&smoothed).take(levels).skip(1) {
            level.u = (s / rest * (1.0 - exact)).max(1e-12);
        }
    }
    samples
}

pub type Pattern = [Option<u8>; COMPARISONS.len()];

/// One EM session over pattern counts: u fixed, m of the `estimated` comparisons and the share
/// of matches among the pairs re-estimated until they settle.
fn em_session(
    patterns: &[(Pattern, f64)],
    model: &Model,
    estimated: &[Comparison],
    opts: &TrainOptions,
) -> (HashMap<Comparison, Vec<f64>>, SessionReport) {
    let mut m: HashMap<Comparison, Vec<f64>> = estimated
        .iter()
        .filter_map(|c| {
            model
                .params(*c)
                .map(|p| (*c, p.levels.iter().map(|l| l.m).collect()))
        })
        .collect();
    let u: HashMap<Comparison, Vec<f64>> = estimated
        .iter()
        .filter_map(|c| {
            model
                .params(*c)
                .map(|p| (*c, p.levels.iter().map(|l| l.u).collect()))
        })
        .collect();
    let total: f64 = patterns.iter().map(|p| p.1).sum();
    let mut lambda = 0.1f64;
    let mut report = SessionReport {
        rule: String::new(),
        pairs: total as u64,
        estimated: m.keys().map(|c| c.name()).collect(),
        iterations: 0,
        converged: false,
        match_share: 0.0,
        log_likelihood: 0.0,
    };
    report.estimated.sort_unstable();
    // The comparisons in a fixed order (a HashMap's order changes from run to run): the sums of
    // logarithms below, and so the model, the same bits every time.
    let order: Vec<Comparison> = estimated
        .iter()
        .copied()
        .filter(|c| m.contains_key(c))
        .collect();
    for it in 1..=opts.max_iterations {
        // An iteration passes over every distinct pattern once: check between them.
        crate::interrupt::check();
        let mut num: HashMap<Comparison, Vec<f64>> =
            m.iter().map(|(c, v)| (*c, vec![0.0; v.len()])).collect();
        let mut matched = 0.0;
        let mut ll = 0.0;
        for (pattern, count) in patterns {
            let mut log_m = lambda.ln();
            let mut log_u = (1.0 - lambda).ln();
            for c in &order {
                if let Some(l) = pattern[c.index()] {
                    log_m += m[c][l as usize].ln();
                    log_u += u[c][l as usize].ln();
                }
            }
            let hi = log_m.max(log_u);
            let denom = hi + ((log_m - hi).exp() + (log_u - hi).exp()).ln();
            ll += count * denom;
            let p = (log_m - denom).exp();
            matched += count * p;
            for (c, acc) in &mut num {
                if let Some(l) = pattern[c.index()] {
                    acc[l as usize] += count * p;
                }
            }
        }
        let mut delta = 0.0f64;
        for (c, acc) in num {
            let s: f64 = acc.iter().sum();
            if s <= 0.0 {
                continue;
            }
            let mv = m.get_mut(&c).expect("estimated comparison");
            for (old, a) in mv.iter_mut().zip(acc) {
                let new = (a / s).max(1e-6);
                delta = delta.max((new - *old).abs());
                *old = new;
            }
            let norm: f64 = mv.iter().sum();
            mv.iter_mut().for_each(|x| *x /= norm);
        }
        lambda = (matched / total).clamp(1e-9, 1.0 - 1e-9);
        report.iterations = it;
        report.log_likelihood = ll;
        report.match_share = lambda;
        if delta < opts.tolerance {
            report.converged = true;
            break;
        }
    }
    (m, report)
}

/// One EM session per blocking rule; the m of each comparison is averaged over the sessions
/// that estimated it.
fn em_sessions(
    counts: &BTreeMap<(Pattern, u32), f64>,
    rules: &[BlockingRule],
    model: &mut Model,
    opts: &TrainOptions,
) -> Vec<SessionReport> {
    let mut sums: HashMap<Comparison, (Vec<f64>, f64)> = HashMap::new();
    let mut sessions = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        // Ordered maps: the patterns summed and passed to EM in one order every time.
        let mut merged: BTreeMap<Pattern, f64> = BTreeMap::new();
        for ((p, mask), n) in counts {
            if mask & (1 << i) != 0 {
                *merged.entry(*p).or_default() += n;
            }
        }
        if merged.is_empty() {
            continue;
        }
        let patterns: Vec<(Pattern, f64)> = merged.into_iter().collect();
        let fixed = rule.comparisons();
        let estimated: Vec<Comparison> = COMPARISONS
            .into_iter()
            .filter(|c| !fixed.contains(c))
            .collect();
        let (m, mut report) = em_session(&patterns, model, &estimated, opts);
        report.rule = rule.name.clone();
        for (c, mv) in m {
            let e = sums.entry(c).or_insert_with(|| (vec![0.0; mv.len()], 0.0));
            e.0.iter_mut().zip(&mv).for_each(|(s, x)| *s += x);
            e.1 += 1.0;
        }
        sessions.push(report);
    }
    for p in &mut model.comparisons {
        if let Some((s, n)) = sums.get(&p.comparison) {
            for (level, sum) in p.levels.iter_mut().zip(s) {
                level.m = (sum / n).max(1e-6);
            }
        }
    }
    sessions
}

/// The prior: expected matches among the candidates over all possible pairs, iterated to a
/// fixed point (the expectation depends on the prior), summed over the keys of `pairs` in their
/// order. Returns (prior, expected matches).
fn estimate_prior(
    pairs: impl Iterator<Item = Weighted>,
    scorer: &Scorer,
    prior_before: f64,
    all_pairs: f64,
) -> (f64, f64) {
    let log_prior = log2_odds(prior_before);
    // Each key's evidence and weight.
    let evidence: Vec<(f64, f64)> = pairs
        .map(|p| {
            (
                scorer.weigh_with(&p.names, &p.outcome).0 - log_prior,
                p.weight,
            )
        })
        .collect();
    let mut prior = prior_before;
    let mut expected = 0.0;
    for _ in 0..50 {
        crate::interrupt::check();
        let lp = log2_odds(prior);
        expected = 0.0;
        for (e, weight) in &evidence {
            expected += weight / (1.0 + (-(lp + e)).exp2());
        }
        let next = (expected / all_pairs).clamp(1e-12, 0.5);
        let done = ((next - prior) / prior).abs() < 1e-6;
        prior = next;
        if done {
            break;
        }
    }
    (prior, expected)
}

/// u among non-matches from u among random pairs, which hold the matches too:
/// (u_sampled - prior * m) / (1 - prior), at least a hundredth of the sampled value, then scaled
/// to sum to 1 again. Without the scaling the floors add mass, and where a small or unusual
/// source makes the prior large (all first names distinct, a few hundred records) a level's u
/// went past 1, a model score_pairs refused (issue 23).
fn corrected_u(sampled: &[f64], m: &[f64], prior: f64) -> Vec<f64> {
    let u: Vec<f64> = sampled
        .iter()
        .zip(m)
        .map(|(u, m)| ((u - prior * m) / (1.0 - prior)).max(u * 0.01).max(1e-12))
        .collect();
    let sum: f64 = u.iter().sum();
    u.iter().map(|x| (x / sum).clamp(1e-12, 1.0)).collect()
}

/// The comparisons whose trained m or u is not a probability in (0, 1] (which `Model::validate`
/// and so `score_pairs` refuse) go back to the values they had before training, with a note
/// saying so for the report. A guard: `corrected_u` and the floors of EM should leave nothing
/// to catch.
fn keep_untrainable(model: &mut Model, before: &Model) -> Vec<String> {
    let valid = |x: f64| x > 0.0 && x <= 1.0;
    let mut notes = Vec::new();
    for p in &mut model.comparisons {
        let Some(bad) = p.levels.iter().find(|l| !valid(l.m) || !valid(l.u)) else {
            continue;
        };
        let Some(old) = before.params(p.comparison) else {
            continue;
        };
        notes.push(format!(
            "{}: level {} came out as m {}, u {} (too few or too uniform values to estimate it); kept the model's values",
            p.comparison.name(),
            bad.name,
            bad.m,
            bad.u
        ));
        p.levels.clone_from(&old.levels);
    }
    notes
}

/// A training under way: the model as it was (see `keep_untrainable`) and the step times.
pub struct Training {
    before: Model,
    watch: Stopwatch,
}

impl Training {
    /// Starts training `model`: the shares measured at the end are unset meanwhile (the prior
    /// is estimated on plain weights).
    pub fn start(model: &mut Model) -> Self {
        let before = model.clone();
        model.namesake_share = None;
        model.similar_name_share = None;
        Self {
            before,
            watch: Stopwatch::default(),
        }
    }

    /// Ends the step named `step` (see `Stopwatch::mark`).
    pub fn mark(&mut self, step: &'static str) {
        self.watch.mark(step);
    }
}

/// The figures EM and the household shares need of the compared candidates (all, or the
/// sample), each pair counted with its weight.
#[derive(Debug, Default, PartialEq)]
pub struct Tally {
    /// Comparison vectors counted per distinct (pattern, rules), in order.
    pub patterns: BTreeMap<(Pattern, u32), f64>,
    at_one_address: f64,
    living_together: f64,
    /// Per kind of namesakes: pairs with birth dates, and of those the pairs of two people.
    namesakes_dated: [f64; Namesakes::ALL.len()],
    namesakes_two: [f64; Namesakes::ALL.len()],
}

impl Tally {
    /// The tally of `sample`, summed over its keys in order.
    #[cfg(test)]
    pub fn of(sample: &Sample) -> Self {
        Self::of_weighted(weighted(&sample.pairs.sorted(), &sample.chances))
    }

    fn of_weighted(pairs: impl Iterator<Item = Weighted>) -> Self {
        let mut tally = Tally::default();
        for p in pairs {
            tally.add(&p.outcome, p.rules, p.weight);
        }
        tally
    }

    fn add(&mut self, o: &Outcome, rules: u32, w: f64) {
        let first = o.level(Comparison::FirstName);
        let birth = o.level(Comparison::BirthDate);
        if o.level(Comparison::Address) == Some(0) && first.is_some() && birth.is_some() {
            self.at_one_address += w;
            if first == Some(Comparison::FirstName.else_level())
                && birth == Some(Comparison::BirthDate.else_level())
            {
                self.living_together += w;
            }
        }
        if let (Some(b), Some(kind)) = (birth, o.namesakes_at_one_home(true)) {
            self.namesakes_dated[kind.index()] += w;
            if b == Comparison::BirthDate.else_level() {
                self.namesakes_two[kind.index()] += w;
            }
        }
        *self.patterns.entry((o.levels, rules)).or_default() += w;
    }
}

/// What the whole set of candidates and records count, beside the compared pairs.
pub struct Counts {
    pub records: usize,
    pub candidate_pairs: usize,
    pub u_sample_pairs: usize,
    /// Which path ran (see `TrainReport::streamed`).
    pub streamed: bool,
}

/// m by EM per blocking rule and the prior from the compared pairs, u (estimated before)
/// corrected for the matches among random pairs, then the household and namesake shares: the
/// end of every training, whether the candidates were held at once, streamed or compared on
/// Citus workers. Every sum runs over the keys of `sample` in their order: the same sample gives
/// the same model to the last bit.
pub fn fit(
    mut training: Training,
    model: &mut Model,
    ctx: &Context,
    source_ids: &HashMap<String, i32>,
    sample: Sample,
    counts: Counts,
    opts: &TrainOptions,
) -> TrainReport {
    let em_sample_pairs = sample.pairs.pairs() as usize;
    let Sample { pairs, chances } = sample;
    let keys = pairs.into_sorted();
    let tally = Tally::of_weighted(weighted(&keys, &chances));
    let sampled_u: Vec<Vec<f64>> = model
        .comparisons
        .iter()
        .map(|p| p.levels.iter().map(|l| l.u).collect())
        .collect();
    let rules = model.blocking_rules.clone();
    // Too few pairs at one address to tell: keep the discount (the safe side for CRM data).
    model.household_share =
        (tally.at_one_address >= 20.0).then(|| tally.living_together / tally.at_one_address);
    let n = counts.records as f64;
    let all_pairs = (n * (n - 1.0) / 2.0).max(1.0);
    let mut sessions = Vec::new();
    let mut expected = 0.0;
    let mut prior = model.prior;
    // Two passes: random pairs include the matches themselves (a customer's two records share
    // an e-mail), so after the first pass u is corrected by the estimated matches (u = (u_sampled
    // - prior * m) / (1 - prior)) and m and the prior are estimated again.
    for pass in 0..2 {
        sessions = em_sessions(&tally.patterns, &rules, model, opts);
        let scorer = Scorer::new(model, ctx, source_ids);
        (prior, expected) =
            estimate_prior(weighted(&keys, &chances), &scorer, model.prior, all_pairs);
        model.prior = prior;
        if pass == 0 {
            for (p, raw) in model.comparisons.iter_mut().zip(&sampled_u) {
                let m: Vec<f64> = p.levels.iter().map(|l| l.m).collect();
                for (level, u) in p.levels.iter_mut().zip(corrected_u(raw, &m, prior)) {
                    level.u = u;
                }
            }
        }
    }
    training.mark("em_and_prior");
    // Smoothed so that no namesake among many pairs (or all) still leaves finite odds.
    let share = |kind: Namesakes| {
        let (dated, two) = (
            tally.namesakes_dated[kind.index()],
            tally.namesakes_two[kind.index()],
        );
        (dated >= 20.0).then(|| (two + 0.5) / (dated + 1.0))
    };
    model.namesake_share = share(Namesakes::SameName);
    model.similar_name_share = share(Namesakes::AlikeNames);
    let kept_untrained = keep_untrainable(model, &training.before);
    TrainReport {
        records: counts.records,
        candidate_pairs: counts.candidate_pairs,
        em_sample_pairs,
        u_sample_pairs: counts.u_sample_pairs,
        converged: sessions.iter().all(|s| s.converged),
        sessions,
        expected_matches: expected,
        prior,
        household_share: model.household_share,
        namesake_share: model.namesake_share,
        similar_name_share: model.similar_name_share,
        kept_untrained,
        streamed: counts.streamed,
        seconds: training.watch.into_steps(),
    }
}

/// Trains `model` in place (u, m, prior) on all records and candidates held at once, and
/// reports each EM session.
pub fn train(
    records: &[MatchRecord],
    ctx: &Context,
    candidates: &[Candidate],
    model: &mut Model,
    source_ids: &HashMap<String, i32>,
    opts: &TrainOptions,
) -> TrainReport {
    let mut training = Training::start(model);
    let u_sample_pairs = estimate_u(records, ctx, model, opts);
    training.mark("u");
    let sample = compared_sample(records, ctx, candidates, opts);
    training.mark("compare");
    fit(
        training,
        model,
        ctx,
        source_ids,
        sample,
        Counts {
            records: records.len(),
            candidate_pairs: candidates.len(),
            u_sample_pairs,
            streamed: false,
        },
        opts,
    )
}

/// The EM sample of `candidates` (see [`em_sample`]), compared (on `opts.workers`) and counted.
pub fn compared_sample(
    records: &[MatchRecord],
    ctx: &Context,
    candidates: &[Candidate],
    opts: &TrainOptions,
) -> Sample {
    let (picked, chances) = em_sample(records, candidates, opts.em_pairs, opts.seed);
    // Copied only when it is a sample.
    let candidates: Cow<[Candidate]> = if picked.len() == candidates.len() {
        Cow::Borrowed(candidates)
    } else {
        Cow::Owned(picked.iter().map(|&i| candidates[i as usize]).collect())
    };
    let candidates = &candidates[..];
    let outcomes: Vec<Outcome> = parallel::map(candidates, opts.workers, |c| {
        compare(&records[c.a as usize], &records[c.b as usize], ctx)
    });
    let mut pairs = PairCounts::default();
    for (i, (c, o)) in candidates.iter().zip(&outcomes).enumerate() {
        crate::interrupt::check_every(i, 1 << 16);
        pairs.add(
            o,
            c.rules,
            &NameFrequencies::of(ctx, &records[c.a as usize]),
        );
    }
    Sample { pairs, chances }
}

#[cfg(test)]
mod tests {
    use super::super::blocking::candidates;
    use super::*;

    /// The shipped model trained on `records` (candidates blocked on `threads`), with its
    /// report, context and candidates.
    fn trained(
        records: &[MatchRecord],
        threads: usize,
    ) -> (Model, TrainReport, Context, Vec<Candidate>) {
        let ctx = Context::build(records);
        let mut model = Model::default_german();
        let (cands, _) = candidates(records, &model.blocking_rules, 1_000_000, threads).unwrap();
        let report = train(
            records,
            &ctx,
            &cands,
            &mut model,
            &HashMap::new(),
            &TrainOptions::default(),
        );
        (model, report, ctx, cands)
    }

    /// Both models decide alike (match or not) on 99.5% of the candidates.
    fn assert_nearly_same_decisions(
        records: &[MatchRecord],
        ctx: &Context,
        cands: &[Candidate],
        x: &Model,
        y: &Model,
    ) {
        let (sx, sy) = (
            Scorer::new(x, ctx, &HashMap::new()),
            Scorer::new(y, ctx, &HashMap::new()),
        );
        let agree = cands
            .iter()
            .filter(|c| {
                let (a, b) = (&records[c.a as usize], &records[c.b as usize]);
                sx.score(a, b).is_match(x) == sy.score(a, b).is_match(y)
            })
            .count();
        assert!(
            agree * 1000 >= cands.len() * 995,
            "{agree} of {}",
            cands.len()
        );
    }

    /// Fathers with two records each, and in a quarter of the homes a son of the same name:
    /// of the pairs of one name at one address with birth dates, the share of two people.
    #[test]
    fn namesake_share_is_measured() {
        let mut records = Vec::new();
        let mut add = |last: &str, house: usize, birth: &str| {
            let id = records.len() as i64;
            records.push(
                MatchRecord {
                    id,
                    first_name: Some("hans".into()),
                    last_name: Some(last.into()),
                    birth_date: Some(birth.into()),
                    // Each home on its own street: neighbours are not one home.
                    street: Some(format!("{last}weg")),
                    house_number: Some(house.to_string()),
                    postcode: Some("10115".into()),
                    city: Some("berlin".into()),
                    ..Default::default()
                }
                .prepare(),
            );
        };
        let syllables = ["ber", "cla", "die", "fra", "gis", "hor", "kur", "lo"];
        for home in 0..40 {
            let last = format!("{}{}mann", syllables[home % 8], syllables[home / 8]);
            add(&last, home + 1, "1960-03-04");
            add(&last, home + 1, "1960-03-04");
            if home % 4 == 0 {
                add(&last, home + 1, "1990-07-08");
            }
        }
        let (model, report, _, _) = trained(&records, 1);
        // 40 pairs of one father, 20 of a father and his son; smoothed by a half.
        let expected = (20.0 + 0.5) / (60.0 + 1.0);
        assert!(
            (model.namesake_share.unwrap() - expected).abs() < 1e-9,
            "{:?}",
            model.namesake_share
        );
        assert_eq!(report.namesake_share, model.namesake_share);
        // No pairs of alike first names: too few to measure.
        assert_eq!(model.similar_name_share, None);
    }

    /// Synthetic people with typo'd duplicates, and the person of each record.
    fn people() -> (Vec<MatchRecord>, Vec<usize>) {
        let syllables = [
            "an", "ber", "cla", "die", "er", "fra", "gis", "hor", "in", "jan", "kur", "lo",
        ];
        let firsts: Vec<String> = syllables
            .iter()
            .flat_map(|a| syllables.iter().map(move |b| format!("{a}{b}a")))
            .collect();
        let lasts: Vec<String> = syllables
            .iter()
            .flat_map(|a| syllables.iter().map(move |b| format!("{b}{a}müller")))
            .collect();
        let mut rng = Rng(7);
        let mut records = Vec::new();
        let mut truth = Vec::new();
        for person in 0..400usize {
            let first = &firsts[rng.below(firsts.len())];
            let last = &lasts[rng.below(lasts.len())];
            let birth = format!(
                "19{:02}-{:02}-{:02}",
                40 + rng.below(60),
                1 + rng.below(12),
                1 + rng.below(28)
            );
            let email = format!("{first}.{last}{person}@web.de");
            let copies = 1 + rng.below(3);
            for k in 0..copies {
                let mut last_v = last.to_string();
                if k == 1 {
                    last_v = last_v.replace('ü', "ue");
                }
                records.push(
                    MatchRecord {
                        id: records.len() as i64,
                        first_name: Some(first.to_string()),
                        last_name: Some(last_v),
                        birth_date: (rng.below(3) > 0).then(|| birth.clone()),
                        email: (rng.below(2) > 0).then(|| email.clone()),
                        email_key: Some(email.clone()),
                        postcode: Some(format!("{:05}", 10000 + person % 50)),
                        ..Default::default()
                    }
                    .prepare(),
                );
                truth.push(person);
            }
        }
        (records, truth)
    }

    /// Synthetic people with typo'd duplicates: EM must find high m on exact levels and a prior
    /// near the true share of matching pairs, without labels.
    #[test]
    fn em_recovers_duplicates_without_labels() {
        let (records, truth) = people();
        let (model, report, ctx, cands) = trained(&records, 2);
        assert!(report.converged, "{report:?}");
        let first = model.params(Comparison::FirstName).unwrap();
        assert!(first.levels[0].m > 0.9, "{first:?}");
        let true_pairs: usize = {
            let mut per: HashMap<usize, usize> = HashMap::new();
            truth.iter().for_each(|p| *per.entry(*p).or_default() += 1);
            per.values().map(|n| n * (n - 1) / 2).sum()
        };
        let ratio = report.expected_matches / true_pairs as f64;
        assert!(
            (0.8..1.25).contains(&ratio),
            "expected {} vs true {true_pairs}",
            report.expected_matches
        );
        // And the trained model separates them.
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for c in &cands {
            let same = truth[c.a as usize] == truth[c.b as usize];
            let hit = scorer
                .score(&records[c.a as usize], &records[c.b as usize])
                .is_match(&model);
            match (same, hit) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fn_ += 1,
                _ => {}
            }
        }
        assert!(fp == 0 && fn_ * 100 <= tp, "tp {tp} fp {fp} fn {fn_}");

        // Trained on about a third of the candidates, the model is nearly the same.
        let mut sampled = Model::default_german();
        let opts = TrainOptions {
            em_pairs: cands.len() / 3,
            ..TrainOptions::default()
        };
        let sampled_report = train(&records, &ctx, &cands, &mut sampled, &HashMap::new(), &opts);
        assert_eq!(sampled_report.candidate_pairs, cands.len());
        assert!(
            sampled_report.em_sample_pairs < cands.len() / 2,
            "{} of {}",
            sampled_report.em_sample_pairs,
            cands.len()
        );
        // Some 300 matches among 600 candidates, a third drawn: the estimate's standard
        // deviation is about 8% (this draw: 0.898).
        let ratio = sampled_report.expected_matches / report.expected_matches;
        assert!((0.8..1.2).contains(&ratio), "{ratio}");
        let m_first = sampled.params(Comparison::FirstName).unwrap().levels[0].m;
        assert!((m_first - first.levels[0].m).abs() < 0.05, "{m_first}");
        assert_nearly_same_decisions(&records, &ctx, &cands, &sampled, &model);
    }

    /// Issue 23: a source whose first names are all distinct (a sign-up form's unique handles,
    /// generated test data) gave a model with a u above 1 (the correction for matches among
    /// random pairs, with the large prior of a small source), which score_pairs refused. Every
    /// mix of the other fields, at a few sizes and duplicate counts.
    #[test]
    fn all_distinct_first_names_still_give_a_valid_model() {
        let mut trainings = 0;
        // Small sources in every mix (fast), and the mix seen at 300 records.
        let mixes = (0..32u32).flat_map(|f| [(4i64, 2i64, f), (10, 3, f)]);
        for (n, copies, fields) in mixes.chain([(300, 2, 0b01011)]) {
            {
                {
                    let has = |bit: u32| fields & (1 << bit) != 0;
                    let records: Vec<MatchRecord> = (0..n)
                        .map(|i| {
                            let p = i / copies;
                            let email = format!("p{p}@example.de");
                            MatchRecord {
                                id: i,
                                first_name: Some(format!("vorname{i}")),
                                last_name: has(0).then(|| format!("nachname{}", p % 7)),
                                email: has(1).then(|| email.clone()),
                                email_key: has(1).then_some(email),
                                postcode: has(2).then(|| format!("{:05}", 10000 + p % 3)),
                                birth_date: has(3).then(|| format!("1970-01-{:02}", 1 + p % 28)),
                                phones: if has(4) {
                                    vec![format!("+4930{p:07}")]
                                } else {
                                    vec![]
                                },
                                ..Default::default()
                            }
                            .prepare()
                        })
                        .collect();
                    let (model, report, _, _) = trained(&records, 1);
                    assert_eq!(
                        model.validate(),
                        Ok(()),
                        "{n} records, {copies} copies, fields {fields:05b}: {:?}",
                        model.comparisons
                    );
                    assert!(report.kept_untrained.is_empty(), "{report:?}");
                    trainings += 1;
                }
            }
        }
        assert_eq!(trainings, 65);
    }

    #[test]
    fn corrected_u_stays_a_distribution() {
        // 300 records, 2 copies each: the prior is about 1/300 and the else level of e-mails,
        // seen in nearly every random pair, came out as 1.0037.
        let sampled = [0.001, 0.0001, 0.0001, 0.9988];
        let m = [0.55, 1e-6, 1e-6, 0.45];
        let plain = (sampled[3] - 0.0143 * m[3]) / (1.0 - 0.0143);
        assert!(plain > 1.0, "{plain}");
        let u = corrected_u(&sampled, &m, 0.0143);
        assert!(u.iter().all(|&x| x > 0.0 && x <= 1.0), "{u:?}");
        assert!((u.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // With a negligible prior it is the sampled u.
        let same = corrected_u(&sampled, &m, 1e-12);
        assert!(same.iter().zip(&sampled).all(|(a, b)| (a - b).abs() < 1e-9));
    }

    #[test]
    fn untrainable_comparisons_keep_their_values_and_say_so() {
        let before = Model::default_german();
        let mut model = before.clone();
        model.comparisons[0].levels[2].u = 1.5;
        model.comparisons[3].levels[0].m = f64::NAN;
        let notes = keep_untrainable(&mut model, &before);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("first_name: level "), "{notes:?}");
        assert_eq!(model, before);
        assert_eq!(model.validate(), Ok(()));
    }

    #[test]
    fn a_cancel_stops_training_in_every_phase() {
        use crate::interrupt::testing::{cancelled, checks_in};
        let records: Vec<MatchRecord> = (0..1000)
            .map(|i| {
                MatchRecord {
                    id: i,
                    first_name: Some(["anna", "hans", "eva", "paul"][i as usize % 4].into()),
                    last_name: Some(format!("müller{}", i % 300)),
                    postcode: Some(format!("{:05}", 10000 + i % 40)),
                    ..Default::default()
                }
                .prepare()
            })
            .collect();
        let ctx = Context::build(&records);
        let model = Model::default_german();
        let (cands, _) = candidates(&records, &model.blocking_rules, 1_000_000, 1).unwrap();
        let run = || {
            let mut m = model.clone();
            let opts = TrainOptions {
                sample_pairs: 20_000,
                ..TrainOptions::default()
            };
            train(&records, &ctx, &cands, &mut m, &HashMap::new(), &opts)
        };
        let (_, checks) = checks_in(run);
        // u, EM iterations, the prior's passes (one check each: they sum over the distinct keys
        // of the compared pairs): checks all along, up to the last ones.
        assert!(checks > 30, "{checks}");
        for at in [checks / 2, checks - 1] {
            assert!(cancelled(at, run), "not stopped at check {at} of {checks}");
        }
    }

    #[test]
    fn em_sample_weights_estimate_every_rule_combination() {
        // 1M pairs of rule 1, 1,500 of rules 1+2, 300 of rule 3; each combination keeps at
        // least 2,000 (a fiftieth of 100,000).
        let records: Vec<MatchRecord> = (0..1_002_000)
            .map(|i| MatchRecord {
                id: i * 7 + 3,
                ..Default::default()
            })
            .collect();
        let mut cands = Vec::new();
        for (rules, n) in [(1u32, 1_000_000u32), (3, 1_500), (4, 300)] {
            let offset = cands.len() as u32;
            cands.extend((offset..offset + n).map(|i| Candidate {
                a: i,
                b: i + 1,
                rules,
            }));
        }
        let (all, ones) = em_sample(&records, &cands, 0, 1);
        assert_eq!(all.len(), cands.len());
        assert!(ones.takes_all() && ones.chance(1) == 1.0);
        let (picked, chances) = em_sample(&records, &cands, 100_000, 1);
        let weights: Vec<f64> = picked
            .iter()
            .map(|&i| 1.0 / chances.chance(cands[i as usize].rules))
            .collect();
        assert!(
            picked.len() > 90_000 && picked.len() < 130_000,
            "{}",
            picked.len()
        );
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        let mut estimate: HashMap<u32, f64> = HashMap::new();
        for (&i, w) in picked.iter().zip(&weights) {
            *estimate.entry(cands[i as usize].rules).or_default() += w;
        }
        assert!(
            (estimate[&1] / 1_000_000.0 - 1.0).abs() < 0.01,
            "{estimate:?}"
        );
        // Small combinations are taken whole.
        assert_eq!(estimate[&3], 1_500.0);
        assert_eq!(estimate[&4], 300.0);
        // The same draw every time, and in any order of the candidates: by the pair's ids.
        assert_eq!(em_sample(&records, &cands, 100_000, 1).0, picked);
        let reversed: Vec<Candidate> = cands.iter().rev().copied().collect();
        let mut again: Vec<u32> = em_sample(&records, &reversed, 100_000, 1)
            .0
            .iter()
            .map(|&i| (cands.len() - 1) as u32 - i)
            .collect();
        again.sort_unstable();
        assert_eq!(again, picked);
    }

    /// What a streamed training does with `records`, without the database: the exact-agreement
    /// u from value counts grouped by hash (as the SQL layer groups them), u's random pairs from
    /// `u_records`, and the candidates (`cands`, with the rules' pair counts of `stats`) passing
    /// by in chunks, in reverse order, drawn into the EM sample.
    fn train_as_streamed(
        records: &[MatchRecord],
        u_records: &[MatchRecord],
        ctx: &Context,
        cands: &[Candidate],
        opts: &TrainOptions,
    ) -> (Model, TrainReport, Sample, usize) {
        let mut model = Model::default_german();
        let training = Training::start(&mut model);
        let exact = COMPARISONS.map(|c| {
            let mut counts: HashMap<i64, u64> = HashMap::new();
            for r in records {
                if let Some(v) = exact_value(c, r) {
                    *counts.entry(value_hash(&v)).or_default() += 1;
                }
            }
            let agree: u64 = counts.values().map(|n| n * (n - 1)).sum();
            exact_u_of_counts(agree as f64, counts.values().sum::<u64>() as f64)
        });
        assert_eq!(exact, exact_us(records));
        let u_pairs = estimate_u_with(u_records, ctx, &mut model, opts, &exact);
        let mut sample = StreamedSample::new(opts.em_pairs, opts.seed);
        for chunk in cands.rchunks(97) {
            sample.add(records, chunk, ctx, opts.workers);
        }
        // The sample as the training finished it, and how many pairs were compared, for the
        // tests to look into (the training gives its own up).
        let compared = sample.compared;
        let finished = sample.clone().finish();
        let report = train_streamed(
            training,
            &mut model,
            ctx,
            &HashMap::new(),
            sample,
            records.len(),
            u_pairs,
            opts,
        );
        (model, report, finished, compared)
    }

    /// Without sampling (every candidate fits `em_pairs`, u from every record), and with a
    /// sample, the streamed training counts exactly the pairs of the held one and gives its
    /// model to the last bit (both sum over the counted keys in one order).
    #[test]
    fn streamed_training_without_sampling_is_the_held_training() {
        let (records, _) = people();
        let (held, held_report, ctx, cands) = trained(&records, 2);
        let opts = TrainOptions::default();
        let (streamed, report, streamed_sample, _) =
            train_as_streamed(&records, &records, &ctx, &cands, &opts);
        assert!(report.streamed && !held_report.streamed);
        assert_eq!(report.candidate_pairs, held_report.candidate_pairs);
        assert_eq!(report.em_sample_pairs, cands.len());
        assert_eq!(report.u_sample_pairs, held_report.u_sample_pairs);
        assert!(streamed_sample.chances.takes_all());
        assert_eq!(streamed_sample.pairs.pairs() as usize, cands.len());
        // The EM pattern counts (and the household tallies) are those of the held path exactly.
        let held_sample = compared_sample(&records, &ctx, &cands, &opts);
        assert_eq!(streamed_sample, held_sample);
        let held_tally = Tally::of(&held_sample);
        assert!(
            held_tally.patterns.len() > 20,
            "{}",
            held_tally.patterns.len()
        );
        assert_eq!(Tally::of(&streamed_sample), held_tally);
        assert_eq!(streamed, held);
        assert_eq!(
            held_report.expected_matches.to_bits(),
            report.expected_matches.to_bits()
        );
        // The same with a third of the candidates drawn: the same sample, the same model.
        let third = TrainOptions {
            em_pairs: cands.len() / 3,
            ..TrainOptions::default()
        };
        let mut held_third = Model::default_german();
        let held_third_report = train(
            &records,
            &ctx,
            &cands,
            &mut held_third,
            &HashMap::new(),
            &third,
        );
        let (streamed_third, streamed_third_report, _, _) =
            train_as_streamed(&records, &records, &ctx, &cands, &third);
        assert!(held_third_report.em_sample_pairs < cands.len() / 2);
        assert_eq!(
            held_third_report.em_sample_pairs,
            streamed_third_report.em_sample_pairs
        );
        assert_eq!(streamed_third, held_third);
        assert_ne!(held_third, held);
    }

    /// The model does not depend on the order the compared pairs were counted in, nor on the
    /// run (no HashMap order reaches a sum): trained twice, from counts merged in two orders,
    /// the same bits.
    #[test]
    fn training_is_the_same_to_the_last_bit_whatever_the_order_of_the_counts() {
        let (records, _) = people();
        let (_, _, ctx, cands) = trained(&records, 1);
        let opts = TrainOptions::default();
        let whole = compared_sample(&records, &ctx, &cands, &opts);
        let mut merged = Sample {
            chances: whole.chances.clone(),
            ..Default::default()
        };
        for part in cands.rchunks(13) {
            let s = compared_sample(&records, &ctx, part, &opts);
            merged.pairs.merge(s.pairs);
        }
        assert_eq!(merged, whole);
        let fitted = |sample: &Sample| {
            let mut model = Model::default_german();
            let training = Training::start(&mut model);
            estimate_u(&records, &ctx, &mut model, &opts);
            let report = fit(
                training,
                &mut model,
                &ctx,
                &HashMap::new(),
                sample.clone(),
                Counts {
                    records: records.len(),
                    candidate_pairs: cands.len(),
                    u_sample_pairs: 0,
                    streamed: false,
                },
                &opts,
            );
            (
                serde_json::to_string(&model).unwrap(),
                report.expected_matches.to_bits(),
            )
        };
        let first = fitted(&whole);
        for _ in 0..3 {
            assert_eq!(fitted(&merged), first);
        }
    }

    /// A key keeps what the weight reads: an outcome decodes to itself, and a pair weighs the
    /// same from its key's name frequencies as from its own.
    #[test]
    fn a_pair_key_keeps_the_outcome_and_the_weight() {
        let (records, _) = people();
        let (model, _, ctx, cands) = trained(&records, 2);
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let mut keys = std::collections::HashSet::new();
        for c in &cands {
            let (a, b) = (&records[c.a as usize], &records[c.b as usize]);
            let o = compare(a, b, &ctx);
            let names = NameFrequencies::of(&ctx, a);
            let key = PairKey::of(&o, c.rules, &names);
            assert_eq!(key.outcome_of(), o);
            assert_eq!(
                scorer.weigh_with(&key.names_of(), &o).0.to_bits(),
                scorer.weigh(a, &o).0.to_bits()
            );
            keys.insert(key);
        }
        // Fewer keys than pairs: the names only where they weigh.
        assert!(
            keys.len() < cands.len() && keys.len() > 20,
            "{}",
            keys.len()
        );
        let all = Outcome {
            levels: [Some(0), None, Some(14), Some(1), None, Some(7), Some(2)],
            swapped: true,
            shared_email: false,
            shared_phone: true,
            shared_landline: true,
            shared_family_mailbox: false,
            street_missing: true,
            generation_conflict: true,
            other_sex_forms: true,
        };
        assert_eq!(decode_outcome(encode_outcome(&all)), all);
    }

    /// Sampled, the streamed training gives nearly the held model: with a third of the
    /// candidates for EM (as the held path's own sample test), with u's pairs from half the
    /// records, and both: m of exact first names within 0.05, the same decision on 99.5% of the
    /// candidates, the expected matches within 20% where EM samples (some 300 matches among
    /// 600 candidates, a third drawn: the estimate's standard deviation is about 8%) and 5%
    /// where only u does.
    #[test]
    fn sampled_streamed_training_is_near_the_held_training() {
        let (records, _) = people();
        let (held, held_report, ctx, cands) = trained(&records, 2);
        let half: Vec<MatchRecord> = records
            .iter()
            .filter(|r| Rng(r.id as u64 ^ 99).next().is_multiple_of(2))
            .cloned()
            .collect();
        assert!(half.len() > records.len() / 3, "{}", half.len());
        let third = cands.len() / 3;
        for (em_pairs, u_records, tolerance) in [
            (third, &records, 0.2),
            (0, &half, 0.05),
            (third, &half, 0.2),
        ] {
            let opts = TrainOptions {
                em_pairs,
                ..TrainOptions::default()
            };
            let (streamed, report, _, compared) =
                train_as_streamed(&records, u_records, &ctx, &cands, &opts);
            assert_eq!(report.candidate_pairs, cands.len());
            if em_pairs > 0 {
                assert!(
                    report.em_sample_pairs < cands.len() / 2
                        && report.em_sample_pairs > cands.len() / 5,
                    "{} of {}",
                    report.em_sample_pairs,
                    cands.len()
                );
                // Drawn at the chances of the candidates seen so far, thinned as more came.
                assert!(compared > report.em_sample_pairs, "{compared}");
            }
            let ratio = report.expected_matches / held_report.expected_matches;
            assert!(
                (ratio - 1.0).abs() < tolerance,
                "{em_pairs} {}: {ratio}",
                u_records.len()
            );
            let m = |model: &Model| model.params(Comparison::FirstName).unwrap().levels[0].m;
            assert!((m(&streamed) - m(&held)).abs() < 0.05, "{}", m(&streamed));
            assert_nearly_same_decisions(&records, &ctx, &cands, &streamed, &held);
        }
    }

    /// A pair's weight from the name frequencies kept for it is its weight from the record.
    #[test]
    fn weigh_with_name_frequencies_is_weigh() {
        let (records, _) = people();
        let (model, _, ctx, cands) = trained(&records, 2);
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let mut adjusted = 0;
        for c in &cands {
            let (a, b) = (&records[c.a as usize], &records[c.b as usize]);
            let o = compare(a, b, &ctx);
            let names = NameFrequencies::of(&ctx, a);
            assert_eq!(scorer.weigh(a, &o), scorer.weigh_with(&names, &o));
            adjusted += usize::from(o.level(Comparison::FirstName) == Some(0));
        }
        assert!(adjusted > 100, "{adjusted}");
    }

    /// Counts kept as a list summed when it fills are the counts of a hash map, whatever the
    /// order and repetition of the keys, and the list stays near the distinct keys in size.
    #[test]
    fn pair_counts_are_those_of_a_map_and_stay_near_the_distinct_keys() {
        let mut draw = crate::test_draws(27);
        let key = |x: u64| PairKey {
            outcome: x % 5_003,
            rules: (x % 7) as u32,
            names: [x % 3, 0],
        };
        let mut counts = PairCounts::default();
        let mut map: HashMap<PairKey, u64> = HashMap::new();
        let mut most = 0;
        for i in 0..400_000 {
            let x = draw(u64::MAX);
            let (k, n) = (key(x), 1 + (x >> 40) % 3);
            counts.add_key(k, n);
            *map.entry(k).or_default() += n;
            most = most.max(counts.entries.capacity());
            if i == 1_000 {
                // Equal mid-way too, entries not yet summed.
                let mut expected: Vec<(PairKey, u64)> = map.clone().into_iter().collect();
                expected.sort_unstable();
                assert_eq!(counts.sorted(), expected);
            }
        }
        let mut expected: Vec<(PairKey, u64)> = map.into_iter().collect();
        expected.sort_unstable();
        assert!(expected.len() > 30_000, "{}", expected.len());
        assert_eq!(counts.pairs(), expected.iter().map(|(_, n)| n).sum::<u64>());
        // 400,000 additions of some 100,000 keys: never more room than four times the keys.
        assert!(most <= 4 * expected.len(), "{most} for {}", expected.len());
        let mut merged = PairCounts::from_entries(expected[..10].to_vec());
        merged.merge(PairCounts::from_entries(expected[10..].to_vec()));
        assert_eq!(merged, counts);
        assert_eq!(counts.into_sorted(), expected);
        assert_eq!(PairCounts::default().into_sorted(), vec![]);
    }

    /// However many small rule combinations there are, their raised shares add at most half
    /// the sample asked for: a sample sized to its memory stays within it.
    #[test]
    fn raised_shares_of_many_rule_combinations_add_at_most_half_the_sample() {
        for combinations in [1u32, 10, 25, 26, 80, 400] {
            let mut chances = Chances::new(100_000);
            chances.count(0, 10_000_000);
            for rules in 1..combinations {
                chances.count(rules, 5_000);
            }
            let expected = chances.expected();
            assert!(expected <= 150_000.0, "{combinations}: {expected}");
            // Up to 25 combinations each small one keeps a fiftieth (2,000 of its 5,000).
            let small = chances.chance(1) * 5_000.0;
            if (2..=25).contains(&combinations) {
                assert!((small - 2_000.0).abs() < 1e-6, "{combinations}: {small}");
            } else if combinations > 25 {
                let share = 50_000.0 / combinations as f64;
                assert!((small - share).abs() < 1e-6, "{combinations}: {small}");
            }
        }
    }

    #[test]
    fn streamed_sample_is_independent_of_order_and_estimates_every_rule_combination() {
        // 100,000 pairs of rule 1, 150 of rules 1+2, 30 of rule 3; each combination keeps at
        // least 200 (a fiftieth of 10,000) or all its pairs.
        let records: Vec<MatchRecord> = (0..1_000)
            .map(|i| MatchRecord {
                id: i * 3 + 1,
                ..Default::default()
            })
            .collect();
        let mut cands = Vec::new();
        for (rules, n) in [(1u32, 100_000u32), (3, 150), (4, 30)] {
            let offset = cands.len() as u32;
            cands.extend((offset..offset + n).map(|i| Candidate {
                a: i / 500,
                b: 500 + i % 500,
                rules,
            }));
        }
        let ctx = Context::build(&[]);
        let workers = parallel::Workers::from(1);
        let sampled = |order: &dyn Fn(&[Candidate]) -> Vec<Candidate>| {
            let mut sample = StreamedSample::new(10_000, 1);
            for chunk in order(&cands).chunks(7_000) {
                sample.add(&records, chunk, &ctx, workers);
                // Bounded while it streams: the limit and at most one chunk drawn past it.
                assert!(sample.kept.len() <= 12_000 + StreamedSample::CHUNK);
            }
            assert_eq!(sample.candidates, cands.len());
            (sample.compared, sample.finish())
        };
        let (compared, forward) = sampled(&|c| c.to_vec());
        let (_, backward) = sampled(&|c| c.iter().rev().copied().collect());
        assert_eq!(forward, backward);
        let kept = forward.pairs.pairs() as usize;
        assert!((9_000..11_500).contains(&kept), "{kept}");
        assert!(compared > kept, "{compared}");
        let mut estimate: HashMap<u32, f64> = HashMap::new();
        for w in weighted(&forward.pairs.sorted(), &forward.chances) {
            *estimate.entry(w.rules).or_default() += w.weight;
        }
        assert!(
            (estimate[&1] / 100_000.0 - 1.0).abs() < 0.04,
            "{estimate:?}"
        );
        // Small combinations are taken whole.
        assert_eq!(estimate[&3], 150.0);
        assert_eq!(estimate[&4], 30.0);
        // With room for all, all are taken, weighing 1.
        let mut all = StreamedSample::new(cands.len(), 1);
        all.add(&records, &cands, &ctx, workers);
        let all = all.finish();
        assert!(all.chances.takes_all());
        assert_eq!(all.pairs.pairs() as usize, cands.len());
    }

    #[test]
    fn exact_u_from_value_counts() {
        // Values a,a,b: of 3*2 ordered pairs, 2 agree.
        assert!((exact_u(["a", "a", "b"].into_iter()).unwrap() - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(exact_u(["a"].into_iter()), None);
    }

    /// Names counted as they stream past: the frequencies of `Context::build` and the exact u
    /// of `exact_us`, to the last bit.
    #[test]
    fn streamed_value_counts_are_those_of_all_records() {
        let (records, _) = people();
        let (mut first, mut last) = (ValueCounts::default(), ValueCounts::default());
        for r in &records {
            if let Some(v) = &r.first_name {
                first.add(v);
            }
            if let Some(v) = &r.last_name {
                last.add(v);
            }
        }
        let exact = exact_us(&records);
        assert_eq!(first.exact_u(), exact[Comparison::FirstName.index()]);
        assert_eq!(last.exact_u(), exact[Comparison::LastName.index()]);
        let ctx = Context::build(&records);
        assert!(ctx.first_name_tf.len() > 50);
        assert_eq!(first.frequencies(), ctx.first_name_tf);
        assert_eq!(last.frequencies(), ctx.last_name_tf);
    }
}
