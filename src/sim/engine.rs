//! The discrete-event engine: one queue of events ordered by (time, class, sequence), one
//! seeded rng, and the nodes. Handling mirrors the agent's membership task: datagrams due at
//! an instant are handled before timers due at the same instant (`class`), and every input is
//! followed by flushing the core's sends and reacting to its events.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;

use crate::membership::{CoreConfig, MemberEvent, MemberState, NodeId};
use crate::replication::item::WireItem;
use crate::replication::policy::Policy;

use super::net::Network;
use super::node::{Node, index_of, now_at};
use super::records::{self, reconcile};

/// Least delay a slow node adds to handling each datagram and timer.
pub const SLOW_DELAY_MIN: Duration = Duration::from_secs(1);
/// Greatest such delay.
pub const SLOW_DELAY_MAX: Duration = Duration::from_secs(2);
/// Longest wait between join attempts (the agent's `join_backoff_max` default).
pub const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often links with nothing in flight are forgotten (memory only; see `Network::prune`).
const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub(super) enum Event {
    /// A datagram arrives at `to`.
    Datagram { to: u32, from: u32, data: Bytes },
    /// A slow node gets round to the datagram with sequence `seq` in its inbox, unless it
    /// already handled it before its timers.
    Handle { to: u32, seq: u64, epoch: u32 },
    /// A node's earliest timer is due.
    Timer { node: u32, epoch: u32 },
    /// A slow node gets round to its due timers.
    DeferredTimer { node: u32, epoch: u32 },
    /// Items from an anti-entropy session arrive.
    Items { to: u32, epoch: u32, items: Vec<WireItem> },
    /// Periodic anti-entropy.
    Sync { node: u32, epoch: u32 },
    /// A session for a member that came up, postponed by spacing.
    Wanted { node: u32, epoch: u32 },
    /// The join loop's next attempt.
    JoinRetry { node: u32, epoch: u32 },
    /// The discovery task looks at members known only from their node records.
    Discover { node: u32, epoch: u32 },
}

impl Event {
    /// Order among events due at the same instant: input first, then timers, then the rest.
    fn class(&self) -> u8 {
        match self {
            Event::Datagram { .. } | Event::Handle { .. } | Event::Items { .. } => 0,
            Event::Timer { .. } | Event::DeferredTimer { .. } => 1,
            _ => 2,
        }
    }
}

struct Queued {
    at: Duration,
    class: u8,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.class, self.seq).cmp(&(other.at, other.class, other.seq))
    }
}

/// Counters of things that happened in a run.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Datagrams a core refused (undecodable, spoofed, foca error).
    pub rejected_datagrams: u64,
    /// Anti-entropy sessions run.
    pub sync_sessions: u64,
    /// Items moved by anti-entropy.
    pub synced_items: u64,
    /// Down verdicts (observer, subject, generation, bump) against running nodes, while
    /// [`Sim::watch_false_downs`] is on.
    pub false_downs: BTreeSet<(u32, u32, u64, u16)>,
    /// Largest custom broadcast backlog seen on any node.
    pub max_backlog: usize,
    /// Datagrams a node sent to its own address (and refused).
    pub sent_to_self: u64,
    /// Nodes whose view held an earlier identity of their own at some point.
    pub self_in_view: BTreeSet<u32>,
}

/// A simulated mesh.
pub struct Sim {
    now: Duration,
    rng: SmallRng,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    seed: u64,
    /// The network between the nodes.
    pub net: Network,
    /// The nodes, by index.
    pub nodes: Vec<Node>,
    /// Nodes that new nodes announce themselves to.
    pub seeds: Vec<usize>,
    config: CoreConfig,
    anti_entropy_interval: Duration,
    policy: Arc<Policy>,
    /// What happened so far.
    pub counters: Counters,
    /// Whether to record down verdicts against running nodes (costly: a scan of the view
    /// after every change of it).
    pub watch_false_downs: bool,
    versions: Vec<u64>,
    last_prune: Duration,
}

