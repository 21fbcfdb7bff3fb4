//! Wiring: builds every layer from a [`Config`] and runs them until shutdown.
//!
//! `start` returns an [`AgentHandle`]; tests and the demo start many agents in one process
//! this way, and `main` calls [`run`] with a signal future.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::files::Materializer;
use crate::http::{self, ApiState, NodeFacts};
use crate::identity::{Admission, KeyError, PublicKey, SecretKey, unix_now, validate_node_name};
use crate::membership::{self, CoreConfig, JoinConfig, MembershipHandle, NodeId, Snapshot};
use crate::replication::item::RecordKind;
use crate::replication::policy::Policy;
use crate::replication::records::NodeInfo;
use crate::replication::{self, ReplicationConfig, ReplicationHandle};
use crate::store::{Store, StoreError};
use crate::transport::{self, Claims, Transport, TransportConfig, TransportError};

/// Capacity of the membership → replication event channel (events are hints; extra ones
/// are dropped).
pub const MEMBER_EVENTS_CAPACITY: usize = 256;

/// How long stopping waits for HTTP requests in progress.
pub const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Warn about our own certificate when it expires sooner than this.
pub const CERT_EXPIRY_WARNING_SECS: u64 = 14 * 24 * 3600;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is wrong (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The key file is unusable (exit status 2).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The state directory or database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state directory could not be created.
    #[error("state_dir {path}: {source}")]
    StateDir {
        /// Directory.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The QUIC endpoint could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The HTTP listener could not bind.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

impl AgentError {
    /// Process exit status for this error: 2 for configuration problems, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Config(_) | AgentError::Key(_) => 2,
            _ => 1,
        }
    }
}

/// A running agent.
pub struct AgentHandle {
    /// Node name.
    pub name: String,
    /// Node key.
    pub key: PublicKey,
    /// Address peers dial.
    pub cluster_addr: SocketAddr,
    /// Address of the HTTP API.
    pub http_addr: SocketAddr,
    membership: MembershipHandle,
    replication: ReplicationHandle,
    transport: Transport,
    store: Store,
    http_stop: CancellationToken,
    store_dir: PathBuf,
    schedules: crate::schedules::SchedulesHandle,
    reloader: crate::reload::ReloadHandle,
    replication_task: JoinHandle<()>,
    /// Health report and checks; events derived from membership and reports; the scheduler;
    /// the notifier; the watch on our own certificate.
    side_tasks: Vec<JoinHandle<()>>,
    membership_task: JoinHandle<()>,
    join_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
}

