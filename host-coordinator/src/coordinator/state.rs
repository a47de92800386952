//! The coordinator's job table: the types, intake (validation, budget lock), offers, and the reports
//! clients read. The auction is in `auction.rs`, execution and settlement in `judge.rs`. Every
//! decision is a call into `core::market`; these files apply them to the store, the ledger and the
//! executors' outboxes. They never block and never await: the network driver (`mod.rs`) calls in
//! with events and the time, under one lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use icn_mesh_core::dag::{SignedRecord, blob_cid};
use icn_mesh_core::identity::{Did, Keypair};
use icn_mesh_core::market::{Bid, Capabilities, check_capability};
use icn_mesh_core::protocol::{Blob, ClientReply, FinalReport, JobStatusReport, RecordBytes, ToExecutor};
use icn_mesh_core::records::{JobRecord, PaymentStatus, ReceiptRecord, RefusalRecord, ResultRecord};
use icn_mesh_core::spec::{RedundancyLevel, Runtime, ValidationContext, validate};
use icn_mesh_core::store::Store;
use icn_mesh_core::{Cid, ErrorCode, FailureReason, Problem};
use tokio::sync::mpsc::UnboundedSender;

use super::journal::{Entry, Journal};
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
    /// The phase named by [`Phase::name`] (`pending` for anything unknown).
    pub fn from_name(name: &str) -> Self {
        [
            Self::Bidding,
            Self::Assigned,
            Self::Running,
            Self::Validating,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|p| p.name() == name)
        .unwrap_or(Self::Pending)
    }

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

    pub(super) fn is_final(self) -> bool {
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
    /// Who declined it or bid out of bounds in an earlier round: offered last next time.
    pub declined: HashSet<Did>,
    pub bids: Vec<SignedRecord<Bid>>,
    /// Who bid in the last round (kept when a finished job drops its bids).
    pub bidders: Vec<Did>,
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
    /// Failures of earlier attempts the next award adjusts the spec for (§7.2 `adjust_job_spec`).
    pub adjustments: Vec<FailureReason>,
    /// No offer before this time (ms): the §7.2 back-off after a failed attempt.
    pub not_before_ms: u64,
}

impl Job {
    /// The spec the next award runs: the signed one, adjusted for earlier failures.
    pub fn effective_spec(&self) -> icn_mesh_core::spec::JobSpec {
        icn_mesh_core::market::adjusted_spec(&self.record.payload.spec, &self.adjustments)
    }
}

/// The coordinator's state: store, ledger, key, executors, jobs.
#[derive(Debug)]
pub struct State {
    pub key: Arc<Keypair>,
    pub store: Store,
    pub ledger: RedbLedger,
    pub executors: HashMap<Did, ExecutorEntry>,
    pub jobs: HashMap<Cid, Job>,
    /// The jobs not yet final: what offers and the tick look at.
    pub open: BTreeSet<Cid>,
    /// The finished jobs still in `jobs` (compacted), oldest first: at most `keep_finished` of
    /// them. An older one is answered from the journal.
    pub finished: VecDeque<Cid>,
    /// [`KEEP_FINISHED`], smaller in tests.
    pub keep_finished: usize,
    pub reputation: HashMap<Did, f64>,
    /// Jobs whose bidding window must be closed, with the time (ms) to close it.
    pub bid_deadlines: Vec<(Cid, u64)>,
    /// When each executor last sent anything (ms).
    pub last_seen: HashMap<Did, u64>,
    /// Where each job stands, on disk, for restarts.
    pub journal: Journal,
}

/// An executor working on a job that says nothing for this long is taken for dead (it reports at
/// least every second while it runs).
pub const EXECUTOR_SILENCE_MS: u64 = 5_000;

/// The same for an executor whose device policy paused it (it sends a keep-alive every
/// [`icn_mesh_core::node::PAUSED_KEEPALIVE`]). A pause that outlasts the job's deadline margin is
/// the executor's to report; the deadline check catches one that does not.
pub const PAUSED_SILENCE_MS: u64 = 600_000;

pub(super) fn refusal(code: ErrorCode, message: impl Into<String>) -> ClientReply {
    ClientReply::Refused { code, message: message.into() }
}

