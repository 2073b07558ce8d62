-- The durable outbox (issue 26): what each command emits, in its own transaction, and the
-- consumer API (create, read, acknowledge, purge, drop) with its errors. The concurrency
-- (two consumers, a crash between read and ack, a writer committing a smaller id late) is
-- tests/isolation/specs/outbox_consumers.spec.
-- Self-contained (the fixture: scripts/test.sh): part 1 is one transaction, rolled back; part 2
-- must commit (a reader never sees events of a transaction still running, its own included), so
-- it removes its consumers and events at the end; the sequences it advanced are set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
SET TIME ZONE 'UTC';
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
SELECT count(*) AS events_before FROM unify.outbox;

-- ---- Part 1: the emitters ---------------------------------------------------------------------
BEGIN;
CREATE SCHEMA ob;
CREATE TABLE ob.crm (id int PRIMARY KEY, name text, email text, newsletter boolean, newsletter_at timestamptz, changed timestamptz);
CREATE TABLE ob.shop (id int PRIMARY KEY, name text, email text, changed timestamptz);
CREATE TABLE ob.orders (order_id int PRIMARY KEY, customer_id int, day date, amount numeric);
INSERT INTO ob.crm VALUES
    (1, 'Anna Alt', 'anna@example.org', true, '2026-01-10 09:00+00', '2026-01-10 09:00+00'),
    (2, 'Bernd Bauer', 'bernd@example.org', NULL, NULL, '2026-01-10 09:00+00'),
    (3, 'Carla Christ', 'carla@example.org', false, '2026-02-01 10:00+00', '2026-02-01 10:00+00');
INSERT INTO ob.shop VALUES
    (11, 'Anna Alt', 'anna@example.org', '2026-03-01 10:00+00'),
    (12, 'Bernd Bauer', 'bernd@example.org', '2026-03-01 10:00+00');
INSERT INTO ob.orders VALUES
    (1, 11, '2026-05-01', 40), (2, 11, '2026-06-01', 60), (3, 12, '2025-01-01', 10);
SELECT unify.add_source('ob_crm', 'ob.crm', 'id', '{"full_name": "name", "email": "email",
    "consent_email": "newsletter", "consent_email_at": "newsletter_at", "updated_at": "changed"}', priority => 10, track_changes => false) > 0 AS crm;
SELECT unify.add_source('ob_shop', 'ob.shop', 'id', '{"full_name": "name", "email": "email", "updated_at": "changed"}',
    priority => 20, track_changes => false) > 0 AS shop;
