//! The scorer: a [`Model`] made ready to score pairs of records. The match weight of a pair
//! is log2 of the prior odds plus log2(m/u) of every level hit, plus the household adjustments
//! (identity conflict, namesakes) and the deterministic rules; `explain` lists the same terms
//! one by one, as `unify.explain_match` shows them.

use std::collections::HashMap;

use super::comparison::{
    birth_dates_may_be_one, compare, compared_values, first_names_may_be_one, Comparison, Context,
    Namesakes, Outcome, COMPARISONS, FIRST_NAME_NICKNAME,
};
use super::params::{log2_odds, probability, Model, Predicate};
use super::record::MatchRecord;

/// One term of a match weight, as `explain_match` shows it (and `identify` as JSON, by the same
/// names).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Term {
    pub term: &'static str,
    pub level: Option<&'static str>,
    pub value_a: Option<String>,
    pub value_b: Option<String>,
    pub m: Option<f64>,
    pub u: Option<f64>,
    pub weight: f64,
    pub note: Option<String>,
}

impl Term {
    /// A term that compares no values: the prior, an adjustment, a rule, a decision.
    fn without_values(
        term: &'static str,
        level: Option<&'static str>,
        weight: f64,
        note: String,
    ) -> Self {
        Term {
            term,
            level,
            value_a: None,
            value_b: None,
            m: None,
            u: None,
            weight,
            note: Some(note),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    pub weight: f64,
    pub probability: f64,
    /// log2(m/u) per comparison (None: no evidence or comparison not in the model).
    pub weights: [Option<f64>; COMPARISONS.len()],
    /// What the household logic added beyond the comparisons' weights.
    pub adjustment: Option<Adjustment>,
    /// One name in one home without birth dates (or alike first names of one birth date: twins),
    /// and nothing of its own agrees (see `Model::namesakes_need_own_evidence`).
    pub namesakes_without_own_evidence: bool,
    pub forced_by: Option<usize>,
    pub outcome: Outcome,
}

impl Score {
    pub fn is_match(&self, model: &Model) -> bool {
        self.forced_by.is_some()
            || (self.probability >= model.match_threshold && !self.held_for_review(model))
    }

    /// Likely enough, but namesakes in one home with nothing of their own agreeing.
    pub fn held_for_review(&self, model: &Model) -> bool {
        model.namesakes_need_own_evidence && self.namesakes_without_own_evidence
    }

    /// The comparison whose clear difference made this pair's identity conflict.
    pub fn conflict(&self) -> Option<Comparison> {
        match self.adjustment {
            Some(Adjustment::IdentityConflict { on, .. }) => Some(on),
            _ => None,
        }
    }
}

/// A weight added to a pair beyond its comparisons (at most one applies).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Adjustment {
    /// First names or birth dates clearly differ: the household evidence is not counted.
    IdentityConflict { on: Comparison, weight: f64 },
    /// One (or an alike) name in one home without birth dates: prior, names, address and
    /// landline count as the measured odds, log2((1 - share) / share).
    Namesakes {
        kind: Namesakes,
        share: f64,
        weight: f64,
    },
    /// Last names differ, but first name and birth date agree and so does a home or something
    /// of the person's own (e-mail, phone): a name changed at marriage. The different last name
    /// is no evidence against the pair (the weight takes its negative weight back).
    SurnameChanged { weight: f64 },
}

impl Adjustment {
    /// Its name in explanations and in `unify.pairs.weights`.
    pub fn term(&self) -> &'static str {
        match self {
            Adjustment::IdentityConflict { .. } => "identity_conflict",
            Adjustment::Namesakes { .. } => "namesakes",
            Adjustment::SurnameChanged { .. } => "surname_changed",
        }
    }

    pub fn weight(&self) -> f64 {
        match *self {
            Adjustment::IdentityConflict { weight, .. }
            | Adjustment::Namesakes { weight, .. }
            | Adjustment::SurnameChanged { weight } => weight,
        }
    }
}

/// A model ready to score: log weights precomputed, rule sources resolved.
pub struct Scorer<'a> {
    pub model: &'a Model,
    pub ctx: &'a Context,
    log_prior: f64,
    level_weights: [Option<Vec<f64>>; COMPARISONS.len()],
    rule_sources: Vec<Option<Vec<i32>>>,
}

impl<'a> Scorer<'a> {
    /// `source_ids` maps source names (used by rules) to ids.
    pub fn new(model: &'a Model, ctx: &'a Context, source_ids: &HashMap<String, i32>) -> Self {
        let mut level_weights: [Option<Vec<f64>>; COMPARISONS.len()] = Default::default();
        for p in &model.comparisons {
            level_weights[p.comparison.index()] =
                Some(p.levels.iter().map(|l| (l.m / l.u).log2()).collect());
        }
        let rule_sources = model
            .rules
            .iter()
            .map(|r| {
                r.sources.as_ref().map(|names| {
                    names
                        .iter()
                        .filter_map(|n| source_ids.get(n).copied())
                        .collect()
                })
            })
            .collect();
        Self {
            model,
            ctx,
            log_prior: log2_odds(model.prior),
            level_weights,
            rule_sources,
        }
    }

    /// The u of an exact name match: the name's frequency (see `name_frequency`), at least the
    /// model's `tf_minimum_u`.
    fn tf_u(&self, c: Comparison, a: &impl NameSide) -> Option<f64> {
        Some(a.name_frequency(self, c)?.max(self.model.tf_minimum_u))
    }

