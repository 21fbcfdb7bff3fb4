//! Agent configuration: a TOML file with `${VAR}` expansion, typed sections, documented
//! defaults, and errors that name the file, the line and the key.
//!
//! Values that have a syntax of their own (addresses, keys, durations) are parsed while the
//! TOML is deserialized, so a bad value is reported with the line it is on. Checks that span
//! several keys run afterwards and point at the section they concern.

mod expand;
mod health;
pub mod http;
mod network;
mod notify;
pub mod schedules;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

pub use expand::{Env, ExpandError, ProcessEnv, expand};
pub use health::{CheckConfig, CheckType, HealthSection};
pub use http::{AllowedHost, DEFAULT_HTTP_LISTEN, HttpConfig};
pub use network::TrustedNode;
pub use notify::{NotifySection, WebhookConfig, WebhookFormat};

use crate::files::validate_file_name;
use crate::identity::{NodeCertificate, PublicKey, validate_node_name};

/// Default path of the agent's config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/shoal/shoal.toml";
/// Default cluster (QUIC/UDP) port.
pub const DEFAULT_CLUSTER_PORT: u16 = 7946;
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/shoal";

/// A configuration problem. Always names the file; names the line and key where known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Io {
        /// Config path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// `${VAR}` expansion failed.
    #[error("{path}: {source}")]
    Expand {
        /// Config path.
        path: PathBuf,
        /// What failed, with its line.
        source: ExpandError,
    },
    /// TOML syntax, an unknown key or a bad value. toml's message names the line, column and
    /// shows the offending key.
    #[error("{path}: {message}")]
    Parse {
        /// Config path.
        path: PathBuf,
        /// toml's rendering of the problem.
        message: String,
    },
    /// A value that is well formed alone but wrong in context.
    #[error("{path}{}: {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// Config path.
        path: PathBuf,
        /// Line of the key or its section, if found.
        line: Option<usize>,
        /// Dotted key, e.g. `network.certificate`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole agent configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[node]`: who this node is and where it keeps state.
    #[serde(default)]
    pub node: NodeConfig,
    /// `[cluster]`: the QUIC/SWIM side.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[network]`: who is admitted.
    #[serde(default)]
    pub network: NetworkConfig,
    /// `[http]`: the local API.
    #[serde(default)]
    pub http: HttpConfig,
    /// `[files]`: file name → base64 public keys allowed to sign it. Only these names are
    /// accepted, from uploads and from peers.
    #[serde(default)]
    pub files: BTreeMap<String, Vec<PublicKey>>,
    /// `[replication]`: tuning of signed state replication.
    #[serde(default)]
    pub replication: ReplicationSection,
    /// `[health]`: this node's health report and checks.
    #[serde(default)]
    pub health: HealthSection,
    /// `[notify]`: alerts.
    #[serde(default)]
    pub notify: NotifySection,
    /// `[[schedules]]`: commands run on a cron schedule.
    #[serde(default)]
    pub schedules: Vec<schedules::ScheduleConfig>,
}

/// `[replication]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    /// How often to reconcile with a random peer (also done at once when this node joins
    /// and when a member comes up). Default 30s.
    #[serde(default = "default_anti_entropy_interval", with = "humantime_serde")]
    pub anti_entropy_interval: Duration,
    /// Largest accepted file, e.g. "64MiB". Default 64 MiB.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: bytesize::ByteSize,
    /// Versions further than this in the future are rejected. Default 5m.
    #[serde(default = "default_max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        ReplicationSection {
            anti_entropy_interval: default_anti_entropy_interval(),
            max_file_size: default_max_file_size(),
            max_clock_skew: default_max_clock_skew(),
        }
    }
}

fn default_anti_entropy_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_file_size() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(64)
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(300)
}

