//! Households: persons sharing an address, a landline or a mailbox, with stable ids.

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::super::spi::{
    drop_temp_tables, fetch_all, set_back, spi_failed, swap_batch_work_mem, update_kept, Args,
};
use super::{count, with_fresh_ids};
use crate::cluster::group_by_shared_keys;
use crate::cluster::ids::{IdPlan, PackedId, PreviousId};

/// The fields of a person that make persons one household.
pub(super) struct HouseholdFields<'a> {
    pub postcode: Option<&'a str>,
    pub street: Option<&'a str>,
    pub house_number: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// What makes persons one household: the address (postcode, street, house number), the
/// landline, the mailbox. The one definition: `unify._household_keys` is this function, and
/// the SQL that asks whether a person's household may have changed compares its result.
pub(super) fn household_keys(f: HouseholdFields<'_>) -> Vec<String> {
    let mut keys = Vec::new();
    if let (Some(postcode), Some(street)) = (f.postcode, f.street) {
        keys.push(format!(
            "a:{postcode}|{street}|{}",
            f.house_number.unwrap_or_default()
        ));
    }
    if let Some(phone) = f.phone {
        keys.push(format!("p:{phone}"));
    }
    if let Some(email) = f.email {
        keys.push(format!("e:{email}"));
    }
    keys
}

/// A person's household keys (see `household_keys`): equal keys, equal households.
#[pg_extern(immutable, parallel_safe)]
fn _household_keys(
    postcode: Option<&str>,
    street: Option<&str>,
    house_number: Option<&str>,
    phone: Option<&str>,
    email: Option<&str>,
) -> Vec<String> {
    household_keys(HouseholdFields {
        postcode,
        street,
        house_number,
        phone,
        email,
    })
}

/// The household of each person (None: shares nothing with anyone), from their keys and the
/// households they had (`previous`): stable ids, new ones from the sequence.
pub(super) fn plan_households(
    client: &mut SpiClient<'_>,
    keys: &[Vec<String>],
    previous: &[Option<i64>],
) -> Vec<Option<i64>> {
    plan_household_ids(client, &group_by_shared_keys(keys), previous)
        .into_iter()
        .map(PackedId::get)
        .collect()
}

/// The household of each person from their groups (None: no keys) and the households they had
/// (`previous`): stable ids, new ones from the sequence drawn a fetch at a time. Held at once
/// (`golden::HELD_HOUSEHOLD_BYTES`): per person with keys their group and household before (4 +
/// 8), per group the plan's ids (8 + 8 + 8), per person who had a household the plan's entry
/// and its sum per household (16 + 24); out 8 bytes a person.
pub(super) fn plan_household_ids(
    client: &mut SpiClient<'_>,
    groups: &[Option<u32>],
    previous: &[impl PreviousId],
) -> Vec<PackedId> {
    assert_eq!(
        groups.len(),
        previous.len(),
        "one household before per person"
    );
    // Stable ids over the persons that have a household.
    let grouped = groups.iter().flatten().count();
    let (mut cluster_of, mut before) = (Vec::with_capacity(grouped), Vec::with_capacity(grouped));
    for (g, p) in groups.iter().zip(previous) {
        if let Some(g) = g {
            cluster_of.push(*g);
            before.push(PackedId::new(p.id()));
        }
    }
    let n_groups = cluster_of.iter().max().map_or(0, |m| m + 1);
    let plan = IdPlan::new(&cluster_of, n_groups, &before);
    drop((cluster_of, before));
    let household_of_group = with_fresh_ids(
        client,
        "unify.household_id_seq",
        plan.new_ids_needed(),
        "resolve",
        |next| plan.ids_drawn(next),
    );
    drop(plan);
    groups
        .iter()
        .map(|g| PackedId::new(g.map(|g| household_of_group[g as usize])))
        .collect()
}

/// The household keys of the persons being grouped in SQL (`plan_in_sql`): (person, key).
pub(super) const KEYS: &str = "pg_temp.unify_household_keys";
/// Each person's component: the smallest person id it is connected to through shared keys.
const LABELS: &str = "pg_temp.unify_household_labels";
/// New household ids, one per component without an id it keeps.
const FRESH: &str = "pg_temp.unify_household_fresh";
/// The result of `plan_in_sql`: (person, household) of every person with keys.
pub(super) const PLAN: &str = "pg_temp.unify_household_plan";

const F: &str = "resolve";

fn run(client: &mut SpiClient<'_>, statement: &str) -> usize {
    client
        .update(statement, None, &[])
        .map(|t| t.len())
        .unwrap_or_else(|e| spi_failed(e, F))
}

