//! Two nodes whose `[files]` differ for one name: the one that refuses the other's items
//! remembers what it refused from that peer, so their anti-entropy rounds go back to the
//! constant in-sync exchange; the disagreement shows as a metric naming the peer and one event;
//! a reload that makes the refusing node accept the signer brings the file.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use shoal::events::EventKind;
use shoal::identity::SecretKey;
use shoal::replication::item::ItemKey;
use shoal::replication::reconcile::IN_SYNC_SESSION_BYTES;

/// Anti-entropy period of both nodes: many rounds in a short test.
const INTERVAL: &str = "200ms";
/// Files both nodes accept, so that each holds more than a key list's worth of items and an
/// in-sync round is one fingerprint (the bound this test checks).
const BULK: usize = 16;
/// Per-round samples taken once the refusal is remembered.
const SAMPLES: usize = 24;

fn bulk(i: usize) -> String {
    format!("bulk{i:02}")
}

/// `[files]` accepting every bulk name and `app.conf` from `app_signers`.
fn files_toml(net: &TestNetwork, app_signers: &[&SecretKey]) -> String {
    let signer = format!("\"{}\"", net.signer.public());
    let mut out = String::from("\n[files]\n");
    for i in 0..BULK {
        out.push_str(&format!("\"{}\" = [{signer}]\n", bulk(i)));
    }
    let app: Vec<String> = app_signers.iter().map(|k| format!("\"{}\"", k.public())).collect();
    out.push_str(&format!("\"app.conf\" = [{}]\n", app.join(", ")));
    out
}

async fn metrics_text(http: SocketAddr) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample whose name and labels start `prefix` (e.g. `name{a="b"`).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// Events of `kind` in the log of the agent at `http`.
async fn events_of(http: SocketAddr, kind: EventKind) -> Vec<shoal::events::Event> {
    let events: shoal::http::api::Events = get_json(http, "/api/events?limit=1000").await.unwrap();
    events.events.into_iter().filter(|e| e.kind == kind).collect()
}

/// A test config for `name` accepting `app.conf` from `app_signers`.
fn config(net: &TestNetwork, name: &str, app_signers: &[&SecretKey]) -> shoal::config::Config {
    let mut c = net.config(name);
    c.replication.anti_entropy_interval = Duration::from_millis(200);
    c.health.refresh = Duration::from_secs(3600);
    c.files = (0..BULK).map(|i| (bulk(i), vec![net.signer.public()])).collect();
    c.files
        .insert("app.conf".into(), app_signers.iter().map(|k| k.public()).collect());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_whose_files_differ_cost_an_in_sync_round() {
    scenario(false).await;
}

/// B and C refuse what A accepts: each reaches the in-sync exchange with A, and B and C, which
/// agree, stay in sync with each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_accepting_more_cost_in_sync_rounds() {
    scenario(true).await;
}

