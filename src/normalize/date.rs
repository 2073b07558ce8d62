//! Dates as CRM sources write them: ISO, German `DD.MM.YYYY`, `D.M.YY`, `YYYYMMDD`, `DD/MM/YYYY`.

/// (year, month, day)
pub type Ymd = (i32, u32, u32);

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

fn valid(y: i32, m: u32, d: u32) -> Option<Ymd> {
    ((1900..=2100).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m))
        .then_some((y, m, d))
}

/// `YYYY-MM-DD` of a PostgreSQL `date` given as its stored value (days since 2000-01-01), as
/// `to_char(d, 'YYYY-MM-DD')` writes it, for the years 1 to 9999; None outside them. Reading
/// the date and writing it here is cheaper than `to_char` in the query (1.6 µs a row).
pub fn iso_date_from_pg_days(days: i32) -> Option<String> {
    // Howard Hinnant's civil_from_days, from an epoch of 0000-03-01.
    let z = i64::from(days) + 730_425; // 2000-01-01 is day 730,425 after 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (1..=9999)
        .contains(&year)
        .then(|| format!("{year:04}-{month:02}-{day:02}"))
}

/// The stored value of a PostgreSQL `date` (days since 2000-01-01) of a calendar date that
/// [`parse_date`] gives (years 1900 to 2100): what `make_date` computes, without a call into
/// PostgreSQL per row (issue 27). Howard Hinnant's days_from_civil.
pub fn pg_days((year, month, day): Ymd) -> i32 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe - 730_425) as i32
}

/// A birth date in any of the common spellings; None when it is not a real calendar date between
/// 1900 and 2100. Two-digit years are read as 19xx above 30 and 20xx otherwise (birth dates).
pub fn parse_date(input: &str) -> Option<Ymd> {
    let s = input.trim();
    if s.len() > 32 {
        return None;
    }
    // Drop a time part (`1980-05-17 00:00:00`, `1980-05-17T00:00`).
    let s = s.split(['T', ' ']).next().unwrap_or(s);
    let parts: Vec<&str> = s.split(['.', '-', '/']).filter(|p| !p.is_empty()).collect();
    let num = |p: &str| -> Option<u32> {
        (p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty())
            .then(|| p.parse().ok())
            .flatten()
    };
    match parts.as_slice() {
        // Digits only before slicing by byte: `17𐀀ä` is eight bytes too (found by fuzzing).
        [compact] if compact.len() == 8 && compact.bytes().all(|b| b.is_ascii_digit()) => {
            let (y, m, d) = (
                num(&compact[..4])?,
                num(&compact[4..6])?,
                num(&compact[6..])?,
            );
            valid(y as i32, m, d)
        }
        [a, b, c] => {
            let (x, y, z) = (num(a)?, num(b)?, num(c)?);
            if a.len() == 4 {
                valid(x as i32, y, z) // ISO year-month-day
            } else {
                let year = match c.len() {
                    4 => z as i32,
                    2 if z > 30 => 1900 + z as i32,
                    2 => 2000 + z as i32,
                    _ => return None,
                };
                valid(year, y, x) // day.month.year, the German and British order
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{days_in_month, iso_date_from_pg_days, parse_date, pg_days};

    #[test]
    fn iso_dates_from_postgres_day_numbers() {
        let iso = iso_date_from_pg_days;
        assert_eq!(iso(0).as_deref(), Some("2000-01-01"));
        assert_eq!(iso(-1).as_deref(), Some("1999-12-31"));
        assert_eq!(iso(59).as_deref(), Some("2000-02-29"));
        assert_eq!(iso(60).as_deref(), Some("2000-03-01"));
        assert_eq!(iso(-36_524).as_deref(), Some("1900-01-01"));
        assert_eq!(iso(-36_465).as_deref(), Some("1900-03-01")); // 1900 has no 29 February
        assert_eq!(iso(36_889).as_deref(), Some("2100-12-31"));
        assert_eq!(iso(-730_119).as_deref(), Some("0001-01-01"));
        assert_eq!(iso(-730_120), None);
        assert_eq!(iso(2_921_939).as_deref(), Some("9999-12-31"));
        assert_eq!(iso(2_921_940), None);
        assert_eq!(iso(i32::MAX), None);
        assert_eq!(iso(i32::MIN), None);
        // Every day from 1900 to 2100 follows the day before it, and parses back to itself.
        let mut previous = iso(-36_525).unwrap();
        for d in -36_524..=36_889 {
            let s = iso(d).unwrap();
            assert!(s > previous, "{s} after {previous}");
            let (y, m, dd) = parse_date(&s).unwrap();
            assert_eq!(format!("{y:04}-{m:02}-{dd:02}"), s);
            previous = s;
        }
    }

    #[test]
    fn spellings() {
        for s in [
            "1980-05-17",
            "17.05.1980",
            "17.5.1980",
            "17.05.80",
            "19800517",
            "17/05/1980",
            " 1980-05-17 00:00:00 ",
        ] {
            assert_eq!(parse_date(s), Some((1980, 5, 17)), "{s}");
        }
        assert_eq!(parse_date("01.02.05"), Some((2005, 2, 1)));
        assert_eq!(parse_date("29.02.2000"), Some((2000, 2, 29)));
    }

    #[test]
    fn invalid() {
        for s in [
            "",
            "  ",
            "31.02.1980",
            "29.02.1900",
            "1980-13-01",
            "00.01.1980",
            "17.05.1780",
            "17.05.980",
            "abc",
            "17.05",
            "😀",
            "1980-05-17-01",
        ] {
            assert_eq!(parse_date(s), None, "{s:?}");
        }
    }

    /// Found by fuzzing (src/fuzz.rs): eight bytes that are not eight digits were sliced by
    /// byte and panicked inside a multi-byte character.
    #[test]
    fn eight_bytes_of_other_characters_are_no_date() {
        assert_eq!(parse_date("17𐀀ä"), None);
        assert_eq!(parse_date("aaaääa"), None);
        assert_eq!(parse_date("1980ä5"), None);
        assert_eq!(parse_date("19800517"), Some((1980, 5, 17)));
    }

    #[test]
    fn pg_days_inverts_iso_date_from_pg_days() {
        assert_eq!(pg_days((2000, 1, 1)), 0);
        assert_eq!(pg_days((1999, 12, 31)), -1);
        assert_eq!(pg_days((1900, 1, 1)), -36_524);
        let mut days = pg_days((1900, 1, 1));
        for year in 1900..=2100 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(pg_days((year, month, day)), days);
                    assert_eq!(
                        iso_date_from_pg_days(days).unwrap(),
                        format!("{year:04}-{month:02}-{day:02}")
                    );
                    days += 1;
                }
            }
        }
    }
}
