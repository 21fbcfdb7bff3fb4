//! Names: which node is shown under which name, on every page, in every event and lookup.
//!
//! The resolution itself is pure ([`book`]); this task gathers the claims (the allowlist's
//! bound names, each node's signed node record with the certificate it carries, the names
//! learned in TLS handshakes, who is live), resolves them whenever membership or a node record
//! changes, publishes the table on a `watch` channel, and logs and records each new conflict
//! once.

pub mod book;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tracing::warn;

pub use book::{Claim, Conflict, Lookup, NameBook, NameEntry, NameTable, Proof};

use crate::events::{Event, EventKind, EventLog, event_id};
use crate::identity::{Admission, NodeCertificate, PublicKey};
use crate::membership::{MemberState, MembershipHandle, Snapshot};
use crate::replication::item::{ItemKey, RecordKind};
use crate::replication::records::NodeInfo;
use crate::replication::{CommitEvent, ReplicationHandle};

/// Readers' handle on the current table.
pub type NamesHandle = watch::Receiver<Arc<NameTable>>;

/// Gathers the claims of every key this node knows of.
///
/// A key's claim is, in order: the name its `trusted_nodes` entry binds; the name in the
/// network certificate its node record carries (checked against our network key and its key);
/// the name its handshake showed, bound when a certificate admitted it (it is not in our
/// allowlist and we have a network key); else the name its record claims.
pub fn claims(admission: &Admission, snapshot: &Snapshot, infos: &HashMap<PublicKey, NodeInfo>) -> Vec<Claim> {
    let live: HashMap<PublicKey, bool> = snapshot
        .members
        .iter()
        .map(|m| (m.id.key, m.local || m.state != MemberState::Down))
        .collect();
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
        let certified = info
            .and_then(|i| i.network_cert.as_deref())
            .and_then(|bytes| NodeCertificate::from_bytes(bytes).ok())
            .filter(|c| Some(c.network_key) == admission.network_key() && c.node_key == *key);
        let (name, proof) = if let Some(cert) = certified {
            (
                cert.name,
                Proof::Certificate {
                    not_before: Reverse(cert.not_before),
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

struct Names {
    admission: Arc<Admission>,
    membership: MembershipHandle,
    replication: ReplicationHandle,
    events: Arc<EventLog>,
    book: NameBook,
    infos: HashMap<PublicKey, NodeInfo>,
    tx: watch::Sender<Arc<NameTable>>,
}

impl Names {
    fn resolve(&mut self) {
        let snapshot = self.membership.snapshot();
        let claims = claims(&self.admission, &snapshot, &self.infos);
        let (table, conflicts) = self.book.resolve(&claims);
        self.tx.send_replace(Arc::new(table));
        for c in conflicts {
            self.report(&c);
        }
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

    fn on_commit(&mut self, c: &CommitEvent) -> bool {
        let ItemKey::Node {
            node,
            kind: RecordKind::NodeInfo,
        } = c.key
        else {
            return false;
        };
        match self.replication.record::<NodeInfo>(&node, RecordKind::NodeInfo) {
            Some(info) => self.infos.insert(node, info),
            None => self.infos.remove(&node),
        };
        true
    }
}

/// Resolves the current names, then starts the task that keeps them current until the agent
/// stops. The returned handle is current from the start.
pub fn spawn(
    admission: Arc<Admission>,
    membership: MembershipHandle,
    replication: ReplicationHandle,
    events: Arc<EventLog>,
) -> (NamesHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Arc::new(NameTable::default()));
    let mut snapshots = membership.subscribe();
    let mut commits = replication.subscribe();
    let infos = replication
        .records_of::<NodeInfo>(RecordKind::NodeInfo)
        .into_iter()
        .collect();
    let mut names = Names {
        admission,
        membership,
        replication,
        events,
        book: NameBook::default(),
        infos,
        tx,
    };
    snapshots.borrow_and_update();
    names.resolve();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    snapshots.borrow_and_update();
                    names.resolve();
                }
                commit = commits.recv() => match commit {
                    Ok(c) => {
                        if names.on_commit(&c) {
                            names.resolve();
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        names.infos = names
                            .replication
                            .records_of::<NodeInfo>(RecordKind::NodeInfo)
                            .into_iter()
                            .collect();
                        names.resolve();
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    (rx, task)
}
