//! The auction: bids checked and staked as they arrive, windows closed when everyone has answered
//! or time is up, executors (and validators) chosen by the job's strategy, the award sent out.
//! Deadlines and silent executors are caught here too, on the coordinator's tick.
use icn_mesh_core::dag::{DagError, SignedRecord};
use icn_mesh_core::identity::Did;
use icn_mesh_core::market::{self, Bid, JobView, Scored, bid_stake, check_bid};
use icn_mesh_core::protocol::{Blob, RecordBytes, ToExecutor};
use icn_mesh_core::records::AwardRecord;
use icn_mesh_core::{Cid, ErrorCode, FailureReason};

use super::state::{EXECUTOR_SILENCE_MS, PAUSED_SILENCE_MS, Phase, State, stake_lock};
use crate::ledger::Ledger;

impl State {
    // ---------------------------------------------------------------- bids

    /// A bid from `from`, as its session decoded and verified it ([`super::events::Checked`]).
    pub fn bid(&mut self, from: &Did, bid: Result<SignedRecord<Bid>, DagError>, now_ms: u64) {
        let bid = match bid {
            Ok(b) => b,
            Err(e) => {
                return self.refuse(
                    None,
                    None,
                    Some(from),
                    ErrorCode::J001,
                    format!("bid does not verify: {e}"),
                    now_ms,
                );
            }
        };
        let cid = bid.payload.job;
        if &bid.signer != from || &bid.payload.bidder != from {
            return self.refuse(
                Some(cid),
                Some(bid.cid()),
                Some(from),
                ErrorCode::J001,
                "bid signed by another DID than its sender".into(),
                now_ms,
            );
        }
        let reputation = self.reputation.get(from).copied().unwrap_or(0.5);
        let Some(job) = self.jobs.get_mut(&cid) else {
            return self.refuse(
                None,
                Some(bid.cid()),
                Some(from),
                ErrorCode::J001,
                format!("no open job {cid}"),
                now_ms,
            );
        };
        if job.phase != Phase::Bidding || !job.offered.contains(from) || job.answered.contains(from) {
            return self.refuse(
                Some(cid),
                Some(bid.cid()),
                Some(from),
                ErrorCode::J001,
                "the job is not open to a bid from you (replayed or unsolicited)".into(),
                now_ms,
            );
        }
        job.answered.insert(from.clone());
        let view = JobView { cid, spec: &job.record.payload.spec, created_at: job.created_at };
        if let Err(rejection) = check_bid(&view, &bid.payload, reputation, now_ms / 1000) {
            job.declined.insert(from.clone());
            let code = rejection.code();
            self.refuse(
                Some(cid),
                Some(bid.cid()),
                Some(from),
                code,
                format!("bid refused: {rejection}"),
                now_ms,
            );
            return self.close_if_all_answered(cid, now_ms);
        }
        let stake = bid_stake(bid.payload.price);
        // The lock's name is its guard (one per job and bidder; the checks above refuse a replay).
        if let Err(e) = self.ledger.stake(&stake_lock(&cid, from), from.as_str(), stake) {
            self.refuse(
                Some(cid),
                Some(bid.cid()),
                Some(from),
                e.code(),
                format!("cannot lock the 5% bid stake of {stake}: {e}"),
                now_ms,
            );
            return self.close_if_all_answered(cid, now_ms);
        }
        let _ = self.store.put_record(&bid, None);
        if let Some(job) = self.jobs.get_mut(&cid) {
            job.bidders.push(bid.signer.clone());
            job.bids.push(bid);
        }
        self.close_if_all_answered(cid, now_ms);
    }

    pub fn decline(&mut self, from: &Did, cid: Cid, now_ms: u64) {
        if let Some(job) = self.jobs.get_mut(&cid)
            && job.phase == Phase::Bidding
            && job.offered.contains(from)
        {
            job.answered.insert(from.clone());
            job.declined.insert(from.clone());
            self.close_if_all_answered(cid, now_ms);
        }
    }

    pub(super) fn close_if_all_answered(&mut self, cid: Cid, now_ms: u64) {
        if let Some(job) = self.jobs.get(&cid)
            && job.phase == Phase::Bidding
            && job.answered.len() >= job.offered.len()
        {
            self.close_bidding(cid, now_ms);
        }
    }

    /// How long `did` may say nothing while it works: longer while its device policy has paused it
    /// (it said so, and sends a keep-alive every 240 s instead of progress every second).
    fn silence_limit(&self, did: &Did) -> u64 {
        match self.executors.get(did) {
            Some(e) if !e.accepting => PAUSED_SILENCE_MS,
            _ => EXECUTOR_SILENCE_MS,
        }
    }

