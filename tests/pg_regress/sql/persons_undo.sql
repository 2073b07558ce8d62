-- Undo gives ids back (issue 25): after a merge is undone (unmerge, unlink, or a source change
-- that splits the merged person, through the queue and through resolve()) the separated records
-- come back under the person id they had before the merge, never a new one; the split event
-- names the id and the event it undoes. A chain of merges undone step by step; the id stays with
-- the person's own records even where the part merged in is larger; an erased person's id never
-- comes back. The ids printed are the ones drawn from the fixture's unused sequence.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
CREATE SCHEMA ud;
-- Stewardship: customers nobody would match, joined and separated by hand.
CREATE TABLE ud.crm (nr int PRIMARY KEY, vorname text, nachname text, geboren date, email text, ort text);
INSERT INTO ud.crm VALUES
    (1, 'Anton', 'Amsel', '1961-01-01', 'anton.amsel@example.org', 'Augsburg'),
    (2, 'Berta', 'Buche', '1962-02-02', 'berta.buche@example.org', 'Bremen'),
    (3, 'Carl', 'Ciesla', '1963-03-03', 'carl.ciesla@example.org', 'Chemnitz'),
    (4, 'Dora', 'Dachs', '1964-04-04', 'dora.dachs@example.org', 'Dresden'),
    (5, 'Egon', 'Esche', '1965-05-05', 'egon.esche@example.org', 'Essen'),
    (6, 'Frida', 'Fink', '1966-06-06', 'frida.fink@example.org', 'Fulda'),
    (7, 'Gustav', 'Gans', '1967-07-07', 'gustav.gans@example.org', 'Gera'),
    (8, 'Hanna', 'Hase', '1968-08-08', 'hanna.hase@example.org', 'Hagen'),
    (9, 'Ida', 'Igel', '1969-09-09', 'ida.igel@example.org', 'Ingolstadt'),
    (10, 'Jakob', 'Jung', '1970-10-10', 'jakob.jung@example.org', 'Jena'),
    (11, 'Karla', 'Kranich', '1971-11-11', 'karla.kranich@example.org', 'Kassel');
SELECT unify.add_source('ud_crm', 'ud.crm', 'nr', '{"first_name": "vorname", "last_name": "nachname", "birth_date": "geboren",
    "email": "email", "city": "ort"}', track_changes => false) > 0 AS registered;
SELECT source_rows FROM unify.sync('ud_crm');
SELECT persons, new_persons, merges, splits FROM unify.resolve();
CREATE TEMP VIEW who AS
SELECT s.name AS source, r.source_key AS key, r.record_id, rp.person_id, rp.former_person_ids
FROM unify.records r JOIN unify.sources s USING (source_id) LEFT JOIN unify.record_persons rp ON rp.record_id = r.record_id
WHERE s.name LIKE 'ud\_%';
CREATE FUNCTION pg_temp.rec(src text, k text) RETURNS bigint LANGUAGE sql AS $$
    SELECT record_id FROM who WHERE source = src AND key = k
$$;
-- Every customer has the id of its row number.
SELECT key, person_id, former_person_ids FROM who ORDER BY record_id;
-- The identity events since the last mark, and a new mark.
CREATE FUNCTION pg_temp.events_since(mark bigint) RETURNS TABLE (event_id bigint, event text, person_id bigint, related_ids bigint[], details jsonb)
LANGUAGE sql AS $$
    SELECT e.event_id, e.event, e.person_id, e.related_ids, e.details FROM unify.identity_events e
    WHERE e.event_id > mark AND e.event <> 'erase' ORDER BY e.event_id
$$;

-- link, then unmerge: Berta (2) comes back as 2, not under a new id.
SELECT coalesce(max(event_id), 0) AS mark FROM unify.identity_events \gset
SELECT unify.link(pg_temp.rec('ud_crm', '1'), pg_temp.rec('ud_crm', '2'), 'test: same customer?') AS linked_into;
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('1', '2') ORDER BY key;
SELECT unify.unmerge(1, 'test: two customers after all') AS persons;
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('1', '2') ORDER BY key;
-- The split names the id it gave back and the merge it undoes.
SELECT * FROM pg_temp.events_since(:mark);
SELECT person_id, first_name, last_name, record_count FROM unify.persons WHERE person_id IN (1, 2) ORDER BY 1;

-- link, then unlink: Dora (4) comes back as 4.
SELECT coalesce(max(event_id), 0) AS mark FROM unify.identity_events \gset
SELECT unify.link(pg_temp.rec('ud_crm', '3'), pg_temp.rec('ud_crm', '4')) AS linked_into;
SELECT unify.unlink(pg_temp.rec('ud_crm', '3'), pg_temp.rec('ud_crm', '4')) AS persons;
SELECT * FROM pg_temp.events_since(:mark);

