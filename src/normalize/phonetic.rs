//! Phonetic codes: Kölner Phonetik (Postel 1969) for German names, Double Metaphone beside it.
//! Both come from the `rphonetic` crate (a port of Apache Commons Codec's tested encoders).

use super::translit::transliterate_de;
use rphonetic::{Cologne, DoubleMetaphone, Encoder};

const MAX_PHONETIC_INPUT: usize = 1024;

/// Kölner Phonetik code (`Müller` → `657`). The input is transliterated first, so `Müller`,
/// `Mueller` and `MÜLLER` share a code and other diacritics (é, ø) do not drop letters.
/// None when no letter yields a code.
pub fn cologne_phonetic(input: &str) -> Option<String> {
    if input.len() > MAX_PHONETIC_INPUT {
        return None;
    }
    let text = transliterate_de(input);
    encode_safely(|| Cologne.encode(&text))
}

/// Runs a third-party encoder so that a panic on odd input becomes None, never a backend error.
fn encode_safely(f: impl FnOnce() -> String + std::panic::UnwindSafe) -> Option<String> {
    std::panic::catch_unwind(f)
        .ok()
        .filter(|code| !code.is_empty())
}

/// Double Metaphone is defined on Latin letters: transliterate, then keep ASCII letters and
/// word breaks only (rphonetic slices by byte and panics on multi-byte characters).
fn metaphone_input(input: &str) -> Option<String> {
    if input.len() > MAX_PHONETIC_INPUT {
        return None;
    }
    let ascii: String = transliterate_de(input)
        .chars()
        .map(|c| if c.is_ascii_alphabetic() { c } else { ' ' })
        .collect();
    let words = ascii.split_whitespace().collect::<Vec<_>>().join(" ");
    (!words.is_empty()).then_some(words)
}

/// A code as the encoder wrote it, without the spaces it uses for "no sound" (Commons Codec
/// writes a final `J` as a space in the alternate code: `aj` → `A `, found by fuzzing).
fn code(mut code: String) -> Option<String> {
    code.retain(|c| c != ' ');
    (!code.is_empty()).then_some(code)
}

/// Primary Double Metaphone code (at most 4 characters).
pub fn double_metaphone(input: &str) -> Option<String> {
    code(
        DoubleMetaphone::default()
            .double_metaphone(&metaphone_input(input)?)
            .primary(),
    )
}

/// Alternate Double Metaphone code (equals the primary where the name has one reading).
pub fn double_metaphone_alt(input: &str) -> Option<String> {
    code(
        DoubleMetaphone::default()
            .double_metaphone(&metaphone_input(input)?)
            .alternate(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cologne_published_examples() {
        // Examples from the Kölner Phonetik article (de.wikipedia.org) and Postel's rules.
        assert_eq!(
            cologne_phonetic("Müller-Lüdenscheidt").as_deref(),
            Some("65752682")
        );
        assert_eq!(cologne_phonetic("Wikipedia").as_deref(), Some("3412"));
        assert_eq!(cologne_phonetic("Breschnew").as_deref(), Some("17863"));
        assert_eq!(cologne_phonetic("Müller").as_deref(), Some("657"));
    }

    #[test]
    fn cologne_german_variants_agree() {
        let code = cologne_phonetic("Müller");
        for v in ["Mueller", "MÜLLER", "Muller", "Möller", "Miller"] {
            assert_eq!(cologne_phonetic(v), code, "{v}");
        }
        assert_eq!(cologne_phonetic("Meier"), cologne_phonetic("Mayer"));
        assert_eq!(cologne_phonetic("Meier"), cologne_phonetic("Meyer"));
        assert_eq!(cologne_phonetic("Schmidt"), cologne_phonetic("Schmitt"));
        assert_eq!(cologne_phonetic("Strauß"), cologne_phonetic("Strauss"));
        assert_ne!(cologne_phonetic("Müller"), cologne_phonetic("Schulz"));
    }

    #[test]
    fn double_metaphone_examples() {
        assert_eq!(double_metaphone("Smith").as_deref(), Some("SM0"));
        assert_eq!(double_metaphone_alt("Smith").as_deref(), Some("XMT"));
        assert_eq!(double_metaphone("Schmidt"), double_metaphone("Schmitt"));
        assert_eq!(double_metaphone("Müller"), double_metaphone("Mueller"));
    }

    #[test]
    fn non_latin_input_never_panics() {
        for s in [
            "\u{202e}max@web.de",
            "محمد",
            "Mülлер Иван",
            "😀ab😀",
            "ǅ",
            "ﬀ",
        ] {
            let _ = double_metaphone(s);
            let _ = double_metaphone_alt(s);
            let _ = cologne_phonetic(s);
        }
        assert_eq!(double_metaphone("\u{202e}Smith").as_deref(), Some("SM0"));
    }

    #[test]
    fn no_code_is_none() {
        for bad in ["", "   ", "h", "😀", "123", "\u{0}", "\u{202e}"] {
            assert_eq!(cologne_phonetic(bad), None, "{bad:?}");
            assert_eq!(double_metaphone(bad), None, "{bad:?}");
        }
        assert_eq!(cologne_phonetic(&"a".repeat(1 << 20)), None);
    }

    /// Found by fuzzing: the encoder writes a final J of the alternate code as a space.
    #[test]
    fn codes_hold_no_spaces() {
        assert_eq!(double_metaphone_alt("aj").as_deref(), Some("A"));
        assert_eq!(double_metaphone("aj").as_deref(), Some("AJ"));
        assert_eq!(double_metaphone_alt("Haj").as_deref(), Some("H"));
    }
}
