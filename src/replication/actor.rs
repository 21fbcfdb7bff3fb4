//! The replication task: the only writer of items and of the index.
//!
//! It receives verified items (from the broadcast filter, anti-entropy sessions, uploads),
//! keeps the winner of each key, fetches missing bodies from the peers that announced them
//! (falling back to other holders), commits, asks membership to announce what it committed,
//! and schedules anti-entropy: periodically, when this node joins, and when a member comes up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::seq::IndexedRandom;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::filter::ItemFilter;
use super::index::Entry;
use super::item::{FAMILY_FILE, ItemKey, ItemMeta, RecordKind, SignedItem, WireItem};
use super::member_up::MemberUpSyncs;
use super::policy::{Reject, Verified};
use super::sync::Syncer;
use super::{Command, Committed, MAX_BROADCAST_ITEM, Origin, ReplicationConfig, ReplicationHandle, Shared, hlc};
use crate::files::Materializer;
use crate::identity::{PublicKey, SecretKey};
use crate::membership::{BroadcastFilter, MemberEvent, MemberState, MembershipHandle, NodeId};
use crate::transport::{Target, Transport};

/// Body fetches in flight at once.
pub const MAX_CONCURRENT_FETCHES: usize = 16;
/// Items waiting for a body at once; beyond this new ones are dropped (anti-entropy repairs).
pub const MAX_PENDING_ITEMS: usize = 4096;
/// Anti-entropy sessions this node runs at once as initiator.
pub const MAX_SYNC_SESSIONS: usize = 2;
/// Least time between anti-entropy sessions triggered by membership changes.
pub const TRIGGERED_SYNC_SPACING: Duration = Duration::from_millis(500);
/// Times a declined session is tried again (after 0.5, 1 and 2 s).
pub const MAX_SYNC_RETRIES: u32 = 3;
/// Members that came up kept for a session when one cannot start at once (the oldest goes).
pub const MAX_WANTED_SYNCS: usize = 4;
/// While received items are not passed on (the broadcast backlog is full), a node starts an
/// anti-entropy session this often instead of once per `anti_entropy_interval`.
pub const OVERFLOW_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The receiving half created by [`super::channel`].
pub struct ActorParts {
    pub(crate) rx: mpsc::Receiver<Command>,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
}

impl ReplicationHandle {
    /// The filter membership uses to judge item broadcasts.
    pub fn broadcast_filter(&self) -> Box<dyn BroadcastFilter> {
        Box::new(ItemFilter::new(self.shared.clone(), self.cmds.clone()))
    }
}

/// Where a committed item came from: decides whether to announce it and which counter moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A broadcast; announced again once its body is here (inline ones foca passes on itself).
    Broadcast,
    /// Anti-entropy; not announced (the peer it came from already has it everywhere near).
    Sync,
    /// The local API.
    Upload,
    /// This node's own record.
    Local,
}

struct Pending {
    item: Verified,
    holders: VecDeque<PublicKey>,
    tried: HashSet<PublicKey>,
    source: Source,
}

struct Actor {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
    tx: mpsc::Sender<Command>,
    events: mpsc::Receiver<MemberEvent>,
    membership: MembershipHandle,
    syncer: Syncer,
    materializer: Materializer,
    secret: SecretKey,
    hlc: hlc::Hlc,
    pending: HashMap<Vec<u8>, Pending>,
    fetching: HashSet<[u8; 32]>,
    /// Committed items per body hash; a body is deleted when its count drops to zero.
    refs: HashMap<[u8; 32], usize>,
    queue: VecDeque<Vec<u8>>,
    syncs_running: usize,
    last_triggered_sync: Option<Instant>,
    /// Which members that come up to reconcile with.
    member_up: MemberUpSyncs,
    /// Members that came up while no triggered session could start (spacing or session
    /// limit), newest last: after a partition heals, the one that brings the other side's
    /// writes may be any of them, so they are not dropped.
    wanted: VecDeque<NodeId>,
    interval: Duration,
}

