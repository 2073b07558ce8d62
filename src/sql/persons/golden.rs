//! Golden records: per person the surviving value of every field with its display form (from
//! the surviving record's own written value), the consent of the latest proven statement per
//! channel, and (for a full resolve) the households of the rows returned.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use pgrx::spi::SpiClient;

use super::super::spi::{
    drop_temp_tables, fetch_all, fetch_all_deformed, insert_arrays, select_kept, set_back,
    spi_failed, swap_setting, update_with, Args, Cursor, Deformed,
};
use super::households::{
    create_keys_table, household_keys, plan_household_ids, plan_households, plan_in_sql,
    HouseholdFields, KEYS, PLAN,
};
use crate::cluster::components::Clusterer;
use crate::cluster::groups_with_keys;
use crate::cluster::ids::{PackedId, PreviousId};
use crate::cluster::survivorship::{latest_consent, survivor, Candidate, ConsentCandidate, Rule};
use crate::memo::Memo;
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

/// Display forms of written values, which repeat from person to person (first names, last
/// names, cities, streets): each made once (crate::memo::Memo, as clean_contact's cleaners).
struct DisplayMemos {
    name: Memo<Option<String>>,
    street: Memo<Option<String>>,
    city: Memo<Option<String>>,
}

const DISPLAY_MEMO_ENTRIES: usize = 1 << 14;
const DISPLAY_MEMO_KEY_BYTES: usize = 96;

impl DisplayMemos {
    fn new() -> Self {
        DisplayMemos {
            name: Memo::new(DISPLAY_MEMO_ENTRIES, DISPLAY_MEMO_KEY_BYTES),
            street: Memo::new(DISPLAY_MEMO_ENTRIES, DISPLAY_MEMO_KEY_BYTES),
            city: Memo::new(DISPLAY_MEMO_ENTRIES, DISPLAY_MEMO_KEY_BYTES),
        }
    }
}

thread_local! {
    static DISPLAY_MEMOS: RefCell<DisplayMemos> = RefCell::new(DisplayMemos::new());
}

/// Memos kept between the parts of a run: the threads that make golden rows live for one batch
/// (`crate::parallel`), so a memo of their own would start empty every batch.
static MEMO_POOL: std::sync::Mutex<Vec<DisplayMemos>> = std::sync::Mutex::new(Vec::new());

/// `f` with a set of memos from the pool as this thread's, given back after.
fn with_pooled_memos<R>(f: impl FnOnce() -> R) -> R {
    let pooled = MEMO_POOL.lock().ok().and_then(|mut pool| pool.pop());
    let own = DISPLAY_MEMOS.replace(pooled.unwrap_or_else(DisplayMemos::new));
    let r = f();
    let used = DISPLAY_MEMOS.replace(own);
    if let Ok(mut pool) = MEMO_POOL.lock() {
        pool.push(used);
    }
    r
}

/// A name field's display form where it holds a name.
fn display_name_field(value: &str) -> Option<String> {
    DISPLAY_MEMOS.with_borrow_mut(|m| {
        m.name.get(value, |v| {
            name::normalize_name(v)
                .is_some()
                .then(|| display::display_name(v))
                .flatten()
        })
    })
}

/// A street line's display form (its street without the house number).
fn display_street_line(line: &str) -> Option<String> {
    DISPLAY_MEMOS.with_borrow_mut(|m| {
        m.street.get(line, |l| {
            address::split_street(l).and_then(|parts| display::display_street(&parts.street))
        })
    })
}

fn display_city(city: &str) -> Option<String> {
    DISPLAY_MEMOS.with_borrow_mut(|m| m.city.get(city, display::display_city))
}

/// Where a record's texts lie in `GoldenInput::text`: its source's name, then the values in
/// GOLDEN_FIELDS' order (first_name, last_name, email, phone, mobile, address (its parts
/// joined), birth_date, company, customer_number, salutation, title), the address's parts
/// (street, house_number, postcode, city, country), and the values as written (its `raw`, for
/// display forms: first_name, last_name, full_name, the street line as the street key was made
/// from it, city).
const SOURCE: usize = 0;
const VALUES: usize = 1;
const ADDRESS: usize = VALUES + GOLDEN_FIELDS.len();
const WRITTEN: usize = ADDRESS + 5;
const WRITTEN_FIRST_NAME: usize = WRITTEN;
const WRITTEN_LAST_NAME: usize = WRITTEN + 1;
const WRITTEN_FULL_NAME: usize = WRITTEN + 2;
const WRITTEN_STREET_LINE: usize = WRITTEN + 3;
const WRITTEN_CITY: usize = WRITTEN + 4;
const TEXTS: usize = WRITTEN + 5;
/// The span of a NULL.
const NULL_SPAN: (u32, u32) = (u32::MAX, 0);

/// One record as survivorship sees it.
struct GoldenInput {
    person_id: i64,
    record_id: i64,
    source_id: i32,
    /// Every text of the record one after another (see SOURCE): one allocation a record
    /// instead of one a value (a million records read twice in a first resolve).
    text: String,
    /// (start, end) of each text in `text`, NULL_SPAN for NULL.
    spans: [(u32, u32); TEXTS],
    consent: [Option<bool>; 3],
    /// When each consent statement was made (microseconds), where the mapping says.
    stated: [Option<i64>; 3],
    updated: Option<i64>,
    seen: i64,
    /// The person's household before this run, where the query reads it (`households_query`).
    household: Option<i64>,
    /// The record's row version (its xmin), which unify.golden_inputs hashes.
    xmin: i64,
}

