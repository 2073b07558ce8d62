//! The match model (Fellegi-Sunter): per comparison level an m probability (the level among
//! matches) and a u probability (among non-matches), a prior, thresholds and deterministic rules.
//! Serialized as the JSON users see in `unify.model`, `unify.get_model()` and
//! `unify.set_model()`; `super::scorer` turns a model into match weights.

use serde::{Deserialize, Serialize};

use super::blocking::{default_rules, BlockingRule};
use super::comparison::Comparison;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Level {
    pub name: String,
    pub m: f64,
    pub u: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredParams")]
pub struct ComparisonParams {
    pub comparison: Comparison,
    pub levels: Vec<Level>,
}

/// A comparison's parameters as stored, perhaps by a version before some of its levels
/// existed (`Comparison::added_levels`): read with those levels added at the shipped model's
/// m and u, so a model stored before "nickname" still loads, scores and trains (`train()`
/// then learns the added levels like the others). Levels in any other shape are kept as they
/// are, for `Model::validate` to name the problem.
#[derive(Deserialize)]
struct StoredParams {
    comparison: Comparison,
    levels: Vec<Level>,
}

impl From<StoredParams> for ComparisonParams {
    fn from(stored: StoredParams) -> Self {
        let c = stored.comparison;
        let mut levels = stored.levels;
        let added = c.added_levels();
        let older: Vec<&str> = c
            .levels()
            .iter()
            .copied()
            .filter(|l| !added.contains(l))
            .collect();
        let names: Vec<&str> = levels.iter().map(|l| l.name.as_str()).collect();
        if !added.is_empty() && names == older {
            let shipped = Model::default_german();
            if let Some(defaults) = shipped.params(c) {
                for (at, name) in c.levels().iter().enumerate() {
                    if added.contains(name) {
                        levels.insert(at, defaults.levels[at].clone());
                    }
                }
            }
        }
        Self {
            comparison: c,
            levels,
        }
    }
}

/// What a deterministic rule requires of a pair. All of a rule's predicates must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// Same normalized e-mail or match key, not a household e-mail.
    SameEmail,
    /// Same phone, not a household number.
    SamePhone,
    /// Same mobile number (not a fixed line), not a household's.
    SameMobile,
    /// Last names equal after transliteration.
    SameLastName,
    SameFirstName,
    SameBirthDate,
    SameAddress,
    SameCustomerNumber,
    SameExternalId,
    /// Neither first names nor birth dates clearly differ.
    NoConflict,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeterministicRule {
    pub name: String,
    pub all: Vec<Predicate>,
    /// Only between records of these sources (by name); all sources when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Probability that two records drawn at random are the same person.
    pub prior: f64,
    /// Pairs at or above this match probability are matches.
    pub match_threshold: f64,
    /// Pairs at or above this probability are kept in `unify.pairs` for review.
    pub review_threshold: f64,
    /// When first names or birth dates clearly differ (both present, no level of similarity),
    /// the positive weights of these comparisons are not counted: family members share a last
    /// name, a home, a landline and sometimes an e-mail, so that evidence says "household", not
    /// "same person". Personal evidence (birth date, an external id) still counts.
    #[serde(default = "default_household_comparisons")]
    pub household_comparisons: Vec<Comparison>,
    /// Added on top when identities conflict (0 by default: the household evidence is gone).
    pub conflict_weight: f64,
    /// Measured by `train()`: among candidate pairs at one address with first names and birth
    /// dates present, the share whose first names and birth dates both clearly differ (people
    /// living together). Household evidence is discounted only when this reaches
    /// `household_share_minimum` (or before any training): data without households, such as
    /// Febrl, keeps plain Fellegi-Sunter weights.
    #[serde(default)]
    pub household_share: Option<f64>,
    #[serde(default = "default_household_share_minimum")]
    pub household_share_minimum: f64,
    /// Measured by `train()`: among candidate pairs of one name in one home (the same address,
    /// the same street, or a shared landline: `Outcome::one_home`) with birth dates on both records, the share whose birth dates
    /// clearly differ (a senior and a junior, a mother and a daughter of one name). Where
    /// households are in the data, a pair of one name in one home that has no birth-date
    /// evidence counts its prior, name, address and landline evidence as no more than the odds
    /// that such a pair is one person, log2((1 - share) / share): the other comparisons
    /// (e-mail, a mobile) decide the rest.
    #[serde(default)]
    pub namesake_share: Option<f64>,
    /// The same for first names that are only alike (Christian and Christine, Michael and Mia;
    /// see `Outcome::namesakes_at_one_home`).
    #[serde(default)]
    pub similar_name_share: Option<f64>,
    /// Where households are in the data, a pair of one (or an alike) name in one home without
    /// birth-date evidence is a match only when something of its own agrees as well: an e-mail,
    /// a mobile, an external id. Its probability stays what the data says (about 0.95 from the
    /// name and home alone); it is kept in `unify.pairs` for review, not merged. Merging a
    /// father into his son costs more than a duplicate left: consent, orders and the golden
    /// record of two people would become one. False: such pairs match at the measured odds.
    #[serde(default = "default_true")]
    pub namesakes_need_own_evidence: bool,
    /// Lower bound of a term-frequency-adjusted u.
    pub tf_minimum_u: f64,
    pub comparisons: Vec<ComparisonParams>,
    /// Deterministic rules: a pair satisfying every predicate of one is a match.
    pub rules: Vec<DeterministicRule>,
    /// Which pairs are compared at all.
    #[serde(default = "default_rules")]
    pub blocking_rules: Vec<BlockingRule>,
    /// Refuse to compare more candidate pairs than this (a rule that explodes).
    #[serde(default = "default_max_candidate_pairs")]
    pub max_candidate_pairs: u64,
}

fn default_household_comparisons() -> Vec<Comparison> {
    vec![
        Comparison::LastName,
        Comparison::Address,
        Comparison::Phone,
        Comparison::Email,
    ]
}

fn default_true() -> bool {
    true
}

fn default_household_share_minimum() -> f64 {
    0.02
}

fn default_max_candidate_pairs() -> u64 {
    50_000_000
}

pub fn log2_odds(p: f64) -> f64 {
    (p / (1.0 - p)).log2()
}

pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}

