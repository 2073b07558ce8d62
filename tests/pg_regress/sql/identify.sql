-- Identify a person at a touchpoint (unify.identify, issue 26): whatever a shop login, a till, a
-- call-centre screen or a web form has, cleaned as sync cleans records, looked up through the
-- blocking keys and scored as any record pair, best record per person. On the sample German CRM
-- (crmgen --rows 2000 --seed 7, schema crm), the four sources as the demo registers them.
-- Self-contained (the fixture: scripts/test.sh): one transaction, rolled back (a statement meant to
-- fail rolls back alone), and the sequences it advanced set back.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
\set ON_ERROR_ROLLBACK on
\set VERBOSITY default
CREATE TEMP TABLE test_sequences AS
SELECT format('%I.%I', schemaname, sequencename)::regclass AS seq, last_value, start_value FROM pg_sequences WHERE schemaname = 'unify';
BEGIN;
SET search_path = crm, public;
\i demo/sources.sql
RESET search_path;
SELECT sum(source_rows) AS records FROM unify.sync();
-- Before the first scoring there are no blocking keys to look anyone up in.
SELECT * FROM unify.identify('{"email": "anna@example.org"}');
\echo :LAST_ERROR_SQLSTATE
SELECT bool_and(converged) AS converged FROM unify.train();
SELECT stored_pairs > 0 AS scored FROM unify.score_pairs();
SELECT persons > 0 AS resolved FROM unify.resolve();

-- Read-only and guarded: STABLE, STRICT, SECURITY DEFINER with the pinned search_path.
SELECT p.oid::regprocedure AS function, p.provolatile, p.proisstrict, p.prosecdef,
       'search_path=pg_catalog, pg_temp' = ANY (p.proconfig) AS pinned
FROM pg_proc p WHERE p.oid IN ('unify.identify(jsonb, int)'::regprocedure, 'unify._probe_query()'::regprocedure) ORDER BY 1;
-- Every field identify takes is a canonical field.
SELECT f AS not_canonical FROM unnest(ARRAY['first_name', 'last_name', 'full_name', 'email', 'phone', 'mobile', 'street',
  'house_number', 'street_line', 'postcode', 'city', 'country', 'birth_date', 'customer_number', 'external_id']) f
WHERE f <> ALL (unify.canonical_fields());

-- The persons the tests look up: per source, the first record (by key) of a person of its
-- own e-mail and mobile or phone, with name, postcode and birth date.
CREATE TEMP TABLE who AS
SELECT DISTINCT ON (s.name) s.name AS source, r.record_id, rp.person_id, r.raw, r.email, r.phone, r.mobile,
       r.postcode, r.birth_date
FROM unify.records r JOIN unify.sources s USING (source_id) JOIN unify.record_persons rp USING (record_id)
WHERE r.email IS NOT NULL AND coalesce(r.mobile, r.phone) IS NOT NULL AND r.birth_date IS NOT NULL
  AND r.postcode IS NOT NULL AND r.raw ? 'first_name' AND r.raw ? 'last_name'
  AND NOT EXISTS (SELECT 1 FROM unify.records o JOIN unify.record_persons op USING (record_id) WHERE op.person_id <> rp.person_id
                  AND (o.email_key = r.email_key OR o.phone IN (r.phone, r.mobile) OR o.mobile IN (r.phone, r.mobile)))
ORDER BY s.name, r.source_key;
SELECT source, email, coalesce(mobile, phone) AS phone, postcode, birth_date FROM who ORDER BY 1;

-- By e-mail, typed in another case with blanks around: the person, a match (forced by the rule
-- for a personal e-mail: nothing on the till contradicts it).
SELECT w.source, i.person_id = w.person_id AS found, i.is_match, round(i.match_probability::numeric, 4) AS p,
       i.explanation @> '[{"term": "deterministic_rule"}]' AS forced
FROM who w, LATERAL unify.identify(jsonb_build_object('email', '  ' || upper(w.raw ->> 'email') || ' '), 1) i
ORDER BY 1;
-- By phone, written as a till would have it (national, with a slash): the person comes first.
SELECT w.source, coalesce(w.mobile, w.phone) AS stored, x.typed, i.person_id = w.person_id AS found
FROM who w,
     LATERAL (SELECT '0' || substr(coalesce(w.mobile, w.phone), 4, 3) || '/' || substr(coalesce(w.mobile, w.phone), 7) AS typed) x,
     LATERAL unify.identify(jsonb_build_object('phone', x.typed), 1) i
