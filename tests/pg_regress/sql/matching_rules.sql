-- Matching with the shipped (untrained) model on hand-made German records: family members at
-- one address stay apart, real duplicates match, a junk e-mail block is skipped and reported,
-- bad models and unknown records are refused with a SQLSTATE.
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
    strasse text, plz text, ort text
);
INSERT INTO kunden VALUES
    (1, 'Klaus', 'Weber', '1950-03-01', 'weber@web.de', '030 1234567', 'Hauptstraße 5', '10115', 'Berlin'),   -- senior
    (2, 'Klaus', 'Weber', '1979-11-20', 'weber@web.de', '030 1234567', 'Hauptstr. 5', '10115', 'Berlin'),     -- junior
    (3, 'Petra', 'Weber', '1952-07-07', 'weber@web.de', '+49 30 1234567', 'Hauptstrasse 5', '10115', 'Berlin'),
    (4, 'Anna', 'Müller', '1985-05-05', 'anna.mueller@gmx.de', '0171 5550001', 'Gartenweg 2', '80331', 'München'), -- twin
    (5, 'Lena', 'Müller', '1985-05-05', 'lena.m@gmx.de', '0171 5550002', 'Gartenweg 2', '80331', 'München'),       -- twin
    (6, 'Anna', 'Mueller', '1985-05-05', 'Anna.Mueller@GMX.de', '+49 171 5550001', 'Gartenweg 2', '80331', 'Muenchen'), -- Anna again
    (7, 'MÜLLER', 'Anna', NULL, NULL, '0171/5550001', NULL, '80331', 'München'),                                     -- Anna, swapped
    (8, 'Jonas', 'Schulz', NULL, 'familie.schulz@web.de', NULL, 'Lindenweg 9', '50667', 'Köln'),
    (9, NULL, NULL, NULL, 'Familie.Schulz@web.de', NULL, NULL, NULL, NULL),          -- a sign-up of someone in that family
    (10, 'Schulz', NULL, NULL, 'jonas.schulz@gmx.de', NULL, NULL, NULL, NULL),       -- last name in the only name field
    (11, 'Jonas', 'Schulz', NULL, 'jonas.schulz@gmx.de', NULL, NULL, '50667', 'Köln'),
    (12, 'Klaus', 'Weber', NULL, NULL, '030 1234567', 'Hauptstraße 5', '10115', 'Berlin'),       -- father or son?
    (13, 'Klaus', 'Weber', NULL, 'klaus.weber@gmx.de', '030 1234567', 'Hauptstraße 5', '10115', 'Berlin'),
    (14, 'Klaus', 'Weber', NULL, 'klaus.weber@gmx.de', NULL, NULL, '10115', 'Berlin');     -- the same as 13
INSERT INTO kunden SELECT 100 + i, 'Test' || i, 'Kunde' || i, NULL, 'test@test.de', NULL, NULL, NULL, NULL
FROM generate_series(1, 60) i;
SELECT unify.add_source('kunden', 'kunden', 'nr', '{"first_name": "vorname", "last_name": "nachname",
    "birth_date": "geboren", "email": "email", "phone": "telefon", "street_line": "strasse",
    "postcode": "plz", "city": "ort", "country": "''DE''"}', track_changes => false);
SELECT source_rows FROM unify.sync('kunden');
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();

-- Which of the hand-made pairs match (record ids follow nr for 1..7).
CREATE TEMP VIEW k AS SELECT r.record_id, k.nr FROM unify.records r JOIN kunden k ON k.nr::text = r.source_key;
SELECT a.nr AS a, b.nr AS b, coalesce(p.is_match, false) AS is_match, p.forced_by,
       p.weights ? 'identity_conflict' AS identity_conflict
FROM k a JOIN k b ON a.nr < b.nr AND b.nr <= 7
LEFT JOIN unify.pairs p ON p.record_a = least(a.record_id, b.record_id) AND p.record_b = greatest(a.record_id, b.record_id)
WHERE p.record_a IS NOT NULL ORDER BY a.nr, b.nr;

