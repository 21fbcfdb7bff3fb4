//! Schedules and jobs: agents run their schedules, every node shows every node's schedules
//! and job statuses from its replica, and job logs are fetched from their node over QUIC.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use shoal::config::schedules::ScheduleConfig;
use shoal::http::api;
use shoal::schedules::jobs::JobStatus;

const SECRET: &str = "hunter2-very-secret-value";

fn schedule(id: &str, cron: &str, argv: &[&str]) -> ScheduleConfig {
    let mut s: ScheduleConfig = toml::from_str(&format!(
        "id = {id:?}\nschedule = {cron:?}\ncommand = []\nrepository = \"s3:backups/{id}\"\nretention = \"7d:4w\"\ntargets = [\"/srv\"]"
    ))
    .unwrap();
    s.command = argv.iter().map(|a| a.to_string()).collect();
    s.env.insert("BACKUP_PASSWORD".into(), SECRET.into());
    s
}

async fn schedules_of(http: SocketAddr, node: &str) -> Option<api::NodeSchedules> {
    let list: api::ScheduleList = get_json(http, "/api/schedules").await.ok()?;
    list.nodes.into_iter().find(|n| n.name.as_deref() == Some(node))
}

async fn last_status(http: SocketAddr, node: &str, id: &str) -> Option<JobStatus> {
    let n = schedules_of(http, node).await?;
    n.schedules.iter().find(|s| s.id == id)?.last.as_ref().map(|j| j.status)
}

