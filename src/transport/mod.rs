//! QUIC transport: one quinn endpoint per agent, mutual TLS bound to node keys, a cache of
//! connections per peer key, and unreliable datagrams for membership: sealed under the
//! session key of an earlier handshake when there is one (`sealed`), so that contacting a
//! member costs no connection, else over a connection.
//!
//! Sending never blocks: [`Transport::send`] uses a cached connection or starts a bounded
//! background dial and queues a few datagrams for it. Received datagrams go to the membership
//! task through a bounded channel with `try_send`; when it is full they are dropped and
//! counted, as a lossy network would, so a slow consumer never stalls a connection task.

mod connect;
mod demux;
pub mod expiry;
mod frame;
mod reach;
mod reader;
pub mod sealed;
mod sealing;
mod socket;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use expiry::Expired;
pub use frame::Channel;
pub use reach::MAX_UNREACHABLE_TRACKED;
use sealing::{Inboxes, SealedReceiver};
pub use socket::UDP_SOCKET_BUFFER;
pub use tls::{Claims, PeerInfo};

use crate::identity::{Admission, PublicKey, Refusal, SecretKey, unix_now};

/// How long an outgoing handshake may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an incoming handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Background dials in flight at once; beyond this, datagrams to unconnected peers are dropped.
pub const MAX_CONCURRENT_DIALS: usize = 64;
/// Datagrams held for a peer while its connection is being dialled.
pub const MAX_PENDING_PER_DIAL: usize = 8;
/// Incoming handshakes in progress at once (quinn's `max_incoming`).
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Per-connection buffer for unread incoming datagrams.
pub const DATAGRAM_RECEIVE_BUFFER: usize = 64 * 1024;
/// Per-connection buffer for datagrams not yet sent.
pub const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;
/// Streams a peer may have open on one connection at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// Incoming streams handled at once across all connections; beyond this they are refused.
pub const MAX_INCOMING_STREAMS: usize = 256;
/// On graceful close, how long to wait for queued datagrams (a leave announcement) to go out.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);
/// On graceful close, how long to let the endpoint transmit its CONNECTION_CLOSE frames.
/// (Waiting for peers to acknowledge would take three probe timeouts; nothing needs that.)
pub const CLOSE_IDLE_TIMEOUT: Duration = Duration::from_millis(200);
/// The packet size QUIC starts every connection at (quinn's `initial_mtu`, the size every
/// IPv4 and IPv6 path must carry).
pub const INITIAL_MTU: u16 = 1200;
/// The larger packet size a connection probes for once, after its handshake: a whole
/// Ethernet frame. quinn's default binary search from [`INITIAL_MTU`] sends about four probes
/// each way, 11 KB of a connection's 15 KB on loopback, and SWIM contacts members often
/// enough without a connection that at 200 agents this was most of the idle traffic. One
/// probe each way keeps full-size packets for file bodies on a LAN; a path that cannot carry
/// it (a tunnel) stays at [`INITIAL_MTU`].
pub const MTU_PROBE: u16 = 1452;

/// One path-MTU probe per direction, to [`MTU_PROBE`] (see there).
fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut config = quinn::MtuDiscoveryConfig::default();
    // With the minimum change as wide as the whole range, the search probes the upper bound
    // and stops, whether that probe is answered or lost.
    config.upper_bound(MTU_PROBE).minimum_change(MTU_PROBE - INITIAL_MTU);
    config
}

/// quinn reports a connection's datagram send buffer as this much short of its size even when
/// nothing is queued (per-datagram bookkeeping); any queued datagram takes more.
const DATAGRAM_BUFFER_SLACK: usize = 64;

/// Errors of the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// quinn refused to start a connection.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Address.
        addr: SocketAddr,
        /// quinn's error.
        source: quinn::ConnectError,
    },
    /// The handshake or connection failed.
    #[error("connection to {addr} failed: {source}")]
    Connection {
        /// Address.
        addr: SocketAddr,
        /// quinn's error.
        source: quinn::ConnectionError,
    },
    /// The handshake did not finish in time.
    #[error("connection to {0} timed out")]
    Timeout(SocketAddr),
    /// The connection limit is reached.
    #[error("connection limit of {0} reached")]
    TooManyConnections(usize),
    /// The address is this node itself.
    #[error("{0} is this node")]
    SelfConnection(SocketAddr),
    /// Traffic to this peer is blocked by fault injection.
    #[error("peer {0} is blocked by fault injection")]
    Blocked(PublicKey),
    /// No connection to the peer and no address to dial.
    #[error("no connection to {0} and no address to dial")]
    NoRoute(PublicKey),
    /// Opening a stream failed.
    #[error("opening a stream: {0}")]
    Stream(#[from] quinn::ConnectionError),
    /// The peer's certificate was refused after the handshake.
    #[error("peer at {addr} refused: {refusal}")]
    Refused {
        /// Address.
        addr: SocketAddr,
        /// Why.
        refusal: Refusal,
    },
}

