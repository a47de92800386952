//! The coordinator's job journal: where each job stands, in the coordinator's database, so a coordinator
//! killed at any moment can restart and bring every job to a final state.
//!
//! Written at each phase change (recorded, awarded, final). The ledger is the authority on money:
//! on restart a job whose budget lock is gone was settled (its receipts are in the store); a job whose
//! lock is still there is run again from the start, its bid stakes returned untouched. The ledger's
//! operation ids make a repeated settlement pay once, so no crash point pays twice or loses mana.
//!
//! It is also where a finished job is found once the coordinator has let it go from memory (only
//! the last [`super::state::KEEP_FINISHED`] stay there): an entry's key is the job record's own
//! submission time and CID, so whoever has the job record (the store keeps it) finds its entry
//! with one lookup, and no index by CID costs an insert a job.

use icn_mesh_core::Cid;
use icn_mesh_core::dag::SignedRecord;
use icn_mesh_core::identity::Did;
use icn_mesh_core::records::JobRecord;
use icn_mesh_core::store::{Db, Logged, LoggedTable, Store};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// The job record's `submitted_at_ms` (u64 big-endian) and the job's CID bytes -> postcard `Entry`.
///
/// Keyed by when the job was submitted, so the open jobs' entries, each written three times, share
/// the last few leaves instead of each landing on a random leaf of a table that grows with every
/// job (a CID is a hash): every such write copied, checksummed and wrote out a 4 KiB page.
const JOURNAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal_by_submission");

/// The layout before [`JOURNAL`]: keyed by the second the job arrived here (`created_at`) and its
/// CID, which only a job still in memory could be found by. Moved when the journal opens, and
/// still known so that an older redo log replays.
const JOURNAL_BY_ARRIVAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal");

/// Job CID bytes -> postcard `Entry`: the layout before that, moved the same way.
const JOBS_BY_CID: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jobs");

/// The journal's tables, for the database's redo log.
pub const TABLES: [&dyn LoggedTable; 3] =
    [&Logged(JOURNAL), &Logged(JOURNAL_BY_ARRIVAL), &Logged(JOBS_BY_CID)];

/// Where a job's entry is kept.
fn key(job: &Cid, submitted_at_ms: u64) -> Vec<u8> {
    let mut key = submitted_at_ms.to_be_bytes().to_vec();
    key.extend_from_slice(&job.to_bytes());
    key
}

/// What the journal keeps of a job; the job record and blobs are in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `Phase::name()`.
    pub phase: String,
    pub attempt: u32,
    pub created_at: u64,
    pub executors: Vec<Did>,
    pub validators: Vec<Did>,
    pub excluded: Vec<Did>,
    pub reason: Option<String>,
    pub output: Option<Cid>,
    pub paid: Vec<(Did, u64)>,
    pub receipts: Vec<Cid>,
    pub adjustments: Vec<icn_mesh_core::FailureReason>,
    /// Whose bids stood in the last round (the final report names them). Last: see `decode`.
    pub bidders: Vec<Did>,
}

/// An entry's bytes. An entry written before `bidders` was kept is the same bytes without that
/// last field, and an empty list is one zero byte in postcard: such an entry decodes with it added,
/// naming nobody.
fn decode(bytes: &[u8]) -> Option<Entry> {
    postcard::from_bytes::<Entry>(bytes).ok().or_else(|| {
        let mut with_nobody = bytes.to_vec();
        with_nobody.push(0);
        postcard::from_bytes::<Entry>(&with_nobody).ok()
    })
}

#[derive(Debug)]
pub struct Journal {
    db: Db,
}

