//! The executor: connects to a coordinator, bids on what it can run, runs awarded jobs in the sandbox
//! with progress, sends signed results, keeps receipts.
//!
//! The decisions are pure ([`decide`]); this module is the driver around them — one QUIC connection,
//! one control stream, one job at a time on a blocking thread, everything it signs or receives stored
//! in the node's redb store. It runs on whatever tokio runtime the caller gives it (current-thread on
//! phones and the `icn node` daemon).

pub mod decide;
pub mod device;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cid::Cid;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::dag::{CidBytes, SignedRecord, blob_cid};
use crate::error::FailureReason;
use crate::identity::{Did, Keypair};
use crate::local::{NodeCaps, limits_for};
use crate::market::{Bid, Capabilities, CapabilityProof};
use crate::net::{self, Hello, PeerAddr, Role, frame};
use crate::policy::{Decision, Verdict};
use crate::protocol::{Blob, FromExecutor, MAX_MESSAGE_BYTES, RecordBytes, ToExecutor};
use crate::records::{
    AwardRecord, ENGINE, JobRecord, ReceiptRecord, RefusalRecord, ResultRecord, ResultStatus,
};
use crate::sandbox::{Begun, Control, ExecStatus, Sandbox};
use crate::store::Store;

pub use decide::{BidTerms, decide_bid};
pub use device::Device;

/// While running a job, the node reports at least this often.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// While its job is paused by the device policy, the node says it is alive this often: often enough
/// for the coordinator's patience with a paused executor (600 s), rarely enough that a paused phone
/// wakes up under twice a minute (each keep-alive costs about six wake-ups, with its ACK).
pub const PAUSED_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(240);

/// How long after a receipt the node's store is flushed: the receipts of a busy second share one
/// fsync, and none lands in the middle of the coordinator's own (on one disk, fsyncs queue behind
/// each other: a flush per receipt made the coordinator's flushes four times slower under load).
pub const RECEIPT_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long what the node signed or received may wait to be stored: the records of that moment go
/// in one commit. A commit per record (each bid, each run, each receipt) cost the node more than
/// signing them — every commit copies and checksums a B-tree page per table it touches — and put
/// the commit on the coordinator's path. A node killed outright loses at most this much of its
/// copy of the records, which the coordinator holds signed as well.
pub const STORE_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// Unstored records stored at once, however recent: bounds what a busy node holds in memory.
const MAX_UNSTORED: usize = 64;

/// Recently offered jobs kept verified: an award for one of them (the same bytes) is not verified again.
const OFFERED_KEPT: usize = 8;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    #[error("the coordinator broke the protocol: {0}")]
    Protocol(String),
    #[error("the connection to the coordinator closed: {0}")]
    Closed(String),
}

/// What the node did, for the CLI and the phone app to show.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeEvent {
    Connected {
        coordinator: Did,
    },
    Offered {
        job: Cid,
    },
    Bid {
        job: Cid,
        price: u64,
    },
    Declined {
        job: Cid,
        reason: String,
    },
    Awarded {
        job: Cid,
    },
    Progress {
        job: Cid,
        permille: u16,
    },
    Finished {
        job: Cid,
        status: ResultStatus,
        result: Cid,
    },
    Receipt {
        job: Cid,
        receipt: Cid,
        paid: u64,
    },
    Refused {
        reason: String,
    },
    /// The device policy changed its mind (and the running job, if any, paused, resumed or stopped).
    Policy {
        decision: Decision,
        reason: String,
    },
}

/// An executor node: its key, its store, its sandbox and what it offers.
#[derive(Debug)]
pub struct ExecutorNode {
    pub key: Arc<Keypair>,
    pub store: Arc<Store>,
    pub sandbox: Arc<Sandbox>,
    pub caps: NodeCaps,
    pub capabilities: Capabilities,
    pub price_per_hour: u64,
    /// The device and its policy: whether to bid, and whether the running job may run.
    pub device: Arc<Device>,
}

/// Why the node itself stopped a job (the result says so instead of a bare "cancelled").
type StopReason = Arc<std::sync::Mutex<Option<(FailureReason, String)>>>;

