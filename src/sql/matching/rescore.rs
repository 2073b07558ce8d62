//! The incremental path: re-blocking and re-scoring the records a queue batch changed.

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};

use super::super::errors::raise;
use super::super::spi::{fetch_all, spi_failed, update_kept, Args};
use super::frequencies::model_frequencies;
use super::model::current_model;
use super::records::{load_records, load_value_holders, source_ids, RecordBefore};
use super::run::Phases;
use super::score::{model_version, pair_rows, write_pairs};
use crate::model::blocking::{
    block_change, candidates_among, candidates_of, key_hashes, pairs_within, read_cap, rule_of,
    shared_hashes, BlockingRule, Candidate,
};
use crate::model::comparison::{household_flips, Context, JUNK_VALUE_RECORDS};
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;

/// A row of unify.block_keys: (record id, key hash).
type KeyRow = (i64, i64);

/// How the blocking keys of `records` (their current values; the ids in `record_ids` that are
/// gone have none) differ from the stored ones: the (record, hash) pairs to delete and to
/// insert.
fn key_changes(
    client: &SpiClient<'_>,
    record_ids: &[i64],
    records: &[MatchRecord],
    keys: &[Vec<(usize, i64)>],
) -> (Vec<KeyRow>, Vec<KeyRow>) {
    let stored: HashSet<(i64, i64)> = fetch_all(
        client,
        "SELECT record_id, key_hash FROM unify.block_keys WHERE record_id = ANY ($1)",
        vec![record_ids.to_vec().into()],
        "process_queue",
        |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<i64>(2).ok().flatten().unwrap_or_default(),
            )
        },
    )
    .into_iter()
    .collect();
    let wanted: HashSet<(i64, i64)> = records
        .iter()
        .zip(keys)
        .flat_map(|(r, k)| k.iter().map(move |&(_, h)| (r.id, h)))
        .collect();
    (
        stored.difference(&wanted).copied().collect(),
        wanted.difference(&stored).copied().collect(),
    )
}

/// The stored members of the blocks `caps` names, each read up to its cap (hash, cap): a block
/// with as many members as its cap may have more.
fn block_members(client: &SpiClient<'_>, caps: &HashMap<i64, usize>) -> HashMap<i64, Vec<i64>> {
    let (hashes, caps): (Vec<i64>, Vec<i32>) = caps
        .iter()
        .map(|(&h, &cap)| (h, cap.min(i32::MAX as usize) as i32))
        .unzip();
    fetch_all(
        client,
        "SELECT k.h, ARRAY(SELECT b.record_id FROM unify.block_keys b WHERE b.key_hash = k.h LIMIT k.cap)
         FROM unnest($1::bigint[], $2::int[]) AS k (h, cap)",
        vec![hashes.into(), caps.into()],
        "process_queue",
        |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<Vec<i64>>(2).ok().flatten().unwrap_or_default(),
            )
        },
    )
    .into_iter()
    .collect()
}

/// A batch's blocks, read once before its key changes are written, and what the changes make
/// of them.
struct ChangedBlocks {
    /// Members after the changes, of the blocks known to be within their rule's size limit.
    within: HashMap<i64, Vec<i64>>,
    /// Members before and after (each once) of the blocks the changes take across their size
    /// limit: their pairs appear or vanish, also between records that did not change, as in a
    /// full scoring.
    crossing: Vec<Vec<i64>>,
}

