-- Persons: resolve into stable ids, golden records by survivorship, consent (undated here: strictest-wins),
-- households, stewardship (link, unlink, unmerge) and GDPR erasure, on hand-made German records
-- scored with the shipped model.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
CREATE TABLE kunden (
    nr int PRIMARY KEY, vorname text, nachname text, geboren date, email text, telefon text,
    strasse text, plz text, ort text, newsletter boolean, geaendert timestamptz
);
INSERT INTO kunden VALUES
    (1, 'Klaus', 'Weber', '1950-03-01', 'weber@web.de', '030 1234567', 'Hauptstraße 5', '10115', 'Berlin', true, '2024-01-01'),   -- sen.
    (2, 'Klaus', 'Weber', '1979-11-20', 'weber@web.de', '030 1234567', 'Hauptstr. 5', '10115', 'Berlin', NULL, '2024-01-02'),     -- jun.
    (3, 'Petra', 'Weber', '1952-07-07', 'weber@web.de', '+49 30 1234567', 'Hauptstrasse 5', '10115', 'Berlin', true, '2024-01-03'),
    (4, 'Anna', 'Müller', '1985-05-05', 'anna.mueller@gmx.de', '0171 5550001', 'Gartenweg 2', '80331', 'München', true, '2024-03-01'), -- twin
    (5, 'Lena', 'Müller', '1985-05-05', 'lena.m@gmx.de', '0171 5550002', 'Gartenweg 2', '80331', 'München', NULL, '2024-03-02'),      -- twin
    (6, 'Anna', 'Mueller', '1985-05-05', 'Anna.Mueller@GMX.de', '+49 171 5550001', 'Gartenweg 2', '80331', 'Muenchen', true, '2025-06-01'),
    (7, 'MÜLLER', 'Anna', NULL, NULL, '0171/5550001', NULL, '80331', 'München', NULL, '2023-01-01');                       -- swapped
CREATE TABLE webshop (
    id int PRIMARY KEY, first_name text, last_name text, dob date, mail text, street text, zip text, city text,
    optin boolean, changed timestamptz
);
INSERT INTO webshop VALUES
    (1001, 'Anna', 'Müller', '1985-05-05', 'anna.neu@web.de', 'Gartenweg 2', '80331', 'München', false, '2026-01-01');
SELECT unify.add_source('kunden', 'kunden', 'nr', '{"first_name": "vorname", "last_name": "nachname",
    "birth_date": "geboren", "email": "email", "phone": "telefon", "street_line": "strasse",
    "postcode": "plz", "city": "ort", "country": "''DE''", "consent_email": "newsletter",
    "updated_at": "geaendert"}', priority => 10, track_changes => false);
SELECT unify.add_source('webshop', 'webshop', 'id', '{"first_name": "first_name", "last_name": "last_name",
    "birth_date": "dob", "email": "mail", "street_line": "street", "postcode": "zip", "city": "city",
    "country": "''DE''", "consent_email": "optin", "updated_at": "changed"}', priority => 20, track_changes => false);
SELECT source_name, source_rows FROM unify.sync() ORDER BY 1;
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();

-- Who is who: source row -> person (as a letter per person, in order of first appearance).
CREATE TEMP VIEW who AS
SELECT s.name AS source, r.source_key::int AS nr, r.record_id, rp.person_id,
       chr(64 + dense_rank() OVER (ORDER BY rp.person_id)::int) AS person, p.household_id
FROM unify.records r JOIN unify.sources s USING (source_id) LEFT JOIN unify.record_persons rp USING (record_id)
LEFT JOIN unify.persons p ON p.person_id = rp.person_id;

SELECT persons, records, new_persons, merges, splits FROM unify.resolve();
-- The first resolve wrote records and persons without their secondary indexes (the owner's
-- bulk path, unify._drop_indexes) and rebuilt every one of them as the extension defines it.
SELECT tablename, indexname, indexdef FROM pg_indexes
WHERE schemaname = 'unify' AND tablename IN ('persons', 'records') ORDER BY 1, 2;
-- Anna's four records are one person; sen./jun., Petra and the twins stay apart.
SELECT source, nr, person FROM who ORDER BY source, nr;
-- Households: the Webers are one, the Müller twins another.
SELECT string_agg(source || ':' || nr, ' ' ORDER BY source, nr) AS household
FROM who GROUP BY household_id ORDER BY 1;

