//! A flat jsonb object (string and boolean values) laid out as PostgreSQL stores it, without
//! PostgreSQL's builder (issue 27): `unify._raw_values` makes one per staged row of a sync, and
//! building it through `pushJsonbValue` / `JsonbValueToJsonb` (a parse state, a sort of the keys
//! and one guarded call into PostgreSQL per key and value) cost about 1 µs of the row's time.
//!
//! The layout is `convertToJsonb`'s (src/backend/utils/adt/jsonb_util.c, PostgreSQL 15): the
//! varlena header, the container header (pair count | `JB_FOBJECT`), one `JEntry` per key and
//! then per value, then the keys' bytes and the values' bytes in that order. A `JEntry` holds
//! the type and the element's length, but every `JB_OFFSET_STRIDE`th (counted over keys and
//! values together) holds the end offset of its data instead (`JENTRY_HAS_OFF`). Keys are sorted
//! as jsonb keeps them (shorter first, then bytewise) and unique; the caller passes them so.

/// `JENTRY_OFFLENMASK`: the largest total length of an object's keys and values.
pub const MAX_DATA_BYTES: usize = 0x0FFF_FFFF;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISSTRING: u32 = 0x0000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_OFFSET_STRIDE: usize = 32;
/// The varlena header (4 bytes, written by the caller) and the container header.
const HEADERS: usize = 8;

/// A value of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    String(&'a [u8]),
    Bool(bool),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::String(s) => s.len(),
            Value::Bool(_) => 0,
        }
    }

    fn jentry_type(&self) -> u32 {
        match self {
            Value::String(_) => JENTRY_ISSTRING,
            Value::Bool(false) => JENTRY_ISBOOL_FALSE,
            Value::Bool(true) => JENTRY_ISBOOL_TRUE,
        }
    }
}

/// The order jsonb keeps an object's keys in (`lengthCompareJsonbString`).
pub fn key_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The bytes of the jsonb datum of `pairs` (varlena header included), or None when its keys and
/// values hold more than [`MAX_DATA_BYTES`] (PostgreSQL refuses such an object).
pub fn encoded_len(pairs: &[(&[u8], Value<'_>)]) -> Option<usize> {
    let data: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
    (data <= MAX_DATA_BYTES).then_some(HEADERS + 8 * pairs.len() + data)
}

/// Writes the jsonb datum of `pairs` into `out` (of [`encoded_len`] bytes), the varlena header
/// too: `set_varsize` is given `out`'s start and total length (4-byte header, the caller's).
pub fn encode(pairs: &[(&[u8], Value<'_>)], out: &mut [u8], set_varsize: impl FnOnce(&mut [u8])) {
    debug_assert!(pairs
        .windows(2)
        .all(|w| key_order(w[0].0, w[1].0) == std::cmp::Ordering::Less));
    let n = pairs.len();
    out[4..8].copy_from_slice(&(n as u32 | JB_FOBJECT).to_ne_bytes());
    let entries = HEADERS;
    let mut data = HEADERS + 8 * n;
    let mut total = 0usize; // bytes of keys and values so far
    let elements = pairs
        .iter()
        .map(|(k, _)| (JENTRY_ISSTRING, *k))
        .chain(pairs.iter().map(|(_, v)| {
            (
                v.jentry_type(),
                match v {
                    Value::String(s) => *s,
                    Value::Bool(_) => &[][..],
                },
            )
        }));
    for (j, (kind, bytes)) in elements.enumerate() {
        out[data..data + bytes.len()].copy_from_slice(bytes);
        data += bytes.len();
        total += bytes.len();
        let entry = if j % JB_OFFSET_STRIDE == 0 {
            kind | total as u32 | JENTRY_HAS_OFF
        } else {
            kind | bytes.len() as u32
        };
        out[entries + 4 * j..entries + 4 * j + 4].copy_from_slice(&entry.to_ne_bytes());
    }
    set_varsize(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(pairs: &[(&[u8], Value<'_>)]) -> Vec<u8> {
        let mut out = vec![0xAA; encoded_len(pairs).unwrap()];
        encode(pairs, &mut out, |o| {
            let len = o.len() as u32;
            o[..4].copy_from_slice(&(len << 2).to_ne_bytes()); // SET_VARSIZE_4B, little-endian
        });
        out
    }

    fn u32s(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn empty_object_is_its_headers() {
        assert_eq!(u32s(&encoded(&[])), vec![8 << 2, JB_FOBJECT]);
    }

    #[test]
    fn keys_then_values_first_entry_an_offset() {
        // {"city": "Köln", "consent_email": true} as convertJsonbObject lays it out: the
        // headers, four JEntries, then "city", "consent_email", "Köln" (a boolean has no data).
        let out = encoded(&[
            (b"city", Value::String("Köln".as_bytes())),
            (b"consent_email", Value::Bool(true)),
        ]);
        let head = u32s(&out[..24]);
        assert_eq!(head[0], (out.len() as u32) << 2);
        assert_eq!(head[1], 2 | JB_FOBJECT);
        assert_eq!(head[2], JENTRY_HAS_OFF | 4); // first key: its end offset
        assert_eq!(head[3], 13); // second key: its length
        assert_eq!(head[4], 5); // "Köln": 5 bytes
        assert_eq!(head[5], JENTRY_ISBOOL_TRUE);
        assert_eq!(&out[24..], "cityconsent_emailKöln".as_bytes());
        assert_eq!(out.len(), 8 + 16 + 4 + 13 + 5);
    }

    #[test]
    fn every_32nd_entry_holds_its_end_offset() {
        let keys: Vec<String> = (10..30).map(|i| format!("k{i}")).collect();
        let pairs: Vec<(&[u8], Value<'_>)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let v = if i % 3 == 0 {
                    Value::Bool(i % 2 == 0)
                } else {
                    Value::String(&b"abcdefg"[..i % 7])
                };
                (k.as_bytes(), v)
            })
            .collect();
        let out = encoded(&pairs);
        let entries = u32s(&out[8..8 + 8 * pairs.len()]);
        let mut end = 0u32;
        let lens: Vec<(u32, u32)> = pairs
            .iter()
            .map(|(k, _)| (JENTRY_ISSTRING, k.len() as u32))
            .chain(pairs.iter().map(|(_, v)| (v.jentry_type(), v.len() as u32)))
            .collect();
        for (j, (kind, len)) in lens.into_iter().enumerate() {
            end += len;
            let want = if j == 0 || j == 32 {
                kind | end | JENTRY_HAS_OFF
            } else {
                kind | len
            };
            assert_eq!(entries[j], want, "entry {j}");
        }
        assert_eq!(out.len(), 8 + 8 * pairs.len() + end as usize);
    }

    #[test]
    fn too_much_data_is_refused() {
        let big = vec![b'x'; MAX_DATA_BYTES];
        assert!(encoded_len(&[(b"a", Value::String(&big[..MAX_DATA_BYTES - 1]))]).is_some());
        assert!(encoded_len(&[(b"a", Value::String(&big))]).is_none());
    }

    #[test]
    fn key_order_is_length_then_bytes() {
        let mut keys: Vec<&[u8]> = vec![b"title", b"city", b"email", b"phone", b"consent_email"];
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(
            keys,
            vec![&b"city"[..], b"email", b"phone", b"title", b"consent_email"]
        );
    }
}
