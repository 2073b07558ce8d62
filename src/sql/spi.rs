//! SPI helpers shared by the commands that read whole tables into Rust.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

use pgrx::pg_sys::PgOid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData, SpiResult, SpiTupleTable};
use pgrx::PgSqlErrorCode;

use super::errors::raise;

/// A kept plan's statement text and parameter types.
type PlanKey = (String, Vec<u32>);

thread_local! {
    /// Plans of the statements with parameters, prepared on first use and kept for the life of
    /// the backend: a queue batch runs the same few dozen statements every time, and planning
    /// them again was a fifth of a small batch. PostgreSQL's plan cache re-plans them when a
    /// table they use changes, and chooses between a generic and a per-call plan as it does for
    /// any prepared statement. Keyed by the text and the parameter types: only fixed texts
    /// belong here (values go in parameters), or the map would grow with every batch.
    static KEPT_PLANS: RefCell<HashMap<PlanKey, Rc<OwnedPreparedStatement>>> =
        RefCell::new(HashMap::new());
}

fn kept_plan(
    client: &SpiClient<'_>,
    query: &str,
    args: &Args<'_>,
    mutating: bool,
) -> SpiResult<Rc<OwnedPreparedStatement>> {
    let key = (
        query.to_string(),
        args.iter().map(|a| a.oid().to_u32()).collect::<Vec<_>>(),
    );
    if let Some(plan) = KEPT_PLANS.with(|k| k.borrow().get(&key).cloned()) {
        return Ok(plan);
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    let prepared = if mutating {
        client.prepare_mut(query, &types)?
    } else {
        client.prepare(query, &types)?
    };
    let plan = Rc::new(prepared.keep());
    KEPT_PLANS.with(|k| k.borrow_mut().insert(key, plan.clone()));
    Ok(plan)
}

/// A SELECT with parameters through its kept plan.
pub fn select_kept<'conn>(
    client: &SpiClient<'conn>,
    query: &str,
    args: &Args<'_>,
) -> SpiResult<SpiTupleTable<'conn>> {
    in_same_context(|| {
        let plan = kept_plan(client, query, args, false)?;
        client.select(&*plan, None, args)
    })
}

/// A writing statement with parameters through its kept plan.
pub fn update_kept<'conn>(
    client: &mut SpiClient<'conn>,
    query: &str,
    args: &Args<'_>,
) -> SpiResult<SpiTupleTable<'conn>> {
    in_same_context(|| {
        let plan = kept_plan(client, query, args, true)?;
        client.update(&*plan, None, args)
    })
}

/// Runs the SPI statement `f` and makes the memory context current before it current again.
/// SPI leaves its connection's context ("SPI Proc") current after every statement
/// (`_SPI_end_call`), so whatever a caller allocated after a statement inside
/// [`in_own_context`] went there instead and stayed until the connection ended: a batch's id
/// array after `with_generic_plan`'s statements, 80 MB over a streamed train at 2M records.
pub(crate) fn in_same_context<R>(f: impl FnOnce() -> R) -> R {
    /// Switches back also when `f` unwinds from an error.
    struct Restore(pg_sys::MemoryContext);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: the context was current before `f` and outlives this call: it is the
            // caller's, deleted only after the caller's scope ends.
            unsafe {
                pg_sys::MemoryContextSwitchTo(self.0);
            }
        }
    }
    // SAFETY: reading the current context pointer.
    let _restore = Restore(unsafe { pg_sys::CurrentMemoryContext });
    f()
}

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

/// Runs `query`, a statement unify._apply builds once per source (and part of a sync), with
/// `$1` the source id and `$2` the changed keys (NULL for a sync), through a kept plan:
/// PL/pgSQL's EXECUTE would plan it again on every queue batch. Returns the first row's columns
/// as bigints.
#[pg_extern(volatile)]
fn _run_kept(query: &str, source_id: i32, keys: Option<Vec<String>>) -> Vec<i64> {
    const F: &str = "_apply";
    Spi::connect_mut(|client| {
        let table = update_kept(client, query, &vec![source_id.into(), keys.into()])
            .unwrap_or_else(|e| spi_failed(e, F));
        if table.is_empty() {
            return Vec::new();
        }
        let row = table.first();
        let columns = row.columns().unwrap_or_else(|e| spi_failed(e, F));
        (1..=columns)
            .map(|i| {
                row.get::<i64>(i)
                    .unwrap_or_else(|e| spi_failed(e, F))
                    .unwrap_or(0)
            })
            .collect()
    })
}

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
    let mut out = Vec::new();
    each_result(client, query, args, function, |table| {
        out.extend(table.map(|r| row(&r)))
    });
    out
}

