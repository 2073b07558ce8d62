#!/usr/bin/env bash
# customer_unify on a Citus cluster (issue 27, first slice), client-driven against a real loopback
# cluster: a coordinator and two workers on 127.0.0.1, each its own data directory and port,
# Citus built from ../shared/vendor/citus-13.2.2.tar.gz (ensure_citus, scripts/lib.sh). The
# unify tables stay local on the coordinator. The same generated CRM is loaded four times on the
# coordinator and the same pipeline runs in each database:
#   cu_local     Citus present, every source table a plain local table (all tracked)
#   plain_local  no Citus extension in the database (plain PostgreSQL), the same registration
#   cu_dist      Citus present, shop_customers and crm_contacts distributed
#                (create_distributed_table) and tracked: their changes are captured on the
#                shards into queues colocated with them and drained by the coordinator (issue
#                27); pos_loyalty_members a reference table, registered with track_changes =>
#                false (capture on it is refused with SQLSTATE 0A000, asserted);
#                newsletter_signups local and tracked (the plain trigger)
#   plain_dist   plain PostgreSQL, the same registration as cu_dist
# Pipeline: demo/sources.sql registration, sync, train, score_pairs, resolve; then inserts,
# updates and deletes in every source, unify.process_queue() until the queue is empty; then
# sync, score_pairs, resolve again. After each of the three stages the records, the scored
# pairs and the persons (golden records, households) of the Citus database must equal those
# of its plain twin, compared as md5 of ordered listings (tests/citus/listing.sql); the trained
# models number by number.
#
#   [ROWS=5000] bash tests/citus/run.sh [WORK_DIR]      (scripts/test.sh runs it with the defaults)
#   CITUS_TIMES=1 also prints the time of every step, Citus beside plain (benches/citus.sh)
#   CITUS_MEMORY=1 also prints the peak private memory per node while each step runs
#   CITUS_KEEP=1 leaves the three clusters running afterwards
source "$(dirname "$0")/../../scripts/lib.sh"
WORK="${1:-/tmp/customer_unify-test}/citus"
ROWS="${ROWS:-5000}"
HERE="$ROOT/tests/citus"
FAILED=0

[ -n "$(citus_tarball)" ] || die "no Citus tarball: set CUSTOMER_UNIFY_CITUS_TARBALL"
ensure_citus

# A fresh cluster every run.
for node in coordinator worker1 worker2; do
    stop_cluster "$WORK/$node"
    rm -rf "$WORK/$node/data"
done
mkdir -p "$WORK"
chown postgres: "$WORK"
# CITUS_KEEP=1 leaves the cluster running (to look at it; stop it with pg_ctl or the next run).
# Otherwise the three clusters are stopped and deleted at the end (disk space).
[ "${CITUS_KEEP:-0}" = 1 ] || trap 'for node in coordinator worker1 worker2; do stop_cluster "$WORK/$node"; rm -rf "$WORK/$node/data"; done' EXIT
# Small nodes: Citus's maintenance daemons (one per database with the citus extension) share
# max_worker_processes with everything else.
NODE_CONF=("shared_preload_libraries = 'citus'" "max_worker_processes = 16" "max_connections = 60"
           "shared_buffers = '64MB'" "fsync = off" "synchronous_commit = off" "full_page_writes = off"
           "max_wal_size = '256MB'" "min_wal_size = '32MB'"
           "citus.log_remote_commands = off" "citus.show_shards_for_app_name_prefixes = ''")
declare -A PORT
for node in worker1 worker2 coordinator; do
    start_cluster "$WORK/$node" "${NODE_CONF[@]}"
    PORT[$node]=$PGPORT
done
log "citus: coordinator on port ${PORT[coordinator]}, workers on ${PORT[worker1]} and ${PORT[worker2]}"

psql_on() {  # psql_on PORT DB ARGS...
    local port="$1" db="$2"; shift 2
    psql -X -q -At -v ON_ERROR_STOP=1 -p "$port" -d "$db" "$@"
}
q() { psql_on "${PORT[coordinator]}" "$1" -c "$2"; }

