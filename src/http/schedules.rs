//! Schedules and jobs: every node's schedules from the replica, this node's job history from
//! its store, and other nodes' jobs and logs fetched from them over QUIC on demand.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::files::Failure;
use super::{ApiState, api};
use crate::identity::PublicKey;
use crate::membership::MemberState;
use crate::replication::item::RecordKind;
use crate::schedules::jobs::{Job, JobStatus};
use crate::schedules::record::{JobSummary, SchedulesRecord};
use crate::schedules::{JobRef, RunError};

/// How long a request for another node's job waits for it.
pub const JOB_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Jobs returned by one `GET /api/jobs` at most.
pub const MAX_JOBS_PER_REQUEST: usize = 1000;

fn records(state: &ApiState) -> Vec<(PublicKey, SchedulesRecord)> {
    state.replication.records_of(RecordKind::Schedules)
}

fn record_of(state: &ApiState, node: &PublicKey) -> Option<SchedulesRecord> {
    state.replication.record(node, RecordKind::Schedules)
}

struct At<'a> {
    node: PublicKey,
    node_name: &'a Option<String>,
    schedule: &'a str,
}

fn view(at: At<'_>, j: &JobSummary) -> api::JobView {
    let now = crate::time::unix_ms();
    let end = j.ended_ms.unwrap_or(now);
    api::JobView {
        id: JobRef::new(&at.node, j.seq).to_string(),
        node: at.node,
        node_name: at.node_name.clone(),
        schedule: at.schedule.to_string(),
        status: j.status,
        trigger: j.trigger,
        started: crate::time::rfc3339_ms(j.started_ms),
        started_ms: j.started_ms,
        ended: j.ended_ms.map(crate::time::rfc3339_ms),
        ended_ms: j.ended_ms,
        duration_secs: end.saturating_sub(j.started_ms) as f64 / 1000.0,
        exit_code: j.exit_code,
        error: j.error.clone(),
    }
}

fn local_view(state: &ApiState, j: &Job) -> api::JobView {
    let name = Some(state.facts.name.clone());
    view(
        At {
            node: state.facts.key,
            node_name: &name,
            schedule: &j.schedule,
        },
        &JobSummary::from(j),
    )
}

