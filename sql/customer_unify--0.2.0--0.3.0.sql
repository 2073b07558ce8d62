-- customer_unify 0.2.0 -> 0.3.0 (ALTER EXTENSION customer_unify UPDATE). Tested by
-- tests/upgrade/run.sh, which updates a used 0.1.0 installation through 0.2.0 to 0.3.0 and
-- compares the result with a fresh 0.3.0 install (tests/upgrade/catalog.sql), then runs the
-- whole suite on it.
--
-- What changes: issue 26's touchpoints and activation, issue 27's scale work (see the sections
-- below, one per part).
\echo Use "ALTER EXTENSION customer_unify UPDATE TO '0.3.0'" to load this file. \quit

-- Issue 27, part: the indexed keys of unify.records compare by bytes (see sources.sql). A change
-- of collation alone keeps the rows (no rewrite); the indexes on these columns are rebuilt. First
-- in the step: views made below (unify._event_person_rule) depend on these columns.
ALTER TABLE unify.records
    ALTER COLUMN source_key TYPE text COLLATE pg_catalog."C",
    ALTER COLUMN email_key TYPE text COLLATE pg_catalog."C",
    ALTER COLUMN phone TYPE text COLLATE pg_catalog."C",
    ALTER COLUMN mobile TYPE text COLLATE pg_catalog."C",
    ALTER COLUMN customer_number TYPE text COLLATE pg_catalog."C";


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
    SELECT a.grid_days, f.* INTO cal_fit
    FROM unify._fit_summaries('pg_temp.unify_holdout_summaries') a,
         LATERAL unify._fit_purchases(model, a.frequency, a.recency, a.age, a.weight) f;
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
    IF cal_fit.grid_days > 1 THEN
        result := result || jsonb_build_object('grid_days', cal_fit.grid_days);
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
    fit_input record;      -- unify._fit_summaries: grid_days and the summaries' arrays
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
    work_mem_before constant text := current_setting('work_mem');
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
    PERFORM unify._churn_risk_threshold();   -- a wrong setting fails before the work
    PERFORM unify._lock('predictions');
    -- Its sorts and hashes within the batch budget; the caller's work_mem back at the end (an
    -- error ends the transaction, which sets it back).
    PERFORM set_config('work_mem', unify._batch_work_mem(), true);
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
    SELECT * INTO fit_input FROM unify._fit_summaries('pg_temp.unify_purchase_summaries');
    IF fit_input.grid_days > 1 THEN
        validation := validation || jsonb_build_object('grid_days', fit_input.grid_days);
    END IF;
    FOREACH m IN ARRAY candidates LOOP
        SELECT f.* INTO purchase_fit
        FROM unify._fit_purchases(m, fit_input.frequency, fit_input.recency, fit_input.age, fit_input.weight) f;
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
        -- The churn probabilities before, for the threshold crossings below.
        IF to_regclass('pg_temp.unify_old_churn') IS NOT NULL THEN DROP TABLE pg_temp.unify_old_churn; END IF;
        CREATE TEMP TABLE unify_old_churn ON COMMIT DROP AS
        SELECT p.person_id, p.fit_id, p.churn_probability FROM unify.predictions p;
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
        -- Churn risk crossing customer_unify.churn_risk_threshold (at or above it: at risk), up
        -- or down, against the predictions this fit replaced. The first published fit (no
        -- predictions before it) is the baseline: no events. A person new since then (no
        -- previous prediction) counts as below the threshold before.
        IF EXISTS (SELECT 1 FROM pg_temp.unify_old_churn) THEN
            PERFORM unify._outbox_emit_rows('churn_risk_crossed', format($q$
                SELECT c.person_id, jsonb_build_object(
                           'direction', CASE WHEN c.now_at_risk THEN 'up' ELSE 'down' END,
                           'churn_probability', c.churn_probability, 'previous', c.previous,
                           'threshold', c.threshold, 'fit_id', %s::bigint, 'previous_fit_id', c.previous_fit_id) AS payload
                FROM (SELECT n.person_id, n.churn_probability, o.churn_probability AS previous, o.fit_id AS previous_fit_id,
                             n.churn_probability >= t.threshold AS now_at_risk, t.threshold
                      FROM (SELECT unify._churn_risk_threshold() AS threshold) t
                      CROSS JOIN unify.predictions n
                      LEFT JOIN pg_temp.unify_old_churn o ON o.person_id = n.person_id
                      WHERE (n.churn_probability >= t.threshold) IS DISTINCT FROM coalesce(o.churn_probability >= t.threshold, false)
                        AND n.churn_probability IS NOT NULL) c
                ORDER BY c.person_id $q$, new_fit));
        END IF;
    END IF;
    UPDATE unify.prediction_fits f SET predictions = written, published = coalesce(purchase_fit.converged AND ok, false),
           seconds = round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)
    WHERE f.fit_id = new_fit;
    -- Everyone's next best action may follow new predictions (actions.sql).
    IF purchase_fit.converged AND ok THEN
        PERFORM unify._refresh_actions_after(NULL, 'fit_predictions');
    END IF;
    PERFORM set_config('work_mem', work_mem_before, true);
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
            -- Each of the person's products looks its neighbours up by key (OFFSET 0 keeps the
            -- LATERAL from being flattened into a join): as a join, the planner read all
            -- neighbours (180,000 on Online Retail) for every person, 24 ms a person.
            SELECT nb.neighbour_id AS product_id, sum(h.weight * nb.score) AS score
            FROM history h
            CROSS JOIN LATERAL (SELECT n.neighbour_id, n.score FROM unify.product_neighbours n
                                WHERE n.product_id = h.product_id OFFSET 0) nb
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


-- Issue 26, the durable outbox: unify.outbox and unify.outbox_consumers (kept by pg_dump), the
-- consumer API (create_outbox_consumer, read_outbox, ack_outbox, drop_outbox_consumer,
-- purge_outbox, outbox_kinds, the view outbox_status), the one writer unify._outbox_emit, and its
-- callers: _refresh_persons (consent changes, persons removed), _resolve_scope and resolve
-- (merges, splits), unmerge, erase_person (scrubs the person's events, emits the erasure),
-- refresh_segments (segment entered / left). The text below is src/sql/outbox.sql and the
-- changed functions as the install script has them.
-- The durable outbox (issue 26): every person-level event a marketing tool reacts to, written in
-- the transaction that causes it, with a stable id; consumers read with their own cursor and
-- acknowledge (at-least-once), NOTIFY unify_outbox only wakes them. API after pgmq: create a
-- consumer, read, acknowledge, drop, purge.
--
-- One writer: every row of unify.outbox is written by unify._outbox_emit (PL/pgSQL, set-based),
-- called by the PL/pgSQL command that causes the event (docs/ARCHITECTURE.md, "Who writes what").
-- An event's payload names no value of any person but its own person_id (ids, segment names,
-- channels, source names, times): erasure then only has to scrub the events of the erased ids.
--
-- Visibility (the outbox gap): ids are drawn at insert, but transactions commit in another
-- order, so a reader that saw id 12 committed must not move past 11 while 11's writer is still
-- running. Chosen: writers announce themselves, readers stop below the oldest announcement.
-- _outbox_emit takes a transaction-level SHARED advisory lock keyed by the id the sequence will
-- give next (peeked before drawing any id; once per transaction), held to commit or abort; a
-- reader first reads where the sequence stands (s), then the held outbox locks (pg_locks), and
-- hands out only ids below the horizon H = min(s, every held key), in a later statement (a
-- later snapshot). Why no id
-- below H can be missed: a writer whose row r < H is not in the reader's snapshot either held
-- its lock when the reader looked (then H <= its key <= r) or took it after, and so drew r
-- after the reader read s (then r >= s >= H). Shared locks never block one another, so writers
-- run in parallel and a reader never waits; the rejected alternative, one exclusive lock held by
-- every emitting transaction to its commit, would serialize resolve, the queue worker and
-- refresh_segments behind one another and deadlock-prone across the extension's other locks.
-- The argument needs a fresh snapshot per statement: read_outbox requires READ COMMITTED. A
-- foreign advisory lock on the same key pair only holds the horizon back (never skips).

CREATE TABLE unify.outbox (
    event_id   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL,
    person_id  bigint,
    payload    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE unify.outbox IS 'Person-level events for activation (segment entered/left, merged, split, erased, consent changed, …), in id order; read with unify.read_outbox';
COMMENT ON COLUMN unify.outbox.payload IS 'The event''s facts (ids, segments, channels, times; never a person''s values); NULL once the person was erased';
CREATE INDEX outbox_person ON unify.outbox (person_id);
SELECT pg_catalog.pg_extension_config_dump('unify.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('unify.outbox_event_id_seq', '');

CREATE TABLE unify.outbox_consumers (
    consumer      text PRIMARY KEY CHECK (length(consumer) BETWEEN 1 AND 200),
    acked_id      bigint NOT NULL,
    registered_by text NOT NULL DEFAULT unify._actor(),
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_read_at  timestamptz,
    last_ack_at   timestamptz
);
COMMENT ON TABLE unify.outbox_consumers IS 'Consumers of unify.outbox and their cursor: every event up to acked_id is acknowledged';
SELECT pg_catalog.pg_extension_config_dump('unify.outbox_consumers', '');

-- The kinds of event, their emitter and payload. A new kind is one more row here (fresh install
-- and, as CREATE OR REPLACE, the upgrade step) and a call of unify._outbox_emit in the
-- transaction that causes it.
CREATE FUNCTION unify.outbox_kinds() RETURNS TABLE (kind text, emitted_by text, payload text)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    VALUES ('segment_entered', 'refresh_segments', '{"segment", "from_segment", "as_of", "change_id"}'),
           ('segment_left', 'refresh_segments', '{"segment", "to_segment", "as_of", "change_id"}'),
           ('person_merged', 'resolve, process_queue, link', '{"identity_event_id", "merged_ids", "rule"}: merged_ids are now this person'),
           ('person_split', 'resolve, process_queue, unlink, unmerge', '{"identity_event_id", "split_ids", "rule"}: the persons it became (itself too if it keeps records)'),
           ('person_unmerged', 'unmerge', '{"identity_event_id", "person_ids"}: the persons the records went to'),
           ('person_removed', 'resolve, process_queue (a person without records left)', '{"identity_event_id"}'),
           ('person_erased', 'erase_person', '{"identity_event_id"}; earlier events of the person keep only their ids'),
           ('consent_changed', 'resolve, process_queue, link, unlink, unmerge, set_survivorship', '{"channel", "consent", "previous", "source", "at"}: per channel email, phone, post'),
           ('cart_abandoned', 'detect_abandoned_carts', '{"cart_id", "started_at", "last_activity_at", "items", "value", "abandoned_at"}: once per cart'),
           ('action_changed', 'refresh_actions, refresh_segments, fit_predictions, process_events, sync_events, remove_events, detect_abandoned_carts, a change of consent', '{"action", "channel", "previous", "previous_channel", "rule_priority", "cause", "since"}: only when the action or its channel changes; NULL action: none'),
           ('churn_risk_crossed', 'fit_predictions', '{"direction", "churn_probability", "previous", "threshold", "fit_id", "previous_fit_id"}: direction up (to at least customer_unify.churn_risk_threshold) or down; none on the first published fit')
$$;
COMMENT ON FUNCTION unify.outbox_kinds() IS 'The kinds of outbox event: which command emits them and what their payload holds';

-- Advisory lock namespace of the outbox writers: key 1 is 0x756E6966 ('unif'), key 2 the id the
-- sequence gave next when the writer looked, modulo 2^32.
CREATE FUNCTION unify._outbox_lock_space() RETURNS int
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT 1970170214 $$;

-- The id the sequence gives next (it is read outside MVCC: where it stands now).
CREATE FUNCTION unify._outbox_next_id() RETURNS bigint
VOLATILE LANGUAGE sql AS $$
    SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END FROM unify.outbox_event_id_seq s
$$;

-- The one writer of unify.outbox: one event per element (person_ids[i], payloads[i]) of kind
-- `kind`, in the caller's transaction; returns how many. Set-based: callers aggregate, e.g.
--   PERFORM unify._outbox_emit('cart_abandoned', array_agg(c.person_id ORDER BY c.person_id),
--                              array_agg(jsonb_build_object('cart_id', c.cart_id) ORDER BY c.person_id))
--   FROM ... c;
-- Announces the writer first (see the top of this file), wakes consumers at commit.
CREATE FUNCTION unify._outbox_emit(kind text, person_ids bigint[], payloads jsonb[]) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    next_id bigint;
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unify.outbox_kinds() k WHERE k.kind = _outbox_emit.kind) THEN
        RAISE EXCEPTION 'unify._outbox_emit: unknown event kind %', coalesce(quote_literal(kind), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Add the kind to unify.outbox_kinds() first.';
    END IF;
    IF cardinality(person_ids) IS DISTINCT FROM cardinality(payloads) THEN
        RAISE EXCEPTION 'unify._outbox_emit: % person ids but % payloads', cardinality(person_ids), cardinality(payloads)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'One payload per person id, in the same order.';
    END IF;
    IF coalesce(cardinality(person_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    -- The announcement, once per transaction: its first lock is keyed by an id no greater than
    -- any it draws later. (Not one per call: a transaction calling unify.link ten thousand times
    -- would fill the shared lock table.) A subtransaction's rollback releases a lock taken in
    -- it, together with its rows; the next call then finds none and takes one again.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                   WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'advisory' AND l.objsubid = 2
                     AND l.classid = unify._outbox_lock_space()::oid) THEN
        -- Key 2 is an int4: the id's low 32 bits as a signed number (pg_locks.objid shows them unsigned).
        next_id := unify._outbox_next_id() % 4294967296;
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(unify._outbox_lock_space(),
            (next_id - CASE WHEN next_id >= 2147483648 THEN 4294967296 ELSE 0 END)::int);
    END IF;
    INSERT INTO unify.outbox (kind, person_id, payload)
    SELECT _outbox_emit.kind, e.person_id, e.payload
    FROM unnest(person_ids, payloads) WITH ORDINALITY AS e (person_id, payload, n)
    ORDER BY e.n;
    GET DIAGNOSTICS n = ROW_COUNT;
    -- One wake-up per transaction (equal notifications are folded into one).
    PERFORM pg_catalog.pg_notify('unify_outbox', '');
    RETURN n;
END
$$;

-- Ids below this are final: every transaction that could still commit one has ended or is
-- visible to a statement started after this call (see the top of this file). READ COMMITTED only.
CREATE FUNCTION unify._outbox_horizon() RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    s bigint;
    held bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'unify outbox: consumers read in READ COMMITTED, not %', upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Call unify.read_outbox and unify.ack_outbox outside REPEATABLE READ and SERIALIZABLE transactions (each statement needs a fresh snapshot).';
    END IF;
    -- First the sequence, then the locks: the order the argument needs.
    s := unify._outbox_next_id();
    -- A held key is the id nearest to s with those low 32 bits (writers in flight are never 2^31
    -- ids apart).
    SELECT min(s + ((l.objid::bigint - s + 2147483648) % 4294967296 + 4294967296) % 4294967296 - 2147483648) INTO held
    FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = unify._outbox_lock_space()::oid
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database());
    RETURN least(s, held);
END
$$;

CREATE FUNCTION unify._outbox_consumer(consumer text, function_name text) RETURNS unify.outbox_consumers
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    c unify.outbox_consumers;
BEGIN
    IF consumer IS NULL THEN
        RAISE EXCEPTION 'unify.%: consumer must not be NULL', function_name USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT * INTO c FROM unify.outbox_consumers o WHERE o.consumer = _outbox_consumer.consumer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unify.%: no outbox consumer named %', function_name, quote_literal(consumer)
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with unify.create_outbox_consumer(name); SELECT consumer FROM unify.outbox_consumers lists them.';
    END IF;
    RETURN c;
END
$$;

-- pgmq's create(): registers a consumer. It reads what comes after its cursor: from now on, or
-- (from_start) every event still kept. Returns the starting cursor.
CREATE FUNCTION unify.create_outbox_consumer(consumer text, from_start boolean DEFAULT false) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    cursor_at bigint;
BEGIN
    IF consumer IS NULL OR from_start IS NULL OR btrim(consumer) = '' OR length(consumer) > 200 THEN
        RAISE EXCEPTION 'unify.create_outbox_consumer: consumer must be a name of 1 to 200 characters and from_start given'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example unify.create_outbox_consumer(''newsletter_tool'').';
    END IF;
    cursor_at := CASE WHEN from_start THEN 0 ELSE unify._outbox_horizon() - 1 END;
    INSERT INTO unify.outbox_consumers (consumer, acked_id) VALUES (consumer, cursor_at) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unify.create_outbox_consumer: a consumer named % exists', quote_literal(consumer)
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Each consumer has one cursor: reuse it, or unify.drop_outbox_consumer it first.';
    END IF;
    RETURN cursor_at;
END
$$;
COMMENT ON FUNCTION unify.create_outbox_consumer(text, boolean) IS 'Registers an outbox consumer with its cursor: events from now on, or every event still kept (from_start); returns the cursor';

-- pgmq's drop_queue() for a cursor: the events it held back become purgeable.
CREATE FUNCTION unify.drop_outbox_consumer(consumer text) RETURNS boolean
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    PERFORM unify._outbox_consumer(consumer, 'drop_outbox_consumer');
    DELETE FROM unify.outbox_consumers o WHERE o.consumer = drop_outbox_consumer.consumer;
    RETURN true;
END
$$;
COMMENT ON FUNCTION unify.drop_outbox_consumer(text) IS 'Removes an outbox consumer and its cursor; what only it held back may then be purged';

-- pgmq's read(): the next events after the consumer's cursor, oldest first, at most `max`.
-- Reading does not move the cursor: until unify.ack_outbox, the same events come again.
CREATE FUNCTION unify.read_outbox(consumer text, max int DEFAULT 100)
RETURNS TABLE (event_id bigint, kind text, person_id bigint, payload jsonb, created_at timestamptz)
VOLATILE LANGUAGE plpgsql
-- The next `max` events are always read in key order from the primary key. The table grows at
-- its top, where statistics are oldest: estimated from them, the planner read the whole backlog
-- through a bitmap and sorted it (4 ms at 20,000 events, growing with the backlog). Without
-- JIT: the scans only a sequence has count as disabled, and their cost would compile the query.
SET enable_bitmapscan = off SET enable_seqscan = off SET jit = off
AS $$
DECLARE
    c unify.outbox_consumers;
    horizon bigint;
BEGIN
    IF max IS NULL OR max < 1 THEN
        RAISE EXCEPTION 'unify.read_outbox: max must be a positive number, not %', coalesce(max::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example unify.read_outbox(''newsletter_tool'', 100).';
    END IF;
    c := unify._outbox_consumer(consumer, 'read_outbox');
    horizon := unify._outbox_horizon();
    UPDATE unify.outbox_consumers o SET last_read_at = now() WHERE o.consumer = c.consumer;
    -- A later statement than the horizon's: its snapshot holds every id below it.
    RETURN QUERY
    SELECT e.event_id, e.kind, e.person_id, e.payload, e.created_at
    FROM unify.outbox e
    WHERE e.event_id > c.acked_id AND e.event_id < horizon
    ORDER BY e.event_id
    LIMIT max;
END
$$;
COMMENT ON FUNCTION unify.read_outbox(text, int) IS 'The next outbox events after the consumer''s cursor (at most max, oldest first); the same again until acknowledged';

-- pgmq's delete()/archive() for a cursor: every event up to `up_to` is done. Never backwards
-- (an older id changes nothing); an id never given out is an error. Returns the cursor.
CREATE FUNCTION unify.ack_outbox(consumer text, up_to bigint) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    c unify.outbox_consumers;
    next_id bigint;
BEGIN
    IF up_to IS NULL THEN
        RAISE EXCEPTION 'unify.ack_outbox: up_to must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Acknowledge the event_id of the last event you processed.';
    END IF;
    c := unify._outbox_consumer(consumer, 'ack_outbox');
    next_id := unify._outbox_next_id();
    IF up_to >= next_id THEN
        RAISE EXCEPTION 'unify.ack_outbox: event % does not exist (the last event id is %)', up_to, next_id - 1
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Acknowledge an event_id that unify.read_outbox returned, after processing it and everything before it.';
    END IF;
    UPDATE unify.outbox_consumers o
    SET acked_id = greatest(o.acked_id, up_to), last_ack_at = now()
    WHERE o.consumer = c.consumer
    RETURNING o.acked_id INTO c.acked_id;
    RETURN c.acked_id;
END
$$;
COMMENT ON FUNCTION unify.ack_outbox(text, bigint) IS 'Acknowledges every outbox event up to up_to for the consumer (the cursor never moves back); returns the cursor';

-- Retention: deletes the events every consumer has acknowledged (with none registered, every
-- event handed out) that are older than `keep`; never one the slowest consumer has not.
CREATE FUNCTION unify.purge_outbox(keep interval DEFAULT interval '0') RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    upto bigint;
    n bigint;
BEGIN
    IF keep IS NULL OR keep < interval '0' THEN
        RAISE EXCEPTION 'unify.purge_outbox: keep must be an interval of zero or more, not %', coalesce(keep::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example unify.purge_outbox(interval ''7 days'').';
    END IF;
    -- Consumers are locked against a concurrent create or ack while the bound is used.
    PERFORM 1 FROM unify.outbox_consumers FOR SHARE;
    SELECT min(o.acked_id) INTO upto FROM unify.outbox_consumers o;
    IF upto IS NULL THEN
        upto := unify._outbox_horizon() - 1;
    END IF;
    DELETE FROM unify.outbox e WHERE e.event_id <= upto AND e.created_at <= now() - keep;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
COMMENT ON FUNCTION unify.purge_outbox(interval) IS 'Deletes outbox events every consumer has acknowledged and older than keep; returns how many';

-- Per consumer: where it stands and what waits for it.
CREATE VIEW unify.outbox_status AS
SELECT c.consumer, c.acked_id,
       (SELECT count(*) FROM unify.outbox e WHERE e.event_id > c.acked_id) AS pending,
       (SELECT min(e.created_at) FROM unify.outbox e WHERE e.event_id > c.acked_id) AS oldest_pending_at,
       c.registered_by, c.registered_at, c.last_read_at, c.last_ack_at
FROM unify.outbox_consumers c;
COMMENT ON VIEW unify.outbox_status IS 'Outbox consumers: cursor, events not yet acknowledged, when each last read and acknowledged';

-- Emitters' helpers. Identity events (unify.identity_events) after `after`, of this
-- transaction: all of their writers hold the lock 'persons', taken before `after` was read.
CREATE FUNCTION unify._outbox_identity(after bigint) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    k record;
BEGIN
    FOR k IN SELECT * FROM (VALUES ('merge', 'person_merged', 'merged_ids'), ('split', 'person_split', 'split_ids'),
                                   ('unmerge', 'person_unmerged', 'person_ids'), ('remove', 'person_removed', NULL),
                                   ('erase', 'person_erased', NULL)) v (event, kind, ids_as) LOOP
        n := n + unify._outbox_emit(k.kind,
            ARRAY(SELECT e.person_id FROM unify.identity_events e WHERE e.event_id > after AND e.event = k.event ORDER BY e.event_id),
            ARRAY(SELECT jsonb_strip_nulls(jsonb_build_object('identity_event_id', e.event_id,
                                                              coalesce(k.ids_as, '-'), to_jsonb(e.related_ids),
                                                              'rule', CASE WHEN k.event IN ('merge', 'split') THEN e.rule END))
                         - '-'
                  FROM unify.identity_events e WHERE e.event_id > after AND e.event = k.event ORDER BY e.event_id));
    END LOOP;
    RETURN n;
END
$$;

CREATE FUNCTION unify._identity_mark() RETURNS bigint
STABLE PARALLEL SAFE LANGUAGE sql AS $$ SELECT coalesce(max(e.event_id), 0) FROM unify.identity_events e $$;

-- Changed functions (src/sql/persons.sql, src/sql/rfm.sql).
CREATE OR REPLACE FUNCTION unify._refresh_persons(ids bigint[], rule text, reason text) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    removed bigint;
    rebuild text[];
    emitted bigint;
    gone_after constant bigint := unify._identity_mark();
    -- The first resolve fills the table: faster without its secondary indexes, built after.
    first_fill boolean := ids IS NULL AND NOT EXISTS (SELECT 1 FROM unify.persons);
    seed bigint;
    stale bigint;
    -- The persons made again (NULL: those of ids, or all of them).
    scope bigint[];
    target bigint[] := ids;
    with_households boolean := ids IS NULL;
    -- Of a scoped run: the persons whose golden row changed, their households before regrouping.
    changed_ids bigint[];
    households_before bigint[];
    moved bigint;
    -- The households of the persons removed for want of records.
    left_households bigint[];
BEGIN
    IF first_fill THEN
        rebuild := unify._drop_indexes('unify.persons');
    END IF;
    -- Two statements, not "ids IS NULL OR ...": the few persons of a queue batch then get a
    -- cached plan instead of being planned again on every call.
    IF ids IS NULL THEN
        WITH gone AS (
            DELETE FROM unify.persons p
            WHERE NOT EXISTS (SELECT 1 FROM unify.record_persons rp WHERE rp.person_id = p.person_id)
            RETURNING p.person_id, p.household_id
        ), event AS (
            INSERT INTO unify.identity_events (event, person_id, rule, reason, details)
            -- In person order: the DELETE returns them in the heap's order, which depends on
            -- where earlier updates put the rows (pruning, vacuum), so event ids would differ
            -- from run to run.
            SELECT 'remove', g.person_id, _refresh_persons.rule, 'no records left', NULL FROM gone g
            ORDER BY g.person_id
        )
        SELECT count(*), array_agg(DISTINCT g.household_id) FILTER (WHERE g.household_id IS NOT NULL)
        INTO removed, left_households FROM gone g;
        -- The persons whose inputs changed since their golden record was made: a hash over
        -- their records' row versions (xmin: any change of a record makes a new one; a record
        -- that came or went changes it too), salted with what every golden record depends on.
        -- With their household and household keys before, for the households after.
        seed := pg_catalog.hashtextextended(concat_ws('|',
            (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'customer_unify'),
            (SELECT string_agg(concat_ws(':', s.field, s.rule, s.options::text), ',' ORDER BY s.field)
             FROM unify.survivorship_rules s),
            (SELECT string_agg(concat_ws(':', s.source_id, s.name, s.priority), ',' ORDER BY s.source_id)
             FROM unify.sources s)), 0);
        IF first_fill THEN
            -- Nothing to compare with, and every golden record is made now: unify._golden_records
            -- fills the table in the statement below, each person's hash as the one here
            -- (bit_xor of hashtextextended(record_id::text || ':' || xmin::text, seed) over their
            -- records), from the records it reads anyway (unify_internal.golden_inputs_seed).
            DELETE FROM unify.golden_inputs;
        ELSE
            IF to_regclass('pg_temp.unify_golden_scope') IS NOT NULL THEN  -- (no notice when not)
                DROP TABLE pg_temp.unify_golden_scope;
            END IF;
            CREATE TEMP TABLE unify_golden_scope (person_id bigint NOT NULL, inputs bigint NOT NULL,
                                                  known boolean NOT NULL, household_id bigint, household_keys text[]);
            INSERT INTO pg_temp.unify_golden_scope
            SELECT h.person_id, h.inputs, p.person_id IS NOT NULL, p.household_id,
                   CASE WHEN p.person_id IS NOT NULL
                        THEN unify._household_keys(p.postcode, p.street, p.house_number, p.phone, p.email) END
            FROM (SELECT rp.person_id,
                         bit_xor(pg_catalog.hashtextextended(r.record_id::text || ':' || r.xmin::text, seed)) AS inputs
                  FROM unify.record_persons rp JOIN unify.records r ON r.record_id = rp.record_id
                  GROUP BY rp.person_id) h
            LEFT JOIN unify.golden_inputs g ON g.person_id = h.person_id
            LEFT JOIN unify.persons p ON p.person_id = h.person_id
            WHERE g.inputs IS DISTINCT FROM h.inputs OR p.person_id IS NULL;
            GET DIAGNOSTICS stale = ROW_COUNT;
        END IF;
        -- Fewer than half of them: those alone (households after); else all in one pass.
        IF NOT first_fill AND stale * 2 < (SELECT count(*) FROM unify.persons) THEN
            scope := ARRAY(SELECT s.person_id FROM pg_temp.unify_golden_scope s ORDER BY s.person_id);
            target := scope;
            with_households := false;
        END IF;
    ELSE
        WITH gone AS (
            DELETE FROM unify.persons p
            WHERE p.person_id = ANY (ids)
              AND NOT EXISTS (SELECT 1 FROM unify.record_persons rp WHERE rp.person_id = p.person_id)
            RETURNING p.person_id
        )
        INSERT INTO unify.identity_events (event, person_id, rule, reason, details)
        SELECT 'remove', g.person_id, _refresh_persons.rule, 'no records left', NULL FROM gone g
        ORDER BY g.person_id;
        GET DIAGNOSTICS removed = ROW_COUNT;
        -- Made here from records a resolve has not hashed: its next run makes them again.
        DELETE FROM unify.golden_inputs g WHERE g.person_id = ANY (ids);
    END IF;
    PERFORM pg_catalog.set_config('unify_internal.golden_inputs_seed',
                                  CASE WHEN first_fill THEN seed::text ELSE '' END, true);
    -- Consent changes per channel go to the outbox (unify._outbox_emit) in this statement: its
    -- read of unify.persons sees the rows as they were before it (one snapshot for all parts).
    -- Not on the first fill: the starting state is unify.persons itself (a million first answers
    -- would be one event each); every person that appears or changes afterwards is reported.
    WITH up AS (
    INSERT INTO unify.persons AS p (person_id, first_name, last_name, email, phone, mobile, street, house_number,
        postcode, city, country, birth_date, company, customer_number,
        consent_email, consent_email_source, consent_email_at, consent_phone, consent_phone_source, consent_phone_at,
        consent_post, consent_post_source, consent_post_at, record_count, sources, first_seen, last_seen, household_id,
        salutation, title, first_name_display, last_name_display, street_display, city_display, phone_display,
        mobile_display, email_display)
    SELECT g.person_id, g.first_name, g.last_name, g.email, g.phone, g.mobile, g.street, g.house_number,
        g.postcode, g.city, g.country, g.birth_date::date, g.company, g.customer_number,
        g.consent_email, g.consent_email_source, to_timestamp(g.consent_email_epoch), g.consent_phone,
        g.consent_phone_source, to_timestamp(g.consent_phone_epoch), g.consent_post, g.consent_post_source,
        to_timestamp(g.consent_post_epoch), g.record_count, g.sources, to_timestamp(g.first_seen_epoch),
        to_timestamp(g.last_seen_epoch), g.household_id,
        -- The display array in its order (src/sql/persons/golden.rs, DISPLAY_FIELDS).
        g.salutation, g.title, g.display[1], g.display[2], g.display[3], g.display[4], g.display[5],
        g.display[6], g.display[7]
    -- All persons in one pass: their households come along (no second pass over every person).
    -- Called in a select list (ProjectSet), not in FROM: a function scan would first keep all
    -- its rows in a tuplestore (a million golden rows: up to work_mem in memory, the rest
    -- written to a temp file and read back), where each row can go straight to the insert.
    FROM (SELECT unify._golden_records(target, with_households) AS r OFFSET 0) s
    CROSS JOIN LATERAL (SELECT (s.r).*) g
    ON CONFLICT (person_id) DO UPDATE SET
        first_name = excluded.first_name, last_name = excluded.last_name, email = excluded.email,
        phone = excluded.phone, mobile = excluded.mobile, street = excluded.street,
        house_number = excluded.house_number, postcode = excluded.postcode, city = excluded.city,
        country = excluded.country, birth_date = excluded.birth_date, company = excluded.company,
        customer_number = excluded.customer_number,
        consent_email = excluded.consent_email, consent_email_source = excluded.consent_email_source,
        consent_email_at = excluded.consent_email_at, consent_phone = excluded.consent_phone,
        consent_phone_source = excluded.consent_phone_source, consent_phone_at = excluded.consent_phone_at,
        consent_post = excluded.consent_post, consent_post_source = excluded.consent_post_source,
        consent_post_at = excluded.consent_post_at, record_count = excluded.record_count,
        sources = excluded.sources, first_seen = excluded.first_seen, last_seen = excluded.last_seen,
        household_id = CASE WHEN with_households THEN excluded.household_id ELSE p.household_id END,
        salutation = excluded.salutation, title = excluded.title,
        first_name_display = excluded.first_name_display, last_name_display = excluded.last_name_display,
        street_display = excluded.street_display, city_display = excluded.city_display,
        phone_display = excluded.phone_display, mobile_display = excluded.mobile_display,
        email_display = excluded.email_display,
        updated_at = now()
    WHERE (p.first_name, p.last_name, p.email, p.phone, p.mobile, p.street, p.house_number, p.postcode, p.city,
           p.country, p.birth_date, p.company, p.customer_number, p.consent_email, p.consent_email_source,
           p.consent_email_at, p.consent_phone, p.consent_phone_source, p.consent_phone_at, p.consent_post,
           p.consent_post_source, p.consent_post_at, p.record_count, p.sources, p.first_seen, p.last_seen,
           p.salutation, p.title, p.first_name_display, p.last_name_display, p.street_display, p.city_display,
           p.phone_display, p.mobile_display, p.email_display)
          IS DISTINCT FROM
          (excluded.first_name, excluded.last_name, excluded.email, excluded.phone, excluded.mobile, excluded.street,
           excluded.house_number, excluded.postcode, excluded.city, excluded.country, excluded.birth_date,
           excluded.company, excluded.customer_number, excluded.consent_email, excluded.consent_email_source,
           excluded.consent_email_at, excluded.consent_phone, excluded.consent_phone_source, excluded.consent_phone_at,
           excluded.consent_post, excluded.consent_post_source, excluded.consent_post_at, excluded.record_count,
           excluded.sources, excluded.first_seen, excluded.last_seen, excluded.salutation, excluded.title,
           excluded.first_name_display, excluded.last_name_display, excluded.street_display, excluded.city_display,
           excluded.phone_display, excluded.mobile_display, excluded.email_display)
       OR (with_households AND p.household_id IS DISTINCT FROM excluded.household_id)
    RETURNING p.person_id, p.consent_email, p.consent_email_source, p.consent_email_at, p.consent_phone,
              p.consent_phone_source, p.consent_phone_at, p.consent_post, p.consent_post_source, p.consent_post_at
    ), consent AS (
        SELECT u.person_id, c.channel,
               jsonb_build_object('channel', c.channel, 'consent', c.consent, 'previous', c.previous,
                                  'source', c.source, 'at', c.at) AS payload
        FROM up u
        LEFT JOIN unify.persons o ON o.person_id = u.person_id
        CROSS JOIN LATERAL (VALUES ('email', u.consent_email, o.consent_email, u.consent_email_source, u.consent_email_at),
                                   ('phone', u.consent_phone, o.consent_phone, u.consent_phone_source, u.consent_phone_at),
                                   ('post', u.consent_post, o.consent_post, u.consent_post_source, u.consent_post_at))
                   c (channel, consent, previous, source, at)
        WHERE c.consent IS DISTINCT FROM c.previous AND NOT first_fill
    )
    SELECT (SELECT count(*) FROM up),
           (SELECT array_agg(u.person_id ORDER BY u.person_id) FROM up u WHERE scope IS NOT NULL),
           unify._outbox_emit('consent_changed', array_agg(c.person_id ORDER BY c.person_id, c.channel),
                              array_agg(c.payload ORDER BY c.person_id, c.channel))
    INTO changed, changed_ids, emitted
    FROM consent c;
    PERFORM pg_catalog.set_config('unify_internal.golden_inputs_seed', '', true);
    IF ids IS NULL AND NOT first_fill THEN
        IF scope IS NOT NULL THEN
            -- Rows changed: golden row or household, each once, as one pass over all counts.
            households_before := ARRAY(SELECT p.household_id FROM unify.persons p
                                       WHERE p.person_id = ANY (changed_ids) ORDER BY p.person_id);
            -- Households as a grouping of everyone gives them (the rest were grouped so
            -- before, and kept their keys): the persons new or with other keys, and the rest of
            -- the households that lost a person (as unify._resolve_scope does).
            moved := unify._group_households(ARRAY(
                SELECT s.person_id FROM pg_temp.unify_golden_scope s JOIN unify.persons p ON p.person_id = s.person_id
                WHERE NOT s.known
                   OR unify._household_keys(p.postcode, p.street, p.house_number, p.phone, p.email)
                      IS DISTINCT FROM s.household_keys
                UNION
                SELECT p.person_id FROM unify.persons p
                WHERE p.household_id = ANY (left_households)));
            changed := changed + moved
                - (SELECT count(*) FROM unnest(households_before, ARRAY(
                       SELECT p.household_id FROM unify.persons p
                       WHERE p.person_id = ANY (changed_ids) ORDER BY p.person_id)) x (before, after)
                   WHERE x.before IS DISTINCT FROM x.after);
        END IF;
        INSERT INTO unify.golden_inputs AS g (person_id, inputs)
        SELECT s.person_id, s.inputs FROM pg_temp.unify_golden_scope s
        ON CONFLICT (person_id) DO UPDATE SET inputs = excluded.inputs;
        DELETE FROM unify.golden_inputs g WHERE NOT EXISTS (SELECT 1 FROM unify.persons p WHERE p.person_id = g.person_id);
        DROP TABLE pg_temp.unify_golden_scope;
    END IF;
    -- Persons gone for want of records.
    PERFORM unify._outbox_identity(gone_after);
    PERFORM unify._rebuild_indexes(rebuild);
    -- Their events follow them (unify.events.person_id).
    PERFORM unify._refresh_event_persons(ids);
    RETURN changed + removed;
END
$$;

CREATE OR REPLACE FUNCTION unify._resolve_scope(person_ids bigint[], record_ids bigint[], rule text, reason text) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    touched bigint[];
    before unify.persons[];
    regroup bigint[];
    mark constant bigint := unify._identity_mark();  -- the callers hold the lock 'persons'
BEGIN
    -- The given persons too: one whose records all went away has nothing left in the scope.
    touched := ARRAY(SELECT unnest(c.touched) FROM unify._cluster(person_ids, record_ids, rule, reason) c
                     UNION SELECT unnest(person_ids));
    -- The merges and splits _cluster wrote, to the outbox.
    PERFORM unify._outbox_identity(mark);
    -- Households follow from who exists and from each person's household keys (address,
    -- landline, mailbox: unify._household_keys). Grouped again: the persons that are new or
    -- whose keys change, and the households that lose a person; the others keep theirs
    -- (grouping every touched person's neighbourhood was a fifth of a queue batch, and most
    -- touched persons keep their keys).
    before := ARRAY(SELECT p FROM unify.persons p WHERE p.person_id = ANY (touched));
    PERFORM unify._refresh_persons(touched, rule, reason);
    regroup := ARRAY(
        SELECT t FROM unnest(touched) t
        EXCEPT
        SELECT p.person_id FROM unnest(before) b JOIN unify.persons p ON p.person_id = b.person_id
        WHERE unify._household_keys(p.postcode, p.street, p.house_number, p.phone, p.email)
              IS NOT DISTINCT FROM unify._household_keys(b.postcode, b.street, b.house_number, b.phone, b.email)
        UNION
        SELECT p.person_id FROM unnest(before) b JOIN unify.persons p ON p.household_id = b.household_id
        WHERE NOT EXISTS (SELECT 1 FROM unify.persons x WHERE x.person_id = b.person_id));
    PERFORM unify._group_households(regroup);
END
$$;

CREATE OR REPLACE FUNCTION unify.resolve()
RETURNS TABLE (persons bigint, records bigint, new_persons bigint, merges bigint, splits bigint,
               held_apart bigint, golden_changed bigint, households bigint, seconds numeric)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    clustered record;
    changed bigint;
    mark bigint;
    work_mem_before constant text := current_setting('work_mem');
BEGIN
    -- One resolve or stewardship change at a time.
    PERFORM unify._lock('persons');
    mark := unify._identity_mark();
    -- PostgreSQL's sorts and hashes within the batch budget too; the caller's work_mem back at
    -- the end (an error ends the transaction, which sets it back).
    PERFORM set_config('work_mem', unify._batch_work_mem(), true);
    SELECT * INTO STRICT clustered FROM unify._cluster(NULL::bigint[], NULL::bigint[], 'resolve', NULL);
    PERFORM unify._outbox_identity(mark);  -- merges and splits
    -- Golden records and households of everyone.
    changed := unify._refresh_persons(NULL::bigint[], 'resolve', NULL);
    PERFORM set_config('work_mem', work_mem_before, true);
    RETURN QUERY SELECT (SELECT count(*) FROM unify.persons), clustered.records,
        clustered.new_persons, clustered.merges, clustered.splits,
        clustered.held_apart, changed,
        (SELECT count(DISTINCT p.household_id) FROM unify.persons p),
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
END
$$;

CREATE OR REPLACE FUNCTION unify.unmerge(person_id bigint, reason text DEFAULT NULL) RETURNS bigint[]
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    members unify.records[];
    n int;
    persons bigint[];
    mark bigint;
BEGIN
    IF person_id IS NULL THEN
        RAISE EXCEPTION 'unify.unmerge: person_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM unify._lock('persons');
    members := ARRAY(SELECT r FROM unify.record_persons rp JOIN unify.records r ON r.record_id = rp.record_id
                     WHERE rp.person_id = unmerge.person_id ORDER BY r.record_id);
    n := coalesce(array_length(members, 1), 0);
    IF n = 0 THEN
        RAISE EXCEPTION 'unify.unmerge: person % does not exist', person_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Person ids are unify.persons.person_id.';
    END IF;
    IF n > 1000 THEN
        RAISE EXCEPTION 'unify.unmerge: person % has % records; unmerge takes at most 1000', person_id, n
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'A cluster this large is usually a junk value shared by many records: exclude it in the model''s blocking or unlink the records in groups.';
    END IF;
    -- Every pair apart: a cannot-link between each two records of the person.
    INSERT INTO unify.overrides AS o (source_a, key_a, source_b, key_b, kind, reason)
    SELECT x.source_id, x.source_key, y.source_id, y.source_key, 'cannot_link', reason
    FROM unnest(members) x, unnest(members) y
    WHERE (x.source_id, x.source_key) < (y.source_id, y.source_key)
    ON CONFLICT (source_a, key_a, source_b, key_b) DO UPDATE
    SET kind = excluded.kind, reason = excluded.reason, created_by = unify._actor(), created_at = now();
    PERFORM unify._resolve_scope(ARRAY[person_id], NULL, 'unmerge', reason);
    persons := ARRAY(SELECT rp.person_id FROM unify.record_persons rp
                     WHERE rp.record_id IN (SELECT m.record_id FROM unnest(members) m) ORDER BY rp.person_id);
    mark := unify._identity_mark();
    INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
    VALUES ('unmerge', person_id, persons, 'unmerge', reason, jsonb_build_object('records', n));
    PERFORM unify._outbox_identity(mark);
    RETURN persons;
END
$$;

CREATE OR REPLACE FUNCTION unify.erase_person(person_id bigint, reason text, delete_source_rows boolean DEFAULT false) RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    members unify.records[];
    household bigint;
    event_ref bigint;
    src unify.sources;
    keys text[];
    deleted bigint := 0;
    n bigint;
    summary jsonb;
    needles text[];
    gone_ids bigint[];
BEGIN
    IF person_id IS NULL OR reason IS NULL OR btrim(reason) = '' OR delete_source_rows IS NULL THEN
        RAISE EXCEPTION 'unify.erase_person: person_id, reason and delete_source_rows are required'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Give the legal reason, for example ''GDPR Art. 17 request of 2026-11-02''.';
    END IF;
    -- It deletes pairs and blocking keys too: not beside a rescoring.
    PERFORM unify._lock('pairs');
    PERFORM unify._lock('persons');
    members := ARRAY(SELECT r FROM unify.record_persons rp JOIN unify.records r ON r.record_id = rp.record_id
                     WHERE rp.person_id = erase_person.person_id);
    IF coalesce(array_length(members, 1), 0) = 0 THEN
        RAISE EXCEPTION 'unify.erase_person: person % does not exist', person_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Person ids are unify.persons.person_id; unify.person_history(id) shows an earlier erasure.';
    END IF;
    SELECT p.household_id INTO household FROM unify.persons p WHERE p.person_id = erase_person.person_id;
    summary := jsonb_build_object('records', array_length(members, 1),
        'sources', (SELECT jsonb_agg(DISTINCT s.name) FROM unnest(members) m JOIN unify.sources s ON s.source_id = m.source_id),
        'delete_source_rows', delete_source_rows);
    INSERT INTO unify.identity_events (event, person_id, rule, reason, details)
    VALUES ('erase', person_id, 'erase_person', reason, summary) RETURNING event_id INTO event_ref;

    -- The user's rows first: a foreign key that blocks the delete stops everything here.
    IF delete_source_rows THEN
        FOR src IN SELECT s.* FROM unify.sources s WHERE s.source_id IN (SELECT DISTINCT m.source_id FROM unnest(members) m) LOOP
            keys := ARRAY(SELECT m.source_key FROM unnest(members) m WHERE m.source_id = src.source_id);
            IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = src.relation) THEN
                CONTINUE;
            END IF;
            BEGIN
                -- As the role that registered the source, as everything of the user's table.
                n := unify._run_as(unify._mapping_role(src.run_as, src.relation),
                                   format('DELETE FROM %s AS src %s', src.relation, unify._keys_filter(src, 1)), keys);
                deleted := deleted + n;
            EXCEPTION WHEN foreign_key_violation THEN
                RAISE EXCEPTION 'unify.erase_person: cannot delete the rows of person % from %: %', person_id, src.relation_name, SQLERRM
                    USING ERRCODE = 'foreign_key_violation',
                          HINT = 'Rows of your tables still reference them (orders, for example). Delete or anonymize those first, or erase with delete_source_rows => false; nothing was changed.';
            END;
        END LOOP;
    END IF;

    -- Every value the person had, for scrubbing what the extension keeps beside records and
    -- persons: normalized and as written (raw), and the source keys.
    needles := ARRAY(
        SELECT DISTINCT v FROM (
            SELECT unnest(ARRAY[m.first_name, m.last_name, m.email, m.email_key, m.phone, m.mobile, m.street,
                                m.customer_number, m.external_id, m.company, m.source_key,
                                pg_catalog.to_char(m.birth_date, 'YYYY-MM-DD')]) AS v
            FROM unnest(members) m
            UNION ALL
            SELECT j.value FROM unnest(members) m, jsonb_each_text(m.raw) j
            WHERE j.key IN ('first_name', 'last_name', 'full_name', 'email', 'phone', 'mobile', 'street', 'street_line',
                            'birth_date', 'company', 'customer_number', 'external_id')
            UNION ALL
            SELECT unnest(ARRAY[p.first_name, p.last_name, p.email, p.phone, p.mobile, p.street, p.customer_number, p.company,
                                p.first_name_display, p.last_name_display, p.street_display, p.email_display,
                                p.phone_display, p.mobile_display])
            FROM unify.persons p WHERE p.person_id = erase_person.person_id) x
        WHERE v IS NOT NULL AND length(btrim(v)) >= 2);

    INSERT INTO unify._secret (secret)
    SELECT pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text, 'UTF8'))
    ON CONFLICT DO NOTHING;
    INSERT INTO unify.erasures (source_id, key_hash, event_id)
    SELECT m.source_id, unify._key_hash((SELECT k.secret FROM unify._secret k), m.source_key), event_ref FROM unnest(members) m
    ON CONFLICT DO NOTHING;
    -- Their pairs and blocking keys, and a blocked junk value naming them.
    PERFORM unify._forget_records(ARRAY(SELECT m.record_id FROM unnest(members) m), needles);
    DELETE FROM unify.overrides o WHERE (o.source_a, o.key_a) IN (SELECT m.source_id, m.source_key FROM unnest(members) m)
                                     OR (o.source_b, o.key_b) IN (SELECT m.source_id, m.source_key FROM unnest(members) m);
    DELETE FROM unify.change_queue q WHERE (q.source_id, q.source_key) IN (SELECT m.source_id, m.source_key FROM unnest(members) m);
    DELETE FROM unify.dead_letters d WHERE (d.source_id, d.source_key) IN (SELECT m.source_id, m.source_key FROM unnest(members) m);
    -- A batch in flight keeps the records as they were before it.
    UPDATE unify.queue_work w
    SET before = (SELECT coalesce(jsonb_agg(e), '[]') FROM jsonb_array_elements(w.before) e
                  WHERE (e ->> 'record_id')::bigint NOT IN (SELECT m.record_id FROM unnest(members) m))
    WHERE w.before IS NOT NULL AND EXISTS (
        SELECT 1 FROM jsonb_array_elements(w.before) e
        WHERE (e ->> 'record_id')::bigint IN (SELECT m.record_id FROM unnest(members) m));
    -- No other record ever goes back to the person's id, or to an id merged into it (unify._cluster
    -- never gives back an erased id either). Read before their records go, with their mappings.
    gone_ids := ARRAY(SELECT erase_person.person_id
                      UNION SELECT unnest(rp.former_person_ids) FROM unify.record_persons rp
                      WHERE rp.record_id IN (SELECT m.record_id FROM unnest(members) m));
    DELETE FROM unify.records r WHERE r.record_id IN (SELECT m.record_id FROM unnest(members) m);
    UPDATE unify.record_persons rp
    SET former_person_ids = nullif(ARRAY(SELECT f.id FROM unnest(rp.former_person_ids) WITH ORDINALITY AS f (id, n)
                                         WHERE f.id <> ALL (gone_ids) ORDER BY f.n), '{}')
    WHERE rp.former_person_ids && gone_ids;
    DELETE FROM unify.segment_history h WHERE h.person_id = erase_person.person_id;
    -- Their outbox events keep only their ids (an event's payload names no other person's
    -- values, see outbox.sql); then the erasure itself goes out.
    UPDATE unify.outbox e SET payload = NULL WHERE e.person_id = ANY (gone_ids) AND e.payload IS NOT NULL;
    PERFORM unify._outbox_identity(event_ref - 1);
    DELETE FROM unify.persons p WHERE p.person_id = erase_person.person_id;  -- segments and predictions with it
    -- Name frequencies of names only they held at training: a frequency no greater than their
    -- records with the name times the version's smallest frequency (one record's share).
    DELETE FROM unify.name_frequencies f
    USING (SELECT n.value, count(*) AS holders
           FROM unnest(members) m,
                LATERAL (SELECT DISTINCT x FROM unnest(ARRAY[m.first_name, m.last_name, unify.transliterate_de(m.first_name),
                                                              unify.transliterate_de(m.last_name)]) x WHERE x IS NOT NULL) n (value)
           GROUP BY n.value) held
    WHERE f.value = held.value
      AND f.frequency <= held.holders * 1.000001 * (SELECT min(g.frequency) FROM unify.name_frequencies g WHERE g.model_version = f.model_version);
    -- A training report or a steward's reason may name them.
    UPDATE unify.model m SET report = unify._scrub_json(m.report, needles)
    WHERE m.report IS NOT NULL AND unify._scrub_json(m.report, needles) IS DISTINCT FROM m.report;
    UPDATE unify.identity_events e
    SET reason = CASE WHEN e.reason IS NULL THEN NULL ELSE format('(redacted: erasure event %s)', event_ref) END,
        details = CASE WHEN e.details IS NULL OR e.event_id = event_ref THEN e.details ELSE unify._scrub_json(e.details, needles) END
    WHERE (e.event_id <> event_ref AND (e.person_id = erase_person.person_id OR erase_person.person_id = ANY (e.related_ids)))
       OR unify._quotes_any(e.reason, needles);
    -- Steward reasons of decisions between other records, failures of other keys.
    UPDATE unify.overrides o SET reason = format('(redacted: erasure event %s)', event_ref)
    WHERE unify._quotes_any(o.reason, needles);
    UPDATE unify.dead_letters d SET message = format('(redacted: erasure event %s)', event_ref), detail = NULL
    WHERE unify._quotes_any(d.message, needles) OR unify._quotes_any(d.detail, needles);
    -- The rest of the household is grouped again without them.
    IF household IS NOT NULL THEN
        PERFORM unify._group_households(ARRAY(SELECT p.person_id FROM unify.persons p WHERE p.household_id = household));
    END IF;
    summary := summary || jsonb_build_object('event_id', event_ref, 'source_rows_deleted', deleted);
    UPDATE unify.identity_events e SET details = summary WHERE e.event_id = event_ref;
    RETURN summary;
