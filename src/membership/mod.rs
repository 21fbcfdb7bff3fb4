//! SWIM membership (foca) over QUIC datagrams.
//!
//! One task owns the [`Core`] state machine. It reads SWIM datagrams from the transport's
//! bounded inbox, runs foca's timers in deadline order, and publishes a snapshot of the member
//! list on a `watch` channel that the HTTP API and the join loop read without talking to it.
//! Received datagrams are always handled before due timers, so an ack that has already
//! arrived is never mistaken for a timeout when the task falls behind.

mod broadcast;
pub mod compact;
pub mod core;
mod id;
mod join;
pub mod scale;
mod timers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

pub use self::core::{Core, CoreConfig, MemberEvent, MemberState, MemberView, Now};
pub use broadcast::{BroadcastFilter, BroadcastKey, NoBroadcasts};
pub use id::{FocaCodec, NodeId};
pub use join::{JOIN_BACKOFF_INITIAL, JoinConfig, run_join};

use crate::transport::{Channel, Expired, Inbound, Transport};

/// Capacity of the inbox from the transport. Beyond it datagrams are dropped like UDP loss.
pub const INBOX_CAPACITY: usize = 1024;
/// Capacity of the command channel.
pub const COMMAND_CAPACITY: usize = 64;
/// Datagrams handled per loop turn before timers get a look in.
const INBOX_BATCH: usize = 64;

/// What the rest of the agent can see of membership.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Our identity.
    pub identity: NodeId,
    /// Whether we are part of a cluster.
    pub joined: bool,
    /// Every member, ourselves included.
    pub members: Vec<MemberView>,
}

impl Snapshot {
    /// Counts of members by state, ourselves included.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.members.iter().fold((0, 0, 0), |(a, s, d), m| match m.state {
            MemberState::Alive => (a + 1, s, d),
            MemberState::Suspect => (a, s + 1, d),
            MemberState::Down => (a, s, d + 1),
        })
    }
}

/// Counters of the membership task.
#[derive(Debug, Default)]
pub struct Stats {
    /// SWIM packets handed to foca.
    pub packets_handled: AtomicU64,
    /// SWIM packets rejected: undecodable, spoofed sender, or refused by foca.
    pub packets_rejected: AtomicU64,
    /// Received broadcast items not passed on because the backlog was full
    /// ([`broadcast::MAX_RELAY_BACKLOG`]); replication repairs with anti-entropy sooner.
    pub relays_skipped: Arc<AtomicU64>,
}

enum Command {
    Announce(NodeId),
    Broadcast(bytes::Bytes),
    Leave(oneshot::Sender<()>),
}

/// Handle to the membership task.
#[derive(Clone)]
pub struct MembershipHandle {
    cmds: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    stats: Arc<Stats>,
}

impl MembershipHandle {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A receiver that wakes on every snapshot change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Asks the task to announce us to `dst`.
    pub async fn announce(&self, dst: NodeId) {
        let _ = self.cmds.send(Command::Announce(dst)).await;
    }

    /// Whether the membership task has stopped.
    pub fn is_closed(&self) -> bool {
        self.cmds.is_closed()
    }

    /// Starts disseminating one of our own items (at most `MAX_SWIM_PACKET` bytes).
    pub async fn broadcast(&self, item: bytes::Bytes) {
        let _ = self.cmds.send(Command::Broadcast(item)).await;
    }

    /// Leaves the cluster and stops the task; returns once the leave has been handed to the
    /// transport.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the membership task. `inbox` carries the transport's datagrams, `expired` the
/// peers it cut because their certificate expired, `filter` judges custom broadcasts, and
/// member events go to `events` (dropped when it is full).
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    identity: NodeId,
    name: String,
    config: &CoreConfig,
    transport: Transport,
    inbox: mpsc::Receiver<(Channel, Inbound)>,
    expired: Option<mpsc::Receiver<Expired>>,
    filter: Box<dyn BroadcastFilter>,
    events: Option<mpsc::Sender<MemberEvent>>,
) -> (MembershipHandle, tokio::task::JoinHandle<()>) {
    let start = Instant::now();
    let now = Now {
        mono: Duration::ZERO,
        wall_ms: crate::time::unix_ms(),
    };
    let core = Core::new(identity, name, config, rand::random(), now, filter);
    let snapshot = Arc::new(snapshot_of(&core));
    let (snap_tx, snap_rx) = watch::channel(snapshot);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
    let stats = Arc::new(Stats {
        relays_skipped: core.relays_skipped(),
        ..Stats::default()
    });
    let actor = Actor {
        events,
        stats: stats.clone(),
        core,
        transport,
        inbox,
        expired,
        cmds: cmd_rx,
        snapshot: snap_tx,
        start,
        published: u64::MAX,
    };
    let task = tokio::spawn(actor.run());
    (
        MembershipHandle {
            cmds: cmd_tx,
            snapshot: snap_rx,
            stats,
        },
        task,
    )
}

