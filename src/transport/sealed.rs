//! Sealed datagrams: membership packets between admitted peers without holding a connection.
//!
//! SWIM contacts every member in turn, so with one QUIC connection per contact a node either
//! holds a connection to every member (memory grows with N) or pays a handshake (about 7 KB)
//! whenever a contact comes after the idle timeout: at 200 agents that was most of the idle
//! traffic. Instead, every completed handshake between two admitted peers also yields a
//! session key (TLS keying-material export, RFC 8446 §7.5, over the handshake both sides just
//! authenticated), and both sides keep it after the connection closes. Membership datagrams to
//! a peer with a key go out on the same UDP socket, sealed with ChaCha20-Poly1305; the peer
//! opens them only with a key from its own handshake with us. So a sealed datagram proves what
//! a QUIC datagram proves: the sender held an admitted key in a handshake with this run of the
//! receiver. A counter in every datagram and a sliding window at the receiver refuse replays.
//!
//! Wire form: [`SEALED_MARK`], the key id (8 bytes, exported with the key), the sender's
//! counter (8 bytes, big-endian), then the frame (channel byte and payload) sealed, with the
//! 16-byte tag. The first byte has QUIC's fixed bit clear, and agents do not grease that bit,
//! so the socket tells sealed datagrams from QUIC packets by it (`demux`).
//!
//! The side that completes a handshake first could seal before the other side has taken the
//! key, so a key is used only [`KEY_SETTLE`] after the handshake; until then the connection,
//! open anyway, carries the datagrams. A receiver that no longer holds a key (it evicted the
//! peer, or something went wrong) answers with [`UNKNOWN_MARK`] and the key id, shorter than
//! what it answers; the sender then drops that key and dials again. A receiver that restarted
//! is a new run: membership learns its new generation, and senders dial it for a new key.
//! This module is sans-IO: it holds the keys and turns bytes into bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use super::expiry;
use crate::identity::PublicKey;

/// First byte of a sealed datagram. QUIC sets bit 0x40 (the fixed bit) in every packet it
/// sends when greasing is off, which the transport ensures.
pub const SEALED_MARK: u8 = 0x20;
/// First byte of the reply "I hold no key with this id".
pub const UNKNOWN_MARK: u8 = 0x21;
/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;
/// Bytes before the sealed frame: mark, key id, counter.
pub const HEADER_LEN: usize = 1 + KEY_ID_LEN + 8;
/// Bytes a sealed datagram adds to its frame: header and tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Bytes of the authentication tag.
const TAG_LEN: usize = 16;
/// Bytes of an [`UNKNOWN_MARK`] reply.
pub const UNKNOWN_LEN: usize = 1 + KEY_ID_LEN;
/// Peers whose keys are held; beyond this the least recently used is forgotten (its next
/// contact costs a handshake again). Far above any mesh this is meant for, so that a
/// node keeps a key for every member: about 200 bytes each.
pub const MAX_SEALED_PEERS: usize = 65_536;
/// Keys held per peer: both sides may dial at once (and again, after a renewal), and the two
/// may take the keys in different orders; the newest four cover every key the peer may still
/// use.
pub const KEYS_PER_PEER: usize = 4;
/// How long after its handshake a key is first used to seal: time for the other side, which
/// may complete the handshake later, to take the key too.
pub const KEY_SETTLE: Duration = Duration::from_secs(1);
/// How far behind the highest counter seen a datagram may arrive and still be accepted once
/// (reordering on the path); older ones are refused as possible replays.
pub const REPLAY_WINDOW: u64 = 128;
/// Label of the TLS exporter that derives a connection's session key (RFC 5705 / 8446).
pub const EXPORT_LABEL: &[u8] = b"shoal v1 sealed datagrams";
/// Bytes exported per handshake: the key, then its id.
pub const EXPORT_LEN: usize = 32 + KEY_ID_LEN;

