//! Hostile peers against a real coordinator process: this test speaks the wire protocol itself, as a
//! cheating executor, beside an honest `icn node` process. Forged and replayed bids, a bid over the
//! budget, a result whose output does not match its CID, silence after winning, an oversized frame and
//! a flood — each refused with a signed reason or a cut connection, the job still completing on the
//! honest node, and the ledger adding up afterwards.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Procs, icn, wait_for};
use icn_mesh_core::Cid;
use icn_mesh_core::dag::SignedRecord;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::market::{AvailabilityWindow, Bid, Capabilities, CapabilityProof, RuntimeKind};
use icn_mesh_core::net::{self, Hello, PeerAddr, Role, frame};
use icn_mesh_core::protocol::{Blob, FromExecutor, MAX_MESSAGE_BYTES, RecordBytes, ToExecutor};
use icn_mesh_core::records::{AwardRecord, ENGINE, JobRecord, RefusalRecord, ResultRecord, ResultStatus};
use icn_mesh_core::spec::Architecture;
use serde_json::Value;

/// The repository root of the checkout this runs in: cargo names the package at run time; the path
/// compiled in names the checkout that built the binary, another one when checkouts share a target
/// directory (cargo reuses a build across checkout paths).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("..")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn caps() -> Capabilities {
    Capabilities {
        cpu_cores: 4,
        memory_mb: 4096,
        disk_mb: 10_000,
        gpu: None,
        runtimes: vec![RuntimeKind::Wasm, RuntimeKind::Ccl],
        architecture: Architecture::X86_64,
        fuel_per_second: 300_000_000,
    }
}

fn bid(job: Cid, bidder: &Keypair, price: u64) -> Bid {
    Bid {
        job,
        bidder: bidder.did().clone(),
        price,
        completion_time: now() + 30,
        capabilities: caps(),
        availability: AvailabilityWindow { from: now() - 5, until: now() + 3600 },
        reputation_score: 0.5,
        completed_similar: 0,
        success_rate: 1.0,
        capability_proof: CapabilityProof::default(),
        valid_until: now() + 60,
    }
}

/// A completed result claiming `output`, as a cheat would send it (nothing was run).
fn claimed_result(job: Cid, award: Cid, output: Cid, output_bytes: u64) -> ResultRecord {
    ResultRecord {
        job,
        award: Some(award),
        status: ResultStatus::Completed,
        failure: None,
        code: None,
        message: None,
        exit_code: Some(0),
        output: Some(output),
        output_bytes,
        output_truncated: false,
        fuel_used: 1,
        fuel_budget: 1,
        peak_memory_bytes: 0,
        started_at_ms: 0,
        finished_at_ms: 0,
        engine: ENGINE.to_owned(),
    }
}

/// The hostile executor's connection.
struct Hostile {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
}

impl Hostile {
    async fn join(coordinator: &PeerAddr, key: &Keypair) -> Self {
        let endpoint = net::dialer("127.0.0.1:0".parse().expect("addr")).expect("dialer");
        let conn = net::connect(&endpoint, key, coordinator).await.expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.expect("stream");
        frame::write(&mut send, &Hello::new(Role::Executor), MAX_MESSAGE_BYTES).await.expect("hello");
        let _: Hello = frame::read(&mut recv, MAX_MESSAGE_BYTES).await.expect("hello back");
        let register = FromExecutor::Register { capabilities: caps(), price_per_hour: 1, accepting: true };
        frame::write(&mut send, &register, MAX_MESSAGE_BYTES).await.expect("register");
        assert_eq!(
            frame::read::<ToExecutor>(&mut recv, MAX_MESSAGE_BYTES).await.expect("registered"),
            ToExecutor::Registered
        );
        Self { send, recv, _conn: conn, _endpoint: endpoint }
    }

    async fn send(&mut self, m: &FromExecutor) {
        frame::write(&mut self.send, m, MAX_MESSAGE_BYTES).await.expect("send");
    }

    /// The next message, skipping none.
    async fn next(&mut self) -> ToExecutor {
        tokio::time::timeout(
            Duration::from_secs(30),
            frame::read::<ToExecutor>(&mut self.recv, MAX_MESSAGE_BYTES),
        )
        .await
        .expect("a message within 30 s")
        .expect("a message")
    }

    /// The next refusal's reason.
    async fn refusal(&mut self) -> RefusalRecord {
        loop {
            if let ToExecutor::Refused(bytes) = self.next().await {
                return SignedRecord::<RefusalRecord>::decode(&bytes.0).expect("refusals are signed").payload;
            }
        }
    }
}

