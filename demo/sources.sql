-- Register the demo CRM's four tables in place, with their own column names and formats.
SELECT unify.add_source('shop', 'shop_customers', 'customer_id', '{
  "email": "email", "first_name": "first_name", "last_name": "last_name", "phone": "phone",
  "street_line": "street", "postcode": "zip", "city": "city", "country": "country",
  "birth_date": "birthday", "consent_email": "newsletter", "updated_at": "updated_at"}', priority => 10);
SELECT unify.add_source('crm', 'crm_contacts', 'kontakt_nr', '{
  "salutation": "anrede", "title": "titel", "first_name": "vorname", "last_name": "nachname", "email": "e_mail", "phone": "telefon", "mobile": "mobil",
  "street": "strasse", "house_number": "hausnummer", "postcode": "plz", "city": "ort", "country": "land",
  "birth_date": "geburtsdatum", "consent_email": "email_optin", "customer_number": "kontakt_nr",
  "updated_at": "geaendert_am"}', priority => 20);
SELECT unify.add_source('pos', 'pos_loyalty_members', 'card_no', '{
  "full_name": "full_name", "phone": "phone", "postcode": "postcode", "city": "city", "country": "''DE''",
  "birth_date": "birth_date", "email": "email", "updated_at": "updated_at"}', priority => 30);
SELECT unify.add_source('newsletter', 'newsletter_signups', 'signup_id', '{
  "email": "email", "first_name": "first_name",
  "consent_email": "double_opt_in AND unsubscribed_at IS NULL", "consent_email_at": "CASE WHEN unsubscribed_at IS NOT NULL THEN unsubscribed_at::timestamptz WHEN double_opt_in THEN signed_up_at END", "updated_at": "signed_up_at"}', priority => 40);
