//! Counters kept by tasks that have no stats of their own, and the Prometheus text writer the
//! `/metrics` endpoint uses. The other layers (transport, membership, replication) keep their
//! own counters; `/metrics` reads them all.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::schedules::jobs::JobStatus;

/// Kinds of stream requests, in [`Counters::streams_served`] order.
pub const STREAM_KINDS: [&str; 4] = ["reconcile", "get_body", "confirm", "job"];

/// Job statuses counted, in [`Counters::job_runs`] order.
pub const JOB_STATUSES: [JobStatus; 5] = [
    JobStatus::Success,
    JobStatus::Failed,
    JobStatus::Timeout,
    JobStatus::Aborted,
    JobStatus::Skipped,
];

/// Counters shared by the RPC dispatcher, the scheduler, the notifier and the config reloader.
#[derive(Debug, Default)]
pub struct Counters {
    /// Streams peers opened, by request kind ([`STREAM_KINDS`]).
    pub streams_served: [AtomicU64; 4],
    /// Finished job runs by status ([`JOB_STATUSES`]).
    pub job_runs: [AtomicU64; 5],
    /// Webhook notifications delivered.
    pub webhook_delivered: AtomicU64,
    /// Webhook delivery attempts that failed (each is retried with backoff).
    pub webhook_failed: AtomicU64,
    /// Configuration reloads applied.
    pub reloads_applied: AtomicU64,
    /// Configuration reloads refused (the running configuration was kept).
    pub reloads_refused: AtomicU64,
    /// End of validity of this node's certificate, Unix seconds (0: no certificate).
    pub certificate_not_after: std::sync::Arc<AtomicU64>,
}

impl Counters {
    /// Counts a finished job.
    pub fn job_finished(&self, status: JobStatus) {
        if let Some(i) = JOB_STATUSES.iter().position(|s| *s == status) {
            self.job_runs[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a stream served.
    pub fn stream(&self, kind: usize) {
        if let Some(c) = self.streams_served.get(kind) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Builds Prometheus text exposition (format 0.0.4): one `# HELP` and `# TYPE` per family.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "X.")
            .sample("x_total", &[("a", "q\"\\\n")], 1);
        assert_eq!(
            e.finish(),
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\"} 1\n"
        );
    }
}
