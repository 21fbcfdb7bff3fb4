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

/// Asserts the bounds every run should meet (virtual time).
fn assert_bounds(r: &Report) {
    let within = |what: &str, v: Option<f64>, bound: f64| {
        let v = v.unwrap_or_else(|| panic!("{what}: never happened: {r:?}"));
        assert!(v <= bound, "{what}: {v} s, bound {bound} s: {r:?}");
    };
    // Starts are spread over 10 s; a member missed by every copy of a join update is found
    // through its node record (5 s grace after the record arrives).
    within("join", r.join_s, 60.0);
    within("record p99", r.record_p99_s, 1.0);
    // Probe period (1 s) + probe timeout (0.5 s) + suspicion (2.5 s × log10 N) + dissemination.
    within("detect p99", r.detect_p99_s, 12.0);
    within("heal", r.heal_s, 30.0);
    assert_eq!(r.false_down, 0, "down verdicts against running nodes: {r:?}");
}

/// A mesh of 50: the whole scenario in about 15 s of a test build (the simulator drives the
/// real membership core, and the shoal crate is not optimized in test builds; 1,000 nodes
/// take minutes even in a release build, see `a_thousand_nodes`).
#[test]
fn fifty_nodes_stay_within_bounds() {
    let r = report(50, 1);
    println!("{}", serde_json::to_string(&r).unwrap());
    assert_bounds(&r);
}

/// The full-size run. Ignored: it takes about 16 minutes with `--release` on a 2-core machine
/// (the issue asks for under 2 minutes in the suite). Seed 1 met these bounds at 779a60c
/// (BENCHMARKS.md, "Slow members, join discovery and log-N settings in the simulator"). Run it
/// with `cargo test --release --test sim -- --ignored`.
#[test]
#[ignore = "16 minutes long in a release build"]
fn a_thousand_nodes() {
    let r = report(1000, 1);
    println!("{}", serde_json::to_string(&r).unwrap());
    assert_bounds(&r);
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let a = serde_json::to_string(&report(8, 7)).unwrap();
    let b = serde_json::to_string(&report(8, 7)).unwrap();
    let c = serde_json::to_string(&report(8, 8)).unwrap();
    assert_eq!(a, b, "same seed, same run");
    assert_ne!(a, c, "another seed, another run");
}
