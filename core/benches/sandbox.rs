//! Sandbox benchmarks, printed as a table: `cargo bench -p icn-mesh-core --bench sandbox`.
//!
//! Wall time on these machines varies up to 2× between runs, so every ratio here compares baseline
//! and candidate *interleaved in one run* (A, B, A, B, …) and takes medians.
//!
//! 1. Sandbox overhead: `Sandbox::execute` (ABI, fuel slices, limiter) vs bare wasmi 2 with fuel on,
//!    same module, same engine config, on the sieve (CPU-bound) and sha256 of 16 MiB (I/O-bound).
//! 2. wasmi vs native: the same C compiled with gcc -O2 against a native shim.
//! 3. Host call: `icn.input_len` in the sandbox vs a raw wasmi host function returning a constant.
//! 4. Cold start of a 1 MiB module: admit + instantiate + trivial call vs raw compile + instantiate.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use icn_mesh_core::sandbox::{Control, ExecStatus, Sandbox, SandboxLimits};
use wasmi::{Caller, CompilationMode, Config, EnforcedLimits, Engine, Linker, Memory, Module, Store};

/// The repository root of the checkout this runs in: cargo names the package at run time; the path
/// compiled in names the checkout that built the binary, another one when checkouts share a target
/// directory (cargo reuses a build across checkout paths).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The bare-wasmi side: the same five functions, no slicing, no limiter, no caps.
struct Raw {
    memory: Option<Memory>,
    input: Arc<[u8]>,
    output: Vec<u8>,
}

fn raw_engine() -> Engine {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager)
        .enforced_limits(EnforcedLimits::strict());
    Engine::new(&config)
}

