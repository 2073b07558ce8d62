-- Consented audiences (issue 26): unify.audience(segment, channel) returns only the persons of
-- the segment whose consent (the golden record's latest proven statement) covers the channel;
-- a person without consent comes in after a later documented opt-in, an erased person never
-- appears. The ad platforms get identifiers normalised and hashed as Google Customer Match and
-- Meta Custom Audiences publish it, checked here against PostgreSQL's own sha256() of the
-- normalised form and against Meta's published vectors. Called as a member of unify_reader (the
-- lowest role allowed); the pseudonymous unify_analyst is refused.
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
CREATE ROLE regress_audience_reader IN ROLE unify_reader;
CREATE ROLE regress_audience_analyst IN ROLE unify_analyst;
CREATE SCHEMA aud;
-- The CRM proves each answer with its time; the app (added later) proves its opt-ins.
CREATE TABLE aud.crm (
    id int PRIMARY KEY, name text, email text, phone text, street text, zip text, city text, country text,
    newsletter boolean, newsletter_at timestamptz, calls boolean, calls_at timestamptz,
    letters boolean, letters_at timestamptz, changed timestamptz
);
CREATE TABLE aud.app (id int PRIMARY KEY, name text, email text, optin boolean, optin_at timestamptz, changed timestamptz);
CREATE TABLE aud.orders (order_id int PRIMARY KEY, customer_id int NOT NULL, order_date date NOT NULL, amount numeric NOT NULL);
INSERT INTO aud.crm VALUES
    -- anna: said no to the newsletter, yes to letters.
    (1, 'Anna Alt', 'anna.alt@example.org', '030 1234567', 'Hauptstraße 1', '10115', 'Berlin', 'Deutschland',
     false, '2025-01-10 09:00+01', NULL, NULL, true, '2025-01-10 09:00+01', '2025-01-10 09:00+01'),
    -- bernd: yes to e-mail and calls; a googlemail address with dots and a +tag.
    (2, 'Herr Bernd Bauer', 'Bernd.Bauer+shop@googlemail.com', '0171 2345678', 'Ringstr. 5', '1067', 'Dresden', 'DE',
     true, '2026-01-01 10:00+01', true, '2026-01-01 10:00+01', NULL, NULL, '2026-01-01 10:00+01'),
    -- carla: never asked.
    (3, 'Carla Christ', 'carla@example.org', NULL, 'Marktplatz 3', '04109', 'Leipzig', 'DE',
     NULL, NULL, NULL, NULL, NULL, NULL, '2026-01-01 10:00+01'),
    -- xaver: yes to e-mail; asks to be erased below.
    (4, 'Xaver Zettelmaier', 'xaver@example.org', NULL, NULL, NULL, NULL, 'DE',
     true, '2026-01-01 10:00+01', NULL, NULL, NULL, NULL, '2026-01-01 10:00+01');
INSERT INTO aud.orders VALUES (1, 1, '2026-03-01', 50), (2, 2, '2026-03-01', 50), (3, 3, '2026-03-01', 50), (4, 4, '2026-03-01', 50);
SELECT unify.add_source('aud_crm', 'aud.crm', 'id', '{"full_name": "name", "email": "email", "phone": "phone",
    "street_line": "street", "postcode": "zip", "city": "city", "country": "country",
    "consent_email": "newsletter", "consent_email_at": "newsletter_at", "consent_phone": "calls", "consent_phone_at": "calls_at",
    "consent_post": "letters", "consent_post_at": "letters_at", "updated_at": "changed"}', priority => 10, track_changes => false) > 0 AS crm;
SELECT unify.add_source('aud_app', 'aud.app', 'id', '{"full_name": "name", "email": "email",
    "consent_email": "optin", "consent_email_at": "optin_at", "updated_at": "changed"}', priority => 20, track_changes => false) > 0 AS app;
SELECT source_name, source_rows FROM unify.sync() WHERE source_name LIKE 'aud\_%' ORDER BY 1;
SELECT persons FROM unify.resolve();
SELECT unify.add_transactions('aud_orders', 'aud.orders',
       '{"source": "aud_crm", "source_key": "customer_id", "order_date": "order_date", "amount": "amount"}') > 0 AS orders;
-- Four customers with the same one order share every score: one segment.
SELECT r ->> 'persons' AS persons FROM (SELECT unify.refresh_segments('2026-04-01') AS r) x;
SELECT segment, count(*) FROM unify.segments GROUP BY 1;
CREATE TEMP VIEW who AS SELECT p.person_id, split_part(p.email, '@', 1) AS who FROM unify.persons p;
GRANT SELECT ON who TO regress_audience_reader;

