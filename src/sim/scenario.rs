//! The measured scenario: one run through join, records, churn, a crash, a lossy period with
//! slow nodes, and a partition, in that order on the same mesh. Every figure is virtual time
//! or bytes, so a run is reproducible from its node count and seed.

use std::time::Duration;

use rand::RngExt;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::Serialize;

use crate::membership::MemberState;

use super::Sim;

/// New nodes start at random points of this window after the seeds.
pub const START_SPREAD: Duration = Duration::from_secs(10);
/// Longest wait for the mesh to form, or to heal.
pub const CONVERGE_LIMIT: Duration = Duration::from_secs(300);
/// How often convergence is checked (the resolution of `join_s` and `heal_s`).
pub const CONVERGE_POLL: Duration = Duration::from_millis(250);
/// Longest wait, after joining, for every backlog of updates and items to empty.
pub const QUIET_LIMIT: Duration = Duration::from_secs(120);
/// Time after the join's broadcasts are passed on before the idle window.
pub const SETTLE: Duration = Duration::from_secs(10);
/// Length of the idle window, and of the window after one join.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Records published, each from a different random node.
pub const RECORDS: usize = 10;
/// Time between two records.
pub const RECORD_SPACING: Duration = Duration::from_millis(500);
/// Content bytes of a record (a small health report).
pub const RECORD_SIZE: usize = 200;
/// Longest wait for records to reach everyone.
pub const RECORD_LIMIT: Duration = Duration::from_secs(120);
/// Nodes crashed at once.
pub const CRASHES: usize = 3;
/// How often crash detection is checked (the resolution of `detect_*`).
pub const DETECT_POLL: Duration = Duration::from_millis(50);
/// Longest wait for a crash to be seen everywhere.
pub const DETECT_LIMIT: Duration = Duration::from_secs(60);
/// Share of nodes made slow in the lossy period.
pub const SLOW_SHARE: f64 = 0.05;
/// Datagram loss on every link in the lossy period.
pub const LOSS: f64 = 0.05;
/// Length of the lossy period.
pub const LOSSY_PERIOD: Duration = Duration::from_secs(180);
/// Length of the partition.
pub const PARTITION: Duration = Duration::from_secs(60);
/// When, into the partition, each side publishes a record.
pub const PARTITION_PUBLISH_AFTER: Duration = Duration::from_secs(5);

/// What to run.
pub struct Options<'a> {
    /// Nodes in the mesh (one more joins later for `churn_bytes_per_node`).
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Bytes currently allocated on the heap, if the caller counts them (the bench binary
    /// installs a counting allocator); without it `member_bytes` is not measured.
    pub heap: Option<&'a dyn Fn() -> usize>,
    /// Progress lines on stderr.
    pub verbose: bool,
}

/// The figures of one run. Times in virtual seconds; `None` when the event did not happen
/// within its limit (or, for `member_bytes`, was not measured).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Nodes in the mesh.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// From the first start until every node sees every other alive.
    pub join_s: Option<f64>,
    /// Median of the (record, node) latencies: publication to commit at that node.
    pub record_p50_s: Option<f64>,
    /// 99th percentile of those latencies.
    pub record_p99_s: Option<f64>,
    /// Median of the (crashed node, observer) latencies: crash until the observer sees it down.
    pub detect_p50_s: Option<f64>,
    /// 99th percentile of those.
    pub detect_p99_s: Option<f64>,
    /// Down verdicts (observer, subject identity) against running nodes in the lossy period
    /// seen in some view, plus each renewal of a running node's identity no view showed a
    /// verdict for (the node was told it was down).
    pub false_down: u64,
    /// From healing a partition until one view and the same items everywhere.
    pub heal_s: Option<f64>,
    /// Bytes each node sends per second in a quiet mesh (datagrams and anti-entropy).
    pub idle_bytes_per_node_s: f64,
    /// Extra bytes per node in the window after one member joined.
    pub churn_bytes_per_node: f64,
    /// Heap one node spends per member it knows (all of its state, divided by members).
    pub member_bytes: Option<u64>,
}

