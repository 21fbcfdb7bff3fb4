//! Connections: dialling (in the background for datagrams, or awaited), accepting, admitting a
//! handshaken connection into the pool, and keeping under `max_connections`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tracing::debug;

use super::{
    DIAL_TIMEOUT, HANDSHAKE_TIMEOUT, PeerConn, PeerInfo, Pool, Target, Transport, TransportError, frame, peer_info,
};
use crate::identity::PublicKey;

impl Transport {
    /// Starts a background dial to `to`, holding `first` for it; false when no dial slot is
    /// free. Takes the pool lock guard so the check and the insert are one step.
    pub(super) fn start_dial(
        &self,
        mut pool: std::sync::MutexGuard<'_, Pool>,
        to: Target,
        first: Option<Bytes>,
    ) -> bool {
        let Ok(permit) = self.inner.dial_permits.clone().try_acquire_owned() else {
            return false;
        };
        pool.dialing.insert(to.key, first.into_iter().collect());
        drop(pool);
        let this = self.clone();
        self.spawn(async move {
            let _permit = permit;
            let result = this.connect(to.addr, Some(to.key)).await;
            let pending = this.lock().dialing.remove(&to.key).unwrap_or_default();
            match result {
                Ok(_) => {
                    // Go through `send` again so the datagrams use whichever connection is
                    // now cached (ours, or one the peer opened meanwhile).
                    for frame in pending {
                        if let Some((channel, payload)) = frame::decode(frame) {
                            this.send(to, channel, &payload);
                        }
                    }
                }
                Err(e) => {
                    if !matches!(
                        e,
                        TransportError::TooManyConnections(_) | TransportError::SelfConnection(_)
                    ) {
                        this.lock().unreachable.failed(to.key);
                    }
                    this.inner
                        .stats
                        .datagrams_dropped
                        .fetch_add(pending.len() as u64, Ordering::Relaxed);
                    debug!(peer = %to.key.short(), addr = %to.addr, error = %e, "dial failed");
                }
            }
        });
        true
    }

