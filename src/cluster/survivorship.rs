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
    let best = |order: &dyn Fn(&Candidate, &Candidate) -> Ordering| {
        candidates
            .iter()
            .min_by(|a, b| order(a, b).then_with(|| tie_break(a, b)))
            .map(|c| c.value)
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
    pub updated: Option<i64>,
    pub record_id: i64,
}

/// Strictest wins: an opt-out anywhere is the person's answer (the most recent opt-out names the
/// source and time); otherwise the most recent opt-in; no answer anywhere stays unknown.
pub fn strictest_consent(candidates: &[ConsentCandidate]) -> Option<ConsentCandidate> {
    let latest = |granted: bool| {
        candidates
            .iter()
            .filter(|c| c.granted == granted)
            .min_by(|a, b| {
                b.updated
                    .cmp(&a.updated)
                    .then(a.record_id.cmp(&b.record_id))
            })
            .copied()
    };
    latest(false).or_else(|| latest(true))
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

    #[test]
    fn an_opt_out_anywhere_wins() {
        let cc = |granted, source_id, updated, record_id| ConsentCandidate {
            granted,
            source_id,
            updated,
            record_id,
        };
        let got =
            strictest_consent(&[cc(true, 1, Some(900), 1), cc(false, 2, Some(100), 2)]).unwrap();
        assert!(!got.granted);
        assert_eq!(got.source_id, 2);
        let got =
            strictest_consent(&[cc(true, 1, Some(100), 1), cc(true, 3, Some(500), 2)]).unwrap();
        assert!(got.granted);
        assert_eq!(got.source_id, 3);
        assert!(strictest_consent(&[]).is_none());
    }
}
