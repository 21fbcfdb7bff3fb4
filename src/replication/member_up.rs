//! Which members that come up this node reconciles with.
//!
//! When every member reconciled with every member that came up, one join cost the newcomer a
//! session with every member (O(N) sessions served, O(N²) across a join storm of N). Each
//! member now does so with probability `SYNCS_PER_MEMBER_UP / members not down`, so a join
//! costs O(1) sessions mesh-wide. What the newcomer lacks it gets from its own first session;
//! what it brings it broadcasts.
//!
//! A healed partition is the other case: half the mesh comes up at once on each side, and
//! the items written on the other side arrive only through a session across it. By chance
//! alone a node started 1.5 such sessions on average and none with probability e^-1.5 ≈ 22 %;
//! those waited for periodic anti-entropy (up to 30 s), which the simulator saw as items
//! healing 13.5 s after the view at 100 nodes and 20 s after it at 300. So a node that has
//! seen as many members come up without a session as the probability implies between two
//! sessions (members / [`SYNCS_PER_MEMBER_UP`]) starts one with the next: at least one per
//! burst, still O(1) per join.
//!
//! [`MemberUpSyncs`] is the decision, without clock or sockets; the replication actor and the
//! simulator both drive it.

/// How many members, on average, reconcile with a member that comes up, whatever the size of
/// the mesh.
pub const SYNCS_PER_MEMBER_UP: f64 = 3.0;

/// Counts members that came up since this node's last anti-entropy session.
#[derive(Debug, Default, Clone)]
pub struct MemberUpSyncs {
    unsynced: usize,
}

impl MemberUpSyncs {
    /// A member came up; `others` members besides this node are not down and `draw` is
    /// uniform in [0, 1). Returns whether to reconcile with it.
    pub fn on_up(&mut self, others: usize, draw: f64) -> bool {
        let others = others.max(1) as f64;
        self.unsynced += 1;
        let by_chance = draw * others < SYNCS_PER_MEMBER_UP;
        let overdue = self.unsynced as f64 >= others / SYNCS_PER_MEMBER_UP;
        by_chance || overdue
    }

    /// This node started a session (any kind): the count starts over.
    pub fn synced(&mut self) {
        self.unsynced = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_join_is_reconciled_with_by_chance() {
        let mut s = MemberUpSyncs::default();
        assert!(s.on_up(300, 0.0), "a low draw syncs");
        s.synced();
        assert!(!s.on_up(300, 0.5), "one member up in 300 is not overdue");
    }

    #[test]
    fn a_burst_of_members_up_brings_at_least_one_session() {
        // A healed partition: 150 of 299 others come up, every draw unlucky.
        let mut s = MemberUpSyncs::default();
        let syncs = (0..150)
            .filter(|_| {
                s.on_up(299, 0.99) && {
                    s.synced();
                    true
                }
            })
            .count();
        assert_eq!(syncs, 1, "one session per 100 members up");
        // Small meshes sync with everyone that comes up.
        let mut s = MemberUpSyncs::default();
        assert!(s.on_up(2, 0.99));
    }
}
