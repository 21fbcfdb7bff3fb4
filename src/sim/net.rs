//! The simulated network: per-link latency, loss and bandwidth, partitions, one-way cuts,
//! and a byte count per sender.
//!
//! A mesh of 10,000 nodes has 10^8 directed links, too many to store. A link's base latency
//! is therefore a hash of the run's seed and its two ends (the same for the whole run, no
//! storage), and only links with a datagram still being transmitted are kept, for bandwidth
//! queueing ([`Network::prune`] forgets idle ones, which changes nothing).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use rand::RngExt;
use rand::rngs::SmallRng;

/// Bytes a datagram costs on the wire beyond its payload: IPv4 (20) + UDP (8) + what sealing
/// adds (mark, key id, counter and tag: `transport::sealed::OVERHEAD`). Agents send SWIM
/// packets sealed once a handshake gave them a key (a QUIC datagram on a connection costs one
/// byte less); the handshake itself is not modelled.
pub const DATAGRAM_OVERHEAD: u64 = 20 + 8 + crate::transport::sealed::OVERHEAD as u64;
/// Least one-way latency of a link.
pub const BASE_LATENCY_MIN: Duration = Duration::from_millis(1);
/// Greatest one-way latency of a link (before jitter).
pub const BASE_LATENCY_MAX: Duration = Duration::from_millis(5);
/// Each datagram's latency is its link's base plus up to this much, drawn per datagram.
pub const JITTER_MAX: Duration = Duration::from_millis(1);
/// Bandwidth of every link by default: 10 Mbit/s, a modest WAN link. A datagram is delivered
/// no sooner than size/bandwidth after the link's previous delivery.
pub const DEFAULT_BANDWIDTH: u64 = 10_000_000 / 8;

/// Per-link behaviour and global impairments.
pub struct Network {
    /// Seed of the link latencies.
    seed: u64,
    /// When each busy directed link's previous datagram finishes arriving.
    busy_until: HashMap<(u32, u32), Duration>,
    /// Probability that any datagram is lost.
    pub loss: f64,
    /// Bytes per second of every link.
    pub bandwidth: u64,
    /// Side of each node; nodes on different sides cannot talk. Empty: no partition.
    side: Vec<u8>,
    /// Directed cuts: datagrams from `.0` to `.1` are dropped (the reverse is delivered).
    one_way: BTreeSet<(u32, u32)>,
    /// Bytes sent by each node (payload plus [`DATAGRAM_OVERHEAD`] per datagram).
    sent: Vec<u64>,
    /// Datagrams dropped by loss, partitions and cuts.
    pub dropped: u64,
}

impl Network {
    /// A network of `n` nodes, all reachable, no loss.
    pub fn new(n: usize, seed: u64) -> Network {
        Network {
            seed,
            busy_until: HashMap::new(),
            loss: 0.0,
            bandwidth: DEFAULT_BANDWIDTH,
            side: vec![0; n],
            one_way: BTreeSet::new(),
            sent: vec![0; n],
            dropped: 0,
        }
    }

    /// Makes room for node `i` (nodes added after the start).
    pub fn grow(&mut self, n: usize) {
        if self.side.len() < n {
            self.side.resize(n, 0);
            self.sent.resize(n, 0);
        }
    }

    /// Splits the nodes: `side[i]` for node `i`; nodes on different sides cannot talk.
    pub fn partition(&mut self, side: Vec<u8>) {
        assert_eq!(side.len(), self.side.len(), "sim: one side per node");
        self.side = side;
    }

    /// Removes any partition.
    pub fn heal(&mut self) {
        self.side.iter_mut().for_each(|s| *s = 0);
    }

    /// Drops datagrams from `from` to `to` (and not the reverse) until [`Network::restore`].
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.one_way.insert((from as u32, to as u32));
    }

    /// Removes every one-way cut.
    pub fn restore(&mut self) {
        self.one_way.clear();
    }

    /// Whether `from` can currently reach `to`.
    pub fn reachable(&self, from: usize, to: usize) -> bool {
        self.side[from] == self.side[to] && !self.one_way.contains(&(from as u32, to as u32))
    }

    /// Bytes sent by each node so far.
    pub fn sent(&self) -> &[u64] {
        &self.sent
    }

    /// Counts a datagram of `len` payload bytes sent by `from` and returns when it arrives at
    /// `to`, or `None` if it is lost. The sender pays for lost datagrams too.
    pub fn send(&mut self, rng: &mut SmallRng, now: Duration, from: usize, to: usize, len: usize) -> Option<Duration> {
        let wire = len as u64 + DATAGRAM_OVERHEAD;
        self.sent[from] += wire;
        // Draw the loss even when the link is cut, so a partition does not shift the rng
        // stream of everything after it.
        let lost = self.loss > 0.0 && rng.random::<f64>() < self.loss;
        let jitter = JITTER_MAX.mul_f64(rng.random::<f64>());
        if lost || !self.reachable(from, to) {
            self.dropped += 1;
            return None;
        }
        let bandwidth = self.bandwidth.max(1);
        let base = self.base_latency(from, to);
        let busy = self.busy_until.entry((from as u32, to as u32)).or_default();
        let transmit = Duration::from_nanos(wire * 1_000_000_000 / bandwidth);
        let arrive = (now + base + jitter).max(*busy) + transmit;
        *busy = arrive;
        Some(arrive)
    }

    /// Base one-way latency of the link `from` → `to`: fixed for the run.
    pub fn base_latency(&self, from: usize, to: usize) -> Duration {
        let h = splitmix64(self.seed ^ ((from as u64) << 32 | to as u64));
        let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
        BASE_LATENCY_MIN + (BASE_LATENCY_MAX - BASE_LATENCY_MIN).mul_f64(unit)
    }

    /// Forgets links whose last datagram has arrived by `now` (they queue nothing).
    pub fn prune(&mut self, now: Duration) {
        self.busy_until.retain(|_, t| *t > now);
    }

    /// Counts bytes `from` sent over a stream to `to` (anti-entropy), returning when they
    /// arrive, or `None` if `to` is unreachable. Streams are reliable: no loss.
    pub fn send_stream(
        &mut self,
        rng: &mut SmallRng,
        now: Duration,
        from: usize,
        to: usize,
        len: usize,
    ) -> Option<Duration> {
        if !self.reachable(from, to) {
            return None;
        }
        let saved = self.loss;
        self.loss = 0.0;
        let at = self.send(rng, now, from, to, len);
        self.loss = saved;
        at
    }
}

/// A well-mixed 64-bit hash (splitmix64's finaliser).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
