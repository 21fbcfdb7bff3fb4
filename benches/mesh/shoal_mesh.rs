//! Mesh benchmark with every agent a separate `shoal agent` process on loopback, production
//! defaults (probe 1 s, suspicion 3 s, anti-entropy 30 s), as operators run it.
//!
//! For each N it reports: join convergence (all N processes started at once, until every
//! agent lists N alive); idle cost per agent after a settle (CPU, RSS, UDP bytes sent, read
//! from /proc and /metrics); propagation of a small signed file to every node (uploaded
//! through one node's API, observed by polling every node's API every 20 ms, so figures carry
//! up to ~20 ms of observation delay); and failure detection (a `kill -9`ed agent, until every
//! survivor lists it down, polled every 100 ms).
//!
//! Run: cargo bench --bench mesh
//! Env: SHOAL_MESH_NODES=10,30,50  SHOAL_MESH_SETTLE_SECS=60  SHOAL_MESH_IDLE_SECS=20
//!      SHOAL_MESH_REPS=20 (small file)  SHOAL_MESH_KILLS=3

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal::identity::{NodeCertificate, PublicKey, SecretKey, unix_now};
use shoal::replication::item::{ItemMeta, SignedItem};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

struct Agent {
    name: String,
    key: PublicKey,
    http: SocketAddr,
    child: Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Mesh {
    _dir: tempfile::TempDir,
    agents: Vec<Agent>,
    network: SecretKey,
    signer: SecretKey,
    client: reqwest::Client,
}

fn config(
    state: &Path,
    cluster: u16,
    http: u16,
    network: &SecretKey,
    cert: &str,
    seeds: &[u16],
    signer: &PublicKey,
) -> String {
    let seeds: Vec<String> = seeds.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "[node]\nstate_dir = \"{}\"\n\n[cluster]\nlisten = \"127.0.0.1:{cluster}\"\nbootstrap = [{}]\n\n[network]\nnetwork_key = \"{}\"\ncertificate = \"{cert}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n[files]\n\"small\" = [\"{signer}\"]\n",
        state.display(),
        seeds.join(", "),
        network.public(),
    )
}

