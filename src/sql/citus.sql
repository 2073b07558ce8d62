-- Citus (issue 27). Every unify table stays a plain table on the coordinator and every step
-- that writes them runs there, as without Citus. Registered source tables may be Citus tables:
--   - sync reads a distributed source through one distributed query that runs the mapping AND
--     the cleaners on the shards (unify._citus_clean_statement): the workers return cleaned
--     rows, which land in this session's temporary pg_temp.unify_clean_rows on the coordinator;
--     the comparison with unify.records (which rows changed) and the erasure filter then run
--     over that local table only (no query joins a Citus table with a unify table). A reference
--     table is read through a distributed query and cleaned on the coordinator, as before;
--   - change capture of a hash-distributed source is colocated with each shard: its queue
--     unify._queue_<source_id> is itself a distributed table, colocated with the source (same
--     distribution column type, same shard ranges, on the same nodes). Citus creates the
--     capture trigger on every shard (citus.enable_unsafe_triggers, set for that statement
--     only); the trigger's insert into the queue names a key of its own shard, so Citus routes
--     it to the colocated queue shard on the same node (a local task, which Citus allows inside
--     a shard trigger), in the transaction of the user's write. The coordinator drains the shard
--     queues into unify.change_queue (unify._citus_collect, a distributed DELETE ... RETURNING
--     in the transaction that goes on to apply them: Citus commits both with two-phase commit),
--     from process_queue and the background workers' steps; from there a change goes the way of
--     every other. A TRUNCATE fires only on the coordinator's table (Citus runs no truncate
--     trigger on shards): its capture is the plain one, into unify.change_queue. Capture on a
--     reference table, or on a distributed table not hash-distributed, is refused (SQLSTATE
--     0A000 with a hint): register it with track_changes => false and sync it on a schedule.
-- Nothing here needs Citus: without the citus extension in the database every table is 'local'
-- (pg_dist_partition is only read when it exists, through dynamic SQL).

-- Whether the citus extension is installed in this database.
CREATE FUNCTION unify._citus_present() RETURNS boolean
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'citus')
$$;

-- Where a table lives: 'distributed' (its rows in shards on the workers: hash-distributed, or a
-- single-shard distributed table), 'reference' (a copy on every node), 'citus_local' (a Citus
-- local table, on the coordinator but in Citus's metadata), 'local' (a plain table; every
-- table without Citus). NULL for NULL.
CREATE FUNCTION unify._placement(relation regclass) RETURNS text
STABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE
    method "char";
    model "char";
    colocation int;
BEGIN
    IF NOT unify._citus_present() OR to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN 'local';
    END IF;
    EXECUTE 'SELECT p.partmethod, p.repmodel, p.colocationid FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1'
        INTO method, model, colocation USING relation;
    RETURN CASE WHEN method IS NULL THEN 'local'
                WHEN method <> 'n' THEN 'distributed'
                WHEN model = 't' THEN 'reference'
                WHEN colocation = 0 THEN 'citus_local'
                ELSE 'distributed' END;
END
$$;

