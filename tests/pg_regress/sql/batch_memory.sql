-- customer_unify.batch_memory: unify.score_pairs over more records than the budget holds streams
-- them in blocking-key order and scores block by block. On the sample German CRM (crmgen --rows
-- 2000 --seed 7, schema crm, loaded by scripts/test.sh) a budget of 64kB (16 records held at
-- once) takes that path; the default (1GB) holds all records. Both must give the same pairs,
-- blocking keys and figures.
-- Self-contained: one transaction, rolled back, and the sequences it advanced set back.
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
SHOW customer_unify.batch_memory;
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT bool_and(converged) AS converged FROM unify.train();
-- Small blocks for the last rules, so that some blocks are skipped and named.
SELECT unify.set_model(jsonb_set(unify.get_model(), '{blocking_rules}',
         (SELECT jsonb_agg(CASE WHEN r->>'name' IN ('last_name_phonetic_postcode_initial', 'full_name_phonetic')
                                THEN jsonb_set(r, '{max_block_size}', '2') ELSE r END)
          FROM jsonb_array_elements(unify.get_model() -> 'blocking_rules') r))) > 0 AS model_set;

-- All records held at once.
CREATE TEMP TABLE held AS SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
CREATE TEMP TABLE held_pairs AS SELECT record_a, record_b, match_weight, match_probability, is_match, forced_by,
       blocking_rules, weights, model_version FROM unify.pairs;
CREATE TEMP TABLE held_stats AS SELECT rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block,
       largest_skipped_key FROM unify.blocking_stats;
CREATE TEMP TABLE held_keys AS SELECT key_hash, record_id FROM unify.block_keys;
SELECT stored_pairs > 1000 AS many_pairs, matches > 500 AS many_matches FROM held;
SELECT count(*) FILTER (WHERE cardinality(blocking_rules) > 1) > 100 AS pairs_of_several_rules FROM held_pairs;
SELECT count(*) FILTER (WHERE skipped_blocks > 0 AND largest_skipped_key IS NOT NULL) >= 2 AS skipped_blocks_named FROM held_stats;

-- Streamed within 64kB.
SET LOCAL customer_unify.batch_memory = '64kB';
SHOW customer_unify.batch_memory;
CREATE TEMP TABLE streamed AS SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
SELECT (SELECT row(h.*)::text FROM held h) = (SELECT row(s.*)::text FROM streamed s) AS same_figures;
SELECT (SELECT count(*) FROM (SELECT * FROM held_pairs EXCEPT
          SELECT record_a, record_b, match_weight, match_probability, is_match, forced_by, blocking_rules, weights,
                 model_version FROM unify.pairs) x) AS pairs_only_held,
       (SELECT count(*) FROM (SELECT record_a, record_b, match_weight, match_probability, is_match, forced_by,
                 blocking_rules, weights, model_version FROM unify.pairs EXCEPT SELECT * FROM held_pairs) x) AS pairs_only_streamed,
       (SELECT count(*) FROM unify.pairs) = (SELECT count(*) FROM held_pairs) AS same_count;
SELECT (SELECT count(*) FROM (SELECT * FROM held_stats EXCEPT SELECT rule, pairs, new_pairs, blocks, skipped_blocks,
          largest_skipped_block, largest_skipped_key FROM unify.blocking_stats) x) AS stats_only_held,
       (SELECT count(*) FROM (SELECT rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block,
          largest_skipped_key FROM unify.blocking_stats EXCEPT SELECT * FROM held_stats) x) AS stats_only_streamed;
SELECT (SELECT count(*) FROM (SELECT * FROM held_keys EXCEPT SELECT key_hash, record_id FROM unify.block_keys) x) AS keys_only_held,
       (SELECT count(*) FROM (SELECT key_hash, record_id FROM unify.block_keys EXCEPT SELECT * FROM held_keys) x) AS keys_only_streamed;
