#!/usr/bin/env bash
# Benchmark: unify.resolve() over the scored generated CRM (clustering, stable ids, golden records,
# households), a second resolve on unchanged data, cluster quality against the truth, and the
# latency of one person from unify.customer_360 against a primary-key lookup of unify.persons
# (the baseline) in the same run, through pgbench. Then the end-to-end batch against Splink 5 in
# the same run: ours sync -> train -> score_pairs -> resolve from the source tables, Splink load ->
# train -> predict -> cluster on the records we normalized (benches/splink_compare.py --cluster);
# wall time, peak memory and pairwise F1 of the clusters.
#
# --data plain runs the same on a data set crmgen did not make: one table of Faker de_DE persons
# with 20% corrupted duplicates (benches/plain_persons.py), the kind of set issue 27 asks for.
#
# --batch-memory sets customer_unify.batch_memory for our batch (default: the extension's, 1GB);
# at 1M records 4GB holds all records at once, about the memory Splink takes on the same data.
#
#   bash benches/persons.sh [--rows N] [--seconds S] [--data crmgen|plain] [--batch-memory SIZE]
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=100000
SECONDS_PER_RUN=20
DATA=crmgen
BATCH_MEMORY=
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
        --data) DATA="$2"; shift 2 ;;
        --batch-memory) BATCH_MEMORY="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
EXTRA_PACKAGES=(python3-venv python3-pip)
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}"
start_cluster "$DIR" "shared_buffers = '2GB'" "jit = off" "max_wal_size = '8GB'" "work_mem = '256MB'"
trap 'stop_cluster "$DIR"' EXIT
# One venv for Splink and the plain data set's generator (pinned: the data must not change with it).
PYTHON="$DIR/splink-venv/bin/python"
if [ ! -x "$PYTHON" ] || ! "$PYTHON" -c "import splink, faker" 2>/dev/null; then
    python3 -m venv "$DIR/splink-venv"
    "$DIR/splink-venv/bin/pip" install -q "splink==5.0.0" pandas "faker==30.0.0"
fi
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/persons.sh --rows $ROWS --seconds $SECONDS_PER_RUN --data $DATA${BATCH_MEMORY:+ --batch-memory $BATCH_MEMORY}"
    psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench_persons" -c "CREATE DATABASE bench_persons"
    if [ "$DATA" = plain ]; then
        "$PYTHON" benches/plain_persons.py --rows "$ROWS" --seed 1 | psql -q -X -v ON_ERROR_STOP=1 -d bench_persons >/dev/null
        SOURCES=benches/plain_sources.sql
    else
        crmgen --rows "$ROWS" --seed 1 | psql -q -X -v ON_ERROR_STOP=1 -d bench_persons >/dev/null
        SOURCES=demo/sources.sql
    fi
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d bench_persons -v sources="$SOURCES" -v batch_memory="${BATCH_MEMORY:-1GB}" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
SET customer_unify.batch_memory = :'batch_memory';
\i :sources
\timing on
SELECT clock_timestamp() AS started \gset
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT count(*) AS em_sessions FROM unify.train();
SELECT candidate_pairs, stored_pairs, matches FROM unify.score_pairs();
SELECT * FROM unify.resolve();
SELECT round(extract(epoch FROM clock_timestamp() - :'started'::timestamptz)::numeric, 1) AS end_to_end_seconds_sync_train_score_resolve;
\echo second resolve, nothing changed:
SELECT * FROM unify.resolve();
\timing off
\echo size of the records and of the record-to-person mapping after the resolves:
SELECT pg_size_pretty(pg_total_relation_size('unify.records')) AS records,
       pg_size_pretty(pg_total_relation_size(to_regclass('unify.record_persons'))) AS record_persons;
\echo peak memory of the backend:
SELECT substring(pg_read_file('/proc/self/status') from 'VmHWM:\s*(\d+ kB)') AS backend_peak_rss;
SELECT count(*) AS identity_events FROM unify.identity_events;
\echo cluster quality: record pairs put in one person, against the true persons
WITH t AS (SELECT rp.person_id AS predicted, tr.person_id AS truth FROM unify.records r JOIN unify.record_persons rp USING (record_id) JOIN unify.sources s USING (source_id)
           JOIN truth tr ON tr.source = s.name AND tr.source_key = r.source_key),
c AS (SELECT (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM t GROUP BY predicted, truth) x) AS tp,
             (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM t GROUP BY predicted) x) AS predicted_pairs,
             (SELECT sum(n * (n - 1) / 2) FROM (SELECT count(*) n FROM t GROUP BY truth) x) AS true_pairs)
SELECT tp, predicted_pairs, true_pairs, round(tp / predicted_pairs, 5) AS precision, round(tp / true_pairs, 5) AS recall,
       round(2 * tp / (predicted_pairs + true_pairs), 5) AS f1 FROM c;
\echo persons holding records of two or more true persons of one household (family members merged)
WITH t AS (SELECT rp.person_id, tr.person_id AS truth, tr.household_id FROM unify.records r JOIN unify.record_persons rp USING (record_id) JOIN unify.sources s USING (source_id)
           JOIN truth tr ON tr.source = s.name AND tr.source_key = r.source_key)
SELECT count(*) FILTER (WHERE true_persons > 1) AS merged_persons, count(*) AS persons
FROM (SELECT person_id, count(DISTINCT truth) AS true_persons FROM t GROUP BY person_id) x;
SELECT count(*) AS households, round(avg(persons), 2) AS avg_persons, max(persons) AS largest FROM unify.households;
ANALYZE unify.persons;
SQL
    person_lookup_latency "$DIR" bench_persons "$SECONDS_PER_RUN"
    echo "== Splink 5 (DuckDB) end to end on the same normalized records, in the same run"
    sed "s#@DIR@#$DIR#g" benches/splink_export.sql | psql -X -q -v ON_ERROR_STOP=1 -d bench_persons
    "$PYTHON" benches/splink_compare.py "$DIR/records.csv" "$DIR/truth.csv" --cluster 2>&1 \
        | grep -v "WARNING\|untrained\|m values\|u values\|Comparison:\|^$\|predict()\|Completed iteration"
} 2>&1 | tee "$DIR/persons-result.txt"
