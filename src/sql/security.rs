//! Who runs what (the security model in README.md): SQL a user wrote (the field mappings of
//! sources and order tables) runs as the role that registered it, inside a security-restricted
//! operation, never as the superuser that runs the workers or the extension's own functions.
//! The switch is PostgreSQL's own, as REFRESH MATERIALIZED VIEW and VACUUM make it for the
//! table owner's index expressions: `SetUserIdAndSecContext` with
//! `SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION` (no SET ROLE back, no
//! temporary objects that outlive the statement), search_path pinned, and every setting the
//! user's code changes rolled back afterwards.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

use super::errors::raise;
use super::spi::{spi_failed, update_kept};

const SAFE_SEARCH_PATH: &std::ffi::CStr = c"pg_catalog, pg_temp";

/// The user id and security context in force when created; put back when dropped, also while
/// an error unwinds (a transaction abort would do it too, but a caught error must not leave the
/// rest of the function running as someone else).
struct UserContextGuard {
    user: pg_sys::Oid,
    context: i32,
    guc_nest_level: Option<i32>,
}

impl UserContextGuard {
    fn switch_to(role: pg_sys::Oid, restricted: bool) -> Self {
        let mut user = pg_sys::Oid::INVALID;
        let mut context = 0;
        // SAFETY: plain reads and writes of the backend's user id state, on the main thread.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        }
        let mut guard = UserContextGuard {
            user,
            context,
            guc_nest_level: None,
        };
        let mut new_context = context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
        if restricted {
            new_context |= pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
            // SAFETY: as PostgreSQL's maintenance commands do: a GUC nest level that
            // AtEOXact_GUC(false, level) unwinds, and a pinned search_path within it.
            unsafe {
                let level = pg_sys::NewGUCNestLevel();
                guard.guc_nest_level = Some(level);
                pg_sys::set_config_option(
                    c"search_path".as_ptr(),
                    SAFE_SEARCH_PATH.as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                    true,
                    0,
                    false,
                );
            }
        }
        // SAFETY: see above.
        unsafe {
            pg_sys::SetUserIdAndSecContext(role, new_context);
        }
        guard
    }
}

impl Drop for UserContextGuard {
    fn drop(&mut self) {
        // SAFETY: restores what switch_to read; undoes every setting changed meanwhile.
        unsafe {
            pg_sys::SetUserIdAndSecContext(self.user, self.context);
            if let Some(level) = self.guc_nest_level {
                pg_sys::AtEOXact_GUC(false, level);
            }
        }
    }
}

fn role_exists(role: pg_sys::Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) $1)",
        &[role.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn extension_owner() -> pg_sys::Oid {
    Spi::get_one::<pg_sys::Oid>(
        "SELECT e.extowner FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'customer_unify'",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "customer_unify is not installed in this database".into(),
            None,
            "CREATE EXTENSION customer_unify;",
            "_register_source",
        )
    })
}

/// Runs `statement` (with `$1` the text[] `keys`, NULL when it has none) as `role` in a
/// security-restricted operation with search_path = pg_catalog, pg_temp, through a kept plan.
/// Returns the rows it processed. Errors keep their SQLSTATE, message, detail and hint.
/// Internal: only the extension's own SECURITY DEFINER functions call it, with statements they
/// built from a registered mapping (its EXECUTE is revoked from everyone else).
#[pg_extern(volatile)]
fn _run_as(role: pg_sys::Oid, statement: &str, keys: Option<Vec<String>>) -> i64 {
    const F: &str = "_run_as";
    if !role_exists(role) {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("the role (oid {}) that registered this mapping no longer exists", role.to_u32()),
            None,
            "Register the source or order table again as an existing role (unify.remove_source / unify.add_source).",
            F,
        );
    }
    let _as_role = UserContextGuard::switch_to(role, true);
    Spi::connect_mut(|client| {
        // A queue batch runs the same statement with other keys: its plan is kept. A full read
        // (a sync part, the orders of a date range) is planned once for its one run; kept, its
        // varying text would grow the backend's plan cache every day.
        match keys {
            Some(keys) => update_kept(client, statement, &vec![keys.into()]),
            None => client.update(statement, None, &[]),
        }
        .map(|t| t.len() as i64)
        .unwrap_or_else(|e| spi_failed(e, F))
    })
}

