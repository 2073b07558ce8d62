-- customer_unify 0.2.0 -> 0.3.0 (ALTER EXTENSION customer_unify UPDATE). Tested by
-- tests/upgrade/run.sh, which updates a used 0.1.0 installation through 0.2.0 to 0.3.0 and
-- compares the result with a fresh 0.3.0 install (tests/upgrade/catalog.sql), then runs the
-- whole suite on it.
--
-- What changes: issue 26's touchpoints and activation (see the sections below, one per part).
\echo Use "ALTER EXTENSION customer_unify UPDATE TO '0.3.0'" to load this file. \quit

-- Issue 26, products and next best product: add_transactions maps optional line-item fields
-- (product_id, product_name, product_category, quantity); unify.products (with the DBA's
-- for_sale flag), unify.person_products, unify.product_neighbours, unify.recommendation_runs;
-- unify.refresh_recommendations, unify.recommendations, unify.segment_recommendations.
-- unify.transaction_sources keeps its columns: only the mapping's known fields grow.
CREATE OR REPLACE FUNCTION unify._transaction_expression(fields jsonb, field text) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT '(' || (fields ->> field) || ')::' ||
        CASE field WHEN 'order_date' THEN 'date' WHEN 'amount' THEN 'numeric' WHEN 'quantity' THEN 'numeric'
                   WHEN 'returned' THEN 'boolean' ELSE 'text' END
$$;

CREATE OR REPLACE FUNCTION unify.add_transactions(name text, relation regclass, fields jsonb) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    rel_kind "char";
    rel_name text;
    field text;
    unknown text[];
    new_id int;
    known constant text[] := ARRAY['source', 'source_key', 'customer_number', 'order_date', 'amount', 'currency', 'order_id', 'returned', 'product_id', 'product_name', 'product_category', 'quantity'];
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid transactions name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A name is lowercase letters, digits and underscores, starting with a letter, for example ''orders''.';
    END IF;
    IF EXISTS (SELECT 1 FROM unify.transaction_sources t WHERE t.name = add_transactions.name) THEN
        RAISE EXCEPTION 'transactions "%" already exist', name
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or unify.remove_transactions() the existing one first.';
    END IF;
    IF relation IS NULL OR fields IS NULL THEN
        RAISE EXCEPTION 'add_transactions: relation and fields must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO rel_kind, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relation;
    IF rel_kind NOT IN ('r', 'p', 'm', 'v', 'f') THEN
        RAISE EXCEPTION '% is not a table or view', rel_name USING ERRCODE = 'wrong_object_type';
    END IF;
    -- The mapping will run as the caller: who cannot read the table cannot register it.
    PERFORM unify._require_select(relation, rel_name);
    IF jsonb_typeof(fields) <> 'object' THEN
        RAISE EXCEPTION 'fields must be a JSON object mapping transaction fields to columns or expressions'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"source": "shop", "source_key": "customer_id", "order_date": "ordered_at", "amount": "total"}.';
    END IF;
    SELECT array_agg(k ORDER BY k) INTO unknown FROM jsonb_object_keys(fields) k WHERE k <> ALL (known);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown field "%" in fields', unknown[1]
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Known fields: ' || array_to_string(known, ', ') || '.';
    END IF;
    IF NOT fields ?& ARRAY['order_date', 'amount'] THEN
        RAISE EXCEPTION 'fields must map order_date and amount'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"order_date": "ordered_at", "amount": "total", …}.';
    END IF;
    IF (fields ? 'customer_number') = (fields ? 'source_key') OR (fields ? 'source') <> (fields ? 'source_key') THEN
        RAISE EXCEPTION 'fields must say whose order a row is: either source and source_key, or customer_number'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '"source" names a registered source (or is an expression giving one per row), "source_key" its key in the row; or "customer_number" matches the records'' customer_number.';
    END IF;
    -- Line items (issue 26): a row is one product of an order; its details need the product.
    IF fields ?| ARRAY['product_name', 'product_category', 'quantity'] AND NOT fields ? 'product_id' THEN
        RAISE EXCEPTION 'fields map product_name, product_category or quantity but not product_id'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Map "product_id" to the product''s code (SKU) in each row; the others describe it.';
    END IF;
    FOR field IN SELECT k FROM jsonb_object_keys(fields) k ORDER BY k LOOP
        IF jsonb_typeof(fields -> field) <> 'string' OR btrim(fields ->> field) = '' THEN
            RAISE EXCEPTION 'field "%" must map to a column name or an SQL expression as a non-empty string', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        CONTINUE WHEN field = 'source' AND EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = add_transactions.fields ->> 'source');
        BEGIN
            EXECUTE format('SELECT %s FROM %s AS src LIMIT 0', unify._transaction_expression(fields, field), relation);
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'field "%": % is not a valid expression over %', field, fields ->> field, rel_name
                USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                      HINT = CASE WHEN field = 'source'
                                  THEN 'Name a registered source (see unify.sources) or give an expression yielding source names, such as a column.'
                                  ELSE 'Map each field to a column or an SQL expression over the columns, for example "status IN (''returned'', ''cancelled'')" for returned.' END;
        END;
    END LOOP;

    -- The mapping will run as the caller (SECURITY INVOKER): recorded by the extension's code.
    new_id := unify._register_transactions(add_transactions.name, add_transactions.relation, rel_name, add_transactions.fields);
    RAISE NOTICE 'transactions "%" registered for %; segment with SELECT unify.refresh_segments()', name, rel_name;
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION unify.add_transactions(text, regclass, jsonb) IS 'Registers an order table in place: whose order (source + key or customer number), date, amount, optional currency, order id, returned flag and line item (product id, name, category, quantity)';

