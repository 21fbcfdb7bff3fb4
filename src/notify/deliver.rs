//! Webhook bodies and their delivery.

use std::time::Duration;

use serde_json::json;

use crate::config::WebhookFormat;
use crate::events::{Event, EventKind};

/// How long one delivery may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A one-line human message for an event.
pub fn message(event: &Event) -> String {
    let node = event.node_name.clone().unwrap_or_else(|| event.node.short());
    let check = event.check.as_deref().unwrap_or("?");
    let error = event.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
    match event.kind {
        EventKind::NodeJoined => format!("ℹ️ {node} joined the mesh"),
        EventKind::NodeRestarted => format!("ℹ️ {node} restarted"),
        EventKind::NodeSuspect => format!("🟠 {node} is not answering"),
        EventKind::NodeDown => format!("🔴 {node} is down"),
        EventKind::NodeUp => format!("🟢 {node} is back up"),
        EventKind::NodeDegraded => format!("🟠 {node} is degraded"),
        EventKind::NodeRecovered => format!("🟢 {node} recovered"),
        EventKind::CheckFailing => format!("🔴 check {check} on {node} is failing{error}"),
        EventKind::CheckOk => format!("🟢 check {check} on {node} is passing again"),
        EventKind::JobFailed => format!(
            "🔴 job {} of schedule {} on {node}{error}",
            event.job.as_deref().unwrap_or("?"),
            event.schedule.as_deref().unwrap_or("?")
        ),
        EventKind::NameConflict => format!("🟠 a node claims a name another key holds{error}"),
        EventKind::PeerOffersRefused => format!("🟠 {node} offers items this node refuses{error}"),
        EventKind::CertificateExpiring => format!("🟠 {node}{error}"),
    }
}

/// The request body for `format`.
pub fn body(format: WebhookFormat, event: &Event) -> serde_json::Value {
    let text = message(event);
    match format {
        WebhookFormat::Discord => json!({ "content": text, "username": "shoal" }),
        WebhookFormat::Slack => json!({ "text": text }),
        WebhookFormat::Json => json!({
            "event": event.kind.as_str(),
            "id": event.id,
            "node": event.node_name,
            "node_key": event.node,
            "check": event.check,
            "schedule": event.schedule,
            "job": event.job,
            "detail": event.detail,
            "at": crate::time::rfc3339_ms(event.at_ms),
            "message": text,
        }),
    }
}

/// POSTs the event; any 2xx is a success.
pub async fn post(client: &reqwest::Client, url: &str, format: WebhookFormat, event: &Event) -> Result<(), String> {
    let resp = client.post(url).json(&body(format, event)).send().await.map_err(|e| {
        // reqwest errors can contain the URL, which is a secret; keep only the kind.
        if e.is_timeout() {
            "timed out".to_string()
        } else if e.is_connect() {
            "connection failed".to_string()
        } else {
            "request failed".to_string()
        }
    })?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", resp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 1,
            id: "abc".into(),
            at_ms: 0,
            kind,
            node: SecretKey::from_seed([1; 32]).public(),
            node_name: Some("web-1".into()),
            check: Some("db".into()),
            detail: Some("connection refused".into()),
            version: 0,
            schedule: None,
            job: None,
        }
    }

    #[test]
    fn bodies_per_format() {
        let down = event(EventKind::NodeDown);
        assert_eq!(body(WebhookFormat::Discord, &down)["content"], "🔴 web-1 is down");
        assert_eq!(body(WebhookFormat::Slack, &down)["text"], "🔴 web-1 is down");
        let failing = event(EventKind::CheckFailing);
        let json = body(WebhookFormat::Json, &failing);
        assert_eq!(json["event"], "check_failing");
        assert_eq!(json["check"], "db");
        assert_eq!(json["node"], "web-1");
        assert_eq!(json["message"], "🔴 check db on web-1 is failing: connection refused");
    }
}