impl Model {
    /// The shipped starting point for German customer data: m values from experience, u values
    /// that `train()` replaces with measured ones.
    pub fn default_german() -> Self {
        let params = |c: Comparison, m: &[f64], u: &[f64]| ComparisonParams {
            comparison: c,
            levels: c
                .levels()
                .iter()
                .zip(m.iter().zip(u.iter()))
                .map(|(name, (m, u))| Level {
                    name: (*name).to_string(),
                    m: *m,
                    u: *u,
                })
                .collect(),
        };
        use Comparison::*;
        Self {
            prior: 1e-5,
            match_threshold: 0.9,
            review_threshold: 0.01,
            household_comparisons: default_household_comparisons(),
            conflict_weight: 0.0,
            household_share: None,
            household_share_minimum: default_household_share_minimum(),
            namesake_share: None,
            similar_name_share: None,
            namesakes_need_own_evidence: true,
            tf_minimum_u: 1e-6,
            comparisons: vec![
                // "nickname" and "double_name_part" came later (see `StoredParams`); their m
                // is on top of the others' until `train()` estimates all of them.
                params(
                    FirstName,
                    &[0.80, 0.08, 0.05, 0.02, 0.01, 0.01, 0.02, 0.03],
                    &[0.01, 0.001, 0.002, 0.01, 0.01, 0.002, 0.0005, 0.965],
                ),
                params(
                    LastName,
                    &[0.80, 0.08, 0.05, 0.02, 0.01, 0.01, 0.04],
                    &[0.002, 0.0002, 0.001, 0.005, 0.005, 0.0002, 0.9868],
                ),
                params(
                    BirthDate,
                    &[0.93, 0.01, 0.02, 0.01, 0.03],
                    &[5e-5, 1e-6, 5e-4, 5e-3, 0.99445],
                ),
                params(
                    Email,
                    &[0.70, 0.05, 0.03, 0.22],
                    &[1e-6, 1e-7, 1e-6, 0.999998],
                ),
                params(Phone, &[0.70, 0.30], &[1e-6, 0.999999]),
                params(
                    Address,
                    &[0.70, 0.05, 0.03, 0.07, 0.15],
                    &[1e-5, 1e-4, 1e-5, 0.01, 0.98988],
                ),
                params(ExternalId, &[0.90, 0.05, 0.05], &[1e-6, 1e-5, 0.999989]),
            ],
            rules: vec![
                DeterministicRule {
                    name: "same_customer_number".into(),
                    all: vec![Predicate::SameCustomerNumber, Predicate::NoConflict],
                    sources: None,
                },
                // A personal e-mail: household e-mails (held by different people) never satisfy
                // SameEmail, and clearly different first names or birth dates veto.
                DeterministicRule {
                    name: "same_personal_email".into(),
                    all: vec![Predicate::SameEmail, Predicate::NoConflict],
                    sources: None,
                },
                // A personal mobile, as the e-mail: one person carries it; a family's shared
                // number is held by different people and never satisfies SameMobile.
                DeterministicRule {
                    name: "same_personal_mobile".into(),
                    all: vec![Predicate::SameMobile, Predicate::NoConflict],
                    sources: None,
                },
            ],
            blocking_rules: default_rules(),
            max_candidate_pairs: default_max_candidate_pairs(),
        }
    }

