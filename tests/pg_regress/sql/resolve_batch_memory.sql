-- customer_unify.batch_memory and resolve (issue 27): within a budget too small for the records
-- held at once, unify.resolve() clusters from the match pairs streamed in the order they join,
-- stages the records whose person changes in chunks, and makes the golden records (with their
-- households) a batch of whole persons at a time. On the sample German CRM (crmgen --rows 2000
-- --seed 7, schema crm, loaded by scripts/test.sh) a budget of 64kB takes every one of those
-- paths with many batches (16 records a fetch, 256 a chunk), and clusters the records a batch of
-- whole components of about 160 records at a time (their components found by a union-find over
-- the records that take part, or in SQL; new ids and events put in a whole run's order at the
-- end); 400kB still holds the clustering at once and
-- stages its changes in chunks (200kB too, with the households held by the persons counted);
-- the default (1GB) holds all at once.
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
SELECT format('%s %s %s', record_id, person_id, former_person_ids) AS r
FROM unify.records LEFT JOIN unify.record_persons USING (record_id);
CREATE TEMP VIEW out_events AS SELECT to_jsonb(e)::text AS r FROM unify.identity_events e;
CREATE TEMP VIEW out_outbox AS SELECT to_jsonb(o)::text AS r FROM unify.outbox o;
-- The held run's rows, kept in psql variables (\gset) across the rollbacks to its savepoint.
CREATE FUNCTION pg_temp.held_rows(OUT a_persons text[], OUT a_records text[], OUT a_events text[], OUT a_outbox text[])
LANGUAGE sql AS $$
SELECT (SELECT array_agg(r) FROM out_persons), (SELECT array_agg(r) FROM out_records),
       (SELECT coalesce(array_agg(r), '{}') FROM out_events), (SELECT coalesce(array_agg(r), '{}') FROM out_outbox)
$$;
-- What differs from the held run's rows, counted each way.
CREATE FUNCTION pg_temp.differing(persons text[], records text[], events text[], outbox text[])
RETURNS TABLE (persons_only_held bigint, persons_only_streamed bigint, records_only_held bigint,
               records_only_streamed bigint, events_differing bigint, outbox_differing bigint)
LANGUAGE sql AS $$
SELECT (SELECT count(*) FROM (SELECT unnest(persons) EXCEPT SELECT r FROM out_persons) d),
       (SELECT count(*) FROM (SELECT r FROM out_persons EXCEPT SELECT unnest(persons)) d),
       (SELECT count(*) FROM (SELECT unnest(records) EXCEPT SELECT r FROM out_records) d),
       (SELECT count(*) FROM (SELECT r FROM out_records EXCEPT SELECT unnest(records)) d),
       (SELECT count(*) FROM (SELECT unnest(events) EXCEPT SELECT r FROM out_events) d)
     + (SELECT count(*) FROM (SELECT r FROM out_events EXCEPT SELECT unnest(events)) d),
       (SELECT count(*) FROM (SELECT unnest(outbox) EXCEPT SELECT r FROM out_outbox) d)
     + (SELECT count(*) FROM (SELECT r FROM out_outbox EXCEPT SELECT unnest(outbox)) d)
$$;
-- The persons whose unify.golden_inputs hash is not the one unify._refresh_persons's SQL makes
-- (its seed written out again here): a first resolve has the golden pass hash the records it
-- reads (src/sql/persons/golden.rs, version_hash) instead.
CREATE TEMP VIEW inputs_differing AS
SELECT count(*) AS inputs_differing
FROM unify.golden_inputs g FULL JOIN (
    SELECT rp.person_id, bit_xor(hashtextextended(r.record_id::text || ':' || r.xmin::text, s.seed)) AS inputs
    FROM unify.record_persons rp JOIN unify.records r ON r.record_id = rp.record_id
    CROSS JOIN (SELECT hashtextextended(concat_ws('|',
        (SELECT e.extversion FROM pg_extension e WHERE e.extname = 'customer_unify'),
        (SELECT string_agg(concat_ws(':', s.field, s.rule, s.options::text), ',' ORDER BY s.field) FROM unify.survivorship_rules s),
        (SELECT string_agg(concat_ws(':', s.source_id, s.name, s.priority), ',' ORDER BY s.source_id) FROM unify.sources s)), 0) AS seed) s
    GROUP BY rp.person_id) h ON h.person_id = g.person_id
