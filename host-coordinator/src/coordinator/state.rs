//! The coordinator's job table and its transitions: intake, offers, bids, award, results,
//! validation, settlement. Every decision is a call into `core::market`; this file applies them to
//! the store, the ledger and the executors' outboxes. It never blocks and never awaits: the network
//! driver (`mod.rs`) calls in with events and the time, under one lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use icn_mesh_core::dag::{SignedRecord, blob_cid};
use icn_mesh_core::identity::{Did, Keypair};
use icn_mesh_core::market::{
    self, Bid, Capabilities, Delivery, JobView, Judgement, RecoveryAction, Scored, bid_stake, check_bid,
    check_capability,
};
use icn_mesh_core::node::output_commitment;
use icn_mesh_core::protocol::{Blob, ClientReply, FinalReport, JobStatusReport, RecordBytes, ToExecutor};
use icn_mesh_core::records::{
    AwardRecord, JobRecord, PaymentStatus, ReceiptRecord, RefusalRecord, ResultRecord, ResultStatus,
    ValidationRecord,
};
use icn_mesh_core::spec::{RedundancyLevel, Runtime, ValidationContext, validate};
use icn_mesh_core::store::Store;
use icn_mesh_core::{Cid, ErrorCode, FailureReason, Problem};
use tokio::sync::mpsc::UnboundedSender;

use crate::ledger::{Ledger, RedbLedger, Resolution};

/// How many times a job is handed to a new executor before it fails.
pub const MAX_ATTEMPTS: u32 = 3;

pub type Outbox = UnboundedSender<ToExecutor>;
pub type Waiter = UnboundedSender<ClientReply>;

/// A connected executor.
#[derive(Debug)]
pub struct ExecutorEntry {
    pub outbox: Outbox,
    pub capabilities: Capabilities,
    pub accepting: bool,
    pub busy: Option<Cid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Bidding,
    Assigned,
    Running,
    Validating,
    Completed,
    Failed,
    Cancelled,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Bidding => "bidding",
            Self::Assigned => "assigned",
            Self::Running => "running",
            Self::Validating => "validating",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Everything the coordinator knows about one job.
#[derive(Debug)]
pub struct Job {
    pub record: SignedRecord<JobRecord>,
    pub module: Vec<u8>,
    pub input: Vec<u8>,
    pub phase: Phase,
    pub created_at: u64,
    pub attempt: u32,
    pub offered: HashSet<Did>,
    pub answered: HashSet<Did>,
    pub bids: Vec<SignedRecord<Bid>>,
    pub excluded: HashSet<Did>,
    pub executors: Vec<Did>,
    pub validators: Vec<Did>,
    pub price: u64,
    pub commitments: HashMap<Did, [u8; 32]>,
    pub results: BTreeMap<Did, (SignedRecord<ResultRecord>, Vec<u8>)>,
    pub progress: u16,
    pub reason: Option<String>,
    pub output: Option<Cid>,
    pub paid: Vec<(Did, u64)>,
    pub receipts: Vec<Cid>,
    pub waiters: Vec<Waiter>,
}

/// The coordinator's state: store, ledger, key, executors, jobs.
#[derive(Debug)]
pub struct State {
    pub key: Arc<Keypair>,
    pub store: Store,
    pub ledger: RedbLedger,
    pub executors: HashMap<Did, ExecutorEntry>,
    pub jobs: HashMap<Cid, Job>,
    pub reputation: HashMap<Did, f64>,
    /// Jobs whose bidding window must be closed, with the time (ms) to close it.
    pub bid_deadlines: Vec<(Cid, u64)>,
    /// When each executor last sent anything (ms).
    pub last_seen: HashMap<Did, u64>,
}

/// An executor working on a job that says nothing for this long is taken for dead (it reports at
/// least every second while it runs).
pub const EXECUTOR_SILENCE_MS: u64 = 5_000;

fn refusal(code: ErrorCode, message: impl Into<String>) -> ClientReply {
    ClientReply::Refused { code, message: message.into() }
}

impl State {
    fn sign<T: icn_mesh_core::dag::RecordKind>(
        &self,
        payload: T,
        job: Option<Cid>,
    ) -> Option<SignedRecord<T>> {
        let record = SignedRecord::sign(payload, &self.key).ok()?;
        if let Err(e) = self.store.put_record(&record, job) {
            tracing::error!("storing a {} record failed: {e}", T::KIND);
        }
        Some(record)
    }

