-- Sources and records: register tables in place, sync, capture changes, validate every input.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
RESET client_min_messages;
\set VERBOSITY default
\set SHOW_CONTEXT never
-- Copies of the generated CRM, so other tests keep the original.
CREATE SCHEMA shop_test;
CREATE TABLE shop_test.shop_customers (LIKE crm.shop_customers INCLUDING ALL);
INSERT INTO shop_test.shop_customers SELECT * FROM crm.shop_customers;
CREATE TABLE shop_test.crm_contacts (LIKE crm.crm_contacts INCLUDING ALL);
INSERT INTO shop_test.crm_contacts SELECT * FROM crm.crm_contacts;
CREATE TABLE shop_test.pos_loyalty_members (LIKE crm.pos_loyalty_members INCLUDING ALL);
INSERT INTO shop_test.pos_loyalty_members SELECT * FROM crm.pos_loyalty_members;
CREATE TABLE shop_test.newsletter_signups (LIKE crm.newsletter_signups INCLUDING ALL);
INSERT INTO shop_test.newsletter_signups SELECT * FROM crm.newsletter_signups;

-- The four sources with their own column names and formats.
SET search_path = shop_test, public;
\set QUIET on
\i demo/sources.sql
\set QUIET off
SELECT name, relation, key_column, priority, track_changes FROM unify.sources ORDER BY source_id;
-- Their ids, looked up by name.
SELECT max(source_id) FILTER (WHERE name = 'shop') AS shop, max(source_id) FILTER (WHERE name = 'crm') AS crm,
       max(source_id) FILTER (WHERE name = 'pos') AS pos, max(source_id) FILTER (WHERE name = 'newsletter') AS newsletter
FROM unify.sources \gset
SELECT tgrelid::regclass AS relation, tgname FROM pg_trigger WHERE tgname LIKE 'unify_capture%' ORDER BY 1, 2;

-- Sync: counts match the source tables, a second run changes nothing.
SET client_min_messages = warning;
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync();
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync();
RESET client_min_messages;
SELECT s.name, count(r.*) AS records FROM unify.sources s LEFT JOIN unify.records r USING (source_id) GROUP BY s.name ORDER BY s.name;

-- Normalized fields from four formats: a CRM row, a POS row with a full name.
SELECT source_key, first_name, last_name, email, phone, mobile, street, house_number, postcode, city, country, birth_date, consent_email
FROM unify.records WHERE source_id = :crm ORDER BY record_id LIMIT 2;
SELECT source_key, first_name, last_name, raw ->> 'full_name' AS full_name, postcode, city
FROM unify.records WHERE source_id = :pos ORDER BY record_id LIMIT 3;
-- Field coverage per source: what each source contributes.
SELECT s.name, count(r.email) AS email, count(r.phone) + count(r.mobile) AS phones, count(r.last_name) AS last_name,
       count(r.street) AS street, count(r.postcode) AS postcode, count(r.birth_date) AS birth_date,
       count(r.consent_email) AS consent_email, count(r.source_updated_at) AS updated_at
FROM unify.records r JOIN unify.sources s USING (source_id) GROUP BY s.name ORDER BY s.name;

