#!/usr/bin/env bash
# Benchmark: the background worker over a resolved generated CRM. Latency from the commit of a
# source insert to the commit that gives its record a person (both commit timestamps, from
# track_commit_timestamp) at a steady insert rate; the drain rate of a backlog (the most rows/s
# the worker sustains); a steady run at a high rate to confirm the queue stays short; and the
# worker's CPU while idle. Inserts are copies of sample rows under new keys (half with another
# last name), into three sources, by pgbench (tests/worker/writers.pgbench). The steady run
# follows a 10 s warm-up at the same rate (reported apart).
#
#   bash benches/realtime.sh [--rows N] [--rate R] [--seconds S] [--backlog B] [--naptime 10ms]
#                            [--shared-buffers 2GB] [--workers 2] [--wal-compression off]
# After the setup the unify and crm tables are read into shared buffers (pg_prewarm): the
# measurement is of the worker, not of the disk. Where the kernel reclaims the page cache
# (seen on this VM: 0.8 GB cached of 24 GB right after a run), pass a shared_buffers that holds
# the working set, e.g. --shared-buffers 8GB at 1M records.
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=1000000
RATE=200
RUN_SECONDS=60
BACKLOG=20000
NAPTIME=10ms
SHARED_BUFFERS=2GB
WORKERS=2
WAL_COMPRESSION=off
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --seconds) RUN_SECONDS="$2"; shift 2 ;;
        --backlog) BACKLOG="$2"; shift 2 ;;
        --naptime) NAPTIME="$2"; shift 2 ;;
        --shared-buffers) SHARED_BUFFERS="$2"; shift 2 ;;
        --workers) WORKERS="$2"; shift 2 ;;
        --wal-compression) WAL_COMPRESSION="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/realtime"
DB=bench_realtime
start_cluster "$DIR" "shared_buffers = '$SHARED_BUFFERS'" "jit = off" "max_wal_size = '8GB'" "work_mem = '256MB'" \
    "shared_preload_libraries = 'customer_unify'" "customer_unify.databases = '$DB'" \
    "track_commit_timestamp = on" "customer_unify.naptime = '$NAPTIME'" "customer_unify.workers = $WORKERS" \
    "wal_compression = $WAL_COMPRESSION"
trap 'stop_cluster "$DIR"' EXIT
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d "$DB")
q() { "${PSQL[@]}" -At -c "$1"; }
drain_wait() { wait_queue_drained "$DB"; }
source_rows="(SELECT count(*) FROM crm.shop_customers) + (SELECT count(*) FROM crm.crm_contacts) + (SELECT count(*) FROM crm.pos_loyalty_members)"
# Latency of the rows inserted since the key sequence stood at $1, by percentile, in ms.
latency_report() {
    q "WITH l AS ($(realtime_latencies_sql "$1"))
     SELECT format('rows %s, latency ms: p50 %s, p95 %s, p99 %s, max %s', count(*),
                   round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                   round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                   round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                   round(max(ms)::numeric, 1)) FROM l"
}
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/realtime.sh --rows $ROWS --rate $RATE --seconds $RUN_SECONDS --backlog $BACKLOG --naptime $NAPTIME --shared-buffers $SHARED_BUFFERS --workers $WORKERS --wal-compression $WAL_COMPRESSION"
    psql -q -X -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    crmgen --rows "$ROWS" --seed 1 --schema crm | "${PSQL[@]}" >/dev/null
    "${PSQL[@]}" <<'SQL'
