//! Backup schedules: this node runs its `[[schedules]]` at their cron times, keeps the job
//! history, and publishes a signed `RecordKind::Schedules` record so every node shows every
//! node's schedules from its own replica.
//!
//! One task owns the plan, the running jobs and the history writes; the HTTP API talks to it
//! through a bounded channel (run-now) and reads the history directly.

pub mod cron;
pub mod jobs;
pub mod planner;
pub mod record;
pub mod runner;
pub mod zone;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::schedules::ScheduleConfig;
use crate::identity::PublicKey;
use crate::replication::ReplicationHandle;
use crate::replication::item::RecordKind;
use jobs::{Job, JobStatus, JobStore, Trigger};
use planner::Planner;
use record::{RECENT_JOBS, ScheduleInfo, SchedulesRecord};
use runner::{Outcome, RunSpec};

/// Capacity of the command channel (run-now requests, stop).
pub const COMMAND_CAPACITY: usize = 16;
/// The schedules record is published at most this often (a schedule running every second
/// changes it twice a second).
pub const PUBLISH_MIN_GAP: Duration = Duration::from_secs(1);
/// The task re-reads the clock at least this often, so a wall-clock jump is noticed.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Why run-now was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// No such schedule on this node.
    #[error("no schedule {0:?} on this node")]
    Unknown(String),
    /// A run of it is going on.
    #[error("schedule {schedule:?} is already running (job {job})")]
    Running {
        /// Schedule id.
        schedule: String,
        /// The running job's seq.
        job: u64,
    },
    /// The scheduler is not running (the agent is stopping).
    #[error("the scheduler is stopping")]
    Stopped,
    /// The history could not be written.
    #[error("job history: {0}")]
    Store(String),
}

enum Command {
    RunNow {
        id: String,
        reply: oneshot::Sender<Result<u64, RunError>>,
    },
    Stop {
        done: oneshot::Sender<()>,
    },
    Reload(Vec<ScheduleConfig>),
}

/// A job anywhere in the mesh: `<first 6 bytes of the node key, hex>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRef {
    /// Key prefix of the node that ran it.
    pub node: [u8; 6],
    /// Its seq on that node.
    pub seq: u64,
}

impl JobRef {
    /// The reference of job `seq` of `node`.
    pub fn new(node: &PublicKey, seq: u64) -> JobRef {
        let mut prefix = [0u8; 6];
        prefix.copy_from_slice(&node.as_bytes()[..6]);
        JobRef { node: prefix, seq }
    }

    /// Whether it names a job of `key`.
    pub fn is_of(&self, key: &PublicKey) -> bool {
        key.as_bytes()[..6] == self.node
    }
}

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.node {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{}", self.seq)
    }
}

impl FromStr for JobRef {
    type Err = String;
    fn from_str(s: &str) -> Result<JobRef, String> {
        let bad = || format!("invalid job id {s:?}: expected <12 hex digits>-<number>, as listed by /api/jobs");
        let (hex, seq) = s.split_once('-').ok_or_else(bad)?;
        if hex.len() != 12 {
            return Err(bad());
        }
        let mut node = [0u8; 6];
        for (i, b) in node.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
        }
        Ok(JobRef {
            node,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// What the scheduler needs.
pub struct SchedulerContext {
    /// `[[schedules]]`.
    pub schedules: Vec<ScheduleConfig>,
    /// The job history.
    pub jobs: JobStore,
    /// Where the record is published.
    pub replication: ReplicationHandle,
    /// Default working directory of jobs.
    pub state_dir: PathBuf,
    /// Where finished runs are counted.
    pub counters: std::sync::Arc<crate::metrics::Counters>,
}

/// Talks to the scheduler task. Cheap to clone.
#[derive(Clone)]
pub struct SchedulesHandle {
    tx: mpsc::Sender<Command>,
    jobs: JobStore,
}

impl SchedulesHandle {
    /// Starts a run of schedule `id` now; returns the job's seq.
    pub async fn run_now(&self, id: &str) -> Result<u64, RunError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::RunNow {
                id: id.to_string(),
                reply,
            })
            .await
            .map_err(|_| RunError::Stopped)?;
        rx.await.map_err(|_| RunError::Stopped)?
    }

    /// Replaces the schedules (config reload). Runs in progress go on, also of schedules that
    /// were removed; new times apply from now on.
    pub async fn reload(&self, schedules: Vec<ScheduleConfig>) {
        let _ = self.tx.send(Command::Reload(schedules)).await;
    }

    /// Stops the scheduler: running jobs are killed and recorded as aborted.
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Command::Stop { done }).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The job history (read-only use).
    pub fn jobs(&self) -> &JobStore {
        &self.jobs
    }
}

