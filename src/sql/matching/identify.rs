//! `unify.identify`: the persons a touchpoint's attributes most likely are, scored against the
//! stored records as any record pair is (the same cleaners, blocking keys, context, rules).

use std::collections::{HashMap, HashSet};

use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use pgrx::{JsonB, PgSqlErrorCode};

use super::super::errors::raise;
use super::super::spi::{fetch_all, select_kept, spi_failed};
use super::frequencies::load_frequencies;
use super::model::current_model;
use super::records::{
    load_value_holders, record_from_row, source_ids, RECORD_COLUMNS, RECORD_COLUMN_COUNT,
};
use crate::model::blocking::{key_hashes, BlockingRule};
use crate::model::comparison::{Context, JUNK_VALUE_RECORDS};
use crate::model::identify::{
    best_per_person, candidate_ids, check_attributes, Scored, IDENTIFYING_FIELDS,
};
use crate::model::params::log2_odds;
use crate::model::record::MatchRecord;
use crate::model::scorer::Scorer;

const F: &str = "identify";

/// At most this many persons per call.
const MAX_CANDIDATES: i32 = 100;

fn invalid(message: String, hint: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
        hint,
        F,
    )
}

/// The best candidate persons for a probe of canonical fields (any subset of e-mail, phone,
/// name, address, birth date, customer number): per person its best record, with the match
/// probability, weight and the explanation of that record pair (`explain_match`'s terms, the
/// probe as `value_a`), ordered by weight; only persons at or above the model's review
/// threshold (or forced by a deterministic rule). Reads, writes nothing.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, strict)]
fn identify(
    attributes: JsonB,
    max_candidates: default!(i32, 5),
) -> TableIterator<
    'static,
    (
        name!(person_id, Option<i64>),
        name!(match_probability, f64),
        name!(match_weight, f64),
        name!(is_match, bool),
        name!(record_id, i64),
        name!(explanation, JsonB),
    ),
