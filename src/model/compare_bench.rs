//! Generated record pairs for comparing `compare` / `Scorer::score_pair` against a reference
//! and timing them (issue 27). Test-only.

use super::comparison::Context;
use super::record::MatchRecord;

const FIRST: &[&str] = &[
    "johannes",
    "hans",
    "anna",
    "anne",
    "jürgen",
    "juergen",
    "stefan",
    "stephan",
    "lea",
    "lena",
    "andrea",
    "andreas",
    "maria",
    "marie",
    "michael",
    "michi",
    "sabine",
    "bine",
    "thomas",
    "tom",
    "dörte",
    "doerte",
    "ludwig",
    "nicole",
    "nci",
    "katharina",
    "kathrin",
    "peter",
    "petra",
    "ayşe",
    "zoë",
    "hannah",
    "h",
    "j",
    "klaus",
    "claus",
    "müller",
    "schmidt",
    "karl-heinz",
    "hans peter",
    "elisabeth",
    "lisa",
    "liesel",
    "matthias",
    "thies",
    "günter",
    "guenther",
];
const LAST: &[&str] = &[
    "müller",
    "mueller",
    "muller",
    "schmidt",
    "schmitt",
    "meier",
    "mayer",
    "meyer",
    "weber",
    "müller-lüdenscheidt",
    "schmidt-weber",
    "von der heide",
    "heide",
    "strauß",
    "strauss",
    "bloess",
    "weiss",
    "weiß",
    "zwerschke",
    "hoffmann",
    "hofmann",
    "anna",
    "hans",
    "schäfer",
    "schaefer",
    "becker",
    "bäcker",
    "koch",
    "wagner",
    "wägner",
    "fischer",
    "fisher",
];
const STREETS: &[&str] = &[
    "hauptstrasse",
    "hauptstr",
    "bahnhofstrasse",
    "lindenweg",
    "am markt",
    "schulstrasse",
    "schulstraße",
    "gartenweg",
    "kirchplatz",
];
const CITIES: &[&str] = &["berlin", "hamburg", "münchen", "koeln", "köln", "bonn"];
const DOMAINS: &[&str] = &["web.de", "gmx.de", "gmail.com", "t-online.de"];

/// A small deterministic generator (xorshift), so the pairs are the same on every run.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len())]
    }
    /// One typo: a letter deleted, doubled, swapped with the next or replaced.
    fn typo(&mut self, s: &str) -> String {
        let mut c: Vec<char> = s.chars().collect();
        if c.len() < 2 {
            return s.to_string();
        }
        let i = self.below(c.len() - 1);
        match self.below(4) {
            0 => {
                c.remove(i);
            }
            1 => c.insert(i, c[i]),
            2 => c.swap(i, i + 1),
            _ => c[i] = ['a', 'e', 'ö', 'n', 'r'][self.below(5)],
        }
        c.into_iter().collect()
    }
    fn opt(&mut self, missing: usize, v: String) -> Option<String> {
        (!self.chance(missing)).then_some(v)
    }

    pub fn record(&mut self, id: i64) -> MatchRecord {
        let first = self.pick(FIRST).to_string();
        let last = self.pick(LAST).to_string();
        let birth = format!(
            "{}-{:02}-{:02}",
            1940 + self.below(60),
            1 + self.below(12),
            1 + self.below(28)
        );
        let local = match self.below(4) {
            0 => format!("{first}.{last}"),
            1 => format!("{}{last}{}", &first[..1], self.below(100)),
            2 => format!("familie.{last}"),
            _ => format!("{last}{}", self.below(10)),
        }
        .replace(' ', "");
        let email = format!("{local}@{}", self.pick(DOMAINS));
        let phones: Vec<String> = (0..self.below(3))
            .map(|_| {
                if self.chance(50) {
                    format!("+4930{:07}", self.below(200))
                } else {
                    format!("+49151{:07}", self.below(200))
                }
            })
            .collect();
        let postcode = format!("{:05}", 10000 + self.below(30));
        let street = self.pick(STREETS).to_string();
        let house = format!("{}", 1 + self.below(20));
        let city = self.pick(CITIES).to_string();
        let external = format!("K{:05}", self.below(500));
        let customer = format!("{}", self.below(300));
        let r = MatchRecord {
            id,
            source_id: (id % 3) as i32,
            first_name: self.opt(5, first),
            last_name: self.opt(3, last),
            birth_date: self.opt(40, birth),
            email: self.opt(30, email),
            email_key: None,
            phones,
            street: self.opt(20, street),
            house_number: self.opt(25, house),
            postcode: self.opt(10, postcode),
            city: self.opt(10, city),
            external_id: self.opt(80, external),
            customer_number: self.opt(80, customer),
            ..Default::default()
        };
        let mut r = r;
        r.email_key = r.email.clone();
        r.prepare()
    }

    /// A corrupted duplicate of `r`: typos, swapped names, initials, values dropped or changed.
    pub fn variant(&mut self, r: &MatchRecord, id: i64) -> MatchRecord {
        let mut v = r.clone();
        v.id = id;
        v.derived = Default::default();
        if self.chance(25) {
            v.first_name = v.first_name.map(|f| self.typo(&f));
        }
        if self.chance(25) {
            v.last_name = v.last_name.map(|l| self.typo(&l));
        }
        if self.chance(8) {
            std::mem::swap(&mut v.first_name, &mut v.last_name);
        }
        if self.chance(8) {
            v.first_name = v
                .first_name
                .map(|f| f.chars().next().map(String::from).unwrap_or_default());
        }
        if self.chance(8) {
            v.last_name = None;
        }
        if self.chance(15) {
            v.birth_date = v.birth_date.map(|b| self.typo(&b));
        }
        if self.chance(15) {
            v.email = v.email.map(|e| self.typo(&e));
            v.email_key = v.email.clone();
        }
        if self.chance(20) {
            v.street = v.street.map(|s| self.typo(&s));
        }
        if self.chance(20) {
            v.postcode = v.postcode.map(|p| self.typo(&p));
        }
        if self.chance(10) {
            v.external_id = v.external_id.map(|p| self.typo(&p));
        }
        if self.chance(10) {
            v.last_name = v.last_name.map(|l| format!("{l} jun"));
        }
        v.prepare()
    }
}