END
$$;

CREATE OR REPLACE FUNCTION unify.refresh_segments(as_of date DEFAULT current_date, lookback interval DEFAULT interval '2 years')
RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    stats record;
    changes bigint;
    written bigint;
    step_rows bigint;
    n_persons bigint;
    cell_segments text[];
    fractions float8[];
    r_bounds date[];
    f_bounds int[];
    m_bounds numeric[];
    notify_limit bigint;
    work_mem_before constant text := current_setting('work_mem');
BEGIN
    IF as_of IS NULL OR lookback IS NULL OR as_of = 'infinity' OR as_of = '-infinity' THEN
        RAISE EXCEPTION 'refresh_segments: as_of and lookback must be given' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- A bad setting fails before any work.
    notify_limit := unify._segment_notify_limit();
    IF as_of - lookback >= as_of THEN
        RAISE EXCEPTION 'lookback % is not a positive interval', lookback
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example interval ''2 years''.';
    END IF;
    -- One refresh at a time; a second waits.
    PERFORM unify._lock('segments');
    PERFORM unify._check_segment_map();
    -- Its sorts and hashes within the batch budget; the caller's work_mem back at the end (an
    -- error ends the transaction, which sets it back).
    PERFORM set_config('work_mem', unify._batch_work_mem(), true);
    SELECT array_agg(c.segments[1] ORDER BY c.r, c.f, c.m) INTO cell_segments FROM unify.segment_map_cells c;

    IF to_regclass('pg_temp.unify_person_rfm') IS NOT NULL THEN DROP TABLE pg_temp.unify_person_rfm; END IF;
    EXECUTE format($q$
        CREATE TEMP TABLE unify_person_rfm ON COMMIT DROP AS
        SELECT a.*, pe.person_id IS NOT NULL AND a.frequency > 0 AS scored
        FROM (SELECT person_id,
                     max(last_purchase) AS last_purchase,
                     sum(frequency)::int AS frequency,
                     greatest(coalesce(sum(monetary), 0), 0) AS monetary,
                     sum(orders) AS orders,
                     sum(skipped) AS skipped
              FROM (%s) o
              GROUP BY person_id) a
        LEFT JOIN unify.persons pe ON pe.person_id = a.person_id   -- records may name a person not yet resolved
        $q$, unify._orders_query((as_of - lookback)::date, as_of, per_customer => true));

    SELECT coalesce(sum(orders) FILTER (WHERE person_id IS NULL), 0) AS unmatched,
           coalesce(sum(orders) FILTER (WHERE person_id IS NOT NULL), 0) AS orders,
           coalesce(sum(skipped), 0) AS skipped,
           count(*) FILTER (WHERE scored) AS scored
    INTO stats FROM unify_person_rfm;
    n_persons := stats.scored;

    -- A score is 1 + the number of fifth-boundaries a value is above: value v scores at least
    -- k + 1 when at least ceil(k·n/5) scored persons do strictly worse, i.e. when the
    -- ceil(k·n/5)-th smallest value is below v. Same scores as 1 + floor(5·(rank - 1)/n), but
    -- three sorts of one column instead of three window passes over the rows. The fractions
    -- (p - 0.5)/n make percentile_disc pick exactly the p-th value whatever the rounding.
    IF n_persons > 0 THEN
        SELECT array_agg(((k * n_persons + 4) / 5 - 0.5) / n_persons ORDER BY k) INTO fractions FROM generate_series(1, 4) k;
        SELECT percentile_disc(fractions) WITHIN GROUP (ORDER BY p.last_purchase),
               percentile_disc(fractions) WITHIN GROUP (ORDER BY p.frequency),
               percentile_disc(fractions) WITHIN GROUP (ORDER BY p.monetary)
        INTO r_bounds, f_bounds, m_bounds
        FROM unify_person_rfm p WHERE p.scored;
    END IF;

    -- Only the rows to write: persons whose figures, scores or segment changed, new ones, and
    -- those leaving the window (no new row).
    IF to_regclass('pg_temp.unify_segment_writes') IS NOT NULL THEN DROP TABLE pg_temp.unify_segment_writes; END IF;
    CREATE TEMP TABLE unify_segment_writes ON COMMIT DROP AS
    WITH scored AS (
        SELECT p.person_id, p.last_purchase, p.frequency, p.monetary,
               (1 + (p.last_purchase > r_bounds[1])::int + (p.last_purchase > r_bounds[2])::int
                  + (p.last_purchase > r_bounds[3])::int + (p.last_purchase > r_bounds[4])::int)::smallint AS r_score,
               (1 + (p.frequency > f_bounds[1])::int + (p.frequency > f_bounds[2])::int
                  + (p.frequency > f_bounds[3])::int + (p.frequency > f_bounds[4])::int)::smallint AS f_score,
               (1 + (p.monetary > m_bounds[1])::int + (p.monetary > m_bounds[2])::int
                  + (p.monetary > m_bounds[3])::int + (p.monetary > m_bounds[4])::int)::smallint AS m_score
        FROM unify_person_rfm p
        WHERE p.scored
    )
    -- The segment of cell (r, f, m) is cell_segments[(r-1)*25 + (f-1)*5 + m]: an array lookup,
    -- not a join the planner cannot estimate.
    , named AS (
        SELECT s.*, cell_segments[(s.r_score - 1) * 25 + (s.f_score - 1) * 5 + s.m_score] AS segment FROM scored s
    )
    SELECT coalesce(s.person_id, o.person_id) AS person_id, s.person_id IS NOT NULL AS segmented,
           s.last_purchase, s.frequency, s.monetary, s.r_score, s.f_score, s.m_score,
           s.segment, o.person_id IS NOT NULL AS existed, o.segment AS old_segment,
           CASE WHEN o.segment = s.segment THEN o.segment_since ELSE refresh_segments.as_of END AS segment_since
    FROM named s
    FULL JOIN unify.segments o ON o.person_id = s.person_id
    WHERE (o.last_purchase, o.frequency, o.monetary, o.r_score, o.f_score, o.m_score, o.segment)
          IS DISTINCT FROM (s.last_purchase, s.frequency, s.monetary, s.r_score, s.f_score, s.m_score, s.segment);

    -- Write only what changed.
    DELETE FROM unify.segments o USING unify_segment_writes w WHERE NOT w.segmented AND o.person_id = w.person_id;
    GET DIAGNOSTICS written = ROW_COUNT;
    UPDATE unify.segments o
    SET last_purchase = w.last_purchase, frequency = w.frequency, monetary = w.monetary, r_score = w.r_score,
        f_score = w.f_score, m_score = w.m_score, segment = w.segment, segment_since = w.segment_since
    FROM unify_segment_writes w WHERE w.segmented AND w.existed AND o.person_id = w.person_id;
    GET DIAGNOSTICS step_rows = ROW_COUNT;
    written := written + step_rows;
    INSERT INTO unify.segments (person_id, last_purchase, frequency, monetary, r_score, f_score, m_score, segment, segment_since)
    SELECT w.person_id, w.last_purchase, w.frequency, w.monetary, w.r_score, w.f_score, w.m_score, w.segment, w.segment_since
    FROM unify_segment_writes w WHERE NOT w.existed;
    GET DIAGNOSTICS step_rows = ROW_COUNT;
    written := written + step_rows;

    -- Each change also goes to the outbox: left the old segment, entered the new; in chunks
    -- (unify._outbox_emit_rows), so the payloads of a run that changes everyone are never all
    -- held at once.
    IF to_regclass('pg_temp.unify_segment_changes') IS NOT NULL THEN DROP TABLE pg_temp.unify_segment_changes; END IF;
    CREATE TEMP TABLE unify_segment_changes (change_id bigint, person_id bigint, from_segment text, to_segment text, as_of date)
        ON COMMIT DROP;
    WITH history AS (
        INSERT INTO unify.segment_history AS sh (person_id, from_segment, to_segment, as_of)
        SELECT w.person_id, w.old_segment, w.segment, refresh_segments.as_of FROM unify_segment_writes w
        WHERE w.old_segment IS DISTINCT FROM w.segment
        ORDER BY w.person_id
        RETURNING sh.change_id, sh.person_id, sh.from_segment, sh.to_segment, sh.as_of
    )
    INSERT INTO pg_temp.unify_segment_changes SELECT h.change_id, h.person_id, h.from_segment, h.to_segment, h.as_of FROM history h;
    GET DIAGNOSTICS changes = ROW_COUNT;
    PERFORM unify._outbox_emit_rows('segment_left',
        $q$SELECT h.person_id, jsonb_build_object('segment', h.from_segment, 'to_segment', h.to_segment, 'as_of', h.as_of,
                                                 'change_id', h.change_id) AS payload
           FROM pg_temp.unify_segment_changes h WHERE h.from_segment IS NOT NULL ORDER BY h.change_id$q$);
    PERFORM unify._outbox_emit_rows('segment_entered',
        $q$SELECT h.person_id, jsonb_build_object('segment', h.to_segment, 'from_segment', h.from_segment, 'as_of', h.as_of,
                                                 'change_id', h.change_id) AS payload
           FROM pg_temp.unify_segment_changes h WHERE h.to_segment IS NOT NULL ORDER BY h.change_id$q$);
    -- Delivered at commit, for activation programs that LISTEN: one per change up to
    -- customer_unify.segment_notify_limit, else one for the run (the changes are in
    -- unify.segment_history and the outbox either way).
    IF changes <= notify_limit THEN
        PERFORM pg_notify('unify_segment_changed',
                          json_build_object('person_id', w.person_id, 'from', w.old_segment, 'to', w.segment)::text)
        FROM unify_segment_writes w WHERE w.old_segment IS DISTINCT FROM w.segment ORDER BY w.person_id;
    ELSE
        PERFORM pg_notify('unify_segment_changed', json_build_object('changes', changes, 'as_of', as_of)::text);
    END IF;

    INSERT INTO unify.segment_runs (as_of, lookback, persons, orders, unmatched_orders, skipped_no_rate, rows_written, changes, seconds)
    VALUES (as_of, lookback, n_persons, stats.orders, stats.unmatched, stats.skipped, written, changes,
            round(extract(epoch FROM clock_timestamp() - started)::numeric, 3));
    -- The next best actions of the persons whose segment changed (actions.sql).
    PERFORM unify._refresh_actions_after(ARRAY(SELECT w.person_id FROM unify_segment_writes w
                                               WHERE w.old_segment IS DISTINCT FROM w.segment), 'refresh_segments');

    PERFORM set_config('work_mem', work_mem_before, true);
    RETURN jsonb_build_object(
        'as_of', as_of,
        'persons', n_persons,
        'orders', stats.orders,
        'unmatched_orders', stats.unmatched,
        'skipped_no_rate', stats.skipped,
        'rows_written', written,
        'changes', changes,
        'seconds', round(extract(epoch FROM clock_timestamp() - started)::numeric, 3));
END
$$;