/// What else a run saw, for the human summary (not part of the JSON).
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    /// Received broadcast items not passed on because a backlog was full.
    pub relays_skipped: u64,
    /// Largest custom broadcast backlog on any node.
    pub max_backlog: usize,
    /// Anti-entropy sessions and the items they moved.
    pub sync_sessions: u64,
    /// Items moved by anti-entropy.
    pub synced_items: u64,
    /// (record, node) pairs that had not committed the record by the limit.
    pub records_missing: usize,
    /// Datagrams refused by cores.
    pub rejected_datagrams: u64,
    /// Datagrams dropped by the network.
    pub dropped_datagrams: u64,
    /// Whether the mesh was whole again after the lossy period.
    pub whole_after_loss: bool,
    /// Of the false down verdicts, those against slow nodes.
    pub false_down_of_slow: usize,
    /// Distinct running nodes (by identity) some node declared down in the lossy period.
    pub false_down_subjects: usize,
    /// Times a running node renewed its identity in the lossy period (the mesh had declared
    /// it down).
    pub renewals: u64,
    /// Datagrams nodes sent to their own address.
    pub sent_to_self: u64,
    /// Nodes whose view held an earlier identity of their own.
    pub self_in_view: usize,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// The `p`-th percentile (nearest rank) of `sorted`, where `None` counts as never.
fn percentile(sorted: &[Option<Duration>], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)].map(secs)
}

fn sort_latencies(mut v: Vec<Option<Duration>>) -> Vec<Option<Duration>> {
    // `None` (never) after every time.
    v.sort_by_key(|d| (d.is_none(), *d));
    v
}

fn total_sent(sim: &Sim) -> u64 {
    sim.net.sent().iter().sum()
}

