//! The mesh view: nodes with their health, the reachability graph, and events.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::files::Failure;
use super::{ApiState, api};
use crate::health::report::HealthReport;
use crate::identity::PublicKey;
use crate::membership::MemberState;
use crate::names::Lookup;
use crate::replication::item::{ItemKey, RecordKind};

/// Events returned by one `GET /api/events` at most.
pub const MAX_EVENTS_PER_REQUEST: usize = 1000;

pub(super) fn reports(state: &ApiState) -> HashMap<PublicKey, HealthReport> {
    state.replication.records_of(RecordKind::Health).into_iter().collect()
}

fn all_nodes(state: &ApiState) -> Vec<api::NodeView> {
    let now = crate::time::unix_ms();
    let snapshot = state.membership.snapshot();
    let names = state.names.borrow().clone();
    let mut reports = reports(state);
    let mut nodes: BTreeMap<PublicKey, api::NodeView> = BTreeMap::new();
    for m in &snapshot.members {
        nodes.insert(
            m.id.key,
            api::NodeView {
                name: names.name(&m.id.key).map(str::to_string),
                name_conflict: names.conflict(&m.id.key).map(str::to_string),
                key: m.id.key,
                state: Some(m.state),
                up: m.state == MemberState::Alive,
                local: m.local,
                addr: Some(m.id.addr),
                report: reports.remove(&m.id.key),
                report_age_secs: None,
                files: Vec::new(),
            },
        );
    }
    // Nodes membership has forgotten stay listed, down, with their last report, until the
    // report is older than `[health] forget_after`.
    for (key, report) in reports {
        if now.saturating_sub(report.reported_at_ms) > state.forget_after.as_millis() as u64 {
            continue;
        }
        nodes.insert(
            key,
            api::NodeView {
                name: names.name(&key).map(str::to_string),
                name_conflict: names.conflict(&key).map(str::to_string),
                key,
                state: None,
                up: false,
                local: false,
                addr: None,
                report: Some(report),
                report_age_secs: None,
                files: Vec::new(),
            },
        );
    }
    let mut list: Vec<api::NodeView> = nodes.into_values().collect();
    let known: HashMap<[u8; 8], (String, u64)> = state
        .replication
        .files()
        .iter()
        .filter_map(|i| match &i.meta.key {
            ItemKey::File { name } => Some((crate::health::report::file_prefix(name), (name.clone(), i.meta.version))),
            ItemKey::Node { .. } => None,
        })
        .collect();
    for n in &mut list {
        n.report_age_secs = n.report.as_ref().map(|r| now.saturating_sub(r.reported_at_ms) / 1000);
        if let Some(r) = &n.report {
            n.files = r
                .files
                .iter()
                .filter_map(|h| {
                    let (name, current) = known.get(&h.name)?;
                    Some(api::HeldFileView {
                        name: name.clone(),
                        version: h.version,
                        current: h.version == *current,
                    })
                })
                .collect();
            n.files.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
    list.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
    list
}

#[utoipa::path(get, path = "/api/nodes", tag = "mesh", responses((status = 200, description = "Every node with its latest signed health report (down ones too, with their last report)", body = api::Nodes)))]
pub(super) async fn list(State(state): State<ApiState>) -> Json<api::Nodes> {
    Json(api::Nodes {
        nodes: all_nodes(&state),
    })
}

/// Why a lookup of a node found no single one.
pub(super) enum NotOne {
    /// Nothing matches.
    None(String),
    /// A key prefix several nodes share.
    Several(api::Ambiguous),
}

impl IntoResponse for NotOne {
    fn into_response(self) -> Response {
        match self {
            NotOne::None(query) => {
                Failure::new(StatusCode::NOT_FOUND, format!("no node named {query}")).into_response()
            }
            NotOne::Several(a) => (StatusCode::CONFLICT, Json(a)).into_response(),
        }
    }
}

/// Finds one node by the name it holds, its base64 key or a prefix of it, among `known`.
pub(super) fn find(state: &ApiState, query: &str, known: &[PublicKey]) -> Result<PublicKey, NotOne> {
    let names = state.names.borrow().clone();
    match names.lookup(query, known) {
        Lookup::Found(k) => Ok(k),
        Lookup::NotFound => Err(NotOne::None(query.to_string())),
        Lookup::Ambiguous(keys) => Err(NotOne::Several(api::Ambiguous {
            error: format!("{query} matches {} nodes; give more of the key", keys.len()),
            reason: "ambiguous".into(),
            candidates: keys
                .into_iter()
                .map(|key| api::Candidate {
                    key,
                    name: names.name(&key).map(str::to_string),
                })
                .collect(),
        })),
    }
}

#[utoipa::path(get, path = "/api/nodes/{name}", tag = "mesh", params(("name" = String, Path, description = "The name a node holds, its base64 key, or a prefix of the key")), responses((status = 200, body = api::NodeView), (status = 404, description = "No such node", body = api::ApiError), (status = 409, description = "A key prefix several nodes share", body = api::Ambiguous)))]
/// `GET /api/nodes/{name}`: by the name a node holds, its base64 key, or a key prefix. A node
/// that claims a name another key holds is found only by its key.
pub(super) async fn one(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<api::NodeView>, NotOne> {
    let nodes = all_nodes(&state);
    let keys: Vec<PublicKey> = nodes.iter().map(|n| n.key).collect();
    let key = find(&state, &name, &keys)?;
    nodes
        .into_iter()
        .find(|n| n.key == key)
        .map(Json)
        .ok_or(NotOne::None(name))
}

#[utoipa::path(get, path = "/api/graph", tag = "mesh", responses((status = 200, description = "Nodes and directed edges: links measured (this node's live, the others' as last reported) and links that failed", body = api::Graph)))]
/// `GET /api/graph`. Each node reports a bounded sample of the links it measured and the links
/// that failed, never its view of every peer, so the graph is sparse in a large mesh: at most
/// [`MAX_REPORTED_LINKS`](crate::health::report::MAX_REPORTED_LINKS) +
/// [`MAX_REPORTED_UNREACHABLE`](crate::health::report::MAX_REPORTED_UNREACHABLE) edges per node.
pub(super) async fn graph(State(state): State<ApiState>) -> Json<api::Graph> {
    let now = crate::time::unix_ms();
    let nodes = all_nodes(&state);
    let by_prefix: HashMap<crate::health::report::KeyPrefix, &api::NodeView> = nodes
        .iter()
        .map(|n| (crate::health::report::prefix(&n.key), n))
        .collect();
    let state_of = |n: &api::NodeView| n.state.unwrap_or(MemberState::Down);
    let mut edges = Vec::new();
    for n in &nodes {
        if n.local {
            // This node's own links are read live, not from its last report.
            for (key, rtt) in state.transport.links() {
                let Some(to) = by_prefix.get(&crate::health::report::prefix(&key)) else {
                    continue;
                };
                edges.push(api::GraphEdge {
                    from: n.key,
                    to: to.key,
                    state: state_of(to),
                    reachable: true,
                    rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
                    age_secs: 0,
                });
            }
        }
        let Some(report) = &n.report else { continue };
        let age_secs = now.saturating_sub(report.reported_at_ms) / 1000;
        let reported = report
            .links
            .iter()
            .filter(|_| !n.local)
            .map(|l| (l.node, Some(l.rtt_us as f64 / 1000.0)))
            .chain(report.unreachable.iter().map(|p| (*p, None)));
        for (prefix, rtt_ms) in reported {
            // A peer nobody knows any more (forgotten, no report) has no node to point to.
            let Some(to) = by_prefix.get(&prefix) else { continue };
            edges.push(api::GraphEdge {
                from: n.key,
                to: to.key,
                state: state_of(to),
                reachable: rtt_ms.is_some(),
                rtt_ms,
                age_secs,
            });
        }
    }
    Json(api::Graph {
        nodes: nodes
            .into_iter()
            .map(|n| api::GraphNode {
                key: n.key,
                name: n.name,
                up: n.up,
            })
            .collect(),
        edges,
    })
}

/// Query of `GET /api/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// Only events after this sequence number.
    #[serde(default)]
    since: u64,
    /// At most this many (the newest).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/events", tag = "events", params(EventsQuery), responses((status = 200, description = "Recent events, oldest first", body = api::Events)))]
pub(super) async fn events(State(state): State<ApiState>, Query(q): Query<EventsQuery>) -> Json<api::Events> {
    let limit = q.limit.unwrap_or(100).min(MAX_EVENTS_PER_REQUEST);
    Json(api::Events {
        events: state.events.recent(q.since, limit),
    })
}

#[utoipa::path(get, path = "/api/events/stream", tag = "events", responses((status = 200, description = "Server-sent events: one `event` message per event, its data an Event as JSON", content_type = "text/event-stream", body = String)))]
/// `GET /api/events/stream`: server-sent events, one `event` message per event.
pub(super) async fn stream(
    State(state): State<ApiState>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.events.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    return Some((
                        Ok(SseEvent::default().event("event").id(e.seq.to_string()).data(data)),
                        rx,
                    ));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
