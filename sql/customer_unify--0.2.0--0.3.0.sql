-- customer_unify 0.2.0 -> 0.3.0 (ALTER EXTENSION customer_unify UPDATE). Tested by
-- tests/upgrade/run.sh, which updates a used 0.1.0 installation through 0.2.0 to 0.3.0 and
-- compares the result with a fresh 0.3.0 install (tests/upgrade/catalog.sql), then runs the
-- whole suite on it.
--
-- What changes: issue 26's touchpoints and activation (see the sections below, one per part).
\echo Use "ALTER EXTENSION customer_unify UPDATE TO '0.3.0'" to load this file. \quit


-- Issue 26, purchase, churn and return probability, and model choice: unify.predictions gains
-- p_purchase, return_probability, orders, returns; unify.prediction_fits gains the model
-- choice, holdout validation, ranking check and return-rate fit; fit_predictions gains
-- purchase_days, holdout_days, check_ranking (model 'auto' by default); _orders_query gains
-- with_returned; new internals _return_counts, _holdout_check, _p_purchase, _fit_returns;
-- customer_360 and analyst_persons show p_purchase and return_probability.
ALTER TABLE unify.prediction_fits
    ADD COLUMN model_requested text,
    ADD COLUMN purchase_days int,
    ADD COLUMN holdout_days int,
    ADD COLUMN holdout_error float8,
    ADD COLUMN validation jsonb,
    ADD COLUMN alive_recent_frequent float8,
    ADD COLUMN alive_lapsed float8,
    ADD COLUMN ranking_ok boolean,
    ADD COLUMN published boolean,
    ADD COLUMN return_persons bigint,
    ADD COLUMN return_params jsonb,
    ADD COLUMN return_status text;
ALTER TABLE unify.predictions
    ADD COLUMN p_purchase float8,
    ADD COLUMN return_probability float8,
    ADD COLUMN orders int,
    ADD COLUMN returns int;
COMMENT ON COLUMN unify.prediction_fits.model_requested IS '''auto'' (chosen by holdout error), ''bgnbd'' or ''pareto_nbd''';
COMMENT ON COLUMN unify.prediction_fits.holdout_error IS 'The model''s holdout error: mean absolute difference of predicted and actual holdout purchases per repeat-purchase bucket (0..7+), weighted by customers';
COMMENT ON COLUMN unify.prediction_fits.validation IS 'Holdout split, per model its calibration fit, predicted and actual holdout purchases per bucket and in total, and, where fitted on all data, its ranking check';
COMMENT ON COLUMN unify.prediction_fits.alive_recent_frequent IS 'Mean P(alive) of the persons best by recency and frequency (quintile sum 9-10)';
COMMENT ON COLUMN unify.prediction_fits.alive_lapsed IS 'Mean P(alive) of the persons worst by recency and frequency (quintile sum 2-3)';
COMMENT ON COLUMN unify.prediction_fits.ranking_ok IS 'false: recent frequent buyers less alive than lapsed ones; such a fit is not published';
COMMENT ON COLUMN unify.prediction_fits.published IS 'Whether this fit''s predictions were written to unify.predictions';
COMMENT ON TABLE unify.predictions IS 'Per person, from the last published fit: P(alive), churn, expected purchases and spend in the horizon, CLV, P(a purchase within purchase_days), return probability';
COMMENT ON COLUMN unify.predictions.p_purchase IS 'P(at least one purchase in the next prediction_fits.purchase_days days)';
COMMENT ON COLUMN unify.predictions.return_probability IS 'Share of returned orders shrunk toward the population rate: (returns + alpha) / (orders + alpha + beta), beta-binomial fit';
COMMENT ON COLUMN unify.predictions.orders IS 'Orders up to the calibration end in order tables that map returned, returned ones included';
COMMENT ON COLUMN unify.predictions.returns IS 'Of those, the returned (or cancelled) ones';

DROP FUNCTION unify.fit_predictions(date, text, int, float8);
DROP FUNCTION unify._orders_query(date, date, boolean);

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

CREATE OR REPLACE FUNCTION unify._purchase_summaries(calibration_end date) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.unify_purchase_days') IS NOT NULL THEN DROP TABLE pg_temp.unify_purchase_days; END IF;
    IF to_regclass('pg_temp.unify_purchase_summaries') IS NOT NULL THEN DROP TABLE pg_temp.unify_purchase_summaries; END IF;
    EXECUTE format($q$
        CREATE TEMP TABLE unify_purchase_days ON COMMIT DROP AS
        SELECT o.person_id, o.order_date AS day, sum(o.amount) AS amount
        FROM (%s) o
        JOIN unify.persons pe ON pe.person_id = o.person_id
        WHERE o.amount IS NOT NULL
        GROUP BY o.person_id, o.order_date
        HAVING sum(o.amount) >= 0 $q$,
        unify._orders_query('-infinity'::date, calibration_end));
    EXECUTE format($q$
        CREATE TEMP TABLE unify_purchase_summaries ON COMMIT DROP AS
        WITH firsts AS (
            SELECT d.*, min(d.day) OVER (PARTITION BY d.person_id) AS first_day FROM pg_temp.unify_purchase_days d
        )
        SELECT person_id,
               (count(*) - 1)::float8 AS frequency,
               (max(day) - min(day)) / 7.0::float8 AS recency,
               (%L::date - min(day)) / 7.0::float8 AS age,
               (sum(amount) FILTER (WHERE day > first_day) / nullif(count(*) - 1, 0))::float8 AS mean_spend
        FROM firsts GROUP BY person_id $q$, calibration_end);
