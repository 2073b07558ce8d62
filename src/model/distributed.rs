//! Scoring one block on a Citus worker (issue 27): the block's members arrive with everything
//! the scorer reads beyond the two records of a pair, so that the worker never reads the
//! coordinator's state. What [`Scorer`] reads from its [`Context`] for a pair (a, b) is:
//! the frequency of a's first name among first names and among last names, the same of a's
//! last name (`Scorer::tf_u`, exact name matches only), whether a's e-mail key is a household
//! value (`email_level`, when both share it), and which of a's phones are household values
//! (`phone_level`, the phones both share). Every one of those is a property of a member alone,
//! computed on the coordinator from the full [`Context`] ([`MemberContext::of`]); the block's
//! own [`Context`] ([`block_context`]) holds exactly the members' entries, so every pair of the
//! block scores as with the full one (a value's frequency and household status are the same
//! on every member holding it).
//!
//! The candidates of a block are those of the streamed path ([`super::stream::block_pairs`]:
//! each member with its valid block keys, a pair only in the block of its first shared key), so
//! the union over all blocks is the single-node candidate set, each pair once.

use super::blocking::{rule_of, Candidate};
use super::comparison::{compare, Context};
use super::record::MatchRecord;
use super::scorer::NameFrequencies;
use super::stream::block_pairs;
use super::train::{Chances, PairCounts};

/// What the scorer reads about one record from the full [`Context`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberContext {
    /// Frequency of the first name among first names, and among last names (None: not listed).
    pub first_name_tf: Option<f64>,
    pub first_name_as_last_tf: Option<f64>,
    /// Frequency of the last name among last names, and among first names.
    pub last_name_tf: Option<f64>,
    pub last_name_as_first_tf: Option<f64>,
    /// The e-mail key is held by clearly different people (a household's).
    pub email_household: bool,
    /// The record's phones (prepared) that are household values.
    pub household_phones: Vec<String>,
}

impl MemberContext {
    /// Of a prepared record, from the context of all records.
    pub fn of(r: &MatchRecord, ctx: &Context) -> Self {
        let tf = |value: &Option<String>, map: &std::collections::HashMap<String, f64>| {
            value.as_ref().and_then(|v| map.get(v).copied())
        };
        Self {
            first_name_tf: tf(&r.first_name, &ctx.first_name_tf),
            first_name_as_last_tf: tf(&r.first_name, &ctx.last_name_tf),
            last_name_tf: tf(&r.last_name, &ctx.last_name_tf),
            last_name_as_first_tf: tf(&r.last_name, &ctx.first_name_tf),
            email_household: r
                .email_key
                .as_ref()
                .is_some_and(|e| ctx.shared_emails.contains(e)),
            household_phones: r
                .phones
                .iter()
                .filter(|p| ctx.shared_phones.contains(*p))
                .cloned()
                .collect(),
        }
    }
}

/// The context of one block: its members' entries of the full context.
pub fn block_context<'a>(
    members: impl IntoIterator<Item = (&'a MatchRecord, &'a MemberContext)>,
) -> Context {
    let mut ctx = Context::default();
    for (r, m) in members {
        let mut put = |value: &Option<String>, tf: Option<f64>, first: bool| {
            if let (Some(v), Some(f)) = (value, tf) {
                let map = if first {
                    &mut ctx.first_name_tf
                } else {
                    &mut ctx.last_name_tf
                };
                map.insert(v.clone(), f);
            }
        };
        put(&r.first_name, m.first_name_tf, true);
        put(&r.first_name, m.first_name_as_last_tf, false);
        put(&r.last_name, m.last_name_tf, false);
        put(&r.last_name, m.last_name_as_first_tf, true);
        if m.email_household {
            if let Some(e) = &r.email_key {
                ctx.shared_emails.insert(e.clone());
            }
        }
        ctx.shared_phones.extend(m.household_phones.iter().cloned());
    }
    ctx
}