/// Loads the index from the store and starts the replication task. Installs the stream
/// handler on `transport`.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    parts: ActorParts,
    config: &ReplicationConfig,
    membership: MembershipHandle,
    events: mpsc::Receiver<MemberEvent>,
    transport: Transport,
    materializer: Materializer,
    secret: SecretKey,
) -> Result<tokio::task::JoinHandle<()>, crate::store::StoreError> {
    let ActorParts { rx, tx, shared } = parts;
    let mut floor = shared.store.clock()?;
    let mut refs: HashMap<[u8; 32], usize> = HashMap::new();
    // Large bodies are files, made durable with the batch that materializes them: a crash
    // can lose one whose item sled already saved. Such an item is forgotten, so that
    // anti-entropy brings it (and its body) again instead of this node claiming to hold it.
    let mut intact: HashMap<[u8; 32], bool> = HashMap::new();
    {
        let mut index = shared.index.write().unwrap_or_else(|e| e.into_inner());
        for entry in shared.store.items() {
            let (key, raw) = entry?;
            match super::decode_stored(&raw) {
                Some((item, content)) => {
                    floor = floor.max(item.meta.version);
                    let meta = &item.meta;
                    if !meta.deleted
                        && meta.size > crate::store::SMALL_BODY_MAX
                        && !*intact
                            .entry(meta.hash)
                            .or_insert_with(|| shared.store.body_intact(&meta.hash, meta.size))
                    {
                        warn!(item = %meta.key, "stored body missing or damaged; fetching it again");
                        shared.store.remove_item(&key)?;
                        shared.store.remove_body(&meta.hash)?;
                        continue;
                    }
                    if !item.meta.deleted {
                        *refs.entry(item.meta.hash).or_default() += 1;
                        // Items stored with their content inline (older layout) move it to
                        // the body store.
                        if let Some(content) = content
                            && shared.store.body_size(&item.meta.hash)?.is_none()
                            && let Ok(mut w) = shared.store.body_writer(item.meta.hash, item.meta.size)
                        {
                            let _ = w.write(&content).and_then(|()| w.finish());
                        }
                    }
                    index.insert(
                        key.to_vec(),
                        Entry {
                            rank: item.meta.rank(),
                            digest: item.digest(),
                        },
                    );
                }
                None => warn!(key = ?key, "skipping an unreadable stored item"),
            }
        }
        info!(items = index.len(), "replicated state loaded");
    }
    let syncer = Syncer {
        shared: shared.clone(),
        tx: tx.clone(),
        transport: transport.clone(),
    };
    let (probes_tx, probes_rx) = mpsc::channel(super::probe::PROBE_INBOX_CAPACITY);
    transport.set_probe_inbox(probes_tx);
    shared.spawn(super::probe::serve(
        shared.clone(),
        transport.clone(),
        membership.clone(),
        probes_rx,
    ));
    let actor = Actor {
        shared,
        rx,
        tx,
        events,
        membership,
        syncer,
        materializer,
        secret,
        hlc: hlc::Hlc::new(floor),
        pending: HashMap::new(),
        fetching: HashSet::new(),
        refs,
        queue: VecDeque::new(),
        syncs_running: 0,
        last_triggered_sync: None,
        member_up: MemberUpSyncs::default(),
        wanted: VecDeque::new(),
        interval: config.anti_entropy_interval,
    };
    actor.restore_files();
    let shared = actor.shared.clone();
    Ok(shared.spawn(actor.run()))
}

