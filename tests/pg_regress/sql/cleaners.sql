-- Known vectors for every cleaner and similarity function, German cases first.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
RESET client_min_messages;

-- E-mail
SELECT v, unify.normalize_email(v), unify.email_match_key(v)
FROM (VALUES (' Max.Mustermann@Web.DE '), ('mailto:Info@Firma.de'), ('"Müller, Max" <Max@Müller.de>'),
             ('max@xn--mller-kva.de'), ('Max.Muster+shop@googlemail.com'), ('m.a.x.muster@gmail.com'),
             ('max.muster+news@outlook.de'), ('max.muster+1@web.de'), ('jürgen@straße.de'),
             ('max@web'), ('max..muster@web.de'), ('test@@web.de')) t(v);

-- Phone numbers: one number in the ways Germans write it, then other countries and kinds
SELECT v, unify.normalize_phone(v) AS e164, unify.phone_kind(v) AS kind
FROM (VALUES ('+49 30 12345678'), ('+49 (0)30 12345678'), ('0049 30 12345678'), ('030 12345678'),
             ('030/12345678'), ('(030) 123 456 78'), ('030-1234-5678'), ('0171 1234567'),
             ('+49 (0) 171 / 123 45 67'), ('0800 1234567'), ('+43 1 5123456'), ('0041 44 668 18 00'),
             ('12345'), ('0000000'), ('n/a')) t(v);
SELECT unify.normalize_phone('01 5123456', 'AT') AS vienna, unify.normalize_phone('044 668 18 00', 'ch') AS zurich,
       unify.normalize_phone('030 12345678', 'XX') AS unknown_region;

-- Names
SELECT v, unify.normalize_name(v), unify.transliterate_de(v)
FROM (VALUES ('MÜLLER'), ('Herr Dr. Hans-Peter Müller'), ('Frau Prof. Dr. med. Anna Schmidt'),
             ('Dipl.-Ing. Jörg Weiß'), ('Hans - Peter  Meier'), ('GROẞ'), ('H. Müller jun.'),
             ('O’Brien'), ('von der Heide'), ('Ärztin Zoë Dvořák'), ('Herr')) t(v);

-- Streets and postcodes
SELECT v, (unify.split_street(v)).*, unify.normalize_street(v)
FROM (VALUES ('Hauptstraße 12a'), ('Hauptstr. 12 a'), ('HAUPTSTRASSE 12A'), ('Haupt-Str.12a'),
             ('Karl-Marx-Str. 5'), ('Karl Marx Straße 5'), ('Am Markt 3 - 5'), ('Gartenweg 12/1'),
             ('Straße des 17. Juni 135'), ('Marktpl. 1'), ('Mühlenweg 3'), ('12 Main Street'), ('12')) t(v);
SELECT v, c, unify.normalize_postcode(v, c)
FROM (VALUES ('01067', 'DE'), ('D-01067', 'DE'), ('1067', 'DE'), ('DE 10115', 'de'), ('123456', 'DE'),
             ('A-1010', 'AT'), ('CH-8001', 'CH'), ('8001', 'Schweiz'), ('1234ab', 'NL'), ('00950', 'PL'),
             ('10115', 'Atlantis')) t(v, c);
SELECT unify.normalize_postcode('01067') AS default_country_de;

-- Phonetics: published Kölner Phonetik examples, then German spelling variants
SELECT v, unify.cologne_phonetic(v), unify.double_metaphone(v), unify.double_metaphone_alt(v)
FROM (VALUES ('Müller-Lüdenscheidt'), ('Wikipedia'), ('Breschnew'), ('Müller'), ('Mueller'),
             ('Möller'), ('Meier'), ('Mayer'), ('Schmidt'), ('Schmitt'), ('Smith'), ('Strauß')) t(v);

-- Similarity, on characters not bytes
SELECT a, b, round(unify.jaro_winkler(a, b)::numeric, 4) AS jw, unify.levenshtein(a, b) AS lev,
       unify.damerau_levenshtein(a, b) AS dl, round(unify.jaccard_tokens(a, b)::numeric, 4) AS jaccard
FROM (VALUES ('MARTHA', 'MARHTA'), ('DWAYNE', 'DUANE'), ('Müller', 'Mueller'), ('Müller', 'Muller'),
             ('Straße', 'Strasse'), ('Hans Peter Müller', 'Müller, Hans-Peter'), ('', ''), ('abc', '')) t(a, b);
