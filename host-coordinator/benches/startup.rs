//! Start-up benchmark: the whole `icn job run-local` process for a trivial job (echo.wasm), from
//! exec to exit, including opening the store, loading the key, admitting the module, running it and
//! committing its signed records. `cargo bench -p icn-mesh-coordinator --bench startup`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The repository root of the checkout this runs in: cargo names the package at run time; the path
/// compiled in names the checkout that built the binary, another one when checkouts share a target
/// directory (cargo reuses a build across checkout paths).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn main() {
    let root = root();
    let icn = env!("CARGO_BIN_EXE_icn");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let input = dir.path().join("in.txt");
    std::fs::write(&input, b"hello").expect("input");
    let runs = if std::env::args().any(|a| a == "--quick") { 10 } else { 50 };
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let start = Instant::now();
        let status = Command::new(icn)
            .args(["job", "run-local"])
            .arg(root.join("examples/specs/echo-ccl.json"))
            .arg("--module")
            .arg(root.join("examples/jobs/echo.wasm"))
            .arg("--input")
            .arg(&input)
            .arg("--data")
            .arg(&data)
            .arg("--json")
            .stdout(std::process::Stdio::null())
            .status()
            .expect("icn runs");
        let elapsed = start.elapsed();
        assert!(status.success());
        if i > 0 {
            // The first run creates the store and the key; it is reported separately.
            times.push(elapsed);
        } else {
            println!("first run (creates store and key): {elapsed:.2?}");
        }
    }
    times.sort();
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("\n`icn job run-local` of a trivial job, whole process, {runs} runs");
    println!("{:<10} {:>10}", "quantile", "ms");
    for (name, q) in [("min", 0.0), ("p50", 0.5), ("p90", 0.9), ("max", 1.0)] {
        println!("{name:<10} {:>10.2}", ms(pick(q)));
    }
}
