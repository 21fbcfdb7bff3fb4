//! Runs one job: the command in a process group of its own, output into a bounded tail, the
//! whole group killed at the timeout (TERM, then KILL after a grace period) and whenever the
//! run ends or is dropped, so no process outlives its job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::jobs::{JobLog, JobStatus, Tail};

/// Between SIGTERM and SIGKILL at a timeout.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long output is still read after the command exited (a leftover process could hold
/// the pipes open; its group was killed, but it may have left the group).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer for output.
const READ_CHUNK: usize = 16 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// argv.
    pub command: Vec<String>,
    /// Added to the agent's environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub workdir: PathBuf,
    /// Killed after this.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `Success`, `Failed` or `Timeout`.
    pub status: JobStatus,
    /// Exit status, when it exited.
    pub exit_code: Option<i32>,
    /// Why, when the exit code does not say.
    pub error: Option<String>,
    /// The output.
    pub log: JobLog,
}

/// Kills a process group when dropped: covers the end of a run, a timeout, and the run being
/// cancelled because the agent stops.
struct GroupGuard(i32);

impl GroupGuard {
    fn signal(&self, signal: i32) {
        // SAFETY: killpg only sends a signal; the group id is our child's pid, which was made
        // a group leader at spawn. ESRCH (group gone) is expected and ignored.
        unsafe {
            libc::killpg(self.0, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Runs `spec`, appending output to `tail`.
pub async fn run(spec: &RunSpec, tail: Arc<Mutex<Tail>>) -> Outcome {
    let outcome = |status, exit_code, error: Option<String>, tail: &Arc<Mutex<Tail>>| {
        let t = tail.lock().unwrap_or_else(|e| e.into_inner());
        Outcome {
            status,
            exit_code,
            error,
            log: JobLog {
                tail: t.bytes(),
                total: t.total(),
            },
        }
    };
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .envs(&spec.env)
        .current_dir(&spec.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let error = format!("could not start {:?}: {e}", spec.command[0]);
            return outcome(JobStatus::Failed, None, Some(error), &tail);
        }
    };
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return outcome(
            JobStatus::Failed,
            None,
            Some("the process vanished at start".into()),
            &tail,
        );
    };
    let group = GroupGuard(pid);
    let readers = [
        child.stdout.take().map(|s| tokio::spawn(read_into(s, tail.clone()))),
        child.stderr.take().map(|s| tokio::spawn(read_into(s, tail.clone()))),
    ];
    let (status, timed_out) = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(status) => (status, false),
        Err(_) => {
            group.signal(libc::SIGTERM);
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(status) => (status, true),
                Err(_) => {
                    group.signal(libc::SIGKILL);
                    (child.wait().await, true)
                }
            }
        }
    };
    // Whatever the command left running in its group goes with it.
    drop(group);
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(DRAIN_TIMEOUT, reader).await.is_err() {
            abort.abort();
        }
    }
    if timed_out {
        let error = format!("timed out after {}", humantime::format_duration(spec.timeout));
        return outcome(JobStatus::Timeout, None, Some(error), &tail);
    }
    match status {
        Ok(s) => match s.code() {
            Some(0) => outcome(JobStatus::Success, Some(0), None, &tail),
            Some(code) => outcome(JobStatus::Failed, Some(code), None, &tail),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let error = format!("killed by signal {}", s.signal().unwrap_or(0));
                outcome(JobStatus::Failed, None, Some(error), &tail)
            }
        },
        Err(e) => outcome(
            JobStatus::Failed,
            None,
            Some(format!("waiting for the command: {e}")),
            &tail,
        ),
    }
}

async fn read_into(mut from: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], timeout: Duration) -> RunSpec {
        RunSpec {
            command: argv.iter().map(|s| s.to_string()).collect(),
            env: BTreeMap::from([("SHOAL_TEST_VAR".to_string(), "v4lue".to_string())]),
            workdir: std::env::temp_dir(),
            timeout,
        }
    }

    async fn go(argv: &[&str], timeout: Duration) -> Outcome {
        run(&spec(argv, timeout), Arc::new(Mutex::new(Tail::new(1024)))).await
    }

    #[tokio::test]
    async fn success_failure_and_output() {
        let ok = go(
            &["sh", "-c", "echo out; echo err >&2; echo $SHOAL_TEST_VAR"],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(ok.status, JobStatus::Success);
        let text = String::from_utf8(ok.log.tail).unwrap();
        assert!(
            text.contains("out") && text.contains("err") && text.contains("v4lue"),
            "{text}"
        );
        let failed = go(&["sh", "-c", "exit 3"], Duration::from_secs(10)).await;
        assert_eq!((failed.status, failed.exit_code), (JobStatus::Failed, Some(3)));
        let missing = go(&["/nonexistent/backup-tool"], Duration::from_secs(10)).await;
        assert_eq!(missing.status, JobStatus::Failed);
        assert!(missing.error.unwrap().contains("could not start"));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        // The grandchild ignores nothing special, but lives in the background: only killing
        // the group reaches it.
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let out = go(&["sh", "-c", &script], Duration::from_millis(500)).await;
        assert_eq!(out.status, JobStatus::Timeout);
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // SIGKILL is delivered asynchronously: give the kernel a moment to finish it.
        let gone = || {
            // SAFETY: signal 0 only checks existence.
            let alive = unsafe { libc::kill(pid, 0) } == 0;
            !alive || is_zombie(pid)
        };
        for _ in 0..100 {
            if gone() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the background sleep is still running");
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')))
            .unwrap_or(true)
    }
}