/// Why a datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than a header and a tag, or not marked as sealed.
    #[error("not a sealed datagram")]
    Malformed,
    /// No key with this id is held (the sender should dial again).
    #[error("no key with this id")]
    UnknownKey([u8; KEY_ID_LEN]),
    /// The counter was seen before or is older than the window.
    #[error("replayed or too old")]
    Replayed,
    /// The tag does not verify: forged, corrupted, or sealed under another key.
    #[error("does not open")]
    Forged,
    /// The peer's certificate expired (its keys go at the next [`Sealer::take_expired`]).
    #[error("the peer's certificate expired")]
    Expired,
}

/// What a handshake tells the sealer about the peer.
#[derive(Debug, Clone)]
pub struct SealPeer {
    /// Its node key.
    pub key: PublicKey,
    /// Its cluster address: where the handshake came from or went to (one socket does both).
    pub addr: SocketAddr,
    /// Its name, from its certificate.
    pub name: Arc<str>,
    /// Its identity generation.
    pub generation: u64,
    /// End of its certificate's validity (Unix seconds, inclusive), if admitted by one.
    pub not_after: Option<u64>,
}

/// A datagram opened: who sent it, and the frame inside.
#[derive(Debug)]
pub struct Opened {
    /// Sender key.
    pub from: PublicKey,
    /// Sender name.
    pub name: Arc<str>,
    /// The frame: channel byte and payload.
    pub frame: Vec<u8>,
}

/// Counters already accepted under one key: the highest, and a bitmap of the
/// [`REPLAY_WINDOW`] below it (bit i set: `highest - i` was accepted).
#[derive(Debug, Default, Clone, Copy)]
struct Replay {
    highest: Option<u64>,
    seen: u128,
}

impl Replay {
    /// Whether `counter` would be new.
    fn fresh(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if counter > h => true,
            Some(h) => {
                let behind = h - counter;
                behind < REPLAY_WINDOW && self.seen & (1u128 << behind) == 0
            }
        }
    }

    /// Records `counter` as accepted; call only after [`Replay::fresh`] and authentication.
    fn accept(&mut self, counter: u64) {
        match self.highest {
            Some(h) if counter <= h => self.seen |= 1u128 << (h - counter),
            Some(h) => {
                let ahead = counter - h;
                self.seen = if ahead >= REPLAY_WINDOW { 0 } else { self.seen << ahead };
                self.seen |= 1;
                self.highest = Some(counter);
            }
            None => {
                self.seen = 1;
                self.highest = Some(counter);
            }
        }
    }
}

struct SessionKey {
    id: [u8; KEY_ID_LEN],
    /// Unix ms of the handshake, as seen here.
    born_ms: u64,
    aead: LessSafeKey,
    /// Nonce prefix of what we send; the peer's is the other one, so the two directions of
    /// one key never share a nonce.
    send_prefix: u8,
    sent: u64,
    replay: Replay,
}

struct Peer {
    info: SealPeer,
    /// Oldest first.
    keys: Vec<SessionKey>,
    /// Round-trip time of the last connection to it.
    rtt: Duration,
    /// For least-recently-used eviction.
    used: u64,
}

/// The session keys of every peer this run completed a handshake with. Owned by the
/// transport behind a mutex; every method is short and never blocks.
#[derive(Default)]
pub struct Sealer {
    peers: HashMap<PublicKey, Peer>,
    by_id: HashMap<[u8; KEY_ID_LEN], PublicKey>,
    clock: u64,
}

