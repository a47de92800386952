//! [`Db`]: one redb file that several table-owners share, its group commit and its redo log.
//!
//! Group commit: after [`Db::group_commit`], write transactions commit to redb with
//! `Durability::None`, and each commit's writes are appended to the redo log (`redo.rs`, the file
//! beside the database with the extension `log`) in commit order. [`Db::flush`] makes every commit
//! so far durable with one `fdatasync` of the log: the bytes appended since the last flush, not the
//! B-tree pages the commits touched, and without redb's writer lock, so writers go on while the disk
//! works. [`Db::checkpoint_if_due`] makes redb itself durable once the log has grown past a bound,
//! and the log starts again. Opening a file replays the log's entries after the last checkpoint.
//! A crash keeps a prefix of the commit sequence, the same for every table in the file, so whatever
//! recovers from a crash between two single commits recovers from this too. A caller that must not
//! say anything before it is durable (a receipt, "your job is recorded") notes [`Db::written`] and
//! waits for a flush that covers it.
//!
//! Writes reach the log because every write goes through this module's [`Table`] and
//! [`MultimapTable`], opened from a [`Tx`]. To replay, the opener names the tables that may be in
//! the log ([`LoggedTable`]); a log naming a table the opener does not know is refused, not skipped.
//!
//! Units: [`Db::unit`] runs a closure with one write transaction open, and every
//! [`Db::begin_write`] on that thread inside it joins that transaction, so an event that touches
//! the store, the ledger and the journal costs one log entry. Inside a unit, a transaction dropped
//! without `commit` does not roll back what it wrote: writers check before they write.
//!
//! Parked units: under group commit a unit that ends appends its writes to the log but leaves redb's
//! transaction open ("parked"), and the next unit goes on in it; redb commits once every
//! [`MAX_PARKED_UNITS`] units, or as soon as anyone else needs the writer (a [`Db::begin_write`]
//! outside a unit, a checkpoint) or a reader needs to see them ([`Db::begin_read`]). The log, not
//! redb's commit, is what a unit's durability rests on, so this changes nothing a crash can lose; it
//! spares each event a redb commit (table roots rewritten, every dirty page checksummed), which was
//! the coordinator's largest single cost. A [`Writer`] hands redb's one writer from holder to holder.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;

use redb::{
    Database, Durability, Key, MultimapTableDefinition, MultimapTableHandle, ReadTransaction,
    ReadableDatabase, ReadableTable, TableDefinition, TableHandle, Value, WriteTransaction,
};

use super::StoreError;
use super::redo::RedoLog;

/// redb's page cache for a node's store: small, since a phone or a Pi runs it.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

/// The redo log is checkpointed into redb once it holds this many bytes.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 16 << 20;

/// Units that go on in one redb transaction before it commits (see the module documentation): it
/// bounds the memory an uncommitted transaction holds (its dirty pages beyond half of redb's cache
/// are written out early). A commit stalls the unit that makes it, for a time that grows with the
/// pages dirtied, while the total cost of commits falls as more writes share each dirty page. In
/// the mesh latency bench (about four units a job) 256 put a 1.8 ms commit under 2% of jobs, which
/// set p99; 1024 puts a 4 ms one under 0.4%, and p99 fell 0.5-2.1 ms, with the same throughput.
pub const MAX_PARKED_UNITS: u32 = 1024;

/// The sequence number of the last log entry the database holds (written by checkpoints only).
const REDO: TableDefinition<&str, u64> = TableDefinition::new("redo_log");
const CHECKPOINT: &str = "checkpoint";

const OP_INSERT: u8 = 0;
const OP_REMOVE: u8 = 1;
const OP_MULTI_INSERT: u8 = 2;
const OP_MULTI_REMOVE: u8 = 3;

/// How to open a [`Db`].
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    /// redb's page cache (redb's own default is 1 GiB, which a long-running daemon fills).
    pub cache_bytes: usize,
    /// Every table whose writes may be in the redo log, to replay them.
    pub tables: &'static [&'static dyn LoggedTable],
    /// The log size at which [`Db::checkpoint_if_due`] checkpoints.
    pub checkpoint_bytes: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            tables: &super::TABLES,
            checkpoint_bytes: DEFAULT_CHECKPOINT_BYTES,
        }
    }
}

/// A table whose logged writes can be replayed: its name and how to apply one write to it.
pub trait LoggedTable: Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    /// Applies one logged write (`op` one of this module's `OP_*`) inside `tx`.
    fn replay(&self, tx: &WriteTransaction, op: u8, key: &[u8], value: &[u8]) -> Result<(), redb::Error>;
}

/// A plain table, for [`DbOptions::tables`].
pub struct Logged<K: Key + 'static, V: Value + 'static>(pub TableDefinition<'static, K, V>);

impl<K: Key + 'static, V: Value + 'static> std::fmt::Debug for Logged<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Logged({})", self.0.name())
    }
}

impl<K: Key + Sync + 'static, V: Value + Sync + 'static> LoggedTable for Logged<K, V> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn replay(&self, tx: &WriteTransaction, op: u8, key: &[u8], value: &[u8]) -> Result<(), redb::Error> {
        let mut table = tx.open_table(self.0)?;
        match op {
            OP_INSERT => drop(table.insert(K::from_bytes(key), V::from_bytes(value))?),
            _ => drop(table.remove(K::from_bytes(key))?),
        }
        Ok(())
    }
}

/// A multimap table, for [`DbOptions::tables`].
pub struct LoggedMultimap<K: Key + 'static, V: Key + 'static>(pub MultimapTableDefinition<'static, K, V>);

impl<K: Key + 'static, V: Key + 'static> std::fmt::Debug for LoggedMultimap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoggedMultimap({})", self.0.name())
    }
}