impl GoldenInput {
    /// A record without texts yet (`set` them in slot order).
    fn new(person_id: i64, record_id: i64, source_id: i32) -> Self {
        GoldenInput {
            person_id,
            record_id,
            source_id,
            text: String::new(),
            spans: [NULL_SPAN; TEXTS],
            consent: [None; 3],
            stated: [None; 3],
            updated: None,
            seen: 0,
            household: None,
            xmin: 0,
        }
    }

    fn set(&mut self, slot: usize, value: Option<&str>) {
        if let Some(v) = value {
            let start = self.text.len() as u32;
            self.text.push_str(v);
            self.spans[slot] = (start, self.text.len() as u32);
        }
    }

    fn slot(&self, slot: usize) -> Option<&str> {
        let (start, end) = self.spans[slot];
        (start != u32::MAX).then(|| &self.text[start as usize..end as usize])
    }

    fn source(&self) -> &str {
        self.slot(SOURCE).unwrap_or_default()
    }

    /// The value of field `f` (GOLDEN_FIELDS' order).
    fn value(&self, f: usize) -> Option<&str> {
        self.slot(VALUES + f)
    }

    /// Part `i` of the address (street, house_number, postcode, city, country).
    fn address(&self, i: usize) -> Option<&str> {
        self.slot(ADDRESS + i)
    }

    /// Bytes `texts` take in `text`.
    fn texts_len(texts: &[Option<&str>]) -> usize {
        texts.iter().flatten().map(|t| t.len()).sum()
    }

    /// Bytes [`Self::set_address`] takes in `text`: the parts, then them joined.
    fn address_len(parts: &[Option<&str>; 5]) -> usize {
        2 * Self::texts_len(parts) + parts.len() - 1
    }

    /// Sets the address's parts and, where any is there, the address field (the parts joined:
    /// the unit the address survives as).
    fn set_address(&mut self, parts: [Option<&str>; 5]) {
        for (i, part) in parts.iter().enumerate() {
            self.set(ADDRESS + i, *part);
        }
        if parts.iter().any(Option::is_some) {
            let start = self.text.len() as u32;
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    self.text.push('|');
                }
                self.text.push_str(part.unwrap_or(""));
            }
            self.spans[VALUES + 5] = (start, self.text.len() as u32);
        }
    }

    /// First and last name as written, tidied, as the record's keys were made: the first-name
    /// field when it holds a name, else the full name split.
    fn written_names(&self) -> (Option<String>, Option<String>) {
        let field = |slot: usize| self.slot(slot).and_then(display_name_field);
        let split = || {
            self.slot(WRITTEN_FULL_NAME)
                .map_or((None, None), display::split_display_name)
        };
        let first = field(WRITTEN_FIRST_NAME).or_else(|| split().0);
        let last = field(WRITTEN_LAST_NAME).or_else(|| split().1);
        (first, last)
    }
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
    /// The person's unify.golden_inputs hash where the run fills it (Survivorship::inputs_seed).
    inputs: i64,
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
            inputs: _,
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
    let mut survivorship = Survivorship::read();
    if person_ids.is_none() {
        survivorship.inputs_seed = inputs_seed();
    }
    let mapping = mapping();
    // Many persons (a resolve's changed ones) are read through a temp table of their ids: a
    // kept plan of "= ANY ($1)" may compare every record with every id.
    let many = person_ids.as_ref().is_some_and(|ids| ids.len() >= 1024);
    let filter = match &person_ids {
        Some(ids) if many => {
            Spi::connect_mut(|client| create_ids_table(client, ids));
            format!("rp.person_id IN (SELECT person_id FROM {IDS})")
        }
        Some(_) => "rp.person_id = ANY ($1)".to_string(),
        None => "true".to_string(),
    };
    let streamed = (person_ids.is_none() || many) && !fits_budget(mapping, &filter);
    if streamed {
        return TableIterator::new(Streamed::start(
            survivorship,
            with_households && person_ids.is_none(),
            mapping,
            filter,
            many,
        ));
    }
    let inputs = Spi::connect_mut(|client| {
        let args: Args = match person_ids {
            Some(ids) if !many => vec![ids.into()],
            _ => vec![],
        };
        let inputs = fetch_all_deformed(
            client,
            &records_query(mapping, &filter),
            args,
            F,
            input_from_row,
        );
        if many {
            run(client, &format!("DROP TABLE {IDS}"));
        }
        inputs
    });
    let mut rows: Vec<GoldenRow> = survivorship.rows(&inputs);
    drop(inputs);
    if survivorship.inputs_seed.is_some() {
        Spi::connect_mut(|client| write_inputs(client, &rows));
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

const F: &str = "resolve";

extern "C" {
    /// PostgreSQL's hash_bytes_extended (common/hashfn.c): what hashtextextended applies to a
    /// text of a deterministic collation (a database's default collation always is). Plain C
    /// over the bytes given: no allocation, no error, safe on any thread.
    fn hash_bytes_extended(k: *const u8, keylen: i32, seed: u64) -> u64;
}

/// A record's part of its person's unify.golden_inputs hash: the SQL of
/// `unify._refresh_persons`, `hashtextextended(record_id::text || ':' || xmin::text, seed)`.
fn version_hash(record_id: i64, xmin: i64, seed: i64) -> i64 {
    use std::io::Write;
    let mut key = [0u8; 48];
    let mut at = std::io::Cursor::new(&mut key[..]);
    let _ = write!(at, "{record_id}:{xmin}");
    let len = at.position() as usize;
    // SAFETY: `len` bytes of `key` are initialized; the function only reads them.
    unsafe { hash_bytes_extended(key.as_ptr(), len as i32, seed as u64) as i64 }
}

/// The seed with which a first resolve has this call fill unify.golden_inputs (the setting
/// `unify_internal.golden_inputs_seed`, which `unify._refresh_persons` sets for its one
/// statement; empty otherwise): the hashes are made from the records the golden rows are read
/// from, instead of a second read and join of every record in SQL.
fn inputs_seed() -> Option<i64> {
    Spi::get_one::<String>(
        "SELECT pg_catalog.current_setting('unify_internal.golden_inputs_seed', true)",
    )
    .unwrap_or_else(|e| spi_failed(e, F))
    .and_then(|s| s.parse::<i64>().ok())
}

/// Writes the unify.golden_inputs hashes of `rows` (in person order: appended to the primary
/// key's last page).
fn write_inputs(client: &mut SpiClient<'_>, rows: &[GoldenRow]) {
    if rows.is_empty() {
        return;
    }
    let persons: Vec<i64> = rows.iter().map(|r| r.person_id).collect();
    let inputs: Vec<i64> = rows.iter().map(|r| r.inputs).collect();
    insert_arrays(
        client,
        "unify.golden_inputs (person_id, inputs)",
        &["bigint[]", "bigint[]"],
        || vec![persons.into(), inputs.into()],
        F,
    );
}

/// Memory a record takes in the held run (its values read, the golden rows, the households):
/// about 2 kB (issue 27: 2.1 GB at 1M records).
const HELD_RECORD_BYTES: u64 = 2048;

/// Where a record's person is read from: unify.record_persons (0.3.0). Before 0.3.0 it was
/// unify.records.person_id, and an update from 0.1.0 refreshes the golden records in its
/// 0.1.0 → 0.2.0 step, with this library, before the 0.2.0 → 0.3.0 step moves the column: then
/// the column (a released step is never edited).
fn mapping() -> &'static str {
    let moved = Spi::get_one::<bool>("SELECT to_regclass('unify.record_persons') IS NOT NULL")
        .unwrap_or_else(|e| spi_failed(e, F))
        .unwrap_or(true);
    if moved {
        "unify.record_persons"
    } else {
        "(SELECT record_id, person_id FROM unify.records WHERE person_id IS NOT NULL)"
    }
}

