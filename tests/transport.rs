//! The transport on its own, and hostile input from an admitted peer.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::raw::*;
use common::*;
use foca::Codec;
use shoal::identity::{Admission, NodeCertificate, SecretKey, unix_now};
use shoal::membership::{FocaCodec, NodeId};
use shoal::transport::{Channel, Inbound, Transport};
use tokio::sync::mpsc;

/// Both sides dial at once: each keeps both session keys, membership datagrams go sealed once
/// the keys settle, and both connections idle out with no redial while datagrams still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_settle_on_sealed_datagrams_and_no_connection() {
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    let idle = Duration::from_secs(1);
    let (a, mut a_in) = transport(&ka, &[&kb], idle);
    let (b, mut b_in) = transport(&kb, &[&ka], idle);
    let (ra, rb) = tokio::join!(
        a.connect(b.local_addr(), Some(kb.public())),
        b.connect(a.local_addr(), Some(ka.public()))
    );
    ra.unwrap();
    rb.unwrap();

    let (ta, tb) = (target(&kb, b.local_addr()), target(&ka, a.local_addr()));
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(10);
    let mut received = (0, 0);
    let mut after_close = (0, 0);
    loop {
        a.send(ta, Channel::Swim, b"from a");
        b.send(tb, Channel::Swim, b"from b");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let closed = a.connection_count() == 0 && b.connection_count() == 0;
        while b_in.try_recv().is_ok() {
            received.0 += 1;
            after_close.0 += usize::from(closed);
        }
        while a_in.try_recv().is_ok() {
            received.1 += 1;
            after_close.1 += usize::from(closed);
        }
        if after_close.0 > 10 && after_close.1 > 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {} and {} connections, {received:?} received, {after_close:?} without a connection",
            a.connection_count(),
            b.connection_count()
        );
    }
    for t in [&a, &b] {
        let stats = t.stats();
        assert_eq!(stats.connections_opened.load(Relaxed), 2, "no redial");
        assert!(stats.datagrams_sealed.load(Relaxed) > 10);
        assert_eq!(stats.sealed_refused.load(Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_spoofed_swim_packets_from_an_admitted_peer_change_nothing() {
    let raw_key = SecretKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let agent_key = SecretKey::generate();
    agent_key.save(&dir.path().join("node.key"), false).unwrap();
    let mut config = shoal::config::Config::for_test(dir.path());
    config.network.trusted_nodes = vec![raw_key.public().into()];
    let agent = start(config).await;
    let (raw, _inbox) = transport(&raw_key, &[&agent_key], Duration::from_secs(30));
    let to = target(&agent_key, agent.cluster_addr);
    // Connect first: datagrams sent while a dial is in flight are capped (MAX_PENDING_PER_DIAL).
    raw.connect(agent.cluster_addr, Some(agent_key.public())).await.unwrap();

    // Garbage of every size up to the datagram limit.
    for len in [0usize, 1, 2, 7, 64, 500, 1100] {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
        raw.send(to, Channel::Swim, &junk);
    }
    // A well-formed announce whose header claims to come from a node that is not the sender.
    let phantom = NodeId {
        key: SecretKey::generate().public(),
        addr: "127.0.0.1:9".parse().unwrap(),
        generation: 1,
        bump: 0,
    };
    let header = foca::Header {
        src: phantom.clone(),
        src_incarnation: 0,
        dst: agent.snapshot().identity.clone(),
        message: foca::Message::Announce,
    };
    let mut packet = Vec::new();
    FocaCodec.encode_header(&header, &mut packet).unwrap();
    for _ in 0..5 {
        raw.send(to, Channel::Swim, &packet);
    }

    eventually(Duration::from_secs(5), "the agent received the datagrams", || {
        agent
            .transport_stats()
            .datagrams_received
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 12
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snapshot = agent.snapshot();
    assert_eq!(snapshot.members.len(), 1, "no member was added: {:?}", snapshot.members);
    assert!(!snapshot.joined);
    // Still serving.
    let health: shoal::http::api::Health = get_json(agent.http_addr, "/api/health").await.unwrap();
    assert_eq!(health.members.total, 1);

    // The same announce with the true sender is accepted: the check above is what stopped it.
    let honest = foca::Header {
        src: NodeId {
            key: raw_key.public(),
            ..phantom
        },
        ..header
    };
    let mut packet = Vec::new();
    FocaCodec.encode_header(&honest, &mut packet).unwrap();
    raw.send(to, Channel::Swim, &packet);
    eventually(Duration::from_secs(5), "honest announce accepted", || {
        agent.snapshot().members.len() == 2
    })
    .await;
    agent.shutdown().await;
}

/// A transport for `key` admitted by a certificate from `net` valid from `from` to `until`,
/// admitting holders of that network's certificates.
fn certified(
    net: &SecretKey,
    key: &SecretKey,
    name: &str,
    from: u64,
    until: u64,
    idle: Duration,
) -> (Transport, mpsc::Receiver<(Channel, Inbound)>) {
    let cert = NodeCertificate::issue(net, key.public(), name, from, until).unwrap();
    bind(key, Some(&cert), Admission::new(Some(net.public()), []), idle)
}

/// Admission runs on every new connection (it is never skipped by a resumed TLS session): a
/// node whose network certificate expired while it was connected gets no new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_gets_no_new_connection() {
    let net = SecretKey::generate();
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    let now = unix_now();
    // Validity is checked in whole seconds: A's certificate ends 2 s from now.
    let a_until = now + 2;
    let member = |key: &SecretKey, name: &str, until: u64| {
        certified(&net, key, name, now - 60, until, Duration::from_millis(500))
    };
    let (a, _a_in) = member(&ka, "a", a_until);
    let (b, _b_in) = member(&kb, "b", now + 3600);

    a.connect(b.local_addr(), Some(kb.public())).await.unwrap();
    eventually(Duration::from_secs(5), "B admitted A", || b.connection_count() == 1).await;
    assert_eq!(b.stats().refusals.load(std::sync::atomic::Ordering::Relaxed), 0);
    // Nothing is sent, so the connection idles out; by then A's certificate has expired.
    eventually(Duration::from_secs(10), "the first connection idled out", || {
        a.connection_count() == 0 && b.connection_count() == 0 && unix_now() > a_until
    })
    .await;

    // The same endpoint dials again: B checks the certificate again and refuses it. (A may
    // see its side complete before B's refusal arrives, so the result of `connect` is not the
    // test; B's count and pool are.)
    let _ = a.connect(b.local_addr(), Some(kb.public())).await;
    eventually(Duration::from_secs(5), "B refused A's expired certificate", || {
        b.stats().refusals.load(std::sync::atomic::Ordering::Relaxed) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.connection_count(), 0, "B holds no connection to A");
}

/// A connection kept busy does not outlive the certificate that admitted it: at expiry the
/// admitting side closes it, counts a refusal, and hands membership an expiry notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_connection_is_cut_when_the_peer_certificate_expires() {
    let net = SecretKey::generate();
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    let now = unix_now();
    let a_until = now + 2;
    // Idle connections last far longer than the test: only expiry can end this one.
    let member =
        |key: &SecretKey, name: &str, until: u64| certified(&net, key, name, now - 60, until, Duration::from_secs(60));
    let (a, _a_in) = member(&ka, "a", a_until);
    let (b, mut b_in) = member(&kb, "b", now + 3600);
    let mut expired = b.take_expired().expect("the notices are there to take");
    assert!(b.take_expired().is_none(), "taken once");

    a.connect(b.local_addr(), Some(kb.public())).await.unwrap();
    let to_b = target(&kb, b.local_addr());
    let busy = {
        let a = a.clone();
        tokio::spawn(async move {
            loop {
                a.send(to_b, Channel::SwimCompact, b"traffic");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let notice = tokio::time::timeout(Duration::from_secs(10), expired.recv())
        .await
        .expect("an expiry notice within 10 s")
        .unwrap();
    assert!(unix_now() > a_until, "not before the certificate ended");
    assert_eq!(notice.key, ka.public());
    assert_eq!(notice.not_after, a_until);
    assert_eq!(notice.generation, 1);
    busy.abort();
    assert!(b_in.try_recv().is_ok(), "traffic flowed until then");
    assert!(b.stats().refusals.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    eventually(Duration::from_secs(5), "both sides dropped the connection", || {
        a.connection_count() == 0 && b.connection_count() == 0
    })
    .await;
}

/// What one connection costs on the wire, both ways. A SWIM contact with a member that has no
/// open connection pays a whole handshake, and once members are contacted less often than
/// `idle_timeout` that is most of a node's idle traffic (BENCHMARKS.md, "What kept 200 agents
/// from settling"). The bound catches a handshake that grows (a bigger certificate, a new
/// extension, path-MTU probing back to quinn's binary search, about 15 KB in all); it is not
/// a timing figure. Measured: about 7 KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_costs_a_bounded_handshake() {
    const BOUND: u64 = 10 * 1024;
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    let idle = Duration::from_secs(30);
    let (a, _a_in) = transport(&ka, &[&kb], idle);
    let (b, mut b_in) = transport(&kb, &[&ka], idle);
    a.send(target(&kb, b.local_addr()), Channel::Swim, b"one datagram");
    let mut arrived = false;
    eventually(Duration::from_secs(10), "the datagram arrived", || {
        arrived |= b_in.try_recv().is_ok();
        arrived
    })
    .await;
    // Whatever follows the handshake (acknowledgements, path MTU probes) goes out in this time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ((a_tx, a_rx), (b_tx, b_rx)) = (a.udp_bytes(), b.udp_bytes());
    println!("dialler sent {a_tx} B, received {a_rx} B; listener sent {b_tx} B, received {b_rx} B");
    assert!(a_tx + b_tx <= BOUND, "one connection cost {} bytes", a_tx + b_tx);
}
