//! The membership protocol without sockets or clocks: foca plus the bookkeeping shoal needs
//! (a member view with state-change times, names learned from certificates, join state).
//!
//! Callers pass the current time in; outputs (datagrams to send) are collected and drained.
//! The async actor in `mod.rs` drives it; the simulation tests drive it with virtual time.

use std::collections::{BTreeMap, HashMap};
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use foca::{Foca, OwnedNotification, Runtime, State, Timer};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::broadcast::{BroadcastFilter, Handler};
use super::compact;
use super::id::{FocaCodec, NodeId};
use super::scale;
use super::timers::TimerQueue;
use crate::identity::PublicKey;

mod repair;
mod view;

/// Largest SWIM packet. QUIC datagrams on a fresh path carry at least ~1160 bytes of payload
/// (1200-byte minimum MTU less headers); one byte goes to the channel tag.
pub const MAX_SWIM_PACKET: usize = 1150;
/// Cluster size foca's dissemination parameters are tuned for.
const EXPECTED_CLUSTER_SIZE: u32 = 64;
/// How often foca gossips pending updates, and to how many members. Only while something is
/// pending, and each item still goes out at most `max_transmissions` times: a short interval
/// spends the same packets sooner, so stragglers missed by the first wave catch up quickly.
const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);
const GOSSIP_FANOUT: usize = 3;
/// Members believed down that a node announces itself to right after renewing its identity.
const ANNOUNCE_AFTER_RENEWAL: usize = 3;
/// Members a node announces itself to right after joining. A reply (foca's feed) lists only as
/// many members as fit in one packet (about 20); a few replies from different members teach a
/// newcomer the whole mesh in one round trip instead of over many probe periods.
const ANNOUNCE_AFTER_JOIN: usize = 4;
/// Members believed down that a node announces itself to every `reconnect_interval`.
pub(super) const RECONNECT_FANOUT: usize = 2;
/// With at most this many members believed down, a node announces itself to all of them every
/// `reconnect_interval`, not just `RECONNECT_FANOUT`: a member that missed every copy of another's
/// renewal holds its old identity down and learns the new one only from a reply, and picking 2
/// of a handful of long-dead members left one such pair apart for 55 s after a heal at 200
/// nodes in the simulator. At most this many dial attempts per interval.
pub(super) const RECONNECT_ALL_UP_TO: usize = 8;
/// How often a member asks a random peer for members it may not know.
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(30);

/// Protocol timing, from `[cluster]`.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Probe period.
    pub probe_period: Duration,
    /// Direct probe timeout.
    pub probe_timeout: Duration,
    /// Suspicion timeout.
    pub suspect_timeout: Duration,
    /// How long down members are remembered.
    pub forget_down_after: Duration,
    /// How often to try reaching members believed down (heals partitions).
    pub reconnect_interval: Duration,
}

/// A member's state as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed probes; may still refute.
    Suspect,
    /// Declared down (or left).
    Down,
}

impl From<State> for MemberState {
    fn from(s: State) -> Self {
        match s {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down => MemberState::Down,
        }
    }
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Current identity.
    pub id: NodeId,
    /// Name from its certificate, once we have talked to it. Shared, so that the snapshot
    /// published on every membership change copies no strings.
    pub name: Option<Arc<str>>,
    /// State.
    pub state: MemberState,
    /// Wall-clock time (Unix ms) of the last state or identity change.
    pub since_ms: u64,
    /// foca's incarnation (bumped to refute suspicion).
    pub swim_incarnation: u16,
    /// Whether this is the local node.
    pub local: bool,
}

/// The current time, as the caller sees it.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic time since an arbitrary start.
    pub mono: Duration,
    /// Wall-clock Unix milliseconds, for display only.
    pub wall_ms: u64,
}

