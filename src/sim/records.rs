//! Signed records in the simulation, and what stands in for the replication actor.
//!
//! The agent's broadcast filter ([`crate::replication`]'s `ItemFilter`) needs the replication
//! task's shared state (a sled store) and a tokio channel to that task, which decides and
//! commits. Neither fits thousands of nodes in one deterministic process, so each simulated
//! node has a [`Replica`]: an in-memory [`Index`] and item map, filled through
//! [`RecordFilter`], which runs the same checks as `ItemFilter` (decode with
//! [`MAX_BROADCAST_ITEM`], [`Policy::verify`], the stored-rank check, the seen-digest memory,
//! [`broadcast_key`]) and commits at once where the agent would hand the item to its actor.
//! Anti-entropy is the real [`reconcile`] exchange between two indexes, scheduled the way the
//! actor schedules it (periodically, and when this node joins or a member comes up), but
//! computed in one go with its items delivered after the session's round trips.
//! A later step moves the actor's decisions into a sans-IO core that replaces this.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::codec;
use crate::identity::{PublicKey, SecretKey};
use crate::membership::{BroadcastFilter, BroadcastKey, NodeId};
use crate::replication::index::{Digest, Entry, Index};
use crate::replication::item::{ItemKey, ItemMeta, RecordKind, SignedItem, WireItem};
use crate::replication::policy::{Policy, Verified};
use crate::replication::reconcile::{self, Range};
use crate::replication::records::NodeInfo;
use crate::replication::{MAX_BROADCAST_ITEM, broadcast_key, hlc};

/// Network id every simulated item carries.
pub const SIM_NETWORK: [u8; 32] = [0x5a; 32];
/// Wall-clock Unix milliseconds at virtual time zero (2026-01-01), for item versions and
/// the policy's clock-skew check.
pub const EPOCH_MS: u64 = 1_767_225_600_000;
/// Rounds after which a reconciliation session is cut off (the real one ends far sooner;
/// this only bounds a bug).
pub const MAX_SYNC_ROUNDS: u32 = 64;
/// Least time between anti-entropy sessions triggered by membership events (as the actor's
/// `TRIGGERED_SYNC_SPACING`).
pub const TRIGGERED_SYNC_SPACING: Duration = crate::replication::TRIGGERED_SYNC_SPACING;
/// Members that came up kept for a later session (as the actor's `MAX_WANTED_SYNCS`).
pub const MAX_WANTED_SYNCS: usize = crate::replication::MAX_WANTED_SYNCS;

/// The policy of every simulated node: node records only, the agent's defaults otherwise.
pub fn policy() -> Policy {
    Policy {
        network_id: SIM_NETWORK,
        files: BTreeMap::new(),
        max_file_size: 64 << 20,
        max_skew: Duration::from_secs(300),
    }
}

/// Wall-clock milliseconds at virtual time `now`.
pub fn wall_ms(now: Duration) -> u64 {
    EPOCH_MS + now.as_millis() as u64
}

/// A health record of `key`'s node with `content`, signed at virtual time `now`.
pub fn record(key: &SecretKey, content: &[u8], now: Duration) -> WireItem {
    node_record(key, RecordKind::Health, content, now)
}

/// A record of `kind` about `key`'s node with `content`, signed at virtual time `now`.
pub fn node_record(key: &SecretKey, kind: RecordKind, content: &[u8], now: Duration) -> WireItem {
    let signer = key.public();
    let meta = ItemMeta {
        network: SIM_NETWORK,
        key: ItemKey::Node { node: signer, kind },
        version: hlc::from_ms(wall_ms(now)),
        signer,
        hash: *blake3::hash(content).as_bytes(),
        size: content.len() as u64,
        deleted: false,
    };
    WireItem::new(&SignedItem::sign(meta, key), Some(content.to_vec()))
}

/// One node's items.
#[derive(Default)]
pub struct Store {
    /// What reconciliation reads.
    pub index: Index,
    /// The winning version of each key.
    pub items: BTreeMap<Vec<u8>, WireItem>,
    /// When each version (by digest) was committed here, virtual.
    pub committed_at: BTreeMap<Digest, Duration>,
    /// The current virtual time, set by the simulator before each call into the node.
    pub now: Duration,
    /// Items refused by the policy.
    pub rejected: u64,
    /// Nodes whose node record (`RecordKind::NodeInfo`) committed here since the simulator
    /// last looked: what the agent's discovery task hears from the replication task.
    pub node_infos: Vec<PublicKey>,
    seen: crate::replication::Seen,
}

