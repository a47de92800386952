//! The coordinator's job journal: where each job stands, in the coordinator's database, so a coordinator
//! killed at any moment can restart and bring every job to a final state.
//!
//! Written at each phase change (recorded, awarded, final). The ledger is the authority on money:
//! on restart a job whose budget lock is gone was settled (its receipts are in the store); a job whose
//! lock is still there is run again from the start, its bid stakes returned untouched. The ledger's
//! operation ids make a repeated settlement pay once, so no crash point pays twice or loses mana.
//!
//! It is also where a finished job is found once the coordinator has let it go from memory (only
//! the last [`super::state::KEEP_FINISHED`] stay there): [`Journal::find`] reads its entry through
//! an index by CID.

use icn_mesh_core::Cid;
use icn_mesh_core::identity::Did;
use icn_mesh_core::store::{Db, Logged, LoggedTable};
use redb::{ReadableTable, TableDefinition, TableHandle};
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

/// Job CID bytes -> `created_at`: where a job's entry is in [`JOURNAL`]. Written once, when the
/// job arrives (one more insert a job, the price of not keeping every finished job in memory).
const JOURNAL_INDEX: TableDefinition<&[u8], u64> = TableDefinition::new("journal_index");

/// The journal's tables, for the database's redo log.
pub const TABLES: [&dyn LoggedTable; 3] = [&Logged(JOURNAL), &Logged(JOBS_BY_CID), &Logged(JOURNAL_INDEX)];

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
    /// The journal's tables inside `db`.
    pub fn within(db: Db) -> Result<Self, String> {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        // A journal from before the index gets one, from its entries' keys (before any move below,
        // which indexes what it moves itself).
        let indexed = tx.has_table(JOURNAL_INDEX.name()).map_err(|e| e.to_string())?;
        if !indexed && tx.has_table(JOURNAL.name()).map_err(|e| e.to_string())? {
            let mut keys = Vec::new();
            for row in tx.open_table(JOURNAL).map_err(|e| e.to_string())?.iter().map_err(|e| e.to_string())? {
                keys.push(row.map_err(|e| e.to_string())?.0.value().to_vec());
            }
            let mut index = tx.open_table(JOURNAL_INDEX).map_err(|e| e.to_string())?;
            for key in &keys {
                if let (Some(at), Some(cid)) = (key.get(..8), key.get(8..)) {
                    let at = u64::from_be_bytes(at.try_into().unwrap_or_default());
                    index.insert(cid, at).map_err(|e| e.to_string())?;
                }
            }
            tracing::info!("indexed {} journal entries by job", keys.len());
        }
        tx.open_table(JOURNAL).map_err(|e| e.to_string())?;
        tx.open_table(JOURNAL_INDEX).map_err(|e| e.to_string())?;
        // An older journal's entries move in the same transaction (safe to run again: same keys).
        let moved = tx
            .drain_table(JOBS_BY_CID, |cid, bytes| {
                if let (Ok(cid), Some(entry)) = (Cid::try_from(cid), decode(bytes)) {
                    tx.open_table(JOURNAL)?.insert(key(&cid, &entry).as_slice(), bytes)?;
                    tx.open_table(JOURNAL_INDEX)?.insert(cid.to_bytes().as_slice(), entry.created_at)?;
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

    /// Writes a job's entry the first time: the entry and where to find it by CID.
    pub fn save_new(&self, job: &Cid, entry: &Entry) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(JOURNAL_INDEX)
            .map_err(|e| e.to_string())?
            .insert(job.to_bytes().as_slice(), entry.created_at)
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        self.save(job, entry)
    }

    /// Writes a job's entry again (its phase changed).
    pub fn save(&self, job: &Cid, entry: &Entry) -> Result<(), String> {
        let bytes = postcard::to_allocvec(entry).map_err(|e| e.to_string())?;
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(JOURNAL)
            .map_err(|e| e.to_string())?
            .insert(key(job, entry).as_slice(), bytes.as_slice())
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }

    /// A job's entry, if the journal has it. Read through a write transaction, which inside a
    /// unit is the unit's (a read transaction would first commit the parked units).
    pub fn find(&self, job: &Cid) -> Result<Option<Entry>, String> {
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        let index = tx.open_table(JOURNAL_INDEX).map_err(|e| e.to_string())?;
        let Some(created_at) = index.get(job.to_bytes().as_slice()).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let mut key = created_at.value().to_be_bytes().to_vec();
        key.extend_from_slice(&job.to_bytes());
        let table = tx.open_table(JOURNAL).map_err(|e| e.to_string())?;
        let entry = table.get(key.as_slice()).map_err(|e| e.to_string())?;
        Ok(entry.and_then(|v| decode(v.value())))
    }

    /// The entries `keep` wants (a restart: the jobs not yet final), in the order the jobs arrived.
    /// The others are read and dropped one by one, so a long journal costs time here, not memory.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let loaded = journal.load(|_| true).expect("load");
        assert_eq!(
            loaded.iter().map(|(c, e)| (*c, e.phase.as_str())).collect::<Vec<_>>(),
            vec![(jobs[2], "pending"), (jobs[1], "assigned"), (jobs[0], "completed")]
        );
        assert!(!db.begin_write().expect("tx").has_table(JOBS_BY_CID.name()).expect("tables"));
        // Opening again moves nothing twice.
        assert_eq!(Journal::within(db).expect("journal").load(|_| true).expect("load").len(), 3);
    }

    /// A journal from before its index by CID gets one when it opens; so do entries moved from the
    /// older layout, and new ones.
    #[test]
    fn a_journal_without_its_index_is_indexed_when_it_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let jobs: Vec<Cid> = (0..3u8).map(|n| icn_mesh_core::dag::blob_cid(&[n])).collect();
        {
            let db = crate::coordinator::open_db(&path).expect("db");
            let tx = db.begin_write().expect("tx");
            let bytes = postcard::to_allocvec(&entry(10, "completed")).expect("encode");
            tx.open_table(JOURNAL)
                .expect("table")
                .insert(key(&jobs[0], &entry(10, "completed")).as_slice(), bytes.as_slice())
                .expect("insert");
            let bytes = postcard::to_allocvec(&entry(20, "failed")).expect("encode");
            tx.open_table(JOBS_BY_CID)
                .expect("table")
                .insert(jobs[1].to_bytes().as_slice(), bytes.as_slice())
                .expect("insert");
            tx.commit().expect("commit");
            assert!(!db.begin_write().expect("tx").has_table(JOURNAL_INDEX.name()).expect("tables"));
        }
        let db = crate::coordinator::open_db(&path).expect("db");
        let journal = Journal::within(db).expect("journal");
        journal.save_new(&jobs[2], &entry(30, "pending")).expect("save");
        assert_eq!(journal.find(&jobs[0]).expect("find"), Some(entry(10, "completed")));
        assert_eq!(journal.find(&jobs[1]).expect("find"), Some(entry(20, "failed")));
        assert_eq!(journal.find(&jobs[2]).expect("find"), Some(entry(30, "pending")));
        journal.save(&jobs[2], &entry(30, "completed")).expect("save again");
        assert_eq!(journal.find(&jobs[2]).expect("find"), Some(entry(30, "completed")));
        assert_eq!(journal.find(&icn_mesh_core::dag::blob_cid(b"other")).expect("find"), None);
        assert_eq!(journal.load(|e| e.phase != "completed").expect("load").len(), 1);
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
        let loaded = journal.load(|_| true).expect("load");
        assert_eq!(loaded, vec![(jobs[0], current), (jobs[1], entry(20, "completed"))]);
    }
}
