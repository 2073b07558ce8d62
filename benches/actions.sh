#!/usr/bin/env bash
# Benchmark: next best actions (issue 26) beside refresh_segments in the same run.
#  C generated customers (persons) with e-mail, phone, address and consent, N orders (the
#  generator of benches/segments.sh). Measured:
#   - refresh_segments, first run: its own part (unify.segment_runs.seconds) and the whole call,
#     which then computes the actions of every person whose segment changed (all of them);
#   - refresh_segments again, unchanged (no action computed: nobody's segment changed): the baseline;
#   - unify.refresh_actions() over every person with nothing changed (reads, compares, writes
#     nothing) and after a change of the map that changes most actions (writes and events);
#   - fit_predictions (BG/NBD, no holdout): the first (baseline, no churn events) and one a
#     quarter later (churn_risk_crossed events), each followed by the actions of everyone.
#
#   bash benches/actions.sh [--customers C] [--orders N]
source "$(dirname "$0")/../scripts/lib.sh"
CUSTOMERS=200000
ORDERS=2000000
while [ $# -gt 0 ]; do
    case "$1" in
        --customers) CUSTOMERS="$2"; shift 2 ;;
        --orders) ORDERS="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
EXTRA_PACKAGES=(bc)
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}"
start_cluster "$DIR" "shared_buffers = '2GB'" "jit = off" "max_wal_size = '8GB'" "work_mem = '256MB'"
trap 'stop_cluster "$DIR"' EXIT
DB=bench_actions
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/actions.sh --customers $CUSTOMERS --orders $ORDERS"
    psql -q -X -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    psql -q -X -d $DB -c "SET client_min_messages = warning" -c "CREATE EXTENSION customer_unify"
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d $DB <<SQL
SET client_min_messages = warning;
SELECT setseed(0.42);
-- As benches/segments.sh, plus contact data and consent: e-mail for half, calls for a third,
-- letters for a fifth (by customer id).
CREATE TABLE customers (customer_id int PRIMARY KEY, first_day date NOT NULL, active_days int NOT NULL,
                        email text, phone text, street text, zip text, newsletter boolean, calls boolean, letters boolean,
                        consent_at timestamptz);
INSERT INTO customers
SELECT g, date '2024-07-01' + floor(random() * 720)::int, floor(-300 * ln(1 - random()))::int,
       'c' || g || '@example.org', '+4930' || (10000000 + g), 'Hauptstraße ' || g, '10115',
       g % 2 = 0, g % 3 = 0, g % 5 = 0, timestamptz '2024-01-01 10:00+00'
FROM generate_series(1, $CUSTOMERS) g;
CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id int NOT NULL, ordered_at date NOT NULL, amount numeric(10,2) NOT NULL);
INSERT INTO orders
SELECT o.g, c.customer_id, least(c.first_day + floor(random() * (c.active_days + 1))::int, date '2026-07-01'),
       round((5 - 40 * ln(1 - random()))::numeric, 2)
FROM (SELECT g, 1 + floor($CUSTOMERS * random() ^ 2)::int AS customer_id FROM generate_series(1, $ORDERS) g) o
JOIN customers c USING (customer_id);
VACUUM ANALYZE customers, orders;
SELECT unify.add_source('shop', 'customers', 'customer_id', '{"customer_number": "customer_id", "email": "email",
    "phone": "phone", "street_line": "street", "postcode": "zip",
    "consent_email": "newsletter", "consent_email_at": "consent_at", "consent_phone": "calls", "consent_phone_at": "consent_at",
    "consent_post": "letters", "consent_post_at": "consent_at"}', track_changes => false) > 0 AS source;
