//! Property-based fuzzing of every cleaner and similarity measure (proptest): arbitrary Unicode
//! and German-flavoured inputs (names, streets, e-mails, phones, postcodes, dates built from
//! real fragments, with invisible characters, ligatures, combining marks and emoji mixed in).
//! Each property states a documented contract: no panic, normalizers idempotent, similarities
//! symmetric and in [0, 1], distances a metric. A failure prints the smallest input proptest
//! shrank it to and the seed that reproduces the run.
//!
//! Cases per property: `PROPTEST_CASES` (default 2,000 in the normal test run);
//! `benches/fuzz.sh` runs 10,000,000 each and prints the rate. `PROPTEST_RNG_SEED` (a u64)
//! repeats a run; without it every run draws new inputs.

use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::compare::similarity as sim;
use crate::normalize::{address, date, email, name, phone, phonetic, translit};

/// Default cases per property when `PROPTEST_CASES` is not set: a few seconds in all.
const DEFAULT_CASES: u32 = 2_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

fn seed() -> u64 {
    std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            // A fresh seed per run (time and address-space noise): CI explores new inputs.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (&t as *const u64 as u64).rotate_left(32)
        })
}

/// Runs `property` on `cases()` inputs of `strategy`; prints the count and rate (seen with
/// `--nocapture`, which benches/fuzz.sh reads) and panics with the shrunk input on failure.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = cases();
    let seed = seed();
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(
            &(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes(),
        );
    }
    let config = Config {
        cases,
        failure_persistence: None,
        // Rejections are not used; shrinking a long string needs more steps than the default.
        max_shrink_iters: 100_000,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let started = Instant::now();
    let result = runner.run(&strategy, property);
    let seconds = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        panic!("fuzz {name} failed (PROPTEST_RNG_SEED={seed}): {e}");
    }
    eprintln!(
        "fuzz {name}: {cases} cases in {seconds:.1} s, {:.0} cases/s",
        f64::from(cases) / seconds.max(1e-9)
    );
}

// ---- generators ---------------------------------------------------------------------------

/// Pieces of German CRM data and the oddities found in it: umlauts in both cases and both
/// normal forms, ß/ẞ, titles, particles, street words, separators, invisible characters, a
/// ligature, full-width and Roman-numeral letters (changed by NFKC), Turkish dotted/dotless i
/// (whose case mappings change length), final sigma, other scripts, emoji, control characters.
const FRAGMENTS: &[&str] = &[
    "Müller",
    "MÜLLER",
    "Mu\u{308}ller",
    "Mueller",
    "Meier",
    "Mayer",
    "Schmidt",
    "Schmitt",
    "Hans",
    "Peter",
    "Anna",
    "Jürgen",
    "Günther",
    "Björn",
    "Sören",
    "Ærø",
    "Łukasz",
    "Dvořák",
    "Straße",
    "STRASSE",
    "ẞ",
    "ß",
    "str.",
    "Str",
    "str",
    "Strasse",
    "Pl.",
    "pl",
    "St.",
    "Weg",
    "Allee",
    "des",
    "17.",
    "Juni",
    "Herr",
    "Frau",
    "Dr.",
    "Prof.",
    "Dipl.-Ing.",
    "med.",
    "h.c.",
    "Familie",
    "von",
    "der",
    "van",
    "de",
    "la",
    "jun",
    "sen",
    "jr",
    ",",
    ".",
    "-",
    " - ",
    "–",
    "—",
    "'",
    "’",
    "`",
    "/",
    "\\",
    " ",
    "  ",
    "\t",
    "\n",
    "\r",
    "\u{0}",
    "\u{7f}",
    "\u{200B}",
    "\u{200D}",
    "\u{202E}",
    "\u{FEFF}",
    "\u{AD}",
    "\u{301}",
    "\u{308}",
    "\u{327}",
    "ﬀ",
    "ﬁ",
    "Ｍｕｌｌｅｒ",
    "Ⅻ",
    "ǅ",
    "İ",
    "ı",
    "I",
    "i",
    "Σ",
    "ς",
    "σ",
    "ΌΣΟΣ",
    "Иван",
    "محمد",
    "日本",
    "😀",
    "👨\u{200D}👩\u{200D}👧",
    "🇩🇪",
    "0",
    "1",
    "12",
    "12a",
    "12 a",
    "3-5",
    "12/1",
    "99999",
    "007",
    "a",
    "A",
    "x",
    "ä",
    "Ä",
    "ö",
    "Ö",
    "ü",
    "Ü",
    "é",
    "É",
    "e\u{301}",
    "ø",
    "œ",
    "Œ",
    "þ",
    "Þ",
    "ð",
    "đ",
    "ł",
    "æ",
    "Æ",
    "@",
    "+",
    "(",
    ")",
    "<",
    ">",
    "?",
    ":",
    ";",
    "\"",
    "..",
    "#",
    "%",
    "&",
    "*",
    "=",
    "_",
    "~",
    "!",
];

