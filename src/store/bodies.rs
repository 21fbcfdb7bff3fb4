//! Content-addressed file bodies.
//!
//! Bodies up to [`SMALL_BODY_MAX`] (every record, and small files) live in the database, as
//! one value each: thousands of them cost no file of their own and are made durable together
//! by sled's flush. Larger bodies are files under `<state_dir>/bodies`, named by their hash
//! and read-only: sled rewrites large values several times as it consolidates pages (the mesh
//! bench saw a 10 MiB body written about 2.4 times by sled, in 40 blob files), and the
//! materializer hard-links a body file into the files directory instead of copying it, so a
//! large file is written to disk once.
//!
//! A body is hashed while it is written; it becomes visible (its database marker, or the
//! rename of its partial file) only when the whole body matches the expected hash and size.
//! A writer dropped before that (peer vanished, mismatch) deletes what it wrote. One writer
//! per hash at a time, so an aborted transfer never deletes what another transfer is writing.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{Store, StoreError};

/// Size of a stored chunk, and of the reads that serve a body.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Bodies up to this size are kept in the database; larger ones are files. Equal to the
/// largest record, so every record body is in the database.
pub const SMALL_BODY_MAX: u64 = 64 * 1024;

/// A large body is hashed and written in pieces of this size. A QUIC stream hands over about
/// one packet (~1.4 KB) at a time; hashed and written at that size, blake3 cannot hash chunks
/// in parallel and ext4 zeroes the rest of each block it starts, which together took about a
/// fifth of the machine while a 10 MiB file spread over 30 agents.
pub const WRITE_PIECE: usize = 64 * 1024;

/// Prefix of a body file still being written (removed at start if a crash left one).
const PARTIAL_PREFIX: &str = ".partial-";

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
    /// The database or the body file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<std::io::Error> for BodyError {
    fn from(e: std::io::Error) -> BodyError {
        BodyError::Store(StoreError::Io(e))
    }
}

pub(super) type ActiveWriters = Arc<Mutex<HashSet<[u8; 32]>>>;

fn chunk_key(hash: &[u8; 32], index: u32) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(hash);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Where a body being written goes.
enum Sink {
    /// A small body, stored in the database when complete (and hashed then, in one go).
    Memory(Vec<u8>),
    /// A large body's partial file, and bytes not yet hashed and written to it (less than
    /// [`WRITE_PIECE`] between calls).
    File {
        file: std::fs::File,
        partial: PathBuf,
        pending: Vec<u8>,
    },
}

/// Writes one body. See the module documentation.
pub struct BodyWriter {
    store: Store,
    hash: [u8; 32],
    size: u64,
    hasher: blake3::Hasher,
    sink: Sink,
    received: u64,
    done: bool,
}

impl BodyWriter {
    /// Feeds the next bytes of the body.
    pub fn write(&mut self, data: &[u8]) -> Result<(), BodyError> {
        if self.received + data.len() as u64 > self.size {
            return Err(BodyError::TooLong(self.size));
        }
        match &mut self.sink {
            Sink::Memory(buf) => buf.extend_from_slice(data),
            // A piece that is large by itself skips the copy.
            Sink::File { file, pending, .. } if pending.is_empty() && data.len() >= WRITE_PIECE => {
                hash_and_write(&mut self.hasher, file, data)?;
            }
            Sink::File { file, pending, .. } => {
                pending.extend_from_slice(data);
                if pending.len() >= WRITE_PIECE {
                    hash_and_write(&mut self.hasher, file, pending)?;
                    pending.clear();
                }
            }
        }
        self.received += data.len() as u64;
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Checks size and hash and makes the body visible; on error nothing remains stored.
    pub fn finish(mut self) -> Result<(), BodyError> {
        if self.received != self.size {
            return Err(BodyError::TooShort {
                got: self.received,
                expected: self.size,
            });
        }
        match &mut self.sink {
            Sink::Memory(buf) => {
                self.hasher.update(buf);
            }
            Sink::File { file, pending, .. } => hash_and_write(&mut self.hasher, file, pending)?,
        }
        if *self.hasher.finalize().as_bytes() != self.hash {
            return Err(BodyError::HashMismatch);
        }
        match &self.sink {
            Sink::Memory(buf) => {
                let store = &self.store;
                if !buf.is_empty() {
                    store
                        .chunks
                        .insert(chunk_key(&self.hash, 0), buf.as_slice())
                        .map_err(StoreError::from)?;
                }
                store
                    .bodies
                    .insert(self.hash, &self.size.to_be_bytes())
                    .map_err(StoreError::from)?;
            }
            // Durability comes with the materializer's sync of the batch that links this body
            // into the files directory; a body lost to a crash before that is found missing at
            // start and fetched again. (On failure, `Drop` removes the partial file.)
            Sink::File { partial, .. } => std::fs::rename(partial, self.store.body_file(&self.hash))?,
        }
        self.done = true;
        Ok(())
    }
}

/// Adds `bytes` to a large body's hash and its partial file.
fn hash_and_write(hasher: &mut blake3::Hasher, file: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    hasher.update(bytes);
    file.write_all(bytes)
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        if !self.done
            && let Sink::File { partial, .. } = &self.sink
        {
            let _ = std::fs::remove_file(partial);
        }
        self.store
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.hash);
    }
}

