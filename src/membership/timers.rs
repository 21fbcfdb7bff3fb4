//! foca's timers, kept in deadline order.
//!
//! foca requires every timer it submits to be delivered, and is most accurate when due timers
//! are handled in deadline order (ties broken by foca's own ordering of timer kinds). Time is
//! a `Duration` since an arbitrary start, passed in by the caller, so this is deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use foca::Timer;

use super::id::NodeId;

struct Entry {
    due: Duration,
    seq: u64,
    timer: Timer<NodeId>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .due
            .cmp(&self.due)
            .then_with(|| other.timer.cmp(&self.timer))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// A queue of foca timers.
#[derive(Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl TimerQueue {
    /// Schedules `timer` at `due`.
    pub fn push(&mut self, due: Duration, timer: Timer<NodeId>) {
        self.seq += 1;
        self.heap.push(Entry {
            due,
            seq: self.seq,
            timer,
        });
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<Duration> {
        self.heap.peek().map(|e| e.due)
    }

    /// Removes and returns the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<Timer<NodeId>> {
        if self.heap.peek()?.due <= now {
            self.heap.pop().map(|e| e.timer)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivers_in_deadline_then_kind_order() {
        let mut q = TimerQueue::default();
        q.push(Duration::from_millis(30), Timer::PeriodicGossip(0));
        q.push(Duration::from_millis(10), Timer::PeriodicAnnounce(0));
        q.push(Duration::from_millis(10), Timer::ProbeRandomMember(0));
        assert_eq!(q.pop_due(Duration::from_millis(5)), None);
        assert_eq!(q.next_due(), Some(Duration::from_millis(10)));
        let now = Duration::from_millis(40);
        assert_eq!(q.pop_due(now), Some(Timer::ProbeRandomMember(0)));
        assert_eq!(q.pop_due(now), Some(Timer::PeriodicAnnounce(0)));
        assert_eq!(q.pop_due(now), Some(Timer::PeriodicGossip(0)));
        assert_eq!(q.next_due(), None);
    }
}