/// Whether the records with a person matching `filter` (see `records_query`) fit
/// customer_unify.batch_memory held at once.
fn fits_budget(mapping: &str, filter: &str) -> bool {
    let capacity = crate::budget::kb() * 1024 / HELD_RECORD_BYTES;
    Spi::connect(|client| {
        at_most(client, &format!("{mapping} rp WHERE {filter}"), capacity).is_some()
    })
}

/// How many rows `from` (a FROM clause, with its WHERE) yields where that is at most
/// `capacity`; None where more: counted only up to one past it.
fn at_most(client: &SpiClient<'_>, from: &str, capacity: u64) -> Option<u64> {
    let capacity = capacity.min(i64::MAX as u64 - 1) as i64;
    let rows = select_kept(
        client,
        &format!("SELECT count(*) FROM (SELECT 1 FROM {from} LIMIT $1) x"),
        &vec![(capacity + 1).into()],
    )
    .and_then(|t| t.first().get_one::<i64>())
    .unwrap_or_else(|e| spi_failed(e, F))
    .unwrap_or_default();
    (rows <= capacity).then_some(rows.max(0) as u64)
}

/// The records that have a person (`mapping`, alias rp: see `mapping()`), with their source's
/// name, matching `filter`, in person order: the columns `input_from_row` reads.
fn records_query(mapping: &str, filter: &str) -> String {
    format!(
        "SELECT rp.person_id, r.record_id, r.source_id, s.name, r.first_name, r.last_name, r.email,
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
                r.raw ->> 'city', r.xmin::text::bigint
         FROM {mapping} rp JOIN unify.records r ON r.record_id = rp.record_id
         JOIN unify.sources s ON s.source_id = r.source_id
         WHERE {filter} ORDER BY rp.person_id, r.record_id"
    )
}

fn input_from_row(r: &Deformed) -> GoldenInput {
    let mut input = GoldenInput::new(
        r.i64(1).unwrap_or_default(),
        r.i64(2).unwrap_or_default(),
        r.i32(3).unwrap_or_default(),
    );
    let source = r.text(4).unwrap_or_default();
    let values = [5, 6, 7, 8, 9].map(|column| r.text(column));
    let address = [10, 11, 12, 13, 14].map(|column| r.text(column));
    let more = [15, 16, 17, 23, 24].map(|column| r.text(column));
    let written = [28, 29, 30, 31, 32].map(|column| r.text(column));
    // The record's one allocation at its size (grown value by value it was reallocated some
    // five times a record).
    input.text.reserve_exact(
        source.len()
            + GoldenInput::texts_len(&values)
            + GoldenInput::address_len(&address)
            + GoldenInput::texts_len(&more)
            + GoldenInput::texts_len(&written),
    );
    input.set(SOURCE, Some(source));
    for (f, value) in values.into_iter().enumerate() {
        input.set(VALUES + f, value);
    }
    input.set_address(address);
    for (f, value) in [6, 7, 8, 9, 10].into_iter().zip(more) {
        input.set(VALUES + f, value);
    }
    for (slot, value) in [
        WRITTEN_FIRST_NAME,
        WRITTEN_LAST_NAME,
        WRITTEN_FULL_NAME,
        WRITTEN_STREET_LINE,
        WRITTEN_CITY,
    ]
    .into_iter()
    .zip(written)
    {
        input.set(slot, value);
    }
    input.consent = [18, 19, 20].map(|i| r.bool(i));
    input.stated = [25, 26, 27].map(|i| r.i64(i));
    input.updated = r.i64(21);
    input.seen = r.i64(22).unwrap_or_default();
    input.xmin = r.i64(33).unwrap_or_default();
    input
}

