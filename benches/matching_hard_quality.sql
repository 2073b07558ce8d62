-- Matching quality on the hard cases of issue 25, by kind of difference, for two sets of
-- predicted pairs side by side: customer_unify's matches (unify.pairs.is_match) and Splink's
-- (table splink_pairs, loaded by benches/matching_hard.sh). Needs: crmgen output in the search
-- path (table truth), its sources synced, score_pairs run. Figures only; no assertion.
--
-- Definitions (all pairwise, over records):
--   common evidence  a true pair whose records share something beyond a name: a personal e-mail
--                    (match key) or phone (held by no record of another person; a family mailbox
--                    or landline is the household's), the birth date, or street, house number and
--                    postcode
--   personal e-mail  a shared e-mail key no record of another person holds and not a family
--                    mailbox (tagged shared_email by the generator)
--   personal mobile  a shared mobile number (+4915…, +4916…, +4917…) no record of another person holds
--   sen./jun. pair   two people of one household, one tagged senior and the other junior (father
--                    and son, mother and daughter of one first name)
--   twin pair        two people of one household both tagged twin
--   kind             a true pair counts under every variation either record carries (truth.variations)
CREATE TEMP TABLE rec_truth AS
SELECT r.record_id, t.person_id, t.household_id, t.variations, r.email_key, r.birth_date,
       r.street, r.house_number, r.postcode,
       array_remove(ARRAY[r.phone, r.mobile], NULL) AS phones
FROM unify.records r JOIN unify.sources s USING (source_id)
JOIN truth t ON t.source = s.name AND t.source_key = r.source_key;
CREATE INDEX ON rec_truth (person_id);
CREATE INDEX ON rec_truth (household_id);
ANALYZE rec_truth;
-- Values held by records of more than one person: household or junk, not personal; and the
-- family mailboxes the generator made (tagged shared_email), even where only one member's
-- records carry it.
CREATE TEMP TABLE shared_values AS
SELECT v FROM (SELECT email_key AS v, person_id FROM rec_truth WHERE email_key IS NOT NULL
               UNION ALL SELECT unnest(phones), person_id FROM rec_truth) x
GROUP BY v HAVING count(DISTINCT person_id) > 1
UNION SELECT email_key FROM rec_truth WHERE variations @> '{shared_email}' AND email_key IS NOT NULL;
CREATE TEMP TABLE hard_pairs AS
SELECT a.record_id AS record_a, b.record_id AS record_b, a.person_id = b.person_id AS same_person,
       ARRAY(SELECT DISTINCT v FROM unnest(a.variations || b.variations) v ORDER BY v) AS tags,
       ((a.email_key = b.email_key AND a.email_key NOT IN (SELECT v FROM shared_values))
        OR EXISTS (SELECT 1 FROM unnest(a.phones) ph WHERE ph = ANY (b.phones) AND ph NOT IN (SELECT v FROM shared_values))
        OR a.birth_date = b.birth_date
        OR (a.street = b.street AND a.house_number = b.house_number AND a.postcode = b.postcode)) AS common_evidence,
       (a.email_key = b.email_key AND a.email_key NOT IN (SELECT v FROM shared_values)) AS personal_email,
       EXISTS (SELECT 1 FROM unnest(a.phones) ph WHERE ph = ANY (b.phones) AND ph ~ '^\+491[567]'
               AND ph NOT IN (SELECT v FROM shared_values)) AS personal_mobile,
       a.person_id <> b.person_id AND ((a.variations @> '{senior}' AND b.variations @> '{junior}')
                                    OR (a.variations @> '{junior}' AND b.variations @> '{senior}')) AS namesakes,
       a.person_id <> b.person_id AND a.variations @> '{twin}' AND b.variations @> '{twin}' AS twins
FROM rec_truth a JOIN rec_truth b
  ON (a.person_id = b.person_id OR a.household_id = b.household_id) AND a.record_id < b.record_id;
CREATE TEMP TABLE ours AS SELECT record_a, record_b FROM unify.pairs WHERE is_match;
CREATE TEMP TABLE judged AS
SELECT h.*, o.record_a IS NOT NULL AS by_us, s.record_a IS NOT NULL AS by_splink
FROM hard_pairs h LEFT JOIN ours o USING (record_a, record_b) LEFT JOIN splink_pairs s USING (record_a, record_b);
ANALYZE judged;

\echo 'overall: pairwise precision, recall, and recall on true pairs with common evidence'
WITH p AS (
    SELECT 'customer_unify' AS matcher, record_a, record_b FROM ours
    UNION ALL SELECT 'splink 5', record_a, record_b FROM splink_pairs),
c AS (
    SELECT p.matcher, count(*) AS predicted,
           count(*) FILTER (WHERE a.person_id = b.person_id) AS tp
    FROM p JOIN rec_truth a ON a.record_id = p.record_a JOIN rec_truth b ON b.record_id = p.record_b
    GROUP BY p.matcher)
SELECT c.matcher, c.predicted, c.tp, c.predicted - c.tp AS fp,
       round(c.tp::numeric / nullif(c.predicted, 0), 5) AS precision,
       round(c.tp::numeric / (SELECT count(*) FROM judged WHERE same_person), 5) AS recall,
       round((SELECT count(*) FILTER (WHERE CASE WHEN c.matcher = 'customer_unify' THEN by_us ELSE by_splink END)::numeric
              / count(*) FROM judged WHERE same_person AND common_evidence), 5) AS recall_common_evidence,
       (SELECT count(*) FROM judged WHERE same_person) AS true_pairs,
       (SELECT count(*) FROM judged WHERE same_person AND common_evidence) AS with_common_evidence
FROM c ORDER BY c.matcher;

\echo 'people who must stay apart: pairs merged (share)'
SELECT kind, count(*) AS pairs,
       count(*) FILTER (WHERE by_us) AS merged_by_us, round(count(*) FILTER (WHERE by_us)::numeric / nullif(count(*), 0), 4) AS share_us,
       count(*) FILTER (WHERE by_splink) AS merged_by_splink, round(count(*) FILTER (WHERE by_splink)::numeric / nullif(count(*), 0), 4) AS share_splink
FROM (SELECT 'sen./jun. namesakes' AS kind, * FROM judged WHERE namesakes
      UNION ALL SELECT 'twins', * FROM judged WHERE twins
      UNION ALL SELECT 'any two people of one household', * FROM judged WHERE NOT same_person) x
GROUP BY kind ORDER BY kind;

\echo 'true pairs sharing a personal e-mail or mobile: found (share)'
SELECT kind, count(*) AS pairs,
       round(count(*) FILTER (WHERE by_us)::numeric / nullif(count(*), 0), 4) AS found_us,
       round(count(*) FILTER (WHERE by_splink)::numeric / nullif(count(*), 0), 4) AS found_splink
FROM (SELECT 'personal e-mail' AS kind, * FROM judged WHERE same_person AND personal_email
      UNION ALL SELECT 'personal mobile', * FROM judged WHERE same_person AND personal_mobile) x
GROUP BY kind ORDER BY kind;

\echo 'recall by kind of difference, on true pairs with common evidence (a pair counts under every variation either record has); all_pairs: with or without'
SELECT tag, count(*) FILTER (WHERE common_evidence) AS pairs,
       round(count(*) FILTER (WHERE common_evidence AND by_us)::numeric / nullif(count(*) FILTER (WHERE common_evidence), 0), 4) AS recall_us,
       round(count(*) FILTER (WHERE common_evidence AND by_splink)::numeric / nullif(count(*) FILTER (WHERE common_evidence), 0), 4) AS recall_splink,
       count(*) AS all_pairs,
       round(count(*) FILTER (WHERE by_us)::numeric / count(*), 4) AS all_recall_us,
       round(count(*) FILTER (WHERE by_splink)::numeric / count(*), 4) AS all_recall_splink
FROM (SELECT * FROM judged WHERE same_person) j
CROSS JOIN LATERAL unnest(CASE WHEN j.tags = '{}' THEN ARRAY['clean'] ELSE j.tags END) tag
GROUP BY tag ORDER BY tag;
