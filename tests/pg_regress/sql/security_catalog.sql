-- The security model as the catalog holds it (README "Security model"): every function pins
-- search_path unless it runs no SQL (pure Rust) or must inline into a mapping (then every call
-- and operator in it is schema-qualified); SECURITY DEFINER only with the pinned path; what each
-- role may execute and write. tests/security/run.sh tries the attacks these rules stop.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
RESET client_min_messages;

-- Functions without the pinned search_path: only the inlined mapping helpers (pure Rust
-- functions, C and IMMUTABLE, run no SQL and are left out here).
-- Qualified: once the pg_catalog.f( and unify.f( calls and OPERATOR(pg_catalog.x) are taken out,
-- no call is left.
SELECT p.oid::regprocedure::text AS function, l.lanname AS language,
       regexp_replace(p.prosrc, '(pg_catalog|unify)\.\w+\(|OPERATOR\(pg_catalog\.[^)]+\)', '', 'g') !~ '\w\(' AS qualified
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'unify'::regnamespace
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
  AND NOT (l.lanname = 'c' AND p.provolatile = 'i')
ORDER BY 1;
-- The C functions without it run no SQL: all IMMUTABLE (the SPI users are VOLATILE or STABLE),
-- but for unify._raw_values (STABLE: timestamps in the session's time zone; no SPI, no lookup
-- by name), which sync calls once per row.
SELECT p.oid::regprocedure AS c_function_unpinned_not_immutable
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = 'unify'::regnamespace AND l.lanname = 'c' AND p.provolatile <> 'i'
  AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
ORDER BY 1;

-- SECURITY DEFINER: the commands that change state (and the status figures), every one pinned.
SELECT p.oid::regprocedure::text AS definer, 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig) AS pinned,
       pg_get_userbyid(p.proowner) = (SELECT pg_get_userbyid(e.extowner) FROM pg_extension e WHERE e.extname = 'customer_unify') AS owned_by_extension_owner
FROM pg_proc p WHERE p.pronamespace = 'unify'::regnamespace AND p.prosecdef ORDER BY 1;

-- What PUBLIC may execute: cleaners, similarity, and the helpers a mapping calls.
SELECT p.oid::regprocedure::text AS public_function FROM pg_proc p
WHERE p.pronamespace = 'unify'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY 1;

-- What unify_admin may execute beyond PUBLIC: the API, and what add_source / add_transactions
-- call as the caller.
SELECT p.oid::regprocedure::text AS admin_function FROM pg_proc p
WHERE p.pronamespace = 'unify'::regnamespace AND has_function_privilege('unify_admin', p.oid, 'EXECUTE')
  AND NOT has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY 1;

-- Nobody but the owner runs SQL text or touches indexes directly.
SELECT f AS internal, has_function_privilege('unify_admin', f, 'EXECUTE') AS admin, has_function_privilege('unify_reader', f, 'EXECUTE') AS reader,
       has_function_privilege('public', f, 'EXECUTE') AS public
FROM unnest(ARRAY['unify._run_as(oid,text,text[])', 'unify._run_kept(text,integer,text[])', 'unify._rebuild_indexes(text[])',
                  'unify._drop_indexes(regclass,boolean)', 'unify._apply(unify.sources,text[],boolean)',
                  'unify._create_capture(integer,boolean)', 'unify._fit_purchases(text,double precision[],double precision[],double precision[],double precision[])']) f
ORDER BY 1;

-- Audiences hand out identifiers (hashed ones are personal data too): the admin and the
-- reader, never the pseudonymous analyst or PUBLIC.
SELECT f AS audience_function, has_function_privilege('unify_admin', f, 'EXECUTE') AS admin,
       has_function_privilege('unify_reader', f, 'EXECUTE') AS reader, has_function_privilege('unify_analyst', f, 'EXECUTE') AS analyst,
       has_function_privilege('public', f, 'EXECUTE') AS public
FROM unnest(ARRAY['unify.audience(text,text)', 'unify.audience_google(text)', 'unify.audience_meta(text)',
                  'unify.audience_channels()', 'unify._audience_check(text,text,text)']) f
ORDER BY 1;

-- Writes per role: unify_admin writes only the segment map and the exchange rates; the readers
-- nothing; unify_capture only inserts into the change queue.
SELECT r.rolname AS role, c.relname AS relation, string_agg(a.privilege_type, ', ' ORDER BY a.privilege_type) AS privileges
FROM pg_class c, aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
WHERE c.relnamespace = 'unify'::regnamespace AND a.privilege_type NOT IN ('SELECT')
  AND r.rolname IN ('unify_admin', 'unify_reader', 'unify_analyst', 'unify_capture')
GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS public_grants_on_tables FROM pg_class c, aclexplode(c.relacl) a
WHERE c.relnamespace = 'unify'::regnamespace AND a.grantee = 0;

-- The analyst reads only pseudonymous relations.
SELECT c.relname AS analyst_reads FROM pg_class c
WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind IN ('r', 'v') AND has_table_privilege('unify_analyst', c.oid, 'SELECT')
ORDER BY 1;
-- Issue 26: the analyst sees P(purchase) and the return probability through analyst_persons
-- only (pseudonymous), not in unify.predictions; the new internals are the owner's.
SELECT has_column_privilege('unify_analyst', 'unify.analyst_persons', 'p_purchase', 'SELECT') AS analyst_p_purchase,
       has_column_privilege('unify_analyst', 'unify.analyst_persons', 'return_probability', 'SELECT') AS analyst_return_probability,
       has_table_privilege('unify_analyst', 'unify.predictions', 'SELECT') AS analyst_reads_predictions,
       has_column_privilege('unify_reader', 'unify.customer_360', 'return_probability', 'SELECT') AS reader_return_probability,
       has_function_privilege('unify_admin', 'unify.fit_predictions(date,text,integer,double precision,integer,integer,boolean)', 'EXECUTE') AS admin_fits,
       has_function_privilege('unify_analyst', 'unify.fit_predictions(date,text,integer,double precision,integer,integer,boolean)', 'EXECUTE') AS analyst_fits,
       bool_or(has_function_privilege(r, f, 'EXECUTE')) AS anyone_runs_internals
FROM unnest(ARRAY['unify._p_purchase(text,double precision[],double precision,double precision,double precision,double precision)',
                  'unify._fit_returns(double precision[],double precision[],double precision[])', 'unify._return_counts(date)',
                  'unify._holdout_check(text,double precision)', 'unify._orders_query(date,date,boolean,boolean)']) f,
     unnest(ARRAY['public', 'unify_admin', 'unify_reader', 'unify_analyst']) r;
-- Issue 26, next best action: the readers read the actions, the analyst only the rules; only
-- unify_admin writes the map and recomputes; the internals (and the trigger functions) are the
-- owner's.
SELECT has_table_privilege('unify_reader', 'unify.person_actions', 'SELECT') AS reader_reads_actions,
       has_table_privilege('unify_analyst', 'unify.person_actions', 'SELECT') AS analyst_reads_actions,
       has_table_privilege('unify_analyst', 'unify.action_rules', 'SELECT') AS analyst_reads_rules,
       has_table_privilege('unify_reader', 'unify.action_map', 'INSERT') AS reader_writes_map,
       has_table_privilege('unify_admin', 'unify.action_map', 'INSERT') AS admin_writes_map,
       has_table_privilege('unify_admin', 'unify.person_actions', 'INSERT') AS admin_writes_actions,
       has_function_privilege('unify_admin', 'unify.refresh_actions(bigint[])', 'EXECUTE') AS admin_refreshes,
       has_function_privilege('unify_reader', 'unify.refresh_actions(bigint[])', 'EXECUTE') AS reader_refreshes,
       bool_or(has_function_privilege(r, f, 'EXECUTE')) AS anyone_runs_internals
FROM unnest(ARRAY['unify._refresh_actions(bigint[],text)', 'unify._refresh_actions_after(bigint[],text)',
                  'unify._check_action_map()', 'unify._persons_channel_changed()', 'unify._persons_actions_pending()',
                  'unify._churn_risk_threshold()']) f,
     unnest(ARRAY['public', 'unify_admin', 'unify_reader', 'unify_analyst']) r;
SELECT has_table_privilege('unify_admin', 'unify._secret', 'SELECT') AS admin_reads_secret,
       has_schema_privilege('unify_admin', 'unify', 'CREATE') AS admin_creates_in_unify;
-- The capture role: no login, no membership.
SELECT rolcanlogin, rolinherit, (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid OR m.roleid = r.oid) AS memberships
FROM pg_roles r WHERE rolname = 'unify_capture';
-- The event trigger renewing capture functions after ALTER TABLE.
SELECT evtname, evtevent, evttags, evtenabled FROM pg_event_trigger WHERE evtname LIKE 'unify%';
-- unify.status plans without JIT (on small unanalyzed tables JIT compiled for longer than the
-- query ran): its function carries jit = off.
SELECT p.proconfig FROM pg_proc p WHERE p.oid = 'unify._status()'::regprocedure;

-- A hand-made TRUNCATE of unify.records (only the owner may; CASCADE, as unify.record_persons
-- references it) takes pairs, blocking keys and the live-matching state with it.
BEGIN;
INSERT INTO unify.pairs (record_a, record_b, match_weight, match_probability, is_match, blocking_rules, weights)
VALUES (1, 2, 10, 0.99, true, '{email}', '{}');
INSERT INTO unify.block_keys VALUES (42, 1), (42, 2);
INSERT INTO unify.matching_state (blocking_rules, keys_built_at) VALUES ('[]', now()) ON CONFLICT DO NOTHING;
TRUNCATE unify.records CASCADE;
SELECT (SELECT count(*) FROM unify.pairs) AS pairs, (SELECT count(*) FROM unify.block_keys) AS block_keys,
       (SELECT count(*) FROM unify.matching_state) AS matching_state;
ROLLBACK;

-- The outbox (issue 26): consumers read and acknowledge as unify_admin or unify_reader, never as
-- the pseudonymous analyst or PUBLIC; only the admin registers, drops and purges; nobody but the
-- owner writes events (the one writer, unify._outbox_emit) or the tables.
SELECT f AS outbox_function, has_function_privilege('unify_admin', f, 'EXECUTE') AS admin,
       has_function_privilege('unify_reader', f, 'EXECUTE') AS reader, has_function_privilege('unify_analyst', f, 'EXECUTE') AS analyst,
       has_function_privilege('public', f, 'EXECUTE') AS public
FROM unnest(ARRAY['unify.read_outbox(text,integer)', 'unify.ack_outbox(text,bigint)', 'unify.create_outbox_consumer(text,boolean)',
                  'unify.drop_outbox_consumer(text)', 'unify.purge_outbox(interval)', 'unify.outbox_kinds()',
                  'unify._outbox_emit(text,bigint[],jsonb[])', 'unify._outbox_horizon()', 'unify._outbox_identity(bigint)']) f
ORDER BY 1;
SELECT c AS outbox_relation, has_table_privilege('unify_admin', c, 'SELECT') AS admin_reads,
       has_table_privilege('unify_admin', c, 'INSERT') OR has_table_privilege('unify_admin', c, 'UPDATE') OR has_table_privilege('unify_admin', c, 'DELETE') AS admin_writes,
       has_table_privilege('unify_reader', c, 'SELECT') AS reader_reads, has_table_privilege('unify_analyst', c, 'SELECT') AS analyst_reads
FROM unnest(ARRAY['unify.outbox', 'unify.outbox_consumers', 'unify.outbox_status']) c
ORDER BY 1;

-- Citus (issue 27): the placement helpers are internals, executable by unify_admin only (whom
-- add_source runs as); the reader sees placement and citus in unify.status (SECURITY DEFINER
-- underneath), and as the lowest role is refused the helpers themselves.
SELECT f AS citus_function, has_function_privilege('unify_admin', f, 'EXECUTE') AS admin,
       has_function_privilege('unify_reader', f, 'EXECUTE') AS reader, has_function_privilege('unify_analyst', f, 'EXECUTE') AS analyst,
       has_function_privilege('public', f, 'EXECUTE') AS public
FROM unnest(ARRAY['unify._citus_present()', 'unify._placement(regclass)',
                  'unify._citus_check_source(regclass,text,boolean)']::regprocedure[]) f
ORDER BY 1;
SET ROLE unify_reader;
SELECT count(*) AS sources, count(placement) AS placements, bool_or(citus) AS citus FROM unify.status;
SELECT unify._placement('unify.records');
RESET ROLE;
SET ROLE unify_analyst;
SELECT unify._citus_present();
RESET ROLE;
-- Citus scoring on the workers (issue 27): the kernel and the helpers that make and count are
-- the owner's only (score_pairs, SECURITY DEFINER, calls them): no role may call them, not even
-- unify_admin; the scratch table they make is the owner's alone (tests/citus/run.sh).
SELECT f AS citus_scoring_function, has_function_privilege('unify_admin', f, 'EXECUTE') AS admin,
       has_function_privilege('unify_reader', f, 'EXECUTE') AS reader, has_function_privilege('unify_analyst', f, 'EXECUTE') AS analyst,
       has_function_privilege('public', f, 'EXECUTE') AS public
FROM unnest(ARRAY['unify._citus_workers()', 'unify._citus_score_table()', 'unify._citus_member_table(text)',
                  (SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid = 'unify._score_block'::regproc),
                  (SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid = 'unify._tally_block'::regproc)]::regprocedure[]) f
ORDER BY 1;
SET ROLE unify_admin;
SELECT unify._citus_score_table();
SELECT unify._citus_member_table('_train_members');
RESET ROLE;
SET ROLE unify_analyst;
SELECT count(*) FROM unify._score_block('{}', '{}', '{}', 1, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
-- Training on the workers (issue 27): its kernel too.
SELECT count(*) FROM unify._tally_block('{}', 1, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
RESET ROLE;
-- Without Citus: no workers, so score_pairs scores on the coordinator (as the owner may ask).
SELECT unify._citus_workers() AS citus_workers;
-- Capture on distributed sources (issue 27): the helpers that make, drain and count the shard
-- queues and push sync's cleaners to the shards are the owner's only (add_source through
-- _register_source, process_queue, the workers and unify.status, all as the owner, call them);
-- _citus_method is read by add_source's check, as the caller: unify_admin too.
SELECT f AS citus_capture_function, has_function_privilege('unify_admin', f, 'EXECUTE') AS admin,
       has_function_privilege('unify_reader', f, 'EXECUTE') AS reader, has_function_privilege('unify_analyst', f, 'EXECUTE') AS analyst,
       has_function_privilege('public', f, 'EXECUTE') AS public
FROM unnest(ARRAY['unify._citus_method(regclass)', 'unify._citus_queue(int)', 'unify._capture_mode(unify.sources)',
                  'unify._citus_create_capture(unify.sources,boolean)', 'unify._citus_collect()', 'unify._citus_queue_depth(int)',
                  'unify._cleaned_on(regclass)', 'unify._citus_prepare_clean(boolean)', 'unify._citus_clean_statement(unify.sources,text)',
                  'unify._citus_restage(jsonb)', 'unify._citus_staged_query(int,boolean)']::regprocedure[]) f
ORDER BY 1;
SET ROLE unify_admin;
SELECT unify._citus_method('unify.records') AS method_without_citus;
SELECT unify._citus_collect();
RESET ROLE;
SET ROLE unify_reader;
SELECT count(*) AS sources, count(capture) AS captures, count(cleaned_on) AS cleaned_on FROM unify.status;
SELECT * FROM unify._citus_queue_depth(1);
RESET ROLE;
-- Without Citus nothing is moved and no source has a shard queue (the owner may ask).
SELECT unify._citus_collect() AS collected, unify._citus_queue(1) AS queue, unify._cleaned_on('unify.records') AS cleaned_on;
-- The first sync's combined cleaner and index build memory (issue 27): internal, the owner's
-- only (sync and identify, both SECURITY DEFINER, call them); the public cleaners it combines
-- stay executable by PUBLIC.
SELECT f AS combined_cleaner, has_function_privilege('unify_admin', f, 'EXECUTE') AS admin,
       has_function_privilege('unify_reader', f, 'EXECUTE') AS reader, has_function_privilege('unify_analyst', f, 'EXECUTE') AS analyst,
       has_function_privilege('public', f, 'EXECUTE') AS public
FROM unnest(ARRAY['unify._clean_contact(text,text,text,text,text,text,text,text,text,text,text,text,text,text,text)',
                  'unify._index_build_memory(integer)', 'unify._raw_values(record)', 'unify.normalize_name(text)', 'unify.normalize_phone(text,text)']::regprocedure[]) f
ORDER BY f::text;
SET ROLE unify_analyst;
SELECT unify._clean_contact(NULL, NULL, 'Anna', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
SELECT unify._index_build_memory();
SELECT unify._raw_values(ROW(1));
RESET ROLE;
-- As the owner: customer_unify.batch_memory, raised or lowered from maintenance_work_mem.
BEGIN;
SET LOCAL maintenance_work_mem = '64MB';
SET LOCAL customer_unify.batch_memory = '256MB';
SELECT unify._index_build_memory() AS batch_memory_larger;
-- Half of it for the steps in Rust (train, score_pairs, resolve), which hold their own memory
-- beside the build.
SELECT unify._index_build_memory(2) AS half_for_the_steps_in_rust;
SET LOCAL maintenance_work_mem = '512MB';
SELECT unify._index_build_memory() AS maintenance_lowered;
SET LOCAL customer_unify.batch_memory = '100GB';
SELECT unify._index_build_memory() AS capped;
SET LOCAL customer_unify.batch_memory = '64kB';
SELECT unify._index_build_memory() AS at_least_maintenance_work_mems_minimum;
SELECT unify._index_build_memory(2) AS half_at_least_the_minimum_too;
ROLLBACK;
