-- Behavioural events (issue 26): registering an event table and its errors, capture, the
-- identifiers an event reaches a person by, the stitching of an anonymous history at a login
-- (also across a merge and an undo), the per-person figures in customer_360, the abandoned cart
-- (timing by explicit as_of, once per cart, a purchase closes it) and erasure.
-- Self-contained: one transaction, rolled back; the sequences it advanced are set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
SET TIME ZONE 'UTC';
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';

BEGIN;
CREATE SCHEMA ev;
CREATE TABLE ev.crm (id int PRIMARY KEY, name text, email text, kdnr text);
CREATE TABLE ev.shop (id int PRIMARY KEY, name text, email text);
INSERT INTO ev.crm VALUES (1, 'Anna Alt', 'anna.alt@example.org', 'K-1'), (2, 'Bernd Bauer', 'bernd@example.org', 'K-2'),
                          (3, 'Carla Christ', 'carla@example.org', 'K-3');
INSERT INTO ev.shop VALUES (21, 'Bernd Bauer', 'b.bauer@example.org');
SELECT unify.add_source('ev_crm', 'ev.crm', 'id', '{"full_name": "name", "email": "email", "customer_number": "kdnr"}',
                        track_changes => false) > 0 AS crm;
SELECT unify.add_source('ev_shop', 'ev.shop', 'id', '{"full_name": "name", "email": "email"}', track_changes => false) > 0 AS shop;
SELECT count(*) AS sources FROM unify.sync() WHERE source_name LIKE 'ev\_%';
SELECT persons FROM unify.resolve();
CREATE TEMP VIEW who AS
SELECT rp.person_id, string_agg(s.name || ':' || r.source_key, ',' ORDER BY s.name, r.source_key) AS records
FROM unify.records r JOIN unify.sources s USING (source_id) LEFT JOIN unify.record_persons rp USING (record_id) GROUP BY rp.person_id;

-- The web tracking table, as a shop writes it. Times relative to now() (fixed in a transaction).
CREATE TABLE ev.web (id bigint PRIMARY KEY, kind text, at timestamptz, sku text, price numeric, qty int,
                     session text, cookie text, login text, shop_customer int);
CREATE VIEW ev.web_view AS SELECT * FROM ev.web;
-- Anonymous cookie c-anna: two visits before the login, then the login with her e-mail as typed.
INSERT INTO ev.web VALUES
    (1, 'page_view',    now() - interval '40 days', NULL,  NULL, NULL, 's1', 'c-anna', NULL, NULL),
    (2, 'product_view', now() - interval '3 days',  'P-7', NULL, NULL, 's2', 'c-anna', NULL, NULL),
    (3, 'product_view', now() - interval '3 days' + interval '1 minute', 'P-9', NULL, NULL, 's2', 'c-anna', NULL, NULL),
    (4, 'login',        now() - interval '2 days',  NULL,  NULL, NULL, 's3', 'c-anna', '  Anna.Alt@Example.org ', NULL),
    -- A visitor never identified.
    (5, 'page_view',    now() - interval '1 day',   NULL,  NULL, NULL, 's4', 'c-nobody', NULL, NULL),
    -- Bernd through his shop customer id (a source key), no cookie.
    (6, 'product_view', now() - interval '5 hours', 'P-3', NULL, NULL, 's5', NULL, NULL, 21);

-- ---- Errors -----------------------------------------------------------------------------------
\set web_fields '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "product_id": "sku", "value": "price", "quantity": "qty", "session_id": "session", "anonymous_id": "cookie", "email": "login", "source": "ev_shop", "source_key": "shop_customer"}'
SELECT unify.add_events('Web', 'ev.web', :'web_fields');
SELECT unify.add_events('web', NULL, :'web_fields');
SELECT unify.add_events('web', 'ev.web_view', :'web_fields');
SELECT unify.add_events('web', 'ev.web', '[]');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "cookie": "cookie"}');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id", "event_type": "kind", "anonymous_id": "cookie"}');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "session_id": "session"}');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "source_key": "shop_customer"}');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "source": "webshop", "source_key": "shop_customer"}');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id::text", "event_type": "kind", "occurred_at": "at", "anonymous_id": "cookie"}');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "anonymous_id": "cookie", "value": "price * "}');
SELECT unify.add_events('web', 'ev.web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "anonymous_id": 7}');
SELECT count(*) AS nothing_registered FROM unify.event_sources;

