//! Turns membership changes and committed health reports into events.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use super::{Event, EventKind, EventLog, event_id};
use crate::health::checks::CheckStatus;
use crate::health::report::{HealthReport, NodeStatus};
use crate::identity::PublicKey;
use crate::membership::{MemberState, MembershipHandle, NodeId, Snapshot};
use crate::replication::item::{ItemKey, RecordKind};
use crate::replication::{CommitEvent, PeerRefusal, ReplicationHandle};
use crate::schedules::record::{JobSummary, SchedulesRecord};

/// What the deriver remembers about a member.
struct Seen {
    id: NodeId,
    state: MemberState,
    /// Whether it has been down since it was last up (a return is then "up", not "restarted").
    down: bool,
}

/// A failed job of a node whose schedules record is seen for the first time is reported only
/// if it ended less than this ago (older ones are history, not news).
const JOB_EVENT_MAX_AGE_MS: u64 = 10 * 60 * 1000;

struct Deriver {
    log: Arc<EventLog>,
    replication: ReplicationHandle,
    members: HashMap<PublicKey, Seen>,
    reports: HashMap<PublicKey, HealthReport>,
    /// Per node, the failed jobs already reported (those still in its schedules record).
    jobs_seen: HashMap<PublicKey, HashSet<u64>>,
    /// Changes gathered and resolved before an event needs a name, when nothing else waits,
    /// or after at most [`NAMES_DELAY`] (a burst of changes is resolved once, not per change).
    names: crate::names::Names,
    /// The member list the names are resolved against.
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

/// Longest a names change waits to be resolved while commits and membership changes keep
/// arriving (a join storm): the published table is at most this stale.
pub const NAMES_DELAY: Duration = Duration::from_millis(250);

/// Least time between two full reloads of the node records after missed commits.
pub const RELOAD_SPACING: Duration = Duration::from_secs(1);

/// Starts the task that derives events until the agent stops.
pub fn spawn(
    log: Arc<EventLog>,
    membership: MembershipHandle,
    replication: ReplicationHandle,
    names: crate::names::Names,
) -> tokio::task::JoinHandle<()> {
    // Start from the current state without events for it.
    let mut snapshots = membership.subscribe();
    let mut d = Deriver {
        log,
        replication,
        members: HashMap::new(),
        reports: HashMap::new(),
        jobs_seen: HashMap::new(),
        names,
        snapshots: snapshots.clone(),
    };
    let mut commits = d.replication.subscribe();
    let mut refusals = d.replication.subscribe_refusals();
    let first = snapshots.borrow_and_update().clone();
    d.observe_members(&first, false);
    d.reports = d.replication.records_of(RecordKind::Health).into_iter().collect();
    for (node, record) in d.replication.records_of::<SchedulesRecord>(RecordKind::Schedules) {
        let failed = record.schedules.iter().flat_map(|s| s.recent.iter());
        d.jobs_seen
            .insert(node, failed.filter(|j| j.status.is_failure()).map(|j| j.seq).collect());
    }
    tokio::spawn(async move {
        let mut reload_due = false;
        let mut reload_tick = tokio::time::interval(RELOAD_SPACING);
        reload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // The shared list, not a copy of it (a copy per change was O(N) on every
                    // node), and not the borrow either: naming an event reads it again.
                    let snapshot = snapshots.borrow_and_update().clone();
                    d.names.observe_members(&snapshot);
                    d.observe_members(&snapshot, true);
                }
                commit = commits.recv() => match commit {
                    Ok(c) => {
                        d.names.observe_commit(&c);
                        d.observe_commit(&c);
                    }
                    Err(RecvError::Lagged(n)) => {
                        // Reading every node record again is O(N); a starved node lags again
                        // and again, so it happens at most once per RELOAD_SPACING.
                        tracing::warn!(missed = n, "event deriver fell behind commits");
                        reload_due = true;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = reload_tick.tick(), if reload_due => {
                    reload_due = false;
                    d.names.reload();
                }
                refusal = refusals.recv() => match refusal {
                    Ok(r) => d.observe_refusal(&r),
                    Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "event deriver fell behind refusals"),
                    Err(RecvError::Closed) => return,
                },
            }
            // Names once nothing else waits, so a burst of changes is resolved once.
            let idle = commits.is_empty() && refusals.is_empty() && !snapshots.has_changed().unwrap_or(false);
            if d.names
                .pending_since()
                .is_some_and(|t| idle || t.elapsed() >= NAMES_DELAY)
            {
                d.resolve_names();
            }
        }
    })
}

