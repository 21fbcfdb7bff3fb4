//! The mesh simulator (`shoal::sim`) as a test: the scenario's figures stay within bounds,
//! and a run is a function of its node count and seed.

use shoal::sim::{Options, Report, run};

fn report(nodes: usize, seed: u64) -> Report {
    run(&Options {
        nodes,
        seed,
        heap: None,
        verbose: false,
    })
    .0
}

/// Nodes in the bounded run. The simulator drives the real membership core, whose every input
/// walks the whole member list, and the shoal crate itself is not optimized in test builds:
/// 1,000 nodes take minutes there, so debug builds run a smaller mesh. `cargo test --release
/// --test sim` runs the full 1,000.
const NODES: usize = if cfg!(debug_assertions) { 50 } else { 1000 };

#[test]
fn a_mesh_stays_within_its_bounds() {
    let r = report(NODES, 1);
    println!("{}", serde_json::to_string(&r).unwrap());
    let within = |what: &str, v: Option<f64>, bound: f64| {
        let v = v.unwrap_or_else(|| panic!("{what}: never happened"));
        assert!(v <= bound, "{what}: {v} s, bound {bound} s");
    };
    // Starts are spread over 10 s; a burst join leaves a few pairs of members unaware of
    // each other until the periodic announce (every 30 s) finds them.
    within("join", r.join_s, 240.0);
    within("record p99", r.record_p99_s, 1.0);
    // Probe period (1 s) + probe timeout (0.5 s) + suspicion (2.5 s) + dissemination.
    within("detect p99", r.detect_p99_s, 12.0);
    within("heal", r.heal_s, 60.0);
    assert_eq!(r.false_down, 0, "down verdicts against running nodes: {r:?}");
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let a = serde_json::to_string(&report(8, 7)).unwrap();
    let b = serde_json::to_string(&report(8, 7)).unwrap();
    let c = serde_json::to_string(&report(8, 8)).unwrap();
    assert_eq!(a, b, "same seed, same run");
    assert_ne!(a, c, "another seed, another run");
}