impl Store {
    /// Commits `v` (as `wire`) if it outranks what is stored; returns whether it did.
    fn commit(&mut self, v: &Verified, wire: WireItem) -> bool {
        let key = v.item.meta.key.to_bytes();
        let rank = v.item.meta.rank();
        if self.index.get(&key).is_some_and(|e| e.rank >= rank) {
            return false;
        }
        let digest = v.item.digest();
        self.index.insert(key.clone(), Entry { rank, digest });
        self.items.insert(key, wire);
        self.committed_at.entry(digest).or_insert(self.now);
        if let ItemKey::Node {
            node,
            kind: RecordKind::NodeInfo,
        } = v.item.meta.key
        {
            self.node_infos.push(node);
        }
        true
    }

    /// The node record of `node`, if held.
    pub fn node_info(&self, node: PublicKey) -> Option<NodeInfo> {
        let key = ItemKey::Node {
            node,
            kind: RecordKind::NodeInfo,
        };
        let wire = self.items.get(&key.to_bytes())?;
        codec::decode_exact(wire.content.as_deref()?, MAX_BROADCAST_ITEM).ok()
    }

    /// Verifies and commits an item that arrived by anti-entropy.
    fn offer(&mut self, policy: &Policy, wire: WireItem) {
        match policy.verify(&wire, wall_ms(self.now)) {
            Ok(v) => {
                self.commit(&v, wire);
            }
            Err(_) => self.rejected += 1,
        }
    }

    fn remember(&mut self, digest: Digest) -> bool {
        self.seen.remember(digest)
    }
}

/// The broadcast filter of a simulated node: `ItemFilter`'s checks, committing directly
/// where the agent's filter hands the item to the replication task (see the module doc).
pub struct RecordFilter {
    store: Arc<Mutex<Store>>,
    policy: Arc<Policy>,
}

impl BroadcastFilter for RecordFilter {
    fn receive(&mut self, data: &[u8], sender: Option<&NodeId>) -> Option<BroadcastKey> {
        let mut store = self.store.lock().expect("sim: store lock");
        let wire: WireItem = match codec::decode_exact(data, MAX_BROADCAST_ITEM) {
            Ok(w) => w,
            Err(_) => {
                store.rejected += 1;
                return None;
            }
        };
        if sender.is_none() {
            // Our own item, already committed: disseminate it.
            return SignedItem::parse(&wire.meta, &wire.signature)
                .ok()
                .map(|i| broadcast_key(&i));
        }
        let digest = *blake3::hash(&wire.meta).as_bytes();
        if store.seen.contains(&digest) {
            return None;
        }
        let verified = match self.policy.verify(&wire, wall_ms(store.now)) {
            Ok(v) => v,
            Err(_) => {
                store.rejected += 1;
                return None;
            }
        };
        let key = verified.item.meta.key.to_bytes();
        if store
            .index
            .get(&key)
            .is_some_and(|e| e.rank >= verified.item.meta.rank())
        {
            return None;
        }
        if !store.remember(digest) {
            return None;
        }
        let relay = crate::replication::passed_on_at_once(&verified);
        let key = broadcast_key(&verified.item);
        store.commit(&verified, wire);
        relay.then_some(key)
    }
}

/// What a simulated node runs above membership. One kind today; the sans-IO replication
/// core of a later step becomes another variant, driven by the same engine.
pub enum Replica {
    /// The stand-in described in the module doc.
    StandIn {
        /// Its items, shared with its [`RecordFilter`] inside the membership core.
        store: Arc<Mutex<Store>>,
        /// When it last started a session triggered by a membership event.
        last_triggered: Option<Duration>,
        /// Members that came up while sessions were spaced, for later sessions.
        wanted: VecDeque<NodeId>,
    },
}

impl Replica {
    /// A replica with no items and the filter to give its membership core.
    pub fn new(policy: Arc<Policy>) -> (Replica, Box<dyn BroadcastFilter>) {
        let store = Arc::new(Mutex::new(Store::default()));
        let filter = RecordFilter {
            store: store.clone(),
            policy,
        };
        let replica = Replica::StandIn {
            store,
            last_triggered: None,
            wanted: VecDeque::new(),
        };
        (replica, Box::new(filter))
    }