/// `[node]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name shown to operators. Default: the network certificate's name, else the
    /// hostname.
    pub name: Option<String>,
    /// Directory for the node's database and files. Default `/var/lib/shoal`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The node's Ed25519 secret key; created on first start if missing.
    /// Default `<state_dir>/node.key`.
    pub key_file: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: None,
            state_dir: default_state_dir(),
            key_file: None,
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// `[cluster]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// UDP address of the QUIC endpoint. Default `0.0.0.0:7946`.
    #[serde(default = "default_cluster_listen")]
    pub listen: SocketAddr,
    /// Address other nodes should use to reach this one. Default: the listen address, or when
    /// that is a wildcard, the first address of `interfaces`, else of the default route.
    pub advertise: Option<SocketAddr>,
    /// Nodes to join through, as `host:port` (port defaults to 7946). DNS names are resolved
    /// again on every attempt.
    #[serde(default)]
    pub bootstrap: Vec<HostPort>,
    /// Network interfaces whose address to advertise (first with an address wins).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// How often each node probes one random member. Default 1s.
    #[serde(default = "default_probe_period", with = "humantime_serde")]
    pub probe_period: Duration,
    /// How long a direct probe waits before asking others to probe indirectly. Default 500ms.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// How long a suspected member has to refute before it is declared down, in a mesh of
    /// up to 10 members. Default 2.5s. Larger meshes multiply it by log10 of their size
    /// (`membership::scale`): a refutation needs about log N rounds of gossip to reach everyone.
    #[serde(default = "default_suspect_timeout", with = "humantime_serde")]
    pub suspect_timeout: Duration,
    /// How long a down member stays listed before it is forgotten. Default 1h.
    #[serde(default = "default_forget_down_after", with = "humantime_serde")]
    pub forget_down_after: Duration,
    /// How often each node tries to reach members it believes down (all of them up to 8, else
    /// two, recent verdicts first), so that the two sides of a healed partition find each other
    /// again. Each try costs a QUIC handshake attempt while any member is down. Default 20s.
    #[serde(default = "default_reconnect_interval", with = "humantime_serde")]
    pub reconnect_interval: Duration,
    /// Longest wait between join attempts (backoff doubles from 500ms up to this). Default 30s.
    #[serde(default = "default_join_backoff_max", with = "humantime_serde")]
    pub join_backoff_max: Duration,
    /// An idle QUIC connection is closed after this long. Default 90s.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most QUIC connections held at once, both directions. Membership needs none once a
    /// handshake has given a session key (sealed datagrams), so at the limit the oldest
    /// connection to such a peer is closed to make room; a stream on it fails and is retried.
    /// Default 256 (each costs about 43 KB).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: default_cluster_listen(),
            advertise: None,
            bootstrap: Vec::new(),
            interfaces: Vec::new(),
            probe_period: default_probe_period(),
            probe_timeout: default_probe_timeout(),
            suspect_timeout: default_suspect_timeout(),
            forget_down_after: default_forget_down_after(),
            reconnect_interval: default_reconnect_interval(),
            join_backoff_max: default_join_backoff_max(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

fn default_cluster_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_CLUSTER_PORT))
}
fn default_probe_period() -> Duration {
    Duration::from_secs(1)
}
fn default_probe_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_suspect_timeout() -> Duration {
    Duration::from_millis(2500)
}
fn default_forget_down_after() -> Duration {
    Duration::from_secs(3600)
}
fn default_reconnect_interval() -> Duration {
    Duration::from_secs(20)
}
fn default_join_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(90)
}
fn default_max_connections() -> usize {
    256
}

/// `[network]` section: admission by network certificate, by allowlist, or both.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The network public key (network id). Peers holding a certificate it signed are admitted.
    #[serde(alias = "id")]
    pub network_key: Option<PublicKey>,
    /// This node's certificate from `shoal cert sign`, base64.
    pub certificate: Option<String>,
    /// Or: a file holding it.
    pub certificate_file: Option<PathBuf>,
    /// Keys admitted without a certificate: a bare key, or `{ key = "...", name = "web-1" }`,
    /// which also binds the name to that key (no other key can be shown under it).
    #[serde(default)]
    pub trusted_nodes: Vec<TrustedNode>,
    /// Name of the mesh when it has no network key (allowlist only): every node of one mesh
    /// must use the same name, since signed items bind it. Default "shoal".
    pub name: Option<String>,
}

