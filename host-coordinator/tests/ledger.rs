//! The ledger against a model: random sequences of grants, locks and resolutions, each sometimes
//! replayed, checked after every step against a `BTreeMap` model and the conservation audit. A reopen
//! in the middle proves the state is in the file, not in memory.

use std::collections::BTreeMap;

use icn_mesh_coordinator::ledger::{Ledger, LedgerError, RedbLedger, Resolution};

use proptest::prelude::*;

const DIDS: [&str; 4] = ["did:key:a", "did:key:b", "did:key:c", "did:key:d"];

#[derive(Debug, Clone)]
enum Op {
    Grant {
        did: usize,
        amount: u64,
    },
    Lock {
        lock: usize,
        did: usize,
        amount: u64,
    },
    Resolve {
        lock: usize,
        pay_to: usize,
        pay: u64,
        slash: u64,
    },
    /// A bid stake: guarded by its name, no operation id.
    Stake {
        lock: usize,
        did: usize,
        amount: u64,
    },
    Release {
        lock: usize,
        slash: u64,
    },
    Replay {
        back: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, 0..1000u64).prop_map(|(did, amount)| Op::Grant { did, amount }),
        (0..6usize, 0..4usize, 0..800u64).prop_map(|(lock, did, amount)| Op::Lock { lock, did, amount }),
        (0..6usize, 0..4usize, 0..500u64, 0..200u64).prop_map(|(lock, pay_to, pay, slash)| Op::Resolve {
            lock,
            pay_to,
            pay,
            slash
        }),
        (0..6usize, 0..4usize, 0..800u64).prop_map(|(lock, did, amount)| Op::Stake { lock, did, amount }),
        (0..6usize, 0..200u64).prop_map(|(lock, slash)| Op::Release { lock, slash }),
        (1..5usize).prop_map(|back| Op::Replay { back }),
        Just(Op::Reopen),
    ]
}

#[derive(Default, Debug)]
struct Model {
    balance: BTreeMap<String, u64>,
    locked: BTreeMap<String, u64>,
    locks: BTreeMap<String, (String, u64)>,
    granted: u64,
    sink: u64,
}

impl Model {
    /// Whether locking `amount` of `did` under `name` must succeed; if so, the model does it.
    fn lock(&mut self, name: &str, did: &str, amount: u64) -> bool {
        let ok = !self.locks.contains_key(name) && self.balance.get(did).copied().unwrap_or(0) >= amount;
        if ok {
            *self.balance.entry(did.into()).or_default() -= amount;
            *self.locked.entry(did.into()).or_default() += amount;
            self.locks.insert(name.into(), (did.into(), amount));
        }
        ok
    }

    /// Whether resolving `name` with `pay` to `pay_to` and `slash` must succeed; if so, the model
    /// does it.
    fn resolve(&mut self, name: &str, pay_to: &str, pay: u64, slash: u64) -> bool {
        let ok = self.locks.get(name).is_some_and(|(_, amount)| pay + slash <= *amount);
        if ok {
            let (owner, amount) = self.locks.remove(name).expect("lock");
            *self.locked.entry(owner.clone()).or_default() -= amount;
            *self.balance.entry(owner).or_default() += amount - pay - slash;
            *self.balance.entry(pay_to.into()).or_default() += pay;
            self.sink += slash;
        }
        ok
    }
}

/// An operation as applied, with the id it carried, so it can be replayed exactly.
#[derive(Debug, Clone)]
struct Applied {
    id: String,
    op: Op,
}

