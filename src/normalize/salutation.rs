//! Salutation and academic title: read from a salutation or title field, or from the words in
//! front of a name (`Herr Dr. Hans Meier`), never guessed from a first name; and the letter
//! salutation made of them (`Sehr geehrte Frau Dr. Müller`).

use super::name::{is_title, tidy_word};

/// The four salutations a golden record knows.
pub const HERR: &str = "Herr";
pub const FRAU: &str = "Frau";
pub const DIVERS: &str = "divers";
pub const FAMILIE: &str = "Familie";

/// A salutation word (lowercased, without dots) and the salutation it stands for.
fn salutation_word(word: &str) -> Option<&'static str> {
    Some(match word {
        "herr" | "herrn" | "hr" | "mr" | "mister" | "monsieur" | "sir" | "signor" | "señor" => {
            HERR
        }
        "frau" | "fr" | "fräulein" | "frl" | "mrs" | "ms" | "miss" | "madame" | "mme" | "mlle"
        | "signora" | "señora" => FRAU,
        "divers" | "div" | "mx" => DIVERS,
        "familie" | "fam" | "eheleute" | "family" => FAMILIE,
        _ => return None,
    })
}

/// The words of a field, lowercased, dots dropped, split at whitespace, `,`, `/` and `&`.
fn words(raw: &str) -> Vec<String> {
    raw.split(|c: char| c.is_whitespace() || matches!(c, ',' | '/' | '&' | '+' | ';'))
        .map(|w| tidy_word(&w.to_lowercase()).trim_matches('-').to_string())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The salutation of a salutation field: `Herr`, `Frau`, `divers` or `Familie`; None for
/// anything else (empty, `keine Angabe`, `Firma`). Accepts `Hr.`, `Herrn`, `Fr.`, `Mr`, `Mrs`,
/// `Ms`, `Miss`, `Frau Dr.` (the title is read by `normalize_title`), `Eheleute`, `Fam.`, and
/// `Herr und Frau` (two people addressed together: `Familie`). A field that is one letter is read
/// as the German form's code: `m` Herr, `w` Frau, `d` divers (nothing else: `f` could be female
/// or `Familie`).
pub fn normalize_salutation(raw: &str) -> Option<&'static str> {
    if raw.len() > super::MAX_FIELD_BYTES {
        return None;
    }
    let words = words(raw);
    if let [one] = words.as_slice() {
        match one.as_str() {
            "m" => return Some(HERR),
            "w" => return Some(FRAU),
            "d" => return Some(DIVERS),
            _ => {}
        }
    }
    let found: Vec<&'static str> = words.iter().filter_map(|w| salutation_word(w)).collect();
    if found.contains(&FAMILIE) || (found.contains(&HERR) && found.contains(&FRAU)) {
        return Some(FAMILIE);
    }
    found.first().copied()
}

/// The canonical spelling of one title part (lowercased, without dots).
fn title_part(part: &str) -> Option<&'static str> {
    Some(match part {
        "prof" | "professor" | "professorin" => "Prof.",
        "dr" | "doktor" => "Dr.",
        "dr-ing" => "Dr.-Ing.",
        "dipl-ing" => "Dipl.-Ing.",
        "dipl-kfm" => "Dipl.-Kfm.",
        "dipl-kff" => "Dipl.-Kff.",
        "dipl-inf" => "Dipl.-Inf.",
        "dipl-psych" => "Dipl.-Psych.",
        "dipl" => "Dipl.",
        "mag" => "Mag.",
        "ing" => "Ing.",
        "med" => "med.",
        "dent" => "dent.",
        "vet" => "vet.",
        "rer" => "rer.",
        "nat" => "nat.",
        "pol" => "pol.",
        "phil" => "phil.",
        "jur" => "jur.",
        "iur" => "iur.",
        "oec" => "oec.",
        "sc" => "sc.",
        "theol" => "theol.",
        "habil" => "habil.",
        "mult" => "mult.",
        "univ" => "Univ.",
        "techn" => "techn.",
        "hc" => "h. c.",
        _ => return None,
    })
}

