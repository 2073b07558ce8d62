#!/usr/bin/env bash
# customer_unify on a Citus cluster (issue 27, first slice), client-driven against a real loopback
# cluster: a coordinator and two workers on 127.0.0.1, each its own data directory and port,
# Citus built from ../shared/vendor/citus-13.2.2.tar.gz (ensure_citus, scripts/lib.sh). The
# unify tables stay local on the coordinator. The same generated CRM is loaded four times on the
# coordinator and the same pipeline runs in each database:
#   cu_local     Citus present, every source table a plain local table (all tracked)
#   plain_local  no Citus extension in the database (plain PostgreSQL), the same registration
#   cu_dist      Citus present, shop_customers and crm_contacts distributed
#                (create_distributed_table), pos_loyalty_members a reference table,
#                newsletter_signups local: the first three registered with track_changes => false
#                (capture on them is refused with SQLSTATE 0A000, asserted), newsletter tracked
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
#   CITUS_MEMORY=1 also prints the peak private memory per node while score_pairs runs
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

# The registration of demo/sources.sql; for the *_dist databases the distributed and reference
# tables with track_changes => false.
registration() {  # registration DB
    local sql
    sql=$(cat "$ROOT/demo/sources.sql")
    case "$1" in *_dist)
        sql=$(printf '%s\n' "$sql" | sed -e 's/priority => \(10\|20\|30\));/priority => \1, track_changes => false);/') ;;
    esac
    printf 'SET client_min_messages = warning;\nSET search_path = crm, public;\n%s\n' "$sql"
}

