//! Contact-field cleaners. Pure Rust, no pgrx types: every function takes `&str` and returns
//! `Option<String>` (None = "cannot be parsed"), so the SQL layer can map None to NULL.

pub mod address;
pub mod email;
pub mod name;
pub mod phone;
pub mod phonetic;
pub mod translit;

/// Longest input (in bytes) a cleaner looks at. Anything longer is not a contact field but a
/// pasted document, and returns None instead of costing time proportional to its size.
pub const MAX_FIELD_BYTES: usize = 4096;