/// `fetch_all` with each row taken apart once (`Deformed`): for wide whole-table reads.
pub(crate) fn fetch_all_deformed<T>(
    client: &SpiClient<'_>,
    query: &str,
    args: Args<'_>,
    function: &'static str,
    mut row: impl FnMut(&Deformed) -> T,
) -> Vec<T> {
    let mut out = Vec::new();
    each_result(client, query, args, function, |_| {
        out.extend(deformed_rows(function, &mut row))
    });
    out
}

/// Runs `query` as [`fetch_all`] describes (with parameters in one go, without through a cursor
/// 20,000 rows at a time) and hands each result to `read` inside a memory context of its own,
/// the result freed after: read into owned values, or every batch's tuples would stay until the
/// connection ends (a million records' worth in a whole-table read).
fn each_result(
    client: &SpiClient<'_>,
    query: &str,
    args: Args<'_>,
    function: &'static str,
    mut read: impl FnMut(SpiTupleTable<'_>),
) {
    if !args.is_empty() {
        let table = select_kept(client, query, &args).unwrap_or_else(|e| spi_failed(e, function));
        in_own_context(|| read(table));
        free_last_result();
        return;
    }
    let mut cursor = in_same_context(|| client.try_open_cursor(query, &args))
        .unwrap_or_else(|e| spi_failed(e, function));
    loop {
        let table =
            in_same_context(|| cursor.fetch(20_000)).unwrap_or_else(|e| spi_failed(e, function));
        if table.is_empty() {
            break;
        }
        in_own_context(|| read(table));
        free_last_result();
    }
}

/// Rows of an SQL cursor, fetched `batch` at a time on the caller's connection (which stays
/// free for writing between fetches, unlike an SPI cursor that borrows it). The cursor lives
/// until it is closed or the transaction ends, so later connections of the same transaction
/// may fetch from it too.
pub(crate) struct Cursor {
    name: String,
    batch: usize,
    function: &'static str,
}

impl Cursor {
    pub(crate) fn open(
        client: &mut SpiClient<'_>,
        name: impl Into<String>,
        query: &str,
        batch: usize,
        function: &'static str,
    ) -> Self {
        let name = name.into();
        in_same_context(|| {
            client.update(
                &format!("DECLARE {name} NO SCROLL CURSOR FOR {query}"),
                None,
                &[],
            )
        })
        .unwrap_or_else(|e| spi_failed(e, function));
        Self {
            name,
            batch,
            function,
        }
    }

    /// The next rows through `row`; empty at the end.
    pub(crate) fn next<T>(
        &self,
        client: &mut SpiClient<'_>,
        mut row: impl FnMut(&SpiHeapTupleData) -> T,
    ) -> Vec<T> {
        let table = in_same_context(|| {
            client.update(
                &format!("FETCH FORWARD {} FROM {}", self.batch, self.name),
                None,
                &[],
            )
        })
        .unwrap_or_else(|e| spi_failed(e, self.function));
        let rows = in_own_context(|| table.map(|r| row(&r)).collect());
        free_last_result();
        rows
    }

    /// The next rows, each taken apart once (`Deformed`) and read by `row`; empty at the end.
    pub(crate) fn next_deformed<T>(
        &self,
        client: &mut SpiClient<'_>,
        row: impl FnMut(&Deformed) -> T,
    ) -> Vec<T> {
        in_same_context(|| {
            client.update(
                &format!("FETCH FORWARD {} FROM {}", self.batch, self.name),
                None,
                &[],
            )
        })
        .unwrap_or_else(|e| spi_failed(e, self.function));
        let rows = in_own_context(|| deformed_rows(self.function, row));
        free_last_result();
        rows
    }

    pub(crate) fn close(self, client: &mut SpiClient<'_>) {
        in_same_context(|| client.update(&format!("CLOSE {}", self.name), None, &[]))
            .unwrap_or_else(|e| spi_failed(e, self.function));
    }
}

/// Runs `f` with the PostgreSQL memory it allocates (values read from rows, the datums of a
/// statement's arguments) in a context of its own, deleted when `f` returns. Without it those
/// allocations land in the SPI connection's context and stay until the connection ends: a
/// whole-table read or write would hold all of them at once.
///
/// Two levels, because pgrx copies a value read from a row into the *parent* of the current
/// context (`SpiHeapTupleDataEntry::value`): with one level every array and text read would
/// still go to the connection's context (half a megabyte per fetch of block members, gigabytes
/// over a streamed score_pairs at 5M records).
pub(crate) fn in_own_context<R>(f: impl FnOnce() -> R) -> R {
    /// Deletes the contexts and switches back, also when `f` unwinds from an error.
    struct Scope {
        previous: pg_sys::MemoryContext,
        outer: pg_sys::MemoryContext,
    }
    impl Drop for Scope {
        fn drop(&mut self) {
            // SAFETY: `outer` was made by this scope and nothing outside `f` points into it;
            // deleting it deletes the inner context too.
            unsafe {
                pg_sys::MemoryContextSwitchTo(self.previous);
                pg_sys::MemoryContextDelete(self.outer);
            }
        }
    }
    // SAFETY: plain context creation under the current one; the names are static strings, so
    // nothing is allocated for them per call.
    let scope = unsafe {
        let outer = new_context(pg_sys::CurrentMemoryContext, c"customer_unify batch");
        let inner = new_context(outer, c"customer_unify values");
        Scope {
            previous: pg_sys::MemoryContextSwitchTo(inner),
            outer,
        }
    };
    let out = f();
    drop(scope);
    out
}

/// A memory context under `parent` with PostgreSQL's default sizes.
unsafe fn new_context(parent: pg_sys::MemoryContext, name: &'static CStr) -> pg_sys::MemoryContext {
    unsafe {
        pg_sys::AllocSetContextCreateExtended(
            parent,
            name.as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        )
    }
}

/// Runs the writing `statement` with the arguments `args` makes, their datums made inside a
/// context of their own (see [`in_own_context`]) and freed after it, with its result. pgrx
/// makes a datum when the value is converted (`vec.into()`): arguments made before this call
/// stay in the SPI connection's context until it ends (some 300 MB over a pass of chunked
/// inserts at 1M records; every batch of a Citus run's members).
pub(crate) fn update_with<'a>(
    client: &mut SpiClient<'_>,
    statement: &str,
    args: impl FnOnce() -> Args<'a>,
    function: &'static str,
) {
    in_own_context(|| {
        client
            .update(statement, None, &args())
            .unwrap_or_else(|e| spi_failed(e, function));
    });
    free_last_result();
}

