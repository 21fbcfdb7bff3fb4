//! Replication over QUIC streams: anti-entropy sessions (both roles), body fetches, and the
//! stream handler that serves peers.
//!
//! These run in their own tasks, read the index and the store, verify what peers send, and
//! hand verified items to the replication task.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::index::{Digest, Entry};
use super::item::{ItemMeta, WireItem};
use super::policy::Reject;
use super::protocol::{
    BodyHeader, FRAME_TIMEOUT, MAX_ROUNDS, MAX_TURN_ITEM_BYTES, ProtocolError, Turn, read_frame, read_frame_sized,
    write_frame,
};
use super::reconcile::{self, View};
use super::{Command, Origin, Shared};
use crate::identity::PublicKey;
use crate::rpc::Request;
use crate::store::{BodyError, CHUNK_SIZE};
use crate::transport::{Target, Transport, TransportError};

/// Reconciliation sessions peers may have open with this node at once.
pub const MAX_SERVED_SYNCS: usize = 2;

/// Contents up to this size travel inline in reconciliation turns.
pub const SYNC_INLINE_MAX: usize = 64 * 1024;

/// Why a body fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("peer does not hold the body")]
    NotFound,
}

/// What one anti-entropy session did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Report {
    /// The first exchange showed both sides in sync.
    pub in_sync: bool,
    /// Items received.
    pub received: usize,
    /// Items sent.
    pub sent: usize,
    /// The peer closed the session without answering: it was serving its limit.
    pub declined: bool,
    /// Bytes this side wrote on the stream (frame headers included).
    pub bytes_sent: u64,
    /// Bytes this side read from the stream (frame headers included).
    pub bytes_received: u64,
}

/// Runs replication streams: anti-entropy sessions, body fetches, and the serving side of
/// both (dispatched by [`crate::rpc`]). Cheap to clone.
#[derive(Clone)]
pub struct Syncer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) transport: Transport,
}

impl Syncer {
    /// Reconciles with `peer` as the initiator: a probe datagram first (`probe`), and a
    /// stream session unless the peer answered that both sides are in sync.
    pub(crate) async fn reconcile(&self, peer: PublicKey, target: Option<Target>) -> Result<Report, FetchError> {
        if let Some(target) = target
            && super::probe::ask(&self.shared, &self.transport, peer, target).await == Some(true)
        {
            self.shared.stats.sync_sessions.fetch_add(1, Ordering::Release);
            return Ok(Report {
                in_sync: true,
                ..Report::default()
            });
        }
        let (mut send, mut recv) = self.transport.open_bi(peer, target).await?;
        let overlay = self.shared.refusals().overlay(&peer);
        let opening = Turn {
            ranges: reconcile::open(&reconcile::Overlay::new(&self.shared.index(), &overlay)),
            ..Turn::default()
        };
        let mut report = Report {
            bytes_sent: write_frame(&mut send, &Request::Reconcile(opening)).await? as u64,
            ..Report::default()
        };
        let result = self.converse(peer, &mut send, &mut recv, None, true, &mut report).await;
        self.count_session(&report);
        result?;
        Ok(report)
    }

    /// Adds a finished session's bytes to the counters (whether it ended well or not).
    fn count_session(&self, report: &Report) {
        let stats = &self.shared.stats;
        stats.sync_bytes_sent.fetch_add(report.bytes_sent, Ordering::Relaxed);
        stats
            .sync_bytes_received
            .fetch_add(report.bytes_received, Ordering::Relaxed);
        stats.sync_sessions.fetch_add(1, Ordering::Release);
    }

    async fn converse(
        &self,
        peer: PublicKey,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        mut first: Option<Turn>,
        initiator: bool,
        report: &mut Report,
    ) -> Result<(), ProtocolError> {
        let mut outbox = Outbox::default();
        for round in 0..MAX_ROUNDS {
            let turn = match first.take() {
                Some(t) => t,
                None => match read_frame_sized::<Turn>(recv).await? {
                    Some((t, size)) => {
                        report.bytes_received += size as u64;
                        t
                    }
                    // The other side had nothing more to say and closed; before answering
                    // anything, that is a refusal (see `serve_reconcile`).
                    None => {
                        report.declined = initiator && round == 0;
                        return Ok(());
                    }
                },
            };
            if round == 0 && initiator && turn.is_empty() {
                report.in_sync = true;
            }
            let reply = self.answer(peer, turn.clone(), &mut outbox, report).await;
            if reply.is_empty() && turn.is_empty() {
                send.finish()?;
                return Ok(());
            }
            report.bytes_sent += write_frame(send, &reply).await? as u64;
        }
        Err(ProtocolError::Violation("reconciliation did not converge"))
    }

