//! The sandbox against the example jobs and against hostile modules: every bad module gets a clear
//! error with its code, never a panic or a host fault.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use icn_mesh_core::sandbox::{Begun, Control, ExecStatus, Outcome, Sandbox, SandboxLimits};
use icn_mesh_core::{ErrorCode, FailureReason};
use sha2::{Digest, Sha256};

/// The repository root of the checkout this runs in: cargo names the package at run time; the path
/// compiled in names the checkout that built the binary, another one when checkouts share a target
/// directory (cargo reuses a build across checkout paths).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn example(name: &str) -> Vec<u8> {
    let path = root().join("examples/jobs").join(format!("{name}.wasm")).display().to_string();
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("test WAT parses")
}

fn run_with(module: &[u8], input: &[u8], limits: &SandboxLimits) -> Outcome {
    let sandbox = Sandbox::new(limits);
    let admitted = sandbox.admit(module, "run").expect("module is admitted");
    sandbox.execute(&admitted, Arc::from(input), limits, &Control::default(), &mut |_| {})
}

fn run(module: &[u8], input: &[u8]) -> Outcome {
    run_with(module, input, &SandboxLimits::default())
}

fn refused(module: &[u8]) -> icn_mesh_core::Problem {
    Sandbox::default().admit(module, "run").expect_err("module must be refused")
}

fn failed(outcome: &Outcome, reason: FailureReason, code: ErrorCode) {
    assert_eq!(outcome.status, ExecStatus::Failed, "{outcome:?}");
    assert_eq!(outcome.failure, Some(reason), "{outcome:?}");
    assert_eq!(outcome.problem.as_ref().map(|p| p.code), Some(code), "{outcome:?}");
}

const ABI: &str = r#"
  (import "icn" "input_len" (func $input_len (result i32)))
  (import "icn" "get_input" (func $get_input (param i32 i32 i32) (result i32)))
  (import "icn" "put_output" (func $put_output (param i32 i32) (result i32)))
  (import "icn" "log" (func $log (param i32 i32 i32)))
  (import "icn" "progress" (func $progress (param i32)))
"#;

fn module(body: &str) -> Vec<u8> {
    wat(&format!("(module {ABI} (memory (export \"memory\") 1) {body})"))
}

// ---- the example jobs ----

#[test]
fn sha256_job_matches_the_sha2_crate() {
    for len in [0usize, 1, 55, 56, 63, 64, 65, 65_535, 65_536, 65_537, 200_003] {
        let input: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let outcome = run(&example("sha256"), &input);
        assert_eq!(outcome.status, ExecStatus::Completed, "{outcome:?}");
        let expected: String = Sha256::digest(&input).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(String::from_utf8_lossy(&outcome.output), expected, "input of {len} bytes");
        assert_eq!(outcome.progress_permille, 1000);
    }
}

#[test]
fn sieve_counts_primes_and_reports_progress() {
    let sandbox = Sandbox::default();
    let admitted = sandbox.admit(&example("sieve"), "run").expect("admitted");
    let limits = SandboxLimits { slice_fuel: 10_000, ..SandboxLimits::default() };
    let mut seen = Vec::new();
    let outcome =
        sandbox.execute(&admitted, Arc::from(&b"1000000"[..]), &limits, &Control::default(), &mut |p| {
            seen.push(*p)
        });
    assert_eq!(outcome.status, ExecStatus::Completed, "{outcome:?}");
    assert_eq!(String::from_utf8_lossy(&outcome.output), "78498 primes <= 1000000, largest 999983\n");
    assert!(seen.len() > 10, "progress after every slice, got {}", seen.len());
    assert!(seen.windows(2).all(|w| w[0].permille <= w[1].permille && w[0].fuel_used <= w[1].fuel_used));
    assert!(seen.iter().any(|p| p.permille > 0 && p.permille < 1000));
    assert!(
        outcome.peak_memory_bytes >= 500_000,
        "the sieve allocates ~500 KB: {}",
        outcome.peak_memory_bytes
    );
}