const EMAIL_FRAGMENTS: &[&str] = &[
    "max",
    "Max",
    "MAX",
    "muster",
    ".",
    "..",
    "+",
    "+shop",
    "-",
    "_",
    "@",
    "@@",
    "mailto:",
    "MAILTO:",
    "?subject=Hallo",
    "<",
    ">",
    " ",
    "\"",
    "gmail.com",
    "googlemail.com",
    "GMail.com",
    "outlook.de",
    "hotmail.com",
    "icloud.com",
    "web.de",
    "gmx.net",
    "t-online.de",
    "müller.de",
    "MÜLLER.DE",
    "xn--mller-kva.de",
    "straße.de",
    "ñ",
    "ü",
    "ä",
    "ß",
    "ẞ",
    "İ",
    "ı",
    "Σ",
    "ς",
    "e\u{301}",
    "😀",
    "\u{200B}",
    "\u{FEFF}",
    "1",
    "123",
    "de",
    "com",
    "x",
    "-x",
    "x-",
    "[1.2.3.4]",
    "info",
    "familie.",
    "Max Müller ",
    "\u{0}",
];

const PHONE_FRAGMENTS: &[&str] = &[
    "+",
    "+49",
    "0049",
    "0",
    "00",
    "(0)",
    "(",
    ")",
    "30",
    "89",
    "171",
    "1234567",
    "123 456 78",
    "555",
    "1",
    "2",
    "9",
    " ",
    "/",
    "-",
    ".",
    "ext",
    "x",
    "#",
    "*",
    "+43",
    "+41",
    "+1",
    "+44",
    "0171",
    "030",
    "0800",
    "0900",
    "110",
    "112",
    "٣",
    "５",
    "+٤٩",
    "tel:",
    "Tel.",
    "\u{200B}",
    "a",
    "ä",
    "😀",
    "\u{0}",
    "00000000000",
    "999999999999999999",
];

const STREET_FRAGMENTS: &[&str] = &[
    "Hauptstraße",
    "Hauptstr.",
    "HAUPTSTR",
    "Haupt-Str.",
    "Karl-Marx-Str.",
    "Karl Marx Straße",
    "Straße des 17. Juni",
    "Am Markt",
    "Marktpl.",
    "Marktplatz",
    "St. Georg",
    "St.",
    "B96",
    "Lindenallee",
    "Gartenweg",
    "Main Street",
    " ",
    "  ",
    ",",
    ";",
    ".",
    "-",
    " - ",
    "/",
    " / ",
    "1",
    "12",
    "12a",
    "12 a",
    "12A",
    "3-5",
    "12/1",
    "123456",
    "7",
    "a",
    "b",
    "Ä",
    "ß",
    "ẞ",
    "\u{200B}",
    "\u{FEFF}",
    "\u{AD}",
    "\t",
    "😀",
    "e\u{301}",
    "Ⅻ",
    "٣",
    "İ",
];

const POSTCODE_FRAGMENTS: &[&str] = &[
    "D-",
    "DE-",
    "DE",
    "D",
    "A-",
    "CH-",
    "NL",
    "PL",
    "0",
    "1",
    "01067",
    "1067",
    "10115",
    "8001",
    "1234",
    "AB",
    "ab",
    "12-345",
    "123 45",
    "-",
    " ",
    "  ",
    "X",
    "ẞ",
    "ß",
    "İ",
    "ı",
    "\u{200B}",
    "٣",
    "５",
    "😀",
    "9",
    "99999",
    "123456789",
];