WHERE g.inputs IS DISTINCT FROM h.inputs;
-- Which clustering ran: one in batches of whole components makes its temp tables (among them
-- unify_cluster_labels, each record's component), logged by an event trigger (rolled back with
-- the rest).
CREATE TEMP TABLE made_tables (name text);
CREATE FUNCTION public.test_log_made_tables() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO pg_temp.made_tables SELECT object_identity FROM pg_event_trigger_ddl_commands()
    WHERE command_tag IN ('CREATE TABLE', 'CREATE TABLE AS');
END
$$;
CREATE EVENT TRIGGER test_log_made_tables ON ddl_command_end EXECUTE FUNCTION public.test_log_made_tables();
CREATE TEMP VIEW clustered_in_batches AS
SELECT count(*) > 0 AS in_batches FROM made_tables WHERE name LIKE '%unify\_cluster\_labels';
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
SELECT * FROM pg_temp.held_rows() \gset
SELECT cardinality(:'a_persons'::text[]) > 1000 AS many_persons,
       (SELECT count(*) FROM unify.persons WHERE record_count > 1) > 100 AS merged_persons,
       (SELECT count(DISTINCT household_id) FROM unify.persons) < (SELECT count(*) FROM unify.persons WHERE household_id IS NOT NULL)
           AS shared_households,
       (SELECT in_batches FROM clustered_in_batches),
       (SELECT inputs_differing FROM inputs_differing);
ROLLBACK TO SAVEPOINT before_resolve;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
-- Within 400kB: the clustering still held at once (44 bytes a record fit half of it),
-- the records whose person changes staged in a temp table in chunks of 1,600.
SET LOCAL customer_unify.batch_memory = '400kB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT * FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox');
SELECT (SELECT in_batches FROM clustered_in_batches),
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_cluster\_changes') AS changes_staged,
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_golden\_keys') AS keys_in_a_table;
ROLLBACK TO SAVEPOINT before_resolve;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
-- Within 2MB: the golden records streamed (1,024 records held), their households grouped in
-- memory with the keys' first holders in a map (400kB: a temp table of the keys, sorted).
SET LOCAL customer_unify.batch_memory = '2MB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT d.persons_only_held, d.persons_only_streamed, d.events_differing,
       (SELECT inputs_differing FROM inputs_differing),
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_golden\_keys') AS keys_in_a_table
FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox') d;
ROLLBACK TO SAVEPOINT before_resolve;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
-- Within 200kB: the clustering still held (2,000 records of 44 bytes fit half of it), its 1,250
-- new person ids drawn a fetch of 800 at a time; the households grouped in memory though the
-- records (2,000) pass what half of it holds at 64 bytes each (1,600), because the persons
-- (1,250) do not: counted, not taken from the records; the keys' first holders in a temp table.
SET LOCAL customer_unify.batch_memory = '200kB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT d.persons_only_held, d.persons_only_streamed, d.records_only_held, d.records_only_streamed, d.events_differing,
       (SELECT in_batches FROM clustered_in_batches),
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_golden\_keys') AS keys_in_a_table,
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_household\_keys') AS households_in_sql
FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox') d;
ROLLBACK TO SAVEPOINT before_resolve;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
-- Within 64kB:
SET LOCAL customer_unify.batch_memory = '64kB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT * FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox');
SELECT in_batches,
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_household\_keys') AS households_in_sql
FROM clustered_in_batches;
-- Nothing left behind: the cursors and temp tables of the streamed run, the cursor setting.
SELECT count(*) AS cursors_left FROM pg_cursors WHERE name LIKE 'unify\_%';
SELECT count(*) AS temp_tables_left FROM pg_class
WHERE (relname LIKE 'unify\_cluster%' OR relname LIKE 'unify\_golden%') AND relpersistence = 't';
SHOW cursor_tuple_fraction;
-- The same within 64kB with the components (of records, of persons sharing household keys)
-- labelled in SQL instead of by a union-find: the path past half the budget at 12 bytes a node
-- (tens of millions of records at 1GB), taken here through the tests' switch.
ROLLBACK TO SAVEPOINT before_resolve;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
SET LOCAL customer_unify.batch_memory = '64kB';
SET LOCAL unify_internal.component_labels = 'sql';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT * FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox');
SELECT in_batches FROM clustered_in_batches;
SELECT count(*) AS cursors_left FROM pg_cursors WHERE name LIKE 'unify\_%';
RESET unify_internal.component_labels;
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
-- One person larger than a batch (250 records chained by must-links: a component the batches
-- must take whole), with a cannot-link inside it (a steward's contradiction: the must-links
-- join it all the same, and it holds apart the match pairs that would join more records to it).
CREATE TEMP TABLE chain AS
SELECT record_id, source_id, source_key, row_number() OVER (ORDER BY record_id) AS n
FROM (SELECT * FROM unify.records ORDER BY record_id OFFSET 500 LIMIT 250) r;
INSERT INTO unify.overrides (source_a, key_a, source_b, key_b, kind, reason)
SELECT CASE WHEN (a.source_id, a.source_key) < (b.source_id, b.source_key) THEN a.source_id ELSE b.source_id END,
       CASE WHEN (a.source_id, a.source_key) < (b.source_id, b.source_key) THEN a.source_key ELSE b.source_key END,
       CASE WHEN (a.source_id, a.source_key) < (b.source_id, b.source_key) THEN b.source_id ELSE a.source_id END,
       CASE WHEN (a.source_id, a.source_key) < (b.source_id, b.source_key) THEN b.source_key ELSE a.source_key END,
       CASE WHEN b.n = a.n + 1 THEN 'must_link' ELSE 'cannot_link' END, 'test: larger than a batch'
