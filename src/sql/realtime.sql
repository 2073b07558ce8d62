-- Real time (issue 6): the change queue applied end to end (records, pairs, persons, golden
-- records, households) in small transactions, by the background worker or by a scheduled
-- unify.process_queue(); the figures of both in unify.status.

-- Figures of the queue processing, one row, updated by every batch that took changes.
CREATE TABLE unify.queue_stats (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_batch_at     timestamptz,
    last_batch_rows   int,
    last_batch_ms     numeric,
    last_batch_by     text,
    -- Rows per second over the last minute (a window restarted every minute).
    window_started_at timestamptz,
    window_rows       bigint NOT NULL DEFAULT 0,
    last_window_rate  numeric,
    total_rows        bigint NOT NULL DEFAULT 0,
    total_batches     bigint NOT NULL DEFAULT 0
);
COMMENT ON TABLE unify.queue_stats IS 'Last batch, throughput and totals of unify.process_queue() (worker or scheduled job)';
INSERT INTO unify.queue_stats DEFAULT VALUES;

-- The persons whose clustering a change of `record_ids` can touch: theirs before
-- (`person_ids`) and now, and, repeatedly, those of every record matched or must-linked to a
-- record in scope. Returns the persons and the records without a person yet.
CREATE FUNCTION unify._queue_scope(person_ids bigint[], record_ids bigint[], OUT persons bigint[], OUT unassigned bigint[])
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

CREATE FUNCTION unify.process_queue(max_rows int DEFAULT 1000) RETURNS int
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
    rescored bigint[];
    scope record;
    elapsed numeric;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be a positive number, not %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The idle worker asks many times a second: an empty queue costs one index probe.
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
    IF matching THEN
        -- The same order as score_pairs (scoring) and resolve/link (clustering): one writer of
        -- pairs and person ids at a time, and no deadlock between them.
        PERFORM pg_advisory_xact_lock(1970501, 1);
        PERFORM pg_advisory_xact_lock(1970502, 0);
    END IF;
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
        PERFORM unify._apply(src, keys);
        IF matching THEN
            record_keys := coalesce(keys, ARRAY(SELECT r.source_key FROM unify.records r WHERE r.source_id = src.source_id));
            SELECT changed_ids || coalesce(array_agg(r.record_id), '{}') INTO changed_ids
            FROM unify.records r WHERE r.source_id = src.source_id AND r.source_key = ANY (record_keys);
        END IF;
    END LOOP;

    IF matching AND cardinality(changed_ids) > 0 THEN
        -- Re-block and re-score the changed records, re-score the pairs among those sharing an
        -- e-mail or phone with them whose household status the change turns, then re-cluster
        -- every person touched.
        changed_ids := ARRAY(SELECT DISTINCT x FROM unnest(changed_ids) x);
        rescored := unify._rescore(changed_ids, before);
        scope := unify._queue_scope(old_persons, rescored);
        PERFORM unify._resolve_scope(scope.persons, scope.unassigned || rescored, 'process_queue', NULL);
    END IF;

    IF taken > 0 THEN
        elapsed := round(extract(epoch FROM clock_timestamp() - started)::numeric * 1000, 1);
        UPDATE unify.queue_stats s SET
            last_batch_at = now(), last_batch_rows = taken, last_batch_ms = elapsed,
            last_batch_by = CASE WHEN current_setting('application_name') = 'customer_unify worker'
                                 THEN 'worker' ELSE current_user END,
            last_window_rate = CASE WHEN s.window_started_at < now() - interval '1 minute'
                                    THEN round(s.window_rows / greatest(extract(epoch FROM now() - s.window_started_at), 1)::numeric, 1)
                                    ELSE s.last_window_rate END,
            window_rows = CASE WHEN s.window_started_at IS NULL OR s.window_started_at < now() - interval '1 minute'
                               THEN taken ELSE s.window_rows + taken END,
            window_started_at = CASE WHEN s.window_started_at IS NULL OR s.window_started_at < now() - interval '1 minute'
                                     THEN now() ELSE s.window_started_at END,
            total_rows = s.total_rows + taken, total_batches = s.total_batches + 1;
    END IF;
    RETURN taken;
END
$$;
COMMENT ON FUNCTION unify.process_queue(int) IS 'Applies up to max_rows queued source changes end to end: records, pairs, persons, golden records, households';

-- The background worker of this database, if one runs (pg_stat_activity knows it by its type).
CREATE FUNCTION unify._worker() RETURNS TABLE (pid int, state text, started_at timestamptz, wait_event text)
STABLE LANGUAGE sql AS $$
    SELECT a.pid, CASE WHEN a.wait_event = 'customer_unify_naptime' OR a.wait_event = 'Extension' THEN 'idle' ELSE 'working' END,
           a.backend_start, a.wait_event
    FROM pg_catalog.pg_stat_activity a
    WHERE a.backend_type = 'customer_unify worker' AND a.datname = current_database()
    LIMIT 1
$$;

CREATE VIEW unify.status AS
SELECT s.name AS source,
       s.relation_name AS relation,
       s.track_changes,
       s.removed_at,
       greatest(c.reltuples, 0)::bigint AS source_rows_estimate,
       (SELECT count(*) FROM unify.records r WHERE r.source_id = s.source_id) AS records,
       (SELECT count(*) FROM unify.change_queue q WHERE q.source_id = s.source_id) AS queue_depth,
       (SELECT now() - min(q.enqueued_at) FROM unify.change_queue q WHERE q.source_id = s.source_id) AS queue_lag,
       s.last_sync_at,
       s.last_sync_rows,
       s.last_sync_seconds,
       (SELECT a.query_start FROM pg_stat_activity a
         WHERE a.application_name = 'unify.sync ' || s.name LIMIT 1) AS sync_running_since,
       w.pid AS worker_pid,
       coalesce(w.state, 'not running') AS worker_state,
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
       (SELECT now() - min(x.enqueued_at) FROM unify.change_queue x) AS total_queue_lag,
       m.keys_built_at IS NOT NULL AND m.blocking_rules = unify.get_model() -> 'blocking_rules' AS matching_live
FROM unify.sources s
LEFT JOIN pg_class c ON c.oid = s.relation
LEFT JOIN unify._worker() w ON true
CROSS JOIN unify.queue_stats q
LEFT JOIN unify.matching_state m ON true;
COMMENT ON VIEW unify.status IS 'Per source: rows, records, queue depth and lag, last sync; for the database: worker state, last batch, rows/s, whether changes are matched live';

REVOKE ALL ON FUNCTION unify.process_queue(int), unify._rescore(bigint[], jsonb), unify._queue_scope(bigint[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION unify.process_queue(int), unify._rescore(bigint[], jsonb), unify._queue_scope(bigint[], bigint[]) TO unify_admin;
GRANT SELECT, UPDATE ON unify.queue_stats TO unify_admin;
GRANT SELECT ON unify.queue_stats TO unify_reader;
GRANT SELECT ON unify.status TO unify_admin, unify_reader;
