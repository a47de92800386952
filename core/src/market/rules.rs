//! Bids: what an executor offers, whether a bid may stand (§3.1), its score and the choice of a
//! winner (§3.2).

use std::cmp::Ordering;
use std::fmt;

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::identity::Did;
use crate::spec::{Architecture, Epoch, GpuVendor, JobSpec, Mana, Runtime, SelectionStrategy};

/// Weights of §3.2's score.
pub const PRICE_WEIGHT: f64 = 0.3;
pub const TIME_WEIGHT: f64 = 0.2;
pub const REPUTATION_WEIGHT: f64 = 0.3;
pub const CAPABILITY_WEIGHT: f64 = 0.2;

/// A runtime an executor can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuntimeKind {
    Wasm,
    Ccl,
    Docker,
    Native,
}

impl RuntimeKind {
    pub fn of(runtime: &Runtime) -> Self {
        match runtime {
            Runtime::WASM { .. } => Self::Wasm,
            Runtime::CCL { .. } => Self::Ccl,
            Runtime::Docker { .. } => Self::Docker,
            Runtime::Native { .. } => Self::Native,
        }
    }
}

/// A GPU an executor has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuOffer {
    pub vendor: GpuVendor,
    pub vram_gb: u32,
}

/// What an executor can do (its advertised capabilities, §3.1 `compute_score`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    pub cpu_cores: u32,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub gpu: Option<GpuOffer>,
    pub runtimes: Vec<RuntimeKind>,
    pub architecture: Architecture,
    /// Measured sandbox speed, fuel per second (higher is faster).
    pub fuel_per_second: u64,
}

/// When the executor can work: `[from, until)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityWindow {
    pub from: Epoch,
    pub until: Epoch,
}

/// Evidence behind the capabilities (§3.1 `CapabilityProof`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityProof {
    /// Result records of similar jobs this executor completed.
    pub past_execution_cids: Vec<Cid>,
}

/// A bid (§3.1), without its signature: bids travel as signed records whose signer is the bidder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bid {
    /// The job record the bid is for.
    pub job: Cid,
    pub bidder: Did,
    pub price: Mana,
    pub completion_time: Epoch,
    pub capabilities: Capabilities,
    pub availability: AvailabilityWindow,
    /// Self-reported; the coordinator scores with the reputation it keeps itself.
    pub reputation_score: f64,
    pub completed_similar: u32,
    pub success_rate: f64,
    pub capability_proof: CapabilityProof,
    pub valid_until: Epoch,
}

/// The job as the market sees it: the spec, its record CID and when it was created.
#[derive(Debug, Clone, Copy)]
pub struct JobView<'a> {
    pub cid: Cid,
    pub spec: &'a JobSpec,
    pub created_at: Epoch,
}

impl JobView<'_> {
    /// The most the submitter will pay (0 when the spec has no budget; such a job never gets this far).
    pub fn budget(&self) -> Mana {
        self.spec.budget.as_ref().map_or(0, |b| b.max_total)
    }
}

/// Why a bid was refused. Each maps to a spec code and says what would make it acceptable.
#[derive(Debug, Clone, PartialEq)]
pub enum BidRejection {
    WrongJob { expected: String, got: String },
    OverBudget { price: Mana, budget: Mana },
    PastDeadline { completion: Epoch, deadline: Epoch },
    Expired { valid_until: Epoch, now: Epoch },
    NotAvailable { window: AvailabilityWindow, now: Epoch, completion: Epoch },
    Incapable(String),
    ReputationTooLow { reputation: f64, required: f64 },
    Malformed(String),
}

impl BidRejection {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::WrongJob { .. } | Self::Malformed(_) => ErrorCode::J001,
            Self::OverBudget { .. } => ErrorCode::J002,
            Self::Incapable(_) | Self::ReputationTooLow { .. } | Self::NotAvailable { .. } => ErrorCode::J003,
            Self::PastDeadline { .. } | Self::Expired { .. } => ErrorCode::J010,
        }
    }
}