/// The records that have a person, in person order, with what their household keys are made
/// of (the e-mail, phone and address fields' candidates) and each person's household before
/// this run: the columns `household_input_from_row` reads. Narrower than `records_query`: the
/// first pass of a streamed run with households makes no whole golden rows.
fn households_query(mapping: &str) -> String {
    format!(
        "SELECT rp.person_id, r.record_id, r.source_id, s.name, r.email, r.phone,
                r.street, r.house_number, r.postcode, r.city, r.country,
                (extract(epoch FROM r.source_updated_at) * 1000000)::bigint, p.household_id
         FROM {mapping} rp JOIN unify.records r ON r.record_id = rp.record_id
         JOIN unify.sources s ON s.source_id = r.source_id
         LEFT JOIN unify.persons p ON p.person_id = rp.person_id
         ORDER BY rp.person_id, r.record_id"
    )
}

/// A record of `households_query`: the fields household keys depend on, the rest empty.
fn household_input_from_row(r: &Deformed) -> GoldenInput {
    let mut input = GoldenInput::new(
        r.i64(1).unwrap_or_default(),
        r.i64(2).unwrap_or_default(),
        r.i32(3).unwrap_or_default(),
    );
    let source = r.text(4).unwrap_or_default();
    let (email, phone) = (r.text(5), r.text(6));
    let address = [7, 8, 9, 10, 11].map(|column| r.text(column));
    input.text.reserve_exact(
        source.len() + GoldenInput::texts_len(&[email, phone]) + GoldenInput::address_len(&address),
    );
    input.set(SOURCE, Some(source));
    input.set(VALUES + 2, email);
    input.set(VALUES + 3, phone);
    input.set_address(address);
    input.updated = r.i64(12);
    input.household = r.i64(13);
    input
}

/// The rules in effect and the sources' priorities.
struct Survivorship {
    rule_of: Vec<(Rule, Vec<String>)>,
    /// (source_id, priority), by source_id: a binary search per record and field is cheaper
    /// than hashing.
    priorities: Vec<(i32, i32)>,
    /// The seed of unify.golden_inputs' hashes where this run fills that table (a first
    /// resolve: `inputs_seed`); each row then carries its person's hash.
    inputs_seed: Option<i64>,
}

impl Survivorship {
    fn read() -> Self {
        let (rules, priorities) = Spi::connect(|client| {
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
            let priorities: Vec<(i32, i32)> = fetch_all(
                client,
                "SELECT source_id, priority FROM unify.sources ORDER BY source_id",
                vec![],
                F,
                |r| {
                    (
                        r.get::<i32>(1).ok().flatten().unwrap_or_default(),
                        r.get::<i32>(2).ok().flatten().unwrap_or_default(),
                    )
                },
            );
            (rules, priorities)
        });
        let rule_of = GOLDEN_FIELDS
            .iter()
            .map(|f| rules.get(*f).cloned().unwrap_or((Rule::MostRecent, vec![])))
            .collect();
        Self {
            rule_of,
            priorities,
            inputs_seed: None,
        }
    }

    /// The golden rows of `inputs` (records in person order), one per person, made on the
    /// threads this backend may use (`crate::parallel`; plain Rust, no PostgreSQL calls):
    /// the same rows in the same order on one thread or several.
    fn rows(&self, inputs: &[GoldenInput]) -> Vec<GoldenRow> {
        self.per_person(inputs, |person| self.row(person))
    }

    /// `f` of each person of `inputs` (records in person order), in order, on the threads.
    fn per_person<R: Send>(
        &self,
        inputs: &[GoldenInput],
        f: impl Fn(&[GoldenInput]) -> R + Sync,
    ) -> Vec<R> {
        let persons: Vec<&[GoldenInput]> =
            inputs.chunk_by(|a, b| a.person_id == b.person_id).collect();
        let workers = crate::parallel::Workers::from(crate::parallel::threads_for(unsafe {
            pg_sys::max_parallel_workers_per_gather
        }));
        // A few parts per thread: persons differ in cost (their records, memo misses).
        let part = persons.len().div_ceil(workers.threads * 4).max(256);
        let parts: Vec<&[&[GoldenInput]]> = persons.chunks(part).collect();
        crate::parallel::map_tasks(&parts, workers, |part| {
            with_pooled_memos(|| {
                part.iter()
                    .enumerate()
                    .map(|(n, person)| {
                        crate::interrupt::check_every(n, 1 << 12);
                        f(person)
                    })
                    .collect::<Vec<R>>()
            })
        })
        .into_iter()
        .flatten()
        .collect()
    }

    /// Of each person of `inputs`: their id, the household the records were read with, and
    /// their household keys.
    fn keyed(&self, inputs: &[GoldenInput]) -> Vec<(i64, Option<i64>, Vec<String>)> {
        self.per_person(inputs, |person| {
            (
                person[0].person_id,
                person[0].household,
                self.household_keys(person),
            )
        })
    }