impl Sealer {
    /// Keeps the session key `material` ([`EXPORT_LEN`] bytes exported from a handshake with
    /// `peer` completed at Unix time `now_ms`; `dialled` says whether we were the client). A
    /// newer generation of the peer replaces every key of the older one.
    pub fn insert(&mut self, peer: SealPeer, material: &[u8; EXPORT_LEN], dialled: bool, rtt: Duration, now_ms: u64) {
        let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, &material[..32]) else {
            return;
        };
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&material[32..]);
        self.clock += 1;
        if let Some(old) = self.peers.get(&peer.key)
            && old.info.generation < peer.generation
        {
            self.remove(&peer.key);
        }
        if !self.peers.contains_key(&peer.key) && self.peers.len() >= MAX_SEALED_PEERS {
            self.evict_one();
        }
        let key = SessionKey {
            id,
            born_ms: now_ms,
            aead: LessSafeKey::new(unbound),
            send_prefix: u8::from(!dialled),
            sent: 0,
            replay: Replay::default(),
        };
        let clock = self.clock;
        let entry = self.peers.entry(peer.key).or_insert_with(|| Peer {
            info: peer.clone(),
            keys: Vec::new(),
            rtt,
            used: clock,
        });
        if entry.info.generation > peer.generation {
            // A handshake with an earlier run finishing late; its key is of no use.
            return;
        }
        entry.info = peer.clone();
        entry.rtt = rtt;
        entry.used = clock;
        if entry.keys.iter().any(|k| k.id == id) {
            return;
        }
        entry.keys.push(key);
        if entry.keys.len() > KEYS_PER_PEER {
            let gone = entry.keys.remove(0);
            self.by_id.remove(&gone.id);
        }
        self.by_id.insert(id, peer.key);
    }

    fn evict_one(&mut self) {
        if let Some(key) = self.peers.iter().min_by_key(|(_, p)| p.used).map(|(k, _)| *k) {
            self.remove(&key);
        }
    }

    /// Forgets every key of `key`.
    pub fn remove(&mut self, key: &PublicKey) {
        if let Some(peer) = self.peers.remove(key) {
            for k in peer.keys {
                self.by_id.remove(&k.id);
            }
        }
    }

    /// Forgets the key with this id (the peer said it no longer holds it).
    pub fn forget_key(&mut self, id: &[u8; KEY_ID_LEN]) {
        let Some(key) = self.by_id.remove(id) else { return };
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.keys.retain(|k| &k.id != id);
            if peer.keys.is_empty() {
                self.peers.remove(&key);
            }
        }
    }

    /// Whether a key for `key` at `generation` or later is held (settled or not): no need to
    /// dial it for one.
    pub fn has_key(&self, key: &PublicKey, generation: u64) -> bool {
        self.peers
            .get(key)
            .is_some_and(|p| p.info.generation >= generation && !p.keys.is_empty())
    }

    /// Seals `frame` for `to` (at `generation` or a later run) with the newest settled key
    /// (see [`KEY_SETTLE`]), at Unix time `now_ms`. `None` when there is none, or the peer's
    /// certificate has expired (the caller then uses a connection, or dials, and admission
    /// sees whatever certificate the peer has now).
    pub fn seal(&mut self, to: &PublicKey, generation: u64, frame: &[u8], now_ms: u64) -> Option<Vec<u8>> {
        self.clock += 1;
        let peer = self.peers.get_mut(to)?;
        if peer.info.generation < generation {
            return None;
        }
        if peer.info.not_after.is_some_and(|n| expiry::is_expired(n, now_ms)) {
            return None;
        }
        peer.used = self.clock;
        let settle = KEY_SETTLE.as_millis() as u64;
        let key = peer
            .keys
            .iter_mut()
            .rev()
            .find(|k| k.born_ms.saturating_add(settle) <= now_ms)?;
        let counter = key.sent;
        key.sent += 1;
        let mut out = Vec::with_capacity(OVERHEAD + frame.len());
        out.push(SEALED_MARK);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&counter.to_be_bytes());
        let mut body = frame.to_vec();
        key.aead
            .seal_in_place_append_tag(nonce(key.send_prefix, counter), Aad::from(&out[..]), &mut body)
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// Opens a sealed datagram at Unix time `now_ms`. Nothing changes unless it opens and is
    /// fresh.
    pub fn open(&mut self, datagram: &[u8], now_ms: u64) -> Result<Opened, SealError> {
        if datagram.len() < OVERHEAD || datagram[0] != SEALED_MARK {
            return Err(SealError::Malformed);
        }
        let (header, sealed) = datagram.split_at(HEADER_LEN);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&header[1..1 + KEY_ID_LEN]);
        let mut counter_bytes = [0u8; 8];
        counter_bytes.copy_from_slice(&header[1 + KEY_ID_LEN..]);
        let counter = u64::from_be_bytes(counter_bytes);
        let from = *self.by_id.get(&id).ok_or(SealError::UnknownKey(id))?;
        self.clock += 1;
        let clock = self.clock;
        let peer = self.peers.get_mut(&from).ok_or(SealError::UnknownKey(id))?;
        if peer.info.not_after.is_some_and(|n| expiry::is_expired(n, now_ms)) {
            return Err(SealError::Expired);
        }
        let key = peer
            .keys
            .iter_mut()
            .find(|k| k.id == id)
            .ok_or(SealError::UnknownKey(id))?;
        if !key.replay.fresh(counter) {
            return Err(SealError::Replayed);
        }
        let mut body = sealed.to_vec();
        let plain_len = key
            .aead
            .open_in_place(nonce(1 - key.send_prefix, counter), Aad::from(header), &mut body)
            .map_err(|_| SealError::Forged)?
            .len();
        key.replay.accept(counter);
        peer.used = clock;
        body.truncate(plain_len);
        Ok(Opened {
            from,
            name: peer.info.name.clone(),
            frame: body,
        })
    }

    /// Removes and returns the peers whose certificate has expired at Unix time `now_ms`.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<SealPeer> {
        let expired: Vec<SealPeer> = self
            .peers
            .values()
            .filter(|p| p.info.not_after.is_some_and(|n| expiry::is_expired(n, now_ms)))
            .map(|p| p.info.clone())
            .collect();
        for p in &expired {
            self.remove(&p.key);
        }
        expired
    }

    /// Every peer with a key: whom to show a renewed certificate.
    pub fn peers(&self) -> Vec<SealPeer> {
        self.peers.values().map(|p| p.info.clone()).collect()
    }

    /// Peers with a key and the round-trip time of their last connection.
    pub fn links(&self) -> impl Iterator<Item = (PublicKey, Duration)> + '_ {
        self.peers.iter().map(|(k, p)| (*k, p.rtt))
    }

    /// Updates the round-trip time of `key` (its connection is closing).
    pub fn set_rtt(&mut self, key: &PublicKey, rtt: Duration) {
        if let Some(p) = self.peers.get_mut(key) {
            p.rtt = rtt;
        }
    }

    /// Number of peers with a key.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer has a key.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// The reply that tells a sender we hold no key `id`.