/// Starts the scheduler task.
pub fn spawn(ctx: SchedulerContext) -> (SchedulesHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let handle = SchedulesHandle {
        tx,
        jobs: ctx.jobs.clone(),
    };
    (handle, tokio::spawn(run(ctx, rx)))
}

struct Scheduler {
    ctx: SchedulerContext,
    planner: Planner,
    next_seq: u64,
    /// Schedule id → seq of its running job.
    running: HashMap<String, u64>,
    /// Latest jobs per schedule, newest first (what the record carries).
    recent: HashMap<String, VecDeque<Job>>,
    runners: JoinSet<(u64, Outcome)>,
    dirty: bool,
    published_at: Option<tokio::time::Instant>,
}

async fn run(ctx: SchedulerContext, mut rx: mpsc::Receiver<Command>) {
    let now = crate::time::unix_ms();
    match ctx.jobs.abort_running(now, "cut off by an agent restart") {
        Ok(aborted) => {
            for j in aborted {
                warn!(schedule = %j.schedule, job = j.seq, "a job was cut off by an agent restart; marked aborted");
            }
        }
        Err(e) => error!(error = %e, "job history"),
    }
    let plan = ctx
        .schedules
        .iter()
        .filter_map(|s| s.cron().ok().map(|c| (s.id.clone(), c)))
        .collect();
    let recent = ctx
        .schedules
        .iter()
        .map(|s| (s.id.clone(), ctx.jobs.list(Some(&s.id), RECENT_JOBS).into()))
        .collect();
    let mut s = Scheduler {
        next_seq: ctx.jobs.next_seq().unwrap_or(1),
        planner: Planner::new(plan, now),
        ctx,
        running: HashMap::new(),
        recent,
        runners: JoinSet::new(),
        dirty: true,
        published_at: None,
    };
    loop {
        let wake = wake_at(s.planner.next_due());
        let publish_at = s
            .published_at
            .map(|t| t + PUBLISH_MIN_GAP)
            .unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                for id in s.planner.take_due(crate::time::unix_ms()) {
                    let _ = s.start(&id, Trigger::Schedule);
                }
            }
            cmd = rx.recv() => match cmd {
                Some(Command::RunNow { id, reply }) => {
                    let _ = reply.send(s.start(&id, Trigger::Manual));
                }
                Some(Command::Reload(schedules)) => s.reload(schedules),
                Some(Command::Stop { done }) => {
                    s.stop().await;
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            Some(done) = s.runners.join_next() => match done {
                Ok((seq, outcome)) => s.finish(seq, outcome),
                Err(e) => error!(error = %e, "a job runner failed"),
            },
            _ = tokio::time::sleep_until(publish_at), if s.dirty => s.publish().await,
        }
    }
}

fn wake_at(due_ms: Option<u64>) -> tokio::time::Instant {
    let now_ms = crate::time::unix_ms();
    let wait = due_ms.map_or(MAX_SLEEP, |d| {
        Duration::from_millis(d.saturating_sub(now_ms)).min(MAX_SLEEP)
    });
    tokio::time::Instant::now() + wait
}