#[test]
fn mandelbrot_tiles_stack_into_the_whole_image() {
    let whole = run(&example("mandelbrot"), b"64 48 0 0 64 48 100");
    assert_eq!(whole.status, ExecStatus::Completed, "{whole:?}");
    assert!(whole.output.starts_with(b"P5\n64 48\n255\n"));
    let header = b"P5\n64 48\n255\n".len();
    let top = run(&example("mandelbrot"), b"64 48 0 0 64 24 100");
    let bottom = run(&example("mandelbrot"), b"64 48 0 24 64 24 100");
    let tile_header = b"P5\n64 24\n255\n".len();
    let mut stacked = top.output[tile_header..].to_vec();
    stacked.extend_from_slice(&bottom.output[tile_header..]);
    assert_eq!(stacked, whole.output[header..]);
    let bad = run(&example("mandelbrot"), b"64 48 60 0 10 10 100");
    assert_eq!(bad.exit_code, Some(1));
    assert_eq!(bad.failure, Some(FailureReason::InvalidInput));
    assert!(bad.logs.iter().any(|l| l.text.contains("tile out of range")));
}

#[test]
fn fuel_used_does_not_depend_on_slice_size() {
    let module = example("sieve");
    let fuel: Vec<u64> = [10_000u64, 1_000_000, 1 << 40]
        .iter()
        .map(|&slice_fuel| {
            let limits = SandboxLimits { slice_fuel, fuel: 1 << 41, ..SandboxLimits::default() };
            let outcome = run_with(&module, b"300000", &limits);
            assert_eq!(outcome.status, ExecStatus::Completed);
            outcome.fuel_used
        })
        .collect();
    assert!(fuel[0] > 0);
    assert!(fuel.windows(2).all(|w| w[0] == w[1]), "{fuel:?}");
}

/// `Sandbox::start` (what a node uses): a job that fits its first slice ends there; a longer one
/// goes on on another thread and comes to the same output, fuel and slice count as `execute`.
#[test]
fn a_started_job_ends_in_its_first_slice_or_goes_on_on_another_thread_the_same() {
    let module = example("sieve");
    let limits = SandboxLimits { slice_fuel: 1_000_000, fuel: 1 << 41, ..SandboxLimits::default() };
    let sandbox = Arc::new(Sandbox::new(&limits));
    let whole = run_with(&module, b"300000", &limits);
    assert!(whole.slices > 2, "the sieve needs several slices: {}", whole.slices);
    let start = |module: &[u8], input: &[u8], first_slice| {
        let admitted = sandbox.admit(module, "run").expect("admitted");
        let control = Arc::new(Control::default());
        sandbox.start(admitted, Arc::from(input), limits.clone(), control, first_slice)
    };
    // A short job within its first slice: done on this thread.
    let echo = run_with(&example("echo"), b"hello", &limits);
    let Begun::Done(done) = start(&example("echo"), b"hello", 100_000) else {
        panic!("echo fits a first slice of 100k fuel")
    };
    assert_eq!(
        (done.status, done.fuel_used, &done.output),
        (ExecStatus::Completed, echo.fuel_used, &echo.output)
    );
    assert_eq!(done.output, b"hello");
    // A small first slice: the rest on another thread, with progress from there.
    let Begun::Going(started) = start(&module, b"300000", 10_000) else {
        panic!("10k fuel is not enough for the sieve")
    };
    let finished = std::thread::spawn(move || {
        let mut reports = 0;
        let outcome = started.finish(&mut |_| reports += 1);
        (outcome, reports)
    });
    let (outcome, reports) = finished.join().expect("the other thread");
    assert_eq!(outcome.status, ExecStatus::Completed, "{outcome:?}");
    assert_eq!((outcome.fuel_used, &outcome.output), (whole.fuel_used, &whole.output));
    assert_eq!(outcome.slices, whole.slices + 1, "one small slice, then the usual ones");
    assert!(reports as u64 >= whole.slices, "progress after each slice: {reports}");
    // A hostile module started this way is held to the same limits: an endless loop runs out of fuel.
    let endless = wat(
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (loop (br 0)) (i32.const 0)))"#,
    );
    let tight = SandboxLimits { fuel: 2_000_000, slice_fuel: 500_000, ..SandboxLimits::default() };
    let admitted = sandbox.admit(&endless, "run").expect("admitted");
    let Begun::Going(started) = sandbox.start(admitted, Arc::from(&b""[..]), tight, Arc::default(), 1_000)
    else {
        panic!("an endless loop does not end in its first slice")
    };
    failed(&started.finish(&mut |_| {}), FailureReason::CpuTimeout, ErrorCode::J004);
}