/// The job on this node's blocking thread.
struct Running {
    job: Cid,
    control: Arc<Control>,
    why: StopReason,
    deadline: Option<u64>,
    fuel_budget: u64,
    fuel_used: u64,
    paused: bool,
}

impl Drop for Running {
    /// However the node lets go of a job — finished, replaced, or its connection's future dropped
    /// (a host app stopping the node) — its thread must not stay parked in a pause forever.
    fn drop(&mut self) {
        self.control.cancel();
    }
}

impl Running {
    fn stop(&self, failure: FailureReason, message: String) {
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = Some((failure, message));
        self.control.cancel();
    }

    /// While paused, the moment (Unix seconds) after which the job can no longer finish by its
    /// deadline at this node's speed: past it the node gives the job back instead of missing the
    /// deadline silently.
    fn give_up_at(&self, fuel_per_second: u64) -> Option<u64> {
        let needed = self.fuel_budget.saturating_sub(self.fuel_used) / fuel_per_second.max(1) + 1;
        self.deadline.filter(|_| self.paused).map(|d| d.saturating_sub(needed))
    }
}

fn instant_at(unix_secs: u64) -> tokio::time::Instant {
    let wait = unix_secs.saturating_sub(now_secs());
    tokio::time::Instant::now() + std::time::Duration::from_secs(wait)
}

/// A finished run, waiting to be sent (at once, or after `Reveal` under Full(n)).
struct Finished {
    job: Cid,
    record: SignedRecord<ResultRecord>,
    output: Vec<u8>,
}

/// What a run leaves in the node's store beside its result: queued once the result (or, under
/// commit-reveal, the commitment) is on its way, so the commit is not on the coordinator's path.
struct Keep {
    job: SignedRecord<JobRecord>,
    award: SignedRecord<AwardRecord>,
    module: Vec<u8>,
}

/// Records and blobs the node has signed, sent or received but not yet stored (see [`STORE_DELAY`]).
/// Dropped, it stores what it holds: a host app that stops the node drops its session mid-await.
struct Unstored {
    store: Arc<Store>,
    blobs: Vec<Vec<u8>>,
    /// Each record's exact bytes and CID. Not indexed by job: the node never looks records up by
    /// job (the DAG links them), and the index cost a multimap insert per record.
    records: Vec<CidBytes>,
    /// When the oldest of them arrived.
    since: Option<tokio::time::Instant>,
}

impl Unstored {
    fn new(store: Arc<Store>) -> Self {
        Self { store, blobs: Vec::new(), records: Vec::new(), since: None }
    }

    fn record<T>(&mut self, record: &SignedRecord<T>) {
        self.records.push(record.to_cid_bytes());
        self.since.get_or_insert_with(tokio::time::Instant::now);
    }

    fn blob(&mut self, bytes: Vec<u8>) {
        self.blobs.push(bytes);
        self.since.get_or_insert_with(tokio::time::Instant::now);
    }

    /// A finished run: module, job, award and result records (the output is queued by the caller,
    /// who may still need it).
    fn keep(&mut self, keep: Keep, result: &SignedRecord<ResultRecord>) {
        self.blob(keep.module);
        self.record(&keep.job);
        self.record(&keep.award);
        self.record(result);
    }

    /// When they must be stored: [`STORE_DELAY`] after the oldest, or now once there are many.
    fn due(&self) -> Option<tokio::time::Instant> {
        let full = self.blobs.len() + self.records.len() >= MAX_UNSTORED;
        self.since.map(|t| if full { tokio::time::Instant::now() } else { t + STORE_DELAY })
    }

    /// Stores everything in one unit (under group commit: one log entry, redb's commit shared with
    /// the next units, see `store::Db::unit`). A store that fails is logged, not fatal: the node's
    /// copy is a convenience, the coordinator holds every record signed.
    fn store(&mut self) {
        if self.since.take().is_none() {
            return;
        }
        let db = self.store.db().clone();
        let stored = db
            .unit(|| {
                self.store.batch().and_then(|mut batch| {
                    for blob in self.blobs.drain(..) {
                        batch.put_blob(&blob)?;
                    }
                    for record in self.records.drain(..) {
                        batch.put_cid_bytes(&record, None)?;
                    }
                    batch.commit()
                })
            })
            .and_then(|stored| stored);
        // If the batch could not open, nothing was drained. A failed store is not retried.
        self.blobs.clear();
        self.records.clear();
        if let Err(e) = stored {
            tracing::error!("storing the node's records failed: {e}");
        }
    }
}