impl fmt::Display for BidRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WrongJob { expected, got } => write!(f, "the bid is for job {got}, not {expected}"),
            Self::OverBudget { price, budget } => {
                write!(f, "price {price} is over the job's budget of {budget}")
            }
            Self::PastDeadline { completion, deadline } => {
                write!(f, "completion at {completion} is after the job's deadline {deadline}")
            }
            Self::Expired { valid_until, now } => write!(f, "the bid expired at {valid_until} (now {now})"),
            Self::NotAvailable { window, now, completion } => write!(
                f,
                "the executor is available {}..{} but the job runs {now}..{completion}",
                window.from, window.until
            ),
            Self::Incapable(what) => write!(f, "the executor cannot run this job: {what}"),
            Self::ReputationTooLow { reputation, required } => {
                write!(f, "reputation {reputation:.3} is below the job's minimum {required:.3}")
            }
            Self::Malformed(what) => write!(f, "malformed bid: {what}"),
        }
    }
}

/// §3.1: may this bid stand? `reputation` is the bidder's reputation as the coordinator knows it.
pub fn check_bid(job: &JobView<'_>, bid: &Bid, reputation: f64, now: Epoch) -> Result<(), BidRejection> {
    if bid.job != job.cid {
        return Err(BidRejection::WrongJob { expected: job.cid.to_string(), got: bid.job.to_string() });
    }
    for (name, x) in [("reputation_score", bid.reputation_score), ("success_rate", bid.success_rate)] {
        if !(x.is_finite() && (0.0..=1.0).contains(&x)) {
            return Err(BidRejection::Malformed(format!("{name} {x} is not in 0..=1")));
        }
    }
    if bid.valid_until < now {
        return Err(BidRejection::Expired { valid_until: bid.valid_until, now });
    }
    if bid.completion_time < now {
        return Err(BidRejection::Malformed(format!("completion {} is in the past", bid.completion_time)));
    }
    if bid.price > job.budget() {
        return Err(BidRejection::OverBudget { price: bid.price, budget: job.budget() });
    }
    if let Some(deadline) = job.spec.deadline
        && bid.completion_time > deadline
    {
        return Err(BidRejection::PastDeadline { completion: bid.completion_time, deadline });
    }
    let window = bid.availability;
    if window.from > now || window.until < bid.completion_time {
        return Err(BidRejection::NotAvailable { window, now, completion: bid.completion_time });
    }
    check_capability(job.spec, &bid.capabilities).map_err(BidRejection::Incapable)?;
    if let Some(required) = job.spec.min_reputation
        && reputation < required
    {
        return Err(BidRejection::ReputationTooLow { reputation, required });
    }
    Ok(())
}