    /// Weight of comparison `c` at `level`, term-frequency adjusted on exact name matches.
    fn term_weight(
        &self,
        c: Comparison,
        level: u8,
        a: &impl NameSide,
        swapped: bool,
    ) -> Option<(f64, Option<f64>)> {
        let weights = self.level_weights[c.index()].as_ref()?;
        if level == 0 && c.term_frequency_adjusted() && !swapped {
            if let Some(u) = self.tf_u(c, a) {
                let m = self.params_level(c, 0).0;
                return Some(((m / u).log2(), Some(u)));
            }
        }
        Some((weights[level as usize], None))
    }

    fn params_level(&self, c: Comparison, level: u8) -> (f64, f64) {
        let p = &self.model.params(c).expect("comparison in model").levels[level as usize];
        (p.m, p.u)
    }

    /// Clearly different first names or birth dates, or one record saying senior and the other
    /// junior (a conflict on the last name, where `sen.` and `jun.` are written), unless an
    /// external id (an identifier of the person, not of the household) agrees: that outranks a
    /// mistyped birth date.
    pub fn conflict(outcome: &Outcome) -> Option<Comparison> {
        if matches!(outcome.level(Comparison::ExternalId), Some(0 | 1)) {
            return None;
        }
        [Comparison::FirstName, Comparison::BirthDate]
            .into_iter()
            .find(|c| outcome.level(*c) == Some(c.else_level()))
            .or(outcome.generation_conflict.then_some(Comparison::LastName))
            .or(outcome.other_sex_forms.then_some(Comparison::FirstName))
    }

    /// A last name changed at marriage (see `Adjustment::SurnameChanged`): the last names are
    /// clearly different, the first names one name (exactly, transliterated, a typo or a short
    /// form apart), the birth dates equal, and the pair shares a home (the same street, or the
    /// same postcode or city where a record has no street) or an e-mail or phone of the
    /// person's own. The adjustment taking the different last name's negative weight back.
    fn surname_changed(
        &self,
        outcome: &Outcome,
        weights: &[Option<f64>; COMPARISONS.len()],
    ) -> Option<Adjustment> {
        let last = weights[Comparison::LastName.index()]?;
        if outcome.level(Comparison::LastName) != Some(Comparison::LastName.else_level())
            || last >= 0.0
            || outcome.swapped
        {
            return None;
        }
        let first_same = matches!(
            outcome.level(Comparison::FirstName),
            Some(0..=2 | FIRST_NAME_NICKNAME)
        );
        let home = match outcome.level(Comparison::Address) {
            Some(0..=2) => true,
            Some(3) => outcome.street_missing,
            _ => false,
        };
        let own = matches!(outcome.level(Comparison::Email), Some(0..=2))
            || (outcome.level(Comparison::Phone) == Some(0) && !outcome.shared_landline);
        (first_same && outcome.level(Comparison::BirthDate) == Some(0) && (home || own))
            .then_some(Adjustment::SurnameChanged { weight: -last })
    }

    fn predicate(p: Predicate, a: &MatchRecord, b: &MatchRecord, o: &Outcome) -> bool {
        let both_eq = |x: &Option<String>, y: &Option<String>| x.is_some() && x == y;
        match p {
            Predicate::SameEmail => matches!(o.level(Comparison::Email), Some(0 | 1)),
            Predicate::SamePhone => o.level(Comparison::Phone) == Some(0),
            Predicate::SameMobile => o.level(Comparison::Phone) == Some(0) && !o.shared_landline,
            Predicate::SameLastName => matches!(o.level(Comparison::LastName), Some(0 | 1)),
            Predicate::SameFirstName => matches!(o.level(Comparison::FirstName), Some(0 | 1)),
            Predicate::SameBirthDate => o.level(Comparison::BirthDate) == Some(0),
            Predicate::SameAddress => o.level(Comparison::Address) == Some(0),
            Predicate::SameCustomerNumber => both_eq(&a.customer_number, &b.customer_number),
            Predicate::SameExternalId => both_eq(&a.external_id, &b.external_id),
            // A first-name difference that may be one name written two ways (Thies and
            // Matthias) does not veto what a personal e-mail or a customer number decides, nor
            // do birth dates that may be one date typed twice wrong (day and month exchanged,
            // one digit off besides); another birth date or a generation does.
            Predicate::NoConflict => match Self::conflict(o) {
                None => true,
                Some(Comparison::FirstName | Comparison::BirthDate) => {
                    let differ = |c: Comparison| o.level(c) == Some(c.else_level());
                    !o.generation_conflict
                        && (!differ(Comparison::FirstName) || first_names_may_be_one(a, b))
                        && (!differ(Comparison::BirthDate) || birth_dates_may_be_one(a, b))
                }
                Some(_) => false,
            },
        }
    }

    /// The first deterministic rule the pair satisfies.
    pub fn forced_by(&self, a: &MatchRecord, b: &MatchRecord, o: &Outcome) -> Option<usize> {
        self.model.rules.iter().enumerate().position(|(i, rule)| {
            let sources_ok = self.rule_sources[i]
                .as_ref()
                .is_none_or(|ids| ids.contains(&a.source_id) && ids.contains(&b.source_id));
            sources_ok && rule.all.iter().all(|p| Self::predicate(*p, a, b, o))
        })
    }

    /// The weight added on an identity conflict: minus the positive household evidence, plus
    /// the model's fixed conflict weight.
    fn conflict_adjustment(
        &self,
        weights: &[Option<f64>; COMPARISONS.len()],
        outcome: &Outcome,
    ) -> f64 {
        let household: f64 = self
            .household_evidence(weights, outcome)
            .filter_map(|c| weights[c.index()])
            .sum();
        self.model.conflict_weight - household
    }