impl State {
    /// A coordinator's state over `db` (its store, ledger and journal tables), with no jobs loaded:
    /// call [`State::recover`] to bring back a previous run's.
    pub fn open(key: Arc<Keypair>, db: &icn_mesh_core::store::Db) -> Result<Self, String> {
        let store = Store::within(db.clone()).map_err(|e| e.to_string())?;
        let journal = Journal::within(db.clone(), &store)?;
        Ok(Self {
            key,
            store,
            ledger: RedbLedger::within(db.clone()).map_err(|e| e.to_string())?,
            executors: HashMap::new(),
            jobs: HashMap::new(),
            open: BTreeSet::new(),
            finished: VecDeque::new(),
            keep_finished: KEEP_FINISHED,
            reputation: HashMap::new(),
            bid_deadlines: Vec::new(),
            last_seen: HashMap::new(),
            journal,
        })
    }

    /// Signs and stores `payload`, indexed under `job` when given: only what a restart looks up by
    /// job (receipts, refusals) is; the rest is reached through the DAG's links.
    pub(super) fn sign<T: icn_mesh_core::dag::RecordKind>(
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
    pub(super) fn refuse(
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
        // A finished job's reason is why it ended; a late message refused afterwards is not.
        if let Some(job) = job.and_then(|j| self.jobs.get_mut(&j))
            && !job.phase.is_final()
        {
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
            // Idempotent: submitting the same signed job again attaches to it. A finished job
            // tells no waiters again; the caller reads its final report from the table.
            if let Some(w) = waiter
                && !existing.phase.is_final()
            {
                existing.waiters.push(w);
            }
            return ClientReply::Accepted { job: cid };
        }
        if self.journal.find(&cid, record.payload.submitted_at_ms).ok().flatten().is_some() {
            // The same, for a finished job that memory has let go of: the caller reads its final
            // report from the journal.
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
            let _ = batch.put_record(&record, None);
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
            declined: HashSet::new(),
            bids: Vec::new(),
            bidders: Vec::new(),
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
            adjustments: Vec::new(),
            not_before_ms: 0,
        };
        self.jobs.insert(cid, job);
        self.open.insert(cid);
        self.journal(&cid);
        self.offer(cid, now_ms);
        ClientReply::Accepted { job: cid }
    }

    pub(super) fn needed(spec_redundancy: RedundancyLevel) -> (usize, usize) {
        match spec_redundancy {
            RedundancyLevel::Full(n) => (n as usize, 0),
            RedundancyLevel::Sampling(n) => (1, n as usize),
            _ => (1, 0),
        }
    }

    /// Offers a pending job to the fitting, idle, accepting executors not excluded: as many as it
    /// needs, those with the fewest offers still unanswered first (ties in an order drawn from the
    /// job, so work spreads), those that declined it before last; then up to [`SPARE_OFFERS`] more,
    /// but only executors with no offer left to answer.
    pub fn offer(&mut self, cid: Cid, now_ms: u64) {
        let Some(job) = self.jobs.get(&cid) else { return };
        if job.phase != Phase::Pending || now_ms < job.not_before_ms {
            return;
        }
        let (executors, validators) = Self::needed(job.record.payload.spec.redundancy);
        let salt = u64::from_be_bytes(cid.hash().digest()[..8].try_into().unwrap_or([0; 8]));
        let mut fitting: Vec<&Did> = self
            .executors
            .iter()
            .filter(|(did, entry)| entry.accepting && entry.busy.is_none() && !job.excluded.contains(*did))
            .map(|(did, _)| did)
            .collect();
        if !fitting.is_empty() {
            // The adjusted spec is a copy: made only once some executor is free to check against.
            let effective = job.effective_spec();
            fitting.retain(|did| check_capability(&effective, &self.executors[*did].capabilities).is_ok());
        }
        let needed = executors + validators;
        if fitting.len() < needed {
            // The common case on a busy mesh, for every pending job each time an executor comes
            // free: decided before the scan of every open job's offers below.
            let reason = waiting_for_executors(needed, fitting.len());
            if let Some(job) = self.jobs.get_mut(&cid) {
                job.reason = Some(reason);
            }
            return;
        }
        let waiting = self.unanswered_offers();
        fitting.sort_by_cached_key(|did| {
            (job.declined.contains(*did), waiting.get(*did).copied().unwrap_or(0), spread(salt, did))
        });
        let idle = |did: &Did| !job.declined.contains(did) && !waiting.contains_key(did);
        let spares = fitting.iter().copied().skip(needed).filter(|d| idle(d)).take(SPARE_OFFERS);
        let chosen: Vec<Did> = fitting.iter().copied().take(needed).chain(spares).cloned().collect();
        let Some(job) = self.jobs.get_mut(&cid) else { return };
        job.attempt += 1;
        job.offered.clear();
        job.answered.clear();
        job.bids.clear();
        job.bidders.clear();
        let offer = ToExecutor::Offer {
            job: RecordBytes(job.record.bytes().to_vec()),
            bid_deadline_ms: now_ms + BID_WINDOW_MS,
        };
        for did in chosen {
            if self.executors.get(&did).is_some_and(|e| e.outbox.send(offer.clone()).is_ok()) {
                job.offered.insert(did);
            }
        }
        if job.offered.len() < needed {
            job.reason = Some(waiting_for_executors(needed, job.offered.len()));
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

    /// How many offers each executor has not answered yet.
    fn unanswered_offers(&self) -> HashMap<Did, usize> {
        let mut waiting: HashMap<Did, usize> = HashMap::new();
        for (_, job) in self.open_jobs().filter(|(_, j)| j.phase == Phase::Bidding) {
            for did in job.offered.difference(&job.answered) {
                *waiting.entry(did.clone()).or_default() += 1;
            }
        }
        waiting
    }

    /// The jobs not yet final, with their CIDs.
    pub(super) fn open_jobs(&self) -> impl Iterator<Item = (&Cid, &Job)> {
        self.open.iter().filter_map(|c| self.jobs.get(c).map(|j| (c, j)))
    }

    /// Re-offers every pending job (an executor arrived or became free).
    pub fn offer_pending(&mut self, now_ms: u64) {
        let pending: Vec<Cid> = self
            .open
            .iter()
            .filter(|c| self.jobs.get(*c).is_some_and(|j| j.phase == Phase::Pending))
            .copied()
            .collect();
        for cid in pending {
            self.offer(cid, now_ms);
        }
    }

    // ---------------------------------------------------------------- reports

    /// Writes where `cid` stands to the journal; returns what it wrote.
    pub(super) fn journal(&self, cid: &Cid) -> Option<Entry> {
        let job = self.jobs.get(cid)?;
        let entry = entry_of(job);
        if let Err(e) = self.journal.save(cid, job.record.payload.submitted_at_ms, &entry) {
            tracing::error!("journal write for {cid} failed: {e}");
        }
        Some(entry)
    }

    /// A job that has just become final joins the finished jobs kept in memory; the oldest beyond
    /// `keep_finished` leaves it (its journal entry, records and blobs stay on disk).
    pub(super) fn retire(&mut self, cid: Cid) {
        self.open.remove(&cid);
        self.finished.push_back(cid);
        while self.finished.len() > self.keep_finished {
            if let Some(old) = self.finished.pop_front() {
                self.jobs.remove(&old);
            }
        }
    }

    /// After a restart: every unfinished job in the journal back in the table, either found
    /// settled (its budget lock is gone; its receipts are in the store) or run again from the start
    /// (its stakes returned). Finished jobs stay on disk, where status requests and resubmissions
    /// find them. Returns how many jobs were unfinished.
    pub fn recover(&mut self, now_ms: u64) -> Result<usize, String> {
        let mut unfinished = 0;
        for (cid, entry) in self.journal.load(|e| !Phase::from_name(&e.phase).is_final())? {
            let Some(record) = self
                .store
                .record(&cid)
                .ok()
                .flatten()
                .and_then(|b| SignedRecord::<JobRecord>::decode(&b).ok())
            else {
                tracing::error!("journalled job {cid} is not in the store");
                continue;
            };
            unfinished += 1;
            let (mut phase, mut reason, mut receipts, mut paid, mut output) = (
                Phase::Pending,
                Some("the coordinator restarted; the job runs again".to_owned()),
                entry.receipts.clone(),
                entry.paid.clone(),
                entry.output,
            );
            let job_lock = format!("job:{cid}");
            let open =
                self.ledger.locks_with_prefix(&job_lock).map_err(|e| e.to_string())?.contains(&job_lock);
            for lock in self.ledger.locks_with_prefix(&format!("stake:{cid}:")).map_err(|e| e.to_string())? {
                let op = format!("recover:{lock}:{}", entry.attempt);
                self.ledger.resolve(&op, &lock, &Resolution::default()).map_err(|e| e.to_string())?;
            }
            if !open {
                phase = Phase::Completed;
                reason = Some("settled just before the coordinator restarted".into());
                receipts.clear();
                paid.clear();
                for rc in self.store.records_for_job(&cid).unwrap_or_default() {
                    if let Some(r) = self
                        .store
                        .record(&rc)
                        .ok()
                        .flatten()
                        .and_then(|b| SignedRecord::<ReceiptRecord>::decode(&b).ok())
                    {
                        receipts.push(rc);
                        if r.payload.payment.total > 0 {
                            paid.push((r.payload.executor.clone(), r.payload.payment.total));
                        }
                        if r.payload.status == PaymentStatus::Failed {
                            phase = Phase::Failed;
                        }
                        if r.payload.status != PaymentStatus::Failed
                            && let Some(result) = r.payload.result
                            && let Some(result) = self.store.record(&result).ok().flatten()
                            && let Ok(result) = SignedRecord::<ResultRecord>::decode(&result)
                        {
                            output = output.or(result.payload.output);
                        }
                    }
                }
            }
            // A finished job needs no blobs in memory (see `finish`).
            let (module, input) = if phase.is_final() {
                (Vec::new(), Vec::new())
            } else {
                (
                    self.store.blob(&record.payload.module).ok().flatten().unwrap_or_default(),
                    record.payload.input.and_then(|c| self.store.blob(&c).ok().flatten()).unwrap_or_default(),
                )
            };
            let job = Job {
                record,
                module,
                input,
                phase,
                created_at: entry.created_at,
                attempt: entry.attempt,
                offered: HashSet::new(),
                answered: HashSet::new(),
                declined: HashSet::new(),
                bids: Vec::new(),
                bidders: entry.bidders,
                excluded: entry.excluded.into_iter().collect(),
                executors: entry.executors,
                validators: entry.validators,
                price: 0,
                commitments: HashMap::new(),
                results: BTreeMap::new(),
                progress: 0,
                reason,
                output,
                paid,
                receipts,
                waiters: Vec::new(),
                adjustments: entry.adjustments,
                not_before_ms: 0,
            };
            let settled = job.phase.is_final();
            self.jobs.insert(cid, job);
            self.journal(&cid);
            if settled {
                self.retire(cid);
            } else {
                self.open.insert(cid);
            }
        }
        self.offer_pending(now_ms);
        Ok(unfinished)
    }

    /// What the journal has (or would have) of `cid`: from memory while the job is there, else
    /// from the journal on disk, found through the job record in the store (read transactions:
    /// call it outside a unit). `None` for a job this coordinator never took.
    fn summary(&self, cid: &Cid) -> Option<Entry> {
        if let Some(job) = self.jobs.get(cid) {
            return Some(entry_of(job));
        }
        let submitted = super::journal::submitted_at_ms(&self.store, cid)?;
        self.journal.find(cid, submitted).unwrap_or_else(|e| {
            tracing::error!("journal read for {cid} failed: {e}");
            None
        })
    }

    pub fn status(&self, cid: &Cid) -> Option<JobStatusReport> {
        let entry = self.summary(cid)?;
        let phase = Phase::from_name(&entry.phase);
        let health = match phase {
            Phase::Running | Phase::Assigned => "healthy",
            Phase::Pending if entry.reason.is_some() => "waiting",
            p if p.is_final() => "done",
            _ => "healthy",
        };
        Some(JobStatusReport {
            job_id: cid.to_string(),
            status: entry.phase,
            executors: entry.executors.iter().map(ToString::to_string).collect(),
            health: health.into(),
            reason: entry.reason,
        })
    }

    /// A job's final report (`None` for a job this coordinator never took).
    pub fn final_report(&self, cid: Cid) -> Option<FinalReport> {
        self.summary(&cid).map(|entry| final_report(cid, entry))
    }
}

/// What the journal keeps of `job`.
fn entry_of(job: &Job) -> Entry {
    Entry {
        phase: job.phase.name().to_owned(),
        attempt: job.attempt,
        created_at: job.created_at,
        executors: job.executors.clone(),
        validators: job.validators.clone(),
        excluded: job.excluded.iter().cloned().collect(),
        reason: job.reason.clone(),
        output: job.output,
        paid: job.paid.clone(),
        receipts: job.receipts.clone(),
        adjustments: job.adjustments.clone(),
        bidders: job.bidders.clone(),
    }
}

/// The report a waiting client gets when `cid` ends, from its journal entry.
pub(super) fn final_report(cid: Cid, entry: Entry) -> FinalReport {
    FinalReport {
        job_id: cid.to_string(),
        status: entry.phase,
        output_cid: entry.output.map(|c| c.to_string()),
        executors: entry.executors.iter().map(ToString::to_string).collect(),
        bidders: entry.bidders.iter().map(ToString::to_string).collect(),
        paid: entry.paid.iter().map(|(d, a)| (d.to_string(), *a)).collect(),
        receipts: entry.receipts.iter().map(ToString::to_string).collect(),
        reason: entry.reason,
    }
}

/// How many finished jobs stay in memory, compacted, so that status requests and resubmissions of
/// recent jobs are answered without a read; older ones are read from the journal. A finished job
/// costs about 7 KB here: without a bound, a coordinator that ran a million jobs held 7 GB.
pub const KEEP_FINISHED: usize = 1024;

/// Why a job is still pending: fewer executors can take it now than it needs.
fn waiting_for_executors(needed: usize, available: usize) -> String {
    format!("waiting for executors: {needed} needed, {available} can take it now (J003)")
}

/// How long executors have to bid, unless all have answered sooner.
pub const BID_WINDOW_MS: u64 = 1500;

/// How many executors beyond those a job needs are offered it: a choice for its strategy and room
/// for a decline, without every idle executor verifying and bidding on every pending job (with 64
/// jobs waiting, an executor that came free was offered all 64 and bid on each). Spares are only
/// executors with no other offer to answer: on a saturated mesh every executor is needed for some
/// job anyway, and a spare bid there is work that mostly loses — with 64 jobs in flight on eight
/// executors, two spares per job made three bids a job, a third of the mesh's CPU.
///
/// One: every auction on an idle mesh still chooses between two signed bids, and a decline still
/// has a bid behind it, while each spare offer wakes an idle device (most often a phone) to
/// verify the job and sign a bid that usually loses. Which executor is the spare rotates (the
/// least asked first), so every executor's price meets the others' over a run. A second spare cost
/// a lone trivial job here about 0.2 ms of CPU across the mesh and 8% of its latency (mesh bench,
/// alternating runs), for a third bid.
pub const SPARE_OFFERS: usize = 1;

/// A pseudo-random order of executors for one job (`salt`), the same on every run.
fn spread(salt: u64, did: &Did) -> u64 {
    // FNV-1a over the DID, seeded by the job.
    did.as_str()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325 ^ salt, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

pub(super) fn stake_lock(job: &Cid, did: &Did) -> String {
    format!("stake:{job}:{did}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use icn_mesh_core::market::{Capabilities, RuntimeKind};
    use icn_mesh_core::spec::{Architecture, JobSpec};

    const ECHO: &[u8] = include_bytes!("../../../examples/jobs/echo.wasm");

    #[test]
    fn a_job_is_offered_to_what_it_needs_the_least_asked_first_plus_idle_spares() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::coordinator::open_db(&dir.path().join("store.redb")).expect("db");
        let mut state = State::open(Arc::new(Keypair::from_seed(&[1; 32])), &db).expect("state");
        let client = Keypair::from_seed(&[2; 32]);
        state.ledger.grant("g", client.did().as_str(), 1_000_000).expect("grant");
        let mut outboxes = Vec::new();
        for n in 0..8u8 {
            let (outbox, rx) = tokio::sync::mpsc::unbounded_channel();
            outboxes.push(rx);
            let capabilities = Capabilities {
                cpu_cores: 4,
                memory_mb: 4096,
                disk_mb: 4096,
                gpu: None,
                runtimes: vec![RuntimeKind::Wasm, RuntimeKind::Ccl],
                architecture: Architecture::X86_64,
                fuel_per_second: 1_000_000,
            };
            let did = Keypair::from_seed(&[10 + n; 32]).did().clone();
            state.executors.insert(did, ExecutorEntry { outbox, capabilities, accepting: true, busy: None });
        }
        // Submits a trivial job (`n` makes it distinct) and returns its CID.
        let submit = |state: &mut State, n: usize, redundancy: &str| {
            let mut spec = JobSpec::from_json(&format!(
                r#"{{"runtime": {{"type": "CCL", "contract": "", "args": "job {n}"}}, "budget": {{"max_total": 100}},
                    "redundancy": "{redundancy}"}}"#
            ))
            .expect("spec");
            let record = crate::client::job_record(&mut spec, ECHO, None, &client, 1_000).expect("record");
            let reply = state.submit(
                client.did(),
                &RecordBytes(record.bytes().to_vec()),
                Blob(ECHO.to_vec()),
                Blob(Vec::new()),
                None,
                1_000,
            );
            assert!(matches!(reply, ClientReply::Accepted { .. }), "{reply:?}");
            record.cid()
        };
        let mut offered: Vec<HashSet<Did>> = Vec::new();
        for (n, redundancy) in ["None", "None", "Full(3)", "None"].iter().enumerate() {
            let cid = submit(&mut state, n, redundancy);
            offered.push(state.jobs[&cid].offered.clone());
        }
        // Redundancy None needs one executor: it is offered to it and the spares.
        assert_eq!(offered[0].len(), 1 + SPARE_OFFERS);
        // The next job goes to executors with no offer waiting, not to the same ones.
        assert_eq!(offered[1].len(), 1 + SPARE_OFFERS);
        assert!(offered[0].is_disjoint(&offered[1]), "{offered:?}");
        // Full(3) needs three: the executors asked nothing yet come first, and one still idle
        // after them is its spare.
        let unasked: HashSet<Did> = state
            .executors
            .keys()
            .filter(|d| !offered[0].contains(*d) && !offered[1].contains(*d))
            .cloned()
            .collect();
        assert_eq!(unasked.len(), 8 - 2 * (1 + SPARE_OFFERS));
        assert!(unasked.len() >= 3 + SPARE_OFFERS, "the test leaves Full(3) its spares");
        assert_eq!(offered[2].len(), 3 + SPARE_OFFERS);
        assert!(offered[2].is_subset(&unasked), "{offered:?}");
        // Now every executor has an offer to answer: the next job gets no spare (a saturated mesh
        // gets no spare bids), only the one executor it needs.
        assert_eq!(offered[3].len(), 1, "{offered:?}");

        // A job needing more executors than can take it is not offered at all: it waits, and says
        // why. Here nine for eight executors; then one once every executor is busy.
        let sent = |outboxes: &mut Vec<tokio::sync::mpsc::UnboundedReceiver<ToExecutor>>| {
            outboxes.iter_mut().map(|rx| std::iter::from_fn(|| rx.try_recv().ok()).count()).sum::<usize>()
        };
        sent(&mut outboxes);
        let nine = submit(&mut state, 4, "Full(9)");
        let job = &state.jobs[&nine];
        assert_eq!((job.phase, job.attempt, job.offered.len()), (Phase::Pending, 0, 0));
        assert_eq!(job.reason.as_deref(), Some("waiting for executors: 9 needed, 8 can take it now (J003)"));
        for entry in state.executors.values_mut() {
            entry.busy = Some(nine);
        }
        let one = submit(&mut state, 5, "None");
        assert_eq!(
            state.jobs[&one].reason.as_deref(),
            Some("waiting for executors: 1 needed, 0 can take it now (J003)")
        );
        assert_eq!(state.jobs[&one].phase, Phase::Pending);
        assert_eq!(sent(&mut outboxes), 0, "no offer, and so no cancel, went out for a job that waits");
    }

    /// Only the last `keep_finished` finished jobs stay in memory; an older one is answered from the
    /// journal, the same way: its status, its final report, a resubmission (accepted, nothing
    /// locked again), and after a restart, which brings back no finished job at all.
    #[test]
    fn finished_jobs_leave_memory_and_are_answered_from_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        let client = Keypair::from_seed(&[2; 32]);
        let key = Arc::new(Keypair::from_seed(&[1; 32]));
        let db = crate::coordinator::open_db(&path).expect("db");
        let mut state = State::open(Arc::clone(&key), &db).expect("state");
        state.keep_finished = 2;
        state.ledger.grant("g", client.did().as_str(), 1_000).expect("grant");
        let mut jobs = Vec::new();
        for n in 0..4 {
            let mut spec = JobSpec::from_json(&format!(
                r#"{{"runtime": {{"type": "CCL", "contract": "", "args": "job {n}"}}, "budget": {{"max_total": 100}}}}"#
            ))
            .expect("spec");
            let record = crate::client::job_record(&mut spec, ECHO, None, &client, 1_000).expect("record");
            let (waiter, mut told) = tokio::sync::mpsc::unbounded_channel();
            let bytes = RecordBytes(record.bytes().to_vec());
            let reply = state.submit(
                client.did(),
                &bytes,
                Blob(ECHO.to_vec()),
                Blob(Vec::new()),
                Some(waiter),
                1_000,
            );
            assert!(matches!(reply, ClientReply::Accepted { .. }), "{reply:?}");
            let cid = record.cid();
            assert_eq!(state.status(&cid).expect("status").status, "pending");
            state.finish(cid, Phase::Cancelled, format!("cancelled {n}"), 1_000);
            let Ok(ClientReply::Final(report)) = told.try_recv() else { panic!("no final report") };
            jobs.push((cid, bytes, report));
        }
        // The two oldest have left memory; their budgets came back.
        assert_eq!(state.jobs.len(), 2);
        assert_eq!(state.finished.iter().copied().collect::<Vec<_>>(), vec![jobs[2].0, jobs[3].0]);
        assert!(!state.jobs.contains_key(&jobs[0].0));
        assert_eq!(state.ledger.account(client.did().as_str()).expect("account"), (1_000, 0));

        // A late message refused for a finished job does not replace why it ended.
        state.refuse(Some(jobs[3].0), None, None, ErrorCode::J005, "a late result".into(), 2_000);
        assert_eq!(state.status(&jobs[3].0).expect("status").reason.as_deref(), Some("cancelled 3"));

        let check = |state: &mut State| {
            for (n, (cid, bytes, report)) in jobs.iter().enumerate() {
                let status = state.status(cid).expect("status");
                assert_eq!((status.status.as_str(), status.health.as_str()), ("cancelled", "done"));
                assert_eq!(status.reason, Some(format!("cancelled {n}")));
                assert_eq!(state.final_report(*cid).as_ref(), Some(report));
                // Submitted again: accepted, and nothing locked or offered.
                let (waiter, _told) = tokio::sync::mpsc::unbounded_channel();
                let again = state.submit(
                    client.did(),
                    bytes,
                    Blob(ECHO.to_vec()),
                    Blob(Vec::new()),
                    Some(waiter),
                    3_000,
                );
                assert_eq!(again, ClientReply::Accepted { job: *cid });
                assert_eq!(state.ledger.account(client.did().as_str()).expect("account"), (1_000, 0));
                assert!(state.open.is_empty());
            }
            assert!(state.status(&icn_mesh_core::dag::blob_cid(b"never submitted")).is_none());
        };
        check(&mut state);
        assert_eq!(state.jobs.len(), 2, "a resubmission of a job on disk does not bring it back");

        // A restart brings back what is unfinished: nothing here.
        drop(state);
        drop(db);
        let db = crate::coordinator::open_db(&path).expect("db");
        let mut state = State::open(key, &db).expect("state");
        assert_eq!(state.recover(4_000).expect("recover"), 0);
        assert!(state.jobs.is_empty());
        check(&mut state);
    }
}
