//! Name frequencies of the model in use (the term-frequency adjustment), and a memo of them
//! per model version and backend.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::spi::SpiClient;

use super::super::spi::{fetch_all, spi_failed};

type Frequencies = (HashMap<String, f64>, HashMap<String, f64>);
/// A model version: its number and the xmin of its unify.model row.
type ModelVersionKey = (i32, String);

thread_local! {
    /// The name frequencies of the model in use, by (version, xmin of its unify.model row).
    /// A queue batch asks for those of some 10,000 names, most of the table, every time; a
    /// version's frequencies are written with its row and never change, and a version number
    /// is not reused (identity), so the ones read once stay right for the life of the backend.
    static FREQUENCY_MEMO: RefCell<Option<(ModelVersionKey, Rc<Frequencies>)>> =
        const { RefCell::new(None) };
}

/// [`load_frequencies`] of all names, read once per model version and backend.
pub(super) fn model_frequencies(client: &SpiClient<'_>, function: &'static str) -> Rc<Frequencies> {
    let newest = client
        .select(
            "SELECT m.version, m.xmin::text FROM unify.model m ORDER BY m.version DESC LIMIT 1",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e, function));
    let key = if newest.is_empty() {
        None
    } else {
        let row = newest.first();
        Some((
            row.get::<i32>(1)
                .unwrap_or_else(|e| spi_failed(e, function))
                .unwrap_or_default(),
            row.get::<String>(2)
                .unwrap_or_else(|e| spi_failed(e, function))
                .unwrap_or_default(),
        ))
    };
    // The shipped default model (no version stored) adjusts nothing for frequency.
    let Some(key) = key else {
        return Rc::new((HashMap::new(), HashMap::new()));
    };
    if let Some(kept) = FREQUENCY_MEMO.with(|m| {
        m.borrow()
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, f)| f.clone())
    }) {
        return kept;
    }
    let loaded = Rc::new(load_frequencies(client, None, function));
    FREQUENCY_MEMO.with(|m| *m.borrow_mut() = Some((key, loaded.clone())));
    loaded
}

/// The name frequencies of the model in use (unify.name_frequencies, written by train() from
/// the records it learned on): all of them, or those of `names` (first names, last names). A
/// model without them (the shipped default) adjusts nothing for frequency.
pub(super) fn load_frequencies(
    client: &SpiClient<'_>,
    names: Option<Vec<String>>,
    function: &'static str,
) -> Frequencies {
    let base = "SELECT f.field = 'first_name', f.value, f.frequency FROM unify.name_frequencies f
                WHERE f.model_version = (SELECT max(m.version) FROM unify.model m)";
    // A name's frequency in both fields: the scorer weighs a surname held as a first name
    // ("Schneider Johanna") by the larger of the two.
    let rows: Vec<(bool, String, f64)> = match names {
        None => fetch_all(client, base, vec![], function, frequency_row),
        Some(names) => fetch_all(
            client,
            // Both fields named so that the primary key's (field, value) columns are probed.
            &format!(
                "{base} AND f.field = ANY ('{{first_name,last_name}}') AND f.value = ANY ($1)"
            ),
            vec![names.into()],
            function,
            frequency_row,
        ),
    };
    let (mut first, mut last) = (HashMap::new(), HashMap::new());
    for (is_first, value, frequency) in rows {
        if is_first {
            first.insert(value, frequency);
        } else {
            last.insert(value, frequency);
        }
    }
    (first, last)
}

fn frequency_row(r: &pgrx::spi::SpiHeapTupleData) -> (bool, String, f64) {
    (
        r.get::<bool>(1).ok().flatten().unwrap_or_default(),
        r.get::<String>(2).ok().flatten().unwrap_or_default(),
        r.get::<f64>(3).ok().flatten().unwrap_or_default(),
    )
}