-- Privileges as security.sql gives them: CREATE OR REPLACE resets SECURITY DEFINER and the
-- pinned search_path; new functions start executable by PUBLIC, new tables readable by nobody.
DO $outbox_grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'unify'::regnamespace
               AND p.proname IN ('outbox_kinds', '_outbox_lock_space', '_outbox_next_id', '_outbox_emit', '_outbox_horizon',
                                 '_outbox_consumer', 'create_outbox_consumer', 'drop_outbox_consumer', 'read_outbox',
                                 'ack_outbox', 'purge_outbox', '_outbox_identity', '_identity_mark',
                                 '_refresh_persons', '_resolve_scope', 'resolve', 'unmerge', 'erase_person', 'refresh_segments') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$outbox_grants$;
REVOKE ALL ON unify.outbox, unify.outbox_consumers, unify.outbox_status, unify.outbox_event_id_seq
FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.outbox, unify.outbox_consumers, unify.outbox_status TO unify_admin;
ALTER FUNCTION unify.resolve() SECURITY DEFINER;
ALTER FUNCTION unify.unmerge(bigint, text) SECURITY DEFINER;
ALTER FUNCTION unify.erase_person(bigint, text, boolean) SECURITY DEFINER;
ALTER FUNCTION unify.refresh_segments(date, interval) SECURITY DEFINER;
ALTER FUNCTION unify.create_outbox_consumer(text, boolean) SECURITY DEFINER;
ALTER FUNCTION unify.drop_outbox_consumer(text) SECURITY DEFINER;
ALTER FUNCTION unify.read_outbox(text, int) SECURITY DEFINER;
ALTER FUNCTION unify.ack_outbox(text, bigint) SECURITY DEFINER;
ALTER FUNCTION unify.purge_outbox(interval) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION unify.resolve(), unify.unmerge(bigint, text), unify.erase_person(bigint, text, boolean),
    unify.refresh_segments(date, interval),
    unify.create_outbox_consumer(text, boolean), unify.drop_outbox_consumer(text), unify.purge_outbox(interval)
TO unify_admin;
GRANT EXECUTE ON FUNCTION unify.read_outbox(text, int), unify.ack_outbox(text, bigint), unify.outbox_kinds()
TO unify_admin, unify_reader;
GRANT SELECT ON unify.outbox_status TO unify_reader;

-- Issue 26, behavioural events: event tables registered in place (add_events, remove_events,
-- sync_events, process_events, event_fields) with their capture queue unify.event_queue, the
-- captured unify.events, the stitch map unify.identity_stitches, the views person_events,
-- open_carts and person_activity, unify.abandoned_carts and detect_abandoned_carts (a new
-- outbox kind, cart_abandoned: outbox_kinds replaced), the erasure trigger on
-- unify.identity_events, and customer_360 with the behaviour columns last. The text below is
-- src/sql/events.sql, the new Rust function as the install script has it, and the replaced
-- outbox_kinds and customer_360.
-- Behavioural events (issue 26): the user's web/app tracking tables registered in place
-- (unify.add_events) and captured like a source: a trigger owned by unify_capture queues the
-- changed row keys (unify.event_queue), unify.process_events stages those rows through the
-- mapping as the registering role (unify._run_as) into unify.events. The person of an event
-- (unify._event_person_rule) comes through the records: a source key, a customer number, an
-- e-mail key (unify.email_match_key, the records' cleaner) or an anonymous id stitched to a
-- login (unify.identity_stitches). It is stored on the event (events.person_id) when the event
-- is written and again for the events of every person that _refresh_persons refreshes (merges,
-- splits, undos, new records), so that one person's behaviour is an index lookup; an erasure
-- deletes them (trigger on unify.identity_events). Carts: unify.open_carts, and
-- unify.detect_abandoned_carts, which emits one 'cart_abandoned' outbox event per cart.

CREATE TABLE unify.event_sources (
    event_source_id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    relation      regclass NOT NULL,
    relation_name text NOT NULL,
    fields        jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_sync_at  timestamptz,
    -- Who registered it: its mapping runs as this role.
    run_as        regrole NOT NULL
);
COMMENT ON TABLE unify.event_sources IS 'Event tables (web/app tracking) registered in place with unify.add_events';
SELECT pg_catalog.pg_extension_config_dump('unify.event_sources', '');
SELECT pg_catalog.pg_extension_config_dump('unify.event_sources_event_source_id_seq', '');

-- One row per row of a registered event table, as its mapping gives it, with the identifiers
-- it carries (its person is worked out again from them whenever the records change).
CREATE TABLE unify.events (
    event_source_id int NOT NULL REFERENCES unify.event_sources ON DELETE CASCADE,
    event_key       text NOT NULL,
    event_type      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    product_id      text,
    value           numeric,
    quantity        numeric,
    session_id      text,
    source_id       int,
    source_key      text,
    customer_number text,
    email_key       text,
    anonymous_id    text,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    -- The person as of the last change of the event or its person's records (see
    -- unify._assign_event_persons): read by person through events_person, never worked out
    -- again on every read.
    person_id       bigint,
    stitched        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (event_source_id, event_key)
);
COMMENT ON TABLE unify.events IS 'Captured behavioural events with the identifiers they carry and their person (unify.person_events)';
COMMENT ON COLUMN unify.events.person_id IS 'The event''s person (own identifier, else the stitch of its anonymous id), kept current by process_events and whatever refreshes persons';
COMMENT ON COLUMN unify.events.stitched IS 'true: person_id comes from the stitch of the anonymous id, not from an identifier of the event';
CREATE INDEX events_source_key ON unify.events (source_id, source_key) WHERE source_key IS NOT NULL;
CREATE INDEX events_customer_number ON unify.events (customer_number) WHERE customer_number IS NOT NULL;
CREATE INDEX events_email_key ON unify.events (email_key) WHERE email_key IS NOT NULL;
CREATE INDEX events_anonymous_id ON unify.events (anonymous_id) WHERE anonymous_id IS NOT NULL;
CREATE INDEX events_person ON unify.events (person_id, occurred_at) WHERE person_id IS NOT NULL;
SELECT pg_catalog.pg_extension_config_dump('unify.events', '');

-- Changed keys of event tables (event_key NULL: a truncate, read the whole table again). As
-- unify.change_queue: no key or foreign key, so the capture's insert is a bare heap insert.
CREATE TABLE unify.event_queue (
    event_source_id int NOT NULL,
    event_key       text,
    enqueued_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE unify.event_queue IS 'Event table rows changed since last processed; drained by unify.process_events()';
SELECT pg_catalog.pg_extension_config_dump('unify.event_queue', '');

-- The stitch map: an anonymous id (cookie, device id) belongs to whoever the latest event
-- carrying it together with a known identifier (a login) names. Kept as that login's
-- identifiers, resolved to a person when read, so that merges and splits need no rewrite.
CREATE TABLE unify.identity_stitches (
    anonymous_id    text PRIMARY KEY,
    source_id       int,
    source_key      text,
    customer_number text,
    email_key       text,
    event_source_id int NOT NULL REFERENCES unify.event_sources ON DELETE CASCADE,
    event_key       text NOT NULL,
    logged_in_at    timestamptz NOT NULL,
    first_seen_at   timestamptz NOT NULL
);
COMMENT ON TABLE unify.identity_stitches IS 'Anonymous ids stitched to the identifiers of their latest login event (unify.person_events resolves them to persons)';
SELECT pg_catalog.pg_extension_config_dump('unify.identity_stitches', '');

-- Carts reported abandoned (one 'cart_abandoned' outbox event each): a cart is named by its
-- first addition (event table id : event key), so it is never reported twice.
CREATE TABLE unify.abandoned_carts (
    cart_id          text PRIMARY KEY,
    person_id        bigint NOT NULL,
    started_at       timestamptz NOT NULL,
    last_activity_at timestamptz NOT NULL,
    items            numeric NOT NULL,
    value            numeric NOT NULL,
    abandoned_at     timestamptz NOT NULL
);
COMMENT ON TABLE unify.abandoned_carts IS 'Carts reported abandoned by unify.detect_abandoned_carts, once each';
CREATE INDEX abandoned_carts_person ON unify.abandoned_carts (person_id);
SELECT pg_catalog.pg_extension_config_dump('unify.abandoned_carts', '');

-- The fields a mapping may name and the type each is staged as.
CREATE FUNCTION unify.event_fields() RETURNS TABLE (field text, type text, required boolean, description text)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    VALUES ('event_id', 'text', true, 'the column holding the row''s unique key (a column name, not an expression)'),
           ('event_type', 'text', true, 'page_view, product_view, add_to_cart, remove_from_cart, purchase, or any other (lower-cased)'),
           ('occurred_at', 'timestamptz', true, 'when it happened'),
           ('product_id', 'text', false, 'the product viewed or put in the cart'),
           ('value', 'numeric', false, 'the value of a cart line or purchase'),
           ('quantity', 'numeric', false, 'items added or removed (default 1)'),
           ('session_id', 'text', false, 'the visit (session) it belongs to'),
           ('source', 'text', false, 'the name of a registered source whose key source_key holds'),
           ('source_key', 'text', false, 'the key of the person''s row in that source'),
           ('customer_number', 'text', false, 'a customer number as the records carry it'),
           ('email', 'text', false, 'an e-mail address (matched by unify.email_match_key)'),
           ('anonymous_id', 'text', false, 'a cookie or device id, stitched to the person at a login')
$$;
COMMENT ON FUNCTION unify.event_fields() IS 'The fields an event mapping (unify.add_events) may name, their type and meaning';

-- The SQL text of one mapped field, cast to its type (timestamps through unify._timestamptz).
CREATE FUNCTION unify._event_expression(fields jsonb, field text) RETURNS text
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE field WHEN 'event_id' THEN format('(src.%I)::text', fields ->> field)
                      WHEN 'occurred_at' THEN 'unify._timestamptz((' || (fields ->> field) || '))'
                      WHEN 'value' THEN '(' || (fields ->> field) || ')::numeric'
                      WHEN 'quantity' THEN '(' || (fields ->> field) || ')::numeric'
                      ELSE '(' || (fields ->> field) || ')::text' END
$$;

CREATE FUNCTION unify.add_events(name text, relation regclass, fields jsonb) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    rel_kind "char";
    rel_name text;
    field text;
    unknown text[];
    new_id int;
    known constant text[] := ARRAY(SELECT f.field FROM unify.event_fields() f);
    identifiers constant text[] := ARRAY['source_key', 'customer_number', 'email', 'anonymous_id'];
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid events name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A name is lowercase letters, digits and underscores, starting with a letter, for example ''web''.';
    END IF;
    IF EXISTS (SELECT 1 FROM unify.event_sources e WHERE e.name = add_events.name) THEN
        RAISE EXCEPTION 'events "%" already exist', name
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or unify.remove_events() the existing one first.';
    END IF;
    IF relation IS NULL OR fields IS NULL THEN
        RAISE EXCEPTION 'add_events: relation and fields must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'For example unify.add_events(''web'', ''shop.tracking'', ''{"event_id": "id", "event_type": "kind", "occurred_at": "at", "anonymous_id": "cookie"}'').';
    END IF;
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO rel_kind, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relation;
    IF rel_kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', rel_name USING ERRCODE = 'wrong_object_type',
            HINT = 'Events are captured by a trigger: register a table (or a partitioned table), not a view.';
    END IF;
    PERFORM unify._require_select(relation, rel_name);
    IF jsonb_typeof(fields) <> 'object' THEN
        RAISE EXCEPTION 'fields must be a JSON object mapping event fields to columns or expressions'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"event_id": "id", "event_type": "kind", "occurred_at": "at", "anonymous_id": "cookie", "email": "login_email"}.';
    END IF;
    SELECT array_agg(k ORDER BY k) INTO unknown FROM jsonb_object_keys(fields) k WHERE k <> ALL (known);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown field "%" in fields', unknown[1]
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Known fields: ' || array_to_string(known, ', ') || ' (SELECT * FROM unify.event_fields()).';
    END IF;
    IF NOT fields ?& ARRAY['event_id', 'event_type', 'occurred_at'] THEN
        RAISE EXCEPTION 'fields must map event_id, event_type and occurred_at'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'event_id names the column of the row''s key; for example {"event_id": "id", "event_type": "kind", "occurred_at": "at", …}.';
    END IF;
    IF NOT fields ?| identifiers THEN
        RAISE EXCEPTION 'fields must map at least one identifier: %', array_to_string(identifiers, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Events reach a person through a source key, a customer number, an e-mail or an anonymous id stitched at a login.';
    END IF;
    IF (fields ? 'source') <> (fields ? 'source_key') THEN
        RAISE EXCEPTION 'fields must map source and source_key together'
            USING ERRCODE = 'invalid_parameter_value', HINT = '"source" names a registered source, "source_key" its key in the event row.';
    END IF;
    FOR field IN SELECT k FROM jsonb_object_keys(fields) k ORDER BY k LOOP
        IF jsonb_typeof(fields -> field) <> 'string' OR btrim(fields ->> field) = '' THEN
            RAISE EXCEPTION 'field "%" must map to a column name or an SQL expression as a non-empty string', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF field = 'source' THEN
            IF NOT EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = add_events.fields ->> 'source' AND s.removed_at IS NULL) THEN
                RAISE EXCEPTION 'field "source": no source named %', quote_literal(fields ->> 'source')
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Name a registered source (SELECT name FROM unify.sources).';
            END IF;
            CONTINUE;
        END IF;
        IF field = 'event_id' AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = relation
                                                AND a.attname = fields ->> 'event_id' AND a.attnum > 0 AND NOT a.attisdropped) THEN
            RAISE EXCEPTION 'field "event_id": % has no column %', rel_name, quote_ident(fields ->> 'event_id')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'event_id names the column holding each row''s unique key (the capture trigger reads it), not an expression.';
        END IF;
        BEGIN
            EXECUTE format('SELECT %s FROM %s AS src LIMIT 0', unify._event_expression(fields, field), relation);
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'field "%": % is not a valid expression over %', field, fields ->> field, rel_name
                USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                      HINT = 'Map each field to a column or an SQL expression over the columns, for example "CASE kind WHEN ''basket_add'' THEN ''add_to_cart'' ELSE kind END" for event_type.';
        END;
    END LOOP;

    -- Recorded with the caller as the mapping's role, by the extension's code; the capture
    -- triggers go on the table there too.
    new_id := unify._register_events(add_events.name, add_events.relation, rel_name, add_events.fields);
    PERFORM unify.sync_events(add_events.name);
    RETURN new_id;
END
$$;
COMMENT ON FUNCTION unify.add_events(text, regclass, jsonb) IS 'Registers an event table (web/app tracking) in place and captures its changes; reads it once';

-- The capture of an event table: queues the row's key (read through to_jsonb, so a changed
-- column type or a renamed key column never fails the application's write: a missing key
-- queues a full read instead). Owned by unify_capture, which may only insert into the queue.
CREATE FUNCTION unify._create_event_capture(id int) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    es unify.event_sources;
BEGIN
    SELECT * INTO STRICT es FROM unify.event_sources e WHERE e.event_source_id = id;
    EXECUTE format($f$
CREATE OR REPLACE FUNCTION unify.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF to_regclass('unify.event_queue') IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_LEVEL = 'STATEMENT' THEN
        INSERT INTO unify.event_queue (event_source_id, event_key) VALUES (%s, NULL);
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO unify.event_queue (event_source_id, event_key) VALUES (%s, to_jsonb(NEW) ->> %L);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO unify.event_queue (event_source_id, event_key) VALUES (%s, to_jsonb(OLD) ->> %L);
    ELSE
        INSERT INTO unify.event_queue (event_source_id, event_key)
        SELECT DISTINCT %s, k FROM (VALUES (to_jsonb(OLD) ->> %L), (to_jsonb(NEW) ->> %L)) v (k);
    END IF;
    RETURN NULL;
END
$body$
$f$, '_capture_events_' || id, id, id, es.fields ->> 'event_id', id, es.fields ->> 'event_id',
        id, es.fields ->> 'event_id', es.fields ->> 'event_id');
    EXECUTE format('ALTER FUNCTION unify.%I() OWNER TO unify_capture', '_capture_events_' || id);
    EXECUTE format('REVOKE ALL ON FUNCTION unify.%I() FROM PUBLIC', '_capture_events_' || id);
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION unify.%I()',
                   'unify_capture_events_' || id, es.relation, '_capture_events_' || id);
    EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION unify.%I()',
                   'unify_capture_events_truncate_' || id, es.relation, '_capture_events_' || id);
END
$$;

CREATE FUNCTION unify._checked_event_source(name text) RETURNS unify.event_sources
STABLE LANGUAGE plpgsql AS $$
DECLARE
    es unify.event_sources;
BEGIN
    SELECT * INTO es FROM unify.event_sources e WHERE e.name = _checked_event_source.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'events "%" do not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM unify.event_sources.';
    END IF;
    RETURN es;
END
$$;

CREATE FUNCTION unify.remove_events(name text) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    es unify.event_sources;
BEGIN
    es := unify._checked_event_source(name);
    IF EXISTS (SELECT 1 FROM pg_class WHERE oid = es.relation) THEN
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'unify_capture_events_' || es.event_source_id, es.relation);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'unify_capture_events_truncate_' || es.event_source_id, es.relation);
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS unify.%I()', '_capture_events_' || es.event_source_id);
    DELETE FROM unify.event_queue q WHERE q.event_source_id = es.event_source_id;
    -- Its events and the stitches of its logins go with it; other tables' logins may stitch anew.
    DELETE FROM unify.event_sources e WHERE e.event_source_id = es.event_source_id;
    PERFORM unify._restitch(NULL);
    PERFORM unify._refresh_actions_after(NULL, 'remove_events');
END
$$;
COMMENT ON FUNCTION unify.remove_events(text) IS 'Unregisters an event table: its capture and captured events are removed (the table itself is untouched)';

-- The stitch map of the given anonymous ids (NULL: all) anew from the events: the latest event
-- carrying the id and an identifier (a login) names the person, for the whole history of the id.
-- The ids are joined, not searched with = ANY: a parameter array is searched element by element
-- for every row (200,000 cookies of a first read made that quadratic).
CREATE FUNCTION unify._restitch(anonymous_ids text[]) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF anonymous_ids IS NULL THEN
        DELETE FROM unify.identity_stitches;
        INSERT INTO unify.identity_stitches (anonymous_id, source_id, source_key, customer_number, email_key,
                                             event_source_id, event_key, logged_in_at, first_seen_at)
        SELECT DISTINCT ON (e.anonymous_id) e.anonymous_id, e.source_id, e.source_key, e.customer_number, e.email_key,
               e.event_source_id, e.event_key, e.occurred_at, f.first_seen_at
        FROM unify.events e
        JOIN (SELECT a.anonymous_id, min(a.occurred_at) AS first_seen_at FROM unify.events a
              WHERE a.anonymous_id IS NOT NULL GROUP BY a.anonymous_id) f ON f.anonymous_id = e.anonymous_id
        WHERE e.source_key IS NOT NULL OR e.customer_number IS NOT NULL OR e.email_key IS NOT NULL
        ORDER BY e.anonymous_id, e.occurred_at DESC, e.event_source_id DESC, e.event_key DESC;
        RETURN;
    END IF;
    DELETE FROM unify.identity_stitches s USING (SELECT DISTINCT unnest(anonymous_ids) AS anonymous_id) t
    WHERE s.anonymous_id = t.anonymous_id;
    INSERT INTO unify.identity_stitches (anonymous_id, source_id, source_key, customer_number, email_key,
                                         event_source_id, event_key, logged_in_at, first_seen_at)
    SELECT DISTINCT ON (e.anonymous_id) e.anonymous_id, e.source_id, e.source_key, e.customer_number, e.email_key,
           e.event_source_id, e.event_key, e.occurred_at,
           (SELECT min(a.occurred_at) FROM unify.events a WHERE a.anonymous_id = e.anonymous_id)
    FROM (SELECT DISTINCT unnest(anonymous_ids) AS anonymous_id) t
    JOIN unify.events e ON e.anonymous_id = t.anonymous_id
    WHERE e.source_key IS NOT NULL OR e.customer_number IS NOT NULL OR e.email_key IS NOT NULL
    ORDER BY e.anonymous_id, e.occurred_at DESC, e.event_source_id DESC, e.event_key DESC;
END
$$;