CITUS_DBS="cu_local cu_dist"
PLAIN_DBS="plain_local plain_dist"
crmgen --rows "$ROWS" --seed 7 --schema crm > "$WORK/crm.sql"
for db in $CITUS_DBS $PLAIN_DBS; do
    q postgres "CREATE DATABASE $db"
done
for db in $CITUS_DBS; do
    for node in worker1 worker2; do
        psql_on "${PORT[$node]}" postgres -c "CREATE DATABASE $db"
        psql_on "${PORT[$node]}" "$db" -c "SET client_min_messages = warning" -c "CREATE EXTENSION citus"
    done
    q "$db" "SET client_min_messages = warning; CREATE EXTENSION citus"
    q "$db" "SELECT citus_set_coordinator_host('127.0.0.1', ${PORT[coordinator]})" >/dev/null
    q "$db" "SELECT citus_add_node('127.0.0.1', ${PORT[worker1]}), citus_add_node('127.0.0.1', ${PORT[worker2]})" >/dev/null
done
expect "cu_dist: two active workers" \
    "$(q cu_dist "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND isactive AND groupid > 0")" "2"
for db in $CITUS_DBS $PLAIN_DBS; do
    psql_on "${PORT[coordinator]}" "$db" -f "$WORK/crm.sql" >/dev/null
done
# The distributed layout: two hash-distributed sources (their shards on the workers), a
# reference table, one source left local.
q cu_dist "SET client_min_messages = warning;
    SELECT create_distributed_table('crm.shop_customers', 'customer_id');
    SELECT create_distributed_table('crm.crm_contacts', 'kontakt_nr');
    SELECT create_reference_table('crm.pos_loyalty_members');" >/dev/null
expect "cu_dist: shop_customers and crm_contacts have shards on both workers" \
    "$(q cu_dist "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name IN ('crm.shop_customers'::regclass, 'crm.crm_contacts'::regclass)")" "2"
for db in $CITUS_DBS $PLAIN_DBS; do
    q "$db" "SET client_min_messages = warning; CREATE EXTENSION customer_unify"
done

# The registration of demo/sources.sql; for the *_dist databases the reference table with
# track_changes => false.
registration() {  # registration DB
    local sql
    sql=$(cat "$ROOT/demo/sources.sql")
    case "$1" in *_dist)
        sql=$(printf '%s\n' "$sql" | sed -e 's/priority => \(30\));/priority => \1, track_changes => false);/') ;;
    esac
    printf 'SET client_min_messages = warning;\nSET search_path = crm, public;\n%s\n' "$sql"
}

# Timing of every step, per database; the trained model's md5.
declare -A TIME MODEL MEM TRAINED_ON TRAINING
# CITUS_MEMORY=1 (benches/citus.sh): the peak private memory per node while each step runs.
# Every 0.2 s the sampler reads VmHWM - RssShmem (the backend's peak resident memory without the
# shared buffers it touched) of every child process of each node's postmaster (the coordinator's
# backend, the workers' backends serving Citus's shard queries); the largest value seen per node.
mem_sampler() {  # mem_sampler FILE: appends "node kB" lines until killed
    local node pm pid v
    while :; do
        for node in coordinator worker1 worker2; do
            pm=$(head -1 "$WORK/$node/data/postmaster.pid" 2>/dev/null) || continue
            for pid in $(pgrep -P "$pm" || true); do
                v=$(awk '/^VmHWM/ {h=$2} /^RssShmem/ {s=$2} END {if (h) print h - s}' "/proc/$pid/status" 2>/dev/null || true)
                if [ -n "$v" ]; then echo "$node $v"; fi
            done
        done >> "$1" || true
        sleep 0.2
    done
}
step() {  # step DB NAME SQL [drain]: runs SQL (or, with drain, the queue until empty), timed
    local t0 t1 sampler=""
    if [ "${CITUS_MEMORY:-0}" = 1 ]; then
        : > "$WORK/mem.samples"
        mem_sampler "$WORK/mem.samples" &
        sampler=$!
    fi
    t0=$(date +%s%N)
    if [ "${4:-}" = drain ]; then drain "$1"; else q "$1" "SET client_min_messages = warning; $3" >/dev/null; fi
    t1=$(date +%s%N)
    TIME[$1/$2]=$(( (t1 - t0) / 1000000 ))
    if [ -n "$sampler" ]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
        for node in coordinator worker1 worker2; do
            MEM[$1/$2/$node]=$(awk -v n="$node" '$1 == n && $2 > m {m = $2} END {printf "%.0f", m / 1024}' "$WORK/mem.samples")
        done
    fi
}
drain() {  # drain DB: process_queue until it finds nothing (it also drains the shard queues)
    psql_on "${PORT[coordinator]}" "$1" -c "SET client_min_messages = warning" -c "DO \$\$ BEGIN
            LOOP
                EXIT WHEN unify.process_queue(100000) = 0;
                COMMIT;
            END LOOP;
        END \$\$"
}
listing() { psql_on "${PORT[coordinator]}" "$1" -f "$HERE/listing.sql"; }

