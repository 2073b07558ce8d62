//! E-mail addresses: one canonical spelling, and a match key that folds provider aliases.

use unicode_normalization::UnicodeNormalization;

const MAX_ADDRESS: usize = 254;
const MAX_LOCAL: usize = 64;
const MAX_LABEL: usize = 63;

/// Canonical form of an e-mail address: trimmed, without display name or `mailto:`, lowercased,
/// NFC, internationalized domain in its ASCII (punycode) form. None when it is not an address
/// a mail server would accept (quoted local parts and IP-literal domains count as invalid: a CRM
/// never holds them legitimately).
pub fn normalize_email(input: &str) -> Option<String> {
    if input.len() > super::MAX_FIELD_BYTES {
        return None;
    }
    let mut s = input.trim();
    if let Some(open) = s.rfind('<') {
        // `Max Müller <max@example.de>`: the address is inside the last angle brackets.
        let rest = &s[open + 1..];
        let close = rest.find('>')?;
        s = rest[..close].trim();
    }
    if s.len() >= 7 && s.as_bytes()[..7].eq_ignore_ascii_case(b"mailto:") {
        s = s[7..].trim_start();
        // mailto: may carry ?subject=… parameters
        if let Some(q) = s.find('?') {
            s = &s[..q];
        }
    }
    let at = s.rfind('@')?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    let local = normalize_local(local)?;
    let domain = normalize_domain(domain)?;
    let len = local.len() + 1 + domain.len();
    if len > MAX_ADDRESS {
        return None;
    }
    let mut out = String::with_capacity(len);
    out.push_str(&local);
    out.push('@');
    out.push_str(&domain);
    Some(out)
}

fn normalize_local(local: &str) -> Option<String> {
    if local.is_empty() || local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return None;
    }
    let lowered: String = if local.is_ascii() {
        local.to_ascii_lowercase()
    } else {
        // SMTPUTF8 local parts (RFC 6531): compose, then lowercase.
        local.nfc().flat_map(char::to_lowercase).collect()
    };
    if lowered.len() > MAX_LOCAL {
        return None;
    }
    let ok = lowered.chars().all(|c| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
        } else {
            c.is_alphanumeric()
        }
    });
    ok.then_some(lowered)
}

fn normalize_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return None;
    }
    let ascii = if domain.is_ascii() {
        domain.to_ascii_lowercase()
    } else {
        // IDNA would encode emoji and symbols too; real mail domains hold letters and digits.
        let plausible = domain.chars().all(|c| {
            c.is_ascii() || c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)
        });
        if !plausible {
            return None;
        }
        idna::domain_to_ascii(domain).ok()?
    };
    if ascii.len() > 253 {
        return None;
    }
    let mut labels = 0;
    let mut last = "";
    for label in ascii.split('.') {
        let bytes = label.as_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_LABEL
            || bytes[0] == b'-'
            || bytes[bytes.len() - 1] == b'-'
            || !bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        {
            return None;
        }
        labels += 1;
        last = label;
    }
    // A top-level domain is never all digits (that would be an IP address) and never one letter.
    if labels < 2 || last.len() < 2 || last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ascii)
}

/// Providers that deliver `local+tag` to `local`; dots are significant there.
const PLUS_ALIAS_DOMAINS: &[&str] = &[
    "outlook.com",
    "outlook.de",
    "hotmail.com",
    "hotmail.de",
    "live.com",
    "live.de",
    "msn.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "protonmail.com",
    "protonmail.ch",
    "proton.me",
    "pm.me",
    "fastmail.com",
    "fastmail.fm",
];

/// (canonical domain, dots ignored) for a provider that aliases mailboxes, None otherwise.
fn provider_rules(domain: &str) -> Option<(&str, bool)> {
    match domain {
        // Gmail ignores dots and plus tags; googlemail.com is the same service.
        "gmail.com" | "googlemail.com" => Some(("gmail.com", true)),
        d if PLUS_ALIAS_DOMAINS.contains(&d) => Some((d, false)),
        _ => None,
    }
}

