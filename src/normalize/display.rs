//! Display values: a record's own value as written, tidied for a letter or a screen, never
//! rebuilt from a match key. Umlauts, ß and the spelling the customer chose stay (`Mueller`
//! stays `Mueller`: it may be the name as the customer writes it); only the form is tidied:
//! whitespace, hyphens, salutations and titles out of name fields, and the case of a value
//! written wholly in capitals or wholly in lower case (`MÜLLER`, `müller` → `Müller`;
//! `VON DER HEIDE` → `von der Heide`). A value in mixed case is the customer's own and kept
//! (`McDonald`, `von Trapp`, `DuBois`).

use unicode_normalization::UnicodeNormalization;

use super::name::{is_title, last_name_start, tidy_word, NAME_PARTICLES};

/// Small words of place and street names that stay lower case inside them when a value is
/// recased (`Frankfurt am Main`, `Straße des 17. Juni`, `Weg zur Mühle`).
const PLACE_SMALL_WORDS: &[&str] = &[
    "am", "an", "auf", "bei", "der", "den", "des", "dem", "die", "das", "im", "in", "ob", "vor",
    "zum", "zur", "zu", "und", "unter", "von", "vom", "ad", "a", "d", "i",
];

/// Whether the letters of `s` need their case tidied: none lower case (all capitals) or none
/// upper case (all small). `ß` counts for neither (it has no common capital: `STRAßE`).
fn needs_recasing(s: &str) -> bool {
    let mut upper = false;
    let mut lower = false;
    for c in s.chars().filter(|c| *c != 'ß') {
        upper |= c.is_uppercase();
        lower |= c.is_lowercase();
    }
    !(upper && lower)
}

/// `word` with its first letter, and each letter after a hyphen, apostrophe, bracket or dot,
/// in capitals and the rest small: `hans-peter` → `Hans-Peter`, `o'brien` → `O'Brien`.
fn capitalize(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut start = true;
    for c in word.chars() {
        if c.is_alphabetic() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        } else {
            out.push(c);
            start = matches!(c, '-' | '\'' | '(' | '/' | '.');
        }
    }
    out
}

/// Recases the words of a value written in one case: small words (per `small`) lower case
/// where another word follows them and they are not the first, the others capitalized.
fn recase(words: &[String], small: &dyn Fn(&str, usize) -> bool) -> Vec<String> {
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let lower = w.to_lowercase();
            if small(&lower, i) {
                lower
            } else {
                capitalize(&lower)
            }
        })
        .collect()
}

/// A generation suffix in its written form (`JUN` → `jun.`, `jr` → `Jr.`); None for other words.
fn generation_suffix(word: &str) -> Option<&'static str> {
    match tidy_word(&word.to_lowercase()).as_str() {
        "jun" => Some("jun."),
        "sen" => Some("sen."),
        "jr" => Some("Jr."),
        "sr" => Some("Sr."),
        _ => None,
    }
}

/// The words of a name field as written, tidied: NFKC, invisible characters, digits and symbols
/// out, hyphen and apostrophe look-alikes unified, `Hans - Peter` → `Hans-Peter`, salutations and
/// titles dropped. Dots of initials stay (`H.-P.`).
fn name_words(raw: &str) -> Vec<String> {
    if raw.len() > super::MAX_FIELD_BYTES {
        return Vec::new();
    }
    let mut cleaned = String::with_capacity(raw.len());
    for c in raw.nfkc().filter(|c| !super::is_invisible(*c)) {
        let c = match c {
            '‐' | '‑' | '‒' | '–' | '—' => '-',
            '’' | '‘' | '`' | '´' | 'ʼ' => '\'',
            c => c,
        };
        // A symbol drawn as a capital letter (`🅐`) has no lower case: dropped.
        let symbol = c.is_uppercase() && c.to_lowercase().eq(std::iter::once(c));
        let keep = (c.is_alphabetic() && !symbol)
            || unicode_normalization::char::is_combining_mark(c)
            || matches!(c, '\'' | '.' | '-');
        cleaned.push(if keep { c } else { ' ' });
    }
    let mut out: Vec<String> = Vec::new();
    // The next word joins the one before with a hyphen (`Hans - Peter`, `Hans- Peter`).
    let mut glue = false;
    for raw_word in cleaned.split_whitespace() {
        let lower = raw_word.to_lowercase();
        if is_title(&lower) || is_title(&tidy_word(&lower)) {
            continue;
        }
        let mut word: String = raw_word.to_string();
        while word.contains("--") {
            word = word.replace("--", "-");
        }
        if word == "-" {
            glue = !out.is_empty();
            continue;
        }
        if !word.chars().any(char::is_alphabetic) {
            continue;
        }
        let core = word.trim_matches('-');
        match out.last_mut() {
            Some(last) if glue || word.starts_with('-') => {
                last.push('-');
                last.push_str(core);
            }
            _ => out.push(core.to_string()),
        }
        glue = word.ends_with('-');
    }
    out.retain(|w| w.chars().any(char::is_alphabetic));
    out
}

