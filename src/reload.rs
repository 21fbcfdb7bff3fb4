//! Live configuration reload.
//!
//! One task watches the config file (inotify on its directory, since editors replace files by
//! renaming) and also reloads on request (`SIGHUP`, [`ReloadHandle::reload`]). A new file is
//! parsed and validated as at start; if it is broken the running configuration is kept and the
//! error logged. Otherwise what can change live is applied: `[files]`, `[[schedules]]`,
//! `[health]`, `[[notify.webhooks]]`, `[cluster] bootstrap`, `[http] allowed_hosts` and
//! `token_file` (the token file is read again on every reload, so a rotated token applies
//! with SIGHUP) and a renewed `[network]` certificate (its file is read again on every
//! reload). Changes to anything else (addresses, keys, network, timings) are logged as
//! needing a restart.
//!
//! The task owns the health and notifier tasks, because applying `[health]` or webhooks
//! restarts them.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, HostPort};
use crate::events::EventLog;
use crate::http::guard::Access;
use crate::identity::{Admission, NodeCertificate, PublicKey, unix_now};
use crate::membership::MembershipHandle;
use crate::metrics::Counters;
use crate::replication::ReplicationHandle;
use crate::replication::item::RecordKind;
use crate::replication::records::NodeInfo;
use crate::schedules::SchedulesHandle;
use crate::transport::Transport;

/// Capacity of the request channel.
pub const REQUEST_CAPACITY: usize = 4;
/// File events closer together than this make one reload (an editor's save is several).
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Sections applied live, by the name a reload reports.
pub const LIVE_SECTIONS: [&str; 8] = [
    "files",
    "schedules",
    "health",
    "notify.webhooks",
    "cluster.bootstrap",
    "http.allowed_hosts",
    "http.token_file",
    "network.certificate",
];

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Sections changed and applied.
    pub applied: Vec<&'static str>,
    /// Sections changed that need a restart (not applied).
    pub need_restart: Vec<&'static str>,
}

enum Request {
    Reload(oneshot::Sender<Result<Applied, String>>),
    Stop(oneshot::Sender<()>),
}

/// Asks the reload task to reload or stop.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<Request>,
}

impl ReloadHandle {
    /// Reloads the config file now; returns what changed, or why the file was refused.
    pub async fn reload(&self) -> Result<Applied, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Reload(tx))
            .await
            .map_err(|_| "the agent is stopping".to_string())?;
        rx.await.map_err(|_| "the agent is stopping".to_string())?
    }

    /// Stops watching, and stops the health and notifier tasks.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Everything the reload task needs, and the tasks it restarts.
pub struct Reloader {
    /// The config file.
    pub path: PathBuf,
    /// The configuration running now.
    pub current: Config,
    /// Where `[files]` go, and records are published.
    pub replication: ReplicationHandle,
    /// For health and the notifier.
    pub membership: MembershipHandle,
    /// For health and the notifier.
    pub transport: Transport,
    /// For the notifier.
    pub events: Arc<EventLog>,
    /// Counts reloads and deliveries.
    pub counters: Arc<Counters>,
    /// Where `[[schedules]]` go.
    pub schedules: SchedulesHandle,
    /// The join task's bootstrap list.
    pub bootstrap: watch::Sender<Vec<HostPort>>,
    /// What the HTTP guard allows (hosts, token).
    pub http_access: watch::Sender<Arc<Access>>,
    /// The certificate this node presents (read by the task watching its expiry).
    pub certificate: watch::Sender<Option<NodeCertificate>>,
    /// This node's record, republished when its webhooks change.
    pub node_info: NodeInfo,
    /// This node's key.
    pub local: PublicKey,
    /// Agent start, Unix ms.
    pub started_at_ms: u64,
}

impl Reloader {
    fn spawn_health(&self) -> JoinHandle<()> {
        crate::health::spawn(crate::health::HealthContext {
            config: self.current.health.clone(),
            replication: self.replication.clone(),
            membership: self.membership.clone(),
            transport: self.transport.clone(),
            state_dir: self.current.node.state_dir.clone(),
            started_at_ms: self.started_at_ms,
        })
    }

    fn spawn_notify(&self) -> Option<JoinHandle<()>> {
        crate::notify::spawn(crate::notify::NotifyContext {
            webhooks: self.current.notify.webhooks.clone(),
            network_id: self.current.network_id(),
            local: self.local,
            membership: self.membership.clone(),
            replication: self.replication.clone(),
            transport: self.transport.clone(),
            events: self.events.clone(),
            counters: self.counters.clone(),
        })
    }
}

