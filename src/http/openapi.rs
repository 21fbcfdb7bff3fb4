//! The OpenAPI document, generated from the handlers' annotations and the response types
//! (`utoipa`), served at `/api/openapi.json` and rendered by the page at `/api/docs`.

use axum::Json;
use utoipa::OpenApi;

use super::{files, metrics, nodes, schedules};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoal agent API",
        description = "The local HTTP API of a shoal agent: the mesh, health, files, schedules and jobs as this node's replica holds them. It listens on loopback by default; uploads carry their signer's signature.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        super::health,
        super::members,
        nodes::list,
        nodes::one,
        nodes::graph,
        nodes::events,
        nodes::stream,
        files::list,
        files::get,
        files::content,
        files::put,
        files::delete,
        super::replication,
        schedules::list,
        schedules::run,
        schedules::jobs,
        schedules::job,
        schedules::log,
        metrics::metrics,
        document,
    ),
    tags(
        (name = "node", description = "This agent"),
        (name = "mesh", description = "Members, health reports and the reachability graph"),
        (name = "events", description = "Membership, health and job events"),
        (name = "files", description = "Signed replicated files"),
        (name = "schedules", description = "Backup schedules and jobs")
    )
)]
struct ApiDoc;

/// The document as JSON.
pub fn json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "node", responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub(super) async fn document() -> Json<serde_json::Value> {
    Json(json())
}
