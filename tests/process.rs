//! The real `shoal agent` binary as a child process among in-process agents: crash and
//! restart, and graceful exit on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use shoal::agent::AgentHandle;
use shoal::membership::MemberState;

/// Writes a config for a process agent named `name` and returns its path and HTTP address.
fn process_config(net: &TestNetwork, name: &str, seeds: &[SocketAddr]) -> (std::path::PathBuf, SocketAddr) {
    let c = net.config(name);
    let http: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let toml = process_config_toml(
        &c.node.state_dir,
        free_udp_port(),
        http.port(),
        &net.key.public(),
        c.network.certificate.as_deref().unwrap(),
        seeds,
    );
    let path = c.node.state_dir.join("shoal.toml");
    std::fs::write(&path, toml).unwrap();
    (path, http)
}

async fn cluster(net: &TestNetwork, n: usize, suspect: Duration) -> Vec<AgentHandle> {
    let mut c = net.config("p0");
    c.cluster.suspect_timeout = suspect;
    let seed = start(c).await;
    let mut agents = vec![];
    for i in 1..n {
        let mut c = net.config(&format!("p{i}"));
        c.cluster.suspect_timeout = suspect;
        bootstrap(&mut c, &[seed.cluster_addr]);
        agents.push(start(c).await);
    }
    agents.insert(0, seed);
    agents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agent_is_marked_down_and_returns_under_a_newer_incarnation_without_flapping() {
    let net = TestNetwork::new();
    let peers = cluster(&net, 3, Duration::from_millis(1500)).await;
    let (config, http) = process_config(&net, "victim", &[peers[0].cluster_addr]);
    let mut victim = AgentProcess::spawn(&config, http);

    eventually(Duration::from_secs(15), "victim joins: 4 alive everywhere", || {
        peers.iter().all(|p| alive_count(p) == 4)
    })
    .await;
    let victim_key = {
        let list = members(http).await.expect("victim API");
        assert_eq!(list.iter().filter(|m| m.state == MemberState::Alive).count(), 4);
        list.iter().find(|m| m.local).unwrap().key
    };
    let generation_of = |p: &AgentHandle| {
        p.snapshot()
            .members
            .iter()
            .find(|m| m.id.key == victim_key)
            .map(|m| (m.state, m.id.generation, m.since_ms))
    };
    let first_generation = generation_of(&peers[0]).unwrap().1;

    victim.kill9();
    eventually(Duration::from_secs(15), "all peers mark the killed agent down", || {
        peers
            .iter()
            .all(|p| state_of(p, &victim_key) == Some(MemberState::Down))
    })
    .await;

    let _victim = AgentProcess::spawn(&config, http);
    eventually(
        Duration::from_secs(15),
        "restarted agent alive everywhere, newer incarnation",
        || {
            peers
                .iter()
                .all(|p| matches!(generation_of(p), Some((MemberState::Alive, g, _)) if g > first_generation))
        },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "restarted agent sees the whole mesh",
        || async {
            members(http)
                .await
                .is_some_and(|l| l.iter().filter(|m| m.state == MemberState::Alive).count() == 4)
        },
    )
    .await;

    // No flapping: for several probe periods and suspicion timeouts, nobody's view of the
    // restarted agent changes (any change of state would move `since`).
    let baseline: Vec<_> = peers.iter().map(|p| generation_of(p).unwrap()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < deadline {
        for (p, base) in peers.iter().zip(&baseline) {
            assert_eq!(
                generation_of(p).as_ref(),
                Some(base),
                "{} saw the restarted agent change",
                p.name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in peers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_cluster_and_exits_zero() {
    let net = TestNetwork::new();
    // Failure detection would take 30 s; only the leave can be seen within the deadline.
    let peers = cluster(&net, 2, Duration::from_secs(30)).await;
    let (config, http) = process_config(&net, "leaver", &[peers[0].cluster_addr]);
    let mut leaver = AgentProcess::spawn(&config, http);
    eventually(Duration::from_secs(15), "3 alive", || {
        peers.iter().all(|p| alive_count(p) == 3)
    })
    .await;
    let key = members(http).await.unwrap().iter().find(|m| m.local).unwrap().key;

    leaver.signal(15);
    let status = tokio::task::spawn_blocking(move || {
        let status = leaver.child.wait().unwrap();
        (status, leaver)
    });
    let (status, leaver) = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", leaver.log());
    assert!(leaver.log().contains("SIGTERM received"), "{}", leaver.log());
    eventually(Duration::from_secs(3), "peers see the leaver down promptly", || {
        peers.iter().all(|p| state_of(p, &key) == Some(MemberState::Down))
    })
    .await;
    for p in peers {
        p.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_agent_rejoins_when_its_bootstrap_peer_returns() {
    let net = TestNetwork::new();
    // The seed has no bootstrap list: after its restart only the other agent's join loop can
    // bring the two together again.
    let (config, http) = process_config(&net, "seed", &[]);
    let mut seed = AgentProcess::spawn(&config, http);
    let seed_addr = wait_for_cluster_addr(&seed).await;
    let mut c = net.config("lonely");
    bootstrap(&mut c, &[seed_addr]);
    let lonely = start(c).await;
    eventually(Duration::from_secs(10), "pair joined", || {
        lonely.snapshot().joined && alive_count(&lonely) == 2
    })
    .await;

    seed.kill9();
    eventually(Duration::from_secs(10), "lonely agent notices it is alone", || {
        !lonely.snapshot().joined
    })
    .await;

    let _seed = AgentProcess::spawn(&config, http);
    // The join loop backs off (0.5, 1, 2, 4, 8 s...) while the seed is away; on a loaded
    // machine the seed's restart can fall just after one attempt, and the next comes seconds
    // later. A run of CI with other work on the machine missed a 10 s wait.
    eventually(
        Duration::from_secs(30),
        "lonely agent rejoins the restarted seed",
        || lonely.snapshot().joined && alive_count(&lonely) == 2,
    )
    .await;
    wait_until(Duration::from_secs(5), "the seed sees it too", || async {
        members(http)
            .await
            .is_some_and(|l| l.iter().filter(|m| m.state == MemberState::Alive).count() == 2)
    })
    .await;
    lonely.shutdown().await;
}

/// Reads a process agent's cluster address from its health endpoint.
async fn wait_for_cluster_addr(agent: &AgentProcess) -> SocketAddr {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(h) = get_json::<shoal::http::api::Health>(agent.http, "/api/health").await {
            return h.cluster_addr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "process agent never served its API:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads lines from a child's stdout on a thread until `pred` matches one; returns all lines.
fn read_until(
    stdout: std::process::ChildStdout,
    pred: impl Fn(&str) -> bool + Send + 'static,
) -> std::sync::mpsc::Receiver<Vec<String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = pred(&line);
            lines.push(line);
            if done {
                let _ = tx.send(lines.clone());
            }
        }
        let _ = tx.send(lines);
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_a_mesh_and_cleans_up_on_ctrl_c() {
    let mut child = std::process::Command::new(shoal_bin())
        .args(["demo", "--nodes", "3"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = read_until(child.stdout.take().unwrap(), |l| l.contains("press Ctrl-C"));
    let lines = tokio::task::spawn_blocking(move || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("demo prints its URLs")
    })
    .await
    .unwrap();
    let state_dir = lines
        .iter()
        .find_map(|l| l.strip_prefix("state in "))
        .expect("state dir line")
        .to_string();
    let urls: Vec<SocketAddr> = lines
        .iter()
        .filter(|l| l.trim_start().starts_with("node-"))
        .filter_map(|l| l.split("http://").nth(1))
        .filter_map(|rest| rest.split('/').next())
        .filter_map(|a| a.parse().ok())
        .collect();
    assert_eq!(urls.len(), 3, "{lines:?}");
    for http in &urls {
        wait_until(Duration::from_secs(10), "demo node lists 3 alive", || async {
            members(*http)
                .await
                .is_some_and(|l| l.iter().filter(|m| m.state == MemberState::Alive).count() == 3)
        })
        .await;
    }
    assert!(std::path::Path::new(&state_dir).exists());

    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!std::path::Path::new(&state_dir).exists(), "temporary state removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_follows_flag_then_environment() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[node]\nstate_dir = \"{}\"\n[cluster]\nlisten = \"127.0.0.1:0\"\n[network]\ntrusted_nodes = [\"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\"]\n[http]\nlisten = \"127.0.0.1:0\"\n",
        dir.path().join("state").display()
    );
    let config = dir.path().join("shoal.toml");
    std::fs::write(&config, toml).unwrap();
    // Each run is `shoal [--log-level flag] agent` with LOG_LEVEL=warn.
    let stderr = |flag: Option<&'static str>| {
        let c = config.clone();
        async move {
            tokio::task::spawn_blocking(move || agent_stderr(&c, flag, "warn"))
                .await
                .unwrap()
        }
    };
    let quiet = stderr(None).await;
    assert!(
        !quiet.contains("shoal agent started"),
        "LOG_LEVEL=warn hides info:\n{quiet}"
    );
    let loud = stderr(Some("debug")).await;
    assert!(
        loud.contains("shoal agent started") && loud.contains("DEBUG"),
        "--log-level debug wins:\n{loud}"
    );
    // RUST_LOG-style lists: a default level and targets of their own.
    let listed = stderr(Some("error,shoal::agent=info")).await;
    assert!(
        listed.contains("shoal agent started") && !listed.contains("DEBUG"),
        "shoal::agent=info shows the agent's info lines:\n{listed}"
    );
    let muted = stderr(Some("info,shoal::agent=warn")).await;
    assert!(
        !muted.contains("shoal agent started"),
        "shoal::agent=warn hides them:\n{muted}"
    );
    let bad = stderr(Some("shoal=loud")).await;
    assert!(
        bad.contains("invalid log level \"shoal=loud\"") && bad.contains("shoal agent started"),
        "an invalid filter is named and info used instead:\n{bad}"
    );
}

/// Runs `shoal [--log-level flag] agent` with `LOG_LEVEL=env` for a moment, stops it with
/// SIGTERM and returns what it wrote to stderr.
fn agent_stderr(config: &std::path::Path, flag: Option<&str>, env: &str) -> String {
    let mut cmd = std::process::Command::new(shoal_bin());
    if let Some(level) = flag {
        cmd.args(["--log-level", level]);
    }
    let mut child = cmd
        .args(["agent", "--config"])
        .arg(config)
        .env("LOG_LEVEL", env)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    std::thread::sleep(Duration::from_millis(1500));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    reader.join().unwrap()
}