pub fn unknown_reply(id: &[u8; KEY_ID_LEN]) -> [u8; UNKNOWN_LEN] {
    let mut out = [UNKNOWN_MARK; UNKNOWN_LEN];
    out[1..].copy_from_slice(id);
    out
}

/// The key id of an [`UNKNOWN_MARK`] reply.
pub fn parse_unknown(datagram: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    if datagram.len() != UNKNOWN_LEN || datagram[0] != UNKNOWN_MARK {
        return None;
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&datagram[1..]);
    Some(id)
}

/// Whether a datagram is one of ours rather than a QUIC packet (fixed bit clear).
pub fn is_ours(first_byte: u8) -> bool {
    first_byte == SEALED_MARK || first_byte == UNKNOWN_MARK
}

fn nonce(prefix: u8, counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = prefix;
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn peer(byte: u8, generation: u64) -> SealPeer {
        SealPeer {
            key: PublicKey([byte; 32]),
            addr: SocketAddr::from(([127, 0, 0, byte], 7946)),
            name: Arc::from(format!("n{byte}")),
            generation,
            not_after: None,
        }
    }

    /// Two sealers that completed one handshake: `a` dialled `b`.
    fn pair(material: [u8; EXPORT_LEN]) -> (Sealer, Sealer) {
        let (mut a, mut b) = (Sealer::default(), Sealer::default());
        a.insert(peer(2, 1), &material, true, Duration::ZERO, NOW - 1000);
        b.insert(peer(1, 1), &material, false, Duration::ZERO, NOW - 1000);
        (a, b)
    }

    #[test]
    fn both_directions_open_and_name_the_sender() {
        let (mut a, mut b) = pair([7; EXPORT_LEN]);
        let d = a.seal(&PublicKey([2; 32]), 1, b"\x02hello", NOW).unwrap();
        assert_eq!(d.len(), OVERHEAD + 6);
        let o = b.open(&d, NOW).unwrap();
        assert_eq!(
            (o.from, &*o.name, &o.frame[..]),
            (PublicKey([1; 32]), "n1", &b"\x02hello"[..])
        );
        let back = b.seal(&PublicKey([1; 32]), 0, b"\x02re", NOW).unwrap();
        assert_eq!(a.open(&back, NOW).unwrap().frame, b"\x02re");
        // A datagram reflected back to its sender does not open: each direction has its nonces.
        let reflected = a.seal(&PublicKey([2; 32]), 1, b"\x02again", NOW).unwrap();
        assert_eq!(a.open(&reflected, NOW).unwrap_err(), SealError::Forged);
    }

    #[test]
    fn replays_forgeries_and_strangers_are_refused_and_change_nothing() {
        let (mut a, mut b) = pair([7; EXPORT_LEN]);
        let to_b = PublicKey([2; 32]);
        let first = a.seal(&to_b, 1, b"\x02one", NOW).unwrap();
        b.open(&first, NOW).unwrap();
        assert_eq!(b.open(&first, NOW).unwrap_err(), SealError::Replayed);
        let mut forged = a.seal(&to_b, 1, b"\x02two", NOW).unwrap();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(b.open(&forged, NOW).unwrap_err(), SealError::Forged);
        // The forgery did not burn the counter: the genuine datagram still opens.
        forged[last] ^= 1;
        assert!(b.open(&forged, NOW).is_ok());
        // A key from another handshake (an outsider's) is unknown.
        let (mut x, _) = pair([9; EXPORT_LEN]);
        let stranger = x.seal(&to_b, 1, b"\x02x", NOW).unwrap();
        assert!(matches!(b.open(&stranger, NOW), Err(SealError::UnknownKey(_))));
        assert_eq!(b.open(b"\x20short", NOW).unwrap_err(), SealError::Malformed);
        assert_eq!(b.open(&[0x41; 40], NOW).unwrap_err(), SealError::Malformed);
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once() {
        let (mut a, mut b) = pair([7; EXPORT_LEN]);
        let to_b = PublicKey([2; 32]);
        let ds: Vec<_> = (0..200).map(|_| a.seal(&to_b, 1, b"\x02x", NOW).unwrap()).collect();
        b.open(&ds[150], NOW).unwrap();
        b.open(&ds[100], NOW).unwrap();
        assert_eq!(b.open(&ds[100], NOW).unwrap_err(), SealError::Replayed);
        // 150 - 10 is past the window.
        assert_eq!(b.open(&ds[10], NOW).unwrap_err(), SealError::Replayed);
        b.open(&ds[199], NOW).unwrap();
        b.open(&ds[151], NOW).unwrap();
    }

    #[test]
    fn a_fresh_key_waits_for_the_other_side_and_an_older_settled_one_serves_meanwhile() {
        let mut a = Sealer::default();
        let to_b = PublicKey([2; 32]);
        a.insert(peer(2, 1), &[1; EXPORT_LEN], true, Duration::ZERO, NOW);
        assert!(a.has_key(&to_b, 1));
        assert!(
            a.seal(&to_b, 1, b"\x02x", NOW + 999).is_none(),
            "not settled: the connection carries it"
        );
        let d = a.seal(&to_b, 1, b"\x02x", NOW + 1000).unwrap();
        assert_eq!(&d[1..1 + KEY_ID_LEN], &[1; KEY_ID_LEN]);
        a.insert(peer(2, 1), &[2; EXPORT_LEN], true, Duration::ZERO, NOW + 1000);
        let d = a.seal(&to_b, 1, b"\x02x", NOW + 1500).unwrap();
        assert_eq!(
            &d[1..1 + KEY_ID_LEN],
            &[1; KEY_ID_LEN],
            "the settled key until the new one is"
        );
        let d = a.seal(&to_b, 1, b"\x02x", NOW + 2000).unwrap();
        assert_eq!(&d[1..1 + KEY_ID_LEN], &[2; KEY_ID_LEN]);
    }

    #[test]
    fn a_newer_run_replaces_keys_and_an_older_one_is_not_sealed_for() {
        let (mut a, _) = pair([7; EXPORT_LEN]);
        let to_b = PublicKey([2; 32]);
        // Membership knows a later run of b: our key is for the earlier one.
        assert!(a.seal(&to_b, 2, b"\x02x", NOW).is_none());
        a.insert(peer(2, 2), &[8; EXPORT_LEN], true, Duration::ZERO, NOW - 1000);
        assert!(a.has_key(&to_b, 2));
        assert_eq!(a.by_id.len(), 1, "the old run's key is gone");
        // A late handshake with the old run adds nothing.
        a.insert(peer(2, 1), &[9; EXPORT_LEN], true, Duration::ZERO, NOW - 1000);
        assert_eq!(a.by_id.len(), 1);
    }

    #[test]
    fn at_most_two_keys_per_peer_and_forgetting_one_keeps_the_other() {
        let (mut a, _) = pair([1; EXPORT_LEN]);
        let to_b = PublicKey([2; 32]);
        a.insert(peer(2, 1), &[2; EXPORT_LEN], false, Duration::ZERO, NOW - 1000);
        a.insert(peer(2, 1), &[3; EXPORT_LEN], true, Duration::ZERO, NOW - 1000);
        a.insert(peer(2, 1), &[4; EXPORT_LEN], true, Duration::ZERO, NOW - 1000);
        a.insert(peer(2, 1), &[5; EXPORT_LEN], true, Duration::ZERO, NOW - 1000);
        assert_eq!(a.by_id.len(), KEYS_PER_PEER, "the first key is gone");
        assert!(!a.by_id.contains_key(&[1; KEY_ID_LEN]));
        for gone in [5, 4, 3] {
            a.forget_key(&[gone; KEY_ID_LEN]);
        }
        let d = a.seal(&to_b, 1, b"\x02x", NOW).unwrap();
        assert_eq!(&d[1..1 + KEY_ID_LEN], &[2; KEY_ID_LEN]);
        a.forget_key(&[2; KEY_ID_LEN]);
        assert!(!a.has_key(&to_b, 1));
        assert!(a.is_empty());
    }

    #[test]
    fn an_expired_certificate_ends_sealing_both_ways() {
        let material = [7; EXPORT_LEN];
        let mut a = Sealer::default();
        let mut b = Sealer::default();
        let mut expiring = peer(2, 1);
        expiring.not_after = Some(NOW / 1000);
        a.insert(expiring, &material, true, Duration::ZERO, NOW - 1000);
        b.insert(peer(1, 1), &material, false, Duration::ZERO, NOW - 1000);
        let to_b = PublicKey([2; 32]);
        assert!(a.seal(&to_b, 1, b"\x02x", NOW).is_some());
        assert!(a.seal(&to_b, 1, b"\x02x", NOW + 1000).is_none(), "past not_after");
        assert!(a.take_expired(NOW).is_empty());
        assert_eq!(a.take_expired(NOW + 1000).len(), 1);
        assert!(a.is_empty());
        // And what an expired peer sends is refused.
        let mut b_expiring = Sealer::default();
        let mut one = peer(1, 1);
        one.not_after = Some(NOW / 1000);
        b_expiring.insert(one, &material, false, Duration::ZERO, NOW - 1000);
        let (mut a2, _) = pair(material);
        let d = a2.seal(&to_b, 1, b"\x02x", NOW).unwrap();
        assert_eq!(b_expiring.open(&d, NOW + 1000).unwrap_err(), SealError::Expired);
        // A renewal's handshake (same run, later certificate) makes it good again.
        let mut renewed = peer(1, 1);
        renewed.not_after = Some(NOW / 1000 + 3600);
        b_expiring.insert(renewed, &[8; EXPORT_LEN], false, Duration::ZERO, NOW - 1000);
        assert!(b_expiring.open(&d, NOW + 1000).is_ok());
    }

    #[test]
    fn unknown_replies_roundtrip_and_are_smaller_than_any_sealed_datagram() {
        let id = [5; KEY_ID_LEN];
        assert_eq!(parse_unknown(&unknown_reply(&id)), Some(id));
        assert_eq!(parse_unknown(b"\x21short"), None);
        const { assert!(UNKNOWN_LEN < OVERHEAD) };
        assert!(is_ours(SEALED_MARK) && is_ours(UNKNOWN_MARK));
        // Every QUIC packet with the fixed bit set is left to QUIC.
        assert!((0..=255u8).filter(|b| b & 0x40 != 0).all(|b| !is_ours(b)));
    }
}
