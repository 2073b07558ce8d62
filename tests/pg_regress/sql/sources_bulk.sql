-- A first load (issue 27): sync of sources that hold no records yet, at least as many rows as
-- unify.records holds (and 5,000), only inserts (no comparison, no ON CONFLICT, no search for
-- records gone), with every index and constraint of unify.records dropped for the load and
-- added back after the last source. Its records are those the ordinary upsert makes; a sync
-- that fails half-way leaves no record behind and every index and constraint in place.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back, and the sequences
-- it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
SET LOCAL TIME ZONE 'Europe/Berlin';
CREATE SCHEMA bulk;
-- 6,000 customers, every cleaner with something to do: salutations and titles in front of
-- names or in their own field, full names, street lines, phones, text flags and dates.
CREATE TABLE bulk.kunden (
    nr int PRIMARY KEY, anrede text, vorname text, nachname text, voll text, email text, telefon text,
    strasse text, plz text, ort text, land text, geboren text, newsletter text, geaendert timestamptz);
INSERT INTO bulk.kunden
SELECT i,
       CASE i % 4 WHEN 0 THEN 'Frau' WHEN 1 THEN 'Hr.' END,
       CASE WHEN i % 6 = 0 THEN 'Dr. Anna' WHEN i % 9 = 0 THEN 'Herr Jörg' ELSE 'Anna' || (i % 40) END,
       CASE WHEN i % 10 = 0 THEN NULL ELSE 'Müller-' || (i % 300) END,
       CASE WHEN i % 10 = 0 THEN 'MÜLLER, Hans ' || i END,
       CASE WHEN i % 11 = 0 THEN 'kein Wert' ELSE 'Kunde.' || i || '@GoogleMail.com' END,
       CASE WHEN i % 3 = 0 THEN '0171 ' || (1000000 + i) WHEN i % 3 = 1 THEN '+49 (89) ' || (200000 + i) END,
       'Hauptstr. ' || (i % 120) || CASE WHEN i % 2 = 0 THEN 'a' ELSE '' END,
       lpad((i % 99999)::text, 5, '0'), CASE WHEN i % 5 = 0 THEN ' Köln ' ELSE 'München' END,
       CASE WHEN i % 13 = 0 THEN 'Österreich' END,
       CASE WHEN i % 8 = 0 THEN '17.5.80' WHEN i % 8 = 1 THEN '1980-05-' || lpad((1 + i % 28)::text, 2, '0') END,
       CASE i % 3 WHEN 0 THEN 'ja' WHEN 1 THEN 'nein' END,
       timestamptz '2026-01-01 10:00+01' + i * interval '1 minute'
FROM generate_series(1, 6000) i;
ANALYZE bulk.kunden;
CREATE TEMP VIEW records_catalog AS
SELECT 'index' AS kind, indexname AS name, indexdef AS definition FROM pg_indexes WHERE schemaname = 'unify' AND tablename = 'records'
UNION ALL
SELECT 'constraint', conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'unify.records'::regclass
UNION ALL
-- unify.record_persons' foreign key goes with the primary key it needs and comes back.
SELECT 'referencing', conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE confrelid = 'unify.records'::regclass AND conrelid <> confrelid;
CREATE TEMP TABLE catalog_before AS SELECT * FROM records_catalog;
-- Which indexes a sync made anew: those whose oid changed.
CREATE TEMP TABLE index_oids AS SELECT indexrelid AS oid FROM pg_index WHERE indrelid = 'unify.records'::regclass;
CREATE TEMP VIEW rebuilt AS SELECT count(*) AS indexes_rebuilt FROM index_oids o
WHERE NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = o.oid);
SELECT count(*) AS indexes_and_constraints FROM catalog_before;
CREATE TEMP VIEW kunden_fields AS SELECT '{"salutation": "anrede", "first_name": "vorname", "last_name": "nachname",
    "full_name": "voll", "email": "email", "phone": "telefon", "street_line": "strasse", "postcode": "plz",
    "city": "ort", "country": "land", "birth_date": "geboren", "consent_email": "newsletter",
    "updated_at": "geaendert"}'::jsonb AS fields;
