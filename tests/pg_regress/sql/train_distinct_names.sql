-- Issue 23: train() on a source whose first names are all distinct stored a model with a u
-- above 1, which score_pairs() then refused ("m and u must be in (0, 1]"). Now the model is
-- valid, says in its report which comparisons (if any) it could not train, and scoring works.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
-- 300 people with two records each; every record's first name is its own (letters only:
-- the cleaner drops digits), last names from 7, e-mails and birth dates per person.
CREATE TABLE distinct_names (nr int PRIMARY KEY, vorname text, nachname text, email text, geboren date);
INSERT INTO distinct_names
SELECT g, 'Vorname' || translate(g::text, '0123456789', 'abcdefghij'),
       (ARRAY['Müller', 'Schmidt', 'Weber', 'Wagner', 'Becker', 'Hoffmann', 'Koch'])[1 + (g / 2) % 7],
       'person' || g / 2 || '@example.de', date '1970-01-01' + (g / 2) % 28
FROM generate_series(0, 599) g;
SELECT unify.add_source('distinct_names', 'distinct_names', 'nr', '{"first_name": "vorname",
    "last_name": "nachname", "email": "email", "birth_date": "geboren"}', track_changes => false) > 0 AS registered;
SELECT source_rows FROM unify.sync('distinct_names');
SELECT count(DISTINCT first_name) AS first_names, count(*) AS records FROM unify.records;
SELECT count(*) > 0 AS trained FROM unify.train();
-- Every m and u of the stored model is a probability, and validation accepts it.
SELECT bool_and((l ->> 'm')::float8 > 0 AND (l ->> 'm')::float8 <= 1 AND (l ->> 'u')::float8 > 0 AND (l ->> 'u')::float8 <= 1) AS probabilities,
       unify.validate_model(unify.get_model()) IS NOT NULL AS valid
FROM jsonb_array_elements(unify.get_model() -> 'comparisons') c, jsonb_array_elements(c -> 'levels') l;
SELECT report -> 'kept_untrained' AS kept_untrained FROM unify.model ORDER BY version DESC LIMIT 1;
SELECT candidate_pairs > 0 AS blocked, matches >= 250 AS duplicates_found FROM unify.score_pairs();
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