END
$$;

CREATE FUNCTION unify._return_counts(calibration_end date) RETURNS boolean
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.unify_return_counts') IS NOT NULL THEN DROP TABLE pg_temp.unify_return_counts; END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.transaction_sources t WHERE t.fields ? 'returned') THEN
        CREATE TEMP TABLE unify_return_counts (person_id bigint, orders float8, returns float8) ON COMMIT DROP;
        RETURN false;
    END IF;
    EXECUTE format($q$
        CREATE TEMP TABLE unify_return_counts ON COMMIT DROP AS
        SELECT o.person_id, count(*)::float8 AS orders, count(*) FILTER (WHERE o.returned)::float8 AS returns
        FROM (%s) o
        JOIN unify.persons pe ON pe.person_id = o.person_id
        WHERE o.returned IS NOT NULL
        GROUP BY o.person_id $q$,
        unify._orders_query('-infinity'::date, calibration_end, with_returned => true));
    RETURN true;
END
$$;

CREATE FUNCTION unify._holdout_check(model text, holdout_weeks float8) RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    cal_fit record;
    result jsonb;
    unknown boolean;
BEGIN
    SELECT f.* INTO cal_fit
    FROM (SELECT array_agg(frequency) AS frequency, array_agg(recency) AS recency, array_agg(age) AS age, array_agg(n) AS n
          FROM (SELECT frequency, recency, age, count(*)::float8 AS n FROM pg_temp.unify_holdout_summaries GROUP BY 1, 2, 3) g) a,
         LATERAL unify._fit_purchases(model, a.frequency, a.recency, a.age, a.n) f;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('converged', false, 'status', 'no customers in the calibration period');
    END IF;
    IF NOT cal_fit.converged THEN
        RETURN jsonb_build_object('converged', false, 'status', cal_fit.status);
    END IF;
    WITH g AS (
        SELECT least(frequency, 7)::int AS bucket, count(*) AS customers, sum(actual) AS actual,
               (unify._predict(model, cal_fit.param_values, NULL, frequency, recency, age, NULL,
                               holdout_weeks, '{}', 0))[2] AS predicted_each
        FROM pg_temp.unify_holdout_summaries GROUP BY frequency, recency, age
    ), b AS (
        SELECT bucket, sum(customers) AS customers, sum(customers * predicted_each) AS predicted, sum(actual) AS actual
        FROM g GROUP BY bucket
    )
    SELECT jsonb_build_object(
               'converged', true, 'status', cal_fit.status, 'params', cal_fit.params,
               'error', sum(abs(predicted - actual)) / sum(customers),
               'predicted', round(sum(predicted)::numeric, 1), 'actual', sum(actual),
               'buckets', jsonb_agg(jsonb_build_object(
                   'repeat_purchases', CASE WHEN bucket = 7 THEN '7+' ELSE bucket::text END, 'customers', customers,
                   'predicted', round((predicted / customers)::numeric, 4), 'actual', round((actual / customers)::numeric, 4))
                   ORDER BY bucket)),
           bool_or(predicted IS NULL)
    INTO result, unknown FROM b;
    -- A prediction the model cannot give (NULL) makes the error unknown, not small.
    IF unknown THEN
        result := result || jsonb_build_object('error', NULL, 'status', 'some holdout predictions are not finite');
    END IF;
    RETURN result;
END
$$;

CREATE FUNCTION unify.fit_predictions(calibration_end date DEFAULT current_date, model text DEFAULT 'auto',
                                      horizon_months int DEFAULT 12, discount_rate float8 DEFAULT 0.1,
                                      purchase_days int DEFAULT 90, holdout_days int DEFAULT NULL,
                                      check_ranking boolean DEFAULT true)
RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    requested constant text := model;
    purchase_fit record;   -- unify._fit_purchases' row: params, param_values, log_likelihood, converged, evaluations, status
    spend_fit record;      -- unify._fit_spend's row, the same columns
    return_fit record;     -- unify._fit_returns' row
    n_customers bigint;
    n_spend bigint;
    n_return_persons bigint := 0;
    returns_mapped boolean;
    month_weeks float8[];
    new_fit bigint;
    written bigint := 0;
    first_day date;
    split date;
    holdout int := holdout_days;
    validation jsonb := '{}';
    candidates text[];
    m text;
    chosen text;
    top float8;
    bottom float8;
    ok boolean;
    final_status text;