    async fn answer(&self, peer: PublicKey, turn: Turn, outbox: &mut Outbox, report: &mut Report) -> Turn {
        let mut arrived = HashSet::new();
        for wire in turn.items {
            report.received += 1;
            if let Ok(meta) = ItemMeta::decode(&wire.meta) {
                arrived.insert(meta.key.to_bytes());
            }
            self.accept(peer, wire).await;
        }
        // The peer is shown what we refused from it as if we held it (read after this turn's
        // items, whose refusals count already).
        let overlay = self.shared.refusals().overlay(&peer);
        let (step, unsendable) = {
            let index = self.shared.index();
            let view = reconcile::Overlay::new(&index, &overlay);
            let step = reconcile::step(&view, &turn.ranges);
            let unsendable: HashSet<&[u8]> = turn
                .want
                .iter()
                .filter(|k| overlay.contains_key(*k) && !view.holds(k))
                .map(Vec::as_slice)
                .collect();
            (step, unsendable)
        };
        // A claim the peer contradicts is dropped: it listed a range without the version we
        // show, or asked for it without sending one of its own (it no longer holds it).
        let contradicted = step
            .unheld
            .iter()
            .map(Vec::as_slice)
            .chain(unsendable.iter().copied().filter(|k| !arrived.contains(*k)));
        {
            let mut refusals = self.shared.refusals();
            for key in contradicted {
                refusals.forget(&peer, key);
            }
        }
        // A want for a version we only show is answered with nothing: what we hold of that
        // key, if anything, is older than what the peer has.
        for key in turn.want.iter().filter(|k| !unsendable.contains(k.as_slice())) {
            outbox.push(key.clone());
        }
        for key in step.send {
            outbox.push(key);
        }
        let mut items = Vec::new();
        let mut bytes = 0usize;
        while let Some(key) = outbox.pop() {
            let Ok(Some(raw)) = self.shared.store.get_item(&key) else {
                continue;
            };
            if bytes + raw.len() > MAX_TURN_ITEM_BYTES && !items.is_empty() {
                outbox.push_front(key);
                break;
            }
            if let Some((item, _)) = super::decode_stored(&raw) {
                // Small contents travel with their items (a newcomer gets thousands of records
                // without a round trip each); larger ones are fetched as bodies.
                let content = self.shared.small_content(&item, SYNC_INLINE_MAX);
                let wire = WireItem::new(&item, content);
                bytes += wire.meta.len() + wire.content.as_ref().map_or(0, Vec::len);
                items.push(wire);
            }
        }
        report.sent += items.len();
        self.shared
            .stats
            .items_sent_by_sync
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        Turn {
            ranges: step.ranges,
            items,
            want: step.want,
        }
    }

    /// Verifies an item a peer sent during reconciliation and hands it to the replication task.
    async fn accept(&self, peer: PublicKey, wire: WireItem) {
        // Both sides send their version of a differing key; the older one is expected traffic
        // here, not a replay worth counting, and needs no signature check.
        let meta = ItemMeta::decode(&wire.meta).ok();
        if let Some(meta) = &meta
            && self
                .shared
                .index()
                .get(&meta.key.to_bytes())
                .is_some_and(|e| e.rank >= meta.rank())
        {
            return;
        }
        // The same version from another session, verified there and not yet committed.
        let digest = *blake3::hash(&wire.meta).as_bytes();
        if !self.shared.claim(digest) {
            return;
        }
        match self.shared.policy().verify(&wire, crate::time::unix_ms()) {
            Ok(item) => {
                let offer = Command::Offer {
                    item,
                    holder: Some(peer),
                    origin: Origin::Sync,
                };
                // The replication task releases the claim once it has dealt with the offer.
                if self.tx.send(offer).await.is_err() {
                    self.shared.release_claim(&digest);
                }
            }
            Err(reason) => {
                self.shared.release_claim(&digest);
                let what = meta.as_ref().map(|m| m.key.to_string()).unwrap_or_default();
                self.shared.stats.reject_from_peer(reason, &peer, &what);
                if let Some(meta) = meta {
                    self.remember_refusal(peer, &meta, digest, reason, what);
                }
            }
        }
    }

