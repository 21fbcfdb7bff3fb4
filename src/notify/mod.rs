//! Alerts: one node per webhook sends each notification, once.
//!
//! - Every node derives the same events with the same ids ([`crate::events`]).
//! - For each webhook, the leader is the alive member with the smallest key among those that
//!   have the webhook configured (nodes advertise a keyed hash of it, never the URL).
//! - The leader sends nothing unless at least two nodes are alive, and only once another alive
//!   node (not the event's subject) confirms the event against its own state ([`rpc::ask`]).
//! - After a delivery the leader publishes a signed `Notified` record; a new leader skips
//!   what any node recorded, so a change of leader neither repeats nor drops notifications
//!   (a leader dying between delivering and recording is the one window for a repeat).
//! - Failed deliveries are retried with exponential backoff.

pub mod confirm;
pub mod deliver;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::WebhookConfig;
use crate::events::{Event, EventKind, EventLog};
use crate::identity::PublicKey;
use crate::membership::{MemberState, MembershipHandle};
use crate::replication::ReplicationHandle;
use crate::replication::item::{ItemKey, RecordKind};
use crate::rpc::{self, Claim};
use crate::transport::{Target, Transport};

/// How often pending notifications are looked at.
pub const TICK: Duration = Duration::from_millis(500);
/// An event is acted on only after this long, so other nodes have seen it too.
pub const EVENT_SETTLE: Duration = Duration::from_secs(1);
/// A node that just became leader waits this long, so records of what the previous leader
/// sent can reach it first.
pub const LEADER_SETTLE: Duration = Duration::from_secs(2);
/// Events older than this are not notified (after a long outage, no storm of old news).
pub const WINDOW: Duration = Duration::from_secs(600);
/// An event no other node confirms within this long is dropped.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(60);
/// Deliveries tried at most this many times.
pub const MAX_ATTEMPTS: u32 = 12;
/// Longest wait between delivery attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Entries kept in this node's `Notified` record.
pub const MAX_NOTIFIED: usize = 256;
/// Deliveries in flight at once.
pub const MAX_IN_FLIGHT: usize = 8;

/// Identifies a webhook across nodes without revealing its URL.
pub type HookId = [u8; 16];

/// The ids of `config`'s webhooks, as its node record advertises them.
pub fn hook_ids(config: &crate::config::Config) -> Vec<HookId> {
    let network_id = config.network_id();
    config.notify.webhooks.iter().map(|h| hook_id(&network_id, h)).collect()
}

/// The id nodes advertise for a webhook: a hash of its name and URL keyed by the network id.
pub fn hook_id(network_id: &[u8; 32], hook: &WebhookConfig) -> HookId {
    let mut data = hook.name.as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(hook.url.as_bytes());
    blake3::keyed_hash(network_id, &data).as_bytes()[..16]
        .try_into()
        .expect("16 bytes")
}

/// One delivered notification, as recorded in a `Notified` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedEntry {
    /// The webhook.
    pub hook: HookId,
    /// The event id.
    pub event: String,
    /// When it was delivered, Unix ms.
    pub at_ms: u64,
}

/// Content of `RecordKind::Notified`: what this node delivered, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifiedLog {
    /// Entries.
    pub entries: Vec<NotifiedEntry>,
}

/// What the notifier needs.
pub struct NotifyContext {
    /// Configured webhooks.
    pub webhooks: Vec<WebhookConfig>,
    /// Network id (keys the webhook ids).
    pub network_id: [u8; 32],
    /// This node.
    pub local: PublicKey,
    /// Membership view.
    pub membership: MembershipHandle,
    /// Records (who has which webhook, what was notified).
    pub replication: ReplicationHandle,
    /// To ask peers.
    pub transport: Transport,
    /// Events.
    pub events: Arc<EventLog>,
    /// Where deliveries are counted.
    pub counters: Arc<crate::metrics::Counters>,
}

struct Hook {
    config: WebhookConfig,
    id: HookId,
    kinds: HashSet<EventKind>,
}

