//! The SQL surface: thin wrappers that convert arguments, call the pure modules and map their
//! results to NULL or to errors with a SQLSTATE and a hint.

mod audience;
mod cleaners;
mod errors;
mod matching;
mod persons;
mod recommend;
mod security;
mod segments;
mod similarity;
mod spi;

/// Lets the pure modules' long loops stop on a cancel or `statement_timeout` (see
/// `crate::interrupt`): on the backend's thread PostgreSQL's own check, which raises the
/// error; on the threads of `crate::parallel` only a read of the flags the signal handlers set.
pub(crate) fn install_interrupt_hook() {
    fn check() {
        pgrx::check_for_interrupts!();
    }
    fn pending() -> bool {
        // Only the cancels that end the statement: InterruptPending alone is also set for
        // work ProcessInterrupts does and returns from (barriers, memory context logging).
        // SAFETY: plain sig_atomic_t globals the signal handlers write; a racy read of one is
        // what they are made for.
        unsafe {
            std::ptr::read_volatile(std::ptr::addr_of!(pgrx::pg_sys::QueryCancelPending)) != 0
                || std::ptr::read_volatile(std::ptr::addr_of!(pgrx::pg_sys::ProcDiePending)) != 0
        }
    }
    crate::interrupt::install(crate::interrupt::Hook { check, pending });
}

// Sources, records and change capture: catalog tables and set-based commands over the cleaners.
pgrx::extension_sql_file!(
    "sources.sql",
    name = "sources",
    requires = [
        "bootstrap_types",
        spi::_run_kept,
        security::_run_as,
        security::_key_hash
    ]
);

// Citus (issue 27): where a source table lives (local, distributed, reference) and add_source's
// check of a Citus source; no dependency on Citus (read only when the extension is present).
pgrx::extension_sql_file!("citus.sql", name = "citus", requires = ["sources"]);

// Matching: model versions, scored pairs, blocking figures, and the commands over the Rust model.
pgrx::extension_sql_file!(
    "matching.sql",
    name = "matching",
    requires = [
        "sources",
        matching::model::default_model,
        matching::model::validate_model,
        matching::train::_train,
        matching::train::_train_sessions,
        matching::score::_score_pairs,
        matching::explain::explain_match,
        matching::forget::_forget_records
    ]
);

// Persons: clusters with stable ids, golden records, households, stewardship and erasure.
pgrx::extension_sql_file!(
    "persons.sql",
    name = "persons",
    requires = [
        "matching",
        persons::cluster::_cluster,
        persons::golden::_golden_records,
        persons::households::_group_households,
        persons::households::_household_keys
    ]
);

// Real time: the change queue applied end to end, its figures and the worker in unify.status.
pgrx::extension_sql_file!(
    "realtime.sql",
    name = "realtime",
    requires = ["persons", "citus", matching::rescore::_rescore]
);

// Orders: the user's order tables registered in place and their exchange rates.
pgrx::extension_sql_file!("orders.sql", name = "orders", requires = ["realtime"]);

// The query over every registered order table, built as SQL text.
pgrx::extension_sql_file!(
    "orders_query.sql",
    name = "orders_query",
    requires = ["orders"]
);

// RFM segments with change events, the segment map and its runs.
pgrx::extension_sql_file!("rfm.sql", name = "rfm", requires = ["orders_query"]);

// BG/NBD / Pareto/NBD and Gamma-Gamma fits and per-person predictions.
pgrx::extension_sql_file!(
    "predictions.sql",
    name = "predictions",
    requires = [
        "rfm",
        segments::_fit_purchases,
        segments::_fit_spend,
        segments::_predict
    ]
);

// Behavioural events (issue 26): event tables registered in place and captured, identity
// stitching of anonymous ids, open and abandoned carts (cart_abandoned outbox events, emitted
// through unify._outbox_emit at run time). customer_360 reads them.
pgrx::extension_sql_file!("events.sql", name = "events", requires = ["predictions"]);

// Next best action (issue 26): the action map, each person's action, the churn-risk threshold
// (action_changed and churn_risk_crossed outbox events, emitted at run time).
pgrx::extension_sql_file!(
    "actions.sql",
    name = "actions",
    requires = ["predictions", "events"]
);

// Views for BI tools: customer_360 over all of it, segment_summary, analyst_persons.
pgrx::extension_sql_file!(
    "bi_views.sql",
    name = "bi_views",
    requires = [
        "predictions",
        "events",
        "actions",
        cleaners::letter_salutation
    ]
);

// Consented audiences for own channels and ad platforms, identifiers hashed per platform.
pgrx::extension_sql_file!(
    "audience.sql",
    name = "audience",
    requires = [
        "bi_views",
        cleaners::letter_salutation,
        cleaners::normalize_country,
        cleaners::normalize_postcode,
        audience::google_hash_email,
        audience::google_hash_phone,
        audience::google_hash_name,
        audience::meta_hash_email,
        audience::meta_hash_phone,
        audience::meta_hash_name,
        audience::meta_hash_zip,
        audience::meta_hash_country
    ]
);

// Next best product: products, what each person bought, the co-purchase model, recommendations.
pgrx::extension_sql_file!(
    "recommendations.sql",
    name = "recommendations",
    requires = ["bi_views", recommend::_product_neighbours]
);
// The durable outbox for activation (issue 26): events, consumers and their cursors, the one
// writer unify._outbox_emit that persons, rfm and realtime call.
pgrx::extension_sql_file!("outbox.sql", name = "outbox", requires = ["bi_views"]);