-- ---- Registration: the table is read at once, its changes captured ------------------------------
SELECT unify.add_events('web', 'ev.web', :'web_fields') > 0 AS registered;
SELECT unify.add_events('web', 'ev.web', :'web_fields');
SELECT name, relation_name, run_as = current_user::regrole AS runs_as_registrar FROM unify.event_sources;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'ev.web'::regclass ORDER BY tgname;
SELECT event_key, event_type, product_id, session_id, source_key, email_key, anonymous_id FROM unify.events ORDER BY event_key::int;

-- The stitch: c-anna logged in as Anna, and her whole anonymous history before the login is hers.
SELECT anonymous_id, email_key, event_key AS login_event, logged_in_at = now() - interval '2 days' AS at_login,
       first_seen_at = now() - interval '40 days' AS first_seen
FROM unify.identity_stitches;
SELECT e.event_key, w.records, e.stitched FROM unify.person_events e LEFT JOIN who w USING (person_id) ORDER BY e.event_key::int;

-- Capture: inserts, an update and a delete queue keys; nothing changes before they are processed.
INSERT INTO ev.web VALUES
    (7, 'page_view', now() - interval '10 days', NULL, NULL, NULL, 's6', 'c-anna', NULL, NULL),
    (8, 'page_view', now() - interval '1 hour', NULL, NULL, NULL, 's7', 'c-carla', 'carla@example.org', NULL);
UPDATE ev.web SET sku = 'P-8' WHERE id = 3;
DELETE FROM ev.web WHERE id = 5;
SELECT count(*) AS queued FROM unify.event_queue;
SELECT count(*) AS events_before FROM unify.events;
SELECT unify.process_events() AS written;
SELECT count(*) AS queued FROM unify.event_queue;
SELECT event_key, product_id FROM unify.events WHERE event_key IN ('3', '5', '7', '8') ORDER BY event_key::int;
-- Nothing queued: nothing to do; a full read gives every row again.
SELECT unify.process_events('web') AS nothing_to_do;
SELECT unify.process_events('nope');
SELECT unify.sync_events('web') AS events;

-- ---- Per person in customer_360 ----------------------------------------------------------------
SELECT w.records, c.last_visit_at = now() - interval '1 hour' AS last_visit_1h_ago, c.visits_30d, c.last_product_viewed,
       c.cart_items, c.cart_value
FROM unify.customer_360 c JOIN who w USING (person_id) ORDER BY w.records;
-- Anna: last visit 2 days ago (the login), visits s2, s3, s6 in 30 days (s1 is 40 days old), last product P-8.
SELECT c.last_visit_at = now() - interval '2 days' AS anna_last_visit FROM unify.customer_360 c JOIN who w USING (person_id) WHERE w.records = 'ev_crm:1';

-- ---- Carts -------------------------------------------------------------------------------------
-- Anna puts two things in her cart and takes one out; Bernd puts one in (an hour and a half ago).
INSERT INTO ev.web VALUES
    (10, 'add_to_cart', now() - interval '50 minutes', 'P-7', 20, 1, 's8', 'c-anna', NULL, NULL),
    (11, 'add_to_cart', now() - interval '45 minutes', 'P-8', 30, 2, 's8', 'c-anna', NULL, NULL),
    (12, 'remove_from_cart', now() - interval '40 minutes', 'P-8', 15, 1, 's8', 'c-anna', NULL, NULL),
    (13, 'add_to_cart', now() - interval '90 minutes', 'P-3', 12.5, 1, 's9', NULL, NULL, 21);
SELECT unify.process_events() AS written;
SELECT w.records, c.cart_id, c.started_at = now() - interval '50 minutes' OR c.started_at = now() - interval '90 minutes' AS started,
       c.last_activity_at - now() AS last_activity, c.items, c.value