-- A chain: Egon (5) absorbs Frida (6), then Gustav (7); unlinking Gustav gives 7 back and
-- Frida stays with Egon.
SELECT unify.link(pg_temp.rec('ud_crm', '5'), pg_temp.rec('ud_crm', '6')) AS linked_into;
SELECT unify.link(pg_temp.rec('ud_crm', '5'), pg_temp.rec('ud_crm', '7')) AS linked_into;
SELECT unify.unlink(pg_temp.rec('ud_crm', '5'), pg_temp.rec('ud_crm', '7')) AS persons;
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('5', '6', '7') ORDER BY key;

-- A chain inside a chain: Ida (9) absorbs Jakob (10), then Hanna (8) absorbs Ida. Undone one
-- merge at a time: unlinking Hanna and Ida gives Ida back her id with Jakob still in it
-- (Hanna, one record, keeps 8 although the part that leaves is larger), then unlinking Ida and
-- Jakob gives Jakob his.
SELECT unify.link(pg_temp.rec('ud_crm', '9'), pg_temp.rec('ud_crm', '10')) AS linked_into;
SELECT unify.link(pg_temp.rec('ud_crm', '8'), pg_temp.rec('ud_crm', '9')) AS linked_into;
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('8', '9', '10') ORDER BY record_id;
SELECT unify.unlink(pg_temp.rec('ud_crm', '8'), pg_temp.rec('ud_crm', '9')) AS persons;
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('8', '9', '10') ORDER BY record_id;
SELECT unify.unlink(pg_temp.rec('ud_crm', '9'), pg_temp.rec('ud_crm', '10')) AS persons;
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('8', '9', '10') ORDER BY record_id;
-- Resolving everything again changes nothing.
SELECT merges, splits, new_persons FROM unify.resolve();

-- Erasure: Lotte's two rows (12, 13) are one person (linked before they ever had one), merged
-- into Karla (11); a steward separates row 12, which gets Lotte's id back, then Lotte is erased.
-- Row 13, still with Karla, never goes back to the erased id: separated, it gets a new one.
INSERT INTO ud.crm VALUES (12, 'Lotte', 'Lerche', '1972-12-12', 'lotte.lerche@example.org', 'Lübeck'),
                          (13, 'Lotte', 'Lerche', '1972-12-12', 'l.lerche@example.org', 'Lübeck');
SELECT inserted FROM unify.sync('ud_crm');
SELECT unify.link(pg_temp.rec('ud_crm', '12'), pg_temp.rec('ud_crm', '13')) AS lotte;
SELECT unify.link(pg_temp.rec('ud_crm', '11'), pg_temp.rec('ud_crm', '13')) AS linked_into;
SELECT unify.unlink(pg_temp.rec('ud_crm', '12'), pg_temp.rec('ud_crm', '13')) AS persons;
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('11', '12', '13') ORDER BY record_id;
SELECT unify.erase_person((SELECT person_id FROM who WHERE key = '12'), 'GDPR Art. 17 request') ->> 'records' AS erased_records;
-- Erasure drops the erased id from the former ids of every record.
SELECT key, person_id, former_person_ids FROM who WHERE key IN ('11', '13') ORDER BY record_id;
-- Even where a record still named it (as by hand here), the erased id is not given back.
UPDATE unify.record_persons SET former_person_ids = ARRAY[(SELECT max(person_id) FROM unify.identity_events WHERE event = 'erase')]
WHERE record_id = pg_temp.rec('ud_crm', '13');
SELECT unify.unlink(pg_temp.rec('ud_crm', '11'), pg_temp.rec('ud_crm', '13')) AS persons;
SELECT w.key, w.person_id, w.person_id = e.person_id AS erased_id, w.person_id > 12 AS new_id
FROM who w, unify.identity_events e WHERE e.event = 'erase' AND w.key IN ('11', '13') ORDER BY w.record_id;
SELECT count(*) AS erased_person_back FROM unify.persons p JOIN unify.identity_events e ON e.person_id = p.person_id AND e.event = 'erase';

