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

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::index::{Digest, Entry, Index, KeyRange, split_at_quantiles};

/// A range answered with its key list when we hold at most this many keys in it.
pub const KEY_LIST_THRESHOLD: u32 = 16;
/// Sub-ranges a mismatched range is split into.
pub const BRANCHING: usize = 16;
/// Bytes of a whole session between two sides in sync that each hold more than
/// [`KEY_LIST_THRESHOLD`] items, both directions, frame headers included: the opening
/// fingerprint of the whole key space and an empty reply (55 bytes as encoded today, the
/// count's varint growing with the number of items).
pub const IN_SYNC_SESSION_BYTES: usize = 64;

/// What reconciliation reads of one side's items: an [`Index`], or an [`Overlay`] of it.
pub trait View {
    /// XOR of the digests in `range` and how many there are.
    fn summary(&self, range: &KeyRange) -> (Digest, u32);
    /// Keys and digests in `range`, in order.
    fn keys(&self, range: &KeyRange) -> Vec<(Vec<u8>, Digest)>;
    /// Splits `range` into up to `parts` sub-ranges holding about equal numbers of keys,
    /// covering it exactly.
    fn split(&self, range: &KeyRange, parts: usize) -> Vec<KeyRange>;
    /// Whether the version shown for `key` is one this side holds and can send.
    fn holds(&self, key: &[u8]) -> bool;
}

impl View for Index {
    fn summary(&self, range: &KeyRange) -> (Digest, u32) {
        Index::summary(self, range)
    }
    fn keys(&self, range: &KeyRange) -> Vec<(Vec<u8>, Digest)> {
        Index::keys(self, range)
    }
    fn split(&self, range: &KeyRange, parts: usize) -> Vec<KeyRange> {
        Index::split(self, range, parts)
    }
    fn holds(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }
}

/// Our index as shown to one peer: as if we also held the versions we refused from that peer
/// (policy refusals that do not change by themselves), where they rank above what we hold.
/// Two sides whose only difference is what one of them refuses then look in sync, and the
/// refused items are not offered again every round. An overlaid key is never sent (we do not
/// hold that version; what we hold, if anything, is older than what the peer has).
pub struct Overlay<'a> {
    index: &'a Index,
    refused: &'a BTreeMap<Vec<u8>, Entry>,
}

impl<'a> Overlay<'a> {
    /// `index` with the versions in `refused` laid over it.
    pub fn new(index: &'a Index, refused: &'a BTreeMap<Vec<u8>, Entry>) -> Overlay<'a> {
        Overlay { index, refused }
    }

    /// The refused versions in `range` that rank above what we hold.
    fn shown<'s>(&'s self, range: &KeyRange) -> impl Iterator<Item = (&'s Vec<u8>, &'s Entry)> + 's {
        self.refused
            .range::<[u8], _>(range.bounds())
            .filter(|(k, e)| self.index.get(k).is_none_or(|held| held.rank < e.rank))
    }
}

fn xor(acc: &mut Digest, d: &Digest) {
    for (a, b) in acc.iter_mut().zip(d) {
        *a ^= b;
    }
}

impl View for Overlay<'_> {
    fn summary(&self, range: &KeyRange) -> (Digest, u32) {
        let (mut fp, mut count) = self.index.summary(range);
        for (k, e) in self.shown(range) {
            match self.index.get(k) {
                Some(held) => xor(&mut fp, &held.digest),
                None => count += 1,
            }
            xor(&mut fp, &e.digest);
        }
        (fp, count)
    }

    fn keys(&self, range: &KeyRange) -> Vec<(Vec<u8>, Digest)> {
        let mut keys = self.index.keys(range);
        let mut shown = self.shown(range).peekable();
        if shown.peek().is_none() {
            return keys;
        }
        let mut merged: BTreeMap<Vec<u8>, Digest> = keys.drain(..).collect();
        merged.extend(shown.map(|(k, e)| (k.clone(), e.digest)));
        merged.into_iter().collect()
    }

    fn split(&self, range: &KeyRange, parts: usize) -> Vec<KeyRange> {
        if self.shown(range).next().is_none() {
            return self.index.split(range, parts);
        }
        let keys = self.keys(range);
        let keys: Vec<&[u8]> = keys.iter().map(|(k, _)| k.as_slice()).collect();
        split_at_quantiles(&keys, range, parts)
    }

    fn holds(&self, key: &[u8]) -> bool {
        let Some(held) = self.index.get(key) else {
            return false;
        };
        self.refused.get(key).is_none_or(|e| e.rank <= held.rank)
    }
}

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
    /// Keys we show without holding them (overlaid) that the other side listed a range
    /// without: it no longer holds the version we show, so that claim is out of date.
    pub unheld: Vec<Vec<u8>>,
}

