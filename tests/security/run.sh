#!/usr/bin/env bash
# The security model, tried as the lowest role that could attempt each attack (issue 23), on a
# real cluster with real roles and the background worker running:
#   mallory  a member of unify_admin (with CREATE on schema public)
#   tom      the owner of a tracked table, nothing else
#   eve      PUBLIC, with CREATE on schema public (planted functions and operators)
#   rita     a member of unify_reader;  ana  a member of unify_analyst
# Payloads write who ran them (and whether that role is a superuser) to public.payload_log, and
# try to make their author superuser. Each attack checks that its payload did run (so the path
# was exercised) and never as a superuser; at the end no attacker is superuser and the DBA's
# secret never reached a table of the extension.
#
#   bash tests/security/run.sh [WORK_DIR]     (scripts/test.sh runs it)
source "$(dirname "$0")/../../scripts/lib.sh"
WORK="${1:-/tmp/customer_unify-test}/security"
DB=security_test
FAILED=0

stop_cluster "$WORK"
rm -rf "$WORK/data"
start_cluster "$WORK" "shared_preload_libraries = 'customer_unify'" "customer_unify.databases = '$DB'" \
    "customer_unify.naptime = 20ms"
trap 'stop_cluster "$WORK"' EXIT

# as ROLE SQL…: runs SQL as ROLE (trust authentication), errors with their SQLSTATE.
as() { local role="$1"; shift; psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -U "$role" -d "$DB" "$@"; }
dba() { as postgres -c "$1"; }
# refused LABEL ROLE SQL [SQLSTATE]: the statement must fail with that SQLSTATE (42501).
refused() {
    local out state="${4:-42501}"
    if out=$(as "$2" -c "$3" 2>&1); then
        fail "$1: succeeded as $2"
    elif grep -q "ERROR:  $state" <<<"$out"; then
        pass "$1: refused ($state)"
    else
        fail "$1: failed otherwise: $(head -2 <<<"$out")"
    fi
}
payload_runs() { dba "SELECT count(*) FROM public.payload_log WHERE attack = '$1' AND NOT was_super"; }
payload_as_super() { dba "SELECT count(*) FROM public.payload_log WHERE was_super"; }
wait_drained() {
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        [ "$(dba "SELECT NOT EXISTS (SELECT 1 FROM unify.change_queue) AND NOT EXISTS (SELECT 1 FROM unify.queue_work)")" = t ] && return 0
        sleep 0.1
    done
    return 1
}

log "security: roles, a small CRM, payloads"
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
crmgen --rows 300 --seed 23 --schema crm | as postgres >/dev/null
as postgres >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION customer_unify;
DO $$ BEGIN
    DROP ROLE IF EXISTS mallory; DROP ROLE IF EXISTS tom; DROP ROLE IF EXISTS eve; DROP ROLE IF EXISTS rita; DROP ROLE IF EXISTS ana;
EXCEPTION WHEN others THEN NULL; END $$;
CREATE ROLE mallory LOGIN IN ROLE unify_admin;
CREATE ROLE tom LOGIN;
CREATE ROLE eve LOGIN;
CREATE ROLE rita LOGIN IN ROLE unify_reader;
CREATE ROLE ana LOGIN IN ROLE unify_analyst;
GRANT CREATE ON SCHEMA public TO mallory, tom, eve;
CREATE TABLE public.payload_log (attack text, ran_as text, was_super boolean, at timestamptz DEFAULT now());
GRANT INSERT, SELECT ON public.payload_log TO PUBLIC;
CREATE TABLE public.dba_secrets (id int PRIMARY KEY, secret text);
INSERT INTO public.dba_secrets VALUES (1, 'TOPSECRET-4711');
-- The DBA's own sources and orders.
SET search_path = crm, public;
\i demo/sources.sql
SELECT unify.add_transactions('orders', 'crm.orders', '{"source": "channel", "source_key": "customer_ref",
  "order_date": "ordered_at", "amount": "amount", "currency": "currency", "returned": "status IN (''returned'', ''cancelled'')"}');
SQL
[ -n "$(dba "SELECT 1 FROM unify.sources WHERE name = 'shop'")" ] || die "setup failed"

# A payload: logs who runs it, tries to make mallory superuser (only a superuser could), passes
# its argument through. Created by the attacker named in the call.
payload() {  # payload ROLE FUNCTION ATTACK
    as "$1" >/dev/null <<SQL
CREATE FUNCTION public.$2(x anyelement) RETURNS text LANGUAGE plpgsql AS \$f\$
BEGIN
    INSERT INTO public.payload_log (attack, ran_as, was_super)
    SELECT '$3', current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
    RETURN x::text;
END
\$f\$;
SQL
}

log "security: unify_admin (mallory) writes configuration only through the API"
refused "rewrite a source's mapping" mallory "UPDATE unify.sources SET fields = fields || '{\"email\": \"1\"}'"
refused "register an order table by hand" mallory \
    "INSERT INTO unify.transaction_sources (name, relation, relation_name, fields, run_as) VALUES ('x', 'crm.orders', 'x', '{}', 'postgres')"
