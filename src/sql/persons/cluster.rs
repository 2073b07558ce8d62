//! Clustering: the records in scope over their match pairs and overrides, with stable person
//! ids and the merges and splits they make.

use std::collections::{BTreeSet, HashSet};

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use pgrx::spi::{SpiClient, SpiHeapTupleData};

use super::super::spi::{
    drop_indexes, fetch_all, free_last_result, in_own_context, rebuild_indexes, spi_failed,
    update_kept, Args, Cursor,
};
use super::fresh_ids;
use crate::cluster::components::{pair_order, Clusterer, MatchPair};
use crate::cluster::ids::{former_ids_after, FormerIds, IdEvent, IdPlan};

/// The temp table a full run stages the changed records in when they are more than a chunk.
const CHANGES: &str = "pg_temp.unify_cluster_changes";

fn run(client: &mut SpiClient<'_>, statement: &str, function: &'static str) {
    client
        .update(statement, None, &[])
        .unwrap_or_else(|e| spi_failed(e, function));
}

/// Changed records on their way to unify.records: id, new person, former ids as an array
/// literal.
#[derive(Default)]
struct Chunk {
    records: Vec<i64>,
    persons: Vec<i64>,
    former: Vec<Option<String>>,
}

impl Chunk {
    /// Into the temp table.
    fn stage(self, client: &mut SpiClient<'_>) {
        if self.records.is_empty() {
            return;
        }
        in_own_context(|| {
            client
                .update(
                    &format!(
                        "INSERT INTO {CHANGES} SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[])"
                    ),
                    None,
                    &[
                        self.records.into(),
                        self.persons.into(),
                        self.former.into(),
                    ],
                )
                .unwrap_or_else(|e| spi_failed(e, "resolve"));
        });
        free_last_result();
    }
}

/// Clusters the records in scope (all, or those of `person_ids` plus `record_ids`) over their
/// match pairs and overrides, gives the clusters stable person ids (giving a separated group
/// back the id it had before a merge: `crate::cluster::ids`), updates `unify.records.person_id`
/// and `former_person_ids`, and writes merges and splits to `unify.identity_events`.
///
/// One row: the records and persons (clusters) in scope, the new person ids, merges and splits,
/// the pairs held apart by a cannot-link, the contradicting overrides, the records whose person
/// changed, and (for a scope, not a full run) every person id before or after.
// pgrx reads the column names from the signature itself: no type alias for the row.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile)]
fn _cluster(
    person_ids: Option<Vec<i64>>,
    record_ids: Option<Vec<i64>>,
    rule: &str,
    reason: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(records, i64),
        name!(persons, i64),
        name!(new_persons, i64),
        name!(merges, i64),
        name!(splits, i64),
        name!(held_apart, i64),
        name!(contradictions, i64),
        name!(changed_records, i64),
        name!(touched, Option<Vec<i64>>),
    ),
