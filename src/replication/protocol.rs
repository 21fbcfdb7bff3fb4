//! Messages on QUIC streams between replicas.
//!
//! Every message is a frame: `length:u32 (big endian) | codec bytes`. The length is checked
//! against a limit before anything is allocated. A stream opens with a [`crate::rpc::Request`]:
//!
//! - `Reconcile(turn)`: both sides then alternate [`Turn`]s until one answers an empty turn
//!   with nothing, and closes.
//! - `GetBody { hash }`: the server answers a [`BodyHeader`] frame, then the raw body bytes
//!   (exactly `size` of them), then finishes the stream.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::item::WireItem;
use super::reconcile::Range;
use crate::codec::{self, CodecError};

/// Largest frame.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Item bytes put in one reconciliation turn before the rest waits for the next.
pub const MAX_TURN_ITEM_BYTES: usize = 2 * 1024 * 1024;
/// How long to wait for the next frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds of one reconciliation before it is abandoned.
pub const MAX_ROUNDS: usize = 256;

/// Errors on a replication stream.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The stream failed.
    #[error("stream: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// Writing failed.
    #[error("stream: {0}")]
    Write(#[from] quinn::WriteError),
    /// Reading a body failed.
    #[error("stream: {0}")]
    ReadChunk(#[from] quinn::ReadError),
    /// The peer closed the stream.
    #[error("stream: closed")]
    Closed(#[from] quinn::ClosedStream),
    /// A frame above the limit.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A frame that does not decode.
    #[error("undecodable frame: {0}")]
    Decode(#[from] CodecError),
    /// The peer was too slow.
    #[error("timed out waiting for the peer")]
    Timeout,
    /// The peer does not follow the protocol.
    #[error("protocol violation: {0}")]
    Violation(&'static str),
}

/// One side's message in a reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Ranges for the other side to answer.
    pub ranges: Vec<Range>,
    /// Items the other side may lack or hold an older version of.
    pub items: Vec<WireItem>,
    /// Keys whose items we ask for.
    pub want: Vec<Vec<u8>>,
}

impl Turn {
    /// Whether the turn says nothing.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.items.is_empty() && self.want.is_empty()
    }
}

/// Answer to `GetBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyHeader {
    /// The body's size, or `None` when this node does not hold it.
    pub size: Option<u64>,
}

/// Bytes a frame adds before its codec bytes (the length).
pub const FRAME_HEADER: usize = 4;

/// Writes one frame; returns the bytes written (header included).
pub async fn write_frame<T: Serialize>(send: &mut quinn::SendStream, msg: &T) -> Result<usize, ProtocolError> {
    let bytes = codec::encode(msg)?;
    if bytes.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(bytes.len()));
    }
    send.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    send.write_all(&bytes).await?;
    Ok(FRAME_HEADER + bytes.len())
}

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly before a frame.
pub async fn read_frame<T: DeserializeOwned>(recv: &mut quinn::RecvStream) -> Result<Option<T>, ProtocolError> {
    Ok(read_frame_sized(recv).await?.map(|(msg, _)| msg))
}

/// Like [`read_frame`], also returning the frame's size (header included).
pub async fn read_frame_sized<T: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
) -> Result<Option<(T, usize)>, ProtocolError> {
    let read = async {
        let mut len = [0u8; 4];
        match recv.read_exact(&mut len).await {
            Ok(()) => {}
            Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(ProtocolError::TooLarge(len));
        }
        let mut buf = vec![0u8; len];
        recv.read_exact(&mut buf).await?;
        Ok(Some((codec::decode_exact(&buf, MAX_FRAME)?, FRAME_HEADER + len)))
    };
    tokio::time::timeout(FRAME_TIMEOUT, read)
        .await
        .map_err(|_| ProtocolError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::index::KeyRange;
    use crate::replication::reconcile::RangeBody;

    #[test]
    fn messages_roundtrip() {
        let turn = Turn {
            ranges: vec![Range {
                range: KeyRange::all(),
                body: RangeBody::Fingerprint { fp: [3; 32], count: 7 },
            }],
            items: vec![WireItem {
                meta: vec![1, 2],
                signature: vec![0; 64],
                content: Some(b"x".to_vec()),
            }],
            want: vec![vec![9]],
        };
        let bytes = codec::encode(&turn).unwrap();
        assert_eq!(codec::decode_exact::<Turn>(&bytes, MAX_FRAME).unwrap(), turn);
    }
}
