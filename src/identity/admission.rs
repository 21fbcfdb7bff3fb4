//! The admission policy: may a peer with this key (and maybe this certificate) talk to us?

use std::collections::HashMap;

use super::cert::NodeCertificate;
use super::keys::PublicKey;

/// Why a peer was refused. Logged by the transport and counted; never sent to the peer beyond
/// a TLS alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No certificate and not in the allowlist.
    #[error("key is not in trusted_nodes and presented no network certificate")]
    NotAdmitted,
    /// Certificate from another network.
    #[error("certificate was issued by network {issuer}, not ours ({ours})")]
    WrongNetwork {
        /// Network key in the certificate.
        issuer: PublicKey,
        /// Our network key.
        ours: PublicKey,
    },
    /// Certificate admits another key.
    #[error("certificate admits key {cert_key}, but the peer proved key {peer_key}")]
    KeyMismatch {
        /// Key in the certificate.
        cert_key: PublicKey,
        /// Key the peer holds.
        peer_key: PublicKey,
    },
    /// Certificate expired.
    #[error("certificate expired at {}", fmt_time(*.not_after))]
    Expired {
        /// End of validity.
        not_after: u64,
    },
    /// Certificate not valid yet.
    #[error("certificate is not valid before {}", fmt_time(*.not_before))]
    NotYetValid {
        /// Start of validity.
        not_before: u64,
    },
    /// The peer's TLS certificate could not be understood or its extension is bad.
    #[error("malformed peer certificate: {0}")]
    Malformed(String),
    /// We dialled a specific node and another admitted node answered.
    #[error("expected node {expected}, but the peer is {actual}")]
    UnexpectedPeer {
        /// Key we dialled.
        expected: PublicKey,
        /// Key that answered.
        actual: PublicKey,
    },
}

impl Refusal {
    /// Short stable label, for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NotAdmitted => "not_admitted",
            Refusal::WrongNetwork { .. } => "wrong_network",
            Refusal::KeyMismatch { .. } => "key_mismatch",
            Refusal::Expired { .. } => "expired",
            Refusal::NotYetValid { .. } => "not_yet_valid",
            Refusal::Malformed(_) => "malformed",
            Refusal::UnexpectedPeer { .. } => "unexpected_peer",
        }
    }
}

fn fmt_time(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How a peer got in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// Its key is in `trusted_nodes`, with the name that entry binds to it, if any.
    Allowlist {
        /// Name bound by the allowlist entry.
        name: Option<String>,
    },
    /// It holds a valid certificate from our network; the name is the certificate's.
    Certificate {
        /// Name vouched for by the network.
        name: String,
    },
}

/// The admission policy of one node: a network key, an allowlist, or both.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    network_key: Option<PublicKey>,
    /// Admitted keys, each with the name its entry binds, if any.
    trusted: HashMap<PublicKey, Option<String>>,
}

impl Admission {
    /// A policy admitting holders of certificates from `network_key` and keys in `trusted`.
    pub fn new(network_key: Option<PublicKey>, trusted: impl IntoIterator<Item = PublicKey>) -> Self {
        Self::with_names(network_key, trusted.into_iter().map(|k| (k, None)))
    }

    /// Like [`Admission::new`], with a name bound to some of the trusted keys.
    pub fn with_names(
        network_key: Option<PublicKey>,
        trusted: impl IntoIterator<Item = (PublicKey, Option<String>)>,
    ) -> Self {
        Admission {
            network_key,
            trusted: trusted.into_iter().collect(),
        }
    }

    /// Whether `key` is in the allowlist, and the name its entry binds.
    pub fn trusted(&self, key: &PublicKey) -> Option<Option<&str>> {
        self.trusted.get(key).map(|n| n.as_deref())
    }

    /// Names bound by allowlist entries, with their keys.
    pub fn bound_names(&self) -> impl Iterator<Item = (&str, PublicKey)> {
        self.trusted.iter().filter_map(|(k, n)| Some((n.as_deref()?, *k)))
    }

    /// The network key, if certificates are in use.
    pub fn network_key(&self) -> Option<PublicKey> {
        self.network_key
    }

    /// Decides whether `peer_key`, which proved possession of its secret key in the TLS
    /// handshake, is admitted at Unix time `now`.
    pub fn check(&self, peer_key: &PublicKey, cert: Option<&NodeCertificate>, now: u64) -> Result<Admitted, Refusal> {
        if let Some(name) = self.trusted.get(peer_key) {
            return Ok(Admitted::Allowlist { name: name.clone() });
        }
        let (Some(ours), Some(cert)) = (self.network_key, cert) else {
            return Err(Refusal::NotAdmitted);
        };
        if cert.network_key != ours {
            return Err(Refusal::WrongNetwork {
                issuer: cert.network_key,
                ours,
            });
        }
        if cert.node_key != *peer_key {
            return Err(Refusal::KeyMismatch {
                cert_key: cert.node_key,
                peer_key: *peer_key,
            });
        }
        if now > cert.not_after {
            return Err(Refusal::Expired {
                not_after: cert.not_after,
            });
        }
        if now < cert.not_before {
            return Err(Refusal::NotYetValid {
                not_before: cert.not_before,
            });
        }
        Ok(Admitted::Certificate {
            name: cert.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    #[test]
    fn certificate_rules() {
        let net = SecretKey::generate();
        let node = SecretKey::generate().public();
        let policy = Admission::new(Some(net.public()), []);
        let cert = NodeCertificate::issue(&net, node, "n1", 100, 200).unwrap();
        assert_eq!(
            policy.check(&node, Some(&cert), 150),
            Ok(Admitted::Certificate { name: "n1".into() })
        );
        assert!(matches!(
            policy.check(&node, Some(&cert), 201),
            Err(Refusal::Expired { .. })
        ));
        assert!(matches!(
            policy.check(&node, Some(&cert), 99),
            Err(Refusal::NotYetValid { .. })
        ));
        assert_eq!(policy.check(&node, None, 150), Err(Refusal::NotAdmitted));
        let other = SecretKey::generate().public();
        assert!(matches!(
            policy.check(&other, Some(&cert), 150),
            Err(Refusal::KeyMismatch { .. })
        ));
        let foreign = NodeCertificate::issue(&SecretKey::generate(), node, "n1", 100, 200).unwrap();
        assert!(matches!(
            policy.check(&node, Some(&foreign), 150),
            Err(Refusal::WrongNetwork { .. })
        ));
    }

    #[test]
    fn allowlist_rules() {
        let a = SecretKey::generate().public();
        let b = SecretKey::generate().public();
        let policy = Admission::new(None, [a]);
        assert_eq!(policy.check(&a, None, 0), Ok(Admitted::Allowlist { name: None }));
        assert_eq!(policy.check(&b, None, 0), Err(Refusal::NotAdmitted));
        // A certificate means nothing without a configured network key.
        let net = SecretKey::generate();
        let cert = NodeCertificate::issue(&net, b, "b", 0, u64::MAX).unwrap();
        assert_eq!(policy.check(&b, Some(&cert), 5), Err(Refusal::NotAdmitted));
    }
}
