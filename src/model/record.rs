//! The fields of one `unify.records` row that matching looks at, with the derived keys
//! (transliteration, phonetic codes) computed once per record instead of once per pair.

use crate::compare::nicknames;
use crate::compare::similarity::CharCounts;
use crate::memo::Memo;
use std::cell::RefCell;

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
    /// `sen.` or `jun.` written in a name field (`Müller sen.`, `Hans jun.`), taken off the
    /// name before it is compared.
    pub generation: Option<Generation>,
    /// Character counts of the transliterated names and of the street, and the nickname groups
    /// of the transliterated names: what comparing a pair would otherwise compute for both
    /// records each time (`comparison::compare` runs for every candidate pair).
    pub first_counts: Option<CharCounts>,
    pub last_counts: Option<CharCounts>,
    pub street_counts: Option<CharCounts>,
    pub first_groups: &'static [u16],
    pub last_groups: &'static [u16],
    /// A bit per phone ([`phone_bit`]): two records whose bits do not meet share no phone,
    /// told without reading either's phones (0 for none).
    pub phone_bits: u64,
}

/// A phone's bit in `Derived::phone_bits`: FNV-1a of its bytes, modulo 64.
pub fn phone_bit(phone: &str) -> u64 {
    let hash = phone.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    1 << (hash % 64)
}

/// Senior or junior, as a name field says it: a father and a son of one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    Senior,
    Junior,
}

/// The generation a name's last word states, and the name without it: `müller jun` →
/// (`müller`, Junior). Names are normalized (lower case, dots dropped). A name that is only
/// the word keeps it.
fn take_generation(name: &mut Option<String>) -> Option<Generation> {
    let n = name.as_deref()?;
    let (rest, word) = n.rsplit_once(' ')?;
    let generation = match word {
        "sen" | "senior" | "sr" => Generation::Senior,
        "jun" | "junior" | "jr" => Generation::Junior,
        _ => return None,
    };
    let rest = rest.trim_end().trim_end_matches(',').trim_end();
    if rest.is_empty() {
        return None;
    }
    *name = Some(rest.to_string());
    Some(generation)
}

/// The value trimmed, None when nothing is left; no new string when there was nothing to trim.
fn non_empty(v: Option<String>) -> Option<String> {
    let s = v?;
    let trimmed = s.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == s.len() {
        Some(s)
    } else {
        Some(trimmed.to_string())
    }
}

/// A name's transliteration and Kölner Phonetik.
#[derive(Clone)]
struct NameKeys {
    translit: String,
    phonetic: Option<String>,
}

/// Distinct names kept before the memo starts over: some 130 bytes each, so at most about
/// 7 MB per backend and thread; a batch of 1,000 changes meets a few thousand names.
const NAME_MEMO_LIMIT: usize = 50_000;

thread_local! {
    /// Names repeat (a batch of 1,000 changes reads some 18,000 candidate records, and the
    /// same Müllers and Schmidts among them): each distinct name is transliterated and
    /// encoded once per backend and thread.
    static NAME_MEMO: RefCell<Memo<NameKeys>> = RefCell::new(Memo::new(NAME_MEMO_LIMIT, usize::MAX));
}

fn name_keys(name: &str) -> NameKeys {
    NAME_MEMO.with(|memo| {
        memo.borrow_mut().get(name, |name| NameKeys {
            translit: transliterate_de(name),
            phonetic: cologne_phonetic(name),
        })
    })
}