    /// The record whose value of field `f` (GOLDEN_FIELDS' order) survives among a person's
    /// records, with the value.
    fn survive<'p>(
        &self,
        person: &'p [GoldenInput],
        f: usize,
    ) -> Option<(&'p GoldenInput, &'p str)> {
        let (rule, order) = &self.rule_of[f];
        let priority = |rec: &GoldenInput| {
            let base = self
                .priorities
                .binary_search_by_key(&rec.source_id, |&(id, _)| id)
                .map_or(100, |i| self.priorities[i].1);
            match order.iter().position(|s| s == rec.source()) {
                // Listed sources come before all others, in the listed order.
                Some(p) => i32::MIN + p as i32,
                None => base,
            }
        };
        let candidates: Vec<Candidate> = person
            .iter()
            .filter_map(|rec| {
                rec.value(f).map(|value| Candidate {
                    value,
                    priority: priority(rec),
                    updated: rec.updated,
                    record_id: rec.record_id,
                })
            })
            .collect();
        let c = survivor(*rule, &candidates)?;
        let rec = person.iter().find(|r| r.record_id == c.record_id)?;
        Some((rec, rec.value(f)?))
    }

    /// A person's household keys and the household the records were read with, as their
    /// golden row gives them (`household_keys(row.household_fields())`), from the fields they
    /// depend on alone (e-mail, phone, address): what the first pass of a streamed run with
    /// households needs, read with `records_query(.., true)`.
    fn household_keys(&self, person: &[GoldenInput]) -> Vec<String> {
        let value = |f: usize| self.survive(person, f).map(|(_, v)| v);
        let address = self.survive(person, 5).map(|(r, _)| r);
        let part = |i: usize| address.and_then(|a| a.address(i));
        household_keys(HouseholdFields {
            postcode: part(2),
            street: part(0),
            house_number: part(1),
            phone: value(3),
            email: value(2),
        })
    }

    /// One person's golden row from their records (its household is set by the caller).
    fn row(&self, person: &[GoldenInput]) -> GoldenRow {
        let mut golden: [Option<String>; 11] = Default::default();
        // The record each field's value survived from (its written form gives the display).
        let mut from: [Option<&GoldenInput>; 11] = Default::default();
        for f in 0..GOLDEN_FIELDS.len() {
            if let Some((rec, value)) = self.survive(person, f) {
                golden[f] = Some(value.to_string());
                from[f] = Some(rec);
            }
        }
        // The address survives as one unit: every part from the same record.
        let address: [Option<String>; 5] = from[5]
            .map(|r| std::array::from_fn(|i| r.address(i).map(str::to_string)))
            .unwrap_or_default();
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
                .map(|r| r.source().to_string()),
            // The statement's own time: the proof (None for an undated statement).
            epoch: c.and_then(|c| c.stated).map(|u| u as f64 / 1e6),
        };
        let sources: Vec<String> = person
            .iter()
            .map(GoldenInput::source)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        let first_seen = person.iter().map(|r| r.seen).min().unwrap_or_default() as f64 / 1e6;
        let last_seen = person.iter().map(|r| r.seen).max().unwrap_or_default() as f64 / 1e6;
        let [street, house_number, postcode, city, country] = address;
        let [first_name, last_name, email, phone, mobile, _, birth_date, company, customer_number, salutation, title] =
            golden;
        GoldenRow {
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
            inputs: self.inputs_seed.map_or(0, |seed| {
                person
                    .iter()
                    .fold(0, |h, r| h ^ version_hash(r.record_id, r.xmin, seed))
            }),
        }
    }
}

/// A whole run's golden rows over more records than the budget holds: read in person order
/// through a cursor, a batch of whole persons at a time, and returned as they are made. With
/// households, a first pass makes every golden row once for its household keys (written to a
/// temp table; PostgreSQL finds the persons sharing a key), so that each row can carry its
/// household when the second pass makes it again.
struct Streamed {
    batches: PersonBatches,
    survivorship: Survivorship,
    /// The persons of the first pass in order, with their households (empty without
    /// households). The second pass reads with a snapshot of its own: a row is matched by its
    /// person id, so a person that came or went in between never takes another's household.
    households: Option<HouseholdSource>,
    out: std::vec::IntoIter<GoldenRow>,
    /// cursor_tuple_fraction as it was, set back at the end.
    fraction: String,
    /// The temp table of the persons read, where the run reads given persons.
    ids_table: bool,
}

/// The temp table of the persons a streamed run reads, where it is given persons.
const IDS: &str = "pg_temp.unify_golden_ids";
/// Persons in ascending id order and their households (the held grouping).
#[derive(Default)]
struct Households {
    persons: Vec<i64>,
    household: Vec<PackedId>,
}

/// The temp table of the household keys of a streamed run grouped in memory.
const HELD_KEYS: &str = "pg_temp.unify_golden_keys";

/// Memory per person of the held grouping (see `streamed_households_held`), all made at their
/// size: their id and household before (8 each) throughout; while grouped whether they have
/// keys (1), the union-find (8) and its clusters' numbers (4 + 4), their group (8); then the id
/// plan's 12 a person with keys and 24 a group (`households::plan_household_ids`), the ids out
/// (8): about 52 bytes at the most, rounded up.
const HELD_HOUSEHOLD_BYTES: u64 = 64;

/// Memory per person who had a household besides: the id plan's entry and its sum per household
/// before (16 + 24, `IdPlan::with_history`).
const HELD_HOUSEHOLD_BEFORE_BYTES: u64 = 40;

/// Memory per person of the household keys held in a map besides (`KeyLinks::Map`): about 1.9
/// keys a person of some 30 bytes, each in a map entry and an allocation of its own, rounded
/// up.
const HELD_KEY_BYTES: u64 = 192;

