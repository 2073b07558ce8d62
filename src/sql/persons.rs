//! The SQL layer over `crate::cluster`: reads records, pairs and overrides through SPI, clusters
//! and picks golden values in Rust, and writes back with a few set-based statements.

use std::collections::{BTreeSet, HashMap, HashSet};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::JsonB;
use serde_json::{json, Value};

use super::spi::{
    drop_indexes, fetch_all, rebuild_indexes, select_kept, spi_failed, update_kept, Args,
};
use crate::cluster::components::{cluster, MatchPair};
use crate::cluster::group_by_shared_keys;
use crate::cluster::ids::{IdEvent, IdPlan};
use crate::cluster::survivorship::{strictest_consent, survive, Candidate, ConsentCandidate, Rule};

fn fresh_ids(
    client: &mut SpiClient<'_>,
    sequence: &str,
    n: usize,
    function: &'static str,
) -> Vec<i64> {
    if n == 0 {
        return Vec::new();
    }
    // Kept plans (see spi::select_kept): these few texts run in every queue batch.
    select_kept(
        client,
        &format!("SELECT array_agg(nextval('{sequence}')) FROM generate_series(1, $1)"),
        &vec![(n as i64).into()],
    )
    .and_then(|t| t.first().get_one::<Vec<i64>>())
    .unwrap_or_else(|e| spi_failed(e, function))
    .unwrap_or_default()
}

/// One statement for many rows: `unify.<table>.<column> = values[i]` where `<key> = keys[i]`.
fn set_ids(
    client: &mut SpiClient<'_>,
    table: &str,
    key: &str,
    column: &str,
    keys: &[i64],
    values: Vec<Option<i64>>,
) {
    if keys.is_empty() {
        return;
    }
    update_kept(
        client,
        &format!(
            "UPDATE unify.{table} t SET {column} = u.value
               FROM unnest($1::bigint[], $2::bigint[]) AS u (key, value)
              WHERE t.{key} = u.key"
        ),
        &vec![keys.to_vec().into(), values.into()],
    )
    .unwrap_or_else(|e| spi_failed(e, "resolve"));
}