/// Errors from handling input.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// foca rejected the input or failed to act.
    #[error("swim: {0}")]
    Foca(#[from] foca::Error),
    /// The packet's header does not decode.
    #[error("undecodable SWIM header: {0}")]
    Header(crate::codec::CodecError),
    /// The compact header does not decode.
    #[error(transparent)]
    Compact(#[from] compact::CompactError),
    /// The packet claims to come from another node than the authenticated sender.
    #[error("packet claims sender {claimed:?} but came from {actual}")]
    Spoofed {
        /// Identity in the header.
        claimed: NodeId,
        /// Key of the connection.
        actual: PublicKey,
    },
}

#[derive(Default)]
struct Effects {
    now: Duration,
    sends: Vec<(NodeId, Bytes)>,
    timers: Vec<(Duration, Timer<NodeId>)>,
    notes: Vec<OwnedNotification<NodeId>>,
}

impl Runtime<NodeId> for Effects {
    fn notify(&mut self, n: foca::Notification<'_, NodeId>) {
        self.notes.push(n.to_owned());
    }
    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.sends.push((to, Bytes::copy_from_slice(data)));
    }
    fn submit_after(&mut self, timer: Timer<NodeId>, after: Duration) {
        self.timers.push((self.now + after, timer));
    }
}

type SwimFoca = Foca<NodeId, FocaCodec, SmallRng, Handler>;

/// A change other layers react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    /// This node joined (or rejoined) a cluster.
    Joined,
    /// Another member became alive (new, back, or under a new identity).
    Up(NodeId),
}

/// Membership state machine of one node.
pub struct Core {
    foca: SwimFoca,
    fx: Effects,
    timers: TimerQueue,
    names: HashMap<PublicKey, Arc<str>>,
    local_name: Arc<str>,
    local_since_ms: u64,
    view: BTreeMap<PublicKey, MemberView>,
    joined: bool,
    leaving: bool,
    version: u64,
    events: Vec<MemberEvent>,
    /// When each currently suspect member became suspect (monotonic).
    suspect_since: BTreeMap<PublicKey, Duration>,
    /// Suspicions older than this are resolved by the watchdog (see `expire_suspicions`).
    suspicion_limit: Duration,
    /// foca's settings as last given to it; transmissions and the suspicion timeout follow
    /// the mesh's size (see [`scale`]).
    foca_config: foca::Config,
    /// `[cluster] suspect_timeout`: the suspicion timeout of a mesh of up to 10 members.
    configured_suspect: Duration,
    probe_period: Duration,
    /// The member count `foca_config` was scaled for.
    scaled_for: usize,
    /// Broadcast items the filter accepted so far.
    accepted: Arc<AtomicU64>,
    /// foca's custom broadcast backlog, for the handler's relay bound.
    backlog: Arc<AtomicUsize>,
    /// Received items not passed on because the backlog was full.
    relays_skipped: Arc<AtomicU64>,
    /// When this node next announces itself to members believed down. The first time is at
    /// a random point of the interval, so nodes started together do not all reach out in the
    /// same instant and then stay silent for the rest of the interval (a partition that heals
    /// just after that instant would wait a whole interval).
    next_reconnect: Duration,
    reconnect_every: Duration,
    /// Wall time of the last reconnect tick (members declared down since are tried first).
    last_reconnect_ms: u64,
    /// This node's own random choices (foca has its own), seeded for reproducible simulations.
    rng: SmallRng,
    /// Each foca member's identity, state and incarnation as of the last view refresh, in
    /// foca's order. Most inputs change none of them, and comparing in order is far cheaper
    /// than looking every member up in `view`: at 1,000 members the lookups were most of the
    /// cost of handling a datagram.
    last_seen: Vec<(NodeId, State, u16)>,
    /// Entries of `last_seen` that are earlier identities of this node.
    own_in_foca: usize,
}

