#!/usr/bin/env bash
# Benchmark: the holdout check and model choice of unify.fit_predictions (issue 26) on CDNOW (the
# papers' 2,357-customer sample: calibration 39 weeks to 1997-09-30, holdout 39 weeks) and on
# Online Retail (4,372 customers, 2010-12-01 .. 2011-12-09; cancellation invoices are returns),
# against lifetimes 0.11 on the same split in the same run: predicted vs actual holdout purchases
# per repeat-purchase bucket and in total, the chosen model, the ranking check, the return rate.
#
#   bash benches/predictions.sh
source "$(dirname "$0")/../scripts/lib.sh"
EXTRA_PACKAGES=(python3-venv python3-pip)
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/predictions"
start_cluster "$DIR" "jit = off"
trap 'stop_cluster "$DIR"' EXIT
VENV="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/lifetimes-venv"
if [ ! -x "$VENV/bin/python" ]; then
    log "installing lifetimes 0.11 (numpy 1.26, pandas 1.5) in $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "numpy==1.26.4" "pandas==1.5.3" "scipy<1.12" "lifetimes==0.11.3"
fi
DB=bench_predictions
RETAIL="$ROOT/../shared/data/online_retail/online_retail.csv.gz"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
echo "command: bash benches/predictions.sh"
psql -q -X -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql -q -X -d $DB -c "SET client_min_messages = warning" -c "CREATE EXTENSION customer_unify"

# What one fit_predictions call reports: per model the calibration fit's holdout figures and,
# where fitted on all data, the ranking check; then the chosen model and the return-rate fit.
report() {
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d $DB <<'SQL'
SELECT f.fit_id, f.model_requested AS requested, f.model AS chosen, f.published, f.seconds, f.status,
       f.validation ->> 'split' AS split, f.holdout_days, f.validation ->> 'customers' AS calibration_customers
FROM unify.prediction_fits f ORDER BY fit_id DESC LIMIT 1;
SELECT m AS model, round((v -> m ->> 'error')::numeric, 4) AS holdout_error,
       round((v -> m ->> 'predicted')::numeric, 1) AS predicted, v -> m ->> 'actual' AS actual,
       v -> m -> 'params' AS calibration_params,
       v -> m -> 'all_data' ->> 'alive_recent_frequent' AS alive_recent_frequent,
       v -> m -> 'all_data' ->> 'alive_lapsed' AS alive_lapsed, v -> m -> 'all_data' ->> 'ranking_ok' AS ranking_ok
FROM (SELECT validation AS v FROM unify.prediction_fits ORDER BY fit_id DESC LIMIT 1) x, unnest(ARRAY['bgnbd', 'pareto_nbd']) m
WHERE v ? m;
SELECT m AS model, string_agg(format('%s: %s %s %s', b ->> 'repeat_purchases', b ->> 'customers', round((b ->> 'predicted')::numeric, 3),
                                     round((b ->> 'actual')::numeric, 3)), '; ') AS "bucket customers predicted/customer actual/customer"
FROM (SELECT validation AS v FROM unify.prediction_fits ORDER BY fit_id DESC LIMIT 1) x, unnest(ARRAY['bgnbd', 'pareto_nbd']) m,
     jsonb_array_elements(v -> m -> 'buckets') b
WHERE v ? m GROUP BY m ORDER BY m;
SELECT return_persons, return_params, return_status FROM unify.prediction_fits ORDER BY fit_id DESC LIMIT 1;
SQL
}

