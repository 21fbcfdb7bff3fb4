//! Custom broadcasts: application items piggybacked on SWIM packets.
//!
//! Membership does not know what the items are. A [`BroadcastFilter`] supplied by the layer
//! above looks at each one and says whether it is news worth passing on; foca then includes
//! it in up to `max_transmissions` later packets. Items with the same id replace each other
//! in that backlog when they rank higher.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::NodeId;

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

/// Adapts a [`BroadcastFilter`] to foca, counting the items it accepts. (foca's backlog
/// length cannot tell: a newer version of an item replaces the older one in place.)
pub(crate) struct Handler {
    pub filter: Box<dyn BroadcastFilter>,
    pub accepted: Arc<AtomicU64>,
}

impl foca::BroadcastHandler<NodeId> for Handler {
    type Key = BroadcastKey;
    type Error = std::convert::Infallible;

    fn receive_item(&mut self, data: &[u8], sender: Option<&NodeId>) -> Result<Option<BroadcastKey>, Self::Error> {
        let key = self.filter.receive(data, sender);
        if key.is_some() {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(key)
    }
}
