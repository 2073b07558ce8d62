-- Matching quality on the sample German CRM (crmgen --rows 2000 --seed 7, schema crm, loaded by
-- scripts/test.sh): the four sources as the demo registers them, the model trained without
-- labels, every pair against the generator's truth. Floors below the figures measured on this
-- data, so that a change that makes matching worse fails here; the 100k and 1M figures are
-- benches/matching.sh's (docs/BENCHMARKS.md).
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
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
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();

CREATE TEMP TABLE rec_truth AS
SELECT r.record_id, t.person_id, t.household_id
FROM unify.records r JOIN unify.sources s USING (source_id)
JOIN crm.truth t ON t.source = s.name AND t.source_key = r.source_key;
CREATE TEMP TABLE labelled AS
SELECT p.is_match, p.match_probability, a.person_id = b.person_id AS same_person,
       a.household_id = b.household_id AND a.person_id <> b.person_id AS family
FROM unify.pairs p JOIN rec_truth a ON a.record_id = p.record_a JOIN rec_truth b ON b.record_id = p.record_b;
CREATE TEMP VIEW quality AS
SELECT tp, fp, true_pairs, tp::float8 / nullif(tp + fp, 0) AS precision, tp::float8 / true_pairs AS recall,
       family_merged, family_pairs
FROM (SELECT count(*) FILTER (WHERE is_match AND same_person) AS tp,
             count(*) FILTER (WHERE is_match AND NOT same_person) AS fp,
             count(*) FILTER (WHERE is_match AND family) AS family_merged,
             (SELECT count(*) FROM rec_truth a JOIN rec_truth b ON a.person_id = b.person_id AND a.record_id < b.record_id) AS true_pairs,
             (SELECT count(*) FROM rec_truth a JOIN rec_truth b ON a.household_id = b.household_id
                AND a.person_id <> b.person_id AND a.record_id < b.record_id) AS family_pairs
      FROM labelled) c;
-- Measured when written: 1,125 of 1,407 true pairs found, 5 false matches (a loyalty card with
-- postcode and city only against a namesake's full address), 5 family pairs merged of 1,812.
-- Since issue 25 the sample holds the hard cases (short forms, double names, sen./jun., twins,
-- work e-mails), and namesakes of one postcode where a record has no street are held for
-- review: 938 of 1,386 true pairs found (recall 0.68); matching_hard_cases.sql has the kinds.
SELECT true_pairs, family_pairs, precision >= 0.99 AS precision_ok, recall >= 0.65 AS recall_ok,
       family_merged <= 10 AS families_kept_apart FROM quality;
-- Namesakes in one home who agree on nothing of their own are held for review.
SELECT count(*) > 0 AS some_held FROM unify.pairs p
WHERE NOT p.is_match AND p.match_probability >= 0.9 AND p.forced_by IS NULL;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