    /// A signed refusal, stored under its job, sent to the party if it is a connected executor.
    fn refuse(
        &mut self,
        job: Option<Cid>,
        subject: Option<Cid>,
        party: Option<&Did>,
        code: ErrorCode,
        reason: String,
        now_ms: u64,
    ) {
        tracing::warn!("refused: {reason}");
        let record = RefusalRecord {
            job,
            subject,
            party: party.cloned(),
            code,
            reason: reason.clone(),
            at_ms: now_ms,
        };
        if let Some(record) = self.sign(record, job)
            && let Some(party) = party
            && let Some(entry) = self.executors.get(party)
        {
            let _ = entry.outbox.send(ToExecutor::Refused(RecordBytes(record.bytes().to_vec())));
        }
        if let Some(job) = job.and_then(|j| self.jobs.get_mut(&j)) {
            job.reason = Some(reason);
        }
    }

    // ---------------------------------------------------------------- intake

    /// A client submits a job. Returns the reply to send at once.
    pub fn submit(
        &mut self,
        client: &Did,
        job: &RecordBytes,
        module: Blob,
        input: Blob,
        waiter: Option<Waiter>,
        now_ms: u64,
    ) -> ClientReply {
        let record = match SignedRecord::<JobRecord>::decode(&job.0) {
            Ok(r) => r,
            Err(e) => return refusal(ErrorCode::J001, format!("the job record does not verify: {e}")),
        };
        if &record.signer != client {
            return refusal(
                ErrorCode::J001,
                format!("the job is signed by {}, but this connection is {client}", record.signer),
            );
        }
        let cid = record.cid();
        if let Some(existing) = self.jobs.get_mut(&cid) {
            // Idempotent: submitting the same signed job again attaches to it.
            if let Some(w) = waiter {
                existing.waiters.push(w);
            }
            return ClientReply::Accepted { job: cid };
        }
        let spec = &record.payload.spec;
        let mut problems = validate(spec, &ValidationContext { now: now_ms / 1000, code_supplied: false });
        if !matches!(spec.runtime, Runtime::WASM { .. } | Runtime::CCL { .. }) {
            problems.push(Problem::new(
                ErrorCode::J003,
                "runtime.type",
                format!("no executor here offers {} yet", spec.runtime.type_name()),
            ));
        }
        if spec.redundancy == RedundancyLevel::ZeroKnowledge {
            problems.push(Problem::new(
                ErrorCode::J005,
                "redundancy",
                "ZeroKnowledge validation needs a proof system, which this mesh does not have yet: use Sampling(n) or Full(n)",
            ));
        }
        if blob_cid(&module.0) != record.payload.module {
            problems.push(Problem::new(
                ErrorCode::J001,
                "module",
                "the module blob does not match the job's module CID",
            ));
        }
        if record.payload.input.is_some_and(|c| c != blob_cid(&input.0)) {
            problems.push(Problem::new(
                ErrorCode::J001,
                "input",
                "the input blob does not match the job's input CID",
            ));
        }
        if let Some(first) = problems.first() {
            let message = problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            let code = first.code;
            self.refuse(None, Some(cid), Some(client), code, message.clone(), now_ms);
            return refusal(code, message);
        }
        let budget = spec.budget.as_ref().map_or(0, |b| b.max_total);
        if let Err(e) =
            self.ledger.lock(&format!("lock:{cid}"), &format!("job:{cid}"), client.as_str(), budget)
        {
            let message = format!("cannot lock the budget of {budget} mana: {e}");
            self.refuse(None, Some(cid), Some(client), e.code(), message.clone(), now_ms);
            return refusal(e.code(), message);
        }
        if let Ok(mut batch) = self.store.batch() {
            let _ = batch.put_blob(&module.0);
            let _ = batch.put_blob(&input.0);
            let _ = batch.put_record(&record, Some(cid));
            let _ = batch.commit();
        }
        let job = Job {
            record,
            module: module.0,
            input: input.0,
            phase: Phase::Pending,
            created_at: now_ms / 1000,
            attempt: 0,
            offered: HashSet::new(),
            answered: HashSet::new(),
            bids: Vec::new(),
            excluded: HashSet::new(),
            executors: Vec::new(),
            validators: Vec::new(),
            price: 0,
            commitments: HashMap::new(),
            results: BTreeMap::new(),
            progress: 0,
            reason: None,
            output: None,
            paid: Vec::new(),
            receipts: Vec::new(),
            waiters: waiter.into_iter().collect(),
        };
        self.jobs.insert(cid, job);
        self.offer(cid, now_ms);
        ClientReply::Accepted { job: cid }
    }

