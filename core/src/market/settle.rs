//! Payment, bonuses, reputation, slashes and refunds (spec §6, §7), and what to do after a failure.
//!
//! Every amount here comes out of mana already locked (the job's budget, the bid stakes), so the
//! functions only split what is locked: a payment plus its refund is always the budget, and a slash
//! is never more than the stake. The ledger moves the amounts; these functions decide them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rules::{JobView, SplitMix64};
use crate::error::FailureReason;
use crate::spec::{Epoch, JobSpec, Mana};

/// How a job's budget is split once its result is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The agreed price (the winning bid's), or its disputed share.
    pub base: Mana,
    pub early_bonus: Mana,
    pub quality_bonus: Mana,
    /// What the reputation multiplier adds to the base.
    pub reputation_bonus: Mana,
    /// Paid to the executor: the sum above, capped at the budget.
    pub total: Mana,
    /// Returned to the submitter: budget − total.
    pub refund: Mana,
}

/// What the executor achieved, as far as payment cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub price: Mana,
    pub finished_at: Epoch,
    /// The achieved accuracy (0..=1), for jobs with an accuracy target.
    pub accuracy: Option<f64>,
    /// The executor's reputation (0..=1) when paid.
    pub reputation: f64,
}

/// §6.1 Accepted: price, plus §6.2's early-completion bonus, quality bonus and reputation multiplier,
/// capped at the budget.
pub fn payment(job: &JobView<'_>, d: &Delivery) -> Payment {
    let budget = job.budget();
    let base = d.price.min(budget);
    let early_bonus = early_bonus(job, d.finished_at);
    let quality_bonus = quality_bonus(job.spec, d.accuracy);
    let reputation_bonus = reputation_multiplier(base, d.reputation) - base;
    let total = base
        .saturating_add(early_bonus)
        .saturating_add(quality_bonus)
        .saturating_add(reputation_bonus)
        .min(budget);
    Payment { base, early_bonus, quality_bonus, reputation_bonus, total, refund: budget - total }
}

/// §6.1 AcceptedWithDispute: the base price scaled by the share of executors that agreed with the
/// accepted output, no bonuses. (The spec leaves `calculate_disputed_payment` open; paying for the
/// consensus share rewards the work without rewarding the disagreement.)
pub fn disputed_payment(job: &JobView<'_>, price: Mana, agreeing: u32, executors: u32) -> Payment {
    let budget = job.budget();
    let base = price.min(budget);
    let total = if executors == 0 {
        0
    } else {
        (u128::from(base) * u128::from(agreeing.min(executors)) / u128::from(executors)) as Mana
    };
    Payment {
        base: total,
        early_bonus: 0,
        quality_bonus: 0,
        reputation_bonus: 0,
        total,
        refund: budget - total,
    }
}

/// §6.1 Rejected: nothing paid, the whole budget refunded.
pub fn rejected_payment(job: &JobView<'_>) -> Payment {
    Payment { base: 0, early_bonus: 0, quality_bonus: 0, reputation_bonus: 0, total: 0, refund: job.budget() }
}

/// §6.2: `bonus × (deadline − end) / (deadline − created)`, 0 without a deadline or after it.
pub fn early_bonus(job: &JobView<'_>, finished_at: Epoch) -> Mana {
    let (Some(bonus), Some(deadline)) =
        (job.spec.budget.as_ref().and_then(|b| b.early_completion_bonus), job.spec.deadline)
    else {
        return 0;
    };
    if deadline <= job.created_at || finished_at >= deadline {
        return 0;
    }
    let saved = deadline - finished_at.max(job.created_at);
    let window = deadline - job.created_at;
    (u128::from(bonus) * u128::from(saved) / u128::from(window)) as Mana
}

/// §6.2: `bonus_per_percent × (achieved − target) × 100` when the target is beaten, capped by the
/// budget's `quality_bonus.max_bonus` when one is set.
pub fn quality_bonus(spec: &JobSpec, achieved: Option<f64>) -> Mana {
    let (Some(target), Some(achieved)) = (spec.accuracy, achieved) else { return 0 };
    if !achieved.is_finite() || achieved <= target.target {
        return 0;
    }
    // Percentage points above the target, rounded to a millionth so 0.95 − 0.90 counts as 5 points,
    // not 4.999…
    let points = ((achieved.min(1.0) - target.target) * 100.0 * 1e6).round() / 1e6;
    let bonus = (target.bonus_per_percent as f64 * points).floor();
    let bonus = if bonus.is_finite() && bonus > 0.0 { bonus.min(u64::MAX as f64) as Mana } else { 0 };
    match spec.budget.as_ref().and_then(|b| b.quality_bonus) {
        Some(cap) => bonus.min(cap.max_bonus),
        None => bonus,
    }
}