FROM unify.open_carts c JOIN who w USING (person_id) ORDER BY w.records;
SELECT w.records, c.cart_items, c.cart_value, c.cart_abandoned_at FROM unify.customer_360 c JOIN who w USING (person_id)
WHERE c.cart_items IS NOT NULL ORDER BY w.records;
SELECT coalesce(max(event_id), 0) AS mark FROM unify.outbox \gset
-- The default is an hour without cart activity: Bernd's (90 minutes) is abandoned, Anna's (40) not yet.
SELECT current_setting('customer_unify.cart_abandoned_after', true) IS NULL OR current_setting('customer_unify.cart_abandoned_after', true) = '' AS unset;
SELECT unify.detect_abandoned_carts() AS reported;
-- Once per cart: again now, and later, nothing more for Bernd's.
SELECT unify.detect_abandoned_carts() AS reported_again;
-- With two hours, Anna's cart at now() + 1h is not abandoned; with the default at now() + 30 minutes it is.
SET LOCAL customer_unify.cart_abandoned_after = '2h';
SELECT unify.detect_abandoned_carts(now() + interval '1 hour') AS reported;
RESET customer_unify.cart_abandoned_after;
SELECT unify.detect_abandoned_carts(now() + interval '19 minutes') AS not_yet;
SELECT unify.detect_abandoned_carts(now() + interval '20 minutes') AS reported;
SELECT unify.detect_abandoned_carts(now() + interval '1 day') AS never_twice;
SELECT e.kind, w.records, e.payload - 'started_at' - 'last_activity_at' - 'abandoned_at' AS payload,
       (e.payload ->> 'abandoned_at')::timestamptz - now() AS abandoned_after_now
FROM unify.outbox e JOIN who w USING (person_id) WHERE e.event_id > :mark ORDER BY e.event_id;
SELECT w.records, c.cart_abandoned_at - now() AS abandoned_after_now FROM unify.customer_360 c JOIN who w USING (person_id)
WHERE c.cart_items IS NOT NULL ORDER BY w.records;
-- Anna buys: the cart is closed, nothing is reported again. A later addition is a new cart.
INSERT INTO ev.web VALUES (14, 'purchase', now() - interval '5 minutes', NULL, 35, NULL, 's8', 'c-anna', NULL, NULL);
SELECT unify.process_events() AS written;
SELECT w.records FROM unify.open_carts c JOIN who w USING (person_id) ORDER BY w.records;
SELECT unify.detect_abandoned_carts(now() + interval '1 day') AS after_purchase;
INSERT INTO ev.web VALUES (15, 'add_to_cart', now() - interval '1 minute', 'P-1', 5, 1, 's10', 'c-anna', NULL, NULL);
SELECT unify.process_events() AS written;
SELECT unify.detect_abandoned_carts(now() + interval '1 day') AS new_cart;
SELECT e.payload ->> 'cart_id' AS cart_id, w.records FROM unify.outbox e JOIN who w USING (person_id)
WHERE e.event_id > :mark ORDER BY e.event_id;
-- The setting must be a positive interval.
SET LOCAL customer_unify.cart_abandoned_after = 'soon';
SELECT unify.detect_abandoned_carts();
SET LOCAL customer_unify.cart_abandoned_after = '-1h';
SELECT unify.detect_abandoned_carts();
RESET customer_unify.cart_abandoned_after;
SELECT unify.detect_abandoned_carts(NULL);

-- ---- Persons merge and split: the events follow ------------------------------------------------
-- Bernd's shop record (event 6, 13 through its key) is linked to his CRM record, then unlinked.
SELECT unify.link((SELECT record_id FROM unify.records WHERE source_key = '2' AND source_id = (SELECT source_id FROM unify.sources WHERE name = 'ev_crm')),
                  (SELECT record_id FROM unify.records WHERE source_key = '21'), 'test: Bernd') IS NOT NULL AS linked;
