-- Matching quality on Febrl3 (5000 person records, 6538 true duplicate pairs; tests/data/README.md):
-- the model trained without labels must reach pairwise F1 >= 0.995. rec_id names the true
-- entity and is used only to score.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
CREATE SCHEMA febrl;
CREATE TABLE febrl.people (
    rec_id text PRIMARY KEY, given_name text, surname text, street_number text, address_1 text,
    address_2 text, suburb text, postcode text, state text, date_of_birth text, soc_sec_id text
);
\copy febrl.people FROM 'tests/data/febrl3.csv' WITH (FORMAT csv, HEADER true)
SELECT unify.add_source('febrl', 'febrl.people', 'rec_id',
    '{"first_name": "given_name", "last_name": "surname", "house_number": "street_number",
      "street": "address_1", "city": "suburb", "postcode": "postcode", "country": "''AU''",
      "birth_date": "date_of_birth", "external_id": "soc_sec_id"}', track_changes => false);
-- Training needs records.
SELECT * FROM unify.train();
SELECT source_rows, inserted FROM unify.sync('febrl');

-- Training reports every EM session and whether it converged.
SELECT session, estimated, converged, match_share BETWEEN 0 AND 1 AS share_ok FROM unify.train() ORDER BY session;
SELECT model_version, candidate_pairs > 6538 AS enough_candidates, matches > 6000 AS plenty_of_matches FROM unify.score_pairs();

-- Pairwise quality against the truth.
CREATE TEMP VIEW truth AS
SELECT a.record_id AS record_a, b.record_id AS record_b
FROM unify.records a JOIN unify.records b
  ON split_part(a.source_key, '-', 2) = split_part(b.source_key, '-', 2) AND a.record_id < b.record_id;
CREATE TEMP VIEW quality AS
SELECT tp, fp, fn,
       tp::float8 / nullif(tp + fp, 0) AS precision,
       tp::float8 / nullif(tp + fn, 0) AS recall,
       2.0 * tp / nullif(2 * tp + fp + fn, 0) AS f1
FROM (SELECT count(*) FILTER (WHERE t.record_a IS NOT NULL AND p.record_a IS NOT NULL) AS tp,
             count(*) FILTER (WHERE t.record_a IS NULL) AS fp,
             count(*) FILTER (WHERE p.record_a IS NULL) AS fn
      FROM (SELECT record_a, record_b FROM unify.pairs WHERE is_match) p
      FULL JOIN truth t USING (record_a, record_b)) c;
SELECT (SELECT count(*) FROM truth) AS true_pairs, precision >= 0.995 AS precision_ok,
       recall >= 0.99 AS recall_ok, f1 >= 0.995 AS f1_ok FROM quality;

-- Every stored pair's explanation sums to its weight.
SELECT count(*) AS pairs_checked,
       count(*) FILTER (WHERE abs(e.total - p.match_weight) > 1e-9) AS explanations_off
FROM (SELECT * FROM unify.pairs ORDER BY record_a, record_b LIMIT 200) p,
     LATERAL (SELECT sum(weight) AS total FROM unify.explain_match(p.record_a, p.record_b)) e;

-- One explanation as a BI tool would show it.
SELECT term, level, value_a, value_b, round(weight::numeric, 2) AS weight
FROM unify.explain_match(
    (SELECT record_id FROM unify.records WHERE source_key = 'rec-552-org'),
    (SELECT record_id FROM unify.records WHERE source_key = 'rec-552-dup-2'));

-- The report for choosing thresholds.
SELECT section, count(*) > 0 AS has_rows FROM unify.match_report GROUP BY section ORDER BY section;
SELECT rule, pairs > 0 AS produced_pairs FROM unify.blocking_stats ORDER BY rule;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