/// Where to send a datagram: a member's key, address and identity generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Node key; connections are cached by it.
    pub key: PublicKey,
    /// Address to dial when not connected.
    pub addr: SocketAddr,
    /// Identity generation; a cached connection to an older generation is stale.
    pub generation: u64,
}

/// A datagram received from an admitted peer.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Authenticated sender key.
    pub from: PublicKey,
    /// Sender's name, from its certificate.
    pub name: Arc<str>,
    /// Payload (without the channel byte).
    pub data: Bytes,
}

/// Settings of the transport.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
    /// Most connections held at once.
    pub max_connections: usize,
}

/// Counters of the transport, for the API and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams handed to quinn.
    pub datagrams_sent: AtomicU64,
    /// Bytes of those datagrams.
    pub datagram_bytes_sent: AtomicU64,
    /// Datagrams received from admitted peers.
    pub datagrams_received: AtomicU64,
    /// Of the datagrams sent, those sealed (`sealed`) rather than sent on a connection.
    pub datagrams_sealed: AtomicU64,
    /// UDP bytes of sealed datagrams and unknown-key replies, (sent, received).
    pub sealed_udp_bytes: (AtomicU64, AtomicU64),
    /// Sealed datagrams refused: unknown key, replayed, forged, malformed or expired.
    pub sealed_refused: AtomicU64,
    /// Bytes of those datagrams.
    pub datagram_bytes_received: AtomicU64,
    /// Datagrams dropped: no connection and no dial possible, queue full, or too large.
    pub datagrams_dropped: AtomicU64,
    /// Received datagrams that were empty or of an unknown channel.
    pub datagrams_malformed: AtomicU64,
    /// Handshakes completed (both directions).
    pub connections_opened: AtomicU64,
    /// Outgoing dials that failed.
    pub dial_failures: AtomicU64,
    /// Peers refused by admission, both directions, at the handshake or when their
    /// certificate expired while connected.
    pub refusals: AtomicU64,
    /// Expiry notices membership could not take (its queue was full).
    pub expiry_notices_dropped: AtomicU64,
}

/// A boxed future returned by a [`StreamHandler`].
pub type HandlerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves the bidirectional streams peers open.
pub trait StreamHandler: Send + Sync + 'static {
    /// Handles one stream from the admitted `peer`.
    fn handle(&self, peer: PeerInfo, send: quinn::SendStream, recv: quinn::RecvStream) -> HandlerFuture;
}

struct PeerConn {
    conn: quinn::Connection,
    info: PeerInfo,
    /// Whether this is the connection both sides prefer when they dialled each other at once.
    canonical: bool,
}

#[derive(Default)]
struct Pool {
    /// The connection used to reach each peer.
    conns: HashMap<PublicKey, PeerConn>,
    /// Every open connection (duplicates included), by quinn's stable id, with the order it
    /// was registered in (the oldest is closed first at the connection limit).
    live: HashMap<usize, (quinn::Connection, u64)>,
    /// Connections registered so far.
    registered: u64,
    /// Datagrams waiting for a dial to finish, by peer.
    dialing: HashMap<PublicKey, Vec<Bytes>>,
    /// UDP bytes (sent, received) of connections that have closed.
    closed_udp: (u64, u64),
    /// Peers whose last dial failed.
    unreachable: reach::Unreachable,
}