enum Outcome {
    Delivered,
    NotConfirmed,
    Failed(String),
}

struct Done {
    hook: HookId,
    event: String,
    outcome: Outcome,
}

struct Retry {
    attempts: u32,
    next: Instant,
}

/// Starts the notifier; returns `None` when no webhook is configured.
pub fn spawn(ctx: NotifyContext) -> Option<tokio::task::JoinHandle<()>> {
    if ctx.webhooks.is_empty() {
        return None;
    }
    Some(tokio::spawn(run(ctx)))
}

fn claim_of(event: &Event) -> Claim {
    match event.kind {
        EventKind::NodeDown | EventKind::NodeSuspect => Claim::MemberDown {
            node: event.node,
            identity: event.version,
        },
        EventKind::NodeUp | EventKind::NodeJoined | EventKind::NodeRestarted => Claim::MemberUp {
            node: event.node,
            identity: event.version,
        },
        EventKind::NodeDegraded | EventKind::NodeRecovered | EventKind::CheckFailing | EventKind::CheckOk => {
            Claim::Record {
                node: event.node,
                kind: RecordKind::Health,
                version: event.version,
            }
        }
        EventKind::JobFailed => Claim::Record {
            node: event.node,
            kind: RecordKind::Schedules,
            version: event.version,
        },
        // Another node that holds the claimant's node record sees the same claim.
        EventKind::NameConflict => Claim::Record {
            node: event.node,
            kind: RecordKind::NodeInfo,
            version: event.version,
        },
        // Not notifiable (config validation refuses it for webhooks); a claim no peer holds,
        // should one ever be asked.
        EventKind::PeerOffersRefused => Claim::Record {
            node: event.node,
            kind: RecordKind::NodeInfo,
            version: u64::MAX,
        },
        // Not notifiable; were it asked, any holder of the node's record would do.
        EventKind::CertificateExpiring => Claim::Record {
            node: event.node,
            kind: RecordKind::NodeInfo,
            version: 0,
        },
    }
}

fn decode_notified(content: &[u8]) -> Option<NotifiedLog> {
    crate::codec::decode_exact(content, crate::replication::policy::MAX_RECORD_SIZE as usize).ok()
}

struct Notifier {
    ctx: NotifyContext,
    hooks: Vec<Hook>,
    client: reqwest::Client,
    recent: VecDeque<Event>,
    notified: HashSet<(HookId, String)>,
    own: NotifiedLog,
    leader_since: HashMap<HookId, Instant>,
    retries: HashMap<(HookId, String), Retry>,
    in_flight: HashSet<(HookId, String)>,
    done_tx: mpsc::Sender<Done>,
}

async fn run(ctx: NotifyContext) {
    let hooks: Vec<Hook> = ctx
        .webhooks
        .iter()
        .map(|h| Hook {
            id: hook_id(&ctx.network_id, h),
            kinds: EventKind::ALL
                .iter()
                .copied()
                .filter(|k| k.notifiable() && h.events.iter().any(|e| e == k.as_str()))
                .collect(),
            config: h.clone(),
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(deliver::DELIVERY_TIMEOUT)
        .build()
        .unwrap_or_default();
    let (done_tx, mut done_rx) = mpsc::channel(MAX_IN_FLIGHT * 2);
    let mut events = ctx.events.subscribe();
    let mut commits = ctx.replication.subscribe();
    let own_key = ItemKey::Node {
        node: ctx.local,
        kind: RecordKind::Notified,
    };
    let own = ctx
        .replication
        .get(&own_key)
        .and_then(|(_, c)| decode_notified(&c?))
        .unwrap_or_default();
    let mut n = Notifier {
        recent: ctx.events.recent(0, crate::events::MAX_EVENTS).into(),
        ctx,
        hooks,
        client,
        notified: HashSet::new(),
        own,
        leader_since: HashMap::new(),
        retries: HashMap::new(),
        in_flight: HashSet::new(),
        done_tx,
    };
    n.reload_notified();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) => n.recent.push_back(e),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    n.recent = n.ctx.events.recent(0, crate::events::MAX_EVENTS).into();
                }
                Err(_) => return,
            },
            c = commits.recv() => {
                if let Ok(c) = c
                    && matches!(c.key, ItemKey::Node { kind: RecordKind::Notified, .. })
                {
                    n.reload_notified();
                }
            }
            Some(done) = done_rx.recv() => n.finish(done).await,
            _ = tick.tick() => n.process(),
        }
    }
}

