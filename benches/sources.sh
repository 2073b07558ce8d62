#!/usr/bin/env bash
# Benchmark: unify.sync() of the generated CRM (four sources, --rows source rows in all) against a
# plain INSERT ... SELECT of the same columns with lower(trim()) in the same run; then the capture
# trigger's cost on single-row inserts (tracked vs untracked copy of one table), both as
# autocommit inserts through pgbench and inside one transaction.
#
# --repeat R then runs R more rounds in the same database, each a first load into a fresh
# extension and the baseline, alternating which goes first, and prints each round's ratios (wall
# time and the backend's CPU time, index builds serial in these rounds) and their medians: one
# run's wall ratio moves with whatever else the machine does in that second.
#
#   bash benches/sources.sh [--rows N] [--inserts M] [--repeat R]
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=1000000
INSERTS=100000
REPEAT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --inserts) INSERTS="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}"
start_cluster "$DIR" "shared_buffers = '2GB'" "jit = off" "max_wal_size = '8GB'"
trap 'stop_cluster "$DIR"' EXIT
psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench_sources" -c "CREATE DATABASE bench_sources"
log "generating $ROWS CRM rows (crmgen --rows $ROWS --seed 1)"
crmgen --rows "$ROWS" --seed 1 | psql -q -X -v ON_ERROR_STOP=1 -d bench_sources >/dev/null
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/sources.sh --rows $ROWS --inserts $INSERTS$([ "$REPEAT" -gt 0 ] && echo " --repeat $REPEAT")"
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d bench_sources -f benches/sources.sql
    # Single-row autocommit inserts, one client, into a tracked and an untracked copy.
    for table in bench_tracked bench_untracked; do
        cat > "$DIR/insert_$table.sql" <<SQL
\set id random(1, 2000000000)
INSERT INTO $table (signup_id, email, first_name, signed_up_at, double_opt_in) VALUES (nextval('bench_ids'), 'x' || :id || '@example.de', 'Max', now(), true);
SQL
    done
    for round in 1 2; do
        for table in bench_untracked bench_tracked; do
            tps=$("$PG_BIN/pgbench" -n -c 1 -t "$INSERTS" -f "$DIR/insert_$table.sql" bench_sources 2>/dev/null | awk '/tps =/ {print $3; exit}')
            echo "pgbench round $round: $INSERTS autocommit inserts into $table: $tps inserts/s"
        done
    done
    PGOPTIONS="-c bench.inserts=$INSERTS" psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d bench_sources -f benches/sources_trigger.sql
    if [ "$REPEAT" -gt 0 ]; then
        wall=(); cpu=()
        for round in $(seq 1 "$REPEAT"); do
            sync_first=$([ $((round % 2)) = 1 ] && echo true || echo false)
            read -r _ sync_ms base_ms sync_cpu base_cpu < <(psql -X -q -v ON_ERROR_STOP=1 -v sync_first="$sync_first" \
                -d bench_sources -f benches/sources_repeat.sql | grep '^round ')
            wall+=("$(awk -v a="$sync_ms" -v b="$base_ms" 'BEGIN {printf "%.2f", a / b}')")
            cpu+=("$(awk -v a="$sync_cpu" -v b="$base_cpu" 'BEGIN {printf "%.2f", a / b}')")
            echo "round $round ($([ "$sync_first" = true ] && echo "first load first" || echo "baseline first"), load $(cut -d' ' -f1 /proc/loadavg)): first load $sync_ms ms (CPU $sync_cpu ms), baseline $base_ms ms (CPU $base_cpu ms): wall ${wall[-1]}x, CPU ${cpu[-1]}x"
        done
        median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2)}'; }
        echo "first load / baseline over $REPEAT rounds: wall median $(median "${wall[@]}")x (${wall[*]}), backend CPU median $(median "${cpu[@]}")x (${cpu[*]})"
    fi
} 2>&1 | tee "$DIR/sources-result.txt"
