//! Content-addressed file bodies, stored as fixed-size chunks.
//!
//! A body is written chunk by chunk while its blake3 hash is computed; the marker that makes
//! it visible is written only when the whole body matches the expected hash and size. A
//! writer dropped before that (peer vanished, mismatch) deletes what it wrote. One writer per
//! hash at a time, so an aborted transfer never deletes chunks another transfer is writing.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::{Store, StoreError};

/// Size of a stored chunk, and of the reads that serve a body.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Why a body was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More bytes than announced.
    #[error("body is larger than the {0} bytes announced")]
    TooLong(u64),
    /// Fewer bytes than announced.
    #[error("body has {got} bytes, {expected} were announced")]
    TooShort {
        /// Received.
        got: u64,
        /// Announced.
        expected: u64,
    },
    /// The bytes do not hash to the signed hash.
    #[error("body does not match its signed hash")]
    HashMismatch,
    /// Another transfer of this body is in progress.
    #[error("another transfer of this body is in progress")]
    Busy,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) type ActiveWriters = Arc<Mutex<HashSet<[u8; 32]>>>;

fn chunk_key(hash: &[u8; 32], index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(hash);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Writes one body. See the module documentation.
pub struct BodyWriter {
    store: Store,
    hash: [u8; 32],
    size: u64,
    hasher: blake3::Hasher,
    buf: Vec<u8>,
    next_chunk: u32,
    written: u64,
    done: bool,
}

impl BodyWriter {
    /// Feeds the next bytes of the body.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), BodyError> {
        if self.written + (self.buf.len() + data.len()) as u64 > self.size {
            return Err(BodyError::TooLong(self.size));
        }
        self.hasher.update(data);
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                self.flush_chunk()?;
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.store
            .chunks
            .insert(chunk_key(&self.hash, self.next_chunk), self.buf.as_slice())?;
        self.written += self.buf.len() as u64;
        self.next_chunk += 1;
        self.buf.clear();
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    /// Checks size and hash and makes the body visible; on error nothing remains stored.
    pub fn finish(mut self) -> Result<(), BodyError> {
        let got = self.received();
        if got != self.size {
            return Err(BodyError::TooShort {
                got,
                expected: self.size,
            });
        }
        if *self.hasher.finalize().as_bytes() != self.hash {
            return Err(BodyError::HashMismatch);
        }
        self.flush_chunk()?;
        self.store
            .bodies
            .insert(self.hash, &self.size.to_be_bytes())
            .map_err(StoreError::from)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.store.delete_chunks(&self.hash);
        }
        self.store
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.hash);
    }
}

/// Iterator over a stored body's chunks (owns its handle, so it can move into a stream).
pub struct BodyChunks {
    chunks: sled::Tree,
    hash: [u8; 32],
    next: u32,
    done: bool,
}

impl Iterator for BodyChunks {
    type Item = Result<sled::IVec, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self
            .chunks
            .get(chunk_key(&self.hash, self.next))
            .map_err(StoreError::from)
            .transpose();
        self.next += 1;
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

impl Store {
    /// Starts writing the body `hash` of `size` bytes. Fails with `Busy` if another writer
    /// for it exists. Writing a body that is already complete is allowed (it is rewritten).
    pub fn body_writer(&self, hash: [u8; 32], size: u64) -> Result<BodyWriter, BodyError> {
        if !self.active.lock().unwrap_or_else(|e| e.into_inner()).insert(hash) {
            return Err(BodyError::Busy);
        }
        Ok(BodyWriter {
            store: self.clone(),
            hash,
            size,
            hasher: blake3::Hasher::new(),
            buf: Vec::with_capacity(CHUNK_SIZE.min(size as usize)),
            next_chunk: 0,
            written: 0,
            done: false,
        })
    }

    /// The size of a complete stored body.
    pub fn body_size(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        match self.bodies.get(hash)? {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt("body size"))?;
                Ok(Some(u64::from_be_bytes(b)))
            }
        }
    }

    /// The chunks of a complete body, in order. Empty for an unknown body.
    pub fn body_chunks(&self, hash: &[u8; 32]) -> BodyChunks {
        BodyChunks {
            chunks: self.chunks.clone(),
            hash: *hash,
            next: 0,
            done: !self.bodies.contains_key(hash).unwrap_or(false),
        }
    }

    /// Deletes a body (marker first, so it is never visible half deleted).
    pub fn remove_body(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        if self.active.lock().unwrap_or_else(|e| e.into_inner()).contains(hash) {
            return Ok(());
        }
        self.bodies.remove(hash)?;
        self.delete_chunks(hash)
    }

    fn delete_chunks(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        if self.bodies.contains_key(hash)? {
            return Ok(());
        }
        for key in self.chunks.scan_prefix(hash).keys() {
            self.chunks.remove(key?)?;
        }
        Ok(())
    }

    /// Number of stored chunks (tests check that failures leave none).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn write_read_roundtrip_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for n in [0usize, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE * 2 + 17] {
            let data = body(n);
            let hash = *blake3::hash(&data).as_bytes();
            let mut w = store.body_writer(hash, n as u64).unwrap();
            for piece in data.chunks(10_000) {
                w.write(piece).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(store.body_size(&hash).unwrap(), Some(n as u64));
            let back: Vec<u8> = store.body_chunks(&hash).flat_map(|c| c.unwrap().to_vec()).collect();
            assert_eq!(back, data);
        }
    }

    #[test]
    fn mismatch_short_long_and_abort_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = body(CHUNK_SIZE * 3);
        let hash = *blake3::hash(&data).as_bytes();

        let mut w = store.body_writer([7; 32], data.len() as u64).unwrap();
        w.write(&data).unwrap();
        assert!(matches!(w.finish(), Err(BodyError::HashMismatch)));

        let mut w = store.body_writer(hash, data.len() as u64).unwrap();
        w.write(&data[..100]).unwrap();
        assert!(matches!(w.finish(), Err(BodyError::TooShort { .. })));

        let mut w = store.body_writer(hash, 10).unwrap();
        assert!(matches!(w.write(&data), Err(BodyError::TooLong(10))));
        drop(w);

        let mut w = store.body_writer(hash, data.len() as u64).unwrap();
        w.write(&data[..CHUNK_SIZE * 2]).unwrap();
        assert!(matches!(store.body_writer(hash, 1), Err(BodyError::Busy)));
        drop(w);

        assert_eq!(store.chunk_count(), 0);
        assert_eq!(store.body_size(&hash).unwrap(), None);
        assert_eq!(store.body_chunks(&hash).count(), 0);
    }
}
