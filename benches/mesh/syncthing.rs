//! Syncthing side of the mesh bench: N `syncthing serve` processes (the installed binary) on
//! loopback sharing one folder, every device knowing every other at a static address.
//!
//! Each instance starts from the `config.xml` that `syncthing generate` writes for it; the
//! harness changes only this, everything else stays at Syncthing's defaults:
//! - one folder `bench` (sendreceive) made from the generated `<defaults><folder>` template,
//!   so rescan interval (3600 s), filesystem watcher (on, 10 s delay), pull order etc. are the
//!   shipped ones; shared with every device;
//! - every device listed with `tcp://127.0.0.1:PORT`, and `listenAddress` that one TCP address:
//!   the namespace has no internet and addresses are static, so discovery has nothing to do;
//! - global and local announcements, relays and NAT traversal off: they would only fail
//!   (no internet, no multicast beyond loopback) and add retries the other tools do not make;
//! - usage reporting declined (`urAccepted -1`), crash reporting, auto upgrade and the
//!   browser off: nothing to reach, and no prompt or upgrade may interfere;
//! - GUI/REST on 127.0.0.1:GUIPORT without TLS with a known API key, for the harness.
//!
//! Join convergence is measured on a simultaneous start of all N, as for the other tools, and
//! that is slow in Syncthing 1.19 (seconds to ~1.5 min at N=10, ~9 min at N=30): it handles new
//! connections one at a time and each waits up to 20 s for the peer's Hello, so with
//! everyone dialling everyone, waits form cycles that only the 20 s deadline breaks; a dial
//! that failed is retried only after `reconnectionIntervalS` (60 s). That is shipped
//! behaviour and stays in the figure, up to SHOAL_MESH_SYNCTHING_JOIN_SECS (default 300 s).
//! A mesh not whole by then gets a lower bound ("> 300 s") for its join row, and is started
//! again one instance at a time, each joining those already up before the next starts, so the
//! idle and file scenarios still run on a full mesh (at N=30 and 50 that start takes minutes
//! instead of tens of minutes). The catch-up mesh, whose start is setup, always starts that way.
//!
//! Idle CPU and RSS per agent add up both processes `syncthing serve` runs: a monitor and the
//! real Syncthing as its child (`--no-restart` keeps the monitor).
//!
//! Catch-up runs only for [`Trigger::Scan`]: the newcomer scans its empty folder and pulls on
//! connect, so how a writer notices changes plays no part, and a second run would measure
//! the same thing again.

use std::collections::VecDeque;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use serde_json::Value;

use crate::common::{Opts, Row, idle_readings, median, push_idle, push_latencies};

/// How a new file gets noticed by the Syncthing that has it.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// Shipped default: the filesystem watcher (10 s delay).
    Watcher,
    /// The harness asks for a rescan (`POST /rest/db/scan`) right after writing, as shoal's
    /// upload is an explicit call.
    Scan,
}

impl Trigger {
    /// Column name of this profile in the tables.
    pub fn tool(self) -> &'static str {
        match self {
            Trigger::Watcher => "syncthing",
            Trigger::Scan => "syncthing (scan on write)",
        }
    }
}

const BIN: &str = "syncthing";
const FOLDER: &str = "bench";
const API_KEY: &str = "shoal-mesh-bench-api-key";
/// How long a simultaneous start of all N may take to become a full mesh before the join
/// row becomes a lower bound and the mesh is started again one instance at a time:
/// SHOAL_MESH_SYNCTHING_JOIN_SECS (see the module comment).
fn join_limit() -> Duration {
    Duration::from_secs(crate::common::env_or("SHOAL_MESH_SYNCTHING_JOIN_SECS", 300))
}

/// Limit for one instance of a one-at-a-time start to link with those already up: its own
/// dials plus a 20 s Hello wait or two when an older instance's redial crosses one of them.
const STEP_JOIN_TIMEOUT: Duration = Duration::from_secs(180);

/// Watcher delay (10 s) plus its extra delay for files still changing, with room to spare.
const FILE_TIMEOUT: Duration = Duration::from_secs(180);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3600);
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(1800);
const POLL: Duration = Duration::from_millis(15);
const PROGRESS: Duration = Duration::from_secs(30);
/// Subdirectories the catch-up records are spread over (one directory of 10 000 files would
/// be an unusual layout for Syncthing).
const RECORD_DIRS: usize = 100;
const RECORD_BYTES: usize = 100;
const MIB: usize = 1 << 20;

