//! A hostile coordinator against a real `icn node` process: this test speaks the coordinator's side
//! of the wire protocol itself. An honest offer and award are bid on and run (the award's job is the
//! offered one, which the node verified when it bid); a forged receipt, a forged offer, and an award
//! whose job is forged each break the connection, and nothing is bid on or run. Afterwards the
//! node's store holds what it signed and received.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Procs, icn, wait_for};
use icn_mesh_coordinator::client;
use icn_mesh_core::dag::SignedRecord;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::market::Payment;
use icn_mesh_core::net::{self, Hello, PeerAddr, Role, frame};
use icn_mesh_core::protocol::{Blob, FromExecutor, MAX_MESSAGE_BYTES, RecordBytes, ToExecutor};
use icn_mesh_core::records::{
    AwardRecord, JobRecord, PaymentStatus, ReceiptRecord, ResultRecord, ResultStatus,
};
use icn_mesh_core::spec::{JobSpec, SelectionStrategy};

const ECHO: &[u8] = include_bytes!("../../examples/jobs/echo.wasm");

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn job(client: &Keypair, n: u64) -> SignedRecord<JobRecord> {
    let mut spec = JobSpec::from_json(&format!(
        r#"{{"runtime": {{"type": "CCL", "contract": "", "args": "job {n}"}}, "budget": {{"max_total": 100000}},
            "selection_strategy": "LowestPrice"}}"#
    ))
    .expect("spec");
    client::job_record(&mut spec, ECHO, None, client, now_ms()).expect("job record")
}

/// The same record with one byte of its signature flipped: it no longer verifies.
fn forged(record: &SignedRecord<JobRecord>) -> Vec<u8> {
    let mut bytes = record.bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(SignedRecord::<JobRecord>::decode(&bytes).is_err(), "the forgery must not verify");
    bytes
}

/// One executor session, from the coordinator's side.
struct Session {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _conn: quinn::Connection,
}

impl Session {
    async fn accept(endpoint: &quinn::Endpoint) -> Self {
        let incoming = tokio::time::timeout(Duration::from_secs(30), endpoint.accept())
            .await
            .expect("the node connects within 30 s")
            .expect("incoming");
        let conn = incoming.await.expect("handshake");
        let (mut send, mut recv) = conn.accept_bi().await.expect("stream");
        let hello: Hello = frame::read(&mut recv, MAX_MESSAGE_BYTES).await.expect("hello");
        hello.check().expect("version");
        frame::write(&mut send, &Hello::new(Role::Coordinator), MAX_MESSAGE_BYTES).await.expect("hello back");
        let register: FromExecutor = frame::read(&mut recv, MAX_MESSAGE_BYTES).await.expect("register");
        assert!(matches!(register, FromExecutor::Register { .. }), "{register:?}");
        let mut session = Self { send, recv, _conn: conn };
        session.send(&ToExecutor::Registered).await;
        session
    }

    async fn send(&mut self, m: &ToExecutor) {
        frame::write(&mut self.send, m, MAX_MESSAGE_BYTES).await.expect("send");
    }

    /// The next message other than progress, or `None` once the node has closed the stream.
    async fn next(&mut self) -> Option<FromExecutor> {
        loop {
            let read = tokio::time::timeout(
                Duration::from_secs(30),
                frame::read::<FromExecutor>(&mut self.recv, MAX_MESSAGE_BYTES),
            )
            .await
            .expect("a message or the end within 30 s");
            match read {
                Ok(FromExecutor::Progress { .. }) => {}
                Ok(m) => return Some(m),
                Err(_) => return None,
            }
        }
    }
}

fn award(
    coordinator: &Keypair,
    job: &SignedRecord<JobRecord>,
    bid: icn_mesh_core::Cid,
    executor: &icn_mesh_core::identity::Did,
) -> SignedRecord<AwardRecord> {
    let award = AwardRecord {
        job: job.cid(),
        bids: vec![bid],
        executors: vec![executor.clone()],
        validators: Vec::new(),
        strategy: SelectionStrategy::LowestPrice,
        seed: 0,
        price: 1,
        attempt: 1,
        awarded_at_ms: now_ms(),
        adjusted_for: Vec::new(),
    };
    SignedRecord::sign(award, coordinator).expect("sign award")
}