log "citus: change capture on a reference table is refused, with SQLSTATE and hint"
out=$(psql -X -q -At -v VERBOSITY=verbose -p "${PORT[coordinator]}" -d cu_dist \
    -c "SELECT unify.add_source('probe', 'crm.pos_loyalty_members', 'card_no', '{\"email\": \"email\"}')" 2>&1 || true)
if [[ "$out" == *"ERROR:  0A000"* ]] && [[ "$out" == *"HINT:  Register it with track_changes => false"* ]]; then
    pass "add_source of tracked crm.pos_loyalty_members (reference): 0A000 with a hint"
else
    fail "add_source of tracked crm.pos_loyalty_members: got '$out'"
fi
expect "nothing registered by the refused call" "$(q cu_dist "SELECT count(*) FROM unify.sources")" "0"
# As the lowest role that may register (unify_admin, not a superuser): the check reads Citus's
# metadata with the caller's rights; a tracked distributed table registers, with its capture on
# the shards, and remove_source takes it all away again.
q cu_dist "SET client_min_messages = warning; CREATE ROLE regress_citus_admin LOGIN IN ROLE unify_admin;
           GRANT USAGE ON SCHEMA crm TO regress_citus_admin; GRANT SELECT, TRIGGER ON crm.crm_contacts, crm.pos_loyalty_members TO regress_citus_admin"
out=$(psql -X -q -At -v VERBOSITY=verbose -p "${PORT[coordinator]}" -d cu_dist -c "SET ROLE regress_citus_admin" \
      -c "SELECT unify.add_source('probe', 'crm.pos_loyalty_members', 'card_no', '{\"email\": \"email\"}')" 2>&1 || true)
[[ "$out" == *"ERROR:  0A000"* ]] && pass "as unify_admin: add_source of a tracked reference table refused with 0A000" \
    || fail "as unify_admin: add_source of a tracked reference table: got '$out'"
expect "as unify_admin: a tracked distributed table registers, captured on the shards, cleaned on the workers" \
    "$(psql -X -q -At -p "${PORT[coordinator]}" -d cu_dist -c "SET client_min_messages = warning" -c "SET ROLE regress_citus_admin" \
        -c "SELECT unify.add_source('probe', 'crm.crm_contacts', 'kontakt_nr', '{\"email\": \"e_mail\"}') > 0" \
        -c "SELECT concat_ws(' ', placement, capture, cleaned_on) FROM unify.status WHERE source = 'probe'" | tr '\n' ' ')" \
    "t distributed shard_queue workers "
probe_id=$(q cu_dist "SELECT source_id FROM unify.sources WHERE name = 'probe'")
expect "the probe's queue is distributed, colocated with crm.crm_contacts; its trigger is on every shard" \
    "$(q cu_dist "SELECT unify._placement('unify._queue_$probe_id') || ' ' || (SELECT count(DISTINCT colocationid) FROM pg_dist_partition WHERE logicalrelid IN ('unify._queue_$probe_id'::regclass, 'crm.crm_contacts'::regclass))")|$(q cu_dist "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) > 0 AND count(*) = (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'crm' AND c.relname ~ '^crm_contacts_[0-9]+\$') FROM pg_trigger WHERE tgname LIKE 'unify\\_capture\\_${probe_id}\\_%'\$\$)")" \
    "distributed 1|t,t"