impl<K: Key + Sync + 'static, V: Key + Sync + 'static> LoggedTable for LoggedMultimap<K, V> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn replay(&self, tx: &WriteTransaction, op: u8, key: &[u8], value: &[u8]) -> Result<(), redb::Error> {
        let mut table = tx.open_multimap_table(self.0)?;
        match op {
            OP_MULTI_INSERT => drop(table.insert(K::from_bytes(key), V::from_bytes(value))?),
            _ => drop(table.remove(K::from_bytes(key), V::from_bytes(value))?),
        }
        Ok(())
    }
}

/// One redb file shared by several table-owners (the coordinator keeps its DAG store, ledger and job
/// journal in one, so one flush makes a group of their writes durable together); see the module
/// documentation for group commit, the redo log and units.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

#[derive(Debug)]
struct DbInner {
    db: Database,
    grouped: AtomicBool,
    /// Appends happen under this lock, taken while the committing transaction still holds redb's
    /// writer lock, so the log's order is the commit order.
    log: Mutex<RedoLog>,
    /// The log file again, to sync without holding `log`.
    sync: File,
    /// The sequence number of the last entry appended: [`Db::written`].
    written: AtomicU64,
    /// A commit reached redb but not the log: nothing may be called durable any more.
    broken: AtomicBool,
    checkpoint_bytes: u64,
    unit: Mutex<Unit>,
    /// Who holds redb's write transaction; every writer takes it here, never from redb directly,
    /// so none waits in redb for a parked transaction nobody would commit.
    writer: Mutex<Writer>,
    /// Signalled whenever the writer is given back.
    writer_back: Condvar,
}

/// Who holds redb's one write transaction. One per database, so its size does not matter, and
/// boxing the transaction would cost an allocation per unit.
#[allow(clippy::large_enum_variant)]
enum Writer {
    /// Nobody: the next writer begins one.
    Free,
    /// A writer has it (a unit, a `Tx`, a checkpoint); others wait for it to come back.
    Taken,
    /// Units that ended left it open: their writes are in it and in the log, not yet committed to
    /// redb. The next unit goes on in it; any other writer or a reader commits it first.
    Parked { open: Open, units: u32 },
}

/// An open write transaction and, under group commit, its writes encoded for the log. Boxed: the
/// tables kept open in it borrow its transaction, which must not move while it is handed from
/// holder to holder (one allocation per redb transaction, which under group commit spans
/// [`MAX_PARKED_UNITS`] units).
struct Open(Box<OpenTx>);

struct OpenTx {
    /// Tables opened in this transaction and given back by their users, still open for the next
    /// (see [`Tx::open_table`]). Declared before `tx`, so they close first when an `Open` drops.
    tables: RefCell<Vec<KeptTable>>,
    tx: WriteTransaction,
    ops: Option<RefCell<Vec<u8>>>,
}

/// A table kept open in an [`Open`]: its name and the redb table, its lifetime extended to
/// `'static` (it borrows the boxed transaction beside it, which outlives it: see [`Open`]).
type KeptTable = (String, Kept);

/// A kept table, type-erased. Send: it moves only with the transaction it borrows, inside the same
/// [`Open`], and is used only by that transaction's holder.
struct Kept(Box<dyn std::any::Any>);

// SAFETY: see `Kept`: the table and the transaction it borrows cross threads together, never apart.
#[allow(unsafe_code)]
unsafe impl Send for Kept {}

impl Open {
    fn new(tx: WriteTransaction, grouped: bool) -> Self {
        Self(Box::new(OpenTx { tables: RefCell::default(), tx, ops: grouped.then(RefCell::default) }))
    }

    fn tx(&self) -> &WriteTransaction {
        &self.0.tx
    }

    fn ops(&self) -> Option<&RefCell<Vec<u8>>> {
        self.0.ops.as_ref()
    }

    /// Closes the tables kept open: each writes its root back into the transaction, which redb
    /// needs before it commits (it refuses to commit with a table open) or deletes a table.
    fn close_tables(&self) {
        let kept = std::mem::take(&mut *self.0.tables.borrow_mut());
        drop(kept);
    }

    /// The transaction and its logged writes, its tables closed first (while the transaction they
    /// borrow is still where they point).
    fn into_parts(self) -> (WriteTransaction, Option<RefCell<Vec<u8>>>) {
        self.close_tables();
        let OpenTx { tables: _, tx, ops } = *self.0;
        (tx, ops)
    }

    /// A kept table of this name and type, and its name, if there is one. One of the same name but
    /// another type is closed, so that opening it again gives redb's own error.
    fn take_kept<T: 'static>(&self, name: &str) -> Option<(String, T)> {
        let mut tables = self.0.tables.borrow_mut();
        let i = tables.iter().position(|(n, _)| n == name)?;
        let (name, table) = tables.swap_remove(i);
        drop(tables);
        table.0.downcast::<T>().ok().map(|t| (name, *t))
    }

    fn keep(&self, name: String, table: Box<dyn std::any::Any>) {
        self.0.tables.borrow_mut().push((name, Kept(table)));
    }
}

/// The transaction a [`Db::unit`] holds open, the thread it belongs to, and whether any writer
/// took it.
#[derive(Default)]
struct Unit {
    owner: Option<ThreadId>,
    open: Option<Open>,
    used: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Free => f.write_str("Free"),
            Self::Taken => f.write_str("Taken"),
            Self::Parked { units, .. } => write!(f, "Parked({units} units)"),
        }
    }
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit").field("owner", &self.owner).finish()
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_error(e: std::io::Error) -> StoreError {
    StoreError::Log(e.to_string())
}

