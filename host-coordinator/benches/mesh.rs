//! Mesh benchmarks: a coordinator and executors as separate `icn` processes on loopback, a client
//! in this process. `cargo bench -p icn-mesh-coordinator --bench mesh [-- latency|throughput|bids|memory]
//! [--quick]`. Prints tables; the figures are quoted in the README.
//!
//! - latency: trivial jobs one after another (four executors, redundancy None), submit → final report,
//!   which the coordinator sends only once the receipts are durable. Compared with the sum of the
//!   parts no design can avoid, each measured in this same run (see `parts`). Its QUIC round trips
//!   are between two processes, as the job's are; the sum with round trips inside one process (no
//!   other process woken) is printed beside it.
//! - throughput: eight executors, 64 jobs in flight, jobs completed per second; the ledger audit
//!   must add up at the end. The coordinator's RSS after these jobs is the memory bar's second half.
//!   For experiments, not the bar: `ICN_JOBS=N` runs N jobs instead of 10,000 (1,000 with
//!   `--quick`), `ICN_EXECUTORS=N` starts N executors instead of eight.
//! - bids: the coordinator's own bid path in this process, as its driver runs it (verify as the
//!   session receives, then check, score, stake lock, store and award, one commit per batch of
//!   queued events), then one flush: signed bids recorded durably per second.
//! - memory: an idle executor's RSS after it has been connected for 60 s (5 s with --quick).
//!
//! `mesh quic-echo` is no benchmark: it is the far end of latency's round trip between processes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use icn_mesh_coordinator::client::{self, Session};
use icn_mesh_coordinator::coordinator::events::{Checked, Event, MAX_EVENTS_PER_COMMIT, VerifyPool};
use icn_mesh_coordinator::coordinator::state::{ExecutorEntry, State};
use icn_mesh_coordinator::ledger::Ledger;
use icn_mesh_core::dag::SignedRecord;
use icn_mesh_core::identity::{Did, Keypair};
use icn_mesh_core::market::{AvailabilityWindow, Bid, Capabilities, CapabilityProof, RuntimeKind};
use icn_mesh_core::net::{self, PeerAddr, frame};
use icn_mesh_core::protocol::{Blob, ClientReply, FromExecutor, RecordBytes, ToExecutor};
use icn_mesh_core::records::JobRecord;
use icn_mesh_core::sandbox::{Control, Sandbox, SandboxLimits};
use icn_mesh_core::spec::Architecture;
use icn_mesh_core::spec::JobSpec;
use icn_mesh_core::store::{Db, Store};

