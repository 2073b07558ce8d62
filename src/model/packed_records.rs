//! Prepared records kept in a compact form: their text fields and derived keys as bytes in
//! large chunks (about 150-250 bytes a record instead of some 1.2 kB of `MatchRecord` with its
//! many small allocations), turned back into the same prepared `MatchRecord` on demand without
//! preparing it again (what is cheap to derive, the character counts and nickname groups, is
//! derived again; the transliterations and phonetic codes are kept). A pass over all records can
//! keep them so that scattered pairs are compared later without reading any record again.

use crate::compare::nicknames;
use crate::compare::similarity::CharCounts;

use super::record::{phone_bit, Generation, MatchRecord};

/// Bytes of the first chunk and of the largest: a record starts and ends in one chunk (a larger
/// record gets its own), so the store grows without copying what it holds; each chunk twice the
/// last up to 4 MB, so that a few records take little.
const FIRST_CHUNK: usize = 16 << 10;
const CHUNK: usize = 4 << 20;

/// A length's code: 0 for none, 1 for "the same as the field it derives from", else the length
/// plus 2, in one byte below 255 or 255 and four bytes.
const NONE: u32 = 0;
const SAME: u32 = 1;

#[derive(Default)]
pub struct PackedRecords {
    chunks: Vec<Vec<u8>>,
    /// Each record's start: chunk index in the high 32 bits, offset in the low.
    starts: Vec<u64>,
    /// The record being packed.
    scratch: Vec<u8>,
}

impl PackedRecords {
    /// Adds a prepared record; its place is the number of records added before it.
    pub fn push(&mut self, r: &MatchRecord) {
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        encode(r, &mut out);
        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.len() + out.len() <= c.capacity());
        if !fits {
            let size = self
                .chunks
                .last()
                .map_or(FIRST_CHUNK, |c| (c.capacity() * 2).min(CHUNK));
            self.chunks.push(Vec::with_capacity(size.max(out.len())));
        }
        let chunk = self.chunks.len() - 1;
        let c = &mut self.chunks[chunk];
        self.starts.push(((chunk as u64) << 32) | c.len() as u64);
        c.extend_from_slice(&out);
        self.scratch = out;
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Bytes held (the chunks as allocated and the starts).
    pub fn bytes(&self) -> u64 {
        let chunks: usize = self.chunks.iter().map(Vec::capacity).sum();
        (chunks + self.starts.capacity() * 8) as u64
    }

    /// The record at `place`, as it was pushed.
    pub fn get(&self, place: usize) -> MatchRecord {
        let mut r = MatchRecord::default();
        self.get_into(place, &mut r);
        r
    }

    /// [`Self::get`] written over `r`, reusing its strings.
    pub fn get_into(&self, place: usize, r: &mut MatchRecord) {
        let s = self.starts[place];
        let chunk = &self.chunks[(s >> 32) as usize];
        decode_into(&chunk[(s & 0xffff_ffff) as usize..], r);
    }

    /// The places of `ids` (ascending) that are held, through `by_id` (of [`Self::by_id`]).
    pub fn places_of<'a>(
        by_id: &'a [(i64, u32)],
        ids: &'a [i64],
    ) -> impl Iterator<Item = u32> + 'a {
        ids.iter().filter_map(|&id| {
            by_id
                .binary_search_by_key(&id, |&(i, _)| i)
                .ok()
                .map(|at| by_id[at].1)
        })
    }

    /// The places of the records by id: (id, place), ascending (see [`Self::find`]).
    pub fn by_id(&self) -> Vec<(i64, u32)> {
        let mut ids: Vec<(i64, u32)> = (0..self.len())
            .map(|p| {
                let s = self.starts[p];
                let chunk = &self.chunks[(s >> 32) as usize];
                let at = (s & 0xffff_ffff) as usize;
                let id = i64::from_le_bytes(chunk[at..at + 8].try_into().expect("8 bytes"));
                (id, p as u32)
            })
            .collect();
        ids.sort_unstable();
        ids
    }

    /// The record of `id` through `by_id` (of [`Self::by_id`]).
    pub fn find(&self, by_id: &[(i64, u32)], id: i64) -> Option<MatchRecord> {
        let at = by_id.binary_search_by_key(&id, |&(i, _)| i).ok()?;
        Some(self.get(by_id[at].1 as usize))
    }
}

fn put_len(out: &mut Vec<u8>, code: u32) {
    if code < 255 {
        out.push(code as u8);
    } else {
        out.push(255);
        out.extend_from_slice(&code.to_le_bytes());
    }
}