/// A node reuses the module it admitted last for the next job of that module; each run still
/// starts from a fresh instance (globals and memory as the module defines them), and another
/// module or entry is admitted anew.
#[test]
fn a_module_admitted_by_cid_is_reused_but_each_run_starts_fresh() {
    let counter = module(
        r#"(global $runs (mut i32) (i32.const 0))
           (func (export "run") (result i32)
             (global.set $runs (i32.add (global.get $runs) (i32.const 1)))
             (i32.store8 (i32.const 100) (i32.add (i32.load8_u (i32.const 100)) (global.get $runs)))
             (drop (call $put_output (i32.const 100) (i32.const 1)))
             (i32.const 0))
           (func (export "other") (result i32) (i32.const 0))"#,
    );
    let cid = icn_mesh_core::dag::blob_cid(&counter);
    let limits = SandboxLimits::default();
    let sandbox = Sandbox::new(&limits);
    let first = sandbox.admit_by_cid(&cid, &counter, "run").expect("admitted");
    // The bytes are not even looked at when the CID is the one kept.
    let again = sandbox.admit_by_cid(&cid, b"not wasm", "run").expect("reused");
    for admitted in [&first, &again, &first] {
        let outcome =
            sandbox.execute(admitted, Arc::from(&b""[..]), &limits, &Control::default(), &mut |_| {});
        assert_eq!(outcome.output, [1], "each run starts from the module's own state");
    }
    // Another entry, or another module under another CID, is admitted (and checked) anew.
    assert_eq!(sandbox.admit_by_cid(&cid, &counter, "other").expect("admitted").entry(), "other");
    let echo = example("echo");
    let wrong = sandbox.admit_by_cid(&icn_mesh_core::dag::blob_cid(b"junk"), b"junk", "run");
    assert_eq!(wrong.expect_err("junk is refused").code, ErrorCode::J001);
    assert_eq!(
        sandbox.admit_by_cid(&icn_mesh_core::dag::blob_cid(&echo), &echo, "run").expect("echo").entry(),
        "run"
    );
}

#[test]
fn nan_bits_are_canonical() {
    // x86 produces the negative quiet NaN 0xFFC00000 for 0/0; ARM gives 0x7FC00000. The sandbox must
    // give 0x7FC00000 everywhere.
    let m = module(
        r#"(func (export "run") (result i32)
             (i32.store (i32.const 0) (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0))))
             (i64.store (i32.const 8) (i64.reinterpret_f64 (f64.sqrt (f64.const -1))))
             (drop (call $put_output (i32.const 0) (i32.const 16)))
             (i32.const 0))"#,
    );
    let outcome = run(&m, b"");
    assert_eq!(outcome.status, ExecStatus::Completed);
    assert_eq!(&outcome.output[..4], &0x7FC0_0000u32.to_le_bytes());
    assert_eq!(&outcome.output[8..16], &0x7FF8_0000_0000_0000u64.to_le_bytes());
}

