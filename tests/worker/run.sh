#!/usr/bin/env bash
# The background worker, client-driven on its own preloaded cluster (what a rolled-back
# #[pg_test] cannot show): a new row joins its person by itself; SIGHUP reloads the settings;
# kill -9 of the worker, an immediate shutdown (in one big batch, and among many small ones whose
# asynchronous commits may not have reached disk) and a SIGTERM mid-batch lose nothing and apply
# nothing twice (and SIGTERM stops a busy worker at once); 8 concurrent writers x ROWS rows into three sources see no error while the worker
# runs; after each, every record has exactly one person and the persons equal a batch run.
#
#   [ROWS=N] [MODES='kill9 immediate immediate_small sigterm'] bash tests/worker/run.sh [WORK_DIR]
#   (scripts/test.sh runs it with the defaults)
source "$(dirname "$0")/../../scripts/lib.sh"
WORK="${1:-/tmp/customer_unify-test}/worker"
ROWS="${ROWS:-10000}"              # per writer; 0 skips the writers
MODES="${MODES:-kill9 immediate immediate_small sigterm}"  # the strikes mid-batch, in order
# Sample CRM size: the writers copy its rows, so it must be large enough that a person is not
# copied dozens of times (which no CRM sees, and which makes every block and e-mail huge).
BASE="${BASE:-20000}"
DB=worker_test
HERE="$ROOT/tests/worker"
FAILED=0

# A fresh cluster every run: a leftover one (an interrupted run) would start its worker on an
# old backlog before this script could drop the database.
stop_cluster "$WORK"
rm -rf "$WORK/data"
start_cluster "$WORK" "shared_preload_libraries = 'customer_unify'" "customer_unify.databases = '$DB'" \
    "customer_unify.naptime = 20ms" "max_connections = 40"