q cu_dist "SET client_min_messages = warning; SELECT unify.remove_source('probe')" >/dev/null
expect "remove_source dropped the queue, its shards and the triggers on the shards" \
    "$(q cu_dist "SELECT to_regclass('unify._queue_$probe_id') IS NULL")|$(q cu_dist "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'unify\\_capture%'\$\$)")|$(q cu_dist "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) FROM pg_class WHERE relname LIKE '\\_queue\\_%'\$\$)")" \
    "t|0,0|0,0"

# The plain twin first, then the Citus database.
for db in plain_local cu_local plain_dist cu_dist; do
    log "citus: pipeline in $db"
    registration "$db" | psql_on "${PORT[coordinator]}" "$db" >/dev/null
    step "$db" sync "SELECT * FROM unify.sync()"
    step "$db" train "SELECT * FROM unify.train()"
    # Training samples records by their place in unify.records: the same model only when the
    # records came in the same order (a distributed source is staged in key order,
    # unify._citus_stage_order, whichever shard answers first). In the Citus databases train
    # compares and counts the candidates on the workers (issue 27); the model (m, u, prior, the
    # shares: unify.get_model()'s text) must equal to the last bit the plain twin's and the
    # coordinator's own training of the same database (customer_unify.citus_scoring = off,
    # rolled back), held in memory, and streamed (customer_unify.batch_memory at its least, 64kB:
    # u from a sample of records, EM on a sample of about 20,000 candidates drawn by the pair's
    # ids, on the workers in two passes when the rules may yield more).
    case $db in cu_*)
        plain_model=$(q "plain_${db#cu_}" "SELECT unify.get_model()::text")
        TRAINED_ON[$db]="$(q "$db" "SELECT report->>'trained_on' FROM unify.model ORDER BY version DESC LIMIT 1")|$(q "plain_${db#cu_}" "SELECT report->>'trained_on' FROM unify.model ORDER BY version DESC LIMIT 1")"
        MODEL[$db]=$( [ "$(q "$db" "SELECT unify.get_model()::text")" = "$plain_model" ] && echo same || echo different)
        for memory in default 64kB; do
            set_memory="RESET customer_unify.batch_memory"
            [ $memory = default ] || set_memory="SET LOCAL customer_unify.batch_memory = '$memory'"
            for scoring in on off; do
                TRAINING[$db/$memory/$scoring]=$(psql_on "${PORT[coordinator]}" "$db" -c "SET client_min_messages = warning" \
                    -c "BEGIN" -c "SET LOCAL customer_unify.citus_scoring = $scoring" -c "$set_memory" \
                    -c "SELECT count(*) > 0 FROM unify.train()" \
                    -c "SELECT concat_ws(' ', report->>'trained_on', report->>'streamed', report->>'em_sample_pairs', report->>'candidate_pairs') FROM unify.model ORDER BY version DESC LIMIT 1" \
                    -c "SELECT md5(unify.get_model()::text)" -c "ROLLBACK" | tr '\n' '|')
            done
        done
        ;;
    esac
    step "$db" score_pairs "SELECT * FROM unify.score_pairs()"
    step "$db" resolve "SELECT * FROM unify.resolve()"
    listing "$db" > "$WORK/$db.batch"
    # The same changes everywhere: new shop customers (copies of CRM contacts, half under a new
    # last name), updated CRM contacts, deleted POS members, unsubscribed newsletter sign-ups.
    step "$db" changes "$(cat "$HERE/changes.sql")"
    case $db in
        plain_dist)
            # What the changes queued, per source, on a single node.
            QUEUED=$(q plain_dist "SELECT (SELECT count(*) FROM unify.change_queue q JOIN unify.sources s USING (source_id) WHERE s.name = 'shop') || '/' || (SELECT count(*) FROM unify.change_queue q JOIN unify.sources s USING (source_id) WHERE s.name = 'crm')")
            QUEUE_STATUS=$(q plain_dist "SELECT string_agg(source || '=' || queue_depth, ',' ORDER BY source) FROM unify.status") ;;
        cu_dist)
            # The changes of the distributed sources wait in their shard queues on the workers,
            # none in any node's unify.change_queue; unify.status counts them.
            expect "cu_dist: the shard queues of shop and crm hold what plain_dist's queue held ($QUEUED); nothing of them in unify.change_queue, nothing in the workers' unify.change_queue" \
                "$(q cu_dist "SELECT (SELECT count(*) FROM unify._queue_$(q cu_dist "SELECT source_id FROM unify.sources WHERE name = 'shop'")) || '/' || (SELECT count(*) FROM unify._queue_$(q cu_dist "SELECT source_id FROM unify.sources WHERE name = 'crm'"))")|$(q cu_dist "SELECT count(*) FROM unify.change_queue q JOIN unify.sources s USING (source_id) WHERE s.name IN ('shop', 'crm')")|$(q cu_dist "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) FROM unify.change_queue\$\$)")" \
                "$QUEUED|0|0,0"
            expect "cu_dist: unify.status counts the shard queues ($QUEUE_STATUS as plain_dist)" \
                "$(q cu_dist "SELECT string_agg(source || '=' || queue_depth, ',' ORDER BY source) FROM unify.status")" "$QUEUE_STATUS" ;;
    esac
    step "$db" process_queue "SELECT 1" drain
    listing "$db" > "$WORK/$db.queue"
    case $db in *_dist)
        expect "$db: the queue brought the changes of the distributed sources (shop's new customers, crm's deletions) without a sync" \
            "$(q "$db" "SELECT count(*) FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'shop' AND r.source_key::bigint > 900000000")|$(q "$db" "SELECT count(*) FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'crm'")" \
            "40|$(q "$db" "SELECT count(*) FROM crm.crm_contacts")"
        expect "$db: every queue empty (shard queues too), no dead letters" \
            "$(q "$db" "SELECT sum(queue_depth) || '|' || sum(failed_changes) FROM unify.status")" "0|0" ;;
    esac
    step "$db" sync_again "SELECT * FROM unify.sync()"
    step "$db" score_again "SELECT * FROM unify.score_pairs()"
    step "$db" resolve_again "SELECT * FROM unify.resolve()"
    listing "$db" > "$WORK/$db.final"
