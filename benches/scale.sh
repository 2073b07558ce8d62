#!/usr/bin/env bash
# Benchmark: the batch steps at growing sizes within customer_unify.batch_memory (issue 27).
# For each size: the generated German CRM (crmgen --seed 1, four sources), then sync, train,
# score_pairs and resolve, each in its own session (backend), with wall time and the backend's
# peak memory per step. The baselines in the same run, at the sizes given to --baseline-rows: train
# and score_pairs with all records held at once (customer_unify.batch_memory = 64GB, the path of
# 0.2.0); for train the model difference and the matches of score_pairs after either model (both
# trained from the shipped model), for score_pairs whether both give the same pairs.
#
# Peak memory is the backend's VmHWM (peak resident set), which also counts the pages of
# shared_buffers the backend touched; RssShmem at the end of the session is that share, so
# "private" = VmHWM - RssShmem estimates the backend's own peak. shared_buffers is 256MB here to
# keep that share small. After resolve: refresh_segments and fit_predictions over the generated
# orders. `python3 benches/scale_plot.py RESULT_FILE OUT.svg` draws time and memory against size.
#
# After score_pairs, the matches against crmgen's truth (precision, recall, F1 of the pairs).
# After resolve, a checksum of its results (persons with households, each record's person and
# former ids, the identity events) to compare runs of different builds on the same data.
#
#   bash benches/scale.sh [--rows 1000000,2000000] [--budget 1GB] [--baseline-rows 1000000,2000000]
#                         [--population cities|national]
#
# --population national generates the same people with a country's postcodes and surnames (crmgen
# --population national): with the default 42 postcodes and 127 surnames, blocks fill up as the
# rows grow and candidate pairs grow with the square of the records, which no real customer base
# does.
#
# SCALE_MAX_WAL (default 8GB) bounds the WAL kept between checkpoints, for a small disk.
# SCALE_KEEP=1 leaves the cluster (and the last size's database bench_scale) running at the end,
# to study the steps further.
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=1000000,2000000
BUDGET=1GB
BASELINE_ROWS=1000000,2000000
POPULATION=cities
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --budget) BUDGET="$2"; shift 2 ;;
        --baseline-rows) BASELINE_ROWS="$2"; shift 2 ;;
        --population) POPULATION="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/scale"
start_cluster "$DIR" "shared_buffers = '256MB'" "jit = off" "max_wal_size = '${SCALE_MAX_WAL:-8GB}'" "work_mem = '64MB'" \
    "maintenance_work_mem = '512MB'"
[ -n "${SCALE_KEEP:-}" ] || trap 'stop_cluster "$DIR"' EXIT

# One step in its own session: its seconds and the backend's memory, as one line.
step() {
    local rows="$1" name="$2" budget="$3" sql="$4"
    psql -X -q -A -t -v ON_ERROR_STOP=1 -d bench_scale <<SQL
SET client_min_messages = warning;
SET customer_unify.batch_memory = '$budget';
SELECT clock_timestamp() AS started \gset
$sql
SELECT format('%-9s %-22s %-8s %9s s  peak %6s MB  private %6s MB', $rows, '$name', '$budget',
              round(extract(epoch FROM clock_timestamp() - :'started'::timestamptz)::numeric, 1),
              substring(s from 'VmHWM:\s*(\d+) kB')::bigint / 1024,
              (substring(s from 'VmHWM:\s*(\d+) kB')::bigint - substring(s from 'RssShmem:\s*(\d+) kB')::bigint) / 1024)
FROM pg_read_file('/proc/self/status') s;
SQL
}