-- Change capture: updates, deletes, inserts, key changes; a rolled-back write enqueues nothing.
UPDATE crm_contacts SET nachname = 'Graf-Schulze', mobil = NULL WHERE kontakt_nr = 'K-0000001';
DELETE FROM shop_customers WHERE customer_id = 100002;
INSERT INTO newsletter_signups VALUES (100000, 'Neu.Kunde@GoogleMail.com', 'Neu', now(), true, NULL);
UPDATE pos_loyalty_members SET card_no = 9100000001 WHERE card_no = 9000000001;
SAVEPOINT rolled_back_write;
INSERT INTO newsletter_signups VALUES (100001, 'rolled@back.de', 'Rolled', now(), true, NULL);
ROLLBACK TO SAVEPOINT rolled_back_write;
SELECT s.name, q.source_key, q.op FROM unify.change_queue q JOIN unify.sources s USING (source_id) ORDER BY q.enqueued_at, s.name, q.source_key, q.op;
SELECT source, queue_depth FROM unify.status ORDER BY source;
SELECT unify.process_queue();
SELECT count(*) AS left_in_queue FROM unify.change_queue;
SELECT source_key, last_name, mobile FROM unify.records WHERE source_id = :crm AND source_key = 'K-0000001';
SELECT count(*) AS deleted_shop_record FROM unify.records WHERE source_id = :shop AND source_key = '100002';
SELECT source_key, email, email_key, first_name FROM unify.records WHERE source_id = :newsletter AND source_key IN ('100000', '100001');
SELECT source_key FROM unify.records WHERE source_id = :pos AND source_key IN ('9000000001', '9100000001');
-- Processing in small batches reaches the same state.
UPDATE shop_customers SET email = upper(email) WHERE customer_id BETWEEN 100010 AND 100014;
SELECT unify.process_queue(2), unify.process_queue(2), unify.process_queue(2), unify.process_queue(2);
SELECT count(*) FILTER (WHERE raw ->> 'email' = upper(raw ->> 'email')) AS uppercased_raw,
       count(*) FILTER (WHERE email = lower(email)) AS normalized_lower
FROM unify.records WHERE source_id = :shop AND source_key::bigint BETWEEN 100010 AND 100014;
-- A bad value never fails the user's write: it is NULL in the record.
UPDATE crm_contacts SET telefon = 'bitte nicht anrufen', geburtsdatum = '31.02.1980' WHERE kontakt_nr = 'K-0000002';
SELECT unify.process_queue();
SELECT phone, birth_date, raw ->> 'phone' AS raw_phone FROM unify.records WHERE source_id = :crm AND source_key = 'K-0000002';
-- TRUNCATE is captured too.
CREATE TABLE shop_test.newsletter_backup AS SELECT * FROM newsletter_signups;
TRUNCATE newsletter_signups;
SELECT unify.process_queue();
SELECT count(*) AS newsletter_records_after_truncate FROM unify.records WHERE source_id = :newsletter;
INSERT INTO newsletter_signups SELECT * FROM shop_test.newsletter_backup;
SELECT unify.process_queue() AS reloaded;
SELECT count(*) AS newsletter_records FROM unify.records WHERE source_id = :newsletter;

-- Changes made while tracking was off are picked up by sync.
SELECT unify.add_source('shop_untracked', 'shop_customers', 'customer_id', '{"email": "email", "last_name": "last_name"}', track_changes => false);
SET client_min_messages = warning;
SELECT source_name, inserted FROM unify.sync('shop_untracked');
RESET client_min_messages;
ALTER TABLE shop_customers DISABLE TRIGGER USER;
DELETE FROM shop_customers WHERE customer_id = 100003;
UPDATE shop_customers SET last_name = 'Neumann' WHERE customer_id = 100004;
ALTER TABLE shop_customers ENABLE TRIGGER USER;
SET client_min_messages = warning;
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('shop_untracked');
RESET client_min_messages;