/// Registers a source for the role calling it (add_source validates first): the mapping will
/// run as that role. The catalog is written as the extension owner, since unify_admin has no
/// direct write on it.
#[pg_extern(volatile)]
fn _register_source(
    name: &str,
    relation: pg_sys::Oid,
    relation_name: &str,
    key_column: &str,
    fields: pgrx::JsonB,
    priority: i32,
    track_changes: bool,
) -> i32 {
    const F: &str = "add_source";
    let caller = run_as_for(relation, relation_name);
    check_may_register(caller, relation, relation_name, track_changes, F);
    let owner = extension_owner();
    let _as_owner = UserContextGuard::switch_to(owner, false);
    Spi::connect_mut(|client| {
        let id = client
            .update(
                "INSERT INTO unify.sources (name, relation, relation_name, key_column, fields, priority, track_changes, run_as)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING source_id",
                None,
                &[
                    name.into(),
                    relation.into(),
                    relation_name.into(),
                    key_column.into(),
                    fields.into(),
                    priority.into(),
                    track_changes.into(),
                    caller.into(),
                ],
            )
            .and_then(|t| t.first().get_one::<i32>())
            .unwrap_or_else(|e| spi_failed(e, F))
            .unwrap_or_else(|| spi_failed("no source id returned", F));
        if track_changes {
            client
                .update("SELECT unify._create_capture($1, true)", None, &[id.into()])
                .unwrap_or_else(|e| spi_failed(e, F));
        }
        id
    })
}

/// Registers an order table for the calling role, as _register_source does for a source.
#[pg_extern(volatile)]
fn _register_transactions(
    name: &str,
    relation: pg_sys::Oid,
    relation_name: &str,
    fields: pgrx::JsonB,
) -> i32 {
    const F: &str = "add_transactions";
    let caller = run_as_for(relation, relation_name);
    check_may_register(caller, relation, relation_name, false, F);
    let owner = extension_owner();
    let _as_owner = UserContextGuard::switch_to(owner, false);
    Spi::connect_mut(|client| {
        client
            .update(
                "INSERT INTO unify.transaction_sources (name, relation, relation_name, fields, run_as)
                 VALUES ($1, $2, $3, $4, $5) RETURNING transaction_source_id",
                None,
                &[name.into(), relation.into(), relation_name.into(), fields.into(), caller.into()],
            )
            .and_then(|t| t.first().get_one::<i32>())
            .unwrap_or_else(|e| spi_failed(e, F))
            .unwrap_or_else(|| spi_failed("no id returned", F))
    })
}

/// Registers an event table for the calling role (add_events validates first), as
/// _register_source does for a source, and puts the capture triggers on it.
#[pg_extern(volatile)]
fn _register_events(
    name: &str,
    relation: pg_sys::Oid,
    relation_name: &str,
    fields: pgrx::JsonB,
) -> i32 {
    const F: &str = "add_events";
    let caller = run_as_for(relation, relation_name);
    check_may_register(caller, relation, relation_name, true, F);
    let owner = extension_owner();
    let _as_owner = UserContextGuard::switch_to(owner, false);
    Spi::connect_mut(|client| {
        let id = client
            .update(
                "INSERT INTO unify.event_sources (name, relation, relation_name, fields, run_as)
                 VALUES ($1, $2, $3, $4, $5) RETURNING event_source_id",
                None,
                &[
                    name.into(),
                    relation.into(),
                    relation_name.into(),
                    fields.into(),
                    caller.into(),
                ],
            )
            .and_then(|t| t.first().get_one::<i32>())
            .unwrap_or_else(|e| spi_failed(e, F))
            .unwrap_or_else(|| spi_failed("no id returned", F));
        client
            .update("SELECT unify._create_event_capture($1)", None, &[id.into()])
            .unwrap_or_else(|e| spi_failed(e, F));
        id
    })
}