impl Drop for Unstored {
    fn drop(&mut self) {
        self.store();
    }
}

/// What one connection's loop keeps between messages.
struct Session {
    /// The job on the blocking thread.
    running: Option<Running>,
    /// Under commit-reveal, the result waiting for `Reveal`.
    unrevealed: Option<Finished>,
    unstored: Unstored,
    /// The last [`OFFERED_KEPT`] jobs offered, verified.
    offered: VecDeque<SignedRecord<JobRecord>>,
}

impl Session {
    fn new(store: Arc<Store>) -> Self {
        Self { running: None, unrevealed: None, unstored: Unstored::new(store), offered: VecDeque::new() }
    }
}

enum Work {
    Progress { job: Cid, permille: u16, fuel_used: u64 },
    Done(Box<Finished>, Box<Keep>, bool),
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `sha256(executor DID ‖ output CID)`: binds the output to the executor that commits to it.
pub fn output_commitment(executor: &Did, output: &Cid) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(executor.as_str().as_bytes());
    h.update(output.to_bytes());
    h.finalize().into()
}

impl ExecutorNode {
    /// Connects to `coordinator` and works until the connection ends.
    pub async fn serve(
        &self,
        coordinator: &PeerAddr,
        events: &mut dyn FnMut(NodeEvent),
    ) -> Result<(), NodeError> {
        let bind = if coordinator.addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
        let endpoint = net::dialer(bind.parse().unwrap_or_else(|_| unreachable!("literal address")))?;
        let conn = net::connect(&endpoint, &self.key, coordinator).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| NodeError::Closed(e.to_string()))?;
        frame::write(&mut send, &Hello::new(Role::Executor), MAX_MESSAGE_BYTES).await?;
        let hello: Hello = frame::read(&mut recv, MAX_MESSAGE_BYTES).await?;
        hello.check()?;
        let register = FromExecutor::Register {
            capabilities: self.capabilities.clone(),
            price_per_hour: self.price_per_hour,
            accepting: self.device.verdict().may_bid(),
        };
        frame::write(&mut send, &register, MAX_MESSAGE_BYTES).await?;
        match frame::read::<ToExecutor>(&mut recv, MAX_MESSAGE_BYTES).await? {
            ToExecutor::Registered => events(NodeEvent::Connected { coordinator: coordinator.did.clone() }),
            other => return Err(NodeError::Protocol(format!("expected Registered, got {other:?}"))),
        }

