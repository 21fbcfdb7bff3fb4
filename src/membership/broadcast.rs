//! Custom broadcasts: application items piggybacked on SWIM packets.
//!
//! Membership does not know what the items are. A [`BroadcastFilter`] supplied by the layer
//! above looks at each one and says whether it is news worth passing on; foca then includes
//! it in up to `max_transmissions` later packets. Items with the same id replace each other
//! in that backlog when they rank higher.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::NodeId;

/// Items received from others are passed on only while foca's backlog of custom broadcasts
/// holds fewer than this many. foca's backlog is a heap that every outgoing packet pops in
/// full when the next item does not fit, and every addition scans: after 10,000 records were
/// uploaded to a 50-agent mesh, each agent held them all in its backlog for many minutes,
/// and popping it took 40 % of the machine's CPU. Beyond the bound, the origin still pushes
/// its own items, and anti-entropy (started sooner, see `relays_skipped`) carries the rest.
/// In steady operation the backlog holds a few dozen items.
pub const MAX_RELAY_BACKLOG: usize = 256;

/// Identifies a broadcast in foca's backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastKey {
    /// What the broadcast is about; broadcasts with the same id replace each other.
    pub id: Vec<u8>,
    /// Higher ranks replace lower ones (bytewise order).
    pub rank: Vec<u8>,
}

impl foca::Invalidates for BroadcastKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.id == other.id && self.rank >= other.rank
    }
}

/// Decides which broadcasts to keep disseminating.
pub trait BroadcastFilter: Send + 'static {
    /// Called for each broadcast in a received packet, and for our own (`sender` is `None`).
    /// Returns a key to keep disseminating it, `None` to drop it. Must not fail: a bad item
    /// is dropped here so the rest of the packet is still read.
    fn receive(&mut self, data: &[u8], sender: Option<&NodeId>) -> Option<BroadcastKey>;
}

/// A filter that disseminates nothing received (and everything of our own).
pub struct NoBroadcasts;

impl BroadcastFilter for NoBroadcasts {
    fn receive(&mut self, data: &[u8], sender: Option<&NodeId>) -> Option<BroadcastKey> {
        sender.is_none().then(|| BroadcastKey {
            id: data.to_vec(),
            rank: Vec::new(),
        })
    }
}

/// Adapts a [`BroadcastFilter`] to foca, counting the items it accepts (foca's backlog
/// length cannot tell: a newer version of an item replaces the older one in place) and
/// bounding what it passes on ([`MAX_RELAY_BACKLOG`]).
pub(crate) struct Handler {
    pub filter: Box<dyn BroadcastFilter>,
    pub accepted: Arc<AtomicU64>,
    /// foca's custom broadcast backlog, as of the last call into foca.
    pub backlog: Arc<AtomicUsize>,
    /// Received items accepted but not passed on because the backlog was full.
    pub relays_skipped: Arc<AtomicU64>,
}

impl foca::BroadcastHandler<NodeId> for Handler {
    type Key = BroadcastKey;
    type Error = std::convert::Infallible;

    fn receive_item(&mut self, data: &[u8], sender: Option<&NodeId>) -> Result<Option<BroadcastKey>, Self::Error> {
        let key = self.filter.receive(data, sender);
        if key.is_some() && sender.is_some() && self.backlog.load(Ordering::Relaxed) >= MAX_RELAY_BACKLOG {
            self.relays_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        if key.is_some() {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use foca::BroadcastHandler;

    use super::*;
    use crate::identity::SecretKey;

    /// Accepts everything under its own bytes.
    struct All;

    impl BroadcastFilter for All {
        fn receive(&mut self, data: &[u8], _sender: Option<&NodeId>) -> Option<BroadcastKey> {
            Some(BroadcastKey {
                id: data.to_vec(),
                rank: Vec::new(),
            })
        }
    }

    #[test]
    fn received_items_are_not_passed_on_once_the_backlog_is_full_but_our_own_are() {
        let sender = NodeId {
            key: SecretKey::from_seed([3; 32]).public(),
            addr: "127.0.0.1:7946".parse().unwrap(),
            generation: 1,
            bump: 0,
        };
        let mut h = Handler {
            filter: Box::new(All),
            accepted: Arc::default(),
            backlog: Arc::default(),
            relays_skipped: Arc::default(),
        };
        h.backlog.store(MAX_RELAY_BACKLOG - 1, Ordering::Relaxed);
        assert!(h.receive_item(b"a", Some(&sender)).unwrap().is_some());
        h.backlog.store(MAX_RELAY_BACKLOG, Ordering::Relaxed);
        assert!(h.receive_item(b"b", Some(&sender)).unwrap().is_none());
        assert!(
            h.receive_item(b"c", None).unwrap().is_some(),
            "our own items always go out"
        );
        assert_eq!(h.relays_skipped.load(Ordering::Relaxed), 1);
        assert_eq!(h.accepted.load(Ordering::Relaxed), 2);
    }
}