> {
    if let Err(e) = check_attributes(&attributes.0) {
        invalid(
            e.message(),
            &format!(
                "Give any of the canonical fields {} as strings, e.g. '{{\"email\": \"anna@example.org\", \"postcode\": \"10115\"}}'.",
                IDENTIFYING_FIELDS.join(", ")
            ),
        );
    }
    if !(1..=MAX_CANDIDATES).contains(&max_candidates) {
        invalid(
            format!("max_candidates must be between 1 and {MAX_CANDIDATES}, not {max_candidates}"),
            "Ask for the few best persons (the default is 5).",
        );
    }
    let model = current_model(F);
    let (probe, candidates, ctx, ids) = Spi::connect(|client| {
        require_current_keys(client, &model.blocking_rules);
        let probe = probe_record(client, attributes);
        let keys = key_hashes(&model.blocking_rules, &probe);
        let members = block_members(client, &keys, &model.blocking_rules);
        let cand_ids = candidate_ids(&keys, &members, &model.blocking_rules);
        let candidates = load_candidates(client, cand_ids);
        let ctx = probe_context(client, &probe);
        (probe, candidates, ctx, source_ids(client))
    });
    let scorer = Scorer::new(&model, &ctx, &ids);
    let scored: Vec<Scored> = candidates
        .iter()
        .map(|(person_id, r)| {
            let s = scorer.score(&probe, r);
            Scored {
                person_id: *person_id,
                record_id: r.id,
                weight: s.weight,
                forced: s.forced_by.is_some(),
            }
        })
        .collect();
    let best = best_per_person(
        scored,
        log2_odds(model.review_threshold),
        max_candidates as usize,
    );
    let by_id: HashMap<i64, &MatchRecord> = candidates.iter().map(|(_, r)| (r.id, r)).collect();
    let rows: Vec<_> = best
        .into_iter()
        .map(|b| {
            let (score, terms) = scorer.explain(&probe, by_id[&b.record_id]);
            (
                b.person_id,
                score.probability,
                score.weight,
                score.is_match(&model),
                b.record_id,
                JsonB(serde_json::to_value(&terms).expect("terms serialize")),
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Raises 55000 unless unify.block_keys holds the keys of the model's blocking rules (a full
/// scoring built them, the queue keeps them up to date).
fn require_current_keys(client: &SpiClient<'_>, rules: &[BlockingRule]) {
    let stored = client
        .select(
            "SELECT m.blocking_rules FROM unify.matching_state m",
            None,
            &[],
        )
        .unwrap_or_else(|e| spi_failed(e, F));
    let stored: Option<Vec<BlockingRule>> = if stored.is_empty() {
        None
    } else {
        stored
            .first()
            .get_one::<JsonB>()
            .unwrap_or_else(|e| spi_failed(e, F))
            .and_then(|j| serde_json::from_value(j.0).ok())
    };
    if stored.as_deref() != Some(rules) {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            if stored.is_none() {
                "records are not scored yet: there are no blocking keys to look a person up in"
                    .into()
            } else {
                "the model's blocking rules changed since the blocking keys were built".into()
            },
            None,
            "Run SELECT * FROM unify.score_pairs(); once.",
            F,
        )
    }
}

/// The probe: the attributes through the cleaners that make a record (unify._probe_query),
/// as the fields matching compares. Raises 22023 when none is left.
fn probe_record(client: &SpiClient<'_>, attributes: JsonB) -> MatchRecord {
    let query = client
        .select("SELECT unify._probe_query()", None, &[])
        .and_then(|t| t.first().get_one::<String>())
        .unwrap_or_else(|e| spi_failed(e, F))
        .unwrap_or_else(|| spi_failed("unify._probe_query() returned NULL", F));
    let given = attributes.0.clone();
    let table =
        select_kept(client, &query, &vec![attributes.into()]).unwrap_or_else(|e| spi_failed(e, F));
    let probe = table
        .map(|row| record_from_row(&row, F))
        .next()
        .unwrap_or_else(|| spi_failed("the probe query returned no row", F));
    let p = &probe;
    let usable = [
        &p.first_name,
        &p.last_name,
        &p.email_key,
        &p.street,
        &p.house_number,
        &p.postcode,
        &p.city,
        &p.birth_date,
        &p.external_id,
        &p.customer_number,
    ]
    .iter()
    .any(|v| v.is_some())
        || !p.phones.is_empty();
    if !usable {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "no attribute is left after cleaning: nothing to identify a person by".into(),
            Some(format!("attributes given: {given}")),
            "A value the cleaners cannot read (an e-mail without @, a phone without digits, an impossible date) counts as not given, as in sync; give at least one readable value.",
            F,
        )
    }
    probe
}

/// The stored members of the probe's blocks, each read up to one past its rule's size limit.
fn block_members(
    client: &SpiClient<'_>,
    keys: &[(usize, i64)],
    rules: &[BlockingRule],
) -> HashMap<i64, Vec<i64>> {
    let (hashes, caps): (Vec<i64>, Vec<i32>) = keys
        .iter()
        .map(|&(rule, h)| {
            (
                h,
                (rules[rule].max_block_size + 1).min(i32::MAX as usize) as i32,
            )
        })
        .unzip();
    fetch_all(
        client,
        "SELECT k.h, ARRAY(SELECT b.record_id FROM unify.block_keys b WHERE b.key_hash = k.h LIMIT k.cap)
         FROM unnest($1::bigint[], $2::int[]) AS k (h, cap)",
        vec![hashes.into(), caps.into()],
        F,
        |r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<Vec<i64>>(2).ok().flatten().unwrap_or_default(),
            )
        },
    )
    .into_iter()
    .collect()
}

/// The candidate records with their persons.
fn load_candidates(client: &SpiClient<'_>, ids: Vec<i64>) -> Vec<(Option<i64>, MatchRecord)> {
    if ids.is_empty() {
        return Vec::new();
    }
    fetch_all(
        client,
        &format!(
            "SELECT {RECORD_COLUMNS},
                    (SELECT rp.person_id FROM unify.record_persons rp WHERE rp.record_id = r.record_id)
               FROM unify.records r WHERE r.record_id = ANY ($1)"
        ),
        vec![ids.into()],
        F,
        |row| {
            let person = row
                .get::<i64>(RECORD_COLUMN_COUNT + 1)
                .unwrap_or_else(|e| spi_failed(e, F));
            (person, record_from_row(row, F))
        },
    )
}

/// What scoring the probe needs beyond the records: the model's frequencies of its names and
/// whether its e-mail and phones are a household's, judged by their stored holders (each read up
/// to one past the junk limit) as scoring judges them. The probe itself is no holder: it is a
/// question, not a record.
fn probe_context(client: &SpiClient<'_>, probe: &MatchRecord) -> Context {
    let names: Vec<String> = probe
        .first_name
        .iter()
        .chain(probe.last_name.iter())
        .cloned()
        .collect();
    let frequencies = load_frequencies(client, Some(names), F);
    let cap = JUNK_VALUE_RECORDS as i32 + 1;
    let emails: HashSet<String> = probe.email_key.iter().cloned().collect();
    let phones: HashSet<String> = probe.phones.iter().cloned().collect();
    let holders = load_value_holders(
        client,
        emails.iter().map(|e| (e.clone(), cap)).collect(),
        phones.iter().map(|p| (p.clone(), cap)).collect(),
        F,
    );
    Context::with_frequencies(frequencies, &holders, &emails, &phones)
}
