//! Idle cost of a settled mesh: UDP bytes (QUIC overhead included) and datagrams each agent
//! sends per second when nothing happens, with production timing defaults.
//!
//! Run: cargo bench --bench idle_traffic            (10 agents, 30 s settle, 30 s measure)
//!      SHOAL_BENCH_NODES=30 cargo bench --bench idle_traffic
//!
//! Agents run in one process on loopback, sharing one tokio runtime.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shoal::agent::{self, AgentHandle};
use shoal::config::{ClusterConfig, Config, HostPort};
use shoal::identity::{NodeCertificate, SecretKey, unix_now};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn start(dir: &std::path::Path, net: &SecretKey, i: usize, seed: Option<std::net::SocketAddr>) -> AgentHandle {
    let name = format!("n{i}");
    let state = dir.join(&name);
    let key = SecretKey::generate();
    key.save(&state.join("node.key"), false).unwrap();
    let cert = NodeCertificate::issue(net, key.public(), &name, unix_now() - 60, unix_now() + 86400).unwrap();
    let mut c = Config::for_test(&state);
    let d = ClusterConfig::default();
    c.cluster.probe_period = d.probe_period;
    c.cluster.probe_timeout = d.probe_timeout;
    c.cluster.suspect_timeout = d.suspect_timeout;
    c.cluster.idle_timeout = d.idle_timeout;
    c.network.network_key = Some(net.public());
    c.network.certificate = Some(cert.to_base64());
    if let Some(s) = seed {
        c.cluster.bootstrap = vec![HostPort {
            host: s.ip().to_string(),
            port: s.port(),
        }];
    }
    agent::start(c, &state.join("shoal.toml")).await.unwrap()
}

fn main() {
    let nodes = env_or("SHOAL_BENCH_NODES", 10) as usize;
    let settle = Duration::from_secs(env_or("SHOAL_BENCH_SETTLE_SECS", 30));
    let measure = Duration::from_secs(env_or("SHOAL_BENCH_MEASURE_SECS", 30));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let net = SecretKey::generate();
        let first = start(dir.path(), &net, 0, None).await;
        let seed = first.cluster_addr;
        let mut agents = vec![first];
        for i in 1..nodes {
            agents.push(start(dir.path(), &net, i, Some(seed)).await);
        }
        let t0 = Instant::now();
        while !agents.iter().all(|a| a.snapshot().counts().0 == nodes) {
            assert!(t0.elapsed() < Duration::from_secs(60), "mesh did not converge");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("{nodes} agents converged in {:?}; settling {settle:?}", t0.elapsed());
        tokio::time::sleep(settle).await;
        let sample = |a: &AgentHandle| {
            (
                a.udp_bytes().0,
                a.transport_stats().datagrams_sent.load(Ordering::Relaxed),
            )
        };
        let before: Vec<_> = agents.iter().map(sample).collect();
        tokio::time::sleep(measure).await;
        let after: Vec<_> = agents.iter().map(sample).collect();
        let secs = measure.as_secs_f64();
        let mut per_agent: Vec<f64> = after
            .iter()
            .zip(&before)
            .map(|(a, b)| (a.0 - b.0) as f64 / secs)
            .collect();
        per_agent.sort_by(f64::total_cmp);
        let datagrams: f64 =
            after.iter().zip(&before).map(|(a, b)| (a.1 - b.1) as f64).sum::<f64>() / secs / nodes as f64;
        println!(
            "idle UDP sent per agent: median {:.0} B/s, min {:.0}, max {:.0}; SWIM datagrams {:.2}/s per agent",
            per_agent[per_agent.len() / 2],
            per_agent[0],
            per_agent[per_agent.len() - 1],
            datagrams
        );
        for a in agents {
            a.shutdown().await;
        }
    });
}
