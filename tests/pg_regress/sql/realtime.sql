-- Real time: changes applied through the queue (unify.process_queue, in small batches between
-- random inserts, updates and deletes) give the same persons as a batch run over the final
-- data (score_pairs + resolve). The data is the sample CRM (schema crm), three of its sources.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
SELECT setseed(0.42);
CREATE SCHEMA rt;
-- About 70% of each source to start with; the rest arrives as new rows.
CREATE TABLE rt.shop AS SELECT * FROM crm.shop_customers;
CREATE TABLE rt.crm AS SELECT * FROM crm.crm_contacts;
CREATE TABLE rt.pos AS SELECT * FROM crm.pos_loyalty_members;
ALTER TABLE rt.shop ADD PRIMARY KEY (customer_id);
ALTER TABLE rt.crm ADD PRIMARY KEY (kontakt_nr);
ALTER TABLE rt.pos ADD PRIMARY KEY (card_no);
CREATE TABLE rt.shop_later AS SELECT * FROM rt.shop WHERE false;
WITH d AS (DELETE FROM rt.shop WHERE random() < 0.3 RETURNING *) INSERT INTO rt.shop_later SELECT * FROM d;
CREATE TABLE rt.crm_later AS SELECT * FROM rt.crm WHERE false;
WITH d AS (DELETE FROM rt.crm WHERE random() < 0.3 RETURNING *) INSERT INTO rt.crm_later SELECT * FROM d;
CREATE TABLE rt.pos_later AS SELECT * FROM rt.pos WHERE false;
WITH d AS (DELETE FROM rt.pos WHERE random() < 0.3 RETURNING *) INSERT INTO rt.pos_later SELECT * FROM d;

SELECT unify.add_source('rt_shop', 'rt.shop', 'customer_id', '{
  "email": "email", "first_name": "first_name", "last_name": "last_name", "phone": "phone",
  "street_line": "street", "postcode": "zip", "city": "city", "country": "country",
  "birth_date": "birthday", "consent_email": "newsletter", "updated_at": "updated_at"}', priority => 10);
SELECT unify.add_source('rt_crm', 'rt.crm', 'kontakt_nr', '{
  "first_name": "vorname", "last_name": "nachname", "email": "e_mail", "phone": "telefon", "mobile": "mobil",
  "street": "strasse", "house_number": "hausnummer", "postcode": "plz", "city": "ort", "country": "land",
  "birth_date": "geburtsdatum", "consent_email": "email_optin", "customer_number": "kontakt_nr",
  "updated_at": "geaendert_am"}', priority => 20);
SELECT unify.add_source('rt_pos', 'rt.pos', 'card_no', '{
  "full_name": "full_name", "phone": "phone", "postcode": "postcode", "city": "city", "country": "''DE''",
  "birth_date": "birth_date", "email": "email", "updated_at": "updated_at"}', priority => 30);

-- Before any full scoring, the queue only keeps unify.records current.
INSERT INTO rt.shop SELECT * FROM rt.shop_later ORDER BY customer_id LIMIT 5;
SELECT unify.process_queue() AS taken, (SELECT count(*) FROM unify.record_persons) AS with_person;
SELECT matching_live FROM unify.status LIMIT 1;

-- The batch start: sync, score, resolve.
SELECT count(*) > 0 AS synced FROM unify.sync();
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
SELECT persons > 0 AS resolved FROM unify.resolve();
SELECT matching_live FROM unify.status LIMIT 1;
-- Every record with a name or an e-mail has its blocking keys indexed.
SELECT count(*) AS records_without_keys FROM unify.records r
WHERE (r.email_key IS NOT NULL OR r.last_name IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM unify.block_keys k WHERE k.record_id = r.record_id);

-- A random sequence of changes, the queue drained in batches of 40 in between.
CREATE FUNCTION rt.drain() RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int; total int := 0;
BEGIN
    LOOP
        n := unify.process_queue(40);
        total := total + n;
        EXIT WHEN n = 0;
    END LOOP;
    RETURN total;
END $$;
-- New rows, in three waves.
INSERT INTO rt.shop SELECT * FROM rt.shop_later WHERE customer_id NOT IN (SELECT customer_id FROM rt.shop) AND random() < 0.5;
INSERT INTO rt.crm SELECT * FROM rt.crm_later WHERE random() < 0.5;
SELECT rt.drain() > 0 AS drained;
INSERT INTO rt.pos SELECT * FROM rt.pos_later;
INSERT INTO rt.crm SELECT * FROM rt.crm_later WHERE kontakt_nr NOT IN (SELECT kontakt_nr FROM rt.crm);
SELECT rt.drain() > 0 AS drained;
INSERT INTO rt.shop SELECT * FROM rt.shop_later WHERE customer_id NOT IN (SELECT customer_id FROM rt.shop);
-- Corrected e-mails: 30 shop customers get the address of another customer (joins persons).
SELECT rt.drain() > 0 AS drained;
WITH a AS (SELECT customer_id, row_number() OVER (ORDER BY random()) n FROM rt.shop),
     b AS (SELECT e_mail AS email, row_number() OVER (ORDER BY random()) n FROM rt.crm WHERE e_mail IS NOT NULL)