-- Household values: the shared e-mail and landline of the Webers are no evidence.
SELECT term, level, weight = 0 AS no_weight, note
FROM unify.explain_match((SELECT record_id FROM k WHERE nr = 1), (SELECT record_id FROM k WHERE nr = 2))
WHERE term IN ('email', 'phone', 'birth_date', 'identity_conflict');

-- A household mailbox named as one (familie.…@) is no evidence, however few hold it; a single
-- name field holding the last name compares with the last name.
SELECT a.nr AS a, b.nr AS b, coalesce(p.is_match, false) AS is_match, p.forced_by
FROM k a JOIN k b ON a.nr < b.nr AND a.nr BETWEEN 8 AND 11 AND b.nr BETWEEN 8 AND 11
LEFT JOIN unify.pairs p ON p.record_a = least(a.record_id, b.record_id) AND p.record_b = greatest(a.record_id, b.record_id)
ORDER BY a.nr, b.nr;
SELECT term, level, note FROM unify.explain_match((SELECT record_id FROM k WHERE nr = 8), (SELECT record_id FROM k WHERE nr = 9))
WHERE term = 'email';
SELECT term, level, value_a, value_b FROM unify.explain_match((SELECT record_id FROM k WHERE nr = 10), (SELECT record_id FROM k WHERE nr = 11))
WHERE term IN ('first_name', 'last_name');

-- One name in one home without a birth date: likely, but with nothing of its own agreeing
-- (only the home's landline) it is held for review, never merged; a mailbox of its own decides.
SELECT a.nr AS a, b.nr AS b, p.match_probability >= 0.9 AS likely, coalesce(p.is_match, false) AS is_match
FROM k a JOIN k b ON a.nr < b.nr AND a.nr IN (1, 2, 12, 13) AND b.nr IN (12, 13, 14)
LEFT JOIN unify.pairs p ON p.record_a = least(a.record_id, b.record_id) AND p.record_b = greatest(a.record_id, b.record_id)
ORDER BY a.nr, b.nr;
SELECT term, level, weight FROM unify.explain_match((SELECT record_id FROM k WHERE nr = 1), (SELECT record_id FROM k WHERE nr = 12))
WHERE term = 'held_for_review';

-- The test@test.de block (60 records) is skipped, not squared.
SELECT rule, skipped_blocks, largest_skipped_block, largest_skipped_key FROM unify.blocking_stats WHERE rule = 'email';
-- An e-mail on many records is junk, not evidence: none of those records match each other.
SELECT count(*) AS junk_matches FROM unify.pairs p JOIN k ON k.record_id IN (p.record_a, p.record_b) WHERE k.nr > 100 AND p.is_match;

-- Models are validated.
SELECT unify.set_model('{"prior": 2}');
SELECT unify.set_model(jsonb_set(unify.default_model(), '{prior}', '0'));
SELECT unify.set_model(jsonb_set(unify.default_model(), '{comparisons,0,levels,0,name}', '"same"'));
SELECT unify.set_model(jsonb_set(unify.default_model(), '{blocking_rules}', '[]'));
SELECT unify.set_model(jsonb_set(unify.default_model(), '{match_threshold}', '0.95')) AS version;
SELECT (unify.get_model() ->> 'match_threshold')::float8 AS match_threshold;
SELECT count(*) FROM unify.explain_match(-1, -2);

-- The owner's full scoring rebuilds the blocking index after filling it; a unify_admin who
-- does not own the tables fills the indexed table. Both end with the same keys and indexes.
SELECT count(*) AS keys_as_owner FROM unify.block_keys;
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'unify' AND tablename IN ('block_keys', 'pairs') ORDER BY 1, 2;
CREATE ROLE regress_matcher IN ROLE unify_admin;
SET ROLE regress_matcher;
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
SELECT count(*) AS keys_as_admin FROM unify.block_keys;
RESET ROLE;
DROP ROLE regress_matcher;
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'unify' AND tablename IN ('block_keys', 'pairs') ORDER BY 1, 2;

-- A rule that would explode is refused before anything is compared.
SELECT unify.set_model(jsonb_set(unify.default_model(), '{max_candidate_pairs}', '5'));
SELECT * FROM unify.score_pairs();

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