/// The redo log's path: the database's, with the extension `log`.
pub fn log_path(db: &Path) -> PathBuf {
    db.with_extension("log")
}

/// A write transaction from [`Db::begin_write`]: its own, or the open one of a [`Db::unit`].
#[allow(missing_debug_implementations)]
pub struct Tx<'a> {
    open: Option<Open>,
    /// Whether `open` belongs to a [`Db::unit`] (and goes back to it) rather than to this `Tx`.
    in_unit: bool,
    db: &'a DbInner,
}

impl Tx<'_> {
    fn open(&self) -> &Open {
        self.open.as_ref().unwrap_or_else(|| unreachable!("a Tx holds its transaction until it ends"))
    }

    /// Opens (or creates) a table for reading and writing; its writes are logged under group commit.
    ///
    /// A table given back (dropped) stays open in the transaction for the next user: redb's open
    /// and close (the root looked up and written back, the types' names formatted and compared)
    /// cost more than the insert they are for, and the coordinator opened about twenty a job, each
    /// ledger operation its three tables.
    #[allow(unsafe_code)]
    pub fn open_table<K: Key + 'static, V: Value + 'static>(
        &self,
        def: TableDefinition<'_, K, V>,
    ) -> Result<Table<'_, K, V>, redb::TableError> {
        let open = self.open();
        let (name, inner) = match open.take_kept::<redb::Table<'static, K, V>>(def.name()) {
            // SAFETY: the table borrows `open`'s transaction, which outlives this borrow of it.
            Some((name, kept)) => (name, unsafe { relifetime_table(kept) }),
            None => (def.name().to_owned(), open.tx().open_table(def)?),
        };
        Ok(Table { inner: ManuallyDrop::new(inner), log: open.ops(), name, home: open })
    }

    /// Opens (or creates) a multimap table; its writes are logged under group commit. Kept open
    /// when given back, as [`Tx::open_table`]'s tables are.
    #[allow(unsafe_code)]
    pub fn open_multimap_table<K: Key + 'static, V: Key + 'static>(
        &self,
        def: MultimapTableDefinition<'_, K, V>,
    ) -> Result<MultimapTable<'_, K, V>, redb::TableError> {
        let open = self.open();
        let (name, inner) = match open.take_kept::<redb::MultimapTable<'static, K, V>>(def.name()) {
            // SAFETY: as in `open_table`.
            Some((name, kept)) => (name, unsafe { relifetime_multimap(kept) }),
            None => (def.name().to_owned(), open.tx().open_multimap_table(def)?),
        };
        Ok(MultimapTable { inner: ManuallyDrop::new(inner), log: open.ops(), name, home: open })
    }

    /// Whether the database has a plain table of this name.
    pub fn has_table(&self, name: &str) -> Result<bool, redb::StorageError> {
        self.open().close_tables();
        Ok(self.open().tx().list_tables()?.any(|t| t.name() == name))
    }

    /// Hands every entry of the table `def` to `each`, in key order and streamed, then deletes
    /// the table: how an opener moves data from an older layout into a new one, in this
    /// transaction. `None`, and nothing done, if there is no such table. The deletion is not in the
    /// redo log, so a crash before redb's next durable commit may undo it: `each` must be safe to
    /// run again on an entry it has moved before.
    pub fn drain_table(
        &self,
        def: TableDefinition<'_, &'static [u8], &'static [u8]>,
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<Option<u64>, StoreError> {
        if !self.has_table(def.name())? {
            return Ok(None);
        }
        let mut moved = 0;
        {
            let old = self.open().tx().open_table(def)?;
            for entry in old.iter()? {
                let (key, value) = entry?;
                each(key.value(), value.value())?;
                moved += 1;
            }
        }
        self.open().close_tables();
        self.open().tx().delete_table(def)?;
        Ok(Some(moved))
    }

    /// Commits, or inside a unit hands the writes back to it (the unit commits them).
    pub fn commit(mut self) -> Result<(), StoreError> {
        if let Some(open) = self.open.take() {
            if self.in_unit {
                locked(&self.db.unit).open = Some(open);
            } else {
                let committed = self.db.commit(open);
                self.db.give_back(None);
                committed?;
            }
        }
        Ok(())
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        // Inside a unit the transaction goes back to it; outside, dropping aborts it.
        if let Some(open) = self.open.take() {
            if self.in_unit {
                locked(&self.db.unit).open = Some(open);
            } else {
                drop(open);
                self.db.give_back(None);
            }
        }
    }
}

/// The log buffer of a table open under group commit.
type TableLog<'t> = Option<&'t RefCell<Vec<u8>>>;

/// Appends one write to a table's log buffer, if it has one: `op | name | key | value`, each of
/// the last three a u32 length and its bytes.
fn log_write(log: TableLog<'_>, name: &str, op: u8, key: &[u8], value: &[u8]) {
    let Some(ops) = log else { return };
    let mut ops = ops.borrow_mut();
    ops.push(op);
    for part in [name.as_bytes(), key, value] {
        ops.extend_from_slice(&(part.len() as u32).to_le_bytes());
        ops.extend_from_slice(part);
    }
}

/// One logged write: `(op, table name, key, value)`.
type Write<'a> = (u8, &'a str, &'a [u8], &'a [u8]);

/// Splits a log entry back into its writes.
fn decode(mut bytes: &[u8]) -> Option<Vec<Write<'_>>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = rest;
        Some(head)
    }
    fn part<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?);
        take(bytes, len as usize)
    }
    let mut out = Vec::new();
    while let Some((&op, rest)) = bytes.split_first() {
        bytes = rest;
        let name = std::str::from_utf8(part(&mut bytes)?).ok()?;
        let key = part(&mut bytes)?;
        let value = part(&mut bytes)?;
        out.push((op, name, key, value));
    }
    Some(out)
}