/// `n` records, every fifth a variant of an earlier one, and candidate pairs: each record
/// against the next ten (many clearly different), and each variant against its original.
pub fn records_and_pairs(seed: u64, n: usize) -> (Vec<MatchRecord>, Vec<(usize, usize)>) {
    let mut g = Gen::new(seed);
    let mut records: Vec<MatchRecord> = Vec::with_capacity(n);
    let mut pairs = Vec::new();
    for i in 0..n {
        let r = if i > 0 && i % 5 == 0 {
            let of = g.below(i);
            pairs.push((of, i));
            g.variant(&records[of], i as i64)
        } else {
            g.record(i as i64)
        };
        records.push(r);
    }
    for i in 0..n {
        for j in i + 1..(i + 11).min(n) {
            pairs.push((i, j));
        }
    }
    (records, pairs)
}

/// A context with term frequencies and household values over the records.
pub fn context(records: &[MatchRecord]) -> Context {
    Context::build(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::comparison::compare;
    use crate::model::params::Model;
    use crate::model::scorer::Scorer;
    use std::collections::HashMap;
    use std::time::Instant;

    /// `compare` gives every generated pair the outcome (levels, swap, household flags) the
    /// comparison before issue 27's changes gave it, whichever record comes first, and so the
    /// same scores: the changes only moved work out of the pair loop.
    #[test]
    fn compare_equals_the_reference() {
        use crate::model::comparison::reference;
        // An empty name has no groups (as `same_given_name` joins no empty name).
        assert!(crate::compare::nicknames::groups("").is_empty());
        let mut compared = 0usize;
        let mut levels_seen = std::collections::HashSet::new();
        for seed in [1, 2, 3, 42] {
            let (records, mut pairs) = records_and_pairs(seed, 6_000);
            // Besides neighbours and variants, pairs of any two records.
            let mut g = Gen::new(seed + 100);
            for _ in 0..20_000 {
                pairs.push((g.below(records.len()), g.below(records.len())));
            }
            let ctx = context(&records);
            for &(i, j) in &pairs {
                for (a, b) in [(&records[i], &records[j]), (&records[j], &records[i])] {
                    let new = compare(a, b, &ctx);
                    let old = reference::compare(a, b, &ctx);
                    assert_eq!(new, old, "{a:?}\n{b:?}");
                    for (k, l) in new.levels.iter().enumerate() {
                        levels_seen.insert((k, *l));
                    }
                    compared += 1;
                }
            }
        }
        // The pairs reach (nearly) every level of every comparison, so all paths were compared.
        let all: usize = crate::model::comparison::COMPARISONS
            .iter()
            .map(|c| c.levels().len() + 1)
            .sum();
        assert!(compared > 400_000, "{compared}");
        assert!(
            levels_seen.len() + 3 >= all,
            "{} of {all}",
            levels_seen.len()
        );
    }

    /// `cargo test --release --no-default-features --features pg15 --lib compare_bench --
    /// --ignored --nocapture`: the time of `compare` and `score_pair` over generated pairs.
    #[test]
    #[ignore]
    fn time_compare_and_score() {
        let n: usize = std::env::var("COMPARE_BENCH_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200_000);
        let (records, pairs) = records_and_pairs(7, n);
        let ctx = context(&records);
        let model = Model::default_german();
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        for round in 0..3 {
            let t = Instant::now();
            let mut sum = 0usize;
            for &(i, j) in &pairs {
                let o = compare(&records[i], &records[j], &ctx);
                sum += o
                    .levels
                    .iter()
                    .flatten()
                    .map(|l| *l as usize)
                    .sum::<usize>();
            }
            let compare_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let mut w = 0.0;
            for &(i, j) in &pairs {
                w += scorer.score_pair(&records[i], &records[j]).weight;
            }
            let score_s = t.elapsed().as_secs_f64();
            println!(
                "round {round}: {} pairs: compare {compare_s:.3} s ({:.0} ns/pair), score_pair {score_s:.3} s ({:.0} ns/pair) [{sum} {w:.3}]",
                pairs.len(),
                compare_s * 1e9 / pairs.len() as f64,
                score_s * 1e9 / pairs.len() as f64,
            );
        }
    }
}
