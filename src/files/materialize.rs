//! Writes the current version of each file under `<state_dir>/files/<name>`: a temporary file
//! in the same directory (a hard link to the body when the store keeps it as a file, so a
//! large file is on disk once; such files are read-only), synced, renamed over the old one,
//! the directory synced. Jobs are taken
//! in batches of up to [`BATCH`] that share one data sync and one directory sync. A crash leaves
//! either the old or the new file, never a torn one (and the agent rewrites any file that does
//! not match the store when it starts).
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

/// Handle to the materializing worker. Dropping it stops the worker after the current batch.
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
    /// Stops the worker after the batch it is writing, and waits for it (it holds the store).
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

/// Most jobs the worker takes from the queue at once. A batch costs one sync of the new files'
/// data and one of the directory, whatever its size: a newcomer receiving thousands of files
/// is not bound by per-file syncs. The batch's files stay open until its data sync (file
/// descriptors).
const BATCH: usize = 256;

fn run(shared: &Shared, dir: &Path, store: &Store) {
    loop {
        let batch: Vec<(String, Job)> = {
            let mut q = shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.stop {
                    return;
                }
                if !q.order.is_empty() {
                    let take = q.order.len().min(BATCH);
                    let names: Vec<String> = q.order.drain(..take).collect();
                    break names
                        .into_iter()
                        .map(|name| {
                            let job = q.jobs.remove(&name).expect("queued names have jobs");
                            (name, job)
                        })
                        .collect();
                }
                q.idle = true;
                shared.wake.notify_all();
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        apply(dir, store, batch);
    }
}

/// A file written to its temporary name, not yet durable nor renamed.
struct Staged {
    name: String,
    tmp: PathBuf,
    file: std::fs::File,
}

/// Applies a batch so that a crash leaves each file either old or new, never torn: every new
/// file's content goes to a temporary file; then their data is made durable (one `syncfs` for
/// the batch, or an fsync when it holds one file); then the renames and removals; then one
/// directory sync.
fn apply(dir: &Path, store: &Store, batch: Vec<(String, Job)>) {
    let mut staged = Vec::new();
    let mut removed = Vec::new();
    for (name, job) in batch {
        match job {
            Job::Write { hash, size } => match stage(dir, &name, store, &hash, size) {
                Ok(s) => staged.push(s),
                Err(e) => warn!(file = %name, error = %e, "could not write file to disk"),
            },
            Job::Remove => removed.push(name),
        }
    }
    if let Err(e) = sync_data(dir, &staged) {
        // Nothing is renamed over a file whose replacement may not be on disk.
        warn!(dir = %dir.display(), error = %e, "could not sync new files; not installing them");
        for s in staged {
            let _ = std::fs::remove_file(&s.tmp);
        }
        staged = Vec::new();
    }
    for s in staged {
        drop(s.file);
        match std::fs::rename(&s.tmp, dir.join(&s.name)) {
            Ok(()) => debug!(file = %s.name, "materialized"),
            Err(e) => {
                warn!(file = %s.name, error = %e, "could not write file to disk");
                let _ = std::fs::remove_file(&s.tmp);
            }
        }
    }
    for name in removed {
        match remove_file(dir, &name) {
            Ok(()) => debug!(file = %name, "removed"),
            Err(e) => warn!(file = %name, error = %e, "could not remove file"),
        }
    }
    if let Err(e) = sync_dir(dir) {
        warn!(dir = %dir.display(), error = %e, "could not sync the files directory");
    }
}

/// Makes the content of the staged files durable.
fn sync_data(dir: &Path, staged: &[Staged]) -> std::io::Result<()> {
    match staged {
        [] => Ok(()),
        [one] => one.file.sync_all(),
        _ => {
            use std::os::fd::AsRawFd;
            let d = std::fs::File::open(dir)?;
            // SAFETY: syncfs on a file descriptor we own for the duration of the call.
            if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        }
    }
}

/// Puts the body `hash` at a temporary name next to `name`: a hard link to the body file
/// when the body is a file on the same filesystem (a large file is then on disk once), else
/// a copy.
fn stage(dir: &Path, name: &str, store: &Store, hash: &[u8; 32], size: u64) -> std::io::Result<Staged> {
    let tmp = dir.join(format!(".shoal-tmp-{}", rand::random::<u64>()));
    if let Some(body) = store.body_path(hash)
        && std::fs::hard_link(&body, &tmp).is_ok()
    {
        return match std::fs::File::open(&tmp) {
            Ok(file) if file.metadata().is_ok_and(|m| m.len() == size) => Ok(Staged {
                name: name.to_string(),
                tmp,
                file,
            }),
            other => {
                let _ = std::fs::remove_file(&tmp);
                Err(other
                    .err()
                    .unwrap_or_else(|| std::io::Error::other("body file has the wrong size")))
            }
        };
    }
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
        Ok(file)
    })();
    match result {
        Ok(file) => Ok(Staged {
            name: name.to_string(),
            tmp,
            file,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
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
    fn many_files_are_written_and_removed_across_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let count = BATCH * 2 + 7;
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

    #[test]
    fn large_bodies_are_linked_not_copied_and_survive_their_removal() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..(crate::store::SMALL_BODY_MAX as usize + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let hash = *blake3::hash(&body).as_bytes();
        let store = store_with(&tmp.path().join("state"), std::slice::from_ref(&body));
        let files = tmp.path().join("files");
        let m = Materializer::start(&files, store.clone()).unwrap();
        m.write("big", hash, body.len() as u64);
        m.write("same", hash, body.len() as u64);
        m.wait_idle();
        let stored = std::fs::metadata(store.body_path(&hash).unwrap()).unwrap();
        for name in ["big", "same"] {
            let meta = std::fs::metadata(files.join(name)).unwrap();
            assert_eq!(
                (meta.dev(), meta.ino()),
                (stored.dev(), stored.ino()),
                "{name} is a link"
            );
        }
        // The store dropping the body (a newer version came) leaves the files whole.
        store.remove_body(&hash).unwrap();
        assert_eq!(std::fs::read(files.join("big")).unwrap(), body);
    }
}
