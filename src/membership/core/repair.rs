//! How `Core` repairs what SWIM alone leaves broken: settings that follow the mesh's size, a
//! courtesy message foca sends in error, suspicions whose timers foca dropped, and the
//! announces that rejoin a healed partition or teach a newcomer the mesh.

use std::num::NonZeroU8;

use foca::{OwnedNotification, State};
use rand::seq::IndexedRandom;
use tracing::{debug, warn};

use super::super::scale;
use super::{Core, MemberState, MemberView, NodeId, Now, RECONNECT_ALL_UP_TO, RECONNECT_FANOUT};
use crate::identity::PublicKey;

impl Core {
    /// Gives foca the transmissions and suspicion timeout for the current number of members
    /// when it changed.
    pub(super) fn rescale(&mut self) {
        let members = self.foca.num_members() + 1;
        if members == self.scaled_for {
            return;
        }
        self.scaled_for = members;
        let transmissions = NonZeroU8::new(scale::transmissions(members)).expect("at least the base");
        let suspect = scale::suspect_timeout(self.configured_suspect, members);
        if transmissions == self.foca_config.max_transmissions && suspect == self.foca_config.suspect_to_down_after {
            return;
        }
        self.foca_config.max_transmissions = transmissions;
        self.foca_config.suspect_to_down_after = suspect;
        self.suspicion_limit = suspect * 2 + self.probe_period;
        if let Err(e) = self.foca.set_config(self.foca_config.clone()) {
            // Only period and enabling changes are refused; neither is made here.
            warn!(error = %e, "could not rescale membership settings");
        }
    }

    /// foca 2.0 tells a suspect it was declared down ("TurnUndead") when its suspicion timer
    /// fires, even when the suspect refuted in time and so is not declared down; the suspect
    /// then renews its identity and rejoins as if it had been. In the whole-mesh simulator
    /// every node whose input lagged 1–2 s renewed every 4–6 s this way (48 renewals in 180 s
    /// at 50 nodes, none declared down). Drops that message, the only one this timer sends,
    /// unless the member did go down: foca then reports it down (`MemberDown`).
    pub(super) fn keep_turn_undead_if_down(&mut self, id: &NodeId, sends_before: usize, notes_before: usize) {
        let went_down = self.fx.notes[notes_before..]
            .iter()
            .any(|n| matches!(n, OwnedNotification::MemberDown(m) if m == id));
        if !went_down {
            self.fx.sends.truncate(sends_before);
        }
    }

    /// foca discards its pending timers when this node renews its identity, including the
    /// ones that would turn suspicions of *other* members into "down"; such a suspicion would
    /// then never end (the suspect never hears of it and never refutes). A suspicion older
    /// than twice the timeout is resolved the way the lost timer would have: the member is
    /// declared down, and an alive member will learn it, renew and rejoin.
    pub(super) fn expire_suspicions(&mut self, now: Now) {
        // Runs after every timer: walks the suspicions only, not the view.
        if self.suspect_since.is_empty() {
            return;
        }
        let limit = self.suspicion_limit;
        let expired: Vec<foca::Member<NodeId>> = self
            .suspect_since
            .iter()
            .filter(|(_, since)| now.mono.saturating_sub(**since) > limit)
            .filter_map(|(key, _)| self.view.get(key))
            .filter(|m| m.state == MemberState::Suspect)
            .map(|m| foca::Member::new(m.id.clone(), m.swim_incarnation, State::Down))
            .collect();
        if expired.is_empty() {
            return;
        }
        for m in &expired {
            warn!(member = ?m.id(), "suspicion outlived its timer; declaring the member down");
        }
        if let Err(e) = self.foca.apply_many(expired.into_iter(), true, &mut self.fx) {
            debug!(error = %e, "expiring suspicions");
        }
    }

    /// Announces this node to up to `count` members in `state`: down ones after a renewal
    /// (being declared down usually means a partition just healed, and those members are likely
    /// back too: one round trip rejoins the sides instead of waiting for the reconnect tick),
    /// alive ones after joining (see [`ANNOUNCE_AFTER_JOIN`]).
    pub(super) fn announce_to(&mut self, state: MemberState, count: usize, now: Now) {
        // Each node picks the members closest to its own key (XOR), so nodes announcing at the
        // same time spread out instead of all picking the same few.
        let me = *self.identity().key.as_bytes();
        let distance = |k: &PublicKey| -> [u8; 32] { std::array::from_fn(|i| k.as_bytes()[i] ^ me[i]) };
        let mut targets: Vec<NodeId> = self
            .view
            .values()
            .filter(|m| m.state == state)
            .map(|m| m.id.clone())
            .collect();
        targets.sort_by_key(|id| distance(&id.key));
        targets.truncate(count);
        self.announce_each(targets, now);
    }

    /// The reconnect tick: announces this node to members believed down, how the two sides of
    /// a healed partition find each other again (the answer tells each side it was declared
    /// down, and it rejoins under a renewed identity). All of them while there are at most
    /// [`RECONNECT_ALL_UP_TO`], else [`RECONNECT_FANOUT`] at random. Members declared down since
    /// the last tick come first: such a verdict may be stale (reached just before a partition
    /// healed, or under loss), and a member that is up learns of it only when told. The
    /// simulator saw one such verdict at 500 nodes outlive a heal by 46 s, waiting to be picked
    /// among the long-dead members.
    pub(super) fn reconnect(&mut self, now: Now) {
        let since = std::mem::replace(&mut self.last_reconnect_ms, now.wall_ms);
        let (recent, older): (Vec<&MemberView>, Vec<&MemberView>) = self
            .view
            .values()
            .filter(|m| m.state == MemberState::Down)
            .partition(|m| m.since_ms >= since);
        let down = recent.len() + older.len();
        let count = if down <= RECONNECT_ALL_UP_TO {
            down
        } else {
            RECONNECT_FANOUT
        };
        let mut chosen: Vec<NodeId> = recent.sample(&mut self.rng, count).map(|m| m.id.clone()).collect();
        let rest = count - chosen.len();
        chosen.extend(older.sample(&mut self.rng, rest).map(|m| m.id.clone()));
        self.announce_each(chosen, now);
    }

    /// Announces this node to each of `targets`.
    pub(super) fn announce_each(&mut self, targets: Vec<NodeId>, now: Now) {
        self.fx.now = now.mono;
        for id in targets {
            if let Err(e) = self.foca.announce(id, &mut self.fx) {
                debug!(error = %e, "announce");
            }
        }
        for (due, t) in self.fx.timers.drain(..) {
            self.timers.push(due, t);
        }
    }
}
