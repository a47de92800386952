//! `icn coordinator`, `icn node`, `icn job submit|status`, `icn ledger balance|audit`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use icn_mesh_coordinator::client;
use icn_mesh_coordinator::coordinator::{self, CoordinatorConfig};
use icn_mesh_core::ErrorCode;
use icn_mesh_core::identity::{Did, Keypair};
use icn_mesh_core::local::NodeCaps;
use icn_mesh_core::market::{Capabilities, RuntimeKind};
use icn_mesh_core::net::PeerAddr;
use icn_mesh_core::node::{Device, ExecutorNode, NodeEvent};
use icn_mesh_core::policy::{DeviceState, Policy, sysfs};
use icn_mesh_core::protocol::{ClientReply, ClientRequest};
use icn_mesh_core::sandbox::Sandbox;
use icn_mesh_core::spec::{Architecture, JobSpec};

use crate::output::{self, problem_json};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())
}

/// `--grant DID=MANA`.
pub fn parse_grant(text: &str) -> Result<(Did, u64), String> {
    let (did, amount) = text.split_once('=').ok_or_else(|| format!("`{text}`: write --grant DID=MANA"))?;
    let did = Did::parse(did).map_err(|e| e.to_string())?;
    let amount = amount.parse().map_err(|_| format!("`{amount}` is not a whole amount of mana"))?;
    Ok((did, amount))
}

pub fn coordinator(listen: &str, data: PathBuf, grants: Vec<(Did, u64)>, json: bool) -> u8 {
    let listen = match listen.parse() {
        Ok(a) => a,
        Err(_) => return output::fail(&format!("`{listen}` is not HOST:PORT (e.g. 127.0.0.1:7000)")),
    };
    // One runtime thread; records are verified on the coordinator's verifier threads beside it.
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return output::fail(&e),
    };
    let config = CoordinatorConfig { listen, data, grants };
    let result = rt.block_on(coordinator::run(config, |address| {
        if json {
            output::print_json(
                &serde_json::json!({"address": address.to_string(), "did": address.did.as_str()}),
            );
        } else {
            println!("{address}");
        }
    }));
    match result {
        Ok(()) => 0,
        Err(e) => output::fail(&e.to_string()),
    }
}

/// What this machine offers, measured where it can be.
fn capabilities() -> Capabilities {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(1024, |kb| kb / 1024);
    Capabilities {
        cpu_cores: cores,
        memory_mb,
        disk_mb: 10_240,
        gpu: None,
        runtimes: vec![RuntimeKind::Wasm, RuntimeKind::Ccl],
        architecture: if cfg!(target_arch = "aarch64") { Architecture::Arm64 } else { Architecture::X86_64 },
        fuel_per_second: 300_000_000,
    }
}

/// How often `icn node` reads the battery and thermal state from sysfs (one wake-up a minute).
const SYSFS_POLL: Duration = Duration::from_secs(60);

/// The device policy `icn node` runs under: the file's, or the defaults; the state from sysfs.
fn device(policy_file: Option<&Path>) -> Result<Arc<Device>, String> {
    let policy = match policy_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            Policy::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Policy::default(),
    };
    let mut state = DeviceState::default();
    sysfs::read(Path::new("/")).apply_to(&mut state);
    Ok(Device::new(policy, state))
}

