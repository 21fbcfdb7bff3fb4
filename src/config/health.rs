//! `[health]`: this node's health report and its `[[health.checks]]`.

use std::time::Duration;

use serde::Deserialize;

use super::unique_name;

/// `[health]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// How often the report is evaluated (and the default check interval). A report whose
    /// status or checks changed is sent to the mesh at once. Default 10s.
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// An unchanged report is refreshed this often, quietly (by anti-entropy, not broadcast).
    /// Default 10m.
    #[serde(default = "default_health_refresh", with = "humantime_serde")]
    pub refresh: Duration,
    /// A node without a report newer than this is no longer listed. Default 7 days.
    #[serde(default = "default_health_forget", with = "humantime_serde")]
    pub forget_after: Duration,
    /// Checks: `[[health.checks]]`.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval: default_health_interval(),
            refresh: default_health_refresh(),
            forget_after: default_health_forget(),
            checks: Vec::new(),
        }
    }
}

fn default_health_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_health_refresh() -> Duration {
    Duration::from_secs(600)
}
fn default_health_forget() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_expect_status() -> u16 {
    200
}

/// Kind of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// GET a URL and compare the status.
    Http,
    /// Open a TCP connection.
    Tcp,
    /// Run a command; exit status 0 is ok.
    Command,
}

/// One `[[health.checks]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// Name, unique on this node: 1-63 characters from A-Z a-z 0-9 . _ -.
    pub name: String,
    /// `http`, `tcp` or `command`.
    #[serde(rename = "type")]
    pub kind: CheckType,
    /// http: the URL to GET.
    pub url: Option<String>,
    /// http: the expected status. Default 200.
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    /// tcp: `host:port`.
    pub address: Option<String>,
    /// command: argv (no shell).
    pub command: Option<Vec<String>>,
    /// How often to run it. Default: `[health] interval`.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Longest a run may take. Default 5s.
    #[serde(default = "default_check_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Failures in a row tolerated before the check is failing. Default 0.
    #[serde(default)]
    pub retries: u32,
    /// Optional group, for display.
    pub group: Option<String>,
}

/// Checks each `[[health.checks]]` entry; on error, the key (`checks[i]`) and the message.
pub(super) fn validate(health: &HealthSection) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    for (i, check) in health.checks.iter().enumerate() {
        let key = format!("checks[{i}]");
        let bad = |message: String| (key.clone(), message);
        unique_name("check name", &check.name, &mut names).map_err(bad)?;
        match check.kind {
            CheckType::Http => match &check.url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {}
                _ => {
                    return Err(bad(format!(
                        "{}: an http check needs url = \"http(s)://...\"",
                        check.name
                    )));
                }
            },
            CheckType::Tcp => {
                let ok = check
                    .address
                    .as_deref()
                    .and_then(|a| a.rsplit_once(':'))
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
                if !ok {
                    return Err(bad(format!(
                        "{}: a tcp check needs address = \"host:port\"",
                        check.name
                    )));
                }
            }
            CheckType::Command => {
                if check.command.as_ref().is_none_or(|c| c.is_empty() || c[0].is_empty()) {
                    return Err(bad(format!(
                        "{}: a command check needs command = [\"program\", \"arg\", ...]",
                        check.name
                    )));
                }
            }
        }
        if check.timeout.is_zero() || check.interval.is_some_and(|i| i.is_zero()) {
            return Err(bad(format!("{}: timeout and interval must be above zero", check.name)));
        }
    }
    Ok(())
}
