//! A bounded memo of a pure function's results, per backend and thread: values that repeat
//! from row to row (names, streets, cities) are computed once. Because the functions are pure,
//! a kept result is the computed result; the memo only starts over when it is full.

use std::collections::HashMap;

pub struct Memo<V> {
    map: HashMap<Box<str>, V>,
    /// Values kept at most (then it starts over).
    entries: usize,
    /// The longest key kept; a longer one is computed every time.
    key_bytes: usize,
}

impl<V: Clone> Memo<V> {
    pub fn new(entries: usize, key_bytes: usize) -> Self {
        Memo {
            map: HashMap::new(),
            entries,
            key_bytes,
        }
    }

    /// How many results it keeps now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `compute(key)`, kept for the next call with the same key.
    pub fn get(&mut self, key: &str, compute: impl FnOnce(&str) -> V) -> V {
        if key.len() > self.key_bytes {
            return compute(key);
        }
        if let Some(value) = self.map.get(key) {
            return value.clone();
        }
        let value = compute(key);
        if self.map.len() >= self.entries {
            self.map.clear();
        }
        self.map.insert(key.into(), value.clone());
        value
    }
}

#[cfg(test)]
mod tests {
    use super::Memo;

    #[test]
    fn keeps_results_starts_over_when_full_and_skips_long_keys() {
        let calls = std::cell::Cell::new(0);
        let upper = |k: &str| {
            calls.set(calls.get() + 1);
            k.to_uppercase()
        };
        let mut memo = Memo::new(2, 3);
        assert_eq!(memo.get("ab", upper), "AB");
        assert_eq!(memo.get("ab", upper), "AB");
        assert_eq!(memo.get("cd", upper), "CD");
        assert_eq!(memo.get("ef", upper), "EF"); // full: started over
        assert_eq!(memo.get("ab", upper), "AB");
        assert_eq!(memo.get("long", upper), "LONG");
        assert_eq!(memo.get("long", upper), "LONG");
        assert_eq!(calls.get(), 6);
        assert!(memo.len() <= 2);
    }
}
