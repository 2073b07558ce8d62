#!/usr/bin/env bash
# Benchmark: next best product on the real UCI Online Retail data (../shared/data/online_retail).
# Each repeat customer's last invoice is hidden; 10 products are recommended from the history
# before it; hit rate@10 and recall@10 for unify.recommendations (computed in the database
# through add_transactions and refresh_recommendations, timed) beside a popularity baseline and
# the `implicit` library (ALS, item-kNN cosine and BM25) on the same split in the same run.
# Parameters (ours and theirs) are tuned on a validation split (one invoice earlier), never on
# the test split. The splits and the scoring: benches/recommendations_eval.py.
#
#   bash benches/recommendations.sh
source "$(dirname "$0")/../scripts/lib.sh"
EXTRA_PACKAGES=(python3-venv python3-pip)
ensure_deps
cd "$ROOT"
DATA="$ROOT/../shared/data/online_retail/online_retail.csv.gz"
[ -f "$DATA" ] || die "no $DATA"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}"
start_cluster "$DIR" "shared_buffers = '1GB'" "jit = off" "work_mem = '256MB'"
trap 'stop_cluster "$DIR"' EXIT
if [ ! -x "$DIR/implicit-venv/bin/python" ]; then
    log "installing implicit 0.7.3 in $DIR/implicit-venv"
    python3 -m venv "$DIR/implicit-venv"
    "$DIR/implicit-venv/bin/pip" install -q "implicit==0.7.3"
fi
PY="$DIR/implicit-venv/bin/python"
OUT="$DIR/recommendations"
rm -rf "$OUT"; mkdir -p "$OUT"; chown postgres: "$OUT"
DB=bench_recommendations
now() { date +%s.%N; }
# Our parameter grid on the validation split: one parameter at a time around the defaults.
GRID=(
    "defaults|"
    "neighbours_25|neighbours => 25"
    "neighbours_100|neighbours => 100"
    "half_life_none|half_life => NULL"
    "half_life_15d|half_life => interval '15 days'"
    "half_life_60d|half_life => interval '60 days'"
    "model_half_life_none|model_half_life => NULL"
    "model_half_life_90d|model_half_life => interval '90 days'"
    "model_half_life_365d|model_half_life => interval '365 days'"
    "trending_weight_0|trending_weight => 0"
    "trending_weight_0.25|trending_weight => 0.25"
    "trending_weight_1|trending_weight => 1"
    "damping_0|damping => 0"
    "damping_1|damping => 1"
)
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/recommendations.sh"
    "$PY" benches/recommendations_eval.py prep "$OUT" "$DATA"
    psql -q -X -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    psql -q -X -v ON_ERROR_STOP=1 -d $DB <<SQL >/dev/null
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
CREATE SCHEMA retail;
CREATE TABLE retail.lines (customer_id text NOT NULL, invoice text NOT NULL, invoice_date timestamp NOT NULL, stock_code text NOT NULL,
                           description text, quantity int NOT NULL, unit_price numeric NOT NULL);
CREATE TABLE retail.truth (customer_id text NOT NULL, product_id text NOT NULL);
\copy retail.lines FROM '$OUT/test_lines.csv' WITH (FORMAT csv, HEADER true)
CREATE TABLE retail.customers AS SELECT DISTINCT customer_id FROM retail.lines;
ALTER TABLE retail.customers ADD PRIMARY KEY (customer_id);
SELECT unify.add_source('retail', 'retail.customers', 'customer_id', '{"customer_number": "customer_id"}');
SELECT unify.sync('retail');
SELECT unify.resolve();
SQL
    for split in val test; do
        psql -q -X -v ON_ERROR_STOP=1 -d $DB <<SQL >/dev/null
SET client_min_messages = warning;
SELECT unify.remove_transactions(name) FROM unify.transaction_sources;
TRUNCATE retail.lines, retail.truth;
\copy retail.lines FROM '$OUT/${split}_lines.csv' WITH (FORMAT csv, HEADER true)
\copy retail.truth FROM '$OUT/${split}_truth.csv' WITH (FORMAT csv, HEADER true)
ANALYZE retail.lines;
SQL
        as_of=$(psql -X -A -t -d $DB -c "SELECT max(invoice_date)::date FROM retail.lines")
        if [ $split = val ]; then
            runs=("${GRID[@]}")
        else
            best=$("$PY" benches/recommendations_eval.py best "$OUT" "$OUT/ours_val_*.csv")
            runs=()
            for g in "${GRID[@]}"; do [ "${g%%|*}" = "$best" ] && runs=("$g"); done
        fi
        for run in "${runs[@]}"; do
            label=${run%%|*}; args=${run#*|}
            t0=$(now)
            # What a DBA does: register the line items, refresh the model, recommend to everyone.
            psql -q -X -v ON_ERROR_STOP=1 -d $DB <<SQL >/dev/null
SET client_min_messages = warning;
SELECT unify.remove_transactions(name) FROM unify.transaction_sources;
SELECT unify.add_transactions('retail_lines', 'retail.lines',
    '{"source": "retail", "source_key": "customer_id", "order_date": "invoice_date::date", "order_id": "invoice",
      "amount": "quantity * unit_price", "product_id": "stock_code", "product_name": "description", "quantity": "quantity"}');
SELECT unify.refresh_recommendations('$as_of'${args:+, $args});
SQL
            t1=$(now)
            # Validation: only the customers scored; test: every person, timed.
            if [ $split = val ]; then who="(SELECT DISTINCT rp.person_id FROM retail.truth t JOIN unify.records rec ON rec.source_key = t.customer_id JOIN unify.record_persons rp USING (record_id))"
            else who="unify.persons"; fi
            psql -q -X -v ON_ERROR_STOP=1 -d $DB <<SQL >/dev/null
CREATE TABLE retail.recs AS
SELECT p.person_id, r.rank, r.product_id FROM $who p CROSS JOIN LATERAL unify.recommendations(p.person_id, 10) r;
SQL
            t2=$(now)
            persons=$(psql -X -A -t -d $DB -c "SELECT count(DISTINCT person_id) FROM retail.recs")
            psql -q -X -v ON_ERROR_STOP=1 -d $DB <<SQL >/dev/null
\copy (SELECT rec.source_key AS customer_id, r.rank, r.product_id FROM retail.recs r JOIN unify.record_persons USING (person_id) JOIN unify.records rec USING (record_id) WHERE rec.source_key IN (SELECT customer_id FROM retail.truth) ORDER BY 1, 2) TO '$OUT/ours_${split}_${label}.csv' WITH (FORMAT csv, HEADER true)
DROP TABLE retail.recs;
SQL
            printf '%s %-22s refresh_recommendations %5.1f s, recommendations for %s persons %5.1f s, total %5.1f s\n' \
                "$split" "$label" "$(echo "$t1 - $t0" | bc)" "$persons" "$(echo "$t2 - $t1" | bc)" "$(echo "$t2 - $t0" | bc)"
        done
    done
    psql -X -A -t -d $DB -c "SELECT 'last run: ' || jsonb_build_object('as_of', as_of, 'params', params, 'line_items', line_items, 'persons', persons, 'products', products, 'purchases', purchases, 'neighbours', neighbours, 'seconds', seconds)::text FROM unify.recommendation_runs ORDER BY run_id DESC LIMIT 1"
    echo
    OPENBLAS_NUM_THREADS=1 "$PY" benches/recommendations_eval.py evaluate "$OUT" "$OUT/ours_val_*.csv" "$(ls "$OUT"/ours_test_*.csv)"
} 2>&1 | tee "$DIR/recommendations.txt"
