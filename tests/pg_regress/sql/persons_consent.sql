-- Consent by the latest proven statement (issue 25): per channel the statement with the latest
-- timestamp (the mapped consent_*_at) decides, a revocation winning a tie; an undated statement
-- only restricts (an undated opt-out binds unless an opt-in is proven later than its row last
-- changed; an undated opt-in never grants against a dated statement). The golden record keeps
-- the deciding source and its timestamp. Records are joined into persons by must-link, so the
-- cases do not depend on the model.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back, and the sequences
-- it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
SET LOCAL TIME ZONE 'Europe/Berlin';
CREATE SCHEMA consent;
-- The CRM proves when each answer was given (a timestamp per channel, as text in places).
CREATE TABLE consent.crm (
    id int PRIMARY KEY, name text, email text, newsletter boolean, newsletter_at timestamptz,
    post_ok text, post_ok_at text, changed timestamptz
);
-- The app proves its double opt-ins and opt-outs with their own times.
CREATE TABLE consent.app (
    id int PRIMARY KEY, name text, email text, optin boolean, optin_at timestamptz, changed timestamptz
);
-- An old system: answers without a date; only when the row last changed is known.
CREATE TABLE consent.legacy (
    id int PRIMARY KEY, name text, email text, werbung boolean, geaendert timestamptz
);
INSERT INTO consent.crm VALUES
    (1, 'Anna Alt', 'anna@example.org', false, '2025-01-10 09:00+01', NULL, NULL, '2025-01-10 09:00+01'),
    (2, 'Bernd Bauer', 'bernd@example.org', true, '2026-01-01 10:00+01', 'ja', '2026-01-01 10:00+01', '2026-01-01 10:00+01'),
    (3, 'Carla Christ', 'carla@example.org', true, '2026-03-01 12:00+01', NULL, NULL, '2026-03-01 12:00+01'),
    (8, 'Hugo Hahn', 'hugo@example.org', true, '2026-02-01 08:00+01', 'nein', 'no date', '2026-02-01 08:00+01');
INSERT INTO consent.app VALUES
    (1, 'Anna Alt', 'anna@example.org', true, '2026-01-15 18:30+01', '2026-01-15 18:30+01'),  -- later opt-in
    (2, 'Bernd Bauer', 'bernd@example.org', false, '2026-02-01 07:00+01', '2026-02-01 07:00+01'), -- later opt-out
    (3, 'Carla Christ', 'carla@example.org', false, '2026-03-01 12:00+01', '2026-03-01 12:00+01'), -- same instant
    (4, 'Dora Dietz', 'dora@example.org', true, '2026-04-01 10:00+02', '2026-04-01 10:00+02'),
    (5, 'Emil Ernst', 'emil@example.org', true, '2026-04-01 10:00+02', '2026-04-01 10:00+02'),
    (6, 'Fritz Fuchs', 'fritz@example.org', false, '2026-01-01 10:00+01', '2026-01-01 10:00+01');
INSERT INTO consent.legacy VALUES
    (4, 'Dora Dietz', 'dora@example.org', false, '2026-05-01 10:00+02'),   -- undated no, row changed after the opt-in
    (5, 'Emil Ernst', 'emil@example.org', false, '2025-01-01 10:00+01'),   -- undated no, row older than the opt-in
    (6, 'Fritz Fuchs', 'fritz@example.org', true, '2026-06-01 10:00+02'),  -- undated yes, dated no elsewhere
    (7, 'Gerda Graf', 'gerda@example.org', true, '2026-06-01 10:00+02');   -- undated yes alone
SELECT unify.add_source('c_crm', 'consent.crm', 'id', '{"full_name": "name", "email": "email",
    "consent_email": "newsletter", "consent_email_at": "newsletter_at",
    "consent_post": "post_ok", "consent_post_at": "post_ok_at", "updated_at": "changed"}', priority => 10, track_changes => false) > 0 AS crm;
SELECT unify.add_source('c_app', 'consent.app', 'id', '{"full_name": "name", "email": "email",
    "consent_email": "optin", "consent_email_at": "optin_at", "updated_at": "changed"}', priority => 20, track_changes => false) > 0 AS app;
SELECT unify.add_source('c_legacy', 'consent.legacy', 'id', '{"full_name": "name", "email": "email",
    "consent_email": "werbung", "updated_at": "geaendert"}', priority => 30, track_changes => false) > 0 AS legacy;
-- The new fields are canonical fields like the others.
SELECT f FROM unnest(unify.canonical_fields()) f WHERE f LIKE 'consent%' ORDER BY 1;
SELECT source_name, source_rows FROM unify.sync() WHERE source_name LIKE 'c\_%' ORDER BY 1;
-- The statement times as the records keep them: a text column that is no timestamp is undated.
SELECT s.name, r.source_key, r.consent_email, r.consent_email_at, r.consent_post, r.consent_post_at
FROM unify.records r JOIN unify.sources s USING (source_id) ORDER BY 1, 2;
SELECT persons FROM unify.resolve();
-- Each customer's records are one person (must-link: the cases do not depend on the model).
SELECT count(*) AS linked FROM (
    SELECT unify.link(a.record_id, b.record_id, 'test: one customer')
    FROM unify.records a JOIN unify.records b ON a.email = b.email AND a.record_id < b.record_id) x;
CREATE TEMP VIEW consent_of AS
SELECT p.email, p.consent_email, p.consent_email_source, p.consent_email_at,
       p.consent_post, p.consent_post_source, p.consent_post_at
FROM unify.persons p;
-- anna: a later opt-in (app) is new consent over an older opt-out (CRM).
-- bernd: a later opt-out (app) revokes. carla: the same instant, the revocation wins.
-- dora: an undated opt-out whose row changed after the opt-in restricts (no time: unproven).
-- emil: an undated opt-out of a row older than the opt-in does not.
-- fritz: an undated opt-in never grants against a dated opt-out. gerda: undated alone, as before.
-- hugo: post consent "nein" with an unreadable date: undated, it restricts.
SELECT email, consent_email, consent_email_source, consent_email_at FROM consent_of ORDER BY email;
SELECT email, consent_post, consent_post_source, consent_post_at FROM consent_of WHERE consent_post IS NOT NULL ORDER BY email;
-- The proof in customer_360.
SELECT email, consent_email, consent_email_source, consent_email_at FROM unify.customer_360
WHERE email IN ('anna@example.org', 'dora@example.org') ORDER BY email;
-- A new statement changes the answer: Dora opts in again in the app, after the legacy row.
UPDATE consent.app SET optin_at = '2026-05-02 09:00+02', changed = '2026-05-02 09:00+02' WHERE id = 4;
SELECT updated FROM unify.sync('c_app');
SELECT golden_changed > 0 AS changed FROM unify.resolve();
SELECT email, consent_email, consent_email_source, consent_email_at FROM consent_of WHERE email = 'dora@example.org';
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
