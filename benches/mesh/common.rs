//! What every tool's harness shares: options, result rows, process and network readings,
//! the private network namespace and packet loss.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Options read from the environment (see `main.rs` for the names).
#[derive(Debug, Clone)]
pub struct Opts {
    /// Wait after convergence before idle readings, so start-up traffic is over.
    pub settle: Duration,
    /// Window of the idle readings.
    pub idle_window: Duration,
    /// Repetitions of the small-record propagation.
    pub reps: usize,
    /// Repetitions of each file size (1 MiB, 10 MiB).
    pub file_reps: usize,
    /// `kill -9`s per mesh.
    pub kills: usize,
    /// SIGSTOP durations, seconds, one run each.
    pub stops: Vec<u64>,
    /// How long a mesh runs under packet loss.
    pub loss_window: Duration,
    /// Percentage of packets dropped in the loss scenario.
    pub loss_percent: u32,
    /// How long the mesh stays split in the partition scenario once both sides noticed.
    pub partition_window: Duration,
    /// Records a newcomer catches up with.
    pub catchup_records: usize,
    /// Bytes of files (in 1 MiB files) a newcomer catches up with.
    pub catchup_mib: usize,
    /// Change phase: start of the settle window after join convergence.
    pub change_delay: Duration,
    /// Change phase: length of the settle window.
    pub change_window: Duration,
    /// Change phase: start of the later idle window after join convergence.
    pub later_at: Duration,
    /// Change phase: length of the later idle window.
    pub later_window: Duration,
    /// Whether the run is inside its own network namespace (loss and loopback counters need it).
    pub private_net: bool,
    /// Scenarios to run (names as in [`Scenario::key`]); empty = all.
    pub only: Vec<String>,
}

impl Opts {
    /// Whether scenario group `key` (join, change, idle, small, files, kill, stop, loss,
    /// partition, catchup) runs.
    pub fn wants(&self, key: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == key)
    }
}

/// Unit of a time in ms that is only a lower bound: the thing measured had not happened when
/// the harness stopped waiting. Printed as "> …", and ratios against it as "< …".
pub const AT_LEAST_MS: &str = "ms or more";

/// One figure of one tool at one mesh size.
#[derive(Debug, Clone)]
pub struct Row {
    pub n: usize,
    pub measure: String,
    pub tool: String,
    pub value: f64,
    /// Unit printed after the value (`ms`, `B/s`, `%`, `MiB`, `verdicts`).
    pub unit: &'static str,
}

impl Row {
    pub fn new(n: usize, measure: impl Into<String>, tool: &str, value: f64, unit: &'static str) -> Row {
        Row {
            n,
            measure: measure.into(),
            tool: tool.to_string(),
            value,
            unit,
        }
    }
}

/// Pushes p50, p99 and max of `times` (ms) as three rows named `"{what} p50"` etc.
pub fn push_latencies(out: &mut Vec<Row>, n: usize, what: &str, tool: &str, times: &[Duration]) {
    if times.is_empty() {
        return;
    }
    let mut t = times.to_vec();
    t.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    out.push(Row::new(n, format!("{what} p50"), tool, ms(percentile(&t, 0.5)), "ms"));
    out.push(Row::new(n, format!("{what} p99"), tool, ms(percentile(&t, 0.99)), "ms"));
    out.push(Row::new(n, format!("{what} max"), tool, ms(*t.last().unwrap()), "ms"));
    println!(
        "N={n} {tool}: {what}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} runs)",
        ms(percentile(&t, 0.5)),
        ms(percentile(&t, 0.99)),
        ms(*t.last().unwrap()),
        t.len()
    );
}

/// Nearest-rank percentile of sorted values; with fewer than 100 values p99 is the maximum.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Ports below the kernel's ephemeral range (32768–60999 by default) that the harness hands
/// out. A port is found free here and bound by the tool only later, so it must not be one the
/// kernel can give meanwhile to an outgoing connection (the harness polls every agent over
/// HTTP) or to another `bind(0)` (50 random picks from that range share one about 4 % of the
/// time). A catch-up mesh of 49 that never converged is the likely sign of such a collision.
const HARNESS_PORTS: std::ops::Range<u16> = 20000..32000;

/// A port free for `udp` (else TCP) on 127.0.0.1, never handed out before in this run.
pub fn free_port(udp: bool) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    for _ in 0..10_000 {
        let port = rand::random_range(HARNESS_PORTS);
        if given.contains(&port) {
            continue;
        }
        let free = if udp {
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        } else {
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        };
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free port left in {HARNESS_PORTS:?}");
}

/// Wall clock, Unix ms (to compare with timestamps the tools write themselves).
pub fn wall_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

/// User + system CPU ticks of a process (USER_HZ = 100).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(14) + get(15)
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Bytes sent on loopback (IP headers included). Inside the bench's private namespace only
/// the mesh under test and the harness use it.
pub fn lo_tx_bytes() -> u64 {
    // /proc/self/net/dev follows this process's namespace (/sys/class/net would need a remount).
    std::fs::read_to_string("/proc/self/net/dev")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:").map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0)
}