-- Stages the rows of `keys` (NULL: all rows) of one event table through its mapping, as the
-- role that registered it, and replaces their events; returns how many events it wrote.
CREATE FUNCTION unify._load_events(es unify.event_sources, keys text[]) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    f constant jsonb := es.fields;
    stage text;
    mapping_role regrole;
    touched text[];
    added text[];
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = es.relation) THEN
        RAISE EXCEPTION 'the table % of events "%" no longer exists', es.relation_name, es.name
            USING ERRCODE = 'undefined_table', HINT = 'unify.remove_events(''' || es.name || ''') unregisters it.';
    END IF;
    -- Under a name no one can guess, insertable only by the mapping's role (see _orders_query).
    stage := format('unify_events_%s_%s', es.event_source_id, replace(gen_random_uuid()::text, '-', ''));
    mapping_role := unify._mapping_role(es.run_as, es.relation);
    EXECUTE format('CREATE TEMP TABLE %I (event_key text, event_type text, occurred_at timestamptz, product_id text,
                                          value numeric, quantity numeric, session_id text, source_key text,
                                          customer_number text, email text, anonymous_id text) ON COMMIT DROP', stage);
    EXECUTE format('GRANT INSERT ON pg_temp.%I TO %s', stage, mapping_role);
    PERFORM unify._run_as(mapping_role, format('INSERT INTO pg_temp.%I SELECT %s FROM %s AS src%s', stage,
        (SELECT string_agg(CASE WHEN f ? x.field THEN unify._event_expression(f, x.field) ELSE 'NULL' END, ', ' ORDER BY x.n)
         FROM unnest(ARRAY['event_id', 'event_type', 'occurred_at', 'product_id', 'value', 'quantity', 'session_id',
                           'source_key', 'customer_number', 'email', 'anonymous_id']) WITH ORDINALITY AS x (field, n)),
        es.relation,
        CASE WHEN keys IS NULL THEN '' ELSE format(' WHERE (src.%I)::text = ANY ($1)', f ->> 'event_id') END), keys);
    EXECUTE format('REVOKE ALL ON pg_temp.%I FROM %s', stage, mapping_role);

    WITH gone AS (
        DELETE FROM unify.events e
        WHERE e.event_source_id = es.event_source_id AND (keys IS NULL OR e.event_key = ANY (keys))
        RETURNING e.anonymous_id)
    SELECT array_agg(DISTINCT g.anonymous_id) FILTER (WHERE g.anonymous_id IS NOT NULL) INTO touched FROM gone g;
    EXECUTE format($q$
        WITH written AS (
            INSERT INTO unify.events (event_source_id, event_key, event_type, occurred_at, product_id, value, quantity,
                                      session_id, source_id, source_key, customer_number, email_key, anonymous_id)
            SELECT %s, s.event_key, lower(btrim(s.event_type)), s.occurred_at, nullif(btrim(s.product_id), ''), s.value,
                   s.quantity, nullif(btrim(s.session_id), ''), %s, nullif(btrim(s.source_key), ''),
                   nullif(btrim(s.customer_number), ''), unify.email_match_key(s.email), nullif(btrim(s.anonymous_id), '')
            FROM pg_temp.%I s
            WHERE s.event_key IS NOT NULL AND nullif(btrim(s.event_type), '') IS NOT NULL AND s.occurred_at IS NOT NULL
            ON CONFLICT DO NOTHING
            RETURNING anonymous_id)
        SELECT count(*), array_agg(DISTINCT w.anonymous_id) FILTER (WHERE w.anonymous_id IS NOT NULL) FROM written w$q$,
        es.event_source_id,
        coalesce((SELECT s.source_id::text FROM unify.sources s WHERE s.name = f ->> 'source'), 'NULL'),
        stage) INTO n, added;
    EXECUTE format('DROP TABLE pg_temp.%I', stage);
    touched := ARRAY(SELECT DISTINCT t FROM unnest(coalesce(touched, '{}') || coalesce(added, '{}')) t);
    -- Their stitches and persons: the events written, and every event of an anonymous id
    -- stitched anew (its history before the login included). A whole table: all of them.
    IF keys IS NULL THEN
        PERFORM unify._restitch(NULL);
        PERFORM unify._refresh_event_persons(NULL);
    ELSIF cardinality(touched) > 0 OR n > 0 THEN
        IF cardinality(touched) > 0 THEN
            PERFORM unify._restitch(touched);
        END IF;
        PERFORM unify._assign_event_persons(array_agg(c.event_source_id), array_agg(c.event_key))
        FROM (SELECT e.event_source_id, e.event_key FROM unify.events e
              JOIN unnest(keys) k (event_key) ON e.event_source_id = es.event_source_id AND e.event_key = k.event_key
              UNION
              SELECT e.event_source_id, e.event_key FROM unify.events e
              JOIN unnest(touched) t (anonymous_id) ON e.anonymous_id = t.anonymous_id) c;
    END IF;
    UPDATE unify.event_sources e SET last_sync_at = now() WHERE e.event_source_id = es.event_source_id;
    RETURN n;
END
$$;

-- Reads event tables whole (NULL: every one): their captured events anew. add_events calls it.
CREATE FUNCTION unify.sync_events(name text DEFAULT NULL) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    es unify.event_sources;
    n bigint := 0;
BEGIN
    IF name IS NOT NULL THEN
        PERFORM unify._checked_event_source(name);
    END IF;
    FOR es IN SELECT * FROM unify.event_sources e WHERE sync_events.name IS NULL OR e.name = sync_events.name
              ORDER BY e.event_source_id FOR NO KEY UPDATE LOOP
        DELETE FROM unify.event_queue q WHERE q.event_source_id = es.event_source_id;
        n := n + unify._load_events(es, NULL);
    END LOOP;
    -- Carts may have opened or closed for anyone: every next best action (actions.sql).
    PERFORM unify._refresh_actions_after(NULL, 'sync_events');
    RETURN n;
END
$$;
COMMENT ON FUNCTION unify.sync_events(text) IS 'Reads registered event tables whole (NULL: all) through their mappings; returns the events written';

-- Applies the queued changes of event tables (NULL: every one). A table whose mapping fails
-- keeps its changes queued (a WARNING names the error); the others go on.
CREATE FUNCTION unify.process_events(name text DEFAULT NULL) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    es unify.event_sources;
    keys text[];
    whole boolean;
    n bigint := 0;
    touched bigint[] := '{}';
    everyone boolean := false;
BEGIN
    IF name IS NOT NULL THEN
        PERFORM unify._checked_event_source(name);
    END IF;
    FOR es IN SELECT * FROM unify.event_sources e WHERE process_events.name IS NULL OR e.name = process_events.name
              ORDER BY e.event_source_id LOOP
        BEGIN
            -- One sync of a table at a time (concurrent ones wait, then find its keys taken).
            PERFORM 1 FROM unify.event_sources e WHERE e.event_source_id = es.event_source_id FOR NO KEY UPDATE;
            WITH taken AS (DELETE FROM unify.event_queue q WHERE q.event_source_id = es.event_source_id RETURNING q.event_key)
            SELECT array_agg(DISTINCT t.event_key) FILTER (WHERE t.event_key IS NOT NULL), bool_or(t.event_key IS NULL)
            INTO keys, whole FROM taken t;
            IF whole THEN
                n := n + unify._load_events(es, NULL);
                everyone := true;
            ELSIF keys IS NOT NULL THEN
                n := n + unify._load_events(es, keys);
                -- Whose cart these events may have opened or closed: the persons of the events
                -- and of the anonymous histories they belong to (a login moves a history).
                -- Two key lookups from the batch's events (an OR of both scanned every event).
                touched := touched || ARRAY(
                    WITH changed AS (
                        SELECT e.person_id, e.anonymous_id FROM unify.events e
                        JOIN unnest(keys) k (event_key) ON e.event_source_id = es.event_source_id AND e.event_key = k.event_key)
                    SELECT c.person_id FROM changed c WHERE c.person_id IS NOT NULL
                    UNION
                    SELECT h.person_id FROM (SELECT DISTINCT c.anonymous_id FROM changed c WHERE c.anonymous_id IS NOT NULL) a
                    JOIN unify.events h ON h.anonymous_id = a.anonymous_id
                    WHERE h.person_id IS NOT NULL);
            END IF;
        EXCEPTION WHEN others THEN
            RAISE WARNING 'customer_unify: events "%" not processed: % (SQLSTATE %)', es.name, SQLERRM, SQLSTATE
                USING HINT = 'Its changes stay queued; fix the mapping or table, then call unify.process_events() again.';
        END;
    END LOOP;
    -- Their next best actions (actions.sql), and those of the persons whose action rests on a
    -- cart rule (a deleted event or a history stitched elsewhere may have closed their cart).
    IF everyone THEN
        PERFORM unify._refresh_actions_after(NULL, 'process_events');
    ELSIF cardinality(touched) > 0 THEN
        PERFORM unify._refresh_actions_after(ARRAY(
            SELECT t FROM unnest(touched) t
            UNION
            SELECT a.person_id FROM unify.person_actions a
            WHERE a.rule_priority IN (SELECT r.priority FROM unify.action_rules r WHERE r.cart IS NOT NULL)), 'process_events');
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION unify.process_events(text) IS 'Applies the captured changes of event tables (NULL: all); returns the events written';

-- The rule: every captured event with its person as the records are now: the event's own identifier
-- first (source key, customer number, an e-mail key held by one person only), else the stitch
-- of its anonymous id (stitched: true).
CREATE VIEW unify._event_person_rule AS
SELECT e.event_source_id, e.event_key, coalesce(d.person_id, st.person_id) AS person_id,
       d.person_id IS NULL AND st.person_id IS NOT NULL AS stitched
FROM unify.events e
LEFT JOIN LATERAL (
    SELECT coalesce(
        (SELECT r.person_id FROM unify.records r WHERE r.source_id = e.source_id AND r.source_key = e.source_key),
        (SELECT r.person_id FROM unify.records r WHERE r.customer_number = e.customer_number AND r.person_id IS NOT NULL
         ORDER BY r.record_id LIMIT 1),
        (SELECT min(r.person_id) FROM unify.records r WHERE r.email_key = e.email_key AND r.person_id IS NOT NULL
         HAVING count(DISTINCT r.person_id) = 1)) AS person_id) d ON true
LEFT JOIN unify.identity_stitches s ON s.anonymous_id = e.anonymous_id
LEFT JOIN LATERAL (
    SELECT coalesce(
        (SELECT r.person_id FROM unify.records r WHERE r.source_id = s.source_id AND r.source_key = s.source_key),
        (SELECT r.person_id FROM unify.records r WHERE r.customer_number = s.customer_number AND r.person_id IS NOT NULL
         ORDER BY r.record_id LIMIT 1),
        (SELECT min(r.person_id) FROM unify.records r WHERE r.email_key = s.email_key AND r.person_id IS NOT NULL
         HAVING count(DISTINCT r.person_id) = 1)) AS person_id
    WHERE s.anonymous_id IS NOT NULL) st ON true;

-- Sets the stored person of the events keyed in `keys` (event_source_id, event_key) by the rule
-- above, where it differs. Returns how many changed.
CREATE FUNCTION unify._assign_event_persons(event_source_ids int[], event_keys text[]) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    UPDATE unify.events e SET person_id = r.person_id, stitched = r.stitched
    FROM unify._event_person_rule r
    JOIN unnest(event_source_ids, event_keys) k (event_source_id, event_key)
      ON r.event_source_id = k.event_source_id AND r.event_key = k.event_key
    WHERE e.event_source_id = r.event_source_id AND e.event_key = r.event_key
      AND (e.person_id IS DISTINCT FROM r.person_id OR e.stitched IS DISTINCT FROM r.stitched);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- After persons changed (unify._refresh_persons; person_ids NULL: all): the events that named
-- them or carry an identifier of their records, directly or through a stitch, get their person
-- anew. Index lookups from the persons' records, so a queue batch costs what it touches.
CREATE FUNCTION unify._refresh_event_persons(person_ids bigint[]) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    ids int[];
    keys text[];
    n bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unify.events) THEN
        RETURN 0;
    END IF;
    IF person_ids IS NULL THEN
        -- Every event: the rule of unify._event_person_rule as joins (each customer number's and
        -- e-mail key's person worked out once, not looked up per event).
        UPDATE unify.events e SET person_id = x.person_id, stitched = x.stitched
        FROM (
            WITH by_number AS MATERIALIZED (
                SELECT DISTINCT ON (r.customer_number) r.customer_number, rp.person_id
                FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
                WHERE r.customer_number IS NOT NULL
                ORDER BY r.customer_number, r.record_id
            ), by_email AS MATERIALIZED (
                SELECT r.email_key, min(rp.person_id) AS person_id
                FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
                WHERE r.email_key IS NOT NULL
                GROUP BY r.email_key HAVING count(DISTINCT rp.person_id) = 1
            ), by_key AS NOT MATERIALIZED (
                SELECT r.source_id, r.source_key, rp.person_id
                FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
            )
            SELECT v.event_source_id, v.event_key,
                   coalesce(ok.person_id, onum.person_id, omail.person_id, sk.person_id, sn.person_id, sm.person_id) AS person_id,
                   coalesce(ok.person_id, onum.person_id, omail.person_id) IS NULL
                       AND coalesce(sk.person_id, sn.person_id, sm.person_id) IS NOT NULL AS stitched
            FROM unify.events v
            LEFT JOIN by_key ok ON ok.source_id = v.source_id AND ok.source_key = v.source_key
            LEFT JOIN by_number onum ON onum.customer_number = v.customer_number
            LEFT JOIN by_email omail ON omail.email_key = v.email_key
            LEFT JOIN unify.identity_stitches s ON s.anonymous_id = v.anonymous_id
            LEFT JOIN by_key sk ON sk.source_id = s.source_id AND sk.source_key = s.source_key
            LEFT JOIN by_number sn ON sn.customer_number = s.customer_number
            LEFT JOIN by_email sm ON sm.email_key = s.email_key
        ) x
        WHERE e.event_source_id = x.event_source_id AND e.event_key = x.event_key
          AND (e.person_id IS DISTINCT FROM x.person_id OR e.stitched IS DISTINCT FROM x.stitched);
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN n;
    END IF;
    WITH own AS (
        SELECT r.source_id, r.source_key, r.customer_number, r.email_key
        FROM unify.record_persons rp JOIN unify.records r ON r.record_id = rp.record_id
        WHERE rp.person_id = ANY (person_ids)
    ), anonymous AS (
        SELECT s.anonymous_id FROM unify.identity_stitches s JOIN own o ON o.source_id = s.source_id AND o.source_key = s.source_key
        UNION SELECT s.anonymous_id FROM unify.identity_stitches s JOIN own o ON o.customer_number = s.customer_number
        UNION SELECT s.anonymous_id FROM unify.identity_stitches s JOIN own o ON o.email_key = s.email_key
        UNION SELECT DISTINCT e.anonymous_id FROM unify.events e
              WHERE e.person_id = ANY (person_ids) AND e.anonymous_id IS NOT NULL
    ), candidates AS (
        SELECT e.event_source_id, e.event_key FROM unify.events e WHERE e.person_id = ANY (person_ids)
        UNION SELECT e.event_source_id, e.event_key FROM unify.events e JOIN own o ON o.source_id = e.source_id AND o.source_key = e.source_key
        UNION SELECT e.event_source_id, e.event_key FROM unify.events e JOIN own o ON o.customer_number = e.customer_number
        UNION SELECT e.event_source_id, e.event_key FROM unify.events e JOIN own o ON o.email_key = e.email_key
        UNION SELECT e.event_source_id, e.event_key FROM unify.events e JOIN anonymous a ON a.anonymous_id = e.anonymous_id
    )
    SELECT array_agg(c.event_source_id), array_agg(c.event_key) INTO ids, keys FROM candidates c;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    RETURN unify._assign_event_persons(ids, keys);
END
$$;

CREATE VIEW unify.person_events AS
SELECT e.person_id, e.stitched, e.event_source_id, e.event_key, e.event_type, e.occurred_at, e.product_id,
       e.value, e.quantity, e.session_id, e.anonymous_id
FROM unify.events e;
COMMENT ON VIEW unify.person_events IS 'Captured events with their person (own identifier, else the stitch of the anonymous id), as of the last sync of the events or resolve of their persons';

-- Per person: the open cart, made of the additions and removals after the person's last
-- purchase event; open while it holds items. Named by its first addition.
CREATE VIEW unify.open_carts AS
SELECT c.person_id,
       (array_agg(c.event_source_id || ':' || c.event_key ORDER BY c.occurred_at, c.event_source_id, c.event_key)
            FILTER (WHERE c.event_type = 'add_to_cart'))[1] AS cart_id,
       min(c.occurred_at) FILTER (WHERE c.event_type = 'add_to_cart') AS started_at,
       max(c.occurred_at) AS last_activity_at,
       sum(CASE c.event_type WHEN 'add_to_cart' THEN 1 ELSE -1 END * coalesce(c.quantity, 1)) AS items,
       sum(CASE c.event_type WHEN 'add_to_cart' THEN 1 ELSE -1 END * coalesce(c.value, 0)) AS value
FROM (SELECT e.*, max(e.occurred_at) FILTER (WHERE e.event_type = 'purchase') OVER (PARTITION BY e.person_id) AS purchased_at
      FROM unify.person_events e WHERE e.person_id IS NOT NULL) c
WHERE c.event_type IN ('add_to_cart', 'remove_from_cart') AND (c.purchased_at IS NULL OR c.occurred_at > c.purchased_at)
GROUP BY c.person_id
HAVING count(*) FILTER (WHERE c.event_type = 'add_to_cart') > 0
   AND sum(CASE c.event_type WHEN 'add_to_cart' THEN 1 ELSE -1 END * coalesce(c.quantity, 1)) > 0;
COMMENT ON VIEW unify.open_carts IS 'Per person the open cart (additions after the last purchase, still holding items): items, value, when started and last touched';

-- Per person: last visit, visits (sessions) in the last 30 days, last product viewed.
CREATE VIEW unify.person_activity AS
SELECT e.person_id, max(e.occurred_at) AS last_visit_at,
       count(DISTINCT e.session_id) FILTER (WHERE e.occurred_at > now() - interval '30 days') AS visits_30d,
       (array_agg(e.product_id ORDER BY e.occurred_at DESC) FILTER (WHERE e.event_type = 'product_view' AND e.product_id IS NOT NULL))[1]
           AS last_product_viewed
FROM unify.person_events e
WHERE e.person_id IS NOT NULL
GROUP BY e.person_id;
COMMENT ON VIEW unify.person_activity IS 'Per person from the captured events: last visit, sessions in the last 30 days, last product viewed';

-- customer_unify.cart_abandoned_after (default 1h): an interval of no cart activity.
CREATE FUNCTION unify._cart_abandoned_after() RETURNS interval
STABLE LANGUAGE plpgsql AS $$
DECLARE
    setting constant text := nullif(btrim(current_setting('customer_unify.cart_abandoned_after', true)), '');
    after interval;
BEGIN
    IF setting IS NULL THEN
        RETURN interval '1 hour';
    END IF;
    BEGIN
        after := setting::interval;
    EXCEPTION WHEN others THEN
        after := NULL;
    END;
    IF after IS NULL OR after <= interval '0' THEN
        RAISE EXCEPTION 'customer_unify.cart_abandoned_after must be a positive interval, not %', quote_literal(setting)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example SET customer_unify.cart_abandoned_after = ''1h'' (or ''30min'', ''1 day'').';
    END IF;
    RETURN after;
END
$$;

-- Reports every open cart untouched for customer_unify.cart_abandoned_after at `as_of`, once
-- per cart: one 'cart_abandoned' outbox event each, in this transaction. A purchase closes the
-- cart; a later addition opens a new one. Returns how many carts it reported.
CREATE FUNCTION unify.detect_abandoned_carts(as_of timestamptz DEFAULT now()) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    after interval;
    n bigint;
    persons bigint[];
BEGIN
    IF as_of IS NULL THEN
        RAISE EXCEPTION 'unify.detect_abandoned_carts: as_of must not be NULL' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Leave it out for now().';
    END IF;
    after := unify._cart_abandoned_after();
    -- ON CONFLICT: a cart reported before (by this run's rivals too) is not reported again.
    WITH reported AS (
        INSERT INTO unify.abandoned_carts (cart_id, person_id, started_at, last_activity_at, items, value, abandoned_at)
        SELECT c.cart_id, c.person_id, c.started_at, c.last_activity_at, c.items, c.value, as_of
        FROM unify.open_carts c
        WHERE c.last_activity_at <= as_of - after
        ORDER BY c.person_id
        ON CONFLICT (cart_id) DO NOTHING
        RETURNING *)
    SELECT unify._outbox_emit('cart_abandoned',
               coalesce(array_agg(r.person_id ORDER BY r.person_id, r.cart_id), '{}'),
               coalesce(array_agg(jsonb_build_object('cart_id', r.cart_id, 'started_at', r.started_at,
                                                     'last_activity_at', r.last_activity_at, 'items', r.items,
                                                     'value', r.value, 'abandoned_at', r.abandoned_at)
                                  ORDER BY r.person_id, r.cart_id), '{}')),
           array_agg(DISTINCT r.person_id)
    INTO n, persons FROM reported r;
    -- Their next best action (a cart reminder, by the default map; actions.sql).
    IF n > 0 THEN
        PERFORM unify._refresh_actions_after(persons, 'detect_abandoned_carts');
    END IF;
    RETURN n;
END
$$;
COMMENT ON FUNCTION unify.detect_abandoned_carts(timestamptz) IS 'Reports open carts untouched for customer_unify.cart_abandoned_after (default 1h) as cart_abandoned outbox events, once per cart';

-- Erasure: an erased person's events (their own and the stitched anonymous history), stitches
-- and reported carts go, in erase_person's transaction, while its records still name it.
CREATE FUNCTION unify._erase_events() RETURNS trigger
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unify.event_sources) THEN
        RETURN NULL;
    END IF;
    DELETE FROM unify.events e USING unify.person_events p
    WHERE p.person_id = NEW.person_id AND e.event_source_id = p.event_source_id AND e.event_key = p.event_key;
    DELETE FROM unify.identity_stitches s
    WHERE s.anonymous_id IN (SELECT p.anonymous_id FROM unify.person_events p WHERE p.person_id = NEW.person_id)
       OR EXISTS (SELECT 1 FROM unify.record_persons rp JOIN unify.records r ON r.record_id = rp.record_id
                  WHERE rp.person_id = NEW.person_id
                  AND ((r.source_id = s.source_id AND r.source_key = s.source_key)
                       OR r.customer_number = s.customer_number OR r.email_key = s.email_key));
    DELETE FROM unify.abandoned_carts c WHERE c.person_id = NEW.person_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER unify_erase_events AFTER INSERT ON unify.identity_events
    FOR EACH ROW WHEN (NEW.event = 'erase') EXECUTE FUNCTION unify._erase_events();

CREATE FUNCTION unify."_register_events"(
	"name" TEXT, /* & str */
	"relation" oid, /* pg_sys :: Oid */
	"relation_name" TEXT, /* & str */
	"fields" jsonb /* pgrx :: JsonB */
) RETURNS INT /* i32 */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_register_events_wrapper';

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
       -- Issue 26 (last, as the upgrade adds them): purchase and return probability, then
       -- behavioural events.
       pr.p_purchase, pr.return_probability,
       a.last_visit_at, coalesce(a.visits_30d, 0) AS visits_30d, a.last_product_viewed,
       oc.items AS cart_items, oc.value AS cart_value, oc.started_at AS cart_started_at,
       ac.abandoned_at AS cart_abandoned_at
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id
LEFT JOIN unify.person_activity a ON a.person_id = p.person_id
LEFT JOIN unify.open_carts oc ON oc.person_id = p.person_id
LEFT JOIN unify.abandoned_carts ac ON ac.cart_id = oc.cart_id;
COMMENT ON VIEW unify.customer_360 IS 'One row per person: golden record in display form with salutation, household, sources, consent with its proof, RFM segment, predictions and behaviour (last visit, visits, last product viewed, open cart)';

-- Privileges as src/sql/security.sql gives them.
DO $events_grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'unify'::regnamespace
               AND p.proname IN ('event_fields', '_event_expression', 'add_events', '_create_event_capture',
                                 '_checked_event_source', 'remove_events', '_restitch', '_load_events', 'sync_events',
                                 'process_events', '_cart_abandoned_after', 'detect_abandoned_carts', '_erase_events',
                                 '_register_events', 'outbox_kinds', '_assign_event_persons',
                                 '_refresh_event_persons') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$events_grants$;
REVOKE ALL ON unify.event_sources, unify.event_sources_event_source_id_seq, unify.events, unify.event_queue,
    unify.identity_stitches, unify.abandoned_carts, unify.person_events, unify.open_carts, unify.person_activity,
    unify._event_person_rule
FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.event_sources, unify.events, unify.event_queue, unify.identity_stitches, unify.abandoned_carts,
    unify.person_events, unify.open_carts, unify.person_activity, unify._event_person_rule
TO unify_admin;
ALTER FUNCTION unify.remove_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.sync_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.process_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.detect_abandoned_carts(timestamptz) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION unify.add_events(text, regclass, jsonb), unify.remove_events(text), unify.sync_events(text),
    unify.process_events(text), unify.detect_abandoned_carts(timestamptz), unify.event_fields(),
    unify._event_expression(jsonb, text), unify._register_events(text, oid, text, jsonb)
TO unify_admin;
GRANT EXECUTE ON FUNCTION unify.outbox_kinds() TO unify_admin, unify_reader;
GRANT SELECT ON unify.person_activity, unify.open_carts, unify.abandoned_carts TO unify_reader;
GRANT INSERT ON unify.event_queue TO unify_capture;

-- Issue 27, write path: a first sync of sources without records only inserts (no comparison with
-- records, no ON CONFLICT, no search for records gone), and when every synced source is new and
-- they outnumber the records held, unify.records loses all its indexes and constraints (the
-- foreign key to unify.sources too) for the load and gets them back after the last source; the
-- raw jsonb is built from the mapped fields (unify._raw_query(fields jsonb) replaces
-- unify._raw_query()); the cleaners compute each shared value once per row
-- (unify._normalized_query gains `fresh`). Grants as security.sql gives them.
DROP FUNCTION unify._raw_query();
DROP FUNCTION unify._normalized_query(int, text);

-- The staged rows with their raw values as jsonb (what a record was made from): the canonical
-- fields the mapping `fields` names, without NULLs. Built from the mapped fields only (the
-- others are NULL in every staged row), the text ones through jsonb_object(text[], text[]):
-- to_jsonb of the whole staged row looked up the output function of every column for every
-- row, a fifth of a first sync (issue 27). The jsonb values are the same.
CREATE FUNCTION unify._raw_query(fields jsonb) RETURNS text
IMMUTABLE LANGUAGE sql AS $$
SELECT $q$
SELECT s.*, unify._raw_values(s) AS raw
FROM pg_temp.unify_source_rows AS s
$q$
$$;

-- The cleaners over the rows of `raw_query` (see _raw_query) whose raw values differ from the
-- record already held: unchanged rows are not normalized again. `fresh`: the source holds no
-- record and none can appear meanwhile (a first load under sync's lock), so there is nothing to
-- compare with. A value used more than once (the country, the split street and names) is
-- computed once, in a fenced LATERAL subquery; the raw values too (compared and stored).
CREATE FUNCTION unify._normalized_query(source_id int, raw_query text, fresh boolean DEFAULT false) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
SELECT format($q$
SELECT raw.source_key,
       coalesce(c.first_name, (c.full_name).first_name) AS first_name,
       coalesce(c.last_name, (c.full_name).last_name) AS last_name,
       unify.normalize_email(raw.email) AS email,
       unify.email_match_key(raw.email) AS email_key,
       unify.normalize_phone(raw.phone, coalesce(c.country, 'DE')) AS phone,
       unify.normalize_phone(raw.mobile, coalesce(c.country, 'DE')) AS mobile,
       unify.normalize_street((c.street_parts).street) AS street,
       (c.street_parts).house_number AS house_number,
       unify.normalize_postcode(raw.postcode, coalesce(c.country, 'DE')) AS postcode,
       nullif(lower(unify.transliterate_de(btrim(raw.city))), '') AS city,
       c.country,
       unify.normalize_date(raw.birth_date) AS birth_date,
       nullif(btrim(raw.company), '') AS company,
       nullif(btrim(raw.customer_number), '') AS customer_number,
       nullif(btrim(raw.external_id), '') AS external_id,
       raw.consent_email, raw.consent_phone, raw.consent_post,
       raw.updated_at AS source_updated_at,
       unify.cologne_phonetic(coalesce(c.last_name, (c.full_name).last_name)) AS last_name_phonetic,
       raw.raw,
       coalesce(c.salutation, (n.any_name).salutation) AS salutation,
       coalesce(c.title, (n.any_name).title) AS title,
       raw.consent_email_at, raw.consent_phone_at, raw.consent_post_at
FROM (SELECT * FROM (%s) AS q OFFSET 0) AS raw
CROSS JOIN LATERAL (
    SELECT unify.normalize_name(raw.first_name) AS first_name, unify.normalize_name(raw.last_name) AS last_name,
           unify.split_full_name(raw.full_name) AS full_name, unify.normalize_country(raw.country) AS country,
           unify.split_street(coalesce(raw.street_line, raw.street || coalesce(' ' || raw.house_number, ''))) AS street_parts,
           unify.normalize_salutation(raw.salutation) AS salutation,
           coalesce(unify.normalize_title(raw.title), unify.normalize_title(raw.salutation)) AS title
    OFFSET 0) AS c
-- The salutation and title written in front of a name, where no field gave them.
CROSS JOIN LATERAL (
    SELECT CASE WHEN c.salutation IS NULL OR c.title IS NULL
                THEN unify.split_full_name(coalesce(raw.full_name, concat_ws(' ', raw.first_name, raw.last_name))) END AS any_name
    OFFSET 0) AS n
WHERE true
%2$s
%3$s
$q$, raw_query,
    CASE WHEN fresh THEN '' ELSE format($r$AND NOT EXISTS (SELECT 1 FROM unify.records r
                  WHERE r.source_id = %s AND r.source_key = raw.source_key AND r.raw = raw.raw)$r$, source_id) END,
    -- Rows of erased persons stay out; the hash is only computed for a source that has some.
    CASE WHEN EXISTS (SELECT 1 FROM unify.erasures e WHERE e.source_id = _normalized_query.source_id)
         THEN format($e$AND NOT EXISTS (SELECT 1 FROM unify.erasures e
                  WHERE e.source_id = %s AND e.key_hash = unify._key_hash((SELECT k.secret FROM unify._secret k), raw.source_key))$e$, source_id)
         ELSE '' END)
$$;

-- Brings unify.records of one source in line with the given rows of the source (all rows, or
-- the keys in `keys`): inserts, updates where the mapped values changed, deletes what is gone.
-- The rows are staged by the source's mapping, run as the role that registered it
-- (unify._run_as); the cleaners and the writes run here. A full sync stages the source once and
-- cleans and writes it in parts of about 200k rows (ranges of the stage's pages; a distributed
-- source: staged a part at a time, split by a hash of the key), with progress reported between
-- parts (NOTICE every few seconds, application_name at once). Its statements run through kept plans
-- (unify._run_kept); a queue batch leaves source_rows NULL. Errors name the source.
-- A first load (a full sync of a source without records, while this transaction holds
-- unify.records exclusively: nobody else can add its records meanwhile) only inserts: no
-- comparison with records, no ON CONFLICT, no search for records that are gone. `none_held`:
-- the caller (unify.sync's first load) holds unify.records exclusively and found no record of
-- this source under that lock, so it is not asked again: without the indexes that question
-- scans every record loaded so far (a twentieth of a first sync of four sources).
DROP FUNCTION unify._apply(unify.sources, text[]);
CREATE FUNCTION unify._apply(src unify.sources, keys text[], none_held boolean DEFAULT false, OUT source_rows bigint, OUT inserted bigint, OUT updated bigint, OUT deleted bigint)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    parts int := 1;
    part int;
    estimate float4;
    rebuild text[];
    fresh boolean := false;
    key_text constant text := format('(src.%I)::text', src.key_column);
    filter text;
    statement text;
    counts bigint[];
    started constant timestamptz := clock_timestamp();
    last_notice timestamptz := clock_timestamp();
    error_state text;
    error_message text;
    error_detail text;
    error_hint text;
    locked boolean;
    held boolean;
    staged_once boolean;
    pages int;
    -- A distributed source is read and cleaned on its shards into pg_temp.unify_clean_rows,
    -- its mapped values then staged from there (citus.sql); every other is staged here and
    -- cleaned over pg_temp.unify_source_rows.
    on_workers constant boolean := unify._cleaned_on(src.relation) = 'workers';
BEGIN
    inserted := 0;
    updated := 0;
    PERFORM unify._prepare_stage(keys IS NULL);
    IF on_workers THEN
        PERFORM unify._citus_prepare_clean(keys IS NULL);
    END IF;
    IF keys IS NULL THEN
        SELECT greatest(c.reltuples, 0) INTO estimate FROM pg_catalog.pg_class c WHERE c.oid = src.relation;
        parts := greatest(1, ceil(estimate / 200000))::int;
        -- Whether this session holds unify.records exclusively (unify.sync takes the lock before
        -- a first load of everything) and whether the source holds records. Without the indexes
        -- (dropped for such a load) the second question scans every record loaded so far: it is
        -- asked once under the lock, and again only after _drop_indexes below took the lock.
        locked := EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                          WHERE l.locktype = 'relation' AND l.relation = 'unify.records'::regclass
                            AND l.pid = pg_backend_pid() AND l.mode = 'AccessExclusiveLock' AND l.granted);
        held := NOT none_held AND EXISTS (SELECT 1 FROM unify.records r WHERE r.source_id = src.source_id);
        -- A first sync of a large source into a table holding fewer records: inserting into
        -- the secondary indexes costs more than building them once after (see _drop_indexes).
        IF estimate >= greatest(5000, (SELECT c.reltuples FROM pg_catalog.pg_class c WHERE c.oid = 'unify.records'::regclass))
           AND NOT held THEN
            rebuild := unify._drop_indexes('unify.records');
            IF NOT locked THEN
                locked := EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                                  WHERE l.locktype = 'relation' AND l.relation = 'unify.records'::regclass
                                    AND l.pid = pg_backend_pid() AND l.mode = 'AccessExclusiveLock' AND l.granted);
                held := NOT none_held AND EXISTS (SELECT 1 FROM unify.records r WHERE r.source_id = src.source_id);
            END IF;
        END IF;
        -- Nothing to compare with, and nobody can add a record meanwhile.
        fresh := locked AND NOT held;
    END IF;
    -- A full read of a local source stages the mapping once (one scan of the source, as the
    -- registering role) and then cleans and writes the staged rows a part at a time, by ranges
    -- of the stage's pages: before, each part read the whole source again for its share of
    -- the keys' hashes (as many scans of the source as parts: 50 at 10M rows). A distributed
    -- source (cleaned on its shards) is staged a part at a time by the keys' hashes.
    staged_once := keys IS NULL AND NOT on_workers;
    part := 0;
    WHILE part < parts LOOP
        IF part = 0 OR NOT staged_once THEN
            filter := CASE WHEN keys IS NOT NULL THEN unify._keys_filter(src, 1)
                           WHEN parts > 1 AND NOT staged_once
                                THEN format('WHERE (pg_catalog.hashtext(%s) & 2147483647) %% %s = %s', key_text, parts, part)
                           ELSE '' END;
            IF part > 0 THEN
                TRUNCATE pg_temp.unify_source_rows;
                IF on_workers THEN
                    TRUNCATE pg_temp.unify_clean_rows;
                END IF;
            END IF;
            BEGIN
                PERFORM unify._run_as(unify._mapping_role(src.run_as, src.relation),
                                      CASE WHEN on_workers THEN unify._citus_clean_statement(src, filter)
                                           ELSE unify._stage_statement(src, filter) END, keys);
            EXCEPTION WHEN others THEN
                GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error_message = MESSAGE_TEXT,
                                        error_detail = PG_EXCEPTION_DETAIL, error_hint = PG_EXCEPTION_HINT;
                error_hint := format('Check the mapping against the table (SELECT fields FROM unify.sources WHERE name = %L); it runs as role %s with search_path pg_catalog, pg_temp, so qualify your own functions. After the fix, SELECT unify.retry_failed(%L).',
                                     src.name, src.run_as, src.name);
                IF coalesce(error_detail, '') = '' THEN
                    RAISE EXCEPTION 'source "%": its mapping failed: %', src.name, error_message
                        USING ERRCODE = error_state, HINT = error_hint;
                END IF;
                RAISE EXCEPTION 'source "%": its mapping failed: %', src.name, error_message
                    USING ERRCODE = error_state, DETAIL = error_detail, HINT = error_hint;
            END;
            IF on_workers THEN
                PERFORM unify._citus_restage(src.fields);  -- citus.sql
            END IF;
            IF keys IS NULL AND NOT fresh THEN
                INSERT INTO pg_temp.unify_source_keys SELECT s.source_key FROM pg_temp.unify_source_rows s;
            END IF;
            filter := '';
            IF staged_once THEN
                pages := (pg_catalog.pg_relation_size('pg_temp.unify_source_rows')
                          / pg_catalog.current_setting('block_size')::int)::int;
                parts := greatest(1, least(parts, pages));
            END IF;
        END IF;
        IF staged_once AND parts > 1 THEN
            -- This part's pages of the stage; the last part to its end.
            filter := format(' WHERE s.ctid >= ''(%s,0)''::tid', part * (pages / parts))
                      || CASE WHEN part < parts - 1 THEN format(' AND s.ctid < ''(%s,0)''::tid', (part + 1) * (pages / parts)) ELSE '' END;
        END IF;
        statement := CASE WHEN fresh THEN format($insert$
            WITH added AS (
                INSERT INTO unify.records (source_id, source_key, first_name, last_name, email, email_key, phone, mobile,
                    street, house_number, postcode, city, country, birth_date, company, customer_number, external_id,
                    consent_email, consent_phone, consent_post, source_updated_at, last_name_phonetic, raw,
                    salutation, title, consent_email_at, consent_phone_at, consent_post_at)
                SELECT $1, s.source_key, s.first_name, s.last_name, s.email, s.email_key, s.phone, s.mobile,
                    s.street, s.house_number, s.postcode, s.city, s.country, s.birth_date, s.company, s.customer_number,
                    s.external_id, s.consent_email, s.consent_phone, s.consent_post, s.source_updated_at,
                    s.last_name_phonetic, s.raw, s.salutation, s.title, s.consent_email_at, s.consent_phone_at,
                    s.consent_post_at
                FROM (%s) s
                RETURNING 1)
            SELECT count(*), 0 FROM added
            $insert$, CASE WHEN on_workers THEN unify._citus_staged_query(src.source_id, true)
                           ELSE unify._normalized_query(src.source_id, unify._raw_query(src.fields) || filter, true) END)
        ELSE format($upsert$
            WITH upsert AS (
                INSERT INTO unify.records AS r (source_id, source_key, first_name, last_name, email, email_key, phone, mobile,
                    street, house_number, postcode, city, country, birth_date, company, customer_number, external_id,
                    consent_email, consent_phone, consent_post, source_updated_at, last_name_phonetic, raw,
                    salutation, title, consent_email_at, consent_phone_at, consent_post_at)
                SELECT $1, s.source_key, s.first_name, s.last_name, s.email, s.email_key, s.phone, s.mobile,
                    s.street, s.house_number, s.postcode, s.city, s.country, s.birth_date, s.company, s.customer_number,
                    s.external_id, s.consent_email, s.consent_phone, s.consent_post, s.source_updated_at,
                    s.last_name_phonetic, s.raw, s.salutation, s.title, s.consent_email_at, s.consent_phone_at,
                    s.consent_post_at
                FROM (%s) s
                ON CONFLICT (source_id, source_key) DO UPDATE SET
                    first_name = excluded.first_name, last_name = excluded.last_name, email = excluded.email,
                    email_key = excluded.email_key, phone = excluded.phone, mobile = excluded.mobile,
                    street = excluded.street, house_number = excluded.house_number, postcode = excluded.postcode,
                    city = excluded.city, country = excluded.country, birth_date = excluded.birth_date,
                    company = excluded.company, customer_number = excluded.customer_number,
                    external_id = excluded.external_id, consent_email = excluded.consent_email,
                    consent_phone = excluded.consent_phone, consent_post = excluded.consent_post,
                    source_updated_at = excluded.source_updated_at, last_name_phonetic = excluded.last_name_phonetic,
                    raw = excluded.raw, synced_at = now(), salutation = excluded.salutation, title = excluded.title,
                    consent_email_at = excluded.consent_email_at, consent_phone_at = excluded.consent_phone_at,
                    consent_post_at = excluded.consent_post_at
                WHERE r.raw IS DISTINCT FROM excluded.raw
                RETURNING (xmax = 0) AS is_insert)
            SELECT count(*) FILTER (WHERE is_insert), count(*) FILTER (WHERE NOT is_insert) FROM upsert
            $upsert$, CASE WHEN on_workers THEN unify._citus_staged_query(src.source_id, false)
                           ELSE unify._normalized_query(src.source_id, unify._raw_query(src.fields) || filter) END) END;
        counts := unify._run_kept(statement, src.source_id, keys);
        inserted := inserted + counts[1];
        updated := updated + counts[2];
        IF parts > 1 THEN
            PERFORM set_config('application_name', format('unify.sync %s %s/%s', src.name, part + 1, parts), true);
            IF clock_timestamp() - last_notice >= interval '5 seconds' THEN
                RAISE NOTICE 'sync "%": part % of %, % inserted and % updated so far, % s',
                    src.name, part + 1, parts, inserted, updated,
                    round(extract(epoch FROM clock_timestamp() - started)::numeric, 1);
                last_notice := clock_timestamp();
            END IF;
        END IF;
        part := part + 1;
    END LOOP;

    IF rebuild <> '{}' THEN
        PERFORM unify._rebuild_indexes(rebuild);
    END IF;
    IF fresh THEN
        -- One record per source row, none gone.
        source_rows := inserted;
        deleted := 0;
        RETURN;
    END IF;
    -- Records whose source row is gone: of a full sync, those whose key no part saw; of a
    -- batch, those of its keys that staged no row.
    statement := CASE WHEN keys IS NULL THEN
        'WITH gone AS (DELETE FROM unify.records r WHERE r.source_id = $1
                       AND NOT EXISTS (SELECT 1 FROM pg_temp.unify_source_keys k WHERE k.source_key = r.source_key)
                       RETURNING 1)
         SELECT count(*) FROM gone'
    ELSE
        'WITH gone AS (DELETE FROM unify.records r WHERE r.source_id = $1 AND r.source_key = ANY ($2)
                       AND NOT EXISTS (SELECT 1 FROM pg_temp.unify_source_rows s WHERE s.source_key = r.source_key)
                       RETURNING 1)
         SELECT count(*) FROM gone'
    END;
    deleted := (unify._run_kept(statement, src.source_id, keys))[1];
    IF keys IS NULL THEN
        -- After a full sync there is one record per source row.
        SELECT count(*) INTO source_rows FROM unify.records r WHERE r.source_id = src.source_id;
    END IF;
END
$$;

-- Syncing everything (a scheduled job), a source that fails is reported (WARNING, and its row
-- with `error`) and the others are synced; syncing one source raises its error.
-- A first load of every source synced, larger than the records held, runs without any index
-- or constraint of unify.records (the foreign key to unify.sources too): they are added once
-- after the last source, which checks them (issue 27: the per-row checks and index inserts
-- were half of a first sync). The table stays locked (ACCESS EXCLUSIVE) until the transaction
-- ends; an error rolls the drop back with everything else.
CREATE OR REPLACE FUNCTION unify.sync(source text DEFAULT NULL)
RETURNS TABLE (source_name text, source_rows bigint, inserted bigint, updated bigint, deleted bigint, seconds numeric, error text)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    src unify.sources;
    started timestamptz;
    result record;
    n bigint;
    error_state text;
    rebuild text[];
    foreign_key record;
BEGIN
    IF source IS NOT NULL THEN
        PERFORM unify._checked_source(source);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM unify.sources s JOIN unify.records r ON r.source_id = s.source_id
                   WHERE (sync.source IS NULL OR s.name = sync.source) AND s.removed_at IS NULL)
       AND (SELECT sum(greatest(c.reltuples, 0)) FROM unify.sources s JOIN pg_catalog.pg_class c ON c.oid = s.relation
            WHERE (sync.source IS NULL OR s.name = sync.source) AND s.removed_at IS NULL)
           >= greatest(5000, (SELECT c.reltuples FROM pg_catalog.pg_class c WHERE c.oid = 'unify.records'::regclass)) THEN
        rebuild := unify._drop_indexes('unify.records', true);
        IF rebuild <> '{}' THEN
            FOR foreign_key IN
                SELECT c.conname, pg_get_constraintdef(c.oid) AS definition FROM pg_catalog.pg_constraint c
                WHERE c.conrelid = 'unify.records'::regclass AND c.contype = 'f' ORDER BY c.conname
            LOOP
                EXECUTE format('ALTER TABLE unify.records DROP CONSTRAINT %I', foreign_key.conname);
                rebuild := rebuild || format('ALTER TABLE unify.records ADD CONSTRAINT %I %s', foreign_key.conname, foreign_key.definition);
            END LOOP;
            -- Asked again under the lock: the change queue may have added a record meanwhile,
            -- and its source's upsert needs the unique source key.
            IF EXISTS (SELECT 1 FROM unify.sources s JOIN unify.records r ON r.source_id = s.source_id
                       WHERE (sync.source IS NULL OR s.name = sync.source) AND s.removed_at IS NULL) THEN
                PERFORM unify._rebuild_indexes(rebuild);
                rebuild := NULL;
            END IF;
        END IF;
    END IF;
    FOR src IN SELECT * FROM unify.sources s
               WHERE (sync.source IS NULL OR s.name = sync.source) AND s.removed_at IS NULL
               ORDER BY s.priority, s.name LOOP
        source_name := src.name; source_rows := NULL; inserted := NULL; updated := NULL; deleted := NULL; error := NULL;
        started := clock_timestamp();
        BEGIN
            src := unify._checked_source(src.name);
            -- One sync per source at a time; the change queue may run beside it.
            PERFORM 1 FROM unify.sources s WHERE s.source_id = src.source_id FOR NO KEY UPDATE;
            PERFORM set_config('application_name', format('unify.sync %s', src.name), true);
            RAISE NOTICE 'sync "%": reading %', src.name, src.relation_name;
            -- A first load under the lock, which found no record of these sources: none to ask for.
            result := unify._apply(src, NULL, coalesce(rebuild <> '{}', false));
            n := result.source_rows;
            UPDATE unify.sources s SET last_sync_at = now(), last_sync_rows = n,
                   last_sync_seconds = round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)
            WHERE s.source_id = src.source_id;
            source_rows := n;
            inserted := result.inserted; updated := result.updated; deleted := result.deleted;
        EXCEPTION WHEN others THEN
            IF sync.source IS NOT NULL THEN
                RAISE;
            END IF;
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error := MESSAGE_TEXT;
            error := format('%s (SQLSTATE %s)', error, error_state);
            RAISE WARNING 'sync "%" failed, the other sources go on: %', src.name, error;
        END;
        seconds := round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
        IF error IS NULL THEN
            RAISE NOTICE 'sync "%": % rows, % inserted, % updated, % deleted in % s', src.name, n, inserted, updated, deleted, seconds;
        END IF;
        RETURN NEXT;
    END LOOP;
    IF rebuild <> '{}' THEN
        PERFORM unify._rebuild_indexes(rebuild);
    END IF;
END
$$;

REVOKE ALL ON FUNCTION unify._raw_query(jsonb), unify._normalized_query(int, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION unify._apply(unify.sources, text[], boolean) FROM PUBLIC;
ALTER FUNCTION unify._raw_query(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._normalized_query(int, text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._apply(unify.sources, text[], boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.sync(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.sync(text) SECURITY DEFINER;

-- Issue 27, Citus: source tables may be Citus tables (distributed or reference) and are read by
-- sync through a distributed query, a distributed one staged in key order; capture on them is
-- refused at add_source (0A000 with a hint); unify.status gains placement
-- (local/distributed/reference/citus_local) and citus.
-- New: unify._citus_present(), unify._placement(regclass), unify._citus_stage_order(regclass,
-- text), unify._citus_check_source(regclass, text, boolean); changed: unify._stage_statement
-- (appends _citus_stage_order), unify.add_source (calls the check), unify._drop_capture (drops
-- triggers only where they exist: Citus refuses DROP TRIGGER on a distributed table),
-- unify._status() and the view unify.status (two columns more, so both are dropped and made again).
-- Whether the citus extension is installed in this database.
CREATE FUNCTION unify._citus_present() RETURNS boolean
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = 'citus')
$$;

-- Where a table lives: 'distributed' (its rows in shards on the workers: hash-distributed, or a
-- single-shard distributed table), 'reference' (a copy on every node), 'citus_local' (a Citus
-- local table, on the coordinator but in Citus's metadata), 'local' (a plain table; every
-- table without Citus). NULL for NULL.
CREATE FUNCTION unify._placement(relation regclass) RETURNS text
STABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE
    method "char";
    model "char";
    colocation int;
BEGIN
    IF NOT unify._citus_present() OR to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN 'local';
    END IF;
    EXECUTE 'SELECT p.partmethod, p.repmodel, p.colocationid FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1'
        INTO method, model, colocation USING relation;
    RETURN CASE WHEN method IS NULL THEN 'local'
                WHEN method <> 'n' THEN 'distributed'
                WHEN model = 't' THEN 'reference'
                WHEN colocation = 0 THEN 'citus_local'
                ELSE 'distributed' END;
END
$$;

-- What unify._stage_statement appends to its statement: for a distributed source ' ORDER BY'
-- its key, so that its rows reach unify.records (and take their record ids) in key order,
-- whichever shard answers first; a sync of the same data then gives the same record ids every
-- time. Matching samples and breaks ties by record id, so this is what makes the persons of a
-- Citus sync reproducible. Empty for every other table (no sort where the order is the table's).
CREATE FUNCTION unify._citus_stage_order(relation regclass, key_column text) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN unify._placement(relation) = 'distributed' THEN pg_catalog.format(' ORDER BY src.%I', key_column) ELSE '' END
$$;

-- add_source's check of a Citus source (called as the caller, before the registration): a
-- distributed or reference table is registered only with track_changes => false.
CREATE FUNCTION unify._citus_check_source(relation regclass, relation_name text, track_changes boolean) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    placement constant text := unify._placement(relation);
BEGIN
    IF track_changes AND (placement = 'reference' OR (placement = 'distributed' AND unify._citus_method(relation) <> 'h')) THEN
        RAISE EXCEPTION 'changes of % table % cannot be tracked', CASE WHEN placement = 'reference' THEN placement ELSE 'non-hash-distributed' END, relation_name
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Change capture of a Citus table needs a capture queue colocated with its shards: only a hash-distributed table has one.',
                  HINT = 'Register it with track_changes => false and call unify.sync(name) on a schedule: sync reads it through a distributed query (docs/OPERATIONS.md, "Citus").';
    END IF;
    IF track_changes AND placement = 'distributed' THEN
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION unify._stage_statement(src unify.sources, filter text) RETURNS text
STABLE LANGUAGE plpgsql AS $$
DECLARE
    staged text := format('(src.%I)::text', src.key_column);
    field  text;
BEGIN
    FOREACH field IN ARRAY unify.canonical_fields() LOOP
        IF src.fields ? field THEN
            staged := staged || format(', %s', unify._staged_expression(field, src.fields ->> field));
        ELSE
            staged := staged || ', NULL';
        END IF;
    END LOOP;
    RETURN format('INSERT INTO pg_temp.unify_source_rows (source_key, %s) SELECT %s FROM %s AS src %s',
                  array_to_string(unify.canonical_fields(), ', '), staged, src.relation,
                  coalesce(filter, '') || unify._citus_stage_order(src.relation, src.key_column));  -- citus.sql
END
$$;

CREATE OR REPLACE FUNCTION unify.add_source(
    name text,
    relation regclass,
    key_column text,
    fields jsonb,
    priority int DEFAULT 100,
    track_changes boolean DEFAULT true
) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    rel_kind "char";
    rel_name text;
    key_attnum smallint;
    field text;
    expression text;
    unknown text[];
    new_id int;
    identifying constant text[] := ARRAY['first_name', 'last_name', 'full_name', 'email', 'phone', 'mobile', 'customer_number', 'external_id'];
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid source name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A source name is lowercase letters, digits and underscores, starting with a letter, for example ''shop''.';
    END IF;
    IF EXISTS (SELECT 1 FROM unify.sources s WHERE s.name = add_source.name) THEN
        RAISE EXCEPTION 'source "%" already exists', name
            USING ERRCODE = 'duplicate_object', HINT = 'Choose another name, or unify.remove_source() the existing one first.';
    END IF;
    IF relation IS NULL OR key_column IS NULL OR fields IS NULL OR priority IS NULL OR track_changes IS NULL THEN
        RAISE EXCEPTION 'add_source: relation, key_column, fields, priority and track_changes must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relkind, format('%I.%I', n.nspname, c.relname) INTO rel_kind, rel_name
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = relation;
    IF rel_kind NOT IN ('r', 'p', 'm') THEN
        RAISE EXCEPTION '% is not a table', rel_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Register the table behind the view, or a materialized view with track_changes => false.';
    END IF;
    IF rel_kind = 'm' AND track_changes THEN
        RAISE EXCEPTION 'changes of materialized view % cannot be tracked', rel_name
            USING ERRCODE = 'wrong_object_type',
                  HINT = 'Pass track_changes => false and call unify.sync() after each REFRESH.';
    END IF;
    SELECT a.attnum INTO key_attnum FROM pg_attribute a
    WHERE a.attrelid = relation AND a.attname = key_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF key_attnum IS NULL THEN
        RAISE EXCEPTION 'key column "%" does not exist in %', key_column, rel_name
            USING ERRCODE = 'undefined_column', HINT = 'key_column names the column that identifies a row, usually the primary key.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = relation AND i.indisunique AND i.indnkeyatts = 1
                   AND i.indkey[0] = key_attnum AND i.indpred IS NULL AND i.indexprs IS NULL) THEN
        RAISE EXCEPTION 'key column "%" of % is not unique', key_column, rel_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Records are kept per key: add a primary key or a unique index on %s (%I).', rel_name, key_column);
    END IF;
    -- The mapping will run as the caller: who cannot read the table cannot register it.
    PERFORM unify._require_select(relation, rel_name);
    PERFORM unify._citus_check_source(relation, rel_name, track_changes);  -- citus.sql
    IF jsonb_typeof(fields) <> 'object' OR fields = '{}'::jsonb THEN
        RAISE EXCEPTION 'fields must be a JSON object mapping canonical fields to columns or expressions'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'For example {"first_name": "vorname", "email": "e_mail", "phone": "coalesce(mobil, telefon)"}.';
    END IF;
    SELECT array_agg(k ORDER BY k) INTO unknown FROM jsonb_object_keys(fields) k WHERE k <> ALL (unify.canonical_fields());
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown field "%" in fields', unknown[1]
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known fields: ' || array_to_string(unify.canonical_fields(), ', ') || '.';
    END IF;
    IF NOT fields ?| identifying THEN
        RAISE EXCEPTION 'fields map nothing that identifies a person'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Map at least one of ' || array_to_string(identifying, ', ') || '.';
    END IF;
    FOR field, expression IN SELECT key, value #>> '{}' FROM jsonb_each(fields) ORDER BY key LOOP
        IF jsonb_typeof(fields -> field) <> 'string' OR btrim(expression) = '' THEN
            RAISE EXCEPTION 'field "%" must map to a column name or an SQL expression as a non-empty string', field
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        BEGIN
            EXECUTE format('SELECT %s FROM %s AS src LIMIT 0', unify._staged_expression(field, expression), relation);
        EXCEPTION WHEN others THEN
            RAISE EXCEPTION 'field "%": % is not a valid expression over %', field, expression, rel_name
                USING ERRCODE = 'invalid_parameter_value', DETAIL = SQLERRM,
                      HINT = 'Map each field to a column of the table or an SQL expression over its columns, for example "coalesce(mobil, telefon)".';
        END;
    END LOOP;

    -- The mapping will run as the caller (this function is SECURITY INVOKER): the catalog
    -- records who that is, and the capture trigger is made, by the extension's own code.
    new_id := unify._register_source(add_source.name, add_source.relation, rel_name, add_source.key_column,
                                     add_source.fields, add_source.priority, add_source.track_changes);
    RAISE NOTICE 'source "%" registered for %; load it with SELECT * FROM unify.sync(%)', name, rel_name, quote_literal(name);
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION unify._drop_capture(id int, relation regclass) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    -- A distributed source's capture function is dropped on the workers too, which Citus does
    -- over one connection per node only (see unify._citus_check_source).
    IF unify._citus_queue(id) IS NOT NULL THEN
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    -- Only where there are triggers: Citus refuses any DROP TRIGGER on a distributed table
    -- unless citus.enable_unsafe_triggers is on (set for these statements only).
    IF EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = relation AND t.tgname IN ('unify_capture_' || id, 'unify_capture_truncate_' || id)) THEN
        IF unify._placement(relation) <> 'local' THEN
            PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        END IF;
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'unify_capture_' || id, relation);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'unify_capture_truncate_' || id, relation);
        IF unify._placement(relation) <> 'local' THEN
            PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'off', true);
        END IF;
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS unify.%I()', '_capture_' || id);
    EXECUTE format('DROP FUNCTION IF EXISTS unify.%I()', '_capture_truncate_' || id);
    -- A distributed source's shard-local queue (citus.sql), with its shards.
    IF unify._citus_queue(id) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %s', unify._citus_queue(id));
    END IF;
END
$$;

-- unify.status and unify._status() gain placement and citus further below, with the
-- distributed sources' columns (defined once, in their final form).
-- Privileges as src/sql/security.sql gives them.
DO $citus_grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'unify'::regnamespace
               AND p.proname IN ('_citus_present', '_placement', '_citus_stage_order', '_citus_check_source') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$citus_grants$;
GRANT EXECUTE ON FUNCTION unify._citus_check_source(regclass, text, boolean), unify._placement(regclass),
    unify._citus_present()
TO unify_admin;
-- CREATE OR REPLACE set the replaced functions' settings anew: pinned again (their grants stay).
ALTER FUNCTION unify._stage_statement(unify.sources, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.add_source(text, regclass, text, jsonb, int, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._drop_capture(int, regclass) SET search_path = pg_catalog, pg_temp;

-- Issue 26, next best action: the action map unify.action_map (kept by pg_dump, with its
-- sequence; written by unify_admin), unify.default_action_map() and the view
-- unify.action_rules, each person's action in unify.person_actions (kept by pg_dump),
-- unify.refresh_actions(person_ids) with _check_action_map, _refresh_actions and
-- _refresh_actions_after, the lock 'actions', the triggers on unify.persons that recompute a
-- person's action when consent or reachability changes, and the setting
-- customer_unify.churn_risk_threshold (unify._churn_risk_threshold). Two new outbox kinds,
-- action_changed and churn_risk_crossed (outbox_kinds replaced); replaced to compute actions
-- (and emit the churn crossings): refresh_segments, fit_predictions, sync_events,
-- process_events, remove_events, detect_abandoned_carts; customer_360 gains next_action,
-- next_action_channel and next_action_since last. The text below is src/sql/actions.sql and
-- the replaced functions and view as the install script has them.

-- Next best action (issue 26): the action map (yours or the default), rows in priority order
-- from a person's segment, predictions, open cart and the consent of the channel the action
-- needs to one action per person (unify.person_actions), and an 'action_changed' outbox event
-- whenever a person's action changes. Also the churn-risk threshold of the 'churn_risk_crossed'
-- events fit_predictions emits.
--
-- When actions are computed (unify._refresh_actions): by unify.refresh_actions() (all persons,
-- or the given ones; after editing the map), at the end of refresh_segments (the persons whose
-- segment changed), of a published fit_predictions (everyone), of process_events (the persons
-- of the changed events, of their anonymous ids, and those whose action rests on a cart rule),
-- sync_events and remove_events (everyone), of detect_abandoned_carts (the persons whose cart
-- it reported), and when a person's consent or reachability on a channel changes (a trigger on
-- unify.persons, whichever command changed it). A person removed by a merge, a split or an
-- erasure loses the row with the person (ON DELETE CASCADE), as unify.segments does.

INSERT INTO unify.locks (name, what) VALUES ('actions', 'next best actions: one computation at a time');

-- The action map: the first row (lowest priority) whose every condition holds names the
-- person's action. A NULL condition holds for everyone; a condition on a prediction never holds
-- for a person without one. Empty means the default map below; to edit, copy the default in
-- (INSERT INTO unify.action_map (priority, action, …) SELECT … FROM unify.default_action_map())
-- and change it, then SELECT unify.refresh_actions().
CREATE TABLE unify.action_map (
    rule_id             int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    priority            int NOT NULL UNIQUE,
    action              text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]{0,62}$'),
    channel             text CHECK (channel IN ('email', 'phone', 'post')),
    segments            text[],
    churn_at_least      float8 CHECK (churn_at_least BETWEEN 0 AND 1),
    churn_below         float8 CHECK (churn_below BETWEEN 0 AND 1),
    p_purchase_at_least float8 CHECK (p_purchase_at_least BETWEEN 0 AND 1),
    p_purchase_below    float8 CHECK (p_purchase_below BETWEEN 0 AND 1),
    clv_at_least        float8,
    clv_below           float8,
    cart                text CHECK (cart IN ('open', 'abandoned', 'none')),
    description         text
);
COMMENT ON TABLE unify.action_map IS 'Your action map (first matching rule by priority names a person''s next best action); empty means unify.default_action_map()';
COMMENT ON COLUMN unify.action_map.action IS 'The action''s name; ''none'' means no action (and stops the rules after it)';
COMMENT ON COLUMN unify.action_map.channel IS 'The channel the action needs: it applies only to persons who consented to it and can be reached on it (email: an e-mail address; phone: a phone or mobile number; post: street and postcode)';
COMMENT ON COLUMN unify.action_map.segments IS 'The person''s RFM segment is one of these (NULL: any segment, or none)';
COMMENT ON COLUMN unify.action_map.cart IS '''open'': an open cart (abandoned or not); ''abandoned'': an open cart reported abandoned; ''none'': no open cart';
SELECT pg_catalog.pg_extension_config_dump('unify.action_map', '');
SELECT pg_catalog.pg_extension_config_dump('unify.action_map_rule_id_seq', '');

