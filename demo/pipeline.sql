-- What customer_unify does so far, on the demo CRM (four source tables as a company has them):
-- clean, register and sync, capture changes, train the match model, score and explain pairs.
\pset footer off
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
RESET client_min_messages;

\echo
\echo '== The sources: four systems, four formats =='
SELECT 'shop_customers' AS source, count(*) AS rows FROM shop_customers
UNION ALL SELECT 'crm_contacts', count(*) FROM crm_contacts
UNION ALL SELECT 'pos_loyalty_members', count(*) FROM pos_loyalty_members
UNION ALL SELECT 'newsletter_signups', count(*) FROM newsletter_signups;

-- One normalized view over all sources, written with the cleaners.
CREATE TEMP VIEW contacts AS
SELECT 'shop' AS source, customer_id::text AS key, first_name, last_name, email, phone,
       street AS street_line, zip AS postcode, 'DE' AS country
FROM shop_customers
UNION ALL
SELECT 'crm', kontakt_nr, vorname, nachname, e_mail, coalesce(mobil, telefon),
       strasse || ' ' || hausnummer, plz, land
FROM crm_contacts
UNION ALL
SELECT 'pos', card_no::text, n.first_name, n.last_name, email, phone, NULL, postcode, 'DE'
FROM pos_loyalty_members, unify.split_full_name(full_name) AS n
UNION ALL
SELECT 'newsletter', signup_id::text, first_name, NULL, email, NULL, NULL, NULL, 'DE'
FROM newsletter_signups;

CREATE TEMP TABLE cleaned AS
SELECT source, key,
       first_name, last_name, email, phone, street_line,
       unify.normalize_name(first_name) AS first_norm,
       unify.normalize_name(last_name) AS last_norm,
       unify.cologne_phonetic(last_name) AS last_phonetic,
       unify.email_match_key(email) AS email_key,
       unify.normalize_phone(phone) AS phone_e164,
       unify.phone_kind(phone) AS phone_kind,
       unify.normalize_street(street_line) AS street_key,
       unify.normalize_postcode(postcode, country) AS postcode_norm
FROM contacts;

\echo
\echo '== Cleaners: raw values next to their normalized form =='
(SELECT source, phone AS raw, phone_e164 AS normalized, phone_kind AS note FROM cleaned WHERE phone IS NOT NULL ORDER BY key LIMIT 6)
UNION ALL
(SELECT source, email, email_key, NULL FROM cleaned WHERE email <> email_key ORDER BY key LIMIT 6)
UNION ALL
(SELECT source, street_line, street_key, NULL FROM cleaned WHERE street_line IS NOT NULL ORDER BY key LIMIT 6)
UNION ALL
(SELECT source, last_name, transliterate_name, 'Kölner Phonetik ' || last_phonetic
   FROM (SELECT *, unify.transliterate_de(last_norm) AS transliterate_name FROM cleaned) c
  WHERE last_name ~ '[äöüßÄÖÜ]|ue|oe|ae' ORDER BY key LIMIT 6);

\echo
\echo '== Distinct values before and after cleaning (fewer = spellings that now agree) =='
SELECT 'e-mail' AS field, count(DISTINCT email) AS raw_distinct, count(DISTINCT email_key) AS clean_distinct,
       count(*) FILTER (WHERE email IS NOT NULL AND email_key IS NULL) AS unparseable FROM cleaned
UNION ALL
SELECT 'phone', count(DISTINCT phone), count(DISTINCT phone_e164),
       count(*) FILTER (WHERE phone IS NOT NULL AND phone_e164 IS NULL) FROM cleaned
UNION ALL
SELECT 'last name', count(DISTINCT last_name), count(DISTINCT unify.transliterate_de(last_norm)),
       count(*) FILTER (WHERE last_name IS NOT NULL AND last_norm IS NULL) FROM cleaned
