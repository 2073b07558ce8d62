//! Person names: one comparable spelling, with salutations and academic titles removed.

use unicode_normalization::UnicodeNormalization;

/// Words that are never part of a name, dropped with or without a trailing dot.
const SALUTATIONS: &[&str] = &[
    "herr",
    "herrn",
    "frau",
    "fräulein",
    "frl",
    "hr",
    "dr",
    "prof",
    "professor",
    "mr",
    "mrs",
    "ms",
    "miss",
    "mister",
    "madame",
    "mme",
    "mlle",
    "monsieur",
    "familie",
    "fam",
    "dipl",
    "dr-ing",
    "dipl-ing",
    "dipl-kfm",
    "dipl-kff",
    "dipl-inf",
    "dipl-psych",
    "mag",
    "ing",
    "h.c",
];

/// Parts of titles that are dropped only when written with a dot, because without one they can
/// be names or initials (`Fr.` Frau, `med.` in `Dr. med.`).
const DOTTED_TITLE_PARTS: &[&str] = &[
    "fr", "med", "rer", "nat", "phil", "jur", "dent", "vet", "oec", "pol", "habil", "sc", "kfm",
    "univ", "techn", "theol", "iur", "mult",
];

/// Unifies hyphen and apostrophe look-alikes, drops dots and collapses hyphen runs.
pub(crate) fn tidy_word(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = match c {
            '‐' | '‑' | '‒' | '–' | '—' => '-',
            '’' | '‘' | '`' | '´' | 'ʼ' => '\'',
            '.' => continue,
            c => c,
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out
}

/// True when `raw` (one whitespace-separated word, lowercased, with its dots) is a salutation or
/// title: `Dr.`, `Prof`, `Dipl.-Ing.`, `Dr.med.`, `h.c.`.
pub(crate) fn is_title(raw: &str) -> bool {
    // `Familie-`: a hyphen at either end does not make a title a name (found by fuzzing).
    let raw = raw.trim_matches(['-', '‐', '‑', '‒', '–', '—']);
    let bare = raw.trim_end_matches('.');
    if SALUTATIONS.contains(&bare) {
        return true;
    }
    let dotted = raw.contains('.');
    if !dotted {
        return false;
    }
    // Every dot- or hyphen-separated part must itself be a title part.
    let mut parts = bare.split(['.', '-']).filter(|p| !p.is_empty()).peekable();
    parts.peek().is_some()
        && parts.all(|p| SALUTATIONS.contains(&p) || DOTTED_TITLE_PARTS.contains(&p))
}

/// Longest name (in characters) accepted; a longer value is not a person's name.
const MAX_NAME_CHARS: usize = 300;

/// Comparable spelling of a person's name: NFKC, lowercased, salutations and titles removed
/// (Herr, Frau, Dr., Prof., Dipl.-Ing., Mr, Mrs, …), digits, symbols, emoji and control
/// characters dropped, whitespace and hyphens tidied. Umlauts and ß are kept (use
/// `transliterate_de` to compare Müller with Mueller). None when no letter remains.
pub fn normalize_name(input: &str) -> Option<String> {
    if input.len() > super::MAX_FIELD_BYTES {
        return None;
    }
    // Keep letters, combining marks, apostrophes, hyphens and dots (titles and initials);
    // everything else separates words.
    let mut cleaned = String::with_capacity(input.len());
    let mut clean = |c: char| {
        // A letter still upper case after lowercasing is a symbol drawn as one (`🅐`, found
        // by fuzzing): dropped like other symbols.
        let keep = (c.is_alphabetic() && !c.is_uppercase())
            || unicode_normalization::char::is_combining_mark(c)
            || matches!(
                c,
                '\'' | '’' | '‘' | '`' | '´' | 'ʼ' | '.' | '-' | '‐' | '‑' | '‒' | '–' | '—'
            );
        cleaned.push(if keep { c } else { ' ' });
    };
    if input.is_ascii() {
        // ASCII is its own NFKC and holds no invisible character (issue 27: the normalization
        // was a tenth of the cleaners' time in sync's profile).
        input
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .for_each(&mut clean);
    } else {
        input
            .nfkc()
            .filter(|c| !super::is_invisible(*c))
            .flat_map(char::to_lowercase)
            .for_each(&mut clean);
    }
    if cleaned.chars().count() > MAX_NAME_CHARS {
        return None;
    }
    let mut out = String::with_capacity(cleaned.len());
    for raw in cleaned.split_whitespace() {
        if is_title(raw) {
            continue;
        }
        // Initials and abbreviations lose their dots: `H.-P.` → `h-p`. A word that is a title
        // without its dots (`d.R` → `dr`) is one: a second call would drop it (found by
        // fuzzing).
        let word = tidy_word(raw);
        if is_title(&word) {
            continue;
        }
        if word.chars().all(|c| c == '-') {
            // A free-standing hyphen joins its neighbours: `Hans - Peter` is one double name.
            if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
            continue;
        }
        if !word.chars().any(char::is_alphabetic) {
            continue;
        }
        if word.starts_with('-') && !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push(' ');
        }
        out.push_str(if out.ends_with('-') || out.is_empty() {
            word.trim_start_matches('-')
        } else {
            &word
        });
    }
    out.truncate(out.trim_end_matches('-').len());
    // Dropping a dot can put a base letter next to a combining mark (`Ing.\u{301}`): compose
    // again, so the result is what a second call returns (found by fuzzing).
    let out: String = if out.is_ascii() {
        out
    } else {
        out.nfc().collect()
    };
    out.chars().any(char::is_alphabetic).then_some(out)
}