/// How the households of a streamed run are grouped: in memory while that takes at most half
/// the budget (8 million persons at 1GB where none had a household, 5 million where all had;
/// their keys in memory too up to 2 million), above in SQL, flat. The records are counted first
/// (there are no more persons than records); where they are too many, the persons. With the
/// number of persons to make room for at once.
fn households_held(client: &mut SpiClient<'_>, mapping: &str) -> Option<(KeyLinks, u64)> {
    let half = crate::budget::kb() * 1024 / 2;
    let had = at_most(
        client,
        "unify.persons p WHERE p.household_id IS NOT NULL",
        half / HELD_HOUSEHOLD_BEFORE_BYTES,
    )?;
    let half = half - had * HELD_HOUSEHOLD_BEFORE_BYTES;
    let (with_keys, held) = (
        half / (HELD_HOUSEHOLD_BYTES + HELD_KEY_BYTES),
        half / HELD_HOUSEHOLD_BYTES,
    );
    let records = format!("{mapping} rp");
    let persons = format!("(SELECT DISTINCT m.person_id FROM {mapping} m) rp");
    let links = |n| {
        if n <= with_keys {
            KeyLinks::Map(HashMap::new())
        } else {
            KeyLinks::Table
        }
    };
    if let Some(n) = at_most(client, &records, held) {
        return Some((links(n), n));
    }
    at_most(client, &persons, held).map(|n| (links(n), n))
}

/// Where the persons sharing a household key are found: a map of each key's first holder, or
/// (more records than its memory allows) a temp table of the keys that PostgreSQL sorts.
enum KeyLinks {
    Map(HashMap<Box<str>, u32>),
    Table,
}

/// Where a streamed run takes each person's household from.
enum HouseholdSource {
    Held { households: Households, n: usize },
    Sql(PlanReader),
}

impl HouseholdSource {
    /// The household of `person`; persons are asked in ascending order.
    fn household(&mut self, client: &mut SpiClient<'_>, person: i64) -> Option<i64> {
        match self {
            HouseholdSource::Held { households, n } => {
                let ids = &households.persons;
                while *n < ids.len() && ids[*n] < person {
                    *n += 1;
                }
                (ids.get(*n) == Some(&person))
                    .then(|| households.household[*n].id())
                    .flatten()
            }
            HouseholdSource::Sql(plan) => plan.household(client, person),
        }
    }

    fn close(self, client: &mut SpiClient<'_>) {
        if let HouseholdSource::Sql(plan) = self {
            plan.close(client);
        }
    }
}

/// A temp table of the persons to read (`_golden_records` of many persons).
fn create_ids_table(client: &mut SpiClient<'_>, ids: &[i64]) {
    drop_temp_tables(client, &[IDS], F);
    run(
        client,
        &format!("CREATE TEMP TABLE {IDS} (person_id bigint PRIMARY KEY)"),
    );
    update_with(
        client,
        &format!("INSERT INTO {IDS} SELECT DISTINCT unnest($1::bigint[])"),
        || vec![ids.to_vec().into()],
        F,
    );
    run(client, &format!("ANALYZE {IDS}"));
}

/// The temp table of each person's household before a streamed run.
const BEFORE: &str = "pg_temp.unify_golden_before";

/// The households of a streamed run (households::PLAN) read in person order beside its golden
/// rows, a fetch at a time.
struct PlanReader {
    cursor: Cursor,
    buffer: std::collections::VecDeque<(i64, i64)>,
    done: bool,
}

impl PlanReader {
    fn open(client: &mut SpiClient<'_>, batch: usize) -> Self {
        Self {
            cursor: Cursor::open(
                client,
                "unify_golden_households",
                &format!("SELECT person, household FROM {PLAN} ORDER BY person"),
                batch.max(1000),
                F,
            ),
            buffer: Default::default(),
            done: false,
        }
    }

    /// The household of `person`; persons are asked in ascending order.
    fn household(&mut self, client: &mut SpiClient<'_>, person: i64) -> Option<i64> {
        loop {
            while let Some(&(p, household)) = self.buffer.front() {
                if p < person {
                    self.buffer.pop_front();
                    continue;
                }
                return (p == person).then_some(household);
            }
            if self.done {
                return None;
            }
            let read = self.cursor.next(client, |r| {
                (
                    r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                    r.get::<i64>(2).ok().flatten().unwrap_or_default(),
                )
            });
            self.done = read.is_empty();
            self.buffer.extend(read);
        }
    }

    fn close(self, client: &mut SpiClient<'_>) {
        self.cursor.close(client);
        run(client, &format!("DROP TABLE {PLAN}"));
    }
}

/// Records per fetch: about 2 kB each held (HELD_RECORD_BYTES) in a quarter of the budget,
/// beside the households' grouping in up to half of it (with the whole budget a first resolve
/// within 64MB peaked 28 MB higher, in the same time).
fn fetch_rows() -> usize {
    (crate::budget::kb() * 1024 / 4 / HELD_RECORD_BYTES).clamp(16, 20_000) as usize
}

fn run(client: &mut SpiClient<'_>, statement: &str) {
    client
        .update(statement, None, &[])
        .unwrap_or_else(|e| spi_failed(e, F));
}

impl Streamed {
    /// The persons of `filter` (see `records_query`; `ids_table`: it reads IDS, dropped at the
    /// end).
    fn start(
        survivorship: Survivorship,
        with_households: bool,
        mapping: &str,
        filter: String,
        ids_table: bool,
    ) -> Self {
        let batch = fetch_rows();
        let (fraction, households, batches) = Spi::connect_mut(|client| {
            // The cursors are read to their end: plan them for all their rows (one sort), not
            // for the first tenth.
            let fraction = swap_setting(client, "cursor_tuple_fraction", "1", F);
            let households = with_households.then(|| {
                if let Some((links, persons)) = households_held(client, mapping) {
                    HouseholdSource::Held {
                        households: streamed_households_held(
                            client,
                            &survivorship,
                            batch,
                            mapping,
                            links,
                            persons as usize,
                        ),
                        n: 0,
                    }
                } else {
                    streamed_households(client, &survivorship, batch, mapping);
                    HouseholdSource::Sql(PlanReader::open(client, batch))
                }
            });
            let batches = PersonBatches::open(
                client,
                "unify_golden_rows",
                &records_query(mapping, &filter),
                batch,
                input_from_row,
            );
            (fraction, households, batches)
        });
        Self {
            batches,
            survivorship,
            households,
            out: Vec::new().into_iter(),
            fraction,
            ids_table,
        }
    }
}

