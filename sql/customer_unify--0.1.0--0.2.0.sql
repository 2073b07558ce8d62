-- customer_unify 0.1.0 -> 0.2.0 (ALTER EXTENSION customer_unify UPDATE). Tested by
-- tests/upgrade/run.sh: 0.1.0 built from its own commit, used, updated, then compared with a
-- fresh 0.2.0 install (tests/upgrade/catalog.sql) and run through the whole suite.
--
-- What changes: the security model of issue 23 (mappings run as their registering role, new
-- roles unify_analyst and unify_capture, every function's search_path pinned, grants in one
-- place), faults set aside in unify.dead_letters, row locks in unify.locks, keyed tombstones;
-- issue 24's typed results between Rust and PL/pgSQL. Every function is replaced by its 0.2.0
-- definition (below, in the order pgrx generates the install script, each block naming the
-- source file it comes from); tables keep their rows and gain columns.
\echo Use "ALTER EXTENSION customer_unify UPDATE TO '0.2.0'" to load this file. \quit

-- Functions 0.2.0 no longer has, and sync(), whose result gained the column `error`.
DROP FUNCTION unify.sync(text);
-- Internal functions whose results became named columns instead of JSON picked apart by key.
DROP FUNCTION unify._cluster(bigint[], bigint[], text, text);
DROP FUNCTION unify._resolve_scope(bigint[], bigint[], text, text);
DROP FUNCTION unify._score_pairs();
DROP FUNCTION unify._fit_purchases(text, float8[], float8[], float8[], float8[]);
DROP FUNCTION unify._fit_spend(float8[], float8[], float8[]);
DROP FUNCTION unify._train(int, int);
DROP FUNCTION unify._golden_records(bigint[], boolean);
DROP FUNCTION unify._raw_query(unify.sources, text);
DROP FUNCTION unify._create_capture(int);
-- unify.status becomes a view over unify._status() with more columns.
DROP VIEW unify.status;
-- split_full_name also returns the salutation and title written in a name field.
ALTER TYPE unify.name_parts ADD ATTRIBUTE salutation text, ADD ATTRIBUTE title text;

/* <begin connected objects> */
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:8
-- bootstrap

COMMENT ON SCHEMA unify IS 'customer_unify: normalize, match, unify and segment customer records';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/persons/cluster.rs:25
-- customer_unify::sql::persons::cluster::_cluster
CREATE OR REPLACE FUNCTION "_cluster"(
	"person_ids" bigint[], /* :: std :: option :: Option < Vec < i64 > > */
	"record_ids" bigint[], /* :: std :: option :: Option < Vec < i64 > > */
	"rule" TEXT, /* & str */
	"reason" TEXT /* Option < & str > */
) RETURNS TABLE (
	"records" bigint,  /* i64 */
	"persons" bigint,  /* i64 */
	"new_persons" bigint,  /* i64 */
	"merges" bigint,  /* i64 */
	"splits" bigint,  /* i64 */
	"held_apart" bigint,  /* i64 */
	"contradictions" bigint,  /* i64 */
	"changed_records" bigint,  /* i64 */
	"touched" bigint[]  /* :: std :: option :: Option < Vec < i64 > > */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_cluster_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/segments.rs:72
-- customer_unify::sql::segments::_fit_purchases
CREATE OR REPLACE FUNCTION "_fit_purchases"(
	"model" TEXT, /* & str */
	"frequency" double precision[], /* Vec < f64 > */
	"recency" double precision[], /* Vec < f64 > */
	"age" double precision[], /* Vec < f64 > */
	"weight" double precision[] /* Vec < f64 > */
) RETURNS TABLE (
	"params" jsonb,  /* JsonB */
	"param_values" double precision[],  /* Vec < f64 > */
	"log_likelihood" double precision,  /* Option < f64 > */
	"converged" bool,  /* bool */
	"evaluations" INT,  /* i32 */
	"status" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_fit_purchases_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/segments.rs:112
-- customer_unify::sql::segments::_fit_spend
CREATE OR REPLACE FUNCTION "_fit_spend"(
	"frequency" double precision[], /* Vec < f64 > */
	"mean_spend" double precision[], /* Vec < f64 > */
	"weight" double precision[] /* Vec < f64 > */
) RETURNS TABLE (
	"params" jsonb,  /* JsonB */
	"param_values" double precision[],  /* Vec < f64 > */
	"log_likelihood" double precision,  /* Option < f64 > */
	"converged" bool,  /* bool */
	"evaluations" INT,  /* i32 */
	"status" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_fit_spend_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/forget.rs:13
-- customer_unify::sql::matching::forget::_forget_records
CREATE OR REPLACE FUNCTION "_forget_records"(
	"record_ids" bigint[], /* :: std :: option :: Option < Vec < i64 > > */
	"needles" TEXT[] DEFAULT NULL /* :: std :: option :: Option < Vec < String > > */
) RETURNS void
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_forget_records_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/persons/golden.rs:247
-- customer_unify::sql::persons::golden::_golden_records
CREATE OR REPLACE FUNCTION "_golden_records"(
	"person_ids" bigint[], /* :: std :: option :: Option < Vec < i64 > > */
	"with_households" bool DEFAULT false /* bool */
) RETURNS TABLE (
	"person_id" bigint,  /* i64 */
	"first_name" TEXT,  /* Option < String > */
	"last_name" TEXT,  /* Option < String > */
	"email" TEXT,  /* Option < String > */
	"phone" TEXT,  /* Option < String > */
	"mobile" TEXT,  /* Option < String > */
	"street" TEXT,  /* Option < String > */
	"house_number" TEXT,  /* Option < String > */
	"postcode" TEXT,  /* Option < String > */
	"city" TEXT,  /* Option < String > */
	"country" TEXT,  /* Option < String > */
	"birth_date" TEXT,  /* Option < String > */
	"company" TEXT,  /* Option < String > */
	"customer_number" TEXT,  /* Option < String > */
	"salutation" TEXT,  /* Option < String > */
	"title" TEXT,  /* Option < String > */
	"display" TEXT[],  /* Vec < Option < String > > */
	"consent_email" bool,  /* Option < bool > */
	"consent_email_source" TEXT,  /* Option < String > */
	"consent_email_epoch" double precision,  /* Option < f64 > */
	"consent_phone" bool,  /* Option < bool > */
	"consent_phone_source" TEXT,  /* Option < String > */
	"consent_phone_epoch" double precision,  /* Option < f64 > */
	"consent_post" bool,  /* Option < bool > */
	"consent_post_source" TEXT,  /* Option < String > */
	"consent_post_epoch" double precision,  /* Option < f64 > */
	"record_count" INT,  /* i32 */
	"sources" TEXT[],  /* Vec < String > */
	"first_seen_epoch" double precision,  /* f64 */
	"last_seen_epoch" double precision,  /* f64 */
	"household_id" bigint  /* Option < i64 > */
)
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_golden_records_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/persons/households.rs:88
-- customer_unify::sql::persons::households::_group_households
CREATE OR REPLACE FUNCTION "_group_households"(
	"person_ids" bigint[] /* :: std :: option :: Option < Vec < i64 > > */
) RETURNS bigint /* i64 */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_group_households_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/persons/households.rs:41
-- customer_unify::sql::persons::households::_household_keys
CREATE OR REPLACE FUNCTION "_household_keys"(
	"postcode" TEXT, /* Option < & str > */
	"street" TEXT, /* Option < & str > */
	"house_number" TEXT, /* Option < & str > */
	"phone" TEXT, /* Option < & str > */
	"email" TEXT /* Option < & str > */
) RETURNS TEXT[] /* Vec < String > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_household_keys_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/security.rs:273
-- customer_unify::sql::security::_key_hash
CREATE OR REPLACE FUNCTION "_key_hash"(
	"secret" bytea, /* & [u8] */
	"key" TEXT /* & str */
) RETURNS bytea /* Vec < u8 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_key_hash_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/segments.rs:151
-- customer_unify::sql::segments::_predict
CREATE OR REPLACE FUNCTION "_predict"(
	"model" TEXT, /* & str */
	"params" double precision[], /* Vec < f64 > */
	"spend_params" double precision[], /* :: std :: option :: Option < Vec < f64 > > */
	"frequency" double precision, /* f64 */
	"recency" double precision, /* f64 */
	"age" double precision, /* f64 */
	"mean_spend" double precision, /* Option < f64 > */
	"horizon_weeks" double precision, /* f64 */
	"month_weeks" double precision[], /* Vec < f64 > */
	"monthly_discount" double precision /* f64 */
) RETURNS double precision[] /* Vec < Option < f64 > > */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_predict_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/security.rs:142
-- customer_unify::sql::security::_register_source
CREATE OR REPLACE FUNCTION "_register_source"(
	"name" TEXT, /* & str */
	"relation" oid, /* pg_sys :: Oid */
	"relation_name" TEXT, /* & str */
	"key_column" TEXT, /* & str */
	"fields" jsonb, /* pgrx :: JsonB */
	"priority" INT, /* i32 */
	"track_changes" bool /* bool */
) RETURNS INT /* i32 */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_register_source_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/security.rs:187
-- customer_unify::sql::security::_register_transactions
CREATE OR REPLACE FUNCTION "_register_transactions"(
	"name" TEXT, /* & str */
	"relation" oid, /* pg_sys :: Oid */
	"relation_name" TEXT, /* & str */
	"fields" jsonb /* pgrx :: JsonB */
) RETURNS INT /* i32 */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_register_transactions_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/rescore.rs:150
-- customer_unify::sql::matching::rescore::_rescore
CREATE OR REPLACE FUNCTION "_rescore"(
	"record_ids" bigint[], /* Vec < i64 > */
	"before" jsonb /* JsonB */
) RETURNS bigint[] /* Vec < i64 > */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_rescore_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/security.rs:113
-- customer_unify::sql::security::_run_as
CREATE OR REPLACE FUNCTION "_run_as"(
	"role" oid, /* pg_sys :: Oid */
	"statement" TEXT, /* & str */
	"keys" TEXT[] /* :: std :: option :: Option < Vec < String > > */
) RETURNS bigint /* i64 */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_run_as_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/spi.rs:88
-- customer_unify::sql::spi::_run_kept
CREATE OR REPLACE FUNCTION "_run_kept"(
	"query" TEXT, /* & str */
	"source_id" INT, /* i32 */
	"keys" TEXT[] /* :: std :: option :: Option < Vec < String > > */
) RETURNS bigint[] /* Vec < i64 > */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_run_kept_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/mod.rs:34
-- requires:
--   bootstrap_types
--   spi::_run_kept
--   security::_run_as
--   security::_key_hash

-- Sources, records and change capture (issue 3). The work per row is done by the Rust cleaners;
-- this file holds the catalog tables and the set-based commands that run them.

-- Every role may use the cleaners; what holds PII or changes state is granted per object below.
GRANT USAGE ON SCHEMA unify TO PUBLIC;

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'unify_admin') THEN
        CREATE ROLE unify_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'unify_reader') THEN
        CREATE ROLE unify_reader NOLOGIN;
    END IF;
    -- Pseudonymous figures only: person ids, segments, predictions, postcode areas, birth years.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'unify_analyst') THEN
        CREATE ROLE unify_analyst NOLOGIN;
    END IF;
    -- Owns the capture triggers' functions: a tracked table's owner whose code those functions
    -- run (a cast of the key) gets nothing but INSERT on unify.change_queue.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'unify_capture') THEN
        CREATE ROLE unify_capture NOLOGIN NOINHERIT;
    END IF;
END
$roles$;

-- Who asked, for the audit columns: the extension's commands run as its owner (SECURITY
-- DEFINER), where current_user names the owner, not the steward. The role set with SET ROLE,
-- else the session's user.
CREATE OR REPLACE FUNCTION unify._actor() RETURNS text
STABLE LANGUAGE sql AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none' THEN session_user::text
                ELSE pg_catalog.current_setting('role') END
$$;

-- The audit columns name the role that asked, not the extension's owner (commands are SECURITY
-- DEFINER now).
ALTER TABLE unify.identity_events ALTER COLUMN actor SET DEFAULT unify._actor();
ALTER TABLE unify.model ALTER COLUMN created_by SET DEFAULT unify._actor();
ALTER TABLE unify.overrides ALTER COLUMN created_by SET DEFAULT unify._actor();
ALTER TABLE unify.prediction_fits ALTER COLUMN fitted_by SET DEFAULT unify._actor();
ALTER TABLE unify.segment_runs ALTER COLUMN ran_by SET DEFAULT unify._actor();
ALTER TABLE unify.survivorship ALTER COLUMN set_by SET DEFAULT unify._actor();

-- New columns of existing tables (NULL in existing rows until the next sync or resolve).
ALTER TABLE unify.records ADD COLUMN former_person_ids bigint[];
ALTER TABLE unify.records ADD COLUMN salutation text;
ALTER TABLE unify.records ADD COLUMN title text;
ALTER TABLE unify.records ADD COLUMN consent_email_at timestamptz;
ALTER TABLE unify.records ADD COLUMN consent_phone_at timestamptz;
ALTER TABLE unify.records ADD COLUMN consent_post_at timestamptz;
ALTER TABLE unify.persons ADD COLUMN salutation text;
ALTER TABLE unify.persons ADD COLUMN title text;
ALTER TABLE unify.persons ADD COLUMN first_name_display text;
ALTER TABLE unify.persons ADD COLUMN last_name_display text;
ALTER TABLE unify.persons ADD COLUMN street_display text;
ALTER TABLE unify.persons ADD COLUMN city_display text;
ALTER TABLE unify.persons ADD COLUMN phone_display text;
ALTER TABLE unify.persons ADD COLUMN mobile_display text;
ALTER TABLE unify.persons ADD COLUMN email_display text;

-- Each source's mapping runs as `run_as` from now on. 0.1.0 did not record who registered a
-- source (unify_admin could), so: the table's owner where that is not a superuser (what 0.2.0
-- runs such a mapping as anyway); otherwise unify_admin, the least role that could have
-- written it. A superuser takes responsibility for a mapping with
-- UPDATE unify.sources SET run_as = '<role>' WHERE name = '<source>' (docs/OPERATIONS.md).
ALTER TABLE unify.sources ADD COLUMN run_as regrole;
UPDATE unify.sources s
SET run_as = coalesce((SELECT c.relowner::regrole FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
                       WHERE c.oid = s.relation AND NOT o.rolsuper), 'unify_admin'::regrole);
ALTER TABLE unify.sources ALTER COLUMN run_as SET NOT NULL;
DO $warn$
DECLARE
    names text;
BEGIN
    SELECT string_agg(s.name, ', ' ORDER BY s.name) INTO names FROM unify.sources s WHERE s.run_as = 'unify_admin'::regrole;
    IF names IS NOT NULL THEN
        RAISE WARNING 'customer_unify 0.2.0: the mappings of sources % now run as unify_admin (their tables belong to a superuser)', names
            USING HINT = 'Grant unify_admin SELECT on those tables, or, as a superuser who vouches for a mapping: UPDATE unify.sources SET run_as = ''<role>'' WHERE name = ''<source>''. Until then their changes wait in unify.dead_letters.';
    END IF;
END
$warn$;
COMMENT ON TABLE unify.sources IS 'Registered source relations and their field mappings (unify.add_source)';
COMMENT ON TABLE unify.records IS 'One row per source row: normalized fields, blocking keys, raw mapped values';
COMMENT ON TABLE unify.erasures IS 'Source rows of erased persons (HMAC-SHA-256 of the key): never synced again';
SELECT pg_catalog.pg_extension_config_dump('unify.erasures', '');

-- The key of the erasure hashes: 244 random bits (gen_random_uuid uses pg_strong_random), made
-- by the first erasure (unify.erase_person), readable by the extension owner alone. pg_dump
-- keeps it, so tombstones still match after a restore (made at installation, the restore's
-- CREATE EXTENSION would have made another one first).
CREATE TABLE unify._secret (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    secret    bytea NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('unify._secret', '');

-- Changes that could not be applied (a mapping that fails, a value its expression rejects, a
-- dropped column): set aside here with the error, so the queue moves on and other sources never
-- wait. unify.retry_failed(source) queues them again after a fix.
CREATE TABLE unify.dead_letters (
    source_id  int NOT NULL,
    source_key text,                       -- NULL: the whole source (a truncate) failed
    sqlstate   text NOT NULL,
    message    text NOT NULL,
    detail     text,
    attempts   int NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX dead_letters_key ON unify.dead_letters (source_id, source_key) NULLS NOT DISTINCT;
COMMENT ON TABLE unify.dead_letters IS 'Source changes the queue could not apply, with the error; unify.retry_failed(source) queues them again';
SELECT pg_catalog.pg_extension_config_dump('unify.dead_letters', '');
COMMENT ON TABLE unify.change_queue IS 'Source rows changed since last processed; drained by unify.process_queue()';
-- Every queued row is deleted within moments: vacuumed after every 1,000 of them, without
-- throttling, so the idle worker's probe of the empty queue does not wade through dead rows.
ALTER TABLE unify.change_queue SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                                    autovacuum_vacuum_cost_delay = 0);

-- The extension's own locks: one row each, taken FOR UPDATE by the commands (unify._lock) for
-- the rest of their transaction. Row locks, not advisory locks: pg_advisory_lock is open to
-- every role, so any login could hold fixed advisory keys and stall the workers; a row here can
-- only be locked by a role that may update it (the owner). A sync locks its source's row of
-- unify.sources the same way (FOR NO KEY UPDATE: foreign-key checks of the queue's record writes
-- go on beside it).
CREATE TABLE unify.locks (
    name text PRIMARY KEY,
    what text NOT NULL
);
COMMENT ON TABLE unify.locks IS 'Locks of the extension (row locks taken by its commands)';
INSERT INTO unify.locks (name, what) VALUES
    ('train', 'one training at a time'),
    ('pairs', 'pairs and blocking keys: scoring, rescoring, erasure, removing a source'),
    ('persons', 'records and persons: resolve, the queue''s take and clustering, stewardship, erasure'),
    ('segments', 'one refresh_segments at a time'),
    ('predictions', 'one fit_predictions at a time');

-- Waits for the lock `name` (a row of unify.locks) and holds it to the end of the transaction.
CREATE OR REPLACE FUNCTION unify._lock(name text) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM unify.locks l WHERE l.name = _lock.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unify._lock: no lock named %', name USING ERRCODE = 'internal_error';
    END IF;
END
$$;

-- Takes the lock `name` if no other transaction holds it; whether it did.
CREATE OR REPLACE FUNCTION unify._try_lock(name text) RETURNS boolean
VOLATILE LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM unify.locks l WHERE l.name = _try_lock.name FOR UPDATE SKIP LOCKED)
$$;