/// The words of a name in their display case (see the module); a generation suffix written
/// small or with a dot after another word in its written form (`jun` → `jun.`, `JR` → `Jr.`).
fn name_case(words: Vec<String>) -> Vec<String> {
    let n = words.len();
    let suffix: Vec<Option<&'static str>> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let written_as_name = capitalize(&w.to_lowercase()) == *w && !w.contains('.');
            generation_suffix(w).filter(|_| i > 0 && (!written_as_name || n >= 3))
        })
        .collect();
    let recased = if needs_recasing(&words.join(" ")) {
        recase(&words, &|w, i| i + 1 < n && NAME_PARTICLES.contains(&w))
    } else {
        words
    };
    recased
        .into_iter()
        .zip(suffix)
        .map(|(w, s)| s.map_or(w, String::from))
        .collect()
}

/// A name field (first or last name) as written, tidied: `MÜLLER` → `Müller`, `hans-peter` →
/// `Hans-Peter`, `VON DER HEIDE` → `von der Heide`, `Dr. Anna` → `Anna`, `Heide jun` → `Heide
/// jun.`. None when no letter is left.
pub fn display_name(raw: &str) -> Option<String> {
    let words = name_case(name_words(raw));
    (!words.is_empty()).then(|| nfc(words.join(" ")))
}

fn nfc(s: String) -> String {
    if s.is_ascii() {
        s
    } else {
        s.nfc().collect()
    }
}

/// A full name split into first and last name as written, tidied (as `display_name`): the same
/// split as `name::split_full_name` (`Last, First`; particles and a generation suffix with the
/// last name), on the written words.
pub fn split_display_name(raw: &str) -> (Option<String>, Option<String>) {
    if let Some((last, first)) = raw.split_once(',') {
        return (display_name(first), display_name(last));
    }
    let words = name_case(name_words(raw));
    if words.is_empty() {
        return (None, None);
    }
    let keys: Vec<String> = words.iter().map(|w| tidy_word(&w.to_lowercase())).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let start = last_name_start(&keys);
    let first = (start > 0).then(|| nfc(words[..start].join(" ")));
    (first, Some(nfc(words[start..].join(" "))))
}

/// The display form of a normalized name key, when a record's written value yields none:
/// `hans-peter müller` → `Hans-Peter Müller`.
pub fn display_from_key(key: &str) -> String {
    let words: Vec<String> = key.split_whitespace().map(String::from).collect();
    nfc(name_case(words).join(" "))
}

/// Whitespace collapsed, invisible characters dropped, NFC; None when nothing is left.
fn tidy_text(raw: &str) -> Option<String> {
    if raw.len() > super::MAX_FIELD_BYTES {
        return None;
    }
    let cleaned: String = raw
        .nfc()
        .filter(|c| !super::is_invisible(*c))
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    cleaned
        .chars()
        .any(char::is_alphanumeric)
        .then_some(cleaned)
}

/// A place or street name in display case: kept as written when in mixed case; otherwise
/// words capitalized and small words inside lower case (`FRANKFURT AM MAIN` → `Frankfurt am
/// Main`, `kölner platz` → `Kölner Platz`, `KARL-MARX-STR.` → `Karl-Marx-Str.`).
fn place_case(text: String) -> String {
    if !needs_recasing(&text) {
        return text;
    }
    let words: Vec<String> = text.split(' ').map(String::from).collect();
    let n = words.len();
    recase(&words, &|w, i| {
        i > 0 && i + 1 < n && PLACE_SMALL_WORDS.contains(&w)
    })
    .join(" ")
}

/// A street name (without its house number) as written, tidied: `Kölner Platz`, `KÖLNER
/// PLATZ` → `Kölner Platz`, `hauptstr.` → `Hauptstr.`.
pub fn display_street(raw: &str) -> Option<String> {
    tidy_text(raw).map(place_case)
}

/// A city as written, tidied: `Nürnberg`, `NÜRNBERG` → `Nürnberg`, `frankfurt am main` →
/// `Frankfurt am Main`, `halle (saale)` → `Halle (Saale)`.
pub fn display_city(raw: &str) -> Option<String> {
    tidy_text(raw).map(place_case)
}