/// A `host:port` pair whose host may be a DNS name, resolved when used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("invalid address {s:?}: expected host:port, e.g. 10.0.0.1:7946 or seed.example.com:7946");
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, tail) = rest.split_once(']').ok_or_else(bad)?;
            let port = match tail {
                "" => None,
                t => Some(t.strip_prefix(':').ok_or_else(bad)?),
            };
            (h, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => (s, None), // bare IPv6 literal
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
            None => DEFAULT_CLUSTER_PORT,
        };
        let valid_host = !host.is_empty()
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host.split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !valid_host {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Reads, expands and parses the config at `path` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, &ProcessEnv)
    }

    /// Expands and parses config `text`; `path` is used in messages and to resolve
    /// `certificate_file`.
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let expanded = expand(text, env).map_err(|source| ConfigError::Expand {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&expanded).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.validate(&expanded, path)?;
        Ok(config)
    }

    fn validate(&self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let invalid = |section: &str, key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            line: locate(text, section, key),
            key: format!("{section}.{key}"),
            message,
        };
        if let Some(name) = &self.node.name {
            validate_node_name(name).map_err(|e| invalid("node", "name", e.to_string()))?;
        }
        let net = &self.network;
        if net.network_key.is_none() && net.trusted_nodes.is_empty() {
            return Err(invalid(
                "network",
                "network_key",
                "no admission configured: set network_key and certificate (see `shoal network new` and `shoal cert sign`), or trusted_nodes".into(),
            ));
        }
        let mut keys = HashSet::new();
        let mut names = HashMap::new();
        for t in &net.trusted_nodes {
            if !keys.insert(t.key) {
                return Err(invalid(
                    "network",
                    "trusted_nodes",
                    format!("{} is listed twice", t.key),
                ));
            }
            if let Some(name) = &t.name {
                validate_node_name(name).map_err(|e| invalid("network", "trusted_nodes", e.to_string()))?;
                if let Some(other) = names.insert(name.clone(), t.key) {
                    return Err(invalid(
                        "network",
                        "trusted_nodes",
                        format!("name {name} is bound to two keys, {other} and {}", t.key),
                    ));
                }
            }
        }
        if net.certificate.is_some() && net.certificate_file.is_some() {
            return Err(invalid(
                "network",
                "certificate_file",
                "set certificate or certificate_file, not both".into(),
            ));
        }
        let has_cert = net.certificate.is_some() || net.certificate_file.is_some();
        if net.network_key.is_some() && !has_cert {
            return Err(invalid(
                "network",
                "certificate",
                "network_key is set but this node has no certificate; issue one with `shoal cert sign`".into(),
            ));
        }
        if has_cert && net.network_key.is_none() {
            return Err(invalid(
                "network",
                "network_key",
                "a certificate needs the network_key it was issued by".into(),
            ));
        }
        if let Some(cert) = self.certificate(path)? {
            let key = if net.certificate.is_some() {
                "certificate"
            } else {
                "certificate_file"
            };
            if Some(cert.network_key) != net.network_key {
                return Err(invalid(
                    "network",
                    key,
                    format!(
                        "certificate was issued by network {}, not network_key",
                        cert.network_key
                    ),
                ));
            }
            if let Some(name) = &self.node.name
                && *name != cert.name
            {
                return Err(invalid(
                    "node",
                    "name",
                    format!("{name:?} differs from the name in the certificate ({:?})", cert.name),
                ));
            }
        }
        for (name, keys) in &self.files {
            validate_file_name(name).map_err(|e| invalid("files", name, e.to_string()))?;
            if keys.is_empty() {
                return Err(invalid(
                    "files",
                    name,
                    "lists no signer keys; nobody could update it".into(),
                ));
            }
        }
        if self.replication.max_file_size.as_u64() == 0 {
            return Err(invalid("replication", "max_file_size", "must be above zero".into()));
        }
        if self.replication.anti_entropy_interval.is_zero() {
            return Err(invalid(
                "replication",
                "anti_entropy_interval",
                "must be above zero".into(),
            ));
        }
        health::validate(&self.health).map_err(|(key, message)| invalid("health", &key, message))?;
        notify::validate(&self.notify).map_err(|(key, message)| invalid("notify", &key, message))?;
        if let Err((i, key, message)) = schedules::validate(&self.schedules) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                line: locate_array(text, "schedules", i, key),
                key: format!("schedules[{i}].{key}"),
                message,
            });
        }
        if self.health.interval.is_zero() || self.health.refresh < self.health.interval {
            return Err(invalid(
                "health",
                "refresh",
                "interval must be above zero and refresh at least interval".into(),
            ));
        }
        if net.network_key.is_some() && net.name.is_some() {
            return Err(invalid(
                "network",
                "name",
                "only used without network_key (the network key is the id)".into(),
            ));
        }
        let c = &self.cluster;
        if c.probe_timeout.is_zero() || c.probe_timeout >= c.probe_period {
            return Err(invalid(
                "cluster",
                "probe_timeout",
                "must be above zero and below probe_period".into(),
            ));
        }
        if c.reconnect_interval.is_zero() {
            return Err(invalid("cluster", "reconnect_interval", "must be above zero".into()));
        }
        if c.suspect_timeout.is_zero() {
            return Err(invalid("cluster", "suspect_timeout", "must be above zero".into()));
        }
        if c.max_connections == 0 {
            return Err(invalid("cluster", "max_connections", "must be at least 1".into()));
        }
        if c.idle_timeout < c.probe_period * 2 {
            return Err(invalid(
                "cluster",
                "idle_timeout",
                "must be at least twice probe_period".into(),
            ));
        }
        self.api_token(path).map_err(|e| match e {
            ConfigError::Invalid { message, .. } => invalid("http", "token_file", message),
            other => other,
        })?;
        Ok(())
    }

    /// The API token from `[http] token_file` (resolved against the config file's
    /// directory), if one is configured; the file is checked as [`http::read_token`] says.
    pub fn api_token(&self, config_path: &Path) -> Result<Option<String>, ConfigError> {
        let Some(file) = &self.http.token_file else {
            return Ok(None);
        };
        http::read_token(&resolve(config_path, file))
            .map(Some)
            .map_err(|message| ConfigError::Invalid {
                path: config_path.to_path_buf(),
                line: None,
                key: "http.token_file".into(),
                message,
            })
    }

    /// The file this node's certificate is read from, when it is configured as a file.
    pub fn certificate_path(&self, config_path: &Path) -> Option<PathBuf> {
        self.network
            .certificate_file
            .as_deref()
            .map(|f| resolve(config_path, f))
    }

    /// This node's certificate, parsed and signature-checked, if one is configured.
    pub fn certificate(&self, config_path: &Path) -> Result<Option<NodeCertificate>, ConfigError> {
        let net = &self.network;
        let (text, key) = match (&net.certificate, &net.certificate_file) {
            (Some(t), _) => (t.clone(), "certificate"),
            (None, Some(file)) => {
                let file = resolve(config_path, file);
                let t = std::fs::read_to_string(&file).map_err(|e| ConfigError::Invalid {
                    path: config_path.to_path_buf(),
                    line: None,
                    key: "network.certificate_file".into(),
                    message: format!("{}: {e}", file.display()),
                })?;
                (t, "certificate_file")
            }
            (None, None) => return Ok(None),
        };
        NodeCertificate::from_base64(&text)
            .map(Some)
            .map_err(|e| ConfigError::Invalid {
                path: config_path.to_path_buf(),
                line: None,
                key: format!("network.{key}"),
                message: e.to_string(),
            })
    }

    /// The network id signed items are bound to: the network key, or (allowlist meshes) a
    /// hash of `[network] name`.
    pub fn network_id(&self) -> [u8; 32] {
        match self.network.network_key {
            Some(k) => *k.as_bytes(),
            None => blake3::derive_key(
                "shoal v1 network id",
                self.network.name.as_deref().unwrap_or("shoal").as_bytes(),
            ),
        }
    }

    /// The key file path, defaulting to `<state_dir>/node.key`.
    pub fn key_file(&self) -> PathBuf {
        self.node
            .key_file
            .clone()
            .unwrap_or_else(|| self.node.state_dir.join("node.key"))
    }

    /// A configuration for in-process tests and the demo: loopback, OS-chosen ports, fast
    /// timers, state under `state_dir`. Admission must still be filled in by the caller.
    pub fn for_test(state_dir: &Path) -> Config {
        Config {
            node: NodeConfig {
                name: None,
                state_dir: state_dir.to_path_buf(),
                key_file: None,
            },
            cluster: ClusterConfig {
                listen: "127.0.0.1:0".parse().expect("constant"),
                probe_period: Duration::from_millis(500),
                probe_timeout: Duration::from_millis(200),
                suspect_timeout: Duration::from_millis(1500),
                reconnect_interval: Duration::from_secs(2),
                join_backoff_max: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(30),
                ..ClusterConfig::default()
            },
            network: NetworkConfig::default(),
            http: HttpConfig {
                listen: "127.0.0.1:0".parse().expect("constant"),
                ..HttpConfig::default()
            },
            files: BTreeMap::new(),
            replication: ReplicationSection {
                anti_entropy_interval: Duration::from_secs(2),
                ..ReplicationSection::default()
            },
            health: HealthSection {
                interval: Duration::from_secs(1),
                refresh: Duration::from_secs(30),
                ..HealthSection::default()
            },
            notify: NotifySection::default(),
            schedules: Vec::new(),
        }
    }
}

