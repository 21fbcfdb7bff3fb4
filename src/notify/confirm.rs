//! Answers other nodes' claims from this node's own state.

use crate::membership::{MemberState, MembershipHandle};
use crate::replication::ReplicationHandle;
use crate::replication::item::ItemKey;
use crate::rpc::{Claim, Confirmer};

/// Checks claims against the membership view and the replica.
pub struct MeshConfirmer {
    /// Membership view.
    pub membership: MembershipHandle,
    /// Replicated records.
    pub replication: ReplicationHandle,
}

impl Confirmer for MeshConfirmer {
    fn confirm(&self, claim: &Claim) -> bool {
        let member = |node| {
            let snapshot = self.membership.snapshot();
            snapshot
                .members
                .iter()
                .find(|m| m.id.key == node && !m.local)
                .map(|m| ((m.id.generation << 16) | m.id.bump as u64, m.state))
        };
        match claim {
            // "Not alive under that identity": a newer identity also means the old one is gone.
            Claim::MemberDown { node, identity } => {
                matches!(member(*node), Some((id, state)) if id > *identity || (id == *identity && state != MemberState::Alive))
            }
            Claim::MemberUp { node, identity } => {
                matches!(member(*node), Some((id, MemberState::Alive)) if id >= *identity)
            }
            Claim::Record { node, kind, version } => self
                .replication
                .get(&ItemKey::Node {
                    node: *node,
                    kind: *kind,
                })
                .is_some_and(|(item, _)| item.meta.version >= *version),
        }
    }
}