/// The next expiry notice; never completes without a channel.
async fn recv_expired(rx: &mut Option<mpsc::Receiver<Expired>>) -> Option<Expired> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn snapshot_of(core: &Core) -> Snapshot {
    Snapshot {
        identity: core.identity().clone(),
        joined: core.joined(),
        members: core.members(),
    }
}

struct Actor {
    core: Core,
    transport: Transport,
    inbox: mpsc::Receiver<(Channel, Inbound)>,
    expired: Option<mpsc::Receiver<Expired>>,
    cmds: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    start: Instant,
    published: u64,
    stats: Arc<Stats>,
    events: Option<mpsc::Sender<MemberEvent>>,
}

impl Actor {
    fn now(&self) -> Now {
        Now {
            mono: self.start.elapsed(),
            wall_ms: crate::time::unix_ms(),
        }
    }

    async fn run(mut self) {
        loop {
            for _ in 0..INBOX_BATCH {
                match self.inbox.try_recv() {
                    Ok(msg) => self.on_datagram(msg),
                    Err(_) => break,
                }
            }
            let now = self.now();
            self.core.handle_timers(now);
            self.flush();

            let sleep = tokio::time::sleep_until(self.start + self.core.next_timer());
            tokio::select! {
                biased;
                msg = self.inbox.recv() => match msg {
                    Some(msg) => self.on_datagram(msg),
                    None => return,
                },
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Announce(dst)) => {
                        let now = self.now();
                        if let Err(e) = self.core.announce(dst, now) {
                            debug!(error = %e, "announce");
                        }
                    }
                    Some(Command::Broadcast(item)) => {
                        let now = self.now();
                        if let Err(e) = self.core.add_broadcast(&item, now) {
                            debug!(error = %e, "broadcast");
                        }
                    }
                    Some(Command::Leave(done)) => {
                        let now = self.now();
                        if let Err(e) = self.core.leave(now) {
                            debug!(error = %e, "leave");
                        }
                        self.flush();
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some(gone) = recv_expired(&mut self.expired) => {
                    let now = self.now();
                    self.core.declare_expired(gone.key, gone.generation, now);
                }
                () = sleep => {}
            }
        }
    }

    fn on_datagram(&mut self, (channel, msg): (Channel, Inbound)) {
        match channel {
            Channel::Swim | Channel::SwimCompact => {
                let now = self.now();
                let handled = if channel == Channel::Swim {
                    self.core.handle_full_data(msg.from, &msg.name, &msg.data, now)
                } else {
                    self.core.handle_data(msg.from, &msg.name, &msg.data, now)
                };
                match handled {
                    Ok(()) => self.stats.packets_handled.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        debug!(peer = %msg.from.short(), error = %e, "SWIM packet rejected");
                        self.stats.packets_rejected.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            // The transport routes these to replication; never sent here.
            Channel::SyncProbe => {}
        }
    }

    fn flush(&mut self) {
        for (to, data) in self.core.take_sends() {
            self.transport.send(to.target(), Channel::SwimCompact, &data);
        }
        // The view first: a task reacting to an event reads it and must see the change.
        if self.core.version() != self.published {
            self.published = self.core.version();
            self.snapshot.send_replace(Arc::new(snapshot_of(&self.core)));
        } else if self.snapshot.borrow().joined != self.core.joined() {
            self.snapshot.send_replace(Arc::new(snapshot_of(&self.core)));
        }
        for event in self.core.take_events() {
            if let MemberEvent::Up(id) = &event {
                self.transport.warm(id.target());
            }
            if let Some(tx) = &self.events {
                let _ = tx.try_send(event);
            }
        }
    }
}
