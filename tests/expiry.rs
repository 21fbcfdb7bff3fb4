//! Network certificates that end while their node is connected, and renewing one without a
//! restart. In-process agents over real QUIC on 127.0.0.1; each node runs from a config file
//! whose `certificate_file` the tests rewrite and reload.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use shoal::agent::AgentHandle;
use shoal::events::EventKind;
use shoal::identity::{NodeCertificate, PublicKey, SecretKey, unix_now};
use shoal::membership::MemberState;

/// How long after its certificate's end a node must be down everywhere (the issue's bound).
const CUT_WITHIN: Duration = Duration::from_secs(5);
/// Validity of the short certificates: long enough for three agents to form a mesh on a
/// loaded machine, short enough for the test to stay brief.
const SHORT_VALIDITY: u64 = 15;

/// A node run from a config file.
struct FileNode {
    key: SecretKey,
    config: PathBuf,
    cert_file: PathBuf,
}

impl FileNode {
    /// Writes the key, a certificate valid until `not_after`, and a config file joining
    /// through `seeds`.
    fn new(net: &TestNetwork, name: &str, not_after: u64, seeds: &[SocketAddr]) -> FileNode {
        let state = net.state_dir(name);
        std::fs::create_dir_all(&state).unwrap();
        let key = SecretKey::generate();
        key.save(&state.join("node.key"), false).unwrap();
        let node = FileNode {
            key,
            config: state.join("shoal.toml"),
            cert_file: state.join("node.cert"),
        };
        node.write_cert(
            &NodeCertificate::issue(&net.key, node.key.public(), name, unix_now() - 60, not_after).unwrap(),
        );
        let seeds: Vec<String> = seeds.iter().map(|a| format!("\"{a}\"")).collect();
        let toml = format!(
            r#"[node]
state_dir = "{state}"

[cluster]
listen = "127.0.0.1:0"
bootstrap = [{seeds}]
probe_period = "500ms"
probe_timeout = "200ms"
suspect_timeout = "1500ms"
reconnect_interval = "2s"
join_backoff_max = "2s"

[network]
network_key = "{network}"
certificate_file = "node.cert"

[http]
listen = "127.0.0.1:0"

[health]
interval = "1s"
"#,
            state = state.display(),
            seeds = seeds.join(", "),
            network = net.key.public(),
        );
        std::fs::write(&node.config, toml).unwrap();
        node
    }

    fn write_cert(&self, cert: &NodeCertificate) {
        std::fs::write(&self.cert_file, cert.to_base64()).unwrap();
    }

    async fn start(&self) -> AgentHandle {
        let config = shoal::config::Config::load(&self.config).unwrap();
        shoal::agent::start(config, &self.config).await.unwrap()
    }
}

/// The `not_after` of `peer`'s certificate on `agent`'s connection to it.
fn seen_not_after(agent: &AgentHandle, peer: &PublicKey) -> Option<u64> {
    agent.peers().iter().find(|p| p.key == *peer).and_then(|p| p.not_after)
}

/// The instant (tokio clock) at which a certificate valid through `not_after` has expired,
/// plus `extra`.
fn after_expiry(not_after: u64, extra: Duration) -> tokio::time::Instant {
    let expired_at = UNIX_EPOCH + Duration::from_secs(not_after + 1);
    let left = expired_at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + left + extra
}

/// The expiry gauge of the agent at `http`.
async fn expiry_gauge(http: SocketAddr) -> Option<u64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("shoal_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse().ok())
}