/* <begin connected objects> */
-- src/sql/recommend.rs:11
-- customer_unify::sql::recommend::_product_neighbours
CREATE  FUNCTION "_product_neighbours"(
	"persons" bigint[], /* Vec < i64 > */
	"products" INT[], /* Vec < i32 > */
	"weights" double precision[], /* Vec < f64 > */
	"neighbours" INT, /* i32 */
	"alpha" double precision, /* f64 */
	"damping" double precision, /* f64 */
	"shrink" double precision /* f64 */
) RETURNS TABLE (
	"product" INT,  /* i32 */
	"neighbour" INT,  /* i32 */
	"score" double precision  /* f64 */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_product_neighbours_wrapper';
/* </end connected objects> */

INSERT INTO unify.locks (name, what) VALUES ('recommendations', 'one refresh_recommendations at a time');

CREATE TABLE unify.products (
    product_id       text PRIMARY KEY,
    product_name     text,
    product_category text,
    for_sale         boolean NOT NULL DEFAULT true,
    buyers           int NOT NULL DEFAULT 0,
    recent_buyers    int NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE unify.products IS 'Products seen in the line items of the order tables (unify.refresh_recommendations); set for_sale = false for a product no longer sold';
COMMENT ON COLUMN unify.products.for_sale IS 'false: never recommended (discontinued); set by the DBA, kept by every refresh';
COMMENT ON COLUMN unify.products.buyers IS 'Persons who bought it in the last refresh''s window (lookback)';
COMMENT ON COLUMN unify.products.recent_buyers IS 'Persons who bought it in the last refresh''s trending window: what sells now';
SELECT pg_catalog.pg_extension_config_dump('unify.products', '');
-- What sells now, for the popular part of unify.recommendations.
CREATE INDEX products_popular ON unify.products (recent_buyers DESC, buyers DESC, product_id) WHERE for_sale AND buyers > 0;

CREATE TABLE unify.person_products (
    person_id     bigint NOT NULL REFERENCES unify.persons ON DELETE CASCADE,
    product_id    text NOT NULL,
    quantity      numeric,
    orders        int NOT NULL,
    last_purchase date NOT NULL,
    weight        float8 NOT NULL,
    PRIMARY KEY (person_id, product_id)
);
COMMENT ON TABLE unify.person_products IS 'What each person bought, over all their records (unify.refresh_recommendations)';
COMMENT ON COLUMN unify.person_products.weight IS 'Weight of the product in the person''s recommendations: 0.5^(days from it to the person''s last purchase / half_life)';
SELECT pg_catalog.pg_extension_config_dump('unify.person_products', '');

CREATE TABLE unify.product_neighbours (
    product_id   text NOT NULL,
    neighbour_id text NOT NULL,
    score        float8 NOT NULL,
    PRIMARY KEY (product_id, neighbour_id)
);
COMMENT ON TABLE unify.product_neighbours IS 'Item-to-item co-purchase model: the best neighbours of each product (unify.refresh_recommendations)';
SELECT pg_catalog.pg_extension_config_dump('unify.product_neighbours', '');

CREATE TABLE unify.recommendation_runs (
    run_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    as_of      date NOT NULL,
    params     jsonb NOT NULL,
    line_items bigint NOT NULL,
    persons    bigint NOT NULL,
    products   bigint NOT NULL,
    purchases  bigint NOT NULL,
    neighbours bigint NOT NULL,
    seconds    numeric NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    top_recent_buyers int NOT NULL DEFAULT 0
);
COMMENT ON TABLE unify.recommendation_runs IS 'Each unify.refresh_recommendations: its parameters (the last run''s trending_weight is what unify.recommendations blends with) and figures';
COMMENT ON COLUMN unify.recommendation_runs.top_recent_buyers IS 'The most recent buyers any product had: unify.recommendations scales the trending term by it';
SELECT pg_catalog.pg_extension_config_dump('unify.recommendation_runs', '');
SELECT pg_catalog.pg_extension_config_dump('unify.recommendation_runs_run_id_seq', '');

-- One query over every registered order table that maps product_id: per purchased line item,
-- the person, the order date, the product and its details, and the quantity (NULL unmapped).
-- Rows marked returned are left out. Staged as in unify._orders_query: the user's expressions
-- run as the table's registering role into a temporary table no one else can write.
CREATE FUNCTION unify._order_lines_query(from_date date, to_date date) RETURNS text
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    t unify.transaction_sources;
    f jsonb;
    parts text[] := '{}';
    person_join text;
    stage text;
    mapping_role regrole;
    error_message text;
BEGIN
    FOR t IN SELECT * FROM unify.transaction_sources WHERE fields ? 'product_id' ORDER BY transaction_source_id LOOP
        f := t.fields;
        IF f ? 'customer_number' THEN
            person_join := 'LEFT JOIN (SELECT DISTINCT ON (customer_number) customer_number, person_id
                                       FROM unify.records WHERE customer_number IS NOT NULL AND person_id IS NOT NULL
                                       ORDER BY customer_number, record_id) r ON r.customer_number = t.customer_number';
        ELSIF EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = f ->> 'source') THEN
            person_join := format('LEFT JOIN unify.records r ON r.source_id = %s AND r.source_key = t.source_key',
                                  (SELECT s.source_id FROM unify.sources s WHERE s.name = f ->> 'source'));
        ELSE
            person_join := 'LEFT JOIN unify.sources s ON s.name = t.source_name
                            LEFT JOIN unify.records r ON r.source_id = s.source_id AND r.source_key = t.source_key';
        END IF;
        stage := format('unify_lines_%s_%s', t.transaction_source_id, replace(gen_random_uuid()::text, '-', ''));
        mapping_role := unify._mapping_role(t.run_as, t.relation);
        EXECUTE format('CREATE TEMP TABLE %I (order_date date, amount numeric, product_id text, product_name text,
                                              product_category text, quantity numeric,
                                              source_name text, source_key text, customer_number text) ON COMMIT DROP', stage);
        EXECUTE format('GRANT INSERT ON pg_temp.%I TO %s', stage, mapping_role);
        BEGIN
            PERFORM unify._run_as(mapping_role, format(
                'INSERT INTO pg_temp.%I SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s FROM %s AS src WHERE %s > %L::date AND %s <= %L::date%s',
                stage,
                unify._transaction_expression(f, 'order_date'), unify._transaction_expression(f, 'amount'),
                unify._transaction_expression(f, 'product_id'),
                CASE WHEN f ? 'product_name' THEN unify._transaction_expression(f, 'product_name') ELSE 'NULL::text' END,
                CASE WHEN f ? 'product_category' THEN unify._transaction_expression(f, 'product_category') ELSE 'NULL::text' END,
                CASE WHEN f ? 'quantity' THEN unify._transaction_expression(f, 'quantity') ELSE 'NULL::numeric' END,
                CASE WHEN f ? 'source' AND NOT EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = f ->> 'source')
                     THEN unify._transaction_expression(f, 'source') ELSE 'NULL::text' END,
                CASE WHEN f ? 'source_key' THEN unify._transaction_expression(f, 'source_key') ELSE 'NULL::text' END,
                CASE WHEN f ? 'customer_number' THEN unify._transaction_expression(f, 'customer_number') ELSE 'NULL::text' END,
                t.relation,
                unify._transaction_expression(f, 'order_date'), from_date,
                unify._transaction_expression(f, 'order_date'), to_date,
                CASE WHEN f ? 'returned' THEN format(' AND NOT coalesce(%s, false)', unify._transaction_expression(f, 'returned')) ELSE '' END),
                NULL);
        EXCEPTION WHEN others THEN
            GET STACKED DIAGNOSTICS error_message = MESSAGE_TEXT;
            RAISE EXCEPTION 'order table "%": its mapping failed: %', t.name, error_message
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Check the mapping (SELECT fields FROM unify.transaction_sources WHERE name = %L); it runs as role %s with search_path pg_catalog, pg_temp.', t.name, t.run_as);
        END;
        EXECUTE format('REVOKE INSERT ON pg_temp.%I FROM %s', stage, mapping_role);
        EXECUTE format('ANALYZE pg_temp.%I', stage);
        parts := parts || format('SELECT r.person_id, t.order_date, t.amount, t.product_id, t.product_name, t.product_category, t.quantity
                                  FROM pg_temp.%I t %s WHERE t.product_id IS NOT NULL', stage, person_join);
    END LOOP;
    IF cardinality(parts) = 0 THEN
        RAISE EXCEPTION 'no order table maps product_id'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register an order table with line items: SELECT unify.add_transactions(''order_lines'', ''order_lines'', ''{"source": "shop", "source_key": "customer_id", "order_date": "ordered_at", "amount": "line_total", "product_id": "sku", "quantity": "qty"}'').';
    END IF;
    RETURN array_to_string(parts, E'\nUNION ALL\n');
END
$$;

-- Rebuilds what each person bought and the co-purchase model from the line items ordered in
-- (as_of - lookback, as_of]. A person's product counts as bought when its lines net to a
-- positive quantity (or, without quantity, more lines with amount >= 0 than below): a
-- cancelled line cancels. All records of a person are one customer.
--   half_life        weight of a product in the person's own history: 0.5^(days from its last
--                    purchase to the person's last purchase / half_life); NULL: all 1
--   model_half_life  weight of a purchase in the model: 0.5^(days before as_of / model_half_life),
--                    so the neighbours follow the season; NULL: all 1
--   trending, trending_weight  recommendations add trending_weight × (buyers in the last
--                    `trending` / the most any product had) to the co-purchase score (scaled to 1)
--   neighbours, alpha, damping  the model (the Rust module recommend: k best neighbours,
--                    asymmetric cosine exponent, 1/d^damping per buyer of d products)
CREATE FUNCTION unify.refresh_recommendations(
    as_of date DEFAULT current_date, lookback interval DEFAULT interval '2 years',
    neighbours int DEFAULT 50, half_life interval DEFAULT interval '30 days',
    model_half_life interval DEFAULT interval '180 days', trending interval DEFAULT interval '30 days',
    trending_weight float8 DEFAULT 0.5, alpha float8 DEFAULT 0.5, damping float8 DEFAULT 0.5)
RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    half_life_days float8;
    model_half_life_days float8;
    n_lines bigint;
    n_persons bigint;
    n_pairs bigint;
    n_products bigint;
    n_neighbours bigint;
    run jsonb;
BEGIN
    IF as_of IS NULL OR lookback IS NULL OR neighbours IS NULL OR trending IS NULL OR trending_weight IS NULL
       OR alpha IS NULL OR damping IS NULL OR as_of = 'infinity' OR as_of = '-infinity' THEN
        RAISE EXCEPTION 'refresh_recommendations: as_of, lookback, neighbours, trending, trending_weight, alpha and damping must be given'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Only half_life and model_half_life may be NULL (no recency weighting).';
    END IF;
    IF as_of - lookback >= as_of OR as_of - trending > as_of THEN
        RAISE EXCEPTION 'lookback % and trending % must be positive intervals', lookback, trending
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example lookback interval ''2 years'', trending interval ''30 days''.';
    END IF;
    IF neighbours < 1 OR neighbours > 10000 THEN
        RAISE EXCEPTION 'neighbours must be between 1 and 10000, not %', neighbours
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default keeps 50 neighbours per product.';
    END IF;
    half_life_days := extract(epoch FROM half_life) / 86400;
    model_half_life_days := extract(epoch FROM model_half_life) / 86400;
    IF half_life_days <= 0 OR model_half_life_days <= 0 THEN
        RAISE EXCEPTION 'half_life % and model_half_life % must be positive intervals', half_life, model_half_life
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example interval ''30 days'', or NULL for no recency weighting.';
    END IF;
    IF NOT alpha BETWEEN 0 AND 1 OR NOT damping BETWEEN 0 AND 10 OR NOT trending_weight BETWEEN 0 AND 1000 THEN
        RAISE EXCEPTION 'alpha must be between 0 and 1, damping between 0 and 10, trending_weight between 0 and 1000 (alpha %, damping %, trending_weight %)',
                        alpha, damping, trending_weight
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'alpha 0.5 is the cosine; damping 0.5 weighs a buyer of d products 1/sqrt(d); trending_weight 0 recommends by co-purchase alone.';
    END IF;
    PERFORM unify._lock('recommendations');

    IF to_regclass('pg_temp.unify_order_lines') IS NOT NULL THEN DROP TABLE pg_temp.unify_order_lines; END IF;
    EXECUTE format('CREATE TEMP TABLE unify_order_lines ON COMMIT DROP AS %s',
                   unify._order_lines_query((as_of - lookback)::date, as_of));
    GET DIAGNOSTICS n_lines = ROW_COUNT;

    -- Every product seen, with its latest name and category; for_sale is the DBA's.
    INSERT INTO unify.products AS p (product_id, product_name, product_category)
    SELECT DISTINCT ON (l.product_id) l.product_id, l.product_name, l.product_category
    FROM pg_temp.unify_order_lines l
    ORDER BY l.product_id, (l.product_name IS NULL), (l.product_category IS NULL), l.order_date DESC, l.product_name, l.product_category
    ON CONFLICT (product_id) DO UPDATE
        SET product_name = coalesce(EXCLUDED.product_name, p.product_name),
            product_category = coalesce(EXCLUDED.product_category, p.product_category),
            updated_at = now()
        WHERE (p.product_name, p.product_category) IS DISTINCT FROM
              (coalesce(EXCLUDED.product_name, p.product_name), coalesce(EXCLUDED.product_category, p.product_category));

    DELETE FROM unify.person_products;
    INSERT INTO unify.person_products (person_id, product_id, quantity, orders, last_purchase, weight)
    SELECT b.person_id, b.product_id, b.quantity, b.orders, b.last_purchase,
           CASE WHEN half_life_days IS NULL THEN 1
                ELSE exp(greatest(-700, ln(0.5) * (max(b.last_purchase) OVER (PARTITION BY b.person_id) - b.last_purchase) / half_life_days)) END
    FROM (SELECT l.person_id, l.product_id, sum(l.quantity) AS quantity,
                 count(DISTINCT l.order_date) FILTER (WHERE coalesce(l.quantity > 0, l.amount >= 0)) AS orders,
                 max(l.order_date) FILTER (WHERE coalesce(l.quantity > 0, l.amount >= 0)) AS last_purchase
          FROM pg_temp.unify_order_lines l
          WHERE l.person_id IS NOT NULL
          GROUP BY l.person_id, l.product_id
          HAVING coalesce(sum(l.quantity) > 0,
                          count(*) FILTER (WHERE l.amount >= 0) > count(*) FILTER (WHERE l.amount < 0))) b
    WHERE b.last_purchase IS NOT NULL AND EXISTS (SELECT 1 FROM unify.persons p WHERE p.person_id = b.person_id);
    GET DIAGNOSTICS n_pairs = ROW_COUNT;

    UPDATE unify.products p SET buyers = coalesce(c.buyers, 0), recent_buyers = coalesce(c.recent_buyers, 0)
    FROM unify.products p2
    LEFT JOIN (SELECT pp.product_id, count(*)::int AS buyers,
                      count(*) FILTER (WHERE pp.last_purchase > as_of - trending)::int AS recent_buyers
               FROM unify.person_products pp GROUP BY pp.product_id) c
           ON c.product_id = p2.product_id
    WHERE p2.product_id = p.product_id
      AND (p.buyers, p.recent_buyers) IS DISTINCT FROM (coalesce(c.buyers, 0), coalesce(c.recent_buyers, 0));

    -- The model, over products numbered in product_id order.
    DELETE FROM unify.product_neighbours;
    WITH numbered AS (
        SELECT product_id, (row_number() OVER (ORDER BY product_id) - 1)::int AS i
        FROM (SELECT DISTINCT product_id FROM unify.person_products) d
    ), arrays AS (
        SELECT array_agg(pp.person_id ORDER BY pp.person_id, n.i) AS persons,
               array_agg(n.i ORDER BY pp.person_id, n.i) AS products,
               array_agg(CASE WHEN model_half_life_days IS NULL THEN 1
                              ELSE exp(greatest(-700, ln(0.5) * (as_of - pp.last_purchase) / model_half_life_days)) END
                         ORDER BY pp.person_id, n.i) AS weights
        FROM unify.person_products pp JOIN numbered n USING (product_id)
    )
    INSERT INTO unify.product_neighbours (product_id, neighbour_id, score)
    SELECT a.product_id, b.product_id, m.score
    FROM arrays,
         unify._product_neighbours(coalesce(arrays.persons, '{}'), coalesce(arrays.products, '{}'), coalesce(arrays.weights, '{}'),
                                   neighbours, alpha, damping, 0) m
    JOIN numbered a ON a.i = m.product
    JOIN numbered b ON b.i = m.neighbour;
    GET DIAGNOSTICS n_neighbours = ROW_COUNT;

    SELECT count(DISTINCT person_id), count(DISTINCT product_id) INTO n_persons, n_products FROM unify.person_products;
    -- Rewritten wholesale: fresh statistics for the plans of unify.recommendations.
    ANALYZE unify.products, unify.person_products, unify.product_neighbours;
    INSERT INTO unify.recommendation_runs (as_of, params, line_items, persons, products, purchases, neighbours, seconds, top_recent_buyers)
    VALUES (as_of,
            jsonb_build_object('lookback', lookback, 'neighbours', neighbours, 'half_life', half_life,
                               'model_half_life', model_half_life, 'trending', trending,
                               'trending_weight', trending_weight, 'alpha', alpha, 'damping', damping),
            n_lines, n_persons, n_products, n_pairs, n_neighbours,
            round(extract(epoch FROM clock_timestamp() - started)::numeric, 3),
            (SELECT coalesce(max(p.recent_buyers), 0) FROM unify.products p))
    RETURNING jsonb_build_object('run_id', run_id, 'line_items', line_items, 'persons', persons, 'products', products,
                                 'purchases', purchases, 'neighbours', recommendation_runs.neighbours, 'seconds', seconds)
    INTO run;
    RETURN run;
END
$$;
COMMENT ON FUNCTION unify.refresh_recommendations(date, interval, int, interval, interval, interval, float8, float8, float8) IS 'Rebuilds what each person bought and the item-to-item co-purchase model from the order tables'' line items';

-- A person's recommendations: the products co-bought with theirs (the sum of their neighbour
-- scores, each of the person's products weighted by recency, scaled so the best is 1) plus the
-- last run's trending_weight × what sells now (recent buyers, scaled so the most is 1); for a
-- person without purchases that alone. Never what they bought or what is not for sale. Equal
-- scores by buyers (most first), then product_id. Candidates: the co-purchased products and the
-- top n + (products bought) by recent buyers, which holds every product that can rank.
CREATE FUNCTION unify._recommend(person_id bigint, n int)
RETURNS TABLE (rank int, product_id text, product_name text, product_category text, score float8, basis text)
STABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    -- PL/pgSQL, not SQL: its plan is prepared once per session, not at every call.
    p_person constant bigint := person_id;
    p_n constant int := n;
BEGIN
    RETURN QUERY
        WITH history AS (
            SELECT pp.product_id, pp.weight FROM unify.person_products pp WHERE pp.person_id = p_person
        ), co_purchased AS (
            SELECT nb.neighbour_id AS product_id, sum(h.weight * nb.score) AS score
            FROM history h JOIN unify.product_neighbours nb ON nb.product_id = h.product_id
            GROUP BY nb.neighbour_id
        ), scaled AS (
            SELECT c.product_id, c.score / max(c.score) OVER () AS co FROM co_purchased c
        ), popular AS (
            SELECT p.product_id FROM unify.products p
            WHERE p.for_sale AND p.buyers > 0
            ORDER BY p.recent_buyers DESC, p.buyers DESC, p.product_id
            LIMIT p_n + (SELECT count(*) FROM history)
        ), trend AS (
            SELECT coalesce((SELECT (r.params ->> 'trending_weight')::float8 / greatest(r.top_recent_buyers, 1)
                             FROM unify.recommendation_runs r ORDER BY r.run_id DESC LIMIT 1), 0) AS per_buyer
        ), candidates AS (
            SELECT s.product_id FROM scaled s UNION SELECT pop.product_id FROM popular pop
        )
        SELECT (row_number() OVER (ORDER BY coalesce(s.co, 0) + t.per_buyer * p.recent_buyers DESC, p.buyers DESC, p.product_id))::int,
               p.product_id, p.product_name, p.product_category, coalesce(s.co, 0) + t.per_buyer * p.recent_buyers,
               CASE WHEN s.co > 0 THEN 'co-purchase' ELSE 'popular' END
        FROM candidates c CROSS JOIN trend t
        JOIN unify.products p ON p.product_id = c.product_id
        LEFT JOIN scaled s ON s.product_id = c.product_id
        WHERE p.for_sale AND NOT EXISTS (SELECT 1 FROM history h WHERE h.product_id = c.product_id)
        ORDER BY 1
        LIMIT p_n;
END
$$;

CREATE FUNCTION unify._check_recommendation_count(n int) RETURNS void
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    IF n < 1 OR n > 1000 THEN
        RAISE EXCEPTION 'n must be between 1 and 1000, not %', n
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example 10 recommendations per person.';
    END IF;
END
$$;

CREATE FUNCTION unify.recommendations(person_id bigint, n int DEFAULT 10)
RETURNS TABLE (rank int, product_id text, product_name text, product_category text, score float8, basis text)
STABLE STRICT LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._check_recommendation_count(n);
    IF NOT EXISTS (SELECT 1 FROM unify.persons p WHERE p.person_id = recommendations.person_id) THEN
        RAISE EXCEPTION 'person % does not exist', recommendations.person_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Person ids are unify.persons.person_id; a merged person''s id is in unify.person_history(id).';
    END IF;
    RETURN QUERY SELECT * FROM unify._recommend(recommendations.person_id, n);
END
$$;
COMMENT ON FUNCTION unify.recommendations(bigint, int) IS 'The next best products for a person: co-purchased with what they bought, blended with what sells now; never bought before or not for sale';

CREATE FUNCTION unify.segment_recommendations(segment text, n int DEFAULT 10)
RETURNS TABLE (person_id bigint, rank int, product_id text, product_name text, product_category text, score float8, basis text)
STABLE STRICT LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._check_recommendation_count(n);
    IF NOT EXISTS (SELECT 1 FROM unify.segment_rules m WHERE m.segment = segment_recommendations.segment)
       AND NOT EXISTS (SELECT 1 FROM unify.segments s WHERE s.segment = segment_recommendations.segment) THEN
        RAISE EXCEPTION 'segment "%" does not exist', segment
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT DISTINCT segment FROM unify.segment_rules.';
    END IF;
    RETURN QUERY
        SELECT s.person_id, r.rank, r.product_id, r.product_name, r.product_category, r.score, r.basis
        FROM unify.segments s CROSS JOIN LATERAL unify._recommend(s.person_id, n) r
        WHERE s.segment = segment_recommendations.segment
        ORDER BY s.person_id, r.rank;
END
$$;
COMMENT ON FUNCTION unify.segment_recommendations(text, int) IS 'unify.recommendations for every person of a segment (unify.segments, as of the last refresh_segments)';

-- Privileges of the new and replaced objects, as security.sql gives them: nothing for PUBLIC,
-- SELECT for unify_admin, the pinned search_path (CREATE OR REPLACE dropped it from the two
-- replaced functions; they keep their grants), then per role.
REVOKE ALL ON unify.products, unify.person_products, unify.product_neighbours, unify.recommendation_runs,
    unify.recommendation_runs_run_id_seq FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.products, unify.person_products, unify.product_neighbours, unify.recommendation_runs TO unify_admin;
REVOKE ALL ON FUNCTION unify._product_neighbours(bigint[], int[], float8[], int, float8, float8, float8),
    unify._order_lines_query(date, date),
    unify.refresh_recommendations(date, interval, int, interval, interval, interval, float8, float8, float8),
    unify._recommend(bigint, int), unify._check_recommendation_count(int),
    unify.recommendations(bigint, int), unify.segment_recommendations(text, int)
FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
ALTER FUNCTION unify._transaction_expression(jsonb, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.add_transactions(text, regclass, jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._order_lines_query(date, date) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.refresh_recommendations(date, interval, int, interval, interval, interval, float8, float8, float8) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._recommend(bigint, int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._check_recommendation_count(int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.recommendations(bigint, int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.segment_recommendations(text, int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.refresh_recommendations(date, interval, int, interval, interval, interval, float8, float8, float8) SECURITY DEFINER;
ALTER FUNCTION unify.recommendations(bigint, int) SECURITY DEFINER;
ALTER FUNCTION unify.segment_recommendations(text, int) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION unify.refresh_recommendations(date, interval, int, interval, interval, interval, float8, float8, float8) TO unify_admin;
GRANT INSERT (product_id, product_name, product_category, for_sale), UPDATE (product_name, product_category, for_sale)
ON unify.products TO unify_admin;
GRANT EXECUTE ON FUNCTION unify.recommendations(bigint, int), unify.segment_recommendations(text, int)
TO unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.products, unify.product_neighbours, unify.recommendation_runs TO unify_reader, unify_analyst;
GRANT SELECT ON unify.person_products TO unify_reader;