impl Journal {
    /// The journal's table inside `db`; entries in an older layout move into it, keyed by their job
    /// records, which `store` holds.
    pub fn within(db: Db, store: &Store) -> Result<Self, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        // Older entries are read first (a read transaction, as the store's reads are), then moved
        // in one write.
        let mut older: Vec<(Cid, Vec<u8>, Entry)> = Vec::new();
        {
            let rtx = db.begin_read().map_err(|e| err(&e))?;
            for (def, cid_at) in [(JOURNAL_BY_ARRIVAL, 8), (JOBS_BY_CID, 0)] {
                let table = match rtx.open_table(def) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => continue,
                    Err(e) => return Err(e.to_string()),
                };
                for row in table.iter().map_err(|e| err(&e))? {
                    let (k, v) = row.map_err(|e| err(&e))?;
                    if let (Some(Ok(cid)), Some(entry)) =
                        (k.value().get(cid_at..).map(Cid::try_from), decode(v.value()))
                    {
                        older.push((cid, v.value().to_vec(), entry));
                    }
                }
            }
        }
        let keyed: Vec<(Vec<u8>, Vec<u8>)> = older
            .into_iter()
            .map(|(cid, bytes, entry)| {
                let submitted = submitted_at_ms(store, &cid).unwrap_or_else(|| {
                    tracing::error!("journalled job {cid} is not in the store; keyed by its arrival");
                    entry.created_at * 1000
                });
                (key(&cid, submitted), bytes)
            })
            .collect();
        let tx = db.begin_write().map_err(|e| err(&e))?;
        {
            let mut journal = tx.open_table(JOURNAL).map_err(|e| err(&e))?;
            for (k, v) in &keyed {
                journal.insert(k.as_slice(), v.as_slice()).map_err(|e| err(&e))?;
            }
        }
        // Safe to run again after a crash: the same keys.
        for def in [JOURNAL_BY_ARRIVAL, JOBS_BY_CID] {
            tx.drain_table(def, |_, _| Ok(())).map_err(|e| err(&e))?;
        }
        if !keyed.is_empty() {
            tracing::info!("moved {} journal entries to the journal keyed by submission", keyed.len());
        }
        tx.commit().map_err(|e| err(&e))?;
        Ok(Self { db })
    }

    /// Writes where a job stands, under its record's submission time.
    pub fn save(&self, job: &Cid, submitted_at_ms: u64, entry: &Entry) -> Result<(), String> {
        let bytes = postcard::to_allocvec(entry).map_err(|e| e.to_string())?;
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(JOURNAL)
            .map_err(|e| e.to_string())?
            .insert(key(job, submitted_at_ms).as_slice(), bytes.as_slice())
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }

    /// A job's entry, if the journal has it. Read through a write transaction, which inside a
    /// unit is the unit's (a read transaction would first commit the parked units).
    pub fn find(&self, job: &Cid, submitted_at_ms: u64) -> Result<Option<Entry>, String> {
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        let table = tx.open_table(JOURNAL).map_err(|e| e.to_string())?;
        let entry = table.get(key(job, submitted_at_ms).as_slice()).map_err(|e| e.to_string())?;
        Ok(entry.and_then(|v| decode(v.value())))
    }

    /// The entries `keep` wants (a restart: the jobs not yet final), in the order the jobs were
    /// submitted. The others are read and dropped one by one, so a long journal costs time here,
    /// not memory.
    pub fn load(&self, keep: impl Fn(&Entry) -> bool) -> Result<Vec<(Cid, Entry)>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = tx.open_table(JOURNAL).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| e.to_string())?;
            let (Some(Ok(cid)), Some(entry)) = (k.value().get(8..).map(Cid::try_from), decode(v.value()))
            else {
                tracing::error!(
                    "a journal entry that does not decode was skipped ({} bytes)",
                    v.value().len()
                );
                continue;
            };
            if keep(&entry) {
                out.push((cid, entry));
            }
        }
        Ok(out)
    }
}

