-- unify.score_pairs writes unify.block_keys straight through the table's multi-insert (COPY's
-- path) only while the table is plain: no index left, trigger, rule, row security or check.
-- Otherwise it inserts through SQL, so whatever a DBA hangs on the table (here an audit trigger
-- with a transition table) still sees every row. Both paths must give the same keys, pairs and
-- figures, with all records held (the default budget) and streamed (64kB). On the sample German
-- CRM (crmgen --rows 2000 --seed 7, schema crm, loaded by scripts/test.sh).
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
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT bool_and(converged) AS converged FROM unify.train();

-- Without a trigger: the plain table.
CREATE TEMP TABLE plain_figures AS SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
CREATE TEMP TABLE plain_keys AS SELECT key_hash, record_id FROM unify.block_keys;
CREATE TEMP TABLE plain_pairs AS SELECT record_a, record_b, match_weight, is_match, blocking_rules FROM unify.pairs;
SELECT count(*) > 10000 AS many_keys FROM plain_keys;

-- An audit trigger on unify.block_keys counts the rows of every insert.
CREATE TABLE public.key_audit (rows_seen bigint NOT NULL);
CREATE FUNCTION public.count_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.key_audit SELECT count(*) FROM new_rows;
    RETURN NULL;
END $$;
CREATE TRIGGER key_audit AFTER INSERT ON unify.block_keys REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION public.count_keys();

-- Held and streamed, the trigger sees every key written, and the results equal the plain table's.
CREATE TEMP TABLE figures (LIKE plain_figures);
CREATE TEMP VIEW compared AS
SELECT (SELECT sum(rows_seen) FROM public.key_audit) = (SELECT count(*) FROM unify.block_keys) AS trigger_saw_every_key,
       (SELECT row(p.*)::text FROM plain_figures p) = (SELECT row(f.*)::text FROM figures f) AS same_figures,
       (SELECT count(*) FROM (SELECT * FROM plain_keys EXCEPT SELECT key_hash, record_id FROM unify.block_keys) x)
     + (SELECT count(*) FROM (SELECT key_hash, record_id FROM unify.block_keys EXCEPT SELECT * FROM plain_keys) x) AS keys_differing,
       (SELECT count(*) FROM (SELECT * FROM plain_pairs EXCEPT
                              SELECT record_a, record_b, match_weight, is_match, blocking_rules FROM unify.pairs) x)
     + (SELECT count(*) FROM (SELECT record_a, record_b, match_weight, is_match, blocking_rules FROM unify.pairs
                              EXCEPT SELECT * FROM plain_pairs) x) AS pairs_differing;
INSERT INTO figures SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
SELECT * FROM compared;

SET LOCAL customer_unify.batch_memory = '64kB';
TRUNCATE public.key_audit;
TRUNCATE figures;
INSERT INTO figures SELECT candidate_pairs, stored_pairs, matches, forced FROM unify.score_pairs();
SELECT * FROM compared;
-- The trigger is still there (the indexes dropped for the load came back, nothing else went).
SELECT count(*) AS block_keys_triggers FROM pg_trigger WHERE tgrelid = 'unify.block_keys'::regclass AND NOT tgisinternal;
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
