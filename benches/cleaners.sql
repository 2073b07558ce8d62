-- Timed by benches/cleaners.sh. One statement per function over :rows rows, parallel query off.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_similarity;
RESET client_min_messages;

-- :rows input rows with every column filled, cycled from the generated sources. Neighbouring
-- names come from the same household or person often enough to give similar pairs as well.
DROP TABLE IF EXISTS inputs;
CREATE TABLE inputs AS
WITH emails AS (SELECT row_number() OVER () AS i, e FROM (SELECT email FROM crm.shop_customers UNION ALL SELECT e_mail FROM crm.crm_contacts UNION ALL SELECT email FROM crm.newsletter_signups) s(e) WHERE e IS NOT NULL),
     phones AS (SELECT row_number() OVER () AS i, p FROM (SELECT phone FROM crm.shop_customers UNION ALL SELECT coalesce(mobil, telefon) FROM crm.crm_contacts UNION ALL SELECT phone FROM crm.pos_loyalty_members) s(p) WHERE p IS NOT NULL),
     names AS (SELECT row_number() OVER () AS i, n FROM (SELECT last_name FROM crm.shop_customers UNION ALL SELECT nachname FROM crm.crm_contacts) s(n) WHERE n IS NOT NULL),
     streets AS (SELECT row_number() OVER () AS i, s FROM (SELECT street FROM crm.shop_customers UNION ALL SELECT strasse || ' ' || hausnummer FROM crm.crm_contacts) x(s) WHERE s IS NOT NULL),
     postcodes AS (SELECT row_number() OVER () AS i, p FROM (SELECT zip FROM crm.shop_customers UNION ALL SELECT plz FROM crm.crm_contacts UNION ALL SELECT postcode FROM crm.pos_loyalty_members) x(p)),
     n AS (SELECT (SELECT count(*) FROM emails) e, (SELECT count(*) FROM phones) p, (SELECT count(*) FROM names) n,
                  (SELECT count(*) FROM streets) s, (SELECT count(*) FROM postcodes) z)
SELECT g AS id, emails.e AS email, phones.p AS phone, a.n AS name_a, b.n AS name_b, streets.s AS street, postcodes.p AS postcode
FROM generate_series(1, :rows) g CROSS JOIN n
JOIN emails ON emails.i = (g - 1) % n.e + 1
JOIN phones ON phones.i = (g - 1) % n.p + 1
JOIN names a ON a.i = (g - 1) % n.n + 1
JOIN names b ON b.i = g % n.n + 1
JOIN streets ON streets.i = (g - 1) % n.s + 1
JOIN postcodes ON postcodes.i = (g - 1) % n.z + 1;
VACUUM ANALYZE inputs;

-- Best-of-N wall time of one statement, in milliseconds.
CREATE OR REPLACE FUNCTION pg_temp.best_ms(statement text, runs int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE best numeric; t0 timestamptz; ms numeric;
BEGIN
  FOR r IN 1..runs LOOP
    t0 := clock_timestamp();
    EXECUTE statement;
    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
    best := least(coalesce(best, ms), ms);
  END LOOP;
  RETURN round(best, 1);
END $$;

CREATE TEMP TABLE cases (ord int, name text, expr text, baseline text);
INSERT INTO cases VALUES
 (1,  'scan only: count(*)',                    'count(*)', NULL),
 (2,  'baseline lower(trim(email))',            'count(lower(trim(email)))', NULL),
 (3,  'unify.normalize_email',                  'count(unify.normalize_email(email))', 'baseline lower(trim(email))'),
 (4,  'unify.email_match_key',                  'count(unify.email_match_key(email))', 'baseline lower(trim(email))'),
 (5,  'unify.normalize_phone',                  'count(unify.normalize_phone(phone))', 'baseline lower(trim(email))'),
 (6,  'unify.phone_kind',                       'count(unify.phone_kind(phone))', 'baseline lower(trim(email))'),
 (7,  'baseline unaccent(lower(name))',         'count(unaccent(lower(name_a)))', NULL),
 (8,  'unify.normalize_name',                   'count(unify.normalize_name(name_a))', 'baseline unaccent(lower(name))'),
 (9,  'unify.transliterate_de',                 'count(unify.transliterate_de(name_a))', 'baseline unaccent(lower(name))'),
 (10, 'baseline fuzzystrmatch dmetaphone',      'count(dmetaphone(name_a))', NULL),
 (11, 'unify.double_metaphone',                 'count(unify.double_metaphone(name_a))', 'baseline fuzzystrmatch dmetaphone'),
 (12, 'unify.cologne_phonetic',                 'count(unify.cologne_phonetic(name_a))', 'baseline fuzzystrmatch dmetaphone'),
 (13, 'unify.normalize_street',                 'count(unify.normalize_street(street))', 'baseline lower(trim(email))'),
 (14, 'unify.split_street',                     'count(unify.split_street(street))', 'baseline lower(trim(email))'),
 (15, 'unify.normalize_postcode',               'count(unify.normalize_postcode(postcode))', 'baseline lower(trim(email))'),
 (16, 'baseline fuzzystrmatch levenshtein',     'count(levenshtein(name_a, name_b))', NULL),
 (17, 'unify.levenshtein',                      'count(unify.levenshtein(name_a, name_b))', 'baseline fuzzystrmatch levenshtein'),
 (18, 'unify.damerau_levenshtein',              'count(unify.damerau_levenshtein(name_a, name_b))', 'baseline fuzzystrmatch levenshtein'),
 (19, 'baseline pg_similarity jarowinkler',     'count(jarowinkler(name_a, name_b))', NULL),
 (20, 'unify.jaro_winkler',                     'count(unify.jaro_winkler(name_a, name_b))', 'baseline pg_similarity jarowinkler'),
 (21, 'baseline pg_similarity jaccard',         'count(jaccard(street, name_b))', NULL),
 (22, 'unify.jaccard_tokens',                   'count(unify.jaccard_tokens(street, name_b))', 'baseline pg_similarity jaccard');

-- Warm the cache and each library once.
SELECT count(*) FROM inputs \g /dev/null
SELECT unify.normalize_phone('030 1234567'), jarowinkler('a', 'b'), levenshtein('a', 'b'), dmetaphone('a') \g /dev/null

CREATE TEMP TABLE timings AS
SELECT ord, name, baseline, pg_temp.best_ms(format('SELECT %s FROM inputs', expr), :runs) AS ms FROM cases;

SELECT t.name AS statement, t.ms,
       round(:rows / (t.ms / 1000.0)) AS rows_per_s,
       CASE WHEN t.baseline IS NOT NULL THEN round(t.ms / b.ms, 2) END AS x_baseline,
       t.baseline AS against
FROM timings t LEFT JOIN timings b ON b.name = t.baseline ORDER BY t.ord;
