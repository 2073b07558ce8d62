-- The worker tests' database: three sources of the sample CRM, resolved once in batch.
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
SELECT unify.add_source('shop', 'crm.shop_customers', 'customer_id', '{
  "email": "email", "first_name": "first_name", "last_name": "last_name", "phone": "phone",
  "street_line": "street", "postcode": "zip", "city": "city", "country": "country",
  "birth_date": "birthday", "consent_email": "newsletter", "updated_at": "updated_at"}', priority => 10);
SELECT unify.add_source('crm', 'crm.crm_contacts', 'kontakt_nr', '{
  "first_name": "vorname", "last_name": "nachname", "email": "e_mail", "phone": "telefon", "mobile": "mobil",
  "street": "strasse", "house_number": "hausnummer", "postcode": "plz", "city": "ort", "country": "land",
  "birth_date": "geburtsdatum", "consent_email": "email_optin", "customer_number": "kontakt_nr",
  "updated_at": "geaendert_am"}', priority => 20);
SELECT unify.add_source('pos', 'crm.pos_loyalty_members', 'card_no', '{
  "full_name": "full_name", "phone": "phone", "postcode": "postcode", "city": "city", "country": "''DE''",
  "birth_date": "birth_date", "email": "email", "updated_at": "updated_at"}', priority => 30);
SELECT * FROM unify.sync();
SELECT * FROM unify.train();
SELECT * FROM unify.score_pairs();
SELECT * FROM unify.resolve();
