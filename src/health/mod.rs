//! This node's health: configured checks, machine facts, a bounded sample of measured links and
//! the links that failed, published as a signed `RecordKind::Health` record.
//!
//! The report is evaluated every `[health] interval` and whenever a check changes state. A
//! node's first report, made before it has a link, is stored quietly; the first one with links
//! is broadcast (looked for every [`FIRST_REPORT_POLL`] for [`FIRST_REPORT_WAIT`]).
//! A change of status or of a check is broadcast at once. A change of the failed links or of the
//! files held is broadcast once it has held still for an interval, so a burst of failures costs
//! one version per node, not one per change seen. A member joining or leaving elsewhere changes
//! nothing a report publishes at once, so it costs no node a new report. Machine figures (load,
//! memory, disk, RTTs, member counts) go out with the refresh every `[health] refresh`, quietly (spread by
//! anti-entropy, no broadcast). Per-node records cost
//! every node something on every other node, so the mesh only hears what matters, quickly.

pub mod checks;
pub mod report;
pub mod system;

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::config::HealthSection;
use crate::membership::{MemberState, MembershipHandle};
use crate::replication::ReplicationHandle;
use crate::replication::item::RecordKind;
use crate::transport::Transport;
use checks::CheckResult;
use report::{Change, HealthReport, MemberCounts, PeerLink};

/// How long a starting node looks for its first measured link every [`FIRST_REPORT_POLL`]
/// (later, at every `interval`), to broadcast the report with links as soon as it has some.
/// Its first report, made before it has joined, is only stored: a linkless broadcast followed
/// by a quiet second report with links made the second spread by anti-entropy alone, a few
/// items per round, and at 50 agents started together that tail was most of the traffic for
/// two minutes.
pub const FIRST_REPORT_WAIT: Duration = Duration::from_secs(10);
/// How often a starting node looks for its first link (see [`FIRST_REPORT_WAIT`]).
pub const FIRST_REPORT_POLL: Duration = Duration::from_millis(250);

/// What the health task needs from the rest of the agent.
pub struct HealthContext {
    /// `[health]`.
    pub config: HealthSection,
    /// To publish the report.
    pub replication: ReplicationHandle,
    /// For the view of peers.
    pub membership: MembershipHandle,
    /// For RTTs.
    pub transport: Transport,
    /// Whose filesystem is reported.
    pub state_dir: PathBuf,
    /// Agent start, Unix ms.
    pub started_at_ms: u64,
}

/// Starts the health task (and one task per check).
pub fn spawn(ctx: HealthContext) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx))
}