fn raw_linker(engine: &Engine) -> Linker<Raw> {
    let mut l = Linker::new(engine);
    l.func_wrap("icn", "input_len", |c: Caller<'_, Raw>| c.data().input.len() as i32).expect("def");
    l.func_wrap("icn", "get_input", |mut c: Caller<'_, Raw>, dst: i32, off: i32, len: i32| -> i32 {
        let memory = c.data().memory.expect("memory");
        let (mem, state) = memory.data_and_store_mut(&mut c);
        let off = off as usize;
        let n = (len as usize).min(state.input.len().saturating_sub(off));
        mem[dst as usize..dst as usize + n].copy_from_slice(&state.input[off..off + n]);
        n as i32
    })
    .expect("def");
    l.func_wrap("icn", "put_output", |mut c: Caller<'_, Raw>, src: i32, len: i32| -> i32 {
        let memory = c.data().memory.expect("memory");
        let (mem, state) = memory.data_and_store_mut(&mut c);
        state.output.extend_from_slice(&mem[src as usize..src as usize + len as usize]);
        0
    })
    .expect("def");
    l.func_wrap("icn", "log", |_: Caller<'_, Raw>, _: i32, _: i32, _: i32| {}).expect("def");
    l.func_wrap("icn", "progress", |_: Caller<'_, Raw>, _: i32| {}).expect("def");
    l
}

/// Bare wasmi: one call with all the fuel (`slice: None`), or the minimal resume loop that refuels
/// every `slice` — what slicing costs in wasmi itself, before the sandbox adds anything.
fn raw_run(
    engine: &Engine,
    linker: &Linker<Raw>,
    module: &Module,
    input: &Arc<[u8]>,
    slice: Option<u64>,
) -> (Duration, Vec<u8>) {
    let start = Instant::now();
    let mut store = Store::new(engine, Raw { memory: None, input: Arc::clone(input), output: Vec::new() });
    store.set_fuel(slice.unwrap_or(u64::MAX / 2)).expect("fuel");
    let instance = linker.instantiate_and_start(&mut store, module).expect("instantiate");
    store.data_mut().memory = instance.get_memory(&store, "memory");
    let run = instance.get_typed_func::<(), i32>(&store, "run").expect("run");
    let mut call = run.call_resumable(&mut store, ()).expect("runs");
    loop {
        match call {
            wasmi::TypedResumableCall::Finished(code) => {
                assert_eq!(code, 0);
                break;
            }
            wasmi::TypedResumableCall::OutOfFuel(pending) => {
                store.set_fuel(slice.unwrap_or(0).max(pending.required_fuel())).expect("fuel");
                call = pending.resume(&mut store).expect("resumes");
            }
            wasmi::TypedResumableCall::HostTrap(_) => panic!("host trap"),
        }
    }
    (start.elapsed(), store.into_data().output)
}

fn sandbox_run(sandbox: &Sandbox, module: &[u8], input: &Arc<[u8]>, slice: u64) -> (Duration, Vec<u8>, u64) {
    let admitted = sandbox.admit(module, "run").expect("admitted");
    let limits = SandboxLimits {
        fuel: u64::MAX / 2,
        slice_fuel: slice,
        memory_bytes: 1 << 30,
        ..SandboxLimits::default()
    };
    let start = Instant::now();
    let outcome = sandbox.execute(&admitted, Arc::clone(input), &limits, &Control::default(), &mut |_| {});
    let elapsed = start.elapsed();
    assert_eq!(outcome.status, ExecStatus::Completed, "{outcome:?}");
    (elapsed, outcome.output, outcome.fuel_used)
}

struct Row {
    name: String,
    baseline: String,
    candidate: String,
    ratio: f64,
    bar: String,
}

fn overhead(rows: &mut Vec<Row>, name: &str, module: &[u8], input: Vec<u8>, rounds: usize) {
    let input: Arc<[u8]> = Arc::from(input);
    let engine = raw_engine();
    let linker = raw_linker(&engine);
    let raw_module = Module::new(&engine, module).expect("compiles");
    let sandbox = Sandbox::new(&SandboxLimits { max_recursion_depth: 1000, ..SandboxLimits::default() });
    let (mut base, mut base10k, mut s10k, mut s4m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut fuel = 0;
    for _ in 0..rounds {
        let (t, raw_out) = raw_run(&engine, &linker, &raw_module, &input, None);
        base.push(t);
        base10k.push(raw_run(&engine, &linker, &raw_module, &input, Some(10_000)).0);
        let (t, out, f) = sandbox_run(&sandbox, module, &input, 10_000);
        assert_eq!(out, raw_out);
        s10k.push(t);
        fuel = f;
        let (t, _, _) = sandbox_run(&sandbox, module, &input, 4_000_000);
        s4m.push(t);
    }
    let (b, b10k, c1, c2) = (median(base), median(base10k), median(s10k), median(s4m));
    rows.push(Row {
        name: format!("  wasmi's own 10k slicing, {name}"),
        baseline: format!("{b:.2?} bare wasmi"),
        candidate: format!("{b10k:.2?} bare resume loop"),
        ratio: b10k.as_secs_f64() / b.as_secs_f64(),
        bar: "(context)".into(),
    });
    rows.push(Row {
        name: format!("sandbox vs wasmi slicing, {name}, 10k"),
        baseline: format!("{b10k:.2?} bare resume loop"),
        candidate: format!("{c1:.2?} sandbox"),
        ratio: c1.as_secs_f64() / b10k.as_secs_f64(),
        bar: "(context)".into(),
    });
    for (slice, c) in [("10k", c1), ("4M", c2)] {
        rows.push(Row {
            name: format!("overhead {name}, slice {slice}"),
            baseline: format!("{b:.2?} bare wasmi"),
            candidate: format!("{c:.2?} sandbox ({} Mfuel)", fuel / 1_000_000),
            ratio: c.as_secs_f64() / b.as_secs_f64(),
            bar: "<= 1.05".into(),
        });
    }
}

fn native(rows: &mut Vec<Row>, name: &str, module: &[u8], source: &str, input: Vec<u8>, rounds: usize) {
    let dir = std::env::temp_dir().join("icn-bench-native");
    std::fs::create_dir_all(&dir).expect("tmp");
    let exe = dir.join(name);
    let status = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(root().join("core/benches/native_shim.c"))
        .arg(root().join(source))
        .arg("-I")
        .arg(root().join("examples/jobs"))
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed for {source}");
    let input_file = dir.join(format!("{name}.in"));
    std::fs::write(&input_file, &input).expect("input");
    let input: Arc<[u8]> = Arc::from(input);
    let sandbox = Sandbox::default();
    let (mut nat, mut wasm) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let out = Command::new(&exe).arg(&input_file).output().expect("native job runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let ns: u64 = text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("ns");
        nat.push(Duration::from_nanos(ns));
        wasm.push(sandbox_run(&sandbox, module, &input, 4_000_000).0);
    }
    let (n, w) = (median(nat), median(wasm));
    rows.push(Row {
        name: format!("wasmi vs native: {name}"),
        baseline: format!("{n:.2?} gcc -O2"),
        candidate: format!("{w:.2?} sandbox"),
        ratio: w.as_secs_f64() / n.as_secs_f64(),
        bar: "report (< 16)".into(),
    });
}

fn host_call(rows: &mut Vec<Row>) {
    const CALLS: u32 = 20_000_000;
    let looped = |import: &str| {
        wat::parse_str(format!(
            r#"(module {import} (memory (export "memory") 1)
                 (func (export "run") (result i32) (local $i i32) (local $acc i32)
                   (loop $l
                     (local.set $acc (i32.add (local.get $acc) (call $f)))
                     (local.set $i (i32.add (local.get $i) (i32.const 1)))
                     (br_if $l (i32.lt_u (local.get $i) (i32.const {CALLS}))))
                   (i32.const 0)))"#
        ))
        .expect("wat")
    };
    let ours = looped(r#"(import "icn" "input_len" (func $f (result i32)))"#);
    let raw = looped(r#"(import "raw" "constant" (func $f (result i32)))"#);
    let engine = raw_engine();
    let mut linker = Linker::<()>::new(&engine);
    linker.func_wrap("raw", "constant", |_: Caller<'_, ()>| 7i32).expect("def");
    let raw_module = Module::new(&engine, &raw).expect("compiles");
    let sandbox = Sandbox::default();
    let input: Arc<[u8]> = Arc::from(&b"x"[..]);
    let (mut base, mut cand) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let start = Instant::now();
        let mut store = Store::new(&engine, ());
        store.set_fuel(u64::MAX / 2).expect("fuel");
        let instance = linker.instantiate_and_start(&mut store, &raw_module).expect("instantiate");
        let run = instance.get_typed_func::<(), i32>(&store, "run").expect("run");
        run.call(&mut store, ()).expect("runs");
        base.push(start.elapsed());
        cand.push(sandbox_run(&sandbox, &ours, &input, 4_000_000).0);
    }
    let per = |d: Duration| d.as_secs_f64() * 1e9 / f64::from(CALLS);
    let (b, c) = (median(base), median(cand));
    rows.push(Row {
        name: "host call: icn.input_len".into(),
        baseline: format!("{:.1} ns raw host fn", per(b)),
        candidate: format!("{:.1} ns sandbox", per(c)),
        ratio: c.as_secs_f64() / b.as_secs_f64(),
        bar: "<= 2".into(),
    });
}

/// A valid module of about 1 MiB of code: many small arithmetic functions.
fn big_module() -> Vec<u8> {
    let body = "local.get 0 i32.const 1234567 i32.mul local.set 0 ".repeat(45);
    let mut text = String::from(
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) i32.const 0)"#,
    );
    for _ in 0..2700 {
        text.push_str(&format!("(func (param i32) (result i32) {body} local.get 0)"));
    }
    text.push(')');
    wat::parse_str(text).expect("wat")
}

fn cold_start(rows: &mut Vec<Row>) {
    let module = big_module();
    let input: Arc<[u8]> = Arc::from(&b""[..]);
    let (mut base, mut cand) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        // Fresh engines: nothing cached between rounds.
        let engine = raw_engine();
        let start = Instant::now();
        let m = Module::new(&engine, &module).expect("compiles");
        let mut store = Store::new(&engine, ());
        store.set_fuel(1_000_000).expect("fuel");
        let instance = Linker::<()>::new(&engine).instantiate_and_start(&mut store, &m).expect("instantiate");
        let run = instance.get_typed_func::<(), i32>(&store, "run").expect("run");
        run.call(&mut store, ()).expect("runs");
        base.push(start.elapsed());

        let sandbox = Sandbox::default();
        let start = Instant::now();
        let admitted = sandbox.admit(&module, "run").expect("admitted");
        let outcome = sandbox.execute(
            &admitted,
            Arc::clone(&input),
            &SandboxLimits::default(),
            &Control::default(),
            &mut |_| {},
        );
        assert_eq!(outcome.status, ExecStatus::Completed);
        cand.push(start.elapsed());
    }
    let (b, c) = (median(base), median(cand));
    rows.push(Row {
        name: format!("cold start, {} KiB module", module.len() / 1024),
        baseline: format!("{b:.2?} raw compile+inst"),
        candidate: format!("{c:.2?} admit+execute"),
        ratio: c.as_secs_f64() / b.as_secs_f64(),
        bar: "<= 1.5".into(),
    });
}

