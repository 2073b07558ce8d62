//! Reading records for matching: the columns the model compares, the holders of e-mails and
//! phones, the changed records as they were before a queue batch, the source ids by name.

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use super::super::spi::{fetch_all, spi_failed, Args};
use crate::model::record::MatchRecord;
use crate::normalize::date::iso_date_from_pg_days;

pub(super) const RECORD_COLUMNS: &str =
    "record_id, source_id, first_name, last_name, email, email_key, phone, mobile, \
     street, house_number, postcode, city, birth_date, external_id, customer_number";

/// How many columns [`RECORD_COLUMNS`] selects: a query may add its own after them.
pub(super) const RECORD_COLUMN_COUNT: usize = {
    let bytes = RECORD_COLUMNS.as_bytes();
    let (mut i, mut commas) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b',' {
            commas += 1;
        }
        i += 1;
    }
    commas + 1
};

/// Records matching `filter` (a WHERE clause over unify.records r), read in batches.
pub(super) fn load_records(
    client: &SpiClient<'_>,
    filter: &str,
    args: Args<'_>,
    function: &'static str,
) -> Vec<MatchRecord> {
    let query = format!("SELECT {RECORD_COLUMNS} FROM unify.records r {filter} ORDER BY record_id");
    fetch_all(client, &query, args, function, |row| {
        record_from_row(row, function)
    })
}

/// A row of [`RECORD_COLUMNS`] as a prepared record.
pub(super) fn record_from_row(
    row: &pgrx::spi::SpiHeapTupleData,
    function: &'static str,
) -> MatchRecord {
    raw_record_from_row(row, function).prepare()
}

/// [`record_from_row`] before `MatchRecord::prepare`, which a caller reading many records runs
/// on all threads (see [`prepare_all`]): reading the row has to happen on this thread.
pub(super) fn raw_record_from_row(
    row: &pgrx::spi::SpiHeapTupleData,
    function: &'static str,
) -> MatchRecord {
    let text = |i: usize| {
        row.get::<String>(i)
            .unwrap_or_else(|e| spi_failed(e, function))
    };
    let phones = [text(7), text(8)].into_iter().flatten().collect();
    MatchRecord {
        id: row.get::<i64>(1).ok().flatten().unwrap_or_default(),
        source_id: row.get::<i32>(2).ok().flatten().unwrap_or_default(),
        first_name: text(3),
        last_name: text(4),
        email: text(5),
        email_key: text(6),
        phones,
        street: text(9),
        house_number: text(10),
        postcode: text(11),
        city: text(12),
        birth_date: row
            .get::<pgrx::datum::Date>(13)
            .unwrap_or_else(|e| spi_failed(e, function))
            .filter(pgrx::datum::Date::is_finite)
            .and_then(|d| iso_date_from_pg_days(d.to_pg_epoch_days())),
        external_id: text(14),
        customer_number: text(15),
        ..Default::default()
    }
}

/// Records read by [`raw_record_from_row`], prepared on all threads where they are.
pub(super) fn prepare_all(mut records: Vec<MatchRecord>) -> Vec<MatchRecord> {
    crate::parallel::each_mut(&mut records, super::run::workers(), |r| {
        *r = std::mem::take(r).prepare()
    });
    records
}

/// The records holding the e-mails and phones given as (value, cap), each read up to its cap
/// per column, each record once (ordered by id). Read straight through the value indexes.
pub(super) fn load_value_holders(
    client: &SpiClient<'_>,
    emails: Vec<(String, i32)>,
    phones: Vec<(String, i32)>,
    function: &'static str,
) -> Vec<MatchRecord> {
    let (email_values, email_caps): (Vec<String>, Vec<i32>) = emails.into_iter().unzip();
    let (phone_values, phone_caps): (Vec<String>, Vec<i32>) = phones.into_iter().unzip();
    let arm = |column: &str, values: &str, caps: &str| {
        format!(
            "SELECT x.* FROM unnest({values}::text[], {caps}::int[]) AS v (value, cap),
               LATERAL (SELECT {RECORD_COLUMNS} FROM unify.records r WHERE r.{column} = v.value LIMIT v.cap) x"
        )
    };
    let query = format!(
        "{} UNION ALL {} UNION ALL {}",
        arm("email_key", "$1", "$2"),
        arm("phone", "$3", "$4"),
        arm("mobile", "$3", "$4")
    );
    let mut records = fetch_all(
        client,
        &query,
        vec![
            email_values.into(),
            email_caps.into(),
            phone_values.into(),
            phone_caps.into(),
        ],
        function,
        |row| record_from_row(row, function),
    );
    records.sort_unstable_by_key(|r| r.id);
    records.dedup_by_key(|r| r.id);
    records
}

/// A changed record as it was before its batch: the fields that decide whether its e-mail and
/// phones are a household's (`unify.process_queue` passes them as jsonb).
#[derive(serde::Deserialize)]
pub(super) struct RecordBefore {
    record_id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    birth_date: Option<String>,
    email_key: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
}

impl From<RecordBefore> for MatchRecord {
    fn from(r: RecordBefore) -> Self {
        MatchRecord {
            id: r.record_id,
            first_name: r.first_name,
            last_name: r.last_name,
            birth_date: r.birth_date,
            email_key: r.email_key,
            phones: [r.phone, r.mobile].into_iter().flatten().collect(),
            ..Default::default()
        }
        .prepare()
    }
}

/// All records and the source ids by name, for the whole-table commands.
pub(super) fn load_all(function: &'static str) -> (Vec<MatchRecord>, HashMap<String, i32>) {
    Spi::connect(|client| {
        (
            load_records(client, "", vec![], function),
            source_ids(client),
        )
    })
}

pub(super) fn source_ids(client: &SpiClient<'_>) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    let table = client
        .select("SELECT name, source_id FROM unify.sources", None, &[])
        .unwrap_or_else(|e| spi_failed(e, "source_ids"));
    for row in table {
        if let (Ok(Some(name)), Ok(Some(id))) = (row.get::<String>(1), row.get::<i32>(2)) {
            out.insert(name, id);
        }
    }
    out
}