fn put(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => put_len(out, NONE),
        Some(s) => {
            put_len(out, s.len() as u32 + 2);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// `v`, or SAME when it equals `base` (a transliteration equal to its name).
fn put_like(out: &mut Vec<u8>, v: Option<&str>, base: Option<&str>) {
    if v.is_some() && v == base {
        put_len(out, SAME);
    } else {
        put(out, v);
    }
}

fn encode(r: &MatchRecord, out: &mut Vec<u8>) {
    let d = &r.derived;
    out.extend_from_slice(&r.id.to_le_bytes());
    out.extend_from_slice(&r.source_id.to_le_bytes());
    let generation = match d.generation {
        None => 0u8,
        Some(Generation::Senior) => 1,
        Some(Generation::Junior) => 2,
    };
    out.push(
        u8::from(d.shared_mailbox) | generation << 1 | u8::from(d.birth_digits.is_some()) << 3,
    );
    if let Some(digits) = d.birth_digits {
        out.extend_from_slice(&digits);
    }
    put(out, r.first_name.as_deref());
    put(out, r.last_name.as_deref());
    put(out, r.email.as_deref());
    put_like(out, r.email_key.as_deref(), r.email.as_deref());
    put_len(out, r.phones.len() as u32);
    for p in &r.phones {
        put(out, Some(p));
    }
    put(out, r.street.as_deref());
    put(out, r.house_number.as_deref());
    put(out, r.postcode.as_deref());
    put(out, r.city.as_deref());
    put(out, r.birth_date.as_deref());
    put(out, r.external_id.as_deref());
    put(out, r.customer_number.as_deref());
    put_like(out, d.first_translit.as_deref(), r.first_name.as_deref());
    put_like(out, d.last_translit.as_deref(), r.last_name.as_deref());
    put(out, d.first_phonetic.as_deref());
    put(out, d.last_phonetic.as_deref());
    put(out, d.name_sorted.as_deref());
    put(out, d.name_phonetic_sorted.as_deref());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

/// What a length code says.
enum Text<'a> {
    None,
    Same,
    Some(&'a str),
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        s
    }

    fn len(&mut self) -> u32 {
        let b = self.take(1)[0];
        if b < 255 {
            u32::from(b)
        } else {
            u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
        }
    }

    fn text(&mut self) -> Text<'a> {
        match self.len() {
            NONE => Text::None,
            SAME => Text::Same,
            // Written from a `&str`: valid UTF-8.
            code => Text::Some(std::str::from_utf8(self.take((code - 2) as usize)).unwrap_or("")),
        }
    }

    fn get(&mut self) -> Option<&'a str> {
        match self.text() {
            Text::Some(s) => Some(s),
            _ => None,
        }
    }
}

/// `field` set to `v`, in the string it holds when it holds one.
fn set(field: &mut Option<String>, v: Option<&str>) {
    match (field.as_mut(), v) {
        (Some(s), Some(v)) => {
            s.clear();
            s.push_str(v);
        }
        (None, Some(v)) => *field = Some(v.to_owned()),
        (_, None) => *field = None,
    }
}

/// `field` set to what `t` says, `base` for "the same".
fn set_like(field: &mut Option<String>, t: Text<'_>, base: &Option<String>) {
    match t {
        Text::None => *field = None,
        Text::Same => set(field, base.as_deref()),
        Text::Some(v) => set(field, Some(v)),
    }
}

/// The record in `bytes` written over `r` (whose strings are reused where they can be).
fn decode_into(bytes: &[u8], r: &mut MatchRecord) {
    let mut b = Reader { bytes, at: 0 };
    r.id = i64::from_le_bytes(b.take(8).try_into().expect("8 bytes"));
    r.source_id = i32::from_le_bytes(b.take(4).try_into().expect("4 bytes"));
    let flags = b.take(1)[0];
    let generation = match (flags >> 1) & 3 {
        1 => Some(Generation::Senior),
        2 => Some(Generation::Junior),
        _ => None,
    };
    let birth_digits = (flags & 8 != 0).then(|| <[u8; 8]>::try_from(b.take(8)).expect("8 bytes"));
    set(&mut r.first_name, b.get());
    set(&mut r.last_name, b.get());
    set(&mut r.email, b.get());
    set_like(&mut r.email_key, b.text(), &r.email);
    let phones = b.len() as usize;
    r.phones.truncate(phones);
    for i in 0..phones {
        let v = b.get().unwrap_or_default();
        match r.phones.get_mut(i) {
            Some(p) => {
                p.clear();
                p.push_str(v);
            }
            None => r.phones.push(v.to_owned()),
        }
    }
    set(&mut r.street, b.get());
    set(&mut r.house_number, b.get());
    set(&mut r.postcode, b.get());
    set(&mut r.city, b.get());
    set(&mut r.birth_date, b.get());
    set(&mut r.external_id, b.get());
    set(&mut r.customer_number, b.get());
    let d = &mut r.derived;
    set_like(&mut d.first_translit, b.text(), &r.first_name);
    set_like(&mut d.last_translit, b.text(), &r.last_name);
    set(&mut d.first_phonetic, b.get());
    set(&mut d.last_phonetic, b.get());
    set(&mut d.name_sorted, b.get());
    set(&mut d.name_phonetic_sorted, b.get());
    d.birth_digits = birth_digits;
    d.shared_mailbox = flags & 1 != 0;
    d.generation = generation;
    // As `MatchRecord::prepare` derives them.
    d.first_counts = d.first_translit.as_deref().and_then(CharCounts::of);
    d.last_counts = d.last_translit.as_deref().and_then(CharCounts::of);
    d.street_counts = r.street.as_deref().and_then(CharCounts::of);
    d.first_groups = d
        .first_translit
        .as_deref()
        .map_or(&[][..], nicknames::groups);
    d.last_groups = d
        .last_translit
        .as_deref()
        .map_or(&[][..], nicknames::groups);
    d.phone_bits = r.phones.iter().fold(0, |bits, p| bits | phone_bit(p));
}

