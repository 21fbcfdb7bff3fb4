//! The SWIM identity of a node and foca's wire codec for it.

use std::fmt;
use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::identity::PublicKey;

/// A node's identity in the membership protocol.
///
/// foca keys members by [`NodeId::key`] (its `Identity::Addr`), so one node key is one member.
/// `generation` is chosen at process start and increases across restarts (persisted in the
/// store); `bump` increases when foca renews the identity within a run after the cluster
/// declared it down. The pair decides which of two identities with the same key is current.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's Ed25519 public key.
    pub key: PublicKey,
    /// Address other nodes dial to reach it.
    pub addr: SocketAddr,
    /// Process generation, increasing across restarts.
    pub generation: u64,
    /// Renewals within this process.
    pub bump: u16,
}

impl NodeId {
    /// Where to dial this identity.
    pub fn target(&self) -> crate::transport::Target {
        crate::transport::Target {
            key: self.key,
            addr: self.addr,
            generation: self.generation,
        }
    }

    /// The ordering used to pick the newest of two identities of one key.
    fn rank(&self) -> (u64, u16, SocketAddr) {
        (self.generation, self.bump, self.addr)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}#{}.{}",
            self.key.short(),
            self.addr,
            self.generation,
            self.bump
        )
    }
}

impl foca::Identity for NodeId {
    type Addr = PublicKey;

    fn renew(&self) -> Option<Self> {
        let (generation, bump) = match self.bump.checked_add(1) {
            Some(b) => (self.generation, b),
            None => (self.generation + 1, 0),
        };
        Some(NodeId {
            generation,
            bump,
            ..self.clone()
        })
    }

    fn addr(&self) -> PublicKey {
        self.key
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.rank() > adversary.rank()
    }
}

/// foca's codec: headers and members through [`crate::codec`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FocaCodec;

impl FocaCodec {
    fn put<T: Serialize>(value: &T, mut buf: impl BufMut) -> Result<(), CodecError> {
        let bytes = codec::encode(value)?;
        // foca requires that a value which does not fit leaves the buffer untouched.
        if buf.remaining_mut() < bytes.len() {
            return Err(CodecError::TooLarge {
                len: bytes.len(),
                limit: buf.remaining_mut(),
            });
        }
        buf.put_slice(&bytes);
        Ok(())
    }

    fn take<T: for<'de> Deserialize<'de>>(mut buf: impl Buf) -> Result<T, CodecError> {
        let (value, used) = codec::decode_prefix(buf.chunk())?;
        buf.advance(used);
        Ok(value)
    }
}

impl foca::Codec<NodeId> for FocaCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &foca::Header<NodeId>, buf: impl BufMut) -> Result<(), CodecError> {
        Self::put(header, buf)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<foca::Header<NodeId>, CodecError> {
        Self::take(buf)
    }

    fn encode_member(&mut self, member: &foca::Member<NodeId>, buf: impl BufMut) -> Result<(), CodecError> {
        Self::put(member, buf)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<foca::Member<NodeId>, CodecError> {
        Self::take(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;
    use foca::{Codec, Identity};

    fn id(generation: u64, bump: u16) -> NodeId {
        NodeId {
            key: SecretKey::from_seed([7; 32]).public(),
            addr: "127.0.0.1:7946".parse().unwrap(),
            generation,
            bump,
        }
    }

    #[test]
    fn newer_generation_wins_and_renew_wins() {
        assert!(id(2, 0).win_addr_conflict(&id(1, 9)));
        assert!(!id(1, 9).win_addr_conflict(&id(2, 0)));
        let old = id(5, u16::MAX);
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
        assert_eq!(renewed.addr(), old.addr());
    }

    #[test]
    fn header_roundtrip_and_size() {
        let h = foca::Header {
            src: id(1_763_800_000, 0),
            src_incarnation: 3,
            dst: id(1_763_800_001, 1),
            message: foca::Message::Ping(9),
        };
        let mut buf = Vec::new();
        FocaCodec.encode_header(&h, &mut buf).unwrap();
        // Two identities plus a little: keeps idle SWIM traffic small.
        assert!(buf.len() < 100, "header is {} bytes", buf.len());
        let back = FocaCodec.decode_header(&buf[..]).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(FocaCodec.decode_header(&[0xff, 0xff, 0x01][..]).is_err());
        assert!(FocaCodec.decode_member(&[][..]).is_err());
    }
}
