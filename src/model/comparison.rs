//! Comparisons: for a pair of records, which level of agreement each field reaches. Levels are
//! ordered from the strongest agreement to "else"; `None` means a field is missing on either
//! side (or is a household value, see [`Context`]) and counts as no evidence.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::record::{surname_on_own_mailbox, MatchRecord};
use crate::compare::nicknames::{
    forms, forms_allowing_a_typo, groups_share_one, is_given_name, same_given_name,
    same_given_name_allowing_a_typo,
};
use crate::compare::similarity::{
    jaro_winkler_above_bound, jaro_winkler_above_bound_counted, jaro_winkler_at_least, levenshtein,
    within_one_edit, CharCounts,
};
use crate::normalize::name::{given_name_variants, other_given_name_endings};
use crate::normalize::phone::is_fixed_line;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    FirstName,
    LastName,
    BirthDate,
    Email,
    Phone,
    Address,
    ExternalId,
}

pub const COMPARISONS: [Comparison; 7] = [
    Comparison::FirstName,
    Comparison::LastName,
    Comparison::BirthDate,
    Comparison::Email,
    Comparison::Phone,
    Comparison::Address,
    Comparison::ExternalId,
];

impl Comparison {
    pub fn name(self) -> &'static str {
        match self {
            Self::FirstName => "first_name",
            Self::LastName => "last_name",
            Self::BirthDate => "birth_date",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Address => "address",
            Self::ExternalId => "external_id",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        COMPARISONS.into_iter().find(|c| c.name() == name)
    }

    pub fn index(self) -> usize {
        COMPARISONS.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// Level names; the last is always "else". Strongest first, except for levels added later,
    /// which come last before "else" so that the levels of older models keep their numbers:
    /// "nickname" (Hans and Johannes, `crate::compare::nicknames`) is checked right after
    /// "transliterated", and "double_name_part" (Müller-Lüdenscheidt and Müller) right after
    /// that.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Self::FirstName => &[
                "exact",
                "transliterated",
                "jaro_winkler_0.92",
                "jaro_winkler_0.80",
                "phonetic",
                "initial",
                "nickname",
                "else",
            ],
            Self::LastName => &[
                "exact",
                "transliterated",
                "jaro_winkler_0.92",
                "jaro_winkler_0.80",
                "phonetic",
                "double_name_part",
                "else",
            ],
            Self::BirthDate => &[
                "exact",
                "day_month_swapped",
                "one_digit",
                "two_digits",
                "else",
            ],
            // No "same local part" level: local parts are mostly made of the name
            // (anna.mueller@…), so agreeing on one repeats the name evidence.
            Self::Email => &["exact", "match_key", "typo", "else"],
            Self::Phone => &["exact", "else"],
            Self::Address => &[
                "same_address",
                "same_street",
                "similar_street_same_number",
                "same_postcode_or_city",
                "else",
            ],
            Self::ExternalId => &["exact", "similar", "else"],
        }
    }

    pub fn else_level(self) -> u8 {
        (self.levels().len() - 1) as u8
    }

    /// Levels added after models were first stored, with their position: a stored model
    /// without them is read with them added (see `params::ComparisonParams`), at the shipped
    /// model's m and u until `train()` learns theirs.
    pub fn added_levels(self) -> &'static [&'static str] {
        match self {
            Self::FirstName => &["nickname"],
            Self::LastName => &["double_name_part"],
            _ => &[],
        }
    }

    /// Whether the exact level is adjusted by how frequent the value is (Müller vs Zwerschke).
    pub fn term_frequency_adjusted(self) -> bool {
        matches!(self, Self::FirstName | Self::LastName)
    }
}

/// What the comparison of a pair needs beyond the two records: term frequencies of names and
/// the household values, e-mails and phones seen on records of clearly different people
/// (`familie.mueller@…`, the family landline). Those identify a household, not a person, so
/// sharing one is no evidence for the person.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub first_name_tf: HashMap<String, f64>,
    pub last_name_tf: HashMap<String, f64>,
    pub shared_emails: HashSet<String>,
    pub shared_phones: HashSet<String>,
}

impl Context {
    /// Term frequencies and household values over all records.
    pub fn build(records: &[MatchRecord]) -> Self {
        let tf = |get: fn(&MatchRecord) -> Option<&String>| {
            let mut counts: HashMap<String, f64> = HashMap::new();
            let mut n = 0.0;
            for (i, r) in records.iter().enumerate() {
                // A pass over a million records takes a second or so: stop on a cancel.
                crate::interrupt::check_every(i, 1 << 16);
                if let Some(v) = get(r) {
                    *counts.entry(v.clone()).or_default() += 1.0;
                    n += 1.0;
                }
            }
            counts.values_mut().for_each(|c| *c /= n);
            counts
        };
        let (shared_emails, shared_phones) = household_values(records, None);
        Self {
            first_name_tf: tf(|r| r.first_name.as_ref()),
            last_name_tf: tf(|r| r.last_name.as_ref()),
            shared_emails,
            shared_phones,
        }
    }
}

impl Context {
    /// The context of scoring a few records: the model's name frequencies and the records
    /// holding the e-mails and phones in question (all of them, or more than
    /// [`JUNK_VALUE_RECORDS`]). Only values in `emails` and `phones` are judged: a holder's
    /// other values may be seen incompletely here.
    pub fn with_frequencies(
        (first_name_tf, last_name_tf): (HashMap<String, f64>, HashMap<String, f64>),
        holders: &[MatchRecord],
        emails: &HashSet<String>,
        phones: &HashSet<String>,
    ) -> Self {
        let (shared_emails, shared_phones) = household_values(holders, Some((emails, phones)));
        Self {
            first_name_tf,
            last_name_tf,
            shared_emails,
            shared_phones,
        }
    }
}

/// The e-mails and phones among `records` held by clearly different people; only those in
/// `only` when given.
fn household_values<'a>(
    records: impl IntoIterator<Item = &'a MatchRecord>,
    only: Option<(&HashSet<String>, &HashSet<String>)>,
) -> (HashSet<String>, HashSet<String>) {
    let mut by_email: HashMap<&str, Vec<&MatchRecord>> = HashMap::new();
    let mut by_phone: HashMap<&str, Vec<&MatchRecord>> = HashMap::new();
    for (i, r) in records.into_iter().enumerate() {
        crate::interrupt::check_every(i, 1 << 16);
        if let Some(k) = r.email_key.as_deref() {
            if only.is_none_or(|(emails, _)| emails.contains(k)) {
                by_email.entry(k).or_default().push(r);
            }
        }
        for p in &r.phones {
            if only.is_none_or(|(_, phones)| phones.contains(p)) {
                by_phone.entry(p).or_default().push(r);
            }
        }
    }
    let shared = |groups: HashMap<&str, Vec<&MatchRecord>>| {
        groups
            .into_iter()
            .filter(|(_, rs)| held_by_different_people(rs))
            .map(|(k, _)| k.to_string())
            .collect()
    };
    (shared(by_email), shared(by_phone))
}

/// The e-mails and phones whose household status (see [`household_values`]) a change of some
/// records turns: `now` are the records holding them as they are now (each value read up to
/// one past [`JUNK_VALUE_RECORDS`] records besides the changed ones, or all), `changed` the
/// ids of the changed records and `before` those records as they were (the ones that existed).
/// Only for these values can the change alter the score of a pair between two other records:
/// a pair's score depends on its shared values only through their status.
pub fn household_flips(
    now: &[MatchRecord],
    changed: &HashSet<i64>,
    before: &[MatchRecord],
) -> (HashSet<String>, HashSet<String>) {
    let was = now
        .iter()
        .filter(|r| !changed.contains(&r.id))
        .chain(before);
    let (emails_now, phones_now) = household_values(now, None);
    let (emails_was, phones_was) = household_values(was, None);
    (
        emails_now
            .symmetric_difference(&emails_was)
            .cloned()
            .collect(),
        phones_now
            .symmetric_difference(&phones_was)
            .cloned()
            .collect(),
    )
}

/// A value on more records than this is junk (`test@test.de`, a shop's own number), not a
/// person's.
pub const JUNK_VALUE_RECORDS: usize = 25;

/// True when two of the records carrying one value have clearly different first names or birth
/// dates, or when very many records carry it: the value belongs to a household, an office or
/// nobody, not to one person.
pub fn held_by_different_people(records: &[&MatchRecord]) -> bool {
    if records.len() < 2 {
        return false;
    }
    if records.len() > JUNK_VALUE_RECORDS {
        return true;
    }
    // At most JUNK_VALUE_RECORDS records here, so comparing all pairs is cheap.
    let names: Vec<&MatchRecord> = records
        .iter()
        .copied()
        .filter(|r| {
            r.derived.first_translit.is_some()
                || r.derived.birth_digits.is_some()
                || r.derived.generation.is_some()
        })
        .collect();
    for (i, a) in names.iter().enumerate() {
        for b in &names[i + 1..] {
            if first_name_level(a, b, false) == Some(Comparison::FirstName.else_level())
                && !names_swapped(a, b)
                && !crosswise_one_name(a, b)
                && !maybe_pet_form(a, b)
                && !single_name_fits(a, b, &names)
                && !crosswise_given_name(a, b)
                && !mistyped_name_the_mailbox_spells(a, b)
                && !unknown_name_a_typo_of_the_other(a, b)
                && !short_form_mistyped_on_the_others_mailbox(a, b)
                && !both_typos_of_a_third_holders_name(a, b, &names)
            {
                return true;
            }
            // Christian and Christine sharing a landline: a couple, not one person.
            if let (Some(x), Some(y)) = (
                a.derived.first_translit.as_deref(),
                b.derived.first_translit.as_deref(),
            ) {
                if given_name_variants(x, y)
                    && !mistyped_name_the_mailbox_spells(a, b)
                    && !mistyped_into_the_other_ending(x, y, &names)
                {
                    return true;
                }
            }
            if birth_date_level(a, b) == Some(Comparison::BirthDate.else_level())
                && !birth_dates_may_be_one(a, b)
            {
                return true;
            }
            // "Müller sen." and "Müller jun.".
            if matches!((a.derived.generation, b.derived.generation), (Some(x), Some(y)) if x != y)
            {
                return true;
            }
        }
    }
    false
}

/// First names that differ by every level yet may be one name as systems write it (a pet
/// form cut from the name, a short form with a typo, crosswise with an initial): not enough to
/// veto a match that a personal e-mail or mobile decides. Only asked where such a rule's other
/// predicates hold, as it costs more than a comparison.
pub fn first_names_may_be_one(a: &MatchRecord, b: &MatchRecord) -> bool {
    crosswise_one_name(a, b)
        || maybe_pet_form(a, b)
        || single_name_fits(a, b, &[])
        || crosswise_given_name(a, b)
        || mistyped_name_the_mailbox_spells(a, b)
        || unknown_name_a_typo_of_the_other(a, b)
        || short_form_mistyped_on_the_others_mailbox(a, b)
}

/// Birth dates that differ by every level yet may be one date typed twice wrong: day and
/// month exchanged on one record and one digit off besides (1995-12-10 and 1996-10-12), or two
/// of year, month and day a typo apart each (1999-10-05 and 1998-09-05), the years less than
/// ten apart. Two people of one household are born on such dates too (Chris
/// 1998-11-06, Tina 1998-06-10), so the level stays "else" and weighs as one; only not enough
/// to veto what a personal e-mail or mobile decides, nor proof of a second holder of one.
pub fn birth_dates_may_be_one(a: &MatchRecord, b: &MatchRecord) -> bool {
    let (Some(x), Some(y)) = (a.derived.birth_digits, b.derived.birth_digits) else {
        return false;
    };
    let unswapped = [y[0], y[1], y[2], y[3], y[6], y[7], y[4], y[5]];
    if (digits_value(&x[..4]) - digits_value(&y[..4])).abs() >= 10 {
        return false;
    }
    if (0..8).filter(|&i| x[i] != unswapped[i]).count() == 1 {
        return true;
    }
    // A typo on each record (1999-09-05 typed 1999-10-05 on one and 1998-09-05 on the other):
    // one of year, month and day agrees, and each of the others is one typo apart, a digit
    // off or one up or down.
    let one_typo = |a: &[u8], b: &[u8]| {
        a == b
            || a.iter().zip(b).filter(|(p, q)| p != q).count() == 1
            || (digits_value(a) - digits_value(b)).abs() == 1
    };
    let fields = [(0, 4), (4, 6), (6, 8)];
    let differing = fields
        .iter()
        .filter(|(i, j)| x[*i..*j] != y[*i..*j])
        .count();
    differing == 2 && fields.iter().all(|(i, j)| one_typo(&x[*i..*j], &y[*i..*j]))
}

