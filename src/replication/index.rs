//! The in-memory index of committed items: key bytes → (rank, digest), kept sorted, with an
//! XOR fingerprint of all digests maintained incrementally.
//!
//! Reconciliation asks it for fingerprints and key lists of key ranges. Only the replication
//! task writes it; others read it under a short lock.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::item::Rank;

/// blake3 of an item's signed meta bytes: identifies one version of one item.
pub type Digest = [u8; 32];

/// What the index knows about one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its rank.
    pub rank: Rank,
    /// Its digest.
    pub digest: Digest,
}

/// A half-open range of item keys, `[lower, upper)`; no upper bound means "to the end".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    /// Inclusive lower bound.
    pub lower: Vec<u8>,
    /// Exclusive upper bound.
    pub upper: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange {
            lower: Vec::new(),
            upper: None,
        }
    }

    /// The range as bounds for `BTreeMap::range`.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            Bound::Included(self.lower.as_slice()),
            match &self.upper {
                Some(u) => Bound::Excluded(u.as_slice()),
                None => Bound::Unbounded,
            },
        )
    }

    /// Whether the range is well formed (lower below upper).
    pub fn is_valid(&self) -> bool {
        self.upper.as_ref().is_none_or(|u| self.lower < *u)
    }

    /// Whether `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.lower.as_slice() && self.upper.as_ref().is_none_or(|u| key < u.as_slice())
    }
}

/// Splits `range` into up to `parts` contiguous sub-ranges holding about equal numbers of
/// `keys` (sorted, all inside `range`). The sub-ranges cover `range` exactly.
pub fn split_at_quantiles(keys: &[&[u8]], range: &KeyRange, parts: usize) -> Vec<KeyRange> {
    let parts = parts.clamp(1, keys.len().max(1));
    let mut bounds: Vec<Vec<u8>> = (1..parts).map(|i| keys[i * keys.len() / parts].to_vec()).collect();
    bounds.dedup();
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut lower = range.lower.clone();
    for b in bounds {
        if b > lower {
            out.push(KeyRange {
                lower: std::mem::replace(&mut lower, b.clone()),
                upper: Some(b),
            });
        }
    }
    out.push(KeyRange {
        lower,
        upper: range.upper.clone(),
    });
    out
}

fn xor(acc: &mut Digest, d: &Digest) {
    for (a, b) in acc.iter_mut().zip(d) {
        *a ^= b;
    }
}

/// The sorted index.
#[derive(Debug, Default, Clone)]
pub struct Index {
    map: BTreeMap<Vec<u8>, Entry>,
    fingerprint: Digest,
}

impl Index {
    /// Inserts or replaces the entry for `key`, returning the previous one.
    pub fn insert(&mut self, key: Vec<u8>, entry: Entry) -> Option<Entry> {
        xor(&mut self.fingerprint, &entry.digest);
        let old = self.map.insert(key, entry);
        if let Some(old) = &old {
            xor(&mut self.fingerprint, &old.digest);
        }
        old
    }

    /// The entry for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// XOR of all digests.
    pub fn fingerprint(&self) -> Digest {
        self.fingerprint
    }

    /// The highest version of any item.
    pub fn max_version(&self) -> u64 {
        self.map.values().map(|e| e.rank.version).max().unwrap_or(0)
    }

    /// Fingerprint and count of a range.
    pub fn summary(&self, range: &KeyRange) -> (Digest, u32) {
        if range.lower.is_empty() && range.upper.is_none() {
            return (self.fingerprint, self.map.len() as u32);
        }
        let mut fp = [0u8; 32];
        let mut count = 0u32;
        for (_, e) in self.map.range::<[u8], _>(range.bounds()) {
            xor(&mut fp, &e.digest);
            count += 1;
        }
        (fp, count)
    }

    /// Keys and digests of a range, in order.
    pub fn keys(&self, range: &KeyRange) -> Vec<(Vec<u8>, Digest)> {
        self.map
            .range::<[u8], _>(range.bounds())
            .map(|(k, e)| (k.clone(), e.digest))
            .collect()
    }

    /// Splits `range` into up to `parts` contiguous sub-ranges holding about equal numbers of
    /// our keys. The sub-ranges cover `range` exactly.
    pub fn split(&self, range: &KeyRange, parts: usize) -> Vec<KeyRange> {
        let keys: Vec<&[u8]> = self
            .map
            .range::<[u8], _>(range.bounds())
            .map(|(k, _)| k.as_slice())
            .collect();
        split_at_quantiles(&keys, range, parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            rank: Rank {
                version: n as u64,
                signer: [0; 32],
                hash: [0; 32],
                deleted: false,
            },
            digest: *blake3::hash(&[n]).as_bytes(),
        }
    }

    #[test]
    fn fingerprint_is_order_independent_and_tracks_replacement() {
        let mut a = Index::default();
        let mut b = Index::default();
        for n in 0..50u8 {
            a.insert(vec![n], entry(n));
        }
        for n in (0..50u8).rev() {
            b.insert(vec![n], entry(n));
        }
        assert_eq!(a.fingerprint(), b.fingerprint());
        a.insert(vec![7], entry(99));
        assert_ne!(a.fingerprint(), b.fingerprint());
        a.insert(vec![7], entry(7));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.summary(&KeyRange::all()), (b.fingerprint(), 50));
    }

    #[test]
    fn split_covers_the_range_exactly() {
        let mut idx = Index::default();
        for n in 0..100u8 {
            idx.insert(vec![n], entry(n));
        }
        let range = KeyRange {
            lower: vec![10],
            upper: Some(vec![90]),
        };
        let parts = idx.split(&range, 16);
        assert!(parts.len() > 1 && parts.len() <= 16);
        assert_eq!(parts.first().unwrap().lower, range.lower);
        assert_eq!(parts.last().unwrap().upper, range.upper);
        for w in parts.windows(2) {
            assert_eq!(w[0].upper.as_ref(), Some(&w[1].lower));
        }
        let total: u32 = parts.iter().map(|p| idx.summary(p).1).sum();
        assert_eq!(total, idx.summary(&range).1);
        assert!(parts.iter().all(KeyRange::is_valid));
    }
}
