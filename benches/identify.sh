#!/usr/bin/env bash
# Benchmark: unify.identify at a touchpoint. The generated CRM (crmgen --seed 1) is synced,
# trained, scored and resolved; then P probes are taken from real records and typed as a till, a
# call-centre screen, a shop login or a web form would have them (e-mail in capitals, the phone
# written nationally with a slash, name in capitals with postcode and German birth date, the
# whole record as a form). Latency of identify through pgbench, one connection, beside a plain
# primary-key lookup of unify.records in the same run (both read their probe row by id first);
# and how often the record's own person comes first, per kind of probe.
#
#   bash benches/identify.sh [--rows N] [--probes P] [--seconds S]
source "$(dirname "$0")/../scripts/lib.sh"
ROWS=1000000
PROBES=2000
SECONDS_PER_RUN=20
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --probes) PROBES="$2"; shift 2 ;;
        --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
ensure_deps
cd "$ROOT"
install_release
DIR="${CUSTOMER_UNIFY_BENCH_DIR:-/tmp/customer_unify-bench}/identify"
mkdir -p "$DIR"; chown postgres: "$DIR"
start_cluster "$DIR" "shared_buffers = '2GB'" "jit = off" "max_wal_size = '8GB'" "work_mem = '256MB'"
trap 'stop_cluster "$DIR"' EXIT
DB=bench_identify
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); date $(date -u +%F)"
    echo "command: bash benches/identify.sh --rows $ROWS --probes $PROBES --seconds $SECONDS_PER_RUN"
    psql -q -X -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
    crmgen --rows "$ROWS" --seed 1 | psql -q -X -v ON_ERROR_STOP=1 -d "$DB" >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -v probes="$PROBES" -d "$DB" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
\timing on
SELECT sum(source_rows) AS records FROM unify.sync();
SELECT count(*) AS em_sessions FROM unify.train();
SELECT candidate_pairs, stored_pairs, matches FROM unify.score_pairs();
SELECT persons FROM unify.resolve();
\timing off
-- The probes: records drawn at random (fixed seed), each typed one way, in turn.
SELECT setseed(0.26);
CREATE TABLE bench_probes AS
WITH drawn AS (
    SELECT r.record_id, r.person_id, r.raw, r.email, coalesce(r.mobile, r.phone) AS phone, r.postcode, r.birth_date,
           row_number() OVER () AS n
    FROM (SELECT x.*, rp.person_id FROM unify.records x JOIN unify.record_persons rp USING (record_id)
          ORDER BY random() LIMIT :probes * 3) r
), typed AS (
    SELECT d.*, k.kind, CASE k.kind
        WHEN 'email' THEN jsonb_build_object('email', upper(d.raw ->> 'email'))
        WHEN 'phone' THEN jsonb_build_object('phone', '0' || substr(d.phone, 4, 3) || '/' || substr(d.phone, 7))
        WHEN 'name_postcode_birth_date' THEN jsonb_strip_nulls(jsonb_build_object(
            'first_name', upper(coalesce(d.raw ->> 'first_name', split_part(d.raw ->> 'full_name', ' ', 1))),
            'last_name', upper(coalesce(d.raw ->> 'last_name', split_part(d.raw ->> 'full_name', ' ', 2))),
            'postcode', d.postcode, 'birth_date', to_char(d.birth_date, 'DD.MM.YYYY')))
        ELSE d.raw - ARRAY['salutation', 'title', 'company', 'consent_email', 'consent_email_at', 'consent_phone',
                           'consent_phone_at', 'consent_post', 'consent_post_at', 'updated_at']
        END AS attributes
    FROM drawn d, LATERAL (SELECT (ARRAY['email', 'phone', 'name_postcode_birth_date', 'form'])[1 + d.n::int % 4] AS kind) k
    WHERE CASE k.kind WHEN 'email' THEN d.email IS NOT NULL AND d.raw ? 'email'
                      WHEN 'phone' THEN d.phone LIKE '+49%'
                      WHEN 'name_postcode_birth_date' THEN d.postcode IS NOT NULL AND d.birth_date IS NOT NULL
                      ELSE true END
)
SELECT row_number() OVER (ORDER BY n)::int AS id, record_id, person_id, kind, attributes FROM typed ORDER BY n LIMIT :probes;
ALTER TABLE bench_probes ADD PRIMARY KEY (id);
ANALYZE bench_probes;
SELECT kind, count(*) AS probes FROM bench_probes GROUP BY 1 ORDER BY 1;
\echo the own person of the record first (or tied first: namesakes the model cannot tell apart), per kind of probe
SELECT p.kind, count(DISTINCT p.id) AS probes,
       count(DISTINCT p.id) FILTER (WHERE i.ord IS NOT NULL) AS answered,
       count(*) FILTER (WHERE i.ord = 1 AND i.person_id = p.person_id) AS own_first,
       count(*) FILTER (WHERE i.ord > 1 AND i.person_id = p.person_id AND i.match_weight = i.top) AS own_tied_first,
       count(*) FILTER (WHERE i.ord = 1 AND i.is_match) AS top_is_match
