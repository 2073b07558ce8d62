//! SPI helpers shared by the commands that read whole tables into Rust.

use pgrx::spi::{SpiClient, SpiHeapTupleData};
use pgrx::PgSqlErrorCode;

use super::errors::raise;

pub fn spi_failed(e: impl std::fmt::Display, function: &'static str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("unify.{function}: a statement failed: {e}"),
        None,
        "This is a bug; please report it with the statement that failed.",
        function,
    )
}

pub type Args<'a> = Vec<pgrx::datum::DatumWithOid<'a>>;

/// Rows of `query`, each turned into a value by `row`. A query without parameters reads a whole
/// table: it goes through a cursor in batches, so memory stays flat. A query with parameters
/// reads what they name (the records of a change, a few persons): it runs in one go, planned for
/// its whole result; a cursor would be planned for its first tenth (cursor_tuple_fraction) and
/// then prefer walking a primary key in order, reading the whole table for a few rows.
pub fn fetch_all<T>(
    client: &SpiClient<'_>,
    query: &str,
    args: Args<'_>,
    function: &'static str,
    mut row: impl FnMut(&SpiHeapTupleData) -> T,
) -> Vec<T> {
    if !args.is_empty() {
        let table = client
            .select(query, None, &args)
            .unwrap_or_else(|e| spi_failed(e, function));
        return table.map(|r| row(&r)).collect();
    }
    let mut cursor = client
        .try_open_cursor(query, &args)
        .unwrap_or_else(|e| spi_failed(e, function));
    let mut out = Vec::new();
    loop {
        let table = cursor
            .fetch(20_000)
            .unwrap_or_else(|e| spi_failed(e, function));
        if table.is_empty() {
            break;
        }
        for r in table {
            out.push(row(&r));
        }
    }
    out
}

/// See unify._drop_indexes: the statements that rebuild what was dropped.
pub(crate) fn drop_indexes(
    client: &mut SpiClient<'_>,
    table: &str,
    constraints: bool,
    function: &'static str,
) -> Vec<String> {
    client
        .update(
            "SELECT unify._drop_indexes($1::regclass, $2)",
            None,
            &[table.into(), constraints.into()],
        )
        .and_then(|t| t.first().get_one::<Vec<String>>())
        .unwrap_or_else(|e| spi_failed(e, function))
        .unwrap_or_default()
}

pub(crate) fn rebuild_indexes(
    client: &mut SpiClient<'_>,
    statements: Vec<String>,
    function: &'static str,
) {
    if !statements.is_empty() {
        client
            .update(
                "SELECT unify._rebuild_indexes($1)",
                None,
                &[statements.into()],
            )
            .unwrap_or_else(|e| spi_failed(e, function));
    }
}
