-- Privileges, in one place (README.md "Security model"). Runs last, over every object of the
-- extension, so nothing created earlier keeps a grant by accident; the surface test
-- (tests/pg_regress/sql/security_catalog.sql) lists the outcome from the catalog.
--
--   PUBLIC          the cleaners and similarity functions, and the helpers a mapping calls
--   unify_admin     reads everything but the erasure secret; changes configuration and data
--                   only through the API functions (SECURITY DEFINER, run as the extension
--                   owner); writes directly only unify.segment_map, unify.action_map and
--                   unify.exchange_rates
--   unify_reader    the views for BI tools, identifiers included, and the consented audiences
--   unify_analyst   pseudonymous views: no name, e-mail, phone, street or customer number
--   unify_capture   owns the capture trigger functions; may only insert into the change queues
--                   (unify.change_queue, unify.event_queue)
--
-- A mapping (SQL text of a source or order table) runs as the role that registered it
-- (unify._run_as), never as the owner. Every function runs with search_path = pg_catalog,
-- pg_temp, except the pure Rust functions (they run no SQL) and the few SQL helpers that must
-- inline into a mapping, which qualify every call and operator instead.

DO $grants$
DECLARE
    f record;
    public_function boolean;
    pinned boolean;
    -- The SQL helpers a mapping calls (they must inline into it, so they are qualified instead
    -- of pinned) and the field list its validation reads: executable by every role.
    mapping_helpers constant text[] := ARRAY['parse_flag', '_date_text', '_timestamptz', 'canonical_fields', '_canonical_field_types'];
    -- C functions that run no SQL but are STABLE (their result follows a setting: _raw_values
    -- writes timestamps in the session's time zone): not pinned either, as the IMMUTABLE ones.
    -- A pinned search_path costs a GUC change around every call (sync calls it once per row).
    no_sql_stable constant text[] := ARRAY['_raw_values'];
BEGIN
    -- Tables, views and sequences: nothing for anyone, then what each role needs.
    EXECUTE (SELECT 'REVOKE ALL ON ' || string_agg(c.oid::regclass::text, ', ') || ' FROM PUBLIC, unify_admin, unify_reader, unify_analyst'
             FROM pg_catalog.pg_class c WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p', 'm'));
    EXECUTE (SELECT 'GRANT SELECT ON ' || string_agg(c.oid::regclass::text, ', ') || ' TO unify_admin'
             FROM pg_catalog.pg_class c WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind IN ('r', 'v', 'p', 'm')
               AND c.relname <> '_secret');

    -- Functions: EXECUTE for the owner only, then per role (from every role: an update from
    -- 0.1.0 finds grants to unify_admin on internals that 0.2.0 no longer gives).
    FOR f IN SELECT p.oid::regprocedure AS signature, p.proname, l.lanname, p.provolatile
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
             WHERE p.pronamespace = 'unify'::regnamespace AND p.prokind = 'f' LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f.signature);
        public_function := (f.lanname = 'c' AND f.provolatile = 'i' AND f.proname !~ '^_')
                           OR f.proname = ANY (mapping_helpers);
        IF public_function THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f.signature);
        END IF;
        -- Pure Rust functions (immutable, C) and the inlined mapping helpers are qualified;
        -- everything else gets the pinned search_path.
        pinned := NOT ((f.lanname = 'c' AND (f.provolatile = 'i' OR f.proname = ANY (no_sql_stable)))
                       OR (f.lanname = 'sql' AND f.proname = ANY (mapping_helpers)));
        IF pinned THEN
            EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f.signature);
        END IF;
    END LOOP;
END
$grants$;

