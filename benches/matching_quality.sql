-- Pairwise matching quality on the generated CRM against its truth table: overall, recall per
-- difficulty of the true pairs, and merged family pairs (same household, different people);
-- then the same for persons (every two records of one person after unify.resolve()).
-- Needs: crmgen output in the search path (table truth), the demo sources synced, and
-- unify.score_pairs() and unify.resolve() run. Figures only; no assertion (tests/pg_regress asserts the floors).
\ir truth_pairs.sql
CREATE TEMP TABLE family_pairs AS
SELECT a.record_id AS record_a, b.record_id AS record_b,
       ARRAY(SELECT DISTINCT v FROM unnest(a.variations || b.variations) v
             WHERE v IN ('twin', 'junior', 'senior', 'shared_email', 'married', 'family') ORDER BY v) AS tags
FROM rec_truth a JOIN rec_truth b
  ON a.household_id = b.household_id AND a.person_id <> b.person_id AND a.record_id < b.record_id;

\echo 'overall (pairwise, is_match pairs against the truth)'
SELECT * FROM pg_temp.against_truth('predicted');

\echo 'recall of true pairs by difficulty (a pair counts under every variation either record has)'
SELECT tag, count(*) AS true_pairs, count(p.record_a) AS found, round(count(p.record_a)::numeric / count(*), 4) AS recall
FROM true_pairs t CROSS JOIN LATERAL unnest(CASE WHEN t.tags = '{}' THEN ARRAY['clean'] ELSE t.tags END) tag
LEFT JOIN predicted p USING (record_a, record_b)
GROUP BY tag ORDER BY tag;

\echo 'family members of one household that must stay apart: pairs merged'
SELECT tag, count(*) AS family_pairs, count(p.record_a) AS merged, round(count(p.record_a)::numeric / count(*), 5) AS merged_share
FROM family_pairs f CROSS JOIN LATERAL unnest(CASE WHEN f.tags = '{}' THEN ARRAY['family'] ELSE f.tags END) tag
LEFT JOIN predicted p USING (record_a, record_b)
GROUP BY tag ORDER BY tag;

\echo 'persons after unify.resolve(): every two records of one person, against the truth'
CREATE TEMP TABLE person_pairs AS
SELECT a.record_id AS record_a, b.record_id AS record_b
FROM unify.record_persons a JOIN unify.record_persons b ON a.person_id = b.person_id AND a.record_id < b.record_id;
SELECT * FROM pg_temp.against_truth('person_pairs');
SELECT count(*) AS family_pairs, count(p.record_a) AS in_one_person, round(count(p.record_a)::numeric / count(*), 5) AS share
FROM family_pairs f LEFT JOIN person_pairs p USING (record_a, record_b);