/// Reads the blocks of `hashes` as they are before the key changes `gone` / `new` (record,
/// hash) are written, each up to one past its size limit plus the keys leaving it: enough to
/// tell whether it is over the limit before and after.
fn changed_blocks(
    client: &SpiClient<'_>,
    rules: &[BlockingRule],
    hashes: &HashSet<i64>,
    gone: &[(i64, i64)],
    new: &[(i64, i64)],
) -> ChangedBlocks {
    let mut leaving: HashMap<i64, Vec<i64>> = HashMap::new();
    for &(id, h) in gone {
        leaving.entry(h).or_default().push(id);
    }
    let mut joining: HashMap<i64, Vec<i64>> = HashMap::new();
    for &(id, h) in new {
        joining.entry(h).or_default().push(id);
    }
    let none = Vec::new();
    let caps: HashMap<i64, usize> = hashes
        .iter()
        .filter(|&&h| rule_of(h) < rules.len())
        .map(|&h| {
            let leavers = leaving.get(&h).map_or(0, Vec::len);
            (h, read_cap(rules[rule_of(h)].max_block_size, leavers))
        })
        .collect();
    let mut out = ChangedBlocks {
        within: HashMap::new(),
        crossing: Vec::new(),
    };
    for (h, before) in block_members(client, &caps) {
        let change = block_change(
            rules[rule_of(h)].max_block_size,
            &before,
            leaving.get(&h).unwrap_or(&none),
            joining.get(&h).unwrap_or(&none),
        );
        out.crossing.extend(change.crossing);
        if let Some(after) = change.within {
            out.within.insert(h, after);
        }
    }
    out
}

/// Re-blocks and re-scores the records `record_ids` (changed, new or deleted) against all
/// records, as unify.score_pairs() would, and re-scores the pairs among the records sharing an
/// e-mail or phone whose household status the change turns (`before` holds the changed
/// records as they were: see [`RecordBefore`]), and among the members of the blocks the change
/// takes across their size limit. Their blocking keys in unify.block_keys are brought up to
/// date, candidates found through that index, the stored pairs looked at replaced by those at
/// or above the review threshold. Returns every record whose pairs were looked at: the changed
/// ones, those holders and those blocks' members.
#[pg_extern(volatile, strict)]
fn _rescore(record_ids: Vec<i64>, before: JsonB) -> Vec<i64> {
    let mut phases = Phases::new("_rescore");
    let version = model_version(F);
    let model = current_model(F);
    phases.mark("model");
    let rules = &model.blocking_rules;
    let scope = Spi::connect_mut(|client| {
        require_block_keys(client);
        let changed = load_records(
            client,
            "WHERE r.record_id = ANY ($1)",
            by_id(&record_ids),
            F,
        );
        phases.mark("load changed");
        let before: Vec<MatchRecord> = serde_json::from_value::<Vec<RecordBefore>>(before.0)
            .unwrap_or_else(|e| spi_failed(format!("the records before: {e}"), F))
            .into_iter()
            .map(MatchRecord::from)
            .collect();
        let changed_ids: HashSet<i64> = record_ids.iter().copied().collect();
        let values = ValueHolders::read(client, &changed, &before, &changed_ids);
        phases.mark("value holders");
        let keys = KeyUpdate::write(client, rules, &record_ids, &changed, &mut phases);
        let (holder_ids, holders) =
            load_holders(client, &values, &keys.blocks_now.crossing, &changed_ids);
        phases.mark("load holders");
        let mut rescored: Vec<i64> = record_ids.iter().chain(&holder_ids).copied().collect();
        rescored.sort_unstable();
        rescored.dedup();
        let looked = LookedAt::gather(
            client,
            rules,
            changed,
            holders,
            &values,
            keys,
            &changed_ids,
            &mut phases,
        );
        delete_looked_at_pairs(client, &record_ids, &looked);
        phases.mark("delete pairs");
        let ctx = context(client, &looked, values, &mut phases);
        RescoreScope {
            looked,
            ctx,
            source_ids: source_ids(client),
            rescored,
        }
    });
    let looked = &scope.looked;
    let changed: Vec<u32> = (0..looked.n_changed as u32).collect();
    let mut cands = candidates_of(&changed, &looked.keys, &looked.blocks, rules);
    // Pairs within groups that involve a changed record are in `cands` already.
    cands.extend(
        looked
            .within
            .iter()
            .copied()
            .filter(|c| c.a as usize >= looked.n_changed && c.b as usize >= looked.n_changed),
    );
    let scorer = Scorer::new(&model, &scope.ctx, &scope.source_ids);
    let mut rows = pair_rows(&model, &scorer, &looked.records, &cands);
    phases.mark("score");
    pgrx::debug1!(
        "_rescore: {} changed, {} records loaded, {} candidates, {} pairs kept",
        looked.n_changed,
        looked.records.len(),
        cands.len(),
        rows.len()
    );
    // Each pair once (a pair within a group may also be a changed record's candidate).
    rows.sort_unstable_by_key(|r| (r.record_a, r.record_b));
    rows.dedup_by_key(|r| (r.record_a, r.record_b));
    Spi::connect_mut(|client| write_pairs(client, rows, version, F));
    phases.mark("insert pairs");
    scope.rescored
}

