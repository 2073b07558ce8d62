//! The fields of one `unify.records` row that matching looks at, with the derived keys
//! (transliteration, phonetic codes) computed once per record instead of once per pair.

use crate::normalize::{
    email::is_shared_mailbox, phonetic::cologne_phonetic, translit::transliterate_de,
};

#[derive(Clone, Debug, Default)]
pub struct MatchRecord {
    pub id: i64,
    pub source_id: i32,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub email_key: Option<String>,
    /// Phone and mobile in E.164, without duplicates.
    pub phones: Vec<String>,
    pub street: Option<String>,
    pub house_number: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub external_id: Option<String>,
    pub customer_number: Option<String>,
    pub derived: Derived,
}

/// Keys derived from the normalized fields; filled by [`MatchRecord::prepare`].
#[derive(Clone, Debug, Default)]
pub struct Derived {
    pub first_translit: Option<String>,
    pub last_translit: Option<String>,
    pub first_phonetic: Option<String>,
    pub last_phonetic: Option<String>,
    /// Transliterated name words, sorted: the same for "Anna Müller" and "Mueller Anna".
    pub name_sorted: Option<String>,
    /// Kölner Phonetik of first and last name, sorted: survives a swap and most typos.
    pub name_phonetic_sorted: Option<String>,
    /// Birth date as its eight digits, for digit-level comparison.
    pub birth_digits: Option<[u8; 8]>,
    /// The e-mail is a household's or a role account's (`familie.mueller@`, `info@`).
    pub shared_mailbox: bool,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

impl MatchRecord {
    /// Trims empty strings to None, removes duplicate phones and computes the derived keys.
    #[must_use]
    pub fn prepare(mut self) -> Self {
        for f in [
            &mut self.first_name,
            &mut self.last_name,
            &mut self.email,
            &mut self.email_key,
            &mut self.street,
            &mut self.house_number,
            &mut self.postcode,
            &mut self.city,
            &mut self.birth_date,
            &mut self.external_id,
            &mut self.customer_number,
        ] {
            *f = non_empty(f.take());
        }
        self.phones.retain(|p| !p.trim().is_empty());
        self.phones.sort();
        self.phones.dedup();
        let translit = |s: &Option<String>| s.as_deref().map(transliterate_de);
        let first_translit = translit(&self.first_name);
        let last_translit = translit(&self.last_name);
        let phonetic = |s: &Option<String>| s.as_deref().and_then(cologne_phonetic);
        let name_sorted = {
            let mut words: Vec<&str> = first_translit
                .iter()
                .chain(last_translit.iter())
                .flat_map(|s| s.split([' ', '-']))
                .filter(|w| !w.is_empty())
                .collect();
            words.sort_unstable();
            (!words.is_empty()).then(|| words.join(" "))
        };
        let birth_digits = self.birth_date.as_deref().and_then(|d| {
            let digits: Vec<u8> = d.bytes().filter(u8::is_ascii_digit).collect();
            <[u8; 8]>::try_from(digits.as_slice()).ok()
        });
        let first_phonetic = phonetic(&self.first_name);
        let last_phonetic = phonetic(&self.last_name);
        let name_phonetic_sorted = match (&first_phonetic, &last_phonetic) {
            (Some(f), Some(l)) => Some(if f <= l {
                format!("{f} {l}")
            } else {
                format!("{l} {f}")
            }),
            _ => None,
        };
        self.derived = Derived {
            first_phonetic,
            last_phonetic,
            name_phonetic_sorted,
            first_translit,
            last_translit,
            name_sorted,
            birth_digits,
            shared_mailbox: self.email.as_deref().is_some_and(is_shared_mailbox),
        };
        self
    }
}