/// Particles that start a multi-word last name (`von der Heide`, `van Dyk`, `de la Cruz`).
pub(crate) const NAME_PARTICLES: &[&str] = &[
    "von", "vom", "zu", "zum", "zur", "der", "den", "dem", "des", "du", "dos", "das", "van", "de",
    "del", "della", "di", "da", "la", "le", "ten", "ter",
];

/// Generation suffixes (without their dot): they tell father and son apart.
pub(crate) const GENERATION_SUFFIXES: &[&str] = &["jun", "jr", "sen", "sr"];

/// Where the last name starts among the words of a full name (lowercased, without dots): the
/// last word, with the particles before it (`von der Heide`) and a generation suffix after it
/// (`Heide jun.`: recognised only after at least a first and a last name, so `Li Jun` stays a
/// first and a last name). At least one word stays the first name unless every word before
/// the last is a particle (`von der Heide` alone is a last name). 0: all of it is the last name.
pub(crate) fn last_name_start(words: &[&str]) -> usize {
    let n = words.len();
    if n <= 1 {
        return 0;
    }
    let end = if n >= 3 && GENERATION_SUFFIXES.contains(&words[n - 1]) {
        n - 1
    } else {
        n
    };
    let mut start = end - 1;
    while start > 1 && NAME_PARTICLES.contains(&words[start - 1]) {
        start -= 1;
    }
    // A double name joined to particles by a hyphen: "Bergmann-von der Heide".
    let joins_particles = |w: &str| {
        w.rsplit_once('-')
            .is_some_and(|(name, particle)| !name.is_empty() && NAME_PARTICLES.contains(&particle))
    };
    if start > 1 && joins_particles(words[start - 1]) {
        start -= 1;
    }
    // "Dieter von er Heide": a particle no given name is starts the last name even where a
    // typo hides the particles after it.
    if let Some(i) = (1..start).find(|&i| LAST_NAME_ONLY_PARTICLES.contains(&words[i])) {
        start = i;
    }
    if start == 1 && NAME_PARTICLES.contains(&words[0]) {
        return 0;
    }
    start
}

/// Particles that are never a given name or part of one, so whatever follows them is the last
/// name (unlike `de`, `la` or `da`, which Italian and Spanish given names may hold).
const LAST_NAME_ONLY_PARTICLES: &[&str] = &["von", "vom", "zu", "zum", "zur", "van"];

