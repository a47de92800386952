//! The coordinator's job journal: where each job stands, in the coordinator's database, so a coordinator
//! killed at any moment can restart and bring every job to a final state.
//!
//! Written at each phase change (recorded, awarded, final). The ledger is the authority on money:
//! on restart a job whose budget lock is gone was settled (its receipts are in the store); a job whose
//! lock is still there is run again from the start, its bid stakes returned untouched. The ledger's
//! operation ids make a repeated settlement pay once, so no crash point pays twice or loses mana.

use icn_mesh_core::Cid;
use icn_mesh_core::identity::Did;
use icn_mesh_core::store::{Db, Logged, LoggedTable};
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

/// `created_at` (u64 big-endian) and job CID bytes -> postcard `Entry`.
///
/// Keyed by when the job arrived, so the open jobs' entries, each written three times, share the
/// last few leaves instead of each landing on a random leaf of a table that grows with every job
/// (a CID is a hash): every such write copied, checksummed and wrote out a 4 KiB page.
const JOURNAL: TableDefinition<&[u8], &[u8]> = TableDefinition::new("journal");

/// Job CID bytes -> postcard `Entry`: the layout before [`JOURNAL`], moved when the journal opens
/// and still known so that an older redo log replays.
const JOBS_BY_CID: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jobs");

/// The journal's tables, for the database's redo log.
pub const TABLES: [&dyn LoggedTable; 2] = [&Logged(JOURNAL), &Logged(JOBS_BY_CID)];

/// Where a job's entry is kept.
fn key(job: &Cid, entry: &Entry) -> Vec<u8> {
    let mut key = entry.created_at.to_be_bytes().to_vec();
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
    /// The journal's table inside `db`.
    pub fn within(db: Db) -> Result<Self, String> {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(JOURNAL).map_err(|e| e.to_string())?;
        // An older journal's entries move in the same transaction (safe to run again: same keys).
        let moved = tx
            .drain_table(JOBS_BY_CID, |cid, bytes| {
                if let (Ok(cid), Some(entry)) = (Cid::try_from(cid), decode(bytes)) {
                    tx.open_table(JOURNAL)?.insert(key(&cid, &entry).as_slice(), bytes)?;
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
        if let Some(moved) = moved {
            tracing::info!("moved {moved} journal entries to the journal keyed by arrival");
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Self { db })
    }

    pub fn save(&self, job: &Cid, entry: &Entry) -> Result<(), String> {
        let bytes = postcard::to_allocvec(entry).map_err(|e| e.to_string())?;
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(JOURNAL)
            .map_err(|e| e.to_string())?
            .insert(key(job, entry).as_slice(), bytes.as_slice())
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }

    /// Every job's entry, in the order the jobs arrived.
    pub fn load(&self) -> Result<Vec<(Cid, Entry)>, String> {
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
            out.push((cid, entry));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::TableHandle;

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

    #[test]
    fn entries_load_in_arrival_order_and_an_older_journal_is_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let jobs: Vec<Cid> = (0..3u8).map(|n| icn_mesh_core::dag::blob_cid(&[n])).collect();
        {
            // The older layout: keyed by CID alone.
            let db = crate::coordinator::open_db(&path).expect("db");
            let tx = db.begin_write().expect("tx");
            let mut old = tx.open_table(JOBS_BY_CID).expect("table");
            let bytes = postcard::to_allocvec(&entry(30, "completed")).expect("encode");
            old.insert(jobs[0].to_bytes().as_slice(), bytes.as_slice()).expect("insert");
            drop(old);
            tx.commit().expect("commit");
        }
        let db = crate::coordinator::open_db(&path).expect("db");
        let journal = Journal::within(db.clone()).expect("journal");
        journal.save(&jobs[1], &entry(20, "pending")).expect("save");
        journal.save(&jobs[2], &entry(10, "pending")).expect("save");
        journal.save(&jobs[1], &entry(20, "assigned")).expect("save again");
        let loaded = journal.load().expect("load");
        assert_eq!(
            loaded.iter().map(|(c, e)| (*c, e.phase.as_str())).collect::<Vec<_>>(),
            vec![(jobs[2], "pending"), (jobs[1], "assigned"), (jobs[0], "completed")]
        );
        assert!(!db.begin_write().expect("tx").has_table(JOBS_BY_CID.name()).expect("tables"));
        // Opening again moves nothing twice.
        assert_eq!(Journal::within(db).expect("journal").load().expect("load").len(), 3);
    }

    /// Entries keep who bid; one written before they did still loads, with nobody named.
    #[test]
    fn bidders_are_kept_and_an_entry_from_before_them_still_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::coordinator::open_db(&dir.path().join("store.redb")).expect("db");
        let journal = Journal::within(db.clone()).expect("journal");
        let jobs: Vec<Cid> = (0..2u8).map(|n| icn_mesh_core::dag::blob_cid(&[n])).collect();
        let bidder = icn_mesh_core::identity::Keypair::from_seed(&[7; 32]).did().clone();
        let current = Entry { bidders: vec![bidder], ..entry(10, "completed") };
        journal.save(&jobs[0], &current).expect("save");
        // The layout before `bidders`: the same fields, in the same order, without it.
        let mut old = postcard::to_allocvec(&entry(20, "completed")).expect("encode");
        assert_eq!(old.pop(), Some(0), "an empty list of bidders is one zero byte, last");
        {
            let tx = db.begin_write().expect("tx");
            tx.open_table(JOURNAL)
                .expect("table")
                .insert(key(&jobs[1], &entry(20, "completed")).as_slice(), old.as_slice())
                .expect("insert");
            tx.commit().expect("commit");
        }
        let loaded = journal.load().expect("load");
        assert_eq!(loaded, vec![(jobs[0], current), (jobs[1], entry(20, "completed"))]);
    }
}
