-- Next best product: line items in add_transactions, unify.refresh_recommendations (the
-- co-purchase model), unify.recommendations and unify.segment_recommendations: results worked
-- out by hand below, ties, discontinued products, a person with two records counted once, a
-- person who bought everything, a cold person (popularity), errors, and the roles.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back, sequences set back.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;

CREATE TABLE shop_customers (id int PRIMARY KEY, name text);
INSERT INTO shop_customers VALUES (1, 'Anna Schmidt'), (2, 'Ben Wagner'), (3, 'Cora Becker'), (4, 'Dan Vogel'),
                                  (5, 'A. Schmidt-Neu'), (6, 'Eva Krause');
SELECT unify.add_source('shop', 'shop_customers', 'id', '{"full_name": "name"}') AS source_id \gset
SELECT source_rows FROM unify.sync('shop');
SELECT persons FROM unify.resolve();
-- Anna has two records (1 and 5): one person, one customer.
SELECT unify.link((SELECT record_id FROM unify.records WHERE source_key = '1'), (SELECT record_id FROM unify.records WHERE source_key = '5'), 'same customer') IS NOT NULL AS linked;
CREATE TEMP VIEW who AS
SELECT c.name, rp.person_id FROM shop_customers c JOIN unify.records r ON r.source_id = :source_id AND r.source_key = c.id::text
LEFT JOIN unify.record_persons rp USING (record_id);

CREATE TABLE shop_lines (line_id int PRIMARY KEY, invoice text, customer_id int, day date, sku text, title text, dept text,
                         qty int, line_total numeric, status text);
INSERT INTO shop_lines VALUES
    (1, 'A1', 1, '2026-01-10', 'P1', 'Mug', 'kitchen', 1, 5.00, 'completed'),
    (2, 'A2', 5, '2026-03-10', 'P2', 'Plate', 'kitchen', 2, 8.00, 'completed'),   -- Anna's second record
    (3, 'B1', 2, '2026-02-01', 'P1', 'Mug', 'kitchen', 1, 5.00, 'completed'),
    (4, 'B1', 2, '2026-02-01', 'P3', 'Candle', 'home', 3, 9.00, 'completed'),
    (5, 'B1', 2, '2026-02-01', 'P6', 'Old lamp', 'home', 1, 20.00, 'completed'),
    (6, 'B2', 2, '2026-02-05', 'P4', 'Vase', 'home', 1, 12.00, 'returned'),       -- returned: not bought
    (7, 'C1', 3, '2026-02-01', 'P2', 'Plate', 'kitchen', 1, 4.00, 'completed'),
    (8, 'C1', 3, '2026-02-01', 'P3', 'Candle', 'home', 1, 3.00, 'completed'),
    (9, 'C1', 3, '2026-02-01', 'P4', 'Vase', 'home', 1, 12.00, 'completed'),
    (10, 'C1', 3, '2026-02-01', 'P5', 'Rug', 'home', 1, 30.00, 'completed'),
    (11, 'C2', 3, '2026-02-03', 'P5', 'Rug', 'home', -1, -30.00, 'completed'),    -- cancelled: nets to nothing
    (12, 'E1', 6, '2026-01-20', 'P1', 'Mug', 'kitchen', 1, 5.00, 'completed'),
    (13, 'E1', 6, '2026-01-20', 'P2', 'Plate', 'kitchen', 1, 4.00, 'completed'),
    (14, 'E1', 6, '2026-01-20', 'P3', 'Candle', 'home', 1, 3.00, 'completed'),
    (15, 'E1', 6, '2026-01-20', 'P4', 'Vase', 'home', 1, 12.00, 'completed'),
    (16, 'E1', 6, '2026-01-20', 'P5', 'Rug', 'home', 1, 30.00, 'completed'),
    (17, 'E1', 6, '2026-01-20', 'P6', 'Lamp', 'home', 1, 20.00, 'completed'),
    (18, 'X1', 99, '2026-01-20', 'P7', 'Unknown buyer''s', 'misc', 1, 1.00, 'completed');  -- nobody we know

-- Nothing registered with products yet.
SELECT unify.refresh_recommendations('2026-06-01');
\echo :LAST_ERROR_SQLSTATE