/// Splits a full name as sources write it into (first name, last name), both normalized:
/// `MÜLLER, Hans` (last name first, with a comma), `Hans Müller`, `Dr. Hans-Peter von der Heide`,
/// `Hans von der Heide jun.` (particles and a generation suffix belong to the last name, which
/// keeps the suffix as `normalize_name` of a last-name field does). Salutations and titles are
/// dropped here; `salutation::salutation_in_name` and `title_in_name` read them.
pub fn split_full_name(input: &str) -> (Option<String>, Option<String>) {
    if let Some((last, first)) = input.split_once(',') {
        return (normalize_name(first), normalize_name(last));
    }
    let Some(full) = normalize_name(input) else {
        return (None, None);
    };
    let words: Vec<&str> = full.split(' ').collect();
    let start = last_name_start(&words);
    if start == 0 {
        return (None, Some(full));
    }
    (
        Some(words[..start].join(" ")),
        Some(words[start..].join(" ")),
    )
}

/// Endings that make one given name of another, as pairs either way round: Daniel / Daniela,
/// Stefan / Stefanie, Christian / Christine, Andreas / Andrea, Julius / Julia, Alexander /
/// Alexandra, Mario / Maria.
const GIVEN_NAME_ENDINGS: &[(&str, &str)] = &[
    ("", "a"),
    ("", "e"),
    ("", "ie"),
    ("", "ina"),
    ("", "ine"),
    ("", "s"),
    ("an", "na"),
    ("an", "ne"),
    ("an", "ina"),
    ("an", "ine"),
    ("us", "a"),
    ("er", "ra"),
    ("o", "a"),
];

/// Whether two (transliterated, lower-case) given names are one stem with two endings, as the
/// male and female form of a name are: alike enough for Jaro-Winkler to call them a typo
/// apart, but the names of two people, a couple or a brother and a sister.
pub fn given_name_variants(a: &str, b: &str) -> bool {
    let stem = a
        .char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map_or(0, |((i, x), _)| i + x.len_utf8());
    if stem < 3 || a == b {
        return false;
    }
    let (x, y) = (&a[stem..], &b[stem..]);
    GIVEN_NAME_ENDINGS.contains(&(x, y)) || GIVEN_NAME_ENDINGS.contains(&(y, x))
}

/// The names `name` would be with the other ending of a pair of [`GIVEN_NAME_ENDINGS`]
/// (`johanna` → `johann`, `johannae`, …): the other sex's form where it exists, and strings no
/// name is, which cost nothing where they are only compared with.
pub fn other_given_name_endings(name: &str) -> impl Iterator<Item = String> + '_ {
    GIVEN_NAME_ENDINGS
        .iter()
        .flat_map(|&(p, q)| [(p, q), (q, p)])
        .filter_map(move |(from, to)| {
            let stem = name.strip_suffix(from)?;
            (stem.chars().count() >= 3).then(|| format!("{stem}{to}"))
        })
        .filter(move |other| other != name)
}

#[cfg(test)]
mod tests {
    use super::{given_name_variants, normalize_name};

    /// The ASCII fast path of `normalize_name` relies on ASCII being its own NFKC, without
    /// invisible characters, lowercased as `char::to_lowercase` does.
    #[test]
    fn ascii_is_its_own_nfkc() {
        use unicode_normalization::UnicodeNormalization;
        for b in 0u8..128 {
            let c = b as char;
            assert_eq!(std::iter::once(c).nfkc().collect::<String>(), c.to_string());
            assert!(!crate::normalize::is_invisible(c));
            assert_eq!(
                c.to_lowercase().collect::<String>(),
                c.to_ascii_lowercase().to_string()
            );
        }
    }

    fn n(s: &str) -> Option<String> {
        normalize_name(s)
    }