// Privileges of every object, granted in one place once all exist (README "Security model").
pgrx::extension_sql_file!("security.sql", name = "security", finalize);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).expect("query failed")
    }

    #[pg_test]
    fn every_cleaner_is_immutable_strict_parallel_safe() {
        // Cleaners and similarity functions are the C-language (Rust) functions of the schema.
        // letter_salutation takes NULL parts (an unknown salutation or name) on purpose;
        // identify is a STABLE lookup, not a cleaner.
        let offenders = text(
            "SELECT string_agg(p.proname, ', ') FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace
              JOIN pg_language l ON l.oid = p.prolang
             WHERE n.nspname = 'unify' AND l.lanname = 'c'
               AND p.proname NOT LIKE '\\_%' AND p.proname NOT IN ('explain_match', 'default_model', 'validate_model', 'letter_salutation', 'identify')
               AND NOT (p.provolatile = 'i' AND p.proisstrict AND p.proparallel = 's')",
        );
        assert_eq!(offenders, None);
        let cleaners = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
              WHERE p.pronamespace = 'unify'::regnamespace AND l.lanname = 'c'",
        )
        .unwrap();
        assert!(cleaners >= Some(19));
    }

    #[pg_test]
    fn records_read_birth_dates_as_to_char_writes_them() {
        // Candidate records read birth_date as a date and write it in Rust
        // (crate::normalize::date::iso_date_from_pg_days): the same text as to_char, for every
        // day a birth date can have and the ends of the years both share.
        let days: Vec<(i32, String)> = Spi::connect(|client| {
            client
                .select(
                    "SELECT d - DATE '2000-01-01', to_char(d, 'YYYY-MM-DD') FROM (
                         SELECT g::date FROM generate_series(DATE '1900-01-01', DATE '2100-12-31', interval '1 day') AS g
                         UNION ALL SELECT unnest(ARRAY[DATE '0001-01-01', DATE '9999-12-31'])) AS x (d)",
                    None,
                    &[],
                )
                .unwrap()
                .map(|r| (r.get::<i32>(1).unwrap().unwrap(), r.get::<String>(2).unwrap().unwrap()))
                .collect()
        });
        assert_eq!(days.len(), 73_416);
        for (d, expected) in days {
            assert_eq!(
                crate::normalize::date::iso_date_from_pg_days(d).as_deref(),
                Some(expected.as_str())
            );
        }
    }

    #[pg_test]
    fn cleaners_through_sql() {
        assert_eq!(
            text("SELECT unify.normalize_email(' Max@Müller.DE ')").as_deref(),
            Some("max@xn--mller-kva.de")
        );
        assert_eq!(
            text("SELECT unify.normalize_phone('030 / 123 456 78')").as_deref(),
            Some("+493012345678")
        );
        assert_eq!(
            text("SELECT unify.normalize_phone('01 5123456', 'AT')").as_deref(),
            Some("+4315123456")
        );
        assert_eq!(
            text("SELECT unify.normalize_phone('01 5123456', 'nowhere')"),
            None
        );
        assert_eq!(
            text("SELECT unify.phone_kind('0171 1234567')").as_deref(),
            Some("mobile")
        );
        assert_eq!(
            text("SELECT unify.normalize_postcode('D-1067')").as_deref(),
            Some("01067")
        );
        assert_eq!(
            text("SELECT unify.cologne_phonetic('Mueller')").as_deref(),
            Some("657")
        );
        assert_eq!(text("SELECT unify.normalize_email('')"), None);
    }

    #[pg_test]
    fn split_full_name_reads_salutation_and_title() {
        assert_eq!(
            text("SELECT (unify.split_full_name('Herr Dr. Hans von der Heide jun.'))::text")
                .as_deref(),
            Some("(hans,\"von der heide jun\",Herr,Dr.)")
        );
        assert_eq!(
            text("SELECT unify.letter_salutation('Frau', 'Dr.', 'Anna', 'Müller')").as_deref(),
            Some("Sehr geehrte Frau Dr. Müller")
        );
        assert_eq!(
            text("SELECT unify.letter_salutation(NULL, NULL, 'Kim', 'Schulz')").as_deref(),
            Some("Guten Tag Kim Schulz")
        );
    }

    #[pg_test]
    fn split_street_returns_a_composite() {
        assert_eq!(
            text("SELECT (unify.split_street('Hauptstr. 12 a')).street").as_deref(),
            Some("Hauptstr.")
        );
        assert_eq!(
            text("SELECT (unify.split_street('Hauptstr. 12 a')).house_number").as_deref(),
            Some("12a")
        );
        // No number: the row exists with a NULL house number; unparseable: NULL row, not zero rows.
        assert_eq!(
            text("SELECT (unify.split_street('Marktplatz')).house_number"),
            None
        );
        let rows = Spi::get_one::<i64>("SELECT count(*) FROM (SELECT unify.split_street('12')) s")
            .unwrap();
        assert_eq!(rows, Some(1));
    }

    #[pg_test]
    fn similarity_through_sql() {
        let jw = Spi::get_one::<f64>("SELECT unify.jaro_winkler('MARTHA', 'MARHTA')")
            .unwrap()
            .unwrap();
        assert!((jw - 0.9611).abs() < 1e-4);
        assert_eq!(
            Spi::get_one::<i32>("SELECT unify.levenshtein('Müller', 'Mueller')").unwrap(),
            Some(2)
        );
        assert_eq!(
            Spi::get_one::<i32>("SELECT unify.damerau_levenshtein('Marhta', 'Martha')").unwrap(),
            Some(1)
        );
    }

    #[pg_test(
        error = "unify.levenshtein: inputs of 1048576 and 1048576 characters are too long to compare"
    )]
    fn quadratic_similarity_refuses_huge_inputs() {
        Spi::run("SELECT unify.levenshtein(repeat('a', 1048576), repeat('b', 1048576))").unwrap();
    }
}
