//! What the scenario and tests read of a running simulation: how nodes see each other and
//! which items they hold. Reads only; nothing here changes the run.

use std::time::Duration;

use crate::membership::MemberState;

use super::Sim;

impl Sim {
    /// How `observer` sees `subject`'s current run: `None` if it does not know that run (or
    /// either is not running).
    pub fn sees(&self, observer: usize, subject: usize) -> Option<MemberState> {
        let run = self.nodes[observer].run.as_ref()?;
        let s = &self.nodes[subject];
        let m = run.core.member(&s.id.key)?;
        (m.id.generation == s.id.generation).then_some(m.state)
    }

    /// Indexes of running nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].live()).collect()
    }

    /// Whether every running node sees every other running node alive.
    pub fn all_alive(&self) -> bool {
        let live = self.live();
        live.iter().all(|&o| {
            live.iter()
                .all(|&s| s == o || self.sees(o, s) == Some(MemberState::Alive))
        })
    }

    /// How running nodes see each other, over all (observer, subject) pairs of running
    /// nodes: [alive, suspect, down, unknown]; a subject known only under an earlier
    /// generation counts as unknown.
    pub fn view_summary(&self) -> [usize; 4] {
        let live = self.live();
        let mut out = [0; 4];
        for &o in &live {
            for &s in &live {
                if s != o {
                    let k = match self.sees(o, s) {
                        Some(MemberState::Alive) => 0,
                        Some(MemberState::Suspect) => 1,
                        Some(MemberState::Down) => 2,
                        None => 3,
                    };
                    out[k] += 1;
                }
            }
        }
        out
    }

    /// When node `i` committed the item version `digest`, if it has.
    pub fn committed_at(&self, i: usize, digest: &[u8; 32]) -> Option<Duration> {
        let run = self.nodes[i].run.as_ref()?;
        run.replica.store().committed_at.get(digest).copied()
    }

    /// Whether every running node holds the same items.
    pub fn items_agree(&self) -> bool {
        let live = self.live();
        let fp = |i: usize| {
            let run = self.nodes[i].run.as_ref().expect("live");
            let s = run.replica.store();
            (s.index.fingerprint(), s.index.len())
        };
        let Some(&first) = live.first() else { return true };
        let want = fp(first);
        live.iter().all(|&i| fp(i) == want)
    }

    /// Whether no running node has items or membership updates left to pass on.
    pub fn quiet(&self) -> bool {
        (self.nodes.iter())
            .filter_map(|n| n.run.as_ref())
            .all(|r| r.core.broadcast_backlog() == 0 && r.core.updates_backlog() == 0)
    }

    /// Items not passed on because a backlog was full, summed over running nodes.
    pub fn relays_skipped(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.run.as_ref())
            .map(|r| r.core.relays_skipped().load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }
}