impl AgentHandle {
    /// The latest membership snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.membership.snapshot()
    }

    /// Receiver of membership snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.membership.subscribe()
    }

    /// Replicated state.
    pub fn replication(&self) -> &ReplicationHandle {
        &self.replication
    }

    /// The directory replicated files are written to.
    pub fn files_dir(&self) -> PathBuf {
        self.store_dir.join("files")
    }

    /// Fault injection: drop all traffic with `peers` (see [`Transport::set_blocked`]).
    pub fn set_blocked(&self, peers: std::collections::HashSet<PublicKey>) {
        self.transport.set_blocked(peers);
    }

    /// Transport counters.
    pub fn transport_stats(&self) -> &transport::Stats {
        self.transport.stats()
    }

    /// The peers this node holds a connection to, as their certificates admitted them.
    pub fn peers(&self) -> Vec<transport::PeerInfo> {
        self.transport.connected_peers()
    }

    /// Membership counters.
    pub fn membership_stats(&self) -> &membership::Stats {
        self.membership.stats()
    }

    /// UDP bytes (sent, received) by this agent's QUIC connections since start.
    pub fn udp_bytes(&self) -> (u64, u64) {
        self.transport.udp_bytes()
    }

    /// Reloads the config file (as on SIGHUP or when the file changes).
    pub async fn reload(&self) -> Result<crate::reload::Applied, String> {
        self.reloader.reload().await
    }

    /// Leaves the cluster, stops serving and flushes state.
    pub async fn shutdown(self) {
        info!(node = %self.name, "leaving the cluster");
        // Stop joining first, or the join loop would try to rejoin once we have left.
        self.join_task.abort();
        let _ = self.join_task.await;
        // Running jobs are killed and recorded as aborted, and the mesh is told, while we are
        // still a member.
        self.schedules.stop().await;
        self.reloader.stop().await;
        for t in self.side_tasks {
            t.abort();
            let _ = t.await;
        }
        self.membership.leave().await;
        self.http_stop.cancel();
        stop_http(self.http_task).await;
        self.transport.close().await;
        let _ = self.membership_task.await;
        self.replication.stop().await;
        let _ = self.replication_task.await;
        if let Err(e) = self.store.flush() {
            error!(error = %e, "flushing state on shutdown");
        }
    }

    /// Stops everything at once without leaving, as a crash would (peers must detect it).
    pub async fn kill(self) {
        self.transport.abort();
        self.join_task.abort();
        self.membership_task.abort();
        self.reloader.stop().await;
        for t in self.side_tasks {
            t.abort();
            let _ = t.await;
        }
        let _ = self.join_task.await;
        let _ = self.membership_task.await;
        // The local API is stopped gracefully (bounded): aborting axum's task would leave its
        // connection tasks, and with them the store, alive until clients hang up.
        self.http_stop.cancel();
        stop_http(self.http_task).await;
        self.replication.stop().await;
        let _ = self.replication_task.await;
        self.transport.stopped().await;
    }
}

/// Waits (bounded) for the HTTP server, already told to stop, to finish its requests.
async fn stop_http(mut task: JoinHandle<()>) {
    if tokio::time::timeout(HTTP_STOP_TIMEOUT, &mut task).await.is_err() {
        warn!("HTTP requests did not finish in time; dropping them");
        task.abort();
    }
}

/// Runs an agent until `shutdown` completes, then leaves gracefully.
pub async fn run(config: Config, config_path: &Path, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let agent = start(config, config_path).await?;
    crate::systemd::notify(&format!("READY=1\nSTATUS=serving; HTTP on {}", agent.http_addr));
    let watchdog = crate::systemd::watchdog_interval().map(|every| {
        // Pings come from the runtime the agent runs on: a wedged runtime stops them, and
        // systemd restarts the service.
        let membership = agent.membership.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if !membership.is_closed() {
                    crate::systemd::notify("WATCHDOG=1");
                }
            }
        })
    });
    tokio::pin!(shutdown);
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = hup.recv() => {
                    info!("SIGHUP received, reloading the configuration");
                    crate::systemd::notify("RELOADING=1");
                    if let Err(e) = agent.reload().await {
                        error!(error = %e, "reload failed");
                    }
                    crate::systemd::notify("READY=1");
                }
            }
        },
        Err(e) => {
            warn!(error = %e, "cannot handle SIGHUP; the config file is still watched");
            shutdown.await;
        }
    }
    crate::systemd::notify("STOPPING=1\nSTATUS=leaving the mesh");
    if let Some(w) = watchdog {
        w.abort();
    }
    agent.shutdown().await;
    Ok(())
}

