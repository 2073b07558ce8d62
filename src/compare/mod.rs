//! String similarity measures on Unicode characters (not bytes), and German given names with
//! their short forms. Pure Rust.

pub mod nicknames;
pub mod similarity;
