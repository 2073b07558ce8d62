#!/usr/bin/env bash
# What the writers and the workers wait on during a steady insert run, on the database
# benches/realtime.sh left behind (run that first): pg_stat_activity sampled every 20 ms (from
# database postgres, so the sampler holds back no vacuum in the benchmark database), pgbench's
# own insert latencies, the WAL written, and the latency from commit to person per second
# with more than 100 ms. The workers restart first (as after a server start), so the first
# second shows their cold start.
#
#   bash benches/realtime_waits.sh [--rate 200] [--seconds 60] [--worker-sync off|on]
#                                  [--conf "wal_compression = lz4"]...
source "$(dirname "$0")/../scripts/lib.sh"
RATE=200
RUN_SECONDS=60
WORKER_SYNC=off
CONF=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE="$2"; shift 2 ;;
        --seconds) RUN_SECONDS="$2"; shift 2 ;;
        --worker-sync) WORKER_SYNC="$2"; shift 2 ;;
        --conf) CONF+=("$2"); shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
realtime_bench_database
cd "$ROOT"
OUT=$(mktemp -d)
chmod 777 "$OUT"
start_realtime_study_cluster "rm -rf '$OUT'" "customer_unify.worker_synchronous_commit = $WORKER_SYNC" \
    "track_wal_io_timing = on" "${CONF[@]}"
q() { psql -X -q -At -d "$DB" -c "$1"; }
psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS wait_samples" \
    -c "CREATE UNLOGGED TABLE wait_samples (at timestamptz, pid int, backend_type text, wait_event text)"
until [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'customer_unify worker'")" = 2 ]; do sleep 0.2; done
echo "date $(date -u +%F), $(nproc) cores; records $(q "SELECT count(*) FROM unify.records"); worker_synchronous_commit $WORKER_SYNC ${CONF[*]}"
q "SELECT pg_stat_reset_shared('wal')" >/dev/null
mark=$(q "SELECT last_value FROM load_keys")
psql -X -q -d postgres -c "DO \$\$ BEGIN FOR i IN 1..$((RUN_SECONDS * 50 + 250)) LOOP
    INSERT INTO wait_samples SELECT clock_timestamp(), pid, backend_type, coalesce(wait_event, 'on CPU')
    FROM pg_stat_activity WHERE datname = '$DB' AND state = 'active' AND pid <> pg_backend_pid();
    COMMIT; PERFORM pg_sleep(0.02); END LOOP; END \$\$" &
sampler=$!
(cd "$OUT" && PGOPTIONS="-c synchronous_commit=on" "$PG_BIN/pgbench" -n -c 4 -j 4 -R "$RATE" -T "$RUN_SECONDS" -l \
    -f "$ROOT/tests/worker/writers.pgbench" "$DB" 2>&1 | grep -E "latency average|tps =" | sed 's/^/pgbench: /')
wait_queue_drained "$DB"
kill $sampler 2>/dev/null; wait 2>/dev/null
echo "pgbench inserts over 50 ms: $(cat "$OUT"/pgbench_log* | awk '$3 > 50000' | wc -l) of $(cat "$OUT"/pgbench_log* | wc -l)"
echo "WAL: $(q "SELECT format('%s, %s full-page images, %s times the WAL buffers were full, %s flushes taking %s ms', pg_size_pretty(wal_bytes), wal_fpi, wal_buffers_full, wal_sync, round(wal_sync_time::numeric)) FROM pg_stat_wal")"
echo "wait events (share of the samples of each kind of process):"
psql -X -q -d postgres -c "SELECT backend_type, wait_event, count(*) AS samples,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY backend_type), 1) AS pct
    FROM wait_samples GROUP BY 1, 2 HAVING count(*) >= 5 ORDER BY 1, 3 DESC"
q "WITH l AS ($(realtime_latencies_sql "$mark"))
   SELECT format('rows %s, latency ms: p50 %s, p95 %s, p99 %s, max %s; seconds with rows over 100 ms: %s', count(*),
                 round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                 round(percentile_cont(0.95) WITHIN GROUP (ORDER BY ms)::numeric, 1),
                 round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1), round(max(ms)::numeric, 1),
                 coalesce((SELECT string_agg(format('%s (%s rows)', s, n), ', ' ORDER BY s)
                           FROM (SELECT to_char(date_trunc('second', committed), 'HH24:MI:SS') s, count(*) n
                                 FROM l WHERE ms > 100 GROUP BY 1) x), 'none'))
   FROM l"