refused "delete an erasure tombstone" mallory "DELETE FROM unify.erasures"
refused "rewrite the audit trail" mallory "UPDATE unify.identity_events SET reason = 'nothing happened'"
refused "truncate the records" mallory "TRUNCATE unify.records"
refused "move a record to another person" mallory "UPDATE unify.record_persons SET person_id = person_id + 1"
refused "read the erasure secret" mallory "SELECT * FROM unify._secret"
refused "run SQL text through _run_kept" mallory "SELECT unify._run_kept('ALTER ROLE mallory SUPERUSER', 1, NULL)"
refused "run SQL text through _rebuild_indexes" mallory "SELECT unify._rebuild_indexes(ARRAY['ALTER ROLE mallory SUPERUSER'])"
refused "run SQL text as the DBA through _run_as" mallory "SELECT unify._run_as('postgres'::regrole, 'ALTER ROLE mallory SUPERUSER', NULL)"
refused "drop the extension's indexes" mallory "SELECT unify._drop_indexes('unify.records')"
refused "apply a forged source row" mallory "SELECT unify._apply(s, NULL) FROM unify.sources s LIMIT 1"
refused "create a function in schema unify" mallory "CREATE FUNCTION unify.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'"
refused "unpin a function's search_path" mallory "ALTER FUNCTION unify.sync(text) RESET search_path"
refused "register a table it cannot read" mallory \
    "SELECT unify.add_source('secrets', 'public.dba_secrets', 'id', '{\"first_name\": \"secret\"}')"
as mallory -c "CREATE TABLE public.mallory_people (id int PRIMARY KEY, name text, email text)"
refused "a mapping reading a table it cannot read" mallory \
    "SELECT unify.add_source('peek', 'public.mallory_people', 'id', '{\"first_name\": \"(SELECT s.secret FROM public.dba_secrets s LIMIT 1)\"}')" 22023

log "security: mappings run as the role that registered them (sync, queue, worker, segments, erasure)"
payload mallory pwn_mapping mapping
as mallory >/dev/null <<'SQL'
INSERT INTO public.mallory_people VALUES (1, 'Max Mustermann', 'max.mustermann@example.org'), (2, 'Erika Mustermann', 'erika@example.org');
CREATE TABLE public.mallory_orders (id int PRIMARY KEY, customer_id int, day date, amount numeric);
INSERT INTO public.mallory_orders VALUES (1, 1, current_date - 10, 20), (2, 1, current_date - 40, 30), (3, 2, current_date - 5, 10);
SET client_min_messages = warning;
SELECT unify.add_source('mallory', 'public.mallory_people', 'id', '{"full_name": "name", "email": "public.pwn_mapping(email)"}');
SELECT unify.add_transactions('mallory_orders', 'public.mallory_orders',
    '{"source": "mallory", "source_key": "public.pwn_mapping(customer_id)", "order_date": "day", "amount": "amount"}');
-- Past add_source's checks: a mapping that reads the DBA's secret, registered directly.
SELECT unify._register_source('sneaky', 'public.mallory_people'::regclass, 'public.mallory_people', 'id',
    '{"first_name": "(SELECT s.secret FROM public.dba_secrets s LIMIT 1)", "email": "email"}', 100, false);
SQL
expect "the sources record who registered them" \
    "$(dba "SELECT string_agg(name || '=' || run_as::text, ',' ORDER BY name) FROM unify.sources WHERE name IN ('mallory', 'sneaky', 'shop')")" \
    "mallory=mallory,shop=postgres,sneaky=mallory"
# The DBA runs everything, as a scheduled job would.
dba "SET client_min_messages = error; SELECT count(*) FROM unify.sync()" >/dev/null
expect "sync by the DBA ran mallory's mapping as mallory" "$([ "$(payload_runs mapping)" -gt 0 ] && echo yes)" yes
expect "the sync of all sources reported the sneaky source's failure and went on" \
    "$(dba "SET client_min_messages = error; SELECT string_agg(source_name || ':' || (error IS NULL), ',' ORDER BY source_name) FROM unify.sync() WHERE source_name IN ('sneaky', 'shop', 'mallory')")" \
    "mallory:true,shop:true,sneaky:false"
dba "SET client_min_messages = error; SELECT unify.train(); SELECT unify.score_pairs(); SELECT unify.resolve()" >/dev/null
before=$(payload_runs mapping)
as mallory -c "UPDATE public.mallory_people SET name = 'Max Mustermann-Neu' WHERE id = 1; INSERT INTO public.mallory_people VALUES (3, 'Maria Muster', 'maria@example.org')"
wait_drained && pass "the worker drained mallory's changes" || fail "the worker did not drain the queue"
expect "the worker (bootstrap superuser) ran the mapping as mallory" "$([ "$(payload_runs mapping)" -gt "$before" ] && echo yes)" yes
before=$(payload_runs mapping)
dba "SET client_min_messages = error; SELECT unify.refresh_segments(); SELECT unify.fit_predictions()" >/dev/null
expect "refresh_segments / fit_predictions by the DBA ran the order mapping as mallory" "$([ "$(payload_runs mapping)" -gt "$before" ] && echo yes)" yes
# Line items (issue 26): the DBA's refresh_recommendations runs mallory's product mapping as her.
as mallory >/dev/null <<'SQL'
CREATE TABLE public.mallory_lines (id int PRIMARY KEY, customer_id int, day date, sku text, amount numeric);
INSERT INTO public.mallory_lines VALUES (1, 1, current_date - 10, 'A', 5), (2, 1, current_date - 10, 'B', 5), (3, 2, current_date - 5, 'A', 5);
SET client_min_messages = warning;
SELECT unify.add_transactions('mallory_lines', 'public.mallory_lines',
    '{"source": "mallory", "source_key": "customer_id", "order_date": "day", "amount": "amount", "product_id": "public.pwn_mapping(sku)"}');