ORDER BY 1;
-- By name, postcode and birth date (a call-centre screen: names in capitals, the date German).
SELECT w.source, i.person_id = w.person_id AS found, i.is_match
FROM who w, LATERAL unify.identify(jsonb_build_object(
    'first_name', upper(w.raw ->> 'first_name'), 'last_name', upper(w.raw ->> 'last_name'),
    'postcode', w.postcode, 'birth_date', to_char(w.birth_date, 'DD.MM.YYYY')), 1) i
ORDER BY 1;
-- A stranger: nobody.
SELECT count(*) AS strangers_found FROM unify.identify('{"first_name": "Quirin", "last_name": "Zwiebelmeier",
  "email": "quirin.zwiebelmeier@example.org", "birth_date": "1911-11-11", "postcode": "99998", "phone": "+49 30 99999999"}');

-- The explanation is explain_match's terms (the probe as value_a): they sum to the weight.
SELECT e.term, e.level, e.value_a, e.value_b, round(e.weight::numeric, 2) AS weight
FROM who w, LATERAL unify.identify(jsonb_build_object('email', w.raw ->> 'email', 'last_name', w.raw ->> 'last_name',
                                   'postcode', w.postcode), 1) i,
     LATERAL jsonb_to_recordset(i.explanation) AS e (term text, level text, value_a text, value_b text, m float8, u float8, weight float8, note text)
WHERE w.source = 'crm';

-- identify scores as score_pairs does: every tenth record's own attributes (the raw values it
-- was made from) as the probe. Its own person comes first, or shares the top weight where the
-- model cannot tell namesakes of one home apart without a birth date (the namesake odds); a
-- record with nothing but a family mailbox identifies nobody (no evidence: below the review
-- threshold). Every other person comes at the weight of the record's best stored pair with
-- them, none is missing, none is added; the explanation always sums to the weight.
CREATE TEMP TABLE probes AS
SELECT r.record_id, rp.person_id, i.person_id AS found, i.match_weight, i.is_match, i.explanation, i.ord
FROM unify.records r JOIN unify.record_persons rp USING (record_id),
     LATERAL unify.identify(r.raw - ARRAY['salutation', 'title', 'company', 'consent_email', 'consent_email_at', 'consent_phone',
                                           'consent_phone_at', 'consent_post', 'consent_post_at', 'updated_at'], 100)
             WITH ORDINALITY AS i (person_id, match_probability, match_weight, is_match, found_record, explanation, ord)
WHERE r.record_id % 10 = 0;
SELECT (SELECT count(*) FROM unify.records WHERE record_id % 10 = 0) AS records,
       count(DISTINCT record_id) AS answered,
       count(DISTINCT record_id) FILTER (WHERE found = person_id
                        AND abs(match_weight - (SELECT t.match_weight FROM probes t WHERE t.record_id = p.record_id AND t.ord = 1)) < 1e-9) AS own_person_first_or_tied,
       bool_and(abs((SELECT sum((t ->> 'weight')::float8) FROM jsonb_array_elements(explanation) t) - match_weight) < 1e-9) AS sums
FROM probes p;
-- The ties: namesakes in one home without a birth date, all of them.
SELECT count(*) > 0 AS some_tied, bool_and(explanation @> '[{"term": "namesakes"}]') AS namesakes
FROM probes p WHERE EXISTS (SELECT 1 FROM probes o WHERE o.record_id = p.record_id AND o.found = o.person_id AND o.ord > 1)
  AND abs(match_weight - (SELECT t.match_weight FROM probes t WHERE t.record_id = p.record_id AND t.ord = 1)) < 1e-9;
