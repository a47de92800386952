//! The executor's decisions, pure: whether to bid on an offered job and on what terms.

use crate::market::{AvailabilityWindow, Capabilities, RuntimeKind, check_capability};
use crate::spec::{Epoch, JobSpec, Mana};

/// How long a bid stays valid.
pub const BID_VALIDITY_SECS: u64 = 60;

/// The terms of a bid this node is willing to make.
#[derive(Debug, Clone, PartialEq)]
pub struct BidTerms {
    pub price: Mana,
    pub completion_time: Epoch,
    pub availability: AvailabilityWindow,
    pub valid_until: Epoch,
}

/// Decides whether to bid on `spec` and at what price: `price_per_hour × estimated_cpu_hours`,
/// rounded up, at least 1; completion after the job's fuel budget at this node's measured speed (plus
/// a second for the round trips). Declines, with the reason, when the node cannot or should not.
pub fn decide_bid(
    spec: &JobSpec,
    caps: &Capabilities,
    price_per_hour: Mana,
    accepting: bool,
    now: Epoch,
) -> Result<BidTerms, String> {
    if !accepting {
        return Err("the device policy does not allow work now".into());
    }
    if !matches!(RuntimeKind::of(&spec.runtime), RuntimeKind::Wasm | RuntimeKind::Ccl) {
        return Err(format!("this node runs WASM and CCL jobs, not {}", spec.runtime.type_name()));
    }
    check_capability(spec, caps)?;
    let hours = spec.compute.estimated_cpu_hours.max(0.0);
    let price = ((price_per_hour as f64) * hours).ceil();
    let price = if price.is_finite() && price >= 1.0 { price.min(u64::MAX as f64) as Mana } else { 1 };
    let budget = spec.budget.as_ref().map_or(0, |b| b.max_total);
    if price > budget {
        return Err(format!("this node's price {price} is over the job's budget {budget}"));
    }
    let seconds = spec.fuel_budget() / caps.fuel_per_second.max(1) + 1;
    let completion_time = now.saturating_add(seconds);
    if let Some(deadline) = spec.deadline
        && completion_time > deadline
    {
        return Err(format!("this node would finish at {completion_time}, after the deadline {deadline}"));
    }
    Ok(BidTerms {
        price,
        completion_time,
        availability: AvailabilityWindow { from: now, until: completion_time.saturating_add(3600) },
        valid_until: now + BID_VALIDITY_SECS,
    })
}