/// Ports are handed out below Linux's ephemeral range (32768+), so an outgoing connection of
/// one instance can never hold the listening port of another that has not started yet.
static NEXT_PORT: AtomicU16 = AtomicU16::new(20_000);

fn next_port() -> Result<u16, String> {
    loop {
        let p = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        if p >= 32_000 {
            return Err("no free port left in 20000..32000".into());
        }
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
}

/// One instance's home (keys, config, database, log), folder and ports.
struct Node {
    name: String,
    home: PathBuf,
    /// The shared folder.
    data: PathBuf,
    /// Where the harness writes a file before renaming it into `data` (same filesystem, so
    /// Syncthing never sees a half-written file).
    stage: PathBuf,
    id: String,
    port: u16,
    gui: u16,
}

impl Node {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gui)
    }
}

/// A set of configured instances, some running. Dropping it kills them before the temporary
/// directory goes.
struct Mesh {
    nodes: Vec<Node>,
    procs: Vec<Option<Child>>,
    // Declared last: removed only after `drop` has killed and reaped every process.
    _dir: tempfile::TempDir,
}

impl Mesh {
    /// Generates keys and config for `count` instances, all knowing each other; starts none.
    fn new(count: usize) -> Result<Mesh, String> {
        let dir = tempfile::Builder::new()
            .prefix("shoal-mesh-syncthing-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let mut nodes = Vec::with_capacity(count);
        let mut generated = Vec::with_capacity(count);
        for i in 0..count {
            let name = format!("st{i}");
            let home = dir.path().join(&name);
            let status = Command::new(BIN)
                .arg("generate")
                .arg(format!("--home={}", home.display()))
                .args(["--no-default-folder", "--skip-port-probing"])
                .env("STNODEFAULTFOLDER", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| format!("{BIN} generate: {e}"))?;
            if !status.success() {
                return Err(format!("{BIN} generate failed: {status}"));
            }
            let xml = fs::read_to_string(home.join("config.xml")).map_err(|e| format!("generated config: {e}"))?;
            let (ds, de) = block(&xml, "<device ", "</device>", 0).ok_or("no device in generated config")?;
            let id = attr(&xml[ds..de], "id")
                .ok_or("no device id in generated config")?
                .to_string();
            let data = home.join("data");
            let stage = home.join("stage");
            for d in [data.join(".stfolder"), stage.clone()] {
                fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            let (port, gui) = (next_port()?, next_port()?);
            nodes.push(Node {
                name,
                home,
                data,
                stage,
                id,
                port,
                gui,
            });
            generated.push(xml);
        }
        for (node, xml) in nodes.iter().zip(&generated) {
            let cfg = render_config(xml, node, &nodes)?;
            fs::write(node.home.join("config.xml"), cfg).map_err(|e| format!("config: {e}"))?;
        }
        let procs = (0..count).map(|_| None).collect();
        Ok(Mesh {
            nodes,
            procs,
            _dir: dir,
        })
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let log = fs::File::create(node.home.join("syncthing.log")).map_err(|e| format!("log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let child = Command::new(BIN)
            .arg("serve")
            .arg(format!("--home={}", node.home.display()))
            // --no-restart: the monitor process does not restart a crashed Syncthing, so a crash
            // shows as an exit instead of a slow agent.
            .args(["--no-browser", "--no-restart", "--no-upgrade"])
            .env("STNODEFAULTFOLDER", "1")
            .env("STNOUPGRADE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{BIN} serve: {e}"))?;
        self.procs[i] = Some(child);
        Ok(())
    }

    /// Per running instance, the pids of its processes: `syncthing serve` is a monitor process
    /// (restarts, log handling; `--no-restart` does not remove it) running the real Syncthing
    /// as its child.
    fn agents(&self) -> Vec<Vec<u32>> {
        let all = all_pids();
        let monitors = self.procs.iter().flatten().map(|c| c.id());
        monitors
            .map(|m| {
                std::iter::once(m)
                    .chain(all.iter().filter(|p| ppid(**p) == Some(m)).copied())
                    .collect()
            })
            .collect()
    }

    /// Which running instances have exited (a crash would otherwise look like a slow mesh).
    fn exited(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for (node, proc) in self.nodes.iter().zip(self.procs.iter_mut()) {
            if let Some(c) = proc
                && let Ok(Some(status)) = c.try_wait()
            {
                gone.push(format!("{} ({status})", node.name));
            }
        }
        gone
    }

    /// Last lines of an instance's log, for error messages.
    fn log_tail(&self, i: usize) -> String {
        let log = fs::read_to_string(self.nodes[i].home.join("syncthing.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n  ")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // The monitor takes its child down with it, but an orphan would outlive the bench.
        let workers: Vec<u32> = self.agents().iter().flat_map(|a| a[1..].to_vec()).collect();
        for &p in &workers {
            // SAFETY: plain syscall on a pid that is a child of our own child.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
        }
        for c in self.procs.iter_mut().flatten() {
            let _ = c.wait();
        }
        // Not our children, so no wait(): until they are gone, so the next tool starts quiet.
        let deadline = Instant::now() + Duration::from_secs(5);
        while workers.iter().any(|&p| running(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Whether a process exists and is not a zombie.
fn running(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .is_some_and(|state| state != "Z")
}

/// Byte range of the first element starting with `open` at or after `from`, through `close`.
fn block(s: &str, open: &str, close: &str, from: usize) -> Option<(usize, usize)> {
    let start = from + s[from..].find(open)?;
    let end = start + s[start..].find(close)? + close.len();
    Some((start, end))
}

/// Value of the first ` name="…"` attribute.
fn attr<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = s.find(&key)? + key.len();
    Some(&s[start..start + s[start..].find('"')?])
}

fn set_attr(s: &str, name: &str, value: &str) -> Result<String, String> {
    let key = format!(" {name}=\"");
    let start = s.find(&key).ok_or_else(|| format!("no attribute {name}"))? + key.len();
    let end = start
        + s[start..]
            .find('"')
            .ok_or_else(|| format!("unterminated attribute {name}"))?;
    Ok(format!("{}{value}{}", &s[..start], &s[end..]))
}

/// Replaces the text of the first `<tag>…</tag>`.
fn set_tag(s: &str, tag: &str, value: &str) -> Result<String, String> {
    let open = format!("<{tag}>");
    let start = s.find(&open).ok_or_else(|| format!("no <{tag}> in generated config"))? + open.len();
    let end = start
        + s[start..]
            .find(&format!("</{tag}>"))
            .ok_or_else(|| format!("unterminated <{tag}>"))?;
    Ok(format!("{}{value}{}", &s[..start], &s[end..]))
}

/// The generated config of `me` with the bench folder, all devices, GUI and options set (see
/// the module comment); the generated device and folder entries serve as templates, so every
/// field not named here keeps the value this Syncthing version writes.
fn render_config(generated: &str, me: &Node, all: &[Node]) -> Result<String, String> {
    let (ds, de) = block(generated, "<device ", "</device>", 0).ok_or("no device in generated config")?;
    let device = &generated[ds..de];
    let mut devices = String::new();
    for n in all {
        let d = set_attr(device, "id", &n.id)?;
        let d = set_attr(&d, "name", &n.name)?;
        devices.push_str(&set_tag(&d, "address", &format!("tcp://127.0.0.1:{}", n.port))?);
        devices.push_str("\n    ");
    }
    let defaults = generated
        .find("<defaults>")
        .ok_or("no <defaults> in generated config")?;
    let (fs_, fe) = block(generated, "<folder ", "</folder>", defaults).ok_or("no default folder in config")?;
    let mut folder = generated[fs_..fe].to_string();
    for (name, value) in [
        ("id", FOLDER),
        ("label", FOLDER),
        ("path", &me.data.display().to_string()),
    ] {
        folder = set_attr(&folder, name, value)?;
    }
    let (fds, fde) = block(&folder, "<device ", "</device>", 0).ok_or("no device in default folder")?;
    let member = folder[fds..fde].to_string();
    let mut members = String::new();
    for n in all {
        members.push_str(&set_attr(&member, "id", &n.id)?);
    }
    folder.replace_range(fds..fde, &members);

    let mut xml = format!("{}{folder}\n    {devices}{}", &generated[..ds], &generated[de..]);
    let (gs, ge) = block(&xml, "<gui ", "</gui>", 0).ok_or("no <gui> in generated config")?;
    let gui = set_tag(&xml[gs..ge], "address", &format!("127.0.0.1:{}", me.gui))?;
    let gui = set_tag(&gui, "apikey", API_KEY)?;
    let gui = set_attr(&gui, "tls", "false")?;
    xml.replace_range(gs..ge, &gui);
    let listen = format!("tcp://127.0.0.1:{}", me.port);
    for (tag, value) in [
        ("listenAddress", listen.as_str()),
        ("globalAnnounceEnabled", "false"),
        ("localAnnounceEnabled", "false"),
        ("relaysEnabled", "false"),
        ("natEnabled", "false"),
        ("urAccepted", "-1"),
        ("autoUpgradeIntervalH", "0"),
        ("startBrowser", "false"),
        ("crashReportingEnabled", "false"),
    ] {
        xml = set_tag(&xml, tag, value)?;
    }
    Ok(xml)
}

/// REST client; every failure is an `None`/`false` the callers retry on.
struct Api(reqwest::Client);

impl Api {
    fn new() -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build();
        Api(client.unwrap_or_default())
    }

    async fn get(&self, node: &Node, path: &str) -> Option<Value> {
        let resp = self
            .0
            .get(node.url(path))
            .header("X-API-Key", API_KEY)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn post(&self, node: &Node, path: &str) -> bool {
        let resp = self.0.post(node.url(path)).header("X-API-Key", API_KEY).send().await;
        resp.is_ok_and(|r| r.status().is_success())
    }
}

/// Splitmix64: incompressible, distinct file contents without another dependency (Syncthing
/// would otherwise reuse blocks it already has).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t ^ (u64::from(std::process::id()) << 32))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// Runs the Syncthing scenarios at mesh size `n` and appends their rows to `out`.
pub fn bench(n: usize, opts: &Opts, rt: &tokio::runtime::Runtime, out: &mut Vec<Row>, trigger: Trigger) {
    let tool = trigger.tool();
    if Command::new(BIN).arg("--version").output().is_err() {
        eprintln!("mesh bench: {BIN} not found; skipping {tool}");
        return;
    }
    if n < 2 {
        eprintln!("mesh bench: {tool} needs at least 2 instances");
        return;
    }
    if (opts.wants("join") || opts.wants("idle") || opts.wants("files"))
        && let Err(e) = rt.block_on(main_mesh(n, opts, out, trigger))
    {
        eprintln!("N={n} {tool}: {e}");
    }
    if opts.wants("catchup") {
        match trigger {
            Trigger::Scan => {
                if let Err(e) = rt.block_on(catch_up(n, opts, out, tool)) {
                    eprintln!("N={n} {tool}: catch-up: {e}");
                }
            }
            Trigger::Watcher => {
                eprintln!("N={n} {tool}: catch-up skipped (same procedure as scan on write; see that column)")
            }
        }
    }
}

/// Join, idle and file propagation on one mesh of `n` instances.
async fn main_mesh(n: usize, opts: &Opts, out: &mut Vec<Row>, trigger: Trigger) -> Result<(), String> {
    let tool = trigger.tool();
    let setup = Instant::now();
    let mut mesh = Mesh::new(n)?;
    eprintln!(
        "N={n} {tool}: keys and config of {n} instances in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let api = Api::new();
    let all: Vec<usize> = (0..n).collect();
    let start = Instant::now();
    for i in 0..n {
        mesh.start(i)?;
    }
    let label = format!("N={n} {tool}: join");
    match wait_joined(&api, &mut mesh, &all, start, join_limit(), &label).await {
        Ok(join) => {
            let ms = join.as_secs_f64() * 1000.0;
            println!("N={n} {tool}: join convergence {ms:.0} ms");
            if opts.wants("join") {
                out.push(Row::new(n, "join convergence", tool, ms, "ms"));
            }
        }
        Err(JoinError::Stalled(why)) => {
            let ms = join_limit().as_secs_f64() * 1000.0;
            println!("N={n} {tool}: join convergence over {ms:.0} ms");
            eprintln!("N={n} {tool}: {why}");
            if opts.wants("join") {
                out.push(Row::new(n, "join convergence", tool, ms, crate::common::AT_LEAST_MS));
            }
            // The rest runs on a full mesh: a fresh one, started one instance at a time.
            drop(mesh);
            mesh = Mesh::new(n)?;
            let t0 = Instant::now();
            start_one_by_one(&api, &mut mesh, &all, None, &format!("N={n} {tool}: restart")).await?;
            eprintln!(
                "N={n} {tool}: full mesh after starting one instance at a time in {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
        Err(JoinError::Failed(why)) => return Err(why),
    }

    if opts.wants("idle") {
        tokio::time::sleep(opts.settle).await;
        // Both processes of each agent count: that is what `syncthing serve` runs.
        let agents = mesh.agents();
        let pids: Vec<u32> = agents.iter().flatten().copied().collect();
        let (cpu, rss, lo) = idle_readings(&pids, opts.idle_window).await;
        let (mut agent_cpu, mut agent_rss) = (Vec::new(), Vec::new());
        let (mut monitor_cpu, mut monitor_rss) = (Vec::new(), Vec::new());
        let mut k = 0;
        for agent in &agents {
            agent_cpu.push(cpu[k..k + agent.len()].iter().sum());
            agent_rss.push(rss[k..k + agent.len()].iter().sum());
            monitor_cpu.push(cpu[k]);
            monitor_rss.push(rss[k]);
            k += agent.len();
        }
        eprintln!(
            "N={n} {tool}: idle, of which the monitor process: CPU {:.2}%, RSS {:.1} MiB (medians; {} processes)",
            median(monitor_cpu),
            median(monitor_rss),
            pids.len()
        );
        // idle_readings divides loopback traffic by the process count; per agent here.
        let lo = lo * pids.len() as f64 / agents.len().max(1) as f64;
        push_idle(out, n, tool, agent_cpu, agent_rss, lo, opts.private_net);
        let uss = median(
            agents
                .iter()
                .map(|a| a.iter().map(|p| crate::common::private_mib(*p)).sum())
                .collect(),
        );
        println!("N={n} {tool}: idle private memory (USS) per agent {uss:.1} MiB");
        out.push(Row::new(n, "idle private memory (USS) per agent", tool, uss, "MiB"));
    }

    if opts.wants("files") {
        let mut rng = Rng::new();
        let mut origin = 0;
        for (what, mib) in [("1 MiB file to all", 1), ("10 MiB file to all", 10)] {
            let mut times = Vec::with_capacity(opts.file_reps);
            for rep in 0..opts.file_reps {
                let name = format!("f{mib}m-{rep:03}-{:08x}.bin", rng.next() as u32);
                match send_file(&api, &mesh, origin % n, &name, mib * MIB, trigger, &mut rng).await? {
                    Some(t) => times.push(t),
                    None => eprintln!(
                        "N={n} {tool}: {name} from {} not everywhere after {FILE_TIMEOUT:?}; run dropped",
                        mesh.nodes[origin % n].name
                    ),
                }
                origin += 1;
                // Lets the receivers' index updates go out before the next file.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            push_latencies(out, n, what, tool, &times);
        }
    }
    let exited = mesh.exited();
    if !exited.is_empty() {
        eprintln!("N={n} {tool}: instances exited during the run: {}", exited.join(", "));
    }
    Ok(())
}

/// Why a mesh did not become whole.
enum JoinError {
    /// Still short of links at the limit, every instance running.
    Stalled(String),
    /// An instance exited.
    Failed(String),
}

impl From<JoinError> for String {
    fn from(e: JoinError) -> String {
        match e {
            JoinError::Stalled(s) | JoinError::Failed(s) => s,
        }
    }
}

/// Starts `members` one at a time, each once those before it are linked with each other
/// (and, with `files`, hold that many files in sync), so no two dial each other at once.
async fn start_one_by_one(
    api: &Api,
    mesh: &mut Mesh,
    members: &[usize],
    files: Option<u64>,
    label: &str,
) -> Result<(), String> {
    let start = Instant::now();
    for k in 0..members.len() {
        mesh.start(members[k])?;
        wait_joined(api, mesh, &members[..=k], Instant::now(), STEP_JOIN_TIMEOUT, label).await?;
        if let Some(total) = files {
            wait_in_sync(api, &mesh.nodes[members[k]], total, label).await?;
        }
        if (k + 1) % 10 == 0 {
            eprintln!(
                "{label}: {} of {} up (t = {:.0} s)",
                k + 1,
                members.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Waits until every instance in `members` reports all other members connected; returns the
/// time since `start`, or an error once `limit` has passed since `start`.
async fn wait_joined(
    api: &Api,
    mesh: &mut Mesh,
    members: &[usize],
    start: Instant,
    limit: Duration,
    label: &str,
) -> Result<Duration, JoinError> {
    let mut pending: Vec<usize> = members.to_vec();
    let mut report = Instant::now();
    loop {
        let counts = join_all(pending.iter().map(|&i| {
            let (mesh, api) = (&*mesh, api);
            async move {
                let node = &mesh.nodes[i];
                let conns = api.get(node, "/rest/system/connections").await;
                let linked = members
                    .iter()
                    .filter(|&&j| j != i)
                    .filter(|&&j| {
                        let c = conns.as_ref().map(|v| &v["connections"][&mesh.nodes[j].id]);
                        c.and_then(|c| c["connected"].as_bool()) == Some(true)
                    })
                    .count();
                (i, linked)
            }
        }))
        .await;
        let want = members.len() - 1;
        pending.retain(|i| counts.iter().any(|&(j, c)| j == *i && c < want));
        if pending.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            let fewest = counts.iter().map(|&(_, c)| c).min().unwrap_or(0);
            return Err(JoinError::Stalled(format!(
                "no full mesh after {limit:?}: {} of {} instances short of {want} links (fewest {fewest}); log of {}:\n  {}",
                pending.len(),
                members.len(),
                mesh.nodes[pending[0]].name,
                mesh.log_tail(pending[0])
            )));
        }
        if report.elapsed() >= PROGRESS {
            report = Instant::now();
            let fewest = counts.iter().map(|&(_, c)| c).min().unwrap_or(0);
            eprintln!(
                "{label}: {}/{} instances see all {want} peers, fewest links {fewest} (t = {:.0} s)",
                members.len() - pending.len(),
                members.len(),
                start.elapsed().as_secs_f64()
            );
            let exited = mesh.exited();
            if !exited.is_empty() {
                return Err(JoinError::Failed(format!("instances exited: {}", exited.join(", "))));
            }
        }
        // Fine-grained while a quick join is possible, then lighter on the two cores.
        let pause = if start.elapsed() < Duration::from_secs(10) {
            50
        } else {
            250
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// Writes `size` random bytes as `name` into `origin`'s folder and waits until every other
/// instance has the file at full size. `None` when that takes longer than [`FILE_TIMEOUT`].
async fn send_file(
    api: &Api,
    mesh: &Mesh,
    origin: usize,
    name: &str,
    size: usize,
    trigger: Trigger,
    rng: &mut Rng,
) -> Result<Option<Duration>, String> {
    let content = rng.bytes(size);
    let node = &mesh.nodes[origin];
    let (staged, target) = (node.stage.join(name), node.data.join(name));
    let t0 = Instant::now();
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&staged)?;
        f.write_all(&content)?;
        f.sync_all()?;
        fs::rename(&staged, &target)
    };
    write().map_err(|e| format!("writing {}: {e}", target.display()))?;
    if let Trigger::Scan = trigger {
        let path = format!("/rest/db/scan?folder={FOLDER}&sub={name}");
        let mut tries = 0;
        // The call returns once the scan is done; it can fail while the folder is busy.
        while !api.post(node, &path).await {
            tries += 1;
            if tries == 50 {
                eprintln!("{}: POST {path} refused 50 times; leaving it to the watcher", node.name);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut pending: Vec<&Node> = mesh
        .nodes
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != origin)
        .map(|(_, n)| n)
        .collect();
    loop {
        pending.retain(|n| !has_file(&n.data.join(name), size as u64));
        if pending.is_empty() {
            return Ok(Some(t0.elapsed()));
        }
        if t0.elapsed() > FILE_TIMEOUT {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

fn ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command in parentheses: state, then the parent pid.
    stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
}

/// Syncthing writes to `.syncthing.NAME.tmp` and renames, so the final name at full size
/// means the file is complete.
fn has_file(path: &Path, size: u64) -> bool {
    fs::metadata(path).is_ok_and(|m| m.len() == size)
}

/// Newcomer catch-up: `n` instances hold the records and files, the newcomer (configured on
/// all of them from the start) is started and timed until its folder holds everything.
async fn catch_up(n: usize, opts: &Opts, out: &mut Vec<Row>, tool: &str) -> Result<(), String> {
    let setup = Instant::now();
    let mut mesh = Mesh::new(n + 1)?;
    let newcomer = n;
    let files = seed(&mesh, n, opts)?;
    eprintln!(
        "N={n} {tool}: catch-up: {} instances configured, {} files seeded in {:.1} s",
        n + 1,
        files.len(),
        setup.elapsed().as_secs_f64()
    );
    let api = Api::new();
    let members: Vec<usize> = (0..n).collect();
    let start = Instant::now();
    let label = format!("N={n} {tool}: catch-up mesh");
    // Setup, not measured: one instance at a time, each joining those already up and adopting
    // instance 0's versions before the next starts. Started all at once they stall on Hello
    // timeouts for minutes (see the module comment), and at N=50 the instances then keep
    // re-preparing their pulls on every index update for tens of minutes.
    start_one_by_one(&api, &mut mesh, &members, Some(files.len() as u64), &label).await?;
    wait_settled(&api, &mesh, &members, files.len(), &label).await?;
    eprintln!(
        "{label}: all {n} hold everything after {:.0} s",
        start.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    mesh.start(newcomer)?;
    let data = mesh.nodes[newcomer].data.clone();
    // Files only ever arrive, so each poll checks from the first still-missing one on and
    // stops at the first miss: cheap while many are missing, a full pass at the end.
    let mut pending: VecDeque<&(PathBuf, u64)> = files.iter().collect();
    let mut report = Instant::now();
    loop {
        while pending
            .front()
            .is_some_and(|(rel, size)| has_file(&data.join(rel), *size))
        {
            pending.pop_front();
        }
        if pending.is_empty() {
            break;
        }
        if t0.elapsed() > CATCHUP_TIMEOUT {
            return Err(format!(
                "newcomer still misses {} files after {CATCHUP_TIMEOUT:?}; log:\n  {}",
                pending.len(),
                mesh.log_tail(newcomer)
            ));
        }
        if report.elapsed() >= PROGRESS {
            report = Instant::now();
            pending.retain(|(rel, size)| !has_file(&data.join(rel), *size));
            eprintln!(
                "{label}: newcomer misses {} of {} files (t = {:.0} s)",
                pending.len(),
                files.len(),
                t0.elapsed().as_secs_f64()
            );
            if !mesh.exited().is_empty() {
                return Err(format!("instances exited: {}", mesh.exited().join(", ")));
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    println!("N={n} {tool}: newcomer catch-up {ms:.0} ms ({} files)", files.len());
    out.push(Row::new(n, "newcomer catch-up", tool, ms, "ms"));
    // Conflict copies would mean the seeding did not resolve as intended.
    let held = count_files(&data);
    if held != files.len() {
        eprintln!(
            "{label}: newcomer holds {held} files, {} expected (conflict copies?)",
            files.len()
        );
    }
    Ok(())
}

/// Regular files under `dir`, Syncthing's marker directory left out.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name() != ".stfolder")
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

/// Writes the catch-up data into instance 0's folder and copies it into instances
/// 1..holders before any starts, the copies an hour older. Every instance then finds the
/// content in its initial scan; the versions are concurrent, and instance 0's wins everywhere
/// on its newer mtime, so the others only adopt its metadata (same blocks: no transfer, no
/// conflict copy). Syncing it all from instance 0 would cost N-1 times the writes and fsyncs
/// before the measurement even begins; with identical mtimes (hard links) the device IDs
/// would pick the winner, and instances already in sync could have to adopt the versions of
/// each one started after them. Returns (path in folder, size) of every file.
fn seed(mesh: &Mesh, holders: usize, opts: &Opts) -> Result<Vec<(PathBuf, u64)>, String> {
    let io = |e: std::io::Error| format!("seeding: {e}");
    let mut rng = Rng::new();
    let mut files = Vec::with_capacity(opts.catchup_records + opts.catchup_mib);
    let mut dirs = vec![PathBuf::from("m")];
    dirs.extend((0..RECORD_DIRS).map(|d| PathBuf::from(format!("r/d{d:02}"))));
    for r in 0..opts.catchup_records {
        files.push((
            PathBuf::from(format!("r/d{:02}/r{r:05}", r % RECORD_DIRS)),
            RECORD_BYTES,
        ));
    }
    for m in 0..opts.catchup_mib {
        files.push((PathBuf::from(format!("m/b{m:03}.bin")), MIB));
    }
    let first = &mesh.nodes[0].data;
    let older = SystemTime::now() - Duration::from_secs(3600);
    for d in &dirs {
        fs::create_dir_all(first.join(d)).map_err(io)?;
    }
    for (rel, size) in &files {
        fs::write(first.join(rel), rng.bytes(*size)).map_err(io)?;
    }
    for node in &mesh.nodes[1..holders] {
        for d in &dirs {
            fs::create_dir_all(node.data.join(d)).map_err(io)?;
        }
        for (rel, _) in &files {
            let copy = node.data.join(rel);
            fs::copy(first.join(rel), &copy).map_err(io)?;
            fs::File::options()
                .write(true)
                .open(&copy)
                .and_then(|f| f.set_modified(older))
                .map_err(io)?;
        }
    }
    Ok(files.into_iter().map(|(p, s)| (p, s as u64)).collect())
}

/// Waits until one instance reports the folder idle, nothing needed and all `total` files.
async fn wait_in_sync(api: &Api, node: &Node, total: u64, label: &str) -> Result<(), String> {
    let t0 = Instant::now();
    let mut report = Instant::now();
    loop {
        let status = api.get(node, &format!("/rest/db/status?folder={FOLDER}")).await;
        let need = status.as_ref().and_then(|s| s["needTotalItems"].as_u64());
        if status
            .as_ref()
            .is_some_and(|s| s["state"] == "idle" && need == Some(0) && s["localFiles"].as_u64() == Some(total))
        {
            return Ok(());
        }
        if t0.elapsed() > SETTLE_TIMEOUT {
            return Err(format!("{label}: {} not in sync after {SETTLE_TIMEOUT:?}", node.name));
        }
        if report.elapsed() >= PROGRESS {
            report = Instant::now();
            let state = status.as_ref().and_then(|s| s["state"].as_str().map(String::from));
            eprintln!(
                "{label}: {} {} with {} items needed (t = {:.0} s)",
                node.name,
                state.unwrap_or_default(),
                need.map_or("?".into(), |v| v.to_string()),
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every member reports the folder idle with nothing needed and all `total` files
/// both global and local, and sees the next member complete too, twice in a row.
async fn wait_settled(api: &Api, mesh: &Mesh, members: &[usize], total: usize, label: &str) -> Result<(), String> {
    let t0 = Instant::now();
    let mut report = Instant::now();
    let mut streak = 0;
    let total = total as u64;
    loop {
        let states = join_all(members.iter().enumerate().map(|(k, &i)| async move {
            let node = &mesh.nodes[i];
            let status = api.get(node, &format!("/rest/db/status?folder={FOLDER}")).await;
            let need = status
                .as_ref()
                .and_then(|s| s["needTotalItems"].as_u64())
                .unwrap_or(u64::MAX);
            let local_done = status.is_some_and(|s| {
                s["state"] == "idle"
                    && need == 0
                    && s["globalFiles"].as_u64() == Some(total)
                    && s["localFiles"].as_u64() == Some(total)
            });
            // Costly for Syncthing: only asked once the instance itself is done.
            if !local_done {
                return (false, need);
            }
            let peer = &mesh.nodes[members[(k + 1) % members.len()]];
            let path = format!("/rest/db/completion?folder={FOLDER}&device={}", peer.id);
            let completion = api.get(node, &path).await;
            let done = completion
                .is_some_and(|c| c["completion"].as_f64() == Some(100.0) && c["needItems"].as_u64() == Some(0));
            (done, need)
        }))
        .await;
        if states.iter().all(|&(done, _)| done) {
            streak += 1;
            if streak == 2 {
                return Ok(());
            }
        } else {
            streak = 0;
        }
        if t0.elapsed() > SETTLE_TIMEOUT {
            return Err(format!("{label}: not settled after {SETTLE_TIMEOUT:?}"));
        }
        if report.elapsed() >= PROGRESS {
            report = Instant::now();
            eprintln!(
                "{label}: {}/{} settled, most items still needed {} (t = {:.0} s)",
                states.iter().filter(|s| s.0).count(),
                states.len(),
                states.iter().map(|s| s.1).filter(|&v| v != u64::MAX).max().unwrap_or(0),
                t0.elapsed().as_secs_f64()
            );
        }
        // db/status is an expensive call for Syncthing; a coarse poll keeps it out of the way.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
