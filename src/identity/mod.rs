//! Identity and admission: who a node is and whether we let it in.
//!
//! A node's identity is its Ed25519 key ([`SecretKey`] / [`PublicKey`]). A network is also an
//! Ed25519 key; it signs [`NodeCertificate`]s that admit nodes for a period. [`Admission`]
//! decides, from a peer's key and optional certificate, whether the peer may talk to us; the
//! transport calls it during the TLS handshake so an unadmitted peer never gets a connection.

mod admission;
mod cert;
mod keys;

pub use admission::{Admission, Admitted, Refusal};
pub use cert::{CertError, MAX_NAME_LEN, NodeCertificate, validate_node_name};
pub use keys::{KeyError, PublicKey, SecretKey};

/// Seconds since the Unix epoch, the time base of certificates.
pub fn unix_now() -> u64 {
    crate::time::unix_secs()
}
