//! Who may use the API, checked in one middleware over every route before any handler runs:
//!
//! 1. the `Host` must be a loopback name or address, the listen address, or a name in
//!    `[http] allowed_hosts`; otherwise 421 `host_not_allowed`. A web page whose DNS name is
//!    rebound to 127.0.0.1 can make the operator's browser send requests here, but the browser
//!    still names the page's host, so they are refused: it can neither read the mesh nor start
//!    jobs. A request without `Host` (HTTP/1.0, hand-made) passes: browsers always send one,
//!    so it cannot come from a rebound page;
//! 2. with `[http] token_file`, every state-changing request (any method but GET, HEAD,
//!    OPTIONS, TRACE) needs `Authorization: Bearer <token>`; otherwise 401 `unauthorized`.
//!
//! The settings live in an [`Access`] behind a `watch` the reload task writes, so a changed
//! allowlist or token applies without a restart.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiState, api};
use crate::config::http::split_host_port;
use crate::config::{AllowedHost, HttpConfig};

/// Refusals are logged at most once per reason this often, with their count, so a hostile
/// page looping on requests cannot flood the log.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(30);
/// At most this many characters of a refused `Host` or `Content-Type` value are echoed in
/// answers and logs.
pub const MAX_ECHOED_VALUE: usize = 128;

/// What the guard allows; rebuilt from `[http]` at start and on reload.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    listen: SocketAddr,
    allowed: Vec<AllowedHost>,
    /// blake3 of the token: `blake3::Hash` compares in constant time, and comparing digests
    /// does not reveal the token's length either.
    token: Option<blake3::Hash>,
}

impl Access {
    /// From `[http]` and the token read from its `token_file`.
    pub fn new(http: &HttpConfig, token: Option<&str>) -> Access {
        Access {
            listen: http.listen,
            allowed: http.allowed_hosts.clone(),
            token: token.map(|t| blake3::hash(t.as_bytes())),
        }
    }

    /// Whether a token is required for changes.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request naming `host` (as [`split_host_port`] returns it) is answered.
    pub fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        if host == "localhost" || host.ends_with(".localhost") {
            // RFC 6761 reserves these for loopback: browsers resolve them to it themselves, and no
            // public DNS serves them, so no one can rebind them.
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if ip.to_canonical().is_loopback() {
                return true;
            }
            // An unspecified listen address (0.0.0.0) is not a host anyone should name: list
            // the addresses the API is reached by in allowed_hosts instead.
            if !self.listen.ip().is_unspecified() && ip.to_canonical() == self.listen.ip().to_canonical() {
                return true;
            }
        }
        self.allowed.iter().any(|a| {
            // Entries are normalized the same way (lowercase, no brackets or trailing dot); a
            // Host without a port means the scheme's default, 80.
            a.host == host && a.port.is_none_or(|p| p == port.unwrap_or(80))
        })
    }

    /// Whether the two require different tokens (or one requires none).
    pub fn token_differs(&self, other: &Access) -> bool {
        self.token != other.token
    }

    fn token_matches(&self, presented: &str) -> bool {
        self.token.is_some_and(|t| t == blake3::hash(presented.as_bytes()))
    }
}

/// Why the API refused a request before reaching a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `Host` is not one the API answers to.
    HostNotAllowed,
    /// A state-changing request without the right bearer token.
    Unauthorized,
    /// An upload or delete whose `Content-Type` is not the envelope's.
    UnsupportedMediaType,
}

impl Refusal {
    /// Every reason, in [`Refusals`] order.
    pub const ALL: [Refusal; 3] = [
        Refusal::HostNotAllowed,
        Refusal::Unauthorized,
        Refusal::UnsupportedMediaType,
    ];

    /// Stable label, the `reason` of the error body and of the metric.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::HostNotAllowed => "host_not_allowed",
            Refusal::Unauthorized => "unauthorized",
            Refusal::UnsupportedMediaType => "unsupported_media_type",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts of refused requests by reason, and the rate limit of their log lines.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; 3],
    log: Mutex<[(Option<Instant>, u64); 3]>,
}

impl Refusals {
    /// Counts a refusal and logs it (at most once per reason per [`REFUSAL_LOG_INTERVAL`]).
    pub fn refuse(&self, reason: Refusal, method: &axum::http::Method, path: &str, detail: &str) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let (last, count) = &mut log[reason.index()];
        *count += 1;
        let now = Instant::now();
        if last.is_none_or(|t| now - t >= REFUSAL_LOG_INTERVAL) {
            tracing::warn!(reason = reason.label(), %method, path, detail, count = *count, "HTTP requests refused");
            *last = Some(now);
            *count = 0;
        }
    }

    /// Refusals so far for `reason`.
    pub fn count(&self, reason: Refusal) -> u64 {
        self.counts[reason.index()].load(Ordering::Relaxed)
    }
}