    #[test]
    fn casing_and_spacing() {
        assert_eq!(n("MÜLLER").as_deref(), Some("müller"));
        assert_eq!(n("  müller ").as_deref(), Some("müller"));
        assert_eq!(n("Hans  Peter").as_deref(), Some("hans peter"));
        assert_eq!(n("Hans-Peter").as_deref(), Some("hans-peter"));
        assert_eq!(n("Hans - Peter").as_deref(), Some("hans-peter"));
        assert_eq!(n("Hans–Peter").as_deref(), Some("hans-peter"));
        assert_eq!(n("Groß").as_deref(), Some("groß"));
        assert_eq!(n("GROẞ").as_deref(), Some("groß"));
        assert_eq!(n("ＭÜＬＬＥＲ").as_deref(), Some("müller"));
        assert_eq!(n("Mu\u{0308}ller"), n("Müller"));
        assert_eq!(n("O’Brien").as_deref(), Some("o'brien"));
        assert_eq!(n("von der Heide").as_deref(), Some("von der heide"));
    }

    #[test]
    fn titles_and_salutations_removed() {
        assert_eq!(n("Herr Dr. Hans Müller").as_deref(), Some("hans müller"));
        assert_eq!(
            n("Frau Prof. Dr. med. Anna Schmidt").as_deref(),
            Some("anna schmidt")
        );
        assert_eq!(n("Dipl.-Ing. Jörg Weiß").as_deref(), Some("jörg weiß"));
        assert_eq!(
            n("Prof. Dr. Dr. h.c. Klaus Meyer").as_deref(),
            Some("klaus meyer")
        );
        assert_eq!(n("Mrs Jane Doe").as_deref(), Some("jane doe"));
        assert_eq!(n("Fr. Meier").as_deref(), Some("meier"));
        assert_eq!(n("Familie Schulz").as_deref(), Some("schulz"));
        assert_eq!(n("Dr.med.dent. Lisa Roth").as_deref(), Some("lisa roth"));
        // Initials stay, without dots.
        assert_eq!(n("H. Müller").as_deref(), Some("h müller"));
        assert_eq!(n("H.-P. Müller").as_deref(), Some("h-p müller"));
        // Generation suffixes distinguish father and son: kept.
        assert_eq!(n("Hans Müller jun.").as_deref(), Some("hans müller jun"));
    }

    #[test]
    fn full_names_split() {
        let s = |x: &str| {
            let (f, l) = super::split_full_name(x);
            (f.unwrap_or_default(), l.unwrap_or_default())
        };
        assert_eq!(s("MÜLLER, Hans"), ("hans".into(), "müller".into()));
        assert_eq!(s("Hans Müller"), ("hans".into(), "müller".into()));
        assert_eq!(
            s("Herr Dr. Hans-Peter von der Heide"),
            ("hans-peter".into(), "von der heide".into())
        );
        assert_eq!(
            s("Anna Maria Schmidt"),
            ("anna maria".into(), "schmidt".into())
        );
        assert_eq!(s("Hans Müller jun."), ("hans".into(), "müller jun".into()));
        assert_eq!(s("Müller"), (String::new(), "müller".into()));
        // Issue 25: particles and the suffix belong to the last name.
        assert_eq!(
            s("Hans von der Heide jun."),
            ("hans".into(), "von der heide jun".into())
        );
        assert_eq!(s("Hans Müller sen"), ("hans".into(), "müller sen".into()));
        // A typo in a particle ("er" for "der") does not pull it into the first name.
        assert_eq!(
            s("Dieter von er Heide"),
            ("dieter".into(), "von er heide".into())
        );
        assert_eq!(
            s("Karl Theodor zu Guttenberg"),
            ("karl theodor".into(), "zu guttenberg".into())
        );
        assert_eq!(s("Li Jun"), ("li".into(), "jun".into()));
        assert_eq!(s("von der Heide"), (String::new(), "von der heide".into()));
        assert_eq!(
            s("Anna-Lena de la Cruz"),
            ("anna-lena".into(), "de la cruz".into())
        );
        // A double name joined to its particles by a hyphen is one last name.
        assert_eq!(
            s("Ulrike Bergmann-von der Heide"),
            ("ulrike".into(), "bergmann-von der heide".into())
        );
        assert_eq!(
            s("Ulrike Maria Bergmann-von Bülow jun."),
            ("ulrike maria".into(), "bergmann-von bülow jun".into())
        );
        assert_eq!(s("Anna-de Müller"), ("anna-de".into(), "müller".into()));
        // Titles and salutations inside the name field are not part of the name.
        assert_eq!(s("Dr. Anna Schmidt"), ("anna".into(), "schmidt".into()));
        assert_eq!(s("Herr Hans Meier"), ("hans".into(), "meier".into()));
        assert_eq!(s("Schmidt, Anna"), ("anna".into(), "schmidt".into()));
        assert_eq!(s("Schmidt, Dr. Anna"), ("anna".into(), "schmidt".into()));
        assert_eq!(s("Herr"), (String::new(), String::new()));
    }

