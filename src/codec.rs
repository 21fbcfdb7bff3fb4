//! The one place that knows how shoal encodes values on the wire and on disk.
//!
//! Everything goes through bincode 2 (serde mode, standard config: little endian, varints).
//! Decoding always runs with an explicit byte limit so a hostile length prefix cannot make us
//! allocate more than the frame we were handed. Swapping the codec means changing this file.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest single value the codec will decode, whatever the caller asks for.
/// Datagrams are far smaller; this bounds stream messages in later layers.
pub const MAX_DECODE_BYTES: usize = 16 * 1024 * 1024;

/// Errors from encoding or decoding.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The bytes do not decode to the expected type.
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The bytes decoded but left data behind (a frame must be exactly one value).
    #[error("{0} trailing bytes after value")]
    Trailing(usize),
    /// The input is larger than the limit for this kind of value.
    #[error("input of {len} bytes exceeds limit of {limit}")]
    TooLarge {
        /// Input length.
        len: usize,
        /// Limit that applied.
        limit: usize,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value` into a new vector.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(bincode::serde::encode_to_vec(value, config())?)
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let bytes = encode(value)?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Decodes one value from the front of `bytes`, returning it and how many bytes it used.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    Ok(bincode::serde::decode_from_slice(bytes, config())?)
}

/// Decodes exactly one value from `bytes` of at most `limit` bytes; trailing data is an error.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (value, used) = decode_prefix(bytes)?;
    if used != bytes.len() {
        return Err(CodecError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        a: u64,
        b: String,
        c: Vec<u8>,
    }

    #[test]
    fn roundtrip_and_trailing_rejected() {
        let s = Sample {
            a: 7,
            b: "x".into(),
            c: vec![1, 2, 3],
        };
        let mut bytes = encode(&s).unwrap();
        assert_eq!(decode_exact::<Sample>(&bytes, 1024).unwrap(), s);
        bytes.push(0);
        assert!(matches!(
            decode_exact::<Sample>(&bytes, 1024),
            Err(CodecError::Trailing(1))
        ));
        assert!(matches!(
            decode_exact::<Sample>(&bytes, 3),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn hostile_length_prefix_does_not_allocate() {
        // A Vec<u8> claiming u64::MAX elements: varint tag 0xFF then 8 bytes.
        let mut bytes = vec![0x07, 0x00];
        bytes.push(0xFF);
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_exact::<Sample>(&bytes, 1024).is_err());
    }
}
