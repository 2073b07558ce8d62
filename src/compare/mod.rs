//! String similarity measures on Unicode characters (not bytes). Pure Rust.

pub mod similarity;