impl Step {
    /// Whether there is nothing more to say.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.send.is_empty() && self.want.is_empty()
    }
}

fn summarize(view: &impl View, range: KeyRange) -> Range {
    let (fp, count) = view.summary(&range);
    if count <= KEY_LIST_THRESHOLD {
        let keys = view.keys(&range);
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
pub fn open(view: &impl View) -> Vec<Range> {
    vec![summarize(view, KeyRange::all())]
}

/// Answers the other side's ranges from our view.
pub fn step(view: &impl View, incoming: &[Range]) -> Step {
    let mut out = Step::default();
    for r in incoming {
        if !r.range.is_valid() {
            continue;
        }
        match &r.body {
            RangeBody::Fingerprint { fp, count } => {
                let (ours, our_count) = view.summary(&r.range);
                if ours == *fp && our_count == *count {
                    continue;
                }
                if our_count <= KEY_LIST_THRESHOLD {
                    out.ranges.push(Range {
                        range: r.range.clone(),
                        body: RangeBody::Keys(view.keys(&r.range)),
                    });
                } else {
                    for sub in view.split(&r.range, BRANCHING) {
                        out.ranges.push(summarize(view, sub));
                    }
                }
            }
            RangeBody::Keys(theirs) => {
                let ours: HashMap<Vec<u8>, Digest> = view.keys(&r.range).into_iter().collect();
                let mut seen = std::collections::HashSet::with_capacity(theirs.len());
                for (key, digest) in theirs {
                    // Keys outside the range are ignored rather than trusted.
                    if !r.range.contains(key) || !seen.insert(key) {
                        continue;
                    }
                    match ours.get(key) {
                        None => out.want.push(key.clone()),
                        Some(d) if d != digest => {
                            // Different versions: exchange both, each side keeps the winner.
                            out.want.push(key.clone());
                            if view.holds(key) {
                                out.send.push(key.clone());
                            }
                        }
                        Some(_) => {}
                    }
                }
                for key in ours.keys() {
                    if seen.contains(key) {
                        continue;
                    }
                    if view.holds(key) {
                        out.send.push(key.clone());
                    } else {
                        out.unheld.push(key.clone());
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
    fn an_in_sync_session_fits_the_documented_bound() {
        let mut idx = Index::default();
        for n in 0..100_000 {
            idx.insert(key(n), entry(n, 1));
        }
        let opening = crate::rpc::Request::Reconcile(crate::replication::protocol::Turn {
            ranges: open(&idx),
            ..Default::default()
        });
        let reply = crate::replication::protocol::Turn::default();
        let header = crate::replication::protocol::FRAME_HEADER;
        let bytes =
            crate::codec::encode(&opening).unwrap().len() + crate::codec::encode(&reply).unwrap().len() + 2 * header;
        assert!(bytes <= IN_SYNC_SESSION_BYTES, "{bytes}");
    }

    /// A node of the simulated mesh: its index, what it refuses, and what it refused from
    /// each peer (what the replication task keeps per peer).
    struct Node {
        index: Index,
        refuses: fn(&[u8], &Entry) -> bool,
        refused: HashMap<usize, BTreeMap<Vec<u8>, Entry>>,
    }

    impl Node {
        fn new(index: Index, refuses: fn(&[u8], &Entry) -> bool) -> Node {
            Node {
                index,
                refuses,
                refused: HashMap::new(),
            }
        }

        /// Takes `e` for `k` from peer `from`: refused (remembered), stale, or the new winner.
        fn take(&mut self, from: usize, k: &[u8], e: Entry) -> bool {
            if self.index.get(k).is_some_and(|held| held.rank >= e.rank) {
                return false;
            }
            if (self.refuses)(k, &e) {
                self.refused.entry(from).or_default().insert(k.to_vec(), e);
                return false;
            }
            self.index.insert(k.to_vec(), e);
            // What the replication task does on commit: a refusal now outranked is forgotten.
            for refused in self.refused.values_mut() {
                refused.retain(|rk, re| rk.as_slice() != k || re.rank > e.rank);
            }
            true
        }
    }

    /// One session, `nodes[i]` opening to `nodes[j]`, each showing the other its overlay.
    /// Items are delivered at once, and only items a side holds are ever sent (a want for
    /// an overlaid key is answered with nothing). Returns whether the first exchange found
    /// both in sync, and the number of items sent.
    fn session(nodes: &mut [Node], i: usize, j: usize) -> (bool, usize) {
        let empty = BTreeMap::new();
        let view_msg = |nodes: &[Node], me: usize, peer: usize, msg: &[Range]| {
            let n = &nodes[me];
            let view = Overlay::new(&n.index, n.refused.get(&peer).unwrap_or(&empty));
            step(&view, msg)
        };
        let mut msg = {
            let n = &nodes[i];
            open(&Overlay::new(&n.index, n.refused.get(&j).unwrap_or(&empty)))
        };
        let (mut me, mut peer) = (j, i);
        let mut sent = 0;
        for round in 0.. {
            assert!(round < 64, "no convergence");
            let s = view_msg(nodes, me, peer, &msg);
            if round == 0 && s.is_empty() {
                return (true, 0);
            }
            for k in &s.unheld {
                nodes[me].refused.get_mut(&peer).unwrap().remove(k);
            }
            for k in &s.send {
                let e = *nodes[me].index.get(k).expect("only held items are sent");
                sent += 1;
                nodes[peer].take(me, k, e);
            }
            for k in &s.want {
                // The other side answers from its own overlay: nothing for an overlaid key,
                // and a want that comes without the wanter's own version says it no longer
                // holds the version shown (what the session does).
                let p = &nodes[peer];
                let view = Overlay::new(&p.index, p.refused.get(&me).unwrap_or(&empty));
                if view.holds(k) {
                    let e = *p.index.get(k).unwrap();
                    sent += 1;
                    nodes[me].take(peer, k, e);
                } else if !s.send.contains(k)
                    && let Some(r) = nodes[peer].refused.get_mut(&me)
                {
                    r.remove(k);
                }
            }
            if s.ranges.is_empty() {
                return (false, sent);
            }
            msg = s.ranges;
            std::mem::swap(&mut me, &mut peer);
        }
        unreachable!()
    }

    fn signed_by(signer: u8, e: Entry) -> Entry {
        Entry {
            rank: Rank {
                signer: [signer; 32],
                ..e.rank
            },
            ..e
        }
    }

    /// Refuses items signed by key 9 (the key only node 0 accepts).
    fn refuses_key_9(_: &[u8], e: &Entry) -> bool {
        e.rank.signer == [9; 32]
    }

    fn mesh(shared: u64) -> Index {
        let mut idx = Index::default();
        for n in 0..shared {
            idx.insert(key(n), entry(n, 1));
        }
        idx
    }

    #[test]
    fn three_nodes_one_accepting_an_extra_key_reach_the_in_sync_exchange() {
        for shared in [5, 500] {
            // A (0) holds f signed by key 9, which B (1) and C (2) refuse.
            let mut a = mesh(shared);
            a.insert(key(7_000), signed_by(9, entry(7_000, 1)));
            let mut nodes = [
                Node::new(a, |_, _| false),
                Node::new(mesh(shared), refuses_key_9),
                Node::new(mesh(shared), refuses_key_9),
            ];
            assert_eq!(session(&mut nodes, 1, 2), (true, 0), "B and C agree");
            assert!(!session(&mut nodes, 0, 1).0, "first round: B refuses f");
            assert_eq!(session(&mut nodes, 0, 1), (true, 0), "A to B");
            assert_eq!(session(&mut nodes, 1, 0), (true, 0), "B to A");
            assert!(!session(&mut nodes, 2, 0).0, "first round: C refuses f");
            assert_eq!(session(&mut nodes, 0, 2), (true, 0));
            assert_eq!(session(&mut nodes, 2, 0), (true, 0));
            assert_eq!(session(&mut nodes, 2, 1), (true, 0), "B and C still agree");
            assert_eq!(session(&mut nodes, 1, 2), (true, 0));
            assert!(nodes[1].index.get(&key(7_000)).is_none() && nodes[2].index.get(&key(7_000)).is_none());

            // A new item everyone accepts still flows through every pair.
            nodes[0].index.insert(key(8_000), entry(8_000, 1));
            assert_eq!(session(&mut nodes, 1, 0), (false, 1));
            assert_eq!(session(&mut nodes, 2, 1), (false, 1));
            assert_eq!(session(&mut nodes, 0, 2), (true, 0));
        }
    }

    #[test]
    fn a_refused_newer_version_and_a_stale_older_one_converge() {
        // B (1) holds f@1 by an accepted signer; A (0) holds f@2 signed by key 9: B refuses
        // A's version, A drops B's as stale.
        for shared in [5, 500] {
            let f = key(7_000);
            let mut a = mesh(shared);
            a.insert(f.clone(), signed_by(9, entry(7_000, 2)));
            let mut b = mesh(shared);
            b.insert(f.clone(), entry(7_000, 1));
            let mut nodes = [Node::new(a, |_, _| false), Node::new(b, refuses_key_9)];
            assert!(!session(&mut nodes, 1, 0).0);
            assert_eq!(session(&mut nodes, 1, 0), (true, 0));
            assert_eq!(session(&mut nodes, 0, 1), (true, 0));
            assert_eq!(nodes[1].index.get(&f).unwrap().rank.version, 1, "B keeps its own");

            // A newer version B accepts replaces both, and the refusal is forgotten.
            nodes[0].index.insert(f.clone(), entry(7_000, 3));
            assert_eq!(session(&mut nodes, 0, 1), (false, 1));
            assert!(nodes[1].refused[&0].is_empty());
            assert_eq!(session(&mut nodes, 1, 0), (true, 0));
        }
    }

    #[test]
    fn a_want_for_an_overlaid_key_gets_nothing_and_a_new_version_replaces_the_refusal() {
        let f = key(7_000);
        let mut a = mesh(5);
        a.insert(f.clone(), signed_by(9, entry(7_000, 2)));
        let mut b = mesh(5);
        b.insert(f.clone(), entry(7_000, 1));
        let mut nodes = [Node::new(a, |_, _| false), Node::new(b, refuses_key_9)];
        session(&mut nodes, 0, 1);
        // A moves on to f@3, still signed by key 9: A's key list differs from B's overlay,
        // so A asks B for f. B shows f@2, which it does not hold: it sends nothing (not its
        // own older f@1) and refuses A's f@3 in place of f@2.
        nodes[0].index.insert(f.clone(), signed_by(9, entry(7_000, 3)));
        let view = Overlay::new(&nodes[1].index, &nodes[1].refused[&0]);
        assert!(!view.holds(&f));
        let s = step(&view, &open(&nodes[0].index));
        assert!(s.send.is_empty() && s.want == [f.clone()], "{s:?}");
        let (in_sync, sent) = session(&mut nodes, 0, 1);
        assert!(!in_sync);
        assert_eq!(sent, 1, "only A's f@3 travelled");
        assert_eq!(nodes[1].refused[&0][&f].rank.version, 3);
        assert_eq!(session(&mut nodes, 1, 0), (true, 0));
    }

    #[test]
    fn an_overlaid_key_the_peer_no_longer_lists_is_dropped() {
        let f = key(7_000);
        let mut a = mesh(5);
        a.insert(f.clone(), signed_by(9, entry(7_000, 2)));
        let mut nodes = [Node::new(a, |_, _| false), Node::new(mesh(5), refuses_key_9)];
        session(&mut nodes, 0, 1);
        assert_eq!(nodes[1].refused[&0].len(), 1);
        // A loses f (a damaged body is forgotten at start): B's claim is out of date.
        nodes[0].index = mesh(5);
        assert!(!session(&mut nodes, 1, 0).0);
        assert!(nodes[1].refused[&0].is_empty());
        assert_eq!(session(&mut nodes, 1, 0), (true, 0));
        assert_eq!(session(&mut nodes, 0, 1), (true, 0));
    }

    #[test]
    fn the_overlay_counts_and_splits_like_an_index_holding_those_versions() {
        let mut idx = mesh(300);
        let mut refused = BTreeMap::new();
        // Lacked, above what we hold, and below what we hold (not shown).
        refused.insert(key(5_000), signed_by(9, entry(5_000, 1)));
        refused.insert(key(3), signed_by(9, entry(3, 2)));
        idx.insert(key(4), entry(4, 5));
        refused.insert(key(4), signed_by(9, entry(4, 3)));
        let mut expected = idx.clone();
        expected.insert(key(5_000), signed_by(9, entry(5_000, 1)));
        expected.insert(key(3), signed_by(9, entry(3, 2)));
        let view = Overlay::new(&idx, &refused);
        for range in std::iter::once(KeyRange::all()).chain(expected.split(&KeyRange::all(), 7)) {
            assert_eq!(View::summary(&view, &range), expected.summary(&range));
            assert_eq!(View::keys(&view, &range), expected.keys(&range));
            assert_eq!(View::split(&view, &range, 16), expected.split(&range, 16));
        }
        assert!(!view.holds(&key(3)) && !view.holds(&key(5_000)));
        assert!(view.holds(&key(4)) && view.holds(&key(10)));
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
