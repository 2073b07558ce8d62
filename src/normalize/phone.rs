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
    if default_region == Region::DE {
        if let Some(e164) = german_number_as_written(input) {
            return e164;
        }
    }
    normalize_phone_parsed(input, default_region)
}

/// [`normalize_phone`] through libphonenumber's parser, for every input.
pub(crate) fn normalize_phone_parsed(input: &str, default_region: Region) -> Option<String> {
    let number = parse_valid(input, default_region)?;
    Some(number.format_as(PhoneNumberFormat::E164).to_string())
}

/// The national significant number of a German number written in one of the usual plain forms
/// (issue 27: libphonenumber's parser, a dozen regular expressions per call, was the largest
/// part of the cleaners): `+49` or `0049` (optionally followed by `(0)`), or the trunk `0` (the
/// area code optionally in brackets, `(030)`), then digits separated by spaces, `/` or `-`, the
/// first digit after the prefix not `0`; ASCII only, spaces around. None for anything else.
///
/// For such input the parser (region DE) finds country code 49 and these digits: it drops the
/// punctuation and the prefix, and a trunk `0` (also `+49 (0)`) only when what follows has a
/// possible length, which every valid number has; a number that keeps its `0` is not valid,
/// as no German number pattern starts with 0. No letter, `#`, `;` or `x`: no extension, no
/// RFC 3966 part, no second number. `tests::fast_path_equals_the_parser` checks it over many
/// generated numbers and spellings.
fn german_national_digits(input: &str) -> Option<String> {
    let s = input.trim_matches(' ').as_bytes();
    let rest = if let Some(rest) = s.strip_prefix(b"+49").or_else(|| s.strip_prefix(b"0049")) {
        // `+49 (0) 30`: the trunk 0 in brackets after the country code.
        let after = trim_start_separators(rest);
        match after.strip_prefix(b"(0)") {
            Some(after_trunk) => trim_start_separators(after_trunk),
            None => after,
        }
    } else if let Some(rest) = s.strip_prefix(b"(0") {
        // `(030) 1234567`: the area code in brackets, then separators.
        let close = rest.iter().position(|&b| b == b')')?;
        let (area, after) = rest.split_at(close);
        if area.is_empty() || !area.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let after = &after[1..];
        if after.first().is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let mut digits = String::with_capacity(16);
        push_digit_groups(area, &mut digits)?;
        if !after.is_empty() {
            push_digit_groups(trim_start_separators(after), &mut digits)?;
        }
        return digits_if_plausible(digits);
    } else {
        trim_start_separators(s.strip_prefix(b"0")?)
    };
    let mut digits = String::with_capacity(16);
    push_digit_groups(rest, &mut digits)?;
    digits_if_plausible(digits)
}

fn trim_start_separators(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'/' | b'-'))
        .unwrap_or(s.len());
    &s[start..]
}

/// Appends the digits of `s`: digit groups separated by runs of spaces, `/` and `-`, starting
/// and ending with a digit. None for any other character.
fn push_digit_groups(s: &[u8], digits: &mut String) -> Option<()> {
    if !s.first()?.is_ascii_digit() || !s.last()?.is_ascii_digit() {
        return None;
    }
    for &b in s {
        match b {
            b'0'..=b'9' => digits.push(b as char),
            b' ' | b'/' | b'-' => {}
            _ => return None,
        }
    }
    Some(())
}

/// The digits when they can be a national significant number for the fast path: not starting
/// with 0, 2 to 17 digits (the parser's limits).
fn digits_if_plausible(digits: String) -> Option<String> {
    (digits.len() >= 2 && digits.len() <= 17 && !digits.starts_with('0')).then_some(digits)
}