impl Sim {
    /// `n` nodes (none started) with the agent's default settings; everything random
    /// follows from `seed`.
    pub fn new(n: usize, seed: u64) -> Sim {
        Sim {
            now: Duration::ZERO,
            rng: SmallRng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            seed,
            net: Network::new(n, seed),
            nodes: (0..n).map(|i| Node::new(i, seed)).collect(),
            seeds: (0..n.min(3)).collect(),
            config: super::core_config(),
            anti_entropy_interval: super::anti_entropy_interval(),
            policy: Arc::new(records::policy()),
            counters: Counters::default(),
            watch_false_downs: false,
            versions: vec![0; n],
            last_prune: Duration::ZERO,
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The simulation's rng, for scenarios' own choices.
    pub fn rng(&mut self) -> &mut SmallRng {
        &mut self.rng
    }

    /// Adds a node slot (not started); returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes.push(Node::new(i, self.seed));
        self.versions.push(0);
        self.net.grow(i + 1);
        i
    }

    pub(super) fn push(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        let class = event.class();
        self.queue.push(Reverse(Queued {
            at,
            class,
            seq: self.seq,
            event,
        }));
    }

    fn slow_delay(&mut self) -> Duration {
        SLOW_DELAY_MIN + (SLOW_DELAY_MAX - SLOW_DELAY_MIN).mul_f64(self.rng.random::<f64>())
    }

    /// Starts node `i` (again: a restart under the next generation) and has it join through
    /// a random seed other than itself, retrying like the join loop until it has joined.
    pub fn start(&mut self, i: usize) {
        let core_seed =
            self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((i as u64) << 20) ^ self.nodes[i].id.generation;
        let now = self.now;
        self.nodes[i].start(&self.config, self.policy.clone(), core_seed, now);
        let epoch = self.nodes[i].epoch;
        let first_sync = now + self.anti_entropy_interval.mul_f64(self.rng.random::<f64>());
        self.push(first_sync, Event::Sync { node: i as u32, epoch });
        self.publish_node_info(i);
        self.join_attempt(i);
        self.after_step(i, false);
    }

    fn join_attempt(&mut self, i: usize) {
        let candidates: Vec<usize> = self.seeds.iter().copied().filter(|s| *s != i).collect();
        let now = self.now;
        if let Some(&s) = candidates.choose(&mut self.rng) {
            let dst = self.nodes[s].id.clone();
            let run = self.nodes[i].run.as_mut().expect("sim: joining node runs");
            // An error here is foca refusing to announce (e.g. to itself): the retry covers it.
            let _ = run.core.announce(dst, now_at(now));
        }
        // Equal jitter, as the join loop.
        let node = &mut self.nodes[i];
        let half = node.join_backoff / 2;
        let wait = half + half.mul_f64(self.rng.random::<f64>());
        node.join_backoff = (node.join_backoff * 2).min(JOIN_BACKOFF_MAX);
        let epoch = node.epoch;
        self.push(now + wait, Event::JoinRetry { node: i as u32, epoch });
    }

    /// Crashes node `i`: it stops at once and its packets in flight are dropped on arrival.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].crash();
    }

    /// Makes node `i` slow (or not).
    pub fn set_slow(&mut self, i: usize, slow: bool) {
        self.nodes[i].slow = slow;
    }

    /// Publishes a small signed record from node `i`: committed there and broadcast through
    /// its membership core. Returns the record's digest.
    pub fn publish(&mut self, i: usize, content: &[u8]) -> [u8; 32] {
        let wire = records::record(&self.nodes[i].secret, content, self.now);
        self.publish_wire(i, wire)
    }

    /// Commits node `i`'s own item `wire` and broadcasts it; returns its digest.
    pub(super) fn publish_wire(&mut self, i: usize, wire: WireItem) -> [u8; 32] {
        let now = self.now;
        let digest = *blake3::hash(&wire.meta).as_bytes();
        let run = self.nodes[i].run.as_mut().expect("sim: publishing node runs");
        run.replica.store().now = now;
        let data = run.replica.publish(&self.policy, wire);
        if let Err(e) = run.core.add_broadcast(&data, now_at(now)) {
            panic!("sim: own broadcast refused: {e}");
        }
        self.after_step(i, false);
        digest
    }

    /// Runs every event due up to `until`; the clock is then `until`.
    pub fn run_until(&mut self, until: Duration) {
        while self.queue.peek().is_some_and(|q| q.0.at <= until) {
            let Reverse(q) = self.queue.pop().expect("peeked");
            self.now = q.at;
            self.dispatch(q.event);
            if self.now >= self.last_prune + PRUNE_EVERY {
                self.net.prune(self.now);
                self.last_prune = self.now;
            }
        }
        self.now = until;
    }

