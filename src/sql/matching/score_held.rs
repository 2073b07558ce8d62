//! unify.score_pairs over more records than `customer_unify.batch_memory` holds, with the
//! blocking keys of all records held in memory when they fit half of it
//! (`crate::model::held_keys`, as a streamed training holds them). One pass over the records
//! collects the keys, the e-mails and phones the households are judged on, and the records as
//! prepared, packed (`crate::model::packed_records`, about 140-160 bytes a record) while they fit a quarter of
//! the budget. The blocks, their figures and every record's valid keys come from one sort here
//! (no temp table of blocks sorted by PostgreSQL, no keys made again per batch);
//! unify.block_keys is written from the sorted keys, in its primary key's order, while another
//! thread judges the households on the packed records. The valid blocks are then scored a
//! buffer of distinct members at a time, the members made from the packed records on all
//! threads (read again by id, as `super::stream::stream_blocks` does, when the records did not
//! fit). At a million records that reads each record once instead of 2.8 times. The same
//! tables, byte for byte, as the streamed path with its temp table: the same candidates (a pair
//! comes from the block of its first shared valid key in both), figures and keys.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::super::spi::{drop_indexes, fetch_all, in_own_context, rebuild_indexes};
use super::frequencies::load_frequencies;
use super::records::{prepare_all, raw_record_from_row, source_ids, RECORD_COLUMNS};
use super::run::{workers, Phases};
use super::score::{
    pair_rows_beside, write_block_key_rows, write_blocking_stats, write_matching_state,
    write_pairs, PairRow,
};
use super::stream::{
    for_each_record, household_values_of, household_values_read, limit_exceeded, packed_holders,
    skipped_key, with_generic_plan, Figures, Stream, BLOCK_KEYS,
};
use crate::model::blocking::{key_hashes, Candidate};
use crate::model::comparison::Context;
use crate::model::held_keys::{Blocked, KeyIndex, ValueHolders, VALUE_HOLDER_BYTES};
use crate::model::packed_records::{PackedRecords, Unpacked};
use crate::model::params::Model;
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;

const F: &str = "score_pairs";

/// Whether the keys of `records` records (and their household values) fit half of `budget_kb`
/// (`KeyIndex::bytes_per_record` and `VALUE_HOLDER_BYTES`: about 490 bytes a record at the 14
/// shipped rules; 1M records fit 1GB).
pub(super) fn keys_fit(model: &Model, records: u64, budget_kb: u64) -> bool {
    records
        .saturating_mul(KeyIndex::bytes_per_record(model.blocking_rules.len()) + VALUE_HOLDER_BYTES)
        <= budget_kb.saturating_mul(1024) / 2
}

/// Scores all `records` records with `model` within `budget_kb`, their keys held (see the
/// module's comment; [`keys_fit`] says when).
pub(super) fn score_held_keys(
    model: &Model,
    version: Option<i32>,
    records: usize,
    budget_kb: u64,
    phases: &mut Phases,
) -> Figures {
    // Records buffered in the other half of the budget, as the streamed path does.
    let stream = Stream::new(F, "unify_score", model, budget_kb, 2);
    let rules = &model.blocking_rules;
    Spi::connect_mut(|client| {
        stream.with_full_cursors(client, |client| {
            let ids = source_ids(client);
            let (first_name_tf, last_name_tf) = load_frequencies(client, None, F);
            // Reserved, not touched: a record has at most a few keys more than there are rules.
            let mut index = KeyIndex::with_capacity(records, 2 * rules.len() + 2);
            let mut held = ValueHolders::default();
            // The records as read, while they fit a quarter of the budget.
            let pack_limit = budget_kb.saturating_mul(1024) / 4;
            let mut packed = Some(PackedRecords::default());
            let mut ids_read: Vec<i64> = Vec::with_capacity(records);
            let threads = workers();
            for_each_record(client, &stream, |_, batch| {
                if let Some(p) = &mut packed {
                    batch.iter().for_each(|r| p.push(r));
                    if p.bytes() > pack_limit {
                        packed = None;
                    }
                }
                let keys = crate::parallel::map(batch, threads, |r| key_hashes(rules, r));
                for (r, ks) in batch.iter().zip(keys) {
                    index.push(r.id, ks.into_iter().map(|(_, h)| h));
                    held.push(r);
                    ids_read.push(r.id);
                }
            });
            phases.mark("keys");
            let (blocked, (shared_emails, shared_phones)) = match &packed {
                Some(packed) => {
                    // The households judged on the packed records on another thread while this
                    // one writes unify.block_keys and builds its indexes.
                    let mut by_id: Vec<(i64, u32)> = ids_read
                        .iter()
                        .enumerate()
                        .map(|(p, &id)| (id, p as u32))
                        .collect();
                    drop(ids_read);
                    by_id.sort_unstable();
                    let buffer = stream.buffer;
                    // On this other thread without PostgreSQL's interrupt checks: unpacked here.
                    let households = move || {
                        household_values_read(buffer, held, packed_holders(packed, &by_id, None))
                    };
                    std::thread::scope(|s| {
                        let judged = s.spawn(households);
                        let blocked = write_keys(client, model, index);
                        let values = judged
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        (blocked, values)
                    })
                }
                None => {
                    drop(ids_read);
                    let blocked = write_keys(client, model, index);
                    (blocked, household_values_of(client, &stream, held, None))
                }
            };
            phases.mark("block_keys and households");
            let ctx = Context {
                first_name_tf,
                last_name_tf,
                shared_emails,
                shared_phones,
            };
            score_blocked(
                client,
                &stream,
                model,
                &ctx,
                &ids,
                version,
                blocked,
                packed.as_ref(),
                phases,
            )
        })
    })
}

