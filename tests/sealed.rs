//! Sealed membership datagrams between real transports on loopback: what an on-path attacker
//! can replay or forge, a peer that restarts and forgets its keys, and the connection limit.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw::*;
use common::*;
use shoal::identity::{Admission, SecretKey};
use shoal::transport::sealed::KEY_SETTLE;
use shoal::transport::{Channel, Inbound, Transport};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// Receives what is waiting in `inbox`.
fn drain(inbox: &mut mpsc::Receiver<(Channel, Inbound)>) -> Vec<Inbound> {
    let mut got = Vec::new();
    while let Ok((_, m)) = inbox.try_recv() {
        got.push(m);
    }
    got
}

/// A UDP relay in front of `to` that keeps a copy of everything it forwards.
async fn recording_relay(to: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            log.lock().unwrap().push(buf[..n].to_vec());
            let _ = socket.send_to(&buf[..n], to).await;
        }
    });
    (addr, seen)
}

/// Sends `datagrams` from a fresh socket (an outsider's) to `to`.
async fn inject(to: SocketAddr, datagrams: &[Vec<u8>]) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for d in datagrams {
        socket.send_to(d, to).await.unwrap();
    }
}

/// Connects `a` to `b` and waits until the session keys have settled.
async fn keyed(a: &Transport, b: &Transport, kb: &SecretKey) {
    a.connect(b.local_addr(), Some(kb.public())).await.unwrap();
    tokio::time::sleep(KEY_SETTLE + Duration::from_millis(200)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_forged_and_outsider_datagrams_are_refused_and_deliver_nothing() {
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    let (a, _a_in) = transport(&ka, &[&kb], Duration::from_secs(30));
    let (b, mut b_in) = transport(&kb, &[&ka], Duration::from_secs(30));
    keyed(&a, &b, &kb).await;
    drain(&mut b_in);

    // a's datagrams to b go through a relay an attacker controls.
    let (relay, seen) = recording_relay(b.local_addr()).await;
    let via_relay = target(&kb, relay);
    for i in 0..5u8 {
        a.send(via_relay, Channel::SwimCompact, &[b'm', i]);
    }
    eventually(Duration::from_secs(5), "five datagrams through the relay", || {
        seen.lock().unwrap().len() == 5
    })
    .await;
    eventually(Duration::from_secs(5), "b received them", || {
        !b_in.is_empty() && b_in.len() == 5
    })
    .await;
    let got = drain(&mut b_in);
    assert!(got.iter().all(|m| m.from == ka.public()));
    assert_eq!(
        a.stats().datagrams_sealed.load(Relaxed),
        5,
        "sealed, not on the connection"
    );
    // The relay saw no plaintext.
    let captured = seen.lock().unwrap().clone();
    assert!(captured.iter().all(|d| !d.windows(2).any(|w| w[0] == b'm' && w[1] < 5)));

    // Replayed as they were, with one bit flipped, truncated, or garbage with the mark.
    let refused_before = b.stats().sealed_refused.load(Relaxed);
    let mut hostile = captured.clone();
    for d in &captured {
        let mut flipped = d.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x80;
        hostile.push(flipped);
        hostile.push(d[..d.len() / 2].to_vec());
    }
    hostile.push(vec![0x20; 60]);
    hostile.push(vec![0x20]);
    hostile.push(vec![0x21; 9]);
    inject(b.local_addr(), &hostile).await;
    eventually(Duration::from_secs(5), "every hostile datagram refused", || {
        // The 0x21 one is an unknown-key reply naming no key of b's: ignored, not refused.
        b.stats().sealed_refused.load(Relaxed) == refused_before + hostile.len() as u64 - 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(drain(&mut b_in).is_empty(), "nothing hostile was delivered");

    // And the link still works.
    a.send(target(&kb, b.local_addr()), Channel::SwimCompact, b"after");
    eventually(Duration::from_secs(5), "b still hears a", || !b_in.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_restarts_gets_a_new_key_whether_or_not_its_run_changes() {
    let (ka, kb) = (SecretKey::generate(), SecretKey::generate());
    let idle = Duration::from_secs(1);
    let (a, _a_in) = transport(&ka, &[&kb], idle);
    let (b, b_in) = transport(&kb, &[&ka], idle);
    keyed(&a, &b, &kb).await;
    let b_addr = b.local_addr();
    b.close().await;
    drop((b, b_in));

    // The same run number on the same address: b has no key, says so, and a dials again.
    let admit_a = || Admission::new(None, [ka.public()]);
    let (b, mut b_in) = rebind_at(&kb, admit_a, idle, b_addr, 1).await;
    let to_b = target(&kb, b_addr);
    let delivered = async |a: &Transport, b_in: &mut mpsc::Receiver<(Channel, Inbound)>, what: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            a.send(to_b, Channel::SwimCompact, b"hello");
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !drain(b_in).is_empty() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}");
        }
    };
    delivered(&a, &mut b_in, "a reaches b restarted as the same run").await;
    assert!(b.stats().sealed_refused.load(Relaxed) >= 1, "the old key was refused");
    assert_eq!(b.stats().connections_opened.load(Relaxed), 1, "a dialled again");
    b.close().await;
    drop((b, b_in));

    // A later run: a seals nothing to it with the earlier run's key, and dials.
    let (b, mut b_in) = rebind_at(&kb, admit_a, idle, b_addr, 2).await;
    let to_b2 = shoal::transport::Target { generation: 2, ..to_b };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        a.send(to_b2, Channel::SwimCompact, b"hello");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !drain(&mut b_in).is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a reaches b's later run");
    }
    assert_eq!(
        b.stats().sealed_refused.load(Relaxed),
        0,
        "no datagram under an old key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_under_the_limit_while_every_peer_is_reached() {
    // The helper's transports hold at most 16 connections; a talks to 24 peers.
    const PEERS: usize = 24;
    let ka = SecretKey::generate();
    let keys: Vec<SecretKey> = (0..PEERS).map(|_| SecretKey::generate()).collect();
    let refs: Vec<&SecretKey> = keys.iter().collect();
    let (a, _a_in) = transport(&ka, &refs, Duration::from_secs(60));
    let mut peers = Vec::new();
    for k in &keys {
        peers.push(transport(k, &[&ka], Duration::from_secs(60)));
    }
    let mut most = 0;
    for (k, (p, _)) in keys.iter().zip(&peers) {
        a.connect(p.local_addr(), Some(k.public())).await.unwrap();
        most = most.max(a.connection_count());
    }
    tokio::time::sleep(KEY_SETTLE + Duration::from_millis(200)).await;
    for (k, (p, _)) in keys.iter().zip(&peers) {
        a.send(target(k, p.local_addr()), Channel::SwimCompact, b"probe");
    }
    let mut reached = HashSet::new();
    eventually(Duration::from_secs(10), "every peer got its datagram", || {
        for (i, (_, inbox)) in peers.iter_mut().enumerate() {
            if !drain(inbox).is_empty() {
                reached.insert(i);
            }
        }
        reached.len() == PEERS
    })
    .await;
    // Closing the oldest to make room is immediate; its entry leaves when its task sees it.
    eventually(Duration::from_secs(5), "back under the limit", || {
        a.connection_count() <= 16
    })
    .await;
    assert!(
        most <= 16 + 1,
        "at most one over the limit while a close is in flight: {most}"
    );
    assert_eq!(a.stats().datagrams_sealed.load(Relaxed), PEERS as u64);
}
