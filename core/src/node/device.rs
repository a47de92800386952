//! The device as the node sees it: the policy engine behind a lock, and a watch channel that wakes
//! the node's loop when the verdict changes. Nothing polls: the platform pushes state changes in
//! ([`Device::update`]), and the one thing that changes with time alone — the end of an overheating
//! back-off — comes with the instant to look again ([`Device::recheck_at`]).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::policy::{Decision, DeviceState, DeviceStateUpdate, Policy, PolicyEngine, Verdict};

#[derive(Debug)]
pub struct Device {
    engine: Mutex<PolicyEngine>,
    verdict: watch::Sender<Verdict>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Device {
    pub fn new(policy: Policy, state: DeviceState) -> Arc<Self> {
        let mut engine = PolicyEngine::new(policy, state);
        let (verdict, _) = watch::channel(engine.evaluate(now_secs()));
        Arc::new(Self { engine: Mutex::new(engine), verdict })
    }

    /// A mains-powered device that is there to work: only heat stops it.
    pub fn always_on() -> Arc<Self> {
        Self::new(Policy::always_on(), DeviceState::mains_powered())
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, PolicyEngine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a partial state update now; the node's loop hears of a changed verdict at once.
    pub fn update(&self, update: &DeviceStateUpdate) -> Verdict {
        self.update_at(update, now_secs())
    }

    pub fn update_at(&self, update: &DeviceStateUpdate, now: u64) -> Verdict {
        let verdict = self.engine().update(update, now);
        self.publish(&verdict);
        verdict
    }

    /// Decides again for the same state (a back-off may have ended).
    pub fn recheck(&self) -> Verdict {
        let verdict = self.engine().evaluate(now_secs());
        self.publish(&verdict);
        verdict
    }

    fn publish(&self, verdict: &Verdict) {
        self.verdict.send_if_modified(|current| {
            let changed = current.decision != verdict.decision;
            *current = verdict.clone();
            changed
        });
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict.borrow().clone()
    }

    pub fn state(&self) -> DeviceState {
        self.engine().state().clone()
    }

    pub fn policy(&self) -> Policy {
        self.engine().policy().clone()
    }

    /// Told of every change of decision.
    pub fn subscribe(&self) -> watch::Receiver<Verdict> {
        self.verdict.subscribe()
    }

    /// When a pause that ends with time alone (the overheating back-off) should be looked at again.
    pub fn recheck_at(&self) -> Option<u64> {
        let engine = self.engine();
        (self.verdict.borrow().decision == Decision::Pause).then(|| engine.backoff_ends()).flatten()
    }
}
