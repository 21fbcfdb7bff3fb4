//! `shoal file ...`: sign and upload, delete, list and read replicated files.

use std::path::{Path, PathBuf};

use base64::Engine;
use clap::Subcommand;

use super::client::{self, ClientArgs, call, print_json};
use super::table::render;
use crate::files::{envelope, validate_file_name};
use crate::http::api;
use crate::identity::SecretKey;
use crate::replication::hlc;
use crate::replication::item::{ItemMeta, SignedItem};

/// File commands.
#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Sign FILE with your key and upload it; the mesh replicates it to every node.
    Update {
        /// The file to upload.
        file: PathBuf,
        /// Name in the mesh (must be listed in [files]). Default: FILE's base name.
        #[arg(long)]
        name: Option<String>,
        /// Your Ed25519 secret key (one of the keys listed for the name).
        #[arg(long, value_name = "KEY")]
        key_path: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Sign and replicate the deletion of a file.
    Delete {
        /// Name in the mesh.
        name: String,
        /// Your Ed25519 secret key.
        #[arg(long, value_name = "KEY")]
        key_path: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List replicated files.
    List {
        /// Include deleted files.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a file's content (or write it with --out).
    Get {
        /// Name in the mesh.
        name: String,
        /// Write to this path instead of standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a file command.
pub async fn run(cmd: FileCommand) -> i32 {
    let result = match cmd {
        FileCommand::Update {
            file,
            name,
            key_path,
            client,
        } => update(&file, name, &key_path, &client).await,
        FileCommand::Delete { name, key_path, client } => delete(&name, &key_path, &client).await,
        FileCommand::List { all, client } => list(all, &client).await,
        FileCommand::Get { name, out, client } => get(&name, out.as_deref(), &client).await,
    };
    match result {
        Ok(()) => 0,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            2
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {e}");
            1
        }
    }
}

enum Failure {
    Usage(String),
    Runtime(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Failure {
        Failure::Runtime(s)
    }
}

/// What a signed item for `name` needs from the agent: the network id and the version to beat.
async fn prepare(name: &str, key_path: &Path, args: &ClientArgs) -> Result<(SecretKey, [u8; 32], u64), Failure> {
    validate_file_name(name).map_err(|e| Failure::Usage(e.to_string()))?;
    let key = SecretKey::load(key_path).map_err(|e| Failure::Usage(e.to_string()))?;
    let (health, _): (api::Health, _) = client::get(args, "/api/health").await?;
    let network: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(&health.network_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Failure::Runtime("the agent reported an invalid network id".into()))?;
    let reply = call(args, reqwest::Method::GET, &format!("/api/files/{name}"), None).await?;
    let current = if reply.status.is_success() {
        serde_json::from_slice::<api::FileInfo>(&reply.bytes)
            .map_err(|e| e.to_string())?
            .version
    } else if reply.reason().as_deref() == Some("unknown_file") {
        return Err(Failure::Runtime(format!(
            "{name} is not configured in [files] on the agent"
        )));
    } else if reply.status == reqwest::StatusCode::NOT_FOUND {
        0
    } else {
        return Err(Failure::Runtime(reply.error()));
    };
    Ok((key, network, hlc::next(crate::time::unix_ms(), current)))
}

async fn send(
    name: &str,
    method: reqwest::Method,
    item: &SignedItem,
    body: &[u8],
    args: &ClientArgs,
) -> Result<api::FileInfo, Failure> {
    let reply = call(
        args,
        method,
        &format!("/api/files/{name}"),
        Some((envelope::encode(item, body), envelope::CONTENT_TYPE)),
    )
    .await?;
    if !reply.status.is_success() {
        return Err(Failure::Runtime(format!("{name}: {}", reply.error())));
    }
    let json = reply.json()?;
    if args.json {
        print_json(&json);
    }
    serde_json::from_value(json).map_err(|e| Failure::Runtime(e.to_string()))
}

async fn update(file: &Path, name: Option<String>, key_path: &Path, args: &ClientArgs) -> Result<(), Failure> {
    let name = match name {
        Some(n) => n,
        None => file
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| Failure::Usage(format!("{}: cannot derive a name; pass --name", file.display())))?,
    };
    let body = std::fs::read(file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let (key, network, version) = prepare(&name, key_path, args).await?;
    let meta = ItemMeta::file(network, &name, &body, key.public(), version);
    let info = send(&name, reqwest::Method::PUT, &SignedItem::sign(meta, &key), &body, args).await?;
    if !args.json {
        println!(
            "{}: version {} ({} bytes, blake3 {}) uploaded",
            info.name,
            info.version,
            info.size,
            &info.hash[..16]
        );
    }
    Ok(())
}

async fn delete(name: &str, key_path: &Path, args: &ClientArgs) -> Result<(), Failure> {
    let (key, network, version) = prepare(name, key_path, args).await?;
    let meta = ItemMeta::file_delete(network, name, key.public(), version);
    let info = send(name, reqwest::Method::DELETE, &SignedItem::sign(meta, &key), &[], args).await?;
    if !args.json {
        println!("{}: deleted (version {})", info.name, info.version);
    }
    Ok(())
}

async fn list(all: bool, args: &ClientArgs) -> Result<(), Failure> {
    let (list, raw): (api::FileList, _) = client::get(args, "/api/files").await?;
    if args.json {
        print_json(&raw);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .files
        .iter()
        .filter(|f| all || !f.deleted)
        .map(|f| {
            vec![
                f.name.clone(),
                if f.deleted {
                    "deleted".into()
                } else {
                    f.size.to_string()
                },
                f.updated.clone(),
                f.signer.short(),
                f.hash[..16].to_string(),
            ]
        })
        .collect();
    println!("{}", render(&["NAME", "SIZE", "UPDATED", "SIGNER", "BLAKE3"], &rows));
    Ok(())
}

async fn get(name: &str, out: Option<&Path>, args: &ClientArgs) -> Result<(), Failure> {
    let reply = call(args, reqwest::Method::GET, &format!("/api/files/{name}/content"), None).await?;
    if !reply.status.is_success() {
        return Err(Failure::Runtime(format!("{name}: {}", reply.error())));
    }
    match out {
        Some(path) => {
            std::fs::write(path, &reply.bytes).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?
        }
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(&reply.bytes)
                .map_err(|e| Failure::Runtime(e.to_string()))?;
        }
    }
    Ok(())
}