done

log "citus: the same records, pairs and persons as plain PostgreSQL"
for layout in local dist; do
    for stage in batch queue final; do
        cu=$(cat "$WORK/cu_$layout.$stage"); plain=$(cat "$WORK/plain_$layout.$stage")
        expect "$layout sources, after the $stage stage: cu_$layout equals plain_$layout ($plain)" "$cu" "$plain"
    done
done
# Issue 27, training on the workers: the candidates compared and counted there, summed on the
# coordinator; the same model to the last bit as plain PostgreSQL's and as the coordinator's own
# training of the same database, held and streamed (see the pipeline above).
for layout in local dist; do
    expect "cu_$layout: train ran on the workers (report.trained_on), plain_$layout's on the coordinator" "${TRAINED_ON[cu_$layout]}" "workers|coordinator"
    expect "cu_$layout: the workers' model equals plain_$layout's to the last bit (unify.get_model() as text)" "${MODEL[cu_$layout]}" "same"
    for memory in default 64kB; do
        on=${TRAINING[cu_$layout/$memory/on]}; off=${TRAINING[cu_$layout/$memory/off]}
        log "cu_$layout, batch_memory $memory: workers '$on', coordinator '$off'"
        expect "cu_$layout, batch_memory $memory: the workers' training equals the coordinator's own to the last bit (md5 of the model)" \
            "$(cut -d'|' -f1 <<<"$on")|$(cut -d' ' -f1 <<<"$(cut -d'|' -f2 <<<"$on")")|$(cut -d' ' -f1 <<<"$(cut -d'|' -f2 <<<"$off")")|$(cut -d' ' -f2- <<<"$(cut -d'|' -f2 <<<"$on")")|$(cut -d'|' -f3 <<<"$on")" \
            "t|workers|coordinator|$(cut -d' ' -f2- <<<"$(cut -d'|' -f2 <<<"$off")")|$(cut -d'|' -f3 <<<"$off")"
    done
    expect "cu_$layout: held in memory by default, streamed at 64kB" \
        "$(cut -d' ' -f2 <<<"$(cut -d'|' -f2 <<<"${TRAINING[cu_$layout/default/on]}")")|$(cut -d' ' -f2 <<<"$(cut -d'|' -f2 <<<"${TRAINING[cu_$layout/64kB/on]}")")" "false|true"
