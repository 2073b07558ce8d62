-- Next best action (issue 26): the default action map's action for persons in different
-- situations (segment, predictions, an abandoned cart, consent per channel), nothing without
-- consent and the action after a later documented opt-in, the map's validation, an
-- action_changed outbox event only on a change, the churn_risk_crossed events up and down with
-- customer_unify.churn_risk_threshold, erasure, and the roles. On the CDNOW sample, with
-- contact data and consent made up per customer number.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
SET TIME ZONE 'UTC';
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;

CREATE SCHEMA nba;
CREATE TABLE nba.purchases (purchase_id serial PRIMARY KEY, customer_id int NOT NULL, order_date date NOT NULL,
                            cds int NOT NULL, amount numeric(10,2) NOT NULL);
\copy nba.purchases (customer_id, order_date, cds, amount) FROM 'tests/data/cdnow_sample.csv' WITH (FORMAT csv, HEADER true)
-- Every customer has an e-mail address, a phone and an address; consent differs: e-mail for
-- even customer numbers, calls for multiples of 3, letters for multiples of 5.
CREATE TABLE nba.customers AS
SELECT DISTINCT customer_id, 'c' || customer_id || '@example.org' AS email, '030 ' || (1000000 + customer_id) AS phone,
       'Hauptstraße ' || customer_id AS street, '10115' AS zip,
       customer_id % 2 = 0 AS newsletter, customer_id % 3 = 0 AS calls, customer_id % 5 = 0 AS letters,
       timestamptz '1998-01-01 10:00+00' AS consent_at
FROM nba.purchases;
ALTER TABLE nba.customers ADD PRIMARY KEY (customer_id);
SELECT unify.add_source('nba', 'nba.customers', 'customer_id', '{"customer_number": "customer_id", "email": "email",
    "phone": "phone", "street_line": "street", "postcode": "zip",
    "consent_email": "newsletter", "consent_email_at": "consent_at", "consent_phone": "calls", "consent_phone_at": "consent_at",
    "consent_post": "letters", "consent_post_at": "consent_at"}', track_changes => false) IS NOT NULL AS source_added;
SELECT source_rows FROM unify.sync('nba');
SELECT persons FROM unify.resolve();
SELECT unify.add_transactions('nba_purchases', 'nba.purchases',
       '{"source": "nba", "source_key": "customer_id", "order_date": "order_date", "amount": "amount"}') IS NOT NULL AS registered;
CREATE TEMP VIEW who AS SELECT p.person_id, p.customer_number::int AS customer FROM unify.persons p;
CREATE TEMP TABLE outbox_mark AS SELECT coalesce(max(event_id), 0) AS mark FROM unify.outbox;

-- ---- The map in effect: the default while unify.action_map is empty ------------------------
SELECT priority, action, channel, segments, churn_at_least, cart, is_default FROM unify.action_rules ORDER BY priority;
-- The event kinds.
SELECT kind, emitted_by FROM unify.outbox_kinds() WHERE kind IN ('action_changed', 'churn_risk_crossed') ORDER BY 1;

-- No segment, no prediction, no cart yet: nobody has an action.
SELECT r ->> 'persons' AS persons, r ->> 'changes' AS changes FROM (SELECT unify.refresh_actions() AS r) x;
SELECT count(*) AS actions FROM unify.person_actions;

-- ---- Segments: refresh_segments computes the actions of the persons whose segment changed ----
SELECT r ->> 'changes' AS segment_changes FROM (SELECT unify.refresh_segments('1998-06-30') AS r) x;
-- Per segment and consent (e-mail, phone, post): the actions given. At Risk: a win-back e-mail
-- with e-mail consent, nothing without; Can't Lose Them: a call with phone consent, else the
-- e-mail; Champions: a letter with post consent; New and Promising: the second-purchase e-mail.
SELECT s.segment, p.consent_email AS email, p.consent_phone AS phone, p.consent_post AS post,
       count(*) AS persons, array_agg(DISTINCT coalesce(a.action, '-')) AS actions