const ECHO: &[u8] = include_bytes!("../../examples/jobs/echo.wasm");

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Child processes killed when dropped.
struct Mesh {
    _dir: tempfile::TempDir,
    children: Vec<Child>,
    coordinator: PeerAddr,
    client: Rc<Keypair>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(t) = std::fs::read_to_string(path)
            && !t.trim().is_empty()
        {
            return t.trim().to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_mesh(executors: usize) -> Mesh {
    let icn = env!("CARGO_BIN_EXE_icn");
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Keypair::generate().expect("key");
    let mut grants = vec![format!("{}=1000000000000", client.did())];
    let mut node_dirs = Vec::new();
    for i in 0..executors {
        let d = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&d).expect("node dir");
        let key = Keypair::generate().expect("key");
        key.save(&d.join("node.key")).expect("save key");
        grants.push(format!("{}=1000000000000", key.did()));
        node_dirs.push(d);
    }
    let coord = dir.path().join("coordinator");
    let mut cmd = Command::new(icn);
    cmd.args(["coordinator", "--listen", "127.0.0.1:0", "--data"]).arg(&coord);
    for g in &grants {
        cmd.args(["--grant", g]);
    }
    // ICN_PROBE=1: the coordinator's debug log (each flush and its duration) to /tmp/coord.log, and
    // each node's log to /tmp/nodeN.log; ICN_PROBE_LOG replaces the coordinator's filter (with
    // `icn_mesh_coordinator=trace`, each message's arrival, verification and application);
    // ICN_PROBE_NODE_LOG sets the nodes' filter. Without ICN_PROBE they run as shipped, logging at
    // the default level.
    let log = std::env::var_os("ICN_PROBE").map_or(Stdio::null(), |_| {
        cmd.env("ICN_LOG", std::env::var("ICN_PROBE_LOG").unwrap_or("icn_mesh_coordinator=debug".into()));
        Stdio::from(std::fs::File::create("/tmp/coord.log").expect("log"))
    });
    let mut children = vec![cmd.stdout(Stdio::null()).stderr(log).spawn().expect("coordinator")];
    let coordinator = PeerAddr::parse(&wait_for(&coord.join("address"))).expect("address");
    for (i, d) in node_dirs.iter().enumerate() {
        let mut node = Command::new(icn);
        if let Some(filter) = std::env::var_os("ICN_PROBE_NODE_LOG") {
            node.env("ICN_LOG", filter);
        }
        children.push(
            node.args(["node", "--coordinator", &coordinator.to_string(), "--data"])
                .arg(d)
                .args(["--price-per-hour", &(20_000 + 1000 * i as u64).to_string()])
                .stdout(Stdio::null())
                .stderr(std::env::var_os("ICN_PROBE").map_or(Stdio::null(), |_| {
                    Stdio::from(std::fs::File::create(format!("/tmp/node{i}.log")).expect("log"))
                }))
                .spawn()
                .expect("node"),
        );
    }
    for d in &node_dirs {
        wait_for(&d.join("did"));
    }
    // Registration follows the did file by a handshake.
    std::thread::sleep(Duration::from_millis(800));
    Mesh { _dir: dir, children, coordinator, client: Rc::new(client) }
}

fn trivial_job(key: &Keypair, n: u64) -> (SignedRecord<JobRecord>, Vec<u8>) {
    let mut spec = JobSpec::from_json(&format!(
        r#"{{"runtime": {{"type": "CCL", "contract": "", "args": "job {n}"}}, "budget": {{"max_total": 100}},
            "selection_strategy": "LowestPrice"}}"#
    ))
    .expect("spec");
    let record = client::job_record(&mut spec, ECHO, None, key, now_ms()).expect("job record");
    (record, Vec::new())
}

/// Submits one trivial job and waits for its final report; returns its status.
async fn run_job(session: &Session, key: &Keypair, n: u64) -> String {
    let (record, input) = trivial_job(key, n);
    let request = client::submit_request(&record, ECHO.to_vec(), input, true);
    let mut status = String::from("no reply");
    let t0 = Instant::now();
    let probe = std::env::var_os("ICN_PROBE").is_some();
    session
        .request(&request, &mut |reply| match reply {
            r if probe && !matches!(r, ClientReply::Final(_)) => {
                eprintln!("{:>8.1} {r:?}", us(t0.elapsed()));
                true
            }
            ClientReply::Final(r) => {
                if probe {
                    eprintln!("{:>8.1} final", us(t0.elapsed()));
                }
                status =
                    if r.status == "completed" { r.status } else { format!("{}: {:?}", r.status, r.reason) };
                false
            }
            ClientReply::Refused { code, message } => {
                status = format!("refused {code} {message}");
                false
            }
            _ => true,
        })
        .await
        .expect("request");
    status
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    quantile(&v, 0.5)
}