SELECT e.event_key, w.records FROM unify.person_events e JOIN who w USING (person_id) WHERE e.event_key IN ('6', '13') ORDER BY 1;
SELECT array_length(unify.unmerge((SELECT person_id FROM unify.records JOIN unify.record_persons USING (record_id) WHERE source_key = '21'), 'test: not Bernd'), 1) AS persons;
SELECT e.event_key, w.records FROM unify.person_events e JOIN who w USING (person_id) WHERE e.event_key IN ('6', '13') ORDER BY 1;
-- A second login on the same cookie by someone else: the latest login decides, for the whole history.
INSERT INTO ev.web VALUES (16, 'login', now(), NULL, NULL, NULL, 's11', 'c-anna', 'carla@example.org', NULL);
SELECT unify.process_events() AS written;
SELECT anonymous_id, email_key, event_key FROM unify.identity_stitches ORDER BY 1;
SELECT w.records, count(*) AS events FROM unify.person_events e JOIN who w USING (person_id) GROUP BY 1 ORDER BY 1;
DELETE FROM ev.web WHERE id = 16;
SELECT unify.process_events() AS written;
SELECT anonymous_id, email_key, event_key FROM unify.identity_stitches ORDER BY 1;
-- The person is stored on each event (one person's behaviour is an index lookup) and equals the
-- rule worked out from the records now, after every step above.
CREATE TEMP VIEW stored_differs AS
SELECT count(*) AS stored_differs FROM unify.events e JOIN unify._event_person_rule r USING (event_source_id, event_key)
WHERE (e.person_id, e.stitched) IS DISTINCT FROM (r.person_id, r.stitched);
SELECT * FROM stored_differs;
-- A new record with Carla's e-mail, in another person: the address names nobody now, so her
-- e-mail-only events lose their person at the resolve (and not before: as of the last resolve).
SELECT count(*) AS carla_events FROM unify.person_events e JOIN who w USING (person_id) WHERE w.records LIKE '%ev_crm:3%';
INSERT INTO ev.crm VALUES (4, 'Dieter Dorn', 'carla@example.org', 'K-4');
SELECT source_name, source_rows FROM unify.sync() WHERE source_name = 'ev_crm';
SELECT * FROM stored_differs;
SELECT persons FROM unify.resolve();
SELECT count(*) AS carla_events FROM unify.person_events e JOIN who w USING (person_id) WHERE w.records LIKE '%ev_crm:3%';
SELECT * FROM stored_differs;
DELETE FROM ev.crm WHERE id = 4;
SELECT source_name, source_rows FROM unify.sync() WHERE source_name = 'ev_crm';
SELECT persons FROM unify.resolve();
SELECT count(*) AS carla_events FROM unify.person_events e JOIN who w USING (person_id) WHERE w.records LIKE '%ev_crm:3%';
SELECT * FROM stored_differs;

-- ---- Erasure: Anna's events, own and stitched, her stitch and her carts go -----------------------
SELECT count(*) AS anna_events FROM unify.person_events e JOIN who w USING (person_id) WHERE w.records = 'ev_crm:1';
SELECT count(*) AS anna_carts FROM unify.abandoned_carts a JOIN who w USING (person_id) WHERE w.records = 'ev_crm:1';
SELECT unify.erase_person((SELECT person_id FROM who WHERE records = 'ev_crm:1'), 'test: GDPR Art. 17') ? 'records' AS erased;
SELECT event_key, anonymous_id FROM unify.events WHERE anonymous_id = 'c-anna' OR email_key LIKE 'anna%';
SELECT count(*) AS anna_stitches FROM unify.identity_stitches WHERE anonymous_id = 'c-anna';
SELECT count(*) AS anna_carts FROM unify.abandoned_carts a WHERE NOT EXISTS (SELECT 1 FROM unify.persons p WHERE p.person_id = a.person_id);
-- The outbox keeps only the ids of her cart events.
SELECT e.kind, e.payload FROM unify.outbox e WHERE e.event_id > :mark AND e.kind = 'cart_abandoned'
  AND NOT EXISTS (SELECT 1 FROM unify.persons p WHERE p.person_id = e.person_id) ORDER BY e.event_id;

-- ---- A failing mapping keeps its changes queued; removal --------------------------------------
ALTER TABLE ev.web RENAME COLUMN sku TO article;
INSERT INTO ev.web VALUES (17, 'page_view', now(), NULL, NULL, NULL, 's12', 'c-x', NULL, NULL);
SELECT unify.process_events() AS written;
SELECT count(*) AS still_queued FROM unify.event_queue;
ALTER TABLE ev.web RENAME COLUMN article TO sku;
SELECT unify.process_events() AS written;
SELECT unify.remove_events('web');
SELECT unify.remove_events('web');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'ev.web'::regclass;
SELECT (SELECT count(*) FROM unify.events) AS events, (SELECT count(*) FROM unify.identity_stitches) AS stitches;
INSERT INTO ev.web VALUES (18, 'page_view', now(), NULL, NULL, NULL, 's13', 'c-y', NULL, NULL);
SELECT count(*) AS queued FROM unify.event_queue;
ROLLBACK;

SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
