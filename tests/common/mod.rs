//! Shared test harness: a network that issues certificates, in-process agents on loopback
//! with OS-chosen ports, the real binary as a child process, and condition waits with
//! deadlines (never fixed sleeps).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use shoal::agent::{self, AgentHandle};
use shoal::config::{Config, HostPort};
use shoal::http::api;
use shoal::identity::{NodeCertificate, PublicKey, SecretKey, unix_now};
use shoal::membership::MemberState;
use shoal::replication::item::{ItemMeta, SignedItem};

pub mod raw;

/// Polls `cond` every 50 ms until it holds or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`wait_until`] for a condition that needs no `.await`.
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_until(timeout, what, || std::future::ready(cond())).await
}

/// File names every test node accepts, signed by [`TestNetwork::signer`] (and `alt_signer`).
pub const FILES: [&str; 4] = ["app.conf", "shared", "big.bin", "other"];

/// A network key that signs node certificates, and the keys allowed to sign files.
pub struct TestNetwork {
    pub key: SecretKey,
    pub signer: SecretKey,
    pub alt_signer: SecretKey,
    pub dir: tempfile::TempDir,
}

impl TestNetwork {
    pub fn new() -> Self {
        TestNetwork {
            key: SecretKey::generate(),
            signer: SecretKey::generate(),
            alt_signer: SecretKey::generate(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The network id items are signed for.
    pub fn network_id(&self) -> [u8; 32] {
        *self.key.public().as_bytes()
    }

    /// State directory for node `name`.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A test config for `name` with a fresh key and a certificate from this network, valid
    /// from `not_before` to `not_after` (Unix seconds).
    pub fn config_with_validity(&self, name: &str, not_before: u64, not_after: u64) -> Config {
        let state = self.state_dir(name);
        let key = match SecretKey::load(&state.join("node.key")) {
            Ok(k) => k,
            Err(_) => {
                let k = SecretKey::generate();
                k.save(&state.join("node.key"), false).unwrap();
                k
            }
        };
        let cert = NodeCertificate::issue(&self.key, key.public(), name, not_before, not_after).unwrap();
        let mut config = Config::for_test(&state);
        config.network.network_key = Some(self.key.public());
        config.network.certificate = Some(cert.to_base64());
        config.files = FILES
            .iter()
            .map(|f| (f.to_string(), vec![self.signer.public(), self.alt_signer.public()]))
            .collect();
        config
    }

    /// A test config for `name`, admitted for a day.
    pub fn config(&self, name: &str) -> Config {
        self.config_with_validity(name, unix_now() - 60, unix_now() + 86400)
    }
}

/// Makes `config` join through `seeds`.
pub fn bootstrap(config: &mut Config, seeds: &[SocketAddr]) {
    config.cluster.bootstrap = seeds
        .iter()
        .map(|a| HostPort {
            host: a.ip().to_string(),
            port: a.port(),
        })
        .collect();
}

/// Starts an in-process agent. A restart in the same process may find the previous run's
/// database lock still held for a moment after its shutdown returned (seen once in CI, not
/// yet explained: shutdown is meant to release the store before it returns), so the start is
/// retried on that error alone, for up to 5 s.
pub async fn start(config: Config) -> AgentHandle {
    let path = config.node.state_dir.join("shoal.toml");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match agent::start(config.clone(), &path).await {
            Ok(agent) => return agent,
            Err(e) if format!("{e:?}").contains("could not acquire lock") && tokio::time::Instant::now() < deadline => {
                eprintln!("store still locked by the previous run; retrying: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("agent starts: {e:?}"),
        }
    }
}

/// Number of alive members `agent` lists, itself included.
pub fn alive_count(agent: &AgentHandle) -> usize {
    agent.snapshot().counts().0
}

/// State of member `key` as `agent` sees it.
pub fn state_of(agent: &AgentHandle, key: &PublicKey) -> Option<MemberState> {
    agent
        .snapshot()
        .members
        .iter()
        .find(|m| m.id.key == *key)
        .map(|m| m.state)
}

/// GETs JSON from an agent's API.
pub async fn get_json<T: serde::de::DeserializeOwned>(http: SocketAddr, path: &str) -> reqwest::Result<T> {
    reqwest::Client::new()
        .get(format!("http://{http}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?
        .json()
        .await
}

/// `/api/members` of the agent at `http`.
pub async fn members(http: SocketAddr) -> Option<Vec<api::Member>> {
    get_json::<api::Members>(http, "/api/members")
        .await
        .ok()
        .map(|m| m.members)
}

/// Log lines captured for the whole test binary.
pub fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || CaptureWriter(writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

pub fn logs_text() -> String {
    String::from_utf8_lossy(&captured_logs().lock().unwrap()).into_owned()
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The `shoal` binary built for these tests.
pub fn shoal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// Runs `shoal args...` to completion; returns (exit code, stdout, stderr).
pub fn run_shoal(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(shoal_bin())
        .args(args)
        .env_remove("LOG_LEVEL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run shoal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback TCP port that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An agent running as a child process of the real binary.
pub struct AgentProcess {
    pub child: Child,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub http: SocketAddr,
}

impl AgentProcess {
    /// Starts `shoal agent --config <config_path>`; the config must listen on `http`.
    pub fn spawn(config_path: &Path, http: SocketAddr) -> AgentProcess {
        let log_path = config_path.with_extension(format!("{}.log", unix_now_nanos()));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(shoal_bin())
            .args(["agent", "--config"])
            .arg(config_path)
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn shoal agent");
        AgentProcess {
            child,
            config_path: config_path.to_path_buf(),
            log_path,
            http,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGKILL: no leave, no flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by number.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args([&format!("-{sig}"), &pid]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unix_now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// TOML for an agent process with fast test timings.
pub fn process_config_toml(
    state_dir: &Path,
    cluster_port: u16,
    http_port: u16,
    network_key: &PublicKey,
    certificate: &str,
    bootstrap: &[SocketAddr],
) -> String {
    let seeds: Vec<String> = bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[node]
state_dir = "{state}"

[cluster]
listen = "127.0.0.1:{cluster_port}"
bootstrap = [{seeds}]
probe_period = "500ms"
probe_timeout = "200ms"
suspect_timeout = "1500ms"
join_backoff_max = "2s"
idle_timeout = "30s"

[network]
network_key = "{network_key}"
certificate = "{certificate}"

[http]
listen = "127.0.0.1:{http_port}"
"#,
        state = state_dir.display(),
        seeds = seeds.join(", "),
    )
}

/// A signed file item for `name` with `body`, at `version`.
pub fn signed_file(network: [u8; 32], name: &str, body: &[u8], signer: &SecretKey, version: u64) -> SignedItem {
    SignedItem::sign(ItemMeta::file(network, name, body, signer.public(), version), signer)
}

/// A signed delete of `name` at `version`.
pub fn signed_delete(network: [u8; 32], name: &str, signer: &SecretKey, version: u64) -> SignedItem {
    SignedItem::sign(ItemMeta::file_delete(network, name, signer.public(), version), signer)
}

/// Sends an envelope to an agent; returns (status, JSON body).
pub async fn send_envelope(
    http: SocketAddr,
    method: reqwest::Method,
    name: &str,
    envelope: Vec<u8>,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .request(method, format!("http://{http}/api/files/{name}"))
        .header("content-type", shoal::files::envelope::CONTENT_TYPE)
        .body(envelope)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("agent reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Uploads `body` as `name` through `http`, signed by `signer`, at the next version.
pub async fn upload(
    http: SocketAddr,
    net: &TestNetwork,
    name: &str,
    body: &[u8],
    signer: &SecretKey,
) -> (u16, serde_json::Value) {
    let current = get_json::<api::FileInfo>(http, &format!("/api/files/{name}"))
        .await
        .map(|f| f.version)
        .unwrap_or(0);
    let version = shoal::replication::hlc::next(shoal::time::unix_ms(), current);
    let item = signed_file(net.network_id(), name, body, signer, version);
    send_envelope(
        http,
        reqwest::Method::PUT,
        name,
        shoal::files::envelope::encode(&item, body),
    )
    .await
}

/// Deletes `name` through `http`.
pub async fn delete(http: SocketAddr, net: &TestNetwork, name: &str, signer: &SecretKey) -> (u16, serde_json::Value) {
    let current = get_json::<api::FileInfo>(http, &format!("/api/files/{name}"))
        .await
        .map(|f| f.version)
        .unwrap_or(0);
    let version = shoal::replication::hlc::next(shoal::time::unix_ms(), current);
    let item = signed_delete(net.network_id(), name, signer, version);
    send_envelope(
        http,
        reqwest::Method::DELETE,
        name,
        shoal::files::envelope::encode(&item, &[]),
    )
    .await
}

/// The content of `name` as served by the agent at `http`, if it has one.
pub async fn content(http: SocketAddr, name: &str) -> Option<Vec<u8>> {
    let resp = reqwest::Client::new()
        .get(format!("http://{http}/api/files/{name}/content"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.bytes().await.ok().map(|b| b.to_vec())
}

/// Starts `n` agents joined through the first; waits until all see all.
pub async fn cluster(net: &TestNetwork, n: usize) -> Vec<AgentHandle> {
    cluster_with(net, n, |c| c).await
}

/// Like [`cluster`], with each node's config passed through `adjust` first.
pub async fn cluster_with(net: &TestNetwork, n: usize, adjust: impl Fn(Config) -> Config) -> Vec<AgentHandle> {
    let seed = start(adjust(net.config("n0"))).await;
    let mut agents = vec![];
    for i in 1..n {
        let mut c = adjust(net.config(&format!("n{i}")));
        bootstrap(&mut c, &[seed.cluster_addr]);
        agents.push(start(c).await);
    }
    agents.insert(0, seed);
    eventually(Duration::from_secs(20), "cluster formed", || {
        agents.iter().all(|a| alive_count(a) == n)
    })
    .await;
    agents
}
