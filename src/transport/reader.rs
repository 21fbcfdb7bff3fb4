//! The reader task of each connection: datagrams go to membership, streams to the stream
//! handler, and a peer admitted by certificate is cut when it expires (see `expiry`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::debug;

use super::{Inbound, PeerInfo, Transport, expiry, frame};

impl Transport {
    /// Reads one connection until it closes: datagrams to membership, streams to the
    /// handler; cuts it when the peer's certificate expires.
    pub(super) async fn read_loop(self, conn: quinn::Connection, info: PeerInfo) {
        let name: Arc<str> = Arc::from(info.name.as_str());
        let stats = &self.inner.stats;
        // A peer admitted by certificate is cut when it expires (see `expiry`).
        let mut expiry = info.not_after.map(|not_after| {
            let wait = expiry::sleep_before_check(not_after, crate::time::unix_ms());
            (not_after, Box::pin(tokio::time::sleep(wait)))
        });
        let mut expired = None;
        loop {
            let expiry_due = async {
                match &mut expiry {
                    Some((_, sleep)) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            let datagram = tokio::select! {
                _ = self.inner.cancel.cancelled() => break,
                () = expiry_due => {
                    let Some((not_after, sleep)) = &mut expiry else { continue };
                    let now_ms = crate::time::unix_ms();
                    if expiry::is_expired(*not_after, now_ms) {
                        self.cut_expired(&conn, &info, *not_after);
                        expired = Some(*not_after);
                        break;
                    }
                    let wait = expiry::sleep_before_check(*not_after, now_ms);
                    sleep.as_mut().reset(tokio::time::Instant::now() + wait);
                    continue;
                }
                d = conn.read_datagram() => match d {
                    Ok(d) => d,
                    Err(e) => {
                        debug!(peer = %info.key.short(), reason = %e, "connection closed");
                        self.note_close(&info.key, &e);
                        break;
                    }
                },
                s = conn.accept_bi() => match s {
                    Ok((send, recv)) => {
                        self.on_stream(&info, send, recv);
                        continue;
                    }
                    Err(e) => {
                        debug!(peer = %info.key.short(), reason = %e, "connection closed");
                        self.note_close(&info.key, &e);
                        break;
                    }
                },
            };
            if self.is_blocked(&info.key) {
                stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            stats.datagrams_received.fetch_add(1, Ordering::Relaxed);
            stats
                .datagram_bytes_received
                .fetch_add(datagram.len() as u64, Ordering::Relaxed);
            let Some((channel, data)) = frame::decode(datagram) else {
                stats.datagrams_malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let msg = Inbound {
                from: info.key,
                name: name.clone(),
                data,
            };
            if !self.inner.inboxes.deliver(channel, msg) {
                stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let stats = conn.stats();
        self.sealer().set_rtt(&info.key, conn.rtt());
        let mut pool = self.lock();
        if pool
            .conns
            .get(&info.key)
            .is_some_and(|p| p.conn.stable_id() == conn.stable_id())
        {
            pool.conns.remove(&info.key);
        }
        pool.live.remove(&conn.stable_id());
        pool.closed_udp.0 += stats.udp_tx.bytes;
        pool.closed_udp.1 += stats.udp_rx.bytes;
        drop(pool);
        if let Some(not_after) = expired {
            self.report_expired(info.key, info.generation, not_after);
        }
    }

    fn on_stream(&self, peer: &PeerInfo, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let handler = self
            .inner
            .stream_handler
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let permit = self.inner.stream_permits.clone().try_acquire_owned().ok();
        match (handler, permit) {
            (Some(handler), Some(permit)) if !self.is_blocked(&peer.key) => {
                let fut = handler.handle(peer.clone(), send, recv);
                self.spawn(async move {
                    let _permit = permit;
                    fut.await;
                });
            }
            _ => {
                // Busy, blocked or not ready: refuse; the peer sees the stream reset.
                let _ = send.reset(1u32.into());
                let _ = recv.stop(1u32.into());
            }
        }
    }
}
