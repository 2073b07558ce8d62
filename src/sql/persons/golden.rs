//! Golden records: per person the surviving value of every field with its display form (from
//! the surviving record's own written value), the consent of the latest proven statement per
//! channel, and (for a full resolve) the households of the rows returned.

use std::collections::{BTreeSet, HashMap};

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use super::super::spi::{fetch_all, Args};
use super::households::{household_keys, plan_households, HouseholdFields};
use crate::cluster::survivorship::{latest_consent, survivor, Candidate, ConsentCandidate, Rule};
use crate::normalize::{address, display, name, phone};

const GOLDEN_FIELDS: [&str; 11] = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "mobile",
    "address",
    "birth_date",
    "company",
    "customer_number",
    "salutation",
    "title",
];

/// The display values `_golden_records` returns in its `display` array, in this order (more
/// named columns than pgrx's 32 do not fit; `unify._refresh_persons` reads them by position and
/// names them once, in this order).
pub const DISPLAY_FIELDS: [&str; 7] = [
    "first_name",
    "last_name",
    "street",
    "city",
    "phone",
    "mobile",
    "email",
];

/// A record's values as written (its `raw`), for display forms.
#[derive(Default)]
struct Written {
    first_name: Option<String>,
    last_name: Option<String>,
    full_name: Option<String>,
    /// The street line as the record's street key was made from it.
    street_line: Option<String>,
    city: Option<String>,
}

impl Written {
    /// First and last name as written, tidied, as the record's keys were made: the first-name
    /// field when it holds a name, else the full name split.
    fn names(&self) -> (Option<String>, Option<String>) {
        let field = |v: &Option<String>| {
            v.as_deref()
                .filter(|v| name::normalize_name(v).is_some())
                .and_then(display::display_name)
        };
        let split = || {
            self.full_name
                .as_deref()
                .map_or((None, None), display::split_display_name)
        };
        let first = field(&self.first_name).or_else(|| split().0);
        let last = field(&self.last_name).or_else(|| split().1);
        (first, last)
    }
}