/// Clusters the records in scope (all, or those of `person_ids` plus `record_ids`) over their
/// match pairs and overrides, gives the clusters stable person ids, updates
/// `unify.records.person_id` and writes merges and splits to `unify.identity_events`.
#[pg_extern(volatile)]
fn _cluster(
    person_ids: Option<Vec<i64>>,
    record_ids: Option<Vec<i64>>,
    rule: &str,
    reason: Option<&str>,
) -> JsonB {
    const F: &str = "resolve";
    let full = person_ids.is_none() && record_ids.is_none();
    Spi::connect_mut(|client| {
        let (records_query, args): (&str, Args) = if full {
            (
                "SELECT record_id, person_id FROM unify.records ORDER BY record_id",
                vec![],
            )
        } else {
            (
                "SELECT record_id, person_id FROM unify.records
                  WHERE person_id = ANY ($1) OR record_id = ANY ($2) ORDER BY record_id",
                vec![
                    person_ids.clone().unwrap_or_default().into(),
                    record_ids.clone().unwrap_or_default().into(),
                ],
            )
        };
        let rows: Vec<(i64, Option<i64>)> = fetch_all(client, records_query, args, F, |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<i64>(2).ok().flatten(),
            )
        });
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let previous: Vec<Option<i64>> = rows.iter().map(|r| r.1).collect();
        // Pairs and overrides are found by their first record and kept when the second is in
        // scope too, tested here: as a filter in a kept (generic) plan, `b = ANY ($1)` scans
        // the whole array for every row (93 ms against 27 ms for 3,000 records).
        let scope_filter = if full { "" } else { "AND a = ANY ($1)" };
        let in_scope: HashSet<i64> = if full {
            HashSet::new()
        } else {
            ids.iter().copied().collect()
        };
        let both_in_scope =
            |a: i64, b: i64| full || (in_scope.contains(&a) && in_scope.contains(&b));
        let scope_args = || -> Args {
            if full {
                vec![]
            } else {
                vec![ids.clone().into()]
            }
        };
        let matches: Vec<MatchPair> = fetch_all(
            client,
            &format!(
                "SELECT a, b, w FROM (SELECT record_a AS a, record_b AS b, match_weight AS w
                   FROM unify.pairs WHERE is_match) p WHERE true {scope_filter}"
            ),
            scope_args(),
            F,
            |r| MatchPair {
                a: r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                b: r.get::<i64>(2).ok().flatten().unwrap_or_default(),
                weight: r.get::<f64>(3).ok().flatten().unwrap_or_default(),
            },
        )
        .into_iter()
        .filter(|p| both_in_scope(p.a, p.b))
        .collect();
        let overrides: Vec<(i64, i64, bool)> = fetch_all(
            client,
            &format!(
                "SELECT a, b, must FROM (
                   SELECT ra.record_id AS a, rb.record_id AS b, o.kind = 'must_link' AS must
                   FROM unify.overrides o
                   JOIN unify.records ra ON ra.source_id = o.source_a AND ra.source_key = o.key_a
                   JOIN unify.records rb ON rb.source_id = o.source_b AND rb.source_key = o.key_b) o
                 WHERE true {scope_filter}"
            ),
            scope_args(),
            F,
            |r| {
                (
                    r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                    r.get::<i64>(2).ok().flatten().unwrap_or_default(),
                    r.get::<bool>(3).ok().flatten().unwrap_or_default(),
                )
            },
        )
        .into_iter()
        .filter(|o| both_in_scope(o.0, o.1))
        .collect();
        let must: Vec<(i64, i64)> = overrides
            .iter()
            .filter(|o| o.2)
            .map(|o| (o.0, o.1))
            .collect();
        let cannot: Vec<(i64, i64)> = overrides
            .iter()
            .filter(|o| !o.2)
            .map(|o| (o.0, o.1))
            .collect();

        let clustering = cluster(&ids, &must, &cannot, &matches);
        let plan = IdPlan::new(&clustering.cluster_of, clustering.clusters, &previous);
        let fresh = fresh_ids(client, "unify.person_id_seq", plan.new_ids_needed(), F);
        let person_of_cluster = plan.ids(&fresh);
        let events = plan.events(&person_of_cluster);

        let (mut changed_records, mut changed_persons) = (Vec::new(), Vec::new());
        let mut touched: BTreeSet<i64> = previous.iter().flatten().copied().collect();
        for (i, &c) in clustering.cluster_of.iter().enumerate() {
            let person = person_of_cluster[c as usize];
            if previous[i] != Some(person) {
                changed_records.push(ids[i]);
                changed_persons.push(person);
                touched.insert(person);
            }
        }
        // A first resolve gives every record its person: rewriting most of the table goes
        // faster without its secondary indexes (see unify._drop_indexes).
        let rebuild = if full && changed_records.len() * 2 > ids.len() {
            drop_indexes(client, "unify.records", false, F)
        } else {
            Vec::new()
        };
        set_ids(
            client,
            "records",
            "record_id",
            "person_id",
            &changed_records,
            changed_persons.into_iter().map(Some).collect(),
        );
        rebuild_indexes(client, rebuild, F);
        let (mut merges, mut splits) = (0u64, 0u64);
        let event_rows: Vec<Value> = events
            .iter()
            .map(|e| match e {
                IdEvent::Merge {
                    person_id,
                    absorbed,
                } => {
                    merges += 1;
                    json!({"event": "merge", "person_id": person_id, "related": absorbed})
                }
                IdEvent::Split { person_id, into } => {
                    splits += 1;
                    json!({"event": "split", "person_id": person_id, "related": into})
                }
            })
            .collect();
        if !event_rows.is_empty() {
            update_kept(
                client,
                "INSERT INTO unify.identity_events (event, person_id, related_ids, rule, reason)
                 SELECT e ->> 'event', (e ->> 'person_id')::bigint,
                        ARRAY(SELECT jsonb_array_elements_text(e -> 'related')::bigint), $2, $3
                 FROM jsonb_array_elements($1) AS e",
                &vec![
                    JsonB(Value::Array(event_rows)).into(),
                    rule.into(),
                    reason.into(),
                ],
            )
            .unwrap_or_else(|e| spi_failed(e, F));
        }
        let mut summary = json!({
            "records": ids.len(),
            "persons": clustering.clusters,
            "new_persons": fresh.len(),
            "merges": merges,
            "splits": splits,
            "held_apart": clustering.held_apart,
            "contradictions": clustering.contradictions,
            "changed_records": changed_records.len(),
        });
        if !full {
            summary["touched"] = json!(touched.into_iter().collect::<Vec<_>>());
        }
        JsonB(summary)
    })
}