SET client_min_messages = warning;
SET search_path = crm, public;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
RESET search_path;
\timing on
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT count(*) AS em_sessions FROM unify.train();
SELECT candidate_pairs, stored_pairs, matches, seconds FROM unify.score_pairs();
SELECT persons, records, seconds FROM unify.resolve();
\timing off
SELECT pg_size_pretty(pg_total_relation_size('unify.block_keys')) AS block_keys_size, (SELECT count(*) FROM unify.block_keys) AS block_keys;
CREATE SEQUENCE load_keys START 5000000000000;
CREATE TABLE load_shop AS SELECT row_number() OVER (ORDER BY customer_id) i, * FROM crm.shop_customers;
CREATE TABLE load_crm AS SELECT row_number() OVER (ORDER BY kontakt_nr) i, * FROM crm.crm_contacts;
CREATE TABLE load_pos AS SELECT row_number() OVER (ORDER BY card_no) i, * FROM crm.pos_loyalty_members;
CREATE INDEX ON load_shop (i); CREATE INDEX ON load_crm (i); CREATE INDEX ON load_pos (i);
ANALYZE;
CREATE EXTENSION IF NOT EXISTS pg_prewarm;
SELECT pg_size_pretty(sum(pg_prewarm(c.oid)) * current_setting('block_size')::bigint) AS prewarmed
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname IN ('unify', 'crm') AND c.relkind IN ('r', 'i', 't');
SQL
    echo "page cache: $(free -m | awk '/Mem:/ {print $6}') MB (buff/cache) after the setup"
    # pgbench's script counts the sample rows per insert; with an index on i that stays cheap.
    until [ "$(q "SELECT worker_state <> 'not running' FROM unify.status LIMIT 1")" = t ]; do sleep 0.5; done
    sleep 1  # all workers up
    pids=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'customer_unify worker' AND datname = '$DB'")
    ticks() { local t=0 p; for p in $pids; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
    t0=$(ticks); sleep 10; t1=$(ticks)
    echo "idle workers ($(echo $pids | wc -w)): $(( (t1 - t0) * 10 )) ms CPU in 10 s together ($(getconf CLK_TCK) ticks/s; naptime $(q "SHOW customer_unify.naptime"))"

    # The workers have not run a batch yet: their first batches plan every statement and fill
    # their caches (about 60 ms once per worker). A warm-up at the same rate keeps that out of
    # the steady figures; its own latency is printed so the cold start is not hidden.
    echo "== warm-up: $RATE inserts/s for 10 s, the workers' first batches since their start"
    mark=$(q "SELECT last_value FROM load_keys")
    "$PG_BIN/pgbench" -n -c 4 -j 4 -R "$RATE" -T 10 -f tests/worker/writers.pgbench "$DB" >/dev/null 2>&1
    drain_wait
    latency_report "$mark"

    echo "== steady $RATE inserts/s for $RUN_SECONDS s (4 clients), $(q "SHOW customer_unify.workers") workers, naptime $(q "SHOW customer_unify.naptime"), batch size $(q "SHOW customer_unify.batch_size")"
    mark=$(q "SELECT last_value FROM load_keys")
    q "SELECT pg_stat_reset_shared('wal')" >/dev/null
    "$PG_BIN/pgbench" -n -c 4 -j 4 -R "$RATE" -T "$RUN_SECONDS" -f tests/worker/writers.pgbench "$DB" 2>&1 \
        | grep -E "number of transactions actually|latency average|tps =" | sed 's/^/pgbench: /'
    drain_wait
    echo "queue: $(q "SELECT format('%s rows processed in %s batches', total_rows, total_batches) FROM unify.queue_stats")"
    echo "WAL in the run: $(q "SELECT format('%s, %s full-page images, %s flushes', pg_size_pretty(wal_bytes), wal_fpi, wal_sync) FROM pg_stat_wal")"
    latency_report "$mark"

    echo "== backlog of $BACKLOG inserts, then the worker drains it (batch size $(q "SHOW customer_unify.batch_size"))"
    q "ALTER SYSTEM SET customer_unify.worker_enabled = off" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null; sleep 1
    "$PG_BIN/pgbench" -n -c 4 -j 4 -t $((BACKLOG / 4)) -f tests/worker/writers.pgbench "$DB" >/dev/null 2>&1
    queued=$(q "SELECT count(*) FROM unify.change_queue")
    started=$(date +%s.%N)
    q "ALTER SYSTEM RESET customer_unify.worker_enabled" >/dev/null; q "SELECT pg_reload_conf()" >/dev/null
    drain_wait
    ended=$(date +%s.%N)
    echo "drained $queued queued changes in $(echo "$ended - $started" | bc) s: $(echo "$queued / ($ended - $started)" | bc) rows/s"

    rate2=$(echo "$queued / ($ended - $started) * 0.8 / 1" | bc)
    echo "== steady $rate2 inserts/s (80% of the drain rate) for 30 s: does the queue stay short?"
    mark=$(q "SELECT last_value FROM load_keys")
    "$PG_BIN/pgbench" -n -c 4 -j 4 -R "$rate2" -T 30 -f tests/worker/writers.pgbench "$DB" 2>&1 \
        | grep -E "number of transactions actually|tps =" | sed 's/^/pgbench: /' &
    maxq=0
    for _ in $(seq 1 30); do
        d=$(q "SELECT count(*) FROM unify.change_queue"); [ "$d" -gt "$maxq" ] && maxq=$d; sleep 1
    done
    wait
    drain_wait
    echo "largest queue depth seen (sampled each second): $maxq"
    latency_report "$mark"
    echo "records now: $(q "SELECT count(*) FROM unify.records") (source rows $(q "SELECT $source_rows + (SELECT count(*) FROM crm.newsletter_signups)"))"
} 2>&1 | tee "$DIR.log"
