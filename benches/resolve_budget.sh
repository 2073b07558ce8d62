#!/usr/bin/env bash
# Benchmark: unify.resolve() within customer_unify.batch_memory at growing sizes, before and after
# issue 27's clustering in batches of whole components, in the same run.
#
# For each size: the generated German CRM (crmgen --seed 1, four sources), sync, train and
# score_pairs once (kept as a template database). Then, each from a fresh copy of the template
# and in its own session (backend): a first resolve and a second one (nothing changes), at the
# small budget and at the default (1GB), with the build of this tree ("after") and with the build
# of --before (a git revision, default main; built from `git archive` in the bench directory).
# Per resolve: wall time, peak (VmHWM) and private peak (VmHWM - RssShmem, as benches/scale.sh),
# and a checksum over every person row, each record's person and former ids, and the identity
# events: the same checksum means the same results.
#
#   bash benches/resolve_budget.sh [--rows 200000,400000,800000] [--budget 16MB] [--before main]
#
# RESOLVE_BUDGET_KEEP=1 keeps the cluster and the template databases at the end;
# RESOLVE_BUDGET_REUSE=1 takes the template databases an earlier run kept (same sizes, seed 1);
# RESOLVE_BUDGET_PHASES=before (or after) runs only that build's resolves.
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=200000,400000,800000
BUDGET=16MB
BEFORE=main
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --before) BEFORE="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_deps
cd "$ROOT"
# Built again for sure: the library an earlier --before build left under the same name in the
# target directory is not taken for this tree's.
touch "$ROOT/src/lib.rs"
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/resolve_budget"
mkdir -p "$DIR"
BEFORE_COMMIT=$(git -C "$ROOT" rev-parse --short "$BEFORE")
AFTER_COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
install_release
start_cluster "$DIR" "shared_buffers = '256MB'" "jit = off" "max_wal_size = '8GB'" "work_mem = '64MB'" \
    "maintenance_work_mem = '512MB'"
[ -n "${RESOLVE_BUDGET_KEEP:-}" ] || trap 'stop_cluster "$DIR"' EXIT

# One statement in its own session on database $1: seconds, peak and private peak.
step() {
    local db="$1" label="$2" budget="$3" sql="$4"
    psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$db" <<SQL
SET client_min_messages = warning;
SET customer_unify.batch_memory = '$budget';
SELECT clock_timestamp() AS started \gset
$sql
SELECT format('%-44s %-6s %8s s  peak %6s MB  private %6s MB', '$label', '$budget',
              round(extract(epoch FROM clock_timestamp() - :'started'::timestamptz)::numeric, 1),
              substring(s from 'VmHWM:\s*(\d+) kB')::bigint / 1024,
              (substring(s from 'VmHWM:\s*(\d+) kB')::bigint - substring(s from 'RssShmem:\s*(\d+) kB')::bigint) / 1024)
FROM pg_read_file('/proc/self/status') s;
SQL
}

checksum() {
    psql -X -A -t -d "$1" -c "SELECT '    persons ' || (SELECT count(*) FROM unify.persons)
        || ', households ' || (SELECT count(DISTINCT household_id) FROM unify.persons)
        || ', events ' || (SELECT count(*) FROM unify.identity_events)
        || ', checksum ' || left(md5((SELECT string_agg(md5((to_jsonb(p) - 'updated_at' - 'created_at')::text), '' ORDER BY person_id) FROM unify.persons p)
            || (SELECT string_agg(md5(record_id || ':' || coalesce(person_id, 0) || ':' || coalesce(former_person_ids::text, '')), '' ORDER BY record_id) FROM unify.records LEFT JOIN unify.record_persons USING (record_id))
            || (SELECT coalesce(string_agg(md5(event_id || event || person_id || related_ids::text || coalesce(details::text, '')), '' ORDER BY event_id), '') FROM unify.identity_events)), 12)
        || ' (ids and events alone ' || left(md5((SELECT string_agg(md5(record_id || ':' || coalesce(person_id, 0) || ':' || coalesce(former_person_ids::text, '')), '' ORDER BY record_id) FROM unify.records LEFT JOIN unify.record_persons USING (record_id))
            || (SELECT coalesce(string_agg(md5(event_id || event || person_id || related_ids::text || coalesce(details::text, '')), '' ORDER BY event_id), '') FROM unify.identity_events)), 12)
        || ', households ' || left(md5((SELECT string_agg(person_id || ':' || coalesce(household_id, 0), ',' ORDER BY person_id) FROM unify.persons)), 12) || ')'"
}

