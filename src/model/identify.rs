//! Identifying a person at a touchpoint (`unify.identify`): which attributes a probe may carry,
//! which stored records are its candidates under the blocking rules, and the best record per
//! person among the scored candidates. The probe itself is normalized by the SQL that makes
//! records (`unify._probe_query`) and scored by [`super::scorer::Scorer`] as any record pair.

use std::collections::HashMap;

use serde_json::Value;

use super::blocking::BlockingRule;

/// The canonical fields (`unify.canonical_fields()`) a probe may carry: those a record's
/// matching fields are made from. `country` only says how the phone and the postcode are read.
pub const IDENTIFYING_FIELDS: [&str; 15] = [
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "mobile",
    "street",
    "house_number",
    "street_line",
    "postcode",
    "city",
    "country",
    "birth_date",
    "customer_number",
    "external_id",
];

/// The canonical fields that take no part in matching: named in the error, not silently dropped.
pub const NON_IDENTIFYING_FIELDS: [&str; 10] = [
    "salutation",
    "title",
    "company",
    "consent_email",
    "consent_email_at",
    "consent_phone",
    "consent_phone_at",
    "consent_post",
    "consent_post_at",
    "updated_at",
];

/// Why a probe's attributes are refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AttributeError {
    NotAnObject,
    /// Keys that are no canonical field.
    Unknown(Vec<String>),
    /// Canonical fields that take no part in matching.
    NotIdentifying(Vec<String>),
    /// A value that is no string or number (field, JSON type).
    BadValue(String, &'static str),
    /// No field with a value.
    Empty,
}