UNION ALL
SELECT 'street', count(DISTINCT street_line), count(DISTINCT street_key),
       count(*) FILTER (WHERE street_line IS NOT NULL AND street_key IS NULL) FROM cleaned;

\echo
\echo '== A first look at duplicates: records sharing a cleaned e-mail, checked against the truth table =='
\echo '   (shared e-mails also join family members: matching, next, must tell them apart)'
WITH groups AS (
    SELECT email_key, array_agg(source || ':' || key) AS records, count(*) AS n
    FROM cleaned WHERE email_key IS NOT NULL GROUP BY email_key HAVING count(*) > 1
), judged AS (
    SELECT g.email_key, g.n, count(DISTINCT t.person_id) AS true_persons
    FROM groups g CROSS JOIN LATERAL unnest(g.records) r
    JOIN truth t ON t.source || ':' || t.source_key = r
    GROUP BY g.email_key, g.n
)
SELECT count(*) AS groups_sharing_an_email_key,
       sum(n) AS records_in_them,
       count(*) FILTER (WHERE true_persons = 1) AS groups_of_one_true_person,
       count(*) FILTER (WHERE true_persons > 1) AS groups_mixing_persons
FROM judged;

\echo
\echo '== Similarity measures on German spelling variants =='
SELECT a, b, round(unify.jaro_winkler(a, b)::numeric, 3) AS jaro_winkler, unify.levenshtein(a, b) AS levenshtein,
       unify.damerau_levenshtein(a, b) AS damerau, unify.cologne_phonetic(a) = unify.cologne_phonetic(b) AS same_phonetic
FROM (VALUES ('Müller', 'Mueller'), ('Meier', 'Mayer'), ('Schmidt', 'Schmitt'), ('Jürgen', 'Juergen'), ('Weiß', 'Weiss')) v(a, b);

\echo
\echo '== Register the four tables in place (demo/sources.sql) and load them into unify.records =='
SET client_min_messages = warning;
\ir sources.sql
SELECT source_name, source_rows, inserted, updated, deleted FROM unify.sync();
RESET client_min_messages;
SELECT source, relation, source_rows_estimate, records, queue_depth, last_sync_rows, last_sync_seconds FROM unify.status ORDER BY source;

\echo
\echo '== One person as the four systems hold her, normalized (unify.records) =='
SELECT s.name AS source, r.source_key, r.first_name, r.last_name, r.email_key, coalesce(r.mobile, r.phone) AS phone,
       r.street, r.house_number, r.postcode, r.birth_date
FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE (s.name, r.source_key) IN (
    SELECT t.source, t.source_key FROM truth t
    WHERE t.person_id = (SELECT person_id FROM truth GROUP BY person_id ORDER BY count(DISTINCT source) DESC, count(*) DESC, person_id LIMIT 1))
ORDER BY s.priority, r.source_key;

\echo
\echo '== Change capture: a newsletter sign-up and a moved CRM contact arrive; the queue is applied =='
INSERT INTO newsletter_signups (signup_id, email, first_name, signed_up_at, double_opt_in)
VALUES (999999, 'Neue.Kundin@GoogleMail.com', 'Lena', now(), true);
UPDATE crm_contacts SET strasse = 'Neue Str.', hausnummer = '7 b', plz = '1067', ort = 'Dresden'
WHERE kontakt_nr = (SELECT min(kontakt_nr) FROM crm_contacts);
SELECT s.name AS source, q.source_key, q.op FROM unify.change_queue q JOIN unify.sources s USING (source_id) ORDER BY q.enqueued_at, s.name, q.source_key, q.op;
SELECT unify.process_queue() AS changes_applied;
SELECT s.name AS source, r.source_key, r.first_name, r.email, r.email_key, r.street, r.house_number, r.postcode
FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE (s.name = 'newsletter' AND r.source_key = '999999')
   OR (s.name = 'crm' AND r.source_key = (SELECT min(kontakt_nr) FROM crm_contacts));

