-- Run after ALTER EXTENSION customer_unify UPDATE in the database before.sql filled under 0.1.0:
-- every row is kept, the new columns are decided, the capture triggers follow the 0.2.0 rules,
-- and the installation works on (queue, sync, resolve, erasure). Each check prints true.

-- Progress notices carry timings: warnings and errors only.
SET client_min_messages = warning;
SELECT extversion AS version FROM pg_extension WHERE extname = 'customer_unify';

-- Every row of every 0.1.0 table is still there, unchanged in every column 0.1.0 had (the
-- tombstones' hashes aside: keyed now, checked below). A record's person moved to
-- unify.record_persons in 0.3.0: records are compared with it joined.
CREATE TEMP TABLE kept (tbl text, rows_before bigint, missing bigint, added bigint);
DO $$
DECLARE
    t text;
    cols text;
    missing bigint;
    added bigint;
    before bigint;
    now_in text;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'upgrade_before' ORDER BY 1 LOOP
        SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) INTO cols
        FROM pg_attribute a
        WHERE a.attrelid = format('upgrade_before.%I', t)::regclass AND a.attnum > 0 AND NOT a.attisdropped
          AND NOT (t = 'erasures' AND a.attname = 'key_hash')
          -- The update refreshes golden records by the 0.2.0 rules: the consent proof is the
          -- statement's own time now (NULL for an undated one), and updated_at says when.
          AND NOT (t = 'persons' AND a.attname IN ('updated_at', 'consent_email_at', 'consent_phone_at', 'consent_post_at'));
        now_in := CASE WHEN t = 'records' THEN '(SELECT * FROM unify.records LEFT JOIN unify.record_persons USING (record_id)) AS r'
                       ELSE format('unify.%I', t) END;
        EXECUTE format('SELECT count(*) FROM upgrade_before.%I', t) INTO before;
        EXECUTE format('SELECT count(*) FROM (SELECT %s FROM upgrade_before.%I EXCEPT ALL SELECT %s FROM %s) x', cols, t, cols, now_in) INTO missing;
        EXECUTE format('SELECT count(*) FROM (SELECT %s FROM %s EXCEPT ALL SELECT %s FROM upgrade_before.%I) x', cols, now_in, cols, t) INTO added;
        INSERT INTO kept VALUES (t, before, missing, added);
    END LOOP;
END $$;
SELECT tbl, rows_before > 0 AS had_rows, missing, added FROM kept ORDER BY tbl;
SELECT count(*) = 24 AS every_010_table_compared FROM kept;

-- Golden records refreshed by the update: every person has display values.
SELECT count(*) AS persons, count(*) FILTER (WHERE coalesce(first_name_display, last_name_display, email_display) IS NOT NULL) AS with_display_values
FROM unify.persons WHERE coalesce(first_name, last_name, email) IS NOT NULL;

-- The mappings run as the tables' owners: the application role where it owns the table, the
-- extension's owner where a superuser does.
SELECT name, run_as::text FROM unify.sources ORDER BY source_id;
SELECT name, run_as::text FROM unify.transaction_sources ORDER BY transaction_source_id;

-- Tombstones are keyed now: each erased key hashes to its tombstone under the new secret.
SELECT count(*) AS erased_keys,
       bool_and(EXISTS (SELECT 1 FROM unify.erasures e JOIN unify.sources s USING (source_id)
                        WHERE s.name = x.source
                          AND e.key_hash = unify._key_hash((SELECT secret FROM unify._secret), x.source_key))) AS tombstones_keyed
FROM upgrade_erased x;
SELECT count(*) = 0 AS no_plain_sha256_left
FROM unify.erasures e JOIN upgrade_erased x ON e.key_hash = sha256(convert_to(x.source_key, 'UTF8'));

-- The capture triggers of the tracked sources call 0.2.0's functions: owned by unify_capture,
-- pinned search_path, not members of the extension (pg_dump keeps them with the tables).
SELECT s.name, p.proowner::regrole AS owner, p.prosecdef AS security_definer, p.proconfig AS config,
       EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') AS extension_member,
       (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = s.relation AND t.tgfoid = p.oid) AS triggers
