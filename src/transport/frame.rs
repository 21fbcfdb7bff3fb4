//! Datagram framing: one leading byte names the channel, the rest is its payload.

use bytes::Bytes;

/// Which layer a datagram belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Channel {
    /// SWIM membership, foca's packets as foca encodes them (still understood; not sent).
    Swim = 1,
    /// SWIM membership with compact headers (`membership::compact`): what agents send.
    SwimCompact = 2,
    /// Anti-entropy in-sync probes (`replication::probe`), for replication.
    SyncProbe = 3,
}

impl Channel {
    fn from_byte(b: u8) -> Option<Channel> {
        match b {
            1 => Some(Channel::Swim),
            2 => Some(Channel::SwimCompact),
            3 => Some(Channel::SyncProbe),
            _ => None,
        }
    }
}

/// Builds a datagram: channel byte, then payload.
pub fn encode(channel: Channel, payload: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(1 + payload.len());
    v.push(channel as u8);
    v.extend_from_slice(payload);
    v.into()
}

/// Splits a datagram into its channel and payload; `None` for an empty or unknown frame.
pub fn decode(mut datagram: Bytes) -> Option<(Channel, Bytes)> {
    let first = *datagram.first()?;
    let channel = Channel::from_byte(first)?;
    let _ = datagram.split_to(1);
    Some((channel, datagram))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejects() {
        let d = encode(Channel::Swim, b"abc");
        assert_eq!(decode(d), Some((Channel::Swim, Bytes::from_static(b"abc"))));
        assert_eq!(decode(Bytes::new()), None);
        assert_eq!(decode(Bytes::from_static(b"\x09xyz")), None);
    }
}