/// unify.block_keys and unify.matching_state anew from the held keys, and their blocks: the
/// keys are written as the sort leaves them (by key hash, then record: the primary key's order
/// where the records were read in id order, so its build finds them sorted).
fn write_keys(client: &mut SpiClient<'_>, model: &Model, index: KeyIndex) -> Blocked {
    let rules = &model.blocking_rules;
    let names: Vec<String> = rules.iter().map(|r| r.name.clone()).collect();
    let limits: Vec<usize> = rules.iter().map(|r| r.max_block_size).collect();
    client
        .update("TRUNCATE unify.block_keys", None, &[])
        .unwrap_or_else(|e| super::super::spi::spi_failed(e, F));
    let rebuild = drop_indexes(client, BLOCK_KEYS, true, F);
    let mut blocked = index
        .block_with(&names, &limits, model.max_candidate_pairs, |keys, ids| {
            for chunk in keys.chunks(1_000_000) {
                let rows = chunk.iter().map(|&(h, i)| (h, ids[i as usize])).collect();
                write_block_key_rows(client, BLOCK_KEYS, rows);
            }
        })
        .unwrap_or_else(|e| limit_exceeded(e, F));
    rebuild_indexes(client, rebuild, F);
    write_matching_state(client, model);
    for (i, largest) in blocked.largest.clone().into_iter().enumerate() {
        if let Some((hash, _)) = largest {
            blocked.stats[i].largest_skipped_key =
                skipped_key(client, model, BLOCK_KEYS, i, hash, F);
        }
    }
    blocked
}

