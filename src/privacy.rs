//! Erasure helpers, pure Rust: the keyed hash of an erased source key and the scrubbing of an
//! erased person's values out of JSON documents the extension keeps (model reports, batches in
//! flight).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// HMAC-SHA-256 of `message` under `secret` (RFC 2104). A plain hash of a sequential customer
/// number is reversed by hashing every number; without the secret it is not.
pub fn key_hash(secret: &[u8], message: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `doc` with every string that contains one of `needles` (compared case-insensitively)
/// replaced by null, in objects and arrays at any depth; keys are kept. Needles shorter than
/// three characters are ignored: they would blank unrelated values.
pub fn scrub(doc: &Value, needles: &[String]) -> Value {
    let needles: Vec<String> = needles
        .iter()
        .map(|n| n.trim().to_lowercase())
        .filter(|n| n.chars().count() >= 3)
        .collect();
    scrub_lowered(doc, &needles)
}

fn scrub_lowered(doc: &Value, needles: &[String]) -> Value {
    match doc {
        Value::String(s) => {
            let lowered = s.to_lowercase();
            if needles.iter().any(|n| lowered.contains(n.as_str())) {
                Value::Null
            } else {
                doc.clone()
            }
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| scrub_lowered(v, needles)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), scrub_lowered(v, needles)))
                .collect(),
        ),
        _ => doc.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn key_hash_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex(&key_hash(b"Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 1: key 0x0b * 20, "Hi There".
        assert_eq!(
            hex(&key_hash(&[0x0b; 20], "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn key_hash_depends_on_the_secret() {
        assert_ne!(
            key_hash(b"one secret", "10001"),
            key_hash(b"another", "10001")
        );
        assert_eq!(key_hash(b"one secret", "10001").len(), 32);
    }

    #[test]
    fn scrub_blanks_values_containing_a_needle_at_any_depth() {
        let doc = json!({"rule": "email", "largest_skipped_key": "Anna.Schmidt@web.de",
                         "rules": [{"key": "schmidt"}, {"key": "meyer"}], "pairs": 12});
        let scrubbed = scrub(&doc, &["anna.schmidt@web.de".into(), "Schmidt".into()]);
        assert_eq!(
            scrubbed,
            json!({"rule": "email", "largest_skipped_key": null,
                   "rules": [{"key": null}, {"key": "meyer"}], "pairs": 12})
        );
    }

    #[test]
    fn scrub_ignores_short_needles() {
        let doc = json!({"a": "de", "b": "berlin"});
        assert_eq!(scrub(&doc, &["de".into(), "".into()]), doc);
    }
}