/// An e-mail address for display: the normalized address with an internationalized domain in
/// its Unicode form (`max@xn--mller-kva.de` → `max@müller.de`).
pub fn display_email(normalized: &str) -> Option<String> {
    let (local, domain) = normalized.rsplit_once('@')?;
    let (unicode, result) = idna::domain_to_unicode(domain);
    let domain = if result.is_ok() {
        unicode
    } else {
        domain.to_string()
    };
    Some(format!("{local}@{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<String> {
        display_name(s)
    }

    #[test]
    fn names_keep_their_spelling_and_get_their_case() {
        assert_eq!(d("MÜLLER").as_deref(), Some("Müller"));
        assert_eq!(d("müller").as_deref(), Some("Müller"));
        assert_eq!(d("Müller").as_deref(), Some("Müller"));
        // The record's own spelling stays: never turned into ü.
        assert_eq!(d("mueller").as_deref(), Some("Mueller"));
        assert_eq!(d("GROẞ").as_deref(), Some("Groß"));
        assert_eq!(d("STRAUß").as_deref(), Some("Strauß"));
        assert_eq!(d("HANS-PETER").as_deref(), Some("Hans-Peter"));
        assert_eq!(d("Hans - Peter").as_deref(), Some("Hans-Peter"));
        assert_eq!(d("hans–peter").as_deref(), Some("Hans-Peter"));
        assert_eq!(d("VON DER HEIDE").as_deref(), Some("von der Heide"));
        assert_eq!(d("von der heide").as_deref(), Some("von der Heide"));
        assert_eq!(d("von der Heide").as_deref(), Some("von der Heide"));
        assert_eq!(d("O’BRIEN").as_deref(), Some("O'Brien"));
        // Mixed case is the customer's own.
        assert_eq!(d("McDonald").as_deref(), Some("McDonald"));
        assert_eq!(d("DuBois").as_deref(), Some("DuBois"));
        assert_eq!(d("  Anna   Maria ").as_deref(), Some("Anna Maria"));
        assert_eq!(d("H.-P.").as_deref(), Some("H.-P."));
        assert_eq!(d("Dr. Anna").as_deref(), Some("Anna"));
        assert_eq!(d("Herr Hans").as_deref(), Some("Hans"));
        assert_eq!(d("Heide jun").as_deref(), Some("Heide jun."));
        assert_eq!(d("MÜLLER SEN.").as_deref(), Some("Müller sen."));
        assert_eq!(d("Müller2").as_deref(), Some("Müller"));
        assert_eq!(d("Mu\u{0308}ller").as_deref(), Some("Müller"));
        assert_eq!(d("ＭÜＬＬＥＲ").as_deref(), Some("Müller"));
        assert_eq!(d("Van").as_deref(), Some("Van"));
        for bad in ["", "  ", "Herr", "Dr.", "123", "---", "😀"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn full_names_split_as_written() {
        let s = |x: &str| {
            let (f, l) = split_display_name(x);
            (f.unwrap_or_default(), l.unwrap_or_default())
        };
        assert_eq!(
            s("Hans von der Heide jun."),
            ("Hans".into(), "von der Heide jun.".into())
        );
        assert_eq!(
            s("HANS VON DER HEIDE"),
            ("Hans".into(), "von der Heide".into())
        );
        assert_eq!(s("MÜLLER, Hans"), ("Hans".into(), "Müller".into()));
        assert_eq!(
            s("Herr Dr. Hans-Peter Müller"),
            ("Hans-Peter".into(), "Müller".into())
        );
        assert_eq!(s("Schmidt, Anna"), ("Anna".into(), "Schmidt".into()));
        assert_eq!(s("Müller"), (String::new(), "Müller".into()));
    }

    #[test]
    fn streets_and_cities_as_written() {
        assert_eq!(
            display_street("Kölner Platz").as_deref(),
            Some("Kölner Platz")
        );
        assert_eq!(
            display_street("KÖLNER  PLATZ").as_deref(),
            Some("Kölner Platz")
        );
        assert_eq!(display_street("hauptstr.").as_deref(), Some("Hauptstr."));
        assert_eq!(
            display_street("KARL-MARX-STR.").as_deref(),
            Some("Karl-Marx-Str.")
        );
        assert_eq!(
            display_street("STRASSE DES 17. JUNI").as_deref(),
            Some("Strasse des 17. Juni")
        );
        assert_eq!(display_city("Nürnberg").as_deref(), Some("Nürnberg"));
        assert_eq!(display_city("NÜRNBERG").as_deref(), Some("Nürnberg"));
        assert_eq!(
            display_city("frankfurt am main").as_deref(),
            Some("Frankfurt am Main")
        );
        assert_eq!(
            display_city("HALLE (SAALE)").as_deref(),
            Some("Halle (Saale)")
        );
        assert_eq!(display_city("  "), None);
    }

    #[test]
    fn e_mail_for_display() {
        assert_eq!(
            display_email("max@xn--mller-kva.de").as_deref(),
            Some("max@müller.de")
        );
        assert_eq!(display_email("anna@web.de").as_deref(), Some("anna@web.de"));
        assert_eq!(
            display_from_key("hans-peter von der heide"),
            "Hans-Peter von der Heide"
        );
    }
}
