//! Signed replicated state: per-node records and files.
//!
//! - [`item`]: the signed item layout and the order that picks a winner; [`hlc`]: versions.
//! - [`policy`]: the checks every item passes before anything is stored.
//! - Push: small items ride inline in SWIM custom broadcasts ([`filter`]); larger ones are
//!   announced and their bodies pulled over a QUIC stream from the announcer ([`sync`]).
//! - Repair: periodic and membership-triggered anti-entropy by range-based set reconciliation
//!   ([`reconcile`], over [`index`]), constant cost when in sync.
//! - One task ([`actor`]) decides and commits; others verify in parallel and hand it
//!   [`policy::Verified`] items over a bounded channel.

mod actor;
mod filter;
pub mod hlc;
pub mod index;
pub mod item;
pub mod member_up;
pub mod policy;
pub mod probe;
pub mod protocol;
pub mod reconcile;
pub mod records;
pub mod refused;
pub mod sync;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use actor::{ActorParts, spawn};
// For the simulator (`crate::sim`), which runs the filter's checks and schedules anti-entropy
// as the actor does.
pub(crate) use actor::{MAX_WANTED_SYNCS, TRIGGERED_SYNC_SPACING};
pub(crate) use filter::{Seen, broadcast_key, passed_on_at_once};
use index::Index;
use item::{ItemKey, RecordKind, WireItem};
use policy::{Policy, Reject, Verified};

use crate::identity::PublicKey;
use crate::store::Store;

/// Capacity of the replication task's command channel.
pub const COMMAND_CAPACITY: usize = 1024;
/// Commit notifications buffered per subscriber; a slower subscriber misses the oldest.
pub const COMMIT_EVENTS_CAPACITY: usize = 1024;
/// Refusals of items from peers are logged at most once per reason this often, with their
/// count, so a misconfigured or hostile peer cannot flood the log.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// Notices of peers starting to offer refused items buffered per subscriber.
pub const REFUSAL_NOTICES_CAPACITY: usize = 64;
/// Largest encoded item carried in a SWIM broadcast (leaves room for headers and updates in
/// a 1150-byte packet).
pub const MAX_BROADCAST_ITEM: usize = 900;

/// Settings of replication, from `[replication]`.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// Period of anti-entropy with a random peer.
    pub anti_entropy_interval: Duration,
}

/// Counters of replication.
#[derive(Debug, Default)]
pub struct Stats {
    /// Items committed (new winners), from any source.
    pub items_committed: AtomicU64,
    /// Of those, received in broadcasts.
    pub items_from_broadcast: AtomicU64,
    /// Of those, received by anti-entropy.
    pub items_from_sync: AtomicU64,
    /// Of those, uploaded through the local API.
    pub items_uploaded: AtomicU64,
    /// Of those, published by this node.
    pub items_local: AtomicU64,
    /// File bodies fetched from peers.
    pub bodies_fetched: AtomicU64,
    /// Bytes of those bodies.
    pub body_bytes_fetched: AtomicU64,
    /// Body bytes served to peers.
    pub body_bytes_served: AtomicU64,
    /// Body fetches that failed (and were retried elsewhere or dropped).
    pub fetch_failures: AtomicU64,
    /// Anti-entropy sessions this node started.
    pub syncs_started: AtomicU64,
    /// Of those, found in sync at the first exchange.
    pub syncs_in_sync: AtomicU64,
    /// Sessions peers opened that this node declined (already serving its limit).
    pub syncs_declined: AtomicU64,
    /// Items sent to peers during anti-entropy.
    pub items_sent_by_sync: AtomicU64,
    /// Anti-entropy sessions finished (both roles; declined ones excluded on the serving side).
    /// Counted after their bytes, so `sync_bytes_* / sync_sessions` read together is a mean.
    pub sync_sessions: AtomicU64,
    /// Bytes written on anti-entropy streams (both roles, frame headers included).
    pub sync_bytes_sent: AtomicU64,
    /// Bytes read from anti-entropy streams (both roles, frame headers included).
    pub sync_bytes_received: AtomicU64,
    /// Items dropped because the replication task was busy (anti-entropy repairs them).
    pub items_dropped_busy: AtomicU64,
    rejected: [AtomicU64; Reject::ALL.len()],
    /// Per reason: when a refusal from a peer was last logged, and how many since.
    peer_log: std::sync::Mutex<[(Option<std::time::Instant>, u64); Reject::ALL.len()]>,
}

