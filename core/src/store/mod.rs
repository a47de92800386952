//! The node's content store: one redb file holding blobs by CID, records by CID and an index by job.
//!
//! Every write is a redb transaction, durable (`Durability::Immediate`) unless the file's [`Db`] was
//! switched to group commit (then durable at the next flush of its redo log, see `db.rs`): a killed
//! process leaves a file that opens and holds every committed (or flushed) record (see
//! `tests/crash_consistency.rs`). Several puts can share one commit through
//! [`Store::batch`]. Blobs are checked against their CID on the way in, so
//! the store never holds bytes under a name that is not theirs.

mod db;
mod redo;

use std::path::Path;

use cid::Cid;
use redb::{MultimapTableDefinition, ReadableTable, TableDefinition};

use crate::dag::{DAG_CBOR_CODEC, RAW_CODEC, SignedRecord, blob_cid, record_cid};
pub use db::{
    DEFAULT_CACHE_BYTES, DEFAULT_CHECKPOINT_BYTES, Db, DbOptions, Logged, LoggedMultimap, LoggedTable,
    MultimapTable, Table, Tx, log_path,
};

/// CID bytes -> blob bytes.
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
/// CID bytes -> record (DAG-CBOR envelope) bytes.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Job record CID bytes -> CID bytes of the records stored with that job as their index key: a
/// writer indexes only what it will look up by job (the coordinator: receipts and refusals, which a
/// restart reads back; every other record is reached through the DAG's links), since each entry is
/// a multimap insert at a random key.
const BY_JOB: MultimapTableDefinition<&[u8], &[u8]> = MultimapTableDefinition::new("records_by_job");

/// The store's tables, for [`DbOptions::tables`] (to replay the redo log).
pub const TABLES: [&dyn LoggedTable; 3] = [&Logged(BLOBS), &Logged(RECORDS), &LoggedMultimap(BY_JOB)];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: String, source: redb::DatabaseError },
    #[error("store: {0}")]
    Redb(#[from] redb::Error),
    #[error("bytes do not match their CID {0}")]
    CidMismatch(Cid),
    #[error("cannot create the data directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
    #[error("store redo log: {0}")]
    Log(String),
}

macro_rules! redb_from {
    ($($t:ty),*) => { $( impl From<$t> for StoreError { fn from(e: $t) -> Self { Self::Redb(e.into()) } } )* };
}
redb_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A content store: its tables in a redb file of its own or in a shared [`Db`].
#[derive(Debug)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Opens (or creates) the store file at `path`, creating its directory if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::within(Db::open(path)?)
    }

    /// The store's tables inside `db`.
    pub fn within(db: Db) -> Result<Self, StoreError> {
        let tx = db.begin_write()?;
        tx.open_table(BLOBS)?;
        tx.open_table(RECORDS)?;
        tx.open_multimap_table(BY_JOB)?;
        tx.commit()?;
        Ok(Self { db })
    }

    /// The database the store lives in.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Starts a batch: many puts, one commit.
    pub fn batch(&self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch { tx: self.db.begin_write()? })
    }

    /// Stores a blob and returns its CID.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<Cid, StoreError> {
        let mut batch = self.batch()?;
        let cid = batch.put_blob(bytes)?;
        batch.commit()?;
        Ok(cid)
    }

    /// Stores a signed record, indexed under `job` when given.
    pub fn put_record<T>(&self, record: &SignedRecord<T>, job: Option<Cid>) -> Result<(), StoreError> {
        let mut batch = self.batch()?;
        batch.put_record(record, job)?;
        batch.commit()
    }

    pub fn blob(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(BLOBS, cid)
    }

    pub fn record(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(RECORDS, cid)
    }

    /// The raw block for any CID this store holds: a blob (raw codec) or a record (dag-cbor).
    pub fn block(&self, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        match cid.codec() {
            RAW_CODEC => self.blob(cid),
            DAG_CBOR_CODEC => self.record(cid),
            _ => Ok(None),
        }
    }

    /// CIDs of every record indexed under `job`, in CID byte order.
    pub fn records_for_job(&self, job: &Cid) -> Result<Vec<Cid>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_multimap_table(BY_JOB)?;
        let mut out = Vec::new();
        for value in table.get(job.to_bytes().as_slice())? {
            if let Ok(cid) = Cid::try_from(value?.value()) {
                out.push(cid);
            }
        }
        Ok(out)
    }

    fn get(&self, table: TableDefinition<&[u8], &[u8]>, cid: &Cid) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(table)?;
        Ok(table.get(cid.to_bytes().as_slice())?.map(|v| v.value().to_vec()))
    }
}

