//! From scored pairs to persons and households — pure Rust, no pgrx types.
//!
//! `components` clusters records (union-find with must-link and cannot-link), `ids` keeps
//! person and household ids stable across runs and names the merges and splits, and
//! `survivorship` picks each field of the golden record.

pub mod batches;
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
    groups_with_keys(&clustering, |i| !keys[i].is_empty())
}

/// The groups of a clustering of items, numbered anew in item order, leaving out the items
/// without keys (`has_keys(i)` false: they are alone, in no group). 4 bytes an item.
pub fn groups_with_keys(
    clustering: &components::Clustering,
    has_keys: impl Fn(usize) -> bool,
) -> Vec<Option<u32>> {
    let mut number = vec![u32::MAX; clustering.clusters as usize];
    let mut next = 0u32;
    clustering
        .cluster_of
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if !has_keys(i) {
                return None;
            }
            let slot = &mut number[c as usize];
            if *slot == u32::MAX {
                *slot = next;
                next += 1;
            }
            Some(*slot)
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

    #[test]
    fn links_to_the_smallest_holder_group_as_links_to_the_first() {
        // What a streamed resolve does: every holder of a key linked to its smallest holder
        // (PostgreSQL's min over the key), clustered from those links alone.
        let k = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let keys = vec![
            k(&[]),
            k(&["a", "b"]),
            k(&["c"]),
            k(&["b", "d"]),
            k(&["e"]),
            k(&["d", "c"]),
            k(&[]),
            k(&["e"]),
            k(&["f"]),
        ];
        let mut smallest: HashMap<&str, u32> = HashMap::new();
        for (i, item) in keys.iter().enumerate() {
            for key in item {
                smallest.entry(key.as_str()).or_insert(i as u32);
            }
        }
        let mut c = components::Clusterer::new(keys.len());
        for (i, item) in keys.iter().enumerate() {
            for key in item {
                if smallest[key.as_str()] != i as u32 {
                    c.must_link(smallest[key.as_str()], i as u32);
                }
            }
        }
        let streamed = groups_with_keys(&c.finish(), |i| !keys[i].is_empty());
        assert_eq!(streamed, group_by_shared_keys(&keys));
        assert_eq!(
            streamed,
            vec![
                None,
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(0),
                None,
                Some(1),
                Some(2)
            ]
        );
    }
}
