-- The baseline of benches/sources.sh (included by sources.sql and sources_repeat.sql): the same
-- columns of all four sources copied with lower(trim()), one INSERT ... SELECT into
-- baseline_copy, as pg_temp.copy_baseline() returning the rows copied.
DROP TABLE IF EXISTS baseline_copy;
CREATE TABLE baseline_copy (source text, source_key text, first_name text, last_name text, email text,
    phone text, street text, postcode text, city text, birth_date text);
CREATE FUNCTION pg_temp.copy_baseline() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    INSERT INTO baseline_copy
    SELECT 'shop', customer_id::text, lower(trim(first_name)), lower(trim(last_name)), lower(trim(email)), lower(trim(phone)),
           lower(trim(street)), lower(trim(zip)), lower(trim(city)), birthday::text FROM shop_customers
    UNION ALL
    SELECT 'crm', kontakt_nr, lower(trim(vorname)), lower(trim(nachname)), lower(trim(e_mail)), lower(trim(coalesce(mobil, telefon))),
           lower(trim(strasse || ' ' || hausnummer)), lower(trim(plz)), lower(trim(ort)), geburtsdatum FROM crm_contacts
    UNION ALL
    SELECT 'pos', card_no::text, lower(trim(full_name)), NULL, lower(trim(email)), lower(trim(phone)), NULL, lower(trim(postcode)),
           lower(trim(city)), birth_date::text FROM pos_loyalty_members
    UNION ALL
    SELECT 'newsletter', signup_id::text, lower(trim(first_name)), NULL, lower(trim(email)), NULL, NULL, NULL, NULL, NULL
    FROM newsletter_signups;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