/// The candidates of block `hash` over its members (indexes into `records`), each member with
/// its valid block keys sorted: as the streamed path forms them. Errors when a member's valid
/// keys do not hold the block's own key (the rows were not built for this block).
pub fn block_candidates(
    hash: i64,
    records: &[MatchRecord],
    valid: &[Vec<i64>],
) -> Result<Vec<Candidate>, String> {
    if records.len() != valid.len() {
        return Err(format!(
            "{} members but {} key lists",
            records.len(),
            valid.len()
        ));
    }
    if let Some(i) = valid.iter().position(|v| v.binary_search(&hash).is_err()) {
        return Err(format!(
            "record {} is not listed in block {hash} (rule {})",
            records[i].id,
            rule_of(hash)
        ));
    }
    let idx: Vec<u32> = (0..records.len() as u32).collect();
    let v: Vec<&[i64]> = valid.iter().map(Vec::as_slice).collect();
    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    Ok(block_pairs(hash, &idx, &v, &ids))
}

/// What one block gives training (unify.train on Citus, issue 27): its candidates per rule
/// combination, and (given the chances) its sampled candidates compared and counted per key.
#[derive(Debug, Default, PartialEq)]
pub struct BlockTally {
    pub candidates: u64,
    /// Candidates per rule combination, by combination.
    pub per_rules: Vec<(u32, u64)>,
    pub pairs: PairCounts,
}