async fn post(http: SocketAddr, path: &str, json: bool) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{http}{path}"))
        .timeout(Duration::from_secs(10));
    if json {
        req = req.json(&serde_json::json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn get_raw(http: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("http://{http}{path}"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn process_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z'))
}

fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_run_on_their_node_and_every_node_shows_them() {
    let net = TestNetwork::new();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("slow.pid");
    let b = start(net.config("node-b")).await;
    let mut c = net.config("node-a");
    bootstrap(&mut c, &[b.cluster_addr]);
    let slow_script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
    let mut slow = schedule("slow", "@yearly", &["sh", "-c", &slow_script]);
    slow.timeout = Duration::from_secs(1);
    c.schedules = vec![
        schedule("tick", "* * * * * *", &["sh", "-c", "echo tick"]),
        schedule("broken", "* * * * * *", &["sh", "-c", "echo oops >&2; exit 3"]),
        slow,
    ];
    let a = start(c).await;
    eventually(Duration::from_secs(20), "cluster formed", || {
        alive_count(&a) == 2 && alive_count(&b) == 2
    })
    .await;

    // B shows A's schedules with their results, from its replica.
    let http = b.http_addr;
    wait_until(
        Duration::from_secs(20),
        "B sees tick succeed and broken fail on A",
        || async move {
            last_status(http, "node-a", "tick").await == Some(JobStatus::Success)
                && last_status(http, "node-a", "broken").await == Some(JobStatus::Failed)
        },
    )
    .await;
    let group = schedules_of(b.http_addr, "node-a").await.unwrap();
    assert_eq!(group.count, 3);
    assert!(group.up && !group.local);
    let tick = &group.schedules[0];
    assert_eq!((tick.id.as_str(), tick.schedule.as_str()), ("tick", "* * * * * *"));
    assert_eq!(tick.repository.as_deref(), Some("s3:backups/tick"));
    assert_eq!(tick.env, ["BACKUP_PASSWORD"], "env names are shown, values never");
    assert!(tick.next_run_ms.is_some_and(|t| t > shoal::time::unix_ms() - 2000));
    let broken = group.schedules.iter().find(|s| s.id == "broken").unwrap();
    assert_eq!(broken.last.as_ref().unwrap().exit_code, Some(3));
    let list: api::ScheduleList = get_json(b.http_addr, "/api/schedules").await.unwrap();
    assert_eq!(list.mesh_nodes, 2);
    let b_group = list.nodes.iter().find(|n| n.name.as_deref() == Some("node-b")).unwrap();
    assert_eq!(
        (b_group.count, b_group.local),
        (0, true),
        "nodes without schedules are listed too"
    );

    // A failed job is an event on every node.
    let http = b.http_addr;
    wait_until(Duration::from_secs(20), "job_failed event on B", || async move {
        get_json::<api::Events>(http, "/api/events?limit=1000")
            .await
            .is_ok_and(|e| {
                e.events
                    .iter()
                    .any(|e| e.kind == shoal::events::EventKind::JobFailed && e.schedule.as_deref() == Some("broken"))
            })
    })
    .await;

    // Run-now of a long command with a short timeout: timeout, and nothing left behind.
    let (status, body) = post(a.http_addr, "/api/schedules/slow/run", true).await;
    assert_eq!(status, 202, "{body}");
    let job_id = body["job"].as_str().unwrap().to_string();
    let http = b.http_addr;
    wait_until(Duration::from_secs(20), "B sees slow time out", || async move {
        last_status(http, "node-a", "slow").await == Some(JobStatus::Timeout)
    })
    .await;
    let pid = pid_in(&pidfile).expect("the job wrote its child's pid");
    eventually(Duration::from_secs(5), "the job's background process is gone", || {
        !process_alive(pid)
    })
    .await;
    let job: api::JobView = get_json(b.http_addr, &format!("/api/jobs/{job_id}")).await.unwrap();
    assert_eq!((job.status, job.schedule.as_str()), (JobStatus::Timeout, "slow"));
    assert!(job.error.unwrap().contains("timed out"));

    // Bad run-now requests change nothing and say why.
    assert_eq!(post(a.http_addr, "/api/schedules/nope/run", true).await.0, 404);
    let (status, _) = post(a.http_addr, "/api/schedules/tick/run", false).await;
    assert!(
        status == 415 || status == 400,
        "a body that is not JSON is refused: {status}"
    );

    // The secret is nowhere: not in any API answer, not in any replicated record.
    for http in [a.http_addr, b.http_addr] {
        for path in ["/api/schedules", "/api/jobs", "/api/nodes", "/api/events"] {
            let (_, text) = get_raw(http, path).await;
            assert!(!text.contains(SECRET), "{path} leaks an env value");
        }
    }
    for (_, content) in b.replication().records(shoal::replication::item::RecordKind::Schedules) {
        assert!(!content.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    }

    // The CLI prints schedules grouped by node.
    let url = format!("http://{}", b.http_addr);
    let (code, out, err) = tokio::task::spawn_blocking(move || run_shoal(&["schedules", "--url", &url]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("Mesh: 2 nodes"), "{out}");
    assert!(
        out.contains("node-a (3 schedules") && out.contains("node-b * (0 schedules"),
        "{out}"
    );
    assert!(out.contains("broken") && out.contains("failed"), "{out}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_runs_are_skipped_and_a_restart_aborts_the_running_job() {
    let net = TestNetwork::new();
    let mut c = net.config("solo");
    c.schedules = vec![schedule("long", "* * * * * *", &["sleep", "30"])];
    let a = start(c).await;
    let http = a.http_addr;
    wait_until(
        Duration::from_secs(20),
        "a running job and a skipped one",
        || async move {
            let Ok(list) = get_json::<api::JobList>(http, "/api/jobs?schedule=long").await else {
                return false;
            };
            list.jobs.iter().filter(|j| j.status == JobStatus::Running).count() == 1
                && list.jobs.iter().any(|j| j.status == JobStatus::Skipped)
        },
    )
    .await;
    let list: api::JobList = get_json(http, "/api/jobs?schedule=long").await.unwrap();
    let running = list
        .jobs
        .iter()
        .find(|j| j.status == JobStatus::Running)
        .unwrap()
        .id
        .clone();
    // Run-now while it runs is refused.
    assert_eq!(post(http, "/api/schedules/long/run", true).await.0, 409);

    // A crash: the next start marks the cut-off job aborted.
    a.kill().await;
    let mut c = net.config("solo");
    c.schedules = vec![schedule("long", "@yearly", &["sleep", "30"])];
    let a = start(c).await;
    let job: api::JobView = get_json(a.http_addr, &format!("/api/jobs/{running}")).await.unwrap();
    assert_eq!(job.status, JobStatus::Aborted);
    assert!(job.error.as_deref().unwrap().contains("restart"), "{:?}", job.error);
    assert!(job.ended_ms.is_some());
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_logs_come_from_their_node_and_fail_fast_when_it_is_down() {
    let net = TestNetwork::new();
    let b = start(net.config("node-b")).await;
    let mut c = net.config("node-a");
    bootstrap(&mut c, &[b.cluster_addr]);
    c.schedules = vec![schedule(
        "hello",
        "@yearly",
        &["sh", "-c", "echo hello from a; echo to stderr >&2"],
    )];
    let a = start(c).await;
    eventually(Duration::from_secs(20), "cluster formed", || {
        alive_count(&a) == 2 && alive_count(&b) == 2
    })
    .await;

    let (status, body) = post(a.http_addr, "/api/schedules/hello/run", true).await;
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_str().unwrap().to_string();
    let http = b.http_addr;
    wait_until(Duration::from_secs(20), "B sees the job succeed", || async move {
        last_status(http, "node-a", "hello").await == Some(JobStatus::Success)
    })
    .await;
    let log: api::JobLogView = get_json(b.http_addr, &format!("/api/jobs/{job}/log")).await.unwrap();
    assert!(
        log.log.contains("hello from a") && log.log.contains("to stderr"),
        "{}",
        log.log
    );
    assert!(!log.truncated);
    assert_eq!(log.job.node_name.as_deref(), Some("node-a"));

    // Unknown and malformed ids.
    let a_prefix = job.split('-').next().unwrap();
    assert_eq!(
        get_raw(b.http_addr, &format!("/api/jobs/{a_prefix}-999/log")).await.0,
        404
    );
    assert_eq!(get_raw(b.http_addr, "/api/jobs/not-a-job/log").await.0, 400);
    assert_eq!(get_raw(b.http_addr, "/api/jobs/000000000000-1/log").await.0, 404);

    // A is down: B answers at once with a clear error, and still lists A's schedules.
    let a_key = a.key;
    a.kill().await;
    eventually(Duration::from_secs(20), "B sees A down", || {
        state_of(&b, &a_key) == Some(shoal::membership::MemberState::Down)
    })
    .await;
    // (get_raw gives up after 20 s: an answer at all means no hang.)
    let (status, text) = get_raw(b.http_addr, &format!("/api/jobs/{job}/log")).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("node-a is down"), "{text}");
    let group = schedules_of(b.http_addr, "node-a").await.unwrap();
    assert!(!group.up, "shown down, with its last record");
    assert_eq!(group.schedules[0].last.as_ref().unwrap().status, JobStatus::Success);
    b.shutdown().await;
}
