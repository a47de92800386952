//! Execution and its end: progress, commit-reveal under redundancy, results checked against their
//! CIDs and commitments, validation by redundancy level (§5.1), settlement (§6), failure handling and
//! reassignment (§7).
use std::collections::{BTreeMap, HashMap, HashSet};

use icn_mesh_core::dag::{DagError, SignedRecord, blob_cid};
use icn_mesh_core::identity::Did;
use icn_mesh_core::market::{self, Delivery, JobView, Judgement, RecoveryAction, bid_stake};
use icn_mesh_core::node::output_commitment;
use icn_mesh_core::protocol::{Blob, ClientReply, RecordBytes, ToExecutor};
use icn_mesh_core::records::{PaymentStatus, ReceiptRecord, ResultRecord, ResultStatus, ValidationRecord};
use icn_mesh_core::spec::RedundancyLevel;
use icn_mesh_core::{Cid, ErrorCode, FailureReason};

use super::state::{MAX_ATTEMPTS, Phase, State, stake_lock};

/// §7.2 back-off between attempts: 250 ms × 2^attempt plus up to 250 ms of jitter.
pub const RETRY_BACKOFF: market::BackoffStrategy =
    market::BackoffStrategy::Jittered(std::time::Duration::from_millis(250));
use crate::ledger::{Ledger, Resolution};

impl State {
    // ---------------------------------------------------------------- execution

    pub fn progress(&mut self, from: &Did, cid: Cid, permille: u16) {
        if let Some(job) = self.jobs.get_mut(&cid)
            && job.executors.contains(from)
        {
            job.phase = Phase::Running;
            job.progress = job.progress.max(permille.min(1000));
            let p = job.progress;
            for w in &job.waiters {
                let _ = w.send(ClientReply::Progress { status: "running".into(), permille: p });
            }
        }
    }

    pub fn commit(&mut self, from: &Did, cid: Cid, commitment: [u8; 32]) {
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        if !(job.executors.contains(from) || job.validators.contains(from)) {
            return;
        }
        job.commitments.insert(from.clone(), commitment);
        if job.commitments.len() == job.executors.len() + job.validators.len() {
            // Everyone has committed: now they may reveal.
            for did in job.executors.iter().chain(&job.validators) {
                if let Some(entry) = self.executors.get(did) {
                    let _ = entry.outbox.send(ToExecutor::Reveal { job: cid });
                }
            }
        }
    }

