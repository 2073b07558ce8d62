#!/usr/bin/env bash
# Where a batch of the change queue spends its time, on the database benches/realtime.sh left
# behind (run that first). Queues 5,000 copied inserts (tests/worker/writers.pgbench) if fewer
# are queued, then applies them as five process_queue(1000) batches inside a transaction that
# is rolled back, --reps times over the same queue: wall and backend CPU time per repetition,
# self time per function (track_functions), the time of each stage (take, rescore, cluster)
# and the _rescore phases (DEBUG1) of the last one.
# The worker is off meanwhile. The first repetition runs with cold caches; compare the others.
# The database is vacuumed first: rolled-back repetitions leave dead index entries behind, and
# those of an earlier run made inserting a batch's pairs up to five times slower.
#
#   bash benches/realtime_batches.sh [--reps N]
source "$(dirname "$0")/../scripts/lib.sh"
REPS=5
while [ $# -gt 0 ]; do
    case "$1" in
        --reps) REPS="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
realtime_bench_database
cd "$ROOT"
start_cluster "$DIR" "shared_buffers = '2GB'" "jit = off" "max_wal_size = '8GB'" "work_mem = '256MB'" \
    "shared_preload_libraries = 'customer_unify'" "customer_unify.databases = '$DB'" \
    "track_commit_timestamp = on" "customer_unify.worker_enabled = off" "track_functions = 'all'"
trap 'stop_cluster "$DIR"' EXIT
q() { psql -X -q -At -d "$DB" -c "$1"; }
q "VACUUM (ANALYZE) unify.pairs, unify.block_keys, unify.records, unify.persons, unify.change_queue"
if [ "$(q "SELECT count(*) FROM unify.change_queue")" -lt 5000 ]; then
    "$PG_BIN/pgbench" -n -c 4 -j 4 -t 1250 -f tests/worker/writers.pgbench "$DB" >/dev/null 2>&1
fi
echo "date $(date -u +%F), $(nproc) cores; records $(q "SELECT count(*) FROM unify.records"), queued $(q "SELECT count(*) FROM unify.change_queue")"
for rep in $(seq 1 "$REPS"); do
    psql -X -q -At -d "$DB" <<'SQL' 2>&1 | grep -v '^DEBUG:  \(building index\|index "\|relation "pg_temp\|rehashing\)\|^LINE [0-9]*:\|^ *\^$'
\echo == repetition
SELECT pg_backend_pid() AS pid \gset
\setenv PID :pid
\! awk '{print $14 + $15}' /proc/$PID/stat > /tmp/customer_unify-batches.cpu
BEGIN;
SET client_min_messages = debug1;
SELECT clock_timestamp() AS t0 \gset
SELECT format('batches %s', concat_ws(' ', unify.process_queue(1000), unify.process_queue(1000), unify.process_queue(1000),
                                      unify.process_queue(1000), unify.process_queue(1000)));
SELECT format('wall %s ms', round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric * 1000));
\! echo "backend cpu $(( ($(awk '{print $14 + $15}' /proc/$PID/stat) - $(cat /tmp/customer_unify-batches.cpu)) * 1000 / $(getconf CLK_TCK) )) ms"
SELECT 'self ms: ' || string_agg(format('%s %s', funcname, round(self_time::numeric)), ', ' ORDER BY self_time DESC)
FROM pg_stat_xact_user_functions WHERE self_time > 20;
SELECT 'stage ms (total): ' || string_agg(format('%s %s', funcname, round(total_time::numeric)), ', ' ORDER BY funcname DESC)
FROM pg_stat_xact_user_functions WHERE funcname IN ('_queue_take', '_queue_rescore', '_queue_cluster');
ROLLBACK;
SQL
done | awk -v reps="$REPS" '/^== repetition/ {rep++; print "== repetition " rep; next} rep < reps && /DEBUG/ {next} {print}'