#[utoipa::path(get, path = "/api/schedules", tag = "schedules", responses((status = 200, description = "Every node's schedules, grouped by node, from this node's replica (env values never)", body = api::ScheduleList)))]
pub(super) async fn list(State(state): State<ApiState>) -> Json<api::ScheduleList> {
    let snapshot = state.membership.snapshot();
    let now = crate::time::unix_ms();
    let mut nodes: Vec<api::NodeSchedules> = records(&state)
        .into_iter()
        .map(|(key, record)| {
            let member = snapshot.members.iter().find(|m| m.id.key == key);
            let local = key == state.facts.key;
            let name = super::node_name(&state, &key);
            let schedules: Vec<api::ScheduleView> = record
                .schedules
                .iter()
                .map(|s| {
                    let at = || At {
                        node: key,
                        node_name: &name,
                        schedule: &s.id,
                    };
                    let recent: Vec<api::JobView> = s.recent.iter().map(|j| view(at(), j)).collect();
                    api::ScheduleView {
                        id: s.id.clone(),
                        description: s.description.clone(),
                        schedule: s.schedule.clone(),
                        timezone: s.timezone.clone(),
                        command: s.command.clone(),
                        env: s.env_names.clone(),
                        timeout_secs: s.timeout_secs,
                        repository: s.repository.clone(),
                        retention: s.retention.clone(),
                        targets: s.targets.clone(),
                        next_run: s.next_run_ms.map(crate::time::rfc3339_ms),
                        next_run_ms: s.next_run_ms,
                        running: recent
                            .iter()
                            .find(|j| j.status == JobStatus::Running)
                            .map(|j| j.id.clone()),
                        last: recent.first().cloned(),
                        recent,
                    }
                })
                .collect();
            api::NodeSchedules {
                up: local || member.is_some_and(|m| m.state == MemberState::Alive),
                name,
                key,
                local,
                published_at: crate::time::rfc3339_ms(record.published_ms),
                record_age_secs: now.saturating_sub(record.published_ms) / 1000,
                count: schedules.len(),
                schedules,
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
    Json(api::ScheduleList {
        mesh_nodes: snapshot.counts().0,
        nodes,
    })
}

#[utoipa::path(post, path = "/api/schedules/{id}/run", tag = "schedules", params(("id" = String, Path, description = "Schedule id on this node")), request_body(content = Object, content_type = "application/json", description = "`{}`"), responses((status = 202, description = "Started", body = api::RunStarted), (status = 404, description = "No such schedule here", body = api::ApiError), (status = 409, description = "Already running", body = api::ApiError), (status = 415, description = "Body is not JSON")))]
/// `POST /api/schedules/{id}/run`. The body must be JSON (`{}`): a cross-site form cannot
/// send that, so a web page cannot start jobs through a browser on the node.
pub(super) async fn run(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Json(_body): Json<serde_json::Value>,
) -> Result<(StatusCode, Json<api::RunStarted>), Failure> {
    match state.schedules.run_now(&id).await {
        Ok(seq) => Ok((
            StatusCode::ACCEPTED,
            Json(api::RunStarted {
                schedule: id,
                job: JobRef::new(&state.facts.key, seq).to_string(),
            }),
        )),
        Err(e) => {
            let status = match e {
                RunError::Unknown(_) => StatusCode::NOT_FOUND,
                RunError::Running { .. } => StatusCode::CONFLICT,
                RunError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
                RunError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(Failure::new(status, e.to_string()))
        }
    }
}

/// Query of `GET /api/jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct JobsQuery {
    /// Node name or base64 key.
    node: Option<String>,
    /// Schedule id.
    schedule: Option<String>,
    /// At most this many (newest). Default 100.
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/jobs", tag = "schedules", params(JobsQuery), responses((status = 200, description = "Jobs, newest first: this node's history, other nodes' latest", body = api::JobList), (status = 404, description = "No node of that name has published schedules", body = api::ApiError), (status = 409, description = "A key prefix several nodes share", body = api::Ambiguous)))]
pub(super) async fn jobs(
    State(state): State<ApiState>,
    Query(q): Query<JobsQuery>,
) -> Result<Json<api::JobList>, super::nodes::NotOne> {
    let limit = q.limit.unwrap_or(100).min(MAX_JOBS_PER_REQUEST);
    let published = records(&state);
    let only = match &q.node {
        Some(n) => {
            let mut known: Vec<PublicKey> = published.iter().map(|(k, _)| *k).collect();
            known.push(state.facts.key);
            Some(super::nodes::find(&state, n, &known)?)
        }
        None => None,
    };
    let wanted = |key: &PublicKey| only.is_none_or(|o| o == *key);
    let mut jobs = Vec::new();
    if wanted(&state.facts.key) {
        let list = state.schedules.jobs().list(q.schedule.as_deref(), limit);
        jobs.extend(list.iter().map(|j| local_view(&state, j)));
    }
    for (key, record) in published {
        if key == state.facts.key || !wanted(&key) {
            continue;
        }
        let name = super::node_name(&state, &key);
        for s in record
            .schedules
            .iter()
            .filter(|s| q.schedule.as_ref().is_none_or(|w| *w == s.id))
        {
            for j in &s.recent {
                let at = At {
                    node: key,
                    node_name: &name,
                    schedule: &s.id,
                };
                jobs.push(view(at, j));
            }
        }
    }
    jobs.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
    jobs.truncate(limit);
    Ok(Json(api::JobList { jobs }))
}

/// The node a job id points at.
fn node_of(state: &ApiState, job: &JobRef) -> Result<PublicKey, Failure> {
    let mut keys: BTreeSet<PublicKey> = records(state).into_iter().map(|(k, _)| k).collect();
    keys.extend(state.membership.snapshot().members.iter().map(|m| m.id.key));
    let matching: Vec<PublicKey> = keys.into_iter().filter(|k| job.is_of(k)).collect();
    match matching.as_slice() {
        [key] => Ok(*key),
        [] => Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!("no known node ran job {job}"),
        )),
        _ => Err(Failure::new(
            StatusCode::CONFLICT,
            format!("job {job}: several nodes share that key prefix"),
        )),
    }
}

fn parse(id: &str) -> Result<JobRef, Failure> {
    id.parse().map_err(|e: String| Failure::new(StatusCode::BAD_REQUEST, e))
}

/// Asks `node` for job `seq`, bounded by [`JOB_FETCH_TIMEOUT`], with errors a person can act on.
async fn fetch(state: &ApiState, node: PublicKey, seq: u64, log: bool) -> Result<crate::rpc::JobReply, Failure> {
    let name = super::node_name(state, &node).unwrap_or_else(|| node.short());
    let snapshot = state.membership.snapshot();
    let member = snapshot.members.iter().find(|m| m.id.key == node);
    let target = match member {
        Some(m) if m.state == MemberState::Alive => m.id.target(),
        _ => {
            return Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("node {name} is down; its job logs are kept on that node only"),
            ));
        }
    };
    match tokio::time::timeout(
        JOB_FETCH_TIMEOUT,
        crate::rpc::fetch_job(&state.transport, node, Some(target), seq, log),
    )
    .await
    {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(Failure::new(
            StatusCode::BAD_GATEWAY,
            format!("could not fetch the job from node {name}: {e}"),
        )),
        Err(_) => Err(Failure::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("node {name} did not answer within {}s", JOB_FETCH_TIMEOUT.as_secs()),
        )),
    }
}