-- Not answered: a family mailbox and nothing else.
SELECT r.raw ->> 'email' AS email, array(SELECT jsonb_object_keys(r.raw - ARRAY['updated_at', 'consent_email', 'consent_email_at'])) AS fields
FROM unify.records r WHERE r.record_id % 10 = 0 AND r.record_id NOT IN (SELECT record_id FROM probes) ORDER BY 1;
-- Other persons: identify's row against the best stored pair of the record with that person.
CREATE TEMP TABLE paired AS
SELECT x.record_id, o.person_id AS other, max(p.match_weight) AS weight
FROM (SELECT DISTINCT record_id, person_id FROM probes) x
JOIN unify.pairs p ON x.record_id IN (p.record_a, p.record_b)
JOIN unify.record_persons o ON o.record_id = CASE WHEN p.record_a = x.record_id THEN p.record_b ELSE p.record_a END
WHERE o.person_id <> x.person_id
GROUP BY 1, 2;
SELECT count(*) AS other_persons,
       count(*) FILTER (WHERE p.found IS NULL) AS missing_in_identify,
       count(*) FILTER (WHERE q.other IS NULL) AS missing_in_pairs,
       count(*) FILTER (WHERE abs(p.match_weight - q.weight) > 1e-9) AS weights_differ
FROM (SELECT * FROM probes WHERE found <> person_id) p
FULL JOIN paired q ON q.record_id = p.record_id AND q.other = p.found;

-- An erased person is never returned, by any of their identifiers.
CREATE TEMP VIEW by_all AS
SELECT w.person_id, i.person_id AS found
FROM who w, LATERAL unify.identify(jsonb_build_object('email', w.raw ->> 'email', 'first_name', w.raw ->> 'first_name',
     'last_name', w.raw ->> 'last_name', 'postcode', w.postcode, 'birth_date', w.birth_date, 'phone', coalesce(w.mobile, w.phone)), 100) i
WHERE w.source = 'shop';
SELECT count(*) FILTER (WHERE found = person_id) AS found_before_erasure FROM by_all;
SELECT unify.erase_person(w.person_id, 'identify test') IS NOT NULL AS erased FROM who w WHERE w.source = 'shop';
SELECT count(*) FILTER (WHERE found = person_id) AS found_after_erasure FROM by_all;

-- Errors: what is wrong, with a SQLSTATE and a hint.
SELECT * FROM unify.identify('{"mail": "anna@example.org", "plz": "10115"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.identify('{"email": "anna@example.org", "consent_email": true}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.identify('{"phone": ["030 1234567"]}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.identify('"anna@example.org"');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.identify('{"country": "DE", "email": " "}');
\echo :LAST_ERROR_SQLSTATE
-- A value the cleaners cannot read counts as not given, as in sync; nothing readable left is an error.
SELECT * FROM unify.identify('{"email": "no at sign", "birth_date": "31.02.1980"}');
\echo :LAST_ERROR_SQLSTATE
SELECT (SELECT count(*) FROM unify.identify(jsonb_build_object('first_name', w.raw ->> 'first_name', 'last_name', w.raw ->> 'last_name', 'postcode', w.postcode), 100)) AS found,
       ARRAY(SELECT i FROM unify.identify(jsonb_build_object('first_name', w.raw ->> 'first_name', 'last_name', w.raw ->> 'last_name', 'postcode', w.postcode, 'email', 'no at sign'), 100) i)
       = ARRAY(SELECT i FROM unify.identify(jsonb_build_object('first_name', w.raw ->> 'first_name', 'last_name', w.raw ->> 'last_name', 'postcode', w.postcode), 100) i) AS as_if_not_given
FROM who w WHERE w.source = 'crm';
SELECT * FROM unify.identify('{"email": "anna@example.org"}', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM unify.identify('{"email": "anna@example.org"}', 101);
\echo :LAST_ERROR_SQLSTATE
-- STRICT: NULL in, no row out.
SELECT count(*) AS null_rows FROM unify.identify(NULL);
-- A model whose blocking rules changed since the keys were built.
SELECT unify.set_model(jsonb_set(unify.get_model(), '{blocking_rules}', (unify.get_model() -> 'blocking_rules') - 0)) IS NOT NULL AS changed;
SELECT * FROM unify.identify('{"email": "anna@example.org"}');
\echo :LAST_ERROR_SQLSTATE

ROLLBACK;
SELECT bool_and(CASE WHEN last_value IS NULL THEN setval(seq, start_value, false) = start_value ELSE setval(seq, last_value) = last_value END) AS sequences_set_back
FROM test_sequences;
