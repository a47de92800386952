//! Which keys have a verification table (`fixed_base`): those that have signed `TABLE_AFTER`
//! good signatures, at most `MAX_TABLES` at once, the least recently used giving its table up to
//! a newcomer. Keyed by the key's bytes, so every parse of a DID finds the same table, and a table
//! goes when its key stops signing, not when the last copy of a DID is dropped (the memo of parsed
//! DIDs keeps copies for long).
//!
//! And whether tables are used at all: that depends on the CPU, so it is measured, once per
//! process, with the first table built. The tables' additions are curve25519-dalek's serial field
//! arithmetic on every CPU, while its double-base multiplication (what a verification without a
//! table spends) is vectorised where the CPU allows: on one x86-64 server here the table path took
//! 22 µs a verification against 37 µs without, on another (AVX-512 IFMA, AMD EPYC) 22 against 17.
//! A phone's ARM core has no vector backend in dalek, and gets the tables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::VerifyingKey;

use super::fixed_base::{self, KeyTable};

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
    /// Whether tables pay on this CPU: unknown until the first table is built and measured.
    pays: Option<bool>,
}

#[derive(Default)]
struct Slot {
    good: u32,
    table: Option<Arc<KeyTable>>,
    used: u64,
}

impl KeyTables {
    pub(crate) fn new() -> Self {
        Self { keys: HashMap::new(), with_table: 0, clock: 0, pays: None }
    }

    /// Decides for the process whether tables are used, before anyone measures it.
    #[cfg(test)]
    pub(crate) fn decide(&mut self, pays: bool) {
        self.pays = Some(pays);
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
    /// Nothing is counted once tables are known not to pay here.
    pub(crate) fn count(&mut self, key: &VerifyingKey) -> bool {
        if self.pays == Some(false) {
            return false;
        }
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

/// Builds `key`'s table (about 0.15 ms, outside the lock: other verifications go on meanwhile) and
/// keeps it if tables pay on this CPU, which the first table built measures (8 tries each way,
/// about 0.3 ms here, once per process).
pub(crate) fn build(key: &VerifyingKey) {
    let minus_a = -key.to_edwards();
    let table = KeyTable::new(&minus_a);
    let pays = match with(|tables| tables.pays) {
        Some(pays) => pays,
        None => {
            let (with_table, without) = time_both(&table, &minus_a);
            let pays = pays(with_table, without);
            tracing::debug!(
                "verification: [k](-A) + [s]B from tables {with_table:?}, by double-base multiplication \
                 {without:?}: tables {}",
                if pays { "used" } else { "not used" }
            );
            // Whoever decided first decides for all.
            with(|tables| *tables.pays.get_or_insert(pays))
        }
    };
    if pays {
        with(|tables| tables.insert(key, table));
    }
}

/// Whether tables pay, from the best time of `[k](-A) + [s]B` each way: they must save a tenth
/// (each costs 67 KiB, and the measurement is short).
fn pays(with_table: Duration, without: Duration) -> bool {
    with_table * 10 < without * 9
}

/// The best of several timings of `[k](-A) + [s]B` from `table` and `fixed_base::base_point()`,
/// and by curve25519-dalek's double-base multiplication (the one `verify_strict` makes), in
/// alternation so that a change of the machine's pace meets both.
fn time_both(table: &KeyTable, minus_a: &EdwardsPoint) -> (Duration, Duration) {
    let scalars: Vec<Scalar> =
        (0u8..6).map(|n| Scalar::from_bytes_mod_order([n.wrapping_mul(37).wrapping_add(0x5b); 32])).collect();
    let base = fixed_base::base_point();
    let (mut with_table, mut without) = (Duration::MAX, Duration::MAX);
    for pair in scalars.windows(2).cycle().take(8) {
        let (k, s) = (&pair[0], &pair[1]);
        let started = Instant::now();
        std::hint::black_box(table.mul(k) + base.mul(s));
        with_table = with_table.min(started.elapsed());
        let started = Instant::now();
        std::hint::black_box(EdwardsPoint::vartime_double_scalar_mul_basepoint(k, minus_a, s));
        without = without.min(started.elapsed());
    }
    (with_table, without)
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
    fn tables_are_used_only_where_they_save_a_tenth() {
        let us = Duration::from_micros;
        assert!(pays(us(18), us(33)), "the first machine here");
        assert!(!pays(us(18), us(14)), "AVX-512 IFMA on AMD EPYC");
        assert!(!pays(us(19), us(20)), "within a tenth");
    }

    #[test]
    fn both_ways_are_timed_and_the_answer_kept() {
        let a = key(3);
        let minus_a = -a.to_edwards();
        let (with_table, without) = time_both(&KeyTable::new(&minus_a), &minus_a);
        assert!(with_table > Duration::ZERO && with_table < Duration::from_millis(100));
        assert!(without > Duration::ZERO && without < Duration::from_millis(100));
        // Once known not to pay, nothing is counted, so no table is ever built.
        let mut tables = KeyTables::new();
        tables.pays = Some(false);
        assert!((0..2 * TABLE_AFTER).all(|_| !tables.count(&a)));
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