/// The median time of `f` over `runs` calls (given the call's number), its result kept from the
/// optimiser and dropped outside the timing.
fn median_time<R>(runs: usize, mut f: impl FnMut(usize) -> R) -> Duration {
    let times = (0..runs)
        .map(|n| {
            let t = Instant::now();
            let r = f(n);
            let e = t.elapsed();
            std::hint::black_box(r);
            e
        })
        .collect();
    median(times)
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The parts of one job's path that no design can avoid, each measured here, medians.
struct Parts {
    /// Between processes, as the job's are.
    round_trip: Duration,
    /// Both ends in one process: shown, not summed.
    round_trip_within: Duration,
    sign: Duration,
    verify: Duration,
    fsync: Duration,
    wasm_start: Duration,
}

impl Parts {
    /// The critical path of a trivial job under redundancy None with four executors:
    /// 3 round trips (client↔coordinator, offer→bid, award→result); 5 signatures (job, bid, award,
    /// result, receipt: under None nobody validates, so there is no validation record); 8 verifications (the job by the coordinator and by the winner,
    /// four bids in turn by the coordinator, the award, the result); 2 fsyncs (the job recorded with
    /// its budget lock, the settlement); one wasm start.
    fn critical_path(&self) -> Duration {
        self.round_trip * 3 + self.sign * 5 + self.verify * 8 + self.fsync * 2 + self.wasm_start
    }

    /// The same with round trips inside one process, which wake no other process: the figure the
    /// bench summed before it measured round trips between processes, printed beside it.
    fn critical_path_within(&self) -> Duration {
        self.critical_path() - self.round_trip * 3 + self.round_trip_within * 3
    }
}

fn measure_parts(dir: &Path) -> Parts {
    let key = Keypair::generate().expect("key");
    let (job, _) = trivial_job(&key, 0);
    let sign = median_time(2000, |n| trivial_job(&key, n as u64));
    let db = Db::open(&dir.join("fsync.redb")).expect("db");
    let store = Store::within(db.clone()).expect("store");
    db.group_commit();
    let fsyncs: Vec<Duration> = (0..300u32)
        .map(|n| {
            store.put_blob(&n.to_be_bytes()).expect("put");
            let t = Instant::now();
            db.flush().expect("flush");
            t.elapsed()
        })
        .collect();
    let sandbox = Sandbox::default();
    let limits = SandboxLimits::default();
    let input: Arc<[u8]> = Arc::from(&b"hello"[..]);
    let wasm_start = median_time(500, |_| {
        let admitted = sandbox.admit(ECHO, "run").expect("admitted");
        sandbox.execute(&admitted, Arc::clone(&input), &limits, &Control::default(), &mut |_| {})
    });
    let (round_trip_within, round_trip) = quic_round_trip();
    Parts {
        round_trip,
        round_trip_within,
        sign,
        verify: verify_time(&job),
        fsync: median(fsyncs),
        wasm_start,
    }
}

/// The median time to decode and verify `job`'s record (this machine's speed varies between runs;
/// the throughput bench prints it beside its figures).
fn verify_time(job: &SignedRecord<JobRecord>) -> Duration {
    median_time(2000, |_| SignedRecord::<JobRecord>::decode(job.bytes()).expect("verifies"))
}

/// The median time of curve25519-dalek's own strict verification, which no key table speeds up:
/// the machine's speed at the moment, comparable across versions of this code (the throughput
/// bench prints it beside its figures, and `ab-mesh.sh` beside each run).
fn plain_verify_time() -> Duration {
    let key = Keypair::generate().expect("key");
    let signature = key.sign(b"the machine's speed");
    let public = key.did().public_key();
    median_time(2000, |_| {
        assert!(icn_mesh_core::identity::verify_strict(&public, b"the machine's speed", &signature));
    })
}

/// Echoes frames on the first stream of the first connection to `endpoint` until it closes.
async fn echo_frames(endpoint: quinn::Endpoint) {
    let conn = endpoint.accept().await.expect("incoming").await.expect("handshake");
    let (mut send, mut recv) = conn.accept_bi().await.expect("stream");
    while let Ok(m) = frame::read::<Vec<u8>>(&mut recv, 1 << 20).await {
        frame::write(&mut send, &m, 1 << 20).await.expect("echo");
    }
}

/// `mesh quic-echo`: the far end of a round trip between processes. Prints its address, then
/// echoes until the connection closes; gives up after a minute, so a bench that died before
/// connecting leaves nothing running.
fn quic_echo_process() {
    runtime().block_on(async {
        let key = Keypair::generate().expect("key");
        let endpoint = net::listen(&key, "127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = PeerAddr { did: key.did().clone(), addr: endpoint.local_addr().expect("addr") };
        println!("{addr}");
        let _ = tokio::time::timeout(Duration::from_secs(60), echo_frames(endpoint)).await;
    });
}

/// The median time of a small frame there and back over one QUIC stream on loopback, to `server`.
async fn round_trips(server: &PeerAddr) -> Duration {
    let client_key = Keypair::generate().expect("key");
    let dialer = net::dialer("127.0.0.1:0".parse().expect("addr")).expect("dialer");
    let conn = net::connect(&dialer, &client_key, server).await.expect("connect");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let message = vec![7u8; 200];
    let mut times = Vec::new();
    for i in 0..3000 {
        let t = Instant::now();
        frame::write(&mut send, &message, 1 << 20).await.expect("write");
        let _: Vec<u8> = frame::read(&mut recv, 1 << 20).await.expect("read");
        if i >= 200 {
            times.push(t.elapsed());
        }
    }
    median(times)
}

/// A QUIC round trip on loopback: `(both ends in this process, on one thread; the far end in a
/// process of its own)`. The job's round trips are between processes, so the second is the part;
/// the first is the protocol's own cost, without waking another process.
fn quic_round_trip() -> (Duration, Duration) {
    let rt = runtime();
    let within = rt.block_on(async {
        let server_key = Keypair::generate().expect("key");
        let endpoint = net::listen(&server_key, "127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = PeerAddr { did: server_key.did().clone(), addr: endpoint.local_addr().expect("addr") };
        tokio::spawn(echo_frames(endpoint));
        round_trips(&addr).await
    });
    let mut child = Command::new(std::env::current_exe().expect("this bench"))
        .arg("quic-echo")
        .stdout(Stdio::piped())
        .spawn()
        .expect("echo process");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("address");
    let addr = PeerAddr::parse(line.trim()).expect("echo address");
    let between = rt.block_on(round_trips(&addr));
    let _ = child.kill();
    let _ = child.wait();
    (within, between)
}

fn latency(quick: bool) {
    let jobs = if quick { 300 } else { 10_000 };
    let mesh = start_mesh(4);
    let parts = measure_parts(mesh._dir.path());
    let rt = runtime();
    let mut cpu_before = MeshCpu::default();
    let mut times = rt.block_on(async {
        let session = Session::open(&mesh.coordinator, &mesh.client).await.expect("session");
        // Warm-up: connections, caches, the executors' first runs.
        for n in 0..20 {
            assert_eq!(run_job(&session, &mesh.client, n).await, "completed");
        }
        let mut times = Vec::with_capacity(jobs);
        cpu_before = MeshCpu::now(&mesh);
        for n in 0..jobs as u64 {
            let t = Instant::now();
            let status = run_job(&session, &mesh.client, 1000 + n).await;
            times.push(t.elapsed());
            assert_eq!(status, "completed", "job {n}");
        }
        session.close().await;
        times
    });
    let cpu = MeshCpu::now(&mesh).since(cpu_before);
    times.sort();
    let sum = parts.critical_path();
    println!("\nEnd-to-end latency, {jobs} trivial jobs one at a time, 4 executors, redundancy None");
    println!("(submit → final report, sent once the receipts are durable)");
    println!("{:<34} {:>10}", "part (median, this run)", "µs");
    println!("{:<34} {:>10.1}", "QUIC round trip, two processes (×3)", us(parts.round_trip));
    println!("{:<34} {:>10.1}", "  (within one process, not summed)", us(parts.round_trip_within));
    println!("{:<34} {:>10.1}", "ed25519 sign of a record (×5)", us(parts.sign));
    println!("{:<34} {:>10.1}", "verify of a record (×8)", us(parts.verify));
    println!("{:<34} {:>10.1}", "fsync (store flush) (×2)", us(parts.fsync));
    println!("{:<34} {:>10.1}", "wasm admit + run echo (×1)", us(parts.wasm_start));
    println!("{:<34} {:>10.1}", "sum of the parts", us(sum));
    let within = parts.critical_path_within();
    println!("{:<34} {:>10.1}", "  (with round trips within one)", us(within));
    println!("{:<10} {:>10} {:>14} {:>14}", "quantile", "µs", "÷ sum of parts", "÷ (within one)");
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)] {
        let v = quantile(&times, q);
        let ratio = |d: Duration| v.as_secs_f64() / d.as_secs_f64();
        println!("{name:<10} {:>10.1} {:>14.2} {:>14.2}", us(v), ratio(sum), ratio(within));
    }
    // The jobs run one at a time, but each keeps several processes busy on two cores: how much
    // CPU a job costs says how much of its latency is waiting for a core.
    let per_job = |d: Duration| us(d) / jobs as f64;
    println!("{:<34} {:>10}", "CPU per job (all processes)", "µs");
    println!("{:<34} {:>10.0}", "coordinator", per_job(cpu.coordinator));
    println!("{:<34} {:>10.0}", "4 executors together", per_job(cpu.executors));
    println!("{:<34} {:>10.0}", "this client process", per_job(cpu.client));
}

/// CPU time used by the coordinator, the executors together, and this process (the client).
#[derive(Debug, Clone, Copy, Default)]
struct MeshCpu {
    coordinator: Duration,
    executors: Duration,
    client: Duration,
}

impl MeshCpu {
    /// What each has used so far.
    fn now(mesh: &Mesh) -> Self {
        Self {
            coordinator: cpu_time(mesh.children[0].id()),
            executors: mesh.children[1..].iter().map(|c| cpu_time(c.id())).sum(),
            client: cpu_time(std::process::id()),
        }
    }

    /// What each has used since `before`.
    fn since(self, before: Self) -> Self {
        Self {
            coordinator: self.coordinator.saturating_sub(before.coordinator),
            executors: self.executors.saturating_sub(before.executors),
            client: self.client.saturating_sub(before.client),
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks/s.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn throughput(quick: bool) {
    let knob =
        |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let jobs = knob("ICN_JOBS", if quick { 1000 } else { 10_000 });
    let in_flight = knob("ICN_IN_FLIGHT", 64) as usize;
    let executors = knob("ICN_EXECUTORS", 8) as usize;
    let verify = verify_time(&trivial_job(&Keypair::generate().expect("key"), 0).0);
    let machine = plain_verify_time();
    let mesh = start_mesh(executors);
    let cpu_before = MeshCpu::now(&mesh);
    let rt = runtime();
    let (elapsed, audit) = rt.block_on(async {
        let session = Rc::new(Session::open(&mesh.coordinator, &mesh.client).await.expect("session"));
        let key = Rc::clone(&mesh.client);
        let next = Rc::new(std::cell::Cell::new(0u64));
        let start = Instant::now();
        let local = tokio::task::LocalSet::new();
        let workers: Vec<_> = (0..in_flight)
            .map(|_| {
                let (session, key, next) = (Rc::clone(&session), Rc::clone(&key), Rc::clone(&next));
                local.spawn_local(async move {
                    loop {
                        let n = next.get();
                        if n >= jobs {
                            break;
                        }
                        next.set(n + 1);
                        let status = run_job(&session, &key, n).await;
                        assert_eq!(status, "completed", "job {n}");
                    }
                })
            })
            .collect();
        local
            .run_until(async {
                for w in workers {
                    w.await.expect("worker");
                }
            })
            .await;
        let elapsed = start.elapsed();
        let mut audit = None;
        session
            .request(&icn_mesh_core::protocol::ClientRequest::Audit, &mut |reply| {
                if let ClientReply::Audit(a) = reply {
                    audit = Some(a);
                }
                false
            })
            .await
            .expect("audit");
        (elapsed, audit.expect("an audit"))
    });
    let coordinator_rss = rss_kib(mesh.children[0].id());
    let cpu = MeshCpu::now(&mesh).since(cpu_before);
    println!(
        "\nThroughput: {jobs} trivial jobs, {executors} executor processes, {in_flight} in flight, all on this machine"
    );
    println!("{:<40} {:>12}", "measure", "value");
    println!("{:<40} {:>12.0}", "jobs completed per second", jobs as f64 / elapsed.as_secs_f64());
    println!("{:<40} {:>12.2}", "wall time (s)", elapsed.as_secs_f64());
    println!("{:<40} {:>12}", "ledger audit adds up", audit.conserved);
    let per_job = |d: Duration| us(d) / jobs as f64;
    println!("{:<40} {:>12.0}", "CPU per job, coordinator (µs)", per_job(cpu.coordinator));
    println!(
        "{:<40} {:>12.0}",
        format!("CPU per job, {executors} executors together (µs)"),
        per_job(cpu.executors)
    );
    println!("{:<40} {:>12.0}", "CPU per job, this client process (µs)", per_job(cpu.client));
    println!(
        "{:<40} {:>12.1}",
        format!("coordinator RSS after {jobs} jobs (MiB)"),
        coordinator_rss as f64 / 1024.0
    );
    println!("{:<40} {:>12.1}", "(a record verify as the mesh does it, µs)", us(verify));
    println!("{:<40} {:>12.1}", "(this machine now: ed25519 verify, µs)", us(machine));
    assert!(audit.conserved, "the ledger audit does not add up");
}

fn executor_caps() -> Capabilities {
    Capabilities {
        cpu_cores: 4,
        memory_mb: 4096,
        disk_mb: 10_240,
        gpu: None,
        runtimes: vec![RuntimeKind::Wasm, RuntimeKind::Ccl],
        architecture: Architecture::X86_64,
        fuel_per_second: 300_000_000,
    }
}

/// Who bids on each job in the bids benchmark.
#[derive(Clone, Copy)]
enum Bidders {
    /// Every executor: each job is opened to all of them (a job asking for many spares, or a flood).
    All,
    /// Those the coordinator offered it to: what the job needs plus `SPARE_OFFERS` while executors
    /// have no other offer to answer, so three for the first jobs and one after (a saturated mesh).
    Offered,
}

/// A coordinator state with `executors` connected executors (their outboxes returned, so offers
/// and awards have somewhere to go) and `jobs` trivial jobs submitted and offered; returns the
/// state, its database and the signed bid of every bidder for every job.
#[allow(clippy::type_complexity)]
fn bidding_state(
    dir: &Path,
    jobs: u64,
    executors: usize,
    bidders: Bidders,
    now: u64,
) -> (State, Db, Vec<(Did, RecordBytes)>, Vec<tokio::sync::mpsc::UnboundedReceiver<ToExecutor>>) {
    // As `icn coordinator` opens it.
    let db = icn_mesh_coordinator::coordinator::open_db(&dir.join("store.redb")).expect("db");
    let key = Arc::new(Keypair::generate().expect("key"));
    let mut state = State::open(key, &db).expect("state");
    let client = Keypair::generate().expect("key");
    state.ledger.grant("g-client", client.did().as_str(), 1 << 50).expect("grant");
    let keys: Vec<Keypair> = (0..executors).map(|_| Keypair::generate().expect("key")).collect();
    let mut outboxes = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        state.ledger.grant(&format!("g{i}"), k.did().as_str(), 1 << 40).expect("grant");
        let (outbox, rx) = tokio::sync::mpsc::unbounded_channel();
        outboxes.push(rx);
        state.executors.insert(
            k.did().clone(),
            ExecutorEntry { outbox, capabilities: executor_caps(), accepting: true, busy: None },
        );
    }
    db.group_commit();
    let mut signed: Vec<(Did, RecordBytes)> = Vec::new();
    for n in 0..jobs {
        let (record, input) = trivial_job(&client, n);
        let reply = state.submit(
            client.did(),
            &RecordBytes(record.bytes().to_vec()),
            Blob(ECHO.to_vec()),
            Blob(input),
            None,
            now,
        );
        assert!(matches!(reply, ClientReply::Accepted { .. }), "{reply:?}");
        let job = state.jobs.get_mut(&record.cid()).expect("the job is open");
        if let Bidders::All = bidders {
            job.offered.extend(keys.iter().map(|k| k.did().clone()));
        }
        for k in keys.iter().filter(|k| job.offered.contains(k.did())) {
            let bid = Bid {
                job: record.cid(),
                bidder: k.did().clone(),
                price: 10,
                completion_time: now / 1000 + 5,
                capabilities: executor_caps(),
                availability: AvailabilityWindow { from: now / 1000, until: now / 1000 + 3600 },
                reputation_score: 0.5,
                completed_similar: 0,
                success_rate: 1.0,
                capability_proof: CapabilityProof::default(),
                valid_until: now / 1000 + 60,
            };
            let bid = SignedRecord::sign(bid, k).expect("sign");
            signed.push((k.did().clone(), RecordBytes(bid.bytes().to_vec())));
        }
    }
    db.flush().expect("flush");
    (state, db, signed, outboxes)
}

/// The coordinator's path for `signed` bids, as its driver takes them: each verified as its session
/// receives it (`Checked::check`), then applied (check, score, stake lock, store, award) `per_commit`
/// events to a commit, then one flush. Returns the elapsed time; asserts every job was awarded.
fn bid_path(
    mut state: State,
    db: &Db,
    signed: &[(Did, RecordBytes)],
    per_commit: usize,
    now: u64,
) -> Duration {
    let start = Instant::now();
    for chunk in signed.chunks(per_commit) {
        let events: Vec<Event> = chunk
            .iter()
            .map(|(did, bytes)| Event::Message {
                did: did.clone(),
                message: Box::new(Checked::check(FromExecutor::Bid(bytes.clone()))),
                at_ms: now,
            })
            .collect();
        db.unit(|| events.into_iter().for_each(|e| state.apply(e))).expect("commit");
    }
    db.flush().expect("flush");
    let elapsed = start.elapsed();
    assert!(state.jobs.values().all(|j| !j.executors.is_empty()), "every job awarded");
    elapsed
}

/// The same path as `icn coordinator` runs it: a task per executor has each of its bids verified by
/// the `VerifyPool` (threads beside the runtime's one) as it arrives and queues it; one task applies
/// whatever is queued in one commit (`MAX_EVENTS_PER_COMMIT` at most), as the driver's
/// `apply_events` does; then one flush.
fn bid_path_pooled(
    state: State,
    db: Db,
    signed: Vec<(Did, RecordBytes)>,
    threads: usize,
    now: u64,
) -> Duration {
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let pool = Rc::new(VerifyPool::start(threads));
        let mut by_executor: std::collections::BTreeMap<Did, Vec<RecordBytes>> = Default::default();
        for (did, bytes) in signed {
            by_executor.entry(did).or_default().push(bytes);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let start = Instant::now();
        let applier = tokio::task::spawn_local(async move {
            let mut state = state;
            let mut batch = Vec::with_capacity(MAX_EVENTS_PER_COMMIT);
            // As `apply_events`: yield first, so the sessions the pool woke queue their events.
            while {
                tokio::task::yield_now().await;
                rx.recv_many(&mut batch, MAX_EVENTS_PER_COMMIT).await > 0
            } {
                db.unit(|| batch.drain(..).for_each(|e| state.apply(e))).expect("commit");
            }
            db.flush().expect("flush");
            state
        });
        for (did, bids) in by_executor {
            let (tx, pool) = (tx.clone(), Rc::clone(&pool));
            tokio::task::spawn_local(async move {
                for bytes in bids {
                    let message = Box::new(pool.check(FromExecutor::Bid(bytes)).await);
                    let _ = tx.send(Event::Message { did: did.clone(), message, at_ms: now });
                }
            });
        }
        drop(tx);
        let state = applier.await.expect("applier");
        let elapsed = start.elapsed();
        assert!(state.jobs.values().all(|j| !j.executors.is_empty()), "every job awarded");
        elapsed
    })
}

fn bids(quick: bool) {
    let (jobs, executors) = if quick { (200, 16) } else { (2000, 16) };
    let now = now_ms();
    let threads = VerifyPool::threads();
    let mut rows = Vec::new();
    // Bids arrive interleaved across jobs, as they do from many executors. One event per commit is
    // the quiet mesh; a full batch is what the driver commits when bids queue up.
    for per_commit in [1, MAX_EVENTS_PER_COMMIT] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (state, db, signed, outboxes) = bidding_state(dir.path(), jobs, executors, Bidders::All, now);
        let elapsed = bid_path(state, &db, &signed, per_commit, now);
        drop(outboxes);
        rows.push((
            format!("{executors} bidders a job; one thread, {per_commit} per commit"),
            signed.len() as f64 / elapsed.as_secs_f64(),
        ));
    }
    for (bidders, name) in [
        (Bidders::All, format!("{executors} bidders a job")),
        (Bidders::Offered, "offers as the coordinator makes them".to_string()),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (state, db, signed, outboxes) = bidding_state(dir.path(), jobs, executors, bidders, now);
        let n = signed.len();
        let name = match bidders {
            Bidders::All => name,
            Bidders::Offered => format!("{:.2} bidders a job ({name})", n as f64 / jobs as f64),
        };
        let elapsed = bid_path_pooled(state, db, signed, threads, now);
        drop(outboxes);
        rows.push((
            format!("{name}; as the coordinator runs it ({threads} verifier thread(s), batched)"),
            n as f64 / elapsed.as_secs_f64(),
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (_state, _db, signed, _outboxes) =
        bidding_state(dir.path(), jobs.min(200), executors, Bidders::All, now);
    let verify_only = {
        let t = Instant::now();
        for (_, bytes) in &signed {
            std::hint::black_box(SignedRecord::<Bid>::decode(&bytes.0).expect("verifies"));
        }
        signed.len() as f64 / t.elapsed().as_secs_f64()
    };
    println!("\nBids: {jobs} jobs, {executors} executors, the coordinator's path in-process");
    println!("(verify, check, score, stake lock, store, award and the losers' releases; then one flush)");
    println!("{:<90} {:>10}", "measure", "bids/s");
    for (name, rate) in rows {
        println!("{name:<90} {rate:>10.0}");
    }
    println!("{:<90} {:>10.0}", "verify alone (decode + ed25519)", verify_only);
}

fn memory(quick: bool) {
    let idle = if quick { 5 } else { 60 };
    let mesh = start_mesh(1);
    std::thread::sleep(Duration::from_secs(idle));
    let node = rss_kib(mesh.children[1].id());
    let coordinator = rss_kib(mesh.children[0].id());
    println!("\nMemory: idle processes, {idle} s after the executor connected");
    println!("{:<40} {:>10}", "process", "RSS MiB");
    println!("{:<40} {:>10.1}", "executor node (icn node)", node as f64 / 1024.0);
    println!("{:<40} {:>10.1}", "coordinator, no jobs", coordinator as f64 / 1024.0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "quic-echo") {
        return quic_echo_process();
    }
    let quick = args.iter().any(|a| a == "--quick");
    let named: Vec<&str> = ["latency", "throughput", "bids", "memory"]
        .into_iter()
        .filter(|n| args.iter().any(|a| a == n))
        .collect();
    let all = named.is_empty();
    if all || named.contains(&"bids") {
        bids(quick);
    }
    if all || named.contains(&"latency") {
        latency(quick);
    }
    if all || named.contains(&"throughput") {
        throughput(quick);
    }
    if all || named.contains(&"memory") {
        memory(quick);
    }
}
