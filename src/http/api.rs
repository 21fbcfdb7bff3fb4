//! JSON bodies of the HTTP API. The CLI deserializes these same types, so the two cannot
//! drift apart.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::membership::MemberState;

/// `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Node name.
    pub name: String,
    /// Node public key.
    pub key: PublicKey,
    /// shoal version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_secs: u64,
    /// Start time, RFC 3339.
    pub started_at: String,
    /// Address peers use to reach this node.
    #[schema(value_type = String, example = "10.0.0.1:7946")]
    pub cluster_addr: SocketAddr,
    /// Network key, when admission is by certificate.
    pub network: Option<PublicKey>,
    /// Network id that signed items must carry (base64 of 32 bytes).
    pub network_id: String,
    /// Whether this node is part of a cluster (knows at least one live peer that knows it).
    pub joined: bool,
    /// Members by state, this node included.
    pub members: MemberCounts,
}

/// Members by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberCounts {
    /// Alive.
    pub alive: usize,
    /// Suspect.
    pub suspect: usize,
    /// Down (not yet forgotten).
    pub down: usize,
    /// All of them.
    pub total: usize,
}

/// `GET /api/members`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Members {
    /// Every member this node knows, itself included, ordered by key.
    pub members: Vec<Member>,
}

/// One member.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    /// The name it holds (see [`NodeView::name`]).
    pub name: Option<String>,
    /// The name it claims but does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_conflict: Option<String>,
    /// Node key.
    pub key: PublicKey,
    /// Cluster address.
    #[schema(value_type = String)]
    pub addr: SocketAddr,
    /// alive, suspect or down.
    pub state: MemberState,
    /// When it entered this state (or identity), RFC 3339.
    pub since: String,
    /// Seconds since then.
    pub since_secs: u64,
    /// Identity generation: increases each time the node restarts.
    pub incarnation: u64,
    /// Times the node renewed its identity within this run after being declared down.
    pub renewals: u16,
    /// SWIM incarnation: increases when the node refutes a suspicion.
    pub swim_incarnation: u16,
    /// Whether this is the node answering.
    pub local: bool,
}

/// Body of a 409 answer to a lookup that matches several nodes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ambiguous {
    /// What went wrong.
    pub error: String,
    /// Always `ambiguous`.
    pub reason: String,
    /// The nodes it matches.
    pub candidates: Vec<Candidate>,
}

/// One node an ambiguous lookup matched.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Candidate {
    /// Its key.
    pub key: PublicKey,
    /// The name it holds, if any.
    pub name: Option<String>,
}

/// Body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
    /// Stable label of the reason, for rejected items (e.g. `stale_version`) and requests
    /// refused before a handler (`host_not_allowed`, `unauthorized`, `unsupported_media_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /api/files`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileList {
    /// Every file this node holds a version of (deleted ones included, flagged).
    pub files: Vec<FileInfo>,
    /// Names configured in `[files]`.
    pub configured: Vec<String>,
    /// Alive nodes, the denominator of each file's `present_on`.
    #[serde(default)]
    pub nodes_alive: usize,
}

/// One file's current version.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileInfo {
    /// File name.
    pub name: String,
    /// Version (hybrid logical clock).
    pub version: u64,
    /// When that version was signed, RFC 3339.
    pub updated: String,
    /// Who signed it.
    pub signer: PublicKey,
    /// Size in bytes (0 when deleted).
    pub size: u64,
    /// blake3 of the content, hex.
    pub hash: String,
    /// Whether the current version is a delete.
    pub deleted: bool,
    /// Alive nodes whose latest health report says they hold this version (reports follow a
    /// change within about `[health] interval`). Only in listings.
    #[serde(default)]
    pub present_on: Option<usize>,
}

/// `GET /api/replication`: the state of this node's replica and its counters.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replication {
    /// Items held (records and files, tombstones included).
    pub items: usize,
    /// XOR fingerprint of all of them, hex: equal on two nodes means same state.
    pub fingerprint: String,
    /// New winners committed, by where they came from.
    pub committed: CommitCounts,
    /// File bodies fetched from peers, and their bytes.
    pub bodies_fetched: u64,
    /// Bytes of fetched bodies.
    pub body_bytes_fetched: u64,
    /// Body bytes served to peers.
    pub body_bytes_served: u64,
    /// Body fetches that failed (retried with another holder or left to anti-entropy).
    pub fetch_failures: u64,
    /// Anti-entropy rounds started, and how many found both sides in sync.
    pub syncs_started: u64,
    /// Of those, in sync at once.
    pub syncs_in_sync: u64,
    /// Items sent to peers by anti-entropy.
    pub items_sent_by_sync: u64,
    /// Items dropped because replication was busy (anti-entropy repairs them).
    pub dropped_busy: u64,
    /// Refused items by reason (label → count).
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// Commits by origin.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CommitCounts {
    /// All.
    pub total: u64,
    /// From broadcasts.
    pub broadcast: u64,
    /// From anti-entropy.
    pub sync: u64,
    /// Uploaded through this node.
    pub uploaded: u64,
    /// This node's own records.
    pub local: u64,
}

/// `GET /api/nodes`: every node with its latest health report.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Nodes {
    /// Nodes ordered by name.
    pub nodes: Vec<NodeView>,
}