/// The title parts of one word (`Dr.`, `Dr.med.`, `Dipl.-Ing.`, `h.c.`), canonical; None when
/// some part of it is no title.
fn title_parts(word: &str) -> Option<Vec<&'static str>> {
    let lower = word.to_lowercase();
    let lower = lower.trim_matches('-');
    let joined = tidy_word(lower);
    if joined == "hc" {
        return Some(vec!["h. c."]);
    }
    if let Some(t) = title_part(&joined) {
        return Some(vec![t]);
    }
    let parts: Vec<&str> = lower.split('.').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        // `h.c.` written inside a word: two parts, one title.
        if parts[i] == "h" && parts.get(i + 1) == Some(&"c") {
            out.push("h. c.");
            i += 2;
            continue;
        }
        out.push(title_part(&tidy_word(parts[i]))?);
        i += 1;
    }
    Some(out)
}

/// An academic title as a title field holds it, tidied: `PROF. DR. MED.` → `Prof. Dr. med.`,
/// `dr` → `Dr.`, `Dipl.-Ing.` kept. Salutations in the field (`Herr Dr.`) are skipped, and so is
/// any word that is no academic title. None when no title is left.
pub fn normalize_title(raw: &str) -> Option<String> {
    if raw.len() > super::MAX_FIELD_BYTES {
        return None;
    }
    let mut out: Vec<&'static str> = Vec::new();
    for word in raw.split(|c: char| c.is_whitespace() || c == ',') {
        if let Some(parts) = title_parts(word) {
            out.extend(parts);
        }
    }
    (!out.is_empty()).then(|| out.join(" "))
}

/// Whether a word of a name is a salutation or title: lowercased, as written or tidied. A short
/// ASCII word is lowercased on the stack, and tidied only when tidying changes it (issue 27: the
/// first word of nearly every name is read here, two copies each).
fn word_is_title(word: &str) -> bool {
    let mut buf = [0u8; 32];
    if word.is_ascii() && word.len() <= buf.len() {
        let lower = &mut buf[..word.len()];
        lower.copy_from_slice(word.as_bytes());
        lower.make_ascii_lowercase();
        let lower = std::str::from_utf8(lower).expect("ASCII is UTF-8");
        // For ASCII, tidy_word only drops dots, turns ` into ' and joins runs of hyphens.
        return is_title(lower) || (lower.contains(['.', '`', '-']) && is_title(&tidy_word(lower)));
    }
    let lower = word.to_lowercase();
    is_title(&lower) || is_title(&tidy_word(&lower))
}

/// The words in front of the name in each comma-separated part of a name field (`Herr Dr. Hans
/// Meier`, `Meier, Frau Dr. Anna`): what `normalize_name` drops as salutation or title there.
fn leading_title_words(raw: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for part in raw.split(',') {
        for word in part.split_whitespace() {
            if word_is_title(word) {
                out.push(word);
            } else {
                break;
            }
        }
    }
    out
}

/// The salutation written in front of a name (`Herr Hans Meier`, `Frau Dr. Anna Schmidt`,
/// `Familie Schulz`). Only words in front of the name count: a name is never read as one.
pub fn salutation_in_name(raw: &str) -> Option<&'static str> {
    if raw.len() > super::MAX_FIELD_BYTES {
        return None;
    }
    let lead = leading_title_words(raw);
    if lead.is_empty() {
        return None;
    }
    // Only salutation words count here: a one-letter word in front of a name is an initial
    // (`M. Müller`), never `m` for Herr (such a word is no title, so it is not in `lead`).
    normalize_salutation(&lead.join(" "))
}

/// The academic title written in front of a name (`Dr. Anna Schmidt` → `Dr.`).
pub fn title_in_name(raw: &str) -> Option<String> {
    if raw.len() > super::MAX_FIELD_BYTES {
        return None;
    }
    let lead = leading_title_words(raw);
    normalize_title(&lead.join(" "))
}

/// [`salutation_in_name`] and [`title_in_name`] of one name, its leading words read once
/// (`unify._clean_contact` needs both for most rows).
pub fn salutation_and_title_in_name(raw: &str) -> (Option<&'static str>, Option<String>) {
    if raw.len() > super::MAX_FIELD_BYTES {
        return (None, None);
    }
    let lead = leading_title_words(raw);
    let joined = lead.join(" ");
    let salutation = if lead.is_empty() {
        None
    } else {
        normalize_salutation(&joined)
    };
    (salutation, normalize_title(&joined))
}

