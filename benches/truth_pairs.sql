-- The generated CRM's truth as record pairs, shared by benches/matching_quality.sql and
-- benches/scale.sh: rec_truth (each record's true person, household and the variations applied),
-- true_pairs (every two records of one person, with their variations), predicted (the is_match
-- pairs of unify.pairs) and pg_temp.against_truth(table of pairs): precision, recall and F1.
-- Needs: crmgen output in the search path (table truth), its sources synced, score_pairs run.
CREATE TEMP TABLE rec_truth AS
SELECT r.record_id, t.person_id, t.household_id, t.variations
FROM unify.records r JOIN unify.sources s USING (source_id)
JOIN truth t ON t.source = s.name AND t.source_key = r.source_key;
CREATE INDEX ON rec_truth (person_id);
CREATE INDEX ON rec_truth (household_id);
ANALYZE rec_truth;
CREATE TEMP TABLE true_pairs AS
SELECT a.record_id AS record_a, b.record_id AS record_b,
       ARRAY(SELECT DISTINCT v FROM unnest(a.variations || b.variations) v ORDER BY v) AS tags
FROM rec_truth a JOIN rec_truth b ON a.person_id = b.person_id AND a.record_id < b.record_id;
CREATE TEMP TABLE predicted AS SELECT record_a, record_b FROM unify.pairs WHERE is_match;
-- Precision, recall and F1 of a table of predicted (record_a, record_b) against true_pairs.
CREATE FUNCTION pg_temp.against_truth(predicted regclass)
RETURNS TABLE (tp bigint, fp bigint, fn bigint, "precision" numeric, recall numeric, f1 numeric)
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT (SELECT count(*) FROM %1$s p JOIN true_pairs t USING (record_a, record_b)),
                           (SELECT count(*) FROM %1$s p LEFT JOIN true_pairs t USING (record_a, record_b) WHERE t.record_a IS NULL),
                           (SELECT count(*) FROM true_pairs t LEFT JOIN %1$s p USING (record_a, record_b) WHERE p.record_a IS NULL)',
                   predicted) INTO tp, fp, fn;
    "precision" := round(tp::numeric / nullif(tp + fp, 0), 5);
    recall := round(tp::numeric / nullif(tp + fn, 0), 5);
    f1 := round(2.0 * tp / nullif(2 * tp + fp + fn, 0), 5);
    RETURN NEXT;
END
$$;