/// Iterator over a stored body's pieces, in order (owns its handles, so it can move into a
/// stream). Empty for an unknown body.
pub enum BodyChunks {
    /// Pieces stored in the database.
    Db {
        /// The chunks tree.
        chunks: sled::Tree,
        /// The body.
        hash: [u8; 32],
        /// Next chunk index.
        next: u32,
        /// Nothing more to read.
        done: bool,
    },
    /// A body file, read [`CHUNK_SIZE`] bytes at a time.
    File(Option<std::fs::File>),
}

impl Iterator for BodyChunks {
    type Item = Result<Vec<u8>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            BodyChunks::Db {
                chunks,
                hash,
                next,
                done,
            } => {
                if *done {
                    return None;
                }
                let r = chunks.get(chunk_key(hash, *next)).map_err(StoreError::from).transpose();
                *next += 1;
                if !matches!(r, Some(Ok(_))) {
                    *done = true;
                }
                r.map(|c| c.map(|v| v.to_vec()))
            }
            BodyChunks::File(file) => {
                let f = file.as_mut()?;
                let mut buf = Vec::with_capacity(CHUNK_SIZE);
                match Read::by_ref(f).take(CHUNK_SIZE as u64).read_to_end(&mut buf) {
                    Ok(0) => {
                        *file = None;
                        None
                    }
                    Ok(_) => Some(Ok(buf)),
                    Err(e) => {
                        *file = None;
                        Some(Err(e.into()))
                    }
                }
            }
        }
    }
}

impl Store {
    /// Where the large body `hash` is (or would be) stored.
    fn body_file(&self, hash: &[u8; 32]) -> PathBuf {
        self.bodies_dir.join(blake3::Hash::from_bytes(*hash).to_hex().as_str())
    }

    /// Starts writing the body `hash` of `size` bytes. Fails with `Busy` if another writer
    /// for it exists. Writing a body that is already complete is allowed (it is rewritten).
    pub fn body_writer(&self, hash: [u8; 32], size: u64) -> Result<BodyWriter, BodyError> {
        if !self.active.lock().unwrap_or_else(|e| e.into_inner()).insert(hash) {
            return Err(BodyError::Busy);
        }
        let sink = match self.open_sink(&hash, size) {
            Ok(sink) => sink,
            Err(e) => {
                self.active.lock().unwrap_or_else(|e| e.into_inner()).remove(&hash);
                return Err(e.into());
            }
        };
        Ok(BodyWriter {
            store: self.clone(),
            hash,
            size,
            hasher: blake3::Hasher::new(),
            sink,
            received: 0,
            done: false,
        })
    }