-- A source change that splits a merged person, through the queue: Helga's app record is
-- corrected to Gisela's (one person), then back (two again, Helga under her id).
CREATE TABLE ud.web (id int PRIMARY KEY, vorname text, nachname text, geboren date, email text, telefon text, strasse text, plz text, ort text);
CREATE TABLE ud.app (id int PRIMARY KEY, vorname text, nachname text, geboren date, email text, telefon text, strasse text, plz text, ort text);
INSERT INTO ud.web VALUES (1, 'Gisela', 'Gruber', '1950-05-15', 'gisela.gruber@example.org', '0171 7654321', 'Lindenweg 7', '90402', 'Nürnberg');
INSERT INTO ud.app VALUES (1, 'Helga', 'Huber', '1980-08-18', 'helga.huber@example.org', '0160 1112223', 'Birkenweg 9', '20095', 'Hamburg');
SELECT unify.add_source('ud_web', 'ud.web', 'id', '{"first_name": "vorname", "last_name": "nachname", "birth_date": "geboren",
    "email": "email", "phone": "telefon", "street_line": "strasse", "postcode": "plz", "city": "ort", "country": "''DE''"}') > 0 AS registered;
SELECT unify.add_source('ud_app', 'ud.app', 'id', '{"first_name": "vorname", "last_name": "nachname", "birth_date": "geboren",
    "email": "email", "phone": "telefon", "street_line": "strasse", "postcode": "plz", "city": "ort", "country": "''DE''"}') > 0 AS registered;
SELECT inserted FROM unify.sync('ud_web');
SELECT inserted FROM unify.sync('ud_app');
SELECT stored_pairs >= 0 AS scored FROM unify.score_pairs();
SELECT merges, splits, new_persons FROM unify.resolve();
SELECT source, key, person_id FROM who WHERE source IN ('ud_web', 'ud_app') ORDER BY record_id;
SELECT coalesce(max(event_id), 0) AS mark FROM unify.identity_events \gset
UPDATE ud.app SET vorname = 'Gisela', nachname = 'Gruber', geboren = '1950-05-15', email = 'gisela.gruber@example.org',
                  telefon = '0171 7654321', strasse = 'Lindenweg 7', plz = '90402', ort = 'Nürnberg' WHERE id = 1;
SELECT unify.process_queue() AS taken;
SELECT source, key, person_id, former_person_ids FROM who WHERE source IN ('ud_web', 'ud_app') ORDER BY record_id;
UPDATE ud.app SET vorname = 'Helga', nachname = 'Huber', geboren = '1980-08-18', email = 'helga.huber@example.org',
                  telefon = '0160 1112223', strasse = 'Birkenweg 9', plz = '20095', ort = 'Hamburg' WHERE id = 1;
SELECT unify.process_queue() AS taken;
SELECT source, key, person_id, former_person_ids FROM who WHERE source IN ('ud_web', 'ud_app') ORDER BY record_id;
SELECT * FROM pg_temp.events_since(:mark);
SELECT person_id, first_name, last_name FROM unify.persons WHERE person_id IN (SELECT person_id FROM who WHERE source IN ('ud_web', 'ud_app')) ORDER BY 1;
-- A batch run over the same data agrees: nothing to change.
SELECT merges, splits, new_persons FROM unify.resolve();

-- The same through sync, score_pairs and resolve().
SELECT coalesce(max(event_id), 0) AS mark FROM unify.identity_events \gset
UPDATE ud.app SET vorname = 'Gisela', nachname = 'Gruber', geboren = '1950-05-15', email = 'gisela.gruber@example.org',
                  telefon = '0171 7654321', strasse = 'Lindenweg 7', plz = '90402', ort = 'Nürnberg' WHERE id = 1;
SELECT updated FROM unify.sync('ud_app');
SELECT stored_pairs >= 0 AS scored FROM unify.score_pairs();
SELECT merges, splits, new_persons FROM unify.resolve();
SELECT source, key, person_id, former_person_ids FROM who WHERE source IN ('ud_web', 'ud_app') ORDER BY record_id;
UPDATE ud.app SET vorname = 'Helga', nachname = 'Huber', geboren = '1980-08-18', email = 'helga.huber@example.org',
                  telefon = '0160 1112223', strasse = 'Birkenweg 9', plz = '20095', ort = 'Hamburg' WHERE id = 1;
SELECT updated FROM unify.sync('ud_app');
SELECT stored_pairs >= 0 AS scored FROM unify.score_pairs();
SELECT merges, splits, new_persons FROM unify.resolve();
SELECT source, key, person_id, former_person_ids FROM who WHERE source IN ('ud_web', 'ud_app') ORDER BY record_id;
SELECT * FROM pg_temp.events_since(:mark);
-- The queue, given the same changes (still queued from the updates above), agrees.
SELECT unify.process_queue() AS taken;
SELECT source, key, person_id FROM who WHERE source IN ('ud_web', 'ud_app') ORDER BY record_id;

-- No id was drawn again for an old customer: 15 ids for fourteen customers (eleven, Lotte,
-- Gisela, Helga) and row 13 once its former person was erased.
SELECT last_value AS person_ids_drawn FROM pg_sequences WHERE schemaname = 'unify' AND sequencename = 'person_id_seq';
ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
