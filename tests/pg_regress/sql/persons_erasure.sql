-- Erasure complete: after unify.erase_person no table of the extension holds any of the
-- person's names, e-mails, phones, street, birth date or source keys, wherever they had spread
-- (a steward's reason, a batch in flight, a training report, blocking figures, name
-- frequencies, dead letters, segment history); the tombstone is a keyed hash, and a sync does
-- not bring the person back. Every column of every table of the extension is scanned for every
-- value. Self-contained: one transaction, rolled back, and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET datestyle = ISO, YMD;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
CREATE SCHEMA er;
CREATE TABLE er.crm (nr text PRIMARY KEY, vorname text, nachname text, geboren date, email text, telefon text, strasse text, plz text, ort text);
CREATE TABLE er.shop (id text PRIMARY KEY, name text, mail text, street text, zip text);
INSERT INTO er.crm VALUES
    ('XQ-4711-A', 'Xaver', 'Zettelmaier', '1961-02-03', 'XQ.Zettelmaier@Example.org', '0171 9876543', 'Quittenweg 17', '80331', 'München'),
    ('AB-1000-A', 'Anna', 'Berg', '1970-01-01', 'anna.berg@example.org', '0171 1111111', 'Lindenstraße 1', '10115', 'Berlin'),
    ('AB-1001-A', 'Bruno', 'Berg', '1968-03-03', 'bruno.berg@example.org', '0171 2222222', 'Lindenstraße 1', '10115', 'Berlin');
INSERT INTO er.shop VALUES
    ('XQ-4711-B', 'Xaver Zettelmaier', 'xq.zettelmaier@example.org', 'Quittenweg 17', '80331'),
    ('AB-1000-B', 'Anna Berg', 'anna.berg@example.org', 'Lindenstraße 1', '10115');
SELECT unify.add_source('er_crm', 'er.crm', 'nr', '{"first_name": "vorname", "last_name": "nachname", "birth_date": "geboren",
    "email": "email", "phone": "telefon", "street_line": "strasse", "postcode": "plz", "city": "ort"}') > 0 AS registered;
SELECT unify.add_source('er_shop', 'er.shop', 'id', '{"full_name": "name", "email": "mail", "street_line": "street", "postcode": "zip"}') > 0 AS registered;
SELECT count(*) AS synced FROM unify.sync() WHERE source_name LIKE 'er\_%';
SELECT unify.set_model(unify.default_model()) > 0 AS model_set;
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
SELECT persons > 0 AS resolved FROM unify.resolve();
CREATE TEMP VIEW xaver AS
SELECT DISTINCT rp.person_id FROM unify.records r JOIN unify.sources s USING (source_id) JOIN unify.record_persons rp USING (record_id) WHERE s.name LIKE 'er\_%' AND r.source_key LIKE 'XQ-%';
SELECT count(*) AS xaver_persons FROM xaver;
-- Where the values spread besides records and persons: a steward's reason, a batch between its
-- stages, a training report, blocking figures, name frequencies, a dead letter, segments.
SELECT unify.link((SELECT min(r.record_id) FROM unify.records r WHERE r.source_key LIKE 'XQ-%'),
                  (SELECT max(r.record_id) FROM unify.records r WHERE r.source_key LIKE 'XQ-%'),
                  'Xaver Zettelmaier called, xq.zettelmaier@example.org, 0171 9876543') IS NOT NULL AS linked;
INSERT INTO unify.queue_work (stage, record_ids, person_ids, before, source_rows, taken_at, taken_by)
SELECT 'rescore', array_agg(r.record_id), '{}', jsonb_agg(jsonb_build_object('record_id', r.record_id, 'first_name', r.first_name,
       'last_name', r.last_name, 'email_key', r.email_key, 'phone', r.phone)), count(*), now(), 'test'
FROM unify.records r WHERE r.source_key LIKE 'XQ-%' OR r.source_key = 'AB-1000-A';
UPDATE unify.model SET report = jsonb_build_object('rules', jsonb_build_array(jsonb_build_object('rule', 'email', 'largest_skipped_key', 'xq.zettelmaier@example.org')))
WHERE version = (SELECT max(version) FROM unify.model);
INSERT INTO unify.blocking_stats (rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block, largest_skipped_key)
VALUES ('test_rule', 0, 0, 0, 1, 99, 'zettelmaier');
INSERT INTO unify.name_frequencies (model_version, field, value, frequency)
SELECT max(version), f.field, f.value, f.frequency FROM unify.model,
       (VALUES ('last_name', 'zettelmaier', 0.2), ('first_name', 'xaver', 0.2), ('last_name', 'berg', 0.4)) f (field, value, frequency)
