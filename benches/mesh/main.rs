//! Mesh benchmark: shoal, HashiCorp Serf and Syncthing as separate processes on loopback,
//! started and measured by the same harness in the same run.
//!
//! For each N it measures, per tool where the tool has the feature: join convergence;
//! propagation of a small record (shoal: a signed file; Serf: a `serf event`) and of 1 MiB and
//! 10 MiB files (shoal, Syncthing); time until every survivor sees a `kill -9`ed member as
//! down; false "down" verdicts while one member is SIGSTOPped for 1–3 s and while loopback
//! drops 10 % of packets; healing of a partition (shoal); idle CPU, RSS and traffic per agent;
//! catch-up of a newcomer joining a
//! mesh that holds many records and 10 MB of files; the cost of change after a join (shoal
//! and Serf, see change.rs): CPU of all agents from the first spawn until the end of a settle
//! window, loopback traffic per agent in that window and in a later idle one, and in the later
//! one CPU, RSS, USS and open connections per agent. Then it prints one table per N with the
//! ratio shoal/peer.
//!
//! The whole run happens in a private network namespace when run as root: its loopback counts
//! only the mesh under test, and the loss rule (nftables, random drop) touches nothing else.
//!
//! Run: cargo bench --bench mesh
//! Env: SHOAL_MESH_NODES=10,30,50  SHOAL_MESH_TOOLS=shoal,serf,serf-local,syncthing,syncthing-scan
//!      SHOAL_MESH_ONLY=join,change,idle,small,files,kill,stop,loss,partition,catchup (default all)
//!      SHOAL_MESH_SETTLE_SECS=60  SHOAL_MESH_IDLE_SECS=20  SHOAL_MESH_REPS=20
//!        (idle waits SETTLE after join convergence, counted from convergence: after the
//!        change phase it waits only what is left, if anything)
//!      SHOAL_MESH_CHANGE_DELAY_SECS=5  SHOAL_MESH_CHANGE_WINDOW_SECS=30 (change: settle window,
//!        starts DELAY after join convergence; CPU to settle is counted until its end)
//!      SHOAL_MESH_LATER_AT_SECS=90  SHOAL_MESH_LATER_SECS=60 (change: later idle window, starts
//!        LATER_AT after join convergence; pushed back to the settle window's end if they overlap)
//!      SHOAL_MESH_FILE_REPS=10  SHOAL_MESH_KILLS=3  SHOAL_MESH_STOPS=1,2,3
//!      SHOAL_MESH_LOSS_SECS=60  SHOAL_MESH_LOSS_PERCENT=10  SHOAL_MESH_PARTITION_SECS=30
//!      SHOAL_MESH_CATCHUP_RECORDS=10000  SHOAL_MESH_CATCHUP_MIB=10
//!      SHOAL_MESH_SUSPECT_TIMEOUT=2500ms (shoal's [cluster] suspect_timeout; default: its own 2.5 s)
//!      SHOAL_MESH_BIN=path (another shoal build to run as the agents; default: a copy of this one's)
//!      SHOAL_MESH_VERBOSE=1 (progress of slow phases on stderr)
//!      SHOAL_MESH_SYNCTHING_JOIN_SECS=300 (Syncthing: limit of a simultaneous start; see syncthing.rs)

mod change;
mod common;
mod serf;
mod shoal_mesh;
mod syncthing;

use std::time::Duration;