/// Writes that commit together, or not at all (dropping a batch aborts it, outside a unit).
pub struct Batch<'a> {
    tx: Tx<'a>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batch")
    }
}

impl Batch<'_> {
    /// Stores `bytes` under their CID. Content under a CID never changes, so bytes already stored
    /// are not written again (a write copies the page it lands on, which the next fsync pays for;
    /// the same module arrives with every job of its kind).
    pub fn put_blob(&mut self, bytes: &[u8]) -> Result<Cid, StoreError> {
        let cid = blob_cid(bytes);
        let key = cid.to_bytes();
        let mut table = self.tx.open_table(BLOBS)?;
        if table.get(key.as_slice())?.is_none() {
            table.insert(key.as_slice(), bytes)?;
        }
        Ok(cid)
    }

    pub fn put_record<T>(&mut self, record: &SignedRecord<T>, job: Option<Cid>) -> Result<(), StoreError> {
        self.put_record_bytes(record.cid(), record.bytes(), job)
    }

    /// Stores record bytes under `cid`, which must be their CID.
    pub fn put_record_bytes(&mut self, cid: Cid, bytes: &[u8], job: Option<Cid>) -> Result<(), StoreError> {
        if record_cid(bytes) != cid {
            return Err(StoreError::CidMismatch(cid));
        }
        let key = cid.to_bytes();
        // No look first, as blobs have: a record rarely arrives twice, and the look cost the
        // coordinator as much as half the insert (the page is found once, not twice).
        self.tx.open_table(RECORDS)?.insert(key.as_slice(), bytes)?;
        if let Some(job) = job {
            self.tx.open_multimap_table(BY_JOB)?.insert(job.to_bytes().as_slice(), key.as_slice())?;
        }
        Ok(())
    }

    pub fn commit(self) -> Result<(), StoreError> {
        self.tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::RecordKind;
    use crate::identity::Keypair;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    struct Note(u32);
    impl RecordKind for Note {
        const KIND: &'static str = "test-note";
    }

    #[test]
    fn blobs_records_and_job_index_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/store.redb");
        let key = Keypair::from_seed(&[9; 32]);
        let job = SignedRecord::sign(Note(0), &key).expect("sign");
        let result = SignedRecord::sign(Note(1), &key).expect("sign");
        let blob;
        {
            let store = Store::open(&path).expect("open");
            blob = store.put_blob(b"module bytes").expect("blob");
            store.put_record(&job, Some(job.cid())).expect("job");
            store.put_record(&result, Some(job.cid())).expect("result");
        }
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.blob(&blob).expect("read").as_deref(), Some(&b"module bytes"[..]));
        assert_eq!(store.block(&result.cid()).expect("read").as_deref(), Some(result.bytes()));
        let mut expected = vec![job.cid(), result.cid()];
        expected.sort_by_key(|c| c.to_bytes());
        assert_eq!(store.records_for_job(&job.cid()).expect("index"), expected);
        assert_eq!(store.block(&crate::dag::blob_cid(b"absent")).expect("read"), None);
    }

    #[test]
    fn a_unit_nobody_writes_in_commits_nothing_so_nothing_waits_for_a_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("s.redb")).expect("open");
        let store = Store::within(db.clone()).expect("store");
        db.group_commit();
        let before = db.written();
        db.unit(|| ()).expect("unit");
        assert_eq!(db.written(), before, "an idle unit would make the flusher fsync for nothing");
        let cid = db.unit(|| store.put_blob(b"bytes").expect("put")).expect("unit");
        assert_eq!(db.written(), before + 1);
        assert_eq!(db.flush().expect("flush"), before + 1);
        assert_eq!(store.blob(&cid).expect("read").as_deref(), Some(&b"bytes"[..]));
    }

    #[test]
    fn record_bytes_under_a_wrong_cid_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("open");
        let mut batch = store.batch().expect("batch");
        let wrong = record_cid(b"something else");
        assert!(matches!(batch.put_record_bytes(wrong, b"bytes", None), Err(StoreError::CidMismatch(_))));
    }
}