/// Starts an agent. `config_path` locates relative paths and names the file in errors.
pub async fn start(config: Config, config_path: &Path) -> Result<AgentHandle, AgentError> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let state_dir = config.node.state_dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&state_dir)
        .map_err(|source| AgentError::StateDir {
            path: state_dir.clone(),
            source,
        })?;

    let key_path = config.key_file();
    let (secret, created) = SecretKey::load_or_create(&key_path)?;
    if created {
        info!(path = %key_path.display(), public_key = %secret.public(), "created node key");
    }
    let key = secret.public();

    let certificate = config.certificate(config_path)?;
    if let Some(cert) = &certificate {
        check_own_certificate(cert, key, config_path)?;
    }
    let bound_name = certificate.as_ref().map(|c| c.name.as_str()).or_else(|| {
        let own = config.network.trusted_nodes.iter().find(|t| t.key == key)?;
        own.name.as_deref()
    });
    let name = node_name(&config, bound_name, key);
    // Read before anything starts, so an unusable token file fails the start (exit status 2).
    let api_token = config.api_token(config_path)?;
    let (access_tx, access_rx) = watch::channel(Arc::new(http::guard::Access::new(&config.http, api_token.as_deref())));

    let store = Store::open(&state_dir)?;
    let generation = store.next_generation(unix_now())?;

    let policy = Policy {
        network_id: config.network_id(),
        files: crate::reload::files_policy(&config),
        max_file_size: config.replication.max_file_size.as_u64(),
        max_skew: config.replication.max_clock_skew,
    };
    let (replication, replication_parts) = replication::channel(store.clone(), policy);
    let materializer =
        Materializer::start(&state_dir.join("files"), store.clone()).map_err(|source| AgentError::StateDir {
            path: state_dir.join("files"),
            source,
        })?;

    let admission = Arc::new(Admission::with_names(
        config.network.network_key,
        config.network.trusted_nodes.iter().map(|t| (t.key, t.name.clone())),
    ));
    let claims = Claims {
        name: name.clone(),
        generation,
        network_cert: certificate.as_ref().map(|c| c.to_bytes()),
    };
    let (inbox_tx, inbox_rx) = mpsc::channel(membership::INBOX_CAPACITY);
    let transport = Transport::bind(
        &TransportConfig {
            listen: config.cluster.listen,
            idle_timeout: config.cluster.idle_timeout,
            max_connections: config.cluster.max_connections,
        },
        &secret,
        &claims,
        admission.clone(),
        inbox_tx,
    )?;
    let cluster_addr = match advertise_addr(&config, transport.local_addr()) {
        Ok(a) => a,
        Err(e) => {
            transport.abort();
            return Err(e.into());
        }
    };

    let identity = NodeId {
        key,
        addr: cluster_addr,
        generation,
        bump: 0,
    };
    let core_config = CoreConfig {
        probe_period: config.cluster.probe_period,
        probe_timeout: config.cluster.probe_timeout,
        suspect_timeout: config.cluster.suspect_timeout,
        forget_down_after: config.cluster.forget_down_after,
        reconnect_interval: config.cluster.reconnect_interval,
    };
    let (events_tx, events_rx) = mpsc::channel(MEMBER_EVENTS_CAPACITY);
    let (membership, membership_task) = membership::spawn(
        identity,
        name.clone(),
        &core_config,
        transport.clone(),
        inbox_rx,
        transport.take_expired(),
        replication.broadcast_filter(),
        Some(events_tx),
    );
    let replication_task = match replication::spawn(
        replication_parts,
        &ReplicationConfig {
            anti_entropy_interval: config.replication.anti_entropy_interval,
        },
        membership.clone(),
        events_rx,
        transport.clone(),
        materializer,
        secret.clone(),
    ) {
        Ok(t) => t,
        Err(e) => {
            transport.abort();
            membership_task.abort();
            return Err(e.into());
        }
    };
    let events = crate::events::EventLog::open(&store)?;
    let (names_state, names) = crate::names::Names::new(
        admission.clone(),
        replication.clone(),
        events.clone(),
        &membership.snapshot(),
    );
    let events_task = crate::events::spawn(events.clone(), membership.clone(), replication.clone(), names_state);
    let counters = Arc::new(crate::metrics::Counters::default());
    // The certificate this node presents; the reload task replaces it on renewal.
    let (certificate_tx, certificate_rx) = watch::channel(certificate.clone());
    let cert_task = crate::cert_watch::spawn(
        certificate_rx,
        events.clone(),
        key,
        counters.certificate_not_after.clone(),
    );
    let jobs = crate::schedules::jobs::JobStore::open(&store)?;
    let (schedules, schedules_task) = crate::schedules::spawn(crate::schedules::SchedulerContext {
        schedules: config.schedules.clone(),
        jobs: jobs.clone(),
        replication: replication.clone(),
        state_dir: state_dir.clone(),
        counters: counters.clone(),
    });
    let started_at_ms = crate::time::unix_ms();
    transport.set_stream_handler(Arc::new(crate::rpc::Dispatcher::new(
        replication.syncer(transport.clone()),
        Arc::new(crate::notify::confirm::MeshConfirmer {
            membership: membership.clone(),
            replication: replication.clone(),
        }),
        jobs,
        counters.clone(),
    )));
    let info = NodeInfo {
        name: name.clone(),
        version: crate::VERSION.to_string(),
        addr: cluster_addr,
        generation,
        started_at_ms,
        webhooks: crate::notify::hook_ids(&config),
        network_cert: certificate.as_ref().map(|c| c.to_bytes()),
    };
    if let Ok(content) = crate::codec::encode(&info) {
        replication.publish(RecordKind::NodeInfo, content).await;
    }
    let (bootstrap_tx, bootstrap_rx) = watch::channel(config.cluster.bootstrap.clone());
    // Owns the health and notifier tasks, which a reload may restart.
    let (reloader, reload_task) = crate::reload::spawn(crate::reload::Reloader {
        path: config_path.to_path_buf(),
        current: config.clone(),
        replication: replication.clone(),
        membership: membership.clone(),
        transport: transport.clone(),
        events: events.clone(),
        counters: counters.clone(),
        schedules: schedules.clone(),
        bootstrap: bootstrap_tx,
        http_access: access_tx,
        certificate: certificate_tx,
        node_info: info,
        local: key,
        started_at_ms,
    });
    let discover_task = crate::discover::spawn(key, membership.clone(), replication.clone());
    let join_task = tokio::spawn(membership::run_join(
        JoinConfig {
            bootstrap: bootstrap_rx,
            backoff_max: config.cluster.join_backoff_max,
            advertise: cluster_addr,
        },
        transport.clone(),
        membership.clone(),
    ));

    let listener = match tokio::net::TcpListener::bind(config.http.listen).await {
        Ok(l) => l,
        Err(source) => {
            transport.abort();
            membership_task.abort();
            join_task.abort();
            replication_task.abort();
            reloader.stop().await;
            reload_task.abort();
            events_task.abort();
            schedules_task.abort();
            cert_task.abort();
            discover_task.abort();
            return Err(AgentError::Http {
                addr: config.http.listen,
                source,
            });
        }
    };
    let http_addr = listener.local_addr().map_err(|source| AgentError::Http {
        addr: config.http.listen,
        source,
    })?;
    let http_stop = CancellationToken::new();
    let router = http::router(ApiState {
        facts: Arc::new(NodeFacts {
            name: name.clone(),
            key,
            cluster_addr,
            network: config.network.network_key,
            started_at,
            started,
        }),
        membership: membership.clone(),
        replication: replication.clone(),
        names,
        events: events.clone(),
        forget_after: config.health.forget_after,
        schedules: schedules.clone(),
        transport: transport.clone(),
        counters,
        access: access_rx,
        refusals: Arc::new(http::guard::Refusals::default()),
    });
    let stop = http_stop.clone();
    let http_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            error!(error = %e, "HTTP server failed");
        }
    });

    info!(
        node = %name, key = %key, generation, cluster = %cluster_addr, http = %http_addr,
        "shoal agent started"
    );
    // Named by the address it got (the configured port may be 0).
    let bound = crate::config::HttpConfig {
        listen: http_addr,
        ..config.http.clone()
    };
    if let Some(warning) = crate::config::http::exposure_warning(&bound) {
        warn!("{warning}");
    }
    Ok(AgentHandle {
        name,
        key,
        cluster_addr,
        http_addr,
        membership,
        replication,
        transport,
        store,
        http_stop,
        store_dir: state_dir,
        replication_task,
        schedules,
        reloader,
        side_tasks: vec![events_task, schedules_task, reload_task, cert_task, discover_task],
        membership_task,
        join_task,
        http_task,
    })
}

