#!/usr/bin/env bash
# Benchmark: every cleaner and similarity function over 1M generated rows in one SQL statement,
# against built-in / contrib / pg_similarity baselines measured in the same run, on one core
# (parallel query off). Prints a table; docs/BENCHMARKS.md records the figures.
#
#   bash benches/cleaners.sh [--rows N] [--runs R]
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=1000000
RUNS=3
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
EXTRA_PACKAGES=(postgresql-$PG_MAJOR-similarity)
ensure_deps
cd "$ROOT"
install_release

DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}"
start_cluster "$DIR" "shared_buffers = '2GB'" "max_parallel_workers_per_gather = 0" "jit = off"
trap 'stop_cluster "$DIR"' EXIT
psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
log "generating $ROWS CRM rows (crmgen --rows $ROWS --seed 1)"
crmgen --rows "$ROWS" --seed 1 --schema crm | psql -q -X -v ON_ERROR_STOP=1 -d bench >/dev/null
log "timing (best of $RUNS runs per statement)"
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/cleaners.sh --rows $ROWS --runs $RUNS"
    psql -X -v ON_ERROR_STOP=1 -v rows="$ROWS" -v runs="$RUNS" -P pager=off -d bench -f benches/cleaners.sql
} | tee "$DIR/cleaners-result.txt"