# The resolves of one build on every size's template.
resolves() {
    local build="$1"
    for rows in ${ROWS//,/ }; do
        for budget in "$BUDGET" 1GB; do
            psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench_resolve" \
                -c "CREATE DATABASE bench_resolve TEMPLATE bench_resolve_$rows"
            step bench_resolve "$rows $build first resolve" "$budget" "SELECT * FROM unify.resolve() \g /dev/null"
            checksum bench_resolve
            step bench_resolve "$rows $build second resolve" "$budget" "SELECT * FROM unify.resolve() \g /dev/null"
            # The clustering alone, in a transaction rolled back: its part of the private peak.
            step bench_resolve "$rows $build _cluster alone (rolled back)" "$budget" \
                "BEGIN; SELECT * FROM unify._cluster(NULL, NULL, 'resolve', NULL) \g /dev/null
ROLLBACK;"
        done
    done
    psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench_resolve"
}

{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u '+%F %H:%M') UTC"
    echo "command: bash benches/resolve_budget.sh --rows $ROWS --budget $BUDGET --before $BEFORE"
    echo "before: $BEFORE_COMMIT, after: $AFTER_COMMIT"
    echo "load: $(cat /proc/loadavg)"
    for rows in ${ROWS//,/ }; do
        if [ -n "${RESOLVE_BUDGET_REUSE:-}" ] && [ "$(psql -X -A -t -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = 'bench_resolve_$rows'")" = 1 ]; then
            echo "$rows records: the template database of an earlier run"
            continue
        fi
        psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench_resolve_$rows" -c "CREATE DATABASE bench_resolve_$rows"
        crmgen --rows "$rows" --seed 1 | psql -q -X -v ON_ERROR_STOP=1 -d "bench_resolve_$rows" >/dev/null
        psql -X -q -v ON_ERROR_STOP=1 -d "bench_resolve_$rows" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
SELECT sum(source_rows) FROM unify.sync();
SELECT count(*) FROM unify.train();
SELECT * FROM unify.score_pairs();
VACUUM ANALYZE;
SQL
        psql -X -A -t -d "bench_resolve_$rows" -c "SELECT '$rows records: ' || (SELECT count(*) FROM unify.records) || ' records, '
            || (SELECT count(*) FILTER (WHERE is_match) FROM unify.pairs) || ' matching pairs; database '
            || pg_size_pretty(pg_database_size(current_database()))"
    done
    echo "load: $(cat /proc/loadavg)"
    [ "${RESOLVE_BUDGET_PHASES:-both}" = before ] || resolves after
    # The build of --before, over the same templates.
    [ "${RESOLVE_BUDGET_PHASES:-both}" != after ] || exit 0
    rm -rf "$DIR/before-src"
    mkdir -p "$DIR/before-src"
    git -C "$ROOT" archive "$BEFORE" | tar -x -C "$DIR/before-src"
    # git archive gives the files the commit's time: cargo would take an earlier build from
    # this directory for up to date.
    find "$DIR/before-src" -type f -exec touch {} +
    # Its own sources, this tree's target directory (the dependencies are built already).
    (CARGO_TARGET_DIR="$ROOT/target"; export CARGO_TARGET_DIR; ROOT="$DIR/before-src"; install_build release) \
        || die "building $BEFORE failed"
    echo "load: $(cat /proc/loadavg)"
    resolves before
    echo "load: $(cat /proc/loadavg)"
} 2>&1 | tee "$DIR/resolve-budget-result.txt"
# The build of this tree installed again.
touch "$ROOT/src/lib.rs"
install_release >/dev/null
if [ -z "${RESOLVE_BUDGET_KEEP:-}" ]; then
    for rows in ${ROWS//,/ }; do
        psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench_resolve_$rows"
    done
fi
