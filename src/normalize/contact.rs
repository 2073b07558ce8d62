//! A mapped source row through every cleaner at once (issue 27, the first sync's write path).
//!
//! `unify.sync` cleaned a staged row with about twenty calls of the individual SQL cleaners; each
//! call converted its arguments and result, and some work was done twice over (the e-mail
//! address normalized again for its match key, the country read three times, a whole
//! `split_full_name` of the name only for the salutation and title in front of it).
//! [`clean_contact`] gives the very values those calls give, combined as sync combines them
//! (see `unify._normalized_query`): it calls the same functions of the normalize modules, each
//! once per row. Its tests check every field against the individual cleaners.

use super::{address, date, email, name, phone, phonetic, salutation, translit};
use crate::memo::Memo;
use std::cell::RefCell;

/// Values a memo keeps at most (then it starts over), and the longest value it keeps (issue
/// 27: first and last names, street names, cities and postcodes repeat from row to row; a few
/// MB per backend in all).
const MEMO_ENTRIES: usize = 8192;
const MEMO_KEY_BYTES: usize = 96;
/// First and last names share one memo, and 1M generated CRM rows hold some 22,000 of them: at
/// 8,192 it started over every few thousand rows (issue 27). About 2 MB when full.
const NAME_MEMO_ENTRIES: usize = 4 * MEMO_ENTRIES;

/// The memos of [`clean_contact`], one per cleaner (first and last names share `normalize_name`'s).
struct Memos {
    name: Memo<Option<String>>,
    street: Memo<Option<String>>,
    city: Memo<String>,
    /// Keyed by the two letters of the region, then the postcode.
    postcode: Memo<Option<String>>,
    postcode_key: String,
    last_name_phonetic: Memo<Option<String>>,
}

thread_local! {
    static MEMOS: RefCell<Memos> = RefCell::new(Memos {
        name: Memo::new(NAME_MEMO_ENTRIES, MEMO_KEY_BYTES),
        street: Memo::new(MEMO_ENTRIES, MEMO_KEY_BYTES),
        city: Memo::new(MEMO_ENTRIES, MEMO_KEY_BYTES),
        postcode: Memo::new(MEMO_ENTRIES, MEMO_KEY_BYTES),
        postcode_key: String::new(),
        last_name_phonetic: Memo::new(MEMO_ENTRIES, MEMO_KEY_BYTES),
    });
}

/// The canonical fields of a staged row the cleaners read (None: SQL NULL).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawContact<'a> {
    pub salutation: Option<&'a str>,
    pub title: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub full_name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub mobile: Option<&'a str>,
    pub street: Option<&'a str>,
    pub house_number: Option<&'a str>,
    pub street_line: Option<&'a str>,
    pub postcode: Option<&'a str>,
    pub city: Option<&'a str>,
    pub country: Option<&'a str>,
    pub birth_date: Option<&'a str>,
}

/// The cleaned values of one row, as the columns of `unify.records` take them. `city` is the
/// transliterated city without surrounding spaces, not yet lowercased: SQL's `lower()` (of the
/// database's collation) lowercases it, as it did before.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CleanContact {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub email_key: Option<String>,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub street: Option<String>,
    pub house_number: Option<String>,
    pub postcode: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub birth_date: Option<date::Ymd>,
    pub last_name_phonetic: Option<String>,
    pub salutation: Option<&'static str>,
    pub title: Option<String>,
}

/// `normalize_phone(value, region)` of SQL: NULL where the region is no region.
fn phone_in(value: Option<&str>, region: &str) -> Option<String> {
    phone::normalize_phone(value?, phone::parse_region(region)?)
}

/// Cleans one staged row as `unify._normalized_query` did with the individual cleaners:
///
/// - first and last name: `normalize_name` of the field, else the part of `split_full_name`;
/// - e-mail: `normalize_email`, and `email_match_key` folded from that one normalized address;
/// - country: `normalize_country`; phones and postcode read in that country (`DE` without one);
/// - street: `split_street` of the street line (or street and house number joined by a space),
///   its street through `normalize_street`;
/// - city: `transliterate_de` of the city without surrounding spaces (SQL's `btrim`);
/// - birth date: `normalize_date`; last name's Kölner Phonetik;
/// - salutation and title: of their fields (the title also of the salutation field), else those
///   written in front of the full name (or of first and last name joined by a space).
pub fn clean_contact(raw: &RawContact<'_>) -> CleanContact {
    MEMOS.with(|memos| clean_contact_with(raw, &mut memos.borrow_mut()))
}

