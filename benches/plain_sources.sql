-- The plain data set's one table (benches/plain_persons.py), registered with its own column names.
SELECT unify.add_source('people', 'people', 'id', '{
  "first_name": "vorname", "last_name": "nachname", "email": "email", "phone": "telefon",
  "street": "strasse", "house_number": "hausnummer", "postcode": "plz", "city": "ort", "country": "''DE''",
  "birth_date": "geburtsdatum"}');
