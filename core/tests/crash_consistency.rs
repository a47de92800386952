//! A store written by a process that is killed with SIGKILL mid-write opens again and holds every
//! record whose commit had returned, each intact and verifiable.
//!
//! The writer is this same test binary, re-run with `ICN_CRASH_WRITER` set: it writes signed records
//! as fast as it can (single puts, batches and units in turn) and prints each CID once its commit
//! has returned — or, under group commit (the coordinator's mode), once a flush of the redo log
//! after its commit has returned; the reopened store then holds them by replaying that log.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use icn_mesh_core::dag::{AnyRecord, RecordKind, SignedRecord, parse_cid};
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::store::{Db, DbOptions, Store};
use serde::{Deserialize, Serialize};

const WRITER_ENV: &str = "ICN_CRASH_WRITER";
const GROUPED_ENV: &str = "ICN_CRASH_GROUPED";

#[derive(Serialize, Deserialize)]
struct Tick {
    n: u64,
    padding: String,
}

impl RecordKind for Tick {
    const KIND: &'static str = "crash-test-tick";
}

/// The child's side: write until killed.
fn write_forever(path: &Path, grouped: bool) -> ! {
    // A small log bound, so the kills also land around checkpoints and restarted logs.
    let options = DbOptions { checkpoint_bytes: 64 << 10, ..DbOptions::default() };
    let db = Db::open_with(path, options).expect("writer opens the store");
    let store = Store::within(db.clone()).expect("store tables");
    if grouped {
        db.group_commit();
    }
    let key = Keypair::from_seed(&[42; 32]);
    let mut stdout = std::io::stdout().lock();
    let mut volatile = Vec::new();
    for n in 0.. {
        let record =
            SignedRecord::sign(Tick { n, padding: "x".repeat((n % 5000) as usize) }, &key).expect("sign");
        // Rotate single puts, batches and units (under group commit a unit parks redb's
        // transaction for the next one, see `Db::unit`) so every commit path is killed mid-way.
        if n % 3 == 0 {
            store.put_blob(format!("blob {n}").as_bytes()).expect("blob");
            store.put_record(&record, None).expect("record");
        } else if n % 3 == 2 {
            db.unit(|| {
                store.put_blob(format!("blob {n}").as_bytes()).expect("blob");
                store.put_record(&record, None).expect("record");
            })
            .expect("unit");
        } else {
            let mut batch = store.batch().expect("batch");
            batch.put_blob(format!("blob {n}").as_bytes()).expect("blob");
            batch.put_record(&record, None).expect("record");
            batch.commit().expect("commit");
        }
        volatile.push(record.cid());
        if !grouped || n % 7 == 6 {
            if grouped {
                assert!(db.flush().expect("flush") >= db.written() - 1);
                db.checkpoint_if_due().expect("checkpoint");
            }
            for cid in volatile.drain(..) {
                writeln!(stdout, "committed {cid}").and_then(|()| stdout.flush()).expect("stdout");
            }
        }
    }
    unreachable!()
}

#[test]
fn a_killed_writer_leaves_every_committed_record() {
    kill_and_reopen("a_killed_writer_leaves_every_committed_record", false);
}

#[test]
fn a_killed_group_committer_leaves_every_flushed_record() {
    kill_and_reopen("a_killed_group_committer_leaves_every_flushed_record", true);
}

fn kill_and_reopen(test_name: &str, grouped: bool) {
    if let Some(path) = std::env::var_os(WRITER_ENV) {
        write_forever(Path::new(&path), std::env::var_os(GROUPED_ENV).is_some());
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("store.redb");
    let mut committed = Vec::new();
    // Kill at different points, the last two on a file that has already survived a crash.
    for wait_for in [5usize, 200, 50] {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
            .env(WRITER_ENV, &db)
            .env(if grouped { GROUPED_ENV } else { "ICN_CRASH_SINGLE" }, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut seen = 0;
        while seen < wait_for {
            let line = lines.next().expect("writer is alive").expect("utf-8 line");
            if let Some(cid) = line.strip_prefix("committed ") {
                committed.push(parse_cid(cid).expect("a CID"));
                seen += 1;
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        // Lines printed after our last read were committed too.
        for line in lines.map_while(Result::ok) {
            if let Some(cid) = line.strip_prefix("committed ") {
                committed.push(parse_cid(cid).expect("a CID"));
            }
        }

        let store = Store::open(&db).expect("the store opens after SIGKILL");
        for cid in &committed {
            let bytes = store.record(cid).expect("read").unwrap_or_else(|| panic!("committed {cid} lost"));
            let record = AnyRecord::decode(&bytes).expect("record intact and signed");
            assert_eq!(record.cid, *cid);
        }
    }
    assert!(committed.len() >= 255);
}
