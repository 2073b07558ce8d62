-- Citus (issue 27, first slice). Every unify table stays a plain table on the coordinator and
-- every step runs there, as without Citus. Registered source tables may be Citus tables:
--   - sync reads a distributed or reference source through a distributed query: the mapping
--     staging (unify._stage_statement, an INSERT ... SELECT into this session's temporary
--     pg_temp.unify_source_rows) is pushed to the shards by Citus and its rows pulled to the
--     coordinator; the cleaners and the comparison with unify.records then run over that local
--     temporary table only (no query joins a Citus table with a unify table);
--   - change capture on a distributed or reference table is refused at add_source (SQLSTATE
--     0A000 with a hint): Citus runs a trigger of such a table on its shards, on the workers,
--     where nobody would drain what it queues. Such a source is registered with
--     track_changes => false and synced on a schedule.
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

-- add_source's check of a Citus source (called as the caller, before the registration): a
-- distributed or reference table is registered only with track_changes => false.
CREATE FUNCTION unify._citus_check_source(relation regclass, relation_name text, track_changes boolean) RETURNS void
STABLE LANGUAGE plpgsql AS $$
DECLARE
    placement constant text := unify._placement(relation);
BEGIN
    IF track_changes AND placement IN ('distributed', 'reference') THEN
        RAISE EXCEPTION 'changes of % table % cannot be tracked', placement, relation_name
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Change capture is a trigger that queues into unify.change_queue on the coordinator; Citus would run it on the shards, on the worker nodes.',
                  HINT = 'Register it with track_changes => false and call unify.sync(name) on a schedule: sync reads it through a distributed query (docs/OPERATIONS.md, "Citus").';
    END IF;
END
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

-- unify._score_members, made by every distributed scoring and dropped at its end, in its
-- transaction (an error drops it too): nothing stays on the workers, and no table outside the
-- extension stays in its schema (DROP EXTENSION, pg_dump). Made by unify.score_pairs
-- (SECURITY DEFINER), so owned by the extension's owner, with no privilege for any other role;
-- UNLOGGED (a scratch table). Distributed by the block key, so a block's members are on one
-- shard. Returns the table (one left by anything else is emptied and used).
CREATE FUNCTION unify._citus_score_table() RETURNS regclass
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('unify._score_members') IS NULL THEN
        CREATE UNLOGGED TABLE unify._score_members (
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
        );
        REVOKE ALL ON unify._score_members FROM PUBLIC;
        COMMENT ON TABLE unify._score_members IS 'Scratch of unify.score_pairs on Citus: members of the candidate blocks, distributed by block key (dropped at the end of the run)';
    END IF;
    IF unify._placement('unify._score_members') <> 'distributed' THEN
        EXECUTE 'SELECT pg_catalog.create_distributed_table(''unify._score_members'', ''key_hash'', colocate_with => ''none'')';
    END IF;
    RETURN 'unify._score_members'::regclass;
END
$$;

-- Privileges: see security.sql.
