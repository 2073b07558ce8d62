-- Trigger cost inside one transaction (no commit per row): the strictest view of the overhead.
SET client_min_messages = warning;
CREATE TEMP TABLE trigger_timings (tracked boolean, round int, ms numeric);
DO $$
DECLARE t0 timestamptz; n int := current_setting('bench.inserts')::int;
BEGIN
    FOR round IN 1..2 LOOP
        t0 := clock_timestamp();
        FOR i IN 1..n LOOP
            INSERT INTO bench_untracked (signup_id, email, first_name, signed_up_at, double_opt_in)
            VALUES (nextval('bench_ids'), 'y' || i || '@example.de', 'Max', now(), true);
        END LOOP;
        INSERT INTO trigger_timings VALUES (false, round, extract(epoch FROM clock_timestamp() - t0) * 1000);
        t0 := clock_timestamp();
        FOR i IN 1..n LOOP
            INSERT INTO bench_tracked (signup_id, email, first_name, signed_up_at, double_opt_in)
            VALUES (nextval('bench_ids'), 'y' || i || '@example.de', 'Max', now(), true);
        END LOOP;
        INSERT INTO trigger_timings VALUES (true, round, extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END $$;
SELECT round, round(max(ms) FILTER (WHERE NOT tracked)) AS untracked_ms, round(max(ms) FILTER (WHERE tracked)) AS tracked_ms,
       round(max(ms) FILTER (WHERE tracked) / max(ms) FILTER (WHERE NOT tracked), 2) AS ratio
FROM trigger_timings GROUP BY round ORDER BY round;
SELECT count(*) AS queued_changes FROM unify.change_queue;