/// The candidates of the valid blocks scored and written, a batch of blocks at a time: blocks
/// are gathered in their order until their distinct members fill `stream.buffer` or they may
/// hold a million pairs (as `super::stream::stream_blocks` gathers them), then the members are
/// read once by id and the batch's candidates made from the held valid keys.
#[allow(clippy::too_many_arguments)]
fn score_blocked(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    model: &Model,
    ctx: &Context,
    ids: &std::collections::HashMap<String, i32>,
    version: Option<i32>,
    mut blocked: Blocked,
    packed: Option<&PackedRecords>,
    phases: &mut Phases,
) -> Figures {
    stream.run(client, "TRUNCATE unify.pairs");
    let rebuild = drop_indexes(client, "unify.pairs", true, F);
    let scorer = Scorer::new(model, ctx, ids);
    let threads = workers();
    let (mut stored, mut matches, mut forced) = (0i64, 0i64, 0i64);
    let mut scored: Vec<PairRow> = Vec::new();
    let mut new_pairs = vec![0u64; blocked.stats.len()];
    let places = blocked.ids.len();
    // The batch a place was last counted in, and its index among the batch's records.
    let mut seen = vec![u32::MAX; places];
    let mut local = vec![u32::MAX; places];
    let (mut batch, mut start, mut bound, mut read) = (0u32, 0usize, 0u64, 0usize);
    let mut members: Vec<u32> = Vec::new();
    let mut unpacked = Unpacked::default();
    let blocks = blocked.blocks();
    for b in 0..blocks {
        let m = blocked.members_of(b);
        let n = m.len() as u64;
        bound += n * (n - 1) / 2;
        for &p in m {
            if seen[p as usize] != batch {
                seen[p as usize] = batch;
                members.push(p);
            }
        }
        if members.len() < stream.buffer && bound < 1_000_000 && b + 1 < blocks {
            continue;
        }
        read += members.len();
        // The members by id, once for all of the batch's blocks.
        let mut wanted: Vec<(i64, u32)> = members
            .drain(..)
            .map(|p| (blocked.ids[p as usize], p))
            .collect();
        wanted.sort_unstable();
        let read;
        let records: &[MatchRecord] = match packed {
            // Unpacked on all threads, into the records of the last batch: their memory is used
            // again, not given back and faulted in anew each batch.
            Some(packed) => {
                for (k, &(_, p)) in wanted.iter().enumerate() {
                    local[p as usize] = k as u32;
                }
                unpacked.fill(packed, wanted.iter().map(|&(_, p)| p), threads)
            }
            None => {
                read = read_members(client, stream, &wanted, &mut local);
                &read
            }
        };
        let (local_ref, held) = (&local, &blocked);
        let cands: Vec<Candidate> = crate::parallel::flat_map(b + 1 - start, threads, |range| {
            let mut out = Vec::new();
            held.each_pair(start + range.start..start + range.end, |_, c| {
                let (a, b) = (local_ref[c.a as usize], local_ref[c.b as usize]);
                if a != u32::MAX && b != u32::MAX {
                    out.push(Candidate {
                        a,
                        b,
                        rules: c.rules,
                    });
                }
            });
            out
        });
        // A candidate's lowest rule is its block's.
        for c in &cands {
            if let Some(n) = new_pairs.get_mut(c.rules.trailing_zeros() as usize) {
                *n += 1;
            }
        }
        for chunk in cands.chunks(1_000_000) {
            // This chunk is scored on the other threads while this one writes the last one's
            // pairs.
            let (rows, ()) = pair_rows_beside(model, &scorer, records, chunk, || {
                write_pairs(client, std::mem::take(&mut scored), version, F)
            });
            stored += rows.len() as i64;
            matches += rows.iter().filter(|r| r.is_match).count() as i64;
            forced += rows.iter().filter(|r| r.forced_by.is_some()).count() as i64;
            scored = rows;
        }
        (batch, start, bound) = (batch + 1, b + 1, 0);
    }
    write_pairs(client, scored, version, F);
    pgrx::debug1!(
        "score_pairs: {read} batch members in {batch} batches ({})",
        if packed.is_some() {
            "packed"
        } else {
            "read by id"
        }
    );
    phases.mark("score");
    rebuild_indexes(client, rebuild, F);
    phases.mark("pair indexes");
    for (s, n) in blocked.stats.iter_mut().zip(new_pairs) {
        s.new_pairs += n;
    }
    let stats = &blocked.stats;
    let candidate_pairs =
        (!stats.is_empty()).then(|| stats.iter().map(|s| s.new_pairs as i64).sum());
    write_blocking_stats(client, stats);
    (candidate_pairs, stored, matches, forced)
}

/// The members `wanted` (id, place; sorted) read by id, each one's index among them set in
/// `local` (`u32::MAX` for one gone since the keys were made: deleted meanwhile).
fn read_members(
    client: &mut SpiClient<'_>,
    stream: &Stream,
    wanted: &[(i64, u32)],
    local: &mut [u32],
) -> Vec<MatchRecord> {
    // The ids' array freed after the statement (see `in_own_context`).
    let raw = in_own_context(|| {
        with_generic_plan(client, stream, |client| {
            fetch_all(
                client,
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.record_id = ANY($1)"
                ),
                vec![wanted.iter().map(|w| w.0).collect::<Vec<i64>>().into()],
                F,
                |row| raw_record_from_row(row, F),
            )
        })
    });
    let mut records = prepare_all(raw);
    records.sort_unstable_by_key(|r| r.id);
    for &(_, p) in wanted {
        local[p as usize] = u32::MAX;
    }
    let mut w = wanted.iter().peekable();
    for (k, r) in records.iter().enumerate() {
        while w.next_if(|x| x.0 < r.id).is_some() {}
        if let Some(&&(id, p)) = w.peek() {
            if id == r.id {
                local[p as usize] = k as u32;
            }
        }
    }
    records
}
