//! Certificates that end while connected, and renewing our own without a restart.
//!
//! Admission runs at the handshake, and a busy connection never needs another one: without
//! more, a peer admitted by a network certificate would stay in until it went quiet. So every
//! connection to a peer admitted by certificate carries the certificate's `not_after`; its
//! reader task sleeps until then (re-armed from the wall clock at least every
//! [`EXPIRY_RECHECK`]) and closes the connection with [`CLOSE_CERT_EXPIRED`]. The refusal is
//! logged and counted like a handshake refusal, and membership is told ([`Expired`]) so the
//! member is declared down at once instead of after a failed probe and a suspicion.
//!
//! Sealed datagrams (`sealed`) outlive connections, so the session keys of peers admitted by
//! certificate carry its `not_after` too: a datagram under such a key is refused once it has
//! passed, and a sweep every [`KEY_EXPIRY_SWEEP`] drops those keys and tells membership, as a
//! cut connection does.
//!
//! Renewal: [`Transport::renew_certificate`] presents a new network certificate on every
//! handshake from then on, closes the open connections ([`CLOSE_CERT_RENEWED`]) and dials at
//! once every peer it had a connection or a session key with, so peers see the new certificate
//! (and its `not_after`) within a round trip.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{Target, Transport, TransportError, server_config, tls};
use crate::identity::{PublicKey, Refusal};

/// Application close code of a connection whose peer's certificate expired.
pub const CLOSE_CERT_EXPIRED: u32 = 2;
/// Close reason sent with [`CLOSE_CERT_EXPIRED`].
pub const CERT_EXPIRED_REASON: &[u8] = b"certificate_expired";
/// Application close code of connections closed because this node renewed its certificate.
pub const CLOSE_CERT_RENEWED: u32 = 3;
/// Close reason sent with [`CLOSE_CERT_RENEWED`].
pub const CERT_RENEWED_REASON: &[u8] = b"certificate_renewed";
/// Longest sleep of a connection's expiry timer before it looks at the wall clock again: the
/// timer runs on the monotonic clock, which stops during a suspend and ignores clock steps.
pub const EXPIRY_RECHECK: Duration = Duration::from_secs(300);
/// Expiry notices queued for membership; beyond this they are dropped (counted), and the
/// member is then declared down by probes failing instead (its connections are closed and
/// every handshake refuses it).
pub const EXPIRED_CAPACITY: usize = 64;
/// How often session keys are checked for their peer's certificate having expired.
pub const KEY_EXPIRY_SWEEP: Duration = Duration::from_secs(1);

/// A peer whose certificate expired while connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Its key.
    pub key: PublicKey,
    /// The identity generation of the run that was connected.
    pub generation: u64,
    /// End of the certificate's validity (Unix seconds).
    pub not_after: u64,
}

/// How long to sleep, at Unix time `now_ms`, before looking again at a certificate valid
/// until `not_after` (inclusive, whole seconds): until the first instant it is expired, at
/// most [`EXPIRY_RECHECK`]. Zero once expired.
pub fn sleep_before_check(not_after: u64, now_ms: u64) -> Duration {
    let expired_at_ms = not_after.saturating_add(1).saturating_mul(1000);
    Duration::from_millis(expired_at_ms.saturating_sub(now_ms)).min(EXPIRY_RECHECK)
}

/// Whether a certificate valid until `not_after` is expired at Unix time `now_ms` (the rule
/// admission applies: expired when the current second is past `not_after`).
pub fn is_expired(not_after: u64, now_ms: u64) -> bool {
    now_ms / 1000 > not_after
}

impl Transport {
    /// Ends a connection whose peer's certificate expired: closes it, logs and counts the
    /// refusal as the handshake would have.
    pub(super) fn cut_expired(&self, conn: &quinn::Connection, info: &tls::PeerInfo, not_after: u64) {
        conn.close(CLOSE_CERT_EXPIRED.into(), CERT_EXPIRED_REASON);
        self.inner.stats.refusals.fetch_add(1, Ordering::Relaxed);
        let refusal = Refusal::Expired { not_after };
        warn!(peer_key = %info.key, name = %info.name, reason = %refusal, "refused peer: its certificate expired while connected");
    }

    /// Drops the session keys of peers whose certificate expired, every [`KEY_EXPIRY_SWEEP`],
    /// and tells membership as for a cut connection.
    pub(super) async fn sweep_expired_keys(self) {
        let mut tick = tokio::time::interval(KEY_EXPIRY_SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let expired = self.sealer().take_expired(crate::time::unix_ms());
            for peer in expired {
                let not_after = peer.not_after.unwrap_or_default();
                self.inner.stats.refusals.fetch_add(1, Ordering::Relaxed);
                let refusal = Refusal::Expired { not_after };
                warn!(peer_key = %peer.key, name = %peer.name, reason = %refusal, "refused peer: its certificate expired");
                self.report_expired(peer.key, peer.generation, not_after);
            }
        }
    }

