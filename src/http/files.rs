//! File endpoints: list, metadata, content, signed upload and signed delete.
//!
//! Uploads carry the uploader's signature (see [`crate::files::envelope`]); the agent checks
//! everything a peer's item would be checked for, plus that the body matches, before it
//! stores anything. A rejected upload leaves nothing on disk.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{info, warn};

use super::guard::{MAX_ECHOED_VALUE, Refusal, refusal};
use super::{ApiState, api};
use crate::files::envelope;
use crate::replication::UploadError;
use crate::replication::item::{ItemKey, SignedItem};
use crate::replication::policy::{Reject, Verified};

/// An error response.
pub struct Failure(StatusCode, api::ApiError);

impl Failure {
    pub(super) fn new(status: StatusCode, error: impl Into<String>) -> Failure {
        Failure(
            status,
            api::ApiError {
                error: error.into(),
                reason: None,
            },
        )
    }

    fn rejected(reason: Reject) -> Failure {
        let status = match reason {
            Reject::UnknownFile => StatusCode::NOT_FOUND,
            Reject::UnauthorizedSigner | Reject::BadSignature => StatusCode::FORBIDDEN,
            Reject::Stale => StatusCode::CONFLICT,
            Reject::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure(
            status,
            api::ApiError {
                error: reason.to_string(),
                reason: Some(reason.label().to_string()),
            },
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

pub(super) fn info_of(item: &SignedItem) -> Option<api::FileInfo> {
    let ItemKey::File { name } = &item.meta.key else {
        return None;
    };
    Some(api::FileInfo {
        name: name.clone(),
        version: item.meta.version,
        updated: crate::time::rfc3339_ms(crate::replication::hlc::physical_ms(item.meta.version)),
        signer: item.meta.signer,
        size: item.meta.size,
        hash: blake3::Hash::from_bytes(item.meta.hash).to_hex().to_string(),
        deleted: item.meta.deleted,
        present_on: None,
    })
}

#[utoipa::path(get, path = "/api/files", tag = "files", responses((status = 200, description = "Every file's current version and on how many alive nodes it is present", body = api::FileList)))]
pub(super) async fn list(State(state): State<ApiState>) -> Json<api::FileList> {
    let mut files: Vec<api::FileInfo> = state.replication.files().iter().filter_map(info_of).collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    // Presence: what each alive node's latest report says it holds.
    let snapshot = state.membership.snapshot();
    let reports = super::nodes::reports(&state);
    let held: Vec<&[crate::health::report::HeldFile]> = snapshot
        .members
        .iter()
        .filter(|m| m.state == crate::membership::MemberState::Alive)
        .filter_map(|m| reports.get(&m.id.key).map(|r| r.files.as_slice()))
        .collect();
    for f in &mut files {
        let want = crate::health::report::HeldFile {
            name: crate::health::report::file_prefix(&f.name),
            version: f.version,
        };
        f.present_on = Some(held.iter().filter(|h| h.binary_search(&want).is_ok()).count());
    }
    Json(api::FileList {
        files,
        configured: state.replication.policy().files.keys().cloned().collect(),
        nodes_alive: snapshot.counts().0,
    })
}

fn current(state: &ApiState, name: &str) -> Result<SignedItem, Failure> {
    if !state.replication.policy().files.contains_key(name) {
        return Err(Failure::rejected(Reject::UnknownFile));
    }
    state
        .replication
        .get(&ItemKey::File { name: name.to_string() })
        .map(|(item, _)| item)
        .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, format!("no version of {name} yet")))
}

#[utoipa::path(get, path = "/api/files/{name}", tag = "files", params(("name" = String, Path, description = "File name")), responses((status = 200, body = api::FileInfo), (status = 404, description = "Unknown or never uploaded", body = api::ApiError)))]
pub(super) async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<api::FileInfo>, Failure> {
    let item = current(&state, &name)?;
    info_of(&item)
        .map(Json)
        .ok_or_else(|| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "not a file"))
}

#[utoipa::path(get, path = "/api/files/{name}/content", tag = "files", params(("name" = String, Path, description = "File name")), responses((status = 200, description = "The bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 404, description = "Unknown, deleted or not yet received", body = api::ApiError)))]
pub(super) async fn content(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Response, Failure> {
    let item = current(&state, &name)?;
    if item.meta.deleted {
        return Err(Failure::new(StatusCode::NOT_FOUND, format!("{name} was deleted")));
    }
    let chunks = state.replication.store().body_chunks(&item.meta.hash);
    let stream = futures_util::stream::iter(chunks.map(|c| c.map(Bytes::from).map_err(std::io::Error::other)));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, item.meta.size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Verifies an envelope for `name`; `deleting` says which kind of item is expected.
fn verify(state: &ApiState, name: &str, bytes: &[u8], deleting: bool) -> Result<(Verified, Bytes), Failure> {
    let (wire, body) = envelope::decode(bytes).map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let v = state
        .replication
        .policy()
        .verify(&wire, crate::time::unix_ms())
        .map_err(Failure::rejected)?;
    let meta = &v.item.meta;
    if meta.key != (ItemKey::File { name: name.to_string() }) {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            format!("the signed item is {}, not file/{name}", meta.key),
        ));
    }
    if meta.deleted != deleting {
        let what = if deleting {
            "DELETE needs a signed delete"
        } else {
            "PUT needs a signed file, not a delete"
        };
        return Err(Failure::new(StatusCode::BAD_REQUEST, what));
    }
    if body.len() as u64 != meta.size || *blake3::hash(body).as_bytes() != meta.hash {
        return Err(Failure::rejected(Reject::HashMismatch));
    }
    if state.replication.is_stale(&v.item) {
        return Err(Failure::rejected(Reject::Stale));
    }
    Ok((v, Bytes::copy_from_slice(body)))
}

async fn commit(state: &ApiState, name: &str, v: Verified) -> Result<Json<api::FileInfo>, Failure> {
    let info = info_of(&v.item);
    match state.replication.upload(v).await {
        Ok(_) => info
            .map(Json)
            .ok_or_else(|| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "not a file")),
        Err(UploadError::Rejected(reason)) => Err(Failure::rejected(reason)),
        Err(UploadError::Stopped) => Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{name}: agent is shutting down"),
        )),
    }
}

