//! Per-node records this node publishes about itself.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `RecordKind::NodeInfo`: who a node is, so every node can name every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// shoal version.
    pub version: String,
    /// Cluster address.
    pub addr: SocketAddr,
    /// Identity generation of the run that published it.
    pub generation: u64,
    /// Start time of that run, Unix milliseconds.
    pub started_at_ms: u64,
    /// Webhooks it has configured, as [`crate::notify::hook_id`]s (never the URLs).
    pub webhooks: Vec<[u8; 16]>,
    /// Its network certificate, so that nodes that never shook hands with it can check the
    /// name it claims against the network's signature (see [`crate::names`]).
    pub network_cert: Option<Vec<u8>>,
}
