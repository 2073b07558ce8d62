//! Blocking: which record pairs are compared at all. A rule is a list of key parts; two records
//! are a candidate pair when they share a rule's key. Candidates are the union over the rules,
//! each pair once, with the set of rules that produced it. A block above a rule's size limit
//! (a junk value such as `test@test.de` or an empty string) is skipped and reported instead of
//! producing its square of pairs.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::comparison::Comparison;
use super::record::MatchRecord;
use super::stream::{block_pairs, valid_block, RuleFigures};
use crate::parallel::{self, Workers};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    EmailKey,
    Phone,
    FirstName,
    LastName,
    FirstNameTranslit,
    LastNameTranslit,
    FirstNamePhonetic,
    LastNamePhonetic,
    FirstInitial,
    /// The first letter of the last name (transliterated).
    LastInitial,
    /// The full names whose short form or variant the first name is (`johannes` for Hans,
    /// `crate::compare::nicknames`); none for a name the table does not hold.
    GivenNameGroup,
    NameSorted,
    NamePhoneticSorted,
    BirthDate,
    BirthYear,
    Postcode,
    City,
    Street,
    HouseNumber,
    ExternalId,
    CustomerNumber,
}

impl KeyPart {
    /// The values of this part for one record (several only for phones and given-name groups).
    fn values(self, r: &MatchRecord) -> Vec<&str> {
        let mut out = Vec::new();
        self.each_value(r, &mut |v| out.push(v));
        out
    }

    /// `f` of each of [`Self::values`], without collecting them (key hashes of every record).
    fn each_value<'r>(self, r: &'r MatchRecord, f: &mut impl FnMut(&'r str)) {
        fn one<'r>(v: &'r Option<String>, f: &mut impl FnMut(&'r str)) {
            if let Some(v) = v.as_deref() {
                f(v)
            }
        }
        match self {
            Self::EmailKey => one(&r.email_key, f),
            Self::Phone => r.phones.iter().for_each(|p| f(p)),
            Self::FirstName => one(&r.first_name, f),
            Self::LastName => one(&r.last_name, f),
            Self::FirstNameTranslit => one(&r.derived.first_translit, f),
            Self::LastNameTranslit => one(&r.derived.last_translit, f),
            Self::FirstNamePhonetic => one(&r.derived.first_phonetic, f),
            Self::LastNamePhonetic => one(&r.derived.last_phonetic, f),
            Self::FirstInitial => {
                if let Some(i) = r.derived.first_translit.as_deref().and_then(|s| s.get(..1)) {
                    f(i)
                }
            }
            Self::LastInitial => {
                if let Some(i) = r.derived.last_translit.as_deref().and_then(|s| s.get(..1)) {
                    f(i)
                }
            }
            Self::GivenNameGroup => {
                if let Some(first) = r.derived.first_translit.as_deref() {
                    for group in crate::compare::nicknames::name_groups(first) {
                        f(group)
                    }
                }
            }
            Self::NameSorted => one(&r.derived.name_sorted, f),
            Self::NamePhoneticSorted => one(&r.derived.name_phonetic_sorted, f),
            Self::BirthDate => one(&r.birth_date, f),
            Self::BirthYear => {
                if let Some(y) = r.birth_date.as_deref().and_then(|d| d.get(..4)) {
                    f(y)
                }
            }
            Self::Postcode => one(&r.postcode, f),
            Self::City => one(&r.city, f),
            Self::Street => one(&r.street, f),
            Self::HouseNumber => one(&r.house_number, f),
            Self::ExternalId => one(&r.external_id, f),
            Self::CustomerNumber => one(&r.customer_number, f),
        }
    }