/// `[files]` as the replication policy wants it.
pub fn files_policy(config: &Config) -> BTreeMap<String, HashSet<PublicKey>> {
    config
        .files
        .iter()
        .map(|(name, keys)| (name.clone(), keys.iter().copied().collect()))
        .collect()
}

/// Starts the health and notifier tasks and the reload task that owns them.
pub fn spawn(reloader: Reloader) -> (ReloadHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(REQUEST_CAPACITY);
    (ReloadHandle { tx }, tokio::spawn(run(reloader, rx)))
}

/// Stops a task and waits for it to end.
async fn stop_task(task: Option<JoinHandle<()>>) {
    if let Some(t) = task {
        t.abort();
        let _ = t.await;
    }
}

async fn run(mut r: Reloader, mut rx: mpsc::Receiver<Request>) {
    let mut health = Some(r.spawn_health());
    let mut notify = r.spawn_notify();
    let (fs_tx, mut fs_rx) = mpsc::channel::<()>(1);
    // The config file, and the certificate file: writing a renewed certificate is enough.
    let mut watched = watched_files(&r);
    // Kept alive for as long as the task runs; dropping it stops the watch.
    let mut _watcher = watch_files(&watched, fs_tx.clone());
    loop {
        tokio::select! {
            request = rx.recv() => match request {
                Some(Request::Reload(reply)) => {
                    let outcome = reload(&mut r, &mut health, &mut notify).await;
                    let _ = reply.send(outcome);
                }
                Some(Request::Stop(done)) => {
                    stop_task(health.take()).await;
                    stop_task(notify.take()).await;
                    let _ = done.send(());
                    return;
                }
                None => break,
            },
            Some(()) = fs_rx.recv() => {
                // Let the editor finish writing.
                tokio::time::sleep(DEBOUNCE).await;
                while fs_rx.try_recv().is_ok() {}
                let _ = reload(&mut r, &mut health, &mut notify).await;
            }
        }
        if watched_files(&r) != watched {
            watched = watched_files(&r);
            _watcher = watch_files(&watched, fs_tx.clone());
        }
    }
    stop_task(health.take()).await;
    stop_task(notify.take()).await;
}

/// The certificate `new` configures, when it replaces the one this node presents: it must
/// admit this node's key, come from the same network, carry the same name, and be valid now.
/// `Ok(None)` when it is the same certificate, or when the node runs without one (adding or
/// removing a certificate changes `[network]`, which needs a restart).
fn renewed_certificate(r: &Reloader, new: &Config) -> Result<Option<NodeCertificate>, String> {
    let Some(running) = r.certificate.borrow().clone() else {
        return Ok(None);
    };
    let Some(cert) = new.certificate(&r.path).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    if cert == running {
        return Ok(None);
    }
    let refuse = |why: String| Err(format!("{}: renewed certificate refused: {why}", r.path.display()));
    if cert.node_key != r.local {
        return refuse(format!(
            "it admits node key {}, but this node's key is {}",
            cert.node_key, r.local
        ));
    }
    if cert.network_key != running.network_key {
        return refuse(format!(
            "it was issued by network {}, but this node is in network {} (changing networks needs a restart)",
            cert.network_key, running.network_key
        ));
    }
    if cert.name != running.name {
        return refuse(format!(
            "it names the node {:?}, but it runs as {:?} (renaming needs a restart)",
            cert.name, running.name
        ));
    }
    // What peers will check: the same rules, now.
    if let Err(refusal) = Admission::new(Some(running.network_key), []).check(&r.local, Some(&cert), unix_now()) {
        return refuse(refusal.to_string());
    }
    Ok(Some(cert))
}

/// The files whose changes trigger a reload: the config file, and the certificate file when
/// the certificate is one.
fn watched_files(r: &Reloader) -> Vec<PathBuf> {
    let mut files = vec![r.path.clone()];
    files.extend(r.current.certificate_path(&r.path));
    files
}

/// How often the config directory is polled when the kernel cannot watch it (inotify
/// instances exhausted: `fs.inotify.max_user_instances`, 128 by default, is per user, so the
/// 129th agent a user runs on one machine gets none).
pub const CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A file watcher, inotify or polling.
type FileWatcher = Box<dyn notify::Watcher + Send>;

