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

-- Too many candidate pairs: the same error as with all records held.
SELECT unify.set_model(jsonb_set(unify.get_model(), '{max_candidate_pairs}', '100')) > 0 AS model_set;
SELECT * FROM unify.score_pairs();
RESET customer_unify.batch_memory;
SELECT * FROM unify.score_pairs();
-- A budget below the minimum is refused.
SET customer_unify.batch_memory = '8kB';

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