    /// Checks what `set_model` accepts: known comparisons once each, level names in order,
    /// probabilities in (0, 1], thresholds in (0, 1).
    pub fn validate(&self) -> Result<(), String> {
        let in_unit = |x: f64| x > 0.0 && x < 1.0;
        if !in_unit(self.prior) {
            return Err(format!(
                "prior must be between 0 and 1 (exclusive), not {}",
                self.prior
            ));
        }
        if !in_unit(self.match_threshold) || !in_unit(self.review_threshold) {
            return Err(
                "match_threshold and review_threshold must be probabilities between 0 and 1".into(),
            );
        }
        if self.review_threshold > self.match_threshold {
            return Err("review_threshold must not be above match_threshold".into());
        }
        if !self.conflict_weight.is_finite() || self.conflict_weight > 0.0 {
            return Err("conflict_weight must be zero or negative".into());
        }
        if !in_unit(self.tf_minimum_u) {
            return Err("tf_minimum_u must be between 0 and 1".into());
        }
        if self.namesake_share.is_some_and(|s| !in_unit(s))
            || self.similar_name_share.is_some_and(|s| !in_unit(s))
        {
            return Err(
                "namesake_share and similar_name_share must be null or between 0 and 1 (exclusive)"
                    .into(),
            );
        }
        let mut seen = Vec::new();
        for p in &self.comparisons {
            if seen.contains(&p.comparison) {
                return Err(format!(
                    "comparison \"{}\" appears twice",
                    p.comparison.name()
                ));
            }
            seen.push(p.comparison);
            let names: Vec<&str> = p.levels.iter().map(|l| l.name.as_str()).collect();
            if names != p.comparison.levels() {
                return Err(format!(
                    "comparison \"{}\" must have the levels {:?} in this order",
                    p.comparison.name(),
                    p.comparison.levels()
                ));
            }
            for l in &p.levels {
                if !(l.m > 0.0 && l.m <= 1.0 && l.u > 0.0 && l.u <= 1.0) {
                    return Err(format!(
                        "comparison \"{}\" level \"{}\": m and u must be in (0, 1]",
                        p.comparison.name(),
                        l.name
                    ));
                }
            }
        }
        if self.blocking_rules.is_empty() || self.blocking_rules.len() > 32 {
            return Err("a model needs between 1 and 32 blocking rules".into());
        }
        let mut blocking_names = Vec::new();
        for r in &self.blocking_rules {
            if r.parts.is_empty() || r.max_block_size < 2 {
                return Err(format!(
                    "blocking rule \"{}\" needs at least one key part and a max_block_size of at least 2",
                    r.name
                ));
            }
            if r.name.is_empty() || r.name.chars().any(char::is_control) {
                return Err(format!(
                    "blocking rule name {:?} must be non-empty text without control characters",
                    r.name
                ));
            }
            if blocking_names.contains(&&r.name) {
                return Err(format!("blocking rule \"{}\" appears twice", r.name));
            }
            blocking_names.push(&r.name);
        }
        let mut rule_names = Vec::new();
        for r in &self.rules {
            if r.all.is_empty() {
                return Err(format!("rule \"{}\" has no predicates", r.name));
            }
            if rule_names.contains(&&r.name) {
                return Err(format!("rule \"{}\" appears twice", r.name));
            }
            rule_names.push(&r.name);
        }
        Ok(())
    }

    /// Whether household evidence is discounted on identity conflicts and namesakes (see
    /// `household_share`).
    pub fn households_in_data(&self) -> bool {
        self.household_share
            .is_none_or(|s| s >= self.household_share_minimum)
    }

    pub fn params(&self, c: Comparison) -> Option<&ComparisonParams> {
        self.comparisons.iter().find(|p| p.comparison == c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_valid_and_round_trips_as_json() {
        let m = Model::default_german();
        m.validate().unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Model>(&json).unwrap(), m);
        let mut bad = m.clone();
        bad.comparisons[0].levels.swap(0, 1);
        assert!(bad.validate().unwrap_err().contains("levels"));
        let mut bad = m;
        bad.prior = 0.0;
        assert!(bad.validate().is_err());
    }

    /// A model stored before the "nickname" and "double_name_part" levels: it loads, with
    /// those levels at the shipped values and every stored value kept.
    #[test]
    fn a_model_stored_without_the_added_levels_loads_with_them() {
        let shipped = Model::default_german();
        let mut json = serde_json::to_value(&shipped).unwrap();
        let mut stored_first = None;
        for p in json["comparisons"].as_array_mut().unwrap() {
            let first = p["comparison"] == "first_name";
            let levels = p["levels"].as_array_mut().unwrap();
            levels.retain(|l| l["name"] != "nickname" && l["name"] != "double_name_part");
            if first {
                levels[0]["m"] = serde_json::json!(0.77);
                stored_first = Some(levels.len());
            }
        }
        assert_eq!(stored_first, Some(7));
        let old: Model = serde_json::from_value(json).unwrap();
        assert_eq!(old.validate(), Ok(()));
        let first = old.params(Comparison::FirstName).unwrap();
        assert_eq!(first.levels.len(), Comparison::FirstName.levels().len());
        assert_eq!(first.levels[0].m, 0.77);
        assert_eq!(first.levels[6], shipped.comparisons[0].levels[6]);
        assert_eq!(first.levels[6].name, "nickname");
        assert_eq!(
            old.params(Comparison::LastName).unwrap().levels[5].name,
            "double_name_part"
        );
        // Any other shape is left for validate to refuse.
        let mut json = serde_json::to_value(&shipped).unwrap();
        json["comparisons"][0]["levels"]
            .as_array_mut()
            .unwrap()
            .remove(2);
        let bad: Model = serde_json::from_value(json).unwrap();
        assert!(bad.validate().unwrap_err().contains("levels"));
    }
}
