//! One simulated node: the shipped membership [`Core`] and a [`Replica`] above it, plus what
//! the engine tracks about it (identity, liveness, slowness, its scheduled timer).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::discover::Discovery;
use crate::identity::SecretKey;
use crate::membership::{Core, CoreConfig, NodeId, Now};
use crate::replication::member_up::MemberUpSyncs;
use crate::replication::policy::Policy;

use super::records::{Replica, wall_ms};

/// Port every simulated node listens on (addresses differ by IP).
pub const SIM_PORT: u16 = 7946;
/// First address of the simulated nodes: node `i` is `10.0.0.0 + i + 1`.
const BASE_ADDR: u32 = u32::from_be_bytes([10, 0, 0, 0]);

/// The address of node `i`.
pub fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(BASE_ADDR + i as u32 + 1), SIM_PORT))
}

/// The node index an address belongs to, if it is a simulated node's.
pub fn index_of(addr: &SocketAddr) -> Option<usize> {
    match addr {
        SocketAddr::V4(a) if a.port() == SIM_PORT => {
            (u32::from(*a.ip()).checked_sub(BASE_ADDR + 1)).map(|i| i as usize)
        }
        _ => None,
    }
}

/// The virtual time as the shipped code wants it.
pub fn now_at(t: Duration) -> Now {
    Now {
        mono: t,
        wall_ms: wall_ms(t),
    }
}

/// A running node.
pub struct Running {
    /// The membership state machine that ships in the agent.
    pub core: Core,
    /// What runs above it.
    pub replica: Replica,
    /// Whether it has joined (tracked for the join loop's retries).
    pub joined: bool,
    /// The agent's decision of which members to announce to, fed with committed node
    /// records (see [`crate::discover`]).
    pub discovery: Discovery,
    /// Whether a look at `discovery` is queued.
    pub discover_queued: bool,
    /// Which members that come up to reconcile with (the actor's decision).
    pub member_up: MemberUpSyncs,
}

/// A node slot: its identity across restarts and its current run, if any.
pub struct Node {
    /// Its key, the same across restarts.
    pub secret: SecretKey,
    /// Its name (what its certificate would carry).
    pub name: String,
    /// Identity of its current or last run.
    pub id: NodeId,
    /// The current run; `None` while crashed or not yet started.
    pub run: Option<Running>,
    /// Bumped at every crash and restart: events queued for an earlier run are dropped.
    pub epoch: u32,
    /// Whether its handling of datagrams and timers lags (a starved process).
    pub slow: bool,
    /// When a slow node is done with the input it has queued.
    pub busy_until: Duration,
    /// The time of its queued timer event, if one is queued.
    pub timer_at: Option<Duration>,
    /// A slow node's timers are being handled late: no other timer is queued meanwhile.
    pub timer_deferred: bool,
    /// Next join attempt's backoff (the join loop's).
    pub join_backoff: Duration,
    /// Whether a postponed anti-entropy session is queued (one at a time: a join brings
    /// hundreds of "member up" events, nearly all postponed).
    pub wanted_queued: bool,
    /// Datagrams a slow node received and has not handled yet: (sequence, sender, data).
    pub inbox: VecDeque<(u64, u32, Bytes)>,
}

impl Node {
    /// Node `i` of a run seeded with `seed`, not started.
    pub fn new(i: usize, seed: u64) -> Node {
        let mut key_seed = [0u8; 32];
        key_seed[..8].copy_from_slice(&seed.to_le_bytes());
        key_seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
        key_seed[16] = 0x51;
        let secret = SecretKey::from_seed(key_seed);
        let id = NodeId {
            key: secret.public(),
            addr: addr_of(i),
            generation: 0,
            bump: 0,
        };
        Node {
            secret,
            name: format!("n{i}"),
            id,
            run: None,
            epoch: 0,
            slow: false,
            busy_until: Duration::ZERO,
            timer_at: None,
            timer_deferred: false,
            join_backoff: Duration::ZERO,
            wanted_queued: false,
            inbox: VecDeque::new(),
        }
    }

    /// Starts a new run (generation one higher than the last) at `now`.
    pub fn start(&mut self, config: &CoreConfig, policy: Arc<Policy>, core_seed: u64, now: Duration) {
        assert!(self.run.is_none(), "sim: {} started twice", self.name);
        self.id.generation += 1;
        self.epoch += 1;
        self.timer_at = None;
        self.timer_deferred = false;
        self.wanted_queued = false;
        self.inbox.clear();
        self.busy_until = now;
        self.join_backoff = crate::membership::JOIN_BACKOFF_INITIAL;
        let (replica, filter) = Replica::new(policy);
        replica.store().now = now;
        let core = Core::new(
            self.id.clone(),
            self.name.clone(),
            config,
            core_seed,
            now_at(now),
            filter,
        );
        self.run = Some(Running {
            core,
            replica,
            joined: false,
            discovery: Discovery::default(),
            discover_queued: false,
            member_up: MemberUpSyncs::default(),
        });
    }

    /// Stops the current run.
    pub fn crash(&mut self) {
        self.run = None;
        self.epoch += 1;
        self.timer_at = None;
        self.timer_deferred = false;
        self.wanted_queued = false;
        self.inbox.clear();
    }

    /// Whether it is running.
    pub fn live(&self) -> bool {
        self.run.is_some()
    }
}
