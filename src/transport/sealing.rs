//! The transport's side of sealed datagrams (`sealed`): sending sealed, keeping the session
//! key of each handshake, and opening what the socket diverts (`demux`) for the inboxes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::debug;

use super::{Channel, Inbound, PeerInfo, Stats, Target, Transport, demux, frame, sealed, tls};
use crate::identity::PublicKey;

impl Transport {
    /// The session keys (a short lock, never held across an await).
    pub(super) fn sealer(&self) -> std::sync::MutexGuard<'_, sealed::Sealer> {
        self.inner.sealer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `frame` to `to` sealed, if a session key for that run of it is held; false if
    /// not (the caller then uses or dials a connection).
    pub(super) fn send_sealed(&self, to: Target, frame: &[u8]) -> bool {
        let Some(datagram) = self
            .sealer()
            .seal(&to.key, to.generation, frame, crate::time::unix_ms())
        else {
            return false;
        };
        let stats = &self.inner.stats;
        if demux::Demux::send_to(&*self.inner.socket, to.addr, &datagram) {
            // As for a datagram on a live connection: the link works (again, after a block).
            self.lock().unreachable.reached(&to.key);
            stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
            stats.datagrams_sealed.fetch_add(1, Ordering::Relaxed);
            stats
                .datagram_bytes_sent
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            stats
                .sealed_udp_bytes
                .0
                .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        } else {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Keeps the session key of a handshake with a peer that takes sealed datagrams.
    pub(super) fn keep_session_key(&self, conn: &quinn::Connection, info: &PeerInfo, dialled: bool) {
        let sealed = conn
            .handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .is_some_and(|d| d.protocol.as_deref() == Some(tls::ALPN_SEALED));
        if !sealed {
            return;
        }
        let mut material = [0u8; sealed::EXPORT_LEN];
        if conn
            .export_keying_material(&mut material, sealed::EXPORT_LABEL, &[])
            .is_err()
        {
            return;
        }
        let peer = sealed::SealPeer {
            key: info.key,
            addr: conn.remote_address(),
            name: Arc::from(info.name.as_str()),
            generation: info.generation,
            not_after: info.not_after,
        };
        self.sealer()
            .insert(peer, &material, dialled, conn.rtt(), crate::time::unix_ms());
    }
}

/// Where received datagrams go, by channel.
pub(super) struct Inboxes {
    /// SWIM, to the membership task.
    pub(super) membership: mpsc::Sender<(Channel, Inbound)>,
    /// In-sync probes, to replication, once it has started.
    pub(super) probes: std::sync::OnceLock<mpsc::Sender<Inbound>>,
}

impl Inboxes {
    /// Hands `msg` to its task without waiting; false when that task's queue is full (or
    /// gone), and the datagram is dropped as a lossy network would.
    pub(super) fn deliver(&self, channel: Channel, msg: Inbound) -> bool {
        match channel {
            Channel::Swim | Channel::SwimCompact => self.membership.try_send((channel, msg)).is_ok(),
            Channel::SyncProbe => self.probes.get().is_some_and(|p| p.try_send(msg).is_ok()),
        }
    }
}

/// Opens the sealed datagrams the socket diverts (see `demux`) and hands them on.
pub(super) struct SealedReceiver {
    pub(super) sealer: Arc<Mutex<sealed::Sealer>>,
    pub(super) blocked: Arc<RwLock<HashSet<PublicKey>>>,
    pub(super) inboxes: Arc<Inboxes>,
    pub(super) stats: Arc<Stats>,
}

impl demux::SealedSink for SealedReceiver {
    fn on_datagram(&self, _from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        let stats = &self.stats;
        stats
            .sealed_udp_bytes
            .1
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        let mut sealer = self.sealer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = sealed::parse_unknown(datagram) {
            // Unauthenticated, but naming a key id only its two holders have seen: at worst an
            // on-path attacker makes us dial again.
            sealer.forget_key(&id);
            return None;
        }
        let opened = match sealer.open(datagram, crate::time::unix_ms()) {
            Ok(opened) => opened,
            Err(e) => {
                stats.sealed_refused.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "sealed datagram refused");
                // Shorter than any sealed datagram, so answering cannot amplify a spoofed one.
                return match e {
                    sealed::SealError::UnknownKey(id) => Some(sealed::unknown_reply(&id).to_vec()),
                    _ => None,
                };
            }
        };
        drop(sealer);
        if self
            .blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&opened.from)
        {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        stats.datagrams_received.fetch_add(1, Ordering::Relaxed);
        stats
            .datagram_bytes_received
            .fetch_add(opened.frame.len() as u64, Ordering::Relaxed);
        let Some((channel, data)) = frame::decode(Bytes::from(opened.frame)) else {
            stats.datagrams_malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let msg = Inbound {
            from: opened.from,
            name: opened.name,
            data,
        };
        if !self.inboxes.deliver(channel, msg) {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
        None
    }
}
