//! Replicated items: keys, the signed metadata layout, and the total order that picks a winner.
//!
//! Every item is described by an [`ItemMeta`] encoded in a fixed binary layout (big endian)
//! and signed by its signer over `DOMAIN || meta`:
//!
//! ```text
//! meta = layout:u8 (=1) | network_id:[32] | key | version:u64 | signer:[32]
//!      | content_hash:[32] (blake3) | size:u64 | flags:u8 (bit 0: tombstone)
//! key  = 0x01 | node_key:[32] | kind:u8          per-node record
//!      | 0x02 | name_len:u8 | name:[name_len]    file
//! ```
//!
//! The bytes that were signed are kept and sent as they are; a receiver parses them with
//! bounds checks, then checks the signature before it believes any field.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::files::validate_file_name;
use crate::identity::{PublicKey, SecretKey};

/// Domain separation tag of item signatures.
pub const DOMAIN: &[u8] = b"shoal/v1/item\0";
const LAYOUT: u8 = 1;
/// First key byte of per-node records.
pub const FAMILY_NODE: u8 = 1;
/// First key byte of files.
pub const FAMILY_FILE: u8 = 2;
const FLAG_TOMBSTONE: u8 = 1;
/// Largest encoded meta (a file key with a 255-byte name).
pub const MAX_META_LEN: usize = 1 + 32 + 2 + 255 + 8 + 32 + 32 + 8 + 1;

/// blake3 of the empty string: the content hash of tombstones.
pub fn empty_hash() -> [u8; 32] {
    *blake3::hash(b"").as_bytes()
}

/// Kinds of per-node records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum RecordKind {
    /// Name, version and address of a node.
    NodeInfo = 1,
    /// The node's health report.
    Health = 2,
    /// Notifications this node delivered.
    Notified = 3,
    /// Its backup schedules and their latest jobs.
    Schedules = 4,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::NodeInfo),
            2 => Some(RecordKind::Health),
            3 => Some(RecordKind::Notified),
            4 => Some(RecordKind::Schedules),
            _ => None,
        }
    }

    /// Stable name for APIs.
    pub fn as_str(&self) -> &'static str {
        match self {
            RecordKind::NodeInfo => "node_info",
            RecordKind::Health => "health",
            RecordKind::Notified => "notified",
            RecordKind::Schedules => "schedules",
        }
    }
}

/// What an item is about. Ordered like its byte form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ItemKey {
    /// A record a node publishes about itself, signed by that node's key.
    Node {
        /// The node.
        node: PublicKey,
        /// Which record.
        kind: RecordKind,
    },
    /// A file, signed by one of the keys configured for its name.
    File {
        /// File name.
        name: String,
    },
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemKey::Node { node, kind } => write!(f, "node/{}/{}", node.short(), kind.as_str()),
            ItemKey::File { name } => write!(f, "file/{name}"),
        }
    }
}

impl ItemKey {
    /// Canonical bytes: the sort key of the item everywhere (sled, reconciliation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(40);
        self.write(&mut b);
        b
    }

    fn write(&self, b: &mut Vec<u8>) {
        match self {
            ItemKey::Node { node, kind } => {
                b.push(FAMILY_NODE);
                b.extend_from_slice(node.as_bytes());
                b.push(*kind as u8);
            }
            ItemKey::File { name } => {
                b.push(FAMILY_FILE);
                b.push(name.len() as u8);
                b.extend_from_slice(name.as_bytes());
            }
        }
    }

    /// Parses canonical bytes (the whole slice).
    pub fn from_bytes(bytes: &[u8]) -> Result<ItemKey, ItemError> {
        let mut r = Reader(bytes);
        let key = r.key()?;
        r.finish()?;
        Ok(key)
    }
}

/// Errors parsing or checking items.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// Truncated, trailing bytes, or an unknown field value.
    #[error("malformed item: {0}")]
    Malformed(&'static str),
    /// A file name that is not acceptable.
    #[error("invalid file name {0:?}")]
    BadName(String),
}

/// Order of competing versions of one key: version, then signer, then content hash, then
/// tombstone. Every node computes the same winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// Hybrid logical clock value.
    pub version: u64,
    /// Signer key bytes.
    pub signer: [u8; 32],
    /// Content hash.
    pub hash: [u8; 32],
    /// Tombstone.
    pub deleted: bool,
}

/// Parsed item metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemMeta {
    /// Network the item belongs to.
    pub network: [u8; 32],
    /// Key.
    pub key: ItemKey,
    /// Hybrid logical clock value.
    pub version: u64,
    /// Who signed it.
    pub signer: PublicKey,
    /// blake3 of the content.
    pub hash: [u8; 32],
    /// Content length in bytes.
    pub size: u64,
    /// Whether this is a delete.
    pub deleted: bool,
}