impl Scheduler {
    fn reload(&mut self, schedules: Vec<ScheduleConfig>) {
        let now = crate::time::unix_ms();
        let plan = schedules
            .iter()
            .filter_map(|s| s.cron().ok().map(|c| (s.id.clone(), c)))
            .collect();
        self.planner = Planner::new(plan, now);
        for s in &schedules {
            if !self.recent.contains_key(&s.id) {
                self.recent
                    .insert(s.id.clone(), self.ctx.jobs.list(Some(&s.id), RECENT_JOBS).into());
            }
        }
        info!(schedules = schedules.len(), "schedules reloaded");
        self.ctx.schedules = schedules;
        self.dirty = true;
    }

    fn config(&self, id: &str) -> Option<&ScheduleConfig> {
        self.ctx.schedules.iter().find(|s| s.id == id)
    }

    fn start(&mut self, id: &str, trigger: Trigger) -> Result<u64, RunError> {
        let Some(config) = self.config(id).cloned() else {
            return Err(RunError::Unknown(id.to_string()));
        };
        let now = crate::time::unix_ms();
        let seq = self.next_seq;
        if let Some(&job) = self.running.get(id) {
            // A manual request is refused; a scheduled time that comes while the previous run
            // goes on is recorded as skipped, so the history shows it.
            if trigger == Trigger::Schedule {
                self.next_seq += 1;
                warn!(
                    schedule = id,
                    running = job,
                    "previous run still going; skipping this one"
                );
                self.ctx.counters.job_finished(JobStatus::Skipped);
                self.record(Job {
                    seq,
                    schedule: id.to_string(),
                    trigger,
                    status: JobStatus::Skipped,
                    started_ms: now,
                    ended_ms: Some(now),
                    exit_code: None,
                    error: Some(format!("job {job} was still running")),
                    output_bytes: 0,
                });
                self.prune(&config);
            }
            return Err(RunError::Running {
                schedule: id.to_string(),
                job,
            });
        }
        self.next_seq += 1;
        let job = Job {
            seq,
            schedule: id.to_string(),
            trigger,
            status: JobStatus::Running,
            started_ms: now,
            ended_ms: None,
            exit_code: None,
            error: None,
            output_bytes: 0,
        };
        self.ctx.jobs.put(&job).map_err(|e| RunError::Store(e.to_string()))?;
        self.record(job);
        let tail = self.ctx.jobs.start_live(seq, config.log_tail.as_u64() as usize);
        let spec = RunSpec {
            command: config.command.clone(),
            env: config.env.clone(),
            workdir: config.workdir.clone().unwrap_or_else(|| self.ctx.state_dir.clone()),
            timeout: config.timeout,
        };
        info!(schedule = id, job = seq, ?trigger, "job started");
        self.runners.spawn(async move { (seq, runner::run(&spec, tail).await) });
        self.running.insert(id.to_string(), seq);
        Ok(seq)
    }

    fn finish(&mut self, seq: u64, outcome: Outcome) {
        let Some(job) = self.ctx.jobs.get(seq) else {
            error!(job = seq, "finished job missing from the history");
            return;
        };
        self.running.remove(&job.schedule);
        let job = Job {
            status: outcome.status,
            ended_ms: Some(crate::time::unix_ms()),
            exit_code: outcome.exit_code,
            error: outcome.error,
            output_bytes: outcome.log.total,
            ..job
        };
        self.ctx.counters.job_finished(job.status);
        if let Err(e) = self.ctx.jobs.finish_log(seq, &outcome.log) {
            error!(job = seq, error = %e, "storing a job log");
        }
        match job.status {
            JobStatus::Success => info!(schedule = %job.schedule, job = seq, "job succeeded"),
            status => {
                warn!(schedule = %job.schedule, job = seq, status = status.as_str(), exit_code = ?job.exit_code, error = ?job.error, "job did not succeed")
            }
        }
        if let Err(e) = self.ctx.jobs.put(&job) {
            error!(job = seq, error = %e, "storing a job");
        }
        let config = self.config(&job.schedule).cloned();
        self.record(job);
        if let Some(config) = config {
            self.prune(&config);
        }
    }