impl Stats {
    /// Counts a rejection.
    pub fn reject(&self, reason: Reject) {
        let i = Reject::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal of an item a peer sent, and logs it (rate-limited per reason).
    /// Stale items are normal when versions race, so they are only logged at debug.
    pub fn reject_from_peer(&self, reason: Reject, peer: &PublicKey, item: &str) {
        self.reject(reason);
        if reason == Reject::Stale {
            tracing::debug!(peer = %peer.short(), item, "stale item from a peer");
            return;
        }
        let i = Reject::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        let mut log = self.peer_log.lock().unwrap_or_else(|e| e.into_inner());
        let (last, count) = &mut log[i];
        *count += 1;
        let now = std::time::Instant::now();
        if last.is_none_or(|t| now - t >= REJECT_LOG_INTERVAL) {
            tracing::warn!(%reason, peer = %peer.short(), item, count = *count, "refused items from peers");
            *last = Some(now);
            *count = 0;
        }
    }

    /// Rejections so far for `reason`.
    pub fn rejected(&self, reason: Reject) -> u64 {
        let i = Reject::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        self.rejected[i].load(Ordering::Relaxed)
    }
}

/// Where an offered item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A SWIM broadcast.
    Broadcast,
    /// Anti-entropy.
    Sync,
}

/// Notice of a new winner committed for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitEvent {
    /// The key.
    pub key: ItemKey,
    /// Its new version.
    pub version: u64,
    /// Whether it is a delete.
    pub deleted: bool,
}

/// A peer started offering items this node refuses for a reason that does not change by
/// itself (see [`refused`]): raised once, not on every round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRefusal {
    /// The peer.
    pub peer: PublicKey,
    /// Why its item was refused.
    pub reason: Reject,
    /// The first item refused, as text (`file:NAME`, ...).
    pub item: String,
    /// Digest of that item's signed meta.
    pub digest: index::Digest,
    /// Its version.
    pub version: u64,
}

/// Outcome of an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The version now stored.
    pub version: u64,
}

pub(crate) enum Command {
    Offer {
        item: Verified,
        holder: Option<PublicKey>,
        origin: Origin,
    },
    Upload {
        item: Verified,
        reply: oneshot::Sender<Result<Committed, Reject>>,
    },
    Publish {
        kind: RecordKind,
        content: Vec<u8>,
        broadcast: bool,
    },
    FetchDone {
        hash: [u8; 32],
        holder: PublicKey,
        ok: bool,
    },
    SyncDone,
    /// Try again a session `peer` declined.
    RetrySync {
        peer: crate::membership::NodeId,
        attempt: u32,
    },
    /// Start an anti-entropy round with a random peer now (after a config reload).
    SyncNow,
}

/// State shared between the replication task (sole writer of the index and items) and the
/// tasks that read it: the broadcast filter, stream handlers, HTTP handlers.
pub(crate) struct Shared {
    pub index: RwLock<Index>,
    pub store: Store,
    /// Replaced whole on a config reload (`[files]`); readers take the current `Arc`.
    pub policy: std::sync::RwLock<Arc<Policy>>,
    pub stats: Stats,
    /// The replication task and everything it spawns (fetches, sessions).
    pub tasks: TaskTracker,
    pub cancel: CancellationToken,
    pub commits: tokio::sync::broadcast::Sender<CommitEvent>,
    /// Digests of item versions a sync session has verified and handed to the replication
    /// task, which has not dealt with them yet. Several sessions often bring the same items
    /// at once (every member syncs with one that just came up): one signature check each.
    pub in_flight: Mutex<HashSet<index::Digest>>,
    /// Reconciliation sessions peers opened with this node, running now.
    pub served_syncs: AtomicUsize,
    /// What this node refused from each peer, shown to that peer as held when reconciling.
    /// Sessions record and read it, the replication task drops what it came to hold, a
    /// `[files]` change clears it; each takes the lock briefly, never across an await.
    pub refusals: Mutex<refused::Refusals>,
    /// Peers starting to offer refused items (for the event log).
    pub refusal_notices: tokio::sync::broadcast::Sender<PeerRefusal>,
    /// In-sync probes this node asked, waiting for their answer.
    pub(crate) probes: probe::Pending,
}