#[test]
fn compiled_code_is_freed_with_its_module() {
    // wasmi 2.0 never frees code from an engine; the sandbox gives each module its own engine so a
    // long-lived node does not keep every module it ever ran. Admit and drop a ~0.5 MiB module many
    // times: resident memory must stay flat (measured here: a shared engine grows 38 MiB over these 40 rounds, ours 0).
    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("rss pages");
        pages * 4096
    }
    let body = "local.get 0 i32.const 1234567 i32.mul local.set 0 ".repeat(45);
    let mut text = String::from(
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) i32.const 0)"#,
    );
    for _ in 0..1200 {
        text.push_str(&format!("(func (param i32) (result i32) {body} local.get 0)"));
    }
    text.push(')');
    let big = wat(&text);
    let sandbox = Sandbox::default();
    for _ in 0..3 {
        drop(sandbox.admit(&big, "run").expect("admitted"));
    }
    let before = rss_bytes();
    for _ in 0..40 {
        let admitted = sandbox.admit(&big, "run").expect("admitted");
        let outcome = sandbox.execute(
            &admitted,
            Arc::from(&b""[..]),
            &SandboxLimits::default(),
            &Control::default(),
            &mut |_| {},
        );
        assert_eq!(outcome.status, ExecStatus::Completed);
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 16 << 20, "resident memory grew by {} MiB over 40 modules", grown >> 20);
}

// ---- pause, resume, cancel ----

#[test]
fn a_spawned_job_pauses_resumes_and_cancels_between_slices() {
    let sandbox = Arc::new(Sandbox::default());
    let spin = module(r#"(func (export "run") (result i32) (loop $l (br $l)) (i32.const 0))"#);
    let admitted = sandbox.admit(&spin, "run").expect("admitted");
    let limits = SandboxLimits { fuel: u64::MAX, slice_fuel: 100_000, ..SandboxLimits::default() };
    let handle = sandbox.spawn(admitted, Arc::from(&b""[..]), limits);
    handle.progress.recv_timeout(Duration::from_secs(5)).expect("first slice");
    handle.control.pause();
    let paused = loop {
        let p = handle.progress.recv_timeout(Duration::from_secs(5)).expect("progress");
        if p.paused {
            break p;
        }
    };
    // While paused no fuel is burned and no progress arrives.
    assert!(handle.progress.recv_timeout(Duration::from_millis(100)).is_err());
    handle.control.resume();
    let resumed = handle.progress.recv_timeout(Duration::from_secs(5)).expect("resumed");
    assert!(!resumed.paused);
    assert_eq!(resumed.fuel_used, paused.fuel_used);
    handle.control.cancel();
    let outcome = handle.join();
    assert_eq!(outcome.status, ExecStatus::Cancelled);
    assert!(outcome.fuel_used > paused.fuel_used);
}

// ---- hostile modules: admission ----

#[test]
fn malformed_and_truncated_modules_are_j001() {
    let good = example("sha256");
    for bytes in
        [&b""[..], b"not wasm at all", &good[..good.len() / 2], &good[..9], &[0, 97, 115, 109, 2, 0, 0, 0]]
    {
        let p = refused(bytes);
        assert_eq!(p.code, ErrorCode::J001, "{p}");
        assert!(p.message.contains("not valid WebAssembly"), "{p}");
    }
}

#[test]
fn a_module_that_crashed_wasmi_2_0_0_is_refused() {
    // Found by fuzz/module_admission: an empty code section with trailing bytes made wasmi divide by
    // zero inside Module::new. The admission pre-scan refuses it first.
    let bytes = std::fs::read(root().join("core/tests/fixtures/wasmi-empty-code-section-div-zero.wasm"))
        .expect("fixture");
    let p = refused(&bytes);
    assert_eq!(p.code, ErrorCode::J001, "{p}");
    assert!(p.message.contains("declares no functions"), "{p}");
}

#[test]
fn a_module_that_panics_the_wasmi_translator_is_refused() {
    // Found by fuzz/module_admission: wasmi 2.0.0's translator panics ("out of bounds StackPos") on
    // this malformed body instead of returning an error. Admission turns the panic into J001.
    let bytes = std::fs::read(root().join("core/tests/fixtures/wasmi-translator-stackpos-panic.wasm"))
        .expect("fixture");
    // Validation refuses it before wasmi's translator runs: the phone library, which aborts on a
    // panic, must never reach the catch.
    let panicked = Arc::new(AtomicBool::new(false));
    let hook_saw = Arc::clone(&panicked);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook_saw.store(true, Ordering::SeqCst);
        previous(info);
    }));
    let p = refused(&bytes);
    let _ = std::panic::take_hook();
    assert!(!panicked.load(Ordering::SeqCst), "wasmi panicked: validation let the module through");
    assert_eq!(p.code, ErrorCode::J001, "{p}");
    assert!(p.message.contains("not valid WebAssembly"), "{p}");
    assert!(!p.message.contains("wasmi panicked"), "{p}");
    // The sandbox still works afterwards.
    assert_eq!(run(&example("sieve"), b"100").status, ExecStatus::Completed);
}