SELECT unify.add_source('a', 'bulk.kunden', 'nr', fields, track_changes => false) FROM kunden_fields;

-- The first load: every row inserted, the catalog of unify.records as before. Its indexes
-- were built with maintenance_work_mem raised to customer_unify.batch_memory, then set back.
SET LOCAL maintenance_work_mem = '3MB';
SELECT source_name, source_rows, inserted, updated, deleted, error FROM unify.sync('a');
SELECT * FROM rebuilt;
SHOW maintenance_work_mem;
TRUNCATE index_oids;
INSERT INTO index_oids SELECT indexrelid FROM pg_index WHERE indrelid = 'unify.records'::regclass;
SELECT kind, name FROM (SELECT * FROM catalog_before EXCEPT SELECT * FROM records_catalog) x
UNION ALL SELECT 'new ' || kind, name FROM (SELECT * FROM records_catalog EXCEPT SELECT * FROM catalog_before) y;
-- Nothing changed: the next sync compares and writes nothing, with the indexes in place.
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('a');
SELECT * FROM rebuilt;
-- What the cleaners made of a few rows (a title and a salutation in front of a name, a full
-- name, an invalid e-mail, an Austrian number, a flag).
SELECT source_key, salutation, title, first_name, last_name, email, email_key, phone, street, house_number,
       postcode, city, country, birth_date, consent_email, last_name_phonetic
FROM unify.records WHERE source_key IN ('6', '9', '10', '11', '13') ORDER BY source_key::int;
-- The raw values: the mapped fields without NULLs, as jsonb of their staged types.
SELECT raw FROM unify.records WHERE source_key IN ('10', '13') ORDER BY source_key::int;

-- The ordinary upsert makes the same records: with every raw value made stale, a sync
-- normalizes all 6,000 rows again and updates them to exactly what the first load wrote.
CREATE TEMP TABLE first_load_source AS SELECT * FROM bulk.kunden WHERE nr = 17;
CREATE TEMP TABLE first_load AS SELECT * FROM unify.records WHERE source_id = (SELECT source_id FROM unify.sources WHERE name = 'a');
UPDATE unify.records SET raw = '{}' WHERE source_id = (SELECT source_id FROM unify.sources WHERE name = 'a');
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('a');
SELECT count(*) AS differing FROM (
    SELECT record_id, source_key, first_name, last_name, email, email_key, phone, mobile, street, house_number, postcode, city,
           country, birth_date, company, customer_number, external_id, consent_email, consent_phone, consent_post,
           source_updated_at, last_name_phonetic, raw, salutation, title, consent_email_at, consent_phone_at, consent_post_at
    FROM first_load
    EXCEPT
    SELECT record_id, source_key, first_name, last_name, email, email_key, phone, mobile, street, house_number, postcode, city,
           country, birth_date, company, customer_number, external_id, consent_email, consent_phone, consent_post,
           source_updated_at, last_name_phonetic, raw, salutation, title, consent_email_at, consent_phone_at, consent_post_at
    FROM unify.records) d;

-- A large source is synced in parts of about 200k rows: its mapping staged once, then cleaned
-- and written a range of the stage's pages at a time. With the statistics of a million rows the
-- 6,000 rows go in five parts, and every path gives the same records: an update of every record
-- (their raw values made stale), a row gone from the source found over all parts, and a first
-- load of a new source, in parts, equal to the first load above.
UPDATE pg_class SET reltuples = 1000000 WHERE oid = 'bulk.kunden'::regclass;
UPDATE unify.records SET raw = '{}' WHERE source_id = (SELECT source_id FROM unify.sources WHERE name = 'a');
DELETE FROM bulk.kunden WHERE nr = 17;
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('a');
SELECT current_setting('application_name') AS last_part;
CREATE TEMP VIEW record_values AS
SELECT source_key, first_name, last_name, email, email_key, phone, mobile, street, house_number, postcode, city,
       country, birth_date, company, customer_number, external_id, consent_email, consent_phone, consent_post,
       source_updated_at, last_name_phonetic, raw, salutation, title, consent_email_at, consent_phone_at, consent_post_at