/// A table open in a [`Tx`]: reads as redb's (through `Deref`), writes logged under group commit;
/// dropped, it goes back to the transaction, still open (see [`Tx::open_table`]).
#[allow(missing_debug_implementations)]
pub struct Table<'t, K: Key + 'static, V: Value + 'static> {
    inner: ManuallyDrop<redb::Table<'t, K, V>>,
    log: TableLog<'t>,
    name: String,
    home: &'t Open,
}

impl<K: Key + 'static, V: Value + 'static> Drop for Table<'_, K, V> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `inner` is not used again; the table borrows `home`'s boxed transaction, which
        // closes its kept tables before it moves or ends (`Open::into_parts`, `OpenTx`'s field order).
        let table = unsafe { relifetime_table::<K, V>(ManuallyDrop::take(&mut self.inner)) };
        self.home.keep(std::mem::take(&mut self.name), Box::new(table));
    }
}

/// Changes the lifetime of a table's borrow of its transaction.
///
/// # Safety
/// The transaction must outlive the table under its new lifetime.
#[allow(unsafe_code)]
unsafe fn relifetime_table<'b, K: Key + 'static, V: Value + 'static>(
    table: redb::Table<'_, K, V>,
) -> redb::Table<'b, K, V> {
    let table = ManuallyDrop::new(table);
    // SAFETY: the same type but for a lifetime; the caller vouches for the borrow.
    unsafe { std::ptr::read((&raw const *table).cast::<redb::Table<'b, K, V>>()) }
}

/// [`relifetime_table`] for a multimap table.
///
/// # Safety
/// As [`relifetime_table`].
#[allow(unsafe_code)]
unsafe fn relifetime_multimap<'b, K: Key + 'static, V: Key + 'static>(
    table: redb::MultimapTable<'_, K, V>,
) -> redb::MultimapTable<'b, K, V> {
    let table = ManuallyDrop::new(table);
    // SAFETY: as in `relifetime_table`.
    unsafe { std::ptr::read((&raw const *table).cast::<redb::MultimapTable<'b, K, V>>()) }
}

impl<'t, K: Key + 'static, V: Value + 'static> std::ops::Deref for Table<'t, K, V> {
    type Target = redb::Table<'t, K, V>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<K: Key + 'static, V: Value + 'static> Table<'_, K, V> {
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), redb::StorageError> {
        log_write(
            self.log,
            &self.name,
            OP_INSERT,
            K::as_bytes(key.borrow()).as_ref(),
            V::as_bytes(value.borrow()).as_ref(),
        );
        self.inner.insert(key, value)?;
        Ok(())
    }

    pub fn remove<'k>(&mut self, key: impl Borrow<K::SelfType<'k>>) -> Result<(), redb::StorageError> {
        log_write(self.log, &self.name, OP_REMOVE, K::as_bytes(key.borrow()).as_ref(), &[]);
        self.inner.remove(key)?;
        Ok(())
    }
}

/// A multimap table open in a [`Tx`]: reads as redb's, writes logged under group commit; kept
/// open when dropped, as a [`Table`] is.
#[allow(missing_debug_implementations)]
pub struct MultimapTable<'t, K: Key + 'static, V: Key + 'static> {
    inner: ManuallyDrop<redb::MultimapTable<'t, K, V>>,
    log: TableLog<'t>,
    name: String,
    home: &'t Open,
}

impl<K: Key + 'static, V: Key + 'static> Drop for MultimapTable<'_, K, V> {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: as in `Table`'s drop.
        let table = unsafe { relifetime_multimap::<K, V>(ManuallyDrop::take(&mut self.inner)) };
        self.home.keep(std::mem::take(&mut self.name), Box::new(table));
    }
}

impl<'t, K: Key + 'static, V: Key + 'static> std::ops::Deref for MultimapTable<'t, K, V> {
    type Target = redb::MultimapTable<'t, K, V>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<K: Key + 'static, V: Key + 'static> MultimapTable<'_, K, V> {
    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), redb::StorageError> {
        log_write(
            self.log,
            &self.name,
            OP_MULTI_INSERT,
            K::as_bytes(key.borrow()).as_ref(),
            V::as_bytes(value.borrow()).as_ref(),
        );
        self.inner.insert(key, value)?;
        Ok(())
    }

    pub fn remove<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<(), redb::StorageError> {
        log_write(
            self.log,
            &self.name,
            OP_MULTI_REMOVE,
            K::as_bytes(key.borrow()).as_ref(),
            V::as_bytes(value.borrow()).as_ref(),
        );
        self.inner.remove(key, value)?;
        Ok(())
    }
}

