//! Job history: one record per run in sled (`jobs` tree), the kept tail of its output in
//! another (`job_logs`), and the live tail of runs in progress.
//!
//! Only the scheduler task writes; the HTTP API and peers' log requests read.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Largest encoded job record accepted from the database.
const MAX_JOB_RECORD: usize = 16 * 1024;

/// How a run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Still going.
    Running,
    /// Exit status 0.
    Success,
    /// Non-zero exit, killed by a signal, or could not start.
    Failed,
    /// Killed at the schedule's timeout.
    Timeout,
    /// Cut off by the agent stopping.
    Aborted,
    /// Not run: the previous run of the schedule was still going.
    Skipped,
}

impl JobStatus {
    /// Stable lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Timeout => "timeout",
            JobStatus::Aborted => "aborted",
            JobStatus::Skipped => "skipped",
        }
    }

    /// Whether this is a problem someone should hear about.
    pub fn is_failure(&self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::Timeout | JobStatus::Aborted)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Its cron time came.
    Schedule,
    /// Run-now (`shoal run`, `POST /api/schedules/{id}/run`).
    Manual,
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Number on this node (increasing, never reused).
    pub seq: u64,
    /// Schedule id.
    pub schedule: String,
    /// What started it.
    pub trigger: Trigger,
    /// Where it is.
    pub status: JobStatus,
    /// Start, Unix ms.
    pub started_ms: u64,
    /// End, Unix ms.
    pub ended_ms: Option<u64>,
    /// Exit status, when it exited.
    pub exit_code: Option<i32>,
    /// Why it failed, when the exit code does not say (signal, timeout, spawn error, abort).
    pub error: Option<String>,
    /// Bytes of output it wrote in all (the log keeps only the tail).
    pub output_bytes: u64,
}

/// The end of a run's output, bounded.
#[derive(Debug, Clone, Default)]
pub struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    total: u64,
}

impl Tail {
    /// A tail keeping the last `cap` bytes.
    pub fn new(cap: usize) -> Tail {
        Tail {
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
            total: 0,
        }
    }

    /// Appends output, dropping the oldest beyond the bound.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(self.cap)..];
        let overflow = (self.buf.len() + keep.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(keep);
    }

    /// The kept bytes.
    pub fn bytes(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// Bytes written in all.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Output of a run: the kept tail and how much was written in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLog {
    /// The last bytes of output (stdout and stderr interleaved as they came).
    pub tail: Vec<u8>,
    /// Bytes written in all; more than `tail.len()` when the beginning was dropped.
    pub total: u64,
}

/// Tails of runs in progress, by job seq. The runner appends; readers copy.
pub type LiveLogs = Arc<Mutex<HashMap<u64, Arc<Mutex<Tail>>>>>;

/// The job history in the store. Cheap to clone.
#[derive(Clone)]
pub struct JobStore {
    jobs: sled::Tree,
    logs: sled::Tree,
    live: LiveLogs,
}

impl JobStore {
    /// Opens the history in `store`.
    pub fn open(store: &Store) -> Result<JobStore, StoreError> {
        Ok(JobStore {
            jobs: store.tree("jobs")?,
            logs: store.tree("job_logs")?,
            live: LiveLogs::default(),
        })
    }

    /// The number the next job gets.
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(match self.jobs.last()? {
            Some((k, _)) => seq_of(&k)? + 1,
            None => 1,
        })
    }

    /// Writes (or rewrites) a job.
    pub fn put(&self, job: &Job) -> Result<(), StoreError> {
        let bytes = crate::codec::encode(job).map_err(|_| StoreError::Corrupt("job encode"))?;
        self.jobs.insert(job.seq.to_be_bytes(), bytes)?;
        Ok(())
    }

    /// A job by seq.
    pub fn get(&self, seq: u64) -> Option<Job> {
        let v = self.jobs.get(seq.to_be_bytes()).ok()??;
        crate::codec::decode_exact(&v, MAX_JOB_RECORD).ok()
    }

