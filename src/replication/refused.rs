//! What this node refused from each peer, for reasons that do not change by themselves.
//!
//! A peer whose `[files]` accepts a signer or name this node does not holds items this node
//! refuses. Without memory, every anti-entropy round between the two finds the difference and
//! the peer sends those items again, forever. Remembering them per peer lets reconciliation
//! with that peer show them as held ([`super::reconcile::Overlay`]): after one round the two
//! are in sync again, and the disagreement is shown instead (a gauge per peer and reason, one
//! event when a peer starts offering such items).
//!
//! Pure bookkeeping: no I/O, no clock. Sessions record refusals as they verify items; the
//! replication task forgets a refusal once it holds that key at a rank as high; a change of
//! `[files]` forgets everything, so newly accepted items come in at the next round.

use std::collections::{BTreeMap, HashMap};

use super::index::Entry;
use super::item::Rank;
use super::policy::Reject;
use crate::identity::PublicKey;

/// Refused items remembered per peer. Beyond it new refusals from that peer are not
/// remembered (and cost their bytes every round): dropping old ones instead would make the
/// peer offer them again and churn the whole set each round.
pub const MAX_REFUSED_PER_PEER: usize = 256;
/// Peers whose refusals are remembered; a new one evicts the one that refused longest ago.
/// Also bounds the `peer` label of `shoal_peer_refused_items`.
pub const MAX_REFUSING_PEERS: usize = 64;

/// Whether a refusal for `reason` stays true until this node's policy changes. A future
/// version becomes acceptable as time passes; a stale one is not a disagreement; content that
/// does not match its hash says nothing about the item, only about that copy.
pub fn remembered(reason: Reject) -> bool {
    match reason {
        Reject::Malformed
        | Reject::BadName
        | Reject::OtherNetwork
        | Reject::UnknownFile
        | Reject::UnauthorizedSigner
        | Reject::BadSignature
        | Reject::TooLarge => true,
        Reject::FutureVersion | Reject::HashMismatch | Reject::Stale => false,
    }
}

/// One refused version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused {
    entry: Entry,
    reason: Reject,
}

#[derive(Debug, Default)]
struct PeerRefusals {
    items: BTreeMap<Vec<u8>, Refused>,
    /// When (in record calls) this peer last had an item refused: the eviction order.
    last: u64,
}

impl PeerRefusals {
    fn count(&self, reason: Reject) -> usize {
        self.items.values().filter(|r| r.reason == reason).count()
    }
}

/// Refusals per peer, bounded by [`MAX_REFUSED_PER_PEER`] and [`MAX_REFUSING_PEERS`].
#[derive(Debug, Default)]
pub struct Refusals {
    peers: HashMap<PublicKey, PeerRefusals>,
    calls: u64,
}

impl Refusals {
    /// Remembers that the version `entry` of `key` from `peer` was refused for `reason`
    /// (replacing an earlier refusal of that key from that peer). Returns true when `peer`
    /// had no remembered refusal for `reason` before: it starts offering such items.
    pub fn record(&mut self, peer: PublicKey, key: &[u8], entry: Entry, reason: Reject) -> bool {
        if !remembered(reason) {
            return false;
        }
        self.calls += 1;
        if !self.peers.contains_key(&peer)
            && self.peers.len() >= MAX_REFUSING_PEERS
            && let Some(oldest) = self.peers.iter().min_by_key(|(_, p)| p.last).map(|(k, _)| *k)
        {
            self.peers.remove(&oldest);
        }
        let p = self.peers.entry(peer).or_default();
        p.last = self.calls;
        let starts = p.count(reason) == 0;
        if p.items.len() >= MAX_REFUSED_PER_PEER && !p.items.contains_key(key) {
            return false;
        }
        p.items.insert(key.to_vec(), Refused { entry, reason });
        starts
    }

    /// The versions refused from `peer`, for [`super::reconcile::Overlay`].
    pub fn overlay(&self, peer: &PublicKey) -> BTreeMap<Vec<u8>, Entry> {
        self.peers
            .get(peer)
            .map(|p| p.items.iter().map(|(k, r)| (k.clone(), r.entry)).collect())
            .unwrap_or_default()
    }

