-- The first sync's combined cleaner (issue 27): unify._clean_contact cleans a staged row in one
-- call; sync's query (unify._normalized_query, fenced) reads it. Every column it gives must equal
-- what the single public cleaners give, combined as the unfenced query (which Citus pushes to
-- shards) still combines them: compared here over the sample CRM (crmgen, all four sources with
-- their formats and hard cases) and over written-out hard inputs (NULLs, empty strings,
-- unparseable phones, unknown countries, umlauts, salutations and titles in names and fields).
-- Self-contained: one transaction, rolled back; nothing is registered.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
BEGIN;
SELECT unify._prepare_stage(true);
-- The sample CRM staged as demo/sources.sql maps it (text values, as sync stages them).
INSERT INTO pg_temp.unify_source_rows (source_key, email, first_name, last_name, phone, street_line, postcode, city, country, birth_date)
SELECT 'shop:' || customer_id, email, first_name, last_name, phone, street, zip, city, country, unify._date_text(birthday)
FROM crm.shop_customers;
INSERT INTO pg_temp.unify_source_rows (source_key, salutation, title, first_name, last_name, email, phone, mobile, street, house_number,
                                       postcode, city, country, birth_date, customer_number)
SELECT 'crm:' || kontakt_nr, anrede, titel, vorname, nachname, e_mail, telefon, mobil, strasse, hausnummer, plz, ort, land,
       unify._date_text(geburtsdatum), kontakt_nr
FROM crm.crm_contacts;
INSERT INTO pg_temp.unify_source_rows (source_key, full_name, phone, postcode, city, country, birth_date, email)
SELECT 'pos:' || card_no, full_name, phone, postcode, city, 'DE', unify._date_text(birth_date), email
FROM crm.pos_loyalty_members;
INSERT INTO pg_temp.unify_source_rows (source_key, email, first_name)
SELECT 'newsletter:' || signup_id, email, first_name FROM crm.newsletter_signups;
-- Hard inputs, each field NULL in some rows and empty in others.
INSERT INTO pg_temp.unify_source_rows (source_key, salutation, title, first_name, last_name, full_name, email, phone, mobile,
                                       street, house_number, street_line, postcode, city, country, birth_date)