/// "Kraus Gabriele" against "Gabriele Kuhn": one record written last name first, and a new
/// last name since (a marriage). The given name agrees crosswise (equal or alike, and a given
/// name `is_given_name` knows; or forms of one name of the nickname table, a typo allowed on
/// each); the other two names differ. Two
/// people sharing a mailbox or a phone agree crosswise on the family name instead ("Müller
/// Thomas" against "Anna Müller"), which no table of given names holds, and a male and a female
/// form of one name (Andreas, Andrea) stay two people.
fn crosswise_given_name(a: &MatchRecord, b: &MatchRecord) -> bool {
    // Both a typo from forms of one name of the table ("Katharinna" and "Karhi", Kathi): a
    // given name too, mistyped.
    let given = |x: &str, y: &str| {
        !given_name_variants(x, y)
            && ((close(x, y) && (is_given_name(x) || is_given_name(y)))
                || same_given_name_allowing_a_typo(x, y))
    };
    match (translit_names(a), translit_names(b)) {
        ((Some(af), Some(al)), (Some(bf), Some(bl))) => given(af, bl) || given(al, bf),
        _ => false,
    }
}

/// "Nci Schmitz" beside "Nicole Schmitz" on one mobile: a first name of three letters or more
/// that no given name is ([`is_given_name`]) but one typo from the other record's first name or
/// a form of it (Nici, Nicole's), the first letter kept. A typo of that name, not a second
/// person (a short form with a typo has no mailbox to tell it by when the record has none, as
/// [`mistyped_name_the_mailbox_spells`] does). A real name one typo from another (Lena and
/// Lea, Lisa and Lina: twins) is a given name and stays two people; so does a name one typo
/// from the other sex's form of the name too ("Johanan" beside Johanna: Johann mistyped, a
/// couple, as likely as Johanna mistyped).
fn unknown_name_a_typo_of_the_other(a: &MatchRecord, b: &MatchRecord) -> bool {
    fn typo_of(x: &str, y: &str) -> bool {
        let typo_of_name = |name: &str| {
            name.chars().count() >= 3
                && one_typo_apart(x, name)
                && !other_given_name_endings(name)
                    .any(|other| x == other || one_typo_apart(x, &other))
        };
        x.chars().count() >= 3
            && x.chars().all(char::is_alphabetic)
            && !is_given_name(x)
            && (typo_of_name(y) || forms(y).any(typo_of_name))
    }
    match (
        a.derived.first_translit.as_deref(),
        b.derived.first_translit.as_deref(),
    ) {
        (Some(x), Some(y)) => typo_of(x, y) || typo_of(y, x),
        _ => false,
    }
}

/// "Jtrg" and "Jöng" beside "Jörg" on one mobile: two first names that are no given names, each
/// one typo from a third holder's name (or that name itself), are two typos of it, not two
/// people, though they differ from each other by two letters.
fn both_typos_of_a_third_holders_name(
    a: &MatchRecord,
    b: &MatchRecord,
    holders: &[&MatchRecord],
) -> bool {
    let (Some(x), Some(y)) = (
        a.derived.first_translit.as_deref(),
        b.derived.first_translit.as_deref(),
    ) else {
        return false;
    };
    let typo_of = |odd: &str, name: &str| {
        odd == name
            || (odd.chars().count() >= 3 && !is_given_name(odd) && one_typo_apart(odd, name))
    };
    holders.iter().any(|h| {
        h.derived
            .first_translit
            .as_deref()
            .is_some_and(|z| z != x && z != y && typo_of(x, z) && typo_of(y, z))
    })
}

/// "Johanan" beside "Johanna" on `jschulze20@mailbox.org`: a name that is no given name, one
/// typo from the other holder's, that reads as the name with the other sex's ending (Johan-an,
/// Johan-na) only through the typo. Where no holder of the value bears that other form
/// (Johann), the typo is of the name that is there, not a second person of the other sex:
/// a couple sharing a mailbox needs the second name to be written somewhere.
fn mistyped_into_the_other_ending(x: &str, y: &str, holders: &[&MatchRecord]) -> bool {
    let mistyped = |odd: &str, name: &str| {
        !is_given_name(odd)
            && is_given_name(name)
            && one_typo_apart(odd, name)
            && !other_given_name_endings(name).any(|other| {
                is_given_name(&other)
                    && holders
                        .iter()
                        .any(|h| h.derived.first_translit.as_deref() == Some(other.as_str()))
            })
    };
    mistyped(x, y) || mistyped(y, x)
}

/// "Dii Beck" on `dieter.beck@gmx.de` beside "Dieter Beck", "Ged Walter" on `walter.gerhard@`,
/// "Johanan" on `johanna.demir91@` beside "Johanna", "Ktähe Seidel" on `katharinaseidel@`:
/// either record's first name is no given name ([`is_given_name`]) but one typo from a given
/// name its own mailbox spells (or from a form of that name: Dii from Didi, Dieter's), and the
/// other record's first name is that name or agrees with it (a form of it, alike, or a part
/// of a double name). The typo is then of that name: a short form of two or three letters
/// with a typo, which no rule on the names alone can tell from another name, or a typo that
/// makes the other sex's ending (Johanan, Johanna), which alone reads like a couple (Christian,
/// Christina). The mailbox names the person the record is of; no proof of a second holder,
/// and no veto of what a shared personal e-mail or mobile decides. A mailbox of two names
/// (`anna.und.thomas.mueller@`) spells a real second name, which `is_given_name` knows.
fn mistyped_name_the_mailbox_spells(a: &MatchRecord, b: &MatchRecord) -> bool {
    mistyped_name_its_mailbox_spells(a, b) || mistyped_name_its_mailbox_spells(b, a)
}

fn mistyped_name_its_mailbox_spells(r: &MatchRecord, other: &MatchRecord) -> bool {
    let (Some(x), Some(y), Some(email)) = (
        r.derived.first_translit.as_deref(),
        other.derived.first_translit.as_deref(),
        r.email.as_deref(),
    ) else {
        return false;
    };
    if x.chars().count() < 2 || !x.chars().all(char::is_alphabetic) || is_given_name(x) {
        return false;
    }
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l);
    let names = mailbox_names(local, &[r, other]);
    if names.contains(&x) {
        return false;
    }
    names.iter().any(|&g| {
        g.chars().count() >= 3
            && (g == y || is_given_name(g))
            && (one_typo_apart(x, g) || forms(g).any(|f| one_typo_apart(x, f)))
            && (g == y
                || same_given_name(g, y)
                || loosely_one_name(g, y)
                || y.split(['-', ' ']).any(|part| part == g))
    })
}

/// "Lia Kowalski" beside "Elisabeth Kowalski" on `ekowalski80@mailbox.org`: one record's first
/// name is one typo from a short form of the other's (Lisa, Elisabeth's, typed Lia), and the
/// mailbox they share spells the other's name (the name, a form of it, or its initial beside
/// the last name), never the first. A short form mistyped can land on a real given name,
/// which [`unknown_name_a_typo_of_the_other`] must take for a second person; the mailbox tells
/// whose it is. Not where the two names are themselves one typo apart (twins Lisa and Lina,
/// Paul and Paula), nor where the mailbox could be the odd name's (its initial, or a form).
fn short_form_mistyped_on_the_others_mailbox(a: &MatchRecord, b: &MatchRecord) -> bool {
    short_form_mistyped_on_mailbox_of(a, b) || short_form_mistyped_on_mailbox_of(b, a)
}

fn short_form_mistyped_on_mailbox_of(r: &MatchRecord, owner: &MatchRecord) -> bool {
    let (Some(x), Some(y), Some(key)) = (
        r.derived.first_translit.as_deref(),
        owner.derived.first_translit.as_deref(),
        owner.email_key.as_deref(),
    ) else {
        return false;
    };
    if r.email_key.as_deref() != Some(key)
        || x.chars().count() < 3
        || !x.chars().all(char::is_alphabetic)
        || x == y
        || one_typo_apart(x, y)
        || one_typo_apart(y, x)
        || !forms(y).any(|f| f != y && one_typo_apart(x, f))
    {
        return false;
    }
    let local = key.split('@').next().unwrap_or_default();
    let words = mailbox_names(local, &[r, owner]);
    let spells = |name: &str, w: &str| {
        w == name || forms(name).any(|f| f == w) || (w.chars().count() == 1 && name.starts_with(w))
    };
    words.iter().any(|w| spells(y, w)) && !words.iter().any(|w| spells(x, w))
}

/// The words of a mailbox's local part, the last names of `records` cut off where written on
/// (`dorotheazimmermann` → `dorothea`; `walter.gerhard` → `gerhard`).
fn mailbox_names<'a>(local: &'a str, records: &[&MatchRecord]) -> Vec<&'a str> {
    let lasts: Vec<String> = records
        .iter()
        .filter_map(|r| r.derived.last_translit.as_deref())
        .map(|l| l.replace([' ', '-'], ""))
        .filter(|l| l.chars().count() >= 3)
        .collect();
    local
        .split(|c: char| !c.is_alphabetic())
        .filter_map(|word| {
            let cut = lasts.iter().find_map(|l| {
                word.strip_suffix(l.as_str())
                    .or_else(|| word.strip_prefix(l.as_str()))
            });
            let word = cut.unwrap_or(word);
            (!word.is_empty()).then_some(word)
        })
        .collect()
}

/// One typo apart as a typist makes it (one letter left out, doubled, swapped or wrong, the
/// first letter kept), an umlaut spelled out or not (`ktaehe` is `kaethe` with two letters
/// swapped as the form held `Ktähe`).
fn one_typo_apart(x: &str, y: &str) -> bool {
    let fold = |s: &str| s.replace("ae", "a").replace("oe", "o").replace("ue", "u");
    x != y && x.chars().next() == y.chars().next() && within_one_edit(&fold(x), &fold(y))
}

/// A record's first and last name, transliterated (as the comparisons read them).
fn translit_names(r: &MatchRecord) -> (Option<&str>, Option<&str>) {
    (
        r.derived.first_translit.as_deref(),
        r.derived.last_translit.as_deref(),
    )
}

/// "h" of "hans": one letter that starts the other name, or another form of it: the full
/// name of which the other is a short form ("a" of "sascha", Alexander; "m" of "thies",
/// Matthias), or a short form of the other ("h" of "johannes", Hans): a form fills in the
/// initial of the name on the passport or of the name the customer goes by, a shop either
/// name.
fn is_initial_of(initial: &str, name: &str) -> bool {
    let mut letters = initial.chars();
    letters.next().is_some()
        && letters.next().is_none()
        && (name.starts_with(initial) || forms(name).any(|form| form.starts_with(initial)))
}

/// A record with one name only (a form's single name field: "Schreiber" or "Lisa") is no
/// proof of a second holder when that name fits either name of the other record or, both
/// records of one name only, either name of a third holder with both ("Lisa Schreiber"), or
/// when it is the last name its own mailbox spells ([`surname_in_own_mailbox`]).
fn single_name_fits(a: &MatchRecord, b: &MatchRecord, holders: &[&MatchRecord]) -> bool {
    fn single(r: &MatchRecord) -> Option<&str> {
        match translit_names(r) {
            (Some(n), None) | (None, Some(n)) => Some(n),
            _ => None,
        }
    }
    let fits = |n: &str, r: &MatchRecord| match translit_names(r) {
        (Some(f), Some(l)) => loosely_one_name(n, f) || loosely_one_name(n, l),
        _ => false,
    };
    if surname_in_own_mailbox(a, single(a))
        || surname_in_own_mailbox(b, single(b))
        || surname_beside_initial(a, single(a), b)
        || surname_beside_initial(b, single(b), a)
    {
        return true;
    }
    match (single(a), single(b)) {
        (Some(n), None) => fits(n, b),
        (None, Some(n)) => fits(n, a),
        (Some(m), Some(n)) => holders.iter().any(|h| fits(m, h) && fits(n, h)),
        (None, None) => false,
    }
}