impl Actor {
    async fn run(mut self) {
        // Start the period at a random phase so nodes started together do not sync in step.
        let phase = self.interval.mul_f64(rand::random::<f64>());
        let mut tick = tokio::time::interval_at(Instant::now() + phase, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut overflow = tokio::time::interval(OVERFLOW_SYNC_INTERVAL);
        overflow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut skipped_seen = 0;
        loop {
            // Members that came up while a triggered session could not start yet.
            let retry_at = self
                .last_triggered_sync
                .map_or_else(Instant::now, |t| t + TRIGGERED_SYNC_SPACING);
            let can_start = !self.wanted.is_empty() && self.syncs_running < MAX_SYNC_SESSIONS;
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at), if can_start => {
                    if let Some(id) = self.wanted.pop_front() {
                        self.sync_with(Some(id), true);
                    }
                }
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => return,
                },
                ev = self.events.recv() => match ev {
                    Some(MemberEvent::Joined) => self.sync_with(None, true),
                    Some(MemberEvent::Up(id)) => {
                        let (alive, suspect, _) = self.membership.snapshot().counts();
                        // The counts include this node.
                        let others = (alive + suspect).saturating_sub(1);
                        if self.member_up.on_up(others, rand::random::<f64>()) {
                            self.sync_with(Some(id), true);
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => self.sync_with(None, false),
                _ = overflow.tick() => {
                    // Items this node did not pass on (broadcast backlog full) may have
                    // reached few members: reconcile now rather than at the next round.
                    let skipped = self.membership.stats().relays_skipped.load(Ordering::Relaxed);
                    if skipped != skipped_seen {
                        skipped_seen = skipped;
                        self.sync_with(None, true);
                    }
                }
            }
        }
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Offer { item, holder, origin } => {
                // A sync session claimed this version before verifying it (see `Shared::claim`).
                let claim = (origin == Origin::Sync).then(|| item.item.digest());
                // Older versions are expected during anti-entropy; only count them from broadcasts.
                let source = match origin {
                    Origin::Broadcast => Source::Broadcast,
                    Origin::Sync => Source::Sync,
                };
                let what = item.item.meta.key.to_string();
                if let Err(reason) = self.offer(item, holder, source).await
                    && (reason != Reject::Stale || origin == Origin::Broadcast)
                {
                    match holder {
                        Some(peer) => self.shared.stats.reject_from_peer(reason, &peer, &what),
                        None => self.shared.stats.reject(reason),
                    }
                }
                // Committed, pending its body, or refused: later copies are judged by the index.
                if let Some(digest) = claim {
                    self.shared.release_claim(&digest);
                }
            }
            Command::SyncNow => self.sync_with(None, true),
            Command::Upload { item, reply } => {
                let result = self.upload(item).await;
                let _ = reply.send(result);
            }
            Command::Publish {
                kind,
                content,
                broadcast,
            } => self.publish(kind, content, broadcast).await,
            Command::FetchDone { hash, holder, ok } => self.fetch_done(hash, holder, ok).await,
            Command::SyncDone => self.syncs_running = self.syncs_running.saturating_sub(1),
            Command::RetrySync { peer, attempt } => {
                if self.syncs_running < MAX_SYNC_SESSIONS {
                    self.start_sync(peer, attempt);
                }
            }
        }
    }