    /// The comparisons whose positive weight an identity conflict does not count (see
    /// `Model::household_comparisons`). A mobile number agreeing is not among them: the
    /// household values of the context (`Context::shared_phones`) already left out every number
    /// two clearly different people hold, so a mobile still agreeing here is one person's,
    /// whose other records carry typos of the name ("Jtrg" and "Jöng" beside "Jörg").
    fn household_evidence<'s>(
        &'s self,
        weights: &'s [Option<f64>; COMPARISONS.len()],
        outcome: &'s Outcome,
    ) -> impl Iterator<Item = Comparison> + 's {
        let personal_mobile =
            outcome.level(Comparison::Phone) == Some(0) && !outcome.shared_landline;
        self.model
            .household_comparisons
            .iter()
            .copied()
            .filter(|_| self.model.households_in_data())
            .filter(move |c| !(personal_mobile && *c == Comparison::Phone))
            .filter(move |c| weights[c.index()].is_some_and(|w| w > 0.0))
    }

    /// For a pair of one (or an alike) name in one home without birth-date evidence, the
    /// weight that makes its prior, name, address and landline evidence count no more than the odds
    /// measured for such pairs (see `Model::namesake_share`); None where that does not apply or
    /// does not lower it.
    /// Which namesakes in one home a pair is, where households are in the data and no birth
    /// dates compare; the pairs both the namesake odds and the need for own evidence are about.
    fn undated_namesakes(&self, outcome: &Outcome) -> Option<Namesakes> {
        if !self.model.households_in_data() || outcome.level(Comparison::BirthDate).is_some() {
            return None;
        }
        outcome.namesakes_at_one_home(self.model.household_share.is_some())
    }

    fn namesake_adjustment(
        &self,
        outcome: &Outcome,
        weights: &[Option<f64>; COMPARISONS.len()],
    ) -> Option<Adjustment> {
        let kind = self.undated_namesakes(outcome)?;
        let share = match kind {
            Namesakes::SameName => self.model.namesake_share,
            Namesakes::AlikeNames => self.model.similar_name_share,
        }?;
        // A shared landline is the home's, like the address: counted within the odds.
        let home_phone = outcome.shared_landline.then_some(Comparison::Phone);
        let name_and_address: f64 = self.log_prior
            + [
                Comparison::FirstName,
                Comparison::LastName,
                Comparison::Address,
            ]
            .into_iter()
            .chain(home_phone)
            .filter_map(|c| weights[c.index()])
            .sum::<f64>();
        let cap = ((1.0 - share) / share).log2();
        (name_and_address > cap).then_some(Adjustment::Namesakes {
            kind,
            share,
            weight: cap - name_and_address,
        })
    }

    pub fn score(&self, a: &MatchRecord, b: &MatchRecord) -> Score {
        let outcome = compare(a, b, self.ctx);
        self.score_outcome(a, b, outcome)
    }

    /// The score of a stored pair: [`Scorer::score`] with the record of the lower id first, as
    /// unify.pairs holds it (record_a < record_b), whichever way round the pair was found.
    /// The order matters: names compared crosswise ("Müller-Lüdenschedt Lea" against "Lena
    /// Mueller-Luedenscheidt") pair up by the first record's names, and the name frequencies
    /// are the first record's. A batch run meets every pair in id order, the incremental path
    /// meets a changed record's pairs with the changed record first: without this the two
    /// disagreed on such pairs.
    pub fn score_pair(&self, a: &MatchRecord, b: &MatchRecord) -> Score {
        if b.id < a.id {
            self.score(b, a)
        } else {
            self.score(a, b)
        }
    }

    pub fn score_outcome(&self, a: &MatchRecord, b: &MatchRecord, outcome: Outcome) -> Score {
        let (weight, weights, adjustment) = self.weigh(a, &outcome);
        let forced_by = self.forced_by(a, b, &outcome);
        Score {
            weight,
            probability: probability(weight),
            weights,
            adjustment,
            namesakes_without_own_evidence: self.namesakes_without_own_evidence(&outcome, &weights),
            forced_by,
            outcome,
        }
    }

    /// Namesakes in one home without birth-date evidence whose e-mail, phone (other than the
    /// home's landline) and external id add nothing: all they share is what a household shares.
    fn namesakes_without_own_evidence(
        &self,
        outcome: &Outcome,
        weights: &[Option<f64>; COMPARISONS.len()],
    ) -> bool {
        // First names a typo or more apart (not exact, transliterated or a short form) of one
        // birth date in one home: twins (Lena and Lea) as often as a typo, and nothing but the
        // home and the date to go by.
        // Not where the names were compared crosswise: a swapped entry is no twin, and which
        // name pairs with which then depends on the order of the records.
        let twins = self.model.households_in_data()
            && !outcome.swapped
            && outcome.level(Comparison::BirthDate) == Some(0)
            && outcome
                .namesakes_at_one_home(self.model.household_share.is_some())
                .is_some()
            && matches!(outcome.level(Comparison::FirstName), Some(2..=5));
        if self.undated_namesakes(outcome).is_none() && !twins {
            return false;
        }
        let own = |c: Comparison| weights[c.index()].is_some_and(|w| w > 0.0);
        !(own(Comparison::Email)
            || own(Comparison::ExternalId)
            || (own(Comparison::Phone) && !outcome.shared_landline))
    }

    /// The match weight of a compared pair (`a` is the side whose name frequencies count), its
    /// per-comparison weights and the adjustment included, without the deterministic rules.
    #[allow(clippy::type_complexity)]
    pub fn weigh(
        &self,
        a: &MatchRecord,
        outcome: &Outcome,
    ) -> (f64, [Option<f64>; COMPARISONS.len()], Option<Adjustment>) {
        self.weigh_side(a, outcome)
    }

    /// [`Scorer::weigh`] with side `a` given by its two name frequencies (`name_frequency` of
    /// first and last name, as [`NameFrequencies`]) instead of the record: the weight is the
    /// same (a record is used only through them), and a training sample keeps 16 bytes per pair
    /// instead of the record.
    #[allow(clippy::type_complexity)]
    pub fn weigh_with(
        &self,
        a: &NameFrequencies,
        outcome: &Outcome,
    ) -> (f64, [Option<f64>; COMPARISONS.len()], Option<Adjustment>) {
        self.weigh_side(a, outcome)
    }

    #[allow(clippy::type_complexity)]
    fn weigh_side(
        &self,
        a: &impl NameSide,
        outcome: &Outcome,
    ) -> (f64, [Option<f64>; COMPARISONS.len()], Option<Adjustment>) {
        let mut weight = self.log_prior;
        let mut weights = [None; COMPARISONS.len()];
        for c in COMPARISONS {
            if let Some(level) = outcome.level(c) {
                if let Some((w, _)) = self.term_weight(c, level, a, outcome.swapped) {
                    weights[c.index()] = Some(w);
                    weight += w;
                }
            }
        }
        let adjustment =
            match Self::conflict(outcome).filter(|c| self.level_weights[c.index()].is_some()) {
                Some(on) => Some(Adjustment::IdentityConflict {
                    on,
                    weight: self.conflict_adjustment(&weights, outcome),
                }),
                None => self
                    .namesake_adjustment(outcome, &weights)
                    .or_else(|| self.surname_changed(outcome, &weights)),
            };
        weight += adjustment.map_or(0.0, |adj| adj.weight());
        (weight, weights, adjustment)
    }

    /// The terms of a pair's weight; their weights sum to `score(a, b).weight`.
    pub fn explain(&self, a: &MatchRecord, b: &MatchRecord) -> (Score, Vec<Term>) {
        let score = self.score(a, b);
        let o = &score.outcome;
        let mut terms = vec![Term::without_values(
            "prior",
            None,
            self.log_prior,
            format!("prior match probability {:.3e}", self.model.prior),
        )];
        for c in COMPARISONS {
            let Some(params) = self.model.params(c) else {
                continue;
            };
            let (value_a, value_b) = compared_values(c, a, b, o.swapped);
            let mut note = None;
            if (c == Comparison::FirstName || c == Comparison::LastName) && o.swapped {
                note = Some("first and last name compared crosswise (swapped)".to_string());
            }
            if c == Comparison::Email && o.shared_email {
                note = Some("household, role or junk e-mail (familie.…@, info@…, held by different people or by many records): no evidence".to_string());
            }
            if c == Comparison::Phone && o.shared_phone {
                note = Some("household or junk phone (held by different people or many records): no evidence".to_string());
            }
            let (level, m, u, weight) = match o.level(c) {
                None => {
                    note.get_or_insert_with(|| "missing on one side: no evidence".to_string());
                    (None, None, None, 0.0)
                }
                Some(l) => {
                    let (w, tf_u) = self.term_weight(c, l, a, o.swapped).unwrap_or((0.0, None));
                    let level = &params.levels[l as usize];
                    if let Some(tf) = tf_u {
                        note = Some(format!(
                            "u adjusted to the frequency of this value ({tf:.3e})"
                        ));
                    }
                    (
                        Some(c.levels()[l as usize]),
                        Some(level.m),
                        Some(tf_u.unwrap_or(level.u)),
                        w,
                    )
                }
            };
            terms.push(Term {
                term: c.name(),
                level,
                value_a,
                value_b,
                m,
                u,
                weight,
                note,
            });
        }
        match score.adjustment {
            Some(adj @ Adjustment::IdentityConflict { on, weight }) => {
                let discounted: Vec<&str> = self
                    .household_evidence(&score.weights, o)
                    .map(|h| h.name())
                    .collect();
                terms.push(Term::without_values(
                    adj.term(),
                    Some(on.name()),
                    weight,
                    format!(
                        "{}: shared household evidence ({}) not counted",
                        if on == Comparison::LastName {
                            "one record says senior, the other junior (sen./jun. in a name field)"
                                .to_string()
                        } else if on == Comparison::FirstName && o.other_sex_forms {
                            "the first names are the male and the female form of one name"
                                .to_string()
                        } else {
                            format!("{} clearly differs", on.name())
                        },
                        if discounted.is_empty() {
                            "none".to_string()
                        } else {
                            discounted.join(", ")
                        }
                    ),
                ));
            }
            Some(
                adj @ Adjustment::Namesakes {
                    kind,
                    share,
                    weight,
                },
            ) => terms.push(Term::without_values(
                adj.term(),
                None,
                weight,
                format!(
                    "{} in one home (address, postcode or city without a street, landline or \
                     family mailbox) and no birth date to compare: \
                     {:.1}% of such pairs with birth dates are two people, so prior, names, \
                     address and landline count as {:.2} (log2 odds)",
                    match kind {
                        Namesakes::SameName => "one name",
                        Namesakes::AlikeNames => "similar first names",
                    },
                    100.0 * share,
                    ((1.0 - share) / share).log2()
                ),
            )),
            Some(adj @ Adjustment::SurnameChanged { weight }) => terms.push(Term::without_values(
                adj.term(),
                None,
                weight,
                "last names differ, but first name and birth date agree, and so does a home or \
                 an e-mail or phone of the person's own: a name changed at marriage, so the \
                 different last name is not counted against the pair"
                    .into(),
            )),
            None => {}
        }
        if let Some(i) = score.forced_by {
            terms.push(Term::without_values(
                "deterministic_rule",
                Some("forced_match"),
                0.0,
                format!("rule \"{}\" forces a match", self.model.rules[i].name),
            ));
        } else if score.held_for_review(self.model) {
            let who = if o.level(Comparison::BirthDate).is_some() {
                "similar first names of one birth date in one home (twins)"
            } else {
                "one name in one home, no birth date,"
            };
            terms.push(Term::without_values(
                "held_for_review",
                Some("namesakes_without_own_evidence"),
                0.0,
                format!(
                    "{who} and no e-mail, mobile or external id of their own agrees: kept for \
                     review, not merged, however likely (model setting \
                     namesakes_need_own_evidence)"
                ),
            ));
        }
        (score, terms)
    }
}

