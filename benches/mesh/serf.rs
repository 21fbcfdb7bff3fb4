//! HashiCorp Serf side of the mesh bench: N `serf agent` processes on loopback, each with a
//! bash event handler that appends one timestamped line per event to its own log, which the
//! harness polls.
//!
//! The installed agent (Debian serf 0.9.4, reporting itself as 0.8.2-dev, protocol 5) is built
//! against a memberlist with Lifeguard (local health awareness and dynamic suspicion
//! timeouts: a suspicion starts at `SuspicionMaxTimeoutMult` = 6 times the base timeout and
//! shrinks towards the base as `SuspicionMult - 2` other members confirm it). The base
//! suspicion timeout is `SuspicionMult × max(1, log10 N) × ProbeInterval`.
//!
//! - `lan` = memberlist `DefaultLANConfig`: probe every 1 s with a 500 ms timeout and 3
//!   indirect probes, suspicion multiplier 4, gossip every 200 ms to 3 members, retransmit
//!   multiplier 4, push/pull every 30 s.
//! - `local` = `DefaultLocalConfig`: probe every 1 s with a 200 ms timeout and 1 indirect
//!   probe, suspicion multiplier 3, gossip every 100 ms, retransmit multiplier 2, push/pull
//!   every 15 s.
//!
//! The agent coalesces member events before running handlers (1 s of quiet, at most 3 s), so
//! every member-join / member-failed time seen here includes that delay; the agent has no
//! option to turn it off. User events are sent with `-coalesce=false` so the small-record
//! time is gossip plus handler start, not the coalescer's quiet period.
//!
//! Observed behaviour: each agent's handler gets a member-join for itself, and the origin of
//! a user event gets it in its own handler too, so both counts require all N agents.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::change;
use crate::common::{self, Opts, Row, push_latencies, wall_ms};

/// Serf's gossip profile.
#[derive(Debug, Clone, Copy)]
pub enum Profile {
    /// Shipped default (`-profile=lan`).
    Lan,
    /// `-profile=local`: gossip every 100 ms, suspicion multiplier 3, closest to shoal's timing.
    Local,
}

impl Profile {
    /// Column name in the result table.
    pub fn tool(self) -> &'static str {
        match self {
            Profile::Lan => "serf",
            Profile::Local => "serf (local profile)",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Profile::Lan => "lan",
            Profile::Local => "local",
        }
    }
}

/// How often the harness reads the handler logs.
const POLL: Duration = Duration::from_millis(15);
/// Quiet time after a SIGSTOP / loss window before false verdicts are counted: long enough
/// for a suspicion started at the end of the window to run out (LAN max 6 × 4 s at N < 100
/// is longer, but Lifeguard confirmations shorten it well below that).
const AFTERMATH: Duration = Duration::from_secs(15);

/// Kind of a handler record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Join,
    Failed,
    Leave,
    Update,
    Reap,
    User,
    Other,
}

impl Kind {
    fn parse(s: &str) -> Kind {
        match s {
            "member-join" => Kind::Join,
            "member-failed" => Kind::Failed,
            "member-leave" => Kind::Leave,
            "member-update" => Kind::Update,
            "member-reap" => Kind::Reap,
            "user" => Kind::User,
            _ => Kind::Other,
        }
    }
}

/// One line of a handler log: event kind, member or user-event name, wall clock in Unix ms.
#[derive(Debug, Clone)]
struct Rec {
    kind: Kind,
    name: String,
    t_ms: f64,
}

fn parse_line(line: &str) -> Option<Rec> {
    let mut it = line.split_whitespace();
    let kind = Kind::parse(it.next()?);
    let name = it.next()?.to_string();
    // EPOCHREALTIME follows LC_NUMERIC; accept a decimal comma too.
    let secs: f64 = it.next()?.replace(',', ".").parse().ok()?;
    Some(Rec {
        kind,
        name,
        t_ms: secs * 1000.0,
    })
}

