//! The mesh simulator (`shoal::sim`) at a chosen size:
//! `cargo bench --bench sim -- --nodes N --seed S [--json]`.
//!
//! Every figure is virtual time or bytes, so the output depends only on the arguments. With
//! `--json`, stdout holds exactly one JSON object; progress and diagnostics go to stderr.
//! Unknown flags (cargo passes `--bench`) are ignored.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal::sim::{Options, run};

/// Counts live heap bytes, so the scenario can measure what one node's view costs.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            LIVE.fetch_add(new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let mut nodes = 100usize;
    let mut seed = 1u64;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => {
                nodes = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--nodes takes a number")
            }
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).expect("--seed takes a number"),
            "--json" => json = true,
            _ => {}
        }
    }
    let heap = || LIVE.load(Ordering::Relaxed);
    let (report, diag) = run(&Options {
        nodes,
        seed,
        heap: Some(&heap),
        verbose: true,
    });
    eprintln!("diagnostics: {diag:?}");
    if json {
        println!("{}", serde_json::to_string(&report).expect("report serializes"));
        return;
    }
    let opt = |v: Option<f64>| v.map_or("never (limit reached)".to_string(), |s| format!("{s:.3} s"));
    println!("shoal mesh simulation: {} nodes, seed {}", report.nodes, report.seed);
    println!("  join (all see all alive)       {}", opt(report.join_s));
    println!(
        "  record latency p50 / p99       {} / {}  (per record and node)",
        opt(report.record_p50_s),
        opt(report.record_p99_s)
    );
    println!(
        "  crash detection p50 / p99      {} / {}  (per crash and observer)",
        opt(report.detect_p50_s),
        opt(report.detect_p99_s)
    );
    println!(
        "  false down verdicts            {}  (5 % slow nodes, 5 % loss, 180 s)",
        report.false_down
    );
    println!(
        "  partition heal                 {}  (one view, same items)",
        opt(report.heal_s)
    );
    println!(
        "  idle traffic                   {} B/node/s",
        report.idle_bytes_per_node_s
    );
    println!(
        "  one join costs                 {} B/node",
        report.churn_bytes_per_node
    );
    match report.member_bytes {
        Some(b) => println!("  one node's state per member    {b} B (heap freed when a node is dropped)"),
        None => println!("  one node's state per member    not measured"),
    }
}