/// The frequency of `a`'s first or last name (for `c`), the larger of its frequency in its
/// own field and in the other name field: a surname held as a first name on both records
/// ("Schneider Johanna" twice) is as common as the surname, not a rare first name. None for
/// other comparisons, a missing name, or a name without a frequency.
pub fn name_frequency(ctx: &Context, c: Comparison, a: &MatchRecord) -> Option<f64> {
    let (own, other, value) = match c {
        Comparison::FirstName => (
            &ctx.first_name_tf,
            &ctx.last_name_tf,
            a.first_name.as_ref()?,
        ),
        Comparison::LastName => (&ctx.last_name_tf, &ctx.first_name_tf, a.last_name.as_ref()?),
        _ => return None,
    };
    Some(
        own.get(value)?
            .max(other.get(value).copied().unwrap_or(0.0)),
    )
}

/// The side of a pair whose name frequencies adjust an exact name match (`Scorer::tf_u`): a
/// record, or its two frequencies kept.
pub trait NameSide {
    fn name_frequency(&self, scorer: &Scorer<'_>, c: Comparison) -> Option<f64>;
}

impl NameSide for MatchRecord {
    fn name_frequency(&self, scorer: &Scorer<'_>, c: Comparison) -> Option<f64> {
        name_frequency(scorer.ctx, c, self)
    }
}

/// A record's first and last name frequencies (`Scorer::name_frequency`), NaN for none.
#[derive(Clone, Copy, Debug)]
pub struct NameFrequencies([f64; 2]);

impl NameFrequencies {
    pub fn of(ctx: &Context, a: &MatchRecord) -> Self {
        let f = |c| name_frequency(ctx, c, a).unwrap_or(f64::NAN);
        Self([f(Comparison::FirstName), f(Comparison::LastName)])
    }

