-- The segment steps within a bounded memory (issue 27): the summaries a purchase fit reads
-- (unify._fit_summaries: identical ones once, weighted; rounded to a grid of 7, 14, … days where
-- whole days leave more than max_summaries), and outbox events emitted in chunks
-- (unify._outbox_emit_rows).
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back, and the sequences
-- it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
-- The CDNOW sample's 2,357 customers on their daily dates, summarised as fit_predictions does
-- (one purchase a day; weeks = days / 7) up to 1997-09-30, the papers' calibration end.
CREATE TEMP TABLE purchases (customer_id int, order_date date, cds int, amount numeric);
\copy purchases FROM 'tests/data/cdnow_sample.csv' WITH (FORMAT csv, HEADER true)
CREATE TEMP TABLE daily AS
SELECT customer_id AS person_id, (count(DISTINCT order_date) - 1)::float8 AS frequency,
       (max(order_date) - min(order_date)) / 7.0::float8 AS recency, ('1997-09-30'::date - min(order_date)) / 7.0::float8 AS age
FROM purchases WHERE order_date <= '1997-09-30' GROUP BY customer_id;
-- The same customers with both times rounded to whole weeks by hand (ties to even, as round does).
CREATE TEMP TABLE weekly AS
SELECT person_id, frequency, round(round(recency * 7) / 7) * 7 / 7.0::float8 AS recency,
       round(round(age * 7) / 7) * 7 / 7.0::float8 AS age
FROM daily;
SELECT count(*) AS customers, count(DISTINCT (frequency, recency, age)) AS distinct_daily,
       (SELECT count(DISTINCT (frequency, recency, age)) FROM weekly) AS distinct_weekly
FROM daily;