/// The body of an upload or delete, read only once its `Content-Type` says it is an
/// envelope: anything else is refused with 415 before a byte of the body is read. A form or
/// `text/plain` is what a cross-site page can send without asking the browser first (CORS
/// preflight); the envelope's own type is not.
pub(super) struct Envelope(Bytes);

/// Whether a `Content-Type` value names the envelope (parameters after `;` are ignored).
fn is_envelope_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(envelope::CONTENT_TYPE))
}

impl FromRequest<ApiState> for Envelope {
    type Rejection = Response;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, Self::Rejection> {
        let given = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("(not text)"));
        if !given.is_some_and(is_envelope_type) {
            let shown: String = given.unwrap_or("none").chars().take(MAX_ECHOED_VALUE).collect();
            state
                .refusals
                .refuse(Refusal::UnsupportedMediaType, req.method(), req.uri().path(), &shown);
            return Err(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Refusal::UnsupportedMediaType,
                format!(
                    "a signed upload or delete must be sent as Content-Type: {}, not {shown:?} (shoal file update and delete send it)",
                    envelope::CONTENT_TYPE
                ),
            ));
        }
        Bytes::from_request(req, state)
            .await
            .map(Envelope)
            .map_err(IntoResponse::into_response)
    }
}

/// Logs and counts a refused upload.
fn refused(state: &ApiState, name: &str, f: Failure) -> Failure {
    if let Some(reason) = Reject::ALL.iter().find(|r| Some(r.label()) == f.1.reason.as_deref()) {
        state.replication.stats().reject(*reason);
    }
    warn!(file = %name, error = %f.1.error, "upload refused");
    f
}

#[utoipa::path(put, path = "/api/files/{name}", tag = "files", params(("name" = String, Path, description = "File name")), request_body(content = Vec<u8>, content_type = "application/vnd.shoal.envelope", description = "A signed envelope as `shoal file update` builds it: signed item metadata, then the body"), responses((status = 200, description = "Committed", body = api::FileInfo), (status = 400, description = "Malformed envelope", body = api::ApiError), (status = 403, description = "Signer not allowed, or bad signature", body = api::ApiError), (status = 404, description = "Name not in [files]", body = api::ApiError), (status = 409, description = "Not newer than the current version", body = api::ApiError), (status = 413, description = "Too large", body = api::ApiError), (status = 415, description = "unsupported_media_type: Content-Type is not application/vnd.shoal.envelope; nothing is read or stored", body = api::ApiError)))]
pub(super) async fn put(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Envelope(bytes): Envelope,
) -> Result<Json<api::FileInfo>, Failure> {
    let (v, body) = verify(&state, &name, &bytes, false).map_err(|f| refused(&state, &name, f))?;
    let store = state.replication.store().clone();
    let (hash, size) = (v.item.meta.hash, v.item.meta.size);
    if store.body_size(&hash).ok().flatten() != Some(size) {
        // Writing up to max_file_size bytes to sled is blocking work.
        let written = tokio::task::spawn_blocking(move || -> Result<(), crate::store::BodyError> {
            let mut w = store.body_writer(hash, size)?;
            w.write(&body)?;
            w.finish()
        })
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if let Err(e) = written {
            let status = match e {
                crate::store::BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return Err(refused(&state, &name, Failure::new(status, e.to_string())));
        }
    }
    let result = commit(&state, &name, v).await.map_err(|f| refused(&state, &name, f))?;
    info!(file = %name, version = result.version, size = result.size, signer = %result.signer.short(), "file uploaded");
    Ok(result)
}

#[utoipa::path(delete, path = "/api/files/{name}", tag = "files", params(("name" = String, Path, description = "File name")), request_body(content = Vec<u8>, content_type = "application/vnd.shoal.envelope", description = "A signed delete (tombstone) envelope"), responses((status = 200, description = "Committed", body = api::FileInfo), (status = 403, description = "Signer not allowed, or bad signature", body = api::ApiError), (status = 404, description = "Name not in [files]", body = api::ApiError), (status = 409, description = "Not newer than the current version", body = api::ApiError), (status = 415, description = "unsupported_media_type: Content-Type is not application/vnd.shoal.envelope; nothing is read or stored", body = api::ApiError)))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Envelope(bytes): Envelope,
) -> Result<Json<api::FileInfo>, Failure> {
    let (v, _) = verify(&state, &name, &bytes, true).map_err(|f| refused(&state, &name, f))?;
    let result = commit(&state, &name, v).await.map_err(|f| refused(&state, &name, f))?;
    info!(file = %name, version = result.version, "file deleted");
    Ok(result)
}