done
# The comparison must be able to fail: the data is not trivial, and the stages differ.
expect "persons were made (some of several records) and pairs scored" \
    "$(q cu_dist "SELECT count(*) > 1000 AND count(*) FILTER (WHERE record_count > 1) > 100 FROM unify.persons")|$(q cu_dist "SELECT count(*) > 1000 FROM unify.pairs")" "t|t"
[ "$(cat "$WORK/cu_dist.batch")" != "$(cat "$WORK/cu_dist.final")" ] \
    && pass "the changes changed the listings" || fail "the listings did not change after the changes"
expect "cu_local: the queue applied every change (queue empty, no dead letters)" \
    "$(q cu_local "SELECT count(*) FROM unify.change_queue")|$(q cu_local "SELECT count(*) FROM unify.dead_letters")" "0|0"
# Issue 27, scoring on the workers: with Citus and two workers, score_pairs scored the blocks on
# the workers (unify.matching_state.scored_on), through unify._score_members, which the run made
# and dropped (with its shards); the plain twins scored on the coordinator. The
# pairs (and persons) compared above with plain PostgreSQL's are then the workers', and so are
# the figures per rule, equal to plain PostgreSQL's.
for layout in local dist; do
    expect "cu_$layout: the blocks were scored on the workers, plain_$layout's on the coordinator" \
        "$(q cu_$layout "SELECT scored_on FROM unify.matching_state")|$(q plain_$layout "SELECT scored_on FROM unify.matching_state")|$(q cu_$layout "SELECT DISTINCT scored_on FROM unify.status")|$(q plain_$layout "SELECT DISTINCT scored_on FROM unify.status")" \
        "workers|coordinator|workers|coordinator"
    stats="SELECT string_agg(concat_ws(':', rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block, largest_skipped_key), ' ' ORDER BY rule) FROM unify.blocking_stats"
    expect "cu_$layout: the figures per blocking rule equal plain_$layout's" "$(q cu_$layout "$stats")" "$(q plain_$layout "$stats")"
    expect "cu_$layout: the runs dropped unify._score_members and unify._train_members, their shards on the workers with them" \
        "$(q cu_$layout "SELECT to_regclass('unify._score_members') IS NULL AND to_regclass('unify._train_members') IS NULL")|$(q cu_$layout "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) FROM pg_class WHERE relname LIKE '\\_score\\_members%' OR relname LIKE '\\_train\\_members%'\$\$)")" "t|0,0"
done
# To the last bit, on the same data and model: the workers' pairs, weights and figures equal those
# of the coordinator's own scoring of the same database (customer_unify.citus_scoring = off).
# (The plain twins' models differ from the Citus databases' in the last digits, train's sums in
# another order, so their weights are compared rounded, in the listings above.)
exact="SELECT count(*) || ' ' || md5(string_agg(concat_ws('|', p.record_a, p.record_b, p.match_weight::text,
              p.match_probability::text, p.is_match, p.forced_by, p.blocking_rules::text, p.weights::text), E'\n'
              ORDER BY p.record_a, p.record_b)) FROM unify.pairs p"
for db in $CITUS_DBS; do
    on_workers="$(q $db "$exact")|$(q $db "$stats")"
    coordinator=$(psql_on "${PORT[coordinator]}" $db -c "SET client_min_messages = warning" -c "SET customer_unify.citus_scoring = off" \
        -c "SELECT stored_pairs > 1000 FROM unify.score_pairs()" -c "SELECT scored_on FROM unify.matching_state" -c "$exact" -c "$stats" \
        | tr '\n' '|' | sed 's/|$//')
    expect "$db: the workers' pairs (weights to the last bit) and figures equal the coordinator's own scoring" \
        "t|coordinator|$on_workers" "$coordinator"
done
expect "the kernel is installed on the workers (the extension, created on the coordinator, propagated)" \
    "$(q cu_dist "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) FROM pg_proc WHERE proname IN ('_score_block', '_tally_block')\$\$)")" "2,2"
