-- Faults isolated per source: a change that cannot be applied goes to unify.dead_letters with its
-- source, key, SQLSTATE and message; the queue moves on, a healthy source beside it is never held
-- up, unify.retry_failed() queues it again after the fix, and sync() of all sources reports the
-- broken one and syncs the others. Self-contained: one transaction, rolled back, and the
-- sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
CREATE SCHEMA dl;
CREATE TABLE dl.healthy (id int PRIMARY KEY, name text, email text);
CREATE TABLE dl.fragile (id int PRIMARY KEY, name text, birthday text, email text);
SELECT unify.add_source('dl_healthy', 'dl.healthy', 'id', '{"full_name": "name", "email": "email"}') > 0 AS registered;
-- One value makes this mapping raise (division by zero).
SELECT unify.add_source('dl_fragile', 'dl.fragile', 'id', '{"full_name": "name", "email": "email",
    "birth_date": "CASE WHEN birthday = ''bad'' THEN (1 / (length(birthday) - 3))::text ELSE birthday END"}') > 0 AS registered;
INSERT INTO dl.healthy VALUES (1, 'Anna Schmidt', 'anna@example.org'), (2, 'Bernd Kraus', 'bernd@example.org');
INSERT INTO dl.fragile VALUES (1, 'Carla Vogel', '1980-01-02', 'carla@example.org'), (2, 'Dieter Bad', 'bad', 'dieter@example.org'),
                              (3, 'Emil Sauer', '1975-05-06', 'emil@example.org');
SELECT unify.process_queue() AS taken;
-- Both sources arrived but for the one bad row, which waits with its error.
SELECT s.name, r.source_key, r.first_name, r.birth_date FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE s.name LIKE 'dl\_%' ORDER BY 1, 2;
SELECT s.name, d.source_key, d.sqlstate, d.message, d.attempts FROM unify.dead_letters d JOIN unify.sources s USING (source_id) ORDER BY 1, 2;
SELECT source, records, queue_depth, failed_changes, last_failure IS NOT NULL AS failed_lately, placement, citus, capture, cleaned_on FROM unify.status WHERE source LIKE 'dl\_%' ORDER BY 1;
-- Fixed in the source table (which queues it anyway) and retried: applied, the dead letter gone.
UPDATE dl.fragile SET birthday = '1970-07-08' WHERE id = 2;
SELECT unify.retry_failed('dl_fragile') AS requeued;
SELECT unify.process_queue() AS taken;
SELECT r.source_key, r.birth_date FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'dl_fragile' ORDER BY 1;
SELECT count(*) AS dead_letters FROM unify.dead_letters;
-- A dropped column breaks the whole mapping: the source's changes are set aside at once (42703,
-- naming the source), the healthy source's change in the same batch goes through.
ALTER TABLE dl.fragile DROP COLUMN birthday;
INSERT INTO dl.fragile VALUES (4, 'Frida Kahl', 'frida@example.org');
UPDATE dl.fragile SET name = 'Carla Vogel-Neu' WHERE id = 1;
INSERT INTO dl.healthy VALUES (3, 'Gerd Lang', 'gerd@example.org');
SELECT unify.process_queue() AS taken;
SELECT s.name, r.source_key, r.first_name, r.last_name FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE s.name LIKE 'dl\_%' AND r.source_key IN ('1', '3', '4') ORDER BY 1, 2;
SELECT s.name, d.source_key, d.sqlstate, d.message LIKE 'source "dl_fragile": its mapping failed: column "birthday" does not exist' AS names_source_and_cause,
       d.message NOT LIKE '%backtrace%' AND coalesce(d.detail, '') NOT LIKE '%.rs:%' AS no_rust_backtrace
FROM unify.dead_letters d JOIN unify.sources s USING (source_id) ORDER BY 1, 2;
-- A retry before the fix sets them aside again, counting the attempt.
SELECT unify.retry_failed() AS requeued;
SELECT unify.process_queue() AS taken;
SELECT d.source_key, d.attempts FROM unify.dead_letters d ORDER BY 1;
-- sync() of all sources reports the broken one and syncs the others.
SELECT source_name, source_rows, error FROM unify.sync() WHERE source_name LIKE 'dl\_%' ORDER BY 1;
-- Named alone, it raises the source's error.
SELECT * FROM unify.sync('dl_fragile');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
