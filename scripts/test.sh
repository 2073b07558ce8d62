#!/usr/bin/env bash
# Runs every test: pure Rust unit tests and #[pg_test]s (cargo pgrx test), then the SQL-level
# pg_regress suite against a throwaway cluster. Installs what is missing first. CI runs this.
#
#   bash scripts/test.sh                      everything (what CI runs)
#   bash scripts/test.sh --regress-only [T…]  only pg_regress, optionally only the tests T
#   bash scripts/test.sh --regress-only worker only the background worker tests
#   bash scripts/test.sh --regress-only dump_restore  only the pg_dump / pg_restore test
#   bash scripts/test.sh --regress-only security  only the security suite (roles, attacks, worker)
#   bash scripts/test.sh --regress-only citus  only the Citus cluster test (builds Citus once)
source "$(dirname "$0")/lib.sh"
REGRESS_ONLY=0
if [ "${1:-}" = --regress-only ]; then
    REGRESS_ONLY=1
    shift
fi
ensure_deps
cd "$ROOT"

WORK="${CUSTOMER_UNIFY_TEST_DIR:-/tmp/customer_unify-test}"
mkdir -p "$WORK"
chown postgres: "$WORK"

if [ $REGRESS_ONLY = 0 ]; then
    log "cargo fmt --check"
    cargo fmt --all --check

    # Warnings are errors. clippy comes with rustup's default profile; a toolchain without it
    # (none can be fetched here) skips this step rather than fail the run.
    if cargo clippy --version >/dev/null 2>&1; then
        log "cargo clippy (warnings are errors)"
        cargo clippy --quiet --all-targets --features "pg$PG_MAJOR pg_test" --no-default-features -- -D warnings
        cargo clippy --quiet --all-targets -p crmgen -- -D warnings
    else
        log "cargo clippy is not installed: skipped"
    fi

    log "unit tests of the sample-data generator"
    cargo test --quiet --release -p crmgen

    log "unit tests and #[pg_test]s (cargo pgrx test)"
    # cargo pgrx test installs into the system PostgreSQL: under its lock, also from a run on
    # a private copy.
    (
        if [ -n "$PG_PREFIX" ]; then
            exec 8>/tmp/customer_unify.install.lock
            flock 8
        fi
        cargo pgrx test pg$PG_MAJOR --runas postgres --pgdata "$WORK/pgrx-data"
    )
fi

# The upgrade from 0.1.0 (tests/upgrade/run.sh), first half: 0.1.0 built from its own commit,
# installed, used; database `regression` (schema crm: crmgen --rows 2000 --seed 7) holds an
# empty 0.1.0 installation.
# CUSTOMER_UNIFY_UPGRADE_TEST=0 skips it (a fresh install instead): only for work in progress on
# a schema change whose upgrade step is not written yet; CI always runs it.
UPGRADE_TEST="${CUSTOMER_UNIFY_UPGRADE_TEST:-1}"
trap 'stop_cluster "$WORK/regress"' EXIT
[ "$UPGRADE_TEST" = 0 ] || bash tests/upgrade/run.sh before "$WORK"

# Optimized without LTO (the profiling profile): the worker test drains 80,000 changes, which
# a debug build needs a quarter of an hour for.
log "installing the extension for pg_regress (profile profiling)"
install_build profiling
start_cluster "$WORK/regress"
# Second half: ALTER EXTENSION ... UPDATE, compared with a fresh install, rows kept. The suite
# below then runs on the updated `regression`.
if [ "$UPGRADE_TEST" = 0 ]; then
    log "upgrade test skipped (CUSTOMER_UNIFY_UPGRADE_TEST=0): database regression with a fresh install"
    psql -q -X -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS regression" -c "CREATE DATABASE regression"
    crmgen --rows 2000 --seed 7 --schema crm | psql -q -X -v ON_ERROR_STOP=1 -d regression >/dev/null
    psql -q -X -v ON_ERROR_STOP=1 -d regression -c "SET client_min_messages = warning" -c "CREATE EXTENSION customer_unify"
else
    bash tests/upgrade/run.sh after "$WORK"
fi

