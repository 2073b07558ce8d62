//! The model functions: the shipped default, validation, and the model in use.

use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::Value;

use super::super::errors::raise;
use super::super::spi::spi_failed;
use crate::model::params::Model;

/// Parses and validates a model; raises 22023 naming the problem otherwise.
pub(super) fn parse_model(value: Value, function: &'static str) -> Model {
    serde_json::from_value::<Model>(value)
        .map_err(|e| e.to_string())
        .and_then(|model| model.validate().map(|()| model))
        .unwrap_or_else(|e| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("invalid model: {e}"),
                None,
                "Start from SELECT unify.get_model() (or unify.default_model()) and change values in it.",
                function,
            )
        })
}

pub(super) fn current_model(function: &'static str) -> Model {
    let json = Spi::get_one::<JsonB>("SELECT unify.get_model()")
        .unwrap_or_else(|e| spi_failed(e, function))
        .map_or(Value::Null, |j| j.0);
    parse_model(json, function)
}

/// The shipped model for German customer data (untrained u values).
#[pg_extern(immutable, parallel_safe)]
fn default_model() -> JsonB {
    JsonB(serde_json::to_value(Model::default_german()).expect("model serializes"))
}

/// The model with defaults filled in, or an error 22023 saying what is wrong.
#[pg_extern(immutable, strict, parallel_safe)]
fn validate_model(model: JsonB) -> JsonB {
    let model = parse_model(model.0, "validate_model");
    JsonB(serde_json::to_value(model).expect("model serializes"))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_default_model_validates_as_itself() {
        let same = Spi::get_one::<bool>(
            "SELECT unify.validate_model(unify.default_model()) = unify.default_model()",
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }

    #[pg_test(error = "invalid model: prior must be between 0 and 1 (exclusive), not 0")]
    fn a_model_with_an_impossible_prior_is_refused() {
        Spi::run("SELECT unify.validate_model(jsonb_set(unify.default_model(), '{prior}', '0'))")
            .unwrap();
    }
}