fn submit(address: &str, key_file: &str, spec: &str, module: &str) -> String {
    let out = Command::new(icn())
        .args([
            "job",
            "submit",
            spec,
            "--coordinator",
            address,
            "--key",
            key_file,
            "--module",
            module,
            "--json",
        ])
        .output()
        .expect("submit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["job_id"].as_str().expect("job_id").to_owned()
}

fn status(address: &str, job: &str) -> Value {
    let out = Command::new(icn())
        .args(["job", "status", job, "--coordinator", address, "--json"])
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn hostile_executors_are_refused_and_the_job_still_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| dir.path().join(n).display().to_string();
    let submitter = Keypair::generate().expect("key");
    submitter.save(&dir.path().join("sub.key")).expect("save");
    let cheat = Keypair::generate().expect("key");
    let victim = Keypair::generate().expect("key");
    // The honest executor needs mana for its bid stakes: make its key first, so genesis can grant to it.
    let honest = Keypair::generate().expect("key");
    std::fs::create_dir_all(dir.path().join("honest")).expect("dir");
    honest.save(&dir.path().join("honest/node.key")).expect("save");

    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(icn())
            .args(["coordinator", "--listen", "127.0.0.1:0", "--data", &d("coord")])
            .args([
                "--grant",
                &format!("{}=10000", submitter.did()),
                "--grant",
                &format!("{}=1000", cheat.did()),
            ])
            .args(["--grant", &format!("{}=1000", honest.did())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coordinator"),
    );
    let address = wait_for(&dir.path().join("coord/address"));
    let coordinator = PeerAddr::parse(&address).expect("address");
    procs.0.push(
        Command::new(icn())
            .args(["node", "--coordinator", &address, "--data", &d("honest"), "--price-per-hour", "600000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node"),
    );
    wait_for(&dir.path().join("honest/did"));

    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, r#"{"runtime": {"type": "WASM"}, "budget": {"max_total": 1000}, "selection_strategy": "LowestPrice"}"#)
        .expect("spec");
    let module = root().join("examples/jobs/sieve.wasm").display().to_string();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut hostile = Hostile::join(&coordinator, &cheat).await;
        std::thread::sleep(Duration::from_millis(300));
        let job_id = submit(&address, &d("sub.key"), &spec_path.display().to_string(), &module);
        let ToExecutor::Offer { job, .. } = hostile.next().await else { panic!("expected an offer") };
        let job = SignedRecord::<JobRecord>::decode(&job.0).expect("offered job verifies");
        assert_eq!(job.cid().to_string(), job_id);

        // 1. A bid signed by someone else in the cheat's name.
        let forged = SignedRecord::sign(bid(job.cid(), &cheat, 1), &victim).expect("sign");
        hostile.send(&FromExecutor::Bid(RecordBytes(forged.bytes().to_vec()))).await;
        let r = hostile.refusal().await;
        assert!(r.reason.contains("another DID"), "{r:?}");
        // 2. A record that is not a bid at all (a job record replayed as a bid).
        hostile.send(&FromExecutor::Bid(RecordBytes(job.bytes().to_vec()))).await;
        let r = hostile.refusal().await;
        assert!(r.reason.contains("does not verify"), "{r:?}");
        // 3. A bid for another job (replayed from elsewhere).
        let elsewhere =
            SignedRecord::sign(bid(icn_mesh_core::dag::blob_cid(b"another job"), &cheat, 1), &cheat)
                .expect("sign");
        hostile.send(&FromExecutor::Bid(RecordBytes(elsewhere.bytes().to_vec()))).await;
        let r = hostile.refusal().await;
        assert!(r.reason.contains("no open job"), "{r:?}");
        // 4. A real bid, the lowest: the cheat wins the award.
        let honest_looking = SignedRecord::sign(bid(job.cid(), &cheat, 100), &cheat).expect("sign");
        hostile.send(&FromExecutor::Bid(RecordBytes(honest_looking.bytes().to_vec()))).await;
        // 5. The same bid again (a replay): refused, the first stands and wins. The award and the
        //    refusal may arrive in either order.
        hostile.send(&FromExecutor::Bid(RecordBytes(honest_looking.bytes().to_vec()))).await;
        let (mut award, mut replay_refused) = (None, None);
        while award.is_none() || replay_refused.is_none() {
            match hostile.next().await {
                ToExecutor::Award { award: a, .. } => {
                    award = Some(SignedRecord::<AwardRecord>::decode(&a.0).expect("award verifies"))
                }
                ToExecutor::Refused(bytes) => {
                    replay_refused =
                        Some(SignedRecord::<RefusalRecord>::decode(&bytes.0).expect("signed").payload)
                }
                _ => {}
            }
        }
        let r = replay_refused.expect("refusal");
        assert!(r.reason.contains("not open to a bid from you"), "{r:?}");
        let award = award.expect("award");
        assert_eq!(award.payload.executors, vec![cheat.did().clone()]);

        // 6. A result whose output is not the one its record names.
        let result =
            claimed_result(job.cid(), award.cid(), icn_mesh_core::dag::blob_cid(b"what I claim"), 12);
        let result = SignedRecord::sign(result, &cheat).expect("sign");
        hostile
            .send(&FromExecutor::Result {
                record: RecordBytes(result.bytes().to_vec()),
                output: Blob(b"what I send".to_vec()),
            })
            .await;
        let r = hostile.refusal().await;
        assert!(r.reason.contains("does not match"), "{r:?}");

        // 7. Then silence: after a few seconds the job goes to the honest node and completes there.
        let start = Instant::now();
        let final_status = loop {
            let s = status(&address, &job_id);
            if s["status"] == "completed" || s["status"] == "failed" {
                break s;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the job never finished: {s}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(final_status["status"], "completed", "{final_status}");
        assert!(
            !final_status["executors"]
                .as_array()
                .expect("executors")
                .iter()
                .any(|e| e == cheat.did().as_str())
        );

        // 8. An oversized frame cuts the connection.
        let mut hostile = Hostile::join(&coordinator, &cheat).await;
        hostile.send.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let cut = tokio::time::timeout(
            Duration::from_secs(10),
            frame::read::<ToExecutor>(&mut hostile.recv, MAX_MESSAGE_BYTES),
        )
        .await;
        assert!(matches!(cut, Ok(Err(_))), "the coordinator hung up on an oversized frame");

        // 9. A flood of messages cuts the connection too.
        let mut flooder = Hostile::join(&coordinator, &cheat).await;
        let mut cut_off = false;
        for _ in 0..20_000 {
            let m = FromExecutor::Accepting(true);
            if frame::write(&mut flooder.send, &m, MAX_MESSAGE_BYTES).await.is_err() {
                cut_off = true;
                break;
            }
        }
        if !cut_off {
            let end = tokio::time::timeout(
                Duration::from_secs(10),
                frame::read::<ToExecutor>(&mut flooder.recv, MAX_MESSAGE_BYTES),
            )
            .await;
            cut_off = matches!(end, Ok(Err(_)));
        }
        assert!(cut_off, "a flooding peer is disconnected");
    });

    // Half the cheat's stake went to the sink when it was replaced; every mana is accounted for.
    let out = Command::new(icn())
        .args(["ledger", "audit", "--coordinator", &address, "--json"])
        .output()
        .expect("audit");
    let audit: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(audit["conserved"], true, "{audit}");
    assert_eq!(audit["granted"], 12_000);
    assert_eq!(audit["sink"], 2, "half the cheat's 5-mana stake: {audit}");
}

/// Plays a cheating executor for one job: bids low, and when awarded, commits to and reveals an
/// output it made up. Returns once it has revealed.
async fn cheat_once(hostile: &mut Hostile, cheat: &Keypair) {
    let job = loop {
        if let ToExecutor::Offer { job, .. } = hostile.next().await {
            break SignedRecord::<JobRecord>::decode(&job.0).expect("job");
        }
    };
    // The lowest bid, so the cheat is chosen (its stake: 5).
    let bid = SignedRecord::sign(bid(job.cid(), cheat, 100), cheat).expect("sign");
    hostile.send(&FromExecutor::Bid(RecordBytes(bid.bytes().to_vec()))).await;
    let (award, reveal_first) = loop {
        if let ToExecutor::Award { award, reveal_first, .. } = hostile.next().await {
            break (SignedRecord::<AwardRecord>::decode(&award.0).expect("award"), reveal_first);
        }
    };
    assert!(reveal_first, "redundant jobs commit before they reveal");
    let made_up = b"not the real answer".to_vec();
    let output = icn_mesh_core::dag::blob_cid(&made_up);
    let commitment = icn_mesh_core::node::output_commitment(cheat.did(), &output);
    hostile.send(&FromExecutor::Commit { job: job.cid(), commitment }).await;
    // Wait for the others to commit, sending the heartbeat an honest executor sends while it works.
    loop {
        tokio::select! {
            message = frame::read::<ToExecutor>(&mut hostile.recv, MAX_MESSAGE_BYTES) => {
                if let ToExecutor::Reveal { .. } = message.expect("a message") {
                    break;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                let beat = FromExecutor::Progress { job: job.cid(), permille: 1000, fuel_used: 1 };
                frame::write(&mut hostile.send, &beat, MAX_MESSAGE_BYTES).await.expect("heartbeat");
            }
        }
    }
    let result = claimed_result(job.cid(), award.cid(), output, made_up.len() as u64);
    let result = SignedRecord::sign(result, cheat).expect("sign");
    hostile
        .send(&FromExecutor::Result { record: RecordBytes(result.bytes().to_vec()), output: Blob(made_up) })
        .await;
}

#[test]
fn wrong_outputs_are_outvoted_and_slashed_under_full_and_sampling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |n: &str| dir.path().join(n).display().to_string();
    let submitter = Keypair::generate().expect("key");
    submitter.save(&dir.path().join("sub.key")).expect("save");
    let cheat = Keypair::generate().expect("key");
    let mut grants = vec![format!("{}=10000", submitter.did()), format!("{}=1000", cheat.did())];
    let mut honest_dirs = Vec::new();
    for i in 0..3 {
        let key = Keypair::generate().expect("key");
        let h = dir.path().join(format!("honest{i}"));
        std::fs::create_dir_all(&h).expect("dir");
        key.save(&h.join("node.key")).expect("save");
        grants.push(format!("{}=1000", key.did()));
        honest_dirs.push(h.display().to_string());
    }
    let mut procs = Procs(Vec::new());
    let mut coordinator_cmd = Command::new(icn());
    coordinator_cmd.args(["coordinator", "--listen", "127.0.0.1:0", "--data", &d("coord")]);
    for g in &grants {
        coordinator_cmd.args(["--grant", g]);
    }
    procs.0.push(coordinator_cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("coordinator"));
    let address = wait_for(&dir.path().join("coord/address"));
    let coordinator = PeerAddr::parse(&address).expect("address");
    for h in &honest_dirs {
        procs.0.push(
            Command::new(icn())
                .args(["node", "--coordinator", &address, "--data", h, "--price-per-hour", "200000"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("node"),
        );
        wait_for(&Path::new(h).join("did"));
    }
    let module = root().join("examples/jobs/sieve.wasm").display().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let sink = |address: &str| -> u64 {
        let out = Command::new(icn())
            .args(["ledger", "audit", "--coordinator", address, "--json"])
            .output()
            .expect("audit");
        let audit: Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(audit["conserved"], true, "{audit}");
        audit["sink"].as_u64().expect("sink")
    };

    for (redundancy, expect) in [("Full(3)", "completed"), ("Sampling(3)", "failed")] {
        let spec = dir.path().join("spec.json");
        std::fs::write(
            &spec,
            format!(r#"{{"runtime": {{"type": "WASM"}}, "budget": {{"max_total": 1000}}, "selection_strategy": "LowestPrice", "redundancy": "{redundancy}"}}"#),
        )
        .expect("spec");
        let sink_before = sink(&address);
        let job_id = rt.block_on(async {
            let mut hostile = Hostile::join(&coordinator, &cheat).await;
            std::thread::sleep(Duration::from_millis(300));
            let job_id = submit(&address, &d("sub.key"), &spec.display().to_string(), &module);
            cheat_once(&mut hostile, &cheat).await;
            let start = Instant::now();
            loop {
                let s = status(&address, &job_id);
                if s["status"] == "completed" || s["status"] == "failed" {
                    assert_eq!(s["status"], expect, "{redundancy}: {s}");
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "{redundancy}: never finished: {s}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            job_id
        });
        let coord_log = Command::new(icn())
            .args(["job", "status", &job_id, "--coordinator", &address, "--json"])
            .output()
            .expect("status");
        let s: Value = serde_json::from_slice(&coord_log.stdout).expect("json");
        let reason = s["reason"].as_str().unwrap_or_default().to_owned();
        match redundancy {
            "Full(3)" => assert!(reason.contains("dispute") && reason.contains("1 outvoted"), "{reason}"),
            _ => assert!(reason.contains("rejected"), "{reason}"),
        }
        // The cheat's whole stake (5% of its 100) went to the sink; nobody else lost anything.
        assert_eq!(sink(&address), sink_before + 5, "{redundancy}");
    }
}