-- What unify._stage_statement appends to its statement: for a distributed source ' ORDER BY'
-- its key, so that its rows reach unify.records (and take their record ids) in key order,
-- whichever shard answers first; a sync of the same data then gives the same record ids every
-- time. Matching samples and breaks ties by record id, so this is what makes the persons of a
-- Citus sync reproducible. Empty for every other table (no sort where the order is the table's).
CREATE FUNCTION unify._citus_stage_order(relation regclass, key_column text) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN unify._placement(relation) = 'distributed' THEN pg_catalog.format(' ORDER BY src.%I', key_column) ELSE '' END
$$;

-- add_source's check of a Citus source (called as the caller, before the registration): the
-- changes of a hash-distributed table are captured beside its shards (see above); a reference
-- table, a single-shard or an append/range-distributed table is registered only with
-- track_changes => false. For a tracked hash-distributed table it also sets
-- citus.multi_shard_modify_mode = sequential for the rest of the transaction, before add_source
-- reads the table: Citus creates the capture function on the workers over one connection per
-- node, which it refuses after a statement of the transaction used several (SQLSTATE 0A000,
-- "cannot run function command because there was a parallel operation").
CREATE FUNCTION unify._citus_check_source(relation regclass, relation_name text, track_changes boolean) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    placement constant text := unify._placement(relation);
BEGIN
    IF track_changes AND (placement = 'reference' OR (placement = 'distributed' AND unify._citus_method(relation) <> 'h')) THEN
        RAISE EXCEPTION 'changes of % table % cannot be tracked', CASE WHEN placement = 'reference' THEN placement ELSE 'non-hash-distributed' END, relation_name
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Change capture of a Citus table needs a capture queue colocated with its shards: only a hash-distributed table has one.',
                  HINT = 'Register it with track_changes => false and call unify.sync(name) on a schedule: sync reads it through a distributed query (docs/OPERATIONS.md, "Citus").';
    END IF;
    IF track_changes AND placement = 'distributed' THEN
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
END
$$;

-- The distribution method of a Citus table ('h' hash, 'n' none: reference, single-shard or
-- Citus local, 'a'/'r' append/range); NULL for a table Citus does not know, and without Citus.
CREATE FUNCTION unify._citus_method(relation regclass) RETURNS "char"
STABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE
    method "char";
BEGIN
    IF NOT unify._citus_present() OR to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT p.partmethod FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1' INTO method USING relation;
    RETURN method;
END
$$;

-- The shard-local capture queue of a source (unify._queue_<source_id>), if it has one.
CREATE FUNCTION unify._citus_queue(source_id int) RETURNS regclass
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT pg_catalog.to_regclass(pg_catalog.format('unify.%I', '_queue_' OPERATOR(pg_catalog.||) source_id))
$$;

-- How the changes of a source reach unify.records: 'trigger' (a capture trigger on its table
-- queues into unify.change_queue), 'shard_queue' (a trigger on every shard queues into a
-- distributed queue colocated with the source, drained by the coordinator), 'none' (not
-- tracked: only unify.sync reads it).
CREATE FUNCTION unify._capture_mode(src unify.sources) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN NOT src.track_changes OR src.removed_at IS NOT NULL THEN 'none'
                WHEN unify._citus_queue(src.source_id) IS NOT NULL THEN 'shard_queue'
                ELSE 'trigger' END
$$;

-- Makes the shard-local capture of source `id`, a hash-distributed table (called by
-- unify._create_capture as the extension owner): the queue unify._queue_<id> (the source key in
-- its own type, the operation, when), distributed by the key colocated with the source; the
-- capture function that inserts into it; with `triggers`, the row trigger on the table, which
-- Citus creates on every shard. The truncate capture stays the plain one (see above).
CREATE FUNCTION unify._citus_create_capture(src unify.sources, triggers boolean) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    queue constant text := '_queue_' || src.source_id;
    key_type text;
BEGIN
    SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO STRICT key_type FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = src.relation AND a.attname = src.key_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF unify._citus_queue(src.source_id) IS NULL THEN
        EXECUTE pg_catalog.format('CREATE TABLE unify.%I (source_key %s NOT NULL, op "char" NOT NULL CHECK (op IN (''I'', ''U'', ''D'')), '
                                  'enqueued_at timestamptz NOT NULL DEFAULT now())', queue, key_type);
        EXECUTE pg_catalog.format('COMMENT ON TABLE unify.%I IS %L', queue,
                                  pg_catalog.format('Changes of source %s captured on its shards, colocated with %s; drained into unify.change_queue by the coordinator', src.name, src.relation_name));
        EXECUTE pg_catalog.format('REVOKE ALL ON unify.%I FROM PUBLIC', queue);
        EXECUTE pg_catalog.format('GRANT SELECT ON unify.%I TO unify_admin', queue);
        EXECUTE pg_catalog.format('GRANT INSERT ON unify.%I TO unify_capture', queue);
        EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''source_key'', colocate_with => $2)'
            USING pg_catalog.format('unify.%I', queue), src.relation::text;
    END IF;
    -- The key cannot change on a distributed table (Citus refuses updates of the distribution
    -- column), so an UPDATE queues its one key. No guard against a dropped queue beyond the
    -- lookup: the function is replaced with the plain one when the source stops being tracked.
    EXECUTE pg_catalog.format($f$
CREATE OR REPLACE FUNCTION unify.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF to_regclass('unify.%I') IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO unify.%I (source_key, op) VALUES (OLD.%I, 'D');
    ELSIF TG_OP = 'UPDATE' AND OLD.%I IS DISTINCT FROM NEW.%I THEN
        INSERT INTO unify.%I (source_key, op) VALUES (OLD.%I, 'D');
        INSERT INTO unify.%I (source_key, op) VALUES (NEW.%I, 'I');
    ELSE
        INSERT INTO unify.%I (source_key, op) VALUES (NEW.%I, left(TG_OP, 1)::"char");
    END IF;
    RETURN NULL;
END
$body$
$f$, '_capture_' || src.source_id, queue, queue, src.key_column, src.key_column, src.key_column,
        queue, src.key_column, queue, src.key_column, queue, src.key_column);
    EXECUTE pg_catalog.format('ALTER FUNCTION unify.%I() OWNER TO unify_capture', '_capture_' || src.source_id);
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION unify.%I() FROM PUBLIC', '_capture_' || src.source_id);
    IF triggers THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION unify.%I()',
                                  'unify_capture_' || src.source_id, src.relation, '_capture_' || src.source_id);
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'off', true);
    END IF;