/// Records unpacked for a while (a batch of pairs to compare, of holders to judge), the
/// allocations of the previous batch's reused.
#[derive(Default)]
pub struct Unpacked {
    records: Vec<MatchRecord>,
}

impl Unpacked {
    /// The records at `places` of `packed`, in that order, on `workers`.
    pub fn fill(
        &mut self,
        packed: &PackedRecords,
        places: impl IntoIterator<Item = u32>,
        workers: crate::parallel::Workers,
    ) -> &[MatchRecord] {
        let mut n = 0;
        for p in places {
            match self.records.get_mut(n) {
                Some(r) => r.id = i64::from(p),
                None => self.records.push(MatchRecord {
                    id: i64::from(p),
                    ..Default::default()
                }),
            }
            n += 1;
        }
        self.records.truncate(n);
        // Each record's place in its id until it is unpacked over it.
        crate::parallel::each_mut(&mut self.records, workers, |r| {
            packed.get_into(r.id as usize, r)
        });
        &self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: i64) -> MatchRecord {
        let firsts = ["Anna", "Jürgen", "hans jun", "", "Ωμέγα", "Maria-Theresa"];
        let lasts = ["Müller", "schmidt sen", "von der Heide", "Meier"];
        let n = i as usize;
        MatchRecord {
            id: i * 7 - 3,
            source_id: (i % 3) as i32 + 1,
            first_name: (n % 5 != 3).then(|| firsts[n % firsts.len()].to_string()),
            last_name: (n % 7 != 2).then(|| lasts[n % lasts.len()].to_string()),
            email: (n % 2 == 1).then(|| format!("familie.mueller{n}@x.de")),
            email_key: (n % 2 == 1).then(|| {
                if n % 4 == 1 {
                    format!("familie.mueller{n}@x.de")
                } else {
                    format!("mueller{n}@x.de")
                }
            }),
            phones: (0..n % 3).map(|k| format!("+4930{k}{n}")).collect(),
            street: (n % 3 != 1).then(|| "Hauptstraße".repeat(1 + n % 40)),
            house_number: Some(format!("{}a", n % 9)),
            postcode: Some("10115".into()),
            city: (n % 6 != 1).then(|| "Berlin".into()),
            birth_date: (n % 3 == 2).then(|| format!("19{:02}-03-1{}", n % 90, n % 9)),
            external_id: (n % 5 == 4).then(|| format!("X{n}")),
            customer_number: (n % 4 == 1).then(|| format!("C-{n}")),
            ..Default::default()
        }
        .prepare()
    }

    /// Every field and derived key comes back as prepared, for records of all shapes.
    #[test]
    fn packed_records_come_back_as_they_were_prepared() {
        let records: Vec<MatchRecord> = (0..5000).map(record).collect();
        let mut packed = PackedRecords::default();
        for r in &records {
            packed.push(r);
        }
        assert_eq!(packed.len(), records.len());
        assert!(records.iter().any(|r| r.derived.generation.is_some()));
        assert!(records.iter().any(|r| r.derived.shared_mailbox));
        assert!(records
            .iter()
            .any(|r| r.street.as_ref().is_some_and(|s| s.len() > 300)));
        for (p, r) in records.iter().enumerate() {
            assert_eq!(format!("{:?}", packed.get(p)), format!("{r:?}"));
        }
        let by_id = packed.by_id();
        for r in &records {
            assert_eq!(
                format!("{:?}", packed.find(&by_id, r.id).unwrap()),
                format!("{r:?}")
            );
        }
        assert!(packed.find(&by_id, 1_000_000).is_none());
        // Unpacked over the records of other places, in batches of other sizes.
        let mut unpacked = Unpacked::default();
        let workers = crate::parallel::Workers {
            threads: 2,
            ..Default::default()
        };
        for (start, step) in [(0, 7), (3, 2), (1, 5), (4000, 1), (2, 3)] {
            let places: Vec<u32> = (start..records.len() as u32).step_by(step).collect();
            let got = unpacked.fill(&packed, places.iter().copied(), workers);
            assert_eq!(got.len(), places.len());
            for (r, &p) in got.iter().zip(&places) {
                assert_eq!(format!("{r:?}"), format!("{:?}", records[p as usize]));
            }
        }
        let ids: Vec<i64> = vec![records[5].id, 999_999, records[9].id];
        let places: Vec<u32> = PackedRecords::places_of(&by_id, &ids).collect();
        assert_eq!(places, vec![5, 9]);
    }
}
