//! Lays out the `shoal` binary's code so that the functions an agent runs sit together.
//!
//! An agent executes about a third of the binary's 8.8 MB of code, spread across all of it.
//! The kernel maps file pages around every page fault (64 KiB windows), so an agent ended up
//! with nearly the whole binary resident. `build/symbol-order.txt` lists the functions agents
//! ran under the mesh benchmark (see `contrib/symbol-order.py`); the linker places them first,
//! so they fill about 3 MB of contiguous pages and the rest stays on disk until needed. A
//! stale or partial list only loses part of the benefit: symbols it names that no longer exist
//! are ignored, and functions it misses are laid out as before.
//!
//! The option belongs to LLD (Rust's default linker on x86-64 Linux since 1.90) and mold;
//! GNU ld refuses it. So the script links an empty program with it first and passes it on
//! only if that worked. `SHOAL_NO_SYMBOL_ORDER=1` turns it off.

use std::path::{Path, PathBuf};
use std::process::Command;

const ORDER_FILE: &str = "build/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SHOAL_NO_SYMBOL_ORDER");
    if std::env::var_os("SHOAL_NO_SYMBOL_ORDER").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let order = manifest.join(ORDER_FILE);
    if !order.is_file() {
        return;
    }
    let args = [
        format!("-Wl,--symbol-ordering-file={}", order.display()),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if linker_accepts(&args) {
        for arg in &args {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    } else {
        println!("cargo:warning=linker does not take --symbol-ordering-file; code layout left as is");
    }
}

/// Whether an empty program links with `args`, using the compiler, target, linker and flags
/// this build uses.
fn linker_accepts(args: &[String]) -> bool {
    let (Some(rustc), Some(out)) = (std::env::var_os("RUSTC"), std::env::var_os("OUT_DIR")) else {
        return false;
    };
    let out = Path::new(&out);
    let src = out.join("probe.rs");
    if std::fs::write(&src, "fn main() {}\n").is_err() {
        return false;
    }
    let mut cmd = Command::new(rustc);
    cmd.arg(&src)
        .arg("-o")
        .arg(out.join("probe"))
        .args(["--crate-type", "bin"]);
    if let Ok(target) = std::env::var("TARGET") {
        cmd.args(["--target", &target]);
    }
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        cmd.arg("-C").arg({
            let mut a = std::ffi::OsString::from("linker=");
            a.push(linker);
            a
        });
    }
    if let Ok(flags) = std::env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    for arg in args {
        cmd.arg("-C").arg(format!("link-arg={arg}"));
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}
