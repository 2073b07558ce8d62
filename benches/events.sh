#!/usr/bin/env bash
# Benchmark: behavioural events at size. A generated CRM (crmgen --seed 3) is synced and
# resolved (no matching: every record its own person, which is the most persons for the rows);
# then E tracking events are written to a web table in place (views, cart additions, purchases,
# logins on cookies), registered with add_events and captured. Timed: the first read of the
# table, a queue batch of 1,000 new events (process_events), a resolve that changes nothing,
# one person's row of unify.customer_360 with its behaviour columns (pgbench, one connection)
# beside the same lookup of unify.persons by primary key in the same run, and the whole view.
#
#   bash benches/events.sh [--rows N] [--events E] [--seconds S]
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=100000
EVENTS=1000000
SECONDS_PER_RUN=10
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --events) EVENTS="$2"; shift 2 ;;
        --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/events"
mkdir -p "$DIR"; chown postgres: "$DIR"
start_cluster "$DIR" "shared_buffers = '2GB'" "jit = off" "max_wal_size = '8GB'" "work_mem = '256MB'"
trap 'stop_cluster "$DIR"' EXIT
DB=bench_events
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F); load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "command: bash benches/events.sh --rows $ROWS --events $EVENTS --seconds $SECONDS_PER_RUN"
    psql -q -X -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    crmgen --rows "$ROWS" --seed 3 | psql -q -X -v ON_ERROR_STOP=1 -d "$DB" >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -v events="$EVENTS" -d "$DB" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
SELECT count(*) AS synced FROM unify.sync();
SELECT persons FROM unify.resolve();
-- A shop's tracking: a visitor (cookie) per 5 events on average, a third of the visitors log in
-- with an e-mail of the records, the rest stay anonymous; a tenth of the events are cart lines.
CREATE TABLE web (id bigint PRIMARY KEY, kind text, at timestamptz, sku text, price numeric, session text,
                  cookie text, login_email text);
CREATE TEMP TABLE mails AS SELECT row_number() OVER (ORDER BY record_id) AS n, email FROM unify.records WHERE email IS NOT NULL;
ALTER TABLE mails ADD PRIMARY KEY (n);
ANALYZE mails;
SELECT count(*) AS mails FROM mails \gset
INSERT INTO web
SELECT g, k.kind, now() - (g % 200000) * interval '1 minute', 'KF-' || (100 + (g % 7) * 10), 9.9, 's' || (g / 3),
       'c-' || (g / 5), CASE WHEN k.kind = 'login' THEN (SELECT m.email FROM mails m WHERE m.n = 1 + (g / 5) % :mails) END
FROM generate_series(1, :events) g
CROSS JOIN LATERAL (SELECT CASE WHEN g % 5 = 0 AND (g / 5) % 3 = 0 THEN 'login' WHEN g % 10 = 1 THEN 'add_to_cart'
                                WHEN g % 50 = 2 THEN 'purchase' ELSE 'product_view' END AS kind) k;
\timing on
\echo resolve changing nothing, before any event:
SELECT golden_changed FROM unify.resolve();
\echo first read of the events table (add_events):
SELECT unify.add_events('web', 'web', '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "product_id": "sku",
  "value": "price", "session_id": "session", "anonymous_id": "cookie", "email": "login_email"}') AS event_source;
\timing off
ANALYZE;
SELECT count(*) AS events, count(person_id) AS with_person, count(*) FILTER (WHERE stitched) AS stitched FROM unify.events;
\timing on
\echo a batch of 1,000 new events through the queue (process_events):
INSERT INTO web SELECT :events + g, 'product_view', now(), 'KF-100', NULL, 'x' || g, 'c-' || (g * 37 % (:events / 5)), NULL
FROM generate_series(1, 1000) g;
SELECT unify.process_events() AS written;
\echo resolve changing nothing, with the events (the person of every event checked):
SELECT golden_changed FROM unify.resolve();
\echo the last visit of one person, worked out from the records on every read (before the stored person_id):
SELECT max(r.occurred_at) IS NOT NULL AS found FROM (SELECT e.occurred_at FROM unify.events e JOIN unify._event_person_rule p USING (event_source_id, event_key)
    WHERE p.person_id = (SELECT min(person_id) FROM unify.events)) r;
\echo the same with the stored person:
SELECT max(e.occurred_at) IS NOT NULL AS found FROM unify.events e WHERE e.person_id = (SELECT min(person_id) FROM unify.events);
\echo the whole customer_360 with behaviour columns:
SELECT count(*), count(last_visit_at), count(cart_items) FROM (SELECT * FROM unify.customer_360) c;
\timing off
CREATE TABLE probes AS SELECT row_number() OVER () AS n, person_id FROM
    (SELECT DISTINCT person_id FROM unify.events WHERE person_id IS NOT NULL ORDER BY 1 LIMIT 2000) p;
SQL
    cat > "$DIR/c360.sql" <<'SQL'
\set n random(1, 2000)
SELECT c.* FROM unify.customer_360 c WHERE c.person_id = (SELECT person_id FROM probes WHERE n = :n);
SQL
    cat > "$DIR/pk.sql" <<'SQL'
\set n random(1, 2000)
SELECT p.* FROM unify.persons p WHERE p.person_id = (SELECT person_id FROM probes WHERE n = :n);
SQL
    chown postgres: "$DIR"/*.sql
    for kind in pk c360; do
        out=$("$PG_BIN/pgbench" -n -c 1 -T "$SECONDS_PER_RUN" -r -f "$DIR/$kind.sql" "$DB" 2>&1)
        printf '%-5s %s\n' "$kind" "$(echo "$out" | grep -E 'latency average|^tps' | tr -s ' ' | tr '\n' ' ')"
    done
} 2>&1 | tee "$DIR/events.txt"