fn clean_contact_with(raw: &RawContact<'_>, memos: &mut Memos) -> CleanContact {
    let first_field = raw
        .first_name
        .and_then(|v| memos.name.get(v, name::normalize_name));
    let last_field = raw
        .last_name
        .and_then(|v| memos.name.get(v, name::normalize_name));
    // The full name is split only for what the name fields did not give.
    let (full_first, full_last) = match raw.full_name {
        Some(full) if first_field.is_none() || last_field.is_none() => name::split_full_name(full),
        _ => (None, None),
    };
    let first_name = first_field.or(full_first);
    let last_name = last_field.or(full_last);

    let email = raw.email.and_then(email::normalize_email);
    let email_key = email.clone().and_then(email::match_key_of_normalized);

    let country = raw.country.and_then(address::country_code);
    let region = country.as_deref().unwrap_or("DE");
    let phone = phone_in(raw.phone, region);
    let mobile = phone_in(raw.mobile, region);
    let postcode = raw.postcode.and_then(|p| {
        if region.len() != 2 {
            return address::normalize_postcode(p, region);
        }
        let Memos {
            postcode,
            postcode_key,
            ..
        } = &mut *memos;
        postcode_key.clear();
        postcode_key.push_str(region);
        postcode_key.push_str(p);
        postcode.get(postcode_key, |_| address::normalize_postcode(p, region))
    });

    let street_line = match (raw.street_line, raw.street) {
        (Some(line), _) => Some(std::borrow::Cow::Borrowed(line)),
        (None, Some(street)) => Some(match raw.house_number {
            Some(number) => {
                let mut line = String::with_capacity(street.len() + 1 + number.len());
                line.push_str(street);
                line.push(' ');
                line.push_str(number);
                std::borrow::Cow::Owned(line)
            }
            None => std::borrow::Cow::Borrowed(street),
        }),
        (None, None) => None,
    };
    let (street, house_number) = match street_line.as_deref().and_then(address::split_street) {
        Some(parts) => (
            memos.street.get(&parts.street, address::normalize_street),
            parts.house_number,
        ),
        None => (None, None),
    };

    let city = raw.city.map(|c| {
        memos
            .city
            .get(c.trim_matches(' '), translit::transliterate_de)
    });
    let birth_date = raw.birth_date.and_then(date::parse_date);
    let last_name_phonetic = last_name
        .as_deref()
        .and_then(|l| memos.last_name_phonetic.get(l, phonetic::cologne_phonetic));

    let salutation_field = raw.salutation.and_then(salutation::normalize_salutation);
    let title_field = raw
        .title
        .and_then(salutation::normalize_title)
        .or_else(|| raw.salutation.and_then(salutation::normalize_title));
    let (salutation, title) = if salutation_field.is_none() || title_field.is_none() {
        // The salutation and title written in front of a name, where no field gave them.
        let joined;
        let any_name = match (raw.full_name, raw.first_name, raw.last_name) {
            (Some(full), _, _) => full,
            (None, None, last) => last.unwrap_or(""),
            (None, Some(first), None) => first,
            (None, Some(first), Some(last)) => {
                joined = format!("{first} {last}");
                joined.as_str()
            }
        };
        let (in_name_salutation, in_name_title) =
            salutation::salutation_and_title_in_name(any_name);
        (
            salutation_field.or(in_name_salutation),
            title_field.or(in_name_title),
        )
    } else {
        (salutation_field, title_field)
    };

    CleanContact {
        first_name,
        last_name,
        email,
        email_key,
        phone,
        mobile,
        street,
        house_number,
        postcode,
        city,
        country,
        birth_date,
        last_name_phonetic,
        salutation,
        title,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The row as the individual cleaners clean it, each called as `_normalized_query` called
    /// it (one call per use, the composite results of `split_full_name` / `split_street` as
    /// their SQL wrappers return them): the reference `clean_contact` must equal.
    pub(crate) fn by_individual_cleaners(raw: &RawContact<'_>) -> CleanContact {
        // unify.split_full_name: NULL when no part is found.
        let split_full = |v: &str| {
            let (first, last) = name::split_full_name(v);
            let sal = salutation::salutation_in_name(v);
            let title = salutation::title_in_name(v);
            if first.is_none() && last.is_none() && sal.is_none() && title.is_none() {
                None
            } else {
                Some((first, last, sal, title))
            }
        };
        let normalize_phone = |v: Option<&str>, region: &str| {
            phone::normalize_phone(v?, phone::parse_region(region)?)
        };
        let c_first = raw.first_name.and_then(name::normalize_name);
        let c_last = raw.last_name.and_then(name::normalize_name);
        let c_full = raw.full_name.and_then(split_full);
        let c_country = raw.country.and_then(address::country_code);
        let street_in: Option<String> = raw.street_line.map(str::to_string).or_else(|| {
            raw.street.map(|s| {
                format!(
                    "{s}{}",
                    raw.house_number.map_or(String::new(), |h| format!(" {h}"))
                )
            })
        });
        let c_parts = street_in.as_deref().and_then(address::split_street);
        let c_salutation = raw.salutation.and_then(salutation::normalize_salutation);
        let c_title = raw
            .title
            .and_then(salutation::normalize_title)
            .or(raw.salutation.and_then(salutation::normalize_title));
        let any_name = if c_salutation.is_none() || c_title.is_none() {
            let joined = raw.full_name.map(str::to_string).unwrap_or_else(|| {
                match (raw.first_name, raw.last_name) {
                    (None, last) => last.unwrap_or("").to_string(),
                    (Some(first), None) => first.to_string(),
                    (Some(first), Some(last)) => format!("{first} {last}"),
                }
            });
            split_full(&joined)
        } else {
            None
        };
        let region = c_country.clone().unwrap_or_else(|| "DE".to_string());
        let last_name = c_last.clone().or(c_full.as_ref().and_then(|f| f.1.clone()));
        CleanContact {
            first_name: c_first.or(c_full.as_ref().and_then(|f| f.0.clone())),
            last_name: last_name.clone(),
            email: raw.email.and_then(email::normalize_email),
            email_key: raw.email.and_then(email::email_match_key),
            phone: normalize_phone(raw.phone, &region),
            mobile: normalize_phone(raw.mobile, &region),
            street: c_parts
                .as_ref()
                .and_then(|p| address::normalize_street(&p.street)),
            house_number: c_parts.as_ref().and_then(|p| p.house_number.clone()),
            postcode: raw
                .postcode
                .and_then(|p| address::normalize_postcode(p, &region)),
            city: raw
                .city
                .map(|c| translit::transliterate_de(c.trim_matches(' '))),
            country: c_country,
            birth_date: raw.birth_date.and_then(date::parse_date),
            last_name_phonetic: last_name.as_deref().and_then(phonetic::cologne_phonetic),
            salutation: c_salutation.or(any_name.as_ref().and_then(|a| a.2)),
            title: c_title.or(any_name.as_ref().and_then(|a| a.3.clone())),
        }
    }

    fn row<'a>(fields: &[(&str, &'a str)]) -> RawContact<'a> {
        let mut raw = RawContact::default();
        for (field, value) in fields {
            let slot = match *field {
                "salutation" => &mut raw.salutation,
                "title" => &mut raw.title,
                "first_name" => &mut raw.first_name,
                "last_name" => &mut raw.last_name,
                "full_name" => &mut raw.full_name,
                "email" => &mut raw.email,
                "phone" => &mut raw.phone,
                "mobile" => &mut raw.mobile,
                "street" => &mut raw.street,
                "house_number" => &mut raw.house_number,
                "street_line" => &mut raw.street_line,
                "postcode" => &mut raw.postcode,
                "city" => &mut raw.city,
                "country" => &mut raw.country,
                "birth_date" => &mut raw.birth_date,
                other => panic!("no field {other}"),
            };
            *slot = Some(value);
        }
        raw
    }

    #[test]
    fn a_typical_row() {
        let raw = row(&[
            ("salutation", "Hr."),
            ("first_name", "JÖRG"),
            ("last_name", "Müller-Lüdenscheidt"),
            ("email", "Joerg.Mueller+shop@GoogleMail.com"),
            ("phone", "030 1234567"),
            ("mobile", "0171/1234567"),
            ("street", "Hauptstr."),
            ("house_number", "12 a"),
            ("postcode", "1067"),
            ("city", "  Köln "),
            ("country", "Deutschland"),
            ("birth_date", "17.05.1980"),
        ]);
        let clean = clean_contact(&raw);
        assert_eq!(clean, by_individual_cleaners(&raw));
        assert_eq!(clean.first_name.as_deref(), Some("jörg"));
        assert_eq!(clean.email_key.as_deref(), Some("joergmueller@gmail.com"));
        assert_eq!(clean.phone.as_deref(), Some("+49301234567"));
        assert_eq!(clean.street.as_deref(), Some("hauptstrasse"));
        assert_eq!(clean.house_number.as_deref(), Some("12a"));
        assert_eq!(clean.postcode.as_deref(), Some("01067"));
        assert_eq!(clean.city.as_deref(), Some("Koeln"));
        assert_eq!(clean.country.as_deref(), Some("DE"));
        assert_eq!(clean.birth_date, Some((1980, 5, 17)));
        assert_eq!(clean.salutation, Some("Herr"));
        assert_eq!(clean.title, None);
    }

    #[test]
    fn nulls_empty_strings_and_junk() {
        for raw in [
            RawContact::default(),
            row(&[
                ("salutation", ""),
                ("title", ""),
                ("first_name", ""),
                ("last_name", ""),
                ("full_name", ""),
                ("email", ""),
                ("phone", ""),
                ("mobile", ""),
                ("street", ""),
                ("house_number", ""),
                ("street_line", ""),
                ("postcode", ""),
                ("city", ""),
                ("country", ""),
                ("birth_date", ""),
            ]),
            row(&[
                ("phone", "12"),
                ("mobile", "abc"),
                ("country", "XX"),
                ("postcode", "x"),
            ]),
            row(&[("phone", "030 1234567"), ("country", "ZZ")]),
            row(&[
                ("full_name", "Frau Prof. Dr. Anna von der Heide"),
                ("salutation", "Dr."),
            ]),
            row(&[("full_name", "MÜLLER, Hans"), ("first_name", "Hänschen")]),
            row(&[("first_name", "Herr Dr."), ("last_name", "Weiß")]),
            row(&[("last_name", "Frau Prof. Groß")]),
            row(&[
                ("street", "12 Main Street"),
                ("country", "US"),
                ("postcode", "123456789"),
            ]),
            row(&[
                ("street_line", "Karl-Marx-Str. 12-14"),
                ("street", "ignored"),
                ("house_number", "1"),
            ]),
            row(&[("house_number", "5")]),
        ] {
            assert_eq!(clean_contact(&raw), by_individual_cleaners(&raw), "{raw:?}");
        }
    }

    /// The memos give what the cleaners give: for values seen again, and after a memo filled
    /// up and started over.
    #[test]
    fn memos_give_the_cleaners_results() {
        for round in 0..2 {
            for i in 0..MEMO_ENTRIES + 100 {
                let first = format!("Jörg{i}");
                let last = format!("MÜLLER-{}", i % 300);
                let street = format!("Hauptstr. {}", i % 50);
                let city = format!(" Köln {} ", i % 40);
                let postcode = format!("{}", 1000 + i % 90);
                let raw = row(&[
                    ("first_name", &first),
                    ("last_name", &last),
                    ("street_line", &street),
                    ("city", &city),
                    ("postcode", &postcode),
                    ("country", if i % 3 == 0 { "AT" } else { "DE" }),
                ]);
                assert_eq!(
                    clean_contact(&raw),
                    by_individual_cleaners(&raw),
                    "round {round}: {raw:?}"
                );
            }
        }
        let long = "x".repeat(MEMO_KEY_BYTES + 1);
        let raw = row(&[("first_name", &long), ("city", &long)]);
        assert_eq!(clean_contact(&raw), by_individual_cleaners(&raw));
    }

    /// Inputs drawn from fragments of real values (names with titles, umlauts, e-mails of
    /// aliasing providers, phones in every spelling, streets, junk): every field of every
    /// combination equals the individual cleaners'.
    #[test]
    fn equals_the_individual_cleaners_over_many_rows() {
        const NAMES: &[&str] = &[
            "Hans",
            "MÜLLER, Hans",
            "Dr. Hans-Peter von der Heide jun.",
            "Frau Anna Groß",
            "Herr Prof. Dr. med. Jörg Weiß",
            "",
            " ",
            "Ms Jane O'Neil",
            "Familie Schmitz",
            "ŽOFIE Nováková",
            "Hr. Dipl.-Ing. Özil",
            "A. B.",
            "🅐 Ⅸ",
            "von der Heide",
        ];
        const EMAILS: &[&str] = &[
            "Max.Mustermann+news@GoogleMail.com",
            "max@Müller.de",
            "no-at-sign",
            "",
            "Max <max@web.de>",
            "mailto:a.b@gmx.de?subject=x",
            "x.+tag@outlook.de",
        ];
        const PHONES: &[&str] = &[
            "030 1234567",
            "+49 (0)171 1234567",
            "0049 89 123456",
            "12",
            "",
            "0800 1234567",
            "+41 44 123 45 67",
            "abc",
        ];
        const STREETS: &[&str] = &[
            "Hauptstraße 12a",
            "Karl-Marx-Str.",
            "12 Main Street",
            "St. Georg-Pl. 3 / 1",
            "",
            "Am Markt",
            "/12a",
        ];
        const COUNTRIES: &[&str] = &["DE", "Österreich", "CH", "ZZ", "", "usa", "US"];
        const SALUTATIONS: &[&str] = &["Herr", "Frau Dr.", "Prof.", "m", "", "Dr.-Ing."];
        let mut checked = 0;
        for (i, name) in NAMES.iter().enumerate() {
            for (j, email) in EMAILS.iter().enumerate() {
                for (k, phone) in PHONES.iter().enumerate() {
                    let street = STREETS[(i + k) % STREETS.len()];
                    let country = COUNTRIES[(i + j + k) % COUNTRIES.len()];
                    let sal = SALUTATIONS[(j + k) % SALUTATIONS.len()];
                    let other = NAMES[(i + j + 1) % NAMES.len()];
                    let mut raw = RawContact {
                        email: Some(email),
                        phone: Some(phone),
                        mobile: Some(PHONES[(k + 3) % PHONES.len()]),
                        country: Some(country),
                        postcode: Some(["10115", "1067", "D-01067", "1010", "x"][(i + k) % 5]),
                        city: Some(["Köln", " München ", "", "Zürich"][(j + k) % 4]),
                        birth_date: Some(["1980-05-17", "17.5.80", "x", ""][(i + j) % 4]),
                        ..RawContact::default()
                    };
                    // Vary which of the fields are NULL.
                    match (i + j + k) % 4 {
                        0 => raw.full_name = Some(name),
                        1 => {
                            raw.first_name = Some(name);
                            raw.last_name = Some(other);
                        }
                        2 => {
                            raw.first_name = Some(name);
                            raw.full_name = Some(other);
                            raw.salutation = Some(sal);
                        }
                        _ => {
                            raw.last_name = Some(name);
                            raw.title = Some(sal);
                        }
                    }
                    match (i + k) % 3 {
                        0 => raw.street_line = Some(street),
                        1 => {
                            raw.street = Some(street);
                            raw.house_number = Some("7 b");
                        }
                        _ => raw.street = Some(street),
                    }
                    if (i + j + k) % 5 == 0 {
                        raw.country = None;
                        raw.email = None;
                    }
                    assert_eq!(clean_contact(&raw), by_individual_cleaners(&raw), "{raw:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, NAMES.len() * EMAILS.len() * PHONES.len());
    }
}