/// Starts two long-lived nodes and `x` (from its file) and waits for the three-node mesh.
async fn mesh_with(net: &TestNetwork, x_name: &str, x_until: u64) -> (AgentHandle, AgentHandle, FileNode, AgentHandle) {
    let a = start(net.config("a")).await;
    let mut b = net.config("b");
    bootstrap(&mut b, &[a.cluster_addr]);
    let b = start(b).await;
    let x_node = FileNode::new(net, x_name, x_until, &[a.cluster_addr, b.cluster_addr]);
    let x = x_node.start().await;
    eventually(Duration::from_secs(20), "three-node mesh", || {
        [&a, &b, &x].iter().all(|n| alive_count(n) == 3)
    })
    .await;
    (a, b, x_node, x)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_node_is_cut_everywhere_when_its_certificate_expires() {
    captured_logs();
    let net = TestNetwork::new();
    let not_after = unix_now() + SHORT_VALIDITY;
    let (a, b, x_node, x) = mesh_with(&net, "x", not_after).await;
    assert_eq!(
        seen_not_after(&a, &x.key),
        Some(not_after),
        "a knows when x's certificate ends"
    );
    assert_eq!(expiry_gauge(x.http_addr).await, Some(not_after));

    // Until its last valid second, x stays in: SWIM traffic (a probe every 500 ms) and its
    // health reports keep its connections busy, so no idle timeout ever closes them.
    let last_valid = after_expiry(not_after, Duration::ZERO) - Duration::from_millis(1200);
    while tokio::time::Instant::now() < last_valid {
        for peer in [&a, &b] {
            assert_eq!(
                state_of(peer, &x.key),
                Some(MemberState::Alive),
                "{} before expiry",
                peer.name
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refusals_before = a.transport_stats().refusals.load(Relaxed);
    let opened_before = a.transport_stats().connections_opened.load(Relaxed);

    // Within 5 s of expiry: down at every other node, and no connection to it anywhere.
    let expired_at = after_expiry(not_after, Duration::ZERO);
    let deadline = after_expiry(not_after, CUT_WITHIN);
    loop {
        let cut = [&a, &b]
            .iter()
            .all(|n| state_of(n, &x.key) == Some(MemberState::Down) && seen_not_after(n, &x.key).is_none());
        if cut {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "x is still in 5 s after its certificate ended: a sees {:?}, b sees {:?}",
            state_of(&a, &x.key),
            state_of(&b, &x.key)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "x down at a and b {:?} after its certificate expired",
        tokio::time::Instant::now().saturating_duration_since(expired_at)
    );
    assert!(
        a.transport_stats().refusals.load(Relaxed) > refusals_before,
        "the cut is counted as a refusal"
    );
    // Declared down at once, not found out by failed probes: no node went through suspecting
    // it (with the test timings, probes alone would also be in time, after 1.5 s of suspicion).
    for n in [&a, &b] {
        let events: shoal::http::api::Events = get_json(n.http_addr, "/api/events").await.unwrap();
        // (From its last valid second on: what happened while the mesh formed is not the test.)
        let about_x: Vec<_> = events
            .events
            .iter()
            .filter(|e| e.node == x.key && e.at_ms >= not_after * 1000)
            .map(|e| e.kind)
            .collect();
        assert!(about_x.contains(&EventKind::NodeDown), "{}: {about_x:?}", n.name);
        assert!(
            !about_x.contains(&EventKind::NodeSuspect),
            "{} suspected x instead of cutting it: {about_x:?}",
            n.name
        );
    }

    // x keeps trying (its probes, its join loop) and is refused every time.
    eventually(Duration::from_secs(10), "a refuses x's new connections", || {
        a.transport_stats().refusals.load(Relaxed) >= refusals_before + 2
    })
    .await;
    // One more refused attempt: x is still down after trying again.
    eventually(Duration::from_secs(10), "a refuses x once more", || {
        a.transport_stats().refusals.load(Relaxed) >= refusals_before + 3
    })
    .await;
    for n in [&a, &b] {
        assert_eq!(state_of(n, &x.key), Some(MemberState::Down), "{} keeps x down", n.name);
        assert!(
            seen_not_after(n, &x.key).is_none(),
            "{} holds no connection to x",
            n.name
        );
    }
    assert_eq!(
        a.transport_stats().connections_opened.load(Relaxed),
        opened_before,
        "no connection from x was admitted"
    );
    assert_eq!(alive_count(&a), 2, "a and b are still together");

    let logs = logs_text();
    assert!(
        logs.lines()
            .any(|l| l.contains("expired while connected") && l.contains(&x.key.to_string())),
        "the cut is logged with the peer's key"
    );
    eventually(Duration::from_secs(10), "x notices its own expiry", || {
        logs_text().contains("this node's certificate has expired")
    })
    .await;

    // Renewed late, without a restart: x is let in again (under a renewed identity).
    let renewed_until = unix_now() + 3600;
    x_node.write_cert(&NodeCertificate::issue(&net.key, x.key, "x", unix_now() - 60, renewed_until).unwrap());
    eventually(Duration::from_secs(20), "x is back after a late renewal", || {
        [&a, &b, &x].iter().all(|n| alive_count(n) == 3)
    })
    .await;
    assert_eq!(seen_not_after(&a, &x.key), Some(renewed_until));
    for n in [a, b, x] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_renewed_before_expiry_keeps_the_node_in() {
    let net = TestNetwork::new();
    let not_after = unix_now() + SHORT_VALIDITY;
    let (a, b, x_node, x) = mesh_with(&net, "x", not_after).await;
    let opened_before = a.transport_stats().connections_opened.load(Relaxed);

    // Renew: write the new certificate over the file. The agent watches that file too, so
    // nothing else is needed (SIGHUP or `AgentHandle::reload` would do the same).
    let renewed_until = unix_now() + 3600;
    let renewed = NodeCertificate::issue(&net.key, x.key, "x", unix_now() - 60, renewed_until).unwrap();
    let renewed_at_ms = shoal::time::unix_ms();
    x_node.write_cert(&renewed);

    // Peers see the new certificate, on new connections.
    eventually(Duration::from_secs(5), "a and b see the renewed certificate", || {
        [&a, &b]
            .iter()
            .all(|n| seen_not_after(n, &x.key) == Some(renewed_until))
    })
    .await;
    assert!(a.transport_stats().connections_opened.load(Relaxed) > opened_before);
    assert_eq!(expiry_gauge(x.http_addr).await, Some(renewed_until));
    let applied = x.reload().await.expect("reloading again is fine");
    assert!(applied.applied.is_empty(), "nothing left to apply: {applied:?}");

    // Past the old end (and the 5 s a cut may take), x never left anyone's view.
    let until = after_expiry(not_after, CUT_WITHIN + Duration::from_secs(1));
    while tokio::time::Instant::now() < until {
        for n in [&a, &b] {
            assert_eq!(state_of(n, &x.key), Some(MemberState::Alive), "{} sees x", n.name);
        }
        assert_eq!(alive_count(&x), 3, "x sees everyone");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connections were closed and redialled without anyone suspecting x.
    for n in [&a, &b] {
        let events: shoal::http::api::Events = get_json(n.http_addr, "/api/events").await.unwrap();
        let about_x: Vec<_> = events
            .events
            .iter()
            .filter(|e| e.node == x.key && e.at_ms >= renewed_at_ms)
            .map(|e| e.kind)
            .collect();
        assert!(about_x.is_empty(), "{}: {about_x:?}", n.name);
    }
    for n in [a, b, x] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_for_another_key_network_or_name_is_refused_and_changes_nothing() {
    let net = TestNetwork::new();
    let a = start(net.config("a")).await;
    let until = unix_now() + 3600;
    let x_node = FileNode::new(&net, "x", until, &[a.cluster_addr]);
    let x = x_node.start().await;
    eventually(Duration::from_secs(20), "pair formed", || {
        alive_count(&a) == 2 && alive_count(&x) == 2
    })
    .await;
    let original = std::fs::read_to_string(&x_node.cert_file).unwrap();
    let opened = a.transport_stats().connections_opened.load(Relaxed);
    let now = unix_now();
    let cases = [
        (
            NodeCertificate::issue(&net.key, SecretKey::generate().public(), "x", now - 60, now + 7200).unwrap(),
            "admits node key",
        ),
        (
            NodeCertificate::issue(&SecretKey::generate(), x.key, "x", now - 60, now + 7200).unwrap(),
            "issued by network",
        ),
        (
            NodeCertificate::issue(&net.key, x.key, "renamed", now - 60, now + 7200).unwrap(),
            "renaming needs a restart",
        ),
        (
            NodeCertificate::issue(&net.key, x.key, "x", now + 3600, now + 7200).unwrap(),
            "not valid before",
        ),
        (
            NodeCertificate::issue(&net.key, x.key, "x", now - 7200, now - 3600).unwrap(),
            "expired",
        ),
    ];
    for (cert, why) in cases {
        x_node.write_cert(&cert);
        let err = x.reload().await.expect_err(why);
        assert!(err.contains(why), "{why}: {err}");
        assert_eq!(
            seen_not_after(&a, &x.key),
            Some(until),
            "{why}: a still sees the old certificate"
        );
        assert_eq!(expiry_gauge(x.http_addr).await, Some(until), "{why}: gauge unchanged");
    }
    assert_eq!(
        a.transport_stats().connections_opened.load(Relaxed),
        opened,
        "no connection was re-established"
    );
    assert_eq!(state_of(&a, &x.key), Some(MemberState::Alive));

    // The file put back, a reload is a no-op for the certificate.
    std::fs::write(&x_node.cert_file, original).unwrap();
    let applied = x.reload().await.unwrap();
    assert!(!applied.applied.contains(&"network.certificate"), "{applied:?}");

    // A renewal given inline instead of as a file is applied the same way.
    let inline_until = unix_now() + 7200;
    let inline = NodeCertificate::issue(&net.key, x.key, "x", unix_now() - 60, inline_until).unwrap();
    let toml = std::fs::read_to_string(&x_node.config).unwrap().replace(
        "certificate_file = \"node.cert\"",
        &format!("certificate = \"{}\"", inline.to_base64()),
    );
    // (The agent watches its config file, so that write alone reloads it.)
    std::fs::write(&x_node.config, toml).unwrap();
    eventually(Duration::from_secs(5), "a sees the inline certificate", || {
        seen_not_after(&a, &x.key) == Some(inline_until)
    })
    .await;
    let applied = x.reload().await.unwrap();
    assert!(applied.need_restart.is_empty(), "{applied:?}");
    assert_eq!(expiry_gauge(x.http_addr).await, Some(inline_until));
    a.shutdown().await;
    x.shutdown().await;
}