/// One record as survivorship sees it.
struct GoldenInput {
    person_id: i64,
    record_id: i64,
    source_id: i32,
    source: String,
    /// first_name, last_name, email, phone, mobile, address (joined), birth_date, company,
    /// customer_number, salutation, title: the order of GOLDEN_FIELDS.
    values: [Option<String>; 11],
    address: [Option<String>; 5],
    written: Written,
    consent: [Option<bool>; 3],
    /// When each consent statement was made (microseconds), where the mapping says.
    stated: [Option<i64>; 3],
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
    salutation: Option<String>,
    title: Option<String>,
    /// DISPLAY_FIELDS' values.
    display: Vec<Option<String>>,
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
    Option<String>,
    Option<String>,
    Vec<Option<String>>,
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
            salutation,
            title,
            display,
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
            salutation,
            title,
            display,
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
        name!(salutation, Option<String>),
        name!(title, Option<String>),
        name!(display, Vec<Option<String>>),
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
                    (extract(epoch FROM coalesce(r.source_updated_at, r.synced_at)) * 1000000)::bigint,
                    r.salutation, r.title,
                    (extract(epoch FROM r.consent_email_at) * 1000000)::bigint,
                    (extract(epoch FROM r.consent_phone_at) * 1000000)::bigint,
                    (extract(epoch FROM r.consent_post_at) * 1000000)::bigint,
                    r.raw ->> 'first_name', r.raw ->> 'last_name', r.raw ->> 'full_name',
                    coalesce(r.raw ->> 'street_line', (r.raw ->> 'street') || coalesce(' ' || (r.raw ->> 'house_number'), '')),
                    r.raw ->> 'city'
             FROM unify.records r JOIN unify.sources s ON s.source_id = r.source_id
             WHERE {filter} ORDER BY r.person_id, r.record_id"
        );
        let inputs = fetch_all(client, &query, args, F, |r| {
            let text = |i: usize| r.get::<String>(i).ok().flatten();
            let micros = |i: usize| r.get::<i64>(i).ok().flatten();
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
                    text(23),
                    text(24),
                ],
                address,
                written: Written {
                    first_name: text(28),
                    last_name: text(29),
                    full_name: text(30),
                    street_line: text(31),
                    city: text(32),
                },
                consent: [18, 19, 20].map(|i| r.get::<bool>(i).ok().flatten()),
                stated: [25, 26, 27].map(micros),
                updated: micros(21),
                seen: micros(22).unwrap_or_default(),
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
        let mut golden: [Option<String>; 11] = Default::default();
        // The record each field's value survived from (its written form gives the display).
        let mut from: [Option<&GoldenInput>; 11] = Default::default();
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
            if let Some(c) = survivor(*rule, &candidates) {
                golden[f] = Some(c.value.to_string());
                from[f] = person.iter().find(|r| r.record_id == c.record_id);
            }
        }
        // The address survives as one unit: every part from the same record.
        let address: [Option<String>; 5] = from[5].map(|r| r.address.clone()).unwrap_or_default();
        let display = display_values(&golden, &from, &address);
        debug_assert_eq!(display.len(), DISPLAY_FIELDS.len());
        let consent: Vec<Option<ConsentCandidate>> = (0..3)
            .map(|k| {
                let c: Vec<ConsentCandidate> = person
                    .iter()
                    .filter_map(|rec| {
                        rec.consent[k].map(|granted| ConsentCandidate {
                            granted,
                            source_id: rec.source_id,
                            stated: rec.stated[k],
                            updated: rec.updated,
                            record_id: rec.record_id,
                        })
                    })
                    .collect();
                latest_consent(&c)
            })
            .collect();
        let consent_of = |c: &Option<ConsentCandidate>| Consent {
            granted: c.map(|c| c.granted),
            source: c
                .and_then(|c| person.iter().find(|r| r.record_id == c.record_id))
                .map(|r| r.source.clone()),
            // The statement's own time: the proof (None for an undated statement).
            epoch: c.and_then(|c| c.stated).map(|u| u as f64 / 1e6),
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
        let [first_name, last_name, email, phone, mobile, _, birth_date, company, customer_number, salutation, title] =
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
            salutation,
            title,
            display,
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

/// The display values (DISPLAY_FIELDS) of a golden record: names, street and city from the
/// written values of the records they survived from, tidied; where a record's written value
/// gives none, the key in display case. Phones in national form where they belong to the
/// person's country (DE when unknown), else international; the e-mail with a Unicode domain.
fn display_values(
    golden: &[Option<String>; 11],
    from: &[Option<&GoldenInput>; 11],
    address: &[Option<String>; 5],
) -> Vec<Option<String>> {
    let names = |f: usize| from[f].map(|r| r.written.names()).unwrap_or_default();
    let first_name = names(0)
        .0
        .or_else(|| golden[0].as_deref().map(display::display_from_key));
    let last_name = names(1)
        .1
        .or_else(|| golden[1].as_deref().map(display::display_from_key));
    let written = from[5].map(|r| &r.written);
    let street = written
        .and_then(|w| w.street_line.as_deref())
        .and_then(address::split_street)
        .and_then(|parts| display::display_street(&parts.street));
    let city = written
        .and_then(|w| w.city.as_deref())
        .and_then(display::display_city)
        .or_else(|| address[3].as_deref().and_then(display::display_city));
    let home = address[4]
        .as_deref()
        .and_then(phone::parse_region)
        .or_else(|| phone::parse_region("DE"));
    let phone_display = |f: usize| {
        golden[f]
            .as_deref()
            .zip(home)
            .and_then(|(p, home)| phone::display_phone(p, home))
    };
    let email = golden[2].as_deref().and_then(display::display_email);
    vec![
        first_name,
        last_name,
        street,
        city,
        phone_display(3),
        phone_display(4),
        email,
    ]
}