SELECT pg_catalog.pg_extension_config_dump('unify.sources', '');
SELECT pg_catalog.pg_extension_config_dump('unify.sources_source_id_seq', '');
-- Records, their person ids and the queue are the extension's state, not a cache: pg_dump keeps
-- them (with the id sequences) so a restored database has the same persons and nothing pending is lost.
SELECT pg_catalog.pg_extension_config_dump('unify.records', '');
SELECT pg_catalog.pg_extension_config_dump('unify.records_record_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('unify.change_queue', '');

-- A bulk write that touches most of a table (a first sync or resolve, a full scoring) runs
-- several times faster without the table's secondary indexes, built once afterwards: 590k
-- golden rows go into unify.persons in 1.3 s instead of 8.0 s. Drops the indexes of `rel` that
-- back no constraint (with `constraints`, all of them) when the current user owns the table,
-- and returns the statements that rebuild them as the catalog defined them; returns nothing
-- for anyone else, who then writes the indexed table, only slower. The table stays locked
-- (ACCESS EXCLUSIVE) until the transaction ends.
CREATE OR REPLACE FUNCTION unify._drop_indexes(rel regclass, constraints boolean DEFAULT false) RETURNS text[]
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    index record;
    rebuild text[] := '{}';
BEGIN
    FOR index IN
        SELECT i.indexrelid::regclass AS name, c.conname, pg_get_indexdef(i.indexrelid) AS definition,
               pg_get_constraintdef(c.oid) AS constraint_definition
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid = rel AND pg_has_role(t.relowner, 'USAGE') AND (constraints OR c.oid IS NULL)
        ORDER BY i.indexrelid
    LOOP
        IF index.conname IS NULL THEN
            EXECUTE format('DROP INDEX %s', index.name);
            rebuild := rebuild || index.definition;
        ELSE
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', rel, index.conname);
            rebuild := rebuild || format('ALTER TABLE %s ADD CONSTRAINT %I %s', rel, index.conname, index.constraint_definition);
        END IF;
    END LOOP;
    RETURN rebuild;
END
$$;

CREATE OR REPLACE FUNCTION unify._rebuild_indexes(statements text[]) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    statement text;
BEGIN
    FOREACH statement IN ARRAY coalesce(statements, '{}') LOOP
        EXECUTE statement;
    END LOOP;
END
$$;

-- The canonical fields a mapping may name, in order, with the type each is staged as and the
-- function that stages a mapped expression (NULL: a cast to text): the one list (the stage
-- table, the raw jsonb, the staging and the validation of a mapping follow it).
CREATE OR REPLACE FUNCTION unify._canonical_field_types() RETURNS TABLE (field text, stage_type text, stage_function text)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT f.field, f.stage_type, f.stage_function FROM (VALUES
        (1, 'salutation', 'text', NULL), (2, 'title', 'text', NULL),
        (3, 'first_name', 'text', NULL), (4, 'last_name', 'text', NULL), (5, 'full_name', 'text', NULL),
        (6, 'email', 'text', NULL), (7, 'phone', 'text', NULL), (8, 'mobile', 'text', NULL),
        (9, 'street', 'text', NULL), (10, 'house_number', 'text', NULL), (11, 'street_line', 'text', NULL),
        (12, 'postcode', 'text', NULL), (13, 'city', 'text', NULL), (14, 'country', 'text', NULL),
        (15, 'birth_date', 'text', 'unify._date_text'), (16, 'company', 'text', NULL),
        (17, 'customer_number', 'text', NULL), (18, 'external_id', 'text', NULL),
        (19, 'consent_email', 'boolean', 'unify.parse_flag'), (20, 'consent_email_at', 'timestamptz', 'unify._timestamptz'),
        (21, 'consent_phone', 'boolean', 'unify.parse_flag'), (22, 'consent_phone_at', 'timestamptz', 'unify._timestamptz'),
        (23, 'consent_post', 'boolean', 'unify.parse_flag'), (24, 'consent_post_at', 'timestamptz', 'unify._timestamptz'),
        (25, 'updated_at', 'timestamptz', 'unify._timestamptz')
    ) AS f (position, field, stage_type, stage_function)
    ORDER BY f.position
$$;

CREATE OR REPLACE FUNCTION unify.canonical_fields() RETURNS text[]
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT pg_catalog.array_agg(f.field) FROM unify._canonical_field_types() AS f
$$;

-- Overloads chosen by the type of the mapped expression, so a date, boolean or timestamp column
-- and a text column holding the same information both work. They run inside the mapping (as
-- the role that registered it) and inline into it, so they have no SET clause: every call and
-- operator in them is schema-qualified instead.
CREATE OR REPLACE FUNCTION unify._date_text(value date) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT pg_catalog.to_char(value, 'YYYY-MM-DD') $$;
CREATE OR REPLACE FUNCTION unify._date_text(value timestamp) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT pg_catalog.to_char(value, 'YYYY-MM-DD') $$;
CREATE OR REPLACE FUNCTION unify._date_text(value text) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT value $$;

CREATE OR REPLACE FUNCTION unify.parse_flag(value boolean) RETURNS boolean
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT value $$;
CREATE OR REPLACE FUNCTION unify.parse_flag(value integer) RETURNS boolean
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT value OPERATOR(pg_catalog.<>) 0 $$;
CREATE OR REPLACE FUNCTION unify.parse_flag(value text) RETURNS boolean
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN v OPERATOR(pg_catalog.=) ANY (ARRAY['true', 't', 'yes', 'y', 'ja', 'j', '1', 'on', 'x']) THEN true
                WHEN v OPERATOR(pg_catalog.=) ANY (ARRAY['false', 'f', 'no', 'n', 'nein', '0', 'off']) THEN false
           END
    FROM (SELECT pg_catalog.lower(pg_catalog.btrim(value))) AS x (v)
$$;
COMMENT ON FUNCTION unify.parse_flag(text) IS 'true/false from yes/no, ja/nein, 1/0, t/f, on/off, x; NULL otherwise';

CREATE OR REPLACE FUNCTION unify._timestamptz(value timestamptz) RETURNS timestamptz
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT value $$;
CREATE OR REPLACE FUNCTION unify._timestamptz(value timestamp) RETURNS timestamptz
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT value::pg_catalog.timestamptz $$;
CREATE OR REPLACE FUNCTION unify._timestamptz(value date) RETURNS timestamptz
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$ SELECT value::pg_catalog.timestamptz $$;
-- PARALLEL UNSAFE: its exception block needs a subtransaction, which parallel workers cannot start.
CREATE OR REPLACE FUNCTION unify._timestamptz(value text) RETURNS timestamptz
STABLE STRICT PARALLEL UNSAFE LANGUAGE plpgsql AS $$
BEGIN
    RETURN value::pg_catalog.timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;  -- a malformed timestamp in a text column is missing data, not a failed sync
END
$$;

-- How a mapped expression is staged: as text, or through one of the overloads above.
CREATE OR REPLACE FUNCTION unify._staged_expression(field text, expression text) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT coalesce((SELECT format('%s(%s)', f.stage_function, expression) FROM unify._canonical_field_types() AS f
                     WHERE f.field = _staged_expression.field AND f.stage_function IS NOT NULL),
                    format('(%s)::text', expression))
$$;

-- The staging of a source's rows: the user's mapping is evaluated over their table as the role
-- that registered it (unify._run_as), into this session's pg_temp.unify_source_rows; all that
-- follows (cleaners, records) reads that table as the extension. INSERT on it is granted to
-- PUBLIC: a temporary table is this session's alone, and only a mapping runs here as another role.
CREATE OR REPLACE FUNCTION unify._prepare_stage(full_read boolean) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    foreign_stage record;
BEGIN
    -- Only tables this role made itself are used: one of these names made first by another
    -- role in this session (an admin before calling sync) could carry a trigger, rule or index
    -- expression of theirs, which our writes would run as us. Such a one is dropped.
    FOR foreign_stage IN
        SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c
        WHERE c.oid IN (to_regclass('pg_temp.unify_source_rows'), to_regclass('pg_temp.unify_source_keys'))
          AND c.relowner <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
    LOOP
        EXECUTE format('DROP %s %s CASCADE',
                       CASE foreign_stage.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                            WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, foreign_stage.name);
    END LOOP;
    IF to_regclass('pg_temp.unify_source_keys') IS NULL AND to_regclass('pg_temp.unify_source_rows') IS NOT NULL THEN
        DROP TABLE pg_temp.unify_source_rows;
    END IF;
    IF to_regclass('pg_temp.unify_source_rows') IS NULL THEN
        EXECUTE (SELECT format('CREATE TEMP TABLE unify_source_rows (source_key text, %s)',
                               string_agg(format('%I %s', f.field, f.stage_type), ', '))
                 FROM unify._canonical_field_types() AS f);
        GRANT INSERT ON pg_temp.unify_source_rows TO PUBLIC;
        -- Every key a full sync saw, over all its parts: records of other keys are gone.
        CREATE TEMP TABLE IF NOT EXISTS unify_source_keys (source_key text);
    ELSIF full_read OR pg_relation_size('pg_temp.unify_source_rows') > 8 * 1024 * 1024 THEN
        -- Temporary tables are never vacuumed: a full read or a large stage starts over in a
        -- new file (a queue batch's few rows are deleted: cheaper than a new file each time).
        TRUNCATE pg_temp.unify_source_rows, pg_temp.unify_source_keys;
    ELSE
        DELETE FROM pg_temp.unify_source_rows;
        DELETE FROM pg_temp.unify_source_keys;
    END IF;
END
$$;

-- The role a mapping over `relation` runs as: the role that registered it, but the table's
-- owner when the registering role is a superuser and the owner is not (decided at every run,
-- so that a table handed to another owner after registration is read as that owner: reading a
-- table runs code its owner controls, its types' casts, which must not run as superuser).
CREATE OR REPLACE FUNCTION unify._mapping_role(run_as regrole, relation regclass) RETURNS regrole
STABLE LANGUAGE sql AS $$
    SELECT coalesce((SELECT c.relowner::regrole FROM pg_catalog.pg_class c
                     JOIN pg_catalog.pg_roles owner ON owner.oid = c.relowner
                     JOIN pg_catalog.pg_roles registrar ON registrar.oid = run_as
                     WHERE c.oid = relation AND registrar.rolsuper AND NOT owner.rolsuper), run_as)
$$;

-- The statement that stages the source rows `filter` selects (a WHERE clause over the source
-- row, alias src, or empty): every canonical field as mapped, NULL where unmapped.
CREATE OR REPLACE FUNCTION unify._stage_statement(src unify.sources, filter text) RETURNS text
STABLE LANGUAGE plpgsql AS $$
DECLARE
    staged text := format('(src.%I)::text', src.key_column);
    field  text;
BEGIN
    FOREACH field IN ARRAY unify.canonical_fields() LOOP
        IF src.fields ? field THEN
            staged := staged || format(', %s', unify._staged_expression(field, src.fields ->> field));
        ELSE
            staged := staged || ', NULL';
        END IF;
    END LOOP;
    RETURN format('INSERT INTO pg_temp.unify_source_rows (source_key, %s) SELECT %s FROM %s AS src %s',
                  array_to_string(unify.canonical_fields(), ', '), staged, src.relation, coalesce(filter, ''));
END
$$;

-- The staged rows with their raw values as jsonb (what a record was made from).
CREATE OR REPLACE FUNCTION unify._raw_query() RETURNS text
IMMUTABLE LANGUAGE sql AS $$
SELECT $q$
SELECT s.*, pg_catalog.jsonb_strip_nulls(pg_catalog.to_jsonb(s) OPERATOR(pg_catalog.-) 'source_key'::text) AS raw
FROM pg_temp.unify_source_rows AS s
$q$
$$;

-- WHERE clause selecting the source rows whose key is in the text[] parameter number `param`:
-- a parameter, not the keys spelled out, so that a queue batch's statement is the same text
-- every time and its plan can be kept (unify._run_kept).
CREATE OR REPLACE FUNCTION unify._keys_filter(src unify.sources, param int) RETURNS text
STABLE LANGUAGE sql AS $$
    SELECT format('WHERE src.%I = ANY ($%s::text[]::%s[])', src.key_column, param, format_type(a.atttypid, a.atttypmod))
    FROM pg_catalog.pg_attribute a WHERE a.attrelid = src.relation AND a.attname = src.key_column
$$;

-- The cleaners over the rows of `raw_query` (see _raw_query) whose raw values differ from the
-- record already held: unchanged rows are not normalized again. One flat level: a value used
-- twice (the region, the split street) is computed twice rather than fenced in a subquery.
CREATE OR REPLACE FUNCTION unify._normalized_query(source_id int, raw_query text) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
SELECT format($q$
SELECT raw.source_key,
       coalesce(unify.normalize_name(raw.first_name), (unify.split_full_name(raw.full_name)).first_name) AS first_name,
       coalesce(unify.normalize_name(raw.last_name), (unify.split_full_name(raw.full_name)).last_name) AS last_name,
       unify.normalize_email(raw.email) AS email,
       unify.email_match_key(raw.email) AS email_key,
       unify.normalize_phone(raw.phone, coalesce(unify.normalize_country(raw.country), 'DE')) AS phone,
       unify.normalize_phone(raw.mobile, coalesce(unify.normalize_country(raw.country), 'DE')) AS mobile,
       unify.normalize_street((unify.split_street(coalesce(raw.street_line, raw.street || coalesce(' ' || raw.house_number, '')))).street) AS street,
       (unify.split_street(coalesce(raw.street_line, raw.street || coalesce(' ' || raw.house_number, '')))).house_number AS house_number,
       unify.normalize_postcode(raw.postcode, coalesce(unify.normalize_country(raw.country), 'DE')) AS postcode,
       nullif(lower(unify.transliterate_de(btrim(raw.city))), '') AS city,
       unify.normalize_country(raw.country) AS country,
       unify.normalize_date(raw.birth_date) AS birth_date,
       nullif(btrim(raw.company), '') AS company,
       nullif(btrim(raw.customer_number), '') AS customer_number,
       nullif(btrim(raw.external_id), '') AS external_id,
       raw.consent_email, raw.consent_phone, raw.consent_post,
       raw.updated_at AS source_updated_at,
       unify.cologne_phonetic(coalesce(unify.normalize_name(raw.last_name), (unify.split_full_name(raw.full_name)).last_name)) AS last_name_phonetic,
       raw.raw,
       coalesce(unify.normalize_salutation(raw.salutation),
                (unify.split_full_name(coalesce(raw.full_name, concat_ws(' ', raw.first_name, raw.last_name)))).salutation) AS salutation,
       coalesce(unify.normalize_title(raw.title), unify.normalize_title(raw.salutation),
                (unify.split_full_name(coalesce(raw.full_name, concat_ws(' ', raw.first_name, raw.last_name)))).title) AS title,
       raw.consent_email_at, raw.consent_phone_at, raw.consent_post_at
FROM (%s) AS raw
WHERE NOT EXISTS (SELECT 1 FROM unify.records r
                  WHERE r.source_id = %2$s AND r.source_key = raw.source_key AND r.raw = raw.raw)
%3$s
$q$, raw_query, source_id,
    -- Rows of erased persons stay out; the hash is only computed for a source that has some.
    CASE WHEN EXISTS (SELECT 1 FROM unify.erasures e WHERE e.source_id = _normalized_query.source_id)
         THEN format($e$AND NOT EXISTS (SELECT 1 FROM unify.erasures e
                  WHERE e.source_id = %s AND e.key_hash = unify._key_hash((SELECT k.secret FROM unify._secret k), raw.source_key))$e$, source_id)
         ELSE '' END)
$$;

-- Raises the error of a source whose table is gone; returns the source row otherwise.
CREATE OR REPLACE FUNCTION unify._checked_source(source_name text) RETURNS unify.sources
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    src unify.sources;
    current_name text;
BEGIN
    SELECT * INTO src FROM unify.sources WHERE name = source_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'source "%" does not exist', source_name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM unify.sources lists the registered sources.';
    END IF;
    IF src.removed_at IS NOT NULL THEN
        RAISE EXCEPTION 'source "%" was removed', source_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Its records were kept. unify.remove_source(name) deletes them; unify.add_source registers the table again under another name.';
    END IF;
    SELECT format('%I.%I', n.nspname, c.relname) INTO current_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = src.relation;
    IF current_name IS NULL THEN
        RAISE EXCEPTION 'source "%": its table % no longer exists', source_name, src.relation_name
            USING ERRCODE = 'undefined_table',
                  HINT = format('Remove the source with SELECT unify.remove_source(%L), or restore the table and register it again.', source_name);
    END IF;
    IF current_name <> src.relation_name THEN
        RAISE NOTICE 'source "%": table % was renamed to %; following it', source_name, src.relation_name, current_name;
        UPDATE unify.sources SET relation_name = current_name WHERE source_id = src.source_id;
        src.relation_name := current_name;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = src.relation AND attname = src.key_column AND NOT attisdropped) THEN
        RAISE EXCEPTION 'source "%": key column % of % no longer exists', source_name, src.key_column, current_name
            USING ERRCODE = 'undefined_column',
                  HINT = 'Remove the source and register it again with its new key column.';
    END IF;
    RETURN src;
END
$$;

-- Raises 42501 unless the calling role may read `relation` (add_source, add_transactions: a
-- mapping runs with the rights of the role that registers it). SECURITY INVOKER: it asks about
-- the caller. _register_source / _register_transactions check again where no caller can skip it.
CREATE OR REPLACE FUNCTION unify._require_select(relation regclass, relation_name text) RETURNS void
STABLE LANGUAGE plpgsql AS $$
BEGIN
    IF NOT has_table_privilege(relation, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied to register %: you cannot read it', relation_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'The mapping runs with the privileges of the role that registers it.',
                  HINT = 'Register it as a role with SELECT on the table, or GRANT SELECT on it to your role.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION unify.add_source(
    name text,
    relation regclass,
    key_column text,
    fields jsonb,
    priority int DEFAULT 100,
    track_changes boolean DEFAULT true
) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    rel_kind "char";
    rel_name text;
    key_attnum smallint;
    field text;
    expression text;
    unknown text[];
    new_id int;
    identifying constant text[] := ARRAY['first_name', 'last_name', 'full_name', 'email', 'phone', 'mobile', 'customer_number', 'external_id'];
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid source name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A source name is lowercase letters, digits and underscores, starting with a letter, for example ''shop''.';
    END IF;
    IF EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = add_source.name) THEN
        RAISE EXCEPTION 'source "%" already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or unify.remove_source() the existing one first.';
    END IF;
    IF relation IS NULL OR key_column IS NULL OR fields IS NULL OR priority IS NULL OR track_changes IS NULL THEN
        RAISE EXCEPTION 'add_source: relation, key_column, fields, priority and track_changes must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO rel_kind, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relation;
    IF rel_kind NOT IN ('r', 'p', 'm') THEN
        RAISE EXCEPTION '% is not a table', rel_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Register the table behind the view, or a materialized view with track_changes => false.';
    END IF;
    IF rel_kind = 'm' AND track_changes THEN
        RAISE EXCEPTION 'changes of materialized view % cannot be tracked', rel_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Pass track_changes => false and call unify.sync() after each REFRESH.';
    END IF;
    SELECT a.attnum INTO key_attnum FROM pg_attribute a
    WHERE a.attrelid = relation AND a.attname = key_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF key_attnum IS NULL THEN
        RAISE EXCEPTION 'key column "%" does not exist in %', key_column, rel_name
            USING ERRCODE = 'undefined_column', HINT = 'key_column names the column that identifies a row, usually the primary key.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = relation AND i.indisunique AND i.indnkeyatts = 1
                   AND i.indkey[0] = key_attnum AND i.indpred IS NULL AND i.indexprs IS NULL) THEN
        RAISE EXCEPTION 'key column "%" of % is not unique', key_column, rel_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Records are kept per key: add a primary key or a unique index on %s (%I).', rel_name, key_column);
    END IF;
    -- The mapping will run as the caller: who cannot read the table cannot register it.
    PERFORM unify._require_select(relation, rel_name);
    IF jsonb_typeof(fields) <> 'object' OR fields = '{}'::jsonb THEN
        RAISE EXCEPTION 'fields must be a JSON object mapping canonical fields to columns or expressions'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"first_name": "vorname", "email": "e_mail", "phone": "coalesce(mobil, telefon)"}.';
    END IF;
    SELECT array_agg(k ORDER BY k) INTO unknown FROM jsonb_object_keys(fields) k WHERE k <> ALL (unify.canonical_fields());
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown field "%" in fields', unknown[1]
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known fields: ' || array_to_string(unify.canonical_fields(), ', ') || '.';
    END IF;
    IF NOT fields ?| identifying THEN
        RAISE EXCEPTION 'fields map nothing that identifies a person'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Map at least one of ' || array_to_string(identifying, ', ') || '.';
    END IF;
    FOR field, expression IN SELECT key, value #>> '{}' FROM jsonb_each(fields) ORDER BY key LOOP
        IF jsonb_typeof(fields -> field) <> 'string' OR btrim(expression) = '' THEN
            RAISE EXCEPTION 'field "%" must map to a column name or an SQL expression as a non-empty string', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        BEGIN
            EXECUTE format('SELECT %s FROM %s AS src LIMIT 0', unify._staged_expression(field, expression), relation);
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'field "%": % is not a valid expression over %', field, expression, rel_name
                USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                      HINT = 'Map each field to a column of the table or an SQL expression over its columns, for example "coalesce(mobil, telefon)".';
        END;
    END LOOP;

    -- The mapping will run as the caller (this function is SECURITY INVOKER): the catalog
    -- records who that is, and the capture trigger is made, by the extension's own code.
    new_id := unify._register_source(add_source.name, add_source.relation, rel_name, add_source.key_column,
                                     add_source.fields, add_source.priority, add_source.track_changes);
    RAISE NOTICE 'source "%" registered for %; load it with SELECT * FROM unify.sync(%)', name, rel_name, quote_literal(name);
    RETURN new_id;
END
$$;

-- The capture trigger of one source: a function with the key column written in (no per-row
-- catalog lookup) that only enqueues (source, key, operation). SECURITY DEFINER so that roles
-- writing to the source table need no rights on unify.change_queue, and owned by unify_capture,
-- which may do nothing but that insert: code the table's owner controls (a cast of the key's
-- type) runs with no privilege worth having. `triggers` false only replaces the functions: the
-- event trigger below does that after an ALTER TABLE, so that every session compiles them
-- anew for the new column types (PL/pgSQL keeps a plan per session and would otherwise fail
-- the application's next write with "type of parameter ... does not match").
CREATE OR REPLACE FUNCTION unify._create_capture(id int, triggers boolean) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    src unify.sources;
    key_exists boolean;
    -- A capture function that marks the source for a full read: the truncate trigger's.
    full_read constant text := $f$
CREATE OR REPLACE FUNCTION unify.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF to_regclass('unify.change_queue') IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO unify.change_queue (source_id, source_key, op) VALUES (%s, NULL, 'T');
    RETURN NULL;
END
$body$
$f$;
BEGIN
    SELECT * INTO STRICT src FROM unify.sources WHERE source_id = id;
    key_exists := EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = src.relation
                          AND a.attname = src.key_column AND a.attnum > 0 AND NOT a.attisdropped);
    -- OR REPLACE, and a guard on the queue: a DROP EXTENSION (which cannot drop these, they are
    -- not its members) leaves them behind as no-ops instead of failing every write to the
    -- source table, and a new CREATE EXTENSION + add_source replaces them.
    IF key_exists THEN
        EXECUTE format($f$
CREATE OR REPLACE FUNCTION unify.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF to_regclass('unify.change_queue') IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO unify.change_queue (source_id, source_key, op) VALUES (%s, (OLD.%I)::text, 'D');
    ELSIF TG_OP = 'UPDATE' AND OLD.%I IS DISTINCT FROM NEW.%I THEN
        INSERT INTO unify.change_queue (source_id, source_key, op)
        VALUES (%s, (OLD.%I)::text, 'D'), (%s, (NEW.%I)::text, 'I');
    ELSE
        INSERT INTO unify.change_queue (source_id, source_key, op) VALUES (%s, (NEW.%I)::text, left(TG_OP, 1)::"char");
    END IF;
    RETURN NULL;
END
$body$
$f$, '_capture_' || id, id, src.key_column, src.key_column, src.key_column,
            id, src.key_column, id, src.key_column, id, src.key_column);
    ELSE
        -- The key column was renamed or dropped: the application's writes go on; each marks
        -- the source for a full read (as a truncate does), which fails into unify.dead_letters
        -- naming the problem.
        EXECUTE format(full_read, '_capture_' || id, id);
    END IF;
    EXECUTE format(full_read, '_capture_truncate_' || id, id);
    EXECUTE format('ALTER FUNCTION unify.%I() OWNER TO unify_capture', '_capture_' || id);
    EXECUTE format('ALTER FUNCTION unify.%I() OWNER TO unify_capture', '_capture_truncate_' || id);
    EXECUTE format('REVOKE ALL ON FUNCTION unify.%I() FROM PUBLIC', '_capture_' || id);
    EXECUTE format('REVOKE ALL ON FUNCTION unify.%I() FROM PUBLIC', '_capture_truncate_' || id);
    IF triggers THEN
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION unify.%I()',
                       'unify_capture_' || id, src.relation, '_capture_' || id);
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION unify.%I()',
                       'unify_capture_truncate_' || id, src.relation, '_capture_truncate_' || id);
    END IF;
