//! Which schedules are due, given the time. Pure: the scheduler task passes the clock in.

use super::cron::CronSchedule;

/// Next run of every schedule.
#[derive(Debug, Clone)]
pub struct Planner {
    entries: Vec<(String, CronSchedule, Option<u64>)>,
}

impl Planner {
    /// Plans `schedules` (id, time) from `now_ms` on.
    pub fn new(schedules: Vec<(String, CronSchedule)>, now_ms: u64) -> Planner {
        Planner {
            entries: schedules
                .into_iter()
                .map(|(id, cron)| {
                    let next = cron.next_after(now_ms);
                    (id, cron, next)
                })
                .collect(),
        }
    }

    /// The earliest next run of any schedule.
    pub fn next_due(&self) -> Option<u64> {
        self.entries.iter().filter_map(|e| e.2).min()
    }

    /// The next run of `id`.
    pub fn next_of(&self, id: &str) -> Option<u64> {
        self.entries.iter().find(|e| e.0 == id).and_then(|e| e.2)
    }

    /// Ids due at `now_ms`, each once, and plans their following run after `now_ms`. Runs
    /// missed while the agent was stopped or the machine slept are not caught up (as cron).
    pub fn take_due(&mut self, now_ms: u64) -> Vec<String> {
        let mut due = Vec::new();
        for (id, cron, next) in &mut self.entries {
            if next.is_some_and(|n| n <= now_ms) {
                due.push(id.clone());
                *next = cron.next_after(now_ms);
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn cron(expr: &str) -> CronSchedule {
        CronSchedule::parse(expr, "UTC".parse().unwrap()).unwrap()
    }

    #[test]
    fn fires_each_due_schedule_once_and_skips_missed_runs() {
        let mut p = Planner::new(
            vec![("fast".into(), cron("* * * * * *")), ("hourly".into(), cron("@hourly"))],
            T0,
        );
        assert_eq!(p.next_due(), Some(T0 + 1000));
        assert!(p.take_due(T0 + 999).is_empty());
        assert_eq!(p.take_due(T0 + 1000), ["fast"]);
        assert_eq!(p.next_of("fast"), Some(T0 + 2000));
        // Asleep for two hours: each schedule runs once, then resumes its rhythm.
        let later = T0 + 2 * 3_600_000 + 500;
        assert_eq!(p.take_due(later), ["fast", "hourly"]);
        assert_eq!(p.next_of("hourly"), Some(T0 + 3 * 3_600_000));
        assert_eq!(p.next_of("fast"), Some(T0 + 2 * 3_600_000 + 1000));
    }
}
