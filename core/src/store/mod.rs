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

use crate::dag::{CidBytes, DAG_CBOR_CODEC, RAW_CODEC, SignedRecord, blob_cid, record_cid};
pub use db::{
    DEFAULT_CACHE_BYTES, DEFAULT_CHECKPOINT_BYTES, Db, DbOptions, Logged, LoggedMultimap, LoggedTable,
    MultimapTable, Table, Tx, log_path,
};

/// CID bytes -> blob bytes.
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
/// Record CID bytes -> the record's number in [`RECORD_BYTES`].
///
/// Records are kept in the order they arrive, with a small index by CID, not in one table keyed by
/// CID: a CID is a hash, so there every insert landed on a random leaf of a table that grows with
/// every job, and each copied, checksummed and wrote out a 4 KiB page for one 600-byte record.
/// Now the bytes fill the last leaf in turn, and only the index, about a tenth of the size and so
/// mostly cached, takes random inserts. Writing 5 records a job as the coordinator does, the last
/// 2,500 of 10,000 jobs cost 145-184 µs a job before, 86-92 after (`cargo bench --bench records`,
/// "store writes").
const RECORD_INDEX: TableDefinition<&[u8], u64> = TableDefinition::new("record_index");
/// Record number (rising, from 0) -> record (DAG-CBOR envelope) bytes.
const RECORD_BYTES: TableDefinition<u64, &[u8]> = TableDefinition::new("record_bytes");
/// CID bytes -> record bytes: the layout before [`RECORD_INDEX`]. A store that has it is moved to
/// the new one when opened; it stays known so that an older redo log still replays.
const RECORDS_BY_CID: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Job record CID bytes -> CID bytes of the records stored with that job as their index key: a
/// writer indexes only what it will look up by job (the coordinator: receipts and refusals, which a
/// restart reads back; every other record is reached through the DAG's links), since each entry is
/// a multimap insert at a random key.
const BY_JOB: MultimapTableDefinition<&[u8], &[u8]> = MultimapTableDefinition::new("records_by_job");

