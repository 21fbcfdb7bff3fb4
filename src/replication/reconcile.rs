//! Range-based set reconciliation between two indexes.
//!
//! One side sends the fingerprint (XOR of digests) and count of the whole key space. The other
//! compares it with its own: equal ranges are done; a range holding few items on our side is
//! answered with its key list; a larger one is split into sub-ranges with their fingerprints.
//! A side that receives a key list knows exactly which keys differ in that range: it sends its
//! items for those keys and asks for the other side's. Rounds repeat until neither side has
//! anything left to say.
//!
//! In sync, the whole exchange is one fingerprint and an empty reply, whatever the number of
//! items. Out of sync, its size grows with the number of differences times the log of the
//! number of items. This module is pure: no I/O, no clock.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::index::{Digest, Index, KeyRange};

/// A range answered with its key list when we hold at most this many keys in it.
pub const KEY_LIST_THRESHOLD: u32 = 16;
/// Sub-ranges a mismatched range is split into.
pub const BRANCHING: usize = 16;

/// What one side says about a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeBody {
    /// XOR of the digests in the range and how many there are.
    Fingerprint {
        /// XOR of digests.
        fp: Digest,
        /// Number of items.
        count: u32,
    },
    /// Every key in the range with its digest.
    Keys(Vec<(Vec<u8>, Digest)>),
}

/// A range and what the sender holds in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// The key range.
    pub range: KeyRange,
    /// The sender's summary of it.
    pub body: RangeBody,
}

/// What to do after reading the other side's ranges.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Step {
    /// Ranges to send back.
    pub ranges: Vec<Range>,
    /// Keys whose items we should send (they lack them or hold another version).
    pub send: Vec<Vec<u8>>,
    /// Keys whose items we should ask for.
    pub want: Vec<Vec<u8>>,
}

impl Step {
    /// Whether there is nothing more to say.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.send.is_empty() && self.want.is_empty()
    }
}

fn summarize(index: &Index, range: KeyRange) -> Range {
    let (fp, count) = index.summary(&range);
    if count <= KEY_LIST_THRESHOLD {
        let keys = index.keys(&range);
        Range {
            range,
            body: RangeBody::Keys(keys),
        }
    } else {
        Range {
            range,
            body: RangeBody::Fingerprint { fp, count },
        }
    }
}

/// The opening message: the whole key space.
pub fn open(index: &Index) -> Vec<Range> {
    vec![summarize(index, KeyRange::all())]
}