/// Appends one row per element of the arrays that `arrays` makes to `into` (a table, with its
/// column list where given), `types` their SQL types in order:
/// `INSERT INTO into SELECT * FROM unnest($1::type, ...)`, through [`update_with`].
pub(crate) fn insert_arrays<'a>(
    client: &mut SpiClient<'_>,
    into: &str,
    types: &[&str],
    arrays: impl FnOnce() -> Args<'a>,
    function: &'static str,
) {
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", i + 1))
        .collect();
    let statement = format!(
        "INSERT INTO {into} SELECT * FROM unnest({})",
        params.join(", ")
    );
    update_with(client, &statement, arrays, function);
}

/// Frees the rows of the last SPI statement or fetch once they have been read into owned
/// values. SPI keeps every result until `SPI_finish` otherwise, so a loop of fetches would hold
/// all it ever read.
pub(crate) fn free_last_result() {
    // SAFETY: SPI_tuptable is the result of the last statement on this connection; the callers
    // read its rows into owned values and hold no reference into it.
    unsafe {
        if !pg_sys::SPI_tuptable.is_null() {
            pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable);
            pg_sys::SPI_tuptable = std::ptr::null_mut();
        }
    }
}

/// See unify._drop_indexes: the statements that rebuild what was dropped.
/// Drops those of the temporary `tables` that exist, in one statement: `DROP TABLE IF EXISTS`
/// would send the user a NOTICE for every one that does not (a streamed run's temp tables,
/// dropped before they are made).
pub(crate) fn drop_temp_tables(
    client: &mut SpiClient<'_>,
    tables: &[&str],
    function: &'static str,
) {
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let existing = client
        .select(
            "SELECT string_agg(pg_catalog.to_regclass(t.n)::text, ', ')
             FROM unnest($1::text[]) AS t (n) WHERE pg_catalog.to_regclass(t.n) IS NOT NULL",
            None,
            &[names.into()],
        )
        .and_then(|t| t.first().get_one::<String>())
        .unwrap_or_else(|e| spi_failed(e, function));
    if let Some(list) = existing {
        client
            .update(&format!("DROP TABLE {list}"), None, &[])
            .unwrap_or_else(|e| spi_failed(e, function));
    }
}

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