-- A German CRM's default: the abandoned cart first (a reminder the same day), the valuable
-- lapsing customers by phone and then by e-mail, the churn-prone good customers, the best by a
-- letter, a second purchase for new ones; nothing for everyone else. Calls and e-mails need
-- the person's documented consent (UWG § 7), and so does every channel here.
CREATE FUNCTION unify.default_action_map()
RETURNS TABLE (priority int, action text, channel text, segments text[], churn_at_least float8, churn_below float8,
               p_purchase_at_least float8, p_purchase_below float8, clv_at_least float8, clv_below float8,
               cart text, description text)
IMMUTABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT v.priority, v.action, v.channel, v.segments, v.churn_at_least, NULL::float8, NULL::float8, NULL::float8,
           NULL::float8, NULL::float8, v.cart, v.description
    FROM (VALUES
        (10, 'cart_reminder_email', 'email', NULL::text[], NULL::float8, 'abandoned', 'An abandoned cart: remind by e-mail'),
        (20, 'retention_call', 'phone', ARRAY['Can''t Lose Them'], NULL, NULL, 'Were the most frequent, long ago: a personal call'),
        (30, 'win_back_email', 'email', ARRAY['At Risk', 'Can''t Lose Them'], NULL, NULL, 'Bought often, long ago: a win-back offer by e-mail'),
        (40, 'retention_email', 'email', ARRAY['Champions', 'Loyal', 'Potential Loyalist'], 0.5, NULL,
             'Good customers the model sees churning: a retention offer by e-mail'),
        (50, 'vip_post_mailing', 'post', ARRAY['Champions'], NULL, NULL, 'The best customers: a VIP letter'),
        (60, 'second_purchase_email', 'email', ARRAY['New', 'Promising'], NULL, NULL, 'First-time buyers: an offer for the second purchase'),
        (1000, 'none', NULL, NULL, NULL, NULL, 'Everyone else: no action')
    ) AS v (priority, action, channel, segments, churn_at_least, cart, description)
$$;
COMMENT ON FUNCTION unify.default_action_map() IS 'The action map used while unify.action_map is empty';

CREATE VIEW unify.action_rules AS
SELECT m.rule_id, m.priority, m.action, m.channel, m.segments, m.churn_at_least, m.churn_below,
       m.p_purchase_at_least, m.p_purchase_below, m.clv_at_least, m.clv_below, m.cart, m.description, false AS is_default
FROM unify.action_map m
UNION ALL
SELECT NULL, d.priority, d.action, d.channel, d.segments, d.churn_at_least, d.churn_below,
       d.p_purchase_at_least, d.p_purchase_below, d.clv_at_least, d.clv_below, d.cart, d.description, true
FROM unify.default_action_map() d
WHERE NOT EXISTS (SELECT 1 FROM unify.action_map);
COMMENT ON VIEW unify.action_rules IS 'The action map in effect (yours, or the default while unify.action_map is empty), by priority';

-- One row per person with an action (no row: no action); `since` is when the action last
-- changed, the rule's priority and description say why.
CREATE TABLE unify.person_actions (
    person_id     bigint PRIMARY KEY REFERENCES unify.persons ON DELETE CASCADE,
    action        text NOT NULL,
    channel       text,
    rule_priority int NOT NULL,
    reason        text,
    since         timestamptz NOT NULL,
    computed_at   timestamptz NOT NULL
);
COMMENT ON TABLE unify.person_actions IS 'Each person''s next best action by the action map (no row: no action); changes go out as action_changed outbox events';
CREATE INDEX person_actions_action ON unify.person_actions (action);
SELECT pg_catalog.pg_extension_config_dump('unify.person_actions', '');

-- The map must make sense before it is used: each failure names the rule and how to fix it.
CREATE FUNCTION unify._check_action_map() RETURNS void
STABLE LANGUAGE plpgsql AS $$
DECLARE
    bad record;
    unknown text;