/// The function name errors of the incremental path carry.
const F: &str = "process_queue";

fn by_id(ids: &[i64]) -> Args<'static> {
    vec![ids.to_vec().into()]
}

/// What a batch's rescoring scores, gathered under one SPI connection.
struct RescoreScope {
    looked: LookedAt,
    /// Household evidence and name frequencies of the records in scope.
    ctx: Context,
    source_ids: HashMap<String, i32>,
    /// Every record whose pairs were looked at (the function's result).
    rescored: Vec<i64>,
}

/// Raises 55000 unless a full scoring has built unify.block_keys.
fn require_block_keys(client: &SpiClient<'_>) {
    let built = client
        .select("SELECT count(*) FROM unify.matching_state", None, &[])
        .and_then(|t| t.first().get_one::<i64>())
        .unwrap_or_else(|e| spi_failed(e, F));
    if built != Some(1) {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "records are scored one by one only after a first full scoring".into(),
            None,
            "Run SELECT * FROM unify.score_pairs(); once.",
            F,
        )
    }
}

/// Everyone holding the changed records' e-mails and phones, before or now, and the values
/// whose household status the change turns.
struct ValueHolders {
    /// Each e-mail and phone with how many of its holders were read (its cap).
    emails: HashMap<String, i32>,
    phones: HashMap<String, i32>,
    records: Vec<MatchRecord>,
    flipped_emails: HashSet<String>,
    flipped_phones: HashSet<String>,
}

impl ValueHolders {
    /// Each value read up to one past the junk limit besides the changed records, enough to
    /// judge it as a household's or not, before and now.
    fn read(
        client: &SpiClient<'_>,
        changed: &[MatchRecord],
        before: &[MatchRecord],
        changed_ids: &HashSet<i64>,
    ) -> Self {
        let mut emails: HashMap<String, i32> = HashMap::new();
        let mut phones: HashMap<String, i32> = HashMap::new();
        let base = JUNK_VALUE_RECORDS as i32 + 1;
        for r in before {
            emails.extend(r.email_key.iter().map(|e| (e.clone(), base)));
            phones.extend(r.phones.iter().map(|p| (p.clone(), base)));
        }
        for r in changed {
            if let Some(e) = &r.email_key {
                *emails.entry(e.clone()).or_insert(base) += 1;
            }
            for p in &r.phones {
                *phones.entry(p.clone()).or_insert(base) += 1;
            }
        }
        let records = load_value_holders(
            client,
            emails.iter().map(|(v, &c)| (v.clone(), c)).collect(),
            phones.iter().map(|(v, &c)| (v.clone(), c)).collect(),
            F,
        );
        let (flipped_emails, flipped_phones) = household_flips(&records, changed_ids, before);
        ValueHolders {
            emails,
            phones,
            records,
            flipped_emails,
            flipped_phones,
        }
    }

    /// Whether `r` holds a value whose status turned.
    fn turned(&self, r: &MatchRecord) -> bool {
        r.email_key
            .as_ref()
            .is_some_and(|e| self.flipped_emails.contains(e))
            || r.phones.iter().any(|p| self.flipped_phones.contains(p))
    }
}

/// The changed records' blocking keys, written to unify.block_keys, and their blocks as read
/// before the write.
struct KeyUpdate {
    /// Per changed record, its keys (rule, hash).
    keys: Vec<Vec<(usize, i64)>>,
    /// The changed records' hashes now.
    changed_hashes: HashSet<i64>,
    /// Those and the hashes they leave.
    touched: HashSet<i64>,
    blocks_now: ChangedBlocks,
}