/// "Bäcker" typed into a sign-up form's only name field, on `mbaecker41@web.de`: a single
/// name of four letters or more that no given name of the nickname table is and that the
/// record's own mailbox spells is its last name, whatever field holds it. It says nothing of a
/// second person beside the holder of another first name ("Thies") on that mailbox.
fn surname_in_own_mailbox(r: &MatchRecord, single: Option<&str>) -> bool {
    single.is_some_and(|name| surname_on_own_mailbox(name, r.email_key.as_deref()))
}

/// "Ludwig" typed into a sign-up's only name field on `d.ludwig@gmx.net`, beside "Dörte" on the
/// same mailbox: the mailbox is an initial and the single name (digits aside), and the initial
/// starts the other holder's first name or a form of it. The mailbox then reads initial and
/// last name, so the single name is the holder's last name even where it is a given name too
/// (Ludwig, Werner, Otto are German surnames), not a second person: a couple's mailbox does
/// not join one's initial to the other's first name.
fn surname_beside_initial(r: &MatchRecord, single: Option<&str>, other: &MatchRecord) -> bool {
    let (Some(name), Some(key), Some(first)) = (
        single,
        r.email_key.as_deref(),
        other.derived.first_translit.as_deref(),
    ) else {
        return false;
    };
    if name.chars().count() < 3 || first == name {
        return false;
    }
    let local = key.split('@').next().unwrap_or_default();
    let letters: String = local.chars().filter(|c| c.is_alphabetic()).collect();
    let initial = letters
        .strip_suffix(name)
        .or_else(|| letters.strip_prefix(name))
        .unwrap_or_default();
    is_initial_of(initial, first)
}

/// "Dörte Schumacher" and "Schumacher, D.": crosswise, the names agree loosely (an initial, a
/// short form, a typo) although not closely enough for [`names_swapped`]. Not a reason to
/// match, only no proof of two people.
fn crosswise_one_name(a: &MatchRecord, b: &MatchRecord) -> bool {
    match (translit_names(a), translit_names(b)) {
        ((Some(af), Some(al)), (Some(bf), Some(bl))) => {
            loosely_one_name(af, bl) && loosely_one_name(al, bf)
        }
        _ => false,
    }
}

/// Two (transliterated) names that may be one as systems write it: equal, alike (Jaro-Winkler
/// ≥ 0.80), an initial of the other (or of a form of it, a typo allowed), or forms of one given
/// name allowing a typo.
fn loosely_one_name(x: &str, y: &str) -> bool {
    // "s" beside "Bien", Bine mistyped: the initial of a form of the name the typo hides.
    let initial_of_mistyped = |initial: &str, name: &str| {
        initial.chars().count() == 1
            && forms_allowing_a_typo(name).any(|form| form.starts_with(initial))
    };
    x == y
        || is_initial_of(x, y)
        || is_initial_of(y, x)
        || initial_of_mistyped(x, y)
        || initial_of_mistyped(y, x)
        || jaro_winkler_above_bound(x, y, 0.80).is_some()
        || may_be_one_given_name(x, y)
}

/// Whether two given names that agree at no level may still be one name: German pet forms are
/// cut from the full name (Thies from Matthias, Xandi from Alexander, Bine from Sabine, Gitte
/// from Brigitte), so they share a run of three letters with it, which two different names
/// rarely do (Hans and Petra, Anna and Thomas); and a short form may carry a typo ("Diidi" for
/// Didi). Pairs like Christian and Christine share more and are two people
/// ([`given_name_variants`]).
fn may_be_one_given_name(x: &str, y: &str) -> bool {
    if given_name_variants(x, y) {
        return false;
    }
    let xs: Vec<char> = x.chars().collect();
    let ys: Vec<char> = y.chars().collect();
    xs.windows(3)
        .any(|w| w.iter().all(|c| c.is_alphabetic()) && ys.windows(3).any(|v| v == w))
        || same_given_name_allowing_a_typo(x, y)
}

/// The first names of two holders of one value may be one name (see
/// [`may_be_one_given_name`]), compared straight or, where the last names sit crosswise,
/// crosswise. Used only to judge whether a shared value is a household's.
fn maybe_pet_form(a: &MatchRecord, b: &MatchRecord) -> bool {
    let ((af, al), (bf, bl)) = (translit_names(a), translit_names(b));
    if let (Some(x), Some(y)) = (af, bf) {
        if may_be_one_given_name(x, y) {
            return true;
        }
    }
    // "Koenig Anndi" against "Andreas König": the given names are the other fields.
    match (af, al, bf, bl) {
        (Some(af), Some(al), Some(bf), Some(bl)) => {
            (loosely_one_name(af, bl) && may_be_one_given_name(al, bf))
                || (loosely_one_name(al, bf) && may_be_one_given_name(af, bl))
        }
        _ => false,
    }
}

/// Two records of one last name in one home whose first names do not tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Namesakes {
    /// Exactly, transliterated or a typo apart: what a senior and a junior of one name share.
    SameName,
    /// Only alike (Jaro-Winkler ≥ 0.80, Kölner Phonetik, an initial): Hannah and Hans.
    AlikeNames,
}

impl Namesakes {
    pub const ALL: [Namesakes; 2] = [Namesakes::SameName, Namesakes::AlikeNames];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The levels of one pair.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outcome {
    pub levels: [Option<u8>; COMPARISONS.len()],
    /// First and last name were compared crosswise ("Müller Anna" against "Anna Müller").
    pub swapped: bool,
    /// The pair shares an e-mail or phone that is a household value, or one side's e-mail is a
    /// household or role mailbox (no evidence).
    pub shared_email: bool,
    pub shared_phone: bool,
    /// The phones the pair shares as evidence are fixed lines: a home's landline, which
    /// family members share like the address (see `namesakes_at_one_home`).
    pub shared_landline: bool,
    /// Both records have the same e-mail and it is a household's (`familie.mueller@`, or held by
    /// different people): one home's mailbox.
    pub shared_family_mailbox: bool,
    /// One of the records has no street (postcode and city only, or no address).
    pub street_missing: bool,
    /// One record says senior, the other junior (`Müller sen.`, `Hans jun.`): two people.
    pub generation_conflict: bool,
    /// The first names are the male and the female form of one name (Paul and Paula): two
    /// people, however alike the names look (see `other_sex_forms`).
    pub other_sex_forms: bool,
}

impl Outcome {
    pub fn level(&self, c: Comparison) -> Option<u8> {
        self.levels[c.index()]
    }

    /// For a pair of one last name (exactly, transliterated or a typo apart) that could be two
    /// people of one home (see `could_share_a_home`), how alike its first names are; None for
    /// any other pair, or clearly different first names. A short form of the name (Hans and
    /// Johannes) is the same name: a senior and a junior are written either way.
    pub fn namesakes_at_one_home(&self, postcode_without_street: bool) -> Option<Namesakes> {
        if !(self.level(Comparison::LastName).is_some_and(|l| l <= 2)
            && self.could_share_a_home(postcode_without_street))
        {
            return None;
        }
        match self.level(Comparison::FirstName)? {
            0..=2 | FIRST_NAME_NICKNAME => Some(Namesakes::SameName),
            3..=5 => Some(Namesakes::AlikeNames),
            _ => None,
        }
    }

    /// The same address (or the same street with a house number missing, different or a
    /// street typo apart), or a shared landline: what the members of a household share.
    pub fn one_home(&self) -> bool {
        self.level(Comparison::Address).is_some_and(|l| l <= 2) || self.shared_landline
    }

    /// One home as far as the records can tell: `one_home`, a phone or a mailbox of one
    /// household (held by clearly different people, or named as a family's), or, with
    /// `postcode_without_street`, the same postcode or city where a record has no street (a
    /// loyalty card). A father and a son of one name could be these two records, whatever
    /// address level the pair reaches. The scorer counts the postcode only where training saw
    /// households at full addresses (`Model::household_share` measured): in data without streets
    /// at all, a postcode is no home.
    pub fn could_share_a_home(&self, postcode_without_street: bool) -> bool {
        self.one_home()
            || self.shared_family_mailbox
            || (self.shared_phone && self.level(Comparison::Phone).is_none())
            || (postcode_without_street
                && self.level(Comparison::Address) == Some(3)
                && self.street_missing)
    }
}

/// The first-name level of two forms of one name (Hans and Johannes).
pub const FIRST_NAME_NICKNAME: u8 = 6;
/// The last-name level of a double name and one of its parts (Müller-Lüdenscheidt and Müller).
pub const LAST_NAME_DOUBLE_PART: u8 = 5;

/// A transliterated name and its character counts (see `Derived`).
#[derive(Clone, Copy)]
struct Name<'a> {
    s: &'a str,
    counts: Option<&'a CharCounts>,
}

fn close(a: &str, b: &str) -> bool {
    a == b || jaro_winkler_at_least(a, b, 0.92)
}

/// [`close`] with the character counts of the names.
fn close_counted(a: Name<'_>, b: Name<'_>) -> bool {
    a.s == b.s || jaro_winkler_above_bound_counted(a.s, b.s, (a.counts, b.counts), 0.92).is_some()
}

/// A record's first and last name as [`translit_names`], with their character counts.
fn counted_names(r: &MatchRecord) -> (Option<Name<'_>>, Option<Name<'_>>) {
    fn name<'a>(s: &'a Option<String>, counts: &'a Option<CharCounts>) -> Option<Name<'a>> {
        s.as_deref().map(|s| Name {
            s,
            counts: counts.as_ref(),
        })
    }
    let d = &r.derived;
    (
        name(&d.first_translit, &d.first_counts),
        name(&d.last_translit, &d.last_counts),
    )
}

/// "Anna Müller" against "Müller Anna": the names agree crosswise but not straight. A record
/// with one name only (a sign-up form's single name field) is crosswise when that name agrees
/// with the other record's other name: "Müller" typed as first name against "Anna Müller".
pub fn names_swapped(a: &MatchRecord, b: &MatchRecord) -> bool {
    match (counted_names(a), counted_names(b)) {
        ((Some(af), Some(al)), (Some(bf), Some(bl))) => {
            af.s != al.s
                && close_counted(af, bl)
                && close_counted(al, bf)
                && !(close_counted(af, bf) && close_counted(al, bl))
        }
        // One side has a single name: crosswise when it agrees with the other side's other
        // name and not with the same one.
        ((Some(single), None), (Some(same), Some(other)))
        | ((Some(same), Some(other)), (Some(single), None))
        | ((None, Some(single)), (Some(other), Some(same)))
        | ((Some(other), Some(same)), (None, Some(single))) => {
            close_counted(single, other) && !close_counted(single, same)
        }
        _ => false,
    }
}

/// Particles that are no part of a double name on their own (`von der Heide`).
const PARTICLES: &[&str] = &[
    "von", "vom", "zu", "zum", "zur", "der", "den", "dem", "des", "van", "de", "del", "di", "da",
    "la", "le", "ten", "ter",
];

/// Whether one (transliterated) last name is a part of the other's double name, or the two
/// double names share a part: Müller-Lüdenscheidt and Müller, Schmidt-Weber and Weber, von der
/// Heide and Heide. A name taken at marriage and added to the birth name (or dropped again).
fn double_name_part<'a>(a: &'a str, b: &'a str) -> bool {
    if !(a.contains(['-', ' ']) || b.contains(['-', ' '])) {
        return false;
    }
    if a.is_ascii() && b.is_ascii() {
        // As below without a string per part: in ASCII, lowercasing is ASCII's and the
        // character count the length.
        let parts = |s: &'a str| {
            s.split(['-', ' '])
                .filter(|p| p.len() >= 3 && !PARTICLES.iter().any(|q| q.eq_ignore_ascii_case(p)))
        };
        return parts(a).any(|p| parts(b).any(|q| p.eq_ignore_ascii_case(q)));
    }
    let parts = |s: &'_ str| -> Vec<String> {
        s.split(['-', ' '])
            .map(str::to_lowercase)
            .filter(|p| p.chars().count() >= 3 && !PARTICLES.contains(&p.as_str()))
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    pa.iter().any(|p| pb.contains(p))
}

/// A record's first (or last) name as compared: as normalized, transliterated, phonetic, and
/// the transliteration's character counts and nickname groups.
struct NameSide<'a> {
    name: Option<&'a str>,
    translit: Option<&'a str>,
    phonetic: Option<&'a str>,
    counts: Option<&'a CharCounts>,
    groups: &'a [u16],
}

