-- Timed by benches/sources.sh.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\timing off
CREATE TEMP TABLE timings (what text, ms numeric, rows bigint);

-- Baseline: the same columns of all four sources copied with lower(trim()), one INSERT ... SELECT.
\i benches/sources_baseline.sql
DO $$
DECLARE t0 timestamptz := clock_timestamp(); n bigint;
BEGIN
    n := pg_temp.copy_baseline();
    INSERT INTO timings VALUES ('baseline INSERT ... SELECT lower(trim()) of all sources', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
END $$;

\i demo/sources.sql
DO $$
DECLARE t0 timestamptz := clock_timestamp(); n bigint;
BEGIN
    SELECT sum(inserted) INTO n FROM unify.sync();
    INSERT INTO timings VALUES ('unify.sync() first load, four sources', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
    t0 := clock_timestamp();
    SELECT sum(source_rows) INTO n FROM unify.sync();
    INSERT INTO timings VALUES ('unify.sync() again, nothing changed', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
END $$;
UPDATE shop_customers SET email = upper(email) WHERE customer_id % 100 = 0;
DO $$
DECLARE t0 timestamptz := clock_timestamp(); n bigint;
BEGIN
    DELETE FROM unify.change_queue;  -- measure sync, not the queue
    SELECT sum(updated) INTO n FROM unify.sync('shop');
    INSERT INTO timings VALUES ('unify.sync(''shop'') after 1% of rows changed', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
END $$;

SELECT what, round(ms) AS ms, rows, round(rows / (ms / 1000)) AS rows_per_s,
       round(ms / (SELECT ms FROM timings WHERE what LIKE 'baseline%'), 2) AS x_baseline
FROM timings ORDER BY ms DESC;

-- Where a first load's time goes, for the shop source: its mapping staged as the registering
-- role into the session's temporary table (unify._run_as), then the cleaners over the staged
-- rows (what the upsert runs; here only counted).
CREATE TEMP TABLE stages (what text, ms float8, rows bigint);
DO $$
DECLARE
    src unify.sources;
    t0 timestamptz;
    n bigint;
BEGIN
    SELECT * INTO src FROM unify.sources WHERE name = 'shop';
    PERFORM unify._prepare_stage(true);
    t0 := clock_timestamp();
    n := unify._run_as(src.run_as, unify._stage_statement(src, ''), NULL);
    INSERT INTO stages VALUES ('stage the mapping (as the registering role)', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
    t0 := clock_timestamp();
    EXECUTE format('SELECT count(*) FROM (%s) x', replace(unify._normalized_query(0, unify._raw_query(src.fields)), '$1', '0')) INTO n;
    INSERT INTO stages VALUES ('cleaners over the staged rows', extract(epoch FROM clock_timestamp() - t0) * 1000, n);
END $$;
SELECT what, round(ms) AS ms, rows, round(rows / (ms / 1000)) AS rows_per_s FROM stages;

-- Tables for the trigger benchmark: identical copies of the newsletter table, one tracked.
CREATE SEQUENCE bench_ids START 10000000;
CREATE TABLE bench_tracked (LIKE newsletter_signups INCLUDING ALL);
CREATE TABLE bench_untracked (LIKE newsletter_signups INCLUDING ALL);
SELECT unify.add_source('bench_tracked', 'bench_tracked', 'signup_id', '{"email": "email", "first_name": "first_name"}') \g /dev/null