BEGIN
    SELECT * INTO bad FROM unify.action_rules r WHERE r.action = 'none' AND r.channel IS NOT NULL ORDER BY r.priority LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'action map rule % (priority %): action ''none'' needs no channel, not %', coalesce(bad.rule_id::text, '-'), bad.priority, bad.channel
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = '''none'' means no action; set channel to NULL, or name the action the channel is for.';
    END IF;
    SELECT * INTO bad FROM unify.action_rules r WHERE cardinality(r.segments) = 0 OR array_position(r.segments, NULL) IS NOT NULL
    ORDER BY r.priority LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'action map rule % (priority %): segments must name segments, not %', coalesce(bad.rule_id::text, '-'), bad.priority, bad.segments
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use NULL for any segment (or none), or a list of segment names.';
    END IF;
    -- A segment the segment map does not name would never match: a typo, or a renamed segment.
    SELECT r.*, s.name AS segment INTO bad
    FROM unify.action_rules r, unnest(r.segments) s (name)
    WHERE NOT r.is_default AND NOT EXISTS (SELECT 1 FROM unify.segment_rules g WHERE g.segment = s.name)
    ORDER BY r.priority LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'action map rule % (priority %): no segment named %', coalesce(bad.rule_id::text, '-'), bad.priority, quote_literal(bad.segment)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Segments are named by the segment map in effect: ' || (SELECT string_agg(DISTINCT quote_literal(g.segment), ', ') FROM unify.segment_rules g) || '.';
    END IF;
    SELECT * INTO bad FROM unify.action_rules r
    WHERE r.churn_at_least >= r.churn_below OR r.p_purchase_at_least >= r.p_purchase_below OR r.clv_at_least >= r.clv_below
    ORDER BY r.priority LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'action map rule % (priority %): an empty range (at_least must be below below)', coalesce(bad.rule_id::text, '-'), bad.priority
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'x_at_least is inclusive, x_below exclusive: churn_at_least 0.5 with churn_below 0.8 holds for 0.5 <= churn < 0.8.';
    END IF;
    -- A rule after one that holds for everyone is never reached.
    SELECT r.* INTO bad FROM unify.action_rules r
    WHERE EXISTS (SELECT 1 FROM unify.action_rules c
                  WHERE c.priority < r.priority AND c.channel IS NULL AND c.segments IS NULL AND c.cart IS NULL
                    AND num_nulls(c.churn_at_least, c.churn_below, c.p_purchase_at_least, c.p_purchase_below, c.clv_at_least, c.clv_below) = 6)
    ORDER BY r.priority LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'action map rule % (priority %, %) is never reached: a rule before it holds for everyone', coalesce(bad.rule_id::text, '-'), bad.priority, quote_literal(bad.action)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A rule without conditions and channel ends the map: give it the highest priority number, or add a condition.';
    END IF;
END
$$;

-- Computes the action of the given persons (NULL: everyone) by the map in effect, writes what
-- changed and emits one 'action_changed' outbox event per person whose action or channel
-- changed (previous and new; NULL: none). `cause` names the command, for the event.
CREATE FUNCTION unify._refresh_actions(person_ids bigint[], cause text) RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    n_persons bigint;
    n_changes bigint;
    written bigint := 0;
    step_rows bigint;
    carts boolean;
    -- Many given persons (refresh_segments after a run that changed everyone): joined from a
    -- temporary table (issue 27), not `= ANY (array)`, which holds several hundred bytes per
    -- element in the index scans' sorted keys and the plans' copies. A few (a trigger's
    -- statement): `= ANY`, without a temporary table per call.
    many constant boolean := cardinality(person_ids) > 1000;
    only_some constant text := CASE WHEN person_ids IS NULL THEN ''
                                    WHEN many THEN ' WHERE p.person_id IN (SELECT a.person_id FROM pg_temp.unify_action_persons a)'
                                    ELSE ' WHERE p.person_id = ANY ($1)' END;
BEGIN
    IF person_ids IS NOT NULL AND cardinality(person_ids) = 0 THEN
        RETURN jsonb_build_object('persons', 0, 'rows_written', 0, 'changes', 0, 'seconds', 0);
    END IF;
    PERFORM unify._lock('actions');
    PERFORM unify._check_action_map();
    IF to_regclass('pg_temp.unify_action_rules') IS NOT NULL THEN DROP TABLE pg_temp.unify_action_rules; END IF;
    IF to_regclass('pg_temp.unify_action_carts') IS NOT NULL THEN DROP TABLE pg_temp.unify_action_carts; END IF;
    IF to_regclass('pg_temp.unify_action_writes') IS NOT NULL THEN DROP TABLE pg_temp.unify_action_writes; END IF;
    IF to_regclass('pg_temp.unify_action_persons') IS NOT NULL THEN DROP TABLE pg_temp.unify_action_persons; END IF;
    IF many THEN
        CREATE TEMP TABLE unify_action_persons ON COMMIT DROP AS SELECT DISTINCT i.person_id FROM unnest(person_ids) i (person_id);
        ANALYZE pg_temp.unify_action_persons;
    END IF;
    CREATE TEMP TABLE unify_action_rules ON COMMIT DROP AS SELECT * FROM unify.action_rules;
    -- Carts only if a rule asks and events exist.
    CREATE TEMP TABLE unify_action_carts (person_id bigint PRIMARY KEY, state text NOT NULL) ON COMMIT DROP;
    carts := EXISTS (SELECT 1 FROM pg_temp.unify_action_rules r WHERE r.cart IS NOT NULL) AND EXISTS (SELECT 1 FROM unify.event_sources);
    IF carts THEN
        -- Apart: for some persons the filter reaches the events' person_id index.
        IF person_ids IS NULL THEN
            INSERT INTO pg_temp.unify_action_carts (person_id, state)
            SELECT oc.person_id, CASE WHEN ac.cart_id IS NULL THEN 'open' ELSE 'abandoned' END
            FROM unify.open_carts oc LEFT JOIN unify.abandoned_carts ac ON ac.cart_id = oc.cart_id;
        ELSE
            INSERT INTO pg_temp.unify_action_carts (person_id, state)
            SELECT oc.person_id, CASE WHEN ac.cart_id IS NULL THEN 'open' ELSE 'abandoned' END
            FROM unify.open_carts oc LEFT JOIN unify.abandoned_carts ac ON ac.cart_id = oc.cart_id
            WHERE oc.person_id = ANY (person_ids);
        END IF;
    END IF;

    EXECUTE format($q$
        CREATE TEMP TABLE unify_action_writes ON COMMIT DROP AS
        WITH computed AS (
            SELECT p.person_id, m.priority, m.action, m.channel, m.description
            FROM unify.persons p
            LEFT JOIN unify.segments s ON s.person_id = p.person_id
            LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id
            LEFT JOIN pg_temp.unify_action_carts c ON c.person_id = p.person_id
            CROSS JOIN LATERAL (
                SELECT r.priority, r.action, r.channel, r.description FROM pg_temp.unify_action_rules r
                WHERE (r.segments IS NULL OR s.segment = ANY (r.segments))
                  AND (r.churn_at_least IS NULL OR pr.churn_probability >= r.churn_at_least)
                  AND (r.churn_below IS NULL OR pr.churn_probability < r.churn_below)
                  AND (r.p_purchase_at_least IS NULL OR pr.p_purchase >= r.p_purchase_at_least)
                  AND (r.p_purchase_below IS NULL OR pr.p_purchase < r.p_purchase_below)
                  AND (r.clv_at_least IS NULL OR pr.clv >= r.clv_at_least)
                  AND (r.clv_below IS NULL OR pr.clv < r.clv_below)
                  AND (r.cart IS NULL OR r.cart = coalesce(c.state, 'none') OR (r.cart = 'open' AND c.state = 'abandoned'))
                  -- The channel: consented to and reachable on.
                  AND CASE r.channel
                      WHEN 'email' THEN coalesce(p.consent_email, false) AND p.email IS NOT NULL
                      WHEN 'phone' THEN coalesce(p.consent_phone, false) AND (p.phone IS NOT NULL OR p.mobile IS NOT NULL)
                      WHEN 'post' THEN coalesce(p.consent_post, false) AND p.street IS NOT NULL AND p.postcode IS NOT NULL
                      ELSE r.channel IS NULL END
                ORDER BY r.priority LIMIT 1) m
            %1$s
        ), wanted AS (
            SELECT * FROM computed WHERE action <> 'none'
        ), held AS (
            SELECT o.* FROM unify.person_actions o %2$s
        )
        SELECT coalesce(n.person_id, o.person_id) AS person_id, n.person_id IS NOT NULL AS has_action,
               o.person_id IS NOT NULL AS existed, n.action, n.channel, n.priority, n.description,
               o.action AS old_action, o.channel AS old_channel,
               (o.action, o.channel) IS DISTINCT FROM (n.action, n.channel) AS changed,
               CASE WHEN (o.action, o.channel) IS DISTINCT FROM (n.action, n.channel) THEN now() ELSE o.since END AS since
        FROM wanted n
        FULL JOIN held o ON o.person_id = n.person_id
        WHERE (o.action, o.channel, o.rule_priority, o.reason) IS DISTINCT FROM (n.action, n.channel, n.priority, n.description)
        $q$, only_some, replace(only_some, 'WHERE p.person_id', 'WHERE o.person_id'))
    USING person_ids;

    IF person_ids IS NULL THEN
        SELECT count(*) INTO n_persons FROM unify.persons p;
    ELSE
        EXECUTE 'SELECT count(*) FROM unify.persons p' || only_some INTO n_persons USING person_ids;
    END IF;
    DELETE FROM unify.person_actions o USING pg_temp.unify_action_writes w WHERE NOT w.has_action AND o.person_id = w.person_id;
    GET DIAGNOSTICS written = ROW_COUNT;
    UPDATE unify.person_actions o
    SET action = w.action, channel = w.channel, rule_priority = w.priority, reason = w.description, since = w.since,
        computed_at = now()
    FROM pg_temp.unify_action_writes w WHERE w.has_action AND w.existed AND o.person_id = w.person_id;
    GET DIAGNOSTICS step_rows = ROW_COUNT;
    written := written + step_rows;
    INSERT INTO unify.person_actions (person_id, action, channel, rule_priority, reason, since, computed_at)
    SELECT w.person_id, w.action, w.channel, w.priority, w.description, w.since, now()
    FROM pg_temp.unify_action_writes w WHERE w.has_action AND NOT w.existed;
    GET DIAGNOSTICS step_rows = ROW_COUNT;
    written := written + step_rows;

    -- In chunks (unify._outbox_emit_rows): a change of everyone's action holds one chunk of payloads.
    n_changes := unify._outbox_emit_rows('action_changed', format(
        $q$SELECT w.person_id, jsonb_build_object('action', w.action, 'channel', w.channel, 'previous', w.old_action,
                                                 'previous_channel', w.old_channel, 'rule_priority', w.priority,
                                                 'cause', %L::text, 'since', w.since) AS payload
           FROM pg_temp.unify_action_writes w WHERE w.changed ORDER BY w.person_id$q$, cause));

    RETURN jsonb_build_object('persons', n_persons, 'rows_written', written, 'changes', n_changes,
                              'seconds', round(extract(epoch FROM clock_timestamp() - started)::numeric, 3));
END
$$;

-- The same from the other commands: a map that fails its check, or any other failure, must not
-- undo the segments, predictions or events they wrote: a WARNING names it and the actions
-- wait for the next run (or unify.refresh_actions()).
CREATE FUNCTION unify._refresh_actions_after(person_ids bigint[], cause text) RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF person_ids IS NOT NULL AND cardinality(person_ids) = 0 THEN
        RETURN NULL;
    END IF;
    BEGIN
        RETURN unify._refresh_actions(person_ids, cause);
    EXCEPTION WHEN others THEN
        RAISE WARNING 'customer_unify: next best actions not refreshed after %: % (SQLSTATE %)', cause, SQLERRM, SQLSTATE
            USING HINT = 'Fix the action map (SELECT * FROM unify.action_rules), then SELECT unify.refresh_actions().';
        RETURN NULL;
    END;
END
$$;

CREATE FUNCTION unify.refresh_actions(person_ids bigint[] DEFAULT NULL) RETURNS jsonb
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    RETURN unify._refresh_actions(person_ids, 'refresh_actions');
END
$$;
COMMENT ON FUNCTION unify.refresh_actions(bigint[]) IS 'Computes the next best action of every person (or the given ones) by the action map, writes what changed and emits action_changed outbox events for the changes';

-- Consent (or an address) on a channel changed: the person's action is computed again at the
-- end of the statement, once for all persons it changed. Rows are collected by a row trigger
-- whose WHEN skips every other update at no cost.
CREATE FUNCTION unify._persons_channel_changed() RETURNS trigger
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('pg_temp.unify_action_pending') IS NULL THEN
        CREATE TEMP TABLE unify_action_pending (person_id bigint) ON COMMIT DROP;
    END IF;
    INSERT INTO pg_temp.unify_action_pending (person_id) VALUES (NEW.person_id);
    RETURN NULL;
END
$$;

CREATE FUNCTION unify._persons_actions_pending() RETURNS trigger
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    IF to_regclass('pg_temp.unify_action_pending') IS NULL THEN
        RETURN NULL;
    END IF;
    WITH taken AS (DELETE FROM pg_temp.unify_action_pending RETURNING person_id)
    SELECT array_agg(DISTINCT t.person_id) INTO ids FROM taken t;
    IF ids IS NOT NULL THEN
        PERFORM unify._refresh_actions_after(ids, 'consent');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER unify_persons_channel_changed AFTER UPDATE ON unify.persons
    FOR EACH ROW
    WHEN ((OLD.consent_email, OLD.consent_phone, OLD.consent_post, OLD.email IS NULL,
           OLD.phone IS NULL AND OLD.mobile IS NULL, OLD.street IS NULL OR OLD.postcode IS NULL)
          IS DISTINCT FROM
          (NEW.consent_email, NEW.consent_phone, NEW.consent_post, NEW.email IS NULL,
           NEW.phone IS NULL AND NEW.mobile IS NULL, NEW.street IS NULL OR NEW.postcode IS NULL))
    EXECUTE FUNCTION unify._persons_channel_changed();
CREATE TRIGGER unify_persons_actions_pending AFTER UPDATE ON unify.persons
    FOR EACH STATEMENT EXECUTE FUNCTION unify._persons_actions_pending();

-- customer_unify.churn_risk_threshold (default 0.5): a churn probability at or above it is a
-- churn risk; fit_predictions emits 'churn_risk_crossed' when a person's crosses it.
CREATE FUNCTION unify._churn_risk_threshold() RETURNS float8
STABLE LANGUAGE plpgsql AS $$
DECLARE
    setting constant text := nullif(btrim(current_setting('customer_unify.churn_risk_threshold', true)), '');
    threshold float8;
BEGIN
    IF setting IS NULL THEN
        RETURN 0.5;
    END IF;
    BEGIN
        threshold := setting::float8;
    EXCEPTION WHEN others THEN
        threshold := NULL;
    END;
    IF threshold IS NULL OR NOT (threshold > 0 AND threshold <= 1) THEN
        RAISE EXCEPTION 'customer_unify.churn_risk_threshold must be a number above 0 and at most 1, not %', quote_literal(setting)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example SET customer_unify.churn_risk_threshold = 0.5 (the default).';
    END IF;
    RETURN threshold;
END
$$;

COMMENT ON FUNCTION unify.refresh_segments(date, interval) IS 'Scores recency, frequency and monetary per person (ties share a score), names the segment by the segment map, records and NOTIFYs every change';

COMMENT ON FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) IS 'Fits BG/NBD or Pareto/NBD (auto: the smaller holdout error), Gamma-Gamma and the beta-binomial of returns on purchases up to calibration_end; publishes per-person predictions unless the fit failed or its ranking contradicts the data (reported in unify.prediction_fits, not raised)';

COMMENT ON FUNCTION unify.sync_events(text) IS 'Reads registered event tables whole (NULL: all) through their mappings; returns the events written';

COMMENT ON FUNCTION unify.process_events(text) IS 'Applies the captured changes of event tables (NULL: all); returns the events written';

COMMENT ON FUNCTION unify.remove_events(text) IS 'Unregisters an event table: its capture and captured events are removed (the table itself is untouched)';

COMMENT ON FUNCTION unify.detect_abandoned_carts(timestamptz) IS 'Reports open carts untouched for customer_unify.cart_abandoned_after (default 1h) as cart_abandoned outbox events, once per cart';

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
       -- Issue 26 (last, as the upgrade adds them): purchase and return probability, then
       -- behavioural events.
       pr.p_purchase, pr.return_probability,
       a.last_visit_at, coalesce(a.visits_30d, 0) AS visits_30d, a.last_product_viewed,
       oc.items AS cart_items, oc.value AS cart_value, oc.started_at AS cart_started_at,
       ac.abandoned_at AS cart_abandoned_at,
       -- Issue 26, next best action (last, as the upgrade adds them).
       na.action AS next_action, na.channel AS next_action_channel, na.since AS next_action_since
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id
LEFT JOIN unify.person_activity a ON a.person_id = p.person_id
LEFT JOIN unify.open_carts oc ON oc.person_id = p.person_id
LEFT JOIN unify.abandoned_carts ac ON ac.cart_id = oc.cart_id
LEFT JOIN unify.person_actions na ON na.person_id = p.person_id;
COMMENT ON VIEW unify.customer_360 IS 'One row per person: golden record in display form with salutation, household, sources, consent with its proof, RFM segment, predictions, behaviour (last visit, visits, last product viewed, open cart) and next best action';


-- Privileges as src/sql/security.sql gives them (CREATE OR REPLACE reset the replaced
-- functions' search_path and SECURITY DEFINER).
DO $actions_grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'unify'::regnamespace
               AND p.proname IN ('default_action_map', '_check_action_map', '_refresh_actions', '_refresh_actions_after',
                                 'refresh_actions', '_persons_channel_changed', '_persons_actions_pending',
                                 '_churn_risk_threshold', 'outbox_kinds', 'refresh_segments', 'fit_predictions',
                                 'sync_events', 'process_events', 'remove_events', 'detect_abandoned_carts') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$actions_grants$;
REVOKE ALL ON unify.action_map, unify.action_map_rule_id_seq, unify.action_rules, unify.person_actions
FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.action_map, unify.action_rules, unify.person_actions TO unify_admin;
ALTER FUNCTION unify.refresh_segments(date, interval) SECURITY DEFINER;
ALTER FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) SECURITY DEFINER;
ALTER FUNCTION unify.sync_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.process_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.remove_events(text) SECURITY DEFINER;
ALTER FUNCTION unify.detect_abandoned_carts(timestamptz) SECURITY DEFINER;
ALTER FUNCTION unify.refresh_actions(bigint[]) SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION unify.refresh_segments(date, interval), unify.fit_predictions(date, text, int, float8, int, int, boolean),
    unify.sync_events(text), unify.process_events(text), unify.remove_events(text), unify.detect_abandoned_carts(timestamptz),
    unify.refresh_actions(bigint[])
TO unify_admin;
GRANT EXECUTE ON FUNCTION unify.default_action_map() TO unify_admin, unify_reader, unify_analyst;
GRANT EXECUTE ON FUNCTION unify.outbox_kinds() TO unify_admin, unify_reader;
GRANT INSERT, UPDATE, DELETE ON unify.action_map TO unify_admin;
GRANT USAGE ON SEQUENCE unify.action_map_rule_id_seq TO unify_admin;
GRANT SELECT ON unify.person_actions, unify.action_rules TO unify_reader;
GRANT SELECT ON unify.action_rules TO unify_analyst;


-- Issue 27, Citus scoring on workers: with the citus extension and at least one worker node,
-- unify.score_pairs scores the candidate blocks on the workers (the members of every valid block
-- in unify._score_members, distributed by block key, made and dropped by each such run; one
-- distributed query grouped by block key calls the Rust kernel per block).
-- New: unify._citus_workers(), unify._citus_score_table(), unify._score_block(...) (the kernel;
-- the extension is created on the workers too: Citus propagates CREATE EXTENSION);
-- unify.matching_state gains scored_on ('coordinator' or 'workers'), last. Without Citus nothing
-- changes.
ALTER TABLE unify.matching_state
    ADD COLUMN scored_on text NOT NULL DEFAULT 'coordinator' CHECK (scored_on IN ('coordinator', 'workers'));

-- Active worker nodes of the Citus cluster (0 without Citus or without workers).
CREATE FUNCTION unify._citus_workers() RETURNS int
STABLE PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    IF NOT unify._citus_present() OR to_regclass('pg_catalog.pg_dist_node') IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE 'SELECT count(*)::int FROM pg_catalog.pg_dist_node n WHERE n.noderole = ''primary'' AND n.isactive AND n.groupid > 0'
        INTO n;
    RETURN n;
END
$$;

-- unify._score_members (score_pairs) or unify._train_members (train), made by every distributed
-- run and dropped at its end, in its transaction (an error drops it too): nothing stays on the
-- workers, and no table outside the extension stays in its schema (DROP EXTENSION, pg_dump).
-- Made by unify.score_pairs or unify.train (SECURITY DEFINER), so owned by the extension's
-- owner, with no privilege for any other role; UNLOGGED (a scratch table). Distributed by the
-- block key, so a block's members are on one shard. Two tables, so that a training and a
-- scoring (which may run at once) never share one. Returns the table (one left by anything
-- else is emptied and used).
CREATE FUNCTION unify._citus_member_table(name text) RETURNS regclass
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    qualified constant text := 'unify.' || pg_catalog.quote_ident(name);
BEGIN
    IF name NOT IN ('_score_members', '_train_members') THEN
        RAISE EXCEPTION 'unknown member table %', name USING ERRCODE = '22023';
    END IF;
    IF pg_catalog.to_regclass(qualified) IS NULL THEN
        EXECUTE format('CREATE UNLOGGED TABLE %s (
            key_hash              bigint NOT NULL,
            record_id             bigint NOT NULL,
            source_id             int,
            first_name            text,
            last_name             text,
            email                 text,
            email_key             text,
            phone                 text,
            mobile                text,
            street                text,
            house_number          text,
            postcode              text,
            city                  text,
            external_id           text,
            customer_number       text,
            birth_date            date,
            valid_keys            bigint[] NOT NULL,
            first_name_tf         float8,
            first_name_as_last_tf float8,
            last_name_tf          float8,
            last_name_as_first_tf float8,
            email_household       boolean NOT NULL,
            phone_household       boolean NOT NULL,
            mobile_household      boolean NOT NULL
        )', qualified);
        EXECUTE format('REVOKE ALL ON %s FROM PUBLIC', qualified);
        EXECUTE format('COMMENT ON TABLE %s IS %L', qualified,
                       'Scratch of unify.' || CASE name WHEN '_score_members' THEN 'score_pairs' ELSE 'train' END
                       || ' on Citus: members of the candidate blocks, distributed by block key (dropped at the end of the run)');
    END IF;
    IF unify._placement(qualified::regclass) <> 'distributed' THEN
        EXECUTE format('SELECT pg_catalog.create_distributed_table(%L, ''key_hash'', colocate_with => ''none'')', qualified);
    END IF;
    RETURN qualified::regclass;
END
$$;

-- unify._score_members (see unify._citus_member_table).
CREATE FUNCTION unify._citus_score_table() RETURNS regclass
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    RETURN unify._citus_member_table('_score_members');
END
$$;

CREATE FUNCTION unify."_score_block"(
	"model" TEXT, /* & str */
	"source_names" TEXT[], /* Vec < Option < String > > */
	"source_ids" INT[], /* Vec < Option < i32 > > */
	"key_hash" bigint, /* i64 */
	"record_id" bigint[], /* Vec < Option < i64 > > */
	"source_id" INT[], /* Vec < Option < i32 > > */
	"first_name" TEXT[], /* Vec < Option < String > > */
	"last_name" TEXT[], /* Vec < Option < String > > */
	"email" TEXT[], /* Vec < Option < String > > */
	"email_key" TEXT[], /* Vec < Option < String > > */
	"phone" TEXT[], /* Vec < Option < String > > */
	"mobile" TEXT[], /* Vec < Option < String > > */
	"street" TEXT[], /* Vec < Option < String > > */
	"house_number" TEXT[], /* Vec < Option < String > > */
	"postcode" TEXT[], /* Vec < Option < String > > */
	"city" TEXT[], /* Vec < Option < String > > */
	"birth_date" date[], /* Vec < Option < pgrx :: datum :: Date > > */
	"external_id" TEXT[], /* Vec < Option < String > > */
	"customer_number" TEXT[], /* Vec < Option < String > > */
	"valid_keys" TEXT[], /* Vec < Option < String > > */
	"first_name_tf" double precision[], /* Vec < Option < f64 > > */
	"first_name_as_last_tf" double precision[], /* Vec < Option < f64 > > */
	"last_name_tf" double precision[], /* Vec < Option < f64 > > */
	"last_name_as_first_tf" double precision[], /* Vec < Option < f64 > > */
	"email_household" bool[], /* Vec < Option < bool > > */
	"phone_household" bool[], /* Vec < Option < bool > > */
	"mobile_household" bool[] /* Vec < Option < bool > > */
) RETURNS TABLE (
	"candidates" INT,  /* i32 */
	"record_a" bigint[],  /* Vec < i64 > */
	"record_b" bigint[],  /* Vec < i64 > */
	"match_weight" double precision[],  /* Vec < f64 > */
	"match_probability" double precision[],  /* Vec < f64 > */
	"is_match" bool[],  /* Vec < bool > */
	"forced_by" TEXT[],  /* Vec < Option < String > > */
	"blocking_rules" TEXT[],  /* Vec < String > */
	"weights" TEXT[]  /* Vec < String > */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_score_block_wrapper';

-- Privileges as src/sql/security.sql gives them: internals, for the owner only.
DO $citus_scoring_grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'unify'::regnamespace
               AND p.proname IN ('_citus_workers', '_citus_score_table', '_citus_member_table', '_score_block') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
    END LOOP;
END
$citus_scoring_grants$;
ALTER FUNCTION unify._citus_workers() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._citus_score_table() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._citus_member_table(text) SET search_path = pg_catalog, pg_temp;

-- Issue 27, Citus, registered source tables may be distributed: the changes of a
-- hash-distributed source are captured on its shards into a queue colocated with them
-- (unify._queue_<source_id>, a distributed table made by add_source, dropped by remove_source)
-- and drained into unify.change_queue by process_queue and the workers' steps; sync reads a
-- distributed source through one distributed query that runs the mapping and the cleaners on
-- the shards, and compares with unify.records on the coordinator; unify.status gains capture,
-- cleaned_on and scored_on (last).
-- New: unify._citus_method(regclass), unify._citus_queue(int), unify._capture_mode(unify.sources),
-- unify._citus_create_capture(unify.sources, boolean), unify._citus_collect(),
-- unify._citus_queue_depth(int), unify._cleaned_on(regclass), unify._citus_prepare_clean(boolean),
-- unify._citus_clean_statement(unify.sources, text), unify._citus_restage(jsonb),
-- unify._citus_staged_query(int, boolean).
-- Changed: unify._citus_check_source (tracked hash-distributed tables accepted; VOLATILE),
-- unify._normalized_query (a fourth argument, fenced: dropped and made again; concat_ws spelled
-- out), unify._apply, unify._create_capture, unify._capture_after_alter (skips sources captured
-- on their shards), unify._drop_capture, unify.process_queue,
-- unify._queue_step, unify._status() and the view unify.status (three columns more: both
-- dropped and made again).

-- The distribution method of a Citus table ('h' hash, 'n' none: reference, single-shard or
-- Citus local, 'a'/'r' append/range); NULL for a table Citus does not know, and without Citus.
CREATE FUNCTION unify._citus_method(relation regclass) RETURNS "char"
STABLE STRICT PARALLEL SAFE LANGUAGE plpgsql AS $$
DECLARE
    method "char";
BEGIN
    IF NOT unify._citus_present() OR to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT p.partmethod FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = $1' INTO method USING relation;
    RETURN method;
END
$$;

-- The shard-local capture queue of a source (unify._queue_<source_id>), if it has one.
CREATE FUNCTION unify._citus_queue(source_id int) RETURNS regclass
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT pg_catalog.to_regclass(pg_catalog.format('unify.%I', '_queue_' OPERATOR(pg_catalog.||) source_id))
$$;

-- How the changes of a source reach unify.records: 'trigger' (a capture trigger on its table
-- queues into unify.change_queue), 'shard_queue' (a trigger on every shard queues into a
-- distributed queue colocated with the source, drained by the coordinator), 'none' (not
-- tracked: only unify.sync reads it).
CREATE FUNCTION unify._capture_mode(src unify.sources) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN NOT src.track_changes OR src.removed_at IS NOT NULL THEN 'none'
                WHEN unify._citus_queue(src.source_id) IS NOT NULL THEN 'shard_queue'
                ELSE 'trigger' END
$$;

-- Makes the shard-local capture of source `id`, a hash-distributed table (called by
-- unify._create_capture as the extension owner): the queue unify._queue_<id> (the source key in
-- its own type, the operation, when), distributed by the key colocated with the source; the
-- capture function that inserts into it; with `triggers`, the row trigger on the table, which
-- Citus creates on every shard. The truncate capture stays the plain one (see above).
CREATE FUNCTION unify._citus_create_capture(src unify.sources, triggers boolean) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    queue constant text := '_queue_' || src.source_id;
    key_type text;
BEGIN
    SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO STRICT key_type FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = src.relation AND a.attname = src.key_column AND a.attnum > 0 AND NOT a.attisdropped;
    IF unify._citus_queue(src.source_id) IS NULL THEN
        EXECUTE pg_catalog.format('CREATE TABLE unify.%I (source_key %s NOT NULL, op "char" NOT NULL CHECK (op IN (''I'', ''U'', ''D'')), '
                                  'enqueued_at timestamptz NOT NULL DEFAULT now())', queue, key_type);
        EXECUTE pg_catalog.format('COMMENT ON TABLE unify.%I IS %L', queue,
                                  pg_catalog.format('Changes of source %s captured on its shards, colocated with %s; drained into unify.change_queue by the coordinator', src.name, src.relation_name));
        EXECUTE pg_catalog.format('REVOKE ALL ON unify.%I FROM PUBLIC', queue);
        EXECUTE pg_catalog.format('GRANT SELECT ON unify.%I TO unify_admin', queue);
        EXECUTE pg_catalog.format('GRANT INSERT ON unify.%I TO unify_capture', queue);
        EXECUTE 'SELECT pg_catalog.create_distributed_table($1, ''source_key'', colocate_with => $2)'
            USING pg_catalog.format('unify.%I', queue), src.relation::text;
    END IF;
    -- The key cannot change on a distributed table (Citus refuses updates of the distribution
    -- column), so an UPDATE queues its one key. No guard against a dropped queue beyond the
    -- lookup: the function is replaced with the plain one when the source stops being tracked.
    EXECUTE pg_catalog.format($f$
CREATE OR REPLACE FUNCTION unify.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF to_regclass('unify.%I') IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO unify.%I (source_key, op) VALUES (OLD.%I, 'D');
    ELSIF TG_OP = 'UPDATE' AND OLD.%I IS DISTINCT FROM NEW.%I THEN
        INSERT INTO unify.%I (source_key, op) VALUES (OLD.%I, 'D');
        INSERT INTO unify.%I (source_key, op) VALUES (NEW.%I, 'I');
    ELSE
        INSERT INTO unify.%I (source_key, op) VALUES (NEW.%I, left(TG_OP, 1)::"char");
    END IF;
    RETURN NULL;
END
$body$
$f$, '_capture_' || src.source_id, queue, queue, src.key_column, src.key_column, src.key_column,
        queue, src.key_column, queue, src.key_column, queue, src.key_column);
    EXECUTE pg_catalog.format('ALTER FUNCTION unify.%I() OWNER TO unify_capture', '_capture_' || src.source_id);
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION unify.%I() FROM PUBLIC', '_capture_' || src.source_id);
    IF triggers THEN
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        EXECUTE pg_catalog.format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION unify.%I()',
                                  'unify_capture_' || src.source_id, src.relation, '_capture_' || src.source_id);
        PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'off', true);
    END IF;
END
$$;

-- Moves what the shard-local capture queues hold into unify.change_queue (keys as text, the
-- time of the change kept): one distributed DELETE ... RETURNING per queue, in the caller's
-- transaction, which goes on to apply the changes (process_queue, the workers' steps). A
-- rollback leaves them on the shards; a row a trigger adds meanwhile stays for the next call;
-- two callers never move a row twice (the second's DELETE waits for the first's and finds it
-- gone). Returns the rows moved. Without Citus, or without such a queue, it reads the catalog
-- of unify.sources only.
CREATE FUNCTION unify._citus_collect() RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    src record;
    n bigint;
    moved bigint := 0;
BEGIN
    FOR src IN SELECT s.source_id, unify._citus_queue(s.source_id) AS queue FROM unify.sources s
               WHERE s.track_changes AND s.removed_at IS NULL AND unify._citus_queue(s.source_id) IS NOT NULL
               ORDER BY s.source_id LOOP
        EXECUTE pg_catalog.format('WITH taken AS (DELETE FROM %s q RETURNING q.source_key, q.op, q.enqueued_at),
                                        moved AS (INSERT INTO unify.change_queue (source_id, source_key, op, enqueued_at)
                                                  SELECT $1, t.source_key::text, t.op, t.enqueued_at FROM taken t RETURNING 1)
                                   SELECT count(*) FROM moved', src.queue)
            INTO n USING src.source_id;
        moved := moved + n;
    END LOOP;
    RETURN moved;
END
$$;

-- The changes waiting in a source's shard-local queue (not yet drained into
-- unify.change_queue) and the oldest one's time; 0 and NULL without such a queue; both NULL
-- (unknown) while a worker node holding the queue cannot be reached, so that unify.status
-- still answers for everything else.
CREATE FUNCTION unify._citus_queue_depth(source_id int, OUT depth bigint, OUT oldest timestamptz)
STABLE LANGUAGE plpgsql AS $$
DECLARE
    queue constant regclass := unify._citus_queue(source_id);
BEGIN
    depth := 0;
    IF queue IS NOT NULL THEN
        BEGIN
            EXECUTE pg_catalog.format('SELECT count(*), min(q.enqueued_at) FROM %s q', queue) INTO depth, oldest;
        EXCEPTION WHEN connection_exception THEN
            depth := NULL;
            oldest := NULL;
        END;
    END IF;
END
$$;

-- Where sync cleans a source's rows: 'workers' for a hash- or single-shard distributed table
-- (the mapping and the cleaners run on its shards), 'coordinator' for every other.
CREATE FUNCTION unify._cleaned_on(relation regclass) RETURNS text
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN unify._placement(relation) = 'distributed' THEN 'workers' ELSE 'coordinator' END
$$;

-- This session's table of cleaned rows of a distributed source (see above): made on first use
-- (INSERT granted to PUBLIC, as pg_temp.unify_source_rows: the mapping's role writes it), one
-- made by another role first is dropped (see unify._prepare_stage), emptied otherwise.
CREATE FUNCTION unify._citus_prepare_clean(full_read boolean) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    PERFORM unify._drop_foreign_temp(ARRAY['unify_clean_rows']);
    IF to_regclass('pg_temp.unify_clean_rows') IS NULL THEN
        -- The columns of unify._normalized_query, in its order.
        CREATE TEMP TABLE unify_clean_rows (
            source_key text, first_name text, last_name text, email text, email_key text, phone text, mobile text,
            street text, house_number text, postcode text, city text, country text, birth_date date, company text,
            customer_number text, external_id text, consent_email boolean, consent_phone boolean, consent_post boolean,
            source_updated_at timestamptz, last_name_phonetic text, raw jsonb, salutation text, title text,
            consent_email_at timestamptz, consent_phone_at timestamptz, consent_post_at timestamptz,
            -- the order the rows came in (the key's), which their places in the table need not keep
            ord bigint GENERATED ALWAYS AS IDENTITY);
        GRANT INSERT ON pg_temp.unify_clean_rows TO PUBLIC;
    ELSIF full_read OR pg_relation_size('pg_temp.unify_clean_rows') > 8 * 1024 * 1024 THEN
        TRUNCATE pg_temp.unify_clean_rows;
    ELSE
        DELETE FROM pg_temp.unify_clean_rows;
    END IF;
END
$$;

-- The statement sync runs (as the mapping's role) for a distributed source: the mapping and
-- the cleaners over the source rows `filter` selects, in one query Citus pushes down to the
-- shards whole (no OFFSET fence, no reference to a coordinator table: unify._normalized_query
-- with fenced => false and fresh => true), into pg_temp.unify_clean_rows, in key order (see
-- unify._citus_stage_order: the same record ids on every sync of the same data).
CREATE FUNCTION unify._citus_clean_statement(src unify.sources, filter text) RETURNS text
STABLE LANGUAGE plpgsql AS $$
DECLARE
    staged text := format('(src.%I)::text AS source_key, src.%I AS _order_key', src.key_column, src.key_column);
    f record;
BEGIN
    FOR f IN SELECT * FROM unify._canonical_field_types() LOOP
        IF src.fields ? f.field THEN
            staged := staged || format(', %s AS %I', unify._staged_expression(f.field, src.fields ->> f.field), f.field);
        ELSE
            staged := staged || format(', NULL::%s AS %I', f.stage_type, f.field);
        END IF;
    END LOOP;
    RETURN format('INSERT INTO pg_temp.unify_clean_rows (source_key, first_name, last_name, email, email_key, phone, mobile, '
                  'street, house_number, postcode, city, country, birth_date, company, customer_number, external_id, '
                  'consent_email, consent_phone, consent_post, source_updated_at, last_name_phonetic, raw, salutation, title, '
                  'consent_email_at, consent_phone_at, consent_post_at) %s ORDER BY raw._order_key',
                  -- source 0: no comparison and no erasure filter in the pushed-down query
                  -- (both read coordinator tables); _citus_staged_query applies them after.
                  unify._normalized_query(0,
                      format(E'\nSELECT s.*, %s AS raw\nFROM (SELECT %s FROM %s AS src %s) AS s\n',
                             unify._raw_expression(src.fields), staged, src.relation, coalesce(filter, '')),
                      true, false));
END
$$;

-- After unify._citus_clean_statement: the mapped values of the cleaned rows (their raw jsonb,
-- which holds them as staged) into pg_temp.unify_source_rows, in the order they came, as the
-- staging of a local table would have put them there. The places rows take in that table
-- (PostgreSQL fills earlier pages' free space with smaller rows) decide the order records are
-- written in and so their ids, on which training's sample and scoring's ties depend: so a
-- distributed source's records take the ids they would take on a single node.
CREATE FUNCTION unify._citus_restage(fields jsonb) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE (SELECT format('INSERT INTO pg_temp.unify_source_rows (source_key, %s) SELECT c.source_key, %s FROM pg_temp.unify_clean_rows c ORDER BY c.ord',
                           string_agg(format('%I', f.field), ', '),
                           string_agg(CASE WHEN fields ? f.field THEN format('(c.raw ->> %L)::%s', f.field, f.stage_type)
                                           ELSE format('NULL::%s', f.stage_type) END, ', '))
             FROM unify._canonical_field_types() AS f);
END
$$;

-- The cleaned rows of a distributed source to write into unify.records: those whose raw
-- values differ from the record held (all of them for a first load, `fresh`), without rows of
-- erased persons (the same filters unify._normalized_query applies), over the local tables, in
-- the order of pg_temp.unify_source_rows (see unify._citus_restage).
CREATE FUNCTION unify._citus_staged_query(source_id int, fresh boolean) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
SELECT format($q$
SELECT raw.* FROM pg_temp.unify_source_rows AS staged JOIN pg_temp.unify_clean_rows AS raw ON raw.source_key = staged.source_key
WHERE true
%s
%s
ORDER BY staged.ctid
$q$,
    CASE WHEN fresh THEN '' ELSE format($r$AND NOT EXISTS (SELECT 1 FROM unify.records r
                  WHERE r.source_id = %s AND r.source_key = raw.source_key AND r.raw = raw.raw)$r$, source_id) END,
    CASE WHEN EXISTS (SELECT 1 FROM unify.erasures e WHERE e.source_id = _citus_staged_query.source_id)
         THEN format($e$AND NOT EXISTS (SELECT 1 FROM unify.erasures e
                  WHERE e.source_id = %s AND e.key_hash = unify._key_hash((SELECT k.secret FROM unify._secret k), raw.source_key))$e$, source_id)
         ELSE '' END)
$$;

-- add_source's check of a Citus source (called as the caller, before the registration): the
-- changes of a hash-distributed table are captured beside its shards (see above); a reference
-- table, a single-shard or an append/range-distributed table is registered only with
-- track_changes => false. For a tracked hash-distributed table it also sets
-- citus.multi_shard_modify_mode = sequential for the rest of the transaction, before add_source
-- reads the table: Citus creates the capture function on the workers over one connection per
-- node, which it refuses after a statement of the transaction used several (SQLSTATE 0A000,
-- "cannot run function command because there was a parallel operation").

DROP FUNCTION unify._normalized_query(int, text, boolean);
-- The cleaners over the rows of `raw_query` (see _raw_query) whose raw values differ from the
-- record already held: unchanged rows are not normalized again. `fresh`: the source holds no
-- record and none can appear meanwhile (a first load under sync's lock), so there is nothing to
-- compare with. A value used more than once (the country, the split street and names) is
-- computed once, in a fenced LATERAL subquery; the raw values too (compared and stored).
-- `fenced` false leaves the OFFSET 0 fences out (the values are then computed where used):
-- Citus pushes such a query over a distributed source down to its shards whole, where a fence
-- would pull the source rows to the coordinator first (unify._citus_clean_statement).
CREATE FUNCTION unify._normalized_query(source_id int, raw_query text, fresh boolean DEFAULT false, fenced boolean DEFAULT true) RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
SELECT format(CASE WHEN fenced THEN $q$
SELECT raw.source_key,
       (c.v).first_name, (c.v).last_name, (c.v).email, (c.v).email_key, (c.v).phone, (c.v).mobile,
       (c.v).street, (c.v).house_number, (c.v).postcode,
       nullif(lower((c.v).city), '') AS city,
       (c.v).country, (c.v).birth_date,
       nullif(btrim(raw.company), '') AS company,
       nullif(btrim(raw.customer_number), '') AS customer_number,
       nullif(btrim(raw.external_id), '') AS external_id,
       raw.consent_email, raw.consent_phone, raw.consent_post,
       raw.updated_at AS source_updated_at,
       (c.v).last_name_phonetic,
       raw.raw,
       (c.v).salutation, (c.v).title,
       raw.consent_email_at, raw.consent_phone_at, raw.consent_post_at
FROM (SELECT * FROM (%1$s) AS q %4$s) AS raw
CROSS JOIN LATERAL (
    SELECT unify._clean_contact(raw.salutation, raw.title, raw.first_name, raw.last_name, raw.full_name,
                                raw.email, raw.phone, raw.mobile, raw.street, raw.house_number, raw.street_line,
                                raw.postcode, raw.city, raw.country, raw.birth_date) AS v
    %4$s) AS c
WHERE true
%2$s
%3$s
$q$ ELSE $q$
SELECT raw.source_key,
       coalesce(c.first_name, (c.full_name).first_name) AS first_name,
       coalesce(c.last_name, (c.full_name).last_name) AS last_name,
       unify.normalize_email(raw.email) AS email,
       unify.email_match_key(raw.email) AS email_key,
       unify.normalize_phone(raw.phone, coalesce(c.country, 'DE')) AS phone,
       unify.normalize_phone(raw.mobile, coalesce(c.country, 'DE')) AS mobile,
       unify.normalize_street((c.street_parts).street) AS street,
       (c.street_parts).house_number AS house_number,
       unify.normalize_postcode(raw.postcode, coalesce(c.country, 'DE')) AS postcode,
       nullif(lower(unify.transliterate_de(btrim(raw.city))), '') AS city,
       c.country,
       unify.normalize_date(raw.birth_date) AS birth_date,
       nullif(btrim(raw.company), '') AS company,
       nullif(btrim(raw.customer_number), '') AS customer_number,
       nullif(btrim(raw.external_id), '') AS external_id,
       raw.consent_email, raw.consent_phone, raw.consent_post,
       raw.updated_at AS source_updated_at,
       unify.cologne_phonetic(coalesce(c.last_name, (c.full_name).last_name)) AS last_name_phonetic,
       raw.raw,
       coalesce(c.salutation, (n.any_name).salutation) AS salutation,
       coalesce(c.title, (n.any_name).title) AS title,
       raw.consent_email_at, raw.consent_phone_at, raw.consent_post_at
FROM (SELECT * FROM (%1$s) AS q %4$s) AS raw
CROSS JOIN LATERAL (
    SELECT unify.normalize_name(raw.first_name) AS first_name, unify.normalize_name(raw.last_name) AS last_name,
           unify.split_full_name(raw.full_name) AS full_name, unify.normalize_country(raw.country) AS country,
           unify.split_street(coalesce(raw.street_line, raw.street || coalesce(' ' || raw.house_number, ''))) AS street_parts,
           unify.normalize_salutation(raw.salutation) AS salutation,
           coalesce(unify.normalize_title(raw.title), unify.normalize_title(raw.salutation)) AS title
    %4$s) AS c
-- The salutation and title written in front of a name, where no field gave them.
CROSS JOIN LATERAL (
    -- (concat_ws(' ', first_name, last_name) spelled out: concat_ws is only STABLE, and Citus
    -- pushes a subquery without FROM down to the shards only when its functions are IMMUTABLE.)
    SELECT CASE WHEN c.salutation IS NULL OR c.title IS NULL
                THEN unify.split_full_name(coalesce(raw.full_name,
                         CASE WHEN raw.first_name IS NULL THEN coalesce(raw.last_name, '')
                              WHEN raw.last_name IS NULL THEN raw.first_name
                              ELSE raw.first_name || ' ' || raw.last_name END)) END AS any_name
    %4$s) AS n
WHERE true
%2$s
%3$s
$q$ END, raw_query,
    CASE WHEN fresh THEN '' ELSE format($r$AND NOT EXISTS (SELECT 1 FROM unify.records r
                  WHERE r.source_id = %s AND r.source_key = raw.source_key AND r.raw = raw.raw)$r$, source_id) END,
    -- Rows of erased persons stay out; the hash is only computed for a source that has some.
    CASE WHEN EXISTS (SELECT 1 FROM unify.erasures e WHERE e.source_id = _normalized_query.source_id)
         THEN format($e$AND NOT EXISTS (SELECT 1 FROM unify.erasures e
                  WHERE e.source_id = %s AND e.key_hash = unify._key_hash((SELECT k.secret FROM unify._secret k), raw.source_key))$e$, source_id)
         ELSE '' END,
    CASE WHEN fenced THEN 'OFFSET 0' ELSE '' END)
$$;

-- The capture trigger of one source: a function with the key column written in (no per-row
-- catalog lookup) that only enqueues (source, key, operation). SECURITY DEFINER so that roles
-- writing to the source table need no rights on unify.change_queue, and owned by unify_capture,
-- which may do nothing but that insert: code the table's owner controls (a cast of the key's
-- type) runs with no privilege worth having. `triggers` false only replaces the functions: the
-- event trigger below does that after an ALTER TABLE, so that every session compiles them
-- anew for the new column types (PL/pgSQL keeps a plan per session and would otherwise fail
-- the application's next write with "type of parameter ... does not match").
CREATE OR REPLACE FUNCTION unify._create_capture(id int, triggers boolean) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    src unify.sources;
    key_exists boolean;
    -- A capture function that marks the source for a full read: the truncate trigger's.
    full_read constant text := $f$
CREATE OR REPLACE FUNCTION unify.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF to_regclass('unify.change_queue') IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO unify.change_queue (source_id, source_key, op) VALUES (%s, NULL, 'T');
    RETURN NULL;
END
$body$
$f$;
BEGIN
    SELECT * INTO STRICT src FROM unify.sources WHERE source_id = id;
    key_exists := EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = src.relation
                          AND a.attname = src.key_column AND a.attnum > 0 AND NOT a.attisdropped);
    -- OR REPLACE, and a guard on the queue: a DROP EXTENSION (which cannot drop these, they are
    -- not its members) leaves them behind as no-ops instead of failing every write to the
    -- source table, and a new CREATE EXTENSION + add_source replaces them.
    IF key_exists AND unify._citus_method(src.relation) = 'h' THEN
        -- A hash-distributed table: the row capture on its shards, into a queue colocated with
        -- them (citus.sql); the truncate capture below as for every table.
        PERFORM unify._citus_create_capture(src, triggers);
    ELSIF key_exists THEN
        EXECUTE format($f$
CREATE OR REPLACE FUNCTION unify.%I() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF to_regclass('unify.change_queue') IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        INSERT INTO unify.change_queue (source_id, source_key, op) VALUES (%s, (OLD.%I)::text, 'D');
    ELSIF TG_OP = 'UPDATE' AND OLD.%I IS DISTINCT FROM NEW.%I THEN
        INSERT INTO unify.change_queue (source_id, source_key, op)
        VALUES (%s, (OLD.%I)::text, 'D'), (%s, (NEW.%I)::text, 'I');
    ELSE
        INSERT INTO unify.change_queue (source_id, source_key, op) VALUES (%s, (NEW.%I)::text, left(TG_OP, 1)::"char");
    END IF;
    RETURN NULL;
END
$body$
$f$, '_capture_' || id, id, src.key_column, src.key_column, src.key_column,
            id, src.key_column, id, src.key_column, id, src.key_column);
    ELSE
        -- The key column was renamed or dropped: the application's writes go on; each marks
        -- the source for a full read (as a truncate does), which fails into unify.dead_letters
        -- naming the problem.
        EXECUTE format(full_read, '_capture_' || id, id);
    END IF;
    EXECUTE format(full_read, '_capture_truncate_' || id, id);
    EXECUTE format('ALTER FUNCTION unify.%I() OWNER TO unify_capture', '_capture_' || id);
    EXECUTE format('ALTER FUNCTION unify.%I() OWNER TO unify_capture', '_capture_truncate_' || id);
    EXECUTE format('REVOKE ALL ON FUNCTION unify.%I() FROM PUBLIC', '_capture_' || id);
    EXECUTE format('REVOKE ALL ON FUNCTION unify.%I() FROM PUBLIC', '_capture_truncate_' || id);
    IF triggers THEN
        -- (On a distributed table Citus accepts a trigger only with citus.enable_unsafe_triggers,
        -- set for these statements only; it keeps a truncate trigger on the coordinator's table.)
        IF unify._citus_method(src.relation) = 'h' THEN
            PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        ELSE
            EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION unify.%I()',
                           'unify_capture_' || id, src.relation, '_capture_' || id);
        END IF;
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION unify.%I()',
                       'unify_capture_truncate_' || id, src.relation, '_capture_truncate_' || id);
        IF unify._citus_method(src.relation) = 'h' THEN
            PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'off', true);
        END IF;
    END IF;
END
$$;

-- After an ALTER TABLE of a tracked table: its capture functions anew (see _create_capture).
-- Never fails the DDL: a problem here is a warning.
CREATE OR REPLACE FUNCTION unify._capture_after_alter() RETURNS event_trigger
VOLATILE LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    id int;
BEGIN
    IF to_regclass('unify.sources') IS NULL THEN
        RETURN;
    END IF;
    -- An ALTER TABLE renews the functions of the tables it changed; a change of a type or
    -- domain (which can drop or rename a key column, or change its type, through CASCADE) all.
    -- Not a distributed source captured on its shards (citus.sql): its capture function names
    -- only the key, its distribution column, whose type Citus lets no ALTER change, and Citus
    -- would refuse to replace the function on the workers after the ALTER's parallel DDL.
    FOR id IN SELECT s.source_id FROM unify.sources s
              WHERE s.track_changes AND s.removed_at IS NULL AND unify._citus_queue(s.source_id) IS NULL
                AND (TG_TAG <> 'ALTER TABLE'
                     OR s.relation IN (SELECT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
                                       WHERE c.classid = 'pg_catalog.pg_class'::regclass))
    LOOP
        BEGIN
            PERFORM unify._create_capture(id, false);
        EXCEPTION WHEN others THEN
            RAISE WARNING 'customer_unify: could not renew the change capture of source %: %', id, SQLERRM;
        END;
    END LOOP;
EXCEPTION WHEN others THEN
    RAISE WARNING 'customer_unify: change capture not renewed after ALTER TABLE: %', SQLERRM;
END
$$;



-- Brings unify.records of one source in line with the given rows of the source (all rows, or
-- the keys in `keys`): inserts, updates where the mapped values changed, deletes what is gone.
-- The rows are staged by the source's mapping, run as the role that registered it
-- (unify._run_as); the cleaners and the writes run here. A full sync stages the source once and
-- cleans and writes it in parts of about 200k rows (ranges of the stage's pages; a distributed
-- source: staged a part at a time, split by a hash of the key), with progress reported between
-- parts (NOTICE every few seconds, application_name at once). Its statements run through kept plans
-- (unify._run_kept); a queue batch leaves source_rows NULL. Errors name the source.
-- A first load (a full sync of a source without records, while this transaction holds
-- unify.records exclusively: nobody else can add its records meanwhile) only inserts: no
-- comparison with records, no ON CONFLICT, no search for records that are gone.


CREATE OR REPLACE FUNCTION unify.process_queue(max_rows int DEFAULT 1000) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    taken int;
BEGIN
    IF max_rows IS NULL OR max_rows < 1 THEN
        RAISE EXCEPTION 'max_rows must be a positive number, not %', coalesce(max_rows::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Changes captured on the shards of distributed sources join the queue first (citus.sql).
    PERFORM unify._citus_collect();
    IF NOT EXISTS (SELECT 1 FROM unify.change_queue) AND NOT EXISTS (SELECT 1 FROM unify.queue_work) THEN
        RETURN 0;
    END IF;
    -- All three stages in this one transaction, with both locks throughout (taken in the
    -- usual order), after whatever the workers left half-way.
    PERFORM unify._lock('pairs');
    PERFORM unify._lock('persons');
    taken := unify._queue_take(max_rows);
    LOOP
        EXIT WHEN unify._queue_rescore() = 0;
    END LOOP;
    PERFORM unify._queue_cluster();
    RETURN taken;
END
$$;

-- One step of a background worker: whichever stage of the queue is due and not running in
-- another worker, each in its own transaction. Rescorings run one at a time, in order; takes
-- and clusterings (one lock between them) run beside them. So one worker rescores a batch while another
-- takes the next one and clusters the one before. Returns the changes the step moved on
-- (0: nothing it could do now).
CREATE OR REPLACE FUNCTION unify._queue_step(max_rows int) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    rescorings bigint;
BEGIN
    -- Changes captured on the shards of distributed sources join the queue first (citus.sql;
    -- without such a source a look at unify.sources), at most once a second per worker: with
    -- such a source each call is a distributed DELETE on every shard of its queue, and an
    -- idle worker polls every customer_unify.naptime (10 ms). The time of the last call is
    -- this session's setting unify_internal.citus_collected_at (rolled back with a failed step).
    IF coalesce(clock_timestamp() - nullif(current_setting('unify_internal.citus_collected_at', true), '')::timestamptz
                >= interval '1 second', true) THEN
        PERFORM set_config('unify_internal.citus_collected_at', clock_timestamp()::text, false);
        PERFORM unify._citus_collect();
    END IF;
    -- The idle workers ask many times a second: two probes of empty tables.
    IF NOT EXISTS (SELECT 1 FROM unify.queue_work) AND NOT EXISTS (SELECT 1 FROM unify.change_queue) THEN
        RETURN 0;
    END IF;
    IF EXISTS (SELECT 1 FROM unify.queue_work w WHERE w.stage = 'rescore') AND unify._try_lock('pairs') THEN
        RETURN unify._queue_rescore();
    END IF;
    -- A take beside a rescoring only under a backlog (a full batch queued), and then at most one
    -- batch waits for its rescoring, so takes do not run ahead of the rescorings.
    rescorings := (SELECT count(*) FROM unify.queue_work w WHERE w.stage = 'rescore');
    IF rescorings = 1 AND (SELECT count(*) FROM (SELECT FROM unify.change_queue LIMIT max_rows) q) >= max_rows
       AND unify._try_lock('persons') THEN
        RETURN unify._queue_take(max_rows);
    END IF;
    -- A clustering that is due goes before a take without a backlog (the changes it carries
    -- are waiting for their persons), and waits for the lock, which a take or another
    -- clustering holds for moments, rather than for the next poll.
    IF EXISTS (SELECT 1 FROM unify.queue_work w WHERE w.stage = 'cluster') THEN
        RETURN unify._queue_cluster();
    END IF;
    -- With a short queue, changes wait for a running rescoring and go as one batch: many tiny
    -- batches cost more than they save.
    IF rescorings = 0 AND EXISTS (SELECT 1 FROM unify.change_queue) AND unify._try_lock('persons') THEN
        RETURN unify._queue_take(max_rows);
    END IF;
    RETURN 0;
END
$$;

DROP VIEW unify.status;
DROP FUNCTION unify._status();
-- The figures behind unify.status. A function, so that it plans without JIT: on small
-- unanalyzed tables the estimates made JIT compile the query for longer (0.5 s) than it runs.
-- SECURITY DEFINER as a view is: readers of unify.status need no rights on the tables.
CREATE FUNCTION unify._status()
RETURNS TABLE (source text, relation text, track_changes boolean, removed_at timestamptz, source_rows_estimate bigint,
               records bigint, queue_depth bigint, queue_lag interval, failed_changes bigint, last_failure timestamptz,
               last_sync_at timestamptz, last_sync_rows bigint, last_sync_seconds numeric, sync_running_since timestamptz,
               worker_pid int, worker_state text, workers int, worker_started_at timestamptz, last_batch_at timestamptz,
               last_batch_rows int, last_batch_ms numeric, last_batch_by text, rows_per_second numeric, processed_rows bigint,
               total_queue_depth bigint, changes_in_progress bigint, total_queue_lag interval, matching_live boolean,
               placement text, citus boolean, capture text, cleaned_on text, scored_on text, trained_on text)
STABLE LANGUAGE sql SECURITY DEFINER SET jit = off AS $$

SELECT s.name AS source,
       s.relation_name AS relation,
       s.track_changes,
       s.removed_at,
       greatest(c.reltuples, 0)::bigint AS source_rows_estimate,
       (SELECT count(*) FROM unify.records r WHERE r.source_id = s.source_id) AS records,
       -- With the changes still in a distributed source's shard-local queue (citus.sql).
       (SELECT count(*) FROM unify.change_queue q WHERE q.source_id = s.source_id) + cq.depth AS queue_depth,
       now() - least((SELECT min(q.enqueued_at) FROM unify.change_queue q WHERE q.source_id = s.source_id), cq.oldest) AS queue_lag,
       (SELECT count(*) FROM unify.dead_letters d WHERE d.source_id = s.source_id) AS failed_changes,
       (SELECT max(d.last_failed_at) FROM unify.dead_letters d WHERE d.source_id = s.source_id) AS last_failure,
       s.last_sync_at,
       s.last_sync_rows,
       s.last_sync_seconds,
       (SELECT a.query_start FROM pg_stat_activity a
         WHERE a.application_name = 'unify.sync ' || s.name LIMIT 1) AS sync_running_since,
       w.pid AS worker_pid,
       coalesce(w.state, 'not running') AS worker_state,
       coalesce(w.workers, 0) AS workers,
       w.started_at AS worker_started_at,
       q.last_batch_at,
       q.last_batch_rows,
       q.last_batch_ms,
       q.last_batch_by,
       CASE WHEN q.window_started_at >= now() - interval '1 minute'
            THEN round(q.window_rows / greatest(extract(epoch FROM now() - q.window_started_at), 1)::numeric, 1)
            ELSE coalesce(q.last_window_rate, 0) END AS rows_per_second,
       q.total_rows AS processed_rows,
       (SELECT count(*) FROM unify.change_queue) + sum(cq.depth) OVER () AS total_queue_depth,
       (SELECT coalesce(sum(x.source_rows), 0) FROM unify.queue_work x)::bigint AS changes_in_progress,
       now() - least((SELECT min(x.enqueued_at) FROM unify.change_queue x), min(cq.oldest) OVER ()) AS total_queue_lag,
       m.keys_built_at IS NOT NULL AND m.blocking_rules = unify.get_model() -> 'blocking_rules' AS matching_live,
       -- Issue 27: where the source table lives (citus.sql) and whether Citus is installed.
       CASE WHEN c.oid IS NOT NULL THEN unify._placement(s.relation) END AS placement,
       unify._citus_present() AS citus,
       -- Issue 27: how its changes are captured, where sync cleans its rows, and where the
       -- last full scoring scored the candidate blocks (citus.sql).
       unify._capture_mode(s) AS capture,
       CASE WHEN c.oid IS NOT NULL THEN unify._cleaned_on(s.relation) END AS cleaned_on,
       m.scored_on,
       -- Where the model in use was trained (its report; NULL: set by set_model or trained
       -- before 0.3.0 said so).
       (SELECT md.report ->> 'trained_on' FROM unify.model md ORDER BY md.version DESC LIMIT 1) AS trained_on
FROM unify.sources s
LEFT JOIN pg_class c ON c.oid = s.relation
CROSS JOIN LATERAL unify._citus_queue_depth(s.source_id) cq
LEFT JOIN unify._worker() w ON true
CROSS JOIN unify.queue_stats q
LEFT JOIN unify.matching_state m ON true
$$;

CREATE VIEW unify.status AS SELECT * FROM unify._status();
COMMENT ON VIEW unify.status IS 'Per source: rows, records, queue depth and lag, last sync, where its table lives (local/distributed/reference), how its changes are captured, where sync cleans it; for the database: worker state, last batch, rows/s, whether changes are matched live, whether Citus is installed, where scoring and training ran';

-- Privileges as src/sql/security.sql gives them.
DO $citus_capture_grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'unify'::regnamespace
               AND p.proname IN ('_citus_method', '_citus_queue', '_capture_mode', '_citus_create_capture', '_citus_collect',
                                 '_citus_queue_depth', '_cleaned_on', '_citus_prepare_clean', '_citus_clean_statement',
                                 '_citus_restage', '_citus_staged_query', '_normalized_query', '_status') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$citus_capture_grants$;
REVOKE ALL ON unify.status FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.status TO unify_admin, unify_reader;
GRANT EXECUTE ON FUNCTION unify._status() TO unify_admin, unify_reader, unify_analyst;
GRANT EXECUTE ON FUNCTION unify._citus_method(regclass) TO unify_admin;
-- CREATE OR REPLACE set the replaced functions' settings anew: pinned again (their grants stay).
ALTER FUNCTION unify._citus_check_source(regclass, text, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._create_capture(int, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._drop_capture(int, regclass) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._apply(unify.sources, text[], boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.process_queue(int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._queue_step(int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.process_queue(int) SECURITY DEFINER;
ALTER FUNCTION unify._capture_after_alter() SET search_path = pg_catalog, pg_temp;
-- Issue 27, segment steps within the memory budget: unify.fit_predictions fits on the distinct
-- customer summaries, rounded to a grid of 7, 14, … days where whole days leave more than
-- 100,000 (unify._fit_summaries; the grid in prediction_fits.validation -> 'grid_days');
-- refresh_segments, _refresh_actions and fit_predictions emit their outbox events in chunks of
-- 10,000 (unify._outbox_emit_rows); _refresh_actions joins many given persons from a temporary
-- table instead of `= ANY (array)`. The changed functions stand once in this step, in their
-- final form, where it first replaces them; their SET and SECURITY DEFINER again below, as
-- security.sql gives them.
CREATE OR REPLACE FUNCTION unify._outbox_emit_rows(kind text, query text) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[] := '{}';
    payloads jsonb[] := '{}';
    n bigint := 0;
    e record;
BEGIN
    FOR e IN EXECUTE query LOOP
        ids := ids || e.person_id;
        payloads := payloads || e.payload;
        IF cardinality(ids) >= 10000 THEN
            n := n + unify._outbox_emit(kind, ids, payloads);
            ids := '{}';
            payloads := '{}';
        END IF;
    END LOOP;
    RETURN n + unify._outbox_emit(kind, ids, payloads);
END
$$;

CREATE OR REPLACE FUNCTION unify._fit_summaries(summaries regclass, max_summaries bigint DEFAULT 100000,
                                     OUT grid_days int, OUT frequency float8[], OUT recency float8[],
                                     OUT age float8[], OUT weight float8[])
STABLE STRICT LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    grid_days := 1;
    LOOP
        -- On a grid of g days: round(days / g) · g / 7 weeks (ties to even); the day grid keeps the values.
        EXECUTE format($q$SELECT count(*) FROM (SELECT DISTINCT s.frequency, %1$s, %2$s FROM %3$s s) d$q$,
                       CASE WHEN grid_days = 1 THEN 's.recency' ELSE format('round(round(s.recency * 7) / %s)', grid_days) END,
                       CASE WHEN grid_days = 1 THEN 's.age' ELSE format('round(round(s.age * 7) / %s)', grid_days) END,
                       summaries)
        INTO n;
        EXIT WHEN n <= max_summaries OR grid_days >= 364;
        grid_days := CASE WHEN grid_days = 1 THEN 7 ELSE least(grid_days * 2, 364) END;
    END LOOP;
    EXECUTE format($q$
        SELECT array_agg(g.frequency), array_agg(g.recency), array_agg(g.age), array_agg(g.n)
        FROM (SELECT s.frequency, %1$s AS recency, %2$s AS age, count(*)::float8 AS n
              FROM %3$s s GROUP BY 1, 2, 3) g $q$,
        CASE WHEN grid_days = 1 THEN 's.recency' ELSE format('round(round(s.recency * 7) / %1$s) * %1$s / 7.0', grid_days) END,
        CASE WHEN grid_days = 1 THEN 's.age' ELSE format('round(round(s.age * 7) / %1$s) * %1$s / 7.0', grid_days) END,
        summaries)
    INTO frequency, recency, age, weight;
END
$$;





REVOKE ALL ON FUNCTION unify._outbox_emit_rows(text, text), unify._fit_summaries(regclass, bigint)
    FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
ALTER FUNCTION unify._outbox_emit_rows(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._fit_summaries(regclass, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._holdout_check(text, float8) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.fit_predictions(date, text, int, float8, int, int, boolean) SECURITY DEFINER;
ALTER FUNCTION unify.refresh_segments(date, interval) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.refresh_segments(date, interval) SECURITY DEFINER;
ALTER FUNCTION unify._refresh_actions(bigint[], text) SET search_path = pg_catalog, pg_temp;

-- Issue 27, refresh_segments within the budget: at most customer_unify.segment_notify_limit
-- (default 10000) NOTIFYs a run, one per change; above it one for the run (refresh_segments
-- itself is defined once, in its final form, where this step first replaces it).
CREATE FUNCTION unify._segment_notify_limit() RETURNS bigint
STABLE LANGUAGE plpgsql AS $$
DECLARE
    setting constant text := nullif(btrim(current_setting('customer_unify.segment_notify_limit', true)), '');
BEGIN
    IF setting IS NULL THEN
        RETURN 10000;
    END IF;
    IF setting !~ '^[0-9]{1,18}$' THEN
        RAISE EXCEPTION 'customer_unify.segment_notify_limit must be a whole number of notifications (0 or more), not %', quote_literal(setting)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example SET customer_unify.segment_notify_limit = 10000 (0: only the one notification per run).';
    END IF;
    RETURN setting::bigint;
END
$$;
REVOKE ALL ON FUNCTION unify._segment_notify_limit() FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
ALTER FUNCTION unify._segment_notify_limit() SET search_path = pg_catalog, pg_temp;

-- Review of issue 27: the check that drops a temporary stage made by another role, written out
-- in unify._prepare_stage and again in unify._citus_prepare_clean, is one function both call.
-- Drops those of this session's temporary relations `names` that another role made: only
-- tables the current role made itself are written, because one made first by another role in
-- this session (an admin before calling sync) could carry a trigger, rule or index expression
-- of theirs, which our writes would run as us.
CREATE FUNCTION unify._drop_foreign_temp(names text[]) RETURNS void
VOLATILE STRICT LANGUAGE plpgsql SET client_min_messages = warning AS $$
DECLARE
    foreign_stage record;
BEGIN
    FOR foreign_stage IN
        SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c
        WHERE c.oid IN (SELECT pg_catalog.to_regclass('pg_temp.' || n) FROM unnest(names) AS n)
          AND c.relowner <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
    LOOP
        EXECUTE format('DROP %s %s CASCADE',
                       CASE foreign_stage.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                            WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, foreign_stage.name);
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION unify._prepare_stage(full_read boolean) RETURNS void
VOLATILE LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    PERFORM unify._drop_foreign_temp(ARRAY['unify_source_rows', 'unify_source_keys']);
    IF to_regclass('pg_temp.unify_source_keys') IS NULL AND to_regclass('pg_temp.unify_source_rows') IS NOT NULL THEN
        DROP TABLE pg_temp.unify_source_rows;
    END IF;
    IF to_regclass('pg_temp.unify_source_rows') IS NULL THEN
        EXECUTE (SELECT format('CREATE TEMP TABLE unify_source_rows (source_key text, %s)',
                               string_agg(format('%I %s', f.field, f.stage_type), ', '))
                 FROM unify._canonical_field_types() AS f);
        GRANT INSERT ON pg_temp.unify_source_rows TO PUBLIC;
        -- Every key a full sync saw, over all its parts: records of other keys are gone.
        CREATE TEMP TABLE IF NOT EXISTS unify_source_keys (source_key text);
    ELSIF full_read OR pg_relation_size('pg_temp.unify_source_rows') > 8 * 1024 * 1024 THEN
        -- Temporary tables are never vacuumed: a full read or a large stage starts over in a
        -- new file (a queue batch's few rows are deleted: cheaper than a new file each time).
        TRUNCATE pg_temp.unify_source_rows, pg_temp.unify_source_keys;
    ELSE
        DELETE FROM pg_temp.unify_source_rows;
        DELETE FROM pg_temp.unify_source_keys;
    END IF;
END
$$;
REVOKE ALL ON FUNCTION unify._drop_foreign_temp(text[]) FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
ALTER FUNCTION unify._drop_foreign_temp(text[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._prepare_stage(boolean) SET search_path = pg_catalog, pg_temp;

-- Issue 27, the first sync's write path: every cleaner sync applies to a staged row in one call,
-- unify._clean_contact (pure logic in src/normalize/contact.rs, equal to the single cleaners
-- field for field), returning the composite unify._contact; unify._normalized_query calls it in
-- its fenced form (the unfenced form, which Citus pushes down to shards, keeps the single
-- cleaners). The raw values of a staged row made in one pass, unify._raw_values (a C function
-- that runs no SQL, STABLE, not pinned: see security.sql), read by unify._raw_query; the query
-- Citus pushes to shards makes them of built-ins (unify._raw_expression). A first
-- load rebuilds the indexes of unify.records with maintenance_work_mem set to
-- customer_unify.batch_memory, raised or lowered (unify._index_build_memory, read by
-- unify._rebuild_indexes, replaced here: every bulk write's index builds use the budget).
-- unify._raw_query, unify._normalized_query, unify._citus_clean_statement, unify._apply and
-- unify.sync are defined above, once, in their final form (their bodies name the functions
-- made here only in statements built at run time).
CREATE TYPE unify._contact AS (first_name text, last_name text, email text, email_key text,
    phone text, mobile text, street text, house_number text, postcode text, city text, country text,
    birth_date date, last_name_phonetic text, salutation text, title text);
CREATE FUNCTION unify."_clean_contact"(
	"salutation" TEXT, /* Option < & str > */
	"title" TEXT, /* Option < & str > */
	"first_name" TEXT, /* Option < & str > */
	"last_name" TEXT, /* Option < & str > */
	"full_name" TEXT, /* Option < & str > */
	"email" TEXT, /* Option < & str > */
	"phone" TEXT, /* Option < & str > */
	"mobile" TEXT, /* Option < & str > */
	"street" TEXT, /* Option < & str > */
	"house_number" TEXT, /* Option < & str > */
	"street_line" TEXT, /* Option < & str > */
	"postcode" TEXT, /* Option < & str > */
	"city" TEXT, /* Option < & str > */
	"country" TEXT, /* Option < & str > */
	"birth_date" TEXT /* Option < & str > */
) RETURNS unify._contact /* Option < :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox ::
AllocatedByRust > > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'clean_contact_wrapper';
CREATE FUNCTION unify._raw_values(staged record) RETURNS jsonb
STABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'raw_values_wrapper';
CREATE FUNCTION unify._raw_expression(fields jsonb) RETURNS text
IMMUTABLE LANGUAGE sql AS $$
SELECT CASE WHEN count(*) = 0 THEN '''{}''::jsonb' ELSE
        'pg_catalog.jsonb_strip_nulls(' || concat_ws(' OPERATOR(pg_catalog.||) ',
            CASE WHEN count(*) FILTER (WHERE f.stage_type = 'text') > 0 THEN
                format('pg_catalog.jsonb_object(ARRAY[%s]::text[], ARRAY[%s]::text[])',
                       string_agg(pg_catalog.quote_literal(f.field), ', ' ORDER BY pg_catalog.octet_length(f.field), f.field COLLATE pg_catalog."C") FILTER (WHERE f.stage_type = 'text'),
                       string_agg('s.' || pg_catalog.quote_ident(f.field), ', ' ORDER BY pg_catalog.octet_length(f.field), f.field COLLATE pg_catalog."C") FILTER (WHERE f.stage_type = 'text')) END,
            CASE WHEN count(*) FILTER (WHERE f.stage_type <> 'text') > 0 THEN
                format('pg_catalog.jsonb_build_object(%s)',
                       string_agg(pg_catalog.quote_literal(f.field) || ', s.' || pg_catalog.quote_ident(f.field), ', '
                                      ORDER BY pg_catalog.octet_length(f.field), f.field COLLATE pg_catalog."C")
                           FILTER (WHERE f.stage_type <> 'text')) END) || ')' END
