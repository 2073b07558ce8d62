-- The query over every registered order table, as SQL text (unify._orders_query): what
-- unify.refresh_segments and unify.fit_predictions read orders through.

-- One query over every registered order table: per order (rows sharing an order_id net out),
-- the person, the order date, the net amount in the reporting currency and whether it is a
-- purchase (nets to zero or more). Returned or
-- cancelled rows are left out; a row nobody can be found for has person_id NULL; `skipped`
-- counts rows whose currency has no rate.
--
-- With per_customer, the rows are RFM partial sums instead (person_id, last_purchase,
-- frequency, monetary, orders, skipped; several rows per person are summed by the caller):
-- the orders of a table without order_id are first summed per customer key and only those
-- sums are looked up in unify.records — 10M orders of 1M customers are 1M lookups, not 10M.
-- Orders with an order_id are netted per person first, as in the per-order query.
--
-- With with_returned (issue 26, return probability), returned or cancelled rows stay in, and
-- the per-order rows carry `returned`: true or false where the table maps `returned`, NULL
-- where it does not (an order whose rows share an order_id is returned if any row is).
--
-- The user's expressions are evaluated first, per order table, as the role that registered it
-- (unify._run_as) into a temporary table of this session; the query returned reads those.
CREATE FUNCTION unify._orders_query(from_date date, to_date date, per_customer boolean DEFAULT false,
                                    with_returned boolean DEFAULT false) RETURNS text
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    t unify.transaction_sources;
    f jsonb;
    parts text[] := '{}';
    person_join text;
    currency_join text;
    amount text;
    skipped text;
    orders_query text;
    stage text;
    mapping_role regrole;
    error_message text;
    reporting constant text := upper(coalesce(nullif(current_setting('customer_unify.currency', true), ''), 'EUR'));
    partial_sums constant text := 'max(order_date) FILTER (WHERE amount >= 0) AS last_purchase,
                                   count(*) FILTER (WHERE amount >= 0) AS frequency,
                                   sum(amount) AS monetary, count(*) AS orders, sum(skipped) AS skipped';
