-- The SQL surface: every object lives in schema unify; every function declares what it is.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
RESET client_min_messages;
SELECT extversion, extrelocatable, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'customer_unify';

SELECT p.oid::regprocedure AS function, l.lanname AS language,
       p.provolatile AS volatility, p.proisstrict AS strict, p.proparallel AS parallel, p.prosecdef AS definer,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'customer_unify'
ORDER BY p.oid::regprocedure::text;

-- Tables and views, and who may read them.
SELECT c.oid::regclass AS relation, c.relkind,
       has_table_privilege('public', c.oid, 'SELECT') AS public_select,
       has_table_privilege('unify_reader', c.oid, 'SELECT') AS reader_select,
       has_table_privilege('unify_admin', c.oid, 'SELECT') AS admin_select
FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'customer_unify'
ORDER BY c.oid::regclass::text;

-- Nothing of the extension outside schema unify.
SELECT count(*) AS objects_outside_unify
FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'customer_unify'
LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
WHERE d.deptype = 'e' AND coalesce(p.pronamespace, t.typnamespace, c.relnamespace) <> 'unify'::regnamespace;

-- Defaults: the region and country default to DE.
SELECT unify.normalize_phone('030 12345678') = unify.normalize_phone('030 12345678', 'DE') AS phone_default_de,
       unify.normalize_postcode('1067') = unify.normalize_postcode('1067', 'DE') AS postcode_default_de;

-- Cleaners work in parallel plans.
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT count(unify.normalize_email(email)) FROM crm.shop_customers;
RESET ALL;
-- The settings a loaded library defines without preloading (the server-start ones, databases and
-- workers, exist only when preloaded), with their defaults and how they are reloaded.
SELECT name, setting, unit, context, vartype FROM pg_settings WHERE name LIKE 'customer_unify.%' ORDER BY name;
