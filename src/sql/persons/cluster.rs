//! Clustering: the records in scope over their match pairs and overrides, with stable person
//! ids and the merges and splits they make.

use std::collections::{BTreeSet, HashSet};

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use pgrx::spi::{SpiClient, SpiHeapTupleData};

use super::super::matching::run::Phases;
use super::super::spi::{
    drop_indexes, fetch_all, free_last_result, in_own_context, insert_arrays, rebuild_indexes,
    set_back, spi_failed, swap_batch_work_mem, swap_setting, update_kept, update_with, Args,
    Cursor,
};
use super::{count, fetch_batch, with_fresh_ids, Stream};
use crate::cluster::batches::{Batch, BatchRecord, KeyedEvent, LinkKind};
use crate::cluster::components::{pair_order, Clusterer, MatchPair};
use crate::cluster::ids::{former_ids_after, FormerIds, IdEvent, IdPlan, PackedId, PreviousId};

/// The temp table a full run stages the changed records in when they are more than a chunk.
const CHANGES: &str = "pg_temp.unify_cluster_changes";

fn run(client: &mut SpiClient<'_>, statement: &str, function: &'static str) {
    client
        .update(statement, None, &[])
        .unwrap_or_else(|e| spi_failed(e, function));
}

/// Changed records on their way to unify.record_persons: id, new person, former ids as an
/// array literal.
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
        insert_arrays(
            client,
            CHANGES,
            &["bigint[]", "bigint[]", "text[]"],
            || vec![self.records.into(), self.persons.into(), self.former.into()],
            "resolve",
        );
    }
}

