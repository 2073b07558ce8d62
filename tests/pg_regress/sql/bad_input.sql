-- Hostile input for every function: never a crash; NULL for what cannot be parsed, or an error
-- with a SQLSTATE and a hint where the documented limit is exceeded.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
RESET client_min_messages;
CREATE TEMP TABLE bad (ord int, label text, v text);
INSERT INTO bad VALUES
  (1, 'null', NULL), (2, 'empty', ''), (3, 'whitespace', E' \t\n '), (4, '1 MB ascii', repeat('x', 1048576)),
  (5, '1 MB umlauts', repeat('ü', 524288)), (6, 'emoji', '😀👍🏽'), (7, 'rtl', 'محمد علي'),
  (8, 'rtl override', E'\u202Emax@web.de'), (9, 'control chars', E'a\u0001b\u007fc'),
  (10, 'mixed scripts', 'Mülлер Иван'), (11, 'zero width', E'M\u200Bü\u200Dller'),
  (12, 'sql', $$'); DROP TABLE bad; --$$);

-- Cleaners: results shortened to 20 characters, with their length.
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.normalize_email(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.email_match_key(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.normalize_phone(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.phone_kind(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.normalize_name(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.transliterate_de(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.normalize_street(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.normalize_postcode(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.cologne_phonetic(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.double_metaphone(v) r ORDER BY ord;
SELECT ord, label, left(r, 20) AS result, length(r) FROM bad, unify.double_metaphone_alt(v) r ORDER BY ord;
SELECT ord, label, left(s.street, 20) AS street, s.house_number, s IS NULL AS is_null
FROM bad LEFT JOIN LATERAL (SELECT (unify.split_street(v)).*) s ON true ORDER BY ord;

-- Bad regions and countries are NULL, not errors: they often come from a column.
SELECT ord, label, unify.normalize_phone('030 12345678', v) AS phone, unify.normalize_postcode('01067', v) AS postcode
FROM bad ORDER BY ord;

-- Similarity against a short name works for every input, the 1 MB ones included.
SELECT ord, label, round(unify.jaro_winkler(v, 'Müller')::numeric, 4) AS jw, unify.levenshtein(v, 'Müller') AS lev,
       unify.damerau_levenshtein(v, 'Müller') AS dl, round(unify.jaccard_tokens(v, 'Müller')::numeric, 4) AS jaccard
FROM bad ORDER BY ord;

-- Two 1 MB strings exceed the documented limit: error 54000 with a hint, no hang.
\set VERBOSITY default
SELECT unify.levenshtein(repeat('a', 1048576), repeat('b', 1048576));
\echo :LAST_ERROR_SQLSTATE
SELECT unify.jaro_winkler(repeat('a', 1048576), repeat('b', 1048576));
\echo :LAST_ERROR_SQLSTATE
SELECT unify.damerau_levenshtein(repeat('a', 100000), repeat('b', 1000));
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS bad_rows_still_there FROM bad;
