#!/usr/bin/env bash
# The main job, end to end: install what is missing, build and install customer_unify (release),
# start a throwaway PostgreSQL of its own, create a demo CRM from the sample-data generator, run
# what the extension can do, print the results, and say how to look around.
#
#   bash scripts/demo.sh [--rows N] [--seed S]
source "$(dirname "$0")/lib.sh"
ROWS=1000
SEED=42
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) ROWS="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        *) die "unknown argument $1 (use --rows N, --seed S)" ;;
    esac
done
ensure_deps
cd "$ROOT"

install_release

DIR="${CUSTOMER_UNIFY_DEMO_DIR:-/tmp/customer_unify-demo}"
log "starting a throwaway PostgreSQL in $DIR"
start_cluster "$DIR"
DB=customer_unify_demo
psql -q -X -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"

log "loading a demo CRM: crmgen --rows $ROWS --seed $SEED"
crmgen --rows "$ROWS" --seed "$SEED" | psql -q -X -v ON_ERROR_STOP=1 -d "$DB" >/dev/null

log "running the pipeline (demo/pipeline.sql)"
psql -q -X -v ON_ERROR_STOP=1 -P pager=off -d "$DB" -f demo/pipeline.sql

cat <<MSG

The demo database stays up. Look around:
    psql -h $PGHOST -p $PGPORT -U postgres $DB
Stop it with:
    sudo -u postgres $PG_BIN/pg_ctl -D $DIR/data stop
MSG