> {
    const F: &str = "resolve";
    let full = person_ids.is_none() && record_ids.is_none();
    // Records per fetch and per written chunk within customer_unify.batch_memory (a few hundred
    // bytes a row in flight).
    let batch = (crate::budget::kb() as usize * 4).clamp(100, 200_000);
    Spi::connect_mut(|client| {
        // The records in scope in record id order: their dense index is their rank, found by a
        // binary search (8 bytes a record, no map). Former ids only where a record has any.
        let mut ids: Vec<i64> = Vec::new();
        let mut previous: Vec<Option<i64>> = Vec::new();
        let mut former = FormerIds::default();
        let mut take = |r: &SpiHeapTupleData| {
            let i = ids.len() as u32;
            ids.push(r.get::<i64>(1).ok().flatten().unwrap_or_default());
            previous.push(r.get::<i64>(2).ok().flatten());
            former.push(i, r.get::<Vec<i64>>(3).ok().flatten().unwrap_or_default());
        };
        if full {
            let cursor = Cursor::open(
                client,
                "unify_cluster_records",
                "SELECT record_id, person_id, former_person_ids FROM unify.records ORDER BY record_id",
                batch,
                F,
            );
            loop {
                let n = cursor.next(client, &mut take).len();
                if n == 0 {
                    break;
                }
            }
            cursor.close(client);
        } else {
            fetch_all(
                client,
                "SELECT record_id, person_id, former_person_ids FROM unify.records
                  WHERE person_id = ANY ($1) OR record_id = ANY ($2) ORDER BY record_id",
                vec![
                    person_ids.clone().unwrap_or_default().into(),
                    record_ids.clone().unwrap_or_default().into(),
                ],
                F,
                |r| take(r),
            );
        }
        let index = |id: i64| ids.binary_search(&id).ok().map(|i| i as u32);
        // Pairs and overrides are found by their first record and kept when the second is in
        // scope too, tested here: as a filter in a kept (generic) plan, `b = ANY ($1)` scans
        // the whole array for every row (93 ms against 27 ms for 3,000 records).
        let scope_filter = if full { "" } else { "AND a = ANY ($1)" };
        let scope_args = || -> Args {
            if full {
                vec![]
            } else {
                vec![ids.clone().into()]
            }
        };
        let overrides: Vec<(i64, i64, bool)> = fetch_all(
            client,
            &format!(
                "SELECT a, b, must FROM (
                   SELECT ra.record_id AS a, rb.record_id AS b, o.kind = 'must_link' AS must
                   FROM unify.overrides o
                   JOIN unify.records ra ON ra.source_id = o.source_a AND ra.source_key = o.key_a
                   JOIN unify.records rb ON rb.source_id = o.source_b AND rb.source_key = o.key_b) o
                 WHERE true {scope_filter}"
            ),
            scope_args(),
            F,
            |r| {
                (
                    r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                    r.get::<i64>(2).ok().flatten().unwrap_or_default(),
                    r.get::<bool>(3).ok().flatten().unwrap_or_default(),
                )
            },
        );
        let mut clusterer = Clusterer::new(ids.len());
        // The dense indices of a pair in scope and apart; None for a pair naming one record,
        // or (counted) a record out of scope.
        let lookup = |a: i64, b: i64, c: &mut Clusterer| match (index(a), index(b)) {
            (Some(x), Some(y)) if x != y => Some((x, y)),
            (Some(_), Some(_)) => None,
            _ => {
                c.unknown();
                None
            }
        };
        for &(a, b, _) in overrides.iter().filter(|o| !o.2) {
            if let Some((x, y)) = lookup(a, b, &mut clusterer) {
                clusterer.cannot_link(x, y);
            }
        }
        for &(a, b, _) in overrides.iter().filter(|o| o.2) {
            if let Some((x, y)) = lookup(a, b, &mut clusterer) {
                clusterer.must_link(x, y);
            }
        }
        drop(overrides);
        let pair = |r: &SpiHeapTupleData| MatchPair {
            a: r.get::<i64>(1).ok().flatten().unwrap_or_default(),
            b: r.get::<i64>(2).ok().flatten().unwrap_or_default(),
            weight: r.get::<f64>(3).ok().flatten().unwrap_or_default(),
        };
        if full {
            // Every match pair, streamed in the order they join (components::pair_order):
            // PostgreSQL sorts them within work_mem; here only the union-find.
            let cursor = Cursor::open(
                client,
                "unify_cluster_pairs",
                "SELECT record_a, record_b, match_weight FROM unify.pairs WHERE is_match
                  ORDER BY match_weight DESC, least(record_a, record_b), greatest(record_a, record_b)",
                batch,
                F,
            );
            loop {
                let pairs = cursor.next(client, pair);
                if pairs.is_empty() {
                    break;
                }
                for p in pairs {
                    if let Some((x, y)) = lookup(p.a, p.b, &mut clusterer) {
                        clusterer.matched(x, y);
                    }
                }
            }
            cursor.close(client);
        } else {
            let mut matches: Vec<MatchPair> = fetch_all(
                client,
                "SELECT a, b, w FROM (SELECT record_a AS a, record_b AS b, match_weight AS w
                   FROM unify.pairs WHERE is_match) p WHERE true AND a = ANY ($1)",
                scope_args(),
                F,
                pair,
            );
            matches.retain(|p| index(p.b).is_some());
            matches.sort_by(pair_order);
            for p in matches {
                if let Some((x, y)) = lookup(p.a, p.b, &mut clusterer) {
                    clusterer.matched(x, y);
                }
            }
        }
        let clustering = clusterer.finish();
        let mut plan = IdPlan::with_history(
            &clustering.cluster_of,
            clustering.clusters,
            &previous,
            &former,
        );
        // Former ids a separated group could get back: not those still in use outside the
        // scope (by a record or a golden record) or ever erased.
        let candidates = plan.restore_candidates();
        if !candidates.is_empty() {
            let unavailable: HashSet<i64> = fetch_all(
                client,
                "SELECT x FROM unnest($1::bigint[]) AS x
                  WHERE EXISTS (SELECT 1 FROM unify.records r WHERE r.person_id = x)
                     OR EXISTS (SELECT 1 FROM unify.persons p WHERE p.person_id = x)
                     OR EXISTS (SELECT 1 FROM unify.identity_events e WHERE e.person_id = x AND e.event = 'erase')",
                vec![candidates.into()],
                F,
                |r| r.get::<i64>(1).ok().flatten().unwrap_or_default(),
            )
            .into_iter()
            .collect();
            plan.restore(&unavailable);
        }
        let fresh = fresh_ids(client, "unify.person_id_seq", plan.new_ids_needed(), F);
        let person_of_cluster = plan.ids(&fresh);
        let events = plan.events(&person_of_cluster);

        // The records whose person changes, written a chunk of `batch` at a time (one UPDATE
        // when they fit one chunk; else the chunks go to a temp table first, and one UPDATE
        // joins it, so the table is read once).
        let person_of = |i: usize| person_of_cluster[clustering.cluster_of[i] as usize];
        let changed = (0..ids.len())
            .filter(|&i| previous[i] != Some(person_of(i)))
            .count();
        // A first resolve gives every record its person: rewriting most of the table goes
        // faster without its indexes (see unify._drop_indexes), the primary key and the unique
        // source key too: a new row version outside its page is entered in every index, and a
        // unique one checks the old version first (issue 27, 1M records: the update took half
        // as long without them; with their rebuild, a fifth less in all).
        let rebuild = if full && changed * 2 > ids.len() {
            drop_indexes(client, "unify.records", true, F)
        } else {
            Vec::new()
        };
        let staged = changed > batch;
        if staged {
            run(client, &format!("DROP TABLE IF EXISTS {CHANGES}"), F);
            run(
                client,
                &format!(
                    "CREATE TEMP TABLE {CHANGES} (record_id bigint, person_id bigint, former text)"
                ),
                F,
            );
        }
        let mut touched: BTreeSet<i64> = if full {
            BTreeSet::new()
        } else {
            previous.iter().flatten().copied().collect()
        };
        let mut chunk = Chunk::default();
        for (i, &c) in clustering.cluster_of.iter().enumerate() {
            let person = person_of_cluster[c as usize];
            if previous[i] != Some(person) {
                chunk.records.push(ids[i]);
                chunk.persons.push(person);
                let restored = plan.restored(c) == Some(person);
                let after = former_ids_after(previous[i], former.get(i), person, restored);
                // As an array literal (rows of a bigint[][] would need one length); none: NULL.
                chunk.former.push((!after.is_empty()).then(|| {
                    let list: Vec<String> = after.iter().map(i64::to_string).collect();
                    format!("{{{}}}", list.join(","))
                }));
                if !full {
                    touched.insert(person);
                }
                if staged && chunk.records.len() >= batch {
                    std::mem::take(&mut chunk).stage(client);
                }
            }
        }
        if staged {
            chunk.stage(client);
            run(client, &format!("ANALYZE {CHANGES}"), F);
            run(
                client,
                &format!(
                    "UPDATE unify.records t SET person_id = u.person_id, former_person_ids = u.former::bigint[]
                       FROM {CHANGES} u WHERE t.record_id = u.record_id"
                ),
                F,
            );
            run(client, &format!("DROP TABLE {CHANGES}"), F);
        } else if !chunk.records.is_empty() {
            update_kept(
                client,
                "UPDATE unify.records t SET person_id = u.person_id, former_person_ids = u.former::bigint[]
                   FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u (record_id, person_id, former)
                  WHERE t.record_id = u.record_id",
                &vec![
                    chunk.records.into(),
                    chunk.persons.into(),
                    chunk.former.into(),
                ],
            )
            .unwrap_or_else(|e| spi_failed(e, F));
        }
        rebuild_indexes(client, rebuild, F);
        let (mut merges, mut splits) = (0i64, 0i64);
        // A chunk of events per statement, in their order (their ids follow it). An id given
        // back names an event of an earlier run, never one of these (it was no previous id).
        for chunk in events.chunks(batch) {
            let event_rows: Vec<Value> = chunk
                .iter()
                .map(|e| match e {
                    IdEvent::Merge {
                        person_id,
                        absorbed,
                    } => {
                        merges += 1;
                        json!({"event": "merge", "person_id": person_id, "related": absorbed})
                    }
                    IdEvent::Split {
                        person_id,
                        into,
                        restored,
                    } => {
                        splits += 1;
                        json!({"event": "split", "person_id": person_id, "related": into,
                               "restored": restored})
                    }
                })
                .collect();
            in_own_context(|| {
                update_kept(
                    client,
                    // An id given back names the event that took it away: the last merge that
                    // absorbed it, or split it.
                    "INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
                     SELECT e ->> 'event', (e ->> 'person_id')::bigint,
                            ARRAY(SELECT jsonb_array_elements_text(e -> 'related')::bigint), $2, $3,
                            (SELECT jsonb_build_object('restored', jsonb_agg(jsonb_build_object(
                                        'person_id', x.id,
                                        'undoes', (SELECT max(v.event_id) FROM unify.identity_events v
                                                   WHERE (v.event = 'merge' AND v.related_ids @> ARRAY[x.id])
                                                      OR (v.event = 'split' AND v.person_id = x.id)))
                                        ORDER BY x.id))
                             FROM (SELECT r::bigint AS id FROM jsonb_array_elements_text(e -> 'restored') r) x
                             HAVING count(*) > 0)
                     FROM jsonb_array_elements($1) AS e",
                    &vec![
                        JsonB(Value::Array(event_rows)).into(),
                        rule.into(),
                        reason.into(),
                    ],
                )
                .unwrap_or_else(|e| spi_failed(e, F));
            });
            free_last_result();
        }
        TableIterator::once((
            ids.len() as i64,
            clustering.clusters as i64,
            fresh.len() as i64,
            merges,
            splits,
            clustering.held_apart as i64,
            clustering.contradictions as i64,
            changed as i64,
            (!full).then(|| touched.into_iter().collect()),
        ))
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn clustering_nothing_returns_one_row_of_zeros() {
        let row = Spi::get_two::<i64, i64>(
            "SELECT records, persons FROM unify._cluster(NULL, NULL, 'resolve', NULL)",
        )
        .unwrap();
        assert_eq!(row, (Some(0), Some(0)));
        // A scope names the persons it touched (none here); a full run does not.
        let touched = Spi::get_one::<Vec<i64>>(
            "SELECT touched FROM unify._cluster(ARRAY[]::bigint[], ARRAY[]::bigint[], 'resolve', NULL)",
        )
        .unwrap();
        assert_eq!(touched, Some(vec![]));
        let touched = Spi::get_one::<Vec<i64>>(
            "SELECT touched FROM unify._cluster(NULL, NULL, 'resolve', NULL)",
        )
        .unwrap();
        assert_eq!(touched, None);
    }
}