\timing on
SELECT source_rows FROM unify.sync('shop');
SELECT persons, seconds FROM unify.resolve();
\timing off
SELECT unify.add_transactions('orders', 'orders', '{"source": "shop", "source_key": "customer_id", "order_date": "ordered_at", "amount": "amount"}') > 0 AS orders;
VACUUM ANALYZE unify.records, unify.persons;
SQL
    run_timed() { # sql → seconds (wall, from the client)
        local start end
        start=$(date +%s.%N)
        psql -X -q -v ON_ERROR_STOP=1 -d $DB -c "SET client_min_messages = warning" -c "$1" >/dev/null || die "failed: $1"
        end=$(date +%s.%N)
        echo "$end - $start" | bc
    }
    min() { echo "$@" | tr ' ' '\n' | sort -g | head -1; }
    persons=$(psql -X -A -t -d $DB -c "SELECT count(*) FROM unify.persons")
    seg_first=$(run_timed "SELECT unify.refresh_segments('2026-07-01')")
    seg_first_own=$(psql -X -A -t -d $DB -c "SELECT seconds FROM unify.segment_runs ORDER BY run_id DESC LIMIT 1")
    first_events=$(psql -X -A -t -d $DB -c "SELECT count(*) FROM unify.outbox WHERE kind = 'action_changed'")
    psql -X -q -d $DB -c "VACUUM ANALYZE unify.segments, unify.person_actions" >/dev/null
    seg_again1=$(run_timed "SELECT unify.refresh_segments('2026-07-01')")
    act_same1=$(run_timed "SELECT unify.refresh_actions()")
    seg_again2=$(run_timed "SELECT unify.refresh_segments('2026-07-01')")
    act_same2=$(run_timed "SELECT unify.refresh_actions()")
    events_after_same=$(psql -X -A -t -d $DB -c "SELECT count(*) FROM unify.outbox WHERE kind = 'action_changed'")
    # A map of one's own that changes most actions: everyone with e-mail consent and a segment
    # gets a newsletter, the rest nothing.
    psql -X -q -v ON_ERROR_STOP=1 -d $DB -c "INSERT INTO unify.action_map (priority, action, channel, segments) SELECT 10, 'newsletter', 'email', array_agg(DISTINCT segment) FROM unify.segment_rules" -c "INSERT INTO unify.action_map (priority, action) VALUES (20, 'none')" >/dev/null
    act_changed=$(run_timed "SELECT unify.refresh_actions()")
    changed_events=$(psql -X -A -t -d $DB -c "SELECT count(*) FROM unify.outbox WHERE kind = 'action_changed'")
    psql -X -q -d $DB -c "DELETE FROM unify.action_map" >/dev/null
    act_back=$(run_timed "SELECT unify.refresh_actions()")
    fit1=$(run_timed "SELECT unify.fit_predictions('2026-07-01', 'bgnbd', holdout_days => 0, check_ranking => false)")
    fit1_own=$(psql -X -A -t -d $DB -c "SELECT seconds FROM unify.prediction_fits ORDER BY fit_id DESC LIMIT 1")
    fit2=$(run_timed "SELECT unify.fit_predictions('2026-10-01', 'bgnbd', holdout_days => 0, check_ranking => false)")
    fit2_own=$(psql -X -A -t -d $DB -c "SELECT seconds FROM unify.prediction_fits ORDER BY fit_id DESC LIMIT 1")
    churn_events=$(psql -X -A -t -d $DB -c "SELECT string_agg(d || ' ' || n, ', ') FROM (SELECT payload ->> 'direction' AS d, count(*) AS n FROM unify.outbox WHERE kind = 'churn_risk_crossed' GROUP BY 1 ORDER BY 1) x")
    seg_base=$(min "$seg_again1" "$seg_again2")
    act_same=$(min "$act_same1" "$act_same2")
    printf 'persons: %s\n' "$persons"
    printf 'refresh_segments, first run: %.2f s in all; its own part %.2f s (segment_runs.seconds), so the actions of every person %.2f s (%s action_changed events)\n' \
        "$seg_first" "$seg_first_own" "$(echo "$seg_first - $seg_first_own" | bc -l)" "$first_events"
    printf 'refresh_segments again, unchanged (no action computed; baseline): %.2f s, %.2f s\n' "$seg_again1" "$seg_again2"
    printf 'refresh_actions(), every person, nothing changed: %.2f s, %.2f s = %.2fx the unchanged refresh_segments (events after: %s, as before)\n' \
        "$act_same1" "$act_same2" "$(echo "$act_same / $seg_base" | bc -l)" "$events_after_same"
    printf 'refresh_actions() after a map change: %.2f s (action_changed events in all now %s); back to the default: %.2f s\n' \
        "$act_changed" "$changed_events" "$act_back"
    printf 'fit_predictions, first (baseline, no churn events): %.2f s in all, %.2f s its own\n' "$fit1" "$fit1_own"
    printf 'fit_predictions a quarter later: %.2f s in all, %.2f s its own; churn_risk_crossed: %s\n' "$fit2" "$fit2_own" "$churn_events"
    psql -X -q -P pager=off -d $DB <<'SQL'
SELECT action, channel, count(*) FROM unify.person_actions GROUP BY 1, 2 ORDER BY 3 DESC;
SQL
} 2>&1 | tee "$DIR/actions-result.txt"