impl DbInner {
    /// Commits `open`; under group commit, appends its writes to the log while its redb commit is
    /// the latest, so the log keeps the commit order.
    fn commit(&self, open: Open) -> Result<(), StoreError> {
        let (tx, ops) = open.into_parts();
        let ops = ops.map(RefCell::into_inner).unwrap_or_default();
        if ops.is_empty() {
            tx.commit()?;
            return Ok(());
        }
        let mut log = locked(&self.log);
        tx.commit()?;
        match log.append(&ops) {
            Ok(seq) => {
                self.written.store(seq, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                self.broken.store(true, Ordering::SeqCst);
                Err(log_error(e))
            }
        }
    }

    /// Appends a unit's writes to the log, leaving them in its still open transaction.
    fn log_unit(&self, open: &Open) -> Result<(), StoreError> {
        let Some(ops) = open.ops() else { return Ok(()) };
        let mut ops = ops.borrow_mut();
        if ops.is_empty() {
            return Ok(());
        }
        match locked(&self.log).append(&ops) {
            Ok(seq) => {
                self.written.store(seq, Ordering::SeqCst);
                ops.clear();
                Ok(())
            }
            Err(e) => {
                self.broken.store(true, Ordering::SeqCst);
                Err(log_error(e))
            }
        }
    }

    /// Takes redb's writer: the parked transaction (with the number of units in it), or a new one.
    /// Waits while another holder has it. Give it back with [`DbInner::give_back`].
    fn take_writer(&self) -> Result<(Open, u32), StoreError> {
        let mut writer = locked(&self.writer);
        loop {
            match std::mem::replace(&mut *writer, Writer::Taken) {
                Writer::Taken => writer = self.writer_back.wait(writer).unwrap_or_else(|e| e.into_inner()),
                Writer::Parked { open, units } => return Ok((open, units)),
                Writer::Free => {
                    drop(writer);
                    return self.begin().map(|open| (open, 0)).map_err(|e| {
                        self.give_back(None);
                        e.into()
                    });
                }
            }
        }
    }

    /// Takes redb's writer with nothing uncommitted in it: parked units are committed first.
    fn take_fresh_writer(&self) -> Result<Open, StoreError> {
        let (open, units) = self.take_writer()?;
        if units == 0 {
            return Ok(open);
        }
        self.commit_parked(open)?;
        self.begin().map_err(|e| {
            self.give_back(None);
            e.into()
        })
    }

    /// Commits parked units to redb (their writes are in the log already). The caller holds the writer.
    fn commit_parked(&self, open: Open) -> Result<(), StoreError> {
        open.into_parts().0.commit().map_err(|e| {
            // The log holds writes redb now lacks: only a restart (a replay) puts them back.
            self.broken.store(true, Ordering::SeqCst);
            self.give_back(None);
            StoreError::from(e)
        })
    }

    /// Hands redb's writer back: parked, or free (its transaction committed or dropped).
    fn give_back(&self, parked: Option<(Open, u32)>) {
        *locked(&self.writer) = match parked {
            Some((open, units)) => Writer::Parked { open, units },
            None => Writer::Free,
        };
        self.writer_back.notify_all();
    }

    /// Commits parked units, if there are any and no one holds the writer.
    fn settle(&self) -> Result<(), StoreError> {
        let parked = {
            let mut writer = locked(&self.writer);
            match std::mem::replace(&mut *writer, Writer::Taken) {
                Writer::Parked { open, .. } => Some(open),
                other => {
                    *writer = other;
                    None
                }
            }
        };
        if let Some(open) = parked {
            self.commit_parked(open)?;
            self.give_back(None);
        }
        Ok(())
    }

    fn begin(&self) -> Result<Open, redb::Error> {
        let mut tx = self.db.begin_write()?;
        let grouped = self.grouped.load(Ordering::Relaxed);
        if grouped {
            tx.set_durability(Durability::None)?;
        }
        Ok(Open::new(tx, grouped))
    }
}

impl Db {
    /// Opens (or creates) the file at `path` with [`DbOptions::default`]: a node's store.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, DbOptions::default())
    }