/// Clusters the records in scope (all, or those of `person_ids` plus `record_ids`) over their
/// match pairs and overrides, gives the clusters stable person ids (giving a separated group
/// back the id it had before a merge: `crate::cluster::ids`), writes the records whose person
/// changed to `unify.record_persons` (person and former ids), and merges and splits to
/// `unify.identity_events`.
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
    // Records per fetch and per written chunk.
    let batch = fetch_batch();
    Spi::connect_mut(|client| {
        // A full run whose clustering state would pass half the budget (the other half left to
        // PostgreSQL's sorts and the rows in flight): a batch of whole components at a time
        // (issue 27). At 1GB that is above about 12M records in a first resolve.
        let mut capacity = 0;
        if full {
            let half = crate::budget::kb() * 1024 / 2;
            let total = count(client, "SELECT count(*) FROM unify.records");
            let fits = |with_person| held_state_bytes(total, with_person) <= half;
            // The records with a person counted only where they decide.
            let held = fits(0)
                && (fits(total)
                    || fits(count(client, "SELECT count(*) FROM unify.record_persons")));
            if !held {
                return TableIterator::once(in_batches(client, rule, reason, batch, total));
            }
            capacity = total as usize;
        }
        // A full run held at once: seconds and private memory per phase at DEBUG1 (where a run
        // within the budget grows). Not for the queue's small scopes.
        let mut phases = full.then(|| Phases::new("_cluster"));
        let mut mark = |phase: &'static str| {
            if let Some(p) = phases.as_mut() {
                p.mark(phase);
            }
        };
        // The records in scope in record id order: their dense index is their rank, found by a
        // binary search (8 bytes a record, no map). Former ids only where a record has any.
        // A full run's arrays are made at their size: grown by doubling they held up to twice.
        let mut ids: Vec<i64> = Vec::with_capacity(capacity);
        let mut previous: Vec<PackedId> = Vec::with_capacity(capacity);
        let mut former = FormerIds::default();
        let mut take = |r: &SpiHeapTupleData| {
            let i = ids.len() as u32;
            ids.push(r.get::<i64>(1).ok().flatten().unwrap_or_default());
            previous.push(PackedId::new(r.get::<i64>(2).ok().flatten()));
            former.push(i, r.get::<Vec<i64>>(3).ok().flatten().unwrap_or_default());
        };
        if full {
            let cursor = Cursor::open(
                client,
                "unify_cluster_records",
                "SELECT r.record_id, rp.person_id, rp.former_person_ids
                   FROM unify.records r LEFT JOIN unify.record_persons rp ON rp.record_id = r.record_id
                  ORDER BY r.record_id",
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
                "SELECT r.record_id, rp.person_id, rp.former_person_ids
                   FROM (SELECT x.record_id FROM unify.record_persons x WHERE x.person_id = ANY ($1)
                         UNION SELECT unnest($2::bigint[])) s
                   JOIN unify.records r ON r.record_id = s.record_id
                   LEFT JOIN unify.record_persons rp ON rp.record_id = s.record_id
                  ORDER BY r.record_id",
                vec![
                    person_ids.clone().unwrap_or_default().into(),
                    record_ids.clone().unwrap_or_default().into(),
                ],
                F,
                |r| take(r),
            );
        }
        mark("records read");
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
        mark("clustered");
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
            let unavailable = unavailable_ids(client, candidates);
            plan.restore(&unavailable);
        }
        let new_persons = plan.new_ids_needed();
        let person_of_cluster =
            with_fresh_ids(client, "unify.person_id_seq", new_persons, F, |next| {
                plan.ids_drawn(next)
            });
        let events = plan.events(&person_of_cluster);
        mark("ids planned");

        // The records whose person changes, written a chunk of `batch` at a time (one statement
        // when they fit one chunk; else the chunks go to a temp table first, and one statement
        // reads it).
        let person_of = |i: usize| person_of_cluster[clustering.cluster_of[i] as usize];
        let changed = (0..ids.len())
            .filter(|&i| previous[i].id() != Some(person_of(i)))
            .count();
        // A first resolve: no record had a person, so unify.record_persons is empty.
        let first_fill = full && changed > 0 && previous.iter().all(|p| p.is_none());
        let staged = changed > batch;
        if staged {
            crate::sql::spi::drop_temp_tables(client, &[CHANGES], F);
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
            previous.iter().filter_map(|p| p.id()).collect()
        };
        let mut chunk = Chunk::default();
        for (i, &c) in clustering.cluster_of.iter().enumerate() {
            let person = person_of_cluster[c as usize];
            if previous[i].id() != Some(person) {
                chunk.records.push(ids[i]);
                chunk.persons.push(person);
                let restored = plan.restored(c) == Some(person);
                let after = former_ids_after(previous[i].id(), former.get(i), person, restored);
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
            write_mappings(client, &format!("{CHANGES} u"), vec![], first_fill);
            run(client, &format!("DROP TABLE {CHANGES}"), F);
        } else if !chunk.records.is_empty() {
            write_mappings(
                client,
                "unnest($1::bigint[], $2::bigint[], $3::text[]) AS u (record_id, person_id, former)",
                vec![
                    chunk.records.into(),
                    chunk.persons.into(),
                    chunk.former.into(),
                ],
                first_fill,
            );
        }
        mark("records written");
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
            new_persons as i64,
            merges,
            splits,
            clustering.held_apart as i64,
            clustering.contradictions as i64,
            changed as i64,
            (!full).then(|| touched.into_iter().collect()),
        ))
    })
}

/// `_cluster`'s row (its columns named in its signature).
type ClusterRow = (i64, i64, i64, i64, i64, i64, i64, i64, Option<Vec<i64>>);

/// Memory of a full run's clustering held at once, `records` of which `with_person` had a
/// person. Per record its id, previous id and cluster (8 + 8 + 4 bytes), and the larger of the
/// union-find while it runs (8) and, per cluster (at most one a record), the id kept, the id
/// given back and the final id (8 each; the new ids are drawn a fetch at a time). Per record
/// with a person the id plan's entry and its sum per previous id (16 + 24). The rows in flight
/// (a fetch, a chunk of changes) are in the other half of the budget; not counted either: the
/// former ids of the few records that have any, and the run's merge and split events.
fn held_state_bytes(records: u64, with_person: u64) -> u64 {
    const PER_RECORD: u64 = 8 + 8 + 4 + 3 * 8;
    const PER_PREVIOUS: u64 = 16 + 24;
    records
        .saturating_mul(PER_RECORD)
        .saturating_add(with_person.saturating_mul(PER_PREVIOUS))
}

/// Bytes a record of a batch holds (the batch's arrays and its share of the links and of the
/// rows in flight): a batch of whole components holds about the budget over this many records.
const BATCH_RECORD_BYTES: u64 = 400;