FROM unify.persons p JOIN unify.segments s USING (person_id) LEFT JOIN unify.person_actions a USING (person_id)
WHERE s.segment IN ('At Risk', 'Can''t Lose Them', 'Champions', 'Lost')
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4;
SELECT s.segment, p.consent_email AS email, array_agg(DISTINCT coalesce(a.action, '-')) AS actions
FROM unify.persons p JOIN unify.segments s USING (person_id) LEFT JOIN unify.person_actions a USING (person_id)
WHERE s.segment IN ('New', 'Promising', 'Loyal', 'Hibernating')
GROUP BY 1, 2 ORDER BY 1, 2;
-- Nothing without consent: no action needs a channel the person has not consented to.
SELECT count(*) AS without_consent
FROM unify.person_actions a JOIN unify.persons p USING (person_id)
WHERE (a.channel = 'email' AND p.consent_email IS NOT TRUE) OR (a.channel = 'phone' AND p.consent_phone IS NOT TRUE)
   OR (a.channel = 'post' AND p.consent_post IS NOT TRUE);
-- The row says why: the rule's priority and description.
SELECT action, channel, rule_priority, reason, count(*) FROM unify.person_actions GROUP BY 1, 2, 3, 4 ORDER BY 3;
-- One action_changed event per person with an action: previous none (NULL), new action.
SELECT count(*) AS events, count(DISTINCT e.person_id) AS persons,
       bool_and(e.payload ->> 'previous' IS NULL AND e.payload ->> 'action' = a.action AND e.payload ->> 'channel' = a.channel
                AND e.payload ->> 'cause' = 'refresh_segments') AS payloads_match
FROM unify.outbox e JOIN unify.person_actions a USING (person_id)
WHERE e.event_id > (SELECT mark FROM outbox_mark) AND e.kind = 'action_changed';
-- Run again: nothing changed, no second event.
SELECT r ->> 'changes' AS changes, r ->> 'rows_written' AS rows_written FROM (SELECT unify.refresh_actions() AS r) x;
SELECT unify.refresh_segments('1998-06-30') ->> 'changes' AS segment_changes;
SELECT count(*) AS action_events FROM unify.outbox e
WHERE e.event_id > (SELECT mark FROM outbox_mark) AND e.kind = 'action_changed';
-- customer_360 shows the action (its last columns).
SELECT a.action = c.next_action AND a.channel = c.next_action_channel AND a.since = c.next_action_since AS in_customer_360,
       count(*)
FROM unify.person_actions a JOIN unify.customer_360 c USING (person_id) GROUP BY 1;
SELECT attname FROM pg_attribute WHERE attrelid = 'unify.customer_360'::regclass AND attnum > 0 ORDER BY attnum DESC LIMIT 3;

-- ---- A later documented opt-in: the action appears ----------------------------------------
-- An At Risk customer without e-mail consent has no action and opts in to e-mails (a later
-- proof); a Can't Lose Them customer without any consent opts in to calls.
CREATE TEMP TABLE opt_in AS
SELECT w.customer, p.person_id FROM unify.segments s JOIN unify.persons p USING (person_id) JOIN who w USING (person_id)
WHERE s.segment = 'At Risk' AND NOT p.consent_email AND NOT p.consent_phone ORDER BY w.customer LIMIT 1;
CREATE TEMP TABLE opt_in_calls AS
SELECT w.customer, p.person_id FROM unify.segments s JOIN unify.persons p USING (person_id) JOIN who w USING (person_id)
WHERE s.segment = 'Can''t Lose Them' AND NOT p.consent_email AND NOT p.consent_phone ORDER BY w.customer LIMIT 1;
SELECT count(*) AS opt_in_persons, count(a.person_id) AS with_action
FROM (TABLE opt_in UNION ALL TABLE opt_in_calls) o LEFT JOIN unify.person_actions a USING (person_id);
CREATE TEMP TABLE mark2 AS SELECT max(event_id) AS mark FROM unify.outbox;
UPDATE nba.customers c SET newsletter = true, consent_at = '1998-07-01 09:00+00' FROM opt_in o WHERE c.customer_id = o.customer;
UPDATE nba.customers c SET calls = true, consent_at = '1998-07-01 09:00+00' FROM opt_in_calls o WHERE c.customer_id = o.customer;
SELECT source_rows FROM unify.sync('nba');
SELECT persons > 0 AS resolved FROM unify.resolve();
-- Their consent changed and, with it, the action: a win-back e-mail, a retention call.
SELECT a.action, a.channel, a.reason FROM (TABLE opt_in UNION ALL TABLE opt_in_calls) o JOIN unify.person_actions a USING (person_id)
ORDER BY 1;
SELECT count(*) AS action_events FROM unify.outbox e WHERE e.event_id > (SELECT mark FROM mark2) AND e.kind = 'action_changed';
SELECT e.kind, e.person_id = o.person_id AS that_person, e.payload ->> 'action' AS action, e.payload ->> 'previous' AS previous,
       e.payload ->> 'cause' AS cause
