//! What happened in the mesh, as this node saw it: members joining, going down and coming
//! back, nodes degrading and recovering, checks failing and passing.
//!
//! Events are derived from the membership view and from committed health reports, kept in a
//! bounded log in the store (the newest [`MAX_EVENTS`]) and fanned out live to subscribers
//! (the server-sent event stream, the notifier). Each event carries an id computed the same way
//! on every node for the same transition, so notifications can be deduplicated across nodes.

mod derive;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use derive::spawn;

use crate::identity::PublicKey;
use crate::store::{Store, StoreError};

/// Events kept in the store.
pub const MAX_EVENTS: usize = 1000;
/// Events buffered per live subscriber; a slower one misses the oldest.
pub const SUBSCRIBER_CAPACITY: usize = 256;

/// Kinds of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A node joined the mesh (first seen alive).
    NodeJoined,
    /// A node restarted (a new run replaced the old one without a failure in between).
    NodeRestarted,
    /// A node is suspected of having failed.
    NodeSuspect,
    /// A node is down (failed or left).
    NodeDown,
    /// A node that was down is back.
    NodeUp,
    /// A node reports a failing check.
    NodeDegraded,
    /// A degraded node reports every check passing again.
    NodeRecovered,
    /// A check started failing.
    CheckFailing,
    /// A failing check passes again.
    CheckOk,
    /// A job failed, timed out or was cut off.
    JobFailed,
    /// A node claims a name another key holds (see [`crate::names`]).
    NameConflict,
    /// A peer started offering items this node refuses for a reason that does not change by
    /// itself (their `[files]` differ, typically). Seen by this node only: not for webhooks.
    PeerOffersRefused,
    /// This node's own certificate expires within 7 days, within 1 day, or has expired
    /// (`detail` says which). Raised by that node only, so not offered to webhooks (no other
    /// member could confirm it); `shoal_certificate_expiry_timestamp_seconds` is for alerting.
    CertificateExpiring,
}

impl EventKind {
    /// Stable name (also used in `[[notify.webhooks]] events`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::NodeJoined => "node_joined",
            EventKind::NodeRestarted => "node_restarted",
            EventKind::NodeSuspect => "node_suspect",
            EventKind::NodeDown => "node_down",
            EventKind::NodeUp => "node_up",
            EventKind::NodeDegraded => "node_degraded",
            EventKind::NodeRecovered => "node_recovered",
            EventKind::CheckFailing => "check_failing",
            EventKind::CheckOk => "check_ok",
            EventKind::JobFailed => "job_failed",
            EventKind::NameConflict => "name_conflict",
            EventKind::PeerOffersRefused => "peer_offers_refused",
            EventKind::CertificateExpiring => "certificate_expiring",
        }
    }

    /// Every kind (see [`EventKind::notifiable`] for those webhooks can subscribe to).
    pub const ALL: [EventKind; 13] = [
        EventKind::NodeJoined,
        EventKind::NodeRestarted,
        EventKind::NodeSuspect,
        EventKind::NodeDown,
        EventKind::NodeUp,
        EventKind::NodeDegraded,
        EventKind::NodeRecovered,
        EventKind::CheckFailing,
        EventKind::CheckOk,
        EventKind::JobFailed,
        EventKind::NameConflict,
        EventKind::PeerOffersRefused,
        EventKind::CertificateExpiring,
    ];

    /// Whether webhooks may be sent for this kind: the notifier confirms an event with
    /// another node before sending it, and a refusal is seen by the refusing node alone, as
    /// is a node's own certificate's expiry (alert on its gauge instead).
    pub fn notifiable(&self) -> bool {
        !matches!(self, EventKind::PeerOffersRefused | EventKind::CertificateExpiring)
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// Position in this node's log (increasing).
    pub seq: u64,
    /// Id of the transition, the same on every node that saw it (hex).
    pub id: String,
    /// When this node saw it, Unix ms.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The node it happened to.
    pub node: PublicKey,
    /// Its name, when known.
    pub node_name: Option<String>,
    /// The check, for check events.
    pub check: Option<String>,
    /// Details (a check's error, a node's identity).
    pub detail: Option<String>,
    /// What another node can check to confirm it: the node's identity (`generation << 16 |
    /// renewals`) for membership events, the version of the health report or schedules record
    /// for the others.
    pub version: u64,
    /// The schedule, for job events.
    pub schedule: Option<String>,
    /// The job id (see [`crate::schedules::JobRef`]), for job events.
    pub job: Option<String>,
}

