//! Membership scenarios over real QUIC between in-process agents on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use shoal::membership::MemberState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_agents_bootstrap_through_one_seed_and_all_list_five_alive() {
    let net = TestNetwork::new();
    let seed = start(net.config("seed")).await;
    let mut agents = vec![];
    for i in 1..5 {
        let mut c = net.config(&format!("n{i}"));
        bootstrap(&mut c, &[seed.cluster_addr]);
        agents.push(start(c).await);
    }
    agents.push(seed);
    eventually(Duration::from_secs(15), "every agent lists 5 alive members", || {
        agents.iter().all(|a| alive_count(a) == 5)
    })
    .await;

    // The HTTP view agrees, with names learned from certificates.
    for a in &agents {
        let list = members(a.http_addr).await.expect("members API");
        assert_eq!(list.len(), 5);
        assert!(list.iter().all(|m| m.state == MemberState::Alive), "{list:#?}");
        assert_eq!(list.iter().filter(|m| m.local).count(), 1);
    }
    wait_until(Duration::from_secs(10), "names learned", || {
        let http = agents[0].http_addr;
        async move {
            let list = members(http).await.unwrap_or_default();
            let mut names: Vec<String> = list.iter().filter_map(|m| m.name.clone()).collect();
            names.sort();
            names == ["n1", "n2", "n3", "n4", "seed"]
        }
    })
    .await;
    let health: shoal::http::api::Health = get_json(agents[2].http_addr, "/api/health").await.unwrap();
    assert_eq!(health.members.alive, 5);
    assert!(health.joined);
    assert_eq!(health.network, Some(net.key.public()));

    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_seen_promptly() {
    let net = TestNetwork::new();
    // A suspicion would take 30 s to turn into "down"; only the leave message can be faster.
    let slow = |name: &str| {
        let mut c = net.config(name);
        c.cluster.suspect_timeout = Duration::from_secs(30);
        c
    };
    let a = start(slow("a")).await;
    let mut cb = slow("b");
    bootstrap(&mut cb, &[a.cluster_addr]);
    let b = start(cb).await;
    let mut cc = slow("c");
    bootstrap(&mut cc, &[a.cluster_addr]);
    let c = start(cc).await;
    eventually(Duration::from_secs(10), "3 alive everywhere", || {
        [&a, &b, &c].iter().all(|x| alive_count(x) == 3)
    })
    .await;

    let leaving = c.key;
    c.shutdown().await;
    eventually(Duration::from_secs(3), "a and b see c down after its leave", || {
        state_of(&a, &leaving) == Some(MemberState::Down) && state_of(&b, &leaving) == Some(MemberState::Down)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_joins_a_bootstrap_peer_that_starts_three_seconds_later() {
    let net = TestNetwork::new();
    let seed_port = free_udp_port();
    let seed_addr = format!("127.0.0.1:{seed_port}").parse().unwrap();
    let mut early = net.config("early");
    bootstrap(&mut early, &[seed_addr]);
    let early = start(early).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!early.snapshot().joined, "nothing to join yet");
    let mut seed_config = net.config("seed");
    seed_config.cluster.listen = seed_addr;
    let seed = start(seed_config).await;

    eventually(Duration::from_secs(10), "early agent joins the late seed", || {
        alive_count(&early) == 2 && alive_count(&seed) == 2
    })
    .await;
    early.shutdown().await;
    seed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_member_is_marked_down_then_forgotten_after_the_bound() {
    let net = TestNetwork::new();
    let forget = |name: &str| {
        let mut c = net.config(name);
        c.cluster.forget_down_after = Duration::from_secs(3);
        c
    };
    let a = start(forget("a")).await;
    let mut others = vec![];
    for name in ["b", "c"] {
        let mut cfg = forget(name);
        bootstrap(&mut cfg, &[a.cluster_addr]);
        others.push(start(cfg).await);
    }
    eventually(Duration::from_secs(10), "3 alive", || {
        alive_count(&a) == 3 && others.iter().all(|o| alive_count(o) == 3)
    })
    .await;

    let victim = others.pop().unwrap();
    let key = victim.key;
    victim.kill().await;
    eventually(
        Duration::from_secs(10),
        "crashed member marked down by the others",
        || state_of(&a, &key) == Some(MemberState::Down) && state_of(&others[0], &key) == Some(MemberState::Down),
    )
    .await;
    eventually(Duration::from_secs(10), "down member forgotten", || {
        state_of(&a, &key).is_none() && state_of(&others[0], &key).is_none()
    })
    .await;
    assert_eq!(alive_count(&a), 2);
    a.shutdown().await;
    others.pop().unwrap().shutdown().await;
}