const GOLDEN_FIELDS: [&str; 9] = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "mobile",
    "address",
    "birth_date",
    "company",
    "customer_number",
];

/// One record as survivorship sees it.
struct GoldenInput {
    person_id: i64,
    record_id: i64,
    source_id: i32,
    source: String,
    /// first_name, last_name, email, phone, mobile, address (joined), birth_date, company,
    /// customer_number: the order of GOLDEN_FIELDS.
    values: [Option<String>; 9],
    address: [Option<String>; 5],
    consent: [Option<bool>; 3],
    updated: Option<i64>,
    seen: i64,
}

type GoldenRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<f64>,
    Option<bool>,
    Option<String>,
    Option<f64>,
    Option<bool>,
    Option<String>,
    Option<f64>,
    i32,
    Vec<String>,
    f64,
    f64,
    Option<i64>,
);

/// The golden record of each person in `person_ids` (NULL: every person with records). With
/// `with_households`, also every returned person's household, grouped over the returned rows
/// with stable ids (see `_group_households`): a full resolve writes the golden rows with their
/// households at once instead of updating every person a second time.
#[pg_extern(volatile)]
#[allow(clippy::type_complexity)]
fn _golden_records(
    person_ids: Option<Vec<i64>>,
    with_households: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(person_id, i64),
        name!(first_name, Option<String>),
        name!(last_name, Option<String>),
        name!(email, Option<String>),
        name!(phone, Option<String>),
        name!(mobile, Option<String>),
        name!(street, Option<String>),
        name!(house_number, Option<String>),
        name!(postcode, Option<String>),
        name!(city, Option<String>),
        name!(country, Option<String>),
        name!(birth_date, Option<String>),
        name!(company, Option<String>),
        name!(customer_number, Option<String>),
        name!(consent_email, Option<bool>),
        name!(consent_email_source, Option<String>),
        name!(consent_email_epoch, Option<f64>),
        name!(consent_phone, Option<bool>),
        name!(consent_phone_source, Option<String>),
        name!(consent_phone_epoch, Option<f64>),
        name!(consent_post, Option<bool>),
        name!(consent_post_source, Option<String>),
        name!(consent_post_epoch, Option<f64>),
        name!(record_count, i32),
        name!(sources, Vec<String>),
        name!(first_seen_epoch, f64),
        name!(last_seen_epoch, f64),
        name!(household_id, Option<i64>),
    ),