FROM bench_probes p
LEFT JOIN LATERAL (SELECT x.*, max(x.match_weight) OVER () AS top FROM unify.identify(p.attributes, 5) WITH ORDINALITY
                   AS x (person_id, match_probability, match_weight, is_match, record_id, explanation, ord)) i ON true
GROUP BY ROLLUP (1) ORDER BY 1;
SQL
    max_id=$(psql -X -A -t -d "$DB" -c "SELECT max(id) FROM bench_probes")
    for what in baseline identify; do
        if [ "$what" = baseline ]; then
            query="SELECT * FROM unify.records WHERE record_id = (SELECT record_id FROM bench_probes WHERE id = :id);"
        else
            query="SELECT * FROM unify.identify((SELECT attributes FROM bench_probes WHERE id = :id));"
        fi
        printf '\\set id random(1, %s)\n%s\n' "$max_id" "$query" > "$DIR/lookup_$what.sql"
        rm -f "$DIR"/pgbench_log.*
        (cd "$DIR" && "$PG_BIN/pgbench" -n -c 1 -T "$SECONDS_PER_RUN" -l -f "$DIR/lookup_$what.sql" "$DB" >/dev/null 2>&1)
        # Per transaction the log holds the latency in microseconds (third column).
        sort -n -k3 "$DIR"/pgbench_log.* | awk -v what="$what" '{ lat[NR] = $3 } END {
            printf "%s: %d lookups, p50 %.3f ms, p95 %.3f ms, p99 %.3f ms, max %.3f ms\n",
                what, NR, lat[int(NR * 0.50)] / 1000, lat[int(NR * 0.95)] / 1000, lat[int(NR * 0.99)] / 1000, lat[NR] / 1000 }'
    done
    echo "identify per kind of probe (every probe once, in order, timed in the server):"
    psql -X -q -v ON_ERROR_STOP=1 -P pager=off -d "$DB" <<'SQL'
CREATE TEMP TABLE timed (kind text, ms float8);
DO $$
DECLARE
    p record;
    t0 timestamptz;
BEGIN
    FOR p IN SELECT * FROM bench_probes ORDER BY id LOOP
        t0 := clock_timestamp();
        PERFORM * FROM unify.identify(p.attributes);
        INSERT INTO timed VALUES (p.kind, extract(epoch FROM clock_timestamp() - t0) * 1000);
    END LOOP;
END
$$;
SELECT coalesce(kind, 'all') AS kind, count(*) AS probes,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p50_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p99_ms,
       round(max(ms)::numeric, 3) AS max_ms
FROM timed GROUP BY ROLLUP (kind) ORDER BY kind NULLS LAST;
SQL
} 2>&1 | tee "$DIR/identify-result.txt"