impl ItemMeta {
    /// Meta of a version of file `name` with `content`, signed by `signer` at `version`.
    pub fn file(network: [u8; 32], name: &str, content: &[u8], signer: PublicKey, version: u64) -> ItemMeta {
        ItemMeta {
            network,
            key: ItemKey::File { name: name.to_string() },
            version,
            signer,
            hash: *blake3::hash(content).as_bytes(),
            size: content.len() as u64,
            deleted: false,
        }
    }

    /// Meta of the deletion of file `name` (a tombstone), signed by `signer` at `version`.
    pub fn file_delete(network: [u8; 32], name: &str, signer: PublicKey, version: u64) -> ItemMeta {
        ItemMeta {
            network,
            key: ItemKey::File { name: name.to_string() },
            version,
            signer,
            hash: empty_hash(),
            size: 0,
            deleted: true,
        }
    }

    /// The fixed-layout bytes that get signed.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(160);
        b.push(LAYOUT);
        b.extend_from_slice(&self.network);
        self.key.write(&mut b);
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(self.signer.as_bytes());
        b.extend_from_slice(&self.hash);
        b.extend_from_slice(&self.size.to_be_bytes());
        b.push(if self.deleted { FLAG_TOMBSTONE } else { 0 });
        b
    }

    /// Parses the fixed layout. Checks structure only; trust comes from [`SignedItem::verify`].
    pub fn decode(bytes: &[u8]) -> Result<ItemMeta, ItemError> {
        if bytes.len() > MAX_META_LEN {
            return Err(ItemError::Malformed("meta too long"));
        }
        let mut r = Reader(bytes);
        if r.u8()? != LAYOUT {
            return Err(ItemError::Malformed("unknown layout"));
        }
        let network = r.array()?;
        let key = r.key()?;
        let version = r.u64()?;
        let signer = PublicKey(r.array()?);
        let hash = r.array()?;
        let size = r.u64()?;
        let deleted = match r.u8()? {
            0 => false,
            FLAG_TOMBSTONE => true,
            _ => return Err(ItemError::Malformed("unknown flags")),
        };
        r.finish()?;
        if deleted && (size != 0 || hash != empty_hash()) {
            return Err(ItemError::Malformed("tombstone with content"));
        }
        Ok(ItemMeta {
            network,
            key,
            version,
            signer,
            hash,
            size,
            deleted,
        })
    }

    /// This item's position in the total order.
    pub fn rank(&self) -> Rank {
        Rank {
            version: self.version,
            signer: *self.signer.as_bytes(),
            hash: self.hash,
            deleted: self.deleted,
        }
    }
}

/// An item's metadata with its signature, as signed (bytes kept verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedItem {
    /// Parsed metadata.
    pub meta: ItemMeta,
    /// The exact bytes that were signed.
    pub meta_bytes: Vec<u8>,
    /// Ed25519 signature by `meta.signer` over `DOMAIN || meta_bytes`.
    pub signature: [u8; 64],
}

impl SignedItem {
    /// Signs `meta` with `key` (which must be `meta.signer`'s secret).
    pub fn sign(meta: ItemMeta, key: &SecretKey) -> SignedItem {
        let meta_bytes = meta.encode();
        let signature = key.sign(&signed_message(&meta_bytes));
        SignedItem {
            meta,
            meta_bytes,
            signature,
        }
    }

    /// Parses meta bytes and a signature without checking the signature.
    pub fn parse(meta_bytes: &[u8], signature: &[u8]) -> Result<SignedItem, ItemError> {
        let signature: [u8; 64] = signature
            .try_into()
            .map_err(|_| ItemError::Malformed("signature length"))?;
        Ok(SignedItem {
            meta: ItemMeta::decode(meta_bytes)?,
            meta_bytes: meta_bytes.to_vec(),
            signature,
        })
    }

    /// Checks the signature against the signer named in the meta.
    pub fn verify_signature(&self) -> bool {
        self.meta
            .signer
            .verify(&signed_message(&self.meta_bytes), &self.signature)
            .is_ok()
    }

    /// Digest identifying this exact version (used by reconciliation).
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.meta_bytes).as_bytes()
    }
}

fn signed_message(meta_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + meta_bytes.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(meta_bytes);
    m
}

/// An item as it travels and is stored: signed meta, and the content when it is small enough
/// to travel with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireItem {
    /// Signed meta bytes.
    pub meta: Vec<u8>,
    /// 64-byte signature.
    pub signature: Vec<u8>,
    /// The content, for small items.
    pub content: Option<Vec<u8>>,
}

