//! What this node accepts: the checks every item passes before anything about it is stored.
//!
//! Order matters for cost: cheap structural and authorization checks run before the
//! signature, and the signature before the content hash.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::hlc;
use super::item::{ItemKey, MAX_META_LEN, SignedItem, WireItem};
use crate::identity::PublicKey;

/// Largest per-node record content.
pub const MAX_RECORD_SIZE: u64 = 64 * 1024;

/// Why an item was rejected. Every rejection is counted by reason and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, thiserror::Error)]
pub enum Reject {
    /// Does not parse (truncated, trailing bytes, unknown fields, record without content).
    #[error("malformed item")]
    Malformed,
    /// A file name that could escape the files directory or is otherwise invalid.
    #[error("invalid file name")]
    BadName,
    /// Signed for another network.
    #[error("item belongs to another network")]
    OtherNetwork,
    /// A file name not listed in `[files]`.
    #[error("file name is not configured in [files]")]
    UnknownFile,
    /// The signer may not write this key.
    #[error("signer is not authorized for this item")]
    UnauthorizedSigner,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The version is too far in the future.
    #[error("version is too far in the future (clock skew)")]
    FutureVersion,
    /// Larger than allowed.
    #[error("item is too large")]
    TooLarge,
    /// The content does not match the signed hash or size.
    #[error("content does not match its signed hash")]
    HashMismatch,
    /// Not newer than what is stored (a replay, or an older version).
    #[error("not newer than the stored version")]
    Stale,
}

impl Reject {
    /// Stable label for metrics and API errors.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::BadName => "bad_name",
            Reject::OtherNetwork => "other_network",
            Reject::UnknownFile => "unknown_file",
            Reject::UnauthorizedSigner => "unauthorized_signer",
            Reject::BadSignature => "bad_signature",
            Reject::FutureVersion => "future_version",
            Reject::TooLarge => "too_large",
            Reject::HashMismatch => "hash_mismatch",
            Reject::Stale => "stale_version",
        }
    }

    /// Every reason, for exporting counters.
    pub const ALL: [Reject; 10] = [
        Reject::Malformed,
        Reject::BadName,
        Reject::OtherNetwork,
        Reject::UnknownFile,
        Reject::UnauthorizedSigner,
        Reject::BadSignature,
        Reject::FutureVersion,
        Reject::TooLarge,
        Reject::HashMismatch,
        Reject::Stale,
    ];
}

/// An item whose signature, authorization and (inline) content have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed meta.
    pub item: SignedItem,
    /// Its content when it travelled with it (checked against the hash).
    pub content: Option<Vec<u8>>,
}

/// The acceptance rules of one node.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Network id items must carry.
    pub network_id: [u8; 32],
    /// File name → keys allowed to sign it.
    pub files: BTreeMap<String, HashSet<PublicKey>>,
    /// Largest file body.
    pub max_file_size: u64,
    /// How far in the future a version may be.
    pub max_skew: Duration,
}