/// §6.2: `base × (1 + max(reputation − 0.5, 0) × 0.2)` — up to 10% more at reputation 1.0.
pub fn reputation_multiplier(base: Mana, reputation: f64) -> Mana {
    let reputation = if reputation.is_finite() { reputation.clamp(0.0, 1.0) } else { 0.0 };
    // In thousandths, so the result is exact integer arithmetic.
    let per_mille = 1000 + ((reputation - 0.5).max(0.0) * 200.0).round() as u128;
    (u128::from(base) * per_mille / 1000) as Mana
}

/// Reputation after an outcome (§6.1): +0.01 accepted, −0.01 disputed, −0.05 rejected; within 0..=1.
pub fn update_reputation(reputation: f64, outcome: Judgement) -> f64 {
    let delta = match outcome {
        Judgement::Accepted => 0.01,
        Judgement::Disputed => -0.01,
        Judgement::Rejected => -0.05,
    };
    let r = if reputation.is_finite() { reputation } else { 0.5 };
    (r + delta).clamp(0.0, 1.0)
}

/// The three verdicts of §5.1 validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Judgement {
    Accepted,
    Disputed,
    Rejected,
}

/// What §7.1 says to do after a failure, and how much of the executor's stake it costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecoveryAction {
    /// Transient: try again after a back-off.
    Retry { max_attempts: u32 },
    /// The executor failed the job: slash half its stake and give the job to someone else.
    Reassign { increase_requirements: bool },
    /// The job itself cannot run: cancel, refunding the submitter.
    Cancel { refund: bool },
    /// Possible cheating: re-run by validators, freeze the executor meanwhile.
    Investigate { validators: u32, freeze_executor: bool },
}

/// §7.1's table.
pub fn recovery_for(failure: FailureReason) -> RecoveryAction {
    use FailureReason::*;
    match failure {
        NetworkError | ValidatorUnavailable | DAGWriteFailure => RecoveryAction::Retry { max_attempts: 3 },
        OutOfMemory | CpuTimeout | DiskFull | CrashOrPanic | DeadlineExceeded => {
            RecoveryAction::Reassign { increase_requirements: true }
        }
        InvalidInput | UnsupportedOperation => RecoveryAction::Cancel { refund: true },
        DeterminismViolation => RecoveryAction::Investigate { validators: 3, freeze_executor: true },
        ManaInsufficient => RecoveryAction::Cancel { refund: false },
    }
}

/// The part of a bid stake slashed for a failure: half on reassignment (§7.1), none otherwise.
pub fn failure_slash(failure: FailureReason, stake: Mana) -> Mana {
    match recovery_for(failure) {
        RecoveryAction::Reassign { .. } => stake / 2,
        _ => 0,
    }
}

/// The part of a bid stake slashed when validation rejects the result: all of it (§6.1).
pub fn rejection_slash(stake: Mana) -> Mana {
    stake
}

/// §7.2's back-off strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackoffStrategy {
    Fixed(Duration),
    Linear(Duration),
    Exponential(Duration),
    /// Exponential plus up to one `base` of jitter, drawn from a recorded seed.
    Jittered(Duration),
}

impl BackoffStrategy {
    /// The delay before attempt number `attempt` (1 for the first retry).
    pub fn delay(self, attempt: u32, seed: u64) -> Duration {
        let exp = |base: Duration| base.saturating_mul(2u32.saturating_pow(attempt.min(20)));
        match self {
            Self::Fixed(d) => d,
            Self::Linear(base) => base.saturating_mul(attempt),
            Self::Exponential(base) => exp(base),
            Self::Jittered(base) => {
                let jitter = base.mul_f64(SplitMix64(seed ^ u64::from(attempt)).next_f64());
                exp(base).saturating_add(jitter)
            }
        }
    }
}

/// `spec` adjusted, in order, for each of `failures` (what an award's `adjusted_for` means).
pub fn adjusted_spec(spec: &JobSpec, failures: &[FailureReason]) -> JobSpec {
    failures.iter().fold(spec.clone(), |s, f| adjust_job_spec(&s, *f))
}

/// §7.2 `adjust_job_spec`: the job as resubmitted after `failure` — double the memory after
/// OutOfMemory, half again the CPU estimate (so more fuel) and an hour more after CpuTimeout, double
/// the disk after DiskFull.
pub fn adjust_job_spec(spec: &JobSpec, failure: FailureReason) -> JobSpec {
    let mut adjusted = spec.clone();
    match failure {
        FailureReason::OutOfMemory => {
            adjusted.compute.min_memory_mb = adjusted.compute.min_memory_mb.saturating_mul(2);
            if let crate::spec::Runtime::WASM { memory_pages, .. } = &mut adjusted.runtime {
                *memory_pages = memory_pages.saturating_mul(2).min(65_536);
            }
        }
        FailureReason::CpuTimeout => {
            adjusted.compute.estimated_cpu_hours *= 1.5;
            adjusted.deadline = adjusted.deadline.map(|d| d.saturating_add(3600));
        }
        FailureReason::DiskFull => {
            adjusted.storage.min_disk_mb = adjusted.storage.min_disk_mb.saturating_mul(2)
        }
        _ => {}
    }
    adjusted
}
