//! shoal scenarios where a mesh or a member comes back: a partition heals, a newcomer catches
//! up. A child of `shoal_mesh` so it drives the same [`Mesh`] without widening its API.

use std::time::{Duration, Instant};

use super::{Mesh, PARTITION_RECORDS, TOOL};
use crate::common::{self, Opts, Row};

/// Splits the mesh in two halves (even and odd agents, so each side keeps one seed) until each
/// side lists the other as down, writes records and a 1 MiB file on both sides, holds the split
/// for `partition_window`, heals it: time until every agent lists all `n` alive again, and until
/// every agent holds everything written on both sides.
pub(super) async fn partition(mesh: &Mesh, n: usize, opts: &Opts, out: &mut Vec<Row>) {
    let side = |even: bool| -> Vec<usize> { (0..n).filter(|i| (i % 2 == 0) == even).collect() };
    let (a, b) = (side(true), side(false));
    let ports = |s: &[usize]| -> Vec<u16> { s.iter().map(|&i| mesh.agents[i].cluster).collect() };
    let base = mesh.holdings(&mesh.agents[0]).await;
    let t_split = Instant::now();
    common::set_partition(&ports(&a), &ports(&b));
    // Each side must have declared the other down, or the heal measures nothing.
    let split = loop {
        let counts = futures_util::future::join_all(mesh.agents.iter().map(|x| mesh.alive(x))).await;
        if counts
            .iter()
            .enumerate()
            .all(|(i, c)| *c == if i % 2 == 0 { a.len() } else { b.len() })
        {
            break t_split.elapsed();
        }
        if t_split.elapsed() > Duration::from_secs(120) {
            common::set_partition(&[], &[]);
            eprintln!("N={n} shoal: the two sides never declared each other down; no partition figures");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "N={n} shoal: partition: both sides list only themselves {:.1} s after the split",
        split.as_secs_f64()
    );
    let mut added = (0u64, 0u64);
    for (label, members) in [("a", &a), ("b", &b)] {
        for i in 0..PARTITION_RECORDS {
            let body = format!("written on side {label} during the partition: {i}").into_bytes();
            added.1 += body.len() as u64;
            mesh.upload(members[i % members.len()], &format!("part-{label}-{i}"), body)
                .await;
        }
        let big: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
        added.1 += big.len() as u64;
        mesh.upload(members[0], &format!("part-{label}-big"), big).await;
        added.0 += PARTITION_RECORDS as u64 + 1;
    }
    tokio::time::sleep(opts.partition_window).await;
    let want = (base.0 + added.0, base.1 + added.1);
    let t0 = Instant::now();
    common::set_partition(&[], &[]);
    let (mut members_at, mut data_at) = (None, None);
    let mut shown = Duration::ZERO;
    while members_at.is_none() || data_at.is_none() {
        let counts = futures_util::future::join_all(mesh.agents.iter().map(|x| mesh.alive(x))).await;
        if members_at.is_none() && counts.iter().all(|c| *c == n) {
            members_at = Some(t0.elapsed());
        }
        let held = futures_util::future::join_all(mesh.agents.iter().map(|x| mesh.holdings(x))).await;
        let whole = held.iter().filter(|h| **h == want).count();
        if data_at.is_none() && whole == n {
            data_at = Some(t0.elapsed());
        }
        if t0.elapsed() >= shown {
            let fewest = counts.iter().min().copied().unwrap_or(0);
            let all = counts.iter().filter(|c| **c == n).count();
            println!(
                "N={n} shoal:   heal +{:.0} s: {all} agents list all alive (fewest {fewest}), {whole} hold everything",
                t0.elapsed().as_secs_f64()
            );
            shown += Duration::from_secs(2);
            if std::env::var("SHOAL_MESH_VERBOSE").is_ok() {
                for (i, h) in held.iter().enumerate().filter(|(_, h)| **h != want) {
                    let m = mesh.metrics(&mesh.agents[i]).await;
                    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
                    println!(
                        "N={n} shoal:     n{i} holds {h:?} of {want:?}; rounds {} declined {} repaired {}",
                        get("shoal_anti_entropy_rounds_total"),
                        get("shoal_anti_entropy_declined_total"),
                        get("shoal_anti_entropy_repaired_items_total")
                    );
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "partition never healed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (members_at, data_at) = (members_at.unwrap_or_default(), data_at.unwrap_or_default());
    println!(
        "N={n} shoal: partition healed: every agent lists {n} alive after {:.2} s, holds both sides' writes after {:.2} s",
        members_at.as_secs_f64(),
        data_at.as_secs_f64()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    out.push(Row::new(
        n,
        "partition heal: all list all alive",
        TOOL,
        ms(members_at),
        "ms",
    ));
    out.push(Row::new(
        n,
        "partition heal: all hold both sides' writes",
        TOOL,
        ms(data_at),
        "ms",
    ));
}

/// A mesh of `n - 1` agents holding `catchup_records` small signed files and `catchup_mib`
/// files of 1 MiB; then a newcomer starts: time until it holds all of them.
pub(super) async fn catch_up(n: usize, opts: &Opts, out: &mut Vec<Row>) {
    let records = opts.catchup_records;
    let big = opts.catchup_mib;
    let mut names: Vec<String> = (0..records).map(|i| format!("r{i}")).collect();
    names.extend((0..big).map(|i| format!("c{i}")));
    let mut mesh = Mesh::start(n - 1, &names);
    mesh.converge(n - 1, Duration::from_secs(180))
        .await
        .expect("catch-up mesh did not converge");
    let t_load = Instant::now();
    let mut bytes = 0u64;
    // Uploads through every agent in turn, 32 at a time.
    let mut uploads = Vec::new();
    for i in 0..records {
        let body = format!("record {i}: {}", "x".repeat(64)).into_bytes();
        bytes += body.len() as u64;
        uploads.push((format!("r{i}"), body));
    }
    for i in 0..big {
        let body: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
        bytes += body.len() as u64;
        uploads.push((format!("c{i}"), body));
    }
    let total = uploads.len() as u64;
    for (k, chunk) in uploads.chunks(32).enumerate() {
        let origin = k % mesh.agents.len();
        futures_util::future::join_all(chunk.iter().map(|(name, body)| mesh.upload(origin, name, body.clone()))).await;
    }
    loop {
        let held = futures_util::future::join_all(mesh.agents.iter().map(|a| mesh.holdings(a))).await;
        if held.iter().all(|h| *h == (total, bytes)) {
            break;
        }
        assert!(
            t_load.elapsed() < Duration::from_secs(900),
            "catch-up mesh never held everything: {held:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "N={n} shoal: {} agents hold {total} files ({bytes} bytes) {:.1} s after the first upload",
        n - 1,
        t_load.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t0 = Instant::now();
    mesh.spawn(n - 1);
    let newcomer = mesh.agents.last().unwrap();
    let verbose = std::env::var("SHOAL_MESH_VERBOSE").is_ok();
    let mut shown = Duration::ZERO;
    loop {
        let held = mesh.holdings(newcomer).await;
        if held == (total, bytes) {
            break;
        }
        if verbose && t0.elapsed() >= shown {
            println!("N={n} shoal:   newcomer at {:?}: {held:?}", t0.elapsed());
            shown += Duration::from_millis(250);
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "newcomer never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = t0.elapsed();
    if verbose {
        for (name, v) in mesh.metrics(newcomer).await {
            if [
                "items",
                "sync",
                "rejected",
                "anti_entropy",
                "fetch",
                "transfer",
                "dropped",
            ]
            .iter()
            .any(|k| name.contains(k))
            {
                println!("N={n} shoal:   newcomer {name} {v}");
            }
        }
    }
    // Then until every file is written to its files directory (what Syncthing's figure is).
    let dir = newcomer.state.join("files");
    loop {
        let written = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0);
        if written as u64 == total {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "newcomer never wrote every file"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_disk = t0.elapsed();
    println!(
        "N={n} shoal: newcomer holds {total} files / {bytes} bytes {:.0} ms after its spawn, all written to disk at {:.0} ms",
        held.as_secs_f64() * 1e3,
        on_disk.as_secs_f64() * 1e3
    );
    out.push(Row::new(
        n,
        "newcomer catch-up (held and servable)",
        TOOL,
        held.as_secs_f64() * 1e3,
        "ms",
    ));
    out.push(Row::new(
        n,
        "newcomer catch-up",
        TOOL,
        on_disk.as_secs_f64() * 1e3,
        "ms",
    ));
}
