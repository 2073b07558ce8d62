#!/usr/bin/env bash
# The upgrade from 0.1.0, in two steps around the install of the current build (scripts/test.sh):
#
#   run.sh before WORK   0.1.0 built from its own commit and installed; in the cluster
#                        WORK/regress: database upgrade_data with the sample CRM used through
#                        0.1.0's API (sql/before.sql), database regression with the sample CRM
#                        and an empty 0.1.0 installation (the pg_regress suite's fixture).
#                        Leaves the cluster stopped.
#   run.sh after WORK    (cluster running, current build installed) ALTER EXTENSION ... UPDATE
#                        in both; their catalogs must equal a fresh install's
#                        (catalog.sql); every row kept and the installation working
#                        (sql/after.sql). The suite then runs on the upgraded `regression`.
source "$(dirname "$0")/../../scripts/lib.sh"
STEP="${1:?usage: run.sh before|after WORK}"
WORK="${2:?usage: run.sh before|after WORK}"
HERE="$ROOT/tests/upgrade"
OLD="$WORK/upgrade-0.1.0"
OUT="$WORK/upgrade-out"
CRM="crmgen --rows 2000 --seed 7 --schema crm"
sql() { psql -q -X -v ON_ERROR_STOP=1 "$@"; }

regress() {  # regress TEST: one file of tests/upgrade/sql against upgrade_data, diffed with expected/
    "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" --use-existing --dbname=upgrade_data \
        --host="$PGHOST" --port="$PGPORT" --user=postgres --inputdir="$HERE" --outputdir="$OUT" \
        --bindir="$PG_BIN" "$1" || { cat "$OUT/regression.diffs" >&2 || true; die "upgrade test $1 failed (diffs above)"; }
}

case "$STEP" in
before)
    bash "$HERE/build_0.1.0.sh" "$OLD"
    log "installing 0.1.0 (its own build) into the PostgreSQL in use ($PG_CONFIG)"
    stop_cluster "$WORK/regress"
    pkg_lib=$(find "$OLD/pkg" -name 'customer_unify.so')
    pkg_share=$(dirname "$(find "$OLD/pkg" -name 'customer_unify.control')")
    install -m 755 "$pkg_lib" "$("$PG_CONFIG" --pkglibdir)/customer_unify.so"
    install -m 644 "$pkg_share"/customer_unify* "$("$PG_CONFIG" --sharedir)/extension/"
    start_cluster "$WORK/regress"
    rm -rf "$OUT"; mkdir -p "$OUT"; chown postgres: "$OUT"
    sql -d postgres -c "DROP DATABASE IF EXISTS upgrade_data" -c "DROP DATABASE IF EXISTS upgrade_fresh" \
        -c "DROP DATABASE IF EXISTS regression" -c "CREATE DATABASE upgrade_data" -c "CREATE DATABASE regression"
    $CRM | sql -d upgrade_data >/dev/null
    $CRM | sql -d regression >/dev/null
    sql -d regression -c "CREATE EXTENSION customer_unify VERSION '0.1.0'"
    log "0.1.0 in use (tests/upgrade/sql/before.sql)"
    regress before
    stop_cluster "$WORK/regress"
    ;;
after)
    log "ALTER EXTENSION customer_unify UPDATE (0.1.0 -> $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$("$PG_CONFIG" --sharedir)/extension/customer_unify.control"))"
    sql -d regression -c "ALTER EXTENSION customer_unify UPDATE"
    sql -d upgrade_data -c "ALTER EXTENSION customer_unify UPDATE" 2>"$OUT/update-warnings.txt"
    cat "$OUT/update-warnings.txt" >&2
    sql -d postgres -c "CREATE DATABASE upgrade_fresh"
    sql -d upgrade_fresh -c "CREATE EXTENSION customer_unify"
    # Capture functions exist only where sources are registered: compared in after.sql instead.
    for db in upgrade_fresh regression upgrade_data; do
        psql -q -X -v ON_ERROR_STOP=1 -d "$db" -f "$HERE/catalog.sql" | grep -vE 'unify\._capture_(truncate_)?[0-9]+\(\)' > "$OUT/catalog-$db.txt"
    done
    [ "$(wc -l < "$OUT/catalog-upgrade_fresh.txt")" -gt 500 ] || die "catalog.sql printed too little for a fresh install"
    for db in regression upgrade_data; do
        if ! diff -u "$OUT/catalog-upgrade_fresh.txt" "$OUT/catalog-$db.txt" > "$OUT/catalog-$db.diff"; then
            head -100 "$OUT/catalog-$db.diff" >&2
            die "the catalog of $db updated from 0.1.0 differs from a fresh install (- fresh, + updated; all in $OUT/catalog-$db.diff)"
        fi
    done
    log "catalog after the update equals a fresh install ($(wc -l < "$OUT/catalog-upgrade_fresh.txt") facts)"
    log "rows kept, installation working (tests/upgrade/sql/after.sql)"
    regress after
    sql -d postgres -c "DROP DATABASE upgrade_fresh" -c "DROP DATABASE upgrade_data"
    ;;
*) die "usage: run.sh before|after WORK" ;;
esac
