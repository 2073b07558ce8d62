-- One round of benches/sources.sh --repeat: a first load into a fresh extension and the baseline
-- copy, the first load first when :sync_first, each timed on the server. Prints one line:
-- "round <sync ms> <baseline ms> <sync CPU ms> <baseline CPU ms>". The CPU times are the backend's
-- own (user + system, /proc/self/stat), which the machine's other load moves much less than the
-- wall times; index builds run in the backend alone here (no parallel workers) so that they count.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS customer_unify CASCADE;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
\i benches/sources_baseline.sql
CHECKPOINT;
SET max_parallel_maintenance_workers = 0;
CREATE TEMP TABLE round_timings (what text, ms float8, cpu_ms float8);
-- The backend's CPU time so far, in ms (fields 14 and 15 of /proc/self/stat, in clock ticks of 10 ms).
CREATE FUNCTION pg_temp.cpu_ms() RETURNS float8 LANGUAGE sql AS $$
    SELECT (f[12]::float8 + f[13]::float8) * 10
    FROM (SELECT string_to_array(split_part(pg_read_file('/proc/self/stat'), ') ', 2), ' ') AS f) s
$$;
CREATE FUNCTION pg_temp.time_sync() RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp(); c0 float8 := pg_temp.cpu_ms();
BEGIN
    PERFORM sum(inserted) FROM unify.sync();
    INSERT INTO round_timings VALUES ('sync', extract(epoch FROM clock_timestamp() - t0) * 1000, pg_temp.cpu_ms() - c0);
END $$;
CREATE FUNCTION pg_temp.time_baseline() RETURNS void LANGUAGE plpgsql AS $$
DECLARE t0 timestamptz := clock_timestamp(); c0 float8 := pg_temp.cpu_ms();
BEGIN
    PERFORM pg_temp.copy_baseline();
    INSERT INTO round_timings VALUES ('baseline', extract(epoch FROM clock_timestamp() - t0) * 1000, pg_temp.cpu_ms() - c0);
END $$;
\if :sync_first
SELECT pg_temp.time_sync();
SELECT pg_temp.time_baseline();
\else
SELECT pg_temp.time_baseline();
SELECT pg_temp.time_sync();
\endif
\pset tuples_only on
\pset format unaligned
\pset fieldsep ' '
SELECT 'round', round((SELECT ms FROM round_timings WHERE what = 'sync')::numeric),
       round((SELECT ms FROM round_timings WHERE what = 'baseline')::numeric),
       round((SELECT cpu_ms FROM round_timings WHERE what = 'sync')::numeric),
       round((SELECT cpu_ms FROM round_timings WHERE what = 'baseline')::numeric);