    /// Accepts a verified item if it beats what is stored; commits it now or after fetching
    /// its body.
    async fn offer(&mut self, item: Verified, holder: Option<PublicKey>, source: Source) -> Result<(), Reject> {
        let key = item.item.meta.key.to_bytes();
        let rank = item.item.meta.rank();
        if self.shared.index().get(&key).is_some_and(|e| e.rank >= rank) {
            return Err(Reject::Stale);
        }
        if let Some(p) = self.pending.get_mut(&key) {
            let pending_rank = p.item.item.meta.rank();
            if pending_rank > rank {
                return Err(Reject::Stale);
            }
            if pending_rank == rank {
                if let Some(h) = holder.filter(|h| !p.tried.contains(h) && !p.holders.contains(h)) {
                    p.holders.push_back(h);
                }
                return Ok(());
            }
        }
        self.hlc.observe(item.item.meta.version);
        if self.body_ready(&item) {
            // Complete broadcast items are already being passed on by foca; an announcement
            // whose body this node already holds (the same bytes under a new version, or
            // another name) is passed on from here, as it would be after a fetch.
            let announce = source == Source::Broadcast && !super::filter::passed_on_at_once(&item);
            self.commit(item, source, announce).await;
            return Ok(());
        }
        if self.pending.len() >= MAX_PENDING_ITEMS && !self.pending.contains_key(&key) {
            self.shared.stats.items_dropped_busy.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.pending.insert(
            key.clone(),
            Pending {
                item,
                holders: holder.into_iter().collect(),
                tried: HashSet::new(),
                source,
            },
        );
        self.queue.push_back(key);
        self.pump();
        Ok(())
    }

    /// Whether `item` can be committed without fetching anything: a delete, content already
    /// stored, or content that travelled with it (written to the body store here).
    fn body_ready(&self, v: &Verified) -> bool {
        let meta = &v.item.meta;
        if meta.deleted {
            return true;
        }
        if self.shared.store.body_size(&meta.hash).ok().flatten() == Some(meta.size) {
            return true;
        }
        if let Some(content) = &v.content
            && let Ok(mut w) = self.shared.store.body_writer(meta.hash, meta.size)
        {
            return w.write(content).is_ok() && w.finish().is_ok();
        }
        false
    }

    async fn upload(&mut self, item: Verified) -> Result<Committed, Reject> {
        let key = item.item.meta.key.to_bytes();
        let version = item.item.meta.version;
        let hash = item.item.meta.hash;
        let newer_pending = self
            .pending
            .get(&key)
            .is_some_and(|p| p.item.item.meta.rank() >= item.item.meta.rank());
        let stale = newer_pending
            || self
                .shared
                .index()
                .get(&key)
                .is_some_and(|e| e.rank >= item.item.meta.rank());
        // Refusals are counted by the API layer, which sees every refused upload.
        if stale || !self.body_ready(&item) {
            self.collect_body(hash);
            return Err(if stale { Reject::Stale } else { Reject::HashMismatch });
        }
        self.hlc.observe(version);
        self.commit(item, Source::Upload, true).await;
        Ok(Committed { version })
    }

    async fn publish(&mut self, kind: RecordKind, content: Vec<u8>, broadcast: bool) {
        let node = self.secret.public();
        let key = ItemKey::Node { node, kind };
        let hash = *blake3::hash(&content).as_bytes();
        if let Some((current, _)) = self
            .shared
            .store
            .get_item(&key.to_bytes())
            .ok()
            .flatten()
            .and_then(|raw| super::decode_stored(&raw))
            && current.meta.hash == hash
        {
            return;
        }
        let meta = ItemMeta {
            network: self.shared.policy().network_id,
            key,
            version: self.hlc.issue(crate::time::unix_ms()),
            signer: node,
            hash,
            size: content.len() as u64,
            deleted: false,
        };
        let item = Verified {
            item: SignedItem::sign(meta, &self.secret),
            content: Some(content),
        };
        if !self.body_ready(&item) {
            warn!(item = %item.item.meta.key, "cannot store this node's own record");
            return;
        }
        self.commit(item, Source::Local, broadcast).await;
    }

    /// Stores the new winner, updates the index and the files on disk, and (if `announce`)
    /// starts disseminating it.
    async fn commit(&mut self, v: Verified, source: Source, announce: bool) {
        let meta = &v.item.meta;
        let key = meta.key.to_bytes();
        // Content lives in the body store (written by `body_ready`); the item keeps the meta.
        let stored = WireItem::new(&v.item, None);
        let encoded = match crate::codec::encode(&stored) {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot encode item");
                return;
            }
        };
        if let Err(e) = self.shared.store.put_item(&key, &encoded) {
            warn!(item = %meta.key, error = %e, "cannot store item");
            return;
        }
        let old = self.shared.index.write().unwrap_or_else(|e| e.into_inner()).insert(
            key.clone(),
            Entry {
                rank: meta.rank(),
                digest: v.item.digest(),
            },
        );
        self.shared.refusals().held(&key, &meta.rank());
        let _ = self.shared.store.save_clock(self.hlc.last());
        let stats = &self.shared.stats;
        stats.items_committed.fetch_add(1, Ordering::Relaxed);
        match source {
            Source::Broadcast => &stats.items_from_broadcast,
            Source::Sync => &stats.items_from_sync,
            Source::Upload => &stats.items_uploaded,
            Source::Local => &stats.items_local,
        }
        .fetch_add(1, Ordering::Relaxed);
        debug!(item = %meta.key, version = meta.version, ?source, "committed");
        let _ = self.shared.commits.send(super::CommitEvent {
            key: meta.key.clone(),
            version: meta.version,
            deleted: meta.deleted,
        });
        if !meta.deleted {
            *self.refs.entry(meta.hash).or_default() += 1;
        }
        if let Some(old) = old
            && !old.rank.deleted
        {
            self.release(old.rank.hash);
        }
        if let ItemKey::File { name } = &meta.key {
            if meta.deleted {
                self.materializer.remove(name);
            } else {
                self.materializer.write(name, meta.hash, meta.size);
            }
        }
        if announce {
            let data = self.broadcast_bytes(&v);
            self.membership.broadcast(data.into()).await;
        }
    }

    /// The broadcast form of an item: with its content when that fits in a SWIM packet.
    fn broadcast_bytes(&self, v: &Verified) -> Vec<u8> {
        let meta = &v.item.meta;
        let content = match (&v.content, meta.deleted) {
            (_, true) => None,
            (Some(c), false) => Some(c.clone()),
            (None, false) => self.shared.small_content(&v.item, MAX_BROADCAST_ITEM),
        };
        let with_content = crate::codec::encode(&WireItem::new(&v.item, content)).unwrap_or_default();
        if with_content.len() <= MAX_BROADCAST_ITEM {
            with_content
        } else {
            crate::codec::encode(&WireItem::new(&v.item, None)).unwrap_or_default()
        }
    }