BEGIN
    IF calibration_end IS NULL OR model IS NULL OR horizon_months IS NULL OR discount_rate IS NULL OR purchase_days IS NULL
       OR check_ranking IS NULL OR calibration_end IN ('infinity', '-infinity') THEN
        RAISE EXCEPTION 'fit_predictions: calibration_end, model, horizon_months, discount_rate, purchase_days and check_ranking must be given'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Leave an argument out for its default; holdout_days alone may be NULL (its default).';
    END IF;
    IF model NOT IN ('auto', 'bgnbd', 'pareto_nbd') THEN
        RAISE EXCEPTION 'unknown purchase model "%"', model
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use ''auto'' (the default: the better of both on the holdout), ''bgnbd'' (BG/NBD) or ''pareto_nbd'' (Pareto/NBD).';
    END IF;
    IF horizon_months NOT BETWEEN 1 AND 600 OR discount_rate <= -1 OR discount_rate = 'NaN' THEN
        RAISE EXCEPTION 'horizon_months must be 1..600 and discount_rate above -1 (annual, 0.1 = 10%%)'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example unify.fit_predictions(horizon_months => 12, discount_rate => 0.1).';
    END IF;
    IF purchase_days NOT BETWEEN 1 AND 3650 THEN
        RAISE EXCEPTION 'purchase_days must be 1..3650, not %', purchase_days
            USING ERRCODE = 'invalid_parameter_value', HINT = 'p_purchase is P(at least one purchase in the next purchase_days days); the default is 90.';
    END IF;
    IF holdout_days < 0 OR holdout_days > 36500 OR (holdout_days = 0 AND model = 'auto') THEN
        RAISE EXCEPTION 'holdout_days must be 1..36500, or 0 (no holdout check) with a given model, not %', holdout_days
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Leave holdout_days NULL for half the purchase history up to a year; model ''auto'' chooses by the holdout error and needs one.';
    END IF;
    PERFORM unify._lock('predictions');
    PERFORM unify._purchase_summaries(calibration_end);
    returns_mapped := unify._return_counts(calibration_end);

    SELECT count(*), count(*) FILTER (WHERE frequency > 0) INTO n_customers, n_spend FROM pg_temp.unify_purchase_summaries;

    -- Holdout validation (calibration/holdout as in Fader, Hardie & Lee 2005): fit on the
    -- purchases up to the split, compare predicted and actual purchases after it.
    SELECT min(day) INTO first_day FROM pg_temp.unify_purchase_days;
    IF holdout IS NULL THEN
        holdout := least(365, (calibration_end - first_day) / 2);
    END IF;
    candidates := CASE WHEN model = 'auto' THEN ARRAY['bgnbd', 'pareto_nbd'] ELSE ARRAY[model] END;
    IF coalesce(holdout, 0) > 0 THEN
        split := calibration_end - holdout;
        IF to_regclass('pg_temp.unify_holdout_summaries') IS NOT NULL THEN DROP TABLE pg_temp.unify_holdout_summaries; END IF;
        EXECUTE format($q$
            CREATE TEMP TABLE unify_holdout_summaries ON COMMIT DROP AS
            SELECT person_id,
                   (count(*) FILTER (WHERE day <= %1$L::date) - 1)::float8 AS frequency,
                   (max(day) FILTER (WHERE day <= %1$L::date) - min(day)) / 7.0::float8 AS recency,
                   (%1$L::date - min(day)) / 7.0::float8 AS age,
                   count(*) FILTER (WHERE day > %1$L::date)::float8 AS actual
            FROM pg_temp.unify_purchase_days GROUP BY person_id HAVING min(day) <= %1$L::date $q$, split);
        validation := jsonb_build_object('split', split, 'holdout_days', holdout,
                                         'customers', (SELECT count(*) FROM pg_temp.unify_holdout_summaries));
        FOREACH m IN ARRAY candidates LOOP
            validation := validation || jsonb_build_object(m, unify._holdout_check(m, holdout / 7.0));
        END LOOP;
        IF model = 'auto' THEN
            -- The smaller holdout error first; a model whose check failed last.
            SELECT array_agg(c ORDER BY (validation -> c ->> 'error')::float8 NULLS LAST, c) INTO candidates
            FROM unnest(candidates) c;
        END IF;
    END IF;

    -- Fit on all purchases, in the order of preference; publish the first that converges and
    -- whose ranking agrees with the data (a given model: only that one).
    SELECT array_agg(((calibration_end + make_interval(months => mo))::date - calibration_end) / 7.0::float8 ORDER BY mo)
    INTO month_weeks FROM generate_series(1, horizon_months) mo;
    SELECT f.* INTO STRICT spend_fit
    FROM (SELECT coalesce(array_agg(frequency), '{}') AS frequency, coalesce(array_agg(mean_spend), '{}') AS mean_spend,
                 coalesce(array_agg(n), '{}') AS n
          FROM (SELECT frequency, mean_spend, count(*)::float8 AS n FROM pg_temp.unify_purchase_summaries
                WHERE frequency > 0 GROUP BY 1, 2) g) a,
         LATERAL unify._fit_spend(a.frequency, a.mean_spend, a.n) f;
    FOREACH m IN ARRAY candidates LOOP
        SELECT f.* INTO purchase_fit
        FROM (SELECT array_agg(frequency) AS frequency, array_agg(recency) AS recency, array_agg(age) AS age, array_agg(n) AS n
              FROM (SELECT frequency, recency, age, count(*)::float8 AS n FROM pg_temp.unify_purchase_summaries GROUP BY 1, 2, 3) g) a,
             LATERAL unify._fit_purchases(m, a.frequency, a.recency, a.age, a.n) f;
        IF NOT FOUND THEN
            -- No customer at all: the strict fit returns no row, and the fit is recorded as failed.
            SELECT NULL::jsonb AS params, NULL::float8[] AS param_values, NULL::float8 AS log_likelihood, false AS converged,
                   NULL::int AS evaluations, 'no customers with a purchase up to ' || calibration_end AS status
            INTO purchase_fit;
        END IF;
        chosen := m;
        top := NULL; bottom := NULL; ok := NULL;
        final_status := purchase_fit.status;
        IF purchase_fit.converged THEN
            IF to_regclass('pg_temp.unify_new_predictions') IS NOT NULL THEN DROP TABLE pg_temp.unify_new_predictions; END IF;
            CREATE TEMP TABLE unify_new_predictions ON COMMIT DROP AS
            SELECT s.person_id, s.frequency, s.recency, s.age, s.mean_spend, v[1] AS p_alive, v[2] AS expected_purchases,
                   v[3] AS expected_spend, v[4] AS clv,
                   unify._p_purchase(m, purchase_fit.param_values, s.frequency, s.recency, s.age, fit_predictions.purchase_days / 7.0) AS p_purchase
            FROM pg_temp.unify_purchase_summaries s,
                 LATERAL unify._predict(m, purchase_fit.param_values,
                                        CASE WHEN spend_fit.converged THEN spend_fit.param_values END,
                                        s.frequency, s.recency, s.age, s.mean_spend,
                                        month_weeks[horizon_months], month_weeks,
                                        power(1 + discount_rate, 1.0 / 12) - 1) AS v;
            -- The ranking check: recency and frequency quintiles (5 = most recent, most
            -- frequent); the best (sum 9-10) must not be less alive than the worst (sum 2-3).
            WITH q AS (
                SELECT p_alive, ntile(5) OVER (ORDER BY age - recency DESC, person_id) AS rq,
                       ntile(5) OVER (ORDER BY frequency, age - recency DESC, person_id) AS fq
                FROM pg_temp.unify_new_predictions
            )
            SELECT avg(p_alive) FILTER (WHERE rq + fq >= 9), avg(p_alive) FILTER (WHERE rq + fq <= 3) INTO top, bottom FROM q;
            ok := top IS NULL OR bottom IS NULL OR top >= bottom OR NOT check_ranking;
            validation := jsonb_set(CASE WHEN validation ? m THEN validation ELSE validation || jsonb_build_object(m, '{}'::jsonb) END,
                                    ARRAY[m, 'all_data'],
                                    jsonb_build_object('converged', true, 'status', purchase_fit.status, 'params', purchase_fit.params,
                                                       'alive_recent_frequent', round(top::numeric, 4),
                                                       'alive_lapsed', round(bottom::numeric, 4),
                                                       'ranking_ok', top IS NULL OR bottom IS NULL OR top >= bottom));
            IF ok THEN
                EXIT;
            END IF;
            final_status := format('not published: the ranking contradicts the data (mean P(alive) %s for recent frequent buyers, %s for lapsed ones); the previous predictions stay',
                                   round(top::numeric, 2), round(bottom::numeric, 2));
        ELSE
            validation := jsonb_set(CASE WHEN validation ? m THEN validation ELSE validation || jsonb_build_object(m, '{}'::jsonb) END,
                                    ARRAY[m, 'all_data'], jsonb_build_object('converged', false, 'status', purchase_fit.status));
        END IF;
    END LOOP;
    IF requested = 'auto' THEN
        final_status := final_status || CASE
            WHEN NOT coalesce(purchase_fit.converged AND ok, false) THEN ' (auto: neither model is usable)'
            WHEN chosen <> candidates[1] THEN format(' (auto: %s, as %s was not usable)', chosen, candidates[1])
            WHEN validation ? 'split' THEN format(' (auto: %s, the smaller holdout error)', chosen)
            ELSE format(' (auto: %s; no holdout to compare on)', chosen) END;
    ELSIF NOT check_ranking AND top < bottom THEN
        final_status := final_status || format(' (published unchecked: the ranking contradicts the data, mean P(alive) %s for recent frequent buyers, %s for lapsed ones)',
                                               round(top::numeric, 2), round(bottom::numeric, 2));
    END IF;

    -- Return probability: the beta-binomial over persons' (returns, orders).
    IF returns_mapped THEN
        SELECT count(*) INTO n_return_persons FROM pg_temp.unify_return_counts WHERE orders > 0;
        SELECT f.* INTO return_fit
        FROM (SELECT array_agg(returns) AS returns, array_agg(orders) AS orders, array_agg(n) AS n
              FROM (SELECT returns, orders, count(*)::float8 AS n FROM pg_temp.unify_return_counts GROUP BY 1, 2) g) a,
             LATERAL unify._fit_returns(a.returns, a.orders, a.n) f;
        IF NOT FOUND THEN
            SELECT NULL::jsonb AS params, NULL::float8[] AS param_values, false AS converged,
                   'no orders up to ' || calibration_end AS status INTO return_fit;
        END IF;
    ELSE
        SELECT NULL::jsonb AS params, NULL::float8[] AS param_values, false AS converged,
               'no order table maps returned (add_transactions field "returned")' AS status INTO return_fit;
    END IF;

    INSERT INTO unify.prediction_fits (model, calibration_end, customers, params, log_likelihood, converged, status,
        evaluations, spend_customers, spend_params, spend_log_likelihood, spend_converged, spend_status,
        horizon_months, discount_rate, model_requested, purchase_days, holdout_days, holdout_error, validation,
        alive_recent_frequent, alive_lapsed, ranking_ok, published, return_persons, return_params, return_status)
    VALUES (chosen, calibration_end, n_customers, nullif(purchase_fit.params, '{}'), purchase_fit.log_likelihood,
        purchase_fit.converged, final_status, purchase_fit.evaluations,
        n_spend, nullif(spend_fit.params, '{}'), spend_fit.log_likelihood,
        spend_fit.converged, spend_fit.status, horizon_months, discount_rate,
        requested, purchase_days, nullif(holdout, 0), (validation -> chosen ->> 'error')::float8, nullif(validation, '{}'),
        top, bottom, CASE WHEN purchase_fit.converged THEN top IS NULL OR bottom IS NULL OR top >= bottom END, false, n_return_persons, nullif(return_fit.params, '{}'), return_fit.status)
    RETURNING fit_id INTO new_fit;

    -- A failed or contradicting fit is reported, and the predictions of the last good fit stay.
    IF purchase_fit.converged AND ok THEN
        DELETE FROM unify.predictions;
        INSERT INTO unify.predictions (person_id, fit_id, frequency, recency_weeks, age_weeks, mean_spend,
                                       p_alive, expected_purchases, expected_spend, clv,
                                       p_purchase, return_probability, orders, returns)
        SELECT n.person_id, new_fit, n.frequency::int, n.recency, n.age, n.mean_spend,
               n.p_alive, n.expected_purchases, n.expected_spend, n.clv, n.p_purchase,
               CASE WHEN return_fit.converged
                    THEN (coalesce(rc.returns, 0) + return_fit.param_values[1])
                         / (coalesce(rc.orders, 0) + return_fit.param_values[1] + return_fit.param_values[2]) END,
               rc.orders::int, rc.returns::int
        FROM pg_temp.unify_new_predictions n
        LEFT JOIN pg_temp.unify_return_counts rc ON rc.person_id = n.person_id;
        GET DIAGNOSTICS written = ROW_COUNT;
    END IF;
    UPDATE unify.prediction_fits f SET predictions = written, published = coalesce(purchase_fit.converged AND ok, false),
           seconds = round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)
    WHERE f.fit_id = new_fit;
    RETURN (SELECT to_jsonb(f) FROM unify.prediction_fits f WHERE f.fit_id = new_fit);