/// UDP datagrams the kernel dropped because a socket's receive buffer was full
/// (`RcvbufErrors` in /proc/self/net/snmp, which follows this process's namespace).
pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/self/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Idle readings of a set of processes over `window` while `quiet` holds (the harness sends
/// nothing meanwhile): per process CPU % of one core and RSS MiB, and loopback bytes per
/// second per process (total over the window divided by the process count).
pub async fn idle_readings(pids: &[u32], window: Duration) -> (Vec<f64>, Vec<f64>, f64) {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let lo_before = lo_tx_bytes();
    tokio::time::sleep(window).await;
    let lo_after = lo_tx_bytes();
    let secs = window.as_secs_f64();
    let cpu = pids
        .iter()
        .zip(before)
        .map(|(p, b)| (cpu_ticks(*p).saturating_sub(b)) as f64 / 100.0 / secs * 100.0)
        .collect();
    let rss = pids.iter().map(|p| rss_kib(*p) as f64 / 1024.0).collect();
    let per_agent = (lo_after - lo_before) as f64 / secs / pids.len().max(1) as f64;
    (cpu, rss, per_agent)
}

/// Memory only this process uses (USS: private clean + private dirty pages), MiB. RSS also
/// counts the executable's code pages, which every agent of one binary on a machine shares.
pub fn private_mib(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib: u64 = text
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    kib as f64 / 1024.0
}

/// Idle readings of `pids` over `window` (the harness must stay silent meanwhile), pushed as
/// rows: medians over agents of CPU, RSS and private memory, and loopback traffic per agent.
pub async fn measure_idle(out: &mut Vec<Row>, n: usize, tool: &str, pids: &[u32], window: Duration, private: bool) {
    let (cpu, rss, lo) = idle_readings(pids, window).await;
    let uss = median(pids.iter().map(|p| private_mib(*p)).collect());
    push_idle(out, n, tool, cpu, rss, lo, private);
    println!("N={n} {tool}: idle private memory (USS) per agent {uss:.1} MiB");
    out.push(Row::new(n, "idle private memory (USS) per agent", tool, uss, "MiB"));
}

/// Pushes the idle rows (medians over agents) of one tool.
pub fn push_idle(out: &mut Vec<Row>, n: usize, tool: &str, cpu: Vec<f64>, rss: Vec<f64>, lo: f64, private: bool) {
    let (c, r) = (median(cpu), median(rss));
    println!("N={n} {tool}: idle per agent: CPU {c:.2}% of a core, RSS {r:.1} MiB, loopback {lo:.0} B/s");
    out.push(Row::new(n, "idle CPU per agent", tool, c, "%"));
    out.push(Row::new(n, "idle RSS per agent", tool, r, "MiB"));
    if private {
        out.push(Row::new(
            n,
            "idle traffic per agent (loopback, IP incl.)",
            tool,
            lo,
            "B/s",
        ));
    }
}

/// Moves this process (and every child it starts later) into a new network namespace with
/// only a loopback interface: loopback counters then count the mesh alone, and loss rules
/// touch nothing else. Needs root; false when not possible.
pub fn enter_private_net() -> bool {
    // SAFETY: called from main before any thread is started; unshare has no memory effects.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "mesh bench: no private network namespace ({}); running on the host loopback, no loss runs",
            std::io::Error::last_os_error()
        );
        return false;
    }
    let ok = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("mesh bench: could not bring lo up in the new namespace");
    }
    ok
}

/// Splits the mesh in two: drops every UDP packet from a port in `a` to a port in `b` and back
/// (each shoal agent sends all its traffic from its one QUIC port), in the private namespace.
/// Empty sides remove the rule.
pub fn set_partition(a: &[u16], b: &[u16]) {
    nft_table("meshpart", None);
    if a.is_empty() || b.is_empty() {
        return;
    }
    let set = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let rules = format!(
        "table inet meshpart {{\n chain out {{\n type filter hook output priority 0; policy accept;\n \
         udp sport {{ {a} }} udp dport {{ {b} }} drop\n udp sport {{ {b} }} udp dport {{ {a} }} drop\n }}\n}}\n",
        a = set(a),
        b = set(b)
    );
    nft_table("meshpart", Some(&rules));
}

/// Deletes nftables table `name`, then loads `rules` (which define it again) if given.
fn nft_table(name: &str, rules: Option<&str>) {
    let _ = Command::new("nft")
        .args(["delete", "table", "inet", name])
        .stderr(std::process::Stdio::null())
        .status();
    let Some(rules) = rules else { return };
    let ok = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(rules.as_bytes())?;
            c.wait()
        });
    assert!(ok.is_ok_and(|s| s.success()), "nft refused table {name}");
}

/// Drops `percent` % of all packets on loopback (both UDP and TCP), in the private namespace,
/// with an nftables random-number rule; 0 removes the rule.
pub fn set_loss(percent: u32) {
    let rules = format!(
        "table inet meshloss {{\n chain out {{\n type filter hook output priority 0; policy accept;\n numgen random mod 100 < {percent} drop\n }}\n}}\n"
    );
    nft_table("meshloss", (percent > 0).then_some(rules.as_str()));
}