END
$$;

-- After an ALTER TABLE of a tracked table: its capture functions anew (see _create_capture).
-- Never fails the DDL: a problem here is a warning.
CREATE OR REPLACE FUNCTION unify._capture_after_alter() RETURNS event_trigger
VOLATILE LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    id int;
BEGIN
    IF to_regclass('unify.sources') IS NULL THEN
        RETURN;
    END IF;
    -- An ALTER TABLE renews the functions of the tables it changed; a change of a type or
    -- domain (which can drop or rename a key column, or change its type, through CASCADE) all.
    FOR id IN SELECT s.source_id FROM unify.sources s
              WHERE s.track_changes AND s.removed_at IS NULL
                AND (TG_TAG <> 'ALTER TABLE'
                     OR s.relation IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
                                       WHERE c.classid = 'pg_catalog.pg_class'::regclass))
    LOOP
        BEGIN
            PERFORM unify._create_capture(id, false);
        EXCEPTION WHEN others THEN
            RAISE WARNING 'customer_unify: could not renew the change capture of source %: %', id, SQLERRM;
        END;
    END LOOP;
EXCEPTION WHEN others THEN
    RAISE WARNING 'customer_unify: change capture not renewed after ALTER TABLE: %', SQLERRM;
END
$$;
CREATE EVENT TRIGGER unify_capture_after_alter ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'ALTER TYPE', 'ALTER DOMAIN', 'DROP TYPE', 'DROP DOMAIN')
    EXECUTE FUNCTION unify._capture_after_alter();

CREATE OR REPLACE FUNCTION unify._drop_capture(id int, relation regclass) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = relation) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'unify_capture_' || id, relation);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'unify_capture_truncate_' || id, relation);
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS unify.%I()', '_capture_' || id);
    EXECUTE format('DROP FUNCTION IF EXISTS unify.%I()', '_capture_truncate_' || id);
END
$$;

CREATE OR REPLACE FUNCTION unify.remove_source(name text, keep_records boolean DEFAULT false) RETURNS void
VOLATILE STRICT LANGUAGE plpgsql AS $$
DECLARE
    src unify.sources;
BEGIN
    SELECT * INTO src FROM unify.sources s WHERE s.name = remove_source.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'source "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'SELECT name FROM unify.sources lists the registered sources.';
    END IF;
    PERFORM unify._drop_capture(src.source_id, src.relation);
    DELETE FROM unify.change_queue q WHERE q.source_id = src.source_id;
    IF keep_records THEN
        UPDATE unify.sources SET removed_at = now(), track_changes = false WHERE source_id = src.source_id;
    ELSE
        -- Pairs and blocking keys have no foreign key to records (see matching.sql). Deleted
        -- under the locks of their other writers (scoring, the queue's rescoring and clustering).
        PERFORM unify._lock('pairs');
        PERFORM unify._lock('persons');
        PERFORM unify._forget_records(ARRAY(SELECT r.record_id FROM unify.records r WHERE r.source_id = src.source_id));
        DELETE FROM unify.sources WHERE source_id = src.source_id;  -- its records go with it
    END IF;
END
$$;

-- Brings unify.records of one source in line with the given rows of the source (all rows, or
-- the keys in `keys`): inserts, updates where the mapped values changed, deletes what is gone.
-- The rows are staged by the source's mapping, run as the role that registered it
-- (unify._run_as); the cleaners and the writes run here. A full sync runs in parts of about
-- 200k source rows (split by a hash of the key), with progress reported between parts (NOTICE
-- every few seconds, application_name at once). Its statements run through kept plans
-- (unify._run_kept); a queue batch leaves source_rows NULL. Errors name the source.
CREATE OR REPLACE FUNCTION unify._apply(src unify.sources, keys text[], OUT source_rows bigint, OUT inserted bigint, OUT updated bigint, OUT deleted bigint)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    parts int := 1;
    part int;
    estimate float4;
    rebuild text[];
    key_text constant text := format('(src.%I)::text', src.key_column);
    filter text;
    statement text;
    counts bigint[];
    started constant timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    error_state text;
    error_message text;
    error_detail text;
    error_hint text;
BEGIN
    inserted := 0;
    updated := 0;
    PERFORM unify._prepare_stage(keys IS NULL);
    IF keys IS NULL THEN
        SELECT greatest(c.reltuples, 0) INTO estimate FROM pg_catalog.pg_class c WHERE c.oid = src.relation;
        parts := greatest(1, ceil(estimate / 200000))::int;
        -- A first sync of a large source into a table holding fewer records: inserting into
        -- the secondary indexes costs more than building them once after (see _drop_indexes).
        IF estimate >= greatest(5000, (SELECT c.reltuples FROM pg_catalog.pg_class c WHERE c.oid = 'unify.records'::regclass))
           AND NOT EXISTS (SELECT 1 FROM unify.records r WHERE r.source_id = src.source_id) THEN
            rebuild := unify._drop_indexes('unify.records');
        END IF;
    END IF;
    FOR part IN 0 .. parts - 1 LOOP
        filter := CASE WHEN keys IS NOT NULL THEN unify._keys_filter(src, 1)
                       WHEN parts > 1 THEN format('WHERE (pg_catalog.hashtext(%s) & 2147483647) %% %s = %s', key_text, parts, part)
                       ELSE '' END;
        IF part > 0 THEN
            TRUNCATE pg_temp.unify_source_rows;
        END IF;
        BEGIN
            PERFORM unify._run_as(unify._mapping_role(src.run_as, src.relation), unify._stage_statement(src, filter), keys);
        EXCEPTION WHEN others THEN
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
                                    error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
            error_hint := format('Check the mapping against the table (SELECT fields FROM unify.sources WHERE name = %L); it runs as role %s with search_path pg_catalog, pg_temp, so qualify your own functions. After the fix, SELECT unify.retry_failed(%L).',
                                 src.name, src.run_as, src.name);
            IF coalesce(error_detail, '') = '' THEN
                RAISE EXCEPTION 'source "%": its mapping failed: %', src.name, error_message
                    USING ERRCODE = error_state, HINT = error_hint;
            END IF;
            RAISE EXCEPTION 'source "%": its mapping failed: %', src.name, error_message
                USING ERRCODE = error_state, DETAIL = error_detail, HINT = error_hint;
        END;
        IF keys IS NULL THEN
            INSERT INTO pg_temp.unify_source_keys SELECT s.source_key FROM pg_temp.unify_source_rows s;
        END IF;
        statement := format($upsert$
            WITH upsert AS (
                INSERT INTO unify.records AS r (source_id, source_key, first_name, last_name, email, email_key, phone, mobile,
                    street, house_number, postcode, city, country, birth_date, company, customer_number, external_id,
                    consent_email, consent_phone, consent_post, source_updated_at, last_name_phonetic, raw,
                    salutation, title, consent_email_at, consent_phone_at, consent_post_at)
                SELECT $1, s.source_key, s.first_name, s.last_name, s.email, s.email_key, s.phone, s.mobile,
                    s.street, s.house_number, s.postcode, s.city, s.country, s.birth_date, s.company, s.customer_number,
                    s.external_id, s.consent_email, s.consent_phone, s.consent_post, s.source_updated_at,
                    s.last_name_phonetic, s.raw, s.salutation, s.title, s.consent_email_at, s.consent_phone_at,
                    s.consent_post_at
                FROM (%s) s
                ON CONFLICT (source_id, source_key) DO UPDATE SET
                    first_name = excluded.first_name, last_name = excluded.last_name, email = excluded.email,
                    email_key = excluded.email_key, phone = excluded.phone, mobile = excluded.mobile,
                    street = excluded.street, house_number = excluded.house_number, postcode = excluded.postcode,
                    city = excluded.city, country = excluded.country, birth_date = excluded.birth_date,
                    company = excluded.company, customer_number = excluded.customer_number,
                    external_id = excluded.external_id, consent_email = excluded.consent_email,
                    consent_phone = excluded.consent_phone, consent_post = excluded.consent_post,
                    source_updated_at = excluded.source_updated_at, last_name_phonetic = excluded.last_name_phonetic,
                    raw = excluded.raw, synced_at = now(), salutation = excluded.salutation, title = excluded.title,
                    consent_email_at = excluded.consent_email_at, consent_phone_at = excluded.consent_phone_at,
                    consent_post_at = excluded.consent_post_at
                WHERE r.raw IS DISTINCT FROM excluded.raw
                RETURNING (xmax = 0) AS is_insert)
            SELECT count(*) FILTER (WHERE is_insert), count(*) FILTER (WHERE NOT is_insert) FROM upsert
            $upsert$, unify._normalized_query(src.source_id, unify._raw_query()));
        counts := unify._run_kept(statement, src.source_id, keys);
        inserted := inserted + counts[1];
        updated := updated + counts[2];
        IF parts > 1 THEN
            PERFORM set_config('application_name', format('unify.sync %s %s/%s', src.name, part + 1, parts), true);
            IF clock_timestamp() - last_notice >= interval '5 seconds' THEN
                RAISE NOTICE 'sync "%": part % of %, % inserted and % updated so far, % s',
                    src.name, part + 1, parts, inserted, updated,
                    round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
                last_notice := clock_timestamp();
            END IF;
        END IF;
    END LOOP;

    PERFORM unify._rebuild_indexes(rebuild);
    -- Records whose source row is gone: of a full sync, those whose key no part saw; of a
    -- batch, those of its keys that staged no row.
    statement := CASE WHEN keys IS NULL THEN
        'WITH gone AS (DELETE FROM unify.records r WHERE r.source_id = $1
                       AND NOT EXISTS (SELECT 1 FROM pg_temp.unify_source_keys k WHERE k.source_key = r.source_key)
                       RETURNING 1)
         SELECT count(*) FROM gone'
    ELSE
        'WITH gone AS (DELETE FROM unify.records r WHERE r.source_id = $1 AND r.source_key = ANY ($2)
                       AND NOT EXISTS (SELECT 1 FROM pg_temp.unify_source_rows s WHERE s.source_key = r.source_key)
                       RETURNING 1)
         SELECT count(*) FROM gone'
    END;
    deleted := (unify._run_kept(statement, src.source_id, keys))[1];
    IF keys IS NULL THEN
        -- After a full sync there is one record per source row.
        SELECT count(*) INTO source_rows FROM unify.records r WHERE r.source_id = src.source_id;
    END IF;
END
$$;

-- Syncing everything (a scheduled job), a source that fails is reported (WARNING, and its row
-- with `error`) and the others are synced; syncing one source raises its error.
CREATE OR REPLACE FUNCTION unify.sync(source text DEFAULT NULL)
RETURNS TABLE (source_name text, source_rows bigint, inserted bigint, updated bigint, deleted bigint, seconds numeric, error text)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    src unify.sources;
    started timestamptz;
    result record;
    n bigint;
    error_state text;
BEGIN
    IF source IS NOT NULL THEN
        PERFORM unify._checked_source(source);
    END IF;
    FOR src IN SELECT * FROM unify.sources s
               WHERE (sync.source IS NULL OR s.name = sync.source) AND s.removed_at IS NULL
               ORDER BY s.priority, s.name LOOP
        source_name := src.name; source_rows := NULL; inserted := NULL; updated := NULL; deleted := NULL; error := NULL;
        started := clock_timestamp();
        BEGIN
            src := unify._checked_source(src.name);
            -- One sync per source at a time; the change queue may run beside it.
            PERFORM 1 FROM unify.sources s WHERE s.source_id = src.source_id FOR NO KEY UPDATE;
            PERFORM set_config('application_name', format('unify.sync %s', src.name), true);
            RAISE NOTICE 'sync "%": reading %', src.name, src.relation_name;
            result := unify._apply(src, NULL);
            n := result.source_rows;
            UPDATE unify.sources s SET last_sync_at = now(), last_sync_rows = n,
                   last_sync_seconds = round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)
            WHERE s.source_id = src.source_id;
            source_rows := n;
            inserted := result.inserted; updated := result.updated; deleted := result.deleted;
        EXCEPTION WHEN others THEN
            IF sync.source IS NOT NULL THEN
                RAISE;
            END IF;
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error := MESSAGE_TEXT;
            error := format('%s (SQLSTATE %s)', error, error_state);
            RAISE WARNING 'sync "%" failed, the other sources go on: %', src.name, error;
        END;
        seconds := round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
        IF error IS NULL THEN
            RAISE NOTICE 'sync "%": % rows, % inserted, % updated, % deleted in % s', src.name, n, inserted, updated, deleted, seconds;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Queues the changes of `source` (all sources when NULL) set aside in unify.dead_letters again,
-- after the cause was fixed. Returns how many.
CREATE OR REPLACE FUNCTION unify.retry_failed(source text DEFAULT NULL) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    IF source IS NOT NULL THEN
        PERFORM unify._checked_source(source);
    END IF;
    -- The dead letters stay until their change is applied (then the queue deletes them) or
    -- fails again (then their attempts count up).
    WITH retried AS (
        SELECT d.source_id, d.source_key FROM unify.dead_letters d
        WHERE retry_failed.source IS NULL OR d.source_id = (SELECT s.source_id FROM unify.sources s WHERE s.name = retry_failed.source)
    ), queued AS (
        INSERT INTO unify.change_queue (source_id, source_key, op)
        SELECT r.source_id, r.source_key, CASE WHEN r.source_key IS NULL THEN 'T' ELSE 'U' END::"char" FROM retried r
        RETURNING 1
    )
    SELECT count(*) INTO n FROM queued;
    RETURN n;
END
$$;
COMMENT ON FUNCTION unify.retry_failed(text) IS 'Queues the changes set aside in unify.dead_letters again (after fixing the cause)';

-- Privileges: see security.sql, which grants everything of the extension in one place.
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/score.rs:51
-- customer_unify::sql::matching::score::_score_pairs
CREATE OR REPLACE FUNCTION "_score_pairs"() RETURNS TABLE (
	"candidate_pairs" bigint,  /* Option < i64 > */
	"stored_pairs" bigint,  /* i64 */
	"matches" bigint,  /* i64 */
	"forced" bigint,  /* i64 */
	"model_version" INT  /* Option < i32 > */
)
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_score_pairs_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/security.rs:280
-- customer_unify::sql::security::_scrub_json
CREATE OR REPLACE FUNCTION "_scrub_json"(
	"doc" jsonb, /* pgrx :: JsonB */
	"values" TEXT[] /* Vec < Option < String > > */
) RETURNS jsonb /* pgrx :: JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_scrub_json_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/train.rs:19
-- customer_unify::sql::matching::train::_train
CREATE OR REPLACE FUNCTION "_train"(
	"sample_pairs" INT, /* i32 */
	"max_iterations" INT /* i32 */
) RETURNS TABLE (
	"model" jsonb,  /* JsonB */
	"report" jsonb,  /* JsonB */
	"candidate_pairs" bigint,  /* i64 */
	"prior" double precision,  /* f64 */
	"expected_matches" double precision,  /* f64 */
	"converged" bool,  /* bool */
	"household_share" double precision,  /* Option < f64 > */
	"namesake_share" double precision,  /* Option < f64 > */
	"similar_name_share" double precision,  /* Option < f64 > */
	"frequency_field" TEXT[],  /* Vec < String > */
	"frequency_value" TEXT[],  /* Vec < String > */
	"frequency" double precision[]  /* Vec < f64 > */
)
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_train_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/train.rs:120
-- customer_unify::sql::matching::train::_train_sessions
CREATE OR REPLACE FUNCTION "_train_sessions"(
	"report" jsonb /* JsonB */
) RETURNS TABLE (
	"session" TEXT,  /* String */
	"pairs" bigint,  /* i64 */
	"estimated" TEXT[],  /* Vec < String > */
	"iterations" INT,  /* i32 */
	"converged" bool,  /* bool */
	"match_share" double precision,  /* f64 */
	"log_likelihood" double precision  /* Option < f64 > */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_train_sessions_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:161
-- customer_unify::sql::cleaners::cologne_phonetic
CREATE OR REPLACE FUNCTION "cologne_phonetic"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cologne_phonetic_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/similarity.rs:37
-- customer_unify::sql::similarity::damerau_levenshtein
CREATE OR REPLACE FUNCTION "damerau_levenshtein"(
	"a" TEXT, /* & str */
	"b" TEXT /* & str */
) RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'damerau_levenshtein_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/model.rs:35
-- customer_unify::sql::matching::model::default_model
CREATE OR REPLACE FUNCTION "default_model"() RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'default_model_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:119
-- customer_unify::sql::cleaners::display_name
CREATE OR REPLACE FUNCTION "display_name"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'display_name_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:167
-- customer_unify::sql::cleaners::double_metaphone
CREATE OR REPLACE FUNCTION "double_metaphone"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'double_metaphone_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:173
-- customer_unify::sql::cleaners::double_metaphone_alt
CREATE OR REPLACE FUNCTION "double_metaphone_alt"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'double_metaphone_alt_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:27
-- customer_unify::sql::cleaners::email_match_key
CREATE OR REPLACE FUNCTION "email_match_key"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'email_match_key_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/explain.rs:16
-- customer_unify::sql::matching::explain::explain_match
CREATE OR REPLACE FUNCTION "explain_match"(
	"record_a" bigint, /* i64 */
	"record_b" bigint /* i64 */
) RETURNS TABLE (
	"term" TEXT,  /* String */
	"level" TEXT,  /* Option < String > */
	"value_a" TEXT,  /* Option < String > */
	"value_b" TEXT,  /* Option < String > */
	"m" double precision,  /* Option < f64 > */
	"u" double precision,  /* Option < f64 > */
	"weight" double precision,  /* f64 */
	"note" TEXT  /* Option < String > */
)
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'explain_match_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/similarity.rs:45
-- customer_unify::sql::similarity::jaccard_tokens
CREATE OR REPLACE FUNCTION "jaccard_tokens"(
	"a" TEXT, /* & str */
	"b" TEXT /* & str */
) RETURNS double precision /* f64 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'jaccard_tokens_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/similarity.rs:24
-- customer_unify::sql::similarity::jaro_winkler
CREATE OR REPLACE FUNCTION "jaro_winkler"(
	"a" TEXT, /* & str */
	"b" TEXT /* & str */
) RETURNS double precision /* f64 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'jaro_winkler_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:125
-- customer_unify::sql::cleaners::letter_salutation
CREATE OR REPLACE FUNCTION "letter_salutation"(
	"salutation" TEXT, /* Option < & str > */
	"title" TEXT, /* Option < & str > */
	"first_name" TEXT, /* Option < & str > */
	"last_name" TEXT /* Option < & str > */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'letter_salutation_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/similarity.rs:30
-- customer_unify::sql::similarity::levenshtein
CREATE OR REPLACE FUNCTION "levenshtein"(
	"a" TEXT, /* & str */
	"b" TEXT /* & str */
) RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'levenshtein_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:143
-- customer_unify::sql::cleaners::normalize_country
CREATE OR REPLACE FUNCTION "normalize_country"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_country_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:136
-- customer_unify::sql::cleaners::normalize_date
CREATE OR REPLACE FUNCTION "normalize_date"(
	"value" TEXT /* & str */
) RETURNS date /* Option < pgrx :: datum :: Date > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_date_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:21
-- customer_unify::sql::cleaners::normalize_email
CREATE OR REPLACE FUNCTION "normalize_email"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_email_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:45
-- customer_unify::sql::cleaners::normalize_name
CREATE OR REPLACE FUNCTION "normalize_name"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_name_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:33
-- customer_unify::sql::cleaners::normalize_phone
CREATE OR REPLACE FUNCTION "normalize_phone"(
	"value" TEXT, /* & str */
	"default_region" TEXT DEFAULT 'DE' /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_phone_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:155
-- customer_unify::sql::cleaners::normalize_postcode
CREATE OR REPLACE FUNCTION "normalize_postcode"(
	"value" TEXT, /* & str */
	"country" TEXT DEFAULT 'DE' /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_postcode_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:107
-- customer_unify::sql::cleaners::normalize_salutation
CREATE OR REPLACE FUNCTION "normalize_salutation"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_salutation_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:149
-- customer_unify::sql::cleaners::normalize_street
CREATE OR REPLACE FUNCTION "normalize_street"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_street_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:113
-- customer_unify::sql::cleaners::normalize_title
CREATE OR REPLACE FUNCTION "normalize_title"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'normalize_title_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:39
-- customer_unify::sql::cleaners::phone_kind
CREATE OR REPLACE FUNCTION "phone_kind"(
	"value" TEXT, /* & str */
	"default_region" TEXT DEFAULT 'DE' /* & str */
) RETURNS TEXT /* Option < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'phone_kind_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:87
-- customer_unify::sql::cleaners::split_full_name
CREATE OR REPLACE FUNCTION "split_full_name"(
	"value" TEXT /* & str */
) RETURNS unify.name_parts /* Option < :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox ::
AllocatedByRust > > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'split_full_name_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:73
-- customer_unify::sql::cleaners::split_street
CREATE OR REPLACE FUNCTION "split_street"(
	"value" TEXT /* & str */
) RETURNS unify.street_parts /* Option < :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox ::
AllocatedByRust > > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'split_street_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/cleaners.rs:51
-- customer_unify::sql::cleaners::transliterate_de
CREATE OR REPLACE FUNCTION "transliterate_de"(
	"value" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'transliterate_de_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/matching/model.rs:41
-- customer_unify::sql::matching::model::validate_model
CREATE OR REPLACE FUNCTION "validate_model"(
	"model" jsonb /* JsonB */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'validate_model_wrapper';
