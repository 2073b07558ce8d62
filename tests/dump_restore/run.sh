#!/usr/bin/env bash
# A backup is a pg_dump like any other: restored into a new database, every person keeps its
# id, every record its person, overrides, history and erasures stay, the queue keeps what it
# had not processed, a resolve right after the restore changes nothing, and new persons and
# households draw ids after the old ones (the sequences come along).
#
#   bash tests/dump_restore/run.sh      (scripts/test.sh runs it against its pg_regress cluster:
#                                        PGHOST and PGPORT must point at a running server)
source "$(dirname "$0")/../../scripts/lib.sh"
[ -n "${PGPORT:-}" ] || die "PGHOST/PGPORT must point at a running cluster (scripts/test.sh sets them)"
cd "$ROOT"
SRC=dump_source
DST=dump_restored
DUMP="$(mktemp -d)/unify.dump"
FAILED=0
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $SRC" -c "DROP DATABASE IF EXISTS $DST" \
    -c "CREATE DATABASE $SRC" -c "CREATE DATABASE $DST"
crmgen --rows 2000 --seed 11 | psql -X -q -v ON_ERROR_STOP=1 -d $SRC >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d $SRC >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
SELECT unify.sync();
SELECT unify.score_pairs();
SELECT unify.resolve();
-- Steward decisions and an erasure, which the restore must keep.
SELECT unify.unlink(a.record_id, b.record_id, 'steward: different people')
FROM (SELECT p.record_a, p.record_b FROM unify.pairs p WHERE p.is_match ORDER BY p.record_a, p.record_b LIMIT 1) x
JOIN unify.records a ON a.record_id = x.record_a JOIN unify.records b ON b.record_id = x.record_b;
SELECT unify.erase_person((SELECT max(person_id) FROM unify.persons), 'GDPR request');
-- A change not processed yet.
UPDATE shop_customers SET city = 'Potsdam' WHERE customer_id = (SELECT min(customer_id) FROM shop_customers);
SQL

identity="SELECT md5(string_agg(concat_ws('|', s.name, r.source_key, r.record_id, rp.person_id, rp.former_person_ids, p.household_id, p.email, p.last_name), ',' ORDER BY s.name, r.source_key))
          FROM unify.records r JOIN unify.sources s USING (source_id) LEFT JOIN unify.record_persons rp USING (record_id)
          LEFT JOIN unify.persons p ON p.person_id = rp.person_id"
counts="SELECT concat_ws(' ', (SELECT count(*) FROM unify.persons), (SELECT count(*) FROM unify.pairs),
                         (SELECT count(*) FROM unify.overrides), (SELECT count(*) FROM unify.identity_events),
                         (SELECT count(*) FROM unify.erasures), (SELECT count(*) FROM unify.change_queue),
                         (SELECT count(*) FROM unify.block_keys))"
before_identity=$(q $SRC "$identity")
before_counts=$(q $SRC "$counts")
max_person=$(q $SRC "SELECT max(person_id) FROM unify.persons")
max_household=$(q $SRC "SELECT max(household_id) FROM unify.persons")

"$PG_BIN/pg_dump" -Fc -d $SRC -f "$DUMP"
"$PG_BIN/pg_restore" --exit-on-error -d $DST "$DUMP"

echo "dump and restore of a resolved CRM database ($(q $SRC "SELECT count(*) FROM unify.records") records):"
expect "every record keeps its person, household and golden record" "$(q $DST "$identity")" "$before_identity"
expect "persons, pairs, overrides, events, erasures, queue, block keys all restored" "$(q $DST "$counts")" "$before_counts"
expect "resolve right after the restore changes nothing" \
    "$(q $DST "SELECT concat_ws(' ', new_persons, merges, splits, golden_changed) FROM unify.resolve()")" "0 0 0 0"
expect "the queued change is still processed" "$(q $DST "SELECT unify.process_queue() > 0")" "t"
# The erasure tombstones are keyed hashes: the restored secret still matches them, so a full
# sync does not bring the erased person back.
expect "a sync after the restore brings no erased row back" \
    "$(q $DST "SET client_min_messages = warning; SELECT sum(inserted) FROM unify.sync()")" "0"
expect "the capture triggers work after the restore" \
    "$(q $DST "INSERT INTO newsletter_signups (signup_id, email, first_name, double_opt_in, signed_up_at) SELECT max(signup_id) + 1, 'neu.kundin@example.org', 'Neu', true, now() FROM newsletter_signups; SELECT count(*) FROM unify.change_queue")" "1"
q $DST "SELECT unify.process_queue()" >/dev/null
expect "a new person draws an id after the old ones" \
    "$(q $DST "SELECT p.person_id > $max_person FROM unify.records r JOIN unify.record_persons USING (record_id) JOIN unify.persons p USING (person_id) JOIN unify.sources s USING (source_id) WHERE s.name = 'newsletter' AND r.source_key = (SELECT max(signup_id)::text FROM newsletter_signups)")" "t"
expect "a new household draws an id after the old ones" \
    "$(q $DST "SELECT nextval('unify.household_id_seq') > $max_household")" "t"

# DROP EXTENSION cannot drop the capture triggers on the CRM's tables (they are not its
# members): they must stay harmless, and a new CREATE EXTENSION + add_source must take them over.
q $DST "DROP EXTENSION customer_unify CASCADE" >/dev/null
expect "writes to a source table still work after DROP EXTENSION" \
    "$(q $DST "INSERT INTO newsletter_signups (signup_id, email, first_name, double_opt_in, signed_up_at) SELECT max(signup_id) + 1, 'nach.drop@example.org', 'Nach', true, now() FROM newsletter_signups RETURNING 'inserted'")" "inserted"
psql -X -q -v ON_ERROR_STOP=1 -d $DST >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
\i demo/sources.sql
SQL
expect "after a new CREATE EXTENSION the sources capture changes again" \
    "$(q $DST "DELETE FROM newsletter_signups WHERE email = 'nach.drop@example.org'; SELECT count(*) FROM unify.change_queue")" "1"

psql -X -q -d postgres -c "DROP DATABASE $SRC" -c "DROP DATABASE $DST"
rm -rf "$(dirname "$DUMP")"
[ $FAILED = 0 ] || die "dump/restore test failed"
log "dump/restore test passed"