    fn dispatch(&mut self, event: Event) {
        let now = self.now;
        match event {
            Event::Datagram { to, from, data } => {
                let node = &self.nodes[to as usize];
                if !node.live() {
                    return;
                }
                if node.slow {
                    let delay = self.slow_delay();
                    // The sequence number the Handle event is about to get: unique.
                    let seq = self.seq + 1;
                    let node = &mut self.nodes[to as usize];
                    let at = node.busy_until.max(now + delay);
                    node.busy_until = at;
                    node.inbox.push_back((seq, from, data));
                    let epoch = node.epoch;
                    self.push(at, Event::Handle { to, seq, epoch });
                } else {
                    self.handle_datagram(to as usize, from as usize, &data);
                }
            }
            Event::Handle { to, seq, epoch } => {
                let node = &mut self.nodes[to as usize];
                if node.epoch == epoch
                    && node.live()
                    && node.inbox.front().is_some_and(|(s, ..)| *s == seq)
                    && let Some((_, from, data)) = node.inbox.pop_front()
                {
                    self.handle_datagram(to as usize, from as usize, &data);
                }
            }
            Event::Timer { node, epoch } => {
                let i = node as usize;
                if self.nodes[i].epoch != epoch || self.nodes[i].timer_at != Some(now) || !self.nodes[i].live() {
                    return;
                }
                self.nodes[i].timer_at = None;
                if self.nodes[i].slow {
                    let delay = self.slow_delay();
                    let n = &mut self.nodes[i];
                    let at = n.busy_until.max(now + delay);
                    n.busy_until = at;
                    n.timer_deferred = true;
                    self.push(at, Event::DeferredTimer { node, epoch });
                } else {
                    self.run_timers(i);
                }
            }
            Event::DeferredTimer { node, epoch } => {
                let i = node as usize;
                if self.nodes[i].epoch == epoch && self.nodes[i].live() {
                    self.nodes[i].timer_deferred = false;
                    // As the agent's membership task when it wakes: every datagram waiting
                    // in the inbox first, then the timers.
                    while let Some((_, from, data)) = self.nodes[i].inbox.pop_front() {
                        self.handle_datagram(i, from as usize, &data);
                    }
                    self.run_timers(i);
                }
            }
            Event::Items { to, epoch, items } => {
                let n = &self.nodes[to as usize];
                if n.epoch == epoch
                    && let Some(run) = &n.run
                {
                    run.replica.store().now = now;
                    run.replica.offer(&self.policy, items);
                }
            }
            Event::Sync { node, epoch } => {
                let i = node as usize;
                if self.nodes[i].epoch == epoch && self.nodes[i].live() {
                    self.start_sync(i, None);
                    let next = now + self.anti_entropy_interval;
                    self.push(next, Event::Sync { node, epoch });
                }
            }
            Event::Wanted { node, epoch } => {
                let i = node as usize;
                if self.nodes[i].epoch != epoch {
                    return;
                }
                self.nodes[i].wanted_queued = false;
                let Some(run) = self.nodes[i].run.as_mut() else { return };
                if let Some(id) = run.replica.next_wanted(now) {
                    self.start_sync(i, Some(id));
                }
                self.schedule_wanted(i);
            }
            Event::Discover { node, epoch } => {
                let i = node as usize;
                if self.nodes[i].epoch == epoch && self.nodes[i].live() {
                    self.discover(i);
                }
            }
            Event::JoinRetry { node, epoch } => {
                let i = node as usize;
                if self.nodes[i].epoch == epoch
                    && let Some(run) = &self.nodes[i].run
                    && !run.core.joined()
                {
                    self.join_attempt(i);
                    self.after_step(i, false);
                }
            }
        }
    }

    fn schedule_wanted(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(run) = &n.run
            && run.replica.has_wanted()
            && !n.wanted_queued
        {
            n.wanted_queued = true;
            let (node, epoch) = (i as u32, n.epoch);
            let at = self.now + records::TRIGGERED_SYNC_SPACING;
            self.push(at, Event::Wanted { node, epoch });
        }
    }

    fn handle_datagram(&mut self, to: usize, from: usize, data: &[u8]) {
        let now = self.now;
        let (key, name) = (self.nodes[from].id.key, self.nodes[from].name.clone());
        let run = self.nodes[to].run.as_mut().expect("sim: live node");
        run.replica.store().now = now;
        if run.core.handle_data(key, &name, data, now_at(now)).is_err() {
            self.counters.rejected_datagrams += 1;
            if from == to {
                self.counters.sent_to_self += 1;
            }
        }
        self.after_step(to, false);
    }

    fn run_timers(&mut self, i: usize) {
        let now = self.now;
        let run = self.nodes[i].run.as_mut().expect("sim: live node");
        run.replica.store().now = now;
        run.core.handle_timers(now_at(now));
        self.after_step(i, true);
    }

