//! Persistent state in a sled database under `<state_dir>/db`.
//!
//! One `Store` per agent. Trees are added by the layers that need them; this module owns the
//! database handle, its tuning, and small node metadata (the identity generation).

use std::path::{Path, PathBuf};

/// sled page cache. sled defaults to 1 GiB; an agent's working set is small and idle RSS is
/// a goal, so keep it modest.
pub const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;
/// How often sled flushes dirty pages in the background.
pub const FLUSH_EVERY_MS: u64 = 500;

const META_TREE: &str = "meta";
const GENERATION_KEY: &[u8] = b"generation";

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
}

/// Handle to the agent's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
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
        let meta = db.open_tree(META_TREE)?;
        Ok(Store { db, meta })
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
        match self.meta.get(GENERATION_KEY)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt("generation"))?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    /// Flushes everything to disk; called on shutdown.
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
}
