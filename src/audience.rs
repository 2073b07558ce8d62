//! Identifiers for ad-platform customer lists: normalised and SHA-256-hashed exactly as Google
//! Customer Match and Meta Custom Audiences each publish it. Pure Rust, no pgrx types: every
//! function takes `&str` and returns `Option<String>` (None = "cannot be used"), the SQL layer
//! maps None to NULL (`src/sql/audience.rs`).
//!
//! The rules, field by field, and where they come from:
//!
//! Google (Customer Match; the Google Ads API's `UserIdentifier` / `OfflineUserAddressInfo` and
//! the Data Manager API that replaces its upload, "Format user data",
//! <https://developers.google.com/data-manager/api/devguides/concepts/formatting>, and the
//! Google Ads API's Customer Match guide,
//! <https://developers.google.com/google-ads/api/docs/remarketing/audience-segments/customer-match/get-started>):
//! - e-mail: lowercase; leading, trailing and intermediate whitespace removed; for `gmail.com`
//!   and `googlemail.com` every dot before the `@` removed and a `+tag` removed with the rest
//!   of it (`cloudy.sanfrancisco+shopping@gmail.com` → `cloudysanfrancisco@gmail.com`); other
//!   domains keep dots and plus signs (`user.name+NYC@Example.com` → `user.name+nyc@example.com`);
//!   hashed.
//! - phone: E.164 with the `+` and the country code (`(800)555-0100` → `+18005550100`); hashed.
//! - first and last name: lowercase, trimmed, no prefixes such as `Mrs.` and no suffixes such
//!   as `Jr.`; hashed.
//! - country (ISO 3166-1 alpha-2) and postal code: NOT hashed.
//!
//! Meta (Custom Audiences: "Customer Information Parameters",
//! <https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters>,
//! the normalisation table that the Custom Audiences API refers to as "Hashing and Normalizing
//! Data", <https://developers.facebook.com/docs/marketing-api/audiences/guides/custom-audiences>):
//! - e-mail (`EMAIL`): leading and trailing spaces trimmed, lowercase (no Gmail rule); hashed.
//! - phone (`PHONE`): symbols, letters and leading zeros removed, the country code included,
//!   no `+` (`(650)555-1212` in the US → `16505551212`); hashed.
//! - first and last name (`FN`, `LN`): lowercase, no punctuation, other characters kept in
//!   UTF-8 (`Valéry` → `valéry`, `정` stays); hashed.
//! - zip (`ZIP`): lowercase, no spaces and no dash, US zip codes their first five digits;
//!   hashed.
//! - country (`COUNTRY`): lowercase ISO 3166-1 alpha-2 (`de`); hashed.
//!
//! Both hash with SHA-256 and send the digest as 64 lowercase hex digits.

use crate::normalize::{address, name, phone};
use sha2::{Digest, Sha256};

