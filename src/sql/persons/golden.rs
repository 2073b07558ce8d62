//! Golden records: per person the surviving value of every field, the strictest consent per
//! channel, and (for a full resolve) the households of the rows returned.

use std::collections::{BTreeSet, HashMap};

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use super::super::spi::{fetch_all, Args};
use super::households::{household_keys, plan_households, HouseholdFields};
use crate::cluster::survivorship::{strictest_consent, survive, Candidate, ConsentCandidate, Rule};

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

/// The survivor of one consent channel: granted or not, the deciding source and its time.
#[derive(Default)]
struct Consent {
    granted: Option<bool>,
    source: Option<String>,
    /// Seconds since the epoch.
    epoch: Option<f64>,
}

/// A person's golden record, as `_golden_records` returns it.
struct GoldenRow {
    person_id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
    street: Option<String>,
    house_number: Option<String>,
    postcode: Option<String>,
    city: Option<String>,
    country: Option<String>,
    birth_date: Option<String>,
    company: Option<String>,
    customer_number: Option<String>,
    consent_email: Consent,
    consent_phone: Consent,
    consent_post: Consent,
    record_count: i32,
    sources: Vec<String>,
    first_seen_epoch: f64,
    last_seen_epoch: f64,
    household_id: Option<i64>,
}

/// The columns of `_golden_records`, in its order.
type GoldenColumns = (
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

impl GoldenRow {
    /// The row as the function's columns: the one place their order is written.
    fn into_columns(self) -> GoldenColumns {
        let GoldenRow {
            person_id,
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
            consent_email: e,
            consent_phone: p,
            consent_post: m,
            record_count,
            sources,
            first_seen_epoch,
            last_seen_epoch,
            household_id,
        } = self;
        (
            person_id,
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
            e.granted,
            e.source,
            e.epoch,
            p.granted,
            p.source,
            p.epoch,
            m.granted,
            m.source,
            m.epoch,
            record_count,
            sources,
            first_seen_epoch,
            last_seen_epoch,
            household_id,
        )
    }

    /// The fields that make persons one household.
    fn household_fields(&self) -> HouseholdFields<'_> {
        HouseholdFields {
            postcode: self.postcode.as_deref(),
            street: self.street.as_deref(),
            house_number: self.house_number.as_deref(),
            phone: self.phone.as_deref(),
            email: self.email.as_deref(),
        }
    }
}

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
        let consent_of = |c: &Option<ConsentCandidate>| Consent {
            granted: c.map(|c| c.granted),
            source: c
                .and_then(|c| person.iter().find(|r| r.record_id == c.record_id))
                .map(|r| r.source.clone()),
            epoch: c.and_then(|c| c.updated).map(|u| u as f64 / 1e6),
        };
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
        rows.push(GoldenRow {
            person_id: person[0].person_id,
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
            consent_email: consent_of(&consent[0]),
            consent_phone: consent_of(&consent[1]),
            consent_post: consent_of(&consent[2]),
            record_count: person.len() as i32,
            sources,
            first_seen_epoch: first_seen,
            last_seen_epoch: last_seen,
            household_id: None,
        });
    }
    if with_households {
        let keys: Vec<Vec<String>> = rows
            .iter()
            .map(|r| household_keys(r.household_fields()))
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
            let previous: Vec<Option<i64>> = rows
                .iter()
                .map(|r| before.get(&r.person_id).copied())
                .collect();
            plan_households(client, &keys, &previous)
        });
        for (row, household) in rows.iter_mut().zip(households) {
            row.household_id = household;
        }
    }
    TableIterator::new(rows.into_iter().map(GoldenRow::into_columns))
}