impl Shared {
    /// Claims item version `digest` for verification; false when another session has it in
    /// flight already.
    pub fn claim(&self, digest: index::Digest) -> bool {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(digest)
    }

    /// Ends the claim on `digest` (dealt with, or dropped).
    pub fn release_claim(&self, digest: &index::Digest) {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(digest);
    }

    /// The acceptance policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The refusals per peer.
    pub fn refusals(&self) -> std::sync::MutexGuard<'_, refused::Refusals> {
        self.refusals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The content of a stored, non-deleted item of at most `limit` bytes.
    pub fn small_content(&self, item: &item::SignedItem, limit: usize) -> Option<Vec<u8>> {
        if item.meta.deleted || item.meta.size as usize > limit {
            return None;
        }
        let mut out = Vec::with_capacity(item.meta.size as usize);
        for chunk in self.store.body_chunks(&item.meta.hash) {
            out.extend_from_slice(&chunk.ok()?);
        }
        (out.len() as u64 == item.meta.size).then_some(out)
    }

    /// Spawns a task that ends when replication stops.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        })
    }

    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to replication: read the replicated state, upload, publish.
#[derive(Clone)]
pub struct ReplicationHandle {
    cmds: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// Why an upload through the handle failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The item was rejected.
    #[error("{0}")]
    Rejected(#[from] Reject),
    /// The replication task is gone (shutting down).
    #[error("replication is not running")]
    Stopped,
}

impl ReplicationHandle {
    /// The acceptance policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.policy()
    }

    /// Replaces the `[files]` part of the policy (config reload). Items already stored stay;
    /// from now on, names and signers are checked against `files`. An anti-entropy round with
    /// a peer then fetches items of newly accepted names that peers hold.
    pub async fn set_files(&self, files: BTreeMap<String, HashSet<crate::identity::PublicKey>>) {
        {
            let mut p = self.shared.policy.write().unwrap_or_else(|e| e.into_inner());
            let mut next = Policy::clone(&p);
            next.files = files;
            *p = Arc::new(next);
        }
        // What was refused under the old policy may be accepted now: ask for it again.
        self.shared.refusals().clear();
        let _ = self.cmds.send(Command::SyncNow).await;
    }

    /// Items currently refused from each peer, by reason (see [`refused`]).
    pub fn refused_items(&self) -> Vec<(PublicKey, Reject, usize)> {
        self.shared.refusals().counts()
    }