/// The key under which two spellings of one mailbox compare equal: the normalized address with
/// provider aliases folded (googlemail.com → gmail.com; dots dropped where the provider ignores
/// them; `+tag` dropped where the provider delivers it to the same mailbox).
pub fn email_match_key(input: &str) -> Option<String> {
    match_key_of_normalized(normalize_email(input)?)
}

/// [`email_match_key`] of an address `normalize_email` already gave (sync normalizes each
/// address once for both columns).
pub fn match_key_of_normalized(email: String) -> Option<String> {
    let at = email.rfind('@')?;
    let (local, domain) = (&email[..at], &email[at + 1..]);
    let Some((canonical_domain, dots_ignored)) = provider_rules(domain) else {
        return Some(email);
    };
    let mut local = local.split('+').next().unwrap_or(local).to_string();
    if dots_ignored {
        local.retain(|c| c != '.');
    }
    if local.is_empty() {
        return None;
    }
    if local.ends_with('.') {
        // `max.+shop@outlook.de`: without its tag the mailbox would end in a dot, which is no
        // address (and no key a second call gives back; found by fuzzing): kept unfolded.
        return Some(email);
    }
    Some(format!("{local}@{canonical_domain}"))
}

/// Mailboxes of a function rather than a person: a shop's or a practice's `info@`, an office's
/// `kontakt@`.
const ROLE_LOCAL_PARTS: &[&str] = &[
    "admin",
    "bestellung",
    "buchhaltung",
    "buero",
    "büro",
    "contact",
    "empfang",
    "hallo",
    "hello",
    "info",
    "kanzlei",
    "kontakt",
    "mail",
    "newsletter",
    "noreply",
    "office",
    "post",
    "praxis",
    "rechnung",
    "sales",
    "sekretariat",
    "service",
    "support",
    "team",
    "verwaltung",
    "vertrieb",
    "webmaster",
    "zentrale",
];