FROM unify.sources s JOIN pg_proc p ON p.proname IN ('_capture_' || s.source_id, '_capture_truncate_' || s.source_id)
                                    AND p.pronamespace = 'unify'::regnamespace
ORDER BY s.source_id, p.proname;
SELECT count(*) AS capture_functions_not_owned_by_unify_capture FROM pg_proc
WHERE pronamespace = 'unify'::regnamespace AND proname ~ '^_capture_(truncate_)?[0-9]+$' AND proowner <> 'unify_capture'::regrole;

-- The changes queued under 0.1.0 are applied by 0.2.0; a write after the update is captured.
SELECT count(*) AS queued_before_update FROM unify.change_queue;
CREATE TEMP TABLE changed_after AS
SELECT max(r.source_key) AS source_key FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'crm';
UPDATE crm.crm_contacts SET ort = 'Altstadt' WHERE kontakt_nr::text = (SELECT source_key FROM changed_after);
SELECT unify.process_queue() >= 3 AS queue_applied;
SELECT count(*) AS queue_left FROM unify.change_queue;
SELECT count(*) AS dead_letters FROM unify.dead_letters;
SELECT r.city AS changed_before_update FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE s.name = 'crm' AND r.source_key = (SELECT min(kontakt_nr)::text FROM crm.crm_contacts);
SELECT r.city AS changed_after_update FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE s.name = 'crm' AND r.source_key = (SELECT source_key FROM changed_after);
SELECT r.first_name, r.email_key FROM unify.records r JOIN unify.sources s USING (source_id)
WHERE s.name = 'shop' AND r.source_key = (SELECT max(customer_id)::text FROM crm.shop_customers);

-- The sources whose tables a superuser owns now run as unify_admin, which may not read them:
-- sync says so per source and syncs the others.
SELECT source_name, inserted, error FROM unify.sync() ORDER BY source_name;
-- The two fixes docs/OPERATIONS.md gives: a superuser vouches for one mapping; unify_admin may
-- read the other table.
UPDATE unify.sources SET run_as = 'postgres' WHERE name = 'pos';
GRANT USAGE ON SCHEMA crm TO unify_admin;
GRANT SELECT ON crm.newsletter_signups TO unify_admin;
-- A full sync brings nothing back: every source syncs without error, erased rows stay out.
SELECT source_name, error IS NULL AS ok, inserted FROM unify.sync() ORDER BY source_name;
SELECT count(*) AS erased_rows_back FROM unify.records r JOIN unify.sources s USING (source_id)
JOIN upgrade_erased x ON x.source = s.name AND x.source_key = r.source_key;

-- Resolving again keeps the person id of every record, except where an identity event of this
-- resolve (a merge or split the new changes caused) says why.
SELECT persons > 0 AS resolved FROM unify.resolve();
SELECT count(*) AS records_changed_person_unexplained
FROM upgrade_before.records b JOIN unify.record_persons r USING (record_id)
WHERE r.person_id IS DISTINCT FROM b.person_id
  AND NOT EXISTS (SELECT 1 FROM unify.identity_events e
                  WHERE e.event_id > (SELECT max(event_id) FROM upgrade_before.identity_events)
                    AND (e.person_id IN (r.person_id, b.person_id) OR r.person_id = ANY (e.related_ids) OR b.person_id = ANY (e.related_ids)));

-- 0.2.0's own commands work on the upgraded data: status, segments, fits, an erasure.
SELECT count(*) = 4 AS status_rows, sum(failed_changes) AS failed_changes FROM unify.status;
SELECT (r ->> 'persons')::int > 0 AS segmented FROM (SELECT unify.refresh_segments((SELECT max(ordered_at)::date FROM crm.orders) + 1) AS r) x;
SELECT f ->> 'status' AS fit FROM (SELECT unify.fit_predictions((SELECT max(ordered_at)::date FROM crm.orders) + 1) AS f) x;
SELECT unify.erase_person((SELECT max(person_id) FROM unify.persons), 'after the update') IS NOT NULL AS erased_after_update;
SELECT count(*) AS secrets FROM unify._secret;
