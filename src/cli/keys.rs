//! Offline commands: key generation, certificate signing, config checking.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use crate::config::Config;
use crate::identity::{NodeCertificate, PublicKey, SecretKey, unix_now};

/// Certificates start this far in the past, so a peer whose clock is slightly behind ours
/// accepts a fresh certificate.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(300);

/// Arguments of `shoal cert sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The network's secret key file (from `shoal network new`).
    #[arg(long, value_name = "PATH")]
    network_key: PathBuf,
    /// The node's public key, base64 (printed by `shoal keygen` and in the agent's log).
    #[arg(long, value_name = "PUB")]
    node: String,
    /// The node's name (1-63 characters from A-Z a-z 0-9 . _ -).
    #[arg(long)]
    name: String,
    /// How long the certificate is valid, e.g. 90d, 1y, 12h.
    #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
    valid_for: Duration,
    /// Also write the certificate to this file.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

/// `shoal keygen` and `shoal network new`.
pub fn keygen(out: &Path, force: bool, what: &str) -> i32 {
    let key = SecretKey::generate();
    if let Err(e) = key.save(out, force) {
        eprintln!("error: {e}");
        return 1;
    }
    println!("{}", key.public());
    if what == "network" {
        eprintln!(
            "wrote network key to {} (keep it offline). Put the line above in every node's [network] network_key,\n\
             and admit nodes with: shoal cert sign --network-key {} --node <NODE_PUBLIC_KEY> --name <NAME>",
            out.display(),
            out.display()
        );
    } else {
        eprintln!(
            "wrote secret key to {}; the line above is its public key",
            out.display()
        );
    }
    0
}

/// `shoal cert sign`.
pub fn sign(args: &SignArgs) -> i32 {
    let network = match SecretKey::load(&args.network_key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let node: PublicKey = match args.node.parse() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: --node: {e}");
            return 2;
        }
    };
    let not_before = unix_now().saturating_sub(CLOCK_SKEW_ALLOWANCE.as_secs());
    let not_after = unix_now().saturating_add(args.valid_for.as_secs());
    let cert = match NodeCertificate::issue(&network, node, &args.name, not_before, not_after) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let text = cert.to_base64();
    if let Some(out) = &args.out
        && let Err(e) = std::fs::write(out, format!("{text}\n"))
    {
        eprintln!("error: {}: {e}", out.display());
        return 1;
    }
    println!("{text}");
    eprintln!(
        "certificate for {} ({}) on network {}, valid until {}",
        args.name,
        node,
        network.public(),
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(not_after))
    );
    0
}

/// `shoal config check`.
pub fn config_check(path: &Path) -> i32 {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let cert = match config.certificate(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut warnings = Vec::new();
    if let Some(c) = &cert {
        let now = unix_now();
        if now > c.not_after {
            warnings.push("the node certificate has expired".to_string());
        }
        if let Ok(key) = SecretKey::load(&config.key_file())
            && key.public() != c.node_key
        {
            eprintln!(
                "error: {}: network.certificate is for node key {}, but {} holds {}",
                path.display(),
                c.node_key,
                config.key_file().display(),
                key.public()
            );
            return 2;
        }
    }
    println!("{}: ok", path.display());
    println!("  state_dir: {}", config.node.state_dir.display());
    println!(
        "  cluster:   {} ({} bootstrap nodes)",
        config.cluster.listen,
        config.cluster.bootstrap.len()
    );
    println!("  http:      {}", config.http.listen);
    if !config.http.allowed_hosts.is_empty() {
        let hosts: Vec<String> = config.http.allowed_hosts.iter().map(|h| h.to_string()).collect();
        println!("  hosts:     loopback, the listen address, {}", hosts.join(", "));
    }
    if let Some(file) = &config.http.token_file {
        println!("  token:     {} (needed for changes)", file.display());
    }
    warnings.extend(crate::config::http::exposure_warning(&config.http));
    let admission = match (config.network.network_key, config.network.trusted_nodes.len()) {
        (Some(k), 0) => format!("network {k}"),
        (Some(k), n) => format!("network {k} and {n} trusted keys"),
        (None, n) => format!("{n} trusted keys"),
    };
    println!("  admission: {admission}");
    for w in warnings {
        println!("  warning:   {w}");
    }
    0
}