    /// After any input to node `i`: sends its datagrams, reacts to its events, notes down
    /// verdicts and queues its next timer.
    pub(super) fn after_step(&mut self, i: usize, after_timers: bool) {
        let now = self.now;
        let Some(run) = self.nodes[i].run.as_mut() else { return };
        let sends = run.core.take_sends();
        let events = run.core.take_events();
        let lost_contact = run.joined && !run.core.joined();
        if run.core.member(&run.core.identity().key).is_some() {
            self.counters.self_in_view.insert(i as u32);
        }
        run.joined = run.core.joined();
        let version = run.core.version();
        self.counters.max_backlog = self.counters.max_backlog.max(run.core.broadcast_backlog());
        for (to, data) in sends {
            let Some(j) = index_of(&to.addr).filter(|j| *j < self.nodes.len()) else {
                panic!("sim: {} sent to an unknown address {}", self.nodes[i].name, to.addr);
            };
            if let Some(at) = self.net.send(&mut self.rng, now, i, j, data.len()) {
                self.push(
                    at,
                    Event::Datagram {
                        to: j as u32,
                        from: i as u32,
                        data,
                    },
                );
            }
        }
        for event in events {
            let peer = match event {
                MemberEvent::Joined => None,
                MemberEvent::Up(id) => {
                    let draw = self.rng.random::<f64>();
                    let run = self.nodes[i].run.as_mut().expect("sim: live node");
                    let others = run.core.active_peers();
                    if !run.member_up.on_up(others, draw) {
                        continue;
                    }
                    Some(id)
                }
            };
            let run = self.nodes[i].run.as_mut().expect("sim: live node");
            match run.replica.trigger(peer, now) {
                Some(peer) => self.start_sync(i, peer),
                None => self.schedule_wanted(i),
            }
        }
        if lost_contact {
            // The join loop starts over when every peer is lost.
            self.nodes[i].join_backoff = crate::membership::JOIN_BACKOFF_INITIAL;
            self.join_attempt(i);
        }
        self.note_node_records(i);
        if self.watch_false_downs && version != self.versions[i] {
            self.note_false_downs(i);
        }
        self.versions[i] = version;
        let node = &mut self.nodes[i];
        let Some(run) = &node.run else { return };
        if node.timer_deferred {
            return;
        }
        let mut due = run.core.next_timer().max(now);
        if after_timers && due <= now {
            // Whatever is due now was just handled; never spin at one instant.
            due = now + Duration::from_micros(1);
        }
        if node.timer_at.is_none_or(|t| due < t) {
            node.timer_at = Some(due);
            let epoch = node.epoch;
            self.push(due, Event::Timer { node: i as u32, epoch });
        }
    }

    fn note_false_downs(&mut self, i: usize) {
        let Some(run) = &self.nodes[i].run else { return };
        for m in run.core.peers().filter(|m| m.state == MemberState::Down) {
            let Some(j) = index_of(&m.id.addr) else { continue };
            let subject = &self.nodes[j];
            if subject.live() && subject.id.generation == m.id.generation {
                self.counters
                    .false_downs
                    .insert((i as u32, j as u32, m.id.generation, m.id.bump));
            }
        }
    }

    /// Runs an anti-entropy session from `i` with `peer` (or a random member it sees alive).
    fn start_sync(&mut self, i: usize, peer: Option<NodeId>) {
        let now = self.now;
        let Some(run) = &self.nodes[i].run else { return };
        let peer = match peer {
            Some(p) => p,
            None => {
                let alive: Vec<&NodeId> = run
                    .core
                    .peers()
                    .filter(|m| m.state == MemberState::Alive)
                    .map(|m| &m.id)
                    .collect();
                let Some(p) = alive.choose(&mut self.rng) else { return };
                (*p).clone()
            }
        };
        let Some(j) = index_of(&peer.addr).filter(|j| *j != i && self.nodes[*j].live()) else {
            return;
        };
        if !self.net.reachable(i, j) || !self.net.reachable(j, i) {
            return;
        }
        let session = {
            let mine = self.nodes[i].run.as_ref().expect("live").replica.store();
            let theirs = self.nodes[j].run.as_ref().expect("live").replica.store();
            reconcile(&mine, &theirs)
        };
        self.counters.sync_sessions += 1;
        if let Some(run) = self.nodes[i].run.as_mut() {
            run.member_up.synced();
        }
        self.counters.synced_items += (session.to_initiator.len() + session.to_responder.len()) as u64;
        // Counted as one stream message each way; the session lasts its round trips.
        let there = self.net.send_stream(&mut self.rng, now, i, j, session.initiator_bytes);
        let back = self.net.send_stream(&mut self.rng, now, j, i, session.responder_bytes);
        let rtt = self.net.base_latency(i, j) + self.net.base_latency(j, i);
        let done = now + rtt * session.messages.div_ceil(2);
        let (ei, ej) = (self.nodes[i].epoch, self.nodes[j].epoch);
        let deliveries = [
            (j, ej, there, session.to_responder),
            (i, ei, back, session.to_initiator),
        ];
        for (to, epoch, arrival, items) in deliveries {
            if !items.is_empty() {
                let at = done.max(arrival.unwrap_or(done));
                self.push(
                    at,
                    Event::Items {
                        to: to as u32,
                        epoch,
                        items,
                    },
                );
            }
        }
    }
}