/// Starts a grouping in SQL: an empty KEYS table for the caller to fill.
pub(super) fn create_keys_table(client: &mut SpiClient<'_>) {
    drop_temp_tables(client, &[KEYS, LABELS, FRESH, PLAN], F);
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {KEYS} (person bigint NOT NULL, key text COLLATE \"C\" NOT NULL)"
        ),
    );
}

/// `plan_households` over the persons in KEYS with PostgreSQL doing most of the work, so that
/// memory stays flat however many persons there are (its sorts and hashes spill to disk within
/// work_mem; the keys are never held). `previous` is a query of (person, household): each
/// person's household before. Leaves PLAN (person, household) for every person with keys, the
/// same ids `plan_households` gives: components by shared keys (labelled with their smallest
/// person id: by a union-find of 12 bytes a person while half the budget holds them, else by
/// passing the smallest label over shared keys until none changes), each previous household
/// kept by the component holding most of its persons (the first component on a tie), a
/// component keeping the smallest of the ids it holds, new ids from the sequence for the
/// others in component order.
pub(super) fn plan_in_sql(client: &mut SpiClient<'_>, previous: &str) {
    // PostgreSQL's sorts and hashes here within the budget too, as the clustering's
    // (cluster::in_batches): an eighth of it each, set back at the end.
    let work_mem = swap_batch_work_mem(client, "resolve");
    run(client, &format!("ANALYZE {KEYS}"));
    // Each person's label, the smallest person of its component: by a union-find in Rust over
    // the persons with keys (12 bytes each), each linked to the one before it with the same
    // key; past half the budget by passing labels over shared keys in SQL.
    run(
        client,
        &format!("CREATE TEMP TABLE {LABELS} (person bigint NOT NULL, label bigint NOT NULL)"),
    );
    let rows = count(client, &format!("SELECT count(*) FROM {KEYS}"));
    let by_union_find = super::label_components(
        client,
        &format!("SELECT person FROM {KEYS} GROUP BY person ORDER BY person"),
        rows,
        &format!(
            "SELECT person, before FROM (
                 SELECT person, lag(person) OVER (PARTITION BY key) AS before FROM {KEYS}) s
             WHERE before IS NOT NULL"
        ),
        LABELS,
        F,
    );
    if !by_union_find {
        run(
            client,
            &format!(
                "INSERT INTO {LABELS}
                 SELECT k.person, min(f.first)
                 FROM {KEYS} k JOIN (SELECT key, min(person) AS first FROM {KEYS} GROUP BY key) f ON f.key = k.key
                 GROUP BY k.person"
            ),
        );
    }
    run(client, &format!("ANALYZE {LABELS}"));
    if !by_union_find {
        // A chain of persons (A shares an address with B, B a phone with C) takes a pass a link.
        loop {
            crate::interrupt::check();
            let changed = count(
                client,
                &format!(
                    "WITH up AS (
                       UPDATE {LABELS} l SET label = x.label FROM (
                         SELECT k.person, min(m.label) AS label
                         FROM {KEYS} k JOIN (SELECT k2.key, min(l2.label) AS label
                                             FROM {KEYS} k2 JOIN {LABELS} l2 ON l2.person = k2.person
                                             GROUP BY k2.key) m ON m.key = k.key
                         GROUP BY k.person) x
                       WHERE x.person = l.person AND x.label < l.label
                       RETURNING 1)
                     SELECT count(*) FROM up"
                ),
            );
            if changed == 0 {
                break;
            }
        }
    }
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {PLAN} AS
             WITH counts AS (
                SELECT b.household, l.label, count(*) AS n
                FROM {LABELS} l JOIN ({previous}) b (person, household) ON b.person = l.person
                WHERE b.household IS NOT NULL GROUP BY b.household, l.label),
             owner AS (SELECT DISTINCT ON (household) household, label FROM counts ORDER BY household, n DESC, label),
             kept AS (SELECT label, min(household) AS household FROM owner GROUP BY label)
             SELECT l.person, l.label, k.household FROM {LABELS} l LEFT JOIN kept k ON k.label = l.label"
        ),
    );
    // One row at a time in component order: the ids come from the sequence in that order.
    run(
        client,
        &format!(
            "CREATE TEMP TABLE {FRESH} AS
             SELECT x.label, nextval('unify.household_id_seq') AS household
             FROM (SELECT DISTINCT label FROM {PLAN} WHERE household IS NULL ORDER BY label OFFSET 0) x"
        ),
    );
    run(
        client,
        &format!(
            "UPDATE {PLAN} p SET household = f.household FROM {FRESH} f
             WHERE p.label = f.label AND p.household IS NULL"
        ),
    );
    run(client, &format!("DROP TABLE {KEYS}, {LABELS}, {FRESH}"));
    run(client, &format!("ANALYZE {PLAN}"));
    set_back(client, "work_mem", &work_mem, "resolve");
}

