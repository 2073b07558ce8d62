//! Erasure helpers, pure Rust: the keyed hash of an erased source key and the scrubbing of an
//! erased person's values out of JSON documents the extension keeps (model reports, batches in
//! flight).

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// HMAC-SHA-256 of `message` under `secret` (RFC 2104).
pub fn hmac_sha256(secret: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The tombstone of an erased source key: HMAC-SHA-256 under `secret` of the key's SHA-256. A
/// plain hash of a sequential customer number is reversed by hashing every number; without the
/// secret it is not. Keyed over the SHA-256 (not the key itself) because 0.1.0 stored the plain
/// SHA-256: the upgrade to 0.2.0 turns each old tombstone into this one without knowing the key.
pub fn key_hash(secret: &[u8], key: &str) -> Vec<u8> {
    hmac_sha256(secret, &Sha256::digest(key.as_bytes()))
}

/// `doc` with every string that quotes one of `needles` (compared case-insensitively)
/// replaced by null, in objects and arrays at any depth; keys are kept. A needle of three
/// characters or more is quoted anywhere in the string; one of two ("Li", "Ng") only as a whole
/// word, since as a substring it is in every other word; one character is no identifier.
pub fn scrub(doc: &Value, needles: &[String]) -> Value {
    let needles: Vec<String> = needles
        .iter()
        .map(|n| n.trim().to_lowercase())
        .filter(|n| n.chars().count() >= 2)
        .collect();
    scrub_lowered(doc, &needles)
}

fn quotes(lowered: &str, needle: &str) -> bool {
    if needle.chars().count() >= 3 {
        return lowered.contains(needle);
    }
    lowered
        .split(|c: char| !c.is_alphanumeric())
        .any(|word| word == needle)
}

fn scrub_lowered(doc: &Value, needles: &[String]) -> Value {
    match doc {
        Value::String(s) => {
            let lowered = s.to_lowercase();
            if needles.iter().any(|n| quotes(&lowered, n)) {
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
    fn hmac_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 1: key 0x0b * 20, "Hi There".
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn key_hash_is_the_hmac_of_the_sha256_of_the_key() {
        // SHA-256("10001") as 0.1.0 stored it, then keyed: what the 0.1.0 -> 0.2.0 step computes.
        let old_tombstone = Sha256::digest(b"10001");
        assert_eq!(
            hex(&old_tombstone),
            "e443169117a184f91186b401133b20be670c7c0896f9886075e5d9b81e9d076b"
        );
        assert_eq!(
            key_hash(b"secret", "10001"),
            hmac_sha256(b"secret", &old_tombstone)
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
    fn scrub_takes_two_letter_values_as_whole_words_only() {
        let doc = json!({"a": "Li", "b": "berlin", "c": "Wei Li, Berlin", "d": "x"});
        assert_eq!(
            scrub(&doc, &["li".into(), "".into(), "x".into()]),
            json!({"a": null, "b": "berlin", "c": null, "d": "x"})
        );
    }
}