# Timing of every step, per database; the trained model's md5.
declare -A TIME MODEL MEM
# CITUS_MEMORY=1 (benches/citus.sh): the peak private memory per node while score_pairs runs.
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
step() {  # step DB NAME SQL
    local t0 t1 sampler=""
    if [ "${CITUS_MEMORY:-0}" = 1 ] && [[ "$2" == score* ]]; then
        : > "$WORK/mem.samples"
        mem_sampler "$WORK/mem.samples" &
        sampler=$!
    fi
    t0=$(date +%s%N)
    q "$1" "SET client_min_messages = warning; $3" >/dev/null
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
drain() {  # drain DB: process_queue until the queue is empty
    psql_on "${PORT[coordinator]}" "$1" -c "SET client_min_messages = warning" -c "DO \$\$ BEGIN
            WHILE EXISTS (SELECT 1 FROM unify.change_queue) LOOP
                EXIT WHEN unify.process_queue(100000) = 0;
                COMMIT;
            END LOOP;
        END \$\$"
}
listing() { psql_on "${PORT[coordinator]}" "$1" -f "$HERE/listing.sql"; }

log "citus: change capture on a distributed or reference table is refused, with SQLSTATE and hint"
for rel in crm.shop_customers crm.pos_loyalty_members; do
    out=$(psql -X -q -At -v VERBOSITY=verbose -p "${PORT[coordinator]}" -d cu_dist \
        -c "SELECT unify.add_source('probe', '$rel', '$(case $rel in *shop*) echo customer_id;; *) echo card_no;; esac)', '{\"email\": \"email\"}')" 2>&1 || true)
    if [[ "$out" == *"ERROR:  0A000"* ]] && [[ "$out" == *"HINT:  Register it with track_changes => false"* ]]; then
        pass "add_source of tracked $rel: 0A000 with a hint"
    else
        fail "add_source of tracked $rel: got '$out'"
    fi
done
expect "nothing registered by the refused calls" "$(q cu_dist "SELECT count(*) FROM unify.sources")" "0"
# As the lowest role that may register (unify_admin, not a superuser): the check reads Citus's
# metadata with the caller's rights.
q cu_dist "SET client_min_messages = warning; CREATE ROLE regress_citus_admin IN ROLE unify_admin;
           GRANT USAGE ON SCHEMA crm TO regress_citus_admin; GRANT SELECT ON crm.crm_contacts TO regress_citus_admin"
out=$(psql -X -q -At -v VERBOSITY=verbose -p "${PORT[coordinator]}" -d cu_dist -c "SET ROLE regress_citus_admin" \
      -c "SELECT unify.add_source('probe', 'crm.crm_contacts', 'kontakt_nr', '{\"email\": \"e_mail\"}')" 2>&1 || true)
[[ "$out" == *"ERROR:  0A000"* ]] && pass "as unify_admin: add_source of a tracked distributed table refused with 0A000" \
    || fail "as unify_admin: add_source of a tracked distributed table: got '$out'"
expect "as unify_admin: untracked, it registers (and is removed)" \
    "$(psql -X -q -At -p "${PORT[coordinator]}" -d cu_dist -c "SET client_min_messages = warning" -c "SET ROLE regress_citus_admin" \
        -c "SELECT unify.add_source('probe', 'crm.crm_contacts', 'kontakt_nr', '{\"email\": \"e_mail\"}', track_changes => false) > 0" \
        -c "SELECT placement FROM unify.status WHERE source = 'probe'" -c "SELECT unify.remove_source('probe')" | head -2 | tr '\n' ' ')" "t distributed "
q cu_dist "DELETE FROM unify.sources WHERE name = 'probe'"
expect "untracked, a distributed source registers" \
    "$(q cu_dist "SET client_min_messages = warning; SELECT unify.add_source('probe', 'crm.shop_customers', 'customer_id', '{\"email\": \"email\"}', track_changes => false) IS NOT NULL; SELECT unify.remove_source('probe')" | head -1)" "t"
q cu_dist "DELETE FROM unify.sources WHERE name = 'probe'"

# The plain twin first, then the Citus database.
for db in plain_local cu_local plain_dist cu_dist; do
    log "citus: pipeline in $db"
    registration "$db" | psql_on "${PORT[coordinator]}" "$db" >/dev/null
    step "$db" sync "SELECT * FROM unify.sync()"
    step "$db" train "SELECT * FROM unify.train()"
    # Training samples records by their place in unify.records: the same model only when the
    # records came in the same order (a distributed source is staged in key order,
    # unify._citus_stage_order, whichever shard answers first). Compared number by number with
    # the twin's: equal up to the order of floating-point sums (its threads), below 1e-12.
    case $db in cu_*)
        model=$(q "plain_${db#cu_}" "SELECT unify.get_model()")
        MODEL[$db]=$(echo "SELECT count(*) > 10 AND count(*) = count(a.v) AND count(*) = count(b.v)
                       AND max(abs(a.v::text::float8 - b.v::text::float8)) < 1e-12 FROM
                (SELECT row_number() OVER () AS i, v FROM jsonb_path_query(unify.get_model(), 'strict \$.**') v WHERE jsonb_typeof(v) = 'number') a
                FULL JOIN (SELECT row_number() OVER () AS i, v FROM jsonb_path_query(:'model'::jsonb, 'strict \$.**') v WHERE jsonb_typeof(v) = 'number') b USING (i)" \
            | psql_on "${PORT[coordinator]}" "$db" -v model="$model") ;;
    esac
    step "$db" score_pairs "SELECT * FROM unify.score_pairs()"
    step "$db" resolve "SELECT * FROM unify.resolve()"
    listing "$db" > "$WORK/$db.batch"
    # The same changes everywhere: new shop customers (copies of CRM contacts, half under a new
    # last name), updated CRM contacts, deleted POS members, unsubscribed newsletter sign-ups.
    step "$db" changes "$(cat "$HERE/changes.sql")"
    t0=$(date +%s%N); drain "$db"; TIME[$db/process_queue]=$(( ($(date +%s%N) - t0) / 1000000 ))
    listing "$db" > "$WORK/$db.queue"
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
for layout in local dist; do
    expect "$layout sources: train made the same model as plain PostgreSQL's (every number within 1e-12)" "${MODEL[cu_$layout]}" "t"
done
# The comparison must be able to fail: the data is not trivial, and the stages differ.
expect "persons were made (some of several records) and pairs scored" \
    "$(q cu_dist "SELECT count(*) > 1000 AND count(*) FILTER (WHERE record_count > 1) > 100 FROM unify.persons")|$(q cu_dist "SELECT count(*) > 1000 FROM unify.pairs")" "t|t"
[ "$(cat "$WORK/cu_dist.batch")" != "$(cat "$WORK/cu_dist.final")" ] \
    && pass "the changes changed the listings" || fail "the listings did not change after the changes"
expect "cu_local: the queue applied every change (queue empty, no dead letters)" \
    "$(q cu_local "SELECT count(*) FROM unify.change_queue")|$(q cu_local "SELECT count(*) FROM unify.dead_letters")" "0|0"
expect "cu_dist: the changes of distributed sources reached unify.records by sync" \
    "$(q cu_dist "SELECT count(*) FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'shop' AND r.source_key::bigint > 900000000")" \
    "$(q cu_dist "SELECT count(*) FROM crm.shop_customers WHERE customer_id > 900000000")"
# Issue 27, scoring on the workers: with Citus and two workers, score_pairs scored the blocks on
# the workers (unify.matching_state.scored_on), through unify._score_members, which the run made
# and dropped (with its shards); the plain twins scored on the coordinator. The
# pairs (and persons) compared above with plain PostgreSQL's are then the workers', and so are
# the figures per rule, equal to plain PostgreSQL's.
for layout in local dist; do
    expect "cu_$layout: the blocks were scored on the workers, plain_$layout's on the coordinator" \
        "$(q cu_$layout "SELECT scored_on FROM unify.matching_state")|$(q plain_$layout "SELECT scored_on FROM unify.matching_state")" \
        "workers|coordinator"
    stats="SELECT string_agg(concat_ws(':', rule, pairs, new_pairs, blocks, skipped_blocks, largest_skipped_block, largest_skipped_key), ' ' ORDER BY rule) FROM unify.blocking_stats"
    expect "cu_$layout: the figures per blocking rule equal plain_$layout's" "$(q cu_$layout "$stats")" "$(q plain_$layout "$stats")"
    expect "cu_$layout: the run dropped unify._score_members, its shards on the workers with it" \
        "$(q cu_$layout "SELECT to_regclass('unify._score_members') IS NULL")|$(q cu_$layout "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) FROM pg_class WHERE relname LIKE '\\_score\\_members%'\$\$)")" "t|0,0"
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
    "$(q cu_dist "SELECT string_agg(result, ',') FROM run_command_on_workers(\$\$SELECT count(*) FROM pg_proc WHERE proname = '_score_block'\$\$)")" "1,1"
