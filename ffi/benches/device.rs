//! The phone bars, measured on the library as a host program embeds it:
//! `cargo bench -p icn-mesh-ffi --bench device [-- --quick]` (the `icn` binary from the same target
//! directory is the coordinator; build it first with `cargo build --release -p icn-mesh-coordinator`).
//!
//! - node cold start (open the store, load the key, bind the endpoint) against those parts alone;
//! - pause latency: from the policy's `pause` to the CPU-bound job stopped between fuel slices;
//! - an idle node connected to a coordinator: this process's RSS, and the node's wake-ups per
//!   minute (context switches of its threads), idle and with its job paused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use icn_mesh::node::NodeCore;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::node::NodeEvent;
use icn_mesh_core::policy::{DeviceStateUpdate, Thermal};
use icn_mesh_core::sandbox::{Sandbox, SandboxLimits};
use icn_mesh_core::store::Store;

const SIEVE: &[u8] = include_bytes!("../../examples/jobs/sieve.wasm");

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

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn cold_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(NodeCore::open(&dir.path().join("node")).expect("first open creates key and store"));
    let bind = || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let _guard = rt.enter();
        let endpoint = icn_mesh_core::net::dialer("127.0.0.1:0".parse().expect("addr")).expect("bind");
        drop(endpoint);
    };
    let (mut whole, mut store, mut key, mut endpoint) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..40 {
        let t = Instant::now();
        let node = NodeCore::open(&dir.path().join("node")).expect("open");
        bind();
        whole.push(t.elapsed());
        drop(node);
        let t = Instant::now();
        drop(Store::open(&dir.path().join("node/store.redb")).expect("store"));
        store.push(t.elapsed());
        let t = Instant::now();
        drop(Keypair::load_or_create(&dir.path().join("node/node.key")).expect("key"));
        key.push(t.elapsed());
        let t = Instant::now();
        bind();
        endpoint.push(t.elapsed());
    }
    let parts = median(store.clone()) + median(key.clone()) + median(endpoint.clone());
    let whole = median(whole);
    println!("\nNode cold start (existing data directory), medians of 40");
    println!("{:<44} {:>10}", "part", "µs");
    println!("{:<44} {:>10.0}", "open the store (redb)", us(median(store)));
    println!("{:<44} {:>10.0}", "load the key", us(median(key)));
    println!("{:<44} {:>10.0}", "bind a QUIC endpoint (with its runtime)", us(median(endpoint)));
    println!("{:<44} {:>10.0}", "sum of the parts", us(parts));
    println!("{:<44} {:>10.0}", "NodeCore::open + bind", us(whole));
    println!("{:<44} {:>10.2}", "ratio (bar ≤ 2)", whole.as_secs_f64() / parts.as_secs_f64());
}

