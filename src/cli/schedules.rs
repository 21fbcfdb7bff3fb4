//! `shoal schedules`, `shoal run`, `shoal jobs` and `shoal job log`.

use std::time::Duration;

use super::client::{ClientArgs, call, fetch, get, print_json};
use super::table::{human_secs, render};
use crate::http::api;
use crate::schedules::jobs::JobStatus;

/// How often `shoal run --wait` polls the job.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Arguments of `shoal run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Schedule id (on the local node).
    id: String,
    /// Wait for the job to end, print its log, and exit 0 only if it succeeded.
    #[arg(long, short)]
    wait: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `shoal jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    /// Only jobs of this node (name or key).
    #[arg(long)]
    node: Option<String>,
    /// Only jobs of this schedule.
    #[arg(long)]
    schedule: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[command(flatten)]
    client: ClientArgs,
}

/// `shoal job ...`.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Print a job's output (fetched from its node if it ran elsewhere).
    Log {
        /// Job id, as listed by `shoal jobs`.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one job.
    Show {
        /// Job id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// "in 5m (2026-11-22 02:00:00 +01:00)" or "5m ago (...)".
fn when(ms: u64, now_ms: u64) -> String {
    let local = chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S %:z")
                .to_string()
        })
        .unwrap_or_default();
    if ms >= now_ms {
        format!("in {} ({local})", human_secs((ms - now_ms).div_ceil(1000)))
    } else {
        format!("{} ago ({local})", human_secs((now_ms - ms) / 1000))
    }
}

fn last(job: Option<&api::JobView>, now_ms: u64) -> String {
    match job {
        None => "never run".into(),
        Some(j) => format!(
            "{} {}",
            j.status.as_str(),
            when(j.ended_ms.unwrap_or(j.started_ms), now_ms)
        ),
    }
}

/// `shoal schedules`.
pub async fn schedules(args: &ClientArgs) -> i32 {
    let list: api::ScheduleList = match fetch(args, "/api/schedules").await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let now = crate::time::unix_ms();
    println!("Mesh: {} nodes", list.mesh_nodes);
    for node in &list.nodes {
        let name = node.name.clone().unwrap_or_else(|| node.key.short());
        let state = if node.up { "" } else { ", DOWN: last known" };
        println!(
            "\n{name}{} ({} schedule{}{state}, record {} old)",
            if node.local { " *" } else { "" },
            node.count,
            if node.count == 1 { "" } else { "s" },
            human_secs(node.record_age_secs)
        );
        if node.schedules.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = node
            .schedules
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.schedule.clone(),
                    s.next_run_ms.map(|t| when(t, now)).unwrap_or_else(|| "-".into()),
                    match &s.running {
                        Some(j) => format!("running ({j})"),
                        None => last(s.last.as_ref(), now),
                    },
                ]
            })
            .collect();
        println!("{}", render(&["ID", "SCHEDULE", "NEXT RUN", "LAST"], &rows));
    }
    0
}

/// `shoal run ID`.
pub async fn run(args: &RunArgs) -> i32 {
    let path = format!("/api/schedules/{}/run", args.id);
    let reply = match call(
        &args.client,
        reqwest::Method::POST,
        &path,
        Some((b"{}".to_vec(), "application/json")),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if !reply.status.is_success() {
        eprintln!("error: {}", reply.error());
        return 1;
    }
    let started: api::RunStarted = match reply
        .json()
        .and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if !args.wait {
        if args.client.json {
            print_json(&serde_json::to_value(&started).unwrap_or_default());
        } else {
            println!("started job {} of schedule {}", started.job, started.schedule);
        }
        return 0;
    }
    loop {
        tokio::time::sleep(WAIT_POLL).await;
        let job: api::JobView = match get(&args.client, &format!("/api/jobs/{}", started.job)).await {
            Ok((j, _)) => j,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        if job.status == JobStatus::Running {
            continue;
        }
        let code = print_log(&args.client, &started.job).await;
        eprintln!("job {} {}", started.job, describe(&job));
        return if code == 0 && job.status == JobStatus::Success {
            0
        } else {
            1
        };
    }
}

fn describe(j: &api::JobView) -> String {
    let mut s = format!("{} after {:.1}s", j.status.as_str(), j.duration_secs);
    if let Some(c) = j.exit_code {
        s.push_str(&format!(", exit code {c}"));
    }
    if let Some(e) = &j.error {
        s.push_str(&format!(": {e}"));
    }
    s
}

/// `shoal jobs`.
pub async fn jobs(args: &JobsArgs) -> i32 {
    let mut query = vec![format!("limit={}", args.limit)];
    if let Some(n) = &args.node {
        query.push(format!("node={}", super::client::encode(n)));
    }
    if let Some(s) = &args.schedule {
        query.push(format!("schedule={}", super::client::encode(s)));
    }
    let list: api::JobList = match fetch(&args.client, &format!("/api/jobs?{}", query.join("&"))).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let now = crate::time::unix_ms();
    let rows: Vec<Vec<String>> = list
        .jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.node_name.clone().unwrap_or_else(|| j.node.short()),
                j.schedule.clone(),
                j.status.as_str().to_string(),
                when(j.started_ms, now),
                format!("{:.1}s", j.duration_secs),
                j.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    println!(
        "{}",
        render(
            &["ID", "NODE", "SCHEDULE", "STATUS", "STARTED", "DURATION", "EXIT"],
            &rows
        )
    );
    0
}

/// `shoal job ...`.
pub async fn job(command: &JobCommand) -> i32 {
    match command {
        JobCommand::Log { id, client } => print_log(client, id).await,
        JobCommand::Show { id, client } => {
            match get::<api::JobView>(client, &format!("/api/jobs/{}", super::client::encode(id))).await {
                Ok((job, raw)) => {
                    if client.json {
                        print_json(&raw);
                    } else {
                        let node = job.node_name.clone().unwrap_or_else(|| job.node.short());
                        println!(
                            "job {} of schedule {} on {node}: {}",
                            job.id,
                            job.schedule,
                            describe(&job)
                        );
                        println!("started {}", job.started);
                    }
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
    }
}

async fn print_log(client: &ClientArgs, id: &str) -> i32 {
    match get::<api::JobLogView>(client, &format!("/api/jobs/{}/log", super::client::encode(id))).await {
        Ok((log, raw)) => {
            if client.json {
                print_json(&raw);
                return 0;
            }
            if log.truncated {
                println!(
                    "[... {} earlier bytes not kept ...]",
                    log.output_bytes.saturating_sub(log.log.len() as u64)
                );
            }
            print!("{}", log.log);
            if !log.log.is_empty() && !log.log.ends_with('\n') {
                println!();
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