    /// Notices of peers starting to offer items this node refuses, from now on.
    pub fn subscribe_refusals(&self) -> tokio::sync::broadcast::Receiver<PeerRefusal> {
        self.shared.refusal_notices.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Number of committed items and their fingerprint.
    pub fn summary(&self) -> (usize, [u8; 32]) {
        let index = self.shared.index();
        (index.len(), index.fingerprint())
    }

    /// `node`'s record of `kind`, decoded; `None` if absent or not what this version expects.
    pub fn record<T: serde::de::DeserializeOwned>(&self, node: &PublicKey, kind: RecordKind) -> Option<T> {
        let (_, content) = self.get(&ItemKey::Node { node: *node, kind })?;
        crate::codec::decode_exact(&content?, policy::MAX_RECORD_SIZE as usize).ok()
    }

    /// Every node's record of `kind`, decoded (undecodable ones skipped).
    pub fn records_of<T: serde::de::DeserializeOwned>(&self, kind: RecordKind) -> Vec<(PublicKey, T)> {
        self.records(kind)
            .into_iter()
            .filter_map(|(item, content)| match item.meta.key {
                ItemKey::Node { node, .. } => Some((
                    node,
                    crate::codec::decode_exact(&content, policy::MAX_RECORD_SIZE as usize).ok()?,
                )),
                ItemKey::File { .. } => None,
            })
            .collect()
    }

    /// The stored item for `key`, if any, with its content when it is a record (files are
    /// read with [`Store::body_chunks`]).
    pub fn get(&self, key: &ItemKey) -> Option<(item::SignedItem, Option<Vec<u8>>)> {
        let raw = self.shared.store.get_item(&key.to_bytes()).ok()??;
        let (item, _) = decode_stored(&raw)?;
        let content = match key {
            ItemKey::Node { .. } => self.shared.small_content(&item, policy::MAX_RECORD_SIZE as usize),
            ItemKey::File { .. } => None,
        };
        Some((item, content))
    }

    /// Every stored record of `kind`, with its content.
    pub fn records(&self, kind: RecordKind) -> Vec<(item::SignedItem, Vec<u8>)> {
        self.shared
            .store
            .items_with_prefix(&[item::FAMILY_NODE])
            .filter_map(Result::ok)
            .filter_map(|(_, raw)| decode_stored(&raw))
            .filter(|(i, _)| matches!(i.meta.key, ItemKey::Node { kind: k, .. } if k == kind))
            .filter_map(|(i, _)| {
                let content = self.shared.small_content(&i, policy::MAX_RECORD_SIZE as usize)?;
                Some((i, content))
            })
            .collect()
    }

    /// Every stored item of the file family.
    pub fn files(&self) -> Vec<item::SignedItem> {
        self.shared
            .store
            .items_with_prefix(&[item::FAMILY_FILE])
            .filter_map(Result::ok)
            .filter_map(|(_, v)| decode_stored(&v).map(|(i, _)| i))
            .collect()
    }

    /// Whether a newer-or-equal version of `item`'s key is already stored.
    pub fn is_stale(&self, item: &item::SignedItem) -> bool {
        self.shared
            .index()
            .get(&item.meta.key.to_bytes())
            .is_some_and(|e| e.rank >= item.meta.rank())
    }

    /// Commits an item verified by the caller. For a file with content, its body must
    /// already be stored complete.
    pub async fn upload(&self, item: Verified) -> Result<Committed, UploadError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Command::Upload { item, reply })
            .await
            .map_err(|_| UploadError::Stopped)?;
        Ok(rx.await.map_err(|_| UploadError::Stopped)??)
    }

    /// Notifications of every commit from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CommitEvent> {
        self.shared.commits.subscribe()
    }

    /// The serving side of replication streams, for the stream dispatcher.
    pub fn syncer(&self, transport: crate::transport::Transport) -> sync::Syncer {
        sync::Syncer {
            shared: self.shared.clone(),
            tx: self.cmds.clone(),
            transport,
        }
    }

    /// Stops the replication task and every task it spawned, and waits for them.
    pub async fn stop(&self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Publishes (or replaces) one of this node's own records and disseminates it at once.
    /// Identical content is not published again.
    pub async fn publish(&self, kind: RecordKind, content: Vec<u8>) {
        let _ = self
            .cmds
            .send(Command::Publish {
                kind,
                content,
                broadcast: true,
            })
            .await;
    }

    /// Publishes a record without broadcasting it: peers get it by anti-entropy, at no cost
    /// to the mesh beyond the reconciliation rounds it runs anyway. For routine refreshes.
    pub async fn publish_quietly(&self, kind: RecordKind, content: Vec<u8>) {
        let _ = self
            .cmds
            .send(Command::Publish {
                kind,
                content,
                broadcast: false,
            })
            .await;
    }
}

/// Decodes an item as stored (it was verified before it was stored).
pub(crate) fn decode_stored(raw: &[u8]) -> Option<(item::SignedItem, Option<Vec<u8>>)> {
    let wire: WireItem = crate::codec::decode_exact(raw, protocol::MAX_FRAME).ok()?;
    let item = item::SignedItem::parse(&wire.meta, &wire.signature).ok()?;
    Some((item, wire.content))
}

/// Creates the handle and the receiving end of its command channel; the task is started with
/// [`spawn`] once membership exists (membership needs [`ReplicationHandle::broadcast_filter`]).
pub fn channel(store: Store, policy: Policy) -> (ReplicationHandle, ActorParts) {
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let shared = Arc::new(Shared {
        index: RwLock::new(Index::default()),
        store,
        policy: std::sync::RwLock::new(Arc::new(policy)),
        stats: Stats::default(),
        tasks: TaskTracker::new(),
        cancel: CancellationToken::new(),
        commits: tokio::sync::broadcast::channel(COMMIT_EVENTS_CAPACITY).0,
        in_flight: Mutex::new(HashSet::new()),
        served_syncs: AtomicUsize::new(0),
        refusals: Mutex::new(refused::Refusals::default()),
        refusal_notices: tokio::sync::broadcast::channel(REFUSAL_NOTICES_CAPACITY).0,
        probes: probe::Pending::default(),
    });
    (
        ReplicationHandle {
            cmds: tx.clone(),
            shared: shared.clone(),
        },
        ActorParts { rx, tx, shared },
    )
}
