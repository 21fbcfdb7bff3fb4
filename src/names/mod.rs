//! Names: which node is shown under which name, on every page, in every event and lookup.
//!
//! The resolution itself is pure ([`book`]); [`Names`] gathers the claims (the allowlist's
//! bound names, each node's signed node record with the certificate it carries, the names
//! learned in TLS handshakes, who is live), resolves them after membership or a node record
//! changed, publishes the table on a `watch` channel, and logs and records each new conflict
//! once. The event deriver's task drives it: a burst of changes is resolved once, and always
//! before an event is named, so an event about a node carries the name its change gave it.

pub mod book;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tracing::warn;

pub use book::{Claim, Conflict, Lookup, NameBook, NameEntry, NameTable, Proof};

use crate::events::{Event, EventKind, EventLog, event_id};
use crate::identity::{Admission, NodeCertificate, PublicKey};
use crate::membership::{MemberState, MemberView, Snapshot};
use crate::replication::item::{ItemKey, RecordKind};
use crate::replication::records::NodeInfo;
use crate::replication::{CommitEvent, ReplicationHandle};

/// Readers' handle on the current table.
pub type NamesHandle = watch::Receiver<Arc<NameTable>>;

/// What a node's record says about its name, its certificate checked once when the record
/// arrives (not on every membership change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordClaim {
    /// The name the record claims.
    pub name: String,
    /// The name and `not_before` of the network certificate it carries, when that certificate
    /// is signed by our network key and admits the record's node.
    pub certified: Option<(String, u64)>,
}

impl RecordClaim {
    /// Reads `info`, the record of `key`, checking its certificate against `admission`.
    pub fn new(admission: &Admission, key: &PublicKey, info: NodeInfo) -> RecordClaim {
        let certified = info
            .network_cert
            .as_deref()
            .and_then(|bytes| NodeCertificate::from_bytes(bytes).ok())
            .filter(|c| Some(c.network_key) == admission.network_key() && c.node_key == *key)
            .map(|c| (c.name, c.not_before));
        RecordClaim {
            name: info.name,
            certified,
        }
    }
}

/// Gathers the claims of every key this node knows of.
///
/// A key's claim is, in order: the name its `trusted_nodes` entry binds; the name in the
/// network certificate its node record carries (checked against our network key and its key);
/// the name its handshake showed, bound when a certificate admitted it (it is not in our
/// allowlist and we have a network key); else the name its record claims.
pub fn claims(admission: &Admission, snapshot: &Snapshot, infos: &HashMap<PublicKey, RecordClaim>) -> Vec<Claim> {
    let live: HashMap<PublicKey, bool> = snapshot.members.iter().map(|m| (m.id.key, is_live(m))).collect();
    let handshake: HashMap<PublicKey, &str> = snapshot
        .members
        .iter()
        .filter_map(|m| Some((m.id.key, m.name.as_deref()?)))
        .collect();
    let mut out: HashMap<PublicKey, Claim> = HashMap::new();
    for (name, key) in admission.bound_names() {
        out.insert(
            key,
            Claim {
                key,
                name: name.to_string(),
                proof: Proof::Allowlist,
                live: live.get(&key).copied().unwrap_or(false),
            },
        );
    }
    let keys = infos.keys().chain(handshake.keys());
    for key in keys {
        if out.contains_key(key) {
            continue;
        }
        let live = live.get(key).copied().unwrap_or(false);
        let info = infos.get(key);
        let (name, proof) = if let Some((name, not_before)) = info.and_then(|i| i.certified.clone()) {
            (
                name,
                Proof::Certificate {
                    not_before: Reverse(not_before),
                },
            )
        } else if let Some(name) = handshake.get(key) {
            let by_certificate = admission.network_key().is_some() && admission.trusted(key).is_none();
            let proof = if by_certificate {
                Proof::Certificate {
                    not_before: Reverse(u64::MAX),
                }
            } else {
                Proof::Claimed
            };
            (name.to_string(), proof)
        } else if let Some(info) = info {
            (info.name.clone(), Proof::Claimed)
        } else {
            continue;
        };
        out.insert(
            *key,
            Claim {
                key: *key,
                name,
                proof,
                live,
            },
        );
    }
    out.into_values().collect()
}

/// Whether a member counts as live for its claim: ourselves, or not declared down.
fn is_live(m: &MemberView) -> bool {
    m.local || m.state != MemberState::Down
}

