//! The OpenAPI document, generated from the handlers' annotations and the response types
//! (`utoipa`), served at `/api/openapi.json` and rendered by the page at `/api/docs`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{files, metrics, nodes, schedules};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoal agent API",
        description = "The local HTTP API of a shoal agent: the mesh, health, files, schedules and jobs as this node's replica holds them. It listens on loopback by default; uploads carry their signer's signature. Every route answers only requests whose Host is a loopback name or address, the listen address or a name in [http] allowed_hosts (else 421 host_not_allowed). With [http] token_file, every change (POST, PUT, DELETE) needs Authorization: Bearer with that file's token (else 401 unauthorized); reads stay open.",
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
    modifiers(&Guard),
    tags(
        (name = "node", description = "This agent"),
        (name = "mesh", description = "Members, health reports and the reachability graph"),
        (name = "events", description = "Membership, health and job events"),
        (name = "files", description = "Signed replicated files"),
        (name = "schedules", description = "Backup schedules and jobs")
    )
)]
struct ApiDoc;

/// Adds what the guard middleware does to every operation: the 421 of a foreign host on all
/// of them; the optional bearer token and its 401 on the changes.
struct Guard;

impl Modify for Guard {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The token in the agent's [http] token_file; required for changes only when that is set",
                    ))
                    .build(),
            ),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ApiError")))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let reads = [&mut item.get, &mut item.head, &mut item.options];
            let writes = [&mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for op in reads.into_iter().chain(writes).flatten() {
                op.responses.responses.insert(
                    "421".into(),
                    error("host_not_allowed: the Host is not loopback, the listen address or in [http] allowed_hosts")
                        .into(),
                );
            }
            let writes = [&mut item.post, &mut item.put, &mut item.delete, &mut item.patch];
            for op in writes.into_iter().flatten() {
                // Either no credentials (no token_file) or the bearer token.
                op.security = Some(vec![
                    SecurityRequirement::default(),
                    SecurityRequirement::new("bearer", Vec::<String>::new()),
                ]);
                op.responses.responses.insert(
                    "401".into(),
                    error("unauthorized: [http] token_file is set and the bearer token is missing or wrong").into(),
                );
            }
        }
    }
}

/// The document as JSON.
pub fn json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

#[utoipa::path(get, path = "/api/openapi.json", tag = "node", responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub(super) async fn document() -> Json<serde_json::Value> {
    Json(json())
}
