//! The SQL surface: thin wrappers that convert arguments, call the pure modules and map their
//! results to NULL or to errors with a SQLSTATE and a hint.

mod cleaners;
mod errors;
mod similarity;