COMMENT ON TABLE unify.model IS 'Match model versions (the newest is used); unify.train() and unify.set_model() add versions';
SELECT pg_catalog.pg_extension_config_dump('unify.model', '');
SELECT pg_catalog.pg_extension_config_dump('unify.model_version_seq', '');
COMMENT ON TABLE unify.pairs IS 'Candidate pairs at or above the review threshold, scored by unify.score_pairs()';
COMMENT ON TABLE unify.blocking_stats IS 'Per blocking rule: pairs produced, pairs new to it, blocks skipped as too large (last unify.score_pairs())';
COMMENT ON TABLE unify.block_keys IS 'Hashed blocking keys per record (unify.score_pairs builds, unify.process_queue maintains)';
COMMENT ON TABLE unify.matching_state IS 'Blocking rules behind unify.block_keys (one row once unify.score_pairs ran)';
-- Scored pairs and the blocking keys they came from are dumped too: a restored database
-- resolves and processes its queue without a full re-scoring.
SELECT pg_catalog.pg_extension_config_dump('unify.pairs', '');
SELECT pg_catalog.pg_extension_config_dump('unify.blocking_stats', '');
SELECT pg_catalog.pg_extension_config_dump('unify.block_keys', '');
SELECT pg_catalog.pg_extension_config_dump('unify.matching_state', '');

-- Name frequencies per model version, measured by unify.train() on the records it learned from:
-- the term-frequency adjustment of exact name matches. Part of the model, so a pair scores the
-- same in a full run and as a change, today and after the next thousand sign-ups.
-- A hand-made TRUNCATE of unify.records (only the owner may) takes what hangs on the records
-- with it: pairs and blocking keys name record ids, and live matching needs keys rebuilt.
CREATE OR REPLACE FUNCTION unify._records_truncated() RETURNS trigger
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._forget_records(NULL);
    RETURN NULL;
END
$$;
CREATE TRIGGER records_truncated AFTER TRUNCATE ON unify.records
    FOR EACH STATEMENT EXECUTE FUNCTION unify._records_truncated();
COMMENT ON TABLE unify.name_frequencies IS 'Share of records per first and last name when the model version was trained (term-frequency adjustment)';
SELECT pg_catalog.pg_extension_config_dump('unify.name_frequencies', '');

-- The model in use: the newest version, or the shipped default before any.
CREATE OR REPLACE FUNCTION unify.get_model() RETURNS jsonb
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT coalesce((SELECT m.model FROM unify.model m ORDER BY m.version DESC LIMIT 1), unify.default_model())
$$;
COMMENT ON FUNCTION unify.get_model() IS 'The match model in use (newest version of unify.model, else unify.default_model())';

CREATE OR REPLACE FUNCTION unify.set_model(model jsonb) RETURNS int
VOLATILE STRICT LANGUAGE plpgsql AS $$
DECLARE
    new_version int;
BEGIN
    INSERT INTO unify.model (model, origin) VALUES (unify.validate_model(model), 'set_model')
    RETURNING version INTO new_version;
    -- A pinned model keeps the name frequencies of the version it replaces.
    INSERT INTO unify.name_frequencies (model_version, field, value, frequency)
    SELECT new_version, f.field, f.value, f.frequency FROM unify.name_frequencies f
    WHERE f.model_version = (SELECT max(m.version) FROM unify.model m WHERE m.version < new_version);
    RETURN new_version;
END
$$;
COMMENT ON FUNCTION unify.set_model(jsonb) IS 'Pins a model (validated) as a new version; returns the version';

CREATE OR REPLACE FUNCTION unify.train(sample_pairs int DEFAULT 1000000, max_iterations int DEFAULT 100)
RETURNS TABLE (model_version int, session text, pairs bigint, estimated text[], iterations int,
               converged boolean, match_share float8, log_likelihood float8)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    trained record;   -- unify._train's row (named columns)
    new_version int;
BEGIN
    -- One training at a time; scoring may run beside it on the previous version.
    PERFORM unify._lock('train');
    SELECT * INTO STRICT trained FROM unify._train(sample_pairs, max_iterations);
    INSERT INTO unify.model (model, origin, report)
    VALUES (trained.model, 'train', trained.report)
    RETURNING version INTO new_version;
    INSERT INTO unify.name_frequencies (model_version, field, value, frequency)
    SELECT new_version, f.field, f.value, f.frequency
    FROM unnest(trained.frequency_field, trained.frequency_value, trained.frequency) AS f(field, value, frequency);
    RAISE NOTICE 'model version %: prior %, % expected matches among % candidate pairs, %',
        new_version, round(trained.prior::numeric, 12), round(trained.expected_matches::numeric),
        trained.candidate_pairs,
        CASE WHEN trained.converged THEN 'every session converged' ELSE 'NOT every session converged' END
        -- What the data says of households, for reading the household discount and namesake odds.
        || coalesce('; two people: ' || round(100 * trained.household_share::numeric, 1) || '% of pairs at one address', '')
        || coalesce(', ' || round(100 * trained.namesake_share::numeric, 1) || '% of those of one name', '')
        || coalesce(', ' || round(100 * trained.similar_name_share::numeric, 1) || '% of those of alike first names', '');
    RETURN QUERY
    SELECT new_version, s.session, s.pairs, s.estimated, s.iterations, s.converged, s.match_share, s.log_likelihood
    FROM unify._train_sessions(trained.report) s;
END
$$;
COMMENT ON FUNCTION unify.train(int, int) IS 'Estimates u (random pairs) and m (EM per blocking rule) without labels; stores a new model version';

CREATE OR REPLACE FUNCTION unify.score_pairs()
RETURNS TABLE (candidate_pairs bigint, stored_pairs bigint, matches bigint, forced bigint, model_version int, seconds numeric)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
BEGIN
    PERFORM unify._lock('pairs');
    -- Rust writes the pairs, their blocking keys and figures (unify._score_pairs).
    RETURN QUERY
    SELECT s.candidate_pairs, s.stored_pairs, s.matches, s.forced, s.model_version,
           round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)
    FROM unify._score_pairs() s;
END
$$;
COMMENT ON FUNCTION unify.score_pairs() IS 'Blocks and scores all records with the current model into unify.pairs';

-- For choosing thresholds: the weight histogram of the stored pairs (buckets of 2), matches
-- and forced matches, and what each blocking rule produced.
CREATE OR REPLACE VIEW unify.match_report AS
SELECT 'weight_histogram'::text AS section,
       format('[%s, %s)', w, w + 2) AS label,
       w::float8 AS bucket_start,
       count(*) AS pairs,
       count(*) FILTER (WHERE p.is_match) AS matches
FROM unify.pairs p, LATERAL (SELECT (floor(p.match_weight / 2) * 2)::int AS w) b
GROUP BY w
UNION ALL
SELECT 'blocking_rule', s.rule, NULL, s.pairs,
       (SELECT count(*) FROM unify.pairs p WHERE p.is_match AND s.rule = ANY (p.blocking_rules))
FROM unify.blocking_stats s
UNION ALL
SELECT 'forced_by_rule', p.forced_by, NULL, count(*), count(*)
FROM unify.pairs p WHERE p.forced_by IS NOT NULL GROUP BY p.forced_by
UNION ALL
-- Persons of three or more records held together by a link far weaker (10 bits) than their
-- typical one: a chain worth a steward's look (unify.unlink splits it).
SELECT 'weak_chain', format('person %s: weakest link %s, median %s', c.person_id, round(c.weakest::numeric, 1),
                            round(c.median::numeric, 1)),
       c.weakest, c.pairs, c.matches
FROM (SELECT ra.person_id, min(p.match_weight) FILTER (WHERE p.is_match AND p.forced_by IS NULL) AS weakest,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY p.match_weight) FILTER (WHERE p.is_match) AS median,
             count(*) AS pairs, count(*) FILTER (WHERE p.is_match) AS matches
      FROM unify.pairs p
      JOIN unify.records ra ON ra.record_id = p.record_a
      JOIN unify.records rb ON rb.record_id = p.record_b AND rb.person_id = ra.person_id
      GROUP BY ra.person_id
      HAVING count(*) FILTER (WHERE p.is_match) >= 2) c
WHERE c.weakest < c.median - 10;
COMMENT ON VIEW unify.match_report IS 'Weight histogram of scored pairs, pairs per blocking rule and per deterministic rule, persons held by a weak link';
COMMENT ON TABLE unify.persons IS 'The golden record: one row per person, each field by its survivorship rule with its display form, consent by the latest proven statement';
-- Person and household ids are what users store elsewhere: pg_dump keeps them and their sequences.
SELECT pg_catalog.pg_extension_config_dump('unify.persons', '');
SELECT pg_catalog.pg_extension_config_dump('unify.person_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('unify.household_id_seq', '');
COMMENT ON TABLE unify.overrides IS 'Must-link and cannot-link between source rows, set by unify.link/unlink/unmerge';
SELECT pg_catalog.pg_extension_config_dump('unify.overrides', '');
COMMENT ON TABLE unify.identity_events IS 'Every merge, split, link, unlink, unmerge, erasure and removal of a person: which ids, when, why, by whom';
SELECT pg_catalog.pg_extension_config_dump('unify.identity_events', '');
SELECT pg_catalog.pg_extension_config_dump('unify.identity_events_event_id_seq', '');
COMMENT ON TABLE unify.survivorship IS 'Survivorship rules set with unify.set_survivorship (fields not listed use the default)';
SELECT pg_catalog.pg_extension_config_dump('unify.survivorship', '');

CREATE OR REPLACE FUNCTION unify.default_survivorship()
RETURNS TABLE (field text, rule text, options jsonb)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    VALUES ('first_name', 'most_frequent', '{}'::jsonb),
           ('last_name', 'most_recent', '{}'),        -- a married name replaces the old one
           ('email', 'most_recent', '{}'),
           ('phone', 'most_recent', '{}'),
           ('mobile', 'most_recent', '{}'),
           ('address', 'most_recent', '{}'),          -- street, number, postcode, city, country as one
           ('birth_date', 'most_frequent', '{}'),
           ('company', 'most_recent', '{}'),
           ('customer_number', 'source_priority', '{}'),
           ('salutation', 'most_recent', '{}'),
           ('title', 'most_recent', '{}')
$$;
COMMENT ON FUNCTION unify.default_survivorship() IS 'The survivorship rule of every golden-record field when none is set';

CREATE OR REPLACE VIEW unify.survivorship_rules AS
SELECT d.field, coalesce(s.rule, d.rule) AS rule, coalesce(s.options, d.options) AS options,
       s.field IS NULL AS is_default, s.set_by, s.set_at
FROM unify.default_survivorship() d
LEFT JOIN unify.survivorship s ON s.field = d.field;
COMMENT ON VIEW unify.survivorship_rules IS 'The survivorship rule in effect for each golden-record field';

CREATE OR REPLACE VIEW unify.households AS
SELECT p.household_id,
       count(*) AS persons,
       min(p.street) AS street, min(p.house_number) AS house_number,
       min(p.postcode) AS postcode, min(p.city) AS city,
       array_agg(p.person_id ORDER BY p.person_id) AS person_ids
FROM unify.persons p
WHERE p.household_id IS NOT NULL
GROUP BY p.household_id;
COMMENT ON VIEW unify.households IS 'Persons sharing an address, a landline or a family mailbox; a level above the person';

-- unify.customer_360 (golden record + household + segment + predictions) is in segments.sql.

-- Golden records of `ids` (NULL: all persons) brought in line with their records; persons
-- without records are removed (an event says so). Returns the rows changed.
CREATE OR REPLACE FUNCTION unify._refresh_persons(ids bigint[], rule text, reason text) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    removed bigint;
    rebuild text[];
BEGIN
    -- The first resolve fills the table: faster without its secondary indexes, built after.
    IF ids IS NULL AND NOT EXISTS (SELECT 1 FROM unify.persons) THEN
        rebuild := unify._drop_indexes('unify.persons');
    END IF;
    -- Two statements, not "ids IS NULL OR ...": the few persons of a queue batch then get a
    -- cached plan instead of being planned again on every call.
    IF ids IS NULL THEN
        WITH gone AS (
            DELETE FROM unify.persons p
            WHERE NOT EXISTS (SELECT 1 FROM unify.records r WHERE r.person_id = p.person_id)
            RETURNING p.person_id
        )
        INSERT INTO unify.identity_events (event, person_id, rule, reason, details)
        SELECT 'remove', g.person_id, _refresh_persons.rule, 'no records left', NULL FROM gone g;
    ELSE
        WITH gone AS (
            DELETE FROM unify.persons p
            WHERE p.person_id = ANY (ids)
              AND NOT EXISTS (SELECT 1 FROM unify.records r WHERE r.person_id = p.person_id)
            RETURNING p.person_id
        )
        INSERT INTO unify.identity_events (event, person_id, rule, reason, details)
        SELECT 'remove', g.person_id, _refresh_persons.rule, 'no records left', NULL FROM gone g;
    END IF;
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO unify.persons AS p (person_id, first_name, last_name, email, phone, mobile, street, house_number,
        postcode, city, country, birth_date, company, customer_number,
        consent_email, consent_email_source, consent_email_at, consent_phone, consent_phone_source, consent_phone_at,
        consent_post, consent_post_source, consent_post_at, record_count, sources, first_seen, last_seen, household_id,
        salutation, title, first_name_display, last_name_display, street_display, city_display, phone_display,
        mobile_display, email_display)
    SELECT g.person_id, g.first_name, g.last_name, g.email, g.phone, g.mobile, g.street, g.house_number,
        g.postcode, g.city, g.country, g.birth_date::date, g.company, g.customer_number,
        g.consent_email, g.consent_email_source, to_timestamp(g.consent_email_epoch), g.consent_phone,
        g.consent_phone_source, to_timestamp(g.consent_phone_epoch), g.consent_post, g.consent_post_source,
        to_timestamp(g.consent_post_epoch), g.record_count, g.sources, to_timestamp(g.first_seen_epoch),
        to_timestamp(g.last_seen_epoch), g.household_id,
        -- The display array in its order (src/sql/persons/golden.rs, DISPLAY_FIELDS).
        g.salutation, g.title, g.display[1], g.display[2], g.display[3], g.display[4], g.display[5],
        g.display[6], g.display[7]
    -- All persons: their households come along (no second pass over every person).
    FROM unify._golden_records(ids, ids IS NULL) g
    ON CONFLICT (person_id) DO UPDATE SET
        first_name = excluded.first_name, last_name = excluded.last_name, email = excluded.email,
        phone = excluded.phone, mobile = excluded.mobile, street = excluded.street,
        house_number = excluded.house_number, postcode = excluded.postcode, city = excluded.city,
        country = excluded.country, birth_date = excluded.birth_date, company = excluded.company,
        customer_number = excluded.customer_number,
        consent_email = excluded.consent_email, consent_email_source = excluded.consent_email_source,
        consent_email_at = excluded.consent_email_at, consent_phone = excluded.consent_phone,
        consent_phone_source = excluded.consent_phone_source, consent_phone_at = excluded.consent_phone_at,
        consent_post = excluded.consent_post, consent_post_source = excluded.consent_post_source,
        consent_post_at = excluded.consent_post_at, record_count = excluded.record_count,
        sources = excluded.sources, first_seen = excluded.first_seen, last_seen = excluded.last_seen,
        household_id = CASE WHEN ids IS NULL THEN excluded.household_id ELSE p.household_id END,
        salutation = excluded.salutation, title = excluded.title,
        first_name_display = excluded.first_name_display, last_name_display = excluded.last_name_display,
        street_display = excluded.street_display, city_display = excluded.city_display,
        phone_display = excluded.phone_display, mobile_display = excluded.mobile_display,
        email_display = excluded.email_display,
        updated_at = now()
    WHERE (p.first_name, p.last_name, p.email, p.phone, p.mobile, p.street, p.house_number, p.postcode, p.city,
           p.country, p.birth_date, p.company, p.customer_number, p.consent_email, p.consent_email_source,
           p.consent_email_at, p.consent_phone, p.consent_phone_source, p.consent_phone_at, p.consent_post,
           p.consent_post_source, p.consent_post_at, p.record_count, p.sources, p.first_seen, p.last_seen,
           p.salutation, p.title, p.first_name_display, p.last_name_display, p.street_display, p.city_display,
           p.phone_display, p.mobile_display, p.email_display)
          IS DISTINCT FROM
          (excluded.first_name, excluded.last_name, excluded.email, excluded.phone, excluded.mobile, excluded.street,
           excluded.house_number, excluded.postcode, excluded.city, excluded.country, excluded.birth_date,
           excluded.company, excluded.customer_number, excluded.consent_email, excluded.consent_email_source,
           excluded.consent_email_at, excluded.consent_phone, excluded.consent_phone_source, excluded.consent_phone_at,
           excluded.consent_post, excluded.consent_post_source, excluded.consent_post_at, excluded.record_count,
           excluded.sources, excluded.first_seen, excluded.last_seen, excluded.salutation, excluded.title,
           excluded.first_name_display, excluded.last_name_display, excluded.street_display, excluded.city_display,
           excluded.phone_display, excluded.mobile_display, excluded.email_display)
       OR (ids IS NULL AND p.household_id IS DISTINCT FROM excluded.household_id);
    GET DIAGNOSTICS changed = ROW_COUNT;
    PERFORM unify._rebuild_indexes(rebuild);
    RETURN changed + removed;
END
$$;

-- Re-clusters the records of `person_ids` plus `record_ids` and refreshes what changed.
CREATE OR REPLACE FUNCTION unify._resolve_scope(person_ids bigint[], record_ids bigint[], rule text, reason text) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    touched bigint[];
    before unify.persons[];
    regroup bigint[];
BEGIN
    -- The given persons too: one whose records all went away has nothing left in the scope.
    touched := ARRAY(SELECT unnest(c.touched) FROM unify._cluster(person_ids, record_ids, rule, reason) c
                     UNION SELECT unnest(person_ids));
    -- Households follow from who exists and from each person's household keys (address,
    -- landline, mailbox: unify._household_keys). Grouped again: the persons that are new or
    -- whose keys change, and the households that lose a person; the others keep theirs
    -- (grouping every touched person's neighbourhood was a fifth of a queue batch, and most
    -- touched persons keep their keys).
    before := ARRAY(SELECT p FROM unify.persons p WHERE p.person_id = ANY (touched));
    PERFORM unify._refresh_persons(touched, rule, reason);
    regroup := ARRAY(
        SELECT t FROM unnest(touched) t
        EXCEPT
        SELECT p.person_id FROM unnest(before) b JOIN unify.persons p ON p.person_id = b.person_id
        WHERE unify._household_keys(p.postcode, p.street, p.house_number, p.phone, p.email)
              IS NOT DISTINCT FROM unify._household_keys(b.postcode, b.street, b.house_number, b.phone, b.email)
        UNION
        SELECT p.person_id FROM unnest(before) b JOIN unify.persons p ON p.household_id = b.household_id
        WHERE NOT EXISTS (SELECT 1 FROM unify.persons x WHERE x.person_id = b.person_id));
    PERFORM unify._group_households(regroup);
END
$$;

CREATE OR REPLACE FUNCTION unify.resolve()
RETURNS TABLE (persons bigint, records bigint, new_persons bigint, merges bigint, splits bigint,
               held_apart bigint, golden_changed bigint, households bigint, seconds numeric)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    clustered record;
    changed bigint;
BEGIN
    -- One resolve or stewardship change at a time.
    PERFORM unify._lock('persons');
    SELECT * INTO STRICT clustered FROM unify._cluster(NULL::bigint[], NULL::bigint[], 'resolve', NULL);
    -- Golden records and households of everyone.
    changed := unify._refresh_persons(NULL::bigint[], 'resolve', NULL);
    RETURN QUERY SELECT (SELECT count(*) FROM unify.persons), clustered.records,
        clustered.new_persons, clustered.merges, clustered.splits,
        clustered.held_apart, changed,
        (SELECT count(DISTINCT p.household_id) FROM unify.persons p),
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
END
$$;
COMMENT ON FUNCTION unify.resolve() IS 'Clusters matched pairs and steward overrides into persons with stable ids; refreshes golden records and households';

-- The record, checked: it exists and is not erased.
CREATE OR REPLACE FUNCTION unify._checked_record(id bigint, function_name text) RETURNS unify.records
STABLE LANGUAGE plpgsql AS $$
DECLARE
    rec unify.records;
BEGIN
    IF id IS NULL THEN
        RAISE EXCEPTION 'unify.%: record ids must not be NULL', function_name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO rec FROM unify.records r WHERE r.record_id = id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unify.%: record % does not exist', function_name, id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Record ids are unify.records.record_id; unify.person_records(person_id) lists a person''s records.';
    END IF;
    RETURN rec;
END
$$;