\echo
\echo '== Matching: train the model without labels (one EM session per blocking rule), then score =='
SELECT session, pairs, iterations, converged FROM unify.train() ORDER BY session;
SELECT candidate_pairs, stored_pairs, matches, forced, seconds FROM unify.score_pairs();

\echo
\echo '== Pairwise quality against the generator truth (a match: p >= 0.9 and not held for review, or forced by a rule) =='
CREATE TEMP VIEW rec_person AS
SELECT r.record_id, t.person_id, t.household_id FROM unify.records r JOIN unify.sources s USING (source_id)
JOIN truth t ON t.source = s.name AND t.source_key = r.source_key;
WITH truth_pairs AS (
    SELECT a.record_id AS record_a, b.record_id AS record_b FROM rec_person a JOIN rec_person b
    ON a.person_id = b.person_id AND a.record_id < b.record_id),
c AS (SELECT count(*) FILTER (WHERE t.record_a IS NOT NULL AND p.record_a IS NOT NULL) AS tp,
             count(*) FILTER (WHERE t.record_a IS NULL) AS fp, count(*) FILTER (WHERE p.record_a IS NULL) AS fn
      FROM (SELECT record_a, record_b FROM unify.pairs WHERE is_match) p FULL JOIN truth_pairs t USING (record_a, record_b))
SELECT tp, fp, fn, round(tp::numeric / nullif(tp + fp, 0), 4) AS precision,
       round(tp::numeric / nullif(tp + fn, 0), 4) AS recall, round(2.0 * tp / nullif(2 * tp + fp + fn, 0), 4) AS f1 FROM c;

\echo
\echo '== Why: the explanation of the strongest pair across two sources (weights sum to the score) =='
SELECT term, level, value_a, value_b, round(weight::numeric, 2) AS weight, note
FROM (SELECT p.record_a, p.record_b FROM unify.pairs p JOIN unify.records a ON a.record_id = p.record_a
      JOIN unify.records b ON b.record_id = p.record_b
      WHERE a.source_id <> b.source_id AND p.is_match ORDER BY p.match_weight DESC, p.record_a LIMIT 1) top,
     LATERAL unify.explain_match(top.record_a, top.record_b);
\echo
\echo '== Two people of one household (same last name and home, different birth dates): kept apart, and why =='
SELECT term, level, value_a, value_b, round(weight::numeric, 2) AS weight, note
FROM (SELECT a.record_id AS record_a, b.record_id AS record_b
      FROM rec_person a JOIN rec_person b
        ON a.household_id = b.household_id AND a.person_id <> b.person_id AND a.record_id < b.record_id
      JOIN unify.records ra ON ra.record_id = a.record_id JOIN unify.records rb ON rb.record_id = b.record_id
      WHERE ra.street = rb.street AND ra.last_name = rb.last_name AND ra.birth_date <> rb.birth_date
      ORDER BY (ra.first_name = rb.first_name) DESC, a.record_id LIMIT 1) fam,
     LATERAL unify.explain_match(fam.record_a, fam.record_b);
\echo
\echo '== Match report: weight histogram and pairs per blocking rule =='
SELECT section, label, pairs, matches FROM unify.match_report ORDER BY section, bucket_start NULLS LAST, label;

\echo
\echo '== Persons: resolve the matched pairs into persons with stable ids, golden records and households =='
SELECT * FROM unify.resolve();
\echo 'resolving again changes nothing:'
SELECT persons, new_persons, merges, splits, golden_changed FROM unify.resolve();
\echo
\echo '== How well the persons fit the truth (record pairs inside one person) =='
WITH t AS (SELECT r.person_id AS predicted, p.person_id AS truth FROM unify.record_persons r JOIN rec_person p USING (record_id)),
c AS (SELECT (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM t GROUP BY predicted, truth) x) AS tp,
             (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM t GROUP BY predicted) x) AS predicted_pairs,
             (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM t GROUP BY truth) x) AS true_pairs)