/// The store's tables, for [`DbOptions::tables`] (to replay the redo log).
pub const TABLES: [&dyn LoggedTable; 5] = [
    &Logged(BLOBS),
    &Logged(RECORD_INDEX),
    &Logged(RECORD_BYTES),
    &LoggedMultimap(BY_JOB),
    &Logged(RECORDS_BY_CID),
];

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
        tx.open_table(RECORD_INDEX)?;
        tx.open_table(RECORD_BYTES)?;
        tx.open_multimap_table(BY_JOB)?;
        tx.commit()?;
        let store = Self { db };
        store.move_records_by_cid()?;
        Ok(store)
    }

    /// Moves records from the layout before [`RECORD_INDEX`] into it, in one transaction, and
    /// drops the old table; nothing to do (one lookup) for a store that never had it. Streamed: a
    /// phone's store may be larger than its free memory.
    fn move_records_by_cid(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        let moved = tx.drain_table(RECORDS_BY_CID, |cid, bytes| {
            let cid =
                Cid::try_from(cid).map_err(|e| StoreError::Log(format!("a stored record's key: {e}")))?;
            check_record_cid(cid, bytes)?;
            index_record(&tx, cid, bytes)
        })?;
        if let Some(moved) = moved {
            tx.commit()?;
            tracing::info!("moved {moved} record(s) to the store's record index");
        }
        Ok(())
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
        let tx = self.db.begin_read()?;
        let Some(number) = tx.open_table(RECORD_INDEX)?.get(cid.to_bytes().as_slice())?.map(|n| n.value())
        else {
            return Ok(None);
        };
        Ok(tx.open_table(RECORD_BYTES)?.get(number)?.map(|v| v.value().to_vec()))
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

/// Refuses record bytes from elsewhere that are not those of `cid`. Bytes made here (a
/// [`SignedRecord`], [`CidBytes`]) carry the CID computed from them and are not hashed again.
fn check_record_cid(cid: Cid, bytes: &[u8]) -> Result<(), StoreError> {
    if record_cid(bytes) != cid {
        return Err(StoreError::CidMismatch(cid));
    }
    Ok(())
}

/// Stores record bytes, which are those of `cid`, under the next number and indexes them by CID,
/// unless the CID is indexed already.
fn index_record(tx: &Tx<'_>, cid: Cid, bytes: &[u8]) -> Result<(), StoreError> {
    let key = cid.to_bytes();
    let key = key.as_slice();
    let mut index = tx.open_table(RECORD_INDEX)?;
    if index.get(key)?.is_none() {
        // The next number is read in this transaction, which is redb's only writer: two stores
        // over one database, or two threads, cannot take the same one.
        let mut records = tx.open_table(RECORD_BYTES)?;
        let number = records.last()?.map_or(0, |(n, _)| n.value() + 1);
        records.insert(number, bytes)?;
        index.insert(key, number)?;
    }
    Ok(())
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
        self.put_made(record.cid(), record.bytes(), job)
    }

    /// Stores a record kept as [`CidBytes`].
    pub fn put_cid_bytes(&mut self, record: &CidBytes, job: Option<Cid>) -> Result<(), StoreError> {
        self.put_made(record.cid(), record.bytes(), job)
    }

    /// Stores record bytes under `cid`, which must be their CID (checked).
    pub fn put_record_bytes(&mut self, cid: Cid, bytes: &[u8], job: Option<Cid>) -> Result<(), StoreError> {
        check_record_cid(cid, bytes)?;
        self.put_made(cid, bytes, job)
    }

    /// Stores a record whose CID was computed from its bytes when it was made, and indexes it
    /// under `job` if there is one.
    fn put_made(&mut self, cid: Cid, bytes: &[u8], job: Option<Cid>) -> Result<(), StoreError> {
        index_record(&self.tx, cid, bytes)?;
        if let Some(job) = job {
            self.tx
                .open_multimap_table(BY_JOB)?
                .insert(job.to_bytes().as_slice(), cid.to_bytes().as_slice())?;
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
    use redb::{ReadableTableMetadata, TableHandle};
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
    fn records_in_the_older_layout_are_moved_when_the_store_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        let key = Keypair::from_seed(&[9; 32]);
        let records: Vec<_> = (0..3).map(|n| SignedRecord::sign(Note(n), &key).expect("sign")).collect();
        {
            let db = Db::open(&path).expect("open");
            let tx = db.begin_write().expect("tx");
            let mut old = tx.open_table(RECORDS_BY_CID).expect("table");
            for r in &records {
                old.insert(r.cid().to_bytes().as_slice(), r.bytes()).expect("insert");
            }
            drop(old);
            tx.commit().expect("commit");
        }
        for _ in 0..2 {
            let store = Store::open(&path).expect("open");
            for r in &records {
                assert_eq!(store.record(&r.cid()).expect("read").as_deref(), Some(r.bytes()));
            }
            let tx = store.db().begin_write().expect("tx");
            assert!(!tx.has_table(RECORDS_BY_CID.name()).expect("tables"), "the old table is gone");
            // Each record once: moving again (a second open) adds nothing.
            assert_eq!(tx.open_table(RECORD_BYTES).expect("table").len().expect("len"), 3);
        }
    }

    #[test]
    fn a_record_stored_twice_is_kept_once_and_numbers_rise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.redb")).expect("open");
        let key = Keypair::from_seed(&[9; 32]);
        let (a, b) = (
            SignedRecord::sign(Note(1), &key).expect("sign"),
            SignedRecord::sign(Note(2), &key).expect("sign"),
        );
        store.put_record(&a, None).expect("a");
        store.put_record(&a, None).expect("a again");
        // Kept as CID and bytes (as a node does until it stores), then stored: the same record.
        let mut batch = store.batch().expect("batch");
        batch.put_cid_bytes(&a.to_cid_bytes(), None).expect("a as CID and bytes");
        batch.put_cid_bytes(&b.to_cid_bytes(), None).expect("b as CID and bytes");
        batch.commit().expect("commit");
        store.put_record(&b, None).expect("b again");
        let tx = store.db().begin_write().expect("tx");
        let numbers: Vec<u64> = tx
            .open_table(RECORD_BYTES)
            .expect("table")
            .iter()
            .expect("iter")
            .map(|e| e.expect("entry").0.value())
            .collect();
        assert_eq!(numbers, vec![0, 1]);
        drop(tx);
        assert_eq!(store.record(&b.cid()).expect("read").as_deref(), Some(b.bytes()));
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