-- Stores a steward decision between two records (replacing an earlier one for the pair).
CREATE OR REPLACE FUNCTION unify._set_override(a unify.records, b unify.records, kind text, reason text, function_name text) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF a.record_id = b.record_id THEN
        RAISE EXCEPTION 'unify.%: a record cannot be linked with itself (record %)', function_name, a.record_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO unify.overrides AS o (source_a, key_a, source_b, key_b, kind, reason)
    SELECT x.source_id, x.source_key, y.source_id, y.source_key, kind, reason
    FROM (VALUES (a.source_id, a.source_key), (b.source_id, b.source_key)) x (source_id, source_key),
         (VALUES (a.source_id, a.source_key), (b.source_id, b.source_key)) y (source_id, source_key)
    WHERE (x.source_id, x.source_key) < (y.source_id, y.source_key)
    ON CONFLICT (source_a, key_a, source_b, key_b) DO UPDATE
    SET kind = excluded.kind, reason = excluded.reason, created_by = unify._actor(), created_at = now();
END
$$;

CREATE OR REPLACE FUNCTION unify.link(record_a bigint, record_b bigint, reason text DEFAULT NULL) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    a unify.records;
    b unify.records;
    person bigint;
BEGIN
    -- Stewardship calls queue here; the records are read after the wait, so a call works on the
    -- persons as the one before it left them.
    PERFORM unify._lock('persons');
    a := unify._checked_record(record_a, 'link');
    b := unify._checked_record(record_b, 'link');
    PERFORM unify._set_override(a, b, 'must_link', reason, 'link');
    PERFORM unify._resolve_scope(array_remove(ARRAY[a.person_id, b.person_id], NULL), ARRAY[a.record_id, b.record_id], 'link', reason);
    SELECT r.person_id INTO person FROM unify.records r WHERE r.record_id = a.record_id;
    INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
    VALUES ('link', person, array_remove(ARRAY[a.person_id, b.person_id], NULL), 'link', reason,
            jsonb_build_object('records', jsonb_build_array(a.record_id, b.record_id)));
    RETURN person;
END
$$;
COMMENT ON FUNCTION unify.link(bigint, bigint, text) IS 'Must-link: the two records are one person from now on; returns the person id';

CREATE OR REPLACE FUNCTION unify.unlink(record_a bigint, record_b bigint, reason text DEFAULT NULL) RETURNS bigint[]
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    a unify.records;
    b unify.records;
    persons bigint[];
BEGIN
    -- Stewardship calls queue here; the records are read after the wait, so a call works on the
    -- persons as the one before it left them.
    PERFORM unify._lock('persons');
    a := unify._checked_record(record_a, 'unlink');
    b := unify._checked_record(record_b, 'unlink');
    PERFORM unify._set_override(a, b, 'cannot_link', reason, 'unlink');
    PERFORM unify._resolve_scope(array_remove(ARRAY[a.person_id, b.person_id], NULL), ARRAY[a.record_id, b.record_id], 'unlink', reason);
    persons := ARRAY(SELECT r.person_id FROM unify.records r WHERE r.record_id IN (a.record_id, b.record_id) ORDER BY r.record_id = a.record_id DESC);
    INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
    VALUES ('unlink', a.person_id, persons, 'unlink', reason,
            jsonb_build_object('records', jsonb_build_array(a.record_id, b.record_id)));
    RETURN persons;
END
$$;
COMMENT ON FUNCTION unify.unlink(bigint, bigint, text) IS 'Cannot-link: the two records are never one person; splits the person if needed; returns both person ids';

CREATE OR REPLACE FUNCTION unify.unmerge(person_id bigint, reason text DEFAULT NULL) RETURNS bigint[]
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    members unify.records[];
    n int;
    persons bigint[];
BEGIN
    IF person_id IS NULL THEN
        RAISE EXCEPTION 'unify.unmerge: person_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM unify._lock('persons');
    members := ARRAY(SELECT r FROM unify.records r WHERE r.person_id = unmerge.person_id ORDER BY r.record_id);
    n := coalesce(array_length(members, 1), 0);
    IF n = 0 THEN
        RAISE EXCEPTION 'unify.unmerge: person % does not exist', person_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Person ids are unify.persons.person_id.';
    END IF;
    IF n > 1000 THEN
        RAISE EXCEPTION 'unify.unmerge: person % has % records; unmerge takes at most 1000', person_id, n
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'A cluster this large is usually a junk value shared by many records: exclude it in the model''s blocking or unlink the records in groups.';
    END IF;
    -- Every pair apart: a cannot-link between each two records of the person.
    INSERT INTO unify.overrides AS o (source_a, key_a, source_b, key_b, kind, reason)
    SELECT x.source_id, x.source_key, y.source_id, y.source_key, 'cannot_link', reason
    FROM unnest(members) x, unnest(members) y
    WHERE (x.source_id, x.source_key) < (y.source_id, y.source_key)
    ON CONFLICT (source_a, key_a, source_b, key_b) DO UPDATE
    SET kind = excluded.kind, reason = excluded.reason, created_by = unify._actor(), created_at = now();
    PERFORM unify._resolve_scope(ARRAY[person_id], NULL, 'unmerge', reason);
    persons := ARRAY(SELECT r.person_id FROM unify.records r
                     WHERE r.record_id IN (SELECT m.record_id FROM unnest(members) m) ORDER BY r.person_id);
    INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
    VALUES ('unmerge', person_id, persons, 'unmerge', reason, jsonb_build_object('records', n));
    RETURN persons;
END
$$;
COMMENT ON FUNCTION unify.unmerge(bigint, text) IS 'Splits a person back into its source records, with cannot-links so resolve does not undo it; returns the person ids';

-- Whether `haystack` quotes one of `needles` (case-insensitive): as a substring from 3 characters
-- on, as a whole word for 2 ("Li", "Ng"; as a substring they would be in every other word).
CREATE OR REPLACE FUNCTION unify._quotes_any(haystack text, needles text[]) RETURNS boolean
IMMUTABLE LANGUAGE sql AS $$
    SELECT haystack IS NOT NULL AND EXISTS (
        SELECT 1 FROM unnest(needles) v
        WHERE CASE WHEN length(v) >= 3 THEN position(lower(v) IN lower(haystack)) > 0
                   ELSE haystack ~* ('\m' || regexp_replace(v, '([^[:alnum:]])', '\\\1', 'g') || '\M') END)
$$;

CREATE OR REPLACE FUNCTION unify.erase_person(person_id bigint, reason text, delete_source_rows boolean DEFAULT false) RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    members unify.records[];
    household bigint;
    event_ref bigint;
    src unify.sources;
    keys text[];
    deleted bigint := 0;
    n bigint;
    summary jsonb;
    needles text[];
    gone_ids bigint[];
BEGIN
    IF person_id IS NULL OR reason IS NULL OR btrim(reason) = '' OR delete_source_rows IS NULL THEN
        RAISE EXCEPTION 'unify.erase_person: person_id, reason and delete_source_rows are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Give the legal reason, for example ''GDPR Art. 17 request of 2026-11-02''.';
    END IF;
    -- It deletes pairs and blocking keys too: not beside a rescoring.
    PERFORM unify._lock('pairs');
    PERFORM unify._lock('persons');
    members := ARRAY(SELECT r FROM unify.records r WHERE r.person_id = erase_person.person_id);
    IF coalesce(array_length(members, 1), 0) = 0 THEN
        RAISE EXCEPTION 'unify.erase_person: person % does not exist', person_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Person ids are unify.persons.person_id; unify.person_history(id) shows an earlier erasure.';
    END IF;
    SELECT p.household_id INTO household FROM unify.persons p WHERE p.person_id = erase_person.person_id;
    summary := jsonb_build_object('records', array_length(members, 1),
        'sources', (SELECT jsonb_agg(DISTINCT s.name) FROM unnest(members) m JOIN unify.sources s ON s.source_id = m.source_id),
        'delete_source_rows', delete_source_rows);
    INSERT INTO unify.identity_events (event, person_id, rule, reason, details)
    VALUES ('erase', person_id, 'erase_person', reason, summary) RETURNING event_id INTO event_ref;

    -- The user's rows first: a foreign key that blocks the delete stops everything here.
    IF delete_source_rows THEN
        FOR src IN SELECT s.* FROM unify.sources s WHERE s.source_id IN (SELECT DISTINCT m.source_id FROM unnest(members) m) LOOP
            keys := ARRAY(SELECT m.source_key FROM unnest(members) m WHERE m.source_id = src.source_id);
            IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = src.relation) THEN
                CONTINUE;
            END IF;
            BEGIN
                -- As the role that registered the source, as everything of the user's table.
                n := unify._run_as(unify._mapping_role(src.run_as, src.relation),
                                   format('DELETE FROM %s AS src %s', src.relation, unify._keys_filter(src, 1)), keys);
                deleted := deleted + n;
            EXCEPTION WHEN foreign_key_violation THEN
                RAISE EXCEPTION 'unify.erase_person: cannot delete the rows of person % from %: %', person_id, src.relation_name, SQLERRM
                    USING ERRCODE = 'foreign_key_violation',
                          HINT = 'Rows of your tables still reference them (orders, for example). Delete or anonymize those first, or erase with delete_source_rows => false; nothing was changed.';
            END;
        END LOOP;
    END IF;

    -- Every value the person had, for scrubbing what the extension keeps beside records and
    -- persons: normalized and as written (raw), and the source keys.
    needles := ARRAY(
        SELECT DISTINCT v FROM (
            SELECT unnest(ARRAY[m.first_name, m.last_name, m.email, m.email_key, m.phone, m.mobile, m.street,
                                m.customer_number, m.external_id, m.company, m.source_key,
                                pg_catalog.to_char(m.birth_date, 'YYYY-MM-DD')]) AS v
            FROM unnest(members) m
            UNION ALL
            SELECT j.value FROM unnest(members) m, jsonb_each_text(m.raw) j
            WHERE j.key IN ('first_name', 'last_name', 'full_name', 'email', 'phone', 'mobile', 'street', 'street_line',
                            'birth_date', 'company', 'customer_number', 'external_id')
            UNION ALL
            SELECT unnest(ARRAY[p.first_name, p.last_name, p.email, p.phone, p.mobile, p.street, p.customer_number, p.company,
                                p.first_name_display, p.last_name_display, p.street_display, p.email_display,
                                p.phone_display, p.mobile_display])
            FROM unify.persons p WHERE p.person_id = erase_person.person_id) x
        WHERE v IS NOT NULL AND length(btrim(v)) >= 2);

    INSERT INTO unify._secret (secret)
    SELECT pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text, 'UTF8'))
    ON CONFLICT DO NOTHING;
    INSERT INTO unify.erasures (source_id, key_hash, event_id)
    SELECT m.source_id, unify._key_hash((SELECT k.secret FROM unify._secret k), m.source_key), event_ref FROM unnest(members) m
    ON CONFLICT DO NOTHING;
    -- Their pairs and blocking keys, and a blocked junk value naming them.
    PERFORM unify._forget_records(ARRAY(SELECT m.record_id FROM unnest(members) m), needles);
    DELETE FROM unify.overrides o WHERE (o.source_a, o.key_a) IN (SELECT m.source_id, m.source_key FROM unnest(members) m)
                                     OR (o.source_b, o.key_b) IN (SELECT m.source_id, m.source_key FROM unnest(members) m);
    DELETE FROM unify.change_queue q WHERE (q.source_id, q.source_key) IN (SELECT m.source_id, m.source_key FROM unnest(members) m);
    DELETE FROM unify.dead_letters d WHERE (d.source_id, d.source_key) IN (SELECT m.source_id, m.source_key FROM unnest(members) m);
    -- A batch in flight keeps the records as they were before it.
    UPDATE unify.queue_work w
    SET before = (SELECT coalesce(jsonb_agg(e), '[]') FROM jsonb_array_elements(w.before) e
                  WHERE (e ->> 'record_id')::bigint NOT IN (SELECT m.record_id FROM unnest(members) m))
    WHERE w.before IS NOT NULL AND EXISTS (
        SELECT 1 FROM jsonb_array_elements(w.before) e
        WHERE (e ->> 'record_id')::bigint IN (SELECT m.record_id FROM unnest(members) m));
    DELETE FROM unify.records r WHERE r.record_id IN (SELECT m.record_id FROM unnest(members) m);
    -- No other record ever goes back to the person's id, or to an id merged into it (unify._cluster
    -- never gives back an erased id either).
    gone_ids := ARRAY(SELECT erase_person.person_id UNION SELECT unnest(m.former_person_ids) FROM unnest(members) m);
    UPDATE unify.records r
    SET former_person_ids = nullif(ARRAY(SELECT f.id FROM unnest(r.former_person_ids) WITH ORDINALITY AS f (id, n)
                                         WHERE f.id <> ALL (gone_ids) ORDER BY f.n), '{}')
    WHERE r.former_person_ids && gone_ids;
    DELETE FROM unify.segment_history h WHERE h.person_id = erase_person.person_id;
    DELETE FROM unify.persons p WHERE p.person_id = erase_person.person_id;  -- segments and predictions with it
    -- Name frequencies of names only they held at training: a frequency no greater than their
    -- records with the name times the version's smallest frequency (one record's share).
    DELETE FROM unify.name_frequencies f
    USING (SELECT n.value, count(*) AS holders
           FROM unnest(members) m,
                LATERAL (SELECT DISTINCT x FROM unnest(ARRAY[m.first_name, m.last_name, unify.transliterate_de(m.first_name),
                                                              unify.transliterate_de(m.last_name)]) x WHERE x IS NOT NULL) n (value)
           GROUP BY n.value) held
    WHERE f.value = held.value
      AND f.frequency <= held.holders * 1.000001 * (SELECT min(g.frequency) FROM unify.name_frequencies g WHERE g.model_version = f.model_version);
    -- A training report or a steward's reason may name them.
    UPDATE unify.model m SET report = unify._scrub_json(m.report, needles)
    WHERE m.report IS NOT NULL AND unify._scrub_json(m.report, needles) IS DISTINCT FROM m.report;
    UPDATE unify.identity_events e
    SET reason = CASE WHEN e.reason IS NULL THEN NULL ELSE format('(redacted: erasure event %s)', event_ref) END,
        details = CASE WHEN e.details IS NULL OR e.event_id = event_ref THEN e.details ELSE unify._scrub_json(e.details, needles) END
    WHERE (e.event_id <> event_ref AND (e.person_id = erase_person.person_id OR erase_person.person_id = ANY (e.related_ids)))
       OR unify._quotes_any(e.reason, needles);
    -- Steward reasons of decisions between other records, failures of other keys.
    UPDATE unify.overrides o SET reason = format('(redacted: erasure event %s)', event_ref)
    WHERE unify._quotes_any(o.reason, needles);
    UPDATE unify.dead_letters d SET message = format('(redacted: erasure event %s)', event_ref), detail = NULL
    WHERE unify._quotes_any(d.message, needles) OR unify._quotes_any(d.detail, needles);
    -- The rest of the household is grouped again without them.
    IF household IS NOT NULL THEN
        PERFORM unify._group_households(ARRAY(SELECT p.person_id FROM unify.persons p WHERE p.household_id = household));
    END IF;
    summary := summary || jsonb_build_object('event_id', event_ref, 'source_rows_deleted', deleted);
    UPDATE unify.identity_events e SET details = summary WHERE e.event_id = event_ref;
    RETURN summary;
END
$$;
COMMENT ON FUNCTION unify.erase_person(bigint, text, boolean) IS 'GDPR erasure: removes every PII value of the person from unify.*, keeps a tombstone event, optionally deletes the source rows';

CREATE OR REPLACE FUNCTION unify.set_survivorship(field text, rule text, options jsonb DEFAULT '{}') RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    unknown text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unify.default_survivorship() d WHERE d.field = set_survivorship.field) THEN
        RAISE EXCEPTION 'unify.set_survivorship: unknown field %', coalesce(quote_literal(field), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Fields: ' || (SELECT string_agg(d.field, ', ') FROM unify.default_survivorship() d) || '.';
    END IF;
    IF rule IS NULL OR rule NOT IN ('most_recent', 'most_frequent', 'source_priority', 'longest', 'first_non_null', 'min', 'max') THEN
        RAISE EXCEPTION 'unify.set_survivorship: unknown rule %', coalesce(quote_literal(rule), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Rules: most_recent, most_frequent, source_priority, longest, first_non_null, min, max.';
    END IF;
    options := coalesce(options, '{}');
    IF jsonb_typeof(options) <> 'object' OR EXISTS (SELECT 1 FROM jsonb_object_keys(options) k WHERE k <> 'order') THEN
        RAISE EXCEPTION 'unify.set_survivorship: options must be an object with at most the key "order"'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For source_priority, {"order": ["crm", "shop"]} ranks sources (listed first wins; others follow by their priority).';
    END IF;
    IF options ? 'order' THEN
        IF jsonb_typeof(options -> 'order') <> 'array' THEN
            RAISE EXCEPTION 'unify.set_survivorship: "order" must be an array of source names'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'For example {"order": ["crm", "shop"]}.';
        END IF;
        unknown := ARRAY(SELECT o FROM jsonb_array_elements_text(options -> 'order') o
                         WHERE NOT EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = o));
        IF cardinality(unknown) > 0 THEN
            RAISE EXCEPTION 'unify.set_survivorship: unknown source % in "order"', unknown[1]
                USING ERRCODE = 'invalid_parameter_value', HINT = 'SELECT name FROM unify.sources lists the registered sources.';
        END IF;
    END IF;
    PERFORM unify._lock('persons');
    INSERT INTO unify.survivorship AS s (field, rule, options) VALUES (field, rule, options)
    ON CONFLICT ON CONSTRAINT survivorship_pkey DO UPDATE
    SET rule = excluded.rule, options = excluded.options, set_by = unify._actor(), set_at = now();
    -- The golden records follow at once.
    PERFORM unify._refresh_persons(NULL::bigint[], 'set_survivorship', NULL);
END
$$;
COMMENT ON FUNCTION unify.set_survivorship(text, text, jsonb) IS 'Sets the survivorship rule of a golden-record field and refreshes the golden records';

CREATE OR REPLACE FUNCTION unify.person_records(person_id bigint)
RETURNS TABLE (record_id bigint, source text, source_key text, first_name text, last_name text, email text,
               phone text, mobile text, street text, house_number text, postcode text, city text,
               birth_date date, consent_email boolean, source_updated_at timestamptz, synced_at timestamptz)
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT r.record_id, s.name, r.source_key, r.first_name, r.last_name, r.email, r.phone, r.mobile, r.street,
           r.house_number, r.postcode, r.city, r.birth_date, r.consent_email, r.source_updated_at, r.synced_at
    FROM unify.records r JOIN unify.sources s ON s.source_id = r.source_id
    WHERE r.person_id = person_records.person_id
    ORDER BY r.record_id
$$;
COMMENT ON FUNCTION unify.person_records(bigint) IS 'The source records of a person';

CREATE OR REPLACE FUNCTION unify.person_history(person_id bigint)
RETURNS TABLE (event_id bigint, event text, person_id bigint, related_ids bigint[], rule text, reason text,
               actor text, created_at timestamptz, details jsonb)
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT e.event_id, e.event, e.person_id, e.related_ids, e.rule, e.reason, e.actor, e.created_at, e.details
    FROM unify.identity_events e
    WHERE e.person_id = person_history.person_id OR e.related_ids @> ARRAY[person_history.person_id]
    ORDER BY e.event_id
$$;
COMMENT ON FUNCTION unify.person_history(bigint) IS 'Every identity event naming the person';
COMMENT ON TABLE unify.queue_stats IS 'Last batch, throughput and totals of unify.process_queue() (worker or scheduled job)';
COMMENT ON TABLE unify.queue_work IS 'Batches of the change queue between their stages (take, rescore, cluster)';
ALTER TABLE unify.queue_work SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 100,
                                  autovacuum_vacuum_cost_delay = 0);
SELECT pg_catalog.pg_extension_config_dump('unify.queue_work', '');
SELECT pg_catalog.pg_extension_config_dump('unify.queue_work_work_id_seq', '');

-- The persons whose clustering a change of `record_ids` can touch: theirs before
-- (`person_ids`) and now, and, repeatedly, those of every record matched or must-linked to a
-- record in scope. Returns the persons and the records without a person yet.
CREATE OR REPLACE FUNCTION unify._queue_scope(person_ids bigint[], record_ids bigint[], OUT persons bigint[], OUT unassigned bigint[])
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    scope_records bigint[];
    -- The records that joined the scope in the last round: only their partners are new.
    frontier bigint[];
    reached bigint[];
    new_persons bigint[];
    new_unassigned bigint[];
    rounds int := 0;
