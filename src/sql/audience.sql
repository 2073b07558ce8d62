-- Consented audiences (issue 26): the persons of a segment whose consent covers a channel, with
-- the identifiers that channel needs: contact data for the company's own channels, identifiers
-- normalised and SHA-256-hashed as Google Customer Match and Meta Custom Audiences each publish
-- it for the ad platforms (the rules and their sources: src/audience.rs, README "Audiences").
-- Consent is the golden record's (unify.persons.consent_*: the latest proven statement), so a
-- person without consent is left out and comes in after a later documented opt-in; an erased
-- person has no golden record and never appears. Privileges: see security.sql.

CREATE FUNCTION unify.audience_channels()
RETURNS TABLE (channel text, consent text, identifiers text, description text)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT v.channel, v.consent, v.identifiers, v.description
    FROM (VALUES
        (1, 'email', 'consent_email', 'e-mail, salutation, title, first and last name',
         'Your own e-mail advertising (UWG § 7 (2) no. 2: prior express consent)'),
        (2, 'phone', 'consent_phone', 'phone and mobile (E.164), salutation, title, first and last name',
         'Your own advertising calls (UWG § 7 (2) no. 1: prior express consent)'),
        (3, 'post', 'consent_post', 'postal address, salutation, title, first and last name',
         'Your own letters and catalogues'),
        (4, 'google', 'consent_email', 'SHA-256 of e-mail, phone, first and last name; country and postcode in clear',
         'Google Customer Match upload (the e-mail advertising consent is its legal basis)'),
        (5, 'meta', 'consent_email', 'SHA-256 of e-mail, phone, first and last name, zip and country',
         'Meta Custom Audiences upload (the e-mail advertising consent is its legal basis)')
    ) AS v (n, channel, consent, identifiers, description)
    ORDER BY v.n
$$;
COMMENT ON FUNCTION unify.audience_channels() IS 'The channels unify.audience knows, the consent each requires and the identifiers it returns';

-- Refuses what audience() cannot answer: a missing argument, an unknown channel, a segment
-- the segment map in effect does not name (and no person is in).
CREATE FUNCTION unify._audience_check(segment text, channel text, function_name text) RETURNS void
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    IF segment IS NULL OR channel IS NULL THEN
        RAISE EXCEPTION '%: segment and channel are required', function_name
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'For example unify.audience(''At Risk'', ''email''); the channels: SELECT * FROM unify.audience_channels().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.audience_channels() c WHERE c.channel = _audience_check.channel) THEN
        RAISE EXCEPTION '%: unknown channel "%"', function_name, channel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'One of ' || (SELECT string_agg(c.channel, ', ') FROM unify.audience_channels() c)
                         || '; what each requires: SELECT * FROM unify.audience_channels().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.segment_rules r WHERE r.segment = _audience_check.segment)
       AND NOT EXISTS (SELECT 1 FROM unify.segments s WHERE s.segment = _audience_check.segment) THEN
        RAISE EXCEPTION '%: unknown segment "%"', function_name, segment
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Segments are named by the segment map in effect: SELECT DISTINCT segment FROM unify.segment_rules.';
    END IF;
END
$$;

-- Google Customer Match: the Google Ads API's UserIdentifier fields (hashed_email,
-- hashed_phone_number, and address_info's hashed_first_name, hashed_last_name, country_code,
-- postal_code). The address goes only complete (Google matches it on all four), country and
-- postcode unhashed as Google requires. The phone is the mobile where there is one: a
-- household's shared landline is nobody's own account number.
CREATE FUNCTION unify.audience_google(segment text)
RETURNS TABLE (person_id bigint, hashed_email text, hashed_phone_number text, hashed_first_name text,
               hashed_last_name text, country_code text, postal_code text, consent_source text, consent_at timestamptz)
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._audience_check(segment, 'google', 'unify.audience_google');
    RETURN QUERY
    SELECT x.person_id, x.hashed_email, x.hashed_phone_number,
           CASE WHEN x.address_complete THEN x.hashed_first_name END,
           CASE WHEN x.address_complete THEN x.hashed_last_name END,
           CASE WHEN x.address_complete THEN x.country_code END,
           CASE WHEN x.address_complete THEN x.postal_code END,
           x.consent_email_source, x.consent_email_at
    FROM (SELECT p.person_id, p.consent_email_source, p.consent_email_at,
                 unify.google_hash_email(p.email) AS hashed_email,
                 unify.google_hash_phone(coalesce(p.mobile, p.phone), coalesce(unify.normalize_country(p.country), 'DE')) AS hashed_phone_number,
                 h.first_name AS hashed_first_name, h.last_name AS hashed_last_name, h.country_code, h.postal_code,
                 (h.first_name IS NOT NULL AND h.last_name IS NOT NULL AND h.country_code IS NOT NULL AND h.postal_code IS NOT NULL) AS address_complete
          FROM unify.segments s
          JOIN unify.persons p ON p.person_id = s.person_id
          CROSS JOIN LATERAL (SELECT unify.google_hash_name(p.first_name) AS first_name,
                                     unify.google_hash_name(p.last_name) AS last_name,
                                     unify.normalize_country(coalesce(p.country, 'DE')) AS country_code,
                                     unify.normalize_postcode(p.postcode, coalesce(unify.normalize_country(p.country), 'DE')) AS postal_code) h
          WHERE s.segment = audience_google.segment AND p.consent_email) x
    WHERE x.hashed_email IS NOT NULL OR x.hashed_phone_number IS NOT NULL OR x.address_complete
    ORDER BY x.person_id;
