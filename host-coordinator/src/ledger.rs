//! The mana ledger: balances, locks, payouts, slashes into a named sink, refunds, genesis grants.
//!
//! Every change is one redb transaction, and every change that may be retried carries an operation id
//! recorded in the same transaction, so replaying it changes nothing (settling a job twice pays once).
//! Mana is only ever moved, never made or destroyed after genesis:
//! `Σ balance + Σ locked + sink = granted` holds after every transaction ([`Ledger::audit`]).
//!
//! [`Ledger`] is the trait the coordinator uses; [`RedbLedger`] is the embedded implementation (a
//! replicated one can follow, see DESIGN.md "Beyond one coordinator").

use std::collections::BTreeMap;
use std::path::Path;

use icn_mesh_core::spec::Mana;
use icn_mesh_core::store::{Db, Logged, LoggedTable, Table, Tx};
use redb::{ReadableTable, TableDefinition};
use serde::Serialize;

/// DID -> (balance, locked), 16 bytes big-endian.
const ACCOUNTS: TableDefinition<&str, [u8; 16]> = TableDefinition::new("accounts");
/// Lock id -> (owner DID, amount).
const LOCKS: TableDefinition<&str, (&str, u64)> = TableDefinition::new("locks");
/// Operation ids already applied.
const APPLIED: TableDefinition<&str, ()> = TableDefinition::new("applied_ops");
/// "granted" and "sink" totals.
const TOTALS: TableDefinition<&str, u64> = TableDefinition::new("totals");

/// The ledger's tables, for the database's redo log.
pub const TABLES: [&dyn LoggedTable; 4] =
    [&Logged(ACCOUNTS), &Logged(LOCKS), &Logged(APPLIED), &Logged(TOTALS)];

/// The account slashed mana goes to. It can receive, never spend.
pub const SINK: &str = "sink";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    #[error("{did} has {available} mana available, {needed} is needed")]
    Insufficient { did: String, available: Mana, needed: Mana },
    #[error("no lock `{0}`")]
    NoLock(String),
    #[error("lock `{0}` already exists")]
    LockExists(String),
    #[error("payouts of {paid} exceed the {locked} locked under `{lock}`")]
    Overdrawn { lock: String, locked: Mana, paid: Mana },
    #[error("amount overflow")]
    Overflow,
    #[error("ledger store: {0}")]
    Store(String),
}

impl LedgerError {
    /// The spec code a user sees: J002 when a budget cannot be locked, J007 otherwise.
    pub fn code(&self) -> icn_mesh_core::ErrorCode {
        match self {
            Self::Insufficient { .. } => icn_mesh_core::ErrorCode::J002,
            _ => icn_mesh_core::ErrorCode::J007,
        }
    }
}

macro_rules! store_err {
    ($($t:ty),*) => { $( impl From<$t> for LedgerError { fn from(e: $t) -> Self { Self::Store(e.to_string()) } } )* };
}
store_err!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    icn_mesh_core::store::StoreError
);

/// Who gets what when a lock is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Paid to these accounts.
    pub payouts: Vec<(String, Mana)>,
    /// Moved to the sink.
    pub slash: Mana,
    // Whatever is left goes back to the lock's owner.
}

/// One account in an audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountAudit {
    pub did: String,
    pub balance: Mana,
    pub locked: Mana,
}

/// Everything the ledger holds, and whether it adds up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    pub granted: Mana,
    pub accounts: Vec<AccountAudit>,
    pub sink: Mana,
    pub conserved: bool,
}