    /// Connects to `addr` and returns the admitted peer. With `expected`, any other key is
    /// refused during the handshake. The connection is cached for later sends.
    pub async fn connect(&self, addr: SocketAddr, expected: Option<PublicKey>) -> Result<PeerInfo, TransportError> {
        let result = self.dial(addr, expected).await;
        if result.is_err() {
            self.inner.stats.dial_failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn dial(&self, addr: SocketAddr, expected: Option<PublicKey>) -> Result<PeerInfo, TransportError> {
        if let Some(key) = expected
            && self.is_blocked(&key)
        {
            return Err(TransportError::Blocked(key));
        }
        if addr == self.inner.local_addr {
            return Err(TransportError::SelfConnection(addr));
        }
        if !self.make_room() {
            return Err(TransportError::TooManyConnections(self.inner.max_connections));
        }
        let mut client = quinn::ClientConfig::new(Arc::new(self.inner.tls.client(expected)?));
        client.transport_config(self.inner.transport_config.clone());
        let connecting = self
            .inner
            .endpoint
            .connect_with(client, addr, "shoal")
            .map_err(|source| TransportError::Connect { addr, source })?;
        let conn = tokio::time::timeout(DIAL_TIMEOUT, connecting)
            .await
            .map_err(|_| TransportError::Timeout(addr))?
            .map_err(|source| TransportError::Connection { addr, source })?;
        self.register(conn, addr, true)
    }

    /// Below the connection limit, true. At it, closes the oldest connection to a peer that
    /// sealed datagrams still reach (membership loses nothing; a stream on it fails and is
    /// retried by its owner) and returns true; false if there is none.
    fn make_room(&self) -> bool {
        let max = self.inner.max_connections;
        let pool = self.lock();
        if pool.live.len() < max {
            return true;
        }
        let sealer = self.sealer();
        let keyed: HashSet<usize> = pool
            .conns
            .iter()
            .filter(|(k, pc)| sealer.has_key(k, pc.info.generation))
            .map(|(_, pc)| pc.conn.stable_id())
            .collect();
        drop(sealer);
        // A duplicate (not the cached connection of its peer) carries nothing: it goes first.
        let cached: HashSet<usize> = pool.conns.values().map(|pc| pc.conn.stable_id()).collect();
        let oldest = pool
            .live
            .iter()
            .filter(|(id, (c, _))| c.close_reason().is_none() && (keyed.contains(id) || !cached.contains(id)))
            .min_by_key(|(id, (_, seq))| (cached.contains(id), *seq))
            .map(|(_, (c, _))| c.clone());
        drop(pool);
        match oldest {
            Some(conn) => {
                debug!(limit = max, "connection limit reached; closing the oldest");
                conn.close(0u32.into(), b"limit");
                true
            }
            None => false,
        }
    }

    /// Admits a freshly handshaken connection into the pool and starts its reader. `dialled`
    /// says whether we initiated it.
    fn register(&self, conn: quinn::Connection, addr: SocketAddr, dialled: bool) -> Result<PeerInfo, TransportError> {
        let info = peer_info(&conn, &self.inner.admission).map_err(|refusal| {
            conn.close(1u32.into(), b"refused");
            TransportError::Refused { addr, refusal }
        })?;
        if info.key == self.inner.local_key {
            conn.close(0u32.into(), b"self");
            return Err(TransportError::SelfConnection(addr));
        }
        self.inner.stats.connections_opened.fetch_add(1, Ordering::Relaxed);
        self.keep_session_key(&conn, &info, dialled);
        // When both sides dial at once there are two connections to the same run of the peer.
        // Both sides keep sending on the one initiated by the lower key, so the other carries
        // nothing and idles out instead of doubling the traffic.
        let canonical = (self.inner.local_key < info.key) == dialled;
        let superseded = {
            let mut pool = self.lock();
            pool.registered += 1;
            let seq = pool.registered;
            pool.live.insert(conn.stable_id(), (conn.clone(), seq));
            pool.unreachable.reached(&info.key);
            let keep_existing = pool.conns.get(&info.key).is_some_and(|old| {
                old.info.generation == info.generation
                    && old.conn.close_reason().is_none()
                    && old.canonical
                    && !canonical
            });
            if keep_existing {
                None
            } else {
                let entry = PeerConn {
                    conn: conn.clone(),
                    info: info.clone(),
                    canonical,
                };
                pool.conns.insert(info.key, entry)
            }
        };
        // A connection to an earlier run of the peer is dead weight.
        if let Some(old) = superseded
            && old.info.generation < info.generation
        {
            old.conn.close(0u32.into(), b"superseded");
        }
        debug!(peer = %info.key.short(), name = %info.name, %addr, dialled, canonical, "connected");
        self.spawn(self.clone().read_loop(conn, info.clone()));
        Ok(info)
    }

    pub(super) async fn accept_loop(self) {
        loop {
            let incoming = tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                i = self.inner.endpoint.accept() => match i {
                    Some(i) => i,
                    None => return,
                },
            };
            if !self.make_room() {
                debug!(remote = %incoming.remote_address(), "connection limit reached, refusing");
                incoming.refuse();
                continue;
            }
            let this = self.clone();
            self.spawn(async move {
                let remote = incoming.remote_address();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                    Ok(Ok(conn)) => {
                        if let Err(e) = this.register(conn, remote, false) {
                            debug!(%remote, error = %e, "incoming connection not kept");
                        }
                    }
                    Ok(Err(e)) => {
                        // Refusals by our verifier were logged with their reason already.
                        debug!(%remote, error = %e, "incoming handshake failed");
                    }
                    Err(_) => debug!(%remote, "incoming handshake timed out"),
                }
            });
        }
    }
}