FROM unify._canonical_field_types() AS f
WHERE fields OPERATOR(pg_catalog.?) f.field
$$;
CREATE FUNCTION unify._index_build_memory(parts integer DEFAULT 1) RETURNS text
STABLE LANGUAGE sql AS $$
    SELECT CASE WHEN s.budget IS NULL THEN s.maintenance
                ELSE greatest(least(pg_size_bytes(s.budget) / 1024 / greatest(parts, 1), 2097151), 1024)::text || 'kB' END
    FROM (SELECT current_setting('customer_unify.batch_memory', true) AS budget,
                 current_setting('maintenance_work_mem') AS maintenance) AS s
$$;
REVOKE ALL ON FUNCTION unify._clean_contact(text, text, text, text, text, text, text, text, text, text, text, text, text, text, text) FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
REVOKE ALL ON FUNCTION unify._raw_values(record) FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
REVOKE ALL ON FUNCTION unify._index_build_memory(integer) FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
REVOKE ALL ON FUNCTION unify._raw_expression(jsonb) FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
ALTER FUNCTION unify._raw_expression(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._index_build_memory(integer) SET search_path = pg_catalog, pg_temp;
CREATE OR REPLACE FUNCTION unify._rebuild_indexes(statements text[]) RETURNS void
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    statement text;
    memory constant text := current_setting('maintenance_work_mem');
BEGIN
    IF coalesce(cardinality(statements), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('maintenance_work_mem', unify._index_build_memory(), true);
    FOREACH statement IN ARRAY statements LOOP
        EXECUTE statement;
    END LOOP;
    PERFORM set_config('maintenance_work_mem', memory, true);
END
$$;
ALTER FUNCTION unify._rebuild_indexes(text[]) SET search_path = pg_catalog, pg_temp;


-- Issue 27, part: EM statistics summed on the coordinator from the workers. With the citus
-- extension and at least one worker node, unify.train compares and counts the candidate pairs
-- on the workers: the members of every valid block in unify._train_members (made by
-- unify._citus_member_table, defined above with unify._score_members' columns, dropped at the
-- end of each run), one distributed query grouped by block key calls the Rust kernel per block;
-- the counts per pair key are summed on the coordinator, where EM, u and the prior are
-- estimated. New: unify._tally_block(...) (the kernel; IMMUTABLE STRICT PARALLEL SAFE, the
-- owner's only).
CREATE FUNCTION unify."_tally_block"(
	"sample" TEXT, /* & str */
	"key_hash" bigint, /* i64 */
	"record_id" bigint[], /* Vec < Option < i64 > > */
	"source_id" INT[], /* Vec < Option < i32 > > */
	"first_name" TEXT[], /* Vec < Option < String > > */
	"last_name" TEXT[], /* Vec < Option < String > > */
	"email" TEXT[], /* Vec < Option < String > > */
	"email_key" TEXT[], /* Vec < Option < String > > */
	"phone" TEXT[], /* Vec < Option < String > > */
	"mobile" TEXT[], /* Vec < Option < String > > */
	"street" TEXT[], /* Vec < Option < String > > */
	"house_number" TEXT[], /* Vec < Option < String > > */
	"postcode" TEXT[], /* Vec < Option < String > > */
	"city" TEXT[], /* Vec < Option < String > > */
	"birth_date" date[], /* Vec < Option < pgrx :: datum :: Date > > */
	"external_id" TEXT[], /* Vec < Option < String > > */
	"customer_number" TEXT[], /* Vec < Option < String > > */
	"valid_keys" TEXT[], /* Vec < Option < String > > */
	"first_name_tf" double precision[], /* Vec < Option < f64 > > */
	"first_name_as_last_tf" double precision[], /* Vec < Option < f64 > > */
	"last_name_tf" double precision[], /* Vec < Option < f64 > > */
	"last_name_as_first_tf" double precision[], /* Vec < Option < f64 > > */
	"email_household" bool[], /* Vec < Option < bool > > */
	"phone_household" bool[], /* Vec < Option < bool > > */
	"mobile_household" bool[] /* Vec < Option < bool > > */
) RETURNS TABLE (
	"candidates" bigint,  /* i64 */
	"block_rule_sets" INT[],  /* Vec < i32 > */
	"block_rule_counts" bigint[],  /* Vec < i64 > */
	"key_outcomes" bigint[],  /* Vec < i64 > */
	"key_rules" INT[],  /* Vec < i32 > */
	"key_first_name_tf" bigint[],  /* Vec < i64 > */
	"key_last_name_tf" bigint[],  /* Vec < i64 > */
	"key_pairs" bigint[]  /* Vec < i64 > */
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_tally_block_wrapper';
DO $citus_training_grants$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'unify'::regnamespace AND p.proname = '_tally_block' LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, unify_admin, unify_reader, unify_analyst', f);
    END LOOP;
END
$citus_training_grants$;

-- Issue 27, part: the record→person mapping. A record's person and former person ids move from
-- unify.records to the narrow unify.record_persons (a row per record that has a person), so
-- that a resolve writes narrow rows instead of a new version of every wide record row. The
-- mapping is copied over, the views that read the two columns are replaced, then the columns
-- (and the index records_person with them) go. The functions that read or write them and are
-- new in 0.3.0 are edited where this step defines them; the 0.2.0 ones follow here.
CREATE TABLE unify.record_persons (
    record_id          bigint PRIMARY KEY REFERENCES unify.records ON DELETE CASCADE,
    person_id          bigint NOT NULL,
    -- The person ids the record carried before person_id, oldest first (NULL: none): what an
    -- undo gives back (src/cluster/ids.rs).
    former_person_ids  bigint[]
);
COMMENT ON TABLE unify.record_persons IS 'The person of each resolved record, with the ids it carried before (written by resolve and the change queue)';
INSERT INTO unify.record_persons (record_id, person_id, former_person_ids)
SELECT r.record_id, r.person_id, r.former_person_ids FROM unify.records r WHERE r.person_id IS NOT NULL ORDER BY r.record_id;
CREATE INDEX record_persons_person ON unify.record_persons (person_id);
SELECT pg_catalog.pg_extension_config_dump('unify.record_persons', '');
REVOKE ALL ON unify.record_persons FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.record_persons TO unify_admin;
CREATE OR REPLACE VIEW unify._event_person_rule AS
SELECT e.event_source_id, e.event_key, coalesce(d.person_id, st.person_id) AS person_id,
       d.person_id IS NULL AND st.person_id IS NOT NULL AS stitched
FROM unify.events e
LEFT JOIN LATERAL (
    SELECT coalesce(
        (SELECT rp.person_id FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
         WHERE r.source_id = e.source_id AND r.source_key = e.source_key),
        (SELECT rp.person_id FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
         WHERE r.customer_number = e.customer_number
         ORDER BY r.record_id LIMIT 1),
        (SELECT min(rp.person_id) FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
         WHERE r.email_key = e.email_key
         HAVING count(DISTINCT rp.person_id) = 1)) AS person_id) d ON true
LEFT JOIN unify.identity_stitches s ON s.anonymous_id = e.anonymous_id
LEFT JOIN LATERAL (
    SELECT coalesce(
        (SELECT rp.person_id FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
         WHERE r.source_id = s.source_id AND r.source_key = s.source_key),
        (SELECT rp.person_id FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
         WHERE r.customer_number = s.customer_number
         ORDER BY r.record_id LIMIT 1),
        (SELECT min(rp.person_id) FROM unify.records r JOIN unify.record_persons rp ON rp.record_id = r.record_id
         WHERE r.email_key = s.email_key
         HAVING count(DISTINCT rp.person_id) = 1)) AS person_id
    WHERE s.anonymous_id IS NOT NULL) st ON true;
CREATE OR REPLACE VIEW unify.match_report AS
SELECT 'weight_histogram'::text AS section,
       format('[%s, %s)', w, w + 2) AS label,
       w::float8 AS bucket_start,
       count(*) AS pairs,
       count(*) FILTER (WHERE p.is_match) AS matches
FROM unify.pairs p, LATERAL (SELECT (floor(p.match_weight / 2) * 2)::int AS w) b
GROUP BY w
UNION ALL
SELECT 'blocking_rule', s.rule, NULL, s.pairs,
       (SELECT count(*) FROM unify.pairs p WHERE p.is_match AND s.rule = ANY (p.blocking_rules))
FROM unify.blocking_stats s
UNION ALL
SELECT 'forced_by_rule', p.forced_by, NULL, count(*), count(*)
FROM unify.pairs p WHERE p.forced_by IS NOT NULL GROUP BY p.forced_by
UNION ALL
-- Persons of three or more records held together by a link far weaker (10 bits) than their
-- typical one: a chain worth a steward's look (unify.unlink splits it).
SELECT 'weak_chain', format('person %s: weakest link %s, median %s', c.person_id, round(c.weakest::numeric, 1),
                            round(c.median::numeric, 1)),
       c.weakest, c.pairs, c.matches
FROM (SELECT ra.person_id, min(p.match_weight) FILTER (WHERE p.is_match AND p.forced_by IS NULL) AS weakest,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY p.match_weight) FILTER (WHERE p.is_match) AS median,
             count(*) AS pairs, count(*) FILTER (WHERE p.is_match) AS matches
      FROM unify.pairs p
      JOIN unify.record_persons ra ON ra.record_id = p.record_a
      JOIN unify.record_persons rb ON rb.record_id = p.record_b AND rb.person_id = ra.person_id
      GROUP BY ra.person_id
      HAVING count(*) FILTER (WHERE p.is_match) >= 2) c
WHERE c.weakest < c.median - 10;
ALTER TABLE unify.records DROP COLUMN person_id, DROP COLUMN former_person_ids;
CREATE OR REPLACE FUNCTION unify._drop_indexes(rel regclass, constraints boolean DEFAULT false) RETURNS text[]
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    index record;
    rebuild text[] := '{}';
    referencing text[] := '{}';
BEGIN
    FOR index IN
        SELECT c.conrelid::regclass AS referrer, c.conname, pg_get_constraintdef(c.oid) AS definition
        FROM pg_constraint c
        JOIN pg_class t ON t.oid = c.confrelid
        WHERE constraints AND c.confrelid = rel AND c.contype = 'f' AND c.conrelid <> rel
          AND pg_has_role(t.relowner, 'USAGE')
        ORDER BY c.conrelid, c.conname
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', index.referrer, index.conname);
        referencing := referencing || format('ALTER TABLE %s ADD CONSTRAINT %I %s', index.referrer, index.conname, index.definition);
    END LOOP;
    FOR index IN
        SELECT i.indexrelid::regclass AS name, c.conname, pg_get_indexdef(i.indexrelid) AS definition,
               pg_get_constraintdef(c.oid) AS constraint_definition
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid = rel AND pg_has_role(t.relowner, 'USAGE') AND (constraints OR c.oid IS NULL)
        ORDER BY i.indexrelid
    LOOP
        IF index.conname IS NULL THEN
            EXECUTE format('DROP INDEX %s', index.name);
            rebuild := rebuild || index.definition;
        ELSE
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', rel, index.conname);
            rebuild := rebuild || format('ALTER TABLE %s ADD CONSTRAINT %I %s', rel, index.conname, index.constraint_definition);
        END IF;
    END LOOP;
    RETURN rebuild || referencing;
END
$$;
CREATE OR REPLACE FUNCTION unify.link(record_a bigint, record_b bigint, reason text DEFAULT NULL) RETURNS bigint
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    a unify.records;
    b unify.records;
    person bigint;
    before bigint[];
BEGIN
    -- Stewardship calls queue here; the records are read after the wait, so a call works on the
    -- persons as the one before it left them.
    PERFORM unify._lock('persons');
    a := unify._checked_record(record_a, 'link');
    b := unify._checked_record(record_b, 'link');
    -- Their persons before, a's first (a record without one yet has none).
    before := ARRAY(SELECT rp.person_id FROM unify.record_persons rp WHERE rp.record_id IN (a.record_id, b.record_id)
                    ORDER BY rp.record_id = a.record_id DESC);
    PERFORM unify._set_override(a, b, 'must_link', reason, 'link');
    PERFORM unify._resolve_scope(before, ARRAY[a.record_id, b.record_id], 'link', reason);
    SELECT rp.person_id INTO person FROM unify.record_persons rp WHERE rp.record_id = a.record_id;
    INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
    VALUES ('link', person, before, 'link', reason,
            jsonb_build_object('records', jsonb_build_array(a.record_id, b.record_id)));
    RETURN person;
END
$$;
CREATE OR REPLACE FUNCTION unify.unlink(record_a bigint, record_b bigint, reason text DEFAULT NULL) RETURNS bigint[]
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    a unify.records;
    b unify.records;
    person_a bigint;
    person_b bigint;
    persons bigint[];
BEGIN
    -- Stewardship calls queue here; the records are read after the wait, so a call works on the
    -- persons as the one before it left them.
    PERFORM unify._lock('persons');
    a := unify._checked_record(record_a, 'unlink');
    b := unify._checked_record(record_b, 'unlink');
    SELECT rp.person_id INTO person_a FROM unify.record_persons rp WHERE rp.record_id = a.record_id;
    SELECT rp.person_id INTO person_b FROM unify.record_persons rp WHERE rp.record_id = b.record_id;
    PERFORM unify._set_override(a, b, 'cannot_link', reason, 'unlink');
    PERFORM unify._resolve_scope(array_remove(ARRAY[person_a, person_b], NULL), ARRAY[a.record_id, b.record_id], 'unlink', reason);
    persons := ARRAY(SELECT rp.person_id FROM unify.record_persons rp WHERE rp.record_id IN (a.record_id, b.record_id) ORDER BY rp.record_id = a.record_id DESC);
    INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason, details)
    VALUES ('unlink', person_a, persons, 'unlink', reason,
            jsonb_build_object('records', jsonb_build_array(a.record_id, b.record_id)));
    RETURN persons;
END
$$;
CREATE OR REPLACE FUNCTION unify.person_records(person_id bigint)
RETURNS TABLE (record_id bigint, source text, source_key text, first_name text, last_name text, email text,
               phone text, mobile text, street text, house_number text, postcode text, city text,
               birth_date date, consent_email boolean, source_updated_at timestamptz, synced_at timestamptz)
STABLE STRICT PARALLEL SAFE LANGUAGE sql AS $$
    SELECT r.record_id, s.name, r.source_key, r.first_name, r.last_name, r.email, r.phone, r.mobile, r.street,
           r.house_number, r.postcode, r.city, r.birth_date, r.consent_email, r.source_updated_at, r.synced_at
    FROM unify.record_persons rp JOIN unify.records r ON r.record_id = rp.record_id
    JOIN unify.sources s ON s.source_id = r.source_id
    WHERE rp.person_id = person_records.person_id
    ORDER BY r.record_id
$$;
CREATE OR REPLACE FUNCTION unify._queue_scope(person_ids bigint[], record_ids bigint[], OUT persons bigint[], OUT unassigned bigint[])
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    scope_records bigint[];
    -- The records that joined the scope in the last round: only their partners are new.
    frontier bigint[];
    reached bigint[];
    new_persons bigint[];
    new_unassigned bigint[];
    rounds int := 0;
BEGIN
    persons := ARRAY(SELECT DISTINCT p FROM unnest(person_ids) p WHERE p IS NOT NULL
                     UNION SELECT rp.person_id FROM unify.record_persons rp WHERE rp.record_id = ANY (record_ids));
    unassigned := ARRAY(SELECT r.record_id FROM unify.records r WHERE r.record_id = ANY (record_ids)
                          AND NOT EXISTS (SELECT 1 FROM unify.record_persons rp WHERE rp.record_id = r.record_id));
    scope_records := ARRAY(SELECT rp.record_id FROM unify.record_persons rp WHERE rp.person_id = ANY (persons)) || unassigned;
    frontier := scope_records;
    LOOP
        rounds := rounds + 1;
        -- Set differences by EXCEPT (hashed), not NOT = ANY (a scan of the array per row).
        reached := ARRAY(
            (SELECT p.record_b FROM unify.pairs p WHERE p.is_match AND p.record_a = ANY (frontier)
             UNION SELECT p.record_a FROM unify.pairs p WHERE p.is_match AND p.record_b = ANY (frontier)
             UNION SELECT y.record_id FROM unify.records x
                   JOIN unify.overrides o ON o.kind = 'must_link'
                    AND ((o.source_a, o.key_a) = (x.source_id, x.source_key) OR (o.source_b, o.key_b) = (x.source_id, x.source_key))
                   JOIN unify.records y ON (y.source_id, y.source_key) IN ((o.source_a, o.key_a), (o.source_b, o.key_b))
                    AND y.record_id <> x.record_id
                   WHERE x.record_id = ANY (frontier))
            EXCEPT SELECT unnest(scope_records));
        new_persons := ARRAY(SELECT rp.person_id FROM unify.record_persons rp WHERE rp.record_id = ANY (reached)
                             EXCEPT SELECT unnest(persons));
        new_unassigned := ARRAY(SELECT r.record_id FROM unify.records r WHERE r.record_id = ANY (reached)
                                  AND NOT EXISTS (SELECT 1 FROM unify.record_persons rp WHERE rp.record_id = r.record_id));
        IF cardinality(new_persons) = 0 AND cardinality(new_unassigned) = 0 THEN
            RETURN;
        END IF;
        persons := persons || new_persons;
        unassigned := unassigned || new_unassigned;
        frontier := ARRAY(SELECT rp.record_id FROM unify.record_persons rp WHERE rp.person_id = ANY (new_persons)) || new_unassigned;
        scope_records := scope_records || frontier;
        IF rounds > 100 THEN
            RAISE EXCEPTION 'unify.process_queue: the persons around the changed records did not close after 100 rounds'
                USING ERRCODE = 'program_limit_exceeded', HINT = 'Run unify.resolve() once; this is a bug worth reporting.';
        END IF;
    END LOOP;
END
$$;
CREATE OR REPLACE FUNCTION unify._queue_take(max_rows int) RETURNS int
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    batches jsonb;
    batch jsonb;
    src unify.sources;
    taken int := 0;
    keys text[];
    record_keys text[];
    matching boolean;
    state unify.matching_state;
    changed_ids bigint[] := '{}';
    old_persons bigint[] := '{}';
    -- The changed records as they were, for whether their e-mails and phones were a household's.
    before jsonb := '[]';
    taken_by constant text := CASE WHEN current_setting('application_name') = 'customer_unify worker'
                                   THEN 'worker' ELSE unify._actor() END;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unify.change_queue) THEN
        RETURN 0;
    END IF;
    -- Changes are matched and clustered once a full scoring has built the blocking index for
    -- the rules in use; before that they only reach unify.records (resolve() assigns persons).
    SELECT * INTO state FROM unify.matching_state;
    matching := FOUND AND state.blocking_rules = unify.get_model() -> 'blocking_rules';
    IF FOUND AND NOT matching THEN
        RAISE WARNING 'unify.process_queue: the blocking rules changed since the last unify.score_pairs(); changed rows reach unify.records but are not matched'
            USING HINT = 'Run SELECT * FROM unify.score_pairs(); SELECT * FROM unify.resolve(); once.';
    END IF;
    -- Records change under the clustering lock: no clustering works on persons whose records
    -- change under it, and two takes do not write one record. A rescoring may run meanwhile:
    -- it only reads records, and what it reads of this batch's records the batch's own
    -- rescoring (after it, in order) scores again, as it does the pairs among the holders of a
    -- value whose household status the batch turns.
    PERFORM unify._lock('persons');
    -- Take the oldest changes nobody else is working on; they leave the queue in the same
    -- transaction that applies them, so a crash loses nothing and applies nothing twice.
    WITH picked AS (
        SELECT ctid FROM unify.change_queue ORDER BY enqueued_at LIMIT max_rows FOR UPDATE SKIP LOCKED
    ), taken_rows AS (
        DELETE FROM unify.change_queue q WHERE q.ctid = ANY (ARRAY(SELECT p.ctid FROM picked p))
        RETURNING q.source_id, q.source_key, q.op
    ), per_source AS (
        SELECT t.source_id, bool_or(t.op = 'T') AS truncated,
               array_agg(DISTINCT t.source_key) FILTER (WHERE t.source_key IS NOT NULL) AS keys, count(*) AS n
        FROM taken_rows t GROUP BY t.source_id
    )
    SELECT jsonb_agg(to_jsonb(per_source)) INTO batches FROM per_source;
    FOR batch IN SELECT * FROM jsonb_array_elements(coalesce(batches, '[]')) LOOP
        taken := taken + (batch ->> 'n')::int;
        SELECT * INTO src FROM unify.sources WHERE source_id = (batch ->> 'source_id')::int AND removed_at IS NULL;
        IF NOT FOUND THEN
            CONTINUE;  -- the source was removed meanwhile: its changes have nowhere to go
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = src.relation) THEN
            RAISE WARNING 'source "%": table % no longer exists; % queued changes dropped', src.name, src.relation_name, batch ->> 'n'
                USING HINT = 'unify.remove_source() removes the source and its records.';
            CONTINUE;
        END IF;
        -- The current state of the source row decides, not the operation: several changes of
        -- one key collapse into one, and order within the batch does not matter. A truncate
        -- re-reads the whole source.
        keys := CASE WHEN (batch ->> 'truncated')::boolean THEN NULL
                     ELSE ARRAY(SELECT jsonb_array_elements_text(batch -> 'keys')) END;
        IF matching THEN
            -- What the records were: their persons, names, birth dates, e-mails and phones. A
            -- truncate reads all of the source's records (as a key list: "keys IS NULL OR ..."
            -- would make the statement be planned anew on every batch).
            record_keys := coalesce(keys, ARRAY(SELECT r.source_key FROM unify.records r WHERE r.source_id = src.source_id));
            SELECT changed_ids || coalesce(array_agg(r.record_id), '{}'),
                   old_persons || coalesce(array_agg(rp.person_id) FILTER (WHERE rp.person_id IS NOT NULL), '{}'),
                   before || coalesce(jsonb_agg(jsonb_build_object(
                       'record_id', r.record_id, 'first_name', r.first_name, 'last_name', r.last_name,
                       'birth_date', to_char(r.birth_date, 'YYYY-MM-DD'), 'email_key', r.email_key,
                       'phone', r.phone, 'mobile', r.mobile)), '[]')
            INTO changed_ids, old_persons, before
            FROM unify.records r LEFT JOIN unify.record_persons rp ON rp.record_id = r.record_id
            WHERE r.source_id = src.source_id AND r.source_key = ANY (record_keys);
        END IF;
        PERFORM unify._apply_or_set_aside(src, keys);
        IF matching THEN
            record_keys := coalesce(keys, ARRAY(SELECT r.source_key FROM unify.records r WHERE r.source_id = src.source_id));
            SELECT changed_ids || coalesce(array_agg(r.record_id), '{}') INTO changed_ids
            FROM unify.records r WHERE r.source_id = src.source_id AND r.source_key = ANY (record_keys);
        END IF;
    END LOOP;

    IF matching AND cardinality(changed_ids) > 0 THEN
        INSERT INTO unify.queue_work (stage, record_ids, person_ids, before, source_rows, taken_at, taken_by)
        VALUES ('rescore', ARRAY(SELECT DISTINCT x FROM unnest(changed_ids) x), old_persons, before, taken, started, taken_by);
    ELSIF taken > 0 THEN
        PERFORM unify._queue_done(taken, started, taken_by);
    END IF;
    RETURN taken;
