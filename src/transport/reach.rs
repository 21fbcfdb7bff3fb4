//! Peers this node failed to reach directly: the failed links a node reports in its health
//! report. A member the mesh holds alive but that this node cannot dial is a broken link
//! (a firewall, a one-way route), not a dead node; SWIM's indirect probes keep it alive, so
//! without this record nobody would see the link is down.

use std::collections::HashMap;

use crate::identity::PublicKey;

/// Peers remembered as unreachable at once. A mesh where more links than this fail from one
/// node has a problem that the first 256 already show; the oldest entry makes room.
pub const MAX_UNREACHABLE_TRACKED: usize = 256;

/// Peers whose last dial failed, with no connection to them since.
#[derive(Debug, Default)]
pub(crate) struct Unreachable {
    /// Peer → order of its failure (to evict the oldest).
    since: HashMap<PublicKey, u64>,
    next: u64,
}

impl Unreachable {
    /// A dial to `key` failed (or its traffic is blocked).
    pub fn failed(&mut self, key: PublicKey) {
        if self.since.contains_key(&key) {
            return;
        }
        if self.since.len() >= MAX_UNREACHABLE_TRACKED
            && let Some(oldest) = self.since.iter().min_by_key(|(_, n)| **n).map(|(k, _)| *k)
        {
            self.since.remove(&oldest);
        }
        self.next += 1;
        self.since.insert(key, self.next);
    }

    /// A connection to `key` was established.
    pub fn reached(&mut self, key: &PublicKey) {
        self.since.remove(key);
    }

    /// The peers, sorted by key.
    pub fn keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.since.keys().copied().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    #[test]
    fn a_connection_clears_a_failure_and_the_oldest_failure_makes_room() {
        let keys: Vec<PublicKey> = (0..=MAX_UNREACHABLE_TRACKED)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                SecretKey::from_seed(seed).public()
            })
            .collect();
        let mut u = Unreachable::default();
        u.failed(keys[0]);
        u.failed(keys[0]);
        assert_eq!(u.keys(), vec![keys[0]]);
        u.reached(&keys[0]);
        assert!(u.keys().is_empty());
        for k in &keys {
            u.failed(*k);
        }
        let held = u.keys();
        assert_eq!(held.len(), MAX_UNREACHABLE_TRACKED);
        assert!(!held.contains(&keys[0]), "the oldest was evicted");
        assert!(held.contains(&keys[MAX_UNREACHABLE_TRACKED]));
    }
}
