-- The changes tests/citus/run.sh makes in every database after the first batch run: the same
-- rows everywhere (fixed values only, no now()), through statements Citus runs on distributed
-- and reference tables (subqueries with LIMIT are planned on their own first).
-- 40 new shop customers copied from CRM contacts with an e-mail, every other one under a new last name.
INSERT INTO crm.shop_customers (customer_id, email, first_name, last_name, phone, street, zip, city, country, birthday,
                                newsletter, created_at, updated_at)
SELECT 900000000 + row_number() OVER (ORDER BY c.kontakt_nr), upper(c.e_mail), c.vorname,
       CASE WHEN c.kontakt_nr ~ '[02468]$' THEN c.nachname ELSE 'Neu' || c.nachname END,
       coalesce(c.mobil, c.telefon), c.strasse || ' ' || c.hausnummer, c.plz, c.ort, 'DE', NULL, true,
       DATE '2026-12-01', TIMESTAMPTZ '2026-12-01 12:00:00+00'
FROM (SELECT * FROM crm.crm_contacts WHERE e_mail IS NOT NULL ORDER BY kontakt_nr LIMIT 40) c;
-- 30 CRM contacts move within their city; 10 change their e-mail address.
UPDATE crm.crm_contacts SET ort = ort || ' Nord', geaendert_am = TIMESTAMP '2026-12-02 08:00:00'
WHERE kontakt_nr IN (SELECT kontakt_nr FROM crm.crm_contacts ORDER BY md5(kontakt_nr) LIMIT 30);
UPDATE crm.crm_contacts SET e_mail = 'neu.' || e_mail
WHERE kontakt_nr IN (SELECT kontakt_nr FROM crm.crm_contacts WHERE e_mail IS NOT NULL ORDER BY md5(kontakt_nr || 'e') LIMIT 10);
-- 5 CRM contacts are deleted.
DELETE FROM crm.crm_contacts
WHERE kontakt_nr IN (SELECT kontakt_nr FROM crm.crm_contacts ORDER BY md5(kontakt_nr || 'd') LIMIT 5);
-- 20 loyalty members leave.
DELETE FROM crm.pos_loyalty_members
WHERE card_no IN (SELECT card_no FROM crm.pos_loyalty_members ORDER BY md5(card_no::text) LIMIT 20);
-- 15 newsletter sign-ups unsubscribe; 5 new ones with a shop customer's address.
UPDATE crm.newsletter_signups SET unsubscribed_at = DATE '2026-12-03'
WHERE signup_id IN (SELECT signup_id FROM crm.newsletter_signups WHERE unsubscribed_at IS NULL ORDER BY md5(signup_id::text) LIMIT 15);
INSERT INTO crm.newsletter_signups (signup_id, email, first_name, signed_up_at, double_opt_in)
SELECT 900000000 + row_number() OVER (ORDER BY s.customer_id), s.email, s.first_name, TIMESTAMPTZ '2026-12-04 09:00:00+00', true
FROM (SELECT * FROM crm.shop_customers WHERE email IS NOT NULL AND customer_id < 900000000 ORDER BY customer_id LIMIT 5) s;
