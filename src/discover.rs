//! Members found through their node records.
//!
//! A join is passed on by gossip a fixed number of times. When many nodes join at once, a few
//! members miss some of those updates, and nothing in SWIM repairs that quickly: the missing
//! member is found when it happens to probe this node (a round over N members takes N probe
//! periods) or through a periodic announce whose reply lists about 20 members. The whole-mesh
//! simulator saw pairs of members unaware of each other for minutes at 100 and 1,000 nodes.
//!
//! Every node publishes a node record (`RecordKind::NodeInfo`: its address and generation),
//! and anti-entropy brings every record to every node at a cost near zero when nothing is
//! missing. So when a node record commits for a member this node's membership does not know
//! at all, and after [`DISCOVERY_GRACE`] it still does not, this node announces itself to it:
//! the member adds this node and its reply teaches this node the member. A member that is down
//! (known, in any state) is left to membership, so a dead node's record revives nothing.
//!
//! [`Discovery`] is the decision, without clock or sockets; [`spawn`] drives it.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use crate::identity::PublicKey;
use crate::membership::{MembershipHandle, NodeId};
use crate::replication::ReplicationHandle;
use crate::replication::item::{ItemKey, RecordKind};
use crate::replication::records::NodeInfo;

/// How long a member whose record arrived may stay unknown before this node announces itself
/// to it: the join update usually arrives with or soon after the record, and an announce then
/// would only cost a packet each way.
pub const DISCOVERY_GRACE: Duration = Duration::from_secs(5);
/// Records waiting for their grace to end. In a join storm of more than this many members the
/// oldest wait is dropped; the next record of that member (or a probe) finds it.
pub const MAX_PENDING_DISCOVERIES: usize = 1024;
/// How often the waiting records are looked at.
pub const DISCOVERY_TICK: Duration = Duration::from_secs(1);

/// Members whose node record arrived, waiting for their grace to end.
#[derive(Debug, Default)]
pub struct Discovery {
    pending: VecDeque<(Duration, PublicKey)>,
    queued: HashSet<PublicKey>,
}

impl Discovery {
    /// The record of `key` committed at `now`.
    pub fn record_committed(&mut self, key: PublicKey, now: Duration) {
        if !self.queued.insert(key) {
            return;
        }
        if self.pending.len() >= MAX_PENDING_DISCOVERIES
            && let Some((_, old)) = self.pending.pop_front()
        {
            self.queued.remove(&old);
        }
        self.pending.push_back((now + DISCOVERY_GRACE, key));
    }

    /// When the next member's grace ends, if any is waiting.
    pub fn next_due(&self) -> Option<Duration> {
        self.pending.front().map(|(at, _)| *at)
    }

    /// Members whose grace has ended at `now` and that membership still does not know.
    pub fn due(&mut self, now: Duration, known: impl Fn(&PublicKey) -> bool) -> Vec<PublicKey> {
        let mut out = Vec::new();
        while let Some((at, key)) = self.pending.front().copied() {
            if at > now {
                break;
            }
            self.pending.pop_front();
            self.queued.remove(&key);
            if !known(&key) {
                out.push(key);
            }
        }
        out
    }
}

/// Starts the task that announces this node to members found only through their records.
pub fn spawn(
    local: PublicKey,
    membership: MembershipHandle,
    replication: ReplicationHandle,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut commits = replication.subscribe();
        let mut discovery = Discovery::default();
        let mut tick = tokio::time::interval(DISCOVERY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ev = commits.recv() => match ev {
                    Ok(c) => {
                        if let ItemKey::Node { node, kind: RecordKind::NodeInfo } = c.key
                            && node != local
                            && !c.deleted
                        {
                            discovery.record_committed(node, start.elapsed());
                        }
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    if discovery.next_due().is_none_or(|at| at > start.elapsed()) {
                        // Nothing waiting: no walk of the member list.
                        continue;
                    }
                    let snapshot = membership.snapshot();
                    let known: HashSet<PublicKey> = snapshot.members.iter().map(|m| m.id.key).collect();
                    for key in discovery.due(start.elapsed(), |k| known.contains(k)) {
                        let Some(info) = replication.record::<NodeInfo>(&key, RecordKind::NodeInfo) else { continue };
                        debug!(peer = %key.short(), addr = %info.addr, "member known only from its record; announcing to it");
                        membership
                            .announce(NodeId {
                                key,
                                addr: info.addr,
                                generation: info.generation,
                                bump: 0,
                            })
                            .await;
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn key(i: u8) -> PublicKey {
        SecretKey::from_seed([i; 32]).public()
    }

    #[test]
    fn an_unknown_member_is_due_after_its_grace_and_a_known_one_never() {
        let mut d = Discovery::default();
        let t0 = Duration::from_secs(10);
        d.record_committed(key(1), t0);
        d.record_committed(key(2), t0);
        d.record_committed(key(1), t0 + Duration::from_secs(1));
        assert!(
            d.due(t0 + DISCOVERY_GRACE / 2, |_| false).is_empty(),
            "still in its grace"
        );
        let due = d.due(t0 + DISCOVERY_GRACE, |k| *k == key(2));
        assert_eq!(due, vec![key(1)], "once each, and not the member membership knows");
        assert!(d.due(t0 + DISCOVERY_GRACE * 3, |_| false).is_empty());
        // A newer record of the same member queues it again.
        d.record_committed(key(1), t0 + DISCOVERY_GRACE * 3);
        assert_eq!(d.due(t0 + DISCOVERY_GRACE * 4, |_| false), vec![key(1)]);
    }

    #[test]
    fn the_oldest_wait_makes_room_in_a_storm() {
        let mut d = Discovery::default();
        let mut seed = [0u8; 32];
        let keys: Vec<PublicKey> = (0..=MAX_PENDING_DISCOVERIES as u32)
            .map(|i| {
                seed[..4].copy_from_slice(&(i + 1).to_le_bytes());
                SecretKey::from_seed(seed).public()
            })
            .collect();
        for k in &keys {
            d.record_committed(*k, Duration::ZERO);
        }
        let due = d.due(DISCOVERY_GRACE, |_| false);
        assert_eq!(due.len(), MAX_PENDING_DISCOVERIES);
        assert!(!due.contains(&keys[0]));
    }
}