    /// Opens (or creates) the file at `path`, creating its directory if needed, and replays the
    /// redo log's entries after the last checkpoint into it (then checkpoints, and empties the log).
    pub fn open_with(path: &Path, options: DbOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|source| StoreError::Dir { path: dir.display().to_string(), source })?;
        }
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create(path)
            .map_err(|source| StoreError::Open { path: path.display().to_string(), source })?;
        let applied = {
            let tx = db.begin_read()?;
            match tx.open_table(REDO) {
                Ok(t) => t.get(CHECKPOINT)?.map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(e.into()),
            }
        };
        let (mut log, entries) = RedoLog::open(&log_path(path), applied).map_err(log_error)?;
        if let Some(last) = entries.last().map(|e| e.seq) {
            let tx = db.begin_write()?;
            for entry in &entries {
                replay(&tx, options.tables, &entry.payload)?;
            }
            tx.open_table(REDO)?.insert(CHECKPOINT, last)?;
            tx.commit()?;
            tracing::info!("replayed {} commit(s) from the redo log of {}", entries.len(), path.display());
        }
        log.clear().map_err(log_error)?;
        let sync = log.sync_handle().map_err(log_error)?;
        let written = log.last();
        Ok(Self {
            inner: Arc::new(DbInner {
                db,
                grouped: AtomicBool::new(false),
                log: Mutex::new(log),
                sync,
                written: AtomicU64::new(written),
                broken: AtomicBool::new(false),
                checkpoint_bytes: options.checkpoint_bytes,
                unit: Mutex::new(Unit::default()),
                writer: Mutex::new(Writer::Free),
                writer_back: Condvar::new(),
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
            let mut unit = locked(&self.inner.unit);
            if unit.owner == Some(std::thread::current().id()) {
                let Some(open) = unit.open.take() else {
                    panic!("a write transaction begun inside a unit while another is open");
                };
                unit.used = true;
                return Ok(Tx { open: Some(open), in_unit: true, db: &self.inner });
            }
        }
        let open = self.inner.take_fresh_writer().map_err(|e| match e {
            StoreError::Redb(e) => e,
            other => redb::Error::Io(std::io::Error::other(other.to_string())),
        })?;
        Ok(Tx { open: Some(open), in_unit: false, db: &self.inner })
    }

    /// Runs `f` with one write transaction open for every write it makes on this thread, then
    /// commits it (a unit inside a unit joins the outer one). Under group commit "commits" means
    /// its writes go to the log and the transaction is parked for the next unit (see the module
    /// documentation).
    pub fn unit<R>(&self, f: impl FnOnce() -> R) -> Result<R, StoreError> {
        let me = std::thread::current().id();
        if locked(&self.inner.unit).owner == Some(me) {
            return Ok(f());
        }
        // This waits while another thread's unit, a `Tx` or a checkpoint holds the writer.
        let (open, units) = self.inner.take_writer()?;
        {
            let mut unit = locked(&self.inner.unit);
            unit.owner = Some(me);
            unit.open = Some(open);
            unit.used = false;
        }
        /// Closes the unit however `f` ends. If it panicked, its writes are dropped uncommitted, and
        /// with them any parked units' (which the log holds): the database refuses to flush until a
        /// restart replays them.
        struct Close<'a>(&'a DbInner);
        impl Drop for Close<'_> {
            fn drop(&mut self) {
                let open = {
                    let mut unit = locked(&self.0.unit);
                    unit.owner = None;
                    unit.used = false;
                    unit.open.take()
                };
                if let Some(open) = open {
                    drop(open);
                    self.0.broken.store(true, Ordering::SeqCst);
                    self.0.give_back(None);
                }
            }
        }
        let close = Close(&self.inner);
        let result = f();
        let (open, used) = {
            let mut unit = locked(&self.inner.unit);
            (unit.open.take(), unit.used)
        };
        drop(close);
        let Some(open) = open else { unreachable!("a unit's transaction comes back to it when its Tx ends") };
        if !used {
            // Nothing written: parked units stay parked; a new, empty transaction just ends.
            self.inner.give_back((units > 0).then_some((open, units)));
        } else if self.is_grouped() && units + 1 < MAX_PARKED_UNITS {
            let logged = self.inner.log_unit(&open);
            self.inner.give_back(Some((open, units + 1)));
            logged?;
        } else {
            // Timed for the debug log: these commits (every MAX_PARKED_UNITS units) run on the
            // caller's thread, a pause for whatever waits on it (in the coordinator, the runtime).
            let started = std::time::Instant::now();
            let committed = self.inner.commit(open);
            tracing::debug!("redb commit of {} unit(s) took {:?}", units + 1, started.elapsed());
            self.inner.give_back(None);
            committed?;
        }
        Ok(result)
    }

    /// A read transaction, which sees every unit that has ended (parked units are committed first).
    ///
    /// # Panics
    /// In debug builds, when called inside a unit: it would not see the unit's writes, nor those of
    /// the units parked before it. Read through the unit's [`Tx`] instead.
    pub fn begin_read(&self) -> Result<ReadTransaction, redb::Error> {
        debug_assert!(
            locked(&self.inner.unit).owner != Some(std::thread::current().id()),
            "a read transaction begun inside a unit does not see the unit's writes"
        );
        self.inner.settle().map_err(|e| match e {
            StoreError::Redb(e) => e,
            other => redb::Error::Io(std::io::Error::other(other.to_string())),
        })?;
        Ok(self.inner.db.begin_read()?)
    }

    /// From now on commits are durable only once [`Db::flush`] has run after them.
    pub fn group_commit(&self) {
        self.inner.grouped.store(true, Ordering::SeqCst);
    }

    pub fn is_grouped(&self) -> bool {
        self.inner.grouped.load(Ordering::Relaxed)
    }

    /// The sequence number of the last commit logged: a flush that returns at least this covers
    /// every commit so far.
    pub fn written(&self) -> u64 {
        self.inner.written.load(Ordering::SeqCst)
    }

    /// Makes every commit so far durable (one `fdatasync` of the redo log, taken without redb's
    /// writer lock); returns the [`Db::written`] count it covers.
    pub fn flush(&self) -> Result<u64, StoreError> {
        let covered = locked(&self.inner.log).last();
        if self.inner.broken.load(Ordering::SeqCst) {
            return Err(StoreError::Log("a commit could not be logged; restart to recover".into()));
        }
        if self.is_grouped() {
            self.inner.sync.sync_data().map_err(log_error)?;
        }
        Ok(covered)
    }

    /// Checkpoints when the redo log has grown past its bound: redb's own durable commit, which
    /// holds the writer lock while it writes every page changed since the last one, after which the
    /// log starts again. Returns whether it did. Call it off the path of anyone waiting.
    pub fn checkpoint_if_due(&self) -> Result<bool, StoreError> {
        if !self.is_grouped() || locked(&self.inner.log).appended_bytes() < self.inner.checkpoint_bytes {
            return Ok(false);
        }
        self.checkpoint()?;
        Ok(true)
    }

    /// Makes redb hold every commit so far, durably, and restarts the log.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        // The writer first, as committers take it: no commit (so no append) until this ends. Parked
        // units are in it and commit with the checkpoint.
        let (open, _) = self.inner.take_writer()?;
        let (mut tx, _) = open.into_parts();
        let result: Result<(), StoreError> = (|| {
            let mut log = locked(&self.inner.log);
            tx.open_table(REDO)?.insert(CHECKPOINT, log.last())?;
            tx.set_durability(Durability::Immediate)?;
            tx.commit()?;
            log.restart();
            Ok(())
        })();
        self.inner.give_back(None);
        if result.is_err() {
            // Parked units may have gone with the failed commit: their writes are only in the log now.
            self.inner.broken.store(true, Ordering::SeqCst);
        }
        result
    }
}

impl Drop for DbInner {
    fn drop(&mut self) {
        // Parked units are in the log already; committing them spares the next open a replay.
        if let Err(e) = self.settle() {
            tracing::warn!("committing the last units at close failed: {e}; the next open replays them");
        }
    }
}

