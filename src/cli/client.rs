//! Commands that read the local agent's HTTP API.

use serde::de::DeserializeOwned;

use super::table::{human_secs, render};
use crate::http::api;

/// How long the CLI waits for the agent.
/// Generous, since uploads carry up to `max_file_size` bytes.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Options shared by commands that talk to an agent.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the agent's HTTP API.
    #[arg(long, env = "SHOAL_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// File holding the agent's API token (its `[http] token_file`), sent as
    /// `Authorization: Bearer` with changes (file update/delete, run) when the agent needs one.
    #[arg(long, env = "SHOAL_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<std::path::PathBuf>,
}

/// A response from the agent.
pub(super) struct Reply {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// Raw body.
    pub bytes: bytes::Bytes,
}

impl Reply {
    /// The JSON body.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.bytes).map_err(|e| format!("invalid response from the agent: {e}"))
    }

    /// "message (reason)" from an error body, with the candidates of an ambiguous lookup.
    pub fn error(&self) -> String {
        if let Ok(a) = serde_json::from_slice::<api::Ambiguous>(&self.bytes) {
            let mut out = format!("{} ({})", a.error, a.reason);
            for c in a.candidates {
                out.push_str(&format!("\n  {}  {}", c.key, c.name.as_deref().unwrap_or("-")));
            }
            return out;
        }
        match serde_json::from_slice::<api::ApiError>(&self.bytes) {
            Ok(e) => match e.reason {
                Some(r) => format!("{} ({r})", e.error),
                None => e.error,
            },
            Err(_) => format!("HTTP {}", self.status),
        }
    }

    /// The stable reason label of an error body.
    pub fn reason(&self) -> Option<String> {
        serde_json::from_slice::<api::ApiError>(&self.bytes)
            .ok()
            .and_then(|e| e.reason)
    }
}

/// Sends a request to the agent; `Err` only when it cannot be reached or read.
pub(super) async fn call(
    args: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<(Vec<u8>, &str)>,
) -> Result<Reply, String> {
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    // Only changes carry the token: reads are open, and the token goes no further than needed.
    let token = match &args.token_file {
        Some(path) if !method.is_safe() => Some(crate::config::http::read_token(path)?),
        _ => None,
    };
    let mut req = client.request(method, &url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some((bytes, content_type)) = body {
        req = req.header(reqwest::header::CONTENT_TYPE, content_type).body(bytes);
    }
    let resp = req.send().await.map_err(|e| {
        format!(
            "cannot reach the shoal agent at {}: {e} (is it running? set --url)",
            args.url
        )
    })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("{url}: reading the response: {e}"))?;
    Ok(Reply { status, bytes })
}

/// GETs `path` and parses it as `T`; returns the raw JSON too (for `--json`).
pub(super) async fn get<T: DeserializeOwned>(args: &ClientArgs, path: &str) -> Result<(T, serde_json::Value), String> {
    let reply = call(args, reqwest::Method::GET, path, None).await?;
    if !reply.status.is_success() {
        return Err(reply.error());
    }
    let body = reply.json()?;
    let typed = serde_json::from_value(body.clone()).map_err(|e| format!("unexpected response from the agent: {e}"))?;
    Ok((typed, body))
}

/// GETs `path` for a listing command: `Ok` with the value to print as a table; `Err` with the
/// exit status once the error, or the JSON (with `--json`), is printed.
pub(super) async fn fetch<T: DeserializeOwned>(args: &ClientArgs, path: &str) -> Result<T, i32> {
    match get(args, path).await {
        Ok((_, raw)) if args.json => {
            print_json(&raw);
            Err(0)
        }
        Ok((typed, _)) => Ok(typed),
        Err(e) => {
            eprintln!("error: {e}");
            Err(1)
        }
    }
}

pub(super) fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `shoal status`.
pub async fn status(args: &ClientArgs) -> i32 {
    let h: api::Health = match fetch(args, "/api/health").await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let network = h
        .network
        .map(|n| n.to_string())
        .unwrap_or_else(|| "allowlist (trusted_nodes)".into());
    let rows = [
        ("name", h.name),
        ("key", h.key.to_string()),
        ("version", h.version),
        ("uptime", human_secs(h.uptime_secs)),
        ("cluster", h.cluster_addr.to_string()),
        ("network", network),
        ("joined", if h.joined { "yes".into() } else { "no".into() }),
        (
            "members",
            format!(
                "{} alive, {} suspect, {} down",
                h.members.alive, h.members.suspect, h.members.down
            ),
        ),
    ];
    for (k, v) in rows {
        println!("{:<9}{v}", format!("{k}:"));
    }
    0
}

/// `shoal members`.
pub async fn members(args: &ClientArgs) -> i32 {
    let m: api::Members = match fetch(args, "/api/members").await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rows: Vec<Vec<String>> = m
        .members
        .iter()
        .map(|m| {
            vec![
                format!(
                    "{}{}{}",
                    m.name.clone().unwrap_or_else(|| m.key.short()),
                    if m.local { " *" } else { "" },
                    m.name_conflict
                        .as_ref()
                        .map(|c| format!(" (claims {c})"))
                        .unwrap_or_default()
                ),
                m.key.short(),
                m.addr.to_string(),
                serde_json::to_value(m.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                format!("{} ago", human_secs(m.since_secs)),
                m.incarnation.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        render(&["NAME", "KEY", "ADDRESS", "STATE", "SINCE", "INCARNATION"], &rows)
    );
    0
}

/// Percent-encodes a query or path value.
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
