//! Node admission certificates: a network key vouches for a node key, under a name, for a
//! period.
//!
//! Fixed binary layout (all integers big endian), signed by the network key over
//! `DOMAIN || body`:
//!
//! ```text
//! body = version:u8 (=1) | network_key:[32] | node_key:[32]
//!      | not_before:u64 | not_after:u64 | name_len:u8 | name:[name_len]
//! certificate = body | signature:[64]
//! ```
//!
//! The text form is standard base64 of `certificate`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::keys::{PublicKey, SecretKey};

/// Domain separation tag for certificate signatures; no other signed layout starts with it.
const DOMAIN: &[u8] = b"shoal/v1/node-certificate\0";
const VERSION: u8 = 1;
/// Longest node name, in bytes. Matches a DNS label so names fit hostnames.
pub const MAX_NAME_LEN: usize = 63;
const FIXED_LEN: usize = 1 + 32 + 32 + 8 + 8 + 1;
const SIG_LEN: usize = 64;

/// Errors parsing or checking certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not valid base64.
    #[error("certificate is not valid base64")]
    Base64,
    /// Wrong length or layout.
    #[error("malformed certificate: {0}")]
    Malformed(&'static str),
    /// Unknown layout version.
    #[error("unsupported certificate version {0}")]
    Version(u8),
    /// The network signature does not verify.
    #[error("certificate signature does not verify")]
    BadSignature,
    /// The node name is not acceptable.
    #[error("invalid node name {0:?}: use 1-63 characters from A-Z a-z 0-9 . _ -")]
    BadName(String),
    /// not_after is before not_before.
    #[error("certificate validity period is empty")]
    EmptyValidity,
}

/// Checks a node name: 1 to 63 bytes of `[A-Za-z0-9._-]`, like a hostname label.
pub fn validate_node_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(name.to_string()))
    }
}

/// A node certificate, parsed and signature-checked against its own network key.
/// Whether that network is *ours*, and whether it is valid *now*, is [`super::Admission`]'s call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertificate {
    /// The network key that signed it.
    pub network_key: PublicKey,
    /// The node key it admits.
    pub node_key: PublicKey,
    /// The node's name.
    pub name: String,
    /// Valid from (Unix seconds, inclusive).
    pub not_before: u64,
    /// Valid until (Unix seconds, inclusive).
    pub not_after: u64,
    signature: [u8; SIG_LEN],
}

impl NodeCertificate {
    /// Issues a certificate for `node_key` signed by `network`.
    pub fn issue(
        network: &SecretKey,
        node_key: PublicKey,
        name: &str,
        not_before: u64,
        not_after: u64,
    ) -> Result<Self, CertError> {
        validate_node_name(name)?;
        if not_after < not_before {
            return Err(CertError::EmptyValidity);
        }
        let mut cert = NodeCertificate {
            network_key: network.public(),
            node_key,
            name: name.to_string(),
            not_before,
            not_after,
            signature: [0; SIG_LEN],
        };
        cert.signature = network.sign(&cert.signed_message());
        Ok(cert)
    }

    fn body(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED_LEN + self.name.len());
        b.push(VERSION);
        b.extend_from_slice(self.network_key.as_bytes());
        b.extend_from_slice(self.node_key.as_bytes());
        b.extend_from_slice(&self.not_before.to_be_bytes());
        b.extend_from_slice(&self.not_after.to_be_bytes());
        b.push(self.name.len() as u8);
        b.extend_from_slice(self.name.as_bytes());
        b
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut m = DOMAIN.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    /// The binary form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.body();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Parses the binary form and verifies the signature against the embedded network key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.len() < FIXED_LEN + SIG_LEN {
            return Err(CertError::Malformed("too short"));
        }
        if bytes[0] != VERSION {
            return Err(CertError::Version(bytes[0]));
        }
        let key = |at: usize| PublicKey(bytes[at..at + 32].try_into().expect("32-byte slice"));
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let name_len = bytes[FIXED_LEN - 1] as usize;
        if bytes.len() != FIXED_LEN + name_len + SIG_LEN {
            return Err(CertError::Malformed("length does not match name length"));
        }
        let name = std::str::from_utf8(&bytes[FIXED_LEN..FIXED_LEN + name_len])
            .map_err(|_| CertError::Malformed("name is not UTF-8"))?;
        validate_node_name(name)?;
        let cert = NodeCertificate {
            network_key: key(1),
            node_key: key(33),
            not_before: u64_at(65),
            not_after: u64_at(73),
            name: name.to_string(),
            signature: bytes[FIXED_LEN + name_len..].try_into().expect("length checked above"),
        };
        cert.network_key
            .verify(&cert.signed_message(), &cert.signature)
            .map_err(|_| CertError::BadSignature)?;
        Ok(cert)
    }

    /// Base64 text form.
    pub fn to_base64(&self) -> String {
        B64.encode(self.to_bytes())
    }

    /// Parses the base64 text form.
    pub fn from_base64(text: &str) -> Result<Self, CertError> {
        let bytes = B64.decode(text.trim()).map_err(|_| CertError::Base64)?;
        Self::from_bytes(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_roundtrip() {
        let net = SecretKey::generate();
        let node = SecretKey::generate().public();
        let c = NodeCertificate::issue(&net, node, "web-1", 10, 20).unwrap();
        let back = NodeCertificate::from_base64(&c.to_base64()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.network_key, net.public());
    }

    #[test]
    fn tampering_is_detected() {
        let net = SecretKey::generate();
        let c = NodeCertificate::issue(&net, SecretKey::generate().public(), "a", 10, 20).unwrap();
        let bytes = c.to_bytes();
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(NodeCertificate::from_bytes(&t).is_err(), "flip at byte {i}");
        }
        assert!(NodeCertificate::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(NodeCertificate::from_base64("@@@"), Err(CertError::Base64));
    }

    #[test]
    fn names_are_validated() {
        let net = SecretKey::generate();
        let k = SecretKey::generate().public();
        for bad in ["", "a b", "x/y", &"n".repeat(64), "ü"] {
            assert!(NodeCertificate::issue(&net, k, bad, 0, 1).is_err(), "{bad:?}");
        }
        assert_eq!(
            NodeCertificate::issue(&net, k, "ok", 5, 4),
            Err(CertError::EmptyValidity)
        );
    }
}