/// The title as a letter's salutation uses it: only `Prof.` and `Dr.` (`Prof. Dr. med.` →
/// `Prof. Dr.`, `Dr.-Ing.` → `Dr.`); diplomas and faculty names are left out of a salutation.
fn letter_title(title: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for word in title.split_whitespace() {
        if let Some(parts) = title_parts(word) {
            for p in parts {
                match p {
                    "Prof." => out.push("Prof."),
                    "Dr." | "Dr.-Ing." => out.push("Dr."),
                    _ => {}
                }
            }
        }
    }
    out.join(" ")
}

/// The salutation line of a letter or e-mail: `Sehr geehrte Frau Dr. Müller`, `Sehr geehrter
/// Herr Prof. Schulz`, `Sehr geehrte Familie Müller`; `Guten Tag Kim Schulz` where no salutation
/// is known, for `divers`, and where the last name is missing; `Guten Tag` with no name at all.
/// Never guessed from the first name.
pub fn letter_salutation(
    salutation: Option<&str>,
    title: Option<&str>,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> String {
    fn clean(s: Option<&str>) -> Option<&str> {
        s.map(str::trim).filter(|s| !s.is_empty())
    }
    let (first, last) = (clean(first_name), clean(last_name));
    let title = clean(title).map(letter_title).filter(|t| !t.is_empty());
    let join = |parts: &[Option<&str>]| {
        parts
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let salutation = clean(salutation).and_then(normalize_salutation);
    match (salutation, last) {
        (Some(HERR), Some(last)) => {
            join(&[Some("Sehr geehrter Herr"), title.as_deref(), Some(last)])
        }
        (Some(FRAU), Some(last)) => {
            join(&[Some("Sehr geehrte Frau"), title.as_deref(), Some(last)])
        }
        (Some(FAMILIE), Some(last)) => join(&[Some("Sehr geehrte Familie"), Some(last)]),
        _ => join(&[Some("Guten Tag"), title.as_deref(), first, last]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salutation_and_title_in_name_equal_both() {
        for name in [
            "Herr Dr. Hans Meier",
            "Frau Prof. Dr. med. Anna von der Heide",
            "Meier, Frau Dr. Anna",
            "Familie Schulz",
            "M. Müller",
            "Dr.-Ing. Jörg Weiß",
            "Hans Meier",
            "",
            " , ",
            "Herr",
            "Dr.",
            "h.c. Hans",
            "Mrs Jane O'Neil",
        ] {
            assert_eq!(
                salutation_and_title_in_name(name),
                (salutation_in_name(name), title_in_name(name)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn salutation_fields() {
        for (raw, want) in [
            ("Herr", Some(HERR)),
            ("Hr.", Some(HERR)),
            ("HERRN", Some(HERR)),
            ("Mr", Some(HERR)),
            ("Frau", Some(FRAU)),
            ("Fr.", Some(FRAU)),
            ("Mrs.", Some(FRAU)),
            ("Ms", Some(FRAU)),
            ("Frau Dr.", Some(FRAU)),
            ("divers", Some(DIVERS)),
            ("Familie", Some(FAMILIE)),
            ("Fam.", Some(FAMILIE)),
            ("Eheleute", Some(FAMILIE)),
            ("Herr und Frau", Some(FAMILIE)),
            ("m", Some(HERR)),
            ("W", Some(FRAU)),
            ("d", Some(DIVERS)),
            ("f", None),
            ("Firma", None),
            ("keine Angabe", None),
            ("", None),
            ("Dr.", None),
        ] {
            assert_eq!(normalize_salutation(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn title_fields() {
        for (raw, want) in [
            ("Dr.", Some("Dr.")),
            ("dr", Some("Dr.")),
            ("PROF. DR. MED.", Some("Prof. Dr. med.")),
            ("Prof. Dr.", Some("Prof. Dr.")),
            ("Dr. med.", Some("Dr. med.")),
            ("Dr.med.dent.", Some("Dr. med. dent.")),
            ("Dipl.-Ing.", Some("Dipl.-Ing.")),
            ("Dr. h.c.", Some("Dr. h. c.")),
            ("Herr Dr.", Some("Dr.")),
            ("Herr", None),
            ("MBA", None),
            ("", None),
        ] {
            assert_eq!(normalize_title(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn salutation_and_title_inside_a_name() {
        assert_eq!(salutation_in_name("Herr Hans Meier"), Some(HERR));
        assert_eq!(salutation_in_name("Frau Dr. Anna Schmidt"), Some(FRAU));
        assert_eq!(
            title_in_name("Frau Dr. Anna Schmidt").as_deref(),
            Some("Dr.")
        );
        assert_eq!(title_in_name("Dr. Anna Schmidt").as_deref(), Some("Dr."));
        assert_eq!(salutation_in_name("Dr. Anna Schmidt"), None);
        assert_eq!(salutation_in_name("Schmidt, Frau Anna"), Some(FRAU));
        assert_eq!(salutation_in_name("Familie Schulz"), Some(FAMILIE));
        // Never from the name itself: a surname Herr, a first name Frauke, an initial.
        assert_eq!(salutation_in_name("Hans Herr"), None);
        assert_eq!(salutation_in_name("Frauke Meier"), None);
        assert_eq!(salutation_in_name("Anna Schmidt"), None);
        assert_eq!(title_in_name("Anna Schmidt"), None);
        assert_eq!(
            title_in_name("Prof. Dr. med. Klaus Meyer").as_deref(),
            Some("Prof. Dr. med.")
        );
    }

    #[test]
    fn letter_salutations() {
        let l = letter_salutation;
        assert_eq!(
            l(Some("Frau"), Some("Dr."), Some("Anna"), Some("Müller")),
            "Sehr geehrte Frau Dr. Müller"
        );
        assert_eq!(
            l(Some("Herr"), Some("Prof."), Some("Jan"), Some("Schulz")),
            "Sehr geehrter Herr Prof. Schulz"
        );
        assert_eq!(
            l(Some("Herr"), Some("Prof. Dr. med."), None, Some("Schulz")),
            "Sehr geehrter Herr Prof. Dr. Schulz"
        );
        assert_eq!(
            l(
                Some("Herr"),
                Some("Dipl.-Ing."),
                None,
                Some("von der Heide")
            ),
            "Sehr geehrter Herr von der Heide"
        );
        assert_eq!(
            l(None, None, Some("Kim"), Some("Schulz")),
            "Guten Tag Kim Schulz"
        );
        assert_eq!(
            l(Some("divers"), None, Some("Kim"), Some("Schulz")),
            "Guten Tag Kim Schulz"
        );
        assert_eq!(
            l(Some("Familie"), Some("Dr."), Some("Anna"), Some("Müller")),
            "Sehr geehrte Familie Müller"
        );
        assert_eq!(l(Some("Frau"), None, Some("Anna"), None), "Guten Tag Anna");
        assert_eq!(l(None, None, None, None), "Guten Tag");
    }

    #[test]
    fn word_is_title_equals_lowercasing_and_tidying_each_word() {
        let reference = |w: &str| {
            let lower = w.to_lowercase();
            is_title(&lower) || is_title(&tidy_word(&lower))
        };
        // Every word of up to five characters over an alphabet of title letters and the
        // characters tidying touches, and the listed titles in several spellings.
        let alphabet = ['d', 'R', 'r', '.', '-', '`', '\'', 'F', 'h', 'c'];
        let mut words: Vec<String> = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..5 {
            last = last
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(last.iter().cloned());
        }
        let long = "x".repeat(40);
        for t in [
            "Dr.",
            "Prof.",
            "Dipl.-Ing.",
            "Dr.med.",
            "h.c.",
            "Dr.--Ing.",
            "Dr`",
            "FRÄULEIN",
            "Fräulein",
            "Herrn",
            "Dr.rer.nat.",
            "Mme",
            &long,
            "DR.-ING.-",
            "Dr.\u{2013}Ing.",
        ] {
            words.push(t.to_string());
        }
        for w in &words {
            assert_eq!(word_is_title(w), reference(w), "{w:?}");
        }
    }
}
