//! Persistent state in a sled database under `<state_dir>/db`.
//!
//! Trees: `meta` (identity generation, clock), `items` (every item's signed meta and small
//! content, by item key), `chunks` and `bodies` (small content-addressed bodies; larger ones
//! are files under `<state_dir>/bodies`, see [`bodies`]). One `Store` per agent; the
//! replication task is the only writer of `items`.

mod bodies;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use bodies::{BodyChunks, BodyError, BodyWriter, CHUNK_SIZE, SMALL_BODY_MAX};

/// sled page cache. sled defaults to 1 GiB; an agent's working set is small and idle RSS is
/// a goal, so keep it modest.
pub const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;
/// How often sled flushes dirty pages in the background.
pub const FLUSH_EVERY_MS: u64 = 500;

const GENERATION_KEY: &[u8] = b"generation";
const CLOCK_KEY: &[u8] = b"clock";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, typically because another agent holds it.
    #[error("cannot open database at {path} (is another shoal agent using this state_dir?): {source}")]
    Open {
        /// Database path.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// A read or write failed.
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    /// Stored bytes are not what this version expects.
    #[error("database value {0} is corrupt")]
    Corrupt(&'static str),
    /// A body file could not be read or written.
    #[error("body file: {0}")]
    Io(#[from] std::io::Error),
}

/// Handle to the agent's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    items: sled::Tree,
    chunks: sled::Tree,
    bodies: sled::Tree,
    bodies_dir: PathBuf,
    active: bodies::ActiveWriters,
}

impl Store {
    /// Opens (creating if needed) the database under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let path = state_dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(|source| StoreError::Open { path, source })?;
        let store = Store {
            meta: db.open_tree("meta")?,
            items: db.open_tree("items")?,
            chunks: db.open_tree("chunks")?,
            bodies: db.open_tree("bodies")?,
            bodies_dir: state_dir.join("bodies"),
            active: Arc::new(Mutex::new(HashSet::new())),
            db,
        };
        store.prepare_bodies()?;
        Ok(store)
    }

    fn get_u64(&self, key: &[u8], what: &'static str) -> Result<Option<u64>, StoreError> {
        match self.meta.get(key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt(what))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    /// Picks this run's identity generation: above every generation used before from this
    /// state dir, and at least `now_secs` so that a node whose state dir was lost still
    /// outranks its previous runs. Persisted before it is returned.
    pub fn next_generation(&self, now_secs: u64) -> Result<u64, StoreError> {
        let previous = self.generation()?.unwrap_or(0);
        let next = previous.saturating_add(1).max(now_secs);
        self.meta.insert(GENERATION_KEY, &next.to_be_bytes())?;
        self.db.flush()?;
        Ok(next)
    }

    /// The last persisted generation.
    pub fn generation(&self) -> Result<Option<u64>, StoreError> {
        self.get_u64(GENERATION_KEY, "generation")
    }

    /// The highest item version this node issued or saw, as last saved.
    pub fn clock(&self) -> Result<u64, StoreError> {
        Ok(self.get_u64(CLOCK_KEY, "clock")?.unwrap_or(0))
    }

    /// Saves the clock (written with the next background flush).
    pub fn save_clock(&self, version: u64) -> Result<(), StoreError> {
        self.meta.insert(CLOCK_KEY, &version.to_be_bytes())?;
        Ok(())
    }

    /// Stores the encoded item for `key`.
    pub fn put_item(&self, key: &[u8], encoded: &[u8]) -> Result<(), StoreError> {
        self.items.insert(key, encoded)?;
        Ok(())
    }

    /// Removes the item for `key` (its body is the caller's business).
    pub fn remove_item(&self, key: &[u8]) -> Result<(), StoreError> {
        self.items.remove(key)?;
        Ok(())
    }

    /// The encoded item for `key`.
    pub fn get_item(&self, key: &[u8]) -> Result<Option<sled::IVec>, StoreError> {
        Ok(self.items.get(key)?)
    }

    /// Every stored item, in key order.
    pub fn items(&self) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        self.items.iter().map(|r| r.map_err(StoreError::from))
    }

    /// Stored items whose key starts with `prefix`, in key order.
    pub fn items_with_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + '_ {
        self.items.scan_prefix(prefix).map(|r| r.map_err(StoreError::from))
    }

    /// A tree of its own for a layer that keeps its own data (e.g. the event log).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Flushes everything to disk without blocking the async runtime.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_increases_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let g1 = Store::open(dir.path()).unwrap().next_generation(1000).unwrap();
        assert_eq!(g1, 1000);
        // Same second, or a clock that went backwards: still strictly larger.
        let g2 = Store::open(dir.path()).unwrap().next_generation(900).unwrap();
        assert_eq!(g2, 1001);
        let g3 = Store::open(dir.path()).unwrap().next_generation(5000).unwrap();
        assert_eq!(g3, 5000);
    }

    #[test]
    fn second_open_is_refused_with_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("lock held").to_string();
        assert!(err.contains("another shoal agent"), "{err}");
    }

    #[test]
    fn items_and_clock_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_item(b"\x02\x01a", b"one").unwrap();
            s.save_clock(77).unwrap();
            s.flush().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get_item(b"\x02\x01a").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(s.clock().unwrap(), 77);
        assert_eq!(s.items_with_prefix(b"\x02").count(), 1);
    }
}