trap 'stop_cluster "$WORK"' EXIT
PSQL=(psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB")
q() { "${PSQL[@]}" -c "$1"; }
# wait_for SQL SECONDS: polls until SQL returns t; returns 1 on timeout.
wait_for() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(q "$1" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}
wait_for_server() {
    local deadline=$((SECONDS + 60))
    until psql -X -q -At -d "$DB" -c "SELECT 1" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || die "the server did not come back (log: $WORK/server.log)"
        sleep 0.2
    done
}
# Drained: nothing queued and no batch between its stages.
drained() { wait_for "SELECT NOT EXISTS (SELECT 1 FROM unify.change_queue) AND NOT EXISTS (SELECT 1 FROM unify.queue_work)" "$1"; }
# A worker's pid: the busy one if one is.
worker_pid() { q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'customer_unify worker' AND datname = '$DB'
                  ORDER BY state = 'active' DESC, pid LIMIT 1"; }
# Invariants, then the incremental persons against a batch run over the same data.
check_state() {
    local label="$1"
    expect "$label: every record has exactly one existing person, none is empty, queue empty" \
        "$("${PSQL[@]}" -f "$HERE/invariants.sql")" "0|0|0|0|t"
    expect "$label: persons, households and golden records equal a batch run" \
        "$("${PSQL[@]}" -f "$HERE/equals_batch.sql" | tail -1)" "0|0|0|0"
}

log "worker: setting up database $DB (sample CRM of $BASE rows, 3 sources, batch sync/score/resolve)"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
crmgen --rows "$BASE" --seed 11 --schema crm | "${PSQL[@]}" >/dev/null
"${PSQL[@]}" -f "$HERE/setup.sql" >/dev/null

# The first sync of the largest source filled unify.records without its secondary indexes
# (unify._drop_indexes) and rebuilt them: all six are there and valid (a record's person, and
# its index, are in unify.record_persons since 0.3.0).
expect "the first sync's bulk path rebuilt every index of unify.records" \
    "$(q "SELECT count(*) FILTER (WHERE i.indisvalid) FROM pg_index i WHERE i.indrelid = 'unify.records'::regclass")" "6"

log "worker: it runs and picks up a new row by itself"
wait_for "SELECT worker_state <> 'not running' FROM unify.status LIMIT 1" 30 \
    && pass "worker running" || fail "worker not running (log: $WORK/server.log)"
# A newsletter-style sign-up in the shop of a person the CRM knows: joins her person.
q "INSERT INTO crm.shop_customers (customer_id, email, first_name, last_name, phone, street, zip, city, country, birthday)
   SELECT 900000001, upper(e_mail), vorname, nachname, coalesce(mobil, telefon), strasse || ' ' || hausnummer, plz, ort, 'DE',
          to_date(geburtsdatum, 'DD.MM.YYYY')
   FROM crm.crm_contacts WHERE e_mail IS NOT NULL AND geburtsdatum ~ '^\d\d\.\d\d\.\d{4}$' ORDER BY kontakt_nr LIMIT 1"
if wait_for "SELECT rp.person_id = cp.person_id FROM unify.records r JOIN unify.record_persons rp USING (record_id),
                    unify.records c JOIN unify.record_persons cp USING (record_id)
             WHERE r.source_key = '900000001' AND c.source_key = (SELECT min(kontakt_nr) FROM crm.crm_contacts
                   WHERE e_mail IS NOT NULL AND geburtsdatum ~ '^\d\d\.\d\d\.\d{4}$')" 10; then
    pass "a new shop row joins the CRM contact's person within seconds"
else
    fail "the new shop row did not join its person"
fi
expect "status names the worker as the last batch's processor" \
    "$(q "SELECT last_batch_by, worker_pid IS NOT NULL FROM unify.status LIMIT 1")" "worker|t"

log "worker: SIGHUP reloads customer_unify.worker_enabled"
q "ALTER SYSTEM SET customer_unify.worker_enabled = off"; q "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
q "UPDATE crm.shop_customers SET city = 'Potsdam' WHERE customer_id = 900000001"
sleep 1
expect "disabled: the change waits in the queue" "$(q "SELECT count(*) FROM unify.change_queue")" "1"
q "ALTER SYSTEM RESET customer_unify.worker_enabled"; q "SELECT pg_reload_conf()" >/dev/null
drained 10 && pass "enabled again: the queue drains" || fail "queue not drained after re-enabling"

# Generated changes for the crash tests: copies of existing rows under new keys, half with
# another last name (new persons), plus updates and deletes.
changes() {  # changes N OFFSET
    q "INSERT INTO crm.shop_customers SELECT 800000000 + $2 + g, email, first_name,
         CASE WHEN g % 2 = 0 THEN last_name ELSE 'Neu' || last_name END, phone, street, zip, city, country,
         birthday, newsletter, created_at, updated_at
       FROM generate_series(1, $1) g JOIN (SELECT row_number() OVER (ORDER BY customer_id) i, * FROM crm.shop_customers
                                            WHERE customer_id < 800000000) s ON s.i = 1 + g % 900;
       UPDATE crm.crm_contacts SET ort = ort || ' ' || $2 WHERE kontakt_nr IN (SELECT kontakt_nr FROM crm.crm_contacts ORDER BY md5(kontakt_nr || $2) LIMIT 50);
       DELETE FROM crm.pos_loyalty_members WHERE card_no IN (SELECT card_no FROM crm.pos_loyalty_members ORDER BY md5(card_no::text || $2) LIMIT 20)"
}

for mode in $MODES; do
    log "worker: $mode in the middle of a batch"
    q "ALTER SYSTEM SET customer_unify.worker_enabled = off"; q "SELECT pg_reload_conf()" >/dev/null; sleep 0.5
    offset=$(case $mode in kill9) echo 10000;; immediate) echo 20000;; immediate_small) echo 40000;; *) echo 30000;; esac)
    changes 3000 $offset
    queued=$(q "SELECT count(*) FROM unify.change_queue")
    # One big batch, or (immediate_small) many small ones: the workers commit without waiting
    # for the WAL flush, so the last of them may be lost and must be queued again.
    q "ALTER SYSTEM SET customer_unify.batch_size = $([ $mode = immediate_small ] && echo 50 || echo 100000)"
    q "ALTER SYSTEM RESET customer_unify.worker_enabled"; q "SELECT pg_reload_conf()" >/dev/null
    # Strike while the worker runs (its one big batch, or one of the small ones).
    if wait_for "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'customer_unify worker'
                 AND datname = '$DB' AND state = 'active' AND query LIKE '%process_queue%')" 20; then
        sleep 0.3
        busy=$(q "SELECT count(*) FROM unify.change_queue")
        if [ $mode = kill9 ]; then
            kill -9 "$(worker_pid)"
        elif [ $mode = sigterm ]; then
            # What DROP DATABASE … WITH (FORCE) and a fast shutdown send: the batch must stop
            # at once (its transaction rolls back), not run on for seconds.
            pid=$(worker_pid)
            q "SELECT pg_terminate_backend($pid)" >/dev/null
            gone=0
            for _ in $(seq 30); do
                kill -0 "$pid" 2>/dev/null || { gone=1; break; }
                sleep 0.1
            done
            [ $gone = 1 ] && pass "SIGTERM stopped the busy worker within 3 s" || fail "the worker ran on after SIGTERM"
        else
            processed=$(q "SELECT total_rows FROM unify.queue_stats")
            sudo -u postgres "$PG_BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null
            sudo -u postgres "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
            wait_for_server
            echo "  info  $mode: processed rows read just before the stop $processed, right after recovery $(q "SELECT total_rows FROM unify.queue_stats") (the worker runs on in between)"
        fi
        pass "struck mid-batch ($queued changes queued, $busy still in the queue when struck)"
    else
        fail "the worker never started the batch"
    fi
    wait_for_server
    q "ALTER SYSTEM RESET customer_unify.batch_size"; q "SELECT pg_reload_conf()" >/dev/null
    drained 300 && pass "after the restart the worker drains the queue" || fail "queue not drained after $mode"
    check_state "$mode"