        let (work_tx, mut work_rx) = mpsc::unbounded_channel::<Work>();
        // Frames are read by a task of their own: a read that lost a `select!` race half-way through
        // a frame would drop the bytes it had taken and misread every frame after it.
        let (incoming_tx, mut incoming) = mpsc::channel::<Result<ToExecutor, frame::FrameError>>(64);
        let reader = tokio::spawn(async move {
            loop {
                let message = frame::read::<ToExecutor>(&mut recv, MAX_MESSAGE_BYTES).await;
                let end = message.is_err();
                if incoming_tx.send(message).await.is_err() || end {
                    break;
                }
            }
        });
        let mut session = Session::new(Arc::clone(&self.store));
        // Whatever ends this connection also stops the job it was running: its result could not
        // be delivered, and the coordinator hands the job out again.
        let result = self
            .work_loop(coordinator, &mut send, &mut incoming, &work_tx, &mut work_rx, &mut session, events)
            .await;
        reader.abort();
        // Dropping the job cancels it (see `Running`'s Drop).
        drop(session.running.take());
        session.unstored.store();
        self.flush_in_background();
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn work_loop(
        &self,
        coordinator: &PeerAddr,
        send: &mut quinn::SendStream,
        incoming: &mut mpsc::Receiver<Result<ToExecutor, frame::FrameError>>,
        work_tx: &mpsc::UnboundedSender<Work>,
        work_rx: &mut mpsc::UnboundedReceiver<Work>,
        session: &mut Session,
        events: &mut dyn FnMut(NodeEvent),
    ) -> Result<(), NodeError> {
        let mut verdicts = self.device.subscribe();
        let mut flush_at: Option<tokio::time::Instant> = None;
        let fuel_per_second = self.capabilities.fuel_per_second;
        loop {
            // The only timers: giving a paused job back before its deadline, the end of an
            // overheating back-off, storing what was signed or received, and the flush after
            // receipts. None exists while the node simply waits.
            let running = &mut session.running;
            let give_up = running.as_ref().and_then(|r| r.give_up_at(fuel_per_second));
            let recheck = self.device.recheck_at();
            let store_at = session.unstored.due();
            tokio::select! {
                Ok(()) = verdicts.changed() => {
                    let verdict = verdicts.borrow_and_update().clone();
                    self.obey(&verdict, running.as_mut(), events);
                    let accepting = FromExecutor::Accepting(verdict.may_bid());
                    frame::write(send, &accepting, MAX_MESSAGE_BYTES).await?;
                }
                () = tokio::time::sleep(PAUSED_KEEPALIVE), if running.as_ref().is_some_and(|r| r.paused) => {
                    if let Some(r) = running.as_ref() {
                        let permille = 0;
                        let alive = FromExecutor::Progress { job: r.job, permille, fuel_used: r.fuel_used };
                        frame::write(send, &alive, MAX_MESSAGE_BYTES).await?;
                    }
                }
                () = tokio::time::sleep_until(instant_at(give_up.unwrap_or(0))), if give_up.is_some() => {
                    if let Some(job) = running.as_mut() {
                        job.stop(
                            FailureReason::DeadlineExceeded,
                            "paused by the device policy for too long to finish by the deadline; given back".into(),
                        );
                        job.paused = false;
                    }
                }
                () = tokio::time::sleep_until(instant_at(recheck.unwrap_or(0))), if recheck.is_some() => {
                    self.device.recheck();
                }
                () = tokio::time::sleep_until(store_at.unwrap_or_else(tokio::time::Instant::now)), if store_at.is_some() => {
                    session.unstored.store();
                }
                () = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)), if flush_at.is_some() => {
                    flush_at = None;
                    session.unstored.store();
                    self.flush_in_background();
                }
                message = incoming.recv() => {
                    let message = match message {
                        Some(Ok(m)) => m,
                        None | Some(Err(frame::FrameError::Closed)) => return Ok(()),
                        Some(Err(e)) => return Err(e.into()),
                    };
                    if matches!(message, ToExecutor::Receipt(_)) {
                        flush_at.get_or_insert_with(|| tokio::time::Instant::now() + RECEIPT_FLUSH_DELAY);
                    }
                    let reply = self.handle(message, coordinator, session, work_tx, events)?;
                    for m in reply {
                        frame::write(send, &m, MAX_MESSAGE_BYTES).await?;
                    }
                }
                Some(work) = work_rx.recv() => match work {
                    Work::Progress { job, permille, fuel_used } => {
                        if let Some(r) = running.as_mut().filter(|r| r.job == job) {
                            r.fuel_used = fuel_used;
                        }
                        events(NodeEvent::Progress { job, permille });
                        frame::write(send, &FromExecutor::Progress { job, permille, fuel_used }, MAX_MESSAGE_BYTES).await?;
                    }
                    Work::Done(finished, keep, reveal_first) => {
                        *running = None;
                        let unstored = &mut session.unstored;
                        events(NodeEvent::Finished {
                            job: finished.job,
                            status: finished.record.payload.status,
                            result: finished.record.cid(),
                        });
                        if reveal_first {
                            let output = finished.record.payload.output.unwrap_or_else(|| blob_cid(b""));
                            let commitment = output_commitment(self.key.did(), &output);
                            frame::write(send, &FromExecutor::Commit { job: finished.job, commitment }, MAX_MESSAGE_BYTES).await?;
                            unstored.keep(*keep, &finished.record);
                            // The output waits for `Reveal`, so it is stored now, from where it is
                            // kept: a copy for the queue would double an output of up to 64 MiB.
                            if let Err(e) = self.store.put_blob(&finished.output) {
                                tracing::error!("storing the output failed: {e}");
                            }
                            session.unrevealed = Some(*finished);
                        } else {
                            let Finished { record, output, .. } = *finished;
                            let message = FromExecutor::Result {
                                record: RecordBytes(record.bytes().to_vec()),
                                output: Blob(output),
                            };
                            frame::write(send, &message, MAX_MESSAGE_BYTES).await?;
                            if let FromExecutor::Result { output, .. } = message {
                                unstored.keep(*keep, &record);
                                unstored.blob(output.0);
                            }
                        }
                    }
                },
            }
        }
    }

    /// Applies the policy's verdict to the running job: pause it between fuel slices, resume it, or
    /// stop it (reported as a failure the coordinator reassigns).
    fn obey(&self, verdict: &Verdict, running: Option<&mut Running>, events: &mut dyn FnMut(NodeEvent)) {
        if let Some(job) = running {
            match verdict.decision {
                Decision::Run => job.control.resume(),
                Decision::Pause => job.control.pause(),
                Decision::Stop => job.stop(
                    FailureReason::CrashOrPanic,
                    format!("stopped by the device policy: {}", verdict.reason),
                ),
            }
            job.paused = verdict.decision == Decision::Pause;
        }
        events(NodeEvent::Policy { decision: verdict.decision, reason: verdict.reason.clone() });
    }

    /// One message from the coordinator; returns what to send back.
    fn handle(
        &self,
        message: ToExecutor,
        coordinator: &PeerAddr,
        session: &mut Session,
        work_tx: &mpsc::UnboundedSender<Work>,
        events: &mut dyn FnMut(NodeEvent),
    ) -> Result<Vec<FromExecutor>, NodeError> {
        match message {
            ToExecutor::Offer { job, .. } => {
                let job = SignedRecord::<JobRecord>::decode(&job.0)
                    .map_err(|e| NodeError::Protocol(format!("offered job does not verify: {e}")))?;
                events(NodeEvent::Offered { job: job.cid() });
                let verdict = self.device.verdict();
                let decision = if session.running.is_some() {
                    Err("busy with another job".to_owned())
                } else if !verdict.may_bid() {
                    Err(format!("the device policy says {}: {}", verdict.decision.name(), verdict.reason))
                } else {
                    decide_bid(&job.payload.spec, &self.capabilities, self.price_per_hour, true, now_secs())
                };
                match decision {
                    Ok(terms) => {
                        let bid = Bid {
                            job: job.cid(),
                            bidder: self.key.did().clone(),
                            price: terms.price,
                            completion_time: terms.completion_time,
                            capabilities: self.capabilities.clone(),
                            availability: terms.availability,
                            reputation_score: 0.5,
                            completed_similar: 0,
                            success_rate: 1.0,
                            capability_proof: CapabilityProof::default(),
                            valid_until: terms.valid_until,
                        };
                        let record = SignedRecord::sign(bid, &self.key)
                            .map_err(|e| NodeError::Protocol(format!("cannot sign a bid: {e}")))?;
                        session.unstored.record(&record);
                        events(NodeEvent::Bid { job: job.cid(), price: terms.price });
                        if session.offered.len() == OFFERED_KEPT {
                            session.offered.pop_front();
                        }
                        session.offered.push_back(job);
                        Ok(vec![FromExecutor::Bid(RecordBytes(record.bytes().to_vec()))])
                    }
                    Err(reason) => {
                        events(NodeEvent::Declined { job: job.cid(), reason: reason.clone() });
                        Ok(vec![FromExecutor::Decline { job: job.cid(), reason }])
                    }
                }
            }
            ToExecutor::Award { award, job, module, input, reveal_first } => {
                let award = SignedRecord::<AwardRecord>::decode(&award.0)
                    .map_err(|e| NodeError::Protocol(format!("award does not verify: {e}")))?;
                if award.signer != coordinator.did
                    || !award.payload.executors.contains(self.key.did())
                        && !award.payload.validators.contains(self.key.did())
                {
                    return Err(NodeError::Protocol(
                        "an award not signed by the coordinator, or not for us".into(),
                    ));
                }
                // Most awards are for a job this node verified when it bid: the same bytes verify the same.
                let job = match session.offered.iter().position(|o| o.bytes() == job.0.as_slice()) {
                    Some(i) => session.offered.remove(i).unwrap_or_else(|| unreachable!("found at {i}")),
                    None => SignedRecord::<JobRecord>::decode(&job.0)
                        .map_err(|e| NodeError::Protocol(format!("awarded job does not verify: {e}")))?,
                };
                if job.cid() != award.payload.job
                    || blob_cid(&module.0) != job.payload.module
                    || job.payload.input.is_some_and(|c| c != blob_cid(&input.0))
                {
                    return Err(NodeError::Protocol(
                        "the awarded job, module or input does not match its CID".into(),
                    ));
                }
                events(NodeEvent::Awarded { job: job.cid() });
                let control = Arc::new(Control::default());
                let verdict = self.device.verdict();
                let mut job_run = Running {
                    job: job.cid(),
                    control: Arc::clone(&control),
                    why: StopReason::default(),
                    deadline: award.payload.effective_spec(&job.payload.spec).deadline,
                    fuel_budget: award.payload.effective_spec(&job.payload.spec).fuel_budget(),
                    fuel_used: 0,
                    paused: false,
                };
                // Awarded just as the policy changed its mind: start in the state it says.
                self.obey(&verdict, Some(&mut job_run), &mut |_| {});
                let why = Arc::clone(&job_run.why);
                session.running = Some(job_run);
                self.start(job, award, module.0, input.0, control, why, reveal_first, work_tx.clone());
                Ok(Vec::new())
            }
            ToExecutor::Reveal { job } => match session.unrevealed.take() {
                Some(finished) if finished.job == job => Ok(vec![FromExecutor::Result {
                    record: RecordBytes(finished.record.bytes().to_vec()),
                    output: Blob(finished.output),
                }]),
                other => {
                    session.unrevealed = other;
                    Ok(Vec::new())
                }
            },
            ToExecutor::Receipt(bytes) => {
                let receipt = SignedRecord::<ReceiptRecord>::decode(&bytes.0)
                    .map_err(|e| NodeError::Protocol(format!("receipt does not verify: {e}")))?;
                if receipt.signer == coordinator.did {
                    session.unstored.record(&receipt);
                    events(NodeEvent::Receipt {
                        job: receipt.payload.job,
                        receipt: receipt.cid(),
                        paid: receipt.payload.payment.total,
                    });
                }
                Ok(Vec::new())
            }
            ToExecutor::Cancel { job, .. } => {
                if let Some(r) = session.running.as_ref()
                    && r.job == job
                {
                    r.control.cancel();
                }
                Ok(Vec::new())
            }
            ToExecutor::Refused(bytes) => {
                if let Ok(refusal) = SignedRecord::<RefusalRecord>::decode(&bytes.0) {
                    session.unstored.record(&refusal);
                    events(NodeEvent::Refused { reason: refusal.payload.reason.clone() });
                }
                Ok(Vec::new())
            }
            ToExecutor::Registered => Err(NodeError::Protocol("registered twice".into())),
        }
    }

    /// Under group commit (`store.db().group_commit()`, what `icn node` uses) the node's records
    /// become durable here, [`RECEIPT_FLUSH_DELAY`] after a receipt and when the session ends, off
    /// the path of the next job: a crash loses at most the records of the last second or so, which
    /// the coordinator holds signed as well.
    fn flush_in_background(&self) {
        let db = self.store.db().clone();
        if db.is_grouped() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = db.flush().and_then(|_| db.checkpoint_if_due()) {
                    tracing::error!("flushing the node's store failed: {e}");
                }
            });
        }
    }

    /// Runs an awarded job; progress and the result come back on `work`. A small module is admitted
    /// and given a first slice of fuel here, on the node's runtime thread: a short job (most
    /// microtasks) ends within it, and is signed and sent without the hop to a blocking thread and
    /// back (about 9% of an executor's CPU per trivial job, bench `mesh throughput`). Anything
    /// longer goes on on a blocking thread, with progress.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        job: SignedRecord<JobRecord>,
        award: SignedRecord<AwardRecord>,
        module: Vec<u8>,
        input: Vec<u8>,
        control: Arc<Control>,
        why: StopReason,
        reveal_first: bool,
        work: mpsc::UnboundedSender<Work>,
    ) {
        // The signed spec, adjusted as the award says for earlier attempts' failures (§7.2).
        let spec = award.payload.effective_spec(&job.payload.spec);
        let entry = match &spec.runtime {
            crate::spec::Runtime::WASM { function, .. } | crate::spec::Runtime::CCL { function, .. } => {
                function.clone()
            }
            _ => String::new(),
        };
        let input = match &spec.runtime {
            crate::spec::Runtime::CCL { args, .. } if input.is_empty() => args.0.clone(),
            _ => input,
        };
        let limits = limits_for(&spec, &self.caps);
        let run = Run {
            key: Arc::clone(&self.key),
            started_at_ms: now_ms(),
            fuel_budget: limits.fuel,
            job,
            award,
            module,
            why,
            reveal_first,
            work,
        };
        let sandbox = Arc::clone(&self.sandbox);
        if run.module.len() > INLINE_MODULE_BYTES {
            // A large module's admission (validation, compilation) is long in itself: all of it there.
            tokio::task::spawn_blocking(move || {
                let outcome =
                    sandbox.admit_by_cid(&run.job.payload.module, &run.module, &entry).map(|admitted| {
                        sandbox.execute(&admitted, Arc::from(input), &limits, &control, &mut run.progress())
                    });
                run.report(outcome);
            });
            return;
        }
        // The award handler checked the module's bytes against the job's module CID.
        let admitted = match sandbox.admit_by_cid(&run.job.payload.module, &run.module, &entry) {
            Ok(admitted) => admitted,
            Err(problem) => return run.report(Err(problem)),
        };
        match sandbox.start(admitted, Arc::from(input), limits, control, FIRST_SLICE_FUEL) {
            Begun::Done(outcome) => run.report(Ok(outcome)),
            Begun::Going(started) => {
                tokio::task::spawn_blocking(move || {
                    let outcome = started.finish(&mut run.progress());
                    run.report(Ok(outcome));
                });
            }
        }
    }
}

