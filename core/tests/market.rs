//! The market rules: bid checks, scores, the four strategies, payments, slashes — table tests for the
//! cases and property tests for the invariants (nothing paid beyond the budget, slashes within stakes,
//! a replayable random choice).

use icn_mesh_core::dag::blob_cid;
use icn_mesh_core::identity::Keypair;
use icn_mesh_core::market::*;
use icn_mesh_core::spec::{Architecture, JobSpec, SelectionStrategy};
use icn_mesh_core::{Cid, ErrorCode, FailureReason};
use proptest::prelude::*;

const NOW: u64 = 1_800_000_000;

fn spec(extra: serde_json::Value) -> JobSpec {
    let mut json = serde_json::json!({
        "runtime": {"type": "WASM", "module": "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"},
        "compute": {"min_cpu_cores": 2, "min_memory_mb": 512},
        "budget": {"max_total": 1000, "early_completion_bonus": 100},
        "deadline": NOW + 3600,
    });
    if let (Some(base), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    JobSpec::from_json(&json.to_string()).expect("spec")
}

fn job_cid() -> Cid {
    blob_cid(b"the job")
}

fn view(spec: &JobSpec) -> JobView<'_> {
    JobView { cid: job_cid(), spec, created_at: NOW - 600 }
}

fn bid(seed: u8, price: u64, completion: u64) -> Bid {
    Bid {
        job: job_cid(),
        bidder: Keypair::from_seed(&[seed; 32]).did().clone(),
        price,
        completion_time: completion,
        capabilities: Capabilities {
            cpu_cores: 4,
            memory_mb: 1024,
            disk_mb: 10_000,
            gpu: None,
            runtimes: vec![RuntimeKind::Wasm, RuntimeKind::Ccl],
            architecture: Architecture::Arm64,
            fuel_per_second: 500_000_000,
        },
        availability: AvailabilityWindow { from: NOW - 10, until: NOW + 7200 },
        reputation_score: 0.5,
        completed_similar: 0,
        success_rate: 1.0,
        capability_proof: CapabilityProof::default(),
        valid_until: NOW + 60,
    }
}

