-- Views for BI tools over persons, segments and predictions: customer_360, segment_summary and
-- the pseudonymous analyst_persons. Privileges: see security.sql.

CREATE VIEW unify.customer_360 AS
SELECT p.person_id, p.household_id,
       (SELECT count(*) FROM unify.persons h WHERE h.household_id = p.household_id) AS household_size,
       p.first_name, p.last_name, p.email, p.phone, p.mobile, p.street, p.house_number, p.postcode,
       p.city, p.country, p.birth_date, p.company, p.customer_number,
       p.consent_email, p.consent_phone, p.consent_post,
       p.record_count, p.sources, p.first_seen, p.last_seen,
       s.segment, s.r_score, s.f_score, s.m_score, s.last_purchase,
       (SELECT r.as_of FROM unify.segment_runs r ORDER BY r.run_id DESC LIMIT 1) - s.last_purchase AS recency_days,
       s.frequency AS orders_in_window,
       s.monetary AS spend_in_window,
       pr.p_alive, pr.churn_probability, pr.expected_purchases, pr.expected_spend, pr.clv,
       p.updated_at
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id;
COMMENT ON VIEW unify.customer_360 IS 'One row per person: golden record, household, sources, RFM segment and predictions';

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
       pr.p_alive, pr.churn_probability, pr.expected_purchases, pr.expected_spend, pr.clv
FROM unify.persons p
LEFT JOIN unify.segments s ON s.person_id = p.person_id
LEFT JOIN unify.predictions pr ON pr.person_id = p.person_id;
COMMENT ON VIEW unify.analyst_persons IS 'Pseudonymous persons for unify_analyst: ids, postcode area, birth year, segment and predictions, no direct identifier';
