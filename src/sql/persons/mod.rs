//! The SQL layer over `crate::cluster`, by stage: clustering records into persons with stable
//! ids, golden records by survivorship, households. Reads records, pairs and overrides through
//! SPI, works in Rust, and writes back with a few set-based statements.

use pgrx::spi::{SpiClient, SpiHeapTupleData};

use super::spi::{insert_arrays, select_kept, spi_failed, Cursor};
use crate::cluster::components::ComponentLabels;

pub(super) mod cluster;
pub(super) mod golden;
pub(super) mod households;

/// The one bigint of `query` (a count: never below 0), run by a resolve.
pub(super) fn count(client: &mut SpiClient<'_>, query: &str) -> u64 {
    client
        .update(query, None, &[])
        .and_then(|t| t.first().get_one::<i64>())
        .unwrap_or_else(|e| spi_failed(e, "resolve"))
        .unwrap_or_default()
        .max(0) as u64
}

/// Rows per fetch and per written chunk of a resolve's clustering and of the new ids it draws,
/// within customer_unify.batch_memory (a few hundred bytes a row in flight): 4 a kB, 100 to
/// 200,000.
pub(super) fn fetch_batch() -> usize {
    (crate::budget::kb() as usize * 4).clamp(100, 200_000)
}

/// `n` new ids from `sequence` as one array (`with_fresh_ids` draws more a fetch at a time).
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

/// `f` given a source of `n` new ids from `sequence`, in order: up to a fetch as one array
/// (`fresh_ids`), more drawn a fetch at a time, no list of them held (at 10M
/// records 50 MB, and as much again as PostgreSQL's array).
pub(super) fn with_fresh_ids<R>(
    client: &mut SpiClient<'_>,
    sequence: &str,
    n: usize,
    function: &'static str,
    f: impl FnOnce(&mut dyn FnMut() -> i64) -> R,
) -> R {
    let batch = fetch_batch();
    if n <= batch {
        // A few (every queue batch): one array from a kept plan.
        let fresh = fresh_ids(client, sequence, n, function);
        let mut fresh = fresh.into_iter();
        return f(&mut || fresh.next().expect("one new id per cluster that needs one"));
    }
    let mut drawn = Stream::open(
        client,
        "unify_fresh_ids",
        // The series in a subquery's target list streams (in FROM it would be stored first).
        &format!("SELECT nextval('{sequence}') FROM (SELECT generate_series(1, {n}) OFFSET 0) s"),
        batch,
        function,
        |r| r.get::<i64>(1).ok().flatten().unwrap_or_default(),
    );
    let mut left = n;
    let out = f(&mut || {
        left -= 1;
        drawn
            .pop(client)
            .expect("one new id per cluster that needs one")
    });
    assert_eq!(left, 0, "every new id drawn");
    drawn.close(client);
    out
}

/// A cursor read a row at a time (fetched `batch` at a time), with a look at the next row.
pub(super) struct Stream<T> {
    cursor: Cursor,
    rows: std::collections::VecDeque<T>,
    row: fn(&SpiHeapTupleData) -> T,
    done: bool,
}

impl<T> Stream<T> {
    pub(super) fn open(
        client: &mut SpiClient<'_>,
        name: &str,
        query: &str,
        batch: usize,
        function: &'static str,
        row: fn(&SpiHeapTupleData) -> T,
    ) -> Self {
        Self {
            cursor: Cursor::open(client, name, query, batch, function),
            rows: Default::default(),
            row,
            done: false,
        }
    }

    pub(super) fn peek(&mut self, client: &mut SpiClient<'_>) -> Option<&T> {
        if self.rows.is_empty() && !self.done {
            let rows = self.cursor.next(client, self.row);
            self.done = rows.is_empty();
            self.rows.extend(rows);
        }
        self.rows.front()
    }

    /// The next row, fetched when none is buffered (after a `peek`, the row it showed).
    pub(super) fn pop(&mut self, client: &mut SpiClient<'_>) -> Option<T> {
        self.peek(client);
        self.rows.pop_front()
    }

    pub(super) fn close(self, client: &mut SpiClient<'_>) {
        self.cursor.close(client);
    }
}