/// Runs until `done` holds (checked every `poll`) or `limit` passes; returns how long it took.
fn wait_for(sim: &mut Sim, poll: Duration, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> Option<Duration> {
    let start = sim.now();
    loop {
        if done(sim) {
            return Some(sim.now() - start);
        }
        if sim.now() >= start + limit {
            return None;
        }
        let t = sim.now() + poll;
        sim.run_until(t);
    }
}

/// Runs until every running node sees every other alive (within [`CONVERGE_LIMIT`]); when
/// `verbose`, says how the nodes see each other every `every` polls, after `label`.
fn wait_for_whole_view(sim: &mut Sim, verbose: bool, every: u32, label: impl Fn(&Sim) -> String) -> Option<Duration> {
    let mut polls = 0u32;
    wait_for(sim, CONVERGE_POLL, CONVERGE_LIMIT, |sim| {
        polls += 1;
        if verbose && polls.is_multiple_of(every) {
            eprintln!(
                "  {}: [alive, suspect, down, unknown] = {:?}",
                label(sim),
                sim.view_summary()
            );
        }
        sim.all_alive()
    })
}

/// Runs the scenario.
pub fn run(opts: &Options<'_>) -> (Report, Diagnostics) {
    assert!(opts.nodes >= 4, "sim: the scenario needs at least 4 nodes");
    let n = opts.nodes;
    let mut sim = Sim::new(n, opts.seed);
    let say = |msg: String| {
        if opts.verbose {
            eprintln!("{msg}");
        }
    };

    // Join: the seeds at once, the rest spread over START_SPREAD.
    let mut starts: Vec<(Duration, usize)> = (0..n)
        .map(|i| {
            let at = if sim.seeds.contains(&i) {
                Duration::ZERO
            } else {
                START_SPREAD.mul_f64(sim.rng().random::<f64>())
            };
            (at, i)
        })
        .collect();
    starts.sort();
    for (at, i) in starts {
        sim.run_until(at);
        sim.start(i);
    }
    // Measured from the first start (time zero).
    let last_start = sim.now();
    let join =
        wait_for_whole_view(&mut sim, opts.verbose, 40, |sim| format!("at {:?}", sim.now())).map(|d| d + last_start);
    say(format!("joined: {join:?} (virtual)"));

    // Idle: once every node has passed on what the join brought (join updates, and each
    // joiner's node record; at 500 nodes they were still being passed on 10 s after the join),
    // and SETTLE more.
    let quiet = wait_for(&mut sim, CONVERGE_POLL, QUIET_LIMIT, Sim::quiet);
    say(format!("broadcasts passed on: {quiet:?} after joining"));
    sim.run_until(sim.now() + SETTLE);
    let before = total_sent(&sim);
    sim.run_until(sim.now() + WINDOW);
    let idle = (total_sent(&sim) - before) as f64 / n as f64 / WINDOW.as_secs_f64();
    say(format!("idle: {idle:.1} B/node/s"));

    // Records.
    let mut publishers: Vec<usize> = sim.live();
    publishers.shuffle(sim.rng());
    let mut published = Vec::new();
    for (k, &p) in publishers.iter().take(RECORDS).enumerate() {
        let mut content = vec![0u8; RECORD_SIZE];
        sim.rng().fill(&mut content[..]);
        content[0] = k as u8;
        let at = sim.now();
        published.push((sim.publish(p, &content), at));
        sim.run_until(at + RECORD_SPACING);
    }
    let everyone_has = |sim: &Sim| {
        sim.live()
            .iter()
            .all(|&i| published.iter().all(|(d, _)| sim.committed_at(i, d).is_some()))
    };
    wait_for(&mut sim, Duration::from_millis(100), RECORD_LIMIT, everyone_has);
    let mut latencies = Vec::new();
    for i in sim.live() {
        for (d, at) in &published {
            latencies.push(sim.committed_at(i, d).map(|t| t - *at));
        }
    }
    let latencies = sort_latencies(latencies);
    let records_missing = latencies.iter().filter(|l| l.is_none()).count();
    let (record_p50, record_p99) = (percentile(&latencies, 50.0), percentile(&latencies, 99.0));
    say(format!(
        "records: p50 {record_p50:?} p99 {record_p99:?}, missing {records_missing}"
    ));

    // One join.
    sim.run_until(sim.now() + SETTLE);
    let before = total_sent(&sim);
    let joiner = sim.add_node();
    sim.start(joiner);
    sim.run_until(sim.now() + WINDOW);
    let extra = (total_sent(&sim) - before) as f64 - idle * n as f64 * WINDOW.as_secs_f64();
    let churn = extra / (n + 1) as f64;
    say(format!("churn: {churn:.0} B/node"));

    // Crashes.
    let candidates: Vec<usize> = sim.live().into_iter().filter(|i| !sim.seeds.contains(i)).collect();
    let crashed: Vec<usize> = candidates.sample(sim.rng(), CRASHES).copied().collect();
    for &c in &crashed {
        sim.crash(c);
    }
    let crash_at = sim.now();
    let observers = sim.live();
    let mut seen: Vec<Option<Duration>> = vec![None; observers.len() * crashed.len()];
    wait_for(&mut sim, DETECT_POLL, DETECT_LIMIT, |sim| {
        let mut all = true;
        for (k, &o) in observers.iter().enumerate() {
            for (c, &s) in crashed.iter().enumerate() {
                let slot = &mut seen[k * crashed.len() + c];
                if slot.is_none() {
                    let run = sim.nodes[o].run.as_ref().expect("observers run");
                    let down = run
                        .core
                        .member(&sim.nodes[s].id.key)
                        .is_some_and(|m| m.state == MemberState::Down);
                    if down {
                        *slot = Some(sim.now() - crash_at);
                    } else {
                        all = false;
                    }
                }
            }
        }
        all
    });
    let seen = sort_latencies(seen);
    let (detect_p50, detect_p99) = (percentile(&seen, 50.0), percentile(&seen, 99.0));
    say(format!("detect: p50 {detect_p50:?} p99 {detect_p99:?}"));

    // Loss and slow nodes.
    let live = sim.live();
    let slow_count = ((live.len() as f64) * SLOW_SHARE).round() as usize;
    let slow: Vec<usize> = live.sample(sim.rng(), slow_count).copied().collect();
    for &s in &slow {
        sim.set_slow(s, true);
    }
    sim.net.loss = LOSS;
    sim.watch_false_downs = true;
    let bump_of = |sim: &Sim, i: usize| sim.nodes[i].run.as_ref().map(|r| r.core.identity().bump);
    let bumps_before: Vec<(usize, u16)> = live.iter().filter_map(|&i| Some((i, bump_of(&sim, i)?))).collect();
    let lossy_end = sim.now() + LOSSY_PERIOD;
    while sim.now() < lossy_end {
        let t = (sim.now() + Duration::from_secs(30)).min(lossy_end);
        sim.run_until(t);
        say(format!(
            "  lossy period at {:?}: {} false down verdicts so far",
            sim.now(),
            sim.counters.false_downs.len()
        ));
    }
    sim.watch_false_downs = false;
    sim.net.loss = 0.0;
    for &s in &slow {
        sim.set_slow(s, false);
    }
    // A node renews its identity when it learns the mesh declared it down. A verdict can be
    // overtaken by the renewal before any view shows it at the end of a step, so each renewal
    // without a seen verdict against the identity it left counts as one more.
    let mut renewals = 0;
    let mut unseen = 0;
    for &(i, before) in &bumps_before {
        let Some(after) = bump_of(&sim, i) else { continue };
        let generation = sim.nodes[i].id.generation;
        for b in before..after {
            renewals += 1;
            let seen =
                (sim.counters.false_downs.iter()).any(|(_, s, g, k)| *s as usize == i && *g == generation && *k == b);
            unseen += u64::from(!seen);
        }
    }
    let false_down = sim.counters.false_downs.len() as u64 + unseen;
    let false_down_of_slow = (sim.counters.false_downs.iter())
        .filter(|(_, s, ..)| slow.contains(&(*s as usize)))
        .count();
    say(format!(
        "lossy period: {false_down} false down verdicts ({unseen} seen only as renewals; {renewals} renewals)"
    ));
    let whole_after_loss = wait_for(&mut sim, CONVERGE_POLL, CONVERGE_LIMIT, Sim::all_alive).is_some();

    // Partition.
    let total = sim.nodes.len();
    let side: Vec<u8> = (0..total).map(|i| u8::from(i >= total / 2)).collect();
    sim.net.partition(side.clone());
    sim.run_until(sim.now() + PARTITION_PUBLISH_AFTER);
    for s in [0u8, 1] {
        let members: Vec<usize> = sim.live().into_iter().filter(|i| side[*i] == s).collect();
        if let Some(&p) = members.choose(sim.rng()) {
            let mut content = vec![0u8; RECORD_SIZE];
            sim.rng().fill(&mut content[..]);
            sim.publish(p, &content);
        }
    }
    sim.run_until(sim.now() + PARTITION - PARTITION_PUBLISH_AFTER);
    sim.net.heal();
    let healed_at = sim.now();
    // The view first (said, not reported), then the view and the items together.
    let view = wait_for_whole_view(&mut sim, opts.verbose, 20, |sim| {
        format!("heal +{:?}", sim.now() - healed_at)
    });
    say(format!("healed view: {view:?}"));
    let heal = wait_for(&mut sim, CONVERGE_POLL, CONVERGE_LIMIT, |sim| {
        sim.all_alive() && sim.items_agree()
    })
    .and(view)
    .map(|_| sim.now() - healed_at);
    say(format!("healed: {heal:?}"));

    // Memory of one view: drop one node's whole state and see how much heap it frees.
    let member_bytes = opts.heap.and_then(|heap| {
        let i = sim.live().into_iter().find(|i| !sim.seeds.contains(i))?;
        let members = sim.nodes[i].run.as_ref()?.core.peers().count().max(1);
        let before = heap();
        sim.crash(i);
        let after = heap();
        Some((before.saturating_sub(after) / members) as u64)
    });

    let report = Report {
        nodes: n,
        seed: opts.seed,
        join_s: join.map(secs),
        record_p50_s: record_p50,
        record_p99_s: record_p99,
        detect_p50_s: detect_p50,
        detect_p99_s: detect_p99,
        false_down,
        heal_s: heal.map(secs),
        idle_bytes_per_node_s: (idle * 10.0).round() / 10.0,
        churn_bytes_per_node: churn.round(),
        member_bytes,
    };
    let diagnostics = Diagnostics {
        relays_skipped: sim.relays_skipped(),
        max_backlog: sim.counters.max_backlog,
        sync_sessions: sim.counters.sync_sessions,
        synced_items: sim.counters.synced_items,
        records_missing,
        rejected_datagrams: sim.counters.rejected_datagrams,
        dropped_datagrams: sim.net.dropped,
        whole_after_loss,
        false_down_of_slow,
        renewals,
        false_down_subjects: (sim.counters.false_downs.iter())
            .map(|(_, s, g, b)| (*s, *g, *b))
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        sent_to_self: sim.counters.sent_to_self,
        self_in_view: sim.counters.self_in_view.len(),
    };
    (report, diagnostics)
}