SQL
before=$(payload_runs mapping)
dba "SET client_min_messages = error; SELECT unify.refresh_recommendations()" >/dev/null
expect "refresh_recommendations by the DBA ran the line-item mapping as mallory" "$([ "$(payload_runs mapping)" -gt "$before" ] && echo yes)" yes
expect "mallory marks a product as no longer for sale" "$(as mallory -c "UPDATE unify.products SET for_sale = false WHERE product_id = 'B' RETURNING product_id")" B
refused "mallory rewrites the products' buyer counts" mallory "UPDATE unify.products SET buyers = 0"
refused "mallory writes the co-purchase model" mallory "DELETE FROM unify.product_neighbours"
as mallory -c "SET client_min_messages = warning; SELECT unify.remove_transactions('mallory_lines')" >/dev/null
dba "SELECT unify.erase_person((SELECT person_id FROM unify.records r JOIN unify.record_persons USING (record_id) JOIN unify.sources s USING (source_id) WHERE s.name = 'mallory' AND r.source_key = '2'), 'test', true)" >/dev/null
expect "erase_person deleted the source row as mallory (her table, her rights)" \
    "$(dba "SELECT count(*) FROM public.mallory_people WHERE id = 2")" 0
expect "the DBA's secret is in no table of the extension" \
    "$(dba "SELECT count(*) FROM unify.records WHERE raw::text LIKE '%TOPSECRET%' OR first_name ILIKE '%topsecret%'")" 0
expect "the sneaky source's failure names it and the missing privilege" \
    "$(dba "SET client_min_messages = error; SELECT error LIKE '%sneaky%permission denied%' FROM unify.sync() WHERE source_name = 'sneaky'")" t

log "security: unify_admin works through the API (the commands run as the extension owner)"
expect "mallory syncs her source" "$(as mallory -c "SET client_min_messages = error; SELECT inserted + updated + deleted >= 0 FROM unify.sync('mallory')")" t
expect "mallory processes the queue, resolves, segments" \
    "$(as mallory -c "SET client_min_messages = error; SELECT unify.process_queue() >= 0; SELECT persons > 0 FROM unify.resolve(); SELECT (unify.refresh_segments() ->> 'persons')::int >= 0" | tr '\n' ' ')" "t t t "
expect "mallory links two records as a steward, her name in the audit trail" \
    "$(as mallory -c "SELECT unify.link(a.record_id, b.record_id, 'same customer') IS NOT NULL FROM unify.records a, unify.records b WHERE a.source_key = '1' AND b.source_key = '3' AND a.source_id = b.source_id AND a.source_id = (SELECT source_id FROM unify.sources WHERE name = 'mallory'); SELECT actor FROM unify.identity_events WHERE event = 'link' ORDER BY event_id DESC LIMIT 1" | tr '\n' ' ')" "t mallory "
expect "mallory edits the exchange rates directly" "$(as mallory -c "INSERT INTO unify.exchange_rates (currency, rate) VALUES ('CHF', 1.05) RETURNING currency")" CHF
expect "mallory reads the status" "$([ "$(as mallory -c "SELECT count(*) FROM unify.status")" -gt 0 ] && echo yes)" yes

log "security: user code cannot switch back to the superuser inside a mapping"
as mallory >/dev/null <<'SQL'
CREATE FUNCTION public.switch_role(x anyelement) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('role', 'postgres', false);
    EXECUTE 'ALTER ROLE mallory SUPERUSER';
    RETURN x::text;
END
$f$;
CREATE FUNCTION public.leave_setting(x anyelement) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
    RETURN x::text;
END
$f$;
CREATE TABLE public.mallory_more (id int PRIMARY KEY, name text);
INSERT INTO public.mallory_more VALUES (1, 'Otto Normal');
SET client_min_messages = warning;
SELECT unify.add_source('switcher', 'public.mallory_more', 'id', '{"full_name": "public.switch_role(name)"}', track_changes => false);
SELECT unify.add_source('setter', 'public.mallory_more', 'id', '{"full_name": "public.leave_setting(name)"}', track_changes => false);
SQL
out=$(as postgres -c "SELECT * FROM unify.sync('switcher')" 2>&1 || true)
grep -q "cannot set parameter \"role\" within security-restricted operation\|permission denied to set parameter \"role\"\|cannot set parameter \"role\"" <<<"$out" \
    && pass "SET ROLE inside a mapping is refused" || fail "SET ROLE inside a mapping: $(head -2 <<<"$out")"
expect "a setting a mapping changes does not outlive it" \
    "$(dba "SET client_min_messages = error; SELECT count(*) FROM unify.sync('setter'); SHOW search_path" | tail -1)" '"$user", public'