fn pause_latency() {
    let sandbox = Arc::new(Sandbox::default());
    let admitted = sandbox.admit(SIEVE, "run").expect("sieve admitted");
    let limits = SandboxLimits { memory_bytes: 512 << 20, fuel: u64::MAX / 4, ..SandboxLimits::default() };
    let mut samples = Vec::new();
    for i in 0..20u64 {
        let handle = sandbox.spawn(admitted.clone(), Arc::from(&b"200000000"[..]), limits.clone());
        // Pause at a different moment each time, mid-run.
        std::thread::sleep(Duration::from_millis(40 + 13 * i));
        let asked = Instant::now();
        handle.control.pause();
        let paused = loop {
            match handle.progress.recv_timeout(Duration::from_secs(5)) {
                Ok(p) if p.paused => break asked.elapsed(),
                Ok(_) => {}
                Err(e) => panic!("no paused report: {e}"),
            }
        };
        samples.push(paused);
        handle.control.cancel();
        let _ = handle.join();
    }
    samples.sort();
    println!("\nPause latency: policy says pause → the CPU-bound sieve stopped between fuel slices, 20 runs");
    println!("{:<10} {:>10}", "quantile", "ms");
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("max", 1.0)] {
        let v = samples[((samples.len() - 1) as f64 * q).round() as usize];
        println!("{name:<10} {:>10.2}", v.as_secs_f64() * 1e3);
    }
    println!("(bar: < 50 ms)");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Context switches (voluntary + not) of every thread of this process except `skip` (the bench's
/// own main thread): each is a wake-up.
fn wakeups(skip: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let name = task.file_name().to_string_lossy().into_owned();
        if name == skip {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches:") || line.starts_with("nonvoluntary_ctxt_switches:")
            {
                total += line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    total
}

fn icn_binary() -> PathBuf {
    std::env::var_os("ICN_BIN").map_or_else(
        || {
            let exe = std::env::current_exe().expect("exe");
            exe.parent().and_then(Path::parent).expect("target dir").join("icn")
        },
        PathBuf::from,
    )
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn idle_and_paused(quick: bool) {
    // The keep-alives come every 270 s (idle) and 240 s (paused): a window shorter than that
    // undercounts; `--window SECS` sets it (300 s holds one of each).
    let args: Vec<String> = std::env::args().collect();
    let custom = args.iter().position(|a| a == "--window").and_then(|i| args.get(i + 1)?.parse().ok());
    let window = Duration::from_secs(custom.unwrap_or(if quick { 10 } else { 60 }));
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeCore::open(&dir.path().join("node")).expect("node");
    let client = Keypair::generate().expect("key");
    client.save(&dir.path().join("client.key")).expect("save");
    let icn = icn_binary();
    assert!(icn.exists(), "{} missing: cargo build --release -p icn-mesh-coordinator", icn.display());
    let coord = dir.path().join("coordinator");
    let _coordinator = Killed(
        Command::new(&icn)
            .args(["coordinator", "--listen", "127.0.0.1:0", "--data"])
            .arg(&coord)
            .args([
                "--grant",
                &format!("{}=100000", client.did()),
                "--grant",
                &format!("{}=1000", node.key.did()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator"),
    );
    let start = Instant::now();
    let address = loop {
        if let Ok(a) = std::fs::read_to_string(coord.join("address"))
            && !a.trim().is_empty()
        {
            break a.trim().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no coordinator address");
        std::thread::sleep(Duration::from_millis(20));
    };
    let good = DeviceStateUpdate {
        charging: Some(true),
        battery_percent: Some(95.0),
        battery_temp_c: Some(30.0),
        thermal: Some(Thermal::None),
        screen_on: Some(false),
        metered: Some(false),
    };
    node.set_device_state(&good).expect("state");
    let running = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&running);
    node.start(
        &address,
        40_000,
        Box::new(move |e| {
            if matches!(e, NodeEvent::Progress { .. }) {
                seen.store(true, Ordering::SeqCst);
            }
        }),
    )
    .expect("start");
    std::thread::sleep(Duration::from_secs(2));
    let me = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();

    let before = wakeups(&me);
    std::thread::sleep(window);
    let idle_wakeups = wakeups(&me) - before;
    let idle_rss = rss_kib();

    // A long job, then unplugged: paused mid-run.
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"runtime": {"type": "WASM", "memory_pages": 2048}, "budget": {"max_total": 1000}, "compute": {"estimated_cpu_hours": 0.01}}"#,
    )
    .expect("spec");
    std::fs::write(dir.path().join("n.txt"), "100000000").expect("input");
    let _submit = Killed(
        Command::new(&icn)
            .args(["job", "submit"])
            .arg(&spec)
            .args(["--coordinator", &address, "--key"])
            .arg(dir.path().join("client.key"))
            .args(["--module"])
            .arg(root().join("examples/jobs/sieve.wasm"))
            .args(["--input"])
            .arg(dir.path().join("n.txt"))
            .args(["--wait", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("submit"),
    );
    let start = Instant::now();
    while !running.load(Ordering::SeqCst) {
        assert!(start.elapsed() < Duration::from_secs(30), "the job never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.set_device_state(&DeviceStateUpdate { charging: Some(false), ..Default::default() })
        .expect("unplug");
    std::thread::sleep(Duration::from_millis(500));
    let before = wakeups(&me);
    std::thread::sleep(window);
    let paused_wakeups = wakeups(&me) - before;
    let paused_rss = rss_kib();
    node.stop();

    let per_minute = |n: u64| n as f64 * 60.0 / window.as_secs_f64();
    println!(
        "\nA node embedded in this process, connected to a coordinator process, {} s windows",
        window.as_secs()
    );
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>12.1}", "RSS idle (MiB, bar < 8)", idle_rss as f64 / 1024.0);
    println!("{:<44} {:>12.1}", "wake-ups per minute idle (bar < 2)", per_minute(idle_wakeups));
    println!("{:<44} {:>12.1}", "RSS with a 48 MiB sieve paused (MiB)", paused_rss as f64 / 1024.0);
    println!("{:<44} {:>12.1}", "wake-ups per minute paused (bar < 2)", per_minute(paused_wakeups));
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // First, so the RSS is the node's, not what the other measurements left behind.
    idle_and_paused(quick);
    cold_start();
    pause_latency();
}
