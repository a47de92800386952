//! `icn demo`: a local mesh of separate processes on loopback running real jobs end to end.
//!
//! Starts a coordinator and four executors (this same binary, as child processes), grants mana at
//! genesis, submits example jobs with different strategies and redundancy levels — one executor is
//! killed with SIGKILL in the middle of a job, which the coordinator reassigns — then prints who bid,
//! who won, what was paid and the receipts, checks the ledger adds up, and shuts everything down.
//! Exit 0 only if every job ended as expected and the ledger audit is exact.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use icn_mesh_coordinator::client;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::net::PeerAddr;
use icn_mesh_core::protocol::{ClientReply, ClientRequest, FinalReport};
use icn_mesh_core::spec::JobSpec;

use crate::output;

const NODES: usize = 4;
/// Mana per CPU hour; a job's default estimate is 0.001 h, so these bid 40, 25, 60 and 30.
const PRICES: [u64; NODES] = [40_000, 25_000, 60_000, 30_000];

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct DemoJob {
    name: &'static str,
    spec: serde_json::Value,
    module: &'static str,
    input: Vec<u8>,
    expect: &'static str,
    /// Kill the first executor once the job is running.
    kill_executor: bool,
}

/// A child process of the demo that ends with it. `Children` stops them when the demo returns or
/// panics; a demo killed outright (SIGKILL, or the SIGTERM `timeout` sends) runs no destructor, and
/// its coordinator and executors would go on running, so the kernel signals them instead.
fn child_command(exe: &Path) -> Command {
    #[allow(unused_mut)]
    let mut command = Command::new(exe);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the child between fork and exec and only makes two system
        // calls (prctl, getppid), both async-signal-safe; it allocates nothing (an OS error code is
        // no allocation) and touches no lock.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The demo may have ended before the line above took effect: then nobody would
                // signal this child, so it does not start.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    command
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn module_bytes(name: &str) -> Vec<u8> {
    match name {
        "sha256" => include_bytes!("../../examples/jobs/sha256.wasm").to_vec(),
        "sieve" => include_bytes!("../../examples/jobs/sieve.wasm").to_vec(),
        "mandelbrot" => include_bytes!("../../examples/jobs/mandelbrot.wasm").to_vec(),
        _ => include_bytes!("../../examples/jobs/echo.wasm").to_vec(),
    }
}

pub fn demo(json: bool) -> u8 {
    match run(json) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => output::fail(&e),
    }
}