    /// The items, locked.
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        match self {
            Replica::StandIn { store, .. } => store.lock().expect("sim: store lock"),
        }
    }

    /// Commits one of our own items; returns its broadcast bytes.
    pub fn publish(&self, policy: &Policy, wire: WireItem) -> Vec<u8> {
        let mut store = self.store();
        let v = policy
            .verify(&wire, wall_ms(store.now))
            .expect("sim: own record verifies");
        let data = codec::encode(&wire).expect("sim: record encodes");
        assert!(data.len() <= MAX_BROADCAST_ITEM, "sim: records are small");
        store.commit(&v, wire);
        data
    }

    /// Items received by anti-entropy.
    pub fn offer(&self, policy: &Policy, items: Vec<WireItem>) {
        let mut store = self.store();
        for wire in items {
            store.offer(policy, wire);
        }
    }

    /// Whether a session triggered at `now` may start (spacing), remembering `peer` for
    /// later if not. Returns the peer to sync with now, if any.
    pub fn trigger(&mut self, peer: Option<NodeId>, now: Duration) -> Option<Option<NodeId>> {
        match self {
            Replica::StandIn {
                last_triggered, wanted, ..
            } => {
                if last_triggered.is_some_and(|t| now < t + TRIGGERED_SYNC_SPACING) {
                    if let Some(id) = peer {
                        wanted.retain(|w| w.key != id.key);
                        if wanted.len() >= MAX_WANTED_SYNCS {
                            wanted.pop_front();
                        }
                        wanted.push_back(id);
                    }
                    return None;
                }
                *last_triggered = Some(now);
                Some(peer)
            }
        }
    }

    /// The next member waiting for a session, if spacing allows one at `now`.
    pub fn next_wanted(&mut self, now: Duration) -> Option<NodeId> {
        match self {
            Replica::StandIn {
                last_triggered, wanted, ..
            } => {
                if last_triggered.is_some_and(|t| now < t + TRIGGERED_SYNC_SPACING) {
                    return None;
                }
                let id = wanted.pop_front()?;
                *last_triggered = Some(now);
                Some(id)
            }
        }
    }

    /// Whether sessions are waiting.
    pub fn has_wanted(&self) -> bool {
        match self {
            Replica::StandIn { wanted, .. } => !wanted.is_empty(),
        }
    }
}

/// The outcome of one reconciliation session between an initiator and a responder.
#[derive(Debug, Default)]
pub struct Session {
    /// Messages exchanged (each one way).
    pub messages: u32,
    /// Bytes the initiator sent (ranges and items).
    pub initiator_bytes: usize,
    /// Bytes the responder sent.
    pub responder_bytes: usize,
    /// Items for the responder.
    pub to_responder: Vec<WireItem>,
    /// Items for the initiator.
    pub to_initiator: Vec<WireItem>,
}

fn ranges_len(ranges: &[Range]) -> usize {
    codec::encode(&ranges.to_vec()).map_or(0, |b| b.len())
}

fn item_len(wire: &WireItem) -> usize {
    codec::encode(wire).map_or(0, |b| b.len())
}

/// Runs the real range-based reconciliation between two stores, as the agent's session
/// would: ranges back and forth until neither side has more to say; each side sends what it
/// holds that the other lacks or holds an older version of.
pub fn reconcile(initiator: &Store, responder: &Store) -> Session {
    let mut s = Session::default();
    let mut msg = reconcile::open(&initiator.index);
    s.initiator_bytes += ranges_len(&msg);
    s.messages = 1;
    // Who receives `msg`: false = responder.
    let mut at_initiator = false;
    let mut to_responder = BTreeMap::new();
    let mut to_initiator = BTreeMap::new();
    while s.messages < MAX_SYNC_ROUNDS {
        let (me, other) = if at_initiator {
            (initiator, responder)
        } else {
            (responder, initiator)
        };
        let step = reconcile::step(&me.index, &msg);
        let (mine_out, theirs_out) = if at_initiator {
            (&mut to_responder, &mut to_initiator)
        } else {
            (&mut to_initiator, &mut to_responder)
        };
        for key in step.send {
            if let Some(w) = me.items.get(&key) {
                mine_out.insert(key, w.clone());
            }
        }
        for key in step.want {
            if let Some(w) = other.items.get(&key) {
                theirs_out.insert(key, w.clone());
            }
        }
        if step.ranges.is_empty() {
            break;
        }
        let len = ranges_len(&step.ranges);
        if at_initiator {
            s.initiator_bytes += len;
        } else {
            s.responder_bytes += len;
        }
        msg = step.ranges;
        at_initiator = !at_initiator;
        s.messages += 1;
    }
    s.to_responder = to_responder.into_values().collect();
    s.to_initiator = to_initiator.into_values().collect();
    s.initiator_bytes += s.to_responder.iter().map(item_len).sum::<usize>();
    s.responder_bytes += s.to_initiator.iter().map(item_len).sum::<usize>();
    s
}
