//! `[notify]`: the `[[notify.webhooks]]` alerts are sent to.

use std::fmt;

use serde::Deserialize;

use super::unique_name;

/// `[notify]` section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// `[[notify.webhooks]]`.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// Body format of a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"content": "..."}`.
    Discord,
    /// `{"text": "..."}`.
    Slack,
    /// The event as JSON.
    Json,
}

/// One `[[notify.webhooks]]` entry. Nodes with the same name and URL share the webhook: one
/// of them (the leader) sends each notification.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name (shown in logs and APIs instead of the URL).
    pub name: String,
    /// Where to POST. Secret: never shown by any API or log.
    pub url: String,
    /// Body format.
    pub format: WebhookFormat,
    /// Event kinds to send. Default: node_down, node_up, check_failing, check_ok.
    #[serde(default = "default_webhook_events")]
    pub events: Vec<String>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &"<redacted>")
            .field("format", &self.format)
            .field("events", &self.events)
            .finish()
    }
}

fn default_webhook_events() -> Vec<String> {
    ["node_down", "node_up", "check_failing", "check_ok", "job_failed"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Checks each `[[notify.webhooks]]` entry; on error, the key (`webhooks[i]`) and the message.
pub(super) fn validate(notify: &NotifySection) -> Result<(), (String, String)> {
    let mut hooks = std::collections::HashSet::new();
    for (i, hook) in notify.webhooks.iter().enumerate() {
        let key = format!("webhooks[{i}]");
        let bad = |message: String| (key.clone(), message);
        unique_name("webhook name", &hook.name, &mut hooks).map_err(bad)?;
        if !(hook.url.starts_with("https://") || hook.url.starts_with("http://"))
            || reqwest::Url::parse(&hook.url).is_err()
        {
            return Err(bad(format!("{}: url must be an http(s) URL", hook.name)));
        }
        if hook.events.is_empty() {
            return Err(bad(format!("{}: events is empty; nothing would be sent", hook.name)));
        }
        for e in &hook.events {
            let kind = crate::events::EventKind::ALL.iter().find(|k| k.as_str() == e);
            if kind.is_some_and(|k| !k.notifiable()) {
                return Err(bad(format!(
                    "{}: event {e:?} is seen only by the node it happens on and is not sent to webhooks",
                    hook.name
                )));
            }
            if kind.is_none() {
                let known: Vec<&str> = crate::events::EventKind::ALL
                    .iter()
                    .filter(|k| k.notifiable())
                    .map(|k| k.as_str())
                    .collect();
                return Err(bad(format!(
                    "{}: unknown event {e:?}; known: {}",
                    hook.name,
                    known.join(", ")
                )));
            }
        }
    }
    Ok(())
}