/// Watches the directories of `paths` for changes to those files (editors and renewal tools
/// replace files by renaming); `None` (logged) if it cannot watch the config file. Without an
/// inotify instance it polls every [`CONFIG_POLL_INTERVAL`] instead.
fn watch_files(paths: &[PathBuf], tx: mpsc::Sender<()>) -> Option<FileWatcher> {
    let config = paths.first()?;
    if !config.is_file() {
        return None;
    }
    let watcher: FileWatcher = match notify::recommended_watcher(file_handler(paths, tx.clone())) {
        Ok(w) => Box::new(w),
        Err(e) => {
            warn!(
                error = %e,
                poll_every = ?CONFIG_POLL_INTERVAL,
                "cannot watch the config file with inotify (raise fs.inotify.max_user_instances); polling it instead"
            );
            poll_watcher(paths, tx, CONFIG_POLL_INTERVAL)?
        }
    };
    watch_dirs(watcher, paths)
}

/// A polling watcher of `paths`.
fn poll_watcher(paths: &[PathBuf], tx: mpsc::Sender<()>, every: Duration) -> Option<FileWatcher> {
    // File times have one-second resolution here: an edit in the same second as the last
    // scan would be missed without comparing contents (the directory holds a few small files).
    let config = notify::Config::default()
        .with_poll_interval(every)
        .with_compare_contents(true);
    match notify::PollWatcher::new(file_handler(paths, tx), config) {
        Ok(w) => Some(Box::new(w)),
        Err(e) => {
            warn!(error = %e, "cannot poll the config file either; reload with SIGHUP");
            None
        }
    }
}

/// Signals `tx` on a change to one of `paths`.
fn file_handler(paths: &[PathBuf], tx: mpsc::Sender<()>) -> impl notify::EventHandler {
    let names: HashSet<std::ffi::OsString> = paths.iter().filter_map(|p| p.file_name()).map(Into::into).collect();
    move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !matches!(e.kind, notify::EventKind::Access(_))
            && e.paths.iter().any(|p| p.file_name().is_some_and(|n| names.contains(n)))
        {
            // A full channel means a reload is already pending.
            let _ = tx.try_send(());
        }
    }
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Points `watcher` at the directories of `paths`; `None` if the config file's cannot be.
fn watch_dirs(mut watcher: FileWatcher, paths: &[PathBuf]) -> Option<FileWatcher> {
    let config = paths.first()?;
    let dirs: HashSet<PathBuf> = paths.iter().map(|p| dir_of(p)).collect();
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            warn!(dir = %dir.display(), error = %e, "cannot watch this directory; reload with SIGHUP after changing its files");
            if dir == dir_of(config) {
                return None;
            }
        }
    }
    Some(watcher)
}

/// Applies `[http] allowed_hosts` and the token (read again from `token_file`) to the HTTP
/// guard; the listen address stays as it runs.
fn apply_http_access(r: &Reloader, old: &Config, done: &mut Applied) {
    let new = &r.current;
    let token = match new.api_token(&r.path) {
        Ok(t) => t,
        Err(e) => {
            // Config::load read it a moment ago; it changed since. Keep what runs.
            error!(error = %e, "the API token cannot be read; the running one is kept");
            return;
        }
    };
    let mut http = new.http.clone();
    http.listen = old.http.listen;
    let access = Access::new(&http, token.as_deref());
    let running = r.http_access.borrow().clone();
    if new.http.allowed_hosts != old.http.allowed_hosts {
        done.applied.push("http.allowed_hosts");
    }
    if access.token_differs(&running) {
        done.applied.push("http.token_file");
    }
    if access != *running {
        r.http_access.send_replace(Arc::new(access));
        if let Some(warning) = crate::config::http::exposure_warning(&http) {
            warn!("{warning}");
        }
    }
}