/// Every person's household anew (`_group_households(NULL)`), grouped in SQL: memory stays
/// flat. The persons whose household changes are written with updated_at, as a resolve writes
/// a changed golden row. Returns how many.
fn group_all(client: &mut SpiClient<'_>) -> i64 {
    create_keys_table(client);
    run(
        client,
        &format!(
            "INSERT INTO {KEYS}
             SELECT p.person_id, k.key FROM unify.persons p
             CROSS JOIN LATERAL unnest(unify._household_keys(p.postcode, p.street, p.house_number, p.phone, p.email)) k (key)"
        ),
    );
    plan_in_sql(
        client,
        "SELECT person_id, household_id FROM unify.persons WHERE household_id IS NOT NULL",
    );
    let changed = count(
        client,
        &format!(
            "WITH up AS (
               UPDATE unify.persons p SET household_id = x.household, updated_at = now()
               FROM (SELECT q.person_id, pl.household FROM unify.persons q
                     LEFT JOIN {PLAN} pl ON pl.person = q.person_id
                     WHERE q.household_id IS DISTINCT FROM pl.household) x
               WHERE p.person_id = x.person_id
               RETURNING 1)
             SELECT count(*) FROM up"
        ),
    ) as i64;
    run(client, &format!("DROP TABLE {PLAN}"));
    changed
}

