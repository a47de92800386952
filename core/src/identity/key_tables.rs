//! Which keys have a verification table (`fixed_base`): those that have signed `TABLE_AFTER`
//! good signatures, at most `MAX_TABLES` at once, the least recently used giving its table up to
//! a newcomer. Keyed by the key's bytes, so every parse of a DID finds the same table, and a table
//! goes when its key stops signing, not when the last copy of a DID is dropped (the memo of parsed
//! DIDs keeps copies for long).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;

use super::fixed_base::KeyTable;

/// A key gets its table after this many good signatures. The table takes about 0.15 ms to build
/// and saves about 17 µs a verification, so time is not the limit; memory is (67 KiB a table), and
/// a key that has signed this many records (a coordinator, an executor, a busy submitter) will
/// most likely sign many more.
pub(crate) const TABLE_AFTER: u32 = 16;
/// Tables alive at once: about 2 MiB at most, even on a phone (with the base point's 190 KiB).
pub(crate) const MAX_TABLES: usize = 32;
/// Keys counted at once; when full, the counts of keys without a table start again.
const MAX_COUNTED: usize = 1024;

/// The process's tables.
pub(crate) static TABLES: Mutex<Option<KeyTables>> = Mutex::new(None);

pub(crate) struct KeyTables {
    keys: HashMap<[u8; 32], Slot>,
    with_table: usize,
    clock: u64,
}

#[derive(Default)]
struct Slot {
    good: u32,
    table: Option<Arc<KeyTable>>,
    used: u64,
}

impl KeyTables {
    pub(crate) fn new() -> Self {
        Self { keys: HashMap::new(), with_table: 0, clock: 0 }
    }

    /// `key`'s table, if it has one (and marks it used).
    pub(crate) fn table(&mut self, key: &VerifyingKey) -> Option<Arc<KeyTable>> {
        self.clock += 1;
        let slot = self.keys.get_mut(key.as_bytes())?;
        slot.used = self.clock;
        slot.table.clone()
    }

    /// Counts one good signature by `key`; true for the one that reaches `TABLE_AFTER`, whose
    /// verifier then builds the table (outside the lock) and hands it to [`KeyTables::insert`].
    pub(crate) fn count(&mut self, key: &VerifyingKey) -> bool {
        if !self.keys.contains_key(key.as_bytes()) && self.keys.len() >= MAX_COUNTED {
            self.keys.retain(|_, slot| slot.table.is_some());
        }
        let slot = self.keys.entry(*key.as_bytes()).or_default();
        slot.good = slot.good.saturating_add(1);
        slot.table.is_none() && slot.good == TABLE_AFTER
    }

    /// Gives `key` its table, taking it from the least recently used key if `MAX_TABLES` have one.
    pub(crate) fn insert(&mut self, key: &VerifyingKey, table: KeyTable) {
        if self.with_table >= MAX_TABLES {
            let oldest = self
                .keys
                .iter_mut()
                .filter(|(_, slot)| slot.table.is_some())
                .min_by_key(|(_, slot)| slot.used)
                .map(|(_, slot)| slot);
            if let Some(slot) = oldest {
                slot.table = None;
                // Counted again from the start: it has to sign as many again to come back.
                slot.good = 0;
                self.with_table -= 1;
            }
        }
        self.clock += 1;
        let slot = self.keys.entry(*key.as_bytes()).or_default();
        if slot.table.is_none() {
            self.with_table += 1;
        }
        slot.table = Some(Arc::new(table));
        slot.used = self.clock;
    }
}

/// The process's [`KeyTables`], locked (a poisoned lock is taken over: the tables are a cache).
pub(crate) fn with<R>(f: impl FnOnce(&mut KeyTables) -> R) -> R {
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    f(tables.get_or_insert_with(KeyTables::new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn key(n: u32) -> VerifyingKey {
        let mut seed = [7u8; 32];
        seed[..4].copy_from_slice(&n.to_le_bytes());
        Keypair::from_seed(&seed).did().public_key()
    }

    fn table_for(key: &VerifyingKey) -> KeyTable {
        KeyTable::new(&-key.to_edwards())
    }

    #[test]
    fn a_key_gets_its_table_at_the_count_and_once() {
        let mut tables = KeyTables::new();
        let a = key(1);
        for n in 1..TABLE_AFTER {
            assert!(!tables.count(&a), "asked to build after {n}");
        }
        assert!(tables.count(&a), "not asked to build at {TABLE_AFTER}");
        assert!(tables.table(&a).is_none());
        tables.insert(&a, table_for(&a));
        assert!(tables.table(&a).is_some());
        assert!(!tables.count(&a), "asked to build again");
    }

    #[test]
    fn the_least_recently_used_table_goes_to_a_newcomer() {
        let mut tables = KeyTables::new();
        let keys: Vec<VerifyingKey> = (0..=MAX_TABLES as u32).map(key).collect();
        for k in &keys[..MAX_TABLES] {
            tables.insert(k, table_for(k));
        }
        // Every key but the second is used after it: the second is the least recently used.
        for k in keys[..MAX_TABLES].iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, k)| k) {
            assert!(tables.table(k).is_some());
        }
        let newcomer = &keys[MAX_TABLES];
        tables.insert(newcomer, table_for(newcomer));
        assert!(tables.table(newcomer).is_some());
        assert!(tables.table(&keys[1]).is_none(), "the least recently used kept its table");
        let alive = keys.iter().filter(|k| tables.table(k).is_some()).count();
        assert_eq!(alive, MAX_TABLES);
        // The evicted key counts again from zero.
        for _ in 1..TABLE_AFTER {
            assert!(!tables.count(&keys[1]));
        }
        assert!(tables.count(&keys[1]));
    }

    #[test]
    fn counting_is_bounded_and_keeps_the_tables() {
        let mut tables = KeyTables::new();
        let a = key(1);
        tables.insert(&a, table_for(&a));
        for n in 0..(MAX_COUNTED as u32 + 10) {
            tables.count(&key(100 + n));
        }
        assert!(tables.keys.len() <= MAX_COUNTED);
        assert!(tables.table(&a).is_some());
    }
}