    #[test]
    fn junk_is_dropped_or_none() {
        assert_eq!(n("Müller 😀").as_deref(), Some("müller"));
        assert_eq!(n("Mül\u{0}ler").as_deref(), Some("mül ler"));
        assert_eq!(n("Müller2").as_deref(), Some("müller"));
        assert_eq!(n("M\u{200B}ü\u{200D}ller").as_deref(), Some("müller"));
        assert_eq!(n("محمد علي").as_deref(), Some("محمد علي"));
        assert_eq!(n("Иван Petrov").as_deref(), Some("иван petrov"));
        for bad in [
            "",
            "   ",
            "Herr",
            "Dr.",
            "123",
            "😀",
            "---",
            "...",
            "\u{202e}\u{202c}",
        ] {
            assert_eq!(n(bad), None, "{bad:?}");
        }
        assert_eq!(n(&"a".repeat(1 << 20)), None);
    }

    #[test]
    fn given_name_variants_of_one_stem() {
        for (a, b) in [
            ("daniel", "daniela"),
            ("stefanie", "stefan"),
            ("christian", "christine"),
            ("christian", "christina"),
            ("andreas", "andrea"),
            ("julius", "julia"),
            ("alexander", "alexandra"),
            ("mario", "maria"),
            ("paul", "paula"),
            ("simon", "simone"),
            ("jan", "jana"),
        ] {
            assert!(given_name_variants(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("daniel", "daniel"),
            ("dieter", "dieteer"),
            ("maria", "marie"),
            ("lena", "lea"),
            ("hans", "hannah"),
            ("anna", "anne"),
        ] {
            assert!(!given_name_variants(a, b), "{a} {b}");
        }
    }

    /// Found by fuzzing: normalize_name(normalize_name(x)) == normalize_name(x).
    #[test]
    fn a_second_call_changes_nothing() {
        // A dot dropped between a letter and a combining accent: composed.
        assert_eq!(
            normalize_name("MüllerDipl.-Ing.\u{301}").as_deref(),
            Some("müllerdipl-in\u{1f5}")
        );
        assert_eq!(normalize_name("St.\u{308}").as_deref(), Some("s\u{1e97}"));
        // A title with a hyphen at its end is still a title.
        assert_eq!(normalize_name("Familie-"), None);
        assert_eq!(normalize_name("d.R Hans").as_deref(), Some("hans"));
        assert_eq!(normalize_name("Frau- Müller").as_deref(), Some("müller"));
        // A symbol drawn as a capital letter has no lower case: dropped like other symbols.
        assert_eq!(normalize_name("🅐"), None);
        assert_eq!(normalize_name("🅐nna").as_deref(), Some("nna"));
        for x in [
            "MüllerDipl.-Ing.\u{301}",
            "St.\u{308}",
            "Frau- Müller",
            "🅐nna",
        ] {
            let once = normalize_name(x).unwrap();
            assert_eq!(
                normalize_name(&once).as_deref(),
                Some(once.as_str()),
                "{x:?}"
            );
        }
    }
}
