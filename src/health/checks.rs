//! Configured checks: each runs in its own task on its interval, with a timeout, and reports
//! its result to the health task through a bounded channel.
//!
//! A check is `unknown` until it has run, `ok` after a success, and `failing` once it has
//! failed more than `retries` times in a row.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{CheckConfig, CheckType};

/// Longest error message kept in a check result.
pub const MAX_ERROR_LEN: usize = 200;
/// Capacity of the channel from check tasks to the health task.
pub const RESULTS_CAPACITY: usize = 64;

/// State of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Has not completed a run yet.
    Unknown,
    /// Last run succeeded.
    Ok,
    /// Failed more than `retries` times in a row.
    Failing,
}

/// The latest result of one check, as published in the health report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResult {
    /// Check name.
    pub name: String,
    /// `http`, `tcp` or `command`.
    pub kind: CheckType,
    /// Group, if configured.
    pub group: Option<String>,
    /// Current state.
    pub status: CheckStatus,
    /// Duration of the last run, milliseconds.
    pub latency_ms: Option<u32>,
    /// Error of the last failed run.
    pub error: Option<String>,
    /// When the state last changed, Unix milliseconds.
    pub since_ms: u64,
}

/// Starts one task per check; results arrive on the returned channel.
pub fn spawn_all(
    checks: &[CheckConfig],
    default_interval: Duration,
    tasks: &mut tokio::task::JoinSet<()>,
) -> (Vec<CheckResult>, mpsc::Receiver<CheckResult>) {
    let (tx, rx) = mpsc::channel(RESULTS_CAPACITY);
    let initial = checks
        .iter()
        .map(|c| CheckResult {
            name: c.name.clone(),
            kind: c.kind,
            group: c.group.clone(),
            status: CheckStatus::Unknown,
            latency_ms: None,
            error: None,
            since_ms: crate::time::unix_ms(),
        })
        .collect();
    for check in checks {
        tasks.spawn(run(
            check.clone(),
            check.interval.unwrap_or(default_interval),
            tx.clone(),
        ));
    }
    (initial, rx)
}

async fn run(check: CheckConfig, interval: Duration, tx: mpsc::Sender<CheckResult>) {
    let client = reqwest::Client::builder().timeout(check.timeout).build().ok();
    let mut failures = 0u32;
    let mut current = CheckStatus::Unknown;
    let mut since = crate::time::unix_ms();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(check.timeout, probe(&check, client.as_ref())).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {:?}", check.timeout)),
        };
        let latency = started.elapsed();
        let status = match &outcome {
            Ok(()) => {
                failures = 0;
                CheckStatus::Ok
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                if failures > check.retries {
                    CheckStatus::Failing
                } else {
                    current
                }
            }
        };
        if status != current {
            current = status;
            since = crate::time::unix_ms();
        }
        let mut error = outcome.err();
        if let Some(e) = &mut error
            && e.len() > MAX_ERROR_LEN
        {
            let cut = (0..=MAX_ERROR_LEN).rev().find(|i| e.is_char_boundary(*i)).unwrap_or(0);
            e.truncate(cut);
        }
        let result = CheckResult {
            name: check.name.clone(),
            kind: check.kind,
            group: check.group.clone(),
            status: current,
            latency_ms: Some(latency.as_millis().min(u32::MAX as u128) as u32),
            error,
            since_ms: since,
        };
        if tx.send(result).await.is_err() {
            return;
        }
    }
}

async fn probe(check: &CheckConfig, client: Option<&reqwest::Client>) -> Result<(), String> {
    match check.kind {
        CheckType::Http => {
            let url = check.url.as_deref().unwrap_or_default();
            let client = client.ok_or("cannot build an HTTP client")?;
            let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
            let got = resp.status().as_u16();
            if got == check.expect_status {
                Ok(())
            } else {
                Err(format!("status {got}, expected {}", check.expect_status))
            }
        }
        CheckType::Tcp => {
            let address = check.address.as_deref().unwrap_or_default();
            tokio::net::TcpStream::connect(address)
                .await
                .map(|_| ())
                .map_err(|e| format!("{address}: {e}"))
        }
        CheckType::Command => {
            let argv = check.command.as_deref().unwrap_or_default();
            let (program, args) = argv.split_first().ok_or("empty command")?;
            let out = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| format!("{program}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                let tail = String::from_utf8_lossy(if out.stderr.is_empty() {
                    &out.stdout
                } else {
                    &out.stderr
                });
                let tail = tail.trim();
                Err(format!(
                    "{}{}{}",
                    out.status,
                    if tail.is_empty() { "" } else { ": " },
                    tail
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckType) -> CheckConfig {
        CheckConfig {
            name: "t".into(),
            kind,
            url: None,
            expect_status: 200,
            address: None,
            command: None,
            interval: None,
            timeout: Duration::from_secs(2),
            retries: 0,
            group: None,
        }
    }

    #[tokio::test]
    async fn command_and_tcp_probes() {
        let mut ok = check(CheckType::Command);
        ok.command = Some(vec!["true".into()]);
        assert!(probe(&ok, None).await.is_ok());
        let mut fail = check(CheckType::Command);
        fail.command = Some(vec!["sh".into(), "-c".into(), "echo broken >&2; exit 3".into()]);
        let err = probe(&fail, None).await.unwrap_err();
        assert!(err.contains("3") && err.contains("broken"), "{err}");
        let mut missing = check(CheckType::Command);
        missing.command = Some(vec!["/nonexistent/program".into()]);
        assert!(probe(&missing, None).await.is_err());

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tcp = check(CheckType::Tcp);
        tcp.address = Some(listener.local_addr().unwrap().to_string());
        assert!(probe(&tcp, None).await.is_ok());
        drop(listener);
        assert!(probe(&tcp, None).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_delay_failing() {
        let mut c = check(CheckType::Command);
        c.command = Some(vec!["false".into()]);
        c.retries = 2;
        let mut set = tokio::task::JoinSet::new();
        let (_, mut rx) = spawn_all(&[c], Duration::from_secs(1), &mut set);
        let statuses: Vec<CheckStatus> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(rx.recv().await.unwrap().status);
            }
            v
        };
        assert_eq!(
            statuses,
            [
                CheckStatus::Unknown,
                CheckStatus::Unknown,
                CheckStatus::Failing,
                CheckStatus::Failing
            ]
        );
    }
}