impl WireItem {
    /// Wire form of `item`, with `content` inline or not.
    pub fn new(item: &SignedItem, content: Option<Vec<u8>>) -> WireItem {
        WireItem {
            meta: item.meta_bytes.clone(),
            signature: item.signature.to_vec(),
            content,
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ItemError> {
        if self.0.len() < n {
            return Err(ItemError::Malformed("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ItemError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, ItemError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn array(&mut self) -> Result<[u8; 32], ItemError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    fn key(&mut self) -> Result<ItemKey, ItemError> {
        match self.u8()? {
            FAMILY_NODE => {
                let node = PublicKey(self.array()?);
                let kind = RecordKind::from_byte(self.u8()?).ok_or(ItemError::Malformed("unknown record kind"))?;
                Ok(ItemKey::Node { node, kind })
            }
            FAMILY_FILE => {
                let len = self.u8()? as usize;
                let name =
                    std::str::from_utf8(self.take(len)?).map_err(|_| ItemError::Malformed("name is not UTF-8"))?;
                validate_file_name(name).map_err(|_| ItemError::BadName(name.to_string()))?;
                Ok(ItemKey::File { name: name.to_string() })
            }
            _ => Err(ItemError::Malformed("unknown key family")),
        }
    }
    fn finish(&self) -> Result<(), ItemError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ItemError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: ItemKey, signer: PublicKey) -> ItemMeta {
        ItemMeta {
            network: [9; 32],
            key,
            version: 42 << 16,
            signer,
            hash: *blake3::hash(b"hello").as_bytes(),
            size: 5,
            deleted: false,
        }
    }

    #[test]
    fn sign_parse_verify_roundtrip() {
        let k = SecretKey::generate();
        for key in [
            ItemKey::File {
                name: "config:app".into(),
            },
            ItemKey::Node {
                node: k.public(),
                kind: RecordKind::NodeInfo,
            },
        ] {
            let item = SignedItem::sign(meta(key, k.public()), &k);
            let back = SignedItem::parse(&item.meta_bytes, &item.signature).unwrap();
            assert_eq!(back, item);
            assert!(back.verify_signature());
            assert_eq!(ItemKey::from_bytes(&back.meta.key.to_bytes()).unwrap(), back.meta.key);
        }
    }

    #[test]
    fn any_flipped_bit_breaks_the_signature_or_the_parse() {
        let k = SecretKey::generate();
        let item = SignedItem::sign(meta(ItemKey::File { name: "f".into() }, k.public()), &k);
        for i in 0..item.meta_bytes.len() {
            let mut b = item.meta_bytes.clone();
            b[i] ^= 0x10;
            if let Ok(p) = SignedItem::parse(&b, &item.signature) {
                assert!(!p.verify_signature(), "byte {i}");
            }
        }
    }

    #[test]
    fn rank_orders_version_then_signer_then_hash() {
        let (a, b) = (
            SecretKey::from_seed([1; 32]).public(),
            SecretKey::from_seed([2; 32]).public(),
        );
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut m1 = meta(ItemKey::File { name: "f".into() }, hi);
        let mut m2 = m1.clone();
        m2.version += 1;
        m2.signer = lo;
        assert!(m2.rank() > m1.rank(), "newer version wins whoever signed");
        m2.version = m1.version;
        assert!(m1.rank() > m2.rank(), "same version: higher signer key wins");
        m2.signer = hi;
        m2.hash = [0xff; 32];
        m1.hash = [0x00; 32];
        assert!(m2.rank() > m1.rank(), "then the higher hash");
    }

    #[test]
    fn malformed_meta_is_rejected() {
        let k = SecretKey::generate();
        let good = meta(ItemKey::File { name: "f".into() }, k.public()).encode();
        assert!(ItemMeta::decode(&good[..good.len() - 1]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(ItemMeta::decode(&trailing).is_err());
        let mut tomb = meta(ItemKey::File { name: "f".into() }, k.public());
        tomb.deleted = true;
        assert!(ItemMeta::decode(&tomb.encode()).is_err(), "tombstone with content");
        for name in ["../etc/passwd", "a/b", "..", "", ".hidden"] {
            let mut bytes = vec![LAYOUT];
            bytes.extend_from_slice(&[0; 32]);
            bytes.extend_from_slice(&[FAMILY_FILE, name.len() as u8]);
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(&[0; 8 + 32 + 32 + 8 + 1]);
            assert!(ItemMeta::decode(&bytes).is_err(), "{name:?}");
        }
    }
}
