//! Record pipeline benchmark: `cargo bench -p icn-mesh-core --bench records`.
//!
//! Pipeline: DAG-CBOR encode + CID + ed25519 sign + redb store (commits batched by 100) + read back +
//! decode, canonical check and signature verify, through the public API (`SignedRecord`, `Store`).
//! Parts: the same steps done one by one with the underlying crates, in the same run, interleaved.
//! Bar: pipeline within 1.2× the sum of its parts.

use std::time::{Duration, Instant};

use icn_mesh_core::Cid;
use icn_mesh_core::dag::{SignedRecord, record_cid};
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::records::{ENGINE, ResultRecord, ResultStatus};
use icn_mesh_core::store::Store;
use serde::{Deserialize, Serialize};

const RECORDS: usize = 2000;
const BATCH: usize = 100;

fn payload(i: u64, job: Cid) -> ResultRecord {
    ResultRecord {
        job,
        award: None,
        status: ResultStatus::Completed,
        failure: None,
        code: None,
        message: None,
        exit_code: Some(0),
        output: Some(job),
        output_bytes: i,
        output_truncated: false,
        fuel_used: 1_000_000 + i,
        fuel_budget: 3_600_000_000,
        peak_memory_bytes: 65_536,
        started_at_ms: 1_795_600_000_000 + i,
        finished_at_ms: 1_795_600_000_100 + i,
        engine: ENGINE.to_owned(),
    }
}