const COUNTRIES: &[&str] = &[
    "DE",
    "de",
    "D",
    "DEU",
    "Deutschland",
    "AT",
    "A",
    "Österreich",
    "CH",
    "Schweiz",
    "LI",
    "NL",
    "PL",
    "CZ",
    "SE",
    "PT",
    "US",
    "GB",
    "FR",
    "IT",
    "BE",
    "XX",
    "",
    "İT",
    "ß",
    "ẞ",
    "Германия",
];

const DATE_FRAGMENTS: &[&str] = &[
    "1980", "80", "05", "5", "17", "31", "29", "02", "2", "00", "0", "1900", "2100", "2101",
    "1899", "30", "19800517", ".", "-", "/", " ", "T", "00:00:00", "ä", "ß", "😀", "٣", "１",
    "\u{200B}", "+", "a",
];

/// Text made of up to `max` pieces of `fragments`, interleaved with arbitrary characters.
fn pieces(fragments: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => proptest::sample::select(fragments).prop_map(str::to_string),
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..=max).prop_map(|v| v.concat())
}

/// Arbitrary Unicode (any scalar value, any length up to a few dozen), German-flavoured text,
/// and the two mixed.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        1 => "[a-zA-Z0-9äöüÄÖÜß .,'-]{0,40}",
        4 => pieces(FRAGMENTS, 12),
    ]
}

fn email_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        // Near the limits: 64 octets of local part, 63 of a label, 254 of an address.
        1 => "[a-z.+]{60,68}@[a-z-]{58,68}\\.[a-z-]{58,68}\\.[a-z]{2,3}",
        6 => pieces(EMAIL_FRAGMENTS, 10),
    ]
}

fn phone_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        2 => "[+0-9 ()/-]{0,24}",
        6 => pieces(PHONE_FRAGMENTS, 10),
    ]
}

fn street_text() -> impl Strategy<Value = String> {
    prop_oneof![1 => text(), 4 => pieces(STREET_FRAGMENTS, 8)]
}

fn postcode_text() -> impl Strategy<Value = String> {
    prop_oneof![1 => any::<String>(), 4 => pieces(POSTCODE_FRAGMENTS, 5)]
}

fn date_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        2 => "[0-9./ -]{0,14}",
        5 => pieces(DATE_FRAGMENTS, 6),
    ]
}

fn country() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(COUNTRIES).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

/// Pairs where the two sides are often close: a string and an edited copy of it (the pairs
/// similarity measures are for), besides independent pairs.
fn pair() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (text(), text()),
        (text(), any::<prop::sample::Index>(), text()).prop_map(|(a, at, insert)| {
            let chars: Vec<char> = a.chars().collect();
            let cut = at.index(chars.len() + 1);
            let b: String = chars[..cut]
                .iter()
                .chain(insert.chars().take(2).collect::<Vec<_>>().iter())
                .chain(chars[(cut + 1).min(chars.len())..].iter())
                .collect();
            (a, b)
        }),
        (text(), any::<prop::sample::Index>()).prop_map(|(a, at)| {
            // A swap of two neighbours, the typo Damerau counts once.
            let mut chars: Vec<char> = a.chars().collect();
            if chars.len() >= 2 {
                let i = at.index(chars.len() - 1);
                chars.swap(i, i + 1);
            }
            (a, chars.into_iter().collect())
        }),
    ]
}

// ---- properties ---------------------------------------------------------------------------

/// `f(f(x)) == f(x)` for every `x` that `f` accepts.
fn idempotent(
    f: impl Fn(&str) -> Option<String>,
    x: &str,
) -> Result<Option<String>, TestCaseError> {
    let once = f(x);
    if let Some(y) = &once {
        let twice = f(y);
        prop_assert_eq!(twice.as_deref(), Some(y.as_str()), "input {:?}", x);
    }
    Ok(once)
}

#[test]
fn fuzz_normalize_email() {
    fuzz("normalize_email", email_text(), |x| {
        if let Some(e) = idempotent(email::normalize_email, &x)? {
            prop_assert!(e.len() <= 254 && e.contains('@'), "{:?} -> {:?}", x, e);
            prop_assert!(!e.contains(char::is_whitespace), "{:?} -> {:?}", x, e);
        }
        Ok(())
    });
}