END
$$;
COMMENT ON FUNCTION unify.audience_google(text) IS 'Google Customer Match list of a segment: persons with e-mail advertising consent, identifiers normalised and SHA-256-hashed as Google requires';

-- Meta Custom Audiences: the multi-key schema EMAIL, PHONE, FN, LN, ZIP, COUNTRY, every value
-- hashed as Meta requires.
CREATE FUNCTION unify.audience_meta(segment text)
RETURNS TABLE (person_id bigint, email text, phone text, fn text, ln text, zip text, country text,
               consent_source text, consent_at timestamptz)
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._audience_check(segment, 'meta', 'unify.audience_meta');
    RETURN QUERY
    SELECT x.person_id, x.email, x.phone, x.fn, x.ln, x.zip, x.country, x.consent_email_source, x.consent_email_at
    FROM (SELECT p.person_id, p.consent_email_source, p.consent_email_at,
                 unify.meta_hash_email(p.email) AS email,
                 unify.meta_hash_phone(coalesce(p.mobile, p.phone), coalesce(unify.normalize_country(p.country), 'DE')) AS phone,
                 unify.meta_hash_name(p.first_name) AS fn,
                 unify.meta_hash_name(p.last_name) AS ln,
                 unify.meta_hash_zip(p.postcode, coalesce(unify.normalize_country(p.country), 'DE')) AS zip,
                 unify.meta_hash_country(coalesce(p.country, 'DE')) AS country
          FROM unify.segments s
          JOIN unify.persons p ON p.person_id = s.person_id
          WHERE s.segment = audience_meta.segment AND p.consent_email) x
    WHERE x.email IS NOT NULL OR x.phone IS NOT NULL OR (x.fn IS NOT NULL AND x.ln IS NOT NULL AND x.zip IS NOT NULL)
    ORDER BY x.person_id;
END
$$;
COMMENT ON FUNCTION unify.audience_meta(text) IS 'Meta Custom Audiences list of a segment: persons with e-mail advertising consent, EMAIL, PHONE, FN, LN, ZIP, COUNTRY normalised and SHA-256-hashed as Meta requires';

-- Every channel in one shape: the identifiers as a JSON object (own channels: contact data in
-- display form; google: the UserIdentifier fields; meta: the schema keys). Only what the
-- channel needs, and only persons it can reach.
CREATE FUNCTION unify.audience(segment text, channel text)
RETURNS TABLE (person_id bigint, consent_source text, consent_at timestamptz, identifiers jsonb)
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._audience_check(segment, channel, 'unify.audience');
    IF channel = 'google' THEN
        RETURN QUERY
        SELECT g.person_id, g.consent_source, g.consent_at,
               jsonb_strip_nulls(jsonb_build_object(
                   'hashed_email', g.hashed_email, 'hashed_phone_number', g.hashed_phone_number,
                   'address_info', CASE WHEN g.country_code IS NOT NULL THEN jsonb_build_object(
                       'hashed_first_name', g.hashed_first_name, 'hashed_last_name', g.hashed_last_name,
                       'country_code', g.country_code, 'postal_code', g.postal_code) END))
        FROM unify.audience_google(segment) g;
        RETURN;
    END IF;
    IF channel = 'meta' THEN
        RETURN QUERY
        SELECT m.person_id, m.consent_source, m.consent_at,
               jsonb_strip_nulls(jsonb_build_object('EMAIL', m.email, 'PHONE', m.phone, 'FN', m.fn, 'LN', m.ln,
                                                    'ZIP', m.zip, 'COUNTRY', m.country))
        FROM unify.audience_meta(segment) m;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT p.person_id,
           CASE channel WHEN 'email' THEN p.consent_email_source WHEN 'phone' THEN p.consent_phone_source
                        ELSE p.consent_post_source END,
           CASE channel WHEN 'email' THEN p.consent_email_at WHEN 'phone' THEN p.consent_phone_at
                        ELSE p.consent_post_at END,
           jsonb_strip_nulls(
               jsonb_build_object('salutation', p.salutation, 'title', p.title,
                                  'first_name', p.first_name_display, 'last_name', p.last_name_display,
                                  'letter_salutation', unify.letter_salutation(p.salutation, p.title, p.first_name_display, p.last_name_display))
               || CASE channel
                      WHEN 'email' THEN jsonb_build_object('email', p.email)
                      WHEN 'phone' THEN jsonb_build_object('phone', p.phone, 'mobile', p.mobile)
                      ELSE jsonb_build_object('street', p.street_display, 'house_number', p.house_number,
                                              'postcode', p.postcode, 'city', p.city_display, 'country', p.country)
                  END)
    FROM unify.segments s
    JOIN unify.persons p ON p.person_id = s.person_id
    WHERE s.segment = audience.segment
      AND CASE channel
              WHEN 'email' THEN p.consent_email AND p.email IS NOT NULL
              WHEN 'phone' THEN p.consent_phone AND coalesce(p.mobile, p.phone) IS NOT NULL
              ELSE p.consent_post AND p.street IS NOT NULL AND p.postcode IS NOT NULL AND p.city IS NOT NULL
          END
    ORDER BY p.person_id;
END
$$;
COMMENT ON FUNCTION unify.audience(text, text) IS 'The persons of a segment whose consent covers the channel (email, phone, post, google, meta), with the identifiers that channel needs (hashed for the ad platforms)';