fn name_of(r: &MatchRecord, first: bool) -> NameSide<'_> {
    let d = &r.derived;
    if first {
        NameSide {
            name: r.first_name.as_deref(),
            translit: d.first_translit.as_deref(),
            phonetic: d.first_phonetic.as_deref(),
            counts: d.first_counts.as_ref(),
            groups: d.first_groups,
        }
    } else {
        NameSide {
            name: r.last_name.as_deref(),
            translit: d.last_translit.as_deref(),
            phonetic: d.last_phonetic.as_deref(),
            counts: d.last_counts.as_ref(),
            groups: d.last_groups,
        }
    }
}

/// First (`first`) or last name of `a` against the same name of `b`, or against the other one
/// when the pair is swapped. The levels are checked strongest first; the nickname groups and
/// character counts come from `MatchRecord::prepare`, so the common case of two clearly
/// different names costs no hash lookup and rarely a Jaro-Winkler.
fn name_pair_level(a: &MatchRecord, b: &MatchRecord, swapped: bool, first: bool) -> Option<u8> {
    let x = name_of(a, first);
    let y = name_of(b, first != swapped);
    let (an, bn, at, bt) = (x.name?, y.name?, x.translit?, y.translit?);
    if an == bn {
        return Some(0);
    }
    if at == bt {
        return Some(1);
    }
    // `same_given_name(at, bt)` for two different names: a name without groups has none.
    if first && groups_share_one(x.groups, y.groups) {
        return Some(FIRST_NAME_NICKNAME);
    }
    if !first && double_name_part(at, bt) {
        return Some(LAST_NAME_DOUBLE_PART);
    }
    match jaro_winkler_above_bound_counted(at, bt, (x.counts, y.counts), 0.80) {
        Some(s) if s >= 0.92 => return Some(2),
        Some(_) => return Some(3),
        None => {}
    }
    if x.phonetic.is_some() && x.phonetic == y.phonetic {
        return Some(4);
    }
    if first {
        // "H." against "Hans": an initial agrees, but weakly.
        if is_initial_of(at, bt) || is_initial_of(bt, at) {
            return Some(5);
        }
        return Some(Comparison::FirstName.else_level());
    }
    Some(Comparison::LastName.else_level())
}

fn first_name_level(a: &MatchRecord, b: &MatchRecord, swapped: bool) -> Option<u8> {
    name_pair_level(a, b, swapped, true)
}

fn last_name_level(a: &MatchRecord, b: &MatchRecord, swapped: bool) -> Option<u8> {
    name_pair_level(a, b, swapped, false)
}

/// The number ASCII digits spell (`b"1999"` → 1999): a year, month or day of `birth_digits`.
fn digits_value(digits: &[u8]) -> i32 {
    digits
        .iter()
        .fold(0i32, |n, c| n * 10 + i32::from(c - b'0'))
}

fn birth_date_level(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
    let (x, y) = (a.derived.birth_digits?, b.derived.birth_digits?);
    if x == y {
        return Some(0);
    }
    // YYYYMMDD: the same year with day and month exchanged (04.07. typed as 07.04.).
    if x[..4] == y[..4] && x[4..6] == y[6..8] && x[6..8] == y[4..6] {
        return Some(1);
    }
    // Two digits apart, not two neighbours swapped (1980 typed 1908), and the years ten or
    // more apart (1953-04-10 and 1983-08-10): a mother and her daughter of one name, not a typo.
    // The differing positions counted without collecting them (once per candidate pair).
    let year = |d: &[u8]| digits_value(&d[..4]);
    let (mut differ, mut at) = (0usize, [0usize; 2]);
    for i in 0..8 {
        if x[i] != y[i] {
            if differ < 2 {
                at[differ] = i;
            }
            differ += 1;
        }
    }
    let [i, j] = at;
    Some(match differ {
        1 => 2,
        2 if j == i + 1 && x[i] == y[j] && x[j] == y[i] => 3,
        2 if (year(&x) - year(&y)).abs() >= 10 => 4,
        2 => 3,
        _ => 4,
    })
}

/// The e-mail level, whether one side's e-mail is a household, role or junk mailbox (no
/// evidence), and whether the pair shares such a mailbox (one family's).
fn email_level(a: &MatchRecord, b: &MatchRecord, ctx: &Context) -> (Option<u8>, bool, bool) {
    let (Some(ae), Some(be)) = (a.email.as_deref(), b.email.as_deref()) else {
        return (None, false, false);
    };
    let same_key = a.email_key.is_some() && a.email_key == b.email_key;
    // A household's or an office's mailbox, as named (`familie.mueller@`) or as seen on
    // records of clearly different people: no evidence either way.
    let held_by_many = same_key
        && ctx
            .shared_emails
            .contains(a.email_key.as_deref().unwrap_or_default());
    if a.derived.shared_mailbox || b.derived.shared_mailbox || held_by_many {
        let one_mailbox = held_by_many || (same_key && a.derived.shared_mailbox);
        return (None, true, one_mailbox);
    }
    let level = if ae == be {
        0
    } else if same_key {
        1
    } else {
        // Split only for e-mails one edit apart: most pairs are decided above or differ by far.
        if !within_one_edit(ae, be) {
            return (Some(3), false, false);
        }
        let (a_local, a_domain) = ae.rsplit_once('@').unwrap_or((ae, ""));
        let (b_local, b_domain) = be.rsplit_once('@').unwrap_or((be, ""));
        if a_domain == b_domain
            && !differ_in_separators_or_digits_only(a_local, b_local)
            && !mailboxes_of_their_own_names(a, b, a_local, b_local)
        {
            2
        } else {
            3
        }
    };
    (Some(level), false, false)
}

/// `marie.strauss@web.de` and `mariestrauss@web.de`, `gwagner54@` and `gwagner5@`: one edit
/// apart, but where the provider counts dots (all but Gmail, whose match key folds them
/// already) they are two mailboxes, and the second is what a provider offers when the first is
/// taken (or carries another birth year): another person of the same name more often than a
/// typo, so not the typo level.
fn differ_in_separators_or_digits_only(a: &str, b: &str) -> bool {
    let kept = |c: &char| !matches!(c, '.' | '-' | '_') && !c.is_ascii_digit();
    a != b && a.chars().filter(kept).eq(b.chars().filter(kept))
}

/// `andrea.bloess@` and `andreasbloess@` on the records of Andrea and Andreas, `lena.weiss@` and
/// `lea.weiss@`: one edit apart, but each mailbox spells its own holder's name, which the other
/// record does not share. The edit is the difference of two people's names, not a typo.
fn mailboxes_of_their_own_names(
    a: &MatchRecord,
    b: &MatchRecord,
    a_local: &str,
    b_local: &str,
) -> bool {
    let own = |x: Option<&str>, y: Option<&str>| match (x, y) {
        (Some(x), Some(y)) if x != y => {
            a_local.contains(x)
                && b_local.contains(y)
                && !(a_local.contains(y) && b_local.contains(x))
        }
        _ => false,
    };
    own(
        a.derived.first_translit.as_deref(),
        b.derived.first_translit.as_deref(),
    ) || own(
        a.derived.last_translit.as_deref(),
        b.derived.last_translit.as_deref(),
    )
}

/// The phone level, whether the pair shares only household phones (no evidence), and whether
/// the phones it shares as evidence are all landlines.
fn phone_level(a: &MatchRecord, b: &MatchRecord, ctx: &Context) -> (Option<u8>, bool, bool) {
    if a.phones.is_empty() || b.phones.is_empty() {
        return (None, false, false);
    }
    // No phone bit in common: no phone in common (bits of prepared records; none without).
    let (x, y) = (a.derived.phone_bits, b.derived.phone_bits);
    if x != 0 && y != 0 && x & y == 0 {
        return (Some(1), false, false);
    }
    let common: Vec<&String> = a.phones.iter().filter(|p| b.phones.contains(p)).collect();
    let mut evidence = common
        .iter()
        .filter(|p| !ctx.shared_phones.contains(**p))
        .peekable();
    if evidence.peek().is_some() {
        // Parsed only for the few pairs that share a number.
        (Some(0), false, evidence.all(|p| is_fixed_line(p)))
    } else if !common.is_empty() {
        (None, true, false)
    } else {
        (Some(1), false, false)
    }
}

fn address_level(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
    let has = |r: &MatchRecord| r.street.is_some() || r.postcode.is_some() || r.city.is_some();
    if !has(a) || !has(b) {
        return None;
    }
    let both_eq = |x: &Option<String>, y: &Option<String>| x.is_some() && x == y;
    let postcode_eq = both_eq(&a.postcode, &b.postcode);
    let city_eq = both_eq(&a.city, &b.city);
    // One typo, swapped digits included (10115 / 10151).
    let place_close = postcode_eq
        || city_eq
        || matches!((&a.postcode, &b.postcode), (Some(x), Some(y)) if within_one_edit(x, y));
    if let (Some(sa), Some(sb)) = (&a.street, &b.street) {
        let number_eq = both_eq(&a.house_number, &b.house_number);
        if sa == sb && number_eq && place_close {
            return Some(0);
        }
        if sa == sb && place_close {
            return Some(1);
        }
        let number_missing = a.house_number.is_none() || b.house_number.is_none();
        if (number_eq || number_missing)
            && place_close
            && jaro_winkler_above_bound_counted(
                sa,
                sb,
                (
                    a.derived.street_counts.as_ref(),
                    b.derived.street_counts.as_ref(),
                ),
                0.88,
            )
            .is_some()
        {
            return Some(2);
        }
    }
    Some(if postcode_eq || city_eq { 3 } else { 4 })
}

fn external_id_level(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
    let (x, y) = (a.external_id.as_deref()?, b.external_id.as_deref()?);
    Some(if x == y {
        0
    } else if levenshtein(x, y).unwrap_or(usize::MAX) <= 2 {
        1
    } else {
        2
    })
}

/// Compares two records on every comparison.
pub fn compare(a: &MatchRecord, b: &MatchRecord, ctx: &Context) -> Outcome {
    let swapped = names_swapped(a, b);
    let (email, shared_email, shared_family_mailbox) = email_level(a, b, ctx);
    let (phone, shared_phone, shared_landline) = phone_level(a, b, ctx);
    let mut levels = [None; COMPARISONS.len()];
    for c in COMPARISONS {
        levels[c.index()] = match c {
            Comparison::FirstName => first_name_level(a, b, swapped),
            Comparison::LastName => last_name_level(a, b, swapped),
            Comparison::BirthDate => birth_date_level(a, b),
            Comparison::Email => email,
            Comparison::Phone => phone,
            Comparison::Address => address_level(a, b),
            Comparison::ExternalId => external_id_level(a, b),
        };
    }
    let generation_conflict = matches!(
        (a.derived.generation, b.derived.generation),
        (Some(x), Some(y)) if x != y
    );
    let other_sex_forms = other_sex_forms(a, b, swapped, levels[Comparison::FirstName.index()]);
    Outcome {
        levels,
        swapped,
        shared_email,
        shared_phone,
        shared_landline,
        shared_family_mailbox,
        street_missing: a.street.is_none() || b.street.is_none(),
        generation_conflict,
        other_sex_forms,
    }
}

/// Paul and Paula, Christian and Christine, Daniel and Daniela: first names alike enough for a
/// Jaro-Winkler level, yet both given names and the male and the female form of one name
/// ([`given_name_variants`]): two people (twins, a couple, siblings), not a typo. Asked only
/// of pairs at an alike level.
fn other_sex_forms(a: &MatchRecord, b: &MatchRecord, swapped: bool, first: Option<u8>) -> bool {
    if swapped || !matches!(first, Some(2 | 3)) {
        return false;
    }
    match (
        a.derived.first_translit.as_deref(),
        b.derived.first_translit.as_deref(),
    ) {
        (Some(x), Some(y)) => given_name_variants(x, y) && is_given_name(x) && is_given_name(y),
        _ => false,
    }
}