struct Inner {
    endpoint: quinn::Endpoint,
    /// The cluster socket itself, for sealed datagrams (quinn sends through a wrapper of it).
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    /// Session keys of peers, for sealed datagrams.
    sealer: Arc<Mutex<sealed::Sealer>>,
    tls: tls::TlsConfigs,
    /// Our key, to build a new TLS certificate when the network certificate is renewed.
    secret: SecretKey,
    /// What our TLS certificate says now.
    claims: Mutex<Claims>,
    /// Peers whose certificate expired while connected, for membership.
    expired: mpsc::Sender<Expired>,
    /// Its receiving end, until [`Transport::take_expired`].
    expired_rx: Mutex<Option<mpsc::Receiver<Expired>>>,
    admission: Arc<Admission>,
    transport_config: Arc<quinn::TransportConfig>,
    local_key: PublicKey,
    local_addr: SocketAddr,
    max_connections: usize,
    pool: Mutex<Pool>,
    dial_permits: Arc<Semaphore>,
    stream_permits: Arc<Semaphore>,
    /// Cleared when the transport stops: the handler usually holds a `Transport` itself, and
    /// keeping it would make a reference cycle that never frees the endpoint or the store.
    stream_handler: RwLock<Option<Arc<dyn StreamHandler>>>,
    blocked: Arc<RwLock<HashSet<PublicKey>>>,
    inboxes: Arc<Inboxes>,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    /// Every task the transport spawns, so that closing can wait for all of them.
    tracker: TaskTracker,
}