/// `--only VARIANT`: run the sieve once through one variant and exit, for counting instructions
/// under callgrind (`scripts/bench-instructions.sh`): `raw` (bare wasmi, one call), `raw10k` (bare
/// wasmi resume loop), `sandbox10k`, `sandbox4m`; prefixed `sha-`, the same for sha256 of 1 MiB.
fn only(variant: &str) {
    // `sha-…` variants hash 1 MiB with the sha256 job instead (the I/O-bound case).
    let (sieve, input, variant): (Vec<u8>, Arc<[u8]>, &str) = match variant.strip_prefix("sha-") {
        Some(v) => (
            std::fs::read(root().join("examples/jobs/sha256.wasm")).expect("sha256.wasm"),
            (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>().into(),
            v,
        ),
        None => (
            std::fs::read(root().join("examples/jobs/sieve.wasm")).expect("sieve.wasm"),
            Arc::from(&b"2000000"[..]),
            variant,
        ),
    };
    let engine = raw_engine();
    let linker = raw_linker(&engine);
    match variant {
        "raw" | "raw10k" => {
            let module = Module::new(&engine, &sieve).expect("compiles");
            raw_run(&engine, &linker, &module, &input, (variant == "raw10k").then_some(10_000));
        }
        "sandbox10k" => drop(sandbox_run(&Sandbox::default(), &sieve, &input, 10_000)),
        "sandbox4m" => drop(sandbox_run(&Sandbox::default(), &sieve, &input, 4_000_000)),
        other => panic!("unknown variant {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--only") {
        return only(args.get(i + 1).map_or("", String::as_str));
    }
    // `cargo bench` passes `--bench`; `--quick` (ours) runs fewer rounds, for a smoke test.
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 7 };
    let sieve = std::fs::read(root().join("examples/jobs/sieve.wasm")).expect("sieve.wasm");
    let sha = std::fs::read(root().join("examples/jobs/sha256.wasm")).expect("sha256.wasm");
    let sieve_n = if quick { b"2000000".to_vec() } else { b"10000000".to_vec() };
    let sha_input: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();

    let mut rows = Vec::new();
    overhead(&mut rows, "sieve (CPU)", &sieve, sieve_n.clone(), rounds);
    overhead(&mut rows, "sha256 16 MiB (I/O)", &sha, sha_input.clone(), rounds);
    native(&mut rows, "sieve", &sieve, "examples/jobs/sieve.c", sieve_n, rounds);
    native(&mut rows, "sha256", &sha, "examples/jobs/sha256.c", sha_input, rounds);
    host_call(&mut rows);
    cold_start(&mut rows);

    println!("\n{:<36} {:>30} {:>34} {:>7} {:>14}", "benchmark", "baseline", "candidate", "ratio", "bar");
    println!("{}", "-".repeat(125));
    for r in &rows {
        println!("{:<36} {:>30} {:>34} {:>7.3} {:>14}", r.name, r.baseline, r.candidate, r.ratio, r.bar);
    }
}