impl Policy {
    /// Checks everything about `wire` that does not depend on what is stored.
    pub fn verify(&self, wire: &WireItem, now_ms: u64) -> Result<Verified, Reject> {
        if wire.meta.len() > MAX_META_LEN {
            return Err(Reject::Malformed);
        }
        let item = SignedItem::parse(&wire.meta, &wire.signature).map_err(|e| match e {
            super::item::ItemError::BadName(_) => Reject::BadName,
            super::item::ItemError::Malformed(_) => Reject::Malformed,
        })?;
        let meta = &item.meta;
        if meta.network != self.network_id {
            return Err(Reject::OtherNetwork);
        }
        match &meta.key {
            ItemKey::Node { node, .. } => {
                if *node != meta.signer {
                    return Err(Reject::UnauthorizedSigner);
                }
                if meta.size > MAX_RECORD_SIZE {
                    return Err(Reject::TooLarge);
                }
            }
            ItemKey::File { name } => {
                let signers = self.files.get(name).ok_or(Reject::UnknownFile)?;
                if !signers.contains(&meta.signer) {
                    return Err(Reject::UnauthorizedSigner);
                }
                if meta.size > self.max_file_size {
                    return Err(Reject::TooLarge);
                }
            }
        }
        if !item.verify_signature() {
            return Err(Reject::BadSignature);
        }
        if hlc::physical_ms(meta.version) > now_ms.saturating_add(self.max_skew.as_millis() as u64) {
            return Err(Reject::FutureVersion);
        }
        if let Some(content) = &wire.content
            && (meta.deleted || content.len() as u64 != meta.size || *blake3::hash(content).as_bytes() != meta.hash)
        {
            return Err(Reject::HashMismatch);
        }
        Ok(Verified {
            item,
            content: wire.content.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;
    use crate::replication::item::{ItemMeta, RecordKind};

    const NOW: u64 = 1_800_000_000_000;

    fn policy(signer: &SecretKey) -> Policy {
        Policy {
            network_id: [1; 32],
            files: [("app".to_string(), [signer.public()].into_iter().collect())].into(),
            max_file_size: 1000,
            max_skew: Duration::from_secs(300),
        }
    }

    fn file_item(key: &SecretKey, name: &str, body: &[u8], network: [u8; 32], version_ms: u64) -> WireItem {
        let meta = ItemMeta {
            network,
            key: ItemKey::File { name: name.into() },
            version: hlc::from_ms(version_ms),
            signer: key.public(),
            hash: *blake3::hash(body).as_bytes(),
            size: body.len() as u64,
            deleted: false,
        };
        WireItem::new(&SignedItem::sign(meta, key), Some(body.to_vec()))
    }

    #[test]
    fn accepts_good_and_names_each_rejection() {
        let k = SecretKey::generate();
        let p = policy(&k);
        assert!(p.verify(&file_item(&k, "app", b"x", [1; 32], NOW), NOW).is_ok());
        let cases = [
            (file_item(&k, "other", b"x", [1; 32], NOW), Reject::UnknownFile),
            (
                file_item(&SecretKey::generate(), "app", b"x", [1; 32], NOW),
                Reject::UnauthorizedSigner,
            ),
            (file_item(&k, "app", b"x", [2; 32], NOW), Reject::OtherNetwork),
            (
                file_item(&k, "app", b"x", [1; 32], NOW + 3_600_000),
                Reject::FutureVersion,
            ),
            (file_item(&k, "app", &[0; 2000], [1; 32], NOW), Reject::TooLarge),
        ];
        for (wire, reason) in cases {
            assert_eq!(p.verify(&wire, NOW), Err(reason));
        }
        let mut tampered = file_item(&k, "app", b"x", [1; 32], NOW);
        tampered.signature[0] ^= 1;
        assert_eq!(p.verify(&tampered, NOW), Err(Reject::BadSignature));
        let mut wrong_body = file_item(&k, "app", b"x", [1; 32], NOW);
        wrong_body.content = Some(b"y".to_vec());
        assert_eq!(p.verify(&wrong_body, NOW), Err(Reject::HashMismatch));
        let mut garbage = file_item(&k, "app", b"x", [1; 32], NOW);
        garbage.meta.truncate(10);
        assert_eq!(p.verify(&garbage, NOW), Err(Reject::Malformed));
    }

    #[test]
    fn node_records_must_be_signed_by_their_node() {
        let node = SecretKey::generate();
        let p = policy(&node);
        let meta = |signer: &SecretKey| ItemMeta {
            network: [1; 32],
            key: ItemKey::Node {
                node: node.public(),
                kind: RecordKind::NodeInfo,
            },
            version: hlc::from_ms(NOW),
            signer: signer.public(),
            hash: *blake3::hash(b"info").as_bytes(),
            size: 4,
            deleted: false,
        };
        let own = WireItem::new(&SignedItem::sign(meta(&node), &node), Some(b"info".to_vec()));
        assert!(p.verify(&own, NOW).is_ok());
        let other = SecretKey::generate();
        let forged = WireItem::new(&SignedItem::sign(meta(&other), &other), Some(b"info".to_vec()));
        assert_eq!(p.verify(&forged, NOW), Err(Reject::UnauthorizedSigner));
        // Large records travel without their content and are fetched like file bodies.
        let announced = WireItem::new(&SignedItem::sign(meta(&node), &node), None);
        assert!(p.verify(&announced, NOW).is_ok());
    }
}