/// Our certificate must admit our key; an expired one is allowed to start (peers will refuse
/// it, and say why) but is logged loudly.
fn check_own_certificate(
    cert: &crate::identity::NodeCertificate,
    key: PublicKey,
    config_path: &Path,
) -> Result<(), ConfigError> {
    if cert.node_key != key {
        return Err(ConfigError::Invalid {
            path: config_path.to_path_buf(),
            line: None,
            key: "network.certificate".into(),
            message: format!(
                "certificate is for node key {}, but this node's key is {key}",
                cert.node_key
            ),
        });
    }
    let now = unix_now();
    if now > cert.not_after {
        error!("this node's certificate has expired; peers will refuse it. Issue a new one with `shoal cert sign`");
    } else if now < cert.not_before {
        error!("this node's certificate is not valid yet; peers will refuse it until then");
    } else if cert.not_after - now < CERT_EXPIRY_WARNING_SECS {
        warn!(
            days_left = (cert.not_after - now) / 86400,
            "this node's certificate expires soon"
        );
    }
    Ok(())
}

/// Name precedence: the one bound to our key (by our certificate, or our `trusted_nodes`
/// entry), then `[node] name`, then the hostname.
fn node_name(config: &Config, bound_name: Option<&str>, key: PublicKey) -> String {
    if let Some(n) = bound_name {
        return n.to_string();
    }
    if let Some(n) = &config.node.name {
        return n.clone();
    }
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let host = host.split('.').next().unwrap_or_default().to_string();
    if validate_node_name(&host).is_ok() {
        host
    } else {
        format!("node-{}", &key.short()[..6])
    }
}