/// Whether a normalized e-mail address is a mailbox several people read: a household's
/// (`familie.mueller@`, `fam-schmidt@`, `wir.meyers@`, a couple's `anna.und.thomas.mueller@`)
/// or a role account (`info@`, `kontakt@`).
/// Sharing one says "same household" or "same office", not "same person", even when the other
/// holders never appear in the data.
pub fn is_shared_mailbox(email: &str) -> bool {
    let local = email.rsplit_once('@').map_or(email, |(l, _)| l);
    let local = local.split('+').next().unwrap_or(local);
    if local.starts_with("familie") || local.starts_with("family") {
        return true;
    }
    let mut words = local
        .split(['.', '-', '_'])
        .map(|w| w.trim_end_matches(|c: char| c.is_ascii_digit()));
    let first = words.next().unwrap_or_default();
    // A couple's mailbox names both: `anna.und.thomas.mueller@`.
    matches!(first, "fam" | "wir")
        || ROLE_LOCAL_PARTS.contains(&first)
        || words.any(|w| matches!(w, "familie" | "family" | "fam" | "und" | "and"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spelling() {
        let n = |s| normalize_email(s);
        assert_eq!(
            n("  Max.Mustermann@Web.DE ").as_deref(),
            Some("max.mustermann@web.de")
        );
        assert_eq!(n("mailto:info@firma.de").as_deref(), Some("info@firma.de"));
        assert_eq!(
            n("MAILTO:info@firma.de?subject=Hallo").as_deref(),
            Some("info@firma.de")
        );
        assert_eq!(
            n("Max Müller <Max@Example.DE>").as_deref(),
            Some("max@example.de")
        );
        assert_eq!(
            n("\"Müller, Max\" <max@example.de>").as_deref(),
            Some("max@example.de")
        );
        assert_eq!(n("jürgen@example.de").as_deref(), Some("jürgen@example.de"));
        assert_eq!(n("a@example.de.").as_deref(), Some("a@example.de"));
    }

    #[test]
    fn shared_mailboxes() {
        for shared in [
            "familie.mueller@web.de",
            "familiemueller@gmx.de",
            "family.smith@gmail.com",
            "fam.schmidt@t-online.de",
            "fam-schmidt@t-online.de",
            "mueller.familie@web.de",
            "wir.meyers@posteo.de",
            "info@baeckerei-mueller.de",
            "info2@firma.de",
            "kontakt@praxis-dr-weber.de",
            "office+crm@firma.de",
            "anna.und.thomas.mueller@gmx.de",
            "claudia-and-felix@web.de",
        ] {
            assert!(is_shared_mailbox(shared), "{shared}");
        }
        for personal in [
            "anna.mueller@web.de",
            "famke.jansen@gmx.de",
            "wirth.hans@web.de",
            "postma@firma.de",
            "m.info@firma.de",
            "und.mueller@web.de",
            "rolf.undine@web.de",
        ] {
            assert!(!is_shared_mailbox(personal), "{personal}");
        }
    }

    #[test]
    fn internationalized_domain_to_ascii() {
        assert_eq!(
            normalize_email("max@müller.de").as_deref(),
            Some("max@xn--mller-kva.de")
        );
        assert_eq!(
            normalize_email("max@MÜLLER.de"),
            normalize_email("max@xn--mller-kva.de")
        );
        assert_eq!(
            normalize_email("info@straße.de").as_deref(),
            Some("info@xn--strae-oqa.de")
        );
    }

    #[test]
    fn invalid_is_none() {
        for bad in [
            "",
            "   ",
            "max",
            "max@",
            "@web.de",
            "max@web",
            "max@@web.de",
            "max..m@web.de",
            ".max@web.de",
            "max.@web.de",
            "max @web.de",
            "max@web..de",
            "max@-web.de",
            "max@web.d",
            "max@1.2.3.4",
            "max@[127.0.0.1]",
            "max@web.de>",
            "Max <max@web.de",
            "max\u{0}@web.de",
            "😀@web.de",
            "max@😀.de",
            "max@web.de\u{202e}",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad:?}");
        }
        let long = "a".repeat(65) + "@web.de";
        assert_eq!(normalize_email(&long), None);
        let huge = "a".repeat(1 << 20);
        assert_eq!(normalize_email(&huge), None);
    }

    #[test]
    fn match_key_folds_provider_aliases() {
        let k = |s| email_match_key(s);
        assert_eq!(
            k("Max.Muster+shop@googlemail.com").as_deref(),
            Some("maxmuster@gmail.com")
        );
        assert_eq!(k("m.a.x.muster@gmail.com"), k("maxmuster@gmail.com"));
        assert_eq!(
            k("max.muster+news@outlook.de").as_deref(),
            Some("max.muster@outlook.de")
        );
        // Providers that do not alias keep dots and plus signs.
        assert_eq!(
            k("max.muster+1@web.de").as_deref(),
            Some("max.muster+1@web.de")
        );
        assert_eq!(k("+tag@gmail.com"), None);
        assert_eq!(k("not an address"), None);
    }

    /// Found by fuzzing: email_match_key(email_match_key(x)) == email_match_key(x).
    #[test]
    fn a_key_is_its_own_key() {
        assert_eq!(
            email_match_key("gmail.com.+@outlook.de").as_deref(),
            Some("gmail.com.+@outlook.de")
        );
        assert_eq!(
            email_match_key("max.+shop@outlook.de").as_deref(),
            Some("max.+shop@outlook.de")
        );
        assert_eq!(
            email_match_key("max+shop@outlook.de").as_deref(),
            Some("max@outlook.de")
        );
        for x in [
            "gmail.com.+@outlook.de",
            "Max.Muster+shop@googlemail.com",
            "a.b+c@outlook.de",
        ] {
            let key = email_match_key(x).unwrap();
            assert_eq!(
                email_match_key(&key).as_deref(),
                Some(key.as_str()),
                "{x:?}"
            );
        }
    }
}