SET ROLE regress_audience_reader;
-- The channels and the consent each requires.
SELECT channel, consent FROM unify.audience_channels();
-- E-mail: bernd and xaver said yes; anna said no, carla was never asked.
SELECT w.who, a.consent_source, a.consent_at, a.identifiers
FROM unify.audience('Lost', 'email') a JOIN who w USING (person_id) ORDER BY 1;
-- Calls: bernd only; letters: anna only, with her address in display form.
SELECT w.who, a.consent_source, a.identifiers FROM unify.audience('Lost', 'phone') a JOIN who w USING (person_id) ORDER BY 1;
SELECT w.who, a.consent_source, a.identifiers FROM unify.audience('Lost', 'post') a JOIN who w USING (person_id) ORDER BY 1;
RESET ROLE;
-- Google Customer Match: the e-mail consent decides. Each hash is the SHA-256 of Google's
-- normalised form (gmail/googlemail: no dots, no +tag; E.164 with +; lowercase names without
-- the salutation); country and postcode in clear; xaver has no phone and no postcode, so no
-- phone and no address (Google matches the address only on all four fields).
CREATE TEMP TABLE google_expected (who text, email text, phone text, first_name text, last_name text, country_code text, postal_code text);
INSERT INTO google_expected VALUES
    ('bernd.bauer+shop', 'berndbauer@googlemail.com', '+491712345678', 'bernd', 'bauer', 'DE', '01067'),
    ('xaver', 'xaver@example.org', NULL, NULL, NULL, NULL, NULL);
GRANT SELECT ON google_expected TO regress_audience_reader;
-- Meta: e-mail as written (no Gmail rule), phone digits without +, names without punctuation,
-- zip and country hashed too; xaver's names go without an address.
CREATE TEMP TABLE meta_expected (who text, email text, phone text, fn text, ln text, zip text, country text);
INSERT INTO meta_expected VALUES
    ('bernd.bauer+shop', 'bernd.bauer+shop@googlemail.com', '491712345678', 'bernd', 'bauer', '01067', 'de'),
    ('xaver', 'xaver@example.org', NULL, 'xaver', 'zettelmaier', NULL, 'de');
GRANT SELECT ON meta_expected TO regress_audience_reader;
SET ROLE regress_audience_reader;
SELECT w.who,
       g.hashed_email IS NOT DISTINCT FROM encode(sha256(convert_to(e.email, 'UTF8')), 'hex') AS email_ok,
       g.hashed_phone_number IS NOT DISTINCT FROM encode(sha256(convert_to(e.phone, 'UTF8')), 'hex') AS phone_ok,
       g.hashed_first_name IS NOT DISTINCT FROM encode(sha256(convert_to(e.first_name, 'UTF8')), 'hex') AS first_name_ok,
       g.hashed_last_name IS NOT DISTINCT FROM encode(sha256(convert_to(e.last_name, 'UTF8')), 'hex') AS last_name_ok,
       g.country_code, g.postal_code, g.consent_source
FROM unify.audience_google('Lost') g JOIN who w USING (person_id) LEFT JOIN google_expected e USING (who) ORDER BY 1;
SELECT w.who,
       m.email IS NOT DISTINCT FROM encode(sha256(convert_to(e.email, 'UTF8')), 'hex') AS email_ok,
       m.phone IS NOT DISTINCT FROM encode(sha256(convert_to(e.phone, 'UTF8')), 'hex') AS phone_ok,
       m.fn IS NOT DISTINCT FROM encode(sha256(convert_to(e.fn, 'UTF8')), 'hex') AS fn_ok,
       m.ln IS NOT DISTINCT FROM encode(sha256(convert_to(e.ln, 'UTF8')), 'hex') AS ln_ok,
       m.zip IS NOT DISTINCT FROM encode(sha256(convert_to(e.zip, 'UTF8')), 'hex') AS zip_ok,
       m.country IS NOT DISTINCT FROM encode(sha256(convert_to(e.country, 'UTF8')), 'hex') AS country_ok