    /// The comparisons whose agreement this part implies: a training session over pairs of
    /// this rule must not estimate them (they agree by construction).
    pub fn comparisons(self) -> &'static [Comparison] {
        match self {
            Self::EmailKey => &[Comparison::Email],
            Self::Phone => &[Comparison::Phone],
            Self::FirstName
            | Self::FirstNameTranslit
            | Self::FirstNamePhonetic
            | Self::FirstInitial
            | Self::GivenNameGroup => &[Comparison::FirstName],
            Self::LastName
            | Self::LastNameTranslit
            | Self::LastNamePhonetic
            | Self::LastInitial => &[Comparison::LastName],
            Self::NameSorted | Self::NamePhoneticSorted => {
                &[Comparison::FirstName, Comparison::LastName]
            }
            Self::BirthDate | Self::BirthYear => &[Comparison::BirthDate],
            Self::Postcode | Self::City | Self::Street | Self::HouseNumber => {
                &[Comparison::Address]
            }
            Self::ExternalId => &[Comparison::ExternalId],
            Self::CustomerNumber => &[],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockingRule {
    pub name: String,
    pub parts: Vec<KeyPart>,
    pub max_block_size: usize,
}

impl BlockingRule {
    /// The keys of one record under this rule; none when a part is missing.
    pub fn keys(&self, r: &MatchRecord) -> Vec<String> {
        let mut keys = vec![String::new()];
        for (i, part) in self.parts.iter().enumerate() {
            let values = part.values(r);
            if values.is_empty() {
                return Vec::new();
            }
            keys = keys
                .iter()
                .flat_map(|k| {
                    values.iter().map(move |v| {
                        if i == 0 {
                            (*v).to_string()
                        } else {
                            format!("{k}\u{1f}{v}")
                        }
                    })
                })
                .collect();
        }
        keys
    }

    /// [`key_hash`] (rule `index`) of each of [`Self::keys`], pushed to `out` without building
    /// the keys: the hash of the rule's name and of a key's first parts is carried on to the
    /// next part's values (a record's keys under all rules were half of a full scoring's
    /// blocking, most of it building and dropping strings).
    fn push_key_hashes(&self, index: usize, r: &MatchRecord, out: &mut Vec<(usize, i64)>) {
        fn go(
            parts: &[KeyPart],
            first: bool,
            h: u64,
            r: &MatchRecord,
            index: usize,
            out: &mut Vec<(usize, i64)>,
        ) {
            let Some((part, rest)) = parts.split_first() else {
                out.push((index, with_rule(h, index)));
                return;
            };
            part.each_value(r, &mut |v| {
                let h = if first { h } else { fnv(h, &[0x1f]) };
                go(rest, false, fnv(h, v.as_bytes()), r, index, out);
            });
        }
        go(
            &self.parts,
            true,
            fnv(fnv(FNV_BASIS, self.name.as_bytes()), &[0]),
            r,
            index,
            out,
        );
    }

    pub fn comparisons(&self) -> Vec<Comparison> {
        let mut out: Vec<Comparison> = self
            .parts
            .iter()
            .flat_map(|p| p.comparisons().iter().copied())
            .collect();
        out.sort_by_key(|c| c.index());
        out.dedup();
        out
    }
}

/// The rules shipped for German customer data.
pub fn default_rules() -> Vec<BlockingRule> {
    let rule = |name: &str, parts: &[KeyPart], max: usize| BlockingRule {
        name: name.to_string(),
        parts: parts.to_vec(),
        max_block_size: max,
    };
    vec![
        rule("email", &[KeyPart::EmailKey], 50),
        rule("phone", &[KeyPart::Phone], 50),
        // The first initial keeps common names in big postcodes from exploding at a million
        // records; swapped names are found by full_name_phonetic.
        rule(
            "last_name_phonetic_postcode_initial",
            &[
                KeyPart::LastNamePhonetic,
                KeyPart::Postcode,
                KeyPart::FirstInitial,
            ],
            300,
        ),
        // Hans and Johannes Müller of one postcode: their initials differ, their name does not.
        rule(
            "last_name_phonetic_postcode_given_name",
            &[
                KeyPart::LastNamePhonetic,
                KeyPart::Postcode,
                KeyPart::GivenNameGroup,
            ],
            300,
        ),
        // A birth date and a first name: the married and moved (a new last name, postcode,
        // e-mail and phone). With the first initial alone a country's population (some 20,000
        // birth dates, 20 initials) grows its blocks with the records: 13% of the candidates at
        // 2M records, 26M pairs at 10M, for 33 true matches no other rule found at 2M. So the
        // initial holds only in blocks of up to 10 (a typo in a first name's sound, in data of
        // up to a few million records), the name's sound at any size (issue 27, session 32).
        rule(
            "birth_date_first_initial",
            &[KeyPart::BirthDate, KeyPart::FirstInitial],
            10,
        ),
        rule(
            "birth_date_first_name_phonetic",
            &[KeyPart::BirthDate, KeyPart::FirstNamePhonetic],
            300,
        ),
        rule(
            "birth_date_last_name",
            &[KeyPart::BirthDate, KeyPart::LastNamePhonetic],
            300,
        ),
        // A name alone is a big block for common names: at most 20 records, larger blocks are
        // skipped (and reported); the other rules find those pairs through a second key. At a
        // million German records, blocks of 51-100 namesakes were 23M of 32M candidate pairs
        // and held 0.2% of the matches (F1 0.8641 at 100, 0.8634 at 50); blocks of 21-50 were
        // a third of the candidates at 1M of either test set and held 4-35 matches no other
        // rule found, same F1 (issue 27, BENCHMARKS.md). At 10 the generated CRM of 100k
        // records lost 4% of its true matches (F1 0.848 -> 0.821; session 32).
        rule("full_name", &[KeyPart::NameSorted], 20),
        rule("full_name_phonetic", &[KeyPart::NamePhoneticSorted], 20),
        rule(
            "birth_date_postcode",
            &[KeyPart::BirthDate, KeyPart::Postcode],
            300,
        ),
        // A house: the records of one address whose names differ (a married name). A house
        // number in a postcode alone grew with the records as a country's population does (1.1M
        // new pairs at 2M records, 17M at 10M); 95% of the true matches only it found share the
        // street too, and a typo in the street is caught by the last name's initial (issue 27,
        // session 32). More than 20 records: a block of flats, whose residents' true pairs share
        // another key.
        rule(
            "postcode_street_house_number",
            &[KeyPart::Postcode, KeyPart::Street, KeyPart::HouseNumber],
            20,
        ),
        rule(
            "postcode_house_number_last_initial",
            &[
                KeyPart::Postcode,
                KeyPart::HouseNumber,
                KeyPart::LastInitial,
            ],
            20,
        ),
        rule("external_id", &[KeyPart::ExternalId], 50),
        rule("customer_number", &[KeyPart::CustomerNumber], 50),
    ]
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RuleStats {
    pub rule: String,
    /// Pairs this rule produced.
    pub pairs: u64,
    /// Pairs no earlier rule produced.
    pub new_pairs: u64,
    pub blocks: u64,
    pub skipped_blocks: u64,
    pub largest_skipped_block: u64,
    /// The key of the largest skipped block (the junk value to look at).
    pub largest_skipped_key: Option<String>,
}

/// A candidate pair: indexes into the record slice (a < b) and the rules that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub a: u32,
    pub b: u32,
    pub rules: u32,
}

/// Candidate pairs over all rules, each once. Errors when the rules together would produce
/// more than `max_pairs` pairs (before anything is compared).
pub fn candidates(
    records: &[MatchRecord],
    rules: &[BlockingRule],
    max_pairs: u64,
    workers: impl Into<Workers>,
) -> Result<(Vec<Candidate>, Vec<RuleStats>), String> {
    let workers = workers.into();
    if rules.len() > 32 {
        return Err("at most 32 blocking rules".into());
    }
    let keyed = keyed_records(records, rules, workers);
    candidates_of_keyed(records, rules, &keyed, max_pairs, workers)
}

/// Every record's [`key_hashes`] as (hash, record index), computed on `workers` and sorted: the
/// members of each block next to each other in record order, the blocks in hash order. What
/// [`candidates_of_keyed`] blocks with and `unify.block_keys` is written from.
pub fn keyed_records(
    records: &[MatchRecord],
    rules: &[BlockingRule],
    workers: impl Into<Workers>,
) -> Vec<(i64, u32)> {
    let workers = workers.into();
    let keyed = parallel::flat_map(records.len(), workers, |range| {
        let mut out = Vec::with_capacity(range.len() * rules.len());
        for i in range {
            out.extend(
                key_hashes(rules, &records[i])
                    .into_iter()
                    .map(|(_, h)| (h, i as u32)),
            );
        }
        out
    });
    // Hashes are uniform: their top bits cut the keys into even buckets.
    parallel::sort_unstable_by_key(
        keyed,
        SORT_BUCKETS,
        |&(h, _)| ((h as u64 ^ (1 << 63)) >> (64 - SORT_BUCKETS.trailing_zeros())) as usize,
        |&k| k,
        workers,
    )
}

/// Buckets of the sorts on all threads: several per thread, so that uneven ones even out.
const SORT_BUCKETS: usize = 64;

/// [`candidates`] from the records' [`keyed_records`]. A block is a key hash, as in
/// `unify.block_keys` and the streamed run (`super::stream`, whose `block_pairs` gives each
/// block's pairs here too): each pair comes from the block of its first shared valid key, once,
/// with the rules of all the valid keys both records hold, so nothing is merged after. (Two
/// keys of one rule with one 56-bit hash would form one block, as they do for the change queue
/// and the streamed run.)
pub fn candidates_of_keyed(
    records: &[MatchRecord],
    rules: &[BlockingRule],
    keyed: &[(i64, u32)],
    max_pairs: u64,
    workers: impl Into<Workers>,
) -> Result<(Vec<Candidate>, Vec<RuleStats>), String> {
    let workers = workers.into();
    let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    let limits: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
    let mut figures = RuleFigures::new(&names, &limits)?;
    // The blocks within their size limit, as ranges of `keyed`.
    let mut valid_blocks: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    while start < keyed.len() {
        let hash = keyed[start].0;
        let end = start + keyed[start..].partition_point(|&(h, _)| h == hash);
        let n = (end - start) as u64;
        figures.add(hash, n);
        if limits
            .get(rule_of(hash))
            .is_some_and(|&max| valid_block(n, max))
        {
            valid_blocks.push(start..end);
        }
        start = end;
    }
    let (mut stats, largest) = figures.finish(max_pairs)?;
    for (i, hash) in largest.into_iter().enumerate() {
        if let Some(hash) = hash {
            // The key's text from the block's first record.
            let first = keyed[keyed.partition_point(|&(h, _)| h < hash)].1;
            stats[i].largest_skipped_key = rules[i]
                .keys(&records[first as usize])
                .into_iter()
                .find(|k| key_hash(i, &rules[i].name, k) == hash)
                .map(|k| k.replace('\u{1f}', " | "));
        }
    }
    // Each record's valid keys (sorted: the blocks are in hash order), one slice per record.
    let mut offsets = vec![0usize; records.len() + 1];
    for block in &valid_blocks {
        for &(_, i) in &keyed[block.clone()] {
            offsets[i as usize + 1] += 1;
        }
    }
    for i in 0..records.len() {
        offsets[i + 1] += offsets[i];
    }
    let mut valid = vec![0i64; offsets[records.len()]];
    let mut fill = offsets.clone();
    for block in &valid_blocks {
        for &(h, i) in &keyed[block.clone()] {
            valid[fill[i as usize]] = h;
            fill[i as usize] += 1;
        }
    }
    drop(fill);
    let valid_of = |i: u32| &valid[offsets[i as usize]..offsets[i as usize + 1]];
    let cands = parallel::flat_map(valid_blocks.len(), workers, |range| {
        let mut out = Vec::new();
        for block in &valid_blocks[range] {
            let members = &keyed[block.clone()];
            let idx: Vec<u32> = members.iter().map(|&(_, i)| i).collect();
            let lists: Vec<&[i64]> = idx.iter().map(|&i| valid_of(i)).collect();
            // The pair's first record is the one of the smaller index.
            let order: Vec<i64> = idx.iter().map(|&i| i64::from(i)).collect();
            out.extend(block_pairs(members[0].0, &idx, &lists, &order));
        }
        out
    });
    for c in &cands {
        stats[c.rules.trailing_zeros() as usize].new_pairs += 1;
    }
    // In pair order, as scoring and training's sample take them.
    let n = records.len().max(1);
    let cands = parallel::sort_unstable_by_key(
        cands,
        SORT_BUCKETS,
        |c| c.a as usize * SORT_BUCKETS / n,
        |c| (c.a, c.b),
        workers,
    );
    Ok((cands, stats))
}

/// A stable 64-bit hash (FNV-1a) of one rule's key: what `unify.block_keys` stores, so the
/// change queue finds a record's blocks through an index. Hand-written because it must never
/// change between builds (std's hasher makes no such promise); a collision only adds a
/// candidate that scoring then rejects.
///
/// The low byte holds the rule's index (a candidate's rules are a u32 mask, so there are at most
/// 32): a stored key tells its rule, and with it its block size limit, even after the record
/// that held it has changed.
pub fn key_hash(rule_index: usize, rule: &str, key: &str) -> i64 {
    let h = fnv(fnv(FNV_BASIS, rule.as_bytes()), &[0]);
    with_rule(fnv(h, key.as_bytes()), rule_index)
}

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a of `h` followed by `bytes`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A key's FNV-1a with the rule's index in its low byte (see [`key_hash`]).
fn with_rule(h: u64, rule_index: usize) -> i64 {
    ((h & !0xff) | (rule_index as u64 & 0xff)) as i64
}

/// The index of the rule a [`key_hash`] belongs to.
pub fn rule_of(hash: i64) -> usize {
    (hash as u64 & 0xff) as usize
}

/// Whether a block's change from `before` to `after` members takes it across its size limit
/// (either way): its pairs then appear or vanish, also among members that did not change.
pub fn crosses_limit(max_block_size: usize, before: usize, after: usize) -> bool {
    (before <= max_block_size) != (after <= max_block_size)
}

/// How many members of a block to read before a change, so that what was read tells the block
/// before and after: one past its size limit, plus the members the change takes out.
pub fn read_cap(max_block_size: usize, leaving: usize) -> usize {
    max_block_size + 1 + leaving
}

/// What a change makes of a block, from its members read before the change up to
/// [`read_cap`] (`before`), the records leaving and those joining it.
#[derive(Debug, PartialEq)]
pub struct BlockChange {
    /// The members after the change (sorted), when the block is then within its size limit.
    pub within: Option<Vec<i64>>,
    /// Members before and after, each once (sorted), when the change takes the block across its
    /// size limit.
    pub crossing: Option<Vec<i64>>,
}

pub fn block_change(
    max_block_size: usize,
    before: &[i64],
    leaving: &[i64],
    joining: &[i64],
) -> BlockChange {
    if before.len() >= read_cap(max_block_size, leaving.len()) {
        // Over the limit before, and still after the leavers go.
        return BlockChange {
            within: None,
            crossing: None,
        };
    }
    let mut after: Vec<i64> = before
        .iter()
        .filter(|id| !leaving.contains(id))
        .chain(joining.iter().filter(|id| !before.contains(id)))
        .copied()
        .collect();
    after.sort_unstable();
    let crossing = crosses_limit(max_block_size, before.len(), after.len()).then(|| {
        let mut members: Vec<i64> = before.iter().chain(joining).copied().collect();
        members.sort_unstable();
        members.dedup();
        members
    });
    BlockChange {
        within: (after.len() <= max_block_size).then_some(after),
        crossing,
    }
}

/// The hashed keys of one record under every rule, as (rule index, hash), each once.
pub fn key_hashes(rules: &[BlockingRule], r: &MatchRecord) -> Vec<(usize, i64)> {
    let mut out = Vec::with_capacity(rules.len() + 2);
    for (i, rule) in rules.iter().enumerate() {
        rule.push_key_hashes(i, r, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Pairs found under several rules, (a << 32 | b, rule bit) each, merged into one candidate per
/// pair with the union of its rules, ordered by pair.
fn merge_pairs(mut all: Vec<(u64, u32)>) -> Vec<Candidate> {
    all.sort_unstable_by_key(|p| p.0);
    let mut out: Vec<Candidate> = Vec::with_capacity(all.len());
    for (key, mask) in all {
        match out.last_mut() {
            Some(last) if (u64::from(last.a) << 32 | u64::from(last.b)) == key => {
                last.rules |= mask
            }
            _ => out.push(Candidate {
                a: (key >> 32) as u32,
                b: key as u32,
                rules: mask,
            }),
        }
    }
    out
}

/// The candidate pairs that involve at least one of the `changed` records, as [`candidates`]
/// would produce them over all records: `keys[i]` are the key hashes of changed record
/// `changed[i]`, `blocks` holds every record of each of those keys (indexes into the caller's
/// record list, the changed records included). A block above its rule's size limit gives no
/// pairs, as in a full run.
pub fn candidates_of(
    changed: &[u32],
    keys: &[Vec<(usize, i64)>],
    blocks: &HashMap<i64, Vec<u32>>,
    rules: &[BlockingRule],
) -> Vec<Candidate> {
    let mut all: Vec<(u64, u32)> = Vec::new();
    for (&x, record_keys) in changed.iter().zip(keys) {
        for &(rule, hash) in record_keys {
            let Some(members) = blocks.get(&hash) else {
                continue;
            };
            if members.len() > rules[rule].max_block_size {
                continue;
            }
            for &y in members.iter().filter(|&&y| y != x) {
                let (a, b) = if x < y { (x, y) } else { (y, x) };
                all.push(((u64::from(a) << 32) | u64::from(b), 1 << rule));
            }
        }
    }
    merge_pairs(all)
}

/// Every pair of records within one of `groups` (records sharing an e-mail or a phone whose
/// household status a change can flip), each once, in order.
pub fn pairs_within(groups: &[Vec<u32>]) -> Vec<(u32, u32)> {
    let mut looked: Vec<(u32, u32)> = groups
        .iter()
        .flat_map(|g| {
            g.iter().enumerate().flat_map(move |(i, &x)| {
                g[i + 1..]
                    .iter()
                    .filter(move |&&y| y != x)
                    .map(move |&y| (x.min(y), x.max(y)))
            })
        })
        .collect();
    looked.sort_unstable();
    looked.dedup();
    looked
}

/// The key hashes both records of some pair in `looked` hold: whether those pairs are
/// candidates depends on the sizes of these blocks only.
pub fn shared_hashes(
    looked: &[(u32, u32)],
    keys: &HashMap<u32, Vec<(usize, i64)>>,
) -> std::collections::HashSet<i64> {
    let empty = Vec::new();
    looked
        .iter()
        .flat_map(|&(a, b)| {
            let kb = keys.get(&b).unwrap_or(&empty);
            keys.get(&a)
                .unwrap_or(&empty)
                .iter()
                .filter(move |k| kb.contains(k))
                .map(|&(_, h)| h)
        })
        .collect()
}

/// The candidates among the pairs `looked` (see [`pairs_within`]), as [`candidates`] would
/// produce them: a pair is a candidate under every rule where both records hold a key whose
/// block is within its size limit (`within_limit`). `keys` holds the key hashes of every
/// record in a looked pair.
pub fn candidates_among(
    looked: &[(u32, u32)],
    keys: &HashMap<u32, Vec<(usize, i64)>>,
    within_limit: &std::collections::HashSet<i64>,
) -> Vec<Candidate> {
    let empty = Vec::new();
    looked
        .iter()
        .filter_map(|&(a, b)| {
            let kb = keys.get(&b).unwrap_or(&empty);
            let rules = keys
                .get(&a)
                .unwrap_or(&empty)
                .iter()
                .filter(|(rule, h)| within_limit.contains(h) && kb.contains(&(*rule, *h)))
                .fold(0u32, |m, (rule, _)| m | (1 << rule));
            (rules != 0).then_some(Candidate { a, b, rules })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`candidates`] as it was before blocks were key hashes (0.3.0 until issue 27's batch
    /// speed-up): blocks keyed by the keys' text, the pairs of every rule merged after.
    fn candidates_by_strings(
        records: &[MatchRecord],
        rules: &[BlockingRule],
        max_pairs: u64,
        threads: usize,
    ) -> Result<(Vec<Candidate>, Vec<RuleStats>), String> {
        if rules.len() > 32 {
            return Err("at most 32 blocking rules".into());
        }
        let indexed: Vec<(usize, &BlockingRule)> = rules.iter().enumerate().collect();
        let per_rule = crate::parallel::map_tasks(&indexed, threads, |&(i, rule)| {
            rule_pairs(records, i, rule, max_pairs)
        });
        let mut all: Vec<(u64, u32)> = Vec::new();
        let mut stats = Vec::new();
        for result in per_rule {
            let (pairs, s) = result?;
            if all.len() as u64 + pairs.len() as u64 > max_pairs {
                return Err(format!(
                    "blocking rule \"{}\" would produce more than {max_pairs} candidate pairs",
                    s.rule
                ));
            }
            all.extend(pairs);
            stats.push(s);
        }
        let out = merge_pairs(all);
        for c in &out {
            stats[c.rules.trailing_zeros() as usize].new_pairs += 1;
        }
        Ok((out, stats))
    }

    /// The pairs of one rule (rule `i` in the mask) and its figures; errors past `max_pairs`.
    fn rule_pairs(
        records: &[MatchRecord],
        i: usize,
        rule: &BlockingRule,
        max_pairs: u64,
    ) -> Result<(Vec<(u64, u32)>, RuleStats), String> {
        let mut all: Vec<(u64, u32)> = Vec::new();
        let mut blocks: HashMap<String, Vec<u32>> = HashMap::new();
        for (idx, r) in records.iter().enumerate() {
            // A rule's keys over a million records take seconds (phonetic codes): a cancel must
            // not wait for them. On the threads of `candidates` this only reads a pending cancel.
            crate::interrupt::check_every(idx, 1 << 14);
            for key in rule.keys(r) {
                blocks.entry(key).or_default().push(idx as u32);
            }
        }
        let mut s = RuleStats {
            rule: rule.name.clone(),
            ..Default::default()
        };
        // The hash of the largest skipped block's key: of two as large, the smaller hash is named
        // (as the streaming run of `super::stream` names it), whatever the order of the map.
        let mut largest_hash = 0i64;
        for (n, (key, mut members)) in blocks.into_iter().enumerate() {
            crate::interrupt::check_every(n, 1 << 14);
            members.dedup();
            if members.len() < 2 {
                continue;
            }
            if members.len() > rule.max_block_size {
                s.skipped_blocks += 1;
                let size = members.len() as u64;
                if size >= s.largest_skipped_block {
                    let hash = key_hash(i, &rule.name, &key);
                    if size > s.largest_skipped_block || hash < largest_hash {
                        s.largest_skipped_block = size;
                        s.largest_skipped_key = Some(key.replace('\u{1f}', " | "));
                        largest_hash = hash;
                    }
                }
                continue;
            }
            s.blocks += 1;
            for (j, &x) in members.iter().enumerate() {
                for &y in &members[j + 1..] {
                    let (a, b) = if x < y { (x, y) } else { (y, x) };
                    all.push(((u64::from(a) << 32) | u64::from(b), 1 << i));
                }
            }
            s.pairs += (members.len() * (members.len() - 1) / 2) as u64;
            if all.len() as u64 > max_pairs {
                return Err(format!(
                    "blocking rule \"{}\" would produce more than {max_pairs} candidate pairs",
                    rule.name
                ));
            }
        }
        Ok((all, s))
    }

    fn rec(email: &str, last: &str, postcode: &str) -> MatchRecord {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        MatchRecord {
            email: s(email),
            email_key: s(email),
            last_name: s(last),
            postcode: s(postcode),
            ..Default::default()
        }
        .prepare()
    }

    /// Records with few distinct values per field (blocks of every size, some over the default
    /// limits), nicknames (several given-name groups), two phones, missing fields.
    fn varied_records(n: usize) -> Vec<MatchRecord> {
        let firsts = [
            "Hans", "Johannes", "Anna", "Änne", "Jo", "Sepp", "", "Josef",
        ];
        let lasts = [
            "Müller", "Mueller", "Schmidt", "Schmitt", "Meier", "", "Özdemir",
        ];
        let ends = [
            "", "er", "mann", "s", "berg", "ow", "i", "ke", "a", "o", "en", "us",
        ];
        (0..n)
            .map(|i| {
                let s = |v: String| (!v.is_empty()).then_some(v);
                let last = lasts[i * 7 % lasts.len()];
                let mut r = MatchRecord {
                    id: 1000 + i as i64 * 3,
                    first_name: s(firsts[i % firsts.len()].to_lowercase()),
                    last_name: s(if last.is_empty() {
                        String::new()
                    } else {
                        format!("{}{}", last.to_lowercase(), ends[i / 7 % ends.len()])
                    }),
                    email_key: s(match i % 5 {
                        0 => String::new(),
                        _ if i % 90 == 1 => "test@test.de".into(),
                        _ => format!("m{}@x.de", i % 197),
                    }),
                    postcode: s(format!("{}", 10115 + i % 4)),
                    house_number: s(match i % 9 {
                        0 => String::new(),
                        _ if i % 40 == 1 => "1".into(),
                        _ => format!("{}", i % 97),
                    }),
                    birth_date: s(if i % 3 == 0 {
                        String::new()
                    } else {
                        format!("19{:02}-0{}-{:02}", 50 + i % 7, 1 + i % 3, 1 + i % 5)
                    }),
                    external_id: s(if i % 4 == 0 {
                        format!("e{}", i % 61)
                    } else {
                        String::new()
                    }),
                    ..Default::default()
                };
                r.phones = match i % 6 {
                    0 => vec![],
                    _ if i % 50 == 1 => vec!["+4900".into()],
                    1 => vec![format!("+49{}", i % 400), format!("+49{}", i % 151)],
                    _ => vec![format!("+49{}", i % 400)],
                };
                r.prepare()
            })
            .collect()
    }

    #[test]
    fn key_hashes_hash_the_keys_text() {
        let rules = default_rules();
        let mut with_groups = 0;
        for r in &varied_records(400) {
            let mut want: Vec<(usize, i64)> = rules
                .iter()
                .enumerate()
                .flat_map(|(i, rule)| {
                    rule.keys(r)
                        .into_iter()
                        .map(move |k| (i, key_hash(i, &rule.name, &k)))
                })
                .collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(key_hashes(&rules, r), want);
            with_groups += usize::from(rules[3].keys(r).len() > 1);
        }
        assert!(with_groups > 0, "a first name of several given-name groups");
        // A rule without parts has one key, the empty one, as `keys` says.
        let none = BlockingRule {
            name: "all".into(),
            parts: vec![],
            max_block_size: 5,
        };
        let r = &varied_records(1)[0];
        assert_eq!(none.keys(r), vec![String::new()]);
        assert_eq!(key_hashes(&[none], r), vec![(0, key_hash(0, "all", ""))]);
    }

    #[test]
    fn blocks_of_key_hashes_equal_blocks_of_keys() {
        let records = varied_records(3000);
        let mut rules = default_rules();
        // Smaller limits: more blocks skipped, over several rules.
        for (i, r) in rules.iter_mut().enumerate() {
            r.max_block_size = [50, 20, 300, 30][i % 4];
        }
        let want = candidates_by_strings(&records, &rules, 10_000_000, 1).unwrap();
        assert!(want.1.iter().filter(|s| s.skipped_blocks > 0).count() >= 3);
        assert!(want.1.iter().filter(|s| s.blocks > 0).count() >= 10);
        assert!(want.0.iter().any(|c| c.rules.count_ones() > 2));
        for threads in [1, 2, 3] {
            assert_eq!(
                candidates(&records, &rules, 10_000_000, threads).unwrap(),
                want,
                "{threads} threads"
            );
        }
        // The same error past max_candidate_pairs (the first rule the running total passes).
        let total: u64 = want.1.iter().map(|s| s.pairs).sum();
        for max in [0, want.1[0].pairs, total / 2, total - 1] {
            assert_eq!(
                candidates(&records, &rules, max, 2).unwrap_err(),
                candidates_by_strings(&records, &rules, max, 2).unwrap_err(),
            );
        }
        assert!(candidates(&records, &rules, total, 2).is_ok());
        // The keyed records are what unify.block_keys holds: each record's key hashes, in order.
        let keyed = keyed_records(&records, &rules, 2);
        let mut want_keys: Vec<(i64, u32)> = records
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                key_hashes(&rules, r)
                    .into_iter()
                    .map(move |(_, h)| (h, i as u32))
            })
            .collect();
        want_keys.sort_unstable();
        assert_eq!(keyed, want_keys);
    }

    #[test]
    fn union_of_rules_each_pair_once() {
        let records = vec![
            rec("a@x.de", "müller", "10115"),
            rec("a@x.de", "mueller", "10115"),
            rec("b@x.de", "müller", "10115"),
            rec("c@x.de", "schmidt", "80331"),
        ];
        let rules = vec![
            BlockingRule {
                name: "email".into(),
                parts: vec![KeyPart::EmailKey],
                max_block_size: 10,
            },
            BlockingRule {
                name: "name".into(),
                parts: vec![KeyPart::LastNamePhonetic, KeyPart::Postcode],
                max_block_size: 10,
            },
        ];
        let (cands, stats) = candidates(&records, &rules, 1000, 2).unwrap();
        let pairs: Vec<(u32, u32, u32)> = cands.iter().map(|c| (c.a, c.b, c.rules)).collect();
        assert_eq!(pairs, vec![(0, 1, 0b11), (0, 2, 0b10), (1, 2, 0b10)]);
        assert_eq!((stats[0].pairs, stats[0].new_pairs), (1, 1));
        assert_eq!((stats[1].pairs, stats[1].new_pairs), (3, 2));
    }

    #[test]
    fn oversized_blocks_are_skipped_and_reported() {
        let mut records: Vec<MatchRecord> = (0..20)
            .map(|i| rec("test@test.de", &format!("n{i}"), ""))
            .collect();
        records.push(rec("real@x.de", "a", ""));
        records.push(rec("real@x.de", "b", ""));
        let rules = vec![BlockingRule {
            name: "email".into(),
            parts: vec![KeyPart::EmailKey],
            max_block_size: 5,
        }];
        let (cands, stats) = candidates(&records, &rules, 1000, 2).unwrap();
        assert_eq!(cands.len(), 1);
        assert_eq!(stats[0].skipped_blocks, 1);
        assert_eq!(stats[0].largest_skipped_block, 20);
        assert_eq!(
            stats[0].largest_skipped_key.as_deref(),
            Some("test@test.de")
        );
        let err = candidates(
            &records,
            &[BlockingRule {
                max_block_size: 100,
                ..rules[0].clone()
            }],
            50,
            1,
        )
        .unwrap_err();
        assert!(err.contains("more than 50"), "{err}");
    }

    /// The shipped rules' hard cases (issue 27, session 32): the married and moved by the
    /// birth date and the first name's sound, also where a country's namesakes of one birth date
    /// and initial are too many for the initial; one house by its street, and by the last
    /// name's initial where the street is mistyped.
    #[test]
    fn shipped_rules_find_the_married_the_moved_and_one_house() {
        let person = |first: &str, last: &str, birth: &str, postcode: &str, street: &str| {
            let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
            MatchRecord {
                first_name: s(first),
                last_name: s(last),
                birth_date: s(birth),
                postcode: s(postcode),
                street: s(street),
                house_number: (!street.is_empty()).then(|| "12".to_string()),
                ..Default::default()
            }
            .prepare()
        };
        let rules = default_rules();
        let rule = |name: &str| 1u32 << rules.iter().position(|r| r.name == name).unwrap();
        let pair_rules = |records: &[MatchRecord], a: u32, b: u32| {
            let (cands, _) = candidates(records, &rules, 1_000_000, 1).unwrap();
            cands
                .iter()
                .find(|c| (c.a, c.b) == (a, b))
                .map_or(0, |c| c.rules)
        };
        // Married (a double name) and moved, the first name with a typo of the same sound.
        let mut records = vec![
            person("katrin", "dornmoser", "1946-10-28", "51125", ""),
            person("kathrin", "hofmann-dornmoser", "1946-10-28", "93191", ""),
        ];
        assert_eq!(
            pair_rules(&records, 0, 1) & rule("birth_date_first_name_phonetic"),
            rule("birth_date_first_name_phonetic")
        );
        // Eleven more women born that day whose names start with a K: the initial's block is
        // skipped, the name's sound still pairs the two.
        for (i, first) in [
            "karla",
            "klara",
            "karin",
            "kerstin",
            "korinna",
            "kira",
            "kim",
            "kaja",
            "karoline",
            "kornelia",
            "kunigunde",
        ]
        .iter()
        .enumerate()
        {
            records.push(person(
                first,
                &format!("n{i}"),
                "1946-10-28",
                &format!("{}", 20000 + i),
                "",
            ));
        }
        let both = pair_rules(&records, 0, 1);
        assert_eq!(both & rule("birth_date_first_initial"), 0);
        assert_ne!(both & rule("birth_date_first_name_phonetic"), 0);
        // One house: a married name and a nickname share the street; a mistyped street, the
        // last name's initial.
        let house = [
            person("sabine", "birkeninger", "", "51174", "birkengasse"),
            person("bine", "birkeninger-schulz", "", "51174", "birkengasse"),
            person("sabine", "birkeninger", "", "51174", "birknegasse"),
        ];
        assert_ne!(
            pair_rules(&house, 0, 1) & rule("postcode_street_house_number"),
            0
        );
        let typo = pair_rules(&house, 0, 2);
        assert_eq!(typo & rule("postcode_street_house_number"), 0);
        assert_ne!(typo & rule("postcode_house_number_last_initial"), 0);
    }

    #[test]
    fn multi_valued_parts_give_several_keys() {
        let mut r = rec("", "x", "1");
        r.phones = vec!["+491".into(), "+492".into()];
        let rule = BlockingRule {
            name: "p".into(),
            parts: vec![KeyPart::Phone, KeyPart::Postcode],
            max_block_size: 9,
        };
        assert_eq!(
            rule.keys(&r),
            vec!["+491\u{1f}1".to_string(), "+492\u{1f}1".to_string()]
        );
        assert!(rule.keys(&rec("", "x", "")).is_empty());
    }

    #[test]
    fn candidates_of_changed_records_equal_the_full_run_restricted_to_them() {
        let names = ["müller", "mueller", "schmidt", "meier", "maier"];
        let records: Vec<MatchRecord> = (0..60)
            .map(|i| {
                let mut r = rec(
                    &format!("p{}@x.de", i % 17),
                    names[i % names.len()],
                    &format!("{}", 10115 + i % 3),
                );
                r.phones = vec![format!("+49{}", i % 11)];
                r
            })
            .collect();
        let rules = vec![
            BlockingRule {
                name: "email".into(),
                parts: vec![KeyPart::EmailKey],
                max_block_size: 10,
            },
            BlockingRule {
                name: "phone".into(),
                parts: vec![KeyPart::Phone],
                max_block_size: 5, // some phone blocks (6 records) are over the limit
            },
            BlockingRule {
                name: "name".into(),
                parts: vec![KeyPart::LastNamePhonetic, KeyPart::Postcode],
                max_block_size: 10,
            },
        ];
        let (full, _) = candidates(&records, &rules, 1_000_000, 1).unwrap();
        let mut blocks: HashMap<i64, Vec<u32>> = HashMap::new();
        let all_keys: Vec<Vec<(usize, i64)>> =
            records.iter().map(|r| key_hashes(&rules, r)).collect();
        for (i, keys) in all_keys.iter().enumerate() {
            for &(_, h) in keys {
                blocks.entry(h).or_default().push(i as u32);
            }
        }
        let changed = [3u32, 4, 41];
        let keys: Vec<_> = changed
            .iter()
            .map(|&i| all_keys[i as usize].clone())
            .collect();
        let got = candidates_of(&changed, &keys, &blocks, &rules);
        let want: Vec<Candidate> = full
            .into_iter()
            .filter(|c| changed.contains(&c.a) || changed.contains(&c.b))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want);
    }

    #[test]
    fn key_hash_is_stable_and_rule_specific() {
        // The stored hashes must not change between builds: pin one value.
        assert_eq!(
            key_hash(0, "email", "a@x.de"),
            key_hash(0, "email", "a@x.de")
        );
        assert_ne!(
            key_hash(0, "email", "a@x.de"),
            key_hash(1, "phone", "a@x.de")
        );
        assert_ne!(key_hash(0, "ab", "c"), key_hash(0, "a", "bc"));
        assert_eq!(key_hash(0, "", ""), 0xaf63_bd4c_8601_b700_u64 as i64);
        assert_eq!(key_hash(7, "", ""), 0xaf63_bd4c_8601_b707_u64 as i64);
        assert_eq!(rule_of(key_hash(7, "phone", "+4930")), 7);
        assert_eq!(rule_of(key_hash(31, "x", "y")), 31);
    }

    #[test]
    fn a_block_change_read_before_it_is_written() {
        // Limit 3: read up to 4 + leavers.
        let change = block_change(3, &[1, 2, 3], &[], &[9]);
        assert_eq!(change.within, None);
        assert_eq!(change.crossing, Some(vec![1, 2, 3, 9]));
        let change = block_change(3, &[1, 2, 3, 4], &[4], &[]);
        assert_eq!(change.within, Some(vec![1, 2, 3]));
        assert_eq!(change.crossing, Some(vec![1, 2, 3, 4]));
        let change = block_change(3, &[1, 2], &[2], &[7]);
        assert_eq!(change.within, Some(vec![1, 7]));
        assert_eq!(change.crossing, None);
        // As many read as the cap: over before; the one leaving cannot bring it under.
        let full = block_change(3, &[1, 2, 3, 4, 5], &[5], &[]);
        assert_eq!(
            full,
            BlockChange {
                within: None,
                crossing: None
            }
        );
        assert_eq!(read_cap(3, 1), 5);
        // A joiner already stored (a repeated key) is counted once.
        assert_eq!(block_change(3, &[1, 2], &[], &[2]).within, Some(vec![1, 2]));
    }

    #[test]
    fn crossing_the_block_size_limit() {
        assert!(crosses_limit(50, 50, 51));
        assert!(crosses_limit(50, 53, 49));
        assert!(!crosses_limit(50, 49, 50));
        assert!(!crosses_limit(50, 51, 60));
    }

    #[test]
    fn candidates_among_groups_equal_the_full_run() {
        let mut records: Vec<MatchRecord> = (0..30)
            .map(|i| rec(&format!("f{}@x.de", i % 4), ["a", "b", "c"][i % 3], "1"))
            .collect();
        records[7].phones = vec!["+491".into()];
        records[9].phones = vec!["+491".into()];
        let rules = vec![
            BlockingRule {
                name: "email".into(),
                parts: vec![KeyPart::EmailKey],
                max_block_size: 7, // f0..f1 blocks hold 8, over the limit; f2, f3 hold 7
            },
            BlockingRule {
                name: "name".into(),
                parts: vec![KeyPart::LastNamePhonetic, KeyPart::Postcode],
                max_block_size: 20,
            },
            BlockingRule {
                name: "phone".into(),
                parts: vec![KeyPart::Phone],
                max_block_size: 5,
            },
        ];
        let (full, _) = candidates(&records, &rules, 1_000_000, 1).unwrap();
        let keys: HashMap<u32, Vec<(usize, i64)>> = (0..records.len())
            .map(|i| (i as u32, key_hashes(&rules, &records[i])))
            .collect();
        let mut sizes: HashMap<i64, usize> = HashMap::new();
        keys.values()
            .flatten()
            .for_each(|&(_, h)| *sizes.entry(h).or_default() += 1);
        let within: std::collections::HashSet<i64> = keys
            .values()
            .flatten()
            .filter(|(r, h)| sizes[h] <= rules[*r].max_block_size)
            .map(|&(_, h)| h)
            .collect();
        // The holders of f1 (over the e-mail limit) and of f2, and the phone pair.
        let group =
            |m: usize| -> Vec<u32> { (0..30u32).filter(|i| *i as usize % 4 == m).collect() };
        let groups = vec![group(1), group(2), vec![7, 9]];
        let looked = pairs_within(&groups);
        let got = candidates_among(&looked, &keys, &within);
        let want: Vec<Candidate> = full
            .into_iter()
            .filter(|c| looked.binary_search(&(c.a, c.b)).is_ok())
            .collect();
        assert_eq!(looked.len(), 28 + 21 + 1);
        assert!(!want.is_empty());
        assert_eq!(got, want);
        // Only the blocks the looked pairs share decide: knowing those is enough.
        let shared = shared_hashes(&looked, &keys);
        let held: std::collections::HashSet<i64> = groups
            .iter()
            .flatten()
            .flat_map(|i| keys[i].iter().map(|&(_, h)| h))
            .collect();
        assert!(shared.is_subset(&held) && shared.len() < held.len());
        let within_shared = within.intersection(&shared).copied().collect();
        assert_eq!(candidates_among(&looked, &keys, &within_shared), want);
    }
}