    /// Remembers a refusal that will not change by itself, so reconciliation with `peer`
    /// stops bringing that item; the first such refusal of a reason from a peer is logged and
    /// noticed (for the event log), not the ones after.
    fn remember_refusal(&self, peer: PublicKey, meta: &ItemMeta, digest: Digest, reason: Reject, what: String) {
        let entry = Entry {
            rank: meta.rank(),
            digest,
        };
        if !self.shared.refusals().record(peer, &meta.key.to_bytes(), entry, reason) {
            return;
        }
        tracing::warn!(
            peer = %peer,
            reason = reason.label(),
            item = %what,
            "a peer offers items this node refuses; not asking it for them again until [files] changes"
        );
        let _ = self.shared.refusal_notices.send(super::PeerRefusal {
            peer,
            reason,
            item: what,
            digest,
            version: meta.version,
        });
    }

    /// Fetches the body `hash` of `size` bytes from `peer` into the store.
    pub(crate) async fn fetch_body(
        &self,
        peer: PublicKey,
        target: Option<Target>,
        hash: [u8; 32],
        size: u64,
    ) -> Result<(), FetchError> {
        let (mut send, mut recv) = self.transport.open_bi(peer, target).await?;
        write_frame(&mut send, &Request::GetBody { hash }).await?;
        send.finish().map_err(ProtocolError::from)?;
        let header: BodyHeader = read_frame(&mut recv)
            .await?
            .ok_or(ProtocolError::Violation("no body header"))?;
        match header.size {
            None => return Err(FetchError::NotFound),
            Some(s) if s != size => {
                return Err(ProtocolError::Violation("body size differs from the signed size").into());
            }
            Some(_) => {}
        }
        let mut writer = self.shared.store.body_writer(hash, size)?;
        while writer.received() < size {
            let chunk = tokio::time::timeout(FRAME_TIMEOUT, recv.read_chunk(CHUNK_SIZE, true))
                .await
                .map_err(|_| ProtocolError::Timeout)?
                .map_err(ProtocolError::from)?
                .ok_or(BodyError::TooShort {
                    got: writer.received(),
                    expected: size,
                })?;
            writer.write(&chunk.bytes)?;
            self.shared
                .stats
                .body_bytes_fetched
                .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        }
        writer.finish()?;
        Ok(())
    }

    /// Answers a reconciliation a peer opened with `turn` (a frame of `size` bytes). Beyond
    /// [`MAX_SERVED_SYNCS`] at once,
    /// closes the stream at once: the peer takes that as a finished session, and its next round
    /// (or ours) does the work. A node that just came up gets a session from every member at
    /// once, each bringing the same items.
    pub(crate) async fn serve_reconcile(
        &self,
        peer: PublicKey,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        turn: Turn,
        size: usize,
    ) -> Result<(), ProtocolError> {
        let served = &self.shared.served_syncs;
        if served.fetch_add(1, Ordering::AcqRel) >= MAX_SERVED_SYNCS {
            served.fetch_sub(1, Ordering::AcqRel);
            self.shared.stats.syncs_declined.fetch_add(1, Ordering::Relaxed);
            send.finish()?;
            return Ok(());
        }
        let mut report = Report {
            bytes_received: size as u64,
            ..Report::default()
        };
        let result = self.converse(peer, send, recv, Some(turn), false, &mut report).await;
        served.fetch_sub(1, Ordering::AcqRel);
        self.count_session(&report);
        result
    }

    /// Sends the body `hash` (or a header saying it is not held).
    pub(crate) async fn serve_body(&self, send: &mut quinn::SendStream, hash: [u8; 32]) -> Result<(), ProtocolError> {
        let size = self.shared.store.body_size(&hash).ok().flatten();
        write_frame(send, &BodyHeader { size }).await?;
        if size.is_some() {
            for chunk in self.shared.store.body_chunks(&hash) {
                let Ok(chunk) = chunk else { break };
                send.write_all(&chunk).await?;
                self.shared
                    .stats
                    .body_bytes_served
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        send.finish()?;
        Ok(())
    }
}

/// Keys whose items are still to be sent, each once.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Vec<u8>>,
    queued: HashSet<Vec<u8>>,
}

impl Outbox {
    fn push(&mut self, key: Vec<u8>) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }
    fn push_front(&mut self, key: Vec<u8>) {
        if self.queued.insert(key.clone()) {
            self.queue.push_front(key);
        }
    }
    fn pop(&mut self) -> Option<Vec<u8>> {
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }
}