    /// Jobs newest first, optionally of one schedule, at most `limit`.
    pub fn list(&self, schedule: Option<&str>, limit: usize) -> Vec<Job> {
        self.jobs
            .iter()
            .rev()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| crate::codec::decode_exact::<Job>(&v, MAX_JOB_RECORD).ok())
            .filter(|j| schedule.is_none_or(|s| j.schedule == s))
            .take(limit)
            .collect()
    }

    /// Registers the live tail of a run starting now.
    pub fn start_live(&self, seq: u64, cap: usize) -> Arc<Mutex<Tail>> {
        let tail = Arc::new(Mutex::new(Tail::new(cap)));
        lock(&self.live).insert(seq, tail.clone());
        tail
    }

    /// Stores the final tail of a finished run and forgets its live one.
    pub fn finish_log(&self, seq: u64, log: &JobLog) -> Result<(), StoreError> {
        let bytes = crate::codec::encode(log).map_err(|_| StoreError::Corrupt("job log encode"))?;
        self.logs.insert(seq.to_be_bytes(), bytes)?;
        lock(&self.live).remove(&seq);
        Ok(())
    }

    /// The output of a job: live while it runs, stored once it ended.
    pub fn log(&self, seq: u64) -> Option<JobLog> {
        let live = lock(&self.live).get(&seq).cloned();
        if let Some(tail) = live {
            let t = lock(&tail);
            return Some(JobLog {
                tail: t.bytes(),
                total: t.total(),
            });
        }
        let v = self.logs.get(seq.to_be_bytes()).ok()??;
        crate::codec::decode_exact(&v, crate::config::schedules::MAX_LOG_TAIL as usize + 64).ok()
    }

    /// Marks every job still recorded as running as aborted (they belonged to an earlier run
    /// of the agent). Returns them.
    pub fn abort_running(&self, now_ms: u64, reason: &str) -> Result<Vec<Job>, StoreError> {
        let mut aborted = Vec::new();
        for job in self.list(None, usize::MAX) {
            if job.status == JobStatus::Running && !lock(&self.live).contains_key(&job.seq) {
                let job = Job {
                    status: JobStatus::Aborted,
                    ended_ms: Some(now_ms),
                    error: Some(reason.to_string()),
                    ..job
                };
                self.put(&job)?;
                aborted.push(job);
            }
        }
        Ok(aborted)
    }

    /// Deletes the oldest finished runs of `schedule` beyond `keep`. Returns how many went.
    pub fn prune(&self, schedule: &str, keep: usize) -> Result<usize, StoreError> {
        let old: Vec<u64> = self
            .list(Some(schedule), usize::MAX)
            .into_iter()
            .filter(|j| j.status != JobStatus::Running)
            .skip(keep)
            .map(|j| j.seq)
            .collect();
        for seq in &old {
            self.jobs.remove(seq.to_be_bytes())?;
            self.logs.remove(seq.to_be_bytes())?;
        }
        Ok(old.len())
    }
}

fn seq_of(key: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| StoreError::Corrupt("job key"))?,
    ))
}

/// Locks a mutex, also after a panic elsewhere (the data are plain bytes and maps).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64, schedule: &str, status: JobStatus) -> Job {
        Job {
            seq,
            schedule: schedule.into(),
            trigger: Trigger::Schedule,
            status,
            started_ms: seq * 1000,
            ended_ms: None,
            exit_code: None,
            error: None,
            output_bytes: 0,
        }
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(5);
        t.push(b"abc");
        t.push(b"defg");
        assert_eq!(t.bytes(), b"cdefg");
        t.push(b"0123456789");
        assert_eq!(t.bytes(), b"56789");
        assert_eq!(t.total(), 17);
    }

    #[test]
    fn history_prunes_aborts_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let jobs = JobStore::open(&store).unwrap();
            assert_eq!(jobs.next_seq().unwrap(), 1);
            for seq in 1..=5 {
                jobs.put(&job(seq, "a", JobStatus::Success)).unwrap();
                jobs.finish_log(
                    seq,
                    &JobLog {
                        tail: vec![seq as u8],
                        total: 1,
                    },
                )
                .unwrap();
            }
            jobs.put(&job(6, "b", JobStatus::Running)).unwrap();
            jobs.put(&job(7, "a", JobStatus::Running)).unwrap();
            assert_eq!(jobs.prune("a", 2).unwrap(), 3);
            let a: Vec<u64> = jobs.list(Some("a"), 10).iter().map(|j| j.seq).collect();
            assert_eq!(a, [7, 5, 4], "running runs are never pruned");
            assert!(jobs.log(1).is_none() && jobs.log(5).is_some());
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let jobs = JobStore::open(&store).unwrap();
        assert_eq!(jobs.next_seq().unwrap(), 8);
        let aborted = jobs.abort_running(99, "cut off").unwrap();
        assert_eq!(aborted.iter().map(|j| j.seq).collect::<Vec<_>>(), [7, 6]);
        assert_eq!(jobs.get(6).unwrap().status, JobStatus::Aborted);
        assert_eq!(jobs.get(6).unwrap().ended_ms, Some(99));
    }

    #[test]
    fn live_log_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let jobs = JobStore::open(&store).unwrap();
        let tail = jobs.start_live(3, 4);
        tail.lock().unwrap().push(b"hello");
        assert_eq!(
            jobs.log(3).unwrap(),
            JobLog {
                tail: b"ello".to_vec(),
                total: 5
            }
        );
        jobs.finish_log(
            3,
            &JobLog {
                tail: b"done".to_vec(),
                total: 9,
            },
        )
        .unwrap();
        assert_eq!(jobs.log(3).unwrap().tail, b"done");
    }
}
