//! The `shoal` command line. Every command returns an exit status: 0 success, 1 runtime
//! failure, 2 bad configuration or usage.

mod client;
mod demo;
mod files;
mod keys;
mod mesh;
mod schedules;
mod table;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::agent;
use crate::config::{Config, DEFAULT_CONFIG_PATH};

/// Default URL of the local agent's HTTP API.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7331";

/// shoal: peer-to-peer agent for fleets of machines.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
pub struct Cli {
    /// Log level or filter (e.g. debug, info, shoal=debug). Default: $LOG_LEVEL, $RUST_LOG, info.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent daemon.
    Agent {
        /// Config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Start N agents on loopback with fresh keys and print their URLs; Ctrl-C stops them.
    Demo {
        /// Number of agents.
        #[arg(long, short, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=64))]
        nodes: u16,
    },
    /// Create an Ed25519 key file (mode 0600) and print its public key.
    Keygen {
        /// Where to write the key.
        #[arg(long, short, default_value = "shoal.key")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Network keys.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Node admission certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Show the local agent's status.
    Status(client::ClientArgs),
    /// List cluster members as the local agent sees them.
    Members(client::ClientArgs),
    /// Every node's health: status, version, uptime, load, memory, disk, checks; or one node's.
    Nodes(mesh::NodesArgs),
    /// Recent events (joins, failures, recoveries, checks); --follow to watch them live.
    Events(mesh::EventsArgs),
    /// Every node's backup schedules, grouped by node.
    Schedules(client::ClientArgs),
    /// Run a local schedule now.
    Run(schedules::RunArgs),
    /// Jobs (runs of schedules): this node's history and other nodes' latest.
    Jobs(schedules::JobsArgs),
    /// One job: its output or its details.
    Job {
        #[command(subcommand)]
        command: schedules::JobCommand,
    },
    /// Replicated files: upload (signed), delete, list, read.
    File {
        #[command(subcommand)]
        command: files::FileCommand,
    },
    /// Print the systemd unit (Type=notify, watchdog, hardening) to install.
    SystemdUnit,
    /// Print shell completions: bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `shoal man > /usr/share/man/man1/shoal.1`.
    Man,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// Create a network key; its public key is the network id (`[network] network_key`).
    New {
        /// Where to write the network secret key.
        #[arg(long, short, default_value = "network.key")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Sign a certificate admitting a node key to the network; prints it in base64.
    Sign(keys::SignArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and validate a config file; exit 2 with the problem if it is wrong.
    Check {
        /// Config file.
        #[arg(default_value = DEFAULT_CONFIG_PATH)]
        path: PathBuf,
    },
}

/// Entry point of the binary; returns the exit status.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> i32 {
    match command {
        Command::Agent { config } => run_agent(config).await,
        Command::Demo { nodes } => demo::run(nodes as usize).await,
        Command::Keygen { out, force } => keys::keygen(&out, force, "node"),
        Command::Network {
            command: NetworkCommand::New { out, force },
        } => keys::keygen(&out, force, "network"),
        Command::Cert {
            command: CertCommand::Sign(args),
        } => keys::sign(&args),
        Command::Status(args) => client::status(&args).await,
        Command::Members(args) => client::members(&args).await,
        Command::Nodes(args) => mesh::nodes(&args).await,
        Command::Events(args) => mesh::events(&args).await,
        Command::File { command } => files::run(command).await,
        Command::Schedules(args) => schedules::schedules(&args).await,
        Command::Run(args) => schedules::run(&args).await,
        Command::Jobs(args) => schedules::jobs(&args).await,
        Command::Job { command } => schedules::job(&command).await,
        Command::Config {
            command: ConfigCommand::Check { path },
        } => keys::config_check(&path),
        Command::SystemdUnit => {
            print!("{}", crate::systemd::UNIT);
            0
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "shoal", &mut std::io::stdout());
            0
        }
        Command::Man => {
            use clap::CommandFactory;
            match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }
    }
}

async fn run_agent(path: PathBuf) -> i32 {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    match agent::run(config, &path, shutdown_signal()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Completes on the first SIGTERM or SIGINT; a second one exits the process at once.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("second signal: exiting without a clean shutdown");
        std::process::exit(130);
    });
}

/// Log filter precedence: `--log-level`, then `LOG_LEVEL`, then `RUST_LOG`, then `info`.
/// Accepts meshmon/data-mesher style names (INFO, warning, fatal) and `RUST_LOG`'s
/// `target=level` lists (`info,shoal::membership=debug`). Span and field filters are not
/// supported: the filter that parses them brings a regex engine into every agent process
/// (about 0.4 MB of code) for a feature a fleet agent's operators rarely use.
fn init_logging(flag: Option<&str>) {
    let spec = flag
        .map(str::to_string)
        .or_else(|| std::env::var("LOG_LEVEL").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "info".to_string());
    let filter = log_filter(&spec).unwrap_or_else(|e| {
        eprintln!("warning: invalid log level {spec:?} ({e}); using info");
        Targets::new().with_default(tracing::Level::INFO)
    });
    let _ = log_subscriber(filter, std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init();
}

/// Parses a log level or filter list.
fn log_filter(spec: &str) -> Result<Targets, tracing_subscriber::filter::ParseError> {
    match spec.to_ascii_lowercase().as_str() {
        "warning" => "warn".parse(),
        "fatal" | "critical" => "error".parse(),
        s if ["trace", "debug", "info", "warn", "error", "off"].contains(&s) => s.parse(),
        _ => spec.parse(),
    }
}

/// Lines to stderr, filtered by `filter`. The filter is the formatting layer's own, so the
/// subscriber's maximum level is the filter's: below it, `tracing` and `log` macros (quinn and
/// rustls log per packet) return before building an event. A filter layered over an
/// unfiltered subscriber would leave the maximum at TRACE.
fn log_subscriber(filter: Targets, ansi: bool) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_filter(filter),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    fn max_level(spec: &str) -> Option<LevelFilter> {
        tracing::Subscriber::max_level_hint(&log_subscriber(log_filter(spec).unwrap(), false))
    }

    #[test]
    fn the_subscriber_goes_no_lower_than_its_filter() {
        assert_eq!(max_level("warn"), Some(LevelFilter::WARN));
        assert_eq!(max_level("WARNING"), Some(LevelFilter::WARN));
        assert_eq!(max_level("fatal"), Some(LevelFilter::ERROR));
        assert_eq!(max_level("info"), Some(LevelFilter::INFO));
        assert_eq!(max_level("warn,shoal::membership=debug"), Some(LevelFilter::DEBUG));
        assert_eq!(max_level("off"), Some(LevelFilter::OFF));
        assert!(log_filter("shoal=loud").is_err());
    }
}