BEGIN
    persons := ARRAY(SELECT DISTINCT p FROM unnest(person_ids) p WHERE p IS NOT NULL
                     UNION SELECT r.person_id FROM unify.records r WHERE r.record_id = ANY (record_ids) AND r.person_id IS NOT NULL);
    unassigned := ARRAY(SELECT r.record_id FROM unify.records r WHERE r.record_id = ANY (record_ids) AND r.person_id IS NULL);
    scope_records := ARRAY(SELECT r.record_id FROM unify.records r WHERE r.person_id = ANY (persons)) || unassigned;
    frontier := scope_records;
    LOOP
        rounds := rounds + 1;
        -- Set differences by EXCEPT (hashed), not NOT = ANY (a scan of the array per row).
        reached := ARRAY(
            (SELECT p.record_b FROM unify.pairs p WHERE p.is_match AND p.record_a = ANY (frontier)
             UNION SELECT p.record_a FROM unify.pairs p WHERE p.is_match AND p.record_b = ANY (frontier)
             UNION SELECT y.record_id FROM unify.records x
                   JOIN unify.overrides o ON o.kind = 'must_link'
                    AND ((o.source_a, o.key_a) = (x.source_id, x.source_key) OR (o.source_b, o.key_b) = (x.source_id, x.source_key))
                   JOIN unify.records y ON (y.source_id, y.source_key) IN ((o.source_a, o.key_a), (o.source_b, o.key_b))
                    AND y.record_id <> x.record_id
                   WHERE x.record_id = ANY (frontier))
            EXCEPT SELECT unnest(scope_records));
        new_persons := ARRAY(SELECT r.person_id FROM unify.records r WHERE r.record_id = ANY (reached) AND r.person_id IS NOT NULL
                             EXCEPT SELECT unnest(persons));
        new_unassigned := ARRAY(SELECT r.record_id FROM unify.records r WHERE r.record_id = ANY (reached) AND r.person_id IS NULL);
        IF cardinality(new_persons) = 0 AND cardinality(new_unassigned) = 0 THEN
            RETURN;
        END IF;
        persons := persons || new_persons;
        unassigned := unassigned || new_unassigned;
        frontier := ARRAY(SELECT r.record_id FROM unify.records r WHERE r.person_id = ANY (new_persons)) || new_unassigned;
        scope_records := scope_records || frontier;
        IF rounds > 100 THEN
            RAISE EXCEPTION 'unify.process_queue: the persons around the changed records did not close after 100 rounds'
                USING ERRCODE = 'program_limit_exceeded', HINT = 'Run unify.resolve() once; this is a bug worth reporting.';
        END IF;
    END LOOP;
END
$$;

-- The end of a batch in the figures of unify.status: `rows` queued changes taken at `taken_at`
-- by `taken_by` now have their persons.
CREATE OR REPLACE FUNCTION unify._queue_done(rows int, taken_at timestamptz, taken_by text) RETURNS void
VOLATILE LANGUAGE sql AS $$
    UPDATE unify.queue_stats s SET
        last_batch_at = now(), last_batch_rows = rows,
        last_batch_ms = round(extract(epoch FROM clock_timestamp() - taken_at)::numeric * 1000, 1),
        last_batch_by = taken_by,
        last_window_rate = CASE WHEN s.window_started_at < now() - interval '1 minute'
                                THEN round(s.window_rows / greatest(extract(epoch FROM now() - s.window_started_at), 1)::numeric, 1)
                                ELSE s.last_window_rate END,
        window_rows = CASE WHEN s.window_started_at IS NULL OR s.window_started_at < now() - interval '1 minute'
                           THEN rows ELSE s.window_rows + rows END,
        window_started_at = CASE WHEN s.window_started_at IS NULL OR s.window_started_at < now() - interval '1 minute'
                                 THEN now() ELSE s.window_started_at END,
        total_rows = s.total_rows + rows, total_batches = s.total_batches + 1
$$;

-- Applies the changes of one source in a batch; what cannot be applied goes to
-- unify.dead_letters with its error, and the batch moves on. An error of the whole mapping (a
-- dropped column, a missing function or privilege) sets every key aside at once; any other is
-- narrowed down key by key, so one bad value holds up only its own row. Returns the keys set
-- aside.
CREATE OR REPLACE FUNCTION unify._apply_or_set_aside(src unify.sources, keys text[]) RETURNS text[]
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    key text;
    failed text[] := '{}';
    error_state text;
    error_message text;
    error_detail text;
BEGIN
    BEGIN
        PERFORM unify._apply(src, keys);
        IF EXISTS (SELECT 1 FROM unify.dead_letters d WHERE d.source_id = src.source_id) THEN
            DELETE FROM unify.dead_letters d
            WHERE d.source_id = src.source_id AND (keys IS NULL OR d.source_key IS NULL OR d.source_key = ANY (keys));
        END IF;
        RETURN failed;
    EXCEPTION WHEN others THEN
        GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT, error_detail = PG_EXCEPTION_DETAIL;
    END;
    IF keys IS NULL OR cardinality(keys) <= 1
       OR error_state IN ('42703', '42883', '42P01', '42501', '42601', '42704', '42804', '42725', '42846') THEN
        INSERT INTO unify.dead_letters AS d (source_id, source_key, sqlstate, message, detail)
        SELECT src.source_id, k, error_state, error_message, nullif(error_detail, '')
        FROM unnest(coalesce(keys, ARRAY[NULL::text])) k
        ON CONFLICT (source_id, source_key) DO UPDATE SET
            sqlstate = excluded.sqlstate, message = excluded.message, detail = excluded.detail,
            attempts = d.attempts + 1, last_failed_at = now();
        RAISE WARNING 'source "%": % change(s) set aside in unify.dead_letters: %', src.name, coalesce(cardinality(keys), 1), error_message;
        RETURN coalesce(keys, '{}');
    END IF;
    FOREACH key IN ARRAY keys LOOP
        BEGIN
            PERFORM unify._apply(src, ARRAY[key]);
            DELETE FROM unify.dead_letters d WHERE d.source_id = src.source_id AND d.source_key = key;
        EXCEPTION WHEN others THEN
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT, error_detail = PG_EXCEPTION_DETAIL;
            INSERT INTO unify.dead_letters AS d (source_id, source_key, sqlstate, message, detail)
            VALUES (src.source_id, key, error_state, error_message, nullif(error_detail, ''))
            ON CONFLICT (source_id, source_key) DO UPDATE SET
                sqlstate = excluded.sqlstate, message = excluded.message, detail = excluded.detail,
                attempts = d.attempts + 1, last_failed_at = now();
            failed := failed || key;
        END;
    END LOOP;
    RAISE WARNING 'source "%": % change(s) set aside in unify.dead_letters', src.name, cardinality(failed);
    RETURN failed;
END
$$;

-- Stage 1 of a batch: up to max_rows queued changes into unify.records, the records' former
-- state kept in unify.queue_work for stage 2. Returns the changes taken.
CREATE OR REPLACE FUNCTION unify._queue_take(max_rows int) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    batches jsonb;
    batch jsonb;
    src unify.sources;
    taken int := 0;
    keys text[];
    record_keys text[];
    matching boolean;
    state unify.matching_state;
    changed_ids bigint[] := '{}';
    old_persons bigint[] := '{}';
    -- The changed records as they were, for whether their e-mails and phones were a household's.
    before jsonb := '[]';
    taken_by constant text := CASE WHEN current_setting('application_name') = 'customer_unify worker'
                                   THEN 'worker' ELSE unify._actor() END;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unify.change_queue) THEN
        RETURN 0;
    END IF;
    -- Changes are matched and clustered once a full scoring has built the blocking index for
    -- the rules in use; before that they only reach unify.records (resolve() assigns persons).
    SELECT * INTO state FROM unify.matching_state;
    matching := FOUND AND state.blocking_rules = unify.get_model() -> 'blocking_rules';
    IF FOUND AND NOT matching THEN
        RAISE WARNING 'unify.process_queue: the blocking rules changed since the last unify.score_pairs(); changed rows reach unify.records but are not matched'
            USING HINT = 'Run SELECT * FROM unify.score_pairs(); SELECT * FROM unify.resolve(); once.';
    END IF;
    -- Records change under the clustering lock: no clustering works on persons whose records
    -- change under it, and two takes do not write one record. A rescoring may run meanwhile:
    -- it only reads records, and what it reads of this batch's records the batch's own
    -- rescoring (after it, in order) scores again, as it does the pairs among the holders of a
    -- value whose household status the batch turns.
    PERFORM unify._lock('persons');
    -- Take the oldest changes nobody else is working on; they leave the queue in the same
    -- transaction that applies them, so a crash loses nothing and applies nothing twice.
    WITH picked AS (
        SELECT ctid FROM unify.change_queue ORDER BY enqueued_at LIMIT max_rows FOR UPDATE SKIP LOCKED
    ), taken_rows AS (
        DELETE FROM unify.change_queue q WHERE q.ctid = ANY (ARRAY(SELECT p.ctid FROM picked p))
        RETURNING q.source_id, q.source_key, q.op
    ), per_source AS (
        SELECT t.source_id, bool_or(t.op = 'T') AS truncated,
               array_agg(DISTINCT t.source_key) FILTER (WHERE t.source_key IS NOT NULL) AS keys, count(*) AS n
        FROM taken_rows t GROUP BY t.source_id
    )
    SELECT jsonb_agg(to_jsonb(per_source)) INTO batches FROM per_source;
    FOR batch IN SELECT * FROM jsonb_array_elements(coalesce(batches, '[]')) LOOP
        taken := taken + (batch ->> 'n')::int;
        SELECT * INTO src FROM unify.sources WHERE source_id = (batch ->> 'source_id')::int AND removed_at IS NULL;
        IF NOT FOUND THEN
            CONTINUE;  -- the source was removed meanwhile: its changes have nowhere to go
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = src.relation) THEN
            RAISE WARNING 'source "%": table % no longer exists; % queued changes dropped', src.name, src.relation_name, batch ->> 'n'
                USING HINT = 'unify.remove_source() removes the source and its records.';
            CONTINUE;
        END IF;
        -- The current state of the source row decides, not the operation: several changes of
        -- one key collapse into one, and order within the batch does not matter. A truncate
        -- re-reads the whole source.
        keys := CASE WHEN (batch ->> 'truncated')::boolean THEN NULL
                     ELSE ARRAY(SELECT jsonb_array_elements_text(batch -> 'keys')) END;
        IF matching THEN
            -- What the records were: their persons, names, birth dates, e-mails and phones. A
            -- truncate reads all of the source's records (as a key list: "keys IS NULL OR ..."
            -- would make the statement be planned anew on every batch).
            record_keys := coalesce(keys, ARRAY(SELECT r.source_key FROM unify.records r WHERE r.source_id = src.source_id));
            SELECT changed_ids || coalesce(array_agg(r.record_id), '{}'),
                   old_persons || coalesce(array_agg(r.person_id) FILTER (WHERE r.person_id IS NOT NULL), '{}'),
                   before || coalesce(jsonb_agg(jsonb_build_object(
                       'record_id', r.record_id, 'first_name', r.first_name, 'last_name', r.last_name,
                       'birth_date', to_char(r.birth_date, 'YYYY-MM-DD'), 'email_key', r.email_key,
                       'phone', r.phone, 'mobile', r.mobile)), '[]')
            INTO changed_ids, old_persons, before
            FROM unify.records r WHERE r.source_id = src.source_id AND r.source_key = ANY (record_keys);
        END IF;
        PERFORM unify._apply_or_set_aside(src, keys);
        IF matching THEN
            record_keys := coalesce(keys, ARRAY(SELECT r.source_key FROM unify.records r WHERE r.source_id = src.source_id));
            SELECT changed_ids || coalesce(array_agg(r.record_id), '{}') INTO changed_ids
            FROM unify.records r WHERE r.source_id = src.source_id AND r.source_key = ANY (record_keys);
        END IF;
    END LOOP;

    IF matching AND cardinality(changed_ids) > 0 THEN
        INSERT INTO unify.queue_work (stage, record_ids, person_ids, before, source_rows, taken_at, taken_by)
        VALUES ('rescore', ARRAY(SELECT DISTINCT x FROM unnest(changed_ids) x), old_persons, before, taken, started, taken_by);
    ELSIF taken > 0 THEN
        PERFORM unify._queue_done(taken, started, taken_by);
    END IF;
    RETURN taken;
END
$$;

-- Stage 2: re-blocks and re-scores the records of the oldest taken batch (one at a time, in
-- order: each compares its records with how they were before it) and hands them to stage 3.
-- Returns the changes the batch carries (0: nothing to do).
CREATE OR REPLACE FUNCTION unify._queue_rescore() RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    work unify.queue_work;
    rescored bigint[];
BEGIN
    PERFORM unify._lock('pairs');
    DELETE FROM unify.queue_work w
    WHERE w.work_id = (SELECT min(x.work_id) FROM unify.queue_work x WHERE x.stage = 'rescore')
    RETURNING * INTO work;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.matching_state m WHERE m.blocking_rules = unify.get_model() -> 'blocking_rules') THEN
        -- The blocking rules changed since: the next score_pairs() and resolve() place these records.
        PERFORM unify._queue_done(work.source_rows, work.taken_at, work.taken_by);
        RETURN work.source_rows;
    END IF;
    rescored := unify._rescore(work.record_ids, work.before);
    INSERT INTO unify.queue_work (stage, record_ids, person_ids, source_rows, taken_at, taken_by)
    VALUES ('cluster', rescored, work.person_ids, work.source_rows, work.taken_at, work.taken_by);
    RETURN work.source_rows;
END
$$;

-- Stage 3: re-clusters every person the rescored batches touched (all waiting, in one go), with
-- golden records and households. Returns the changes those batches carried.
CREATE OR REPLACE FUNCTION unify._queue_cluster() RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    old_persons bigint[];
    rescored bigint[];
    rows int;
    first_taken timestamptz;
    taken_by text;
    scope record;
BEGIN
    PERFORM unify._lock('persons');
    WITH done AS (
        DELETE FROM unify.queue_work w WHERE w.stage = 'cluster'
        RETURNING w.record_ids, w.person_ids, w.source_rows, w.taken_at, w.taken_by
    )
    SELECT ARRAY(SELECT DISTINCT x FROM done, unnest(done.person_ids) x),
           ARRAY(SELECT DISTINCT x FROM done, unnest(done.record_ids) x),
           (SELECT sum(d.source_rows) FROM done d), (SELECT min(d.taken_at) FROM done d),
           (SELECT max(d.taken_by) FROM done d)
    INTO old_persons, rescored, rows, first_taken, taken_by;
    IF rows IS NULL THEN
        RETURN 0;
    END IF;
    scope := unify._queue_scope(old_persons, rescored);
    PERFORM unify._resolve_scope(scope.persons, scope.unassigned || rescored, 'process_queue', NULL);
    PERFORM unify._queue_done(rows, first_taken, taken_by);
    RETURN rows;
END
$$;

CREATE OR REPLACE FUNCTION unify.process_queue(max_rows int DEFAULT 1000) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    taken int;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be a positive number, not %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.change_queue) AND NOT EXISTS (SELECT 1 FROM unify.queue_work) THEN
        RETURN 0;
    END IF;
    -- All three stages in this one transaction, with both locks throughout (taken in the
    -- usual order), after whatever the workers left half-way.
    PERFORM unify._lock('pairs');
    PERFORM unify._lock('persons');
    taken := unify._queue_take(max_rows);
    LOOP
        EXIT WHEN unify._queue_rescore() = 0;
    END LOOP;
    PERFORM unify._queue_cluster();
    RETURN taken;
END
$$;
COMMENT ON FUNCTION unify.process_queue(int) IS 'Applies up to max_rows queued source changes end to end: records, pairs, persons, golden records, households';

-- One step of a background worker: whichever stage of the queue is due and not running in
-- another worker, each in its own transaction. Rescorings run one at a time, in order; takes
-- and clusterings (one lock between them) run beside them. So one worker rescores a batch while another
-- takes the next one and clusters the one before. Returns the changes the step moved on
-- (0: nothing it could do now).
CREATE OR REPLACE FUNCTION unify._queue_step(max_rows int) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    rescorings bigint;
BEGIN
    -- The idle workers ask many times a second: two probes of empty tables.
    IF NOT EXISTS (SELECT 1 FROM unify.queue_work) AND NOT EXISTS (SELECT 1 FROM unify.change_queue) THEN
        RETURN 0;
    END IF;
    IF EXISTS (SELECT 1 FROM unify.queue_work w WHERE w.stage = 'rescore') AND unify._try_lock('pairs') THEN
        RETURN unify._queue_rescore();
    END IF;
    -- A take beside a rescoring only under a backlog (a full batch queued), and then at most one
    -- batch waits for its rescoring, so takes do not run ahead of the rescorings.
    rescorings := (SELECT count(*) FROM unify.queue_work w WHERE w.stage = 'rescore');
    IF rescorings = 1 AND (SELECT count(*) FROM (SELECT FROM unify.change_queue LIMIT max_rows) q) >= max_rows
       AND unify._try_lock('persons') THEN
        RETURN unify._queue_take(max_rows);
    END IF;
    -- A clustering that is due goes before a take without a backlog (the changes it carries
    -- are waiting for their persons), and waits for the lock, which a take or another
    -- clustering holds for moments, rather than for the next poll.
    IF EXISTS (SELECT 1 FROM unify.queue_work w WHERE w.stage = 'cluster') THEN
        RETURN unify._queue_cluster();
    END IF;
    -- With a short queue, changes wait for a running rescoring and go as one batch: many tiny
    -- batches cost more than they save.
    IF rescorings = 0 AND EXISTS (SELECT 1 FROM unify.change_queue) AND unify._try_lock('persons') THEN
        RETURN unify._queue_take(max_rows);
    END IF;
    RETURN 0;
END
$$;

-- The background workers of this database, if any run (pg_stat_activity knows them by their
-- type): the first one's pid and start, 'working' while any of them is.
CREATE OR REPLACE FUNCTION unify._worker() RETURNS TABLE (pid int, state text, started_at timestamptz, wait_event text, workers int)
STABLE LANGUAGE sql AS $$
    SELECT min(a.pid),
           CASE WHEN bool_and(coalesce(a.wait_event IN ('customer_unify_naptime', 'Extension'), false)) THEN 'idle' ELSE 'working' END,
           min(a.backend_start), string_agg(DISTINCT a.wait_event, ', '), count(*)::int
    FROM pg_catalog.pg_stat_activity a
    WHERE a.backend_type = 'customer_unify worker' AND a.datname = current_database()
    HAVING count(*) > 0
$$;

-- The figures behind unify.status. A function, so that it plans without JIT: on small
-- unanalyzed tables the estimates made JIT compile the query for longer (0.5 s) than it runs.
-- SECURITY DEFINER as a view is: readers of unify.status need no rights on the tables.
CREATE OR REPLACE FUNCTION unify._status()
RETURNS TABLE (source text, relation text, track_changes boolean, removed_at timestamptz, source_rows_estimate bigint,
               records bigint, queue_depth bigint, queue_lag interval, failed_changes bigint, last_failure timestamptz,
               last_sync_at timestamptz, last_sync_rows bigint, last_sync_seconds numeric, sync_running_since timestamptz,
               worker_pid int, worker_state text, workers int, worker_started_at timestamptz, last_batch_at timestamptz,
               last_batch_rows int, last_batch_ms numeric, last_batch_by text, rows_per_second numeric, processed_rows bigint,
               total_queue_depth bigint, changes_in_progress bigint, total_queue_lag interval, matching_live boolean)
STABLE LANGUAGE sql SECURITY DEFINER SET jit = off AS $$

SELECT s.name AS source,
       s.relation_name AS relation,
       s.track_changes,
       s.removed_at,
       greatest(c.reltuples, 0)::bigint AS source_rows_estimate,
       (SELECT count(*) FROM unify.records r WHERE r.source_id = s.source_id) AS records,
       (SELECT count(*) FROM unify.change_queue q WHERE q.source_id = s.source_id) AS queue_depth,
       (SELECT now() - min(q.enqueued_at) FROM unify.change_queue q WHERE q.source_id = s.source_id) AS queue_lag,
       (SELECT count(*) FROM unify.dead_letters d WHERE d.source_id = s.source_id) AS failed_changes,
       (SELECT max(d.last_failed_at) FROM unify.dead_letters d WHERE d.source_id = s.source_id) AS last_failure,
       s.last_sync_at,
       s.last_sync_rows,
       s.last_sync_seconds,
       (SELECT a.query_start FROM pg_stat_activity a
         WHERE a.application_name = 'unify.sync ' || s.name LIMIT 1) AS sync_running_since,
       w.pid AS worker_pid,
       coalesce(w.state, 'not running') AS worker_state,
       coalesce(w.workers, 0) AS workers,
       w.started_at AS worker_started_at,
       q.last_batch_at,
       q.last_batch_rows,
       q.last_batch_ms,
       q.last_batch_by,
       CASE WHEN q.window_started_at >= now() - interval '1 minute'
            THEN round(q.window_rows / greatest(extract(epoch FROM now() - q.window_started_at), 1)::numeric, 1)
            ELSE coalesce(q.last_window_rate, 0) END AS rows_per_second,
       q.total_rows AS processed_rows,
       (SELECT count(*) FROM unify.change_queue) AS total_queue_depth,
       (SELECT coalesce(sum(x.source_rows), 0) FROM unify.queue_work x)::bigint AS changes_in_progress,
       (SELECT now() - min(x.enqueued_at) FROM unify.change_queue x) AS total_queue_lag,
       m.keys_built_at IS NOT NULL AND m.blocking_rules = unify.get_model() -> 'blocking_rules' AS matching_live
FROM unify.sources s
LEFT JOIN pg_class c ON c.oid = s.relation
LEFT JOIN unify._worker() w ON true
CROSS JOIN unify.queue_stats q
LEFT JOIN unify.matching_state m ON true
$$;

CREATE OR REPLACE VIEW unify.status AS SELECT * FROM unify._status();
COMMENT ON VIEW unify.status IS 'Per source: rows, records, queue depth and lag, last sync; for the database: worker state, last batch, rows/s, whether changes are matched live';

-- Order tables likewise (see unify.sources above).
ALTER TABLE unify.transaction_sources ADD COLUMN run_as regrole;
UPDATE unify.transaction_sources t
SET run_as = coalesce((SELECT c.relowner::regrole FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid = c.relowner
                       WHERE c.oid = t.relation AND NOT o.rolsuper), 'unify_admin'::regrole);