done

if [ "$ROWS" -gt 0 ]; then
log "worker: 8 concurrent writers x $ROWS rows into three sources while the worker runs"
q "CREATE SEQUENCE IF NOT EXISTS load_keys START 700000000;
   CREATE TABLE load_shop AS SELECT row_number() OVER (ORDER BY customer_id) i, * FROM crm.shop_customers WHERE customer_id < 700000000;
   CREATE TABLE load_crm AS SELECT row_number() OVER (ORDER BY kontakt_nr) i, * FROM crm.crm_contacts;
   CREATE TABLE load_pos AS SELECT row_number() OVER (ORDER BY card_no) i, * FROM crm.pos_loyalty_members;"
before=$(q "SELECT (SELECT count(*) FROM crm.shop_customers) + (SELECT count(*) FROM crm.crm_contacts) + (SELECT count(*) FROM crm.pos_loyalty_members)")
started=$SECONDS
# pgbench exits non-zero when a client gets an error (a deadlock or any other): that is the test.
if "$PG_BIN/pgbench" -n -c 8 -j 8 -t "$ROWS" -f "$HERE/writers.pgbench" "$DB" >"$WORK/pgbench.log" 2>&1; then
    pass "8 writers x $ROWS rows: no error surfaced ($(grep -o 'tps = [0-9.]*' "$WORK/pgbench.log" | head -1) while the worker ran)"
else
    fail "a writer failed: $(tail -5 "$WORK/pgbench.log")"
fi
expect "writers: every row arrived" "$(q "SELECT (SELECT count(*) FROM crm.shop_customers) + (SELECT count(*) FROM crm.crm_contacts)
    + (SELECT count(*) FROM crm.pos_loyalty_members) - $before")" "$((8 * ROWS))"
drained 1200 && pass "the worker drained $((8 * ROWS)) changes $((SECONDS - started)) s after the writers started" \
    || fail "queue not drained after the writers"
q "SELECT 'worker: ' || processed_rows || ' rows processed, last batch ' || last_batch_rows || ' rows in ' || last_batch_ms || ' ms'
   FROM unify.status LIMIT 1"
grep -q "deadlock" "$WORK/server.log" && fail "a deadlock in the server log" || pass "no deadlock in the server log"
check_state "writers"
fi

log "worker: SIGTERM (fast shutdown) stops it cleanly"
stop_cluster "$WORK"
trap - EXIT
# Idle it logs its own stop; inside a batch (even an empty one) Postgres ends it with its usual
# "terminating background worker … due to administrator command".
tail -n 30 "$WORK/server.log" | grep -q "customer_unify worker for database \"$DB\" stopped\|terminating background worker \"customer_unify worker\" due to administrator command" \
    && pass "the worker logged its clean stop" || fail "no clean stop in the log"
grep -q "server process .* was terminated by signal\|terminated by signal 11" "$WORK/server.log" \
    && grep "terminated by signal" "$WORK/server.log" | grep -v "signal 9" | grep -q . \
    && fail "a backend crashed (log: $WORK/server.log)" || pass "no crash besides the deliberate kill -9"

[ $FAILED = 0 ] || die "worker tests failed"
log "worker tests passed"