/// [`normalize_phone`] of region DE without the parser, for the forms
/// [`german_national_digits`] reads: libphonenumber's validity check on the number it would
/// have parsed. None when the input is not in such a form; Some(None) when it is, but no valid
/// number.
pub(crate) fn german_number_as_written(input: &str) -> Option<Option<String>> {
    let digits = german_national_digits(input)?;
    let number = PhoneNumber {
        country_code: 49,
        national_number: digits.parse().ok()?,
        ..PhoneNumber::default()
    };
    let valid = std::panic::catch_unwind(|| number.is_valid()).ok()?;
    Some(valid.then(|| format!("+49{digits}")))
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

/// A number for display: in national form (`030 12345678`, `0171 1234567`) when it belongs to
/// `home` (the person's country), else in international form (`+41 44 123 45 67`), as
/// libphonenumber groups its digits. A value in E.164 form is taken as `normalize_phone` made
/// it, valid (see [`read_e164`]); any other is parsed and None unless a valid number.
pub fn display_phone(input: &str, home: Region) -> Option<String> {
    let number = read_e164(input).or_else(|| parse_valid(input, home))?;
    let national = number.get_region_code() == Some(home);
    let format = if national {
        PhoneNumberFormat::National
    } else {
        PhoneNumberFormat::International
    };
    Some(number.format_as(format).to_string())
}

/// The number an E.164 value stands for (`+`, the country calling code, the national
/// significant number: `normalize_phone`'s form), read without libphonenumber's parser. Calling
/// codes are prefix-free, so the code is the one of its first one to three digits that
/// libphonenumber knows; the national number's leading zeros (Italy's fixed lines) are kept as
/// the parser keeps them. Not checked for validity: for values the normalizer checked when it
/// made them. The parser and the check each keep a cache of regular-expression states per
/// thread (libphonenumber's patterns for every kind of number): some 60 MB of a backend's
/// memory after the golden records of a million persons, for work done at the sync. None for
/// anything but `+` and 3 to 20 digits, or an unknown calling code.
pub fn read_e164(e164: &str) -> Option<PhoneNumber> {
    let digits = e164.strip_prefix('+')?;
    if !(3..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (country_code, national) = (1..=3).find_map(|n| {
        let code: i32 = digits[..n].parse().ok()?;
        PHONE_NUMBER_UTIL.get_region_for_country_code(code)?;
        Some((code, &digits[n..]))
    })?;
    if !(2..=17).contains(&national.len()) {
        return None;
    }
    let mut number = PhoneNumber {
        country_code,
        national_number: national.parse().ok()?,
        ..Default::default()
    };
    // As the parser reads them: a national number of zeros keeps all but its last one.
    let zeros = national.bytes().take_while(|&b| b == b'0').count();
    let zeros = zeros.min(national.len() - 1);
    if zeros > 0 {
        number.italian_leading_zero = Some(true);
        if zeros > 1 {
            number.number_of_leading_zeros = Some(zeros as i32);
        }
    }
    Some(number)
}

/// Whether a number in E.164 form is a fixed line (a home's or an office's landline), as
/// opposed to a mobile, a service number or a kind libphonenumber cannot tell.
pub fn is_fixed_line(e164: &str) -> bool {
    // A number of no kind (not valid) is not fixed either: no validity check first.
    read_e164(e164).is_some_and(|n| n.get_type() == PhoneNumberType::FixedLine)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn de(s: &str) -> Option<String> {
        normalize_phone(s, parse_region("DE").unwrap())
    }

    /// German numbers (area codes of every length, mobile and service prefixes, random digit
    /// strings) in written forms (the usual ones, odd spacing, the trunk 0 kept after +49,
    /// brackets in odd places): the fast path gives what the parser gives, valid or not, and
    /// it is taken for most of them. `fuzz::fuzz_german_phone_fast_path` draws more.
    pub(crate) fn written_german_number(mut next: impl FnMut(u64) -> u64) -> String {
        const AREAS: &[&str] = &[
            "30", "40", "69", "89", "221", "211", "341", "351", "711", "911", "6131", "7071",
            "3943", "33203", "35204", "38234", "151", "152", "160", "170", "171", "176", "179",
            "15678", "800", "180", "1805", "900", "700", "32", "118", "1", "2", "0", "49",
        ];
        let digits = |n: u64, next: &mut dyn FnMut(u64) -> u64| -> String {
            (0..n).map(|_| char::from(b'0' + next(10) as u8)).collect()
        };
        let (area, sub) = match next(4) {
            0 | 1 => {
                let area = AREAS[next(AREAS.len() as u64) as usize].to_string();
                let n = 1 + next(11);
                (area, digits(n, &mut next))
            }
            2 => {
                // Random digits, split anywhere.
                let n = 1 + next(18);
                let all = digits(n, &mut next);
                let cut = next(n + 1) as usize;
                (all[..cut].to_string(), all[cut..].to_string())
            }
            _ => {
                let n = 2 + next(10);
                let first = char::from(b'1' + next(9) as u8);
                (
                    first.to_string() + &digits(1 + next(4), &mut next),
                    digits(n, &mut next),
                )
            }
        };
        let spaced: String = sub
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        match next(24) {
            0 => format!("+49 {area} {sub}"),
            1 => format!("+49 (0){area} {sub}"),
            2 => format!("0049 {area} {sub}"),
            3 => format!("0{area} {sub}"),
            4 => format!("0{area}/{sub}"),
            5 => format!("0{area}-{sub}"),
            6 => format!("(0{area}) {spaced}"),
            7 => format!("+49{area}{sub}"),
            8 => format!("0{area}{sub}"),
            9 => format!("+49 (0) {area} / {sub}"),
            10 => format!("+49 0{area} {sub}"),
            11 => format!(" 0 {area} / {spaced} "),
            12 => format!("+49-{area}-{sub}"),
            13 => format!("(0{area}){sub}"),
            14 => format!("(0{area})-{sub}"),
            15 => format!("0{area} - {sub}"),
            16 => format!("+49  {area}  {spaced}"),
            17 => format!("0{area}//{sub}"),
            18 => format!("00{area} {sub}"),
            19 => format!("+{area} {sub}"),
            20 => format!("+49 ({area}) {sub}"),
            21 => format!("0{area} {sub}-"),
            22 => format!("0049 (0){area}{sub}"),
            _ => format!("{area} {sub}"),
        }
    }

    #[test]
    fn fast_path_equals_the_parser() {
        let de = parse_region("DE").unwrap();
        let mut next = crate::test_draws(0x2545_f491_4f6c_dd1d);
        let (mut fast, mut valid) = (0, 0);
        let cases = 20_000;
        for _ in 0..cases {
            let input = written_german_number(&mut next);
            let parsed = normalize_phone_parsed(&input, de);
            if let Some(result) = german_number_as_written(&input) {
                assert_eq!(result, parsed, "{input:?}");
                fast += 1;
                valid += usize::from(result.is_some());
            }
            assert_eq!(normalize_phone(&input, de), parsed, "{input:?}");
        }
        // Most inputs take the fast path, valid and invalid ones.
        assert!(
            fast > cases / 2 && valid > cases / 5,
            "{fast} fast, {valid} valid"
        );
    }

    #[test]
    fn fast_path_forms() {
        for (input, digits) in [
            ("+49 30 12345678", Some("3012345678")),
            ("+49 (0)30 12345678", Some("3012345678")),
            ("+49(0)30-123 456 78", Some("3012345678")),
            ("+49 (0) 30 / 12345678", Some("3012345678")),
            ("0049 30 12345678", Some("3012345678")),
            ("030/12345678", Some("3012345678")),
            ("(030) 12 34 56 78", Some("3012345678")),
            (" 0 30 / 12 34 56 78 ", Some("3012345678")),
            ("0171-1234567", Some("1711234567")),
            // Left to the parser.
            ("+49 030 12345678", None),
            ("(030)12345678", None),
            ("(0)30 12345678", None),
            ("030 12345678 x12", None),
            ("030 1234567#", None),
            ("+43 1 5123456", None),
            ("0043 1 5123456", None),
            ("00 49 30 12345678", None),
            ("030\t12345678", None),
            ("030 12345678 ", Some("3012345678")),
            ("030 12345678-", None),
            ("３０", None),
            ("0", None),
            ("01", None),
        ] {
            assert_eq!(
                german_national_digits(input).as_deref(),
                digits,
                "{input:?}"
            );
        }
    }

    /// A valid number's E.164 form is read back as the parser reads it, field by field, and
    /// displayed as before: libphonenumber's example numbers of every region, kind and
    /// non-geographic calling code, each with its last digits varied, and German numbers in
    /// every written form normalized.
    #[test]
    fn e164_values_read_as_the_parser_reads_them() {
        let util = &*PHONE_NUMBER_UTIL;
        let mut examples: Vec<(PhoneNumber, Region)> = Vec::new();
        for region in util.get_supported_regions() {
            for kind in util
                .get_supported_types_for_region(region)
                .unwrap_or_default()
            {
                if let Ok(n) = util.get_example_number_for_type_and_region(region, kind) {
                    examples.push((n, region));
                }
            }
        }
        for code in util.get_supported_global_network_calling_codes() {
            if let Ok(n) = util.get_example_number_for_non_geo_entity(code) {
                examples.push((n, Region::DE));
            }
        }
        assert!(examples.len() > 1000, "{}", examples.len());
        let mut values: Vec<(String, Region)> = Vec::new();
        for (n, region) in &examples {
            let e164 = n.format_as(PhoneNumberFormat::E164).to_string();
            for last in 0..100 {
                let varied = format!("{}{last:02}", &e164[..e164.len() - 2]);
                values.push((varied, *region));
            }
        }
        let mut next = crate::test_draws(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            if let Some(e164) = normalize_phone(&written_german_number(&mut next), Region::DE) {
                values.push((e164, Region::DE));
            }
        }
        let (mut compared, mut leading_zeros, mut shared_codes) = (0, 0, 0);
        for (value, region) in &values {
            let Some(parsed) = parse_valid(value, *region) else {
                // Not valid: of no kind, so not a fixed line either.
                assert!(!is_fixed_line(value), "{value}");
                continue;
            };
            let read = read_e164(value).unwrap_or_else(|| panic!("{value} not read"));
            assert_eq!(read, parsed, "{value}");
            for home in [Region::DE, *region] {
                assert_eq!(
                    display_phone(value, home),
                    Some(display_of(&parsed, home)),
                    "{value} at home in {home}"
                );
            }
            assert_eq!(
                is_fixed_line(value),
                parsed.get_type() == PhoneNumberType::FixedLine,
                "{value}"
            );
            compared += 1;
            leading_zeros += usize::from(read.italian_leading_zero.is_some());
            shared_codes += usize::from(read.country_code == 1 || read.country_code == 7);
        }
        assert!(compared > 50_000, "{compared}");
        assert!(
            leading_zeros > 100 && shared_codes > 1000,
            "{leading_zeros} {shared_codes}"
        );
        for junk in [
            "",
            "+",
            "+4",
            "+49",
            "+49a30123",
            "4930123456",
            "+999123456",
            "+49 30 1234",
        ] {
            assert_eq!(read_e164(junk), None, "{junk:?}");
        }
    }

    /// The display of a parsed number as `display_phone` made it before it read E.164 values.
    fn display_of(number: &PhoneNumber, home: Region) -> String {
        let format = if number.get_region_code() == Some(home) {
            PhoneNumberFormat::National
        } else {
            PhoneNumberFormat::International
        };
        number.format_as(format).to_string()
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
