//! shoal: a peer-to-peer agent for fleets of machines.
//!
//! Layers, bottom up (see ARCHITECTURE.md):
//! - [`identity`]: Ed25519 keys, network certificates, the admission policy;
//! - [`codec`]: the single place that encodes bytes for the wire and disk;
//! - [`store`]: the sled database under the state directory;
//! - [`transport`]: QUIC with mutual TLS bound to node keys;
//! - [`membership`]: SWIM (foca) over QUIC datagrams, joining and rejoining;
//! - [`discover`]: members found through their replicated node records;
//! - [`names`]: which node is shown under which name (bindings, conflicts, lookups);
//! - [`http`]: the local JSON API;
//! - [`agent`]: wiring, start and shutdown;
//! - [`cli`]: the `shoal` command line.

pub mod agent;
pub mod cert_watch;
pub mod cli;
pub mod codec;
pub mod config;
pub mod discover;
pub mod events;
pub mod files;
pub mod health;
pub mod http;
pub mod identity;
pub mod membership;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod reload;
pub mod replication;
pub mod rpc;
pub mod schedules;
pub mod sim;
pub mod store;
pub mod systemd;
pub mod time;
pub mod transport;

/// The shoal version, from Cargo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