fn not_found(job: &JobRef) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        format!("no job {job} (unknown, or pruned from the history)"),
    )
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "schedules", params(("id" = String, Path, description = "Job id: <node key prefix>-<seq>")), responses((status = 200, body = api::JobView), (status = 400, description = "Malformed id", body = api::ApiError), (status = 404, description = "Unknown or pruned", body = api::ApiError), (status = 503, description = "Its node is down", body = api::ApiError), (status = 504, description = "Its node did not answer", body = api::ApiError)))]
/// `GET /api/jobs/{id}`.
pub(super) async fn job(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<api::JobView>, Failure> {
    let job = parse(&id)?;
    if job.is_of(&state.facts.key) {
        let j = state.schedules.jobs().get(job.seq).ok_or_else(|| not_found(&job))?;
        return Ok(Json(local_view(&state, &j)));
    }
    let node = node_of(&state, &job)?;
    let name = super::node_name(&state, &node);
    if let Some(record) = record_of(&state, &node) {
        for s in &record.schedules {
            if let Some(j) = s.recent.iter().find(|j| j.seq == job.seq) {
                let at = At {
                    node,
                    node_name: &name,
                    schedule: &s.id,
                };
                return Ok(Json(view(at, j)));
            }
        }
    }
    let reply = fetch(&state, node, job.seq, false).await?;
    let j = reply.job.ok_or_else(|| not_found(&job))?;
    let at = At {
        node,
        node_name: &name,
        schedule: &j.schedule,
    };
    Ok(Json(view(at, &JobSummary::from(&j))))
}

#[utoipa::path(get, path = "/api/jobs/{id}/log", tag = "schedules", params(("id" = String, Path, description = "Job id: <node key prefix>-<seq>")), responses((status = 200, description = "The kept tail of its output, fetched from its node", body = api::JobLogView), (status = 400, description = "Malformed id", body = api::ApiError), (status = 404, description = "Unknown or pruned", body = api::ApiError), (status = 503, description = "Its node is down", body = api::ApiError), (status = 504, description = "Its node did not answer", body = api::ApiError)))]
/// `GET /api/jobs/{id}/log`.
pub(super) async fn log(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<api::JobLogView>, Failure> {
    let job = parse(&id)?;
    let (view, log) = if job.is_of(&state.facts.key) {
        let j = state.schedules.jobs().get(job.seq).ok_or_else(|| not_found(&job))?;
        (local_view(&state, &j), state.schedules.jobs().log(job.seq))
    } else {
        let node = node_of(&state, &job)?;
        let reply = fetch(&state, node, job.seq, true).await?;
        let j = reply.job.ok_or_else(|| not_found(&job))?;
        let name = super::node_name(&state, &node);
        let at = At {
            node,
            node_name: &name,
            schedule: &j.schedule,
        };
        (view(at, &JobSummary::from(&j)), reply.log)
    };
    let (tail, total) = log.map(|l| (l.tail, l.total)).unwrap_or_default();
    Ok(Json(api::JobLogView {
        job: view,
        output_bytes: total,
        truncated: total > tail.len() as u64,
        log: String::from_utf8_lossy(&tail).into_owned(),
    }))
}