impl Notifier {
    fn reload_notified(&mut self) {
        for (_, content) in self.ctx.replication.records(RecordKind::Notified) {
            if let Some(log) = decode_notified(&content) {
                self.notified.extend(log.entries.into_iter().map(|e| (e.hook, e.event)));
            }
        }
        self.notified
            .extend(self.own.entries.iter().map(|e| (e.hook, e.event.clone())));
    }

    /// Webhook ids a member advertises in its node record.
    fn advertised(&self, node: &PublicKey) -> Vec<HookId> {
        if *node == self.ctx.local {
            return self.hooks.iter().map(|h| h.id).collect();
        }
        self.ctx
            .replication
            .get(&ItemKey::Node {
                node: *node,
                kind: RecordKind::NodeInfo,
            })
            .and_then(|(_, c)| crate::codec::decode_exact::<crate::replication::records::NodeInfo>(&c?, 64 * 1024).ok())
            .map(|i| i.webhooks)
            .unwrap_or_default()
    }

    fn process(&mut self) {
        let now_ms = crate::time::unix_ms();
        let window_ms = WINDOW.as_millis() as u64;
        while self
            .recent
            .front()
            .is_some_and(|e| now_ms.saturating_sub(e.at_ms) > window_ms)
        {
            self.recent.pop_front();
        }
        let snapshot = self.ctx.membership.snapshot();
        let alive: Vec<PublicKey> = snapshot
            .members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.id.key)
            .collect();
        // One node alone cannot tell its own isolation from everyone else's failure.
        if alive.len() < 2 {
            self.leader_since.clear();
            return;
        }
        let advertised: HashMap<PublicKey, Vec<HookId>> = alive.iter().map(|k| (*k, self.advertised(k))).collect();
        let now = Instant::now();
        for h in 0..self.hooks.len() {
            let id = self.hooks[h].id;
            let leader = alive.iter().filter(|k| advertised[*k].contains(&id)).min();
            if leader != Some(&self.ctx.local) {
                self.leader_since.remove(&id);
                continue;
            }
            let since = *self.leader_since.entry(id).or_insert_with(|| {
                debug!(webhook = %self.hooks[h].config.name, "this node now sends this webhook's notifications");
                now
            });
            if now - since < LEADER_SETTLE {
                continue;
            }
            let due: Vec<Event> = self
                .recent
                .iter()
                .filter(|e| self.hooks[h].kinds.contains(&e.kind))
                .filter(|e| now_ms.saturating_sub(e.at_ms) >= EVENT_SETTLE.as_millis() as u64)
                .filter(|e| {
                    let key = (id, e.id.clone());
                    !self.notified.contains(&key)
                        && !self.in_flight.contains(&key)
                        && self.retries.get(&key).is_none_or(|r| now >= r.next)
                })
                .cloned()
                .collect();
            for event in due {
                if self.in_flight.len() >= MAX_IN_FLIGHT {
                    return;
                }
                self.start(h, event, &alive);
            }
        }
    }

    fn start(&mut self, h: usize, event: Event, alive: &[PublicKey]) {
        let hook = &self.hooks[h];
        let key = (hook.id, event.id.clone());
        self.in_flight.insert(key);
        let mut witnesses: Vec<PublicKey> = alive
            .iter()
            .copied()
            .filter(|k| *k != self.ctx.local && *k != event.node)
            .collect();
        witnesses.shuffle(&mut rand::rng());
        let targets: Vec<(PublicKey, Option<Target>)> = witnesses
            .into_iter()
            .take(2)
            .map(|k| {
                let t = self
                    .ctx
                    .membership
                    .snapshot()
                    .members
                    .iter()
                    .find(|m| m.id.key == k)
                    .map(|m| m.id.target());
                (k, t)
            })
            .collect();
        let transport = self.ctx.transport.clone();
        let client = self.client.clone();
        let url = hook.config.url.clone();
        let format = hook.config.format;
        let hook_id = hook.id;
        let tx = self.done_tx.clone();
        let counters = self.ctx.counters.clone();
        tokio::spawn(async move {
            let claim = claim_of(&event);
            let mut confirmed = false;
            for (peer, target) in targets {
                match rpc::ask(&transport, peer, target, claim.clone()).await {
                    Ok(agree) => {
                        confirmed = agree;
                        break;
                    }
                    Err(e) => debug!(peer = %peer.short(), error = %e, "could not ask a peer to confirm"),
                }
            }
            let outcome = if !confirmed {
                Outcome::NotConfirmed
            } else {
                match deliver::post(&client, &url, format, &event).await {
                    Ok(()) => {
                        counters
                            .webhook_delivered
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Outcome::Delivered
                    }
                    Err(e) => {
                        counters
                            .webhook_failed
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Outcome::Failed(e)
                    }
                }
            };
            let _ = tx
                .send(Done {
                    hook: hook_id,
                    event: event.id,
                    outcome,
                })
                .await;
        });
    }

    async fn finish(&mut self, done: Done) {
        let key = (done.hook, done.event.clone());
        self.in_flight.remove(&key);
        let name = self
            .hooks
            .iter()
            .find(|h| h.id == done.hook)
            .map(|h| h.config.name.clone())
            .unwrap_or_default();
        let event = self.recent.iter().find(|e| e.id == done.event).cloned();
        match done.outcome {
            Outcome::Delivered => {
                info!(webhook = %name, event = %done.event, kind = ?event.as_ref().map(|e| e.kind), "notification sent");
                self.retries.remove(&key);
                self.notified.insert(key);
                self.own.entries.push(NotifiedEntry {
                    hook: done.hook,
                    event: done.event,
                    at_ms: crate::time::unix_ms(),
                });
                let cutoff = crate::time::unix_ms().saturating_sub(2 * WINDOW.as_millis() as u64);
                self.own.entries.retain(|e| e.at_ms >= cutoff);
                let excess = self.own.entries.len().saturating_sub(MAX_NOTIFIED);
                self.own.entries.drain(..excess);
                if let Ok(content) = crate::codec::encode(&self.own) {
                    self.ctx.replication.publish(RecordKind::Notified, content).await;
                }
            }
            Outcome::NotConfirmed => {
                let old = event
                    .is_none_or(|e| crate::time::unix_ms().saturating_sub(e.at_ms) > CONFIRM_WINDOW.as_millis() as u64);
                if old {
                    debug!(webhook = %name, event = %done.event, "no other node confirmed the event; dropping it");
                    self.notified.insert(key);
                } else {
                    self.retries.insert(
                        key,
                        Retry {
                            attempts: 0,
                            next: Instant::now() + TICK,
                        },
                    );
                }
            }
            Outcome::Failed(error) => {
                let r = self.retries.entry(key.clone()).or_insert(Retry {
                    attempts: 0,
                    next: Instant::now(),
                });
                r.attempts += 1;
                if r.attempts >= MAX_ATTEMPTS {
                    warn!(webhook = %name, event = %done.event, %error, "giving up on a notification");
                    self.retries.remove(&key);
                    self.notified.insert(key);
                } else {
                    let wait = Duration::from_secs(1u64 << r.attempts.min(9)).min(MAX_BACKOFF);
                    r.next = Instant::now() + wait;
                    warn!(webhook = %name, event = %done.event, %error, retry_in = ?wait, "notification failed");
                }
            }
        }
    }
}