/// A module at most this large is admitted on the node's runtime thread (see `start`).
const INLINE_MODULE_BYTES: usize = 64 << 10;

/// The first slice of fuel a job gets on the node's runtime thread: well under a millisecond of
/// wasmi, so the connection is not kept waiting (see `start`).
const FIRST_SLICE_FUEL: u64 = 100_000;

/// An awarded job being run: what its result record needs besides the outcome.
struct Run {
    key: Arc<Keypair>,
    started_at_ms: u64,
    fuel_budget: u64,
    job: SignedRecord<JobRecord>,
    award: SignedRecord<AwardRecord>,
    module: Vec<u8>,
    why: StopReason,
    reveal_first: bool,
    work: mpsc::UnboundedSender<Work>,
}

impl Run {
    /// Progress for the node's driver: each change, and at least every second (the coordinator
    /// takes a silent executor for a dead one).
    fn progress(&self) -> impl FnMut(&crate::sandbox::Progress) + 'static {
        let (job, work) = (self.job.cid(), self.work.clone());
        let mut last = (u16::MAX, std::time::Instant::now());
        move |p| {
            if p.permille != last.0 || last.1.elapsed() >= HEARTBEAT {
                last = (p.permille, std::time::Instant::now());
                let _ = work.send(Work::Progress { job, permille: p.permille, fuel_used: p.fuel_used });
            }
        }
    }

    /// Signs the result of `outcome` (or of a module refused at admission) and hands it to the driver.
    fn report(self, outcome: Result<crate::sandbox::Outcome, crate::error::Problem>) {
        let stopped = self.why.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (status, failure, problem, exit_code, output, fuel_used, peak, truncated) = match outcome {
            Ok(o) => (
                match o.status {
                    ExecStatus::Completed => ResultStatus::Completed,
                    ExecStatus::Failed => ResultStatus::Failed,
                    ExecStatus::Cancelled => ResultStatus::Cancelled,
                },
                o.failure,
                o.problem,
                o.exit_code,
                o.output,
                o.fuel_used,
                o.peak_memory_bytes,
                o.output_truncated,
            ),
            Err(problem) => (
                ResultStatus::Failed,
                Some(FailureReason::InvalidInput),
                Some(problem),
                None,
                Vec::new(),
                0,
                0,
                false,
            ),
        };
        // Stopped by this node (the device policy): said plainly, as a failure to reassign.
        let (status, failure, problem) = match (status, stopped) {
            (ResultStatus::Cancelled, Some((reason, message))) => (
                ResultStatus::Failed,
                Some(reason),
                Some(crate::error::Problem::new(crate::error::ErrorCode::J004, "device", message)),
            ),
            (status, _) => (status, failure, problem),
        };
        let job_cid = self.job.cid();
        let output_cid = (status == ResultStatus::Completed || !output.is_empty()).then(|| blob_cid(&output));
        let record = ResultRecord {
            job: job_cid,
            award: Some(self.award.cid()),
            status,
            failure,
            code: problem.as_ref().map(|p| p.code),
            message: problem.map(|p| p.message),
            exit_code,
            output: output_cid,
            output_bytes: output.len() as u64,
            output_truncated: truncated,
            fuel_used,
            fuel_budget: self.fuel_budget,
            peak_memory_bytes: peak,
            started_at_ms: self.started_at_ms,
            finished_at_ms: now_ms(),
            engine: ENGINE.to_owned(),
        };
        let Ok(record) = SignedRecord::sign(record, &self.key) else { return };
        let finished = Box::new(Finished { job: job_cid, record, output });
        let keep = Box::new(Keep { job: self.job, award: self.award, module: self.module });
        let _ = self.work.send(Work::Done(finished, keep, self.reveal_first));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::RecordKind;
    use tokio::time::Instant;

    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Note(u32);
    impl RecordKind for Note {
        const KIND: &'static str = "test-note";
    }

    #[test]
    fn unstored_records_wait_their_delay_then_go_in_one_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).expect("store"));
        // As `icn node` runs it: every unit with writes appends to the log (`written` counts them).
        store.db().group_commit();
        let key = Keypair::from_seed(&[7; 32]);
        let sign = |n| SignedRecord::sign(Note(n), &key).expect("sign");
        let mut unstored = Unstored::new(Arc::clone(&store));
        assert_eq!(unstored.due(), None, "nothing to store, no timer");

        let before = Instant::now();
        let first = sign(0);
        unstored.record(&first);
        let due = unstored.due().expect("a timer");
        assert!(due >= before + STORE_DELAY && due <= Instant::now() + STORE_DELAY, "{due:?}");

        // Past MAX_UNSTORED (the first record, a blob and the rest), due at once.
        unstored.blob(b"output".to_vec());
        let rest: Vec<_> = (1..MAX_UNSTORED as u32 - 1).map(sign).collect();
        for (i, record) in rest.iter().enumerate() {
            assert!(unstored.due().expect("a timer") > Instant::now(), "due early at {i}");
            unstored.record(record);
        }
        assert!(unstored.due().expect("a timer") <= Instant::now());
        assert_eq!(store.record(&first.cid()).expect("read"), None, "nothing stored before the timer");

        let written = store.db().written();
        unstored.store();
        assert_eq!(unstored.due(), None);
        assert_eq!(store.db().written(), written + 1, "one unit, one log entry");
        let stored = |records: &[&SignedRecord<Note>]| {
            records.iter().all(|r| store.record(&r.cid()).expect("read").as_deref() == Some(r.bytes()))
        };
        let all: Vec<_> = std::iter::once(&first).chain(&rest).collect();
        assert!(stored(&all), "every record stored");
        assert!(store.blob(&blob_cid(b"output")).expect("read").is_some());
        // Nothing left: storing again commits nothing and changes nothing.
        let written = store.db().written();
        unstored.store();
        assert_eq!(store.db().written(), written, "an empty store commits nothing");
        assert!(stored(&all));

        // Dropped (a stopped node's session), it stores what it holds.
        let last = sign(1000);
        unstored.record(&last);
        drop(unstored);
        assert_eq!(store.record(&last.cid()).expect("read").as_deref(), Some(last.bytes()));
    }
}