/// What the coordinator needs from a ledger. Every method with an `op` is idempotent in `op`.
pub trait Ledger {
    /// Mints `amount` for `did`, once per `op` (a genesis grant record's CID).
    fn grant(&self, op: &str, did: &str, amount: Mana) -> Result<(), LedgerError>;
    /// Moves `amount` of `did`'s balance into a new lock `lock`.
    fn lock(&self, op: &str, lock: &str, did: &str, amount: Mana) -> Result<(), LedgerError>;
    /// Pays out, slashes and refunds what `lock` holds, and removes it.
    fn resolve(&self, op: &str, lock: &str, resolution: &Resolution) -> Result<(), LedgerError>;
    /// A lock that is its own guard: refused with `LockExists` while held, and no operation id is
    /// kept. For bid stakes: each is locked once per bidding round (the auction refuses a replayed
    /// bid before the ledger sees it), and recording an id for each of them doubled the ledger's
    /// writes and grew it by two entries per bid, forever.
    fn stake(&self, lock: &str, did: &str, amount: Mana) -> Result<(), LedgerError>;
    /// Releases a [`Ledger::stake`] to its owner, less `slash` into the sink. Refused with `NoLock`
    /// once released, so releasing twice slashes once.
    fn release(&self, lock: &str, slash: Mana) -> Result<(), LedgerError>;
    /// (balance, locked) of `did`; zeros for an unknown account.
    fn account(&self, did: &str) -> Result<(Mana, Mana), LedgerError>;
    /// The open locks whose names start with `prefix`.
    fn locks_with_prefix(&self, prefix: &str) -> Result<Vec<String>, LedgerError>;
    fn audit(&self) -> Result<Audit, LedgerError>;
}

/// The ledger in redb: a file of its own, or tables in a shared [`Db`] (the coordinator's, so its
/// changes are made durable in the same group commits as the records they depend on).
#[derive(Debug)]
pub struct RedbLedger {
    db: Db,
}

fn pack(balance: Mana, locked: Mana) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&balance.to_be_bytes());
    out[8..].copy_from_slice(&locked.to_be_bytes());
    out
}

fn unpack(raw: [u8; 16]) -> (Mana, Mana) {
    let mut b = [0; 8];
    let mut l = [0; 8];
    b.copy_from_slice(&raw[..8]);
    l.copy_from_slice(&raw[8..]);
    (Mana::from_be_bytes(b), Mana::from_be_bytes(l))
}