{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/scale.sh --rows $ROWS --budget $BUDGET --baseline-rows $BASELINE_ROWS --population $POPULATION"
    echo "load: $(cat /proc/loadavg)"
    printf '%-9s %-22s %-8s %11s  %12s  %15s\n' rows step budget time peak "private (peak - shared buffers)"
    for rows in ${ROWS//,/ }; do
        psql -q -X -d postgres -c "DROP DATABASE IF EXISTS bench_scale" -c "CREATE DATABASE bench_scale"
        crmgen --rows "$rows" --seed 1 --population "$POPULATION" | psql -q -X -v ON_ERROR_STOP=1 -d bench_scale >/dev/null
        psql -X -q -v ON_ERROR_STOP=1 -d bench_scale >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
SQL
        # SCALE_MAX_PAIRS=N raises the model's guard max_candidate_pairs (default 50M): at 5M
        # records of this generator one blocking rule alone passes it and train stops (54000).
        if [ -n "${SCALE_MAX_PAIRS:-}" ]; then
            psql -X -q -v ON_ERROR_STOP=1 -d bench_scale -c "SELECT unify.set_model(jsonb_set(unify.get_model(), '{max_candidate_pairs}', to_jsonb(${SCALE_MAX_PAIRS}::bigint)))" >/dev/null
        fi
        step "$rows" sync "$BUDGET" "SELECT sum(source_rows) FROM unify.sync() \g /dev/null"
        if [[ ",$BASELINE_ROWS," == *",$rows,"* ]]; then
            # Train with all records held (the path of 0.2.0), score within the budget, then train
            # within the budget from the same starting model: the model difference and the
            # matches of score_pairs after each.
            psql -X -q -A -t -d bench_scale -c "CREATE TABLE start_model AS SELECT unify.get_model() AS model" >/dev/null
            step "$rows" "train (held)" 64GB "SELECT count(*) FROM unify.train() \g /dev/null"
            psql -X -q -A -t -d bench_scale >/dev/null <<SQL
SET client_min_messages = warning;
SET customer_unify.batch_memory = '$BUDGET';
CREATE TABLE held_model AS SELECT version FROM unify.model ORDER BY version DESC LIMIT 1;
SELECT * FROM unify.score_pairs() \g /dev/null
CREATE TABLE held_model_pairs AS SELECT record_a, record_b, is_match FROM unify.pairs;
SELECT unify.set_model((SELECT model FROM start_model));
SQL
        fi
        step "$rows" train "$BUDGET" "SELECT count(*) FROM unify.train() \g /dev/null"
        psql -X -A -t -d bench_scale -c "SELECT '          train: streamed ' || (report ->> 'streamed') || ', candidate pairs ' || (report ->> 'candidate_pairs')
               || ', EM sample ' || (report ->> 'em_sample_pairs') || ', u sample pairs ' || (report ->> 'u_sample_pairs')
               || ', expected matches ' || round((report ->> 'expected_matches')::numeric)
            FROM unify.model WHERE version = (SELECT max(version) FROM unify.model)"
        if [[ ",$BASELINE_ROWS," == *",$rows,"* ]]; then
            psql -X -A -t -d bench_scale -c "SELECT '          train (held): candidate pairs ' || (report ->> 'candidate_pairs')
               || ', EM sample ' || (report ->> 'em_sample_pairs') || ', expected matches ' || round((report ->> 'expected_matches')::numeric)
            FROM unify.model WHERE version = (SELECT version FROM held_model)"
            psql -X -A -t -d bench_scale -c "WITH t AS (
                SELECT h.model AS held, s.model AS streamed FROM unify.model h, unify.model s
                WHERE h.version = (SELECT version FROM held_model) AND s.version = (SELECT max(version) FROM unify.model))
              SELECT '          model within budget vs held: prior ' || round(((streamed ->> 'prior')::float8 / (held ->> 'prior')::float8)::numeric, 4)
                     || 'x, largest m difference ' || round(max(abs((hl ->> 'm')::float8 - (sl ->> 'm')::float8))::numeric, 4)
                     || ', largest u ratio ' || round(max(greatest((hl ->> 'u')::float8 / (sl ->> 'u')::float8, (sl ->> 'u')::float8 / (hl ->> 'u')::float8))::numeric, 3)
              FROM t, jsonb_array_elements(held -> 'comparisons') WITH ORDINALITY hc (c, i)
                   JOIN jsonb_array_elements(streamed -> 'comparisons') WITH ORDINALITY sc (c, i) USING (i),
                   jsonb_array_elements(hc.c -> 'levels') WITH ORDINALITY hl0 (hl, j)
                   JOIN jsonb_array_elements(sc.c -> 'levels') WITH ORDINALITY sl0 (sl, j) USING (j)
              GROUP BY held, streamed"
        fi
        if [[ ",$BASELINE_ROWS," == *",$rows,"* ]]; then
            step "$rows" "score_pairs (held)" 64GB "SELECT * FROM unify.score_pairs() \g /dev/null"
            psql -X -q -A -t -d bench_scale -c "CREATE TABLE held_pairs AS SELECT record_a, record_b, is_match, match_weight FROM unify.pairs" >/dev/null
        fi
        step "$rows" "score_pairs" "$BUDGET" "SELECT * FROM unify.score_pairs() \g /dev/null"
        if [[ ",$BASELINE_ROWS," == *",$rows,"* ]]; then
            psql -X -A -t -d bench_scale -c "SELECT '          matches after the held model ' || (SELECT count(*) FILTER (WHERE is_match) FROM held_model_pairs)
                || ', after the model trained within the budget ' || (SELECT count(*) FILTER (WHERE is_match) FROM unify.pairs)
                || '; matches of one only: ' || (SELECT count(*) FROM (
                    (SELECT record_a, record_b FROM held_model_pairs WHERE is_match EXCEPT SELECT record_a, record_b FROM unify.pairs WHERE is_match)
                    UNION ALL (SELECT record_a, record_b FROM unify.pairs WHERE is_match EXCEPT SELECT record_a, record_b FROM held_model_pairs WHERE is_match)) d)"
        fi
        psql -X -A -t -d bench_scale -c "SELECT '          candidate pairs ' || sum(new_pairs) || ', stored pairs ' || (SELECT count(*) FROM unify.pairs) FROM unify.blocking_stats"
        # The matches against crmgen's truth (pairs of records of one true person), so that a
        # change of the blocking rules shows what it costs at each size.
        psql -X -q -A -t -d bench_scale <<'SQL'
SET work_mem = '256MB';
\i benches/truth_pairs.sql
SELECT format('          matches against the truth: true %s, false %s, missed %s; precision %s, recall %s, F1 %s',
              tp, fp, fn, "precision", recall, f1)
FROM pg_temp.against_truth('predicted');
SQL
        if [[ ",$BASELINE_ROWS," == *",$rows,"* ]]; then
            psql -X -A -t -d bench_scale -c "SELECT '          pairs differing from the held run: ' || count(*) FROM (
                (SELECT record_a, record_b, is_match, match_weight FROM held_pairs EXCEPT SELECT record_a, record_b, is_match, match_weight FROM unify.pairs)
                UNION ALL (SELECT record_a, record_b, is_match, match_weight FROM unify.pairs EXCEPT SELECT * FROM held_pairs)) d"
        fi
        step "$rows" resolve "$BUDGET" "SELECT * FROM unify.resolve() \g /dev/null"
        psql -X -A -t -d bench_scale -c "SELECT '          persons ' || (SELECT count(*) FROM unify.persons)
            || ', households ' || (SELECT count(DISTINCT household_id) FROM unify.persons)
            || ', checksum ' || left(md5((SELECT string_agg(md5(p::text), '' ORDER BY person_id)
                   FROM (SELECT person_id, household_id, first_name, last_name, email, phone, mobile, street,
                                house_number, postcode, city, country, birth_date, company, customer_number,
                                consent_email, consent_email_source, consent_email_at, consent_phone,
                                consent_phone_source, consent_phone_at, consent_post, consent_post_source,
                                consent_post_at, record_count, sources, first_seen, last_seen, salutation, title,
                                first_name_display, last_name_display, street_display, city_display,
                                phone_display, mobile_display, email_display FROM unify.persons) p)
                || (SELECT string_agg(md5(record_id || ':' || coalesce(person_id, 0) || ':' || coalesce(former_person_ids::text, '')), '' ORDER BY record_id) FROM unify.records LEFT JOIN unify.record_persons USING (record_id))
                || (SELECT coalesce(string_agg(md5(event || person_id || related_ids::text || coalesce(details::text, '')), '' ORDER BY event_id), '') FROM unify.identity_events)), 12)"
        # The persons' orders (one row per order), RFM and the fits: set-based SQL whose sorts
        # and hashes PostgreSQL keeps within work_mem; the fits take one array element per
        # distinct customer summary.
        psql -X -q -v ON_ERROR_STOP=1 -d bench_scale >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT unify.add_transactions('orders', 'orders', '{"source": "channel", "source_key": "customer_ref",
  "order_id": "order_id", "order_date": "ordered_at", "amount": "amount", "currency": "currency",
  "returned": "status IN (''returned'', ''cancelled'')"}');
SQL
        step "$rows" refresh_segments "$BUDGET" "SELECT unify.refresh_segments((SELECT max(ordered_at) FROM orders) + 1) \g /dev/null"
        # SCALE_FIT=0 leaves the fits out. They fit on at most 100,000 distinct customer
        # summaries (unify._fit_summaries: whole days, else a grid of 7, 14, … days).
        [ "${SCALE_FIT:-1}" = 0 ] || step "$rows" fit_predictions "$BUDGET" "SELECT unify.fit_predictions((SELECT max(ordered_at) FROM orders) + 1) \g /dev/null"
        psql -X -A -t -d bench_scale -c "SELECT '          persons ' || (SELECT count(*) FROM unify.persons) || ', orders ' || (SELECT count(*) FROM orders) || ', database ' || pg_size_pretty(pg_database_size(current_database()))"
    done
    echo "load: $(cat /proc/loadavg)"
} 2>&1 | tee "$DIR/scale-result.txt"
