//! Records as read, before `MatchRecord::prepare`, packed into one byte buffer (about 120 bytes
//! a record where a prepared record takes over a kilobyte): a streamed scoring keeps every
//! record from its one pass over them and makes each batch's records from here, instead of
//! reading them again by id (a record falls into about two batches at a million records).

use super::record::MatchRecord;

/// Packed records, each found by its place (the order they were pushed in).
#[derive(Default)]
pub struct PackedRecords {
    bytes: Vec<u8>,
    starts: Vec<u64>,
}

/// Bytes a record takes here besides its packed bytes (its start).
pub const PACKED_OVERHEAD: usize = 8;

fn put_len(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_len(bytes: &[u8], at: &mut usize) -> u64 {
    let (mut n, mut shift) = (0u64, 0);
    loop {
        let b = bytes[*at];
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

/// A text as its length + 1 (0: none) and its bytes.
fn put_text(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => put_len(out, 0),
        Some(s) => {
            put_len(out, s.len() as u64 + 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

fn get_text(bytes: &[u8], at: &mut usize) -> Option<String> {
    let n = get_len(bytes, at);
    if n == 0 {
        return None;
    }
    let n = (n - 1) as usize;
    let s = &bytes[*at..*at + n];
    *at += n;
    // Written from a `str`: valid UTF-8.
    Some(String::from_utf8_lossy(s).into_owned())
}

impl PackedRecords {
    /// Adds a record as read (its derived keys are not kept: `get` gives it unprepared).
    pub fn push(&mut self, r: &MatchRecord) {
        self.starts.push(self.bytes.len() as u64);
        let out = &mut self.bytes;
        out.extend_from_slice(&r.id.to_le_bytes());
        out.extend_from_slice(&r.source_id.to_le_bytes());
        put_len(out, r.phones.len() as u64);
        for p in &r.phones {
            put_text(out, Some(p));
        }
        for s in [
            &r.first_name,
            &r.last_name,
            &r.email,
            &r.email_key,
            &r.street,
            &r.house_number,
            &r.postcode,
            &r.city,
            &r.birth_date,
            &r.external_id,
            &r.customer_number,
        ] {
            put_text(out, s.as_deref());
        }
    }

    /// How many records are held.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The bytes held (packed records and their starts).
    pub fn bytes(&self) -> usize {
        self.bytes.len() + self.starts.len() * PACKED_OVERHEAD
    }

    /// The record at `place`, as it was pushed (unprepared).
    pub fn get(&self, place: usize) -> MatchRecord {
        let bytes = &self.bytes[..];
        let mut at = self.starts[place] as usize;
        let id = i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let source_id = i32::from_le_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        at += 12;
        let phones = (0..get_len(bytes, &mut at))
            .filter_map(|_| get_text(bytes, &mut at))
            .collect();
        let mut text = || get_text(bytes, &mut at);
        MatchRecord {
            id,
            source_id,
            phones,
            first_name: text(),
            last_name: text(),
            email: text(),
            email_key: text(),
            street: text(),
            house_number: text(),
            postcode: text(),
            city: text(),
            birth_date: text(),
            external_id: text(),
            customer_number: text(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: i64) -> MatchRecord {
        MatchRecord {
            id,
            source_id: 3,
            first_name: Some("Jörg".into()),
            last_name: (id % 2 == 0).then(|| "Müller-Lüdenscheidt".into()),
            email: Some("j.mueller@example.de".into()),
            email_key: Some("jmueller@example.de".into()),
            phones: (0..id.rem_euclid(3))
                .map(|i| format!("+4930123{i}"))
                .collect(),
            street: Some("x".repeat(200 + (id.unsigned_abs() % 50) as usize)),
            house_number: Some(String::new()),
            postcode: Some("10115".into()),
            city: None,
            birth_date: Some("1970-01-02".into()),
            external_id: None,
            customer_number: Some("K-1".into()),
            ..Default::default()
        }
    }

    /// Every field comes back as pushed, empty and long texts and none at all, and the record
    /// prepared from it is the one prepared from the original.
    #[test]
    fn packed_records_come_back_as_pushed() {
        let mut packed = PackedRecords::default();
        let records: Vec<MatchRecord> = (0..300).map(|i| raw(i * 7 - 500)).collect();
        for r in &records {
            packed.push(r);
        }
        packed.push(&MatchRecord::default());
        assert_eq!(packed.len(), 301);
        for (i, r) in records.iter().enumerate() {
            let got = packed.get(i);
            assert_eq!(format!("{got:?}"), format!("{r:?}"));
            assert_eq!(
                format!("{:?}", got.prepare()),
                format!("{:?}", r.clone().prepare())
            );
        }
        assert_eq!(
            format!("{:?}", packed.get(300)),
            format!("{:?}", MatchRecord::default())
        );
        assert!(packed.bytes() > 300 * 250 && packed.bytes() < 300 * 600);
    }
}