impl Deriver {
    fn resolve_names(&mut self) {
        let snapshot = self.snapshots.borrow().clone();
        self.names.resolve_pending(&snapshot);
    }

    /// The name `key` holds (none while it claims one another key holds).
    fn name_of(&mut self, key: &PublicKey) -> Option<String> {
        self.resolve_names();
        self.names.table().name(key).map(str::to_string)
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
            schedule: None,
            job: None,
        });
    }

    /// A peer started offering items this node refuses. The id comes from the peer, the
    /// reason and the first item refused.
    fn observe_refusal(&mut self, r: &PeerRefusal) {
        let detail = format!("{}: {}", r.reason.label(), r.item);
        self.emit(
            EventKind::PeerOffersRefused,
            r.peer,
            r.version,
            &[r.reason.label().as_bytes(), &r.digest],
            None,
            Some(detail),
        );
    }

    fn observe_members(&mut self, snapshot: &Snapshot, emit: bool) {
        for m in snapshot.members.iter().filter(|m| !m.local) {
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

    /// Failed jobs in a node's new schedules record that were not reported yet. The record
    /// carries the latest jobs of each schedule; a job that has dropped out never comes back,
    /// so the set of reported jobs only keeps those still in the record.
    fn observe_schedules(&mut self, node: PublicKey, version: u64) {
        let Some(record) = self.replication.record::<SchedulesRecord>(&node, RecordKind::Schedules) else {
            return;
        };
        let first_sight = !self.jobs_seen.contains_key(&node);
        let now = crate::time::unix_ms();
        let reported = self.jobs_seen.entry(node).or_default();
        let mut failed: Vec<(String, JobSummary)> = Vec::new();
        let mut present = HashSet::new();
        for s in &record.schedules {
            for j in &s.recent {
                present.insert(j.seq);
                // A node seen for the first time brings its history: only recent failures
                // are news.
                let stale = first_sight && j.ended_ms.is_some_and(|e| now.saturating_sub(e) > JOB_EVENT_MAX_AGE_MS);
                if j.status.is_failure() && !stale && reported.insert(j.seq) {
                    failed.push((s.id.clone(), j.clone()));
                }
            }
        }
        reported.retain(|seq| present.contains(seq));
        failed.sort_by_key(|(_, j)| j.seq);
        for (schedule, job) in failed {
            let job_ref = crate::schedules::JobRef::new(&node, job.seq).to_string();
            let detail = match (&job.error, job.exit_code) {
                (Some(e), _) => format!("{}: {e}", job.status.as_str()),
                (None, Some(code)) => format!("{} with exit code {code}", job.status.as_str()),
                (None, None) => job.status.as_str().to_string(),
            };
            let node_name = self.name_of(&node);
            self.log.append(Event {
                seq: 0,
                id: event_id(EventKind::JobFailed, &node, &[&job.seq.to_be_bytes()]),
                at_ms: now,
                kind: EventKind::JobFailed,
                node,
                node_name,
                check: None,
                detail: Some(detail),
                version,
                schedule: Some(schedule),
                job: Some(job_ref),
            });
        }
    }

    fn observe_commit(&mut self, commit: &CommitEvent) {
        if let ItemKey::Node {
            node,
            kind: RecordKind::Schedules,
        } = commit.key
        {
            return self.observe_schedules(node, commit.version);
        }
        let ItemKey::Node {
            node,
            kind: RecordKind::Health,
        } = commit.key
        else {
            return;
        };
        let Some(report) = self.replication.record::<HealthReport>(&node, RecordKind::Health) else {
            return;
        };
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