VALUES ('hard:nulls', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
       ('hard:empty', '', '', '', '', '', '', '', '', '', '', '', '', '', '', ''),
       ('hard:spaces', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', '   ', ' ', ' '),
       ('hard:junk phones', NULL, NULL, 'Jörg', 'Weiß', NULL, 'kein Wert', '12', 'abc', 'Hauptstr.', NULL, NULL, 'x', 'Köln', 'XX', '31.02.1980'),
       ('hard:unknown region', NULL, NULL, NULL, NULL, 'MÜLLER, Hans', 'Hans.Mueller+x@GoogleMail.com', '030 1234567', '0171 1234567',
        NULL, NULL, 'Hauptstraße 12 a', '1067', '  Düsseldorf ', 'ZZ', '1980-05-17'),
       ('hard:austria', 'Frau', NULL, NULL, NULL, 'Prof. Dr. Anna von der Heide', 'anna@müller.at', '01 5321234', '+43 664 1234567',
        'Währinger Str.', '7/3', NULL, 'A-1090', 'Wien', 'Österreich', '17.5.80'),
       ('hard:titles in names', NULL, NULL, 'Herr Dr. Jörg', 'Groß-Öztürk', NULL, 'Max <max@web.de>', '+49 (0)89 123456', NULL,
        NULL, NULL, 'St. Georg-Pl. 3 / 1', 'D-80331', 'München', 'D', '19800517'),
       ('hard:salutation field is a title', 'Dr.-Ing.', NULL, 'ŽOFIE', 'Nováková', NULL, 'mailto:z.n@gmx.de?subject=x', '+420 601 123 456', NULL,
        NULL, NULL, '12 Main Street', '110 00', 'Praha', 'CZ', '17/05/1980'),
       ('hard:family', 'Familie', 'Dipl.-Kfm.', NULL, 'Schmitz', 'Familie Schmitz', 'x.+tag@outlook.de', '0800 1234567', NULL,
        'Am Markt', NULL, NULL, '50667', 'Köln', NULL, NULL),
       ('hard:street only number', 'm', 'PROF. DR. MED.', 'Hans - Peter', NULL, NULL, 'a@b', '+41 44 123 45 67', NULL,
        '/12a', '5', NULL, '8001', 'Zürich', 'CH', 'x'),
       ('hard:house number without street', NULL, NULL, '🅐 Ⅸ', 'O’Neil', NULL, NULL, NULL, NULL,
        NULL, '5', NULL, '123456789', 'New York', 'usa', NULL);

-- Flags and timestamps in some rows (text, boolean and timestamptz: the staged types).
UPDATE pg_temp.unify_source_rows
SET consent_email = length(source_key) % 2 = 0, consent_post = length(source_key) % 3 = 0,
    consent_email_at = timestamptz '2026-03-29 01:30:00+01' + length(source_key) * interval '13 minutes 7.25 seconds',
    updated_at = timestamptz '1999-12-31 23:59:59.999999+00' + length(source_key) * interval '1 day'
WHERE source_key LIKE 'crm:%' OR source_key LIKE 'hard:%' OR source_key LIKE 'pos:1%';
SELECT count(*) AS staged_rows, count(consent_email) AS flags, count(updated_at) AS timestamps FROM pg_temp.unify_source_rows;

-- The raw values sync stores, made in one pass by unify._raw_values: the same jsonb (and text)
-- as the staged row's non-NULL fields but source_key through to_jsonb, in two time zones.
SET LOCAL TIME ZONE 'Europe/Berlin';
SELECT count(*) AS rows,
       count(*) FILTER (WHERE unify._raw_values(s)::text IS DISTINCT FROM jsonb_strip_nulls(to_jsonb(s) - 'source_key')::text) AS differing,
       count(*) FILTER (WHERE unify._raw_values(s) = '{}') AS empty
FROM pg_temp.unify_source_rows AS s;
SELECT unify._raw_values(s) FROM pg_temp.unify_source_rows AS s WHERE source_key IN ('hard:austria', 'hard:nulls', 'hard:empty') ORDER BY source_key;
SET LOCAL TIME ZONE 'America/New_York';
SELECT count(*) FILTER (WHERE unify._raw_values(s)::text IS DISTINCT FROM jsonb_strip_nulls(to_jsonb(s) - 'source_key')::text) AS differing
FROM pg_temp.unify_source_rows AS s;
SELECT unify._raw_values(s) -> 'updated_at' AS updated_at FROM pg_temp.unify_source_rows AS s WHERE source_key = 'hard:austria';
-- The expression of built-ins the query pushed to Citus shards makes them with: the same jsonb.
\set ECHO none
SELECT format('SELECT count(*) FILTER (WHERE (%s)::text IS DISTINCT FROM unify._raw_values(s)::text) AS expression_differing FROM pg_temp.unify_source_rows AS s',
              unify._raw_expression((SELECT jsonb_object_agg(f, f) FROM unnest(unify.canonical_fields()) AS f))) \gexec
\set ECHO all
SELECT unify._raw_expression('{"email": "e", "consent_email": "c", "city": "o"}') AS expression_of_three_fields;
RESET TIME ZONE;
-- Any composite is read the same way; a field of a type no stage has is refused.
SELECT unify._raw_values(ROW('a'::text, NULL::boolean, true)) AS any_row;
SELECT unify._raw_values(ROW(1));
-- A row of more than sixteen fields: its jsonb's 33rd entry (keys and values counted) holds an
-- offset instead of a length, as PostgreSQL's builder writes it; the same text and jsonb.
SELECT unify._raw_values(r)::text = jsonb_strip_nulls(to_jsonb(r))::text AS wide_row_same_text,
       unify._raw_values(r) = jsonb_strip_nulls(to_jsonb(r)) AS wide_row_same_jsonb,
       unify._raw_values(r) -> 'field_19' AS field_19, unify._raw_values(r) ->> 'field_22' AS field_22
FROM (SELECT 'b1'::text AS field_01, 'c2'::text AS field_02, 'd3'::text AS field_03, 'e4'::text AS field_04, true AS field_05, 'g6'::text AS field_06, 'h7'::text AS field_07, 'i8'::text AS field_08, 'j9'::text AS field_09, false AS field_10, 'l11'::text AS field_11, 'm12'::text AS field_12, 'n13'::text AS field_13, 'o14'::text AS field_14, true AS field_15, 'q16'::text AS field_16, 'r17'::text AS field_17, 's18'::text AS field_18, 't19'::text AS field_19, false AS field_20, NULL::text AS field_21, 'Straße ä € 𝄞'::text AS field_22) AS r;
-- sync's raw query is that function over the stage.
SELECT unify._raw_query('{"email": "email"}');

-- The two forms of sync's query over the same staged rows, their raw values left out ({}).
SELECT unify._normalized_query(0, 'SELECT s.*, ''{}''::jsonb AS raw FROM pg_temp.unify_source_rows AS s', true) AS combined,
       unify._normalized_query(0, 'SELECT s.*, ''{}''::jsonb AS raw FROM pg_temp.unify_source_rows AS s', true, false) AS single
\gset
-- The combined form calls _clean_contact; the single form the public cleaners, no _clean_contact.
SELECT position('unify._clean_contact(' IN :'combined') > 0 AS combined_calls_it,
       position('unify._clean_contact(' IN :'single') > 0 AS single_calls_it,
       position('unify.normalize_name(' IN :'single') > 0 AS single_calls_normalize_name;

-- Every row, every column equal (both ways, duplicates counted). The generated statements are
-- not echoed (the two forms are printed by unify._normalized_query's definition).
\set ECHO none
SELECT format('SELECT count(*) AS rows_differing FROM ((%1$s) EXCEPT ALL (%2$s)) a', :'combined', :'single') \gexec
SELECT format('SELECT count(*) AS rows_differing FROM ((%2$s) EXCEPT ALL (%1$s)) a', :'combined', :'single') \gexec
-- The rows gave each cleaner something to do (and something to refuse).
SELECT format($q$SELECT count(*) AS rows, count(first_name) AS first_names, count(last_name) AS last_names,
                        count(email) AS emails, count(email_key) FILTER (WHERE email_key <> email) AS folded_email_keys,
                        count(phone) AS phones, count(mobile) AS mobiles, count(street) AS streets,
                        count(house_number) AS house_numbers, count(postcode) AS postcodes, count(city) AS cities,
                        count(country) AS countries, count(birth_date) AS birth_dates,
                        count(last_name_phonetic) AS phonetics, count(salutation) AS salutations, count(title) AS titles
                 FROM (%s) c$q$, :'combined') \gexec
\set ECHO all

-- The hard rows as the combined cleaner gives them.
\set ECHO none
SELECT format($q$SELECT source_key, first_name, last_name, email, email_key, phone, mobile, street, house_number, postcode,
                        city, country, birth_date, last_name_phonetic, salutation, title
                 FROM (%s) c WHERE source_key LIKE 'hard:%%' ORDER BY source_key$q$, :'combined') \gexec
\set ECHO all

-- Called alone: NULL arguments give a row whose every field is NULL, as each single cleaner
-- gives NULL for NULL; a name field alone fills the name, its phonetic code and nothing else.
SELECT unify._clean_contact(NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL) AS all_null,
       unify._clean_contact(NULL, NULL, NULL, 'Müller', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL) AS last_name_only;
ROLLBACK;