impl KeyUpdate {
    fn write(
        client: &mut SpiClient<'_>,
        rules: &[BlockingRule],
        record_ids: &[i64],
        changed: &[MatchRecord],
        phases: &mut Phases,
    ) -> Self {
        let keys: Vec<Vec<(usize, i64)>> = changed.iter().map(|r| key_hashes(rules, r)).collect();
        // Only the keys that differ are written: an update that leaves them alone costs nothing.
        let (gone, new) = key_changes(client, record_ids, changed, &keys);
        phases.mark("key changes");
        // The blocks of the changed records' keys, old and new, read once before the writes.
        let changed_hashes: HashSet<i64> = keys.iter().flatten().map(|&(_, h)| h).collect();
        let touched: HashSet<i64> = changed_hashes
            .iter()
            .copied()
            .chain(gone.iter().map(|&(_, h)| h))
            .collect();
        let blocks_now = changed_blocks(client, rules, &touched, &gone, &new);
        phases.mark("blocks");
        let (gone_ids, gone_hashes): (Vec<i64>, Vec<i64>) = gone.iter().copied().unzip();
        let (new_ids, new_hashes): (Vec<i64>, Vec<i64>) = new.iter().copied().unzip();
        update_kept(
            client,
            "DELETE FROM unify.block_keys k USING unnest($1::bigint[], $2::bigint[]) AS g (id, h)
              WHERE k.record_id = g.id AND k.key_hash = g.h",
            &vec![gone_ids.into(), gone_hashes.into()],
        )
        .and_then(|_| {
            // Only keys not stored, read under the lock every writer of keys holds: no
            // conflict to check for (ON CONFLICT made this write half again as slow).
            update_kept(
                client,
                "INSERT INTO unify.block_keys (key_hash, record_id)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                &vec![new_hashes.into(), new_ids.into()],
            )
        })
        .unwrap_or_else(|e| spi_failed(e, F));
        phases.mark("write keys");
        KeyUpdate {
            keys,
            changed_hashes,
            touched,
            blocks_now,
        }
    }
}

/// The holders whose pairs among each other are looked at again: those of a value whose status
/// turned, and the members of the blocks the change takes across their size limit (without the
/// changed records): their ids and the records (ordered by id).
fn load_holders(
    client: &SpiClient<'_>,
    values: &ValueHolders,
    crossing: &[Vec<i64>],
    changed_ids: &HashSet<i64>,
) -> (Vec<i64>, Vec<MatchRecord>) {
    let mut holder_ids: Vec<i64> = values
        .records
        .iter()
        .filter(|r| values.turned(r))
        .map(|r| r.id)
        .chain(crossing.iter().flatten().copied())
        .filter(|id| !changed_ids.contains(id))
        .collect();
    holder_ids.sort_unstable();
    holder_ids.dedup();
    let read: HashMap<i64, &MatchRecord> = values.records.iter().map(|r| (r.id, r)).collect();
    let unread: Vec<i64> = holder_ids
        .iter()
        .filter(|id| !read.contains_key(id))
        .copied()
        .collect();
    let mut holders: Vec<MatchRecord> = holder_ids
        .iter()
        .filter_map(|id| read.get(id).map(|&r| r.clone()))
        .collect();
    holders.extend(load_records(
        client,
        "WHERE r.record_id = ANY ($1)",
        by_id(&unread),
        F,
    ));
    holders.sort_unstable_by_key(|r| r.id);
    (holder_ids, holders)
}

/// The records a batch looks at and how they block: the changed records first, then the
/// holders, then the other members of the changed records' blocks.
struct LookedAt {
    records: Vec<MatchRecord>,
    n_changed: usize,
    /// Changed records and holders (the groups' members).
    n_grouped: usize,
    /// Per changed record, its keys (rule, hash).
    keys: Vec<Vec<(usize, i64)>>,
    /// The changed records' blocks within their limit: members as indexes into `records`.
    blocks: HashMap<i64, Vec<u32>>,
    /// The pairs within the groups (shared e-mail or phone, crossing block) that block.
    within: Vec<Candidate>,
    /// The pairs within the groups, as indexes into `records`: their stored pairs go.
    pairs: Vec<(u32, u32)>,
}

