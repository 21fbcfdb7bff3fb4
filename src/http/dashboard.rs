//! The dashboard: three static files compiled into the binary (no build step, no CDN), served
//! at `/`. The page reads the same JSON API as the CLI and follows `/api/events/stream`.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const DOCS: &str = include_str!("assets/docs.html");
const DOCS_JS: &str = include_str!("assets/docs.js");

/// Only our own scripts, styles and API: text from the mesh can never run as code, even if a
/// bug put it into the page as markup.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(super) async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub(super) async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

pub(super) async fn docs() -> Response {
    asset(DOCS, "text/html; charset=utf-8")
}

pub(super) async fn docs_js() -> Response {
    asset(DOCS_JS, "text/javascript; charset=utf-8")
}