/// The training tally of block `hash` over its members (`records` prepared, each with its
/// context and its valid block keys sorted): its candidates as [`block_candidates`] forms them
/// (each pair in one block only, with all its rules), counted per rule combination; with
/// `chances`, those drawn for the EM sample (by the pair's ids and `seed`, as on a single node)
/// compared with the block's context and counted per key. The union over all blocks is what
/// `crate::model::train::compared_sample` counts over all candidates held at once.
pub fn tally_block(
    hash: i64,
    records: &[MatchRecord],
    contexts: &[MemberContext],
    valid: &[Vec<i64>],
    chances: Option<&Chances>,
    seed: u64,
) -> Result<BlockTally, String> {
    if contexts.len() != records.len() {
        return Err(format!(
            "{} members but {} contexts",
            records.len(),
            contexts.len()
        ));
    }
    let cands = block_candidates(hash, records, valid)?;
    let mut per_rules: std::collections::BTreeMap<u32, u64> = Default::default();
    for c in &cands {
        *per_rules.entry(c.rules).or_default() += 1;
    }
    let mut pairs = PairCounts::default();
    if let Some(chances) = chances {
        let ctx = block_context(records.iter().zip(contexts));
        for c in &cands {
            let (a, b) = (&records[c.a as usize], &records[c.b as usize]);
            if chances.drawn(a.id, b.id, c.rules, seed) {
                pairs.add(&compare(a, b, &ctx), c.rules, &NameFrequencies::of(&ctx, a));
            }
        }
    }
    Ok(BlockTally {
        candidates: cands.len() as u64,
        per_rules: per_rules.into_iter().collect(),
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::super::blocking::{default_rules, key_hashes, BlockingRule};
    use super::super::params::Model;
    use super::super::scorer::Scorer;
    use super::super::stream::valid_block;
    use super::*;

    /// Records with shared names, e-mails and phones (households among them), some names with
    /// a generation word, some spaces to trim.
    fn records(n: usize) -> Vec<MatchRecord> {
        let firsts = [
            "anna",
            "hans",
            "johannes",
            "maria",
            "jörg",
            "eva",
            "schneider",
        ];
        let lasts = [
            "müller",
            "mueller",
            "schmidt jun",
            "schmitt",
            "meier",
            "weber ",
            "johanna",
        ];
        let mut seed: u64 = 11;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % m
        };
        (0..n)
            .map(|i| {
                let email = match next(4) {
                    0 => Some(format!("{}@web.de", next(60))),
                    1 => Some("familie.mueller@web.de".to_string()),
                    _ => None,
                };
                MatchRecord {
                    id: i as i64 + 1,
                    source_id: 1 + next(3) as i32,
                    first_name: Some(firsts[next(firsts.len())].into()),
                    last_name: Some(lasts[next(lasts.len())].into()),
                    email_key: email.clone(),
                    email,
                    phones: (0..next(3))
                        .map(|_| format!("+49301{}", next(120)))
                        .collect(),
                    street: Some(format!("hauptstr {}", next(3))),
                    house_number: Some(format!("{}", next(5))),
                    postcode: Some(format!("1011{}", next(4))),
                    city: Some("berlin".into()),
                    birth_date: (next(2) == 0)
                        .then(|| format!("19{:02}-0{}-1{}", 50 + next(3), 1 + next(2), next(3))),
                    ..Default::default()
                }
                .prepare()
            })
            .collect()
    }

    /// The blocks of `records` under `rules` (members by index) and each record's valid block
    /// keys, sorted, as unify.block_keys gives them.
    #[allow(clippy::type_complexity)]
    fn blocks_and_valid_keys(
        records: &[MatchRecord],
        rules: &[BlockingRule],
    ) -> (BTreeMap<i64, Vec<usize>>, Vec<Vec<i64>>) {
        let keys: Vec<Vec<(usize, i64)>> = records.iter().map(|r| key_hashes(rules, r)).collect();
        let mut blocks: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, ks) in keys.iter().enumerate() {
            for &(_, h) in ks {
                blocks.entry(h).or_default().push(i);
            }
        }
        let valid = keys
            .iter()
            .map(|ks| {
                let mut v: Vec<i64> = ks
                    .iter()
                    .map(|&(_, h)| h)
                    .filter(|&h| is_valid_block(&blocks, rules, h))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            })
            .collect();
        (blocks, valid)
    }

    /// What both tests block and score with: the shipped rules at blocks of at most 60, the
    /// blocks of `records` with each record's valid keys, and each record's context from `full`.
    struct Fixture {
        rules: Vec<BlockingRule>,
        blocks: BTreeMap<i64, Vec<usize>>,
        valid: Vec<Vec<i64>>,
        contexts: Vec<MemberContext>,
    }

    fn fixture(records: &[MatchRecord], full: &Context) -> Fixture {
        let mut rules = default_rules();
        for r in &mut rules {
            r.max_block_size = r.max_block_size.min(60);
        }
        let (blocks, valid) = blocks_and_valid_keys(records, &rules);
        let contexts = records.iter().map(|r| MemberContext::of(r, full)).collect();
        Fixture {
            rules,
            blocks,
            valid,
            contexts,
        }
    }

    /// Whether block `h` is within its rule's size limit (at least two members).
    fn is_valid_block(blocks: &BTreeMap<i64, Vec<usize>>, rules: &[BlockingRule], h: i64) -> bool {
        valid_block(blocks[&h].len() as u64, rules[rule_of(h)].max_block_size)
    }

    #[test]
    fn blocks_scored_with_their_members_context_equal_the_single_node_scores() {
        let records = records(1500);
        let mut full = Context::build(&records);
        // Name frequencies as the model keeps them: not every name listed.
        full.first_name_tf.remove("eva");
        full.last_name_tf.insert("schneider".into(), 0.02);
        assert!(!full.shared_emails.is_empty() && !full.shared_phones.is_empty());
        let model = Model::default_german();
        let ids: HashMap<String, i32> = HashMap::new();
        let single = Scorer::new(&model, &full, &ids);
        let Fixture {
            rules,
            blocks,
            valid,
            contexts,
        } = fixture(&records, &full);
        let is_valid = |h: &i64| is_valid_block(&blocks, &rules, *h);
        let (mut pairs, mut household_pairs, mut tf_pairs) = (0, 0, 0);
        let mut seen = std::collections::HashSet::new();
        for (h, members) in blocks.iter().filter(|(h, _)| is_valid(h)) {
            let recs: Vec<MatchRecord> = members.iter().map(|&i| records[i].clone()).collect();
            let v: Vec<Vec<i64>> = members.iter().map(|&i| valid[i].clone()).collect();
            let ctx = block_context(members.iter().map(|&i| (&records[i], &contexts[i])));
            let scorer = Scorer::new(&model, &ctx, &ids);
            for c in block_candidates(*h, &recs, &v).unwrap() {
                let (a, b) = (&recs[c.a as usize], &recs[c.b as usize]);
                assert!(seen.insert((a.id, b.id)), "pair {} {} twice", a.id, b.id);
                let got = scorer.score_pair(a, b);
                let want = single.score_pair(a, b);
                assert_eq!(got, want, "pair {} {}", a.id, b.id);
                pairs += 1;
                if want.outcome != super::super::comparison::compare(a, b, &Context::default()) {
                    household_pairs += 1;
                }
                if want.weight
                    != Scorer::new(&model, &Context::default(), &ids)
                        .score_pair(a, b)
                        .weight
                {
                    tf_pairs += 1;
                }
            }
        }
        // The test says something: many pairs, some whose comparison depends on household
        // values and many whose weight depends on the context.
        assert!(pairs > 5000, "{pairs}");
        assert!(household_pairs > 100, "{household_pairs}");
        assert!(tf_pairs > 1000, "{tf_pairs}");
    }

    /// Training on Citus: the blocks tallied with their members' contexts (a first pass
    /// counting the candidates per rule combination, a second drawing and comparing with the
    /// chances from those counts) sum to the single node's sample of all candidates held at
    /// once, key by key, with and without sampling.
    #[test]
    fn block_tallies_sum_to_the_single_node_sample() {
        use super::super::blocking::candidates;
        use super::super::train::{compared_sample, Sample, TrainOptions};
        let records = records(1500);
        let mut full = Context::build(&records);
        full.first_name_tf.remove("eva");
        let Fixture {
            rules,
            blocks,
            valid,
            contexts,
        } = fixture(&records, &full);
        let is_valid = |h: &i64| is_valid_block(&blocks, &rules, *h);
        // The members of a block in any order (Citus aggregates them so).
        let block = |h: &i64, chances: Option<&Chances>| {
            let members: Vec<usize> = blocks[h].iter().rev().copied().collect();
            let recs: Vec<MatchRecord> = members.iter().map(|&i| records[i].clone()).collect();
            let ctxs: Vec<MemberContext> = members.iter().map(|&i| contexts[i].clone()).collect();
            let v: Vec<Vec<i64>> = members.iter().map(|&i| valid[i].clone()).collect();
            tally_block(*h, &recs, &ctxs, &v, chances, 42).unwrap()
        };
        let (all, _) = candidates(&records, &rules, 10_000_000, 1).unwrap();
        assert!(all.len() > 5000, "{}", all.len());
        for em_pairs in [0, all.len() / 3] {
            let mut chances = Chances::new(em_pairs);
            let mut total = 0;
            for h in blocks.keys().filter(|h| is_valid(h)) {
                let t = block(h, None);
                assert!(t.pairs.pairs() == 0);
                total += t.candidates;
                for (r, n) in t.per_rules {
                    chances.count(r, n);
                }
            }
            assert_eq!(total as usize, all.len());
            let mut summed = Sample {
                chances: chances.clone(),
                ..Default::default()
            };
            for h in blocks.keys().filter(|h| is_valid(h)) {
                summed.pairs.merge(block(h, Some(&chances)).pairs);
            }
            let opts = TrainOptions {
                em_pairs,
                ..TrainOptions::default()
            };
            let single = compared_sample(&records, &full, &all, &opts);
            assert_eq!(summed, single, "em_pairs {em_pairs}");
            let drawn = summed.pairs.pairs() as usize;
            if em_pairs == 0 {
                assert_eq!(drawn, all.len());
            } else {
                assert!(drawn < all.len() / 2 && drawn > all.len() / 5, "{drawn}");
            }
        }
        let wrong = [MemberContext::default()];
        assert!(tally_block(5, &records[..2], &wrong, &[vec![5], vec![5]], None, 1).is_err());
    }

    #[test]
    fn a_member_context_holds_only_its_own_values() {
        let r = MatchRecord {
            id: 1,
            first_name: Some("schneider".into()),
            last_name: Some("johanna".into()),
            email_key: Some("a@x.de".into()),
            phones: vec!["+4930111".into(), "+4930222".into()],
            ..Default::default()
        }
        .prepare();
        let mut full = Context::default();
        full.first_name_tf.insert("schneider".into(), 1e-5);
        full.last_name_tf.insert("schneider".into(), 0.01);
        full.first_name_tf.insert("anna".into(), 0.1);
        full.shared_phones.insert("+4930222".into());
        full.shared_phones.insert("+4930333".into());
        let m = MemberContext::of(&r, &full);
        assert_eq!(m.first_name_tf, Some(1e-5));
        assert_eq!(m.first_name_as_last_tf, Some(0.01));
        assert_eq!((m.last_name_tf, m.last_name_as_first_tf), (None, None));
        assert!(!m.email_household);
        assert_eq!(m.household_phones, vec!["+4930222".to_string()]);
        let ctx = block_context([(&r, &m)]);
        assert_eq!(ctx.first_name_tf.len(), 1);
        assert_eq!(ctx.last_name_tf.get("schneider"), Some(&0.01));
        assert_eq!(ctx.shared_phones.len(), 1);
        assert!(block_candidates(5, std::slice::from_ref(&r), &[vec![4]]).is_err());
        assert!(block_candidates(5, &[r], &[]).is_err());
    }
}
