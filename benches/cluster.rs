//! Cluster benchmark: N agents in one process on loopback, production timing defaults.
//!
//! For each N it reports idle traffic per agent, then how long a small signed item, a 1 MiB
//! and a 10 MiB file take to reach every node after an upload through the HTTP API of one
//! node (a different node each repetition). "Reach" is the commit on the last node.
//!
//! Run: cargo bench --bench cluster
//! Env: SHOAL_BENCH_NODES=10,30  SHOAL_BENCH_SETTLE_SECS=60  SHOAL_BENCH_IDLE_SECS=20
//!      SHOAL_BENCH_REPS=20 (small item; 1 MiB uses half, 10 MiB a quarter, at least 5)

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoal::agent::{self, AgentHandle};
use shoal::config::{ClusterConfig, Config, HostPort};
use shoal::identity::{NodeCertificate, SecretKey, unix_now};
use shoal::replication::item::{ItemKey, ItemMeta, SignedItem};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Bench {
    dir: tempfile::TempDir,
    network: SecretKey,
    signer: SecretKey,
    client: reqwest::Client,
}

impl Bench {
    async fn start(&self, i: usize, seed: Option<std::net::SocketAddr>) -> AgentHandle {
        let name = format!("n{i}");
        let state = self.dir.path().join(&name);
        let key = SecretKey::generate();
        key.save(&state.join("node.key"), false).unwrap();
        let cert =
            NodeCertificate::issue(&self.network, key.public(), &name, unix_now() - 60, unix_now() + 86400).unwrap();
        let mut c = Config::for_test(&state);
        let d = ClusterConfig::default();
        c.cluster.probe_period = d.probe_period;
        c.cluster.probe_timeout = d.probe_timeout;
        c.cluster.suspect_timeout = d.suspect_timeout;
        c.cluster.idle_timeout = d.idle_timeout;
        c.cluster.reconnect_interval = d.reconnect_interval;
        c.replication = Default::default();
        c.health = Default::default();
        c.network.network_key = Some(self.network.public());
        c.network.certificate = Some(cert.to_base64());
        c.files = ["small", "one-mib", "ten-mib"]
            .iter()
            .map(|f| (f.to_string(), vec![self.signer.public()]))
            .collect();
        if let Some(s) = seed {
            c.cluster.bootstrap = vec![HostPort {
                host: s.ip().to_string(),
                port: s.port(),
            }];
        }
        agent::start(c, &state.join("shoal.toml")).await.unwrap()
    }

