//! The golden record: per field the value that survives among a person's records.
//!
//! Every rule ends in the same tie-breaks (most recent, then the most trusted source, then the
//! oldest record), so the golden value never depends on the order records are read in.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The value of the most recently updated record.
    MostRecent,
    /// The value most records hold.
    MostFrequent,
    /// The value of the most trusted source (lowest priority number).
    SourcePriority,
    /// The longest value (most characters): "Hauptstraße 12 a" over "Hauptstr.".
    Longest,
    /// The value as first recorded: the oldest record that has one.
    FirstNonNull,
    /// The smallest value (text order; dates are ISO text, so the earliest date).
    Min,
    /// The largest value.
    Max,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::MostRecent,
        Rule::MostFrequent,
        Rule::SourcePriority,
        Rule::Longest,
        Rule::FirstNonNull,
        Rule::Min,
        Rule::Max,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::MostRecent => "most_recent",
            Rule::MostFrequent => "most_frequent",
            Rule::SourcePriority => "source_priority",
            Rule::Longest => "longest",
            Rule::FirstNonNull => "first_non_null",
            Rule::Min => "min",
            Rule::Max => "max",
        }
    }

    pub fn parse(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One record's value of a field.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub value: &'a str,
    /// The source's priority: lower is more trusted.
    pub priority: i32,
    /// When the source last changed the row (microseconds; None: unknown, oldest).
    pub updated: Option<i64>,
    pub record_id: i64,
}

/// Most recent first, then most trusted, then oldest record.
fn tie_break(a: &Candidate, b: &Candidate) -> Ordering {
    b.updated
        .cmp(&a.updated)
        .then(a.priority.cmp(&b.priority))
        .then(a.record_id.cmp(&b.record_id))
}

/// The surviving value among `candidates` (records without a value are left out by the caller).
pub fn survive<'a>(rule: Rule, candidates: &[Candidate<'a>]) -> Option<&'a str> {
    survivor(rule, candidates).map(|c| c.value)
}

/// The candidate whose value survives: of the records holding the surviving value, the one the
/// tie-breaks put first (its record gives the value's display form).
pub fn survivor<'c, 'a>(rule: Rule, candidates: &'c [Candidate<'a>]) -> Option<&'c Candidate<'a>> {
    let best = |order: &dyn Fn(&Candidate, &Candidate) -> Ordering| {
        candidates
            .iter()
            .min_by(|a, b| order(a, b).then_with(|| tie_break(a, b)))
    };
    match rule {
        Rule::MostRecent => best(&|_, _| Ordering::Equal),
        Rule::SourcePriority => best(&|a, b| a.priority.cmp(&b.priority)),
        Rule::Longest => best(&|a, b| b.value.chars().count().cmp(&a.value.chars().count())),
        Rule::FirstNonNull => best(&|a, b| {
            a.updated
                .unwrap_or(i64::MAX)
                .cmp(&b.updated.unwrap_or(i64::MAX))
                .then(a.record_id.cmp(&b.record_id))
        }),
        Rule::Min => best(&|a, b| a.value.cmp(b.value)),
        Rule::Max => best(&|a, b| b.value.cmp(a.value)),
        Rule::MostFrequent => {
            // A person has a few records: counted by comparing, without hashing.
            if candidates.len() <= 16 {
                let count = |v: &str| candidates.iter().filter(|c| c.value == v).count();
                return best(&|a, b| count(b.value).cmp(&count(a.value)));
            }
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for c in candidates {
                *counts.entry(c.value).or_default() += 1;
            }
            best(&|a, b| counts[b.value].cmp(&counts[a.value]))
        }
    }
}

/// A consent flag as one record holds it.
#[derive(Clone, Copy, Debug)]
pub struct ConsentCandidate {
    pub granted: bool,
    pub source_id: i32,
    /// When the statement was made, as the source proves it (the mapped `consent_*_at`,
    /// microseconds); None: undated.
    pub stated: Option<i64>,
    /// When the source last changed the row (microseconds; None: unknown).
    pub updated: Option<i64>,
    pub record_id: i64,
}