BEGIN
    IF per_customer AND with_returned THEN
        RAISE EXCEPTION '_orders_query: with_returned gives per-order rows only' USING ERRCODE = 'internal_error';
    END IF;
    FOR t IN SELECT * FROM unify.transaction_sources ORDER BY transaction_source_id LOOP
        f := t.fields;
        IF f ? 'customer_number' THEN
            -- Several records may carry the number; they are one person once resolved.
            person_join := 'LEFT JOIN (SELECT DISTINCT ON (x.customer_number) x.customer_number, rp.person_id
                                       FROM unify.records x JOIN unify.record_persons rp ON rp.record_id = x.record_id
                                       WHERE x.customer_number IS NOT NULL
                                       ORDER BY x.customer_number, x.record_id) r ON r.customer_number = t.customer_number';
        ELSIF EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = f ->> 'source') THEN
            person_join := format('LEFT JOIN (SELECT x.source_id, x.source_key, rp.person_id FROM unify.records x
                                             JOIN unify.record_persons rp ON rp.record_id = x.record_id) r
                                             ON r.source_id = %s AND r.source_key = t.source_key',
                                  (SELECT s.source_id FROM unify.sources s WHERE s.name = f ->> 'source'));
        ELSE
            person_join := 'LEFT JOIN unify.sources s ON s.name = t.source_name
                            LEFT JOIN (SELECT x.source_id, x.source_key, rp.person_id FROM unify.records x
                                       JOIN unify.record_persons rp ON rp.record_id = x.record_id) r
                                       ON r.source_id = s.source_id AND r.source_key = t.source_key';
        END IF;
        amount := 't.amount';
        currency_join := '';
        skipped := '0';
        IF f ? 'currency' THEN
            currency_join := 'LEFT JOIN unify.exchange_rates x ON x.currency = upper(t.currency)';
            amount := format('t.amount * CASE WHEN upper(t.currency) = %L THEN 1 ELSE x.rate END', reporting);
            skipped := format('(%s IS NULL)::int', amount);
        END IF;
        -- The user's expressions over their table alone, staged as the role that registered
        -- it: their column names never clash with ours, and their code never runs as us.
        -- A new table per call under a name no one can guess (no one can have made it first
        -- with a trigger of theirs), insertable only by this table's role and only while its
        -- mapping runs (another table's mapping cannot add orders to it).
        stage := format('unify_orders_%s_%s', t.transaction_source_id, replace(gen_random_uuid()::text, '-', ''));
        mapping_role := unify._mapping_role(t.run_as, t.relation);
        EXECUTE format('CREATE TEMP TABLE %I (order_key text, order_date date, amount numeric, currency text,
                                              source_name text, source_key text, customer_number text, returned boolean) ON COMMIT DROP', stage);
        EXECUTE format('GRANT INSERT ON pg_temp.%I TO %s', stage, mapping_role);
        BEGIN
            PERFORM unify._run_as(mapping_role, format(
                'INSERT INTO pg_temp.%I SELECT %s, %s, %s, %s, %s, %s, %s, %s FROM %s AS src WHERE %s > %L::date AND %s <= %L::date%s',
                stage,
                CASE WHEN f ? 'order_id' THEN unify._transaction_expression(f, 'order_id') ELSE 'NULL::text' END,
                unify._transaction_expression(f, 'order_date'), unify._transaction_expression(f, 'amount'),
                CASE WHEN f ? 'currency' THEN unify._transaction_expression(f, 'currency') ELSE 'NULL::text' END,
                CASE WHEN f ? 'source' AND NOT EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = f ->> 'source')
                     THEN unify._transaction_expression(f, 'source') ELSE 'NULL::text' END,
                CASE WHEN f ? 'source_key' THEN unify._transaction_expression(f, 'source_key') ELSE 'NULL::text' END,
                CASE WHEN f ? 'customer_number' THEN unify._transaction_expression(f, 'customer_number') ELSE 'NULL::text' END,
                CASE WHEN f ? 'returned' THEN format('coalesce(%s, false)', unify._transaction_expression(f, 'returned')) ELSE 'NULL::boolean' END,
                t.relation,
                unify._transaction_expression(f, 'order_date'), from_date,
                unify._transaction_expression(f, 'order_date'), to_date,
                CASE WHEN f ? 'returned' AND NOT with_returned THEN format(' AND NOT coalesce(%s, false)', unify._transaction_expression(f, 'returned')) ELSE '' END),
                NULL);
        EXCEPTION WHEN others THEN
            GET STACKED DIAGNOSTICS error_message = MESSAGE_TEXT;
            RAISE EXCEPTION 'order table "%": its mapping failed: %', t.name, error_message
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = format('Check the mapping (SELECT fields FROM unify.transaction_sources WHERE name = %L); it runs as role %s with search_path pg_catalog, pg_temp.', t.name, t.run_as);
        END;
        EXECUTE format('REVOKE INSERT ON pg_temp.%I FROM %s', stage, mapping_role);
        EXECUTE format('ANALYZE pg_temp.%I', stage);
        -- Per order row: whose (keys), date, amount in the reporting currency, no rate (skipped).
        orders_query := format('SELECT t.order_key, t.order_date, %s AS amount, %s AS skipped,
                                       t.source_name, t.source_key, t.customer_number, t.returned
                                FROM pg_temp.%I t
                                %s',
                               amount, skipped, stage, currency_join);
        IF per_customer AND NOT f ? 'order_id' THEN
            parts := parts || format('SELECT r.person_id, t.last_purchase, t.frequency, t.monetary, t.orders, t.skipped
                                      FROM (SELECT source_name, source_key, customer_number, %s
                                            FROM (%s) o GROUP BY source_name, source_key, customer_number) t
                                      %s',
                                     partial_sums, orders_query, person_join);
            CONTINUE;
        END IF;
        orders_query := format('SELECT r.person_id, t.order_key, t.order_date, t.amount, t.skipped, t.returned FROM (%s) t %s',
                               orders_query, person_join);
        IF f ? 'order_id' THEN
            orders_query := format('SELECT person_id, min(order_date) AS order_date, sum(amount) AS amount, sum(skipped) AS skipped,
                                           bool_or(returned) AS returned
                                    FROM (%s) o GROUP BY person_id, order_key', orders_query);
        END IF;
        IF per_customer THEN
            parts := parts || format('SELECT person_id, %s FROM (%s) o GROUP BY person_id', partial_sums, orders_query);
        ELSE
            parts := parts || format('SELECT person_id, order_date, amount, amount >= 0 AS purchase, skipped, returned FROM (%s) o',
                                     orders_query);
        END IF;
    END LOOP;
    IF cardinality(parts) = 0 THEN
        RAISE EXCEPTION 'no transactions are registered'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Register your order table first: SELECT unify.add_transactions(''orders'', ''orders'', ''{"source": "shop", "source_key": "customer_id", "order_date": "ordered_at", "amount": "total"}'').';
    END IF;
    RETURN array_to_string(parts, E'\nUNION ALL\n');
END
$$;