/// Whose privileges a mapping over `relation` runs with: the calling role; but a superuser
/// registering a table another role owns has its mapping run as that owner, as PostgreSQL runs
/// VACUUM and REFRESH MATERIALIZED VIEW as the owner: a superuser reading a table runs code its
/// owner controls (casts and functions of the owner's column types), which must not run as
/// superuser. The superuser's mapping loses nothing it needs: the owner can read its table.
fn run_as_for(relation: pg_sys::Oid, relation_name: &str) -> pg_sys::Oid {
    let caller = unsafe { pg_sys::GetUserId() };
    let owner = Spi::get_two_with_args::<pg_sys::Oid, String>(
        "SELECT c.relowner, c.relowner::pg_catalog.regrole::pg_catalog.text FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_roles caller ON caller.oid OPERATOR(pg_catalog.=) $1
           JOIN pg_catalog.pg_roles owner ON owner.oid OPERATOR(pg_catalog.=) c.relowner
          WHERE c.oid OPERATOR(pg_catalog.=) $2 AND caller.rolsuper AND NOT owner.rolsuper",
        &[caller.into(), relation.into()],
    )
    .ok();
    match owner {
        Some((Some(owner), Some(name))) => {
            pgrx::notice!("{relation_name} belongs to {name}, who is not a superuser: its mapping will run as {name}");
            owner
        }
        _ => caller,
    }
}

/// The registering role must be able to read the table (its mapping runs as that role) and,
/// for change capture, to put a trigger on it.
fn check_may_register(
    caller: pg_sys::Oid,
    relation: pg_sys::Oid,
    relation_name: &str,
    trigger: bool,
    f: &'static str,
) {
    let (select, trigger_ok) = Spi::get_two_with_args::<bool, bool>(
        "SELECT pg_catalog.has_table_privilege($1, $2, 'SELECT'), pg_catalog.has_table_privilege($1, $2, 'TRIGGER')",
        &[caller.into(), relation.into()],
    )
    .unwrap_or_else(|e| spi_failed(e, f));
    if select != Some(true) {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to register {relation_name}: you cannot read it"),
            Some("The mapping runs with the privileges of the role that registers it.".into()),
            "Register it as a role with SELECT on the table, or GRANT SELECT on it to your role.",
            f,
        );
    }
    let is_super = unsafe { pg_sys::superuser() };
    if trigger && trigger_ok != Some(true) && !is_super {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to track changes of {relation_name}: you may not create triggers on it"),
            Some("Change capture puts a trigger on the table.".into()),
            "GRANT TRIGGER on the table to your role, register it as its owner, or pass track_changes => false.",
            f,
        );
    }
}

/// HMAC-SHA-256 of an erased source key (see crate::privacy::key_hash). Internal.
#[pg_extern(immutable, strict, parallel_safe)]
fn _key_hash(secret: &[u8], key: &str) -> Vec<u8> {
    crate::privacy::key_hash(secret, key)
}

/// `doc` with every string containing one of `values` (case-insensitive, 3 characters or
/// more) replaced by null: an erased person's values out of the documents the extension keeps.
#[pg_extern(immutable, strict, parallel_safe)]
fn _scrub_json(doc: pgrx::JsonB, values: Vec<Option<String>>) -> pgrx::JsonB {
    let values: Vec<String> = values.into_iter().flatten().collect();
    pgrx::JsonB(crate::privacy::scrub(&doc.0, &values))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// How a mapped expression is staged (the statement `_run_as` runs): a cast to text, or the
    /// field's staging function; every canonical field has one or the other.
    #[pg_test]
    fn every_canonical_field_is_staged_by_a_cast_or_its_function() {
        let staged = Spi::get_one::<String>(
            "SELECT string_agg(unify._staged_expression(f, 'x'), ' ' ORDER BY f)
             FROM unnest(ARRAY['full_name', 'birth_date', 'consent_post', 'updated_at']) f",
        )
        .unwrap();
        assert_eq!(
            staged.as_deref(),
            Some("unify._date_text(x) unify.parse_flag(x) (x)::text unify._timestamptz(x)")
        );
        let fields = Spi::get_one::<i64>(
            "SELECT count(*) FROM unnest(unify.canonical_fields()) f
             WHERE unify._staged_expression(f, 'x') IS NULL",
        )
        .unwrap();
        assert_eq!(fields, Some(0));
    }
}