-- The commands that change state run as the extension owner; what they run of a user's SQL they
-- run as its registering role. add_source and add_transactions run as the caller (they record
-- who that is) and write through unify._register_source / _register_transactions.
ALTER FUNCTION unify.sync(text) SECURITY DEFINER;
ALTER FUNCTION unify.remove_source(text, boolean) SECURITY DEFINER;
ALTER FUNCTION unify.retry_failed(text) SECURITY DEFINER;
ALTER FUNCTION unify.set_model(jsonb) SECURITY DEFINER;
ALTER FUNCTION unify.train(int, int) SECURITY DEFINER;
ALTER FUNCTION unify.score_pairs() SECURITY DEFINER;
ALTER FUNCTION unify.resolve() SECURITY DEFINER;
ALTER FUNCTION unify.link(bigint, bigint, text) SECURITY DEFINER;
ALTER FUNCTION unify.unlink(bigint, bigint, text) SECURITY DEFINER;
ALTER FUNCTION unify.unmerge(bigint, text) SECURITY DEFINER;
ALTER FUNCTION unify.erase_person(bigint, text, boolean) SECURITY DEFINER;
ALTER FUNCTION unify.set_survivorship(text, text, jsonb) SECURITY DEFINER;
ALTER FUNCTION unify.process_queue(int) SECURITY DEFINER;
ALTER FUNCTION unify.remove_transactions(text) SECURITY DEFINER;
ALTER FUNCTION unify.refresh_segments(date, interval) SECURITY DEFINER;
ALTER FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) SECURITY DEFINER;
-- Audiences read the golden records for unify_reader too, who has no grant on unify.persons.
ALTER FUNCTION unify.audience(text, text) SECURITY DEFINER;
ALTER FUNCTION unify.audience_google(text) SECURITY DEFINER;
ALTER FUNCTION unify.audience_meta(text) SECURITY DEFINER;
-- Read-only, for the touchpoints (a till, a call-centre screen) that may see who a customer is
-- but not read the records: it returns the few best persons for a probe, never a table.
ALTER FUNCTION unify.identify(jsonb, int) SECURITY DEFINER;
ALTER FUNCTION unify.refresh_recommendations(date, interval, int, interval, interval, interval, float8, float8, float8) SECURITY DEFINER;
ALTER FUNCTION unify.recommendations(bigint, int) SECURITY DEFINER;
ALTER FUNCTION unify.segment_recommendations(text, int) SECURITY DEFINER;
-- The outbox: consumers read and acknowledge through these, never the tables.
ALTER FUNCTION unify.create_outbox_consumer(text, boolean) SECURITY DEFINER;
ALTER FUNCTION unify.drop_outbox_consumer(text) SECURITY DEFINER;
ALTER FUNCTION unify.read_outbox(text, int) SECURITY DEFINER;
ALTER FUNCTION unify.ack_outbox(text, bigint) SECURITY DEFINER;
ALTER FUNCTION unify.purge_outbox(interval) SECURITY DEFINER;
-- Behavioural events: captured and processed as the owner, mappings run as their registering role.
ALTER FUNCTION unify.remove_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.sync_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.process_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.detect_abandoned_carts(timestamptz) SECURITY DEFINER;
-- Next best actions: computed as the owner.
ALTER FUNCTION unify.refresh_actions(bigint[]) SECURITY DEFINER;

GRANT EXECUTE ON FUNCTION
    unify.add_source(text, regclass, text, jsonb, int, boolean), unify.remove_source(text, boolean),
    unify.sync(text), unify.retry_failed(text),
    unify.set_model(jsonb), unify.get_model(), unify.train(int, int), unify.score_pairs(),
    unify.explain_match(bigint, bigint),
    unify.resolve(), unify.link(bigint, bigint, text), unify.unlink(bigint, bigint, text), unify.unmerge(bigint, text),
    unify.erase_person(bigint, text, boolean), unify.set_survivorship(text, text, jsonb),
    unify.person_records(bigint), unify.person_history(bigint),
    unify.process_queue(int),
    unify.add_transactions(text, regclass, jsonb), unify.remove_transactions(text),
    unify.refresh_segments(date, interval), unify.fit_predictions(date, text, int, float8, int, int, boolean),
    unify.refresh_recommendations(date, interval, int, interval, interval, interval, float8, float8, float8),
    unify.create_outbox_consumer(text, boolean), unify.drop_outbox_consumer(text), unify.purge_outbox(interval),
    unify.add_events(text, regclass, jsonb), unify.remove_events(text), unify.sync_events(text),
    unify.process_events(text), unify.detect_abandoned_carts(timestamptz), unify.event_fields(),
    unify.refresh_actions(bigint[]),
    -- What add_source and add_transactions call as the caller: text builders and the
    -- registration, which records the caller itself.
    unify._staged_expression(text, text), unify._transaction_expression(jsonb, text),
    unify._require_select(regclass, text),
    unify._citus_check_source(regclass, text, boolean), unify._placement(regclass), unify._citus_present(),
    unify._citus_method(regclass),
    unify._register_source(text, oid, text, text, jsonb, int, boolean), unify._register_transactions(text, oid, text, jsonb),
    unify._event_expression(jsonb, text), unify._register_events(text, oid, text, jsonb)