    /// Drops one reference to a body held by a committed item.
    fn release(&mut self, hash: [u8; 32]) {
        if let Some(n) = self.refs.get_mut(&hash) {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&hash);
                self.collect_body(hash);
            }
        }
    }

    /// Deletes a body that no committed item, pending item or fetch refers to.
    fn collect_body(&self, hash: [u8; 32]) {
        let referenced = self.refs.contains_key(&hash)
            || self.pending.values().any(|p| p.item.item.meta.hash == hash)
            || self.fetching.contains(&hash);
        if !referenced && let Err(e) = self.shared.store.remove_body(&hash) {
            debug!(error = %e, "removing an unused body");
        }
    }

    /// Starts fetches while there are free slots.
    fn pump(&mut self) {
        let mut deferred = Vec::new();
        while self.fetching.len() < MAX_CONCURRENT_FETCHES {
            let Some(key) = self.queue.pop_front() else { break };
            let Some(p) = self.pending.get_mut(&key) else { continue };
            let (hash, size) = (p.item.item.meta.hash, p.item.item.meta.size);
            if self.fetching.contains(&hash) {
                // The same body is on its way for another key.
                deferred.push(key);
                continue;
            }
            let Some(holder) = p.holders.pop_front() else {
                info!(item = %p.item.item.meta.key, "no peer could provide the body; anti-entropy will retry");
                self.pending.remove(&key);
                continue;
            };
            p.tried.insert(holder);
            self.fetching.insert(hash);
            let target = self.target_of(&holder);
            let syncer = self.syncer.clone();
            let tx = self.tx.clone();
            self.shared.spawn(async move {
                let result = syncer.fetch_body(holder, target, hash, size).await;
                if let Err(e) = &result {
                    debug!(peer = %holder.short(), error = %e, "body fetch failed");
                }
                let _ = tx
                    .send(Command::FetchDone {
                        hash,
                        holder,
                        ok: result.is_ok(),
                    })
                    .await;
            });
        }
        self.queue.extend(deferred);
    }

    async fn fetch_done(&mut self, hash: [u8; 32], holder: PublicKey, ok: bool) {
        self.fetching.remove(&hash);
        let keys: Vec<Vec<u8>> = self
            .pending
            .iter()
            .filter(|(_, p)| p.item.item.meta.hash == hash)
            .map(|(k, _)| k.clone())
            .collect();
        if ok {
            self.shared.stats.bodies_fetched.fetch_add(1, Ordering::Relaxed);
            if keys.is_empty() {
                // A newer version replaced the item while its body was on the way.
                self.collect_body(hash);
            }
            for key in keys {
                if let Some(p) = self.pending.remove(&key) {
                    let newest = self
                        .shared
                        .index()
                        .get(&key)
                        .is_none_or(|e| e.rank < p.item.item.meta.rank());
                    if newest {
                        // A body fetched after an announcement is announced again from here,
                        // so every announcer can serve it.
                        let announce = p.source == Source::Broadcast;
                        self.commit(p.item, p.source, announce).await;
                    }
                }
            }
        } else {
            self.shared.stats.fetch_failures.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %holder.short(), "retrying the body with another holder");
            for key in keys {
                self.queue.push_front(key);
            }
        }
        self.pump();
    }

    /// Where to dial a member, from the membership view.
    fn target_of(&self, key: &PublicKey) -> Option<Target> {
        self.membership
            .snapshot()
            .members
            .iter()
            .find(|m| m.id.key == *key && !m.local)
            .map(|m| m.id.target())
    }

    /// Starts an anti-entropy session with `peer` (or a random alive member). Triggered
    /// sessions are spaced; periodic ones are not.
    fn sync_with(&mut self, peer: Option<NodeId>, triggered: bool) {
        let now = Instant::now();
        let spaced = triggered
            && self
                .last_triggered_sync
                .is_some_and(|t| now - t < TRIGGERED_SYNC_SPACING);
        if self.syncs_running >= MAX_SYNC_SESSIONS || spaced {
            if let Some(id) = peer.filter(|_| triggered) {
                self.wanted.retain(|w| w.key != id.key);
                if self.wanted.len() >= MAX_WANTED_SYNCS {
                    self.wanted.pop_front();
                }
                self.wanted.push_back(id);
            }
            return;
        }
        // A member that just came up is dialled at the address its event names: the published
        // membership view may not show it alive yet.
        let id = match peer {
            Some(id) => id,
            None => {
                let snapshot = self.membership.snapshot();
                let alive: Vec<_> = snapshot
                    .members
                    .iter()
                    .filter(|m| !m.local && m.state == MemberState::Alive)
                    .collect();
                let Some(member) = alive.choose(&mut rand::rng()) else {
                    return;
                };
                member.id.clone()
            }
        };
        if triggered {
            self.last_triggered_sync = Some(now);
        }
        self.start_sync(id, 0);
    }

    /// Runs a session with `id`; if `id` declines it (serving its limit), tries again later,
    /// up to [`MAX_SYNC_RETRIES`] times with doubling waits: the session may be the one that
    /// brings what the other side of a healed partition wrote.
    fn start_sync(&mut self, id: NodeId, attempt: u32) {
        let (key, target) = (id.key, id.target());
        self.syncs_running += 1;
        self.member_up.synced();
        self.shared.stats.syncs_started.fetch_add(1, Ordering::Relaxed);
        let syncer = self.syncer.clone();
        let tx = self.tx.clone();
        self.shared.spawn(async move {
            let mut declined = false;
            match syncer.reconcile(key, Some(target)).await {
                Ok(report) => {
                    declined = report.declined;
                    if report.in_sync {
                        syncer.shared.stats.syncs_in_sync.fetch_add(1, Ordering::Relaxed);
                    }
                    if report.received + report.sent > 0 {
                        debug!(peer = %key.short(), received = report.received, sent = report.sent, "anti-entropy repaired differences");
                    }
                }
                Err(e) => debug!(peer = %key.short(), error = %e, "anti-entropy failed"),
            }
            let _ = tx.send(Command::SyncDone).await;
            if declined && attempt < MAX_SYNC_RETRIES {
                tokio::time::sleep(TRIGGERED_SYNC_SPACING * (1 << attempt)).await;
                let _ = tx
                    .send(Command::RetrySync {
                        peer: id,
                        attempt: attempt + 1,
                    })
                    .await;
            }
        });
    }

    /// At start, makes the files directory match the stored files (a crash may have left a
    /// file missing or stale).
    fn restore_files(&self) {
        for item in self
            .shared
            .store
            .items_with_prefix(&[FAMILY_FILE])
            .filter_map(Result::ok)
        {
            let Some((item, _)) = super::decode_stored(&item.1) else {
                continue;
            };
            let ItemKey::File { name } = &item.meta.key else {
                continue;
            };
            let path = self.materializer.dir().join(name);
            let on_disk = std::fs::metadata(&path).ok().map(|m| m.len());
            if item.meta.deleted {
                if on_disk.is_some() {
                    self.materializer.remove(name);
                }
            } else if on_disk != Some(item.meta.size) || !self.holds_content(&path, &item.meta.hash) {
                self.materializer.write(name, item.meta.hash, item.meta.size);
            }
        }
    }

    /// Whether the materialized file at `path` holds the body `hash`. A link to the body file
    /// does without reading it again: `spawn` has just checked every large body.
    fn holds_content(&self, path: &std::path::Path, hash: &[u8; 32]) -> bool {
        use std::os::unix::fs::MetadataExt;
        let inode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let linked = self
            .shared
            .store
            .body_path(hash)
            .and_then(|body| inode(&body))
            .is_some_and(|body| inode(path) == Some(body));
        linked || same_content(path, hash)
    }
}

/// Whether the file at `path` hashes to `hash`. A crash between a rename and the directory
/// sync can leave the previous version, possibly of the same size, so sizes are not enough.
fn same_content(path: &std::path::Path, hash: &[u8; 32]) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file).is_ok() && hasher.finalize().as_bytes() == hash
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_content_compares_hashes_not_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"version two!").unwrap();
        assert!(super::same_content(&path, blake3::hash(b"version two!").as_bytes()));
        assert!(!super::same_content(&path, blake3::hash(b"version one!").as_bytes()));
        assert!(!super::same_content(
            &dir.path().join("missing"),
            blake3::hash(b"").as_bytes()
        ));
    }
}