FROM unify.outbox e, opt_in o WHERE e.event_id > (SELECT mark FROM mark2) AND e.kind IN ('action_changed', 'consent_changed')
ORDER BY e.event_id;
-- And the opt-out: the action goes again (previous win_back_email, action NULL).
UPDATE nba.customers c SET newsletter = false, consent_at = '1998-07-02 09:00+00' FROM opt_in o WHERE c.customer_id = o.customer;
SELECT source_rows FROM unify.sync('nba');
SELECT persons > 0 AS resolved FROM unify.resolve();
SELECT count(a.person_id) AS with_action FROM opt_in o LEFT JOIN unify.person_actions a USING (person_id);
SELECT e.payload ->> 'action' AS action, e.payload ->> 'previous' AS previous
FROM unify.outbox e, opt_in o WHERE e.event_id > (SELECT mark FROM mark2) AND e.kind = 'action_changed' AND e.person_id = o.person_id
ORDER BY e.event_id;

-- ---- Churn risk crossing the threshold: churn_risk_crossed from fit_predictions -------------
SELECT unify._churn_risk_threshold() AS default_threshold;
-- The first published fit is the baseline: no crossing events.
SELECT f ->> 'published' AS published FROM (SELECT unify.fit_predictions('1998-06-30', 'bgnbd', holdout_days => 0, check_ranking => false) AS f) x;
SELECT count(*) AS crossings FROM unify.outbox e WHERE e.event_id > (SELECT mark FROM outbox_mark) AND e.kind = 'churn_risk_crossed';
SELECT count(*) FILTER (WHERE churn_probability >= 0.5) AS at_risk, count(*) AS predicted FROM unify.predictions;
-- Predictions reach the actions: good customers the model sees churning get the retention e-mail.
SELECT a.action, s.segment, pr.churn_probability >= 0.5 AS churn_risk, p.consent_email AS email, count(*)
FROM unify.person_actions a JOIN unify.segments s USING (person_id) JOIN unify.predictions pr USING (person_id)
JOIN unify.persons p USING (person_id)
WHERE a.action = 'retention_email' GROUP BY 1, 2, 3, 4 ORDER BY 2;
SELECT count(*) AS retention_candidates_without_it
FROM unify.segments s JOIN unify.predictions pr USING (person_id) JOIN unify.persons p USING (person_id)
LEFT JOIN unify.person_actions a USING (person_id)
WHERE s.segment IN ('Champions', 'Loyal', 'Potential Loyalist') AND pr.churn_probability >= 0.5 AND p.consent_email
  AND a.action IS DISTINCT FROM 'retention_email';
