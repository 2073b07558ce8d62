//! Jaro-Winkler, Levenshtein, Damerau-Levenshtein and token Jaccard, on Unicode characters.
//!
//! Jaro-Winkler and Levenshtein are written here rather than taken from `strsim` because they
//! run once per candidate pair in SQL: an ASCII fast path on bytes and a bit-mask for short
//! strings avoid the per-call allocations `strsim` makes. The tests check them against `strsim`.

/// The quadratic measures refuse inputs whose length product exceeds this: two 1 MB strings
/// would otherwise hold a backend for minutes. Names and streets are far below it.
pub const MAX_CELLS: usize = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    pub len_a: usize,
    pub len_b: usize,
}

fn check(len_a: usize, len_b: usize) -> Result<(), TooLong> {
    if len_a.saturating_mul(len_b) > MAX_CELLS {
        Err(TooLong { len_a, len_b })
    } else {
        Ok(())
    }
}

/// Runs `f` on byte slices when both strings are ASCII, else on char vectors, after checking
/// the size limit on the character counts.
macro_rules! on_units {
    ($a:expr, $b:expr, $f:expr) => {{
        let (a, b): (&str, &str) = ($a, $b);
        if a.is_ascii() && b.is_ascii() {
            check(a.len(), b.len()).map(|()| $f(a.as_bytes(), b.as_bytes()))
        } else {
            let va: Vec<char> = a.chars().collect();
            let vb: Vec<char> = b.chars().collect();
            check(va.len(), vb.len()).map(|()| $f(&va[..], &vb[..]))
        }
    }};
}

