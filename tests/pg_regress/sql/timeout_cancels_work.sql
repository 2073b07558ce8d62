-- Issue 23: long Rust loops stop on a cancel. statement_timeout = 1s stops a BG/NBD fit over
-- 100,000 customer summaries (6.9 s uncancelled on two busy cores) and a training over 10M
-- random pairs (9.6 s) within a second of the timeout, with SQLSTATE 57014 and nothing left
-- behind.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;

-- 100,000 distinct summaries (frequency, recency, age in weeks), one customer each, prepared
-- before the timeout is set (it counts from the start of each statement).
CREATE TEMP TABLE summaries AS
SELECT array_agg(f ORDER BY g) AS frequency, array_agg(CASE WHEN f = 0 THEN 0 ELSE age * ((g * 7919) % 1000) / 1000.0 END ORDER BY g) AS recency,
       array_agg(age ORDER BY g) AS age, array_agg(1.0::float8 ORDER BY g) AS weight
FROM (SELECT g, (g % 13)::float8 AS f, 5 + g / 1000.0::float8 AS age FROM generate_series(1, 100000) g) s;
SELECT cardinality(frequency) AS summaries FROM summaries;

CREATE TEMP TABLE outcome (work text, sqlstate text, stopped_within_a_second_of_the_timeout boolean);

SET LOCAL statement_timeout = '1s';
DO $$
DECLARE
    s record;
    state text;
BEGIN
    SELECT * INTO s FROM summaries;
    BEGIN
        PERFORM unify._fit_purchases('bgnbd', s.frequency, s.recency, s.age, s.weight);
        state := 'not cancelled';
    EXCEPTION WHEN query_canceled THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
    END;
    -- statement_timestamp() is when this statement, and so the timeout, started.
    INSERT INTO outcome VALUES ('_fit_purchases', state,
        clock_timestamp() - statement_timestamp() BETWEEN interval '1 s' AND interval '2 s');
END
$$;
SET LOCAL statement_timeout = 0;

-- A training whose random-pair sample alone (10M pairs on the backend's threads) takes
-- seconds, on records of its own.
CREATE TABLE cancel_people (nr int PRIMARY KEY, vorname text, nachname text, email text, plz text);
INSERT INTO cancel_people
SELECT g, (ARRAY['Anna', 'Hans', 'Eva', 'Paul', 'Lena', 'Jonas'])[1 + g % 6],
       (ARRAY['Müller', 'Schmidt', 'Weber', 'Wagner', 'Becker'])[1 + g % 5] || repeat('e', g % 40),
       'kunde' || g / 2 || '@example.de', lpad((10000 + g % 50)::text, 5, '0')
FROM generate_series(1, 5000) g;
SELECT unify.add_source('cancel_people', 'cancel_people', 'nr', '{"first_name": "vorname",
    "last_name": "nachname", "email": "email", "postcode": "plz"}', track_changes => false) > 0 AS registered;
SELECT source_rows FROM unify.sync('cancel_people');
SET LOCAL statement_timeout = '1s';
DO $$
DECLARE
    state text;
BEGIN
    BEGIN
        PERFORM count(*) FROM unify.train(10000000, 100);
        state := 'not cancelled';
    EXCEPTION WHEN query_canceled THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
    END;
    INSERT INTO outcome VALUES ('train', state,
        clock_timestamp() - statement_timestamp() BETWEEN interval '1 s' AND interval '2 s');
END
$$;
SELECT * FROM outcome ORDER BY work;
-- The cancelled training stored no model version.
SELECT count(*) AS models_of_these_records FROM unify.model WHERE report ->> 'records' = '5000';
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