impl Iterator for Streamed {
    type Item = GoldenColumns;

    fn next(&mut self) -> Option<GoldenColumns> {
        loop {
            if let Some(row) = self.out.next() {
                return Some(row.into_columns());
            }
            let survivorship = &self.survivorship;
            let batches = &mut self.batches;
            let fraction = &self.fraction;
            let households = &mut self.households;
            let ids_table = self.ids_table;
            let rows = Spi::connect_mut(|client| {
                let mut rows = batches.next(client, |inputs| survivorship.rows(inputs));
                if let (Some(rows), Some(_)) = (rows.as_ref(), survivorship.inputs_seed) {
                    write_inputs(client, rows);
                }
                if let (Some(rows), Some(plan)) = (rows.as_mut(), households.as_mut()) {
                    // Matched by person id: the plan was made with a snapshot of its own, so a
                    // person that came or went in between never takes another's household.
                    for row in rows.iter_mut() {
                        row.household_id = plan.household(client, row.person_id);
                    }
                }
                if rows.is_none() {
                    batches.close(client);
                    if let Some(plan) = households.take() {
                        plan.close(client);
                    }
                    if ids_table {
                        run(client, &format!("DROP TABLE {IDS}"));
                    }
                    set_back(client, "cursor_tuple_fraction", fraction, F);
                }
                rows
            })?;
            self.out = rows.into_iter();
        }
    }
}

/// Golden rows a batch of whole persons at a time, from a cursor over records in person order.
struct PersonBatches {
    cursor: Option<Cursor>,
    /// A record from a row of the cursor's query.
    read: fn(&Deformed) -> GoldenInput,
    /// Records of the last person read, whose records may go on in the next fetch.
    pending: Vec<GoldenInput>,
    done: bool,
}

impl PersonBatches {
    fn open(
        client: &mut SpiClient<'_>,
        name: &'static str,
        query: &str,
        batch: usize,
        read: fn(&Deformed) -> GoldenInput,
    ) -> Self {
        // A cursor of that name left open by an earlier call in this transaction (its rows not
        // all read) goes first.
        let open = client
            .select(
                "SELECT count(*) FROM pg_catalog.pg_cursors WHERE name = $1",
                None,
                &[name.into()],
            )
            .and_then(|t| t.first().get_one::<i64>())
            .unwrap_or_else(|e| spi_failed(e, F))
            .unwrap_or_default();
        if open > 0 {
            run(client, &format!("CLOSE {name}"));
        }
        Self {
            cursor: Some(Cursor::open(client, name, query, batch, F)),
            read,
            pending: Vec::new(),
            done: false,
        }
    }

    /// `make` of the records of the next whole persons (in person order); None at the end.
    fn next<T>(
        &mut self,
        client: &mut SpiClient<'_>,
        make: impl Fn(&[GoldenInput]) -> Vec<T>,
    ) -> Option<Vec<T>> {
        loop {
            if self.done {
                if self.pending.is_empty() {
                    return None;
                }
                let last = std::mem::take(&mut self.pending);
                return Some(make(&last));
            }
            let cursor = self.cursor.as_ref().expect("open until done");
            let read = cursor.next_deformed(client, self.read);
            if read.is_empty() {
                self.done = true;
                continue;
            }
            self.pending.extend(read);
            // The persons before the last one read are whole (records come in person order).
            let last = self.pending.last().expect("just read").person_id;
            let cut = self.pending.partition_point(|r| r.person_id < last);
            if cut > 0 {
                let rest = self.pending.split_off(cut);
                let whole = std::mem::replace(&mut self.pending, rest);
                return Some(make(&whole));
            }
        }
    }

    fn close(&mut self, client: &mut SpiClient<'_>) {
        if let Some(cursor) = self.cursor.take() {
            cursor.close(client);
        }
    }
}

