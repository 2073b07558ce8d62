-- Run under 0.1.0 (its own library build) in a database holding the sample CRM (schema crm):
-- what an installation has after some use, through 0.1.0's own API. Its tables are then copied
-- into schema upgrade_before, and after.sql checks the update kept every row.

SET client_min_messages = warning;
CREATE EXTENSION customer_unify VERSION '0.1.0';
-- The CRM belongs to an application role, as in a real database (0.2.0 runs each mapping as
-- the table's non-superuser owner; the update decides that owner for existing sources).
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'upgrade_crm_owner') THEN
        CREATE ROLE upgrade_crm_owner;
    END IF;
END $$;
-- Three tables belong to it; pos_loyalty_members and newsletter_signups stay the superuser's.
ALTER TABLE crm.shop_customers OWNER TO upgrade_crm_owner;
ALTER TABLE crm.crm_contacts OWNER TO upgrade_crm_owner;
ALTER TABLE crm.orders OWNER TO upgrade_crm_owner;
GRANT USAGE ON SCHEMA crm TO upgrade_crm_owner;
-- Progress notices carry timings: warnings and errors only.

SELECT unify.add_source('shop', 'crm.shop_customers', 'customer_id', '{
  "email": "email", "first_name": "first_name", "last_name": "last_name", "phone": "phone",
  "street_line": "street", "postcode": "zip", "city": "city", "country": "country",
  "birth_date": "birthday", "consent_email": "newsletter", "updated_at": "updated_at"}', priority => 10) > 0 AS shop;
SELECT unify.add_source('crm', 'crm.crm_contacts', 'kontakt_nr', '{
  "first_name": "vorname", "last_name": "nachname", "email": "e_mail", "phone": "telefon", "mobile": "mobil",
  "street": "strasse", "house_number": "hausnummer", "postcode": "plz", "city": "ort", "country": "land",
  "birth_date": "geburtsdatum", "consent_email": "email_optin", "customer_number": "kontakt_nr",
  "updated_at": "geaendert_am"}', priority => 20) > 0 AS crm;
SELECT unify.add_source('pos', 'crm.pos_loyalty_members', 'card_no', '{
  "full_name": "full_name", "phone": "phone", "postcode": "postcode", "city": "city", "country": "''DE''",
  "birth_date": "birth_date", "email": "email", "updated_at": "updated_at"}', priority => 30) > 0 AS pos;
SELECT unify.add_source('newsletter', 'crm.newsletter_signups', 'signup_id', '{
  "email": "email", "first_name": "first_name",
  "consent_email": "double_opt_in AND unsubscribed_at IS NULL", "updated_at": "signed_up_at"}',
  priority => 40, track_changes => false) > 0 AS newsletter;
SELECT count(*) AS synced_sources FROM unify.sync();
SELECT count(*) > 0 AS trained FROM unify.train();
SELECT matches > 0 AS matched FROM unify.score_pairs();
SELECT persons > 0 AS resolved FROM unify.resolve();

-- Stewardship: a link, an unlink, an unmerge, an erasure (a tombstone of each kind of key).
SELECT unify.link(a.record_id, b.record_id, 'same customer, told us on the phone') > 0 AS linked
FROM (SELECT record_id FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'shop' ORDER BY record_id LIMIT 1) a,
     (SELECT record_id FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'crm' ORDER BY record_id DESC LIMIT 1) b;
SELECT unify.unlink(p.record_a, p.record_b, 'namesakes') IS NOT NULL AS unlinked
FROM (SELECT record_a, record_b FROM unify.pairs WHERE is_match ORDER BY match_weight, record_a, record_b LIMIT 1) p;
SELECT unify.unmerge(person_id, 'wrongly merged') IS NOT NULL AS unmerged
FROM (SELECT person_id FROM unify.persons WHERE record_count >= 3 ORDER BY person_id DESC LIMIT 1) p;
CREATE TABLE upgrade_erased AS
SELECT s.name AS source, r.source_key FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE r.person_id = (SELECT person_id FROM unify.persons WHERE record_count >= 2 ORDER BY person_id LIMIT 1);
SELECT unify.erase_person((SELECT person_id FROM unify.persons WHERE record_count >= 2 ORDER BY person_id LIMIT 1),
                          'Art. 17 request') IS NOT NULL AS erased;
SELECT count(*) > 0 AS tombstones FROM unify.erasures;

-- Segments and predictions over the orders table.
SELECT unify.add_transactions('orders', 'crm.orders', '{"source": "channel", "source_key": "customer_ref",
  "order_date": "ordered_at", "amount": "amount", "currency": "currency",
  "returned": "status IN (''returned'', ''cancelled'')"}') > 0 AS transactions;
INSERT INTO unify.exchange_rates (currency, rate) VALUES ('CHF', 1.05), ('USD', 0.92) ON CONFLICT DO NOTHING;
SELECT (r ->> 'persons')::int > 0 AS segmented FROM (SELECT unify.refresh_segments((SELECT max(ordered_at)::date FROM crm.orders) + 1) AS r) x;
SELECT f ->> 'status' AS fit FROM (SELECT unify.fit_predictions((SELECT max(ordered_at)::date FROM crm.orders) + 1) AS f) x;
SELECT unify.set_survivorship('email', 'most_recent') IS NOT NULL AS survivorship_set;

-- Changes waiting in the queue when the update comes: applied afterwards by 0.2.0.
UPDATE crm.crm_contacts SET ort = 'Neustadt' WHERE kontakt_nr = (SELECT min(kontakt_nr) FROM crm.crm_contacts);
INSERT INTO crm.shop_customers (customer_id, email, first_name, last_name)
SELECT max(customer_id) + 1, 'Neue.Kundin@Example.org', 'Lena', 'Neumann' FROM crm.shop_customers;
SELECT count(*) AS queued FROM unify.change_queue;

-- The tables as they are now, for after.sql.

CREATE SCHEMA upgrade_before;
DO $$
DECLARE t text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE format('CREATE TABLE upgrade_before.%I AS SELECT * FROM unify.%I', t, t);
    END LOOP;
END $$;
SELECT count(*) AS tables_kept_aside FROM pg_tables WHERE schemaname = 'upgrade_before';
