//! The cost of change after a join, one implementation for every tool: what a mesh spends to
//! settle after all its agents started at once, and what it costs once it has settled.
//!
//! The clock starts at join convergence (as each tool's harness defines it). Two windows:
//! the settle window (`change_window` long, starting `change_delay` after convergence) and the
//! later idle window (`later_window` long, starting `later_at` after convergence). Readings:
//! - CPU to settle: utime + stime of every agent process (from /proc/<pid>/stat, all threads)
//!   summed, at the end of the settle window. Agents start at their spawn with nothing spent,
//!   so this is everything from the first spawn until then. CPU of reaped children (Serf's
//!   event handlers, which this harness installs to observe it) is printed but not counted.
//! - Loopback bytes in each window, per agent per second (divided by the window's measured
//!   length, which is the nominal one give or take the scheduler).
//! - In the later window: CPU per agent; at its end RSS, USS and open connections per agent.
//!
//! The harness must send nothing to the agents during the windows; connections are read last,
//! after the loopback counter, because reading shoal's gauge is itself an HTTP request. For
//! the same reason the agents' own counters, where a tool has them, are read at convergence,
//! after the settle window and after the later window: their first breakdown covers the wait
//! before the settle window and the window, the second the gap and the later window.

use std::collections::BTreeMap;

use std::future::Future;
use std::time::{Duration, Instant};

use crate::common::{self, Opts, Row, median};

/// When a mesh started and converged, on this process's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Just before the first agent was spawned.
    pub spawned: Instant,
    /// Join convergence: every agent lists all N alive.
    pub joined: Instant,
}

impl Clock {
    /// `"+X s after the first spawn, +Y s after join convergence"` for `at`.
    fn describe(&self, at: Instant) -> String {
        let signed = |since: Instant| match at.checked_duration_since(since) {
            Some(d) => format!("+{:.1} s", d.as_secs_f64()),
            None => format!("-{:.1} s", (since - at).as_secs_f64()),
        };
        format!(
            "{} after the first spawn, {} after join convergence",
            signed(self.spawned),
            signed(self.joined)
        )
    }
}

/// The names of the rows that depend on the windows, built from the options so the table
/// says what was measured.
struct Names {
    cpu: String,
    settle_traffic: String,
    later_traffic: String,
}

impl Names {
    fn new(opts: &Opts) -> Names {
        let (d, w) = (opts.change_delay.as_secs(), opts.change_window.as_secs());
        let (at, l) = (opts.later_at.as_secs(), opts.later_window.as_secs());
        Names {
            cpu: format!("CPU to settle (all agents, first spawn to join+{} s)", d + w),
            settle_traffic: format!("traffic per agent, {w} s from join+{d} s"),
            later_traffic: format!("traffic per agent, later idle ({l} s from join+{at} s)"),
        }
    }
}

/// Sleeps until `at` (at once if it has passed) and tells whether it was already late.
async fn until(clock: &Clock, what: &str, at: Instant, n: usize, tool: &str) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    let now = Instant::now();
    let late = now.saturating_duration_since(at);
    let note = if late > Duration::from_millis(500) {
        format!(
            " ({:.1} s late: the harness saw convergence after that)",
            late.as_secs_f64()
        )
    } else {
        String::new()
    };
    println!("N={n} {tool}:   {what} at {}{note}", clock.describe(now));
}

/// Per-process CPU seconds (utime + stime) of `pids`.
fn cpu_secs(pids: &[u32]) -> Vec<f64> {
    pids.iter().map(|p| common::cpu_ticks(*p) as f64 / 100.0).collect()
}

/// CPU seconds of reaped children of `pid` (cutime + cstime, fields 16 and 17 of its stat).
fn children_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (get(16) + get(17)) as f64 / 100.0
}