UPDATE rt.shop s SET email = b.email FROM a JOIN b USING (n) WHERE s.customer_id = a.customer_id AND a.n <= 30;
-- Moves: 30 CRM contacts get another contact's address.
WITH a AS (SELECT kontakt_nr, row_number() OVER (ORDER BY random()) n FROM rt.crm),
     b AS (SELECT strasse, hausnummer, plz, ort, row_number() OVER (ORDER BY random()) n FROM rt.crm)
UPDATE rt.crm c SET strasse = b.strasse, hausnummer = b.hausnummer, plz = b.plz, ort = b.ort
FROM a JOIN b USING (n) WHERE c.kontakt_nr = a.kontakt_nr AND a.n <= 30;
SELECT rt.drain() > 0 AS drained;
-- Married names and new phones.
UPDATE rt.crm SET nachname = 'Neumann-' || nachname WHERE kontakt_nr IN (SELECT kontakt_nr FROM rt.crm ORDER BY random() LIMIT 20);
UPDATE rt.pos SET phone = NULL WHERE card_no IN (SELECT card_no FROM rt.pos ORDER BY random() LIMIT 20);
-- Deletes: persons lose records, some all of them (a split or a removal).
DELETE FROM rt.shop WHERE customer_id IN (SELECT customer_id FROM rt.shop ORDER BY random() LIMIT 40);
DELETE FROM rt.crm WHERE kontakt_nr IN (SELECT kontakt_nr FROM rt.crm ORDER BY random() LIMIT 25);
SELECT rt.drain() > 0 AS drained;
-- Two records made the same person, then one changed back within the same batch.
UPDATE rt.pos p SET email = 'zwilling@example.org', full_name = 'Jana Zwilling', birth_date = '1990-01-01'
WHERE card_no IN (SELECT card_no FROM rt.pos ORDER BY card_no LIMIT 2);
SELECT rt.drain() AS drained;
UPDATE rt.pos p SET full_name = 'Jonas Zwilling', birth_date = '1993-09-09'
WHERE card_no = (SELECT min(card_no) FROM rt.pos);
SELECT rt.drain() AS drained;
-- Each record belongs to exactly one existing person; no person without records; queue empty.
SELECT count(*) FILTER (WHERE r.person_id IS NULL) AS without_person,
       count(*) FILTER (WHERE p.person_id IS NULL) AS person_missing,
       (SELECT count(*) FROM unify.persons x WHERE NOT EXISTS (SELECT 1 FROM unify.record_persons y WHERE y.person_id = x.person_id)) AS empty_persons,
       (SELECT count(*) FROM unify.change_queue) AS queued
FROM unify.records LEFT JOIN unify.record_persons r USING (record_id) LEFT JOIN unify.persons p USING (person_id);
-- The records equal the sources.
SELECT (SELECT count(*) FROM rt.shop) + (SELECT count(*) FROM rt.crm) + (SELECT count(*) FROM rt.pos)
     = (SELECT count(*) FROM unify.records) AS records_match_sources;

-- The incremental result, by source row: its person's smallest source row, its household's,
-- and the golden record.
CREATE TEMP VIEW partition AS
SELECT r.source_id, r.source_key,
       min(r.source_id::text || ':' || r.source_key) OVER (PARTITION BY rp.person_id) AS person_of,
       min(r.source_id::text || ':' || r.source_key) OVER (PARTITION BY p.household_id) AS household_of,
       (p.first_name, p.last_name, p.email, p.phone, p.street, p.postcode, p.birth_date, p.record_count,
        p.consent_email, p.sources)::text AS golden
FROM unify.records r JOIN unify.record_persons rp USING (record_id) JOIN unify.persons p ON p.person_id = rp.person_id;
CREATE TEMP TABLE incremental AS SELECT * FROM partition;
CREATE TEMP TABLE incremental_pairs AS SELECT record_a, record_b, is_match, round(match_weight::numeric, 6) AS w FROM unify.pairs;

-- The batch run over the final data.
SELECT count(*) > 0 AS rescored FROM unify.score_pairs();
SELECT merges, splits FROM unify.resolve();
CREATE TEMP TABLE batch AS SELECT * FROM partition;
SELECT count(*) AS records,
       count(*) FILTER (WHERE i.person_of IS DISTINCT FROM b.person_of) AS other_person,
       count(*) FILTER (WHERE i.household_of IS DISTINCT FROM b.household_of) AS other_household,
       count(*) FILTER (WHERE i.golden IS DISTINCT FROM b.golden) AS other_golden
FROM incremental i FULL JOIN batch b USING (source_id, source_key);
-- The match decisions agree. (Below the match threshold the stored pairs may differ a little:
-- name frequencies drift with every change, and incremental scoring re-scores only the pairs
-- of changed records and of those sharing an e-mail or phone with them.)
SELECT count(*) FILTER (WHERE coalesce(i.is_match, false) <> coalesce(b.is_match, false)) AS other_match_decision,
       count(*) FILTER (WHERE b.is_match) > 100 AS many_matches