-- The indexes dropped for the load are back, the temp tables gone, the cursor setting restored.
SELECT count(*) AS pairs_indexes FROM pg_indexes WHERE schemaname = 'unify' AND tablename = 'pairs';
SELECT count(*) AS temp_tables_left FROM pg_class WHERE relname LIKE 'unify_score%' AND relpersistence = 't';
SHOW cursor_tuple_fraction;
-- Within 4MB the records are not held at once but their blocking keys are (the blocks and
-- figures from one sort in memory, unify.block_keys written from it): the same again.
SET LOCAL customer_unify.batch_memory = '4MB';
CREATE TEMP TABLE keys_held AS SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
SELECT (SELECT row(h.*)::text FROM held h) = (SELECT row(k.*)::text FROM keys_held k) AS same_figures;
SELECT (SELECT count(*) FROM (SELECT * FROM held_pairs EXCEPT
          SELECT record_a, record_b, match_weight, match_probability, is_match, forced_by, blocking_rules, weights,
                 model_version FROM unify.pairs) x) AS pairs_only_held,
       (SELECT count(*) FROM (SELECT record_a, record_b, match_weight, match_probability, is_match, forced_by,
                 blocking_rules, weights, model_version FROM unify.pairs EXCEPT SELECT * FROM held_pairs) x) AS pairs_only_keys_held,
       (SELECT count(*) FROM unify.pairs) = (SELECT count(*) FROM held_pairs) AS same_count;
SELECT (SELECT count(*) FROM (SELECT * FROM held_stats EXCEPT SELECT rule, pairs, new_pairs, blocks, skipped_blocks,
          largest_skipped_block, largest_skipped_key FROM unify.blocking_stats) x) AS stats_only_held,
       (SELECT count(*) FROM (SELECT rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block,
          largest_skipped_key FROM unify.blocking_stats EXCEPT SELECT * FROM held_stats) x) AS stats_only_keys_held;
SELECT (SELECT count(*) FROM (SELECT * FROM held_keys EXCEPT SELECT key_hash, record_id FROM unify.block_keys) x) AS keys_only_held,
       (SELECT count(*) FROM (SELECT key_hash, record_id FROM unify.block_keys EXCEPT SELECT * FROM held_keys) x) AS keys_only_keys_held;
SELECT count(*) AS pairs_indexes FROM pg_indexes WHERE schemaname = 'unify' AND tablename = 'pairs';
SELECT count(*) AS block_keys_indexes FROM pg_indexes WHERE schemaname = 'unify' AND tablename = 'block_keys';
-- Records too wide to be kept packed in a quarter of the budget (3 kB each) are read again by id
-- for each batch: the same again, against all records held, both on the widened records.
SAVEPOINT wide;
UPDATE unify.records SET customer_number = coalesce(customer_number, '') || repeat('0', 3000);
RESET customer_unify.batch_memory;
CREATE TEMP TABLE wide_held AS SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
CREATE TEMP TABLE wide_pairs AS SELECT record_a, record_b, match_weight, match_probability, is_match, forced_by,
       blocking_rules, weights, model_version FROM unify.pairs;
CREATE TEMP TABLE wide_stats AS SELECT rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block,
       largest_skipped_key FROM unify.blocking_stats;
SET LOCAL customer_unify.batch_memory = '4MB';
CREATE TEMP TABLE wide_read AS SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
SELECT (SELECT row(h.*)::text FROM wide_held h) = (SELECT row(k.*)::text FROM wide_read k) AS same_figures,
       (SELECT stored_pairs > 1000 FROM wide_read) AS many_pairs,
       (SELECT count(*) FROM ((SELECT * FROM wide_pairs EXCEPT SELECT record_a, record_b, match_weight, match_probability,
                                 is_match, forced_by, blocking_rules, weights, model_version FROM unify.pairs)
                              UNION ALL
                              (SELECT record_a, record_b, match_weight, match_probability, is_match, forced_by,
                                 blocking_rules, weights, model_version FROM unify.pairs EXCEPT SELECT * FROM wide_pairs)) x) AS pairs_differing,
       (SELECT count(*) FROM ((SELECT * FROM wide_stats EXCEPT SELECT rule, pairs, new_pairs, blocks, skipped_blocks,
                                 largest_skipped_block, largest_skipped_key FROM unify.blocking_stats)
                              UNION ALL
                              (SELECT rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block,
                                 largest_skipped_key FROM unify.blocking_stats EXCEPT SELECT * FROM wide_stats)) x) AS stats_differing;
ROLLBACK TO SAVEPOINT wide;
RESET customer_unify.batch_memory;