/// The temp tables of a run in batches, dropped at its end.
const EDGES: &str = "pg_temp.unify_cluster_edges";
const LABELS: &str = "pg_temp.unify_cluster_labels";
const LINKS: &str = "pg_temp.unify_cluster_links";
const FRESH: &str = "pg_temp.unify_cluster_fresh";
const FRESH_IDS: &str = "pg_temp.unify_cluster_fresh_ids";
const EVENTS: &str = "pg_temp.unify_cluster_events";

/// A full run whose clustering would not fit `customer_unify.batch_memory` (issue 27): the same
/// persons, ids, former ids and events as all records held at once, within the budget whatever
/// the number of records (`crate::cluster::batches` says why a batch of whole components
/// decides what the whole run would).
///
/// 1. The records that take part, set-based in SQL: those of a match pair or a must-link, of a
///    previous person with more than one record, with former ids, or without a person. Every
///    other record is alone in its cluster and keeps its person: nothing to do.
/// 2. Their components (each record's label is the smallest record id of its component): by a
///    union-find in Rust over the records taking part, 12 bytes each, while they fit half the
///    budget (`super::label_components`); past that by label propagation over temp tables
///    (PostgreSQL's joins spill to disk within work_mem), a pass per link of the longest chain.
/// 3. Rust reads them in label order, a batch of whole components of about the budget at a
///    time, with the batch's links (cannot, must, then the match pairs in the order they join),
///    and stages the changed records, the events and the clusters that need a new id.
/// 4. New ids drawn in the order of each cluster's smallest record, put in for the
///    placeholders; the records updated; the events written in the order of a whole run.
fn in_batches(
    client: &mut SpiClient<'_>,
    rule: &str,
    reason: Option<&str>,
    batch: usize,
    total: u64,
) -> ClusterRow {
    const F: &str = "resolve";
    let budget = crate::budget::kb();
    let limit = (budget * 1024 / BATCH_RECORD_BYTES).max(16) as usize;
    // PostgreSQL's own part within the budget too: its sorts and hashes of the statements
    // below in an eighth of it each (two cursors' sorts are open at once; a hash join takes
    // hash_mem_multiplier times work_mem; `unify.resolve` has set it already, a stewardship
    // change has not). Set back at the end (an error ends the transaction, which sets it back).
    // The index rebuild after a first resolve sets its own memory (`rebuild_indexes`).
    let work_mem = swap_batch_work_mem(client, F);
    crate::sql::spi::drop_temp_tables(
        client,
        &[EDGES, LABELS, LINKS, FRESH, FRESH_IDS, EVENTS, CHANGES],
        F,
    );
    // 1. What joins two records' fates: a match pair, a must-link, the same previous person, a
    // former id carried by both (each record of a person or former id linked to its smallest).
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {EDGES} AS
             SELECT record_a AS a, record_b AS b FROM unify.pairs WHERE is_match AND record_a <> record_b
             UNION ALL
             SELECT ra.record_id, rb.record_id FROM unify.overrides o
               JOIN unify.records ra ON ra.source_id = o.source_a AND ra.source_key = o.key_a
               JOIN unify.records rb ON rb.source_id = o.source_b AND rb.source_key = o.key_b
              WHERE o.kind = 'must_link' AND ra.record_id <> rb.record_id
             UNION ALL
             SELECT first, record_id FROM (
                 SELECT record_id, min(record_id) OVER (PARTITION BY person_id) AS first
                   FROM unify.record_persons) s
              WHERE first <> record_id
             UNION ALL
             SELECT first, record_id FROM (
                 SELECT rp.record_id, min(rp.record_id) OVER (PARTITION BY f.id) AS first
                   FROM unify.record_persons rp, unnest(rp.former_person_ids) AS f (id)) s
              WHERE first <> record_id"
        ),
        F,
    );
    // 2. Each record's label: the smallest record of its component. Found by a union-find in
    // Rust over the records that take part (12 bytes each: up to some 44M records within half
    // of 1GB); past that by passing labels along the edges in SQL until none changes.
    // Besides the edges' ends: the records without a person and those with former ids.
    let alone = "SELECT r.record_id FROM unify.records r
          WHERE NOT EXISTS (SELECT 1 FROM unify.record_persons rp WHERE rp.record_id = r.record_id)
         UNION ALL SELECT record_id FROM unify.record_persons WHERE former_person_ids IS NOT NULL";
    run(
        client,
        &format!("CREATE TEMP TABLE {LABELS} (node bigint NOT NULL, label bigint NOT NULL)"),
        F,
    );
    let by_union_find = super::label_components(
        client,
        &format!(
            "SELECT node FROM (SELECT a AS node FROM {EDGES} UNION ALL SELECT b FROM {EDGES}
                               UNION ALL {alone}) s
             GROUP BY node ORDER BY node"
        ),
        total,
        &format!("SELECT a, b FROM {EDGES}"),
        LABELS,
        F,
    );
    if !by_union_find {
        // At first the smallest of itself and its neighbours.
        run(
            client,
            &format!(
                "INSERT INTO {LABELS}
                 SELECT node, min(label) FROM (
                     SELECT a AS node, least(a, b) AS label FROM {EDGES}
                     UNION ALL SELECT b, least(a, b) FROM {EDGES}
                     UNION ALL SELECT x.record_id, x.record_id FROM ({alone}) x) s
                 GROUP BY node"
            ),
            F,
        );
    }
    run(
        client,
        &format!("ALTER TABLE {LABELS} ADD PRIMARY KEY (node)"),
        F,
    );
    run(client, &format!("ANALYZE {LABELS}"), F);
    let mut rounds = 0u32;
    if !by_union_find {
        run(client, &format!("ANALYZE {EDGES}"), F);
        // Then, until nothing changes: each takes its label's label (a jump along the labels),
        // and the smallest label of its neighbours. Labels only fall and are record ids of the
        // component: at the end each is the component's smallest record.
        loop {
            crate::interrupt::check();
            rounds += 1;
            count(
                client,
                &format!(
                    "WITH u AS (UPDATE {LABELS} t SET label = j.label FROM {LABELS} j
                                 WHERE j.node = t.label AND j.label < t.label RETURNING 1)
                     SELECT count(*) FROM u"
                ),
            );
            let changed = count(
                client,
                &format!(
                    "WITH n AS (
                         SELECT e.a AS node, l.label FROM {EDGES} e JOIN {LABELS} l ON l.node = e.b
                         UNION ALL
                         SELECT e.b, l.label FROM {EDGES} e JOIN {LABELS} l ON l.node = e.a),
                     u AS (UPDATE {LABELS} t SET label = m.label
                             FROM (SELECT node, min(label) AS label FROM n GROUP BY node) m
                            WHERE t.node = m.node AND m.label < t.label RETURNING 1)
                     SELECT count(*) FROM u"
                ),
            );
            if changed == 0 {
                break;
            }
        }
    }
    run(client, &format!("DROP TABLE {EDGES}"), F);
    // The links of each component, in the order they are given: cannot-links (only those
    // within a component can matter), must-links, the match pairs in the order they join.
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {LINKS} AS
             SELECT la.label, o.kind, o.a, o.b, 0::float8 AS w FROM (
                 SELECT ra.record_id AS a, rb.record_id AS b, CASE o.kind WHEN 'cannot_link' THEN 0 ELSE 1 END AS kind
                   FROM unify.overrides o
                   JOIN unify.records ra ON ra.source_id = o.source_a AND ra.source_key = o.key_a
                   JOIN unify.records rb ON rb.source_id = o.source_b AND rb.source_key = o.key_b) o
               JOIN {LABELS} la ON la.node = o.a
               JOIN {LABELS} lb ON lb.node = o.b AND lb.label = la.label
             UNION ALL
             SELECT l.label, 2, p.record_a, p.record_b, p.match_weight
               FROM unify.pairs p JOIN {LABELS} l ON l.node = p.record_a
              WHERE p.is_match"
        ),
        F,
    );
    run(
        client,
        &format!("CREATE TEMP TABLE {CHANGES} (record_id bigint, person_id bigint, former text)"),
        F,
    );
    run(
        client,
        &format!("CREATE TEMP TABLE {FRESH} (key bigint)"),
        F,
    );
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {EVENTS} (kind int, key bigint, event text, person_id bigint,
                                         related bigint[], restored bigint[])"
        ),
        F,
    );
    // The cursors are read to their end: planned for all their rows (one sort each).
    let fraction = swap_setting(client, "cursor_tuple_fraction", "1", F);
    let mut records = Stream::open(
        client,
        "unify_cluster_components",
        &format!(
            "SELECT l.label, r.record_id, rp.person_id, rp.former_person_ids
               FROM {LABELS} l JOIN unify.records r ON r.record_id = l.node
               LEFT JOIN unify.record_persons rp ON rp.record_id = l.node
              ORDER BY l.label, r.record_id"
        ),
        batch,
        F,
        |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                BatchRecord {
                    id: r.get::<i64>(2).ok().flatten().unwrap_or_default(),
                    previous: r.get::<i64>(3).ok().flatten(),
                    former: r.get::<Vec<i64>>(4).ok().flatten().unwrap_or_default(),
                },
            )
        },
    );
    let mut links = Stream::open(
        client,
        "unify_cluster_links",
        &format!(
            "SELECT label, kind, a, b FROM {LINKS}
              ORDER BY label, kind, w DESC, least(a, b), greatest(a, b)"
        ),
        batch,
        F,
        |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<i32>(2).ok().flatten().unwrap_or_default(),
                r.get::<i64>(3).ok().flatten().unwrap_or_default(),
                r.get::<i64>(4).ok().flatten().unwrap_or_default(),
            )
        },
    );
    let (mut streamed, mut clusters, mut held_apart, mut contradictions) = (0u64, 0u64, 0u64, 0u64);
    let mut batches = 0u64;
    loop {
        // 3. A batch: whole components (all rows of a label) up to about `limit` records.
        let mut rows: Vec<BatchRecord> = Vec::new();
        let mut last: Option<i64> = None;
        while let Some(&(label, _)) = records.peek(client) {
            if rows.len() >= limit && Some(label) != last {
                break;
            }
            let (label, record) = records.pop(client).expect("peeked");
            last = Some(label);
            rows.push(record);
        }
        let Some(hi) = last else { break };
        streamed += rows.len() as u64;
        batches += 1;
        let mut part = Batch::new(rows);
        while let Some(&(label, kind, a, b)) = links.peek(client) {
            if label > hi {
                break;
            }
            links.pop(client);
            if let Some(kind) = LinkKind::from_number(kind) {
                part.link(kind, a, b);
            }
        }
        let out = part.finish(|candidates| unavailable_ids(client, candidates));
        clusters += out.clusters;
        held_apart += out.held_apart;
        contradictions += out.contradictions;
        let mut chunk = Chunk::default();
        for change in out.changes {
            chunk.records.push(change.record);
            chunk.persons.push(change.person);
            chunk.former.push((!change.former.is_empty()).then(|| {
                let list: Vec<String> = change.former.iter().map(i64::to_string).collect();
                format!("{{{}}}", list.join(","))
            }));
            if chunk.records.len() >= batch {
                std::mem::take(&mut chunk).stage(client);
            }
        }
        chunk.stage(client);
        if !out.fresh_keys.is_empty() {
            insert_arrays(
                client,
                FRESH,
                &["bigint[]"],
                || vec![out.fresh_keys.into()],
                F,
            );
        }
        for events in out.events.chunks(batch) {
            stage_events(client, events);
        }
    }
    records.close(client);
    links.close(client);
    let components = if by_union_find {
        "components by union-find".to_string()
    } else {
        format!("components by label propagation in {rounds} rounds")
    };
    debug1!(
        "customer_unify: resolve clustered {streamed} of {total} records in {batches} batches of whole components (about {limit} records a batch, {components})"
    );
    set_back(client, "cursor_tuple_fraction", &fraction, F);
    // 4. New ids in the order of each cluster's smallest record (the order of a whole run).
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {FRESH_IDS} AS
             SELECT key, nextval('unify.person_id_seq') AS person_id
               FROM (SELECT key FROM {FRESH} ORDER BY key) k"
        ),
        F,
    );
    run(
        client,
        &format!("ALTER TABLE {FRESH_IDS} ADD PRIMARY KEY (key)"),
        F,
    );
    run(client, &format!("ANALYZE {FRESH_IDS}"), F);
    let new_persons = count(client, &format!("SELECT count(*) FROM {FRESH_IDS}"));
    let changed = count(client, &format!("SELECT count(*) FROM {CHANGES}"));
    // A first resolve (no record has a person yet) fills the table: see write_mappings.
    let first_fill = changed > 0
        && count(
            client,
            "SELECT count(*) FROM (SELECT 1 FROM unify.record_persons LIMIT 1) x",
        ) == 0;
    run(client, &format!("ANALYZE {CHANGES}"), F);
    // The placeholders put in for their new ids as the rows are written (updated in the temp
    // table first, every changed record of a first resolve was written twice).
    write_mappings(
        client,
        &format!(
            "(SELECT c.record_id, coalesce(f.person_id, c.person_id) AS person_id, c.former
                FROM {CHANGES} c LEFT JOIN {FRESH_IDS} f ON c.person_id < 0 AND f.key = -c.person_id) u"
        ),
        vec![],
        first_fill,
    );
    // The events in a whole run's order: merges by their cluster's smallest record, then
    // splits by the id that split. An id given back names the event that took it away.
    let merges = count(
        client,
        &format!("SELECT count(*) FROM {EVENTS} WHERE kind = 0"),
    );
    let splits = count(
        client,
        &format!("SELECT count(*) FROM {EVENTS} WHERE kind = 1"),
    );
    update_kept(
        client,
        &format!(
            "INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
             SELECT e.event, coalesce(pf.person_id, e.person_id),
                    ARRAY(SELECT coalesce(f.person_id, x) AS id FROM unnest(e.related) AS x
                            LEFT JOIN {FRESH_IDS} f ON f.key = -x ORDER BY id),
                    $1, $2,
                    (SELECT jsonb_build_object('restored', jsonb_agg(jsonb_build_object(
                                'person_id', x.id,
                                'undoes', (SELECT max(v.event_id) FROM unify.identity_events v
                                           WHERE (v.event = 'merge' AND v.related_ids @> ARRAY[x.id])
                                              OR (v.event = 'split' AND v.person_id = x.id)))
                                ORDER BY x.id))
                     FROM unnest(e.restored) AS x (id)
                     HAVING count(*) > 0)
               FROM {EVENTS} e LEFT JOIN {FRESH_IDS} pf ON pf.key = -e.person_id
              ORDER BY e.kind, e.key"
        ),
        &vec![rule.into(), reason.into()],
    )
    .unwrap_or_else(|e| spi_failed(e, F));
    for table in [LABELS, LINKS, FRESH, FRESH_IDS, EVENTS, CHANGES] {
        run(client, &format!("DROP TABLE {table}"), F);
    }
    set_back(client, "work_mem", &work_mem, F);
    (
        total as i64,
        (clusters + (total - streamed)) as i64,
        new_persons as i64,
        merges as i64,
        splits as i64,
        held_apart as i64,
        contradictions as i64,
        changed as i64,
        None,
    )
}