/// Computes an event id from the facts that identify the transition.
pub fn event_id(kind: EventKind, node: &PublicKey, parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new_derive_key("shoal v1 event id");
    h.update(kind.as_str().as_bytes());
    h.update(node.as_bytes());
    for p in parts {
        h.update(&(p.len() as u32).to_be_bytes());
        h.update(p);
    }
    h.finalize().to_hex()[..32].to_string()
}

/// The bounded, persisted event log.
pub struct EventLog {
    tree: sled::Tree,
    next: AtomicU64,
    tx: broadcast::Sender<Event>,
}

impl EventLog {
    /// Opens the log in `store`.
    pub fn open(store: &Store) -> Result<Arc<EventLog>, StoreError> {
        let tree = store.tree("events")?;
        let next = match tree.last()? {
            Some((k, _)) => {
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("event key"))?) + 1
            }
            None => 1,
        };
        Ok(Arc::new(EventLog {
            tree,
            next: AtomicU64::new(next),
            tx: broadcast::channel(SUBSCRIBER_CAPACITY).0,
        }))
    }

    /// Appends an event (its `seq` is assigned here), prunes the oldest, tells subscribers.
    pub fn append(&self, mut event: Event) -> Event {
        event.seq = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(bytes) = crate::codec::encode(&event) {
            let _ = self.tree.insert(event.seq.to_be_bytes(), bytes);
        }
        // Seqs are contiguous, so the newest MAX_EVENTS are those from `seq - MAX_EVENTS + 1`.
        // Trimming by key costs O(log n) per removal; `Tree::len` walks the whole tree, and at
        // one append per membership change that walk was most of an agent's CPU in a join.
        let keep_from = (event.seq + 1).saturating_sub(MAX_EVENTS as u64).to_be_bytes();
        while let Ok(Some((oldest, _))) = self.tree.first() {
            if oldest.as_ref() >= keep_from.as_slice() || self.tree.remove(oldest).is_err() {
                break;
            }
        }
        let _ = self.tx.send(event.clone());
        event
    }

    /// Events after `since` (a seq), oldest first, at most `limit`, the newest ones.
    pub fn recent(&self, since: u64, limit: usize) -> Vec<Event> {
        let mut out: Vec<Event> = self
            .tree
            .range((since + 1).to_be_bytes()..)
            .rev()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| crate::codec::decode_exact(&v, 64 * 1024).ok())
            .take(limit)
            .collect();
        out.reverse();
        out
    }

    /// Live events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 0,
            id: "x".into(),
            at_ms: 1,
            kind,
            node: SecretKey::from_seed([1; 32]).public(),
            node_name: Some("n".into()),
            check: None,
            detail: None,
            version: 0,
            schedule: None,
            job: None,
        }
    }

    #[test]
    fn bounded_persisted_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let log = EventLog::open(&store).unwrap();
            let mut sub = log.subscribe();
            log.append(event(EventKind::NodeDown));
            assert_eq!(sub.try_recv().unwrap().seq, 1, "subscribers see appends live");
            for _ in 1..MAX_EVENTS + 5 {
                log.append(event(EventKind::NodeDown));
            }
            let all = log.recent(0, usize::MAX);
            assert_eq!(all.len(), MAX_EVENTS);
            assert_eq!(all.last().unwrap().seq, MAX_EVENTS as u64 + 5);
            assert_eq!(log.recent(MAX_EVENTS as u64 + 3, 10).len(), 2);
            assert_eq!(
                log.recent(0, 3).iter().map(|e| e.seq).collect::<Vec<_>>(),
                [1003, 1004, 1005]
            );
        }
        let store = Store::open(dir.path()).unwrap();
        let log = EventLog::open(&store).unwrap();
        assert_eq!(
            log.append(event(EventKind::NodeUp)).seq,
            MAX_EVENTS as u64 + 6,
            "sequence survives restarts"
        );
        assert_eq!(
            log.recent(0, usize::MAX).len(),
            MAX_EVENTS,
            "still the newest MAX_EVENTS"
        );
    }

    #[test]
    fn ids_depend_on_the_facts_only() {
        let k = SecretKey::from_seed([2; 32]).public();
        assert_eq!(
            event_id(EventKind::NodeDown, &k, &[b"g1"]),
            event_id(EventKind::NodeDown, &k, &[b"g1"])
        );
        assert_ne!(
            event_id(EventKind::NodeDown, &k, &[b"g1"]),
            event_id(EventKind::NodeDown, &k, &[b"g2"])
        );
        assert_ne!(
            event_id(EventKind::NodeDown, &k, &[b"g1"]),
            event_id(EventKind::NodeUp, &k, &[b"g1"])
        );
    }
}