echo
echo "== CDNOW sample: fit_predictions('1998-06-30', holdout_days => 273), the papers' split =="
psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d $DB <<SQL >/dev/null
SET client_min_messages = warning;
CREATE SCHEMA cdnow;
CREATE TABLE cdnow.purchases (purchase_id serial PRIMARY KEY, customer_id int NOT NULL, order_date date NOT NULL, cds int, amount numeric(10,2) NOT NULL);
\copy cdnow.purchases (customer_id, order_date, cds, amount) FROM '$ROOT/tests/data/cdnow_sample.csv' WITH (FORMAT csv, HEADER true)
CREATE TABLE cdnow.customers AS SELECT DISTINCT customer_id FROM cdnow.purchases;
ALTER TABLE cdnow.customers ADD PRIMARY KEY (customer_id);
SELECT unify.add_source('cdnow', 'cdnow.customers', 'customer_id', '{"customer_number": "customer_id"}');
SELECT unify.sync('cdnow');
SELECT unify.resolve();
SELECT unify.add_transactions('cdnow', 'cdnow.purchases', '{"source": "cdnow", "source_key": "customer_id", "order_date": "order_date", "amount": "amount"}');
SELECT unify.fit_predictions('1998-06-30', holdout_days => 273);
\copy (SELECT customer_id, order_date, amount FROM cdnow.purchases) TO '$DIR/cdnow_tx.csv' WITH (FORMAT csv, HEADER true)
SQL
report
echo "-- each model on its own (model => ..., the same split):"
psql -X -q -A -t -d $DB -c "SELECT format('%s: published %s; %s', m, f ->> 'published', f ->> 'status') FROM unnest(ARRAY['bgnbd', 'pareto_nbd']) m, LATERAL unify.fit_predictions('1998-06-30', m, holdout_days => 273) f"
"$VENV/bin/python" benches/predictions_holdout.py "$DIR/cdnow_tx.csv" 1997-09-30 1998-06-30

if [ -f "$RETAIL" ]; then
    echo
    echo "== Online Retail: fit_predictions('2011-12-09'), the default holdout (half the history, at most a year) =="
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d $DB <<SQL >/dev/null
SET client_min_messages = warning;
SELECT unify.remove_transactions('cdnow');
SELECT unify.remove_source('cdnow');
DELETE FROM unify.predictions; DELETE FROM unify.persons;
CREATE SCHEMA retail;
CREATE TABLE retail.lines (invoice text, stock_code text, description text, quantity int, invoice_date timestamp,
                           unit_price numeric, customer_id int, country text);
\copy retail.lines FROM PROGRAM 'gzip -dc $RETAIL' WITH (FORMAT csv, HEADER true)
CREATE TABLE retail.customers AS SELECT DISTINCT customer_id FROM retail.lines WHERE customer_id IS NOT NULL;
ALTER TABLE retail.customers ADD PRIMARY KEY (customer_id);
SELECT unify.add_source('retail', 'retail.customers', 'customer_id', '{"customer_number": "customer_id"}');
SELECT unify.sync('retail');
SELECT unify.resolve();
SELECT unify.add_transactions('retail', 'retail.lines', '{"source": "retail", "source_key": "customer_id", "order_id": "invoice",
  "order_date": "invoice_date::date", "amount": "quantity * unit_price", "returned": "invoice LIKE ''C%''"}');
SELECT unify.fit_predictions('2011-12-09');
\copy (SELECT customer_id, min(invoice_date)::date AS order_date, sum(quantity * unit_price) AS amount FROM retail.lines WHERE customer_id IS NOT NULL AND invoice NOT LIKE 'C%' GROUP BY customer_id, invoice) TO '$DIR/retail_tx.csv' WITH (FORMAT csv, HEADER true)
SQL
    report
    echo "-- each model on its own (model => ..., the same split):"
    psql -X -q -A -t -d $DB -c "SELECT format('%s: published %s; %s', m, f ->> 'published', f ->> 'status') FROM unnest(ARRAY['bgnbd', 'pareto_nbd']) m, LATERAL unify.fit_predictions('2011-12-09', m) f"
    psql -X -q -P pager=off -d $DB -c "SELECT orders, returns, count(*) AS persons, round(avg(return_probability)::numeric, 3) AS mean_return_probability, round(avg(returns::numeric / orders), 3) AS raw_share FROM unify.predictions WHERE orders IN (2, 10) AND returns IN (0, 1, 5) GROUP BY 1, 2 ORDER BY 1, 2"
    SPLIT=$(psql -X -A -t -d $DB -c "SELECT validation ->> 'split' FROM unify.prediction_fits WHERE model_requested = 'auto' ORDER BY fit_id DESC LIMIT 1")
    "$VENV/bin/python" benches/predictions_holdout.py "$DIR/retail_tx.csv" "$SPLIT" 2011-12-09
else
    echo "no $RETAIL: Online Retail skipped"
fi
