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

/// Where to send to `key` at `addr`, run 1.
pub fn target(key: &SecretKey, addr: SocketAddr) -> Target {
    Target {
        key: key.public(),
        addr,
        generation: 1,
    }
}