log "security: objects an admin makes first in her own session are never used by the commands"
# The staging tables live in pg_temp; made first by mallory with a trigger of hers, the commands
# (running as the extension owner) would fire it as the owner.
as mallory >/dev/null <<'SQL'
CREATE FUNCTION public.stage_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.payload_log (attack, ran_as, was_super)
    SELECT 'temp_trigger', current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    IF (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        EXECUTE 'ALTER ROLE mallory SUPERUSER';
    END IF;
    RETURN NULL;
END $f$;
SQL
out=$(as mallory 2>&1 <<'SQL'
SET client_min_messages = error;
CREATE TEMP TABLE unify_source_rows (source_key text, first_name text, last_name text, full_name text, email text, phone text,
    mobile text, street text, house_number text, street_line text, postcode text, city text, country text, birth_date text,
    company text, customer_number text, external_id text, consent_email boolean, consent_phone boolean, consent_post boolean,
    updated_at timestamptz);
CREATE TEMP TABLE unify_source_keys (source_key text);
CREATE TRIGGER t1 BEFORE TRUNCATE ON pg_temp.unify_source_keys FOR EACH STATEMENT EXECUTE FUNCTION public.stage_trigger();
CREATE TRIGGER t2 BEFORE DELETE ON pg_temp.unify_source_keys FOR EACH STATEMENT EXECUTE FUNCTION public.stage_trigger();
CREATE TRIGGER t3 BEFORE INSERT OR DELETE ON pg_temp.unify_source_rows FOR EACH STATEMENT EXECUTE FUNCTION public.stage_trigger();
CREATE TRIGGER t4 BEFORE TRUNCATE ON pg_temp.unify_source_rows FOR EACH STATEMENT EXECUTE FUNCTION public.stage_trigger();
CREATE TEMP TABLE unify_orders_1 (order_key text, order_date date, amount numeric, currency text, source_name text, source_key text, customer_number text);
CREATE TRIGGER t5 BEFORE TRUNCATE OR INSERT ON pg_temp.unify_orders_1 FOR EACH STATEMENT EXECUTE FUNCTION public.stage_trigger();
UPDATE public.mallory_people SET name = 'Max Mustermann-Zwei' WHERE id = 1;
SELECT source_name FROM unify.sync('mallory');
SELECT unify.process_queue();
SELECT unify.refresh_segments() IS NOT NULL;
SELECT unify.fit_predictions() IS NOT NULL;
SQL
) || true
expect "sync, process_queue, refresh_segments, fit_predictions ran in that session" "$(grep -c '^t$\|^mallory$\|^[0-9]*$' <<<"$out" | awk '{print ($1 >= 4) ? "yes" : "no"}')" yes
expect "the admin's look-alike staging tables never fired as the owner" "$(dba "SELECT count(*) FROM public.payload_log WHERE attack = 'temp_trigger' AND was_super")" 0

log "security: eve's planted functions and operators in public are never called by the extension"
as eve >/dev/null <<'SQL'
CREATE FUNCTION public.to_char(date, text) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.payload_log (attack, ran_as, was_super)
    SELECT 'search_path', current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    RETURN pg_catalog.to_char($1::timestamp, $2);
END $f$;
CREATE FUNCTION public.cardinality(bigint[]) RETURNS int LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.payload_log (attack, ran_as, was_super)
    SELECT 'search_path', current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    RETURN pg_catalog.cardinality($1::anyarray);
END $f$;
CREATE FUNCTION public.real_by_int(real, int) RETURNS real LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.payload_log (attack, ran_as, was_super)
    SELECT 'search_path', current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    RETURN $1::float8 / $2;
END $f$;
CREATE OPERATOR public./ (LEFTARG = real, RIGHTARG = int, FUNCTION = public.real_by_int);
CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO public.payload_log (attack, ran_as, was_super)
    SELECT 'search_path', current_user, r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user;
    RETURN pg_catalog.lower($1::text);
END $f$;
-- The plants work where nothing is pinned: eve's own call of to_char(date, text) takes hers.
SELECT to_char(current_date, 'YYYY'), cardinality(ARRAY[1::bigint]), 1::real / 2;
SQL
expect "the planted functions are picked up by an unpinned call" "$([ "$(payload_runs search_path)" -ge 3 ] && echo yes)" yes
dba "DELETE FROM public.payload_log WHERE attack = 'search_path'"
# The DBA works with the default search_path ("\$user", public): the whole pipeline.
as postgres >/dev/null 2>&1 <<'SQL'
SET client_min_messages = error;
SELECT count(*) FROM unify.sync();
SELECT unify.train(); SELECT unify.score_pairs(); SELECT unify.resolve();
UPDATE crm.crm_contacts SET nachname = nachname || '-Neu' WHERE kontakt_nr IN (SELECT kontakt_nr FROM crm.crm_contacts ORDER BY kontakt_nr LIMIT 5);
SELECT unify.process_queue();
SELECT unify.link(1, 2, 'same person'); SELECT unify.unlink(1, 2, 'not the same');
SELECT unify.unmerge((SELECT person_id FROM unify.persons WHERE record_count > 1 ORDER BY person_id LIMIT 1), 'check');
SELECT unify.refresh_segments(); SELECT unify.fit_predictions();
SELECT * FROM unify.status; SELECT * FROM unify.customer_360 LIMIT 5; SELECT * FROM unify.match_report;
SELECT unify.explain_match(1, 2); SELECT * FROM unify.person_history(1); SELECT * FROM unify.person_records(1);
SELECT unify.erase_person((SELECT max(person_id) FROM unify.persons), 'test');
SQL
wait_drained || true
expect "no planted function ran in the DBA's pipeline or the worker" "$(dba "SELECT count(*) FROM public.payload_log WHERE attack = 'search_path'")" 0

log "security: tom, owner of a tracked table, gets nothing from the capture trigger or the mapping"
payload tom pwn_tom tom_cast
as tom >/dev/null <<'SQL'
CREATE TABLE public.tom_customers (id text PRIMARY KEY, name text, email text);
INSERT INTO public.tom_customers VALUES ('k1', 'Tom Tailor', 'tom@example.org'), ('k2', 'Tina Tailor', 'tina@example.org');
CREATE TYPE public.tomkey AS ENUM ('k1', 'k2', 'k3', 'k4');
CREATE FUNCTION public.tomkey_text(k public.tomkey) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM public.pwn_tom(1);
    RETURN pg_catalog.format('%s', k);
END $f$;
CREATE CAST (public.tomkey AS text) WITH FUNCTION public.tomkey_text(public.tomkey);
SQL
out=$(as postgres -c "SELECT unify.add_source('tom', 'public.tom_customers', 'id', '{\"full_name\": \"name\", \"email\": \"email\"}')" 2>&1)
grep -q "its mapping will run as tom" <<<"$out" && pass "the DBA registering tom's table: the mapping runs as tom" || fail "register tom's table: $out"
dba "SET client_min_messages = error; SELECT count(*) FROM unify.sync('tom')" >/dev/null
as tom -c "ALTER TABLE public.tom_customers ALTER COLUMN id TYPE public.tomkey USING id::public.tomkey"
as tom -c "INSERT INTO public.tom_customers VALUES ('k3', 'Theo Tailor', 'theo@example.org')"
wait_drained && pass "the worker applied tom's new row after the type change" || fail "tom's change not drained"
expect "tom's key cast ran (so the path was exercised)" "$([ "$(payload_runs tom_cast)" -gt 0 ] && echo yes)" yes
expect "tom's cast ran only as unify_capture or tom" \
    "$(dba "SELECT string_agg(DISTINCT ran_as, ',' ORDER BY ran_as) FROM public.payload_log WHERE attack = 'tom_cast'")" "tom,unify_capture"
expect "tom's new row reached unify.records" "$(dba "SELECT count(*) FROM unify.records r JOIN unify.sources s USING (source_id) WHERE s.name = 'tom' AND r.source_key = 'k3'")" 1
refused "tom runs the extension's commands" tom "SELECT * FROM unify.sync('tom')"
expect "unify_capture may only insert into the change queues (sources and event tables)" \
    "$(dba "SELECT string_agg(c.relname || ':' || p.privilege_type, ',' ORDER BY c.relname) FROM pg_class c, LATERAL aclexplode(c.relacl) p
            WHERE c.relnamespace = 'unify'::regnamespace AND p.grantee = 'unify_capture'::regrole")" "change_queue:INSERT,event_queue:INSERT"

log "security: a table handed to another owner after a superuser registered it is read as its owner"
as postgres >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE TABLE public.handoff (id int PRIMARY KEY, name text);
INSERT INTO public.handoff VALUES (1, 'Hanna Handoff');
SELECT unify.add_source('handoff', 'public.handoff', 'id', '{"full_name": "name"}');
SELECT count(*) FROM unify.sync('handoff');
ALTER TABLE public.handoff OWNER TO tom;
SQL
payload tom pwn_handoff handoff
as tom >/dev/null <<'SQL'
CREATE TYPE public.tcomp AS (v text);
CREATE FUNCTION public.tcomp_text(x public.tcomp) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM public.pwn_handoff(1);
    RETURN x.v;
END $f$;
CREATE CAST (public.tcomp AS text) WITH FUNCTION public.tcomp_text(public.tcomp);
ALTER TABLE public.handoff ALTER COLUMN name TYPE public.tcomp USING ROW(name)::public.tcomp;
INSERT INTO public.handoff VALUES (2, ROW('Hans Handoff'));
SQL
wait_drained && pass "the worker applied the handed-off table's new row" || fail "the handed-off table's change not drained"
expect "the new owner's cast ran (the path was exercised)" "$([ "$(payload_runs handoff)" -gt 0 ] && echo yes)" yes
expect "the new owner's cast never ran as a superuser" "$(dba "SELECT count(*) FROM public.payload_log WHERE attack = 'handoff' AND was_super")" 0

log "security: another order table's mapping cannot add orders to a stage"
as tom >/dev/null <<'SQL'
CREATE TABLE public.tom_orders_t (id int PRIMARY KEY, cust text, day date, amount numeric);
INSERT INTO public.tom_orders_t VALUES (1, 'T1', current_date - 3, 10);
-- Tries every orders stage of the session.
CREATE FUNCTION public.tom_amount(a numeric) RETURNS numeric LANGUAGE plpgsql AS $f$
DECLARE stage regclass;
BEGIN
    FOR stage IN SELECT c.oid::regclass FROM pg_catalog.pg_class c WHERE c.relname LIKE 'unify\_orders\_%' AND c.relpersistence = 't' LOOP
        BEGIN
            EXECUTE pg_catalog.format('INSERT INTO %s VALUES (''forged'', current_date - 1, 987654, ''EUR'', ''shop'', %L, NULL)',
                                      stage, (SELECT pg_catalog.min(customer_ref) FROM crm.orders WHERE channel = 'shop'));
            -- Which stage took it (its own table's stage may: those are its own orders).
            INSERT INTO public.payload_log (attack, ran_as, was_super) VALUES ('forged_order', stage::text, false);
        EXCEPTION WHEN insufficient_privilege THEN NULL;
        END;
    END LOOP;
    RETURN a;
END $f$;
CREATE VIEW public.tom_orders AS SELECT id, cust, day, public.tom_amount(amount) AS amount FROM public.tom_orders_t;
SQL
dba "GRANT USAGE ON SCHEMA crm TO tom; GRANT SELECT ON crm.orders TO tom" >/dev/null
dba "SET client_min_messages = warning; SELECT unify.add_transactions('tom_orders', 'public.tom_orders', '{\"customer_number\": \"cust\", \"order_date\": \"day\", \"amount\": \"amount\"}')" >/dev/null
dba "SET client_min_messages = error; SELECT unify.refresh_segments()" >/dev/null
expect "its mapping wrote only into its own table's stage" \
    "$(dba "SELECT count(*) FILTER (WHERE substring(ran_as from 'unify_orders_([0-9]+)_')::int = t.transaction_source_id) || '/' || count(*)
            FROM public.payload_log, unify.transaction_sources t WHERE attack = 'forged_order' AND t.name = 'tom_orders'")" "1/1"
expect "no person got the forged spend" "$(dba "SELECT count(*) FROM unify.segments WHERE monetary >= 987654")" 0

log "security: type and domain changes on a tracked table never fail a write"
as tom >/dev/null <<'SQL'
CREATE DOMAIN public.tomid AS int;
CREATE TABLE public.tom_people (id public.tomid PRIMARY KEY, name text);
CREATE TYPE public.tperson AS (id int, name text);
CREATE TABLE public.tom_typed OF public.tperson (PRIMARY KEY (id));
SQL
dba "SET client_min_messages = warning; SELECT unify.add_source('tomp', 'public.tom_people', 'id', '{\"full_name\": \"name\"}'); SELECT unify.add_source('tomtyped', 'public.tom_typed', 'id', '{\"full_name\": \"name\"}')" >/dev/null
as tom -c "INSERT INTO public.tom_people VALUES (1, 'Paula Domain'); INSERT INTO public.tom_typed VALUES (1, 'Tilo Typed')"
out=$(as tom -c "SET client_min_messages = warning; DROP DOMAIN public.tomid CASCADE; INSERT INTO public.tom_people (name) VALUES ('Nach Drop') RETURNING 'inserted'" 2>&1 || true)
expect "after DROP DOMAIN … CASCADE took the key column, writes go on" "$(tail -1 <<<"$out")" inserted
out=$(as tom -c "SET client_min_messages = warning; ALTER TYPE public.tperson RENAME ATTRIBUTE id TO ident CASCADE; INSERT INTO public.tom_typed VALUES (2, 'Tina Typed') RETURNING 'inserted'" 2>&1 || true)
expect "after ALTER TYPE … RENAME ATTRIBUTE CASCADE renamed the key, writes go on" "$(tail -1 <<<"$out")" inserted

log "security: PUBLIC, readers and analysts"
refused "PUBLIC runs an internal fit" eve "SELECT unify._fit_purchases('bgnbd', '{1}', '{1}', '{1}', '{1}')"
refused "PUBLIC reads the records" eve "SELECT count(*) FROM unify.records"
refused "PUBLIC reads which record is whose" eve "SELECT count(*) FROM unify.record_persons"
refused "PUBLIC reads customer_360" eve "SELECT count(*) FROM unify.customer_360"
refused "PUBLIC rewrites the golden-record input hashes" eve "DELETE FROM unify.golden_inputs"
refused "the reader reads the golden-record input hashes" rita "SELECT count(*) FROM unify.golden_inputs"
expect "PUBLIC uses the cleaners" "$(as eve -c "SELECT unify.normalize_email(' Max@Example.ORG ')")" "max@example.org"
expect "PUBLIC uses the 0.2.0 display cleaners" "$(as eve -c "SELECT unify.letter_salutation(unify.normalize_salutation('Hr.'), unify.normalize_title('dr.'), 'Jan', unify.display_name('SCHULZ'))")" "Sehr geehrter Herr Dr. Schulz"
refused "PUBLIC runs the internal training-report reader" eve "SELECT * FROM unify._train_sessions('{}')"
expect "the reader sees customer_360" "$([ "$(as rita -c "SELECT count(*) FROM unify.customer_360")" -gt 0 ] && echo yes)" yes
refused "the reader writes a golden record" rita "UPDATE unify.persons SET first_name = 'x'"
# identify (issue 26): the reader (a till, a call-centre screen) looks a customer up without
# reading the records; PUBLIC and the pseudonymous analyst get no direct identifier through it.
probe="SELECT count(*) FROM unify.identify('$(dba "SELECT jsonb_build_object('email', upper(email)) FROM unify.records WHERE email IS NOT NULL ORDER BY record_id LIMIT 1")')"
expect "the reader identifies a customer by e-mail" "$([ "$(as rita -c "$probe")" -gt 0 ] && echo yes)" yes
refused "PUBLIC identifies a customer" eve "SELECT * FROM unify.identify('{\"email\": \"max@example.org\"}')"
refused "the analyst identifies a customer" ana "SELECT * FROM unify.identify('{\"email\": \"max@example.org\"}')"
refused "the reader runs the probe's statement builder" rita "SELECT unify._probe_query()"
refused "the analyst reads customer_360" ana "SELECT count(*) FROM unify.customer_360"
refused "the analyst reads the records" ana "SELECT count(*) FROM unify.records"
refused "the analyst reads which record is whose" ana "SELECT count(*) FROM unify.record_persons"
refused "the reader reads which record is whose" rita "SELECT count(*) FROM unify.record_persons"
refused "PUBLIC asks for recommendations" eve "SELECT * FROM unify.recommendations(1)"
refused "PUBLIC refreshes the recommendations" eve "SELECT unify.refresh_recommendations()"
refused "the analyst reads what each person bought" ana "SELECT count(*) FROM unify.person_products"
refused "the analyst refreshes the recommendations" ana "SELECT unify.refresh_recommendations()"
expect "the analyst asks for a person's recommendations" \
    "$(as ana -c "SELECT count(*) >= 0 FROM unify.analyst_persons a CROSS JOIN LATERAL unify.recommendations(a.person_id, 3) r")" t
expect "the reader asks for a segment's recommendations" "$(as rita -c "SELECT count(*) >= 0 FROM unify.segment_recommendations('Champions', 3)")" t
expect "the analyst sees persons with segments" "$([ "$(as ana -c "SELECT count(*) FROM unify.analyst_persons")" -gt 0 ] && echo yes)" yes
expect "the analyst's view has no direct identifier" \
    "$(dba "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'unify' AND table_name = 'analyst_persons'
            AND column_name IN ('first_name', 'last_name', 'email', 'phone', 'mobile', 'street', 'house_number', 'postcode', 'city', 'birth_date', 'customer_number', 'company')")" 0
expect "the analyst's view: postcode area of two digits, birth year only" \
    "$(dba "SELECT bool_and(coalesce(length(postcode_area), 2) <= 2) AND bool_and(coalesce(birth_year, 2000) BETWEEN 1880 AND 2030) FROM unify.analyst_persons")" t

refused "PUBLIC lists an audience" eve "SELECT count(*) FROM unify.audience('Champions', 'email')"
refused "PUBLIC lists a Google audience" eve "SELECT count(*) FROM unify.audience_google('Champions')"
refused "the analyst lists a hashed audience" ana "SELECT count(*) FROM unify.audience('Champions', 'meta')"
refused "the analyst lists a Meta audience" ana "SELECT count(*) FROM unify.audience_meta('Champions')"
expect "the reader's e-mail audience is the segment's persons with e-mail consent" \
    "$(as rita -c "SELECT (SELECT count(*) FROM unify.audience(s.segment, 'email')) = (SELECT count(*) FROM unify.customer_360 c WHERE c.segment = s.segment AND c.consent_email AND c.email IS NOT NULL) FROM (SELECT segment FROM unify.segments GROUP BY 1 ORDER BY count(*) DESC LIMIT 1) s")" t
expect "PUBLIC hashes its own values the platforms' way" "$(as eve -c "SELECT unify.meta_hash_email('John_Smith@gmail.com')")" \
    62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f
log "security: the outbox: consumers read and acknowledge, nobody forges or rewrites events"
dba "SELECT unify.create_outbox_consumer('sec_tool', from_start => true)" >/dev/null
refused "PUBLIC reads the outbox" eve "SELECT * FROM unify.read_outbox('sec_tool')"
refused "PUBLIC acknowledges for a consumer" eve "SELECT unify.ack_outbox('sec_tool', 1)"
refused "PUBLIC reads the outbox table" eve "SELECT count(*) FROM unify.outbox"
refused "the analyst reads the outbox" ana "SELECT * FROM unify.read_outbox('sec_tool')"
refused "the analyst reads the outbox table" ana "SELECT count(*) FROM unify.outbox"
refused "the reader registers a consumer" rita "SELECT unify.create_outbox_consumer('rita_tool')"
refused "the reader purges the outbox" rita "SELECT unify.purge_outbox()"
refused "the reader forges an event" rita "SELECT unify._outbox_emit('person_erased', ARRAY[1]::bigint[], ARRAY['{}'::jsonb])"
refused "the admin forges an event" mallory "SELECT unify._outbox_emit('person_erased', ARRAY[1]::bigint[], ARRAY['{}'::jsonb])"
refused "the admin inserts an event" mallory "INSERT INTO unify.outbox (kind, person_id) VALUES ('person_erased', 1)"
refused "the admin rewinds a consumer's cursor" mallory "UPDATE unify.outbox_consumers SET acked_id = 0"
refused "the admin deletes events past the slowest consumer" mallory "DELETE FROM unify.outbox"
# The reader's connector reads what the resolve and the segments above emitted, and acknowledges.
out=$(as rita -c "SELECT count(*) > 0 FROM unify.read_outbox('sec_tool', 1000)")
expect "the reader reads the outbox" "$out" t
out=$(as rita -c "SELECT unify.ack_outbox('sec_tool', (SELECT max(event_id) FROM unify.read_outbox('sec_tool', 1000))) > 0")
expect "the reader acknowledges" "$out" t
expect "events name no person's values" \
    "$(dba "SELECT count(*) FROM unify.outbox e, unify.persons p WHERE e.payload::text LIKE '%' || p.email || '%' OR (length(p.last_name) >= 5 AND e.payload::text LIKE '%' || p.last_name || '%')")" 0
dba "SELECT unify.drop_outbox_consumer('sec_tool')" >/dev/null

log "security: behavioural events: only the admin registers them, the mapping runs as its registrar"
as mallory >/dev/null <<'SQL'
CREATE TABLE public.mallory_web (id int PRIMARY KEY, kind text, at timestamptz, cookie text, login text);
INSERT INTO public.mallory_web VALUES (1, 'page_view', now() - interval '1 hour', 'c1', NULL),
                                      (2, 'login', now(), 'c1', 'max.mustermann@example.org');
SET client_min_messages = warning;
SELECT unify.add_events('mallory_web', 'public.mallory_web',
    '{"event_id": "id", "event_type": "kind", "occurred_at": "at", "anonymous_id": "public.pwn_mapping(cookie)", "email": "login"}');
SQL
expect "the event table records who registered it" "$(dba "SELECT run_as FROM unify.event_sources WHERE name = 'mallory_web'")" mallory
before=$(payload_runs mapping)
as mallory -c "INSERT INTO public.mallory_web VALUES (3, 'add_to_cart', now(), 'c1', NULL)"
# (The first worker may take the change first, once a minute: it too runs the mapping as mallory.)
expect "the DBA's process_events runs mallory's event mapping as mallory" \
    "$(dba "SET client_min_messages = error; SELECT unify.process_events() >= 0; SELECT count(*) FROM unify.events WHERE event_key = '3'" | tr '\n' ' ')" "t 1 "
expect "... and the payload ran, not as a superuser" "$([ "$(payload_runs mapping)" -gt "$before" ] && echo yes)" yes
expect "the anonymous history is stitched to Max" \
    "$(dba "SELECT count(*) FROM unify.person_events e JOIN unify.record_persons rp ON rp.person_id = e.person_id JOIN unify.records r ON r.record_id = rp.record_id WHERE r.email = 'max.mustermann@example.org' AND e.event_key IN ('1', '3')")" 2
refused "PUBLIC registers an event table" eve "SELECT unify.add_events('eve_web', 'public.mallory_web', '{\"event_id\": \"id\", \"event_type\": \"kind\", \"occurred_at\": \"at\", \"anonymous_id\": \"cookie\"}')"
refused "the reader registers an event table" rita "SELECT unify.add_events('rita_web', 'public.mallory_web', '{\"event_id\": \"id\", \"event_type\": \"kind\", \"occurred_at\": \"at\", \"anonymous_id\": \"cookie\"}')"
refused "PUBLIC reads the captured events" eve "SELECT count(*) FROM unify.events"
refused "PUBLIC reads the events with their persons" eve "SELECT count(*) FROM unify.person_events"
refused "PUBLIC reads the stitch map" eve "SELECT count(*) FROM unify.identity_stitches"
refused "PUBLIC reads the open carts" eve "SELECT count(*) FROM unify.open_carts"
refused "PUBLIC processes events" eve "SELECT unify.process_events()"
refused "PUBLIC reports abandoned carts" eve "SELECT unify.detect_abandoned_carts()"
refused "the analyst reads the events" ana "SELECT count(*) FROM unify.person_events"
refused "the analyst reads the open carts" ana "SELECT count(*) FROM unify.open_carts"
refused "the reader reads the captured events" rita "SELECT count(*) FROM unify.events"
expect "the reader sees the open carts and the activity in customer_360" \
    "$(as rita -c "SELECT count(*) > 0 FROM unify.open_carts; SELECT count(*) > 0 FROM unify.customer_360 WHERE last_visit_at IS NOT NULL" | tr '\n' ' ')" "t t "
refused "the admin writes a captured event" mallory "INSERT INTO unify.events (event_source_id, event_key, event_type, occurred_at) VALUES (1, 'x', 'purchase', now())"
refused "the admin rewrites the stitch map" mallory "DELETE FROM unify.identity_stitches"
refused "the admin rewrites an event mapping" mallory "UPDATE unify.event_sources SET fields = fields || '{\"email\": \"1\"}'"
refused "the admin loads events through the internal loader" mallory "SELECT unify._load_events(e, NULL) FROM unify.event_sources e"
refused "the admin stitches by hand" mallory "SELECT unify._restitch(NULL)"
refused "the admin registers events as another role" mallory \
    "SELECT unify._register_events('sneaky_web', 'crm.orders'::regclass, 'crm.orders', '{\"event_id\": \"id\"}')"
refused "the admin fills the event queue" mallory "INSERT INTO unify.event_queue (event_source_id, event_key) VALUES (1, '1')"
expect "a write by a role without rights on the extension is captured (the trigger never fails it)" \
    "$(dba "GRANT INSERT ON public.mallory_web TO eve" >/dev/null; as eve -c "INSERT INTO public.mallory_web VALUES (4, 'page_view', now(), 'c2', NULL)" >/dev/null && dba "SET client_min_messages = error; SELECT unify.process_events() >= 0; SELECT count(*) FROM unify.events WHERE event_key = '4'" | tr '\n' ' ')" "t 1 "
expect "mallory reports abandoned carts" "$(as mallory -c "SELECT unify.detect_abandoned_carts(now() + interval '1 day') >= 0")" t
dba "SET client_min_messages = error; SELECT unify.remove_events('mallory_web')" >/dev/null

log "security: no role can stall the workers by holding the extension's locks"
refused "the admin locks the extension's lock rows" mallory "SELECT * FROM unify.locks FOR UPDATE"
# eve holds the advisory keys 0.1.0 locked on (1970500-1970502) while a change arrives.
as eve -c "SELECT pg_advisory_lock(1970502, 0), pg_advisory_lock(1970501, 1), pg_advisory_lock(1970501, 0),
                  pg_advisory_lock(1970500, 1), pg_sleep(60)" >/dev/null 2>&1 &
holder=$!
sleep 1
as mallory -c "UPDATE public.mallory_people SET name = 'Max Mustermann-Drei' WHERE id = 1"
wait_drained && pass "the worker drains while eve holds the old lock keys" || fail "the worker stalled behind eve's advisory locks"
expect "resolve and erase_person do not wait for eve" \
    "$(dba "SET statement_timeout = '20s'; SET client_min_messages = error; SELECT persons > 0 FROM unify.resolve()")" t
kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
dba "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'eve'" >/dev/null

log "security: nobody became superuser"
expect "no payload ever ran as a superuser" "$(payload_as_super)" 0
expect "no attacker is superuser" "$(dba "SELECT count(*) FROM pg_roles WHERE rolname IN ('mallory', 'tom', 'eve', 'rita', 'ana') AND rolsuper")" 0
grep -q "terminated by signal" "$WORK/server.log" && fail "a backend crashed (log: $WORK/server.log)" || pass "no backend crashed"

[ $FAILED = 0 ] || die "security tests failed"
log "security tests passed"
