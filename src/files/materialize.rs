//! Writes the current version of each file under `<state_dir>/files/<name>`: a temporary file
//! in the same directory, fsync, rename over the old one; the directory is fsynced once the queue
//! drains or every [`DIR_SYNC_BATCH`] files. A crash leaves either the old or the new file, never
//! a torn one (and the agent rewrites any file that does not match the store when it starts).
//!
//! One worker thread does the (blocking) writes in order, so the replication task never waits
//! on the disk. Jobs for the same name coalesce: only the newest is written.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use tracing::{debug, warn};

use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Job {
    Write { hash: [u8; 32], size: u64 },
    Remove,
}

#[derive(Default)]
struct Queue {
    order: VecDeque<String>,
    jobs: HashMap<String, Job>,
    idle: bool,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// Handle to the materializing worker. Dropping it stops the worker after the current job.
pub struct Materializer {
    shared: Arc<Shared>,
    dir: PathBuf,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Materializer {
    /// Starts the worker for `dir`, creating it and removing temporary files a crash left.
    pub fn start(dir: &Path, store: Store) -> std::io::Result<Materializer> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(".shoal-tmp-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                idle: true,
                ..Queue::default()
            }),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        let worker_dir = dir.to_path_buf();
        let worker = std::thread::Builder::new()
            .name("shoal-files".into())
            .spawn(move || run(&worker, &worker_dir, &store))?;
        Ok(Materializer {
            shared,
            dir: dir.to_path_buf(),
            worker: Some(worker),
        })
    }

    /// The directory files are written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `name` with the body `hash` (which must be stored complete).
    pub fn write(&self, name: &str, hash: [u8; 32], size: u64) {
        self.push(name, Job::Write { hash, size });
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) {
        self.push(name, Job::Remove);
    }

    fn push(&self, name: &str, job: Job) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.jobs.insert(name.to_string(), job).is_none() {
            q.order.push_back(name.to_string());
        }
        q.idle = false;
        self.shared.wake.notify_all();
    }

    /// Blocks until every queued job is done (tests and shutdown).
    pub fn wait_idle(&self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        while !q.idle {
            q = self.shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Materializer {
    /// Stops the worker after the file it is writing, and waits for it (it holds the store).
    fn drop(&mut self) {
        {
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.stop = true;
            self.shared.wake.notify_all();
        }
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Renames and removals made durable by one directory fsync. A newcomer receiving thousands of
/// files pays one directory sync per batch instead of one per file (each file's content is
/// still synced before its rename).
const DIR_SYNC_BATCH: usize = 256;

/// What the worker does next.
enum Next {
    Do(String, Job),
    /// The queue drained with renames not yet durable.
    SyncDir,
    Stop,
}

fn run(shared: &Shared, dir: &Path, store: &Store) {
    // Directory entries changed since the last directory fsync.
    let mut unsynced = 0usize;
    loop {
        let next = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.stop {
                    break Next::Stop;
                }
                if let Some(name) = q.order.pop_front() {
                    let job = q.jobs.remove(&name).expect("queued names have jobs");
                    break Next::Do(name, job);
                }
                if unsynced > 0 {
                    // Make the batch durable before saying idle.
                    break Next::SyncDir;
                }
                q.idle = true;
                shared.wake.notify_all();
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        match next {
            Next::Do(name, job) => {
                let result = match &job {
                    Job::Write { hash, size } => write_file(dir, &name, store, hash, *size),
                    Job::Remove => remove_file(dir, &name),
                };
                match result {
                    Ok(()) => {
                        unsynced += 1;
                        debug!(file = %name, ?job, "materialized");
                    }
                    Err(e) => warn!(file = %name, error = %e, "could not write file to disk"),
                }
                if unsynced >= DIR_SYNC_BATCH {
                    sync_batch(dir, &mut unsynced);
                }
            }
            Next::SyncDir => sync_batch(dir, &mut unsynced),
            Next::Stop => {
                sync_batch(dir, &mut unsynced);
                return;
            }
        }
    }
}

/// Makes the renames and removals since the last call durable.
fn sync_batch(dir: &Path, unsynced: &mut usize) {
    if *unsynced > 0 {
        if let Err(e) = sync_dir(dir) {
            warn!(dir = %dir.display(), error = %e, "could not sync the files directory");
        }
        *unsynced = 0;
    }
}

fn write_file(dir: &Path, name: &str, store: &Store, hash: &[u8; 32], size: u64) -> std::io::Result<()> {
    let target = dir.join(name);
    let tmp = dir.join(format!(".shoal-tmp-{}", rand::random::<u64>()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        let mut written = 0u64;
        for chunk in store.body_chunks(hash) {
            let chunk = chunk.map_err(std::io::Error::other)?;
            file.write_all(&chunk)?;
            written += chunk.len() as u64;
        }
        if written != size {
            return Err(std::io::Error::other(format!(
                "body has {written} bytes, expected {size}"
            )));
        }
        file.sync_all()?;
        // The directory is synced by the worker, once per batch.
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn remove_file(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(dir: &Path, bodies: &[Vec<u8>]) -> Store {
        let store = Store::open(dir).unwrap();
        for b in bodies {
            let mut w = store.body_writer(*blake3::hash(b).as_bytes(), b.len() as u64).unwrap();
            w.write(b).unwrap();
            w.finish().unwrap();
        }
        store
    }

    #[test]
    fn many_files_are_written_and_removed_across_directory_sync_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let count = DIR_SYNC_BATCH * 2 + 7;
        let bodies: Vec<Vec<u8>> = (0..count).map(|i| format!("file {i}").into_bytes()).collect();
        let store = store_with(&tmp.path().join("state"), &bodies);
        let files = tmp.path().join("files");
        let m = Materializer::start(&files, store).unwrap();
        for (i, b) in bodies.iter().enumerate() {
            m.write(&format!("f{i}"), *blake3::hash(b).as_bytes(), b.len() as u64);
        }
        m.wait_idle();
        for (i, b) in bodies.iter().enumerate() {
            assert_eq!(&std::fs::read(files.join(format!("f{i}"))).unwrap(), b);
        }
        m.remove("f0");
        m.wait_idle();
        assert!(!files.join("f0").exists());
        let leftovers = std::fs::read_dir(&files)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".shoal-tmp-")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn a_body_of_the_wrong_size_is_not_written() {
        let tmp = tempfile::tempdir().unwrap();
        let body = b"twelve bytes".to_vec();
        let store = store_with(&tmp.path().join("state"), std::slice::from_ref(&body));
        let files = tmp.path().join("files");
        let m = Materializer::start(&files, store).unwrap();
        m.write("x", *blake3::hash(&body).as_bytes(), 99);
        m.wait_idle();
        assert!(!files.join("x").exists());
    }
}
