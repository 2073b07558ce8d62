//! The SQL layer over `crate::cluster`, by stage: clustering records into persons with stable
//! ids, golden records by survivorship, households. Reads records, pairs and overrides through
//! SPI, works in Rust, and writes back with a few set-based statements.

use pgrx::spi::SpiClient;

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

/// `n` new ids from `sequence`.
pub(super) fn fresh_ids(
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
