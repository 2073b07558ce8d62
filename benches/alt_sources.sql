-- Registers the sources of `crmgen --layout alt`: the same kind of German customers as the demo,
-- in tables the project was not tuned to (other names, "Nachname, Vorname" with titles and
-- sen./jun. in the CRM's one name field, postcode and city in one column, addresses in one line,
-- birth dates as digits). Used by benches/matching_hard.sh to measure quality on a layout the
-- project did not develop against. Source names match crmgen's truth table.
SELECT unify.add_source('webshop', 'webshop_kunden', 'kd_nr', '{
  "email": "mail", "full_name": "name", "phone": "tel", "street_line": "strasse_hnr",
  "postcode": "split_part(plz_ort, '' '', 1)", "city": "substr(plz_ort, strpos(plz_ort, '' '') + 1)",
  "country": "''DE''", "birth_date": "geb_datum", "updated_at": "geaendert"}', priority => 10);
SELECT unify.add_source('crm', 'crm_kontakte', 'id', '{
  "full_name": "name", "email": "email", "phone": "festnetz", "mobile": "handy",
  "street_line": "split_part(anschrift, '', '', 1)",
  "postcode": "split_part(split_part(anschrift, '', '', 2), '' '', 1)",
  "city": "substr(split_part(anschrift, '', '', 2), strpos(split_part(anschrift, '', '', 2), '' '') + 1)",
  "country": "''DE''", "birth_date": "geburtstag", "customer_number": "id::text", "updated_at": "stand"}', priority => 20);
SELECT unify.add_source('kasse', 'kasse_karten', 'karte', '{
  "first_name": "vorname", "last_name": "nachname", "postcode": "plz", "city": "ort", "phone": "telefon",
  "email": "email", "country": "''DE''", "birth_date": "geb", "updated_at": "aktualisiert"}', priority => 30);
SELECT unify.add_source('newsletter', 'newsletter_abos', 'abo_id', '{
  "email": "adresse", "first_name": "vorname", "consent_email": "bestaetigt", "updated_at": "angemeldet"}', priority => 40);