END
$$;
COMMENT ON FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) IS 'Fits BG/NBD or Pareto/NBD (auto: the smaller holdout error), Gamma-Gamma and the beta-binomial of returns on purchases up to calibration_end; publishes per-person predictions unless the fit failed or its ranking contradicts the data (reported in unify.prediction_fits, not raised)';

-- src/sql/segments.rs
-- customer_unify::sql::segments::_p_purchase
CREATE FUNCTION unify."_p_purchase"(
	"model" TEXT, /* &str */
	"params" double precision[], /* Vec < f64 > */
	"frequency" double precision, /* f64 */
	"recency" double precision, /* f64 */
	"age" double precision, /* f64 */
	"weeks" double precision /* f64 */
) RETURNS double precision /* Option < f64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_p_purchase_wrapper';

-- customer_unify::sql::segments::_fit_returns
CREATE FUNCTION unify."_fit_returns"(
	"returns" double precision[], /* Vec < f64 > */
	"orders" double precision[], /* Vec < f64 > */
	"weight" double precision[] /* Vec < f64 > */
) RETURNS TABLE (
	"params" jsonb,  /* JsonB */
	"param_values" double precision[],  /* Vec < f64 > */
	"log_likelihood" double precision,  /* Option < f64 > */
	"converged" bool,  /* bool */
	"evaluations" INT,  /* i32 */
	"status" TEXT  /* String */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_fit_returns_wrapper';

CREATE OR REPLACE VIEW unify.customer_360 AS
SELECT p.person_id, p.household_id,
       (SELECT count(*) FROM unify.persons h WHERE h.household_id = p.household_id) AS household_size,
       -- Display values under the plain names (the match keys are in unify.persons).
       p.first_name_display AS first_name, p.last_name_display AS last_name, p.email_display AS email,
       p.phone, p.mobile, p.street_display AS street, p.house_number, p.postcode,
       p.city_display AS city, p.country, p.birth_date, p.company, p.customer_number,
       p.consent_email, p.consent_phone, p.consent_post,
       p.record_count, p.sources, p.first_seen, p.last_seen,
       s.segment, s.r_score, s.f_score, s.m_score, s.last_purchase,
       (SELECT r.as_of FROM unify.segment_runs r ORDER BY r.run_id DESC LIMIT 1) - s.last_purchase AS recency_days,
       s.frequency AS orders_in_window,
       s.monetary AS spend_in_window,
       pr.p_alive, pr.churn_probability, pr.expected_purchases, pr.expected_spend, pr.clv,
       p.updated_at,
       -- Issue 25 (last, as the upgrade adds them): for letters and calls.
       p.salutation, p.title,
       unify.letter_salutation(p.salutation, p.title, p.first_name_display, p.last_name_display) AS letter_salutation,
       p.phone_display, p.mobile_display,
       p.consent_email_source, p.consent_email_at, p.consent_phone_source, p.consent_phone_at,
       p.consent_post_source, p.consent_post_at,
       -- Issue 26 (last, as the upgrade adds them): purchase and return probability.
       pr.p_purchase, pr.return_probability
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id;

CREATE OR REPLACE VIEW unify.analyst_persons AS
SELECT p.person_id, p.household_id,
       left(p.postcode, 2) AS postcode_area, p.country,
       extract(year FROM p.birth_date)::int AS birth_year,
       p.consent_email, p.consent_phone, p.consent_post,
       p.record_count, p.sources, p.first_seen, p.last_seen,
       s.segment, s.r_score, s.f_score, s.m_score, s.last_purchase,
       s.frequency AS orders_in_window, s.monetary AS spend_in_window,
       pr.p_alive, pr.churn_probability, pr.expected_purchases, pr.expected_spend, pr.clv,
       pr.p_purchase, pr.return_probability
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id;

-- Privileges as security.sql gives them: internals for the owner only, PL/pgSQL pinned,
-- fit_predictions run as the owner by unify_admin. (A replaced function loses its SET.)
REVOKE ALL ON FUNCTION unify._orders_query(date, date, boolean, boolean), unify._purchase_summaries(date),
    unify._return_counts(date), unify._holdout_check(text, float8), unify._p_purchase(text, float8[], float8, float8, float8, float8),
    unify._fit_returns(float8[], float8[], float8[]), unify.fit_predictions(date, text, int, float8, int, int, boolean)
FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
ALTER FUNCTION unify._orders_query(date, date, boolean, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._purchase_summaries(date) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._return_counts(date) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._holdout_check(text, float8) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) TO unify_admin;


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



-- Issue 26, consented audiences with hashed identifiers: unify.audience(segment, channel),
-- unify.audience_google(segment), unify.audience_meta(segment), unify.audience_channels(), and
-- the platforms' hashing rules as cleaners (unify.google_hash_* and unify.meta_hash_*).
-- Definitions as src/sql/audience.rs and src/sql/audience.sql write them; privileges as
-- security.sql gives them.
CREATE FUNCTION unify."google_hash_email"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'google_hash_email_wrapper';
CREATE FUNCTION unify."google_hash_phone"(
	"value" TEXT, /* & str */
	"default_region" TEXT DEFAULT 'DE' /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'google_hash_phone_wrapper';
CREATE FUNCTION unify."google_hash_name"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'google_hash_name_wrapper';
CREATE FUNCTION unify."meta_hash_email"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'meta_hash_email_wrapper';
CREATE FUNCTION unify."meta_hash_phone"(
	"value" TEXT, /* & str */
	"default_region" TEXT DEFAULT 'DE' /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'meta_hash_phone_wrapper';
CREATE FUNCTION unify."meta_hash_name"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'meta_hash_name_wrapper';
CREATE FUNCTION unify."meta_hash_zip"(
	"value" TEXT, /* & str */
	"country" TEXT DEFAULT 'DE' /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'meta_hash_zip_wrapper';
CREATE FUNCTION unify."meta_hash_country"(
	"value" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'meta_hash_country_wrapper';

CREATE FUNCTION unify.audience_channels()
RETURNS TABLE (channel text, consent text, identifiers text, description text)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT v.channel, v.consent, v.identifiers, v.description
    FROM (VALUES
        (1, 'email', 'consent_email', 'e-mail, salutation, title, first and last name',
         'Your own e-mail advertising (UWG § 7 (2) no. 2: prior express consent)'),
        (2, 'phone', 'consent_phone', 'phone and mobile (E.164), salutation, title, first and last name',
         'Your own advertising calls (UWG § 7 (2) no. 1: prior express consent)'),
        (3, 'post', 'consent_post', 'postal address, salutation, title, first and last name',
         'Your own letters and catalogues'),
        (4, 'google', 'consent_email', 'SHA-256 of e-mail, phone, first and last name; country and postcode in clear',
         'Google Customer Match upload (the e-mail advertising consent is its legal basis)'),
        (5, 'meta', 'consent_email', 'SHA-256 of e-mail, phone, first and last name, zip and country',
         'Meta Custom Audiences upload (the e-mail advertising consent is its legal basis)')
    ) AS v (n, channel, consent, identifiers, description)
    ORDER BY v.n
$$;
COMMENT ON FUNCTION unify.audience_channels() IS 'The channels unify.audience knows, the consent each requires and the identifiers it returns';

-- Refuses what audience() cannot answer: a missing argument, an unknown channel, a segment
-- the segment map in effect does not name (and no person is in).
CREATE FUNCTION unify._audience_check(segment text, channel text, function_name text) RETURNS void
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    IF segment IS NULL OR channel IS NULL THEN
        RAISE EXCEPTION '%: segment and channel are required', function_name
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'For example unify.audience(''At Risk'', ''email''); the channels: SELECT * FROM unify.audience_channels().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.audience_channels() c WHERE c.channel = _audience_check.channel) THEN
        RAISE EXCEPTION '%: unknown channel "%"', function_name, channel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'One of ' || (SELECT string_agg(c.channel, ', ') FROM unify.audience_channels() c)
                         || '; what each requires: SELECT * FROM unify.audience_channels().';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.segment_rules r WHERE r.segment = _audience_check.segment)
       AND NOT EXISTS (SELECT 1 FROM unify.segments s WHERE s.segment = _audience_check.segment) THEN
        RAISE EXCEPTION '%: unknown segment "%"', function_name, segment
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Segments are named by the segment map in effect: SELECT DISTINCT segment FROM unify.segment_rules.';
    END IF;
END
$$;

-- Google Customer Match: the Google Ads API's UserIdentifier fields (hashed_email,
-- hashed_phone_number, and address_info's hashed_first_name, hashed_last_name, country_code,
-- postal_code). The address goes only complete (Google matches it on all four), country and
-- postcode unhashed as Google requires. The phone is the mobile where there is one: a
-- household's shared landline is nobody's own account number.
CREATE FUNCTION unify.audience_google(segment text)
RETURNS TABLE (person_id bigint, hashed_email text, hashed_phone_number text, hashed_first_name text,
               hashed_last_name text, country_code text, postal_code text, consent_source text, consent_at timestamptz)
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._audience_check(segment, 'google', 'unify.audience_google');
    RETURN QUERY
    SELECT x.person_id, x.hashed_email, x.hashed_phone_number,
           CASE WHEN x.address_complete THEN x.hashed_first_name END,
           CASE WHEN x.address_complete THEN x.hashed_last_name END,
           CASE WHEN x.address_complete THEN x.country_code END,
           CASE WHEN x.address_complete THEN x.postal_code END,
           x.consent_email_source, x.consent_email_at
    FROM (SELECT p.person_id, p.consent_email_source, p.consent_email_at,
                 unify.google_hash_email(p.email) AS hashed_email,
                 unify.google_hash_phone(coalesce(p.mobile, p.phone), coalesce(unify.normalize_country(p.country), 'DE')) AS hashed_phone_number,
                 h.first_name AS hashed_first_name, h.last_name AS hashed_last_name, h.country_code, h.postal_code,
                 (h.first_name IS NOT NULL AND h.last_name IS NOT NULL AND h.country_code IS NOT NULL AND h.postal_code IS NOT NULL) AS address_complete
          FROM unify.segments s
          JOIN unify.persons p ON p.person_id = s.person_id
          CROSS JOIN LATERAL (SELECT unify.google_hash_name(p.first_name) AS first_name,
                                     unify.google_hash_name(p.last_name) AS last_name,
                                     unify.normalize_country(coalesce(p.country, 'DE')) AS country_code,
                                     unify.normalize_postcode(p.postcode, coalesce(unify.normalize_country(p.country), 'DE')) AS postal_code) h
          WHERE s.segment = audience_google.segment AND p.consent_email) x
    WHERE x.hashed_email IS NOT NULL OR x.hashed_phone_number IS NOT NULL OR x.address_complete
    ORDER BY x.person_id;
END
$$;
COMMENT ON FUNCTION unify.audience_google(text) IS 'Google Customer Match list of a segment: persons with e-mail advertising consent, identifiers normalised and SHA-256-hashed as Google requires';

-- Meta Custom Audiences: the multi-key schema EMAIL, PHONE, FN, LN, ZIP, COUNTRY, every value
-- hashed as Meta requires.
CREATE FUNCTION unify.audience_meta(segment text)
RETURNS TABLE (person_id bigint, email text, phone text, fn text, ln text, zip text, country text,
               consent_source text, consent_at timestamptz)
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._audience_check(segment, 'meta', 'unify.audience_meta');
    RETURN QUERY
    SELECT x.person_id, x.email, x.phone, x.fn, x.ln, x.zip, x.country, x.consent_email_source, x.consent_email_at
    FROM (SELECT p.person_id, p.consent_email_source, p.consent_email_at,
                 unify.meta_hash_email(p.email) AS email,
                 unify.meta_hash_phone(coalesce(p.mobile, p.phone), coalesce(unify.normalize_country(p.country), 'DE')) AS phone,
                 unify.meta_hash_name(p.first_name) AS fn,
                 unify.meta_hash_name(p.last_name) AS ln,
                 unify.meta_hash_zip(p.postcode, coalesce(unify.normalize_country(p.country), 'DE')) AS zip,
                 unify.meta_hash_country(coalesce(p.country, 'DE')) AS country
          FROM unify.segments s
          JOIN unify.persons p ON p.person_id = s.person_id
          WHERE s.segment = audience_meta.segment AND p.consent_email) x
    WHERE x.email IS NOT NULL OR x.phone IS NOT NULL OR (x.fn IS NOT NULL AND x.ln IS NOT NULL AND x.zip IS NOT NULL)
    ORDER BY x.person_id;
END
$$;
COMMENT ON FUNCTION unify.audience_meta(text) IS 'Meta Custom Audiences list of a segment: persons with e-mail advertising consent, EMAIL, PHONE, FN, LN, ZIP, COUNTRY normalised and SHA-256-hashed as Meta requires';

-- Every channel in one shape: the identifiers as a JSON object (own channels: contact data in
-- display form; google: the UserIdentifier fields; meta: the schema keys). Only what the
-- channel needs, and only persons it can reach.
CREATE FUNCTION unify.audience(segment text, channel text)
RETURNS TABLE (person_id bigint, consent_source text, consent_at timestamptz, identifiers jsonb)
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._audience_check(segment, channel, 'unify.audience');
    IF channel = 'google' THEN
        RETURN QUERY
        SELECT g.person_id, g.consent_source, g.consent_at,
               jsonb_strip_nulls(jsonb_build_object(
                   'hashed_email', g.hashed_email, 'hashed_phone_number', g.hashed_phone_number,
                   'address_info', CASE WHEN g.country_code IS NOT NULL THEN jsonb_build_object(
                       'hashed_first_name', g.hashed_first_name, 'hashed_last_name', g.hashed_last_name,
                       'country_code', g.country_code, 'postal_code', g.postal_code) END))
        FROM unify.audience_google(segment) g;
        RETURN;
    END IF;
    IF channel = 'meta' THEN
        RETURN QUERY
        SELECT m.person_id, m.consent_source, m.consent_at,
               jsonb_strip_nulls(jsonb_build_object('EMAIL', m.email, 'PHONE', m.phone, 'FN', m.fn, 'LN', m.ln,
                                                    'ZIP', m.zip, 'COUNTRY', m.country))
        FROM unify.audience_meta(segment) m;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT p.person_id,
           CASE channel WHEN 'email' THEN p.consent_email_source WHEN 'phone' THEN p.consent_phone_source
                        ELSE p.consent_post_source END,
           CASE channel WHEN 'email' THEN p.consent_email_at WHEN 'phone' THEN p.consent_phone_at
                        ELSE p.consent_post_at END,
           jsonb_strip_nulls(
               jsonb_build_object('salutation', p.salutation, 'title', p.title,
                                  'first_name', p.first_name_display, 'last_name', p.last_name_display,
                                  'letter_salutation', unify.letter_salutation(p.salutation, p.title, p.first_name_display, p.last_name_display))
               || CASE channel
                      WHEN 'email' THEN jsonb_build_object('email', p.email)
                      WHEN 'phone' THEN jsonb_build_object('phone', p.phone, 'mobile', p.mobile)
                      ELSE jsonb_build_object('street', p.street_display, 'house_number', p.house_number,
                                              'postcode', p.postcode, 'city', p.city_display, 'country', p.country)
                  END)
    FROM unify.segments s
    JOIN unify.persons p ON p.person_id = s.person_id
    WHERE s.segment = audience.segment
      AND CASE channel
              WHEN 'email' THEN p.consent_email AND p.email IS NOT NULL
              WHEN 'phone' THEN p.consent_phone AND coalesce(p.mobile, p.phone) IS NOT NULL
              ELSE p.consent_post AND p.street IS NOT NULL AND p.postcode IS NOT NULL AND p.city IS NOT NULL
          END
    ORDER BY p.person_id;
END
$$;
COMMENT ON FUNCTION unify.audience(text, text) IS 'The persons of a segment whose consent covers the channel (email, phone, post, google, meta), with the identifiers that channel needs (hashed for the ad platforms)';

-- Privileges (security.sql): the cleaners for PUBLIC; the audiences pinned, SECURITY DEFINER,
-- for unify_admin and unify_reader only.
DO $audience_grants$
DECLARE
    f regprocedure;
BEGIN
    FOREACH f IN ARRAY ARRAY['unify.google_hash_email(text)', 'unify.google_hash_phone(text,text)', 'unify.google_hash_name(text)',
                             'unify.meta_hash_email(text)', 'unify.meta_hash_phone(text,text)', 'unify.meta_hash_name(text)',
                             'unify.meta_hash_zip(text,text)', 'unify.meta_hash_country(text)']::regprocedure[] LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO PUBLIC', f);
    END LOOP;
    FOREACH f IN ARRAY ARRAY['unify.audience_channels()', 'unify._audience_check(text,text,text)', 'unify.audience_google(text)',
                             'unify.audience_meta(text)', 'unify.audience(text,text)']::regprocedure[] LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
        EXECUTE pg_catalog.format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$audience_grants$;
ALTER FUNCTION unify.audience(text, text) SECURITY DEFINER;
ALTER FUNCTION unify.audience_google(text) SECURITY DEFINER;
ALTER FUNCTION unify.audience_meta(text) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION unify.audience(text, text), unify.audience_google(text), unify.audience_meta(text),
    unify.audience_channels()
TO unify_admin, unify_reader;


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
