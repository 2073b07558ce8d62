-- Golden records people can use (issue 25): display values beside the match keys, made from the
-- written value of the record each field survived from (umlauts, proper case of all-caps and
-- all-small values, particles, compound names, street as written); salutation and academic
-- title from their fields or from the words in front of a name, never from a first name; the
-- letter salutation of customer_360. Records are joined into persons by must-link where a case
-- needs two, so the cases do not depend on the model.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back, and the sequences
-- it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';

-- The rules one by one, as functions.
SELECT v, unify.display_name(v) FROM (VALUES ('MÜLLER'), ('müller'), ('mueller'), ('GROẞ'), ('STRAUß'), ('HANS-PETER'),
    ('Hans - Peter'), ('VON DER HEIDE'), ('von der heide'), ('O’BRIEN'), ('McDonald'), ('Dr. Anna'), ('Heide jun'),
    ('  Anna   Maria '), ('Herr'), ('123')) AS t (v);
SELECT v, (unify.split_full_name(v)).* FROM (VALUES ('Hans von der Heide jun.'), ('Dr. Anna Schmidt'), ('Herr Hans Meier'),
    ('Schmidt, Anna'), ('Frau Prof. Dr. med. Eva Roth'), ('Familie Schulz'), ('Frauke Meier'), ('Li Jun'), ('MÜLLER, Hans')) AS t (v);
SELECT v, unify.normalize_salutation(v) FROM (VALUES ('Herr'), ('Hr.'), ('HERRN'), ('Frau'), ('Fr.'), ('Mr'), ('Mrs'), ('Ms'),
    ('Frau Dr.'), ('divers'), ('Familie'), ('Eheleute'), ('Herr und Frau'), ('m'), ('w'), ('d'), ('f'), ('Firma'), ('keine Angabe')) AS t (v);
SELECT v, unify.normalize_title(v) FROM (VALUES ('Dr.'), ('dr'), ('PROF. DR. MED.'), ('Prof. Dr.'), ('Dr.med.dent.'), ('Dipl.-Ing.'),
    ('Herr Dr.'), ('MBA')) AS t (v);
SELECT unify.letter_salutation(s, t, f, l) FROM (VALUES ('Frau', 'Dr.', 'Anna', 'Müller'), ('Herr', 'Prof.', 'Jan', 'Schulz'),
    ('Herr', 'Prof. Dr. med.', 'Jan', 'Schulz'), ('Herr', 'Dipl.-Ing.', 'Hans', 'von der Heide'), (NULL, NULL, 'Kim', 'Schulz'),
    ('divers', NULL, 'Kim', 'Schulz'), ('Familie', NULL, NULL, 'Müller'), ('Frau', NULL, 'Anna', NULL), (NULL, NULL, NULL, NULL)) AS t (s, t, f, l);

BEGIN;
CREATE SCHEMA disp;
CREATE TABLE disp.crm (
    id int PRIMARY KEY, anrede text, titel text, vorname text, nachname text, email text, telefon text,
    strasse text, hausnr text, plz text, ort text, geaendert timestamptz
);
INSERT INTO disp.crm VALUES
    (1, 'Frau', 'Dr.', 'ANNA', 'MÜLLER', 'Anna.Mueller@Example.org', '030 1234567', 'Kölner Platz', '3', '10115', 'Berlin', '2025-01-01'),
    (2, 'Hr.', 'PROF. DR. MED.', 'hans-peter', 'VON DER HEIDE', 'hp@example.org', '0911 123456', 'KARL-MARX-STR.', '12 a', '90402', 'NÜRNBERG', '2025-01-01'),
    (3, NULL, NULL, 'Kim', 'Schulz', 'kim@example.org', '+41 44 123 45 67', 'hauptstrasse', '5', '8001', 'zürich', '2025-01-01'),
    (4, 'd', NULL, 'Alex', 'Berger', 'alex@example.org', NULL, 'Straße des 17. Juni', '135', '10623', 'Berlin', '2025-01-01'),
    (5, 'Familie', NULL, NULL, 'Weber', 'familie.weber@example.org', NULL, 'Gartenweg', '2', '80331', 'MÜNCHEN', '2025-01-01'),
    (6, 'm', NULL, 'jürgen', 'mueller', 'juergen@example.org', '0171 5550001', 'Ring', '1', '50667', 'köln', '2025-01-01'),
    (7, 'Frau', NULL, 'Lena', 'Graf', 'lena@xn--mller-kva.de', NULL, 'Am Markt', '1', '60311', 'FRANKFURT AM MAIN', '2025-01-01');
