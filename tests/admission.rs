//! Peers that are not admitted cannot join, are never listed, and are refused with a logged
//! reason. Real QUIC handshakes on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use shoal::config::Config;
use shoal::identity::{PublicKey, SecretKey, unix_now};

/// Watches `admitted` for `window`, failing if any of them ever lists one of `intruders`.
async fn never_listed(admitted: &[&shoal::agent::AgentHandle], intruders: &[PublicKey], window: Duration) {
    let deadline = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < deadline {
        for a in admitted {
            for m in &a.snapshot().members {
                assert!(!intruders.contains(&m.id.key), "{} lists intruder {}", a.name, m.id.key);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unadmitted_agents_cannot_join_and_refusals_are_logged_with_reasons() {
    captured_logs();
    let net = TestNetwork::new();
    let seed = start(net.config("seed")).await;
    let mut member = net.config("member");
    bootstrap(&mut member, &[seed.cluster_addr]);
    let member = start(member).await;
    eventually(Duration::from_secs(10), "admitted pair joined", || {
        alive_count(&seed) == 2 && alive_count(&member) == 2
    })
    .await;

    // 1. A certificate from another network.
    let other = TestNetwork::new();
    let mut foreign = other.config("foreign");
    bootstrap(&mut foreign, &[seed.cluster_addr]);
    let foreign = start(foreign).await;

    // 2. A certificate from our network that has expired.
    let mut expired = net.config_with_validity("expired", unix_now() - 7200, unix_now() - 3600);
    bootstrap(&mut expired, &[seed.cluster_addr, member.cluster_addr]);
    let expired = start(expired).await;

    // 3. An allowlist cluster, and a node whose key it does not list (although that node
    //    trusts the cluster).
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let allow_config = |i: usize, trusted: &[PublicKey]| {
        let state = dir.path().join(format!("allow{i}"));
        keys[i].save(&state.join("node.key"), false).unwrap();
        let mut c = Config::for_test(&state);
        c.node.name = Some(format!("allow{i}"));
        c.network.trusted_nodes = trusted.iter().map(|k| (*k).into()).collect();
        c
    };
    let listed = [keys[0].public(), keys[1].public()];
    let x = start(allow_config(0, &listed)).await;
    let mut y = allow_config(1, &listed);
    bootstrap(&mut y, &[x.cluster_addr]);
    let y = start(y).await;
    let mut z = allow_config(2, &[keys[0].public(), keys[1].public(), keys[2].public()]);
    bootstrap(&mut z, &[x.cluster_addr, y.cluster_addr]);
    let z = start(z).await;

    let intruders = [foreign.key, expired.key, z.key];
    never_listed(&[&seed, &member, &x, &y], &intruders, Duration::from_secs(5)).await;
    for intruder in [&foreign, &expired, &z] {
        let snap = intruder.snapshot();
        assert!(!snap.joined, "{} joined", intruder.name);
        assert_eq!(snap.members.len(), 1, "{} knows only itself", intruder.name);
    }
    assert_eq!(alive_count(&x), 2, "the allowlist pair still formed");
    assert!(
        seed.transport_stats()
            .refusals
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    let logs = logs_text();
    let refused = |key: &PublicKey, reason: &str| {
        logs.lines()
            .any(|l| l.contains("refused peer") && l.contains(&key.to_string()) && l.contains(reason))
    };
    // The foreign node refuses our seed (TLS 1.3 verifies the server first): wrong network.
    assert!(refused(&seed.key, "not ours"), "wrong-network refusal logged:\n{logs}");
    assert!(
        refused(&expired.key, "certificate expired"),
        "expiry refusal logged:\n{logs}"
    );
    assert!(
        refused(&z.key, "not in trusted_nodes"),
        "allowlist refusal logged:\n{logs}"
    );

    for a in [seed, member, foreign, expired, x, y, z] {
        a.shutdown().await;
    }
}