-- Resolving again changes nothing and writes no event.
CREATE TEMP TABLE before AS SELECT record_id, person_id, household_id FROM who;
SELECT persons, new_persons, merges, splits, golden_changed FROM unify.resolve();
SELECT count(*) AS moved FROM who w JOIN before b USING (record_id)
WHERE (w.person_id, w.household_id) IS DISTINCT FROM (b.person_id, b.household_id);
SELECT count(*) AS events FROM unify.identity_events;

-- The golden record of Anna: newest e-mail by default; consent: the webshop opt-out wins
-- over two newsletter opt-ins, and says where it came from.
CREATE TEMP VIEW anna AS SELECT p.* FROM unify.persons p WHERE p.person_id = (SELECT person_id FROM who WHERE source = 'kunden' AND nr = 4);
SELECT first_name, last_name, email, street, house_number, postcode, city, birth_date, record_count, sources,
       consent_email, consent_email_source, consent_email_at FROM anna;
-- Petra opted in once and never out.
SELECT first_name, consent_email, consent_email_source FROM unify.persons WHERE first_name = 'petra';

-- Survivorship rules, each with its case.
SELECT unify.set_survivorship('email', 'most_frequent');
SELECT email FROM anna;
SELECT unify.set_survivorship('email', 'source_priority', '{"order": ["webshop"]}');
SELECT email FROM anna;
SELECT unify.set_survivorship('email', 'source_priority');
SELECT email FROM anna;
SELECT unify.set_survivorship('first_name', 'longest');
SELECT first_name FROM anna;
SELECT unify.set_survivorship('first_name', 'min');
SELECT first_name FROM anna;
SELECT unify.set_survivorship('first_name', 'max');
SELECT first_name FROM anna;
SELECT unify.set_survivorship('first_name', 'first_non_null');  -- the oldest record: the swapped one
SELECT first_name FROM anna;
SELECT unify.set_survivorship('email', 'most_recent');
SELECT unify.set_survivorship('first_name', 'most_frequent');
SELECT first_name, email FROM anna;
SELECT field, rule, is_default FROM unify.survivorship_rules ORDER BY field;
-- Bad rules are refused with a SQLSTATE, nothing changes.
SELECT unify.set_survivorship('shoe_size', 'max');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.set_survivorship('email', 'newest');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.set_survivorship('email', 'source_priority', '{"order": ["nowhere"]}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.set_survivorship('email', 'source_priority', '{"rank": 1}');
\echo :LAST_ERROR_SQLSTATE

-- Stable ids after adding data: a new customer and a second record of Lena.
INSERT INTO kunden VALUES
    (8, 'Jonas', 'Schmidt', '1990-09-09', 'jonas.schmidt@posteo.de', '0160 9998877', 'Ringstraße 1', '50667', 'Köln', true, '2026-02-01'),
    (9, 'Lena', 'Müller', '1985-05-05', 'lena.m@gmx.de', '0171 5550002', 'Gartenweg 2', '80331', 'München', NULL, '2026-02-02');
SELECT inserted FROM unify.sync('kunden');
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
SELECT persons, new_persons, merges, splits FROM unify.resolve();
SELECT count(*) AS kept_their_id FROM who w JOIN before b USING (record_id) WHERE w.person_id = b.person_id;
SELECT w.person_id = l.person_id AS lena_joined FROM who w, who l WHERE w.nr = 9 AND l.nr = 5 AND l.source = 'kunden' AND w.source = 'kunden';
SELECT person_id > (SELECT max(person_id) FROM before) AS new_id FROM who WHERE source = 'kunden' AND nr = 8;

-- Cannot-link: the webshop Anna is not the CRM Anna. The larger part keeps the id.
SELECT cardinality(unify.unlink((SELECT record_id FROM who WHERE source = 'kunden' AND nr = 4),
                                (SELECT record_id FROM who WHERE source = 'webshop' AND nr = 1001), 'different customer')) AS persons;
SELECT w.source, w.nr, w.person_id = (SELECT b.person_id FROM before b JOIN who x USING (record_id) WHERE x.source = 'kunden' AND x.nr = 4) AS kept_id
FROM who w WHERE w.nr IN (4, 6, 7, 1001) ORDER BY w.source, w.nr;
SELECT event, rule, reason, cardinality(related_ids) AS ids FROM unify.identity_events ORDER BY event_id;
-- ... and it stays split through resolve and re-scoring.
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
SELECT merges, splits FROM unify.resolve();
SELECT count(DISTINCT person_id) AS annas FROM who WHERE nr IN (4, 1001);

-- Must-link joins what the model keeps apart; the merged person keeps the smaller id.
SELECT unify.link((SELECT record_id FROM who WHERE source = 'kunden' AND nr = 8),
                  (SELECT record_id FROM who WHERE source = 'kunden' AND nr = 2), 'test: one login') =
       (SELECT min(person_id) FROM who WHERE source = 'kunden' AND nr IN (2, 8)) AS kept_smaller_id;
SELECT count(DISTINCT person_id) AS persons FROM who WHERE source = 'kunden' AND nr IN (2, 8);
-- Unmerge: back to its records as separate persons, and resolve does not undo it.
SELECT cardinality(unify.unmerge((SELECT person_id FROM who WHERE source = 'kunden' AND nr = 8), 'linked by mistake')) AS records;
SELECT merges, splits FROM unify.resolve();
SELECT count(DISTINCT person_id) AS persons FROM who WHERE source = 'kunden' AND nr IN (2, 8);
SELECT event, rule, reason FROM unify.person_history((SELECT person_id FROM who WHERE source = 'kunden' AND nr = 2)) ORDER BY event_id;
SELECT source, source_key, first_name, last_name FROM unify.person_records((SELECT person_id FROM who WHERE source = 'kunden' AND nr = 5));

-- Households move with their people: Klaus jun. leaves the Webers' home (new address, own
-- e-mail and mobile) for Jonas' flat. He stays the same person; the Webers keep their household
-- id, he joins Jonas' household.
CREATE TEMP TABLE households_before AS SELECT source, nr, person_id, household_id FROM who;
UPDATE kunden SET email = 'klaus.weber79@posteo.de', telefon = '0151 2223334', strasse = 'Ringstr. 1',
                  plz = '50667', ort = 'Köln', geaendert = '2026-03-01' WHERE nr = 2;
