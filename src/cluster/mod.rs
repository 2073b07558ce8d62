//! From scored pairs to persons and households — pure Rust, no pgrx types.
//!
//! `components` clusters records (union-find with must-link and cannot-link), `ids` keeps
//! person and household ids stable across runs and names the merges and splits, and
//! `survivorship` picks each field of the golden record.

pub mod components;
pub mod ids;
pub mod survivorship;

use std::collections::HashMap;

/// Groups items that share any key (a household: the same address, landline or family
/// mailbox). Returns per item its group number, or None for an item without keys; groups are
/// numbered in item order.
pub fn group_by_shared_keys(keys: &[Vec<String>]) -> Vec<Option<u32>> {
    let ids: Vec<i64> = (0..keys.len() as i64).collect();
    let mut first_holder: HashMap<&str, i64> = HashMap::new();
    let mut links = Vec::new();
    for (i, item_keys) in keys.iter().enumerate() {
        crate::interrupt::check_every(i, 1 << 16);
        for key in item_keys {
            match first_holder.get(key.as_str()) {
                Some(&j) => links.push((j, i as i64)),
                None => {
                    first_holder.insert(key, i as i64);
                }
            }
        }
    }
    let clustering = components::cluster(&ids, &links, &[], &[]);
    // Renumber, leaving out items with no key.
    let mut number: HashMap<u32, u32> = HashMap::new();
    keys.iter()
        .zip(&clustering.cluster_of)
        .map(|(k, &c)| {
            if k.is_empty() {
                None
            } else {
                let next = number.len() as u32;
                Some(*number.entry(c).or_insert(next))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn households_form_over_any_shared_key() {
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // 0 and 1 share an address, 1 and 2 a landline; 3 is alone; 4 has nothing to share.
        let groups = group_by_shared_keys(&[
            k(&["addr:10115|hauptstr|1"]),
            k(&["addr:10115|hauptstr|1", "phone:+4930123"]),
            k(&["phone:+4930123"]),
            k(&["addr:80331|marienplatz|2"]),
            k(&[]),
        ]);
        assert_eq!(groups, vec![Some(0), Some(0), Some(0), Some(1), None]);
    }
}