-- Enough room: whole days, one element per distinct summary, weights summing to the customers.
SELECT grid_days, cardinality(frequency) AS summaries, (SELECT sum(w) FROM unnest(weight) w) AS customers
FROM unify._fit_summaries('pg_temp.daily');
-- At most 700: whole weeks (the first grid leaving at most 700), the same arrays as the
-- hand-rounded customers on whole days (compared as sets: the order is the aggregate's).
SELECT grid_days, cardinality(frequency) AS summaries FROM unify._fit_summaries('pg_temp.daily', 700);
SELECT (SELECT array_agg(s ORDER BY s) FROM unify._fit_summaries('pg_temp.daily', 700) a,
               unnest(a.frequency, a.recency, a.age, a.weight) s)
     = (SELECT array_agg(s ORDER BY s) FROM unify._fit_summaries('pg_temp.weekly') a,
               unnest(a.frequency, a.recency, a.age, a.weight) s) AS binned_equals_the_weekly_customers;
SELECT grid_days FROM unify._fit_summaries('pg_temp.weekly');
-- So the fit on the binned summaries is the fit on customers that lie on the grid, to the last
-- bit, for both models; its parameters differ from the fit on whole days by the largest relative
-- change shown (2,357 customers over 39 weeks: a week is a coarse grid here).
SELECT m, b.param_values = w.param_values AND b.log_likelihood = w.log_likelihood AS binned_fit_equals_on_grid_fit,
       b.converged, round((SELECT max(abs(bv / dv - 1)) FROM unnest(b.param_values, d.param_values) p (bv, dv))::numeric, 2)
                    AS largest_parameter_change_from_days
FROM unnest(ARRAY['bgnbd', 'pareto_nbd']) m,
     LATERAL (SELECT f.* FROM unify._fit_summaries('pg_temp.daily', 700) a,
                     unify._fit_purchases(m, a.frequency, a.recency, a.age, a.weight) f) b,
     LATERAL (SELECT f.* FROM unify._fit_summaries('pg_temp.weekly') a,
                     unify._fit_purchases(m, a.frequency, a.recency, a.age, a.weight) f) w,
     LATERAL (SELECT f.* FROM unify._fit_summaries('pg_temp.daily') a,
                     unify._fit_purchases(m, a.frequency, a.recency, a.age, a.weight) f) d
ORDER BY m;
-- Never fewer than the frequencies: the grid stops at 364 days.
SELECT grid_days, cardinality(frequency) AS summaries FROM unify._fit_summaries('pg_temp.daily', 1);
-- No customers: NULL arrays (the strict fit then returns no row).
CREATE TEMP TABLE nobody AS SELECT * FROM daily WHERE false;
SELECT grid_days, frequency IS NULL AS no_summaries FROM unify._fit_summaries('pg_temp.nobody');

-- Outbox events in chunks of 10,000: 10,001 events, in the query's order, one chunk beyond the first.
SELECT coalesce(max(event_id), 0) AS before FROM unify.outbox \gset
SELECT unify._outbox_emit_rows('segment_entered',
    $q$SELECT i::bigint AS person_id, jsonb_build_object('segment', 'Champions', 'n', i) AS payload
       FROM generate_series(10001, 1, -1) i$q$) AS emitted;
SELECT count(*) AS events, count(DISTINCT person_id) AS persons,
       bool_and(o.person_id = (o.payload ->> 'n')::bigint) AS payload_with_its_person,
       (array_agg(o.person_id ORDER BY o.event_id))[1:2] AS first_two,
       (array_agg(o.person_id ORDER BY o.event_id DESC))[1] AS last
FROM unify.outbox o WHERE o.event_id > :before;
SELECT unify._outbox_emit_rows('segment_entered', 'SELECT 1::bigint AS person_id, NULL::jsonb AS payload WHERE false') AS none;
-- An unknown kind fails as _outbox_emit does.
SELECT unify._outbox_emit_rows('no_such_kind', 'SELECT 1::bigint AS person_id, ''{}''::jsonb AS payload');

-- PostgreSQL's sorts and hashes in the SQL steps within the batch budget: work_mem an eighth of
-- customer_unify.batch_memory where that is smaller (at least 64kB), else left alone.
SET LOCAL work_mem = '64MB';
SET LOCAL customer_unify.batch_memory = '64MB';
SELECT unify._batch_work_mem() AS eighth_of_64MB;
SET LOCAL customer_unify.batch_memory = '256kB';
SELECT unify._batch_work_mem() AS at_least_64kB;
SET LOCAL customer_unify.batch_memory = '1GB';
SELECT unify._batch_work_mem() AS budget_larger;
-- refresh_segments runs with it (on the CDNOW purchases), and the caller has its own work_mem
-- back afterwards.
CREATE TABLE public.budget_customers (customer_id int PRIMARY KEY);
INSERT INTO public.budget_customers SELECT DISTINCT customer_id FROM purchases;
CREATE TABLE public.budget_purchases AS SELECT * FROM purchases;
-- The amounts pass through a function that notes the work_mem the step runs its query with.
CREATE TABLE public.work_mem_seen (setting text);
CREATE FUNCTION public.amount_noting_work_mem(amount numeric) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.work_mem_seen VALUES (current_setting('work_mem'));
    RETURN amount;
END $$;
SELECT unify.add_source('budget', 'public.budget_customers', 'customer_id', '{"customer_number": "customer_id"}',
                        track_changes => false) > 0 AS source_added;
SELECT unify.add_transactions('budget_orders', 'public.budget_purchases',
    '{"source": "''budget''", "source_key": "customer_id", "order_date": "order_date", "amount": "public.amount_noting_work_mem(amount)"}') > 0 AS transactions_added;
SELECT source_rows FROM unify.sync('budget');
SET LOCAL customer_unify.batch_memory = '64MB';
SELECT (unify.refresh_segments('1997-09-30')) ? 'persons' AS refreshed;
SELECT DISTINCT setting AS work_mem_in_the_step FROM public.work_mem_seen;
SHOW work_mem;
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