/// The values a comparison looked at, for explanations.
pub fn compared_values(
    c: Comparison,
    a: &MatchRecord,
    b: &MatchRecord,
    swapped: bool,
) -> (Option<String>, Option<String>) {
    let address = |r: &MatchRecord| {
        let parts: Vec<&str> = [&r.street, &r.house_number, &r.postcode, &r.city]
            .into_iter()
            .filter_map(|f| f.as_deref())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    };
    match c {
        Comparison::FirstName => (
            a.first_name.clone(),
            if swapped {
                b.last_name.clone()
            } else {
                b.first_name.clone()
            },
        ),
        Comparison::LastName => (
            a.last_name.clone(),
            if swapped {
                b.first_name.clone()
            } else {
                b.last_name.clone()
            },
        ),
        Comparison::BirthDate => (a.birth_date.clone(), b.birth_date.clone()),
        Comparison::Email => (a.email.clone(), b.email.clone()),
        Comparison::Phone => (
            (!a.phones.is_empty()).then(|| a.phones.join(", ")),
            (!b.phones.is_empty()).then(|| b.phones.join(", ")),
        ),
        Comparison::Address => (address(a), address(b)),
        Comparison::ExternalId => (a.external_id.clone(), b.external_id.clone()),
    }
}

/// The comparison as it was before issue 27 made it cheaper (names' character counts and
/// nickname groups computed once per record, no allocation per pair): the reference the tests
/// hold `compare` to, on generated pairs.
#[cfg(test)]
pub(crate) mod reference {
    use super::*;

    fn phone_level(a: &MatchRecord, b: &MatchRecord, ctx: &Context) -> (Option<u8>, bool, bool) {
        if a.phones.is_empty() || b.phones.is_empty() {
            return (None, false, false);
        }
        let common: Vec<&String> = a.phones.iter().filter(|p| b.phones.contains(p)).collect();
        let mut evidence = common
            .iter()
            .filter(|p| !ctx.shared_phones.contains(**p))
            .peekable();
        if evidence.peek().is_some() {
            // Parsed only for the few pairs that share a number.
            (Some(0), false, evidence.all(|p| is_fixed_line(p)))
        } else if !common.is_empty() {
            (None, true, false)
        } else {
            (Some(1), false, false)
        }
    }