impl LookedAt {
    #[allow(clippy::too_many_arguments)]
    fn gather(
        client: &SpiClient<'_>,
        rules: &[BlockingRule],
        changed: Vec<MatchRecord>,
        holders: Vec<MatchRecord>,
        values: &ValueHolders,
        key_update: KeyUpdate,
        changed_ids: &HashSet<i64>,
        phases: &mut Phases,
    ) -> Self {
        let KeyUpdate {
            keys,
            changed_hashes,
            touched,
            blocks_now,
        } = key_update;
        let crossing = &blocks_now.crossing;
        let holder_keys: Vec<Vec<(usize, i64)>> =
            holders.iter().map(|r| key_hashes(rules, r)).collect();
        let n_changed = changed.len();
        let n_holders = holders.len();
        // Groups of changed records and holders by shared e-mail and phone: the pairs whose
        // household evidence may have flipped. Crossing blocks' members are holders.
        let scope_index: HashMap<i64, u32> = changed
            .iter()
            .chain(&holders)
            .enumerate()
            .map(|(i, r)| (r.id, i as u32))
            .collect();
        let mut by_value: HashMap<&str, Vec<u32>> = HashMap::new();
        for (i, r) in changed.iter().chain(&holders).enumerate() {
            for v in r.email_key.iter().chain(r.phones.iter()) {
                by_value.entry(v.as_str()).or_default().push(i as u32);
            }
        }
        let mut groups: Vec<Vec<u32>> = by_value.into_values().filter(|g| g.len() > 1).collect();
        groups.extend(
            crossing
                .iter()
                .map(|m| {
                    m.iter()
                        .filter_map(|id| scope_index.get(id).copied())
                        .collect::<Vec<u32>>()
                })
                .filter(|g| g.len() > 1),
        );
        let group_keys: HashMap<u32, Vec<(usize, i64)>> = keys
            .iter()
            .chain(&holder_keys)
            .enumerate()
            .map(|(i, k)| (i as u32, k.clone()))
            .collect();
        let looked = pairs_within(&groups);
        // The changed records' blocks hold their candidates; of the other blocks only those
        // shared by a looked-at pair matter, and only whether they are within their limit.
        // Each block is read up to one past its rule's size limit: enough to know it is over.
        let shared = shared_hashes(&looked, &group_keys);
        // Blocks shared within a group that the change did not touch: only their size matters.
        let limit: HashMap<i64, usize> = holder_keys
            .iter()
            .flatten()
            .filter(|(_, h)| shared.contains(h) && !touched.contains(h))
            .map(|&(rule, h)| (h, rules[rule].max_block_size))
            .collect();
        let caps: HashMap<i64, usize> = limit.iter().map(|(&h, &max)| (h, max + 1)).collect();
        let mut members: HashMap<i64, Vec<i64>> = block_members(client, &caps)
            .into_iter()
            .filter(|(h, m)| m.len() <= limit[h])
            .collect();
        members.extend(blocks_now.within);
        phases.mark("block members");
        // The other members of the changed records' blocks are their candidates.
        let holder_set: HashSet<i64> = holders.iter().map(|r| r.id).collect();
        let mut other_ids: Vec<i64> = members
            .iter()
            .filter(|(h, _)| changed_hashes.contains(h))
            .flat_map(|(_, m)| m.iter().copied())
            .filter(|id| !changed_ids.contains(id) && !holder_set.contains(id))
            .collect();
        other_ids.sort_unstable();
        other_ids.dedup();
        // Those holding a changed record's e-mail or phone were read already.
        let read: HashMap<i64, &MatchRecord> = values.records.iter().map(|r| (r.id, r)).collect();
        let (known, unread): (Vec<i64>, Vec<i64>) =
            other_ids.into_iter().partition(|id| read.contains_key(id));
        let mut others: Vec<MatchRecord> = known.iter().map(|id| read[id].clone()).collect();
        others.extend(load_records(
            client,
            "WHERE r.record_id = ANY ($1)",
            by_id(&unread),
            F,
        ));
        phases.mark("load others");
        let mut records = changed;
        records.extend(holders);
        records.extend(others);
        let index: HashMap<i64, u32> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id, i as u32))
            .collect();
        let blocks: HashMap<i64, Vec<u32>> = members
            .iter()
            .filter(|(h, _)| changed_hashes.contains(h))
            .map(|(&h, m)| {
                (
                    h,
                    m.iter().filter_map(|id| index.get(id).copied()).collect(),
                )
            })
            .collect();
        let within_limit: HashSet<i64> = members.keys().copied().collect();
        let within = candidates_among(&looked, &group_keys, &within_limit);
        phases.mark("groups");
        LookedAt {
            records,
            n_changed,
            n_grouped: n_changed + n_holders,
            keys,
            blocks,
            within,
            pairs: looked,
        }
    }
}