/// SHA-256 of the UTF-8 bytes, as 64 lowercase hex digits.
pub fn sha256_hex(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Longest e-mail address either platform could hold (RFC 5321's 254), with room for spaces.
const MAX_EMAIL_INPUT: usize = 512;

/// The address split at its one `@`, both sides non-empty, the domain dotted with non-empty
/// labels: what both platforms can match. None for anything else.
fn email_parts(s: &str) -> Option<(&str, &str)> {
    let (local, domain) = s.split_once('@')?;
    if local.is_empty() || domain.contains('@') || !domain.contains('.') {
        return None;
    }
    if domain.split('.').any(str::is_empty) {
        return None;
    }
    Some((local, domain))
}

/// Google's normalised e-mail address (see the module documentation), before hashing.
pub fn google_email(input: &str) -> Option<String> {
    if input.len() > MAX_EMAIL_INPUT {
        return None;
    }
    let s: String = input
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    let (local, domain) = email_parts(&s)?;
    if domain == "gmail.com" || domain == "googlemail.com" {
        let local = local.split('+').next().unwrap_or_default().replace('.', "");
        if local.is_empty() {
            return None;
        }
        return Some(format!("{local}@{domain}"));
    }
    Some(s)
}

/// Meta's normalised e-mail address (see the module documentation), before hashing.
pub fn meta_email(input: &str) -> Option<String> {
    if input.len() > MAX_EMAIL_INPUT {
        return None;
    }
    let s = input.trim().to_lowercase();
    if s.chars().any(char::is_whitespace) {
        return None;
    }
    email_parts(&s)?;
    Some(s)
}

/// Google's phone number: E.164 with `+` (a number without an international prefix is read as
/// one of `default_region`); None when libphonenumber does not take it for a valid number.
pub fn google_phone(input: &str, default_region: &str) -> Option<String> {
    phone::normalize_phone(input, phone::parse_region(default_region)?)
}

/// Meta's phone number: the E.164 digits without the `+` (country code included, symbols,
/// letters and leading zeros gone).
pub fn meta_phone(input: &str, default_region: &str) -> Option<String> {
    google_phone(input, default_region).map(|e164| e164.trim_start_matches('+').to_string())
}

/// A person's name as both platforms start from it: lowercase (NFKC), salutations and titles
/// removed (`normalize_name`), and a trailing generation suffix (`jun.`, `Jr.`) dropped.
fn base_name(input: &str) -> Option<String> {
    let n = name::normalize_name(input)?;
    let words: Vec<&str> = n.split(' ').collect();
    if words.len() > 1 && name::GENERATION_SUFFIXES.contains(words.last()?) {
        return Some(words[..words.len() - 1].join(" "));
    }
    Some(n)
}

/// Google's first or last name: lowercase, trimmed, without salutation, title or generation
/// suffix; inner spaces and hyphens kept (`anna-lena`, `von der heide`).
pub fn google_name(input: &str) -> Option<String> {
    base_name(input)
}

/// Meta's first or last name: lowercase without punctuation or spaces, letters of every
/// script kept in UTF-8 (`Hans-Peter` → `hanspeter`, `Valéry` → `valéry`).
pub fn meta_name(input: &str) -> Option<String> {
    let n: String = base_name(input)?
        .chars()
        .filter(|c| c.is_alphabetic() || unicode_normalization::char::is_combining_mark(*c))
        .collect();
    (!n.is_empty()).then_some(n)
}

/// Google's country code: ISO 3166-1 alpha-2, upper case (`Deutschland` → `DE`); not hashed.
pub fn google_country(input: &str) -> Option<String> {
    address::country_code(input)
}

/// Meta's country: ISO 3166-1 alpha-2 in lower case (`Deutschland` → `de`), hashed after.
pub fn meta_country(input: &str) -> Option<String> {
    address::country_code(input).map(|c| c.to_lowercase())
}

/// Google's postal code: the country's canonical form (`D-1067` → `01067`, `1234ab` →
/// `1234 AB`); not hashed. None when it does not fit the country's format.
pub fn google_postcode(input: &str, country: &str) -> Option<String> {
    address::normalize_postcode(input, country)
}

/// Meta's zip: the canonical postcode in lower case without spaces or dashes (`1234 AB` →
/// `1234ab`); a US zip code its first five digits (`94025-1234` → `94025`).
pub fn meta_zip(input: &str, country: &str) -> Option<String> {
    let code = address::country_code(country)?;
    if code == "US" {
        let digits: String = input
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return (digits.len() >= 5).then(|| digits[..5].to_string());
    }
    let zip: String = address::normalize_postcode(input, &code)?
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    (!zip.is_empty()).then_some(zip)
}

/// The hash a platform expects for a normalised value.
pub fn hashed(normalized: Option<String>) -> Option<String> {
    normalized.map(|v| sha256_hex(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Meta's published vectors: input, normalised form, SHA-256.
    /// Source: https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
    /// (the `em`, `ph` and `fn` rows; `ln` "See First Name (fn) for examples").
    #[test]
    fn meta_vectors() {
        let em = meta_email("John_Smith@gmail.com");
        assert_eq!(em.as_deref(), Some("john_smith@gmail.com"));
        assert_eq!(
            hashed(em).as_deref(),
            Some("62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f")
        );
        let ph = meta_phone("(650)555-1212", "US");
        assert_eq!(ph.as_deref(), Some("16505551212"));
        assert_eq!(
            hashed(ph).as_deref(),
            Some("e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176")
        );
        for (input, normalized, hash) in [
            (
                "Mary",
                "mary",
                "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec",
            ),
            (
                "정",
                "정",
                "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14",
            ),
            (
                "Valéry",
                "valéry",
                "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c",
            ),
        ] {
            let n = meta_name(input);
            assert_eq!(n.as_deref(), Some(normalized), "{input}");
            assert_eq!(hashed(n).as_deref(), Some(hash), "{input}");
        }
    }

    /// Meta's Custom Audiences walk-through hashes `mary@example.com`.
    /// Source: https://developers.facebook.com/docs/marketing-api/custom-audiences-targeting/
    #[test]
    fn meta_custom_audience_example() {
        assert_eq!(
            hashed(meta_email("mary@example.com")).as_deref(),
            Some("f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79")
        );
    }

    /// Google's published normalisation examples (Google publishes no digests; the hash is
    /// SHA-256 of the normalised form, checked against sha256_hex's own vectors below).
    /// Source: https://developers.google.com/data-manager/api/devguides/concepts/formatting
    #[test]
    fn google_vectors() {
        assert_eq!(
            google_email("cloudy.sanfrancisco+shopping@gmail.com").as_deref(),
            Some("cloudysanfrancisco@gmail.com")
        );
        assert_eq!(
            google_email("user.name+NYC@Example.com").as_deref(),
            Some("user.name+nyc@example.com")
        );
        assert_eq!(
            google_phone("(800)555-0100", "US").as_deref(),
            Some("+18005550100")
        );
        // "Don't include prefixes such as Mrs." / "Don't include suffixes such as Jr."
        assert_eq!(google_name("Mrs. Dana").as_deref(), Some("dana"));
        assert_eq!(google_name("Quinn Jr.").as_deref(), Some("quinn"));
    }

    /// SHA-256 itself: FIPS 180-2's "abc" and the empty string.
    #[test]
    fn sha256_hex_matches_fips_vectors() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn google_email_rules() {
        // Whitespace anywhere goes, case folds; googlemail is treated like gmail.
        assert_eq!(
            google_email("  Max.Muster mann@GoogleMail.com ").as_deref(),
            Some("maxmustermann@googlemail.com")
        );
        // Other domains keep their dots and tags: they may mean different mailboxes.
        assert_eq!(
            google_email("max.mustermann+shop@web.de").as_deref(),
            Some("max.mustermann+shop@web.de")
        );
        // Not an address: NULL, never a hash of junk.
        for junk in [
            "",
            "no-at-sign",
            "@gmail.com",
            "a@b",
            "a@@b.de",
            "a@b..de",
            "+x@gmail.com",
        ] {
            assert_eq!(google_email(junk), None, "{junk}");
        }
    }

    #[test]
    fn meta_email_rules() {
        // Meta has no Gmail rule: dots and tags stay.
        assert_eq!(
            meta_email(" Max.Mustermann+shop@GMAIL.com ").as_deref(),
            Some("max.mustermann+shop@gmail.com")
        );
        assert_eq!(meta_email("max muster@web.de"), None);
        assert_eq!(meta_email("nobody"), None);
    }

    #[test]
    fn phones_of_german_customers() {
        for input in ["030 / 123 456 78", "+49 30 12345678", "0049 (0)30 12345678"] {
            assert_eq!(
                google_phone(input, "DE").as_deref(),
                Some("+493012345678"),
                "{input}"
            );
            assert_eq!(
                meta_phone(input, "DE").as_deref(),
                Some("493012345678"),
                "{input}"
            );
        }
        assert_eq!(google_phone("12", "DE"), None);
        assert_eq!(meta_phone("0171 1234567", "nowhere"), None);
    }

    #[test]
    fn names_per_platform() {
        assert_eq!(
            google_name(" Herr Dr. Hans-Peter ").as_deref(),
            Some("hans-peter")
        );
        assert_eq!(
            meta_name(" Herr Dr. Hans-Peter ").as_deref(),
            Some("hanspeter")
        );
        assert_eq!(
            google_name("von der Heide jun.").as_deref(),
            Some("von der heide")
        );
        assert_eq!(
            meta_name("von der Heide jun.").as_deref(),
            Some("vonderheide")
        );
        assert_eq!(meta_name("MÜLLER").as_deref(), Some("müller"));
        assert_eq!(meta_name("O'Brien").as_deref(), Some("obrien"));
        assert_eq!(google_name("1234"), None);
        assert_eq!(meta_name("--"), None);
    }

    #[test]
    fn address_fields_per_platform() {
        assert_eq!(google_country("Deutschland").as_deref(), Some("DE"));
        assert_eq!(meta_country("DE").as_deref(), Some("de"));
        assert_eq!(
            hashed(meta_country("Deutschland")).as_deref(),
            Some(sha256_hex("de").as_str())
        );
        assert_eq!(meta_country("Atlantis"), None);
        assert_eq!(google_postcode("D-1067", "DE").as_deref(), Some("01067"));
        assert_eq!(meta_zip("D-1067", "DE").as_deref(), Some("01067"));
        assert_eq!(meta_zip("1234ab", "NL").as_deref(), Some("1234ab"));
        assert_eq!(meta_zip("94025-1234", "US").as_deref(), Some("94025"));
        assert_eq!(meta_zip("940", "US"), None);
        assert_eq!(meta_zip("ABCDE", "DE"), None);
    }
}
