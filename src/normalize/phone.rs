//! Phone numbers to E.164 with libphonenumber's metadata (the `rlibphonenumber` crate).

use rlibphonenumber::enums::{PhoneNumberType, Region};
use rlibphonenumber::{PhoneNumber, PhoneNumberFormat, PHONE_NUMBER_UTIL};

/// libphonenumber refuses longer input as well; checking first avoids any work on junk.
const MAX_PHONE_INPUT: usize = 250;

/// Parses a region such as `DE`, `de`, `AT`. None for anything that is not two ASCII letters;
/// a two-letter code libphonenumber has no metadata for simply parses no national number.
pub fn parse_region(region: &str) -> Option<Region> {
    let region = region.trim();
    if region.len() != 2 {
        return None;
    }
    Region::from_code(region).ok()
}

fn parse_valid(input: &str, region: Region) -> Option<PhoneNumber> {
    if input.len() > MAX_PHONE_INPUT || !input.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    // The parser is third-party code: a panic on odd input must not become a backend error.
    let parsed = std::panic::catch_unwind(|| PHONE_NUMBER_UTIL.parse(input, Some(region)));
    let number = parsed.ok()?.ok()?;
    number.is_valid().then_some(number)
}

/// E.164 form (`+493012345678`) of a phone number written in any common way (`+49`, `0049`,
/// `(0)` after the country code, the trunk `0`, spaces, slashes, dashes, brackets); numbers
/// without an international prefix are read as numbers of `default_region`. None when
/// libphonenumber does not consider the result a valid number.
pub fn normalize_phone(input: &str, default_region: Region) -> Option<String> {
    let number = parse_valid(input, default_region)?;
    Some(number.format_as(PhoneNumberFormat::E164).to_string())
}

/// The kind of line (`mobile`, `fixed_line`, `toll_free`, ...) of a valid number.
pub fn phone_kind(input: &str, default_region: Region) -> Option<&'static str> {
    let number = parse_valid(input, default_region)?;
    Some(match number.get_type() {
        PhoneNumberType::FixedLine => "fixed_line",
        PhoneNumberType::Mobile => "mobile",
        PhoneNumberType::FixedLineOrMobile => "fixed_line_or_mobile",
        PhoneNumberType::TollFree => "toll_free",
        PhoneNumberType::PremiumRate => "premium_rate",
        PhoneNumberType::SharedCost => "shared_cost",
        PhoneNumberType::VoIP => "voip",
        PhoneNumberType::PersonalNumber => "personal_number",
        PhoneNumberType::Pager => "pager",
        PhoneNumberType::UAN => "uan",
        PhoneNumberType::VoiceMail => "voicemail",
        PhoneNumberType::Unknown => "unknown",
    })
}

/// A valid number for display: in national form (`030 12345678`, `0171 1234567`) when it
/// belongs to `home` (the person's country), else in international form (`+41 44 123 45 67`),
/// as libphonenumber groups its digits. None when not a valid number.
pub fn display_phone(input: &str, home: Region) -> Option<String> {
    let number = parse_valid(input, home)?;
    let national = number.get_region_code() == Some(home);
    let format = if national {
        PhoneNumberFormat::National
    } else {
        PhoneNumberFormat::International
    };
    Some(number.format_as(format).to_string())
}

/// Whether a number in E.164 form is a fixed line (a home's or an office's landline), as
/// opposed to a mobile, a service number or a kind libphonenumber cannot tell.
pub fn is_fixed_line(e164: &str) -> bool {
    // E.164 carries its country, so the region only matters for junk, which is not fixed.
    parse_valid(e164, Region::DE).is_some_and(|n| n.get_type() == PhoneNumberType::FixedLine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de(s: &str) -> Option<String> {
        normalize_phone(s, parse_region("DE").unwrap())
    }

    #[test]
    fn display_forms() {
        let de = parse_region("DE").unwrap();
        assert_eq!(
            display_phone("+493012345678", de).as_deref(),
            Some("030 12345678")
        );
        assert_eq!(
            display_phone("+491711234567", de).as_deref(),
            Some("0171 1234567")
        );
        assert_eq!(
            display_phone("+41441234567", de).as_deref(),
            Some("+41 44 123 45 67")
        );
        assert_eq!(display_phone("n/a", de), None);
    }

    #[test]
    fn german_spellings_agree() {
        for s in [
            "+49 30 12345678",
            "+49 (0)30 12345678",
            "+49(0)30-123 456 78",
            "0049 30 12345678",
            "030 12345678",
            "030/12345678",
            "(030) 123 456 78",
            "030-1234-5678",
            "+493012345678",
            " 0 30 / 12 34 56 78 ",
        ] {
            assert_eq!(de(s).as_deref(), Some("+493012345678"), "{s}");
        }
        assert_eq!(de("0171 1234567").as_deref(), Some("+491711234567"));
        assert_eq!(de("+49 171 1234567").as_deref(), Some("+491711234567"));
    }

    #[test]
    fn foreign_numbers_keep_their_country() {
        assert_eq!(de("+43 1 5123456").as_deref(), Some("+4315123456"));
        assert_eq!(de("0041 44 668 18 00").as_deref(), Some("+41446681800"));
        let at = parse_region("at").unwrap();
        assert_eq!(
            normalize_phone("01 5123456", at).as_deref(),
            Some("+4315123456")
        );
    }

    #[test]
    fn kinds() {
        let r = parse_region("DE").unwrap();
        assert_eq!(phone_kind("0171 1234567", r), Some("mobile"));
        assert_eq!(phone_kind("030 12345678", r), Some("fixed_line"));
        assert_eq!(phone_kind("0800 1234567", r), Some("toll_free"));
        assert_eq!(phone_kind("0000000", r), None);
        assert!(is_fixed_line("+493012345678"));
        assert!(is_fixed_line("+4315123456"));
        assert!(!is_fixed_line("+491711234567"));
        assert!(!is_fixed_line("+498001234567"));
        assert!(!is_fixed_line("not a number"));
    }

    #[test]
    fn junk_is_none() {
        for bad in [
            "",
            "   ",
            "n/a",
            "0000000",
            "123",
            "+49",
            "😀😀😀",
            "030\u{0}12345678",
            "+999 1234567",
            "٠٣٠١٢٣٤٥٦٧٨\u{202e}abc",
        ] {
            assert_eq!(de(bad), None, "{bad:?}");
        }
        assert_eq!(de(&"1".repeat(1 << 20)), None);
    }

    #[test]
    fn regions() {
        assert!(parse_region("de").is_some());
        assert!(parse_region(" CH ").is_some());
        assert!(parse_region("GER").is_none());
        assert!(parse_region("1").is_none());
        // Two letters without metadata parse, but no national number is valid there.
        assert_eq!(
            normalize_phone("030 12345678", parse_region("XX").unwrap()),
            None
        );
        assert!(parse_region("").is_none());
        assert!(parse_region("DÉ").is_none());
    }
}