/// When the job `cid` was submitted, from its record in `store`.
pub fn submitted_at_ms(store: &Store, cid: &Cid) -> Option<u64> {
    let bytes = store.record(cid).ok().flatten()?;
    Some(SignedRecord::<JobRecord>::decode(&bytes).ok()?.payload.submitted_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableHandle;

    const ECHO: &[u8] = include_bytes!("../../../examples/jobs/echo.wasm");

    fn entry(created_at: u64, phase: &str) -> Entry {
        Entry {
            phase: phase.to_owned(),
            attempt: 1,
            created_at,
            executors: Vec::new(),
            validators: Vec::new(),
            excluded: Vec::new(),
            reason: None,
            output: None,
            paid: Vec::new(),
            receipts: Vec::new(),
            adjustments: Vec::new(),
            bidders: Vec::new(),
        }
    }

    /// A job record submitted at `at_ms`, stored in `store`; returns its CID.
    fn job(store: &Store, n: u8, at_ms: u64) -> Cid {
        let client = icn_mesh_core::identity::Keypair::from_seed(&[2; 32]);
        let mut spec = icn_mesh_core::spec::JobSpec::from_json(&format!(
            r#"{{"runtime": {{"type": "CCL", "contract": "", "args": "job {n}"}}, "budget": {{"max_total": 100}}}}"#
        ))
        .expect("spec");
        let record = crate::client::job_record(&mut spec, ECHO, None, &client, at_ms).expect("record");
        store.put_record(&record, None).expect("store");
        record.cid()
    }

    /// Entries load in the order their jobs were submitted and are found by CID and submission
    /// time; both older layouts (keyed by CID, then by arrival here) move in when the journal opens.
    #[test]
    fn entries_load_in_submission_order_and_older_journals_are_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let jobs: Vec<Cid>;
        {
            let db = crate::coordinator::open_db(&path).expect("db");
            let store = Store::within(db.clone()).expect("store");
            jobs = vec![
                job(&store, 0, 30_000),
                job(&store, 1, 20_000),
                job(&store, 2, 10_000),
                job(&store, 3, 40_000),
            ];
            let tx = db.begin_write().expect("tx");
            let bytes = postcard::to_allocvec(&entry(31, "completed")).expect("encode");
            tx.open_table(JOBS_BY_CID)
                .expect("table")
                .insert(jobs[0].to_bytes().as_slice(), bytes.as_slice())
                .expect("insert");
            let mut arrival = 21u64.to_be_bytes().to_vec();
            arrival.extend_from_slice(&jobs[1].to_bytes());
            let bytes = postcard::to_allocvec(&entry(21, "failed")).expect("encode");
            tx.open_table(JOURNAL_BY_ARRIVAL)
                .expect("table")
                .insert(arrival.as_slice(), bytes.as_slice())
                .expect("insert");
            tx.commit().expect("commit");
        }
        let db = crate::coordinator::open_db(&path).expect("db");
        let store = Store::within(db.clone()).expect("store");
        let journal = Journal::within(db.clone(), &store).expect("journal");
        journal.save(&jobs[2], 10_000, &entry(11, "pending")).expect("save");
        journal.save(&jobs[3], 40_000, &entry(41, "pending")).expect("save");
        journal.save(&jobs[2], 10_000, &entry(11, "assigned")).expect("save again");
        let loaded = journal.load(|_| true).expect("load");
        assert_eq!(
            loaded.iter().map(|(c, e)| (*c, e.phase.as_str())).collect::<Vec<_>>(),
            vec![(jobs[2], "assigned"), (jobs[1], "failed"), (jobs[0], "completed"), (jobs[3], "pending")]
        );
        assert_eq!(journal.load(|e| e.phase == "pending").expect("load").len(), 1);
        assert_eq!(journal.find(&jobs[0], 30_000).expect("find"), Some(entry(31, "completed")));
        assert_eq!(journal.find(&jobs[1], 20_000).expect("find"), Some(entry(21, "failed")));
        assert_eq!(journal.find(&jobs[1], 21_000).expect("find"), None, "found only under its submission");
        assert_eq!(submitted_at_ms(&store, &jobs[1]), Some(20_000));
        let tx = db.begin_write().expect("tx");
        assert!(!tx.has_table(JOBS_BY_CID.name()).expect("tables"));
        assert!(!tx.has_table(JOURNAL_BY_ARRIVAL.name()).expect("tables"));
        drop(tx);
        // Opening again moves nothing twice.
        assert_eq!(Journal::within(db, &store).expect("journal").load(|_| true).expect("load").len(), 4);
    }

    /// Entries keep who bid; one written before they did still loads, with nobody named.
    #[test]
    fn bidders_are_kept_and_an_entry_from_before_them_still_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::coordinator::open_db(&dir.path().join("store.redb")).expect("db");
        let store = Store::within(db.clone()).expect("store");
        let journal = Journal::within(db.clone(), &store).expect("journal");
        let jobs: Vec<Cid> = (0..2u8).map(|n| icn_mesh_core::dag::blob_cid(&[n])).collect();
        let bidder = icn_mesh_core::identity::Keypair::from_seed(&[7; 32]).did().clone();
        let current = Entry { bidders: vec![bidder], ..entry(10, "completed") };
        journal.save(&jobs[0], 10, &current).expect("save");
        // The layout before `bidders`: the same fields, in the same order, without it.
        let mut old = postcard::to_allocvec(&entry(20, "completed")).expect("encode");
        assert_eq!(old.pop(), Some(0), "an empty list of bidders is one zero byte, last");
        {
            let tx = db.begin_write().expect("tx");
            tx.open_table(JOURNAL)
                .expect("table")
                .insert(key(&jobs[1], 20).as_slice(), old.as_slice())
                .expect("insert");
            tx.commit().expect("commit");
        }
        let loaded = journal.load(|_| true).expect("load");
        assert_eq!(loaded, vec![(jobs[0], current), (jobs[1], entry(20, "completed"))]);
    }
}