    /// Notes a job in the record's recent list (and in the store, for skipped ones).
    fn record(&mut self, job: Job) {
        if job.status == JobStatus::Skipped
            && let Err(e) = self.ctx.jobs.put(&job)
        {
            error!(error = %e, "storing a job");
        }
        let recent = self.recent.entry(job.schedule.clone()).or_default();
        recent.retain(|j| j.seq != job.seq);
        let at = recent.iter().position(|j| j.seq < job.seq).unwrap_or(recent.len());
        recent.insert(at, job);
        recent.truncate(RECENT_JOBS);
        self.dirty = true;
    }

    fn prune(&self, config: &ScheduleConfig) {
        if let Err(e) = self.ctx.jobs.prune(&config.id, config.keep_runs) {
            error!(schedule = %config.id, error = %e, "pruning the job history");
        }
    }

    fn build(&self) -> SchedulesRecord {
        SchedulesRecord {
            published_ms: crate::time::unix_ms(),
            schedules: self
                .ctx
                .schedules
                .iter()
                .map(|c| {
                    let recent: Vec<Job> = self
                        .recent
                        .get(&c.id)
                        .map(|r| r.iter().cloned().collect())
                        .unwrap_or_default();
                    ScheduleInfo::new(c, self.planner.next_of(&c.id), &recent)
                })
                .collect(),
        }
    }

    async fn publish(&mut self) {
        self.dirty = false;
        self.published_at = Some(tokio::time::Instant::now());
        let mut record = self.build();
        let max = crate::replication::policy::MAX_RECORD_SIZE as usize;
        let mut content = crate::codec::encode(&record).unwrap_or_default();
        if content.len() > max {
            // Too many long schedules for one record: keep the latest job of each only.
            for s in &mut record.schedules {
                s.recent.truncate(1);
                s.description.truncate(120);
            }
            content = crate::codec::encode(&record).unwrap_or_default();
        }
        if content.is_empty() || content.len() > max {
            error!(bytes = content.len(), "the schedules record is too large to publish");
            return;
        }
        self.ctx.replication.publish(RecordKind::Schedules, content).await;
    }

    /// Kills running jobs, records them as aborted, and publishes that.
    async fn stop(&mut self) {
        self.runners.shutdown().await;
        let now = crate::time::unix_ms();
        let running: Vec<u64> = self.running.drain().map(|(_, seq)| seq).collect();
        for seq in running {
            let Some(job) = self.ctx.jobs.get(seq) else { continue };
            let log = self.ctx.jobs.log(seq);
            let job = Job {
                status: JobStatus::Aborted,
                ended_ms: Some(now),
                error: Some("the agent stopped while it ran".into()),
                output_bytes: log.as_ref().map_or(0, |l| l.total),
                ..job
            };
            if let Some(log) = log {
                let _ = self.ctx.jobs.finish_log(seq, &log);
            }
            let _ = self.ctx.jobs.put(&job);
            warn!(schedule = %job.schedule, job = seq, "job aborted: the agent is stopping");
            self.ctx.counters.job_finished(JobStatus::Aborted);
            self.record(job);
        }
        if self.dirty {
            self.publish().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs_round_trip_and_reject_junk() {
        let key = crate::identity::SecretKey::from_seed([7; 32]).public();
        let r = JobRef::new(&key, 42);
        let text = r.to_string();
        assert_eq!(text.len(), 12 + 3);
        assert_eq!(text.parse::<JobRef>().unwrap(), r);
        assert!(r.is_of(&key));
        for bad in ["", "42", "abc-1", "zzzzzzzzzzzz-1", "0123456789ab-", "0123456789ab-x"] {
            assert!(bad.parse::<JobRef>().is_err(), "{bad}");
        }
    }
}
