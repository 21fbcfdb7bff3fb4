//! Turns membership changes and committed health reports into events.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;

use super::{Event, EventKind, EventLog, event_id};
use crate::health::checks::CheckStatus;
use crate::health::report::{HealthReport, NodeStatus};
use crate::identity::PublicKey;
use crate::membership::{MemberState, MembershipHandle, NodeId, Snapshot};
use crate::replication::item::{ItemKey, RecordKind};
use crate::replication::{CommitEvent, ReplicationHandle};

/// What the deriver remembers about a member.
struct Seen {
    id: NodeId,
    state: MemberState,
    /// Whether it has been down since it was last up (a return is then "up", not "restarted").
    down: bool,
}

struct Deriver {
    log: Arc<EventLog>,
    replication: ReplicationHandle,
    members: HashMap<PublicKey, Seen>,
    reports: HashMap<PublicKey, HealthReport>,
    names: HashMap<PublicKey, String>,
}

/// Starts the task that derives events until the agent stops.
pub fn spawn(
    log: Arc<EventLog>,
    membership: MembershipHandle,
    replication: ReplicationHandle,
) -> tokio::task::JoinHandle<()> {
    let mut d = Deriver {
        log,
        replication,
        members: HashMap::new(),
        reports: HashMap::new(),
        names: HashMap::new(),
    };
    // Start from the current state without events for it.
    let mut snapshots = membership.subscribe();
    let mut commits = d.replication.subscribe();
    d.observe_members(&snapshots.borrow_and_update(), false);
    for (item, content) in d.replication.records(RecordKind::Health) {
        if let (ItemKey::Node { node, .. }, Ok(report)) = (&item.meta.key, decode(&content)) {
            d.reports.insert(*node, report);
        }
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    d.observe_members(&snapshot, true);
                }
                commit = commits.recv() => match commit {
                    Ok(c) => d.observe_commit(&c),
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "event deriver fell behind commits"),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    })
}

fn decode(content: &[u8]) -> Result<HealthReport, crate::codec::CodecError> {
    crate::codec::decode_exact(content, crate::replication::policy::MAX_RECORD_SIZE as usize)
}

impl Deriver {
    fn name_of(&mut self, key: &PublicKey) -> Option<String> {
        if let Some(n) = self.names.get(key) {
            return Some(n.clone());
        }
        let (_, content) = self.replication.get(&ItemKey::Node {
            node: *key,
            kind: RecordKind::NodeInfo,
        })?;
        let info: crate::replication::records::NodeInfo = crate::codec::decode_exact(&content?, 64 * 1024).ok()?;
        self.names.insert(*key, info.name.clone());
        Some(info.name)
    }

    fn emit(
        &mut self,
        kind: EventKind,
        node: PublicKey,
        version: u64,
        id_parts: &[&[u8]],
        check: Option<String>,
        detail: Option<String>,
    ) {
        let node_name = self.name_of(&node);
        let mut parts: Vec<&[u8]> = id_parts.to_vec();
        if let Some(c) = &check {
            parts.push(c.as_bytes());
        }
        self.log.append(Event {
            seq: 0,
            id: event_id(kind, &node, &parts),
            at_ms: crate::time::unix_ms(),
            kind,
            node,
            node_name,
            check,
            detail,
            version,
        });
    }

    fn observe_members(&mut self, snapshot: &Snapshot, emit: bool) {
        for m in snapshot.members.iter().filter(|m| !m.local) {
            if let Some(name) = &m.name {
                self.names.insert(m.id.key, name.clone());
            }
            let identity = [m.id.generation.to_be_bytes().as_slice(), &m.id.bump.to_be_bytes()].concat();
            let previous = self.members.get(&m.id.key).map(|s| (s.id.clone(), s.state, s.down));
            let (kind, down) = match (previous, m.state) {
                (None, MemberState::Alive) => (Some(EventKind::NodeJoined), false),
                (None, MemberState::Down) => (None, true),
                (None, MemberState::Suspect) => (None, false),
                (Some((_, _, true)), MemberState::Alive) => (Some(EventKind::NodeUp), false),
                (Some((old, _, false)), MemberState::Alive) if old != m.id => (Some(EventKind::NodeRestarted), false),
                (Some(_), MemberState::Alive) => (None, false),
                (Some((_, MemberState::Suspect, down)), MemberState::Suspect) => (None, down),
                (Some((_, _, down)), MemberState::Suspect) => (Some(EventKind::NodeSuspect), down),
                (Some((_, MemberState::Down, _)), MemberState::Down) => (None, true),
                (Some(_), MemberState::Down) => (Some(EventKind::NodeDown), true),
            };
            self.members.insert(
                m.id.key,
                Seen {
                    id: m.id.clone(),
                    state: m.state,
                    down,
                },
            );
            if let (true, Some(kind)) = (emit, kind) {
                let detail = format!("{}#{}.{}", m.id.addr, m.id.generation, m.id.bump);
                let version = (m.id.generation << 16) | m.id.bump as u64;
                self.emit(kind, m.id.key, version, &[&identity], None, Some(detail));
            }
        }
    }

    fn observe_commit(&mut self, commit: &CommitEvent) {
        let ItemKey::Node {
            node,
            kind: RecordKind::Health,
        } = commit.key
        else {
            return;
        };
        let Some((_, Some(content))) = self.replication.get(&commit.key) else {
            return;
        };
        let Ok(report) = decode(&content) else { return };
        let version = commit.version.to_be_bytes();
        let previous = self.reports.insert(node, report.clone());
        let was_degraded = previous.as_ref().is_some_and(|p| p.status == NodeStatus::Degraded);
        match report.status {
            NodeStatus::Degraded if !was_degraded => {
                self.emit(EventKind::NodeDegraded, node, commit.version, &[&version], None, None)
            }
            NodeStatus::Ok if was_degraded => {
                self.emit(EventKind::NodeRecovered, node, commit.version, &[&version], None, None)
            }
            _ => {}
        }
        for check in &report.checks {
            let before = previous
                .as_ref()
                .and_then(|p| p.checks.iter().find(|c| c.name == check.name))
                .map(|c| c.status);
            let kind = match (before, check.status) {
                (Some(CheckStatus::Failing), CheckStatus::Failing) | (_, CheckStatus::Unknown) => None,
                (_, CheckStatus::Failing) => Some(EventKind::CheckFailing),
                (Some(CheckStatus::Failing), CheckStatus::Ok) => Some(EventKind::CheckOk),
                _ => None,
            };
            if let Some(kind) = kind {
                self.emit(
                    kind,
                    node,
                    commit.version,
                    &[&version],
                    Some(check.name.clone()),
                    check.error.clone(),
                );
            }
        }
    }
}