CREATE TEMP TABLE churn_before AS SELECT person_id, churn_probability FROM unify.predictions;
CREATE TEMP TABLE mark3 AS SELECT max(event_id) AS mark FROM unify.outbox;
-- Nine months later without purchases everyone is less alive: the crossings go up, with previous and
-- new probability; exactly the persons whose probability passed 0.5.
SELECT f ->> 'published' AS published FROM (SELECT unify.fit_predictions('1999-03-31', 'bgnbd', holdout_days => 0, check_ranking => false) AS f) x;
SELECT e.payload ->> 'direction' AS direction, count(*) AS events,
       bool_and((e.payload ->> 'previous')::float8 < 0.5 AND (e.payload ->> 'churn_probability')::float8 >= 0.5
                AND (e.payload ->> 'threshold')::float8 = 0.5
                AND (e.payload ->> 'previous')::float8 = b.churn_probability
                AND (e.payload ->> 'churn_probability')::float8 = pr.churn_probability) AS consistent
FROM unify.outbox e JOIN churn_before b USING (person_id) JOIN unify.predictions pr USING (person_id)
WHERE e.event_id > (SELECT mark FROM mark3) AND e.kind = 'churn_risk_crossed' GROUP BY 1;
SELECT count(*) AS expected_up FROM churn_before b JOIN unify.predictions pr USING (person_id)
WHERE b.churn_probability < 0.5 AND pr.churn_probability >= 0.5;
-- A wrong threshold fails before the work, with a hint.
SET customer_unify.churn_risk_threshold = 'high';
SELECT unify.fit_predictions('1998-06-30', 'bgnbd', holdout_days => 0, check_ranking => false);
\echo :LAST_ERROR_SQLSTATE
SET customer_unify.churn_risk_threshold = 0;
SELECT unify.fit_predictions('1998-06-30', 'bgnbd', holdout_days => 0, check_ranking => false);
\echo :LAST_ERROR_SQLSTATE
-- Back to the earlier calibration with the threshold at 0.8: those who were at or above 0.8 and
-- are below it now go down.
SET customer_unify.churn_risk_threshold = 0.8;
DELETE FROM churn_before;
INSERT INTO churn_before SELECT person_id, churn_probability FROM unify.predictions;
UPDATE mark3 SET mark = (SELECT max(event_id) FROM unify.outbox);
SELECT f ->> 'published' AS published FROM (SELECT unify.fit_predictions('1998-06-30', 'bgnbd', holdout_days => 0, check_ranking => false) AS f) x;
SELECT e.payload ->> 'direction' AS direction, count(*) AS events,
       bool_and((e.payload ->> 'previous')::float8 >= 0.8 AND (e.payload ->> 'churn_probability')::float8 < 0.8
                AND (e.payload ->> 'threshold')::float8 = 0.8) AS consistent
FROM unify.outbox e WHERE e.event_id > (SELECT mark FROM mark3) AND e.kind = 'churn_risk_crossed' GROUP BY 1;
SELECT count(*) AS expected_down FROM churn_before b JOIN unify.predictions pr USING (person_id)
WHERE b.churn_probability >= 0.8 AND pr.churn_probability < 0.8;
RESET customer_unify.churn_risk_threshold;