/// The same shapes as `dag`'s private envelope, for measuring the parts with the raw crates.
#[derive(Serialize, Deserialize)]
struct Body<T> {
    kind: String,
    protocol: u32,
    payload: T,
}
#[derive(Serialize, Deserialize)]
struct Envelope<B> {
    body: B,
    signer: String,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

#[derive(Default)]
struct Parts {
    encode: Duration,
    cid: Duration,
    sign: Duration,
    store: Duration,
    read: Duration,
    verify: Duration,
}

fn parts_round(store: &Store, key: &Keypair, job: Cid, offset: u64) -> Parts {
    let mut p = Parts::default();
    let mut pending = Vec::with_capacity(BATCH);
    let mut cids = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS as u64 {
        let t = Instant::now();
        let body = Body { kind: "result".to_owned(), protocol: 1, payload: payload(offset + i, job) };
        let body_bytes = serde_ipld_dagcbor::to_vec(&body).expect("encode");
        p.encode += t.elapsed();
        let t = Instant::now();
        let signature = key.sign(&body_bytes).to_vec();
        p.sign += t.elapsed();
        let t = Instant::now();
        let bytes = serde_ipld_dagcbor::to_vec(&Envelope { body, signer: key.did().to_string(), signature })
            .expect("encode");
        p.encode += t.elapsed();
        let t = Instant::now();
        let cid = record_cid(&bytes);
        p.cid += t.elapsed();
        pending.push((cid, bytes));
        cids.push(cid);
        if pending.len() == BATCH {
            let t = Instant::now();
            let mut batch = store.batch().expect("batch");
            for (cid, bytes) in pending.drain(..) {
                batch.put_record_bytes(cid, &bytes, Some(job)).expect("put");
            }
            batch.commit().expect("commit");
            p.store += t.elapsed();
        }
    }
    for cid in &cids {
        let t = Instant::now();
        let bytes = store.record(cid).expect("read").expect("present");
        p.read += t.elapsed();
        let t = Instant::now();
        let env: Envelope<Body<ResultRecord>> = serde_ipld_dagcbor::from_slice(&bytes).expect("decode");
        assert_eq!(serde_ipld_dagcbor::to_vec(&env).expect("re-encode"), bytes, "canonical");
        let body_bytes = serde_ipld_dagcbor::to_vec(&env.body).expect("encode body");
        key.did().verify(&body_bytes, &env.signature).expect("verifies");
        p.verify += t.elapsed();
    }
    p
}

fn pipeline_round(store: &Store, key: &Keypair, job: Cid, offset: u64) -> Duration {
    let start = Instant::now();
    let mut cids = Vec::with_capacity(RECORDS);
    let mut batch = store.batch().expect("batch");
    for i in 0..RECORDS as u64 {
        let record = SignedRecord::sign(payload(offset + i, job), key).expect("sign");
        batch.put_record(&record, Some(job)).expect("put");
        cids.push(record.cid());
        if cids.len() % BATCH == 0 {
            batch.commit().expect("commit");
            batch = store.batch().expect("batch");
        }
    }
    batch.commit().expect("commit");
    for cid in &cids {
        let bytes = store.record(cid).expect("read").expect("present");
        let record = SignedRecord::<ResultRecord>::decode(&bytes).expect("verifies");
        assert_eq!(record.cid(), *cid);
    }
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.redb")).expect("store");
    let key = Keypair::from_seed(&[5; 32]);
    let job = icn_mesh_core::dag::blob_cid(b"job");
    let rounds = if std::env::args().any(|a| a == "--quick") { 3 } else { 7 };
    let (mut pipeline, mut sums) = (Vec::new(), Vec::new());
    let mut last = Parts::default();
    for round in 0..rounds as u64 {
        // Distinct payloads per round and side, so every put is a new key.
        let parts = parts_round(&store, &key, job, round * 2 * RECORDS as u64);
        sums.push(parts.encode + parts.cid + parts.sign + parts.store + parts.read + parts.verify);
        last = parts;
        pipeline.push(pipeline_round(&store, &key, job, (round * 2 + 1) * RECORDS as u64));
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / RECORDS as f64;
    let (p, s) = (median(pipeline), median(sums));
    println!("\nrecord pipeline, {RECORDS} records per round, commits batched by {BATCH}, {rounds} rounds");
    println!("{:<28} {:>12}", "part (last round)", "µs/record");
    for (name, d) in [
        ("DAG-CBOR encode", last.encode),
        ("CID (sha2-256)", last.cid),
        ("ed25519 sign", last.sign),
        ("redb put + commit", last.store),
        ("redb read", last.read),
        ("decode + canonical + verify", last.verify),
    ] {
        println!("{name:<28} {:>12.2}", per(d));
    }
    println!("{:<28} {:>12.2}", "sum of parts (median)", per(s));
    println!("{:<28} {:>12.2}", "pipeline (median)", per(p));
    println!("{:<28} {:>12.3}   bar <= 1.2", "ratio", p.as_secs_f64() / s.as_secs_f64());
    encoders(job);
    store_writes(if rounds == 3 { 4_000 } else { 10_000 });
}

/// The coordinator's store writes: five new records of about 600 bytes a job, one unit a job under
/// group commit, a flush (fsync of the redo log) every 20 jobs and checkpoints when due, in a
/// 32 MiB cache as `icn coordinator` has. The store grows as it goes, so the cost is shown by
/// quarter: random keys get dearer as their table outgrows the cache.
fn store_writes(jobs: u32) {
    use icn_mesh_core::store::{Db, DbOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let options = DbOptions { cache_bytes: 32 << 20, ..DbOptions::default() };
    let db = Db::open_with(&dir.path().join("writes.redb"), options).expect("db");
    let store = Store::within(db.clone()).expect("store");
    db.group_commit();
    // Records' bytes: distinct and incompressible, as signed records are.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut record = move || {
        let mut bytes = vec![0u8; 620];
        for chunk in bytes.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        (record_cid(&bytes), bytes)
    };
    println!(
        "
store writes: 5 records of 620 bytes a job, a unit a job, group commit, {jobs} jobs"
    );
    println!("{:<28} {:>12}", "jobs", "µs/job");
    let quarter = jobs / 4;
    let mut start = Instant::now();
    for n in 1..=jobs {
        let records: Vec<(Cid, Vec<u8>)> = (0..5).map(|_| record()).collect();
        db.unit(|| {
            let mut batch = store.batch().expect("batch");
            for (cid, bytes) in &records {
                batch.put_record_bytes(*cid, bytes, None).expect("put");
            }
            batch.commit().expect("commit");
        })
        .expect("unit");
        if n % 20 == 0 {
            db.flush().expect("flush");
            db.checkpoint_if_due().expect("checkpoint");
        }
        if n % quarter == 0 {
            let per = start.elapsed().as_secs_f64() * 1e6 / f64::from(quarter);
            println!("{:<28} {per:>12.1}", format!("{}..{n}", n - quarter));
            start = Instant::now();
        }
    }
}

/// The record encoder (`dag::cbor`) against serde_ipld_dagcbor, which it matches byte for byte,
/// on a job body (the largest record, a nested spec) and a result body.
fn encoders(job: Cid) {
    let spec = icn_mesh_core::spec::JobSpec::from_json(include_str!("../../examples/specs/echo-ccl.json"))
        .expect("spec");
    let job_body = Body {
        kind: "job".to_owned(),
        protocol: 1,
        payload: icn_mesh_core::records::JobRecord {
            spec,
            module: job,
            input: Some(job),
            submitted_at_ms: 1,
        },
    };
    let result_body = Body { kind: "result".to_owned(), protocol: 1, payload: payload(1, job) };
    const N: u32 = 20_000;
    fn time<T: Serialize>(value: &T, encode: impl Fn(&T) -> Vec<u8>) -> f64 {
        let start = Instant::now();
        for _ in 0..N {
            std::hint::black_box(encode(std::hint::black_box(value)));
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(N)
    }
    println!("\nDAG-CBOR encoders, µs per body (median of 5)");
    println!("{:<20} {:>18} {:>12}", "body", "serde_ipld_dagcbor", "dag::cbor");
    for (name, reference, ours) in [
        (
            "job",
            median_f(|| time(&job_body, |v| serde_ipld_dagcbor::to_vec(v).expect("encode"))),
            median_f(|| time(&job_body, |v| icn_mesh_core::dag::cbor::to_vec(v).expect("encode"))),
        ),
        (
            "result",
            median_f(|| time(&result_body, |v| serde_ipld_dagcbor::to_vec(v).expect("encode"))),
            median_f(|| time(&result_body, |v| icn_mesh_core::dag::cbor::to_vec(v).expect("encode"))),
        ),
    ] {
        println!("{name:<20} {reference:>18.2} {ours:>12.2}");
    }
}

fn median_f(f: impl Fn() -> f64) -> f64 {
    let mut v: Vec<f64> = (0..5).map(|_| f()).collect();
    v.sort_by(f64::total_cmp);
    v[2]
}