impl RedbLedger {
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        Self::within(crate::coordinator::open_db(path)?)
    }

    /// The ledger's tables inside `db`.
    pub fn within(db: Db) -> Result<Self, LedgerError> {
        let tx = db.begin_write()?;
        tx.open_table(ACCOUNTS)?;
        tx.open_table(LOCKS)?;
        tx.open_table(APPLIED)?;
        tx.open_table(TOTALS)?;
        tx.commit()?;
        Ok(Self { db })
    }

    /// Runs `change` in one transaction; with an `op`, once: skipped if `op` was applied before,
    /// and `op` recorded with the change. Each table is opened once for it, and only if it is used
    /// (in redb each open is a lookup by name and, for a write, a root update: a stake, for one,
    /// needs two tables of the four). `change` checks everything before it writes anything, so an
    /// error leaves no trace even inside a [`Db::unit`] (where dropping the transaction does not
    /// roll back).
    fn apply(
        &self,
        op: Option<&str>,
        change: impl FnOnce(&mut Tables<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let tx = self.db.begin_write()?;
        {
            let mut tables = Tables { tx: &tx, accounts: None, locks: None, applied: None, totals: None };
            if let Some(op) = op
                && tables.applied()?.get(op)?.is_some()
            {
                return Ok(());
            }
            change(&mut tables)?;
            if let Some(op) = op {
                tables.applied()?.insert(op, ())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The ledger's tables in one write transaction, each opened the first time it is used.
struct Tables<'tx> {
    tx: &'tx Tx<'tx>,
    accounts: Option<Table<'tx, &'static str, [u8; 16]>>,
    locks: Option<Table<'tx, &'static str, (&'static str, u64)>>,
    applied: Option<Table<'tx, &'static str, ()>>,
    totals: Option<Table<'tx, &'static str, u64>>,
}

/// `slot`'s table, opened from `tx` if it is not yet.
fn opened<'s, 'tx, K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &'tx Tx<'tx>,
    slot: &'s mut Option<Table<'tx, K, V>>,
    def: TableDefinition<'_, K, V>,
) -> Result<&'s mut Table<'tx, K, V>, LedgerError> {
    Ok(match slot {
        Some(table) => table,
        None => slot.insert(tx.open_table(def)?),
    })
}

impl<'tx> Tables<'tx> {
    fn accounts(&mut self) -> Result<&mut Table<'tx, &'static str, [u8; 16]>, LedgerError> {
        opened(self.tx, &mut self.accounts, ACCOUNTS)
    }

    fn locks(&mut self) -> Result<&mut Table<'tx, &'static str, (&'static str, u64)>, LedgerError> {
        opened(self.tx, &mut self.locks, LOCKS)
    }

    fn applied(&mut self) -> Result<&mut Table<'tx, &'static str, ()>, LedgerError> {
        opened(self.tx, &mut self.applied, APPLIED)
    }

    fn totals(&mut self) -> Result<&mut Table<'tx, &'static str, u64>, LedgerError> {
        opened(self.tx, &mut self.totals, TOTALS)
    }

    fn account(&mut self, did: &str) -> Result<(Mana, Mana), LedgerError> {
        Ok(self.accounts()?.get(did)?.map_or((0, 0), |v| unpack(v.value())))
    }

    fn put_account(&mut self, did: &str, balance: Mana, locked: Mana) -> Result<(), LedgerError> {
        self.accounts()?.insert(did, pack(balance, locked))?;
        Ok(())
    }

    fn total_plus(&mut self, name: &str, amount: Mana) -> Result<Mana, LedgerError> {
        let now = self.totals()?.get(name)?.map_or(0, |v| v.value());
        now.checked_add(amount).ok_or(LedgerError::Overflow)
    }

    fn set_total(&mut self, name: &str, value: Mana) -> Result<(), LedgerError> {
        self.totals()?.insert(name, value)?;
        Ok(())
    }

    /// Moves `amount` of `did`'s balance into a new lock named `lock`.
    fn lock(&mut self, lock: &str, did: &str, amount: Mana) -> Result<(), LedgerError> {
        if self.locks()?.get(lock)?.is_some() {
            return Err(LedgerError::LockExists(lock.to_owned()));
        }
        let (balance, locked) = self.account(did)?;
        if balance < amount {
            return Err(LedgerError::Insufficient {
                did: did.to_owned(),
                available: balance,
                needed: amount,
            });
        }
        self.put_account(did, balance - amount, locked.checked_add(amount).ok_or(LedgerError::Overflow)?)?;
        self.locks()?.insert(lock, (did, amount))?;
        Ok(())
    }

    /// Ends `lock`: its payouts and slash leave it, the rest returns to its owner.
    fn resolve(&mut self, lock: &str, resolution: &Resolution) -> Result<(), LedgerError> {
        // Everything is computed and checked first; only then is anything written.
        let (owner, amount) = {
            let Some(entry) = self.locks()?.get(lock)? else {
                return Err(LedgerError::NoLock(lock.to_owned()));
            };
            let (owner, amount) = entry.value();
            (owner.to_owned(), amount)
        };
        let paid = resolution
            .payouts
            .iter()
            .try_fold(resolution.slash, |sum, (_, a)| sum.checked_add(*a))
            .ok_or(LedgerError::Overflow)?;
        if paid > amount {
            return Err(LedgerError::Overdrawn { lock: lock.to_owned(), locked: amount, paid });
        }
        // The whole lock leaves `locked`; the unpaid rest returns to the owner's balance.
        let mut accounts: BTreeMap<&str, (Mana, Mana)> = BTreeMap::new();
        let (balance, locked) = self.account(&owner)?;
        accounts.insert(&owner, (balance + (amount - paid), locked - amount));
        for (did, pay) in &resolution.payouts {
            let (balance, locked) = match accounts.get(did.as_str()) {
                Some(a) => *a,
                None => self.account(did)?,
            };
            accounts.insert(did, (balance.checked_add(*pay).ok_or(LedgerError::Overflow)?, locked));
        }
        // The sink moves only with a slash (most resolutions slash nothing).
        let sink = match resolution.slash {
            0 => None,
            slash => Some(self.total_plus(SINK, slash)?),
        };
        self.locks()?.remove(lock)?;
        for (did, (balance, locked)) in accounts {
            self.put_account(did, balance, locked)?;
        }
        match sink {
            Some(sink) => self.set_total(SINK, sink),
            None => Ok(()),
        }
    }
}

impl Ledger for RedbLedger {
    fn grant(&self, op: &str, did: &str, amount: Mana) -> Result<(), LedgerError> {
        self.apply(Some(op), |t| {
            let (balance, locked) = t.account(did)?;
            let balance = balance.checked_add(amount).ok_or(LedgerError::Overflow)?;
            let granted = t.total_plus("granted", amount)?;
            t.put_account(did, balance, locked)?;
            t.set_total("granted", granted)
        })
    }

    fn lock(&self, op: &str, lock: &str, did: &str, amount: Mana) -> Result<(), LedgerError> {
        self.apply(Some(op), |t| t.lock(lock, did, amount))
    }

    fn stake(&self, lock: &str, did: &str, amount: Mana) -> Result<(), LedgerError> {
        self.apply(None, |t| t.lock(lock, did, amount))
    }

    fn release(&self, lock: &str, slash: Mana) -> Result<(), LedgerError> {
        self.apply(None, |t| t.resolve(lock, &Resolution { payouts: Vec::new(), slash }))
    }

    fn resolve(&self, op: &str, lock: &str, resolution: &Resolution) -> Result<(), LedgerError> {
        self.apply(Some(op), |t| t.resolve(lock, resolution))
    }
    fn account(&self, did: &str) -> Result<(Mana, Mana), LedgerError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(ACCOUNTS)?.get(did)?.map_or((0, 0), |v| unpack(v.value())))
    }

    fn locks_with_prefix(&self, prefix: &str) -> Result<Vec<String>, LedgerError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(LOCKS)?;
        let mut out = Vec::new();
        for entry in table.range(prefix..)? {
            let (name, _) = entry?;
            let name = name.value();
            if !name.starts_with(prefix) {
                break;
            }
            out.push(name.to_owned());
        }
        Ok(out)
    }

    fn audit(&self) -> Result<Audit, LedgerError> {
        let tx = self.db.begin_read()?;
        let totals = tx.open_table(TOTALS)?;
        let granted = totals.get("granted")?.map_or(0, |v| v.value());
        let sink = totals.get(SINK)?.map_or(0, |v| v.value());
        let mut accounts = Vec::new();
        for entry in tx.open_table(ACCOUNTS)?.iter()? {
            let (did, value) = entry?;
            let (balance, locked) = unpack(value.value());
            accounts.push(AccountAudit { did: did.value().to_owned(), balance, locked });
        }
        let mut lock_sums: BTreeMap<String, u128> = BTreeMap::new();
        for entry in tx.open_table(LOCKS)?.iter()? {
            let (_, value) = entry?;
            let (owner, amount) = value.value();
            *lock_sums.entry(owner.to_owned()).or_default() += u128::from(amount);
        }
        let held: u128 = accounts.iter().map(|a| u128::from(a.balance) + u128::from(a.locked)).sum::<u128>()
            + u128::from(sink);
        // Locked figures must also match the open locks, account by account.
        let locks_match =
            accounts.iter().all(|a| lock_sums.get(&a.did).copied().unwrap_or(0) == u128::from(a.locked))
                && lock_sums.keys().all(|d| accounts.iter().any(|a| &a.did == d));
        Ok(Audit { granted, accounts, sink, conserved: held == u128::from(granted) && locks_match })
    }
}