SELECT tp, predicted_pairs, true_pairs, round(tp / nullif(predicted_pairs, 0), 4) AS precision,
       round(tp / nullif(true_pairs, 0), 4) AS recall, round(2 * tp / nullif(predicted_pairs + true_pairs, 0), 4) AS f1 FROM c;
\echo
\echo '== customer_360: the people held by the most sources =='
SELECT person_id, household_id, household_size, letter_salutation, first_name, last_name, email, city, birth_date,
       consent_email, record_count, sources
FROM unify.customer_360 ORDER BY record_count DESC, person_id LIMIT 8;
\echo
\echo '== One household: separate persons under one roof =='
SELECT p.person_id, p.first_name, p.last_name, p.birth_date, p.street, p.house_number, p.city, p.record_count
FROM unify.persons p
WHERE p.household_id = (SELECT household_id FROM unify.households WHERE persons BETWEEN 2 AND 4 ORDER BY persons DESC, household_id LIMIT 1)
ORDER BY p.person_id;
\echo
\echo '== Where a golden e-mail consent came from (the latest proven statement; an undated no restricts) =='
SELECT consent_email, consent_email_source, consent_email_at IS NOT NULL AS dated, count(*) AS persons
FROM unify.persons GROUP BY 1, 2, 3 ORDER BY 1 NULLS LAST, 2, 3;

\echo
\echo '== Segments: the orders with their line items registered in place (channel names the source), RFM per person =='
-- One row per line item; the lines of an order share its order_id and sum to its amount.
CREATE VIEW order_lines AS
SELECT o.order_id, o.channel, o.customer_ref, o.ordered_at, o.currency, o.status,
       i.line_no, i.sku, i.product_name, i.category, i.quantity, i.line_amount
FROM orders o JOIN order_items i USING (order_id);
SELECT unify.add_transactions('orders', 'order_lines', '{"source": "channel", "source_key": "customer_ref",
  "order_id": "order_id", "order_date": "ordered_at", "amount": "line_amount", "currency": "currency",
  "returned": "status IN (''returned'', ''cancelled'')", "product_id": "sku", "product_name": "product_name",
  "product_category": "category", "quantity": "quantity"}') AS transactions_id;
SELECT r ->> 'persons' AS persons_segmented, r ->> 'orders' AS orders, r ->> 'unmatched_orders' AS unmatched_orders,
       r ->> 'changes' AS segment_changes
FROM (SELECT unify.refresh_segments((SELECT max(ordered_at) FROM orders) + 1) AS r) x;
SELECT segment, persons, percent, avg_recency_days, avg_frequency, avg_monetary FROM unify.segment_summary ORDER BY persons DESC, segment;
\echo
\echo '== Predictions: BG/NBD or Pareto/NBD (the smaller holdout error, ranking checked), Gamma-Gamma and the return rate, fitted in the database (weeks), CLV over 12 months =='
CREATE TEMP TABLE demo_fit AS SELECT unify.fit_predictions((SELECT max(ordered_at) FROM orders) + 1) AS f;
SELECT f ->> 'model' AS model, f ->> 'published' AS published, f ->> 'status' AS status, f ->> 'customers' AS customers,
       f -> 'params' AS params, f -> 'spend_params' AS gamma_gamma, f -> 'return_params' AS returns_beta_binomial
