-- The SQL surface: every object lives in schema unify; every function declares what it is.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS customer_unify;
RESET client_min_messages;
SELECT extversion, extrelocatable, n.nspname AS schema
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'customer_unify';

SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args, pg_get_function_result(p.oid) AS returns,
       p.provolatile AS volatility, p.proisstrict AS strict, p.proparallel AS parallel
FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'customer_unify'
ORDER BY 1, 2;

-- Nothing of the extension outside schema unify.
SELECT count(*) AS objects_outside_unify
FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'customer_unify'
LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
WHERE d.deptype = 'e' AND coalesce(p.pronamespace, t.typnamespace) <> 'unify'::regnamespace;

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