TO unify_admin;

-- Identifying a customer at a touchpoint: for the admin and the reader (who sees identifiers
-- in customer_360 anyway); never for the pseudonymous analyst.
GRANT EXECUTE ON FUNCTION unify.identify(jsonb, int) TO unify_admin, unify_reader;

-- Functions the views call (a view runs its functions as the reader).
GRANT EXECUTE ON FUNCTION unify._status(), unify.get_model(), unify.default_segment_map(), unify.default_survivorship(),
    unify.default_action_map()
TO unify_admin, unify_reader, unify_analyst;

-- Audiences hand out direct identifiers, and hashed ones are personal data as well (GDPR
-- recital 26: a hash of an e-mail address singles the person out for whoever holds the
-- address): the roles that see identifiers already, never the pseudonymous unify_analyst.
GRANT EXECUTE ON FUNCTION unify.audience(text, text), unify.audience_google(text), unify.audience_meta(text),
    unify.audience_channels()
TO unify_admin, unify_reader;

-- The outbox's consumers (a marketing tool's connector) read and acknowledge as unify_reader or
-- unify_admin: events name persons by id, which the reader's views resolve to identifiers.
-- unify_analyst stays pseudonymous and gets none of it.
GRANT EXECUTE ON FUNCTION unify.read_outbox(text, int), unify.ack_outbox(text, bigint), unify.outbox_kinds()
TO unify_admin, unify_reader;

GRANT INSERT, UPDATE, DELETE ON unify.segment_map, unify.action_map, unify.exchange_rates TO unify_admin;
-- Products: the DBA marks what is no longer sold (for_sale) and may name products; buyers and
-- updated_at are the refresh's.
GRANT INSERT (product_id, product_name, product_category, for_sale), UPDATE (product_name, product_category, for_sale)
ON unify.products TO unify_admin;

-- Recommendations name a person only by person_id: every role may ask (they run as the owner).
GRANT EXECUTE ON FUNCTION unify.recommendations(bigint, int), unify.segment_recommendations(text, int)
TO unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.products, unify.product_neighbours, unify.recommendation_runs TO unify_reader, unify_analyst;
GRANT SELECT ON unify.person_products TO unify_reader;
GRANT USAGE ON SEQUENCE unify.segment_map_rule_id_seq, unify.action_map_rule_id_seq TO unify_admin;

GRANT SELECT ON unify.customer_360, unify.segment_summary, unify.segments, unify.segment_history, unify.segment_runs,
    unify.predictions, unify.prediction_fits, unify.segment_rules, unify.segment_map_cells, unify.households,
    unify.survivorship_rules, unify.match_report, unify.blocking_stats, unify.status, unify.name_frequencies,
    unify.queue_stats, unify.dead_letters, unify.outbox_status,
    unify.person_activity, unify.open_carts, unify.abandoned_carts, unify.person_actions, unify.action_rules
TO unify_reader;

GRANT SELECT ON unify.analyst_persons, unify.segment_summary, unify.segment_runs, unify.prediction_fits,
    unify.segment_rules, unify.segment_map_cells, unify.action_rules
TO unify_analyst;

GRANT INSERT ON unify.change_queue, unify.event_queue TO unify_capture;
