//! Health reports, the mesh view and events over real QUIC between in-process agents.

mod common;

use std::time::Duration;

use common::*;
use shoal::health::checks::CheckStatus;
use shoal::health::report::NodeStatus;
use shoal::http::api;

async fn nodes(http: std::net::SocketAddr) -> Vec<api::NodeView> {
    get_json::<api::Nodes>(http, "/api/nodes")
        .await
        .map(|n| n.nodes)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_lists_four_healthy_nodes_with_recent_reports_and_a_graph() {
    let net = TestNetwork::new();
    let agents = cluster(&net, 4).await;
    for a in &agents {
        let http = a.http_addr;
        wait_until(
            Duration::from_secs(20),
            &format!("{} lists 4 healthy nodes", a.name),
            || async move {
                let list = nodes(http).await;
                list.len() == 4
                    && list.iter().all(|n| {
                        n.up && n.report.as_ref().is_some_and(|r| r.status == NodeStatus::Ok)
                            && n.report_age_secs.is_some_and(|age| age < 30)
                    })
            },
        )
        .await;
    }
    let list = nodes(agents[0].http_addr).await;
    let mut names: Vec<_> = list.iter().filter_map(|n| n.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["n0", "n1", "n2", "n3"]);
    let local = list.iter().find(|n| n.local).unwrap();
    let r = local.report.as_ref().unwrap();
    assert!(r.memory.is_some() && r.disk.is_some() && r.load.is_some());
    assert_eq!(r.version, shoal::VERSION);

    // The graph links every pair of nodes with a measured RTT: the local node's links live, the
    // others' from their reports (their first measured links go out once, as soon as they
    // have some; the rest with the refresh).
    let http = agents[2].http_addr;
    wait_until(
        Duration::from_secs(45),
        "every pair linked with an RTT",
        || async move {
            let g: api::Graph = match get_json(http, "/api/graph").await {
                Ok(g) => g,
                Err(_) => return false,
            };
            let pairs: std::collections::HashSet<_> = g
                .edges
                .iter()
                .filter(|e| e.reachable && e.rtt_ms.is_some_and(|r| r > 0.0))
                .map(|e| if e.from < e.to { (e.from, e.to) } else { (e.to, e.from) })
                .collect();
            g.nodes.len() == 4
                && pairs.len() == 6
                && g.edges
                    .iter()
                    .all(|e| e.state == shoal::membership::MemberState::Alive && e.reachable)
        },
    )
    .await;
    let one: api::NodeView = get_json(agents[1].http_addr, "/api/nodes/n3").await.unwrap();
    assert_eq!(one.name.as_deref(), Some("n3"));
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_check_shows_as_failing_on_every_node() {
    let net = TestNetwork::new();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    std::fs::write(&flag, b"").unwrap();
    let mut agents = cluster(&net, 2).await;
    let mut c = net.config("checked");
    bootstrap(&mut c, &[agents[0].cluster_addr]);
    c.health.checks = vec![shoal::config::CheckConfig {
        name: "flag".into(),
        kind: shoal::config::CheckType::Command,
        url: None,
        expect_status: 200,
        address: None,
        command: Some(vec!["test".into(), "-e".into(), flag.display().to_string()]),
        interval: Some(Duration::from_millis(300)),
        timeout: Duration::from_secs(2),
        retries: 1,
        group: Some("demo".into()),
    }];
    agents.push(start(c).await);
    let check_state = |list: &[api::NodeView]| {
        list.iter()
            .find(|n| n.name.as_deref() == Some("checked"))
            .and_then(|n| n.report.as_ref())
            .and_then(|r| {
                r.checks
                    .iter()
                    .find(|c| c.name == "flag")
                    .map(|c| (r.status, c.status, c.error.clone()))
            })
    };
    for a in &agents {
        let http = a.http_addr;
        wait_until(Duration::from_secs(20), "check ok everywhere", || async move {
            matches!(
                check_state(&nodes(http).await),
                Some((NodeStatus::Ok, CheckStatus::Ok, _))
            )
        })
        .await;
    }
    std::fs::remove_file(&flag).unwrap();
    for a in &agents {
        let http = a.http_addr;
        wait_until(
            Duration::from_secs(20),
            &format!("check failing on {}", a.name),
            || async move {
                matches!(
                    check_state(&nodes(http).await),
                    Some((NodeStatus::Degraded, CheckStatus::Failing, Some(_)))
                )
            },
        )
        .await;
    }
    // Every node logged the transition.
    for a in &agents {
        let http = a.http_addr;
        wait_until(Duration::from_secs(10), "events recorded", || async move {
            let ev: api::Events = get_json(http, "/api/events?limit=1000").await.unwrap();
            ev.events
                .iter()
                .any(|e| e.kind == shoal::events::EventKind::CheckFailing && e.check.as_deref() == Some("flag"))
                && ev
                    .events
                    .iter()
                    .any(|e| e.kind == shoal::events::EventKind::NodeDegraded)
        })
        .await;
    }
    std::fs::write(&flag, b"").unwrap();
    let http = agents[0].http_addr;
    wait_until(Duration::from_secs(20), "check recovers", || async move {
        matches!(
            check_state(&nodes(http).await),
            Some((NodeStatus::Ok, CheckStatus::Ok, _))
        )
    })
    .await;
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_longer_than_membership_remembers_stays_listed_with_its_last_report() {
    let net = TestNetwork::new();
    let forget = |name: &str| {
        let mut c = net.config(name);
        c.cluster.forget_down_after = Duration::from_secs(3);
        c
    };
    let a = start(forget("a")).await;
    let mut cb = forget("b");
    bootstrap(&mut cb, &[a.cluster_addr]);
    let b = start(cb).await;
    let http = a.http_addr;
    wait_until(Duration::from_secs(20), "b's report reaches a", || async move {
        nodes(http)
            .await
            .iter()
            .any(|n| n.name.as_deref() == Some("b") && n.report.is_some())
    })
    .await;
    let key = b.key;
    b.kill().await;
    eventually(Duration::from_secs(20), "b forgotten by membership", || {
        state_of(&a, &key).is_none()
    })
    .await;
    let list = nodes(http).await;
    let b_view = list.iter().find(|n| n.key == key).expect("still listed");
    assert!(
        !b_view.up && b_view.state.is_none() && b_view.report.is_some(),
        "{b_view:?}"
    );
    let ev: api::Events = get_json(http, "/api/events").await.unwrap();
    assert!(
        ev.events
            .iter()
            .any(|e| e.kind == shoal::events::EventKind::NodeDown && e.node == key)
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_delivers_new_events_live() {
    let net = TestNetwork::new();
    let a = start(net.config("a")).await;
    let mut resp = reqwest::Client::new()
        .get(format!("http://{}/api/events/stream", a.http_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut cb = net.config("b");
    bootstrap(&mut cb, &[a.cluster_addr]);
    let b = start(cb).await;
    let joined = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await.unwrap() {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            for data in buf.lines().filter_map(|l| l.strip_prefix("data:")) {
                if let Ok(e) = serde_json::from_str::<shoal::events::Event>(data.trim())
                    && e.kind == shoal::events::EventKind::NodeJoined
                {
                    return e;
                }
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("event streamed");
    assert_eq!(joined.node, b.key);
    assert_eq!(joined.node_name.as_deref(), Some("b"));
    drop(resp);
    a.shutdown().await;
    b.shutdown().await;
}

/// A link that fails while both ends stay up (SWIM's indirect probes keep them alive) is
/// reported by the node that cannot reach the other, and shown as a failed edge everywhere;
/// when the link comes back the edge is gone. Membership changes elsewhere publish nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_link_is_reported_and_shown_while_both_ends_stay_up() {
    let net = TestNetwork::new();
    let agents = cluster(&net, 3).await;
    let (a, b, c) = (&agents[0], &agents[1], &agents[2]);
    a.set_blocked([b.key].into());
    let (from, to, http) = (a.key, b.key, c.http_addr);
    wait_until(Duration::from_secs(30), "a→b shown as failed on c", || async move {
        let g: api::Graph = match get_json(http, "/api/graph").await {
            Ok(g) => g,
            Err(_) => return false,
        };
        g.edges
            .iter()
            .any(|e| e.from == from && e.to == to && !e.reachable && e.rtt_ms.is_none())
    })
    .await;
    for x in &agents {
        assert_eq!(alive_count(x), 3, "{}: a failed link is not a dead node", x.name);
    }
    a.set_blocked(Default::default());
    wait_until(Duration::from_secs(30), "the failed edge is gone", || async move {
        let g: api::Graph = match get_json(http, "/api/graph").await {
            Ok(g) => g,
            Err(_) => return false,
        };
        !g.edges.iter().any(|e| !e.reachable)
    })
    .await;
    for x in agents {
        x.shutdown().await;
    }
}