fn jaro_units<T: PartialEq + Copy>(a: &[T], b: &[T]) -> f64 {
    let (la, lb) = (a.len(), b.len());
    if la == 0 && lb == 0 {
        return 1.0;
    }
    if la == 0 || lb == 0 {
        return 0.0;
    }
    let window = (la.max(lb) / 2).saturating_sub(1);
    // Short strings (the usual case) keep their match flags in two machine words.
    if la <= 64 && lb <= 64 {
        let (mut used_a, mut used_b) = (0u64, 0u64);
        let mut matches = 0usize;
        for (i, ca) in a.iter().enumerate() {
            let lo = i.saturating_sub(window);
            let hi = (i + window + 1).min(lb);
            // `j` is a bit of the mask as well as an index into `b`.
            #[allow(clippy::needless_range_loop)]
            for j in lo..hi {
                if used_b & (1 << j) == 0 && b[j] == *ca {
                    used_a |= 1 << i;
                    used_b |= 1 << j;
                    matches += 1;
                    break;
                }
            }
        }
        if matches == 0 {
            return 0.0;
        }
        let (mut transpositions, mut j) = (0usize, 0usize);
        for (i, ca) in a.iter().enumerate() {
            if used_a & (1 << i) != 0 {
                while used_b & (1 << j) == 0 {
                    j += 1;
                }
                if *ca != b[j] {
                    transpositions += 1;
                }
                j += 1;
            }
        }
        return jaro_formula(matches, transpositions, la, lb);
    }
    let mut used_a = vec![false; la];
    let mut used_b = vec![false; lb];
    let mut matches = 0usize;
    for (i, ca) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(lb);
        for j in lo..hi {
            if !used_b[j] && b[j] == *ca {
                used_a[i] = true;
                used_b[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let (mut transpositions, mut j) = (0usize, 0usize);
    for (i, ca) in a.iter().enumerate() {
        if used_a[i] {
            while !used_b[j] {
                j += 1;
            }
            if *ca != b[j] {
                transpositions += 1;
            }
            j += 1;
        }
    }
    jaro_formula(matches, transpositions, la, lb)
}

fn jaro_formula(matches: usize, transpositions: usize, la: usize, lb: usize) -> f64 {
    let m = matches as f64;
    (m / la as f64 + m / lb as f64 + (m - (transpositions / 2) as f64) / m) / 3.0
}

fn jaro_winkler_units<T: PartialEq + Copy>(a: &[T], b: &[T]) -> f64 {
    with_prefix_bonus(jaro_units(a, b), a, b)
}

/// Winkler's step: up to 4 shared leading characters raise a Jaro similarity above the
/// threshold towards 1. Increasing in `jaro`, so it also turns a bound of Jaro into one of
/// Jaro-Winkler.
fn with_prefix_bonus<T: PartialEq>(jaro: f64, a: &[T], b: &[T]) -> f64 {
    if jaro <= BOOST_THRESHOLD {
        return jaro;
    }
    let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count();
    jaro + 0.1 * prefix as f64 * (1.0 - jaro)
}

/// Winkler adds the prefix bonus only to pairs that are already similar.
const BOOST_THRESHOLD: f64 = 0.7;

/// Jaro-Winkler similarity in [0, 1]: prefix scale 0.1, common prefix up to 4 characters,
/// bonus only above a Jaro similarity of 0.7 (Winkler 1990, as strsim and jellyfish/Splink).
/// Two empty strings are 1.
pub fn jaro_winkler(a: &str, b: &str) -> Result<f64, TooLong> {
    on_units!(a, b, jaro_winkler_units)
}

fn levenshtein_units<T: PartialEq + Copy>(a: &[T], b: &[T]) -> usize {
    // A shared prefix and suffix cost nothing; trimming them shortens the quadratic part.
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (a, b) = (&a[..a.len() - suffix], &b[..b.len() - suffix]);
    let (a, b) = if a.len() < b.len() { (b, a) } else { (a, b) };
    if b.is_empty() {
        return a.len();
    }
    // One DP row; names and streets fit a stack buffer.
    let mut stack = [0usize; 65];
    let mut heap = Vec::new();
    let row: &mut [usize] = if b.len() < stack.len() {
        &mut stack[..=b.len()]
    } else {
        heap.resize(b.len() + 1, 0);
        &mut heap
    };
    for (j, cell) in row.iter_mut().enumerate() {
        *cell = j;
    }
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Levenshtein edit distance counted in characters.
pub fn levenshtein(a: &str, b: &str) -> Result<usize, TooLong> {
    on_units!(a, b, levenshtein_units)
}

/// Damerau-Levenshtein distance (insertions, deletions, substitutions and transpositions of
/// adjacent characters, unrestricted: a true metric), via `strsim`.
pub fn damerau_levenshtein(a: &str, b: &str) -> Result<usize, TooLong> {
    check(a.chars().count(), b.chars().count())?;
    Ok(strsim::damerau_levenshtein(a, b))
}

/// Whether the Damerau-Levenshtein distance is at most one (equal, or one insertion, deletion,
/// substitution or swap of adjacent characters), in one pass and without allocating: the
/// typo test of e-mails and postcodes runs on millions of candidate pairs.
pub fn within_one_edit(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if a.is_ascii() && b.is_ascii() {
        one_edit_units(a.as_bytes(), b.as_bytes())
    } else {
        let va: Vec<char> = a.chars().collect();
        let vb: Vec<char> = b.chars().collect();
        one_edit_units(&va, &vb)
    }
}

fn one_edit_units<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let (a, b) = if a.len() < b.len() { (b, a) } else { (a, b) };
    if a.len() - b.len() > 1 {
        return false;
    }
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if a.len() != b.len() {
        // One deletion from the longer side: the rest after the shared prefix must agree.
        return a[prefix + 1..] == b[prefix..];
    }
    if prefix == a.len() {
        return true;
    }
    // One substitution, or a swap of the first differing character with the next.
    a[prefix + 1..] == b[prefix + 1..]
        || (prefix + 1 < a.len()
            && a[prefix] == b[prefix + 1]
            && a[prefix + 1] == b[prefix]
            && a[prefix + 2..] == b[prefix + 2..])
}

/// Whether `jaro_winkler(a, b) >= threshold`, deciding most clearly different pairs from an
/// upper bound (the characters the two have in common, as a multiset, bound the Jaro matches)
/// before computing the similarity: a first name against a last name, two unrelated names.
pub fn jaro_winkler_at_least(a: &str, b: &str, threshold: f64) -> bool {
    jaro_winkler_above_bound(a, b, threshold).is_some()
}

/// `Some(jaro_winkler(a, b))` unless an upper bound shows it is below `floor` (then `None`).
pub fn jaro_winkler_above_bound(a: &str, b: &str, floor: f64) -> Option<f64> {
    if a.is_ascii() && b.is_ascii() && a.len() <= 255 && b.len() <= 255 {
        let (x, y) = (a.as_bytes(), b.as_bytes());
        if jaro_winkler_upper_bound(x, y) < floor - 1e-9 {
            return None;
        }
    }
    let s = jaro_winkler(a, b).ok()?;
    (s >= floor).then_some(s)
}

/// A string's characters counted by their byte modulo 32 (`a`–`z` each a bucket of its own,
/// other characters sharing one with a letter), for ASCII strings of up to 255 bytes: computed
/// once per record, it bounds Jaro-Winkler against any other such string without a pass over
/// either (see [`jaro_winkler_above_bound_counted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharCounts([u8; 32]);

impl CharCounts {
    /// None for a string that is not ASCII or longer than 255 bytes (no bound then, as in
    /// [`jaro_winkler_above_bound`]).
    pub fn of(s: &str) -> Option<Self> {
        if !s.is_ascii() || s.len() > 255 {
            return None;
        }
        let mut counts = [0u8; 32];
        for &x in s.as_bytes() {
            counts[usize::from(x & 31)] += 1;
        }
        Some(Self(counts))
    }

    /// The characters two strings can have in common: at least the number of equal
    /// characters they share (as multisets), so a bound computed from it is still one.
    fn common(&self, other: &Self) -> usize {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(x, y)| usize::from(*x.min(y)))
            .sum()
    }
}

/// [`jaro_winkler_above_bound`] with the [`CharCounts`] of `a` and `b` computed beforehand (as
/// `MatchRecord::prepare` does for names and streets): the same answer, since the bound only
/// decides whether the similarity is computed, and it is an upper bound either way. Without
/// counts on both sides it is computed.
pub fn jaro_winkler_above_bound_counted(
    a: &str,
    b: &str,
    counts: (Option<&CharCounts>, Option<&CharCounts>),
    floor: f64,
) -> Option<f64> {
    if let (Some(ca), Some(cb)) = counts {
        let bound = if a.is_empty() || b.is_empty() {
            if a.len() == b.len() {
                1.0
            } else {
                0.0
            }
        } else {
            let common = ca.common(cb);
            if common == 0 {
                0.0
            } else {
                let m = common as f64;
                with_prefix_bonus(
                    (m / a.len() as f64 + m / b.len() as f64 + 1.0) / 3.0,
                    a.as_bytes(),
                    b.as_bytes(),
                )
            }
        };
        if bound < floor - 1e-9 {
            return None;
        }
    }
    let s = jaro_winkler(a, b).ok()?;
    (s >= floor).then_some(s)
}

/// An upper bound of Jaro-Winkler on ASCII bytes: Jaro with every common character matched and
/// no transposition, then the prefix bonus.
fn jaro_winkler_upper_bound(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return if a.len() == b.len() { 1.0 } else { 0.0 };
    }
    let mut counts = [0u8; 128];
    for &x in a {
        counts[x as usize] += 1;
    }
    let mut common = 0usize;
    for &y in b {
        let c = &mut counts[y as usize];
        if *c > 0 {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let m = common as f64;
    with_prefix_bonus((m / a.len() as f64 + m / b.len() as f64 + 1.0) / 3.0, a, b)
}

/// Jaccard similarity of the word sets: words are maximal runs of letters and digits, compared
/// lowercased, so word order and punctuation do not matter. Two texts without words are 1.
pub fn jaccard_tokens(a: &str, b: &str) -> f64 {
    fn words(s: &str) -> Vec<String> {
        let mut v: Vec<String> = s
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
    let (wa, wb) = (words(a), words(b));
    if wa.is_empty() && wb.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < wa.len() && j < wb.len() {
        match wa[i].cmp(&wb[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common as f64 / (wa.len() + wb.len() - common) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &[&str] = &[
        "",
        "a",
        "Müller",
        "Mueller",
        "Muller",
        "MÜLLER",
        "Meier",
        "Mayer",
        "Schmidt",
        "Schmitt",
        "Martha",
        "Marhta",
        "Dwayne",
        "Duane",
        "Dixon",
        "Dicksonx",
        "Hans-Peter",
        "Hanspeter",
        "Straße",
        "Strasse",
        "Jörg",
        "Joerg",
        "ab",
        "ba",
        "abcdefghijklmnopqrstuvwxyz0123456789",
        "Ärztehaus am Schloßpark",
        "Aerztehaus am Schlosspark",
        "😀😀x",
        "x😀😀",
        "محمد",
        "محمود",
    ];

    #[test]
    fn jaro_winkler_known_values() {
        let jw = |a, b| jaro_winkler(a, b).unwrap();
        assert!((jw("MARTHA", "MARHTA") - 0.961).abs() < 0.001);
        assert!((jw("DWAYNE", "DUANE") - 0.84).abs() < 0.001);
        assert!((jw("DIXON", "DICKSONX") - 0.813).abs() < 0.001);
        assert_eq!(jw("", ""), 1.0);
        assert_eq!(jw("abc", ""), 0.0);
        assert_eq!(jw("Müller", "Müller"), 1.0);
        // Characters, not bytes: ü is one character.
        assert!((jw("Müller", "Muller") - jw("Mxller", "Muller")).abs() < 1e-12);
    }

    #[test]
    fn jaro_winkler_equals_strsim() {
        let long_a = "ab".repeat(40);
        let long_b = "ba".repeat(41);
        let mut cases: Vec<(&str, &str)> = Vec::new();
        for a in WORDS {
            for b in WORDS {
                cases.push((a, b));
            }
        }
        cases.push((&long_a, &long_b));
        for (a, b) in cases {
            let ours = jaro_winkler(a, b).unwrap();
            let theirs = strsim::jaro_winkler(a, b);
            assert!(
                (ours - theirs).abs() < 1e-12,
                "{a:?} {b:?}: {ours} vs {theirs}"
            );
        }
    }

    #[test]
    fn levenshtein_equals_strsim() {
        assert_eq!(levenshtein("kitten", "sitting"), Ok(3));
        assert_eq!(levenshtein("Müller", "Mueller"), Ok(2));
        assert_eq!(levenshtein("Straße", "Strasse"), Ok(2));
        let long_a = "abc".repeat(50);
        let long_b = "acb".repeat(60);
        let mut cases: Vec<(&str, &str)> = vec![(&long_a, &long_b)];
        for a in WORDS {
            for b in WORDS {
                cases.push((a, b));
            }
        }
        for (a, b) in cases {
            assert_eq!(
                levenshtein(a, b),
                Ok(strsim::levenshtein(a, b)),
                "{a:?} {b:?}"
            );
        }
    }

    #[test]
    fn damerau_counts_transpositions_once() {
        assert_eq!(damerau_levenshtein("Marhta", "Martha"), Ok(1));
        assert_eq!(levenshtein("Marhta", "Martha"), Ok(2));
        assert_eq!(damerau_levenshtein("ca", "abc"), Ok(2));
        assert_eq!(damerau_levenshtein("Jörg", "Jrög"), Ok(1));
    }

    #[test]
    fn jaccard() {
        assert_eq!(
            jaccard_tokens("Hans Peter Müller", "müller, hans-peter"),
            1.0
        );
        assert!((jaccard_tokens("Hans Müller", "Hans Meier") - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(jaccard_tokens("", "  "), 1.0);
        assert_eq!(jaccard_tokens("abc", ""), 0.0);
    }

    #[test]
    fn huge_inputs_are_refused_not_hung() {
        let huge = "a".repeat(1 << 20);
        assert_eq!(
            levenshtein(&huge, &huge),
            Err(TooLong {
                len_a: 1 << 20,
                len_b: 1 << 20
            })
        );
        assert!(jaro_winkler(&huge, &huge).is_err());
        assert!(damerau_levenshtein(&huge, &huge).is_err());
        // One long side against a short one is fine.
        assert_eq!(levenshtein(&huge, "a"), Ok((1 << 20) - 1));
        assert!(jaccard_tokens(&huge, "a") < 1.0);
    }

    #[test]
    fn within_one_edit_equals_damerau_at_most_one() {
        let mut cases: Vec<(String, String)> = Vec::new();
        for a in WORDS {
            for b in WORDS {
                cases.push((a.to_string(), b.to_string()));
            }
        }
        // Every single edit of a few words, and pairs of edits.
        let alphabet = ['a', 'b', 'ü', '.', '1'];
        for w in ["marie.strauss@web.de", "10115", "Jörg", "ab", "a", ""] {
            let chars: Vec<char> = w.chars().collect();
            let mut variants = vec![w.to_string()];
            for i in 0..=chars.len() {
                for &c in &alphabet {
                    let mut v = chars.clone();
                    v.insert(i, c);
                    variants.push(v.iter().collect());
                    if i < chars.len() {
                        let mut v = chars.clone();
                        v[i] = c;
                        variants.push(v.iter().collect());
                    }
                }
                if i < chars.len() {
                    let mut v = chars.clone();
                    v.remove(i);
                    variants.push(v.iter().collect());
                }
                if i + 1 < chars.len() {
                    let mut v = chars.clone();
                    v.swap(i, i + 1);
                    variants.push(v.iter().collect());
                }
            }
            for x in &variants {
                for y in &variants {
                    cases.push((x.clone(), y.clone()));
                }
            }
        }
        let mut near = 0;
        for (a, b) in &cases {
            let want = strsim::damerau_levenshtein(a, b) <= 1;
            near += usize::from(want);
            assert_eq!(within_one_edit(a, b), want, "{a:?} {b:?}");
        }
        assert!(near > 1000, "the cases exercise the near side too: {near}");
    }

    #[test]
    fn jaro_winkler_threshold_equals_the_similarity() {
        let mut words: Vec<String> = WORDS.iter().map(|w| w.to_lowercase()).collect();
        words.extend(
            [
                "anna", "anne", "hanna", "schmidt", "schmitt", "smith", "mueller", "muller",
                "miller", "karl", "carl", "karla", "klaus", "nicolaus", "aaaa", "aaab", "ab",
            ]
            .map(String::from),
        );
        let mut decided_early = 0;
        for a in &words {
            for b in &words {
                let s = jaro_winkler(a, b).unwrap();
                for t in [0.5, 0.7, 0.8, 0.88, 0.92, 0.95] {
                    assert_eq!(jaro_winkler_at_least(a, b, t), s >= t, "{a:?} {b:?} {t}");
                    assert_eq!(
                        jaro_winkler_above_bound(a, b, t),
                        (s >= t).then_some(s),
                        "{a:?} {b:?} {t}"
                    );
                    let counts = (CharCounts::of(a), CharCounts::of(b));
                    assert_eq!(
                        jaro_winkler_above_bound_counted(
                            a,
                            b,
                            (counts.0.as_ref(), counts.1.as_ref()),
                            t
                        ),
                        (s >= t).then_some(s),
                        "{a:?} {b:?} {t}"
                    );
                }
                if a.is_ascii() && b.is_ascii() {
                    let bound = jaro_winkler_upper_bound(a.as_bytes(), b.as_bytes());
                    assert!(bound + 1e-12 >= s, "{a:?} {b:?}: bound {bound} < {s}");
                    decided_early += usize::from(bound < 0.92);
                    // The counts' bound is looser (characters share buckets), never lower.
                    let (ca, cb) = (CharCounts::of(a).unwrap(), CharCounts::of(b).unwrap());
                    assert!(ca.common(&cb) <= a.len().min(b.len()));
                    let common = {
                        let mut n = 0;
                        let mut rest = b.as_bytes().to_vec();
                        for x in a.bytes() {
                            if let Some(k) = rest.iter().position(|y| *y == x) {
                                rest.remove(k);
                                n += 1;
                            }
                        }
                        n
                    };
                    assert!(ca.common(&cb) >= common, "{a:?} {b:?}");
                }
            }
        }
        assert!(
            decided_early > 100,
            "the bound decides pairs: {decided_early}"
        );
    }
}