pub fn node(coordinator: &str, data: PathBuf, price_per_hour: u64, policy: Option<&Path>) -> u8 {
    let coordinator = match PeerAddr::parse(coordinator) {
        Ok(a) => a,
        Err(e) => return output::fail(&e.to_string()),
    };
    let device = match device(policy) {
        Ok(d) => d,
        Err(e) => return output::fail(&e),
    };
    let (store, key) = match output::open_store(&data).and_then(|s| Ok((s, output::node_key(&data)?))) {
        Ok(pair) => pair,
        Err(e) => return output::fail(&e),
    };
    if let Err(e) = std::fs::write(data.join("did"), format!("{}\n", key.did())) {
        return output::fail(&format!("cannot write {}/did: {e}", data.display()));
    }
    // Bids and results commit without an fsync; the node flushes a second after receipts.
    store.db().group_commit();
    let node = ExecutorNode {
        key: Arc::new(key),
        store: Arc::new(store),
        sandbox: Arc::new(Sandbox::default()),
        caps: NodeCaps::default(),
        capabilities: capabilities(),
        price_per_hour,
        device: Arc::clone(&device),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return output::fail(&e),
    };
    println!("{}", node.key.did());
    let verdict = device.verdict();
    eprintln!("device policy: {} ({})", verdict.decision.name(), verdict.reason);
    rt.block_on(async {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SYSFS_POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                device.update(&sysfs::read(Path::new("/")));
            }
        });
        let mut backoff = FIRST_BACKOFF;
        loop {
            let mut connected = false;
            let mut log = |event: NodeEvent| {
                connected |= matches!(event, NodeEvent::Connected { .. });
                // One write a line: `eprintln!` writes the text and its newline separately, two
                // system calls for each of the five lines a job gives.
                let mut line = describe(&event);
                line.push('\n');
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            };
            let served = node.serve(&coordinator, &mut log).await;
            // A session that got as far as registering starts the back-off again: a node that had
            // been connected for hours reconnects after 200 ms, not after its last outage's delay.
            if connected {
                backoff = FIRST_BACKOFF;
            }
            match served {
                Ok(()) => eprintln!("the coordinator closed the connection; reconnecting"),
                Err(e) => eprintln!("{e}; reconnecting in {backoff:?}"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

/// The node's first wait before reconnecting; it doubles while connecting fails.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

fn describe(event: &NodeEvent) -> String {
    match event {
        NodeEvent::Connected { coordinator } => format!("connected to {coordinator}"),
        NodeEvent::Offered { job } => format!("offered {job}"),
        NodeEvent::Bid { job, price } => format!("bid {price} on {job}"),
        NodeEvent::Declined { job, reason } => format!("declined {job}: {reason}"),
        NodeEvent::Awarded { job } => format!("awarded {job}"),
        NodeEvent::Progress { job, permille } => format!("{job}: {:.1}%", f64::from(*permille) / 10.0),
        NodeEvent::Finished { job, status, result } => format!("finished {job}: {status:?}, result {result}"),
        NodeEvent::Receipt { job, receipt, paid } => format!("paid {paid} for {job}, receipt {receipt}"),
        NodeEvent::Refused { reason } => format!("refused: {reason}"),
        NodeEvent::Policy { decision, reason } => format!("device policy: {} ({reason})", decision.name()),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn submit(
    spec_path: &PathBuf,
    coordinator: &str,
    key_file: &std::path::Path,
    module: Option<PathBuf>,
    input: Option<PathBuf>,
    wait: bool,
    json: bool,
) -> u8 {
    let refuse = |code: ErrorCode, message: String| -> u8 {
        let p = icn_mesh_core::Problem::new(code, "", message);
        if json {
            output::print_json(
                &serde_json::json!({"status": "refused", "code": code, "message": p.message, "problems": [problem_json(&p)]}),
            );
        }
        eprintln!("error: {p}");
        2
    };
    let coordinator = match PeerAddr::parse(coordinator) {
        Ok(a) => a,
        Err(e) => return refuse(ErrorCode::J001, e.to_string()),
    };
    let key = match Keypair::load(key_file) {
        Ok(k) => k,
        Err(e) => return refuse(ErrorCode::J001, e.to_string()),
    };
    let mut spec = match std::fs::read_to_string(spec_path)
        .map_err(|e| format!("{}: {e}", spec_path.display()))
        .and_then(|t| JobSpec::from_json(&t).map_err(|p| p.message))
    {
        Ok(s) => s,
        Err(e) => return refuse(ErrorCode::J001, e),
    };
    let Some(module_path) = module else {
        return refuse(ErrorCode::J001, "give the module file with --module".into());
    };
    let module = match std::fs::read(&module_path) {
        Ok(m) => m,
        Err(e) => return refuse(ErrorCode::J001, format!("{}: {e}", module_path.display())),
    };
    let input = match input.map(std::fs::read).transpose() {
        Ok(i) => i,
        Err(e) => return refuse(ErrorCode::J001, e.to_string()),
    };
    let record = match client::job_record(&mut spec, &module, input.as_deref(), &key, now_ms()) {
        Ok(r) => r,
        Err(p) => return refuse(p.code, p.message),
    };
    let request = client::submit_request(&record, module, input.unwrap_or_default(), wait);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return refuse(ErrorCode::J003, e),
    };
    let bar = !json && std::io::stderr().is_terminal();
    let mut code = 0u8;
    let result = rt.block_on(client::request(&coordinator, &key, &request, &mut |reply| match reply {
        ClientReply::Accepted { job } => {
            if json {
                println!("{}", serde_json::json!({"job_id": job.to_string()}));
            } else {
                println!("{job}");
            }
            wait
        }
        ClientReply::Refused { code: c, message } => {
            code = refuse(c, message);
            false
        }
        ClientReply::Progress { status, permille } => {
            if bar {
                let filled = usize::from(permille / 50);
                eprint!("\r  {status:<10} [{}{}] {:>5.1}%", "#".repeat(filled), " ".repeat(20 - filled.min(20)), f64::from(permille) / 10.0);
            }
            true
        }
        ClientReply::Final(report) => {
            if bar {
                eprint!("\r\x1b[K");
            }
            if report.status != "completed" {
                code = 1;
            }
            if json {
                let paid: serde_json::Map<String, serde_json::Value> = report.paid.iter().map(|(d, a)| (d.clone(), (*a).into())).collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "job_id": report.job_id, "status": report.status, "output_cid": report.output_cid,
                        "executors": report.executors, "paid": paid, "receipts": report.receipts, "reason": report.reason,
                    })
                );
            } else {
                println!("{} {}", report.status, report.reason.as_deref().unwrap_or(""));
                if let Some(out) = &report.output_cid {
                    println!("  output   {out}");
                }
                for (did, amount) in &report.paid {
                    println!("  paid     {amount} to {did}");
                }
                for r in &report.receipts {
                    println!("  receipt  {r}");
                }
            }
            false
        }
        _ => true,
    }));
    match result {
        Ok(()) => code,
        Err(e) => refuse(ErrorCode::J003, format!("cannot reach the coordinator: {e}")),
    }
}

/// A one-shot request with a throwaway key (the coordinator wants every client to prove a key).
fn ask(coordinator: &str, request: ClientRequest) -> Result<ClientReply, String> {
    let coordinator = PeerAddr::parse(coordinator).map_err(|e| e.to_string())?;
    let key = Keypair::generate().map_err(|e| e.to_string())?;
    let mut answer = None;
    runtime()?.block_on(client::request(&coordinator, &key, &request, &mut |reply| {
        answer = Some(reply);
        false
    }))?;
    answer.ok_or_else(|| "the coordinator closed the stream without an answer".to_owned())
}

pub fn status(job: &str, coordinator: &str, json: bool) -> u8 {
    let job = match icn_mesh_core::dag::parse_cid(job) {
        Ok(j) => j,
        Err(e) => return output::fail(&e),
    };
    match ask(coordinator, ClientRequest::Status { job }) {
        Ok(ClientReply::Status(r)) => {
            if json {
                output::print_json(&r);
            } else {
                println!(
                    "{} {}{}",
                    r.job_id,
                    r.status,
                    r.reason.map(|x| format!(" — {x}")).unwrap_or_default()
                );
                for e in &r.executors {
                    println!("  executor {e}");
                }
            }
            0
        }
        Ok(ClientReply::Refused { code, message }) => output::fail(&format!("{code} {message}")),
        Ok(other) => output::fail(&format!("unexpected answer {other:?}")),
        Err(e) => output::fail(&e),
    }
}

pub fn balance(did: &str, coordinator: &str, json: bool) -> u8 {
    match ask(coordinator, ClientRequest::Balance { did: did.to_owned() }) {
        Ok(ClientReply::Balance { did, balance, locked }) => {
            if json {
                output::print_json(&serde_json::json!({"did": did, "balance": balance, "locked": locked}));
            } else {
                println!("{balance} available, {locked} locked");
            }
            0
        }
        Ok(other) => output::fail(&format!("unexpected answer {other:?}")),
        Err(e) => output::fail(&e),
    }
}

pub fn audit(coordinator: &str, json: bool) -> u8 {
    match ask(coordinator, ClientRequest::Audit) {
        Ok(ClientReply::Audit(a)) => {
            if json {
                let accounts: Vec<serde_json::Value> = a
                    .accounts
                    .iter()
                    .map(|(did, balance, locked)| serde_json::json!({"did": did, "balance": balance, "locked": locked}))
                    .collect();
                output::print_json(
                    &serde_json::json!({"granted": a.granted, "accounts": accounts, "sink": a.sink, "conserved": a.conserved}),
                );
            } else {
                println!("{:<60} {:>12} {:>12}", "account", "balance", "locked");
                for (did, balance, locked) in &a.accounts {
                    println!("{did:<60} {balance:>12} {locked:>12}");
                }
                println!(
                    "sink {}, granted {}, {}",
                    a.sink,
                    a.granted,
                    if a.conserved { "conserved" } else { "NOT CONSERVED" }
                );
            }
            if a.conserved { 0 } else { 1 }
        }
        Ok(other) => output::fail(&format!("unexpected answer {other:?}")),
        Err(e) => output::fail(&e),
    }
}
