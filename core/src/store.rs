//! The node's content store: one redb file holding blobs by CID, records by CID and an index by job.
//!
//! Every write is a redb transaction, durable (`Durability::Immediate`) unless the file's [`Db`] was
//! switched to group commit: a killed process leaves a file that opens and holds every committed
//! record (see `tests/crash_consistency.rs`). Several puts can share one commit through
//! [`Store::batch`]. Blobs are checked against their CID on the way in, so
//! the store never holds bytes under a name that is not theirs.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use cid::Cid;
use redb::{
    Database, Durability, MultimapTableDefinition, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, WriteTransaction,
};

use crate::dag::{DAG_CBOR_CODEC, RAW_CODEC, SignedRecord, blob_cid, record_cid};

/// CID bytes -> blob bytes.
const BLOBS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("blobs");
/// CID bytes -> record (DAG-CBOR envelope) bytes.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Job record CID bytes -> CID bytes of every record about that job.
const BY_JOB: MultimapTableDefinition<&[u8], &[u8]> = MultimapTableDefinition::new("records_by_job");

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
}

macro_rules! redb_from {
    ($($t:ty),*) => { $( impl From<$t> for StoreError { fn from(e: $t) -> Self { Self::Redb(e.into()) } } )* };
}
redb_from!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// redb's page cache for a node's store: small, since a phone or a Pi runs it.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

/// One redb file that several tables-owners share (the coordinator keeps its DAG store, ledger and
/// job journal in one, so a single fsync makes a group of their writes durable together), and
/// whether its commits are durable one by one or in groups.
///
/// Group commit: after [`Db::group_commit`], write transactions commit with `Durability::None`
/// and [`Db::flush`] makes every commit so far durable with one fsync. A crash keeps a prefix of
/// the commit sequence, the same across every table in the file, so whatever recovers from a crash
/// between two single commits recovers from this too. A caller that must not say anything before
/// it is durable (a receipt, "your job is recorded") notes [`Db::written`] and waits for a flush
/// that covers it.
///
/// Units: [`Db::unit`] runs a closure with one write transaction open, and every
/// [`Db::begin_write`] on that thread inside it joins that transaction, so an event that touches
/// the store, the ledger and the journal costs one commit (fewer commits also make the next flush
/// cheaper: each commit's pages are written at the flush). Inside a unit, a transaction dropped
/// without `commit` does not roll back what it wrote: writers check before they write.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

#[derive(Debug)]
struct DbInner {
    db: Database,
    grouped: AtomicBool,
    /// Write transactions begun so far (counted once each holds redb's writer lock).
    written: AtomicU64,
    unit: Mutex<Unit>,
}

/// The transaction a [`Db::unit`] holds open, the thread it belongs to, and whether any writer
/// took it (a unit nobody wrote in is not committed, so an idle tick causes no flush).
#[derive(Default)]
struct Unit {
    owner: Option<ThreadId>,
    tx: Option<WriteTransaction>,
    used: bool,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit").field("owner", &self.owner).finish()
    }
}

impl DbInner {
    fn unit(&self) -> MutexGuard<'_, Unit> {
        self.unit.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A write transaction from [`Db::begin_write`]: its own, or the open one of a [`Db::unit`].
#[allow(missing_debug_implementations)]
pub struct Tx<'a> {
    tx: Option<WriteTransaction>,
    unit: Option<&'a DbInner>,
}

impl std::ops::Deref for Tx<'_> {
    type Target = WriteTransaction;
    fn deref(&self) -> &WriteTransaction {
        self.tx.as_ref().unwrap_or_else(|| unreachable!("a Tx holds its transaction until it ends"))
    }
}

impl Tx<'_> {
    /// Commits, or inside a unit hands the writes back to it (the unit commits them).
    pub fn commit(mut self) -> Result<(), redb::Error> {
        match (self.unit, self.tx.take()) {
            (Some(inner), Some(tx)) => inner.unit().tx = Some(tx),
            (None, Some(tx)) => tx.commit()?,
            _ => {}
        }
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // Inside a unit the transaction goes back to it; outside, dropping aborts it.
        if let (Some(inner), Some(tx)) = (self.unit, self.tx.take()) {
            inner.unit().tx = Some(tx);
        }
    }
}