    /// A result from `from`, its record as its session decoded and verified it.
    pub fn result(
        &mut self,
        from: &Did,
        record: Result<SignedRecord<ResultRecord>, DagError>,
        output: Blob,
        now_ms: u64,
    ) {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                return self.refuse(
                    None,
                    None,
                    Some(from),
                    ErrorCode::J005,
                    format!("result does not verify: {e}"),
                    now_ms,
                );
            }
        };
        let cid = record.payload.job;
        if &record.signer != from {
            return self.refuse(
                Some(cid),
                Some(record.cid()),
                Some(from),
                ErrorCode::J005,
                "result signed by another DID than its sender".into(),
                now_ms,
            );
        }
        let Some(job) = self.jobs.get_mut(&cid) else {
            return self.refuse(
                None,
                Some(record.cid()),
                Some(from),
                ErrorCode::J005,
                "result for an unknown job (replayed?)".into(),
                now_ms,
            );
        };
        let working = job.executors.contains(from) || job.validators.contains(from);
        if !working || job.results.contains_key(from) || job.phase.is_final() {
            return self.refuse(
                Some(cid),
                Some(record.cid()),
                Some(from),
                ErrorCode::J005,
                "a result nobody asked you for (replayed or late)".into(),
                now_ms,
            );
        }
        if record.payload.output.is_some_and(|c| c != blob_cid(&output.0)) {
            return self.refuse(
                Some(cid),
                Some(record.cid()),
                Some(from),
                ErrorCode::J005,
                "the output does not match the result's output CID".into(),
                now_ms,
            );
        }
        if let Some(commitment) = job.commitments.get(from) {
            let revealed = record.payload.output.unwrap_or_else(|| blob_cid(b""));
            if output_commitment(from, &revealed) != *commitment {
                return self.refuse(
                    Some(cid),
                    Some(record.cid()),
                    Some(from),
                    ErrorCode::J005,
                    "the revealed output is not the one committed to".into(),
                    now_ms,
                );
            }
        }
        if let Ok(mut batch) = self.store.batch() {
            let _ = batch.put_blob(&output.0);
            let _ = batch.put_record(&record, None);
            let _ = batch.commit();
        }
        job.results.insert(from.clone(), (record, output.0));
        if let Some(e) = self.executors.get_mut(from) {
            e.busy = None;
        }
        let job = &self.jobs[&cid];
        if job.results.len() == job.executors.len() + job.validators.len() {
            self.judge(cid, now_ms);
        }
        self.offer_pending(now_ms);
    }

    /// An executor's connection closed: its running work is lost.
    pub fn executor_gone(&mut self, did: &Did, now_ms: u64) {
        let Some(entry) = self.executors.remove(did) else { return };
        if let Some(cid) = entry.busy
            && self.jobs.get(&cid).is_some_and(|j| !j.phase.is_final() && !j.results.contains_key(did))
        {
            self.refuse(
                Some(cid),
                None,
                Some(did),
                ErrorCode::J004,
                format!("executor {did} vanished mid-job"),
                now_ms,
            );
            self.fail_executor(cid, did, FailureReason::CrashOrPanic, now_ms);
        }
    }

    /// An executor failed the job: §7 recovery (slash half its stake and reassign, or cancel).
    pub(super) fn fail_executor(&mut self, cid: Cid, did: &Did, failure: FailureReason, now_ms: u64) {
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        let action = market::recovery_for(failure);
        match action {
            RecoveryAction::Reassign { .. }
            | RecoveryAction::Retry { .. }
            | RecoveryAction::Investigate { .. } => {
                job.excluded.insert(did.clone());
                let others: Vec<Did> =
                    job.executors.iter().chain(&job.validators).filter(|d| *d != did).cloned().collect();
                job.phase = Phase::Pending;
                // §7.2: the next attempt waits out a jittered exponential back-off (the seed is the
                // job's, so the delay can be replayed), and runs a spec adjusted for the failure.
                let current = job.effective_spec();
                if market::adjust_job_spec(&current, failure) != current {
                    job.adjustments.push(failure);
                }
                let seed = u64::from_be_bytes(cid.hash().digest()[..8].try_into().unwrap_or([0; 8]));
                let delay = RETRY_BACKOFF.delay(job.attempt, seed);
                job.not_before_ms = now_ms + delay.as_millis() as u64;
                job.reason = Some(format!(
                    "{did} failed ({failure}); reassigning in {} ms{}",
                    delay.as_millis(),
                    if job.adjustments.is_empty() {
                        String::new()
                    } else {
                        format!(" with the spec adjusted for {:?}", job.adjustments)
                    }
                ));
                let stake = self.stake_of(&cid, did);
                let slash = if matches!(action, RecoveryAction::Reassign { .. }) {
                    market::failure_slash(failure, stake)
                } else {
                    0
                };
                self.release_stake(&cid, did, slash);
                for other in others {
                    if let Some(e) = self.executors.get_mut(&other) {
                        e.busy = None;
                        let _ = e.outbox.send(ToExecutor::Cancel { job: cid, reason: "reassigned".into() });
                    }
                    self.release_stake(&cid, &other, 0);
                }
                if self.jobs[&cid].attempt >= MAX_ATTEMPTS {
                    self.finish(
                        cid,
                        Phase::Failed,
                        format!("failed {MAX_ATTEMPTS} times; last: {failure}"),
                        now_ms,
                    );
                } else {
                    self.offer(cid, now_ms);
                }
            }
            RecoveryAction::Cancel { .. } => {
                let participants: Vec<Did> = job.executors.iter().chain(&job.validators).cloned().collect();
                for d in participants {
                    self.release_stake(&cid, &d, 0);
                }
                self.finish(
                    cid,
                    Phase::Failed,
                    format!("the job failed on its own input ({failure}); budget refunded"),
                    now_ms,
                );
            }
        }
    }

    // ---------------------------------------------------------------- validation and settlement

    /// All results are in: judge them by the job's redundancy level and settle.
    pub(super) fn judge(&mut self, cid: Cid, now_ms: u64) {
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        job.phase = Phase::Validating;
        let redundancy = job.record.payload.spec.redundancy;
        // Outputs of completed runs, by output CID.
        let mut votes: BTreeMap<Cid, Vec<Did>> = BTreeMap::new();
        let mut failed: Vec<(Did, FailureReason)> = Vec::new();
        for (did, (record, _)) in &job.results {
            match (record.payload.status, record.payload.output) {
                (ResultStatus::Completed, Some(out)) => votes.entry(out).or_default().push(did.clone()),
                _ => {
                    failed.push((did.clone(), record.payload.failure.unwrap_or(FailureReason::CrashOrPanic)))
                }
            }
        }
        let total = job.results.len();
        // No run completed: the executor failed the job (§7), whatever the redundancy.
        if votes.is_empty()
            && let Some((did, failure)) = failed.first().cloned()
        {
            return self.fail_executor(cid, &did, failure, now_ms);
        }
        // Under Sampling the executor's own run must have completed; validators only confirm it.
        if let RedundancyLevel::Sampling(_) = redundancy
            && let Some((did, failure)) = failed.iter().find(|(d, _)| job.executors.contains(d)).cloned()
        {
            return self.fail_executor(cid, &did, failure, now_ms);
        }
        let (winner, agreeing) = votes
            .iter()
            .max_by_key(|(_, v)| v.len())
            .map(|(c, v)| (*c, v.clone()))
            .unwrap_or((blob_cid(b""), Vec::new()));
        let (judgement, paid_to, outvoted): (Judgement, Vec<Did>, Vec<Did>) = match redundancy {
            RedundancyLevel::Sampling(n) => {
                let executor = job.executors[0].clone();
                let exec_output = job.results.get(&executor).and_then(|(r, _)| r.payload.output);
                let confirming = job
                    .validators
                    .iter()
                    .filter(|v| {
                        job.results.get(*v).and_then(|(r, _)| r.payload.output) == exec_output
                            && exec_output.is_some()
                    })
                    .count();
                let quorum = (2 * n as usize).div_ceil(3);
                if confirming >= quorum {
                    let wrong: Vec<Did> = job
                        .validators
                        .iter()
                        .filter(|v| job.results.get(*v).and_then(|(r, _)| r.payload.output) != exec_output)
                        .cloned()
                        .collect();
                    (Judgement::Accepted, vec![executor], wrong)
                } else {
                    (Judgement::Rejected, Vec::new(), vec![executor])
                }
            }
            _ if agreeing.len() == total => (Judgement::Accepted, agreeing.clone(), Vec::new()),
            _ if agreeing.len() * 2 > total => {
                let minority = job.results.keys().filter(|d| !agreeing.contains(d)).cloned().collect();
                (Judgement::Disputed, agreeing.clone(), minority)
            }
            _ => (Judgement::Rejected, Vec::new(), job.results.keys().cloned().collect()),
        };
        // Under None nobody validates (§5.1: the single executor is trusted), so there is no
        // judgement to sign: the receipt links the result directly and says `validation: None`.
        if redundancy == RedundancyLevel::None && judgement == Judgement::Accepted {
            self.settle(cid, judgement, &paid_to, &outvoted, None, winner, now_ms);
            return;
        }
        let results: Vec<Cid> = job.results.values().map(|(r, _)| r.cid()).collect();
        let validation = ValidationRecord {
            job: cid,
            results,
            judgement,
            accepted_output: (judgement != Judgement::Rejected).then_some(winner),
            outvoted: outvoted.clone(),
            reason: format!("{redundancy}: {} of {total} agree", agreeing.len()),
        };
        let validation = self.sign(validation, None);
        self.settle(cid, judgement, &paid_to, &outvoted, validation.map(|v| v.cid()), winner, now_ms);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn settle(
        &mut self,
        cid: Cid,
        judgement: Judgement,
        paid_to: &[Did],
        outvoted: &[Did],
        validation: Option<Cid>,
        output: Cid,
        now_ms: u64,
    ) {
        let Some(job) = self.jobs.get(&cid) else { return };
        let spec = job.record.payload.spec.clone();
        let view = JobView { cid, spec: &spec, created_at: job.created_at };
        let budget = view.budget();
        let participants: Vec<Did> = job.executors.iter().chain(&job.validators).cloned().collect();
        let share = budget / participants.len().max(1) as u64;
        let mut payouts = Vec::new();
        let mut receipts = Vec::new();
        for did in &participants {
            let result = job.results.get(did).map(|(r, _)| r.cid());
            let finished_at = job.results.get(did).map_or(now_ms, |(r, _)| r.payload.finished_at_ms) / 1000;
            let reputation = self.reputation.get(did).copied().unwrap_or(0.5);
            let price = job.price.min(share);
            let paid = paid_to.contains(did)
                || (judgement != Judgement::Rejected
                    && job.validators.contains(did)
                    && !outvoted.contains(did));
            let payment = if !paid {
                market::rejected_payment(&view)
            } else if judgement == Judgement::Disputed {
                market::disputed_payment(&view, price, paid_to.len() as u32, participants.len() as u32)
            } else {
                let mut p =
                    market::payment(&view, &Delivery { price, finished_at, accuracy: None, reputation });
                p.total = p.total.min(share);
                p
            };
            let stake = self.stake_of(&cid, did);
            let slashed = if outvoted.contains(did) { market::rejection_slash(stake) } else { 0 };
            if paid {
                payouts.push((did.as_str().to_owned(), payment.total));
            }
            let status = match (paid, judgement) {
                (true, Judgement::Disputed) => PaymentStatus::Disputed,
                (true, _) => PaymentStatus::Completed,
                (false, _) => PaymentStatus::Failed,
            };
            receipts.push((
                did.clone(),
                ReceiptRecord {
                    job: cid,
                    result,
                    validation,
                    executor: did.clone(),
                    submitter: job.record.signer.clone(),
                    status,
                    payment: market::Payment { total: if paid { payment.total } else { 0 }, ..payment },
                    slashed,
                    settled_at_ms: now_ms,
                },
                slashed,
            ));
        }
        // Receipts are signed and stored first, then the money moves in one ledger operation keyed by
        // the job (a replayed settlement pays once). A crash between the two leaves the budget locked,
        // and the restarted coordinator runs the job again; one after leaves the receipts to find.
        let mut signed = Vec::new();
        for (did, receipt, slashed) in receipts {
            if let Some(record) = self.sign(receipt, Some(cid)) {
                signed.push((did, record, slashed));
            }
        }
        super::fault::crash_point("settle-before-ledger");
        let resolution = Resolution { payouts: payouts.clone(), slash: 0 };
        if let Err(e) = self.ledger.resolve(&format!("settle:{cid}"), &format!("job:{cid}"), &resolution) {
            tracing::error!("settling {cid} failed: {e}");
        }
        super::fault::crash_point("settle-after-ledger");
        let mut receipt_cids = Vec::new();
        for (did, record, slashed) in signed {
            self.release_stake(&cid, &did, slashed);
            let outcome = if outvoted.contains(&did) {
                Judgement::Rejected
            } else if judgement == Judgement::Disputed {
                Judgement::Disputed
            } else {
                judgement
            };
            let r = self.reputation.entry(did.clone()).or_insert(0.5);
            *r = market::update_reputation(*r, outcome);
            receipt_cids.push(record.cid());
            if let Some(entry) = self.executors.get_mut(&did) {
                entry.busy = None;
                let _ = entry.outbox.send(ToExecutor::Receipt(RecordBytes(record.bytes().to_vec())));
            }
        }
        if let Some(job) = self.jobs.get_mut(&cid) {
            job.paid = payouts.iter().filter_map(|(d, a)| Did::parse(d).ok().map(|d| (d, *a))).collect();
            job.receipts = receipt_cids;
            job.output = (judgement != Judgement::Rejected).then_some(output);
        }
        let (phase, reason) = match judgement {
            Judgement::Accepted => (Phase::Completed, "accepted".to_owned()),
            Judgement::Disputed => {
                (Phase::Completed, format!("accepted with dispute: {} outvoted and slashed", outvoted.len()))
            }
            Judgement::Rejected => {
                (Phase::Failed, "results rejected by validation (J005); budget refunded".to_owned())
            }
        };
        self.finish(cid, phase, reason, now_ms);
    }

    /// Ends a job: refunds whatever of its budget is still locked, tells the waiters.
    pub(super) fn finish(&mut self, cid: Cid, phase: Phase, reason: String, _now_ms: u64) {
        // Refund: resolving the job lock with no payouts returns it all (a no-op if already settled).
        let _ = self.ledger.resolve(&format!("settle:{cid}"), &format!("job:{cid}"), &Resolution::default());
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        let ended_before = job.phase.is_final();
        job.phase = phase;
        job.reason = Some(reason);
        for did in job.executors.iter().chain(&job.validators) {
            if let Some(e) = self.executors.get_mut(did)
                && e.busy == Some(cid)
            {
                e.busy = None;
            }
        }
        let Some(entry) = self.journal(&cid) else { return };
        let report = ClientReply::Final(super::state::final_report(cid, entry));
        if let Some(job) = self.jobs.get_mut(&cid) {
            for w in job.waiters.drain(..) {
                let _ = w.send(report.clone());
            }
            // What a finished job keeps in memory is what a status request shows; its blobs and
            // records are in the store.
            job.module = Vec::new();
            job.input = Vec::new();
            job.bids = Vec::new();
            job.results = BTreeMap::new();
            job.commitments = HashMap::new();
            job.offered = HashSet::new();
            job.answered = HashSet::new();
            job.declined = HashSet::new();
        }
        if !ended_before {
            self.retire(cid);
        }
    }

    pub(super) fn stake_of(&self, cid: &Cid, did: &Did) -> u64 {
        self.jobs
            .get(cid)
            .and_then(|j| j.bids.iter().find(|b| &b.signer == did))
            .map_or(0, |b| bid_stake(b.payload.price))
    }

    pub(super) fn release_stake(&mut self, cid: &Cid, did: &Did, slash: u64) {
        // Refused once released: a second release of the same stake changes nothing.
        let _ = self.ledger.release(&stake_lock(cid, did), slash);
    }

    pub(super) fn notify(&mut self, cid: Cid, status: &str) {
        if let Some(job) = self.jobs.get(&cid) {
            for w in &job.waiters {
                let _ = w.send(ClientReply::Progress { status: status.into(), permille: job.progress });
            }
        }
    }
}