/// Applies `op`; returns whether the ledger accepted it.
fn apply(ledger: &RedbLedger, model: &mut Model, id: &str, op: &Op, replay: bool) -> bool {
    match op {
        Op::Grant { did, amount } => {
            ledger.grant(id, DIDS[*did], *amount).expect("grant");
            if !replay {
                *model.balance.entry(DIDS[*did].into()).or_default() += amount;
                model.granted += amount;
            }
        }
        Op::Lock { lock, did, amount } => {
            let name = format!("lock-{lock}");
            let result = ledger.lock(id, &name, DIDS[*did], *amount);
            if !replay {
                let expect_ok = model.lock(&name, DIDS[*did], *amount);
                assert_eq!(result.is_ok(), expect_ok, "{op:?} {result:?}");
            }
            return result.is_ok();
        }
        Op::Resolve { lock, pay_to, pay, slash } => {
            let name = format!("lock-{lock}");
            let resolution = Resolution { payouts: vec![(DIDS[*pay_to].into(), *pay)], slash: *slash };
            let result = ledger.resolve(id, &name, &resolution);
            if !replay {
                let expect_ok = model.resolve(&name, DIDS[*pay_to], *pay, *slash);
                assert_eq!(result.is_ok(), expect_ok, "{op:?} {result:?}");
            }
            return result.is_ok();
        }
        // No operation id: a replay is the same call again, and the model says what it must do —
        // refused while the lock is held (a stake) or once it is gone (a release), so neither
        // locks or slashes twice; a stake replayed after its release is a new stake.
        Op::Stake { lock, did, amount } => {
            let name = format!("lock-{lock}");
            let result = ledger.stake(&name, DIDS[*did], *amount);
            let expect_ok = model.lock(&name, DIDS[*did], *amount);
            assert_eq!(result.is_ok(), expect_ok, "{op:?} {result:?}");
            return result.is_ok();
        }
        Op::Release { lock, slash } => {
            let name = format!("lock-{lock}");
            let result = ledger.release(&name, *slash);
            let expect_ok = model.resolve(&name, DIDS[0], 0, *slash);
            assert_eq!(result.is_ok(), expect_ok, "{op:?} {result:?}");
            return result.is_ok();
        }
        Op::Replay { .. } | Op::Reopen => {}
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn the_ledger_matches_its_model_and_always_adds_up(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ledger.redb");
        let mut ledger = RedbLedger::open(&path).expect("open");
        let mut model = Model::default();
        let mut history: Vec<Applied> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Reopen => {
                    drop(ledger);
                    ledger = RedbLedger::open(&path).expect("reopen");
                }
                Op::Replay { back } => {
                    // Replaying an applied operation id changes nothing. (A refused operation was not
                    // applied; sending it again is a retry, not a replay.)
                    if let Some(previous) = history.iter().rev().nth(*back - 1).cloned() {
                        apply(&ledger, &mut model, &previous.id, &previous.op, true);
                    }
                }
                _ => {
                    let id = format!("op-{i}");
                    if apply(&ledger, &mut model, &id, op, false) {
                        history.push(Applied { id, op: op.clone() });
                    }
                }
            }
            let audit = ledger.audit().expect("audit");
            prop_assert!(audit.conserved, "{audit:?}");
            prop_assert_eq!(audit.granted, model.granted);
            prop_assert_eq!(audit.sink, model.sink);
            for did in DIDS {
                let (balance, locked) = ledger.account(did).expect("account");
                prop_assert_eq!(balance, model.balance.get(did).copied().unwrap_or(0), "{}", did);
                prop_assert_eq!(locked, model.locked.get(did).copied().unwrap_or(0), "{}", did);
            }
        }
    }
}

#[test]
fn a_lock_beyond_the_balance_is_j002_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = RedbLedger::open(&dir.path().join("l.redb")).expect("open");
    ledger.grant("genesis", "did:key:a", 100).expect("grant");
    ledger.grant("genesis", "did:key:a", 100).expect("replayed grant is a no-op");
    let err = ledger.lock("op1", "job-1", "did:key:a", 101).expect_err("insufficient");
    assert_eq!(err.code(), icn_mesh_core::ErrorCode::J002);
    assert_eq!(ledger.account("did:key:a").expect("account"), (100, 0));
    ledger.lock("op2", "job-1", "did:key:a", 60).expect("lock");
    let overdrawn = Resolution { payouts: vec![("did:key:b".into(), 50)], slash: 20 };
    assert!(matches!(ledger.resolve("op3", "job-1", &overdrawn), Err(LedgerError::Overdrawn { .. })));
    let fair = Resolution { payouts: vec![("did:key:b".into(), 50)], slash: 5 };
    ledger.resolve("op4", "job-1", &fair).expect("resolve");
    ledger.resolve("op4", "job-1", &fair).expect("settling twice pays once");
    assert_eq!(ledger.account("did:key:a").expect("a"), (45, 0));
    assert_eq!(ledger.account("did:key:b").expect("b"), (50, 0));
    let audit = ledger.audit().expect("audit");
    assert_eq!((audit.granted, audit.sink, audit.conserved), (100, 5, true));
}
