#!/usr/bin/env bash
# The drain of a backlog, repeated on the database benches/realtime.sh left behind (run that
# first), with where its time goes: N copies of sample rows queued with the workers off (by
# tests/worker/writers.pgbench), by default a CHECKPOINT (the worst case: every page a batch
# touches is then written to the WAL in full once), then the two workers drain it. Prints the
# rate, the CPU of the whole machine and of the workers, each stage's time per batch
# (track_functions), what the workers waited on (pg_stat_activity every 20 ms, sampled from
# database postgres) and, with --phases, the _rescore phases per batch (their DEBUG1 lines
# from the server log). Each run adds N records to the database.
#
#   bash benches/realtime_drain.sh [--backlog 20000] [--checkpoint on|off] [--phases]
#                                  [--conf "customer_unify.batch_size = 2000"]...
source "$(dirname "$0")/../scripts/lib.sh"
BACKLOG=20000
CHECKPOINT=on
CONF=()
while [ $# -gt 0 ]; do
    case "$1" in
        --backlog) BACKLOG="$2"; shift 2 ;;
        --checkpoint) CHECKPOINT="$2"; shift 2 ;;
        --phases) CONF+=("log_min_messages = debug1"); shift ;;
        --conf) CONF+=("$2"); shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
realtime_bench_database
cd "$ROOT"
start_realtime_study_cluster "" "track_functions = 'all'" "${CONF[@]}"
q() { psql -X -q -At -d "$DB" -c "$1"; }
psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS drain_samples" \
    -c "CREATE UNLOGGED TABLE drain_samples (at timestamptz, pid int, wait text)"
wait_queue_drained "$DB"
q "ALTER SYSTEM SET customer_unify.worker_enabled = off" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
sleep 1
"$PG_BIN/pgbench" -n -c 4 -j 4 -t $((BACKLOG / 4)) -f tests/worker/writers.pgbench "$DB" >/dev/null 2>&1
[ "$CHECKPOINT" = on ] && q "CHECKPOINT"
queued=$(q "SELECT count(*) FROM unify.change_queue")
q "SELECT pg_stat_reset()" >/dev/null
pids=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'customer_unify worker' AND datname = '$DB'")
worker_ticks() { local t=0 p; for p in $pids; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $5 + $6}' /proc/stat; }
tick_ms=$((1000 / $(getconf CLK_TCK)))
psql -X -q -d postgres -c "DO \$\$ BEGIN FOR i IN 1..30000 LOOP
    INSERT INTO drain_samples SELECT clock_timestamp(), pid, coalesce(wait_event_type || ':' || wait_event, 'on CPU')
    FROM pg_stat_activity WHERE datname = '$DB' AND backend_type = 'customer_unify worker' AND state = 'active';
    COMMIT; PERFORM pg_sleep(0.02); END LOOP; END \$\$" >/dev/null 2>&1 &
sampler=$!
log_offset=$(stat -c %s "$DIR/server.log")
read -r busy0 idle0 < <(machine_ticks)
workers0=$(worker_ticks)
started=$(date +%s.%N)
q "ALTER SYSTEM RESET customer_unify.worker_enabled" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
wait_queue_drained "$DB"
ended=$(date +%s.%N)
read -r busy1 idle1 < <(machine_ticks)
workers1=$(worker_ticks)
kill $sampler 2>/dev/null
wait 2>/dev/null
echo "date $(date -u +%F), $(nproc) cores; records $(q "SELECT count(*) FROM unify.records"); checkpoint first: $CHECKPOINT ${CONF[*]}"
echo "drained $queued queued changes in $(echo "$ended - $started" | bc) s: $(echo "$queued / ($ended - $started)" | bc) rows/s"
echo "CPU: machine busy $(( (busy1 - busy0) * tick_ms )) ms, idle $(( (idle1 - idle0) * tick_ms )) ms (all cores); workers $(( (workers1 - workers0) * tick_ms )) ms"
q "SELECT 'ms per call: ' || string_agg(format('%s %s (%s calls)', funcname, round((total_time / calls)::numeric), calls), ', ' ORDER BY funcname)
   FROM pg_stat_user_functions WHERE funcname IN ('_queue_take', '_queue_rescore', '_queue_cluster') AND calls > 0"
psql -X -q -At -d postgres -c "SELECT 'workers: ' || string_agg(format('%s %s%%', wait, pct), ', ' ORDER BY n DESC)
    FROM (SELECT wait, count(*) AS n, round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS pct
          FROM drain_samples GROUP BY wait) w"
tail -c +$((log_offset + 1)) "$DIR/server.log" | grep "_rescore: model" | python3 -c "
import collections, re, sys
total, n = collections.Counter(), 0
for line in sys.stdin:
    n += 1
    for phase, seconds in re.findall(r'([a-z ]+) ([0-9.]+) s', line.split('_rescore:')[1]):
        total[phase.strip()] += float(seconds)
if n:
    print(f'_rescore phases, ms per batch ({n} batches):', ', '.join(f'{k} {round(v * 1000 / n)}' for k, v in total.items() if v * 1000 / n >= 1))
"
