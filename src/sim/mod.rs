//! A deterministic, seeded, discrete-event simulator of a whole mesh.
//!
//! Every node runs the membership state machine that ships ([`crate::membership::Core`],
//! with the agent's default `[cluster]` settings) and, above it, a [`records::Replica`]: the
//! real item signing, [`crate::replication::policy::Policy::verify`], broadcast keys and
//! range-based reconciliation, standing in for the replication actor (see [`records`] for
//! exactly what it replaces). Nothing reads a clock or opens a socket: time is virtual, the
//! network is [`net::Network`], and one `SmallRng` seeded from the run's seed makes every
//! choice, so a run is a function of its arguments.
//!
//! - [`engine`]: the event queue and how inputs reach the nodes (as the agent's membership
//!   task: datagrams before timers).
//! - [`discovery`]: node records, and announcing to members known only through them.
//! - [`net`]: latency, loss, bandwidth, partitions, one-way cuts, bytes sent.
//! - [`node`]: one node's identity and run (restarts bump its generation).
//! - [`observe`]: how nodes see each other and which items they hold.
//! - [`scenario`]: the measured scenario behind `cargo bench --bench sim`.

pub mod discovery;
pub mod engine;
pub mod net;
pub mod node;
pub mod observe;
pub mod records;
pub mod scenario;

use std::time::Duration;

pub use engine::Sim;
pub use scenario::{Options, Report, run};

use crate::membership::CoreConfig;

/// The membership settings of an agent with a default configuration.
pub fn core_config() -> CoreConfig {
    let c = crate::config::ClusterConfig::default();
    CoreConfig {
        probe_period: c.probe_period,
        probe_timeout: c.probe_timeout,
        suspect_timeout: c.suspect_timeout,
        forget_down_after: c.forget_down_after,
        reconnect_interval: c.reconnect_interval,
    }
}

/// The anti-entropy period of an agent with a default configuration.
pub fn anti_entropy_interval() -> Duration {
    crate::config::ReplicationSection::default().anti_entropy_interval
}
