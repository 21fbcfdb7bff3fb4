//! Judges items arriving in SWIM broadcasts. Runs inside the membership task, so it is quick
//! and never fails: it verifies the item, drops what is stale or already seen, hands news to
//! the replication task (without waiting: a full channel drops the item, anti-entropy
//! repairs it) and tells foca whether to keep disseminating it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use tracing::debug;

use super::item::WireItem;
use super::policy::Reject;
use super::{Command, MAX_BROADCAST_ITEM, Origin, Shared};
use crate::codec;
use crate::membership::{BroadcastFilter, BroadcastKey, NodeId};

/// Digests of recently handled broadcasts remembered, so duplicates that arrive before the
/// replication task has committed the first copy are not passed on again.
pub(crate) const SEEN_CAPACITY: usize = 4096;

pub(crate) struct ItemFilter {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    seen: Seen,
}

impl ItemFilter {
    pub fn new(shared: Arc<Shared>, tx: mpsc::Sender<Command>) -> ItemFilter {
        ItemFilter {
            shared,
            tx,
            seen: Seen::default(),
        }
    }
}

/// The digests of the last [`SEEN_CAPACITY`] verified broadcast metas (the simulator's filter
/// keeps the same memory).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    seen: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Seen {
    /// Whether `digest` is remembered.
    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.seen.contains(digest)
    }

    /// Remembers `digest`, forgetting the oldest beyond capacity; false if it was known.
    pub fn remember(&mut self, digest: [u8; 32]) -> bool {
        if !self.seen.insert(digest) {
            return false;
        }
        self.order.push_back(digest);
        if self.order.len() > SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

/// Key under which foca keeps an item in its dissemination backlog.
pub(crate) fn broadcast_key(item: &super::item::SignedItem) -> BroadcastKey {
    let rank = item.meta.rank();
    let mut r = rank.version.to_be_bytes().to_vec();
    r.extend_from_slice(&rank.signer);
    r.extend_from_slice(&rank.hash);
    r.push(rank.deleted as u8);
    BroadcastKey {
        id: item.meta.key.to_bytes(),
        rank: r,
    }
}

impl BroadcastFilter for ItemFilter {
    fn receive(&mut self, data: &[u8], sender: Option<&NodeId>) -> Option<BroadcastKey> {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        let wire: WireItem = match codec::decode_exact(data, MAX_BROADCAST_ITEM) {
            Ok(w) => w,
            Err(e) => {
                match sender {
                    Some(s) => stats.reject_from_peer(Reject::Malformed, &s.key, "broadcast"),
                    None => stats.reject(Reject::Malformed),
                }
                debug!(error = %e, "undecodable broadcast item");
                return None;
            }
        };
        let Some(sender) = sender else {
            // Our own item, already committed: disseminate it.
            return super::item::SignedItem::parse(&wire.meta, &wire.signature)
                .ok()
                .map(|i| broadcast_key(&i));
        };
        // Each broadcast arrives several times (fanout × transmissions); a copy of a meta this
        // filter already accepted needs no signature check (the digest covers the signed meta,
        // and only verified digests are remembered).
        let digest = *blake3::hash(&wire.meta).as_bytes();
        if self.seen.contains(&digest) {
            return None;
        }
        let verified = match self.shared.policy().verify(&wire, crate::time::unix_ms()) {
            Ok(v) => v,
            Err(reason) => {
                let what = super::item::ItemMeta::decode(&wire.meta)
                    .map(|m| m.key.to_string())
                    .unwrap_or_default();
                stats.reject_from_peer(reason, &sender.key, &what);
                return None;
            }
        };
        let key = verified.item.meta.key.to_bytes();
        let rank = verified.item.meta.rank();
        if let Some(stored) = self.shared.index().get(&key).map(|e| e.rank) {
            if stored > rank {
                stats.reject_from_peer(Reject::Stale, &sender.key, &verified.item.meta.key.to_string());
            }
            if stored >= rank {
                return None;
            }
        }
        if !self.seen.remember(digest) {
            return None;
        }
        let relay = passed_on_at_once(&verified);
        let key = broadcast_key(&verified.item);
        let offer = Command::Offer {
            item: verified,
            holder: Some(sender.key),
            origin: Origin::Broadcast,
        };
        if self.tx.try_send(offer).is_err() {
            stats.items_dropped_busy.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // Items with their content travel on at once; announcements are passed on by the
        // replication task once it holds the body, so that every announcer can serve it.
        relay.then_some(key)
    }
}

/// Whether a broadcast item is complete as it arrives, so foca passes it on at once: it
/// carries its content, or it is a delete, which has none. Anything else is an announcement
/// the replication task passes on once it holds the body; a delete judged that way (it has no
/// body to fetch, so it was committed straight away and never announced) reached only the
/// origin's own gossip targets, and the rest of the mesh waited for anti-entropy.
pub(crate) fn passed_on_at_once(item: &super::policy::Verified) -> bool {
    item.content.is_some() || item.item.meta.deleted
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::identity::SecretKey;
    use crate::replication::item::{ItemMeta, SignedItem};
    use crate::replication::policy::Policy;

    const NETWORK: [u8; 32] = [7; 32];

    fn filter(signer: &SecretKey) -> (ItemFilter, mpsc::Receiver<Command>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let policy = Policy {
            network_id: NETWORK,
            files: [("app".to_string(), HashSet::from([signer.public()]))].into(),
            max_file_size: 1 << 20,
            max_skew: Duration::from_secs(300),
        };
        let (handle, _parts) = crate::replication::channel(store, policy);
        let (tx, rx) = mpsc::channel(8);
        (ItemFilter::new(handle.shared.clone(), tx), rx, dir)
    }

    fn item(signer: &SecretKey, content: &[u8]) -> SignedItem {
        let meta = ItemMeta::file(NETWORK, "app", content, signer.public(), crate::time::unix_ms() << 16);
        SignedItem::sign(meta, signer)
    }

    fn encoded(item: &SignedItem, content: &[u8], signature: Option<[u8; 64]>) -> Vec<u8> {
        let mut wire = WireItem::new(item, Some(content.to_vec()));
        if let Some(s) = signature {
            wire.signature = s.to_vec();
        }
        codec::encode(&wire).unwrap()
    }

    fn sender() -> NodeId {
        NodeId {
            key: SecretKey::generate().public(),
            addr: "127.0.0.1:1".parse().unwrap(),
            generation: 1,
            bump: 0,
        }
    }

    #[test]
    fn each_item_is_handed_on_once_and_copies_are_dropped_unverified() {
        let signer = SecretKey::generate();
        let (mut f, mut rx, _dir) = filter(&signer);
        let it = item(&signer, b"v1");
        let from = sender();
        assert!(f.receive(&encoded(&it, b"v1", None), Some(&from)).is_some());
        assert!(matches!(rx.try_recv(), Ok(Command::Offer { .. })));
        // A second copy, and a copy whose signature was mangled after the first was accepted:
        // neither is handed on; the mangled one is not even checked (its meta is known).
        assert!(f.receive(&encoded(&it, b"v1", None), Some(&from)).is_none());
        assert!(f.receive(&encoded(&it, b"v1", Some([0; 64])), Some(&from)).is_none());
        assert!(rx.try_recv().is_err());
        assert_eq!(f.shared.stats.rejected(Reject::BadSignature), 0);
    }

    #[test]
    fn a_forged_copy_first_does_not_shadow_the_real_one() {
        let signer = SecretKey::generate();
        let (mut f, mut rx, _dir) = filter(&signer);
        let it = item(&signer, b"v1");
        let from = sender();
        assert!(f.receive(&encoded(&it, b"v1", Some([1; 64])), Some(&from)).is_none());
        assert_eq!(f.shared.stats.rejected(Reject::BadSignature), 1);
        assert!(rx.try_recv().is_err());
        // The forged copy was not remembered: the genuine one still goes through.
        assert!(f.receive(&encoded(&it, b"v1", None), Some(&from)).is_some());
        assert!(matches!(rx.try_recv(), Ok(Command::Offer { .. })));
    }
}