async fn run(ctx: HealthContext) {
    let mut tasks = JoinSet::new();
    let (initial, mut results) = checks::spawn_all(&ctx.config.checks, ctx.config.interval, &mut tasks);
    let mut latest: Vec<CheckResult> = initial;
    let mut published: Option<HealthReport> = None;
    let mut published_at = tokio::time::Instant::now();
    // A membership view waiting to be published, and since when it has held still.
    let mut pending_view: Option<(report::View, tokio::time::Instant)> = None;
    let mut tick = tokio::time::interval(ctx.config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    let mut first_poll = tokio::time::interval(FIRST_REPORT_POLL);
    loop {
        let awaiting_links =
            published.as_ref().is_none_or(|p| p.links.is_empty()) && started.elapsed() < FIRST_REPORT_WAIT;
        tokio::select! {
            _ = tick.tick() => {}
            _ = first_poll.tick(), if awaiting_links => {}
            Some(result) = results.recv() => {
                let changed = latest.iter().find(|c| c.name == result.name).is_some_and(|c| c.status != result.status);
                if let Some(slot) = latest.iter_mut().find(|c| c.name == result.name) {
                    *slot = result;
                }
                if !changed {
                    continue;
                }
            }
        }
        let report = build(&ctx, &latest);
        let since = published_at.elapsed();
        let change = report::compare(published.as_ref(), &report);
        let settled = match (change, &pending_view) {
            (Change::View, Some((v, at))) if *v == report::view(&report) => at.elapsed() >= ctx.config.interval,
            (Change::View, _) => {
                pending_view = Some((report::view(&report), tokio::time::Instant::now()));
                false
            }
            _ => false,
        };
        // The first report is made before the node has any link: it is stored, and the first
        // one with links is broadcast (see `FIRST_REPORT_WAIT`), so the graph does not wait
        // for the refresh and the mesh gets one report per node, not two.
        let fill = published.as_ref().is_some_and(|p| p.links.is_empty()) && !report.links.is_empty();
        let publish = match change {
            Change::Significant if published.is_none() && report.links.is_empty() => Some(false),
            Change::Significant => Some(true),
            Change::View if settled => Some(true),
            _ if fill => Some(true),
            _ if since >= ctx.config.refresh => Some(false),
            _ => None,
        };
        let Some(broadcast) = publish else { continue };
        let Ok(content) = crate::codec::encode(&report) else {
            continue;
        };
        if broadcast {
            if published.as_ref().is_some_and(|p| p.status != report.status) {
                info!(status = ?report.status, "health status changed");
            }
            ctx.replication.publish(RecordKind::Health, content).await;
        } else {
            debug!("refreshing the health report quietly");
            ctx.replication.publish_quietly(RecordKind::Health, content).await;
        }
        published = Some(report);
        published_at = tokio::time::Instant::now();
        pending_view = None;
    }
}

fn build(ctx: &HealthContext, checks: &[CheckResult]) -> HealthReport {
    let snapshot = ctx.membership.snapshot();
    let mut counts = MemberCounts::default();
    let mut up = std::collections::HashSet::new();
    for m in &snapshot.members {
        match m.state {
            MemberState::Alive => counts.alive += 1,
            MemberState::Suspect => counts.suspect += 1,
            MemberState::Down => counts.down += 1,
        }
        if m.state != MemberState::Down && !m.local {
            up.insert(m.id.key);
        }
    }
    let mut links: Vec<PeerLink> = ctx
        .transport
        .links()
        .into_iter()
        .map(|(key, rtt)| PeerLink {
            node: report::prefix(&key),
            rtt_us: rtt.as_micros().min(u32::MAX as u128) as u32,
        })
        .collect();
    links.sort_by_key(|l| (l.rtt_us, l.node));
    links.truncate(report::MAX_REPORTED_LINKS);
    // A peer that is down is not a broken link; one the mesh holds up but this node cannot
    // dial is.
    let mut unreachable: Vec<report::KeyPrefix> = ctx
        .transport
        .unreachable()
        .iter()
        .filter(|k| up.contains(*k))
        .map(report::prefix)
        .collect();
    unreachable.sort();
    unreachable.truncate(report::MAX_REPORTED_UNREACHABLE);
    HealthReport {
        status: HealthReport::status_of(checks),
        version: crate::VERSION.to_string(),
        started_at_ms: ctx.started_at_ms,
        reported_at_ms: crate::time::unix_ms(),
        load: system::load(),
        memory: system::memory(),
        disk: system::disk(&ctx.state_dir),
        members: counts,
        links,
        unreachable,
        checks: checks.to_vec(),
        files: held_files(&ctx.replication),
    }
}

fn held_files(replication: &ReplicationHandle) -> Vec<report::HeldFile> {
    let mut files: Vec<report::HeldFile> = replication
        .files()
        .iter()
        .filter(|i| !i.meta.deleted)
        .filter_map(|i| match &i.meta.key {
            crate::replication::item::ItemKey::File { name } => Some(report::HeldFile {
                name: report::file_prefix(name),
                version: i.meta.version,
            }),
            _ => None,
        })
        .collect();
    files.sort();
    files.truncate(report::MAX_REPORTED_FILES);
    files
}
