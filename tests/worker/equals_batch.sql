-- The persons the queue built against a batch run (score_pairs + resolve) over the same data:
-- source rows with another person | another household | another golden record | pairs with
-- another match decision. Leaves the batch result in place.
SET client_min_messages = warning;
CREATE TEMP VIEW partition AS
SELECT r.source_id, r.source_key,
       min(r.source_id::text || ':' || r.source_key) OVER (PARTITION BY rp.person_id) AS person_of,
       min(r.source_id::text || ':' || r.source_key) OVER (PARTITION BY p.household_id) AS household_of,
       (p.first_name, p.last_name, p.email, p.phone, p.street, p.postcode, p.birth_date, p.record_count,
        p.consent_email, p.sources)::text AS golden
FROM unify.records r JOIN unify.record_persons rp USING (record_id) JOIN unify.persons p ON p.person_id = rp.person_id;
BEGIN;
-- The worker waits for these locks; nothing changes between the two snapshots.
SELECT unify._lock('pairs'), unify._lock('persons');
LOCK unify.change_queue IN EXCLUSIVE MODE;
CREATE TEMP TABLE incremental AS SELECT * FROM partition;
CREATE TEMP TABLE incremental_pairs AS SELECT record_a, record_b, is_match FROM unify.pairs;
COMMIT;
SELECT count(*) FROM unify.score_pairs();
SELECT count(*) FROM unify.resolve();
CREATE TEMP TABLE batch AS SELECT * FROM partition;
SELECT count(*) FILTER (WHERE i.person_of IS DISTINCT FROM b.person_of),
       count(*) FILTER (WHERE i.household_of IS DISTINCT FROM b.household_of),
       count(*) FILTER (WHERE i.golden IS DISTINCT FROM b.golden),
       (SELECT count(*) FILTER (WHERE coalesce(x.is_match, false) <> coalesce(y.is_match, false))
        FROM incremental_pairs x FULL JOIN unify.pairs y USING (record_a, record_b))
FROM incremental i FULL JOIN batch b USING (source_id, source_key);
