//! The member view: what `Core` shows of foca's member list, refreshed after every input.

use foca::Identity;
use tracing::info;

use super::{Core, MemberState, MemberView, NodeId, Now, State};
use crate::identity::PublicKey;

impl Core {
    /// Brings the view in line with foca's member list: members whose state, incarnation or
    /// identity changed, those foca forgot, and never this node's own earlier identities.
    pub(super) fn refresh_view(&mut self, now: Now) {
        let count = self.foca.iter_membership_state().len();
        let same_count = count == self.last_seen.len();
        // Members whose identity, state or incarnation differ from what was at their position
        // at the last refresh: all of them when the count changed (foca's order shifts then).
        // The view already matches every other member, so only these need looking up.
        let differing: Vec<(usize, NodeId, State, u16)> = self
            .foca
            .iter_membership_state()
            .enumerate()
            .filter(|(i, m)| {
                !same_count || {
                    let (id, state, incarnation) = &self.last_seen[*i];
                    m.state() != *state || m.incarnation() != *incarnation || m.id() != id
                }
            })
            .map(|(i, m)| (i, m.id().clone(), m.state(), m.incarnation()))
            .collect();
        // With a different count nothing may differ by position and still something changed:
        // foca forgot its last member (the count fell to zero).
        if same_count && differing.is_empty() {
            return;
        }
        let own = self.foca.identity().key;
        if same_count {
            for (i, id, state, incarnation) in &differing {
                let old = std::mem::replace(&mut self.last_seen[*i], (id.clone(), *state, *incarnation));
                self.own_in_foca = self.own_in_foca + usize::from(id.key == own) - usize::from(old.0.key == own);
            }
        } else {
            self.last_seen.clear();
            self.last_seen.extend(
                differing
                    .iter()
                    .map(|(_, id, state, incarnation)| (id.clone(), *state, *incarnation)),
            );
            self.own_in_foca = self.last_seen.iter().filter(|(id, ..)| id.key == own).count();
        }
        let mut changed = false;
        for (_, id, state, incarnation) in &differing {
            if id.key == own {
                // An earlier identity of this node, which foca keeps as down after a renewal
                // on purpose; the view lists this node once, as itself, and never announces
                // to it.
                continue;
            }
            let (id, state, incarnation) = (id, MemberState::from(*state), *incarnation);
            match self.view.get_mut(&id.addr()) {
                Some(v) if v.id == *id && v.state == state => {
                    if v.swim_incarnation != incarnation {
                        v.swim_incarnation = incarnation;
                        changed = true;
                        // Suspected again after refuting (between two refreshes): a new
                        // suspicion with a new timer, not an old one outliving its timer.
                        if state == MemberState::Suspect {
                            self.suspect_since.insert(id.key, now.mono);
                        }
                    }
                }
                slot => {
                    let name = self.names.get(&id.key).cloned();
                    let view = MemberView {
                        id: id.clone(),
                        name,
                        state,
                        since_ms: now.wall_ms,
                        swim_incarnation: incarnation,
                        local: false,
                    };
                    match state {
                        MemberState::Down => info!(member = ?id, "member down"),
                        MemberState::Suspect => info!(member = ?id, "member suspect"),
                        MemberState::Alive => info!(member = ?id, "member alive"),
                    }
                    if state == MemberState::Suspect {
                        self.suspect_since.insert(id.key, now.mono);
                    } else {
                        self.suspect_since.remove(&id.key);
                    }
                    match slot {
                        Some(v) => *v = view,
                        None => {
                            self.view.insert(id.key, view);
                        }
                    }
                    changed = true;
                }
            }
        }
        if count - self.own_in_foca != self.view.len() {
            // foca forgot members that were down long enough.
            let current: std::collections::HashSet<PublicKey> = (self.foca.iter_membership_state())
                .map(|m| m.id().key)
                .filter(|k| *k != own)
                .collect();
            self.view.retain(|k, _| current.contains(k));
            self.suspect_since.retain(|k, _| current.contains(k));
            changed = true;
        }
        if changed {
            self.version += 1;
        }
    }
}