# The scratch table and the kernel are the owner's: the lowest roles read neither.
q cu_dist "SET client_min_messages = warning; CREATE ROLE regress_citus_reader IN ROLE unify_reader"
# (made here as score_pairs makes it, and dropped after the probes)
q cu_dist "SET client_min_messages = warning; SELECT unify._citus_score_table()" >/dev/null
for role in regress_citus_admin regress_citus_reader; do
    for probe in "SELECT count(*) FROM unify._score_members" \
                 "SELECT unify._score_block('{}', '{}', '{}', 1, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')" \
                 "SELECT unify._tally_block('{}', 1, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')"; do
        out=$(psql -X -q -At -v VERBOSITY=verbose -p "${PORT[coordinator]}" -d cu_dist -c "SET ROLE $role" -c "$probe" 2>&1 || true)
        [[ "$out" == *"ERROR:  42501"* ]] && pass "as $role: ${probe:0:40}... refused (42501)" || fail "as $role: $probe: got '$out'"
    done
done
q cu_dist "DROP ROLE regress_citus_reader; DROP TABLE unify._score_members"
expect "unify.status: what runs where (cu_dist): placement/capture/cleaned_on per source, scored_on, trained_on" \
    "$(q cu_dist "SELECT string_agg(concat_ws('/', source, placement, capture, cleaned_on), ',' ORDER BY source) || ' citus=' || bool_and(citus) || ' scored_on=' || min(scored_on) || ' trained_on=' || min(trained_on) FROM unify.status")" \
    "crm/distributed/shard_queue/workers,newsletter/local/trigger/coordinator,pos/reference/none/coordinator,shop/distributed/shard_queue/workers citus=true scored_on=coordinator trained_on=workers"
expect "unify.status: without the citus extension everything is local, captured by triggers, cleaned, scored and trained on the coordinator" \
    "$(q plain_dist "SELECT string_agg(DISTINCT placement, ',') || ' ' || string_agg(DISTINCT capture, ',') || ' ' || string_agg(DISTINCT cleaned_on, ',') || ' citus=' || bool_or(citus) || ' scored_on=' || min(scored_on) || ' trained_on=' || min(trained_on) FROM unify.status")" \
    "local none,trigger coordinator citus=false scored_on=coordinator trained_on=coordinator"

# sync's statement for a distributed source runs the cleaners on the shards: in its plan, the
# workers' scans of the shards compute unify.normalize_name over the shard's columns (the
# coordinator only sorts what the 32 tasks return).
plan=$(printf '%s\n' "SET client_min_messages = warning;" "SELECT unify._citus_prepare_clean(true);" \
          "SELECT unify._citus_clean_statement(s, '') AS statement FROM unify.sources s WHERE s.name = 'shop' \\gset" \
          "EXPLAIN (VERBOSE, COSTS OFF) :statement" | psql_on "${PORT[coordinator]}" cu_dist)
if [[ "$plan" == *"Task Count: 32"* ]] && grep -Eq "Seq Scan on crm\.shop_customers_[0-9]+ src" <<<"$plan" \
   && grep -Eq "^ +Output: .*unify\.normalize_name\(src\.first_name\)" <<<"$plan"; then
    pass "cu_dist: sync cleans a distributed source on the workers (normalize_name in the shards' scans)"
else
    fail "cu_dist: the clean statement's plan does not clean on the shards: $plan"
fi

# A TRUNCATE of a distributed source: Citus runs truncate triggers on the coordinator's table
# only, where the plain truncate capture queues a full re-read; nothing is lost.
q cu_dist "TRUNCATE crm.crm_contacts"
expect "cu_dist: a TRUNCATE of a distributed source is queued on the coordinator" \
    "$(q cu_dist "SELECT string_agg(q.op::text, ',') FROM unify.change_queue q JOIN unify.sources s USING (source_id) WHERE s.name = 'crm'")" "T"
drain cu_dist
expect "cu_dist: after the queue, the truncated source has no records left" \
    "$(q cu_dist "SELECT count(*) FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'crm'")|$(q cu_dist "SELECT sum(queue_depth) FROM unify.status")" "0|0"
