#!/usr/bin/env bash
# Benchmark and quality figures of matching: Febrl3 (true links known) and the generated German
# CRM at --rows records: sync, train (u sampling + EM), block + score; wall time per step, the
# backend's peak memory, pairs/s, and precision / recall / F1 by difficulty (benches/matching_quality.sql).
#
#   bash benches/matching.sh [--rows N]
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=100000
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
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
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/matching.sh --rows $ROWS"
    for db in bench_febrl bench_matching; do
        psql -q -X -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    done
    echo "== Febrl3 (5000 records, 6538 true pairs), trained without labels"
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d bench_febrl <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
CREATE TABLE people (rec_id text PRIMARY KEY, given_name text, surname text, street_number text, address_1 text,
    address_2 text, suburb text, postcode text, state text, date_of_birth text, soc_sec_id text);
\copy people FROM 'tests/data/febrl3.csv' WITH (FORMAT csv, HEADER true)
SELECT unify.add_source('febrl', 'people', 'rec_id', '{"first_name": "given_name", "last_name": "surname",
    "house_number": "street_number", "street": "address_1", "city": "suburb", "postcode": "postcode",
    "country": "''AU''", "birth_date": "date_of_birth", "external_id": "soc_sec_id"}', track_changes => false) \gset
SELECT count(*) FROM unify.sync() \gset
\timing on
SELECT count(*) AS em_sessions, bool_and(converged) AS converged FROM unify.train();
SELECT * FROM unify.score_pairs();
\timing off
WITH truth AS (SELECT a.record_id AS record_a, b.record_id AS record_b FROM unify.records a JOIN unify.records b
               ON split_part(a.source_key, '-', 2) = split_part(b.source_key, '-', 2) AND a.record_id < b.record_id),
c AS (SELECT count(*) FILTER (WHERE t.record_a IS NOT NULL AND p.record_a IS NOT NULL) AS tp,
             count(*) FILTER (WHERE t.record_a IS NULL) AS fp, count(*) FILTER (WHERE p.record_a IS NULL) AS fn
      FROM (SELECT record_a, record_b FROM unify.pairs WHERE is_match) p FULL JOIN truth t USING (record_a, record_b))
SELECT tp, fp, fn, round(tp::numeric / (tp + fp), 5) AS precision, round(tp::numeric / (tp + fn), 5) AS recall,
       round(2.0 * tp / (2 * tp + fp + fn), 5) AS f1 FROM c;
SQL
    echo "== generated German CRM, $ROWS source rows (crmgen --seed 1)"
    crmgen --rows "$ROWS" --seed 1 | psql -q -X -v ON_ERROR_STOP=1 -d bench_matching >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d bench_matching <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
\timing on
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT session, pairs, iterations, converged, round(match_share::numeric, 4) AS match_share FROM unify.train();
\echo peak memory of the backend after train:
SELECT substring(pg_read_file('/proc/self/status') from 'VmHWM:\s*(\d+ kB)') AS backend_peak_rss;
SELECT * FROM unify.score_pairs();
\timing off
\echo peak memory of the backend after score_pairs:
SELECT substring(pg_read_file('/proc/self/status') from 'VmHWM:\s*(\d+ kB)') AS backend_peak_rss;
SELECT candidate_pairs, seconds, round(candidate_pairs / seconds) AS candidate_pairs_per_s FROM unify.score_pairs();
SELECT rule, pairs, new_pairs, skipped_blocks, largest_skipped_block FROM unify.blocking_stats ORDER BY rule;
SELECT (unify.get_model() ->> 'prior')::float8 AS prior, unify.get_model() -> 'household_share' AS household_share,
       unify.get_model() -> 'namesake_share' AS namesake_share, unify.get_model() -> 'similar_name_share' AS similar_name_share;
\timing on
SELECT persons, records, seconds FROM unify.resolve();
\timing off
\i benches/matching_quality.sql
SQL
    echo "== Splink 5 (DuckDB) on the same normalized records, equivalent blocking, in the same run"
    sed "s#@DIR@#$DIR#g" benches/splink_export.sql | psql -X -q -v ON_ERROR_STOP=1 -d bench_matching
    if [ ! -x "$DIR/splink-venv/bin/python" ]; then
        python3 -m venv "$DIR/splink-venv"
        "$DIR/splink-venv/bin/pip" install -q "splink==5.0.0" pandas
    fi
    "$DIR/splink-venv/bin/python" benches/splink_compare.py "$DIR/records.csv" "$DIR/truth.csv" --pairs-out "$DIR/splink_pairs.csv" 2>&1 | grep -v "WARNING\|untrained\|m values\|u values\|Comparison:\|^$\|predict()"
    echo "== the true pairs Splink missed: how many customer_unify found (and the reverse)"
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d bench_matching <<SQL
CREATE TEMP TABLE splink_pairs (record_a bigint, record_b bigint);
\\copy splink_pairs FROM '$DIR/splink_pairs.csv' WITH (FORMAT csv, HEADER true)
CREATE TEMP TABLE rec_truth AS
SELECT r.record_id, t.person_id FROM unify.records r JOIN unify.sources s USING (source_id)
JOIN truth t ON t.source = s.name AND t.source_key = r.source_key;
CREATE TEMP TABLE true_pairs AS
SELECT a.record_id AS record_a, b.record_id AS record_b FROM rec_truth a JOIN rec_truth b
  ON a.person_id = b.person_id AND a.record_id < b.record_id;
CREATE TEMP TABLE ours AS SELECT record_a, record_b FROM unify.pairs WHERE is_match;
ANALYZE splink_pairs, true_pairs, ours;
SELECT count(*) AS splink_missed,
       count(o.record_a) AS of_those_we_found,
       round(count(o.record_a)::numeric / nullif(count(*), 0), 4) AS share_found
FROM true_pairs t LEFT JOIN splink_pairs sp USING (record_a, record_b) LEFT JOIN ours o USING (record_a, record_b)
WHERE sp.record_a IS NULL;
SELECT count(*) AS we_missed,
       count(sp.record_a) AS of_those_splink_found,
       round(count(sp.record_a)::numeric / nullif(count(*), 0), 4) AS share_found
FROM true_pairs t LEFT JOIN ours o USING (record_a, record_b) LEFT JOIN splink_pairs sp USING (record_a, record_b)
WHERE o.record_a IS NULL;
SQL
} 2>&1 | tee "$DIR/matching-result.txt"
