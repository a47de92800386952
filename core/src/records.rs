//! The protocol's record payloads. Each is signed and stored through [`crate::dag::SignedRecord`];
//! links to parents are real IPLD links (result -> job).
//!
//! Field names are part of the record format: add fields, never rename them.

use cid::Cid;
use serde::{Deserialize, Serialize};

use crate::dag::RecordKind;
use crate::error::{ErrorCode, FailureReason};
use crate::spec::JobSpec;

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