FROM unify.audience_meta('Lost') m JOIN who w USING (person_id) LEFT JOIN meta_expected e USING (who) ORDER BY 1;
-- The same lists through audience(): the platforms' field names, nothing in clear but country
-- and postcode.
SELECT w.who, jsonb_object_keys(a.identifiers) AS google_field FROM unify.audience('Lost', 'google') a JOIN who w USING (person_id) ORDER BY 1, 2;
SELECT w.who, a.identifiers -> 'address_info' ->> 'postal_code' AS postal_code, a.identifiers -> 'address_info' ->> 'country_code' AS country_code
FROM unify.audience('Lost', 'google') a JOIN who w USING (person_id) ORDER BY 1;
SELECT w.who, a.identifiers = jsonb_strip_nulls(jsonb_build_object('EMAIL', m.email, 'PHONE', m.phone, 'FN', m.fn, 'LN', m.ln,
                                                                   'ZIP', m.zip, 'COUNTRY', m.country)) AS same_as_audience_meta
FROM unify.audience('Lost', 'meta') a JOIN unify.audience_meta('Lost') m USING (person_id) JOIN who w USING (person_id) ORDER BY 1;
-- Meta's published vectors through SQL (customer-information-parameters: em, ph, fn).
SELECT unify.meta_hash_email('John_Smith@gmail.com') = '62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f' AS em,
       unify.meta_hash_phone('(650)555-1212', 'US') = 'e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176' AS ph,
       unify.meta_hash_name('Valéry') = '08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c' AS fn;
-- Google's published normalisations, hashed.
SELECT unify.google_hash_email('cloudy.sanfrancisco+shopping@gmail.com') = encode(sha256(convert_to('cloudysanfrancisco@gmail.com', 'UTF8')), 'hex') AS gmail,
       unify.google_hash_email('user.name+NYC@Example.com') = encode(sha256(convert_to('user.name+nyc@example.com', 'UTF8')), 'hex') AS other_domain,
       unify.google_hash_phone('(800)555-0100', 'US') = encode(sha256(convert_to('+18005550100', 'UTF8')), 'hex') AS phone;
-- What cannot be matched is NULL, never the hash of junk.
SELECT unify.google_hash_email('no address') IS NULL AS email, unify.meta_hash_phone('12') IS NULL AS phone,
       unify.meta_hash_name('1234') IS NULL AS name, unify.meta_hash_country('Atlantis') IS NULL AS country,
       unify.meta_hash_zip('ABCDE', 'DE') IS NULL AS zip;

-- Errors: an unknown channel or segment, a missing argument.
SELECT * FROM unify.audience('Lost', 'fax');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.audience('Nobody', 'email');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.audience(NULL, 'email');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.audience_meta('Nobody');
\echo :LAST_ERROR_SQLSTATE
-- A segment of the map with nobody in it is an empty audience, not an error.
SELECT count(*) AS champions FROM unify.audience('Champions', 'google');
RESET ROLE;

-- The pseudonymous analyst gets no identifiers, not even hashed ones.
SET ROLE regress_audience_analyst;
SELECT count(*) FROM unify.audience('Lost', 'meta');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM unify.audience_google('Lost');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- A later documented opt-in: anna says yes in the app, after her no in the CRM.
INSERT INTO aud.app VALUES (1, 'Anna Alt', 'anna.alt@example.org', true, '2026-03-15 18:30+01', '2026-03-15 18:30+01');
SELECT inserted FROM unify.sync('aud_app');
SELECT persons > 0 AS resolved FROM unify.resolve();
SELECT count(*) AS linked FROM (
    SELECT unify.link(a.record_id, b.record_id, 'test: one customer')
    FROM unify.records a JOIN unify.records b ON a.email = b.email AND a.record_id < b.record_id) x;
SET ROLE regress_audience_reader;
SELECT w.who, a.consent_source, a.consent_at FROM unify.audience('Lost', 'email') a JOIN who w USING (person_id) ORDER BY 1;
SELECT w.who FROM unify.audience_meta('Lost') a JOIN who w USING (person_id) ORDER BY 1;
RESET ROLE;

-- Erasure: xaver's golden record is gone, and with it every audience entry.
SELECT (unify.erase_person((SELECT person_id FROM who WHERE who = 'xaver'), 'GDPR Art. 17 request')) ? 'event_id' AS erased;
SET ROLE regress_audience_reader;
SELECT w.who FROM unify.audience('Lost', 'email') a LEFT JOIN who w USING (person_id) ORDER BY 1;
SELECT count(*) AS google_entries, count(*) FILTER (WHERE g.hashed_email = unify.google_hash_email('xaver@example.org')) AS xaver
FROM unify.audience_google('Lost') g;
SELECT count(*) FILTER (WHERE m.email = unify.meta_hash_email('xaver@example.org')) AS xaver_in_meta FROM unify.audience_meta('Lost') m;
RESET ROLE;
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
