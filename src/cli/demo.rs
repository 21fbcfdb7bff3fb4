//! `shoal demo`: a local mesh in one process, for a first look.

use std::net::{SocketAddr, TcpListener};

use crate::agent::{self, AgentHandle};
use crate::config::{Config, HostPort};
use crate::identity::{NodeCertificate, SecretKey, unix_now};

/// First HTTP port tried for demo nodes (node i gets BASE + i - 1 when free).
const DEMO_HTTP_BASE_PORT: u16 = 7331;
/// Demo certificates are valid this long.
const DEMO_CERT_SECS: u64 = 30 * 24 * 3600;

/// Starts `n` agents, prints their URLs, waits for Ctrl-C, stops them and cleans up.
pub async fn run(n: usize) -> i32 {
    let dir = match tempfile::Builder::new().prefix("shoal-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return 1;
        }
    };
    let network = SecretKey::generate();
    let mut agents: Vec<AgentHandle> = Vec::new();
    let mut seed: Option<SocketAddr> = None;
    for i in 1..=n {
        let name = format!("node-{i}");
        let state = dir.path().join(&name);
        let key = SecretKey::generate();
        if let Err(e) = key.save(&state.join("node.key"), false) {
            eprintln!("error: {e}");
            return 1;
        }
        let cert = match NodeCertificate::issue(
            &network,
            key.public(),
            &name,
            unix_now() - 60,
            unix_now() + DEMO_CERT_SECS,
        ) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        let mut config = Config::for_test(&state);
        // Production timings: the demo should behave like a real mesh.
        let defaults = crate::config::ClusterConfig::default();
        config.cluster.probe_period = defaults.probe_period;
        config.cluster.probe_timeout = defaults.probe_timeout;
        config.cluster.suspect_timeout = defaults.suspect_timeout;
        config.health = Default::default();
        config.replication = Default::default();
        config.network.network_key = Some(network.public());
        config.network.certificate = Some(cert.to_base64());
        config.http.listen = free_http_port(DEMO_HTTP_BASE_PORT + i as u16 - 1);
        config.schedules = demo_schedules(&state);
        if let Some(seed) = seed {
            config.cluster.bootstrap = vec![HostPort {
                host: seed.ip().to_string(),
                port: seed.port(),
            }];
        }
        match agent::start(config, &state.join("shoal.toml")).await {
            Ok(a) => {
                seed.get_or_insert(a.cluster_addr);
                agents.push(a);
            }
            Err(e) => {
                eprintln!("error: starting {name}: {e}");
                for a in agents {
                    a.shutdown().await;
                }
                return 1;
            }
        }
    }
    println!("shoal demo: {n} agents on loopback, network {}", network.public());
    println!("state in {}", dir.path().display());
    for a in &agents {
        println!("  {:<8} http://{}/   cluster {}", a.name, a.http_addr, a.cluster_addr);
    }
    println!("try: shoal members --url http://{}", agents[0].http_addr);
    println!("     shoal schedules --url http://{}", agents[0].http_addr);
    println!(
        "     shoal run demo-snapshot --wait --url http://{}",
        agents[0].http_addr
    );
    println!("press Ctrl-C to stop");
    super::shutdown_signal().await;
    futures_util::future::join_all(agents.into_iter().map(AgentHandle::shutdown)).await;
    drop(dir);
    println!("demo stopped, temporary state removed");
    0
}

/// `127.0.0.1:preferred` if it is free right now, else an OS-chosen port.
fn free_http_port(preferred: u16) -> SocketAddr {
    let want = SocketAddr::from(([127, 0, 0, 1], preferred));
    match TcpListener::bind(want) {
        Ok(_) => want,
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
    }
}

/// A harmless schedule per demo node, so `shoal schedules` has something to show.
fn demo_schedules(state: &std::path::Path) -> Vec<crate::config::schedules::ScheduleConfig> {
    let out = state.join("demo-snapshot.tar.gz");
    let script = format!(
        "echo snapshotting; tar -czf {} -C {} node.key; ls -l {}",
        out.display(),
        state.display(),
        out.display()
    );
    let text = format!(
        "id = \"demo-snapshot\"\ndescription = \"Tarball of this node's state (demo)\"\nschedule = \"*/2 * * * *\"\ncommand = [\"sh\", \"-c\", {script:?}]\ntimeout = \"1m\"\nrepository = {:?}\nretention = \"1d\"\ntargets = [\"node.key\"]",
        state.display().to_string()
    );
    toml::from_str(&text).map(|s| vec![s]).unwrap_or_default()
}
