//! The signed record each node publishes about its schedules (`RecordKind::Schedules`):
//! what they are (never env values), when they run next, and their latest jobs.

use serde::{Deserialize, Serialize};

use super::jobs::{Job, JobStatus, Trigger};
use crate::config::schedules::ScheduleConfig;

/// Jobs of each schedule carried in the record, newest first. Older ones are on the node and
/// fetched on demand.
pub const RECENT_JOBS: usize = 5;

/// Content of `RecordKind::Schedules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulesRecord {
    /// When it was built, Unix ms.
    pub published_ms: u64,
    /// The node's schedules, in config order.
    pub schedules: Vec<ScheduleInfo>,
}

/// One schedule as the mesh sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    /// Id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Cron expression as configured.
    pub schedule: String,
    /// Time zone it is read in.
    pub timezone: String,
    /// argv.
    pub command: Vec<String>,
    /// Names of the extra environment variables (their values stay on the node).
    pub env_names: Vec<String>,
    /// Timeout, seconds.
    pub timeout_secs: u64,
    /// Repository (descriptive).
    pub repository: Option<String>,
    /// Retention (descriptive).
    pub retention: Option<String>,
    /// Targets (descriptive).
    pub targets: Vec<String>,
    /// Next run, Unix ms.
    pub next_run_ms: Option<u64>,
    /// Latest jobs, newest first, at most [`RECENT_JOBS`].
    pub recent: Vec<JobSummary>,
}

/// A job in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Seq on its node.
    pub seq: u64,
    /// Status.
    pub status: JobStatus,
    /// Trigger.
    pub trigger: Trigger,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms.
    pub ended_ms: Option<u64>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Why it failed, when the exit code does not say.
    pub error: Option<String>,
}

impl From<&Job> for JobSummary {
    fn from(j: &Job) -> JobSummary {
        JobSummary {
            seq: j.seq,
            status: j.status,
            trigger: j.trigger,
            started_ms: j.started_ms,
            ended_ms: j.ended_ms,
            exit_code: j.exit_code,
            error: j.error.clone(),
        }
    }
}

impl ScheduleInfo {
    /// The public part of `config`, with its next run and latest jobs.
    pub fn new(config: &ScheduleConfig, next_run_ms: Option<u64>, recent: &[Job]) -> ScheduleInfo {
        ScheduleInfo {
            id: config.id.clone(),
            description: config.description.clone(),
            schedule: config.schedule.clone(),
            timezone: config.timezone.clone().unwrap_or_else(|| "local".into()),
            command: config.command.clone(),
            env_names: config.env.keys().cloned().collect(),
            timeout_secs: config.timeout.as_secs(),
            repository: config.repository.clone(),
            retention: config.retention.clone(),
            targets: config.targets.clone(),
            next_run_ms,
            recent: recent.iter().take(RECENT_JOBS).map(JobSummary::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_carries_env_values() {
        let config: ScheduleConfig = toml::from_str(
            "id = \"db\"\nschedule = \"@daily\"\ncommand = [\"restic\", \"backup\"]\n[env]\nRESTIC_PASSWORD = \"hunter2\"",
        )
        .unwrap();
        let info = ScheduleInfo::new(&config, Some(1), &[]);
        assert_eq!(info.env_names, ["RESTIC_PASSWORD"]);
        let bytes = crate::codec::encode(&info).unwrap();
        assert!(!bytes.windows(7).any(|w| w == b"hunter2"));
    }
}
