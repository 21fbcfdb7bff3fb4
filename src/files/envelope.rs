//! The signed upload envelope: what `shoal file update` sends to the agent.
//!
//! ```text
//! envelope = magic "SHOALUP1" | meta_len:u16 (big endian) | meta | signature:[64] | body
//! ```
//!
//! The CLI signs the meta (the same layout as every replicated item) with the uploader's key;
//! the agent verifies it like any item from a peer. The body is the rest of the request.

use crate::replication::item::{MAX_META_LEN, SignedItem, WireItem};

const MAGIC: &[u8; 8] = b"SHOALUP1";

/// Content type of envelopes: the agent refuses uploads and deletes sent as anything else.
pub const CONTENT_TYPE: &str = "application/vnd.shoal.envelope";

/// A malformed envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed upload envelope: {0}")]
pub struct EnvelopeError(pub &'static str);

/// Builds an envelope.
pub fn encode(item: &SignedItem, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 2 + item.meta_bytes.len() + 64 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(item.meta_bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(&item.meta_bytes);
    out.extend_from_slice(&item.signature);
    out.extend_from_slice(body);
    out
}

/// Splits an envelope into the item (unverified) and the body.
pub fn decode(bytes: &[u8]) -> Result<(WireItem, &[u8]), EnvelopeError> {
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or(EnvelopeError("bad magic"))?;
    if rest.len() < 2 {
        return Err(EnvelopeError("truncated"));
    }
    let meta_len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    if meta_len > MAX_META_LEN {
        return Err(EnvelopeError("meta too long"));
    }
    let rest = &rest[2..];
    if rest.len() < meta_len + 64 {
        return Err(EnvelopeError("truncated"));
    }
    let (meta, rest) = rest.split_at(meta_len);
    let (signature, body) = rest.split_at(64);
    Ok((
        WireItem {
            meta: meta.to_vec(),
            signature: signature.to_vec(),
            content: None,
        },
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;
    use crate::replication::item::{ItemKey, ItemMeta};

    #[test]
    fn roundtrip_and_garbage() {
        let k = SecretKey::generate();
        let meta = ItemMeta {
            network: [0; 32],
            key: ItemKey::File { name: "f".into() },
            version: 1,
            signer: k.public(),
            hash: *blake3::hash(b"body").as_bytes(),
            size: 4,
            deleted: false,
        };
        let item = SignedItem::sign(meta, &k);
        let env = encode(&item, b"body");
        let (wire, body) = decode(&env).unwrap();
        assert_eq!(body, b"body");
        assert_eq!(wire.meta, item.meta_bytes);
        for cut in 0..(8 + 2 + item.meta_bytes.len() + 64) {
            assert!(decode(&env[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(b"NOTSHOAL\x00\x00").is_err());
    }
}
