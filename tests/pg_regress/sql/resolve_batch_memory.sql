-- customer_unify.batch_memory and resolve (issue 27): within a budget too small for the records
-- held at once, unify.resolve() clusters from the match pairs streamed in the order they join,
-- stages the records whose person changes in chunks, and makes the golden records (with their
-- households) a batch of whole persons at a time. On the sample German CRM (crmgen --rows 2000
-- --seed 7, schema crm, loaded by scripts/test.sh) a budget of 64kB takes every one of those
-- paths with many batches (32 records a fetch, 256 a chunk); the default (1GB) holds all at once.
-- Both must leave the same persons, ids, former ids, identity events, households and outbox,
-- on a first resolve and on a resolve that merges, splits and gives ids back after stewardship.
-- Each run starts from the same savepoint with the sequences set back, so both draw the same ids.
-- Self-contained: one transaction, rolled back, and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
SET search_path = crm, public;
\i demo/sources.sql
RESET search_path;
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT bool_and(converged) AS converged FROM unify.train();
SELECT matches > 300 AS many_matches FROM unify.score_pairs();
-- What resolve writes, one text per row (created_at and updated_at are now(): the same in both runs).
CREATE TEMP VIEW out_persons AS SELECT to_jsonb(p)::text AS r FROM unify.persons p;
CREATE TEMP VIEW out_records AS
SELECT format('%s %s %s', record_id, person_id, former_person_ids) AS r FROM unify.records;
CREATE TEMP VIEW out_events AS SELECT to_jsonb(e)::text AS r FROM unify.identity_events e;
CREATE TEMP VIEW out_outbox AS SELECT to_jsonb(o)::text AS r FROM unify.outbox o;
-- The sequences at the savepoint (a rollback to it does not set them back).
CREATE TEMP TABLE seq_at_savepoint (seq regclass, last_value bigint, is_called boolean);
CREATE FUNCTION pg_temp.snapshot_sequences() RETURNS void LANGUAGE sql AS $$
    DELETE FROM seq_at_savepoint;
    INSERT INTO seq_at_savepoint
    SELECT format('%I.%I', schemaname, sequencename)::regclass, coalesce(last_value, start_value), last_value IS NOT NULL
    FROM pg_sequences WHERE schemaname = 'unify';
$$;
CREATE FUNCTION pg_temp.restore_sequences() RETURNS boolean LANGUAGE sql AS $$
    SELECT bool_and(setval(seq, last_value, is_called) = last_value) FROM seq_at_savepoint;
$$;

-- 1. A first resolve. Held at once (the default):
SELECT pg_temp.snapshot_sequences();
SAVEPOINT before_resolve;
SHOW customer_unify.batch_memory;
SELECT to_jsonb(r) - 'seconds' AS held FROM unify.resolve() r \gset
SELECT (SELECT array_agg(r) FROM out_persons) AS a_persons, (SELECT array_agg(r) FROM out_records) AS a_records,
       (SELECT coalesce(array_agg(r), '{}') FROM out_events) AS a_events,
       (SELECT coalesce(array_agg(r), '{}') FROM out_outbox) AS a_outbox \gset
SELECT cardinality(:'a_persons'::text[]) > 1000 AS many_persons,
       (SELECT count(*) FROM unify.persons WHERE record_count > 1) > 100 AS merged_persons,
       (SELECT count(DISTINCT household_id) FROM unify.persons) < (SELECT count(*) FROM unify.persons WHERE household_id IS NOT NULL)
           AS shared_households;
ROLLBACK TO SAVEPOINT before_resolve;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
-- Within 64kB:
SET LOCAL customer_unify.batch_memory = '64kB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT (SELECT count(*) FROM (SELECT unnest(:'a_persons'::text[]) EXCEPT SELECT r FROM out_persons) d) AS persons_only_held,
       (SELECT count(*) FROM (SELECT r FROM out_persons EXCEPT SELECT unnest(:'a_persons'::text[])) d) AS persons_only_streamed,
       (SELECT count(*) FROM (SELECT unnest(:'a_records'::text[]) EXCEPT SELECT r FROM out_records) d) AS records_only_held,
       (SELECT count(*) FROM (SELECT r FROM out_records EXCEPT SELECT unnest(:'a_records'::text[])) d) AS records_only_streamed,
       (SELECT count(*) FROM (SELECT unnest(:'a_events'::text[]) EXCEPT SELECT r FROM out_events) d)
     + (SELECT count(*) FROM (SELECT r FROM out_events EXCEPT SELECT unnest(:'a_events'::text[])) d) AS events_differing,
       (SELECT count(*) FROM (SELECT unnest(:'a_outbox'::text[]) EXCEPT SELECT r FROM out_outbox) d)
     + (SELECT count(*) FROM (SELECT r FROM out_outbox EXCEPT SELECT unnest(:'a_outbox'::text[])) d) AS outbox_differing;
