//! `[[schedules]]`: commands this node runs on a cron schedule (backups, typically).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::schedules::cron::{CronSchedule, Zone};

/// Most schedules one node may have: they all travel in one signed record.
pub const MAX_SCHEDULES: usize = 64;
/// Longest description, repository, retention or target (bytes).
pub const MAX_TEXT_LEN: usize = 1024;
/// Largest `log_tail`: a job's log must fit in one reply frame and stay cheap to keep.
pub const MAX_LOG_TAIL: u64 = 1024 * 1024;
/// Most runs kept per schedule.
pub const MAX_KEEP_RUNS: usize = 10_000;

/// One `[[schedules]]` entry.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Id, unique on this node: 1-63 characters from A-Z a-z 0-9 . _ -.
    pub id: String,
    /// What it is, for people.
    #[serde(default)]
    pub description: String,
    /// When: 5-field cron (`min hour day month weekday`), optionally with seconds first, or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub schedule: String,
    /// IANA time zone the schedule is read in, or "local" (default).
    pub timezone: Option<String>,
    /// argv, run without a shell.
    pub command: Vec<String>,
    /// Extra environment (added to the agent's). Values are secrets: never shown or sent.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory. Default: the state directory.
    pub workdir: Option<PathBuf>,
    /// A run still going after this is killed, with its whole process group. Default 24h.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Where the backups go (shown, not used).
    pub repository: Option<String>,
    /// Retention policy, e.g. `7d:4w:6m` (shown, not used).
    pub retention: Option<String>,
    /// What is backed up (shown, not used).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Finished runs kept in the history. Default 50.
    #[serde(default = "default_keep_runs")]
    pub keep_runs: usize,
    /// How much of the end of a run's output is kept. Default 64 KiB.
    #[serde(default = "default_log_tail")]
    pub log_tail: ByteSize,
}

/// Env values are secrets; Debug (and so logs) shows only the names.
impl fmt::Debug for ScheduleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduleConfig")
            .field("id", &self.id)
            .field("schedule", &self.schedule)
            .field("timezone", &self.timezone)
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("workdir", &self.workdir)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_keep_runs() -> usize {
    50
}
fn default_log_tail() -> ByteSize {
    ByteSize::kib(64)
}

impl ScheduleConfig {
    /// The parsed time zone (valid after [`validate`]).
    pub fn zone(&self) -> Result<Zone, crate::schedules::cron::CronError> {
        self.timezone.as_deref().unwrap_or("local").parse()
    }

    /// The parsed schedule (valid after [`validate`]).
    pub fn cron(&self) -> Result<CronSchedule, crate::schedules::cron::CronError> {
        CronSchedule::parse(&self.schedule, self.zone()?)
    }
}

/// A problem with one entry: (index, key, message).
pub type Problem = (usize, &'static str, String);

/// Checks every `[[schedules]]` entry and the set of them.
pub fn validate(schedules: &[ScheduleConfig]) -> Result<(), Problem> {
    if schedules.len() > MAX_SCHEDULES {
        return Err((
            MAX_SCHEDULES,
            "id",
            format!("{} schedules; at most {MAX_SCHEDULES} per node", schedules.len()),
        ));
    }
    let mut ids = HashSet::new();
    for (i, s) in schedules.iter().enumerate() {
        super::unique_name("schedule id", &s.id, &mut ids).map_err(|m| (i, "id", m))?;
        s.zone().map_err(|e| (i, "timezone", format!("{}: {e}", s.id)))?;
        s.cron().map_err(|e| (i, "schedule", format!("{}: {e}", s.id)))?;
        if s.command.is_empty() || s.command[0].is_empty() {
            return Err((
                i,
                "command",
                format!("{}: command needs [\"program\", \"arg\", ...]", s.id),
            ));
        }
        if s.timeout.is_zero() {
            return Err((i, "timeout", format!("{}: must be above zero", s.id)));
        }
        for name in s.env.keys() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err((i, "env", format!("{}: invalid variable name {name:?}", s.id)));
            }
        }
        if s.keep_runs == 0 || s.keep_runs > MAX_KEEP_RUNS {
            return Err((i, "keep_runs", format!("{}: between 1 and {MAX_KEEP_RUNS}", s.id)));
        }
        if s.log_tail.as_u64() > MAX_LOG_TAIL {
            return Err((i, "log_tail", format!("{}: at most 1 MiB", s.id)));
        }
        let texts = [Some(&s.description), s.repository.as_ref(), s.retention.as_ref()];
        let too_long =
            texts.iter().flatten().any(|t| t.len() > MAX_TEXT_LEN) || s.targets.iter().any(|t| t.len() > MAX_TEXT_LEN);
        if too_long || s.targets.len() > 64 {
            return Err((
                i,
                "description",
                format!(
                    "{}: descriptive fields are limited to {MAX_TEXT_LEN} bytes and 64 targets",
                    s.id
                ),
            ));
        }
        if let Some(r) = &s.retention {
            check_retention(r).map_err(|m| (i, "retention", format!("{}: {m}", s.id)))?;
        }
    }
    Ok(())
}

/// `7d:4w:6m`-style: colon-separated counts with a unit (h, d, w, m, y).
fn check_retention(r: &str) -> Result<(), String> {
    for part in r.split(':') {
        let (n, unit) = part.split_at(part.len().saturating_sub(1));
        if n.is_empty() || n.parse::<u32>().is_err() || !["h", "d", "w", "m", "y"].contains(&unit) {
            return Err(format!(
                "retention {r:?}: expected counts with a unit, e.g. \"7d:4w:6m\" (h, d, w, m, y)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(id: &str, cron: &str) -> ScheduleConfig {
        toml::from_str(&format!("id = \"{id}\"\nschedule = \"{cron}\"\ncommand = [\"true\"]")).unwrap()
    }

    #[test]
    fn defaults_and_redacted_debug() {
        let mut s = schedule("db", "@daily");
        assert_eq!(s.timeout, Duration::from_secs(86400));
        assert_eq!(s.keep_runs, 50);
        assert_eq!(s.log_tail, ByteSize::kib(64));
        s.env.insert("RESTIC_PASSWORD".into(), "hunter2".into());
        let shown = format!("{s:?}");
        assert!(shown.contains("RESTIC_PASSWORD") && !shown.contains("hunter2"));
        assert!(validate(&[s]).is_ok());
    }

    #[test]
    fn refuses_bad_entries() {
        assert_eq!(
            validate(&[schedule("a", "@daily"), schedule("a", "@daily")])
                .unwrap_err()
                .1,
            "id"
        );
        assert_eq!(validate(&[schedule("a", "61 * * * *")]).unwrap_err().1, "schedule");
        assert_eq!(validate(&[schedule("a b", "@daily")]).unwrap_err().1, "id");
        let mut s = schedule("a", "@daily");
        s.timezone = Some("Nowhere/Land".into());
        assert_eq!(validate(&[s]).unwrap_err().1, "timezone");
        let mut s = schedule("a", "@daily");
        s.command.clear();
        assert_eq!(validate(&[s]).unwrap_err().1, "command");
        let mut s = schedule("a", "@daily");
        s.retention = Some("7 days".into());
        assert_eq!(validate(&[s]).unwrap_err().1, "retention");
        let mut s = schedule("a", "@daily");
        s.retention = Some("7d:4w:6m".into());
        assert!(validate(&[s]).is_ok());
        let mut s = schedule("a", "@daily");
        s.log_tail = ByteSize::mib(2);
        assert_eq!(validate(&[s]).unwrap_err().1, "log_tail");
    }
}
