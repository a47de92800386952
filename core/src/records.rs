//! The protocol's record payloads. Each is signed and stored through [`crate::dag::SignedRecord`];
//! links to parents are real IPLD links (bid -> job, award -> bids, result -> award and job,
//! validation -> results, receipt -> result and validation).
//!
//! Field names are part of the record format: add fields, never rename them.

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::dag::RecordKind;
use crate::error::{ErrorCode, FailureReason};
use crate::identity::Did;
use crate::market::{Judgement, Payment};
use crate::spec::{JobSpec, Mana, SelectionStrategy};

/// A job as submitted: the spec with its code CID filled in, and the blobs it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub spec: JobSpec,
    /// The module (or contract) blob.
    pub module: Cid,
    /// The input blob, if the job has input.
    pub input: Option<Cid>,
    /// When the job was submitted, Unix milliseconds.
    pub submitted_at_ms: u64,
}

impl RecordKind for JobRecord {
    const KIND: &'static str = "job";
}

/// How an execution ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Completed,
    Failed,
    Cancelled,
}

/// What an executor did with a job, signed by the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The job record this result answers.
    pub job: Cid,
    /// The award under which it ran; none for a local run.
    pub award: Option<Cid>,
    pub status: ResultStatus,
    pub failure: Option<FailureReason>,
    pub code: Option<ErrorCode>,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    /// The output blob; present whenever any output was written (even for a failed run).
    pub output: Option<Cid>,
    pub output_bytes: u64,
    pub output_truncated: bool,
    pub fuel_used: u64,
    pub fuel_budget: u64,
    pub peak_memory_bytes: u64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// The engine that ran the job, so fuel figures can be compared like for like.
    pub engine: String,
}

impl RecordKind for ResultRecord {
    const KIND: &'static str = "result";
}

/// The engine name recorded in results: fuel costs are a property of this exact version.
pub const ENGINE: &str = "wasmi 2.0.0";

impl RecordKind for crate::market::Bid {
    const KIND: &'static str = "bid";
}

/// The coordinator's choice of executors for a job (§3.2), linking the bids it chose among.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwardRecord {
    pub job: Cid,
    /// Every bid that stood, winners first (the strategy's full ranking).
    pub bids: Vec<Cid>,
    /// The executors that run the job (one, or n under Full(n)).
    pub executors: Vec<Did>,
    /// Validators that re-execute it under Sampling(n).
    pub validators: Vec<Did>,
    pub strategy: SelectionStrategy,
    /// The seed of the Random strategy's draw: anyone holding the bids can replay the choice.
    pub seed: u64,
    /// The agreed price per executor (the winning bid's).
    pub price: Mana,
    /// Which attempt this is (1 for the first award; more after reassignment).
    pub attempt: u32,
    pub awarded_at_ms: u64,
    /// Earlier attempts' failures that §7.2's `adjust_job_spec` answers (more memory after
    /// OutOfMemory, more fuel and time after CpuTimeout): the executor runs
    /// `adjust_job_spec` over the signed spec for each, in order. Absent when empty, so records made
    /// before the field existed keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjusted_for: Vec<crate::error::FailureReason>,
}

impl AwardRecord {
    /// The spec the awarded executor runs: the job's, adjusted for every earlier failure listed.
    pub fn effective_spec(&self, spec: &crate::spec::JobSpec) -> crate::spec::JobSpec {
        crate::market::adjusted_spec(spec, &self.adjusted_for)
    }
}

impl RecordKind for AwardRecord {
    const KIND: &'static str = "award";
}

/// How the coordinator judged a job's result(s) (§5.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub job: Cid,
    pub results: Vec<Cid>,
    pub judgement: Judgement,
    /// The output CID that won.
    pub accepted_output: Option<Cid>,
    /// Executors whose output disagreed with the accepted one.
    pub outvoted: Vec<Did>,
    pub reason: String,
}

impl RecordKind for ValidationRecord {
    const KIND: &'static str = "validation";
}

/// What an executor was paid or charged for a job (§6.1 `PaymentReceipt`), sent to both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub job: Cid,
    pub result: Option<Cid>,
    pub validation: Option<Cid>,
    pub executor: Did,
    pub submitter: Did,
    pub status: PaymentStatus,
    pub payment: Payment,
    /// Mana moved from the executor's stake to the sink.
    pub slashed: Mana,
    pub settled_at_ms: u64,
}

impl RecordKind for ReceiptRecord {
    const KIND: &'static str = "receipt";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    Completed,
    Disputed,
    Failed,
    Refunded,
}

/// Why something was refused: a bid, a job, a result, a stake slashed. Signed, so `icn job status`
/// can say why a job is waiting or failed, and anyone can check who said so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusalRecord {
    pub job: Option<Cid>,
    /// The record refused (a bid, a result), if it reached us intact.
    pub subject: Option<Cid>,
    /// Whom the refusal concerns.
    pub party: Option<Did>,
    pub code: ErrorCode,
    pub reason: String,
    pub at_ms: u64,
}

impl RecordKind for RefusalRecord {
    const KIND: &'static str = "refusal";
}

/// Mana created at genesis, applied once however often the coordinator restarts with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenesisRecord {
    pub grants: Vec<(Did, Mana)>,
}

impl RecordKind for GenesisRecord {
    const KIND: &'static str = "genesis";
}
