-- One round of benches/sources.sh --repeat: a first load into a fresh extension and the baseline
-- copy, in the order :first (sync or baseline), each timed on the server. Prints one line:
-- "round <sync ms> <baseline ms> <sync CPU ms> <baseline CPU ms>". The CPU times are the backend's
-- own (user + system, /proc/self/stat), which the machine's other load moves much less than the
-- wall times; index builds run in the backend alone here (no parallel workers) so that they count.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS customer_unify CASCADE;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
DROP TABLE IF EXISTS baseline_copy;
CREATE TABLE baseline_copy (source text, source_key text, first_name text, last_name text, email text,
    phone text, street text, postcode text, city text, birth_date text);
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
    -- The same statement as benches/sources.sql's baseline.
    INSERT INTO baseline_copy
    SELECT 'shop', customer_id::text, lower(trim(first_name)), lower(trim(last_name)), lower(trim(email)), lower(trim(phone)),
           lower(trim(street)), lower(trim(zip)), lower(trim(city)), birthday::text FROM shop_customers
    UNION ALL
    SELECT 'crm', kontakt_nr, lower(trim(vorname)), lower(trim(nachname)), lower(trim(e_mail)), lower(trim(coalesce(mobil, telefon))),
           lower(trim(strasse || ' ' || hausnummer)), lower(trim(plz)), lower(trim(ort)), geburtsdatum FROM crm_contacts
    UNION ALL
    SELECT 'pos', card_no::text, lower(trim(full_name)), NULL, lower(trim(email)), lower(trim(phone)), NULL, lower(trim(postcode)),
           lower(trim(city)), birth_date::text FROM pos_loyalty_members
    UNION ALL
    SELECT 'newsletter', signup_id::text, lower(trim(first_name)), NULL, lower(trim(email)), NULL, NULL, NULL, NULL, NULL
    FROM newsletter_signups;
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