-- unify.train within the budget: streamed as score_pairs is (the keys in a temp table of its own,
-- the name frequencies and exact-agreement u from value counts in SQL, u's random pairs from a
-- sample of records, EM and the prior on a weighted sample of the candidates drawn as they stream
-- past). On 2000 records both samples are complete (every record, every candidate), so both
-- trainings from the same starting model must give the same model: parameters equal to a relative
-- 1e-9 (the sums are added in another order), everything else, the frequencies and the
-- candidates exactly.
RESET customer_unify.batch_memory;
CREATE TEMP TABLE start_model AS SELECT unify.get_model() AS model;
SELECT count(*) > 0 AS trained FROM unify.train();
CREATE TEMP TABLE held_version AS SELECT max(version) AS version FROM unify.model;
SELECT stored_pairs > 1000 AS scored FROM unify.score_pairs();
CREATE TEMP TABLE held_train_pairs AS SELECT record_a, record_b, is_match, match_weight FROM unify.pairs;
CREATE TEMP TABLE keys_before AS SELECT key_hash, record_id FROM unify.block_keys;
CREATE TEMP TABLE state_before AS SELECT blocking_rules, keys_built_at FROM unify.matching_state;
SELECT unify.set_model((SELECT model FROM start_model)) > 0 AS start_model_set;
SET LOCAL customer_unify.batch_memory = '64kB';
SELECT count(*) > 0 AS trained FROM unify.train();
CREATE TEMP TABLE streamed_version AS SELECT max(version) AS version FROM unify.model;
CREATE TEMP TABLE trained AS
SELECT h.model AS held, s.model AS streamed, h.report AS held_report, s.report AS streamed_report
FROM unify.model h, unify.model s
WHERE h.version = (SELECT version FROM held_version) AND s.version = (SELECT version FROM streamed_version);
SELECT held_report -> 'streamed' AS held_streamed, streamed_report -> 'streamed' AS streamed_streamed,
       (held_report ->> 'candidate_pairs')::bigint > 1000 AS many_candidates,
       held_report -> 'candidate_pairs' = streamed_report -> 'candidate_pairs' AS same_candidates,
       streamed_report -> 'em_sample_pairs' = streamed_report -> 'candidate_pairs' AS complete_em_sample,
       held_report -> 'u_sample_pairs' = streamed_report -> 'u_sample_pairs' AS same_u_sample,
       held_report -> 'blocking' = streamed_report -> 'blocking' AS same_blocking_figures,
       held_report -> 'records' = streamed_report -> 'records' AS same_records
FROM trained;
-- m and u of every level, and the measured figures.
SELECT count(*) > 20 AS many_levels,
       count(*) FILTER (WHERE abs((hl ->> 'm')::float8 - (sl ->> 'm')::float8)
                              > 1e-9 * greatest((hl ->> 'm')::float8, (sl ->> 'm')::float8)
                           OR abs((hl ->> 'u')::float8 - (sl ->> 'u')::float8)
                              > 1e-9 * greatest((hl ->> 'u')::float8, (sl ->> 'u')::float8)
                           OR hl ->> 'name' IS DISTINCT FROM sl ->> 'name') AS levels_differing
FROM trained,
     jsonb_array_elements(held -> 'comparisons') WITH ORDINALITY hc (c, i)
     JOIN jsonb_array_elements(streamed -> 'comparisons') WITH ORDINALITY sc (c, i) USING (i),
     jsonb_array_elements(hc.c -> 'levels') WITH ORDINALITY hl0 (hl, j)
     JOIN jsonb_array_elements(sc.c -> 'levels') WITH ORDINALITY sl0 (sl, j) USING (j);
SELECT abs((held ->> f)::float8 - (streamed ->> f)::float8) <= 1e-9 * abs((held ->> f)::float8) AS same,
       f AS figure
FROM trained, unnest('{prior,household_share,namesake_share,similar_name_share}'::text[]) f
UNION ALL
SELECT abs((held_report ->> f)::float8 - (streamed_report ->> f)::float8) <= 1e-9 * abs((held_report ->> f)::float8), f
FROM trained, unnest('{expected_matches}'::text[]) f
ORDER BY figure;
SELECT held - '{comparisons,prior,household_share,namesake_share,similar_name_share}'::text[]
       = streamed - '{comparisons,prior,household_share,namesake_share,similar_name_share}'::text[] AS rest_of_model_same
FROM trained;
SELECT count(*) > 100 AS many_names,
       count(*) FILTER (WHERE s.frequency IS DISTINCT FROM h.frequency) AS frequencies_differing
FROM (SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = (SELECT version FROM held_version)) h
FULL JOIN (SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = (SELECT version FROM streamed_version)) s
     USING (field, value);
