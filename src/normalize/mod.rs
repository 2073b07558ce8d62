//! Contact-field cleaners. Pure Rust, no pgrx types: every function takes `&str` and returns
//! `Option<String>` (None = "cannot be parsed"), so the SQL layer can map None to NULL.

pub mod address;
pub mod contact;
pub mod date;
pub mod display;
pub mod email;
pub mod name;
pub mod phone;
pub mod phonetic;
pub mod salutation;
pub mod translit;

/// Longest input (in bytes) a cleaner looks at. Anything longer is not a contact field but a
/// pasted document, and returns None instead of costing time proportional to its size.
pub const MAX_FIELD_BYTES: usize = 4096;

/// Invisible formatting characters (zero-width space and joiners, bidi controls, soft hyphen,
/// byte-order mark). Copied from web forms they sit inside names unseen, so cleaners drop them.
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}