async fn reload(
    r: &mut Reloader,
    health: &mut Option<JoinHandle<()>>,
    notify: &mut Option<JoinHandle<()>>,
) -> Result<Applied, String> {
    let new = match Config::load(&r.path) {
        Ok(c) => c,
        Err(e) => {
            r.counters.reloads_refused.fetch_add(1, Ordering::Relaxed);
            error!(error = %e, "config reload refused; the running configuration is kept");
            return Err(e.to_string());
        }
    };
    // A renewed certificate is checked and put in place first: if it is refused, nothing
    // else is applied either.
    let renewed = match renewed_certificate(r, &new) {
        Ok(renewed) => renewed,
        Err(e) => {
            r.counters.reloads_refused.fetch_add(1, Ordering::Relaxed);
            error!(error = %e, "config reload refused; the running configuration is kept");
            return Err(e);
        }
    };
    let renewing = renewed.is_some();
    if let Some(cert) = renewed {
        if let Err(e) = r.transport.renew_certificate(cert.to_bytes()) {
            r.counters.reloads_refused.fetch_add(1, Ordering::Relaxed);
            let e = format!("renewed certificate not applied: {e}");
            error!(error = %e, "config reload refused; the running configuration is kept");
            return Err(e);
        }
        info!(
            not_after = %crate::time::rfc3339_ms(cert.not_after.saturating_mul(1000)),
            "presenting the renewed certificate"
        );
        // Peers learn the renewed certificate at their next handshake; the node record
        // carries it to every other node, which checks our name against it.
        r.node_info.network_cert = Some(cert.to_bytes());
        r.certificate.send_replace(Some(cert));
    }
    let old = std::mem::replace(&mut r.current, new);
    let new = &r.current;
    let mut done = Applied::default();
    if renewing {
        done.applied.push("network.certificate");
    }
    if new.files != old.files {
        r.replication.set_files(files_policy(new)).await;
        done.applied.push("files");
    }
    if new.schedules != old.schedules {
        r.schedules.reload(new.schedules.clone()).await;
        done.applied.push("schedules");
    }
    if new.cluster.bootstrap != old.cluster.bootstrap {
        r.bootstrap.send_replace(new.cluster.bootstrap.clone());
        done.applied.push("cluster.bootstrap");
    }
    if new.health != old.health {
        stop_task(health.take()).await;
        *health = Some(r.spawn_health());
        done.applied.push("health");
    }
    apply_http_access(r, &old, &mut done);
    let webhooks_changed = new.notify != old.notify;
    if webhooks_changed {
        stop_task(notify.take()).await;
        *notify = r.spawn_notify();
        r.node_info.webhooks = crate::notify::hook_ids(new);
        done.applied.push("notify.webhooks");
    }
    if (webhooks_changed || renewing)
        && let Ok(content) = crate::codec::encode(&r.node_info)
    {
        r.replication.publish(RecordKind::NodeInfo, content).await;
    }
    let mut old_cluster = old.cluster.clone();
    old_cluster.bootstrap = new.cluster.bootstrap.clone();
    // Where the certificate comes from is compared through the certificate itself (above).
    let mut old_network = old.network.clone();
    old_network.certificate = new.network.certificate.clone();
    old_network.certificate_file = new.network.certificate_file.clone();
    for (section, changed) in [
        ("node", new.node != old.node),
        ("cluster", new.cluster != old_cluster),
        ("network", new.network != old_network),
        ("http.listen", new.http.listen != old.http.listen),
        ("replication", new.replication != old.replication),
    ] {
        if changed {
            warn!(
                section,
                "this section changed; restart the agent to apply it (the running value is kept)"
            );
            done.need_restart.push(section);
        }
    }
    // Sections that need a restart stay as they run, so the next reload compares against them.
    r.current.node = old.node;
    r.current.cluster = old_cluster;
    r.current.network = old_network;
    r.current.http.listen = old.http.listen;
    r.current.replication = old.replication;
    r.counters.reloads_applied.fetch_add(1, Ordering::Relaxed);
    info!(applied = ?done.applied, need_restart = ?done.need_restart, "configuration reloaded");
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fallback an agent uses without an inotify instance still sees the config file
    /// replaced by a rename, as editors do, and ignores other files in the directory.
    #[test]
    fn the_polling_watcher_sees_the_config_file_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("shoal.toml");
        std::fs::write(&config, "a = 1\n").unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let every = Duration::from_millis(50);
        let watcher = poll_watcher(std::slice::from_ref(&config), tx, every).expect("a poll watcher");
        let _watcher = watch_dirs(watcher, std::slice::from_ref(&config)).expect("watching the directory");
        // Only a change to a watched file counts.
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        std::thread::sleep(every * 4);
        assert!(rx.try_recv().is_err(), "another file is not the config");
        let tmp = dir.path().join(".shoal.toml.swp");
        std::fs::write(&tmp, "a = 2\nb = 3\n").unwrap();
        std::fs::rename(&tmp, &config).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while rx.try_recv().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the replaced config file was not seen"
            );
            std::thread::sleep(every);
        }
    }
}
