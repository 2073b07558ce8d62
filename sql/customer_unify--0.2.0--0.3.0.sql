-- customer_unify 0.2.0 -> 0.3.0 (ALTER EXTENSION customer_unify UPDATE). Tested by
-- tests/upgrade/run.sh, which updates a used 0.1.0 installation through 0.2.0 to 0.3.0 and
-- compares the result with a fresh 0.3.0 install (tests/upgrade/catalog.sql), then runs the
-- whole suite on it.
--
-- What changes: issue 26's touchpoints and activation (see the sections below, one per part).
\echo Use "ALTER EXTENSION customer_unify UPDATE TO '0.3.0'" to load this file. \quit

-- Issue 26, identify a person at a touchpoint: unify.identify(attributes jsonb, max_candidates
-- int) and the statement it cleans its probe with, unify._probe_query() (as in sources.sql).
-- Grants as security.sql gives them: nothing for PUBLIC, the pinned search_path, SECURITY
-- DEFINER, EXECUTE for unify_admin and unify_reader.
-- The statement unify.identify normalizes its probe with: the attributes ($1, jsonb of
-- canonical fields) staged as one text row of no source (source 0 holds no record and no
-- erasure) and cleaned by _normalized_query, the very cleaners sync makes records with, as the
-- columns matching reads (RECORD_COLUMNS in src/sql/matching/records.rs).
CREATE FUNCTION unify._probe_query() RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
SELECT format($q$
SELECT NULL::bigint AS record_id, NULL::int AS source_id, n.first_name, n.last_name, n.email, n.email_key,
       n.phone, n.mobile, n.street, n.house_number, n.postcode, n.city, n.birth_date, n.external_id, n.customer_number
FROM (%s) AS n
$q$, unify._normalized_query(0, format(
    'SELECT NULL::text AS source_key, s.*, $1::jsonb AS raw FROM pg_catalog.jsonb_to_record($1::jsonb) AS s (%s)',
    (SELECT string_agg(format('%I %s', f.field, f.stage_type), ', ') FROM unify._canonical_field_types() AS f))))
$$;

CREATE FUNCTION unify."identify"(
	"attributes" jsonb, /* JsonB */
	"max_candidates" INT DEFAULT 5 /* i32 */
) RETURNS TABLE (
	"person_id" bigint,  /* Option < i64 > */
	"match_probability" double precision,  /* f64 */
	"match_weight" double precision,  /* f64 */
	"is_match" bool,  /* bool */
	"record_id" bigint,  /* i64 */
	"explanation" jsonb  /* JsonB */
)
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'identify_wrapper';

REVOKE ALL ON FUNCTION unify._probe_query(), unify.identify(jsonb, int) FROM PUBLIC;
ALTER FUNCTION unify._probe_query() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.identify(jsonb, int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.identify(jsonb, int) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION unify.identify(jsonb, int) TO unify_admin, unify_reader;