-- The streamed training leaves unify.block_keys and unify.matching_state to score_pairs, and no temp tables.
SELECT (SELECT count(*) FROM (SELECT * FROM keys_before EXCEPT SELECT key_hash, record_id FROM unify.block_keys) x)
     + (SELECT count(*) FROM (SELECT key_hash, record_id FROM unify.block_keys EXCEPT SELECT * FROM keys_before) x) AS keys_changed,
       (SELECT row(s.*)::text FROM state_before s) = (SELECT row(m.blocking_rules, m.keys_built_at)::text FROM unify.matching_state m) AS state_unchanged;
SELECT count(*) AS temp_tables_left FROM pg_class WHERE relname LIKE 'unify_train%' AND relpersistence = 't';
-- Within 4MB the records are not held at once but their blocking keys are (the households, name
-- counts and exact values from the same one pass, the candidates counted before the sampled ones
-- are compared): the same model, report and frequencies as with the keys in temp tables, to the
-- last bit.
SELECT unify.set_model((SELECT model FROM start_model)) > 0 AS start_model_set;
SET LOCAL customer_unify.batch_memory = '4MB';
SELECT count(*) > 0 AS trained FROM unify.train();
SELECT s.model = k.model AS same_model, s.report - 'seconds' = k.report - 'seconds' AS same_report,
       k.report -> 'streamed' AS keys_held_streamed,
       (SELECT count(*) FROM (SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = s.version
                              EXCEPT SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = k.version) x)
     + (SELECT count(*) FROM (SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = k.version
                              EXCEPT SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = s.version) x)
       AS frequencies_differing
FROM unify.model s, unify.model k
WHERE s.version = (SELECT version FROM streamed_version) AND k.version = (SELECT max(version) FROM unify.model);
SELECT count(*) AS temp_tables_left FROM pg_class WHERE relname LIKE 'unify_train%' AND relpersistence = 't';
-- Within 4MB the records are also packed as they pass (the households' holders and the EM
-- sample's records unpacked from them); within 1700kB the keys still fit but the packed records
-- pass their quarter of the budget, and are read again by id: the same model either way.
SELECT unify.set_model((SELECT model FROM start_model)) > 0 AS start_model_set;
SET LOCAL customer_unify.batch_memory = '1700kB';
SELECT count(*) > 0 AS trained FROM unify.train();
SELECT s.model = k.model AS same_model, s.report - 'seconds' = k.report - 'seconds' AS same_report,
       (SELECT count(*) FROM (SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = s.version
                              EXCEPT SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = k.version) x)
     + (SELECT count(*) FROM (SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = k.version
                              EXCEPT SELECT field, value, frequency FROM unify.name_frequencies WHERE model_version = s.version) x)
       AS frequencies_differing
FROM unify.model s, unify.model k
WHERE s.version = (SELECT version FROM streamed_version) AND k.version = (SELECT max(version) FROM unify.model);
-- score_pairs after either model: the same matches.
RESET customer_unify.batch_memory;
SELECT stored_pairs > 1000 AS scored FROM unify.score_pairs();
SELECT (SELECT count(*) FROM (SELECT record_a, record_b, is_match FROM held_train_pairs EXCEPT SELECT record_a, record_b, is_match FROM unify.pairs) x) AS pairs_only_held,
       (SELECT count(*) FROM (SELECT record_a, record_b, is_match FROM unify.pairs EXCEPT SELECT record_a, record_b, is_match FROM held_train_pairs) x) AS pairs_only_streamed,
       (SELECT count(*) FILTER (WHERE is_match) FROM unify.pairs) > 500 AS many_matches,
       (SELECT max(abs(h.match_weight - p.match_weight)) < 1e-6 FROM held_train_pairs h JOIN unify.pairs p USING (record_a, record_b)) AS same_weights;
SET LOCAL customer_unify.batch_memory = '64kB';

-- Too many candidate pairs: the same error as with all records held.
SELECT unify.set_model(jsonb_set(unify.get_model(), '{max_candidate_pairs}', '100')) > 0 AS model_set;
SELECT * FROM unify.score_pairs();
SET LOCAL customer_unify.batch_memory = '4MB';
SELECT * FROM unify.score_pairs();
RESET customer_unify.batch_memory;
SELECT * FROM unify.score_pairs();
-- A budget below the minimum is refused.
SET customer_unify.batch_memory = '8kB';

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