    /// Where a new body of `size` bytes is written: memory for a small one, a partial file
    /// (read-only: a body is content-addressed and linked into the files directory, nobody
    /// should write to it in place) for a large one.
    fn open_sink(&self, hash: &[u8; 32], size: u64) -> std::io::Result<Sink> {
        use std::os::unix::fs::PermissionsExt;
        if size <= SMALL_BODY_MAX {
            return Ok(Sink::Memory(Vec::with_capacity(size as usize)));
        }
        let hex = blake3::Hash::from_bytes(*hash).to_hex();
        let partial = self
            .bodies_dir
            .join(format!("{PARTIAL_PREFIX}{hex}-{:016x}", rand::random::<u64>()));
        let file = std::fs::File::create(&partial)?;
        if let Err(e) = file.set_permissions(std::fs::Permissions::from_mode(0o444)) {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        Ok(Sink::File {
            file,
            partial,
            // Room for the packet that crosses the piece boundary, so the buffer never grows.
            pending: Vec::with_capacity(WRITE_PIECE + 2 * 1024),
        })
    }

    /// The size of a complete stored body.
    pub fn body_size(&self, hash: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        if let Some(v) = self.bodies.get(hash)? {
            let b: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt("body size"))?;
            return Ok(Some(u64::from_be_bytes(b)));
        }
        match std::fs::metadata(self.body_file(hash)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The file holding the complete large body `hash`, if it is stored as one (the
    /// materializer links it instead of copying it).
    pub fn body_path(&self, hash: &[u8; 32]) -> Option<PathBuf> {
        let path = self.body_file(hash);
        std::fs::metadata(&path).is_ok_and(|m| m.is_file()).then_some(path)
    }

    /// Whether the stored body `hash` has `size` bytes that hash to `hash` (read in full).
    pub fn body_intact(&self, hash: &[u8; 32], size: u64) -> bool {
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        for chunk in self.body_chunks(hash) {
            let Ok(chunk) = chunk else { return false };
            len += chunk.len() as u64;
            hasher.update(&chunk);
        }
        len == size && hasher.finalize().as_bytes() == hash
    }

    /// The pieces of a complete body, in order. Empty for an unknown body.
    pub fn body_chunks(&self, hash: &[u8; 32]) -> BodyChunks {
        if self.bodies.contains_key(hash).unwrap_or(false) {
            return self.db_chunks(hash);
        }
        BodyChunks::File(std::fs::File::open(self.body_file(hash)).ok())
    }

    /// Deletes a body (marker first, so it is never visible half deleted).
    pub fn remove_body(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        if self.active.lock().unwrap_or_else(|e| e.into_inner()).contains(hash) {
            return Ok(());
        }
        self.remove_db_body(hash)?;
        match std::fs::remove_file(self.body_file(hash)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Number of stored body pieces: chunks in the database and files in the bodies
    /// directory, partial ones included (tests check that failures leave none).
    pub fn chunk_count(&self) -> usize {
        let files = std::fs::read_dir(&self.bodies_dir).map_or(0, |d| d.count());
        self.chunks.len() + files
    }

    /// Prepares the bodies directory at open: removes partial files a crash left, and moves
    /// large bodies an older version kept in the database to files.
    pub(super) fn prepare_bodies(&self) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.bodies_dir)?;
        for entry in std::fs::read_dir(&self.bodies_dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let large: Vec<([u8; 32], u64)> = self
            .bodies
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                Some((
                    k.as_ref().try_into().ok()?,
                    u64::from_be_bytes(v.as_ref().try_into().ok()?),
                ))
            })
            .filter(|(_, size)| *size > SMALL_BODY_MAX)
            .collect();
        for (hash, size) in large {
            let mut chunks = self.db_chunks(&hash);
            // Written through a writer, so the body is checked against its hash on the way.
            // The database copy goes only afterwards: a crash in between leaves it to move at
            // the next open.
            let moved = self.body_writer(hash, size).and_then(|mut w| {
                chunks
                    .try_for_each(|c| c.map_err(BodyError::from).and_then(|c| w.write(&c)))
                    .and_then(|()| w.finish())
            });
            if let Err(e) = moved {
                tracing::warn!(error = %e, "dropping a stored body that could not be moved to a file");
            }
            self.remove_db_body(&hash)?;
        }
        Ok(())
    }

    /// Removes a body's database marker and chunks (marker first, so it is never visible
    /// half deleted).
    fn remove_db_body(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.bodies.remove(hash)?;
        for key in self.chunks.scan_prefix(hash).keys() {
            self.chunks.remove(key?)?;
        }
        Ok(())
    }

    /// The chunks the database holds for `hash`, in order.
    fn db_chunks(&self, hash: &[u8; 32]) -> BodyChunks {
        BodyChunks::Db {
            chunks: self.chunks.clone(),
            hash: *hash,
            next: 0,
            done: false,
        }
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
    fn bodies_written_in_packet_sized_and_mixed_pieces_are_stored_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = body(WRITE_PIECE * 5 + 777);
        let hash = *blake3::hash(&data).as_bytes();
        // Packet-sized pieces, then a large piece while some are pending, then a large piece
        // with none pending, then packet-sized pieces up to an unaligned end.
        let cuts = [
            1_400,
            2_800,
            WRITE_PIECE + 5_000,
            2 * WRITE_PIECE,
            4 * WRITE_PIECE + 100,
        ];
        let mut w = store.body_writer(hash, data.len() as u64).unwrap();
        let mut from = 0;
        for &to in &cuts {
            for piece in data[from..to].chunks(1_400) {
                w.write(piece).unwrap();
            }
            from = to;
        }
        w.write(&data[from..WRITE_PIECE * 5]).unwrap();
        for piece in data[WRITE_PIECE * 5..].chunks(100) {
            w.write(piece).unwrap();
        }
        assert_eq!(w.received(), data.len() as u64);
        w.finish().unwrap();
        assert_eq!(std::fs::read(store.body_path(&hash).unwrap()).unwrap(), data);

        // A damaged byte still waiting in the last piece is caught by the hash at the end.
        let mut damaged = data.clone();
        *damaged.last_mut().unwrap() ^= 1;
        let other = *blake3::hash(&data[1..]).as_bytes();
        let mut w = store.body_writer(other, damaged.len() as u64 - 1).unwrap();
        for piece in damaged[1..].chunks(1_400) {
            w.write(piece).unwrap();
        }
        assert!(matches!(w.finish(), Err(BodyError::HashMismatch)));
        assert_eq!(store.body_path(&other), None);
        let left: Vec<_> = std::fs::read_dir(&store.bodies_dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "only the first body's file: {left:?}");
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

    #[test]
    fn large_bodies_are_read_only_files_and_small_ones_stay_in_the_database() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let small = body(SMALL_BODY_MAX as usize);
        let large = body(SMALL_BODY_MAX as usize + 1);
        for data in [&small, &large] {
            let mut w = store
                .body_writer(*blake3::hash(data).as_bytes(), data.len() as u64)
                .unwrap();
            w.write(data).unwrap();
            w.finish().unwrap();
        }
        assert_eq!(store.body_path(blake3::hash(&small).as_bytes()), None);
        let path = store.body_path(blake3::hash(&large).as_bytes()).expect("a file");
        assert_eq!(std::fs::read(&path).unwrap(), large);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o444);
        assert!(store.body_intact(blake3::hash(&large).as_bytes(), large.len() as u64));
        store.remove_body(blake3::hash(&large).as_bytes()).unwrap();
        assert!(!path.exists());
        assert_eq!(store.body_size(blake3::hash(&large).as_bytes()).unwrap(), None);
    }

    #[test]
    fn damaged_body_files_are_not_intact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = body(CHUNK_SIZE + 5);
        let hash = *blake3::hash(&data).as_bytes();
        let mut w = store.body_writer(hash, data.len() as u64).unwrap();
        w.write(&data).unwrap();
        w.finish().unwrap();
        let path = store.body_path(&hash).unwrap();
        let mut damaged = data.clone();
        damaged[7] ^= 1;
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, &damaged).unwrap();
        assert!(!store.body_intact(&hash, data.len() as u64));
        std::fs::write(&path, &data[..100]).unwrap();
        assert!(!store.body_intact(&hash, data.len() as u64));
    }

    #[test]
    fn open_removes_partial_files_and_moves_large_database_bodies_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let data = body(CHUNK_SIZE * 2 + 3);
        let hash = *blake3::hash(&data).as_bytes();
        {
            let store = Store::open(dir.path()).unwrap();
            // The layout of earlier versions: every body as database chunks.
            for (i, piece) in data.chunks(CHUNK_SIZE).enumerate() {
                store.chunks.insert(chunk_key(&hash, i as u32), piece).unwrap();
            }
            store.bodies.insert(hash, &(data.len() as u64).to_be_bytes()).unwrap();
            std::fs::write(store.bodies_dir.join(format!("{PARTIAL_PREFIX}left-by-a-crash")), b"x").unwrap();
            store.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(std::fs::read(store.body_path(&hash).unwrap()).unwrap(), data);
        assert_eq!(store.chunk_count(), 1, "only the body file remains");
        assert_eq!(store.body_size(&hash).unwrap(), Some(data.len() as u64));
    }
}