SELECT updated FROM unify.sync('kunden');
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
SELECT merges, splits FROM unify.resolve();
SELECT w.nr, w.person_id = b.person_id AS same_person,
       w.household_id = (SELECT household_id FROM households_before WHERE source = 'kunden' AND nr = 1) AS webers_household,
       w.household_id = (SELECT household_id FROM households_before WHERE source = 'kunden' AND nr = 8) AS jonas_household
FROM who w JOIN households_before b USING (source, nr) WHERE w.source = 'kunden' AND w.nr IN (1, 2, 3, 8) ORDER BY w.nr;
SELECT street, postcode, city, email FROM unify.persons WHERE person_id = (SELECT person_id FROM who WHERE source = 'kunden' AND nr = 2);

-- Stewardship errors carry a SQLSTATE and a hint.
SELECT unify.link(-1, (SELECT record_id FROM who WHERE nr = 1));
\echo :LAST_ERROR_SQLSTATE
SELECT unify.link((SELECT record_id FROM who WHERE nr = 1), (SELECT record_id FROM who WHERE nr = 1));
\echo :LAST_ERROR_SQLSTATE
SELECT unify.unmerge(-5);
\echo :LAST_ERROR_SQLSTATE
SELECT unify.erase_person(1, NULL);
\echo :LAST_ERROR_SQLSTATE