END
$$;
ALTER FUNCTION unify._drop_indexes(regclass, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.link(bigint, bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.unlink(bigint, bigint, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.person_records(bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._queue_scope(bigint[], bigint[]) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify._queue_take(int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.link(bigint, bigint, text) SECURITY DEFINER;
ALTER FUNCTION unify.unlink(bigint, bigint, text) SECURITY DEFINER;

-- Issue 27, part: incremental golden records. unify.golden_inputs holds per person a hash of
-- the inputs of their golden record; unify._refresh_persons (edited where this step defines it)
-- makes again only the persons whose hash changed. Empty after the update: the first resolve
-- makes every golden record, as before.
CREATE UNLOGGED TABLE unify.golden_inputs (
    person_id bigint PRIMARY KEY,
    inputs    bigint NOT NULL
);
COMMENT ON TABLE unify.golden_inputs IS 'Per person, a hash of the inputs of their golden record as of the resolve that made it: a resolve makes again only the persons whose inputs changed';
REVOKE ALL ON unify.golden_inputs FROM PUBLIC, unify_admin, unify_reader, unify_analyst;
GRANT SELECT ON unify.golden_inputs TO unify_admin;

-- Issue 27, part: the batch steps run their statements with work_mem within
-- customer_unify.batch_memory: refresh_segments, fit_predictions and resolve (edited where this
-- step defines them), train and score_pairs (below).
-- The work_mem of a batch step written in SQL (refresh_segments, fit_predictions: issue 27), so
-- that PostgreSQL's part of it stays within customer_unify.batch_memory as well: an eighth of
-- the budget (a statement's sorts and hashes each take up to work_mem, a hash up to
-- hash_mem_multiplier times it, and a plan holds several), at least 64kB, where that is below
-- work_mem; work_mem otherwise (the default 1GB budget leaves the default 4MB alone). The step
-- sets it with set_config(..., true) and sets the caller's value back before it returns: a
-- function's SET clause restores only the settings it names (here search_path).
CREATE FUNCTION unify._batch_work_mem() RETURNS text
STABLE PARALLEL SAFE LANGUAGE sql AS $$
    SELECT CASE WHEN s.share < pg_size_bytes(s.work_mem) THEN (s.share / 1024)::text || 'kB' ELSE s.work_mem END
    FROM (SELECT CASE WHEN b.budget IS NOT NULL THEN greatest(pg_size_bytes(b.budget) / 8, 65536) END AS share,
                 current_setting('work_mem') AS work_mem
          FROM (SELECT nullif(btrim(current_setting('customer_unify.batch_memory', true)), '') AS budget) AS b) AS s
$$;
REVOKE ALL ON FUNCTION unify._batch_work_mem() FROM PUBLIC;
ALTER FUNCTION unify._batch_work_mem() SET search_path = pg_catalog, pg_temp;
CREATE OR REPLACE FUNCTION unify.train(sample_pairs int DEFAULT 1000000, max_iterations int DEFAULT 100)
RETURNS TABLE (model_version int, session text, pairs bigint, estimated text[], iterations int,
               converged boolean, match_share float8, log_likelihood float8)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    trained record;   -- unify._train's row (named columns)
    new_version int;
    work_mem_before constant text := current_setting('work_mem');
BEGIN
    -- One training at a time; scoring may run beside it on the previous version.
    PERFORM unify._lock('train');
    -- PostgreSQL's sorts and hashes within the batch budget too; the caller's work_mem back at
    -- the end (an error ends the transaction, which sets it back).
    PERFORM set_config('work_mem', unify._batch_work_mem(), true);
    SELECT * INTO STRICT trained FROM unify._train(sample_pairs, max_iterations);
    PERFORM set_config('work_mem', work_mem_before, true);
    INSERT INTO unify.model (model, origin, report)
    VALUES (trained.model, 'train', trained.report)
    RETURNING version INTO new_version;
    INSERT INTO unify.name_frequencies (model_version, field, value, frequency)
    SELECT new_version, f.field, f.value, f.frequency
    FROM unnest(trained.frequency_field, trained.frequency_value, trained.frequency) AS f(field, value, frequency);
    RAISE NOTICE 'model version %: prior %, % expected matches among % candidate pairs, %',
        new_version, round(trained.prior::numeric, 12), round(trained.expected_matches::numeric),
        trained.candidate_pairs,
        CASE WHEN trained.converged THEN 'every session converged' ELSE 'NOT every session converged' END
        -- What the data says of households, for reading the household discount and namesake odds.
        || coalesce('; two people: ' || round(100 * trained.household_share::numeric, 1) || '% of pairs at one address', '')
        || coalesce(', ' || round(100 * trained.namesake_share::numeric, 1) || '% of those of one name', '')
        || coalesce(', ' || round(100 * trained.similar_name_share::numeric, 1) || '% of those of alike first names', '');
    RETURN QUERY
    SELECT new_version, s.session, s.pairs, s.estimated, s.iterations, s.converged, s.match_share, s.log_likelihood
    FROM unify._train_sessions(trained.report) s;
END
$$;
CREATE OR REPLACE FUNCTION unify.score_pairs()
RETURNS TABLE (candidate_pairs bigint, stored_pairs bigint, matches bigint, forced bigint, model_version int, seconds numeric)
VOLATILE LANGUAGE plpgsql AS $$
DECLARE
    started constant timestamptz := clock_timestamp();
    work_mem_before constant text := current_setting('work_mem');
BEGIN
    PERFORM unify._lock('pairs');
    -- PostgreSQL's sorts and hashes within the batch budget too; the caller's work_mem back at
    -- the end (an error ends the transaction, which sets it back).
    PERFORM set_config('work_mem', unify._batch_work_mem(), true);
    -- Rust writes the pairs, their blocking keys and figures (unify._score_pairs).
    RETURN QUERY
    SELECT s.candidate_pairs, s.stored_pairs, s.matches, s.forced, s.model_version,
           round(extract(epoch FROM clock_timestamp() - started)::numeric, 3)
    FROM unify._score_pairs() s;
    PERFORM set_config('work_mem', work_mem_before, true);
END
$$;
ALTER FUNCTION unify.train(int, int) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.score_pairs() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION unify.train(int, int) SECURITY DEFINER;
ALTER FUNCTION unify.score_pairs() SECURITY DEFINER;