# ---- pg_regress and isolation ------------------------------------------------------------------
# The fixture contract. Every pg_regress file and isolation spec starts from this state and leaves
# exactly this state behind, so any one runs alone and in any order:
#   - database `regression` holding the sample CRM in schema crm (crmgen --rows 2000 --seed 7)
#     and extension customer_unify, both made before the suite: 0.1.0 installed empty and
#     updated (tests/upgrade/run.sh); tests keep a harmless CREATE EXTENSION IF NOT EXISTS;
#   - nothing registered: no sources, records, persons, pairs, overrides, identity events,
#     transaction sources, segments, predictions, dead letters, no model beyond the shipped
#     default; nothing of the tests' own in any schema; no role named regress_*.
# A test that writes runs in one transaction it rolls back (psql's ON_ERROR_ROLLBACK lets a statement fail
# inside it); one that must commit (the isolation specs) removes what it made through the
# extension's API, and by hand only rows it made itself. Rollbacks do not set sequences back:
# a test snapshots pg_sequences at its start and restores every sequence of schema unify to
# that value at its end (never to 1). So the ids a test prints depend on the fixture alone (its
# sequences stand where the installation left them, unused), never on what ran before.
# Checked below: every table outside the system schemas (row count and contents), every
# sequence, schema and regress_* role is the same after the suite as before it.
log "pg_regress"
bash scripts/readme_examples.sh
# What the suite must leave as it found it: one line per table (rows, hash of the contents),
# sequence, schema and test role.
fixture_state() {
    psql -X -At -v ON_ERROR_STOP=1 -d regression <<'SQL'
SELECT format('SELECT %L || '' rows='' || count(*) || '' md5='' || md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text), '''')) FROM %s t',
              'table ' || c.oid::regclass::text, c.oid::regclass)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY c.oid::regclass::text \gexec
SELECT format('sequence %I.%I last_value=%s', schemaname, sequencename, coalesce(last_value::text, 'unused'))
FROM pg_sequences ORDER BY 1;
SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' ORDER BY 1;
SELECT 'role ' || rolname FROM pg_roles WHERE rolname LIKE 'regress%' ORDER BY 1;
SQL
}
fixture_state > "$WORK/fixture-before"
OUT="$WORK/regress-out"
rm -rf "$OUT"; mkdir -p "$OUT"
all_regress=$(cd tests/pg_regress/sql && ls *.sql | sed 's/\.sql$//' | sort)
all_isolation=$(cd tests/isolation/specs && ls *.spec | sed 's/\.spec$//' | sort)
# Named tests run from whichever suite has them, in the order given; no names, every test of both.
regress_tests=""; isolation_tests=""
for t in ${*:-$all_regress $all_isolation}; do
    [ "$t" = worker ] || [ "$t" = dump_restore ] || [ "$t" = security ] || [ "$t" = citus ] && continue
    if [ -f "tests/pg_regress/sql/$t.sql" ]; then regress_tests="$regress_tests $t"
    elif [ -f "tests/isolation/specs/$t.spec" ]; then isolation_tests="$isolation_tests $t"
    else die "no test named $t"; fi
done
if [ -n "$regress_tests" ] && ! "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" \
        --use-existing --dbname=regression --host="$PGHOST" --port="$PGPORT" --user=postgres \
        --inputdir=tests/pg_regress --outputdir="$OUT" --bindir="$PG_BIN" $regress_tests; then
    cat "$OUT/regression.diffs" >&2 || true
    die "pg_regress failed (diffs above, in $OUT/regression.diffs)"
fi
# Multi-session behaviour (notifications, concurrency): isolation tests, same database.
if [ -n "$isolation_tests" ]; then
    log "pg_isolation_regress"
    ISO_OUT="$WORK/isolation-out"
    rm -rf "$ISO_OUT"; mkdir -p "$ISO_OUT"
    if ! "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/isolation/pg_isolation_regress" \
            --use-existing --dbname=regression --host="$PGHOST" --port="$PGPORT" --user=postgres \
            --inputdir=tests/isolation --outputdir="$ISO_OUT" --bindir="$PG_BIN" $isolation_tests; then
        cat "$ISO_OUT/regression.diffs" >&2 || true
        die "pg_isolation_regress failed (diffs above, in $ISO_OUT/regression.diffs)"
    fi
fi
if [ -n "$regress_tests$isolation_tests" ]; then
    log "checking that the tests left the fixture as they found it"
    fixture_state > "$WORK/fixture-after"
    if ! diff -u "$WORK/fixture-before" "$WORK/fixture-after" >&2; then
        die "the tests left state behind (diff above: - before the suite, + after it; the fixture contract is in scripts/test.sh)"
    fi
fi
# ---- end of pg_regress and isolation -------------------------------------------------------------
# pg_dump / pg_restore keeps ids, overrides and the queue (client-driven, same cluster).
if [ $REGRESS_ONLY = 0 ] || [[ " ${*:-} " == *" dump_restore "* ]]; then
    log "dump and restore (tests/dump_restore/run.sh)"
    bash tests/dump_restore/run.sh
fi
# The background worker needs its own cluster (shared_preload_libraries) and a client driving it.
if [ $REGRESS_ONLY = 0 ] || [ "${*:-}" = worker ]; then
    log "background worker (tests/worker/run.sh)"
    bash tests/worker/run.sh "$WORK"
fi
# The security model tried as each role that could attack it, with a worker running: its own cluster.
if [ $REGRESS_ONLY = 0 ] || [ "${*:-}" = security ]; then
    log "security (tests/security/run.sh)"
    bash tests/security/run.sh "$WORK"
fi
# Citus (issue 27): a loopback coordinator + 2 workers built from the vendored Citus source; the
# same records, pairs and persons as plain PostgreSQL with local, distributed and reference sources.
if [ $REGRESS_ONLY = 0 ] || [ "${*:-}" = citus ]; then
    if [ -n "$(citus_tarball)" ]; then
        log "Citus cluster (tests/citus/run.sh)"
        bash tests/citus/run.sh "$WORK"
    else
        printf '\n\033[1;31m==> SKIPPED: the Citus test (tests/citus/run.sh): no Citus tarball at $CUSTOMER_UNIFY_CITUS_TARBALL,\n    %s or /work/shared/vendor\033[0m\n\n' \
            "$ROOT/../shared/vendor/citus-13.2.2.tar.gz" >&2
    fi
fi
log "all tests passed"
