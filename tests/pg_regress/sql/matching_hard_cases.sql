-- The hard German household cases of issue 25 on the sample CRM (crmgen --rows 2000 --seed 7,
-- schema crm, loaded by scripts/test.sh): short forms of first names (Hans / Johannes), double
-- and changed last names, sen./jun. in name fields, fathers and sons of one name in one home
-- (also where a loyalty card has postcode and city only), twins. The model trained without
-- labels; pairs against the generator's truth, by the kind of difference the truth records.
-- Floors below the figures measured on this data; benches/matching_hard.sh measures on a seed
-- and a layout never used in development (docs/BENCHMARKS.md).
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;

-- A model stored before the nickname and double-name levels still loads: validate_model fills
-- them in at the shipped values.
SELECT unify.validate_model(jsonb_set(jsonb_set(unify.default_model(),
         '{comparisons,0,levels}', (unify.default_model() #> '{comparisons,0,levels}') - 6),
         '{comparisons,1,levels}', (unify.default_model() #> '{comparisons,1,levels}') - 5))
       = unify.default_model() AS old_model_loads;
SELECT jsonb_path_query_array(unify.default_model(), '$.comparisons[0 to 1].levels[*].name') AS name_levels;

SET search_path = crm, public;
\i demo/sources.sql
RESET search_path;
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT bool_and(converged) AS converged FROM unify.train();
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
-- EM learned a weight for the short-form level: a short form is evidence for the pair.
SELECT (l ->> 'm')::float8 > (l ->> 'u')::float8 AS nickname_is_evidence
FROM jsonb_array_elements(unify.get_model() #> '{comparisons,0,levels}') l WHERE l ->> 'name' = 'nickname';

CREATE TEMP TABLE rec_truth AS
SELECT r.record_id, t.person_id, t.household_id, t.variations
FROM unify.records r JOIN unify.sources s USING (source_id)
JOIN crm.truth t ON t.source = s.name AND t.source_key = r.source_key;
CREATE TEMP TABLE truth_pairs AS
SELECT a.record_id AS record_a, b.record_id AS record_b, a.person_id = b.person_id AS same_person,
       a.variations || b.variations AS tags
FROM rec_truth a JOIN rec_truth b ON a.record_id < b.record_id
 AND (a.person_id = b.person_id OR a.household_id = b.household_id);
CREATE TEMP TABLE judged AS
SELECT t.*, coalesce(p.is_match, false) AS merged
FROM truth_pairs t LEFT JOIN unify.pairs p USING (record_a, record_b);

-- Fathers and sons (mothers and daughters) of one name in one home: at most 1% merged.
-- Measured when written: 1 of 113.
SELECT count(*) >= 100 AS enough_namesake_pairs, count(*) FILTER (WHERE merged) <= 0.01 * count(*) AS kept_apart
FROM judged WHERE NOT same_person AND tags @> '{senior,junior}';
-- Twins, alike names included (Lena and Lea): none merged.
SELECT count(*) FILTER (WHERE merged) AS twin_pairs_merged
FROM judged j JOIN rec_truth a ON a.record_id = j.record_a JOIN rec_truth b ON b.record_id = j.record_b
WHERE NOT same_person AND a.variations @> '{twin}' AND b.variations @> '{twin}';
-- Pairs of one person where a record gives a short form of the first name. Measured when
-- written: 214 of 347 found (0.62; all pairs of the kind, with or without common evidence).
SELECT count(*) >= 20 AS enough_nickname_pairs,
       count(*) FILTER (WHERE merged)::float8 / count(*) >= 0.55 AS nicknames_found
FROM judged WHERE same_person AND tags @> '{nickname}';
-- One such pair explained: the first names agree at the nickname level.
SELECT e.level
FROM (SELECT record_a, record_b FROM judged j
      JOIN unify.records a ON a.record_id = j.record_a JOIN unify.records b ON b.record_id = j.record_b
      WHERE same_person AND merged AND tags @> '{nickname}' AND a.first_name <> b.first_name
      ORDER BY record_a, record_b LIMIT 1) j
CROSS JOIN LATERAL unify.explain_match(j.record_a, j.record_b) e WHERE e.term = 'first_name';
-- Pairs whose records share an e-mail that is no family mailbox: none missed (issue 25's target).
-- 14 of them were missed when this test was written, where a short form the table lacks (Gretl),
-- a typo of one (Bien for Bine) or a swapped and mistyped name made two holders of the e-mail
-- look like two people, so the e-mail counted as a household's; none since the evening of
-- 2026-12-06 (750 such pairs).
SELECT count(*) FILTER (WHERE NOT merged) AS personal_email_pairs_missed
FROM judged j JOIN unify.records a ON a.record_id = j.record_a JOIN unify.records b ON b.record_id = j.record_b
WHERE same_person AND a.email_key = b.email_key AND NOT j.tags @> '{shared_email}';
-- Overall precision of the matches.
SELECT count(*) FILTER (WHERE a.person_id = b.person_id)::float8 / count(*) >= 0.99 AS precision_ok
FROM unify.pairs p JOIN rec_truth a ON a.record_id = p.record_a JOIN rec_truth b ON b.record_id = p.record_b
WHERE p.is_match;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
