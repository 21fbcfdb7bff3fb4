//! File sync over real QUIC between in-process agents.

mod common;

use std::time::Duration;

use common::*;

/// Waits until every agent serves `expected` for `name` (None: no content) and, when there
/// is content, holds the same bytes under its files directory.
async fn converged(agents: &[shoal::agent::AgentHandle], name: &str, expected: Option<&[u8]>) {
    for a in agents {
        let http = a.http_addr;
        let path = a.files_dir().join(name);
        wait_until(
            Duration::from_secs(20),
            &format!("{} converges on {name}", a.name),
            || {
                let path = path.clone();
                async move {
                    let served = content(http, name).await;
                    let on_disk = std::fs::read(&path).ok();
                    served.as_deref() == expected && on_disk.as_deref() == expected
                }
            },
        )
        .await;
    }
}

/// Waits until every agent lists the same files at the same versions and hashes. (Whole-store
/// fingerprints keep moving: health records are refreshed all the time.)
async fn same_files_everywhere(agents: &[shoal::agent::AgentHandle]) {
    let listing = |a: &shoal::agent::AgentHandle| {
        let mut v: Vec<_> = a
            .replication()
            .files()
            .iter()
            .map(|f| (f.meta.key.to_string(), f.meta.version, f.meta.hash))
            .collect();
        v.sort();
        v
    };
    eventually(Duration::from_secs(20), "same files everywhere", || {
        agents.iter().all(|a| listing(a) == listing(&agents[0]))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_update_and_delete_reach_all_five_nodes() {
    let net = TestNetwork::new();
    let agents = cluster(&net, 5).await;
    let v1 = b"listen = 8080\n".to_vec();
    let (status, body) = upload(agents[1].http_addr, &net, "app.conf", &v1, &net.signer).await;
    assert_eq!(status, 200, "{body}");
    converged(&agents, "app.conf", Some(&v1)).await;

    let v2: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let (status, body) = upload(agents[3].http_addr, &net, "app.conf", &v2, &net.alt_signer).await;
    assert_eq!(status, 200, "{body}");
    converged(&agents, "app.conf", Some(&v2)).await;

    let (status, body) = delete(agents[0].http_addr, &net, "app.conf", &net.signer).await;
    assert_eq!(status, 200, "{body}");
    converged(&agents, "app.conf", None).await;
    for a in &agents {
        let info: shoal::http::api::FileInfo = get_json(a.http_addr, "/api/files/app.conf").await.unwrap();
        assert!(info.deleted);
    }
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_converge_on_the_same_winner() {
    let net = TestNetwork::new();
    let agents = cluster(&net, 4).await;
    // Two signers write the same name at the same version on two nodes at once: the total
    // order (version, signer, hash) must pick the same winner everywhere.
    let version = shoal::replication::hlc::from_ms(shoal::time::unix_ms());
    let a = signed_file(net.network_id(), "shared", b"from signer A", &net.signer, version);
    let b = signed_file(net.network_id(), "shared", b"from signer B", &net.alt_signer, version);
    let a_wins = a.meta.rank() > b.meta.rank();
    let winner: &[u8] = if a_wins { b"from signer A" } else { b"from signer B" };
    let (ra, rb) = tokio::join!(
        send_envelope(
            agents[0].http_addr,
            reqwest::Method::PUT,
            "shared",
            shoal::files::envelope::encode(&a, b"from signer A")
        ),
        send_envelope(
            agents[3].http_addr,
            reqwest::Method::PUT,
            "shared",
            shoal::files::envelope::encode(&b, b"from signer B")
        ),
    );
    // The winner is always accepted; the loser is accepted, or refused as stale when the
    // winner reached its node first.
    let (win, lose) = if a_wins { (ra, rb) } else { (rb, ra) };
    assert_eq!(win.0, 200, "{win:?}");
    assert!(lose.0 == 200 || lose.1["reason"] == "stale_version", "{lose:?}");
    converged(&agents, "shared", Some(winner)).await;
    same_files_everywhere(&agents).await;
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_catches_up_fetching_only_what_it_missed() {
    use std::sync::atomic::Ordering::Relaxed;
    let net = TestNetwork::new();
    let mut agents = cluster(&net, 4).await;
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    upload(agents[0].http_addr, &net, "app.conf", b"one", &net.signer).await;
    upload(agents[0].http_addr, &net, "shared", b"shared v1", &net.signer).await;
    upload(agents[1].http_addr, &net, "big.bin", &big, &net.signer).await;
    converged(&agents, "big.bin", Some(&big)).await;
    converged(&agents, "shared", Some(b"shared v1")).await;

    let stopped = agents.pop().unwrap();
    let state = stopped.files_dir().parent().unwrap().to_path_buf();
    stopped.shutdown().await;

    // While it is away: one update, one new file, one delete.
    let app_v2: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8).collect();
    upload(agents[0].http_addr, &net, "app.conf", &app_v2, &net.signer).await;
    upload(agents[2].http_addr, &net, "other", b"new while away", &net.alt_signer).await;
    delete(agents[1].http_addr, &net, "shared", &net.signer).await;
    converged(&agents, "other", Some(b"new while away")).await;

    let mut config = net.config("n3");
    assert_eq!(config.node.state_dir, state);
    bootstrap(&mut config, &[agents[0].cluster_addr]);
    let back = start(config).await;
    let mut all = agents;
    all.push(back);
    converged(&all, "app.conf", Some(&app_v2)).await;
    converged(&all, "other", Some(b"new while away")).await;
    converged(&all, "shared", None).await;
    converged(&all, "big.bin", Some(&big)).await;
    let back = all.last().unwrap();
    same_files_everywhere(&all).await;

    // The three changed files came from peers, plus at most one newer health report per peer
    // (a peer republishes its report once its view of the mesh, which listed this node as
    // down and the files changed, has held still for an interval: whether that happened
    // before this node came back is a matter of timing). Nothing it already held (big.bin,
    // the other nodes' records, a dozen items) was transferred again, and at most the two
    // new bodies moved (a small one may instead ride inline in a broadcast still in flight).
    let s = back.replication().stats();
    let received = s.items_from_sync.load(Relaxed) + s.items_from_broadcast.load(Relaxed);
    assert!((3..=3 + 3).contains(&received), "{received} items from peers");
    assert!((1..=2).contains(&s.bodies_fetched.load(Relaxed)));
    let fetched = s.body_bytes_fetched.load(Relaxed);
    assert!(
        fetched >= app_v2.len() as u64 && fetched <= app_v2.len() as u64 + b"new while away".len() as u64,
        "{fetched}"
    );
    for a in all {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_damaged_while_stopped_is_fetched_again() {
    use std::sync::atomic::Ordering::Relaxed;
    let net = TestNetwork::new();
    let mut agents = cluster(&net, 3).await;
    let big: Vec<u8> = (0..400_000u32).map(|i| (i % 249) as u8).collect();
    upload(agents[0].http_addr, &net, "big.bin", &big, &net.signer).await;
    converged(&agents, "big.bin", Some(&big)).await;

    let stopped = agents.pop().unwrap();
    let state = stopped.files_dir().parent().unwrap().to_path_buf();
    stopped.shutdown().await;
    // Same size, other bytes: a body file damaged while the agent was stopped.
    let body = state.join("bodies").join(blake3::hash(&big).to_hex().as_str());
    assert!(body.exists(), "large bodies are files");
    std::fs::remove_file(&body).unwrap();
    std::fs::write(&body, vec![0u8; big.len()]).unwrap();

    let mut config = net.config("n2");
    bootstrap(&mut config, &[agents[0].cluster_addr]);
    let back = start(config).await;
    let mut all = agents;
    all.push(back);
    converged(&all, "big.bin", Some(&big)).await;
    let back = all.last().unwrap();
    assert_eq!(back.replication().stats().bodies_fetched.load(Relaxed), 1);
    assert_eq!(std::fs::read(&body).unwrap(), big);
    for a in all {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_halves_of_a_partition_keep_working_and_converge_after_healing() {
    let net = TestNetwork::new();
    let agents = cluster(&net, 6).await;
    let (left, right) = agents.split_at(3);
    let keys =
        |side: &[shoal::agent::AgentHandle]| side.iter().map(|a| a.key).collect::<std::collections::HashSet<_>>();
    for a in left {
        a.set_blocked(keys(right));
    }
    for a in right {
        a.set_blocked(keys(left));
    }
    eventually(Duration::from_secs(20), "each half declares the other down", || {
        agents.iter().all(|a| alive_count(a) == 3)
    })
    .await;

    // Both halves accept writes, including conflicting ones.
    let writes: [(&shoal::agent::AgentHandle, &str, &[u8], &shoal::identity::SecretKey); 4] = [
        (&left[0], "app.conf", b"written on the left", &net.signer),
        (&right[1], "shared", b"written on the right", &net.signer),
        (&left[2], "other", b"left version", &net.signer),
        (&right[2], "other", b"right version", &net.alt_signer),
    ];
    for (agent, name, body, signer) in writes {
        assert_eq!(
            upload(agent.http_addr, &net, name, body, signer).await.0,
            200,
            "{name} on {}",
            agent.name
        );
    }
    converged(left, "app.conf", Some(b"written on the left")).await;
    converged(right, "shared", Some(b"written on the right")).await;
    for a in right {
        assert_eq!(
            content(a.http_addr, "app.conf").await,
            None,
            "the right half cannot see the left's write yet"
        );
    }

    for a in &agents {
        a.set_blocked(Default::default());
    }
    eventually(Duration::from_secs(30), "membership heals", || {
        agents.iter().all(|a| alive_count(a) == 6)
    })
    .await;
    converged(&agents, "app.conf", Some(b"written on the left")).await;
    converged(&agents, "shared", Some(b"written on the right")).await;
    // Both sides wrote "other": every node must settle on the same one of the two versions.
    same_files_everywhere(&agents).await;
    let winner = content(agents[0].http_addr, "other").await.expect("a winner");
    assert!(winner == b"left version" || winner == b"right version");
    converged(&agents, "other", Some(&winner)).await;
    for a in agents {
        a.shutdown().await;
    }
}

/// Waits until every agent holds `name` at `version` (a delete or content alike), and on disk
/// the content `expected` (None: no file).
async fn at_version(agents: &[shoal::agent::AgentHandle], name: &str, version: u64, expected: Option<&[u8]>) {
    for a in agents {
        let path = a.files_dir().join(name);
        eventually(
            Duration::from_secs(10),
            &format!("{} holds {name} at version {version}", a.name),
            || {
                let held = a
                    .replication()
                    .files()
                    .iter()
                    .find(|f| f.meta.key.to_string() == format!("file/{name}"))
                    .map(|f| f.meta.version);
                held == Some(version) && std::fs::read(&path).ok().as_deref() == expected
            },
        )
        .await;
    }
}

/// Only the push path can deliver here: anti-entropy rounds are an hour apart, and the test
/// checks that no session started while it ran. Every kind of change must reach all ten:
/// small files (inline), larger ones (announced, bodies fetched), a version whose body every
/// node already holds (announced, nothing to fetch), and deletes (tombstones, no body at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_reuploads_reach_all_ten_nodes_by_push_alone() {
    let net = TestNetwork::new();
    let agents = cluster_with(&net, 10, |mut c| {
        c.replication.anti_entropy_interval = Duration::from_secs(3600);
        c
    })
    .await;
    // Sessions a member's arrival triggers are over once nobody has started one for a while.
    let started = || -> u64 {
        agents
            .iter()
            .map(|a| {
                a.replication()
                    .stats()
                    .syncs_started
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    };
    let mut before = started();
    let mut quiet_since = tokio::time::Instant::now();
    let deadline = quiet_since + Duration::from_secs(30);
    while quiet_since.elapsed() < Duration::from_secs(2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "anti-entropy sessions never stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = started();
        if now != before {
            (before, quiet_since) = (now, tokio::time::Instant::now());
        }
    }
    let large: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let version = |body: &serde_json::Value| body["version"].as_u64().expect("version in answer");
    for round in 0..3usize {
        let origin = agents[(round * 3 + 1) % agents.len()].http_addr;
        let small = format!("round = {round}\n").into_bytes();
        let (status, body) = upload(origin, &net, "app.conf", &small, &net.signer).await;
        assert_eq!(status, 200, "{body}");
        at_version(&agents, "app.conf", version(&body), Some(&small)).await;

        let (status, body) = delete(origin, &net, "app.conf", &net.signer).await;
        assert_eq!(status, 200, "{body}");
        at_version(&agents, "app.conf", version(&body), None).await;

        let (status, body) = upload(origin, &net, "big.bin", &large, &net.signer).await;
        assert_eq!(status, 200, "{body}");
        at_version(&agents, "big.bin", version(&body), Some(&large)).await;

        // The same bytes again at a new version: every node already holds the body.
        let (status, body) = upload(origin, &net, "big.bin", &large, &net.alt_signer).await;
        assert_eq!(status, 200, "{body}");
        at_version(&agents, "big.bin", version(&body), Some(&large)).await;

        let (status, body) = delete(origin, &net, "big.bin", &net.signer).await;
        assert_eq!(status, 200, "{body}");
        at_version(&agents, "big.bin", version(&body), None).await;
    }
    assert_eq!(
        started(),
        before,
        "an anti-entropy session ran, so the push path was not alone"
    );
    for a in agents {
        a.shutdown().await;
    }
}
