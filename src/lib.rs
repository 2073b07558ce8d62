//! customer_unify: a customer data platform's core inside PostgreSQL.
//!
//! The logic lives in plain Rust modules without pgrx types (`normalize`, `compare`), unit-tested
//! with `cargo test`; `sql` is the thin `#[pg_extern]` layer over them.

::pgrx::pg_module_magic!(name, version);

pub mod audience;
mod budget;
pub mod cluster;
pub mod compare;
#[cfg(test)]
mod fuzz;
pub mod interrupt;
pub mod jsonb_object;
pub mod memo;
pub mod model;
pub mod normalize;
pub mod parallel;
pub mod privacy;
pub mod recommend;
pub mod segment;
mod sql;
pub mod stopwatch;
mod worker;

/// Installs the interrupt hook of the pure modules, registers the GUCs and, when preloaded, the
/// background workers.
#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Errors reach users without a Rust backtrace in their DETAIL (pgrx attaches one when
    // backtraces are enabled in the server's environment); the log keeps the message.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    sql::install_interrupt_hook();
    budget::init();
    worker::init();
}

/// Draws for tests, each below the bound it is given: xorshift64 from `seed` (its lowest bit set:
/// the state must not be 0), the same sequence on every run.
#[cfg(test)]
pub(crate) fn test_draws(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed | 1;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