    fn needed(spec_redundancy: RedundancyLevel) -> (usize, usize) {
        match spec_redundancy {
            RedundancyLevel::Full(n) => (n as usize, 0),
            RedundancyLevel::Sampling(n) => (1, n as usize),
            _ => (1, 0),
        }
    }

    /// Offers a pending job to every fitting, idle, accepting executor not excluded.
    pub fn offer(&mut self, cid: Cid, now_ms: u64) {
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        if job.phase != Phase::Pending {
            return;
        }
        job.attempt += 1;
        job.offered.clear();
        job.answered.clear();
        job.bids.clear();
        let offer = ToExecutor::Offer {
            job: RecordBytes(job.record.bytes().to_vec()),
            bid_deadline_ms: now_ms + BID_WINDOW_MS,
        };
        for (did, entry) in &self.executors {
            if entry.accepting
                && entry.busy.is_none()
                && !job.excluded.contains(did)
                && check_capability(&job.record.payload.spec, &entry.capabilities).is_ok()
                && entry.outbox.send(offer.clone()).is_ok()
            {
                job.offered.insert(did.clone());
            }
        }
        let (executors, validators) = Self::needed(job.record.payload.spec.redundancy);
        if job.offered.len() < executors + validators {
            job.reason = Some(format!(
                "waiting for executors: {} needed, {} can take it now (J003)",
                executors + validators,
                job.offered.len()
            ));
            job.attempt -= 1;
            for did in job.offered.drain() {
                if let Some(e) = self.executors.get(&did) {
                    let _ =
                        e.outbox.send(ToExecutor::Cancel { job: cid, reason: "not enough executors".into() });
                }
            }
            return;
        }
        job.phase = Phase::Bidding;
        job.reason = None;
        self.bid_deadlines.push((cid, now_ms + BID_WINDOW_MS));
    }

    /// Re-offers every pending job (an executor arrived or became free).
    pub fn offer_pending(&mut self, now_ms: u64) {
        let pending: Vec<Cid> =
            self.jobs.iter().filter(|(_, j)| j.phase == Phase::Pending).map(|(c, _)| *c).collect();
        for cid in pending {
            self.offer(cid, now_ms);
        }
    }

    // ---------------------------------------------------------------- bids