GROUP BY f.field, f.value, f.frequency;
INSERT INTO unify.dead_letters (source_id, source_key, sqlstate, message)
SELECT s.source_id, 'XQ-4711-B', '22007', 'invalid date "Xaver Zettelmaier 1961"' FROM unify.sources s WHERE s.name = 'er_shop';
-- Quoted where the records are others': a steward's reason between the Bergs, another key's failure.
SELECT unify.unlink((SELECT min(r.record_id) FROM unify.records r WHERE r.source_key = 'AB-1000-A'),
                    (SELECT min(r.record_id) FROM unify.records r WHERE r.source_key = 'AB-1001-A'),
                    'not the same, checked with xq.zettelmaier@example.org') IS NOT NULL AS unlinked;
INSERT INTO unify.dead_letters (source_id, source_key, sqlstate, message)
SELECT s.source_id, 'AB-1000-B', '22023', 'mail forwarded to Zettelmaier' FROM unify.sources s WHERE s.name = 'er_shop';
INSERT INTO unify.segments (person_id, last_purchase, frequency, monetary, r_score, f_score, m_score, segment, segment_since)
SELECT person_id, current_date, 3, 100, 5, 4, 3, 'Champions', current_date FROM xaver;
INSERT INTO unify.segment_history (person_id, from_segment, to_segment, as_of) SELECT person_id, NULL, 'Champions', current_date FROM xaver;

-- Every value Xaver ever had, normalized or as written, and his source keys.
CREATE TEMP TABLE xaver_values (value text);
INSERT INTO xaver_values VALUES ('xaver'), ('zettelmaier'), ('xq.zettelmaier@example.org'), ('9876543'), ('quittenweg'),
    ('1961-02-03'), ('XQ-4711-A'), ('XQ-4711-B');
-- Hits of those values in any column of any table of the extension.
CREATE FUNCTION pg_temp.scan() RETURNS TABLE (relation text, "column" text, value text) LANGUAGE plpgsql AS $$
DECLARE
    col record;
    v text;
    n bigint;
BEGIN
    FOR col IN SELECT c.oid::regclass::text AS rel, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
               WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY 1, 2 LOOP
        FOR v IN SELECT x.value FROM xaver_values x LOOP
            EXECUTE format('SELECT count(*) FROM %s WHERE %I::text ILIKE %L', col.rel, col.attname, '%' || v || '%') INTO n;
            IF n > 0 THEN
                relation := col.rel; "column" := col.attname; value := v;
                RETURN NEXT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;
-- Before: the values are in many places (the scan finds them).
SELECT relation, "column", count(*) AS values_found FROM pg_temp.scan() GROUP BY 1, 2 ORDER BY 1, 2;

SELECT unify.erase_person((SELECT person_id FROM xaver), 'GDPR Art. 17 request of Xaver Zettelmaier') - 'event_id' AS erased;
-- After: nowhere.
SELECT * FROM pg_temp.scan();
-- The other persons keep what is theirs; the common name keeps its frequency.
SELECT count(*) AS berg_records FROM unify.records WHERE last_name = 'berg';
SELECT value, frequency FROM unify.name_frequencies WHERE value IN ('berg', 'zettelmaier', 'xaver') ORDER BY 1;
-- The tombstones are keyed: not the plain SHA-256 of a key, which anyone could recompute.
SELECT count(*) AS tombstones,
       count(*) FILTER (WHERE key_hash IN (sha256(convert_to('XQ-4711-A', 'UTF8')), sha256(convert_to('XQ-4711-B', 'UTF8')))) AS plain_hashes,
       count(*) FILTER (WHERE key_hash IN (unify._key_hash((SELECT secret FROM unify._secret), 'XQ-4711-A'),
                                           unify._key_hash((SELECT secret FROM unify._secret), 'XQ-4711-B'))) AS keyed_hashes
FROM unify.erasures;
-- A sync does not bring him back.
SELECT count(*) AS synced FROM unify.sync() WHERE source_name LIKE 'er\_%';
SELECT count(*) AS xaver_records FROM unify.records WHERE source_key LIKE 'XQ-%';
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