/// Answers the other side's ranges from our index.
pub fn step(index: &Index, incoming: &[Range]) -> Step {
    let mut out = Step::default();
    for r in incoming {
        if !r.range.is_valid() {
            continue;
        }
        match &r.body {
            RangeBody::Fingerprint { fp, count } => {
                let (ours, our_count) = index.summary(&r.range);
                if ours == *fp && our_count == *count {
                    continue;
                }
                if our_count <= KEY_LIST_THRESHOLD {
                    out.ranges.push(Range {
                        range: r.range.clone(),
                        body: RangeBody::Keys(index.keys(&r.range)),
                    });
                } else {
                    for sub in index.split(&r.range, BRANCHING) {
                        out.ranges.push(summarize(index, sub));
                    }
                }
            }
            RangeBody::Keys(theirs) => {
                let ours: HashMap<Vec<u8>, Digest> = index.keys(&r.range).into_iter().collect();
                let mut seen = std::collections::HashSet::with_capacity(theirs.len());
                for (key, digest) in theirs {
                    // Keys outside the range are ignored rather than trusted.
                    let inside = *key >= r.range.lower && r.range.upper.as_ref().is_none_or(|u| key < u);
                    if !inside || !seen.insert(key) {
                        continue;
                    }
                    match ours.get(key) {
                        None => out.want.push(key.clone()),
                        Some(d) if d != digest => {
                            // Different versions: exchange both, each side keeps the winner.
                            out.want.push(key.clone());
                            out.send.push(key.clone());
                        }
                        Some(_) => {}
                    }
                }
                for key in ours.keys() {
                    if !seen.contains(key) {
                        out.send.push(key.clone());
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::index::Entry;
    use crate::replication::item::Rank;

    fn entry(seed: u64, version: u64) -> Entry {
        let mut b = seed.to_be_bytes().to_vec();
        b.extend_from_slice(&version.to_be_bytes());
        Entry {
            rank: Rank {
                version,
                signer: [0; 32],
                hash: [0; 32],
                deleted: false,
            },
            digest: *blake3::hash(&b).as_bytes(),
        }
    }

    fn key(n: u64) -> Vec<u8> {
        blake3::hash(&n.to_be_bytes()).as_bytes()[..8].to_vec()
    }

    /// Runs a whole exchange between two indexes, applying sent items as the newer version
    /// wins. Returns the number of rounds and of items transferred.
    fn sync(a: &mut Index, b: &mut Index) -> (usize, usize) {
        let mut msg = open(a);
        let (mut rounds, mut moved) = (0, 0);
        let mut sides = [a, b];
        let mut turn = 1;
        loop {
            rounds += 1;
            assert!(rounds < 64, "no convergence");
            let (me, other) = if turn == 1 {
                let [x, y] = &mut sides;
                (&mut **y, &mut **x)
            } else {
                let [x, y] = &mut sides;
                (&mut **x, &mut **y)
            };
            let s = step(me, &msg);
            // Deliver items both ways immediately (send: ours to them; want: theirs to us).
            for k in &s.send {
                let e = *me.get(k).unwrap();
                if other.get(k).is_none_or(|o| o.rank < e.rank) {
                    other.insert(k.clone(), e);
                    moved += 1;
                }
            }
            for k in &s.want {
                if let Some(e) = other.get(k).copied()
                    && me.get(k).is_none_or(|m| m.rank < e.rank)
                {
                    me.insert(k.clone(), e);
                    moved += 1;
                }
            }
            if s.ranges.is_empty() {
                return (rounds, moved);
            }
            msg = s.ranges;
            turn = 1 - turn;
        }
    }

    #[test]
    fn in_sync_costs_one_round_and_a_constant_message() {
        let mut a = Index::default();
        for n in 0..10_000 {
            a.insert(key(n), entry(n, 1));
        }
        let mut b = a.clone();
        let opening = open(&a);
        assert_eq!(opening.len(), 1);
        assert!(matches!(opening[0].body, RangeBody::Fingerprint { count: 10_000, .. }));
        assert!(crate::codec::encode(&opening).unwrap().len() < 64);
        assert!(step(&b, &opening).is_empty());
        assert_eq!(sync(&mut a, &mut b), (1, 0));
    }

    #[test]
    fn converges_with_few_rounds_and_only_the_differences() {
        let mut a = Index::default();
        let mut b = Index::default();
        for n in 0..10_000 {
            a.insert(key(n), entry(n, 1));
            b.insert(key(n), entry(n, 1));
        }
        for n in 0..5 {
            a.insert(key(20_000 + n), entry(20_000 + n, 1)); // only a
            b.insert(key(30_000 + n), entry(30_000 + n, 1)); // only b
            b.insert(key(n * 100), entry(n * 100, 2)); // b newer
        }
        let (rounds, moved) = sync(&mut a, &mut b);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(moved, 15, "exactly the differences moved");
        assert!(rounds <= 6, "{rounds} rounds");
    }

    #[test]
    fn newcomer_receives_everything() {
        let mut full = Index::default();
        for n in 0..10_000 {
            full.insert(key(n), entry(n, 1));
        }
        let mut empty = Index::default();
        let (rounds, moved) = sync(&mut empty, &mut full);
        assert_eq!(moved, 10_000);
        assert_eq!(empty.fingerprint(), full.fingerprint());
        assert!(rounds <= 4, "{rounds}");
    }

    #[test]
    fn hostile_ranges_are_ignored_not_trusted() {
        let mut idx = Index::default();
        idx.insert(vec![5], entry(5, 1));
        let bogus = vec![
            Range {
                range: KeyRange {
                    lower: vec![9],
                    upper: Some(vec![1]),
                },
                body: RangeBody::Fingerprint { fp: [0; 32], count: 3 },
            },
            Range {
                range: KeyRange {
                    lower: vec![0],
                    upper: Some(vec![3]),
                },
                body: RangeBody::Keys(vec![(vec![7], [1; 32]), (vec![1], [1; 32]), (vec![1], [1; 32])]),
            },
        ];
        let s = step(&idx, &bogus);
        assert_eq!(
            s.want,
            vec![vec![1]],
            "out-of-range key ignored, duplicate counted once"
        );
        assert!(s.send.is_empty());
    }
}