-- Validation: each bad call names what is wrong, has a SQLSTATE and a hint, and leaves nothing.
SELECT count(*) AS sources_before FROM unify.sources \gset
SELECT unify.add_source('Shop 2', 'shop_customers', 'customer_id', '{"email": "email"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop', 'shop_customers', 'customer_id', '{"email": "email"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('nowhere', 'no_such_table', 'id', '{"email": "email"}');
\echo :LAST_ERROR_SQLSTATE
CREATE VIEW shop_view AS SELECT * FROM shop_customers;
SELECT unify.add_source('view', 'shop_view', 'customer_id', '{"email": "email"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'kunden_id', '{"email": "email"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'email', '{"email": "email"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'customer_id', '["email"]');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'customer_id', '{"email": "email", "e_mail": "email"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'customer_id', '{"email": "email", "phone": "coalesce(mobil, telefon)"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'customer_id', '{"email": "email", "birth_date": "customer_id"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'customer_id', '{"email": 42}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', 'customer_id', '{"city": "city"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_source('shop2', 'shop_customers', NULL, '{"email": "email"}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) = :sources_before AS nothing_left_behind FROM unify.sources;
SELECT count(*) AS capture_triggers_on_shop FROM pg_trigger WHERE tgrelid = 'shop_customers'::regclass AND tgname LIKE 'unify_capture%';
SELECT unify.process_queue(0);
\echo :LAST_ERROR_SQLSTATE
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('no_such_source');
\echo :LAST_ERROR_SQLSTATE

-- A renamed table is followed; a dropped one gives a clear error on sync, not a crash.
ALTER TABLE pos_loyalty_members RENAME TO pos_members;
SET client_min_messages = warning;
SELECT source_name, source_rows FROM unify.sync('pos');
SELECT relation_name FROM unify.sources WHERE name = 'pos';
DROP TABLE pos_members;
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('pos');
\echo :LAST_ERROR_SQLSTATE
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync();
\echo :LAST_ERROR_SQLSTATE
RESET client_min_messages;
SELECT unify.remove_source('pos');
SELECT count(*) AS pos_records FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'pos';

-- remove_source: triggers and records go; keep_records keeps the records and marks the source.
SELECT unify.remove_source('newsletter', keep_records => true);
SELECT name, removed_at IS NOT NULL AS removed, track_changes, (SELECT count(*) FROM unify.records r WHERE r.source_id = s.source_id) AS records
FROM unify.sources s WHERE name = 'newsletter';
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('newsletter');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.remove_source('newsletter');
SELECT count(*) AS newsletter_triggers FROM pg_trigger WHERE tgrelid = 'newsletter_signups'::regclass AND tgname LIKE 'unify_capture%';
SELECT unify.remove_source('newsletter');
\echo :LAST_ERROR_SQLSTATE

-- Privileges: a role that only writes to a tracked table needs no rights on unify.*; it can use
-- the cleaners but not the commands or the records.
DROP ROLE IF EXISTS regress_unify_app;
CREATE ROLE regress_unify_app;
GRANT USAGE ON SCHEMA shop_test TO regress_unify_app;
GRANT INSERT, UPDATE ON shop_test.crm_contacts TO regress_unify_app;
SET ROLE regress_unify_app;
INSERT INTO shop_test.crm_contacts (kontakt_nr, vorname, nachname, e_mail) VALUES ('K-9999999', 'App', 'Nutzer', 'app@nutzer.de');
SELECT unify.normalize_email(' App@Nutzer.DE ');
SELECT count(*) FROM unify.records;
\echo :LAST_ERROR_SQLSTATE
SELECT unify.sync('crm');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT unify.process_queue();
SELECT first_name, last_name, email FROM unify.records WHERE source_key = 'K-9999999';
-- The records' keys compare by bytes (COLLATE "C", issue 27): joined with the source's columns,
-- which have the database's collation, they compare without a collation error, and a lookup by
-- a key with a value of the database's collation still uses the key's index.
SELECT count(*) AS joined FROM unify.records r JOIN shop_test.crm_contacts c
    ON r.source_key = c.kontakt_nr::text AND r.email_key = lower(c.e_mail::text) WHERE c.kontakt_nr = 'K-9999999';
-- (A plain index scan: a bitmap scan or not depends on the table's statistics at that moment.)
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT r.record_id FROM unify.records r WHERE r.email_key = lower('App@Nutzer.de'::text);
RESET enable_seqscan;
RESET enable_bitmapscan;
DROP OWNED BY regress_unify_app;
DROP ROLE regress_unify_app;

-- pg_dump keeps the configuration (in name order: an update from 0.1.0 appends the new tables).
SELECT c::regclass AS dumped_with_data FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'customer_unify' ORDER BY c::regclass::text;
RESET search_path;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