    /// Forgets the refusal of `key` from `peer`: that peer no longer holds that version.
    pub fn forget(&mut self, peer: &PublicKey, key: &[u8]) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.items.remove(key);
            if p.items.is_empty() {
                self.peers.remove(peer);
            }
        }
    }

    /// This node now holds `key` at `rank`: refusals of versions up to it are moot.
    pub fn held(&mut self, key: &[u8], rank: &Rank) {
        if self.peers.is_empty() {
            return;
        }
        self.peers.retain(|_, p| {
            if p.items.get(key).is_some_and(|r| r.entry.rank <= *rank) {
                p.items.remove(key);
            }
            !p.items.is_empty()
        });
    }

    /// Forgets everything (this node's policy changed).
    pub fn clear(&mut self) {
        self.peers.clear();
    }

    /// Items currently refused, per peer and reason (only non-zero counts).
    pub fn counts(&self) -> Vec<(PublicKey, Reject, usize)> {
        let mut out = Vec::new();
        for (peer, p) in &self.peers {
            for reason in Reject::ALL {
                let n = p.count(reason);
                if n > 0 {
                    out.push((*peer, reason, n));
                }
            }
        }
        out.sort_by(|a, b| (a.0.as_bytes(), a.1).cmp(&(b.0.as_bytes(), b.1)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn entry(version: u64) -> Entry {
        Entry {
            rank: Rank {
                version,
                signer: [9; 32],
                hash: [0; 32],
                deleted: false,
            },
            digest: *blake3::hash(&version.to_be_bytes()).as_bytes(),
        }
    }

    fn peer() -> PublicKey {
        SecretKey::generate().public()
    }

    #[test]
    fn a_peer_starts_once_per_reason_and_again_after_its_refusals_ended() {
        let mut r = Refusals::default();
        let p = peer();
        assert!(r.record(p, b"f", entry(1), Reject::UnauthorizedSigner));
        assert!(
            !r.record(p, b"f", entry(2), Reject::UnauthorizedSigner),
            "a new version replaces"
        );
        assert!(!r.record(p, b"g", entry(1), Reject::UnauthorizedSigner));
        assert!(r.record(p, b"h", entry(1), Reject::UnknownFile), "another reason");
        assert!(!r.record(p, b"x", entry(1), Reject::Stale), "not remembered");
        assert!(!r.record(p, b"x", entry(1), Reject::FutureVersion), "not remembered");
        assert_eq!(
            r.counts(),
            [(p, Reject::UnknownFile, 1), (p, Reject::UnauthorizedSigner, 2)]
        );
        assert_eq!(r.overlay(&p)[b"f".as_slice()], entry(2));
        assert!(r.overlay(&peer()).is_empty());

        // Held at the refused rank or above: forgotten; below: kept.
        r.held(b"f", &entry(1).rank);
        assert_eq!(r.overlay(&p).len(), 3);
        r.held(b"f", &entry(2).rank);
        r.forget(&p, b"g");
        assert_eq!(r.counts(), [(p, Reject::UnknownFile, 1)]);
        assert!(
            r.record(p, b"f", entry(3), Reject::UnauthorizedSigner),
            "stopped, then again"
        );
        r.clear();
        assert!(r.counts().is_empty());
        assert!(
            r.record(p, b"f", entry(3), Reject::UnauthorizedSigner),
            "after a policy change"
        );
    }

    #[test]
    fn bounded_per_peer_and_in_peers() {
        let mut r = Refusals::default();
        let p = peer();
        for i in 0..MAX_REFUSED_PER_PEER + 10 {
            r.record(p, &(i as u32).to_be_bytes(), entry(1), Reject::UnknownFile);
        }
        assert_eq!(r.overlay(&p).len(), MAX_REFUSED_PER_PEER);
        assert!(
            r.overlay(&p).contains_key(0u32.to_be_bytes().as_slice()),
            "the first ones stay"
        );
        r.record(p, &0u32.to_be_bytes(), entry(2), Reject::UnknownFile);
        assert_eq!(
            r.overlay(&p)[0u32.to_be_bytes().as_slice()],
            entry(2),
            "replacing still works"
        );

        let others: Vec<PublicKey> = (0..MAX_REFUSING_PEERS).map(|_| peer()).collect();
        for o in &others {
            r.record(*o, b"f", entry(1), Reject::UnknownFile);
        }
        assert_eq!(r.peers.len(), MAX_REFUSING_PEERS);
        assert!(r.overlay(&p).is_empty(), "the peer that refused longest ago went");
        assert!(others.iter().all(|o| !r.overlay(o).is_empty()));
    }
}