use common::{Opts, Row, env_or};

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn main() {
    // Before any thread exists: unshare applies to the calling thread only.
    let private_net = std::env::var("SHOAL_MESH_HOST_NET").is_err() && common::enter_private_net();
    let sizes: Vec<usize> = list("SHOAL_MESH_NODES", "10,30,50")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let tools = list("SHOAL_MESH_TOOLS", "shoal,serf,serf-local,syncthing,syncthing-scan");
    let opts = Opts {
        settle: Duration::from_secs(env_or("SHOAL_MESH_SETTLE_SECS", 60)),
        idle_window: Duration::from_secs(env_or("SHOAL_MESH_IDLE_SECS", 20)),
        reps: env_or("SHOAL_MESH_REPS", 20) as usize,
        file_reps: env_or("SHOAL_MESH_FILE_REPS", 10) as usize,
        kills: env_or("SHOAL_MESH_KILLS", 3) as usize,
        stops: list("SHOAL_MESH_STOPS", "1,2,3")
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        loss_window: Duration::from_secs(env_or("SHOAL_MESH_LOSS_SECS", 60)),
        loss_percent: env_or("SHOAL_MESH_LOSS_PERCENT", 10) as u32,
        partition_window: Duration::from_secs(env_or("SHOAL_MESH_PARTITION_SECS", 30)),
        catchup_records: env_or("SHOAL_MESH_CATCHUP_RECORDS", 10_000) as usize,
        catchup_mib: env_or("SHOAL_MESH_CATCHUP_MIB", 10) as usize,
        change_delay: Duration::from_secs(env_or("SHOAL_MESH_CHANGE_DELAY_SECS", 5)),
        change_window: Duration::from_secs(env_or("SHOAL_MESH_CHANGE_WINDOW_SECS", 30)),
        later_at: Duration::from_secs(env_or("SHOAL_MESH_LATER_AT_SECS", 90)),
        later_window: Duration::from_secs(env_or("SHOAL_MESH_LATER_SECS", 60)),
        private_net,
        only: list("SHOAL_MESH_ONLY", ""),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut rows: Vec<Row> = Vec::new();
    for &n in &sizes {
        for tool in &tools {
            let before = rows.len();
            match tool.as_str() {
                "shoal" => shoal_mesh::bench(n, &opts, &rt, &mut rows),
                "serf" => serf::bench(n, &opts, &rt, &mut rows, serf::Profile::Lan),
                "serf-local" => serf::bench(n, &opts, &rt, &mut rows, serf::Profile::Local),
                "syncthing" => syncthing::bench(n, &opts, &rt, &mut rows, syncthing::Trigger::Watcher),
                "syncthing-scan" => syncthing::bench(n, &opts, &rt, &mut rows, syncthing::Trigger::Scan),
                other => eprintln!("mesh bench: unknown tool {other}"),
            }
            if rows.len() == before {
                eprintln!("mesh bench: {tool} reported nothing at N={n}");
            }
        }
        print_table(n, &rows, &tools);
    }
    println!("\n# All tables");
    for &n in &sizes {
        print_table(n, &rows, &tools);
    }
}

/// One markdown table: a line per measure, a column per tool, then shoal/peer ratios.
fn print_table(n: usize, rows: &[Row], tools: &[String]) {
    let here: Vec<&Row> = rows.iter().filter(|r| r.n == n).collect();
    let mut measures: Vec<&str> = Vec::new();
    for r in &here {
        if !measures.contains(&r.measure.as_str()) {
            measures.push(&r.measure);
        }
    }
    let names: Vec<String> = tools.iter().map(|t| tool_name(t)).collect();
    let peers: Vec<&String> = names.iter().filter(|t| *t != "shoal").collect();
    println!("\n### N = {n}\n");
    let mut head = String::from("| measure |");
    for t in &names {
        head.push_str(&format!(" {t} |"));
    }
    for p in &peers {
        head.push_str(&format!(" shoal / {p} |"));
    }
    println!("{head}");
    println!("|{}", " --- |".repeat(1 + names.len() + peers.len()));
    let find = |m: &str, t: &str| here.iter().find(|r| r.measure == m && r.tool == t).copied();
    for m in measures {
        let mut line = format!("| {m} |");
        for t in &names {
            match find(m, t) {
                Some(r) => line.push_str(&format!(" {} |", fmt(r))),
                None => line.push_str(" |"),
            }
        }
        let ours = find(m, "shoal");
        for p in &peers {
            match (ours, find(m, p)) {
                (Some(a), Some(b)) if b.value > 0.0 => {
                    // Against a lower bound of the peer's, the ratio is an upper bound.
                    let bound = if b.unit == common::AT_LEAST_MS { "< " } else { "" };
                    line.push_str(&format!(" {bound}{:.2} |", a.value / b.value))
                }
                _ => line.push_str(" |"),
            }
        }
        println!("{line}");
    }
}

/// The column name of a tool selector.
pub fn tool_name(selector: &str) -> String {
    match selector {
        "serf" => "serf".into(),
        "serf-local" => "serf (local profile)".into(),
        "syncthing" => "syncthing".into(),
        "syncthing-scan" => "syncthing (scan on write)".into(),
        other => other.into(),
    }
}

fn fmt(r: &Row) -> String {
    match r.unit {
        common::AT_LEAST_MS => format!("> {:.0} s", r.value / 1000.0),
        "ms" if r.value >= 1000.0 => format!("{:.2} s", r.value / 1000.0),
        "ms" => format!("{:.0} ms", r.value),
        "%" => format!("{:.2} %", r.value),
        "MiB" => format!("{:.1} MiB", r.value),
        "s" => format!("{:.2} s", r.value),
        "B/s" => format!("{:.0} B/s", r.value),
        u => format!("{} {u}", r.value),
    }
}