impl Db {
    /// Opens (or creates) the file at `path`, creating its directory if needed, with redb's page
    /// cache capped at [`DEFAULT_CACHE_BYTES`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Db::open`] with a page cache of at most `cache_bytes` (redb's own default is 1 GiB, which
    /// a long-running daemon fills as its file grows).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        Ok(Self {
            inner: Arc::new(DbInner {
                db,
                grouped: AtomicBool::new(false),
                written: AtomicU64::new(0),
                unit: Mutex::new(Unit::default()),
            }),
        })
    }

    /// A write transaction (non-durable under group commit); inside a [`Db::unit`] on this thread,
    /// the unit's.
    ///
    /// # Panics
    /// When called inside a unit while another `Tx` of that unit is alive (the writer would wait for
    /// itself): a programming error.
    pub fn begin_write(&self) -> Result<Tx<'_>, redb::Error> {
        {
            let mut unit = self.inner.unit();
            if unit.owner == Some(std::thread::current().id()) {
                let Some(tx) = unit.tx.take() else {
                    panic!("a write transaction begun inside a unit while another is open");
                };
                unit.used = true;
                return Ok(Tx { tx: Some(tx), unit: Some(&self.inner) });
            }
        }
        Ok(Tx { tx: Some(self.begin_own()?), unit: None })
    }

    /// Runs `f` with one write transaction open for every write it makes on this thread, then
    /// commits it (a unit inside a unit joins the outer one).
    pub fn unit<R>(&self, f: impl FnOnce() -> R) -> Result<R, StoreError> {
        let me = std::thread::current().id();
        if self.inner.unit().owner == Some(me) {
            return Ok(f());
        }
        // Outside our mutex: this waits for redb's writer lock (another thread's unit, a flush).
        // Counted in `written` only at the end, if a writer used it (still under the lock).
        let tx = self.begin_uncounted()?;
        {
            let mut unit = self.inner.unit();
            unit.owner = Some(me);
            unit.tx = Some(tx);
            unit.used = false;
        }
        /// Closes the unit however `f` ends; if it panicked, its writes are dropped uncommitted.
        struct Close<'a>(&'a DbInner);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                let mut unit = self.0.unit();
                unit.owner = None;
                unit.tx = None;
                unit.used = false;
            }
        }
        let close = Close(&self.inner);
        let result = f();
        let (tx, used) = {
            let mut unit = self.inner.unit();
            (unit.tx.take(), unit.used)
        };
        drop(close);
        // If nothing was written, dropping the transaction ends it with no commit to flush.
        if let Some(tx) = tx
            && used
        {
            self.inner.written.fetch_add(1, Ordering::SeqCst);
            tx.commit()?;
        }
        Ok(result)
    }

    fn begin_own(&self) -> Result<WriteTransaction, redb::Error> {
        let tx = self.begin_uncounted()?;
        // redb lets one writer in at a time, so counting while holding the transaction orders it
        // before any flush that begins after it.
        self.inner.written.fetch_add(1, Ordering::SeqCst);
        Ok(tx)
    }

    fn begin_uncounted(&self) -> Result<WriteTransaction, redb::Error> {
        let mut tx = self.inner.db.begin_write()?;
        if self.inner.grouped.load(Ordering::Relaxed) {
            tx.set_durability(Durability::None)?;
        }
        Ok(tx)
    }

    pub fn begin_read(&self) -> Result<ReadTransaction, redb::Error> {
        Ok(self.inner.db.begin_read()?)
    }

    /// From now on commits are durable only once [`Db::flush`] has run after them.
    pub fn group_commit(&self) {
        self.inner.grouped.store(true, Ordering::SeqCst);
    }

    pub fn is_grouped(&self) -> bool {
        self.inner.grouped.load(Ordering::Relaxed)
    }

    /// How many write transactions have begun: a flush that returns at least this covers them.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::SeqCst)
    }

    /// Makes every commit so far durable (one fsync); returns the [`Db::written`] count it covers.
    pub fn flush(&self) -> Result<u64, StoreError> {
        let mut tx = self.inner.db.begin_write()?;
        // Every transaction counted before this one held the writer lock first, so has ended.
        let covered = self.inner.written.load(Ordering::SeqCst);
        tx.set_durability(Durability::Immediate).map_err(redb::Error::from)?;
        tx.commit()?;
        Ok(covered)
    }
}

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
        let mut records = self.tx.open_table(RECORDS)?;
        if records.get(key.as_slice())?.is_none() {
            records.insert(key.as_slice(), bytes)?;
        }
        drop(records);
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
        db.unit(|| store.blob(&blob_cid(b"absent")).expect("read")).expect("unit");
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