    /// After a peer's connection was cut or its keys dropped for expiry: tells membership,
    /// unless a connection to the same run with a certificate still valid is open (the peer
    /// renewed).
    pub(super) fn report_expired(&self, key: PublicKey, generation: u64, not_after: u64) {
        let now_ms = crate::time::unix_ms();
        let renewed = self.lock().conns.get(&key).is_some_and(|pc| {
            pc.conn.close_reason().is_none()
                && pc.info.generation >= generation
                && pc.info.not_after.is_none_or(|t| !is_expired(t, now_ms))
        });
        if renewed {
            return;
        }
        let notice = Expired {
            key,
            generation,
            not_after,
        };
        if self.inner.expired.try_send(notice).is_err() {
            self.inner.stats.expiry_notices_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs why a peer closed a connection when the reason concerns this node.
    pub(super) fn note_close(&self, peer: &PublicKey, reason: &quinn::ConnectionError) {
        if let quinn::ConnectionError::ApplicationClosed(close) = reason
            && close.error_code == CLOSE_CERT_EXPIRED.into()
        {
            error!(peer = %peer.short(), "a peer closed its connection because this node's certificate expired; renew it (`shoal cert sign`, then reload)");
        }
    }

    /// Presents `network_cert` (a binary node certificate) on every handshake from now on,
    /// then closes every open connection and redials the peers it was to, so they see the new
    /// certificate at once. Returns how many connections were renewed. Nothing changes when
    /// the new TLS material cannot be built.
    pub fn renew_certificate(&self, network_cert: Vec<u8>) -> Result<usize, TransportError> {
        let claims = {
            let current = self.inner.claims.lock().unwrap_or_else(|e| e.into_inner());
            tls::Claims {
                network_cert: Some(network_cert),
                ..current.clone()
            }
        };
        let local = tls::LocalCert::new(&self.inner.secret, &claims)?;
        let previous = self.inner.tls.set_local(std::sync::Arc::new(local));
        let server = match server_config(&self.inner.tls, &self.inner.transport_config) {
            Ok(s) => s,
            Err(e) => {
                self.inner.tls.set_local(previous);
                return Err(e);
            }
        };
        self.inner.endpoint.set_server_config(Some(server));
        *self.inner.claims.lock().unwrap_or_else(|e| e.into_inner()) = claims;

        // Everyone holding our old certificate's end: peers with a session key, and peers with
        // a connection (the connection's address wins: it is the one in use).
        let mut targets: HashMap<PublicKey, Target> = self
            .sealer()
            .peers()
            .into_iter()
            .map(|p| {
                let target = Target {
                    key: p.key,
                    addr: p.addr,
                    generation: p.generation,
                };
                (p.key, target)
            })
            .collect();
        let others: Vec<quinn::Connection> = {
            let pool = self.lock();
            for pc in pool.conns.values() {
                let target = Target {
                    key: pc.info.key,
                    addr: pc.conn.remote_address(),
                    generation: pc.info.generation,
                };
                targets.insert(pc.info.key, target);
            }
            pool.live.values().map(|(c, _)| c.clone()).collect()
        };
        for conn in &others {
            conn.close(CLOSE_CERT_RENEWED.into(), CERT_RENEWED_REASON);
        }
        let peers = targets.len();
        self.redial(targets.into_values().collect());
        info!(
            connections = others.len(),
            peers, "presenting the renewed certificate; open connections closed, peers redialled"
        );
        Ok(others.len())
    }

    /// Dials every target in the background, as many at once as dial slots allow.
    fn redial(&self, targets: Vec<Target>) {
        let this = self.clone();
        self.spawn(async move {
            for target in targets {
                let Ok(permit) = this.inner.dial_permits.clone().acquire_owned().await else {
                    return;
                };
                let dialer = this.clone();
                this.spawn(async move {
                    let _permit = permit;
                    if let Err(e) = dialer.connect(target.addr, Some(target.key)).await {
                        tracing::debug!(peer = %target.key.short(), error = %e, "redial after renewal failed");
                    }
                });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_whole_seconds() {
        // Valid through second 100: expired from 101.000 on.
        assert!(!is_expired(100, 100_999));
        assert!(is_expired(100, 101_000));
        assert_eq!(sleep_before_check(100, 100_250), Duration::from_millis(750));
        assert_eq!(sleep_before_check(100, 101_000), Duration::ZERO);
        assert_eq!(sleep_before_check(100, 200_000), Duration::ZERO);
        assert_eq!(sleep_before_check(u64::MAX, 0), EXPIRY_RECHECK);
        assert_eq!(sleep_before_check(10_000, 0), EXPIRY_RECHECK);
    }
}