END
$$;

-- Moves what the shard-local capture queues hold into unify.change_queue (keys as text, the
-- time of the change kept): one distributed DELETE ... RETURNING per queue, in the caller's
-- transaction, which goes on to apply the changes (process_queue, the workers' steps). A
-- rollback leaves them on the shards; a row a trigger adds meanwhile stays for the next call;
-- two callers never move a row twice (the second's DELETE waits for the first's and finds it
-- gone). Returns the rows moved. Without Citus, or without such a queue, it reads the catalog
-- of unify.sources only.
CREATE FUNCTION unify._citus_collect() RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    src record;
    n bigint;
    moved bigint := 0;
BEGIN
    FOR src IN SELECT s.source_id, unify._citus_queue(s.source_id) AS queue FROM unify.sources s
               WHERE s.track_changes AND s.removed_at IS NULL AND unify._citus_queue(s.source_id) IS NOT NULL
               ORDER BY s.source_id LOOP
        EXECUTE pg_catalog.format('WITH taken AS (DELETE FROM %s q RETURNING q.source_key, q.op, q.enqueued_at),
                                        moved AS (INSERT INTO unify.change_queue (source_id, source_key, op, enqueued_at)
                                                  SELECT $1, t.source_key::text, t.op, t.enqueued_at FROM taken t RETURNING 1)
                                   SELECT count(*) FROM moved', src.queue)
            INTO n USING src.source_id;
        moved := moved + n;
    END LOOP;
    RETURN moved;
END
$$;

-- The changes waiting in a source's shard-local queue (not yet drained into
-- unify.change_queue) and the oldest one's time; 0 and NULL without such a queue; both NULL
-- (unknown) while a worker node holding the queue cannot be reached, so that unify.status
-- still answers for everything else.
CREATE FUNCTION unify._citus_queue_depth(source_id int, OUT depth bigint, OUT oldest timestamptz)
STABLE LANGUAGE plpgsql AS $$
DECLARE
    queue constant regclass := unify._citus_queue(source_id);
BEGIN
    depth := 0;
    IF queue IS NOT NULL THEN
        BEGIN
            EXECUTE pg_catalog.format('SELECT count(*), min(q.enqueued_at) FROM %s q', queue) INTO depth, oldest;
        EXCEPTION WHEN connection_exception THEN
            depth := NULL;
            oldest := NULL;
        END;
    END IF;
END
$$;

-- Where sync cleans a source's rows: 'workers' for a hash- or single-shard distributed table
-- (the mapping and the cleaners run on its shards), 'coordinator' for every other.
CREATE FUNCTION unify._cleaned_on(relation regclass) RETURNS text
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN unify._placement(relation) = 'distributed' THEN 'workers' ELSE 'coordinator' END
$$;

-- This session's table of cleaned rows of a distributed source (see above): made on first use
-- (INSERT granted to PUBLIC, as pg_temp.unify_source_rows: the mapping's role writes it), one
-- made by another role first is dropped (see unify._prepare_stage), emptied otherwise.
CREATE FUNCTION unify._citus_prepare_clean(full_read boolean) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    PERFORM unify._drop_foreign_temp(ARRAY['unify_clean_rows']);
    IF to_regclass('pg_temp.unify_clean_rows') IS NULL THEN
        -- The columns of unify._normalized_query, in its order.
        CREATE TEMP TABLE unify_clean_rows (
            source_key text, first_name text, last_name text, email text, email_key text, phone text, mobile text,
            street text, house_number text, postcode text, city text, country text, birth_date date, company text,
            customer_number text, external_id text, consent_email boolean, consent_phone boolean, consent_post boolean,
            source_updated_at timestamptz, last_name_phonetic text, raw jsonb, salutation text, title text,
            consent_email_at timestamptz, consent_phone_at timestamptz, consent_post_at timestamptz,
            -- the order the rows came in (the key's), which their places in the table need not keep
            ord bigint GENERATED ALWAYS AS IDENTITY);
        GRANT INSERT ON pg_temp.unify_clean_rows TO PUBLIC;
    ELSIF full_read OR pg_relation_size('pg_temp.unify_clean_rows') > 8 * 1024 * 1024 THEN
        TRUNCATE pg_temp.unify_clean_rows;
    ELSE
        DELETE FROM pg_temp.unify_clean_rows;
    END IF;
END
$$;

-- The statement sync runs (as the mapping's role) for a distributed source: the mapping and
-- the cleaners over the source rows `filter` selects, in one query Citus pushes down to the
-- shards whole (no OFFSET fence, no reference to a coordinator table: unify._normalized_query
-- with fenced => false and fresh => true; the raw values made of built-ins, see
-- unify._raw_expression), into pg_temp.unify_clean_rows, in key order (see
-- unify._citus_stage_order: the same record ids on every sync of the same data).
CREATE FUNCTION unify._citus_clean_statement(src unify.sources, filter text) RETURNS text
STABLE LANGUAGE plpgsql AS $$
DECLARE
    staged text := format('(src.%I)::text AS source_key, src.%I AS _order_key', src.key_column, src.key_column);
    f record;
BEGIN
    FOR f IN SELECT * FROM unify._canonical_field_types() LOOP
        IF src.fields ? f.field THEN
            staged := staged || format(', %s AS %I', unify._staged_expression(f.field, src.fields ->> f.field), f.field);
        ELSE
            staged := staged || format(', NULL::%s AS %I', f.stage_type, f.field);
        END IF;
    END LOOP;
    RETURN format('INSERT INTO pg_temp.unify_clean_rows (source_key, first_name, last_name, email, email_key, phone, mobile, '
                  'street, house_number, postcode, city, country, birth_date, company, customer_number, external_id, '
                  'consent_email, consent_phone, consent_post, source_updated_at, last_name_phonetic, raw, salutation, title, '
                  'consent_email_at, consent_phone_at, consent_post_at) %s ORDER BY raw._order_key',
                  -- source 0: no comparison and no erasure filter in the pushed-down query
                  -- (both read coordinator tables); _citus_staged_query applies them after.
                  unify._normalized_query(0,
                      format(E'\nSELECT s.*, %s AS raw\nFROM (SELECT %s FROM %s AS src %s) AS s\n',
                             unify._raw_expression(src.fields), staged, src.relation, coalesce(filter, '')),
                      true, false));
END
$$;

-- After unify._citus_clean_statement: the mapped values of the cleaned rows (their raw jsonb,
-- which holds them as staged) into pg_temp.unify_source_rows, in the order they came, as the
-- staging of a local table would have put them there. The places rows take in that table
-- (PostgreSQL fills earlier pages' free space with smaller rows) decide the order records are
-- written in and so their ids, on which training's sample and scoring's ties depend: so a
-- distributed source's records take the ids they would take on a single node.
CREATE FUNCTION unify._citus_restage(fields jsonb) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE (SELECT format('INSERT INTO pg_temp.unify_source_rows (source_key, %s) SELECT c.source_key, %s FROM pg_temp.unify_clean_rows c ORDER BY c.ord',
                           string_agg(format('%I', f.field), ', '),
                           string_agg(CASE WHEN fields ? f.field THEN format('(c.raw ->> %L)::%s', f.field, f.stage_type)
                                           ELSE format('NULL::%s', f.stage_type) END, ', '))
             FROM unify._canonical_field_types() AS f);
END
$$;

-- The cleaned rows of a distributed source to write into unify.records: those whose raw
-- values differ from the record held (all of them for a first load, `fresh`), without rows of
-- erased persons (the same filters unify._normalized_query applies), over the local tables, in
-- the order of pg_temp.unify_source_rows (see unify._citus_restage).
CREATE FUNCTION unify._citus_staged_query(source_id int, fresh boolean) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
SELECT format($q$
SELECT raw.* FROM pg_temp.unify_source_rows AS staged JOIN pg_temp.unify_clean_rows AS raw ON raw.source_key = staged.source_key
WHERE true
%s
%s
ORDER BY staged.ctid
$q$,
    CASE WHEN fresh THEN '' ELSE format($r$AND NOT EXISTS (SELECT 1 FROM unify.records r
                  WHERE r.source_id = %s AND r.source_key = raw.source_key AND r.raw = raw.raw)$r$, source_id) END,
    CASE WHEN EXISTS (SELECT 1 FROM unify.erasures e WHERE e.source_id = _citus_staged_query.source_id)
         THEN format($e$AND NOT EXISTS (SELECT 1 FROM unify.erasures e
                  WHERE e.source_id = %s AND e.key_hash = unify._key_hash((SELECT k.secret FROM unify._secret k), raw.source_key))$e$, source_id)
         ELSE '' END)
$$;

-- Scoring on the workers (issue 27, second slice). With Citus and at least one worker node,
-- unify.score_pairs keeps everything above on the coordinator (households, unify.block_keys,
-- the figures per rule, unify.pairs) and scores the candidate blocks on the workers: the
-- members of every valid block go into unify._score_members, distributed by block key, each
-- row carrying the record's match columns, its valid block keys and what the scorer reads
-- about it from the coordinator's state (name frequencies, household e-mail and phones); one
-- distributed query groups that table by block key (pushed down to the shards) and calls the
-- Rust kernel unify._score_block per block (matching/distributed.rs).

-- Active worker nodes of the Citus cluster (0 without Citus or without workers).
CREATE FUNCTION unify._citus_workers() RETURNS int
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    IF NOT unify._citus_present() OR to_regclass('pg_catalog.pg_dist_node') IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE 'SELECT count(*)::int FROM pg_catalog.pg_dist_node n WHERE n.noderole = ''primary'' AND n.isactive AND n.groupid > 0'
        INTO n;
    RETURN n;
END
$$;

-- unify._score_members (score_pairs) or unify._train_members (train), made by every distributed
-- run and dropped at its end, in its transaction (an error drops it too): nothing stays on the
-- workers, and no table outside the extension stays in its schema (DROP EXTENSION, pg_dump).
-- Made by unify.score_pairs or unify.train (SECURITY DEFINER), so owned by the extension's
-- owner, with no privilege for any other role; UNLOGGED (a scratch table). Distributed by the
-- block key, so a block's members are on one shard. Two tables, so that a training and a
-- scoring (which may run at once) never share one. Returns the table (one left by anything
-- else is emptied and used).
CREATE FUNCTION unify._citus_member_table(name text) RETURNS regclass
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    qualified constant text := 'unify.' || pg_catalog.quote_ident(name);
BEGIN
    IF name NOT IN ('_score_members', '_train_members') THEN
        RAISE EXCEPTION 'unknown member table %', name USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.to_regclass(qualified) IS NULL THEN
        EXECUTE format('CREATE UNLOGGED TABLE %s (
            key_hash              bigint NOT NULL,
            record_id             bigint NOT NULL,
            source_id             int,
            first_name            text,
            last_name             text,
            email                 text,
            email_key             text,
            phone                 text,
            mobile                text,
            street                text,
            house_number          text,
            postcode              text,
            city                  text,
            external_id           text,
            customer_number       text,
            birth_date            date,
            valid_keys            bigint[] NOT NULL,
            first_name_tf         float8,
            first_name_as_last_tf float8,
            last_name_tf          float8,
            last_name_as_first_tf float8,
            email_household       boolean NOT NULL,
            phone_household       boolean NOT NULL,
            mobile_household      boolean NOT NULL
        )', qualified);
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', qualified);
        EXECUTE format('COMMENT ON TABLE %s IS %L', qualified,
                       'Scratch of unify.' || CASE name WHEN '_score_members' THEN 'score_pairs' ELSE 'train' END
                       || ' on Citus: members of the candidate blocks, distributed by block key (dropped at the end of the run)');
    END IF;
    IF unify._placement(qualified::regclass) <> 'distributed' THEN
        EXECUTE format('SELECT pg_catalog.create_distributed_table(%L, ''key_hash'', colocate_with => ''none'')', qualified);
    END IF;
    RETURN qualified::regclass;
END
$$;

-- unify._score_members (see unify._citus_member_table).
CREATE FUNCTION unify._citus_score_table() RETURNS regclass
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    RETURN unify._citus_member_table('_score_members');
END
$$;

-- Privileges: see security.sql.