    fn double_name_part(a: &str, b: &str) -> bool {
        if !(a.contains(['-', ' ']) || b.contains(['-', ' '])) {
            return false;
        }
        let parts = |s: &'_ str| -> Vec<String> {
            s.split(['-', ' '])
                .map(str::to_lowercase)
                .filter(|p| p.chars().count() >= 3 && !PARTICLES.contains(&p.as_str()))
                .collect()
        };
        let (pa, pb) = (parts(a), parts(b));
        pa.iter().any(|p| pb.contains(p))
    }

    fn close(a: &str, b: &str) -> bool {
        a == b || jaro_winkler_at_least(a, b, 0.92)
    }

    /// "Anna Müller" against "Müller Anna": the names agree crosswise but not straight. A record
    /// with one name only (a sign-up form's single name field) is crosswise when that name agrees
    /// with the other record's other name: "Müller" typed as first name against "Anna Müller".
    pub fn names_swapped(a: &MatchRecord, b: &MatchRecord) -> bool {
        match (translit_names(a), translit_names(b)) {
            ((Some(af), Some(al)), (Some(bf), Some(bl))) => {
                af != al && close(af, bl) && close(al, bf) && !(close(af, bf) && close(al, bl))
            }
            // One side has a single name: crosswise when it agrees with the other side's other
            // name and not with the same one.
            ((Some(single), None), (Some(same), Some(other)))
            | ((Some(same), Some(other)), (Some(single), None))
            | ((None, Some(single)), (Some(other), Some(same)))
            | ((Some(other), Some(same)), (None, Some(single))) => {
                close(single, other) && !close(single, same)
            }
            _ => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn name_level(
        a: Option<&str>,
        b: Option<&str>,
        a_translit: Option<&str>,
        b_translit: Option<&str>,
        a_phonetic: Option<&str>,
        b_phonetic: Option<&str>,
        first: bool,
    ) -> Option<u8> {
        let (a, b, at, bt) = (a?, b?, a_translit?, b_translit?);
        if a == b {
            return Some(0);
        }
        if at == bt {
            return Some(1);
        }
        if first && same_given_name(at, bt) {
            return Some(FIRST_NAME_NICKNAME);
        }
        if !first && double_name_part(at, bt) {
            return Some(LAST_NAME_DOUBLE_PART);
        }
        match jaro_winkler_above_bound(at, bt, 0.80) {
            Some(s) if s >= 0.92 => return Some(2),
            Some(_) => return Some(3),
            None => {}
        }
        if a_phonetic.is_some() && a_phonetic == b_phonetic {
            return Some(4);
        }
        if first {
            // "H." against "Hans": an initial agrees, but weakly.
            if is_initial_of(at, bt) || is_initial_of(bt, at) {
                return Some(5);
            }
            return Some(Comparison::FirstName.else_level());
        }
        Some(Comparison::LastName.else_level())
    }

    /// A record's first (or last) name: as normalized, transliterated, phonetic.
    fn name_of(r: &MatchRecord, first: bool) -> (Option<&str>, Option<&str>, Option<&str>) {
        let d = &r.derived;
        if first {
            (
                r.first_name.as_deref(),
                d.first_translit.as_deref(),
                d.first_phonetic.as_deref(),
            )
        } else {
            (
                r.last_name.as_deref(),
                d.last_translit.as_deref(),
                d.last_phonetic.as_deref(),
            )
        }
    }

    /// First (`first`) or last name of `a` against the same name of `b`, or against the other one
    /// when the pair is swapped.
    fn name_pair_level(a: &MatchRecord, b: &MatchRecord, swapped: bool, first: bool) -> Option<u8> {
        let (an, at, ap) = name_of(a, first);
        let (bn, bt, bp) = name_of(b, first != swapped);
        name_level(an, bn, at, bt, ap, bp, first)
    }

    fn first_name_level(a: &MatchRecord, b: &MatchRecord, swapped: bool) -> Option<u8> {
        name_pair_level(a, b, swapped, true)
    }

    fn last_name_level(a: &MatchRecord, b: &MatchRecord, swapped: bool) -> Option<u8> {
        name_pair_level(a, b, swapped, false)
    }

    fn birth_date_level(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
        let (x, y) = (a.derived.birth_digits?, b.derived.birth_digits?);
        if x == y {
            return Some(0);
        }
        // YYYYMMDD: the same year with day and month exchanged (04.07. typed as 07.04.).
        if x[..4] == y[..4] && x[4..6] == y[6..8] && x[6..8] == y[4..6] {
            return Some(1);
        }
        // Two digits apart, not two neighbours swapped (1980 typed 1908), and the years ten or
        // more apart (1953-04-10 and 1983-08-10): a mother and her daughter of one name, not a typo.
        let year = |d: &[u8]| digits_value(&d[..4]);
        let differ: Vec<usize> = (0..8).filter(|&i| x[i] != y[i]).collect();
        match differ.as_slice() {
            [_] => Some(2),
            [i, j] if *j == i + 1 && x[*i] == y[*j] && x[*j] == y[*i] => Some(3),
            [_, _] if (year(&x) - year(&y)).abs() >= 10 => Some(4),
            [_, _] => Some(3),
            _ => Some(4),
        }
    }

    fn email_level(a: &MatchRecord, b: &MatchRecord, ctx: &Context) -> (Option<u8>, bool, bool) {
        let (Some(ae), Some(be)) = (a.email.as_deref(), b.email.as_deref()) else {
            return (None, false, false);
        };
        let same_key = a.email_key.is_some() && a.email_key == b.email_key;
        // A household's or an office's mailbox, as named (`familie.mueller@`) or as seen on
        // records of clearly different people: no evidence either way.
        let held_by_many = same_key
            && ctx
                .shared_emails
                .contains(a.email_key.as_deref().unwrap_or_default());
        if a.derived.shared_mailbox || b.derived.shared_mailbox || held_by_many {
            let one_mailbox = held_by_many || (same_key && a.derived.shared_mailbox);
            return (None, true, one_mailbox);
        }
        let (a_local, a_domain) = ae.rsplit_once('@').unwrap_or((ae, ""));
        let (b_local, b_domain) = be.rsplit_once('@').unwrap_or((be, ""));
        let level = if ae == be {
            0
        } else if same_key {
            1
        } else if a_domain == b_domain
            && within_one_edit(ae, be)
            && !differ_in_separators_or_digits_only(a_local, b_local)
            && !mailboxes_of_their_own_names(a, b, a_local, b_local)
        {
            2
        } else {
            3
        };
        (Some(level), false, false)
    }

    fn address_level(a: &MatchRecord, b: &MatchRecord) -> Option<u8> {
        let has = |r: &MatchRecord| r.street.is_some() || r.postcode.is_some() || r.city.is_some();
        if !has(a) || !has(b) {
            return None;
        }
        let both_eq = |x: &Option<String>, y: &Option<String>| x.is_some() && x == y;
        let postcode_eq = both_eq(&a.postcode, &b.postcode);
        let city_eq = both_eq(&a.city, &b.city);
        // One typo, swapped digits included (10115 / 10151).
        let place_close = postcode_eq
            || city_eq
            || matches!((&a.postcode, &b.postcode), (Some(x), Some(y)) if within_one_edit(x, y));
        if let (Some(sa), Some(sb)) = (&a.street, &b.street) {
            let number_eq = both_eq(&a.house_number, &b.house_number);
            if sa == sb && number_eq && place_close {
                return Some(0);
            }
            if sa == sb && place_close {
                return Some(1);
            }
            let number_missing = a.house_number.is_none() || b.house_number.is_none();
            if (number_eq || number_missing) && place_close && jaro_winkler_at_least(sa, sb, 0.88) {
                return Some(2);
            }
        }
        Some(if postcode_eq || city_eq { 3 } else { 4 })
    }

    fn is_initial_of(initial: &str, name: &str) -> bool {
        initial.chars().count() == 1
            && (name.starts_with(initial) || forms(name).any(|form| form.starts_with(initial)))
    }

    /// Compares two records on every comparison.
    pub fn compare(a: &MatchRecord, b: &MatchRecord, ctx: &Context) -> Outcome {
        let swapped = names_swapped(a, b);
        let (email, shared_email, shared_family_mailbox) = email_level(a, b, ctx);
        let (phone, shared_phone, shared_landline) = phone_level(a, b, ctx);
        let mut levels = [None; COMPARISONS.len()];
        for c in COMPARISONS {
            levels[c.index()] = match c {
                Comparison::FirstName => first_name_level(a, b, swapped),
                Comparison::LastName => last_name_level(a, b, swapped),
                Comparison::BirthDate => birth_date_level(a, b),
                Comparison::Email => email,
                Comparison::Phone => phone,
                Comparison::Address => address_level(a, b),
                Comparison::ExternalId => external_id_level(a, b),
            };
        }
        let generation_conflict = matches!(
            (a.derived.generation, b.derived.generation),
            (Some(x), Some(y)) if x != y
        );
        let other_sex_forms =
            super::other_sex_forms(a, b, swapped, levels[Comparison::FirstName.index()]);
        Outcome {
            levels,
            swapped,
            shared_email,
            shared_phone,
            shared_landline,
            shared_family_mailbox,
            street_missing: a.street.is_none() || b.street.is_none(),
            generation_conflict,
            other_sex_forms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn rec(first: &str, last: &str, birth: &str) -> MatchRecord {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        MatchRecord {
            first_name: s(first),
            last_name: s(last),
            birth_date: s(birth),
            ..Default::default()
        }
        .prepare()
    }

    #[test]
    fn name_levels() {
        let ctx = Context::default();
        let lvl = |a: &MatchRecord, b: &MatchRecord, c| compare(a, b, &ctx).level(c);
        let mueller = rec("jürgen", "müller", "");
        assert_eq!(
            lvl(&mueller, &rec("jürgen", "müller", ""), Comparison::LastName),
            Some(0)
        );
        assert_eq!(
            lvl(
                &mueller,
                &rec("juergen", "mueller", ""),
                Comparison::LastName
            ),
            Some(1)
        );
        assert_eq!(
            lvl(
                &mueller,
                &rec("juergen", "mueller", ""),
                Comparison::FirstName
            ),
            Some(1)
        );
        assert_eq!(
            lvl(&mueller, &rec("jürgen", "müler", ""), Comparison::LastName),
            Some(2)
        );
        assert_eq!(
            lvl(
                &mueller,
                &rec("jürgen", "schmidt", ""),
                Comparison::LastName
            ),
            Some(6)
        );
        assert_eq!(
            lvl(&mueller, &rec("", "müller", ""), Comparison::FirstName),
            None
        );
        assert_eq!(
            lvl(&mueller, &rec("j", "müller", ""), Comparison::FirstName),
            Some(5)
        );
        assert_eq!(
            lvl(&mueller, &rec("petra", "müller", ""), Comparison::FirstName),
            Some(7)
        );
        assert_eq!(
            lvl(
                &rec("meier", "", ""),
                &rec("mayer", "", ""),
                Comparison::FirstName
            ),
            Some(4)
        );
    }

    #[test]
    fn short_forms_and_double_names_have_levels_of_their_own() {
        let ctx = Context::default();
        let lvl = |a: &MatchRecord, b: &MatchRecord, c| compare(a, b, &ctx).level(c);
        let johannes = rec("johannes", "müller", "");
        assert_eq!(
            lvl(&johannes, &rec("hans", "müller", ""), Comparison::FirstName),
            Some(FIRST_NAME_NICKNAME)
        );
        assert_eq!(
            lvl(
                &rec("sepp", "huber", ""),
                &rec("josef", "huber", ""),
                Comparison::FirstName
            ),
            Some(FIRST_NAME_NICKNAME)
        );
        // Equal names stay exact; unrelated ones stay different.
        assert_eq!(
            lvl(
                &johannes,
                &rec("johannes", "müller", ""),
                Comparison::FirstName
            ),
            Some(0)
        );
        let anna = rec("anna", "müller-lüdenscheidt", "");
        assert_eq!(
            lvl(&anna, &rec("anna", "mueller", ""), Comparison::LastName),
            Some(LAST_NAME_DOUBLE_PART)
        );
        assert_eq!(
            lvl(
                &anna,
                &rec("anna", "lüdenscheidt", ""),
                Comparison::LastName
            ),
            Some(LAST_NAME_DOUBLE_PART)
        );
        assert_eq!(
            lvl(
                &rec("hans", "von der heide", ""),
                &rec("hans", "heide", ""),
                Comparison::LastName
            ),
            Some(LAST_NAME_DOUBLE_PART)
        );
        // A particle alone is no shared part.
        assert_ne!(
            lvl(
                &rec("hans", "von der heide", ""),
                &rec("hans", "von bergen", ""),
                Comparison::LastName
            ),
            Some(LAST_NAME_DOUBLE_PART)
        );
    }

    #[test]
    fn a_home_is_also_a_postcode_without_a_street_or_a_family_mailbox() {
        let at = |street: &str, email: &str, generation: &str| {
            let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
            MatchRecord {
                first_name: s("hans"),
                last_name: s(&format!("müller{generation}")),
                street: s(street),
                house_number: s(if street.is_empty() { "" } else { "5" }),
                postcode: s("10115"),
                city: s("berlin"),
                email: s(email),
                email_key: s(email),
                ..Default::default()
            }
            .prepare()
        };
        let ctx = Context::default();
        // A loyalty card (postcode and city) against a full address: one home, as far as the
        // records can tell.
        let o = compare(&at("hauptstrasse", "", ""), &at("", "", ""), &ctx);
        assert_eq!(o.level(Comparison::Address), Some(3));
        assert!(o.could_share_a_home(true) && !o.one_home());
        assert!(!o.could_share_a_home(false));
        assert_eq!(o.namesakes_at_one_home(true), Some(Namesakes::SameName));
        // Two streets of one postcode: two homes.
        let o = compare(&at("hauptstrasse", "", ""), &at("gartenweg", "", ""), &ctx);
        assert!(!o.could_share_a_home(true));
        assert_eq!(o.namesakes_at_one_home(true), None);
        // A family mailbox on both.
        let o = compare(
            &at("", "familie.mueller@web.de", ""),
            &at("", "familie.mueller@web.de", ""),
            &ctx,
        );
        assert!(o.shared_family_mailbox && o.could_share_a_home(false));
        // sen. and jun.
        let o = compare(&at("", "", " sen"), &at("", "", " jun"), &ctx);
        assert!(o.generation_conflict);
        assert_eq!(o.level(Comparison::LastName), Some(0));
        assert!(!compare(&at("", "", " sen"), &at("", "", ""), &ctx).generation_conflict);
    }

    #[test]
    fn a_mailbox_spelling_its_own_holders_name_is_not_a_typo() {
        let ctx = Context::default();
        let person = |first: &str, last: &str, email: &str| {
            MatchRecord {
                first_name: Some(first.into()),
                last_name: Some(last.into()),
                email: Some(email.into()),
                email_key: Some(email.into()),
                ..Default::default()
            }
            .prepare()
        };
        let level = |a: &MatchRecord, b: &MatchRecord| compare(a, b, &ctx).level(Comparison::Email);
        let andrea = person("andrea", "blöß", "andrea.bloess@outlook.de");
        let andreas = person("andreas", "bloess", "andreasbloess@outlook.de");
        assert_eq!(level(&andrea, &andreas), Some(3));
        assert_eq!(level(&andreas, &andrea), Some(3));
        let lena = person("lena", "weiß", "weiss.lena@t-online.de");
        let lea = person("lea", "weiss", "weiss.lea@t-online.de");
        assert_eq!(level(&lena, &lea), Some(3));
        let baecker = person("andreas", "bäcker", "andreasbaecker@gmx.de");
        let becker = person("andreas", "becker", "andreasbecker@gmx.de");
        assert_eq!(level(&baecker, &becker), Some(3));
        // One person, a typo in one mailbox: still the typo level.
        let typo = person("andreas", "bloess", "andreasbloss@outlook.de");
        assert_eq!(level(&andreas, &typo), Some(2));
        // A typo in a name field does not make the mailbox another person's.
        let name_typo = person("andraes", "bloess", "andreasbloes@outlook.de");
        assert_eq!(level(&andreas, &name_typo), Some(2));
    }

    #[test]
    fn email_levels_tell_a_typo_from_a_second_mailbox() {
        let ctx = Context::default();
        let with_email = |email: &str, key: &str| MatchRecord {
            email: Some(email.into()),
            email_key: Some(key.into()),
            ..Default::default()
        };
        let level = |a: &str, b: &str| {
            let key = |e: &str| crate::normalize::email::email_match_key(e).unwrap();
            compare(&with_email(a, &key(a)), &with_email(b, &key(b)), &ctx).level(Comparison::Email)
        };
        assert_eq!(
            level("marie.strauss@web.de", "marie.strauss@web.de"),
            Some(0)
        );
        assert_eq!(
            level("marie.strauss@gmail.com", "mariestrauss@gmail.com"),
            Some(1)
        );
        assert_eq!(
            level("marie.strauss@web.de", "marie.strauss@web.dr"),
            Some(3)
        );
        assert_eq!(
            level("marie.strauss@web.de", "marie.straus@web.de"),
            Some(2)
        );
        assert_eq!(
            level("marie.strauss@web.de", "marie.sttauss@web.de"),
            Some(2)
        );
        // A dot, dash or underscore more or less at a provider that counts them: another mailbox.
        assert_eq!(
            level("marie.strauss@web.de", "mariestrauss@web.de"),
            Some(3)
        );
        assert_eq!(
            level("marie_strauss@posteo.de", "mariestrauss@posteo.de"),
            Some(3)
        );
        assert_eq!(
            level("marie.strauss@web.de", "marie-strauss@web.de"),
            Some(3)
        );
        // So is a number more, less or changed: a taken name, another birth year.
        assert_eq!(
            level("gwagner54@mailbox.org", "gwagner5@mailbox.org"),
            Some(3)
        );
        assert_eq!(
            level("daniel.albrecht3@posteo.de", "daniel.albrecht@posteo.de"),
            Some(3)
        );
        assert_eq!(level("jkowalski57@gmx.net", "jkowalski50@gmx.net"), Some(3));
    }

    #[test]
    fn swapped_names_compare_crosswise() {
        let o = compare(
            &rec("anna", "müller", ""),
            &rec("mueller", "anna", ""),
            &Context::default(),
        );
        assert!(o.swapped);
        assert_eq!(o.level(Comparison::FirstName), Some(0));
        assert_eq!(o.level(Comparison::LastName), Some(1));
        // Same name both ways ("Thomas Thomas") is not a swap.
        assert!(
            !compare(
                &rec("anna", "anna", ""),
                &rec("anna", "anna", ""),
                &Context::default()
            )
            .swapped
        );
    }

    #[test]
    fn given_name_variants_are_two_people() {
        // A couple sharing a landline: the number is the household's.
        let mut christian = rec("christian", "wagner", "");
        let mut christine = rec("christine", "wagner", "");
        for r in [&mut christian, &mut christine] {
            r.phones = vec!["+49221635102".into()];
        }
        let ctx = Context::build(&[christian.clone(), christine.clone()]);
        assert!(ctx.shared_phones.contains("+49221635102"));
        let o = compare(&christian, &christine, &ctx);
        assert_eq!(o.level(Comparison::Phone), None);
        assert!(o.shared_phone);
    }

    #[test]
    fn an_initial_agrees_with_the_full_name_of_a_short_form() {
        let ctx = Context::default();
        let first = |a: &str, b: &str| {
            compare(&rec(a, "schumacher", ""), &rec(b, "schumacher", ""), &ctx)
                .level(Comparison::FirstName)
        };
        // Sascha is Alexander, Thies Matthias, Basti Sebastian: the initial of the passport name.
        assert_eq!(first("sascha", "a"), Some(5));
        assert_eq!(first("m", "thies"), Some(5));
        assert_eq!(first("basti", "s"), Some(5));
        // The initial of the short form the customer goes by: "H." for Johannes (Hans).
        assert_eq!(first("johannes", "h"), Some(5));
        assert_eq!(first("j", "hans"), Some(5));
        // Its own initial still agrees; another letter does not.
        assert_eq!(first("sascha", "s"), Some(5));
        assert_eq!(
            first("sascha", "p"),
            Some(Comparison::FirstName.else_level())
        );
        assert_eq!(
            first("petra", "a"),
            Some(Comparison::FirstName.else_level())
        );
        // Two holders of one mobile, "Sascha" and "A.": not proof of two people.
        let mut sascha = rec("sascha", "schumacher", "");
        let mut a = rec("a", "schumacher", "");
        for r in [&mut sascha, &mut a] {
            r.phones = vec!["+4915746163823".into()];
        }
        assert!(Context::build(&[sascha, a]).shared_phones.is_empty());
    }

    #[test]
    fn a_given_name_agreeing_crosswise_is_a_name_change_not_a_second_person() {
        let on_mailbox = |first: &str, last: &str| {
            MatchRecord {
                first_name: Some(first.into()),
                last_name: Some(last.into()),
                email: Some("kuhn.gabriele@icloud.com".into()),
                email_key: Some("kuhn.gabriele@icloud.com".into()),
                ..Default::default()
            }
            .prepare()
        };
        // Married since, and written last name first in one system.
        let (gabriele, kraus) = (
            on_mailbox("gabriele", "kuhn"),
            on_mailbox("kraus", "gabriele"),
        );
        assert!(first_names_may_be_one(&gabriele, &kraus));
        assert!(Context::build(&[gabriele, kraus]).shared_emails.is_empty());
        // A form of the given name crosswise counts too (Gabi for Gabriele).
        assert!(first_names_may_be_one(
            &on_mailbox("gabriele", "kuhn"),
            &on_mailbox("kraus", "gabi")
        ));
        // The family name crosswise is a family: Anna Müller and "Müller Thomas".
        let (anna, thomas) = (on_mailbox("anna", "müller"), on_mailbox("müller", "thomas"));
        assert!(!first_names_may_be_one(&anna, &thomas));
        assert!(!Context::build(&[anna, thomas]).shared_emails.is_empty());
        // Mistyped forms of one given name crosswise: "Katharinna Keller" and "Thomas, Karhi"
        // (Kathi, married to a Mr Thomas since).
        assert!(first_names_may_be_one(
            &on_mailbox("katharinna", "keller"),
            &on_mailbox("thomas", "karhi")
        ));
        // And a male and a female form of one name are two people.
        let (andreas, andrea) = (on_mailbox("andreas", "kuhn"), on_mailbox("kraus", "andrea"));
        assert!(!crosswise_given_name(&andreas, &andrea));
    }

    #[test]
    fn an_unknown_name_a_typo_of_the_others_is_no_second_person() {
        let on_mobile = |first: &str, last: &str| {
            MatchRecord {
                first_name: Some(first.into()),
                last_name: Some(last.into()),
                phones: vec!["+4917798768110".into()],
                ..Default::default()
            }
            .prepare()
        };
        let personal = |a: &MatchRecord, b: &MatchRecord| {
            first_names_may_be_one(a, b)
                && Context::build(&[a.clone(), b.clone()])
                    .shared_phones
                    .is_empty()
        };
        let nicole = on_mobile("nicole", "schmitz");
        // Nici (Nicole's short form) typed Nci; Nicole typed Nicloe.
        assert!(personal(&on_mobile("nci", "schmitz"), &nicole));
        assert!(personal(&nicole, &on_mobile("nicloe", "schmitz")));
        // Real names a typo apart are no typo of each other (twins Lisa and Lina, Lena and Lea).
        let typo = |x: &str, y: &str| {
            unknown_name_a_typo_of_the_other(&on_mobile(x, "schmitz"), &on_mobile(y, "schmitz"))
        };
        assert!(!typo("lina", "lisa") && !typo("lea", "lena"));
        // A typo as near the other sex's form: Johann or Johanna mistyped, a couple.
        assert!(!typo("johanan", "johanna"));
        // The first letter is kept by a typist; a name of two letters says too little.
        assert!(!typo("mcole", "nicole") && !typo("ni", "nicole"));
        assert!(typo("nci", "nicole"));
    }

    #[test]
    fn a_surname_beside_the_other_holders_initial_is_no_second_person() {
        let on = |first: &str, email: &str| {
            MatchRecord {
                first_name: Some(first.into()),
                email: Some(email.into()),
                email_key: Some(email.into()),
                ..Default::default()
            }
            .prepare()
        };
        let shared = |a: &MatchRecord, b: &MatchRecord| {
            !Context::build(&[a.clone(), b.clone()])
                .shared_emails
                .is_empty()
        };
        // Ludwig, a given name and a surname, in a sign-up's only name field on d.ludwig@,
        // beside Dörte: the mailbox is her initial and the last name.
        let m = "d.ludwig@gmx.net";
        assert!(!shared(&on("ludwig", m), &on("dörte", m)));
        assert!(!shared(
            &on("ludwig", "ludwigd77@web.de"),
            &on("dörte", "ludwigd77@web.de")
        ));
        // Not where the initial is not the other holder's: Ludwig and Anna on d.ludwig@.
        assert!(shared(&on("ludwig", m), &on("anna", m)));
        // Nor where the mailbox holds more than an initial beside the name.
        let m = "doerte.und.ludwig@gmx.net";
        assert!(shared(&on("ludwig", m), &on("dörte", m)));
    }

    #[test]
    fn a_mistyped_name_its_mailbox_spells_is_no_second_person() {
        let on = |first: &str, last: &str, email: &str| {
            MatchRecord {
                first_name: Some(first.into()),
                last_name: (!last.is_empty()).then(|| last.into()),
                email: Some(email.into()),
                email_key: Some(email.into()),
                ..Default::default()
            }
            .prepare()
        };
        let personal = |a: &MatchRecord, b: &MatchRecord| {
            first_names_may_be_one(a, b)
                && Context::build(&[a.clone(), b.clone()])
                    .shared_emails
                    .is_empty()
        };
        // Short forms of two or three letters with a typo: Didi typed Dii or Ddi, Gerd typed
        // Ged, Doro typed Dro (beside Thea, another form of Dorothea), Hans typed Hns.
        let dieter = on("dieter", "beck", "dieter.beck@gmx.de");
        assert!(personal(&on("dii", "beck", "dieter.beck@gmx.de"), &dieter));
        assert!(personal(&on("ddi", "beck", "dieter.beck@gmx.de"), &dieter));
        let m = "walter.gerhard@mailbox.org";
        assert!(personal(
            &on("ged", "walter", m),
            &on("gerhard", "walter", m)
        ));
        let m = "dorotheazimmermann@posteo.de";
        assert!(personal(
            &on("dro", "zimmermannn", m),
            &on("thea", "zimmermann", m)
        ));
        let m = "herrmann.hans@outlook.de";
        assert!(personal(
            &on("hns", "herrmann", m),
            &on("hasi", "herrmann", m)
        ));
        // A typo making the other sex's ending, on the mailbox of the name.
        let m = "johanna.demir91@yahoo.de";
        assert!(personal(
            &on("johanan", "dąbrowski", m),
            &on("johanna", "dąbrowski", m)
        ));
        // An umlaut spelled out around the typo (Ktähe for Käthe), a part of a double name.
        assert!(first_names_may_be_one(
            &on("ktähe", "seidel", "katharinaseidel@outlook.de"),
            &on("katharina", "seidel", "k.seidel@web.de")
        ));
        assert!(first_names_may_be_one(
            &on("anie", "schroeder", "anne-kathri.nschroeder@web.de"),
            &on("anne-kathrin", "schröder", "anne-kathrin.schroeder@web.de")
        ));
        // Not where the mailbox spells no such name (an initial only), the odd name is a given
        // name (Jana, on Jan's mailbox), or the mailbox spells the odd name as well.
        let m = "jschulze20@mailbox.org";
        assert!(!mistyped_name_the_mailbox_spells(
            &on("johanan", "", m),
            &on("johanna", "schulze", m)
        ));
        // There the names are alike (no veto to lift), and the typo is Johanna's while no
        // holder is named Johann (mistyped_into_the_other_ending): the mailbox stays hers;
        // with a Johann it is a couple's.
        let (johanan, johanna) = (on("johanan", "", m), on("johanna", "schulze", m));
        assert!(Context::build(&[johanan.clone(), johanna.clone()])
            .shared_emails
            .is_empty());
        let johann = on("johann", "schulze", m);
        assert!(!Context::build(&[johanan, johanna, johann])
            .shared_emails
            .is_empty());
        let m = "jan.mueller@web.de";
        assert!(!personal(&on("jana", "müller", m), &on("jan", "müller", m)));
        let m = "christina.mueller@web.de";
        assert!(!personal(
            &on("christian", "müller", m),
            &on("christina", "müller", m)
        ));
        let m = "dii.und.dieter.beck@web.de";
        assert!(!mistyped_name_the_mailbox_spells(
            &on("dii", "beck", m),
            &on("dieter", "beck", m)
        ));
        // Nor where the other record's name is no form of the spelled one (Anna, on Dieter's).
        assert!(!personal(
            &on("dii", "beck", "dieter.beck@gmx.de"),
            &on("anna", "beck", "dieter.beck@gmx.de")
        ));
        // Nor a typo of another name than the mailbox's: "Ged" on Dieter's mailbox.
        assert!(!personal(&on("ged", "beck", "dieter.beck@gmx.de"), &dieter));
        // A given name the nickname table lacks agreeing crosswise is a name change (Sarah
        // Süß, formerly Weiss, written "Weiss Sarah" in one system).
        let m = "sarah.weiss@t-online.de";
        assert!(personal(&on("sarah", "süß", m), &on("weiss", "sarah", m)));
        let (anna, thomas) = (on("anna", "müller", m), on("müller", "thomas", m));
        assert!(!personal(&anna, &thomas));
        assert!(!one_typo_apart("hns", "hns") && !one_typo_apart("hns", "gans"));
    }

    #[test]
    fn two_typos_of_a_third_holders_name_are_no_second_person() {
        let on = |first: &str| {
            MatchRecord {
                first_name: Some(first.into()),
                last_name: Some("thomas".into()),
                phones: vec!["+491739705243".into()],
                ..Default::default()
            }
            .prepare()
        };
        let (jtrg, joeng, joerg) = (on("jtrg"), on("jöng"), on("jörg"));
        assert!(both_typos_of_a_third_holders_name(
            &jtrg,
            &joeng,
            &[&jtrg, &joeng, &joerg]
        ));
        assert!(
            Context::build(&[jtrg.clone(), joeng.clone(), joerg.clone()])
                .shared_phones
                .is_empty()
        );
        // Without Jörg the two are as different as any two names; and a real given name one
        // typo from the third (Jana beside Jan) is a second person.
        assert!(!Context::build(&[jtrg.clone(), joeng.clone()])
            .shared_phones
            .is_empty());
        let (jana, jabn, jan) = (on("jana"), on("jabn"), on("jan"));
        assert!(!both_typos_of_a_third_holders_name(
            &jana,
            &jabn,
            &[&jana, &jabn, &jan]
        ));
    }

    #[test]
    fn a_short_form_mistyped_on_the_others_mailbox_is_no_second_person() {
        let on = |first: &str, email: &str| {
            MatchRecord {
                first_name: Some(first.into()),
                last_name: Some("kowalski".into()),
                email: Some(email.into()),
                email_key: Some(email.into()),
                ..Default::default()
            }
            .prepare()
        };
        let personal = |a: &MatchRecord, b: &MatchRecord| {
            first_names_may_be_one(a, b)
                && Context::build(&[a.clone(), b.clone()])
                    .shared_emails
                    .is_empty()
        };
        // Lisa, Elisabeth's short form, typed Lia: a given name too, yet the mailbox is
        // Elisabeth's, by her initial or her name.
        for m in [
            "ekowalski80@mailbox.org",
            "elisabeth.kowalski@web.de",
            "kowalski.e@gmx.de",
        ] {
            assert!(personal(&on("lia", m), &on("elisabeth", m)), "{m}");
            assert!(personal(&on("elisabeth", m), &on("lia", m)), "{m}");
        }
        // Not where the mailbox could be the odd name's, spells no name, or the two names are
        // one typo apart themselves (twins Lisa and Lina, Paul and Paula).
        for m in [
            "lkowalski@mailbox.org",
            "lia.kowalski@web.de",
            "kowalski80@web.de",
        ] {
            assert!(!personal(&on("lia", m), &on("elisabeth", m)), "{m}");
        }
        let rule = short_form_mistyped_on_the_others_mailbox;
        let m = "lisa.kowalski@web.de";
        assert!(!rule(&on("lina", m), &on("lisa", m)));
        let m = "pkowalski@web.de";
        assert!(!rule(&on("paula", m), &on("paul", m)));
        // Nor a name that is no typo of any short form of the mailbox's (Anna on Elisabeth's).
        let m = "ekowalski80@mailbox.org";
        assert!(!personal(&on("anna", m), &on("elisabeth", m)));
    }

    #[test]
    fn a_last_name_in_the_only_name_field_on_its_own_mailbox_is_no_second_person() {
        let holder = |name: &str, email: &str| {
            MatchRecord {
                first_name: Some(name.into()),
                email: Some(email.into()),
                email_key: Some(email.into()),
                ..Default::default()
            }
            .prepare()
        };
        // "Bäcker" typed as the only name on mbaecker41@, "Thies" on the same mailbox.
        let ctx = Context::build(&[
            holder("bäcker", "mbaecker41@web.de"),
            holder("thies", "mbaecker41@web.de"),
        ]);
        assert!(ctx.shared_emails.is_empty());
        // Two given names on a family's mailbox stay two people, and so does a given name the
        // mailbox happens to spell (Anna on annamueller@ beside Thomas).
        for (x, y) in [("anna", "thomas"), ("thomas", "anna")] {
            let ctx = Context::build(&[
                holder(x, "annamueller@web.de"),
                holder(y, "annamueller@web.de"),
            ]);
            assert!(ctx.shared_emails.contains("annamueller@web.de"), "{x} {y}");
        }
        // A name the mailbox does not spell proves nothing either way by this rule.
        let ctx = Context::build(&[
            holder("schreiner", "mbaecker41@web.de"),
            holder("thies", "mbaecker41@web.de"),
        ]);
        assert!(ctx.shared_emails.contains("mbaecker41@web.de"));
        // A double name, hyphen and all: compared as the last name it is, so against a
        // sign-up's "Markus" on that mailbox no name differs.
        let m = "markus.mueller-luedenscheidt@web.de";
        let (surname, markus) = (holder("müller-lüdenscheidt", m), holder("markus", m));
        assert_eq!(surname.first_name, None);
        assert_eq!(surname.last_name.as_deref(), Some("müller-lüdenscheidt"));
        let ctx = Context::build(&[surname.clone(), markus.clone()]);
        assert!(ctx.shared_emails.is_empty());
        let o = compare(&surname, &markus, &ctx);
        assert_eq!(o.level(Comparison::FirstName), None);
        assert_eq!(o.level(Comparison::Email), Some(0));
        // A given name stays the first name (Anna on annamueller@), as does a name the
        // mailbox does not spell.
        assert_eq!(
            holder("anna", "annamueller@web.de").first_name.as_deref(),
            Some("anna")
        );
        assert!(holder("schreiner", "mbaecker41@web.de")
            .first_name
            .is_some());
    }

    #[test]
    fn a_single_name_compares_with_either_name() {
        let ctx = Context::default();
        let anna = rec("anna", "müller", "");
        // "Mueller" typed into a sign-up form's only name field (the first name).
        let o = compare(&rec("mueller", "", ""), &anna, &ctx);
        assert!(o.swapped);
        assert_eq!(o.level(Comparison::FirstName), Some(1));
        assert_eq!(o.level(Comparison::LastName), None);
        // Both orders, and a last name alone against the other side's first name.
        let o = compare(&anna, &rec("mueller", "", ""), &ctx);
        assert!(o.swapped);
        assert_eq!(o.level(Comparison::LastName), Some(1));
        let o = compare(&rec("", "anna", ""), &anna, &ctx);
        assert!(o.swapped);
        assert_eq!(o.level(Comparison::LastName), Some(0));
        // A single first name that is the first name stays a straight comparison.
        let o = compare(&rec("anna", "", ""), &anna, &ctx);
        assert!(!o.swapped);
        assert_eq!(o.level(Comparison::FirstName), Some(0));
        // Agreeing with neither: straight, and a different first name.
        let o = compare(&rec("petra", "", ""), &anna, &ctx);
        assert!(!o.swapped);
        assert_eq!(o.level(Comparison::FirstName), Some(7));
    }

    #[test]
    fn birth_date_levels() {
        let ctx = Context::default();
        let lvl = |x: &str, y: &str| {
            compare(&rec("a", "b", x), &rec("a", "b", y), &ctx).level(Comparison::BirthDate)
        };
        assert_eq!(lvl("1980-05-17", "1980-05-17"), Some(0));
        assert_eq!(lvl("1980-05-07", "1980-07-05"), Some(1));
        assert_eq!(lvl("1980-05-17", "1980-05-18"), Some(2));
        assert_eq!(lvl("1980-05-17", "1908-05-17"), Some(3));
        assert_eq!(lvl("1980-05-17", "1955-11-02"), Some(4));
        assert_eq!(lvl("1983-08-10", "1953-04-10"), Some(4));
        assert_eq!(lvl("1983-08-10", "1983-04-11"), Some(3));
        // Day and month exchanged plus one digit: a different date as a level, but one that
        // may be one date typed twice wrong.
        let may = |x: &str, y: &str| birth_dates_may_be_one(&rec("a", "b", x), &rec("a", "b", y));
        assert_eq!(lvl("1995-12-10", "1996-10-12"), Some(4));
        assert!(may("1995-12-10", "1996-10-12") && may("1996-10-12", "1995-12-10"));
        assert!(may("1995-12-10", "1995-10-22"));
        // …not with the years ten apart, two digits besides, or no swap.
        assert!(!may("1965-12-10", "1995-10-12"));
        assert!(!may("1995-12-10", "1996-10-13"));
        assert!(!may("1995-12-10", "1996-11-12"));
        assert!(!may("1980-05-17", "1955-11-02"));
        assert!(!may("1980-05-17", ""));
        // A typo on each record: two of year, month and day one typo apart each.
        assert_eq!(lvl("1999-10-05", "1998-09-05"), Some(4));
        assert!(may("1999-10-05", "1998-09-05") && may("1998-09-05", "1999-10-05"));
        assert!(may("1980-05-17", "1980-06-27"));
        // …not with all three off, a field two typos off, or the years ten apart.
        assert!(!may("1999-10-05", "1998-09-06"));
        assert!(!may("1980-05-17", "1980-11-18"));
        assert!(!may("1970-05-17", "1980-06-17"));
        assert_eq!(lvl("1980-05-17", ""), None);
    }

    #[test]
    fn pet_forms_initials_and_crosswise_names_are_no_proof_of_two_people() {
        let holders = |a: MatchRecord, b: MatchRecord| held_by_different_people(&[&a, &b]);
        // "s" on a sign-up beside "Bien Fischer": Bine (Sabine) mistyped.
        assert!(!holders(rec("s", "", ""), rec("bien", "fischer", "")));
        assert!(!holders(rec("bine", "fischer", ""), rec("s", "", "")));
        // …but "s" beside a name whose forms all start otherwise is another person.
        assert!(holders(rec("s", "", ""), rec("hnas", "fischer", "")));
        // One person as two systems wrote them: a pet form cut from the name, a typo of one,
        // "Schumacher, D." against "Dörte Schumacher".
        assert!(!holders(
            rec("thies", "berger", ""),
            rec("matthias", "berger", "")
        ));
        assert!(!holders(
            rec("xandi", "simon", ""),
            rec("alexander", "simon", "")
        ));
        assert!(!holders(
            rec("bine", "lang", ""),
            rec("sabbine", "lang", "")
        ));
        assert!(!holders(
            rec("dörte", "schumacher", ""),
            rec("schumacher", "d", "")
        ));
        assert!(!holders(
            rec("hoffmann", "f", ""),
            rec("frank", "hoffmann", "")
        ));
        assert!(!holders(rec("diidi", "süß", ""), rec("dieter", "süß", "")));
        assert!(!holders(
            rec("koenig", "anndi", ""),
            rec("andreas", "könig", "")
        ));
        // Two people: names with nothing in common, a couple's variants of one name, other
        // birth dates.
        assert!(holders(
            rec("hans", "müller", ""),
            rec("petra", "müller", "")
        ));
        assert!(holders(rec("anna", "wolf", ""), rec("thomas", "wolf", "")));
        assert!(holders(
            rec("christian", "wagner", ""),
            rec("christine", "wagner", "")
        ));
        assert!(holders(
            rec("thies", "berger", "1960-01-01"),
            rec("matthias", "berger", "1990-07-12")
        ));
    }

    #[test]
    fn household_values_are_no_evidence() {
        let mut a = rec("hans", "müller", "1960-01-01");
        let mut b = rec("petra", "müller", "1962-03-04");
        let mut c = rec("hans", "müller", "1960-01-01");
        for r in [&mut a, &mut b, &mut c] {
            r.email = Some("familie.mueller@web.de".into());
            r.email_key = r.email.clone();
            r.phones = vec!["+4930123456".into()];
        }
        let ctx = Context::build(&[a.clone(), b.clone(), c.clone()]);
        assert!(ctx.shared_emails.contains("familie.mueller@web.de"));
        assert!(ctx.shared_phones.contains("+4930123456"));
        let o = compare(&a, &c, &ctx);
        assert_eq!(o.level(Comparison::Email), None);
        assert!(o.shared_email && o.shared_phone);
        // Held by one person only: evidence.
        let ctx = Context::build(&[a.clone(), c.clone()]);
        assert_eq!(compare(&a, &c, &ctx).level(Comparison::Email), Some(0));
        assert_eq!(compare(&a, &c, &ctx).level(Comparison::Phone), Some(0));
    }

    #[test]
    fn context_of_a_few_records_judges_household_values_as_the_full_one() {
        let mut family = vec![
            rec("hans", "müller", "1960-01-01"),
            rec("petra", "müller", "1962-03-04"),
            rec("hans", "müller", "1960-01-01"),
        ];
        for r in &mut family {
            r.email = Some("familie.mueller@web.de".into());
            r.email_key = r.email.clone();
            r.phones = vec!["+4930123456".into()];
        }
        let mut records = family.clone();
        records.push(rec("anna", "schmidt", "1970-01-01"));
        let full = Context::build(&records);
        let part = Context::with_frequencies(
            (full.first_name_tf.clone(), full.last_name_tf.clone()),
            &family,
            &HashSet::from(["familie.mueller@web.de".to_string()]),
            &HashSet::from(["+4930123456".to_string()]),
        );
        assert_eq!(part.shared_emails, full.shared_emails);
        assert_eq!(part.shared_phones, full.shared_phones);
        assert!(!part.shared_emails.is_empty());
        // A value nobody asked about is not judged from incomplete holders.
        let part = Context::with_frequencies(
            Default::default(),
            &family,
            &HashSet::new(),
            &HashSet::new(),
        );
        assert!(part.shared_emails.is_empty() && part.shared_phones.is_empty());
    }

    #[test]
    fn household_flips_name_only_values_whose_status_a_change_turns() {
        let holder = |id: i64, first: &str, email: &str, phone: &str| {
            let mut r = rec(first, "müller", "");
            r.id = id;
            r.email_key = (!email.is_empty()).then(|| email.to_string());
            r.phones = [phone]
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| p.to_string())
                .collect();
            r
        };
        let home = "+4930123456";
        let hans = holder(1, "hans", "hans@web.de", home);
        let hans_again = holder(2, "hans", "", home);
        // Petra (3) moves in: the landline becomes a household's; Hans' e-mail stays his.
        let petra = holder(3, "petra", "petra@web.de", home);
        let now = [hans.clone(), hans_again.clone(), petra.clone()];
        let changed = HashSet::from([3]);
        let (emails, phones) = household_flips(&now, &changed, &[]);
        assert!(emails.is_empty());
        assert_eq!(phones, HashSet::from([home.to_string()]));
        // Petra had the number before (a correction of her e-mail): nothing turns.
        let petra_before = holder(3, "petra", "petra.m@web.de", home);
        let (emails, phones) = household_flips(&now, &changed, &[petra_before]);
        assert!(emails.is_empty() && phones.is_empty());
        // Petra leaves (deleted: not among the holders now): the number is one person's again.
        let (_, phones) = household_flips(
            &[hans.clone(), hans_again.clone()],
            &changed,
            std::slice::from_ref(&petra),
        );
        assert_eq!(phones, HashSet::from([home.to_string()]));
        // Another Hans copy joins: one person's before and after.
        let copy = holder(4, "hans", "hans@web.de", home);
        let (emails, phones) = household_flips(
            &[hans.clone(), hans_again.clone(), copy],
            &HashSet::from([4]),
            &[],
        );
        assert!(emails.is_empty() && phones.is_empty());
        // Many holders: junk before and after, whoever joins.
        let mut many: Vec<MatchRecord> = (10..10 + JUNK_VALUE_RECORDS as i64 + 1)
            .map(|id| holder(id, "hans", "", "+4930999"))
            .collect();
        many.push(holder(99, "petra", "", "+4930999"));
        let (_, phones) = household_flips(&many, &HashSet::from([99]), &[]);
        assert!(phones.is_empty());
        // The one record that takes a value over the junk limit turns it.
        let at_limit: Vec<MatchRecord> = many[..JUNK_VALUE_RECORDS].to_vec();
        let mut over = at_limit.clone();
        over.push(holder(98, "hans", "", "+4930999"));
        let (_, phones) = household_flips(&over, &HashSet::from([98]), &[]);
        assert_eq!(phones, HashSet::from(["+4930999".to_string()]));
    }

    #[test]
    fn address_levels() {
        let addr = |street: &str, number: &str, postcode: &str, city: &str| {
            let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
            MatchRecord {
                street: s(street),
                house_number: s(number),
                postcode: s(postcode),
                city: s(city),
                ..Default::default()
            }
            .prepare()
        };
        let ctx = Context::default();
        let home = addr("hauptstrasse", "5", "10115", "berlin");
        let lvl = |b: &MatchRecord| compare(&home, b, &ctx).level(Comparison::Address);
        assert_eq!(lvl(&addr("hauptstrasse", "5", "10115", "berlin")), Some(0));
        assert_eq!(lvl(&addr("hauptstrasse", "5", "10116", "")), Some(0));
        assert_eq!(lvl(&addr("hauptstrasse", "7", "10115", "berlin")), Some(1));
        assert_eq!(lvl(&addr("hauptstrase", "5", "10115", "berlin")), Some(2));
        assert_eq!(lvl(&addr("hauptstrase", "", "10151", "")), Some(2));
        assert_eq!(lvl(&addr("", "", "10115", "berlin")), Some(3));
        assert_eq!(lvl(&addr("gartenweg", "1", "80331", "muenchen")), Some(4));
        assert_eq!(lvl(&addr("", "", "", "")), None);
    }
}