/// Whether `caps` meet the job's requirements; the first unmet one otherwise.
pub fn check_capability(spec: &JobSpec, caps: &Capabilities) -> Result<(), String> {
    let kind = RuntimeKind::of(&spec.runtime);
    if !caps.runtimes.contains(&kind) {
        return Err(format!("no {kind:?} runtime"));
    }
    let c = &spec.compute;
    if caps.cpu_cores < c.min_cpu_cores {
        return Err(format!("{} cores, the job needs {}", caps.cpu_cores, c.min_cpu_cores));
    }
    if caps.memory_mb < c.min_memory_mb {
        return Err(format!("{} MB of memory, the job needs {}", caps.memory_mb, c.min_memory_mb));
    }
    if caps.disk_mb < spec.storage.min_disk_mb {
        return Err(format!("{} MB of disk, the job needs {}", caps.disk_mb, spec.storage.min_disk_mb));
    }
    if let Some(arch) = c.architecture
        && arch != caps.architecture
        && !matches!(kind, RuntimeKind::Wasm | RuntimeKind::Ccl)
    {
        return Err(format!("architecture {:?}, the job needs {arch:?}", caps.architecture));
    }
    if let Some(gpu) = &c.gpu_required {
        match caps.gpu {
            None => return Err("no GPU".into()),
            Some(g) if gpu.vendor != GpuVendor::Any && g.vendor != gpu.vendor => {
                return Err(format!("a {:?} GPU, the job needs {:?}", g.vendor, gpu.vendor));
            }
            Some(g) if g.vram_gb < gpu.min_vram_gb => {
                return Err(format!("{} GB of VRAM, the job needs {}", g.vram_gb, gpu.min_vram_gb));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The stake locked with a bid: 5% of its price (§3.1 `price / 20`).
pub fn bid_stake(price: Mana) -> Mana {
    price / 20
}

/// §3.2's score: price 0.3, time 0.2, reputation 0.3, capability 0.2; each part in 0..=1.
///
/// - price: the share of the budget left unspent.
/// - time: the share of the time to the deadline left unused; with no deadline, `1 / (1 + hours)`.
/// - reputation: the coordinator's own figure for the bidder, clamped to 0..=1.
/// - capability: headroom over the requirements — meeting them exactly gives 0.5, twice them 1.0
///   (mean over cores and memory, and VRAM when a GPU is required).
pub fn score(job: &JobView<'_>, bid: &Bid, reputation: f64, now: Epoch) -> f64 {
    let budget = job.budget() as f64;
    let price = if budget > 0.0 { ((budget - bid.price as f64) / budget).clamp(0.0, 1.0) } else { 0.0 };
    let time = match job.spec.deadline {
        Some(deadline) if deadline > now => {
            (deadline.saturating_sub(bid.completion_time) as f64 / (deadline - now) as f64).clamp(0.0, 1.0)
        }
        Some(_) => 0.0,
        None => 1.0 / (1.0 + bid.completion_time.saturating_sub(now) as f64 / 3600.0),
    };
    let reputation = if reputation.is_finite() { reputation.clamp(0.0, 1.0) } else { 0.0 };
    PRICE_WEIGHT * price
        + TIME_WEIGHT * time
        + REPUTATION_WEIGHT * reputation
        + CAPABILITY_WEIGHT * capability(job.spec, &bid.capabilities)
}

fn capability(spec: &JobSpec, caps: &Capabilities) -> f64 {
    let headroom = |offered: f64, required: f64| (offered / required.max(1.0)).min(2.0) / 2.0;
    let mut parts = vec![
        headroom(f64::from(caps.cpu_cores), f64::from(spec.compute.min_cpu_cores)),
        headroom(caps.memory_mb as f64, spec.compute.min_memory_mb as f64),
    ];
    if let (Some(required), Some(offered)) = (&spec.compute.gpu_required, &caps.gpu) {
        parts.push(headroom(f64::from(offered.vram_gb), f64::from(required.min_vram_gb)));
    }
    parts.iter().sum::<f64>() / parts.len() as f64
}

/// A bid with its score, as [`rank`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub bid: &'a Bid,
    pub score: f64,
}

/// Orders bids best first by `strategy`. Ties are broken by price, then the bidder's DID, so the
/// order never depends on arrival. `Random` draws without replacement, weighted by score, from a
/// SplitMix64 stream seeded with `seed` (recorded in the award: anyone can replay it).
pub fn rank(strategy: SelectionStrategy, bids: &[Scored<'_>], seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bids.len()).collect();
    order.sort_by(|&a, &b| compare(strategy, &bids[a], &bids[b]));
    if strategy == SelectionStrategy::Random {
        order = weighted_shuffle(&order, bids, seed);
    }
    order
}

/// Best first by `strategy`; ties by price, then the bidder's DID.
fn compare(strategy: SelectionStrategy, a: &Scored<'_>, b: &Scored<'_>) -> Ordering {
    let by_did = a.bid.bidder.cmp(&b.bid.bidder);
    let by_price = a.bid.price.cmp(&b.bid.price);
    let by_score = b.score.total_cmp(&a.score);
    match strategy {
        SelectionStrategy::LowestPrice => by_price.then(by_score).then(by_did),
        SelectionStrategy::FastestDelivery => {
            a.bid.completion_time.cmp(&b.bid.completion_time).then(by_price).then(by_did)
        }
        SelectionStrategy::BestScore | SelectionStrategy::Random => by_score.then(by_price).then(by_did),
    }
}

/// The winner by `strategy`, if there is any bid.
pub fn select(strategy: SelectionStrategy, bids: &[Scored<'_>], seed: u64) -> Option<usize> {
    rank(strategy, bids, seed).first().copied()
}

fn weighted_shuffle(sorted: &[usize], bids: &[Scored<'_>], seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed);
    let mut left: Vec<usize> = sorted.to_vec();
    let mut out = Vec::with_capacity(left.len());
    // A small floor keeps zero-score bids drawable (and the draw defined when all scores are 0).
    let weight = |i: usize| if bids[i].score.is_finite() { bids[i].score.max(0.0) + 1e-9 } else { 1e-9 };
    while !left.is_empty() {
        let total: f64 = left.iter().map(|&i| weight(i)).sum();
        let mut target = rng.next_f64() * total;
        let mut pick = left.len() - 1;
        for (pos, &i) in left.iter().enumerate() {
            target -= weight(i);
            if target < 0.0 {
                pick = pos;
                break;
            }
        }
        out.push(left.remove(pick));
    }
    out
}

/// SplitMix64: tiny, fast, and specified exactly, so every implementation replays the same draw.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