> {
    const F: &str = "resolve";
    let (rules, priorities, inputs) = Spi::connect(|client| {
        let rules: HashMap<String, (Rule, Vec<String>)> = fetch_all(
            client,
            "SELECT field, rule, options FROM unify.survivorship_rules",
            vec![],
            F,
            |r| {
                let field = r.get::<String>(1).ok().flatten().unwrap_or_default();
                let rule = r.get::<String>(2).ok().flatten().unwrap_or_default();
                let options = r
                    .get::<JsonB>(3)
                    .ok()
                    .flatten()
                    .map_or(Value::Null, |j| j.0);
                let order = options["order"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    field,
                    (Rule::parse(&rule).unwrap_or(Rule::MostRecent), order),
                )
            },
        )
        .into_iter()
        .collect();
        let priorities: HashMap<i32, i32> = fetch_all(
            client,
            "SELECT source_id, priority FROM unify.sources",
            vec![],
            F,
            |r| {
                (
                    r.get::<i32>(1).ok().flatten().unwrap_or_default(),
                    r.get::<i32>(2).ok().flatten().unwrap_or_default(),
                )
            },
        )
        .into_iter()
        .collect();
        let filter = if person_ids.is_some() {
            "r.person_id = ANY ($1)"
        } else {
            "r.person_id IS NOT NULL"
        };
        let args: Args = person_ids.map_or(vec![], |ids| vec![ids.into()]);
        let query = format!(
            "SELECT r.person_id, r.record_id, r.source_id, s.name, r.first_name, r.last_name, r.email,
                    r.phone, r.mobile, r.street, r.house_number, r.postcode, r.city, r.country,
                    to_char(r.birth_date, 'YYYY-MM-DD'), r.company, r.customer_number,
                    r.consent_email, r.consent_phone, r.consent_post,
                    (extract(epoch FROM r.source_updated_at) * 1000000)::bigint,
                    (extract(epoch FROM coalesce(r.source_updated_at, r.synced_at)) * 1000000)::bigint
             FROM unify.records r JOIN unify.sources s ON s.source_id = r.source_id
             WHERE {filter} ORDER BY r.person_id, r.record_id"
        );
        let inputs = fetch_all(client, &query, args, F, |r| {
            let text = |i: usize| r.get::<String>(i).ok().flatten();
            let address = [text(10), text(11), text(12), text(13), text(14)];
            let joined = address.iter().any(Option::is_some).then(|| {
                address
                    .iter()
                    .map(|a| a.as_deref().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("|")
            });
            GoldenInput {
                person_id: r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                record_id: r.get::<i64>(2).ok().flatten().unwrap_or_default(),
                source_id: r.get::<i32>(3).ok().flatten().unwrap_or_default(),
                source: text(4).unwrap_or_default(),
                values: [
                    text(5),
                    text(6),
                    text(7),
                    text(8),
                    text(9),
                    joined,
                    text(15),
                    text(16),
                    text(17),
                ],
                address,
                consent: [18, 19, 20].map(|i| r.get::<bool>(i).ok().flatten()),
                updated: r.get::<i64>(21).ok().flatten(),
                seen: r.get::<i64>(22).ok().flatten().unwrap_or_default(),
            }
        });
        (rules, priorities, inputs)
    });

    let rule_of: Vec<(Rule, Vec<String>)> = GOLDEN_FIELDS
        .iter()
        .map(|f| rules.get(*f).cloned().unwrap_or((Rule::MostRecent, vec![])))
        .collect();
    let mut rows: Vec<GoldenRow> = Vec::new();
    for (n, person) in inputs
        .chunk_by(|a, b| a.person_id == b.person_id)
        .enumerate()
    {
        crate::interrupt::check_every(n, 1 << 12);
        let mut golden: [Option<String>; 9] = Default::default();
        for (f, (rule, order)) in rule_of.iter().enumerate() {
            let priority = |rec: &GoldenInput| {
                let base = priorities.get(&rec.source_id).copied().unwrap_or(100);
                match order.iter().position(|s| *s == rec.source) {
                    // Listed sources come before all others, in the listed order.
                    Some(p) => i32::MIN + p as i32,
                    None => base,
                }
            };
            let candidates: Vec<Candidate> = person
                .iter()
                .filter_map(|rec| {
                    rec.values[f].as_deref().map(|value| Candidate {
                        value,
                        priority: priority(rec),
                        updated: rec.updated,
                        record_id: rec.record_id,
                    })
                })
                .collect();
            golden[f] = survive(*rule, &candidates).map(String::from);
        }
        // The address survives as one unit: every part from the same record.
        let address: [Option<String>; 5] = golden[5]
            .as_deref()
            .and_then(|joined| {
                person
                    .iter()
                    .find(|r| r.values[5].as_deref() == Some(joined))
                    .map(|r| r.address.clone())
            })
            .unwrap_or_default();
        let consent: Vec<Option<ConsentCandidate>> = (0..3)
            .map(|k| {
                let c: Vec<ConsentCandidate> = person
                    .iter()
                    .filter_map(|rec| {
                        rec.consent[k].map(|granted| ConsentCandidate {
                            granted,
                            source_id: rec.source_id,
                            updated: rec.updated,
                            record_id: rec.record_id,
                        })
                    })
                    .collect();
                strictest_consent(&c)
            })
            .collect();
        let source_name = |c: &Option<ConsentCandidate>| {
            c.and_then(|c| person.iter().find(|r| r.record_id == c.record_id))
                .map(|r| r.source.clone())
        };
        let at = |c: &Option<ConsentCandidate>| c.and_then(|c| c.updated).map(|u| u as f64 / 1e6);
        let sources: Vec<String> = person
            .iter()
            .map(|r| r.source.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let first_seen = person.iter().map(|r| r.seen).min().unwrap_or_default() as f64 / 1e6;
        let last_seen = person.iter().map(|r| r.seen).max().unwrap_or_default() as f64 / 1e6;
        let [street, house_number, postcode, city, country] = address;
        let [first_name, last_name, email, phone, mobile, _, birth_date, company, customer_number] =
            golden;
        rows.push((
            person[0].person_id,
            first_name,
            last_name,
            email,
            phone,
            mobile,
            street,
            house_number,
            postcode,
            city,
            country,
            birth_date,
            company,
            customer_number,
            consent[0].map(|c| c.granted),
            source_name(&consent[0]),
            at(&consent[0]),
            consent[1].map(|c| c.granted),
            source_name(&consent[1]),
            at(&consent[1]),
            consent[2].map(|c| c.granted),
            source_name(&consent[2]),
            at(&consent[2]),
            person.len() as i32,
            sources,
            first_seen,
            last_seen,
            None,
        ));
    }
    if with_households {
        let keys: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                household_keys(
                    r.8.as_deref(),
                    r.6.as_deref(),
                    r.7.as_deref(),
                    r.4.as_deref(),
                    r.3.as_deref(),
                )
            })
            .collect();
        let households = Spi::connect_mut(|client| {
            let before: HashMap<i64, i64> = fetch_all(
                client,
                "SELECT person_id, household_id FROM unify.persons WHERE household_id IS NOT NULL",
                vec![],
                F,
                |r| {
                    (
                        r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                        r.get::<i64>(2).ok().flatten().unwrap_or_default(),
                    )
                },
            )
            .into_iter()
            .collect();
            let previous: Vec<Option<i64>> =
                rows.iter().map(|r| before.get(&r.0).copied()).collect();
            plan_households(client, &keys, &previous)
        });
        for (row, household) in rows.iter_mut().zip(households) {
            row.27 = household;
        }
    }
    TableIterator::new(rows)
}