FROM chain a JOIN chain b ON b.n = a.n + 1 OR (a.n = 10 AND b.n = 200)
ON CONFLICT DO NOTHING;
SELECT count(*) AS chained FROM unify.overrides WHERE reason = 'test: larger than a batch';
SELECT count(*) > 0 AS records_with_former_ids FROM unify.record_persons WHERE former_person_ids IS NOT NULL;
SELECT pg_temp.snapshot_sequences();
DELETE FROM made_tables;
SAVEPOINT before_second;
SELECT to_jsonb(r) - 'seconds' AS held FROM unify.resolve() r \gset
SELECT * FROM pg_temp.held_rows() \gset
SELECT (:'held'::jsonb ->> 'merges')::int > 10 AS merges, (:'held'::jsonb ->> 'splits')::int > 10 AS splits,
       (:'held'::jsonb ->> 'golden_changed')::int > 10 AS golden_changed,
       (SELECT count(*) FROM unify.identity_events WHERE event = 'split' AND details ? 'restored') > 0 AS ids_given_back,
       (SELECT max(record_count) FROM unify.persons) >= 250 AS person_larger_than_a_batch,
       (SELECT in_batches FROM clustered_in_batches);
ROLLBACK TO SAVEPOINT before_second;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
SET LOCAL customer_unify.batch_memory = '64kB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT * FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox');
SELECT in_batches FROM clustered_in_batches;
-- Again with the components labelled in SQL.
ROLLBACK TO SAVEPOINT before_second;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
SET LOCAL customer_unify.batch_memory = '64kB';
SET LOCAL unify_internal.component_labels = 'sql';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT * FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox');
RESET unify_internal.component_labels;
-- A third resolve changes nothing, within the budget as held.
SELECT merges, splits, new_persons, golden_changed FROM unify.resolve();
RESET customer_unify.batch_memory;
SELECT merges, splits, new_persons, golden_changed FROM unify.resolve();

-- 3. Every golden record made again (a source's priority changed) while most persons have a
-- household: within 400kB the golden pass streams and the households are grouped in memory
-- (their keys in a temp table), the persons who had one counted at 40 bytes more each; the
-- same as held at once.
UPDATE unify.sources SET priority = priority + 1 WHERE name = (SELECT min(name) FROM unify.sources);
SELECT pg_temp.snapshot_sequences();
DELETE FROM made_tables;
SAVEPOINT before_third;
SELECT to_jsonb(r) - 'seconds' AS held FROM unify.resolve() r \gset
SELECT * FROM pg_temp.held_rows() \gset
SELECT (SELECT count(*) FROM unify.persons WHERE household_id IS NOT NULL) * 2
           > (SELECT count(*) FROM unify.persons) AS most_had_a_household;
ROLLBACK TO SAVEPOINT before_third;
SELECT pg_temp.restore_sequences() AS sequences_set_back;
DELETE FROM made_tables;
SET LOCAL customer_unify.batch_memory = '400kB';
SELECT (to_jsonb(r) - 'seconds') = :'held'::jsonb AS same_figures FROM unify.resolve() r;
SELECT d.persons_only_held, d.persons_only_streamed, d.events_differing, d.outbox_differing,
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_golden\_keys') AS keys_in_a_table,
       (SELECT count(*) > 0 FROM made_tables WHERE name LIKE '%unify\_household\_keys') AS households_in_sql
FROM pg_temp.differing(:'a_persons', :'a_records', :'a_events', :'a_outbox') d;
RESET customer_unify.batch_memory;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