/// A batch's events into the temp table, with their sort keys; ids may be placeholders.
fn stage_events(client: &mut SpiClient<'_>, events: &[KeyedEvent]) {
    let rows: Vec<Value> = events
        .iter()
        .map(|e| match &e.event {
            IdEvent::Merge {
                person_id,
                absorbed,
            } => json!({"kind": e.order.0, "key": e.order.1, "event": "merge",
                        "person_id": person_id, "related": absorbed, "restored": []}),
            IdEvent::Split {
                person_id,
                into,
                restored,
            } => json!({"kind": e.order.0, "key": e.order.1, "event": "split",
                        "person_id": person_id, "related": into, "restored": restored}),
        })
        .collect();
    update_with(
        client,
        &format!(
            "INSERT INTO {EVENTS}
             SELECT (e ->> 'kind')::int, (e ->> 'key')::bigint, e ->> 'event', (e ->> 'person_id')::bigint,
                    ARRAY(SELECT jsonb_array_elements_text(e -> 'related')::bigint),
                    ARRAY(SELECT jsonb_array_elements_text(e -> 'restored')::bigint)
               FROM jsonb_array_elements($1) AS e"
        ),
        || vec![JsonB(Value::Array(rows)).into()],
        "resolve",
    );
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

/// Of the former ids a separated group could get back, those it cannot: still in use by a
/// record or a golden record, or ever erased.
fn unavailable_ids(client: &mut SpiClient<'_>, candidates: Vec<i64>) -> HashSet<i64> {
    fetch_all(
        client,
        "SELECT x FROM unnest($1::bigint[]) AS x
          WHERE EXISTS (SELECT 1 FROM unify.record_persons rp WHERE rp.person_id = x)
             OR EXISTS (SELECT 1 FROM unify.persons p WHERE p.person_id = x)
             OR EXISTS (SELECT 1 FROM unify.identity_events e WHERE e.person_id = x AND e.event = 'erase')",
        vec![candidates.into()],
        "resolve",
        |r| r.get::<i64>(1).ok().flatten().unwrap_or_default(),
    )
    .into_iter()
    .collect()
}

/// Writes the records whose person changed into `unify.record_persons`, from `source`: rows
/// `u` of (record_id, person_id, former), the former ids as an array literal, `args` its
/// parameters. A narrow row per record, never the wide record (issue 27).
///
/// `first_fill` (the table is empty: a first resolve) inserts every row without the table's
/// primary key, index and foreign key, built and checked once after: the foreign key checked row
/// by row would lock each record (FOR KEY SHARE, a write to every page of unify.records) and
/// queue a trigger event per row. Dropping the foreign key locks unify.records (ACCESS
/// EXCLUSIVE) to the end of the transaction, as the first resolve's rewrite of it used to.
///
/// Otherwise an upsert of the changed rows alone. Their records are locked first (FOR KEY
/// SHARE, as the foreign key's check would): one deleted meanwhile (a sync, beside a resolve)
/// drops out instead of failing the statement.
fn write_mappings(client: &mut SpiClient<'_>, source: &str, args: Args, first_fill: bool) {
    const F: &str = "resolve";
    if first_fill {
        let mut rebuild = drop_indexes(client, "unify.record_persons", true, F);
        if !rebuild.is_empty() {
            let keys: Vec<(String, String)> = fetch_all(
                client,
                "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
                  WHERE conrelid = 'unify.record_persons'::regclass AND contype = 'f' ORDER BY conname",
                vec![],
                F,
                |r| {
                    (
                        r.get::<String>(1).ok().flatten().unwrap_or_default(),
                        r.get::<String>(2).ok().flatten().unwrap_or_default(),
                    )
                },
            );
            for (name, definition) in keys {
                let name = name.replace('"', "\"\"");
                run(
                    client,
                    &format!("ALTER TABLE unify.record_persons DROP CONSTRAINT \"{name}\""),
                    F,
                );
                rebuild.push(format!(
                    "ALTER TABLE unify.record_persons ADD CONSTRAINT \"{name}\" {definition}"
                ));
            }
        }
        let insert = format!(
            "INSERT INTO unify.record_persons (record_id, person_id, former_person_ids)
             SELECT u.record_id, u.person_id, u.former::bigint[] FROM {source}"
        );
        in_own_context(|| {
            client
                .update(&insert, None, &args)
                .unwrap_or_else(|e| spi_failed(e, F));
        });
        free_last_result();
        rebuild_indexes(client, rebuild, F);
        return;
    }
    let upsert = format!(
        "INSERT INTO unify.record_persons AS t (record_id, person_id, former_person_ids)
         SELECT c.record_id, c.person_id, c.former::bigint[] FROM (
             SELECT u.record_id, u.person_id, u.former FROM {source}
               JOIN unify.records r ON r.record_id = u.record_id
             FOR KEY SHARE OF r) c
         ON CONFLICT (record_id) DO UPDATE
         SET person_id = excluded.person_id, former_person_ids = excluded.former_person_ids"
    );
    if args.is_empty() {
        run(client, &upsert, F);
    } else {
        update_kept(client, &upsert, &args).unwrap_or_else(|e| spi_failed(e, F));
    }
}