/// Runs the two windows against `pids` from `clock.joined` on and pushes the rows of `tool`.
/// `connections` is called once, after the last loopback reading, and gives each agent's open
/// connections, or `Err(why)` when the tool cannot tell. `counters` gives the agents' own
/// counters summed (empty when the tool has none); see the module doc for when it is read.
#[allow(clippy::too_many_arguments)]
pub async fn measure<F, Fut, G, GFut>(
    out: &mut Vec<Row>,
    n: usize,
    tool: &str,
    opts: &Opts,
    pids: &[u32],
    clock: Clock,
    connections: F,
    counters: G,
) where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Vec<f64>, String>>,
    G: Fn() -> GFut,
    GFut: Future<Output = BTreeMap<String, f64>>,
{
    let at_join = counters().await;
    let names = Names::new(opts);
    let settle_start = clock.joined + opts.change_delay;
    let settle_end = settle_start + opts.change_window;
    // Overlapping windows would need readings out of order; the later one waits instead.
    let later_start = (clock.joined + opts.later_at).max(settle_end);
    if later_start > clock.joined + opts.later_at {
        println!("N={n} {tool}:   later window moved to the end of the settle window (they overlapped)");
    }
    let later_end = later_start + opts.later_window;
    let per_agent_rate = |bytes: u64, secs: f64| bytes as f64 / secs / pids.len().max(1) as f64;

    until(&clock, "settle window starts", settle_start, n, tool).await;
    let (lo0, t0) = (common::lo_tx_bytes(), Instant::now());
    until(&clock, "settle window ends", settle_end, n, tool).await;
    let (lo1, t1) = (common::lo_tx_bytes(), Instant::now());
    let cpu_total: f64 = cpu_secs(pids).iter().sum();
    let children: f64 = pids.iter().map(|p| children_cpu_secs(*p)).sum();
    let settle_rate = per_agent_rate(lo1.saturating_sub(lo0), (t1 - t0).as_secs_f64());
    let at_settle_end = counters().await;
    let secs = clock.joined.elapsed().as_secs_f64() * n as f64;
    for (name, v) in &at_settle_end {
        let d = v - at_join.get(name).copied().unwrap_or(0.0);
        if d > 0.0 {
            println!("N={n} {tool}:   join to settle end {name}: {:.2}/s per agent", d / secs);
        }
    }

    until(&clock, "later idle window starts", later_start, n, tool).await;
    let (lo2, t2, cpu2) = (common::lo_tx_bytes(), Instant::now(), cpu_secs(pids));
    until(&clock, "later idle window ends", later_end, n, tool).await;
    let (lo3, t3, cpu3) = (common::lo_tx_bytes(), Instant::now(), cpu_secs(pids));
    let at_later_end = counters().await;
    let secs = (t3 - t1).as_secs_f64() * n as f64;
    for (name, v) in &at_later_end {
        let d = v - at_settle_end.get(name).copied().unwrap_or(0.0);
        if d > 0.0 {
            println!(
                "N={n} {tool}:   settle end to later end {name}: {:.2}/s per agent",
                d / secs
            );
        }
    }
    let later_secs = (t3 - t2).as_secs_f64();
    let later_rate = per_agent_rate(lo3.saturating_sub(lo2), later_secs);
    let cpu_pct: Vec<f64> = cpu3
        .iter()
        .zip(&cpu2)
        .map(|(b, a)| (b - a) / later_secs * 100.0)
        .collect();
    let rss: Vec<f64> = pids.iter().map(|p| common::rss_kib(*p) as f64 / 1024.0).collect();
    let uss: Vec<f64> = pids.iter().map(|p| common::private_mib(*p)).collect();
    let conns = connections().await;

    println!(
        "N={n} {tool}: {}: {cpu_total:.2} s (utime+stime summed over the {} agent processes, from the first spawn until the end of the settle window; reaped children such as event handlers: {children:.2} s more, not counted)",
        names.cpu,
        pids.len()
    );
    out.push(Row::new(n, names.cpu, tool, cpu_total, "s"));
    if opts.private_net {
        println!(
            "N={n} {tool}: loopback per agent: settle window {settle_rate:.0} B/s, later idle window {later_rate:.0} B/s"
        );
        out.push(Row::new(n, names.settle_traffic, tool, settle_rate, "B/s"));
        out.push(Row::new(n, names.later_traffic, tool, later_rate, "B/s"));
    } else {
        println!("N={n} {tool}: no private network namespace: loopback traffic is not the mesh's alone, not reported");
    }
    let c = median(cpu_pct);
    println!("N={n} {tool}: later idle CPU per agent, median {c:.2} % of a core");
    out.push(Row::new(n, "later idle CPU per agent (median)", tool, c, "%"));
    for (what, v) in [("RSS", rss), ("USS", uss)] {
        let (med, max) = (median(v.clone()), v.iter().copied().fold(0.0, f64::max));
        println!(
            "N={n} {tool}: {what} per agent at the end of the later window: median {med:.1} MiB, max {max:.1} MiB"
        );
        out.push(Row::new(
            n,
            format!("{what} per agent after later window (median)"),
            tool,
            med,
            "MiB",
        ));
        out.push(Row::new(
            n,
            format!("{what} per agent after later window (max)"),
            tool,
            max,
            "MiB",
        ));
    }
    match conns {
        Ok(v) => {
            let (med, max) = (median(v.clone()), v.iter().copied().fold(0.0, f64::max));
            println!(
                "N={n} {tool}: open connections per agent at the end of the later window: median {med}, max {max}"
            );
            out.push(Row::new(
                n,
                "open connections per agent after later window (median)",
                tool,
                med,
                "connections",
            ));
            out.push(Row::new(
                n,
                "open connections per agent after later window (max)",
                tool,
                max,
                "connections",
            ));
        }
        Err(why) => println!("N={n} {tool}: open connections per agent: n/a ({why})"),
    }
}

/// Established TCP connections of each of `pids`: the socket inodes among its open files,
/// looked up in the namespace's TCP tables (state 01 = ESTABLISHED). Listening sockets and
/// UDP do not count.
pub fn established_tcp(pids: &[u32]) -> Result<Vec<f64>, String> {
    let mut established = std::collections::HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.get(3) == Some(&"01")
                && let Some(inode) = f.get(9).and_then(|i| i.parse::<u64>().ok())
            {
                established.insert(inode);
            }
        }
    }
    pids.iter()
        .map(|pid| {
            let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("/proc/{pid}/fd: {e}"))?;
            let count = dir
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?.strip_suffix(']')?.parse::<u64>().ok()
                })
                .filter(|inode| established.contains(inode))
                .count();
            Ok(count as f64)
        })
        .collect()
}