# The scratch table and the kernel are the owner's: the lowest roles read neither.
q cu_dist "SET client_min_messages = warning; CREATE ROLE regress_citus_reader IN ROLE unify_reader"
# (made here as score_pairs makes it, and dropped after the probes)
q cu_dist "SET client_min_messages = warning; SELECT unify._citus_score_table()" >/dev/null
for role in regress_citus_admin regress_citus_reader; do
    for probe in "SELECT count(*) FROM unify._score_members" \
                 "SELECT unify._score_block('{}', '{}', '{}', 1, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')"; do
        out=$(psql -X -q -At -v VERBOSITY=verbose -p "${PORT[coordinator]}" -d cu_dist -c "SET ROLE $role" -c "$probe" 2>&1 || true)
        [[ "$out" == *"ERROR:  42501"* ]] && pass "as $role: ${probe:0:40}... refused (42501)" || fail "as $role: $probe: got '$out'"
    done
done
q cu_dist "DROP ROLE regress_citus_reader; DROP TABLE unify._score_members"
expect "unify.status: where each source lives (cu_dist)" \
    "$(q cu_dist "SELECT string_agg(source || '=' || placement, ',' ORDER BY source) || ' citus=' || bool_and(citus) FROM unify.status")" \
    "crm=distributed,newsletter=local,pos=reference,shop=distributed citus=true"
expect "unify.status: without the citus extension everything is local" \
    "$(q plain_dist "SELECT string_agg(DISTINCT placement, ',') || ' citus=' || bool_or(citus) FROM unify.status")" "local citus=false"

if [ "${CITUS_TIMES:-0}" = 1 ]; then
    echo
    printf '%-16s %12s %12s %12s %12s\n' "step (ms)" plain_local cu_local plain_dist cu_dist
    for s in sync train score_pairs resolve changes process_queue sync_again score_again resolve_again; do
        printf '%-16s %12s %12s %12s %12s\n' "$s" "${TIME[plain_local/$s]}" "${TIME[cu_local/$s]}" "${TIME[plain_dist/$s]}" "${TIME[cu_dist/$s]}"
    done
fi
if [ "${CITUS_MEMORY:-0}" = 1 ]; then
    echo
    echo "peak private memory while scoring (VmHWM - RssShmem, MB, largest backend per node, sampled every 0.2 s)"
    printf '%-26s %12s %12s %12s\n' "database/step" coordinator worker1 worker2
    for db in plain_local cu_local plain_dist cu_dist; do
        for s in score_pairs score_again; do
            printf '%-26s %12s %12s %12s\n' "$db/$s" "${MEM[$db/$s/coordinator]}" "${MEM[$db/$s/worker1]}" "${MEM[$db/$s/worker2]}"
        done
    done
fi
[ $FAILED = 0 ] || die "citus tests failed"
log "citus: all passed"