/// Runs the index builds `drop_indexes` returned, with maintenance_work_mem at half of
/// `customer_unify.batch_memory` (1MB to 2GB: `unify._index_build_memory(2)`, the bounds the
/// SQL steps' rebuilds use too), set back after: the step holds its own memory
/// meanwhile (households, kept plans, the records' context). With all of the budget a
/// streamed score_pairs at 10M records peaked at 1,255 MB within 1GB, its block_keys' index
/// sort on top of the rest. The SQL steps' bulk rebuilds (a first sync, the first fill of
/// unify.persons) hold nothing else and take all of it (unify._rebuild_indexes).
pub(crate) fn rebuild_indexes(
    client: &mut SpiClient<'_>,
    statements: Vec<String>,
    function: &'static str,
) {
    if statements.is_empty() {
        return;
    }
    let before = setting_changed(
        client,
        "SELECT current_setting('maintenance_work_mem'),
                set_config('maintenance_work_mem', unify._index_build_memory(2), true)",
        &[],
        function,
    );
    for statement in &statements {
        crate::interrupt::check();
        in_same_context(|| client.update(statement, None, &[]))
            .unwrap_or_else(|e| spi_failed(e, function));
    }
    set_back(client, "maintenance_work_mem", &before, function);
}

/// Sets `name` to `value` for the rest of the transaction (or until [`set_back`]), returning
/// what it was. A function's SET clause does not undo this: the caller sets it back (an error
/// ends the transaction, which does).
pub(crate) fn swap_setting(
    client: &mut SpiClient<'_>,
    name: &str,
    value: &str,
    function: &'static str,
) -> String {
    setting_changed(
        client,
        "SELECT current_setting($1), set_config($1, $2, true)",
        &[name.into(), value.into()],
        function,
    )
}

/// [`swap_setting`] of work_mem to a batch step's share of `customer_unify.batch_memory`
/// (`unify._batch_work_mem()`, which the SQL steps set the same way), for the Rust parts that
/// are also reached outside those steps.
pub(crate) fn swap_batch_work_mem(client: &mut SpiClient<'_>, function: &'static str) -> String {
    setting_changed(
        client,
        "SELECT current_setting('work_mem'), set_config('work_mem', unify._batch_work_mem(), true)",
        &[],
        function,
    )
}