impl Core {
    /// A node with identity `id`; `seed` makes its random choices reproducible; `filter`
    /// judges custom broadcasts.
    pub fn new(
        id: NodeId,
        name: String,
        config: &CoreConfig,
        seed: u64,
        now: Now,
        filter: Box<dyn BroadcastFilter>,
    ) -> Core {
        let mut fc = foca::Config::new_lan(NonZeroU32::new(EXPECTED_CLUSTER_SIZE).expect("nonzero"));
        fc.probe_period = config.probe_period;
        fc.probe_rtt = config.probe_timeout;
        fc.suspect_to_down_after = config.suspect_timeout;
        fc.remove_down_after = Some(config.forget_down_after);
        fc.max_packet_size = NonZeroUsize::new(MAX_SWIM_PACKET).expect("nonzero");
        fc.max_transmissions = NonZeroU8::new(scale::BASE_TRANSMISSIONS).expect("nonzero");
        fc.notify_down_members = true;
        fc.periodic_gossip = Some(foca::PeriodicParams {
            frequency: GOSSIP_INTERVAL,
            num_members: NonZeroUsize::new(GOSSIP_FANOUT).expect("nonzero"),
        });
        fc.periodic_announce = Some(foca::PeriodicParams {
            frequency: ANNOUNCE_INTERVAL,
            num_members: NonZeroUsize::new(1).expect("nonzero"),
        });
        // Reconnection to down members is scheduled here rather than by foca, whose timer
        // starts in step on nodes started together (see `next_reconnect`).
        fc.periodic_announce_to_down_members = None;
        let accepted = Arc::new(AtomicU64::new(0));
        let backlog = Arc::new(AtomicUsize::new(0));
        let relays_skipped = Arc::new(AtomicU64::new(0));
        let handler = Handler {
            filter,
            accepted: accepted.clone(),
            backlog: backlog.clone(),
            relays_skipped: relays_skipped.clone(),
        };
        let foca_config = fc.clone();
        let foca = Foca::with_custom_broadcast(id, fc, SmallRng::seed_from_u64(seed), FocaCodec, handler);
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_0f0c_a11e);
        let reconnect_every = config.reconnect_interval;
        Core {
            foca,
            fx: Effects {
                now: now.mono,
                ..Effects::default()
            },
            timers: TimerQueue::default(),
            names: HashMap::new(),
            local_name: name.into(),
            local_since_ms: now.wall_ms,
            view: BTreeMap::new(),
            joined: false,
            leaving: false,
            version: 0,
            events: Vec::new(),
            suspect_since: BTreeMap::new(),
            accepted,
            backlog,
            relays_skipped,
            suspicion_limit: config.suspect_timeout * 2 + config.probe_period,
            foca_config,
            configured_suspect: config.suspect_timeout,
            probe_period: config.probe_period,
            scaled_for: 1,
            next_reconnect: now.mono + reconnect_every.mul_f64(rng.random::<f64>()),
            reconnect_every,
            last_reconnect_ms: now.wall_ms,
            rng,
            last_seen: Vec::new(),
            own_in_foca: 0,
        }
    }

    /// Our current identity.
    pub fn identity(&self) -> &NodeId {
        self.foca.identity()
    }

    /// Whether at least one other member knows and accepts us.
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// Increases whenever the member view changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Handles a SWIM packet in compact form (what [`Core::take_sends`] produces) from the
    /// authenticated peer `from`.
    pub fn handle_data(&mut self, from: PublicKey, name: &str, data: &[u8], now: Now) -> Result<(), CoreError> {
        let full = compact::expand(data, &from, &self.identity().key)?;
        self.handle_full_data(from, name, &full, now)
    }

    /// Handles a SWIM packet as foca encodes it (full header) from the authenticated peer `from`.
    pub fn handle_full_data(&mut self, from: PublicKey, name: &str, data: &[u8], now: Now) -> Result<(), CoreError> {
        // foca trusts the header's sender; check it against the TLS-authenticated key first.
        let (header, _) = crate::codec::decode_prefix::<foca::Header<NodeId>>(data).map_err(CoreError::Header)?;
        if header.src.key != from {
            return Err(CoreError::Spoofed {
                claimed: header.src,
                actual: from,
            });
        }
        self.learn_name(from, name);
        self.fx.now = now.mono;
        let accepted = self.accepted.load(Ordering::Relaxed);
        let mut result = self.foca.handle_data(data, &mut self.fx);
        // News arrived: pass it on at once instead of waiting for the next gossip tick.
        if result.is_ok() && self.accepted.load(Ordering::Relaxed) > accepted {
            result = self.foca.broadcast(&mut self.fx);
        }
        self.after(now);
        result.map_err(CoreError::from)
    }

    /// Starts disseminating one of our own items and sends it to a few members at once.
    pub fn add_broadcast(&mut self, data: &[u8], now: Now) -> Result<(), CoreError> {
        self.fx.now = now.mono;
        let mut result = self.foca.add_broadcast(data).map(|_| ());
        if result.is_ok() {
            result = self.foca.broadcast(&mut self.fx);
        }
        self.after(now);
        result.map_err(CoreError::from)
    }

    /// Count of received items not passed on because foca's backlog was full
    /// ([`super::broadcast::MAX_RELAY_BACKLOG`]).
    pub fn relays_skipped(&self) -> Arc<AtomicU64> {
        self.relays_skipped.clone()
    }

    /// Events since the last call, drained.
    pub fn take_events(&mut self) -> Vec<MemberEvent> {
        std::mem::take(&mut self.events)
    }

    /// Runs every timer due at `now`, in order.
    pub fn handle_timers(&mut self, now: Now) {
        self.fx.now = now.mono;
        while let Some(timer) = self.timers.pop_due(now.mono) {
            let suspect = match &timer {
                Timer::ChangeSuspectToDown { member_id, .. } => Some(member_id.clone()),
                _ => None,
            };
            let (sends, notes) = (self.fx.sends.len(), self.fx.notes.len());
            if let Err(e) = self.foca.handle_timer(timer, &mut self.fx) {
                debug!(error = %e, "timer");
            }
            if let Some(id) = suspect {
                self.keep_turn_undead_if_down(&id, sends, notes);
            }
            // Timers scheduled by this one must be queued before the next due one is popped.
            for (due, t) in self.fx.timers.drain(..) {
                self.timers.push(due, t);
            }
        }
        self.expire_suspicions(now);
        if now.mono >= self.next_reconnect {
            self.next_reconnect = now.mono + self.reconnect_every;
            self.reconnect(now);
        }
        self.after(now);
    }

    /// Declares down the member with key `key` whose certificate expired while connected
    /// (the transport cut it), if it is known under identity generation `generation` or an
    /// earlier one and not down already; the verdict is gossiped like any other. Returns
    /// whether it was declared down. A later run of that key (a restart with a new
    /// certificate) is left alone.
    pub fn declare_expired(&mut self, key: PublicKey, generation: u64, now: Now) -> bool {
        let Some(member) = self
            .view
            .get(&key)
            .filter(|m| m.state != MemberState::Down && m.id.generation <= generation)
            .map(|m| foca::Member::new(m.id.clone(), m.swim_incarnation, State::Down))
        else {
            return false;
        };
        warn!(member = ?member.id(), "certificate expired; declaring the member down");
        self.fx.now = now.mono;
        if let Err(e) = self.foca.apply_many(std::iter::once(member), true, &mut self.fx) {
            debug!(error = %e, "declaring an expired member down");
        }
        // Spread the verdict now rather than at the next gossip tick.
        if let Err(e) = self.foca.broadcast(&mut self.fx) {
            debug!(error = %e, "gossiping an expiry");
        }
        self.after(now);
        true
    }

    /// When the next timer is due (there is always one: the reconnect tick).
    pub fn next_timer(&self) -> Duration {
        self.timers
            .next_due()
            .map_or(self.next_reconnect, |due| due.min(self.next_reconnect))
    }

    /// Asks `dst` to let us join its cluster.
    pub fn announce(&mut self, dst: NodeId, now: Now) -> Result<(), CoreError> {
        self.fx.now = now.mono;
        let result = self.foca.announce(dst, &mut self.fx);
        self.after(now);
        result.map_err(CoreError::from)
    }

    /// Declares ourselves down to a few members; the caller should flush sends and stop.
    pub fn leave(&mut self, now: Now) -> Result<(), CoreError> {
        self.fx.now = now.mono;
        self.leaving = true;
        let result = self.foca.leave_cluster(&mut self.fx);
        self.after(now);
        result.map_err(CoreError::from)
    }

    /// Records the name a peer's certificate carries.
    pub fn learn_name(&mut self, key: PublicKey, name: &str) {
        if self.names.get(&key).map(|n| &**n) != Some(name) {
            let name: Arc<str> = name.into();
            self.names.insert(key, name.clone());
            if let Some(m) = self.view.get_mut(&key) {
                m.name = Some(name);
                self.version += 1;
            }
        }
    }

    /// Datagrams to send, drained.
    pub fn take_sends(&mut self) -> Vec<(NodeId, Bytes)> {
        let own = self.identity().key;
        std::mem::take(&mut self.fx.sends)
            .into_iter()
            .filter_map(|(to, full)| match compact::compact(&full, &own, &to.key) {
                Ok(small) => Some((to, Bytes::from(small))),
                Err(e) => {
                    debug!(error = %e, "SWIM packet not sent");
                    None
                }
            })
            .collect()
    }

    /// All members including ourselves, ordered by key.
    pub fn members(&self) -> Vec<MemberView> {
        let me = MemberView {
            id: self.identity().clone(),
            name: Some(self.local_name.clone()),
            state: MemberState::Alive,
            since_ms: self.local_since_ms,
            swim_incarnation: 0,
            local: true,
        };
        let mut all: Vec<MemberView> = self.view.values().cloned().collect();
        all.push(me);
        all.sort_by_key(|m| m.id.key);
        all
    }

    /// How this node sees the member with key `key` (not ourselves), without copying the
    /// whole view as [`Core::members`] does: simulations of thousands of nodes ask often.
    pub fn member(&self, key: &PublicKey) -> Option<&MemberView> {
        self.view.get(key)
    }

    /// Every other member as this node sees it, ordered by key, without copying.
    pub fn peers(&self) -> impl Iterator<Item = &MemberView> {
        self.view.values()
    }

    /// Members other than this node that are not down (alive or suspect), without walking the
    /// view.
    pub fn active_peers(&self) -> usize {
        self.foca.num_members()
    }

    /// Items in foca's custom broadcast backlog (ours and those passed on).
    pub fn broadcast_backlog(&self) -> usize {
        self.foca.custom_broadcast_backlog()
    }

    /// Membership updates foca still has to pass on (joins, suspicions, verdicts); while any
    /// are pending it gossips every `GOSSIP_INTERVAL`.
    pub fn updates_backlog(&self) -> usize {
        self.foca.updates_backlog()
    }

    /// Common work after any input: queue timers, track join state, refresh the view.
    fn after(&mut self, now: Now) {
        self.backlog
            .store(self.foca.custom_broadcast_backlog(), Ordering::Relaxed);
        for (due, t) in self.fx.timers.drain(..) {
            self.timers.push(due, t);
        }
        let mut renewed = false;
        let mut joined_now = false;
        for note in std::mem::take(&mut self.fx.notes) {
            match note {
                OwnedNotification::Active => {
                    if !self.joined {
                        info!("joined the cluster");
                        self.events.push(MemberEvent::Joined);
                        joined_now = true;
                    }
                    self.joined = true;
                }
                OwnedNotification::Idle => {
                    if self.joined {
                        warn!("lost contact with every member");
                    }
                    self.joined = false;
                }
                OwnedNotification::Defunct => {
                    if !self.leaving {
                        warn!("this node was declared down");
                    }
                    self.joined = false;
                }
                OwnedNotification::MemberUp(id) => self.events.push(MemberEvent::Up(id)),
                OwnedNotification::Rejoin(id) => {
                    warn!(identity = ?id, "declared down by the cluster; rejoining with a renewed identity");
                    self.local_since_ms = now.wall_ms;
                    self.version += 1;
                    renewed = true;
                }
                _ => {}
            }
        }
        self.rescale();
        self.refresh_view(now);
        if renewed {
            self.announce_to(MemberState::Down, ANNOUNCE_AFTER_RENEWAL, now);
        }
        if joined_now {
            self.announce_to(MemberState::Alive, ANNOUNCE_AFTER_JOIN, now);
        }
    }
}
