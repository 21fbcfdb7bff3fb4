//! The signed health report a node publishes about itself (`RecordKind::Health`), and what
//! counts as a change worth telling the mesh about.

use serde::{Deserialize, Serialize};

use super::checks::{CheckResult, CheckStatus};
use super::system::{Disk, Memory};
use crate::identity::PublicKey;
use crate::membership::MemberState;

/// Overall state of a node, from its own point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Every check passes (or none is configured).
    Ok,
    /// At least one check is failing.
    Degraded,
}

/// Members by state, as the reporting node sees them (itself included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCounts {
    /// Alive.
    pub alive: u32,
    /// Suspect.
    pub suspect: u32,
    /// Down.
    pub down: u32,
}

/// The reporting node's view of one peer: an edge of the mesh graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerLink {
    /// The peer.
    pub key: PublicKey,
    /// Its state in the reporter's membership view.
    pub state: MemberState,
    /// Round-trip time of the QUIC connection to it, microseconds, when one is open.
    pub rtt_us: Option<u32>,
}

/// A node's health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Overall status.
    pub status: NodeStatus,
    /// shoal version.
    pub version: String,
    /// When the agent started, Unix ms.
    pub started_at_ms: u64,
    /// When this report was made, Unix ms.
    pub reported_at_ms: u64,
    /// Load averages (1, 5, 15 min).
    pub load: Option<[f32; 3]>,
    /// Memory.
    pub memory: Option<Memory>,
    /// Space of the state directory's filesystem.
    pub disk: Option<Disk>,
    /// Members by state.
    pub members: MemberCounts,
    /// Its view of every other member.
    pub peers: Vec<PeerLink>,
    /// Results of its configured checks.
    pub checks: Vec<CheckResult>,
}

impl HealthReport {
    /// Status implied by the checks.
    pub fn status_of(checks: &[CheckResult]) -> NodeStatus {
        if checks.iter().any(|c| c.status == CheckStatus::Failing) {
            NodeStatus::Degraded
        } else {
            NodeStatus::Ok
        }
    }
}

/// How a new report differs from the last one published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Nothing worth publishing.
    None,
    /// Worth publishing, but not urgent: spread by anti-entropy.
    Quiet,
    /// Status or a check changed: broadcast at once.
    Significant,
}

/// Load changes below this (absolute) are noise.
const LOAD_DRIFT_MIN: f32 = 1.0;
/// Relative load change worth republishing.
const LOAD_DRIFT_RATIO: f32 = 0.5;
/// Change of available memory worth republishing, as a fraction of total memory.
const MEMORY_DRIFT: f64 = 0.10;
/// Change of free disk worth republishing, as a fraction of the filesystem size.
const DISK_DRIFT: f64 = 0.05;

/// Classifies the difference between the last published report and a new one.
pub fn compare(prev: Option<&HealthReport>, new: &HealthReport) -> Change {
    let Some(prev) = prev else { return Change::Significant };
    let check_states = |r: &HealthReport| r.checks.iter().map(|c| (c.name.clone(), c.status)).collect::<Vec<_>>();
    if prev.status != new.status || prev.version != new.version || check_states(prev) != check_states(new) {
        return Change::Significant;
    }
    let peer_states = |r: &HealthReport| r.peers.iter().map(|p| (p.key, p.state)).collect::<Vec<_>>();
    let load_moved = match (prev.load, new.load) {
        (Some(a), Some(b)) => (a[0] - b[0]).abs() > LOAD_DRIFT_MIN.max(a[0] * LOAD_DRIFT_RATIO),
        (a, b) => a.is_some() != b.is_some(),
    };
    let memory_moved = match (prev.memory, new.memory) {
        (Some(a), Some(b)) => (a.available as f64 - b.available as f64).abs() > a.total as f64 * MEMORY_DRIFT,
        (a, b) => a.is_some() != b.is_some(),
    };
    let disk_moved = match (prev.disk, new.disk) {
        (Some(a), Some(b)) => (a.free as f64 - b.free as f64).abs() > a.total as f64 * DISK_DRIFT,
        (a, b) => a.is_some() != b.is_some(),
    };
    if prev.members != new.members || peer_states(prev) != peer_states(new) || load_moved || memory_moved || disk_moved
    {
        Change::Quiet
    } else {
        Change::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckType;

    fn report() -> HealthReport {
        HealthReport {
            status: NodeStatus::Ok,
            version: "1".into(),
            started_at_ms: 0,
            reported_at_ms: 10,
            load: Some([0.5, 0.5, 0.5]),
            memory: Some(Memory {
                total: 1000,
                available: 500,
                agent_rss: 10,
            }),
            disk: Some(Disk { total: 1000, free: 500 }),
            members: MemberCounts {
                alive: 3,
                suspect: 0,
                down: 0,
            },
            peers: vec![],
            checks: vec![CheckResult {
                name: "db".into(),
                kind: CheckType::Tcp,
                group: None,
                status: CheckStatus::Ok,
                latency_ms: Some(3),
                error: None,
                since_ms: 0,
            }],
        }
    }

    #[test]
    fn classifies_changes() {
        let a = report();
        assert_eq!(compare(None, &a), Change::Significant);
        let mut b = a.clone();
        b.reported_at_ms = 99;
        b.checks[0].latency_ms = Some(9);
        b.load = Some([0.9, 0.5, 0.5]);
        b.memory.as_mut().unwrap().available = 550;
        assert_eq!(compare(Some(&a), &b), Change::None, "noise");
        b.load = Some([3.0, 0.5, 0.5]);
        assert_eq!(compare(Some(&a), &b), Change::Quiet, "load jumped");
        let mut c = a.clone();
        c.members.down = 1;
        assert_eq!(compare(Some(&a), &c), Change::Quiet);
        let mut d = a.clone();
        d.checks[0].status = CheckStatus::Failing;
        d.status = NodeStatus::Degraded;
        assert_eq!(compare(Some(&a), &d), Change::Significant);
    }

    #[test]
    fn report_roundtrips_through_the_codec() {
        let r = report();
        let bytes = crate::codec::encode(&r).unwrap();
        assert_eq!(crate::codec::decode_exact::<HealthReport>(&bytes, 1 << 16).unwrap(), r);
    }
}