# An application role's writes to a distributed source (no right on anything of the extension)
# are captured on the shards and drained like any other.
q cu_dist "SET client_min_messages = warning; CREATE ROLE regress_citus_app LOGIN;
           GRANT USAGE ON SCHEMA crm TO regress_citus_app; GRANT SELECT, INSERT, UPDATE, DELETE ON crm.crm_contacts TO regress_citus_app"
psql_on "${PORT[coordinator]}" cu_dist -c "SET ROLE regress_citus_app" \
    -c "INSERT INTO crm.crm_contacts (kontakt_nr, vorname, nachname, e_mail) VALUES ('APP-1', 'Anna', 'Apfel', 'anna@example.org'), ('APP-2', 'Bernd', 'Birne', 'bernd@example.org'), ('APP-3', 'Clara', 'Citrus', NULL)" \
    -c "UPDATE crm.crm_contacts SET e_mail = 'clara@example.org' WHERE kontakt_nr = 'APP-3'" \
    -c "DELETE FROM crm.crm_contacts WHERE kontakt_nr = 'APP-2'" >/dev/null \
    && pass "as an application role: INSERT, UPDATE, DELETE on a tracked distributed source succeed" \
    || fail "as an application role: a write to a tracked distributed source failed"
drain cu_dist
expect "cu_dist: the application role's changes reached unify.records through the shard queue" \
    "$(q cu_dist "SELECT string_agg(r.source_key || '=' || coalesce(r.email, '-'), ',' ORDER BY r.source_key) FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'crm'")" \
    "APP-1=anna@example.org,APP-3=clara@example.org"

# A worker node down: unify.status still answers; the distributed sources' queue depth is
# unknown (NULL: their shard queues cannot be counted), the local sources' is counted. The node
# is made unreachable by pointing the coordinator's metadata at a port nothing listens on
# (stopping it would free its port for any other cluster on this machine to take).
W2=$(q cu_dist "SELECT nodeid FROM pg_dist_node WHERE nodeport = ${PORT[worker2]}")
q cu_dist "SELECT citus_update_node($W2, '127.0.0.1', 1)" >/dev/null
expect "cu_dist: unify.status with a worker node down: queue depth unknown for the distributed sources only" \
    "$(q cu_dist "SELECT string_agg(source || '=' || coalesce(queue_depth::text, 'unknown'), ',' ORDER BY source) FROM unify.status")" \
    "crm=unknown,newsletter=0,pos=0,shop=unknown"
q cu_dist "SELECT citus_update_node($W2, '127.0.0.1', ${PORT[worker2]})" >/dev/null
expect "cu_dist: with the worker node back, unify.status counts every queue again" \
    "$(q cu_dist "SELECT string_agg(source || '=' || coalesce(queue_depth::text, 'unknown'), ',' ORDER BY source) FROM unify.status")" \
    "crm=0,newsletter=0,pos=0,shop=0"

if [ "${CITUS_TIMES:-0}" = 1 ]; then
    echo
    printf '%-16s %12s %12s %12s %12s\n' "step (ms)" plain_local cu_local plain_dist cu_dist
    for s in sync train score_pairs resolve changes process_queue sync_again score_again resolve_again; do
        printf '%-16s %12s %12s %12s %12s\n' "$s" "${TIME[plain_local/$s]}" "${TIME[cu_local/$s]}" "${TIME[plain_dist/$s]}" "${TIME[cu_dist/$s]}"
    done
fi
if [ "${CITUS_MEMORY:-0}" = 1 ]; then
    echo
    echo "peak private memory per step (VmHWM - RssShmem, MB, largest backend per node, sampled every 0.2 s)"
    printf '%-26s %12s %12s %12s\n' "database/step" coordinator worker1 worker2
    for db in plain_local cu_local plain_dist cu_dist; do
        for s in sync train score_pairs resolve process_queue sync_again score_again; do
            printf '%-26s %12s %12s %12s\n' "$db/$s" "${MEM[$db/$s/coordinator]}" "${MEM[$db/$s/worker1]}" "${MEM[$db/$s/worker2]}"
        done
    done
fi
[ $FAILED = 0 ] || die "citus tests failed"
log "citus: all passed"