/// A accepts `app.conf` from an extra key; B (and C, with `third`) do not.
async fn scenario(third: bool) {
    captured_logs();
    let net = TestNetwork::new();
    let extra = SecretKey::generate();
    let a = start(config(&net, "allows", &[&net.signer, &extra])).await;

    // B runs from a real file, so that it can be reloaded.
    let base = net.config("refuses");
    let state = base.node.state_dir.clone();
    let head = process_config_toml(
        &state,
        free_udp_port(),
        free_tcp_port(),
        &net.key.public(),
        base.network.certificate.as_deref().unwrap(),
        &[a.cluster_addr],
    );
    let tuning = format!("\n[replication]\nanti_entropy_interval = \"{INTERVAL}\"\n\n[health]\nrefresh = \"1h\"\n");
    let path = state.join("shoal.toml");
    std::fs::write(&path, format!("{head}{tuning}{}", files_toml(&net, &[&net.signer]))).unwrap();
    let b = shoal::agent::start(shoal::config::Config::load(&path).unwrap(), &path)
        .await
        .unwrap();
    let c = match third {
        true => {
            let mut cc = config(&net, "also-refuses", &[&net.signer]);
            bootstrap(&mut cc, &[a.cluster_addr]);
            Some(start(cc).await)
        }
        false => None,
    };
    let refusing: Vec<&shoal::agent::AgentHandle> = std::iter::once(&b).chain(c.as_ref()).collect();
    let n = refusing.len() + 1;
    eventually(Duration::from_secs(20), "joined", || {
        alive_count(&a) == n && refusing.iter().all(|x| alive_count(x) == n)
    })
    .await;

    for i in 0..BULK {
        let (status, _) = upload(a.http_addr, &net, &bulk(i), b"same everywhere", &net.signer).await;
        assert_eq!(status, 200);
    }
    eventually(Duration::from_secs(20), "every node holds every bulk file", || {
        refusing
            .iter()
            .all(|x| (0..BULK).all(|i| x.replication().get(&ItemKey::File { name: bulk(i) }).is_some()))
    })
    .await;

    // A file B refuses: its signer is not one B accepts for this name.
    let (status, _) = upload(a.http_addr, &net, "app.conf", b"signed by the extra key", &extra).await;
    assert_eq!(status, 200);
    let app = ItemKey::File {
        name: "app.conf".into(),
    };
    let refused = shoal::replication::policy::Reject::UnauthorizedSigner;
    eventually(Duration::from_secs(20), "app.conf refused", || {
        refusing.iter().all(|x| x.replication().stats().rejected(refused) >= 1)
    })
    .await;

    // A few rounds to settle (A's health report lists the new file), then per-round samples:
    // between two reads of B's counters that differ by one session, the bytes are that
    // session's (with A, or with C, which refuses the same).
    let stats = b.replication().stats();
    let settle = stats.sync_sessions.load(Ordering::Acquire) + 6;
    eventually(Duration::from_secs(20), "rounds after the refusal", || {
        stats.sync_sessions.load(Ordering::Acquire) >= settle
    })
    .await;
    let read = || {
        let sessions = stats.sync_sessions.load(Ordering::Acquire);
        let bytes = stats.sync_bytes_sent.load(Ordering::Relaxed) + stats.sync_bytes_received.load(Ordering::Relaxed);
        (sessions, bytes)
    };
    let mut per_round = Vec::new();
    let mut last = read();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while per_round.len() < SAMPLES && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = read();
        if now.0 == last.0 + 1 {
            per_round.push(now.1 - last.1);
        }
        last = now;
    }
    assert_eq!(per_round.len(), SAMPLES, "rounds sampled");
    per_round.sort_unstable();
    let median = per_round[SAMPLES / 2];
    let within = per_round.iter().filter(|&&n| n <= IN_SYNC_SESSION_BYTES as u64).count();
    println!("{n} nodes: bytes per anti-entropy round of B, sorted: {per_round:?}");
    // An unrelated record changing during the window costs one round more than in sync; a
    // round that re-sends refused items costs more than twice the bound every time.
    assert!(
        median <= IN_SYNC_SESSION_BYTES as u64 && within >= SAMPLES * 3 / 4,
        "rounds cost more than the in-sync exchange ({IN_SYNC_SESSION_BYTES} bytes): {per_round:?}"
    );
    assert!(b.replication().get(&app).is_none(), "B still refuses app.conf");

    // The metric names the peer and the reason.
    let text = metrics_text(b.http_addr).await;
    let peer = a.key.short();
    assert_eq!(
        sample(
            &text,
            "shoal_peer_refused_items",
            &[("peer", &peer), ("node", "allows"), ("reason", refused.label())]
        ),
        Some(1.0),
        "{text}"
    );
    if let Some(c) = &c {
        // C refuses what B refuses: neither names the other.
        let text = metrics_text(c.http_addr).await;
        let labels = [("peer", peer.as_str()), ("reason", refused.label())];
        assert_eq!(sample(&text, "shoal_peer_refused_items", &labels), Some(1.0), "{text}");
        let b_short = b.key.short();
        assert_eq!(sample(&text, "shoal_peer_refused_items", &[("peer", &b_short)]), None);
        let text = metrics_text(b.http_addr).await;
        let c_short = c.key.short();
        assert_eq!(sample(&text, "shoal_peer_refused_items", &[("peer", &c_short)]), None);
        assert_eq!(events_of(c.http_addr, EventKind::PeerOffersRefused).await.len(), 1);
    }

    // One event on B, and one warning per refusing node naming A's key and the reason (both
    // tests of this binary log to the same place: only lines naming this A count).
    let raised = events_of(b.http_addr, EventKind::PeerOffersRefused).await;
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].node, a.key);
    let detail = raised[0].detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains(refused.label()) && detail.contains("app.conf"),
        "{detail}"
    );
    let warnings: HashSet<String> = logs_text()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("offers items this node refuses"))
        .filter(|l| l.contains(&a.key.to_string()))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), refusing.len(), "{warnings:?}");
    assert!(warnings.iter().all(|l| l.contains(refused.label())), "{warnings:?}");

    // B now accepts the extra key: the reload forgets the refusals and the file arrives.
    let tmp = state.join(".shoal.toml.tmp");
    std::fs::write(
        &tmp,
        format!("{head}{tuning}{}", files_toml(&net, &[&net.signer, &extra])),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let http = b.http_addr;
    wait_until(
        Duration::from_secs(20),
        "app.conf reaches B after the reload",
        || async move { content(http, "app.conf").await.as_deref() == Some(b"signed by the extra key".as_slice()) },
    )
    .await;
    let text = metrics_text(b.http_addr).await;
    assert_eq!(
        sample(&text, "shoal_peer_refused_items", &[("peer", &peer)]),
        None,
        "nothing refused any more: {text}"
    );
    assert_eq!(
        events_of(b.http_addr, EventKind::PeerOffersRefused).await.len(),
        1,
        "accepting raises nothing"
    );
    a.shutdown().await;
    b.shutdown().await;
    if let Some(c) = c {
        c.shutdown().await;
    }
}
