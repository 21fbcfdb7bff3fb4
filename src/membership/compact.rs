//! Compact SWIM headers: the wire form of every SWIM packet shoal sends.
//!
//! foca's header names the sender and the receiver by full identity, and a [`NodeId`] is mostly
//! its 32-byte key. Both keys are already known to the receiver: the sender's from the QUIC
//! connection (authenticated by TLS) and the receiver's is its own. The compact form drops the
//! two keys and keeps the rest (addresses, generations, bumps, incarnation, message), which
//! saves 64 of a ping's ~98 bytes. Idle SWIM traffic is almost only pings and acks, so this is
//! most of the idle cost. The receiver rebuilds foca's header with the two keys put back.
//!
//! ```text
//! compact packet = CompactHeader (codec) | the rest of foca's packet, unchanged
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::codec::{self, CodecError};
use crate::identity::PublicKey;

/// foca's header without the sender's and receiver's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CompactHeader {
    src_addr: SocketAddr,
    src_generation: u64,
    src_bump: u16,
    src_incarnation: foca::Incarnation,
    dst_addr: SocketAddr,
    dst_generation: u64,
    dst_bump: u16,
    message: foca::Message<NodeId>,
}

/// Why a packet could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The header does not decode.
    #[error("undecodable SWIM header: {0}")]
    Codec(#[from] CodecError),
    /// foca produced a packet that is not from us to `to` (never expected; the packet is not
    /// sent rather than sent with a wrong key put back).
    #[error("packet is not from this node to its destination")]
    Mismatch,
}

/// Converts foca's packet `full`, sent by `own` to `to`, to its compact form.
pub fn compact(full: &[u8], own: &PublicKey, to: &PublicKey) -> Result<Vec<u8>, CompactError> {
    let (header, used) = codec::decode_prefix::<foca::Header<NodeId>>(full)?;
    if header.src.key != *own || header.dst.key != *to {
        return Err(CompactError::Mismatch);
    }
    let compact = CompactHeader {
        src_addr: header.src.addr,
        src_generation: header.src.generation,
        src_bump: header.src.bump,
        src_incarnation: header.src_incarnation,
        dst_addr: header.dst.addr,
        dst_generation: header.dst.generation,
        dst_bump: header.dst.bump,
        message: header.message,
    };
    let mut out = codec::encode(&compact)?;
    out.extend_from_slice(&full[used..]);
    Ok(out)
}

/// Rebuilds foca's packet from compact packet `data` that authenticated peer `from` sent to us
/// (`own`).
pub fn expand(data: &[u8], from: &PublicKey, own: &PublicKey) -> Result<Vec<u8>, CompactError> {
    let (c, used) = codec::decode_prefix::<CompactHeader>(data)?;
    let header = foca::Header {
        src: NodeId {
            key: *from,
            addr: c.src_addr,
            generation: c.src_generation,
            bump: c.src_bump,
        },
        src_incarnation: c.src_incarnation,
        dst: NodeId {
            key: *own,
            addr: c.dst_addr,
            generation: c.dst_generation,
            bump: c.dst_bump,
        },
        message: c.message,
    };
    let mut out = codec::encode(&header)?;
    out.extend_from_slice(&data[used..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn id(seed: u8, generation: u64) -> NodeId {
        NodeId {
            key: SecretKey::from_seed([seed; 32]).public(),
            addr: SocketAddr::from(([10, 0, 0, seed], 7946)),
            generation,
            bump: 2,
        }
    }

    fn packet(src: &NodeId, dst: &NodeId, message: foca::Message<NodeId>, rest: &[u8]) -> Vec<u8> {
        let header = foca::Header {
            src: src.clone(),
            src_incarnation: 5,
            dst: dst.clone(),
            message,
        };
        let mut full = codec::encode(&header).unwrap();
        full.extend_from_slice(rest);
        full
    }

    #[test]
    fn roundtrip_is_exact_and_smaller() {
        let (a, b) = (id(1, 1_795_366_553), id(2, 1_795_366_554));
        for message in [
            foca::Message::Ping(7),
            foca::Message::Ack(7),
            foca::Message::PingReq {
                target: id(3, 9),
                probe_number: 8,
            },
            foca::Message::Announce,
        ] {
            let full = packet(&a, &b, message, b"updates and broadcasts");
            let small = compact(&full, &a.key, &b.key).unwrap();
            assert_eq!(full.len() - small.len(), 64, "both keys dropped, nothing else");
            assert_eq!(expand(&small, &a.key, &b.key).unwrap(), full);
        }
    }

    #[test]
    fn refuses_what_is_not_ours_and_garbage() {
        let (a, b) = (id(1, 1), id(2, 1));
        let full = packet(&a, &b, foca::Message::Ping(1), b"");
        assert!(matches!(compact(&full, &b.key, &b.key), Err(CompactError::Mismatch)));
        assert!(matches!(compact(&full, &a.key, &a.key), Err(CompactError::Mismatch)));
        assert!(compact(b"\xff\xff", &a.key, &b.key).is_err());
        assert!(expand(b"", &a.key, &b.key).is_err());
        assert!(expand(&[0xff; 40], &a.key, &b.key).is_err());
    }

    #[test]
    fn the_receiver_puts_back_the_authenticated_sender() {
        // Whatever a peer would like to claim, the rebuilt header names the connection's key.
        let (a, b, mallory) = (id(1, 1), id(2, 1), id(9, 1));
        let small = compact(&packet(&a, &b, foca::Message::Ping(1), b""), &a.key, &b.key).unwrap();
        let full = expand(&small, &mallory.key, &b.key).unwrap();
        let (header, _) = codec::decode_prefix::<foca::Header<NodeId>>(&full).unwrap();
        assert_eq!(header.src.key, mallory.key);
        assert_eq!(header.dst.key, b.key);
    }
}
