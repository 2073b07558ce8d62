-- What tests/citus/run.sh compares between a Citus database and its plain twin, one line:
-- records (source, key, every cleaned field, raw) | pairs (the two records by source and key,
-- weight, probability, decision) | persons (each named by its smallest record, with its
-- household named the same way and its golden record) as count and md5 of an ordered listing.
-- Ids, timestamps the run wrote (synced_at, scored_at, updated_at) and model versions are left out.
SET client_min_messages = warning;
CREATE TEMP TABLE named AS
SELECT r.record_id, rp.person_id, s.name || ':' || r.source_key AS name,
       min(s.name || ':' || r.source_key) OVER (PARTITION BY rp.person_id) AS person_of
FROM unify.records r JOIN unify.sources s USING (source_id) LEFT JOIN unify.record_persons rp USING (record_id);
SELECT 'records=' || count(*) || ' ' || md5(string_agg(x, E'\n' ORDER BY x)) FROM (
    SELECT concat_ws('|', s.name, r.source_key, r.first_name, r.last_name, r.email, r.email_key, r.phone, r.mobile,
                     r.street, r.house_number, r.postcode, r.city, r.country, r.birth_date, r.company, r.customer_number,
                     r.external_id, r.consent_email, r.source_updated_at, r.last_name_phonetic, r.salutation, r.title,
                     r.raw::text) AS x
    FROM unify.records r JOIN unify.sources s USING (source_id)) t
UNION ALL
SELECT 'pairs=' || count(*) || ' ' || md5(string_agg(x, E'\n' ORDER BY x)) FROM (
    SELECT concat_ws('|', least(a.name, b.name), greatest(a.name, b.name), round(p.match_weight::numeric, 9),
                     round(p.match_probability::numeric, 9), p.is_match, p.forced_by, p.blocking_rules::text) AS x
    FROM unify.pairs p JOIN named a ON a.record_id = p.record_a JOIN named b ON b.record_id = p.record_b) t
UNION ALL
SELECT 'persons=' || count(*) || ' ' || md5(string_agg(x, E'\n' ORDER BY x)) FROM (
    SELECT concat_ws('|', n.person_of, h.household_of, p.first_name, p.last_name, p.email, p.phone, p.mobile, p.street,
                     p.house_number, p.postcode, p.city, p.country, p.birth_date, p.company, p.customer_number,
                     p.consent_email, p.consent_email_source, p.consent_phone, p.consent_post, p.record_count,
                     p.sources::text, p.salutation, p.title, p.first_name_display, p.last_name_display,
                     p.street_display, p.city_display, p.email_display) AS x
    FROM unify.persons p
    JOIN (SELECT DISTINCT person_id, person_of FROM named) n USING (person_id)
    LEFT JOIN (SELECT p2.household_id, min(n2.person_of) AS household_of FROM unify.persons p2
               JOIN named n2 USING (person_id) GROUP BY p2.household_id) h USING (household_id)) t;