/// What makes persons one household: the address (postcode, street, house number), the
/// landline, the mailbox.
fn household_keys(
    postcode: Option<&str>,
    street: Option<&str>,
    house_number: Option<&str>,
    phone: Option<&str>,
    email: Option<&str>,
) -> Vec<String> {
    let mut keys = Vec::new();
    if let (Some(postcode), Some(street)) = (postcode, street) {
        keys.push(format!(
            "a:{postcode}|{street}|{}",
            house_number.unwrap_or_default()
        ));
    }
    if let Some(phone) = phone {
        keys.push(format!("p:{phone}"));
    }
    if let Some(email) = email {
        keys.push(format!("e:{email}"));
    }
    keys
}

/// The household of each person (None: shares nothing with anyone), from their keys and the
/// households they had (`previous`): stable ids, new ones from the sequence.
fn plan_households(
    client: &mut SpiClient<'_>,
    keys: &[Vec<String>],
    previous: &[Option<i64>],
) -> Vec<Option<i64>> {
    let groups = group_by_shared_keys(keys);
    // Stable ids over the persons that have a household.
    let grouped: Vec<usize> = (0..keys.len()).filter(|&i| groups[i].is_some()).collect();
    let cluster_of: Vec<u32> = grouped.iter().map(|&i| groups[i].unwrap()).collect();
    let before: Vec<Option<i64>> = grouped.iter().map(|&i| previous[i]).collect();
    let n_groups = cluster_of.iter().max().map_or(0, |m| m + 1);
    let plan = IdPlan::new(&cluster_of, n_groups, &before);
    let fresh = fresh_ids(
        client,
        "unify.household_id_seq",
        plan.new_ids_needed(),
        "resolve",
    );
    let household_of_group = plan.ids(&fresh);
    groups
        .iter()
        .map(|g| g.map(|g| household_of_group[g as usize]))
        .collect()
}

/// Groups persons into households (shared address, landline or mailbox) with stable ids: all
/// persons, or those of `person_ids` with everyone sharing a key or a household with them.
/// Returns how many persons changed household.
#[pg_extern(volatile)]
fn _group_households(person_ids: Option<Vec<i64>>) -> i64 {
    const F: &str = "resolve";
    if person_ids.as_ref().is_some_and(Vec::is_empty) {
        return 0;
    }
    Spi::connect_mut(|client| {
        let columns =
            "p.person_id, p.household_id, p.postcode, p.street, p.house_number, p.phone, p.email";
        let (query, args): (String, Args) = match &person_ids {
            None => (format!("SELECT {columns} FROM unify.persons p ORDER BY p.person_id"), vec![]),
            Some(ids) => (
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
                vec![ids.clone().into()],
            ),
        };
        let rows: Vec<(i64, Option<i64>, Vec<String>)> = fetch_all(client, &query, args, F, |r| {
            let text = |i: usize| r.get::<String>(i).ok().flatten();
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<i64>(2).ok().flatten(),
                household_keys(
                    text(3).as_deref(),
                    text(4).as_deref(),
                    text(5).as_deref(),
                    text(6).as_deref(),
                    text(7).as_deref(),
                ),
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
        set_ids(
            client,
            "persons",
            "person_id",
            "household_id",
            &person,
            household,
        );
        person.len() as i64
    })
}
