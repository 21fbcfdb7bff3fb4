//! Names bound to keys: an admitted node that claims another node's name is shown under its
//! own key everywhere, never wins a lookup by name, and is reported (log and event) once.

mod common;

use std::time::Duration;

use common::*;
use shoal::agent::AgentHandle;
use shoal::config::{Config, TrustedNode};
use shoal::http::api;
use shoal::identity::{PublicKey, SecretKey, unix_now};

/// Asserts, on every agent, that `n1` finds `real`, that the impostor is listed under its key
/// with the name it claims marked as a conflict, that no two nodes share a name, and that the
/// impostor is found by its key and by a prefix of it.
async fn real_n1_wins_everywhere(agents: &[&AgentHandle], real: PublicKey, impostor: PublicKey) {
    for a in agents {
        let http = a.http_addr;
        wait_until(
            Duration::from_secs(20),
            &format!("{} names the impostor apart", a.name),
            || async move {
                let Ok(nodes) = get_json::<api::Nodes>(http, "/api/nodes").await else {
                    return false;
                };
                nodes
                    .nodes
                    .iter()
                    .any(|n| n.key == impostor && n.name_conflict.as_deref() == Some("n1"))
            },
        )
        .await;
        let nodes: api::Nodes = get_json(http, "/api/nodes").await.unwrap();
        let fake = nodes.nodes.iter().find(|n| n.key == impostor).unwrap();
        assert_eq!(fake.name, None, "on {}", a.name);
        let mut names: Vec<&str> = nodes.nodes.iter().filter_map(|n| n.name.as_deref()).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count, "two nodes under one name on {}: {names:?}", a.name);

        let found: api::NodeView = get_json(http, "/api/nodes/n1").await.unwrap();
        assert_eq!(found.key, real, "/api/nodes/n1 on {}", a.name);
        let members: api::Members = get_json(http, "/api/members").await.unwrap();
        let listed: Vec<_> = members
            .members
            .iter()
            .filter(|m| m.name.as_deref() == Some("n1"))
            .collect();
        assert_eq!(listed.len(), 1, "members named n1 on {}", a.name);
        assert_eq!(listed[0].key, real);
        let graph: api::Graph = get_json(http, "/api/graph").await.unwrap();
        assert_eq!(
            graph.nodes.iter().filter(|n| n.name.as_deref() == Some("n1")).count(),
            1
        );

        let by_key: api::NodeView = get_json(http, &format!("/api/nodes/{}", encode(&impostor.to_string())))
            .await
            .unwrap();
        assert_eq!(by_key.key, impostor);
        let by_prefix: api::NodeView = get_json(http, &format!("/api/nodes/{}", encode(&impostor.short())))
            .await
            .unwrap();
        assert_eq!(by_prefix.key, impostor);

        let events: api::Events = get_json(http, "/api/events?limit=1000").await.unwrap();
        let conflicts: Vec<_> = events
            .events
            .iter()
            .filter(|e| e.kind == shoal::events::EventKind::NameConflict && e.node == impostor)
            .collect();
        assert_eq!(conflicts.len(), 1, "one conflict event on {}", a.name);
        let detail = conflicts[0].detail.as_deref().unwrap_or_default();
        assert!(
            detail.contains(&impostor.to_string()) && detail.contains(&real.to_string()),
            "{detail}"
        );
    }
    let logs = logs_text();
    assert!(
        logs.lines().any(|l| l.contains("claims a name another key holds")
            && l.contains(&impostor.to_string())
            && l.contains(&real.to_string())),
        "no warning naming both keys"
    );
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An allowlist config for node `dir` with `key`, trusting `trusted`.
fn allowlist_config(net: &TestNetwork, dir: &str, key: &SecretKey, name: &str, trusted: &[TrustedNode]) -> Config {
    let state = net.state_dir(dir);
    key.save(&state.join("node.key"), false).unwrap();
    let mut c = net.config(dir);
    c.network.network_key = None;
    c.network.certificate = None;
    c.network.trusted_nodes = trusted.to_vec();
    c.node.name = Some(name.to_string());
    c
}