/// Groups persons into households (shared address, landline or mailbox) with stable ids: all
/// persons (NULL: grouped in SQL, see `group_all`), or those of `person_ids` with everyone
/// sharing a key or a household with them. Returns how many persons changed household.
#[pg_extern(volatile)]
fn _group_households(person_ids: Option<Vec<i64>>) -> i64 {
    if person_ids.as_ref().is_some_and(Vec::is_empty) {
        return 0;
    }
    let Some(ids) = person_ids else {
        return Spi::connect_mut(group_all);
    };
    Spi::connect_mut(|client| {
        let columns =
            "p.person_id, p.household_id, p.postcode, p.street, p.house_number, p.phone, p.email";
        let (query, args): (String, Args) = (
                format!(
                    // One indexed join per shared key (an OR across them would read every person;
                    // a join of the members would read all persons once they are a few thousand).
                    "WITH scope AS (SELECT * FROM unify.persons WHERE person_id = ANY ($1)),
                     near AS (
                        SELECT p.person_id, p.household_id FROM scope s JOIN unify.persons p ON p.household_id = s.household_id
                        UNION SELECT p.person_id, p.household_id FROM scope s JOIN unify.persons p
                          ON p.postcode = s.postcode AND p.street = s.street AND p.house_number = s.house_number
                        UNION SELECT p.person_id, p.household_id FROM scope s JOIN unify.persons p
                          ON p.postcode = s.postcode AND p.street = s.street
                         AND s.house_number IS NULL AND p.house_number IS NULL
                        UNION SELECT p.person_id, p.household_id FROM scope s JOIN unify.persons p ON p.phone = s.phone
                        UNION SELECT p.person_id, p.household_id FROM scope s JOIN unify.persons p ON p.email = s.email
                        UNION SELECT s.person_id, s.household_id FROM scope s),
                     members AS (
                        SELECT n.person_id FROM near n
                        UNION SELECT p.person_id FROM unify.persons p
                          WHERE p.household_id IN (SELECT n.household_id FROM near n WHERE n.household_id IS NOT NULL))
                     SELECT {columns} FROM unify.persons p
                     WHERE p.person_id = ANY (ARRAY(SELECT m.person_id FROM members m))
                     ORDER BY p.person_id"
                ),
                vec![ids.into()],
            );
        let rows: Vec<(i64, Option<i64>, Vec<String>)> = fetch_all(client, &query, args, F, |r| {
            let text = |i: usize| r.get::<String>(i).ok().flatten();
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<i64>(2).ok().flatten(),
                household_keys(HouseholdFields {
                    postcode: text(3).as_deref(),
                    street: text(4).as_deref(),
                    house_number: text(5).as_deref(),
                    phone: text(6).as_deref(),
                    email: text(7).as_deref(),
                }),
            )
        });
        let keys: Vec<Vec<String>> = rows.iter().map(|r| r.2.clone()).collect();
        let previous: Vec<Option<i64>> = rows.iter().map(|r| r.1).collect();
        let households = plan_households(client, &keys, &previous);
        let (mut person, mut household) = (Vec::new(), Vec::new());
        for (row, new) in rows.iter().zip(households) {
            if new != row.1 {
                person.push(row.0);
                household.push(new);
            }
        }
        // With updated_at, as a resolve writes a person whose household changed.
        if !person.is_empty() {
            update_kept(
                client,
                "UPDATE unify.persons p SET household_id = u.household, updated_at = now()
                   FROM unnest($1::bigint[], $2::bigint[]) AS u (person_id, household)
                  WHERE p.person_id = u.person_id",
                &vec![person.clone().into(), household.into()],
            )
            .unwrap_or_else(|e| spi_failed(e, F));
        }
        person.len() as i64
    })
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::super::tests::bigint;
    use super::{create_keys_table, plan_households, plan_in_sql, KEYS, PLAN};

    /// Grouping in SQL (a streamed run, `_group_households(NULL)`) gives every person the
    /// household that grouping all of them in memory gives: the same components over chains and
    /// stars of shared keys, the same kept ids where previous households split or merge, the
    /// same new ids in the same order.
    #[pg_test]
    fn grouping_in_sql_equals_grouping_in_memory() {
        let n = 120usize;
        let keys: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let mut k = Vec::new();
                if i % 5 != 4 {
                    k.push(format!("a:{}", i / 3));
                }
                if i % 7 == 0 {
                    k.push(format!("p:{}", i % 4));
                }
                if i % 11 == 3 {
                    k.push(format!("e:{}", (i + 6) / 9));
                }
                k
            })
            .collect();
        // Households before: some split now, some merge, some persons had none.
        let previous: Vec<Option<i64>> = (0..n)
            .map(|i| (i % 6 != 5).then_some(1000 + (i / 4) as i64))
            .collect();
        let (in_memory, in_sql) = Spi::connect_mut(|client| {
            let start = bigint(client, "SELECT nextval('unify.household_id_seq')");
            let restart = |client: &mut pgrx::spi::SpiClient<'_>| {
                client
                    .update(
                        "SELECT setval('unify.household_id_seq', $1)",
                        None,
                        &[start.into()],
                    )
                    .unwrap();
            };
            restart(client);
            let in_memory = plan_households(client, &keys, &previous);
            restart(client);
            create_keys_table(client);
            let (person, key): (Vec<i64>, Vec<String>) = keys
                .iter()
                .enumerate()
                .flat_map(|(i, k)| k.iter().map(move |k| (i as i64 + 1, k.clone())))
                .unzip();
            client
                .update(
                    &format!("INSERT INTO {KEYS} SELECT * FROM unnest($1::bigint[], $2::text[])"),
                    None,
                    &[person.into(), key.into()],
                )
                .unwrap();
            let before: Vec<Option<i64>> = previous.clone();
            let ids: Vec<i64> = (1..=n as i64).collect();
            client
                .update(
                    "CREATE TEMP TABLE test_households_before AS
                     SELECT * FROM unnest($1::bigint[], $2::bigint[]) b (person, household)",
                    None,
                    &[ids.into(), before.into()],
                )
                .unwrap();
            plan_in_sql(
                client,
                "SELECT person, household FROM test_households_before",
            );
            let planned: std::collections::HashMap<i64, i64> = client
                .select(&format!("SELECT person, household FROM {PLAN}"), None, &[])
                .unwrap()
                .map(|r| {
                    (
                        r.get::<i64>(1).unwrap().unwrap(),
                        r.get::<i64>(2).unwrap().unwrap(),
                    )
                })
                .collect();
            let in_sql: Vec<Option<i64>> =
                (1..=n as i64).map(|p| planned.get(&p).copied()).collect();
            (in_memory, in_sql)
        });
        assert_eq!(in_memory, in_sql);
        // The fixture exercises what it should: kept ids, new ids and persons without keys.
        assert!(in_memory.iter().any(|h| h.is_some_and(|h| h >= 1000)));
        assert!(in_memory.iter().any(|h| h.is_some_and(|h| h < 1000)));
        assert!(in_memory.iter().any(Option::is_none));
    }

    #[pg_test]
    fn household_keys_through_sql() {
        let keys = Spi::get_one::<Vec<String>>(
            "SELECT unify._household_keys('10115', 'hauptstr', NULL, '+49301234', 'fam@example.de')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            keys,
            ["a:10115|hauptstr|", "p:+49301234", "e:fam@example.de"]
        );
        // No street: no address key; nothing at all: no keys.
        let keys = Spi::get_one::<Vec<String>>(
            "SELECT unify._household_keys('10115', NULL, '5', NULL, NULL)",
        )
        .unwrap()
        .unwrap();
        assert!(keys.is_empty());
    }
}
