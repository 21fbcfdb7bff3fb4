//! A bare transport on loopback, without an agent around it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal::identity::{Admission, NodeCertificate, SecretKey};
use shoal::transport::{Channel, Claims, Inbound, Target, Transport, TransportConfig};
use tokio::sync::mpsc;

/// A transport on a loopback port that admits the nodes `trusted` lists.
pub fn transport(
    secret: &SecretKey,
    trusted: &[&SecretKey],
    idle: Duration,
) -> (Transport, mpsc::Receiver<(Channel, Inbound)>) {
    let admission = Admission::new(None, trusted.iter().map(|k| k.public()));
    bind(secret, None, admission, idle)
}

/// A transport on a loopback port presenting `network_cert`, admitting by `admission`.
pub fn bind(
    secret: &SecretKey,
    network_cert: Option<&NodeCertificate>,
    admission: Admission,
    idle: Duration,
) -> (Transport, mpsc::Receiver<(Channel, Inbound)>) {
    bind_at(secret, network_cert, admission, idle, "127.0.0.1:0".parse().unwrap(), 1)
}

/// A transport bound to `listen`, run `generation`, presenting `network_cert`.
pub fn bind_at(
    secret: &SecretKey,
    network_cert: Option<&NodeCertificate>,
    admission: Admission,
    idle: Duration,
    listen: SocketAddr,
    generation: u64,
) -> (Transport, mpsc::Receiver<(Channel, Inbound)>) {
    let (tx, rx) = mpsc::channel(1024);
    let t = Transport::bind(
        &TransportConfig {
            listen,
            idle_timeout: idle,
            max_connections: 16,
        },
        secret,
        &Claims {
            name: "raw".into(),
            generation,
            network_cert: network_cert.map(NodeCertificate::to_bytes),
        },
        Arc::new(admission),
        tx,
    )
    .unwrap();
    (t, rx)
}

/// [`bind_at`] for an address a transport just closed: quinn's driver may hold the socket a
/// moment longer, so the bind is tried again for up to 5 s.
pub async fn rebind_at(
    secret: &SecretKey,
    admission: impl Fn() -> Admission,
    idle: Duration,
    listen: SocketAddr,
    generation: u64,
) -> (Transport, mpsc::Receiver<(Channel, Inbound)>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (tx, rx) = mpsc::channel(1024);
        let config = TransportConfig {
            listen,
            idle_timeout: idle,
            max_connections: 16,
        };
        let claims = Claims {
            name: "raw".into(),
            generation,
            network_cert: None,
        };
        match Transport::bind(&config, secret, &claims, Arc::new(admission()), tx) {
            Ok(t) => return (t, rx),
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("binding {listen} again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {listen} again: {e}"),
        }
    }
}

/// Where to send to `key` at `addr`, run 1.
pub fn target(key: &SecretKey, addr: SocketAddr) -> Target {
    Target {
        key: key.public(),
        addr,
        generation: 1,
    }
}
