-- Views for BI tools over persons, segments and predictions: customer_360, segment_summary and
-- the pseudonymous analyst_persons. Privileges: see security.sql.

CREATE VIEW unify.customer_360 AS
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

CREATE VIEW unify.segment_summary AS
SELECT r.segment,
       count(s.person_id) AS persons,
       round(100.0 * count(s.person_id) / nullif(sum(count(s.person_id)) OVER (), 0), 1) AS percent,
       round(avg((SELECT r.as_of FROM unify.segment_runs r ORDER BY r.run_id DESC LIMIT 1) - s.last_purchase), 1) AS avg_recency_days,
       round(avg(s.frequency), 2) AS avg_frequency,
       round(avg(s.monetary), 2) AS avg_monetary,
       coalesce(sum(s.monetary), 0) AS total_monetary,
       round(avg(pr.p_alive)::numeric, 3) AS avg_p_alive,
       round(sum(pr.clv)::numeric, 2) AS total_clv
FROM (SELECT DISTINCT segment FROM unify.segment_rules) r
LEFT JOIN unify.segments s ON s.segment = r.segment
LEFT JOIN unify.predictions pr ON pr.person_id = s.person_id
GROUP BY r.segment;
COMMENT ON VIEW unify.segment_summary IS 'Per segment: persons, share, average recency, frequency and spend, P(alive) and CLV';

-- For unify_analyst (data minimisation): persons, segments and predictions with no direct
-- identifier. The postcode is cut to its first two digits (a German postal region of some
-- hundred thousand people), the birth date to its year; no name, e-mail, phone, street, city
-- or customer number.
CREATE VIEW unify.analyst_persons AS
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
COMMENT ON VIEW unify.analyst_persons IS 'Pseudonymous persons for unify_analyst: ids, postcode area, birth year, segment and predictions, no direct identifier';