/// Handle to the transport. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Binds the endpoint and starts accepting. Received datagrams are delivered to `inbound`.
    pub fn bind(
        config: &TransportConfig,
        secret: &SecretKey,
        claims: &Claims,
        admission: Arc<Admission>,
        inbound: mpsc::Sender<(Channel, Inbound)>,
    ) -> Result<Transport, TransportError> {
        let stats = Arc::new(Stats::default());
        let hook_stats = stats.clone();
        let on_refusal: tls::RefusalHook = Arc::new(move |key, refusal| {
            hook_stats.refusals.fetch_add(1, Ordering::Relaxed);
            warn!(peer_key = key.map(|k| k.to_string()).unwrap_or_default(), reason = %refusal, "refused peer");
        });
        let tls = tls::TlsConfigs::new(tls::LocalCert::new(secret, claims)?, admission.clone(), on_refusal);

        let mut tc = quinn::TransportConfig::default();
        tc.max_idle_timeout(Some(
            config
                .idle_timeout
                .try_into()
                .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::MAX)),
        ))
        .keep_alive_interval(None)
        .max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        .initial_mtu(INITIAL_MTU)
        .mtu_discovery_config(Some(mtu_discovery()));
        let transport_config = Arc::new(tc);

        let server = server_config(&tls, &transport_config)?;

        // Stateless resets keyed by the node key: after a restart on the same address, peers
        // still holding a connection to the previous run get a reset instead of silence.
        let reset_seed = blake3::derive_key("shoal v1 quic stateless reset key", &secret.seed());
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset_seed);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        // Every QUIC packet to us then has its fixed bit set, and the socket can tell sealed
        // datagrams (bit clear) from QUIC by their first byte.
        endpoint_config.grease_quic_bit(false);

        let bind_error = |source| TransportError::Bind {
            addr: config.listen,
            source,
        };
        let socket = socket::bind(config.listen).map_err(bind_error)?;
        let socket = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket).map_err(bind_error)?;
        let sealer = Arc::new(Mutex::new(sealed::Sealer::default()));
        let blocked = Arc::new(RwLock::new(HashSet::new()));
        let inboxes = Arc::new(Inboxes {
            membership: inbound,
            probes: std::sync::OnceLock::new(),
        });
        let sink = Arc::new(SealedReceiver {
            sealer: sealer.clone(),
            blocked: blocked.clone(),
            inboxes: inboxes.clone(),
            stats: stats.clone(),
        });
        let demux = Arc::new(demux::Demux::new(socket.clone(), sink));
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            demux,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        let local_addr = endpoint.local_addr().map_err(|source| TransportError::Bind {
            addr: config.listen,
            source,
        })?;

        let (expired, expired_rx) = mpsc::channel(expiry::EXPIRED_CAPACITY);
        let inner = Arc::new(Inner {
            endpoint,
            socket,
            sealer,
            tls,
            secret: secret.clone(),
            claims: Mutex::new(claims.clone()),
            expired,
            expired_rx: Mutex::new(Some(expired_rx)),
            admission,
            transport_config,
            local_key: secret.public(),
            local_addr,
            max_connections: config.max_connections,
            pool: Mutex::new(Pool::default()),
            dial_permits: Arc::new(Semaphore::new(MAX_CONCURRENT_DIALS)),
            stream_permits: Arc::new(Semaphore::new(MAX_INCOMING_STREAMS)),
            stream_handler: RwLock::new(None),
            blocked,
            inboxes,
            stats,
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let transport = Transport { inner };
        transport.spawn(transport.clone().accept_loop());
        transport.spawn(transport.clone().sweep_expired_keys());
        Ok(transport)
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The notices of peers whose certificate expired while connected (see [`expiry`]), for
    /// membership; `None` after the first call.
    pub fn take_expired(&self) -> Option<mpsc::Receiver<Expired>> {
        self.inner.expired_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Number of open connections in the pool, incoming and outgoing, including the second
    /// of a pair both sides dialled at once until it closes (metrics: `shoal_connections_open`).
    pub fn connection_count(&self) -> usize {
        self.lock().live.len()
    }

    /// UDP bytes (sent, received) over all connections since start, QUIC overhead included.
    pub fn udp_bytes(&self) -> (u64, u64) {
        let sealed = &self.inner.stats.sealed_udp_bytes;
        let sealed = (sealed.0.load(Ordering::Relaxed), sealed.1.load(Ordering::Relaxed));
        let pool = self.lock();
        let closed = (pool.closed_udp.0 + sealed.0, pool.closed_udp.1 + sealed.1);
        pool.live.values().fold(closed, |(tx, rx), (c, _)| {
            let s = c.stats();
            (tx + s.udp_tx.bytes, rx + s.udp_rx.bytes)
        })
    }

    /// Round-trip time to each peer, QUIC's own estimate: of the open connection, else of the
    /// last one to a peer reached by sealed datagrams since.
    pub fn links(&self) -> Vec<(PublicKey, Duration)> {
        let mut links: HashMap<PublicKey, Duration> = self.sealer().links().collect();
        for (k, pc) in &self.lock().conns {
            if pc.conn.close_reason().is_none() {
                links.insert(*k, pc.conn.rtt());
            }
        }
        links.into_iter().collect()
    }

    /// Peers whose last dial failed (or whose traffic is blocked) with no connection since,
    /// sorted by key; at most [`MAX_UNREACHABLE_TRACKED`].
    pub fn unreachable(&self) -> Vec<PublicKey> {
        self.lock().unreachable.keys()
    }

    /// Peers with a cached connection.
    pub fn connected_peers(&self) -> Vec<PeerInfo> {
        self.lock().conns.values().map(|p| p.info.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        // A panic while holding the pool lock would be a bug in this module; the data (a
        // cache) stays usable, so recover rather than cascade.
        self.inner.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns a task that ends when the transport is closed or aborted.
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Where datagrams on [`Channel::SyncProbe`] go (replication); until set, they are dropped.
    pub fn set_probe_inbox(&self, probes: mpsc::Sender<Inbound>) {
        let _ = self.inner.inboxes.probes.set(probes);
    }

    /// Installs the handler for incoming streams. Streams that arrive before it is installed
    /// are refused.
    pub fn set_stream_handler(&self, handler: Arc<dyn StreamHandler>) {
        if !self.inner.cancel.is_cancelled() {
            *self.inner.stream_handler.write().unwrap_or_else(|e| e.into_inner()) = Some(handler);
        }
    }

    /// Fault injection: drops all traffic to and from `peers` (datagrams both ways, new
    /// streams both ways, dials), replacing the previous set. Tests use it to partition a mesh.
    pub fn set_blocked(&self, peers: HashSet<PublicKey>) {
        *self.inner.blocked.write().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    fn is_blocked(&self, peer: &PublicKey) -> bool {
        self.inner
            .blocked
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }

    /// Opens a bidirectional stream to `key`, over the cached connection or a new one dialled
    /// at `target`'s address.
    pub async fn open_bi(
        &self,
        key: PublicKey,
        target: Option<Target>,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TransportError> {
        if self.is_blocked(&key) {
            return Err(TransportError::Blocked(key));
        }
        let cached = {
            let pool = self.lock();
            pool.conns.get(&key).and_then(|pc| {
                let stale =
                    pc.conn.close_reason().is_some() || target.is_some_and(|t| pc.info.generation < t.generation);
                (!stale).then(|| pc.conn.clone())
            })
        };
        let conn = match (cached, target) {
            (Some(c), _) => c,
            (None, Some(t)) => {
                self.connect(t.addr, Some(key)).await?;
                self.lock()
                    .conns
                    .get(&key)
                    .map(|pc| pc.conn.clone())
                    .ok_or(TransportError::NoRoute(key))?
            }
            (None, None) => return Err(TransportError::NoRoute(key)),
        };
        Ok(conn.open_bi().await?)
    }

    /// Sends a datagram on `channel` to `to` without waiting. Dials in the background when
    /// there is no usable connection; drops (and counts) the datagram when that is not possible.
    pub fn send(&self, to: Target, channel: Channel, payload: &[u8]) {
        let stats = &self.inner.stats;
        if self.is_blocked(&to.key) {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            self.lock().unreachable.failed(to.key);
            return;
        }
        let frame = frame::encode(channel, payload);
        if self.send_sealed(to, &frame) {
            return;
        }
        let mut pool = self.lock();
        if let Some(pc) = pool.conns.get(&to.key) {
            let stale = pc.info.generation < to.generation || pc.conn.close_reason().is_some();
            if stale {
                let old = pool.conns.remove(&to.key).expect("entry checked above");
                debug!(peer = %to.key.short(), "cached connection is closed or to an earlier run; redialling");
                old.conn.close(0u32.into(), b"stale");
            } else {
                let len = frame.len() as u64;
                match pc.conn.send_datagram(frame) {
                    Ok(()) => {
                        // A live connection: the link works (again, after a block was lifted).
                        pool.unreachable.reached(&to.key);
                        stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                        stats.datagram_bytes_sent.fetch_add(len, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
                        debug!(peer = %to.key.short(), error = %e, "datagram not sent");
                    }
                }
                return;
            }
        }
        if let Some(pending) = pool.dialing.get_mut(&to.key) {
            if pending.len() < MAX_PENDING_PER_DIAL {
                pending.push(frame);
            } else {
                stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if !self.start_dial(pool, to, Some(frame)) {
            stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Opens a connection to `to` in the background unless a session key for it is held or a
    /// connection is cached or being dialled, so that the first datagram for a new member does
    /// not wait for a handshake.
    pub fn warm(&self, to: Target) {
        if self.is_blocked(&to.key) || self.sealer().has_key(&to.key, to.generation) {
            return;
        }
        let pool = self.lock();
        let usable = pool
            .conns
            .get(&to.key)
            .is_some_and(|pc| pc.info.generation >= to.generation && pc.conn.close_reason().is_none());
        if !usable && !pool.dialing.contains_key(&to.key) {
            self.start_dial(pool, to, None);
        }
    }

    /// Graceful close: lets queued datagrams (a leave announcement) go out, then closes every
    /// connection and waits briefly for peers to acknowledge.
    pub async fn close(&self) {
        let conns: Vec<quinn::Connection> = self.lock().conns.values().map(|p| p.conn.clone()).collect();
        let flushed = async {
            while conns.iter().any(|c| {
                c.close_reason().is_none()
                    && c.datagram_send_buffer_space() + DATAGRAM_BUFFER_SLACK < DATAGRAM_SEND_BUFFER
            }) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, flushed).await;
        self.inner.endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(CLOSE_IDLE_TIMEOUT, self.inner.endpoint.wait_idle()).await;
        self.abort();
        self.stopped().await;
        info!("transport closed");
    }

    /// Stops all transport tasks at once, without telling peers anything; for tests that
    /// simulate a crash and for aborting startup. [`Transport::stopped`] waits for them.
    pub fn abort(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner
            .stream_handler
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Completes once every transport task has ended (after `close` or `abort`).
    pub async fn stopped(&self) {
        self.inner.tracker.wait().await;
    }
}

/// The endpoint's server side: our current certificate, and the transport settings.
fn server_config(
    tls: &tls::TlsConfigs,
    transport_config: &Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TransportError> {
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(tls.server()?));
    server.transport_config(transport_config.clone());
    server.max_incoming(MAX_PENDING_HANDSHAKES);
    Ok(server)
}

fn peer_info(conn: &quinn::Connection, admission: &Admission) -> Result<PeerInfo, Refusal> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .ok_or_else(|| Refusal::Malformed("no peer certificate".into()))?;
    let cert = certs
        .first()
        .ok_or_else(|| Refusal::Malformed("empty certificate chain".into()))?;
    // The verifier admitted this certificate during the handshake; inspecting it again is
    // cheap and simpler than smuggling the result out of rustls.
    tls::inspect_peer(cert, admission, unix_now())
}