/// Runs `query`, which reads a setting first and changes it, and returns what it was.
fn setting_changed(
    client: &mut SpiClient<'_>,
    query: &str,
    args: &[pgrx::datum::DatumWithOid<'_>],
    function: &'static str,
) -> String {
    in_same_context(|| {
        let before = client
            .update(query, None, args)
            .and_then(|t| t.first().get::<String>(1))
            .unwrap_or_else(|e| spi_failed(e, function))
            .unwrap_or_default();
        free_last_result();
        before
    })
}

/// Sets `name` back to `value`, what [`swap_setting`] or [`swap_batch_work_mem`] returned.
pub(crate) fn set_back(
    client: &mut SpiClient<'_>,
    name: &str,
    value: &str,
    function: &'static str,
) {
    in_same_context(|| {
        client
            .update(
                "SELECT set_config($1, $2, true)",
                None,
                &[name.into(), value.into()],
            )
            .unwrap_or_else(|e| spi_failed(e, function));
        free_last_result();
    });
}

/// A row of the last SPI result with all its columns taken apart at once (`heap_deform_tuple`):
/// pgrx's row reader finds every column from the tuple's start (`nocachegetattr`, quadratic in
/// the columns of a wide row with NULLs) and converts each value through a memory-context
/// switch; this walks the tuple once and reads text where it lies (detoasted only when
/// compressed or stored apart), for the whole-table reads of a resolve. Columns are 1-based, as
/// pgrx's, and of the type the accessor names (checked: else the statement "failed").
pub(crate) struct Deformed {
    tupdesc: pg_sys::TupleDesc,
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
    function: &'static str,
}

impl Deformed {
    /// The index of column `i` (1-based), whose type must be `oid`.
    fn column(&self, i: usize, oid: pg_sys::Oid) -> Option<usize> {
        // SAFETY: tupdesc is the result's descriptor, valid while its rows are read.
        let attrs = unsafe { (*self.tupdesc).attrs.as_slice(self.values.len()) };
        match attrs.get(i.wrapping_sub(1)) {
            Some(a) if a.atttypid == oid => (!self.nulls[i - 1]).then_some(i - 1),
            _ => spi_failed(
                format!("column {i} is not of type {}", oid.to_u32()),
                self.function,
            ),
        }
    }

    /// A text column's value, in place.
    pub(crate) fn text(&self, i: usize) -> Option<&str> {
        let i = self.column(i, pg_sys::TEXTOID)?;
        // SAFETY: a non-NULL text datum of the result; a short or plain value is read where it
        // lies (valid while the result is), others are detoasted into the current context.
        let bytes = unsafe {
            let mut text = self.values[i].cast_mut_ptr::<pg_sys::varlena>();
            if !(pgrx::varlena::varatt_is_4b_u(text)
                || (pgrx::varlena::varatt_is_1b(text) && !pgrx::varlena::varatt_is_1b_e(text)))
            {
                text = pg_sys::pg_detoast_datum_packed(text);
            }
            pgrx::varlena::varlena_to_byte_slice(text)
        };
        match std::str::from_utf8(bytes) {
            Ok(s) => Some(s),
            Err(_) => spi_failed("a text value is not valid UTF-8", self.function),
        }
    }

    pub(crate) fn i64(&self, i: usize) -> Option<i64> {
        self.column(i, pg_sys::INT8OID)
            .map(|i| self.values[i].value() as i64)
    }

    pub(crate) fn i32(&self, i: usize) -> Option<i32> {
        self.column(i, pg_sys::INT4OID)
            .map(|i| self.values[i].value() as i32)
    }

    pub(crate) fn bool(&self, i: usize) -> Option<bool> {
        self.column(i, pg_sys::BOOLOID)
            .map(|i| self.values[i].value() != 0)
    }
}

/// The rows of the last SPI statement or fetch, each taken apart once and turned into a value
/// by `row` (see `Deformed`). The caller frees the result after (`free_last_result`).
pub(crate) fn deformed_rows<T>(
    function: &'static str,
    mut row: impl FnMut(&Deformed) -> T,
) -> Vec<T> {
    // SAFETY: SPI_tuptable is the result of the last statement on this
    // connection, read before any other runs; each tuple is deformed with its own descriptor.
    unsafe {
        let table = pg_sys::SPI_tuptable;
        if table.is_null() {
            return Vec::new();
        }
        let tupdesc = (*table).tupdesc;
        let natts = (*tupdesc).natts as usize;
        let n = (*table).numvals as usize;
        let mut deformed = Deformed {
            tupdesc,
            values: vec![pg_sys::Datum::from(0); natts],
            nulls: vec![true; natts],
            function,
        };
        let tuples = std::slice::from_raw_parts((*table).vals, n);
        let mut out = Vec::with_capacity(n);
        for &tuple in tuples {
            pg_sys::heap_deform_tuple(
                tuple,
                tupdesc,
                deformed.values.as_mut_ptr(),
                deformed.nulls.as_mut_ptr(),
            );
            out.push(row(&deformed));
        }
        out
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::{
        deformed_rows, free_last_result, in_own_context, insert_arrays, rebuild_indexes,
        select_kept, set_back, swap_setting, Cursor,
    };

    /// The connection's own context after reading arrays and texts from a cursor in many
    /// fetches: it must not grow with the fetches (each fetch here reads about 80 kB of values;
    /// pgrx copies a value into the parent of the current context, which in_own_context owns).
    #[pg_test]
    fn reading_fetches_leaves_the_connections_memory_as_it_was() {
        Spi::connect_mut(|client| {
            let cursor = Cursor::open(
                client,
                "unify_test_values",
                "SELECT array_agg(g::bigint), string_agg(g::text, ',')
                 FROM generate_series(1, 400000) AS g GROUP BY g / 2000",
                2,
                "test",
            );
            // SAFETY: reading the current context's counters, nothing else.
            let used = || unsafe {
                pg_sys::MemoryContextMemAllocated(pg_sys::CurrentMemoryContext, false)
            };
            let _ = cursor.next(client, |row| row.get::<Vec<i64>>(1).unwrap());
            let before = used();
            let mut read = 0usize;
            loop {
                let rows = cursor.next(client, |row| {
                    let numbers = row.get::<Vec<i64>>(1).unwrap().unwrap_or_default();
                    let text = row.get::<String>(2).unwrap().unwrap_or_default();
                    numbers.len() + text.len()
                });
                if rows.is_empty() {
                    break;
                }
                read += rows.iter().sum::<usize>();
            }
            cursor.close(client);
            assert!(read > 2_000_000, "read {read}");
            let grown = used() - before;
            assert!(
                grown < 64 * 1024,
                "the connection's context grew by {grown} bytes"
            );
        })
    }

    /// What a batch allocates after its statements (a setting lowered and set back, a lookup by
    /// an array of ids, as a streamed run's batches do) goes to the batch's own context, not the
    /// connection's: SPI makes the connection's context current after every statement, which
    /// `in_same_context` undoes. 200 batches of an 80 kB array each would leave 16 MB there.
    #[pg_test]
    fn statements_inside_a_batch_leave_its_allocations_in_its_context() {
        Spi::connect_mut(|client| {
            // SAFETY: reading the current context's pointer and counters, nothing else.
            let connection = unsafe { pg_sys::CurrentMemoryContext };
            let used = || unsafe { pg_sys::MemoryContextMemAllocated(connection, true) };
            // The cause: a bare statement leaves the connection's context current.
            let switched = in_own_context(|| {
                let own = unsafe { pg_sys::CurrentMemoryContext };
                client.update("SELECT 1", None, &[]).unwrap();
                free_last_result();
                own != unsafe { pg_sys::CurrentMemoryContext }
            });
            assert!(
                switched,
                "SPI no longer switches contexts: in_same_context is moot"
            );
            let before = used();
            for _ in 0..200 {
                in_own_context(|| {
                    let was = swap_setting(client, "work_mem", "1MB", "test");
                    let ids: Vec<i64> = (0..10_000).collect();
                    let table = select_kept(
                        client,
                        "SELECT count(*) FROM unnest($1::bigint[])",
                        &vec![ids.into()],
                    )
                    .unwrap();
                    assert_eq!(table.first().get::<i64>(1).unwrap(), Some(10_000));
                    free_last_result();
                    let more: Vec<i64> = (0..10_000).collect();
                    let _datum: pgrx::datum::DatumWithOid = more.into();
                    set_back(client, "work_mem", &was, "test");
                });
            }
            let grown = used().saturating_sub(before);
            assert!(
                grown < 1024 * 1024,
                "the connection's context grew by {grown} bytes"
            );
        })
    }

    /// Rows written from arrays leave nothing in the connection's context: 200 inserts of two
    /// arrays of 10,000 values (some 80 kB of datums each) would leave 16 MB there if the
    /// arrays were made before the statement's own context (as the Citus member insert made
    /// them), and every row is written.
    #[pg_test]
    fn rows_written_from_arrays_leave_the_connections_memory_as_it_was() {
        Spi::connect_mut(|client| {
            client
                .update(
                    "CREATE TEMP TABLE unify_test_arrays (n bigint, t text)",
                    None,
                    &[],
                )
                .unwrap();
            // SAFETY: reading the current context's pointer and counters, nothing else.
            let connection = unsafe { pg_sys::CurrentMemoryContext };
            let used = || unsafe { pg_sys::MemoryContextMemAllocated(connection, true) };
            let before = used();
            for batch in 0..200i64 {
                let numbers: Vec<i64> = (0..10_000).map(|i| batch * 10_000 + i).collect();
                let texts: Vec<String> = numbers.iter().map(|n| format!("v{n}")).collect();
                insert_arrays(
                    client,
                    "unify_test_arrays (n, t)",
                    &["bigint[]", "text[]"],
                    || vec![numbers.into(), texts.into()],
                    "test",
                );
            }
            let grown = used().saturating_sub(before);
            assert!(
                grown < 1024 * 1024,
                "the connection's context grew by {grown} bytes"
            );
            let row = |client: &mut pgrx::spi::SpiClient<'_>, query: &str| {
                client
                    .select(query, None, &[])
                    .unwrap()
                    .first()
                    .get_two::<i64, i64>()
                    .unwrap()
            };
            assert_eq!(
                row(
                    client,
                    "SELECT count(*), count(DISTINCT n) FROM unify_test_arrays"
                ),
                (Some(2_000_000), Some(2_000_000))
            );
            assert_eq!(
                row(
                    client,
                    "SELECT sum(n)::bigint, count(*) FILTER (WHERE t = 'v' || n) FROM unify_test_arrays"
                ),
                (Some(1_999_999_000_000), Some(2_000_000))
            );
        })
    }

    /// A step's index builds run with maintenance_work_mem at half the budget, raised or
    /// lowered, at least 1MB, and the caller's value back after.
    #[pg_test]
    fn index_builds_take_half_the_budget_and_set_maintenance_work_mem_back() {
        Spi::connect_mut(|client| {
            let seen = |client: &mut pgrx::spi::SpiClient<'_>, budget: &str, before: &str| {
                client
                    .update(
                        &format!(
                            "SELECT set_config('customer_unify.batch_memory', '{budget}', true),
                                    set_config('maintenance_work_mem', '{before}', true)"
                        ),
                        None,
                        &[],
                    )
                    .unwrap();
                rebuild_indexes(
                    client,
                    vec!["SELECT set_config('unify_test.seen', current_setting('maintenance_work_mem'), true)".into()],
                    "test",
                );
                let row = client
                    .select(
                        "SELECT current_setting('unify_test.seen'), current_setting('maintenance_work_mem')",
                        None,
                        &[],
                    )
                    .unwrap()
                    .first()
                    .get_two::<String, String>()
                    .unwrap();
                (row.0.unwrap(), row.1.unwrap())
            };
            assert_eq!(
                seen(client, "64MB", "512MB"),
                ("32MB".into(), "512MB".into())
            );
            assert_eq!(seen(client, "1GB", "64MB"), ("512MB".into(), "64MB".into()));
            assert_eq!(seen(client, "64kB", "64MB"), ("1MB".into(), "64MB".into()));
        })
    }

    /// A row taken apart at once reads what pgrx's reader reads: NULLs, numbers, texts short,
    /// plain, compressed and stored apart (a table's toasted values), in any column order.
    #[pg_test]
    fn deformed_rows_read_as_pgrx_does() {
        Spi::run(
            "CREATE TEMP TABLE test_deformed (a bigint, b text, c int, d boolean, e text);
             ALTER TABLE test_deformed ALTER COLUMN e SET STORAGE EXTERNAL;
             INSERT INTO test_deformed VALUES
               (1, NULL, 7, true, 'kurz'),
               (-5, repeat('lang ', 4000), NULL, false, repeat('x', 5000)),
               (NULL, 'Müller', -3, NULL, NULL);",
        )
        .unwrap();
        let query = "SELECT a, b, c, d, e FROM test_deformed ORDER BY a NULLS LAST";
        type Row = (
            Option<i64>,
            Option<String>,
            Option<i32>,
            Option<bool>,
            Option<String>,
        );
        let (pgrx_rows, deformed): (Vec<Row>, Vec<Row>) = Spi::connect_mut(|client| {
            let pgrx_rows = client
                .select(query, None, &[])
                .unwrap()
                .map(|r| {
                    (
                        r.get::<i64>(1).unwrap(),
                        r.get::<String>(2).unwrap(),
                        r.get::<i32>(3).unwrap(),
                        r.get::<bool>(4).unwrap(),
                        r.get::<String>(5).unwrap(),
                    )
                })
                .collect();
            client.select(query, None, &[]).unwrap();
            let deformed = in_own_context(|| {
                deformed_rows("test", |r| {
                    (
                        r.i64(1),
                        r.text(2).map(str::to_string),
                        r.i32(3),
                        r.bool(4),
                        r.text(5).map(str::to_string),
                    )
                })
            });
            free_last_result();
            (pgrx_rows, deformed)
        });
        assert_eq!(deformed.len(), 3);
        assert_eq!(deformed, pgrx_rows);
        assert_eq!(deformed[0].1.as_deref().map(str::len), Some(20_000));
    }

    /// A column read as another type than its own is an error, not a wrong value.
    #[pg_test(error = "unify.test: a statement failed: column 1 is not of type 25")]
    fn deformed_rows_check_the_type() {
        Spi::connect_mut(|client| {
            client.select("SELECT 1::bigint", None, &[]).unwrap();
            deformed_rows("test", |r| r.text(1).map(str::to_string))
        });
    }
}
