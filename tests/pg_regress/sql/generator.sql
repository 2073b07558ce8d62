-- The sample CRM written by crmgen --rows 2000 --seed 7 --schema crm (loaded by scripts/test.sh):
-- four sources with their own formats, the truth table, orders; and the cleaners over it.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
RESET client_min_messages;
SET search_path = crm, public;

SELECT (SELECT count(*) FROM shop_customers) + (SELECT count(*) FROM crm_contacts)
     + (SELECT count(*) FROM pos_loyalty_members) + (SELECT count(*) FROM newsletter_signups) AS source_rows,
       (SELECT count(*) FROM truth) AS truth_rows;

-- Every source row has exactly one truth row.
SELECT source, count(*) AS rows,
       count(*) FILTER (WHERE NOT EXISTS (
         SELECT 1 FROM shop_customers s WHERE t.source = 'shop' AND s.customer_id::text = t.source_key
         UNION ALL SELECT 1 FROM crm_contacts c WHERE t.source = 'crm' AND c.kontakt_nr = t.source_key
         UNION ALL SELECT 1 FROM pos_loyalty_members p WHERE t.source = 'pos' AND p.card_no::text = t.source_key
         UNION ALL SELECT 1 FROM newsletter_signups n WHERE t.source = 'newsletter' AND n.signup_id::text = t.source_key)) AS orphans
FROM truth t GROUP BY source ORDER BY source;

-- A realistic share of persons appears several times; households hold several persons.
SELECT count(DISTINCT person_id) AS persons,
       round(avg(n), 2) AS records_per_person,
       count(*) FILTER (WHERE n > 1) AS persons_with_duplicates,
       count(*) FILTER (WHERE sources > 1) AS persons_in_several_sources
FROM (SELECT person_id, count(*) n, count(DISTINCT source) sources FROM truth GROUP BY person_id) p;
SELECT count(*) AS households_with_several_persons
FROM (SELECT household_id FROM truth GROUP BY household_id HAVING count(DISTINCT person_id) > 1) h;

-- Every kind of variation the matching must handle occurs.
SELECT tag, count(*) > 0 AS present
FROM unnest(ARRAY['typo','translit','case','swapped','moved','married','family','twin','junior','senior',
                  'shared_email','dup_in_source','email_alias','street_abbrev','postcode_zero']) tag
LEFT JOIN truth ON tag = ANY (variations) GROUP BY tag ORDER BY tag;

-- The cleaners read the generated formats: nearly every phone, e-mail and postcode parses.
SELECT round(avg((unify.normalize_phone(phone) IS NOT NULL)::int) FILTER (WHERE phone IS NOT NULL), 3) AS phones_ok,
       round(avg((unify.normalize_email(email) IS NOT NULL)::int), 3) AS emails_ok,
       round(avg((unify.normalize_postcode(zip) IS NOT NULL)::int), 3) AS postcodes_ok,
       round(avg(((unify.split_street(street)).house_number IS NOT NULL)::int), 3) AS house_numbers_ok
FROM shop_customers;
SELECT round(avg((unify.normalize_phone(coalesce(mobil, telefon)) IS NOT NULL)::int)
               FILTER (WHERE coalesce(mobil, telefon) IS NOT NULL), 3) AS phones_ok,
       round(avg((unify.normalize_postcode(plz, land) IS NOT NULL)::int), 3) AS postcodes_ok,
       round(avg((to_date(geburtsdatum, 'DD.MM.YYYY') IS NOT NULL)::int) FILTER (WHERE geburtsdatum IS NOT NULL), 3) AS birth_dates_ok
FROM crm_contacts;

-- Mobile and landline numbers both occur.
SELECT unify.phone_kind(phone) AS kind, count(*) FROM pos_loyalty_members WHERE phone IS NOT NULL GROUP BY 1 ORDER BY 1;

-- Orders: many one-time buyers, some returns.
SELECT count(*) > 0 AS has_orders,
       count(*) FILTER (WHERE status = 'returned') > 0 AS has_returns,
       (SELECT count(*) FROM (SELECT customer_ref FROM orders GROUP BY channel, customer_ref HAVING count(*) = 1) o) > 0 AS has_one_time_buyers
FROM orders;
