//! unify.jaro_winkler, levenshtein, damerau_levenshtein, jaccard_tokens.

use super::errors::raise;
use crate::compare::similarity::{self, TooLong, MAX_CELLS};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

fn too_long(function: &'static str, e: TooLong) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        format!(
            "unify.{function}: inputs of {} and {} characters are too long to compare",
            e.len_a, e.len_b
        ),
        Some(format!(
            "The product of both lengths may be at most {MAX_CELLS}."
        )),
        "Compare a prefix, for example left(a, 1000), or use unify.jaccard_tokens for long texts.",
        function,
    )
}

/// Jaro-Winkler similarity in [0, 1] on Unicode characters.
#[pg_extern(immutable, strict, parallel_safe)]
fn jaro_winkler(a: &str, b: &str) -> f64 {
    similarity::jaro_winkler(a, b).unwrap_or_else(|e| too_long("jaro_winkler", e))
}

/// Levenshtein edit distance in Unicode characters.
#[pg_extern(immutable, strict, parallel_safe)]
fn levenshtein(a: &str, b: &str) -> i32 {
    let d = similarity::levenshtein(a, b).unwrap_or_else(|e| too_long("levenshtein", e));
    i32::try_from(d).unwrap_or(i32::MAX)
}

/// Damerau-Levenshtein distance (adjacent transpositions count once) in Unicode characters.
#[pg_extern(immutable, strict, parallel_safe)]
fn damerau_levenshtein(a: &str, b: &str) -> i32 {
    let d = similarity::damerau_levenshtein(a, b)
        .unwrap_or_else(|e| too_long("damerau_levenshtein", e));
    i32::try_from(d).unwrap_or(i32::MAX)
}

/// Jaccard similarity of the lowercased word sets.
#[pg_extern(immutable, strict, parallel_safe)]
fn jaccard_tokens(a: &str, b: &str) -> f64 {
    similarity::jaccard_tokens(a, b)
}