/// Incremental reader of one agent's handler log.
struct HandlerLog {
    path: PathBuf,
    pos: u64,
    /// Bytes of a line the handler has not finished writing yet.
    partial: Vec<u8>,
    recs: Vec<Rec>,
}

impl HandlerLog {
    fn new(path: PathBuf) -> HandlerLog {
        HandlerLog {
            path,
            pos: 0,
            partial: Vec::new(),
            recs: Vec::new(),
        }
    }

    fn poll(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return; // No event yet.
        };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        let Ok(got) = f.read_to_end(&mut buf) else {
            return;
        };
        self.pos += got as u64;
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let done: Vec<u8> = self.partial.drain(..=last_nl).collect();
        for line in String::from_utf8_lossy(&done).lines() {
            if let Some(r) = parse_line(line) {
                self.recs.push(r);
            }
        }
    }

    /// Time of the first record of `kind` about `name` at or after `since` (Unix ms).
    fn first(&self, kind: Kind, name: &str, since: f64) -> Option<f64> {
        self.recs
            .iter()
            .find(|r| r.kind == kind && r.name == name && r.t_ms >= since)
            .map(|r| r.t_ms)
    }

    /// Whether the last membership record about `name` says it is up (joined or updated).
    fn sees_alive(&self, name: &str) -> bool {
        self.recs
            .iter()
            .rev()
            .find(|r| r.name == name && matches!(r.kind, Kind::Join | Kind::Failed | Kind::Leave | Kind::Reap))
            .is_some_and(|r| r.kind == Kind::Join)
    }
}

/// The running agents. Dropping it SIGKILLs and reaps every agent, also on panic.
struct Mesh {
    n: usize,
    children: Vec<Option<Child>>,
    pids: Vec<u32>,
    rpc: Vec<u16>,
    /// Wall clock (Unix ms) just before the first agent was spawned.
    spawned_at: f64,
    /// The same moment on the monotonic clock, for the change phase's windows.
    spawned: Instant,
    logs: Vec<HandlerLog>,
    /// Holds handler script and logs; removed after the agents are gone (fields drop after
    /// `Drop::drop`).
    dir: tempfile::TempDir,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn node(i: usize) -> String {
    format!("n{i}")
}

/// A port free for both TCP and UDP (memberlist binds both), below the ephemeral range so no
/// agent's outgoing connection can take it before its owner binds it.
fn pick_port(taken: &mut HashSet<u16>, udp_too: bool) -> u16 {
    let start = 20_000 + (std::process::id() % 5_000) as u16;
    for port in (start..32_000).chain(10_000..start) {
        if taken.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if udp_too && UdpSocket::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        taken.insert(port);
        return port;
    }
    panic!("serf bench: no free loopback port");
}

/// The handler: bash builtins only (no fork for the clock), one line per event (one per
/// member for member events, whose stdin lists the members).
fn handler_script(dir: &Path) -> String {
    format!(
        r#"#!/bin/bash
t=$EPOCHREALTIME
log="{}/$SERF_SELF_NAME.log"
if [ "$SERF_EVENT" = user ]; then
  echo "user $SERF_USER_EVENT $t" >> "$log"
elif [ "$SERF_EVENT" = query ]; then
  :
else
  while read -r name rest; do echo "$SERF_EVENT $name $t"; done >> "$log"
fi
"#,
        dir.display()
    )
}

impl Mesh {
    /// Spawns all N agents at once; agents 0 and 1 are the join seeds.
    fn start(n: usize, profile: Profile) -> std::io::Result<Mesh> {
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("handler.sh");
        std::fs::write(&script, handler_script(dir.path()))?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let mut taken = HashSet::new();
        let bind: Vec<u16> = (0..n).map(|_| pick_port(&mut taken, true)).collect();
        let rpc: Vec<u16> = (0..n).map(|_| pick_port(&mut taken, false)).collect();
        let mut mesh = Mesh {
            n,
            children: Vec::with_capacity(n),
            pids: Vec::with_capacity(n),
            rpc: rpc.clone(),
            spawned_at: wall_ms(),
            spawned: Instant::now(),
            logs: (0..n)
                .map(|i| HandlerLog::new(dir.path().join(format!("{}.log", node(i)))))
                .collect(),
            dir,
        };
        for i in 0..n {
            // -retry-join rather than -join: all agents start at once, so a seed may not listen
            // yet, and -join exits on failure. Each seed joins the other so the two cannot end
            // up as separate clusters; 1 s is the smallest retry interval serf accepts.
            let seeds: Vec<usize> = match i {
                0 => vec![1],
                1 => vec![0],
                _ => vec![0, 1],
            };
            let out = std::fs::File::create(mesh.dir.path().join(format!("agent{i}.out")))?;
            let mut cmd = Command::new("serf");
            cmd.arg("agent")
                .arg(format!("-node={}", node(i)))
                .arg(format!("-bind=127.0.0.1:{}", bind[i]))
                .arg(format!("-rpc-addr=127.0.0.1:{}", rpc[i]))
                .arg(format!("-profile={}", profile.flag()))
                .arg(format!("-event-handler={}", script.display()))
                .arg("-retry-interval=1s")
                .arg("-log-level=warn");
            for s in seeds {
                cmd.arg(format!("-retry-join=127.0.0.1:{}", bind[s]));
            }
            let child = cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).spawn()?;
            mesh.pids.push(child.id());
            mesh.children.push(Some(child));
        }
        Ok(mesh)
    }

