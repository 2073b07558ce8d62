//! The ad platforms' hashed identifiers (`crate::audience`) as cleaners: IMMUTABLE, STRICT,
//! PARALLEL SAFE; NULL for what the platform could not match. `unify.audience` and the
//! platform functions in audience.sql call them.

use crate::audience as rules;
use pgrx::prelude::*;

/// SHA-256 (hex) of an e-mail address normalised as Google Customer Match requires
/// (lowercase, no whitespace, dots and +tag removed for gmail.com / googlemail.com).
#[pg_extern(immutable, strict, parallel_safe)]
fn google_hash_email(value: &str) -> Option<String> {
    rules::hashed(rules::google_email(value))
}

/// SHA-256 (hex) of a phone number in E.164 with `+`, as Google Customer Match requires.
#[pg_extern(immutable, strict, parallel_safe)]
fn google_hash_phone(value: &str, default_region: default!(&str, "'DE'")) -> Option<String> {
    rules::hashed(rules::google_phone(value, default_region))
}

/// SHA-256 (hex) of a first or last name as Google Customer Match requires (lowercase,
/// trimmed, without salutation, title or generation suffix).
#[pg_extern(immutable, strict, parallel_safe)]
fn google_hash_name(value: &str) -> Option<String> {
    rules::hashed(rules::google_name(value))
}

/// SHA-256 (hex) of an e-mail address as Meta Custom Audiences require (trimmed, lowercase).
#[pg_extern(immutable, strict, parallel_safe)]
fn meta_hash_email(value: &str) -> Option<String> {
    rules::hashed(rules::meta_email(value))
}

/// SHA-256 (hex) of a phone number as Meta Custom Audiences require (digits with the country
/// code, no `+`, no leading zeros).
#[pg_extern(immutable, strict, parallel_safe)]
fn meta_hash_phone(value: &str, default_region: default!(&str, "'DE'")) -> Option<String> {
    rules::hashed(rules::meta_phone(value, default_region))
}

/// SHA-256 (hex) of a first or last name as Meta Custom Audiences require (lowercase, no
/// punctuation or spaces, UTF-8 letters kept).
#[pg_extern(immutable, strict, parallel_safe)]
fn meta_hash_name(value: &str) -> Option<String> {
    rules::hashed(rules::meta_name(value))
}

/// SHA-256 (hex) of a postcode as Meta Custom Audiences require (lowercase, no spaces or
/// dashes; US zip codes their first five digits).
#[pg_extern(immutable, strict, parallel_safe)]
fn meta_hash_zip(value: &str, country: default!(&str, "'DE'")) -> Option<String> {
    rules::hashed(rules::meta_zip(value, country))
}

/// SHA-256 (hex) of a country as Meta Custom Audiences require (lowercase ISO 3166-1 alpha-2).
#[pg_extern(immutable, strict, parallel_safe)]
fn meta_hash_country(value: &str) -> Option<String> {
    rules::hashed(rules::meta_country(value))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).expect("query failed")
    }

    #[pg_test]
    fn platform_hashes_through_sql() {
        // Meta's published vector (customer-information-parameters, `em`).
        assert_eq!(
            text("SELECT unify.meta_hash_email('John_Smith@gmail.com')").as_deref(),
            Some("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f")
        );
        // Google: the normalised form hashed, as PostgreSQL's own sha256 computes it.
        assert_eq!(
            Spi::get_one::<bool>(
                "SELECT unify.google_hash_email('cloudy.sanfrancisco+shopping@gmail.com')
                      = encode(sha256(convert_to('cloudysanfrancisco@gmail.com', 'UTF8')), 'hex')"
            )
            .unwrap(),
            Some(true)
        );
        assert_eq!(text("SELECT unify.google_hash_phone('12')"), None);
        assert_eq!(text("SELECT unify.meta_hash_zip('01067', 'nowhere')"), None);
    }
}