#[test]
fn a_node_bids_runs_and_keeps_records_but_refuses_forged_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let coordinator = Keypair::generate().expect("key");
    let client = Keypair::generate().expect("key");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let endpoint = {
        let _guard = rt.enter();
        net::listen(&coordinator, "127.0.0.1:0".parse().expect("addr")).expect("listen")
    };
    let address = PeerAddr { did: coordinator.did().clone(), addr: endpoint.local_addr().expect("addr") };
    let mut procs = Procs(Vec::new());
    procs.0.push(
        std::process::Command::new(icn())
            .args(["node", "--coordinator", &address.to_string(), "--data"])
            .arg(&data)
            .args(["--price-per-hour", "6000"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node"),
    );
    let node_did = wait_for(&data.join("did"));

    let (bid_cid, result_cid) = rt.block_on(async {
        // Honest: offered, bid on, awarded (the same job bytes), run.
        let mut s = Session::accept(&endpoint).await;
        let honest = job(&client, 1);
        s.send(&ToExecutor::Offer {
            job: RecordBytes(honest.bytes().to_vec()),
            bid_deadline_ms: now_ms() + 5000,
        })
        .await;
        let bid = match s.next().await {
            Some(FromExecutor::Bid(bid)) => bid,
            other => panic!("expected a bid, got {other:?}"),
        };
        let bid = SignedRecord::<icn_mesh_core::market::Bid>::decode(&bid.0).expect("the bid verifies");
        assert_eq!(bid.payload.job, honest.cid());
        assert_eq!(bid.signer.as_str(), node_did);
        let awarded = award(&coordinator, &honest, bid.cid(), &bid.signer);
        s.send(&ToExecutor::Award {
            award: RecordBytes(awarded.bytes().to_vec()),
            job: RecordBytes(honest.bytes().to_vec()),
            module: Blob(ECHO.to_vec()),
            input: Blob(Vec::new()),
            reveal_first: false,
        })
        .await;
        let Some(FromExecutor::Result { record, output }) = s.next().await else {
            panic!("expected a result")
        };
        let result = SignedRecord::<ResultRecord>::decode(&record.0).expect("the result verifies");
        assert_eq!(result.payload.job, honest.cid());
        assert_eq!(result.payload.status, ResultStatus::Completed, "{:?}", result.payload.message);
        assert_eq!(result.payload.output, Some(icn_mesh_core::dag::blob_cid(&output.0)));

        // A receipt with a forged signature: refused, the connection is cut.
        let receipt = ReceiptRecord {
            job: honest.cid(),
            result: Some(result.cid()),
            validation: None,
            executor: bid.signer.clone(),
            submitter: client.did().clone(),
            status: PaymentStatus::Completed,
            payment: Payment {
                base: 1,
                early_bonus: 0,
                quality_bonus: 0,
                reputation_bonus: 0,
                total: 1,
                refund: 0,
            },
            slashed: 0,
            settled_at_ms: now_ms(),
        };
        let mut receipt = SignedRecord::sign(receipt, &coordinator).expect("sign receipt").bytes().to_vec();
        let last = receipt.len() - 1;
        receipt[last] ^= 1;
        s.send(&ToExecutor::Receipt(RecordBytes(receipt))).await;
        assert_eq!(s.next().await, None, "a forged receipt must end the session");

        // A forged offer: no bid, the connection is cut.
        let mut s = Session::accept(&endpoint).await;
        let forged_offer = forged(&job(&client, 2));
        s.send(&ToExecutor::Offer { job: RecordBytes(forged_offer), bid_deadline_ms: now_ms() + 5000 }).await;
        assert_eq!(s.next().await, None, "a forged offer must end the session, not be bid on");

        // The node reconnects. An award whose job is forged (never offered, so verified on
        // arrival): nothing runs, the connection is cut.
        let mut s = Session::accept(&endpoint).await;
        let other = job(&client, 3);
        let award_other = award(&coordinator, &other, bid.cid(), &bid.signer);
        s.send(&ToExecutor::Award {
            award: RecordBytes(award_other.bytes().to_vec()),
            job: RecordBytes(forged(&other)),
            module: Blob(ECHO.to_vec()),
            input: Blob(Vec::new()),
            reveal_first: false,
        })
        .await;
        assert_eq!(s.next().await, None, "an award of a forged job must end the session, not run");
        (bid.cid(), result.cid())
    });

    // What the node signed and received reaches its store (within its store delay and flush).
    for cid in [bid_cid, result_cid] {
        let start = std::time::Instant::now();
        loop {
            let shown = std::process::Command::new(icn())
                .args(["dag", "show", &cid.to_string(), "--data"])
                .arg(&data)
                .output()
                .expect("dag show");
            if shown.status.success() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the node's store never held {cid}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(procs);
}
