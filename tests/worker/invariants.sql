-- Records without a person | with a person that does not exist | persons without records |
-- changes still queued or between stages | records equal the source rows.
SELECT count(*) FILTER (WHERE r.person_id IS NULL),
       count(*) FILTER (WHERE r.person_id IS NOT NULL AND p.person_id IS NULL),
       (SELECT count(*) FROM unify.persons x WHERE NOT EXISTS (SELECT 1 FROM unify.record_persons y WHERE y.person_id = x.person_id)),
       (SELECT count(*) FROM unify.change_queue) + (SELECT count(*) FROM unify.queue_work),
       count(*) = (SELECT count(*) FROM crm.shop_customers) + (SELECT count(*) FROM crm.crm_contacts)
                + (SELECT count(*) FROM crm.pos_loyalty_members)
FROM unify.records LEFT JOIN unify.record_persons r USING (record_id) LEFT JOIN unify.persons p USING (person_id);