-- ---- Your own map and its validation -------------------------------------------------------
-- Each mistake names the rule and how to fix it (SQLSTATE 22023).
INSERT INTO unify.action_map (priority, action, channel, segments) VALUES (10, 'win_back_email', 'email', ARRAY['At risk']);
SELECT unify.refresh_actions();
\echo :LAST_ERROR_SQLSTATE
UPDATE unify.action_map SET segments = '{}';
SELECT unify.refresh_actions();
\echo :LAST_ERROR_SQLSTATE
UPDATE unify.action_map SET segments = ARRAY['At Risk'], action = 'none';
SELECT unify.refresh_actions();
\echo :LAST_ERROR_SQLSTATE
UPDATE unify.action_map SET action = 'win_back_email', churn_at_least = 0.7, churn_below = 0.4;
SELECT unify.refresh_actions();
\echo :LAST_ERROR_SQLSTATE
UPDATE unify.action_map SET churn_at_least = NULL, churn_below = NULL;
INSERT INTO unify.action_map (priority, action) VALUES (20, 'none'), (30, 'retention_call');
SELECT unify.refresh_actions();
\echo :LAST_ERROR_SQLSTATE
-- The table's own checks: a channel or cart state it does not know, a probability above 1.
INSERT INTO unify.action_map (priority, action, channel) VALUES (40, 'sms', 'sms');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO unify.action_map (priority, action, cart) VALUES (40, 'x', 'full');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO unify.action_map (priority, action, churn_at_least) VALUES (40, 'x', 1.5);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO unify.action_map (priority, action) VALUES (40, 'Win Back');
\echo :LAST_ERROR_SQLSTATE
-- An invalid map does not stop refresh_segments: a WARNING, the segments change, and the
-- actions stay as they were (until a run with a valid map).
CREATE TEMP TABLE actions_before AS SELECT * FROM unify.person_actions;
SELECT (unify.refresh_segments('1998-06-30', interval '6 months') ->> 'changes')::int > 0 AS segments_changed;
SELECT count(*) AS actions_changed FROM (TABLE unify.person_actions EXCEPT TABLE actions_before) x;
SELECT unify.refresh_segments('1998-06-30') ->> 'changes' > '0' AS segments_back;
-- A valid map of yours: the win-back by e-mail for At Risk above a churn of 0.5, else nothing.
DELETE FROM unify.action_map WHERE priority = 30;
UPDATE unify.action_map SET churn_at_least = 0.5 WHERE priority = 10;
SELECT priority, action, channel, segments, churn_at_least, is_default FROM unify.action_rules ORDER BY priority;
CREATE TEMP TABLE mark4 AS SELECT max(event_id) AS mark FROM unify.outbox;
DELETE FROM actions_before;
INSERT INTO actions_before SELECT * FROM unify.person_actions;
CREATE TEMP TABLE refreshed AS SELECT unify.refresh_actions() AS r;
SELECT a.action, count(*), bool_and(s.segment = 'At Risk' AND pr.churn_probability >= 0.5 AND p.consent_email) AS all_match
FROM unify.person_actions a JOIN unify.segments s USING (person_id) JOIN unify.predictions pr USING (person_id)
JOIN unify.persons p USING (person_id) GROUP BY 1;
SELECT count(*) AS missing FROM unify.segments s JOIN unify.predictions pr USING (person_id) JOIN unify.persons p USING (person_id)
WHERE s.segment = 'At Risk' AND pr.churn_probability >= 0.5 AND p.consent_email
  AND NOT EXISTS (SELECT 1 FROM unify.person_actions a WHERE a.person_id = p.person_id);
-- Every change went out, one event per person whose action (or its channel) changed; the
-- At Risk persons kept their win-back e-mail (by another rule now: no event).
SELECT (r ->> 'changes')::int AS changes,
       (SELECT count(*) FROM actions_before b FULL JOIN unify.person_actions a USING (person_id)
        WHERE (b.action, b.channel) IS DISTINCT FROM (a.action, a.channel)) AS persons_changed,
       (SELECT count(*) FROM unify.outbox WHERE event_id > (SELECT mark FROM mark4) AND kind = 'action_changed') AS events
FROM refreshed;
SELECT count(*) FILTER (WHERE payload ->> 'action' IS NULL) AS to_none,
       count(*) FILTER (WHERE payload ->> 'action' = 'win_back_email' AND payload ->> 'previous' IS DISTINCT FROM 'win_back_email') AS to_win_back,
       count(*) FILTER (WHERE payload ->> 'cause' <> 'refresh_actions') AS other_cause
FROM unify.outbox WHERE event_id > (SELECT mark FROM mark4) AND kind = 'action_changed';
DELETE FROM unify.action_map;
SELECT unify.refresh_actions() ->> 'changes' > '0' AS back_to_default;