/// An error answer with a reason label.
pub(super) fn refusal(status: StatusCode, reason: Refusal, error: String) -> Response {
    (
        status,
        Json(api::ApiError {
            error,
            reason: Some(reason.label().to_string()),
        }),
    )
        .into_response()
}

/// The middleware: checks the host, then the token, then runs the handler.
pub(super) async fn check(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    // Borrow briefly: the Arc is cloned out so no lock is held while the handler runs.
    let access = state.access.borrow().clone();
    if let Err(host) = check_host(&access, &req) {
        let shown: String = host.chars().take(MAX_ECHOED_VALUE).collect();
        state
            .refusals
            .refuse(Refusal::HostNotAllowed, req.method(), req.uri().path(), &shown);
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            Refusal::HostNotAllowed,
            format!(
                "this agent does not answer to host {shown:?}; if that is how you reach it, add it to [http] allowed_hosts"
            ),
        );
    }
    if access.requires_token() && !req.method().is_safe() {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let (error, challenge) = match presented {
            Some(t) if access.token_matches(t) => return next.run(req).await,
            Some(_) => ("wrong bearer token", r#"Bearer realm="shoal", error="invalid_token""#),
            None => (
                "changes need Authorization: Bearer <the token in [http] token_file>; the CLI sends it with --token-file or SHOAL_TOKEN_FILE",
                r#"Bearer realm="shoal""#,
            ),
        };
        state
            .refusals
            .refuse(Refusal::Unauthorized, req.method(), req.uri().path(), error);
        let mut resp = refusal(StatusCode::UNAUTHORIZED, Refusal::Unauthorized, error.to_string());
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        return resp;
    }
    next.run(req).await
}

/// `Err` with the offending value when the request names a host the API does not answer to.
/// Both the `Host` header and an absolute-form request target's authority are checked.
fn check_host(access: &Access, req: &Request) -> Result<(), String> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err("(several Host headers)".into());
    }
    let header = match header {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| String::from_utf8_lossy(v.as_bytes()).into_owned())?,
        ),
        None => None,
    };
    let authority = req.uri().authority().map(|a| a.as_str());
    for value in [header, authority].into_iter().flatten() {
        match split_host_port(value) {
            Some((host, port)) if access.host_allowed(&host, port) => {}
            _ => return Err(value.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(listen: &str, allowed: &[&str]) -> Access {
        let http = HttpConfig {
            listen: listen.parse().unwrap(),
            allowed_hosts: allowed.iter().map(|a| a.parse().unwrap()).collect(),
            token_file: None,
        };
        Access::new(&http, None)
    }

    fn allowed(a: &Access, value: &str) -> bool {
        split_host_port(value).is_some_and(|(h, p)| a.host_allowed(&h, p))
    }

    #[test]
    fn loopback_listen_and_listed_hosts_pass_others_do_not() {
        let a = access(
            "10.0.0.5:7331",
            &["shoal.example.com", "ops.example.com:8443", "[fd00::7]"],
        );
        for ok in [
            "localhost",
            "LOCALHOST:7331",
            "localhost.",
            "dash.localhost:9",
            "127.0.0.1",
            "127.1.2.3:7331",
            "[::1]:7331",
            "[::ffff:127.0.0.1]",
            "10.0.0.5",
            "10.0.0.5:7331",
            "shoal.example.com",
            "Shoal.Example.COM:7331",
            "ops.example.com:8443",
            "[fd00::7]:7331",
        ] {
            assert!(allowed(&a, ok), "{ok} should pass");
        }
        for bad in [
            "evil.example",
            "evil.example:7331",
            "localhost.evil.example",
            "notlocalhost",
            "10.0.0.6",
            "0.0.0.0:7331",
            "ops.example.com",
            "ops.example.com:8080",
            "example.com",
            "sub.shoal.example.com",
            "",
            "bad host",
        ] {
            assert!(!allowed(&a, bad), "{bad} should be refused");
        }
        // An unspecified listen address allows nothing by itself.
        let any = access("0.0.0.0:7331", &[]);
        assert!(!allowed(&any, "0.0.0.0:7331"));
        assert!(!allowed(&any, "10.0.0.5:7331"));
        assert!(allowed(&any, "127.0.0.1:7331"));
    }

    #[test]
    fn tokens_compare_by_digest() {
        let http = HttpConfig::default();
        let a = Access::new(&http, Some("0123456789abcdef"));
        assert!(a.requires_token());
        assert!(a.token_matches("0123456789abcdef"));
        assert!(!a.token_matches("0123456789abcdeF"));
        assert!(!a.token_matches(""));
        assert!(!Access::new(&http, None).token_matches(""));
    }
}