-- Nothing left behind: the cursors and temp tables of the streamed run, the cursor setting.
SELECT count(*) AS cursors_left FROM pg_cursors WHERE name LIKE 'unify\_%';
SELECT count(*) AS temp_tables_left FROM pg_class
WHERE (relname LIKE 'unify\_cluster%' OR relname LIKE 'unify\_golden%') AND relpersistence = 't';
SHOW cursor_tuple_fraction;
RESET customer_unify.batch_memory;

-- 2. Stewardship and changed pairs, then a resolve that merges, splits and gives ids back.
-- Some pairs below the threshold made matches and resolved (merges: the records that move keep
-- their former ids), then turned back (splits that give those ids back); an unmerge
-- (cannot-links between the person's records), a link of two persons (a must-link), and a
-- seventh of the other match decisions turned around.
CREATE TEMP TABLE flipped AS
SELECT record_a, record_b FROM unify.pairs WHERE NOT is_match AND (record_a + record_b) % 5 = 0;
UPDATE unify.pairs p SET is_match = true FROM flipped f WHERE (p.record_a, p.record_b) = (f.record_a, f.record_b);
SELECT merges > 10 AS merged FROM unify.resolve();
UPDATE unify.pairs p SET is_match = false FROM flipped f WHERE (p.record_a, p.record_b) = (f.record_a, f.record_b);
SELECT cardinality(unify.unmerge(p.person_id, 'test')) AS unmerged_into
FROM (SELECT person_id FROM unify.persons WHERE record_count >= 3 ORDER BY person_id LIMIT 1) p;
SELECT unify.link(a.record_id, b.record_id, 'test') > 0 AS linked
FROM (SELECT min(record_id) AS record_id FROM unify.records) a,
     (SELECT max(record_id) AS record_id FROM unify.records) b;
UPDATE unify.pairs SET is_match = NOT is_match WHERE (record_a + record_b) % 7 = 0 AND (record_a + record_b) % 5 <> 0;
SELECT count(*) > 0 AS records_with_former_ids FROM unify.records WHERE former_person_ids IS NOT NULL;
SELECT pg_temp.snapshot_sequences();
SAVEPOINT before_second;
SELECT to_jsonb(r) - 'seconds' AS held FROM unify.resolve() r \gset
SELECT (SELECT array_agg(r) FROM out_persons) AS a_persons, (SELECT array_agg(r) FROM out_records) AS a_records,
       (SELECT coalesce(array_agg(r), '{}') FROM out_events) AS a_events,
       (SELECT coalesce(array_agg(r), '{}') FROM out_outbox) AS a_outbox \gset
SELECT (:'held'::jsonb ->> 'merges')::int > 10 AS merges, (:'held'::jsonb ->> 'splits')::int > 10 AS splits,
       (:'held'::jsonb ->> 'golden_changed')::int > 10 AS golden_changed,
       (SELECT count(*) FROM unify.identity_events WHERE event = 'split' AND details ? 'restored') > 0 AS ids_given_back;
ROLLBACK TO SAVEPOINT before_second;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
SET LOCAL customer_unify.batch_memory = '64kB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT (SELECT count(*) FROM (SELECT unnest(:'a_persons'::text[]) EXCEPT SELECT r FROM out_persons) d) AS persons_only_held,
       (SELECT count(*) FROM (SELECT r FROM out_persons EXCEPT SELECT unnest(:'a_persons'::text[])) d) AS persons_only_streamed,
       (SELECT count(*) FROM (SELECT unnest(:'a_records'::text[]) EXCEPT SELECT r FROM out_records) d) AS records_only_held,
       (SELECT count(*) FROM (SELECT r FROM out_records EXCEPT SELECT unnest(:'a_records'::text[])) d) AS records_only_streamed,
       (SELECT count(*) FROM (SELECT unnest(:'a_events'::text[]) EXCEPT SELECT r FROM out_events) d)
     + (SELECT count(*) FROM (SELECT r FROM out_events EXCEPT SELECT unnest(:'a_events'::text[])) d) AS events_differing,
       (SELECT count(*) FROM (SELECT unnest(:'a_outbox'::text[]) EXCEPT SELECT r FROM out_outbox) d)
     + (SELECT count(*) FROM (SELECT r FROM out_outbox EXCEPT SELECT unnest(:'a_outbox'::text[])) d) AS outbox_differing;
-- A third resolve changes nothing, within the budget as held.
SELECT merges, splits, new_persons, golden_changed FROM unify.resolve();
RESET customer_unify.batch_memory;
SELECT merges, splits, new_persons, golden_changed FROM unify.resolve();

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
