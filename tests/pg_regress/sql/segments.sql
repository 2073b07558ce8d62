-- Segments and predictions: transactions registered in place, RFM with ties, the segment map,
-- segment changes, BG/NBD / Pareto/NBD / Gamma-Gamma on the CDNOW sample against the published
-- estimates (Fader, Hardie & Lee 2005), and the handling of returns, refunds and currencies.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;

-- Nothing registered yet.
SELECT unify.refresh_segments('1998-07-01');
\echo :LAST_ERROR_SQLSTATE

CREATE SCHEMA cdnow;
CREATE TABLE cdnow.purchases (purchase_id serial PRIMARY KEY, customer_id int NOT NULL, order_date date NOT NULL,
                              cds int NOT NULL, amount numeric(10,2) NOT NULL);
\copy cdnow.purchases (customer_id, order_date, cds, amount) FROM 'tests/data/cdnow_sample.csv' WITH (FORMAT csv, HEADER true)
CREATE TABLE cdnow.customers AS SELECT DISTINCT customer_id FROM cdnow.purchases;
ALTER TABLE cdnow.customers ADD PRIMARY KEY (customer_id);
SELECT unify.add_source('cdnow', 'cdnow.customers', 'customer_id', '{"customer_number": "customer_id"}') AS source_id;
SELECT source_rows FROM unify.sync('cdnow');
SELECT persons FROM unify.resolve();