/// The names state: the claims it has gathered and the book that resolves them. Owned by the
/// event deriver's task; everyone else reads the published table.
pub struct Names {
    admission: Arc<Admission>,
    replication: ReplicationHandle,
    events: Arc<EventLog>,
    book: NameBook,
    infos: HashMap<PublicKey, RecordClaim>,
    /// What the claims last read of membership, in snapshot order: per member its key,
    /// whether it is live and the name its handshake showed. Most membership changes (a
    /// suspicion, a refuted one, a new incarnation) change none of it, and resolving is
    /// O(N) with allocations: in a join storm it was a fifth of an agent's CPU.
    members: Vec<(PublicKey, bool, Option<Arc<str>>)>,
    /// Since when a change waits to be resolved: changes are gathered and resolved once
    /// (see [`Names::resolve_pending`]), since in a join every node record and membership
    /// change arrives on its own and resolving each is O(N).
    pending_since: Option<Instant>,
    tx: watch::Sender<Arc<NameTable>>,
}

impl Names {
    /// Gathers every node record and resolves the names of `snapshot`; the handle is current
    /// from the start.
    pub fn new(
        admission: Arc<Admission>,
        replication: ReplicationHandle,
        events: Arc<EventLog>,
        snapshot: &Snapshot,
    ) -> (Names, NamesHandle) {
        let (tx, rx) = watch::channel(Arc::new(NameTable::default()));
        let mut names = Names {
            admission,
            replication,
            events,
            book: NameBook::default(),
            infos: HashMap::new(),
            members: Vec::new(),
            pending_since: None,
            tx,
        };
        names.reload();
        names.resolve_pending(snapshot);
        (names, rx)
    }

    /// The current table.
    pub fn table(&self) -> Arc<NameTable> {
        self.tx.borrow().clone()
    }

    /// Since when a change has waited to be resolved, if one has.
    pub fn pending_since(&self) -> Option<Instant> {
        self.pending_since
    }

    fn mark_pending(&mut self) {
        self.pending_since.get_or_insert_with(Instant::now);
    }

    /// Membership changed: who is live, and names learned in handshakes. A resolution is due
    /// only when what the claims read of it changed.
    pub fn observe_members(&mut self, snapshot: &Snapshot) {
        if self.pending_since.is_some() {
            return;
        }
        let unchanged = self.members.len() == snapshot.members.len()
            && self
                .members
                .iter()
                .zip(&snapshot.members)
                .all(|((key, live, name), m)| {
                    *key == m.id.key && *live == is_live(m) && name.as_deref() == m.name.as_deref()
                });
        if !unchanged {
            self.mark_pending();
        }
    }

    /// Resolves the claims of `snapshot` and the node records and publishes the table, if a
    /// change waits for it.
    pub fn resolve_pending(&mut self, snapshot: &Snapshot) {
        if self.pending_since.take().is_none() {
            return;
        }
        self.members = snapshot
            .members
            .iter()
            .map(|m| (m.id.key, is_live(m), m.name.clone()))
            .collect();
        let claims = claims(&self.admission, snapshot, &self.infos);
        let (table, conflicts) = self.book.resolve(&claims);
        self.tx.send_replace(Arc::new(table));
        for c in conflicts {
            self.report(&c);
        }
    }

    /// An item was committed: a node record changes the claims.
    pub fn observe_commit(&mut self, c: &CommitEvent) {
        let ItemKey::Node {
            node,
            kind: RecordKind::NodeInfo,
        } = c.key
        else {
            return;
        };
        let claim = self
            .replication
            .record::<NodeInfo>(&node, RecordKind::NodeInfo)
            .map(|info| RecordClaim::new(&self.admission, &node, info));
        // A renewed record usually claims what the last one did: nothing to resolve.
        if self.infos.get(&node) != claim.as_ref() {
            match claim {
                Some(claim) => self.infos.insert(node, claim),
                None => self.infos.remove(&node),
            };
            self.mark_pending();
        }
    }

    /// Reads every node record again (after missing commits); a resolution is then due.
    pub fn reload(&mut self) {
        self.infos = self
            .replication
            .records_of::<NodeInfo>(RecordKind::NodeInfo)
            .into_iter()
            .map(|(key, info)| (key, RecordClaim::new(&self.admission, &key, info)))
            .collect();
        self.mark_pending();
    }

    fn report(&self, c: &Conflict) {
        warn!(
            name = %c.name,
            claimant = %c.claimant,
            claimant_proof = c.claimant_proof,
            holder = %c.holder,
            holder_proof = c.holder_proof,
            "a node claims a name another key holds; it is shown under its key"
        );
        self.events.append(Event {
            seq: 0,
            id: event_id(
                EventKind::NameConflict,
                &c.claimant,
                &[c.name.as_bytes(), c.holder.as_bytes()],
            ),
            at_ms: crate::time::unix_ms(),
            kind: EventKind::NameConflict,
            node: c.claimant,
            node_name: None,
            check: None,
            detail: Some(format!(
                "{} claims the name {} ({}), which {} holds ({}); it is shown as {}",
                c.claimant,
                c.name,
                c.claimant_proof,
                c.holder,
                c.holder_proof,
                c.claimant.short()
            )),
            version: 0,
            schedule: None,
            job: None,
        });
    }
}