-- A till system with the name in one field, salutation and title inside it.
CREATE TABLE disp.pos (card int PRIMARY KEY, kunde text, mail text, ort text, changed timestamptz);
INSERT INTO disp.pos VALUES
    (11, 'Herr Dr. Hans von der Heide jun.', 'hans.jun@example.org', 'Hamburg', '2025-01-01'),
    (12, 'Schmidt, Anna', 'anna.schmidt@example.org', 'Bonn', '2025-01-01'),
    (13, 'Frau Prof. Eva Roth', 'eva@example.org', 'Kiel', '2025-01-01'),
    -- Anna Müller again, newer: MÜNCHEN-style all-caps city of her new home, and no salutation here.
    (14, 'ANNA MÜLLER', 'anna.mueller@example.org', 'MUENCHEN', '2026-01-01');
SELECT unify.add_source('d_crm', 'disp.crm', 'id', '{"salutation": "anrede", "title": "titel", "first_name": "vorname",
    "last_name": "nachname", "email": "email", "phone": "telefon", "street": "strasse", "house_number": "hausnr",
    "postcode": "plz", "city": "ort", "country": "CASE WHEN plz = ''8001'' THEN ''CH'' ELSE ''DE'' END",
    "updated_at": "geaendert"}', priority => 10, track_changes => false) > 0 AS crm;
SELECT unify.add_source('d_pos', 'disp.pos', 'card', '{"full_name": "kunde", "email": "mail", "city": "ort",
    "updated_at": "changed"}', priority => 20, track_changes => false) > 0 AS pos;
SELECT source_name, source_rows FROM unify.sync() WHERE source_name LIKE 'd\_%' ORDER BY 1;
-- The records keep the keys, and salutation and title from their fields or the name.
SELECT s.name, r.source_key, r.first_name, r.last_name, r.salutation, r.title, r.street, r.city
FROM unify.records r JOIN unify.sources s USING (source_id) ORDER BY s.name, r.source_key::int;
SELECT persons FROM unify.resolve();
-- Anna's two records are one person.
SELECT unify.link((SELECT r.record_id FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'd_crm' AND r.source_key = '1'),
                  (SELECT r.record_id FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'd_pos' AND r.source_key = '14'),
                  'test: one customer') > 0 AS linked;

-- Keys and display values side by side.
SELECT p.first_name, p.first_name_display, p.last_name, p.last_name_display, p.salutation, p.title
FROM unify.persons p ORDER BY p.last_name_display, p.first_name_display;
SELECT p.last_name_display, p.street, p.street_display, p.house_number, p.postcode, p.city, p.city_display
FROM unify.persons p WHERE p.street IS NOT NULL ORDER BY p.last_name_display;
SELECT p.last_name_display, p.phone, p.phone_display, p.mobile, p.mobile_display, p.email, p.email_display
FROM unify.persons p WHERE p.phone IS NOT NULL OR p.mobile IS NOT NULL OR p.email LIKE '%xn--%' ORDER BY p.last_name_display;
-- Anna: the address survives from her newer record (as one unit) and its city is shown as that
-- record wrote it; her salutation and title from the CRM, the only record with them; the name
-- from the newer record as written there, recased.
SELECT first_name, last_name, street, city, salutation, title, letter_salutation
FROM unify.customer_360 WHERE email = 'anna.mueller@example.org';
-- customer_360: display values under the plain names, and the letter salutation.
SELECT first_name, last_name, street, house_number, postcode, city, phone, phone_display, letter_salutation
FROM unify.customer_360 ORDER BY last_name, first_name;
-- Survivorship applies to the new fields too.
SELECT field, rule FROM unify.survivorship_rules WHERE field IN ('salutation', 'title') ORDER BY 1;
-- The pseudonymous view still shows no name, salutation or address.
SELECT count(*) AS identifying_columns FROM information_schema.columns
WHERE table_schema = 'unify' AND table_name = 'analyst_persons'
  AND column_name IN ('first_name', 'last_name', 'salutation', 'title', 'letter_salutation', 'street', 'city', 'email',
                      'phone', 'mobile', 'phone_display', 'mobile_display');
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
