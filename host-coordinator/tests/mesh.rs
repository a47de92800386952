//! The mesh between real processes on loopback: a coordinator and executors as separate `icn`
//! processes over QUIC, driven through the CLI as scripts drive it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Procs, icn, wait_for};
use serde_json::Value;

/// The repository root of the checkout this runs in: cargo names the package at run time; the path
/// compiled in names the checkout that built the binary, another one when checkouts share a target
/// directory (cargo reuses a build across checkout paths).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn json_lines(out: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn run(args: &[&str]) -> (i32, Vec<Value>, String) {
    let out = Command::new(icn()).args(args).output().expect("icn runs");
    // One (pretty) JSON object, or JSON lines (`submit --wait` prints the job id, then the end).
    let values = match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(v) => vec![v],
        Err(_) => json_lines(&out),
    };
    (out.status.code().unwrap_or(-1), values, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `icn job submit SPEC --coordinator ADDR --key KEY --module MODULE EXTRA…`.
fn submit(spec: &str, address: &str, key: &str, module: &str, extra: &[&str]) -> (i32, Vec<Value>, String) {
    let mut args = vec!["job", "submit", spec, "--coordinator", address, "--key", key, "--module", module];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn demo_runs_real_jobs_end_to_end() {
    let out = Command::new(icn()).args(["demo", "--json"]).output().expect("demo runs");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "demo printed no JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["conserved"], true);
    assert!(
        report["sink"].as_u64().expect("sink") > 0,
        "the killed executor's stake was slashed: {report:#}"
    );
    let jobs = report["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 5);
    for job in jobs {
        assert_eq!(job["status"], "completed", "{job:#}");
        assert!(!job["receipts"].as_array().expect("receipts").is_empty(), "{job:#}");
    }
    // Full(3): three executors, three receipts.
    assert_eq!(jobs[1]["executors"].as_array().expect("executors").len(), 3);
    assert_eq!(jobs[1]["receipts"].as_array().expect("receipts").len(), 3);
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        // `pid (comm) state ppid ...`; the name may hold spaces and parentheses, so read after the last ')'.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let fields: Vec<&str> =
            stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Whether `pid` is still running (a zombie waiting to be reaped is not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// `icn demo` killed outright (no destructor runs) takes its coordinator and executors with it.
#[test]
fn a_demo_killed_outright_leaves_no_process_behind() {
    // The demo's data directory goes under this test's, which is removed at the end: a demo killed
    // outright does not remove its own.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut demo = Command::new(icn())
        .arg("demo")
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo");
    let started = Instant::now();
    let children = loop {
        let children = children_of(demo.id());
        if children.len() == 5 {
            break children;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the demo did not start its five processes");
        std::thread::sleep(Duration::from_millis(50));
    };
    demo.kill().expect("SIGKILL");
    demo.wait().expect("wait");
    let killed = Instant::now();
    while children.iter().any(|&pid| running(pid)) {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "still running 10 s after the demo was killed: {:?}",
            children.iter().filter(|&&pid| running(pid)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1, "the demo's data went elsewhere");
}

#[test]
fn the_script_facing_contract_holds_between_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (code, keygen, _) = run(&["keygen", "--out", &d("submitter.key"), "--json"]);
    assert_eq!(code, 0);
    let submitter = keygen[0]["did"].as_str().expect("did").to_owned();
    let (_, poor, _) = run(&["keygen", "--out", &d("poor.key"), "--json"]);
    let poor_did = poor[0]["did"].as_str().expect("did").to_owned();

    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(icn())
            .args(["coordinator", "--listen", "127.0.0.1:0", "--data", &d("coord")])
            .args(["--grant", &format!("{submitter}=5000"), "--grant", &format!("{poor_did}=3")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator"),
    );
    let address = wait_for(&dir.path().join("coord/address"));
    assert!(address.starts_with("did:key:z6Mk") && address.contains("@127.0.0.1:"), "{address}");
    for i in 0..2 {
        procs.0.push(
            Command::new(icn())
                .args([
                    "node",
                    "--coordinator",
                    &address,
                    "--data",
                    &d(&format!("node{i}")),
                    "--price-per-hour",
                    "20000",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("node"),
        );
    }
    let node_did = wait_for(&dir.path().join("node0/did"));
    assert!(node_did.starts_with("did:key:"));
    std::thread::sleep(Duration::from_millis(500));

    let spec = root().join("examples/specs/sieve.json").display().to_string();
    let module = root().join("examples/jobs/sieve.wasm").display().to_string();
    // Submit without waiting: {"job_id"} as soon as the job is recorded.
    let (code, lines, err) = submit(&spec, &address, &d("submitter.key"), &module, &["--json"]);
    assert_eq!(code, 0, "{err}");
    let job_id = lines[0]["job_id"].as_str().expect("job_id").to_owned();
    let (code, status, _) = run(&["job", "status", &job_id, "--coordinator", &address, "--json"]);
    assert_eq!(code, 0);
    for field in ["job_id", "status", "executors", "health", "reason"] {
        assert!(status[0].get(field).is_some(), "status lacks {field}: {}", status[0]);
    }
    let states =
        ["pending", "bidding", "assigned", "running", "validating", "completed", "failed", "cancelled"];
    assert!(states.contains(&status[0]["status"].as_str().expect("status")));

    // A second job, followed to its end with --wait (a new submission is a new signed job).
    let (code, lines, err) = submit(&spec, &address, &d("submitter.key"), &module, &["--wait", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(lines[0]["job_id"].is_string(), "the job id comes first: {lines:?}");
    let last = lines.last().expect("final");
    for field in ["job_id", "status", "output_cid", "executors", "paid", "receipts"] {
        assert!(last.get(field).is_some(), "final lacks {field}: {last}");
    }
    assert_eq!(last["status"], "completed", "{last}");
    let receipt = last["receipts"][0].as_str().expect("receipt").to_owned();
    // The first job has finished by now too.
    let start = Instant::now();
    while run(&["job", "status", &job_id, "--coordinator", &address, "--json"]).1[0]["status"] != "completed"
    {
        assert!(start.elapsed() < Duration::from_secs(60), "the first job never completed");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The ledger: what the submitter lost is exactly what the executors gained, and it all adds up.
    let (code, audit, _) = run(&["ledger", "audit", "--coordinator", &address, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(audit[0]["conserved"], true, "{}", audit[0]);
    assert_eq!(audit[0]["granted"], 5003);
    let accounts = audit[0]["accounts"].as_array().expect("accounts");
    assert!(
        accounts
            .iter()
            .all(|a| a.get("did").is_some() && a.get("balance").is_some() && a.get("locked").is_some())
    );
    let earned: u64 = accounts
        .iter()
        .filter(|a| a["did"] != submitter.as_str() && a["did"] != poor_did.as_str())
        .map(|a| a["balance"].as_u64().expect("balance") + a["locked"].as_u64().expect("locked"))
        .sum();
    assert!(earned > 0);
    let (code, balance, _) = run(&["ledger", "balance", &submitter, "--coordinator", &address, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        (balance[0]["balance"].as_u64(), balance[0]["locked"].as_u64()),
        (Some(5000 - earned), Some(0)),
        "{}",
        balance[0]
    );

    // Refusals between processes, each with its code, nothing locked.
    let (code, lines, _) = submit(&spec, &address, &d("poor.key"), &module, &["--json"]);
    assert_eq!((code, lines[0]["code"].as_str()), (2, Some("J002")), "{lines:?}");
    let zk = dir.path().join("zk.json");
    std::fs::write(
        &zk,
        r#"{"runtime": {"type": "WASM"}, "budget": {"max_total": 10}, "redundancy": "ZeroKnowledge"}"#,
    )
    .expect("write");
    let (code, lines, _) =
        submit(&zk.display().to_string(), &address, &d("submitter.key"), &module, &["--json"]);
    assert_eq!((code, lines[0]["code"].as_str()), (2, Some("J005")), "{lines:?}");
    let (_, audit, _) = run(&["ledger", "audit", "--coordinator", &address, "--json"]);
    assert_eq!(audit[0]["conserved"], true);
    let poor_account = audit[0]["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["did"] == poor_did.as_str())
        .cloned();
    assert_eq!(poor_account.map(|a| (a["balance"].clone(), a["locked"].clone())), Some((3.into(), 0.into())));

    // While the daemons run (each holds its store's lock), `dag show` and `dag export` read a copy.
    let (code, shown, err) = run(&["dag", "show", &receipt, "--data", &d("coord"), "--json"]);
    assert_eq!(code, 0, "dag show on a live coordinator's store: {err}");
    assert_eq!(shown[0]["kind"], "receipt", "{shown:?}");
    // Under redundancy None nobody validates: the receipt links the result, and no validation record.
    assert!(shown[0]["payload"]["result"]["/"].is_string(), "{shown:?}");
    assert!(shown[0]["payload"]["validation"].is_null(), "{shown:?}");
    let exported = |dir: &str| {
        Command::new(icn()).args(["dag", "export", &receipt, "--data", dir]).output().is_ok_and(|o| {
            o.status.success() && icn_mesh_core::dag::record_cid(&o.stdout).to_string() == receipt
        })
    };
    let start = std::time::Instant::now();
    // A node makes its receipt durable just after it arrives.
    while !(0..2).any(|i| exported(&d(&format!("node{i}")))) {
        assert!(start.elapsed() < Duration::from_secs(10), "no live node's store holds the receipt");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stop everything; the stores then hold the signed receipt on both sides.
    drop(procs);
    let (code, _, err) = run(&["dag", "show", &receipt, "--data", &d("coord"), "--json"]);
    assert_eq!(code, 0, "{err}");
    let executor_dir = (0..2).map(|i| d(&format!("node{i}"))).find(|dir| {
        Command::new(icn())
            .args(["dag", "export", &receipt, "--data", dir])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(executor_dir.is_some(), "the paid executor's store holds the receipt");
}

/// A fresh executor key in `dir/node`, where [`node_in`] finds it.
fn node_key_in(dir: &Path) -> icn_mesh_core::identity::Keypair {
    let key = icn_mesh_core::identity::Keypair::generate().expect("key");
    std::fs::create_dir_all(dir.join("node")).expect("dir");
    key.save(&dir.join("node/node.key")).expect("save");
    key
}

/// `icn coordinator` on `listen` with its data in `dir/coord` (so a restart on the same port takes
/// up where it stopped), granting `grants`; with `crash_at`, set to abort at that crash point.
fn coordinator_in(
    dir: &Path,
    grants: &[String],
    listen: &str,
    crash_at: Option<&str>,
) -> std::process::Child {
    let mut command = Command::new(icn());
    if let Some(point) = crash_at {
        command.env("ICN_CRASH_AT", point);
    }
    command.args(["coordinator", "--listen", listen, "--data"]).arg(dir.join("coord"));
    for grant in grants {
        command.args(["--grant", grant]);
    }
    command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("coordinator")
}

/// A coordinator from [`coordinator_in`] once it has written its address: it, its address and its
/// port (to restart it on).
fn started(coordinator: std::process::Child, dir: &Path) -> (std::process::Child, String, String) {
    let address = wait_for(&dir.join("coord/address"));
    let port = address.rsplit(':').next().expect("port").to_owned();
    (coordinator, address, port)
}

/// `icn node` with its data in `dir/node`, selling to `address`; returned once it has written its
/// DID.
fn node_in(dir: &Path, address: &str) -> std::process::Child {
    let node = Command::new(icn())
        .args(["node", "--coordinator", address, "--data"])
        .arg(dir.join("node"))
        .args(["--price-per-hour", "20000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    wait_for(&dir.join("node/did"));
    node
}

#[test]
fn a_coordinator_killed_mid_job_restarts_and_finishes_it_paying_once() {
    killed_and_restarted(None);
}

/// Kills the coordinator at a chosen instant inside settlement (see `coordinator/fault.rs`): before
/// the ledger moves, after it moves, after the settlement is durable but before the client hears.
/// Each time the restarted coordinator ends the job completed, paid once, the audit exact.
#[test]
fn a_coordinator_killed_inside_settlement_restarts_paying_once() {
    for point in ["settle-before-ledger", "settle-after-ledger", "final-after-flush"] {
        killed_and_restarted(Some(point));
    }
}

/// Runs a job, kills the coordinator (SIGKILL once the job runs, or at crash point `at`), restarts
/// it on the same address and checks the job completes and is paid exactly once.
fn killed_and_restarted(at: Option<&str>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (_, keygen, _) = run(&["keygen", "--out", &d("submitter.key"), "--json"]);
    let submitter = keygen[0]["did"].as_str().expect("did").to_owned();
    let node_key = node_key_in(dir.path());
    let grants = [format!("{submitter}=5000"), format!("{}=1000", node_key.did())];
    let start_coordinator =
        |listen: &str, crash_at: Option<&str>| coordinator_in(dir.path(), &grants, listen, crash_at);
    let (mut coordinator, address, port) = started(start_coordinator("127.0.0.1:0", at), dir.path());
    let mut procs = Procs(vec![node_in(dir.path(), &address)]);
    std::thread::sleep(Duration::from_millis(300));

    // A job long enough to be running when the coordinator dies (≈ 10 s unoptimised, ~0.2 s optimised).
    let spec = dir.path().join("long.json");
    let n = if cfg!(debug_assertions) { "3000000" } else { "20000000" };
    std::fs::write(&spec, r#"{"runtime": {"type": "WASM", "memory_pages": 256}, "compute": {"estimated_cpu_hours": 0.002}, "budget": {"max_total": 500}}"#).expect("spec");
    let input = dir.path().join("n.txt");
    std::fs::write(&input, n).expect("input");
    let module = root().join("examples/jobs/sieve.wasm").display().to_string();
    let job_id = match at {
        None => {
            let (code, lines, err) = submit(
                &spec.display().to_string(),
                &address,
                &d("submitter.key"),
                &module,
                &["--input", &input.display().to_string(), "--json"],
            );
            assert_eq!(code, 0, "{err}");
            lines[0]["job_id"].as_str().expect("job id").to_owned()
        }
        Some(point) => {
            // Followed to its end (the final report needs a waiting client), where it crashes.
            let mut waiter = Command::new(icn())
                .args(["job", "submit", &spec.display().to_string(), "--coordinator", &address])
                .args(["--key", &d("submitter.key"), "--module", &module])
                .args(["--input", &input.display().to_string(), "--wait", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("waiter");
            let mut first = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(waiter.stdout.take().expect("stdout")),
                &mut first,
            )
            .expect("the job id line");
            procs.0.push(waiter);
            let start = Instant::now();
            while coordinator.try_wait().expect("try_wait").is_none() {
                assert!(start.elapsed() < Duration::from_secs(60), "the coordinator never reached {point}");
                std::thread::sleep(Duration::from_millis(20));
            }
            let line: Value = serde_json::from_str(&first).expect("a JSON line");
            line["job_id"].as_str().expect("job id").to_owned()
        }
    };
    let start = Instant::now();
    while at.is_none()
        && !["assigned", "running"].contains(
            &run(&["job", "status", &job_id, "--coordinator", &address, "--json"]).1[0]["status"]
                .as_str()
                .unwrap_or(""),
        )
    {
        assert!(start.elapsed() < Duration::from_secs(20), "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    // SIGKILL, then a restart on the same address: the genesis grants are not applied twice, the job
    // runs again and completes, and the submitter pays once.
    let _ = coordinator.kill();
    coordinator.wait().expect("reaped");
    let coordinator = start_coordinator(&format!("127.0.0.1:{port}"), None);
    procs.0.push(coordinator);
    let start = Instant::now();
    let final_status = loop {
        let (_, s, _) = run(&["job", "status", &job_id, "--coordinator", &address, "--json"]);
        if let Some(s) = s.first()
            && (s["status"] == "completed" || s["status"] == "failed")
        {
            break s.clone();
        }
        assert!(start.elapsed() < Duration::from_secs(90), "the job never finished after the restart");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(final_status["status"], "completed", "{final_status}");
    let (_, audit, _) = run(&["ledger", "audit", "--coordinator", &address, "--json"]);
    assert_eq!(audit[0]["conserved"], true, "{}", audit[0]);
    assert_eq!(audit[0]["granted"], 6000, "genesis applied once: {}", audit[0]);
    let accounts = audit[0]["accounts"].as_array().expect("accounts");
    let of = |did: &str| {
        accounts
            .iter()
            .find(|a| a["did"] == did)
            .map(|a| (a["balance"].as_u64().expect("b"), a["locked"].as_u64().expect("l")))
    };
    let (node_balance, node_locked) = of(node_key.did().as_str()).expect("node account");
    let (sub_balance, sub_locked) = of(&submitter).expect("submitter account");
    assert_eq!((node_locked, sub_locked), (0, 0), "nothing left locked");
    assert!(node_balance > 1000, "the node was paid");
    assert_eq!(
        sub_balance,
        5000 - (node_balance - 1000),
        "the submitter paid exactly what the node earned, once"
    );
}

#[test]
fn an_out_of_memory_job_is_reassigned_after_a_back_off_with_double_the_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |name: &str| dir.path().join(name).display().to_string();
    let (_, keygen, _) = run(&["keygen", "--out", &d("submitter.key"), "--json"]);
    let submitter = keygen[0]["did"].as_str().expect("did").to_owned();
    let mut grants = vec![format!("{submitter}=5000")];
    let mut dids = Vec::new();
    for i in 0..2 {
        let key = icn_mesh_core::identity::Keypair::generate().expect("key");
        std::fs::create_dir_all(dir.path().join(format!("node{i}"))).expect("dir");
        key.save(&dir.path().join(format!("node{i}/node.key"))).expect("save");
        grants.push(format!("{}=1000", key.did()));
        dids.push(key.did().to_string());
    }
    let mut procs = Procs(Vec::new());
    let mut coordinator = Command::new(icn());
    coordinator.args(["coordinator", "--listen", "127.0.0.1:0", "--data", &d("coord")]);
    for g in &grants {
        coordinator.args(["--grant", g]);
    }
    procs.0.push(coordinator.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("coordinator"));
    let address = wait_for(&dir.path().join("coord/address"));
    // Different prices, so the first award is predictable: node0 is cheaper.
    for (i, price) in [(0, "200000"), (1, "300000")] {
        procs.0.push(
            Command::new(icn())
                .args(["node", "--coordinator", &address, "--data", &d(&format!("node{i}"))])
                .args(["--price-per-hour", price])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("node"),
        );
        wait_for(&dir.path().join(format!("node{i}/did")));
    }
    std::thread::sleep(Duration::from_millis(500));

    // 3,000,000 needs a 1.5 MB sieve; 16 pages are 1 MiB, so the first run is out of memory. §7.2
    // doubles the memory for the second attempt, which the other executor then completes.
    let spec = dir.path().join("tight.json");
    std::fs::write(
        &spec,
        r#"{"runtime": {"type": "WASM", "memory_pages": 16}, "budget": {"max_total": 1000},
            "compute": {"estimated_cpu_hours": 0.001}}"#,
    )
    .expect("spec");
    std::fs::write(dir.path().join("n.txt"), "3000000").expect("input");
    let module = root().join("examples/jobs/sieve.wasm").display().to_string();
    let started = Instant::now();
    let (code, lines, err) = submit(
        &spec.display().to_string(),
        &address,
        &d("submitter.key"),
        &module,
        &["--input", &d("n.txt"), "--wait", "--json"],
    );
    let elapsed = started.elapsed();
    assert_eq!(code, 0, "{err} {lines:?}");
    let last = lines.last().expect("final report");
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["executors"], serde_json::json!([dids[1]]), "reassigned to the other executor: {last}");
    assert!(elapsed >= Duration::from_millis(500), "the retry waited out its back-off ({elapsed:?})");
    let (_, audit, _) = run(&["ledger", "audit", "--coordinator", &address, "--json"]);
    assert_eq!(audit[0]["conserved"], true, "{audit:?}");
    // The failed executor lost half its 5% stake (200 mana price: 10 staked, 5 slashed).
    assert_eq!(audit[0]["sink"], 5, "{audit:?}");
    let first =
        audit[0]["accounts"].as_array().expect("accounts").iter().find(|a| a["did"] == dids[0].as_str());
    assert_eq!(first.map(|a| a["balance"].clone()), Some(995.into()), "{audit:?}");
}

/// A finished job submitted again — the same signed record, as a client that lost its connection
/// would resend it — is answered with its final report, through the same path as any final report:
/// once everything written is durable. Checked at the crash point on that path: a coordinator
/// restarted with `ICN_CRASH_AT=final-after-flush` aborts there instead of answering (the report
/// did not skip the wait), and after one more restart the resubmission gets the first report again,
/// the job paid once.
#[test]
fn a_finished_job_submitted_again_gets_its_report_through_the_durable_path_and_pays_once() {
    use icn_mesh_coordinator::client;
    use icn_mesh_core::identity::Keypair;
    use icn_mesh_core::net::PeerAddr;
    use icn_mesh_core::net::client::Session;
    use icn_mesh_core::protocol::{ClientReply, FinalReport};
    use icn_mesh_core::spec::JobSpec;

    let dir = tempfile::tempdir().expect("tempdir");
    let submitter = Keypair::generate().expect("key");
    let node_key = node_key_in(dir.path());
    let grants = [format!("{}=5000", submitter.did()), format!("{}=1000", node_key.did())];
    let start_coordinator =
        |listen: &str, crash_at: Option<&str>| coordinator_in(dir.path(), &grants, listen, crash_at);
    let (mut coordinator, address, port) = started(start_coordinator("127.0.0.1:0", None), dir.path());
    let mut procs = Procs(vec![node_in(dir.path(), &address)]);

    let module = std::fs::read(root().join("examples/jobs/echo.wasm")).expect("echo.wasm");
    let mut spec = JobSpec::from_json(
        r#"{"runtime": {"type": "CCL", "contract": "", "args": "again"}, "budget": {"max_total": 100}}"#,
    )
    .expect("spec");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock");
    let record =
        client::job_record(&mut spec, &module, None, &submitter, now.as_millis() as u64).expect("record");
    let request = client::submit_request(&record, module.clone(), Vec::new(), true);
    let coordinator_addr = PeerAddr::parse(&address).expect("address");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // The final report of one submission of `request`, or what went wrong: a connection refused or
    // cut before the report came, or `watched` (a coordinator) exiting meanwhile.
    let submit_once = |mut watched: Option<&mut std::process::Child>| -> Result<FinalReport, String> {
        rt.block_on(async {
            let session = Session::open(&coordinator_addr, &submitter).await?;
            let mut report = None;
            let exited = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if let Some(child) = watched.as_deref_mut()
                        && child.try_wait().expect("try_wait").is_some()
                    {
                        return;
                    }
                }
            };
            let mut on_reply = |reply| match reply {
                ClientReply::Final(r) => {
                    report = Some(r);
                    false
                }
                ClientReply::Refused { code, message } => panic!("refused: {code} {message}"),
                _ => true,
            };
            let asked = tokio::select! {
                asked = session.request(&request, &mut on_reply) => asked,
                () = exited => Err("the coordinator exited".into()),
                () = tokio::time::sleep(Duration::from_secs(30)) => Err("no final report within 30 s".into()),
            };
            session.close().await;
            asked.and_then(|()| report.ok_or_else(|| "the stream ended without a final report".into()))
        })
    };
    let first = submit_once(None).expect("the first submission's final report");
    assert_eq!(first.status, "completed", "{first:?}");
    assert!(!first.receipts.is_empty(), "{first:?}");
    // Submitted again while the coordinator still has the job in memory: the same report, at once.
    assert_eq!(submit_once(None).expect("the report again"), first);

    // The settlement is durable (the first report waited for it): SIGKILL, then a coordinator that
    // aborts at the last step before writing a final report.
    let _ = coordinator.kill();
    coordinator.wait().expect("reaped");
    let listen = format!("127.0.0.1:{port}");
    let mut crashing = start_coordinator(&listen, Some("final-after-flush"));
    let start = Instant::now();
    loop {
        let answer = submit_once(Some(&mut crashing));
        if crashing.try_wait().expect("try_wait").is_some() {
            assert!(answer.is_err(), "a final report came from a coordinator that aborted before writing it");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the resubmission never reached final-after-flush: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    procs.0.push(start_coordinator(&listen, None));
    let start = Instant::now();
    let again = loop {
        match submit_once(None) {
            Ok(report) => break report,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(30), "no report after the restart: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(again, first, "the journal's report is the one the client was first given");
    let (_, audit, _) = run(&["ledger", "audit", "--coordinator", &address, "--json"]);
    assert_eq!(audit[0]["conserved"], true, "{}", audit[0]);
    let paid: u64 = first.paid.iter().map(|(_, amount)| amount).sum();
    let accounts = audit[0]["accounts"].as_array().expect("accounts");
    let submitter_account =
        accounts.iter().find(|a| a["did"] == submitter.did().as_str()).expect("the submitter's account");
    assert_eq!(submitter_account["balance"], 5000 - paid, "charged once: {}", audit[0]);
    assert_eq!(submitter_account["locked"], 0, "{}", audit[0]);
}