/// Resolves `file` relative to the directory of the config file.
fn resolve(config_path: &Path, file: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_path_buf(),
    }
}

/// Checks that `name` (a check, webhook or schedule name: `what`) is well formed and not yet in
/// `seen`, then adds it.
fn unique_name<'a>(what: &str, name: &'a str, seen: &mut std::collections::HashSet<&'a str>) -> Result<(), String> {
    validate_node_name(name)
        .map_err(|_| format!("invalid {what} {name:?}: use 1-63 characters from A-Z a-z 0-9 . _ -"))?;
    if !seen.insert(name) {
        return Err(format!("duplicate {what} {name:?}"));
    }
    Ok(())
}

/// Finds the 1-based line of `key` inside the `index`-th `[[array]]` table, or of its header.
fn locate_array(text: &str, array: &str, index: usize, key: &str) -> Option<usize> {
    let header = format!("[[{array}]]");
    let mut seen = 0;
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            if t == header {
                seen += 1;
                if seen == index + 1 {
                    header_line = Some(i + 1);
                }
            } else if header_line.is_some() {
                break;
            }
        } else if header_line.is_some() && t.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) {
            return Some(i + 1);
        }
    }
    header_line
}

/// Finds the 1-based line of `key` inside `[section]`, or of the section header.
fn locate(text: &str, section: &str, key: &str) -> Option<usize> {
    let header = format!("[{section}]");
    let mut in_section = false;
    let mut header_line = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t == header;
            if in_section {
                header_line = Some(i + 1);
            }
        } else if in_section
            && [key.to_string(), format!("\"{key}\"")].iter().any(|k| {
                t.strip_prefix(k.as_str())
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
        {
            return Some(i + 1);
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text` as `/etc/shoal/shoal.toml` with no environment (the section modules'
    /// tests use it too).
    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("/etc/shoal/shoal.toml"),
            &HashMap::<String, String>::new(),
        )
    }

    const ALLOW: &str = "[network]\ntrusted_nodes = [\"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\"]\n";

    #[test]
    fn defaults() {
        let c = parse(ALLOW).unwrap();
        assert_eq!(c.cluster.listen.port(), 7946);
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:7331");
        assert_eq!(c.key_file(), PathBuf::from("/var/lib/shoal/node.key"));
        assert_eq!(c.cluster.probe_period, Duration::from_secs(1));
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse(&format!("{ALLOW}[cluster]\nlisten = \"0.0.0.0:7946\"\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/shoal/shoal.toml"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn bad_values_name_line() {
        let err = parse(&format!("{ALLOW}[http]\nlisten = \"localhost\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4") && err.contains("listen"), "{err}");
        let err = parse("[network]\ntrusted_nodes = [\"abc\"]\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("invalid public key"), "{err}");
        let err = parse(&format!("{ALLOW}[cluster]\nbootstrap = [\"a b:1\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid address"), "{err}");
        let err = parse(&format!("{ALLOW}[cluster]\nprobe_period = \"fast\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn cross_field_errors_point_at_section() {
        let err = parse("[node]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(
            err.contains("network.network_key") && err.contains("no admission"),
            "{err}"
        );
        let err = parse(&format!(
            "{ALLOW}[cluster]\nprobe_period = \"1s\"\nprobe_timeout = \"2s\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("shoal.toml:5") && err.contains("cluster.probe_timeout"),
            "{err}"
        );
    }

    #[test]
    fn env_expansion_errors_name_file_and_line() {
        let err = parse(&format!("{ALLOW}[node]\nname = \"${{NODE_NAME}}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shoal.toml") && err.contains("line 4") && err.contains("NODE_NAME"),
            "{err}"
        );
        let env: HashMap<String, String> = [("NODE_NAME".to_string(), "web-1".to_string())].into();
        let c = Config::parse(
            &format!("{ALLOW}[node]\nname = \"${{NODE_NAME}}\"\n"),
            Path::new("x.toml"),
            &env,
        )
        .unwrap();
        assert_eq!(c.node.name.as_deref(), Some("web-1"));
    }

    #[test]
    fn files_section() {
        let c = parse(&format!("{ALLOW}[files]\n\"config:app\" = [\"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\"]\n[replication]\nmax_file_size = \"10MiB\"\n")).unwrap();
        assert_eq!(c.files["config:app"].len(), 1);
        assert_eq!(c.replication.max_file_size.as_u64(), 10 * 1024 * 1024);
        let err = parse(&format!(
            "{ALLOW}[files]\n\"../etc\" = [\"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid file name"), "{err}");
        let err = parse(&format!("{ALLOW}[files]\nempty = []\n")).unwrap_err().to_string();
        assert!(err.contains("files.empty") && err.contains("no signer"), "{err}");
        let a = parse(ALLOW).unwrap();
        let b = parse(&format!("{ALLOW}name = \"other\"\n")).unwrap();
        assert_ne!(a.network_id(), b.network_id());
    }

    #[test]
    fn health_checks() {
        let c = parse(&format!("{ALLOW}[[health.checks]]\nname = \"api\"\ntype = \"http\"\nurl = \"http://127.0.0.1:8080/\"\nretries = 2\n[[health.checks]]\nname = \"db\"\ntype = \"tcp\"\naddress = \"db.internal:5432\"\ngroup = \"data\"\n")).unwrap();
        assert_eq!(c.health.checks.len(), 2);
        assert_eq!(c.health.checks[0].expect_status, 200);
        for (text, needle) in [
            ("name = \"x\"\ntype = \"http\"\n", "needs url"),
            ("name = \"x\"\ntype = \"tcp\"\naddress = \"nohost\"\n", "needs address"),
            ("name = \"x\"\ntype = \"command\"\ncommand = []\n", "needs command"),
            (
                "name = \"x y\"\ntype = \"tcp\"\naddress = \"a:1\"\n",
                "invalid check name",
            ),
            ("name = \"x\"\ntype = \"ping\"\n", "unknown variant"),
        ] {
            let err = parse(&format!("{ALLOW}[[health.checks]]\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        let err = parse(&format!("{ALLOW}[[health.checks]]\nname = \"a\"\ntype = \"tcp\"\naddress = \"h:1\"\n[[health.checks]]\nname = \"a\"\ntype = \"tcp\"\naddress = \"h:2\"\n")).unwrap_err().to_string();
        assert!(err.contains("duplicate"), "{err}");
    }

    #[test]
    fn webhooks() {
        let c = parse(&format!("{ALLOW}[[notify.webhooks]]\nname = \"ops\"\nurl = \"https://discord.com/api/webhooks/1/secret\"\nformat = \"discord\"\n")).unwrap();
        assert_eq!(c.notify.webhooks[0].events.len(), 5);
        assert!(
            !format!("{:?}", c.notify.webhooks[0]).contains("secret"),
            "Debug never shows the URL"
        );
        for (text, needle) in [
            ("name = \"x\"\nurl = \"ftp://x\"\nformat = \"json\"\n", "http(s) URL"),
            (
                "name = \"x\"\nurl = \"https://x\"\nformat = \"teams\"\n",
                "unknown variant",
            ),
            (
                "name = \"x\"\nurl = \"https://x\"\nformat = \"json\"\nevents = [\"node_exploded\"]\n",
                "unknown event",
            ),
            (
                "name = \"x\"\nurl = \"https://x\"\nformat = \"json\"\nevents = [\"peer_offers_refused\"]\n",
                "not sent to webhooks",
            ),
        ] {
            let err = parse(&format!("{ALLOW}[[notify.webhooks]]\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn host_port_forms() {
        let hp = |s: &str| s.parse::<HostPort>();
        assert_eq!(
            hp("10.0.0.1:7000").unwrap(),
            HostPort {
                host: "10.0.0.1".into(),
                port: 7000
            }
        );
        assert_eq!(hp("seed.example.com").unwrap().port, 7946);
        assert_eq!(
            hp("[::1]:9").unwrap(),
            HostPort {
                host: "::1".into(),
                port: 9
            }
        );
        assert_eq!(hp("::1").unwrap().host, "::1");
        assert_eq!(hp("[::1]:9").unwrap().to_string(), "[::1]:9");
        for bad in ["", ":7946", "host:0", "host:99999", "a b:1", "[::1", "h:x"] {
            assert!(hp(bad).is_err(), "{bad:?}");
        }
    }
}