ALTER TABLE unify.transaction_sources ALTER COLUMN run_as SET NOT NULL;
COMMENT ON TABLE unify.transaction_sources IS 'Order tables registered in place with unify.add_transactions';
SELECT pg_catalog.pg_extension_config_dump('unify.transaction_sources', '');
SELECT pg_catalog.pg_extension_config_dump('unify.transaction_sources_transaction_source_id_seq', '');
COMMENT ON TABLE unify.exchange_rates IS 'Units of the reporting currency (customer_unify.currency, default EUR) per unit of each other currency';
COMMENT ON COLUMN unify.exchange_rates.rate IS 'Reporting-currency units per unit of this currency';
SELECT pg_catalog.pg_extension_config_dump('unify.exchange_rates', '');

-- The SQL text of one mapped field, cast to its type.
CREATE OR REPLACE FUNCTION unify._transaction_expression(fields jsonb, field text) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT '(' || (fields ->> field) || ')::' ||
        CASE field WHEN 'order_date' THEN 'date' WHEN 'amount' THEN 'numeric' WHEN 'returned' THEN 'boolean' ELSE 'text' END
$$;

CREATE OR REPLACE FUNCTION unify.add_transactions(name text, relation regclass, fields jsonb) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    rel_kind "char";
    rel_name text;
    field text;
    unknown text[];
    new_id int;
    known constant text[] := ARRAY['source', 'source_key', 'customer_number', 'order_date', 'amount', 'currency', 'order_id', 'returned'];
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid transactions name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A name is lowercase letters, digits and underscores, starting with a letter, for example ''orders''.';
    END IF;
    IF EXISTS (SELECT 1 FROM unify.transaction_sources t WHERE t.name = add_transactions.name) THEN
        RAISE EXCEPTION 'transactions "%" already exist', name
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or unify.remove_transactions() the existing one first.';
    END IF;
    IF relation IS NULL OR fields IS NULL THEN
        RAISE EXCEPTION 'add_transactions: relation and fields must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO rel_kind, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relation;
    IF rel_kind NOT IN ('r', 'p', 'm', 'v', 'f') THEN
        RAISE EXCEPTION '% is not a table or view', rel_name USING ERRCODE = 'wrong_object_type';
    END IF;
    -- The mapping will run as the caller: who cannot read the table cannot register it.
    PERFORM unify._require_select(relation, rel_name);
    IF jsonb_typeof(fields) <> 'object' THEN
        RAISE EXCEPTION 'fields must be a JSON object mapping transaction fields to columns or expressions'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"source": "shop", "source_key": "customer_id", "order_date": "ordered_at", "amount": "total"}.';
    END IF;
    SELECT array_agg(k ORDER BY k) INTO unknown FROM jsonb_object_keys(fields) k WHERE k <> ALL (known);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown field "%" in fields', unknown[1]
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Known fields: ' || array_to_string(known, ', ') || '.';
    END IF;
    IF NOT fields ?& ARRAY['order_date', 'amount'] THEN
        RAISE EXCEPTION 'fields must map order_date and amount'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"order_date": "ordered_at", "amount": "total", …}.';
    END IF;
    IF (fields ? 'customer_number') = (fields ? 'source_key') OR (fields ? 'source') <> (fields ? 'source_key') THEN
        RAISE EXCEPTION 'fields must say whose order a row is: either source and source_key, or customer_number'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '"source" names a registered source (or is an expression giving one per row), "source_key" its key in the row; or "customer_number" matches the records'' customer_number.';
    END IF;
    FOR field IN SELECT k FROM jsonb_object_keys(fields) k ORDER BY k LOOP
        IF jsonb_typeof(fields -> field) <> 'string' OR btrim(fields ->> field) = '' THEN
            RAISE EXCEPTION 'field "%" must map to a column name or an SQL expression as a non-empty string', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CONTINUE WHEN field = 'source' AND EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = add_transactions.fields ->> 'source');
        BEGIN
            EXECUTE format('SELECT %s FROM %s AS src LIMIT 0', unify._transaction_expression(fields, field), relation);
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'field "%": % is not a valid expression over %', field, fields ->> field, rel_name
                USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                      HINT = CASE WHEN field = 'source'
                                  THEN 'Name a registered source (see unify.sources) or give an expression yielding source names, such as a column.'
                                  ELSE 'Map each field to a column or an SQL expression over the columns, for example "status IN (''returned'', ''cancelled'')" for returned.' END;
        END;
    END LOOP;

    -- The mapping will run as the caller (SECURITY INVOKER): recorded by the extension's code.
    new_id := unify._register_transactions(add_transactions.name, add_transactions.relation, rel_name, add_transactions.fields);
    RAISE NOTICE 'transactions "%" registered for %; segment with SELECT unify.refresh_segments()', name, rel_name;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION unify.add_transactions(text, regclass, jsonb) IS 'Registers an order table in place: whose order (source + key or customer number), date, amount, optional currency, order id and returned flag';

CREATE OR REPLACE FUNCTION unify.remove_transactions(name text) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM unify.transaction_sources t WHERE t.name = remove_transactions.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transactions "%" do not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM unify.transaction_sources.';
    END IF;
END
$$;
COMMENT ON FUNCTION unify.remove_transactions(text) IS 'Unregisters an order table (the table itself is untouched)';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/mod.rs:85
-- requires:
--   orders

-- The query over every registered order table, as SQL text (unify._orders_query): what
-- unify.refresh_segments and unify.fit_predictions read orders through.

-- One query over every registered order table: per order (rows sharing an order_id net out),
-- the person, the order date, the net amount in the reporting currency and whether it is a
-- purchase (nets to zero or more). Returned or
-- cancelled rows are left out; a row nobody can be found for has person_id NULL; `skipped`
-- counts rows whose currency has no rate.
--
-- With per_customer, the rows are RFM partial sums instead (person_id, last_purchase,
-- frequency, monetary, orders, skipped; several rows per person are summed by the caller):
-- the orders of a table without order_id are first summed per customer key and only those
-- sums are looked up in unify.records — 10M orders of 1M customers are 1M lookups, not 10M.
-- Orders with an order_id are netted per person first, as in the per-order query.
--
-- The user's expressions are evaluated first, per order table, as the role that registered it
-- (unify._run_as) into a temporary table of this session; the query returned reads those.
CREATE OR REPLACE FUNCTION unify._orders_query(from_date date, to_date date, per_customer boolean DEFAULT false) RETURNS text
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    t unify.transaction_sources;
    f jsonb;
    parts text[] := '{}';
    person_join text;
    currency_join text;
    amount text;
    skipped text;
    orders_query text;
    stage text;
    mapping_role regrole;
    error_message text;
    reporting constant text := upper(coalesce(nullif(current_setting('customer_unify.currency', true), ''), 'EUR'));
    partial_sums constant text := 'max(order_date) FILTER (WHERE amount >= 0) AS last_purchase,
                                   count(*) FILTER (WHERE amount >= 0) AS frequency,
                                   sum(amount) AS monetary, count(*) AS orders, sum(skipped) AS skipped';