async fn allowlist_mesh(bind_names: bool) {
    captured_logs();
    let net = TestNetwork::new();
    let keys: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
    let names = ["n0", "n1", "n2", "n1"];
    let trusted: Vec<TrustedNode> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| TrustedNode {
            key: k.public(),
            // The impostor's entry never names it.
            name: (bind_names && i < 3).then(|| names[i].to_string()),
        })
        .collect();
    let mut agents = Vec::new();
    for i in 0..3 {
        let mut c = allowlist_config(&net, &format!("d{i}"), &keys[i], names[i], &trusted);
        if let Some(seed) = agents.first().map(|a: &AgentHandle| a.cluster_addr) {
            bootstrap(&mut c, &[seed]);
        }
        agents.push(start(c).await);
    }
    eventually(Duration::from_secs(20), "three agents formed", || {
        agents.iter().all(|a| alive_count(a) == 3)
    })
    .await;
    // Every node has seen the real n1 by its name before the impostor shows up.
    for a in &agents {
        let http = a.http_addr;
        wait_until(Duration::from_secs(20), "n1 named", || async move {
            get_json::<api::NodeView>(http, "/api/nodes/n1").await.is_ok()
        })
        .await;
    }
    let mut c = allowlist_config(&net, "impostor", &keys[3], "n1", &trusted);
    bootstrap(&mut c, &[agents[0].cluster_addr]);
    let impostor = start(c).await;
    eventually(Duration::from_secs(20), "impostor joined", || {
        agents.iter().all(|a| alive_count(a) == 4)
    })
    .await;
    // A binding holds on the impostor's own node too; a bare claim is first come, first
    // served, and the impostor saw itself first.
    let all: Vec<&AgentHandle> = if bind_names {
        agents.iter().chain([&impostor]).collect()
    } else {
        agents.iter().collect()
    };
    real_n1_wins_everywhere(&all, keys[1].public(), keys[3].public()).await;
    impostor.shutdown().await;
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_in_an_allowlist_mesh_with_named_entries_is_shown_under_its_key() {
    allowlist_mesh(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_in_an_allowlist_mesh_of_bare_keys_loses_to_the_node_that_held_the_name() {
    allowlist_mesh(false).await;
}

/// The network signed a second certificate for `n1` (a re-keyed machine whose old key still
/// runs, or a mistake): the older certificate holds the name on every node, the newcomer's
/// node included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_with_a_newer_certificate_for_the_name_is_shown_under_its_key() {
    captured_logs();
    let net = TestNetwork::new();
    let now = unix_now();
    let agents = cluster_with(&net, 3, |c| c).await;
    let real = agents.iter().find(|a| a.name == "n1").unwrap().key;
    let mut c = net.config_with_validity("impostor", now - 30, now + 3600);
    // Its certificate says n1; its config says so too.
    let key = SecretKey::load(&net.state_dir("impostor").join("node.key")).unwrap();
    let cert = shoal::identity::NodeCertificate::issue(&net.key, key.public(), "n1", now - 30, now + 3600).unwrap();
    c.network.certificate = Some(cert.to_base64());
    c.node.name = Some("n1".into());
    bootstrap(&mut c, &[agents[0].cluster_addr]);
    let impostor = start(c).await;
    eventually(Duration::from_secs(20), "impostor joined", || {
        agents.iter().all(|a| alive_count(a) == 4)
    })
    .await;
    let all: Vec<&AgentHandle> = agents.iter().chain([&impostor]).collect();
    real_n1_wins_everywhere(&all, real, key.public()).await;
    impostor.shutdown().await;
    for a in agents {
        a.shutdown().await;
    }
}

/// A key prefix that several nodes share answers 409 with the candidates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_key_prefix_answers_409_with_the_candidates() {
    let net = TestNetwork::new();
    // Two keys sharing their first character (one in 64 pairs does).
    let first = SecretKey::generate();
    let c = first.public().to_string().chars().next().unwrap();
    let second = std::iter::repeat_with(SecretKey::generate)
        .find(|k| k.public().to_string().starts_with(c))
        .unwrap();
    first.save(&net.state_dir("n1").join("node.key"), false).unwrap();
    second.save(&net.state_dir("n2").join("node.key"), false).unwrap();
    let agents = cluster(&net, 3).await;
    let http = agents[0].http_addr;
    let resp = reqwest::get(format!("http://{http}/api/nodes/{}", encode(&c.to_string())))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let body: api::Ambiguous = resp.json().await.unwrap();
    assert_eq!(body.reason, "ambiguous");
    let mut keys: Vec<PublicKey> = body.candidates.iter().map(|c| c.key).collect();
    keys.sort();
    let mut expected: Vec<PublicKey> = agents
        .iter()
        .map(|a| a.key)
        .filter(|k| k.to_string().starts_with(c))
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
    // The CLI prints the candidates.
    let url = format!("http://{http}");
    let (code, _, err) = run_shoal(&["nodes", &c.to_string(), "--url", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&first.public().to_string()) && err.contains(&second.public().to_string()),
        "{err}"
    );
    // By name, and by a unique prefix.
    let (code, out, err) = run_shoal(&["nodes", "n1", "--url", &url]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&first.public().to_string()), "{out}");
    let (code, out, _) = run_shoal(&["nodes", &first.public().to_string()[..20], "--url", &url]);
    assert_eq!(code, 0);
    assert!(out.contains("n1"), "{out}");
    // An unknown name is 404 with a reason a person can read.
    let resp = reqwest::get(format!("http://{http}/api/nodes/nobody")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let (code, _, err) = run_shoal(&["nodes", "nobody", "--url", &url]);
    assert_eq!(code, 1);
    assert!(err.contains("no node named nobody"), "{err}");
    for a in agents {
        a.shutdown().await;
    }
}