/// One node as this node knows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeView {
    /// The name it holds (bound by its certificate or an allowlist entry, or claimed and not
    /// contested); null when it has none or claims one another key holds.
    pub name: Option<String>,
    /// The name it claims but does not hold (another key holds it); it is shown under its
    /// key's short form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_conflict: Option<String>,
    /// Key.
    pub key: PublicKey,
    /// Its state in this node's membership view; null once forgotten by membership.
    pub state: Option<MemberState>,
    /// Whether the mesh considers it up (alive).
    pub up: bool,
    /// Whether it is the node answering.
    pub local: bool,
    /// Cluster address.
    #[schema(value_type = Option<String>)]
    pub addr: Option<SocketAddr>,
    /// Its latest signed health report.
    pub report: Option<crate::health::report::HealthReport>,
    /// Seconds since that report was made.
    pub report_age_secs: Option<u64>,
    /// Files its report says it holds, by name (names this node knows).
    #[serde(default)]
    pub files: Vec<HeldFileView>,
}

/// A file a node holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeldFileView {
    /// File name.
    pub name: String,
    /// Version it holds.
    pub version: u64,
    /// Whether that is the current version (as this node knows it).
    pub current: bool,
}

/// `GET /api/graph`: who reaches whom: the links each node measured (a bounded sample of them)
/// and the links that failed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Graph {
    /// Nodes.
    pub nodes: Vec<GraphNode>,
    /// Directed edges: a link `from` measured or failed to open.
    pub edges: Vec<GraphEdge>,
}

/// A graph node.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphNode {
    /// Key.
    pub key: PublicKey,
    /// Name.
    pub name: Option<String>,
    /// Whether the mesh (this node's view) considers it up.
    pub up: bool,
}

/// A graph edge.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphEdge {
    /// The node that measured the link.
    pub from: PublicKey,
    /// The other end.
    pub to: PublicKey,
    /// `to`'s state in this node's membership view (`down` when it has been forgotten).
    pub state: MemberState,
    /// False when `from` failed to reach `to` directly while the mesh held `to` up: a broken
    /// link, not a dead node.
    pub reachable: bool,
    /// Round-trip time of `from`'s connection to `to`, milliseconds (none for a failed link).
    pub rtt_ms: Option<f64>,
    /// Age of the report the edge comes from, seconds (0 for this node's own links, read live).
    pub age_secs: u64,
}

/// `GET /api/events`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Events {
    /// Oldest first.
    pub events: Vec<crate::events::Event>,
}

/// `GET /api/schedules`: every node's schedules, grouped by node.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// Members alive in the mesh, as this node sees it.
    pub mesh_nodes: usize,
    /// One group per node that published a schedules record, ordered by name.
    pub nodes: Vec<NodeSchedules>,
}

/// One node's schedules.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeSchedules {
    /// Node name, when known.
    pub name: Option<String>,
    /// Node key.
    pub key: PublicKey,
    /// Whether it is this node.
    pub local: bool,
    /// Whether the mesh considers it alive (if not, what is shown is its last record).
    pub up: bool,
    /// When its record was published, RFC 3339.
    pub published_at: String,
    /// Seconds since then. A node republishes whenever a job starts or ends, so an old record
    /// of a node that is up only means nothing ran.
    pub record_age_secs: u64,
    /// Number of schedules.
    pub count: usize,
    /// Its schedules, in its config order.
    pub schedules: Vec<ScheduleView>,
}

/// One schedule.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    /// Id, unique on its node.
    pub id: String,
    /// Description.
    pub description: String,
    /// Cron expression.
    pub schedule: String,
    /// Time zone it is read in.
    pub timezone: String,
    /// argv.
    pub command: Vec<String>,
    /// Names of its extra environment variables (values are never shown).
    pub env: Vec<String>,
    /// Timeout, seconds.
    pub timeout_secs: u64,
    /// Repository.
    pub repository: Option<String>,
    /// Retention.
    pub retention: Option<String>,
    /// Targets.
    pub targets: Vec<String>,
    /// Next run, RFC 3339.
    pub next_run: Option<String>,
    /// Next run, Unix ms.
    pub next_run_ms: Option<u64>,
    /// Its running job, if any.
    pub running: Option<String>,
    /// Its latest job.
    pub last: Option<JobView>,
    /// Its latest jobs, newest first.
    pub recent: Vec<JobView>,
}

/// One job.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobView {
    /// Id, unique in the mesh: `<node key prefix>-<seq>`.
    pub id: String,
    /// Node that ran it.
    pub node: PublicKey,
    /// Its name, when known.
    pub node_name: Option<String>,
    /// Schedule id.
    pub schedule: String,
    /// Status.
    pub status: crate::schedules::jobs::JobStatus,
    /// What started it.
    pub trigger: crate::schedules::jobs::Trigger,
    /// Start, RFC 3339.
    pub started: String,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, RFC 3339.
    pub ended: Option<String>,
    /// End, Unix ms.
    pub ended_ms: Option<u64>,
    /// Duration in seconds (so far, while running).
    pub duration_secs: f64,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Why it failed, when the exit code does not say.
    pub error: Option<String>,
}

/// `GET /api/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    /// Newest first. This node's full history; for other nodes, the latest jobs of each
    /// schedule that their records carry.
    pub jobs: Vec<JobView>,
}

/// `GET /api/jobs/{id}/log`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobLogView {
    /// The job.
    pub job: JobView,
    /// Bytes of output written in all.
    pub output_bytes: u64,
    /// Whether the beginning was dropped (only the tail is kept).
    pub truncated: bool,
    /// The kept output (stdout and stderr as they came), UTF-8 with invalid bytes replaced.
    pub log: String,
}

/// `POST /api/schedules/{id}/run`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunStarted {
    /// The schedule.
    pub schedule: String,
    /// The job started.
    pub job: String,
}