    /// Bidding windows that have run out, deadlines that have passed, executors gone silent.
    pub fn tick(&mut self, now_ms: u64) {
        let silent: Vec<(Cid, Did)> = self
            .open_jobs()
            .filter(|(_, j)| matches!(j.phase, Phase::Assigned | Phase::Running))
            .flat_map(|(cid, j)| {
                j.executors
                    .iter()
                    .chain(&j.validators)
                    .filter(|d| !j.results.contains_key(*d))
                    .filter(|d| {
                        self.last_seen
                            .get(*d)
                            .is_none_or(|seen| now_ms.saturating_sub(*seen) > self.silence_limit(d))
                    })
                    .map(|d| (*cid, d.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (cid, did) in silent {
            if self.jobs.get(&cid).is_some_and(|j| matches!(j.phase, Phase::Assigned | Phase::Running)) {
                self.executors.remove(&did);
                self.refuse(
                    Some(cid),
                    None,
                    Some(&did),
                    ErrorCode::J004,
                    format!("executor {did} went silent mid-job"),
                    now_ms,
                );
                self.fail_executor(cid, &did, FailureReason::CrashOrPanic, now_ms);
            }
        }
        let late: Vec<(Cid, Phase)> = self
            .open_jobs()
            .filter(|(_, j)| {
                !j.phase.is_final() && j.record.payload.spec.deadline.is_some_and(|d| d * 1000 <= now_ms)
            })
            .map(|(c, j)| (*c, j.phase))
            .collect();
        for (cid, phase) in late {
            let participants: Vec<Did> =
                self.jobs[&cid].executors.iter().chain(&self.jobs[&cid].validators).cloned().collect();
            for did in &participants {
                if let Some(e) = self.executors.get(did) {
                    let _ =
                        e.outbox.send(ToExecutor::Cancel { job: cid, reason: "the deadline passed".into() });
                }
                self.release_stake(&cid, did, 0);
            }
            let reason = match phase {
                Phase::Pending | Phase::Bidding => {
                    "the deadline passed before an executor took the job (J010); budget refunded"
                }
                _ => "the deadline passed before the job finished (J010); budget refunded",
            };
            self.finish(cid, Phase::Failed, reason.into(), now_ms);
        }
        // Jobs whose back-off has run out are offered again.
        let retry: Vec<Cid> = self
            .open_jobs()
            .filter(|(_, j)| j.phase == Phase::Pending && j.not_before_ms != 0 && j.not_before_ms <= now_ms)
            .map(|(c, _)| *c)
            .collect();
        for cid in retry {
            self.offer(cid, now_ms);
        }
        let due: Vec<Cid> =
            self.bid_deadlines.iter().filter(|(_, at)| *at <= now_ms).map(|(c, _)| *c).collect();
        self.bid_deadlines.retain(|(_, at)| *at > now_ms);
        for cid in due {
            if self.jobs.get(&cid).is_some_and(|j| j.phase == Phase::Bidding) {
                self.close_bidding(cid, now_ms);
            }
        }
    }

    /// Chooses executors by the job's strategy and awards the job.
    pub(super) fn close_bidding(&mut self, cid: Cid, now_ms: u64) {
        self.bid_deadlines.retain(|(c, _)| *c != cid);
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        let spec = job.record.payload.spec.clone();
        let (n_exec, n_valid) = Self::needed(spec.redundancy);
        let view = JobView { cid, spec: &spec, created_at: job.created_at };
        let scored: Vec<Scored<'_>> = job
            .bids
            .iter()
            .map(|b| Scored {
                bid: &b.payload,
                score: market::score(
                    &view,
                    &b.payload,
                    self.reputation.get(&b.signer).copied().unwrap_or(0.5),
                    now_ms / 1000,
                ),
            })
            .collect();
        // The seed is derived from the job and attempt, recorded in the award: anyone can replay it.
        let seed = u64::from_be_bytes(cid.hash().digest()[..8].try_into().unwrap_or([0; 8]))
            ^ u64::from(job.attempt);
        let order = market::rank(spec.selection_strategy, &scored, seed);
        let bids: Vec<Cid> = order.iter().map(|&i| job.bids[i].cid()).collect();
        let chosen: Vec<&SignedRecord<Bid>> = order.iter().map(|&i| &job.bids[i]).collect();
        if chosen.len() < n_exec + n_valid {
            job.phase = Phase::Pending;
            job.reason = Some(format!(
                "{} bid(s), {} needed; waiting for more executors (J003)",
                chosen.len(),
                n_exec + n_valid
            ));
            let losers: Vec<Did> = job.bids.iter().map(|b| b.signer.clone()).collect();
            for did in losers {
                self.release_stake(&cid, &did, 0);
            }
            return;
        }
        let executors: Vec<Did> = chosen[..n_exec].iter().map(|b| b.signer.clone()).collect();
        let validators: Vec<Did> =
            chosen[n_exec..n_exec + n_valid].iter().map(|b| b.signer.clone()).collect();
        let price = chosen[0].payload.price;
        let losers: Vec<Did> = chosen[n_exec + n_valid..].iter().map(|b| b.signer.clone()).collect();
        let award = AwardRecord {
            job: cid,
            bids,
            executors: executors.clone(),
            validators: validators.clone(),
            strategy: spec.selection_strategy,
            seed,
            price,
            attempt: job.attempt,
            awarded_at_ms: now_ms,
            adjusted_for: job.adjustments.clone(),
        };
        job.executors = executors.clone();
        job.validators = validators.clone();
        job.price = price;
        job.phase = Phase::Assigned;
        job.commitments.clear();
        job.results.clear();
        let (job_bytes, module, input) = (job.record.bytes().to_vec(), job.module.clone(), job.input.clone());
        for did in losers {
            self.release_stake(&cid, &did, 0);
        }
        let Some(award) = self.sign(award, None) else { return };
        let reveal_first = n_exec + n_valid > 1;
        for did in executors.iter().chain(&validators) {
            // The silence clock starts with the award.
            self.last_seen.insert(did.clone(), now_ms);
            if let Some(entry) = self.executors.get_mut(did) {
                entry.busy = Some(cid);
                let _ = entry.outbox.send(ToExecutor::Award {
                    award: RecordBytes(award.bytes().to_vec()),
                    job: RecordBytes(job_bytes.clone()),
                    module: Blob(module.clone()),
                    input: Blob(input.clone()),
                    reveal_first,
                });
            }
        }
        self.journal(&cid);
        self.notify(cid, "assigned");
    }
}