/// "Müller-Lüdenscheidt" typed into a sign-up form's only name field, on the record's own
/// mailbox `markus.mueller-luedenscheidt@web.de`: a name of four letters or more, no part of it a
/// given name, that the mailbox spells (by its letters: the hyphen written or not) is the
/// record's last name, whatever field holds it. Compared as the first name, it would look like
/// a second person beside the mailbox's "Markus".
pub(crate) fn surname_on_own_mailbox(name: &str, email_key: Option<&str>) -> bool {
    let Some(key) = email_key else {
        return false;
    };
    let translit = name_keys(name).translit;
    let letters = |s: &str| -> String { s.chars().filter(|c| c.is_alphabetic()).collect() };
    let local = key.split('@').next().unwrap_or_default();
    translit.chars().count() >= 4
        && translit
            .chars()
            .all(|c| c.is_alphabetic() || c == '-' || c == ' ')
        && !translit.split(['-', ' ']).any(nicknames::is_given_name)
        && letters(local).contains(&letters(&translit))
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
        // `Müller sen.` is Müller, said to be the senior: the name compares as Müller.
        let of_last = take_generation(&mut self.last_name);
        let of_first = take_generation(&mut self.first_name);
        // Prepared twice, the name has lost the word already: the generation stays.
        let generation = of_last.or(of_first).or(self.derived.generation);
        if self.last_name.is_none()
            && self
                .first_name
                .as_deref()
                .is_some_and(|n| surname_on_own_mailbox(n, self.email_key.as_deref()))
        {
            self.last_name = self.first_name.take();
        }
        self.phones.retain(|p| !p.trim().is_empty());
        self.phones.sort();
        self.phones.dedup();
        let (first_translit, first_phonetic) = self
            .first_name
            .as_deref()
            .map(name_keys)
            .map_or((None, None), |k| (Some(k.translit), k.phonetic));
        let (last_translit, last_phonetic) = self
            .last_name
            .as_deref()
            .map(name_keys)
            .map_or((None, None), |k| (Some(k.translit), k.phonetic));
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
        let name_phonetic_sorted = match (&first_phonetic, &last_phonetic) {
            (Some(f), Some(l)) => Some(if f <= l {
                format!("{f} {l}")
            } else {
                format!("{l} {f}")
            }),
            _ => None,
        };
        let first_counts = first_translit.as_deref().and_then(CharCounts::of);
        let last_counts = last_translit.as_deref().and_then(CharCounts::of);
        let street_counts = self.street.as_deref().and_then(CharCounts::of);
        let first_groups = first_translit.as_deref().map_or(&[][..], nicknames::groups);
        let last_groups = last_translit.as_deref().map_or(&[][..], nicknames::groups);
        self.derived = Derived {
            first_phonetic,
            last_phonetic,
            name_phonetic_sorted,
            first_translit,
            last_translit,
            name_sorted,
            birth_digits,
            shared_mailbox: self.email.as_deref().is_some_and(is_shared_mailbox),
            generation,
            first_counts,
            last_counts,
            street_counts,
            first_groups,
            last_groups,
            phone_bits: self.phones.iter().fold(0, |bits, p| bits | phone_bit(p)),
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(first: &str, last: &str) -> MatchRecord {
        MatchRecord {
            first_name: Some(first.to_string()),
            last_name: Some(last.to_string()),
            ..Default::default()
        }
        .prepare()
    }

    #[test]
    fn remembered_name_keys_equal_computed_ones() {
        for _ in 0..3 {
            let r = named("  Jürgen ", "MÜLLER-Lüdenscheidt");
            assert_eq!(r.first_name.as_deref(), Some("Jürgen"));
            assert_eq!(r.derived.first_translit, Some(transliterate_de("Jürgen")));
            assert_eq!(r.derived.first_phonetic, cologne_phonetic("Jürgen"));
            assert_eq!(
                r.derived.last_translit,
                Some(transliterate_de("MÜLLER-Lüdenscheidt"))
            );
            assert_eq!(
                r.derived.last_phonetic,
                cologne_phonetic("MÜLLER-Lüdenscheidt")
            );
            assert_eq!(
                r.derived.name_sorted.as_deref(),
                Some("Juergen Luedenscheidt MUELLER")
            );
        }
        // A name without any letter that codes keeps its transliteration and has no code.
        let r = named("Ωμέγα", "123");
        assert_eq!(r.derived.last_phonetic, None);
        assert_eq!(r.derived.last_translit.as_deref(), Some("123"));
    }

    #[test]
    fn senior_and_junior_are_taken_off_the_name() {
        let r = named("hans", "müller jun");
        assert_eq!(r.last_name.as_deref(), Some("müller"));
        assert_eq!(r.derived.generation, Some(Generation::Junior));
        let r = named("hans sen", "von der heide");
        assert_eq!(r.first_name.as_deref(), Some("hans"));
        assert_eq!(r.last_name.as_deref(), Some("von der heide"));
        assert_eq!(r.derived.generation, Some(Generation::Senior));
        let r = named("hans", "müller");
        assert_eq!(r.derived.generation, None);
        // A name that is only the word, or has it inside, stays as it is.
        let r = named("anna", "jun");
        assert_eq!(r.last_name.as_deref(), Some("jun"));
        assert_eq!(r.derived.generation, None);
        let r = named("anna", "sen berg");
        assert_eq!(r.derived.generation, None);
    }

    #[test]
    fn blank_fields_become_none_and_trimmed_ones_keep_their_text() {
        assert_eq!(non_empty(Some("   ".into())), None);
        assert_eq!(non_empty(None), None);
        assert_eq!(non_empty(Some(" a b ".into())).as_deref(), Some("a b"));
        assert_eq!(non_empty(Some("ab".into())).as_deref(), Some("ab"));
    }

    #[test]
    fn the_memo_starts_over_past_its_limit_and_stays_right() {
        for i in 0..NAME_MEMO_LIMIT + 10 {
            name_keys(&format!("n{i}"));
        }
        assert!(NAME_MEMO.with(|m| m.borrow().len()) <= NAME_MEMO_LIMIT);
        let r = named("Anna", "Schmidt");
        assert_eq!(r.derived.first_phonetic, cologne_phonetic("Anna"));
        assert_eq!(r.derived.name_phonetic_sorted.as_deref(), Some("06 862"));
    }
}