BEGIN
    FOR t IN SELECT * FROM unify.transaction_sources ORDER BY transaction_source_id LOOP
        f := t.fields;
        IF f ? 'customer_number' THEN
            -- Several records may carry the number; they are one person once resolved.
            person_join := 'LEFT JOIN (SELECT DISTINCT ON (customer_number) customer_number, person_id
                                       FROM unify.records WHERE customer_number IS NOT NULL AND person_id IS NOT NULL
                                       ORDER BY customer_number, record_id) r ON r.customer_number = t.customer_number';
        ELSIF EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = f ->> 'source') THEN
            person_join := format('LEFT JOIN unify.records r ON r.source_id = %s AND r.source_key = t.source_key',
                                  (SELECT s.source_id FROM unify.sources s WHERE s.name = f ->> 'source'));
        ELSE
            person_join := 'LEFT JOIN unify.sources s ON s.name = t.source_name
                            LEFT JOIN unify.records r ON r.source_id = s.source_id AND r.source_key = t.source_key';
        END IF;
        amount := 't.amount';
        currency_join := '';
        skipped := '0';
        IF f ? 'currency' THEN
            currency_join := 'LEFT JOIN unify.exchange_rates x ON x.currency = upper(t.currency)';
            amount := format('t.amount * CASE WHEN upper(t.currency) = %L THEN 1 ELSE x.rate END', reporting);
            skipped := format('(%s IS NULL)::int', amount);
        END IF;
        -- The user's expressions over their table alone, staged as the role that registered
        -- it: their column names never clash with ours, and their code never runs as us.
        -- A new table per call under a name no one can guess (no one can have made it first
        -- with a trigger of theirs), insertable only by this table's role and only while its
        -- mapping runs (another table's mapping cannot add orders to it).
        stage := format('unify_orders_%s_%s', t.transaction_source_id, replace(gen_random_uuid()::text, '-', ''));
        mapping_role := unify._mapping_role(t.run_as, t.relation);
        EXECUTE format('CREATE TEMP TABLE %I (order_key text, order_date date, amount numeric, currency text,
                                              source_name text, source_key text, customer_number text) ON COMMIT DROP', stage);
        EXECUTE format('GRANT INSERT ON pg_temp.%I TO %s', stage, mapping_role);
        BEGIN
            PERFORM unify._run_as(mapping_role, format(
                'INSERT INTO pg_temp.%I SELECT %s, %s, %s, %s, %s, %s, %s FROM %s AS src WHERE %s > %L::date AND %s <= %L::date%s',
                stage,
                CASE WHEN f ? 'order_id' THEN unify._transaction_expression(f, 'order_id') ELSE 'NULL::text' END,
                unify._transaction_expression(f, 'order_date'), unify._transaction_expression(f, 'amount'),
                CASE WHEN f ? 'currency' THEN unify._transaction_expression(f, 'currency') ELSE 'NULL::text' END,
                CASE WHEN f ? 'source' AND NOT EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = f ->> 'source')
                     THEN unify._transaction_expression(f, 'source') ELSE 'NULL::text' END,
                CASE WHEN f ? 'source_key' THEN unify._transaction_expression(f, 'source_key') ELSE 'NULL::text' END,
                CASE WHEN f ? 'customer_number' THEN unify._transaction_expression(f, 'customer_number') ELSE 'NULL::text' END,
                t.relation,
                unify._transaction_expression(f, 'order_date'), from_date,
                unify._transaction_expression(f, 'order_date'), to_date,
                CASE WHEN f ? 'returned' THEN format(' AND NOT coalesce(%s, false)', unify._transaction_expression(f, 'returned')) ELSE '' END),
                NULL);
        EXCEPTION WHEN others THEN
            GET STACKED DIAGNOSTICS error_message = MESSAGE_TEXT;
            RAISE EXCEPTION 'order table "%": its mapping failed: %', t.name, error_message
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Check the mapping (SELECT fields FROM unify.transaction_sources WHERE name = %L); it runs as role %s with search_path pg_catalog, pg_temp.', t.name, t.run_as);
        END;
        EXECUTE format('REVOKE INSERT ON pg_temp.%I FROM %s', stage, mapping_role);
        EXECUTE format('ANALYZE pg_temp.%I', stage);
        -- Per order row: whose (keys), date, amount in the reporting currency, no rate (skipped).
        orders_query := format('SELECT t.order_key, t.order_date, %s AS amount, %s AS skipped,
                                       t.source_name, t.source_key, t.customer_number
                                FROM pg_temp.%I t
                                %s',
                               amount, skipped, stage, currency_join);
        IF per_customer AND NOT f ? 'order_id' THEN
            parts := parts || format('SELECT r.person_id, t.last_purchase, t.frequency, t.monetary, t.orders, t.skipped
                                      FROM (SELECT source_name, source_key, customer_number, %s
                                            FROM (%s) o GROUP BY source_name, source_key, customer_number) t
                                      %s',
                                     partial_sums, orders_query, person_join);
            CONTINUE;
        END IF;
        orders_query := format('SELECT r.person_id, t.order_key, t.order_date, t.amount, t.skipped FROM (%s) t %s',
                               orders_query, person_join);
        IF f ? 'order_id' THEN
            orders_query := format('SELECT person_id, min(order_date) AS order_date, sum(amount) AS amount, sum(skipped) AS skipped
                                    FROM (%s) o GROUP BY person_id, order_key', orders_query);
        END IF;
        IF per_customer THEN
            parts := parts || format('SELECT person_id, %s FROM (%s) o GROUP BY person_id', partial_sums, orders_query);
        ELSE
            parts := parts || format('SELECT person_id, order_date, amount, amount >= 0 AS purchase, skipped FROM (%s) o',
                                     orders_query);
        END IF;
    END LOOP;
    IF cardinality(parts) = 0 THEN
        RAISE EXCEPTION 'no transactions are registered'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register your order table first: SELECT unify.add_transactions(''orders'', ''orders'', ''{"source": "shop", "source_key": "customer_id", "order_date": "ordered_at", "amount": "total"}'').';
    END IF;
    RETURN array_to_string(parts, E'\nUNION ALL\n');
END
$$;
COMMENT ON TABLE unify.segment_map IS 'Your segment map (score boxes → segment); empty means unify.default_segment_map()';
SELECT pg_catalog.pg_extension_config_dump('unify.segment_map', '');
SELECT pg_catalog.pg_extension_config_dump('unify.segment_map_rule_id_seq', '');

-- The usual R × F grid (M refines nothing by default), with Lost split from Hibernating.
CREATE OR REPLACE FUNCTION unify.default_segment_map()
RETURNS TABLE (segment text, r_min smallint, r_max smallint, f_min smallint, f_max smallint,
               m_min smallint, m_max smallint, description text)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT v.segment, v.r_min::smallint, v.r_max::smallint, v.f_min::smallint, v.f_max::smallint,
           1::smallint, 5::smallint, v.description
    FROM (VALUES
        ('Champions',          5, 5, 4, 5, 'Bought recently, buy often'),
        ('Loyal',              3, 4, 4, 5, 'Buy often, not the most recent'),
        ('Potential Loyalist', 4, 5, 2, 3, 'Recent, bought more than once'),
        ('New',                5, 5, 1, 1, 'First purchase very recently'),
        ('Promising',          4, 4, 1, 1, 'Recent first-time buyers'),
        ('Need Attention',     3, 3, 3, 3, 'Average recency and frequency'),
        ('About To Sleep',     3, 3, 1, 2, 'Below average recency and frequency'),
        ('At Risk',            1, 2, 3, 4, 'Bought often, long ago'),
        ('Can''t Lose Them',   1, 2, 5, 5, 'Were the most frequent, long ago'),
        ('Hibernating',        2, 2, 1, 2, 'Few purchases, long ago'),
        ('Lost',               1, 1, 1, 2, 'Few purchases, longest ago')
    ) AS v (segment, r_min, r_max, f_min, f_max, description)
$$;
COMMENT ON FUNCTION unify.default_segment_map() IS 'The segment map used while unify.segment_map is empty';

CREATE OR REPLACE VIEW unify.segment_rules AS
SELECT m.rule_id, m.segment, m.r_min, m.r_max, m.f_min, m.f_max, m.m_min, m.m_max, m.description, false AS is_default
FROM unify.segment_map m
UNION ALL
SELECT NULL, d.segment, d.r_min, d.r_max, d.f_min, d.f_max, d.m_min, d.m_max, d.description, true
FROM unify.default_segment_map() d
WHERE NOT EXISTS (SELECT 1 FROM unify.segment_map);
COMMENT ON VIEW unify.segment_rules IS 'The segment map in effect (yours, or the default while unify.segment_map is empty)';

CREATE OR REPLACE VIEW unify.segment_map_cells AS
SELECT r.r, f.f, m.m,
       array_agg(s.segment ORDER BY s.segment) FILTER (WHERE s.segment IS NOT NULL) AS segments,
       count(s.segment) AS rules
FROM generate_series(1, 5) r (r) CROSS JOIN generate_series(1, 5) f (f) CROSS JOIN generate_series(1, 5) m (m)
LEFT JOIN unify.segment_rules s
       ON r.r BETWEEN s.r_min AND s.r_max AND f.f BETWEEN s.f_min AND s.f_max AND m.m BETWEEN s.m_min AND s.m_max
GROUP BY r.r, f.f, m.m;
COMMENT ON VIEW unify.segment_map_cells IS 'Each of the 125 (R, F, M) score cells and the segment rules covering it (exactly one expected)';
COMMENT ON TABLE unify.segments IS 'RFM scores and named segment per person with a purchase in the window (unify.refresh_segments)';
SELECT pg_catalog.pg_extension_config_dump('unify.segments', '');
COMMENT ON TABLE unify.segment_runs IS 'Every unify.refresh_segments run: as of when, persons, orders, changes, time';
COMMENT ON TABLE unify.segment_history IS 'Every change of a person''s segment (NULL: had none / left the window), also sent as NOTIFY unify_segment_changed';
SELECT pg_catalog.pg_extension_config_dump('unify.segment_history', '');
SELECT pg_catalog.pg_extension_config_dump('unify.segment_runs', '');
SELECT pg_catalog.pg_extension_config_dump('unify.segment_runs_run_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('unify.segment_history_change_id_seq', '');

CREATE OR REPLACE FUNCTION unify._check_segment_map() RETURNS void
STABLE LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT * INTO bad FROM unify.segment_map_cells c WHERE c.rules <> 1 ORDER BY c.r, c.f, c.m LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the segment map covers cell R=% F=% M=% % times, not once', bad.r, bad.f, bad.m, bad.rules
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = CASE WHEN bad.rules > 0 THEN 'Rules of ' || array_to_string(bad.segments, ', ') || ' overlap there.' ELSE 'No rule covers it.' END,
                  HINT = 'Every (R, F, M) score cell needs exactly one rule: see SELECT * FROM unify.segment_map_cells WHERE rules <> 1.';
    END IF;
END
$$;

-- RFM over the window (as_of - lookback, as_of]. An order netting to zero or more is a purchase
-- (a free order counts, with no spend); one netting below zero is a refund: it lowers monetary
-- and is no purchase. Scores: the share of scored persons doing
-- strictly worse, in fifths (1 + floor(5 · (rank - 1) / n)), so equal values always share a
-- score and the worst value scores 1; recency is scored on the last purchase date, later is
-- better. A person leaving the window loses the segment (a history row to NULL).
CREATE OR REPLACE FUNCTION unify.refresh_segments(as_of date DEFAULT current_date, lookback interval DEFAULT interval '2 years')
RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    stats record;
    changes bigint;
    written bigint;
    step_rows bigint;
    n_persons bigint;
    cell_segments text[];
    fractions float8[];
    r_bounds date[];
    f_bounds int[];
    m_bounds numeric[];
BEGIN
    IF as_of IS NULL OR lookback IS NULL OR as_of = 'infinity' OR as_of = '-infinity' THEN
        RAISE EXCEPTION 'refresh_segments: as_of and lookback must be given' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF as_of - lookback >= as_of THEN
        RAISE EXCEPTION 'lookback % is not a positive interval', lookback
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example interval ''2 years''.';
    END IF;
    -- One refresh at a time; a second waits.
    PERFORM unify._lock('segments');
    PERFORM unify._check_segment_map();
    SELECT array_agg(c.segments[1] ORDER BY c.r, c.f, c.m) INTO cell_segments FROM unify.segment_map_cells c;

    IF to_regclass('pg_temp.unify_person_rfm') IS NOT NULL THEN DROP TABLE pg_temp.unify_person_rfm; END IF;
    EXECUTE format($q$
        CREATE TEMP TABLE unify_person_rfm ON COMMIT DROP AS
        SELECT a.*, pe.person_id IS NOT NULL AND a.frequency > 0 AS scored
        FROM (SELECT person_id,
                     max(last_purchase) AS last_purchase,
                     sum(frequency)::int AS frequency,
                     greatest(coalesce(sum(monetary), 0), 0) AS monetary,
                     sum(orders) AS orders,
                     sum(skipped) AS skipped
              FROM (%s) o
              GROUP BY person_id) a
        LEFT JOIN unify.persons pe ON pe.person_id = a.person_id   -- records may name a person not yet resolved
        $q$, unify._orders_query((as_of - lookback)::date, as_of, per_customer => true));

    SELECT coalesce(sum(orders) FILTER (WHERE person_id IS NULL), 0) AS unmatched,
           coalesce(sum(orders) FILTER (WHERE person_id IS NOT NULL), 0) AS orders,
           coalesce(sum(skipped), 0) AS skipped,
           count(*) FILTER (WHERE scored) AS scored
    INTO stats FROM unify_person_rfm;
    n_persons := stats.scored;

    -- A score is 1 + the number of fifth-boundaries a value is above: value v scores at least
    -- k + 1 when at least ceil(k·n/5) scored persons do strictly worse, i.e. when the
    -- ceil(k·n/5)-th smallest value is below v. Same scores as 1 + floor(5·(rank - 1)/n), but
    -- three sorts of one column instead of three window passes over the rows. The fractions
    -- (p - 0.5)/n make percentile_disc pick exactly the p-th value whatever the rounding.
    IF n_persons > 0 THEN
        SELECT array_agg(((k * n_persons + 4) / 5 - 0.5) / n_persons ORDER BY k) INTO fractions FROM generate_series(1, 4) k;
        SELECT percentile_disc(fractions) WITHIN GROUP (ORDER BY p.last_purchase),
               percentile_disc(fractions) WITHIN GROUP (ORDER BY p.frequency),
               percentile_disc(fractions) WITHIN GROUP (ORDER BY p.monetary)
        INTO r_bounds, f_bounds, m_bounds
        FROM unify_person_rfm p WHERE p.scored;
    END IF;

    -- Only the rows to write: persons whose figures, scores or segment changed, new ones, and
    -- those leaving the window (no new row).
    IF to_regclass('pg_temp.unify_segment_writes') IS NOT NULL THEN DROP TABLE pg_temp.unify_segment_writes; END IF;
    CREATE TEMP TABLE unify_segment_writes ON COMMIT DROP AS
    WITH scored AS (
        SELECT p.person_id, p.last_purchase, p.frequency, p.monetary,
               (1 + (p.last_purchase > r_bounds[1])::int + (p.last_purchase > r_bounds[2])::int
                  + (p.last_purchase > r_bounds[3])::int + (p.last_purchase > r_bounds[4])::int)::smallint AS r_score,
               (1 + (p.frequency > f_bounds[1])::int + (p.frequency > f_bounds[2])::int
                  + (p.frequency > f_bounds[3])::int + (p.frequency > f_bounds[4])::int)::smallint AS f_score,
               (1 + (p.monetary > m_bounds[1])::int + (p.monetary > m_bounds[2])::int
                  + (p.monetary > m_bounds[3])::int + (p.monetary > m_bounds[4])::int)::smallint AS m_score
        FROM unify_person_rfm p
        WHERE p.scored
    )
    -- The segment of cell (r, f, m) is cell_segments[(r-1)*25 + (f-1)*5 + m]: an array lookup,
    -- not a join the planner cannot estimate.
    , named AS (
        SELECT s.*, cell_segments[(s.r_score - 1) * 25 + (s.f_score - 1) * 5 + s.m_score] AS segment FROM scored s
    )
    SELECT coalesce(s.person_id, o.person_id) AS person_id, s.person_id IS NOT NULL AS segmented,
           s.last_purchase, s.frequency, s.monetary, s.r_score, s.f_score, s.m_score,
           s.segment, o.person_id IS NOT NULL AS existed, o.segment AS old_segment,
           CASE WHEN o.segment = s.segment THEN o.segment_since ELSE refresh_segments.as_of END AS segment_since
    FROM named s
    FULL JOIN unify.segments o ON o.person_id = s.person_id
    WHERE (o.last_purchase, o.frequency, o.monetary, o.r_score, o.f_score, o.m_score, o.segment)
          IS DISTINCT FROM (s.last_purchase, s.frequency, s.monetary, s.r_score, s.f_score, s.m_score, s.segment);

    -- Write only what changed.
    DELETE FROM unify.segments o USING unify_segment_writes w WHERE NOT w.segmented AND o.person_id = w.person_id;
    GET DIAGNOSTICS written = ROW_COUNT;
    UPDATE unify.segments o
    SET last_purchase = w.last_purchase, frequency = w.frequency, monetary = w.monetary, r_score = w.r_score,
        f_score = w.f_score, m_score = w.m_score, segment = w.segment, segment_since = w.segment_since
    FROM unify_segment_writes w WHERE w.segmented AND w.existed AND o.person_id = w.person_id;
    GET DIAGNOSTICS step_rows = ROW_COUNT;
    written := written + step_rows;
    INSERT INTO unify.segments (person_id, last_purchase, frequency, monetary, r_score, f_score, m_score, segment, segment_since)
    SELECT w.person_id, w.last_purchase, w.frequency, w.monetary, w.r_score, w.f_score, w.m_score, w.segment, w.segment_since
    FROM unify_segment_writes w WHERE NOT w.existed;
    GET DIAGNOSTICS step_rows = ROW_COUNT;
    written := written + step_rows;

    INSERT INTO unify.segment_history (person_id, from_segment, to_segment, as_of)
    SELECT w.person_id, w.old_segment, w.segment, refresh_segments.as_of FROM unify_segment_writes w
    WHERE w.old_segment IS DISTINCT FROM w.segment
    ORDER BY w.person_id;
    GET DIAGNOSTICS changes = ROW_COUNT;
    -- Delivered at commit, one per change, for activation programs that LISTEN.
    PERFORM pg_notify('unify_segment_changed',
                      json_build_object('person_id', w.person_id, 'from', w.old_segment, 'to', w.segment)::text)
    FROM unify_segment_writes w WHERE w.old_segment IS DISTINCT FROM w.segment ORDER BY w.person_id;

    INSERT INTO unify.segment_runs (as_of, lookback, persons, orders, unmatched_orders, skipped_no_rate, rows_written, changes, seconds)
    VALUES (as_of, lookback, n_persons, stats.orders, stats.unmatched, stats.skipped, written, changes,
            round(extract(epoch FROM clock_timestamp() - started)::numeric, 3));

    RETURN jsonb_build_object(
        'as_of', as_of,
        'persons', n_persons,
        'orders', stats.orders,
        'unmatched_orders', stats.unmatched,
        'skipped_no_rate', stats.skipped,
        'rows_written', written,
        'changes', changes,
        'seconds', round(extract(epoch FROM clock_timestamp() - started)::numeric, 3));
END
$$;
COMMENT ON FUNCTION unify.refresh_segments(date, interval) IS 'Scores recency, frequency and monetary per person (ties share a score), names the segment by the segment map, records and NOTIFYs every change';
COMMENT ON TABLE unify.prediction_fits IS 'Every fit of unify.fit_predictions: model, parameters (time unit: weeks), log-likelihood, convergence status';
SELECT pg_catalog.pg_extension_config_dump('unify.prediction_fits', '');
SELECT pg_catalog.pg_extension_config_dump('unify.prediction_fits_fit_id_seq', '');
COMMENT ON TABLE unify.predictions IS 'Per person, from the last converged fit: P(alive), expected purchases and spend in the horizon, CLV';
COMMENT ON COLUMN unify.predictions.frequency IS 'Repeat purchase days up to the calibration end';
COMMENT ON COLUMN unify.predictions.expected_spend IS 'Expected spend per purchase (Gamma-Gamma)';
COMMENT ON COLUMN unify.predictions.clv IS 'Discounted expected spend over the horizon';
SELECT pg_catalog.pg_extension_config_dump('unify.predictions', '');

-- Purchase summaries up to calibration_end, in weeks: a day whose orders net to zero or more is
-- one purchase (several orders on a day count once, as in the papers; a refund day is none);
-- mean_spend is over the repeat purchase days.
CREATE OR REPLACE FUNCTION unify._purchase_summaries(calibration_end date) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.unify_purchase_summaries') IS NOT NULL THEN DROP TABLE pg_temp.unify_purchase_summaries; END IF;
    EXECUTE format($q$
        CREATE TEMP TABLE unify_purchase_summaries ON COMMIT DROP AS
        WITH days AS (
            SELECT o.person_id, o.order_date AS day, sum(o.amount) AS amount
            FROM (%s) o
            JOIN unify.persons pe ON pe.person_id = o.person_id
            WHERE o.amount IS NOT NULL
            GROUP BY o.person_id, o.order_date
            HAVING sum(o.amount) >= 0
        ), firsts AS (
            SELECT d.*, min(d.day) OVER (PARTITION BY d.person_id) AS first_day FROM days d
        )
        SELECT person_id,
               (count(*) - 1)::float8 AS frequency,
               (max(day) - min(day)) / 7.0::float8 AS recency,
               (%L::date - min(day)) / 7.0::float8 AS age,
               (sum(amount) FILTER (WHERE day > first_day) / nullif(count(*) - 1, 0))::float8 AS mean_spend
        FROM firsts GROUP BY person_id $q$,
        unify._orders_query('-infinity'::date, calibration_end), calibration_end);
END
$$;

CREATE OR REPLACE FUNCTION unify.fit_predictions(calibration_end date DEFAULT current_date, model text DEFAULT 'bgnbd',
                                      horizon_months int DEFAULT 12, discount_rate float8 DEFAULT 0.1)
RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    purchase_fit record;   -- unify._fit_purchases' row: params, param_values, log_likelihood, converged, evaluations, status
    spend_fit record;      -- unify._fit_spend's row, the same columns
    n_customers bigint;
    n_spend bigint;
    month_weeks float8[];
    new_fit bigint;
    written bigint := 0;
BEGIN
    IF calibration_end IS NULL OR model IS NULL OR horizon_months IS NULL OR discount_rate IS NULL
       OR calibration_end IN ('infinity', '-infinity') THEN
        RAISE EXCEPTION 'fit_predictions: calibration_end, model, horizon_months and discount_rate must be given'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF model NOT IN ('bgnbd', 'pareto_nbd') THEN
        RAISE EXCEPTION 'unknown purchase model "%"', model
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''bgnbd'' (BG/NBD, the default) or ''pareto_nbd'' (Pareto/NBD).';
    END IF;
    IF horizon_months NOT BETWEEN 1 AND 600 OR discount_rate <= -1 OR discount_rate = 'NaN' THEN
        RAISE EXCEPTION 'horizon_months must be 1..600 and discount_rate above -1 (annual, 0.1 = 10%%)'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM unify._lock('predictions');
    PERFORM unify._purchase_summaries(calibration_end);

    SELECT count(*), count(*) FILTER (WHERE frequency > 0) INTO n_customers, n_spend FROM unify_purchase_summaries;
    -- No customer at all: the strict fit returns no row, and the fit is recorded as failed.
    SELECT f.* INTO purchase_fit
    FROM (SELECT array_agg(frequency) AS frequency, array_agg(recency) AS recency, array_agg(age) AS age, array_agg(n) AS n
          FROM (SELECT frequency, recency, age, count(*)::float8 AS n FROM unify_purchase_summaries GROUP BY 1, 2, 3) g) a,
         LATERAL unify._fit_purchases(model, a.frequency, a.recency, a.age, a.n) f;
    IF NOT FOUND THEN
        SELECT NULL::jsonb AS params, NULL::float8[] AS param_values, NULL::float8 AS log_likelihood, false AS converged,
               NULL::int AS evaluations, 'no customers with a purchase up to ' || calibration_end AS status
        INTO purchase_fit;
    END IF;
    SELECT f.* INTO STRICT spend_fit
    FROM (SELECT coalesce(array_agg(frequency), '{}') AS frequency, coalesce(array_agg(mean_spend), '{}') AS mean_spend,
                 coalesce(array_agg(n), '{}') AS n
          FROM (SELECT frequency, mean_spend, count(*)::float8 AS n FROM unify_purchase_summaries
                WHERE frequency > 0 GROUP BY 1, 2) g) a,
         LATERAL unify._fit_spend(a.frequency, a.mean_spend, a.n) f;

    INSERT INTO unify.prediction_fits (model, calibration_end, customers, params, log_likelihood, converged, status,
        evaluations, spend_customers, spend_params, spend_log_likelihood, spend_converged, spend_status,
        horizon_months, discount_rate)
    VALUES (model, calibration_end, n_customers, nullif(purchase_fit.params, '{}'), purchase_fit.log_likelihood,
        purchase_fit.converged, purchase_fit.status, purchase_fit.evaluations,
        n_spend, nullif(spend_fit.params, '{}'), spend_fit.log_likelihood,
        spend_fit.converged, spend_fit.status, horizon_months, discount_rate)
    RETURNING fit_id INTO new_fit;

    -- A failed fit is reported, and the predictions of the last good fit stay.
    IF purchase_fit.converged THEN
        SELECT array_agg(((calibration_end + make_interval(months => m))::date - calibration_end) / 7.0::float8 ORDER BY m)
        INTO month_weeks FROM generate_series(1, horizon_months) m;
        DELETE FROM unify.predictions;
        INSERT INTO unify.predictions (person_id, fit_id, frequency, recency_weeks, age_weeks, mean_spend,
                                       p_alive, expected_purchases, expected_spend, clv)
        SELECT s.person_id, new_fit, s.frequency::int, s.recency, s.age, s.mean_spend, v[1], v[2], v[3], v[4]
        FROM unify_purchase_summaries s,
             LATERAL unify._predict(model, purchase_fit.param_values,
                                    CASE WHEN spend_fit.converged THEN spend_fit.param_values END,
                                    s.frequency, s.recency, s.age, s.mean_spend,
                                    month_weeks[horizon_months], month_weeks,
                                    power(1 + discount_rate, 1.0 / 12) - 1) AS v;
        GET DIAGNOSTICS written = ROW_COUNT;
    END IF;
    UPDATE unify.prediction_fits f SET predictions = written,
           seconds = round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)
    WHERE f.fit_id = new_fit;
    RETURN (SELECT to_jsonb(f) FROM unify.prediction_fits f WHERE f.fit_id = new_fit);
END
$$;
COMMENT ON FUNCTION unify.fit_predictions(date, text, int, float8) IS 'Fits BG/NBD (or Pareto/NBD) and Gamma-Gamma on purchases up to calibration_end and writes per-person predictions; a failed fit is reported in unify.prediction_fits, not raised';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/mod.rs:107
-- requires:
--   predictions
--   cleaners::letter_salutation

-- Views for BI tools over persons, segments and predictions: customer_360, segment_summary and
-- the pseudonymous analyst_persons. Privileges: see security.sql.

CREATE OR REPLACE VIEW unify.customer_360 AS
SELECT p.person_id, p.household_id,
       (SELECT count(*) FROM unify.persons h WHERE h.household_id = p.household_id) AS household_size,
       -- Display values under the plain names (the match keys are in unify.persons).
       p.first_name_display AS first_name, p.last_name_display AS last_name, p.email_display AS email,
       p.phone, p.mobile, p.street_display AS street, p.house_number, p.postcode,
       p.city_display AS city, p.country, p.birth_date, p.company, p.customer_number,
       p.consent_email, p.consent_phone, p.consent_post,
       p.record_count, p.sources, p.first_seen, p.last_seen,
       s.segment, s.r_score, s.f_score, s.m_score, s.last_purchase,
       (SELECT r.as_of FROM unify.segment_runs r ORDER BY r.run_id DESC LIMIT 1) - s.last_purchase AS recency_days,
       s.frequency AS orders_in_window,
       s.monetary AS spend_in_window,
       pr.p_alive, pr.churn_probability, pr.expected_purchases, pr.expected_spend, pr.clv,
       p.updated_at,
       -- Issue 25 (last, as the upgrade adds them): for letters and calls.
       p.salutation, p.title,
       unify.letter_salutation(p.salutation, p.title, p.first_name_display, p.last_name_display) AS letter_salutation,
       p.phone_display, p.mobile_display,
       p.consent_email_source, p.consent_email_at, p.consent_phone_source, p.consent_phone_at,
       p.consent_post_source, p.consent_post_at
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id;
COMMENT ON VIEW unify.customer_360 IS 'One row per person: golden record in display form with salutation, household, sources, consent with its proof, RFM segment and predictions';

CREATE OR REPLACE VIEW unify.segment_summary AS
SELECT r.segment,
       count(s.person_id) AS persons,
       round(100.0 * count(s.person_id) / nullif(sum(count(s.person_id)) OVER (), 0), 1) AS percent,
       round(avg((SELECT r.as_of FROM unify.segment_runs r ORDER BY r.run_id DESC LIMIT 1) - s.last_purchase), 1) AS avg_recency_days,
       round(avg(s.frequency), 2) AS avg_frequency,
       round(avg(s.monetary), 2) AS avg_monetary,
       coalesce(sum(s.monetary), 0) AS total_monetary,
       round(avg(pr.p_alive)::numeric, 3) AS avg_p_alive,
       round(sum(pr.clv)::numeric, 2) AS total_clv
FROM (SELECT DISTINCT segment FROM unify.segment_rules) r
LEFT JOIN unify.segments s ON s.segment = r.segment
LEFT JOIN unify.predictions pr ON pr.person_id = s.person_id
GROUP BY r.segment;
COMMENT ON VIEW unify.segment_summary IS 'Per segment: persons, share, average recency, frequency and spend, P(alive) and CLV';

-- For unify_analyst (data minimisation): persons, segments and predictions with no direct
-- identifier. The postcode is cut to its first two digits (a German postal region of some
-- hundred thousand people), the birth date to its year; no name, e-mail, phone, street, city
-- or customer number.
CREATE VIEW unify.analyst_persons AS
SELECT p.person_id, p.household_id,
       left(p.postcode, 2) AS postcode_area, p.country,
       extract(year FROM p.birth_date)::int AS birth_year,
       p.consent_email, p.consent_phone, p.consent_post,
       p.record_count, p.sources, p.first_seen, p.last_seen,
       s.segment, s.r_score, s.f_score, s.m_score, s.last_purchase,
       s.frequency AS orders_in_window, s.monetary AS spend_in_window,
       pr.p_alive, pr.churn_probability, pr.expected_purchases, pr.expected_spend, pr.clv
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id;
COMMENT ON VIEW unify.analyst_persons IS 'Pseudonymous persons for unify_analyst: ids, postcode area, birth year, segment and predictions, no direct identifier';
/* </end connected objects> */

/* <begin connected objects> */
-- src/sql/mod.rs:114
-- finalize
-- Privileges, in one place (README.md "Security model"). Runs last, over every object of the
-- extension, so nothing created earlier keeps a grant by accident; the surface test
-- (tests/pg_regress/sql/security_catalog.sql) lists the outcome from the catalog.
--
--   PUBLIC          the cleaners and similarity functions, and the helpers a mapping calls
--   unify_admin     reads everything but the erasure secret; changes configuration and data
--                   only through the API functions (SECURITY DEFINER, run as the extension
--                   owner); writes directly only unify.segment_map and unify.exchange_rates
--   unify_reader    the views for BI tools, identifiers included
--   unify_analyst   pseudonymous views: no name, e-mail, phone, street or customer number
--   unify_capture   owns the capture trigger functions; may only insert into the change queue
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
        pinned := NOT ((f.lanname = 'c' AND f.provolatile = 'i')
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
ALTER FUNCTION unify.fit_predictions(date, text, int, float8) SECURITY DEFINER;

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
    unify.refresh_segments(date, interval), unify.fit_predictions(date, text, int, float8),
    -- What add_source and add_transactions call as the caller: text builders and the
    -- registration, which records the caller itself.
    unify._staged_expression(text, text), unify._transaction_expression(jsonb, text),
    unify._require_select(regclass, text),
    unify._register_source(text, oid, text, text, jsonb, int, boolean), unify._register_transactions(text, oid, text, jsonb)
TO unify_admin;

-- Functions the views call (a view runs its functions as the reader).
GRANT EXECUTE ON FUNCTION unify._status(), unify.get_model(), unify.default_segment_map(), unify.default_survivorship()
TO unify_admin, unify_reader, unify_analyst;

GRANT INSERT, UPDATE, DELETE ON unify.segment_map, unify.exchange_rates TO unify_admin;
GRANT USAGE ON SEQUENCE unify.segment_map_rule_id_seq TO unify_admin;

GRANT SELECT ON unify.customer_360, unify.segment_summary, unify.segments, unify.segment_history, unify.segment_runs,
    unify.predictions, unify.prediction_fits, unify.segment_rules, unify.segment_map_cells, unify.households,
    unify.survivorship_rules, unify.match_report, unify.blocking_stats, unify.status, unify.name_frequencies,
    unify.queue_stats, unify.dead_letters
TO unify_reader;

GRANT SELECT ON unify.analyst_persons, unify.segment_summary, unify.segment_runs, unify.prediction_fits,
    unify.segment_rules, unify.segment_map_cells
TO unify_analyst;

GRANT INSERT ON unify.change_queue TO unify_capture;
/* </end connected objects> */


-- Golden records by the 0.2.0 rules: display values, salutation and title, consent by the
-- latest proven statement (the proof columns now hold the statement's own time). What resolve()
-- would do on its next run, done here so customer_360 shows display values at once.
SELECT unify._refresh_persons(NULL::bigint[], 'update to 0.2.0', NULL) WHERE EXISTS (SELECT 1 FROM unify.persons);

-- Tombstones: 0.1.0 kept sha256(key), which a list of all customer numbers reverses. 0.2.0
-- keeps HMAC-SHA-256(secret, sha256(key)) (unify._key_hash), so the old ones are keyed here
-- without knowing the keys. HMAC computed in SQL (RFC 2104; the secret is 32 bytes, under
-- the 64-byte block, so it is zero-padded, not hashed).
DO $tombstones$
DECLARE
    k bytea;
    ipad bytea := '\x'::bytea;
    opad bytea := '\x'::bytea;
    i int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unify.erasures) THEN
        RETURN;
    END IF;
    INSERT INTO unify._secret (secret)
    SELECT pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text, 'UTF8'))
    ON CONFLICT DO NOTHING;
    SELECT s.secret INTO k FROM unify._secret s;
    k := k || pg_catalog.decode(pg_catalog.repeat('00', 64 - pg_catalog.length(k)), 'hex');
    FOR i IN 0..63 LOOP
        ipad := ipad || pg_catalog.decode(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.get_byte(k, i) # 54), 2, '0'), 'hex');
        opad := opad || pg_catalog.decode(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.get_byte(k, i) # 92), 2, '0'), 'hex');
    END LOOP;
    UPDATE unify.erasures e SET key_hash = pg_catalog.sha256(opad || pg_catalog.sha256(ipad || e.key_hash));
END
$tombstones$;

-- Capture triggers: 0.1.0's functions ran as the extension's owner; 0.2.0's belong to
-- unify_capture (see unify._create_capture). Made anew for every tracked source, in this
-- transaction, so no write goes uncaptured; then taken out of the extension, as add_source
-- leaves them (pg_dump dumps them beside the triggers that call them).
DO $capture$
DECLARE
    src record;
BEGIN
    FOR src IN SELECT s.source_id, s.relation FROM unify.sources s WHERE s.track_changes AND s.removed_at IS NULL ORDER BY s.source_id LOOP
        PERFORM unify._drop_capture(src.source_id, src.relation);
        PERFORM unify._create_capture(src.source_id, true);
        EXECUTE pg_catalog.format('ALTER EXTENSION customer_unify DROP FUNCTION unify.%I()', '_capture_' || src.source_id);
        EXECUTE pg_catalog.format('ALTER EXTENSION customer_unify DROP FUNCTION unify.%I()', '_capture_truncate_' || src.source_id);
    END LOOP;
END
$capture$;