    fn poll(&mut self) {
        for l in &mut self.logs {
            l.poll();
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.n).filter(|&i| self.children[i].is_some()).collect()
    }

    /// First agent that has exited on its own, with the tail of its output.
    fn crashed(&mut self) -> Option<String> {
        for i in 0..self.n {
            if let Some(c) = &mut self.children[i]
                && let Ok(Some(status)) = c.try_wait()
            {
                let out = std::fs::read_to_string(self.dir.path().join(format!("agent{i}.out"))).unwrap_or_default();
                let tail: Vec<&str> = out.lines().rev().take(5).collect();
                return Some(format!("agent {i} exited ({status}): {}", tail.join(" / ")));
            }
        }
        None
    }

    /// Polls until `done` holds or `limit` passes; false on timeout or a crashed agent.
    fn wait_for(&mut self, limit: Duration, mut done: impl FnMut(&Mesh) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.poll();
            if done(self) {
                return true;
            }
            if let Some(why) = self.crashed() {
                eprintln!("serf bench: {why}");
                return false;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Per agent, the time its handler had seen member-join for all N members (itself
    /// included); None while some agent has not.
    fn converged_at(&self) -> Option<f64> {
        let mut worst: f64 = 0.0;
        for log in &self.logs {
            let mut seen = HashSet::new();
            let at = log.recs.iter().filter(|r| r.kind == Kind::Join).find_map(|r| {
                seen.insert(r.name.as_str());
                (seen.len() >= self.n).then_some(r.t_ms)
            })?;
            worst = worst.max(at);
        }
        Some(worst)
    }

    /// Whether every live agent's handler last saw every live agent as up.
    fn all_see_all(&self) -> bool {
        let live = self.live();
        live.iter()
            .all(|&o| live.iter().all(|&m| self.logs[o].sees_alive(&node(m))))
    }

    /// After a disturbance: wait until the mesh looks whole again, so the next scenario
    /// starts from a clean state.
    fn recover(&mut self, what: &str) {
        if !self.wait_for(Duration::from_secs(60), Mesh::all_see_all) {
            eprintln!("serf bench: mesh not whole again 60 s after {what}; continuing");
        }
    }

    fn signal(&self, i: usize, sig: libc::c_int) {
        // SAFETY: kill(2) on the pid of a child we still own (not yet reaped).
        unsafe {
            libc::kill(self.pids[i] as libc::pid_t, sig);
        }
    }

    /// SIGKILLs agent `i` and reaps it; returns the wall clock just before the signal.
    fn kill9(&mut self, i: usize) -> f64 {
        let t = wall_ms();
        if let Some(mut c) = self.children[i].take() {
            self.signal(i, libc::SIGKILL);
            let _ = c.wait();
        }
        t
    }

    /// `serf event` through agent `origin`'s RPC; false if it failed or hung.
    fn user_event(&self, origin: usize, name: &str, payload: &str) -> bool {
        let child = Command::new("serf")
            .arg("event")
            .arg("-coalesce=false")
            .arg(format!("-rpc-addr=127.0.0.1:{}", self.rpc[origin]))
            .arg(name)
            .arg(payload)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            return false;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return s.success(),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }
}

/// Removes the loss rule when dropped, so a panic inside the window cannot leave loopback
/// lossy for the tools that run next.
struct LossGuard;

impl Drop for LossGuard {
    fn drop(&mut self) {
        common::set_loss(0);
    }
}

/// Runs every wanted scenario against a fresh mesh of `n` Serf agents and appends the rows.
pub fn bench(n: usize, opts: &Opts, rt: &tokio::runtime::Runtime, out: &mut Vec<Row>, profile: Profile) {
    let tool = profile.tool();
    let mut mesh = match Mesh::start(n, profile) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("serf bench: cannot start agents: {e}");
            return;
        }
    };

    // Join convergence (always: everything else needs a whole mesh).
    let limit = Duration::from_secs(120 + 2 * n as u64);
    if !mesh.wait_for(limit, |m| m.converged_at().is_some()) {
        eprintln!(
            "serf bench: N={n} {tool}: no join convergence within {} s",
            limit.as_secs()
        );
        return;
    }
    let join_ms = mesh.converged_at().unwrap_or(f64::NAN) - mesh.spawned_at;
    println!("N={n} {tool}: join convergence {join_ms:.0} ms");
    if opts.wants("join") {
        out.push(Row::new(n, "join convergence", tool, join_ms, "ms"));
    }

    // The handlers' clock says when the last join happened; convergence was seen a poll later.
    let joined = mesh.spawned + Duration::from_secs_f64(join_ms.max(0.0) / 1000.0);
    if opts.wants("change") {
        let clock = change::Clock {
            spawned: mesh.spawned,
            joined,
        };
        // Serf's agents talk over UDP and open TCP only for push/pull and RPC, so its count is
        // of established TCP connections: what it holds open, as shoal's gauge is.
        let pids = mesh.pids.clone();
        rt.block_on(change::measure(
            out,
            n,
            tool,
            opts,
            &pids,
            clock,
            || async { change::established_tcp(&pids) },
            || async { Default::default() },
        ));
    }

    if opts.wants("idle") {
        // Counted from convergence, so a change phase before it is part of the wait.
        std::thread::sleep(opts.settle.saturating_sub(joined.elapsed()));
        rt.block_on(common::measure_idle(
            out,
            n,
            tool,
            &mesh.pids,
            opts.idle_window,
            opts.private_net,
        ));
    }

    if opts.wants("small") {
        let mut times = Vec::new();
        for rep in 0..opts.reps {
            let origin = rep % n;
            let name = format!("bench-{rep}");
            let payload = format!("small-record-{rep:05}-0123456789");
            let start = wall_ms();
            if !mesh.user_event(origin, &name, &payload) {
                eprintln!("serf bench: serf event {name} via agent {origin} failed");
                continue;
            }
            let live = mesh.live();
            let all = |m: &Mesh| {
                live.iter()
                    .all(|&i| m.logs[i].first(Kind::User, &name, start).is_some())
            };
            if !mesh.wait_for(Duration::from_secs(30), all) {
                eprintln!("serf bench: {name} not seen by all agents within 30 s");
                continue;
            }
            let last = live
                .iter()
                .filter_map(|&i| mesh.logs[i].first(Kind::User, &name, start))
                .fold(start, f64::max);
            times.push(Duration::from_secs_f64((last - start).max(0.0) / 1000.0));
            std::thread::sleep(Duration::from_millis(100));
        }
        push_latencies(out, n, "small record to all", tool, &times);
    }

    // Kill victims come from the end and never include the seeds; stop victims are the other
    // non-seeds, so a kill measurement never starts on a member that was just suspected. One
    // non-seed is always left for the stops (as in shoal's harness).
    let kills = if opts.wants("kill") {
        opts.kills.min(n.saturating_sub(3))
    } else {
        0
    };
    let kill_victims: Vec<usize> = (n - kills..n).rev().collect();
    let stop_pool: Vec<usize> = (2..n - kills).collect();

    if opts.wants("stop") && !stop_pool.is_empty() {
        for (k, &secs) in opts.stops.iter().enumerate() {
            let victim = stop_pool[k % stop_pool.len()];
            let who = node(victim);
            let t_stop = wall_ms();
            mesh.signal(victim, libc::SIGSTOP);
            std::thread::sleep(Duration::from_secs(secs));
            mesh.signal(victim, libc::SIGCONT);
            std::thread::sleep(AFTERMATH);
            mesh.poll();
            let count = mesh
                .live()
                .into_iter()
                .filter(|&o| o != victim && mesh.logs[o].first(Kind::Failed, &who, t_stop).is_some())
                .count();
            println!("N={n} {tool}: SIGSTOP {secs} s of {who}: {count} false down verdicts");
            out.push(Row::new(
                n,
                format!("false down verdicts, SIGSTOP {secs} s"),
                tool,
                count as f64,
                "verdicts",
            ));
            mesh.recover(&format!("SIGSTOP {secs} s"));
        }
    }

    if opts.wants("loss") && opts.private_net {
        let t_loss = wall_ms();
        {
            let _guard = LossGuard;
            common::set_loss(opts.loss_percent);
            std::thread::sleep(opts.loss_window);
        }
        std::thread::sleep(AFTERMATH);
        mesh.poll();
        let count: usize = mesh
            .logs
            .iter()
            .map(|l| {
                l.recs
                    .iter()
                    .filter(|r| r.kind == Kind::Failed && r.t_ms >= t_loss)
                    .count()
            })
            .sum();
        let (p, secs) = (opts.loss_percent, opts.loss_window.as_secs());
        println!("N={n} {tool}: {p}% loss for {secs} s: {count} false down verdicts");
        out.push(Row::new(
            n,
            format!("false down verdicts, {p}% loss for {secs} s"),
            tool,
            count as f64,
            "verdicts",
        ));
        mesh.recover("loss");
    }

    if kills > 0 {
        let mut times = Vec::new();
        for (k, &victim) in kill_victims.iter().enumerate() {
            if k > 0 {
                std::thread::sleep(Duration::from_secs(5));
            }
            let who = node(victim);
            let t_kill = mesh.kill9(victim);
            let survivors = mesh.live();
            let all = |m: &Mesh| {
                survivors
                    .iter()
                    .all(|&i| m.logs[i].first(Kind::Failed, &who, t_kill).is_some())
            };
            if !mesh.wait_for(Duration::from_secs(120), all) {
                eprintln!("serf bench: kill -9 of {who} not seen by all survivors within 120 s");
                continue;
            }
            let last = survivors
                .iter()
                .filter_map(|&i| mesh.logs[i].first(Kind::Failed, &who, t_kill))
                .fold(t_kill, f64::max);
            times.push(Duration::from_secs_f64((last - t_kill) / 1000.0));
        }
        push_latencies(out, n, "kill -9 seen down by all", tool, &times);
    }
}
