//! shoal side of the mesh bench: every agent a separate `shoal agent` process (release build,
//! run from a copy made once per run, see [`agent_binary`])
//! with production defaults (probe 1 s, suspicion 2.5 s, anti-entropy 30 s), as operators run it.
//!
//! Observation: join and small-record propagation by polling every agent's HTTP API (every
//! 100 ms and 20 ms, so those figures carry up to that much observation delay); files by
//! polling each agent's `<state_dir>/files` (written by rename, so existence with the full
//! size means done); failure verdicts from each agent's own event log (`/api/events`, the
//! millisecond at which that agent declared the member down), so they carry no polling delay.

mod recovery;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal::identity::{NodeCertificate, PublicKey, SecretKey, unix_now};
use shoal::replication::item::{ItemMeta, SignedItem};

use crate::change;
use crate::common::{self, Opts, Row, free_port, push_latencies, wall_ms};

const TOOL: &str = "shoal";
/// Time a mesh gets after a disturbance (stop, loss) to settle its verdicts before counting.
const AFTERMATH: Duration = Duration::from_secs(15);
/// Small records written on each side of a partition while it lasts (plus one 1 MiB file).
const PARTITION_RECORDS: usize = 10;

struct Agent {
    key: PublicKey,
    /// The QUIC port, the source of everything it sends to peers.
    cluster: u16,
    http: SocketAddr,
    state: PathBuf,
    child: Child,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Mesh {
    dir: tempfile::TempDir,
    agents: Vec<Agent>,
    network: SecretKey,
    signer: SecretKey,
    seeds: Vec<u16>,
    /// The `[files]` section every agent gets.
    policy: String,
    client: reqwest::Client,
}

impl Mesh {
    /// Starts `n` agent processes at once; the first two are everyone's bootstrap nodes. Every
    /// agent accepts the file names `names`, signed by the bench's signer.
    fn start(n: usize, names: &[String]) -> Mesh {
        let signer = SecretKey::generate();
        let mut policy = String::from("[files]\n");
        for name in names {
            policy.push_str(&format!("\"{name}\" = [\"{}\"]\n", signer.public()));
        }
        let mut mesh = Mesh {
            dir: tempfile::tempdir().unwrap(),
            agents: Vec::with_capacity(n),
            network: SecretKey::generate(),
            signer,
            seeds: (0..2).map(|_| free_port(true)).collect(),
            policy,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for i in 0..n {
            mesh.spawn(i);
        }
        mesh
    }

    /// Starts agent `i` (`n{i}`); agents 0 and 1 listen on the seed ports.
    fn spawn(&mut self, i: usize) {
        let name = format!("n{i}");
        let state: PathBuf = self.dir.path().join(&name);
        let key = SecretKey::generate();
        key.save(&state.join("node.key"), false).unwrap();
        let cert = NodeCertificate::issue(&self.network, key.public(), &name, unix_now() - 60, unix_now() + 86400)
            .unwrap()
            .to_base64();
        let cluster = self.seeds.get(i).copied().unwrap_or_else(|| free_port(true));
        let http = free_port(false);
        let others: Vec<String> = self
            .seeds
            .iter()
            .filter(|p| **p != cluster)
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        // Production defaults unless a run asks for another suspicion timeout.
        let suspicion = std::env::var("SHOAL_MESH_SUSPECT_TIMEOUT")
            .map(|t| format!("suspect_timeout = \"{t}\"\n"))
            .unwrap_or_default();
        let config = format!(
            "[node]\nstate_dir = \"{}\"\n\n[cluster]\nlisten = \"127.0.0.1:{cluster}\"\nbootstrap = [{}]\n{suspicion}\n\
             [network]\nnetwork_key = \"{}\"\ncertificate = \"{cert}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n{}",
            state.display(),
            others.join(", "),
            self.network.public(),
            self.policy,
        );
        let path = state.join("shoal.toml");
        std::fs::write(&path, config).unwrap();
        let child = spawn_agent(&path, &state);
        self.agents.push(Agent {
            key: key.public(),
            cluster,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            state,
            child,
        });
    }

    async fn get(&self, http: SocketAddr, path: &str) -> Option<serde_json::Value> {
        self.client
            .get(format!("http://{http}{path}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()
    }

    /// Alive members `a` counts. From `/api/health`'s counts, not the member list: polling
    /// every agent's list every 100 ms costs the agents O(N²) work per round (at 200 agents
    /// about 8 MB of JSON per round), which Serf's side (log files) does not pay.
    async fn alive(&self, a: &Agent) -> usize {
        self.get(a.http, "/api/health")
            .await
            .and_then(|h| h["members"]["alive"].as_u64())
            .unwrap_or(0) as usize
    }

    /// Until every agent lists `n` alive.
    async fn converge(&self, n: usize, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let verbose = std::env::var("SHOAL_MESH_VERBOSE").is_ok();
        let mut shown = Duration::ZERO;
        while t0.elapsed() < limit {
            let counts = futures_util::future::join_all(self.agents.iter().map(|a| self.alive(a))).await;
            if counts.iter().all(|c| *c == n) {
                return Some(t0.elapsed());
            }
            if verbose && t0.elapsed() >= shown {
                let behind: Vec<String> = (counts.iter().enumerate())
                    .filter(|(_, c)| **c != n)
                    .map(|(i, c)| format!("n{i}:{c}"))
                    .collect();
                eprintln!(
                    "shoal bench: joining +{:.0} s, not yet at {n}: {}",
                    t0.elapsed().as_secs_f64(),
                    behind.join(" ")
                );
                shown += Duration::from_secs(5);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Signs `body` as file `name` and uploads it through agent `origin`; returns its version.
    async fn upload(&self, origin: usize, name: &str, body: Vec<u8>) -> u64 {
        let version = shoal::replication::hlc::next(shoal::time::unix_ms(), 0);
        let meta = ItemMeta::file(
            *self.network.public().as_bytes(),
            name,
            &body,
            self.signer.public(),
            version,
        );
        let envelope = shoal::files::envelope::encode(&SignedItem::sign(meta, &self.signer), &body);
        self.send(reqwest::Method::PUT, origin, name, envelope).await;
        version
    }

    /// Sends a signed envelope for file `name` to agent `origin`; panics if it is refused.
    async fn send(&self, method: reqwest::Method, origin: usize, name: &str, envelope: Vec<u8>) {
        let resp = self
            .client
            .request(
                method.clone(),
                format!("http://{}/api/files/{name}", self.agents[origin].http),
            )
            .header("content-type", shoal::files::envelope::CONTENT_TYPE)
            .body(envelope)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "{method} of {name} refused: {}",
            resp.status()
        );
    }

    /// Deletes file `name` through agent `origin` with a signed tombstone; time until no agent
    /// has it in its files directory (the window starts before the request is sent, as for an
    /// upload).
    async fn delete(&self, origin: usize, name: &str) -> Duration {
        let version = shoal::replication::hlc::next(shoal::time::unix_ms(), 0);
        let meta = ItemMeta::file_delete(*self.network.public().as_bytes(), name, self.signer.public(), version);
        let envelope = shoal::files::envelope::encode(&SignedItem::sign(meta, &self.signer), &[]);
        let t0 = Instant::now();
        self.send(reqwest::Method::DELETE, origin, name, envelope).await;
        let mut pending: Vec<PathBuf> = self.agents.iter().map(|a| a.state.join("files").join(name)).collect();
        loop {
            pending.retain(|p| p.exists());
            if pending.is_empty() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "delete of {name} did not reach every agent"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Uploads a small file through agent `origin`; time until every agent's API serves it, and
    /// the last agent to serve it.
    async fn small(&self, origin: usize, rep: usize) -> (Duration, usize) {
        let t0 = Instant::now();
        let version = self
            .upload(origin, "small", format!("small signed record {rep}").into_bytes())
            .await;
        let mut pending: Vec<usize> = (0..self.agents.len()).collect();
        let mut last = (Duration::ZERO, origin);
        while !pending.is_empty() {
            let seen = futures_util::future::join_all(pending.iter().map(|&i| async move {
                self.get(self.agents[i].http, "/api/files/small")
                    .await
                    .is_some_and(|f| f["version"].as_u64() == Some(version))
            }))
            .await;
            let now = t0.elapsed();
            let before = pending.clone();
            pending = pending
                .into_iter()
                .zip(seen)
                .filter(|(_, s)| !s)
                .map(|(a, _)| a)
                .collect();
            if let Some(&i) = before.iter().find(|i| !pending.contains(i)) {
                last = (now, i);
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "propagation stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last
    }

    /// Uploads `size` random bytes as file `name` through `origin`; time until every agent has
    /// written it to its files directory.
    async fn file(&self, origin: usize, name: &str, size: usize) -> Duration {
        let body: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
        let t0 = Instant::now();
        self.upload(origin, name, body).await;
        let mut pending: Vec<PathBuf> = self.agents.iter().map(|a| a.state.join("files").join(name)).collect();
        loop {
            pending.retain(|p| std::fs::metadata(p).map(|m| m.len() != size as u64).unwrap_or(true));
            if pending.is_empty() {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "{name} did not reach every agent"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Unix ms at which each agent in `observers` declared `key` down at or after `since_ms`.
    async fn down_verdicts(&self, observers: &[usize], key: Option<&PublicKey>, since_ms: f64) -> Vec<f64> {
        self.verdicts("node_down", observers, key, since_ms).await
    }

    /// Unix ms of each `kind` event (`node_down`, `node_suspect`) about `key` that agents in
    /// `observers` logged at or after `since_ms`.
    async fn verdicts(&self, kind: &str, observers: &[usize], key: Option<&PublicKey>, since_ms: f64) -> Vec<f64> {
        let mut out = Vec::new();
        for &i in observers {
            let Some(ev) = self.get(self.agents[i].http, "/api/events?limit=1000").await else {
                continue;
            };
            for e in ev["events"].as_array().into_iter().flatten() {
                let at = e["at_ms"].as_f64().unwrap_or(0.0);
                let about = e["node"].as_str().unwrap_or("");
                if e["kind"] == kind
                    && at >= since_ms
                    && key.is_none_or(|k| k.to_string() == about)
                    && about != self.agents[i].key.to_string()
                {
                    out.push(at);
                }
            }
        }
        out
    }

    /// `kill -9`s agent `victim`; time until the last survivor declared it down (from its
    /// event log), found once every survivor lists it down.
    async fn kill_and_detect(&mut self, victim: usize) -> Duration {
        let key = self.agents[victim].key;
        let mut dead = self.agents.remove(victim);
        let t0 = wall_ms();
        let started = Instant::now();
        let _ = dead.child.kill();
        let _ = dead.child.wait();
        let all: Vec<usize> = (0..self.agents.len()).collect();
        loop {
            let verdicts = self.down_verdicts(&all, Some(&key), t0).await;
            if verdicts.len() >= self.agents.len() {
                let last = verdicts.iter().copied().fold(t0, f64::max);
                // Where the time goes: the first suspicion is the first failed probe (plus
                // the probe period foca waits for indirect acks); the first down verdict comes
                // one suspicion timeout later; the last is that verdict's dissemination.
                let suspects = self.verdicts("node_suspect", &all, Some(&key), t0).await;
                eprintln!(
                    "shoal bench: kill of {key}: suspect first/median/last {}, down {}",
                    span(&suspects, t0),
                    span(&verdicts, t0)
                );
                return Duration::from_secs_f64((last - t0).max(0.0) / 1000.0);
            }
            assert!(started.elapsed() < Duration::from_secs(120), "failure not detected");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops agent `victim` (SIGSTOP) for `secs`, resumes it, waits, and counts the agents
    /// that declared it down meanwhile.
    async fn stop_and_count(&self, victim: usize, secs: u64) -> usize {
        let t0 = wall_ms();
        let pid = self.agents[victim].pid() as libc::pid_t;
        // SAFETY: plain signals to a child process of ours.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        tokio::time::sleep(Duration::from_secs(secs)).await;
        unsafe { libc::kill(pid, libc::SIGCONT) };
        tokio::time::sleep(AFTERMATH).await;
        let others: Vec<usize> = (0..self.agents.len()).filter(|i| *i != victim).collect();
        let key = self.agents[victim].key;
        let verdicts = self.down_verdicts(&others, Some(&key), t0).await;
        // Whether a verdict was near: how long after the stop the others suspected it.
        let suspects = self.verdicts("node_suspect", &others, Some(&key), t0).await;
        eprintln!(
            "shoal bench: SIGSTOP {secs} s of {key}: suspect first/median/last {}, down {}",
            span(&suspects, t0),
            span(&verdicts, t0)
        );
        verdicts.len()
    }

    fn pids(&self) -> Vec<u32> {
        self.agents.iter().map(Agent::pid).collect()
    }

    /// Every metric sample of agent `a`, by name with labels (empty when it does not answer).
    async fn metrics(&self, a: &Agent) -> std::collections::BTreeMap<String, f64> {
        let Ok(r) = self.client.get(format!("http://{}/metrics", a.http)).send().await else {
            return Default::default();
        };
        r.text()
            .await
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, v) = l.rsplit_once(' ')?;
                Some((name.to_string(), v.parse::<f64>().ok()?))
            })
            .collect()
    }

    /// Every metric sample of every agent, summed over agents.
    async fn counters(&self) -> std::collections::BTreeMap<String, f64> {
        let mut sum = std::collections::BTreeMap::new();
        for a in &self.agents {
            for (name, v) in self.metrics(a).await {
                *sum.entry(name).or_insert(0.0) += v;
            }
        }
        sum
    }

    /// Prints how items travelled since `before` (summed counters): an item repaired by
    /// anti-entropy missed every push; failed fetches were retried with other holders.
    async fn how_items_came(&self, n: usize, what: &str, before: &std::collections::BTreeMap<String, f64>) {
        for (name, v) in self.counters().await {
            let d = v - before.get(&name).copied().unwrap_or(0.0);
            let keys = ["committed", "dropped", "repaired", "rejected", "fetch"];
            if d > 0.0 && keys.iter().any(|k| name.contains(k)) {
                println!("N={n} shoal:   during {what}: {name} +{d}");
            }
        }
    }

    /// Each agent's `shoal_connections_open`; an error when an agent does not report it (an
    /// older build under SHOAL_MESH_BIN).
    async fn open_connections(&self) -> Result<Vec<f64>, String> {
        let all = futures_util::future::join_all(self.agents.iter().map(|a| self.metrics(a))).await;
        all.iter()
            .map(|m| m.get("shoal_connections_open").copied())
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| "an agent reports no shoal_connections_open".into())
    }

    /// `(files, bytes)` agent `a` holds, from its metrics.
    async fn holdings(&self, a: &Agent) -> (u64, u64) {
        let m = self.metrics(a).await;
        let read = |name: &str| m.get(name).copied().unwrap_or(0.0) as u64;
        (read("shoal_files"), read("shoal_file_bytes"))
    }
}

/// The binary agents run: SHOAL_MESH_BIN as given (another build under the same harness), or
/// else a copy of this build, made once per run, as a package manager installs it: Serf and
/// Syncthing run from their installed packages too. (The fifth round measured ~2 MiB more idle
/// RSS from the linker's output than from a copy; the sixth saw the copy at the same figure,
/// so the copy is for realism, not for the number.) The copy lives in cargo's scratch
/// directory for benches, replaced by rename, so agents of another run still executing the
/// previous copy keep it and nothing is left behind in /tmp.
fn agent_binary() -> PathBuf {
    static INSTALLED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(bin) = std::env::var_os("SHOAL_MESH_BIN") {
        return bin.into();
    }
    INSTALLED
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
            let bin = dir.join("shoal-mesh-agent");
            let staged = dir.join(format!("shoal-mesh-agent.{}", std::process::id()));
            std::fs::copy(env!("CARGO_BIN_EXE_shoal"), &staged).unwrap();
            std::fs::rename(&staged, &bin).unwrap();
            bin
        })
        .clone()
}

/// First, median and last of Unix-ms times `v`, in seconds after `t0`, and how many.
fn span(v: &[f64], t0: f64) -> String {
    let mut v: Vec<f64> = v.iter().map(|t| (t - t0) / 1000.0).collect();
    v.sort_by(f64::total_cmp);
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(a), Some(m), Some(z)) => format!("{a:.2}/{m:.2}/{z:.2} s ({})", v.len()),
        _ => "none".into(),
    }
}

fn spawn_agent(config: &Path, state: &Path) -> Child {
    let log = std::fs::File::create(state.join("agent.log")).unwrap();
    Command::new(agent_binary())
        .args(["agent", "--config"])
        .arg(config)
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn file_names(opts: &Opts) -> Vec<String> {
    let mut names = vec!["small".to_string()];
    for r in 0..opts.file_reps {
        names.push(format!("f1m-{r}"));
        names.push(format!("f10m-{r}"));
    }
    for side in ["a", "b"] {
        names.extend((0..PARTITION_RECORDS).map(|i| format!("part-{side}-{i}")));
        names.push(format!("part-{side}-big"));
    }
    names
}

/// How long a simultaneous start may take to converge before the join is reported as a lower
/// bound.
const JOIN_LIMIT: Duration = Duration::from_secs(180);

/// Runs every shoal scenario at size `n`.
pub fn bench(n: usize, opts: &Opts, rt: &tokio::runtime::Runtime, out: &mut Vec<Row>) {
    rt.block_on(async {
        let t0 = Instant::now();
        let mut mesh = Mesh::start(n, &file_names(opts));
        let converged = mesh.converge(n, JOIN_LIMIT).await.is_some();
        let join = t0.elapsed();
        if converged {
            println!(
                "N={n} shoal: all {n} agents list {n} alive {:.0} ms after the first spawn",
                join.as_secs_f64() * 1e3
            );
            if opts.wants("join") {
                out.push(Row::new(n, "join convergence", TOOL, join.as_secs_f64() * 1e3, "ms"));
            }
        } else {
            // The cost of a join that does not settle is what this bench is for: the windows
            // are still measured, from the end of the wait, and the join is reported as a
            // lower bound.
            println!(
                "N={n} shoal: NOT CONVERGED: not every agent lists {n} alive {:.0} s after the first spawn; join convergence > {:.0} s, windows timed from then",
                join.as_secs_f64(),
                join.as_secs_f64()
            );
            if opts.wants("join") {
                out.push(Row::new(n, "join convergence (lower bound, not converged)", TOOL, join.as_secs_f64() * 1e3, "ms"));
            }
            if ["small", "files", "kill", "stop", "loss", "partition", "catchup"].iter().any(|p| opts.wants(p)) {
                println!("N={n} shoal: phases after change skipped: the mesh never converged");
            }
        }
        let joined = t0 + join;
        if opts.wants("change") {
            let clock = change::Clock { spawned: t0, joined };
            let pids = mesh.pids();
            let breakdown = || async {
                let mut wanted = mesh.counters().await;
                wanted.retain(|name, _| {
                    name.starts_with("shoal_bytes")
                        || name.starts_with("shoal_messages")
                        || name.contains("connections_opened")
                        || name.contains("anti_entropy")
                        || name.contains("datagrams")
                        || name.contains("sealed")
                        || name.contains("swim_")
                });
                wanted
            };
            change::measure(out, n, TOOL, opts, &pids, clock, || mesh.open_connections(), breakdown).await;
        }
        if !converged {
            return;
        }
        if opts.wants("idle") {
            // Counted from convergence, so a change phase before it is part of the wait.
            tokio::time::sleep(opts.settle.saturating_sub(joined.elapsed())).await;
            let before = mesh.counters().await;
            common::measure_idle(out, n, TOOL, &mesh.pids(), opts.idle_window, opts.private_net).await;
            // Where the idle traffic goes, per agent per second, from the agents' own counters.
            let after = mesh.counters().await;
            let per = (n as f64) * opts.idle_window.as_secs_f64();
            for (name, v) in &after {
                let d = v - before.get(name).copied().unwrap_or(0.0);
                if d > 0.0
                    && (name.starts_with("shoal_bytes")
                        || name.starts_with("shoal_messages")
                        || name.contains("connections")
                        || name.contains("anti_entropy"))
                {
                    println!("N={n} shoal:   idle {name}: {:.2}/s per agent", d / per);
                }
            }
        }
        if opts.wants("small") && opts.reps > 0 {
            let before = mesh.counters().await;
            let mut times = Vec::new();
            for rep in 0..opts.reps {
                let (t, last) = mesh.small(rep % n, rep).await;
                if t > Duration::from_millis(400) {
                    println!(
                        "N={n} shoal:   small record {rep} from n{}: {t:?}, last n{last}",
                        rep % n
                    );
                }
                times.push(t);
            }
            push_latencies(out, n, "small record to all", TOOL, &times);
            mesh.how_items_came(n, "small records", &before).await;
        }
        if opts.wants("files") && opts.file_reps > 0 {
            for (label, prefix, size) in [
                ("1 MiB file to all", "f1m", 1 << 20),
                ("10 MiB file to all", "f10m", 10 << 20),
            ] {
                let before = mesh.counters().await;
                let (drops, lo) = (common::udp_rcvbuf_errors(), common::lo_tx_bytes());
                let mut times = Vec::new();
                for rep in 0..opts.file_reps {
                    times.push(mesh.file(rep % n, &format!("{prefix}-{rep}"), size).await);
                }
                push_latencies(out, n, label, TOOL, &times);
                mesh.how_items_came(n, prefix, &before).await;
                // Datagrams the kernel dropped for full receive buffers are sent again by
                // QUIC: loopback bytes per byte delivered show what that costs.
                let reps = opts.file_reps as f64;
                let per_file = (common::udp_rcvbuf_errors() - drops) as f64 / reps;
                let ratio = (common::lo_tx_bytes() - lo) as f64 / (reps * size as f64 * (n - 1) as f64);
                println!(
                    "N={n} shoal:   during {prefix}: {per_file:.0} UDP datagrams dropped for full receive buffers per file, loopback bytes {ratio:.2}x the bytes delivered"
                );
                out.push(Row::new(n, format!("{label}: UDP receive-buffer drops per file"), TOOL, per_file, "datagrams"));
            }
            // Deleting them: a signed tombstone, which carries no body, from another agent
            // than the one that uploaded each file.
            let mut times = Vec::new();
            for rep in 0..opts.file_reps {
                times.push(mesh.delete((rep + 1) % n, &format!("f1m-{rep}")).await);
            }
            push_latencies(out, n, "file delete to all", TOOL, &times);
        }
        if opts.wants("stop") {
            // Agent 2: not a seed, and not one the kills below take.
            for &s in &opts.stops {
                let count = mesh.stop_and_count(2.min(n - 1), s).await;
                println!("N={n} shoal: SIGSTOP {s} s: {count} agents declared it down");
                out.push(Row::new(
                    n,
                    format!("false down verdicts, SIGSTOP {s} s"),
                    TOOL,
                    count as f64,
                    "verdicts",
                ));
            }
        }
        if opts.wants("loss") && opts.private_net {
            let t0 = wall_ms();
            common::set_loss(opts.loss_percent);
            tokio::time::sleep(opts.loss_window).await;
            common::set_loss(0);
            tokio::time::sleep(AFTERMATH).await;
            let all: Vec<usize> = (0..mesh.agents.len()).collect();
            let count = mesh.down_verdicts(&all, None, t0).await.len();
            println!(
                "N={n} shoal: {} % loss for {:?}: {count} down verdicts",
                opts.loss_percent, opts.loss_window
            );
            out.push(Row::new(
                n,
                format!(
                    "false down verdicts, {}% loss for {} s",
                    opts.loss_percent,
                    opts.loss_window.as_secs()
                ),
                TOOL,
                count as f64,
                "verdicts",
            ));
        }
        if opts.wants("partition") && opts.private_net {
            recovery::partition(&mesh, n, opts, out).await;
        }
        if opts.wants("kill") {
            let mut detect = Vec::new();
            for _ in 0..opts.kills.min(n.saturating_sub(4)) {
                let victim = mesh.agents.len() - 1;
                detect.push(mesh.kill_and_detect(victim).await);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            push_latencies(out, n, "kill -9 seen down by all", TOOL, &detect);
        }
        drop(mesh);
        if opts.wants("catchup") {
            recovery::catch_up(n, opts, out).await;
        }
    });
}