impl Mesh {
    /// Starts `n` agent processes at once; the first two are everyone's bootstrap nodes.
    fn start(n: usize) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let network = SecretKey::generate();
        let signer = SecretKey::generate();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(true), free_port(false))).collect();
        let seeds: Vec<u16> = ports.iter().take(2).map(|p| p.0).collect();
        let mut agents = Vec::with_capacity(n);
        for (i, (cluster, http)) in ports.iter().enumerate() {
            let name = format!("n{i}");
            let state: PathBuf = dir.path().join(&name);
            let key = SecretKey::generate();
            key.save(&state.join("node.key"), false).unwrap();
            let cert = NodeCertificate::issue(&network, key.public(), &name, unix_now() - 60, unix_now() + 86400)
                .unwrap()
                .to_base64();
            let path = state.join("shoal.toml");
            let others: Vec<u16> = seeds.iter().copied().filter(|p| p != cluster).collect();
            std::fs::write(
                &path,
                config(&state, *cluster, *http, &network, &cert, &others, &signer.public()),
            )
            .unwrap();
            let log = std::fs::File::create(state.join("agent.log")).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
                .args(["agent", "--config"])
                .arg(&path)
                .env("LOG_LEVEL", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            agents.push(Agent {
                name,
                key: key.public(),
                http: SocketAddr::from(([127, 0, 0, 1], *http)),
                child,
            });
        }
        Mesh {
            _dir: dir,
            agents,
            network,
            signer,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
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

    /// Alive members `a` lists.
    async fn alive(&self, a: &Agent) -> usize {
        self.get(a.http, "/api/members")
            .await
            .and_then(|m| {
                m["members"]
                    .as_array()
                    .map(|ms| ms.iter().filter(|m| m["state"] == "alive").count())
            })
            .unwrap_or(0)
    }

    async fn state_of(&self, a: &Agent, key: &PublicKey) -> Option<String> {
        let m = self.get(a.http, "/api/members").await?;
        m["members"]
            .as_array()?
            .iter()
            .find(|m| m["key"] == key.to_string())
            .and_then(|m| m["state"].as_str().map(String::from))
    }

    /// Until every agent lists `n` alive.
    async fn converge(&self, n: usize, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            let counts = futures_util::future::join_all(self.agents.iter().map(|a| self.alive(a))).await;
            if counts.iter().all(|c| *c == n) {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Uploads a small file through agent `origin`; time until every agent serves it.
    async fn propagate(&self, origin: usize, rep: usize) -> Duration {
        let body = format!("small signed record {rep}").into_bytes();
        let version = shoal::replication::hlc::next(shoal::time::unix_ms(), 0);
        let meta = ItemMeta::file(
            *self.network.public().as_bytes(),
            "small",
            &body,
            self.signer.public(),
            version,
        );
        let envelope = shoal::files::envelope::encode(&SignedItem::sign(meta, &self.signer), &body);
        let t0 = Instant::now();
        let resp = self
            .client
            .put(format!("http://{}/api/files/small", self.agents[origin].http))
            .header("content-type", shoal::files::envelope::CONTENT_TYPE)
            .body(envelope)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "upload refused: {}", resp.status());
        let mut pending: Vec<&Agent> = self.agents.iter().collect();
        let mut last = Duration::ZERO;
        while !pending.is_empty() {
            let seen = futures_util::future::join_all(pending.iter().map(|a| async move {
                self.get(a.http, "/api/files/small")
                    .await
                    .is_some_and(|f| f["version"].as_u64() == Some(version))
            }))
            .await;
            let now = t0.elapsed();
            let before = pending.len();
            pending = pending
                .into_iter()
                .zip(seen)
                .filter(|(_, s)| !s)
                .map(|(a, _)| a)
                .collect();
            if pending.len() < before {
                last = now;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "propagation stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        last
    }

    /// `kill -9`s agent `victim`; time until every survivor lists it down.
    async fn kill_and_detect(&mut self, victim: usize) -> Duration {
        let key = self.agents[victim].key;
        let mut dead = self.agents.remove(victim);
        let t0 = Instant::now();
        let _ = dead.child.kill();
        let _ = dead.child.wait();
        loop {
            let states = futures_util::future::join_all(self.agents.iter().map(|a| self.state_of(a, &key))).await;
            if states.iter().all(|s| s.as_deref() == Some("down") || s.is_none()) {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "failure not detected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Per agent over `window`: (CPU %, RSS KiB, UDP bytes sent per second).
    async fn idle(&self, window: Duration) -> Vec<(f64, u64, f64)> {
        let sample = |a: &Agent| (cpu_ticks(a.child.id()), a.http);
        let before: Vec<(u64, SocketAddr)> = self.agents.iter().map(sample).collect();
        let sent_before = futures_util::future::join_all(self.agents.iter().map(|a| self.udp_sent(a.http))).await;
        tokio::time::sleep(window).await;
        let sent_after = futures_util::future::join_all(self.agents.iter().map(|a| self.udp_sent(a.http))).await;
        let hz = 100.0; // USER_HZ on Linux
        self.agents
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let cpu = (cpu_ticks(a.child.id()) - before[i].0) as f64 / hz / window.as_secs_f64() * 100.0;
                let bytes = (sent_after[i] - sent_before[i]) / window.as_secs_f64();
                (cpu, rss_kib(a.child.id()), bytes)
            })
            .collect()
    }

    async fn udp_sent(&self, http: SocketAddr) -> f64 {
        let text = match self.client.get(format!("http://{http}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        text.lines()
            .find(|l| l.starts_with("shoal_bytes_total{kind=\"quic_udp\",direction=\"sent\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, whole line).
    let get = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(14) + get(15)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SHOAL_MESH_NODES")
        .unwrap_or_else(|_| "10,30,50".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let settle = Duration::from_secs(env_or("SHOAL_MESH_SETTLE_SECS", 60));
    let idle_window = Duration::from_secs(env_or("SHOAL_MESH_IDLE_SECS", 20));
    let reps = env_or("SHOAL_MESH_REPS", 20) as usize;
    let kills = env_or("SHOAL_MESH_KILLS", 3) as usize;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    for n in sizes {
        rt.block_on(async {
            // Join convergence counts from before the first process is spawned.
            let t0 = Instant::now();
            let mut mesh = Mesh::start(n);
            mesh.converge(n, Duration::from_secs(120))
                .await
                .expect("mesh did not converge");
            let join = t0.elapsed();
            println!("N={n}: all {n} processes list {n} alive {} after start", ms(join));
            rows.push(format!(
                "| {n} | join convergence (all started at once) | {} | | |",
                ms(join)
            ));
            tokio::time::sleep(settle).await;
            let idle = mesh.idle(idle_window).await;
            let cpu = median(idle.iter().map(|x| x.0).collect());
            let rss = median(idle.iter().map(|x| x.1 as f64).collect());
            let udp = median(idle.iter().map(|x| x.2).collect());
            println!(
                "N={n}: idle per agent: CPU {cpu:.2}% of a core, RSS {:.1} MiB, UDP sent {udp:.0} B/s (medians)",
                rss / 1024.0
            );
            rows.push(format!(
                "| {n} | idle per agent (median) | CPU {cpu:.2}% | RSS {:.1} MiB | UDP {udp:.0} B/s |",
                rss / 1024.0
            ));
            let mut times = Vec::new();
            for rep in 0..reps {
                times.push(mesh.propagate(rep % n, rep).await);
            }
            times.sort();
            if !times.is_empty() {
                let (p50, p99, max) = (
                    percentile(&times, 0.5),
                    percentile(&times, 0.99),
                    *times.last().unwrap(),
                );
                println!(
                    "N={n}: small file reaches all: p50 {} p99 {} max {} over {reps}",
                    ms(p50),
                    ms(p99),
                    ms(max)
                );
                rows.push(format!(
                    "| {n} | small signed file to all ({reps} uploads) | p50 {} | p99 {} | max {} |",
                    ms(p50),
                    ms(p99),
                    ms(max)
                ));
            }
            let mut detect = Vec::new();
            for k in 0..kills.min(n.saturating_sub(3)) {
                // Never a bootstrap node (0, 1): the mesh must stay joinable.
                let victim = mesh.agents.len() - 1 - k % (mesh.agents.len() - 2);
                let name = mesh.agents[victim].name.clone();
                let d = mesh.kill_and_detect(victim).await;
                println!("N={n}: {name} killed (-9): all survivors list it down after {}", ms(d));
                detect.push(d);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            detect.sort();
            if !detect.is_empty() {
                rows.push(format!(
                    "| {n} | kill -9: until every survivor lists it down ({} kills) | p50 {} | | max {} |",
                    detect.len(),
                    ms(percentile(&detect, 0.5)),
                    ms(*detect.last().unwrap())
                ));
            }
        });
    }
    println!("\n| N | measure | | | |\n|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