fn wait_for_file(path: &Path, timeout: Duration) -> Result<String, String> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return Ok(text.trim().to_owned());
        }
        if start.elapsed() > timeout {
            return Err(format!("{} did not appear within {timeout:?}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(json: bool) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };

    // Keys first, so genesis can grant to them.
    let submitter = Keypair::generate().map_err(|e| e.to_string())?;
    let mut node_dirs = Vec::new();
    let mut node_dids = Vec::new();
    for i in 0..NODES {
        let d = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let key = Keypair::generate().map_err(|e| e.to_string())?;
        key.save(&d.join("node.key")).map_err(|e| e.to_string())?;
        node_dids.push(key.did().clone());
        node_dirs.push(d);
    }
    let coord_dir = dir.path().join("coordinator");
    let mut args = vec!["coordinator".to_owned(), "--listen".into(), "127.0.0.1:0".into(), "--data".into()];
    args.push(coord_dir.display().to_string());
    args.push("--grant".into());
    args.push(format!("{}=100000", submitter.did()));
    for did in &node_dids {
        args.push("--grant".into());
        args.push(format!("{did}=1000"));
    }
    let mut children = Children(Vec::new());
    children.0.push(
        child_command(&exe)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let address = wait_for_file(&coord_dir.join("address"), Duration::from_secs(10))?;
    let coordinator = PeerAddr::parse(&address).map_err(|e| e.to_string())?;
    say(format!("coordinator  {address}"));
    for (i, d) in node_dirs.iter().enumerate() {
        let child = child_command(&exe)
            .args(["node", "--coordinator", &address, "--data"])
            .arg(d)
            .args(["--price-per-hour", &PRICES[i].to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        children.0.push(child);
        say(format!("executor {i}   {}  price {}/h", node_dids[i], PRICES[i]));
    }

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    // Wait until every executor has joined: a status request for nothing tells us nothing, so ask the
    // ledger (it answers once the coordinator is up) and give the executors a moment to register.
    std::thread::sleep(Duration::from_millis(600));

    let jobs = vec![
        DemoJob {
            name: "sha256, LowestPrice, None",
            spec: serde_json::json!({"runtime": {"type": "WASM", "memory_pages": 16}, "budget": {"max_total": 100},
                                      "selection_strategy": "LowestPrice"}),
            module: "sha256",
            input: (0..200_000u32).map(|i| (i % 251) as u8).collect(),
            expect: "completed",
            kill_executor: false,
        },
        DemoJob {
            name: "sieve 2e6, FastestDelivery, Full(3)",
            spec: serde_json::json!({"runtime": {"type": "WASM", "memory_pages": 64}, "budget": {"max_total": 180},
                                      "selection_strategy": "FastestDelivery", "redundancy": "Full(3)"}),
            module: "sieve",
            input: b"2000000".to_vec(),
            expect: "completed",
            kill_executor: false,
        },
        DemoJob {
            name: "mandelbrot tile, BestScore, Sampling(2)",
            spec: serde_json::json!({"runtime": {"type": "WASM", "memory_pages": 32}, "budget": {"max_total": 300},
                                      "selection_strategy": "BestScore", "redundancy": "Sampling(2)"}),
            module: "mandelbrot",
            input: b"256 192 0 0 256 96 200".to_vec(),
            expect: "completed",
            kill_executor: false,
        },
        DemoJob {
            name: "CCL echo, Random, None",
            spec: serde_json::json!({"runtime": {"type": "CCL", "contract": "", "args": "hello, mesh"},
                                      "budget": {"max_total": 100}, "selection_strategy": "Random"}),
            module: "echo",
            input: Vec::new(),
            expect: "completed",
            kill_executor: false,
        },
        DemoJob {
            // Long enough that the kill lands while it runs: an unoptimised build is ~50x slower.
            name: if cfg!(debug_assertions) {
                "sieve 3e6, executor killed mid-job"
            } else {
                "sieve 1e8, executor killed mid-job"
            },
            spec: serde_json::json!({"runtime": {"type": "WASM", "memory_pages": 1024},
                                      "compute": {"estimated_cpu_hours": 0.01},
                                      "budget": {"max_total": 1000}, "selection_strategy": "LowestPrice"}),
            module: "sieve",
            input: if cfg!(debug_assertions) { b"3000000".to_vec() } else { b"100000000".to_vec() },
            expect: "completed",
            kill_executor: true,
        },
    ];

    let mut rows: Vec<(String, FinalReport, u128)> = Vec::new();
    let mut all_ok = true;
    for job in jobs {
        let mut spec: JobSpec = JobSpec::from_json(&job.spec.to_string()).map_err(|p| p.to_string())?;
        let module = module_bytes(job.module);
        let input = (!job.input.is_empty()).then_some(job.input.as_slice());
        let record =
            client::job_record(&mut spec, &module, input, &submitter, now_ms()).map_err(|p| p.to_string())?;
        let request = client::submit_request(&record, module, job.input.clone(), true);
        let started = Instant::now();
        let mut report = None;
        let mut killed = false;
        let mut victim: Option<String> = None;
        let mut refused = None;
        let children_ref = &mut children;
        let node_dids_ref = &node_dids;
        rt.block_on(client::request(&coordinator, &submitter, &request, &mut |reply| match reply {
            ClientReply::Final(r) => {
                report = Some(r);
                false
            }
            ClientReply::Refused { code, message } => {
                refused = Some(format!("{code} {message}"));
                false
            }
            ClientReply::Progress { status, permille } => {
                let _ = permille;
                if job.kill_executor && !killed && (status == "assigned" || status == "running") {
                    // Find the executor the coordinator chose and kill it without warning.
                    let status = ask_status(&coordinator, &record.cid());
                    if let Some(chosen) = status.and_then(|s| s.first().cloned())
                        && let Some(i) = node_dids_ref.iter().position(|d| d.as_str() == chosen)
                    {
                        let _ = children_ref.0[i + 1].kill();
                        killed = true;
                        victim = Some(chosen);
                    }
                }
                true
            }
            _ => true,
        }))?;
        let elapsed = started.elapsed().as_millis();
        match (report, refused) {
            (Some(r), _) => {
                // A kill counts only if the job then finished elsewhere.
                let ok = r.status == job.expect
                    && (!job.kill_executor
                        || (killed && victim.as_ref().is_some_and(|v| !r.executors.contains(v))));
                all_ok &= ok;
                rows.push((format!("{}{}", job.name, if killed { " (retried)" } else { "" }), r, elapsed));
            }
            (None, Some(why)) => return Err(format!("{}: refused: {why}", job.name)),
            (None, None) => return Err(format!("{}: the coordinator never answered", job.name)),
        }
    }

    let mut audit = None;
    rt.block_on(client::request(&coordinator, &submitter, &ClientRequest::Audit, &mut |reply| {
        if let ClientReply::Audit(a) = reply {
            audit = Some(a);
        }
        false
    }))?;
    let audit = audit.ok_or("no audit")?;
    all_ok &= audit.conserved;

    let name_of = |did: &str| {
        node_dids.iter().position(|d| d.as_str() == did).map_or("?".to_owned(), |i| format!("executor {i}"))
    };
    if json {
        let jobs: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, r, ms)| serde_json::json!({"job": name, "job_id": r.job_id, "status": r.status, "executors": r.executors,
                 "bidders": r.bidders, "paid": r.paid, "receipts": r.receipts, "output_cid": r.output_cid, "ms": ms}))
            .collect();
        output::print_json(
            &serde_json::json!({"jobs": jobs, "conserved": audit.conserved, "granted": audit.granted, "sink": audit.sink, "ok": all_ok}),
        );
    } else {
        println!();
        println!("{:<44} {:<10} {:>5} {:<26} {:<30} {:>7}", "job", "status", "bids", "won by", "paid", "ms");
        println!("{}", "-".repeat(128));
        for (name, r, ms) in &rows {
            let won: Vec<String> = r.executors.iter().map(|d| name_of(d)).collect();
            let paid: Vec<String> =
                r.paid.iter().map(|(d, a)| format!("{a}→{}", name_of(d).replace("executor ", "#"))).collect();
            println!(
                "{:<44} {:<10} {:>5} {:<26} {:<30} {:>7}",
                name,
                r.status,
                r.bidders.len(),
                won.join(", "),
                paid.join(" "),
                ms
            );
        }
        println!();
        for (name, r, _) in &rows {
            println!("{name}");
            println!("  job       {}", r.job_id);
            if let Some(out) = &r.output_cid {
                println!("  output    {out}");
            }
            for receipt in &r.receipts {
                println!("  receipt   {receipt}");
            }
            if let Some(reason) = &r.reason {
                println!("  outcome   {reason}");
            }
        }
        println!();
        println!(
            "ledger: granted {}, slashed into the sink {}, {}",
            audit.granted,
            audit.sink,
            if audit.conserved { "every mana accounted for" } else { "DOES NOT ADD UP" }
        );
        println!(
            "{}",
            if all_ok { "demo: all jobs ended as expected" } else { "demo: SOMETHING WENT WRONG" }
        );
    }
    drop(children);
    Ok(all_ok)
}

fn ask_status(coordinator: &PeerAddr, job: &icn_mesh_core::Cid) -> Option<Vec<String>> {
    let key = Keypair::generate().ok()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let mut executors = None;
    // A nested runtime on this thread is not allowed; run the query on a helper thread.
    let coordinator = coordinator.clone();
    let job = *job;
    std::thread::spawn(move || {
        rt.block_on(client::request(&coordinator, &key, &ClientRequest::Status { job }, &mut |reply| {
            if let ClientReply::Status(s) = reply {
                executors = Some(s.executors);
            }
            false
        }))
        .ok()?;
        executors
    })
    .join()
    .ok()
    .flatten()
}