#[test]
fn bids_are_checked_against_every_rule_of_3_1() {
    let s = spec(serde_json::json!({"min_reputation": 0.6}));
    let job = view(&s);
    let ok = bid(1, 500, NOW + 600);
    assert_eq!(check_bid(&job, &ok, 0.7, NOW), Ok(()));

    let cases: Vec<(Bid, f64, ErrorCode, &str)> = vec![
        (Bid { job: blob_cid(b"other"), ..ok.clone() }, 0.7, ErrorCode::J001, "not"),
        (Bid { price: 1001, ..ok.clone() }, 0.7, ErrorCode::J002, "over the job's budget"),
        (
            Bid {
                completion_time: NOW + 3601,
                availability: AvailabilityWindow { from: NOW, until: NOW + 9000 },
                ..ok.clone()
            },
            0.7,
            ErrorCode::J010,
            "deadline",
        ),
        (Bid { valid_until: NOW - 1, ..ok.clone() }, 0.7, ErrorCode::J010, "expired"),
        (
            Bid { availability: AvailabilityWindow { from: NOW + 100, until: NOW + 7200 }, ..ok.clone() },
            0.7,
            ErrorCode::J003,
            "available",
        ),
        (ok.clone(), 0.5, ErrorCode::J003, "reputation"),
        (Bid { reputation_score: f64::NAN, ..ok.clone() }, 0.7, ErrorCode::J001, "malformed"),
    ];
    for (b, reputation, code, needle) in cases {
        let err = check_bid(&job, &b, reputation, NOW).expect_err(needle);
        assert_eq!(err.code(), code, "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }

    let mut weak = ok.clone();
    weak.capabilities.cpu_cores = 1;
    assert!(
        matches!(check_bid(&job, &weak, 0.7, NOW), Err(BidRejection::Incapable(w)) if w.contains("cores"))
    );
    let mut no_wasm = ok.clone();
    no_wasm.capabilities.runtimes = vec![RuntimeKind::Docker];
    assert!(matches!(check_bid(&job, &no_wasm, 0.7, NOW), Err(BidRejection::Incapable(_))));
    let gpu_spec =
        spec(serde_json::json!({"compute": {"gpu_required": {"type": "NVIDIA", "min_vram_gb": 8}}}));
    let gpu_job = view(&gpu_spec);
    assert!(matches!(check_bid(&gpu_job, &ok, 0.7, NOW), Err(BidRejection::Incapable(w)) if w == "no GPU"));
    let mut amd = ok.clone();
    amd.capabilities.gpu = Some(GpuOffer { vendor: icn_mesh_core::spec::GpuVendor::AMD, vram_gb: 16 });
    assert!(check_bid(&gpu_job, &amd, 0.7, NOW).is_err());
    amd.capabilities.gpu = Some(GpuOffer { vendor: icn_mesh_core::spec::GpuVendor::NVIDIA, vram_gb: 16 });
    assert_eq!(check_bid(&gpu_job, &amd, 0.7, NOW), Ok(()));
}

#[test]
fn the_score_weighs_price_time_reputation_and_capability() {
    let s = spec(serde_json::json!({}));
    let job = view(&s);
    let cheap = bid(1, 100, NOW + 1800);
    let dear = bid(2, 900, NOW + 1800);
    assert!(score(&job, &cheap, 0.5, NOW) > score(&job, &dear, 0.5, NOW));
    let fast = bid(3, 500, NOW + 60);
    let slow = bid(4, 500, NOW + 3500);
    assert!(score(&job, &fast, 0.5, NOW) > score(&job, &slow, 0.5, NOW));
    assert!(score(&job, &fast, 0.9, NOW) > score(&job, &fast, 0.1, NOW));
    // Exact value: price 0.5, time 1 - 60/3600, reputation 0.5, capability (4/2 → 1, 1024/512 → 1).
    let expected = 0.3 * 0.5 + 0.2 * (3540.0 / 3600.0) + 0.3 * 0.5 + 0.2 * 1.0;
    assert!((score(&job, &fast, 0.5, NOW) - expected).abs() < 1e-12);
}

#[test]
fn each_strategy_picks_its_winner() {
    let s = spec(serde_json::json!({}));
    let job = view(&s);
    let bids = [bid(1, 300, NOW + 3000), bid(2, 200, NOW + 3500), bid(3, 600, NOW + 100)];
    let scored: Vec<Scored<'_>> = bids
        .iter()
        .map(|b| Scored { bid: b, score: score(&job, b, [0.2, 0.2, 0.95][b.price as usize / 300 % 3], NOW) })
        .collect();
    assert_eq!(select(SelectionStrategy::LowestPrice, &scored, 0), Some(1));
    assert_eq!(select(SelectionStrategy::FastestDelivery, &scored, 0), Some(2));
    let best = (0..3).max_by(|&a, &b| scored[a].score.total_cmp(&scored[b].score));
    assert_eq!(select(SelectionStrategy::BestScore, &scored, 0), best);
    assert_eq!(select(SelectionStrategy::BestScore, &[], 0), None);
    // Random is replayable from its seed and, over many seeds, favours higher scores.
    let mut wins = [0u32; 3];
    for seed in 0..3000 {
        let a = select(SelectionStrategy::Random, &scored, seed).expect("winner");
        assert_eq!(Some(a), select(SelectionStrategy::Random, &scored, seed));
        wins[a] += 1;
    }
    let best = best.expect("best");
    assert!(wins.iter().all(|&w| w > 0), "{wins:?}");
    assert!(wins[best] == *wins.iter().max().expect("max"), "{wins:?}");
}

#[test]
fn payment_follows_6_1_and_6_2() {
    let s = spec(serde_json::json!({"accuracy": {"target": 0.9, "bonus_per_percent": 10}}));
    let job = view(&s);
    // Finished half-way through the window (created NOW-600, deadline NOW+3600): saved 2100 of 4200.
    let p = payment(
        &job,
        &Delivery { price: 500, finished_at: NOW + 1500, accuracy: Some(0.95), reputation: 1.0 },
    );
    assert_eq!(p.base, 500);
    assert_eq!(p.early_bonus, 50);
    assert_eq!(p.quality_bonus, 50); // 10 × 5 points
    assert_eq!(p.reputation_bonus, 50); // +10% at reputation 1.0
    assert_eq!((p.total, p.refund), (650, 350));
    // Capped at the budget.
    let p = payment(&job, &Delivery { price: 1000, finished_at: NOW, accuracy: Some(1.0), reputation: 1.0 });
    assert_eq!((p.total, p.refund), (1000, 0));
    // Disputed: 2 of 3 agreed.
    let d = disputed_payment(&job, 600, 2, 3);
    assert_eq!((d.total, d.refund), (400, 600));
    assert_eq!(rejected_payment(&job).refund, 1000);
    assert_eq!(reputation_multiplier(1000, 0.5), 1000);
    assert_eq!(reputation_multiplier(1000, 0.75), 1050);
}

#[test]
fn failures_follow_7_1_and_7_2() {
    assert_eq!(bid_stake(1000), 50);
    assert_eq!(failure_slash(FailureReason::CrashOrPanic, 50), 25);
    assert_eq!(failure_slash(FailureReason::NetworkError, 50), 0);
    assert_eq!(failure_slash(FailureReason::InvalidInput, 50), 0);
    assert_eq!(rejection_slash(50), 50);
    assert_eq!(recovery_for(FailureReason::InvalidInput), RecoveryAction::Cancel { refund: true });
    assert!(matches!(
        recovery_for(FailureReason::DeterminismViolation),
        RecoveryAction::Investigate { validators: 3, .. }
    ));
    let s = spec(serde_json::json!({}));
    let oom = adjust_job_spec(&s, FailureReason::OutOfMemory);
    assert_eq!(oom.compute.min_memory_mb, 1024);
    assert!(matches!(oom.runtime, icn_mesh_core::spec::Runtime::WASM { memory_pages: 2048, .. }));
    let slow = adjust_job_spec(&s, FailureReason::CpuTimeout);
    assert_eq!(slow.deadline, Some(NOW + 7200));
    assert!(slow.fuel_budget() > s.fuel_budget());
    use std::time::Duration;
    let base = Duration::from_secs(1);
    assert_eq!(BackoffStrategy::Fixed(base).delay(3, 0), base);
    assert_eq!(BackoffStrategy::Linear(base).delay(3, 0), Duration::from_secs(3));
    assert_eq!(BackoffStrategy::Exponential(base).delay(3, 0), Duration::from_secs(8));
    let j = BackoffStrategy::Jittered(base).delay(3, 42);
    assert!(j >= Duration::from_secs(8) && j < Duration::from_secs(9));
    assert_eq!(j, BackoffStrategy::Jittered(base).delay(3, 42));
    assert!((update_reputation(0.995, Judgement::Accepted) - 1.0).abs() < 1e-12);
    assert!((update_reputation(0.02, Judgement::Rejected)).abs() < 1e-12);
}

proptest! {
    #[test]
    fn nothing_is_paid_beyond_the_budget(
        budget in 1u64..1_000_000_000, price_frac in 0.0f64..=1.0, bonus in 0u64..2_000_000_000,
        finished in 0u64..10_000, accuracy in 0.0f64..=1.0, reputation in -1.0f64..2.0,
        per_percent in 0u64..1_000_000, agreeing in 0u32..10, executors in 0u32..10,
    ) {
        let s = spec(serde_json::json!({
            "budget": {"max_total": budget, "early_completion_bonus": bonus},
            "accuracy": {"target": 0.5, "bonus_per_percent": per_percent},
        }));
        let job = view(&s);
        let price = (budget as f64 * price_frac) as u64;
        let p = payment(&job, &Delivery { price, finished_at: NOW - 600 + finished, accuracy: Some(accuracy), reputation });
        prop_assert!(p.total <= budget);
        prop_assert_eq!(p.total + p.refund, budget);
        prop_assert!(p.total >= p.base.min(budget));
        let d = disputed_payment(&job, price, agreeing, executors);
        prop_assert!(d.total <= price);
        prop_assert_eq!(d.total + d.refund, budget);
    }

    #[test]
    fn slashes_never_exceed_stakes(price in any::<u64>(), which in 0usize..12) {
        let failures = [
            FailureReason::OutOfMemory, FailureReason::CpuTimeout, FailureReason::DiskFull,
            FailureReason::NetworkError, FailureReason::CrashOrPanic, FailureReason::InvalidInput,
            FailureReason::UnsupportedOperation, FailureReason::DeterminismViolation,
            FailureReason::ValidatorUnavailable, FailureReason::DAGWriteFailure,
            FailureReason::ManaInsufficient, FailureReason::DeadlineExceeded,
        ];
        let stake = bid_stake(price);
        prop_assert!(stake <= price);
        prop_assert!(failure_slash(failures[which], stake) <= stake);
        prop_assert!(rejection_slash(stake) <= stake);
    }

    #[test]
    fn ranking_is_a_permutation_and_replayable(
        prices in proptest::collection::vec(0u64..1000, 0..8), seed in any::<u64>(), strategy in 0u8..4,
    ) {
        let s = spec(serde_json::json!({}));
        let job = view(&s);
        let bids: Vec<Bid> = prices.iter().enumerate().map(|(i, &p)| bid(i as u8 + 1, p, NOW + 100 + p)).collect();
        let scored: Vec<Scored<'_>> = bids.iter().map(|b| Scored { bid: b, score: score(&job, b, 0.5, NOW) }).collect();
        let strategy = [SelectionStrategy::LowestPrice, SelectionStrategy::FastestDelivery,
                        SelectionStrategy::BestScore, SelectionStrategy::Random][strategy as usize];
        let order = rank(strategy, &scored, seed);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (0..bids.len()).collect::<Vec<_>>());
        prop_assert_eq!(order, rank(strategy, &scored, seed));
        for b in &scored {
            prop_assert!((0.0..=1.0).contains(&b.score));
        }
    }
}