/// Fills `table` (an empty table of two bigint columns: node, label) with every node of
/// `nodes` (a query of distinct ids in ascending order, at most `bound` of them) labelled with
/// the smallest id of its component over the edges of `edges` (a query of id pairs): in one
/// pass over the edges with a union-find in Rust (`ComponentLabels`, 12 bytes a node), instead
/// of passing labels along the edges in SQL until none changes (a pass per link of the longest
/// chain, each reading every edge). Returns false, writing nothing, when `bound` nodes would
/// take more than half of customer_unify.batch_memory (or the setting
/// `unify_internal.component_labels` is `sql`: the tests' way to the other path): the caller
/// passes labels in SQL then.
pub(super) fn label_components(
    client: &mut SpiClient<'_>,
    nodes: &str,
    bound: u64,
    edges: &str,
    table: &str,
    function: &'static str,
) -> bool {
    if bound.saturating_mul(ComponentLabels::NODE_BYTES) > crate::budget::kb() * 1024 / 2 {
        return false;
    }
    let in_sql = client
        .select(
            "SELECT pg_catalog.current_setting('unify_internal.component_labels', true) = 'sql'",
            None,
            &[],
        )
        .and_then(|t| t.first().get_one::<bool>())
        .unwrap_or_else(|e| spi_failed(e, function))
        .unwrap_or(false);
    if in_sql {
        return false;
    }
    // Rows per fetch and per write: a few hundred kB in flight.
    let batch = 16_384;
    let mut components = ComponentLabels::with_capacity(bound as usize);
    let cursor = Cursor::open(client, "unify_component_nodes", nodes, batch, function);
    while !cursor
        .next(client, |r| {
            components.push_node(r.get::<i64>(1).ok().flatten().unwrap_or_default())
        })
        .is_empty()
    {}
    cursor.close(client);
    let cursor = Cursor::open(client, "unify_component_edges", edges, batch, function);
    while !cursor
        .next(client, |r| {
            components.link(
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<i64>(2).ok().flatten().unwrap_or_default(),
            )
        })
        .is_empty()
    {}
    cursor.close(client);
    let mut labels = components.labels().peekable();
    while labels.peek().is_some() {
        crate::interrupt::check();
        let (ids, label): (Vec<i64>, Vec<i64>) = labels.by_ref().take(batch).unzip();
        insert_arrays(
            client,
            table,
            &["bigint[]", "bigint[]"],
            || vec![ids.into(), label.into()],
            function,
        );
    }
    true
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::{fetch_batch, with_fresh_ids};

    /// The one bigint `query` gives (the tests' sequence reads).
    pub(in crate::sql::persons) fn bigint(
        client: &mut pgrx::spi::SpiClient<'_>,
        query: &str,
    ) -> i64 {
        client
            .update(query, None, &[])
            .unwrap()
            .first()
            .get_one::<i64>()
            .unwrap()
            .unwrap()
    }

    /// New ids drawn a fetch at a time (more than a fetch needed) are the ids one array gives
    /// (a fetch or fewer), in the same order, each drawn once, the sequence left after them.
    #[pg_test]
    fn new_ids_drawn_a_fetch_at_a_time_are_those_of_one_array() {
        Spi::run("SET LOCAL customer_unify.batch_memory = '64kB'").unwrap();
        assert_eq!(fetch_batch(), 256);
        let n = 600;
        let (drawn, in_arrays, last) = Spi::connect_mut(|client| {
            let start = bigint(client, "SELECT nextval('unify.person_id_seq')");
            let drawn: Vec<i64> =
                with_fresh_ids(client, "unify.person_id_seq", n, "test", |next| {
                    (0..n).map(|_| next()).collect()
                });
            client
                .update(
                    "SELECT setval('unify.person_id_seq', $1)",
                    None,
                    &[start.into()],
                )
                .unwrap();
            let mut in_arrays = Vec::new();
            for _ in 0..6 {
                in_arrays.extend(with_fresh_ids(
                    client,
                    "unify.person_id_seq",
                    n / 6,
                    "test",
                    |next| (0..n / 6).map(|_| next()).collect::<Vec<i64>>(),
                ));
            }
            let last = bigint(client, "SELECT last_value FROM unify.person_id_seq");
            (drawn, in_arrays, last)
        });
        assert_eq!(drawn, in_arrays);
        assert!(drawn.windows(2).all(|w| w[1] == w[0] + 1), "{drawn:?}");
        assert_eq!(last, *drawn.last().unwrap());
    }
}