-- ---- An abandoned cart: the cart reminder, and back after the purchase ---------------------
CREATE TABLE nba.web (id int PRIMARY KEY, kind text, at timestamptz, sku text, price numeric, customer int);
CREATE TEMP TABLE shopper AS
SELECT w.customer, p.person_id, a.action AS action_before
FROM who w JOIN unify.persons p USING (person_id) LEFT JOIN unify.person_actions a USING (person_id)
WHERE p.consent_email AND a.action IS DISTINCT FROM 'cart_reminder_email' ORDER BY w.customer LIMIT 1;
SELECT action_before FROM shopper;
INSERT INTO nba.web SELECT 1, 'add_to_cart', now() - interval '3 hours', 'CD-1', 12.99, customer FROM shopper;
SELECT unify.add_events('nba_web', 'nba.web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "product_id": "sku",
    "value": "price", "customer_number": "customer::text"}') > 0 AS registered;
-- An open cart, not yet abandoned: the action is unchanged.
SELECT a.action IS NOT DISTINCT FROM s.action_before AS unchanged FROM shopper s LEFT JOIN unify.person_actions a USING (person_id);
CREATE TEMP TABLE mark5 AS SELECT max(event_id) AS mark FROM unify.outbox;
SELECT unify.detect_abandoned_carts() AS abandoned;
SELECT a.action, a.channel FROM shopper s JOIN unify.person_actions a USING (person_id);
SELECT kind, payload ->> 'action' AS action, payload ->> 'previous' IS NOT DISTINCT FROM (SELECT action_before FROM shopper) AS previous_ok,
       payload ->> 'cause' AS cause
FROM unify.outbox WHERE event_id > (SELECT mark FROM mark5) ORDER BY event_id;
-- The purchase closes the cart (process_events, as the worker runs it): the action before comes back.
INSERT INTO nba.web SELECT 2, 'purchase', now() - interval '1 minute', NULL, 12.99, customer FROM shopper;
SELECT unify.process_events() AS processed;
SELECT a.action IS NOT DISTINCT FROM s.action_before AS restored FROM shopper s LEFT JOIN unify.person_actions a USING (person_id);
SELECT payload ->> 'previous' AS previous, payload ->> 'cause' AS cause
FROM unify.outbox WHERE event_id > (SELECT mark FROM mark5) AND kind = 'action_changed' ORDER BY event_id DESC LIMIT 1;

-- ---- Roles: readers read the actions, only unify_admin changes the map -----------------------
SET ROLE unify_reader;
SELECT count(*) > 0 AS reader_reads FROM unify.person_actions;
SELECT count(*) > 0 AS reader_reads_rules FROM unify.action_rules;
INSERT INTO unify.action_map (priority, action) VALUES (1, 'none');
\echo :LAST_ERROR_SQLSTATE
SELECT unify.refresh_actions();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE unify_analyst;
SELECT count(*) FROM unify.person_actions;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) > 0 AS analyst_reads_rules FROM unify.action_rules;
RESET ROLE;
SET ROLE unify_admin;
INSERT INTO unify.action_map (priority, action) VALUES (1, 'none');
SELECT unify.refresh_actions() ->> 'changes' > '0' AS admin_refreshed;
SELECT count(*) AS actions_after_none_first FROM unify.person_actions;
DELETE FROM unify.action_map;
SELECT unify.refresh_actions() ->> 'changes' > '0' AS admin_refreshed;
RESET ROLE;

-- ---- Erasure: the person's action goes with them --------------------------------------------
CREATE TEMP TABLE erased AS SELECT person_id FROM unify.person_actions ORDER BY person_id LIMIT 1;
SELECT count(*) AS action_events_before FROM unify.outbox e JOIN erased USING (person_id)
WHERE e.kind = 'action_changed' AND e.payload IS NOT NULL;
SELECT (unify.erase_person((SELECT person_id FROM erased), 'GDPR Art. 17 test')) ? 'event_id' AS erased;
SELECT count(*) AS action_rows FROM unify.person_actions JOIN erased USING (person_id);
SELECT count(*) AS action_events_with_payload FROM unify.outbox e JOIN erased USING (person_id)
WHERE e.kind = 'action_changed' AND e.payload IS NOT NULL;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