fn replay(tx: &WriteTransaction, tables: &[&dyn LoggedTable], payload: &[u8]) -> Result<(), StoreError> {
    let ops = decode(payload).ok_or_else(|| StoreError::Log("a redo log entry does not decode".into()))?;
    for (op, name, key, value) in ops {
        let Some(table) = tables.iter().find(|t| t.name() == name) else {
            return Err(StoreError::Log(format!(
                "the redo log holds writes to the table `{name}`, which this program does not know; \
                 open the store with the program that wrote it"
            )));
        };
        table.replay(tx, op, key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableMultimapTable, ReadableTable, ReadableTableMetadata};

    const KV: TableDefinition<&str, u64> = TableDefinition::new("test_kv");
    const MULTI: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("test_multi");
    const TEST_TABLES: [&dyn LoggedTable; 2] = [&Logged(KV), &LoggedMultimap(MULTI)];

    fn options(checkpoint_bytes: u64) -> DbOptions {
        DbOptions { tables: &TEST_TABLES, checkpoint_bytes, ..DbOptions::default() }
    }

    /// What a crash would leave, taken while `db` stays open: the log, then the database file (the
    /// order `icn dag` copies a live store in).
    fn crash_image(db_path: &Path, to: &Path) -> PathBuf {
        let copy = to.join("copy.redb");
        std::fs::copy(log_path(db_path), log_path(&copy)).expect("copy log");
        std::fs::copy(db_path, &copy).expect("copy db");
        copy
    }

    /// A database with the test tables created (durably), then switched to group commit.
    fn open_grouped(path: &Path, checkpoint_bytes: u64) -> Db {
        let db = Db::open_with(path, options(checkpoint_bytes)).expect("open");
        write(&db, |_, _| {});
        db.group_commit();
        db
    }

    fn write(db: &Db, f: impl FnOnce(&mut Table<'_, &str, u64>, &mut MultimapTable<'_, &str, &str>)) {
        let tx = db.begin_write().expect("tx");
        {
            let (mut kv, mut multi) =
                (tx.open_table(KV).expect("kv"), tx.open_multimap_table(MULTI).expect("multi"));
            f(&mut kv, &mut multi);
        }
        tx.commit().expect("commit");
    }

    fn read(path: &Path) -> (Vec<(String, u64)>, Vec<String>) {
        let db = Db::open_with(path, options(DEFAULT_CHECKPOINT_BYTES)).expect("reopen");
        let tx = db.begin_read().expect("read");
        let kv = tx.open_table(KV).expect("kv");
        let rows = kv.iter().expect("iter").map(|r| {
            let (k, v) = r.expect("row");
            (k.value().to_owned(), v.value())
        });
        let multi = tx.open_multimap_table(MULTI).expect("multi");
        let values = multi.get("m").expect("get").map(|v| v.expect("value").value().to_owned()).collect();
        (rows.collect(), values)
    }

    #[test]
    fn flushed_commits_are_replayed_from_the_log_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.redb");
        let db = open_grouped(&path, DEFAULT_CHECKPOINT_BYTES);
        // Committed durably before group commit: in the database, not in the log.
        db.inner.grouped.store(false, Ordering::SeqCst);
        write(&db, |kv, _| kv.insert("before", 1).expect("insert"));
        db.group_commit();
        write(&db, |kv, multi| {
            kv.insert("a", 1).expect("insert");
            kv.insert("gone", 9).expect("insert");
            multi.insert("m", "x").expect("insert");
            multi.insert("m", "y").expect("insert");
        });
        // A later commit overwrites and removes what an earlier one wrote: order matters.
        write(&db, |kv, multi| {
            kv.insert("a", 2).expect("insert");
            kv.remove("gone").expect("remove");
            multi.remove("m", "x").expect("remove");
        });
        let n = db.written();
        assert_eq!(db.flush().expect("flush"), n);
        let image = tempfile::tempdir().expect("tempdir");
        let copy = crash_image(&path, image.path());
        assert_eq!(read(&copy), (vec![("a".into(), 2), ("before".into(), 1)], vec!["y".into()]));
        // Replayed once: the log is emptied and the database holds it all.
        assert_eq!(std::fs::metadata(log_path(&copy)).expect("log").len(), 0);
        assert_eq!(read(&copy).0.len(), 2);
    }

    #[test]
    fn checkpoints_restart_the_log_and_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.redb");
        let db = open_grouped(&path, 1024);
        let mut checkpoints = 0;
        for n in 0..200u64 {
            write(&db, |kv, _| kv.insert(format!("key {n:03}").as_str(), n).expect("insert"));
            db.flush().expect("flush");
            checkpoints += usize::from(db.checkpoint_if_due().expect("checkpoint"));
        }
        assert!(checkpoints >= 3, "{checkpoints} checkpoints");
        let image = tempfile::tempdir().expect("tempdir");
        let rows = read(&crash_image(&path, image.path())).0;
        assert_eq!(rows.len(), 200);
        assert!(rows.iter().enumerate().all(|(n, (k, v))| *k == format!("key {n:03}") && *v == n as u64));
    }

    fn parked(db: &Db) -> Option<u32> {
        match &*locked(&db.inner.writer) {
            Writer::Parked { units, .. } => Some(*units),
            _ => None,
        }
    }

    #[test]
    fn units_go_on_in_one_transaction_that_every_other_user_commits_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.redb");
        let db = open_grouped(&path, DEFAULT_CHECKPOINT_BYTES);
        let unit = |db: &Db, key: &str| {
            db.unit(|| write(db, |kv, _| kv.insert(key, 1).expect("insert"))).expect("unit");
        };
        for n in 0..10 {
            unit(&db, &format!("unit {n}"));
        }
        db.unit(|| ()).expect("a unit that writes nothing");
        assert_eq!(parked(&db), Some(10), "ten units, no redb commit yet");
        // Not in redb's file yet, but in the log: a crash after the flush loses none of them.
        db.flush().expect("flush");
        let image = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(&crash_image(&path, image.path())).0.len(), 10);
        // A reader sees every unit that ended: they are committed for it.
        assert_eq!(db.begin_read().expect("read").open_table(KV).expect("kv").len().expect("len"), 10);
        assert_eq!(parked(&db), None);
        // A writer outside a unit commits parked units first, and does not wait for itself.
        unit(&db, "a");
        write(&db, |kv, _| kv.insert("b", 2).expect("insert"));
        assert_eq!(parked(&db), None);
        // Another thread's unit goes on in the parked transaction; a checkpoint commits it.
        unit(&db, "c");
        let other = db.clone();
        std::thread::spawn(move || unit(&other, "d")).join().expect("the other thread's unit");
        assert_eq!(parked(&db), Some(2));
        db.checkpoint().expect("checkpoint");
        assert_eq!(parked(&db), None);
        // The transaction commits every MAX_PARKED_UNITS units, so it never grows without bound.
        for n in 0..=MAX_PARKED_UNITS {
            unit(&db, &format!("bound {n}"));
        }
        assert_eq!(parked(&db), Some(1), "the first {MAX_PARKED_UNITS} committed together");
        db.flush().expect("flush");
        let image = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(&crash_image(&path, image.path())).0.len(), 15 + MAX_PARKED_UNITS as usize);
        // Closing commits what is parked: the file holds it all with nothing left to replay.
        drop(db);
        let reopened = Db::open_with(&path, options(DEFAULT_CHECKPOINT_BYTES)).expect("reopen");
        let tx = reopened.begin_read().expect("read");
        assert_eq!(tx.open_table(KV).expect("kv").len().expect("len"), 15 + u64::from(MAX_PARKED_UNITS));
    }

    fn kept(db: &Db) -> Vec<String> {
        match &*locked(&db.inner.writer) {
            Writer::Parked { open, .. } => {
                let mut names: Vec<String> = open.0.tables.borrow().iter().map(|(n, _)| n.clone()).collect();
                names.sort();
                names
            }
            _ => Vec::new(),
        }
    }

    #[test]
    fn tables_stay_open_from_unit_to_unit_and_close_before_every_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.redb");
        let db = open_grouped(&path, DEFAULT_CHECKPOINT_BYTES);
        db.unit(|| {
            write(&db, |kv, multi| {
                kv.insert("a", 1).expect("insert");
                multi.insert("m", "x").expect("insert");
            });
            let tx = db.begin_write().expect("tx");
            // A table created in this transaction and kept open is listed (listing closes them).
            assert!(tx.has_table("test_kv").expect("list"));
            // Given back and taken again within the unit: the same table, with its writes.
            assert_eq!(tx.open_table(KV).expect("kv").get("a").expect("get").map(|v| v.value()), Some(1));
            assert_eq!(tx.open_multimap_table(MULTI).expect("multi").get("m").expect("get").count(), 1);
        })
        .expect("unit");
        assert_eq!(kept(&db), ["test_kv", "test_multi"], "kept open in the parked transaction");
        db.unit(|| {
            let tx = db.begin_write().expect("tx");
            // A kept table asked for with other types: redb's own refusal, not a wrong table.
            const OTHER: TableDefinition<u64, u64> = TableDefinition::new("test_kv");
            assert!(matches!(tx.open_table(OTHER), Err(redb::TableError::TableTypeMismatch { .. })));
            tx.open_table(KV).expect("kv").insert("b", 2).expect("insert");
        })
        .expect("unit");
        // A reader commits the parked units, their kept tables closed first (redb refuses to commit
        // with a table open, and a table's root reaches the transaction only when it closes).
        let tx = db.begin_read().expect("read");
        assert_eq!(tx.open_table(KV).expect("kv").len().expect("len"), 2);
        assert_eq!(parked(&db), None);
        // The same through a checkpoint, which commits on its own.
        db.unit(|| write(&db, |kv, _| kv.insert("c", 3).expect("insert"))).expect("unit");
        assert_eq!(kept(&db), ["test_kv", "test_multi"]);
        db.checkpoint().expect("checkpoint");
        drop(db);
        assert_eq!(read(&path), (vec![("a".into(), 1), ("b".into(), 2), ("c".into(), 3)], vec!["x".into()]));
    }

    #[test]
    fn a_log_naming_an_unknown_table_is_refused_not_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.redb");
        let db = open_grouped(&path, DEFAULT_CHECKPOINT_BYTES);
        write(&db, |kv, _| kv.insert("a", 1).expect("insert"));
        db.flush().expect("flush");
        let image = tempfile::tempdir().expect("tempdir");
        let copy = crash_image(&path, image.path());
        let err = Db::open(&copy).expect_err("the store's own tables do not include test_kv");
        assert!(err.to_string().contains("`test_kv`"), "{err}");
        // Nothing was lost by the refusal: the right opener still finds the write.
        assert_eq!(read(&copy).0, vec![("a".into(), 1)]);
    }

    #[test]
    fn a_flush_does_not_wait_for_writers_and_writers_do_not_wait_for_a_flush() {
        // The writer lock is not held across the sync: a writer commits while another thread syncs.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open_with(&dir.path().join("db.redb"), options(DEFAULT_CHECKPOINT_BYTES)).expect("open");
        db.group_commit();
        let tx = db.begin_write().expect("a writer holds redb's writer lock");
        let (done, flushed) = std::sync::mpsc::channel();
        let db2 = db.clone();
        std::thread::spawn(move || done.send(db2.flush().expect("flush")));
        let covered = flushed.recv_timeout(std::time::Duration::from_secs(10));
        drop(tx);
        assert_eq!(covered, Ok(0), "the flush waited for the open writer");
    }
}