-- Registration: the line-item fields are optional; their details need product_id.
SELECT unify.add_transactions('lines', 'shop_lines', '{"source": "shop", "source_key": "customer_id", "order_date": "day", "amount": "line_total", "product_name": "title"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_transactions('lines', 'shop_lines', '{"source": "shop", "source_key": "customer_id", "order_date": "day", "amount": "line_total", "product_id": "sku", "quantity": "qty * colour"}');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.add_transactions('lines', 'shop_lines', '{"source": "shop", "source_key": "customer_id", "order_date": "day", "amount": "line_total", "product": "sku"}');
\echo :LAST_ERROR_SQLSTATE
-- Without line items (as before) orders work, and refresh_recommendations has nothing to read.
SELECT unify.add_transactions('orders', 'shop_lines', '{"source": "shop", "source_key": "customer_id", "order_date": "day", "amount": "line_total", "order_id": "invoice", "returned": "status = ''returned''"}') > 0 AS registered;
SELECT unify.refresh_recommendations('2026-06-01');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.remove_transactions('orders');
SELECT unify.add_transactions('lines', 'shop_lines',
       '{"source": "shop", "source_key": "customer_id", "order_date": "day", "amount": "line_total", "order_id": "invoice",
         "returned": "status = ''returned''", "product_id": "sku", "product_name": "title", "product_category": "dept", "quantity": "qty"}') > 0 AS registered;
-- Orders and segments read the same table as before: one purchase per invoice.
SELECT r ->> 'persons' AS persons, r ->> 'orders' AS orders FROM (SELECT unify.refresh_segments('2026-06-01') AS r) x;

-- Bad parameters.
SELECT unify.refresh_recommendations('2026-06-01', neighbours => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT unify.refresh_recommendations('2026-06-01', half_life => interval '-1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.refresh_recommendations('2026-06-01', trending => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT unify.refresh_recommendations('2026-06-01', alpha => 1.5);
\echo :LAST_ERROR_SQLSTATE

-- Cosine without recency weighting, damping or trending, so the scores can be checked by hand.
SELECT r ->> 'line_items' AS line_items, r ->> 'persons' AS persons, r ->> 'products' AS products, r ->> 'purchases' AS purchases
FROM (SELECT unify.refresh_recommendations('2026-06-01', half_life => NULL, model_half_life => NULL, trending_weight => 0, damping => 0) AS r) x;
SELECT as_of, params ->> 'trending_weight' AS trending_weight, persons, neighbours FROM unify.recommendation_runs;
-- What each person bought: Anna once over both records; Ben's returned vase and Cora's
-- cancelled rug do not count; the unknown buyer's P7 is a product with no buyer.
SELECT (SELECT string_agg(w.name, ' + ' ORDER BY w.name) FROM who w WHERE w.person_id = pp.person_id) AS person,
       string_agg(pp.product_id, ' ' ORDER BY pp.product_id) AS bought, min(pp.weight) AS min_weight
FROM unify.person_products pp GROUP BY pp.person_id ORDER BY 1;
SELECT product_id, product_name, product_category, for_sale, buyers FROM unify.products ORDER BY product_id;

-- Anna bought P1 and P2 (buyers 3 and 3). By hand (cosine, C / sqrt(B(i) B(j))):
--   P3: 2/3 + 2/3 = 1.3333   P4: 1/sqrt(6) + 2/sqrt(6) = 1.2247   P6: 2/sqrt(6) + 1/sqrt(6) = 1.2247
--   P5: 1/sqrt(3) + 1/sqrt(3) = 1.1547
-- scaled by the best (1.3333): 1, 0.9186, 0.9186, 0.8660. P4 and P6 tie in score and buyers
-- (2 each): the smaller product id first.
SELECT rank, product_id, product_name, product_category, round(score::numeric, 4) AS score, basis
FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Anna Schmidt'));
SELECT rank, product_id FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Anna Schmidt'), 2);
-- Cora's cancelled rug may be recommended to her again; what she bought may not. By hand
-- (she bought P2, P3, P4): P5 1/sqrt(3) + 1/sqrt(3) + 1/sqrt(2) = 0.5774 + 0.5774 + 0.7071 = 1.8618,
-- P1 2/3 + 2/3 + 1/sqrt(6) = 1.7416, P6 1/sqrt(6) + 2/sqrt(6) + 1/2 = 1.7247; scaled by 1.8618.
SELECT rank, product_id, round(score::numeric, 4) AS score, basis FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Cora Becker'));
-- Dan bought nothing: the most buyers first (no trending weight: score 0), ties by product id.
SELECT rank, product_id, score, basis FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Dan Vogel'));
-- Eva bought everything.
SELECT count(*) AS for_eva FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Eva Krause'));

-- P6 is discontinued: never recommended any more, and a refresh keeps the flag.
UPDATE unify.products SET for_sale = false WHERE product_id = 'P6';
SELECT rank, product_id, round(score::numeric, 4) AS score FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Anna Schmidt'));
SELECT r ->> 'persons' AS persons FROM (SELECT unify.refresh_recommendations('2026-06-01') AS r) x;
SELECT product_id, for_sale FROM unify.products WHERE NOT for_sale;
SELECT string_agg(product_id, ' ' ORDER BY rank) AS for_dan FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Dan Vogel'));
-- With the default half-life of 30 days: Anna's mug (59 days before her plate) weighs 0.5^(59/30) = 0.2558.
SELECT pp.product_id, round(pp.weight::numeric, 4) AS weight FROM unify.person_products pp JOIN who w USING (person_id)
WHERE w.name = 'Anna Schmidt' ORDER BY pp.product_id;

-- What sells now: as of 2026-02-15 the trending window (30 days) holds Eva's (01-20), Ben's and
-- Cora's (02-01) purchases, not Anna's mug (01-10). Recent buyers: P3 3; P1, P2, P4, P6 2; P5 1.
-- Dan (cold) gets trending_weight 0.5 × recent / 3: P3 0.5, then P1 (3 buyers in all), P2 and
-- P4 (2; P6 is not for sale) at 0.3333, P5 0.1667; all-time popularity alone would put P1 first.
SELECT r ->> 'persons' AS persons FROM (SELECT unify.refresh_recommendations('2026-02-15') AS r) x;
SELECT product_id, buyers, recent_buyers FROM unify.products ORDER BY product_id;
SELECT rank, product_id, round(score::numeric, 4) AS score, basis FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Dan Vogel'));

-- Errors.
SELECT * FROM unify.recommendations(-1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.recommendations((SELECT person_id FROM who WHERE name = 'Anna Schmidt'), 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.segment_recommendations('No Such Segment');
\echo :LAST_ERROR_SQLSTATE
-- A segment of the map in effect with no one in it: no rows, no error.
SELECT count(*) AS cant_lose_them FROM unify.segment_recommendations('Can''t Lose Them');
SELECT count(*) AS null_person FROM unify.recommendations(NULL);

-- A whole segment: the same as each of its persons' recommendations.
SELECT count(DISTINCT s.segment) > 0 AS has_segments FROM unify.segments s;
SELECT bool_and(x.same) AS segment_form_matches, count(*) > 0 AS checked
FROM (SELECT s.segment, s.person_id,
             (SELECT array_agg(r.product_id ORDER BY r.rank) FROM unify.segment_recommendations(s.segment, 3) r WHERE r.person_id = s.person_id)
             IS NOT DISTINCT FROM
             (SELECT array_agg(r.product_id ORDER BY r.rank) FROM unify.recommendations(s.person_id, 3) r) AS same
      FROM unify.segments s) x;

-- Roles: the analyst (the lowest) asks for recommendations and reads the product model, not
-- what each person bought; cannot refresh or mark products. PUBLIC asks for nothing.
CREATE ROLE regress_reco_analyst IN ROLE unify_analyst;
CREATE ROLE regress_reco_nobody;
GRANT USAGE ON SCHEMA unify TO regress_reco_nobody;
SELECT (SELECT person_id FROM who WHERE name = 'Anna Schmidt') AS anna \gset
SET ROLE regress_reco_analyst;
SELECT string_agg(product_id, ' ' ORDER BY rank) AS analyst_sees FROM unify.recommendations(:anna);
SELECT count(*) > 0 AS reads_model FROM unify.product_neighbours;
SELECT count(*) FROM unify.person_products;
\echo :LAST_ERROR_SQLSTATE
SELECT unify.refresh_recommendations();
\echo :LAST_ERROR_SQLSTATE
UPDATE unify.products SET for_sale = true;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_reco_nobody;
SELECT * FROM unify.recommendations(:anna);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.segment_recommendations('Champions');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
