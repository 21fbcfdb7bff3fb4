//! Joining through bootstrap nodes, and rejoining whenever every peer is lost.
//!
//! Each attempt resolves every `host:port` again (DNS may have changed), connects to each
//! address with any admitted key, and announces us to whoever answered. Attempts are spaced by
//! exponential backoff with jitter until foca reports that we joined.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use rand::RngExt;
use tracing::{debug, info, warn};

use super::{MembershipHandle, NodeId};
use crate::config::HostPort;
use crate::transport::Transport;

/// First wait between join attempts.
pub const JOIN_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// How long one DNS resolution may take.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the join loop.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Bootstrap peers; a config reload can replace them.
    pub bootstrap: tokio::sync::watch::Receiver<Vec<HostPort>>,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Our advertised address, never dialled.
    pub advertise: SocketAddr,
}

/// Runs forever (until the task is dropped): joins, and rejoins after isolation.
pub async fn run_join(mut config: JoinConfig, transport: Transport, membership: MembershipHandle) {
    let mut snapshots = membership.subscribe();
    loop {
        if config.bootstrap.borrow_and_update().is_empty() {
            info!("no bootstrap nodes configured; waiting for others to join this node");
            // A reload may add some.
            if config.bootstrap.wait_for(|b| !b.is_empty()).await.is_err() {
                return;
            }
            continue;
        }
        // Wait until we are not part of a cluster.
        if snapshots.wait_for(|s| !s.joined).await.is_err() {
            return;
        }
        let mut backoff = JOIN_BACKOFF_INITIAL;
        let mut attempt = 0u32;
        while !membership.snapshot().joined && !membership.is_closed() {
            attempt += 1;
            let reached = attempt_join(&config, &transport, &membership).await;
            if reached == 0 {
                warn!(attempt, retry_in = ?backoff, "could not reach any bootstrap node");
            } else {
                debug!(attempt, reached, "announced to bootstrap nodes");
            }
            // Equal jitter: half the backoff fixed, half random, so restarts spread out.
            let half = backoff / 2;
            let wait = half + half.mul_f64(rand::rng().random::<f64>());
            // An error means the membership task is gone: the agent is shutting down.
            if let Ok(Err(_)) = tokio::time::timeout(wait, snapshots.wait_for(|s| s.joined)).await {
                return;
            }
            backoff = (backoff * 2).min(config.backoff_max);
        }
    }
}

/// One pass over the bootstrap list; returns how many peers we announced to.
async fn attempt_join(config: &JoinConfig, transport: &Transport, membership: &MembershipHandle) -> usize {
    let mut addrs = BTreeSet::new();
    let bootstrap = config.bootstrap.borrow().clone();
    for hp in &bootstrap {
        match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((hp.host.as_str(), hp.port))).await {
            Ok(Ok(resolved)) => addrs.extend(resolved),
            Ok(Err(e)) => warn!(bootstrap = %hp, error = %e, "cannot resolve bootstrap node"),
            Err(_) => warn!(bootstrap = %hp, "resolving bootstrap node timed out"),
        }
    }
    addrs.remove(&config.advertise);
    addrs.remove(&transport.local_addr());
    let attempts = addrs.into_iter().map(|addr| async move {
        match transport.connect(addr, None).await {
            Ok(peer) => {
                let dst = NodeId {
                    key: peer.key,
                    addr,
                    generation: peer.generation,
                    bump: 0,
                };
                membership.announce(dst).await;
                true
            }
            Err(crate::transport::TransportError::SelfConnection(_)) => false,
            Err(e) => {
                warn!(bootstrap = %addr, error = %e, "cannot reach bootstrap node");
                false
            }
        }
    });
    futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count()
}