#[test]
fn fuzz_email_match_key() {
    fuzz("email_match_key", email_text(), |x| {
        let key = idempotent(email::email_match_key, &x)?;
        // The key is a function of the normalized address.
        if let Some(e) = email::normalize_email(&x) {
            prop_assert_eq!(email::email_match_key(&e), key, "input {:?}", x);
        } else {
            prop_assert_eq!(key, None, "input {:?}", x);
        }
        Ok(())
    });
}

#[test]
fn fuzz_normalize_phone() {
    let de = phone::parse_region("DE").unwrap();
    let at = phone::parse_region("AT").unwrap();
    fuzz("normalize_phone", phone_text(), |x| {
        let e164 = idempotent(|s| phone::normalize_phone(s, de), &x)?;
        // phone_kind answers exactly for the valid numbers.
        prop_assert_eq!(
            phone::phone_kind(&x, de).is_some(),
            e164.is_some(),
            "input {:?}",
            x
        );
        if let Some(p) = e164 {
            prop_assert!(
                p.starts_with('+') && p.len() > 1 && p[1..].bytes().all(|b| b.is_ascii_digit()),
                "{:?} -> {:?}",
                x,
                p
            );
            // E.164 carries its country: the default region no longer matters.
            prop_assert_eq!(phone::normalize_phone(&p, at), Some(p.clone()));
        }
        Ok(())
    });
}

