//! `shoal nodes` and `shoal events`: the mesh as the local agent sees it.

use super::client::{ClientArgs, fetch, get, print_json};
use super::table::{human_secs, render};
use crate::events::Event;
use crate::http::api;

/// Arguments of `shoal events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// How many recent events to show.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Keep printing events as they happen.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec_short().to_string()
}

/// Arguments of `shoal nodes`.
#[derive(Debug, clap::Args)]
pub struct NodesArgs {
    /// Show only this node: the name it holds, its base64 key, or a prefix of the key.
    node: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

/// `shoal nodes [NODE]`.
pub async fn nodes(args: &NodesArgs) -> i32 {
    match &args.node {
        Some(node) => one_node(&args.client, node).await,
        None => all_nodes(&args.client).await,
    }
}

/// `shoal nodes NODE`: one node's identity and latest report.
async fn one_node(args: &ClientArgs, node: &str) -> i32 {
    let path = format!("/api/nodes/{}", super::client::encode(node));
    let n: api::NodeView = match fetch(args, &path).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let state = n
        .state
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_else(|| "gone".into());
    let mut rows = vec![
        ("name", n.name.clone().unwrap_or_else(|| n.key.short())),
        ("key", n.key.to_string()),
        ("state", state),
        ("address", n.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into())),
    ];
    if let Some(claimed) = &n.name_conflict {
        rows.push((
            "conflict",
            format!("claims the name {claimed}, which another key holds"),
        ));
    }
    if let Some(r) = &n.report {
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        rows.push(("status", status));
        rows.push(("version", r.version.clone()));
        rows.push(("report", format!("{} ago", human_secs(n.report_age_secs.unwrap_or(0)))));
    }
    for (k, v) in rows {
        println!("{k:<9} {v}");
    }
    0
}

async fn all_nodes(args: &ClientArgs) -> i32 {
    let list: api::Nodes = match fetch(args, "/api/nodes").await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rows: Vec<Vec<String>> = list
        .nodes
        .iter()
        .map(|n| {
            let state = match n.state {
                Some(s) => serde_json::to_value(s)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                None => "gone".into(),
            };
            let name = format!(
                "{}{}{}",
                n.name.clone().unwrap_or_else(|| n.key.short()),
                if n.local { " *" } else { "" },
                n.name_conflict
                    .as_ref()
                    .map(|c| format!(" (claims {c})"))
                    .unwrap_or_default()
            );
            let Some(r) = &n.report else {
                return vec![
                    name,
                    state,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "never".into(),
                ];
            };
            let status = serde_json::to_value(r.status)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            let passing = r
                .checks
                .iter()
                .filter(|c| c.status == crate::health::checks::CheckStatus::Ok)
                .count();
            vec![
                name,
                state,
                status,
                r.version.clone(),
                // A node still up has been running since its start; otherwise show how long it
                // had been up at its last report.
                human_secs(
                    if n.up { crate::time::unix_ms() } else { r.reported_at_ms }.saturating_sub(r.started_at_ms) / 1000,
                ),
                r.load.map(|l| format!("{:.2}", l[0])).unwrap_or_else(|| "-".into()),
                r.memory
                    .map(|m| format!("{}%", (m.total - m.available) * 100 / m.total.max(1)))
                    .unwrap_or_else(|| "-".into()),
                r.disk
                    .map(|d| format!("{} free", human_bytes(d.free)))
                    .unwrap_or_else(|| "-".into()),
                if r.checks.is_empty() {
                    "-".into()
                } else {
                    format!("{passing}/{}", r.checks.len())
                },
                format!("{} ago", human_secs(n.report_age_secs.unwrap_or(0))),
            ]
        })
        .collect();
    println!(
        "{}",
        render(
            &[
                "NAME", "STATE", "STATUS", "VERSION", "UPTIME", "LOAD", "MEM", "DISK", "CHECKS", "REPORT"
            ],
            &rows
        )
    );
    0
}

fn line(e: &Event) -> String {
    let node = e.node_name.clone().unwrap_or_else(|| e.node.short());
    let what = match (&e.check, &e.detail) {
        (Some(c), Some(d)) => format!("{c}: {d}"),
        (Some(c), None) => c.clone(),
        (None, Some(d)) => d.clone(),
        (None, None) => String::new(),
    };
    format!(
        "{}  {:<15} {:<12} {what}",
        crate::time::rfc3339_ms(e.at_ms),
        e.kind.as_str(),
        node
    )
    .trim_end()
    .to_string()
}

/// `shoal events`.
pub async fn events(args: &EventsArgs) -> i32 {
    let (list, raw): (api::Events, _) = match get(&args.client, &format!("/api/events?limit={}", args.limit)).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    if args.client.json && !args.follow {
        print_json(&raw);
        return 0;
    }
    for e in &list.events {
        print_event(e, args.client.json);
    }
    if !args.follow {
        return 0;
    }
    match follow(args).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn print_event(e: &Event, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    } else {
        println!("{}", line(e));
    }
}

/// Reads the server-sent event stream and prints each event.
async fn follow(args: &EventsArgs) -> Result<(), String> {
    let url = format!("{}/api/events/stream", args.client.url.trim_end_matches('/'));
    let mut resp = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot reach the shoal agent at {}: {e}", args.client.url))?;
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("event stream: {e}"))? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            for data in message.lines().filter_map(|l| l.strip_prefix("data:")) {
                if let Ok(e) = serde_json::from_str::<Event>(data.trim()) {
                    print_event(&e, args.client.json);
                }
            }
        }
    }
    Ok(())
}