/// The person's consent on one channel: the latest proven statement decides.
///
/// - Dated statements (with their own timestamp): the latest decides; at the same instant a
///   revocation wins.
/// - An undated opt-out only restricts: it overrides every dated opt-in, unless that opt-in is
///   proven later than the undated opt-out's row last changed (the row's `updated_at`: the
///   opt-out was stated then at the latest). A row without `updated_at` is never proven older.
/// - An undated opt-in never grants against a dated statement; where no statement is dated,
///   the undated ones decide as before: an opt-out anywhere, else the most recent opt-in.
///
/// The result names the deciding record (source, statement time).
pub fn latest_consent(candidates: &[ConsentCandidate]) -> Option<ConsentCandidate> {
    let by_recency = |a: &&ConsentCandidate, b: &&ConsentCandidate| {
        b.updated
            .cmp(&a.updated)
            .then(a.record_id.cmp(&b.record_id))
    };
    let dated = candidates
        .iter()
        .filter(|c| c.stated.is_some())
        .min_by(|a, b| {
            b.stated
                .cmp(&a.stated)
                .then(a.granted.cmp(&b.granted))
                .then_with(|| by_recency(a, b))
        });
    // The undated opt-out that binds longest: unknown time first, else the latest row change.
    let undated_no = candidates
        .iter()
        .filter(|c| c.stated.is_none() && !c.granted)
        .min_by(|a, b| {
            let bound = |c: &ConsentCandidate| c.updated.unwrap_or(i64::MAX);
            bound(b).cmp(&bound(a)).then(a.record_id.cmp(&b.record_id))
        });
    match (dated, undated_no) {
        (Some(d), Some(u))
            if d.granted && u.updated.is_none_or(|t| t >= d.stated.unwrap_or(i64::MIN)) =>
        {
            Some(*u)
        }
        (Some(d), _) => Some(*d),
        (None, Some(u)) => {
            // As before: the most recent of the undated opt-outs names the source.
            candidates
                .iter()
                .filter(|c| !c.granted)
                .min_by(by_recency)
                .copied()
                .or(Some(*u))
        }
        (None, None) => candidates
            .iter()
            .filter(|c| c.granted)
            .min_by(by_recency)
            .copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(value: &str, priority: i32, updated: Option<i64>, record_id: i64) -> Candidate<'_> {
        Candidate {
            value,
            priority,
            updated,
            record_id,
        }
    }

    fn sample() -> Vec<Candidate<'static>> {
        vec![
            c("hauptstr 1", 30, Some(300), 1),
            c("hauptstrasse 1", 10, Some(100), 2),
            c("hauptstr 1", 20, Some(200), 3),
            c("bahnhofstr 7", 40, None, 4),
        ]
    }

    #[test]
    fn each_rule_picks_its_value() {
        let s = sample();
        assert_eq!(survive(Rule::MostRecent, &s), Some("hauptstr 1"));
        assert_eq!(survive(Rule::MostFrequent, &s), Some("hauptstr 1"));
        assert_eq!(survive(Rule::SourcePriority, &s), Some("hauptstrasse 1"));
        assert_eq!(survive(Rule::Longest, &s), Some("hauptstrasse 1"));
        assert_eq!(survive(Rule::FirstNonNull, &s), Some("hauptstrasse 1"));
        assert_eq!(survive(Rule::Min, &s), Some("bahnhofstr 7"));
        assert_eq!(survive(Rule::Max, &s), Some("hauptstrasse 1"));
        assert_eq!(survive(Rule::MostRecent, &[]), None);
    }

    #[test]
    fn ties_break_the_same_way_in_any_order() {
        let a = vec![c("anna", 20, Some(5), 8), c("anne", 10, Some(5), 9)];
        let b: Vec<_> = a.iter().rev().copied().collect();
        // Same time: the more trusted source wins, whichever comes first.
        assert_eq!(survive(Rule::MostRecent, &a), Some("anne"));
        assert_eq!(survive(Rule::MostRecent, &b), Some("anne"));
        // Same frequency: the most recent, then the more trusted.
        assert_eq!(survive(Rule::MostFrequent, &b), Some("anne"));
    }

    #[test]
    fn rule_names_round_trip() {
        for rule in Rule::ALL {
            assert_eq!(Rule::parse(rule.name()), Some(rule));
        }
        assert_eq!(Rule::parse("newest"), None);
    }

    fn cc(
        granted: bool,
        source_id: i32,
        stated: Option<i64>,
        updated: Option<i64>,
        record_id: i64,
    ) -> ConsentCandidate {
        ConsentCandidate {
            granted,
            source_id,
            stated,
            updated,
            record_id,
        }
    }

    #[test]
    fn undated_statements_as_before() {
        // An undated opt-out anywhere wins; otherwise the most recent opt-in.
        let got = latest_consent(&[
            cc(true, 1, None, Some(900), 1),
            cc(false, 2, None, Some(100), 2),
        ])
        .unwrap();
        assert!(!got.granted);
        assert_eq!(got.source_id, 2);
        let got = latest_consent(&[
            cc(true, 1, None, Some(100), 1),
            cc(true, 3, None, Some(500), 2),
        ])
        .unwrap();
        assert!(got.granted);
        assert_eq!(got.source_id, 3);
        assert!(latest_consent(&[]).is_none());
    }

    #[test]
    fn the_latest_dated_statement_decides() {
        // A later opt-in is new consent.
        let got = latest_consent(&[
            cc(false, 1, Some(100), Some(100), 1),
            cc(true, 2, Some(200), Some(200), 2),
        ])
        .unwrap();
        assert!(got.granted);
        assert_eq!((got.source_id, got.stated), (2, Some(200)));
        // A later opt-out revokes.
        let got = latest_consent(&[
            cc(true, 1, Some(100), Some(900), 1),
            cc(false, 2, Some(300), Some(300), 2),
        ])
        .unwrap();
        assert!(!got.granted);
        assert_eq!(got.source_id, 2);
        // The same instant: the revocation wins, whichever comes first.
        for pair in [
            [
                cc(true, 1, Some(500), None, 1),
                cc(false, 2, Some(500), None, 2),
            ],
            [
                cc(false, 2, Some(500), None, 2),
                cc(true, 1, Some(500), None, 1),
            ],
        ] {
            let got = latest_consent(&pair).unwrap();
            assert!(!got.granted);
            assert_eq!(got.source_id, 2);
        }
    }

    #[test]
    fn undated_statements_only_restrict() {
        // An undated opt-out whose row changed after the opt-in (or never says when) wins.
        let got = latest_consent(&[
            cc(true, 1, Some(200), Some(200), 1),
            cc(false, 2, None, Some(300), 2),
        ])
        .unwrap();
        assert!(!got.granted);
        assert_eq!((got.source_id, got.stated), (2, None));
        let got = latest_consent(&[
            cc(true, 1, Some(200), Some(200), 1),
            cc(false, 2, None, None, 2),
        ])
        .unwrap();
        assert!(!got.granted);
        // An opt-in proven after the undated opt-out's row last changed is the later will.
        let got = latest_consent(&[
            cc(true, 1, Some(200), Some(200), 1),
            cc(false, 2, None, Some(100), 2),
        ])
        .unwrap();
        assert!(got.granted);
        assert_eq!(got.source_id, 1);
        // An undated opt-in never grants against a dated opt-out.
        let got = latest_consent(&[
            cc(false, 1, Some(100), Some(100), 1),
            cc(true, 2, None, Some(900), 2),
        ])
        .unwrap();
        assert!(!got.granted);
        assert_eq!(got.source_id, 1);
    }

    #[test]
    fn survivor_names_the_record() {
        let s = sample();
        assert_eq!(survivor(Rule::MostFrequent, &s).unwrap().record_id, 1);
        assert_eq!(survivor(Rule::SourcePriority, &s).unwrap().record_id, 2);
    }

    /// Few candidates are counted by comparing, many by hashing: the same survivor for every
    /// prefix of a list with repeated values and tied counts.
    #[test]
    fn most_frequent_counts_alike_few_or_many() {
        let values = ["a", "b", "c", "b", "a", "d", "c", "c", "a", "b"];
        let all: Vec<Candidate> = (0..40)
            .map(|i| {
                c(
                    values[i % values.len()],
                    (i % 3) as i32,
                    Some((i % 7) as i64),
                    i as i64,
                )
            })
            .collect();
        for n in 1..=all.len() {
            let list = &all[..n];
            let count = |v: &str| list.iter().filter(|c| c.value == v).count();
            let expected = list
                .iter()
                .min_by(|a, b| {
                    count(b.value)
                        .cmp(&count(a.value))
                        .then_with(|| tie_break(a, b))
                })
                .unwrap();
            let got = survivor(Rule::MostFrequent, list).unwrap();
            assert_eq!(got.record_id, expected.record_id, "{n} candidates");
        }
    }
}
