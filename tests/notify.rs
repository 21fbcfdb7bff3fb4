//! Leader-elected webhook alerts, checked with a webhook receiver inside the test.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use common::*;
use shoal::agent::AgentHandle;
use shoal::config::{Config, WebhookConfig, WebhookFormat};
use shoal::identity::PublicKey;

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A webhook receiver on 127.0.0.1; its URL carries a secret that must never leak.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hooks/{secret}",
            post(
                |State(got): State<Received>, Json(body): Json<serde_json::Value>| async move {
                    got.lock().unwrap().push(body);
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hooks/s3cr3t-t0ken-do-not-show"), got)
}

fn with_hook(mut c: Config, url: &str) -> Config {
    c.notify.webhooks = vec![WebhookConfig {
        name: "ops".into(),
        url: url.into(),
        format: WebhookFormat::Json,
        events: vec![
            "node_down".into(),
            "node_up".into(),
            "check_failing".into(),
            "check_ok".into(),
            "job_failed".into(),
        ],
    }];
    c
}

/// Notifications of `event` about `node` received so far.
fn count(got: &Received, event: &str, node: &PublicKey) -> usize {
    got.lock()
        .unwrap()
        .iter()
        .filter(|b| b["event"] == event && b["node_key"] == node.to_string())
        .count()
}

async fn hooked_cluster(net: &TestNetwork, n: usize, url: &str) -> Vec<AgentHandle> {
    cluster_with(net, n, |c| with_hook(c, url)).await
}

/// Lets a possible duplicate arrive before counting (failure detection, settle times).
async fn quiet_period() {
    tokio::time::sleep(Duration::from_secs(6)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_notification_per_change_even_when_the_leader_dies() {
    let (url, got) = receiver().await;
    let net = TestNetwork::new();
    let mut agents = hooked_cluster(&net, 4, &url).await;
    // The leader is the alive node with the smallest key.
    agents.sort_by_key(|a| a.key);
    let victim = agents.pop().unwrap();
    let (victim_key, victim_name) = (victim.key, victim.name.clone());
    victim.kill().await;
    eventually(Duration::from_secs(20), "one down notification", || {
        count(&got, "node_down", &victim_key) == 1
    })
    .await;
    quiet_period().await;
    assert_eq!(count(&got, "node_down", &victim_key), 1, "{:?}", got.lock().unwrap());
    assert_eq!(
        got.lock().unwrap().len(),
        1,
        "nothing else was sent: {:?}",
        got.lock().unwrap()
    );
    let body = got.lock().unwrap()[0].clone();
    assert_eq!(body["node"], victim_name.as_str());
    assert!(body["message"].as_str().unwrap().contains("is down"));

    // Back with the same state dir: one "up".
    let mut c = with_hook(net.config(&victim_name), &url);
    bootstrap(&mut c, &[agents[0].cluster_addr]);
    agents.push(start(c).await);
    eventually(Duration::from_secs(20), "one up notification", || {
        count(&got, "node_up", &victim_key) == 1
    })
    .await;
    quiet_period().await;
    assert_eq!(count(&got, "node_up", &victim_key), 1);
    assert_eq!(got.lock().unwrap().len(), 2);

    // A change, and the leader killed right after it: the next leader sends each change once,
    // and does not resend what the old leader already sent.
    agents.sort_by_key(|a| a.key);
    let leader = agents.remove(0);
    let at = agents.iter().position(|a| a.key != victim_key).unwrap();
    let other = agents.remove(at);
    let (other_key, leader_key) = (other.key, leader.key);
    other.kill().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.kill().await;
    eventually(Duration::from_secs(30), "both downs notified", || {
        count(&got, "node_down", &other_key) == 1 && count(&got, "node_down", &leader_key) == 1
    })
    .await;
    quiet_period().await;
    assert_eq!(count(&got, "node_down", &other_key), 1);
    assert_eq!(count(&got, "node_down", &leader_key), 1);
    assert_eq!(
        count(&got, "node_down", &victim_key),
        1,
        "old news is not repeated by the new leader"
    );
    assert_eq!(got.lock().unwrap().len(), 4, "{:?}", got.lock().unwrap());

    // The webhook URL appears in no API answer.
    for path in [
        "/api/health",
        "/api/members",
        "/api/nodes",
        "/api/graph",
        "/api/events?limit=1000",
        "/api/replication",
        "/api/files",
    ] {
        for a in &agents {
            let text = reqwest::get(format!("http://{}{path}", a.http_addr))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(!text.contains("s3cr3t"), "{path} leaks the webhook URL");
        }
    }
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_surviving_node_sends_nothing() {
    let (url, got) = receiver().await;
    let net = TestNetwork::new();
    let mut agents = hooked_cluster(&net, 2, &url).await;
    let gone = agents.pop().unwrap();
    let gone_key = gone.key;
    gone.kill().await;
    eventually(Duration::from_secs(20), "survivor sees the other down", || {
        state_of(&agents[0], &gone_key) == Some(shoal::membership::MemberState::Down)
    })
    .await;
    quiet_period().await;
    assert!(got.lock().unwrap().is_empty(), "{:?}", got.lock().unwrap());
    agents.pop().unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_until_accepted() {
    // The receiver refuses the first two attempts.
    let attempts = Arc::new(Mutex::new(0usize));
    let accepted: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State((attempts, accepted)): State<(Arc<Mutex<usize>>, Received)>,
                 Json(body): Json<serde_json::Value>| async move {
                    let mut n = attempts.lock().unwrap();
                    *n += 1;
                    if *n <= 2 {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    accepted.lock().unwrap().push(body);
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state((attempts.clone(), accepted.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let net = TestNetwork::new();
    let mut agents = hooked_cluster(&net, 3, &url).await;
    agents.sort_by_key(|a| a.key);
    let victim = agents.pop().unwrap();
    let key = victim.key;
    victim.kill().await;
    eventually(Duration::from_secs(30), "delivered after two failures", || {
        count(&accepted, "node_down", &key) == 1
    })
    .await;
    quiet_period().await;
    assert_eq!(*attempts.lock().unwrap(), 3);
    assert_eq!(accepted.lock().unwrap().len(), 1);
    for a in agents {
        a.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_job_is_notified_once() {
    let (url, got) = receiver().await;
    let net = TestNetwork::new();
    let seed = start(with_hook(net.config("n0"), &url)).await;
    let mut c = with_hook(net.config("n1"), &url);
    bootstrap(&mut c, &[seed.cluster_addr]);
    c.schedules = vec![
        toml::from_str("id = \"backup\"\nschedule = \"@yearly\"\ncommand = [\"sh\", \"-c\", \"exit 7\"]").unwrap(),
    ];
    let runner = start(c).await;
    let mut c = with_hook(net.config("n2"), &url);
    bootstrap(&mut c, &[seed.cluster_addr]);
    let third = start(c).await;
    let agents = [seed, runner, third];
    eventually(Duration::from_secs(20), "cluster formed", || {
        agents.iter().all(|a| alive_count(a) == 3)
    })
    .await;
    let runner_key = agents[1].key;
    let run = || async {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/schedules/backup/run", agents[1].http_addr))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    };
    run().await;
    eventually(Duration::from_secs(20), "one job_failed notification", || {
        count(&got, "job_failed", &runner_key) == 1
    })
    .await;
    run().await;
    eventually(Duration::from_secs(20), "a second one for the second failure", || {
        count(&got, "job_failed", &runner_key) == 2
    })
    .await;
    quiet_period().await;
    let bodies = got.lock().unwrap().clone();
    let jobs: Vec<&serde_json::Value> = bodies.iter().filter(|b| b["event"] == "job_failed").collect();
    assert_eq!(jobs.len(), 2, "{bodies:?}");
    assert_ne!(jobs[0]["job"], jobs[1]["job"]);
    assert_eq!(jobs[0]["schedule"], "backup");
    assert!(
        jobs[0]["detail"].as_str().unwrap().contains("exit code 7"),
        "{:?}",
        jobs[0]
    );
    for a in agents {
        a.shutdown().await;
    }
}