FROM unify.records;
-- What the first load above wrote, but the row gone since; and how many rows differ from it.
CREATE TEMP VIEW expected_values AS
SELECT source_key, first_name, last_name, email, email_key, phone, mobile, street, house_number, postcode, city,
       country, birth_date, company, customer_number, external_id, consent_email, consent_phone, consent_post,
       source_updated_at, last_name_phonetic, raw, salutation, title, consent_email_at, consent_phone_at, consent_post_at
FROM first_load WHERE source_key <> '17';
CREATE TEMP VIEW differing AS
SELECT count(*) AS differing FROM (
    (SELECT * FROM expected_values EXCEPT ALL SELECT * FROM record_values)
    UNION ALL (SELECT * FROM record_values EXCEPT ALL SELECT * FROM expected_values)) d;
SELECT * FROM differing;
SELECT unify.remove_source('a');
SELECT unify.add_source('parts', 'bulk.kunden', 'nr', fields, track_changes => false) FROM kunden_fields;
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync('parts');
SELECT * FROM rebuilt;
TRUNCATE index_oids;
INSERT INTO index_oids SELECT indexrelid FROM pg_index WHERE indrelid = 'unify.records'::regclass;
SELECT * FROM differing;
-- It went in five parts (the last one named in application_name for this transaction).
SELECT current_setting('application_name') AS last_part;
SELECT unify.remove_source('parts');
INSERT INTO bulk.kunden SELECT * FROM first_load_source WHERE nr = 17;
ANALYZE bulk.kunden;
SELECT unify.add_source('a', 'bulk.kunden', 'nr', fields, track_changes => false) FROM kunden_fields;

-- A first load that fails half-way (the mapping divides by zero on one row): the error names
-- the source, no record of it stays, and every index and constraint is back.
SELECT unify.remove_source('a');
SELECT unify.add_source('broken', 'bulk.kunden', 'nr', fields || '{"first_name": "CASE WHEN nr = 4000 THEN (1 / (nr - 4000))::text ELSE vorname END"}',
                        track_changes => false) FROM kunden_fields;
SELECT source_name, inserted FROM unify.sync('broken');
SELECT count(*) AS records FROM unify.records;
SELECT count(*) AS catalog_changes FROM (
    (SELECT * FROM catalog_before EXCEPT SELECT * FROM records_catalog)
    UNION ALL (SELECT * FROM records_catalog EXCEPT SELECT * FROM catalog_before)) x;
-- Syncing everything, the failing source is reported and the others load; the indexes and
-- constraints come back after the last one.
SELECT unify.add_source('good', 'bulk.kunden', 'nr', fields, track_changes => false) FROM kunden_fields;
SELECT source_name, source_rows, inserted, error FROM unify.sync() ORDER BY source_name;
SHOW maintenance_work_mem;
SELECT s.name, count(r.record_id) AS records FROM unify.sources s LEFT JOIN unify.records r USING (source_id) GROUP BY s.name ORDER BY 1;
SELECT count(*) AS catalog_changes FROM (
    (SELECT * FROM catalog_before EXCEPT SELECT * FROM records_catalog)
    UNION ALL (SELECT * FROM records_catalog EXCEPT SELECT * FROM catalog_before)) x;
-- The constraints hold again: a second record of one source key is refused.
INSERT INTO unify.records (source_id, source_key, raw)
SELECT source_id, '1', '{}' FROM unify.sources WHERE name = 'good';
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