-- Registration errors.
SELECT unify.add_transactions('Bad Name', 'cdnow.purchases', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_transactions('p', 'cdnow.purchases', '{"order_date": "order_date", "amount": "amount", "colour": "x"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_transactions('p', 'cdnow.purchases', '{"source": "cdnow", "source_key": "customer_id", "order_date": "order_date"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_transactions('p', 'cdnow.purchases', '{"order_date": "order_date", "amount": "amount"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_transactions('p', 'cdnow.purchases', '{"source": "cdnow", "source_key": "customer_id", "order_date": "order_date", "amount": "price * cds"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_transactions('p', 'cdnow.purchases', '{"source": "nosuchsource", "source_key": "customer_id", "order_date": "order_date", "amount": "amount"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.remove_transactions('p');
\echo :LAST_ERROR_SQLSTATE

SELECT unify.add_transactions('cdnow_purchases', 'cdnow.purchases',
       '{"source": "cdnow", "source_key": "customer_id", "order_date": "order_date", "amount": "amount"}') AS id;
SELECT unify.add_transactions('cdnow_purchases', 'cdnow.purchases', '{"customer_number": "customer_id", "order_date": "order_date", "amount": "amount"}');
\echo :LAST_ERROR_SQLSTATE

-- BG/NBD on the calibration period (39 weeks to 1997-09-30): the published estimates
-- r 0.243, alpha 4.414, a 0.793, b 2.426, LL -9582.4; Gamma-Gamma p 6.25, q 3.74, gamma 15.44,
-- LL -4055.9 on the 946 repeat buyers. Each within 0.5%, the log-likelihoods within 0.1.
-- (Published without the holdout and ranking checks, which predictions.sql tests.)
CREATE TEMP TABLE fit AS SELECT unify.fit_predictions('1997-09-30', 'bgnbd', holdout_days => 0, check_ranking => false) AS f;
SELECT f ->> 'model' AS model, split_part(f ->> 'status', ' (', 1) AS status, f ->> 'customers' AS customers, f ->> 'spend_customers' AS repeat_buyers,
       round((f #>> '{params,r}')::numeric, 3) AS r, round((f #>> '{params,alpha}')::numeric, 3) AS alpha,
       round((f #>> '{params,a}')::numeric, 3) AS a, round((f #>> '{params,b}')::numeric, 3) AS b,
       abs((f #>> '{params,r}')::float8 / 0.243 - 1) < 0.005 AND abs((f #>> '{params,alpha}')::float8 / 4.414 - 1) < 0.005
       AND abs((f #>> '{params,a}')::float8 / 0.793 - 1) < 0.005 AND abs((f #>> '{params,b}')::float8 / 2.426 - 1) < 0.005 AS params_ok,
       abs((f ->> 'log_likelihood')::float8 - -9582.4) < 0.1 AS ll_ok
FROM fit;
SELECT f ->> 'spend_status' AS spend_status,
       round((f #>> '{spend_params,p}')::numeric, 2) AS p, round((f #>> '{spend_params,q}')::numeric, 2) AS q,
       round((f #>> '{spend_params,gamma}')::numeric, 2) AS gamma,
       abs((f #>> '{spend_params,p}')::float8 / 6.25 - 1) < 0.005 AND abs((f #>> '{spend_params,q}')::float8 / 3.74 - 1) < 0.005
       AND abs((f #>> '{spend_params,gamma}')::float8 / 15.44 - 1) < 0.005 AS params_ok,
       abs((f ->> 'spend_log_likelihood')::float8 - -4055.9) < 0.1 AS ll_ok
FROM fit;

-- Predictions for every customer; BG/NBD has one-time buyers alive by construction.
SELECT count(*) AS predictions, count(*) FILTER (WHERE p_alive BETWEEN 0 AND 1) AS p_alive_in_range,
       count(*) FILTER (WHERE expected_purchases >= 0 AND expected_spend > 0 AND clv >= 0) AS complete,
       count(*) FILTER (WHERE frequency = 0 AND p_alive = 1) AS one_time_alive,
       round(sum(expected_purchases)::numeric) AS purchases_next_year
FROM unify.predictions;
-- The heaviest buyer: finite numbers, most likely alive.
SELECT frequency, round(p_alive::numeric, 3) AS p_alive, round(expected_purchases::numeric, 2) AS expected_purchases,
       round(expected_spend::numeric, 2) AS expected_spend, round(clv::numeric, 2) AS clv
FROM unify.predictions ORDER BY frequency DESC, person_id LIMIT 1;

-- Pareto/NBD: r 0.553, alpha 10.578, s 0.606, beta 11.669, LL -9595.0.
SELECT f ->> 'status' AS status,
       round((f #>> '{params,r}')::numeric, 3) AS r, round((f #>> '{params,alpha}')::numeric, 3) AS alpha,
       round((f #>> '{params,s}')::numeric, 3) AS s, round((f #>> '{params,beta}')::numeric, 3) AS beta,
       abs((f #>> '{params,r}')::float8 / 0.553 - 1) < 0.005 AND abs((f #>> '{params,alpha}')::float8 / 10.578 - 1) < 0.005
       AND abs((f #>> '{params,s}')::float8 / 0.606 - 1) < 0.005 AND abs((f #>> '{params,beta}')::float8 / 11.669 - 1) < 0.005 AS params_ok,
       abs((f ->> 'log_likelihood')::float8 - -9595.0) < 0.1 AS ll_ok
FROM (SELECT unify.fit_predictions('1997-09-30', 'pareto_nbd', holdout_days => 0) AS f) x;
-- Under Pareto/NBD a one-time buyer can be gone.
SELECT count(*) FILTER (WHERE frequency = 0 AND p_alive < 1) = count(*) FILTER (WHERE frequency = 0) AS one_time_buyers_can_churn
FROM unify.predictions;

-- A fit that cannot work is reported, not raised, and the last predictions stay.
SELECT f ->> 'converged' AS converged, f ->> 'status' AS status, f ->> 'predictions' AS written
FROM (SELECT unify.fit_predictions('1997-01-01', 'bgnbd') AS f) x;
SELECT count(*) AS predictions_kept, count(DISTINCT fit_id) AS from_fits FROM unify.predictions;
SELECT unify.fit_predictions('1997-09-30', 'BG/NBD');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.fit_predictions('1997-09-30', horizon_months => 0);
\echo :LAST_ERROR_SQLSTATE

-- RFM as of the end of the data.
SELECT r ->> 'persons' AS persons, r ->> 'orders' AS orders, r ->> 'unmatched_orders' AS unmatched, r ->> 'changes' AS changes
FROM (SELECT unify.refresh_segments('1998-07-01') AS r) x;
-- Ties share a score: no value of recency, frequency or monetary is split over two scores.
SELECT (SELECT count(*) FROM (SELECT last_purchase FROM unify.segments GROUP BY 1 HAVING count(DISTINCT r_score) > 1) t) AS split_recency,
       (SELECT count(*) FROM (SELECT frequency FROM unify.segments GROUP BY 1 HAVING count(DISTINCT f_score) > 1) t) AS split_frequency,
       (SELECT count(*) FROM (SELECT monetary FROM unify.segments GROUP BY 1 HAVING count(DISTINCT m_score) > 1) t) AS split_monetary;
-- The scores are 1 + floor(5 · (rank - 1) / n) over the n segmented persons, recency ranked by
-- the last purchase date (refresh_segments finds them from fifth-boundaries, not window sorts).
SELECT count(*) AS persons, count(*) FILTER (WHERE (r_score, f_score, m_score) <> (r_rank, f_rank, m_rank)) AS off_rank
FROM (SELECT r_score, f_score, m_score,
             1 + 5 * (rank() OVER (ORDER BY last_purchase) - 1) / count(*) OVER () AS r_rank,
             1 + 5 * (rank() OVER (ORDER BY frequency) - 1) / count(*) OVER () AS f_rank,
             1 + 5 * (rank() OVER (ORDER BY monetary) - 1) / count(*) OVER () AS m_rank
      FROM unify.segments) t;
-- Scores never go down as the value gets better (recency: a later last purchase is better).
SELECT count(*) AS out_of_order FROM (
    SELECT f_score < lag(f_score) OVER (ORDER BY frequency, f_score) AS f_bad,
           m_score < lag(m_score) OVER (ORDER BY monetary, m_score) AS m_bad,
           r_score < lag(r_score) OVER (ORDER BY last_purchase, r_score) AS r_bad
    FROM unify.segments) t WHERE f_bad OR m_bad OR r_bad;
-- Half of CDNOW bought once: all of them share the lowest frequency score.
SELECT frequency = 1 AS bought_once, min(f_score), max(f_score), count(*) FROM unify.segments GROUP BY 1 ORDER BY 1;
SELECT f_score, count(*) FROM unify.segments GROUP BY 1 ORDER BY 1;
SELECT segment, persons, percent FROM unify.segment_summary ORDER BY persons DESC, segment;

-- A notification limit that is no whole number is refused before any work.
SET customer_unify.segment_notify_limit = 'many';
SELECT unify.refresh_segments('1998-07-01');
\echo :LAST_ERROR_SQLSTATE
RESET customer_unify.segment_notify_limit;
-- The default map covers every one of the 125 cells exactly once.
SELECT count(*) AS cells, count(*) FILTER (WHERE rules = 1) AS covered_once FROM unify.segment_map_cells;
SELECT count(DISTINCT segment) AS segments, bool_and(is_default) AS is_default FROM unify.segment_rules;
-- An edited map with a gap or an overlap is refused, and nothing changes.
INSERT INTO unify.segment_map (segment, r_min, r_max, f_min, f_max, m_min, m_max, description)
SELECT segment, r_min, r_max, f_min, f_max, m_min, m_max, description FROM unify.default_segment_map();
DELETE FROM unify.segment_map WHERE segment = 'Need Attention';
SELECT unify.refresh_segments('1998-07-01');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO unify.segment_map (segment, r_min, r_max, f_min, f_max) VALUES ('Need Attention', 3, 3, 3, 4);
SELECT unify.refresh_segments('1998-07-01');
\echo :LAST_ERROR_SQLSTATE
-- A valid edit: Need Attention split by spend.
UPDATE unify.segment_map SET f_max = 3, m_max = 3 WHERE segment = 'Need Attention';
INSERT INTO unify.segment_map (segment, r_min, r_max, f_min, f_max, m_min, m_max) VALUES ('Big Spenders Slipping', 3, 3, 3, 3, 4, 5);
SELECT count(*) FILTER (WHERE rules = 1) AS covered_once FROM unify.segment_map_cells;
SELECT max(change_id) AS history_mark FROM unify.segment_history \gset
SELECT r ->> 'changes' AS changes FROM (SELECT unify.refresh_segments('1998-07-01') AS r) x;
SELECT from_segment, to_segment, count(*) FROM unify.segment_history WHERE change_id > :history_mark GROUP BY 1, 2 ORDER BY 1, 2;
DELETE FROM unify.segment_map;

-- A person's segment change: one history row. A Lost customer buys again.
CREATE TEMP TABLE lost AS
SELECT s.person_id, r.source_key::int AS customer_id FROM unify.segments s JOIN unify.record_persons USING (person_id) JOIN unify.records r USING (record_id)
WHERE s.segment = 'Lost' ORDER BY s.person_id LIMIT 1;
SELECT count(*) AS history_before FROM unify.segment_history h JOIN lost USING (person_id);
INSERT INTO cdnow.purchases (customer_id, order_date, cds, amount) SELECT customer_id, '1998-06-30', 3, 45.00 FROM lost;
SELECT max(change_id) AS history_mark FROM unify.segment_history \gset
-- Her rank moves and so may a few neighbours' scores: every change is one history row.
SELECT (unify.refresh_segments('1998-07-01') ->> 'changes')::int AS changes \gset
SELECT :changes AS changes,
       :changes = (SELECT count(*) FROM unify.segment_history WHERE change_id > :history_mark) AS all_recorded,
       (SELECT count(*) FROM unify.segment_history h JOIN lost USING (person_id) WHERE change_id > :history_mark) AS hers;
SELECT h.from_segment, h.to_segment, s.segment_since FROM unify.segment_history h JOIN lost USING (person_id)
JOIN unify.segments s USING (person_id) ORDER BY h.change_id;
-- Unchanged data: no changes and nothing written; the next day only what moved is written.
SELECT r ->> 'changes' AS changes, r ->> 'rows_written' AS rows_written FROM (SELECT unify.refresh_segments('1998-07-01') AS r) x;
SELECT (r ->> 'rows_written')::int < (r ->> 'persons')::int / 10 AS next_day_writes_little FROM (SELECT unify.refresh_segments('1998-07-02') AS r) x;
SELECT as_of, persons, orders, changes FROM unify.segment_runs ORDER BY run_id DESC LIMIT 2;
SELECT recency_days FROM unify.customer_360 WHERE person_id = (SELECT person_id FROM lost);

-- customer_360 carries the segment and the predictions.
SELECT segment IS NOT NULL AS has_segment, p_alive IS NOT NULL AS has_p_alive, clv IS NOT NULL AS has_clv
FROM unify.customer_360 WHERE person_id = (SELECT person_id FROM lost);

-- Returns, refunds, free orders and currencies, on a small shop.
CREATE TABLE shop_customers (id int PRIMARY KEY, name text);
INSERT INTO shop_customers VALUES (1, 'Anna Schmidt'), (2, 'Ben Wagner');
CREATE TABLE shop_order_lines (line_id int PRIMARY KEY, order_no text, customer_id int, day date, amount numeric, currency text, status text);
INSERT INTO shop_order_lines VALUES
    (1, 'A1', 1, '2026-01-10', 100.00, 'EUR', 'completed'),
    (2, 'A2', 1, '2026-02-10', 60.00, 'eur', 'completed'),
    (3, 'A2', 1, '2026-02-12', -60.00, 'EUR', 'completed'),   -- refunded in full: a purchase worth 0
    (4, 'A3', 1, '2026-03-10', 300.00, 'EUR', 'returned'),    -- returned: not counted at all
    (5, 'A4', 1, '2026-04-10', 50.00, 'USD', 'completed'),    -- converted at 0.9
    (6, 'A5', 1, '2026-05-10', 80.00, 'CHF', 'completed'),    -- no rate: left out, counted
    (7, 'A6', 1, '2026-06-10', -20.00, 'EUR', 'completed'),   -- a refund on its own: lowers spend
    (8, 'B1', 2, '2026-06-01', 0.00, 'EUR', 'completed'),     -- a free order: a purchase
    (9, 'B2', 3, '2026-06-01', 10.00, 'EUR', 'completed');    -- nobody we know
SELECT unify.add_source('shop', 'shop_customers', 'id', '{"full_name": "name"}') AS source_id;
SELECT source_rows FROM unify.sync('shop');
SELECT persons FROM unify.resolve();
INSERT INTO unify.exchange_rates (currency, rate) VALUES ('USD', 0.9);
SELECT unify.add_transactions('shop_orders', 'shop_order_lines',
       '{"source": "shop", "source_key": "customer_id", "order_date": "day", "amount": "amount", "currency": "currency",
         "order_id": "order_no", "returned": "status IN (''returned'', ''cancelled'')"}') AS id;
SELECT r ->> 'unmatched_orders' AS unmatched, r ->> 'skipped_no_rate' AS skipped_no_rate
FROM (SELECT unify.refresh_segments('2026-07-01') AS r) x;
SELECT c.name, s.frequency, s.monetary, s.last_purchase FROM unify.segments s
JOIN unify.record_persons USING (person_id) JOIN unify.records r USING (record_id) JOIN shop_customers c ON c.id::text = r.source_key AND r.source_id = (SELECT source_id FROM unify.sources WHERE name = 'shop') ORDER BY c.id;

-- The same lines without order_id: every line is an order of its own (the refund line of A2 is
-- a refund, no purchase), summed per customer before the person is looked up.
SELECT unify.remove_transactions('shop_orders');
SELECT unify.add_transactions('shop_lines', 'shop_order_lines',
       '{"source": "shop", "source_key": "customer_id", "order_date": "day", "amount": "amount", "currency": "currency",
         "returned": "status IN (''returned'', ''cancelled'')"}') AS id;
SELECT r ->> 'orders' AS orders, r ->> 'unmatched_orders' AS unmatched, r ->> 'skipped_no_rate' AS skipped_no_rate
FROM (SELECT unify.refresh_segments('2026-07-01') AS r) x;
SELECT c.name, s.frequency, s.monetary, s.last_purchase FROM unify.segments s
JOIN unify.record_persons USING (person_id) JOIN unify.records r USING (record_id) JOIN shop_customers c ON c.id::text = r.source_key AND r.source_id = (SELECT source_id FROM unify.sources WHERE name = 'shop') ORDER BY c.id;
-- Two years later both have left the window: their rows go, one history row each (to NULL).
SELECT max(change_id) AS history_mark FROM unify.segment_history \gset
SELECT r ->> 'persons' AS persons, r ->> 'changes' AS changes, r ->> 'rows_written' AS rows_written
FROM (SELECT unify.refresh_segments('2028-07-01') AS r) x;
SELECT c.name, h.from_segment IS NOT NULL AS had_segment, h.to_segment FROM unify.segment_history h
JOIN unify.record_persons USING (person_id) JOIN unify.records r USING (record_id) JOIN shop_customers c ON c.id::text = r.source_key AND r.source_id = (SELECT source_id FROM unify.sources WHERE name = 'shop')
WHERE h.change_id > :history_mark ORDER BY c.id;
SELECT count(*) AS segments_left FROM unify.segments;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
