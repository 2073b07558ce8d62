-- Next best product (issue 26): products from the line items of the registered order tables
-- (add_transactions' optional product_id, product_name, product_category, quantity), an
-- item-to-item co-purchase model over unified persons (the pure Rust module `recommend`), and
-- per-person recommendations from it, without what the person bought or what is not for sale.
--
-- unify.refresh_recommendations rebuilds unify.person_products (what each person bought) and
-- unify.product_neighbours (the model); unify.products keeps every product seen, with the
-- for_sale flag the DBA sets. unify.recommendations / unify.segment_recommendations read them.

INSERT INTO unify.locks (name, what) VALUES ('recommendations', 'one refresh_recommendations at a time');

CREATE TABLE unify.products (
    product_id       text PRIMARY KEY,
    product_name     text,
    product_category text,
    for_sale         boolean NOT NULL DEFAULT true,
    buyers           int NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE unify.products IS 'Products seen in the line items of the order tables (unify.refresh_recommendations); set for_sale = false for a product no longer sold';
COMMENT ON COLUMN unify.products.for_sale IS 'false: never recommended (discontinued); set by the DBA, kept by every refresh';
COMMENT ON COLUMN unify.products.buyers IS 'Persons who bought it in the last refresh''s window: the popularity that fills recommendations';
SELECT pg_catalog.pg_extension_config_dump('unify.products', '');

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
CREATE FUNCTION unify.refresh_recommendations(
    as_of date DEFAULT current_date, lookback interval DEFAULT interval '2 years',
    neighbours int DEFAULT 100, half_life interval DEFAULT interval '90 days',
    alpha float8 DEFAULT 0.5, damping float8 DEFAULT 0.5)
RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    half_life_days float8;
    n_lines bigint;
    n_persons bigint;
    n_pairs bigint;
    n_products bigint;
    n_neighbours bigint;
BEGIN
    IF as_of IS NULL OR lookback IS NULL OR neighbours IS NULL OR alpha IS NULL OR damping IS NULL
       OR as_of = 'infinity' OR as_of = '-infinity' THEN
        RAISE EXCEPTION 'refresh_recommendations: as_of, lookback, neighbours, alpha and damping must be given'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'half_life alone may be NULL (every purchase weighs the same).';
    END IF;
    IF as_of - lookback >= as_of THEN
        RAISE EXCEPTION 'lookback % is not a positive interval', lookback
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example interval ''2 years''.';
    END IF;
    IF neighbours < 1 OR neighbours > 10000 THEN
        RAISE EXCEPTION 'neighbours must be between 1 and 10000, not %', neighbours
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default keeps 100 neighbours per product.';
    END IF;
    half_life_days := extract(epoch FROM half_life) / 86400;
    IF half_life_days <= 0 THEN
        RAISE EXCEPTION 'half_life % is not a positive interval', half_life
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example interval ''90 days'', or NULL for no recency weighting.';
    END IF;
    IF NOT alpha BETWEEN 0 AND 1 OR damping < 0 OR damping = 'NaN' OR damping = 'infinity' THEN
        RAISE EXCEPTION 'alpha must be between 0 and 1 and damping 0 or more (alpha %, damping %)', alpha, damping
            USING ERRCODE = 'invalid_parameter_value', HINT = 'alpha 0.5 is the cosine; damping 0.5 weighs a buyer of d products 1/sqrt(d).';
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
                ELSE power(0.5, (max(b.last_purchase) OVER (PARTITION BY b.person_id) - b.last_purchase) / half_life_days) END
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

    UPDATE unify.products p SET buyers = coalesce(c.buyers, 0)
    FROM unify.products p2
    LEFT JOIN (SELECT pp.product_id, count(*)::int AS buyers FROM unify.person_products pp GROUP BY pp.product_id) c
           ON c.product_id = p2.product_id
    WHERE p2.product_id = p.product_id AND p.buyers IS DISTINCT FROM coalesce(c.buyers, 0);

    -- The model, over products numbered in product_id order.
    DELETE FROM unify.product_neighbours;
    WITH numbered AS (
        SELECT product_id, (row_number() OVER (ORDER BY product_id) - 1)::int AS i
        FROM (SELECT DISTINCT product_id FROM unify.person_products) d
    ), arrays AS (
        SELECT array_agg(pp.person_id ORDER BY pp.person_id, n.i) AS persons, array_agg(n.i ORDER BY pp.person_id, n.i) AS products
        FROM unify.person_products pp JOIN numbered n USING (product_id)
    )
    INSERT INTO unify.product_neighbours (product_id, neighbour_id, score)
    SELECT a.product_id, b.product_id, m.score
    FROM arrays,
         unify._product_neighbours(coalesce(arrays.persons, '{}'), coalesce(arrays.products, '{}'),
                                   neighbours, alpha, damping, 0) m
    JOIN numbered a ON a.i = m.product
    JOIN numbered b ON b.i = m.neighbour;
    GET DIAGNOSTICS n_neighbours = ROW_COUNT;

    SELECT count(DISTINCT person_id), count(DISTINCT product_id) INTO n_persons, n_products FROM unify.person_products;
    RETURN jsonb_build_object('line_items', n_lines, 'persons', n_persons, 'products', n_products,
                              'purchases', n_pairs, 'neighbours', n_neighbours,
                              'seconds', round(extract(epoch FROM clock_timestamp() - started)::numeric, 3));
END
$$;
COMMENT ON FUNCTION unify.refresh_recommendations(date, interval, int, interval, float8, float8) IS 'Rebuilds what each person bought and the item-to-item co-purchase model from the order tables'' line items';

-- A person's recommendations: the products co-bought with theirs (sum of neighbour scores,
-- each of their products weighted by recency), then the most popular; never what they bought
-- or what is not for sale. Equal scores by product_id.
CREATE FUNCTION unify._recommend(person_id bigint, n int)
RETURNS TABLE (rank int, product_id text, product_name text, product_category text, score float8, basis text)
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    WITH history AS (
        SELECT pp.product_id, pp.weight FROM unify.person_products pp WHERE pp.person_id = _recommend.person_id
    ), co_purchased AS (
        SELECT nb.neighbour_id AS product_id, sum(h.weight * nb.score) AS score, 0 AS tier
        FROM history h JOIN unify.product_neighbours nb ON nb.product_id = h.product_id
        GROUP BY nb.neighbour_id
    ), popular AS (
        SELECT p.product_id, p.buyers::float8 AS score, 1 AS tier
        FROM unify.products p
        WHERE p.for_sale AND p.buyers > 0
        ORDER BY p.buyers DESC, p.product_id
        LIMIT _recommend.n + (SELECT count(*) FROM history)
    ), candidates AS (
        SELECT DISTINCT ON (c.product_id) c.product_id, c.score, c.tier
        FROM (SELECT * FROM co_purchased UNION ALL SELECT * FROM popular) c
        ORDER BY c.product_id, c.tier
    )
    SELECT (row_number() OVER (ORDER BY c.tier, c.score DESC, c.product_id))::int,
           c.product_id, p.product_name, p.product_category, c.score,
           CASE c.tier WHEN 0 THEN 'co-purchase' ELSE 'popular' END
    FROM candidates c JOIN unify.products p ON p.product_id = c.product_id
    WHERE p.for_sale AND NOT EXISTS (SELECT 1 FROM history h WHERE h.product_id = c.product_id)
    ORDER BY c.tier, c.score DESC, c.product_id
    LIMIT _recommend.n
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
COMMENT ON FUNCTION unify.recommendations(bigint, int) IS 'The next best products for a person: co-purchased with what they bought, then popular; never bought before or not for sale';

CREATE FUNCTION unify.segment_recommendations(segment text, n int DEFAULT 10)
RETURNS TABLE (person_id bigint, rank int, product_id text, product_name text, product_category text, score float8, basis text)
STABLE STRICT LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._check_recommendation_count(n);
    IF NOT EXISTS (SELECT 1 FROM unify.segment_map m WHERE m.segment = segment_recommendations.segment)
       AND NOT EXISTS (SELECT 1 FROM unify.segments s WHERE s.segment = segment_recommendations.segment) THEN
        RAISE EXCEPTION 'segment "%" does not exist', segment
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT segment FROM unify.segment_summary.';
    END IF;
    RETURN QUERY
        SELECT s.person_id, r.rank, r.product_id, r.product_name, r.product_category, r.score, r.basis
        FROM unify.segments s CROSS JOIN LATERAL unify._recommend(s.person_id, n) r
        WHERE s.segment = segment_recommendations.segment
        ORDER BY s.person_id, r.rank;
END
$$;
COMMENT ON FUNCTION unify.segment_recommendations(text, int) IS 'unify.recommendations for every person of a segment (unify.segments, as of the last refresh_segments)';