/// The household of every person with records, in person order, as `plan_households` gives
/// them over all golden rows held at once: each golden row made once for its household keys,
/// each person sharing a key joined to the key's first holder (`links`: through a map of the
/// keys, or a temp table of them sorted by PostgreSQL within work_mem) by a union-find over the
/// persons (8 bytes each), plus per person whether they have keys (1 byte), their id (8 bytes)
/// and their household before (8 bytes): while that fits half the budget (`households_held`),
/// else `streamed_households` in SQL.
fn streamed_households_held(
    client: &mut SpiClient<'_>,
    survivorship: &Survivorship,
    batch: usize,
    mapping: &str,
    mut links: KeyLinks,
    persons_at_most: usize,
) -> Households {
    if let KeyLinks::Table = links {
        drop_temp_tables(client, &[HELD_KEYS], F);
        run(
            client,
            &format!("CREATE TEMP TABLE {HELD_KEYS} (person int NOT NULL, key text NOT NULL)"),
        );
    }
    // Made at their size (grown by doubling they held up to twice): the records or persons
    // counted are at least the persons.
    let mut has_keys: Vec<bool> = Vec::with_capacity(persons_at_most);
    let mut persons: Vec<i64> = Vec::with_capacity(persons_at_most);
    let mut previous: Vec<PackedId> = Vec::with_capacity(persons_at_most);
    // Links found through the map: (first holder, person).
    let mut linked: Vec<(u32, u32)> = Vec::new();
    let mut batches = PersonBatches::open(
        client,
        "unify_golden_keys",
        &households_query(mapping),
        batch,
        household_input_from_row,
    );
    while let Some(rows) = batches.next(client, |inputs| survivorship.keyed(inputs)) {
        let (mut person, mut key) = (Vec::new(), Vec::new());
        for (person_id, household_id, keys) in rows {
            has_keys.push(!keys.is_empty());
            persons.push(person_id);
            previous.push(PackedId::new(household_id));
            let n = has_keys.len() as u32 - 1;
            match &mut links {
                // Persons come in ascending order: the first holder is the least, as the
                // window below takes it.
                KeyLinks::Map(first) => {
                    for k in keys {
                        match first.get(k.as_str()) {
                            Some(&f) => linked.push((f, n)),
                            None => {
                                first.insert(k.into_boxed_str(), n);
                            }
                        }
                    }
                }
                KeyLinks::Table => {
                    for k in keys {
                        person.push(n as i32);
                        key.push(k);
                    }
                }
            }
        }
        if !person.is_empty() {
            insert_arrays(
                client,
                HELD_KEYS,
                &["int[]", "text[]"],
                || vec![person.into(), key.into()],
                F,
            );
        }
    }
    batches.close(client);
    drop(links_map(&mut links));
    let mut clusterer = Clusterer::new(has_keys.len());
    for (a, b) in linked {
        clusterer.must_link(a, b);
    }
    if let KeyLinks::Table = links {
        // Each person sharing a key joins the first person holding it (as group_by_shared_keys).
        let links = Cursor::open(
            client,
            "unify_golden_links",
            &format!(
                "SELECT first, person FROM (
                   SELECT person, min(person) OVER (PARTITION BY key COLLATE \"C\") AS first FROM {HELD_KEYS}) k
                 WHERE first <> person"
            ),
            batch.max(1000),
            F,
        );
        loop {
            let pairs = links.next(client, |r| {
                (
                    r.get::<i32>(1).ok().flatten().unwrap_or_default() as u32,
                    r.get::<i32>(2).ok().flatten().unwrap_or_default() as u32,
                )
            });
            if pairs.is_empty() {
                break;
            }
            for (a, b) in pairs {
                clusterer.must_link(a, b);
            }
        }
        links.close(client);
        run(client, &format!("DROP TABLE {HELD_KEYS}"));
    }
    let groups = groups_with_keys(&clusterer.finish(), |i| has_keys[i]);
    drop(has_keys);
    Households {
        persons,
        household: plan_household_ids(client, &groups, &previous),
    }
}

/// The map of `links`, emptied (freed before the union-find is made).
fn links_map(links: &mut KeyLinks) -> HashMap<Box<str>, u32> {
    match links {
        KeyLinks::Map(first) => std::mem::take(first),
        KeyLinks::Table => HashMap::new(),
    }
}

/// The household of every person with records as `plan_households` gives them over all golden
/// rows held at once, left in households::PLAN: each golden row made once for its household
/// keys (to a temp table, a batch at a time, with each person's household before), then grouped
/// in SQL (`plan_in_sql`): memory stays flat however many persons there are.
fn streamed_households(
    client: &mut SpiClient<'_>,
    survivorship: &Survivorship,
    batch: usize,
    mapping: &str,
) {
    create_keys_table(client);
    drop_temp_tables(client, &[BEFORE], F);
    run(
        client,
        &format!("CREATE TEMP TABLE {BEFORE} (person bigint NOT NULL, household bigint NOT NULL)"),
    );
    let mut batches = PersonBatches::open(
        client,
        "unify_golden_keys",
        &households_query(mapping),
        batch,
        household_input_from_row,
    );
    while let Some(rows) = batches.next(client, |inputs| survivorship.keyed(inputs)) {
        let (mut person, mut key) = (Vec::new(), Vec::new());
        let (mut had, mut household) = (Vec::new(), Vec::new());
        for (person_id, household_id, keys) in rows {
            for k in keys {
                person.push(person_id);
                key.push(k);
            }
            if let Some(h) = household_id {
                had.push(person_id);
                household.push(h);
            }
        }
        insert_arrays(
            client,
            KEYS,
            &["bigint[]", "text[]"],
            || vec![person.into(), key.into()],
            F,
        );
        insert_arrays(
            client,
            BEFORE,
            &["bigint[]", "bigint[]"],
            || vec![had.into(), household.into()],
            F,
        );
    }
    batches.close(client);
    run(client, &format!("ANALYZE {BEFORE}"));
    plan_in_sql(client, &format!("SELECT person, household FROM {BEFORE}"));
    run(client, &format!("DROP TABLE {BEFORE}"));
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
    let names = |f: usize| from[f].map(|r| r.written_names()).unwrap_or_default();
    let first_name = names(0)
        .0
        .or_else(|| golden[0].as_deref().map(display::display_from_key));
    let last_name = names(1)
        .1
        .or_else(|| golden[1].as_deref().map(display::display_from_key));
    let written = from[5];
    let street = written
        .and_then(|w| w.slot(WRITTEN_STREET_LINE))
        .and_then(display_street_line);
    let city = written
        .and_then(|w| w.slot(WRITTEN_CITY))
        .and_then(display_city)
        .or_else(|| address[3].as_deref().and_then(display_city));
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