FROM incremental_pairs i
FULL JOIN (SELECT record_a, record_b, is_match FROM unify.pairs) b USING (record_a, record_b);
-- The changes did merge and split persons on the way.
SELECT count(*) FILTER (WHERE event = 'merge') > 0 AS merged, count(*) FILTER (WHERE event = 'split') > 0 AS split,
       count(*) FILTER (WHERE event = 'remove') > 0 AS removed
FROM unify.identity_events WHERE rule = 'process_queue';
-- A household held together by one person comes apart when that person goes: Ada shares an
-- address with Rolf, Rolf a landline with Bea and Dora; Rolf's row is deleted. (The landline
-- stays shared, so no one else's records are looked at again: only Rolf's household tells.)
INSERT INTO rt.shop (customer_id, email, first_name, last_name, phone, street, zip, city, country, birthday)
VALUES (900001, 'ada.quast@example.org', 'Ada', 'Quast', '030 5550101', 'Lindenallee 3', '12345', 'Berlin', 'DE', '1961-02-03'),
       (900002, 'rolf.yilmaz@example.org', 'Rolf', 'Yilmaz', '030 5550202', 'Lindenallee 3', '12345', 'Berlin', 'DE', '1972-04-05'),
       (900003, 'bea.zorn@example.org', 'Bea', 'Zorn', '030 5550202', 'Birkenweg 9', '54321', 'Bonn', 'DE', '1983-06-07'),
       (900004, 'dora.zorn@example.org', 'Dora', 'Zorn', '030 5550202', 'Birkenweg 11', '54321', 'Bonn', 'DE', '1955-08-09');
SELECT rt.drain() AS drained;
CREATE TEMP VIEW bridge AS
SELECT r.source_key, p.person_id, p.household_id FROM unify.records r JOIN unify.record_persons USING (record_id) JOIN unify.persons p USING (person_id)
WHERE r.source_id = (SELECT source_id FROM unify.sources WHERE name = 'rt_shop') AND r.source_key IN ('900001', '900002', '900003', '900004');
SELECT count(DISTINCT person_id) AS persons, count(DISTINCT household_id) AS households FROM bridge;
DELETE FROM rt.shop WHERE customer_id = 900002;
SELECT rt.drain() AS drained;
SELECT count(DISTINCT person_id) AS persons, count(DISTINCT household_id) AS households,
       count(DISTINCT household_id) FILTER (WHERE source_key IN ('900003', '900004')) AS households_of_bea_and_dora FROM bridge;

-- A model trained now reaches the queue's scoring at once: changes score with its name
-- frequencies (each backend reads them once per model version), as explain_match recomputes
-- them; and so does the next version, trained after 150 contacts became Zacharias.
CREATE FUNCTION rt.rescored_check(email_prefix text, first_name text,
    OUT pairs boolean, OUT other_weight bigint, OUT frequency_adjusted boolean, OUT adjusted_on_name boolean)
LANGUAGE sql AS $$
SELECT count(*) > 10, count(*) FILTER (WHERE abs(p.match_weight - e.weight) > 1e-9),
       count(*) FILTER (WHERE e.frequency_adjusted) > 0, count(*) FILTER (WHERE e.on_name) > 0
FROM unify.pairs p
CROSS JOIN LATERAL (SELECT sum(x.weight) AS weight, bool_or(x.note LIKE 'u adjusted%') AS frequency_adjusted,
                           bool_or(x.note LIKE 'u adjusted%' AND x.value_a = first_name) AS on_name
                    FROM unify.explain_match(p.record_a, p.record_b) x) e
WHERE EXISTS (SELECT 1 FROM unify.records r WHERE r.record_id IN (p.record_a, p.record_b) AND r.email LIKE email_prefix || '%')
$$;
SELECT count(*) > 0 AS trained FROM unify.train();
UPDATE rt.shop SET email = 'neu.' || email
WHERE customer_id IN (SELECT customer_id FROM rt.shop WHERE email IS NOT NULL ORDER BY customer_id LIMIT 40);
SELECT rt.drain() AS drained;
SELECT * FROM rt.rescored_check('neu.', NULL);
UPDATE rt.crm SET vorname = 'Zacharias' WHERE kontakt_nr IN (SELECT kontakt_nr FROM rt.crm ORDER BY kontakt_nr LIMIT 150);
SELECT rt.drain() AS drained;
SELECT count(*) > 0 AS trained_again FROM unify.train();
UPDATE rt.crm SET e_mail = 'neu2.' || e_mail
WHERE kontakt_nr IN (SELECT kontakt_nr FROM rt.crm WHERE vorname = 'Zacharias' AND e_mail IS NOT NULL ORDER BY kontakt_nr LIMIT 40);
SELECT rt.drain() AS drained;
SELECT * FROM rt.rescored_check('neu2.', 'zacharias');
SELECT f.frequency > 0.05 AS zacharias_common_now FROM unify.name_frequencies f
WHERE f.field = 'first_name' AND f.value = 'zacharias' AND f.model_version = (SELECT max(version) FROM unify.model);
SELECT last_batch_rows > 0 AS stats_kept, processed_rows > 500 AS many FROM unify.status LIMIT 1;

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