    pub fn bid(&mut self, from: &Did, bytes: &RecordBytes, now_ms: u64) {
        let bid = match SignedRecord::<Bid>::decode(&bytes.0) {
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
        if let Err(e) =
            self.ledger.lock(&format!("stake:{}", bid.cid()), &stake_lock(&cid, from), from.as_str(), stake)
        {
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
        let _ = self.store.put_record(&bid, Some(cid));
        if let Some(job) = self.jobs.get_mut(&cid) {
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
            self.close_if_all_answered(cid, now_ms);
        }
    }

    fn close_if_all_answered(&mut self, cid: Cid, now_ms: u64) {
        if let Some(job) = self.jobs.get(&cid)
            && job.phase == Phase::Bidding
            && job.answered.len() >= job.offered.len()
        {
            self.close_bidding(cid, now_ms);
        }
    }

    /// Bidding windows that have run out, deadlines that have passed, executors gone silent.
    pub fn tick(&mut self, now_ms: u64) {
        let silent: Vec<(Cid, Did)> = self
            .jobs
            .iter()
            .filter(|(_, j)| matches!(j.phase, Phase::Assigned | Phase::Running))
            .flat_map(|(cid, j)| {
                j.executors
                    .iter()
                    .chain(&j.validators)
                    .filter(|d| !j.results.contains_key(*d))
                    .filter(|d| {
                        self.last_seen
                            .get(*d)
                            .is_none_or(|seen| now_ms.saturating_sub(*seen) > EXECUTOR_SILENCE_MS)
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
            .jobs
            .iter()
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
    fn close_bidding(&mut self, cid: Cid, now_ms: u64) {
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
        let Some(award) = self.sign(award, Some(cid)) else { return };
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
        self.notify(cid, "assigned");
    }

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

    pub fn result(&mut self, from: &Did, bytes: &RecordBytes, output: Blob, now_ms: u64) {
        let record = match SignedRecord::<ResultRecord>::decode(&bytes.0) {
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
            let _ = batch.put_record(&record, Some(cid));
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
    fn fail_executor(&mut self, cid: Cid, did: &Did, failure: FailureReason, now_ms: u64) {
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
                job.reason = Some(format!("{did} failed ({failure}); reassigning"));
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
    fn judge(&mut self, cid: Cid, now_ms: u64) {
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
        let results: Vec<Cid> = job.results.values().map(|(r, _)| r.cid()).collect();
        let validation = ValidationRecord {
            job: cid,
            results,
            judgement,
            accepted_output: (judgement != Judgement::Rejected).then_some(winner),
            outvoted: outvoted.clone(),
            reason: format!("{redundancy}: {} of {total} agree", agreeing.len()),
        };
        let validation = self.sign(validation, Some(cid));
        self.settle(cid, judgement, &paid_to, &outvoted, validation.map(|v| v.cid()), winner, now_ms);
    }

    #[allow(clippy::too_many_arguments)]
    fn settle(
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
        // One ledger operation per lock, keyed by the job: a replayed settlement pays once.
        let resolution = Resolution { payouts: payouts.clone(), slash: 0 };
        if let Err(e) = self.ledger.resolve(&format!("settle:{cid}"), &format!("job:{cid}"), &resolution) {
            tracing::error!("settling {cid} failed: {e}");
        }
        let mut receipt_cids = Vec::new();
        for (did, receipt, slashed) in receipts {
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
            if let Some(record) = self.sign(receipt, Some(cid)) {
                receipt_cids.push(record.cid());
                if let Some(entry) = self.executors.get_mut(&did) {
                    entry.busy = None;
                    let _ = entry.outbox.send(ToExecutor::Receipt(RecordBytes(record.bytes().to_vec())));
                }
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
    fn finish(&mut self, cid: Cid, phase: Phase, reason: String, _now_ms: u64) {
        // Refund: resolving the job lock with no payouts returns it all (a no-op if already settled).
        let _ = self.ledger.resolve(&format!("settle:{cid}"), &format!("job:{cid}"), &Resolution::default());
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        job.phase = phase;
        job.reason = Some(reason);
        for did in job.executors.iter().chain(&job.validators) {
            if let Some(e) = self.executors.get_mut(did)
                && e.busy == Some(cid)
            {
                e.busy = None;
            }
        }
        let report = ClientReply::Final(self.final_report(cid));
        if let Some(job) = self.jobs.get_mut(&cid) {
            for w in job.waiters.drain(..) {
                let _ = w.send(report.clone());
            }
        }
    }

    fn stake_of(&self, cid: &Cid, did: &Did) -> u64 {
        self.jobs
            .get(cid)
            .and_then(|j| j.bids.iter().find(|b| &b.signer == did))
            .map_or(0, |b| bid_stake(b.payload.price))
    }

    fn release_stake(&mut self, cid: &Cid, did: &Did, slash: u64) {
        let lock = stake_lock(cid, did);
        let attempt = self.jobs.get(cid).map_or(0, |j| j.attempt);
        let _ = self.ledger.resolve(
            &format!("release:{lock}:{attempt}"),
            &lock,
            &Resolution { payouts: Vec::new(), slash },
        );
    }

    fn notify(&mut self, cid: Cid, status: &str) {
        if let Some(job) = self.jobs.get(&cid) {
            for w in &job.waiters {
                let _ = w.send(ClientReply::Progress { status: status.into(), permille: job.progress });
            }
        }
    }

    // ---------------------------------------------------------------- reports

    pub fn status(&self, cid: &Cid) -> Option<JobStatusReport> {
        let job = self.jobs.get(cid)?;
        let health = match job.phase {
            Phase::Running | Phase::Assigned => "healthy",
            Phase::Pending if job.reason.is_some() => "waiting",
            p if p.is_final() => "done",
            _ => "healthy",
        };
        Some(JobStatusReport {
            job_id: cid.to_string(),
            status: job.phase.name().into(),
            executors: job.executors.iter().map(ToString::to_string).collect(),
            health: health.into(),
            reason: job.reason.clone(),
        })
    }

    pub fn final_report(&self, cid: Cid) -> FinalReport {
        let job = &self.jobs[&cid];
        FinalReport {
            job_id: cid.to_string(),
            status: job.phase.name().into(),
            output_cid: job.output.map(|c| c.to_string()),
            executors: job.executors.iter().map(ToString::to_string).collect(),
            bidders: job.bids.iter().map(|b| b.signer.to_string()).collect(),
            paid: job.paid.iter().map(|(d, a)| (d.to_string(), *a)).collect(),
            receipts: job.receipts.iter().map(ToString::to_string).collect(),
            reason: job.reason.clone(),
        }
    }
}

/// How long executors have to bid, unless all have answered sooner.
pub const BID_WINDOW_MS: u64 = 1500;

fn stake_lock(job: &Cid, did: &Did) -> String {
    format!("stake:{job}:{did}")
}