SELECT source_name, source_rows FROM unify.sync() WHERE source_name LIKE 'ob\_%' ORDER BY 1;
-- Without pairs every record is its own person. The first resolve of an empty database is the
-- starting state: no consent events for it (read from unify.persons / unify.audience).
SELECT persons FROM unify.resolve();
SELECT count(*) AS events FROM unify.outbox;
-- Afterwards every change counts, a new person's first answer too: Carla's no turned into a yes,
-- and Dora's first yes, in the resolve's transaction (Bernd's CRM record still has none).
UPDATE ob.crm SET newsletter = true, newsletter_at = '2026-03-05 08:00+00', changed = '2026-03-05 08:00+00' WHERE id = 3;
INSERT INTO ob.crm VALUES (4, 'Dora Dach', 'dora@example.org', true, '2026-03-06 12:00+00', '2026-03-06 12:00+00');
SELECT source_name, source_rows FROM unify.sync() WHERE source_name = 'ob_crm';
SELECT persons FROM unify.resolve();
CREATE TEMP VIEW who AS
SELECT rp.person_id, string_agg(s.name || ':' || r.source_key, ',' ORDER BY s.name, r.source_key) AS records
FROM unify.records r JOIN unify.sources s USING (source_id) LEFT JOIN unify.record_persons rp USING (record_id) GROUP BY rp.person_id;
SELECT e.event_id, e.kind, w.records, e.payload FROM unify.outbox e LEFT JOIN who w USING (person_id) ORDER BY e.event_id;
-- A resolve that changes nothing emits nothing.
SELECT golden_changed FROM unify.resolve();
SELECT count(*) AS events FROM unify.outbox;
-- Anna's two records linked: one person absorbs the other (merged), whose id is gone (removed);
-- the CRM person keeps its consent (no event).
SELECT max(event_id) AS mark FROM unify.outbox \gset
SELECT unify.link((SELECT record_id FROM unify.records WHERE source_key = '1' AND source_id = (SELECT source_id FROM unify.sources WHERE name = 'ob_crm')),
                  (SELECT record_id FROM unify.records WHERE source_key = '11'), 'test: Anna') IS NOT NULL AS linked;
SELECT e.event_id, e.kind, e.person_id, w.records, e.payload FROM unify.outbox e LEFT JOIN who w USING (person_id)
WHERE e.event_id > :mark ORDER BY e.event_id;
-- Unmerged again: the shop record split out of the person (its old id given back, without
-- consent: no event), and the unmerge.
SELECT max(event_id) AS mark FROM unify.outbox \gset
SELECT array_length(unify.unmerge((SELECT person_id FROM unify.records JOIN unify.record_persons USING (record_id) WHERE source_key = '11'), 'test: not Anna'), 1) AS persons;
SELECT e.event_id, e.kind, e.person_id, w.records, e.payload FROM unify.outbox e LEFT JOIN who w USING (person_id)
WHERE e.event_id > :mark ORDER BY e.event_id;
-- Segments: a person entering one, then, a year later with no order in the window, leaving it.
SELECT unify.add_transactions('ob_orders', 'ob.orders', '{"source": "ob_shop", "source_key": "customer_id", "order_date": "day", "amount": "amount"}') > 0 AS orders;
SELECT max(event_id) AS mark FROM unify.outbox \gset
SELECT (unify.refresh_segments('2026-07-01', interval '1 year') ->> 'changes')::int AS changes;
SELECT e.event_id, e.kind, w.records, e.payload FROM unify.outbox e LEFT JOIN who w USING (person_id)
WHERE e.event_id > :mark ORDER BY e.event_id;
SELECT max(event_id) AS mark FROM unify.outbox \gset
SELECT (unify.refresh_segments('2026-08-01', interval '1 year') ->> 'changes')::int AS no_changes;
SELECT (unify.refresh_segments('2027-07-01', interval '1 year') ->> 'changes')::int AS changes;
SELECT e.event_id, e.kind, w.records, e.payload FROM unify.outbox e LEFT JOIN who w USING (person_id)
WHERE e.event_id > :mark ORDER BY e.event_id;
-- Each segment_history row is one left and/or one entered event, with its change_id.
SELECT count(*) FILTER (WHERE h.from_segment IS NOT NULL) = (SELECT count(*) FROM unify.outbox WHERE kind = 'segment_left')
   AND count(*) FILTER (WHERE h.to_segment IS NOT NULL) = (SELECT count(*) FROM unify.outbox WHERE kind = 'segment_entered')
   AND NOT EXISTS (SELECT 1 FROM unify.outbox e WHERE e.kind LIKE 'segment%'
                   AND NOT EXISTS (SELECT 1 FROM unify.segment_history x
                                   WHERE x.change_id = (e.payload ->> 'change_id')::bigint AND x.person_id = e.person_id)) AS matches_history
FROM unify.segment_history h;
-- Own events are not handed out while the transaction that wrote them runs (not even to it).
SELECT unify.create_outbox_consumer('ob_inside', from_start => true) AS cursor_at;
SELECT count(*) AS handed_out FROM unify.read_outbox('ob_inside');
-- Erasure: the person's events keep their ids and kinds, no payload; the erasure goes out.
SELECT unify.erase_person((SELECT person_id FROM unify.records JOIN unify.record_persons USING (record_id) WHERE source_key = '11'), 'test: GDPR') ->> 'records' AS erased_records;
SELECT e.event_id, e.kind, e.payload FROM unify.outbox e
WHERE e.person_id = (SELECT person_id FROM unify.identity_events WHERE event = 'erase') ORDER BY e.event_id;
SELECT count(*) AS events_naming_anna FROM unify.outbox e WHERE e.payload::text ~* 'anna|alt';
-- The writer refuses what it does not know.
SELECT unify._outbox_emit('cart_lost', ARRAY[1::bigint], ARRAY['{}'::jsonb]);
SELECT unify._outbox_emit('segment_left', ARRAY[1::bigint, 2], ARRAY['{}'::jsonb]);
SELECT unify._outbox_emit('segment_left', ARRAY[]::bigint[], ARRAY[]::jsonb[]) AS nothing;
ROLLBACK;

-- ---- Part 2: consumers (committed; removed at the end) -----------------------------------------
SELECT unify.create_outbox_consumer('crm_sync') AS cursor_at;                       -- from now on
SELECT unify.create_outbox_consumer('ads', from_start => true) AS cursor_at;        -- all kept
SELECT unify.create_outbox_consumer('ads');
SELECT unify.create_outbox_consumer(NULL);
SELECT unify.create_outbox_consumer(' ');
SELECT unify._outbox_emit('consent_changed', ARRAY[101, 102, 103]::bigint[],
    ARRAY['{"channel": "email", "consent": true}', '{"channel": "post", "consent": false}', '{"channel": "phone", "consent": true}']::jsonb[]) AS emitted;
SELECT event_id - (SELECT coalesce(last_value, start_value - 1) FROM test_sequences WHERE seq = 'unify.outbox_event_id_seq'::regclass) AS n,
       kind, person_id, payload FROM unify.read_outbox('crm_sync', 2);
-- Not acknowledged: the same again (at least once).
SELECT person_id FROM unify.read_outbox('crm_sync', 2);
SELECT unify.ack_outbox('crm_sync', (SELECT max(event_id) FROM unify.read_outbox('crm_sync', 2)))
     - (SELECT coalesce(last_value, start_value - 1) FROM test_sequences WHERE seq = 'unify.outbox_event_id_seq'::regclass) AS cursor_n;
SELECT person_id FROM unify.read_outbox('crm_sync');
-- Never backwards; an id not yet given out, an unknown consumer, NULLs are errors.
SELECT unify.ack_outbox('crm_sync', 1) - (SELECT coalesce(last_value, start_value - 1) FROM test_sequences WHERE seq = 'unify.outbox_event_id_seq'::regclass) AS cursor_n;
SELECT unify.ack_outbox('crm_sync', (SELECT max(event_id) + 1 FROM unify.outbox));
SELECT unify.ack_outbox('nobody', 1);
SELECT unify.ack_outbox('crm_sync', NULL);
SELECT unify.read_outbox('nobody');
SELECT unify.read_outbox('crm_sync', 0);
SELECT unify.read_outbox(NULL);
-- Retention: 'ads' has acknowledged nothing, so nothing goes; then what both have.
SELECT unify.purge_outbox() AS purged;
SELECT consumer, pending, last_read_at IS NOT NULL AS has_read, last_ack_at IS NOT NULL AS has_acked FROM unify.outbox_status ORDER BY consumer;
SELECT unify.ack_outbox('ads', (SELECT max(event_id) FROM unify.outbox)) = (SELECT max(event_id) FROM unify.outbox) AS ads_done;
SELECT unify.purge_outbox(interval '1 day') AS purged_older_than_a_day;
SELECT unify.purge_outbox() AS purged;
SELECT person_id FROM unify.outbox ORDER BY event_id;
SELECT unify.purge_outbox(NULL);
SELECT unify.purge_outbox(interval '-1 day');
-- The horizon needs a fresh snapshot per statement.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT unify.read_outbox('crm_sync');
ROLLBACK;
SELECT unify.drop_outbox_consumer('ads') AS dropped;
SELECT unify.drop_outbox_consumer('ads');
SELECT kind, emitted_by FROM unify.outbox_kinds() ORDER BY kind;
-- With no consumer left, every event handed out may go.
SELECT unify.drop_outbox_consumer('crm_sync') AS dropped;
SELECT unify.purge_outbox() AS purged;
-- Left as found.
DELETE FROM unify.outbox e WHERE e.event_id > (SELECT coalesce(last_value, start_value - 1) FROM test_sequences WHERE seq = 'unify.outbox_event_id_seq'::regclass);
SELECT count(*) AS events_after FROM unify.outbox;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