/// The address peers should dial: `advertise`, else the bound address, else an address of
/// `interfaces`, else the address of the default route.
fn advertise_addr(config: &Config, bound: SocketAddr) -> Result<SocketAddr, ConfigError> {
    let port = bound.port();
    if let Some(mut a) = config.cluster.advertise {
        if a.port() == 0 {
            a.set_port(port);
        }
        return Ok(a);
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let want_v4 = bound.is_ipv4();
    if !config.cluster.interfaces.is_empty() {
        let addrs = if_addrs::get_if_addrs().unwrap_or_default();
        for wanted in &config.cluster.interfaces {
            if let Some(ip) = addrs
                .iter()
                .filter(|i| &i.name == wanted)
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() == want_v4)
            {
                return Ok(SocketAddr::new(ip, port));
            }
        }
        return Err(ConfigError::Invalid {
            path: PathBuf::new(),
            line: None,
            key: "cluster.interfaces".into(),
            message: format!(
                "none of {:?} has an {} address",
                config.cluster.interfaces,
                if want_v4 { "IPv4" } else { "IPv6" }
            ),
        });
    }
    // Connecting a UDP socket sends nothing; it only asks the kernel which source address
    // the default route would use.
    let probe: SocketAddr = if want_v4 {
        "192.0.2.1:9".parse()
    } else {
        "[2001:db8::1]:9".parse()
    }
    .expect("constant");
    let unspecified: IpAddr = if want_v4 {
        [0, 0, 0, 0].into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let ip = std::net::UdpSocket::bind(SocketAddr::new(unspecified, 0))
        .and_then(|s| s.connect(probe).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified());
    match ip {
        Some(ip) => Ok(SocketAddr::new(ip, port)),
        None => {
            warn!("cannot determine an address to advertise; using loopback. Set cluster.advertise");
            Ok(SocketAddr::new(
                if want_v4 {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                },
                port,
            ))
        }
    }
}
