-- A shared personal e-mail decides, with the shipped (untrained) model, where a record's first
-- name is a typo of the name its own mailbox spells (Dii for Didi, Dieter's; Ged for Gerd,
-- Gerhard's; Johanan for Johanna), where a given name the nickname table has no forms of agrees
-- crosswise after a marriage (Sarah Süß, "Weiss Sarah"), and where day and month are exchanged
-- and a digit is off besides; where a short form typed wrong is another given name on the other
-- holder's mailbox (Lia for Lisa, Elisabeth's), and where a sign-up's only name field holds the
-- surname its mailbox spells. Two people on one mailbox stay two: a couple of a male and a
-- female form of one name (Christian, Christina; Jan, Jana), another name beside the one the
-- mailbox spells, the family name agreeing crosswise.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
CREATE TABLE kontakte (
    nr int PRIMARY KEY, vorname text, nachname text, geboren date, email text, telefon text,
    strasse text, plz text, ort text
);
INSERT INTO kontakte VALUES
    -- One person each.
    (1, 'Dieter', 'Beck', '1945-03-18', 'dieter.beck@gmx.de', NULL, 'Fichtenstraße 146', '89073', 'Ulm'),
    (2, 'Dii', 'Beck', NULL, 'dieter.beck@gmx.de', NULL, 'Fichtenstraße 146', '89073', 'Ulm'),
    (3, 'Gerhard', 'Walter', '1960-05-14', 'walter.gerhard@mailbox.org', NULL, 'Waldplatz 107', '06108', 'Halle (Saale)'),
    (4, 'Ged', 'Walter', '1960-05-14', 'walter.gerhard@mailbox.org', '0175 1337083', 'Waldplatz 107', '06108', 'Halle (Saale)'),
    (5, 'Johanna', 'Dąbrowski', NULL, 'johanna.demir91@yahoo.de', NULL, 'Ringstraße 131', '80331', 'München'),
    (6, 'Johanan', 'Dąbrowski', NULL, 'johanna.demir91@yahoo.de', '0179 14286655', 'Ringstraße 131', '80331', 'München'),
    (7, 'Wolfgang', 'Herrmann', '1996-10-12', 'w.herrmann@yahoo.de', NULL, NULL, '14467', 'Potsdam'),
    (8, 'Herrmann', 'Wolfgang', '1995-12-10', 'w.herrmann@yahoo.de', NULL, 'Lindenweg 49', '14467', 'Potsdam'),
    (9, 'Sarah', 'Süß', NULL, 'sarah.weiss@t-online.de', NULL, 'Hamburger Weg 59', '14469', 'Potsdam'),
    (10, 'Weiss', 'Sarah', '1974-09-02', 'sarah.weiss@t-online.de', NULL, NULL, '14469', 'Potsdam'),
    -- Two people each.
    (11, 'Christian', 'Koch', '1970-01-02', 'christina.koch@web.de', NULL, 'Am Markt 1', '50667', 'Köln'),
    (12, 'Christina', 'Koch', NULL, 'christina.koch@web.de', NULL, 'Am Markt 1', '50667', 'Köln'),
    (13, 'Jan', 'Schneider', NULL, 'jan.schneider@web.de', NULL, 'Ulmenweg 3', '01067', 'Dresden'),
    (14, 'Jana', 'Schneider', NULL, 'jan.schneider@web.de', NULL, 'Ulmenweg 3', '01067', 'Dresden'),
    (15, 'Anna', 'Fischer', NULL, 'dieter.fischer@gmx.de', NULL, 'Birkenallee 31', '60311', 'Frankfurt am Main'),
    (16, 'Dieter', 'Fischer', NULL, 'dieter.fischer@gmx.de', NULL, 'Birkenallee 31', '60311', 'Frankfurt am Main'),
    (17, 'Anna', 'Schmidt', NULL, 'anna.schmidt@web.de', NULL, 'Kirchweg 160', '28195', 'Bremen'),
    (18, 'Schmidt', 'Thomas', NULL, 'anna.schmidt@web.de', NULL, 'Kirchweg 160', '28195', 'Bremen'),
    -- One person each again: Lisa (Elisabeth's short form) typed Lia on Elisabeth's mailbox;
    -- Johanan, a typo of Johanna, with no Johann anywhere; a double surname in a sign-up's only
    -- name field on its own mailbox beside the "Markus" of another sign-up.
    (19, 'Elisabeth', 'Kowalski', NULL, 'ekowalski80@mailbox.org', '0162 6359009', 'Wiesenallee 15', '50667', 'Köln'),
    (20, 'Lia', 'KOWALSKI', NULL, 'ekowalski80@mailbox.org', NULL, 'Wiesenallee 15', '50667', 'Köln'),
    (21, 'Johanna', 'Schulze', NULL, 'jschulze20@mailbox.org', '0162 2226743', 'Karl-Marx-Straße 161', '12047', 'Berlin'),
    (22, 'Johanan', NULL, NULL, 'jschulze20@mailbox.org', NULL, NULL, NULL, NULL),
    (23, 'Markus', NULL, NULL, 'markus.mueller-luedenscheidt@web.de', NULL, NULL, NULL, NULL),
    (24, 'Müller-Lüdenscheidt', NULL, NULL, 'markus.mueller-luedenscheidt@web.de', NULL, NULL, NULL, NULL);
SELECT unify.add_source('kontakte', 'kontakte', 'nr', '{"first_name": "vorname", "last_name": "nachname",
    "birth_date": "geboren", "email": "email", "phone": "telefon", "street_line": "strasse",
    "postcode": "plz", "city": "ort", "country": "''DE''"}', track_changes => false);
SELECT source_rows FROM unify.sync('kontakte');
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();

CREATE TEMP VIEW k AS SELECT r.record_id, k.nr FROM unify.records r JOIN kontakte k ON k.nr::text = r.source_key;
-- Each pair sharing a mailbox: matched (and by which rule) or not.
SELECT a.nr AS a, b.nr AS b, coalesce(p.is_match, false) AS is_match, p.forced_by
FROM k a JOIN k b ON a.nr < b.nr AND b.nr = a.nr + 1 AND a.nr % 2 = 1
LEFT JOIN unify.pairs p ON p.record_a = least(a.record_id, b.record_id) AND p.record_b = greatest(a.record_id, b.record_id)
ORDER BY a.nr;
-- The e-mail of Dii and Dieter is personal evidence; that of Jan and Jana a household's.
SELECT term, level, weight > 0 AS evidence, note
FROM unify.explain_match((SELECT record_id FROM k WHERE nr = 1), (SELECT record_id FROM k WHERE nr = 2))
WHERE term IN ('first_name', 'email');
SELECT term, level, weight > 0 AS evidence, note
FROM unify.explain_match((SELECT record_id FROM k WHERE nr = 13), (SELECT record_id FROM k WHERE nr = 14))
WHERE term IN ('first_name', 'email');

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