    /// The first and last name frequency (NaN: none), as [`NameFrequencies::values`] gave them.
    pub fn from_values(values: [f64; 2]) -> Self {
        Self(values)
    }

    pub fn values(&self) -> [f64; 2] {
        self.0
    }
}

impl NameSide for NameFrequencies {
    fn name_frequency(&self, _: &Scorer<'_>, c: Comparison) -> Option<f64> {
        let f = match c {
            Comparison::FirstName => self.0[0],
            Comparison::LastName => self.0[1],
            _ => return None,
        };
        (!f.is_nan()).then_some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params::DeterministicRule;

    fn assert_terms_sum_to_the_weight(terms: &[Term], score: &Score) {
        let sum: f64 = terms.iter().map(|t| t.weight).sum();
        assert!(
            (sum - score.weight).abs() < 1e-9,
            "{sum} vs {}",
            score.weight
        );
    }

    fn person(first: &str, last: &str, birth: &str, email: &str, phone: &str) -> MatchRecord {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        MatchRecord {
            first_name: s(first),
            last_name: s(last),
            birth_date: s(birth),
            email: s(email),
            email_key: s(email),
            phones: s(phone).into_iter().collect(),
            street: s("hauptstrasse"),
            house_number: s("5"),
            postcode: s("10115"),
            city: s("berlin"),
            ..Default::default()
        }
        .prepare()
    }

    #[test]
    fn explanation_sums_to_the_weight() {
        let model = Model::default_german();
        let ctx = Context::default();
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let a = person(
            "jürgen",
            "müller",
            "1960-01-01",
            "j.mueller@web.de",
            "+4930123",
        );
        let b = person("juergen", "mueller", "1960-01-01", "", "+4930123");
        let (score, terms) = scorer.explain(&a, &b);
        assert_terms_sum_to_the_weight(&terms, &score);
        assert!(score.is_match(&model));
        let email = terms.iter().find(|t| t.term == "email").unwrap();
        assert_eq!((email.level, email.weight), (None, 0.0));
        // With an identity conflict the discounted household evidence is a term of its own.
        let sister = person("petra", "müller", "1962-02-02", "", "+4930123");
        let (score, terms) = scorer.explain(&a, &sister);
        assert!(score.conflict().is_some());
        assert_terms_sum_to_the_weight(&terms, &score);
        assert!(terms
            .iter()
            .any(|t| t.term == "identity_conflict" && t.weight < 0.0));
    }

    #[test]
    fn namesakes_without_birth_dates_count_as_the_measured_odds() {
        let mut model = Model::default_german();
        let ctx = Context::default();
        let senior = person("hans", "müller", "", "hans.mueller@web.de", "");
        let junior = person("hans", "müller", "", "hmueller90@gmx.de", "");
        let plain = Scorer::new(&model, &ctx, &HashMap::new()).score(&senior, &junior);
        model.namesake_share = Some(0.05);
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let (score, terms) = scorer.explain(&senior, &junior);
        // Prior, names and address count log2(0.95 / 0.05); the different e-mail still counts.
        let email = score.weights[Comparison::Email.index()].unwrap();
        assert!(email < 0.0);
        assert!((score.weight - ((0.95f64 / 0.05).log2() + email)).abs() < 1e-9);
        assert!(score.weight < plain.weight);
        assert!(!score.is_match(&model), "{}", score.weight);
        assert_terms_sum_to_the_weight(&terms, &score);
        assert!(terms
            .iter()
            .any(|t| t.term == "namesakes" && t.weight < 0.0));
        // The same e-mail is evidence beyond the name: a match.
        let again = person("hans", "mueller", "", "hans.mueller@web.de", "");
        assert!(scorer.score(&senior, &again).is_match(&model));
        // A birth date on both sides decides instead; one missing leaves the cap on.
        let dated = |b| person("hans", "müller", b, "", "");
        let both = scorer.explain(&dated("1960-01-01"), &dated("1960-01-01")).1;
        assert!(!both.iter().any(|t| t.term == "namesakes"));
        let one = scorer.explain(&dated("1960-01-01"), &dated("")).1;
        assert!(one.iter().any(|t| t.term == "namesakes"));
        // Alike first names (Jaro-Winkler ≥ 0.80) have their own measured share.
        let hannah = person("hannah", "müller", "", "", "");
        let hans = person("hans", "müller", "", "", "");
        assert_eq!(
            compare(&hannah, &hans, &ctx).level(Comparison::FirstName),
            Some(3)
        );
        let unmeasured = scorer.score(&hannah, &hans).weight;
        model.similar_name_share = Some(0.6);
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let (score, terms) = scorer.explain(&hannah, &hans);
        assert!((score.weight - (0.4f64 / 0.6).log2()).abs() < 1e-9);
        assert!(score.weight < unmeasured);
        assert!(terms
            .iter()
            .any(|t| t.term == "namesakes" && t.note.as_deref().unwrap().starts_with("similar")));
        // Data without households (household_share below the minimum): plain weights.
        model.household_share = Some(0.001);
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        assert_eq!(scorer.score(&senior, &junior).weight, plain.weight);
        // A share outside (0, 1) is refused.
        model.namesake_share = Some(0.0);
        assert!(model.validate().unwrap_err().contains("namesake_share"));
    }

    #[test]
    fn a_stored_pair_scores_alike_whichever_record_comes_first() {
        // The worker test's pair: one record with the names the wrong way round (and a typo in
        // the double name), the other straight. Compared crosswise, the names pair up by the
        // first record's: the last names are "lea"/"lena" one way and the double name and its
        // typo the other way, and only the first is a namesake in one home.
        let model = Model::default_german();
        let ctx = Context::default();
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let mut swapped = person(
            "Müller-Lüdenschedt",
            "Lea",
            "",
            "lenamueller-luedenscheidt@gmx.de",
            "",
        );
        swapped.id = 4824;
        let mut straight = person("Lena", "Mueller-Luedenscheidt", "1951-03-20", "", "");
        straight.id = 17526;
        let batch = scorer.score(&swapped, &straight);
        let changed_first = scorer.score(&straight, &swapped);
        assert_ne!(
            batch.outcome.level(Comparison::LastName),
            changed_first.outcome.level(Comparison::LastName),
            "the comparison itself depends on the order"
        );
        // A batch run meets the pair in id order, the incremental path with the changed record
        // (the higher id here) first: both store the same score.
        for s in [
            scorer.score_pair(&swapped, &straight),
            scorer.score_pair(&straight, &swapped),
        ] {
            assert_eq!(s.weight, batch.weight);
            assert_eq!(s.outcome, batch.outcome);
            assert_eq!(s.is_match(&model), batch.is_match(&model));
        }
    }

    #[test]
    fn a_surname_held_as_first_name_weighs_as_the_surname() {
        let model = Model::default_german();
        let mut ctx = Context::default();
        ctx.first_name_tf.insert("schneider".into(), 1e-5);
        ctx.first_name_tf.insert("johanna".into(), 0.004);
        ctx.last_name_tf.insert("schneider".into(), 0.01);
        ctx.last_name_tf.insert("johanna".into(), 1e-5);
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let m = model.params(Comparison::FirstName).unwrap().levels[0].m;
        // Both records hold the names the wrong way round: the first name "schneider" is as
        // common as the surname, not as rare as the first name.
        let a = person("schneider", "johanna", "", "", "");
        let w = scorer.score(&a, &a.clone()).weights;
        assert!((w[Comparison::FirstName.index()].unwrap() - (m / 0.01).log2()).abs() < 1e-9);
        // The usual way round, the first name's own frequency counts.
        let b = person("johanna", "schneider", "", "", "");
        let w = scorer.score(&b, &b.clone()).weights;
        assert!((w[Comparison::FirstName.index()].unwrap() - (m / 0.004).log2()).abs() < 1e-9);
    }

    #[test]
    fn a_shared_landline_is_the_homes_like_the_address() {
        let mut model = Model::default_german();
        model.namesake_share = Some(0.05);
        let ctx = Context::default();
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        let cap = (0.95f64 / 0.05).log2();
        // Senior and junior of one name, one landline, no birth date: the landline counts
        // within the namesake odds, not on top of them.
        let senior = person("hans", "müller", "", "", "+493012345678");
        let junior = person("hans", "müller", "", "", "+493012345678");
        let o = compare(&senior, &junior, &ctx);
        assert!(o.shared_landline);
        let (score, terms) = scorer.explain(&senior, &junior);
        assert!((score.weight - cap).abs() < 1e-9, "{}", score.weight);
        assert_terms_sum_to_the_weight(&terms, &score);
        // Without a street (a loyalty card: postcode and city), the landline alone is one home.
        let mut card = junior.clone();
        card.street = None;
        card.house_number = None;
        let card = card.prepare();
        assert_ne!(
            compare(&senior, &card, &ctx).level(Comparison::Address),
            Some(0)
        );
        let score = scorer.score(&senior, &card);
        assert!(score.adjustment.is_some_and(|a| a.term() == "namesakes"));
        assert!(score.weight <= cap + 1e-9);
        // A shared mobile is the person's: evidence beyond the home.
        let a = person("hans", "müller", "", "", "+491711234567");
        let b = person("hans", "müller", "", "", "+491711234567");
        let o = compare(&a, &b, &ctx);
        assert!(!o.shared_landline);
        let score = scorer.score(&a, &b);
        let mobile = score.weights[Comparison::Phone.index()].unwrap();
        assert!((score.weight - (cap + mobile)).abs() < 1e-9);
        assert!(score.is_match(&model));
    }

    #[test]
    fn family_members_at_one_address_are_not_one_person() {
        let model = Model::default_german();
        // Father and son of the same name, same home, landline and e-mail: the birth date decides.
        let senior = person("klaus", "weber", "1950-03-01", "weber@web.de", "+4930123");
        let junior = person("klaus", "weber", "1979-11-20", "weber@web.de", "+4930123");
        let wife = person("petra", "weber", "1952-07-07", "weber@web.de", "+4930123");
        let ctx = Context::build(&[senior.clone(), junior.clone(), wife.clone()]);
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        for (a, b) in [(&senior, &junior), (&senior, &wife), (&junior, &wife)] {
            let s = scorer.score(a, b);
            assert!(!s.is_match(&model), "{s:?}");
            assert!(s.conflict().is_some());
        }
        // A record of that name without a birth date, sharing only the household's mailbox and
        // landline, could be the father or the son: likely, but held for review.
        let either = person("klaus", "webber", "", "weber@web.de", "+4930123");
        let s = scorer.score(&senior, &either);
        assert!(s.probability >= model.match_threshold);
        assert!(s.held_for_review(&model) && !s.is_match(&model));
        let (_, terms) = scorer.explain(&senior, &either);
        assert!(terms.iter().any(|t| t.term == "held_for_review"));
        // With a mailbox of his own as well, it is him.
        let again = person("klaus", "webber", "", "klaus.weber@gmx.de", "+4930123");
        let mut senior_mail = senior.clone();
        senior_mail.email = again.email.clone();
        senior_mail.email_key = again.email_key.clone();
        assert!(scorer.score(&senior_mail, &again).is_match(&model));
        // Without the setting, the measured odds decide.
        let mut merging = model.clone();
        merging.namesakes_need_own_evidence = false;
        assert!(Scorer::new(&merging, &ctx, &HashMap::new())
            .score(&senior, &either)
            .is_match(&merging));
    }

    #[test]
    fn the_hard_household_cases_of_issue_25() {
        let mut model = Model::default_german();
        model.namesake_share = Some(0.05);
        model.similar_name_share = Some(0.3);
        // Trained on data with households at full addresses.
        model.household_share = Some(0.1);
        let ctx = Context::default();
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        // Father and son of one name: the son's loyalty card has postcode and city only, and no
        // birth date. One home as far as the records tell: held, not merged.
        let father = person("hans", "müller", "", "", "+493012345678");
        let mut card = person("johannes", "müller", "", "", "");
        card.street = None;
        card.house_number = None;
        let card = card.prepare();
        let s = scorer.score(&father, &card);
        assert_eq!(
            s.outcome.level(Comparison::FirstName),
            Some(crate::model::comparison::FIRST_NAME_NICKNAME)
        );
        assert!(s.held_for_review(&model), "{s:?}");
        assert!(!s.is_match(&model));
        // sen. and jun. in the name fields: two people, even with the family mailbox.
        let senior = person("hans", "müller sen", "", "mueller@web.de", "");
        let junior = person("hans", "müller jun", "", "mueller@web.de", "");
        let s = scorer.score(&senior, &junior);
        assert_eq!(s.conflict(), Some(Comparison::LastName));
        assert!(!s.is_match(&model), "{s:?}");
        let (score, terms) = scorer.explain(&senior, &junior);
        assert_terms_sum_to_the_weight(&terms, &score);
        // A name changed at marriage: first name, birth date and home agree.
        let before = person("anna", "schmidt", "1980-05-17", "", "");
        let after = person("anna", "weber", "1980-05-17", "", "");
        let (score, terms) = scorer.explain(&before, &after);
        assert!(score
            .adjustment
            .is_some_and(|a| a.term() == "surname_changed" && a.weight() > 0.0));
        assert_terms_sum_to_the_weight(&terms, &score);
        assert!(
            score.weight
                > scorer
                    .score(&before, &person("anna", "weber", "1980-05-18", "", ""))
                    .weight
        );
        // Without the birth date nothing is taken back: a daughter-in-law of one first name.
        let s = scorer.score(
            &person("anna", "schmidt", "", "", ""),
            &person("anna", "weber", "", "", ""),
        );
        assert!(s.adjustment.is_none());
        // Twins of alike names and one birth date in one home: held unless their own agrees.
        let lena = person("lena", "wagner", "2001-03-04", "", "");
        let lea = person("lea", "wagner", "2001-03-04", "", "");
        let s = scorer.score(&lena, &lea);
        assert!(s.namesakes_without_own_evidence, "{s:?}");
        assert!(!s.is_match(&model));
    }

    #[test]
    fn a_pet_form_does_not_veto_a_personal_e_mail_or_mobile_but_a_birth_date_does() {
        let model = Model::default_german();
        let ids = HashMap::new();
        let pair = |a: MatchRecord, b: MatchRecord| {
            let ctx = Context::build(&[a.clone(), b.clone()]);
            let scorer = Scorer::new(&model, &ctx, &ids);
            scorer
                .score(&a, &b)
                .forced_by
                .map(|i| model.rules[i].name.clone())
        };
        let email = "alexander.berger@web.de";
        assert_eq!(
            pair(
                person("xandi", "berger", "", email, ""),
                person("alexander", "berger", "1960-01-01", email, "")
            )
            .as_deref(),
            Some("same_personal_email")
        );
        let mobile = "+4915112345678";
        assert_eq!(
            pair(
                person("xandi", "berger", "", "", mobile),
                person("alexander", "berger", "", "", mobile)
            )
            .as_deref(),
            Some("same_personal_mobile")
        );
        // Day and month exchanged on one record, a digit of the year off on the other.
        assert_eq!(
            pair(
                person("berger", "alexander", "1995-12-10", email, ""),
                person("alexander", "berger", "1996-10-12", email, "")
            )
            .as_deref(),
            Some("same_personal_email")
        );
        // Two people: other birth dates, or names with nothing in common.
        assert_eq!(
            pair(
                person("xandi", "berger", "1990-05-05", email, ""),
                person("alexander", "berger", "1960-01-01", email, "")
            ),
            None
        );
        assert_eq!(
            pair(
                person("petra", "berger", "", email, ""),
                person("alexander", "berger", "", email, "")
            ),
            None
        );
    }

    #[test]
    fn a_personal_mobile_counts_on_an_identity_conflict_a_landline_does_not() {
        let model = Model::default_german();
        let ids = HashMap::new();
        // "Jtrg" and "Jöng", two typos of the "Jörg" who holds the mobile with them: the
        // context keeps the mobile personal, and the pair's first names still conflict.
        let mobile = "+491739705243";
        let jtrg = person("jtrg", "thomas", "1956-09-11", "", mobile);
        let joeng = person("jöng", "thomas", "1956-09-11", "", mobile);
        let joerg = person("jörg", "thomas", "", "", mobile);
        let ctx = Context::build(&[jtrg.clone(), joeng.clone(), joerg.clone()]);
        let scorer = Scorer::new(&model, &ctx, &ids);
        let (score, terms) = scorer.explain(&jtrg, &joeng);
        assert_eq!(score.conflict(), Some(Comparison::FirstName));
        let conflict = terms
            .iter()
            .find(|t| t.term == "identity_conflict")
            .unwrap();
        let note = conflict.note.as_deref().unwrap_or_default();
        assert!(!note.contains("phone"), "{note}");
        assert!(score.is_match(&model), "{}", score.weight);
        assert_terms_sum_to_the_weight(&terms, &score);
        // A landline they share is the home's and is not counted.
        let landline = "+493012345678";
        let (a, b) = (
            person("jtrg", "thomas", "1956-09-11", "", landline),
            person("jöng", "thomas", "1956-09-11", "", landline),
        );
        let ctx = Context::build(&[
            a.clone(),
            b.clone(),
            person("jörg", "thomas", "", "", landline),
        ]);
        let scorer = Scorer::new(&model, &ctx, &ids);
        let (_, terms) = scorer.explain(&a, &b);
        let conflict = terms
            .iter()
            .find(|t| t.term == "identity_conflict")
            .unwrap();
        let note = conflict.note.as_deref().unwrap_or_default();
        assert!(note.contains("phone"), "{note}");
    }

    #[test]
    fn the_male_and_the_female_form_of_one_name_are_two_people() {
        let model = Model::default_german();
        let ctx = Context::default();
        let scorer = Scorer::new(&model, &ctx, &HashMap::new());
        // Twins Paul and Paula at one address, a typo in one last name: alike names, two people.
        let (paul, paula) = (
            person("paul", "weiß", "", "", ""),
            person("paula", "wniß", "", "", ""),
        );
        let (score, terms) = scorer.explain(&paul, &paula);
        assert_eq!(score.conflict(), Some(Comparison::FirstName));
        assert!(!score.is_match(&model), "{}", score.weight);
        assert_terms_sum_to_the_weight(&terms, &score);
        assert!(terms.iter().any(|t| t
            .note
            .as_deref()
            .is_some_and(|n| n.contains("male and the female form"))));
        // A typo of one name is no such pair (Paul and Pual), nor a name with no table entry.
        for (a, b) in [("paul", "pual"), ("christian", "christiam")] {
            let o = compare(
                &person(a, "weiß", "", "", ""),
                &person(b, "weiß", "", "", ""),
                &ctx,
            );
            assert!(!o.other_sex_forms, "{a} {b}");
        }
        let o = compare(
            &person("christian", "weiß", "", "", ""),
            &person("christine", "weiß", "", "", ""),
            &ctx,
        );
        assert!(o.other_sex_forms);
    }

    #[test]
    fn deterministic_rules_force_and_respect_sources() {
        let mut model = Model::default_german();
        model.rules = vec![DeterministicRule {
            name: "crm_number".into(),
            all: vec![Predicate::SameCustomerNumber],
            sources: Some(vec!["crm".into()]),
        }];
        let ctx = Context::default();
        let ids = HashMap::from([("crm".to_string(), 1)]);
        let scorer = Scorer::new(&model, &ctx, &ids);
        let mut a = person("a", "b", "", "", "");
        let mut b = person("x", "y", "", "", "");
        a.customer_number = Some("K1".into());
        b.customer_number = Some("K1".into());
        a.source_id = 1;
        b.source_id = 1;
        assert_eq!(scorer.score(&a, &b).forced_by, Some(0));
        b.source_id = 2;
        assert_eq!(scorer.score(&a, &b).forced_by, None);
    }
}
