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

/// Job CID bytes -> postcard `Entry`.
const JOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jobs");

/// The journal's table, for the database's redo log.
pub const TABLES: [&dyn LoggedTable; 1] = [&Logged(JOBS)];

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
}

#[derive(Debug)]
pub struct Journal {
    db: Db,
}

impl Journal {
    /// The journal's table inside `db`.
    pub fn within(db: Db) -> Result<Self, String> {
        let tx = db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(JOBS).map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())?;
        Ok(Self { db })
    }

    pub fn save(&self, job: &Cid, entry: &Entry) -> Result<(), String> {
        let bytes = postcard::to_allocvec(entry).map_err(|e| e.to_string())?;
        let tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.open_table(JOBS)
            .map_err(|e| e.to_string())?
            .insert(job.to_bytes().as_slice(), bytes.as_slice())
            .map_err(|e| e.to_string())?;
        tx.commit().map_err(|e| e.to_string())
    }

    pub fn load(&self) -> Result<Vec<(Cid, Entry)>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = tx.open_table(JOBS).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| e.to_string())?;
            let (Ok(cid), Ok(entry)) = (Cid::try_from(k.value()), postcard::from_bytes::<Entry>(v.value()))
            else {
                continue;
            };
            out.push((cid, entry));
        }
        Ok(out)
    }
}
