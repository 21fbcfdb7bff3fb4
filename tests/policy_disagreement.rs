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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_offering_refused_items_costs_an_in_sync_round() {
    captured_logs();
    let net = TestNetwork::new();
    let extra = SecretKey::generate();

    // A accepts `app.conf` from an extra key; B does not.
    let mut ca = net.config("allows");
    ca.replication.anti_entropy_interval = Duration::from_millis(200);
    ca.health.refresh = Duration::from_secs(3600);
    ca.files = (0..BULK).map(|i| (bulk(i), vec![net.signer.public()])).collect();
    ca.files
        .insert("app.conf".into(), vec![net.signer.public(), extra.public()]);
    let a = start(ca).await;

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
    eventually(Duration::from_secs(20), "joined", || {
        alive_count(&a) == 2 && alive_count(&b) == 2
    })
    .await;

    for i in 0..BULK {
        assert_eq!(
            upload(a.http_addr, &net, &bulk(i), b"same everywhere", &net.signer)
                .await
                .0,
            200
        );
    }
    eventually(Duration::from_secs(20), "B holds every bulk file", || {
        (0..BULK).all(|i| b.replication().get(&ItemKey::File { name: bulk(i) }).is_some())
    })
    .await;

    // A file B refuses: its signer is not one B accepts for this name.
    assert_eq!(
        upload(a.http_addr, &net, "app.conf", b"signed by the extra key", &extra)
            .await
            .0,
        200
    );
    let app = ItemKey::File {
        name: "app.conf".into(),
    };
    let refused = shoal::replication::policy::Reject::UnauthorizedSigner;
    eventually(Duration::from_secs(20), "B refused app.conf", || {
        b.replication().stats().rejected(refused) >= 1
    })
    .await;

    // A few rounds to settle (A's health report lists the new file), then per-round samples:
    // B takes part in every session of this two-node mesh, so between two reads of its
    // counters that differ by one session, the bytes are that session's.
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
    println!("bytes per anti-entropy round between the two nodes, sorted: {per_round:?}");
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

    // One event, and one warning naming the peer's key and the reason.
    let events: shoal::http::api::Events = get_json(b.http_addr, "/api/events?limit=1000").await.unwrap();
    let raised: Vec<_> = events
        .events
        .iter()
        .filter(|e| e.kind == EventKind::PeerOffersRefused)
        .collect();
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
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let line = warnings.iter().next().unwrap();
    assert!(
        line.contains(&a.key.to_string()) && line.contains(refused.label()),
        "{line}"
    );

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
    a.shutdown().await;
    b.shutdown().await;
}
