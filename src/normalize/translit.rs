//! German transliteration: ä→ae, ö→oe, ü→ue, ß→ss, other diacritics dropped.

use unicode_normalization::char::{decompose_canonical, is_combining_mark};
use unicode_normalization::UnicodeNormalization;

/// Appends the spelling of a letter written with two letters or without its stroke (`ä` → `ae`,
/// `ø` → `o`); false for every other character. `shout` says whether it stands in an all-caps
/// word (MÜLLER → MUELLER).
fn spell_out(c: char, shout: &dyn Fn() -> bool, out: &mut String) -> bool {
    let pair = |upper: &'static str, title: &'static str| if shout() { upper } else { title };
    match c {
        'ä' => out.push_str("ae"),
        'ö' => out.push_str("oe"),
        'ü' => out.push_str("ue"),
        'ß' => out.push_str("ss"),
        'Ä' => out.push_str(pair("AE", "Ae")),
        'Ö' => out.push_str(pair("OE", "Oe")),
        'Ü' => out.push_str(pair("UE", "Ue")),
        'ẞ' => out.push_str("SS"),
        'æ' => out.push_str("ae"),
        'Æ' => out.push_str(pair("AE", "Ae")),
        'œ' => out.push_str("oe"),
        'Œ' => out.push_str(pair("OE", "Oe")),
        'ø' => out.push('o'),
        'Ø' => out.push('O'),
        'đ' | 'ð' => out.push('d'),
        'Đ' | 'Ð' => out.push('D'),
        'ł' => out.push('l'),
        'Ł' => out.push('L'),
        'ı' => out.push('i'),
        'þ' => out.push_str("th"),
        'Þ' => out.push_str(pair("TH", "Th")),
        _ => return false,
    }
    true
}

/// Transliterates German umlauts and ß to their two-letter forms and drops every other diacritic,
/// so `Müller`, `Mueller` and `Muller` differ only where the spelling really differs. Case is kept:
/// `MÜLLER` becomes `MUELLER`, `Ärger` becomes `Aerger`. Invisible formatting characters
/// (zero-width, bidi controls) are dropped. Non-Latin scripts pass through.
pub fn transliterate_de(input: &str) -> String {
    if input.is_ascii() {
        return input.to_string();
    }
    let composed: Vec<char> = input.nfc().filter(|c| !super::is_invisible(*c)).collect();
    let mut out = String::with_capacity(input.len() + 8);
    for (i, &c) in composed.iter().enumerate() {
        // An umlaut inside an all-caps word becomes two capitals (MÜLLER → MUELLER).
        let shout = || {
            let neighbour_upper = |j: Option<usize>| {
                j.and_then(|j| composed.get(j))
                    .is_some_and(|n| n.is_uppercase())
            };
            neighbour_upper(i.checked_add(1)) || neighbour_upper(i.checked_sub(1))
        };
        if !spell_out(c, &shout, &mut out) {
            if c.is_ascii() {
                out.push(c);
            } else {
                // Other diacritics dropped; a base letter left is spelled out too (`ǽ` is `æ`
                // with an accent: `ae`, as `æ` is; found by fuzzing).
                decompose_canonical(c, |d| {
                    if !is_combining_mark(d) && !spell_out(d, &shout, &mut out) {
                        out.push(d)
                    }
                })
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::transliterate_de;

    #[test]
    fn german_letters() {
        assert_eq!(transliterate_de("Müller"), "Mueller");
        assert_eq!(transliterate_de("MÜLLER"), "MUELLER");
        assert_eq!(transliterate_de("Ärger"), "Aerger");
        assert_eq!(transliterate_de("Straße"), "Strasse");
        assert_eq!(transliterate_de("STRAẞE"), "STRASSE");
        assert_eq!(transliterate_de("Jürgen Größe"), "Juergen Groesse");
        assert_eq!(transliterate_de("Ökonom"), "Oekonom");
    }

    #[test]
    fn other_diacritics_dropped() {
        assert_eq!(transliterate_de("René Núñez"), "Rene Nunez");
        assert_eq!(transliterate_de("Łukasz Søren"), "Lukasz Soren");
        assert_eq!(transliterate_de("Çelik"), "Celik");
        assert_eq!(transliterate_de("Dvořák"), "Dvorak");
    }

    #[test]
    fn decomposed_input_is_composed_first() {
        assert_eq!(transliterate_de("Mu\u{0308}ller"), "Mueller");
    }

    #[test]
    fn other_scripts_and_oddities_pass() {
        assert_eq!(transliterate_de(""), "");
        assert_eq!(transliterate_de("Иван"), "Иван");
        assert_eq!(transliterate_de("محمد"), "محمد");
        assert_eq!(transliterate_de("😀ä"), "😀ae");
        assert_eq!(transliterate_de("a\u{0}b"), "a\u{0}b");
        assert_eq!(
            transliterate_de("M\u{200B}ü\u{200D}ller\u{202E}"),
            "Mueller"
        );
    }

    /// Found by fuzzing: a letter spelled out (`æ`) carrying an accent was left as `æ`, which a
    /// second call then spelled out.
    #[test]
    fn accented_letters_that_are_spelled_out() {
        assert_eq!(transliterate_de("æ\u{301}"), "ae");
        assert_eq!(transliterate_de("\u{1FC}GIR"), "AEGIR");
        assert_eq!(transliterate_de("\u{1FE}re"), "Ore");
        for x in ["æ\u{301}", "\u{1FC}GIR", "\u{1FE}re"] {
            let once = transliterate_de(x);
            assert_eq!(transliterate_de(&once), once);
        }
    }
}