    /// Uploads `body` as `name` through `origin`; returns the time from the request until
    /// every agent committed it.
    async fn propagate(&self, agents: &[AgentHandle], origin: usize, name: &str, body: &[u8]) -> Duration {
        let version = shoal::replication::hlc::next(shoal::time::unix_ms(), 0).max(
            agents[origin]
                .replication()
                .get(&ItemKey::File { name: name.into() })
                .map(|(i, _)| i.meta.version + 1)
                .unwrap_or(0),
        );
        let meta = ItemMeta::file(
            *self.network.public().as_bytes(),
            name,
            body,
            self.signer.public(),
            version,
        );
        let envelope = shoal::files::envelope::encode(&SignedItem::sign(meta, &self.signer), body);
        let (tx, mut rx) = tokio::sync::mpsc::channel(agents.len());
        let t0 = Instant::now();
        for a in agents {
            let mut events = a.replication().subscribe();
            let tx = tx.clone();
            let key = ItemKey::File { name: name.into() };
            tokio::spawn(async move {
                while let Ok(e) = events.recv().await {
                    if e.key == key && e.version == version {
                        let _ = tx.send(t0.elapsed()).await;
                        return;
                    }
                }
            });
        }
        let resp = self
            .client
            .put(format!("http://{}/api/files/{name}", agents[origin].http_addr))
            .body(envelope)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "upload failed: {}",
            resp.text().await.unwrap_or_default()
        );
        let mut last = Duration::ZERO;
        for _ in 0..agents.len() {
            last = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("item reached every node")
                .unwrap();
        }
        last
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SHOAL_BENCH_NODES")
        .unwrap_or_else(|_| "10,30".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    // Long enough for start-up churn (every node's first reports) to die down: idle traffic is
    // measured in the steady state.
    let settle = Duration::from_secs(env_or("SHOAL_BENCH_SETTLE_SECS", 60));
    let idle = Duration::from_secs(env_or("SHOAL_BENCH_IDLE_SECS", 20));
    let reps = env_or("SHOAL_BENCH_REPS", 20) as usize;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        for n in sizes {
            let bench = Bench {
                dir: tempfile::tempdir().unwrap(),
                network: SecretKey::generate(),
                signer: SecretKey::generate(),
                client: reqwest::Client::new(),
            };
            let first = bench.start(0, None).await;
            let seed = first.cluster_addr;
            let mut agents = vec![first];
            for i in 1..n {
                agents.push(bench.start(i, Some(seed)).await);
            }
            let t0 = Instant::now();
            while !agents.iter().all(|a| a.snapshot().counts().0 == n) {
                assert!(t0.elapsed() < Duration::from_secs(120), "mesh did not converge");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!("N={n}: all {n} agents see {n} alive after {}", ms(t0.elapsed()));
            tokio::time::sleep(settle).await;

            let sample = |a: &AgentHandle| a.udp_bytes().0;
            let before: Vec<u64> = agents.iter().map(sample).collect();
            tokio::time::sleep(idle).await;
            let mut per_agent: Vec<f64> = agents
                .iter()
                .zip(&before)
                .map(|(a, b)| (sample(a) - b) as f64 / idle.as_secs_f64())
                .collect();
            per_agent.sort_by(f64::total_cmp);
            let idle_median = per_agent[per_agent.len() / 2];
            println!(
                "N={n}: idle UDP sent per agent: median {idle_median:.0} B/s (min {:.0}, max {:.0})",
                per_agent[0],
                per_agent[per_agent.len() - 1]
            );
            rows.push(format!("| {n} | idle traffic per agent | {idle_median:.0} B/s | | |"));

            let cases: [(&str, usize, usize); 3] = [
                ("small", 64, reps),
                ("one-mib", 1 << 20, (reps / 2).max(5)),
                ("ten-mib", 10 << 20, (reps / 4).max(5)),
            ];
            for (name, size, count) in cases.into_iter().filter(|_| reps > 0) {
                let mut times = Vec::with_capacity(count);
                for rep in 0..count {
                    let body: Vec<u8> = (0..size).map(|i| (i as u64 * 31 + rep as u64) as u8).collect();
                    let t = bench.propagate(&agents, rep % n, name, &body).await;
                    if std::env::var("SHOAL_BENCH_VERBOSE").is_ok() {
                        println!("  {name} rep {rep}: {}", ms(t));
                    }
                    times.push(t);
                }
                times.sort();
                let (p50, p99, max) = (
                    percentile(&times, 0.5),
                    percentile(&times, 0.99),
                    *times.last().unwrap(),
                );
                println!(
                    "N={n}: {name} ({size} B) reaches all {n}: p50 {} p99 {} max {} over {count} uploads",
                    ms(p50),
                    ms(p99),
                    ms(max)
                );
                rows.push(format!(
                    "| {n} | {name} ({size} B) to all nodes | p50 {} | p99 {} | max {} ({count} uploads) |",
                    ms(p50),
                    ms(p99),
                    ms(max)
                ));
            }
            let fetched: u64 = agents
                .iter()
                .map(|a| a.replication().stats().body_bytes_fetched.load(Ordering::Relaxed))
                .sum();
            println!("N={n}: body bytes fetched in total {fetched}");
            for a in agents {
                a.shutdown().await;
            }
        }
    });
    println!("\n| N | measure | | | |\n|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}
