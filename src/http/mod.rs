//! The local HTTP API (axum). Read-only views over state other tasks publish; handlers never
//! wait on the membership task.

pub mod api;
mod dashboard;
mod files;
pub mod guard;
mod metrics;
mod nodes;
mod openapi;
mod schedules;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;

use crate::identity::PublicKey;
use crate::membership::{MembershipHandle, Snapshot};
use crate::replication::ReplicationHandle;

/// Facts about the local node that do not change while it runs.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// Name.
    pub name: String,
    /// Key.
    pub key: PublicKey,
    /// Advertised cluster address.
    pub cluster_addr: SocketAddr,
    /// Network key, if any.
    pub network: Option<PublicKey>,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Monotonic start.
    pub started: Instant,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// Static facts.
    pub facts: Arc<NodeFacts>,
    /// Membership snapshots.
    pub membership: MembershipHandle,
    /// Replicated state.
    pub replication: ReplicationHandle,
    /// Who is called what.
    pub names: crate::names::NamesHandle,
    /// The event log.
    pub events: std::sync::Arc<crate::events::EventLog>,
    /// Nodes with no report newer than this are not listed (`[health] forget_after`).
    pub forget_after: std::time::Duration,
    /// The scheduler (run-now) and the local job history.
    pub schedules: crate::schedules::SchedulesHandle,
    /// To fetch other nodes' job logs.
    pub transport: crate::transport::Transport,
    /// Counters of the dispatcher, scheduler, notifier and reloader.
    pub counters: std::sync::Arc<crate::metrics::Counters>,
    /// Allowed hosts and the write token; the reload task publishes changes.
    pub access: tokio::sync::watch::Receiver<Arc<guard::Access>>,
    /// Requests refused before reaching a handler, by reason.
    pub refusals: Arc<guard::Refusals>,
}

/// Request bodies beyond the largest file get this much room for the envelope around it.
const ENVELOPE_OVERHEAD: usize = 64 * 1024;

/// The API router.
pub fn router(state: ApiState) -> Router {
    let max_upload = state.replication.policy().max_file_size as usize + ENVELOPE_OVERHEAD;
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/app.css", get(dashboard::app_css))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/docs", get(dashboard::docs))
        .route("/assets/docs.js", get(dashboard::docs_js))
        .route("/api/health", get(health))
        .route("/api/members", get(members))
        .route("/api/replication", get(replication))
        .route("/api/nodes", get(nodes::list))
        .route("/api/nodes/{name}", get(nodes::one))
        .route("/api/graph", get(nodes::graph))
        .route("/api/events", get(nodes::events))
        .route("/api/events/stream", get(nodes::stream))
        .route("/api/files", get(files::list))
        .route(
            "/api/files/{name}",
            get(files::get)
                .put(files::put)
                .delete(files::delete)
                .layer(DefaultBodyLimit::max(max_upload)),
        )
        .route("/api/files/{name}/content", get(files::content))
        .route("/api/schedules", get(schedules::list))
        .route("/api/schedules/{id}/run", axum::routing::post(schedules::run))
        .route("/api/jobs", get(schedules::jobs))
        .route("/api/jobs/{id}", get(schedules::job))
        .route("/api/jobs/{id}/log", get(schedules::log))
        .fallback(not_found)
        // Over every route and the fallback: nothing runs for a refused host or token.
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::check))
        .with_state(state)
}

fn counts(snapshot: &Snapshot) -> api::MemberCounts {
    let (alive, suspect, down) = snapshot.counts();
    api::MemberCounts {
        alive,
        suspect,
        down,
        total: alive + suspect + down,
    }
}

#[utoipa::path(get, path = "/api/health", tag = "node", responses((status = 200, description = "This node: identity, network, joined, member counts", body = api::Health)))]
async fn health(State(state): State<ApiState>) -> Json<api::Health> {
    let snapshot = state.membership.snapshot();
    let f = &state.facts;
    Json(api::Health {
        name: f.name.clone(),
        key: f.key,
        version: crate::VERSION.to_string(),
        uptime_secs: f.started.elapsed().as_secs(),
        started_at: humantime::format_rfc3339_seconds(f.started_at).to_string(),
        cluster_addr: f.cluster_addr,
        network: f.network,
        network_id: base64::engine::general_purpose::STANDARD.encode(state.replication.policy().network_id),
        joined: snapshot.joined,
        members: counts(&snapshot),
    })
}

#[utoipa::path(get, path = "/api/members", tag = "mesh", responses((status = 200, description = "Every member this node knows, itself included", body = api::Members)))]
async fn members(State(state): State<ApiState>) -> Json<api::Members> {
    let snapshot = state.membership.snapshot();
    let now_ms = crate::time::unix_ms();
    let members = snapshot
        .members
        .iter()
        .map(|m| api::Member {
            name: node_name(&state, &m.id.key),
            name_conflict: state.names.borrow().conflict(&m.id.key).map(str::to_string),
            key: m.id.key,
            addr: m.id.addr,
            state: m.state,
            since: crate::time::rfc3339_ms(m.since_ms),
            since_secs: now_ms.saturating_sub(m.since_ms) / 1000,
            incarnation: m.id.generation,
            renewals: m.id.bump,
            swim_incarnation: m.swim_incarnation,
            local: m.local,
        })
        .collect();
    Json(api::Members { members })
}

#[utoipa::path(get, path = "/api/replication", tag = "files", responses((status = 200, description = "This replica: items, fingerprint, counters, refusals by reason", body = api::Replication)))]
async fn replication(State(state): State<ApiState>) -> Json<api::Replication> {
    use std::sync::atomic::Ordering::Relaxed;
    let r = &state.replication;
    let s = r.stats();
    let (items, fingerprint) = r.summary();
    Json(api::Replication {
        items,
        fingerprint: blake3::Hash::from_bytes(fingerprint).to_hex().to_string(),
        committed: api::CommitCounts {
            total: s.items_committed.load(Relaxed),
            broadcast: s.items_from_broadcast.load(Relaxed),
            sync: s.items_from_sync.load(Relaxed),
            uploaded: s.items_uploaded.load(Relaxed),
            local: s.items_local.load(Relaxed),
        },
        bodies_fetched: s.bodies_fetched.load(Relaxed),
        body_bytes_fetched: s.body_bytes_fetched.load(Relaxed),
        body_bytes_served: s.body_bytes_served.load(Relaxed),
        fetch_failures: s.fetch_failures.load(Relaxed),
        syncs_started: s.syncs_started.load(Relaxed),
        syncs_in_sync: s.syncs_in_sync.load(Relaxed),
        items_sent_by_sync: s.items_sent_by_sync.load(Relaxed),
        dropped_busy: s.items_dropped_busy.load(Relaxed),
        rejected: crate::replication::policy::Reject::ALL
            .iter()
            .map(|r| (r.label().to_string(), s.rejected(*r)))
            .collect(),
    })
}

/// The name a node holds (see [`crate::names`]): none while it claims one another key holds.
pub(crate) fn node_name(state: &ApiState, node: &PublicKey) -> Option<String> {
    state.names.borrow().name(node).map(str::to_string)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(api::ApiError {
            error: "no such endpoint".into(),
            reason: None,
        }),
    )
        .into_response()
}
