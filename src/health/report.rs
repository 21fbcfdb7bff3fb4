//! The signed health report a node publishes about itself (`RecordKind::Health`), and what
//! counts as a change worth telling the mesh about.

use serde::{Deserialize, Serialize};

use super::checks::{CheckResult, CheckStatus};
use super::system::{Disk, Memory};
use crate::identity::PublicKey;

/// Overall state of a node, from its own point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Every check passes (or none is configured).
    Ok,
    /// At least one check is failing.
    Degraded,
}

/// Members by state, as the reporting node sees them (itself included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberCounts {
    /// Alive.
    pub alive: u32,
    /// Suspect.
    pub suspect: u32,
    /// Down.
    pub down: u32,
}

/// The first 8 bytes of a node key: enough to tell the nodes of a fleet apart, and a quarter
/// of the size in every report's list of peers.
pub type KeyPrefix = [u8; 8];

/// The prefix of `key`.
pub fn prefix(key: &PublicKey) -> KeyPrefix {
    key.as_bytes()[..8].try_into().expect("8 bytes")
}

/// Most measured links a report carries. A node publishes what it measured to a bounded
/// sample of its peers, never its view of every peer: that list grew with the mesh and changed
/// with every join, so every membership change made every node republish a record of O(N)
/// bytes (O(N²) bytes per change across the mesh).
pub const MAX_REPORTED_LINKS: usize = 16;

/// Most failed links a report carries.
pub const MAX_REPORTED_UNREACHABLE: usize = 16;

/// A link the reporting node measured: the round-trip time of its QUIC connection to a peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PeerLink {
    /// The peer, by key prefix.
    #[schema(value_type = Vec<u8>)]
    pub node: KeyPrefix,
    /// Round-trip time of the connection, microseconds.
    pub rtt_us: u32,
}

/// Most files a report lists (a `[files]` section is a short list of names).
pub const MAX_REPORTED_FILES: usize = 512;

/// A file version the reporting node holds, so every node can tell on how many nodes each file
/// is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldFile {
    /// First 8 bytes of blake3 of the name (names can be long; this keeps reports small).
    #[schema(value_type = Vec<u8>)]
    pub name: [u8; 8],
    /// The version held.
    pub version: u64,
}

/// The name prefix [`HeldFile`] uses.
pub fn file_prefix(name: &str) -> [u8; 8] {
    blake3::hash(name.as_bytes()).as_bytes()[..8]
        .try_into()
        .expect("8 bytes")
}

/// A node's health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
    #[schema(value_type = Option<Vec<f32>>)]
    pub load: Option<[f32; 3]>,
    /// Memory.
    pub memory: Option<Memory>,
    /// Space of the state directory's filesystem.
    pub disk: Option<Disk>,
    /// Members by state, as of `reported_at_ms` (refreshed with the machine figures: a change
    /// of counts alone is not published).
    pub members: MemberCounts,
    /// Round-trip times of up to [`MAX_REPORTED_LINKS`] of its open connections, lowest
    /// first (refreshed with the machine figures).
    pub links: Vec<PeerLink>,
    /// Peers the mesh holds alive that it failed to reach directly (at most
    /// [`MAX_REPORTED_UNREACHABLE`], sorted): the broken links. Published when it changes.
    #[schema(value_type = Vec<Vec<u8>>)]
    pub unreachable: Vec<KeyPrefix>,
    /// Results of its configured checks.
    pub checks: Vec<CheckResult>,
    /// The files it holds (current versions, deletes excluded), sorted.
    pub files: Vec<HeldFile>,
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
    /// The membership view or the files held changed: publish once it has settled.
    View,
    /// Status or a check changed: broadcast at once.
    Significant,
}

/// What a report says about the mesh that is published when it changes: the failed links and
/// the files held. Neither grows with the mesh (both are bounded) and neither changes when a
/// member joins or leaves, so a membership change costs no node a new report.
pub type View = (Vec<KeyPrefix>, Vec<HeldFile>);

/// The view a report carries.
pub fn view(r: &HealthReport) -> View {
    (r.unreachable.clone(), r.files.clone())
}

/// Classifies the difference between the last published report and a new one.
pub fn compare(prev: Option<&HealthReport>, new: &HealthReport) -> Change {
    let Some(prev) = prev else { return Change::Significant };
    let check_states = |r: &HealthReport| r.checks.iter().map(|c| (c.name.clone(), c.status)).collect::<Vec<_>>();
    if prev.status != new.status || prev.version != new.version || check_states(prev) != check_states(new) {
        return Change::Significant;
    }
    // Machine figures (load, memory, disk, RTTs) move all the time, and member counts move with
    // every join: they are refreshed with the periodic report only, or a busy machine would
    // make every node publish constantly, and a join would make every node publish at once.
    if view(prev) != view(new) {
        Change::View
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
            links: vec![],
            unreachable: vec![],
            files: vec![],
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
        b.load = Some([9.0, 0.5, 0.5]);
        b.memory.as_mut().unwrap().available = 50;
        b.disk.as_mut().unwrap().free = 5;
        assert_eq!(
            compare(Some(&a), &b),
            Change::None,
            "machine figures wait for the refresh"
        );
        let mut c = a.clone();
        c.members.down = 1;
        c.members.alive = 30;
        c.links.push(PeerLink {
            node: [1; 8],
            rtt_us: 300,
        });
        assert_eq!(
            compare(Some(&a), &c),
            Change::None,
            "a join or a failure elsewhere costs no report"
        );
        let mut u = a.clone();
        u.unreachable.push([2; 8]);
        assert_eq!(compare(Some(&a), &u), Change::View, "a link failed");
        let mut f = a.clone();
        f.files.push(HeldFile {
            name: file_prefix("app.conf"),
            version: 1,
        });
        assert_eq!(compare(Some(&a), &f), Change::View, "a file arrived");
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