/// The fast path of `normalize_phone` for German numbers as usually written gives exactly
/// what libphonenumber's parser gives: over generated numbers in many spellings (each case a
/// seed for `phone::tests::written_german_number`) and over arbitrary phone-like text.
#[test]
fn fuzz_german_phone_fast_path() {
    let de = phone::parse_region("DE").unwrap();
    fuzz(
        "german_phone_fast_path",
        (any::<u64>(), phone_text()),
        |(seed, text)| {
            let written = phone::tests::written_german_number(crate::test_draws(seed));
            for input in [written, text] {
                let parsed = phone::normalize_phone_parsed(&input, de);
                if let Some(fast) = phone::german_number_as_written(&input) {
                    prop_assert_eq!(&fast, &parsed, "input {:?}", input);
                }
                prop_assert_eq!(
                    phone::normalize_phone(&input, de),
                    parsed,
                    "input {:?}",
                    input
                );
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_normalize_name() {
    fuzz("normalize_name", text(), |x| {
        if let Some(n) = idempotent(name::normalize_name, &x)? {
            prop_assert!(n.chars().any(char::is_alphabetic), "{:?} -> {:?}", x, n);
            prop_assert!(
                !n.starts_with([' ', '-'])
                    && !n.ends_with([' ', '-'])
                    && !n.contains("  ")
                    && !n.contains(|c: char| c.is_whitespace() && c != ' '),
                "{:?} -> {:?}",
                x,
                n
            );
            prop_assert!(!n.chars().any(char::is_uppercase), "{:?} -> {:?}", x, n);
        }
        Ok(())
    });
}

#[test]
fn fuzz_split_full_name() {
    fuzz("split_full_name", text(), |x| {
        let (first, last) = name::split_full_name(&x);
        // Both parts are normalized names.
        for part in [&first, &last].into_iter().flatten() {
            prop_assert_eq!(
                name::normalize_name(part),
                Some(part.clone()),
                "input {:?}",
                x
            );
        }
        if !x.contains(',') {
            prop_assert_eq!(
                first.is_some() || last.is_some(),
                name::normalize_name(&x).is_some(),
                "input {:?}",
                x
            );
        }
        Ok(())
    });
}

#[test]
fn fuzz_transliterate_de() {
    fuzz("transliterate_de", text(), |x| {
        let t = translit::transliterate_de(&x);
        prop_assert_eq!(translit::transliterate_de(&t), t.clone(), "input {:?}", x);
        prop_assert!(
            !t.contains(['ä', 'ö', 'ü', 'Ä', 'Ö', 'Ü', 'ß', 'ẞ', 'é']),
            "{:?} -> {:?}",
            x,
            t
        );
        Ok(())
    });
}

#[test]
fn fuzz_split_street() {
    fuzz("split_street", street_text(), |x| {
        prop_assert_eq!(
            address::split_street(&x),
            address::tests::split_street_reference(&x),
            "input {:?}",
            x
        );
        let Some(parts) = address::split_street(&x) else {
            return Ok(());
        };
        prop_assert!(
            parts.street.chars().any(char::is_alphabetic),
            "{:?} -> {:?}",
            x,
            parts
        );
        if let Some(n) = &parts.house_number {
            prop_assert!(
                n.starts_with(|c: char| c.is_ascii_digit())
                    && !n.contains(char::is_whitespace)
                    && !n.chars().any(char::is_uppercase),
                "{:?} -> {:?}",
                x,
                parts
            );
        }
        // Splitting what it wrote gives the same parts again.
        let line = match &parts.house_number {
            Some(n) => format!("{} {n}", parts.street),
            None => parts.street.clone(),
        };
        prop_assert_eq!(address::split_street(&line), Some(parts), "input {:?}", x);
        Ok(())
    });
}

#[test]
fn fuzz_normalize_street() {
    fuzz("normalize_street", street_text(), |x| {
        idempotent(address::normalize_street, &x)?;
        Ok(())
    });
}

#[test]
fn fuzz_normalize_postcode() {
    fuzz(
        "normalize_postcode",
        (postcode_text(), country()),
        |(x, c)| {
            if let Some(p) = idempotent(|s| address::normalize_postcode(s, &c), &x)? {
                prop_assert!(
                    p.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == ' ' || ch == '-'),
                    "{:?} in {:?} -> {:?}",
                    x,
                    c,
                    p
                );
                // The country was understood, as a code.
                prop_assert!(address::country_code(&c).is_some());
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_normalize_country() {
    fuzz("normalize_country", country(), |x| {
        if let Some(c) = idempotent(address::country_code, &x)? {
            prop_assert!(
                c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()),
                "{:?} -> {:?}",
                x,
                c
            );
        }
        Ok(())
    });
}

#[test]
fn fuzz_normalize_date() {
    fuzz("normalize_date", date_text(), |x| {
        if let Some((y, m, d)) = date::parse_date(&x) {
            let iso = format!("{y:04}-{m:02}-{d:02}");
            // A real date in range, written back as ISO, reads the same.
            prop_assert!((1900..=2100).contains(&y), "{:?} -> {}", x, iso);
            prop_assert_eq!(date::parse_date(&iso), Some((y, m, d)), "input {:?}", x);
            prop_assert_eq!(
                date::parse_date(&format!("{d:02}.{m:02}.{y:04}")),
                Some((y, m, d))
            );
        }
        Ok(())
    });
}

#[test]
fn fuzz_iso_date_from_pg_days() {
    fuzz("iso_date_from_pg_days", any::<i32>(), |days| {
        if let Some(iso) = date::iso_date_from_pg_days(days) {
            prop_assert_eq!(iso.len(), 10, "{} -> {}", days, iso);
            let (y, m, d) = (&iso[..4], &iso[5..7], &iso[8..]);
            let (y, m, d): (i32, u32, u32) =
                (y.parse().unwrap(), m.parse().unwrap(), d.parse().unwrap());
            prop_assert!((1..=12).contains(&m) && (1..=31).contains(&d), "{}", iso);
            if (1900..=2100).contains(&y) {
                prop_assert_eq!(date::parse_date(&iso), Some((y, m, d)));
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_cologne_phonetic() {
    fuzz("cologne_phonetic", text(), |x| {
        let code = phonetic::cologne_phonetic(&x);
        if let Some(c) = &code {
            prop_assert!(
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()),
                "{:?} -> {:?}",
                x,
                c
            );
        }
        // Transliterated first: Müller and Mueller share their code.
        prop_assert_eq!(
            phonetic::cologne_phonetic(&translit::transliterate_de(&x)),
            code,
            "input {:?}",
            x
        );
        Ok(())
    });
}

#[test]
fn fuzz_double_metaphone() {
    fuzz("double_metaphone", text(), |x| {
        for f in [phonetic::double_metaphone, phonetic::double_metaphone_alt] {
            let code = f(&x);
            if let Some(c) = &code {
                prop_assert!(
                    (1..=4).contains(&c.len())
                        && c.bytes().all(|b| b.is_ascii_uppercase() || b == b'0'),
                    "{:?} -> {:?}",
                    x,
                    c
                );
            }
            prop_assert_eq!(f(&translit::transliterate_de(&x)), code, "input {:?}", x);
        }
        Ok(())
    });
}

#[test]
fn fuzz_jaro_winkler() {
    fuzz("jaro_winkler", pair(), |(a, b)| {
        let (Ok(ab), Ok(ba)) = (sim::jaro_winkler(&a, &b), sim::jaro_winkler(&b, &a)) else {
            return Err(TestCaseError::fail("short inputs refused"));
        };
        prop_assert!((0.0..=1.0).contains(&ab), "{:?} {:?} -> {}", a, b, ab);
        prop_assert_eq!(
            ab.to_bits(),
            ba.to_bits(),
            "{:?} {:?}: {} vs {}",
            a,
            b,
            ab,
            ba
        );
        prop_assert_eq!(sim::jaro_winkler(&a, &a), Ok(1.0));
        // The same figure as strsim (Splink's jellyfish agrees with it).
        let reference = strsim::jaro_winkler(&a, &b);
        prop_assert!(
            (ab - reference).abs() < 1e-12,
            "{:?} {:?}: {} vs strsim {}",
            a,
            b,
            ab,
            reference
        );
        // The bounded variant agrees with the full computation at any floor.
        for floor in [0.5, 0.8, 0.92, ab] {
            prop_assert_eq!(
                sim::jaro_winkler_above_bound(&a, &b, floor),
                (ab >= floor).then_some(ab),
                "{:?} {:?} floor {}",
                a,
                b,
                floor
            );
        }
        Ok(())
    });
}

#[test]
fn fuzz_levenshtein() {
    fuzz("levenshtein", (pair(), text()), |((a, b), c)| {
        let d = |x: &str, y: &str| sim::levenshtein(x, y).expect("short inputs");
        let ab = d(&a, &b);
        prop_assert_eq!(ab, d(&b, &a), "{:?} {:?}", a, b);
        prop_assert_eq!(ab == 0, a == b, "{:?} {:?}", a, b);
        let (la, lb) = (a.chars().count(), b.chars().count());
        prop_assert!(ab >= la.abs_diff(lb) && ab <= la.max(lb), "{:?} {:?}", a, b);
        prop_assert!(ab <= d(&a, &c) + d(&c, &b), "{:?} {:?} via {:?}", a, b, c);
        prop_assert_eq!(
            ab,
            strsim::generic_levenshtein(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>()
            )
        );
        Ok(())
    });
}

#[test]
fn fuzz_damerau_levenshtein() {
    fuzz("damerau_levenshtein", (pair(), text()), |((a, b), c)| {
        let d = |x: &str, y: &str| sim::damerau_levenshtein(x, y).expect("short inputs");
        let ab = d(&a, &b);
        prop_assert_eq!(ab, d(&b, &a), "{:?} {:?}", a, b);
        prop_assert_eq!(ab == 0, a == b, "{:?} {:?}", a, b);
        prop_assert!(ab <= sim::levenshtein(&a, &b).unwrap(), "{:?} {:?}", a, b);
        prop_assert!(ab <= d(&a, &c) + d(&c, &b), "{:?} {:?} via {:?}", a, b, c);
        // The one-pass typo test is "distance at most one".
        prop_assert_eq!(sim::within_one_edit(&a, &b), ab <= 1, "{:?} {:?}", a, b);
        Ok(())
    });
}

#[test]
fn fuzz_jaccard_tokens() {
    fuzz("jaccard_tokens", pair(), |(a, b)| {
        let ab = sim::jaccard_tokens(&a, &b);
        prop_assert!((0.0..=1.0).contains(&ab), "{:?} {:?} -> {}", a, b, ab);
        prop_assert_eq!(
            ab.to_bits(),
            sim::jaccard_tokens(&b, &a).to_bits(),
            "{:?} {:?}",
            a,
            b
        );
        prop_assert_eq!(sim::jaccard_tokens(&a, &a), 1.0, "{:?}", a);
        Ok(())
    });
}

/// The ad platforms' identifiers (`crate::audience`): no panic; a hash is 64 lowercase hex
/// digits and the SHA-256 of the platform's normalised form; the normalised e-mails are
/// idempotent and hold no whitespace; Meta's names hold no punctuation or space.
#[test]
fn fuzz_audience_hashing() {
    use crate::audience as a;
    fn is_hex64(h: &str) -> bool {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
    fuzz("audience_email", email_text(), |x| {
        for f in [a::google_email, a::meta_email] {
            if let Some(e) = idempotent(f, &x)? {
                prop_assert!(!e.contains(char::is_whitespace), "{:?} -> {:?}", x, e);
                let h = a::hashed(Some(e.clone())).unwrap();
                prop_assert!(is_hex64(&h) && h == a::sha256_hex(&e), "{:?}", x);
            }
        }
        Ok(())
    });
    fuzz("audience_phone", phone_text(), |x| {
        let google = a::google_phone(&x, "DE");
        let meta = a::meta_phone(&x, "DE");
        // Meta's form is Google's without the plus, and only digits.
        prop_assert_eq!(
            google.as_deref().map(|g| g.trim_start_matches('+')),
            meta.as_deref(),
            "input {:?}",
            x
        );
        if let Some(m) = &meta {
            prop_assert!(
                m.bytes().all(|b| b.is_ascii_digit()) && !m.starts_with('0'),
                "{:?} -> {:?}",
                x,
                m
            );
        }
        Ok(())
    });
    fuzz("audience_name", text(), |x| {
        if let Some(n) = a::meta_name(&x) {
            prop_assert!(
                n.chars()
                    .all(|c| !c.is_whitespace() && !c.is_ascii_punctuation()),
                "{:?} -> {:?}",
                x,
                n
            );
            prop_assert!(is_hex64(&a::sha256_hex(&n)), "{:?}", x);
        }
        if let Some(g) = a::google_name(&x) {
            prop_assert!(
                g == g.trim() && !g.is_empty() && g.to_lowercase() == g,
                "{:?} -> {:?}",
                x,
                g
            );
        }
        Ok(())
    });
    fuzz("audience_zip", (postcode_text(), country()), |(x, c)| {
        if let Some(z) = a::meta_zip(&x, &c) {
            prop_assert!(
                !z.is_empty() && !z.contains(char::is_whitespace) && !z.contains('-'),
                "{:?} -> {:?}",
                x,
                z
            );
            prop_assert_eq!(z.to_lowercase(), z.clone(), "input {:?}", x);
        }
        Ok(())
    });
}

/// The combined cleaner sync calls once per row gives, field for field, what the single
/// cleaners give combined as sync combined them (`normalize::contact`), NULLs included.
#[test]
fn fuzz_clean_contact() {
    use crate::normalize::contact::{clean_contact, tests::by_individual_cleaners, RawContact};
    use proptest::option::of;
    let strategy = (
        (of(text()), of(text()), of(text()), of(text()), of(text())),
        (of(email_text()), of(phone_text()), of(phone_text())),
        (of(street_text()), of(street_text()), of(street_text())),
        (
            of(postcode_text()),
            of(text()),
            of(country()),
            of(date_text()),
        ),
    );
    fuzz(
        "clean_contact",
        strategy,
        |(
            (salutation, title, first_name, last_name, full_name),
            (email, phone, mobile),
            (street, house_number, street_line),
            (postcode, city, country, birth_date),
        )| {
            let raw = RawContact {
                salutation: salutation.as_deref(),
                title: title.as_deref(),
                first_name: first_name.as_deref(),
                last_name: last_name.as_deref(),
                full_name: full_name.as_deref(),
                email: email.as_deref(),
                phone: phone.as_deref(),
                mobile: mobile.as_deref(),
                street: street.as_deref(),
                house_number: house_number.as_deref(),
                street_line: street_line.as_deref(),
                postcode: postcode.as_deref(),
                city: city.as_deref(),
                country: country.as_deref(),
                birth_date: birth_date.as_deref(),
            };
            prop_assert_eq!(
                clean_contact(&raw),
                by_individual_cleaners(&raw),
                "input {:?}",
                raw
            );
            Ok(())
        },
    );
}