#[test]
fn imports_outside_icn_are_j008_before_instantiation() {
    for import in [
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        r#"(import "icn" "clock" (func (result i64)))"#,
        r#"(import "icn" "put_output" (func (param i64 i32) (result i32)))"#,
        r#"(import "icn" "input_len" (global i32))"#,
    ] {
        let m = wat(&format!(
            r#"(module {import} (memory (export "memory") 1) (func (export "run") (result i32) (i32.const 0)))"#
        ));
        let p = refused(&m);
        assert_eq!(p.code, ErrorCode::J008, "{import}: {p}");
        assert!(p.message.contains("does not offer"), "{p}");
    }
    let env_memory = wat(r#"(module (import "env" "memory" (memory 1)) (export "memory" (memory 0))
             (func (export "run") (result i32) (i32.const 0)))"#);
    let p = refused(&env_memory);
    assert_eq!(p.code, ErrorCode::J008, "{p}");
    assert!(p.message.contains("env.memory"), "{p}");
}

#[test]
fn missing_exports_and_wrong_entry_types_are_j001() {
    let no_memory = wat(r#"(module (func (export "run") (result i32) (i32.const 0)))"#);
    assert!(refused(&no_memory).message.contains("memory"));
    let no_entry = wat(r#"(module (memory (export "memory") 1))"#);
    let p = refused(&no_entry);
    assert_eq!((p.code, p.field.as_str()), (ErrorCode::J001, "runtime.function"));
    for ty in ["(param i32) (result i32)", "", "(result i64)", "(result i32 i32)"] {
        let m =
            wat(&format!(r#"(module (memory (export "memory") 1) (func (export "run") {ty} unreachable))"#));
        let p = refused(&m);
        assert_eq!(p.code, ErrorCode::J001, "{ty}: {p}");
        assert!(p.message.contains("must take nothing and return i32"), "{p}");
    }
}

#[test]
fn start_functions_are_refused() {
    let m = wat(
        r#"(module (memory (export "memory") 1) (func $s) (start $s) (func (export "run") (result i32) (i32.const 0)))"#,
    );
    let p = refused(&m);
    assert_eq!(p.code, ErrorCode::J008, "{p}");
    assert!(p.message.contains("start function"), "{p}");
}

#[test]
fn huge_modules_tables_functions_and_locals_are_refused() {
    // More functions than the enforced limit.
    let many_funcs = format!(r#"(module (memory (export "memory") 1) {})"#, "(func)".repeat(10_001));
    assert_eq!(refused(&wat(&many_funcs)).code, ErrorCode::J008);
    // A function with more locals than any validator accepts.
    let locals = wat(
        r#"(module (memory (export "memory") 1) (func (export "run") (result i32) (local i32) (i32.const 0)))"#,
    );
    // Patch the local count (1) to 2^31 to build a module no text form could write.
    let mut huge_locals = locals.clone();
    let at = huge_locals.windows(3).position(|w| w == [0x01, 0x01, 0x7f]).expect("local decl");
    huge_locals.splice(at + 1..at + 2, [0x80, 0x80, 0x80, 0x80, 0x08]);
    assert!(refused(&huge_locals).code == ErrorCode::J001 || refused(&huge_locals).code == ErrorCode::J008);
    // A module over the size cap.
    let big = vec![0u8; 17 << 20];
    let p = refused(&big);
    assert_eq!(p.code, ErrorCode::J008);
    assert!(p.message.contains("limit"), "{p}");
    // A table far over the element cap fails at instantiation, not as a host allocation.
    let table = module(r#"(table 100000000 funcref) (func (export "run") (result i32) (i32.const 0))"#);
    let outcome = run(&table, b"");
    assert_eq!(outcome.status, ExecStatus::Failed, "{outcome:?}");
}

// ---- hostile modules: execution ----

#[test]
fn an_infinite_loop_is_stopped_by_fuel_as_cpu_timeout() {
    let spin = module(r#"(func (export "run") (result i32) (loop $l (br $l)) (i32.const 0))"#);
    let limits = SandboxLimits { fuel: 50_000_000, ..SandboxLimits::default() };
    let outcome = run_with(&spin, b"", &limits);
    failed(&outcome, FailureReason::CpuTimeout, ErrorCode::J004);
    assert!(outcome.fuel_used <= limits.fuel && outcome.fuel_used > limits.fuel - limits.slice_fuel);
}

#[test]
fn a_job_past_its_deadline_is_stopped_between_slices() {
    let spin = module(r#"(func (export "run") (result i32) (loop $l (br $l)) (i32.const 0))"#);
    let limits = SandboxLimits {
        fuel: u64::MAX,
        deadline: Some(std::time::Instant::now() + Duration::from_millis(200)),
        ..SandboxLimits::default()
    };
    let outcome = run_with(&spin, b"", &limits);
    failed(&outcome, FailureReason::DeadlineExceeded, ErrorCode::J010);
    assert!(
        outcome.wall >= Duration::from_millis(200) && outcome.wall < Duration::from_secs(10),
        "{:?}",
        outcome.wall
    );
}

#[test]
fn a_memory_bomb_is_capped_and_its_peak_reported() {
    // Grows one page at a time until refused, then traps.
    let bomb = module(
        r#"(func (export "run") (result i32)
             (loop $l (if (i32.ne (memory.grow (i32.const 1)) (i32.const -1)) (then (br $l))))
             unreachable)"#,
    );
    let limits = SandboxLimits { memory_bytes: 4 << 20, ..SandboxLimits::default() };
    let outcome = run_with(&bomb, b"", &limits);
    assert_eq!(outcome.status, ExecStatus::Failed);
    assert_eq!(outcome.peak_memory_bytes, 4 << 20, "{outcome:?}");
    // A single huge grow that the job does not check: memory.grow returns -1, the job traps on use.
    let greedy = module(
        r#"(func (export "run") (result i32)
             (drop (memory.grow (i32.const 60000)))
             (i32.store (i32.const 100000000) (i32.const 1))
             (i32.const 0))"#,
    );
    let outcome = run_with(&greedy, b"", &limits);
    failed(&outcome, FailureReason::CrashOrPanic, ErrorCode::J001);
    assert!(outcome.peak_memory_bytes <= 4 << 20);
    // Initial memory over the cap is refused at instantiation as OutOfMemory.
    let fat = wat(&format!(
        "(module {ABI} (memory (export \"memory\") 1000) (func (export \"run\") (result i32) (i32.const 0)))"
    ));
    failed(&run_with(&fat, b"", &limits), FailureReason::OutOfMemory, ErrorCode::J009);
    // A job that checks its grow, is refused and gives up with its own code is out of memory too
    // (§7.2 then retries it with double the memory): the code is kept for its author.
    let careful = module(
        r#"(func (export "run") (result i32)
             (if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then (return (i32.const 3))))
             (i32.const 0))"#,
    );
    let outcome = run_with(&careful, b"", &limits);
    failed(&outcome, FailureReason::OutOfMemory, ErrorCode::J009);
    assert_eq!(outcome.exit_code, Some(3));
}

#[test]
fn unbounded_recursion_traps() {
    let rec = module(r#"(func $f (export "run") (result i32) (call $f))"#);
    let outcome = run(&rec, b"");
    failed(&outcome, FailureReason::CrashOrPanic, ErrorCode::J009);
    assert!(outcome.problem.expect("problem").message.contains("recursion"));
}

#[test]
fn endless_output_is_cut_at_the_cap() {
    let flood = module(
        r#"(func (export "run") (result i32)
             (loop $l (drop (call $put_output (i32.const 0) (i32.const 1000))) (br $l))
             (i32.const 0))"#,
    );
    let limits = SandboxLimits { max_output_bytes: 10_500, ..SandboxLimits::default() };
    let outcome = run_with(&flood, b"", &limits);
    failed(&outcome, FailureReason::DiskFull, ErrorCode::J009);
    assert_eq!(outcome.output.len(), 10_500);
    assert!(outcome.output_truncated);
}

#[test]
fn endless_logging_is_bounded() {
    let chatty = module(
        r#"(data (i32.const 0) "hello")
           (func (export "run") (result i32)
             (local $i i32)
             (loop $l
               (call $log (i32.const 2) (i32.const 0) (i32.const 5))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $l (i32.lt_u (local.get $i) (i32.const 100000))))
             (call $log (i32.const 99) (i32.const 0) (i32.const 65536))
             (i32.const 0))"#,
    );
    let outcome = run(&chatty, b"");
    assert_eq!(outcome.status, ExecStatus::Completed);
    assert_eq!(outcome.logs.len(), 1000);
    assert_eq!(outcome.logs_dropped, 100_000 + 1 - 1000);
}

#[test]
fn host_abi_pointers_outside_memory_are_never_honoured() {
    // Each call returns -1 (recorded in the output) or traps; none touches host memory.
    let probe = module(
        r#"(func (export "run") (result i32)
             (i32.store (i32.const 0) (call $get_input (i32.const 65535) (i32.const 0) (i32.const 4)))
             (i32.store (i32.const 4) (call $get_input (i32.const -1) (i32.const 0) (i32.const 4)))
             (i32.store (i32.const 8) (call $put_output (i32.const 65000) (i32.const 1000)))
             (i32.store (i32.const 12) (call $put_output (i32.const -8) (i32.const 16)))
             (i32.store (i32.const 16) (call $get_input (i32.const 32) (i32.const 1000000) (i32.const 4)))
             (drop (call $put_output (i32.const 0) (i32.const 20)))
             (i32.const 0))"#,
    );
    let outcome = run(&probe, b"abcdefgh");
    assert_eq!(outcome.status, ExecStatus::Completed, "{outcome:?}");
    let words: Vec<i32> =
        outcome.output.chunks(4).map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    assert_eq!(words, vec![-1, -1, -1, -1, 0]);
    let bad_log = module(
        r#"(func (export "run") (result i32) (call $log (i32.const 1) (i32.const 65530) (i32.const 100)) (i32.const 0))"#,
    );
    let outcome = run(&bad_log, b"");
    failed(&outcome, FailureReason::CrashOrPanic, ErrorCode::J008);
}

#[test]
fn a_nonzero_exit_is_the_jobs_own_failure() {
    let m = module(r#"(func (export "run") (result i32) (i32.const 7))"#);
    let outcome = run(&m, b"");
    failed(&outcome, FailureReason::InvalidInput, ErrorCode::J001);
    assert_eq!(outcome.exit_code, Some(7));
}