/// The stored pairs looked at again go (those of the changed records and those within the
/// groups); what scores is inserted after.
fn delete_looked_at_pairs(client: &mut SpiClient<'_>, record_ids: &[i64], looked: &LookedAt) {
    let (looked_a, looked_b): (Vec<i64>, Vec<i64>) = looked
        .pairs
        .iter()
        .map(|&(a, b)| {
            let (x, y) = (looked.records[a as usize].id, looked.records[b as usize].id);
            (x.min(y), x.max(y))
        })
        .unzip();
    update_kept(
        client,
        "DELETE FROM unify.pairs p WHERE p.record_a = ANY ($1) OR p.record_b = ANY ($1)",
        &vec![record_ids.to_vec().into()],
    )
    .and_then(|_| {
        // One index probe per looked-at pair: as a join, the planner hashes all of
        // unify.pairs once there are a few thousand of them (0.4 s at 1M pairs).
        update_kept(
            client,
            "DELETE FROM unify.pairs p WHERE p.ctid = ANY (ARRAY(
               SELECT (SELECT q.ctid FROM unify.pairs q WHERE q.record_a = l.a AND q.record_b = l.b)
               FROM unnest($1::bigint[], $2::bigint[]) AS l (a, b)))",
            &vec![looked_a.into(), looked_b.into()],
        )
    })
    .unwrap_or_else(|e| spi_failed(e, F));
}

/// The scoring context of the records looked at: the model's frequencies of their names, and
/// the holders of every e-mail and phone of the changed records and holders (each value read up
/// to one past the junk limit per column) for whether it is a household's.
fn context(
    client: &SpiClient<'_>,
    looked: &LookedAt,
    values: ValueHolders,
    phases: &mut Phases,
) -> Context {
    let names: HashSet<&str> = looked
        .records
        .iter()
        .flat_map(|r| r.first_name.iter().chain(r.last_name.iter()))
        .map(String::as_str)
        .collect();
    let all_frequencies = model_frequencies(client, F);
    let of_names = |all: &HashMap<String, f64>| -> HashMap<String, f64> {
        names
            .iter()
            .filter_map(|&n| all.get_key_value(n).map(|(k, &f)| (k.clone(), f)))
            .collect()
    };
    let frequencies = (of_names(&all_frequencies.0), of_names(&all_frequencies.1));
    phases.mark("frequencies");
    let in_groups = &looked.records[..looked.n_grouped];
    let emails: HashSet<String> = in_groups
        .iter()
        .filter_map(|r| r.email_key.clone())
        .collect();
    let phones: HashSet<String> = in_groups
        .iter()
        .flat_map(|r| r.phones.iter().cloned())
        .collect();
    // The holders of the values not read above (a holder's other e-mail or phone).
    let cap = JUNK_VALUE_RECORDS as i32 + 1;
    let ValueHolders {
        emails: read_emails,
        phones: read_phones,
        records: mut context_records,
        ..
    } = values;
    context_records.extend(load_value_holders(
        client,
        emails
            .iter()
            .filter(|e| !read_emails.contains_key(*e))
            .map(|e| (e.clone(), cap))
            .collect(),
        phones
            .iter()
            .filter(|p| !read_phones.contains_key(*p))
            .map(|p| (p.clone(), cap))
            .collect(),
        F,
    ));
    context_records.sort_unstable_by_key(|r| r.id);
    context_records.dedup_by_key(|r| r.id);
    phases.mark("other value holders");
    let ctx = Context::with_frequencies(frequencies, &context_records, &emails, &phones);
    phases.mark("context");
    ctx
}