FROM demo_fit;
\echo 'Holdout (calibration up to the split, predicted vs actual purchases after it) and the ranking check per model:'
SELECT m AS model, round((f #>> ARRAY['validation', m, 'error'])::numeric, 3) AS holdout_error,
       round((f #>> ARRAY['validation', m, 'predicted'])::numeric, 1) AS predicted, f #>> ARRAY['validation', m, 'actual'] AS actual,
       f #>> ARRAY['validation', m, 'all_data', 'alive_recent_frequent'] AS alive_recent_frequent,
       f #>> ARRAY['validation', m, 'all_data', 'alive_lapsed'] AS alive_lapsed,
       f #>> ARRAY['validation', m, 'all_data', 'ranking_ok'] AS ranking_ok
FROM demo_fit, unnest(ARRAY['bgnbd', 'pareto_nbd']) m;
SELECT s.segment, count(*) AS persons, round(avg(c.p_alive)::numeric, 2) AS mean_p_alive,
       round(avg(c.p_purchase)::numeric, 2) AS mean_p_purchase_90_days, round(avg(c.return_probability)::numeric, 3) AS mean_return_probability
FROM unify.segments s JOIN unify.customer_360 c USING (person_id) GROUP BY 1 ORDER BY mean_p_alive DESC, 1;
SELECT person_id, first_name, last_name, segment, orders_in_window, spend_in_window,
       round(p_alive::numeric, 2) AS p_alive, round(p_purchase::numeric, 2) AS p_purchase_90_days,
       round(expected_purchases::numeric, 2) AS purchases_next_year, round(return_probability::numeric, 3) AS return_probability,
       round(clv::numeric, 2) AS clv
FROM unify.customer_360 WHERE clv IS NOT NULL ORDER BY clv DESC, person_id LIMIT 8;
\echo
\echo '== Next best products: item-to-item co-purchase over unified persons, without what they own or what is no longer sold =='
SELECT r ->> 'line_items' AS line_items, r ->> 'persons' AS persons, r ->> 'products' AS products,
       r ->> 'neighbours' AS neighbour_pairs
FROM (SELECT unify.refresh_recommendations((SELECT max(ordered_at) FROM orders) + 1) AS r) x;
-- The shop stops selling the 12 kg dog food: never recommended again.
UPDATE unify.products SET for_sale = false WHERE product_id = 'HA-200';
CREATE TEMP TABLE demo_buyer AS
SELECT pp.person_id FROM unify.person_products pp JOIN unify.segments s USING (person_id)
WHERE s.segment = 'Champions' GROUP BY pp.person_id HAVING count(*) >= 4 ORDER BY pp.person_id LIMIT 1;
\echo '-- what one Champion bought, then the five products recommended next'
SELECT p.product_id, p.product_name, p.product_category, pp.orders
FROM unify.person_products pp JOIN unify.products p USING (product_id)
WHERE pp.person_id = (SELECT person_id FROM demo_buyer) ORDER BY p.product_category, p.product_id;
SELECT r.rank, r.product_id, r.product_name, r.product_category, round(r.score::numeric, 3) AS score, r.basis
FROM unify.recommendations((SELECT person_id FROM demo_buyer), 5) r ORDER BY r.rank;
\echo '-- the first recommendation across the segment "At Risk" (a win-back mailing)'
SELECT r.product_id, r.product_name, count(*) AS persons
FROM unify.segment_recommendations('At Risk', 1) r GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 5;
\echo
\echo '== Audiences: who of a segment may be reached per channel (consent by the latest proven statement) =='
SELECT c.channel, c.consent, (SELECT count(*) FROM unify.audience('At Risk', c.channel)) AS at_risk_reachable,
       (SELECT count(*) FROM unify.segments s WHERE s.segment = 'At Risk') AS at_risk_persons
FROM unify.audience_channels() c;
\echo '-- the export for Google Customer Match (hashed as Google requires; country and postcode in clear)'
SELECT left(hashed_email, 16) || '…' AS hashed_email, left(hashed_phone_number, 16) || '…' AS hashed_phone_number,
       left(hashed_first_name, 12) || '…' AS hashed_first_name, country_code, postal_code, consent_source
FROM unify.audience_google('At Risk') LIMIT 3;
\echo
\echo '== Identify at the till: the cashier types the e-mail in capitals and the name as spoken (read-only) =='
CREATE TEMP TABLE demo_guest AS
SELECT person_id, email, first_name, last_name FROM unify.customer_360
WHERE email IS NOT NULL AND record_count >= 2 ORDER BY record_count DESC, person_id LIMIT 1;
SELECT g.person_id AS wanted, i.person_id AS found, round(i.match_probability::numeric, 4) AS probability, i.is_match,
       (SELECT string_agg(t ->> 'term', ', ') FROM jsonb_array_elements(i.explanation) t WHERE (t ->> 'weight')::float8 > 0) AS evidence
FROM demo_guest g, LATERAL unify.identify(jsonb_build_object('email', upper(g.email), 'first_name', g.first_name,
                                                             'last_name', upper(g.last_name)), 3) i;
\echo
\echo '== Behaviour: web tracking registered in place; a cart filled after login and left is reported once, into the outbox =='
CREATE TABLE web_tracking (id bigint PRIMARY KEY, kind text, created timestamptz, sku text, price numeric,
                           session text, cookie text, login_email text);
INSERT INTO web_tracking
SELECT v.id, v.kind, now() - v.ago, v.sku, v.price, 's1', 'c-42', CASE WHEN v.kind = 'login' THEN g.email END
FROM demo_guest g, (VALUES (1, 'product_view', interval '3 hours', 'KF-110', NULL::numeric),
                           (2, 'login', interval '170 minutes', NULL, NULL),
                           (3, 'add_to_cart', interval '165 minutes', 'KF-110', 89.00),
                           (4, 'add_to_cart', interval '160 minutes', 'KF-200', 16.90)) v (id, kind, ago, sku, price);
SELECT unify.add_events('web', 'web_tracking', '{"event_id": "id", "event_type": "kind", "occurred_at": "created",
  "product_id": "sku", "value": "price", "session_id": "session", "anonymous_id": "cookie", "email": "login_email"}') AS event_source;
SELECT unify.detect_abandoned_carts() AS carts_abandoned, unify.detect_abandoned_carts() AS reported_again;
SELECT person_id, last_visit_at IS NOT NULL AS visited, visits_30d, last_product_viewed, cart_items, cart_value,
       cart_abandoned_at IS NOT NULL AS abandoned
FROM unify.customer_360 WHERE person_id = (SELECT person_id FROM demo_guest);
\echo
\echo '== Next best action: the action map (segment, predictions, open or abandoned cart) and nothing without consent for the channel =='
SELECT r.priority, r.action, r.channel, r.segments, r.cart FROM unify.action_rules r ORDER BY r.priority;
SELECT coalesce(a.action, '(no row)') AS action, a.channel, count(*) AS persons
FROM unify.persons p LEFT JOIN unify.person_actions a USING (person_id) GROUP BY 1, 2 ORDER BY 3 DESC, 1;
\echo '-- the guest whose web cart was abandoned:'
SELECT person_id, segment, consent_email, cart_abandoned_at IS NOT NULL AS cart_abandoned, next_action, next_action_channel
FROM unify.customer_360 WHERE person_id = (SELECT person_id FROM demo_guest);
\echo
\echo '== Outbox: a marketing tool reads with its own cursor and acknowledges (at least once, in order) =='
SELECT unify.create_outbox_consumer('demo_tool', from_start => true) AS cursor;
SELECT kind, count(*) AS events FROM unify.read_outbox('demo_tool', 100000) GROUP BY kind ORDER BY events DESC, kind;
SELECT event_id, kind, person_id, payload FROM unify.read_outbox('demo_tool', 100000) WHERE kind = 'cart_abandoned';
SELECT unify.ack_outbox('demo_tool', (SELECT max(event_id) FROM unify.read_outbox('demo_tool', 100000))) AS acknowledged_up_to;
SELECT count(*) AS left_to_read FROM unify.read_outbox('demo_tool', 100000);