impl AttributeError {
    pub fn message(&self) -> String {
        match self {
            Self::NotAnObject => "attributes must be a JSON object of canonical fields".into(),
            Self::Unknown(keys) => format!("unknown field: {}", keys.join(", ")),
            Self::NotIdentifying(keys) => format!(
                "field takes no part in identifying a person: {}",
                keys.join(", ")
            ),
            Self::BadValue(field, kind) => {
                format!("value of \"{field}\" must be a string or a number, not {kind}")
            }
            Self::Empty => "attributes hold no value to identify a person by".into(),
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks a probe's attributes: a JSON object whose keys are identifying canonical fields and
/// whose values are strings or numbers (null: not given). Returns the fields given a value, in
/// the order of [`IDENTIFYING_FIELDS`].
pub fn check_attributes(attributes: &Value) -> Result<Vec<&'static str>, AttributeError> {
    let Value::Object(map) = attributes else {
        return Err(AttributeError::NotAnObject);
    };
    let mut unknown: Vec<String> = map
        .keys()
        .filter(|k| {
            !IDENTIFYING_FIELDS.contains(&k.as_str())
                && !NON_IDENTIFYING_FIELDS.contains(&k.as_str())
        })
        .cloned()
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(AttributeError::Unknown(unknown));
    }
    let mut other: Vec<String> = map
        .keys()
        .filter(|k| NON_IDENTIFYING_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    if !other.is_empty() {
        other.sort();
        return Err(AttributeError::NotIdentifying(other));
    }
    let mut given = Vec::new();
    for field in IDENTIFYING_FIELDS {
        match map.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.trim().is_empty() => {}
            Some(Value::String(_) | Value::Number(_)) => given.push(field),
            Some(v) => return Err(AttributeError::BadValue(field.to_string(), json_kind(v))),
        }
    }
    // The country alone identifies nobody.
    if given.iter().all(|f| *f == "country") {
        return Err(AttributeError::Empty);
    }
    Ok(given)
}

/// The records a probe with blocking keys `keys` (rule index, hash) is compared with: the
/// members of each of its blocks (`members`, read up to one past the rule's size limit) within
/// the rule's size limit, as scoring pairs the records of a block. Each id once, in order.
pub fn candidate_ids(
    keys: &[(usize, i64)],
    members: &HashMap<i64, Vec<i64>>,
    rules: &[BlockingRule],
) -> Vec<i64> {
    let mut ids: Vec<i64> = keys
        .iter()
        .filter_map(|(rule, hash)| {
            let m = members.get(hash)?;
            (m.len() <= rules[*rule].max_block_size).then_some(m)
        })
        .flatten()
        .copied()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// A scored candidate record.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// None: the record is not resolved into a person yet.
    pub person_id: Option<i64>,
    pub record_id: i64,
    pub weight: f64,
    /// A deterministic rule forces the match.
    pub forced: bool,
}

/// The best record per person among those at or above `min_weight` or forced, at most `max`
/// persons. Records and persons rank alike: forced by a deterministic rule first (the same
/// customer number, the same personal e-mail: the model's own word that they are one), then by
/// weight, then by the smaller person and record id. A record without a person stands for itself.
pub fn best_per_person(scored: Vec<Scored>, min_weight: f64, max: usize) -> Vec<Scored> {
    let mut best: HashMap<(Option<i64>, Option<i64>), Scored> = HashMap::new();
    for s in scored
        .into_iter()
        .filter(|s| s.forced || s.weight >= min_weight)
    {
        let key = (s.person_id, s.person_id.is_none().then_some(s.record_id));
        match best.get(&key) {
            Some(b) if rank(b, &s) != std::cmp::Ordering::Greater => {}
            _ => {
                best.insert(key, s);
            }
        }
    }
    let mut out: Vec<Scored> = best.into_values().collect();
    out.sort_by(|a, b| rank(a, b).then(a.person_id.cmp(&b.person_id)));
    out.truncate(max);
    out
}

/// Whether `b` ranks before `a` (Greater) or after it: forced first, then weight, then the
/// smaller record id.
fn rank(a: &Scored, b: &Scored) -> std::cmp::Ordering {
    b.forced
        .cmp(&a.forced)
        .then(b.weight.total_cmp(&a.weight))
        .then(a.record_id.cmp(&b.record_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::blocking::default_rules;
    use serde_json::json;

    #[test]
    fn attributes_are_checked_field_by_field() {
        assert_eq!(
            check_attributes(&json!({"email": "A@B.de", "postcode": 10115, "city": null})),
            Ok(vec!["email", "postcode"])
        );
        assert_eq!(
            check_attributes(&json!(["email"])),
            Err(AttributeError::NotAnObject)
        );
        assert_eq!(
            check_attributes(&json!({"mail": "x", "e_mail": "y"})),
            Err(AttributeError::Unknown(vec![
                "e_mail".into(),
                "mail".into()
            ]))
        );
        assert_eq!(
            check_attributes(&json!({"email": "x", "consent_email": true})),
            Err(AttributeError::NotIdentifying(vec!["consent_email".into()]))
        );
        let e = check_attributes(&json!({"phone": ["030 1"]})).unwrap_err();
        assert_eq!(e, AttributeError::BadValue("phone".into(), "an array"));
        assert!(e.message().contains("\"phone\""));
        assert_eq!(check_attributes(&json!({})), Err(AttributeError::Empty));
        assert_eq!(
            check_attributes(&json!({"country": "DE", "email": "  "})),
            Err(AttributeError::Empty)
        );
    }

    #[test]
    fn every_field_is_named_once() {
        for f in IDENTIFYING_FIELDS {
            assert!(!NON_IDENTIFYING_FIELDS.contains(&f), "{f}");
        }
        // 25 canonical fields (unify._canonical_field_types()).
        assert_eq!(IDENTIFYING_FIELDS.len() + NON_IDENTIFYING_FIELDS.len(), 25);
    }

    #[test]
    fn candidates_come_from_blocks_within_their_limit() {
        let rules = default_rules();
        let email = rules.iter().position(|r| r.name == "email").unwrap();
        let phone = rules.iter().position(|r| r.name == "phone").unwrap();
        let limit = rules[phone].max_block_size;
        let members = HashMap::from([
            (1, vec![7, 3]),
            (2, (100..100 + limit as i64 + 1).collect()),
            (3, vec![3]),
        ]);
        // The phone's block is one past its limit: no candidates from it, as in scoring.
        let keys = [(email, 1), (phone, 2), (email, 3), (email, 4)];
        assert_eq!(candidate_ids(&keys, &members, &rules), vec![3, 7]);
    }

    #[test]
    fn the_best_record_per_person_in_order() {
        let s = |person: Option<i64>, record, weight, forced| Scored {
            person_id: person,
            record_id: record,
            weight,
            forced,
        };
        let got = best_per_person(
            vec![
                s(Some(1), 10, 5.0, false),
                s(Some(1), 11, 9.0, false),
                s(Some(1), 9, 9.0, false),
                s(Some(2), 20, 12.0, false),
                s(None, 30, 3.0, false),
                s(None, 31, 3.0, false),
                s(Some(3), 40, -20.0, true),
                s(Some(4), 50, -20.0, false),
                s(Some(5), 60, 3.0, true),
                s(Some(5), 61, 12.0, false),
            ],
            -6.0,
            10,
        );
        assert_eq!(
            got,
            vec![
                s(Some(5), 60, 3.0, true),
                s(Some(3), 40, -20.0, true),
                s(Some(2), 20, 12.0, false),
                s(Some(1), 9, 9.0, false),
                s(None, 30, 3.0, false),
                s(None, 31, 3.0, false),
            ]
        );
        assert_eq!(
            best_per_person(
                vec![s(Some(1), 1, 1.0, false), s(Some(2), 2, 2.0, false)],
                0.0,
                1
            ),
            vec![s(Some(2), 2, 2.0, false)]
        );
    }
}