-- GDPR erasure of Lena (two records): nothing in unify.* holds her e-mail, phone or name after.
CREATE FUNCTION pg_temp.unify_rows_containing(needle text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE rel regclass; n bigint; total bigint := 0;
BEGIN
    FOR rel IN SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('SELECT count(*) FROM %s x WHERE lower(x::text) LIKE %L', rel, '%' || lower(needle) || '%') INTO n;
        total := total + n;
    END LOOP;
    RETURN total;
END $$;
SELECT pg_temp.unify_rows_containing('lena') AS lena_before, pg_temp.unify_rows_containing('5550002') AS phone_before;
CREATE TEMP TABLE lena AS SELECT person_id FROM who WHERE source = 'kunden' AND nr = 5;
SELECT (unify.erase_person((SELECT person_id FROM lena), 'GDPR Art. 17 request') - 'event_id') AS erased;
SELECT pg_temp.unify_rows_containing('lena') AS lena, pg_temp.unify_rows_containing('lena.m@gmx.de') AS email,
       pg_temp.unify_rows_containing('5550002') AS phone;
SELECT event, reason, details ->> 'records' AS records FROM unify.person_history((SELECT person_id FROM lena));
-- Her source rows are still there (delete_source_rows => false), but a sync does not bring her back.
SELECT count(*) AS source_rows FROM kunden WHERE vorname = 'Lena';
SELECT inserted FROM unify.sync('kunden');
SELECT pg_temp.unify_rows_containing('lena') AS lena_after_sync;
-- Deleting source rows respects the user's foreign keys: an error with a hint, nothing changed.
CREATE TABLE bestellungen (id int PRIMARY KEY, kunde int REFERENCES kunden (nr));
INSERT INTO bestellungen VALUES (1, 3);
SELECT unify.erase_person((SELECT person_id FROM who WHERE nr = 3 AND source = 'kunden'), 'request', delete_source_rows => true);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS petra_still_there FROM unify.persons WHERE first_name = 'petra';
-- Without the blocking reference the source rows go too.
SELECT (unify.erase_person((SELECT person_id FROM who WHERE nr = 8 AND source = 'kunden'), 'request', delete_source_rows => true)
        ->> 'source_rows_deleted') AS source_rows_deleted;
SELECT count(*) AS jonas_rows FROM kunden WHERE vorname = 'Jonas';
SELECT pg_temp.unify_rows_containing('jonas') AS jonas;

-- A person held together by one link far weaker than the rest is reported for review: four
-- records, three matched strongly with each other, the fourth only through one weak pair (the
-- pairs are written by hand here, as the scorer stores them).
CREATE TABLE kette (id int PRIMARY KEY, name text);
INSERT INTO kette VALUES (1, 'Jürgen Schulze'), (2, 'Jürgen Schulze'), (3, 'Juergen Schulze'), (4, 'J. Schulze');
SELECT unify.add_source('kette', 'kette', 'id', '{"full_name": "name"}', track_changes => false) AS source_id;
SELECT source_rows FROM unify.sync('kette');
CREATE TEMP VIEW kette_records AS
SELECT r.source_key::int AS id, r.record_id, rp.person_id FROM unify.records r JOIN unify.sources s USING (source_id)
LEFT JOIN unify.record_persons rp USING (record_id) WHERE s.name = 'kette';
DELETE FROM unify.pairs p USING kette_records k WHERE k.record_id IN (p.record_a, p.record_b);
INSERT INTO unify.pairs (record_a, record_b, match_weight, match_probability, is_match, blocking_rules, weights)
SELECT least(a.record_id, b.record_id), greatest(a.record_id, b.record_id), v.w, 1 - 1 / (1 + 2 ^ v.w), true, '{by_hand}', '{}'
FROM (VALUES (1, 2, 30.0), (1, 3, 28.0), (2, 3, 29.0), (3, 4, 12.0)) v (x, y, w)
JOIN kette_records a ON a.id = v.x JOIN kette_records b ON b.id = v.y;
SELECT merges FROM unify.resolve();
SELECT count(DISTINCT person_id) AS persons FROM kette_records;
SELECT section, label = format('person %s: weakest link 12.0, median 28.5', (SELECT person_id FROM kette_records WHERE id = 4)) AS names_the_person,
       bucket_start AS weakest, pairs, matches
FROM unify.match_report WHERE section = 'weak_chain';
-- Unlinking the weak pair splits the fourth record off, and the report is quiet again.
SELECT cardinality(unify.unlink((SELECT record_id FROM kette_records WHERE id = 3), (SELECT record_id FROM kette_records WHERE id = 4),
                                'not the same Jürgen')) AS persons;
SELECT id, dense_rank() OVER (ORDER BY person_id) AS person FROM kette_records ORDER BY id;
SELECT count(*) AS weak_chains FROM unify.match_report WHERE section = 'weak_chain';
SELECT unify.remove_source('kette');
DROP VIEW kette_records;
DROP TABLE kette;

-- The BI view.
SELECT first_name, last_name, household_size, record_count, sources FROM unify.customer_360 ORDER BY person_id;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
