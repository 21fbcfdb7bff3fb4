//! The local HTTP API (axum). Read-only views over state other tasks publish; handlers never
//! wait on the membership task.

pub mod api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::identity::PublicKey;
use crate::membership::{MembershipHandle, Snapshot};

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
}

/// The API router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/members", get(members))
        .fallback(not_found)
        .with_state(state)
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
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
        joined: snapshot.joined,
        members: counts(&snapshot),
    })
}

async fn members(State(state): State<ApiState>) -> Json<api::Members> {
    let snapshot = state.membership.snapshot();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let members = snapshot
        .members
        .iter()
        .map(|m| api::Member {
            name: m.name.clone(),
            key: m.id.key,
            addr: m.id.addr,
            state: m.state,
            since: rfc3339_ms(m.since_ms),
            since_secs: now_ms.saturating_sub(m.since_ms) / 1000,
            incarnation: m.id.generation,
            renewals: m.id.bump,
            swim_incarnation: m.swim_incarnation,
            local: m.local,
        })
        .collect();
    Json(api::Members { members })
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(api::ApiError {
            error: "no such endpoint".into(),
        }),
    )
        .into_response()
}
